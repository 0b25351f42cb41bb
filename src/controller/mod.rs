//! The controller: the tokio driver around the pure engine.
//!
//! The one decision a newcomer must know: **the engine is the only decider
//! of any traffic move, and the controller only executes its decisions.**
//! Every transition — from a pass, an actuator outcome or an API command —
//! goes through [`Controller::input`]: one store transaction that locks the
//! row, runs [`engine::step`] with the one context [`Controller::ctx_parts`]
//! builds, appends the events (and, on success, swaps the pools in the same
//! transaction), and only after the commit hands the `Apply` effects to the
//! target's actuator. Target-level moves (adopt, the idle-pool hold) are
//! decided by the pure [`engine::target`] functions and executed the same
//! way. The actuator passes every command through the gate at the wire
//! ([`crate::traffic::gate`]), so no path can raise a pool outside a live,
//! committed raise.
//!
//! The files:
//! - `mod.rs` — the controller's state, the one transition path, the loop;
//! - `pass.rs` — the scheduler: one pass over the active rollouts (drift
//!   reads, due evaluations, ticks, stuck preflights) and the next wake-up;
//! - `actuator.rs` — one task per target serialising its writes, the job
//!   queue (de-duplicated), and the controller as the gate's world;
//! - `evaluate.rs` — running a rollout's checks against the metrics store;
//! - `degraded.rs` — store outages: journal, decreases only, replay;
//! - `target.rs` — orientation, adopt and the idle-pool hold;
//! - `start.rs` — validating and creating a rollout, preflight;
//! - `trust.rs` — whether the clock may be trusted for a raise;
//! - `calendars.rs`, `journal.rs` — calendars in force, the local journal.

mod actuator;
pub mod calendars;
mod degraded;
mod evaluate;
pub mod gauges;
pub mod journal;
mod pass;
mod start;
mod target;
pub mod testing;
mod trust;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, mpsc};

use crate::clock::Clock;
use crate::engine::{self, Ctx, Effect, Input, Refusal, Rollout};
use crate::gates::MetricsSource;
use crate::spec::{self, Analysis, Spec};
use crate::store::{
    FreezeRecord, NewEvent, NewOutbox, PoolRecord, RolloutRecord, Store, StoreError, Update,
};
use crate::traffic::{Reading, TrafficFactory};
use crate::windows::{self, Interval};
pub use calendars::Calendars;
pub use pass::PassReport;
pub use start::{StartError, StartOutcome, StartRequest};
pub use target::{AdoptError, AdoptOutcome};
pub use trust::ClockStatus;

/// Builds the metrics source for a spec's `analysis`.
pub trait MetricsFactory: Send + Sync {
    fn source(&self, analysis: &Analysis) -> Result<Arc<dyn MetricsSource>, String>;
}

