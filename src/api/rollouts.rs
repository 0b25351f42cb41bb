//! Rollouts: start, list, show (everything the dashboard needs), the audit
//! log, and the commands pause, resume, abort and approve.
//!
//! `{id}` is a rollout id or a spec name meaning that spec's active rollout
//! (docs/design.md §6 `ROLLOUT`).

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Action, Caller};
use super::errors::{self, ApiError, RawJson};
use super::{AppState, ts};
use crate::controller::{StartOutcome, StartRequest};
use crate::engine::{Input, Rollout, State as RState};
use crate::plan::{self, Planned};
use crate::spec::{self, CalendarLookup, Spec, Step};
use crate::store::{EventRecord, RolloutRecord};
use crate::windows::Interval;

/// Load a spec against the calendars in force: 400 `invalid_spec` listing
/// every diagnostic, worded as `muhurat validate` words them.
pub(crate) fn load_spec(st: &AppState, yaml: &str) -> Result<spec::Loaded, ApiError> {
    let cals = st.controller.calendars().clone();
    spec::load("spec", yaml, |name| {
        cals.get(name).map(|c| (*c).clone()).ok_or_else(|| {
            CalendarLookup::NotFound(format!(
                "the server has no calendar `{name}` (loaded: {})",
                cals.names().join(", ")
            ))
        })
    })
    .map_err(|d| errors::invalid_spec(&d))
}

/// Longest a spec may take to load and validate. Input limits keep it to
/// milliseconds; the budget is the backstop that keeps a worker thread, not
/// the request, waiting if some input still proves slow.
pub const SPEC_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// [`load_spec`] on the blocking pool, within [`SPEC_BUDGET`]: parsing and
/// validation are CPU work and must not hold an async worker (the
/// controller's tasks and `/healthz` share them).
pub(crate) async fn load_spec_async(st: &AppState, yaml: &str) -> Result<spec::Loaded, ApiError> {
    let (st2, yaml) = (st.clone(), yaml.to_string());
    let job = tokio::task::spawn_blocking(move || load_spec(&st2, &yaml));
    match tokio::time::timeout(SPEC_BUDGET, job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(ApiError::internal(format!("spec validation failed: {e}"))),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_spec",
            format!(
                "the spec took longer than {} s to validate; simplify it (fewer or coarser windows)",
                SPEC_BUDGET.as_secs()
            ),
        )),
    }
}

/// A rollout by id, or the active rollout of a spec name; 404 otherwise.
pub(crate) async fn resolve(st: &AppState, id: &str) -> Result<RolloutRecord, ApiError> {
    let store = st.controller.store();
    if let Some(r) = store.rollout(id).await? {
        return Ok(r);
    }
    let mut active = store.active_all_by_name(id).await?;
    match active.len() {
        0 => Err(ApiError::not_found(format!(
            "no rollout `{id}`: neither a rollout id nor the name of a spec with an active rollout"
        ))),
        1 => Ok(active.remove(0)),
        // Never pick one: a pause or abort must hit the rollout meant.
        _ => {
            let ids: Vec<String> = active.into_iter().map(|r| r.id).collect();
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "ambiguous_rollout",
                format!(
                    "spec `{id}` has {} active rollouts ({}); name the rollout by its id",
                    ids.len(),
                    ids.join(", ")
                ),
            )
            .with_details(json!({ "rollouts": ids })))
        }
    }
}

/// A free-text field (revision, initiator, comment, reason, spec hash):
/// trimmed, at most `max` characters, no control characters (they could
/// forge lines in logs and the audit trail). Empty becomes None.
pub(crate) fn text_field(
    name: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let Some(v) = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    if v.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "`{name}` is longer than {max} characters; shorten it"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`{name}` contains control characters (newlines, tabs, escapes); write it on one line"
        )));
    }
    Ok(Some(v))
}

/// `?limit=`: `default` when absent, 400 outside 1..=`max` (the documented
/// range) rather than a silent clamp.
fn limit_param(v: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit {n} is outside 1..={max}"
        ))),
    }
}

