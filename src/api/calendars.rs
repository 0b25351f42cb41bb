//! The calendars in force, for the dashboard and scripts (viewer role):
//! `GET /api/v1/calendars` (name, version, coverage, provisional status)
//! and `GET /api/v1/calendars/{name}/days?from=&to=` (each day's sessions,
//! holidays, special sessions and blackouts with source and confidence —
//! the same day view as `muhurat calendar show -o json`).
//!
//! A days query is bounded ([`MAX_DAYS`]): the answer is built in memory
//! from the calendar, and an unbounded range would let any viewer make the
//! server build years of days per request.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Action, Caller};
use super::errors::ApiError;

/// What `/readyz` says about the calendars without making the server
/// unready (issue 10): coverage ending within 45 days, and provisional data
/// in force or coming, so an operator knows windows may still change.
pub fn readiness_warnings(
    cals: &crate::controller::Calendars,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for c in cals.all() {
        let left = c.coverage().end - now;
        if left < crate::controller::calendars::COVERAGE_WARNING {
            out.push(json!({
                "code": "calendar_coverage_low",
                "calendar": c.name,
                "message": format!(
                    "calendar {}: coverage ends on {} (in {} day(s)); after that nothing moves (fail closed) — publish the next calendar and reload",
                    c.name,
                    c.valid_until,
                    left.num_days().max(0)
                ),
            }));
        }
        if let Some(p) = c.provisional_from
            && left > chrono::TimeDelta::zero()
        {
            out.push(json!({
                "code": "calendar_provisional",
                "calendar": c.name,
                "message": format!(
                    "calendar {} {}: data from {p} is provisional{} — windows that rely on it are marked provisional",
                    c.name,
                    c.version,
                    c.provisional_note.as_deref().map_or_else(String::new, |n| format!(" ({n})"))
                ),
            }));
        }
    }
    out
}

/// The longest range `days` answers, in days (a leap year).
pub const MAX_DAYS: i64 = 366;

/// `GET /api/v1/calendars`.
pub async fn list(State(st): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Read)?;
    let now = st.controller.now();
    let cals: Vec<Value> = st
        .controller
        .calendars()
        .all()
        .iter()
        .map(|c| {
            let mut v = json!(c.info());
            v["coverage_remaining_seconds"] = json!((c.coverage().end - now).num_seconds());
            v
        })
        .collect();
    Ok(Json(json!({ "calendars": cals })))
}

#[derive(Debug, Deserialize)]
pub struct DaysQuery {
    from: Option<String>,
    to: Option<String>,
}

fn date(name: &str, v: Option<&str>) -> Result<NaiveDate, ApiError> {
    let v = v.ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{name}` is required: ?from=YYYY-MM-DD&to=YYYY-MM-DD (both included, at most {MAX_DAYS} days)"
        ))
    })?;
    NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request(format!(
            "`{name}` `{v}` is not a date; write YYYY-MM-DD, e.g. 2027-01-04"
        ))
    })
}

/// `GET /api/v1/calendars/{name}/days?from=&to=`: dates in the calendar's
/// zone, both included.
pub async fn days(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<DaysQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Read)?;
    let cals = st.controller.calendars();
    let cal = cals.get(&name).ok_or_else(|| {
        ApiError::not_found(format!(
            "no calendar `{name}` in force (loaded: {})",
            cals.names().join(", ")
        ))
    })?;
    let from = date("from", q.from.as_deref())?;
    let to = date("to", q.to.as_deref())?;
    if to < from {
        return Err(ApiError::bad_request(format!(
            "`to` {to} is before `from` {from}"
        )));
    }
    let n = (to - from).num_days() + 1;
    if n > MAX_DAYS {
        return Err(ApiError::bad_request(format!(
            "{from} to {to} is {n} days; ask for at most {MAX_DAYS} at a time"
        )));
    }
    Ok(Json(json!({
        "calendar": cal.info(),
        "from": from,
        "to": to,
        "days": cal.days(from, to, &[]),
    })))
}