#[derive(Debug, Clone)]
pub struct Config {
    /// How often every target's weights are read back (docs/design.md: 10 s).
    pub drift_interval: TimeDelta,
    /// Above this measured skew (or kernel maximum error) no raise is made
    /// (docs/design.md: 5 s).
    pub max_clock_skew: TimeDelta,
    /// Recorded with every decision.
    pub policy_version: String,
    /// Compare the local clock with the database's (PostgreSQL). Off only
    /// where the controller runs on a manual clock (simulations), which the
    /// real database clock would always contradict.
    pub measure_db_skew: bool,
    /// Trust a clock the kernel reports unsynchronised (demos, tests on a
    /// machine without NTP). Every decision and `/readyz` say so.
    pub allow_unsynced_clock: bool,
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
            allow_unsynced_clock: false,
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

/// (spec hash, calendar version, freeze start if on, hour since the epoch).
type WindowKey = (String, String, Option<i64>, i64);

/// What the controller last read of a target.
#[derive(Debug, Clone)]
struct TargetView {
    at: DateTime<Utc>,
    reading: Reading,
}

/// What a reading told the engine last, per rollout.
type ObservedKey = (BTreeMap<String, f64>, BTreeMap<String, String>);

#[derive(Default)]
struct Live {
    views: HashMap<String, TargetView>,
    /// The latest evaluation instant per rollout whose results the engine
    /// has taken (re-derived after a crash from the checks' `last_at`).
    last_eval: HashMap<String, DateTime<Utc>>,
    specs: HashMap<(String, String), Arc<Spec>>,
    /// spec hash → calendar name, so a cached spec is found without
    /// re-parsing its YAML.
    spec_calendar: HashMap<String, String>,
    /// When each server-wide warning was last sent (at most once a day).
    warned: HashMap<String, DateTime<Utc>>,
    /// The spec last run on each target (for idle targets' drift checks).
    target_spec: HashMap<String, Arc<Spec>>,
    /// The reading last fed to the engine as `Observed`, per rollout.
    observed_sent: HashMap<String, ObservedKey>,
    /// The active rollouts and pool states as last read: what the controller
    /// knows when the store does not answer.
    cache: Vec<RolloutRecord>,
    pools_cache: HashMap<String, PoolRecord>,
    /// Permitted windows per (spec hash, calendar version, freeze, hour).
    windows: HashMap<WindowKey, Arc<Vec<Interval>>>,
    /// Rollouts whose preflight is running now.
    preflights: HashSet<String>,
    /// Decreases written and confirmed while the store was unreachable:
    /// (rollout, write version).
    degraded_done: HashSet<(String, u64)>,
    /// Active rollouts whose passes fail, in a row: the controller cannot
    /// act on them (a stored spec that no longer validates against the
    /// calendar loaded at start, say). Rebuilt every pass; emptied while the
    /// store is down (that is reported as itself).
    failing: BTreeMap<String, PassFailing>,
}

/// A rollout whose controller passes fail, in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassFailing {
    /// The first pass of the run that failed.
    pub since: DateTime<Utc>,
    /// Passes failed in a row.
    pub passes: u32,
    /// The latest error.
    pub error: String,
}

/// A rollout is reported as one the controller cannot act on after this
/// many failed passes in a row, so a passing hiccup (a busy database) is
/// not an alarm.
pub const PASS_FAILING_AFTER: u32 = 3;

pub struct Controller {
    store: Store,
    calendars: Arc<Calendars>,
    traffic: Arc<dyn TrafficFactory>,
    metrics: Arc<dyn MetricsFactory>,
    clock: Arc<dyn Clock>,
    cfg: Config,
    wake: Notify,
    live: Mutex<Live>,
    trust: Mutex<trust::Trust>,
    /// The global freeze as this server knows it: set before the store when
    /// switched on, after it when switched off, and refreshed every pass.
    /// The gate reads it before every raising command.
    frozen: AtomicBool,
    /// Why this server must not write at all (it lost its one-server lock).
    not_acting: Mutex<Option<String>>,
    actuators: Mutex<HashMap<String, mpsc::UnboundedSender<actuator::Job>>>,
    /// Keys of the jobs queued or running, so a job is never queued twice.
    queued: Mutex<HashSet<String>>,
    in_flight: AtomicUsize,
    idle: Notify,
    counters: Counters,
    gauges: gauges::Gauges,
}

fn ctl_err(id: &str, m: impl std::fmt::Display) -> ControlError {
    ControlError::Broken {
        id: id.to_string(),
        message: m.to_string(),
    }
}

/// What [`Ctx`] borrows, built in one place for every caller of the engine.
struct CtxParts {
    spec: Arc<Spec>,
    calendar: Arc<crate::calendar::Calendar>,
    permitted: Arc<Vec<Interval>>,
    frozen: bool,
    clock_trusted: bool,
    canary_up: bool,
    live_up: bool,
    calendar_version: String,
    policy_version: String,
}