/// Limits of the free-text fields.
pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_TEXT_CHARS: usize = 1000;

fn engine_state(rec: &RolloutRecord) -> Result<Rollout, ApiError> {
    serde_json::from_str(&rec.data).map_err(|e| {
        ApiError::internal(format!("rollout {}: stored state unreadable: {e}", rec.id))
    })
}

/// The fields of `status -o json` (docs/design.md §6), plus identity and times.
fn summary(rec: &RolloutRecord, r: &Rollout, steps: Option<usize>) -> Value {
    json!({
        "id": rec.id,
        "name": rec.name,
        "revision": rec.revision,
        "initiator": rec.initiator,
        "principal": rec.principal,
        "target": rec.target,
        "state": r.state.as_str(),
        "active": !r.state.is_terminal(),
        "step": r.step,
        "steps": steps,
        "canary_weight": r.confirmed,
        "desired_weight": r.desired,
        "waiting_for": r.waiting_for,
        "next_window": r.next_window.map(ts),
        "spec_hash": rec.spec_hash,
        "version": rec.version,
        "created_at": ts(rec.created_at),
        "updated_at": ts(rec.updated_at),
    })
}

/// `pass_failing`: when the controller's last passes over this rollout all
/// failed (it cannot act on it, not even to abort), since when, how many
/// and the latest error; null otherwise.
fn pass_failing(failing: &BTreeMap<String, crate::controller::PassFailing>, id: &str) -> Value {
    match failing.get(id) {
        Some(f) => json!({"since": ts(f.since), "passes": f.passes, "error": f.error}),
        None => Value::Null,
    }
}

/// What the dashboard's rollouts page needs beyond `status -o json`: the
/// observed shares, the write in flight (its raise deadline), why it is
/// paused, each check's latest verdict, the next step, and who has already
/// approved the step it waits at. All read from the stored state and the
/// cached spec: no extra query per rollout.
fn dashboard_fields(v: &mut Value, r: &Rollout, spec: Option<&Spec>) {
    v["observed"] = json!(r.observed);
    v["write"] = match &r.write {
        Some(w) => json!({
            "purpose": w.purpose,
            "share": w.share,
            "decided_at": ts(w.decided_at),
            "deadline": w.deadline.map(ts),
            "failures": w.failures,
            "last_error": w.last_error,
        }),
        None => Value::Null,
    };
    v["paused_cause"] = json!(r.paused.as_ref().map(|p| p.cause));
    v["confirmed_at"] = json!(r.t0.map(ts));
    v["health"] = json!(
        r.checks
            .iter()
            .map(|(name, c)| json!({
                "name": name,
                "last": c.last_counted,
                "failure_streak": c.failure_streak,
                "inconclusive_streak": c.inconclusive_streak,
                "passes": c.passes,
            }))
            .collect::<Vec<_>>()
    );
    v["approved_by"] = json!(
        r.approvals
            .iter()
            .filter(|a| !a.void && a.step == r.step && a.spec_hash == r.spec_hash)
            .map(|a| a.principal.as_str())
            .collect::<Vec<_>>()
    );
    v["next_step"] = Value::Null;
    v["separation_of_duties"] = Value::Null;
    v["timezone"] = Value::Null;
    if let Some(spec) = spec {
        v["next_step"] = json!(spec.steps.get(r.step).map(|s| step_json(r.step, s)));
        v["separation_of_duties"] = json!(spec.approvals.separation_of_duties);
        v["timezone"] = json!(spec.windows.timezone.name());
    }
}

