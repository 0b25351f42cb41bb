use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use rstest::rstest;

use super::*;
use crate::calendar::{self, Calendar};
use crate::spec::{self, Spec};
use crate::windows::{self, Interval};

/// IST calendar covering December 2026: equity Mon–Fri 09:00–15:30, a
/// holiday on Wed 9th. Thu 3rd, Fri 4th, Mon 7th are trading days.
const CAL: &str = r#"
name: t
version: "1"
timezone: Asia/Kolkata
valid_from: 2026-12-01
valid_until: 2026-12-31
segments:
  equity: {days: [mon, tue, wed, thu, fri], open: "09:00", close: "15:30"}
holidays:
  - {date: 2026-12-09, name: Hol, closed: all}
"#;

const CHECKS: &str = "analysis:\n  prometheus: http://127.0.0.1:8428\n  interval: 10m\n  min_passes: 3\n  inconclusive_limit: 3\n  checks: [{name: e, query: up, max: 1, failure_limit: 2}]";

/// 10% → bake one equity day → approval → 100% → bake 1h.
const STEPS: &str = "  - set_weight: 10\n  - bake: {sessions: 1}\n  - approval: {min: 1}\n  - set_weight: 100\n  - bake: {duration: 1h}";

fn cal() -> Calendar {
    calendar::parse("t.yaml", CAL).unwrap()
}

fn load(steps: &str, analysis: &str, extra: &str) -> Spec {
    let text = format!(
        "name: p\ncalendar: t\nsegments: [equity]\n{extra}\ntraffic:\n  haproxy:\n    endpoints: [\"unix:/run/h.sock\", \"tcp:10.0.0.5:9999\"]\n    backend: b\n    pools: {{blue: [b1], green: [g1]}}\n{analysis}\nsteps:\n{steps}\n"
    );
    spec::load("p.yaml", &text, |_| Ok(cal()))
        .unwrap_or_else(|d| panic!("{d:#?}"))
        .spec
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// `Thu 3rd 10:00` style helper: IST on December `d`, 2026.
fn ist(d: u32, hm: &str) -> DateTime<Utc> {
    t(&format!("2026-12-{d:02}T{hm}:00+05:30"))
}

struct World {
    spec: Spec,
    cal: Calendar,
    permitted: Vec<Interval>,
    frozen: bool,
    clock_trusted: bool,
    canary_up: bool,
    live_up: bool,
}

impl World {
    fn new(spec: Spec) -> World {
        let cal = cal();
        let range = Interval::new(ist(1, "00:00"), t("2027-01-02T00:00:00+05:30"));
        let permitted = windows::permitted(&spec.window_rules(), &cal, range, &[]);
        World {
            spec,
            cal,
            permitted,
            frozen: false,
            clock_trusted: true,
            canary_up: true,
            live_up: true,
        }
    }

    fn std() -> World {
        World::new(load(STEPS, CHECKS, ""))
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            spec: &self.spec,
            calendar: &self.cal,
            permitted: &self.permitted,
            frozen: self.frozen,
            clock_trusted: self.clock_trusted,
            canary_up: self.canary_up,
            live_up: self.live_up,
            calendar_version: "1",
            policy_version: "0",
        }
    }

    fn new_rollout(&self, now: DateTime<Utc>) -> Rollout {
        let init = Initiator {
            name: "ci".into(),
            principal: "gitlab".into(),
        };
        Rollout::new("r1", &self.spec, "abc123", init, now).0
    }

    fn try_step(
        &self,
        r: &Rollout,
        input: Input,
        now: DateTime<Utc>,
    ) -> Result<Transition, Refusal> {
        step(r, input, now, &self.ctx())
    }

    fn step(&self, r: &Rollout, input: Input, now: DateTime<Utc>) -> Transition {
        self.try_step(r, input, now)
            .unwrap_or_else(|e| panic!("refused: {e}"))
    }

    /// Preflight passed at Thu 3rd 10:00; first raise decided at 16:00 and
    /// confirmed at 16:01. Now baking at 10%.
    fn at_ten_percent(&self) -> Rollout {
        let r = self.new_rollout(ist(3, "10:00"));
        let r = self
            .step(&r, Input::PreflightPassed, ist(3, "10:00"))
            .rollout;
        let r = self.step(&r, Input::Tick, ist(3, "16:00")).rollout;
        let v = r.write.as_ref().unwrap().version;
        self.step(&r, applied(v, 10), ist(3, "16:01")).rollout
    }
}

fn applied(version: u64, share: u32) -> Input {
    Input::Applied {
        version,
        share,
        confirmed: true,
        detail: "ok".into(),
        endpoints: Default::default(),
    }
}

fn results(at: DateTime<Utc>, verdict: Verdict, in_session: bool) -> Input {
    Input::CheckResults {
        at,
        results: vec![CheckResult {
            check: "e".into(),
            verdict,
            in_session,
        }],
    }
}

fn approve(principal: &str, step: usize, hash: &str) -> Input {
    Input::Approve {
        principal: principal.into(),
        is_initiator: false,
        step,
        spec_hash: hash.into(),
        comment: None,
    }
}

fn kinds(t: &Transition) -> Vec<EventKind> {
    t.events.iter().map(|e| e.kind).collect()
}

fn applies(t: &Transition) -> Vec<(u32, Option<DateTime<Utc>>, bool)> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Apply {
                share,
                deadline,
                drain_and_shutdown,
                ..
            } => Some((*share, *deadline, *drain_and_shutdown)),
            _ => None,
        })
        .collect()
}

/// Feed in-session passes on Fri 4th from 09:11, every 10 minutes.
fn passes_friday(w: &World, mut r: Rollout, n: usize) -> Rollout {
    for k in 0..n {
        let at = ist(4, "09:11") + TimeDelta::minutes(10 * k as i64);
        r = w.step(&r, results(at, Verdict::Pass, true), at).rollout;
    }
    r
}

/// At 10%, baked through Friday, awaiting approval.
fn awaiting_approval(w: &World) -> Rollout {
    let r = passes_friday(w, w.at_ten_percent(), 3);
    let tr = w.step(&r, Input::Tick, ist(4, "15:30"));
    assert_eq!(tr.rollout.state, State::AwaitingApproval, "{:?}", tr.events);
    tr.rollout
}

// ---- windows and raises --------------------------------------------------

#[test]
fn first_raise_waits_for_the_window() {
    let w = World::std();
    let r = w.new_rollout(ist(3, "10:00"));
    let tr = w.step(&r, Input::PreflightPassed, ist(3, "10:00"));
    assert_eq!(tr.rollout.state, State::WaitingForWindow);
    assert_eq!(
        tr.rollout.waiting_for.as_deref(),
        Some("window opens Thu 16:00 IST (0% → 10%)")
    );
    assert!(applies(&tr).is_empty());
    assert!(tr.effects.contains(&Effect::WakeAt {
        at: ist(3, "16:00"),
        token: "window_opens".into()
    }));
    assert_eq!(tr.rollout.version, 2);

    let tr = w.step(&tr.rollout, Input::Tick, ist(3, "16:00"));
    assert_eq!(tr.rollout.state, State::Applying);
    assert_eq!(kinds(&tr), vec![EventKind::RaiseDecided]);
    // Deadline: the window ends at Fri 08:30 (09:00 open − 30m guard).
    assert_eq!(applies(&tr), vec![(10, Some(ist(4, "08:30")), false)]);
    assert_eq!(tr.rollout.desired, 10);
    assert_eq!(tr.rollout.confirmed, 0);
}

