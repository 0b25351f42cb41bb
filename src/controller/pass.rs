//! The scheduler: one pass over every active rollout, and when the next
//! one is due.
//!
//! A pass measures the clock, reads the freeze and the pools once, then for
//! each rollout: re-runs a preflight left unfinished by a restart, reads the
//! target every `drift_interval` (feeding the reading to the engine when it
//! changed), evaluates the checks when `t₀ + k·interval` is due — checks
//! keep their own cadence, independent of `drift_interval` — and ticks the
//! engine when a timer is due or a write is outstanding. Anything recorded
//! as "told the engine" is recorded only after the engine's transition
//! committed, so a failed transition is retried rather than lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, TimeDelta, Utc};

use super::{ControlError, Controller, TargetView, calendars, ctl_err};
use crate::engine::{self, Effect, Input, Rollout, State};
use crate::spec::Spec;
use crate::store::{FreezeRecord, NewEvent, NewOutbox, PoolRecord, RolloutRecord, StoreError};

/// Counters of one pass, for the benchmark and the debug log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// The store did not answer: only decreases were made (journalled).
    pub degraded: bool,
    pub rollouts: usize,
    pub reads: usize,
    pub evaluations: usize,
    pub ticks: usize,
    pub errors: usize,
}

impl Controller {
    /// One pass over every active rollout: measure the clock, read targets,
    /// evaluate due checks, feed drift and ticks to the engine.
    pub async fn pass(self: &Arc<Self>) -> Result<PassReport, ControlError> {
        let now = self.now();
        let mut report = PassReport::default();
        self.measure_clock(now).await;
        self.server_warnings(now).await;
        let read = async {
            let active = self.store.active_for_pass().await?;
            // Read once per pass: the freeze and where every target's pools are.
            let freeze = self.store.freeze().await?;
            let pools: HashMap<String, PoolRecord> = self
                .store
                .pool_states()
                .await?
                .into_iter()
                .map(|p| (p.target.clone(), p))
                .collect();
            Ok::<_, StoreError>((active, freeze, pools))
        };
        let (active, freeze, pools) = match read.await {
            Ok(x) => {
                self.gauges.set_store_up(true);
                x
            }
            Err(e) => {
                // The store being down is reported as itself.
                self.lock_live().failing.clear();
                self.gauges.set_store_up(false);
                return Ok(self.pass_degraded(now, &e).await);
            }
        };
        self.frozen.store(freeze.on, Ordering::SeqCst);
        if let Err(e) = self.replay_journal().await {
            tracing::error!(error = %e, journal = %self.cfg.journal.display(), "Journal replay stopped; it is retried on the next pass.");
        }
        {
            let mut live = self.lock_live();
            live.cache = active.clone();
            live.pools_cache = pools.clone();
            live.degraded_done.clear();
        }
        let before = self.lock_live().failing.clone();
        let mut failing = std::collections::BTreeMap::new();
        for rec in &active {
            report.rollouts += 1;
            if let Err(e) = self.pass_one(rec, now, &freeze, &pools, &mut report).await {
                report.errors += 1;
                tracing::error!(rollout = %rec.id, error = %e, "Controller pass failed for this rollout.");
                let (since, passes) = before
                    .get(&rec.id)
                    .map_or((now, 1), |f| (f.since, f.passes.saturating_add(1)));
                failing.insert(
                    rec.id.clone(),
                    super::PassFailing {
                        since,
                        passes,
                        error: e.to_string(),
                    },
                );
            }
        }
        self.lock_live().failing = failing;
        // Targets without an active rollout: the idle pool is held at 0.
        let busy: std::collections::HashSet<&str> =
            active.iter().map(|r| r.target.as_str()).collect();
        for p in pools.values() {
            if !busy.contains(p.target.as_str()) {
                self.hold_idle(p, now).await;
            }
        }
        Ok(report)
    }

    /// PostgreSQL's clock every pass, where there is one (the kernel's
    /// state is read at every decision: [`Controller::clock_status`]).
    async fn measure_clock(&self, now: DateTime<Utc>) {
        if !self.cfg.measure_db_skew {
            return;
        }
        if let Ok(Some(db)) = self.store.db_now().await {
            let mut t = self.trust.lock().unwrap_or_else(|e| e.into_inner());
            t.db(now, now - db);
        }
    }

