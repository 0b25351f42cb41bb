//! The actuators: one task per traffic target executes every write to it,
//! in order, and reports the outcome back to the engine.
//!
//! The one decision a newcomer must know: **an actuator decides nothing.**
//! A job says everything it needs — apply or roll back, the share, drain and
//! session shutdown, and the [`Permit`] it runs under: a raise permit only
//! for an `Apply` the engine committed with a deadline, a decrease permit
//! for everything else. The backend passes every command through the gate
//! with that permit, and the gate asks the controller (as [`GateWorld`])
//! about the freeze and the clock at that instant. A job is queued at most
//! once at a time (by key), so a slow or hung endpoint cannot grow the queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::{ControlError, Controller, TargetView, ctl_err};
use crate::engine::{Effect, Input, Purpose, Rollout};
use crate::spec::{Orientation, Spec};
use crate::store::RolloutRecord;
use crate::traffic::{ApplyReport, GateWorld, Permit, TrafficBackend, TrafficError};

/// What to write.
#[derive(Debug, Clone, Copy)]
pub(super) enum Work {
    /// Set the canary share.
    Apply { share: u32 },
    /// Canary to 0, drain, and shut sessions (`None`: the backend's default).
    Rollback { shutdown: Option<bool> },
    /// Drained canary servers back to ready at weight 0 (a new rollout).
    Prepare,
}

/// Whose decision a job executes.
#[derive(Debug, Clone)]
pub(super) enum Origin {
    /// An engine `Apply` of rollout `id`, write `version`, `share`.
    /// `degraded`: decided while the store was unreachable (journalled); its
    /// outcome is logged, and the journal replay persists the decision.
    Rollout {
        id: String,
        version: u64,
        share: u32,
        degraded: bool,
    },
    /// A target-level decision ([`crate::engine::target`]) or preflight.
    /// `expect`: the pools (live, idle) the decision was taken on and that
    /// no rollout is active — checked again right before it runs, so a
    /// queued idle-pool hold never runs on a record that changed since.
    Target {
        what: &'static str,
        expect: Option<(String, String)>,
    },
}

pub(super) type Reply = oneshot::Sender<Result<ApplyReport, TrafficError>>;

pub(super) struct Job {
    pub key: String,
    pub origin: Origin,
    pub work: Work,
    pub backend: Arc<dyn TrafficBackend>,
    pub permit: Permit,
    pub reply: Option<Reply>,
}

impl GateWorld for Controller {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn not_acting(&self) -> Option<String> {
        Controller::not_acting(self)
    }

    fn raise_blocked(&self) -> Option<String> {
        if let Some(why) = Controller::not_acting(self) {
            return Some(why);
        }
        if self.frozen() {
            return Some("the global freeze is on".into());
        }
        let c = self.clock_status();
        if !c.trusted {
            return c.problem.or(Some("the clock is not trusted".into()));
        }
        None
    }
}

impl Controller {
    /// A decrease permit whose commands stop when this server stops acting.
    pub(super) fn decrease_permit(self: &Arc<Self>, why: String) -> Permit {
        Permit::Decrease {
            why,
            world: Some(self.clone() as Arc<dyn GateWorld>),
        }
    }

