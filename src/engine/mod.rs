//! The rollout state machine (docs/design.md §3, §6 states): a pure function
//! `step(rollout, input, now, ctx) → Transition | Refusal`.
//!
//! The one decision a newcomer must know: **the engine never does anything**.
//! It decides, and returns what it decided as data — the new [`Rollout`], the
//! audit [`Event`]s that explain the transition, and the [`Effect`]s (write a
//! weight, start the check timer, notify, wake me at…) that the controller
//! executes *after* the transition is committed. Their outcomes come back as
//! [`Input`] triggers. Because it takes `now` and every fact about the world
//! (calendar, permitted windows, freeze, clock trust, pool health) through
//! [`Ctx`], replaying the stored inputs reproduces every stored state, and the
//! safety rules can be checked by property tests without HAProxy or a clock.
//!
//! How to call it (controller and API handlers alike):
//! 1. In one store transaction, lock the rollout row and load the
//!    [`Rollout`] (stored as JSON), the validated [`Spec`] (the store keeps
//!    the spec YAML beside the row and re-validates it; the rollout only
//!    carries `spec_hash`, which the caller must check against
//!    `spec.hash()` when it loads the spec), the calendar in force, and the
//!    permitted windows for `[now, now + a week)` with the global freeze
//!    already subtracted.
//! 2. Call [`step`]. On `Err(Refusal)` roll back and answer the client with
//!    the refusal's `code` (HTTP status: [`Refusal::http_status`]); nothing is
//!    stored.
//! 3. On `Ok(t)`: if `t.events` is empty nothing the audit log cares about
//!    changed (a stale or ignored input) — write the row if you like (its
//!    live fields `observed`, `waiting_for`, `next_window` may have moved) but
//!    append nothing. Otherwise append every event (with the input, `now`,
//!    and the context versions, which are in each event) and write
//!    `t.rollout`; `t.rollout.version` has already been bumped.
//! 4. Commit, then run `t.effects`. An `Apply` carries the version of the
//!    write it belongs to (`rollout.write.version`), which is **not** bumped
//!    by later unrelated transitions; an actuator drops an `Apply` whose
//!    version differs from the rollout's current `write.version`, and reports
//!    back with `Input::Applied { version, .. }`. `WakeAt`: the controller
//!    keeps only the latest per rollout and sends `Input::Tick`; a Tick is
//!    always safe (idempotent), so stale timers need no bookkeeping.

mod machine;
pub mod target;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::localtime;
use crate::spec::Spec;
use crate::windows::Interval;

pub use machine::{in_segment_session, in_session, step};

/// How far an observed share may differ from the confirmed one before it is
/// drift, in percentage points. HAProxy weights are integers (0–256) split
/// across servers, so a share read back is rarely the exact percentage that
/// was asked for; half a point absorbs that rounding and nothing more.
pub const DRIFT_TOLERANCE: f64 = 0.5;

/// How soon an unconfirmed write is retried. Decreases are retried until
/// confirmed; a raise is retried until its deadline.
pub const APPLY_RETRY: TimeDelta = TimeDelta::seconds(10);

/// How soon a rollout whose window is open but whose raise is blocked (the
/// freeze, an untrusted clock, no canary server UP) looks again. Without a
/// back-off the wake-up would be "now" and the controller would spin.
pub const RAISE_BLOCKED_RETRY: TimeDelta = TimeDelta::seconds(5);

/// From this canary share up, an automatic rollback during a session first
/// checks the live pool has UP servers (docs/design.md §3): moving half or more of
/// the traffic onto a pool that cannot take it is worse than a bad canary.
pub const LIVE_CHECK_FROM_SHARE: u32 = 50;

/// The twelve states of docs/design.md §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    WaitingForWindow,
    WaitingForChecks,
    Applying,
    Baking,
    AwaitingApproval,
    Paused,
    RollingBack,
    RolledBack,
    Aborted,
    Succeeded,
    Failed,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::RolledBack | State::Aborted | State::Succeeded | State::Failed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::WaitingForWindow => "waiting_for_window",
            State::WaitingForChecks => "waiting_for_checks",
            State::Applying => "applying",
            State::Baking => "baking",
            State::AwaitingApproval => "awaiting_approval",
            State::Paused => "paused",
            State::RollingBack => "rolling_back",
            State::RolledBack => "rolled_back",
            State::Aborted => "aborted",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initiator {
    /// The `initiator` name given at start (e.g. the CI user).
    pub name: String,
    /// The principal of the token that started the rollout.
    pub principal: String,
}

