//! Real VictoriaMetrics and Prometheus for the metric-gate tests, each
//! started on a free loopback port with a temporary data directory and
//! killed when dropped; plus raw TCP listeners that misbehave on purpose
//! (never answer, answer forever, answer like a broken proxy).
//!
//! A missing binary fails the test and names the Debian package: a gate test
//! that silently skips would let a broken client ship.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server process owned by a test.
pub struct Server {
    pub url: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Push Prometheus text lines (with millisecond timestamps) and make them
    /// searchable now: `/internal/force_flush` flushes both the raw rows and
    /// the new-series index that otherwise lags by up to 10 s
    /// (protocols.md §3.4).
    pub async fn push(&self, lines: &str) {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{}/api/v1/import/prometheus", self.url))
            .body(lines.to_string())
            .send()
            .await
            .expect("push to VictoriaMetrics");
        assert_eq!(r.status().as_u16(), 204, "import: {}", self.log_tail());
        let r = http
            .get(format!("{}/internal/force_flush", self.url))
            .send()
            .await
            .expect("force_flush");
        assert!(r.status().is_success(), "force_flush: {}", r.status());
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

fn spawn(binary: &str, package: &str, args: &[String], log: &PathBuf) -> Child {
    let out = std::fs::File::create(log).expect("create log file");
    let err = out.try_clone().expect("clone log file");
    match Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{binary}` is not installed; these tests need the real server: \
             apt-get install -y {package}"
        ),
        Err(e) => panic!("cannot start {binary}: {e}"),
    }
}

/// Start a server, retrying on a fresh port if it dies at start (another
/// test may have taken the port between our probe and its bind).
async fn start(
    binary: &str,
    package: &str,
    ready_path: &str,
    args: impl Fn(u16, &std::path::Path) -> Vec<String>,
) -> Server {
    let mut last = String::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("server.log");
        let child = spawn(binary, package, &args(port, dir.path()), &log);
        let mut server = Server {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                last = format!("{binary} exited with {status}:\n{}", server.log_tail());
                break;
            }
            if let Ok(r) = http
                .get(format!("{}{ready_path}", server.url))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                && r.status().is_success()
            {
                return server;
            }
            if Instant::now() > deadline {
                panic!("{binary} not ready after 15 s:\n{}", server.log_tail());
            }
            // Readiness polling only; no test result depends on this delay.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("{last}");
}

/// VictoriaMetrics (Debian `victoria-metrics`, 1.79) set up so that pushed
/// data is visible at once: no 30 s latency offset, no rollup cache, and a
/// retention long enough for any fixture timestamp.
pub async fn victoria_metrics(extra: &[&str]) -> Server {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    start(
        "victoria-metrics",
        "victoria-metrics",
        "/health",
        |port, dir| {
            let mut a = vec![
                format!("-httpListenAddr=127.0.0.1:{port}"),
                format!("-storageDataPath={}", dir.join("data").display()),
                "-retentionPeriod=100y".into(),
                "-search.latencyOffset=0s".into(),
                "-search.disableCache".into(),
            ];
            a.extend(extra.iter().cloned());
            a
        },
    )
    .await
}

/// Prometheus (Debian `prometheus`, 2.42) with no scrape targets: the tests
/// use it only for queries that need no data.
pub async fn prometheus() -> Server {
    start("prometheus", "prometheus", "/-/ready", |port, dir| {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 1m\nscrape_configs: []\n",
        )
        .expect("write prometheus.yml");
        vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ]
    })
    .await
}

/// A loopback address where nothing listens (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// A listener that accepts connections and never answers.
pub async fn silent_listener() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s); // keep it open, say nothing
        }
    });
    (addr, task)
}

/// A listener that answers 200 with a chunked body that never ends.
pub async fn endless_listener() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Transfer-Encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                while s.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    (addr, task)
}

/// A listener that answers every request with `response` (raw HTTP), as a
/// misconfigured reverse proxy would.
pub async fn canned_listener(response: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, task)
}
