//! Admin endpoints: tokens, the global freeze, calendar reload. Each change
//! is an audit event naming the admin's principal.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Action, Caller, Role, TokenError};
use super::errors::{ApiError, RawJson};
use super::{AppState, ts};
use crate::store::{FreezeRecord, NewEvent, TokenRecord};

fn token_json(t: &TokenRecord) -> Value {
    // Never the hash: it is as good as the token for an offline guesser of
    // short tokens, and nobody needs it.
    json!({
        "name": t.name,
        "role": t.role,
        "principal": t.principal,
        "created_at": ts(t.created_at),
        "created_by": t.created_by,
        "revoked_at": t.revoked_at.map(ts),
        "revoked_by": t.revoked_by,
    })
}

pub async fn list_tokens(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Admin)?;
    let tokens = st.controller.store().tokens().await?;
    Ok(Json(json!(
        tokens.iter().map(token_json).collect::<Vec<_>>()
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    role: Role,
    /// Defaults to the name.
    principal: Option<String>,
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "token_exists", e.to_string()),
        TokenError::LastAdmin(_) => {
            ApiError::new(StatusCode::CONFLICT, "last_admin", e.to_string())
        }
        TokenError::Invalid(m) => ApiError::bad_request(m),
        TokenError::Random(_) => ApiError::internal(e.to_string()),
        TokenError::Store(s) => s.into(),
    }
}

pub async fn create_token_route(
    State(st): State<AppState>,
    caller: Caller,
    raw: RawJson,
) -> Result<Response, ApiError> {
    caller.require(Action::Admin)?;
    let body: NewToken = raw.parse()?;
    let principal = body.principal.unwrap_or_else(|| body.name.clone());
    let now = st.controller.now();
    let (token, rec) = auth::create_token_at(
        st.controller.store(),
        &body.name,
        body.role,
        &principal,
        &caller.principal,
        now,
    )
    .await
    .map_err(token_error)?;
    tracing::info!(by = %caller.principal, name = %rec.name, role = %rec.role, "Token created.");
    st.changed();
    let mut v = token_json(&rec);
    v["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn revoke_token_route(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Admin)?;
    let now = st.controller.now();
    auth::ensure_not_last_admin(st.controller.store(), &name)
        .await
        .map_err(token_error)?;
    if !auth::revoke_token(st.controller.store(), &name, &caller.principal, now).await? {
        return Err(ApiError::not_found(format!(
            "no live token named `{name}` (GET /api/v1/tokens lists them)"
        )));
    }
    tracing::info!(by = %caller.principal, name = %name, "Token revoked.");
    st.changed();
    let rec = st
        .controller
        .store()
        .tokens()
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiError::internal(format!("token {name} vanished after revoke")))?;
    Ok(Json(token_json(&rec)))
}

fn freeze_json(f: &FreezeRecord) -> Value {
    json!({"on": f.on, "reason": f.reason, "by": f.by, "since": ts(f.since)})
}

pub async fn show_freeze(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Read)?;
    Ok(Json(freeze_json(&st.controller.store().freeze().await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    on: bool,
    reason: Option<String>,
}

/// The global freeze: no raise anywhere while on (decreases continue).
pub async fn set_freeze(
    State(st): State<AppState>,
    caller: Caller,
    raw: RawJson,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Admin)?;
    let body: FreezeBody = raw.parse()?;
    let reason = body
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ApiError::reason_required("say why the freeze changes: {\"on\": …, \"reason\": \"…\"}")
        })?;
    let now = st.controller.now();
    let rec = FreezeRecord {
        on: body.on,
        reason: reason.clone(),
        by: caller.principal.clone(),
        since: now,
    };
    let word = if body.on { "on" } else { "off" };
    st.controller
        .set_freeze(
            &rec,
            &NewEvent {
                at: now,
                kind: format!("freeze_{word}"),
                principal: Some(caller.principal.clone()),
                why: format!(
                    "{} turned the global freeze {word}: {reason}",
                    caller.principal
                ),
                input: json!({"command": "freeze", "on": body.on, "reason": reason}).to_string(),
                state: "server".into(),
                ..Default::default()
            },
        )
        .await?;
    tracing::warn!(by = %caller.principal, on = body.on, reason = %reason, "Global freeze switched.");
    st.changed();
    Ok(Json(freeze_json(&rec)))
}

/// Re-read the calendars folder; an invalid or not-newer file is refused
/// and the previous version stays in force.
pub async fn reload_calendars(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Admin)?;
    // File I/O and parsing run off the async workers; a version that an
    // active rollout's spec no longer validates against is refused.
    let report = st.controller.reload_calendars().await?;
    for l in &report.refused {
        tracing::error!(problem = %l, "Calendar refused; the previous version stays in force.");
    }
    let now = st.controller.now();
    st.controller
        .store()
        .append_event(&NewEvent {
            at: now,
            kind: "calendars_reloaded".into(),
            principal: Some(caller.principal.clone()),
            why: format!(
                "{} reloaded calendars: {} loaded, {} unchanged, {} refused",
                caller.principal,
                report.loaded.len(),
                report.unchanged.len(),
                report.refused.len()
            ),
            input: json!({"command": "calendars_reload", "report": report}).to_string(),
            state: "server".into(),
            ..Default::default()
        })
        .await?;
    st.changed();
    let in_force: Vec<Value> = st
        .controller
        .calendars()
        .all()
        .iter()
        .map(|c| json!({"name": c.name, "version": c.version.to_string(), "valid_from": c.valid_from, "valid_until": c.valid_until}))
        .collect();
    Ok(Json(json!({
        "loaded": report.loaded,
        "unchanged": report.unchanged,
        "refused": report.refused,
        "in_force": in_force,
    })))
}
