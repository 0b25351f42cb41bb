//! Browser sessions for the dashboard: a person signs in once with their
//! token and the browser then carries a session cookie instead of it.
//!
//! The decision a newcomer must know: a session is a *handle on a token*,
//! not a second credential. The server keeps, per session, only the token's
//! hash; every request through a session looks that token up again, so a
//! revoked token (or a changed role) ends or changes every session at once,
//! exactly as it does for `Authorization: Bearer`. Sessions live in memory:
//! a restart signs everyone out, which costs a person one paste of their
//! token and keeps the store's schema out of it.
//!
//! The cookie is `HttpOnly` (scripts cannot read it), `SameSite=Strict`
//! (other sites cannot make the browser send it) and `Secure` when the
//! public URL is HTTPS. On top of that, every request through a session
//! that is not a GET or HEAD must carry the session's CSRF token in the
//! `X-CSRF-Token` header; the pages read it from a `<meta>` element the
//! server writes into them (or from `GET /api/v1/session`). Failed sign-ins
//! are rate-limited per client address and in total.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::{self, Caller, hash_token};
use super::errors::{ApiError, RawJson};

/// The session cookie's name.
pub const COOKIE: &str = "muhurat_session";
/// The header that carries the CSRF token on mutating requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session ends this long after sign-in, whatever happens.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// …or after this long without a request (a tab left open over a weekend
/// should not stay a way in).
pub const IDLE: Duration = Duration::from_secs(2 * 3600);
/// At most this many sessions are kept; signing in beyond it ends the
/// oldest, so an attacker with a valid token cannot grow memory without
/// bound.
const MAX_SESSIONS: usize = 10_000;
/// Failed sign-ins allowed per client address in [`FAIL_WINDOW`].
pub const FAILS_PER_CLIENT: usize = 5;
/// Failed sign-ins allowed from all clients together in [`FAIL_WINDOW`]:
/// tokens are 256-bit random, so this only blunts a distributed guesser
/// (and its log noise).
pub const FAILS_TOTAL: usize = 100;
pub const FAIL_WINDOW: Duration = Duration::from_secs(60);

struct Session {
    token_hash: String,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.created) >= MAX_AGE || now.duration_since(self.last_seen) >= IDLE
    }

    fn remaining(&self, now: Instant) -> Duration {
        let by_age = MAX_AGE.saturating_sub(now.duration_since(self.created));
        let by_idle = IDLE.saturating_sub(now.duration_since(self.last_seen));
        by_age.min(by_idle)
    }
}

/// Sessions (keyed by the SHA-256 of the cookie value, so a timing probe of
/// the map learns nothing usable) and the sign-in limiter.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    fails: Mutex<Fails>,
}

#[derive(Default)]
struct Fails {
    per_client: HashMap<String, VecDeque<Instant>>,
    total: VecDeque<Instant>,
}

/// A caller who came through a session, with what the pages need.
#[derive(Debug, Clone)]
pub struct SessionCaller {
    pub caller: Caller,
    pub csrf: String,
    pub expires_in: Duration,
}

/// Equal without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session cookie's value, if the request carries one.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

impl Sessions {
    fn create(&self, token_hash: String) -> Result<(String, String), getrandom::Error> {
        let id = super::auth::random_hex()?;
        let csrf = super::auth::random_hex()?;
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| !s.expired(now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            hash_token(&id),
            Session {
                token_hash,
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        Ok((id, csrf))
    }

    /// The live session behind a cookie value (touching it), as
    /// (token hash, csrf, time left); expired sessions are removed.
    fn get(&self, id: &str) -> Option<(String, String, Duration)> {
        let key = hash_token(id);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get_mut(&key)?;
        if s.expired(now) {
            map.remove(&key);
            return None;
        }
        s.last_seen = now;
        Some((s.token_hash.clone(), s.csrf.clone(), s.remaining(now)))
    }

    fn end(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&hash_token(id));
    }

    /// How many sessions are live (for tests and the log).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|s| !s.expired(now)).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Some(wait)` when `client` may not try again yet.
    fn limited(&self, client: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut f = self.fails.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = |q: &mut VecDeque<Instant>| {
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= FAIL_WINDOW)
            {
                q.pop_front();
            }
        };
        fresh(&mut f.total);
        let wait = |q: &VecDeque<Instant>, max: usize| {
            (q.len() >= max).then(|| {
                q.front().map_or(FAIL_WINDOW, |t| {
                    FAIL_WINDOW.saturating_sub(now.duration_since(*t))
                })
            })
        };
        if let Some(w) = wait(&f.total, FAILS_TOTAL) {
            return Some(w);
        }
        let q = f.per_client.get_mut(client)?;
        fresh(q);
        wait(q, FAILS_PER_CLIENT)
    }