#[rstest]
#[case::frozen(|w: &mut World| w.frozen = true, "16:00", "global freeze is on")]
#[case::clock(|w: &mut World| w.clock_trusted = false, "16:00", "the clock is not trusted")]
#[case::canary_down(|w: &mut World| w.canary_up = false, "16:00", "no canary server is UP")]
#[case::too_little_left(|_: &mut World| {}, "08:20", "window opens Fri 16:00 IST")]
#[case::in_session(|_: &mut World| {}, "12:00", "window opens Thu 16:00 IST")]
fn no_raise_when(#[case] set: fn(&mut World), #[case] at: &str, #[case] why: &str) {
    let mut w = World::std();
    set(&mut w);
    let day = if at < "09:00" { 4 } else { 3 };
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let tr = w.step(&r, Input::Tick, ist(day, at));
    assert_eq!(tr.rollout.state, State::WaitingForWindow);
    assert!(applies(&tr).is_empty());
    let waiting = tr.rollout.waiting_for.unwrap();
    assert!(waiting.starts_with(why), "{waiting}");
}

#[test]
fn confirmation_starts_checks_and_the_bake() {
    let w = World::std();
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let tr = w.step(&r, applied(v, 10), ist(3, "16:01"));
    assert_eq!(
        kinds(&tr),
        vec![EventKind::WeightConfirmed, EventKind::BakeStarted]
    );
    assert_eq!(tr.rollout.confirmed, 10);
    assert_eq!(tr.rollout.state, State::Baking);
    assert_eq!(tr.rollout.t0, Some(ist(3, "16:01")));
    assert_eq!(
        tr.rollout.waiting_for.as_deref(),
        Some("bake: 0 of 1 equity trading days observed")
    );
}

#[test]
fn stale_applied_is_ignored() {
    let w = World::std();
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let tr = w.step(&r, applied(v - 1, 10), ist(3, "16:01"));
    assert!(tr.events.is_empty());
    assert_eq!(tr.rollout.version, r.version);
    assert_eq!(tr.rollout.confirmed, 0);
    assert_eq!(tr.rollout.state, State::Applying);
}

#[rstest]
#[case::tick(None)]
#[case::late_confirmation(Some(true))]
fn raise_expires_at_its_deadline(#[case] confirmation: Option<bool>) {
    let w = World::std();
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let input = match confirmation {
        None => Input::Tick,
        Some(c) => Input::Applied {
            version: v,
            share: 10,
            confirmed: c,
            detail: "slow".into(),
            endpoints: Default::default(),
        },
    };
    let tr = w.step(&r, input, ist(4, "08:30"));
    assert!(kinds(&tr).contains(&EventKind::RaiseExpired));
    assert_eq!(tr.rollout.desired, 0);
    assert_eq!(tr.rollout.confirmed, 0);
    // The revert is a decrease: no deadline.
    assert_eq!(applies(&tr), vec![(0, None, false)]);
    assert_eq!(tr.rollout.state, State::WaitingForWindow);
    // Once the decrease is confirmed, the step waits for the next window.
    let v = tr.rollout.write.as_ref().unwrap().version;
    let tr = w.step(&tr.rollout, applied(v, 0), ist(4, "08:31"));
    assert_eq!(tr.rollout.state, State::WaitingForWindow);
    assert_eq!(tr.rollout.next_window, Some(ist(4, "16:00")));
    let tr = w.step(&tr.rollout, Input::Tick, ist(4, "16:00"));
    assert_eq!(applies(&tr), vec![(10, Some(ist(7, "08:30")), false)]);
}

#[test]
fn unconfirmed_raise_is_retried_only_before_its_deadline() {
    let w = World::std();
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let failed = Input::Applied {
        version: v,
        share: 10,
        confirmed: false,
        detail: "endpoint 2 read back 0".into(),
        endpoints: Default::default(),
    };
    let tr = w.step(&r, failed, ist(3, "16:01"));
    assert_eq!(kinds(&tr), vec![EventKind::ApplyFailed]);
    let tr = w.step(&tr.rollout, Input::Tick, ist(3, "16:02"));
    assert_eq!(applies(&tr), vec![(10, Some(ist(4, "08:30")), false)]);
    // While frozen the retry is not written.
    let mut frozen = World::std();
    frozen.frozen = true;
    let tr2 = frozen.step(&tr.rollout, Input::Tick, ist(3, "16:03"));
    assert!(applies(&tr2).is_empty());
}

// ---- bake ----------------------------------------------------------------

#[test]
fn bake_day_counts_with_an_in_session_pass() {
    let w = World::std();
    let r = passes_friday(&w, w.at_ten_percent(), 1);
    let tr = w.step(&r, Input::Tick, ist(4, "15:29"));
    assert_eq!(tr.rollout.state, State::Baking);
    let tr = w.step(&tr.rollout, Input::Tick, ist(4, "15:30"));
    let k = kinds(&tr);
    assert!(k.contains(&EventKind::BakeDayObserved), "{k:?}");
    assert!(k.contains(&EventKind::BakeCompleted));
    assert_eq!(tr.rollout.state, State::AwaitingApproval);
    assert_eq!(tr.rollout.step, 2);
    assert_eq!(
        tr.rollout.waiting_for.as_deref(),
        Some("needs 1 more approval")
    );
}

#[test]
fn bake_day_without_a_pass_is_not_counted() {
    let w = World::std();
    let r = w.at_ten_percent();
    // Only an off-session pass on Friday; the next input judges the day.
    let tr = w.step(
        &r,
        results(ist(4, "16:11"), Verdict::Pass, false),
        ist(4, "16:11"),
    );
    assert_eq!(
        kinds(&tr),
        vec![EventKind::ChecksEvaluated, EventKind::BakeDayNotCounted]
    );
    assert_eq!(
        tr.events[1].why,
        "Fri 4 Dec not counted: no in-session pass of e"
    );
    assert_eq!(tr.rollout.state, State::Baking);
    // Next session closes Mon 7th 15:30.
    assert!(tr.effects.contains(&Effect::WakeAt {
        at: ist(7, "15:30"),
        token: "session_closes".into()
    }));
}

#[test]
fn a_pause_during_the_sessions_loses_the_day() {
    let w = World::std();
    let r = passes_friday(&w, w.at_ten_percent(), 1);
    let pause = Input::Pause {
        by: "asha".into(),
        reason: Some("look".into()),
    };
    let r = w.step(&r, pause, ist(4, "10:00")).rollout;
    assert_eq!(r.waiting_for.as_deref(), Some("paused by asha: look"));
    let resume = Input::Resume {
        by: "asha".into(),
        override_checks: false,
        reason: None,
    };
    let r = w.step(&r, resume, ist(4, "11:00")).rollout;
    let tr = w.step(&r, Input::Tick, ist(4, "15:30"));
    assert_eq!(tr.rollout.state, State::Baking);
    assert!(!kinds(&tr).contains(&EventKind::BakeDayObserved));
}

// ---- approvals -----------------------------------------------------------

#[rstest]
#[case::initiator_principal("gitlab", false, 2, true, "separation_of_duties")]
#[case::initiator_name("ci", false, 2, true, "separation_of_duties")]
#[case::initiator_token("someone", true, 2, true, "separation_of_duties")]
#[case::wrong_step("asha", false, 3, true, "stale_approval")]
#[case::wrong_hash("asha", false, 2, false, "stale_approval")]
fn approval_refused(
    #[case] who: &str,
    #[case] is_initiator: bool,
    #[case] step_index: usize,
    #[case] right_hash: bool,
    #[case] code: &str,
) {
    let w = World::std();
    let r = awaiting_approval(&w);
    let hash = if right_hash {
        r.spec_hash.clone()
    } else {
        "f00".into()
    };
    let input = Input::Approve {
        principal: who.into(),
        is_initiator,
        step: step_index,
        spec_hash: hash,
        comment: None,
    };
    let err = w.try_step(&r, input, ist(4, "16:00")).unwrap_err();
    assert_eq!(err.code, code);
}

