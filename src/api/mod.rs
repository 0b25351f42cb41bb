//! HTTP: health and readiness (and, as the API grows, the REST API, SSE
//! and the dashboard). Only `/healthz`, `/readyz` and `/metrics` answer
//! without a token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::controller::Controller;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub controller: Arc<Controller>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
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
    if !c.clock_trusted() {
        let skew = c.clock_skew().map(|d| d.num_milliseconds());
        problems.push(json!({"code": "clock_skew", "message": format!("clock skew {} ms exceeds max_clock_skew", skew.unwrap_or_default())}));
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
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if problems.is_empty() { "ready" } else { "not_ready" },
        "problems": problems,
        "clock_skew_ms": c.clock_skew().map(|d| d.num_milliseconds()),
        "calendars": coverage,
    });
    (status, Json(body)).into_response()
}
