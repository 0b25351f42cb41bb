//! The engine and controller with their real metrics path: a real
//! VictoriaMetrics (one per test, on a free loopback port), the real
//! Prometheus client (`PrometheusFactory`), the controller on a manual clock
//! over the real NSE calendar, the in-memory traffic target and SQLite.
//!
//! Customers' requests are simulated as `http_requests_total` counters
//! scraped every 15 s of simulated time and pushed with explicit timestamps
//! (VictoriaMetrics accepts old samples within its retention), so the checks
//! see what a real exporter would show: `rate()` ratios over `[5m]`, a
//! `min_traffic` guard, and nothing at all when nobody trades.
//!
//! Two settings follow from the simulated clock, not from the code under test:
//! - `max_clock_skew` is set very large: the controller compares the metrics
//!   store's `Date` (the wall clock) with the manual clock (2025/2026
//!   simulated time) and would otherwise, rightly, refuse every raise;
//! - samples are pushed ahead of the simulated clock, a whole phase at a
//!   time (wall time stays low). Every query names its own `time`, so what a
//!   check sees is fixed by the fixture; the tests assert *which* evaluation
//!   first saw a change, so a controller that looked into the future would
//!   fail them.

#[path = "support/sim.rs"]
mod sim;
#[path = "support/victoria.rs"]
mod victoria;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use muhurat::clock::{Clock, ManualClock};
use muhurat::controller::testing::ScriptedMetrics;
use muhurat::controller::{Calendars, Config, Controller};
use muhurat::engine::{Input, Rollout, State};
use muhurat::gates::GateError;
use muhurat::gates::prometheus::PrometheusFactory;
use muhurat::store::{Backend, CheckResultRecord, testing};
use muhurat::traffic::memory::MemoryFactory;
use muhurat::windows::{self, Interval};
use sim::{H, IST, t};

/// The canary is blue: the target starts with blue at 0%, so green is live.
const CANARY: &str = "blue";
const LIVE: &str = "green";
/// How often the simulated exporter is scraped.
const SCRAPE: TimeDelta = TimeDelta::seconds(15);
/// Samples per import request: large enough to keep wall time low, small
/// enough to stay far below VictoriaMetrics' request size limits.
const BATCH_LINES: usize = 20_000;

const ERROR_RATIO: &str = r#"sum(rate(http_requests_total{pool="{{canary_pool}}",code=~"5.."}[5m])) / sum(rate(http_requests_total{pool="{{canary_pool}}"}[5m]))"#;
const CANARY_RPS: &str = r#"sum(rate(http_requests_total{pool="{{canary_pool}}"}[5m]))"#;

/// A spec on the real NSE calendar whose one check is the canary's 5xx ratio
/// (at most 1%), guarded by at least 1 request/s of canary traffic.
/// `analysis` holds the analysis settings, indented by two spaces.
fn spec(vm: &str, analysis: &str, steps: &str) -> String {
    format!(
        r#"name: kite-api
calendar: nse
segments: [equity, fno, currency, commodity]
traffic:
  haproxy:
    endpoints: ["unix:/run/haproxy/a.sock", "unix:/run/haproxy/b.sock"]
    backend: kite_api
    pools: {{blue: [b1, b2], green: [g1, g2]}}
analysis:
  prometheus: {vm}
{analysis}  checks:
    - name: error-rate
      query: '{ERROR_RATIO}'
      max: 0.01
      min_traffic:
        query: '{CANARY_RPS}'
        min: 1
steps:
{steps}"#
    )
}

/// A pool's `http_requests_total{pool, code}` counters (200 and 503), as a
/// scrape of its servers every 15 s would record them.
struct PoolCounters {
    pool: &'static str,
    ok: f64,
    errors: f64,
}

impl PoolCounters {
    fn new(pool: &'static str) -> Self {
        // Counters of a process that has been up for a while.
        PoolCounters {
            pool,
            ok: 1_000_000.0,
            errors: 250.0,
        }
    }