#[test]
fn approval_outside_an_approval_step_is_stale() {
    let w = World::std();
    let r = w.at_ten_percent();
    let hash = r.spec_hash.clone();
    let err = w
        .try_step(&r, approve("asha", 1, &hash), ist(3, "17:00"))
        .unwrap_err();
    assert_eq!(err.code, "stale_approval");
    assert_eq!(err.http_status(), 409);
}

#[test]
fn without_separation_of_duties_the_initiator_may_approve() {
    let w = World::new(load(
        STEPS,
        CHECKS,
        "approvals: {separation_of_duties: false}",
    ));
    let r = awaiting_approval(&w);
    let hash = r.spec_hash.clone();
    let tr = w.step(&r, approve("gitlab", 2, &hash), ist(4, "15:40"));
    assert!(kinds(&tr).contains(&EventKind::StepApproved));
}

#[test]
fn approvals_need_distinct_unexpired_principals() {
    let steps = "  - set_weight: 10\n  - approval: {min: 2}\n  - set_weight: 100";
    let w = World::new(load(steps, "", "approvals: {max_age: 1h}"));
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let r = w.step(&r, applied(v, 10), ist(3, "16:01")).rollout;
    assert_eq!(r.state, State::AwaitingApproval);
    let hash = r.spec_hash.clone();
    let r = w
        .step(&r, approve("asha", 1, &hash), ist(3, "17:00"))
        .rollout;
    let err = w
        .try_step(&r, approve("asha", 1, &hash), ist(3, "17:01"))
        .unwrap_err();
    assert_eq!(err.code, "already_approved");
    // Asha's approval has expired when Ravi approves.
    let tr = w.step(&r, approve("ravi", 1, &hash), ist(3, "18:01"));
    assert_eq!(tr.rollout.state, State::AwaitingApproval);
    assert_eq!(
        tr.rollout.waiting_for.as_deref(),
        Some("needs 1 more approval")
    );
    let tr = w.step(&tr.rollout, approve("asha", 1, &hash), ist(3, "18:02"));
    assert!(kinds(&tr).contains(&EventKind::StepApproved));
    assert!(kinds(&tr).contains(&EventKind::RaiseDecided));
}

#[rstest]
#[case::failed_check(results(ist(4, "16:01"), Verdict::Fail, false))]
#[case::pause(Input::Pause { by: "asha".into(), reason: None })]
#[case::drift(Input::Observed { shares: [("unix:/run/h.sock".to_string(), 0.0)].into(), unreachable: Default::default() })]
fn approvals_are_voided_by(#[case] input: Input) {
    let steps = "  - set_weight: 10\n  - approval: {min: 2}\n  - set_weight: 100";
    let w = World::new(load(steps, CHECKS, ""));
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let r = w.step(&r, applied(v, 10), ist(3, "16:01")).rollout;
    let hash = r.spec_hash.clone();
    let r = w
        .step(&r, approve("asha", 1, &hash), ist(4, "16:00"))
        .rollout;
    let tr = w.step(&r, input, ist(4, "16:01"));
    assert!(
        kinds(&tr).contains(&EventKind::ApprovalVoided),
        "{:?}",
        kinds(&tr)
    );
    assert!(tr.rollout.approvals.iter().all(|a| a.void));
}

// ---- checks --------------------------------------------------------------

#[rstest]
#[case::two_passes(&[Verdict::Pass, Verdict::Pass], State::WaitingForChecks, "waiting for checks: 2 of 3 in-session passes")]
#[case::latest_inconclusive(&[Verdict::Pass, Verdict::Pass, Verdict::Pass, Verdict::Inconclusive], State::WaitingForChecks, "waiting for checks: the latest result of e was not a pass")]
#[case::latest_fail(&[Verdict::Pass, Verdict::Pass, Verdict::Pass, Verdict::Fail], State::WaitingForChecks, "waiting for checks: the latest result of e was not a pass")]
#[case::enough(&[Verdict::Pass, Verdict::Inconclusive, Verdict::Pass, Verdict::Pass], State::Applying, "applying 100% (deadline Mon 08:30 IST)")]
fn second_raise_needs_min_passes(
    #[case] verdicts: &[Verdict],
    #[case] state: State,
    #[case] waiting: &str,
) {
    let steps = "  - set_weight: 10\n  - set_weight: 100";
    let w = World::new(load(steps, CHECKS, ""));
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let mut r = w.step(&r, applied(v, 10), ist(3, "16:01")).rollout;
    // Still inside the window, but no evidence yet.
    assert_eq!(r.state, State::WaitingForChecks);
    // Off-session passes at night count for nothing.
    for k in 1..=5 {
        let at = ist(3, "16:01") + TimeDelta::minutes(10 * k);
        r = w.step(&r, results(at, Verdict::Pass, false), at).rollout;
    }
    for (k, v) in verdicts.iter().enumerate() {
        let at = ist(4, "09:11") + TimeDelta::minutes(10 * k as i64);
        r = w.step(&r, results(at, *v, true), at).rollout;
    }
    let tr = w.step(&r, Input::Tick, ist(4, "16:00"));
    assert_eq!(tr.rollout.state, state);
    assert_eq!(tr.rollout.waiting_for.as_deref(), Some(waiting));
}

#[rstest]
#[case::sessions_off_session_not_counted("sessions", false, false)]
#[case::sessions_in_session_counted("sessions", true, true)]
#[case::always_counts_everything("always", false, true)]
fn inconclusive_limit_pauses(
    #[case] evidence: &str,
    #[case] in_session: bool,
    #[case] pauses: bool,
) {
    let analysis = CHECKS.replace(
        "min_passes: 3",
        &format!("min_passes: 3\n  evidence: {evidence}"),
    );
    let w = World::new(load(STEPS, &analysis, ""));
    let mut r = w.at_ten_percent();
    let mut last = None;
    for k in 1..=3 {
        let at = ist(4, "09:01") + TimeDelta::minutes(10 * k);
        let tr = w.step(&r, results(at, Verdict::Error, in_session), at);
        r = tr.rollout.clone();
        last = Some(tr);
    }
    assert_eq!(r.state == State::Paused, pauses, "{:?}", r.state);
    if pauses {
        assert!(kinds(&last.unwrap()).contains(&EventKind::ChecksInconclusive));
        assert_eq!(r.paused.as_ref().unwrap().cause, PauseCause::Inconclusive);
    } else {
        assert_eq!(r.checks["e"].inconclusive_streak, 0);
    }
}

#[rstest]
#[case::baking(0)]
#[case::awaiting_approval(1)]
#[case::paused(2)]
fn failure_limit_rolls_back_from_any_state(#[case] from: u8) {
    let w = World::std();
    let r = match from {
        0 => w.at_ten_percent(),
        1 => awaiting_approval(&w),
        _ => {
            let r = w.at_ten_percent();
            let p = Input::Pause {
                by: "asha".into(),
                reason: None,
            };
            w.step(&r, p, ist(3, "17:00")).rollout
        }
    };
    let now = ist(4, "16:10");
    let r = w.step(&r, results(now, Verdict::Fail, false), now).rollout;
    assert_ne!(r.state, State::RollingBack, "failure_limit is 2");
    let now = ist(4, "16:20");
    let tr = w.step(&r, results(now, Verdict::Fail, false), now);
    assert!(kinds(&tr).contains(&EventKind::CheckFailed));
    assert_eq!(tr.rollout.state, State::RollingBack);
    assert_eq!(tr.rollout.desired, 0);
    assert_eq!(applies(&tr), vec![(0, None, true)]);
    let v = tr.rollout.write.as_ref().unwrap().version;
    let tr = w.step(&tr.rollout, applied(v, 0), ist(4, "16:21"));
    assert_eq!(tr.rollout.state, State::RolledBack);
    assert_eq!(tr.rollout.confirmed, 0);
    assert_eq!(tr.rollout.waiting_for, None);
}

