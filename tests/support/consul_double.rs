//! An in-process double of the Consul HTTP API endpoints muhurat uses —
//! KV GET/PUT/DELETE with indexes, CAS and blocking queries, and ACL
//! token checks — written from HashiCorp's API documentation
//! (`website/content/api-docs/kv.mdx`, `features/blocking.mdx`,
//! `agent/http.go`; summarised in shared/reference/protocols.md §2).
//! Consul is not packaged for this machine, so this is the one double the
//! test suite allows (STYLE.md, Tests).
//!
//! Wire behaviour reproduced:
//! - one global index, starting above 1, bumped by every successful write;
//!   entries carry CreateIndex/ModifyIndex; `X-Consul-Index` is never 0;
//! - GET → 200 with a JSON array of `{LockIndex, Key, Flags, Value (base64
//!   or null), CreateIndex, ModifyIndex}`; 404 with an empty body (and an
//!   `X-Consul-Index`) when missing; `?raw` → the bytes as text/plain;
//!   `?recurse` (prefix, sorted, index includes tombstones);
//!   `?index=&wait=` blocking (default 5m, cap 10m; 400 `Invalid index` /
//!   `Invalid wait time`);
//! - PUT → `true`/`false`; `?cas=0` creates only, `?cas=N` writes only when
//!   ModifyIndex == N; `?flags=`; values over 512 KiB → 413;
//! - DELETE → `true`, `?cas=N` → `true`/`false`;
//! - ACLs (when enabled, default policy deny): token from `X-Consul-Token`,
//!   `Authorization: Bearer` or `?token=`; an unknown token → 403
//!   `ACL not found`; missing rights (or no token: the anonymous token) →
//!   403 `Permission denied: …`; plain-text bodies;
//! - wrong method → 405; unknown path → 404 `Invalid URL path: …`.
//!
//! Not implemented (muhurat does not use them): sessions (`?acquire`,
//! `?release` answer 400), `?keys`, `?dc`, `/v1/txn`, config entries.
//!
//! Failure injection for tests: a status for the next N requests, a hang,
//! an oversized answer, and a write by "someone else" slipped in just
//! before the next PUT (to lose a CAS race on purpose).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Consul's default `kv_max_value_size`.
pub const MAX_VALUE_SIZE: usize = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// What one token may do under a key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rights {
    Read,
    Write,
}

/// One request as the double saw it (for assertions like "created with
/// cas=0"). Whether a token came, never its value.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub token: Option<String>,
}

#[derive(Default)]
struct Inner {
    index: u64,
    kv: BTreeMap<String, KvEntry>,
    /// Key → index of its deletion, so recursive indexes never go back.
    tombstones: BTreeMap<String, u64>,
    /// None: ACLs disabled (every request allowed).
    acl: Option<HashMap<String, (String, Rights)>>,
    log: Vec<Logged>,
    fail_next: VecDeque<(StatusCode, String)>,
    hang: bool,
    oversized: bool,
    before_next_put: Option<(String, Vec<u8>)>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: tokio::sync::Notify,
}