    /// Scrapes every 15 s in `[from, to)`: the counters as read, then
    /// `rps` requests per second of which `error_ratio` answered 5xx.
    fn serve(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rps: f64,
        error_ratio: f64,
    ) -> Vec<String> {
        let per_scrape = rps * SCRAPE.num_seconds() as f64;
        let mut lines = Vec::new();
        let mut at = from;
        while at < to {
            let ms = at.timestamp_millis();
            lines.push(format!(
                "http_requests_total{{pool=\"{}\",code=\"200\"}} {} {ms}",
                self.pool, self.ok
            ));
            lines.push(format!(
                "http_requests_total{{pool=\"{}\",code=\"503\"}} {} {ms}",
                self.pool, self.errors
            ));
            self.ok += per_scrape * (1.0 - error_ratio);
            self.errors += per_scrape * error_ratio;
            at += SCRAPE;
        }
        lines
    }
}

/// The simulated customers: both pools' counters.
struct Customers {
    canary: PoolCounters,
    live: PoolCounters,
}

/// Healthy: the canary (5% of the traffic) answers 0.2% 5xx, like live.
const HEALTHY: f64 = 0.002;

impl Customers {
    fn new() -> Self {
        Customers {
            canary: PoolCounters::new(CANARY),
            live: PoolCounters::new(LIVE),
        }
    }

    /// Trading traffic in `[from, to)` (IST RFC 3339): 20 req/s on the
    /// canary with `canary_errors`, 380 req/s on live with 0.2%; pushed in
    /// batches and flushed.
    async fn trade(&mut self, vm: &victoria::Server, from: &str, to: &str, canary_errors: f64) {
        let (from, to) = (t(from), t(to));
        let mut lines = self.canary.serve(from, to, 20.0, canary_errors);
        lines.extend(self.live.serve(from, to, 380.0, HEALTHY));
        for chunk in lines.chunks(BATCH_LINES) {
            vm.push(&(chunk.join("\n") + "\n")).await;
        }
    }
}

/// A world whose controller queries the real VictoriaMetrics through the
/// real Prometheus client. `H.metrics` (the scripted source of sim.rs) is
/// not wired to the controller; it answers an error if anything ever used it.
async fn world(start: &str) -> (H, victoria::Server) {
    let vm = victoria::victoria_metrics(&[]).await;
    let (store, _url, dir) = testing::fresh(Backend::Sqlite).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cals = Arc::new(Calendars::load(&root.join("rollouts/calendars")).unwrap());
    let clock = Arc::new(ManualClock::new(t(start)));
    let traffic = MemoryFactory::default();
    let journal = dir
        .as_ref()
        .expect("a SQLite store lives in a temp dir")
        .path()
        .join("journal");
    let cfg = Config {
        drift_interval: TimeDelta::minutes(10),
        measure_db_skew: false,
        // The manual clock is months or days away from the `Date` the real
        // VictoriaMetrics puts on its answers; see the module comment.
        max_clock_skew: TimeDelta::days(100 * 365),
        journal,
        // This machine's kernel reports its clock unsynchronised.
        allow_unsynced_clock: true,
        ..Config::default()
    };
    let c = Controller::new(
        store,
        cals,
        Arc::new(traffic.clone()),
        Arc::new(PrometheusFactory::default()),
        clock.clone(),
        cfg,
    );
    let s = load(&c, &spec(&vm.url, "", "  - set_weight: 100\n"));
    let target = traffic.target(&s.traffic);
    let unused = ScriptedMetrics::new(|_, _| {
        Err(GateError(
            "gates_engine: the scripted source must not be queried".into(),
        ))
    });
    let h = H {
        c,
        clock,
        target,
        metrics: unused,
        _dir: dir,
    };
    (h, vm)
}

fn load(c: &Controller, yaml: &str) -> muhurat::spec::Spec {
    let cal = c.calendars().get("nse").unwrap();
    muhurat::spec::load("s", yaml, |_| Ok(cal.as_ref().clone()))
        .unwrap()
        .spec
}

/// Every stored evaluation of the rollout, oldest first.
async fn results(h: &H, id: &str) -> Vec<CheckResultRecord> {
    let mut v = h.c.store().check_results(id, 100_000).await.unwrap();
    v.reverse();
    v
}

fn ist(at: DateTime<Utc>) -> String {
    at.with_timezone(&IST).format("%a %d %H:%M:%S").to_string()
}