/// When the rollout's latest raise expired (`raise_expired` event), if it
/// ever did: the dashboard lists it under "needs attention" until a weight
/// is confirmed again. One indexed query, made for active rollouts only.
async fn raise_expired_at(st: &AppState, id: &str) -> Result<Option<i64>, ApiError> {
    use sqlx::Row;
    let store = st.controller.store();
    let sql = match store.backend() {
        crate::store::Backend::Postgres => {
            "SELECT MAX(at) AS at FROM events WHERE rollout_id = $1 AND kind = 'raise_expired'"
        }
        crate::store::Backend::Sqlite => {
            "SELECT MAX(at) AS at FROM events WHERE rollout_id = ? AND kind = 'raise_expired'"
        }
    };
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_one(store.pool())
        .await
        .map_err(ApiError::internal)?;
    row.try_get::<Option<i64>, _>("at")
        .map_err(ApiError::internal)
}

/// How many recent evaluations of each check the rollout endpoint returns
/// (the dashboard charts them). The store keeps every evaluation.
const HISTORY: usize = 60;

fn check_threshold(c: &crate::spec::Check) -> Value {
    json!({
        "min": c.min,
        "max": c.max,
        "failure_limit": c.failure_limit,
        "baseline": c.baseline.as_ref().map(|b| json!({"min_ratio": b.min_ratio, "max_ratio": b.max_ratio})),
        "min_traffic": c.min_traffic.as_ref().map(|m| m.min),
    })
}

/// How far ahead the rollout endpoint lists permitted windows (the
/// dashboard's calendar shows 14 days).
const WINDOW_DAYS: i64 = 14;

/// The spec's permitted windows from `now` for [`WINDOW_DAYS`], each with
/// what closes it ("equity session", "blackout: …"), so a person sees why
/// the rollout waits and until when. Bounded: at most 200 windows.
fn permitted_windows(
    spec: &Spec,
    cal: &crate::calendar::Calendar,
    now: DateTime<Utc>,
    frozen: bool,
) -> Value {
    use crate::windows::{self, Block};
    let range = Interval::new(now, now + chrono::TimeDelta::days(WINDOW_DAYS));
    let freeze = if frozen { vec![range] } else { vec![] };
    let list: Vec<Value> = windows::explain(&spec.window_rules(), cal, range, &freeze)
        .into_iter()
        .take(MAX_WINDOWS)
        .map(|e| {
            let closed_by = match e.closed_by.as_ref().map(|b| &b.block) {
                Some(Block::Session { segment, .. }) => format!("{segment} session"),
                Some(Block::Blackout(bl)) => format!("blackout: {}", bl.name),
                Some(Block::Deny(name)) => format!("deny window {name}"),
                Some(Block::Coverage) => format!(
                    "calendar {} ends (valid until {})",
                    cal.name, cal.valid_until
                ),
                Some(Block::Freeze) => "global freeze".to_string(),
                None => match e.allow_ends {
                    Some(a) => format!("allow window {a} ends"),
                    None => "beyond the range shown".to_string(),
                },
            };
            json!({
                "start": ts(e.window.start),
                "end": ts(e.window.end),
                "closed_by": closed_by,
                "opens_after": windows::opens_after(&e, spec.windows.after_close),
                "long_enough": e.window.end - e.window.start >= spec.windows.min_remaining,
            })
        })
        .collect();
    json!(list)
}

fn ms_ts(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(ts)
}

fn step_json(index: usize, s: &Step) -> Value {
    match s {
        Step::SetWeight(w) => json!({"index": index, "type": "set_weight", "weight": w}),
        Step::BakeDuration(d) => {
            json!({"index": index, "type": "bake", "duration_seconds": d.num_seconds()})
        }
        Step::BakeSessions { sessions, segment } => {
            json!({"index": index, "type": "bake", "sessions": sessions, "segment": segment})
        }
        Step::Approval { min } => json!({"index": index, "type": "approval", "min": min}),
        Step::Pause => json!({"index": index, "type": "pause"}),
    }
}

/// At most this many windows are listed.
const MAX_WINDOWS: usize = 200;

/// How far ahead the rules that open windows are named (a projected step
/// later than this shows its time without one).
const OPENERS_DAYS: i64 = 60;

