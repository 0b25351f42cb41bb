//! The web dashboard in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, the `fantoccini` crate), against a real
//! `muhurat server` process (temp SQLite, seeded with tokens and rollouts)
//! behind a real HAProxy, with the rollouts moving the weights of a second
//! HAProxy backend. Screenshots of every page at desktop (1280 px) and
//! phone (400 px) width are saved under `target/dashboard-screenshots/`.
//!
//! The browser reaches the dashboard through HAProxy so that a test can cut
//! the event stream the way a network or proxy would (maintenance + shut
//! sessions on the dashboard's server line) and watch the page recover.
//!
//! Time: the server runs on the wall clock; the test calendar makes the
//! days around today holidays closed for all segments, so every instant now
//! is permitted and raises happen at once.

#[path = "support/haproxy.rs"]
mod haproxy;
#[path = "support/victoria.rs"]
mod victoria;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use fantoccini::{Client, ClientBuilder, Locator};
use haproxy::{Haproxy, NamedServer, free_port, servers};
use muhurat::clock::{Clock, SystemClock};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_muhurat");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser at a time: the machine has two cores, and parallel
/// Chromiums make every timing in these tests meaningless.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn now() -> DateTime<Utc> {
    SystemClock.now()
}

fn today() -> chrono::NaiveDate {
    now().with_timezone(&chrono_tz::Asia::Kolkata).date_naive()
}

