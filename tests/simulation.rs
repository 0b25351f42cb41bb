//! The deterministic simulation of the whole controller (issue 9, "The
//! simulation"): for each seed, a world — the real NSE calendar, a manual
//! clock somewhere in December 2026, a SQLite store, an in-memory HAProxy
//! target with 2–3 endpoints that can be down, stuck, slow, reloaded or
//! hand-edited, scripted metrics that can pass, fail, be empty or error — and
//! a random schedule of world and operator actions interleaved with
//! controller passes, crashes and restarts. After every step it checks the
//! safety invariants on what the endpoints actually *received* (the memory
//! target's command log) and on the store:
//!
//! - **W** every command that raised a pool's share on an endpoint was sent
//!   under a raise permit, before its deadline (with the command's own
//!   timeout to spare), inside a permitted window, with the freeze off and
//!   the kernel clock synchronised, and it raised the target's recorded idle
//!   pool; no command ever raised the recorded idle pool by lowering the
//!   live one (except an `adopt` of a pool that already carried most);
//! - **P** the pool record's live pool is the last successful rollout's
//!   canary (or the last adopted pool) whenever we look;
//! - **R** a rollout is `rolled_back`/`aborted` only with every endpoint up,
//!   reading canary 0, and drained once anything was written;
//! - **O** no raise reaches an endpoint whose canary an operator (or a
//!   reload) lowered, until a person resumed after it;
//! - **C** every pass runs the check evaluation that is due;
//! - and at the end, once the world heals, an aborted rollout finishes and
//!   the idle pool is held at 0 (liveness).
//!
//! `SIM_SEED=n` replays one seed, `SIM_SEEDS=n` runs n seeds (from
//! `SIM_FIRST`, default 0), `SIM_STEPS=n` sets the steps per seed,
//! `SIM_KEEP_GOING=1` reports every failing seed instead of stopping at the
//! first, `SIM_VERBOSE=1` prints every seed's step log. A failing seed prints
//! itself and its step log. `scripts/sim-soak` runs many.
//!
//! Defects the simulation found in src/ and that are not fixed yet are
//! listed in [`KNOWN_DEFECTS`]: the loop tolerates each only where its exact
//! condition holds (and counts it), so it keeps hunting for others;
//! `SIM_STRICT=1` (or `SIM_STRICT=name,…`) tolerates none (or not those).
//! Each also has a scenario test at the end of this file, named after it,
//! that asserts the invariant strictly.
//!
//! Determinism: the schedule (every action and its parameters) is a pure
//! function of the seed. The controller's own tasks run on one
//! current-thread runtime and every step waits until they are all idle, so
//! the interleaving is the same on a replay; only SQLite's I/O threads
//! could in principle reorder two writes inside one step.

#[path = "support/simrng.rs"]
mod simrng;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use muhurat::clock::{Clock, KernelSync, ManualClock};
use muhurat::controller::testing::ScriptedMetrics;
use muhurat::controller::{
    AdoptError, Calendars, Config, Controller, StartError, StartOutcome, StartRequest,
};
use muhurat::engine::{Input, Rollout, State};
use muhurat::gates::{GateError, Sample};
use muhurat::store::{FreezeRecord, NewEvent, PoolRecord, Store};
use muhurat::traffic::memory::{Command, MemoryFactory, MemoryTarget};
use muhurat::windows::{self, Interval};
use simrng::Rng;

const IST: chrono_tz::Tz = chrono_tz::Asia::Kolkata;
const EPS: f64 = 1e-6;
/// `muhurat::engine::DRIFT_TOLERANCE`: smaller hand edits are not drift.
const TOLERANCE: f64 = 0.5;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The shipped nse.yaml covers 2026 only: the simulated span stays inside
/// December 2026 (the last day is kept free for the windows' horizon).
fn sim_start() -> DateTime<Utc> {
    t("2026-12-01T00:00:00+05:30")
}
fn sim_cap() -> DateTime<Utc> {
    t("2026-12-30T00:00:00+05:30")
}

const POOLS: [&str; 2] = ["blue", "green"];

const STEP_VARIANTS: [&str; 3] = [
    // The shape of tests/support/sim.rs: bakes across sessions, an approval.
    "  - set_weight: 5\n  - bake: {sessions: 1, segment: equity}\n  - approval: {min: 1}\n  - set_weight: 50\n  - bake: {sessions: 1}\n  - set_weight: 100\n  - bake: {sessions: 1}\n",
    // Short bakes by duration: reaches success within a simulated day or two.
    "  - set_weight: 5\n  - bake: {duration: 30m}\n  - approval: {min: 1}\n  - set_weight: 100\n  - bake: {duration: 1h}\n",
    // No bake at all.
    "  - set_weight: 10\n  - set_weight: 100\n",
];

fn spec_yaml(endpoints: &[String], interval: &str, steps: &str, on_failure: &str) -> String {
    let eps = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"name: kite-api
calendar: nse
segments: [equity, fno, currency, commodity]
traffic:
  haproxy:
    endpoints: [{eps}]
    backend: kite_api
    pools: {{blue: [b1, b2], green: [g1, g2]}}
analysis:
  prometheus: http://127.0.0.1:8428
  interval: {interval}
  query_delay: 30s
  min_passes: 2
  inconclusive_limit: 3
  checks:
    - name: error-rate
      query: errors{{server=~"{{{{canary_servers}}}}"}}
      max: 0.01
on_failure: {on_failure}
steps:
{steps}"#
    )
}