/// Why a weight write is outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A `set_weight` step; the only purpose that increases the share.
    Raise,
    /// Back to the last confirmed share (an expired or cancelled raise).
    Revert,
    /// Observed more canary than allowed: back down at once.
    DriftCorrection,
    /// `on_failure: rollback`: to 0, drain.
    Rollback,
    /// A human abort: to 0, drain.
    Abort,
}

/// The weight write in flight, until confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Write {
    pub purpose: Purpose,
    pub share: u32,
    /// The rollout version at which it was decided; `Applied` must name it.
    pub version: u64,
    pub decided_at: DateTime<Utc>,
    /// Raises only: the end of the permitted window it was decided in. No
    /// endpoint write for it happens at or after this instant.
    pub deadline: Option<DateTime<Utc>>,
    /// Rollback and abort: drain the canary servers and shut their sessions.
    pub drain_and_shutdown: bool,
    /// Who asked and why (abort, drift), for the terminal event.
    pub why: String,
    /// Unconfirmed outcomes so far, and the latest one's detail.
    pub failures: u32,
    pub last_error: Option<String>,
    /// When the latest unconfirmed outcome came back: the next attempt is
    /// not before `failed_at + APPLY_RETRY`.
    #[serde(default)]
    pub failed_at: Option<DateTime<Utc>>,
    /// Raises only: per endpoint, the highest share this raise was read
    /// back at. An endpoint that later reads lower was lowered by someone
    /// (a person, a reload): the raise is never sent there again, and the
    /// rollout pauses.
    #[serde(default)]
    pub landed: BTreeMap<String, f64>,
}

/// One check's verdict at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
    /// The query failed.
    Error,
}

/// Per-check streaks and evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub failure_streak: u32,
    /// Counted inconclusive/error results in a row.
    pub inconclusive_streak: u32,
    /// Counted passes since the current weight was confirmed (`t0`).
    pub passes: u32,
    /// The latest counted result since `t0` (`Inconclusive` stands for
    /// error too).
    pub last_counted: Option<Verdict>,
    pub last_at: Option<DateTime<Utc>>,
}

/// Progress of the bake step being held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bake {
    pub step: usize,
    pub started: DateTime<Utc>,
    /// Days count only when their first session opens at or after this:
    /// the later of the bake's start, the current weight's confirmation and
    /// the latest resume.
    pub since: DateTime<Utc>,
    /// Days recorded as `bake_day_observed`; never recomputed.
    pub counted: Vec<NaiveDate>,
    /// The last date whose sessions were judged (counted or not).
    pub judged_through: Option<NaiveDate>,
    /// Checks with a pass evaluated inside one of the bake segment's
    /// sessions, by that session's date.
    pub passes: BTreeMap<NaiveDate, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub principal: String,
    pub step: usize,
    pub spec_hash: String,
    pub at: DateTime<Utc>,
    pub comment: Option<String>,
    /// Voided by a failed check, a pause or drift after it was given.
    pub void: bool,
}