#[test]
fn on_failure_pause_pauses() {
    let w = World::new(load(STEPS, CHECKS, "on_failure: pause"));
    let r = w.at_ten_percent();
    let r = w
        .step(
            &r,
            results(ist(3, "16:11"), Verdict::Fail, false),
            ist(3, "16:11"),
        )
        .rollout;
    let tr = w.step(
        &r,
        results(ist(3, "16:21"), Verdict::Fail, false),
        ist(3, "16:21"),
    );
    assert_eq!(tr.rollout.state, State::Paused);
    assert_eq!(
        tr.rollout.paused.as_ref().unwrap().cause,
        PauseCause::OnFailure
    );
    assert!(applies(&tr).is_empty());
}

#[test]
fn rollback_from_half_or_more_in_session_needs_live_servers() {
    let steps = "  - set_weight: 60\n  - bake: {duration: 2d}\n  - set_weight: 100";
    let mut w = World::new(load(steps, CHECKS, ""));
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let r = w.step(&r, applied(v, 60), ist(3, "16:01")).rollout;
    w.live_up = false;
    let r = w
        .step(
            &r,
            results(ist(4, "10:01"), Verdict::Fail, true),
            ist(4, "10:01"),
        )
        .rollout;
    let tr = w.step(
        &r,
        results(ist(4, "10:11"), Verdict::Fail, true),
        ist(4, "10:11"),
    );
    assert_eq!(tr.rollout.state, State::Paused);
    assert_eq!(
        tr.rollout.paused.as_ref().unwrap().cause,
        PauseCause::LiveDown
    );
    assert!(applies(&tr).is_empty());
    assert!(tr.effects.iter().any(|e| matches!(
        e,
        Effect::Notify {
            kind: EventKind::LiveDown,
            ..
        }
    )));
}

#[test]
fn override_checks_needs_a_reason_and_lets_the_next_raise_through() {
    let steps = "  - set_weight: 10\n  - pause: {}\n  - set_weight: 100";
    let w = World::new(load(steps, CHECKS, ""));
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let r = w.step(&r, applied(v, 10), ist(3, "16:01")).rollout;
    assert_eq!(r.state, State::Paused);
    assert_eq!(
        r.waiting_for.as_deref(),
        Some("paused by spec: pause step 1")
    );
    let bare = Input::Resume {
        by: "asha".into(),
        override_checks: true,
        reason: None,
    };
    assert_eq!(
        w.try_step(&r, bare, ist(3, "17:00")).unwrap_err().code,
        "reason_required"
    );
    let plain = Input::Resume {
        by: "asha".into(),
        override_checks: false,
        reason: None,
    };
    let tr = w.step(&r, plain, ist(3, "17:00"));
    assert_eq!(tr.rollout.state, State::WaitingForChecks);
    let with = Input::Resume {
        by: "asha".into(),
        override_checks: true,
        reason: Some("metrics pipeline down".into()),
    };
    let tr = w.step(&r, with, ist(3, "17:00"));
    assert_eq!(tr.rollout.state, State::Applying);
    assert_eq!(tr.rollout.override_checks, None);
    assert!(
        tr.events
            .iter()
            .any(|e| e.why.contains("checks overridden"))
    );
}

// ---- drift ---------------------------------------------------------------

#[test]
fn drift_towards_less_pauses_and_is_not_raised_back() {
    let w = World::std();
    let r = w.at_ten_percent();
    let shares = [
        ("tcp:10.0.0.5:9999".to_string(), 0.0),
        ("unix:/run/h.sock".to_string(), 10.0),
    ];
    let tr = w.step(
        &r,
        Input::Observed {
            unreachable: Default::default(),
            shares: shares.into(),
        },
        ist(3, "17:00"),
    );
    assert_eq!(tr.rollout.state, State::Paused);
    assert_eq!(tr.rollout.confirmed, 0);
    assert_eq!(tr.rollout.step, 0);
    assert_eq!(
        tr.rollout.waiting_for.as_deref(),
        Some(
            "paused by muhurat: observed 0% on tcp:10.0.0.5:9999, confirmed 10% — manual change or reload?"
        )
    );
    // The other endpoint still carries 10%: brought down to the new 0%.
    assert_eq!(applies(&tr), vec![(0, None, false)]);
    // Ticks inside a window do not raise while paused.
    let tr2 = w.step(&tr.rollout, Input::Tick, ist(3, "18:00"));
    assert!(applies(&tr2).iter().all(|(s, d, _)| *s == 0 && d.is_none()));
    // After a resume, the raise waits for the decrease and then a window.
    let v = tr.rollout.write.as_ref().unwrap().version;
    let r = w.step(&tr.rollout, applied(v, 0), ist(3, "18:01")).rollout;
    let resume = Input::Resume {
        by: "asha".into(),
        override_checks: false,
        reason: None,
    };
    let tr = w.step(&r, resume, ist(4, "10:00"));
    assert_eq!(tr.rollout.state, State::WaitingForWindow);
    assert!(applies(&tr).is_empty());
}

#[test]
fn drift_towards_more_is_decreased_at_once() {
    let w = World::std();
    let r = w.at_ten_percent();
    let shares = [("unix:/run/h.sock".to_string(), 30.0)];
    let tr = w.step(
        &r,
        Input::Observed {
            unreachable: Default::default(),
            shares: shares.into(),
        },
        ist(4, "11:00"),
    );
    assert!(kinds(&tr).contains(&EventKind::DriftDetected));
    assert_eq!(applies(&tr), vec![(10, None, false)]);
    assert_eq!(tr.rollout.confirmed, 10);
}

#[test]
fn rounding_is_not_drift() {
    let w = World::std();
    let r = w.at_ten_percent();
    let shares = [
        ("unix:/run/h.sock".to_string(), 9.8),
        ("tcp:10.0.0.5:9999".to_string(), 10.2),
    ];
    let tr = w.step(
        &r,
        Input::Observed {
            unreachable: Default::default(),
            shares: shares.into(),
        },
        ist(4, "11:00"),
    );
    assert!(tr.events.is_empty());
    assert_eq!(tr.rollout.version, r.version);
}

// ---- abort, pause, success ----------------------------------------------

#[test]
fn abort_in_pending_ends_at_once() {
    let w = World::std();
    let r = w.new_rollout(ist(3, "10:00"));
    let abort = Input::Abort {
        by: "asha".into(),
        reason: "wrong build".into(),
    };
    let tr = w.step(&r, abort, ist(3, "10:01"));
    assert_eq!(tr.rollout.state, State::Aborted);
    assert!(applies(&tr).is_empty());
}

