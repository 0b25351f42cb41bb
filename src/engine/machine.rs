//! The transitions. `step` dispatches the input, then `settle` moves the
//! rollout through as many steps as `now` allows, then the live fields
//! (`waiting_for`, `next_window`) and the wake-up timer are derived, a new
//! wait is announced, and the notices become `Notify` effects that say what
//! comes next.

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::spec::{Evidence, OnFailure, Step};

/// Apply `input` to `r` at `now`.
pub fn step(
    r: &Rollout,
    input: Input,
    now: DateTime<Utc>,
    ctx: &Ctx,
) -> Result<Transition, Refusal> {
    let mut m = Machine {
        r: r.clone(),
        now,
        ctx,
        effects: Vec::new(),
        events: Vec::new(),
        notices: Vec::new(),
    };
    m.dispatch(input)?;
    m.settle();
    m.derive();
    m.announce_wait(r);
    let notices = m.notices();
    let mut effects = m.effects;
    let mut events = m.events;
    let mut next = m.r;
    if core(&next) != core(r) {
        effects.extend(notices);
        if events.is_empty() {
            events.push(Event {
                kind: EventKind::StateChanged,
                at: now,
                step: next.step,
                why: next
                    .waiting_for
                    .clone()
                    .unwrap_or_else(|| next.state.as_str().to_string()),
                calendar_version: Some(ctx.calendar_version.to_string()),
                policy_version: Some(ctx.policy_version.to_string()),
            });
        }
        next.version = r.version + 1;
        next.updated_at = now;
    } else {
        // Nothing the audit log cares about: no events, same version.
        events.clear();
        next.version = r.version;
        next.updated_at = r.updated_at;
    }
    if let Some(w) = wake_at(&next, now, ctx) {
        effects.push(w);
    }
    Ok(Transition {
        rollout: next,
        effects,
        events,
    })
}

/// The rollout without its live fields: what a version covers.
fn core(r: &Rollout) -> Rollout {
    let mut c = r.clone();
    c.observed.clear();
    c.unreachable.clear();
    c.next_window = None;
    c.waiting_for = None;
    c
}

/// Is `at` inside an unwidened session of one of the spec's segments?
pub fn in_session(spec: &Spec, cal: &Calendar, at: DateTime<Utc>) -> bool {
    spec.segments
        .iter()
        .any(|s| in_segment_session(cal, s, at).is_some())
}

/// The date of the session of `segment` that contains `at`, if any.
pub fn in_segment_session(cal: &Calendar, segment: &str, at: DateTime<Utc>) -> Option<NaiveDate> {
    let seg = cal.segment(segment)?;
    let d = date_of(cal, at);
    cal.sessions(seg, d - TimeDelta::days(1), d)
        .into_iter()
        .find(|s| s.interval.contains(at))
        .map(|s| s.date)
}

struct Machine<'a, 'c> {
    r: Rollout,
    now: DateTime<Utc>,
    ctx: &'a Ctx<'c>,
    effects: Vec<Effect>,
    events: Vec<Event>,
    /// Messages for people, by the event kind they belong to; turned into
    /// `Effect::Notify` once the transition is complete ([`Machine::notices`]),
    /// so each can say what comes next.
    notices: Vec<(EventKind, String)>,
}

impl Machine<'_, '_> {
    fn spec(&self) -> &Spec {
        self.ctx.spec
    }

    fn event(&mut self, kind: EventKind, why: impl Into<String>) {
        self.events.push(Event {
            kind,
            at: self.now,
            step: self.r.step,
            why: why.into(),
            calendar_version: Some(self.ctx.calendar_version.to_string()),
            policy_version: Some(self.ctx.policy_version.to_string()),
        });
    }

    /// Queue a message for people about this transition. Every notice
    /// pairs with an event of its kind in the same transition (the outbox
    /// is keyed by event), so each is delivered once.
    fn notify(&mut self, kind: EventKind, text: impl Into<String>) {
        self.notices.push((kind, text.into()));
    }

    /// Once per wait: an event and a notice when the rollout has just
    /// started waiting for a window or for an approval. "Just started" is
    /// decided against the rollout before this input, so a wait that lasts
    /// many passes announces itself once; the next step's wait (or the same
    /// step's after a pause) is a new wait. Moving between waiting for the
    /// window and waiting for checks at the same step is the same wait. A
    /// transition whose own notice already says it waits for the next window
    /// (an expired raise, drift) adds none.
    fn announce_wait(&mut self, before: &Rollout) {
        let same_step = before.step == self.r.step;
        let Some(waiting) = self.r.waiting_for.clone() else {
            return;
        };
        match self.r.state {
            State::WaitingForWindow => {
                let continuing = same_step
                    && matches!(
                        before.state,
                        State::WaitingForWindow | State::WaitingForChecks
                    );
                let said = self
                    .notices
                    .iter()
                    .any(|(k, _)| matches!(k, EventKind::RaiseExpired | EventKind::DriftDetected));
                if !continuing && !said {
                    self.event(EventKind::WaitingForWindow, waiting.clone());
                    self.notify(EventKind::WaitingForWindow, format!("waiting — {waiting}"));
                }
            }
            State::AwaitingApproval if !(same_step && before.state == State::AwaitingApproval) => {
                let step = self.r.step;
                self.event(
                    EventKind::AwaitingApproval,
                    format!("step {step} awaits approval: {waiting}"),
                );
                self.notify(
                    EventKind::AwaitingApproval,
                    format!(
                        "step {step} awaits approval ({waiting}); approve on the dashboard or with `muhurat approve {}`",
                        self.r.id
                    ),
                );
            }
            _ => {}
        }
    }

