//! The controller: the tokio driver around the pure engine.
//!
//! It sleeps until the earliest due time (a wake-up, a check evaluation, a
//! drift read, a raise deadline) or until the API signals a change; wakes due
//! rollouts; runs each transition inside one store transaction
//! ([`Store::transition`]) that locks the row; and only after the commit hands
//! effects to the actuators — one task per traffic target, which serialises
//! the writes to it, drops an effect whose write version is no longer current
//! and re-checks the freeze and the deadline right before every raise write.
//! Outcomes come back as engine inputs. After a crash nothing is lost: timers
//! are re-derived from stored times and the first pass re-runs unconfirmed
//! writes through `Tick` (a raise past its deadline expires instead).

pub mod calendars;
pub mod journal;
pub mod testing;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, mpsc};

use crate::clock::Clock;
use crate::engine::{self, CheckResult, Ctx, Effect, Initiator, Input, Refusal, Rollout, State};
use crate::gates::{self, MetricsSource, Vars};
use crate::spec::{self, Analysis, CalendarLookup, Spec};
use crate::store::{
    CheckResultRecord, FreezeRecord, NewEvent, NewOutbox, PoolRecord, RolloutRecord, Store,
    StoreError, Update,
};
use crate::traffic::{Orientation, Reading, TrafficBackend, TrafficFactory};
use crate::windows::{self, Interval};
pub use calendars::Calendars;

/// Builds the metrics source for a spec's `analysis`.
pub trait MetricsFactory: Send + Sync {
    fn source(&self, analysis: &Analysis) -> Result<Arc<dyn MetricsSource>, String>;
}

#[derive(Debug, Clone)]
pub struct Config {
    /// How often every target's weights are read back (DESIGN: 10 s).
    pub drift_interval: TimeDelta,
    /// Above this measured skew no raise is made (DESIGN: 5 s).
    pub max_clock_skew: TimeDelta,
    /// Recorded with every decision.
    pub policy_version: String,
    /// Compare the local clock with the database's (PostgreSQL). Off only
    /// where the controller runs on a manual clock (simulations), which the
    /// real database clock would always contradict.
    pub measure_db_skew: bool,
    /// Where decisions taken while the store is unreachable are journalled.
    pub journal: std::path::PathBuf,
    /// Webhook secret names for server-wide warnings (calendar coverage
    /// running out, clock skew).
    pub server_notify: Vec<String>,
    /// Check results older than this are pruned from the results table (the
    /// audit log keeps every verdict that led to a decision).
    pub check_retention: TimeDelta,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            drift_interval: TimeDelta::seconds(10),
            max_clock_skew: TimeDelta::seconds(5),
            policy_version: "0".into(),
            measure_db_skew: true,
            journal: std::path::PathBuf::from("muhurat.journal"),
            server_notify: Vec::new(),
            check_retention: TimeDelta::days(30),
        }
    }
}

/// How far ahead permitted windows are computed for the engine: a raise's
/// deadline is the end of the window it is decided in, and windows are far
/// shorter than this.
const WINDOW_HORIZON: TimeDelta = TimeDelta::days(8);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(Refusal),
    #[error("rollout {id}: {message}")]
    Broken { id: String, message: String },
    #[error("{0}")]
    BadSpec(String),
}

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

/// (spec hash, calendar version, freeze start if on, hour since the epoch).
type WindowKey = (String, String, Option<i64>, i64);

/// What the controller last read of a target.
#[derive(Debug, Clone)]
struct TargetView {
    at: DateTime<Utc>,
    reading: Reading,
}

#[derive(Default)]
struct Live {
    views: HashMap<String, TargetView>,
    /// The latest evaluation instant per rollout (re-derived after a crash
    /// from the checks' `last_at`).
    last_eval: HashMap<String, DateTime<Utc>>,
    /// Measured skew: database clock, metrics `Date`.
    db_skew: Option<TimeDelta>,
    metrics_skew: Option<TimeDelta>,
    specs: HashMap<(String, String), Arc<Spec>>,
    /// spec hash → calendar name, so a cached spec is found without
    /// re-parsing its YAML.
    spec_calendar: HashMap<String, String>,
    /// When each server-wide warning was last sent (at most once a day).
    warned: HashMap<String, DateTime<Utc>>,
    /// The spec last run on each target (for idle targets' drift checks).
    target_spec: HashMap<String, Arc<Spec>>,
    /// The shares last fed to the engine as `Observed`, per rollout.
    observed_sent: HashMap<String, std::collections::BTreeMap<String, f64>>,
    /// The active rollouts and pool states as last read: what the controller
    /// knows when the store does not answer.
    cache: Vec<RolloutRecord>,
    pools_cache: HashMap<String, PoolRecord>,
    /// Permitted windows per (spec hash, calendar version, freeze, hour).
    windows: HashMap<WindowKey, Arc<Vec<Interval>>>,
}

struct Job {
    rollout_id: String,
    effect: Effect,
    backend: Arc<dyn TrafficBackend>,
    /// The spec's `rollback.shutdown_sessions` (None: the backend's default).
    shutdown_sessions: Option<bool>,
}

