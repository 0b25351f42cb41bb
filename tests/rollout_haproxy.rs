//! Acceptance of the traffic backends end to end: an in-process controller
//! on a manual clock drives a real HAProxy (http mode, `balance
//! roundrobin`, blue b1/b2 live at weight 100, green g1/g2 idle at 0) and
//! real requests through it show where the traffic goes.
//!
//! The test calendar's one segment trades only on Sundays and the simulated
//! time is a Wednesday, so every instant of the run is permitted. The spec
//! has no analysis; approval steps hold each weight so the split can be
//! measured between raises. Needs `apt-get install -y haproxy`.

#[path = "support/haproxy.rs"]
mod haproxy_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use haproxy_support::{Haproxy, NamedServer, blue_green, split};
use muhurat::clock::ManualClock;
use muhurat::controller::testing::ScriptedMetrics;
use muhurat::controller::{Calendars, Config, Controller, StartOutcome, StartRequest};
use muhurat::engine::{Input, Rollout, State};
use muhurat::gates::Sample;
use muhurat::store::{Backend, testing};
use muhurat::traffic::haproxy::{HaproxyFactory, HaproxyLimits, ServerState, parse_servers_state};

const BE: &str = "kite_api";
/// Requests sent to measure a split.
const N: usize = 1000;
/// Wednesday noon UTC; the calendar's segment trades on Sundays only.
const START: &str = "2030-01-02T12:00:00Z";
const BLUE: [&str; 2] = ["b1", "b2"];
const GREEN: [&str; 2] = ["g1", "g2"];
/// `srv_admin_state` bit for a forced drain (`set server … state drain`).
const ADMIN_FDRAIN: u32 = 0x08;

fn drift_interval() -> TimeDelta {
    TimeDelta::seconds(1)
}

/// A UTC calendar whose one segment trades on Sundays, 10:00–10:01.
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
         steps:\n  - set_weight: 10\n  - approval: {{min: 1}}\n  - set_weight: 50\n  - approval: {{min: 1}}\n  - set_weight: 100\n"
    )
}

struct World {
    c: Arc<Controller>,
    clock: Arc<ManualClock>,
    haproxy: Haproxy,
    /// The frontend's port: requests through HAProxy.
    fe: u16,
    _servers: Vec<NamedServer>,
    _db: Option<tempfile::TempDir>,
    _cals: tempfile::TempDir,
    _journal: tempfile::TempDir,
}

async fn world() -> World {
    let (named, haproxy, fe) = blue_green(BE).await;
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
        store,
        Arc::new(Calendars::load(cals.path()).unwrap()),
        Arc::new(HaproxyFactory::new(HaproxyLimits::default())),
        // No analysis: never queried.
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
    World {
        c,
        clock,
        haproxy,
        fe,
        _servers: named,
        _db: db,
        _cals: cals,
        _journal: journal,
    }
}

impl World {
    fn endpoint(&self) -> String {
        self.haproxy.unix().to_string()
    }

