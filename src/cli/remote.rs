//! The HTTP client behind every remote verb (docs/design.md §6, §7): one place that
//! knows the server's URL and token, turns HTTP outcomes into the contract's
//! exit codes, and words errors so a person knows what to do next.
//!
//! The design decision to know: the CLI never interprets the server's
//! refusal itself — it shows the server's `{"error": {"code", "message"}}`
//! message verbatim (that is where "revoked on 2026-11-20 by ravi" comes
//! from) and only adds a hint keyed on the status. Response bodies are read
//! as loose JSON with a few fallbacks, so a field the API adds later never
//! breaks an older CLI.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{EXIT_AUTH, EXIT_BAD_INPUT, EXIT_INTERNAL};

/// Where the server is, and who we are (flags shared by every remote verb).
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// Base URL of the muhurat server.
    #[arg(long, env = "MUHURAT_SERVER", default_value = "http://127.0.0.1:7878")]
    pub server: String,
    /// API token (create one with `muhurat token create`).
    #[arg(long, env = "MUHURAT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// How long one request may take. The server answers every call from its
/// database; a slow answer means something is wrong, and CI should learn it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed call, already classified for its exit code.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteError {
    /// No answer: connection refused, DNS, timeout. Exit 3.
    Unreachable(String),
    /// The server answered with an error status.
    Http {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer was not the JSON we expected. Exit 3.
    Protocol(String),
    /// Bad local input (a spec file that cannot be read…). Exit 2.
    Input(String),
}

impl RemoteError {
    /// The exit code of docs/design.md §6 for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            RemoteError::Unreachable(_) | RemoteError::Protocol(_) => EXIT_INTERNAL,
            RemoteError::Input(_) => EXIT_BAD_INPUT,
            RemoteError::Http { status, .. } => match *status {
                401 | 403 => EXIT_AUTH,
                s if s >= 500 => EXIT_INTERNAL,
                _ => EXIT_BAD_INPUT,
            },
        }
    }

    pub fn is_auth(&self) -> bool {
        self.exit_code() == EXIT_AUTH
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteError::Unreachable(m) => write!(
                f,
                "{m}\n  hint: is `muhurat server` running there? Set --server or MUHURAT_SERVER"
            ),
            RemoteError::Protocol(m) | RemoteError::Input(m) => f.write_str(m),
            RemoteError::Http {
                status,
                code,
                message,
            } => {
                let hint = match (*status, code.as_str()) {
                    (401, _) => {
                        return write!(
                            f,
                            "the server refused the token: {message}\n  hint: pass a valid token with --token or MUHURAT_TOKEN (an admin creates one with `muhurat token create`)"
                        );
                    }
                    (403, "separation_of_duties") => {
                        "another approver must approve: the initiator of a rollout cannot approve it"
                    }
                    (403, _) => {
                        "this token's role does not allow it; ask an admin for a token with the right role"
                    }
                    (409, "stale_approval") => {
                        "the rollout moved on; run `muhurat status` and approve the step it waits at"
                    }
                    (409, "target_busy") => {
                        "wait for the active rollout to end, or abort it with `muhurat abort`"
                    }
                    (404, _) => "check the id with `muhurat status`",
                    (s, _) if s >= 500 => "the server failed; its log says why",
                    _ => "",
                };
                write!(f, "the server refused ({status} {code}): {message}")?;
                if !hint.is_empty() {
                    write!(f, "\n  hint: {hint}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for RemoteError {}

/// An authenticated connection to one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(args: &RemoteArgs) -> Result<Client, RemoteError> {
        let base = args.server.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::Input(format!(
                "--server `{base}` is not an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("muhurat-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RemoteError::Protocol(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base,
            token: args.token.clone().filter(|t| !t.trim().is_empty()),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The dashboard page of a rollout, when the server did not name one.
    pub fn dashboard_url(&self, id: &str) -> String {
        crate::notify::dashboard_url(&self.base, id)
    }

    pub async fn get(&self, path: &str) -> Result<Value, RemoteError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, RemoteError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, RemoteError> {
        self.call(Method::DELETE, path, None).await
    }

    /// One call under `/api/v1`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, RemoteError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.trim());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            RemoteError::Unreachable(format!(
                "cannot reach the muhurat server at {}: {}",
                self.base,
                error_chain(&e)
            ))
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            RemoteError::Unreachable(format!(
                "{method} {url}: the answer was cut off: {}",
                error_chain(&e)
            ))
        })?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| {
                RemoteError::Protocol(format!(
                    "{method} {url}: the answer is not JSON ({e}); is {} a muhurat server?",
                    self.base
                ))
            });
        }
        Err(http_error(status, &text, self.token.is_none()))
    }
}

