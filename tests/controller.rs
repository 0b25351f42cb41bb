//! The controller across simulated weeks of the real NSE calendar, with a
//! manual clock, the in-memory traffic target and a scripted metrics source,
//! on SQLite and on PostgreSQL.

#[path = "support/sim.rs"]
mod sim;

use chrono::{Datelike, TimeDelta, Weekday};
use muhurat::clock::Clock;
use muhurat::engine::{Input, State};
use muhurat::gates::Sample;
use muhurat::store::Backend;
use muhurat::windows::{self, Interval};
use sim::*;

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(muhurat::store::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(muhurat::store::Backend::Postgres).await } )* }
    };
}

both!(
    passing_rollout_over_a_fortnight,
    check_failing_in_session_rolls_back_at_once,
    no_data_at_night_waits_and_in_session_pauses,
    raise_held_back_past_its_window_expires,
    approval_before_a_failed_check_is_void,
);

async fn passing_rollout_over_a_fortnight(b: Backend) {
    // Fri 6 Nov 2026, noon: the market is open, the Sunday after is the
    // Muhurat blackout, Tuesday 10th a holiday with an evening session.
    let h = harness(b, "2026-11-06T12:00:00+05:30").await;
    let id = h.start(&spec("", STEPS)).await;
    assert_eq!(
        h.rollout(&id).await.state,
        State::WaitingForWindow,
        "noon on a trading day: wait for the window"
    );
    let r = h
        .run(
            &id,
            "2026-11-20T12:00:00+05:30",
            TimeDelta::minutes(15),
            approve_when_waiting,
            |r| r.state.is_terminal(),
        )
        .await;
    let story: Vec<String> = h
        .events(&id)
        .await
        .into_iter()
        .filter(|(k, _, _)| k != "checks_evaluated")
        .map(|(k, at, why)| {
            format!(
                "{} {k}: {why}",
                at.with_timezone(&IST).format("%a %d %H:%M")
            )
        })
        .collect();
    assert_eq!(
        r.state,
        State::Succeeded,
        "{:?}\n{}",
        r.waiting_for,
        story.join("\n")
    );
    assert_eq!(h.target.share(), Some(100.0));
    // Green was live (blue, the first pool, read 0%); the rollout moved the
    // traffic to blue, and the pools swapped.
    let target = h.c.store().rollout(&id).await.unwrap().unwrap().target;
    let pools = h.c.store().pool_state(&target).await.unwrap().unwrap();
    assert_eq!(
        (pools.live.as_str(), pools.idle.as_str()),
        ("blue", "green"),
        "{story:#?}",
        story = h
            .events(&id)
            .await
            .into_iter()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
    );
    // Every raise was decided and confirmed inside a permitted window.
    let cal = h.c.calendars().get("nse").unwrap();
    let s = muhurat::spec::load("s", &spec("", STEPS), |_| Ok(cal.as_ref().clone()))
        .unwrap()
        .spec;
    let permitted = windows::permitted(
        &s.window_rules(),
        &cal,
        Interval::new(t("2026-11-01T00:00:00Z"), t("2026-11-30T00:00:00Z")),
        &[],
    );
    let evs = h.events(&id).await;
    let raises: Vec<_> = evs
        .iter()
        .filter(|(k, _, _)| k == "raise_decided" || k == "weight_confirmed")
        .collect();
    assert!(raises.len() >= 6, "{evs:#?}");
    for (k, at, why) in raises {
        assert!(
            permitted.iter().any(|w| w.contains(*at)),
            "{k} at {at} ({why}) is outside every permitted window"
        );
    }
    // The bakes counted trading days, and the blackout Sunday is not one.
    let days: Vec<_> = evs
        .iter()
        .filter(|(k, _, _)| k == "bake_day_observed")
        .collect();
    assert_eq!(days.len(), 3, "{days:#?}");
    // The counters behind /metrics saw it: three confirmed raises, passing
    // checks, no backend errors.
    let k = h.c.counters();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(n(&k.weight_changes), 3);
    assert!(n(&k.evaluations[0]) > 10, "passes counted");
    assert_eq!(n(&k.backend_errors), 0);
    assert!(n(&k.transitions) >= evs.len() as u64 / 2);
    assert!(
        days.iter()
            .all(|(_, at, _)| at.with_timezone(&IST).weekday() != Weekday::Sun)
    );
}

