//! Starting a rollout: validate, record the pools, create it in `pending`,
//! then run preflight (docs/design.md §3 *Rollout*).
//!
//! The orientation of a target's first rollout is decided by the one
//! function that decides it everywhere ([`crate::engine::target::orientation`]),
//! from the weights read now; stored pool names that are not the spec's are
//! refused (`needs_adopt`) rather than guessed. Preflight runs after the
//! answer; one that a restart interrupted is run again by the next pass.

use std::sync::Arc;

use super::actuator::Work;
use super::{ControlError, Controller, TargetView, new_id};
use crate::engine::{Initiator, Input, Rollout};
use crate::spec::{self, CalendarLookup, Spec};
use crate::store::{NewEvent, PoolRecord, RolloutRecord, StoreError};

/// A request to start a rollout.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub spec_yaml: String,
    pub revision: String,
    pub initiator: String,
    pub principal: String,
}

#[derive(Debug)]
pub enum StartOutcome {
    /// A new rollout in `pending`.
    Created(RolloutRecord),
    /// The same spec name, revision and hash is already active: a retried CI
    /// job gets that rollout back.
    Existing(RolloutRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid spec:\n{}", .0.join("\n"))]
    InvalidSpec(Vec<String>),
    #[error("target {target} is busy: rollout {rollout} is active on it")]
    TargetBusy { target: String, rollout: String },
    #[error("{0}")]
    NeedsAdopt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Controller {
    /// Validate, create in `pending` and run preflight (docs/design.md §3 *Rollout*).
    pub async fn start(self: &Arc<Self>, req: StartRequest) -> Result<StartOutcome, StartError> {
        let now = self.now();
        let calendars = self.calendars.clone();
        let loaded = spec::load("spec", &req.spec_yaml, |name| {
            calendars.get(name).map(|c| (*c).clone()).ok_or_else(|| {
                CalendarLookup::NotFound(format!(
                    "the server has no calendar `{name}` (loaded: {})",
                    calendars.names().join(", ")
                ))
            })
        })
        .map_err(|d| StartError::InvalidSpec(d.iter().map(ToString::to_string).collect()))?;
        let spec = loaded.spec;
        let target = spec.traffic.target_id();
        let hash = spec.hash();
        if let Some(active) = self.store.active_on_target(&target).await? {
            if active.name == spec.name
                && active.revision == req.revision
                && active.spec_hash == hash
            {
                return Ok(StartOutcome::Existing(active));
            }
            return Err(StartError::TargetBusy {
                target,
                rollout: active.id,
            });
        }
        // The stored orientation (whose names must be the spec's), or — the
        // target's first rollout — the pool carrying all traffic is live.
        let (orientation, stored) = self
            .orientation_of(&spec)
            .await
            .map_err(|e| StartError::NeedsAdopt(e.to_string()))?;
        if !stored {
            self.store
                .set_pool_state(&PoolRecord {
                    target: target.clone(),
                    live: orientation.live.name.clone(),
                    idle: orientation.canary.name.clone(),
                    updated_at: now,
                })
                .await?;
        }
        let id = new_id(&spec.name, now);
        let (rollout, ev) = Rollout::new(
            &id,
            &spec,
            &req.revision,
            Initiator {
                name: req.initiator.clone(),
                principal: req.principal.clone(),
            },
            now,
        );
        let cal = &loaded.calendar;
        let rec = RolloutRecord {
            id: id.clone(),
            name: spec.name.clone(),
            target: target.clone(),
            revision: req.revision.clone(),
            initiator: req.initiator.clone(),
            principal: req.principal.clone(),
            spec_yaml: req.spec_yaml.clone(),
            spec_hash: hash,
            state: rollout.state.as_str().to_string(),
            active: true,
            version: 1,
            data: serde_json::to_string(&rollout).expect("a rollout serializes"),
            next_wake: None,
            created_at: now,
            updated_at: now,
        };
        let first = NewEvent {
            rollout_id: Some(id.clone()),
            at: now,
            kind: "created".into(),
            principal: Some(req.principal.clone()),
            why: ev.why.clone(),
            input: serde_json::json!({"command": "start", "revision": req.revision, "initiator": req.initiator, "canary_pool": orientation.canary.name}).to_string(),
            state: rollout.state.as_str().into(),
            version: 1,
            snapshot: Some(rec.data.clone()),
            calendar: Some(cal.name.clone()),
            calendar_version: Some(cal.version.to_string()),
            policy_version: Some(self.cfg.policy_version.clone()),
            clock_skew_ms: self.clock_skew().map(|d| d.num_milliseconds()),
        };
        match self.store.insert_rollout(&rec, &first).await {
            Ok(_) => {}
            Err(StoreError::TargetBusy { target, rollout }) => {
                return Err(StartError::TargetBusy { target, rollout });
            }
            Err(e) => return Err(e.into()),
        }
        self.gauges.load([(id.clone(), rec.state.clone())]);
        tracing::info!(rollout = %id, spec = %spec.name, revision = %req.revision, "Rollout accepted.");
        self.spawn_preflight(id, Arc::new(spec));
        Ok(StartOutcome::Created(rec))
    }

    /// Run preflight for a `pending` rollout in the background: prepare the
    /// canary servers (through the actuator, gated), check the target, read
    /// it, and record the result. At most one per rollout at a time.
    pub(super) fn spawn_preflight(self: &Arc<Self>, id: String, spec: Arc<Spec>) {
        if !self.lock_live().preflights.insert(id.clone()) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let res = me.preflight(&id, &spec).await;
            me.lock_live().preflights.remove(&id);
            if let Err(e) = res {
                tracing::error!(rollout = %id, error = %e, "Preflight result could not be recorded; the next pass runs it again.");
            }
            me.poke();
        });
    }

    async fn preflight(self: &Arc<Self>, id: &str, spec: &Spec) -> Result<(), ControlError> {
        let target = spec.traffic.target_id();
        let orientation = match self.orientation_of(spec).await {
            Ok((o, _)) => o,
            Err(e) => {
                self.input(
                    id,
                    Input::PreflightFailed {
                        reason: e.to_string(),
                    },
                    None,
                )
                .await?;
                return Ok(());
            }
        };
        let backend = self.traffic.backend(&spec.traffic, &orientation);
        let prepared = self
            .run_target_job(
                &target,
                "prepare",
                Work::Prepare,
                backend.clone(),
                self.decrease_permit(format!(
                    "prepare {id}: drained canary servers back to ready at weight 0"
                )),
            )
            .await;
        let input = match prepared {
            Err(e) => Input::PreflightFailed {
                reason: e.to_string(),
            },
            Ok(_) => match backend.preflight().await {
                Ok(issues) if issues.is_empty() => Input::PreflightPassed,
                Ok(issues) => Input::PreflightFailed {
                    reason: issues
                        .iter()
                        .map(|i| format!("endpoint {}: {}", i.endpoint, i.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                },
                Err(e) => Input::PreflightFailed {
                    reason: e.to_string(),
                },
            },
        };
        // Read the target now, so the first decision knows whether a
        // canary server is UP instead of assuming it is not.
        if let Ok(reading) = backend.read().await {
            let now = self.now();
            self.lock_live()
                .views
                .insert(target.clone(), TargetView { at: now, reading });
        }
        self.input(id, input, None).await?;
        Ok(())
    }
}