/// The `{"error": {"code", "message"}}` body of a refusal, or its raw text.
fn http_error(status: StatusCode, text: &str, no_token: bool) -> RemoteError {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_")
        });
    let mut message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(String::from)
        .unwrap_or_else(|| {
            let t = text.trim();
            if t.is_empty() {
                status.to_string()
            } else {
                t.chars().take(500).collect()
            }
        });
    if status == StatusCode::UNAUTHORIZED && no_token {
        message = format!("{message} (no token was given)");
    }
    RemoteError::Http {
        status: status.as_u16(),
        code,
        message,
    }
}

/// `e` and its sources, for messages like "connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A spec file's text, for the verbs that send the YAML to the server.
pub fn read_spec(file: &Path) -> Result<String, RemoteError> {
    std::fs::read_to_string(file)
        .map_err(|e| RemoteError::Input(format!("{}: cannot read the spec: {e}", file.display())))
}

/// A runtime for one command: the CLI does one thing at a time.
pub fn runtime() -> Result<tokio::runtime::Runtime, RemoteError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RemoteError::Protocol(format!("cannot start the async runtime: {e}")))
}

/// Print a failure the same way everywhere, and return its exit code.
pub fn fail(verb: &str, e: &RemoteError) -> i32 {
    eprintln!("muhurat {verb}: {e}");
    e.exit_code()
}

// ---- reading rollouts ------------------------------------------------------

/// Unwrap `{"rollout": {...}}` if the server wraps the object.
pub fn unwrap_rollout(v: &Value) -> &Value {
    match v.get("rollout") {
        Some(r) if r.is_object() => r,
        _ => v,
    }
}

/// The list in a `GET /rollouts` answer: a bare array or `{"rollouts": [...]}`.
pub fn rollout_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .get("rollouts")
            .or_else(|| o.get("items"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The first present value among several JSON pointers.
fn first<'a>(v: &'a Value, pointers: &[&str]) -> Option<&'a Value> {
    pointers
        .iter()
        .filter_map(|p| v.pointer(p))
        .find(|x| !x.is_null())
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    v.and_then(|x| x.as_u64().or_else(|| x.as_f64().map(|f| f.round() as u64)))
}

fn as_string(v: Option<&Value>) -> Option<String> {
    v.and_then(|x| match x {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    })
}

/// What `status -o json` prints for one rollout (docs/design.md §6), read from the
/// server's rollout document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatusRow {
    pub id: String,
    pub name: String,
    pub revision: String,
    pub initiator: String,
    pub state: String,
    pub step: Option<u64>,
    pub canary_weight: Option<u64>,
    pub desired_weight: Option<u64>,
    pub waiting_for: Option<String>,
}

impl StatusRow {
    pub fn from_value(doc: &Value) -> StatusRow {
        let v = unwrap_rollout(doc);
        StatusRow {
            id: as_string(first(v, &["/id"])).unwrap_or_default(),
            name: as_string(first(v, &["/name"])).unwrap_or_default(),
            revision: as_string(first(v, &["/revision"])).unwrap_or_default(),
            initiator: as_string(first(v, &["/initiator/name", "/initiator"])).unwrap_or_default(),
            state: as_string(first(v, &["/state"])).unwrap_or_default(),
            step: as_u64(first(v, &["/step"])),
            canary_weight: as_u64(first(
                v,
                &[
                    "/canary_weight",
                    "/weights/confirmed",
                    "/confirmed_weight",
                    "/confirmed",
                ],
            )),
            desired_weight: as_u64(first(
                v,
                &["/desired_weight", "/weights/desired", "/desired"],
            )),
            waiting_for: as_string(first(v, &["/waiting_for"])),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self.state.as_str(),
            "rolled_back" | "aborted" | "succeeded" | "failed"
        )
    }
}

