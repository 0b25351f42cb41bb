//! The dashboard's sessions and pages through the real router (tower
//! `oneshot`, no socket, no browser) with a real SQLite store: what the
//! browser tests cannot see — the cookie's attributes, `Secure` behind an
//! HTTPS public URL, a revoked token ending its sessions at once, the
//! security headers — and the refusals, each with its code.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use muhurat::api::{self, AppState, Role};
use muhurat::clock::ManualClock;
use muhurat::controller::testing::ScriptedMetrics;
use muhurat::controller::{Calendars, Config, Controller};
use muhurat::gates::Sample;
use muhurat::store::{Backend, testing};
use muhurat::traffic::memory::MemoryFactory;
use serde_json::{Value, json};
use tower::ServiceExt;

struct H {
    app: Router,
    state: AppState,
    admin: String,
    viewer: String,
    _dir: Option<tempfile::TempDir>,
}

async fn harness(public_url: Option<&str>) -> H {
    let (store, _url, dir) = testing::fresh(Backend::Sqlite).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cals = Arc::new(Calendars::load(&root.join("rollouts/calendars")).unwrap());
    let now: DateTime<Utc> = "2026-11-23T14:30:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let c = Controller::new(
        store.clone(),
        cals,
        Arc::new(MemoryFactory::default()),
        Arc::new(ScriptedMetrics::new(|_, _| Ok(Sample::Value(0.0)))),
        clock,
        Config {
            measure_db_skew: false,
            ..Config::default()
        },
    );
    let (admin, _) = api::auth::create_token_at(&store, "root", Role::Admin, "root", "test", now)
        .await
        .unwrap();
    let (viewer, _) =
        api::auth::create_token_at(&store, "vijay", Role::Viewer, "vijay", "test", now)
            .await
            .unwrap();
    let state = AppState::new(c).with_public_url(public_url.map(str::to_string));
    H {
        app: api::router(state.clone()),
        state,
        admin,
        viewer,
        _dir: dir,
    }
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl H {
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Sign in with `token`: the cookie value, the CSRF token, the response.
    async fn sign_in(&self, token: &str) -> (String, String, Resp) {
        let r = self
            .send(
                Request::post("/api/v1/session")
                    .header("content-type", "application/json")
                    .body(Body::from(json!({"token": token}).to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
        let value = set
            .strip_prefix("muhurat_session=")
            .and_then(|s| s.split(';').next())
            .unwrap()
            .to_string();
        let csrf = r.body["csrf_token"].as_str().unwrap().to_string();
        (value, csrf, r)
    }

    async fn with_cookie(
        &self,
        method: &str,
        path: &str,
        cookie: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut rq = Request::builder().method(method).uri(path).header(
            header::COOKIE,
            format!("theme=dark; muhurat_session={cookie}"),
        );
        if let Some(c) = csrf {
            rq = rq.header("x-csrf-token", c);
        }
        let body = match body {
            Some(b) => {
                rq = rq.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.send(rq.body(body).unwrap()).await
    }
}

#[tokio::test]
async fn a_session_cookie_is_httponly_strict_and_acts_with_the_tokens_role() {
    let h = harness(None).await;
    let (cookie, csrf, r) = h.sign_in(&h.viewer).await;
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    assert_eq!(r.body["principal"], "vijay");
    assert_eq!(r.body["role"], "viewer");
    assert_eq!(h.state.sessions.len(), 1);

    // Reads work with the cookie alone.
    let r = h
        .with_cookie("GET", "/api/v1/rollouts", &cookie, None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A viewer's CSRF-carrying freeze is refused by role, not by CSRF.
    let r = h
        .with_cookie(
            "POST",
            "/api/v1/freeze",
            &cookie,
            Some(&csrf),
            Some(json!({"on": true, "reason": "x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    // An admin's session without the CSRF header, or with a wrong one: refused.
    let (admin_cookie, admin_csrf, _) = h.sign_in(&h.admin).await;
    for bad in [None, Some("0".repeat(64).as_str()), Some(csrf.as_str())] {
        let r = h
            .with_cookie(
                "POST",
                "/api/v1/freeze",
                &admin_cookie,
                bad,
                Some(json!({"on": true, "reason": "x"})),
            )
            .await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("csrf")),
            "{bad:?}"
        );
    }
    let r = h
        .with_cookie(
            "POST",
            "/api/v1/freeze",
            &admin_cookie,
            Some(&admin_csrf),
            Some(json!({"on": true, "reason": "drill"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["by"], "root");
}

#[tokio::test]
async fn an_https_public_url_makes_the_cookie_secure() {
    let h = harness(Some("https://muhurat.internal")).await;
    let (_, _, r) = h.sign_in(&h.viewer).await;
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
}

#[tokio::test]
async fn revoking_the_token_ends_its_sessions_at_once() {
    let h = harness(None).await;
    let (cookie, _, _) = h.sign_in(&h.viewer).await;
    let r = h
        .send(
            Request::delete("/api/v1/tokens/vijay")
                .header("authorization", format!("Bearer {}", h.admin))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = h
        .with_cookie("GET", "/api/v1/rollouts", &cookie, None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{}",
        r.body
    );
    assert!(
        h.state.sessions.is_empty(),
        "the session is gone, not just refused"
    );
    // Pages send the person to sign in.
    let r = h
        .with_cookie("GET", "/rollouts/x-1", &cookie, None, None)
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/login?next=/rollouts/x-1");
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server() {
    let h = harness(None).await;
    let (cookie, csrf, _) = h.sign_in(&h.viewer).await;
    // Without the CSRF token a page elsewhere cannot sign you out either.
    let r = h
        .with_cookie("DELETE", "/api/v1/session", &cookie, None, None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = h
        .with_cookie("DELETE", "/api/v1/session", &cookie, Some(&csrf), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let cleared = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("muhurat_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let r = h
        .with_cookie("GET", "/api/v1/session", &cookie, None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_in_takes_only_json_and_limits_failures() {
    let h = harness(None).await;
    // A form post (what another site could make a browser send) is not read.
    let r = h
        .send(
            Request::post("/api/v1/session")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={}", h.viewer)))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    for _ in 0..4 {
        let r = h
            .send(
                Request::post("/api/v1/session")
                    .header("content-type", "application/json")
                    .body(Body::from(r#"{"token": "mht_nope"}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // The sixth attempt is refused before the token is even looked at —
    // a right token too.
    let r = h
        .send(
            Request::post("/api/v1/session")
                .header("content-type", "application/json")
                .body(Body::from(json!({"token": h.viewer}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "too_many_attempts");
    let wait: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn pages_need_a_session_and_carry_a_strict_csp() {
    let h = harness(None).await;
    for path in ["/", "/calendar", "/rollouts/kite-api-1"] {
        let r = h
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            r.headers[header::LOCATION]
                .to_str()
                .unwrap()
                .starts_with("/login?next=/")
        );
    }
    for path in [
        "/login",
        "/assets/app.js",
        "/assets/app.css",
        "/assets/login.js",
        "/favicon.svg",
    ] {
        let r = h
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path} is public");
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
    }
    // A signed-in page carries who, the role and the CSRF token, escaped.
    let (cookie, csrf, _) = h.sign_in(&h.viewer).await;
    let r = h.with_cookie("GET", "/", &cookie, None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let page = r.body.as_str().unwrap();
    assert!(page.contains(&format!("<meta name=\"csrf-token\" content=\"{csrf}\">")));
    assert!(page.contains("<meta name=\"muhurat-role\" content=\"viewer\">"));
    assert!(!page.contains("{{"), "every placeholder filled");
    // A principal is text, never markup.
    let (odd, _) = api::auth::create_token_at(
        h.state.controller.store(),
        "odd",
        Role::Viewer,
        "<img src=x>",
        "test",
        "2026-11-23T14:30:00Z".parse().unwrap(),
    )
    .await
    .unwrap();
    let (cookie, _, _) = h.sign_in(&odd).await;
    let page = h.with_cookie("GET", "/", &cookie, None, None).await.body;
    let page = page.as_str().unwrap();
    assert!(page.contains("&lt;img src=x&gt;") && !page.contains("<img src=x>"));
    // Assets revalidate cheaply.
    let r = h
        .send(Request::get("/assets/app.js").body(Body::empty()).unwrap())
        .await;
    let etag = r.headers[header::ETAG].to_str().unwrap().to_string();
    let r = h
        .send(
            Request::get("/assets/app.js")
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
}