#[test]
fn abort_after_a_raise_drains_and_waits_for_zero() {
    let w = World::std();
    let r = w.at_ten_percent();
    let abort = Input::Abort {
        by: "asha".into(),
        reason: "wrong build".into(),
    };
    let tr = w.step(&r, abort, ist(4, "11:00"));
    assert_eq!(tr.rollout.state, State::RollingBack);
    assert_eq!(applies(&tr), vec![(0, None, true)]);
    // A reading of zero everywhere does not end it: only the abort's own
    // confirmed write does (0 read back twice and the canary drained).
    let shares = [
        ("unix:/run/h.sock".to_string(), 0.0),
        ("tcp:10.0.0.5:9999".to_string(), 0.0),
    ];
    let tr = w.step(
        &tr.rollout,
        Input::Observed {
            unreachable: Default::default(),
            shares: shares.into(),
        },
        ist(4, "11:01"),
    );
    assert_eq!(tr.rollout.state, State::RollingBack);
    let v = tr.rollout.write.as_ref().unwrap().version;
    let tr = w.step(&tr.rollout, applied(v, 0), ist(4, "11:01"));
    assert_eq!(tr.rollout.state, State::Aborted);
    assert_eq!(tr.rollout.confirmed, 0);
    let again = Input::Abort {
        by: "asha".into(),
        reason: "again".into(),
    };
    assert_eq!(
        w.try_step(&tr.rollout, again, ist(4, "11:02"))
            .unwrap_err()
            .code,
        "invalid_state"
    );
}

#[test]
fn pause_cancels_a_raise_in_flight() {
    let w = World::std();
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let p = Input::Pause {
        by: "asha".into(),
        reason: Some("wait".into()),
    };
    let tr = w.step(&r, p, ist(3, "16:00"));
    assert_eq!(tr.rollout.state, State::Paused);
    assert_eq!(tr.rollout.desired, 0);
    assert_eq!(applies(&tr), vec![(0, None, false)]);
    assert!(kinds(&tr).contains(&EventKind::RaiseCancelled));
}

#[test]
fn full_run_succeeds_and_swaps_pools() {
    let w = World::std();
    let r = awaiting_approval(&w);
    let hash = r.spec_hash.clone();
    // Approved at Fri 15:40; the window opens at 16:00.
    let tr = w.step(&r, approve("asha", 2, &hash), ist(4, "15:40"));
    assert_eq!(tr.rollout.state, State::WaitingForWindow);
    let tr = w.step(&tr.rollout, Input::Tick, ist(4, "16:00"));
    assert_eq!(applies(&tr), vec![(100, Some(ist(7, "08:30")), false)]);
    let v = tr.rollout.write.as_ref().unwrap().version;
    let tr = w.step(&tr.rollout, applied(v, 100), ist(4, "16:01"));
    assert_eq!(tr.rollout.state, State::Baking);
    assert_eq!(
        tr.rollout.waiting_for.as_deref(),
        Some("bake until Fri 17:01 IST")
    );
    let tr = w.step(&tr.rollout, Input::Tick, ist(4, "17:01"));
    assert_eq!(tr.rollout.state, State::Succeeded);
    assert!(tr.effects.contains(&Effect::SwapPools));
    assert_eq!(tr.rollout.confirmed, 100);
    assert_eq!(tr.rollout.step, 5);
}

#[test]
fn rollout_round_trips_through_json() {
    let w = World::std();
    let r = passes_friday(&w, w.at_ten_percent(), 2);
    let json = serde_json::to_string(&r).unwrap();
    let back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let input = results(ist(4, "09:11"), Verdict::Pass, true);
    let back: Input = serde_json::from_str(&serde_json::to_string(&input).unwrap()).unwrap();
    assert_eq!(back, input);
}

// ---- properties ----------------------------------------------------------

#[derive(Debug, Clone)]
enum Action {
    Tick,
    Check(Verdict, bool),
    ApplyOk,
    ApplyFail,
    ApplyStale,
    Observe(f64),
    Approve(usize),
    Pause,
    Resume(bool),
    Abort,
    Preflight,
    Freeze(bool),
}

fn action() -> impl Strategy<Value = Action> {
    let verdict = prop_oneof![
        4 => Just(Verdict::Pass),
        1 => Just(Verdict::Fail),
        1 => Just(Verdict::Inconclusive),
        1 => Just(Verdict::Error),
    ];
    // Abort is rare so that runs get far; `abort_always_reaches_zero`
    // covers it from every reachable state.
    prop_oneof![
        60 => Just(Action::Tick),
        80 => (verdict, any::<bool>()).prop_map(|(v, s)| Action::Check(v, s)),
        50 => Just(Action::ApplyOk),
        5 => Just(Action::ApplyFail),
        5 => Just(Action::ApplyStale),
        5 => prop_oneof![Just(0.0), Just(5.0), Just(10.0), Just(50.0), Just(100.0)]
            .prop_map(Action::Observe),
        30 => prop_oneof![1 => Just(0usize), 1 => Just(1), 4 => Just(2), 4 => Just(3)]
            .prop_map(Action::Approve),
        5 => Just(Action::Pause),
        20 => any::<bool>().prop_map(Action::Resume),
        1 => Just(Action::Abort),
        10 => Just(Action::Preflight),
        5 => any::<bool>().prop_map(Action::Freeze),
    ]
}

const PRINCIPALS: [&str; 4] = ["gitlab", "ci", "asha", "ravi"];

/// Resolve an abstract action against the current rollout.
fn input_for(a: &Action, r: &Rollout, now: DateTime<Utc>) -> Option<Input> {
    let write = r.write.as_ref();
    Some(match a {
        Action::Tick => Input::Tick,
        Action::Check(v, s) => results(now, *v, *s),
        Action::ApplyOk => {
            let w = write?;
            applied(w.version, w.share)
        }
        Action::ApplyFail => {
            let w = write?;
            Input::Applied {
                version: w.version,
                share: w.share,
                confirmed: false,
                detail: "x".into(),
                endpoints: Default::default(),
            }
        }
        Action::ApplyStale => applied(r.version + 7, 100),
        Action::Observe(v) => Input::Observed {
            unreachable: Default::default(),
            shares: [("unix:/run/h.sock".to_string(), *v)].into(),
        },
        Action::Approve(i) => Input::Approve {
            principal: PRINCIPALS[*i].into(),
            is_initiator: *i == 0,
            step: r.step,
            spec_hash: r.spec_hash.clone(),
            comment: None,
        },
        Action::Pause => Input::Pause {
            by: "asha".into(),
            reason: None,
        },
        Action::Resume(o) => Input::Resume {
            by: "asha".into(),
            override_checks: *o,
            reason: Some("ok".into()),
        },
        Action::Abort => Input::Abort {
            by: "asha".into(),
            reason: "stop".into(),
        },
        Action::Preflight => Input::PreflightPassed,
        Action::Freeze(_) => return None,
    })
}

type Run = Vec<(Input, DateTime<Utc>, bool, Result<Transition, Refusal>)>;

/// Run `actions` from a fresh rollout; every step is recorded with its
/// input, time, freeze flag and outcome.
fn run(w: &mut World, actions: &[(Action, u32)]) -> (Rollout, Run) {
    let mut now = ist(3, "10:00");
    let mut r = w.new_rollout(now);
    // Start past preflight so that runs get far; `Action::Preflight` later
    // is an ignored input.
    let first = w.try_step(&r, Input::PreflightPassed, now);
    r = first.as_ref().unwrap().rollout.clone();
    let mut out = vec![(Input::PreflightPassed, now, w.frozen, first)];
    for (a, minutes) in actions {
        now += TimeDelta::minutes(i64::from(*minutes));
        if let Action::Freeze(on) = a {
            w.frozen = *on;
            continue;
        }
        let Some(input) = input_for(a, &r, now) else {
            continue;
        };
        let res = w.try_step(&r, input.clone(), now);
        if let Ok(tr) = &res {
            r = tr.rollout.clone();
        }
        out.push((input, now, w.frozen, res));
    }
    (r, out)
}

