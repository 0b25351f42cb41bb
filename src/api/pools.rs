//! Spec-based target endpoints: which pool is idle and safe to deploy to,
//! adopting a live pool, and the `check-target`/`check-metrics` dry runs
//! (they run inside the server because only it can reach the targets and
//! holds the secrets).
//!
//! These endpoints make the server connect wherever a spec points, so the
//! policy's `allowed_hosts` applies to them even though they change nothing.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Action, Caller};
use super::errors::{self, ApiError, RawJson};
use super::rollouts::{load_spec, load_spec_async};
use crate::controller::AdoptError;
use crate::engine::DRIFT_TOLERANCE;
use crate::spec::Spec;
use crate::traffic::{Orientation, Reading};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecBody {
    spec: String,
}

/// Load the spec and refuse, before any connection, hosts outside the
/// policy and secrets sent anywhere they are not bound to. A spec that
/// names a secret makes the server use it, so reading with it needs the
/// role that may start a rollout.
async fn spec_within_reach(st: &AppState, caller: &Caller, yaml: &str) -> Result<Spec, ApiError> {
    let spec = load_spec_async(st, yaml).await?.spec;
    if crate::policy::names_secrets(&spec) && !caller.role.may(Action::Deploy) {
        return Err(ApiError::forbidden(format!(
            "token `{}` of {} has the {} role; a spec that names a secret makes the server use it, which needs the deployer or admin role (remove the secret to check without it)",
            caller.token_name, caller.principal, caller.role
        )));
    }
    let v = crate::policy::check_reach(&spec, &st.policy);
    if !v.is_empty() {
        return Err(errors::policy_violation(&v));
    }
    Ok(spec)
}

/// The orientation to read a target with: the controller's one answer
/// (stored pools, or — never rolled out — what the weights say).
async fn orientation(st: &AppState, spec: &Spec) -> Result<Orientation, ApiError> {
    st.controller
        .orientation_of(spec)
        .await
        .map(|(o, _)| o)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string()))
}

/// The `pools -o json` document (docs/design.md §6).
async fn pools_view(st: &AppState, spec: &Spec) -> Result<Value, ApiError> {
    let target = spec.traffic.target_id();
    let active = st.controller.store().active_on_target(&target).await?;
    let (mut live, mut idle) = (None, None);
    let mut idle_shares: Vec<f64> = Vec::new();
    let mut reason: Option<String> = None;
    match st.controller.orientation_of(spec).await {
        Err(e) => reason = Some(e.to_string()),
        Ok((o, _)) => {
            live = Some(o.live.name.clone());
            idle = Some(o.canary.name.clone());
            let backend = st.controller.traffic().backend(&spec.traffic, &o);
            match backend.read().await {
                Err(e) => reason = Some(format!("cannot read target {target}: {e}")),
                Ok(r) => {
                    if let Some((ep, e)) = r.unreachable().into_iter().next() {
                        reason = Some(format!("endpoint {ep} did not answer: {e}"));
                    }
                    idle_shares = r.shares().values().copied().collect();
                }
            }
        }
    }
    let idle_max = idle_shares
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    if let Some(a) = &active {
        reason = Some(format!(
            "rollout {} is active on {target} ({})",
            a.id, a.state
        ));
    }
    if reason.is_none()
        && let Some(m) = idle_max
        && m > DRIFT_TOLERANCE
    {
        reason = Some(format!(
            "the idle pool {} carries {m:.1}% on some endpoint; it must be at 0 everywhere",
            idle.clone().unwrap_or_default()
        ));
    }
    if reason.is_none() && idle_max.is_none() {
        reason = Some(format!("no endpoint of {target} answered"));
    }
    let safe = reason.is_none();
    let reason = reason.unwrap_or_else(|| {
        format!(
            "no rollout is active and the idle pool {} is at 0% on every endpoint",
            idle.clone().unwrap_or_default()
        )
    });
    Ok(json!({
        "target": target,
        "live": live,
        "idle": idle,
        "active_rollout": active.map(|a| a.id),
        "idle_weight_max": idle_max,
        "safe_to_deploy": safe,
        "reason": reason,
    }))
}

pub async fn pools(
    State(st): State<AppState>,
    caller: Caller,
    raw: RawJson,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Read)?;
    let body: SpecBody = raw.parse()?;
    let spec = spec_within_reach(&st, &caller, &body.spec).await?;
    Ok(Json(pools_view(&st, &spec).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptBody {
    spec: String,
    live: String,
}

/// Make the named pool the live one: allowed only as a decrease of the
/// other pool towards the pool that carries the most (decided by the
/// engine's target rules, written by the target's actuator through the
/// gate, confirmed, then recorded). Anything else is refused and nothing is
/// written.
pub async fn adopt(
    State(st): State<AppState>,
    caller: Caller,
    raw: RawJson,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Deploy)?;
    let body: AdoptBody = raw.parse()?;
    let loaded = load_spec(&st, &body.spec)?;
    let spec = loaded.spec;
    let v = crate::policy::check(&spec, &st.policy);
    if !v.is_empty() {
        return Err(errors::policy_violation(&v));
    }
    let [a, b] = spec.traffic.pools().clone();
    if body.live != a.name && body.live != b.name {
        return Err(ApiError::bad_request(format!(
            "`live`: `{}` is not a pool of this spec ({} or {})",
            body.live, a.name, b.name
        )));
    }
    match st
        .controller
        .adopt(&spec, &body.live, &caller.principal)
        .await
    {
        Ok(_) => {}
        Err(AdoptError::Refused(m)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "adopt_refused", m));
        }
        Err(AdoptError::Busy { target, rollout }) => return Err(errors::busy(&target, &rollout)),
        Err(AdoptError::Backend(m)) => return Err(ApiError::backend(m)),
        Err(AdoptError::Store(e)) => return Err(e.into()),
    }
    st.changed();
    Ok(Json(pools_view(&st, &spec).await?))
}