    fn failed(&self, client: &str) {
        let now = Instant::now();
        let mut f = self.fails.lock().unwrap_or_else(|e| e.into_inner());
        f.total.push_back(now);
        // Keep the map bounded: forget clients whose failures are all old.
        if f.per_client.len() > 10_000 {
            f.per_client.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < FAIL_WINDOW)
            });
        }
        f.per_client
            .entry(client.to_string())
            .or_default()
            .push_back(now);
    }
}

/// The caller behind a session cookie, checking CSRF for `method`.
/// `Ok(None)` when the request carries no session cookie.
pub async fn from_cookie(
    st: &AppState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Option<SessionCaller>, ApiError> {
    let Some(id) = cookie(headers) else {
        return Ok(None);
    };
    let (token_hash, csrf, expires_in) = st.sessions.get(id).ok_or_else(|| {
        ApiError::unauthorized("your session has ended (signed out, expired or the server restarted); sign in again at /login")
    })?;
    if !(method == Method::GET || method == Method::HEAD) {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|s| same(s, &csrf)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "this request came with the session cookie but without the session's CSRF token \
                 (header X-CSRF-Token); reload the page and try again",
            ));
        }
    }
    // The token is looked up again on every request: revoking it ends the
    // session at once.
    let caller = match auth::caller_by_hash(st.controller.store(), &token_hash).await {
        Ok(c) => c,
        Err(e) => {
            if e.status == StatusCode::UNAUTHORIZED {
                st.sessions.end(id);
            }
            return Err(e);
        }
    };
    Ok(Some(SessionCaller {
        caller,
        csrf,
        expires_in,
    }))
}

fn set_cookie(st: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = st
        .public_url
        .as_deref()
        .is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
    let v = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).expect("a cookie of hex digits is a valid header")
}

fn who(c: &SessionCaller) -> serde_json::Value {
    json!({
        "principal": c.caller.principal,
        "role": c.caller.role,
        "token_name": c.caller.token_name,
        "csrf_token": c.csrf,
        "expires_in_seconds": c.expires_in.as_secs(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: Option<String>,
}

/// `POST /api/v1/session` `{"token"}`: sign in. Sets the cookie; answers
/// who you are and the CSRF token. Only JSON is accepted, so a form on
/// another site cannot sign a browser in (a cross-site JSON POST needs a
/// CORS preflight this server never grants).
pub async fn sign_in(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let client = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
    if let Some(wait) = st.sessions.limited(&client) {
        let secs = wait.as_secs().max(1);
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed sign-ins; try again in {secs} s"),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(r);
    }
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let raw = RawJson::from_request(req, &st).await?;
    let token = if json_body {
        raw.parse::<SignIn>()?.token
    } else {
        None
    };
    let Some(token) = token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    else {
        st.sessions.failed(&client);
        return Err(ApiError::unauthorized(
            "sign in with your token: POST {\"token\": \"mht_…\"} as application/json",
        ));
    };
    let hash = hash_token(&token);
    let caller = match auth::caller_by_hash(st.controller.store(), &hash).await {
        Ok(c) => c,
        Err(e) => {
            if e.status == StatusCode::UNAUTHORIZED {
                st.sessions.failed(&client);
                tracing::info!(client = %client, "Dashboard sign-in refused.");
            }
            return Err(e);
        }
    };
    let (id, csrf) = st.sessions.create(hash).map_err(|e| {
        ApiError::internal(format!(
            "the operating system's random source failed ({e}); no session was made"
        ))
    })?;
    tracing::info!(principal = %caller.principal, role = %caller.role, token = %caller.token_name, "Dashboard sign-in.");
    let body = who(&SessionCaller {
        caller,
        csrf,
        expires_in: MAX_AGE.min(IDLE),
    });
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&st, &id, MAX_AGE.as_secs()));
    Ok(r)
}

/// `GET /api/v1/session`: who is signed in, their role and the CSRF token.
/// With a bearer token it answers who the token is (no CSRF token: bearer
/// requests need none).
pub async fn show(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        let h = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let c = auth::authenticate(st.controller.store(), h).await?;
        return Ok(Json(json!({"principal": c.principal, "role": c.role, "token_name": c.token_name, "csrf_token": null, "expires_in_seconds": null})).into_response());
    }
    match from_cookie(&st, &headers, &Method::GET).await? {
        Some(c) => Ok(Json(who(&c)).into_response()),
        None => Err(auth::authenticate(st.controller.store(), None)
            .await
            .expect_err("no header never authenticates")),
    }
}