fn show(rs: &[CheckResultRecord]) -> String {
    rs.iter()
        .map(|r| {
            format!(
                "{} {} {:?} in_session={} {}",
                ist(r.at),
                r.verdict,
                r.value,
                r.in_session,
                r.reason
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// When each event of a kind happened.
async fn when(h: &H, id: &str, kind: &str) -> Vec<DateTime<Utc>> {
    h.events(id)
        .await
        .into_iter()
        .filter(|(k, _, _)| k == kind)
        .map(|(_, at, _)| at)
        .collect()
}

fn never(_: &Rollout) -> Option<Input> {
    None
}

// ---------------------------------------------------------------------------
// A check that starts failing in a session rolls back within one interval,
// from baking, paused and awaiting approval alike.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Holding {
    Baking,
    Paused,
    AwaitingApproval,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_while_baking_rolls_back_within_one_interval() {
    rolls_back_within_one_interval(Holding::Baking, "2026-11-16T10:04:15+05:30").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_while_paused_rolls_back_within_one_interval() {
    rolls_back_within_one_interval(Holding::Paused, "2026-11-16T10:04:30+05:30").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_while_awaiting_approval_rolls_back_within_one_interval() {
    rolls_back_within_one_interval(Holding::AwaitingApproval, "2026-11-16T10:04:45+05:30").await;
}

/// Monday 16 Nov 2026: the window before the open lasts until 08:15 (the
/// equity open at 08:45 less the guard); 5% is raised at 07:00. The canary
/// takes healthy traffic from 08:00; at `failing_from` (in the session,
/// 15–45 s after an evaluation) it starts answering 503 to everything.
async fn rolls_back_within_one_interval(holding: Holding, failing_from: &str) {
    let interval = TimeDelta::minutes(1);
    let step = TimeDelta::seconds(15);
    let (h, vm) = world("2026-11-16T07:00:00+05:30").await;
    let steps = match holding {
        Holding::Baking | Holding::Paused => {
            "  - set_weight: 5\n  - bake: {duration: 8h}\n  - set_weight: 100\n"
        }
        Holding::AwaitingApproval => {
            "  - set_weight: 5\n  - approval: {min: 1}\n  - set_weight: 100\n"
        }
    };
    // query_delay 0s: VictoriaMetrics runs with -search.latencyOffset=0s, so
    // a sample is queryable as soon as it is flushed, and "from the first
    // failing sample" is "from when it became queryable".
    let analysis = "  interval: 1m\n  query_delay: 0s\n  min_passes: 3\n  inconclusive_limit: 5\n";
    let yaml = spec(&vm.url, analysis, steps);
    let s = load(&h.c, &yaml);
    let cal = h.c.calendars().get("nse").unwrap();
    let failing_from = t(failing_from);
    assert!(
        muhurat::engine::in_session(&s, &cal, failing_from),
        "the fixture must fail inside a session"
    );

    let mut customers = Customers::new();
    customers
        .trade(
            &vm,
            "2026-11-16T08:00:00+05:30",
            &failing_from.to_rfc3339(),
            HEALTHY,
        )
        .await;
    customers
        .trade(
            &vm,
            &failing_from.to_rfc3339(),
            "2026-11-16T11:00:00+05:30",
            1.0,
        )
        .await;

    let id = h.start(&yaml).await;
    let before = failing_from - TimeDelta::minutes(5);
    let r = h
        .run(
            &id,
            &before.to_rfc3339(),
            interval,
            |r| {
                // An operator pauses the bake at 09:30 (in the session).
                let pause_at = t("2026-11-16T09:30:00+05:30");
                (matches!(holding, Holding::Paused)
                    && r.state == State::Baking
                    && h.clock.now() >= pause_at)
                    .then(|| Input::Pause {
                        by: "ravi".into(),
                        reason: Some("watching the open".into()),
                    })
            },
            |r| r.state.is_terminal(),
        )
        .await;
    let want = match holding {
        Holding::Baking => State::Baking,
        Holding::Paused => State::Paused,
        Holding::AwaitingApproval => State::AwaitingApproval,
    };
    assert_eq!(r.state, want, "{:?}", r.waiting_for);
    assert_eq!(r.confirmed, 5);
    assert_eq!(h.target.share(), Some(5.0));
    // Healthy so far, with real data: in-session passes, no failure.
    let st = &r.checks["error-rate"];
    assert!(
        st.passes >= 60 && st.failure_streak == 0,
        "{st:?}\n{}",
        show(&results(&h, &id).await)
    );

    // The session goes on, a pass every 15 s, until the rollback.
    let r = h
        .run(&id, "2026-11-16T10:30:00+05:30", step, never, |r| {
            r.state.is_terminal()
        })
        .await;
    let rolled_back_at = h.clock.now();
    let rs = results(&h, &id).await;
    assert_eq!(r.state, State::RolledBack, "{}", show(&rs));
    assert_eq!(h.target.share(), Some(0.0));
    assert!(h.target.lock().drained, "rollback drains the canary");
    let latency = rolled_back_at - failing_from;
    assert!(
        latency <= interval + step,
        "{holding:?}: first failing sample at {}, rolled back at {} ({} s > interval + step)\n{}",
        ist(failing_from),
        ist(rolled_back_at),
        latency.num_seconds(),
        show(&rs)
    );
    // The first evaluation at or after the first failing sample failed, on
    // the real ratio; none before it did.
    let first_fail = rs
        .iter()
        .position(|x| x.verdict == "fail")
        .unwrap_or_else(|| panic!("no failed evaluation:\n{}", show(&rs)));
    let fail = &rs[first_fail];
    assert!(
        fail.at >= failing_from && fail.at - failing_from < interval,
        "failed at {} for a failure from {}",
        ist(fail.at),
        ist(failing_from)
    );
    assert!(fail.in_session, "{}", show(&rs[first_fail..]));
    assert!(fail.value.is_some_and(|v| v > 0.01), "{fail:?}");
    assert!(
        rs[..first_fail]
            .iter()
            .filter(|x| x.at > t("2026-11-16T08:10:00+05:30"))
            .all(|x| x.verdict == "pass"),
        "{}",
        show(&rs[..first_fail])
    );
    assert_eq!(when(&h, &id, "check_failed").await, vec![fail.at]);
    assert_eq!(when(&h, &id, "rolled_back").await, vec![rolled_back_at]);
}

// ---------------------------------------------------------------------------
// evidence: sessions — a night of no data neither advances nor pauses, and
// the next raise waits for min_passes passes counted in sessions.
// ---------------------------------------------------------------------------

/// Diwali 2025 on the real calendar. Tue 21 Oct: regular sessions closed,
/// Muhurat trading 13:15–15:15 (equity, F&O; commodity 13:30–15:00,
/// currency 13:45–14:45); permitted 00:00–12:45 and from 15:45. Wed 22 Oct
/// (Balipratipada): only commodity trades, 17:00–23:30; permitted until
/// 16:30 and from Thu 00:00.
///
/// 5% is raised at Tue 00:30. `min_passes: 15`, evaluated every 10 min: the
/// two-hour Muhurat session yields 12 in-session passes, so the next raise
/// (to 25%) must wait through Tuesday evening's open window — although the
/// canary keeps serving, and passing, off-session until 17:00 — until
/// Wednesday's commodity session adds the missing three; then for the next
/// window, Thu 00:00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_evidence_night_without_data_then_raise_after_min_passes_in_session() {
    let interval = TimeDelta::minutes(10);
    let min_passes = 15;
    let (h, vm) = world("2025-10-21T00:30:00+05:30").await;
    let analysis = format!(
        "  interval: 10m\n  query_delay: 30s\n  evidence: sessions\n  min_passes: {min_passes}\n  inconclusive_limit: 3\n"
    );
    let yaml = spec(
        &vm.url,
        &analysis,
        "  - set_weight: 5\n  - set_weight: 25\n  - approval: {min: 1}\n  - set_weight: 100\n",
    );
    let s = load(&h.c, &yaml);
    let cal = h.c.calendars().get("nse").unwrap();
    let permitted = windows::permitted(
        &s.window_rules(),
        &cal,
        Interval::new(t("2025-10-20T00:00:00Z"), t("2025-10-25T00:00:00Z")),
        &[],
    );
    let is_permitted = |at: DateTime<Utc>| permitted.iter().any(|w| w.contains(at));

    let mut customers = Customers::new();
    // Customers log in before Muhurat trading and leave by 17:00.
    customers
        .trade(
            &vm,
            "2025-10-21T13:00:00+05:30",
            "2025-10-21T17:00:00+05:30",
            HEALTHY,
        )
        .await;
    // Balipratipada: the commodity evening session.
    customers
        .trade(
            &vm,
            "2025-10-22T16:50:00+05:30",
            "2025-10-22T23:30:00+05:30",
            HEALTHY,
        )
        .await;

    let id = h.start(&yaml).await;

    // The night (and morning) of no data, until the Muhurat session opens.
    let r = h
        .run(&id, "2025-10-21T13:00:00+05:30", interval, never, |r| {
            r.state == State::Paused
        })
        .await;
    assert_eq!(r.confirmed, 5, "{:?}", r.waiting_for);
    assert_ne!(
        r.state,
        State::Paused,
        "no data off-session must not pause: {:?}",
        r.waiting_for
    );
    let rs = results(&h, &id).await;
    assert!(
        rs.len() >= 70
            && rs
                .iter()
                .all(|x| x.verdict == "inconclusive" && !x.in_session),
        "{}",
        show(&rs)
    );
    // The window stood open for hours of those evaluations: it was the
    // evidence, not the calendar, that held the raise back.
    assert!(rs.iter().filter(|x| is_permitted(x.at)).count() >= 60);
    assert_eq!(
        when(&h, &id, "raise_decided").await.len(),
        1,
        "only the first raise"
    );
    assert_eq!(r.checks["error-rate"].passes, 0);

    // Muhurat trading, then after-hours traffic into the open window.
    let r = h
        .run(&id, "2025-10-21T16:50:00+05:30", interval, never, |r| {
            r.state == State::Paused
        })
        .await;
    let rs = results(&h, &id).await;
    let in_session_passes = |rs: &[CheckResultRecord], until: DateTime<Utc>| {
        rs.iter()
            .filter(|x| x.at <= until && x.in_session && x.verdict == "pass")
            .count()
    };
    let muhurat = in_session_passes(&rs, h.clock.now());
    assert_eq!(muhurat, 12, "{}", show(&rs));
    let open_off_session_passes = rs
        .iter()
        .filter(|x| x.verdict == "pass" && !x.in_session && is_permitted(x.at))
        .count();
    assert!(
        open_off_session_passes >= 6,
        "the fixture must offer off-session passes in an open window:\n{}",
        show(&rs)
    );
    assert_eq!(r.checks["error-rate"].passes as usize, muhurat);
    assert_eq!(r.confirmed, 5);
    assert_eq!(r.desired, 5, "{:?}", r.waiting_for);
    assert_eq!(when(&h, &id, "raise_decided").await.len(), 1);

    // Until the next raise is decided.
    let r = h
        .run(&id, "2025-10-23T01:00:00+05:30", interval, never, |r| {
            r.desired == 25 || r.state == State::Paused
        })
        .await;
    let rs = results(&h, &id).await;
    assert_eq!(r.desired, 25, "{:?}\n{}", r.waiting_for, show(&rs));
    let raises = when(&h, &id, "raise_decided").await;
    assert_eq!(raises.len(), 2);
    let raised_at = raises[1];
    // The min_passes-th in-session pass, and the first evaluation instant
    // inside a window after it: that is when the raise had to come.
    let nth = rs
        .iter()
        .filter(|x| x.in_session && x.verdict == "pass")
        .nth(min_passes as usize - 1)
        .map(|x| x.at)
        .unwrap_or_else(|| panic!("fewer than {min_passes} in-session passes:\n{}", show(&rs)));
    let mut expected = nth;
    while !is_permitted(expected) {
        expected += interval;
    }
    assert_eq!(
        ist(raised_at),
        ist(expected),
        "the {min_passes}th in-session pass was at {}",
        ist(nth)
    );
    assert_eq!(ist(raised_at), "Thu 23 00:00:00");
    assert!(in_session_passes(&rs, raised_at) >= min_passes as usize);
    assert!(
        when(&h, &id, "paused").await.is_empty(),
        "never paused: {:?}",
        h.events(&id).await
    );
}

// ---------------------------------------------------------------------------
// evidence: always — no data pauses after inconclusive_limit.
// ---------------------------------------------------------------------------

/// Sunday 15 Nov 2026, no session all day. The service does not follow the
/// market (`evidence: always`): its canary passes while it has traffic, then
/// the exporter stops at 11:00 and the checks see nothing. The third
/// consecutive inconclusive evaluation — off-session, counted all the same
/// — pauses the rollout, which stays at 5%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_evidence_no_data_pauses_after_inconclusive_limit() {
    let interval = TimeDelta::minutes(5);
    let limit = 3;
    let (h, vm) = world("2026-11-15T10:00:00+05:30").await;
    let analysis = format!(
        "  interval: 5m\n  query_delay: 30s\n  evidence: always\n  min_passes: 3\n  inconclusive_limit: {limit}\n"
    );
    let yaml = spec(
        &vm.url,
        &analysis,
        "  - set_weight: 5\n  - bake: {duration: 4h}\n  - set_weight: 100\n",
    );
    let mut customers = Customers::new();
    customers
        .trade(
            &vm,
            "2026-11-15T09:40:00+05:30",
            "2026-11-15T11:00:00+05:30",
            HEALTHY,
        )
        .await;
    let id = h.start(&yaml).await;
    let r = h
        .run(&id, "2026-11-15T13:00:00+05:30", interval, never, |r| {
            r.state == State::Paused
        })
        .await;
    let rs = results(&h, &id).await;
    assert_eq!(r.state, State::Paused, "{}", show(&rs));
    let paused_at = h.clock.now();
    assert_eq!(when(&h, &id, "paused").await, vec![paused_at]);
    // Passes while there was traffic, then exactly `limit` inconclusive
    // results — all off-session — the last of them at the pause.
    let first_inconclusive = rs
        .iter()
        .position(|x| x.verdict != "pass")
        .unwrap_or_else(|| panic!("{}", show(&rs)));
    assert!(first_inconclusive >= 10, "{}", show(&rs));
    let tail = &rs[first_inconclusive..];
    assert_eq!(tail.len(), limit as usize, "{}", show(&rs));
    assert!(
        tail.iter()
            .all(|x| x.verdict == "inconclusive" && !x.in_session),
        "{}",
        show(tail)
    );
    assert_eq!(tail.last().map(|x| x.at), Some(paused_at));
    assert!(
        tail[0].at > t("2026-11-15T11:00:00+05:30"),
        "{}",
        show(tail)
    );
    let why = h
        .events(&id)
        .await
        .into_iter()
        .find(|(k, _, _)| k == "checks_inconclusive")
        .map(|(_, _, why)| why)
        .unwrap_or_default();
    assert!(why.contains("inconclusive_limit"), "{why}");
    // Nothing moved on inconclusive data.
    assert_eq!(r.confirmed, 5);
    assert_eq!(h.target.share(), Some(5.0));
}

// ---------------------------------------------------------------------------
// Regression: a due evaluation must not drop out of next_wake.
// ---------------------------------------------------------------------------

/// `Controller::run` sleeps until the stored `next_wake` (at most
/// `drift_interval`). A transition committed after a check evaluation became
/// due, but before the pass that runs it, used to store the evaluation
/// *after* it (`next_evaluation` counted from `now`, not from the last
/// evaluation run), so the due one waited for whatever pass came next — up
/// to `drift_interval` (default 10 s) late, and a failing check's rollback
/// with it. With the system clock this happens on its own: the store keeps
/// `next_wake` in whole milliseconds (rounded down), the loop wakes up to
/// 1 ms before the instant, finds nothing due, and the Tick it sends commits
/// a few ms later, past the instant. `benches/rollback_latency.rs` saw
/// evaluations run 1 s (its `drift_interval`) late in 2 of 20 rollouts.
/// Here a person's pause lands 500 ms after the 07:06 evaluation was due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_after_an_evaluation_is_due_keeps_next_wake_at_it() {
    let (h, vm) = world("2026-11-16T07:00:00+05:30").await;
    let yaml = spec(
        &vm.url,
        "  interval: 1m\n  query_delay: 0s\n",
        "  - set_weight: 5\n  - bake: {duration: 8h}\n  - set_weight: 100\n",
    );
    let id = h.start(&yaml).await;
    let r = h
        .run(
            &id,
            "2026-11-16T07:05:00+05:30",
            TimeDelta::minutes(1),
            never,
            |_| false,
        )
        .await;
    assert_eq!(r.state, State::Baking, "{:?}", r.waiting_for);
    let due = t("2026-11-16T07:06:00+05:30");
    assert_eq!(h.c.store().next_wake().await.unwrap(), Some(due));
    h.clock.set(due + TimeDelta::milliseconds(500));
    h.c.input(
        &id,
        Input::Pause {
            by: "ravi".into(),
            reason: None,
        },
        None,
    )
    .await
    .unwrap();
    let next = h.c.store().next_wake().await.unwrap();
    assert!(
        next.is_some_and(|w| w <= due),
        "next_wake {} but the evaluation due at {} has not run",
        next.map(ist).unwrap_or_default(),
        ist(due)
    );
}
