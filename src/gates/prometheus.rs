//! [`MetricsSource`] for any Prometheus-compatible query API: Prometheus,
//! VictoriaMetrics single-node, vmselect (`…/select/0/prometheus`).
//!
//! The decision a newcomer must know: the two servers say the same thing in
//! different shapes (see `reference/protocols.md` §3.3). VictoriaMetrics
//! answers a scalar expression as a one-element `vector` and drops NaN
//! results to an empty vector; Prometheus answers `scalar` and returns
//! `"NaN"`. This client folds both into [`Sample`]: one number, or no data.
//! Anything it cannot reduce to one number — several series, a range vector,
//! an error page from a proxy — is an error with a message that says what to
//! change, never a guess.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, DATE, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::check::fmt_num;
use super::{Answer, GateError, MetricsSource, Sample};
use crate::spec::Auth;

/// Credentials for the query API. The secret is held here and sent in the
/// `Authorization` header only; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Bearer(String),
    Basic { username: String, password: String },
}

impl Credentials {
    /// Credentials for a spec's `analysis.auth`, given the secret's value as
    /// the server policy resolved it. A basic secret is `user:password`.
    pub fn from_auth(auth: &Auth, value: String) -> Result<Credentials, GateError> {
        match auth {
            Auth::BearerSecret(_) => Ok(Credentials::Bearer(value.trim().to_string())),
            Auth::BasicSecret(name) => match value.split_once(':') {
                Some((u, p)) => Ok(Credentials::Basic {
                    username: u.to_string(),
                    password: p.trim_end_matches(['\r', '\n']).to_string(),
                }),
                // Never echo the value: it may be a bare password.
                None => Err(GateError(format!(
                    "secret `{name}` for basic auth must be `user:password`"
                ))),
            },
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::Basic { username, .. } => {
                write!(f, "Basic({username}:<redacted>)")
            }
        }
    }
}

/// How queries are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Parameters in the URL.
    Get,
    /// Parameters as a form body: long queries cannot hit URL length
    /// limits, and the query stays out of proxies' access logs.
    Post,
}

/// Limits and transport choices; [`Options::default`] suits a loopback or
/// LAN metrics store.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time to establish the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time for the whole exchange, body included. A check evaluation must
    /// end well inside one `analysis.interval`, so this is short.
    pub timeout: Duration,
    /// Largest response body read. An instant query that reduces to one
    /// number is a few hundred bytes; megabytes mean the query returns many
    /// series, and reading them all would only delay the same error.
    pub max_body_bytes: usize,
    pub method: Method,
    /// Accept a partial answer (VictoriaMetrics cluster `isPartial: true`:
    /// some storage nodes did not answer; Prometheus `warnings`) as if it
    /// were whole. Off by default: a value computed from part of the data
    /// can look healthy when it is not, so it yields `error`, never `pass`.
    pub accept_partial: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
            method: Method::Post,
            accept_partial: false,
        }
    }
}

/// A client for one Prometheus-compatible base URL.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Url,
    http: reqwest::Client,
    /// The ready-made header value, marked sensitive so reqwest and any
    /// header dump redact it.
    authorization: Option<HeaderValue>,
    options: Options,
}