fn first_set_weight(spec: &Spec) -> usize {
    spec.steps
        .iter()
        .position(|s| matches!(s, crate::spec::Step::SetWeight(_)))
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn invariants_hold(actions in prop::collection::vec((action(), 0u32..400), 1..80)) {
        let mut w = World::std();
        let (_, runs) = run(&mut w, &actions);
        let mut before = w.new_rollout(ist(3, "10:00"));
        let min_remaining = w.spec.windows.min_remaining;
        for (input, now, frozen, res) in &runs {
            let Ok(tr) = res else { continue };
            let after = &tr.rollout;
            // No raise decided outside a permitted window or with too little left.
            if tr.events.iter().any(|e| e.kind == EventKind::RaiseDecided) {
                let win = w.permitted.iter().find(|i| i.contains(*now));
                prop_assert!(win.is_some_and(|i| i.end - *now >= min_remaining), "raise at {now}");
                prop_assert!(!frozen);
                // Never on inconclusive data: after the first raise, every
                // check has min_passes and a latest pass, unless overridden.
                if before.step > first_set_weight(&w.spec) && before.override_checks.is_none()
                    && !matches!(input, Input::Resume { override_checks: true, .. })
                {
                    for st in after.checks.values() {
                        prop_assert!(st.passes >= 3 && st.last_counted == Some(Verdict::Pass), "{st:?}");
                    }
                }
            }
            // No raise written at or after its deadline, outside a window, or frozen.
            for e in &tr.effects {
                if let Effect::Apply { deadline: Some(d), share, .. } = e {
                    prop_assert!(*now < *d);
                    prop_assert!(!frozen);
                    prop_assert!(w.permitted.iter().any(|i| i.contains(*now) && i.end == *d));
                    prop_assert!(*share > after.confirmed);
                }
            }
            // The confirmed share only rises through a confirmed raise.
            if after.confirmed > before.confirmed {
                prop_assert!(tr.events.iter().any(|e| e.kind == EventKind::WeightConfirmed));
            }
            // A paused rollout (drift, a human…) is never raised without a resume.
            if before.state == State::Paused && !matches!(input, Input::Resume { .. }) {
                prop_assert!(!tr.events.iter().any(|e| e.kind == EventKind::RaiseDecided));
            }
            // The initiator's approval is never recorded.
            prop_assert!(after.approvals.iter().all(|a| a.principal != "gitlab" && a.principal != "ci"));
            // Terminal states stay put.
            if before.state.is_terminal() {
                prop_assert_eq!(after.state, before.state);
            }
            // Every versioned change is explained and bumps the version by one.
            if !tr.events.is_empty() {
                prop_assert_eq!(after.version, before.version + 1);
            } else {
                prop_assert_eq!(after.version, before.version);
            }
            before = after.clone();
        }
    }

    #[test]
    fn replay_reproduces_every_state(actions in prop::collection::vec((action(), 0u32..400), 1..60)) {
        let mut w = World::std();
        let (_, runs) = run(&mut w, &actions);
        // Fold the recorded inputs again, with the same context.
        let mut r = w.new_rollout(ist(3, "10:00"));
        for (input, now, frozen, res) in &runs {
            w.frozen = *frozen;
            let again = w.try_step(&r, input.clone(), *now);
            prop_assert_eq!(&again, res);
            if let Ok(tr) = again {
                r = tr.rollout;
            }
        }
    }

    #[test]
    fn abort_always_reaches_zero(actions in prop::collection::vec((action(), 0u32..400), 0..60)) {
        let mut w = World::std();
        w.frozen = false;
        let (r, _) = run(&mut w, &actions);
        prop_assume!(!r.state.is_terminal());
        let now = ist(3, "10:00") + TimeDelta::days(12);
        let abort = Input::Abort { by: "asha".into(), reason: "stop".into() };
        let tr = w.step(&r, abort, now);
        let mut r = tr.rollout.clone();
        if r.state == State::RollingBack {
            prop_assert_eq!(applies(&tr).last().copied(), Some((0, None, true)));
            let v = r.write.as_ref().unwrap().version;
            r = w.step(&r, applied(v, 0), now + TimeDelta::minutes(1)).rollout;
        }
        prop_assert_eq!(r.state, State::Aborted);
        prop_assert_eq!(r.confirmed, 0);
        prop_assert_eq!(r.desired, 0);
    }
}

// ---- regression tests for the safety-kernel review (docs/design.md) -------

/// Defect 4: a rollback was declared complete from a partial reading — the
/// shares of the endpoints that answered — while another endpoint was hung.
#[test]
fn rollback_is_not_complete_from_a_partial_reading() {
    let w = World::std();
    let r = w.at_ten_percent();
    let abort = Input::Abort {
        by: "asha".into(),
        reason: "wrong build".into(),
    };
    let tr = w.step(&r, abort, ist(4, "11:00"));
    let tr = w.step(
        &tr.rollout,
        Input::Observed {
            shares: [("unix:/run/h.sock".to_string(), 0.0)].into(),
            unreachable: [("tcp:10.0.0.5:9999".to_string(), "timed out".to_string())].into(),
        },
        ist(4, "11:01"),
    );
    assert_eq!(tr.rollout.state, State::RollingBack);
    // Its write failed on the hung endpoint: still rolling back, retried.
    let v = tr.rollout.write.as_ref().unwrap().version;
    let failed = Input::Applied {
        version: v,
        share: 0,
        confirmed: false,
        detail: "endpoint tcp:10.0.0.5:9999: timed out".into(),
        endpoints: Default::default(),
    };
    let tr = w.step(&tr.rollout, failed, ist(4, "11:01"));
    assert_eq!(tr.rollout.state, State::RollingBack);
    assert!(applies(&tr).is_empty(), "not before the retry interval");
    let tr = w.step(&tr.rollout, Input::Tick, ist(4, "11:01") + APPLY_RETRY);
    assert_eq!(
        applies(&tr),
        vec![(0, None, true)],
        "retried with the drain"
    );
    let tr = w.step(&tr.rollout, applied(v, 0), ist(4, "11:02"));
    assert_eq!(tr.rollout.state, State::Aborted);
}

/// Defect 8: `resume --override-checks` stayed armed after a later failing
/// check, so a later plain resume raised on the old override.
#[test]
fn check_override_is_voided_by_a_later_failing_check_or_pause() {
    let w = World::std();
    let mut r = w.at_ten_percent();
    r.override_checks = Some("no traffic on Sunday".into());
    let tr = w.step(
        &r,
        results(ist(4, "11:00"), Verdict::Fail, true),
        ist(4, "11:00"),
    );
    assert_eq!(tr.rollout.override_checks, None, "a failing check voids it");
    let mut r = w.at_ten_percent();
    r.override_checks = Some("no traffic on Sunday".into());
    let pause = Input::Pause {
        by: "asha".into(),
        reason: Some("looking".into()),
    };
    let tr = w.step(&r, pause, ist(4, "11:00"));
    assert_eq!(tr.rollout.override_checks, None, "a pause voids it");
}

/// Defect 15: replaying a journal twice counted the same evaluation twice.
#[test]
fn the_same_evaluation_instant_is_counted_once() {
    let w = World::std();
    let r = w.at_ten_percent();
    let at = ist(4, "11:00");
    let tr = w.step(&r, results(at, Verdict::Pass, true), at);
    let once: Vec<u32> = tr.rollout.checks.values().map(|c| c.passes).collect();
    let tr2 = w.step(&tr.rollout, results(at, Verdict::Pass, true), at);
    let twice: Vec<u32> = tr2.rollout.checks.values().map(|c| c.passes).collect();
    assert_eq!(once, twice);
    assert!(once.iter().all(|p| *p >= 1));
}

