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