/// The rule that opens each permitted window beginning in `(now, until]`,
/// by the window's start ("the equity session ends (+15m guard)"): what a
/// raise due at that instant waits for. One pass over the windows, however
/// many steps ask.
fn window_openers(
    spec: &Spec,
    cal: &crate::calendar::Calendar,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    freeze: &[Interval],
) -> HashMap<DateTime<Utc>, String> {
    use crate::windows;
    let until = until.min(now + chrono::TimeDelta::days(OPENERS_DAYS));
    if until <= now {
        return HashMap::new();
    }
    let range = Interval::new(now, until + chrono::TimeDelta::minutes(1));
    windows::explain(&spec.window_rules(), cal, range, freeze)
        .iter()
        .filter_map(|e| {
            windows::opens_after(e, spec.windows.after_close).map(|o| (e.window.start, o))
        })
        .collect()
}

/// The projected plan of the steps not yet done, from `now`, under the
/// plan's kind assumptions (docs/design.md §6 `plan`). The current step is
/// projected as if it started now, so a bake in progress shows its full
/// length: an upper bound for that step, the earliest for the rest.
fn projected(
    spec: &Spec,
    cal: &crate::calendar::Calendar,
    r: &Rollout,
    now: DateTime<Utc>,
    frozen: bool,
) -> Option<Value> {
    if r.state.is_terminal() || r.step >= spec.steps.len() {
        return None;
    }
    let mut rest = spec.clone();
    rest.steps = spec.steps[r.step..].to_vec();
    let end = cal.coverage().end.max(now);
    // While frozen no raise can be planned at all: the plan says so with
    // null times rather than guessing when the freeze ends.
    let freeze = if frozen {
        vec![Interval::new(now, end)]
    } else {
        vec![]
    };
    let p = plan::plan(&rest, cal, now, &freeze);
    let o = |t: &Option<DateTime<Utc>>| t.map(ts);
    let last = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Planned::SetWeight { at, .. } => *at,
            _ => None,
        })
        .max()
        .unwrap_or(now);
    let openers = window_openers(spec, cal, now, last, &freeze);
    // A step waits for a window only when it comes later than the step
    // before it ended (a raise right after another shares its time, and
    // waits for that one, not for the window).
    let mut prev_end = Some(now);
    let mut waits = |t: &Option<DateTime<Utc>>, end: &Option<DateTime<Utc>>| {
        let w = match (*t, prev_end) {
            (Some(t), Some(p)) if t > p => openers.get(&t).cloned(),
            _ => None,
        };
        prev_end = *end;
        w
    };
    let steps: Vec<Value> = p
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let index = i + r.step;
            let mut v = match s {
                Planned::SetWeight { weight, at } => {
                    json!({"index": index, "type": "set_weight", "weight": weight, "at": o(at), "waits_for": waits(at, at)})
                }
                Planned::Bake { start, until } => {
                    waits(&None, until);
                    json!({"index": index, "type": "bake", "start": o(start), "until": o(until)})
                }
                Planned::Approval { at } => {
                    waits(&None, at);
                    json!({"index": index, "type": "approval", "at": o(at)})
                }
                Planned::Pause { at } => {
                    waits(&None, at);
                    json!({"index": index, "type": "pause", "at": o(at)})
                }
            };
            v["provisional"] = json!(p.is_provisional(i));
            v
        })
        .collect();
    Some(json!({
        "from": ts(p.from),
        "frozen": frozen,
        "steps": steps,
        "complete_at": o(&p.complete_at),
    }))
}