fn endpoints_json(r: &Reading, canary: &str) -> Value {
    json!(
        r.endpoints
            .iter()
            .map(|(ep, v)| match v {
                Ok(e) => json!({"endpoint": ep, "canary_pool": canary, "canary_share": e.share, "canary_up": e.canary_up, "live_up": e.live_up}),
                Err(e) => json!({"endpoint": ep, "error": e}),
            })
            .collect::<Vec<_>>()
    )
}

/// Preflight without starting: every issue the backend finds.
pub async fn check_target(
    State(st): State<AppState>,
    caller: Caller,
    raw: RawJson,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Read)?;
    let body: SpecBody = raw.parse()?;
    let spec = spec_within_reach(&st, &caller, &body.spec).await?;
    let target = spec.traffic.target_id();
    let o = match st.controller.orientation_of(&spec).await {
        Ok((o, _)) => o,
        Err(e) => {
            return Ok(Json(json!({
                "target": target,
                "ok": false,
                "issues": [{"endpoint": target, "message": e.to_string()}],
                "endpoints": [],
            })));
        }
    };
    let backend = st.controller.traffic().backend(&spec.traffic, &o);
    let issues: Vec<Value> = match backend.preflight().await {
        Ok(is) => is
            .iter()
            .map(|i| json!({"endpoint": i.endpoint, "message": i.message}))
            .collect(),
        Err(e) => vec![json!({"endpoint": target, "message": e.to_string()})],
    };
    let endpoints = match backend.read().await {
        Ok(r) => endpoints_json(&r, &o.canary.name),
        Err(e) => json!([{"endpoint": target, "error": e.to_string()}]),
    };
    Ok(Json(json!({
        "target": target,
        "ok": issues.is_empty(),
        "issues": issues,
        "endpoints": endpoints,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsBody {
    spec: String,
    revision: Option<String>,
}

/// Evaluate every check once now, as the controller would.
pub async fn check_metrics(
    State(st): State<AppState>,
    caller: Caller,
    raw: RawJson,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Action::Read)?;
    let body: MetricsBody = raw.parse()?;
    let spec = spec_within_reach(&st, &caller, &body.spec).await?;
    let Some(a) = spec.analysis.as_ref().filter(|a| !a.checks.is_empty()) else {
        return Ok((
            StatusCode::OK,
            Json(
                json!({"ok": true, "query_time": null, "checks": [], "note": "the spec has no checks: it advances on time and approvals alone"}),
            ),
        ));
    };
    let target = spec.traffic.target_id();
    let active = st
        .controller
        .store()
        .active_on_target(&target)
        .await?
        .filter(|r| r.name == spec.name);
    let rollout = active
        .as_ref()
        .map_or_else(|| format!("{}-check", spec.name), |r| r.id.clone());
    let revision = body
        .revision
        .or_else(|| active.as_ref().map(|r| r.revision.clone()))
        .unwrap_or_default();
    // Which pool is the canary matters only to queries that name it; one
    // that does is never run on a guess (409 needs_adopt instead).
    let needs_pools = a.checks.iter().any(|c| {
        crate::gates::uses_pool_vars(&c.query)
            || c.min_traffic
                .as_ref()
                .is_some_and(|m| crate::gates::uses_pool_vars(&m.query))
            || c.baseline
                .as_ref()
                .is_some_and(|b| crate::gates::uses_pool_vars(&b.query))
    });
    let o = match orientation(&st, &spec).await {
        Ok(o) => o,
        Err(e) if needs_pools => return Err(e),
        Err(_) => {
            let [a, b] = spec.traffic.pools().clone();
            Orientation { canary: a, live: b }
        }
    };
    let vars = crate::gates::vars_for(&spec, &rollout, &revision, &o.canary.name)
        .map_err(|e| ApiError::internal(e.0))?;
    let now = st.controller.now();
    let query_time = now - a.query_delay;
    let source = st.controller.metrics().source(a);
    let mut checks = Vec::new();
    let mut ok = true;
    for c in &a.checks {
        let ev = match &source {
            Ok(src) => crate::gates::evaluate(c, src.as_ref(), &vars, query_time).await,
            Err(e) => crate::gates::Evaluation {
                check: c.name.clone(),
                verdict: crate::gates::Verdict::Error,
                value: None,
                query: crate::gates::render(&c.query, &vars),
                reason: format!("metrics source unusable: {e}"),
                server_date: None,
            },
        };
        ok &= ev.verdict == crate::gates::Verdict::Pass;
        checks.push(json!({
            "name": ev.check,
            "query": ev.query,
            "min_traffic_query": c.min_traffic.as_ref().map(|m| crate::gates::render(&m.query, &vars)),
            "baseline_query": c.baseline.as_ref().map(|b| crate::gates::render(&b.query, &vars)),
            "value": ev.value.filter(|v| v.is_finite()),
            "value_text": ev.value.map(|v| v.to_string()),
            "verdict": ev.verdict,
            "reason": ev.reason,
        }));
    }
    Ok((
        StatusCode::OK,
        Json(json!({
            "ok": ok,
            "query_time": super::ts(query_time),
            "checks": checks,
        })),
    ))
}
