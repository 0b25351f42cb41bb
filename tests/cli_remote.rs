//! The remote CLI verbs against a real `muhurat server` process (temp SQLite,
//! a test calendar) driving a real HAProxy through its Runtime API: the exit
//! codes and outputs of docs/design.md §6 as a CI job or a person sees them. Also:
//! every `muhurat` command line in the GitLab CI template parses.
//!
//! Time: the server runs on the wall clock, so the test calendar makes every
//! instant of its coverage permitted — each date in it is a holiday closed
//! for all segments — and specs that must *not* raise deny the hours around
//! now instead.

#[path = "support/haproxy.rs"]
mod haproxy;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use haproxy::{Haproxy, NamedServer, config, free_port, servers};
use muhurat::clock::{Clock, SystemClock};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_muhurat");

fn now() -> DateTime<Utc> {
    SystemClock.now()
}

/// A calendar whose every date in coverage is a trading holiday: nothing is
/// blocked inside it, everything outside it is (fail closed).
fn calendar_yaml() -> String {
    let today = now().with_timezone(&chrono_tz::Asia::Kolkata).date_naive();
    let from = today - TimeDelta::days(3);
    let until = today + TimeDelta::days(3);
    let holidays: String = (0..=6)
        .map(|i| {
            format!(
                "  - {{date: {}, name: test holiday {i}, closed: all}}\n",
                from + TimeDelta::days(i)
            )
        })
        .collect();
    format!(
        "name: clitest\nversion: \"1\"\ntimezone: Asia/Kolkata\nvalid_from: {from}\nvalid_until: {until}\n\
         segments:\n  equity: {{days: [mon, tue, wed, thu, fri], open: \"09:15\", close: \"15:30\"}}\n\
         holidays:\n{holidays}"
    )
}

/// A running server, its HAProxy and its database; all stopped on drop.
struct Env {
    dir: tempfile::TempDir,
    server: Option<std::process::Child>,
    url: String,
    db: String,
    haproxy: Haproxy,
    _blue: NamedServer,
    _green: NamedServer,
    admin: String,
    deployer: String,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let cals = dir.path().join("calendars");
        std::fs::create_dir_all(&cals).expect("calendars dir");
        std::fs::write(cals.join("clitest.yaml"), calendar_yaml()).expect("write calendar");

        let blue = NamedServer::start("b1").await;
        let green = NamedServer::start("g1").await;
        let fe = free_port();
        let haproxy = Haproxy::start(&config(
            "http",
            fe,
            "app",
            "roundrobin",
            &servers(&[("b1", blue.port, 100, ""), ("g1", green.port, 0, "")]),
        ))
        .await;

