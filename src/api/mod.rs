//! HTTP: the REST API of docs/design.md §7 under `/api/v1`, server-sent events, and
//! health, readiness and Prometheus metrics.
//!
//! The decision a newcomer must know: handlers never change a rollout
//! themselves. A command becomes an [`crate::engine::Input`] and goes through
//! [`Controller::input`], the same locked store transaction the controller
//! uses, so a refusal (`stale_approval`, `separation_of_duties`…) comes from
//! the engine and nothing half-done is ever stored. Handlers authenticate
//! ([`auth::Caller`]: a bearer token, or the dashboard's session cookie with
//! its CSRF token, [`session`]), check the role, translate, and shape the
//! answer. Only `/healthz`, `/readyz`, `/metrics`, the dashboard's sign-in
//! page and its static assets answer without a token.
//!
//! Routes are registered through [`Routes`], which also records them, so
//! the test that compares the router with `openapi.yaml` sees exactly what
//! the server serves.

pub mod admin;
pub mod auth;
pub mod calendars;
pub mod dashboard;
pub mod errors;
pub mod events;
pub mod pools;
pub mod rollouts;
pub mod serve;
pub mod session;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::controller::Controller;
use crate::policy::Policy;
pub use auth::{Caller, Role, create_token, new_token};
pub use errors::{ApiError, BODY_LIMIT};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub controller: Arc<Controller>,
    /// The floor under every spec (docs/design.md §3 *Policy*).
    pub policy: Arc<Policy>,
    /// The dashboard's public URL, for links in answers.
    pub public_url: Option<String>,
    /// Bumped after every change the API commits, to wake SSE streams at
    /// once; they also poll the store every second for the controller's own
    /// transitions, so a missed bump only delays, never loses, an event.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// The dashboard's signed-in browsers ([`session`]).
    pub sessions: Arc<session::Sessions>,
}

impl AppState {
    /// The empty policy, no public URL.
    pub fn new(controller: Arc<Controller>) -> AppState {
        AppState {
            controller,
            policy: Arc::new(Policy::default()),
            public_url: None,
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            sessions: Arc::new(session::Sessions::default()),
        }
    }

    pub fn with_policy(mut self, policy: Policy) -> AppState {
        self.policy = Arc::new(policy);
        self
    }

    pub fn with_public_url(mut self, url: Option<String>) -> AppState {
        self.public_url = url;
        self
    }

    /// Something was committed: wake event streams and the controller.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        self.controller.poke();
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// A router under construction that remembers its routes.
pub struct Routes {
    router: Router<AppState>,
    list: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            list: Vec::new(),
        }
    }

    fn add(mut self, method: &'static str, path: &'static str, h: MethodRouter<AppState>) -> Self {
        self.list.push((method, path));
        self.router = self.router.route(path, h);
        self
    }
}

fn routes() -> Routes {
    use admin::*;
    use pools::*;
    use rollouts::*;
    Routes::new()
        .add("get", "/healthz", get(healthz))
        .add("get", "/readyz", get(readyz))
        .add("get", "/metrics", get(metrics))
        .add("post", "/api/v1/rollouts", post(create))
        .add("get", "/api/v1/rollouts", get(list))
        .add("get", "/api/v1/rollouts/{id}", get(show))
        .add("get", "/api/v1/rollouts/{id}/events", get(audit))
        .add("post", "/api/v1/rollouts/{id}/pause", post(pause))
        .add("post", "/api/v1/rollouts/{id}/resume", post(resume))
        .add("post", "/api/v1/rollouts/{id}/abort", post(abort))
        .add("post", "/api/v1/rollouts/{id}/approve", post(approve))
        .add("post", "/api/v1/pools", post(pools))
        .add("post", "/api/v1/pools/adopt", post(adopt))
        .add("post", "/api/v1/check-target", post(check_target))
        .add("post", "/api/v1/check-metrics", post(check_metrics))
        .add("get", "/api/v1/tokens", get(list_tokens))
        .add("post", "/api/v1/tokens", post(create_token_route))
        .add(
            "delete",
            "/api/v1/tokens/{name}",
            delete(revoke_token_route),
        )
        .add("get", "/api/v1/events", get(events::stream))
        .add("get", "/api/v1/freeze", get(show_freeze))
        .add("post", "/api/v1/freeze", post(set_freeze))
        .add("post", "/api/v1/calendars/reload", post(reload_calendars))
        .add("get", "/api/v1/calendars", get(calendars::list))
        .add("get", "/api/v1/calendars/{name}/days", get(calendars::days))
        .add("get", "/api/v1/session", get(session::show))
        .add("post", "/api/v1/session", post(session::sign_in))
        .add("delete", "/api/v1/session", delete(session::sign_out))
}

/// Every (method, path) the router serves, lower-case methods, axum path
/// syntax (`{id}`, as in OpenAPI).
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    routes().list
}

pub fn router(state: AppState) -> Router {
    routes()
        .router
        // The dashboard's pages and assets (HTML, not in openapi.yaml).
        .merge(dashboard::router())
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see openapi.yaml for the API")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see openapi.yaml",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(guard))
        .layer(axum::middleware::map_response(dashboard::security_headers))
        .with_state(state)
}

