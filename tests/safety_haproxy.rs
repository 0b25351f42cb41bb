//! The safety kernel on a real HAProxy (issue: "the engine decides every
//! traffic move, one gate guards every write"): `adopt` that would move
//! traffic onto the idle pool during a session or a freeze is refused with
//! nothing written; a rollback with one of two HAProxy endpoints hung stays
//! `rolling_back` until it answers, then completes; a decrease never writes
//! back over a value a person lowered. An in-process controller on a manual
//! clock drives two real HAProxy processes (two endpoints of one target).
//! Needs `apt-get install -y haproxy`.

#[path = "support/haproxy.rs"]
mod haproxy_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use haproxy_support::{Haproxy, NamedServer, config, free_port, servers};
use muhurat::clock::ManualClock;
use muhurat::controller::testing::ScriptedMetrics;
use muhurat::controller::{AdoptError, Calendars, Config, Controller, StartOutcome, StartRequest};
use muhurat::engine::{Input, Rollout, State};
use muhurat::gates::Sample;
use muhurat::store::{Backend, FreezeRecord, NewEvent, testing};
use muhurat::traffic::haproxy::{HaproxyFactory, HaproxyLimits, parse_servers_state};

const BE: &str = "kite_api";
/// Wednesday 12:00 UTC: inside the test calendar's Wednesday session.
const START: &str = "2030-01-02T12:00:00Z";
/// `srv_admin_state` bit for a forced drain.
const ADMIN_FDRAIN: u32 = 0x08;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A UTC calendar: a session on Wednesdays 11:00–13:00 (the market is open
/// at START) and Sundays 10:00–10:01.
fn calendar(dir: &Path) {
    let text = "name: test\nversion: \"1\"\ntimezone: UTC\nvalid_from: 2029-12-01\nvalid_until: 2030-12-31\n\
                segments:\n  equity: {days: [sun], open: \"10:00\", close: \"10:01\"}\n  \
                wednesday: {days: [wed], open: \"11:00\", close: \"13:00\"}\n";
    std::fs::write(dir.join("test.yaml"), text).unwrap();
}

fn spec(socks: &[String]) -> String {
    let eps: Vec<String> = socks.iter().map(|s| format!("\"unix:{s}\"")).collect();
    format!(
        "name: web\ncalendar: test\nsegments: [equity]\n\
         windows: {{timezone: UTC, guard: {{before_open: 0m, after_close: 0m}}, min_remaining: 0m}}\n\
         traffic:\n  haproxy:\n    endpoints: [{}]\n    backend: {BE}\n    pools: {{blue: [b1, b2], green: [g1, g2]}}\n\
         steps:\n  - set_weight: 10\n  - approval: {{min: 1}}\n  - set_weight: 100\n",
        eps.join(", ")
    )
}

struct World {
    c: Arc<Controller>,
    clock: Arc<ManualClock>,
    haproxy: Vec<Haproxy>,
    _servers: Vec<NamedServer>,
    _db: Option<tempfile::TempDir>,
    _cals: tempfile::TempDir,
    _journal: tempfile::TempDir,
}

async fn world(endpoints: usize) -> World {
    let mut named = Vec::new();
    for n in ["b1", "b2", "g1", "g2"] {
        named.push(NamedServer::start(n).await);
    }
    let mut haproxy = Vec::new();
    for _ in 0..endpoints {
        haproxy.push(
            Haproxy::start(&config(
                "http",
                free_port(),
                BE,
                "roundrobin",
                &servers(&[
                    ("b1", named[0].port, 100, ""),
                    ("b2", named[1].port, 100, ""),
                    ("g1", named[2].port, 0, ""),
                    ("g2", named[3].port, 0, ""),
                ]),
            ))
            .await,
        );
    }
    let (store, _url, db) = testing::fresh(Backend::Sqlite).await;
    let cals = tempfile::tempdir().unwrap();
    calendar(cals.path());
    let journal = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(t(START)));
    // Short socket timeouts: a hung endpoint costs a second, not five.
    let limits = HaproxyLimits {
        connect_timeout: Duration::from_millis(500),
        command_timeout: Duration::from_secs(1),
        ..HaproxyLimits::default()
    };
    let c = Controller::new(
        store,
        Arc::new(Calendars::load(cals.path()).unwrap()),
        Arc::new(HaproxyFactory::new(limits)),
        Arc::new(ScriptedMetrics::new(|_, _| Ok(Sample::NoData))),
        clock.clone(),
        Config {
            drift_interval: TimeDelta::seconds(1),
            measure_db_skew: false,
            journal: journal.path().join("muhurat.journal"),
            ..Config::default()
        },
    );
    World {
        c,
        clock,
        haproxy,
        _servers: named,
        _db: db,
        _cals: cals,
        _journal: journal,
    }
}