        let db = format!("sqlite://{}", dir.path().join("muhurat.db").display());
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let server = std::process::Command::new(BIN)
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
                &db,
            ])
            .arg("--calendars")
            .arg(&cals)
            .env("MUHURAT_DRIFT_INTERVAL", "1s")
            // This machine's kernel reports its clock unsynchronised.
            .env("MUHURAT_ALLOW_UNSYNCED_CLOCK", "1")
            .env_remove("MUHURAT_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn muhurat server");
        let mut env = Env {
            dir,
            server: Some(server),
            url,
            db,
            haproxy,
            _blue: blue,
            _green: green,
            admin: String::new(),
            deployer: String::new(),
        };
        env.wait_healthy().await;
        env.admin = env.token("admin", "admin", "root").await;
        env.deployer = env.token("ci", "deployer", "gitlab-ci").await;
        env
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/healthz", self.url)).await
                && r.status().is_success()
            {
                return;
            }
            if let Some(Ok(Some(st))) = self.server.as_mut().map(|c| c.try_wait()) {
                panic!("muhurat server exited ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server not healthy in 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `token create --db` (offline, against the server's own database).
    async fn token(&self, name: &str, role: &str, principal: &str) -> String {
        let out = run(
            &[
                "token",
                "create",
                "--name",
                name,
                "--role",
                role,
                "--principal",
                principal,
                "--db",
                &self.db,
            ],
            &[],
        )
        .await;
        assert_eq!(out.code, 0, "token create: {}", out.stderr);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "the token alone on stdout: {:?}",
            out.stdout
        );
        lines[0].to_string()
    }

    /// A spec for this HAProxy: `extra` goes under `windows:`, then `steps`.
    fn spec(&self, name: &str, windows_extra: &str, steps: &str) -> PathBuf {
        let text = format!(
            "name: {name}\ncalendar: clitest\nwindows:\n  guard: {{before_open: 0m, after_close: 0m}}\n  min_remaining: 0m\n{windows_extra}\
             traffic:\n  haproxy:\n    endpoints: [\"unix:{}\"]\n    backend: app\n    pools: {{blue: [b1], green: [g1]}}\n\
             steps:\n{steps}",
            self.haproxy.sock.display()
        );
        let p = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&p, text).expect("write spec");
        p
    }

    /// A spec whose raises are denied for the next day: it waits for a window.
    fn held_spec(&self, name: &str) -> PathBuf {
        let from = (now() - TimeDelta::hours(1)).to_rfc3339();
        let to = (now() + TimeDelta::days(1)).to_rfc3339();
        self.spec(
            name,
            &format!("  deny:\n    - {{name: hold, from: \"{from}\", to: \"{to}\"}}\n"),
            "  - set_weight: 50\n  - set_weight: 100\n",
        )
    }

    /// Run the CLI against this server with a token.
    async fn cli(&self, token: &str, args: &[&str]) -> Out {
        run(
            args,
            &[("MUHURAT_SERVER", &self.url), ("MUHURAT_TOKEN", token)],
        )
        .await
    }

    async fn status_json(&self, id: &str) -> Value {
        let out = self.cli(&self.admin, &["status", id, "-o", "json"]).await;
        assert_eq!(out.code, 0, "status: {}", out.stderr);
        serde_json::from_str(&out.stdout).expect("status -o json is JSON")
    }

    /// Wait until the rollout is in `state` (or panic after 20 s).
    async fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.status_json(id).await;
            if v["state"] == state {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "rollout {id} never reached {state}: {v}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run the binary with a clean muhurat environment plus `env`.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("MUHURAT_SERVER")
        .env_remove("MUHURAT_TOKEN")
        .env_remove("MUHURAT_DB")
        .env_remove("CI_DEPLOY_FREEZE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finished within 60 s")
        .expect("run the CLI");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

// ---- start ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_accepted_prints_the_id_writes_dotenv_and_pools_then_says_not_safe() {
    let env = Env::start().await;
    let spec = env.held_spec("accept");
    let pools = env
        .cli(&env.deployer, &["pools", path(&spec), "-o", "json"])
        .await;
    assert_eq!(
        pools.code, 0,
        "idle pool is safe before any rollout: {pools:?}"
    );
    let p: Value = serde_json::from_str(&pools.stdout).expect("pools JSON");
    for k in [
        "target",
        "live",
        "idle",
        "active_rollout",
        "idle_weight_max",
        "safe_to_deploy",
        "reason",
    ] {
        assert!(p.get(k).is_some(), "pools -o json lacks {k}: {p}");
    }
    assert_eq!(
        (p["live"].as_str(), p["idle"].as_str()),
        (Some("blue"), Some("green"))
    );

    let dotenv = env.dir.path().join("muhurat.env");
    let out = env
        .cli(
            &env.deployer,
            &[
                "start",
                path(&spec),
                "--revision",
                "abc123",
                "--initiator",
                "ravi",
                "--dotenv",
                path(&dotenv),
            ],
        )
        .await;
    assert_eq!(out.code, 0, "start --wait accepted: {out:?}\n{}", env.log());
    let id = first_line(&out.stdout);
    assert!(
        id.starts_with("accept-"),
        "first stdout line is the id: {out:?}"
    );
    let text = std::fs::read_to_string(&dotenv).expect("dotenv written");
    assert!(
        text.contains(&format!("MUHURAT_ROLLOUT_ID={id}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "MUHURAT_DASHBOARD_URL={}/rollouts/{id}\n",
            env.url
        )),
        "{text}"
    );

    // status -o json: the contract's fields, and the rollout waits for a window.
    let s = env.status_json(&id).await;
    for k in [
        "id",
        "name",
        "revision",
        "initiator",
        "state",
        "step",
        "canary_weight",
        "desired_weight",
        "waiting_for",
    ] {
        assert!(s.get(k).is_some(), "status -o json lacks {k}: {s}");
    }
    assert_eq!(s["id"], id.as_str());
    assert_eq!(s["name"], "accept");
    assert_eq!(s["revision"], "abc123");
    assert_eq!(s["initiator"], "ravi");
    assert_eq!(s["state"], "waiting_for_window");
    assert_eq!(s["step"], 0);
    assert_eq!(s["canary_weight"], 0);
    // By spec name too (its active rollout), and the list form.
    assert_eq!(env.status_json("accept").await["id"], id.as_str());
    let list = env.cli(&env.admin, &["status", "-o", "json"]).await;
    let list: Value = serde_json::from_str(&list.stdout).expect("list JSON");
    assert!(
        list.as_array()
            .is_some_and(|a| a.iter().any(|r| r["id"] == id.as_str())),
        "{list}"
    );

    // A rollout is active: not safe to deploy to the idle pool → 5.
    let pools = env.cli(&env.deployer, &["pools", path(&spec)]).await;
    assert_eq!(pools.code, 5, "{pools:?}");
    assert!(pools.stdout.contains("NOT safe"), "{pools:?}");

    // The same start again (a retried CI job) returns the same rollout.
    let again = env
        .cli(
            &env.deployer,
            &[
                "start",
                path(&spec),
                "--revision",
                "abc123",
                "--initiator",
                "ravi",
            ],
        )
        .await;
    assert_eq!(
        (again.code, first_line(&again.stdout)),
        (0, id.clone()),
        "{again:?}"
    );
    // Another revision on the busy target is a conflict → 2.
    let busy = env
        .cli(
            &env.deployer,
            &["start", path(&spec), "--revision", "def456"],
        )
        .await;
    assert_eq!(busy.code, 2, "{busy:?}");
    assert!(busy.stderr.contains("target_busy"), "{busy:?}");

    let abort = env
        .cli(&env.deployer, &["abort", &id, "--reason", "test over"])
        .await;
    assert_eq!(abort.code, 0, "{abort:?}");
    env.wait_state(&id, "aborted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_step_exits_0_once_the_first_weight_is_confirmed() {
    let env = Env::start().await;
    let spec = env.spec(
        "first",
        "",
        "  - set_weight: 30\n  - approval: {min: 1}\n  - set_weight: 100\n",
    );
    let out = env
        .cli(
            &env.deployer,
            &[
                "start",
                path(&spec),
                "--revision",
                "r1",
                "--wait",
                "first-step",
                "--timeout",
                "60s",
            ],
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}\n{}", env.log());
    let id = first_line(&out.stdout);
    let s = env.status_json(&id).await;
    assert_eq!(s["canary_weight"], 30, "{s}");
    // Confirmed means HAProxy really has it: g1 has a weight above 0.
    let state = env
        .haproxy
        .cmd("get weight app/g1")
        .await
        .expect("get weight");
    assert!(!state.starts_with("0 "), "g1 carries traffic: {state}");
    // CI logs (no terminal) get plain timestamped progress lines on stderr.
    assert!(
        out.stderr
            .lines()
            .any(|l| l.len() > 20 && l.as_bytes()[4] == b'-' && l.contains('T')),
        "timestamped progress lines: {}",
        out.stderr
    );
    let abort = env
        .cli(&env.deployer, &["abort", "first", "--reason", "test over"])
        .await;
    assert_eq!(abort.code, 0, "abort by spec name: {abort:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_step_exits_1_when_aborted_and_4_on_timeout_with_dotenv_written() {
    let env = Env::start().await;
    let spec = env.held_spec("held");

    // Timeout: the rollout waits for a window; exit 4, dotenv still written.
    let dotenv = env.dir.path().join("timeout.env");
    let out = env
        .cli(
            &env.deployer,
            &[
                "start",
                path(&spec),
                "--revision",
                "r1",
                "--wait",
                "first-step",
                "--timeout",
                "3s",
                "--dotenv",
                path(&dotenv),
            ],
        )
        .await;
    assert_eq!(out.code, 4, "{out:?}");
    let id = first_line(&out.stdout);
    let text = std::fs::read_to_string(&dotenv).expect("dotenv written although the wait failed");
    assert!(
        text.starts_with(&format!("MUHURAT_ROLLOUT_ID={id}\n")),
        "{text}"
    );
    assert!(out.stderr.contains("timed out"), "{out:?}");

    // Aborted while waiting: exit 1. The retried start returns the same
    // rollout and waits on it; an abort from another terminal ends it.
    let waiter = {
        let url = env.url.clone();
        let token = env.deployer.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            run(
                &[
                    "start",
                    path(&spec),
                    "--revision",
                    "r1",
                    "--wait",
                    "first-step",
                    "--timeout",
                    "60s",
                ],
                &[("MUHURAT_SERVER", &url), ("MUHURAT_TOKEN", &token)],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let abort = env
        .cli(&env.deployer, &["abort", &id, "--reason", "bad build"])
        .await;
    assert_eq!(abort.code, 0, "{abort:?}");
    let out = waiter.await.expect("waiter");
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(first_line(&out.stdout), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_step_exits_5_at_once_when_the_rollout_pauses() {
    let env = Env::start().await;
    let spec = env.spec("pausing", "", "  - pause: {}\n  - set_weight: 100\n");
    let began = Instant::now();
    let out = env
        .cli(
            &env.deployer,
            &[
                "start",
                path(&spec),
                "--revision",
                "r1",
                "--wait",
                "first-step",
                "--timeout",
                "60s",
            ],
        )
        .await;
    assert_eq!(out.code, 5, "{out:?}\n{}", env.log());
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "exit 5 at once, not at the timeout"
    );
    let id = first_line(&out.stdout);
    assert_eq!(env.status_json(&id).await["state"], "paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_is_refused_for_the_initiator_and_accepted_for_another_approver() {
    let env = Env::start().await;
    let ravi = env.token("ravi", "approver", "ravi").await;
    let asha = env.token("asha", "approver", "asha").await;
    let spec = env.held_spec_with_approval();
    let out = env
        .cli(
            &env.deployer,
            &[
                "start",
                path(&spec),
                "--revision",
                "r1",
                "--initiator",
                "ravi",
            ],
        )
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let id = first_line(&out.stdout);
    env.wait_state(&id, "awaiting_approval").await;

    let own = env.cli(&ravi, &["approve", &id]).await;
    assert_eq!(own.code, 6, "the initiator cannot approve: {own:?}");
    assert!(own.stderr.contains("separation_of_duties"), "{own:?}");

    // A stale step is a conflict (2), not an approval.
    let stale = env.cli(&asha, &["approve", &id, "--step", "1"]).await;
    assert_eq!(stale.code, 2, "{stale:?}");

    let ok = env
        .cli(&asha, &["approve", &id, "--comment", "looks good"])
        .await;
    assert_eq!(ok.code, 0, "{ok:?}\n{}", env.log());
    assert!(
        ok.stdout.contains("step 0 of approve-me revision r1"),
        "shows what it approves: {ok:?}"
    );
    assert!(
        ok.stdout.contains("0% → 100%"),
        "shows the next raise: {ok:?}"
    );
    let s = env.status_json(&id).await;
    assert_ne!(s["state"], "awaiting_approval", "{s}");

    // A viewer may read but not pause: refused → 6.
    let viewer = env.token("viewer", "viewer", "vic").await;
    let denied = env.cli(&viewer, &["pause", &id]).await;
    assert_eq!(denied.code, 6, "{denied:?}");
    let pause = env
        .cli(&env.deployer, &["pause", &id, "--reason", "hold on"])
        .await;
    assert_eq!(pause.code, 0, "{pause:?}");
    env.wait_state(&id, "paused").await;
    let resume = env.cli(&env.deployer, &["resume", &id]).await;
    assert_eq!(resume.code, 0, "{resume:?}");
}

impl Env {
    /// Approval first, then a raise that is denied for a day.
    fn held_spec_with_approval(&self) -> PathBuf {
        let from = (now() - TimeDelta::hours(1)).to_rfc3339();
        let to = (now() + TimeDelta::days(1)).to_rfc3339();
        self.spec(
            "approve-me",
            &format!("  deny:\n    - {{name: hold, from: \"{from}\", to: \"{to}\"}}\n"),
            "  - approval: {min: 1}\n  - set_weight: 100\n",
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_revoked_refused_and_missing_say_what_to_do() {
    let env = Env::start().await;
    let list = env.cli(&env.admin, &["token", "list", "-o", "json"]).await;
    assert_eq!(list.code, 0, "{list:?}");
    let v: Value = serde_json::from_str(&list.stdout).expect("token list JSON");
    assert!(!list.stdout.contains("mht_"), "tokens are never listed");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");

    let temp = env.token("temp", "viewer", "tess").await;
    let revoke = env.cli(&env.admin, &["token", "revoke", "temp"]).await;
    assert_eq!(revoke.code, 0, "{revoke:?}");
    let refused = env.cli(&temp, &["status"]).await;
    assert_eq!(refused.code, 6, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("the server refused the token: token `temp` was revoked on")
            && refused.stderr.contains("by root"),
        "{refused:?}"
    );
    let none = run(&["status"], &[("MUHURAT_SERVER", &env.url)]).await;
    assert_eq!(none.code, 6, "{none:?}");
    // Offline revoke works on the database directly.
    let off = run(&["token", "revoke", "ci", "--db", &env.db], &[]).await;
    assert_eq!(off.code, 0, "{off:?}");
    let ci = env.cli(&env.deployer, &["status"]).await;
    assert_eq!(ci.code, 6, "{ci:?}");
}

#[tokio::test]
async fn start_refuses_during_a_gitlab_deploy_freeze_and_unreachable_is_3() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.yaml");
    std::fs::write(&spec, "name: x\n").unwrap();
    let port = free_port(); // nothing listens there
    let server = format!("http://127.0.0.1:{port}");
    let out = run(
        &["start", path(&spec), "--revision", "r1"],
        &[("CI_DEPLOY_FREEZE", "true"), ("MUHURAT_SERVER", &server)],
    )
    .await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("CI_DEPLOY_FREEZE"), "{out:?}");
    assert!(out.stdout.is_empty(), "no rollout id: {out:?}");

    let out = run(
        &["start", path(&spec), "--revision", "r1"],
        &[("MUHURAT_SERVER", &server)],
    )
    .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("cannot reach the muhurat server"),
        "{out:?}"
    );
    let out = run(&["status"], &[("MUHURAT_SERVER", &server)]).await;
    assert_eq!(out.code, 3, "{out:?}");
}

// ---- the GitLab CI template ---------------------------------------------------------

/// Example values for the variables the template's commands use.
fn substitute(line: &str) -> String {
    let vars = [
        ("MUHURAT_SPEC", "rollouts/kite-api.yaml"),
        ("MUHURAT_POLICY", "policy.yaml"),
        ("MUHURAT_WAIT", "accepted"),
        ("MUHURAT_TIMEOUT", "15m"),
        ("MUHURAT_ROLLOUT_ID", "kite-api-20261126-abc123"),
        ("CI_COMMIT_SHORT_SHA", "1a2b3c4d"),
        ("GITLAB_USER_LOGIN", "ravi"),
        ("CI_PIPELINE_URL", "https://gitlab.example/p/1"),
    ];
    let mut s = line.to_string();
    for (k, v) in vars {
        s = s
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    assert!(
        !s.contains("$MUHURAT") && !s.contains("$CI_"),
        "unsubstituted variable in {line}"
    );
    s
}

/// A minimal POSIX-shell word splitter: quotes and backslashes, enough for
/// the template's command lines.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.extend(chars.next()),
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quotes in {s}");
    if in_word {
        words.push(cur);
    }
    words
}

/// The `muhurat …` commands in a script line, cut at redirections and
/// shell operators.
fn muhurat_commands(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in line.split(['|', ';', '{', '}']).flat_map(|p| p.split("&&")) {
        let p = part.trim();
        let p = p
            .strip_prefix("then ")
            .or_else(|| p.strip_prefix("else "))
            .unwrap_or(p)
            .trim();
        if let Some(rest) = p.strip_prefix("muhurat ") {
            let rest = rest.split(" >").next().unwrap_or(rest);
            out.push(format!("muhurat {rest}"));
        }
    }
    out
}

#[test]
fn every_muhurat_command_in_the_gitlab_template_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("contrib/gitlab/muhurat.gitlab-ci.yml"))
        .expect("read the template");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
    let jobs = doc.as_mapping().expect("a mapping of jobs");
    let mut found = Vec::new();
    for (name, job) in jobs {
        let Some(script) = job.get("script").and_then(|s| s.as_sequence()) else {
            continue;
        };
        for entry in script {
            // `!reference [...]` entries are tagged values; anything else
            // must be a string (an unquoted `key: value` would be a mapping
            // that GitLab rejects).
            let Some(s) = entry.as_str() else {
                assert!(
                    matches!(entry, serde_yaml_ng::Value::Tagged(_)),
                    "job {name:?}: script entry is not a string: {entry:?}"
                );
                continue;
            };
            for line in s.lines() {
                for cmd in muhurat_commands(line) {
                    let words = shell_words(&substitute(&cmd));
                    if let Err(e) = muhurat::cli::Cli::try_parse_from(&words) {
                        panic!("job {name:?}: `{cmd}` does not parse:\n{e}");
                    }
                    found.push(words[1].clone());
                }
            }
        }
    }
    found.sort();
    found.dedup();
    assert_eq!(
        found,
        [
            "abort", "calendar", "pause", "plan", "pools", "start", "status", "validate"
        ],
        "the template's verbs"
    );

    // The contract's shape of the deploy job.
    let deploy = &doc["muhurat:deploy"];
    assert_eq!(
        deploy["artifacts"]["reports"]["dotenv"].as_str(),
        Some("muhurat.env")
    );
    assert_eq!(deploy["artifacts"]["when"].as_str(), Some("always"));
    assert_eq!(
        deploy["environment"]["url"].as_str(),
        Some("$MUHURAT_DASHBOARD_URL")
    );
    let start = deploy["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .find(|l| l.starts_with("muhurat start"))
        .expect("a start line");
    for want in [
        "--revision \"$CI_COMMIT_SHORT_SHA\"",
        "--initiator \"$GITLAB_USER_LOGIN\"",
        "--dotenv muhurat.env",
    ] {
        assert!(start.contains(want), "{start} lacks {want}");
    }
    for manual in ["muhurat:pause", "muhurat:abort"] {
        assert_eq!(
            doc[manual]["rules"][0]["when"].as_str(),
            Some("manual"),
            "{manual}"
        );
    }
    assert!(text.contains(">>> YOUR DEPLOY COMMAND <<<"));
}

#[test]
fn shell_words_handles_quotes() {
    assert_eq!(
        shell_words(r#"muhurat pause "a b" --reason 'x "y"' c\ d"#),
        ["muhurat", "pause", "a b", "--reason", "x \"y\"", "c d"]
    );
}