    /// The queued notices as effects, each naming the rollout (name,
    /// revision) and, unless the transition also announces a wait (which
    /// is itself what comes next), ending with what comes next.
    fn notices(&mut self) -> Vec<Effect> {
        let announces_wait = self
            .notices
            .iter()
            .any(|(k, _)| matches!(k, EventKind::WaitingForWindow | EventKind::AwaitingApproval));
        let next = match self.r.state {
            _ if announces_wait => None,
            State::Paused => Some(format!("resume with `muhurat resume {}`", self.r.id)),
            s if s.is_terminal() => None,
            _ => self.r.waiting_for.clone(),
        };
        std::mem::take(&mut self.notices)
            .into_iter()
            .map(|(kind, text)| {
                let mut text = format!("{} {}: {text}", self.r.name, self.r.revision);
                if let Some(n) = &next {
                    text.push_str(&format!(". Next: {n}"));
                }
                Effect::Notify { kind, text }
            })
            .collect()
    }

    fn tz(&self) -> chrono_tz::Tz {
        self.spec().windows.timezone
    }

    fn dispatch(&mut self, input: Input) -> Result<(), Refusal> {
        match input {
            Input::Approve {
                principal,
                is_initiator,
                step,
                spec_hash,
                comment,
            } => self.approve(principal, is_initiator, step, spec_hash, comment),
            Input::Pause { by, reason } => self.pause_cmd(by, reason),
            Input::Resume {
                by,
                override_checks,
                reason,
            } => self.resume(by, override_checks, reason),
            Input::Abort { by, reason } => self.abort(by, reason),
            Input::PreflightPassed => {
                if self.r.state == State::Pending {
                    self.event(EventKind::PreflightPassed, "preflight passed");
                    let by = self.r.initiator.name.clone();
                    self.notify(
                        EventKind::PreflightPassed,
                        format!("accepted (started by {by}, preflight passed)"),
                    );
                    // A placeholder: settle picks the real waiting state.
                    self.r.state = State::WaitingForWindow;
                }
                Ok(())
            }
            Input::PreflightFailed { reason } => {
                if self.r.state == State::Pending {
                    self.r.state = State::Failed;
                    self.event(EventKind::Failed, format!("preflight failed: {reason}"));
                    self.notify(EventKind::Failed, format!("preflight failed: {reason}"));
                }
                Ok(())
            }
            Input::Tick => {
                self.tick();
                Ok(())
            }
            Input::CheckResults { at, results } => {
                self.check_results(at, &results);
                Ok(())
            }
            Input::Applied {
                version,
                share,
                confirmed,
                detail,
                endpoints,
            } => {
                self.applied(version, share, confirmed, &detail, &endpoints);
                Ok(())
            }
            Input::Observed {
                shares,
                unreachable,
            } => {
                self.observed(shares, unreachable);
                Ok(())
            }
        }
    }

    // ---- commands -------------------------------------------------------

    fn approve(
        &mut self,
        principal: String,
        is_initiator: bool,
        step: usize,
        spec_hash: String,
        comment: Option<String>,
    ) -> Result<(), Refusal> {
        let sod = self.spec().approvals.separation_of_duties;
        let init = &self.r.initiator;
        if sod && (is_initiator || principal == init.principal || principal == init.name) {
            return Err(Refusal::new(
                "separation_of_duties",
                format!(
                    "{principal} started this rollout and cannot approve it (approvals.separation_of_duties)"
                ),
            ));
        }
        if self.r.state != State::AwaitingApproval
            || self.r.step != step
            || spec_hash != self.r.spec_hash
        {
            let at = if self.r.state == State::AwaitingApproval {
                format!("waiting for approval at step {}", self.r.step)
            } else {
                format!("{} at step {}", self.r.state.as_str(), self.r.step)
            };
            return Err(Refusal::new(
                "stale_approval",
                format!(
                    "approval of step {step} with spec {} does not match the rollout, which is {at} with spec {}",
                    short(&spec_hash),
                    short(&self.r.spec_hash)
                ),
            ));
        }
        if self
            .valid_approvals()
            .iter()
            .any(|a| a.principal == principal)
        {
            return Err(Refusal::new(
                "already_approved",
                format!("{principal} has already approved step {step}"),
            ));
        }
        self.r.approvals.push(Approval {
            principal: principal.clone(),
            step,
            spec_hash,
            at: self.now,
            comment,
            void: false,
        });
        let (have, need) = self.approval_count();
        self.event(
            EventKind::ApprovalRecorded,
            format!("{principal} approved step {step} ({have} of {need})"),
        );
        Ok(())
    }

    fn pause_cmd(&mut self, by: String, reason: Option<String>) -> Result<(), Refusal> {
        match self.r.state {
            State::WaitingForWindow
            | State::WaitingForChecks
            | State::Applying
            | State::Baking
            | State::AwaitingApproval => {}
            s => {
                return Err(Refusal::new(
                    "invalid_state",
                    format!("cannot pause a rollout that is {}", s.as_str()),
                ));
            }
        }
        let reason = reason.unwrap_or_else(|| "no reason given".into());
        self.pause(PauseCause::Human, &by, &reason);
        Ok(())
    }

    fn resume(
        &mut self,
        by: String,
        override_checks: bool,
        reason: Option<String>,
    ) -> Result<(), Refusal> {
        if self.r.state != State::Paused {
            return Err(Refusal::new(
                "invalid_state",
                format!("cannot resume a rollout that is {}", self.r.state.as_str()),
            ));
        }
        let reason = reason.filter(|s| !s.trim().is_empty());
        if override_checks && reason.is_none() {
            return Err(Refusal::new(
                "reason_required",
                "resume --override-checks needs --reason",
            ));
        }
        let paused = self.r.paused.take();
        let mut why = format!("resumed by {by}");
        if let Some(r) = &reason {
            why.push_str(&format!(": {r}"));
        }
        if override_checks {
            why.push_str(" (checks overridden for the next raise)");
            self.r.override_checks = reason.clone();
        }
        if paused.as_ref().is_some_and(|p| p.cause == PauseCause::Step) {
            why.push_str(&format!("; pause step {} done", self.r.step));
            self.r.step += 1;
        }
        if let Some(b) = &mut self.r.bake {
            b.since = b.since.max(self.now);
        }
        self.r.state = State::WaitingForWindow;
        self.event(EventKind::Resumed, why.clone());
        self.notify(EventKind::Resumed, why);
        Ok(())
    }

