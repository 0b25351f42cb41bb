//! The notifications the README promises, end to end: an in-process
//! controller on a manual clock drives a full rollout against a real
//! HAProxy (http mode, blue b1/b2 live, green g1/g2 idle), the outbox
//! worker delivers over a real socket to a tiny axum receiver standing in
//! for Mattermost, and the receiver gets exactly the expected messages, in
//! order, each once — however many passes run in between.
//!
//! The calendar's one segment trades on Sundays 10:00–10:01 UTC and the
//! rollout starts on a Sunday at 10:00, inside the session: the first
//! raise waits one minute for the window. Needs `apt-get install -y
//! haproxy`.
//!
//! The webhook URL is a secret read from the environment. This binary has
//! one test, which sets the variable before it starts any runtime or
//! thread.

#[path = "support/haproxy.rs"]
mod haproxy_support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use haproxy_support::{Haproxy, NamedServer, blue_green};
use muhurat::clock::ManualClock;
use muhurat::controller::testing::ScriptedMetrics;
use muhurat::controller::{Calendars, Config, Controller, StartOutcome, StartRequest};
use muhurat::engine::{Input, Rollout, State};
use muhurat::gates::Sample;
use muhurat::notify::{self, Options, Worker};
use muhurat::secrets::{Scheme, Secrets};
use muhurat::store::{Backend, testing};
use muhurat::traffic::haproxy::{HaproxyFactory, HaproxyLimits};
use serde_json::Value;

const BE: &str = "kite_api";
/// Sunday 10:00 UTC: inside the 10:00–10:01 session.
const START: &str = "2030-01-06T10:00:00Z";
const HOOK_VAR: &str = "MUHURAT_TEST_NOTIFY_HAPROXY_HOOK";
const PUBLIC_URL: &str = "https://muhurat.example.internal";

fn drift_interval() -> TimeDelta {
    TimeDelta::seconds(1)
}

fn calendar(dir: &Path) {
    let text = "name: test\nversion: \"1\"\ntimezone: UTC\nvalid_from: 2029-12-01\nvalid_until: 2030-12-31\n\
                segments:\n  equity: {days: [sun], open: \"10:00\", close: \"10:01\"}\n";
    std::fs::write(dir.join("test.yaml"), text).unwrap();
}

fn spec(sock: &str) -> String {
    format!(
        "name: web\ncalendar: test\n\
         windows: {{timezone: UTC, guard: {{before_open: 0m, after_close: 0m}}, min_remaining: 0m}}\n\
         traffic:\n  haproxy:\n    endpoints: [\"unix:{sock}\"]\n    backend: {BE}\n    pools: {{blue: [b1, b2], green: [g1, g2]}}\n\
         notify: [{{webhook_secret: mattermost}}]\n\
         steps:\n  - set_weight: 10\n  - bake: {{duration: 10m}}\n  - approval: {{min: 1}}\n  - set_weight: 100\n"
    )
}

/// What the receiver got, in arrival order.
type Seen = Arc<Mutex<Vec<Value>>>;

struct World {
    c: Arc<Controller>,
    clock: Arc<ManualClock>,
    worker: Worker,
    haproxy: Haproxy,
    _servers: Vec<NamedServer>,
    _db: Option<tempfile::TempDir>,
    _cals: tempfile::TempDir,
    _journal: tempfile::TempDir,
}

impl World {
    async fn rollout(&self, id: &str) -> Rollout {
        let rec = self.c.store().rollout(id).await.unwrap().unwrap();
        serde_json::from_str(&rec.data).unwrap()
    }

    /// Deliver until nothing is due. One row per worker pass, so the
    /// receiver sees them in outbox (= decision) order.
    async fn deliver(&self) {
        for _ in 0..50 {
            let r = self.worker.deliver_once().await.unwrap();
            assert_eq!(r.failed, 0, "a delivery failed: {r:?}");
            if r.sent == 0 {
                return;
            }
        }
        panic!("the outbox never drained");
    }