/// Everything the dashboard shows for one rollout.
pub(crate) async fn detail(st: &AppState, rec: &RolloutRecord) -> Result<Value, ApiError> {
    let c = &st.controller;
    let r = engine_state(rec)?;
    let now = c.now();
    // A spec that no longer validates (a calendar removed) still has a
    // status worth showing; the parts that need it are left out.
    let spec = match c.spec_for(rec) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(rollout = %rec.id, error = %e, "Spec of a stored rollout is unusable.");
            None
        }
    };
    let mut v = summary(rec, &r, spec.as_ref().map(|s| s.steps.len()));
    v["pass_failing"] = pass_failing(&c.failing_rollouts(), &rec.id);
    dashboard_fields(&mut v, &r, spec.as_deref());
    v["raise_expired_at"] = match raise_expired_at(st, &rec.id).await? {
        Some(ms) => json!(ms_ts(ms)),
        None => Value::Null,
    };
    v["weights"] = json!({
        "desired": r.desired,
        "confirmed": r.confirmed,
        "observed": r.observed,
    });
    v["paused"] = match &r.paused {
        Some(p) => json!({"cause": p.cause, "by": p.by, "reason": p.reason, "at": ts(p.at)}),
        None => Value::Null,
    };
    v["override_checks"] = json!(r.override_checks);
    // Latest stored result per check, and a short history for the
    // dashboard's chart (oldest first), from the newest results.
    let results = c
        .store()
        .check_results(&rec.id, (r.checks.len().max(1) * HISTORY) as i64)
        .await?;
    let mut latest: BTreeMap<&str, Value> = BTreeMap::new();
    let mut history: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for res in &results {
        latest.entry(res.check_name.as_str()).or_insert_with(|| {
            json!({"at": ts(res.at), "query": res.query, "value": res.value, "verdict": res.verdict, "reason": res.reason, "in_session": res.in_session})
        });
        let h = history.entry(res.check_name.as_str()).or_default();
        if h.len() < HISTORY {
            h.push(json!({"at": ts(res.at), "value": res.value, "verdict": res.verdict}));
        }
    }
    for h in history.values_mut() {
        h.reverse();
    }
    // Each check's thresholds, so the dashboard can say "0.4% ≤ 1%".
    let thresholds: BTreeMap<&str, Value> = spec
        .as_ref()
        .and_then(|s| s.analysis.as_ref())
        .map(|a| {
            a.checks
                .iter()
                .map(|ch| (ch.name.as_str(), check_threshold(ch)))
                .collect()
        })
        .unwrap_or_default();
    let min_passes = spec
        .as_ref()
        .and_then(|s| s.analysis.as_ref())
        .map(|a| a.min_passes);
    v["checks"] = json!(
        r.checks
            .iter()
            .map(|(name, s)| json!({
                "name": name,
                "failure_streak": s.failure_streak,
                "inconclusive_streak": s.inconclusive_streak,
                "passes": s.passes,
                "min_passes": min_passes,
                "last_counted": s.last_counted,
                "last_at": s.last_at.map(ts),
                "latest": latest.get(name.as_str()).cloned(),
                "history": history.get(name.as_str()).cloned().unwrap_or_default(),
                "threshold": thresholds.get(name.as_str()).cloned(),
            }))
            .collect::<Vec<_>>()
    );
    v["approvals"] = json!(
        r.approvals
            .iter()
            .map(|a| json!({"principal": a.principal, "step": a.step, "spec_hash": a.spec_hash, "at": ts(a.at), "comment": a.comment, "void": a.void}))
            .collect::<Vec<_>>()
    );
    v["approval"] = Value::Null;
    v["spec_steps"] = Value::Null;
    v["plan"] = Value::Null;
    v["windows"] = Value::Null;
    v["calendar"] = Value::Null;
    v["next_window_after"] = Value::Null;
    v["guard"] = Value::Null;
    v["pools"] = Value::Null;
    if let Some(spec) = &spec {
        v["spec_steps"] = json!(
            spec.steps
                .iter()
                .enumerate()
                .map(|(i, s)| step_json(i, s))
                .collect::<Vec<_>>()
        );
        if let (RState::AwaitingApproval, Some(Step::Approval { min })) =
            (r.state, spec.steps.get(r.step))
        {
            let have = r
                .approvals
                .iter()
                .filter(|a| {
                    !a.void
                        && a.step == r.step
                        && a.spec_hash == r.spec_hash
                        && now - a.at < spec.approvals.max_age
                })
                .count();
            v["approval"] = json!({"step": r.step, "spec_hash": r.spec_hash, "need": min, "have": have, "separation_of_duties": spec.approvals.separation_of_duties});
        }
        // The zone people read this rollout's times in (the spec's
        // `windows.timezone`); instants themselves stay UTC.
        v["timezone"] = json!(spec.windows.timezone.name());
        if let Some(cal) = c.calendars().get(&spec.calendar) {
            v["calendar"] = json!({"name": cal.name, "version": cal.version.to_string(), "provisional_from": cal.provisional_from.map(|d| d.to_string())});
            // The next window rests on provisional data when a provisional
            // session (guard and min_remaining included) may decide it.
            v["next_window_provisional"] = json!(r.next_window.is_some_and(|t| {
                cal.provisional_start()
                    .is_some_and(|p| t + spec.windows.min_remaining + spec.windows.before_open > p)
            }));
            let frozen = c.store().freeze().await?.on;
            // Planning walks the windows to the end of coverage: CPU work,
            // on the blocking pool within the spec budget, so no spec can
            // hold an async worker or this request for long. Over budget,
            // the answer goes without the plan and the windows.
            let (spec2, r2, cal2) = (spec.clone(), r.clone(), cal.clone());
            let job = tokio::task::spawn_blocking(move || {
                let freeze = if frozen {
                    vec![Interval::new(now, cal2.coverage().end.max(now))]
                } else {
                    vec![]
                };
                let after = r2
                    .next_window
                    .and_then(|t| window_openers(&spec2, &cal2, now, t, &freeze).remove(&t));
                (
                    projected(&spec2, &cal2, &r2, now, frozen),
                    after,
                    permitted_windows(&spec2, &cal2, now, frozen),
                )
            });
            let (plan, after, windows) = match tokio::time::timeout(SPEC_BUDGET, job).await {
                Ok(done) => {
                    done.map_err(|e| ApiError::internal(format!("plan projection failed: {e}")))?
                }
                Err(_) => {
                    tracing::warn!(rollout = %rec.id, "Plan and windows took longer than the spec budget; answered without them.");
                    (None, None, Value::Null)
                }
            };
            v["plan"] = json!(plan);
            // Why the next window is not open yet ("the equity session
            // ends"): the rule a person waits on.
            v["next_window_after"] = json!(after);
            // For a finished rollout too: the calendar page shows the
            // windows its spec would have now (planning the next release).
            v["windows"] = windows;
            // The guard the spec keeps around its segments' sessions, so
            // the calendar page can draw it.
            v["guard"] = json!({
                "before_open_seconds": spec.windows.before_open.num_seconds(),
                "after_close_seconds": spec.windows.after_close.num_seconds(),
                "segments": spec.segments,
            });
        }
        if !r.state.is_terminal()
            && let Ok((o, true)) = c.orientation_of(spec).await
        {
            v["pools"] = json!({"canary": o.canary.name, "live": o.live.name, "canary_servers": o.canary.servers, "live_servers": o.live.servers});
        }
    }
    v["policy_version"] = json!(c.config().policy_version);
    if let Some(base) = &st.public_url {
        v["dashboard_url"] = json!(format!(
            "{}/rollouts/{}",
            base.trim_end_matches('/'),
            rec.id
        ));
    }
    Ok(v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    spec: String,
    revision: String,
    initiator: Option<String>,
}

