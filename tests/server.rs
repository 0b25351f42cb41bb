//! `muhurat server` as a process: it starts, migrates and answers /healthz
//! and /readyz on SQLite and on PostgreSQL, and a second server on the same
//! database refuses to start with a message that says why.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muhurat::store::{Backend, testing};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(db: &str, port: u16) -> Command {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muhurat"));
    cmd.args([
        "server",
        "--db",
        db,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--calendars",
        &format!("{root}/rollouts/calendars"),
    ])
    // This machine's kernel reports its clock unsynchronised.
    .env("MUHURAT_ALLOW_UNSYNCED_CLOCK", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

async fn one_server_per_database(b: Backend) {
    let (url, _dir) = testing::fresh_url(b).await;
    let port = free_port();
    let mut first = Server(spawn(&url, port).spawn().expect("start muhurat server"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(h) = get(port, "/healthz").await {
            break h;
        }
        if let Ok(Some(st)) = first.0.try_wait() {
            panic!("the server exited early: {st}");
        }
        assert!(Instant::now() < deadline, "no /healthz within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health.0, 200, "{}", health.1);
    let (status, body) = get(port, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"calendar\":\"nse\""), "{body}");
    // The API answers only with a token.
    assert_eq!(get(port, "/api/v1/rollouts").await.unwrap().0, 401);

    // A second server on the same database refuses to start.
    let out = spawn(&url, free_port())
        .output()
        .expect("run a second server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another muhurat server holds"), "{err}");

    // SIGTERM stops the first gracefully (exit 0), and releases the lock.
    let pid = first.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(st) = first.0.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < deadline, "no graceful stop within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(0));
    let port2 = free_port();
    let _again = Server(spawn(&url, port2).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(port2, "/healthz").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "a new server could not start after the first stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sqlite_one_server_per_database() {
    one_server_per_database(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_one_server_per_database() {
    one_server_per_database(Backend::Postgres).await;
}