    /// `n` passes, one drift interval apart, delivering after each.
    async fn passes(&self, n: usize) {
        for _ in 0..n {
            self.clock.advance(drift_interval());
            let report = self.c.pass().await.unwrap();
            assert_eq!(report.errors, 0, "{report:?}");
            self.c.settled().await;
            self.deliver().await;
        }
    }

    async fn until(&self, id: &str, what: &str, f: impl Fn(&Rollout) -> bool) -> Rollout {
        for _ in 0..30 {
            let r = self.rollout(id).await;
            if f(&r) {
                return r;
            }
            self.passes(1).await;
        }
        let r = self.rollout(id).await;
        panic!(
            "no {what} after 30 passes: {:?} step {} — {:?}",
            r.state, r.step, r.waiting_for
        );
    }

    async fn input(&self, id: &str, input: Input, who: &str) {
        self.c.input(id, input, Some(who)).await.unwrap();
        self.c.settled().await;
        self.deliver().await;
    }
}

async fn world(hook_port: u16) -> World {
    let (named, haproxy, _fe) = blue_green(BE).await;
    let (store, _url, db) = testing::fresh(Backend::Sqlite).await;
    let cals = tempfile::tempdir().unwrap();
    calendar(cals.path());
    let journal = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339(START)
            .unwrap()
            .with_timezone(&Utc),
    ));
    let c = Controller::new(
        store.clone(),
        Arc::new(Calendars::load(cals.path()).unwrap()),
        Arc::new(HaproxyFactory::new(HaproxyLimits::default())),
        Arc::new(ScriptedMetrics::new(|_, _| Ok(Sample::NoData))),
        clock.clone(),
        Config {
            drift_interval: drift_interval(),
            measure_db_skew: false,
            journal: journal.path().join("muhurat.journal"),
            // This machine's kernel reports its clock unsynchronised.
            allow_unsynced_clock: true,
            ..Config::default()
        },
    );
    let host = format!("127.0.0.1:{hook_port}");
    let worker = Worker {
        store,
        secrets: Secrets::one("mattermost", HOOK_VAR, Scheme::Http, &[host.as_str()]).unwrap(),
        policy: Arc::new(muhurat::policy::Policy::default()),
        http: notify::client(),
        clock: clock.clone(),
        opts: Options {
            public_url: Some(PUBLIC_URL.into()),
            request_timeout: Duration::from_secs(5),
            batch: 1,
            ..Options::default()
        },
    };
    World {
        c,
        clock,
        worker,
        haproxy,
        _servers: named,
        _db: db,
        _cals: cals,
        _journal: journal,
    }
}

/// Which promised notification a message is, from its text.
fn kind_of(text: &str) -> &'static str {
    let body = text.split_once(": ").map_or(text, |(_, b)| b);
    [
        ("accepted (", "accepted"),
        ("waiting — ", "waiting_for_window"),
        ("awaits approval", "awaiting_approval"),
        ("confirmed on every endpoint", "weight_confirmed"),
        ("paused by ", "paused"),
        ("resumed by ", "resumed"),
        ("every step done", "succeeded"),
    ]
    .iter()
    .find(|(needle, _)| body.starts_with(needle) || body.contains(needle))
    .map_or("unexpected", |(_, k)| k)
}

#[test]
fn a_full_rollout_on_haproxy_delivers_each_promised_notification_once_in_order() {
    // The webhook URL names the receiver's port: bind it first.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = probe.local_addr().unwrap().port();
    // SAFETY: the only test in this binary, before any runtime or thread
    // of its own exists; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var(
            HOOK_VAR,
            format!("http://127.0.0.1:{hook_port}/hooks/mattermost"),
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        probe.set_nonblocking(true).unwrap();
        let (port, seen) = receiver_on(probe).await;
        assert_eq!(port, hook_port);
        run(hook_port, seen).await;
    });
}