/// The days around today are holidays (everything permitted now); later
/// days have regular sessions, one Saturday has a special session and one
/// day a blackout, so the calendar page has each kind to show.
fn calendar_yaml() -> String {
    let t = today();
    let from = t - TimeDelta::days(3);
    let until = t + TimeDelta::days(30);
    let holidays: String = (0..=6)
        .map(|i| {
            format!(
                "  - {{date: {}, name: Test holiday {i}, closed: all, source: \"test circular 7/2026\", confidence: high}}\n",
                from + TimeDelta::days(i)
            )
        })
        .collect();
    let mut sat = t + TimeDelta::days(5);
    while chrono::Datelike::weekday(&sat) != chrono::Weekday::Sat {
        sat += TimeDelta::days(1);
    }
    let blackout = sat + TimeDelta::days(3);
    format!(
        "name: dashtest\nversion: \"1\"\ntimezone: Asia/Kolkata\nvalid_from: {from}\nvalid_until: {until}\n\
         segments:\n  equity: {{days: [mon, tue, wed, thu, fri], open: \"09:15\", close: \"15:30\"}}\n  \
         commodity: {{days: [mon, tue, wed, thu, fri], open: \"09:00\", close: \"23:30\"}}\n\
         holidays:\n{holidays}\
         special_sessions:\n  - date: {sat}\n    name: DR drill Saturday\n    source: \"NSE/CMTR/71234\"\n    confidence: medium\n    \
         sessions: {{equity: [{{open: \"09:15\", close: \"10:00\"}}]}}\n\
         blackouts:\n  - {{date: {blackout}, name: Muhurat trading hours not yet notified, from: \"17:00\", to: \"20:00\", source: \"expected circular\", confidence: low}}\n"
    )
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// A muhurat server behind HAProxy, with an app backend for rollouts.
struct Env {
    dir: tempfile::TempDir,
    server: Option<Child>,
    /// Straight to the server (for the test's own API calls).
    api: String,
    /// Through HAProxy: what the browser uses.
    url: String,
    db: String,
    haproxy: Haproxy,
    _blue: NamedServer,
    _green: NamedServer,
    tokens: std::collections::BTreeMap<&'static str, String>,
}

/// (name, role, principal). `asha` starts rollouts (deployer) and is also
/// an approver under another token; `ravi` approves; `vijay` only reads.
const TOKENS: &[(&str, &str, &str)] = &[
    ("root", "admin", "root"),
    ("asha-ci", "deployer", "asha"),
    ("asha", "approver", "asha"),
    ("ravi", "approver", "ravi"),
    ("vijay", "viewer", "vijay"),
];

impl Env {
    async fn start() -> Env {
        Self::start_seeded(|_| async {}).await
    }

    /// `seed` runs against the database before the server starts.
    async fn start_seeded<F, Fut>(seed: F) -> Env
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let cals = dir.path().join("calendars");
        std::fs::create_dir_all(&cals).expect("calendars dir");
        std::fs::write(cals.join("dashtest.yaml"), calendar_yaml()).expect("write calendar");
        let db = format!("sqlite://{}", dir.path().join("muhurat.db").display());
        let blue = NamedServer::start("b1").await;
        let green = NamedServer::start("g1").await;
        let fe = free_port();
        let dash_fe = free_port();
        let port = free_port();
        let haproxy = Haproxy::start(&format!(
            "defaults\n    mode http\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n    timeout tunnel 1h\n\n\
             frontend fe\n    bind 127.0.0.1:{fe}\n    default_backend app\n\n\
             backend app\n    balance roundrobin\n{}\n\
             frontend dash\n    bind 127.0.0.1:{dash_fe}\n    default_backend dashboard\n\n\
             backend dashboard\n    server muhurat 127.0.0.1:{port}\n",
            servers(&[("b1", blue.port, 100, ""), ("g1", green.port, 0, "")])
        ))
        .await;
        let mut env = Env {
            dir,
            server: None,
            api: format!("http://127.0.0.1:{port}"),
            url: format!("http://127.0.0.1:{dash_fe}"),
            db,
            haproxy,
            _blue: blue,
            _green: green,
            tokens: Default::default(),
        };
        for (name, role, principal) in TOKENS {
            let t = env.token(name, role, principal);
            env.tokens.insert(name, t);
        }
        seed(env.db.clone()).await;
        let log = std::fs::File::create(env.dir.path().join("server.log")).expect("log");
        let child = Command::new(BIN)
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(&env.db)
            .arg("--calendars")
            .arg(&cals)
            .env("MUHURAT_DRIFT_INTERVAL", "1s")
            .env("MUHURAT_ALLOW_UNSYNCED_CLOCK", "1")
            .env_remove("MUHURAT_CONFIG")
            .env_remove("MUHURAT_PUBLIC_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn muhurat server");
        env.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/healthz", env.url)).await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server not healthy through HAProxy in 20 s:\n{}",
                env.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        env
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn token(&self, name: &str, role: &str, principal: &str) -> String {
        let out = Command::new(BIN)
            .args(["token", "create", "--name", name, "--role", role])
            .args(["--principal", principal, "--db", &self.db])
            .env_remove("MUHURAT_DB")
            .output()
            .expect("token create");
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn spec(&self, name: &str, steps: &str) -> String {
        self.spec_with(name, "", steps)
    }

    /// A spec for this HAProxy; `extra` (top-level keys, e.g. `analysis`)
    /// goes before `steps`.
    fn spec_with(&self, name: &str, extra: &str, steps: &str) -> String {
        format!(
            "name: {name}\ncalendar: dashtest\nwindows:\n  guard: {{before_open: 0m, after_close: 0m}}\n  min_remaining: 0m\n{extra}\
             traffic:\n  haproxy:\n    endpoints: [\"unix:{}\"]\n    backend: app\n    pools: {{blue: [b1], green: [g1]}}\n\
             steps:\n{steps}",
            self.haproxy.sock.display()
        )
    }

    /// A JSON call straight to the server with a bearer token.
    async fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let c = reqwest::Client::new();
        let mut rq = c
            .request(method.parse().unwrap(), format!("{}{path}", self.api))
            .bearer_auth(&self.tokens[token]);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.expect("API call");
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    /// Start a rollout as asha (deployer, initiator asha) and wait until it
    /// has left `pending`.
    async fn start_rollout(&self, name: &str, steps: &str) -> String {
        self.start_spec(self.spec(name, steps)).await
    }

    async fn start_spec(&self, spec: String) -> String {
        let v = self
            .call(
                "asha-ci",
                "POST",
                "/api/v1/rollouts",
                Some(json!({"spec": spec, "revision": "3f9c2ab"})),
            )
            .await;
        let id = v["id"].as_str().expect("rollout id").to_string();
        self.wait_state(&id, |s| s != "pending").await;
        id
    }

    async fn wait_state(&self, id: &str, ok: impl Fn(&str) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .call("root", "GET", &format!("/api/v1/rollouts/{id}"), None)
                .await;
            if ok(v["state"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "rollout {id} stuck: {v}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The canary server's weight as HAProxy has it now.
    async fn green_weight(&self) -> String {
        self.haproxy
            .cmd("get weight app/g1")
            .await
            .expect("get weight")
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

/// Headless Chromium through its own chromedriver and a fresh profile.
struct Browser {
    c: Client,
    /// The WebDriver session, ended on drop so chromedriver stops its
    /// Chromium (killing chromedriver alone leaves Chromium running).
    session: String,
    driver: Child,
    driver_url: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: these tests need a real browser. \
                 Run `apt-get install -y chromium chromium-driver` (Debian packages)."
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let driver_url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while reqwest::get(format!("{driver_url}/status")).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        // Plain HTTP to chromedriver on loopback: no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver_url)
            .await
            .expect("a Chromium session through chromedriver");
        let session = c
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("a WebDriver session id")
            .to_string();
        Browser {
            c,
            session,
            driver,
            driver_url,
            _profile: profile,
        }
    }

    async fn goto(&self, url: &str) {
        self.c.goto(url).await.expect("navigate");
    }

    async fn js(&self, script: &str) -> Value {
        self.c
            .execute(script, vec![])
            .await
            .expect("execute script")
    }

    /// Poll a JS expression until it is truthy; fail with the page's text.
    async fn until(&self, expr: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .c
                .execute(&format!("return ({expr});"), vec![])
                .await
                .unwrap_or(Value::Null);
            let truthy =
                !matches!(v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.js("return document.body.innerText").await;
                panic!(
                    "{what}: `{expr}` never held within 20 s.\npage:\n{}\nconsole: {:?}",
                    text.as_str().unwrap_or(""),
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Click the element; found again if a live update replaced it
    /// between finding and clicking (a stale element).
    async fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            let el = self
                .c
                .wait()
                .at_most(Duration::from_secs(10))
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"));
            match el.click().await {
                Ok(()) => return,
                Err(e) if tries < 5 && e.to_string().contains("stale element") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self
            .c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        el.clear().await.ok();
        el.send_keys(text).await.expect("type");
    }

    async fn sign_in(&self, env: &Env, who: &str) {
        self.goto(&format!("{}/login", env.url)).await;
        self.type_into("#token", &env.tokens[who]).await;
        self.click("#sign-in").await;
        self.until(
            "document.body.dataset.page === 'rollouts' && !!document.body.dataset.loaded",
            "the rollouts page after sign-in",
        )
        .await;
    }

    /// The browser console since the last call (errors, CSP violations).
    async fn console(&self) -> Vec<Value> {
        let Ok(id) = self.c.session_id().await else {
            return vec![];
        };
        let Some(id) = id else { return vec![] };
        let r = reqwest::Client::new()
            .post(format!("{}/session/{id}/se/log", self.driver_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await;
        match r {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["value"].as_array().cloned())
                .unwrap_or_default(),
            Err(_) => vec![],
        }
    }

    /// Follow a dark system theme (`prefers-color-scheme: dark`) or not,
    /// through chromedriver's DevTools passthrough.
    async fn dark(&self, on: bool) {
        let id = self
            .c
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("session id");
        let value = if on { "dark" } else { "light" };
        let r = reqwest::Client::new()
            .post(format!("{}/session/{id}/goog/cdp/execute", self.driver_url))
            .json(&json!({"cmd": "Emulation.setEmulatedMedia", "params": {"features": [{"name": "prefers-color-scheme", "value": value}]}}))
            .send()
            .await
            .expect("cdp");
        assert!(
            r.status().is_success(),
            "emulate {value}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Console entries of level SEVERE: JavaScript errors, CSP violations,
    /// failed loads. `allowed` substrings are expected (a refused request
    /// the test provoked).
    async fn assert_no_console_errors(&self, allowed: &[&str]) {
        let errors: Vec<Value> = self
            .console()
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .filter(|e| {
                let m = e["message"].as_str().unwrap_or("");
                !allowed.iter().any(|a| m.contains(a))
            })
            .collect();
        assert!(errors.is_empty(), "console errors: {errors:#?}");
    }

    /// Screenshots at desktop and phone width.
    async fn screenshots(&self, name: &str) {
        for (label, w, h) in [("desktop", 1280, 1000), ("phone", 400, 880)] {
            self.c.set_window_size(w, h).await.expect("resize");
            tokio::time::sleep(Duration::from_millis(300)).await;
            let png = self.c.screenshot().await.expect("screenshot");
            std::fs::write(artifacts().join(format!("{name}-{label}.png")), png)
                .expect("save screenshot");
        }
        self.c.set_window_size(1280, 1000).await.expect("resize");
    }

    /// The session cookie the browser holds (HttpOnly: WebDriver can read
    /// it, page scripts cannot).
    async fn session_cookie(&self) -> String {
        self.c
            .get_named_cookie("muhurat_session")
            .await
            .expect("session cookie")
            .value()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // `DELETE /session/{id}` by hand: Drop cannot await the client, and
        // a blocking HTTP client may not run inside the tokio runtime.
        use std::io::{Read, Write};
        let addr = self.driver_url.trim_start_matches("http://").to_string();
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The steps of the approval scenario: approval first (the rollout waits
/// for people at once), then 50%, then a long bake so it stays there.
const APPROVE_STEPS: &str =
    "  - approval: {min: 1}\n  - set_weight: 50\n  - bake: {duration: 4h}\n  - set_weight: 100\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_from_needs_attention_sees_it_move_live_then_aborts_to_zero() {
    let _one = BROWSER.lock().await;
    let env = Env::start().await;
    let id = env.start_rollout("kite-api", APPROVE_STEPS).await;
    env.wait_state(&id, |s| s == "awaiting_approval").await;

    let b = Browser::start().await;
    // Nothing but /login without a session.
    b.goto(&format!("{}/rollouts/{id}", env.url)).await;
    b.until("location.pathname === '/login'", "redirect to sign-in")
        .await;
    b.screenshots("login").await;
    // A wrong token: the server's reason, no session.
    b.type_into("#token", "mht_not-a-token").await;
    b.click("#sign-in").await;
    let err = b
        .until(
            "!document.getElementById('login-error').hidden && document.getElementById('login-error').textContent",
            "sign-in refusal",
        )
        .await;
    assert!(
        err.as_str().unwrap().contains("does not know this token"),
        "{err}"
    );

    b.sign_in(&env, "ravi").await;
    let who = b
        .js("return document.querySelector('.who').innerText")
        .await;
    assert!(
        who.as_str().unwrap().contains("ravi") && who.as_str().unwrap().contains("approver"),
        "the page says who and which role: {who}"
    );
    // Needs attention: the rollout waits for ravi's approval.
    let item = b
        .until(
            &format!("document.querySelector('#attention [data-kind=approval][data-rollout=\"{id}\"]')?.innerText"),
            "the approval in needs attention",
        )
        .await;
    assert!(item.as_str().unwrap().contains("kite-api"), "{item}");
    // The row: state, share, waiting sentence, initiator.
    let row = b
        .js(&format!(
            "return document.querySelector('#rollouts [data-id=\"{id}\"]').innerText"
        ))
        .await;
    let row = row.as_str().unwrap();
    assert!(
        row.contains("awaiting approval")
            && row.contains("0%")
            && row.contains("asha")
            && row.contains("3f9c2ab"),
        "{row}"
    );
    b.screenshots("rollouts-awaiting-approval").await;
    b.dark(true).await;
    let bg = b
        .js("return getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(bg, json!("rgb(17, 21, 25)"), "dark mode follows the system");
    b.screenshots("rollouts-dark").await;
    b.dark(false).await;

    // Approve from needs attention; the page must not reload.
    b.js("window.__same_page = 1; return 1").await;
    b.click(&format!(
        "#attention [data-rollout=\"{id}\"] button[data-act=approve]"
    ))
    .await;
    let dialog = b
        .until(
            "document.getElementById('dialog').open && document.getElementById('dialog-body').innerText",
            "the approve dialog",
        )
        .await;
    let dialog = dialog.as_str().unwrap();
    assert!(
        dialog.contains("step 0") && dialog.contains("0% → 50%") && dialog.contains("IST"),
        "the dialog says which step and what approving does: {dialog}"
    );
    b.screenshots("approve-dialog").await;
    b.type_into("#dialog-reason", "checked the canary dashboards")
        .await;
    b.click("#dialog-ok").await;
    b.until(
        &format!(
            "document.querySelector('#rollouts [data-id=\"{id}\"]')?.dataset.state === 'baking'"
        ),
        "the row moves to baking without a reload",
    )
    .await;
    b.until(
        &format!("document.querySelector('#rollouts [data-id=\"{id}\"] .pct')?.textContent.startsWith('50%')"),
        "the share bar shows 50%",
    )
    .await;
    assert_eq!(
        b.js("return window.__same_page").await,
        json!(1),
        "no reload"
    );
    assert!(
        b.js("return document.querySelector('#attention [data-kind=approval]')")
            .await
            .is_null(),
        "the approval left needs attention"
    );
    assert!(
        env.green_weight().await.starts_with("1 "),
        "HAProxy g1 weight: {}",
        env.green_weight().await
    );

    // The detail page: timeline, weights, approvals, audit newest first.
    b.goto(&format!("{}/rollouts/{id}", env.url)).await;
    b.until("document.body.dataset.loaded", "the detail page")
        .await;
    let text = b
        .js("return document.getElementById('detail').innerText")
        .await;
    let text = text.as_str().unwrap();
    for want in [
        "set weight 50%",
        "bake 4 h",
        "projected",
        "ravi approved step 0",
        "checked the canary dashboards",
        "step_approved",
        "Permitted windows",
        "until commodity session",
    ] {
        assert!(text.contains(want), "detail lacks {want:?}:\n{text}");
    }
    let first_kind = b
        .js("return document.querySelector('table.audit tbody tr td:nth-child(2)').innerText")
        .await;
    assert_ne!(
        first_kind,
        json!("created"),
        "the audit log is newest first"
    );
    // An approver may not abort or pause (deployer's actions): no buttons.
    assert!(
        b.js("return document.querySelector('[data-act=abort], [data-act=pause]')")
            .await
            .is_null()
    );
    b.screenshots("rollout-detail").await;
    // The one error: the wrong token's refused sign-in.
    b.assert_no_console_errors(&[
        "/api/v1/session - Failed to load resource: the server responded with a status of 401",
    ])
    .await;

    // Abort as the deployer: the confirmation names the rollout and says 0% now.
    b.click("#sign-out").await;
    b.until("location.pathname === '/login'", "signed out")
        .await;
    b.sign_in(&env, "asha-ci").await;
    b.goto(&format!("{}/rollouts/{id}", env.url)).await;
    b.click("button[data-act=abort]").await;
    let body = b
        .until(
            "document.getElementById('dialog').open && document.getElementById('dialog-body').innerText",
            "the abort dialog",
        )
        .await;
    assert!(
        body.as_str().unwrap().contains("kite-api") && body.as_str().unwrap().contains("0% now"),
        "{body}"
    );
    assert_eq!(
        b.js("return document.getElementById('dialog-ok').disabled")
            .await,
        json!(true),
        "abort stays disabled until the name is typed"
    );
    b.type_into("#confirm-name", "kite-api").await;
    b.type_into("#dialog-reason", "bad canary").await;
    b.screenshots("abort-dialog").await;
    b.click("#dialog-ok").await;
    b.until(
        "document.querySelector('.card .state')?.dataset.state === 'aborted'",
        "aborted, shown live",
    )
    .await;
    b.until(
        "document.querySelector('.card .pct')?.textContent.startsWith('0%')",
        "0% shown",
    )
    .await;
    assert!(
        env.green_weight().await.starts_with("0 "),
        "HAProxy g1 weight: {}",
        env.green_weight().await
    );
    b.screenshots("rollout-aborted").await;
    b.assert_no_console_errors(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initiator_sees_why_the_server_refuses_their_approval() {
    let _one = BROWSER.lock().await;
    let env = Env::start().await;
    let id = env.start_rollout("kite-api", APPROVE_STEPS).await;
    env.wait_state(&id, |s| s == "awaiting_approval").await;
    let b = Browser::start().await;
    b.sign_in(&env, "asha").await;
    // Not "needs attention" for the person who started it…
    assert!(
        b.js("return document.querySelector('#attention [data-kind=approval]')")
            .await
            .is_null()
    );
    // …and trying anyway shows the server's reason.
    b.goto(&format!("{}/rollouts/{id}", env.url)).await;
    b.click("button[data-act=approve]").await;
    b.until("document.getElementById('dialog').open", "dialog")
        .await;
    b.click("#dialog-ok").await;
    let err = b
        .until(
            "!document.getElementById('dialog-error').hidden && document.getElementById('dialog-error').textContent",
            "the refusal in the dialog",
        )
        .await;
    let err = err.as_str().unwrap();
    assert!(err.contains("separation_of_duties"), "{err}");
    b.screenshots("approve-refused").await;
    let v = env
        .call("root", "GET", &format!("/api/v1/rollouts/{id}"), None)
        .await;
    assert_eq!(v["state"], "awaiting_approval");
    assert_eq!(v["approvals"], json!([]));
    b.assert_no_console_errors(&["403"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_actions_and_forged_or_csrf_less_requests_are_refused() {
    let _one = BROWSER.lock().await;
    let env = Env::start().await;
    let id = env.start_rollout("kite-api", APPROVE_STEPS).await;
    env.wait_state(&id, |s| s == "awaiting_approval").await;
    let b = Browser::start().await;
    b.sign_in(&env, "vijay").await;
    b.until(
        &format!("document.querySelector('#rollouts [data-id=\"{id}\"]')"),
        "the rollout listed",
    )
    .await;
    let buttons = b
        .js("return document.querySelectorAll('[data-act]').length")
        .await;
    assert_eq!(buttons, json!(0), "a viewer sees no action on the list");
    b.goto(&format!("{}/rollouts/{id}", env.url)).await;
    b.until("document.body.dataset.loaded", "detail").await;
    let buttons = b
        .js("return document.querySelectorAll('[data-act]').length")
        .await;
    assert_eq!(buttons, json!(0), "nor on the detail page");
    b.screenshots("rollout-viewer").await;

    // A forged approve from the viewer's own page, with the right CSRF
    // token: the role check refuses it.
    let forged = b
        .c
        .execute_async(
            &format!(
                "const done = arguments[0];
                 fetch('/api/v1/rollouts/{id}/approve', {{method: 'POST', credentials: 'same-origin',
                   headers: {{'Content-Type': 'application/json', 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}},
                   body: JSON.stringify({{step: 0, spec_hash: 'x'}})}})
                 .then(async r => done([r.status, await r.json()]));"
            ),
            vec![],
        )
        .await
        .expect("forged request");
    assert_eq!(forged[0], json!(403), "{forged}");
    assert_eq!(forged[1]["error"]["code"], "forbidden", "{forged}");

    // With the session cookie but without the CSRF header: refused, even
    // for a role that may act.
    let cookie = b.session_cookie().await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/rollouts/{id}/pause", env.url))
        .header("Cookie", format!("muhurat_session={cookie}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "csrf", "{v}");
    // The cookie reads like a token would.
    let r = http
        .get(format!("{}/api/v1/session", env.url))
        .header("Cookie", format!("muhurat_session={cookie}"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["principal"].as_str(), v["role"].as_str()),
        (Some("vijay"), Some("viewer"))
    );

    // The deployer's session with its CSRF token may pause; without it not.
    b.click("#sign-out").await;
    b.until("location.pathname === '/login'", "signed out")
        .await;
    // The old cookie is dead on the server, not just forgotten by the browser.
    let r = http
        .get(format!("{}/api/v1/rollouts", env.url))
        .header("Cookie", format!("muhurat_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    b.sign_in(&env, "asha-ci").await;
    let cookie = b.session_cookie().await;
    let r = http
        .post(format!("{}/api/v1/rollouts/{id}/pause", env.url))
        .header("Cookie", format!("muhurat_session={cookie}"))
        .json(&json!({"reason": "no csrf"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no CSRF header");
    let csrf = b
        .js("return document.querySelector('meta[name=csrf-token]').content")
        .await;
    let r = http
        .post(format!("{}/api/v1/rollouts/{id}/pause", env.url))
        .header("Cookie", format!("muhurat_session={cookie}"))
        .header("X-CSRF-Token", csrf.as_str().unwrap())
        .json(&json!({"reason": "with csrf"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // The page learns of the pause from the event stream.
    b.until(
        &format!("document.querySelector('#attention [data-kind=paused][data-rollout=\"{id}\"]')"),
        "paused in needs attention",
    )
    .await;
    b.screenshots("rollouts-paused").await;

    // Failed sign-ins are limited: the sixth in a minute gets 429.
    let mut last = 0;
    for _ in 0..6 {
        last = http
            .post(format!("{}/api/v1/session", env.api))
            .json(&json!({"token": "mht_wrong"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
    b.assert_no_console_errors(&["403"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_event_stream_is_shown_and_resumes_with_what_happened_meanwhile() {
    let _one = BROWSER.lock().await;
    let env = Env::start().await;
    let id = env.start_rollout("kite-api", APPROVE_STEPS).await;
    env.wait_state(&id, |s| s == "awaiting_approval").await;
    let b = Browser::start().await;
    b.sign_in(&env, "ravi").await;
    b.until(
        "document.getElementById('live').textContent === 'live'",
        "stream open",
    )
    .await;
    assert_eq!(
        b.js("return document.getElementById('conn').hidden").await,
        json!(true)
    );

    // Cut the dashboard off at the proxy: the stream breaks and reconnects
    // fail (503) until it is back.
    env.haproxy
        .cmd("set server dashboard/muhurat state maint")
        .await
        .unwrap();
    env.haproxy
        .cmd("shutdown sessions server dashboard/muhurat")
        .await
        .unwrap();
    let banner = b
        .until(
            "!document.getElementById('conn').hidden && document.getElementById('conn').textContent",
            "the lost connection shown",
        )
        .await;
    assert!(banner.as_str().unwrap().contains("lost"), "{banner}");
    b.screenshots("rollouts-connection-lost").await;
    // Meanwhile the rollout is paused (straight to the server).
    env.call(
        "asha-ci",
        "POST",
        &format!("/api/v1/rollouts/{id}/pause"),
        Some(json!({"reason": "while the dashboard was cut off"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.js(&format!(
            "return document.querySelector('#rollouts [data-id=\"{id}\"]').dataset.state"
        ))
        .await,
        json!("awaiting_approval"),
        "the page cannot know yet"
    );
    env.haproxy
        .cmd("set server dashboard/muhurat state ready")
        .await
        .unwrap();
    b.until(
        "document.getElementById('conn').hidden",
        "the banner clears",
    )
    .await;
    b.until(
        &format!(
            "document.querySelector('#rollouts [data-id=\"{id}\"]').dataset.state === 'paused'"
        ),
        "the pause made while cut off shows",
    )
    .await;
    assert_eq!(
        b.js("return document.getElementById('live').textContent")
            .await,
        json!("live")
    );
}

/// A rollout whose check VictoriaMetrics answers every second: the detail
/// page shows the latest value against the threshold, the evidence so far
/// and a chart of the recent values with the threshold line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_page_charts_each_check_against_its_threshold() {
    let _one = BROWSER.lock().await;
    let vm = victoria::victoria_metrics(&[]).await;
    let env = Env::start().await;
    // A value that moves with time (0 to 0.009), always under the 1% limit.
    let analysis = format!(
        "analysis:\n  prometheus: {}\n  interval: 1s\n  query_delay: 0s\n  evidence: always\n  min_passes: 3\n  \
         checks:\n    - name: error-rate\n      query: (time() % 10) / 1000\n      max: 0.01\n",
        vm.url
    );
    let id = env
        .start_spec(env.spec_with(
            "orders",
            &analysis,
            "  - set_weight: 10\n  - bake: {duration: 4h}\n  - set_weight: 100\n",
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = env
            .call("root", "GET", &format!("/api/v1/rollouts/{id}"), None)
            .await;
        if v["checks"][0]["history"]
            .as_array()
            .is_some_and(|h| h.len() >= 4)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no check history: {v}\n{}",
            env.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let b = Browser::start().await;
    b.sign_in(&env, "vijay").await;
    // The list shows the check's health.
    let health = b
        .until(
            &format!("document.querySelector('#rollouts [data-id=\"{id}\"] .dot')?.textContent"),
            "the check's verdict on the list",
        )
        .await;
    assert_eq!(health, json!("error-rate: pass"));
    b.goto(&format!("{}/rollouts/{id}", env.url)).await;
    b.until(
        "document.querySelector('tr[data-check=\"error-rate\"] svg.spark polyline')",
        "the chart",
    )
    .await;
    let row = b
        .js("return document.querySelector('tr[data-check=\"error-rate\"]').innerText")
        .await;
    let row = row.as_str().unwrap();
    assert!(
        row.contains("pass") && row.contains("≤ 0.01") && row.contains("of 3 passes"),
        "{row}"
    );
    let points = b
        .js("return document.querySelector('tr[data-check=\"error-rate\"] polyline').getAttribute('points').split(' ').length")
        .await;
    assert!(points.as_u64().unwrap() >= 4, "{points}");
    assert!(
        !b.js("return document.querySelector('tr[data-check=\"error-rate\"] line.thr')")
            .await
            .is_null(),
        "the threshold is drawn"
    );
    b.screenshots("rollout-checks").await;
    b.assert_no_console_errors(&[]).await;
}

/// The timeline names the rule that ends a wait: a raise held by the
/// spec's deny window says so on its step, now and in the projection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_names_the_rule_a_waiting_step_waits_for() {
    let _one = BROWSER.lock().await;
    let env = Env::start().await;
    let ist = chrono_tz::Asia::Kolkata;
    let at = |t: DateTime<Utc>| t.with_timezone(&ist).format("%Y-%m-%dT%H:%M:00%:z");
    let spec = env
        .spec(
            "orders",
            "  - set_weight: 10\n  - set_weight: 100\n  - bake: {duration: 15s}\n",
        )
        .replace(
            "  min_remaining: 0m\n",
            &format!(
                "  min_remaining: 0m\n  deny:\n    - {{name: change-freeze, from: {}, to: {}}}\n",
                at(now() - TimeDelta::hours(1)),
                at(now() + TimeDelta::hours(2)),
            ),
        );
    let id = env.start_spec(spec).await;
    let v = env.wait_state(&id, |s| s == "waiting_for_window").await;
    assert_eq!(
        v["next_window_after"], "deny window change-freeze ends",
        "{v}"
    );
    let b = Browser::start().await;
    b.sign_in(&env, "vijay").await;
    b.goto(&format!("{}/rollouts/{id}", env.url)).await;
    let step = b
        .until(
            "document.querySelector('li[data-step=\"0\"] .wait-rule') && document.querySelector('li[data-step=\"0\"]').innerText",
            "the waiting step",
        )
        .await;
    let step = step.as_str().unwrap();
    assert!(
        step.contains("when deny window change-freeze ends")
            && step.contains("waits until deny window change-freeze ends"),
        "{step}"
    );
    // The next raise follows the first at once: it waits for that one.
    let next = b
        .js("return document.querySelector('li[data-step=\"1\"]').innerText")
        .await;
    assert!(!next.as_str().unwrap().contains("waits until"), "{next}");
    // Regression: a bake shorter than a minute read "bake 0 m".
    let bake = b
        .js("return document.querySelector('li[data-step=\"2\"] strong').innerText")
        .await;
    assert_eq!(bake, json!("bake 15 s"));
    b.screenshots("rollout-waiting-for-a-window").await;
    b.assert_no_console_errors(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_freezes_raises_and_pauses_from_the_page_and_everyone_sees_it() {
    let _one = BROWSER.lock().await;
    let env = Env::start().await;
    let id = env.start_rollout("kite-api", APPROVE_STEPS).await;
    env.wait_state(&id, |s| s == "awaiting_approval").await;
    let b = Browser::start().await;
    b.sign_in(&env, "root").await;
    b.click("button[data-act=freeze-on]").await;
    b.until("document.getElementById('dialog').open", "freeze dialog")
        .await;
    // The reason is required: the dialog says so and stays open.
    b.click("#dialog-ok").await;
    b.until(
        "!document.getElementById('dialog-error').hidden",
        "reason required",
    )
    .await;
    b.type_into("#dialog-reason", "RBI circular: no changes today")
        .await;
    b.click("#dialog-ok").await;
    let item = b
        .until(
            "document.querySelector('#attention [data-kind=freeze]')?.innerText",
            "the freeze in needs attention",
        )
        .await;
    assert!(item.as_str().unwrap().contains("RBI circular"), "{item}");
    let f = env.call("vijay", "GET", "/api/v1/freeze", None).await;
    assert_eq!(f["on"], true);
    // Pause with a reason from the detail page, then resume.
    b.goto(&format!("{}/rollouts/{id}", env.url)).await;
    b.click("button[data-act=pause]").await;
    b.type_into("#dialog-reason", "waiting for the freeze")
        .await;
    b.click("#dialog-ok").await;
    b.until(
        "document.querySelector('.card .state')?.dataset.state === 'paused'",
        "paused",
    )
    .await;
    let text = b
        .js("return document.getElementById('detail').innerText")
        .await;
    assert!(
        text.as_str().unwrap().contains("waiting for the freeze"),
        "{text}"
    );
    b.screenshots("rollout-paused").await;
    b.click("button[data-act=resume]").await;
    b.type_into("#dialog-reason", "freeze lifted soon").await;
    b.click("#dialog-ok").await;
    b.until(
        "document.querySelector('.card .state')?.dataset.state === 'awaiting_approval'",
        "resumed",
    )
    .await;
    b.goto(&format!("{}/", env.url)).await;
    b.click("button[data-act=freeze-off]").await;
    b.type_into("#dialog-reason", "all clear").await;
    b.click("#dialog-ok").await;
    b.until(
        "!document.querySelector('#attention [data-kind=freeze]')",
        "freeze lifted",
    )
    .await;
    b.assert_no_console_errors(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calendar_page_shows_a_holiday_a_special_session_and_a_blackout() {
    // Needs GET /api/v1/calendars and /api/v1/calendars/{name}/days
    // (issue 10's API), which the calendar page is coded against.
    let _one = BROWSER.lock().await;
    let env = Env::start().await;
    // A spec whose only rollout has ended: the page still offers its
    // windows (as that spec has them now), for planning its next release.
    let old = env.start_rollout("console", APPROVE_STEPS).await;
    env.call(
        "root",
        "POST",
        &format!("/api/v1/rollouts/{old}/abort"),
        Some(json!({"reason": "superseded"})),
    )
    .await;
    env.wait_state(&old, |s| s == "aborted").await;
    // Guard margins of 15 min before and 45 min after each session, so the
    // page has them to draw around the chosen rollout's sessions.
    let spec = env.spec("kite-api", APPROVE_STEPS).replace(
        "guard: {before_open: 0m, after_close: 0m}",
        "guard: {before_open: 15m, after_close: 45m}",
    );
    let id = env.start_spec(spec).await;
    let b = Browser::start().await;
    b.sign_in(&env, "vijay").await;
    b.goto(&format!("{}/calendar?rollout={id}", env.url)).await;
    b.until(
        "document.getElementById('calendar').getAttribute('aria-busy') === 'false'",
        "the calendar page loaded",
    )
    .await;
    b.screenshots("calendar").await;
    let text = b
        .js("return document.getElementById('calendar').innerText")
        .await;
    let text = text.as_str().unwrap();
    assert!(
        !text.contains("does not offer the calendar API"),
        "the calendar API is missing on this server (issue 10 adds it):\n{text}"
    );
    for want in [
        "Holiday: Test holiday 3",
        "test circular 7/2026",
        "Special session: DR drill Saturday",
        "NSE/CMTR/71234",
        "Blackout 17:00–20:00: Muhurat trading hours not yet notified",
        "confidence low",
    ] {
        assert!(text.contains(want), "the calendar lacks {want:?}:\n{text}");
    }
    let days = b
        .js("return document.querySelectorAll('.cal-day').length")
        .await;
    assert_eq!(days, json!(14), "the next 14 days");
    // The chosen rollout's permitted windows: all day on the holidays.
    let holiday_row = b
        .js(&format!(
            "return document.querySelector('.cal-day[data-date=\"{}\"] [data-permitted]')?.innerText",
            today() + TimeDelta::days(1)
        ))
        .await;
    assert!(
        holiday_row
            .as_str()
            .is_some_and(|t| t.contains("00:00–24:00") && t.contains("kite-api")),
        "{holiday_row}"
    );
    // Guard margins around a regular weekday's sessions (equity 09:15–15:30:
    // 15 min before, 45 min after), and the commodity guard that runs past
    // midnight (23:30 + 45 min) drawn at the start of the next day.
    let mut day = today() + TimeDelta::days(4);
    while matches!(
        chrono::Datelike::weekday(&day),
        chrono::Weekday::Sat | chrono::Weekday::Sun
    ) {
        day += TimeDelta::days(1);
    }
    let guards = |date: chrono::NaiveDate, seg: &str| {
        format!(
            "return [...document.querySelectorAll('.cal-day[data-date=\"{date}\"] .seg[data-segment=\"{seg}\"] rect.guard')].map((r) => r.getAttribute('x') + '+' + r.getAttribute('width') + ' ' + r.textContent)"
        )
    };
    let eq = b.js(&guards(day, "equity")).await;
    assert_eq!(
        eq,
        json!([
            "540+15 guard before the equity session: 15 min (kite-api)",
            "930+45 guard after the equity session: 45 min (kite-api)"
        ]),
        "{day}"
    );
    let spill = b.js(&guards(day + TimeDelta::days(1), "commodity")).await;
    assert!(
        spill.as_array().is_some_and(|v| v.iter().any(|g| g
            .as_str()
            .unwrap_or("")
            .starts_with("0+15 guard after the previous day's commodity session"))),
        "{spill}"
    );
    let offered = b
        .js("return [...document.querySelectorAll('#cal-rollout optgroup')].map((g) => g.label + ': ' + [...g.querySelectorAll('option')].map((o) => o.textContent).join(', '))")
        .await;
    assert_eq!(
        offered,
        json!([
            "Active rollouts: kite-api 3f9c2ab",
            "Specs (from their latest rollout): console (as in 3f9c2ab, aborted)"
        ])
    );
    b.js("document.querySelector('[data-kind=special]').scrollIntoView(); return 1")
        .await;
    b.screenshots("calendar-special-and-blackout").await;
    // The ended spec's windows when chosen.
    b.goto(&format!("{}/calendar?rollout={old}", env.url)).await;
    let row = b
        .until(
            &format!(
                "document.querySelector('.cal-day[data-date=\"{}\"] [data-permitted]')?.innerText",
                today() + TimeDelta::days(1)
            ),
            "the ended spec's permitted windows",
        )
        .await;
    assert!(
        row.as_str()
            .is_some_and(|t| t.contains("00:00–24:00") && t.contains("console")),
        "{row}"
    );
    b.assert_no_console_errors(&[]).await;
}

/// 1,000 finished rollouts in the database; the rollouts page renders them
/// (build the rows and lay them out) in under 200 ms (the median of five).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rollouts_render_in_under_200_ms() {
    let _one = BROWSER.lock().await;
    let env = Env::start_seeded(|db| async move { seed_finished(&db, 1000).await }).await;
    let b = Browser::start().await;
    b.sign_in(&env, "vijay").await;
    b.until("document.body.dataset.rows === '1000'", "1000 rows")
        .await;
    // Five renders (all rows → active only → all rows again), judged by
    // the median: one render slowed by a garbage collection or by another
    // process on this 2-core machine says nothing about the page.
    let mut times = Vec::new();
    for _ in 0..5 {
        b.js("document.getElementById('only-active').click(); document.getElementById('only-active').click(); return 1").await;
        let ms: f64 = b
            .js("return Number(document.body.dataset.renderMs)")
            .await
            .as_f64()
            .unwrap();
        times.push(ms);
        println!(
            "{ms} ms: {}",
            b.js("return document.body.dataset.renderParts").await
        );
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("rendering 1000 rollouts: median {median:.1} ms of {times:?}");
    assert!(
        median < 200.0,
        "rendering 1000 rollouts took {median} ms (median of {times:?})"
    );
    b.screenshots("rollouts-1000").await;
    b.assert_no_console_errors(&[]).await;
}

async fn seed_finished(db: &str, n: usize) {
    use muhurat::engine::{Initiator, Rollout, State};
    use muhurat::store::{NewEvent, RolloutRecord, Store};
    let store = Store::open(db).await.expect("open the store");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashtest.yaml"), calendar_yaml()).unwrap();
    let cals = Arc::new(muhurat::controller::Calendars::load(dir.path()).unwrap());
    let yaml = "name: NAME\ncalendar: dashtest\ntraffic:\n  haproxy:\n    endpoints: [\"unix:/run/haproxy/x.sock\"]\n    backend: app\n    pools: {blue: [b1], green: [g1]}\nsteps:\n  - set_weight: 10\n  - approval: {min: 1}\n  - set_weight: 100\n";
    let states = [
        State::Succeeded,
        State::Aborted,
        State::RolledBack,
        State::Failed,
    ];
    for i in 0..n {
        let name = format!("svc-{:03}", i % 97);
        let text = yaml.replace("NAME", &name);
        let loaded = muhurat::spec::load("seed", &text, |c| {
            cals.get(c)
                .map(|c| (*c).clone())
                .ok_or_else(|| muhurat::spec::CalendarLookup::NotFound(c.into()))
        })
        .expect("seed spec");
        let at = now() - TimeDelta::minutes(i as i64 * 7);
        let id = format!("{name}-{i:05}");
        let (mut r, _) = Rollout::new(
            id.clone(),
            &loaded.spec,
            format!("rev{i:05}"),
            Initiator {
                name: "gitlab-ci".into(),
                principal: "asha".into(),
            },
            at,
        );
        r.state = states[i % states.len()];
        r.confirmed = if r.state == State::Succeeded { 100 } else { 0 };
        r.desired = r.confirmed;
        r.step = if r.state == State::Succeeded {
            3
        } else {
            i % 3
        };
        r.waiting_for = None;
        let rec = RolloutRecord {
            id: id.clone(),
            name: name.clone(),
            target: format!("haproxy:app@unix:/run/haproxy/{name}.sock"),
            revision: r.revision.clone(),
            initiator: "gitlab-ci".into(),
            principal: "asha".into(),
            spec_yaml: text.clone(),
            spec_hash: loaded.spec.hash(),
            state: r.state.as_str().into(),
            active: false,
            version: 1,
            data: serde_json::to_string(&r).unwrap(),
            next_wake: None,
            created_at: at,
            updated_at: at,
        };
        store
            .insert_rollout(
                &rec,
                &NewEvent {
                    rollout_id: Some(id),
                    at,
                    kind: "created".into(),
                    why: "seeded".into(),
                    input: "{}".into(),
                    state: rec.state.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("seed a rollout");
    }
    store.pool().close().await;
}