impl CtxParts {
    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            spec: &self.spec,
            calendar: &self.calendar,
            permitted: &self.permitted,
            frozen: self.frozen,
            clock_trusted: self.clock_trusted,
            canary_up: self.canary_up,
            live_up: self.live_up,
            calendar_version: &self.calendar_version,
            policy_version: &self.policy_version,
        }
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
            trust: Mutex::new(trust::Trust::default()),
            frozen: AtomicBool::new(false),
            not_acting: Mutex::new(None),
            actuators: Mutex::new(HashMap::new()),
            queued: Mutex::new(HashSet::new()),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            counters: Counters::default(),
            gauges: gauges::Gauges::default(),
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

    /// Gauges for `/metrics`, kept in memory: a scrape reads no store.
    pub fn gauges(&self) -> &gauges::Gauges {
        &self.gauges
    }

    /// Load the `/metrics` gauges (every rollout's state, the freeze) from
    /// the store, once, at start. From then on each commit updates them.
    pub async fn load_gauges(&self) -> Result<(), StoreError> {
        let states = self.store.rollout_states().await?;
        self.gauges.load(states);
        if self.store.freeze().await?.on {
            // Only ever towards "frozen": the first pass refreshes it.
            self.frozen.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The traffic backends (reads for `pools` and `check-target`; writes
    /// only through the actuators).
    pub fn traffic(&self) -> &Arc<dyn TrafficFactory> {
        &self.traffic
    }

    /// The metrics sources (for `check-metrics`).
    pub fn metrics(&self) -> &Arc<dyn MetricsFactory> {
        &self.metrics
    }

    /// Active rollouts whose last [`PASS_FAILING_AFTER`] passes or more all
    /// failed, by id (see `Live::failing`).
    pub fn failing_rollouts(&self) -> BTreeMap<String, PassFailing> {
        self.lock_live()
            .failing
            .iter()
            .filter(|(_, f)| f.passes >= PASS_FAILING_AFTER)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The spec a stored rollout runs (validated against the calendar in force).
    pub fn spec_for(&self, rec: &RolloutRecord) -> Result<Arc<Spec>, ControlError> {
        self.spec_of(rec)
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

    // ---- the freeze and the one-server lock ---------------------------------

    /// Switch the global freeze, as the engine and the gate see it. On:
    /// in memory first (no raising command is sent from this instant), then
    /// stored. Off: stored first, then in memory.
    pub async fn set_freeze(
        &self,
        rec: &FreezeRecord,
        event: &NewEvent,
    ) -> Result<i64, StoreError> {
        if rec.on {
            self.frozen.store(true, Ordering::SeqCst);
        }
        let seq = self.store.set_freeze(rec, event).await?;
        if !rec.on {
            self.frozen.store(false, Ordering::SeqCst);
        }
        self.poke();
        Ok(seq)
    }

    /// The freeze as last known (refreshed from the store every pass).
    pub fn frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    /// Stop (or resume) writing anything: the server lost (or regained) its
    /// one-server lock, and another server may be acting on the database.
    pub fn set_acting(&self, not_acting: Option<String>) {
        match &not_acting {
            Some(why) => {
                tracing::error!(why = %why, "Not acting: no write is sent until this is fixed.")
            }
            None => tracing::info!("Acting again: the one-server lock is held."),
        }
        *self.not_acting.lock().unwrap_or_else(|e| e.into_inner()) = not_acting;
    }

    /// Why the server sends no write at all now, if so.
    pub fn not_acting(&self) -> Option<String> {
        self.not_acting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    // ---- the clock -----------------------------------------------------------

    /// The largest measured clock skew, if any is current.
    pub fn clock_skew(&self) -> Option<TimeDelta> {
        self.clock_status().skew
    }

    pub fn clock_trusted(&self) -> bool {
        self.clock_status().trusted
    }

    /// Whether a raise may trust the clock now, and why not.
    pub fn clock_status(&self) -> ClockStatus {
        let now = self.now();
        // The kernel is asked every time (one syscall): the first decision
        // after a start must not see "unknown".
        let kernel = self.clock.kernel_sync();
        let mut t = self.trust.lock().unwrap_or_else(|e| e.into_inner());
        t.kernel(now, kernel);
        t.status(now, &self.cfg)
    }

    // ---- specs and windows -------------------------------------------------

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
            None => spec_calendar_name(rec)?,
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

    /// The one way the engine's context is built (controller passes, API
    /// commands, actuator outcomes, the degraded pass).
    fn ctx_parts(
        &self,
        rec: &RolloutRecord,
        spec: Arc<Spec>,
        now: DateTime<Utc>,
        freeze: &FreezeRecord,
    ) -> Result<CtxParts, ControlError> {
        let calendar = self.calendars.get(&spec.calendar).ok_or_else(|| {
            ctl_err(
                &rec.id,
                format!("calendar `{}` is not loaded", spec.calendar),
            )
        })?;
        let permitted = self.permitted_at(&rec.spec_hash, &spec, &calendar, now, freeze);
        let (canary_up, live_up) = self.health_of(&rec.target);
        Ok(CtxParts {
            calendar_version: calendar.version.to_string(),
            policy_version: self.cfg.policy_version.clone(),
            spec,
            calendar,
            permitted,
            frozen: freeze.on,
            clock_trusted: self.clock_trusted(),
            canary_up,
            live_up,
        })
    }

    fn health_of(&self, target: &str) -> (bool, bool) {
        match self.lock_live().views.get(target) {
            Some(v) => (v.reading.canary_up(), v.reading.live_up()),
            // Not read yet: no raise until it has been (fail closed), but a
            // rollback does not wait for it either.
            None => (false, true),
        }
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
        let parts = self.ctx_parts(&rec, spec.clone(), now, freeze)?;
        // The pools as stored: the orientation of every write this
        // transition decides, and what a success swaps.
        let pools = self.store.pool_state(&rec.target).await?;
        let skew = self.clock_skew();
        let clock_note = self.clock_status().note;
        let mut out: Option<engine::Transition> = None;
        let mut moved_wake: Option<Option<DateTime<Utc>>> = None;
        let mut new_state: Option<String> = None;
        let committed = self
            .store
            .transition(id, |cur| {
                let r: Rollout =
                    serde_json::from_str(&cur.data).map_err(|e| ControlError::Broken {
                        id: cur.id.clone(),
                        message: format!("stored state is unreadable: {e}"),
                    })?;
                let t = engine::step(&r, input.clone(), now, &parts.ctx())
                    .map_err(ControlError::Refused)?;
                let next_wake = pass::next_wake_of(&spec, &t, now);
                if next_wake != cur.next_wake {
                    moved_wake = Some(next_wake);
                }
                let live_changed =
                    t.rollout.observed != r.observed || t.rollout.unreachable != r.unreachable;
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
                        pools: None,
                    })
                } else {
                    Some(self.update_for(
                        cur,
                        &t,
                        &input,
                        principal,
                        &parts,
                        skew,
                        &clock_note,
                        next_wake,
                        pools.as_ref(),
                    )?)
                };
                out = Some(t);
                new_state = update.as_ref().map(|u| u.state.clone());
                Ok::<_, ControlError>(update)
            })
            .await?;
        let committed = committed?;
        // The `/metrics` gauge follows the commit (never a store read).
        if let (Some(_), Some(state)) = (&committed, &new_state) {
            self.gauges.set(id, state);
        }
        let Some(t) = out else { return Ok(None) };
        if !t.events.is_empty() {
            self.counters.transitions.fetch_add(1, Ordering::Relaxed);
        }
        match (&committed, moved_wake) {
            (None, Some(w)) => {
                // Nothing decided, but the next due time moved (a window
                // opening came closer): keep the controller's timer right.
                self.store.set_next_wake(id, w).await?;
                self.poke();
            }
            // The next due time moved (a weight confirmed restarts the
            // check timer): the loop may be sleeping towards a later one.
            (Some(_), Some(_)) => self.poke(),
            _ => {}
        }
        for e in &t.events {
            tracing::info!(rollout = %id, step = e.step, state = t.rollout.state.as_str(), why = %e.why, "{:?}", e.kind);
        }
        if t.effects.iter().any(|e| matches!(e, Effect::SwapPools)) {
            tracing::info!(rollout = %id, target = %rec.target, "Pools swapped with the success event.");
        }
        let orientation = match &pools {
            Some(p) => Some(
                self.orientation_stored(&spec, p)
                    .map_err(|e| ctl_err(id, e))?,
            ),
            None => None,
        };
        // Nothing decided: only a retry of an outstanding write may be due
        // (a Tick re-emits it). The actuator de-duplicates.
        for e in &t.effects {
            if let Effect::Apply { .. } = e {
                let Some(o) = &orientation else {
                    return Err(ctl_err(id, "target has no pool state"));
                };
                self.enqueue_effect(&rec, &spec, o, e, false);
            }
        }
        Ok(Some(t.rollout))
    }

    /// The store update for a transition that decided something.
    #[allow(clippy::too_many_arguments)]
    fn update_for(
        &self,
        cur: &RolloutRecord,
        t: &engine::Transition,
        input: &Input,
        principal: Option<&str>,
        parts: &CtxParts,
        skew: Option<TimeDelta>,
        clock_note: &Option<String>,
        next_wake: Option<DateTime<Utc>>,
        pools: Option<&PoolRecord>,
    ) -> Result<Update, ControlError> {
        let data = serde_json::to_string(&t.rollout).expect("a rollout serializes");
        let mut input_json = serde_json::to_value(input).expect("an input serializes");
        if let (Some(note), Some(obj)) = (clock_note, input_json.as_object_mut()) {
            // Every decision says when the clock was trusted only because
            // the operator allowed an unsynchronised kernel clock.
            obj.insert("clock".into(), serde_json::Value::String(note.clone()));
        }
        let input_json = input_json.to_string();
        let events: Vec<NewEvent> = t
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
                calendar: Some(parts.calendar.name.clone()),
                calendar_version: e.calendar_version.clone(),
                policy_version: e.policy_version.clone(),
                clock_skew_ms: skew.map(|d| d.num_milliseconds()),
            })
            .collect();
        // Each notification belongs to the event of its kind (the outbox is
        // de-duplicated per event and channel, so sharing one event would
        // drop all but the first).
        let mut used = vec![false; t.events.len()];
        let mut outbox = Vec::new();
        for e in &t.effects {
            let Effect::Notify { kind, text } = e else {
                continue;
            };
            let idx = t
                .events
                .iter()
                .enumerate()
                .position(|(i, ev)| ev.kind == *kind && !used[i])
                .or_else(|| used.iter().position(|u| !u))
                .unwrap_or(t.events.len().saturating_sub(1));
            if let Some(u) = used.get_mut(idx) {
                *u = true;
            }
            for n in &parts.spec.notify {
                outbox.push(NewOutbox {
                    channel: format!("webhook:{}", n.webhook_secret),
                    payload: serde_json::json!({"kind": kind, "text": text}).to_string(),
                    event: idx,
                });
            }
        }
        let pools = if t.effects.iter().any(|e| matches!(e, Effect::SwapPools)) {
            let p =
                pools.ok_or_else(|| ctl_err(&cur.id, "the target has no pool record to swap"))?;
            Some(PoolRecord {
                target: p.target.clone(),
                live: p.idle.clone(),
                idle: p.live.clone(),
                updated_at: t.rollout.updated_at,
            })
        } else {
            None
        };
        Ok(Update {
            state: t.rollout.state.as_str().into(),
            active: !t.rollout.state.is_terminal(),
            data,
            next_wake,
            events,
            outbox,
            pools,
        })
    }

    /// Re-read the calendars folder; a new version that an active rollout's
    /// spec no longer validates against (a renamed or removed segment) is
    /// refused, so no rollout is left unable to decide — not even to abort.
    pub async fn reload_calendars(&self) -> Result<calendars::ReloadReport, ControlError> {
        let active = self.store.rollouts(true, 100_000).await?;
        let cals = self.calendars.clone();
        let report = tokio::task::spawn_blocking(move || {
            cals.reload_with(|cal| {
                let broken: Vec<String> = active
                    .iter()
                    .filter(|r| spec_calendar_name(r).is_ok_and(|n| n == cal.name))
                    .filter_map(|r| {
                        spec::load("spec", &r.spec_yaml, |_| Ok(cal.clone()))
                            .err()
                            .map(|d| {
                                format!(
                                    "active rollout {} no longer validates against it ({})",
                                    r.id,
                                    d.iter()
                                        .map(ToString::to_string)
                                        .collect::<Vec<_>>()
                                        .join("; ")
                                )
                            })
                    })
                    .collect();
                if broken.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} — let those rollouts finish or abort them first",
                        broken.join("; ")
                    ))
                }
            })
        })
        .await
        .map_err(|e| ctl_err("calendars", e))?;
        self.poke();
        Ok(report)
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

/// The calendar a stored spec names (its `calendar:` key; parse just enough).
fn spec_calendar_name(rec: &RolloutRecord) -> Result<String, ControlError> {
    let raw: spec::RawSpec =
        crate::yaml::from_str("stored spec", &rec.spec_yaml).map_err(|d| ctl_err(&rec.id, d))?;
    Ok(raw.calendar.trim().to_string())
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
    /// Commands the gate at the wire refused.
    pub gate_refusals: std::sync::atomic::AtomicU64,
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

/// `kite-api-20261126-1a2b3c`: readable, sortable, unique.
fn new_id(name: &str, now: DateTime<Utc>) -> String {
    let short = uuid::Uuid::new_v4().simple().to_string();
    format!("{name}-{}-{}", now.format("%Y%m%d"), &short[..6])
}