/// The per-request guard of [`router`] around any router: request id,
/// panic → 500, deadline, JSON rejections. Public so tests can put it around
/// a handler that panics on purpose.
pub fn harden<S: Clone + Send + Sync + 'static>(r: Router<S>) -> Router<S> {
    r.layer(axum::middleware::from_fn(guard))
}

/// How long a request may take to produce its response head (SSE streams
/// answer at once and then stream). Longer than any backend call a handler
/// makes (`adopt` waits up to ~20 s for a confirmation).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Around every request: a request id (`x-request-id`), a panic in a
/// handler turned into a 500 that names the id (the client always gets an
/// answer; the log has the panic), a deadline, and axum's plain-text
/// rejections (bad path or query string) rewritten in the JSON error shape.
async fn guard(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use futures_util::FutureExt;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let run = std::panic::AssertUnwindSafe(next.run(req)).catch_unwind();
    let mut resp = match tokio::time::timeout(REQUEST_TIMEOUT, run).await {
        Ok(Ok(r)) => plain_rejection_as_json(r).await,
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic".into());
            tracing::error!(request_id = %id, method = %method, path = %path, panic = %what, "A handler panicked; answered 500. This is a bug.");
            internal_with_id(&id)
        }
        Err(_) => {
            tracing::warn!(request_id = %id, method = %method, path = %path, "Request timed out.");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request took longer than {} s (request id {id}); retry, and check the server log if it persists",
                    REQUEST_TIMEOUT.as_secs()
                ),
            )
            .into_response()
        }
    };
    if let Ok(v) = header::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn internal_with_id(id: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": {
            "code": "internal",
            "message": format!("internal error (request id {id}); the cause is in the server log"),
            "request_id": id,
        }})),
    )
        .into_response()
}

/// axum's extractor rejections are `text/plain`; the API answers JSON.
async fn plain_rejection_as_json(r: Response) -> Response {
    let plain = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !r.status().is_client_error() || !plain {
        return r;
    }
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text: String = String::from_utf8_lossy(&bytes).chars().take(500).collect();
    ApiError::new(
        status,
        "bad_request",
        format!("{} — see openapi.yaml", text.trim()),
    )
    .into_response()
}

/// The process is up.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready to make decisions: the store answers, the clock is trusted, and a
/// calendar is in force. 503 with the reasons otherwise.
async fn readyz(State(st): State<AppState>) -> Response {
    let c = &st.controller;
    let mut problems = Vec::new();
    if let Err(e) = c.store().ping().await {
        problems.push(json!({"code": "store_unreachable", "message": e.to_string()}));
    }
    let clock = c.clock_status();
    if let (Some(code), Some(problem)) = (clock.code, &clock.problem) {
        problems.push(json!({"code": code, "message": problem}));
    }
    if let Some(why) = c.not_acting() {
        problems.push(json!({"code": "not_acting", "message": why}));
    }
    let now = c.now();
    let coverage: Vec<_> = c
        .calendars()
        .coverage_remaining(now)
        .into_iter()
        .map(|(n, s)| json!({"calendar": n, "coverage_remaining_seconds": s}))
        .collect();
    if c.calendars().names().is_empty() {
        problems.push(json!({"code": "no_calendar", "message": "no calendar is loaded"}));
    }
    // A rollout the controller cannot act on is a warning, not unreadiness:
    // the server still protects every other rollout, and a health check
    // that restarts it would not fix the cause.
    let mut warnings = calendars::readiness_warnings(c.calendars(), now);
    // Unauthenticated: how many, not which or why (ids and errors are in
    // the rollouts' API answers, `pass_failing`, and the server log).
    let failing = c.failing_rollouts().len();
    if failing > 0 {
        warnings.push(json!({
            "code": "rollout_pass_failing",
            "count": failing,
            "message": format!(
                "{failing} active rollout(s): the last {} controller passes or more all failed, so nothing is done for them (not even an abort) until the cause is fixed — `pass_failing` in GET /api/v1/rollouts and the server log say why",
                crate::controller::PASS_FAILING_AFTER
            ),
        }));
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if problems.is_empty() { "ready" } else { "not_ready" },
        "problems": problems,
        "clock_skew_ms": clock.skew_ms,
        "clock": clock,
        "calendars": coverage,
        "warnings": warnings,
    });
    (status, Json(body)).into_response()
}

/// The twelve states, so every `muhurat_rollouts{state}` series exists even
/// at 0 (a missing series breaks alert expressions).
const STATES: [&str; 12] = [
    "pending",
    "waiting_for_window",
    "waiting_for_checks",
    "applying",
    "baking",
    "awaiting_approval",
    "paused",
    "rolling_back",
    "rolled_back",
    "aborted",
    "succeeded",
    "failed",
];

