//! Test harness for the HAProxy backend: real `haproxy` processes (master-
//! worker mode, like Debian's unit) on free loopback ports, each with an
//! admin Runtime API socket on a UNIX path and on 127.0.0.1, plus tiny
//! tokio servers that answer with their own name. Everything is torn down
//! on Drop.
//!
//! A missing haproxy binary is a failure, never a skip: the adapter's tests
//! are only worth anything against the real thing.

#![allow(dead_code)] // shared by tests/haproxy.rs and benches/haproxy_fleet.rs

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muhurat::spec::Endpoint;
use muhurat::traffic::haproxy::{HaproxyLimits, runtime_command};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The haproxy binary, or a loud failure saying how to install it.
pub fn haproxy_bin() -> PathBuf {
    for p in [
        "/usr/sbin/haproxy",
        "/usr/local/sbin/haproxy",
        "/usr/bin/haproxy",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    if let Ok(out) = Command::new("which").arg("haproxy").output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    panic!(
        "haproxy is not installed: these tests need a real HAProxy. \
         Run `apt-get update && apt-get install -y haproxy` (Debian package)."
    );
}

/// A free TCP port on 127.0.0.1 (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A tokio server on 127.0.0.1 that answers an HTTP GET with its name as
/// the body (then closes), and anything else line by line with
/// `<name>\n` (a long-lived TCP session for `mode tcp` tests).
pub struct NamedServer {
    pub name: String,
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl NamedServer {
    pub async fn start(name: &str) -> NamedServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let port = listener.local_addr().expect("local addr").port();
        let n = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let n = n.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = 0;
                    loop {
                        let Ok(k) = sock.read(&mut buf[got..]).await else {
                            return;
                        };
                        if k == 0 {
                            return; // health check: connect and close
                        }
                        got += k;
                        let seen = &buf[..got];
                        if seen.starts_with(b"GET ") {
                            if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                                let resp = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{n}",
                                    n.len()
                                );
                                let _ = sock.write_all(resp.as_bytes()).await;
                                let _ = sock.shutdown().await;
                                return;
                            }
                        } else if seen.contains(&b'\n') {
                            got = 0;
                            if sock.write_all(format!("{n}\n").as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        if got == buf.len() {
                            return;
                        }
                    }
                });
            }
        });
        NamedServer {
            name: name.to_string(),
            port,
            task,
        }
    }
}

impl Drop for NamedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HAProxy process (master + worker) with admin sockets.
pub struct Haproxy {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub sock: PathBuf,
    pub admin_port: u16,
    child: Option<Child>,
}

impl Haproxy {
    /// Start HAProxy with `body` (defaults, frontends, backends) after a
    /// global section that opens the admin sockets.
    pub async fn start(body: &str) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("admin.sock");
        let admin_port = free_port();
        let cfg = dir.path().join("haproxy.cfg");
        let text = format!(
            "global\n    stats socket {} mode 600 level admin\n    stats socket ipv4@127.0.0.1:{admin_port} level admin\n    nbthread 1\n\n{body}\n",
            sock.display()
        );
        std::fs::write(&cfg, text).expect("write haproxy.cfg");
        let mut h = Haproxy {
            dir,
            cfg,
            sock,
            admin_port,
            child: None,
        };
        h.spawn().await;
        h
    }

    pub fn unix(&self) -> Endpoint {
        Endpoint::Unix(self.sock.display().to_string())
    }

    pub fn tcp(&self) -> Endpoint {
        Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: self.admin_port,
        }
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("haproxy.log")).expect("log file");
        let err = log.try_clone().expect("clone log");
        let mut cmd = Command::new(haproxy_bin());
        // -W master-worker (reload = SIGUSR2, like systemd), -db foreground.
        cmd.args(["-W", "-db", "-f"])
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        self.child = Some(cmd.spawn().expect("spawn haproxy"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pid().await.is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("haproxy.log"))
                    .unwrap_or_default();
                panic!(
                    "haproxy did not answer on {} within 10 s; log:\n{log}",
                    self.sock.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A Runtime API command on the UNIX socket.
    pub async fn cmd(&self, cmd: &str) -> Result<String, String> {
        runtime_command(&self.unix(), cmd, &HaproxyLimits::default()).await
    }

    /// The worker's pid (`show info`).
    pub async fn pid(&self) -> Result<u32, String> {
        let r = self.cmd("show info").await?;
        muhurat::traffic::haproxy::parse_pid(&r)
    }

    /// Stop the whole process group (the endpoint goes down; its socket
    /// file stays, so connections are refused).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM to the master: it stops its workers and exits. (Sent
            // to the process group instead, HAProxy was seen to survive.)
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // Never block forever in a test: SIGKILL the master; a worker
            // exits when its master's pipe closes.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again after [`stop`](Self::stop) with the same config.
    pub async fn start_again(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// A hitless reload (SIGUSR2 to the master), returning once the new
    /// worker answers the socket.
    pub async fn reload(&mut self) {
        let old = self.pid().await.expect("pid before reload");
        let master = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args(["-USR2", &master])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -USR2 {master} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(p) = self.pid().await
                && p != old
            {
                // The old worker can still answer for ~90 ms; let it go.
                tokio::time::sleep(Duration::from_millis(150)).await;
                if self.pid().await.is_ok_and(|q| q == p) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "reload: worker pid stayed {old}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP request through HAProxy on a fresh connection; the body (the
/// server's name), or `None` on any failure (e.g. 503 with no server).
pub async fn get(port: u16) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.set_nodelay(true).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.split("\r\n\r\n").nth(1).map(str::to_string)
}

/// `n` sequential requests; server name → count (`"(failed)"` for errors).
pub async fn split(port: u16, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        let k = get(port).await.unwrap_or_else(|| "(failed)".into());
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// A `server` line for each `(name, port, weight, options)`.
pub fn servers(list: &[(&str, u16, u32, &str)]) -> String {
    list.iter()
        .map(|(n, p, w, o)| format!("    server {n} 127.0.0.1:{p} weight {w} {o}\n"))
        .collect()
}

/// A blue/green backend `be` on a real HAProxy in HTTP mode: named servers
/// b1, b2 (blue, weight 100: live) and g1, g2 (green, weight 0: idle), and
/// a frontend on the returned port.
pub async fn blue_green(be: &str) -> (Vec<NamedServer>, Haproxy, u16) {
    let mut named = Vec::new();
    for n in ["b1", "b2", "g1", "g2"] {
        named.push(NamedServer::start(n).await);
    }
    let fe = free_port();
    let haproxy = Haproxy::start(&config(
        "http",
        fe,
        be,
        "roundrobin",
        &servers(&[
            ("b1", named[0].port, 100, ""),
            ("b2", named[1].port, 100, ""),
            ("g1", named[2].port, 0, ""),
            ("g2", named[3].port, 0, ""),
        ]),
    ))
    .await;
    (named, haproxy, fe)
}

/// defaults + one frontend on `fe_port` + backend `name`.
pub fn config(mode: &str, fe_port: u16, name: &str, balance: &str, server_lines: &str) -> String {
    format!(
        "defaults\n    mode {mode}\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n\n\
         frontend fe\n    bind 127.0.0.1:{fe_port}\n    default_backend {name}\n\n\
         backend {name}\n    balance {balance}\n{server_lines}"
    )
}
