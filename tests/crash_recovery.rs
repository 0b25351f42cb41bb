//! Crash recovery with a real server process and a real HAProxy.
//!
//! The server is killed (a failpoint, compiled in only with
//! `--features failpoints`) after a raise was decided and committed but
//! before it was written. Restarted inside the raise's window, the raise is
//! applied once; restarted after the window closed, it expires and the share
//! stays where it was. The audit log shows both.

#![cfg(feature = "failpoints")]

#[path = "support/haproxy.rs"]
mod haproxy_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Timelike, Utc};
use haproxy_support::{Haproxy, NamedServer, config, free_port, servers};
use muhurat::clock::{Clock, SystemClock};
use muhurat::controller::{Calendars, Config, Controller, StartOutcome, StartRequest};
use muhurat::engine::{Rollout, State};
use muhurat::gates::prometheus::PrometheusFactory;
use muhurat::spec::Pool;
use muhurat::store::{FreezeRecord, NewEvent, Store};
use muhurat::traffic::haproxy::{HaproxyBackend, HaproxyFactory, HaproxyLimits};
use muhurat::traffic::{Orientation, TrafficBackend};

/// A UTC calendar whose one segment trades every day from `open` for one
/// minute: permitted from now until `open`.
fn calendar(dir: &Path, open: chrono::DateTime<Utc>) {
    let today = SystemClock.now().date_naive();
    let text = format!(
        "name: test\nversion: \"1\"\ntimezone: UTC\nvalid_from: {}\nvalid_until: {}\nsegments:\n  equity: {{days: [mon, tue, wed, thu, fri, sat, sun], open: \"{:02}:{:02}\", close: \"{:02}:{:02}\"}}\n",
        today - TimeDelta::days(2),
        today + TimeDelta::days(30),
        open.hour(),
        open.minute(),
        (open + TimeDelta::minutes(1)).hour(),
        (open + TimeDelta::minutes(1)).minute(),
    );
    std::fs::write(dir.join("test.yaml"), text).unwrap();
}