/// Prometheus text format. Names `muhurat_<thing>_<unit>`, low-cardinality
/// labels (STYLE.md).
///
/// Unauthenticated, so it reads nothing but memory: the gauges the
/// controller keeps as it commits ([`crate::controller::gauges`]), its
/// counters and its view of the freeze and the clock. A scraper loop never
/// becomes database load, and a scrape answers while the store is down.
async fn metrics(State(st): State<AppState>) -> Response {
    use std::fmt::Write;
    let c = &st.controller;
    let mut out = String::new();
    let mut counts: std::collections::BTreeMap<String, u64> =
        STATES.iter().map(|s| (s.to_string(), 0)).collect();
    for (state, n) in c.gauges().by_state() {
        *counts.entry(state).or_default() += n;
    }
    let store_up = u8::from(c.gauges().store_up());
    let _ = writeln!(
        out,
        "# HELP muhurat_rollouts Rollouts by state.\n# TYPE muhurat_rollouts gauge"
    );
    for (s, n) in &counts {
        let _ = writeln!(out, "muhurat_rollouts{{state=\"{s}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP muhurat_store_up 1 when the controller's latest pass reached the database.\n# TYPE muhurat_store_up gauge\nmuhurat_store_up {store_up}"
    );
    let _ = writeln!(
        out,
        "# HELP muhurat_clock_skew_seconds Largest measured clock skew (database, metrics store).\n# TYPE muhurat_clock_skew_seconds gauge"
    );
    let skew = c
        .clock_skew()
        .map_or(0.0, |d| d.num_milliseconds() as f64 / 1000.0);
    let _ = writeln!(out, "muhurat_clock_skew_seconds {skew}");
    let _ = writeln!(
        out,
        "# HELP muhurat_clock_trusted 1 when the skew is within max_clock_skew (raises allowed).\n# TYPE muhurat_clock_trusted gauge\nmuhurat_clock_trusted {}",
        u8::from(c.clock_trusted())
    );
    let _ = writeln!(
        out,
        "# HELP muhurat_calendar_coverage_remaining_seconds Time until the calendar's coverage ends (fail closed after).\n# TYPE muhurat_calendar_coverage_remaining_seconds gauge"
    );
    for (name, secs) in c.calendars().coverage_remaining(c.now()) {
        let _ = writeln!(
            out,
            "muhurat_calendar_coverage_remaining_seconds{{calendar=\"{}\"}} {secs}",
            name.replace(['"', '\\', '\n'], "_")
        );
    }
    let k = c.counters();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP muhurat_transitions_total Decisions committed to the audit log.\n# TYPE muhurat_transitions_total counter\nmuhurat_transitions_total {}",
        n(&k.transitions)
    );
    let _ = writeln!(
        out,
        "# HELP muhurat_weight_changes_total Weight writes confirmed on every endpoint.\n# TYPE muhurat_weight_changes_total counter\nmuhurat_weight_changes_total {}",
        n(&k.weight_changes)
    );
    let _ = writeln!(
        out,
        "# HELP muhurat_weight_change_seconds_sum Decision-to-confirmation time of those writes.\n# TYPE muhurat_weight_change_seconds_sum counter\nmuhurat_weight_change_seconds_sum {}",
        n(&k.weight_change_ms_sum) as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "# HELP muhurat_backend_errors_total Weight writes that failed or were not confirmed.\n# TYPE muhurat_backend_errors_total counter\nmuhurat_backend_errors_total {}",
        n(&k.backend_errors)
    );
    let _ = writeln!(
        out,
        "# HELP muhurat_gate_refusals_total Commands the gate at the wire refused (raises past their deadline, frozen or with an untrusted clock; decreases that would have raised an endpoint).\n# TYPE muhurat_gate_refusals_total counter\nmuhurat_gate_refusals_total {}",
        n(&k.gate_refusals)
    );
    let _ = writeln!(
        out,
        "# HELP muhurat_check_evaluations_total Check evaluations by verdict.\n# TYPE muhurat_check_evaluations_total counter"
    );
    for (i, v) in ["pass", "fail", "inconclusive", "error"].iter().enumerate() {
        let _ = writeln!(
            out,
            "muhurat_check_evaluations_total{{verdict=\"{v}\"}} {}",
            n(&k.evaluations[i])
        );
    }
    let _ = writeln!(
        out,
        "# HELP muhurat_notifications_failed_total Webhook deliveries that failed (retried).\n# TYPE muhurat_notifications_failed_total counter\nmuhurat_notifications_failed_total {}",
        crate::notify::failures_total()
    );
    let _ = writeln!(
        out,
        "# HELP muhurat_notifications_sent_total Webhook deliveries that succeeded.\n# TYPE muhurat_notifications_sent_total counter\nmuhurat_notifications_sent_total {}",
        crate::notify::sent_total()
    );
    let _ = writeln!(
        out,
        "# HELP muhurat_freeze_on 1 while the global freeze is on (as this server enforces it).\n# TYPE muhurat_freeze_on gauge\nmuhurat_freeze_on {}",
        u8::from(c.frozen())
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// RFC 3339 in UTC with `Z`, to the second: how the API writes instants.
pub(crate) fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