/// Defect 12: with a window open and the raise blocked, the next wake-up
/// was "now" — a pass every 50 ms.
#[test]
fn a_blocked_raise_in_an_open_window_backs_off() {
    let mut w = World::std();
    w.frozen = true;
    let r = w.new_rollout(ist(3, "16:00"));
    let tr = w.step(&r, Input::PreflightPassed, ist(3, "16:30"));
    assert_eq!(tr.rollout.state, State::WaitingForWindow);
    let wake = tr.effects.iter().find_map(|e| match e {
        Effect::WakeAt { at, .. } => Some(*at),
        _ => None,
    });
    assert!(
        wake.is_some_and(|at| at >= ist(3, "16:30") + RAISE_BLOCKED_RETRY),
        "{wake:?}"
    );
}

/// Found by the simulation: a raise that landed on one endpoint and not the
/// other was retried over an operator's later lowering of the first (the
/// engine had never confirmed it, so saw no drift).
#[test]
fn a_lowering_of_a_partly_landed_raise_pauses_instead_of_being_raised_back() {
    let w = World::std();
    let r = w.new_rollout(ist(3, "10:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "10:00")).rollout;
    let r = w.step(&r, Input::Tick, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let partial = Input::Applied {
        version: v,
        share: 10,
        confirmed: false,
        detail: "tcp:10.0.0.5:9999 refused".into(),
        endpoints: [("unix:/run/h.sock".to_string(), 10.0)].into(),
    };
    let r = w.step(&r, partial, ist(3, "16:01")).rollout;
    assert_eq!(r.write.as_ref().unwrap().landed["unix:/run/h.sock"], 10.0);
    // A person takes it back to 0 on that endpoint.
    let tr = w.step(
        &r,
        Input::Observed {
            shares: [("unix:/run/h.sock".to_string(), 0.0)].into(),
            unreachable: [("tcp:10.0.0.5:9999".to_string(), "refused".to_string())].into(),
        },
        ist(3, "16:02"),
    );
    assert_eq!(
        tr.rollout.state,
        State::Paused,
        "{:?}",
        tr.rollout.waiting_for
    );
    assert!(kinds(&tr).contains(&EventKind::DriftDetected));
    // The raise is gone; what is written now is a decrease (no deadline).
    assert!(applies(&tr).iter().all(|(s, d, _)| *s == 0 && d.is_none()));
}

// ---- notifications --------------------------------------------------------

/// The notices of a transition: (kind, text). Each must pair with an event
/// of its kind in the same transition (the outbox is keyed by event).
fn notices(tr: &Transition) -> Vec<(EventKind, String)> {
    let out: Vec<(EventKind, String)> = tr
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify { kind, text } => Some((*kind, text.clone())),
            _ => None,
        })
        .collect();
    for (k, text) in &out {
        assert!(
            kinds(tr).contains(k),
            "notice {k:?} ({text}) has no event of its kind: {:?}",
            kinds(tr)
        );
    }
    out
}

/// Runs a script of inputs, collecting every notice in order.
struct Script<'w> {
    w: &'w World,
    r: Rollout,
    sent: Vec<(EventKind, String)>,
}

impl Script<'_> {
    fn feed(&mut self, input: Input, now: DateTime<Utc>) {
        let tr = self.w.step(&self.r, input, now);
        self.sent.extend(notices(&tr));
        self.r = tr.rollout;
    }

    fn apply_current(&mut self, share: u32, now: DateTime<Utc>) {
        let v = self.r.write.as_ref().expect("a write in flight").version;
        self.feed(applied(v, share), now);
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.sent.iter().map(|(k, _)| *k).collect()
    }

    fn text(&self, k: EventKind) -> &str {
        &self.sent.iter().find(|(x, _)| *x == k).unwrap().1
    }
}

#[test]
fn each_notification_kind_is_emitted_once_across_a_scripted_run() {
    // Success path: accepted, awaiting approval, waiting for a window, an
    // expired raise, weight confirmed, paused and resumed during the bake,
    // succeeded — with many passes in between that must say nothing.
    let w = World::new(load(
        "  - approval: {min: 1}\n  - set_weight: 100\n  - bake: {duration: 1h}",
        "",
        "",
    ));
    let mut s = Script {
        w: &w,
        r: w.new_rollout(ist(3, "10:00")),
        sent: Vec::new(),
    };
    s.feed(Input::PreflightPassed, ist(3, "10:00"));
    s.feed(Input::Tick, ist(3, "10:10"));
    let hash = s.r.spec_hash.clone();
    s.feed(approve("alice", 0, &hash), ist(3, "10:30"));
    assert_eq!(s.r.state, State::WaitingForWindow);
    // The same wait across many passes and readings: announced once.
    for (k, hm) in ["11:00", "12:00", "13:00", "15:00", "15:59"]
        .iter()
        .enumerate()
    {
        s.feed(Input::Tick, ist(3, hm));
        let shares = [("unix:/run/h.sock".to_string(), 0.0)].into();
        s.feed(
            Input::Observed {
                shares,
                unreachable: Default::default(),
            },
            ist(3, hm) + TimeDelta::seconds(k as i64 + 1),
        );
    }
    s.feed(Input::Tick, ist(3, "16:00"));
    assert_eq!(s.r.state, State::Applying);
    // Never confirmed: expires at the window's end (Fri 08:30).
    s.feed(Input::Tick, ist(4, "08:30"));
    s.apply_current(0, ist(4, "08:31"));
    s.feed(Input::Tick, ist(4, "12:00"));
    s.feed(Input::Tick, ist(4, "16:00"));
    s.apply_current(100, ist(4, "16:01"));
    assert_eq!(s.r.state, State::Baking);
    s.feed(
        Input::Pause {
            by: "bob".into(),
            reason: Some("watching a dashboard".into()),
        },
        ist(4, "16:10"),
    );
    s.feed(
        Input::Resume {
            by: "bob".into(),
            override_checks: false,
            reason: None,
        },
        ist(4, "16:20"),
    );
    assert_eq!(s.r.state, State::Baking);
    s.feed(Input::Tick, ist(4, "16:40"));
    s.feed(Input::Tick, ist(4, "17:05"));
    assert_eq!(s.r.state, State::Succeeded);
    s.feed(Input::Tick, ist(4, "18:00"));
    assert_eq!(
        s.kinds(),
        vec![
            EventKind::PreflightPassed,
            EventKind::AwaitingApproval,
            EventKind::WaitingForWindow,
            EventKind::RaiseExpired,
            EventKind::WeightConfirmed,
            EventKind::Paused,
            EventKind::Resumed,
            EventKind::Succeeded,
        ],
        "{:#?}",
        s.sent
    );
    // Short, for a person: names the rollout, says what happened and what
    // comes next.
    for (_, text) in &s.sent {
        assert!(text.starts_with("p abc123: "), "{text}");
    }
    // The approval notice in the same transition is what comes next.
    assert_eq!(
        s.text(EventKind::PreflightPassed),
        "p abc123: accepted (started by ci, preflight passed)"
    );
    assert!(
        s.text(EventKind::AwaitingApproval)
            .contains("step 0 awaits approval (needs 1 more approval)"),
        "{}",
        s.text(EventKind::AwaitingApproval)
    );
    assert_eq!(
        s.text(EventKind::WaitingForWindow),
        "p abc123: waiting — window opens Thu 16:00 IST (0% → 100%)"
    );
    assert!(
        s.text(EventKind::RaiseExpired)
            .contains("back to 0%; the next window opens Fri 16:00 IST"),
        "{}",
        s.text(EventKind::RaiseExpired)
    );
    assert_eq!(
        s.text(EventKind::WeightConfirmed),
        "p abc123: 0% → 100% confirmed on every endpoint. Next: bake until Fri 17:01 IST"
    );
    assert_eq!(
        s.text(EventKind::Paused),
        "p abc123: paused by bob: watching a dashboard. Next: resume with `muhurat resume r1`"
    );
    assert_eq!(
        s.text(EventKind::Resumed),
        "p abc123: resumed by bob. Next: bake until Fri 17:01 IST"
    );
    assert!(
        s.text(EventKind::Succeeded)
            .starts_with("p abc123: every step done at 100%"),
        "{}",
        s.text(EventKind::Succeeded)
    );

    // Failure path: accepted inside a window (raised at once), weight
    // confirmed, a check failing at its limit, rolled back.
    let w = World::new(load(
        "  - set_weight: 10\n  - bake: {duration: 1h}\n  - set_weight: 100",
        CHECKS,
        "on_failure: rollback",
    ));
    let mut s = Script {
        w: &w,
        r: w.new_rollout(ist(3, "16:00")),
        sent: Vec::new(),
    };
    s.feed(Input::PreflightPassed, ist(3, "16:00"));
    s.apply_current(10, ist(3, "16:01"));
    s.feed(
        results(ist(3, "16:11"), Verdict::Fail, false),
        ist(3, "16:11"),
    );
    s.feed(
        results(ist(3, "16:21"), Verdict::Fail, false),
        ist(3, "16:21"),
    );
    assert_eq!(s.r.state, State::RollingBack);
    s.feed(Input::Tick, ist(3, "16:22"));
    s.apply_current(0, ist(3, "16:23"));
    assert_eq!(s.r.state, State::RolledBack);
    s.feed(
        results(ist(3, "16:31"), Verdict::Fail, false),
        ist(3, "16:31"),
    );
    assert_eq!(
        s.kinds(),
        vec![
            EventKind::PreflightPassed,
            EventKind::WeightConfirmed,
            EventKind::CheckFailed,
            EventKind::RolledBack,
        ],
        "{:#?}",
        s.sent
    );
    assert!(
        s.text(EventKind::PreflightPassed)
            .contains("accepted (started by ci, preflight passed). Next: applying 10%"),
        "{}",
        s.text(EventKind::PreflightPassed)
    );
    assert_eq!(
        s.text(EventKind::CheckFailed),
        "p abc123: check e failed 2 times in a row; rolling back to 0%. Next: rolling back to 0%, waiting for confirmation"
    );
    assert_eq!(
        s.text(EventKind::RolledBack),
        "p abc123: rolled back — check e failed 2 times in a row; canary at 0%"
    );
}