impl Client {
    /// `base_url` is what a spec's `analysis.prometheus` holds, e.g.
    /// `http://127.0.0.1:8428` or `http://vmselect:8481/select/0/prometheus`;
    /// queries go to `<base_url>/api/v1/query`.
    pub fn new(
        base_url: &str,
        credentials: Option<Credentials>,
        options: Options,
    ) -> Result<Client, GateError> {
        let base = Url::parse(base_url.trim())
            .map_err(|e| GateError(format!("metrics URL `{base_url}` is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(GateError(format!(
                "metrics URL `{base_url}` must be http:// or https://"
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            // Credentials in the URL would end up in logs and the audit trail.
            return Err(GateError(format!(
                "metrics URL `{}` carries credentials; use analysis.auth with a secret instead",
                redact_url(&base)
            )));
        }
        let mut endpoint = base.clone();
        let path = format!("{}/api/v1/query", base.path().trim_end_matches('/'));
        endpoint.set_path(&path);
        endpoint.set_query(None);
        endpoint.set_fragment(None);

        let authorization = credentials
            .map(|c| {
                let value = match c {
                    Credentials::Bearer(token) => format!("Bearer {token}"),
                    Credentials::Basic { username, password } => {
                        format!(
                            "Basic {}",
                            base64(format!("{username}:{password}").as_bytes())
                        )
                    }
                };
                let mut h = HeaderValue::from_str(&value).map_err(|_| {
                    GateError(
                        "the metrics credentials contain characters not allowed in an HTTP header"
                            .into(),
                    )
                })?;
                h.set_sensitive(true);
                Ok::<_, GateError>(h)
            })
            .transpose()?;

        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            // A redirect would resend the query (and, same-origin, the
            // credentials) somewhere the spec does not name; POST would also
            // silently turn into GET. Point the spec at the final URL instead.
            .redirect(reqwest::redirect::Policy::none())
            // Credentials go to the bound host itself, never through a proxy
            // picked up from the environment.
            .no_proxy()
            .user_agent(concat!("muhurat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GateError(format!("cannot build the HTTP client: {}", chain(&e))))?;
        Ok(Client {
            endpoint,
            http,
            authorization,
            options,
        })
    }

    /// The URL queries are sent to (never carries credentials).
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    async fn send(&self, query: &str, time: DateTime<Utc>) -> Result<Answer, GateError> {
        let time = unix_seconds(time);
        let params = [("query", query), ("time", time.as_str())];
        let request = match self.options.method {
            Method::Get => self.http.get(self.endpoint.clone()).query(&params),
            Method::Post => self.http.post(self.endpoint.clone()).form(&params),
        };
        let request = match &self.authorization {
            Some(h) => request.header(AUTHORIZATION, h.clone()),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;

        let status = response.status();
        let server_date = response
            .headers()
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| DateTime::parse_from_rfc2822(s).ok())
            .map(|d| d.with_timezone(&Utc));
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = self.read_body(response).await?;

        if status.is_redirection() {
            return Err(GateError(format!(
                "{} answered HTTP {status} redirecting to {}; set analysis.prometheus to the final URL",
                self.endpoint,
                location.as_deref().unwrap_or("(no Location)")
            )));
        }

        let sample = interpret(status, &content_type, &body, self.options.accept_partial)?;
        Ok(Answer {
            sample,
            server_date,
        })
    }

    /// Read at most `max_body_bytes`, chunk by chunk, so a runaway answer
    /// costs bounded memory and stops early rather than at the timeout.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, GateError> {
        let limit = self.options.max_body_bytes;
        let too_big = |seen: String| {
            GateError(format!(
                "response from {} is larger than the {} byte limit ({seen}); \
                 an instant check should return one number: aggregate the query with sum() or max()",
                self.endpoint, limit
            ))
        };
        if let Some(len) = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok())
            && len > limit as u64
        {
            return Err(too_big(format!("Content-Length {len}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_big(format!(
                    "stopped after {} bytes",
                    body.len() + chunk.len()
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, e: &reqwest::Error) -> GateError {
        let what = if e.is_timeout() {
            format!(
                "no complete answer within {} (connect timeout {})",
                secs(self.options.timeout),
                secs(self.options.connect_timeout)
            )
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else if e.is_body() || e.is_decode() {
            "the response body broke off".to_string()
        } else {
            "request failed".to_string()
        };
        GateError(format!("{} {what}: {}", self.endpoint, chain(e)))
    }
}

#[async_trait]
impl MetricsSource for Client {
    async fn query(&self, query: &str, time: DateTime<Utc>) -> Result<Answer, GateError> {
        tracing::debug!(endpoint = %self.endpoint, %time, query, "Querying metrics.");
        self.send(query, time).await
    }
}

/// Turn one HTTP answer into a sample. Pure, so every shape is unit-tested.
fn interpret(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
    accept_partial: bool,
) -> Result<Sample, GateError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let envelope = json.as_ref().and_then(Value::as_object);

    // Both servers send `{"status":"error","errorType","error"}` with the
    // reason; VictoriaMetrics with 422 (errorType = "422"), Prometheus with
    // 400 `bad_data`, or 503 `timeout`/`unavailable`.
    if let Some(obj) = envelope
        && obj.get("status").and_then(Value::as_str) == Some("error")
    {
        let error = obj
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("(no error text)");
        let kind = obj.get("errorType").and_then(Value::as_str).unwrap_or("");
        let label = if status == StatusCode::BAD_REQUEST
            || status == StatusCode::UNPROCESSABLE_ENTITY
            || kind == "bad_data"
        {
            "the server rejected the query"
        } else {
            "the server failed to run the query"
        };
        return Err(GateError(format!(
            "{label} (HTTP {}{}): {error}",
            status.as_u16(),
            if kind.is_empty() || kind == status.as_str() {
                String::new()
            } else {
                format!(", {kind}")
            }
        )));
    }

    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(GateError(format!(
            "HTTP {status}: the server refused the credentials; check analysis.auth and the secret's value ({})",
            snippet(body)
        )));
    }
    if !status.is_success() {
        return Err(GateError(format!(
            "HTTP {status} with a body that is not a Prometheus API answer: {}",
            snippet(body)
        )));
    }
    let Some(obj) = envelope else {
        return Err(GateError(format!(
            "the answer is not JSON (Content-Type `{content_type}`); is analysis.prometheus \
             the query API's base URL? Body: {}",
            snippet(body)
        )));
    };
    if obj.get("status").and_then(Value::as_str) != Some("success") {
        return Err(shape(format!("`status` is {:?}", obj.get("status"))));
    }
    if !accept_partial {
        if obj.get("isPartial").and_then(Value::as_bool) == Some(true) {
            return Err(GateError(
                "the answer is partial (isPartial: true — some storage nodes did not answer); a partial answer never counts as a pass".into(),
            ));
        }
        if let Some(w) = obj
            .get("warnings")
            .and_then(Value::as_array)
            .filter(|w| !w.is_empty())
        {
            let first = w.first().and_then(Value::as_str).unwrap_or("");
            return Err(GateError(format!(
                "the server answered with {} warning(s) ({}); a possibly incomplete answer never counts as a pass",
                w.len(),
                snippet(first.as_bytes())
            )));
        }
    }
    let data = obj
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| shape("no `data` object".into()))?;
    let result_type = data
        .get("resultType")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("no `data.resultType`".into()))?;
    let result = data
        .get("result")
        .ok_or_else(|| shape("no `data.result`".into()))?;

    match result_type {
        "vector" => {
            let series = result
                .as_array()
                .ok_or_else(|| shape("`result` of a vector is not an array".into()))?;
            match series.as_slice() {
                [] => Ok(Sample::NoData),
                [one] => {
                    let pair = one
                        .get("value")
                        .ok_or_else(|| shape("a vector element has no `value`".into()))?;
                    sample_of(pair)
                }
                many => Err(GateError(several_series(many))),
            }
        }
        // Prometheus: `"result":[1795713863.659,"2"]`.
        "scalar" => sample_of(result),
        "matrix" => Err(GateError(
            "the query returned a range vector (matrix); a check needs one number: \
             wrap the range selector in rate() or another *_over_time() function"
                .into(),
        )),
        "string" => Err(GateError(
            "the query returned a string; a check needs one number".into(),
        )),
        other => Err(shape(format!("unknown resultType `{other}`"))),
    }
}

/// `[ts, "value"]` → a sample; `"NaN"` is no data, `"+Inf"` a number.
fn sample_of(pair: &Value) -> Result<Sample, GateError> {
    let text = pair
        .as_array()
        .and_then(|p| p.get(1))
        .and_then(Value::as_str)
        .ok_or_else(|| shape(format!("a value is not [time, \"number\"]: {pair}")))?;
    let x =
        parse_number(text).ok_or_else(|| shape(format!("the value {text:?} is not a number")))?;
    Ok(if x.is_nan() {
        Sample::NoData
    } else {
        Sample::Value(x)
    })
}

/// Go's `strconv.FormatFloat` output: digits, exponents, `+Inf`, `-Inf`, `NaN`.
fn parse_number(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

/// "query returned 3 series (server=g1, g2, g3); wrap it in sum() or max()".
/// Names the labels whose values differ, which is what the person must
/// aggregate away.
fn several_series(series: &[Value]) -> String {
    const SHOWN: usize = 5;
    let labels: Vec<Vec<(String, String)>> = series
        .iter()
        .map(|s| {
            s.get("metric")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut names: Vec<&String> = labels.iter().flatten().map(|(k, _)| k).collect();
    names.sort();
    names.dedup();
    let mut parts = Vec::new();
    for name in names {
        let mut values: Vec<&str> = Vec::new();
        for set in &labels {
            let v = set
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str());
            if !values.contains(&v) {
                values.push(v);
            }
        }
        if values.len() < 2 {
            continue;
        }
        // Sorted, so the message is the same whatever order the server used.
        values.sort_unstable();
        let more = values.len().saturating_sub(SHOWN);
        let mut shown = values
            .iter()
            .take(SHOWN)
            .map(|v| if v.is_empty() { "(none)" } else { v })
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            shown.push_str(&format!(", … {more} more"));
        }
        parts.push(format!("{name}={shown}"));
    }
    let which = if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    };
    format!(
        "query returned {} series{which}; wrap it in sum() or max()",
        series.len()
    )
}

fn shape(what: String) -> GateError {
    GateError(format!("unexpected answer from the query API: {what}"))
}

/// The first 160 characters of a body, on one line, cleaned, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    // The peer may be hostile: one line, no control characters, short.
    let one_line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.is_empty() {
        return "(empty)".into();
    }
    let mut out: String = one_line.chars().take(160).collect();
    if one_line.chars().count() > 160 {
        out.push('…');
    }
    out
}

/// `1795713123.456`: what both servers accept for `time`, to the millisecond.
fn unix_seconds(t: DateTime<Utc>) -> String {
    let ms = t.timestamp_millis();
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn secs(d: Duration) -> String {
    format!("{}s", fmt_num(d.as_secs_f64()))
}

/// An error and its causes, `a: b: c`; reqwest's own Display stops at the
/// first level ("error sending request"), which says nothing useful.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

fn redact_url(u: &Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Standard base64 with padding (RFC 4648), for the Basic header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn ok(body: &str) -> Result<Sample, GateError> {
        interpret(StatusCode::OK, "application/json", body.as_bytes(), false)
    }

    #[rstest]
    // VictoriaMetrics: scalar expressions come back as a one-element vector.
    #[case::vm_vector(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795713123,"0.5"]}]}}"#, Sample::Value(0.5))]
    #[case::prom_scalar(
        r#"{"status":"success","data":{"resultType":"scalar","result":[1795713863.659,"2"]}}"#,
        Sample::Value(2.0)
    )]
    #[case::empty(
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        Sample::NoData
    )]
    #[case::prom_scalar_nan(
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#,
        Sample::NoData
    )]
    #[case::prom_vector_nan(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#, Sample::NoData)]
    #[case::plus_inf(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#, Sample::Value(f64::INFINITY))]
    #[case::minus_inf(
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"-Inf"]}}"#,
        Sample::Value(f64::NEG_INFINITY)
    )]
    #[case::exponent(
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1e-05"]}}"#,
        Sample::Value(1e-5)
    )]
    #[case::empty_warnings(
        r#"{"status":"success","warnings":[],"isPartial":false,"data":{"resultType":"scalar","result":[1,"3"]}}"#,
        Sample::Value(3.0)
    )]
    fn shapes(#[case] body: &str, #[case] want: Sample) {
        assert_eq!(ok(body).unwrap(), want);
    }

    #[rstest]
    #[case::victoria_partial(
        r#"{"status":"success","isPartial":true,"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.001"]}]}}"#,
        "partial"
    )]
    #[case::prometheus_warnings(
        r#"{"status":"success","warnings":["PromQL info: \u001b[31mmetric might not be a counter"],"data":{"resultType":"scalar","result":[1,"3"]}}"#,
        "1 warning(s)"
    )]
    fn a_partial_answer_is_an_error_not_a_pass(#[case] body: &str, #[case] says: &str) {
        let e = ok(body).unwrap_err().0;
        assert!(e.contains(says), "{e}");
        assert!(
            !e.contains('\u{1b}'),
            "control characters reach the reason: {e:?}"
        );
        // Configurable: an operator who knows the cluster may accept them.
        let accepted = interpret(StatusCode::OK, "application/json", body.as_bytes(), true);
        assert!(accepted.is_ok(), "{accepted:?}");
    }

    #[test]
    fn several_series_names_the_differing_labels() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"app","server":"g1"},"value":[1,"1"]},
            {"metric":{"job":"app","server":"g2"},"value":[1,"2"]},
            {"metric":{"job":"app","server":"g3"},"value":[1,"3"]}]}}"#;
        assert_eq!(
            ok(body).unwrap_err().0,
            "query returned 3 series (server=g1, g2, g3); wrap it in sum() or max()"
        );
    }

    #[test]
    fn many_series_are_elided() {
        let items: Vec<String> = (0..8)
            .map(|i| format!(r#"{{"metric":{{"s":"s{i}"}},"value":[1,"1"]}}"#))
            .collect();
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            items.join(",")
        );
        assert_eq!(
            ok(&body).unwrap_err().0,
            "query returned 8 series (s=s0, s1, s2, s3, s4, … 3 more); wrap it in sum() or max()"
        );
    }

    #[rstest]
    #[case::vm_422(
        422,
        r#"{"status":"error","errorType":"422","error":"labelFilterExpr: unexpected token"}"#,
        "the server rejected the query (HTTP 422): labelFilterExpr: unexpected token"
    )]
    #[case::prom_400(
        400,
        r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error"}"#,
        "the server rejected the query (HTTP 400, bad_data): 1:5: parse error"
    )]
    #[case::prom_503(
        503,
        r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#,
        "the server failed to run the query (HTTP 503, timeout): query timed out"
    )]
    #[case::proxy_502(
        502,
        "<html><body>Bad Gateway</body></html>",
        "HTTP 502 Bad Gateway with a body that is not a Prometheus API answer: <html><body>Bad Gateway</body></html>"
    )]
    #[case::matrix(
        200,
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        "range vector"
    )]
    #[case::not_json(200, "hello", "the answer is not JSON")]
    #[case::no_data_obj(
        200,
        r#"{"status":"success"}"#,
        "unexpected answer from the query API: no `data` object"
    )]
    #[case::bad_value(
        200,
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"abc"]}}"#,
        "is not a number"
    )]
    #[case::value_not_string(
        200,
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,2]}}"#,
        "is not [time, \"number\"]"
    )]
    fn errors(#[case] status: u16, #[case] body: &str, #[case] want: &str) {
        let status = StatusCode::from_u16(status).unwrap();
        let err = interpret(status, "text/html", body.as_bytes(), false)
            .unwrap_err()
            .0;
        assert!(err.contains(want), "{err}");
    }

    #[test]
    fn time_is_unix_seconds_to_the_millisecond() {
        let t = DateTime::from_timestamp_millis(1_795_713_123_045).unwrap();
        assert_eq!(unix_seconds(t), "1795713123.045");
    }

    #[rstest]
    #[case(b"", "")]
    #[case(b"f", "Zg==")]
    #[case(b"fo", "Zm8=")]
    #[case(b"foo", "Zm9v")]
    #[case(b"user:pa ss", "dXNlcjpwYSBzcw==")]
    fn base64_rfc4648(#[case] input: &[u8], #[case] want: &str) {
        assert_eq!(base64(input), want);
    }

    #[test]
    fn secrets_never_show() {
        let b = Credentials::Bearer("s3cr3t".into());
        let c = Credentials::Basic {
            username: "u".into(),
            password: "s3cr3t".into(),
        };
        assert!(!format!("{b:?}{c:?}").contains("s3cr3t"));
        let client = Client::new("http://127.0.0.1:1", Some(c), Options::default()).unwrap();
        assert!(!format!("{client:?}").contains("s3cr3t"));
        let err = Credentials::from_auth(&Auth::BasicSecret("vm".into()), "s3cr3t".into())
            .unwrap_err()
            .0;
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[rstest]
    #[case::plain("http://127.0.0.1:8428", "http://127.0.0.1:8428/api/v1/query")]
    #[case::slash("http://127.0.0.1:8428/", "http://127.0.0.1:8428/api/v1/query")]
    #[case::vmselect(
        "http://vmselect:8481/select/0/prometheus/",
        "http://vmselect:8481/select/0/prometheus/api/v1/query"
    )]
    fn endpoint_url(#[case] base: &str, #[case] want: &str) {
        let c = Client::new(base, None, Options::default()).unwrap();
        assert_eq!(c.endpoint().as_str(), want);
    }

    #[rstest]
    #[case::scheme("ftp://x", "must be http")]
    #[case::garbage("not a url", "is not a URL")]
    #[case::userinfo("http://u:p@x:1", "carries credentials")]
    fn bad_base_url(#[case] base: &str, #[case] want: &str) {
        let err = Client::new(base, None, Options::default()).unwrap_err().0;
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("u:p@"), "{err}");
    }
}

/// Builds a [`Client`] for each spec's `analysis`, resolving its auth secret
/// on the server (specs carry secret names only).
#[derive(Debug, Clone, Default)]
pub struct PrometheusFactory {
    pub secrets: crate::secrets::Secrets,
    pub options: Options,
}

impl crate::controller::MetricsFactory for PrometheusFactory {
    fn source(
        &self,
        analysis: &crate::spec::Analysis,
    ) -> Result<std::sync::Arc<dyn MetricsSource>, String> {
        let creds = match &analysis.auth {
            None => None,
            Some(auth) => {
                let name = match auth {
                    Auth::BearerSecret(n) | Auth::BasicSecret(n) => n,
                };
                // Refused before any connection unless `analysis.prometheus`
                // is a destination the secret is bound to.
                let value = self
                    .secrets
                    .value_for(name, &analysis.prometheus)
                    .map_err(|e| e.to_string())?;
                Some(Credentials::from_auth(auth, value).map_err(|e| e.0)?)
            }
        };
        let client =
            Client::new(&analysis.prometheus, creds, self.options.clone()).map_err(|e| e.0)?;
        Ok(std::sync::Arc::new(client))
    }
}
