//! Store outages: what the controller does while the database does not
//! answer, and how it catches up (docs/design.md §8).
//!
//! No raise is made (the engine runs as if frozen). Due checks still run on
//! the last known state and pools (kept in memory from the last pass), and
//! a decision the engine takes — a rollback at `failure_limit` — is first
//! journalled to a local file (persist before acting), then executed
//! through the target's actuator like any other write, under a decrease
//! permit. An unconfirmed decrease is sent again on every degraded pass
//! until it is confirmed. When the store answers, the journal is replayed
//! through the normal transition path; the engine ignores an evaluation
//! instant it has already counted, so a replay interrupted by a crash and
//! run again counts nothing twice.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{ControlError, Controller, PassReport, ctl_err, journal};
use crate::engine::{self, Effect, Input, Rollout};
use crate::store::{FreezeRecord, PoolRecord, RolloutRecord, StoreError};

impl Controller {
    /// The store does not answer: no raise, but due checks still run on the
    /// last known state, and a decision to decrease (a rollback) is
    /// journalled locally, then executed. Replayed when the store returns.
    pub(super) async fn pass_degraded(
        self: &Arc<Self>,
        now: DateTime<Utc>,
        err: &StoreError,
    ) -> PassReport {
        tracing::error!(error = %err, journal = %self.cfg.journal.display(), "Store unreachable: no raise; failing checks still roll back, journalled locally.");
        let (cached, pools) = {
            let live = self.lock_live();
            (live.cache.clone(), live.pools_cache.clone())
        };
        let mut report = PassReport {
            degraded: true,
            ..PassReport::default()
        };
        for rec in cached {
            report.rollouts += 1;
            if let Err(e) = self.degraded_one(&rec, now, &pools, &mut report).await {
                report.errors += 1;
                tracing::error!(rollout = %rec.id, error = %e, "Degraded pass failed for this rollout.");
            }
        }
        report
    }

    async fn degraded_one(
        self: &Arc<Self>,
        rec: &RolloutRecord,
        now: DateTime<Utc>,
        pools: &HashMap<String, PoolRecord>,
        report: &mut PassReport,
    ) -> Result<(), ControlError> {
        let spec = self.spec_of(rec)?;
        let orientation = pools
            .get(&rec.target)
            .map(|p| self.orientation_stored(&spec, p))
            .transpose()
            .map_err(|e| ctl_err(&rec.id, e))?;
        let r: Rollout = serde_json::from_str(&rec.data).map_err(|e| ctl_err(&rec.id, e))?;
        // A decrease decided earlier in this outage and not yet confirmed:
        // send it again (the actuator drops it if already queued).
        if let (Some(w), Some(o)) = (&r.write, &orientation)
            && w.deadline.is_none()
            && !self
                .lock_live()
                .degraded_done
                .contains(&(rec.id.clone(), w.version))
        {
            let parts = self.ctx_parts(rec, spec.clone(), now, &outage_freeze(now))?;
            let t =
                engine::step(&r, Input::Tick, now, &parts.ctx()).map_err(ControlError::Refused)?;
            for e in t
                .effects
                .iter()
                .filter(|e| matches!(e, Effect::Apply { deadline: None, .. }))
            {
                self.enqueue_effect(rec, &spec, o, e, true);
            }
        }
        let Some(at) = self.due_evaluation(&spec, &r, now) else {
            return Ok(());
        };
        let results = self.evaluate(rec, &spec, at, orientation.as_ref()).await;
        report.evaluations += 1;
        self.lock_live().last_eval.insert(rec.id.clone(), at);
        let input = Input::CheckResults { at, results };
        // Treated as frozen: the engine cannot decide a raise.
        let parts = self.ctx_parts(rec, spec.clone(), now, &outage_freeze(now))?;
        let t =
            engine::step(&r, input.clone(), now, &parts.ctx()).map_err(ControlError::Refused)?;
        if t.events.is_empty() {
            return Ok(());
        }
        // Persist before acting: every input acted on is journalled, so the
        // replay reproduces the same decisions in the store.
        journal::Journal::new(&self.cfg.journal)
            .append(&journal::Entry {
                rollout_id: rec.id.clone(),
                at: now,
                input,
            })
            .map_err(|e| {
                ctl_err(
                    &rec.id,
                    format!(
                        "cannot write the journal {}: {e}",
                        self.cfg.journal.display()
                    ),
                )
            })?;
        {
            let mut live = self.lock_live();
            if let Some(c) = live.cache.iter_mut().find(|c| c.id == rec.id) {
                c.data = serde_json::to_string(&t.rollout).expect("a rollout serializes");
            }
        }
        for e in &t.events {
            tracing::warn!(rollout = %rec.id, why = %e.why, "{:?} (journalled; the store is unreachable)", e.kind);
        }
        if let Some(o) = &orientation {
            for e in t
                .effects
                .iter()
                .filter(|e| matches!(e, Effect::Apply { deadline: None, .. }))
            {
                self.enqueue_effect(rec, &spec, o, e, true);
            }
        }
        Ok(())
    }

    /// Persist what was journalled while the store was down, in order.
    pub(super) async fn replay_journal(self: &Arc<Self>) -> Result<(), ControlError> {
        let j = journal::Journal::new(&self.cfg.journal);
        let entries = j.entries().map_err(|e| ctl_err("journal", e))?;
        for (i, e) in entries.iter().enumerate() {
            tracing::info!(rollout = %e.rollout_id, journalled_at = %e.at, "Replaying a journalled decision.");
            if let Err(err) = self.input(&e.rollout_id, e.input.clone(), None).await {
                j.keep(&entries[i..]).map_err(|e| ctl_err("journal", e))?;
                return Err(err);
            }
        }
        if !entries.is_empty() {
            j.keep(&[]).map_err(|e| ctl_err("journal", e))?;
        }
        Ok(())
    }
}

/// The engine runs as if frozen while the store is down: no raise.
fn outage_freeze(now: DateTime<Utc>) -> FreezeRecord {
    FreezeRecord {
        on: true,
        reason: "store unreachable".into(),
        by: "muhurat".into(),
        since: now,
    }
}