pub struct ConsulDouble {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ConsulDouble {
    pub async fn start() -> ConsulDouble {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                // Real clusters are far past 1; starting high catches code
                // that confuses an index with a count.
                index: 41,
                ..Default::default()
            }),
            changed: tokio::sync::Notify::new(),
        });
        let app = axum::Router::new()
            .route("/v1/kv", axum::routing::any(missing_key))
            .route("/v1/kv/", axum::routing::any(missing_key))
            .route("/v1/kv/{*key}", axum::routing::any(kv))
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    "Invalid URL path: not a recognized HTTP API endpoint",
                )
            })
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Consul double");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ConsulDouble { addr, shared, task }
    }

    pub fn address(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turn ACLs on (default policy deny) with these tokens:
    /// secret → (key prefix, rights).
    pub fn enable_acl(&self, tokens: &[(&str, &str, Rights)]) {
        self.lock().acl = Some(
            tokens
                .iter()
                .map(|(t, p, r)| (t.to_string(), (p.to_string(), *r)))
                .collect(),
        );
    }

    pub fn entry(&self, key: &str) -> Option<KvEntry> {
        self.lock().kv.get(key).cloned()
    }

    /// The current global index.
    pub fn index(&self) -> u64 {
        self.lock().index
    }

    /// A write by someone else, straight into the store.
    pub fn put(&self, key: &str, value: &[u8]) -> u64 {
        let i = write(&mut self.lock(), key, value.to_vec(), 0);
        self.shared.changed.notify_waiters();
        i
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }

    /// The next `n` requests are answered with `status` and `body`.
    pub fn fail_next(&self, n: usize, status: u16, body: &str) {
        let st = StatusCode::from_u16(status).expect("a status code");
        let mut g = self.lock();
        for _ in 0..n {
            g.fail_next.push_back((st, body.to_string()));
        }
    }

    /// Accept requests and never answer them.
    pub fn hang(&self, on: bool) {
        self.lock().hang = on;
    }

    /// Answer GETs with a 2 MiB body.
    pub fn oversized(&self, on: bool) {
        self.lock().oversized = on;
    }

    /// Just before the next PUT is processed, "someone else" writes `value`
    /// to `key` (bumping its ModifyIndex), so a CAS PUT loses the race.
    pub fn write_before_next_put(&self, key: &str, value: &[u8]) {
        self.lock().before_next_put = Some((key.to_string(), value.to_vec()));
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn write(g: &mut Inner, key: &str, value: Vec<u8>, flags: u64) -> u64 {
    g.index += 1;
    let i = g.index;
    let create_index = g.kv.get(key).map_or(i, |e| e.create_index);
    g.kv.insert(
        key.to_string(),
        KvEntry {
            value,
            flags,
            create_index,
            modify_index: i,
        },
    );
    g.tombstones.remove(key);
    i
}

async fn missing_key(method: Method) -> Response {
    if method == Method::GET || method == Method::PUT || method == Method::DELETE {
        (StatusCode::BAD_REQUEST, "Missing key name").into_response()
    } else {
        method_not_allowed(&method)
    }
}

fn method_not_allowed(m: &Method) -> Response {
    let mut r = (
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {m} not allowed"),
    )
        .into_response();
    r.headers_mut()
        .insert("Allow", HeaderValue::from_static("GET,PUT,DELETE"));
    r
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(
        "Content-Type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: String, index: u64, acl: bool) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert("Content-Type", HeaderValue::from_static("application/json"));
    meta(h, index, acl);
    r
}

/// `setMeta`: the index (never 0) and the leader headers.
fn meta(h: &mut HeaderMap, index: u64, acl: bool) {
    h.insert("X-Consul-Index", HeaderValue::from(index.max(1)));
    h.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    h.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    h.insert(
        "X-Consul-Default-ACL-Policy",
        HeaderValue::from_static(if acl { "deny" } else { "allow" }),
    );
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (pct_decode(k), pct_decode(v)),
            None => (pct_decode(p), String::new()),
        })
        .collect()
}

/// The token, in Consul's order: `?token=`, `X-Consul-Token`, then
/// `Authorization: Bearer`.
fn token(q: &BTreeMap<String, String>, h: &HeaderMap) -> Option<String> {
    if let Some(t) = q.get("token").filter(|t| !t.is_empty()) {
        return Some(t.clone());
    }
    if let Some(t) = h.get("X-Consul-Token").and_then(|v| v.to_str().ok()) {
        return Some(t.to_string());
    }
    let auth = h.get("Authorization").and_then(|v| v.to_str().ok())?;
    let (scheme, rest) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.split_whitespace().next().unwrap_or("").to_string())
}

/// Go duration strings as the `wait` parameter takes them.
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    Some(Duration::from_secs_f64(total))
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn entry_json(key: &str, e: &KvEntry) -> serde_json::Value {
    serde_json::json!({
        "LockIndex": 0,
        "Key": key,
        "Flags": e.flags,
        // Go's encoding/json writes a nil []byte as null.
        "Value": if e.value.is_empty() { serde_json::Value::Null } else { b64(&e.value).into() },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    })
}