/// Weekdays 08:00–24:00 IST: customers trade and the metrics store has data.
fn trading(at: DateTime<Utc>) -> bool {
    use chrono::{Datelike, Timelike, Weekday};
    let l = at.with_timezone(&IST);
    !matches!(l.weekday(), Weekday::Sat | Weekday::Sun) && l.hour() >= 8
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metrics {
    Healthy,
    Failing,
    Empty,
    Error,
}

fn script(m: Metrics) -> impl Fn(&str, DateTime<Utc>) -> Result<Sample, GateError> + Send + Sync {
    move |_q, at| match m {
        Metrics::Healthy if trading(at) => Ok(Sample::Value(0.001)),
        Metrics::Healthy | Metrics::Empty => Ok(Sample::NoData),
        Metrics::Failing => Ok(Sample::Value(0.5)),
        Metrics::Error => Err(GateError(
            "simulated: the metrics store answered 503".into(),
        )),
    }
}

/// What the simulation knows independently of the controller.
#[derive(Debug, Default)]
struct Model {
    frozen: bool,
    kernel_synced: bool,
    /// The pool the store must say is live (None before the first start).
    expected_live: Option<String>,
    /// Endpoints whose canary a person or a reload lowered below what
    /// muhurat had left there, since the last human resume (or the start of
    /// the rollout), with when.
    lowered: BTreeMap<String, DateTime<Utc>>,
    /// The kernel clock changed and no pass has read it since.
    kernel_unread: bool,
    /// Rollouts started: (id, canary pool, spec yaml).
    rollouts: Vec<(String, String, String)>,
    seen_terminal: BTreeSet<String>,
}

struct World {
    rng: Rng,
    clock: Arc<ManualClock>,
    store: Store,
    _dir: Option<tempfile::TempDir>,
    _journal_dir: tempfile::TempDir,
    cals: Arc<Calendars>,
    traffic: MemoryFactory,
    target: MemoryTarget,
    target_id: String,
    metrics: ScriptedMetrics,
    cfg: Config,
    c: Arc<Controller>,
    endpoints: Vec<String>,
    interval: String,
    model: Model,
    /// Permitted windows (no freeze) per spec yaml.
    windows: HashMap<String, Vec<Interval>>,
    /// Tasks that live as long as the runtime (one actuator per controller
    /// incarnation, the pool's own): what "idle" looks like.
    baseline_tasks: usize,
    log: Vec<String>,
    /// Known defects this run does not report ([`KNOWN_DEFECTS`]).
    tolerated: BTreeSet<&'static str>,
    /// What the run exercised (so a vacuous simulation is noticed).
    stats: Stats,
    /// No chaos from people or the clock this seed (see `step`).
    calm: bool,
}

type Stats = BTreeMap<String, u64>;

fn count(stats: &mut Stats, what: &str) {
    *stats.entry(what.to_string()).or_default() += 1;
}

/// One step's context for the checks.
struct StepCtx {
    frozen: bool,
    synced: bool,
    pools_before: Option<PoolRecord>,
    pools_after: Option<PoolRecord>,
    /// The active rollout's spec when the step began.
    spec_yaml: Option<String>,
    /// Lowered endpoints → whether the engine has seen a drift since.
    lowered: BTreeMap<String, bool>,
    adopt: bool,
    kernel_unread: bool,
}

fn state_of(rec: &muhurat::store::RolloutRecord) -> Rollout {
    serde_json::from_str(&rec.data).unwrap()
}

impl World {
    async fn new(seed: u64, tolerated: BTreeSet<&'static str>) -> World {
        World::build(seed, tolerated, None).await
    }

    /// A world whose clock starts at `start` (the regression scenarios).
    async fn build(
        seed: u64,
        tolerated: BTreeSet<&'static str>,
        at: Option<DateTime<Utc>>,
    ) -> World {
        let mut rng = Rng::new(seed);
        // The store on a temp SQLite file — in memory-backed /dev/shm where
        // there is one: a seed runs hundreds of transactions.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let url = format!("sqlite://{}", dir.path().join("muhurat.db").display());
        let store = Store::open(&url).await.unwrap();
        let dir = Some(dir);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cals = Arc::new(Calendars::load(&root.join("rollouts/calendars")).unwrap());
        // Any instant of the first 20 days of December, to the second.
        let start = sim_start() + TimeDelta::seconds(rng.range(0, 20 * 86_400));
        let start = at.unwrap_or(start);
        let clock = Arc::new(ManualClock::new(start));
        let traffic = MemoryFactory::with_clock(clock.clone());
        let metrics = ScriptedMetrics::new(script(Metrics::Healthy));
        let journal_dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            drift_interval: TimeDelta::seconds(rng.range(2, 600)),
            measure_db_skew: false,
            allow_unsynced_clock: false,
            journal: journal_dir.path().join("muhurat.journal"),
            ..Config::default()
        };
        let n = rng.range(2, 3) as usize;
        let endpoints: Vec<String> = ["a", "b", "c"][..n]
            .iter()
            .map(|e| format!("unix:/run/haproxy/{e}.sock"))
            .collect();
        let interval = rng.pick(&["2m", "5m", "15m", "30m"]).to_string();
        let calm = rng.chance(35);
        let c = Controller::new(
            store.clone(),
            cals.clone(),
            Arc::new(traffic.clone()),
            Arc::new(metrics.clone()),
            clock.clone(),
            cfg.clone(),
        );
        let probe = spec_yaml(&endpoints, &interval, STEP_VARIANTS[0], "rollback");
        let spec = load_spec(&cals, &probe);
        let target = traffic.target(&spec.traffic);
        let target_id = spec.traffic.target_id();
        let mut w = World {
            rng,
            clock,
            store,
            _dir: dir,
            _journal_dir: journal_dir,
            cals,
            traffic,
            target,
            target_id,
            metrics,
            cfg,
            c,
            endpoints,
            interval,
            model: Model {
                kernel_synced: true,
                ..Model::default()
            },
            windows: HashMap::new(),
            baseline_tasks: 0,
            log: Vec::new(),
            tolerated,
            stats: Stats::new(),
            calm,
        };
        w.baseline_tasks = alive_tasks();
        w.note(format!(
            "world: seed {seed}, start {} IST, endpoints {}, drift_interval {}s, interval {}, calm {}",
            start.with_timezone(&IST).format("%a %d %b %H:%M:%S"),
            w.endpoints.len(),
            w.cfg.drift_interval.num_seconds(),
            w.interval,
            w.calm
        ));
        w
    }

    fn note(&mut self, s: String) {
        let at = self
            .clock
            .now()
            .with_timezone(&IST)
            .format("%a %d %H:%M:%S");
        self.log.push(format!("[{at}] {s}"));
    }

    /// Wait until the controller's tasks are all idle: queued writes done,
    /// spawned preflights and idle holds finished, and the store pool's own
    /// short tasks (a connection going back to the pool) run.
    async fn quiesce(&mut self) {
        let began = std::time::Instant::now();
        let mut stable: Option<(usize, std::time::Instant)> = None;
        loop {
            self.c.settled().await;
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            self.c.settled().await;
            let n = alive_tasks();
            if n <= self.baseline_tasks {
                return;
            }
            match stable {
                // A new long-lived task (the actuator of a new controller
                // incarnation): idle from now on means this many.
                Some((m, since)) if m == n => {
                    if since.elapsed() >= Duration::from_millis(25) {
                        self.baseline_tasks = n;
                        return;
                    }
                }
                _ => stable = Some((n, std::time::Instant::now())),
            }
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "the controller's tasks never became idle"
            );
            // The tasks left wait on SQLite's own threads: give them the
            // CPU without sleeping a whole timer tick.
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    async fn pools(&self) -> Option<PoolRecord> {
        self.store.pool_state(&self.target_id).await.unwrap()
    }

    async fn active(&self) -> Option<(String, Rollout)> {
        let rec = self
            .store
            .active_on_target(&self.target_id)
            .await
            .unwrap()?;
        // The list query may not carry the data: read the row.
        let full = self.store.rollout(&rec.id).await.unwrap()?;
        Some((full.id.clone(), state_of(&full)))
    }

    fn windows_of(&mut self, yaml: &str) -> Vec<Interval> {
        if let Some(w) = self.windows.get(yaml) {
            return w.clone();
        }
        let cal = self.cals.get("nse").unwrap();
        let spec = load_spec(&self.cals, yaml);
        let w = windows::permitted(
            &spec.window_rules(),
            &cal,
            Interval::new(sim_start() - TimeDelta::days(2), t("2027-01-10T00:00:00Z")),
            &[],
        );
        self.windows.insert(yaml.to_string(), w.clone());
        w
    }

    /// The canary share (of `pool`) on every endpoint, as the target holds it.
    fn shares_of(&self, pool: &str) -> BTreeMap<String, f64> {
        let st = self.target.lock();
        st.shares
            .iter()
            .map(|(e, s)| {
                let v = if pool == st.first { *s } else { 100.0 - *s };
                (e.clone(), v)
            })
            .collect()
    }

    fn set_pool_share(&self, ep: &str, pool: &str, share: f64) {
        let first = self.target.lock().first.clone();
        let stored = if pool == first { share } else { 100.0 - share };
        self.target.set(ep, stored);
    }

    /// A person or a reload set `pool` (the idle pool) to `new` on `ep`:
    /// for O it counts when that is below what muhurat last left there.
    fn lowered(&mut self, ep: &str, pool: &str, new: f64) {
        let mine = self
            .target
            .lock()
            .log
            .iter()
            .rev()
            .find(|c| c.endpoint == ep && c.refused.is_none() && !c.drain)
            .map(|c| {
                if c.canary == pool {
                    c.after
                } else {
                    100.0 - c.after
                }
            })
            .unwrap_or(0.0);
        if new < mine - TOLERANCE {
            let now = self.clock.now();
            self.model.lowered.insert(ep.to_string(), now);
        }
    }

    /// The lowered endpoints, each with whether the engine has recorded a
    /// drift downwards since (after which only a person's resume may raise again).
    async fn lowered_seen(&self) -> BTreeMap<String, bool> {
        let mut out = BTreeMap::new();
        let drifts: Vec<DateTime<Utc>> = match self.model.rollouts.last() {
            Some((id, _, _)) => self
                .store
                .events(Some(id), 0, 100_000)
                .await
                .unwrap()
                .into_iter()
                // A drift *downwards* (the engine pauses for a person on
                // it); a drift upwards is corrected without a pause.
                .filter(|e| {
                    e.event.kind == "drift_detected"
                        && e.event.why.contains("manual change or reload")
                })
                .map(|e| e.event.at)
                .collect(),
            None => Vec::new(),
        };
        for (ep, at) in &self.model.lowered {
            out.insert(ep.clone(), drifts.iter().any(|d| d >= at));
        }
        out
    }

    // ---- actions -------------------------------------------------------

    async fn step(&mut self, i: usize) -> Result<(), String> {
        let pools_before = self.pools().await;
        let active_before = self.active().await;
        let spec_yaml = active_before.as_ref().and_then(|(id, _)| {
            self.model
                .rollouts
                .iter()
                .find(|r| &r.0 == id)
                .map(|r| r.2.clone())
        });
        // Chaos, but a world that also heals and operators who mostly
        // cooperate, so rollouts get far enough to raise, succeed and roll
        // back.
        let state = active_before.as_ref().map(|(_, r)| r.state);
        let (any_down, any_stuck) = {
            let st = self.target.lock();
            (!st.down.is_empty(), !st.stuck.is_empty())
        };
        // A calm seed (a third of them) has no aborts, pauses, hand edits,
        // freezes or clock trouble: rollouts get through to success.
        let chaos = |w: u64| if self.calm { 0 } else { w };
        let weights = [
            14,                                           // advance a little
            10,                                           // advance a lot
            26,                                           // controller pass
            chaos(4),                                     // operator lowers the canary
            chaos(3),                                     // operator raises the canary
            if any_down { 8 } else { 3 },                 // endpoint down/up
            3,                                            // endpoint slow
            if any_stuck { 6 } else { chaos(1) },         // endpoint stuck
            chaos(2),                                     // reload
            if self.model.frozen { 8 } else { chaos(2) }, // freeze
            if self.model.kernel_synced {
                chaos(2)
            } else {
                8
            }, // kernel clock
            chaos(2),                                     // pause
            if state == Some(State::Paused) { 10 } else { 1 }, // resume
            chaos(1),                                     // abort
            if state == Some(State::AwaitingApproval) {
                14
            } else {
                1
            }, // approve
            chaos(4),                                     // metrics
            2,                                            // crash and restart
            if state.is_none() { 4 } else { 1 },          // adopt
            if state.is_none() { 12 } else { 1 },         // start a rollout
        ];
        let action = self.rng.weighted(&weights);
        let shares_before = self.target.lock().shares.clone();
        let down_before = self.target.lock().down.clone();
        let log_before = self.target.lock().log.len();
        let mut adopt = false;
        let mut started: Option<String> = None;
        let mut pass_due: Vec<(String, DateTime<Utc>, TimeDelta)> = Vec::new();
        let ep = self.rng.pick(&self.endpoints.clone()).clone();
        let idle = pools_before.as_ref().map(|p| p.idle.clone());
        match action {
            0 | 1 => {
                let d = if action == 0 {
                    TimeDelta::seconds(self.rng.range(1, 300))
                } else if self.calm {
                    // The real loop for a few hours: a pass every few minutes.
                    let hours = self.rng.range(1, 10);
                    let every = TimeDelta::minutes(self.rng.range(5, 30));
                    let until = (self.clock.now() + TimeDelta::hours(hours)).min(sim_cap());
                    while self.clock.now() + every <= until {
                        self.clock.advance(every);
                        let mut due = self.pass(i).await;
                        pass_due.append(&mut due);
                    }
                    TimeDelta::zero()
                } else {
                    TimeDelta::seconds(self.rng.range(600, 18 * 3600))
                };
                let d = if self.clock.now() + d > sim_cap() {
                    TimeDelta::seconds(self.rng.range(1, 60))
                } else {
                    d
                };
                self.clock.advance(d);
                self.note(format!("{i}: clock +{}s", d.num_seconds()));
                // In a calm seed time moves like the real loop's: with a
                // pass after each move.
                if self.calm && action == 0 {
                    pass_due = self.pass(i).await;
                }
            }
            2 => pass_due = self.pass(i).await,
            3 => {
                if let Some(idle) = &idle {
                    let cur = self.shares_of(idle)[&ep];
                    if cur > 1.0 {
                        let new = if self.rng.chance(50) {
                            0.0
                        } else {
                            (cur * self.rng.range(0, 50) as f64 / 100.0).floor()
                        };
                        self.set_pool_share(&ep, idle, new);
                        self.lowered(&ep, idle, new);
                        self.note(format!(
                            "{i}: operator lowers {idle} on {ep}: {cur} → {new}"
                        ));
                    }
                }
            }
            4 => {
                if let Some(idle) = &idle {
                    let cur = self.shares_of(idle)[&ep];
                    let new = if self.rng.chance(20) {
                        100.0
                    } else {
                        (cur + self.rng.range(5, 40) as f64).min(100.0)
                    };
                    self.set_pool_share(&ep, idle, new);
                    // Their own later raise supersedes their lowering.
                    self.model.lowered.remove(&ep);
                    self.note(format!(
                        "{i}: operator raises {idle} on {ep}: {cur} → {new}"
                    ));
                }
            }
            5 => {
                let heal = self.rng.chance(70);
                let mut st = self.target.lock();
                let ep = match st.down.iter().next() {
                    Some(d) if heal => d.clone(),
                    _ => ep.clone(),
                };
                let down = !st.down.remove(&ep);
                if down {
                    st.down.insert(ep.clone());
                }
                drop(st);
                self.note(format!("{i}: {ep} {}", if down { "down" } else { "up" }));
            }
            6 => {
                let secs = if self.rng.chance(40) {
                    0
                } else {
                    self.rng.range(1, 40)
                };
                self.target
                    .lock()
                    .latency
                    .insert(ep.clone(), TimeDelta::seconds(secs));
                self.note(format!("{i}: {ep} latency {secs}s"));
            }
            7 => {
                let heal = self.rng.chance(70);
                let mut st = self.target.lock();
                let ep = match st.stuck.iter().next() {
                    Some(d) if heal => d.clone(),
                    _ => ep.clone(),
                };
                let stuck = !st.stuck.remove(&ep);
                if stuck {
                    st.stuck.insert(ep.clone());
                }
                drop(st);
                self.note(format!(
                    "{i}: {ep} {}",
                    if stuck { "stuck" } else { "unstuck" }
                ));
            }
            8 => {
                // A reload: runtime weights back to the config's (canary 0),
                // drained servers back to ready.
                if let Some(idle) = &idle {
                    let cur = self.shares_of(idle)[&ep];
                    self.set_pool_share(&ep, idle, 0.0);
                    self.target.lock().drained_on.remove(&ep);
                    self.lowered(&ep, idle, 0.0);
                    self.note(format!("{i}: reload of {ep} ({idle} {cur} → 0)"));
                }
            }
            9 => {
                let on = !self.model.frozen;
                let now = self.clock.now();
                let word = if on { "on" } else { "off" };
                // On: frozen in the model before the controller hears of it;
                // off: only once it has (the controller's own order).
                if on {
                    self.model.frozen = true;
                }
                self.c
                    .set_freeze(
                        &FreezeRecord {
                            on,
                            reason: "sim".into(),
                            by: "ravi".into(),
                            since: now,
                        },
                        &NewEvent {
                            at: now,
                            kind: format!("freeze_{word}"),
                            principal: Some("ravi".into()),
                            why: format!("ravi turned the global freeze {word}: sim"),
                            input: "{}".into(),
                            state: "server".into(),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                self.quiesce().await;
                self.model.frozen = on;
                self.note(format!("{i}: freeze {word}"));
            }
            10 => {
                let synced = !self.model.kernel_synced;
                let s = if synced {
                    KernelSync::Synchronised { max_error_us: 1000 }
                } else if self.rng.chance(50) {
                    KernelSync::Unsynchronised
                } else {
                    // Synchronised, but with an error above max_clock_skew.
                    KernelSync::Synchronised {
                        max_error_us: 9_000_000,
                    }
                };
                self.clock.set_kernel_sync(s);
                self.model.kernel_synced = synced;
                self.model.kernel_unread = true;
                self.note(format!("{i}: kernel clock {s:?}"));
            }
            11..=14 => {
                if let Some((id, r)) = &active_before {
                    let input = match action {
                        11 => Input::Pause {
                            by: "ravi".into(),
                            reason: Some("sim".into()),
                        },
                        12 => {
                            let over = self.rng.chance(25);
                            Input::Resume {
                                by: "ravi".into(),
                                override_checks: over,
                                reason: over.then(|| "sim override".into()),
                            }
                        }
                        13 => Input::Abort {
                            by: "ravi".into(),
                            reason: "sim abort".into(),
                        },
                        _ => Input::Approve {
                            principal: "ravi".into(),
                            is_initiator: false,
                            step: r.step,
                            spec_hash: r.spec_hash.clone(),
                            comment: None,
                        },
                    };
                    let name = format!("{input:?}");
                    let res = self.c.input(id, input, Some("ravi")).await;
                    if action == 12 && res.is_ok() {
                        // A person resumed: what they saw lowered is theirs
                        // to let go of.
                        self.model.lowered.clear();
                    }
                    self.quiesce().await;
                    let out = match &res {
                        Ok(r) => format!("ok {:?}", r.as_ref().map(|r| r.state)),
                        Err(e) => format!("refused: {e}"),
                    };
                    self.note(format!("{i}: {name} → {out}"));
                    if res.is_ok() {
                        count(
                            &mut self.stats,
                            &format!("{}s accepted", name.split(' ').next().unwrap_or("")),
                        );
                    }
                }
            }
            15 => {
                let m = *self.rng.pick(&[
                    Metrics::Healthy,
                    Metrics::Healthy,
                    Metrics::Failing,
                    Metrics::Empty,
                    Metrics::Error,
                ]);
                self.metrics.set(script(m));
                self.note(format!("{i}: metrics {m:?}"));
            }
            16 => {
                self.restart();
                count(&mut self.stats, "restarts");
                self.note(format!("{i}: controller crash and restart"));
            }
            17 => {
                let live = self.rng.pick(&POOLS).to_string();
                let yaml = self.new_spec_yaml();
                let spec = load_spec(&self.cals, &yaml);
                let res = self.c.adopt(&spec, &live, "ravi").await;
                self.quiesce().await;
                adopt = true;
                match &res {
                    Ok(o) => {
                        // Allowed only when no rollout is active, every
                        // endpoint answered and `live` already carried most.
                        if active_before.is_some() {
                            return Err(format!("adopt {live} succeeded with a rollout active"));
                        }
                        if !down_before.is_empty() {
                            return Err(format!(
                                "adopt {live} succeeded with endpoints down: {down_before:?}"
                            ));
                        }
                        let first = self.target.lock().first.clone();
                        for (e, s) in &shares_before {
                            let named = if live == first { *s } else { 100.0 - *s };
                            if named <= 50.0 {
                                return Err(format!(
                                    "adopt {live} succeeded though it carried {named}% on {e}: \
                                     that moved traffic onto it"
                                ));
                            }
                        }
                        self.model.expected_live = Some(o.live.clone());
                        count(&mut self.stats, "adopts accepted");
                        self.note(format!("{i}: adopt {live} → ok ({})", o.detail));
                    }
                    Err(e) => {
                        // With a rollout active, adopt says so before
                        // reading anything.
                        let busy = matches!(e, AdoptError::Busy { .. });
                        if active_before.is_some() != busy {
                            return Err(format!(
                                "adopt {live} with active rollout {:?} answered: {e}",
                                active_before.as_ref().map(|a| &a.0)
                            ));
                        }
                        self.note(format!("{i}: adopt {live} → {e}"));
                    }
                }
            }
            _ => {
                let yaml = self.new_spec_yaml();
                let res = self
                    .c
                    .start(StartRequest {
                        spec_yaml: yaml.clone(),
                        revision: format!("rev{i}"),
                        initiator: "asha".into(),
                        principal: "asha".into(),
                    })
                    .await;
                match res {
                    Ok(StartOutcome::Created(rec)) => {
                        if active_before.is_some() {
                            return Err("a second rollout started on a busy target".into());
                        }
                        let p = self.pools().await.expect("start records the pools");
                        if self.model.expected_live.is_none() {
                            // The first rollout: the pool carrying all traffic
                            // is live.
                            let s = self.shares_of(&p.live);
                            if s.values().any(|v| *v < 100.0 - TOLERANCE) {
                                return Err(format!(
                                    "first start made {} live though it reads {s:?}",
                                    p.live
                                ));
                            }
                            self.model.expected_live = Some(p.live.clone());
                        }
                        self.model.lowered.clear();
                        self.model
                            .rollouts
                            .push((rec.id.clone(), p.idle.clone(), yaml.clone()));
                        // A raise may follow the preflight in this very step.
                        started = Some(yaml);
                        // Preflight runs in the background: let it land.
                        for _ in 0..500 {
                            self.quiesce().await;
                            let r = state_of(&self.store.rollout(&rec.id).await.unwrap().unwrap());
                            if r.state != State::Pending {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        let r = state_of(&self.store.rollout(&rec.id).await.unwrap().unwrap());
                        self.note(format!(
                            "{i}: start {} (canary {}) → {}",
                            rec.id,
                            p.idle,
                            r.state.as_str()
                        ));
                    }
                    Ok(StartOutcome::Existing(rec)) => {
                        self.note(format!("{i}: start → existing {}", rec.id));
                    }
                    Err(e) => {
                        if active_before.is_none() && !matches!(e, StartError::NeedsAdopt(_)) {
                            return Err(format!("start refused with the target free: {e}"));
                        }
                        self.note(format!("{i}: start → {e}"));
                    }
                }
            }
        }
        let pools_after = self.pools().await;
        let lowered = self.lowered_seen().await;
        let ctx = StepCtx {
            frozen: self.model.frozen,
            synced: self.model.kernel_synced,
            pools_before,
            pools_after: pools_after.clone(),
            spec_yaml: started.or(spec_yaml),
            lowered,
            adopt,
            kernel_unread: self.model.kernel_unread,
        };
        let cmds: Vec<Command> = self.target.lock().log[log_before..].to_vec();
        for c in &cmds {
            match (&c.refused, c.after > c.before + EPS) {
                (Some(_), _) => count(&mut self.stats, "gate refusals"),
                (None, true) => count(&mut self.stats, "raising commands"),
                (None, false) => count(&mut self.stats, "other commands"),
            }
            if c.refused.is_none() {
                self.note(format!(
                    "   {} {} {} {:.2}→{:.2}{}{}",
                    c.at.with_timezone(&IST).format("%H:%M:%S"),
                    c.endpoint,
                    c.canary,
                    c.before,
                    c.after,
                    if c.drain { " drain" } else { "" },
                    c.raise_deadline
                        .map(|d| format!(" raise≤{}", d.with_timezone(&IST).format("%d %H:%M")))
                        .unwrap_or_default()
                ));
            }
        }
        self.check_commands(&cmds, &ctx)?;
        self.check_store(pools_after).await?;
        self.check_cadence(&pass_due)?;
        Ok(())
    }

    /// A controller pass, and the check evaluations it must run (C): the
    /// one due at its start for every active rollout.
    async fn pass(&mut self, i: usize) -> Vec<(String, DateTime<Utc>, TimeDelta)> {
        let mut due = Vec::new();
        let now = self.clock.now();
        let iv = parse_interval(&self.interval);
        for rec in self.store.active_for_pass().await.unwrap() {
            let full = self.store.rollout(&rec.id).await.unwrap().unwrap();
            let r = state_of(&full);
            let Some(t0) = r.t0 else { continue };
            let k = (now - t0)
                .num_milliseconds()
                .div_euclid(iv.num_milliseconds());
            if k >= 1 && r.state != State::Pending {
                let at = t0 + TimeDelta::milliseconds(k * iv.num_milliseconds());
                due.push((rec.id.clone(), at, TimeDelta::seconds(30)));
            }
        }
        let res = self.c.pass().await;
        self.quiesce().await;
        self.model.kernel_unread = false;
        let st = self.active().await.map(|(_, r)| {
            format!(
                "{} step {} desired {} confirmed {}",
                r.state.as_str(),
                r.step,
                r.desired,
                r.confirmed
            )
        });
        self.note(format!("{i}: pass {res:?} → {st:?}"));
        due
    }

    /// A spec for a new rollout or an adopt: same target, random steps.
    fn new_spec_yaml(&mut self) -> String {
        let steps = *self.rng.pick(&STEP_VARIANTS);
        let on_failure = *self.rng.pick(&["rollback", "rollback", "pause"]);
        spec_yaml(&self.endpoints, &self.interval, steps, on_failure)
    }

    fn restart(&mut self) {
        self.c = Controller::new(
            self.store.clone(),
            self.cals.clone(),
            Arc::new(self.traffic.clone()),
            Arc::new(self.metrics.clone()),
            self.clock.clone(),
            self.cfg.clone(),
        );
    }

    // ---- invariants ----------------------------------------------------

    /// W and O on every command the endpoints received during the step.
    fn check_commands(&mut self, cmds: &[Command], ctx: &StepCtx) -> Result<(), String> {
        let windows = ctx.spec_yaml.clone().map(|y| self.windows_of(&y));
        for c in cmds.iter().filter(|c| c.refused.is_none() && !c.drain) {
            let show = format!("{c:?}");
            let raised = c.after > c.before + EPS;
            if raised {
                // W: only a live raise, before its deadline with the
                // command's timeout to spare (the gate counts latency + 1 s).
                let Some(deadline) = c.raise_deadline else {
                    return Err(format!(
                        "W: a command without a raise permit raised the canary: {show}"
                    ));
                };
                if c.at + TimeDelta::seconds(1) >= deadline {
                    return Err(format!(
                        "W: raise landed too close to or after its deadline: {show}"
                    ));
                }
                if ctx.frozen {
                    return Err(format!(
                        "W: raise sent while the global freeze was on: {show}"
                    ));
                }
                if !ctx.synced {
                    if ctx.kernel_unread && self.tolerated.contains(KNOWN_STALE_KERNEL) {
                        // KNOWN DEFECT, see KNOWN_STALE_KERNEL.
                        self.note(format!("   tolerated {KNOWN_STALE_KERNEL}: {show}"));
                        count(&mut self.stats, KNOWN_STALE_KERNEL);
                    } else {
                        return Err(format!(
                            "W: raise sent while the kernel clock was unsynchronised (or its error above max_clock_skew): {show}"
                        ));
                    }
                }
                let idle_ok = [&ctx.pools_before, &ctx.pools_after]
                    .iter()
                    .any(|p| p.as_ref().is_some_and(|p| p.idle == c.canary));
                if !idle_ok {
                    return Err(format!(
                        "W: raise of {} which is not the recorded idle pool ({:?}): {show}",
                        c.canary, ctx.pools_before
                    ));
                }
                match &windows {
                    None => {
                        return Err(format!("W: raise sent with no rollout active: {show}"));
                    }
                    Some(ws) => {
                        let Some(w) = ws.iter().find(|w| w.contains(c.at)) else {
                            return Err(format!("W: raise outside every permitted window: {show}"));
                        };
                        if deadline > w.end {
                            return Err(format!(
                                "W: raise deadline {deadline} beyond its window's end {}: {show}",
                                w.end
                            ));
                        }
                    }
                }
                // O: not over a lowering no person has resumed after.
                if let Some(seen) = ctx.lowered.get(&c.endpoint) {
                    if !seen && self.tolerated.contains(KNOWN_RAISE_OVER_UNSEEN_LOWERING) {
                        // KNOWN DEFECT, see KNOWN_RAISE_OVER_UNSEEN_LOWERING.
                        self.note(format!(
                            "   tolerated {KNOWN_RAISE_OVER_UNSEEN_LOWERING}: {show}"
                        ));
                        count(&mut self.stats, KNOWN_RAISE_OVER_UNSEEN_LOWERING);
                        continue;
                    }
                    return Err(format!(
                        "O: raise written on {} whose canary an operator or a reload lowered, \
                         with no human resume since: {show}",
                        c.endpoint
                    ));
                }
            }
            // W in the frame of the recorded pools: lowering the live pool
            // raises the idle one — a rollback or hold written with the pools
            // swapped. Adopt checks its own precondition.
            if !ctx.adopt {
                let raises_idle = |p: &Option<PoolRecord>| {
                    p.as_ref()
                        .is_some_and(|p| p.live == c.canary && c.after < c.before - EPS)
                };
                if raises_idle(&ctx.pools_before) && raises_idle(&ctx.pools_after) {
                    return Err(format!(
                        "W: a command lowered the live pool {} (raising the idle one): {show}",
                        c.canary
                    ));
                }
            }
        }
        Ok(())
    }

    /// P and R on the store after the step.
    async fn check_store(&mut self, pools: Option<PoolRecord>) -> Result<(), String> {
        let ids: Vec<(String, String)> = self
            .model
            .rollouts
            .iter()
            .filter(|r| !self.model.seen_terminal.contains(&r.0))
            .map(|r| (r.0.clone(), r.1.clone()))
            .collect();
        for (id, canary) in ids {
            let r = state_of(&self.store.rollout(&id).await.unwrap().unwrap());
            if !r.state.is_terminal() {
                continue;
            }
            self.model.seen_terminal.insert(id.clone());
            self.note(format!("   {id} is {}", r.state.as_str()));
            count(&mut self.stats, r.state.as_str());
            match r.state {
                State::Succeeded => {
                    // P: the success and the swap in one transaction.
                    let live = pools.as_ref().map(|p| p.live.clone());
                    if live.as_deref() != Some(canary.as_str()) {
                        return Err(format!(
                            "P: rollout {id} succeeded raising {canary}, but the pools say live {live:?}"
                        ));
                    }
                    self.model.expected_live = Some(canary);
                }
                State::RolledBack | State::Aborted
                    if !r.ever_written
                        && self.tolerated.contains(KNOWN_UNTOUCHED_STALE)
                        && !self.untouched_ok(&canary) =>
                {
                    // A defect while tolerated (see
                    // KNOWN_UNTOUCHED_STALE): a rollout that never wrote is
                    // declared done from its last reading, however old.
                    self.note(format!("   tolerated {KNOWN_UNTOUCHED_STALE}: {id}"));
                    count(&mut self.stats, KNOWN_UNTOUCHED_STALE);
                }
                State::RolledBack | State::Aborted => {
                    // R: complete only when every endpoint says so.
                    let st = self.target.lock();
                    let first = st.first.clone();
                    for (e, s) in &st.shares {
                        let v = if canary == first { *s } else { 100.0 - *s };
                        if st.down.contains(e) {
                            return Err(format!(
                                "R: rollout {id} is {} while endpoint {e} is down",
                                r.state.as_str()
                            ));
                        }
                        if v > EPS {
                            return Err(format!(
                                "R: rollout {id} is {} while {e} carries {v}% on {canary}",
                                r.state.as_str()
                            ));
                        }
                        if r.ever_written && !st.drained_on.contains(e) {
                            return Err(format!(
                                "R: rollout {id} is {} while {canary} is not drained on {e}",
                                r.state.as_str()
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        // P: whenever we look, the pools are what success and adopt made them.
        let live = pools.map(|p| p.live);
        if let Some(exp) = &self.model.expected_live
            && live.as_ref() != Some(exp)
        {
            return Err(format!(
                "P: the pools say live {live:?}, the last success or adopt made {exp} live"
            ));
        }
        Ok(())
    }

    /// Would R hold for a rollout of canary `canary` ending now?
    fn untouched_ok(&self, canary: &str) -> bool {
        let st = self.target.lock();
        st.down.is_empty()
            && st.shares.values().all(|s| {
                let v = if canary == st.first { *s } else { 100.0 - *s };
                v <= EPS
            })
    }

    /// C: each pass ran the check evaluation due at its start.
    fn check_cadence(&self, due: &[(String, DateTime<Utc>, TimeDelta)]) -> Result<(), String> {
        let log = self.metrics.log.lock().unwrap();
        for (id, at, delay) in due {
            let q = *at - *delay;
            if !log.iter().any(|(_, time)| *time == q) {
                return Err(format!(
                    "C: the pass did not evaluate the checks of {id} due at {at}"
                ));
            }
        }
        Ok(())
    }

    /// Liveness once the world heals: an aborted rollout finishes, the idle
    /// pool is held at 0 (or left alone when it carries most).
    async fn heal_and_finish(&mut self) -> Result<(), String> {
        {
            let mut st = self.target.lock();
            st.down.clear();
            st.stuck.clear();
            st.latency.clear();
        }
        self.clock
            .set_kernel_sync(KernelSync::Synchronised { max_error_us: 1000 });
        self.model.kernel_synced = true;
        self.metrics.set(script(Metrics::Healthy));
        self.note("end: world healed".into());
        if let Some((id, _)) = self.active().await {
            let res = self
                .c
                .input(
                    &id,
                    Input::Abort {
                        by: "ravi".into(),
                        reason: "sim end".into(),
                    },
                    Some("ravi"),
                )
                .await;
            self.quiesce().await;
            self.note(format!(
                "end: abort {id} → {:?}",
                res.map(|r| r.map(|r| r.state))
            ));
        }
        for k in 0..6 {
            self.clock
                .advance(self.cfg.drift_interval + TimeDelta::seconds(1));
            let log_before = self.target.lock().log.len();
            let pools_before = self.pools().await;
            let res = self.c.pass().await;
            self.quiesce().await;
            self.note(format!("end: pass {k} {res:?}"));
            let cmds: Vec<Command> = self.target.lock().log[log_before..].to_vec();
            let pools_after = self.pools().await;
            let lowered = self.lowered_seen().await;
            let ctx = StepCtx {
                frozen: self.model.frozen,
                synced: true,
                pools_before,
                pools_after: pools_after.clone(),
                spec_yaml: None,
                lowered,
                adopt: false,
                kernel_unread: false,
            };
            self.check_commands(&cmds, &ctx)?;
            self.check_store(pools_after).await?;
        }
        if let Some((id, r)) = self.active().await {
            return Err(format!(
                "liveness: rollout {id} still {} after abort with every endpoint healthy ({:?})",
                r.state.as_str(),
                r.waiting_for
            ));
        }
        if let Some(p) = self.pools().await {
            let idle = self.shares_of(&p.idle);
            // Where the idle pool carries most somewhere, the record may be
            // wrong: nothing is moved automatically (a person must adopt).
            let most = idle.values().any(|s| *s >= 50.0);
            for (e, s) in idle.into_iter().filter(|_| !most) {
                if s > TOLERANCE {
                    return Err(format!(
                        "liveness: idle pool {} still carries {s}% on {e} with no rollout active",
                        p.idle
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Defects the simulation found in src/, each fixed and pinned by its own
/// scenario test below. None is tolerated any more (the list is empty); the
/// names stay so a defect found later can be tolerated the same way while
/// it is being fixed (`SIM_STRICT=1` tolerates none).
///
/// R, untouched rollouts: `decrease_to_zero` ended a rollout that never
/// wrote at once, trusting `observed` — the last reading, however old.
/// Seeds 11, 19, 50. Fixed: a rollback after preflight always writes 0 and
/// drains, and ends on its own confirmed write.
const KNOWN_UNTOUCHED_STALE: &str = "untouched_rollback_from_a_stale_reading";

/// W, clock trust: the gate used the kernel state measured at the last pass.
/// Seeds 339, 482, 552, 605. Fixed: the kernel is asked at every decision
/// and every raising command.
const KNOWN_STALE_KERNEL: &str = "raise_under_a_stale_kernel_clock_reading";

/// O: a retried raise re-sent the full share over an endpoint an operator
/// lowered after the first attempt landed there. Seeds 1, 110, 120, 137.
/// Fixed: the raise records where it landed; the gate never raises such an
/// endpoint again and the engine pauses on the lowering.
const KNOWN_RAISE_OVER_UNSEEN_LOWERING: &str = "raise_over_an_operator_lowering_not_yet_seen";

const KNOWN_DEFECTS: &[&str] = &[];

/// The names a defect may be tolerated under (see [`KNOWN_DEFECTS`]).
#[allow(dead_code)]
const DEFECT_NAMES: &[&str] = &[
    KNOWN_UNTOUCHED_STALE,
    KNOWN_STALE_KERNEL,
    KNOWN_RAISE_OVER_UNSEEN_LOWERING,
];

/// The known defects a run tolerates: all of them, unless `SIM_STRICT=1`
/// (none) or `SIM_STRICT=name,…` (all but those).
fn tolerated_by_default() -> BTreeSet<&'static str> {
    let strict = std::env::var("SIM_STRICT").unwrap_or_default();
    if strict == "1" {
        return BTreeSet::new();
    }
    let named: Vec<&str> = strict.split(',').map(str::trim).collect();
    KNOWN_DEFECTS
        .iter()
        .copied()
        .filter(|d| !named.contains(d))
        .collect()
}

fn parse_interval(s: &str) -> TimeDelta {
    let n: i64 = s.trim_end_matches('m').parse().unwrap();
    TimeDelta::minutes(n)
}

fn load_spec(cals: &Calendars, yaml: &str) -> muhurat::spec::Spec {
    let cal = cals.get("nse").unwrap();
    muhurat::spec::load("sim", yaml, |_| Ok(cal.as_ref().clone()))
        .unwrap_or_else(|d| panic!("sim spec invalid: {d:?}"))
        .spec
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// One seed: Ok, or the failure with the step log.
fn run_seed(seed: u64, steps: usize, tolerated: BTreeSet<&'static str>) -> Result<Stats, String> {
    run_seed_logged(seed, steps, tolerated).0
}

/// One seed, and its step log.
fn run_seed_logged(
    seed: u64,
    steps: usize,
    tolerated: BTreeSet<&'static str>,
) -> (Result<Stats, String>, Vec<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log2 = log.clone();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async move {
            let mut w = World::new(seed, tolerated).await;
            let mut res = Ok(());
            // The first step starts a rollout, so every seed has one to hunt in.
            for i in 0..steps {
                let r = if i == 0 {
                    w.start_first().await
                } else {
                    w.step(i).await
                };
                *log2.lock().unwrap() = w.log.clone();
                if let Err(e) = r {
                    res = Err(e);
                    break;
                }
            }
            if res.is_ok() {
                res = w.heal_and_finish().await;
            }
            *log2.lock().unwrap() = w.log.clone();
            if std::env::var("SIM_VERBOSE").is_ok_and(|v| v == "1") {
                eprintln!("{}", w.log.join("\n"));
            }
            res.map(|()| w.stats)
        })
    }));
    let res = match out {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    };
    // The runtime (and every leftover task of old controller incarnations)
    // goes with the seed.
    drop(rt);
    let log = log.lock().unwrap().clone();
    let res = res.map_err(|e| {
        format!(
            "simulation seed {seed} failed: {e}\nreplay: SIM_SEED={seed} SIM_STEPS={steps} cargo test --test simulation simulation_keeps -- --nocapture\n--- step log ---\n{}",
            log.join("\n")
        )
    });
    (res, log)
}

impl World {
    /// Step 0: every seed starts with a rollout to hunt in.
    async fn start_first(&mut self) -> Result<(), String> {
        let i = 0;
        let yaml = self.new_spec_yaml();
        let res = self
            .c
            .start(StartRequest {
                spec_yaml: yaml.clone(),
                revision: format!("rev{i}"),
                initiator: "asha".into(),
                principal: "asha".into(),
            })
            .await
            .map_err(|e| format!("the first start failed: {e}"))?;
        let StartOutcome::Created(rec) = res else {
            return Err("the first start found an existing rollout".into());
        };
        let p = self.pools().await.expect("start records the pools");
        self.model.expected_live = Some(p.live.clone());
        self.model
            .rollouts
            .push((rec.id.clone(), p.idle.clone(), yaml));
        for _ in 0..500 {
            self.quiesce().await;
            let r = state_of(&self.store.rollout(&rec.id).await.unwrap().unwrap());
            if r.state != State::Pending {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let r = state_of(&self.store.rollout(&rec.id).await.unwrap().unwrap());
        self.note(format!(
            "{i}: start {} (canary {}) → {}",
            rec.id,
            p.idle,
            r.state.as_str()
        ));
        let pools = self.pools().await;
        self.check_store(pools).await
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// CI's bounded run; `SIM_SEED`, `SIM_SEEDS`, `SIM_FIRST`, `SIM_STEPS` for
/// replays and soaks.
#[test]
fn simulation_keeps_the_invariants_on_random_schedules() {
    let steps = env_u64("SIM_STEPS").unwrap_or(60) as usize;
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env_u64("SIM_FIRST").unwrap_or(0);
            let n = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
            (first..first + n).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut total = Stats::new();
    for &seed in &seeds {
        match run_seed(seed, steps, tolerated_by_default()) {
            Ok(st) => {
                for (k, v) in st {
                    *total.entry(k).or_default() += v;
                }
            }
            Err(e) => {
                eprintln!("{e}\n");
                failures.push(seed);
                if std::env::var("SIM_KEEP_GOING").is_err() {
                    break;
                }
            }
        }
    }
    eprintln!(
        "simulation: {} seed(s) × {steps} steps in {:.1}s; {} failed; exercised: {total:?}",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failing seeds: {failures:?} (see above)"
    );
    // A simulation that never raised, succeeded, rolled back or restarted
    // proves nothing: the schedule must reach every kind of outcome. (Gate
    // refusals are not required: the gate is the last line, and the engine
    // rarely sends it anything to refuse.)
    if seeds.len() >= 50 {
        for what in [
            "raising commands",
            "succeeded",
            "rolled_back",
            "aborted",
            "restarts",
            "adopts accepted",
            "Resumes accepted",
            "Approves accepted",
        ] {
            assert!(
                total.get(what).copied().unwrap_or(0) > 0,
                "the simulation never reached `{what}` in {} seeds: {total:?}",
                seeds.len()
            );
        }
    }
}

/// Seeds per CI run: well under a minute on the 2-core CI machine
/// (measured: 100 seeds × 60 steps in 22 s, 17 s of CPU).
const DEFAULT_SEEDS: u64 = 100;

// ---- the defects the simulation found, as scenarios -----------------------
//
// Each replays, by hand and minimally, a schedule the seeded loop found, and
// asserts the invariant strictly. They failed on the safety kernel's first
// version (commit 3eaade1) and pass since the fixes named above.

/// A scenario world: `endpoints` endpoints, the clock at `start`, a
/// 10-minute drift interval, healthy metrics, one rollout of the given steps
/// started and through preflight.
async fn scenario(start: &str, endpoints: usize, steps: &str, down: &[&str]) -> (World, String) {
    let mut w = World::build(0, BTreeSet::new(), Some(t(start))).await;
    w.endpoints = ["a", "b", "c"][..endpoints]
        .iter()
        .map(|e| format!("unix:/run/haproxy/{e}.sock"))
        .collect();
    w.cfg.drift_interval = TimeDelta::minutes(10);
    w.interval = "30m".into();
    w.metrics.set(script(Metrics::Healthy));
    let yaml = spec_yaml(&w.endpoints, &w.interval, steps, "rollback");
    let spec = load_spec(&w.cals, &yaml);
    w.target = w.traffic.target(&spec.traffic);
    w.target_id = spec.traffic.target_id();
    w.restart();
    // As a server does at boot: a pass (the clock measured) before any start.
    w.pass(0).await;
    w.target.lock().down.extend(down.iter().map(|d| ep(d)));
    let out =
        w.c.start(StartRequest {
            spec_yaml: yaml,
            revision: "r1".into(),
            initiator: "asha".into(),
            principal: "asha".into(),
        })
        .await
        .unwrap();
    let StartOutcome::Created(rec) = out else {
        panic!("expected a new rollout")
    };
    for _ in 0..500 {
        w.quiesce().await;
        let r = state_of(&w.store.rollout(&rec.id).await.unwrap().unwrap());
        if r.state != State::Pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (w, rec.id)
}

fn ep(n: &str) -> String {
    format!("unix:/run/haproxy/{n}.sock")
}

async fn state(w: &World, id: &str) -> Rollout {
    state_of(&w.store.rollout(id).await.unwrap().unwrap())
}

fn raises_since(w: &World, from: usize) -> Vec<Command> {
    w.target.lock().log[from..]
        .iter()
        .filter(|c| c.refused.is_none() && !c.drain && c.after > c.before + EPS)
        .cloned()
        .collect()
}

/// R (KNOWN_UNTOUCHED_STALE): a rollout that never wrote is
/// aborted at once from its last reading, however old — here with the
/// canary at 20 % by hand on one endpoint and the other endpoint down.
#[tokio::test(flavor = "current_thread")]
async fn abort_before_any_write_is_not_done_from_a_stale_reading() {
    // Thursday noon: markets open, no raise; the rollout waits.
    let (mut w, id) = scenario("2026-12-10T12:00:00+05:30", 2, STEP_VARIANTS[2], &[]).await;
    // A drift read: every endpoint at 0.
    w.clock.advance(TimeDelta::minutes(11));
    w.pass(0).await;
    let r = state(&w, &id).await;
    assert_eq!(r.state, State::WaitingForWindow);
    assert_eq!(r.observed.len(), 2, "{:?}", w.log);
    // After the reading: a person raises blue by hand, an endpoint dies.
    w.clock.advance(TimeDelta::minutes(2));
    w.set_pool_share(&ep("a"), "blue", 20.0);
    w.target.lock().down.insert(ep("b"));
    w.c.input(
        &id,
        Input::Abort {
            by: "ravi".into(),
            reason: "regression".into(),
        },
        Some("ravi"),
    )
    .await
    .unwrap();
    w.quiesce().await;
    let r = state(&w, &id).await;
    assert_eq!(
        r.state,
        State::RollingBack,
        "aborted with blue at {:?} and {} down: R needs every endpoint read back at 0",
        w.shares_of("blue"),
        ep("b")
    );
    // Once b answers, the abort completes with blue at 0 everywhere.
    w.target.lock().down.clear();
    for i in 1..4 {
        w.clock.advance(TimeDelta::minutes(11));
        w.pass(i).await;
    }
    assert_eq!(state(&w, &id).await.state, State::Aborted);
    assert!(w.shares_of("blue").values().all(|s| *s == 0.0));
}

/// W (KNOWN_STALE_KERNEL): the gate trusts the kernel clock as
/// measured at the last pass; a person's resume between passes raises with
/// the kernel reporting unsynchronised.
#[tokio::test(flavor = "current_thread")]
async fn a_raise_between_passes_checks_the_kernel_clock_at_the_command() {
    // Friday noon (no window): the rollout waits, and a person pauses it.
    let (mut w, id) = scenario("2026-12-11T12:00:00+05:30", 2, STEP_VARIANTS[2], &[]).await;
    w.pass(0).await;
    w.c.input(
        &id,
        Input::Pause {
            by: "ravi".into(),
            reason: Some("regression".into()),
        },
        Some("ravi"),
    )
    .await
    .unwrap();
    // Saturday noon: a window; a pass measures a synchronised kernel.
    w.clock.set(t("2026-12-12T12:00:00+05:30"));
    w.pass(1).await;
    assert_eq!(state(&w, &id).await.state, State::Paused);
    let from = w.target.lock().log.len();
    // Then the kernel loses sync, and the person resumes.
    w.clock.set_kernel_sync(KernelSync::Unsynchronised);
    w.c.input(
        &id,
        Input::Resume {
            by: "ravi".into(),
            override_checks: false,
            reason: None,
        },
        Some("ravi"),
    )
    .await
    .unwrap();
    w.quiesce().await;
    let raised = raises_since(&w, from);
    assert!(
        raised.is_empty(),
        "raised with the kernel clock unsynchronised: {raised:#?}"
    );
}

/// O (KNOWN_RAISE_OVER_UNSEEN_LOWERING): a raise that did not
/// confirm everywhere is retried to every endpoint — including one an
/// operator has lowered since it landed there; with nothing confirmed yet,
/// the engine never even sees a drift.
#[tokio::test(flavor = "current_thread")]
async fn a_retried_raise_does_not_raise_back_an_operator_lowering() {
    // Friday noon: no window yet. Then b dies, and Saturday noon opens a
    // window: 10 % lands on a only.
    let (mut w, _id) = scenario("2026-12-11T12:00:00+05:30", 2, STEP_VARIANTS[2], &[]).await;
    w.target.lock().down.insert(ep("b"));
    w.clock.set(t("2026-12-12T12:00:00+05:30"));
    w.pass(0).await;
    assert_eq!(w.shares_of("blue")[&ep("a")], 10.0, "{:?}", w.log);
    // The operator breaks glass on a; b comes back.
    w.clock.advance(TimeDelta::minutes(1));
    w.set_pool_share(&ep("a"), "blue", 0.0);
    w.target.lock().down.clear();
    let from = w.target.lock().log.len();
    for i in 1..4 {
        w.clock.advance(TimeDelta::minutes(11));
        w.pass(i).await;
    }
    let on_a: Vec<Command> = raises_since(&w, from)
        .into_iter()
        .filter(|c| c.endpoint == ep("a"))
        .collect();
    assert!(
        on_a.is_empty(),
        "the operator's 0 % on a was raised back without a resume: {on_a:#?}\n{}",
        w.log.join("\n")
    );
}

/// A seed replays exactly: the same actions, the same decisions, the same
/// commands at the same instants (rollout ids aside, which carry a random
/// suffix).
#[test]
fn a_seed_replays_exactly() {
    let ids = |log: Vec<String>| -> Vec<String> {
        log.into_iter()
            .map(|l| {
                // kite-api-YYYYMMDD-xxxxxx → kite-api-YYYYMMDD-?
                let mut out = String::new();
                let mut rest = l.as_str();
                while let Some(i) = rest.find("kite-api-2026") {
                    out.push_str(&rest[..i + 18]);
                    out.push('?');
                    rest = rest.get(i + 24..).unwrap_or("");
                }
                out.push_str(rest);
                out
            })
            .collect()
    };
    for seed in [7, 12] {
        let (a, la) = run_seed_logged(seed, 60, tolerated_by_default());
        let (b, lb) = run_seed_logged(seed, 60, tolerated_by_default());
        assert_eq!(a.is_ok(), b.is_ok(), "seed {seed}");
        let (la, lb) = (ids(la), ids(lb));
        assert!(la.len() > 60, "seed {seed} logged too little: {la:#?}");
        for (x, y) in la.iter().zip(&lb) {
            assert_eq!(x, y, "seed {seed} diverged on replay");
        }
        assert_eq!(la.len(), lb.len(), "seed {seed}");
    }
}