/// The receiver on the listener bound before the URL was set.
async fn receiver_on(l: std::net::TcpListener) -> (u16, Seen) {
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let l = tokio::net::TcpListener::from_std(l).unwrap();
    let port = l.local_addr().unwrap().port();
    let app = Router::new().route(
        "/hooks/mattermost",
        post(move |Json(body): Json<Value>| {
            let seen = s2.clone();
            async move {
                seen.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, seen)
}

async fn run(hook_port: u16, seen: Seen) {
    let w = world(hook_port).await;
    let out =
        w.c.start(StartRequest {
            spec_yaml: spec(&w.haproxy.sock.display().to_string()),
            revision: "r7".into(),
            initiator: "ci".into(),
            principal: "ci".into(),
        })
        .await
        .unwrap();
    let StartOutcome::Created(rec) = out else {
        panic!("expected a new rollout")
    };
    let id = rec.id;
    // Preflight runs in the background; then the session blocks the raise
    // until 10:01. Many passes in that wait say nothing more.
    let r = w
        .until(&id, "the wait for the window", |r| {
            r.state == State::WaitingForWindow
        })
        .await;
    assert_eq!(
        r.waiting_for.as_deref(),
        Some("window opens Sun 10:01 UTC (0% → 10%)")
    );
    w.passes(20).await;
    assert_eq!(w.rollout(&id).await.state, State::WaitingForWindow);

    // 10:01: the window opens, 10% is written and confirmed; the bake.
    w.clock.advance(TimeDelta::minutes(1));
    w.until(&id, "10% confirmed and baking", |r| {
        r.confirmed == 10 && r.state == State::Baking
    })
    .await;
    w.input(
        &id,
        Input::Pause {
            by: "alice".into(),
            reason: Some("checking the logs".into()),
        },
        "alice",
    )
    .await;
    w.passes(5).await;
    w.input(
        &id,
        Input::Resume {
            by: "alice".into(),
            override_checks: false,
            reason: None,
        },
        "alice",
    )
    .await;
    assert_eq!(w.rollout(&id).await.state, State::Baking);
    // The bake ends ten minutes after 10% was confirmed.
    w.clock.advance(TimeDelta::minutes(10));
    let r = w
        .until(&id, "the approval wait", |r| {
            r.state == State::AwaitingApproval
        })
        .await;
    w.passes(5).await;
    w.input(
        &id,
        Input::Approve {
            principal: "ravi".into(),
            is_initiator: false,
            step: r.step,
            spec_hash: r.spec_hash.clone(),
            comment: None,
        },
        "ravi",
    )
    .await;
    let r = w
        .until(&id, "success", |r| r.state == State::Succeeded)
        .await;
    // weights_observed_of_a_finished_rollout_is_the_last_reading: the
    // read-back that confirmed 100%, not the drift read at 10%.
    let endpoint = format!("unix:{}", w.haproxy.sock.display());
    assert_eq!(
        r.observed.get(&endpoint).copied(),
        Some(100.0),
        "{:?}",
        r.observed
    );
    // Nothing more, however many passes follow.
    w.passes(10).await;

    let got: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["text"].as_str().unwrap_or_default().to_string())
        .collect();
    let kinds: Vec<&str> = got.iter().map(|t| kind_of(t)).collect();
    assert_eq!(
        kinds,
        [
            "accepted",
            "waiting_for_window",
            "weight_confirmed",
            "paused",
            "resumed",
            "awaiting_approval",
            "weight_confirmed",
            "succeeded",
        ],
        "{got:#?}"
    );
    let link = notify::dashboard_url(PUBLIC_URL, &id);
    for t in &got {
        assert!(t.starts_with("web r7: "), "names the rollout: {t}");
        assert!(t.ends_with(&link), "links the dashboard: {t}");
    }
    assert!(
        got[1].contains("window opens Sun 10:01 UTC (0% → 10%)"),
        "{}",
        got[1]
    );
    assert!(got[2].contains("0% → 10% confirmed"), "{}", got[2]);
    assert!(
        got[3].contains("paused by alice: checking the logs"),
        "{}",
        got[3]
    );
    assert!(got[5].contains("awaits approval"), "{}", got[5]);
    assert!(got[6].contains("10% → 100% confirmed"), "{}", got[6]);
    // Each message once: no two alike.
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "{got:#?}");
}