/// `POST /rollouts`: validate spec and policy synchronously, then create in
/// `pending` (201) — or return the same active rollout (200).
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    raw: RawJson,
) -> Result<Response, ApiError> {
    caller.require(Action::Deploy)?;
    let body: StartBody = raw.parse()?;
    let Some(revision) = text_field("revision", Some(body.revision), MAX_NAME_CHARS)? else {
        return Err(ApiError::bad_request(
            "`revision` is empty; pass the commit or build being rolled out",
        ));
    };
    let initiator = text_field("initiator", body.initiator, MAX_NAME_CHARS)?;
    let loaded = load_spec_async(&st, &body.spec).await?;
    let mut violations = crate::policy::check(&loaded.spec, &st.policy);
    // A webhook is refused now, not at its first delivery: the secret must
    // be set, and its URL point at a bound, allowed host. (The check reads
    // the environment, so it is here and not in the pure policy check.)
    for (i, n) in loaded.spec.notify.iter().enumerate() {
        let problem = match st.policy.secrets.webhook_url(&n.webhook_secret) {
            Err(crate::secrets::SecretError::Unbound { .. }) => None, // listed by check()
            Err(e) => Some(e.to_string()),
            Ok(url) => st.policy.url_allowed(&url).err().map(|_| {
                format!(
                    "webhook secret `{}` points at a host outside the server policy's allowed_hosts",
                    n.webhook_secret
                )
            }),
        };
        if let Some(message) = problem {
            violations.push(crate::policy::Violation {
                path: format!("notify[{i}].webhook_secret"),
                message,
            });
        }
    }
    if !violations.is_empty() {
        return Err(errors::policy_violation(&violations));
    }
    let initiator = initiator.unwrap_or_else(|| caller.principal.clone());
    let outcome = st
        .controller
        .start(StartRequest {
            spec_yaml: body.spec,
            revision,
            initiator,
            principal: caller.principal.clone(),
        })
        .await?;
    let (status, rec) = match outcome {
        StartOutcome::Created(rec) => (StatusCode::CREATED, rec),
        StartOutcome::Existing(rec) => (StatusCode::OK, rec),
    };
    st.changed();
    let mut v = detail(&st, &rec).await?;
    v["warnings"] = json!(
        loaded
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    Ok((status, Json(v)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// `active`: only non-terminal rollouts; or a state name.
    state: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Read)?;
    let limit = limit_param(q.limit, 100, 1000)?;
    let (active_only, state) = match q.state.as_deref() {
        None | Some("") | Some("all") => (false, None),
        Some("active") => (true, None),
        Some(s) if super::STATES.contains(&s) => (false, Some(s.to_string())),
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "state `{s}`: use active, all, or one of {}",
                super::STATES.join(", ")
            )));
        }
    };
    // A state filter reads a wider page, then filters: states are few and
    // the list is newest first.
    let fetch = if state.is_some() { 10_000 } else { limit };
    let recs = st.controller.store().rollouts(active_only, fetch).await?;
    let mut out = Vec::new();
    let failing = st.controller.failing_rollouts();
    for rec in recs
        .iter()
        .filter(|r| state.as_ref().is_none_or(|s| &r.state == s))
        .take(limit as usize)
    {
        let r = engine_state(rec)?;
        let spec = st.controller.spec_for(rec).ok();
        let mut v = summary(rec, &r, spec.as_ref().map(|s| s.steps.len()));
        v["pass_failing"] = pass_failing(&failing, &rec.id);
        dashboard_fields(&mut v, &r, spec.as_deref());
        v["raise_expired_at"] = match r.state.is_terminal() {
            true => Value::Null,
            false => json!(raise_expired_at(&st, &rec.id).await?.and_then(ms_ts)),
        };
        out.push(v);
    }
    Ok(Json(json!(out)))
}