/// `DELETE /api/v1/session`: sign out (CSRF token required). The session
/// ends on the server; the cookie is cleared.
pub async fn sign_out(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(c) = from_cookie(&st, &headers, &Method::DELETE).await? else {
        return Err(ApiError::unauthorized(
            "no session to end: this signs out a browser session (cookie)",
        ));
    };
    if let Some(id) = cookie(&headers) {
        st.sessions.end(id);
    }
    tracing::info!(principal = %c.caller.principal, "Dashboard sign-out.");
    let mut r = Json(json!({"signed_out": true})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&st, "", 0));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; muhurat_session=abc; b=2"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("muhurat_session="));
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn same_compares_whole_strings() {
        assert!(same("abcd", "abcd"));
        assert!(!same("abcd", "abce"));
        assert!(!same("abc", "abcd"));
    }

    #[test]
    fn sign_in_failures_are_limited_per_client_then_in_total() {
        let s = Sessions::default();
        for _ in 0..FAILS_PER_CLIENT {
            assert!(s.limited("10.0.0.1").is_none());
            s.failed("10.0.0.1");
        }
        let wait = s.limited("10.0.0.1").expect("limited after 5 failures");
        assert!(
            wait <= FAIL_WINDOW && wait > Duration::from_secs(50),
            "{wait:?}"
        );
        // Another client is not affected by one client's failures…
        assert!(s.limited("10.0.0.2").is_none());
        // …until everyone together failed too often.
        for i in 0..FAILS_TOTAL {
            s.failed(&format!("10.1.{}.{}", i / 200, i % 200));
        }
        assert!(s.limited("10.0.0.2").is_some());
    }

    #[test]
    fn sessions_expire_by_age_and_by_idleness() {
        let now = Instant::now();
        let ago = |d: Duration| {
            now.checked_sub(d)
                .expect("the monotonic clock runs long enough")
        };
        let s = |created: Duration, seen: Duration| Session {
            token_hash: String::new(),
            csrf: String::new(),
            created: ago(created),
            last_seen: ago(seen),
        };
        let minute = Duration::from_secs(60);
        assert!(!s(minute, minute).expired(now));
        // Busy all along, but past the maximum age.
        assert!(s(MAX_AGE, Duration::ZERO).expired(now));
        // Young, but left alone too long.
        assert!(s(IDLE, IDLE).expired(now));
        assert!(!s(IDLE, IDLE - minute).expired(now));
        assert_eq!(s(minute, minute).remaining(now), IDLE - minute);
        assert_eq!(
            s(MAX_AGE - minute, Duration::ZERO).remaining(now),
            minute,
            "the nearer of the two limits"
        );
    }

    #[test]
    fn sessions_end_and_are_keyed_by_hash() {
        let s = Sessions::default();
        let (id, csrf) = s.create("h".into()).unwrap();
        assert_ne!(id, csrf);
        let (hash, c, left) = s.get(&id).expect("live");
        assert_eq!((hash.as_str(), c.as_str()), ("h", csrf.as_str()));
        assert!(left <= IDLE);
        assert!(
            !s.map.lock().unwrap().contains_key(&id),
            "raw id is not a key"
        );
        s.end(&id);
        assert!(s.get(&id).is_none());
        assert!(s.is_empty());
    }
}