    fn abort(&mut self, by: String, reason: String) -> Result<(), Refusal> {
        if self.r.state.is_terminal() {
            return Err(Refusal::new(
                "invalid_state",
                format!("the rollout already ended {}", self.r.state.as_str()),
            ));
        }
        if reason.trim().is_empty() {
            return Err(Refusal::new("reason_required", "abort needs --reason"));
        }
        let why = format!("aborted by {by}: {reason}");
        self.event(EventKind::AbortRequested, why.clone());
        if self.r.state == State::Pending {
            self.r.state = State::Aborted;
            self.event(EventKind::Aborted, why.clone());
            self.notify(EventKind::Aborted, why);
            return Ok(());
        }
        self.decrease_to_zero(Purpose::Abort, why);
        Ok(())
    }

    // ---- triggers -------------------------------------------------------

    fn tick(&mut self) {
        if self.r.state.is_terminal() || self.r.state == State::Pending {
            return;
        }
        let Some(w) = self.r.write.clone() else {
            return;
        };
        // Not before the retry interval after the last failure (an attempt
        // still in flight is de-duplicated by the controller).
        let due = w.failed_at.is_none_or(|f| self.now >= f + APPLY_RETRY);
        match w.deadline {
            Some(deadline) if self.now >= deadline => self.expire_raise(&w),
            Some(_) => {
                if due && self.raise_gates().is_none() && self.window_containing(self.now).is_some()
                {
                    self.effects.push(self.apply_effect(&w));
                }
            }
            // Decreases are retried until confirmed.
            None => {
                if due {
                    self.effects.push(self.apply_effect(&w));
                }
            }
        }
    }

    /// The effect that executes write `w`: everything the actuator needs.
    fn apply_effect(&self, w: &Write) -> Effect {
        let shutdown_sessions = match &self.spec().traffic {
            crate::spec::Traffic::Haproxy {
                shutdown_sessions, ..
            } => *shutdown_sessions,
            crate::spec::Traffic::Consul { .. } => None,
        };
        Effect::Apply {
            purpose: w.purpose,
            share: w.share,
            deadline: w.deadline,
            drain_and_shutdown: w.drain_and_shutdown,
            shutdown_sessions,
            version: w.version,
        }
    }

    fn applied(
        &mut self,
        version: u64,
        share: u32,
        confirmed: bool,
        detail: &str,
        endpoints: &BTreeMap<String, f64>,
    ) {
        let Some(w) = self.r.write.clone() else {
            return;
        };
        if w.version != version || w.share != share || self.r.state.is_terminal() {
            return; // stale
        }
        if let Some(deadline) = w.deadline
            && self.now >= deadline
        {
            self.expire_raise(&w);
            return;
        }
        if !confirmed {
            let now = self.now;
            if let Some(w) = self.r.write.as_mut() {
                w.failures += 1;
                w.last_error = Some(detail.to_string());
                w.failed_at = Some(now);
                if w.purpose == Purpose::Raise {
                    for (ep, s) in endpoints {
                        let e = w.landed.entry(ep.clone()).or_insert(*s);
                        *e = e.max(*s);
                    }
                }
            }
            self.event(
                EventKind::ApplyFailed,
                format!("writing {share}% not confirmed: {detail}; retrying"),
            );
            return;
        }
        self.r.ever_written = true;
        self.r.write = None;
        // The read-back that confirmed this write is the newest reading of
        // every endpoint. Kept, so a rollout that ends on this write shows
        // it (a terminal rollout takes no further `Observed`), not the drift
        // read from before the write.
        if !endpoints.is_empty() {
            for ep in endpoints.keys() {
                self.r.unreachable.remove(ep);
            }
            self.r.observed = endpoints.clone();
        }
        match w.purpose {
            Purpose::Raise => {
                let from = self.r.confirmed;
                self.confirm(share);
                let why = format!("{from}% → {share}% confirmed on every endpoint");
                self.event(EventKind::WeightConfirmed, why.clone());
                self.notify(EventKind::WeightConfirmed, why);
                // The set_weight step is done.
                self.r.step += 1;
            }
            Purpose::Revert | Purpose::DriftCorrection => {
                self.r.desired = self.r.confirmed;
                self.event(
                    EventKind::DecreaseConfirmed,
                    format!("{share}% confirmed on every endpoint"),
                );
            }
            Purpose::Rollback | Purpose::Abort => self.finish_decrease(&w),
        }
    }