    async fn pass_one(
        self: &Arc<Self>,
        rec: &RolloutRecord,
        now: DateTime<Utc>,
        freeze: &FreezeRecord,
        pools: &HashMap<String, PoolRecord>,
        report: &mut PassReport,
    ) -> Result<(), ControlError> {
        let spec = match self.cached_spec(rec) {
            Some(s) => s,
            None => {
                let full = self
                    .store
                    .rollout(&rec.id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(rec.id.clone()))?;
                let s = self.spec_of(&full)?;
                if let Some(c) = self.lock_live().cache.iter_mut().find(|c| c.id == rec.id) {
                    c.spec_yaml = full.spec_yaml.clone();
                }
                s
            }
        };
        let r: Rollout = serde_json::from_str(&rec.data).map_err(|e| ctl_err(&rec.id, e))?;
        if r.state == State::Pending {
            // Accepted but its preflight never reported (a restart, or the
            // result could not be stored): run it again.
            let running = self.lock_live().preflights.contains(&rec.id);
            if !running {
                tracing::warn!(rollout = %rec.id, "Pending without a running preflight: running it again.");
                self.spawn_preflight(rec.id.clone(), spec.clone());
            }
            return Ok(());
        }
        let orientation = pools
            .get(&rec.target)
            .map(|p| self.orientation_stored(&spec, p))
            .transpose()
            .map_err(|e| ctl_err(&rec.id, e))?;
        let mut changed = false;
        // Drift: read the target every drift_interval.
        let stale = self
            .lock_live()
            .views
            .get(&rec.target)
            .is_none_or(|v| now - v.at >= self.cfg.drift_interval);
        if stale && let Some(o) = &orientation {
            let backend = self.traffic.backend(&spec.traffic, o);
            match backend.read().await {
                Ok(reading) => {
                    let shares = reading.shares();
                    let unreachable = reading.unreachable();
                    self.lock_live()
                        .views
                        .insert(rec.target.clone(), TargetView { at: now, reading });
                    report.reads += 1;
                    // The engine keeps `observed` as a live field (not
                    // versioned, so not always written back): compare with
                    // what this controller last reported instead, so an
                    // unchanged target costs no transaction.
                    let key = (shares.clone(), unreachable.clone());
                    let last = self.lock_live().observed_sent.get(&rec.id).cloned();
                    let fresh = last
                        .as_ref()
                        .map_or(shares != r.observed || unreachable != r.unreachable, |l| {
                            *l != key
                        });
                    if !shares.is_empty() && fresh {
                        self.input_with(
                            &rec.id,
                            Input::Observed {
                                shares,
                                unreachable,
                            },
                            None,
                            freeze,
                        )
                        .await?;
                        // Only once the engine has it: a failed transition
                        // sends the same reading again next pass.
                        self.lock_live().observed_sent.insert(rec.id.clone(), key);
                        changed = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(rollout = %rec.id, target = %rec.target, error = %e, "Cannot read the target.")
                }
            }
        }
        // Checks: evaluate when the next t0 + k·interval is due.
        if let Some(at) = self.due_evaluation(&spec, &r, now) {
            let results = self.evaluate(rec, &spec, at, orientation.as_ref()).await;
            report.evaluations += 1;
            self.input_with(&rec.id, Input::CheckResults { at, results }, None, freeze)
                .await?;
            // Only once the engine has the verdict (see above).
            self.lock_live().last_eval.insert(rec.id.clone(), at);
            changed = true;
        }
        // Ticks: timers, retries of unconfirmed writes, window openings. Most
        // ticks change nothing: try it on the snapshot first and only take
        // the row lock when the engine has something to record or do.
        let wake_due = rec.next_wake.is_none_or(|w| w <= now);
        if !changed
            && (wake_due || r.write.is_some())
            && self.tick_would_act(rec, &spec, &r, now, freeze)?
        {
            self.input_with(&rec.id, Input::Tick, None, freeze).await?;
            report.ticks += 1;
        }
        Ok(())
    }

    /// Does a Tick on this snapshot decide or write anything?
    fn tick_would_act(
        &self,
        rec: &RolloutRecord,
        spec: &Arc<Spec>,
        r: &Rollout,
        now: DateTime<Utc>,
        freeze: &FreezeRecord,
    ) -> Result<bool, ControlError> {
        let parts = self.ctx_parts(rec, spec.clone(), now, freeze)?;
        let t = engine::step(r, Input::Tick, now, &parts.ctx()).map_err(ControlError::Refused)?;
        let next_wake = next_wake_of(spec, &t, now);
        Ok(!t.events.is_empty()
            || t.effects
                .iter()
                .any(|e| !matches!(e, Effect::WakeAt { .. }))
            || next_wake != rec.next_wake)
    }

    /// The latest evaluation instant `t0 + k·interval ≤ now` not yet run.
    /// After a restart the last one run comes from the checks' `last_at`, so
    /// nothing is evaluated twice; missed instants are not backfilled.
    pub(super) fn due_evaluation(
        &self,
        spec: &Spec,
        r: &Rollout,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let a = spec.analysis.as_ref().filter(|a| !a.checks.is_empty())?;
        let t0 = r.t0?;
        let iv = a.interval.num_milliseconds().max(1);
        let k = (now - t0).num_milliseconds().div_euclid(iv);
        if k < 1 {
            return None;
        }
        let at = t0 + TimeDelta::milliseconds(k * iv);
        let stored = r.checks.values().filter_map(|c| c.last_at).max();
        let last = [self.lock_live().last_eval.get(&r.id).copied(), stored]
            .into_iter()
            .flatten()
            .max();
        last.is_none_or(|l| at > l).then_some(at)
    }

    /// Calendar coverage running out (docs/design.md §3: under 45 days) and an
    /// untrusted clock: logged at most once a day each. The clock warning is
    /// notified on the server's webhooks at most once a day; the coverage
    /// warning once per calendar version (not every pass, nor every day for
    /// 45 days) — a new version still short of coverage warns again.
    async fn server_warnings(&self, now: DateTime<Utc>) {
        let mut warnings = Vec::new();
        for (name, secs) in self.calendars.coverage_remaining(now) {
            if secs < calendars::COVERAGE_WARNING.num_seconds() {
                let days = secs.max(0) / 86_400;
                let (until, version) = self
                    .calendars
                    .get(&name)
                    .map(|c| (c.valid_until.to_string(), c.version.to_string()))
                    .unwrap_or_default();
                let text = format!(
                    "calendar {name}: coverage ends in {days} day(s), on {until}; after that nothing moves (fail closed) — publish the next calendar and reload"
                );
                warnings.push((
                    format!("calendar_coverage_low:{name}"),
                    "calendar_coverage_low",
                    text,
                    Some(format!("notified:calendar_coverage_low:{name}:{version}")),
                ));
            }
        }
        let clock = self.clock_status();
        if let (Some(code), Some(problem)) = (clock.code, &clock.problem) {
            warnings.push((code.to_string(), code, problem.clone(), None));
        }
        for (key, kind, text, notify_once) in warnings {
            // Logged once a day, not on every pass.
            let due = self
                .lock_live()
                .warned
                .get(&key)
                .is_none_or(|t| now - *t >= TimeDelta::days(1));
            if !due {
                continue;
            }
            self.lock_live().warned.insert(key, now);
            if kind.starts_with("clock") {
                tracing::error!(kind, "{text}");
            } else {
                tracing::warn!(kind, "{text}");
            }
            if self.cfg.server_notify.is_empty() {
                continue;
            }
            if let Some(once) = notify_once {
                if self.lock_live().warned.contains_key(&once) {
                    continue;
                }
                self.lock_live().warned.insert(once, now);
            }
            let ev = NewEvent {
                at: now,
                kind: kind.into(),
                why: text.clone(),
                input: "{}".into(),
                state: "server".into(),
                ..Default::default()
            };
            let Ok(seq) = self.store.append_event(&ev).await else {
                continue;
            };
            for secret in &self.cfg.server_notify {
                let o = NewOutbox {
                    channel: format!("webhook:{secret}"),
                    payload: serde_json::json!({"kind": kind, "text": text}).to_string(),
                    event: 0,
                };
                if let Err(e) = self.store.enqueue(seq, &o, now).await {
                    tracing::warn!(error = %e, "Server-wide notification not queued.");
                }
            }
        }
    }
}

/// When the rollout next needs the controller: its earliest timer or its
/// next check evaluation.
pub(super) fn next_wake_of(
    spec: &Spec,
    t: &engine::Transition,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let wake = t
        .effects
        .iter()
        .filter_map(|e| {
            if let Effect::WakeAt { at, .. } = e {
                Some(*at)
            } else {
                None
            }
        })
        .min();
    [wake, next_evaluation(spec, &t.rollout, now)]
        .into_iter()
        .flatten()
        .min()
}

/// The next check evaluation after `now` for a rollout (for `next_wake`).
/// It counts from the last evaluation *run* (the checks' `last_at`), not
/// from `now`: a transition that lands just after an evaluation fell due
/// (a person's pause, a Tick a few ms late) must not push the wake-up one
/// interval on — the due evaluation is then "now".
fn next_evaluation(spec: &Spec, r: &Rollout, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let a = spec.analysis.as_ref().filter(|a| !a.checks.is_empty())?;
    let t0 = r.t0?;
    if r.state.is_terminal() {
        return None;
    }
    let iv = a.interval.num_milliseconds().max(1);
    let last_run = r
        .checks
        .values()
        .filter_map(|c| c.last_at)
        .filter(|l| *l > t0)
        .max();
    let k = match last_run {
        Some(l) => (l - t0).num_milliseconds().div_euclid(iv) + 1,
        // Nothing run since this weight: the first is at t0 + interval, or
        // the latest one already due (the controller does not backfill).
        None => (now - t0).num_milliseconds().div_euclid(iv).max(1),
    };
    Some(t0 + TimeDelta::milliseconds(k.max(1) * iv))
}