/// Percent → "5%", or "-" when unknown.
pub fn pct(v: Option<u64>) -> String {
    v.map(|w| format!("{w}%")).unwrap_or_else(|| "-".into())
}

/// The rollout document for `ROLLOUT`: an id, or a spec name meaning that
/// spec's active rollout.
pub async fn fetch_rollout(client: &Client, rollout: &str) -> Result<Value, RemoteError> {
    let rollout = rollout.trim();
    if rollout.is_empty() || rollout.contains(['/', '?', '#', ' ']) {
        return Err(RemoteError::Input(format!(
            "`{rollout}` is not a rollout id or spec name"
        )));
    }
    match client.get(&format!("/rollouts/{rollout}")).await {
        Ok(v) => return Ok(unwrap_rollout(&v).clone()),
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(e),
    }
    // Not an id: the active rollout of the spec with this name.
    let list = client.get("/rollouts?state=active").await?;
    let hit = rollout_list(&list)
        .into_iter()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(rollout));
    match hit.and_then(|r| r.get("id").and_then(Value::as_str).map(String::from)) {
        Some(id) => Ok(unwrap_rollout(&client.get(&format!("/rollouts/{id}")).await?).clone()),
        None => Err(RemoteError::Http {
            status: 404,
            code: "not_found".into(),
            message: format!(
                "no rollout has the id `{rollout}`, and no active rollout runs a spec named `{rollout}`"
            ),
        }),
    }
}

/// The id of a rollout document (or an error naming what came back).
pub fn id_of(v: &Value) -> Result<String, RemoteError> {
    as_string(first(unwrap_rollout(v), &["/id"]))
        .ok_or_else(|| RemoteError::Protocol(format!("the server's answer has no rollout id: {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exit_codes_follow_the_contract() {
        let h = |status: u16| RemoteError::Http {
            status,
            code: "x".into(),
            message: "m".into(),
        };
        assert_eq!(h(400).exit_code(), 2);
        assert_eq!(h(404).exit_code(), 2);
        assert_eq!(h(409).exit_code(), 2);
        assert_eq!(h(401).exit_code(), 6);
        assert_eq!(h(403).exit_code(), 6);
        assert_eq!(h(500).exit_code(), 3);
        assert_eq!(h(503).exit_code(), 3);
        assert_eq!(RemoteError::Unreachable("x".into()).exit_code(), 3);
        assert_eq!(RemoteError::Input("x".into()).exit_code(), 2);
    }

    #[test]
    fn a_refused_token_shows_the_servers_reason() {
        let e = http_error(
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"code":"unauthorized","message":"token ci was revoked on 2026-11-20 by ravi"}}"#,
            false,
        );
        let text = e.to_string();
        assert!(
            text.starts_with(
                "the server refused the token: token ci was revoked on 2026-11-20 by ravi"
            ),
            "{text}"
        );
        assert_eq!(e.exit_code(), 6);
    }

    #[test]
    fn a_non_json_error_body_is_shown_raw() {
        let e = http_error(StatusCode::BAD_GATEWAY, "upstream down", false);
        assert_eq!(
            e,
            RemoteError::Http {
                status: 502,
                code: "bad_gateway".into(),
                message: "upstream down".into()
            }
        );
    }

    #[test]
    fn status_rows_read_the_engine_shape_and_the_flat_shape() {
        let engine = json!({"id": "a", "name": "kite-api", "revision": "r1",
            "initiator": {"name": "ci", "principal": "ci-bot"}, "state": "baking",
            "step": 1, "confirmed": 5, "desired": 5, "waiting_for": "bake"});
        let flat = json!({"rollout": {"id": "a", "name": "kite-api", "revision": "r1",
            "initiator": "ci", "state": "baking", "step": 1, "canary_weight": 5,
            "desired_weight": 5, "waiting_for": "bake"}});
        assert_eq!(StatusRow::from_value(&engine), StatusRow::from_value(&flat));
        let r = StatusRow::from_value(&engine);
        assert_eq!(r.initiator, "ci");
        assert_eq!(r.canary_weight, Some(5));
    }
}
