//! Regression tests for the safety-kernel review, each named after the
//! defect it pins (docs/design.md, *Safety*), on the simulated world of
//! tests/support/sim.rs: the real NSE calendar, a manual clock, the
//! in-memory target (whose command log says what every endpoint received)
//! and a scripted metrics source. PostgreSQL where the store must fail on
//! cue (a role of the test's own that it can lock out).

#[path = "support/pg_role.rs"]
mod pg_role;
#[path = "support/sim.rs"]
mod sim;

use std::sync::Arc;

use chrono::TimeDelta;
use muhurat::clock::{Clock, KernelSync};
use muhurat::controller::{Calendars, Config, Controller, StartError, StartOutcome, StartRequest};
use muhurat::engine::{Input, State};
use muhurat::gates::Sample;
use muhurat::store::{Backend, PoolRecord, Store, testing};
use muhurat::traffic::memory::Hook;
use pg_role::own_role;
use sim::*;
use sqlx::Connection;

/// Lock the role out (and drop its connections) or let it in again, from
/// synchronous code (a hook inside a read or a metrics query).
fn store_down(role: &str, down: bool) {
    let login = if down { "NOLOGIN" } else { "LOGIN" };
    let mut sqls = vec![format!("ALTER ROLE {role} {login}")];
    if down {
        sqls.push(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        ));
    }
    for sql in sqls {
        let out = std::process::Command::new("psql")
            .arg(testing::pg_base())
            .args(["-q", "-c", &sql])
            .output()
            .expect("psql (PostgreSQL's client) must be installed");
        assert!(out.status.success(), "{sql}: {out:?}");
    }
}

/// Run passes until `f` holds, at most `n`, each `step` apart.
async fn until(
    h: &H,
    id: &str,
    n: usize,
    step: TimeDelta,
    f: impl Fn(&muhurat::engine::Rollout) -> bool,
) -> muhurat::engine::Rollout {
    for _ in 0..n {
        let r = h.rollout(id).await;
        if f(&r) {
            return r;
        }
        h.clock.advance(step);
        h.c.pass().await.unwrap();
        h.c.settled().await;
    }
    h.rollout(id).await
}