    /// Queue the write an engine `Apply` effect decided (`degraded`: while
    /// the store is unreachable). Raises get a raise permit with the effect's
    /// deadline; everything else a decrease permit.
    pub(super) fn enqueue_effect(
        self: &Arc<Self>,
        rec: &RolloutRecord,
        spec: &Spec,
        orientation: &Orientation,
        effect: &Effect,
        degraded: bool,
    ) -> bool {
        let Effect::Apply {
            purpose,
            share,
            deadline,
            drain_and_shutdown,
            shutdown_sessions,
            version,
        } = effect
        else {
            return false;
        };
        let permit = match (purpose, deadline) {
            (Purpose::Raise, Some(d)) => Permit::Raise {
                rollout: rec.id.clone(),
                version: *version,
                to: *share,
                deadline: *d,
                world: self.clone() as Arc<dyn GateWorld>,
                // Filled from the rollout's current write right before it
                // is executed (`actuate`).
                landed: Default::default(),
            },
            _ => self.decrease_permit(format!("{purpose:?} to {share}% for {}", rec.id)),
        };
        let work = if *drain_and_shutdown {
            Work::Rollback {
                shutdown: *shutdown_sessions,
            }
        } else {
            Work::Apply { share: *share }
        };
        let job = Job {
            key: format!("rollout:{}:{version}:{share}", rec.id),
            origin: Origin::Rollout {
                id: rec.id.clone(),
                version: *version,
                share: *share,
                degraded,
            },
            work,
            backend: self.traffic.backend(&spec.traffic, orientation),
            permit,
            reply: None,
        };
        self.enqueue(&rec.target, job)
    }

    /// Queue a job on its target's actuator unless the same job is queued
    /// or running already. Returns whether it was queued.
    pub(super) fn enqueue(self: &Arc<Self>, target: &str, job: Job) -> bool {
        {
            let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            if !q.insert(job.key.clone()) {
                return false;
            }
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut acts = self.actuators.lock().unwrap_or_else(|e| e.into_inner());
        let tx = acts.entry(target.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(actuator(self.clone(), target.to_string(), rx));
            tx
        });
        if let Err(mpsc::error::SendError(job)) = tx.send(job) {
            self.done(&job.key);
            return false;
        }
        true
    }

