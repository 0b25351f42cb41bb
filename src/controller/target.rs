//! Target-level work: which pool is live, adopting a live pool, and holding
//! the idle pool at 0 while no rollout is active.
//!
//! Each decision is taken by a pure function of [`crate::engine::target`]
//! and written by the target's actuator under a decrease permit, so the gate
//! refuses any command of it that would move traffic towards the non-live
//! pool; each is recorded with its own event kind (`pools_adopted`,
//! `idle_pool_held`, `idle_pool_unexpected`) and reason.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::actuator::Work;
use super::{ControlError, Controller, TargetView};
use crate::engine::target::{self as decide, Hold, OrientationError, StoredPools};
use crate::spec::{Orientation, Spec};
use crate::store::{NewEvent, PoolRecord, StoreError};
use crate::traffic::TrafficError;

/// What `adopt` did.
#[derive(Debug, Clone)]
pub struct AdoptOutcome {
    pub target: String,
    pub live: String,
    pub idle: String,
    /// The other pool was written to 0 (else it was at 0 already).
    pub wrote: bool,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// Refused by the decision (would move traffic onto a pool, a hole in
    /// the reading, not a pool of the spec): nothing was written.
    #[error("{0}")]
    Refused(String),
    #[error("target {target} is busy: rollout {rollout} is active on it")]
    Busy { target: String, rollout: String },
    /// The write was not confirmed everywhere: the pools are unchanged.
    #[error("{0}")]
    Backend(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Controller {
    /// The orientation of a target with stored pools: the one function
    /// that decides it, which refuses names that are not the spec's.
    pub(super) fn orientation_stored(
        &self,
        spec: &Spec,
        p: &PoolRecord,
    ) -> Result<Orientation, OrientationError> {
        decide::orientation(
            spec,
            Some(StoredPools {
                live: &p.live,
                idle: &p.idle,
            }),
            None,
        )
    }

    /// Which pool of the spec's target is the canary: the stored pools, or
    /// — never rolled out — what the weights say now. The bool says whether
    /// it came from the store. The API's `pools`, `check-target` and
    /// `check-metrics` and `start` all ask this.
    pub async fn orientation_of(
        &self,
        spec: &Spec,
    ) -> Result<(Orientation, bool), OrientationError> {
        let target = spec.traffic.target_id();
        let stored = self.store.pool_state(&target).await.map_err(|e| {
            OrientationError::Unknown(format!("cannot read the pools of {target}: {e}"))
        })?;
        if let Some(p) = stored {
            return self.orientation_stored(spec, &p).map(|o| (o, true));
        }
        let [a, b] = spec.traffic.pools().clone();
        let probe = self
            .traffic
            .backend(&spec.traffic, &Orientation { canary: a, live: b });
        let reading = probe.read().await.map_err(|e| {
            OrientationError::Unknown(format!(
                "cannot read target {target} to find the live pool: {e}"
            ))
        })?;
        let shares = reading.shares();
        let unreachable = reading.unreachable();
        decide::orientation(spec, None, Some((&shares, &unreachable))).map(|o| (o, false))
    }

    /// `adopt FILE --live POOL`: decided by [`decide::adopt`], written by the
    /// target's actuator under a decrease permit, and recorded — pools and
    /// event in one transaction — only once confirmed everywhere.
    pub async fn adopt(
        self: &Arc<Self>,
        spec: &Spec,
        live: &str,
        principal: &str,
    ) -> Result<AdoptOutcome, AdoptError> {
        let target = spec.traffic.target_id();
        if let Some(r) = self.store.active_on_target(&target).await? {
            return Err(AdoptError::Busy {
                target,
                rollout: r.id,
            });
        }
        // Read with the named pool as live: the shares are the other's.
        let [a, b] = spec.traffic.pools().clone();
        let as_named = if live == b.name {
            Orientation { canary: a, live: b }
        } else {
            Orientation { canary: b, live: a }
        };
        let backend = self.traffic.backend(&spec.traffic, &as_named);
        let reading = backend.read().await.map_err(|e| {
            AdoptError::Refused(format!(
                "cannot read target {target}: {e}; nothing was written"
            ))
        })?;
        let record = self.store.pool_state(&target).await?;
        let stored = record.as_ref().map(|p| StoredPools {
            live: &p.live,
            idle: &p.idle,
        });
        let d = decide::adopt(
            spec,
            stored,
            live,
            &reading.shares(),
            &reading.unreachable(),
            principal,
        )
        .map_err(AdoptError::Refused)?;
        let mut detail = "no write needed".to_string();
        if d.write_zero {
            let backend = self.traffic.backend(&spec.traffic, &d.orientation);
            let rep = self
                .run_target_job(
                    &target,
                    "adopt",
                    Work::Apply { share: 0 },
                    backend,
                    self.decrease_permit(format!(
                        "adopt {} as live on {target}",
                        d.orientation.live.name
                    )),
                )
                .await
                .map_err(|e: TrafficError| {
                    AdoptError::Backend(format!(
                        "could not move traffic to {}: {e}; pools unchanged",
                        d.orientation.live.name
                    ))
                })?;
            if !rep.confirmed {
                return Err(AdoptError::Backend(format!(
                    "moving all traffic to {} was not confirmed on every endpoint: {}; pools unchanged",
                    d.orientation.live.name, rep.detail
                )));
            }
            detail = rep.detail;
        }
        let now = self.now();
        self.store
            .set_pool_state_with_event(
                &PoolRecord {
                    target: target.clone(),
                    live: d.orientation.live.name.clone(),
                    idle: d.orientation.canary.name.clone(),
                    updated_at: now,
                },
                &NewEvent {
                    at: now,
                    kind: "pools_adopted".into(),
                    principal: Some(principal.to_string()),
                    why: d.why.clone(),
                    input: json!({"command": "adopt", "target": target, "live": d.orientation.live.name}).to_string(),
                    state: "server".into(),
                    ..Default::default()
                },
            )
            .await?;
        tracing::info!(by = %principal, target = %target, live = %d.orientation.live.name, "Pools adopted.");
        self.poke();
        Ok(AdoptOutcome {
            target,
            live: d.orientation.live.name,
            idle: d.orientation.canary.name,
            wrote: d.write_zero,
            detail,
        })
    }

    /// The idle pool of a target with no active rollout stays at 0
    /// (docs/design.md §3 *Drift*), decided by [`decide::hold_idle`].
    pub(super) async fn hold_idle(self: &Arc<Self>, p: &PoolRecord, now: DateTime<Utc>) {
        // The target's spec: the one its latest rollout ran.
        let known = self.lock_live().target_spec.get(&p.target).cloned();
        let spec = match known {
            Some(s) => s,
            None => {
                let Ok(Some(rec)) = self.store.latest_on_target(&p.target).await else {
                    return;
                };
                let Ok(spec) = self.spec_of(&rec) else { return };
                self.lock_live()
                    .target_spec
                    .insert(p.target.clone(), spec.clone());
                spec
            }
        };
        let stale = self
            .lock_live()
            .views
            .get(&p.target)
            .is_none_or(|v| now - v.at >= self.cfg.drift_interval);
        if !stale {
            return;
        }
        let orientation = match self.orientation_stored(&spec, p) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(target = %p.target, error = %e, "Idle-pool hold skipped.");
                return;
            }
        };
        let backend = self.traffic.backend(&spec.traffic, &orientation);
        let Ok(reading) = backend.read().await else {
            return;
        };
        let shares = reading.shares();
        self.lock_live()
            .views
            .insert(p.target.clone(), TargetView { at: now, reading });
        let Some(decision) = decide::hold_idle(&p.target, &p.idle, &shares) else {
            return;
        };
        let (kind, why, write) = match decision {
            Hold::ToZero { why } => ("idle_pool_held", why, true),
            Hold::Alert { why } => ("idle_pool_unexpected", why, false),
        };
        // Once per reading that differs (not every pass while it persists).
        let key = format!("{kind}:{}:{shares:?}", p.target);
        let seen = self.lock_live().warned.contains_key(&key);
        if !seen {
            tracing::warn!(target = %p.target, "{why}");
            self.lock_live().warned.insert(key, now);
            let _ = self
                .store
                .append_event(&NewEvent {
                    at: now,
                    kind: kind.into(),
                    why: why.clone(),
                    input: json!({"trigger": "idle_hold", "shares": shares}).to_string(),
                    state: "idle".into(),
                    ..Default::default()
                })
                .await;
        }
        if !write {
            return;
        }
        self.enqueue_target_job(
            &p.target,
            "idle_hold",
            (p.live.clone(), p.idle.clone()),
            Work::Apply { share: 0 },
            backend,
            self.decrease_permit(format!("idle pool {} held at 0", p.idle)),
        );
    }
}

impl From<ControlError> for AdoptError {
    fn from(e: ControlError) -> Self {
        AdoptError::Backend(e.to_string())
    }
}
