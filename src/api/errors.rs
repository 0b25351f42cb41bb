//! One error type for every handler, and the JSON body extractor.
//!
//! The client sees a stable `code` and a message written for a person
//! (`{"error": {"code", "message", "details"?}}`); the cause behind a 5xx —
//! a database error, a broken stored row — is logged once here and never
//! sent, because it may name hosts and tables the caller has no business
//! seeing (Oxide's dropshot separates the two the same way).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::controller::{ControlError, StartError};
use crate::store::StoreError;

/// Request bodies above this are refused with 413 before they are read in
/// full: a spec is a few KiB, and nothing the API accepts is larger.
pub const BODY_LIMIT: usize = 1024 * 1024;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Structured items (diagnostics, violations) behind the message.
    pub details: Option<Box<Value>>,
    /// Logged, never sent.
    pub cause: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            cause: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn reason_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "reason_required", message)
    }

    /// A failure the client cannot fix: the message says so, the cause is
    /// logged.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; the cause is in the server log".into(),
            details: None,
            cause: Some(cause.to_string()),
        }
    }

    /// A traffic target or metrics store did not do what was asked.
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "backend_error", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, status = self.status.as_u16(), message = %self.message, cause = self.cause.as_deref().unwrap_or(""), "API request failed.");
        } else {
            tracing::debug!(code = self.code, status = self.status.as_u16(), message = %self.message, "API request refused.");
        }
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(d) = self.details {
            err["details"] = *d;
        }
        (self.status, axum::Json(json!({ "error": err }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::not_found(format!("rollout `{id}` not found")),
            StoreError::TargetBusy { target, rollout } => busy(&target, &rollout),
            other => ApiError::internal(other),
        }
    }
}

pub fn busy(target: &str, rollout: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "target_busy",
        format!(
            "target {target} is busy: rollout {rollout} is active on it; wait for it to end or abort it"
        ),
    )
    .with_details(json!({"target": target, "rollout": rollout}))
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Refused(r) => {
                let status = StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::CONFLICT);
                ApiError::new(status, r.code, r.message)
            }
            ControlError::Store(s) => s.into(),
            ControlError::BadSpec(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_spec", m),
            b @ ControlError::Broken { .. } => ApiError::internal(b),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::InvalidSpec(lines) => invalid_spec_lines(lines),
            StartError::TargetBusy { target, rollout } => busy(&target, &rollout),
            StartError::NeedsAdopt(m) => ApiError::new(StatusCode::CONFLICT, "needs_adopt", m),
            StartError::Store(s) => s.into(),
        }
    }
}

fn invalid_spec_lines(lines: Vec<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_spec",
        format!(
            "the spec has {} problem(s):\n{}",
            lines.len(),
            lines.join("\n")
        ),
    )
    .with_details(json!(lines))
}

/// `400 invalid_spec` listing every diagnostic exactly as `muhurat validate`
/// prints it; `details` carries them structured (file, line, column, path).
pub fn invalid_spec(diags: &[crate::diag::Diagnostic]) -> ApiError {
    let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
    let errors = diags
        .iter()
        .filter(|d| d.severity == crate::diag::Severity::Error)
        .count();
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_spec",
        format!("the spec has {errors} error(s):\n{}", lines.join("\n")),
    )
    .with_details(json!(diags))
}

/// `400 policy_violation` listing every violation.
pub fn policy_violation(v: &[crate::policy::Violation]) -> ApiError {
    let lines: Vec<String> = v.iter().map(ToString::to_string).collect();
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "policy_violation",
        format!(
            "the spec violates the server policy in {} place(s):\n{}",
            v.len(),
            lines.join("\n")
        ),
    )
    .with_details(json!(v))
}

/// A JSON request body, read but not yet parsed: limited in size (413
/// `payload_too_large`). Handlers check the caller's role first and parse
/// after ([`RawJson::parse`]), so a refused caller hears 403 whatever it
/// sent.
pub struct RawJson(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawJson)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the request body is larger than the limit of {BODY_LIMIT} bytes"),
                    )
                } else {
                    ApiError::bad_request(format!(
                        "cannot read the request body: {}",
                        e.body_text()
                    ))
                }
            })
    }
}

impl RawJson {
    /// Parse as `T`. A malformed body is a 400 `bad_request` that says what
    /// is wrong and where (`invalid type: integer, expected a string at line
    /// 1 column 9 (at `revision`)`). An empty body reads as `{}`, so
    /// endpoints whose fields are all optional (pause, resume) take a bare
    /// POST.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let bytes: &[u8] = if self.0.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.0
        };
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let v = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let at = if path == "." || path.is_empty() {
                String::new()
            } else {
                format!(" (at `{path}`)")
            };
            ApiError::bad_request(format!(
                "the request body is not valid JSON for this endpoint: {inner}{at}"
            ))
        })?;
        // One JSON value and nothing after it: `{…}{…}` or `{…}garbage` is
        // refused rather than half-read.
        de.end().map_err(|e| {
            ApiError::bad_request(format!(
                "the request body has bytes after the JSON value: {e}"
            ))
        })?;
        Ok(v)
    }
}