/// Why the rollout is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseCause {
    /// `pause` command.
    Human,
    /// A `pause: {}` step; resuming completes the step.
    Step,
    /// Drift towards less canary traffic.
    Drift,
    /// `inconclusive_limit` reached.
    Inconclusive,
    /// `on_failure: pause`.
    OnFailure,
    /// An automatic rollback was due but the live pool has no UP server.
    LiveDown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub cause: PauseCause,
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// One run of a spec for one revision and one initiator. Serialized as JSON
/// by the store; the spec itself is not in it (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    /// The spec's name.
    pub name: String,
    pub revision: String,
    pub spec_hash: String,
    pub initiator: Initiator,
    pub state: State,
    /// 0-based index of the current step; `steps.len()` once all are done.
    pub step: usize,
    /// Decided and persisted canary share, percent.
    pub desired: u32,
    /// Read back equal on every endpoint, percent (`canary_weight`).
    pub confirmed: u32,
    /// Per endpoint, as last read (percent). A live field: not versioned.
    pub observed: BTreeMap<String, f64>,
    /// Endpoints that did not answer the last read, with why. A live field.
    #[serde(default)]
    pub unreachable: BTreeMap<String, String>,
    pub write: Option<Write>,
    pub checks: BTreeMap<String, CheckStatus>,
    /// The latest confirmation: evaluations happen at `t0 + k·interval`.
    pub t0: Option<DateTime<Utc>>,
    pub bake: Option<Bake>,
    pub approvals: Vec<Approval>,
    pub paused: Option<Paused>,
    /// Set by `resume --override-checks` (its reason); consumed by the next
    /// raise.
    pub override_checks: Option<String>,
    /// Whether any weight was ever written (`failed` needs none).
    pub ever_written: bool,
    /// Live fields, recomputed on every call: the next raise instant
    /// (waiting for a window) and the sentence for a person.
    pub next_window: Option<DateTime<Utc>>,
    pub waiting_for: Option<String>,
    /// Bumped on every transition that appends events.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Rollout {
    /// A new rollout in `pending`, with the `created` event.
    pub fn new(
        id: impl Into<String>,
        spec: &Spec,
        revision: impl Into<String>,
        initiator: Initiator,
        now: DateTime<Utc>,
    ) -> (Rollout, Event) {
        let revision = revision.into();
        let r = Rollout {
            id: id.into(),
            name: spec.name.clone(),
            revision: revision.clone(),
            spec_hash: spec.hash(),
            initiator,
            state: State::Pending,
            step: 0,
            desired: 0,
            confirmed: 0,
            observed: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            write: None,
            checks: spec
                .analysis
                .iter()
                .flat_map(|a| a.checks.iter())
                .map(|c| (c.name.clone(), CheckStatus::default()))
                .collect(),
            t0: None,
            bake: None,
            approvals: Vec::new(),
            paused: None,
            override_checks: None,
            ever_written: false,
            next_window: None,
            waiting_for: Some("preflight checks running".into()),
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let ev = Event {
            kind: EventKind::Created,
            at: now,
            step: 0,
            why: format!(
                "{} revision {revision} started by {}",
                spec.name, r.initiator.name
            ),
            calendar_version: None,
            policy_version: None,
        };
        (r, ev)
    }
}

/// One check's result at one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub verdict: Verdict,
    /// The evaluation instant lies in an unwidened session of the spec's
    /// segments ([`in_session`]); recorded so replay does not depend on the
    /// calendar in force later.
    pub in_session: bool,
}

/// A command (from a person, through the API) or a trigger (from the
/// controller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    /// The caller has checked the role (`approver`/`admin`) and computed
    /// `is_initiator` from the token; the engine also compares `principal`
    /// with the initiator's name and principal.
    Approve {
        principal: String,
        is_initiator: bool,
        step: usize,
        spec_hash: String,
        comment: Option<String>,
    },
    Pause {
        by: String,
        reason: Option<String>,
    },
    /// `override_checks` needs the approver or admin role (the caller's
    /// check) and a reason (the engine's).
    Resume {
        by: String,
        override_checks: bool,
        reason: Option<String>,
    },
    Abort {
        by: String,
        reason: String,
    },
    PreflightPassed,
    PreflightFailed {
        reason: String,
    },
    /// A timer woke the rollout (or the controller's periodic pass).
    Tick,
    CheckResults {
        /// The evaluation instant (not the query time).
        at: DateTime<Utc>,
        results: Vec<CheckResult>,
    },
    /// The actuator's outcome for the write of `version`.
    Applied {
        version: u64,
        share: u32,
        /// Read back equal on every endpoint, twice, from the same process.
        confirmed: bool,
        detail: String,
        /// The share each endpoint was read back at, where it was.
        #[serde(default)]
        endpoints: BTreeMap<String, f64>,
    },
    /// Canary share per endpoint, as read, and the endpoints that did not
    /// answer (a reading with holes proves nothing about them).
    Observed {
        shares: BTreeMap<String, f64>,
        #[serde(default)]
        unreachable: BTreeMap<String, String>,
    },
}