    fn observed(&mut self, shares: BTreeMap<String, f64>, unreachable: BTreeMap<String, String>) {
        if self.r.state.is_terminal() {
            return;
        }
        self.r.observed = shares;
        self.r.unreachable = unreachable;
        if self.r.observed.is_empty() {
            return;
        }
        // A rollback or abort completes only on its own confirmed write:
        // every endpoint read back at 0 with the canary drained (invariant
        // R). A reading alone says nothing about the drain, nor about an
        // endpoint that did not answer.
        if self.r.state == State::RollingBack {
            return;
        }
        // A raise in flight that had landed on an endpoint which now reads
        // lower: someone lowered it (a person, a reload) before the raise
        // was confirmed. Never send it there again: pause, like drift.
        let lowered = self.r.write.as_ref().and_then(|w| {
            w.landed.iter().find_map(|(ep, l)| {
                let v = *self.r.observed.get(ep)?;
                (v < l - DRIFT_TOLERANCE).then(|| (ep.clone(), v, *l, w.share))
            })
        });
        if let Some((endpoint, v, l, to)) = lowered {
            let why = format!(
                "observed {}% on {endpoint}, where the raise to {to}% had landed at {}% — manual change or reload?",
                fmt_share(v),
                fmt_share(l)
            );
            self.event(EventKind::DriftDetected, why.clone());
            self.notify(EventKind::DriftDetected, why.clone());
            self.void_override("drift");
            if self.r.state != State::Paused {
                // The pause cancels the raise; its revert is a decrease,
                // which the gate never lets raise an endpoint.
                self.pause(PauseCause::Drift, "muhurat", &why);
            }
            return;
        }
        let lo = match &self.r.write {
            Some(w) => self.r.confirmed.min(w.share),
            None => self.r.confirmed,
        };
        // Towards less: respected, never raised back.
        let low = self
            .r
            .observed
            .iter()
            .filter(|(_, v)| **v < f64::from(lo) - DRIFT_TOLERANCE)
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(e, v)| (e.clone(), *v));
        if let Some((endpoint, v)) = low {
            let was = self.r.confirmed;
            let now_at = (v.max(0.0).round() as u32).min(was);
            // Any write above the new confirmed share would raise it back.
            if let Some(w) = self.r.write.take_if(|w| w.share > now_at) {
                self.event(
                    EventKind::RaiseCancelled,
                    format!("write of {}% cancelled: drift", w.share),
                );
            }
            self.confirm(now_at);
            let back_to = self.step_after_drift();
            if back_to != self.r.step {
                self.r.step = back_to;
                self.r.bake = None;
            }
            let why = format!(
                "observed {}% on {endpoint}, confirmed {was}% — manual change or reload?",
                fmt_share(v)
            );
            self.event(EventKind::DriftDetected, why.clone());
            self.notify(EventKind::DriftDetected, why.clone());
            self.void_override("drift");
            if self.r.state != State::Paused {
                self.pause(PauseCause::Drift, "muhurat", &why);
            } else {
                self.void_approvals("drift");
            }
        }
        // Towards more: corrected at once. A decrease in flight is already
        // doing that (and Tick retries it).
        let hi = match &self.r.write {
            Some(w) if w.deadline.is_none() => return,
            Some(w) => self.r.confirmed.max(w.share),
            None => self.r.confirmed,
        };
        let high = self
            .r
            .observed
            .iter()
            .filter(|(_, v)| **v > f64::from(hi) + DRIFT_TOLERANCE)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(e, v)| (e.clone(), *v));
        if let Some((endpoint, v)) = high {
            let why = format!(
                "observed {}% on {endpoint}, above the {hi}% allowed — decreasing at once",
                fmt_share(v)
            );
            self.event(EventKind::DriftDetected, why.clone());
            self.notify(EventKind::DriftDetected, why.clone());
            self.void_approvals("drift");
            self.void_override("drift");
            if let Some(w) = self.r.write.take() {
                self.event(
                    EventKind::RaiseCancelled,
                    format!("raise to {}% cancelled: drift", w.share),
                );
            }
            let share = self.r.confirmed;
            self.r.desired = share;
            self.start_write(Purpose::DriftCorrection, share, None, false, why);
            if self.r.state == State::Applying {
                self.r.state = State::WaitingForWindow;
            }
        }
    }

    fn check_results(&mut self, at: DateTime<Utc>, results: &[CheckResult]) {
        let Some(analysis) = self.spec().analysis.clone() else {
            return;
        };
        if self.r.state.is_terminal() || matches!(self.r.state, State::Pending | State::RollingBack)
        {
            return;
        }
        let Some(t0) = self.r.t0 else {
            return;
        };
        let always = analysis.evidence == Evidence::Always;
        let bake_segment = match (self.r.bake.as_ref(), self.spec().steps.get(self.r.step)) {
            (Some(b), Some(Step::BakeSessions { segment, .. })) if b.step == self.r.step => {
                Some(segment.clone())
            }
            _ => None,
        };
        let bake_date = bake_segment
            .as_deref()
            .and_then(|s| in_segment_session(self.ctx.calendar, s, at));
        let mut summary = Vec::new();
        let mut failed_any = false;
        let mut over_failure = Vec::new();
        let mut over_inconclusive = Vec::new();
        for res in results {
            let Some(check) = analysis.checks.iter().find(|c| c.name == res.check) else {
                continue;
            };
            let counted = always || res.in_session;
            let since_t0 = at > t0;
            let st = self.r.checks.entry(check.name.clone()).or_default();
            // An evaluation instant already counted (a journal replayed
            // twice, a retried transition) is not counted again.
            if st.last_at.is_some_and(|l| at <= l) {
                continue;
            }
            st.last_at = Some(at);
            match res.verdict {
                Verdict::Pass => {
                    st.failure_streak = 0;
                    st.inconclusive_streak = 0;
                    if counted && since_t0 {
                        st.passes += 1;
                        st.last_counted = Some(Verdict::Pass);
                    }
                    if let (Some(d), true) = (bake_date, since_t0)
                        && let Some(b) = self.r.bake.as_mut()
                    {
                        b.passes.entry(d).or_default().insert(check.name.clone());
                    }
                }
                Verdict::Fail => {
                    // A fail is never benign: it counts in or out of session
                    // and blocks the next raise until a counted pass.
                    st.failure_streak += 1;
                    if since_t0 {
                        st.last_counted = Some(Verdict::Fail);
                    }
                    failed_any = true;
                    if st.failure_streak >= check.failure_limit {
                        over_failure.push((check.name.clone(), st.failure_streak));
                    }
                }
                Verdict::Inconclusive | Verdict::Error => {
                    if counted {
                        st.inconclusive_streak += 1;
                        if since_t0 {
                            st.last_counted = Some(Verdict::Inconclusive);
                        }
                        if st.inconclusive_streak >= analysis.inconclusive_limit {
                            over_inconclusive.push((check.name.clone(), st.inconclusive_streak));
                        }
                    }
                }
            }
            let verdict = match res.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "fail",
                Verdict::Inconclusive => "inconclusive",
                Verdict::Error => "error",
            };
            let place = if res.in_session { "" } else { " (off-session)" };
            summary.push(format!("{}: {verdict}{place}", check.name));
        }
        if summary.is_empty() {
            return;
        }
        self.event(EventKind::ChecksEvaluated, summary.join(", "));
        if failed_any {
            self.void_approvals("a check failed");
            self.void_override("a check failed");
        }
        if let Some((name, n)) = over_failure.first().cloned() {
            self.on_failure(&name, n);
        } else if let Some((name, n)) = over_inconclusive.first().cloned() {
            for st in self.r.checks.values_mut() {
                st.inconclusive_streak = 0;
            }
            let why =
                format!("check {name} was inconclusive {n} times in a row (inconclusive_limit)");
            self.event(EventKind::ChecksInconclusive, why.clone());
            if self.r.state != State::Paused {
                self.notify(EventKind::ChecksInconclusive, why.clone());
                self.pause(PauseCause::Inconclusive, "checks", &why);
            }
        }
    }

    // ---- shared transitions ------------------------------------------------

    fn on_failure(&mut self, check: &str, n: u32) {
        let why = format!("check {check} failed {n} times in a row");
        self.event(EventKind::CheckFailed, why.clone());
        match self.spec().on_failure {
            OnFailure::Pause => {
                for st in self.r.checks.values_mut() {
                    st.failure_streak = 0;
                }
                // Once: a rollout already paused is not told again each
                // time the streak comes round while it stays paused.
                if self.r.state != State::Paused {
                    self.notify(EventKind::CheckFailed, format!("{why}; pausing"));
                    self.pause(PauseCause::OnFailure, "checks", &why);
                }
            }
            OnFailure::Rollback => {
                let share = self.r.confirmed.max(self.r.desired);
                if share >= LIVE_CHECK_FROM_SHARE
                    && in_session(self.spec(), self.ctx.calendar, self.now)
                    && !self.ctx.live_up
                {
                    let why = format!(
                        "{why}, but the live pool has no UP server: not moving {share}% onto it during a session"
                    );
                    self.event(EventKind::LiveDown, why.clone());
                    self.notify(EventKind::LiveDown, why.clone());
                    if self.r.state != State::Paused {
                        self.pause(PauseCause::LiveDown, "checks", &why);
                    }
                    return;
                }
                self.notify(EventKind::CheckFailed, format!("{why}; rolling back to 0%"));
                self.event(
                    EventKind::RollbackStarted,
                    format!("{why}; rolling back to 0%"),
                );
                self.decrease_to_zero(Purpose::Rollback, why);
            }
        }
    }

    /// Rollback or abort: desired 0, drain, state `rolling_back` until
    /// confirmed — or at once when nothing ever reached the canary.
    fn decrease_to_zero(&mut self, purpose: Purpose, why: String) {
        if let Some(w) = &self.r.write
            && w.purpose == Purpose::Raise
        {
            let s = w.share;
            self.event(
                EventKind::RaiseCancelled,
                format!("raise to {s}% cancelled"),
            );
        }
        self.r.paused = None;
        self.r.desired = 0;
        // Even when this rollout never wrote anything, a reading of 0 may be
        // old (a canary raised by hand since, an endpoint down): the
        // rollback writes 0 and drains, and ends only on its own confirmed
        // write (invariant R). Harmless when the canary is at 0 already.
        self.start_write(purpose, 0, None, true, why);
        self.r.state = State::RollingBack;
    }

    fn finish_decrease(&mut self, w: &Write) {
        self.r.confirmed = 0;
        self.r.desired = 0;
        self.r.paused = None;
        let (state, kind) = match w.purpose {
            Purpose::Abort => (State::Aborted, EventKind::Aborted),
            _ => (State::RolledBack, EventKind::RolledBack),
        };
        self.r.state = state;
        let why = format!("{}; canary at 0%", w.why);
        self.event(kind, why.clone());
        let text = match kind {
            EventKind::RolledBack => format!("rolled back — {why}"),
            _ => why,
        };
        self.notify(kind, text);
    }

    fn start_write(
        &mut self,
        purpose: Purpose,
        share: u32,
        deadline: Option<DateTime<Utc>>,
        drain: bool,
        why: String,
    ) {
        let w = Write {
            purpose,
            share,
            version: self.r.version + 1,
            decided_at: self.now,
            deadline,
            drain_and_shutdown: drain,
            why,
            failures: 0,
            last_error: None,
            failed_at: None,
            landed: BTreeMap::new(),
        };
        self.effects.push(self.apply_effect(&w));
        self.r.write = Some(w);
    }

    /// A raise unconfirmed at its deadline: back to the last confirmed share.
    fn expire_raise(&mut self, w: &Write) {
        let back = self.r.confirmed;
        let deadline = w.deadline.map(|d| local(self.tz(), d)).unwrap_or_default();
        let next = crate::plan::first_raise_at(
            self.ctx.permitted,
            self.now,
            self.spec().windows.min_remaining,
        )
        .map_or_else(
            || "waiting for the next window".to_string(),
            |t| format!("the next window opens {}", local(self.tz(), t)),
        );
        let why = format!(
            "raise to {}% was not confirmed by its deadline {deadline}; back to {back}%; {next}",
            w.share
        );
        self.event(EventKind::RaiseExpired, why.clone());
        self.notify(EventKind::RaiseExpired, why.clone());
        self.r.desired = back;
        self.start_write(Purpose::Revert, back, None, false, why);
        if self.r.state == State::Applying {
            self.r.state = State::WaitingForWindow;
        }
    }

    fn confirm(&mut self, share: u32) {
        self.r.confirmed = share;
        self.r.desired = share;
        self.r.t0 = Some(self.now);
        for st in self.r.checks.values_mut() {
            st.passes = 0;
            st.last_counted = None;
        }
        if let Some(b) = &mut self.r.bake {
            b.since = b.since.max(self.now);
        }
    }

    fn pause(&mut self, cause: PauseCause, by: &str, reason: &str) {
        if self.r.state == State::Baking {
            self.bake_progress();
        }
        if let Some(w) = self.r.write.clone()
            && w.purpose == Purpose::Raise
        {
            let back = self.r.confirmed;
            self.event(
                EventKind::RaiseCancelled,
                format!(
                    "raise to {}% cancelled by the pause; back to {back}%",
                    w.share
                ),
            );
            self.r.desired = back;
            self.start_write(Purpose::Revert, back, None, false, "pause".into());
        }
        self.r.state = State::Paused;
        self.r.paused = Some(Paused {
            cause,
            by: by.to_string(),
            reason: reason.to_string(),
            at: self.now,
        });
        self.event(EventKind::Paused, format!("paused by {by}: {reason}"));
        // Automatic pauses are announced by the notice of their cause (a
        // failing check, drift, an inconclusive streak, a live pool down).
        if matches!(cause, PauseCause::Human | PauseCause::Step) {
            self.notify(EventKind::Paused, format!("paused by {by}: {reason}"));
        }
        if cause != PauseCause::Step {
            self.void_approvals("the rollout paused");
        }
        self.void_override("the rollout paused");
    }

    /// `resume --override-checks` applies to the next raise only, and only
    /// while nothing new went wrong: a later failing check, pause or drift
    /// voids it, so a later plain resume cannot raise on an old override.
    fn void_override(&mut self, why: &str) {
        if let Some(reason) = self.r.override_checks.take() {
            self.event(
                EventKind::StateChanged,
                format!("check override ({reason}) voided: {why}"),
            );
        }
    }

    fn void_approvals(&mut self, why: &str) {
        let step = self.r.step;
        let mut n = 0;
        for a in &mut self.r.approvals {
            if !a.void && a.step >= step {
                a.void = true;
                n += 1;
            }
        }
        if n > 0 {
            self.event(
                EventKind::ApprovalVoided,
                format!("{n} approval(s) of step {step} voided: {why}"),
            );
        }
    }

    // ---- steps --------------------------------------------------------

    /// Move through as many steps as `now` allows.
    fn settle(&mut self) {
        loop {
            if self.r.state.is_terminal()
                || matches!(
                    self.r.state,
                    State::Pending | State::Paused | State::RollingBack
                )
            {
                return;
            }
            if self
                .r
                .write
                .as_ref()
                .is_some_and(|w| w.purpose == Purpose::Raise)
            {
                self.r.state = State::Applying;
                return;
            }
            let Some(step) = self.spec().steps.get(self.r.step).cloned() else {
                self.r.state = State::Succeeded;
                let why = format!(
                    "every step done at {}%; the idle pool is now live",
                    self.r.confirmed
                );
                self.event(EventKind::Succeeded, why.clone());
                self.notify(EventKind::Succeeded, why);
                self.effects.push(Effect::SwapPools);
                return;
            };
            match step {
                Step::SetWeight(w) => {
                    if self.r.confirmed >= w {
                        self.r.step += 1;
                        continue;
                    }
                    self.set_weight(w);
                    return;
                }
                Step::BakeDuration(d) => {
                    let started = self.start_bake();
                    if self.now >= started + d {
                        self.finish_bake(started + d);
                        continue;
                    }
                    self.r.state = State::Baking;
                    return;
                }
                Step::BakeSessions { .. } => {
                    self.start_bake();
                    if self.bake_progress().is_some() {
                        continue;
                    }
                    self.r.state = State::Baking;
                    return;
                }
                Step::Approval { min } => {
                    let (have, _) = self.approval_count();
                    if have >= min {
                        let who: Vec<String> = self
                            .valid_approvals()
                            .iter()
                            .map(|a| a.principal.clone())
                            .collect();
                        self.event(
                            EventKind::StepApproved,
                            format!("step {} approved by {}", self.r.step, who.join(", ")),
                        );
                        self.r.step += 1;
                        continue;
                    }
                    self.r.state = State::AwaitingApproval;
                    return;
                }
                Step::Pause => {
                    self.pause(
                        PauseCause::Step,
                        "spec",
                        &format!("pause step {}", self.r.step),
                    );
                    return;
                }
            }
        }
    }

    /// After drift took the weight down, the first `set_weight` step above
    /// it (if earlier than the current step): the steps after a lost weight
    /// are not done, and a bake must not go on at the lower weight.
    fn step_after_drift(&self) -> usize {
        let confirmed = self.r.confirmed;
        self.spec()
            .steps
            .iter()
            .position(|s| matches!(s, Step::SetWeight(w) if *w > confirmed))
            .map_or(self.r.step, |i| i.min(self.r.step))
    }

    /// The permitted interval containing `t`, if any.
    fn window_containing(&self, t: DateTime<Utc>) -> Option<Interval> {
        self.ctx.permitted.iter().find(|w| w.contains(t)).copied()
    }

    /// Why no raise may be decided or written now, if so.
    fn raise_gates(&self) -> Option<String> {
        if self.ctx.frozen {
            Some("global freeze is on".into())
        } else if !self.ctx.clock_trusted {
            Some("the clock is not trusted (unsynchronised or skewed: see /readyz); no raise until it is".into())
        } else if !self.ctx.canary_up {
            Some("no canary server is UP".into())
        } else if !self.ctx.live_up {
            // HAProxy sends nothing to DOWN servers: with the live pool
            // down, any canary weight would carry all the traffic.
            Some("no live server is UP: a raise would send all traffic to the canary".into())
        } else {
            None
        }
    }

    fn is_first_raise(&self) -> bool {
        !self.spec().steps[..self.r.step]
            .iter()
            .any(|s| matches!(s, Step::SetWeight(_)))
    }

    /// (fewest counted passes over checks, every check's latest counted
    /// result is a pass with at least `min_passes`).
    fn checks_ready(&self) -> bool {
        let Some(a) = self.spec().analysis.as_ref() else {
            return true;
        };
        a.checks.iter().all(|c| {
            self.r
                .checks
                .get(&c.name)
                .is_some_and(|s| s.passes >= a.min_passes && s.last_counted == Some(Verdict::Pass))
        })
    }

    fn set_weight(&mut self, share: u32) {
        let min_remaining = self.spec().windows.min_remaining;
        let window = self
            .window_containing(self.now)
            .filter(|w| w.end - self.now >= min_remaining);
        // A decrease still in flight must be confirmed before any raise.
        let Some(window) =
            window.filter(|_| self.raise_gates().is_none() && self.r.write.is_none())
        else {
            self.r.state = State::WaitingForWindow;
            return;
        };
        if !self.is_first_raise()
            && self.spec().has_checks()
            && self.r.override_checks.is_none()
            && !self.checks_ready()
        {
            self.r.state = State::WaitingForChecks;
            return;
        }
        let mut why = format!(
            "{}% → {share}% inside the permitted window until {}",
            self.r.confirmed,
            local(self.tz(), window.end)
        );
        if let Some(reason) = self.r.override_checks.take()
            && !self.checks_ready()
        {
            why.push_str(&format!("; checks overridden: {reason}"));
        }
        self.r.desired = share;
        self.r.bake = None;
        self.event(EventKind::RaiseDecided, why.clone());
        self.start_write(Purpose::Raise, share, Some(window.end), false, why);
        self.r.state = State::Applying;
    }

    /// Start the bake of the current step if not started; its start.
    fn start_bake(&mut self) -> DateTime<Utc> {
        if let Some(b) = &self.r.bake
            && b.step == self.r.step
        {
            return b.started;
        }
        let since = self.r.t0.map_or(self.now, |t0| t0.max(self.now));
        self.r.bake = Some(Bake {
            step: self.r.step,
            started: self.now,
            since,
            counted: Vec::new(),
            judged_through: None,
            passes: BTreeMap::new(),
        });
        let what = match &self.spec().steps[self.r.step] {
            Step::BakeDuration(d) => format!("bake until {}", local(self.tz(), self.now + *d)),
            Step::BakeSessions { sessions, segment } => {
                format!("bake through {sessions} {segment} trading day(s)")
            }
            _ => "bake".into(),
        };
        self.event(EventKind::BakeStarted, what);
        self.now
    }

    fn finish_bake(&mut self, at: DateTime<Utc>) {
        self.event(
            EventKind::BakeCompleted,
            format!(
                "bake of step {} ended at {}",
                self.r.step,
                local(self.tz(), at)
            ),
        );
        self.r.bake = None;
        self.r.step += 1;
    }

    /// Judge the finished days of a `bake: {sessions}`; when the Nth is
    /// counted, finish the bake at its last close and return that instant.
    fn bake_progress(&mut self) -> Option<DateTime<Utc>> {
        let Some(Step::BakeSessions {
            sessions: n,
            segment,
        }) = self.spec().steps.get(self.r.step).cloned()
        else {
            return None;
        };
        let cal = self.ctx.calendar;
        let seg = cal.segment(&segment)?;
        let mut bake = self.r.bake.clone().filter(|b| b.step == self.r.step)?;
        let first = bake
            .judged_through
            .map_or(date_of(cal, bake.since) - TimeDelta::days(1), |d| {
                d + TimeDelta::days(1)
            });
        let last = date_of(cal, self.now);
        if first > last {
            return None;
        }
        let checks: Vec<String> = self
            .spec()
            .analysis
            .iter()
            .flat_map(|a| a.checks.iter().map(|c| c.name.clone()))
            .collect();
        let all = cal.sessions(seg, first, last);
        let mut done = None;
        let mut i = 0;
        while i < all.len() {
            let date = all[i].date;
            let mut j = i;
            while j < all.len() && all[j].date == date {
                j += 1;
            }
            // `all[i]` exists (i < len): the day's first open and last close.
            let (open, close) = all[i..j]
                .iter()
                .fold((all[i].interval.start, all[i].interval.end), |(o, c), s| {
                    (o.min(s.interval.start), c.max(s.interval.end))
                });
            i = j;
            if close > self.now {
                break;
            }
            bake.judged_through = Some(date);
            if open < bake.since {
                continue;
            }
            let passed = bake.passes.get(&date);
            let missing: Vec<&String> = checks
                .iter()
                .filter(|c| !passed.is_some_and(|p| p.contains(*c)))
                .collect();
            if missing.is_empty() {
                bake.counted.push(date);
                let k = bake.counted.len();
                self.event(
                    EventKind::BakeDayObserved,
                    format!(
                        "bake: {k} of {n} {segment} trading days observed ({})",
                        day(date)
                    ),
                );
                if k as u32 >= n {
                    done = Some(close);
                    break;
                }
            } else {
                let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                self.event(
                    EventKind::BakeDayNotCounted,
                    format!(
                        "{} not counted: no in-session pass of {}",
                        day(date),
                        names.join(", ")
                    ),
                );
            }
        }
        self.r.bake = Some(bake);
        if let Some(close) = done {
            self.finish_bake(close);
        }
        done
    }

    fn valid_approvals(&self) -> Vec<&Approval> {
        let max_age = self.spec().approvals.max_age;
        let mut seen = BTreeSet::new();
        self.r
            .approvals
            .iter()
            .filter(|a| {
                a.step == self.r.step
                    && !a.void
                    && a.spec_hash == self.r.spec_hash
                    && self.now < a.at + max_age
            })
            .filter(|a| seen.insert(a.principal.clone()))
            .collect()
    }

    /// (valid approvals of the current step, approvals it needs).
    fn approval_count(&self) -> (u32, u32) {
        let need = match self.spec().steps.get(self.r.step) {
            Some(Step::Approval { min }) => *min,
            _ => 0,
        };
        (self.valid_approvals().len() as u32, need)
    }

    // ---- live fields --------------------------------------------------------

    fn derive(&mut self) {
        let min_remaining = self.spec().windows.min_remaining;
        self.r.next_window = match self.r.state {
            State::WaitingForWindow => {
                crate::plan::first_raise_at(self.ctx.permitted, self.now, min_remaining)
            }
            _ => None,
        };
        self.r.waiting_for = self.describe();
    }

    fn describe(&self) -> Option<String> {
        let tz = self.tz();
        let r = &self.r;
        let next_share = match self.spec().steps.get(r.step) {
            Some(Step::SetWeight(w)) => *w,
            _ => r.desired,
        };
        Some(match r.state {
            State::Pending => "preflight checks running".into(),
            State::WaitingForWindow => {
                if let Some(g) = self.raise_gates() {
                    format!("{g} ({}% → {next_share}%)", r.confirmed)
                } else if let Some(w) = r.write.as_ref().filter(|w| w.deadline.is_none()) {
                    format!("waiting for the decrease to {}% to be confirmed", w.share)
                } else {
                    match r.next_window {
                        Some(t) if t <= self.now => format!("raise to {next_share}% due now"),
                        Some(t) => format!(
                            "window opens {} ({}% → {next_share}%)",
                            local(tz, t),
                            r.confirmed
                        ),
                        None => crate::windows::no_window_before_coverage_end(
                            self.ctx.calendar,
                            self.now,
                        )
                        .unwrap_or_else(|| {
                            "no permitted window in sight (calendar coverage, freeze or deny rules)"
                                .into()
                        }),
                    }
                }
            }
            State::WaitingForChecks => {
                let a = self.spec().analysis.as_ref()?;
                let label = match a.evidence {
                    Evidence::Sessions => "in-session passes",
                    Evidence::Always => "passes",
                };
                let fewest = a
                    .checks
                    .iter()
                    .map(|c| r.checks.get(&c.name).map_or(0, |s| s.passes))
                    .min()
                    .unwrap_or(0);
                let not_pass = a.checks.iter().find(|c| {
                    r.checks
                        .get(&c.name)
                        .and_then(|s| s.last_counted)
                        .is_some_and(|v| v != Verdict::Pass)
                });
                match not_pass {
                    Some(c) if fewest >= a.min_passes => format!(
                        "waiting for checks: the latest result of {} was not a pass",
                        c.name
                    ),
                    _ => format!(
                        "waiting for checks: {} of {} {label}",
                        fewest.min(a.min_passes),
                        a.min_passes
                    ),
                }
            }
            State::Applying => match &r.write {
                Some(w) => match w.deadline {
                    Some(d) => format!("applying {}% (deadline {})", w.share, local(tz, d)),
                    None => format!("applying {}%", w.share),
                },
                None => "applying".into(),
            },
            State::Baking => match (self.spec().steps.get(r.step), &r.bake) {
                (Some(Step::BakeDuration(d)), Some(b)) => {
                    format!("bake until {}", local(tz, b.started + *d))
                }
                (Some(Step::BakeSessions { sessions, segment }), Some(b)) => format!(
                    "bake: {} of {sessions} {segment} trading days observed",
                    b.counted.len()
                ),
                _ => "baking".into(),
            },
            State::AwaitingApproval => {
                let (have, need) = self.approval_count();
                let more = need.saturating_sub(have);
                let s = if more == 1 { "" } else { "s" };
                format!("needs {more} more approval{s}")
            }
            State::Paused => match &r.paused {
                Some(p) => format!("paused by {}: {}", p.by, p.reason),
                None => "paused".into(),
            },
            State::RollingBack => match r.write.as_ref().and_then(|w| w.last_error.as_deref()) {
                // Why it is not done yet (a hung endpoint, a Consul target
                // without `verify`): what the person at the console needs.
                Some(e) => format!(
                    "rolling back to 0%, not confirmed yet (retried): {}",
                    excerpt(e, 300)
                ),
                None => "rolling back to 0%, waiting for confirmation".into(),
            },
            State::RolledBack | State::Aborted | State::Succeeded | State::Failed => return None,
        })
    }
}