#[test]
fn a_wait_is_announced_once_and_the_next_steps_wait_again() {
    let w = World::std();
    let r = w.new_rollout(ist(3, "10:00"));
    let tr = w.step(&r, Input::PreflightPassed, ist(3, "10:00"));
    let first: Vec<EventKind> = notices(&tr).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        first,
        vec![EventKind::PreflightPassed, EventKind::WaitingForWindow]
    );
    assert!(kinds(&tr).contains(&EventKind::WaitingForWindow));
    let mut r = tr.rollout;
    for hm in ["11:00", "12:00", "13:00", "14:00", "15:00", "15:30"] {
        let tr = w.step(&r, Input::Tick, ist(3, hm));
        assert!(notices(&tr).is_empty(), "{hm}: {:?}", notices(&tr));
        assert!(!kinds(&tr).contains(&EventKind::WaitingForWindow));
        r = tr.rollout;
    }
    // 10% confirmed, baked through Friday, approved after the window has
    // closed: the next raise waits again, and says so once.
    let r = awaiting_approval(&w);
    let tr = w.step(&r, approve("alice", 2, &r.spec_hash), ist(4, "15:40"));
    assert_eq!(tr.rollout.state, State::WaitingForWindow);
    let n = notices(&tr);
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].0, EventKind::WaitingForWindow);
    assert_eq!(
        n[0].1,
        "p abc123: waiting — window opens Fri 16:00 IST (10% → 100%)"
    );
    let tr = w.step(&tr.rollout, Input::Tick, ist(4, "15:50"));
    assert!(notices(&tr).is_empty());
}

#[test]
fn waiting_for_checks_and_back_to_the_window_is_the_same_wait() {
    // Approved inside the window (Fri 16:05) after a failed evaluation:
    // waiting for checks, which is no new wait for a window.
    let w = World::std();
    let r = awaiting_approval(&w);
    let r = w
        .step(
            &r,
            results(ist(4, "15:35"), Verdict::Fail, false),
            ist(4, "15:35"),
        )
        .rollout;
    let tr = w.step(&r, approve("alice", 2, &r.spec_hash), ist(4, "16:05"));
    assert_eq!(
        tr.rollout.state,
        State::WaitingForChecks,
        "{:?}",
        tr.rollout.waiting_for
    );
    assert!(notices(&tr).is_empty(), "{:?}", notices(&tr));
    // The window closes (Mon 08:30) before the checks are ready: back to
    // waiting for the window at the same step — not a new wait.
    let tr = w.step(&tr.rollout, Input::Tick, ist(7, "08:31"));
    assert_eq!(
        tr.rollout.state,
        State::WaitingForWindow,
        "{:?}",
        tr.rollout.waiting_for
    );
    assert!(notices(&tr).is_empty(), "{:?}", notices(&tr));
}

#[test]
fn observed_of_a_finished_rollout_is_the_reading_that_confirmed_it_not_a_stale_one() {
    let w = World::new(load(
        "  - set_weight: 10\n  - bake: {duration: 1h}\n  - set_weight: 100",
        CHECKS,
        "on_failure: rollback",
    ));
    let eps = |v: f64| -> BTreeMap<String, f64> {
        [
            ("unix:/run/h.sock".to_string(), v),
            ("tcp:10.0.0.5:9999".to_string(), v),
        ]
        .into()
    };
    let r = w.new_rollout(ist(3, "16:00"));
    let r = w.step(&r, Input::PreflightPassed, ist(3, "16:00")).rollout;
    let v = r.write.as_ref().unwrap().version;
    let r = w.step(&r, applied(v, 10), ist(3, "16:01")).rollout;
    // The drift read at 10%, then a rollback.
    let r = w
        .step(
            &r,
            Input::Observed {
                shares: eps(10.0),
                unreachable: Default::default(),
            },
            ist(3, "16:05"),
        )
        .rollout;
    let r = w
        .step(
            &r,
            results(ist(3, "16:11"), Verdict::Fail, false),
            ist(3, "16:11"),
        )
        .rollout;
    let r = w
        .step(
            &r,
            results(ist(3, "16:21"), Verdict::Fail, false),
            ist(3, "16:21"),
        )
        .rollout;
    assert_eq!(r.state, State::RollingBack);
    let v = r.write.as_ref().unwrap().version;
    let r = w
        .step(
            &r,
            Input::Applied {
                version: v,
                share: 0,
                confirmed: true,
                detail: "ok".into(),
                endpoints: eps(0.0),
            },
            ist(3, "16:22"),
        )
        .rollout;
    assert_eq!(r.state, State::RolledBack);
    assert_eq!(r.observed, eps(0.0), "the stale 10% reading was kept");
}
