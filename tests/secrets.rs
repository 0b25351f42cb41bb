//! Secrets stay bound to their hosts (issue 11, the exfiltration probe):
//! a real `muhurat server` process whose environment holds a Consul token,
//! a metrics token and a webhook URL, and a listener of the attacker's
//! choosing on a real socket. For every role and every endpoint that makes
//! the server reach out — `check-metrics`, `check-target`, `pools`,
//! `start` (`POST /rollouts`) and notifications — the listener never
//! receives a connection, and no response, audit event or log line carries
//! a secret's value. A bound metrics host that redirects to the attacker
//! does not make the server follow with the token.

#[path = "support/open_calendar.rs"]
mod open_calendar;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_muhurat");
const CONSUL_TOKEN: &str = "consul-s3cr3t-7f1d9a";
const VM_TOKEN: &str = "vm-s3cr3t-44b0c2";
const HOOK_PATH: &str = "hook-s3cr3t-9e3e";

/// A TCP listener that records every byte anyone sends it.
#[derive(Clone)]
struct Listener {
    port: u16,
    connections: Arc<Mutex<usize>>,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Listener {
    /// `redirect_to`: answer every request with a 307 there (a bound host
    /// gone bad); otherwise 200 with an empty body.
    async fn start(redirect_to: Option<u16>) -> Listener {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Listener {
            port: l.local_addr().unwrap().port(),
            connections: Arc::default(),
            bytes: Arc::default(),
        };
        let rec = me.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = l.accept().await {
                *rec.connections.lock().unwrap() += 1;
                let rec = rec.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await
                    {
                        rec.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let answer = match redirect_to {
                        Some(p) => format!(
                            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{p}/api/v1/query\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        ),
                        None => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string(),
                    };
                    let _ = sock.write_all(answer.as_bytes()).await;
                });
            }
        });
        me
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    fn saw(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).contains(needle)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: std::process::Child,
    url: String,
    db: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(redirector: u16, attacker: u16) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cals = dir.path().join("calendars");
        std::fs::create_dir_all(&cals).unwrap();
        std::fs::write(
            cals.join("sectest.yaml"),
            open_calendar::calendar_yaml("sectest"),
        )
        .unwrap();
        let config = dir.path().join("muhurat.yaml");
        std::fs::write(
            &config,
            format!(
                "policy:\n  secrets:\n    consul-prod: {{env: MUHURAT_TEST_CONSUL_TOKEN, hosts: [\"consul.internal:8500\"]}}\n    \
                 vm-read: {{env: MUHURAT_TEST_VM_TOKEN, hosts: [\"127.0.0.1:{redirector}\"], scheme: http}}\n    \
                 hook: {{env: MUHURAT_TEST_HOOK_URL, hosts: [\"hooks.internal:443\"]}}\n    \
                 unset-hook: {{env: MUHURAT_TEST_UNSET_HOOK_URL, hosts: [\"hooks.internal:443\"]}}\n"
            ),
        )
        .unwrap();
        let db = format!("sqlite://{}", dir.path().join("muhurat.db").display());
        let port = free_port();
        let log = dir.path().join("server.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(BIN)
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
                &db,
            ])
            .arg("--calendars")
            .arg(&cals)
            .arg("--config")
            .arg(&config)
            .env("MUHURAT_ALLOW_UNSYNCED_CLOCK", "1")
            .env("MUHURAT_TEST_CONSUL_TOKEN", CONSUL_TOKEN)
            // The variable the old unbound lookup read: set, and unused.
            .env("MUHURAT_SECRET_CONSUL_PROD", CONSUL_TOKEN)
            .env("MUHURAT_TEST_VM_TOKEN", VM_TOKEN)
            // The webhook URL points at the attacker's listener, which the
            // binding does not list: it must never be called.
            .env(
                "MUHURAT_TEST_HOOK_URL",
                format!("http://127.0.0.1:{attacker}/{HOOK_PATH}"),
            )
            // Bound, but never set on the server.
            .env_remove("MUHURAT_TEST_UNSET_HOOK_URL")
            .env("RUST_LOG", "debug,sqlx=warn,hyper=warn,reqwest=warn")
            .env_remove("MUHURAT_CONFIG")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn muhurat server");
        let s = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            db,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/healthz", s.url)).await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "not healthy:\n{}", s.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn token(&self, role: &str) -> String {
        let out = std::process::Command::new(BIN)
            .args([
                "token", "create", "--name", role, "--role", role, "--db", &self.db,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, token: &str, path: &str) -> String {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A spec for `sock` (a socket that does not exist: every probe is refused
/// before it gets that far).
fn spec_on(sock: &str, name: &str, extra: &str) -> String {
    format!(
        "name: {name}\ncalendar: sectest\nwindows: {{guard: {{before_open: 0m, after_close: 0m}}, min_remaining: 0m}}\n\
         traffic:\n  haproxy:\n    endpoints: [\"unix:{sock}\"]\n    backend: app\n    pools: {{blue: [b1], green: [g1]}}\n\
         {extra}steps:\n  - set_weight: 50\n  - set_weight: 100\n"
    )
}

fn haproxy_spec(name: &str, extra: &str) -> String {
    spec_on(&format!("/nonexistent/{name}.sock"), name, extra)
}

fn consul_spec(name: &str, address: &str) -> String {
    format!(
        "name: {name}\ncalendar: sectest\ntraffic:\n  consul:\n    address: {address}\n    token_secret: consul-prod\n    \
         kv: {{key: muhurat/{name}}}\n    pools: {{blue: [b1], green: [g1]}}\nsteps:\n  - set_weight: 50\n  - set_weight: 100\n"
    )
}

fn metrics_spec(name: &str, url: &str, secret: &str) -> String {
    haproxy_spec(
        name,
        &format!(
            "analysis:\n  prometheus: {url}\n  auth: {{bearer_secret: {secret}}}\n  checks:\n    - {{name: e, query: up, max: 1}}\n"
        ),
    )
}

fn no_secret_in(what: &str, text: &str) {
    for s in [CONSUL_TOKEN, VM_TOKEN, HOOK_PATH] {
        assert!(!text.contains(s), "{what} carries a secret value: {text}");
    }
}

#[tokio::test]
async fn the_exfiltration_probe_reaches_no_listener_for_any_role_or_endpoint() {
    let attacker = Listener::start(None).await;
    let redirector = Listener::start(Some(attacker.port)).await;
    let srv = Server::start(redirector.port, attacker.port).await;
    let evil = format!("http://127.0.0.1:{}", attacker.port);
    let roles = ["viewer", "deployer", "approver", "admin"];
    let tokens: Vec<(&str, String)> = roles.iter().map(|r| (*r, srv.token(r))).collect();

    for (role, token) in &tokens {
        let may_deploy = matches!(*role, "deployer" | "admin");
        let probes: Vec<(&str, Value)> = vec![
            (
                "/api/v1/check-metrics",
                json!({"spec": metrics_spec("probe", &evil, "consul-prod")}),
            ),
            (
                "/api/v1/check-metrics",
                json!({"spec": metrics_spec("probe", &evil, "vm-read")}),
            ),
            (
                "/api/v1/check-target",
                json!({"spec": consul_spec("probe", &evil)}),
            ),
            (
                "/api/v1/pools",
                json!({"spec": consul_spec("probe", &evil)}),
            ),
            (
                "/api/v1/rollouts",
                json!({"spec": consul_spec("probe", &evil), "revision": "r1"}),
            ),
            (
                "/api/v1/rollouts",
                json!({"spec": metrics_spec("probe", &evil, "vm-read"), "revision": "r1"}),
            ),
        ];
        for (path, body) in probes {
            let (status, text) = srv.post(token, path, body).await;
            no_secret_in(&format!("{role} {path}"), &text);
            if may_deploy {
                assert_eq!(status, 400, "{role} {path}: {text}");
                assert!(text.contains("policy_violation"), "{role} {path}: {text}");
                assert!(
                    text.contains(&format!("127.0.0.1:{}", attacker.port))
                        && (text.contains("`consul-prod`") || text.contains("`vm-read`")),
                    "the refusal names the secret and the host: {text}"
                );
            } else {
                assert_eq!(status, 403, "{role} {path}: {text}");
            }
        }
        // A bound host that redirects: the token goes there (it is bound)
        // and nowhere else.
        let (status, text) = srv
            .post(
                token,
                "/api/v1/check-metrics",
                json!({"spec": metrics_spec("probe", &format!("http://127.0.0.1:{}", redirector.port), "vm-read")}),
            )
            .await;
        no_secret_in(&format!("{role} redirect"), &text);
        if may_deploy {
            assert_eq!(status, 200, "{text}");
            assert!(text.contains("\"verdict\":\"error\""), "{text}");
        } else {
            assert_eq!(status, 403, "{text}");
        }
    }
    assert!(
        redirector.saw(VM_TOKEN),
        "the bound host received the metrics token (the test reaches the network)"
    );

    // Notifications: a webhook whose URL points outside its binding, and a
    // non-webhook secret used as a webhook, are refused at start — before
    // anything could be delivered — naming the secret, never the URL.
    for (secret, says) in [
        (
            "hook",
            format!(
                "secret `hook` may not be sent to http://127.0.0.1:{}",
                attacker.port
            ),
        ),
        (
            "consul-prod",
            "webhook secret `consul-prod` does not hold an http(s) URL".to_string(),
        ),
    ] {
        for (role, token) in &tokens {
            let spec = haproxy_spec(
                "notified",
                &format!("notify: [{{webhook_secret: {secret}}}]\n"),
            );
            let (status, text) = srv
                .post(
                    token,
                    "/api/v1/rollouts",
                    json!({"spec": spec, "revision": "r1"}),
                )
                .await;
            no_secret_in("start with a webhook", &text);
            if matches!(*role, "deployer" | "admin") {
                assert_eq!(status, 400, "{text}");
                assert!(text.contains(&says), "{text}");
            } else {
                assert_eq!(status, 403, "{text}");
            }
        }
    }

    assert_eq!(
        attacker.connections(),
        0,
        "the attacker's listener was contacted"
    );
    let list = srv.get(&tokens[3].1, "/api/v1/rollouts").await;
    no_secret_in("the rollout list", &list);
    no_secret_in("the server log", &srv.log());
    // Nor the database (audit log, outbox, rollouts).
    let file = srv.db.trim_start_matches("sqlite://").to_string();
    for f in [file.clone(), format!("{file}-wal")] {
        if let Ok(bytes) = std::fs::read(&f) {
            no_secret_in(&f, &String::from_utf8_lossy(&bytes));
        }
    }
}

/// A spec's `notify` naming a webhook secret that is bound but not set on
/// the server is refused at start (4xx, naming the secret, its variable and
/// the fix) — not discovered at the first delivery, after the rollout has
/// begun moving traffic with nobody told.
#[tokio::test]
async fn a_webhook_secret_that_is_not_set_is_refused_at_start() {
    let attacker = Listener::start(None).await;
    let redirector = Listener::start(None).await;
    let srv = Server::start(redirector.port, attacker.port).await;
    let token = srv.token("deployer");
    let spec = haproxy_spec("notified-unset", "notify: [{webhook_secret: unset-hook}]\n");
    let (status, text) = srv
        .post(
            &token,
            "/api/v1/rollouts",
            json!({"spec": spec, "revision": "r1"}),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "policy_violation", "{text}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("notify[0].webhook_secret"), "{msg}");
    assert!(
        msg.contains("secret `unset-hook` is not set"),
        "names the secret: {msg}"
    );
    assert!(
        msg.contains("set MUHURAT_TEST_UNSET_HOOK_URL in the server's environment"),
        "says how to fix it: {msg}"
    );
    // Nothing was started.
    let list = srv.get(&token, "/api/v1/rollouts").await;
    assert!(!list.contains("notified-unset"), "{list}");
}

/// Every ```yaml block of a document that starts with `policy:`.
fn policy_blocks(doc: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
    text.split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.starts_with("policy:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_documented_policies_load_with_policy_file_as_printed() {
    let mut n = 0;
    for doc in ["README.md", "docs/api.md"] {
        for block in policy_blocks(doc) {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("policy.yaml");
            std::fs::write(&f, &block).unwrap();
            // As a user runs it: `muhurat validate SPEC --policy FILE` loads
            // the file (the spec may then violate it; the file must load).
            let out = std::process::Command::new(BIN)
                .arg("validate")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("rollouts/kite-api.yaml"))
                .arg("--policy")
                .arg(&f)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(
                !err.contains("policy.yaml:"),
                "{doc}: the policy block does not load:\n{block}\n{err}"
            );
            muhurat::policy::load("policy.yaml", &block)
                .unwrap_or_else(|d| panic!("{doc}: {d:?}\n{block}"));
            n += 1;
        }
    }
    assert!(n >= 3, "found only {n} policy blocks");
}