fn spec(sock: &str) -> String {
    format!(
        "name: crash\ncalendar: test\nwindows: {{timezone: UTC, guard: {{before_open: 0m, after_close: 0m}}, min_remaining: 0m}}\ntraffic:\n  haproxy:\n    endpoints: [\"unix:{sock}\"]\n    backend: kite_api\n    pools: {{blue: [b1], green: [g1]}}\nsteps:\n  - set_weight: 10\n  - approval: {{min: 1}}\n  - set_weight: 100\n"
    )
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(db: &str, cals: &Path, failpoint: bool) -> Server {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_muhurat"));
    cmd.args([
        "server",
        "--db",
        db,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--drift-interval",
        "1s",
    ])
    .arg("--calendars")
    .arg(cals)
    // This machine's kernel reports its clock unsynchronised.
    .env("MUHURAT_ALLOW_UNSYNCED_CLOCK", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    if failpoint {
        cmd.env("MUHURAT_FAILPOINT", "before_raise_write");
    } else {
        cmd.env_remove("MUHURAT_FAILPOINT");
    }
    Server(cmd.spawn().expect("start muhurat server"))
}

struct World {
    _b1: NamedServer,
    _g1: NamedServer,
    haproxy: Haproxy,
    db: String,
    _dbdir: tempfile::TempDir,
    cals: tempfile::TempDir,
    id: String,
}

impl World {
    async fn canary_share(&self) -> f64 {
        let o = Orientation {
            canary: Pool {
                name: "blue".into(),
                servers: vec!["b1".into()],
            },
            live: Pool {
                name: "green".into(),
                servers: vec!["g1".into()],
            },
        };
        let b = HaproxyBackend::new(
            vec![self.haproxy.unix()],
            "kite_api",
            o,
            HaproxyLimits::default(),
        );
        let r = b.read().await.unwrap();
        r.shares().values().copied().next().unwrap()
    }

    async fn rollout(&self) -> Rollout {
        let store = Store::open(&self.db).await.unwrap();
        let rec = store.rollout(&self.id).await.unwrap().unwrap();
        serde_json::from_str(&rec.data).unwrap()
    }

    async fn kinds(&self) -> Vec<String> {
        let store = Store::open(&self.db).await.unwrap();
        store
            .events(Some(&self.id), 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.kind)
            .collect()
    }
}

/// HAProxy with blue (b1, canary, weight 0) and green (g1, live); a rollout
/// accepted and preflighted, but no server running yet.
async fn world(window_closes: chrono::DateTime<Utc>) -> World {
    let b1 = NamedServer::start("b1").await;
    let g1 = NamedServer::start("g1").await;
    let lines = servers(&[("b1", b1.port, 0, ""), ("g1", g1.port, 100, "")]);
    let haproxy = Haproxy::start(&config(
        "http",
        free_port(),
        "kite_api",
        "roundrobin",
        &lines,
    ))
    .await;
    let dbdir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dbdir.path().join("m.db").display());
    let cals = tempfile::tempdir().unwrap();
    calendar(cals.path(), window_closes);
    let store = Store::open(&db).await.unwrap();
    // Frozen while the rollout is accepted here, so that the first raise is
    // decided by the server process under test, not by this one.
    let freeze = |on| FreezeRecord {
        on,
        reason: "test".into(),
        by: "test".into(),
        since: SystemClock.now(),
    };
    let ev = NewEvent {
        kind: "freeze".into(),
        at: SystemClock.now(),
        ..Default::default()
    };
    store.set_freeze(&freeze(true), &ev).await.unwrap();
    let c = Controller::new(
        store,
        Arc::new(Calendars::load(cals.path()).unwrap()),
        Arc::new(HaproxyFactory::new(HaproxyLimits::default())),
        Arc::new(PrometheusFactory::default()),
        Arc::new(SystemClock),
        Config::default(),
    );
    let out = c
        .start(StartRequest {
            spec_yaml: spec(&haproxy.sock.display().to_string()),
            revision: "r1".into(),
            initiator: "ci".into(),
            principal: "ci".into(),
        })
        .await
        .unwrap();
    let StartOutcome::Created(rec) = out else {
        panic!("expected a new rollout")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r: Rollout =
            serde_json::from_str(&c.store().rollout(&rec.id).await.unwrap().unwrap().data).unwrap();
        if r.state != State::Pending {
            assert_eq!(r.state, State::WaitingForWindow, "{:?}", r.waiting_for);
            break;
        }
        assert!(Instant::now() < deadline, "preflight did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.store().set_freeze(&freeze(false), &ev).await.unwrap();
    World {
        _b1: b1,
        _g1: g1,
        haproxy,
        db,
        _dbdir: dbdir,
        cals,
        id: rec.id,
    }
}

async fn wait_exit(s: &mut Server, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = s.0.try_wait().unwrap() {
            return st.code();
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(
    w: &World,
    within: Duration,
    what: &str,
    f: impl Fn(&Rollout) -> bool,
) -> Rollout {
    let deadline = Instant::now() + within;
    loop {
        let r = w.rollout().await;
        if f(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?} {:?}",
            r.state,
            r.waiting_for
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_inside_the_window_the_raise_is_applied_once() {
    // The window stays open for hours.
    let open = (SystemClock.now() + TimeDelta::hours(3))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap();
    let w = world(open).await;
    let mut s = server(&w.db, w.cals.path(), true);
    assert_eq!(
        wait_exit(&mut s, Duration::from_secs(20)).await,
        Some(86),
        "the failpoint should kill the server"
    );
    // Decided and committed, not written.
    assert!(w.kinds().await.contains(&"raise_decided".to_string()));
    assert_eq!(w.canary_share().await, 0.0);
    let r = w.rollout().await;
    assert_eq!((r.desired, r.confirmed), (10, 0));

    let _s = server(&w.db, w.cals.path(), false);
    let r = wait_for(
        &w,
        Duration::from_secs(20),
        "the raise to be confirmed",
        |r| r.confirmed == 10,
    )
    .await;
    assert_eq!(r.state, State::AwaitingApproval);
    assert!((w.canary_share().await - 10.0).abs() < 0.1);
    let kinds = w.kinds().await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "raise_decided").count(),
        1,
        "decided once: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "weight_confirmed").count(),
        1,
        "applied once: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_after_the_window_the_raise_expires() {
    // The market opens at the next minute boundary at least 20 s away: the
    // raise's deadline.
    let open = (SystemClock.now() + TimeDelta::seconds(80))
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap();
    let w = world(open).await;
    let mut s = server(&w.db, w.cals.path(), true);
    assert_eq!(
        wait_exit(&mut s, Duration::from_secs(20)).await,
        Some(86),
        "the failpoint should kill the server"
    );
    assert_eq!(w.rollout().await.desired, 10);
    // Wait for the window to close, then restart.
    while SystemClock.now() < open + TimeDelta::seconds(1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _s = server(&w.db, w.cals.path(), false);
    let r = wait_for(&w, Duration::from_secs(20), "the raise to expire", |r| {
        r.desired == 0
    })
    .await;
    assert_eq!(r.confirmed, 0);
    assert_eq!(
        w.canary_share().await,
        0.0,
        "nothing may rise after the window closed"
    );
    let kinds = w.kinds().await;
    assert!(kinds.contains(&"raise_expired".to_string()), "{kinds:?}");
    assert!(
        !kinds.contains(&"weight_confirmed".to_string()),
        "{kinds:?}"
    );
}