pub async fn show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Read)?;
    let rec = resolve(&st, &id).await?;
    Ok(Json(detail(&st, &rec).await?))
}

/// An audit event as the API shows it (`snapshot` left out: it is the
/// engine's internal state, large, and the rollout endpoint shows it
/// better).
pub(crate) fn event_json(e: &EventRecord) -> Value {
    let ev = &e.event;
    let input: Value = serde_json::from_str(&ev.input).unwrap_or(Value::String(ev.input.clone()));
    json!({
        "seq": e.seq,
        "rollout_id": ev.rollout_id,
        "at": ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "kind": ev.kind,
        "principal": ev.principal,
        "why": ev.why,
        "state": ev.state,
        "version": ev.version,
        "input": input,
        "calendar": ev.calendar,
        "calendar_version": ev.calendar_version,
        "policy_version": ev.policy_version,
        "clock_skew_ms": ev.clock_skew_ms,
    })
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

pub async fn audit(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Read)?;
    let rec = resolve(&st, &id).await?;
    let events = st
        .controller
        .store()
        .events(
            Some(&rec.id),
            q.after.unwrap_or(0),
            limit_param(q.limit, 1000, 10_000)?,
        )
        .await?;
    Ok(Json(json!(
        events.iter().map(event_json).collect::<Vec<_>>()
    )))
}