async fn check_failing_in_session_rolls_back_at_once(b: Backend) {
    let h = harness(b, "2026-11-06T12:00:00+05:30").await;
    let id = h.start(&spec("", STEPS)).await;
    // Run until 5% is confirmed (Sat 00:25) and into Monday's session.
    let r = h
        .run(
            &id,
            "2026-11-09T10:00:00+05:30",
            TimeDelta::minutes(15),
            |_| None,
            |_| false,
        )
        .await;
    assert_eq!(r.confirmed, 5);
    // The canary starts failing at 10:00 during the session.
    h.metrics.set(|_, _| Ok(Sample::Value(0.5)));
    let failing_from = h.clock.now();
    let r = h
        .run(
            &id,
            "2026-11-09T12:00:00+05:30",
            TimeDelta::minutes(1),
            |_| None,
            |r| r.state.is_terminal(),
        )
        .await;
    assert_eq!(r.state, State::RolledBack);
    assert_eq!(h.target.share(), Some(0.0));
    assert!(
        h.target.lock().drained,
        "rollback drains the canary servers"
    );
    // Within one interval (30m) plus the pass step.
    assert!(
        h.clock.now() - failing_from <= TimeDelta::minutes(31),
        "rolled back at {}",
        h.clock.now()
    );
}

async fn no_data_at_night_waits_and_in_session_pauses(b: Backend) {
    let h = harness(b, "2026-11-06T12:00:00+05:30").await;
    h.metrics.set(|_, _| Ok(Sample::NoData));
    let id = h.start(&spec("", STEPS)).await;
    // Friday night → Monday 08:00: weight confirmed, no data all weekend: no pause.
    let r = h
        .run(
            &id,
            "2026-11-09T08:00:00+05:30",
            TimeDelta::minutes(15),
            |_| None,
            |r| r.state == State::Paused,
        )
        .await;
    assert_eq!(r.confirmed, 5);
    assert_ne!(
        r.state,
        State::Paused,
        "off-session no data must not pause: {:?}",
        r.waiting_for
    );
    // In the session, 3 counted inconclusive results pause it.
    let r = h
        .run(
            &id,
            "2026-11-09T12:00:00+05:30",
            TimeDelta::minutes(15),
            |_| None,
            |r| r.state == State::Paused,
        )
        .await;
    assert_eq!(r.state, State::Paused, "{:?}", r.waiting_for);
    assert!(
        h.clock.now() <= t("2026-11-09T10:45:00+05:30"),
        "paused at {}",
        h.clock.now()
    );
    // Nothing advanced on inconclusive data.
    assert_eq!(r.confirmed, 5);
    assert_eq!(h.target.share(), Some(5.0));
}

async fn raise_held_back_past_its_window_expires(b: Backend) {
    let h = harness(b, "2026-11-06T12:00:00+05:30").await;
    let id = h.start(&spec("", STEPS)).await;
    // One endpoint refuses writes from then on (a first rollout needs every
    // endpoint to answer to tell which pool is live).
    h.target
        .lock()
        .down
        .insert("unix:/run/haproxy/a.sock".into());
    let r = h
        .run(
            &id,
            "2026-11-07T23:45:00+05:30",
            TimeDelta::minutes(15),
            |_| None,
            |_| false,
        )
        .await;
    // Saturday's window closed at 23:30 (blackout guard): the raise expired.
    assert_eq!(r.confirmed, 0);
    assert_eq!(r.desired, 0);
    let evs = h.events(&id).await;
    assert!(evs.iter().any(|(k, _, _)| k == "raise_expired"), "{evs:#?}");
    // The endpoint that answered was put back: nothing stays raised.
    assert_eq!(h.target.lock().shares["unix:/run/haproxy/b.sock"], 0.0);
}