/// 5% confirmed on Saturday 7 Nov, then into Monday's session.
async fn at_five_percent(h: &H) -> String {
    let id = h.start(&spec("", STEPS)).await;
    let r = until(h, &id, 400, TimeDelta::minutes(15), |r| r.confirmed == 5).await;
    assert_eq!(r.confirmed, 5, "{:?}", r.waiting_for);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_drift_transition_sends_the_same_reading_again() {
    let (role, url) = own_role("kernel").await;
    let store = Store::open(&url).await.unwrap();
    let h = harness_with(store, None, "2026-11-06T12:00:00+05:30").await;
    let id = at_five_percent(&h).await;
    // A canary raised by hand to 50% on one endpoint, and the store fails
    // just as the controller reads it.
    h.target.set("unix:/run/haproxy/a.sock", 50.0);
    let r2 = role.clone();
    h.target.lock().on_read = Some(Hook(Arc::new(move || store_down(&r2, true))));
    h.clock.advance(TimeDelta::minutes(10));
    let _ = h.c.pass().await;
    h.c.settled().await;
    h.target.lock().on_read = None;
    store_down(&role, false);
    assert_eq!(h.target.lock().shares["unix:/run/haproxy/a.sock"], 50.0);
    // The store is back: the next drift read (same reading) is sent again
    // and the canary is corrected at once.
    h.clock.advance(TimeDelta::minutes(10));
    h.c.pass().await.unwrap();
    h.c.settled().await;
    assert_eq!(h.target.lock().shares["unix:/run/haproxy/a.sock"], 5.0);
    let kinds: Vec<String> = h.events(&id).await.into_iter().map(|e| e.0).collect();
    assert!(kinds.iter().any(|k| k == "drift_detected"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_verdict_is_not_lost_when_its_transition_fails() {
    let (role, url) = own_role("kernel").await;
    let store = Store::open(&url).await.unwrap();
    let h = harness_with(store, None, "2026-11-06T12:00:00+05:30").await;
    let id = at_five_percent(&h).await;
    let r = until(&h, &id, 400, TimeDelta::minutes(15), |r| {
        in_session_now(&h) && r.state == State::Baking
    })
    .await;
    assert_eq!(r.confirmed, 5);
    // The check fails, and the store fails while it is being queried.
    let r2 = role.clone();
    h.metrics.set(move |_, _| {
        store_down(&r2, true);
        Ok(Sample::Value(0.5))
    });
    h.clock.advance(TimeDelta::minutes(30));
    let _ = h.c.pass().await;
    h.c.settled().await;
    h.metrics.set(|_, _| Ok(Sample::Value(0.5)));
    store_down(&role, false);
    // Same instant, store back: the due evaluation runs again (its verdict
    // was never taken) and the failing check rolls back now, not one
    // interval later.
    h.c.pass().await.unwrap();
    h.c.settled().await;
    h.c.pass().await.unwrap();
    h.c.settled().await;
    let r = h.rollout(&id).await;
    assert!(
        matches!(r.state, State::RolledBack | State::RollingBack),
        "{:?} {:?}",
        r.state,
        r.waiting_for
    );
    assert_eq!(h.target.share(), Some(0.0));
}

fn in_session_now(h: &H) -> bool {
    trading(h.clock.now()) && {
        use chrono::Timelike;
        let l = h.clock.now().with_timezone(&IST);
        (10..15).contains(&l.hour())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_evaluation_takes_the_pools_from_memory_and_retries_the_rollback() {
    let (role, url) = own_role("kernel").await;
    let store = Store::open(&url).await.unwrap();
    let h = harness_with(store, None, "2026-11-06T12:00:00+05:30").await;
    let id = at_five_percent(&h).await;
    let r = until(&h, &id, 400, TimeDelta::minutes(15), |r| {
        in_session_now(&h) && r.state == State::Baking
    })
    .await;
    assert_eq!(r.confirmed, 5);
    store_down(&role, true);
    h.metrics.set(|_, _| Ok(Sample::Value(0.5)));
    // One endpoint does not answer the first degraded rollback.
    h.target
        .lock()
        .down
        .insert("unix:/run/haproxy/b.sock".into());
    h.metrics.log.lock().unwrap().clear();
    h.clock.advance(TimeDelta::minutes(30));
    let rep = h.c.pass().await.unwrap();
    h.c.settled().await;
    assert!(rep.degraded);
    // The query named the canary pool's servers (blue: b1|b2), from the
    // pools the controller knew — never an empty alternation.
    let queries: Vec<String> = h
        .metrics
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|q| q.0.clone())
        .collect();
    assert!(queries.iter().all(|q| q.contains("b1|b2")), "{queries:?}");
    assert_eq!(h.target.lock().shares["unix:/run/haproxy/a.sock"], 0.0);
    // The endpoint answers again while the store is still down: the next
    // degraded pass sends the decrease again.
    h.target.lock().down.remove("unix:/run/haproxy/b.sock");
    h.clock.advance(TimeDelta::seconds(30));
    let rep = h.c.pass().await.unwrap();
    h.c.settled().await;
    assert!(rep.degraded);
    assert_eq!(h.target.share(), Some(0.0), "retried while degraded");
    assert!(
        h.target
            .lock()
            .drained_on
            .contains("unix:/run/haproxy/b.sock")
    );
    store_down(&role, false);
    let r = until(&h, &id, 5, TimeDelta::seconds(30), |r| {
        r.state.is_terminal()
    })
    .await;
    assert_eq!(r.state, State::RolledBack, "{:?}", r.waiting_for);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_is_checked_against_its_deadline_before_every_command() {
    // Saturday 7 Nov, 23:10: the window runs to 23:30 (the Sunday Muhurat
    // blackout's guard), 20 minutes left, so the raise is decided with that
    // deadline. Endpoint a takes 18 minutes to answer, endpoint b two: when
    // b's turn comes at 23:28 its command could land after the deadline, so
    // the gate refuses it — a check made once before the write would not.
    let h = harness(Backend::Sqlite, "2026-11-07T23:10:00+05:30").await;
    {
        let mut st = h.target.lock();
        st.latency
            .insert("unix:/run/haproxy/a.sock".into(), TimeDelta::minutes(18));
        st.latency
            .insert("unix:/run/haproxy/b.sock".into(), TimeDelta::minutes(2));
    }
    let id = h.start(&spec("", STEPS)).await;
    h.c.pass().await.unwrap();
    h.c.settled().await;
    let log = h.target.lock().log.clone();
    let raises: Vec<_> = log.iter().filter(|c| c.after > c.before + 1e-6).collect();
    let r = h.rollout(&id).await;
    assert_eq!(
        raises.len(),
        2,
        "{log:#?} {:?} {:?}",
        r.state,
        r.waiting_for
    );
    let deadline = t("2026-11-07T23:30:00+05:30");
    assert_eq!(raises[0].endpoint, "unix:/run/haproxy/a.sock");
    assert_eq!(raises[0].raise_deadline, Some(deadline));
    assert!(raises[0].refused.is_none() && raises[0].at < deadline);
    assert_eq!(raises[1].endpoint, "unix:/run/haproxy/b.sock");
    assert!(
        raises[1]
            .refused
            .as_deref()
            .is_some_and(|m| m.contains("deadline")),
        "{:?}",
        raises[1]
    );
    assert_eq!(h.target.lock().shares["unix:/run/haproxy/b.sock"], 0.0);
    // The raise expires at its deadline and the endpoint that took it is
    // brought back down.
    h.target.lock().latency.clear();
    let r = until(&h, &id, 4, TimeDelta::minutes(2), |r| {
        r.write.is_none() && r.state == State::WaitingForWindow
    })
    .await;
    assert_eq!(r.confirmed, 0);
    let kinds: Vec<String> = h.events(&id).await.into_iter().map(|e| e.0).collect();
    assert!(kinds.iter().any(|k| k == "raise_expired"), "{kinds:?}");
    assert_eq!(h.target.share(), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_pool_names_that_are_not_the_specs_need_adopt() {
    let h = harness(Backend::Sqlite, "2026-11-06T12:00:00+05:30").await;
    let s = muhurat::spec::load("s", &spec("", STEPS), |_| {
        Ok(h.c.calendars().get("nse").unwrap().as_ref().clone())
    })
    .unwrap()
    .spec;
    h.c.store()
        .set_pool_state(&PoolRecord {
            target: s.traffic.target_id(),
            live: "red".into(),
            idle: "green".into(),
            updated_at: h.clock.now(),
        })
        .await
        .unwrap();
    let e =
        h.c.start(StartRequest {
            spec_yaml: spec("", STEPS),
            revision: "r".into(),
            initiator: "asha".into(),
            principal: "asha".into(),
        })
        .await
        .unwrap_err();
    let StartError::NeedsAdopt(m) = e else {
        panic!("{e:?}")
    };
    assert!(m.contains("red") && m.contains("adopt"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_left_pending_by_a_restart_runs_its_preflight_again() {
    let (store, _url, dir) = testing::fresh(Backend::Sqlite).await;
    let h = harness_with(store.clone(), dir, "2026-11-06T12:00:00+05:30").await;
    let id = h.start(&spec("", STEPS)).await;
    // Put it back in `pending`, as a crash between accept and preflight
    // leaves it.
    let rec = store.rollout(&id).await.unwrap().unwrap();
    let mut r: muhurat::engine::Rollout = serde_json::from_str(&rec.data).unwrap();
    r.state = State::Pending;
    store
        .transition::<()>(&id, |_| {
            Ok(Some(muhurat::store::Update {
                state: "pending".into(),
                active: true,
                data: serde_json::to_string(&r).unwrap(),
                next_wake: None,
                events: vec![],
                outbox: vec![],
                pools: None,
            }))
        })
        .await
        .unwrap()
        .unwrap();
    // A new controller on the same store (the restart).
    let h2 = harness_with(store, None, "2026-11-06T12:00:00+05:30").await;
    h2.c.pass().await.unwrap();
    for _ in 0..200 {
        if h2.rollout(&id).await.state != State::Pending {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(h2.rollout(&id).await.state, State::WaitingForWindow);
    drop(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_reload_that_removes_an_active_rollouts_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cal = |version: &str, seg: &str| {
        format!(
            "name: mini\nversion: \"{version}\"\ntimezone: Asia/Kolkata\nvalid_from: 2026-01-01\nvalid_until: 2026-12-31\n\
             segments:\n  {seg}: {{days: [mon, tue, wed, thu, fri], open: \"09:00\", close: \"15:30\"}}\n"
        )
    };
    std::fs::write(dir.path().join("mini.yaml"), cal("1", "equity")).unwrap();
    let (store, _url, db) = testing::fresh(Backend::Sqlite).await;
    let clock = Arc::new(muhurat::clock::ManualClock::new(t(
        "2026-11-07T12:00:00+05:30",
    )));
    let traffic = muhurat::traffic::memory::MemoryFactory::default();
    let c = Controller::new(
        store,
        Arc::new(Calendars::load(dir.path()).unwrap()),
        Arc::new(traffic),
        Arc::new(muhurat::controller::testing::ScriptedMetrics::new(healthy)),
        clock,
        Config {
            measure_db_skew: false,
            journal: dir.path().join("journal"),
            ..Config::default()
        },
    );
    let yaml = "name: web\ncalendar: mini\nsegments: [equity]\ntraffic:\n  haproxy:\n    endpoints: [\"unix:/a.sock\"]\n    backend: web\n    pools: {blue: [b1], green: [g1]}\nsteps:\n  - set_weight: 10\n  - approval: {min: 1}\n  - set_weight: 100\n";
    let out = c
        .start(StartRequest {
            spec_yaml: yaml.into(),
            revision: "r".into(),
            initiator: "asha".into(),
            principal: "asha".into(),
        })
        .await
        .unwrap();
    let StartOutcome::Created(rec) = out else {
        panic!()
    };
    // Let its preflight and first raise land (it then waits for approval).
    for _ in 0..500 {
        let r = c.store().rollout(&rec.id).await.unwrap().unwrap();
        if r.state == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    c.settled().await;
    // The segment is renamed in a new version: refused while active.
    std::fs::write(dir.path().join("mini.yaml"), cal("2", "eq")).unwrap();
    let rep = c.reload_calendars().await.unwrap();
    assert!(rep.loaded.is_empty(), "{rep:?}");
    assert!(
        rep.refused
            .iter()
            .any(|m| m.contains(&rec.id) && m.contains("abort")),
        "{rep:?}"
    );
    assert_eq!(c.calendars().get("mini").unwrap().version.to_string(), "1");
    // Every decision still works, abort included.
    let r = c
        .input(
            &rec.id,
            Input::Abort {
                by: "asha".into(),
                reason: "test".into(),
            },
            Some("asha"),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r.state, State::Aborted | State::RollingBack));
    drop(db);
}

/// Regression: a calendar file changed while the server was down (the
/// segment an active rollout's spec names renamed) was not reported at
/// start: every pass for that rollout failed, seen only in the log. Now
/// `/readyz` lists it (`rollout_pass_failing`), the other rollouts go on,
/// and the warning clears once the old file is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_changed_while_the_server_was_down_is_reported_by_readyz() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let cal = |seg: &str| {
        format!(
            "name: mini\nversion: \"1\"\ntimezone: Asia/Kolkata\nvalid_from: 2026-01-01\nvalid_until: 2026-12-31\n\
             segments:\n  {seg}: {{days: [mon, tue, wed, thu, fri], open: \"09:00\", close: \"15:30\"}}\n"
        )
    };
    std::fs::write(dir.path().join("mini.yaml"), cal("equity")).unwrap();
    let (store, _url, db) = testing::fresh(Backend::Sqlite).await;
    let server = |store: Store| {
        Controller::new(
            store,
            Arc::new(Calendars::load(dir.path()).unwrap()),
            Arc::new(muhurat::traffic::memory::MemoryFactory::default()),
            Arc::new(muhurat::controller::testing::ScriptedMetrics::new(healthy)),
            Arc::new(muhurat::clock::ManualClock::new(t(
                "2026-11-07T12:00:00+05:30",
            ))),
            Config {
                measure_db_skew: false,
                allow_unsynced_clock: true,
                journal: dir.path().join("journal"),
                ..Config::default()
            },
        )
    };
    let c = server(store.clone());
    let yaml = "name: web\ncalendar: mini\nsegments: [equity]\ntraffic:\n  haproxy:\n    endpoints: [\"unix:/a.sock\"]\n    backend: web\n    pools: {blue: [b1], green: [g1]}\nsteps:\n  - approval: {min: 1}\n  - set_weight: 100\n";
    let StartOutcome::Created(rec) = c
        .start(StartRequest {
            spec_yaml: yaml.into(),
            revision: "r".into(),
            initiator: "asha".into(),
            principal: "asha".into(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    c.pass().await.unwrap();
    c.settled().await;
    assert!(c.failing_rollouts().is_empty());
    drop(c);
    let (viewer, _) = muhurat::api::auth::create_token_at(
        &store,
        "vijay",
        muhurat::api::Role::Viewer,
        "vijay",
        "test",
        t("2026-11-07T12:00:00+05:30"),
    )
    .await
    .unwrap();
    let get = |c: Arc<Controller>, path: String, token: Option<String>| async move {
        let app = muhurat::api::router(muhurat::api::AppState::new(c));
        let mut rq = axum::http::Request::get(path);
        if let Some(t) = token {
            rq = rq.header("authorization", format!("Bearer {t}"));
        }
        let resp = app
            .oneshot(rq.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let readyz = |c: Arc<Controller>| get(c, "/readyz".to_string(), None);
    // "Restart" with the segment renamed in the file.
    std::fs::write(dir.path().join("mini.yaml"), cal("eq")).unwrap();
    let c = server(store.clone());
    // One failed pass is not yet an alarm (a busy database would be one);
    // three in a row are.
    for _ in 1..muhurat::controller::PASS_FAILING_AFTER {
        c.pass().await.unwrap();
    }
    assert!(c.failing_rollouts().is_empty());
    c.pass().await.unwrap();
    let failing = c.failing_rollouts();
    let f = failing
        .get(&rec.id)
        .unwrap_or_else(|| panic!("{failing:?}"));
    assert_eq!(f.passes, muhurat::controller::PASS_FAILING_AFTER);
    assert!(f.error.contains("no longer validates"), "{f:?}");
    assert!(f.error.contains("segments"), "names the cause: {f:?}");
    let v = readyz(c.clone()).await;
    let w = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "rollout_pass_failing")
        .unwrap_or_else(|| panic!("no rollout_pass_failing warning: {v}"));
    // Unauthenticated: how many, never which or why.
    assert_eq!(w["count"], 1, "{v}");
    assert!(!v.to_string().contains(&rec.id), "{v}");
    assert!(!v.to_string().contains("no longer validates"), "{v}");
    // The rollout's own answer (a viewer's) says why.
    let d = get(
        c.clone(),
        format!("/api/v1/rollouts/{}", rec.id),
        Some(viewer.clone()),
    )
    .await;
    assert_eq!(d["pass_failing"]["passes"], 3, "{d}");
    // The old file back: the warning is gone after the next pass.
    std::fs::write(dir.path().join("mini.yaml"), cal("equity")).unwrap();
    let c = server(store);
    c.pass().await.unwrap();
    assert!(c.failing_rollouts().is_empty());
    let v = readyz(c).await;
    assert!(
        !v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "rollout_pass_failing"),
        "{v}"
    );
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynchronised_kernel_clock_blocks_raises_but_not_decreases() {
    let h = harness(Backend::Sqlite, "2026-11-07T12:00:00+05:30").await;
    h.clock.set_kernel_sync(KernelSync::Unsynchronised);
    let id = h.start(&spec("", STEPS)).await;
    // Saturday afternoon: the window is open, the clock is not trusted.
    h.c.pass().await.unwrap();
    h.c.settled().await;
    let r = h.rollout(&id).await;
    assert_eq!(r.confirmed, 0);
    assert_eq!(r.state, State::WaitingForWindow);
    assert!(r.waiting_for.unwrap().contains("clock"), "says why");
    assert!(!h.c.clock_trusted());
    assert!(h.c.clock_status().problem.unwrap().contains("chrony"));
    assert!(h.target.lock().log.is_empty(), "nothing sent");
    // Synchronised again: the raise goes.
    h.clock
        .set_kernel_sync(KernelSync::Synchronised { max_error_us: 1000 });
    let r = until(&h, &id, 3, TimeDelta::seconds(10), |r| r.confirmed == 5).await;
    assert_eq!(r.confirmed, 5);
    // Unsynchronised again: an abort (a decrease) still goes through.
    h.clock.set_kernel_sync(KernelSync::Unsynchronised);
    h.c.input(
        &id,
        Input::Abort {
            by: "asha".into(),
            reason: "test".into(),
        },
        Some("asha"),
    )
    .await
    .unwrap();
    h.c.settled().await;
    assert_eq!(h.rollout(&id).await.state, State::Aborted);
    assert_eq!(h.target.share(), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_swap_in_the_same_transaction_as_the_success() {
    let h = harness(Backend::Sqlite, "2026-11-06T12:00:00+05:30").await;
    let steps = "  - set_weight: 50\n  - set_weight: 100\n";
    let yaml = spec("", steps).replace("  min_passes: 2\n", "  min_passes: 1\n");
    let id = h.start(&yaml).await;
    let r = until(&h, &id, 600, TimeDelta::minutes(15), |r| {
        r.state.is_terminal()
    })
    .await;
    assert_eq!(r.state, State::Succeeded, "{:?}", r.waiting_for);
    let evs = h.c.store().events(Some(&id), 0, 10_000).await.unwrap();
    let success = evs.iter().find(|e| e.event.kind == "succeeded").unwrap();
    let s = muhurat::spec::load("s", &yaml, |_| {
        Ok(h.c.calendars().get("nse").unwrap().as_ref().clone())
    })
    .unwrap()
    .spec;
    let p =
        h.c.store()
            .pool_state(&s.traffic.target_id())
            .await
            .unwrap()
            .unwrap();
    // Blue was the canary; it is live now, recorded at the success instant.
    assert_eq!((p.live.as_str(), p.idle.as_str()), ("blue", "green"));
    assert_eq!(p.updated_at, success.event.at);
    // The idle-pool hold then holds green (the old version) at 0 — blue,
    // carrying everything, is never touched.
    for _ in 0..3 {
        h.clock.advance(TimeDelta::minutes(10));
        h.c.pass().await.unwrap();
        h.c.settled().await;
    }
    assert_eq!(h.target.share(), Some(100.0), "blue keeps all traffic");
}

#[tokio::test]
async fn sqlite_persists_every_decision_with_synchronous_full() {
    let (store, _url, _dir) = testing::fresh(Backend::Sqlite).await;
    // Every pooled connection, not just the first one.
    for _ in 0..4 {
        let row: (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(row.0, 2, "FULL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_lock_is_watched_and_writes_stop_while_it_is_lost() {
    let (store, url, _d) = testing::fresh(Backend::Postgres).await;
    let lock = muhurat::store::ServerLock::acquire(&store, &url)
        .await
        .unwrap();
    let pid = lock.pg_backend_pid().expect("a PostgreSQL lock");
    let reports: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let r2 = reports.clone();
    let watcher = lock.watch(
        store.clone(),
        std::time::Duration::from_millis(100),
        Arc::new(move |why| r2.lock().unwrap().push(why)),
    );
    // Kill the connection that holds this server's advisory lock (other
    // tests hold theirs in other schemas).
    let mut admin = sqlx::AnyConnection::connect(&testing::pg_base())
        .await
        .unwrap();
    let killed: (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(killed.0, "terminated the lock's connection");
    let mut saw_loss = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let r = reports.lock().unwrap().clone();
        saw_loss |= r.iter().any(Option::is_some);
        if saw_loss && r.last() == Some(&None) {
            break;
        }
    }
    let r = reports.lock().unwrap().clone();
    assert!(saw_loss, "the loss was reported: {r:?}");
    assert_eq!(r.last(), Some(&None), "and the lock taken again: {r:?}");
    watcher.release().await;
}

/// The structure the safety argument rests on: a raise permit is built in
/// exactly one place of the production code (the actuator, from an engine
/// `Apply` with a deadline), and nothing outside `src/traffic/` and the
/// actuator calls a backend's write methods.
#[test]
fn only_the_actuator_builds_raise_permits_and_writes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut raise_sites = Vec::new();
    let mut write_sites = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        // Test modules at the end of a file do not count.
        let code = text.split("#[cfg(test)]").next().unwrap();
        // A construction lists every field; a pattern ends with `..`.
        let builds = code.match_indices("Permit::Raise {").any(|(i, _)| {
            let rest = &code[i..];
            let body = &rest[..rest.find('}').unwrap_or(rest.len())];
            !body.contains("..")
        });
        if builds {
            raise_sites.push(rel.clone());
        }
        // A backend write takes a permit; `tx.rollback()` takes nothing.
        let writes = [".apply(", ".rollback(", ".prepare("].iter().any(|w| {
            code.match_indices(w)
                .any(|(i, _)| !code[i + w.len()..].starts_with(')'))
        });
        if writes && !rel.starts_with("traffic/") {
            write_sites.push(rel);
        }
    }
    raise_sites.sort();
    write_sites.sort();
    // gate.rs defines the variant and its test-only `testing::raise`.
    assert_eq!(raise_sites, ["controller/actuator.rs", "traffic/gate.rs"]);
    assert_eq!(write_sites, ["controller/actuator.rs"]);
}