/// Run a command through the engine and answer with the rollout after it.
async fn command(
    st: &AppState,
    caller: &Caller,
    rec: &RolloutRecord,
    input: Input,
) -> Result<Json<Value>, ApiError> {
    st.controller
        .input(&rec.id, input, Some(&caller.principal))
        .await?;
    st.changed();
    let fresh = st
        .controller
        .store()
        .rollout(&rec.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("rollout `{}` not found", rec.id)))?;
    Ok(Json(detail(st, &fresh).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    reason: Option<String>,
}

pub async fn pause(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    raw: RawJson,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Deploy)?;
    let body: PauseBody = raw.parse()?;
    let reason = text_field("reason", body.reason, MAX_TEXT_CHARS)?;
    let rec = resolve(&st, &id).await?;
    let input = Input::Pause {
        by: caller.principal.clone(),
        reason,
    };
    command(&st, &caller, &rec, input).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    #[serde(default)]
    override_checks: bool,
    reason: Option<String>,
}

pub async fn resume(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    raw: RawJson,
) -> Result<Json<Value>, ApiError> {
    // Which role is needed depends on the body; refuse a caller who may do
    // neither kind of resume before reading it.
    if !caller.role.may(Action::Deploy) {
        caller.require(Action::OverrideChecks)?;
    }
    let body: ResumeBody = raw.parse()?;
    // Overriding checks is an approver's call; a plain resume a deployer's.
    caller.require(if body.override_checks {
        Action::OverrideChecks
    } else {
        Action::Deploy
    })?;
    let reason = text_field("reason", body.reason, MAX_TEXT_CHARS)?;
    let rec = resolve(&st, &id).await?;
    let input = Input::Resume {
        by: caller.principal.clone(),
        override_checks: body.override_checks,
        reason,
    };
    command(&st, &caller, &rec, input).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortBody {
    reason: Option<String>,
}

pub async fn abort(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    raw: RawJson,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Deploy)?;
    let body: AbortBody = raw.parse()?;
    let reason = text_field("reason", body.reason, MAX_TEXT_CHARS)?.ok_or_else(|| {
        ApiError::reason_required("say why you abort: {\"reason\": \"…\"} (it goes into the audit log and the notification)")
    })?;
    let rec = resolve(&st, &id).await?;
    let input = Input::Abort {
        by: caller.principal.clone(),
        reason,
    };
    command(&st, &caller, &rec, input).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    step: usize,
    spec_hash: String,
    comment: Option<String>,
}

pub async fn approve(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    raw: RawJson,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Approve)?;
    let body: ApproveBody = raw.parse()?;
    let comment = text_field("comment", body.comment, MAX_TEXT_CHARS)?;
    // Any text is a (stale) hash to the engine; only its size and control
    // characters are refused here.
    let spec_hash =
        text_field("spec_hash", Some(body.spec_hash), MAX_NAME_CHARS)?.unwrap_or_default();
    let rec = resolve(&st, &id).await?;
    // The initiator is a person, not a token: the token that started the
    // rollout, any other token of the same principal, and the `initiator`
    // name given at start all count as the initiator.
    // Compared normalised (case, surrounding space): `Asha` started it,
    // `asha` may not approve it.
    let is_initiator = super::auth::same_principal(&caller.principal, &rec.principal)
        || super::auth::same_principal(&caller.principal, &rec.initiator);
    let input = Input::Approve {
        principal: caller.principal.clone(),
        is_initiator,
        step: body.step,
        spec_hash,
        comment,
    };
    command(&st, &caller, &rec, input).await
}