pub struct Controller {
    store: Store,
    calendars: Arc<Calendars>,
    traffic: Arc<dyn TrafficFactory>,
    metrics: Arc<dyn MetricsFactory>,
    clock: Arc<dyn Clock>,
    cfg: Config,
    wake: Notify,
    live: Mutex<Live>,
    actuators: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    in_flight: AtomicUsize,
    idle: Notify,
    counters: Counters,
}

fn ctl_err(id: &str, m: impl std::fmt::Display) -> ControlError {
    ControlError::Broken {
        id: id.to_string(),
        message: m.to_string(),
    }
}

impl Controller {
    pub fn new(
        store: Store,
        calendars: Arc<Calendars>,
        traffic: Arc<dyn TrafficFactory>,
        metrics: Arc<dyn MetricsFactory>,
        clock: Arc<dyn Clock>,
        cfg: Config,
    ) -> Arc<Controller> {
        Arc::new(Controller {
            store,
            calendars,
            traffic,
            metrics,
            clock,
            cfg,
            wake: Notify::new(),
            live: Mutex::new(Live::default()),
            actuators: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            counters: Counters::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn calendars(&self) -> &Arc<Calendars> {
        &self.calendars
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters for `/metrics`.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The traffic backends (for `pools`, `adopt`, `check-target`).
    pub fn traffic(&self) -> &Arc<dyn TrafficFactory> {
        &self.traffic
    }

    /// The metrics sources (for `check-metrics`).
    pub fn metrics(&self) -> &Arc<dyn MetricsFactory> {
        &self.metrics
    }

    /// The spec a stored rollout runs (validated against the calendar in force).
    pub fn spec_for(&self, rec: &RolloutRecord) -> Result<Arc<Spec>, ControlError> {
        self.spec_of(rec)
    }

    /// Which pool is canary and which live for a spec's target, as stored.
    pub async fn orientation_for(&self, spec: &Spec) -> Result<Option<Orientation>, StoreError> {
        Ok(self
            .pool_of(spec)
            .await?
            .map(|p| Self::orientation(spec, &p)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Ask the loop to run a pass now (after an API change).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The largest measured clock skew, if any was measured.
    pub fn clock_skew(&self) -> Option<TimeDelta> {
        let l = self.lock_live();
        [l.db_skew, l.metrics_skew]
            .into_iter()
            .flatten()
            .max_by_key(|d| d.num_milliseconds().abs())
    }

    pub fn clock_trusted(&self) -> bool {
        self.clock_skew().is_none_or(|s| {
            s.num_milliseconds().abs() <= self.cfg.max_clock_skew.num_milliseconds()
        })
    }

    /// The spec of a rollout if it is already parsed for the calendar in force.
    fn cached_spec(&self, rec: &RolloutRecord) -> Option<Arc<Spec>> {
        let live = self.lock_live();
        let name = live.spec_calendar.get(&rec.spec_hash)?;
        let cal = self.calendars.get(name)?;
        live.specs
            .get(&(
                rec.spec_hash.clone(),
                format!("{}@{}", cal.name, cal.version),
            ))
            .cloned()
    }

    /// The validated spec of a rollout row, checked against its hash.
    fn spec_of(&self, rec: &RolloutRecord) -> Result<Arc<Spec>, ControlError> {
        let known = self.lock_live().spec_calendar.get(&rec.spec_hash).cloned();
        let name = match known {
            Some(n) => n,
            None => self.spec_calendar_name(rec)?,
        };
        let cal = self
            .calendars
            .get(&name)
            .ok_or_else(|| ctl_err(&rec.id, format!("calendar `{name}` is not loaded")))?;
        let key = (
            rec.spec_hash.clone(),
            format!("{}@{}", cal.name, cal.version),
        );
        if let Some(s) = self.lock_live().specs.get(&key) {
            return Ok(s.clone());
        }
        let loaded = spec::load(&format!("rollout {}", rec.id), &rec.spec_yaml, |_| {
            Ok((*cal).clone())
        })
        .map_err(|d| {
            ctl_err(
                &rec.id,
                format!(
                    "stored spec no longer validates: {}",
                    d.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
        })?;
        if loaded.spec.hash() != rec.spec_hash {
            // Only a calendar change can do this (a spec without `segments`
            // takes the calendar's). The rollout runs on the calendar in force.
            tracing::warn!(rollout = %rec.id, "The spec validates differently under the calendar in force (its default segments changed); running with the calendar in force.");
        }
        let s = Arc::new(loaded.spec);
        let mut live = self.lock_live();
        live.specs.insert(key, s.clone());
        live.spec_calendar.insert(rec.spec_hash.clone(), name);
        Ok(s)
    }

    fn spec_calendar_name(&self, rec: &RolloutRecord) -> Result<String, ControlError> {
        // The calendar name is the spec's `calendar:` key; parse just enough.
        let raw: spec::RawSpec = crate::yaml::from_str("stored spec", &rec.spec_yaml)
            .map_err(|d| ctl_err(&rec.id, d))?;
        Ok(raw.calendar.trim().to_string())
    }

    fn orientation(spec: &Spec, pools: &PoolRecord) -> Orientation {
        let [a, b] = spec.traffic.pools().clone();
        if a.name == pools.idle {
            Orientation { canary: a, live: b }
        } else {
            Orientation { canary: b, live: a }
        }
    }

    async fn pool_of(&self, spec: &Spec) -> Result<Option<PoolRecord>, StoreError> {
        self.store.pool_state(&spec.traffic.target_id()).await
    }

    /// Permitted windows for the engine at `now`, freeze subtracted. Cached
    /// per hour: the range always reaches at least a week past `now`.
    fn permitted_at(
        &self,
        spec_hash: &str,
        spec: &Spec,
        cal: &crate::calendar::Calendar,
        now: DateTime<Utc>,
        freeze: &FreezeRecord,
    ) -> Arc<Vec<Interval>> {
        let hour = now.timestamp().div_euclid(3600);
        let key = (
            spec_hash.to_string(),
            cal.version.to_string(),
            freeze.on.then(|| freeze.since.timestamp()),
            hour,
        );
        if let Some(w) = self.lock_live().windows.get(&key) {
            return w.clone();
        }
        let bucket = DateTime::<Utc>::from_timestamp(hour * 3600, 0).unwrap_or(now);
        let range = Interval::new(
            bucket - TimeDelta::days(1),
            bucket + WINDOW_HORIZON + TimeDelta::hours(1),
        );
        // The freeze blocks everything from when it was switched on.
        let fz = if freeze.on {
            vec![Interval::new(freeze.since.min(range.start), range.end)]
        } else {
            vec![]
        };
        let w = Arc::new(windows::permitted(&spec.window_rules(), cal, range, &fz));
        let mut live = self.lock_live();
        if live.windows.len() > 10_000 {
            live.windows.clear();
        }
        live.windows.insert(key, w.clone());
        w
    }

    // ---- starting ----------------------------------------------------------

    /// Validate, create in `pending` and run preflight (DESIGN §3 *Rollout*).
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
        // Pools: the stored orientation, or (first rollout of the target)
        // the pool carrying all traffic is live.
        let pools = match self.pool_of(&spec).await? {
            Some(p) => p,
            None => {
                let [a, b] = spec.traffic.pools().clone();
                let probe = self.traffic.backend(
                    &spec.traffic,
                    &Orientation {
                        canary: a.clone(),
                        live: b.clone(),
                    },
                );
                let reading = probe.read().await.map_err(|e| {
                    StartError::NeedsAdopt(format!(
                        "cannot read target {target} to find the live pool: {e}"
                    ))
                })?;
                let shares = reading.shares();
                if shares.is_empty() {
                    return Err(StartError::NeedsAdopt(format!(
                        "no endpoint of {target} answered; cannot tell which pool is live"
                    )));
                }
                let (live, idle) = if shares.values().all(|s| *s <= engine::DRIFT_TOLERANCE) {
                    (b.name.clone(), a.name.clone())
                } else if shares
                    .values()
                    .all(|s| *s >= 100.0 - engine::DRIFT_TOLERANCE)
                {
                    (a.name.clone(), b.name.clone())
                } else {
                    return Err(StartError::NeedsAdopt(format!(
                        "both pools of {target} carry traffic ({}); run `muhurat adopt FILE --live POOL` first",
                        shares
                            .iter()
                            .map(|(e, s)| format!("{e}: {}={s:.1}%", a.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                let p = PoolRecord {
                    target: target.clone(),
                    live,
                    idle,
                    updated_at: now,
                };
                self.store.set_pool_state(&p).await?;
                p
            }
        };
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
            input: serde_json::json!({"command": "start", "revision": req.revision, "initiator": req.initiator, "canary_pool": pools.idle}).to_string(),
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
        tracing::info!(rollout = %id, spec = %spec.name, revision = %req.revision, "Rollout accepted.");
        // Preflight after acceptance: it moves the rollout on, or to failed.
        let me = self.clone();
        let orient = Self::orientation(&spec, &pools);
        let traffic = spec.traffic.clone();
        let rid = id.clone();
        let target_id = target.clone();
        tokio::spawn(async move {
            let backend = me.traffic.backend(&traffic, &orient);
            let input = match backend.prepare().await.and(backend.preflight().await) {
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
            };
            // Read the target now, so the first decision knows whether a
            // canary server is UP instead of assuming it is not.
            if let Ok(reading) = backend.read().await {
                let now = me.now();
                me.lock_live()
                    .views
                    .insert(target_id.clone(), TargetView { at: now, reading });
            }
            if let Err(e) = me.input(&rid, input, None).await {
                tracing::error!(rollout = %rid, error = %e, "Preflight result could not be recorded.");
            }
            me.poke();
        });
        Ok(StartOutcome::Created(rec))
    }

    // ---- transitions -------------------------------------------------------

    /// Run one input through the engine for rollout `id`, persist it, then
    /// execute its effects. Commands from people carry their principal.
    pub async fn input(
        self: &Arc<Self>,
        id: &str,
        input: Input,
        principal: Option<&str>,
    ) -> Result<Option<Rollout>, ControlError> {
        // Commands and actuator outcomes read the freeze fresh.
        let freeze = self.store.freeze().await?;
        self.input_with(id, input, principal, &freeze).await
    }

    async fn input_with(
        self: &Arc<Self>,
        id: &str,
        input: Input,
        principal: Option<&str>,
        freeze: &FreezeRecord,
    ) -> Result<Option<Rollout>, ControlError> {
        let now = self.now();
        let rec = self
            .store
            .rollout(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let spec = self.spec_of(&rec)?;
        let cal = self
            .calendars
            .get(&spec.calendar)
            .ok_or_else(|| ctl_err(id, "calendar not loaded"))?;
        let permitted = self.permitted_at(&rec.spec_hash, &spec, &cal, now, freeze);
        let frozen = freeze.on;
        let (canary_up, live_up) = self.health_of(&rec.target);
        let clock_trusted = self.clock_trusted();
        let skew = self.clock_skew();
        let cal_version = cal.version.to_string();
        let policy_version = self.cfg.policy_version.clone();
        let mut out: Option<engine::Transition> = None;
        let mut moved_wake: Option<Option<DateTime<Utc>>> = None;
        let committed = self
            .store
            .transition(id, |cur| {
                let r: Rollout =
                    serde_json::from_str(&cur.data).map_err(|e| ControlError::Broken {
                        id: cur.id.clone(),
                        message: format!("stored state is unreadable: {e}"),
                    })?;
                let ctx = Ctx {
                    spec: &spec,
                    calendar: &cal,
                    permitted: &permitted,
                    frozen,
                    clock_trusted,
                    canary_up,
                    live_up,
                    calendar_version: &cal_version,
                    policy_version: &policy_version,
                };
                let t =
                    engine::step(&r, input.clone(), now, &ctx).map_err(ControlError::Refused)?;
                let next_wake = next_wake_of(&spec, &t, now);
                if next_wake != cur.next_wake {
                    moved_wake = Some(next_wake);
                }
                let live_changed = t.rollout.observed != r.observed;
                let update = if t.events.is_empty() && !live_changed {
                    None
                } else if t.events.is_empty() {
                    // Only live fields moved (the shares read back): keep
                    // the row's cache current for status and the API.
                    Some(Update {
                        state: t.rollout.state.as_str().into(),
                        active: !t.rollout.state.is_terminal(),
                        data: serde_json::to_string(&t.rollout).expect("a rollout serializes"),
                        next_wake,
                        events: Vec::new(),
                        outbox: Vec::new(),
                    })
                } else {
                    let data = serde_json::to_string(&t.rollout).expect("a rollout serializes");
                    let input_json = serde_json::to_string(&input).expect("an input serializes");
                    let events = t
                        .events
                        .iter()
                        .map(|e| NewEvent {
                            rollout_id: Some(cur.id.clone()),
                            at: e.at,
                            kind: serde_json::to_value(e.kind)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default(),
                            principal: principal.map(String::from),
                            why: e.why.clone(),
                            input: input_json.clone(),
                            state: t.rollout.state.as_str().into(),
                            version: 0,
                            snapshot: Some(data.clone()),
                            calendar: Some(cal.name.clone()),
                            calendar_version: e.calendar_version.clone(),
                            policy_version: e.policy_version.clone(),
                            clock_skew_ms: skew.map(|d| d.num_milliseconds()),
                        })
                        .collect();
                    let outbox = t
                        .effects
                        .iter()
                        .filter_map(|e| {
                            if let Effect::Notify { kind, text } = e {
                                Some((kind, text))
                            } else {
                                None
                            }
                        })
                        .flat_map(|(kind, text)| {
                            spec.notify.iter().map(move |n| NewOutbox {
                                channel: format!("webhook:{}", n.webhook_secret),
                                payload: serde_json::json!({"kind": kind, "text": text})
                                    .to_string(),
                            })
                        })
                        .collect();
                    Some(Update {
                        state: t.rollout.state.as_str().into(),
                        active: !t.rollout.state.is_terminal(),
                        data,
                        next_wake,
                        events,
                        outbox,
                    })
                };
                out = Some(t);
                Ok::<_, ControlError>(update)
            })
            .await?;
        let committed = committed?;
        let Some(t) = out else { return Ok(None) };
        if !t.events.is_empty() {
            self.counters.transitions.fetch_add(1, Ordering::Relaxed);
        }
        if committed.is_none()
            && let Some(w) = moved_wake
        {
            // Nothing decided, but the next due time moved (a window
            // opening came closer): keep the controller's timer right.
            self.store.set_next_wake(id, w).await?;
        }
        for e in &t.events {
            tracing::info!(rollout = %id, step = e.step, state = t.rollout.state.as_str(), why = %e.why, "{:?}", e.kind);
        }
        if t.events.is_empty() {
            // Nothing was decided: only a retry of an outstanding write may
            // be due (a Tick re-emits it). Anything else would act twice.
            let retries = engine::Transition {
                effects: t
                    .effects
                    .iter()
                    .filter(|e| matches!(e, Effect::Apply { .. }))
                    .cloned()
                    .collect(),
                ..t.clone()
            };
            self.run_effects(&rec, &spec, &retries).await?;
        } else {
            self.run_effects(&rec, &spec, &t).await?;
        }
        Ok(Some(t.rollout))
    }

    async fn run_effects(
        self: &Arc<Self>,
        rec: &RolloutRecord,
        spec: &Arc<Spec>,
        t: &engine::Transition,
    ) -> Result<(), ControlError> {
        for e in &t.effects {
            match e {
                Effect::Apply { .. } => {
                    let Some(pools) = self.pool_of(spec).await? else {
                        return Err(ctl_err(&rec.id, "target has no pool state"));
                    };
                    let backend = self
                        .traffic
                        .backend(&spec.traffic, &Self::orientation(spec, &pools));
                    self.enqueue(
                        &rec.target,
                        Job {
                            rollout_id: rec.id.clone(),
                            effect: e.clone(),
                            backend,
                            shutdown_sessions: match &spec.traffic {
                                crate::spec::Traffic::Haproxy {
                                    shutdown_sessions, ..
                                } => *shutdown_sessions,
                                crate::spec::Traffic::Consul { .. } => None,
                            },
                        },
                    );
                }
                Effect::SwapPools => {
                    if let Some(p) = self.pool_of(spec).await? {
                        let swapped = PoolRecord {
                            target: p.target.clone(),
                            live: p.idle.clone(),
                            idle: p.live.clone(),
                            updated_at: self.now(),
                        };
                        self.store.set_pool_state(&swapped).await?;
                        tracing::info!(target = %p.target, live = %swapped.live, idle = %swapped.idle, "Pools swapped.");
                    }
                }
                // Notifications went to the outbox in the transaction;
                // timers are in `next_wake`.
                Effect::Notify { .. } | Effect::WakeAt { .. } | Effect::Evaluate { .. } => {}
            }
        }
        Ok(())
    }

    fn health_of(&self, target: &str) -> (bool, bool) {
        match self.lock_live().views.get(target) {
            Some(v) => (v.reading.canary_up(), v.reading.live_up()),
            // Not read yet: no raise until it has been (fail closed), but a
            // rollback does not wait for it either.
            None => (false, true),
        }
    }

    // ---- actuators ---------------------------------------------------------

    fn enqueue(self: &Arc<Self>, target: &str, job: Job) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut acts = self.actuators.lock().unwrap_or_else(|e| e.into_inner());
        let tx = acts.entry(target.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(actuator(self.clone(), target.to_string(), rx));
            tx
        });
        if tx.send(job).is_err() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
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

    // ---- the pass ----------------------------------------------------------

    /// One pass over every active rollout: measure skew, read targets,
    /// evaluate due checks, feed drift and ticks to the engine.
    pub async fn pass(self: &Arc<Self>) -> Result<PassReport, ControlError> {
        let now = self.now();
        let mut report = PassReport::default();
        if !self.cfg.measure_db_skew {
        } else if let Ok(Some(db)) = self.store.db_now().await {
            self.lock_live().db_skew = Some(now - db);
        }
        if !self.clock_trusted() {
            tracing::error!(
                skew_ms = self.clock_skew().map(|d| d.num_milliseconds()),
                "Clock skew above max_clock_skew: no raise until it is fixed."
            );
        }
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
            Ok(x) => x,
            Err(e) => return Ok(self.pass_degraded(now, &e).await),
        };
        if let Err(e) = self.replay_journal().await {
            tracing::error!(error = %e, journal = %self.cfg.journal.display(), "Journal replay stopped; it is retried on the next pass.");
        }
        {
            let mut live = self.lock_live();
            live.cache = active.clone();
            live.pools_cache = pools.clone();
        }
        for rec in &active {
            report.rollouts += 1;
            if let Err(e) = self.pass_one(rec, now, &freeze, &pools, &mut report).await {
                report.errors += 1;
                tracing::error!(rollout = %rec.id, error = %e, "Controller pass failed for this rollout.");
            }
        }
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
            return Ok(());
        }
        let mut changed = false;
        // Drift: read the target every drift_interval.
        let stale = self
            .lock_live()
            .views
            .get(&rec.target)
            .is_none_or(|v| now - v.at >= self.cfg.drift_interval);
        if stale && let Some(p) = pools.get(&rec.target) {
            let backend = self
                .traffic
                .backend(&spec.traffic, &Self::orientation(&spec, p));
            match backend.read().await {
                Ok(reading) => {
                    let shares = reading.shares();
                    self.lock_live()
                        .views
                        .insert(rec.target.clone(), TargetView { at: now, reading });
                    report.reads += 1;
                    // The engine keeps `observed` as a live field (not
                    // versioned, so not always written back): compare with
                    // what this controller last reported instead, so an
                    // unchanged target costs no transaction.
                    let last = self.lock_live().observed_sent.get(&rec.id).cloned();
                    let fresh = last.as_ref().map_or(shares != r.observed, |l| *l != shares);
                    if !shares.is_empty() && fresh {
                        self.lock_live()
                            .observed_sent
                            .insert(rec.id.clone(), shares.clone());
                        self.input_with(&rec.id, Input::Observed { shares }, None, freeze)
                            .await?;
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
            let results = self.evaluate(rec, &spec, at).await;
            report.evaluations += 1;
            self.lock_live().last_eval.insert(rec.id.clone(), at);
            self.input_with(&rec.id, Input::CheckResults { at, results }, None, freeze)
                .await?;
            changed = true;
        }
        // Ticks: timers, retries of unconfirmed writes, window openings. Most
        // ticks change nothing: try it on the snapshot first and only take
        // the row lock when the engine has something to record or do.
        // Every input already settles the rollout, so a Tick is only for
        // time passing: a due wake-up (window opening, bake end, session
        // close, raise deadline) or a write still to confirm or retry.
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

    /// Calendar coverage running out (DESIGN §3: under 45 days) and an
    /// untrusted clock: logged at most once a day each. The clock warning is
    /// notified on the server's webhooks at most once a day; the coverage
    /// warning once per calendar version (issue 10: not every pass, nor
    /// every day for 45 days) — a new version still short of coverage
    /// warns again.
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
        if !self.clock_trusted() {
            let ms = self
                .clock_skew()
                .map(|d| d.num_milliseconds())
                .unwrap_or_default();
            warnings.push((
                "clock_skew".into(),
                "clock_skew",
                format!(
                    "clock skew {ms} ms exceeds max_clock_skew: no raise until the clock is fixed"
                ),
                None,
            ));
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
            tracing::warn!(kind, "{text}");
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
                };
                if let Err(e) = self.store.enqueue(seq, &o, now).await {
                    tracing::warn!(error = %e, "Server-wide notification not queued.");
                }
            }
        }
    }

    /// The store does not answer: no raise, but due checks still run on the
    /// last known state, and a decision to decrease (a rollback) is
    /// journalled locally, then executed. Replayed when the store returns.
    async fn pass_degraded(self: &Arc<Self>, now: DateTime<Utc>, err: &StoreError) -> PassReport {
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
        let r: Rollout = serde_json::from_str(&rec.data).map_err(|e| ctl_err(&rec.id, e))?;
        let Some(at) = self.due_evaluation(&spec, &r, now) else {
            return Ok(());
        };
        let results = self.evaluate(rec, &spec, at).await;
        report.evaluations += 1;
        self.lock_live().last_eval.insert(rec.id.clone(), at);
        let input = Input::CheckResults { at, results };
        let cal = self
            .calendars
            .get(&spec.calendar)
            .ok_or_else(|| ctl_err(&rec.id, "calendar not loaded"))?;
        // Treated as frozen: the engine cannot decide a raise.
        let freeze = FreezeRecord {
            on: true,
            reason: "store unreachable".into(),
            by: "muhurat".into(),
            since: now,
        };
        let permitted = self.permitted_at(&rec.spec_hash, &spec, &cal, now, &freeze);
        let (canary_up, live_up) = self.health_of(&rec.target);
        let cal_version = cal.version.to_string();
        let ctx = Ctx {
            spec: &spec,
            calendar: &cal,
            permitted: &permitted,
            frozen: true,
            clock_trusted: self.clock_trusted(),
            canary_up,
            live_up,
            calendar_version: &cal_version,
            policy_version: &self.cfg.policy_version,
        };
        let t = engine::step(&r, input.clone(), now, &ctx).map_err(ControlError::Refused)?;
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
        for e in &t.effects {
            if let Effect::Apply {
                share,
                deadline: None,
                drain_and_shutdown,
                ..
            } = e
                && let Some(p) = pools.get(&rec.target)
            {
                let backend = self
                    .traffic
                    .backend(&spec.traffic, &Self::orientation(&spec, p));
                let res = if *drain_and_shutdown {
                    let shut = match &spec.traffic {
                        crate::spec::Traffic::Haproxy {
                            shutdown_sessions: Some(b),
                            ..
                        } => *b,
                        _ => backend.shutdown_sessions_by_default().await,
                    };
                    backend.rollback(shut).await
                } else {
                    backend.apply(*share).await
                };
                match res {
                    Ok(rep) => {
                        tracing::warn!(rollout = %rec.id, share, confirmed = rep.confirmed, "Decrease written while the store is unreachable.")
                    }
                    Err(e) => {
                        tracing::error!(rollout = %rec.id, error = %e, "Decrease failed while the store is unreachable; retried next pass.")
                    }
                }
            }
        }
        Ok(())
    }

    /// Persist what was journalled while the store was down, in order.
    async fn replay_journal(self: &Arc<Self>) -> Result<(), ControlError> {
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

    /// Does a Tick on this snapshot decide or write anything?
    fn tick_would_act(
        &self,
        rec: &RolloutRecord,
        spec: &Spec,
        r: &Rollout,
        now: DateTime<Utc>,
        freeze: &FreezeRecord,
    ) -> Result<bool, ControlError> {
        let cal = self
            .calendars
            .get(&spec.calendar)
            .ok_or_else(|| ctl_err(&rec.id, "calendar not loaded"))?;
        let permitted = self.permitted_at(&rec.spec_hash, spec, &cal, now, freeze);
        let (canary_up, live_up) = self.health_of(&rec.target);
        let cal_version = cal.version.to_string();
        let ctx = Ctx {
            spec,
            calendar: &cal,
            permitted: &permitted,
            frozen: freeze.on,
            clock_trusted: self.clock_trusted(),
            canary_up,
            live_up,
            calendar_version: &cal_version,
            policy_version: &self.cfg.policy_version,
        };
        let t = engine::step(r, Input::Tick, now, &ctx).map_err(ControlError::Refused)?;
        let next_wake = next_wake_of(spec, &t, now);
        Ok(!t.events.is_empty()
            || t.effects
                .iter()
                .any(|e| !matches!(e, Effect::WakeAt { .. } | Effect::Evaluate { .. }))
            || next_wake != rec.next_wake)
    }

    /// The latest evaluation instant `t0 + k·interval ≤ now` not yet run.
    /// After a restart the last one run comes from the checks' `last_at`, so
    /// nothing is evaluated twice; missed instants are not backfilled.
    fn due_evaluation(
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

    async fn evaluate(
        &self,
        rec: &RolloutRecord,
        spec: &Spec,
        at: DateTime<Utc>,
    ) -> Vec<CheckResult> {
        let Some(a) = &spec.analysis else {
            return Vec::new();
        };
        let cal = self.calendars.get(&spec.calendar);
        let in_session = cal
            .as_ref()
            .is_some_and(|c| engine::in_session(spec, c, at));
        let pools = self.pool_of(spec).await.ok().flatten();
        let orient = pools.as_ref().map(|p| Self::orientation(spec, p));
        let vars = Vars {
            rollout: rec.id.clone(),
            revision: rec.revision.clone(),
            canary_pool: orient
                .as_ref()
                .map(|o| o.canary.name.clone())
                .unwrap_or_default(),
            live_pool: orient
                .as_ref()
                .map(|o| o.live.name.clone())
                .unwrap_or_default(),
            canary_servers: orient
                .as_ref()
                .map(|o| o.canary.servers.clone())
                .unwrap_or_default(),
            live_servers: orient
                .as_ref()
                .map(|o| o.live.servers.clone())
                .unwrap_or_default(),
        };
        let query_time = at - a.query_delay;
        let source = self.metrics.source(a);
        let mut results = Vec::new();
        let mut records = Vec::new();
        for check in &a.checks {
            let ev = match &source {
                Ok(src) => gates::evaluate(check, src.as_ref(), &vars, query_time).await,
                Err(e) => gates::Evaluation {
                    check: check.name.clone(),
                    verdict: engine::Verdict::Error,
                    value: None,
                    query: check.query.clone(),
                    reason: format!("metrics source unusable: {e}"),
                    server_date: None,
                },
            };
            if let Some(d) = ev.server_date {
                // The Date header has one-second resolution: compare with the
                // wall clock, not the evaluation instant.
                self.lock_live().metrics_skew = Some(self.now() - d);
            }
            records.push(CheckResultRecord {
                rollout_id: rec.id.clone(),
                check_name: ev.check.clone(),
                at,
                query: ev.query.clone(),
                value: ev.value,
                verdict: serde_json::to_value(ev.verdict)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                reason: ev.reason.clone(),
                in_session,
            });
            self.counters.verdict(ev.verdict);
            results.push(CheckResult {
                check: ev.check,
                verdict: ev.verdict,
                in_session,
            });
        }
        if let Err(e) = self.store.insert_check_results(&records).await {
            tracing::warn!(rollout = %rec.id, error = %e, "Check results not stored (the decision is still journalled in the audit log).");
        }
        results
    }

    async fn hold_idle(&self, p: &PoolRecord, now: DateTime<Utc>) {
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
        let backend = self
            .traffic
            .backend(&spec.traffic, &Self::orientation(&spec, p));
        let stale = self
            .lock_live()
            .views
            .get(&p.target)
            .is_none_or(|v| now - v.at >= self.cfg.drift_interval);
        if !stale {
            return;
        }
        let Ok(reading) = backend.read().await else {
            return;
        };
        let above: Vec<(String, f64)> = reading
            .shares()
            .into_iter()
            .filter(|(_, s)| *s > engine::DRIFT_TOLERANCE)
            .collect();
        self.lock_live()
            .views
            .insert(p.target.clone(), TargetView { at: now, reading });
        if above.is_empty() {
            return;
        }
        let why = format!(
            "idle pool {} of {} carries traffic with no active rollout ({}) — set back to 0",
            p.idle,
            p.target,
            above
                .iter()
                .map(|(e, s)| format!("{e}: {s:.1}%"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracing::warn!(target = %p.target, "{why}");
        let _ = self
            .store
            .append_event(&NewEvent {
                at: now,
                kind: "drift_corrected".into(),
                why,
                input: "{}".into(),
                state: "idle".into(),
                ..Default::default()
            })
            .await;
        if let Err(e) = backend.apply(0).await {
            tracing::error!(target = %p.target, error = %e, "Could not set the idle pool back to 0.");
        }
    }

    /// Sleep until the next due time or a poke; run passes until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            match self.pass().await {
                Ok(r) => {
                    tracing::debug!(rollouts = r.rollouts, ticks = r.ticks, "Controller pass.")
                }
                Err(e) => {
                    tracing::error!(error = %e, "Controller pass failed; no raise until the store answers again.")
                }
            }
            let now = self.now();
            let next = self.store.next_wake().await.ok().flatten();
            let until = next.map_or(self.cfg.drift_interval, |n| {
                (n - now).clamp(TimeDelta::milliseconds(50), self.cfg.drift_interval)
            });
            let sleep = until.to_std().unwrap_or(std::time::Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
        self.settled().await;
    }
}

/// Monotonic counters for `/metrics` (low cardinality: no rollout labels).
#[derive(Debug, Default)]
pub struct Counters {
    /// Transitions committed (decisions in the audit log).
    pub transitions: std::sync::atomic::AtomicU64,
    /// Weight writes confirmed on every endpoint.
    pub weight_changes: std::sync::atomic::AtomicU64,
    /// Sum of decision → confirmation latencies of those writes, in ms.
    pub weight_change_ms_sum: std::sync::atomic::AtomicU64,
    /// Weight writes that failed or were not confirmed.
    pub backend_errors: std::sync::atomic::AtomicU64,
    /// Check evaluations by verdict: pass, fail, inconclusive, error.
    pub evaluations: [std::sync::atomic::AtomicU64; 4],
}

impl Counters {
    fn verdict(&self, v: engine::Verdict) {
        let i = match v {
            engine::Verdict::Pass => 0,
            engine::Verdict::Fail => 1,
            engine::Verdict::Inconclusive => 2,
            engine::Verdict::Error => 3,
        };
        self.evaluations[i].fetch_add(1, Ordering::Relaxed);
    }
}

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

/// When the rollout next needs the controller: its earliest timer or its
/// next check evaluation.
fn next_wake_of(spec: &Spec, t: &engine::Transition, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
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

async fn actuator(ctl: Arc<Controller>, target: String, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        if let Err(e) = actuate(&ctl, &job).await {
            tracing::error!(rollout = %job.rollout_id, target = %target, error = %e, "Write failed.");
        }
        if ctl.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            ctl.idle.notify_waiters();
        }
    }
}

async fn actuate(ctl: &Arc<Controller>, job: &Job) -> Result<(), ControlError> {
    let Effect::Apply {
        share,
        deadline,
        drain_and_shutdown,
        version,
    } = job.effect
    else {
        return Ok(());
    };
    // Drop a write whose decision is no longer current.
    let Some(rec) = ctl.store.rollout(&job.rollout_id).await? else {
        return Ok(());
    };
    let r: Rollout = serde_json::from_str(&rec.data).map_err(|e| ctl_err(&rec.id, e))?;
    let current = r
        .write
        .as_ref()
        .is_some_and(|w| w.version == version && w.share == share);
    if !current {
        tracing::debug!(rollout = %rec.id, version, "Stale write dropped.");
        return Ok(());
    }
    // A raise is re-checked right before the write: deadline, freeze, clock.
    if let Some(deadline) = deadline {
        let now = ctl.now();
        let frozen = ctl.store.freeze().await?.on;
        if now >= deadline || frozen || !ctl.clock_trusted() {
            tracing::warn!(rollout = %rec.id, share, %deadline, frozen, "Raise not written: past its deadline, frozen or clock untrusted.");
            return Ok(());
        }
    }
    // Test builds only (`--features failpoints`): die between "raise
    // decided and committed" and "written", to prove crash recovery.
    #[cfg(feature = "failpoints")]
    if deadline.is_some()
        && std::env::var("MUHURAT_FAILPOINT").as_deref() == Ok("before_raise_write")
    {
        tracing::error!(rollout = %rec.id, "Failpoint before_raise_write: exiting.");
        std::process::exit(86);
    }
    let result = if drain_and_shutdown
        || (deadline.is_none() && share == 0 && matches!(r.state, State::RollingBack))
    {
        // Drain always; shut the canary's sessions as the spec says, or by
        // default for `mode tcp` (DESIGN §3 *Rollback and abort*).
        let shut = match job.shutdown_sessions {
            Some(b) => b,
            None => job.backend.shutdown_sessions_by_default().await,
        };
        job.backend.rollback(shut).await
    } else {
        job.backend.apply(share).await
    };
    let input = match result {
        Ok(rep) => {
            tracing::info!(rollout = %rec.id, share, confirmed = rep.confirmed, detail = %rep.detail, "Weight written.");
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
            }
        }
        // Someone else wrote the target (a Consul CAS conflict): a raise is
        // never retried over their write — the rollout pauses for a person.
        // A decrease keeps being retried (the backend writes it over theirs).
        Err(crate::traffic::TrafficError::Conflict(m)) if deadline.is_some() => Input::Pause {
            by: "muhurat".into(),
            reason: Some(format!(
                "the target was changed by someone else while raising to {share}%: {m}"
            )),
        },
        Err(e) => {
            ctl.counters.backend_errors.fetch_add(1, Ordering::Relaxed);
            Input::Applied {
                version,
                share,
                confirmed: false,
                detail: e.to_string(),
            }
        }
    };
    ctl.input(&rec.id, input, None).await?;
    Ok(())
}

/// `kite-api-20261126-1a2b3c`: readable, sortable, unique.
fn new_id(name: &str, now: DateTime<Utc>) -> String {
    let short = uuid::Uuid::new_v4().simple().to_string();
    format!("{name}-{}-{}", now.format("%Y%m%d"), &short[..6])
}