    /// Start a rollout and wait for its preflight.
    async fn start(&self, revision: &str) -> String {
        let out = self
            .c
            .start(StartRequest {
                spec_yaml: spec(&self.haproxy.sock.display().to_string()),
                revision: revision.into(),
                initiator: "ci".into(),
                principal: "ci".into(),
            })
            .await
            .unwrap();
        let StartOutcome::Created(rec) = out else {
            panic!("expected a new rollout")
        };
        for _ in 0..500 {
            if self.rollout(&rec.id).await.state != State::Pending {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let r = self.rollout(&rec.id).await;
        assert!(
            !matches!(r.state, State::Pending | State::Failed),
            "preflight: {:?} {:?}",
            r.state,
            r.waiting_for
        );
        self.c.settled().await;
        rec.id
    }

    async fn rollout(&self, id: &str) -> Rollout {
        let rec = self.c.store().rollout(id).await.unwrap().unwrap();
        serde_json::from_str(&rec.data).unwrap()
    }

    /// One drift interval later, one pass, and its writes done.
    async fn pass(&self) {
        self.clock.advance(drift_interval());
        let report = self.c.pass().await.unwrap();
        assert_eq!(report.errors, 0, "{report:?}");
        self.c.settled().await;
    }

    /// Passes until `f` holds (at most 20).
    async fn until(&self, id: &str, what: &str, f: impl Fn(&Rollout) -> bool) -> Rollout {
        for _ in 0..20 {
            let r = self.rollout(id).await;
            if f(&r) {
                return r;
            }
            self.pass().await;
        }
        let r = self.rollout(id).await;
        panic!(
            "no {what} after 20 passes: {:?} step {} desired {} confirmed {} write {:?} — {:?}",
            r.state, r.step, r.desired, r.confirmed, r.write, r.waiting_for
        );
    }

    /// Until `share`% is confirmed with nothing in flight.
    async fn confirmed(&self, id: &str, share: u32) -> Rollout {
        self.until(id, &format!("{share}% confirmed"), |r| {
            r.confirmed == share && r.write.is_none()
        })
        .await
    }

    async fn approve(&self, id: &str) {
        let r = self.rollout(id).await;
        assert_eq!(r.state, State::AwaitingApproval, "{:?}", r.waiting_for);
        self.c
            .input(
                id,
                Input::Approve {
                    principal: "ravi".into(),
                    is_initiator: false,
                    step: r.step,
                    spec_hash: r.spec_hash.clone(),
                    comment: None,
                },
                Some("ravi"),
            )
            .await
            .unwrap();
        self.c.settled().await;
    }

    /// `N` requests through HAProxy: the share (percent) answered by
    /// `pool`'s servers. No request may fail.
    async fn share_of(&self, pool: &[&str]) -> (f64, BTreeMap<String, usize>) {
        let counts = split(self.fe, N).await;
        assert_eq!(counts.get("(failed)"), None, "failed requests: {counts:?}");
        let hits: usize = pool
            .iter()
            .map(|s| counts.get(*s).copied().unwrap_or(0))
            .sum();
        (100.0 * hits as f64 / N as f64, counts)
    }

    async fn assert_share(&self, pool: &[&str], want: f64) {
        let (got, counts) = self.share_of(pool).await;
        assert!(
            (got - want).abs() <= 2.0,
            "{pool:?} got {got:.1}% of {N} requests, want {want}% ± 2 — {counts:?}"
        );
    }

    /// The backend's servers as the admin socket reports them.
    async fn servers(&self) -> BTreeMap<String, ServerState> {
        let reply = self
            .haproxy
            .cmd(&format!("show servers state {BE}"))
            .await
            .unwrap();
        parse_servers_state(&reply, BE)
            .unwrap()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect()
    }

    async fn weights(&self) -> BTreeMap<String, u32> {
        self.servers()
            .await
            .into_iter()
            .map(|(n, s)| (n, s.uweight))
            .collect()
    }

    async fn kinds(&self, id: &str) -> Vec<String> {
        self.c
            .store()
            .events(Some(id), 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.kind)
            .collect()
    }
}

fn w(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_moves_the_real_split_and_the_next_rollout_goes_the_other_way() {
    let w0 = world().await;
    // Before the rollout blue answers everything.
    w0.assert_share(&GREEN, 0.0).await;
    let id = w0.start("r1").await;

    let r = w0.confirmed(&id, 10).await;
    assert_eq!(r.state, State::AwaitingApproval, "{:?}", r.waiting_for);
    w0.assert_share(&GREEN, 10.0).await;

    w0.approve(&id).await;
    let r = w0.confirmed(&id, 50).await;
    assert_eq!(r.state, State::AwaitingApproval, "{:?}", r.waiting_for);
    w0.assert_share(&GREEN, 50.0).await;

    w0.approve(&id).await;
    let r = w0
        .until(&id, "success", |r| r.state == State::Succeeded)
        .await;
    assert_eq!(r.confirmed, 100);
    let (green, counts) = w0.share_of(&GREEN).await;
    assert_eq!(green, 100.0, "all traffic to green at 100%: {counts:?}");
    assert_eq!(
        w0.weights().await,
        w(&[("b1", 0), ("b2", 0), ("g1", 1), ("g2", 1)])
    );

    let target = w0.c.store().rollout(&id).await.unwrap().unwrap().target;
    let pools = w0.c.store().pool_state(&target).await.unwrap().unwrap();
    assert_eq!(
        (pools.live.as_str(), pools.idle.as_str()),
        ("green", "blue"),
        "the pools swap on success"
    );

    // Between rollouts the idle pool is held at 0: blue raised by hand to a
    // third of the traffic is set back on the next pass.
    let reply = w0
        .haproxy
        .cmd(&format!("set weight {BE}/b1 1"))
        .await
        .unwrap();
    assert!(reply.trim().is_empty(), "{reply}");
    w0.pass().await;
    let ws = w0.weights().await;
    assert_eq!((ws["b1"], ws["b2"]), (0, 0), "idle blue back to 0: {ws:?}");
    // idle_hold_never_moves_most_of_the_traffic: blue made to carry most
    // of it (5 of 7) is a person's cut-over or a wrong record — never moved
    // back automatically; an event says what to do.
    let reply = w0
        .haproxy
        .cmd(&format!("set weight {BE}/b1 5"))
        .await
        .unwrap();
    assert!(reply.trim().is_empty(), "{reply}");
    w0.pass().await;
    w0.pass().await;
    let ws = w0.weights().await;
    assert_eq!(ws["b1"], 5, "left alone: {ws:?}");
    let evs = w0.c.store().events(None, 0, 10_000).await.unwrap();
    assert!(
        evs.iter()
            .any(|e| e.event.kind == "idle_pool_unexpected" && e.event.why.contains("adopt")),
        "an event says so"
    );
    let reply = w0
        .haproxy
        .cmd(&format!("set weight {BE}/b1 0"))
        .await
        .unwrap();
    assert!(reply.trim().is_empty(), "{reply}");

    // The next release of the same target: its canary is blue.
    let id2 = w0.start("r2").await;
    assert_ne!(id2, id);
    let r = w0.confirmed(&id2, 10).await;
    assert_eq!(r.state, State::AwaitingApproval, "{:?}", r.waiting_for);
    w0.assert_share(&BLUE, 10.0).await;
    assert_eq!(
        w0.weights().await,
        w(&[("b1", 1), ("b2", 1), ("g1", 9), ("g2", 9)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_without_state_file_pauses_and_is_never_raised_back() {
    let mut w0 = world().await;
    let id = w0.start("r1").await;
    w0.confirmed(&id, 10).await;
    w0.assert_share(&GREEN, 10.0).await;

    // Weights back to the config: green at 0.
    w0.haproxy.reload().await;
    assert_eq!(
        w0.weights().await,
        w(&[("b1", 100), ("b2", 100), ("g1", 0), ("g2", 0)])
    );

    w0.pass().await;
    let r = w0.rollout(&id).await;
    assert_eq!(r.state, State::Paused, "{:?}", r.waiting_for);
    let reason = r.paused.as_ref().map(|p| p.reason.clone()).unwrap();
    assert!(
        reason.contains(&w0.endpoint()),
        "the reason names the endpoint {}: {reason}",
        w0.endpoint()
    );
    assert_eq!(r.confirmed, 0, "the confirmed share follows the drift down");
    assert!(w0.kinds(&id).await.contains(&"drift_detected".to_string()));

    // Pass after pass, nothing raises it back.
    for _ in 0..5 {
        w0.pass().await;
        let r = w0.rollout(&id).await;
        assert_eq!(r.state, State::Paused, "{:?}", r.waiting_for);
        assert_eq!((r.desired, r.confirmed), (0, 0));
        let ws = w0.weights().await;
        assert_eq!((ws["g1"], ws["g2"]), (0, 0), "{ws:?}");
    }
    w0.assert_share(&GREEN, 0.0).await;

    // A person resumes; inside a permitted window the step runs again.
    w0.c.input(
        &id,
        Input::Resume {
            by: "asha".into(),
            override_checks: false,
            reason: None,
        },
        Some("asha"),
    )
    .await
    .unwrap();
    w0.c.settled().await;
    w0.confirmed(&id, 10).await;
    w0.assert_share(&GREEN, 10.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_canary_set_by_hand_is_brought_back_down() {
    let w0 = world().await;
    let id = w0.start("r1").await;
    w0.confirmed(&id, 10).await;
    let at_10 = w0.weights().await;
    assert_eq!(at_10, w(&[("b1", 9), ("b2", 9), ("g1", 1), ("g2", 1)]));

    // An operator raises g1 by hand: green now gets 11/29 ≈ 38%.
    let reply = w0
        .haproxy
        .cmd(&format!("set weight {BE}/g1 10"))
        .await
        .unwrap();
    assert!(reply.trim().is_empty(), "{reply}");
    assert_eq!(w0.weights().await["g1"], 10);

    w0.pass().await;
    assert_eq!(
        w0.weights().await,
        at_10,
        "drift towards more is corrected to the confirmed split after one pass"
    );
    let r = w0.rollout(&id).await;
    assert_eq!(r.confirmed, 10);
    assert_ne!(r.state, State::Paused, "{:?}", r.waiting_for);
    assert!(w0.kinds(&id).await.contains(&"drift_detected".to_string()));
    w0.assert_share(&GREEN, 10.0).await;

    // It stays there.
    for _ in 0..3 {
        w0.pass().await;
    }
    assert_eq!(w0.weights().await, at_10);
    assert_eq!(w0.rollout(&id).await.confirmed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_at_half_drains_the_canary_and_sends_everything_live() {
    let w0 = world().await;
    let id = w0.start("r1").await;
    w0.confirmed(&id, 10).await;
    w0.approve(&id).await;
    w0.confirmed(&id, 50).await;
    w0.assert_share(&GREEN, 50.0).await;

    w0.c.input(
        &id,
        Input::Abort {
            by: "asha".into(),
            reason: "wrong build".into(),
        },
        Some("asha"),
    )
    .await
    .unwrap();
    w0.c.settled().await;
    let r = w0.until(&id, "abort", |r| r.state == State::Aborted).await;
    assert_eq!((r.desired, r.confirmed), (0, 0));

    let state = w0.servers().await;
    for g in GREEN {
        let s = &state[g];
        assert_eq!(s.uweight, 0, "{g}: {s:?}");
        assert!(
            s.admin_state & ADMIN_FDRAIN != 0,
            "{g} is not in drain: {s:?}"
        );
    }
    for b in BLUE {
        assert!(state[b].in_service(), "{b}: {:?}", state[b]);
        assert!(state[b].uweight > 0, "{b}: {:?}", state[b]);
    }
    let (blue, counts) = w0.share_of(&BLUE).await;
    assert_eq!(blue, 100.0, "every request to the live pool: {counts:?}");
    let kinds = w0.kinds(&id).await;
    assert!(kinds.contains(&"aborted".to_string()), "{kinds:?}");

    // Later passes leave it alone.
    for _ in 0..3 {
        w0.pass().await;
    }
    assert_eq!(w0.rollout(&id).await.state, State::Aborted);
    let state = w0.servers().await;
    assert!(GREEN.iter().all(|g| state[*g].uweight == 0), "{state:?}");

    // The pools did not swap: a retry canaries green again, taking its
    // servers out of drain first.
    let id2 = w0.start("r2").await;
    w0.confirmed(&id2, 10).await;
    let state = w0.servers().await;
    for g in GREEN {
        assert!(state[g].in_service(), "{g} still drained: {:?}", state[g]);
    }
    w0.assert_share(&GREEN, 10.0).await;
}