async fn approval_before_a_failed_check_is_void(b: Backend) {
    let h = harness(b, "2026-11-06T12:00:00+05:30").await;
    let steps = "  - set_weight: 5\n  - approval: {min: 2}\n  - set_weight: 100\n";
    let id = h
        .start(
            &spec(
                "  failure_limit_unused: 0\n"
                    .replace("  failure_limit_unused: 0\n", "")
                    .as_str(),
                steps,
            )
            .replace("max: 0.01", "max: 0.01\n      failure_limit: 1")
            .replace("steps:", "on_failure: pause\nsteps:"),
        )
        .await;
    let r = h
        .run(
            &id,
            "2026-11-08T12:00:00+05:30",
            TimeDelta::minutes(15),
            |_| None,
            |r| r.state == State::AwaitingApproval,
        )
        .await;
    assert_eq!(r.state, State::AwaitingApproval);
    h.c.input(
        &id,
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
    assert_eq!(
        h.rollout(&id)
            .await
            .approvals
            .iter()
            .filter(|a| !a.void)
            .count(),
        1
    );
    // Monday's session: the check fails once → on_failure: pause, approval void.
    h.metrics.set(|_, _| Ok(Sample::Value(0.5)));
    let r = h
        .run(
            &id,
            "2026-11-09T12:00:00+05:30",
            TimeDelta::minutes(15),
            |_| None,
            |r| r.state == State::Paused,
        )
        .await;
    assert_eq!(r.state, State::Paused);
    assert!(r.approvals.iter().all(|a| a.void), "{:?}", r.approvals);
    let evs = h.events(&id).await;
    assert!(
        evs.iter().any(|(k, _, _)| k == "approval_voided"),
        "{evs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_coverage_running_out_is_notified_once_per_calendar_version() {
    // nse.yaml ends 2027-12-31: on 20 Nov 2027 less than 45 days remain.
    let h = harness(Backend::Sqlite, "2027-11-10T12:00:00+05:30").await;
    let due = |h: &H| {
        let c = h.c.clone();
        async move {
            c.store()
                .outbox_due(t("2030-01-01T00:00:00Z"), 100)
                .await
                .unwrap()
        }
    };
    h.c.pass().await.unwrap();
    assert!(due(&h).await.is_empty(), "52 days left: no warning yet");
    h.clock.set(t("2027-11-20T12:00:00+05:30"));
    h.c.pass().await.unwrap();
    let rows = due(&h).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].channel, "webhook:sre");
    assert!(
        rows[0]
            .payload
            .contains("coverage ends in 41 day(s), on 2027-12-31"),
        "{}",
        rows[0].payload
    );
    h.clock.advance(TimeDelta::hours(6));
    h.c.pass().await.unwrap();
    assert_eq!(due(&h).await.len(), 1, "not on every pass");
    // The next day it is logged again, but not notified again: one
    // notification per calendar version, not 45.
    h.clock.advance(TimeDelta::hours(19));
    h.c.pass().await.unwrap();
    assert_eq!(due(&h).await.len(), 1, "not every day either");
}

/// Issue 10: when no raise can happen before the calendar's coverage ends,
/// `waiting_for` says exactly that and how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_names_the_calendar_end_when_no_window_is_left() {
    // Fri 31 Dec 2027, 09:00: sessions until 23:55 (+ guard), then the
    // coverage ends — no permitted window is left.
    let h = harness(Backend::Sqlite, "2027-12-31T09:00:00+05:30").await;
    let id = h.start(&spec("", STEPS)).await;
    h.c.pass().await.unwrap();
    let r = h.rollout(&id).await;
    assert_eq!(r.state, State::WaitingForWindow, "{:?}", r.waiting_for);
    assert_eq!(
        r.waiting_for.as_deref(),
        Some(
            "no permitted window before the calendar nse ends on 2027-12-31 — extend the calendar"
        )
    );
    assert_eq!(r.next_window, None);
}