/// Everything the engine knows about the world besides the rollout.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The validated spec whose hash is `rollout.spec_hash`.
    pub spec: &'a Spec,
    /// The calendar in force.
    pub calendar: &'a Calendar,
    /// Permitted windows covering at least `[now, now + 7 days)`, sorted and
    /// merged, with the global freeze already subtracted. A window that
    /// began before `now` must be included whole (or at least from `now`);
    /// its end is a raise's deadline.
    pub permitted: &'a [Interval],
    /// The global freeze is on: no raise.
    pub frozen: bool,
    /// Clock skew within `max_clock_skew`: otherwise no raise.
    pub clock_trusted: bool,
    /// At least one canary server UP and not in maintenance or drain.
    pub canary_up: bool,
    /// At least one live server UP.
    pub live_up: bool,
    pub calendar_version: &'a str,
    pub policy_version: &'a str,
}

/// What the controller must do after committing the transition.
///
/// Check evaluations are not an effect: they are due at `t0 + k·interval`
/// from the stored `t0`, which the controller derives its timer from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// Write the canary share to every endpoint and confirm it. Everything
    /// the actuator needs is here; it decides nothing. For a raise
    /// (`deadline` is Some) the gate refuses every command at or after the
    /// deadline (less the command's timeout), while frozen or while the
    /// clock is untrusted; decreases have no deadline and may never raise
    /// any endpoint.
    Apply {
        purpose: Purpose,
        share: u32,
        deadline: Option<DateTime<Utc>>,
        /// Rollback and abort: drain the canary servers after the weights.
        drain_and_shutdown: bool,
        /// With `drain_and_shutdown`: shut the canary's sessions (`None`:
        /// the backend's default, true for HAProxy `mode tcp`).
        shutdown_sessions: Option<bool>,
        version: u64,
    },
    Notify {
        kind: EventKind,
        text: String,
    },
    /// Send `Input::Tick` at `at`. Only the latest matters.
    WakeAt {
        at: DateTime<Utc>,
        token: String,
    },
    /// The rollout succeeded: the idle pool becomes live. The controller
    /// writes the pool record in the same store transaction as the event
    /// (invariant P); it is never executed after the commit.
    SwapPools,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    PreflightPassed,
    PreflightFailed,
    RaiseDecided,
    WeightConfirmed,
    ApplyFailed,
    RaiseExpired,
    RaiseCancelled,
    DecreaseConfirmed,
    BakeStarted,
    BakeDayObserved,
    BakeDayNotCounted,
    BakeCompleted,
    ApprovalRecorded,
    ApprovalVoided,
    StepApproved,
    ChecksEvaluated,
    CheckFailed,
    ChecksInconclusive,
    LiveDown,
    Paused,
    Resumed,
    DriftDetected,
    RollbackStarted,
    RolledBack,
    AbortRequested,
    Aborted,
    Succeeded,
    Failed,
    /// The rollout began waiting for a permitted window (or for a raise
    /// gate: freeze, clock, pool health) at this step; once per wait.
    WaitingForWindow,
    /// The rollout began waiting for approvals at this step; once per wait.
    AwaitingApproval,
    /// A state change with no more specific event (e.g. a window opened but
    /// checks are not ready yet).
    StateChanged,
}

/// One audit-log record: what happened and why, in words for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    /// The step index when it happened.
    pub step: usize,
    pub why: String,
    pub calendar_version: Option<String>,
    pub policy_version: Option<String>,
}

/// The result of a successful [`step`].
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub rollout: Rollout,
    pub effects: Vec<Effect>,
    pub events: Vec<Event>,
}

/// A command refused: not stored, answered with `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// Stable: `stale_approval`, `separation_of_duties`, `already_approved`,
    /// `invalid_state`, `reason_required`.
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status the API answers with (docs/design.md §7).
    pub fn http_status(&self) -> u16 {
        match self.code {
            "separation_of_duties" => 403,
            "reason_required" => 400,
            _ => 409,
        }
    }
}

/// `Mon 00:25 IST` in `tz`.
fn local(tz: chrono_tz::Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz).format("%a %H:%M %Z").to_string()
}

/// `Thu 3 Dec` for a local date.
fn day(d: NaiveDate) -> String {
    d.format("%a %-d %b").to_string()
}

fn date_of(cal: &Calendar, t: DateTime<Utc>) -> NaiveDate {
    localtime::date_of(cal.timezone, t)
}

#[cfg(test)]
mod tests;