/// The next instant the rollout needs a Tick, as an effect.
fn wake_at(r: &Rollout, now: DateTime<Utc>, ctx: &Ctx) -> Option<Effect> {
    if r.state.is_terminal() || r.state == State::Pending {
        return None;
    }
    let mut at: Vec<(DateTime<Utc>, &str)> = Vec::new();
    if let Some(w) = &r.write {
        let retry = w.failed_at.map_or(now + APPLY_RETRY, |f| {
            (f + APPLY_RETRY).max(now + TimeDelta::milliseconds(100))
        });
        match w.deadline {
            Some(d) => at.push((d.min(retry), "raise_deadline_or_retry")),
            None => at.push((retry, "retry_decrease")),
        }
    }
    match r.state {
        State::WaitingForWindow | State::WaitingForChecks => {
            if let Some(t) = r.next_window {
                // A window already open but a raise blocked by the freeze,
                // the clock or a DOWN canary: look again after a back-off,
                // not at once (that would spin).
                let blocked = ctx.frozen || !ctx.clock_trusted || !ctx.canary_up;
                let t = if t <= now && blocked {
                    now + RAISE_BLOCKED_RETRY
                } else {
                    t.max(now)
                };
                at.push((t, "window_opens"));
            }
        }
        State::Baking => match (ctx.spec.steps.get(r.step), &r.bake) {
            (Some(Step::BakeDuration(d)), Some(b)) => at.push((b.started + *d, "bake_ends")),
            (Some(Step::BakeSessions { segment, .. }), Some(_)) => {
                if let Some(t) = next_close(ctx.calendar, segment, now) {
                    at.push((t, "session_closes"));
                }
            }
            _ => {}
        },
        _ => {}
    }
    at.into_iter()
        .min_by_key(|(t, _)| *t)
        .map(|(at, token)| Effect::WakeAt {
            at,
            token: token.to_string(),
        })
}

/// The last close of `segment` on the first day whose sessions end after
/// `now`, within the next month.
fn next_close(cal: &Calendar, segment: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let seg = cal.segment(segment)?;
    let d = date_of(cal, now);
    let all = cal.sessions(seg, d - TimeDelta::days(1), d + TimeDelta::days(31));
    let date = all.iter().find(|s| s.interval.end > now)?.date;
    all.iter()
        .filter(|s| s.date == date)
        .map(|s| s.interval.end)
        .max()
}

/// At most `n` characters of `s` (char-safe), with an ellipsis when cut.
fn excerpt(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The first 12 characters of a hash for a message (char-safe: the hash
/// may come from a client and need not be hex).
fn short(hash: &str) -> &str {
    match hash.char_indices().nth(12) {
        Some((i, _)) => &hash[..i],
        None => hash,
    }
}

fn fmt_share(v: f64) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}