impl World {
    fn spec(&self) -> String {
        let socks: Vec<String> = self
            .haproxy
            .iter()
            .map(|h| h.sock.display().to_string())
            .collect();
        spec(&socks)
    }

    fn parsed(&self) -> muhurat::spec::Spec {
        let cal = self.c.calendars().get("test").unwrap();
        muhurat::spec::load("spec", &self.spec(), |_| Ok((*cal).clone()))
            .unwrap()
            .spec
    }

    async fn weights(&self, i: usize) -> BTreeMap<String, (u32, u32)> {
        let reply = self.haproxy[i]
            .cmd(&format!("show servers state {BE}"))
            .await
            .unwrap();
        parse_servers_state(&reply, BE)
            .unwrap()
            .into_iter()
            .map(|s| (s.name.clone(), (s.uweight, s.admin_state)))
            .collect()
    }

    async fn rollout(&self, id: &str) -> Rollout {
        let rec = self.c.store().rollout(id).await.unwrap().unwrap();
        serde_json::from_str(&rec.data).unwrap()
    }

    async fn pass(&self, by: TimeDelta) {
        self.clock.advance(by);
        self.c.pass().await.unwrap();
        self.c.settled().await;
    }

    async fn start(&self) -> String {
        let out = self
            .c
            .start(StartRequest {
                spec_yaml: self.spec(),
                revision: "r1".into(),
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
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.c.settled().await;
        rec.id
    }

    /// Freeze or thaw, as the API does.
    async fn freeze(&self, on: bool) {
        let now = self.clock_now();
        self.c
            .set_freeze(
                &FreezeRecord {
                    on,
                    reason: "test".into(),
                    by: "asha".into(),
                    since: now,
                },
                &NewEvent {
                    at: now,
                    kind: "freeze".into(),
                    why: "test".into(),
                    input: "{}".into(),
                    state: "server".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    fn clock_now(&self) -> DateTime<Utc> {
        use muhurat::clock::Clock;
        self.clock.now()
    }
}

/// The SIGSTOP/SIGCONT of an HAProxy worker: its socket still accepts
/// connections (the kernel's backlog) but nothing answers — a hung endpoint.
fn signal_worker(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_onto_the_idle_pool_during_a_session_or_a_freeze_is_refused_and_nothing_is_written() {
    let w = world(1).await;
    let spec = w.parsed();
    let before = w.weights(0).await;
    // The market is open (START is inside Wednesday's session); green
    // carries nothing. Making green live would move all traffic onto it.
    let e = w.c.adopt(&spec, "green", "asha").await.unwrap_err();
    let AdoptError::Refused(msg) = e else {
        panic!("expected a refusal, got {e:?}")
    };
    assert!(msg.contains("Nothing was written"), "{msg}");
    assert!(msg.contains("green does not carry most"), "{msg}");
    // The same with the global freeze on.
    w.freeze(true).await;
    assert!(matches!(
        w.c.adopt(&spec, "green", "asha").await,
        Err(AdoptError::Refused(_))
    ));
    assert_eq!(w.weights(0).await, before, "nothing was written");
    assert_eq!(
        w.c.store()
            .pool_state(&spec.traffic.target_id())
            .await
            .unwrap(),
        None,
        "nothing was recorded"
    );
    // Adopting blue, which carries everything, is allowed at any time and
    // writes nothing (green is at 0 already).
    let out = w.c.adopt(&spec, "blue", "asha").await.unwrap();
    assert!(!out.wrote);
    assert_eq!((out.live.as_str(), out.idle.as_str()), ("blue", "green"));
    assert_eq!(w.weights(0).await, before);
    // check_target_takes_the_live_pool_from_the_weights: the one
    // orientation answer says green is the canary (it carries nothing).
    let (o, stored) = w.c.orientation_of(&spec).await.unwrap();
    assert_eq!((o.canary.name.as_str(), stored), ("green", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_rollout_orientation_comes_from_the_weights_for_every_caller() {
    // Defect 19: before a target's first rollout, check-target and
    // check-metrics took the spec's first pool (blue, carrying 100%) as
    // the canary while start read the weights.
    let w = world(1).await;
    let spec = w.parsed();
    let (o, stored) = w.c.orientation_of(&spec).await.unwrap();
    assert!(!stored);
    assert_eq!(
        (o.canary.name.as_str(), o.live.name.as_str()),
        ("green", "blue")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_with_one_of_two_endpoints_hung_stays_rolling_back_until_it_answers() {
    let w = world(2).await;
    // Sunday noon: no session, every instant permitted.
    w.clock.set(t("2030-01-06T12:00:00Z"));
    let id = w.start().await;
    for _ in 0..10 {
        if w.rollout(&id).await.confirmed == 10 {
            break;
        }
        w.pass(TimeDelta::seconds(1)).await;
    }
    assert_eq!(w.rollout(&id).await.confirmed, 10);
    // Endpoint 2 hangs.
    let pid = w.haproxy[1].pid().await.unwrap();
    signal_worker(pid, "-STOP");
    w.c.input(
        &id,
        Input::Abort {
            by: "asha".into(),
            reason: "wrong build".into(),
        },
        Some("asha"),
    )
    .await
    .unwrap();
    w.c.settled().await;
    for _ in 0..3 {
        let r = w.rollout(&id).await;
        assert_eq!(r.state, State::RollingBack, "{:?}", r.waiting_for);
        assert!(
            r.write.as_ref().is_some_and(|w| w.failures >= 1),
            "{:?}",
            r.write
        );
        w.pass(muhurat::engine::APPLY_RETRY).await;
    }
    // Endpoint 1 is at 0 and drained already.
    let ws = w.weights(0).await;
    for g in ["g1", "g2"] {
        assert_eq!(ws[g].0, 0, "{ws:?}");
        assert_eq!(ws[g].1 & ADMIN_FDRAIN, ADMIN_FDRAIN, "{ws:?}");
    }
    // It answers again: the next retry completes the abort.
    signal_worker(pid, "-CONT");
    for _ in 0..3 {
        w.pass(muhurat::engine::APPLY_RETRY).await;
        if w.rollout(&id).await.state.is_terminal() {
            break;
        }
    }
    let r = w.rollout(&id).await;
    assert_eq!(r.state, State::Aborted, "{:?} {:?}", r.waiting_for, r.write);
    let ws = w.weights(1).await;
    for g in ["g1", "g2"] {
        assert_eq!(ws[g].0, 0, "{ws:?}");
        assert_eq!(ws[g].1 & ADMIN_FDRAIN, ADMIN_FDRAIN, "{ws:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decrease_never_writes_back_over_a_weight_a_person_lowered() {
    let w = world(1).await;
    w.clock.set(t("2030-01-06T12:00:00Z"));
    let id = w.start().await;
    for _ in 0..10 {
        if w.rollout(&id).await.confirmed == 10 {
            break;
        }
        w.pass(TimeDelta::seconds(1)).await;
    }
    // A person takes green out by hand (the documented break-glass) and
    // then the rollout is paused: the pause's revert to the confirmed 10%
    // must not write green back up.
    for g in ["g1", "g2"] {
        let r = w.haproxy[0]
            .cmd(&format!("set weight {BE}/{g} 0"))
            .await
            .unwrap();
        assert!(r.trim().is_empty(), "{r}");
    }
    w.pass(TimeDelta::seconds(1)).await;
    w.pass(TimeDelta::seconds(1)).await;
    let r = w.rollout(&id).await;
    assert_eq!(r.state, State::Paused, "{:?}", r.waiting_for);
    assert_eq!(r.confirmed, 0);
    let ws = w.weights(0).await;
    assert_eq!(
        (ws["g1"].0, ws["g2"].0),
        (0, 0),
        "never raised back: {ws:?}"
    );
}