    fn done(&self, key: &str) {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Run a target-level job and wait for its outcome (adopt, preflight's
    /// prepare). Each call is its own job.
    pub(super) async fn run_target_job(
        self: &Arc<Self>,
        target: &str,
        what: &'static str,
        work: Work,
        backend: Arc<dyn TrafficBackend>,
        permit: Permit,
    ) -> Result<ApplyReport, TrafficError> {
        let (tx, rx) = oneshot::channel();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let job = target_job(
            target,
            what,
            Some(&unique),
            None,
            work,
            backend,
            permit,
            Some(tx),
        );
        if !self.enqueue(target, job) {
            return Err(TrafficError::Other("the actuator is shutting down".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(TrafficError::Other("the actuator dropped the job".into())))
    }

    /// Queue a target-level job without waiting (the idle-pool hold); at
    /// most one of each `what` per target at a time. Its outcome is logged.
    /// It runs only if, when its turn comes, the pools are still `expect`
    /// (live, idle) and no rollout is active on the target.
    pub(super) fn enqueue_target_job(
        self: &Arc<Self>,
        target: &str,
        what: &'static str,
        expect: (String, String),
        work: Work,
        backend: Arc<dyn TrafficBackend>,
        permit: Permit,
    ) -> bool {
        let job = target_job(
            target,
            what,
            None,
            Some(expect),
            work,
            backend,
            permit,
            None,
        );
        self.enqueue(target, job)
    }

    /// Wait until every queued write has been executed and reported (tests,
    /// graceful shutdown).
    pub async fn settled(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A target-level job, keyed `target:T:what` (plus `unique` for one that
/// must not be merged with another of its kind).
#[allow(clippy::too_many_arguments)]
fn target_job(
    target: &str,
    what: &'static str,
    unique: Option<&str>,
    expect: Option<(String, String)>,
    work: Work,
    backend: Arc<dyn TrafficBackend>,
    permit: Permit,
    reply: Option<Reply>,
) -> Job {
    let key = match unique {
        Some(u) => format!("target:{target}:{what}:{u}"),
        None => format!("target:{target}:{what}"),
    };
    Job {
        key,
        origin: Origin::Target { what, expect },
        work,
        backend,
        permit,
        reply,
    }
}

async fn actuator(ctl: Arc<Controller>, target: String, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(mut job) = rx.recv().await {
        let key = job.key.clone();
        if let Err(e) = actuate(&ctl, &target, &mut job).await {
            tracing::error!(target = %target, job = %key, error = %e, "Write failed.");
        }
        ctl.done(&key);
    }
}

/// Execute one job's write through its backend (every command gated).
async fn execute(job: &Job) -> Result<ApplyReport, TrafficError> {
    match job.work {
        Work::Apply { share } => job.backend.apply(share, &job.permit).await,
        Work::Rollback { shutdown } => {
            let shut = match shutdown {
                Some(b) => b,
                None => job.backend.shutdown_sessions_by_default().await,
            };
            job.backend.rollback(shut, &job.permit).await
        }
        Work::Prepare => job
            .backend
            .prepare(&job.permit)
            .await
            .map(|()| ApplyReport {
                confirmed: true,
                effective_share: 0.0,
                detail: "drained canary servers set back to ready at weight 0".into(),
                endpoints: Default::default(),
            }),
    }
}

async fn actuate(ctl: &Arc<Controller>, target: &str, job: &mut Job) -> Result<(), ControlError> {
    if let Some(why) = ctl.not_acting() {
        tracing::error!(target = %target, job = %job.key, why = %why, "Write not sent: this server is not acting.");
        if let Some(reply) = job.reply.take() {
            let _ = reply.send(Err(TrafficError::Refused(format!("not acting: {why}"))));
        }
        return Ok(());
    }
    let (id, version, share, degraded) = match &job.origin {
        Origin::Target { what, expect } => {
            let what = *what;
            if let Some((live, idle)) = expect {
                // Decided on a record that may have changed while queued.
                let pools = ctl.store.pool_state(target).await?;
                let busy = ctl.store.active_on_target(target).await?;
                let same = pools
                    .as_ref()
                    .is_some_and(|p| &p.live == live && &p.idle == idle);
                if !same || busy.is_some() {
                    tracing::info!(target = %target, what, "Stale target write dropped: the pools changed or a rollout started since it was decided.");
                    return Ok(());
                }
            }
            let res = execute(job).await;
            if let Err(TrafficError::Refused(m)) = &res {
                ctl.counters.gate_refusals.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target = %target, what, refusal = %m, "Gate refused a command.");
            }
            match job.reply.take() {
                Some(reply) => {
                    let _ = reply.send(res);
                }
                None => match res {
                    Ok(rep) if rep.confirmed => {
                        tracing::info!(target = %target, what, detail = %rep.detail, "Target write confirmed.")
                    }
                    Ok(rep) => {
                        tracing::error!(target = %target, what, detail = %rep.detail, "Target write not confirmed; retried on the next pass.")
                    }
                    Err(e) => {
                        tracing::error!(target = %target, what, error = %e, "Target write failed; retried on the next pass.")
                    }
                },
            }
            return Ok(());
        }
        Origin::Rollout {
            id,
            version,
            share,
            degraded,
        } => (id.clone(), *version, *share, *degraded),
    };
    // Drop a write whose decision is no longer current (the store's word,
    // or while it is down the last state the controller knew).
    let data = if degraded {
        ctl.lock_live()
            .cache
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.data.clone())
    } else {
        ctl.store.rollout(&id).await?.map(|r| r.data)
    };
    let Some(data) = data else { return Ok(()) };
    let r: Rollout = serde_json::from_str(&data).map_err(|e| ctl_err(&id, e))?;
    let current = r
        .write
        .as_ref()
        .is_some_and(|w| w.version == version && w.share == share);
    if !current || r.state.is_terminal() {
        tracing::debug!(rollout = %id, version, "Stale write dropped.");
        return Ok(());
    }
    // Where earlier attempts of this raise landed: the gate never raises
    // one of those endpoints again once someone lowered it.
    if let (Permit::Raise { landed, .. }, Some(w)) = (&mut job.permit, &r.write) {
        *landed = w.landed.clone();
    }
    // Test builds only (`--features failpoints`): die between "raise
    // decided and committed" and "written", to prove crash recovery.
    #[cfg(feature = "failpoints")]
    if job.permit.is_raise()
        && std::env::var("MUHURAT_FAILPOINT").as_deref() == Ok("before_raise_write")
    {
        tracing::error!(rollout = %id, "Failpoint before_raise_write: exiting.");
        std::process::exit(86);
    }
    let result = execute(job).await;
    if degraded {
        match &result {
            Ok(rep) if rep.confirmed => {
                tracing::warn!(rollout = %id, share, "Decrease confirmed while the store is unreachable.");
                ctl.lock_live().degraded_done.insert((id.clone(), version));
            }
            Ok(rep) => {
                tracing::error!(rollout = %id, share, detail = %rep.detail, "Decrease not confirmed while the store is unreachable; retried next pass.")
            }
            Err(e) => {
                tracing::error!(rollout = %id, error = %e, "Decrease failed while the store is unreachable; retried next pass.")
            }
        }
        return Ok(());
    }
    let raise = job.permit.is_raise();
    let input = match result {
        Ok(rep) => {
            tracing::info!(rollout = %id, share, confirmed = rep.confirmed, detail = %rep.detail, "Weight written.");
            if rep.detail.contains("gate refused") {
                ctl.counters.gate_refusals.fetch_add(1, Ordering::Relaxed);
            }
            if rep.confirmed {
                let decided = r
                    .write
                    .as_ref()
                    .map(|w| w.decided_at)
                    .unwrap_or_else(|| ctl.now());
                let ms = (ctl.now() - decided).num_milliseconds().max(0) as u64;
                ctl.counters.weight_changes.fetch_add(1, Ordering::Relaxed);
                ctl.counters
                    .weight_change_ms_sum
                    .fetch_add(ms, Ordering::Relaxed);
            } else {
                ctl.counters.backend_errors.fetch_add(1, Ordering::Relaxed);
            }
            Input::Applied {
                version,
                share,
                confirmed: rep.confirmed,
                detail: rep.detail,
                endpoints: rep
                    .endpoints
                    .iter()
                    .filter_map(|(e, r)| r.as_ref().ok().map(|s| (e.clone(), *s)))
                    .collect(),
            }
        }
        // Someone else wrote the target (a Consul CAS conflict): a raise is
        // never retried over their write — the rollout pauses for a person
        // (and the pause's revert is gated like any decrease: it cannot
        // write back over a lower value of theirs).
        Err(TrafficError::Conflict(m)) if raise => Input::Pause {
            by: "muhurat".into(),
            reason: Some(format!(
                "the target was changed by someone else while raising to {share}%: {m}"
            )),
        },
        Err(e) => {
            if matches!(e, TrafficError::Refused(_)) {
                ctl.counters.gate_refusals.fetch_add(1, Ordering::Relaxed);
            }
            ctl.counters.backend_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(rollout = %id, share, error = %e, "Write not confirmed.");
            Input::Applied {
                version,
                share,
                confirmed: false,
                detail: e.to_string(),
                endpoints: Default::default(),
            }
        }
    };
    ctl.input(&id, input, None).await?;
    // Read back what is in effect now and tell the engine: an operator's
    // lower value met by a refused decrease, or an endpoint that did not
    // answer, is known at once rather than at the next drift read.
    match job.backend.read().await {
        Ok(reading) => {
            let now = ctl.now();
            let shares = reading.shares();
            let unreachable = reading.unreachable();
            ctl.lock_live()
                .views
                .insert(target.to_string(), TargetView { at: now, reading });
            if !shares.is_empty() {
                ctl.lock_live()
                    .observed_sent
                    .insert(id.clone(), (shares.clone(), unreachable.clone()));
                if let Err(e) = ctl
                    .input(
                        &id,
                        Input::Observed {
                            shares,
                            unreachable,
                        },
                        None,
                    )
                    .await
                {
                    ctl.lock_live().observed_sent.remove(&id);
                    return Err(e);
                }
            }
        }
        Err(e) => {
            tracing::warn!(rollout = %id, target = %target, error = %e, "Cannot read the target after the write.")
        }
    }
    Ok(())
}