/// The ACL check: `None` when allowed, else the 403.
fn acl_denied(g: &Inner, tok: Option<&str>, key: &str, need: Rights) -> Option<Response> {
    let acl = g.acl.as_ref()?;
    let perm = match need {
        Rights::Read => "key:read",
        Rights::Write => "key:write",
    };
    let Some(tok) = tok else {
        // No token: the anonymous token, which under default-deny has no
        // rights.
        return Some(plain(
            StatusCode::FORBIDDEN,
            format!("Permission denied: anonymous token lacks permission '{perm}' on \"{key}\""),
        ));
    };
    let Some((prefix, rights)) = acl.get(tok) else {
        return Some(plain(StatusCode::FORBIDDEN, "ACL not found"));
    };
    let ok = key.starts_with(prefix.as_str()) && (need == Rights::Read || *rights == Rights::Write);
    (!ok).then(|| {
        plain(
            StatusCode::FORBIDDEN,
            format!(
                "Permission denied: token with AccessorID '00000000-0000-4000-8000-{:012x}' lacks permission '{perm}' on \"{key}\"",
                tok.len()
            ),
        )
    })
}

async fn kv(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = pct_decode(uri.path().strip_prefix("/v1/kv/").unwrap_or(""));
    let q = query(&uri);
    let tok = token(&q, &headers);
    let (hang, injected) = {
        let mut g = s.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.log.push(Logged {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            token: tok.clone(),
        });
        (g.hang, g.fail_next.pop_front())
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if let Some((st, b)) = injected {
        return plain(st, b);
    }
    match method {
        Method::GET => get(&s, &key, &q, tok.as_deref()).await,
        Method::PUT => put(&s, &key, &q, tok.as_deref(), &body),
        Method::DELETE => delete(&s, &key, &q, tok.as_deref()),
        m => method_not_allowed(&m),
    }
}

async fn get(s: &Shared, key: &str, q: &BTreeMap<String, String>, tok: Option<&str>) -> Response {
    let recurse = q.contains_key("recurse");
    if key.is_empty() && !recurse {
        return plain(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let min_index = match q.get("index") {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(i) => i,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "Invalid index"),
        },
    };
    let wait = match q.get("wait") {
        None => Duration::from_secs(300),
        Some(v) => match go_duration(v) {
            Some(d) => d.min(Duration::from_secs(600)),
            None => return plain(StatusCode::BAD_REQUEST, "Invalid wait time"),
        },
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register for wake-ups before looking, so no write slips between.
        let notified = s.changed.notified();
        {
            let g = s.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(denied) = acl_denied(&g, tok, key, Rights::Read) {
                return denied;
            }
            let acl = g.acl.is_some();
            if g.oversized {
                return json(
                    StatusCode::OK,
                    "[".to_string() + &" ".repeat(2 << 20) + "]",
                    g.index,
                    acl,
                );
            }
            let (found, index) = if recurse {
                let list: Vec<(&String, &KvEntry)> =
                    g.kv.iter().filter(|(k, _)| k.starts_with(key)).collect();
                let idx = list
                    .iter()
                    .map(|(_, e)| e.modify_index)
                    .chain(
                        g.tombstones
                            .iter()
                            .filter(|(k, _)| k.starts_with(key))
                            .map(|(_, i)| *i),
                    )
                    .max()
                    .unwrap_or(g.index);
                let body: Vec<serde_json::Value> =
                    list.iter().map(|(k, e)| entry_json(k, e)).collect();
                ((!body.is_empty()).then_some((body, None)), idx)
            } else {
                match g.kv.get(key) {
                    Some(e) => (
                        Some((vec![entry_json(key, e)], Some(e.value.clone()))),
                        e.modify_index,
                    ),
                    None => (None, g.index),
                }
            };
            let unblocked = min_index == 0 || index > min_index;
            if unblocked || tokio::time::Instant::now() >= deadline {
                return match found {
                    None => {
                        let mut r = StatusCode::NOT_FOUND.into_response();
                        meta(r.headers_mut(), index, acl);
                        r
                    }
                    Some((_, Some(raw))) if q.contains_key("raw") => {
                        let mut r = (StatusCode::OK, raw).into_response();
                        let h = r.headers_mut();
                        h.insert("Content-Type", HeaderValue::from_static("text/plain"));
                        h.insert(
                            "X-Content-Type-Options",
                            HeaderValue::from_static("nosniff"),
                        );
                        h.insert(
                            "Content-Security-Policy",
                            HeaderValue::from_static("sandbox"),
                        );
                        meta(h, index, acl);
                        r
                    }
                    Some((body, _)) => json(
                        StatusCode::OK,
                        serde_json::Value::Array(body).to_string(),
                        index,
                        acl,
                    ),
                };
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

fn put(
    s: &Shared,
    key: &str,
    q: &BTreeMap<String, String>,
    tok: Option<&str>,
    body: &[u8],
) -> Response {
    let mut g = s.inner.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(denied) = acl_denied(&g, tok, key, Rights::Write) {
        return denied;
    }
    let special: Vec<&str> = ["cas", "acquire", "release"]
        .into_iter()
        .filter(|k| q.contains_key(*k))
        .collect();
    if special.len() > 1 {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("Conflicting flags: {}", special.join(",")),
        );
    }
    if q.contains_key("acquire") || q.contains_key("release") {
        return plain(
            StatusCode::BAD_REQUEST,
            "consul double: sessions are not implemented",
        );
    }
    if body.len() > MAX_VALUE_SIZE {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body(value) too large, max size: {MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
            ),
        );
    }
    let flags = match q.get("flags").map(|f| f.parse::<u64>()) {
        None => 0,
        Some(Ok(f)) => f,
        Some(Err(_)) => return plain(StatusCode::BAD_REQUEST, "Invalid flags"),
    };
    let cas = match q.get("cas").map(|c| c.parse::<u64>()) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return plain(StatusCode::BAD_REQUEST, "Invalid cas index"),
    };
    if let Some((k, v)) = g.before_next_put.take() {
        write(&mut g, &k, v, 0);
    }
    let ok = match cas {
        None => true,
        Some(0) => !g.kv.contains_key(key),
        Some(n) => g.kv.get(key).is_some_and(|e| e.modify_index == n),
    };
    if ok {
        write(&mut g, key, body.to_vec(), flags);
    }
    let acl = g.acl.is_some();
    drop(g);
    s.changed.notify_waiters();
    let mut r = json(StatusCode::OK, ok.to_string(), 0, acl);
    // Writes carry no index header in Consul.
    r.headers_mut().remove("X-Consul-Index");
    r
}

fn delete(s: &Shared, key: &str, q: &BTreeMap<String, String>, tok: Option<&str>) -> Response {
    let mut g = s.inner.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(denied) = acl_denied(&g, tok, key, Rights::Write) {
        return denied;
    }
    let recurse = q.contains_key("recurse");
    let cas = match q.get("cas").map(|c| c.parse::<u64>()) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return plain(StatusCode::BAD_REQUEST, "Invalid cas index"),
    };
    if recurse && cas.is_some() {
        return plain(StatusCode::BAD_REQUEST, "Conflicting flags: cas,recurse");
    }
    let keys: Vec<String> = if recurse {
        g.kv.keys()
            .filter(|k| k.starts_with(key))
            .cloned()
            .collect()
    } else {
        let allowed = match cas {
            None => true,
            Some(0) => false,
            Some(n) => g.kv.get(key).is_some_and(|e| e.modify_index == n),
        };
        if !allowed {
            return json(StatusCode::OK, "false".into(), 0, g.acl.is_some());
        }
        g.kv.contains_key(key)
            .then(|| key.to_string())
            .into_iter()
            .collect()
    };
    if !keys.is_empty() {
        g.index += 1;
        let i = g.index;
        for k in keys {
            g.kv.remove(&k);
            g.tombstones.insert(k, i);
        }
    }
    let acl = g.acl.is_some();
    drop(g);
    s.changed.notify_waiters();
    json(StatusCode::OK, "true".into(), 0, acl)
}
