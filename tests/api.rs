//! The HTTP API through the real router (tower `oneshot`) with a real store
//! (SQLite, and PostgreSQL for the store-backed scenarios), the real NSE
//! calendar, the in-memory traffic target and scripted metrics; SSE over a
//! real socket. Also: the router and `openapi.yaml` describe the same
//! routes, and real responses carry the fields the document promises.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use muhurat::api::{self, AppState, Role};
use muhurat::clock::ManualClock;
use muhurat::controller::testing::ScriptedMetrics;
use muhurat::controller::{Calendars, Config, Controller};
use muhurat::gates::Sample;
use muhurat::policy::Policy;
use muhurat::store::{Backend, testing};
use muhurat::traffic::memory::MemoryFactory;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Monday 23 Nov 2026, 20:00 IST: inside the calendar's coverage.
const START: &str = "2026-11-23T20:00:00+05:30";

/// Approval first, so a started rollout waits at step 0 for people without
/// needing a window.
fn spec(name: &str, min_approvals: u32) -> String {
    format!(
        r#"name: {name}
calendar: nse
traffic:
  haproxy:
    endpoints: ["unix:/run/haproxy/{name}.sock", "tcp:10.0.0.5:9999"]
    backend: {name}
    pools: {{blue: [b1], green: [g1]}}
analysis:
  prometheus: http://127.0.0.1:8428
  checks:
    - name: error-rate
      query: errors{{server=~"{{{{canary_servers}}}}"}}
      max: 0.01
steps:
  - approval: {{min: {min_approvals}}}
  - set_weight: 5
  - set_weight: 100
"#
    )
}

struct H {
    app: Router,
    state: AppState,
    tokens: BTreeMap<&'static str, String>,
    metrics: ScriptedMetrics,
    _dir: Option<tempfile::TempDir>,
}

/// Tokens by name: (role, principal). `asha-approver` is asha's second
/// token; `meera-1`/`meera-2` are two tokens of one approver.
const TOKENS: &[(&str, Role, &str)] = &[
    ("viewer", Role::Viewer, "vijay"),
    ("deployer", Role::Deployer, "asha"),
    ("approver", Role::Approver, "ravi"),
    ("admin", Role::Admin, "root"),
    ("asha-approver", Role::Approver, "asha"),
    ("meera-1", Role::Approver, "meera"),
    ("meera-2", Role::Approver, "meera"),
];

async fn harness(b: Backend, policy: Policy) -> H {
    let (store, _url, dir) = testing::fresh(b).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cals = Arc::new(Calendars::load(&root.join("rollouts/calendars")).unwrap());
    let clock = Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339(START)
            .unwrap()
            .with_timezone(&Utc),
    ));
    let metrics = ScriptedMetrics::new(|_, _| Ok(Sample::Value(0.001)));
    let c = Controller::new(
        store.clone(),
        cals,
        Arc::new(MemoryFactory::default()),
        Arc::new(metrics.clone()),
        clock.clone(),
        Config {
            measure_db_skew: false,
            // This machine's kernel reports its clock unsynchronised.
            allow_unsynced_clock: true,
            ..Config::default()
        },
    );
    let mut tokens = BTreeMap::new();
    for (name, role, principal) in TOKENS {
        let (t, _) =
            api::auth::create_token_at(&store, name, *role, principal, "test", clock.now_utc())
                .await
                .unwrap();
        tokens.insert(*name, t);
    }
    let state = AppState::new(c).with_policy(policy);
    H {
        app: api::router(state.clone()),
        state,
        tokens,
        metrics,
        _dir: dir,
    }
}

trait Now {
    fn now_utc(&self) -> DateTime<Utc>;
}
impl Now for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        muhurat::clock::Clock::now(self)
    }
}

impl H {
    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    /// A call as the named token.
    async fn call(
        &self,
        who: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let token = self.tokens.get(who).map(String::as_str);
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.raw(method, path, token, body).await
    }

    async fn start(&self, name: &str, rev: &str) -> (StatusCode, Value) {
        self.call(
            "deployer",
            "POST",
            "/api/v1/rollouts",
            Some(json!({"spec": spec(name, 1), "revision": rev, "initiator": "asha"})),
        )
        .await
    }

    /// Start and wait for preflight to move the rollout out of `pending`.
    async fn started(&self, name: &str, min: u32) -> Value {
        let (s, v) = self
            .call(
                "deployer",
                "POST",
                "/api/v1/rollouts",
                Some(json!({"spec": spec(name, min), "revision": "r1"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        for _ in 0..400 {
            let (_, r) = self
                .call("viewer", "GET", &format!("/api/v1/rollouts/{id}"), None)
                .await;
            if r["state"] != "pending" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("rollout {id} stayed pending");
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

// ---- auth ------------------------------------------------------------------

#[tokio::test]
async fn every_api_route_needs_a_token_but_health_does_not() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    for (method, path) in api::route_table() {
        let path = path.replace("{id}", "nope").replace("{name}", "nope");
        let (s, v) = h
            .call("nobody", &method.to_uppercase(), &path, Some(json!({})))
            .await;
        if path.starts_with("/api/") {
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
            assert_eq!(code(&v), "unauthorized");
        } else {
            assert!(s.is_success(), "{method} {path} without a token: {s} {v}");
        }
    }
    let (s, v) = h
        .raw("GET", "/api/v1/rollouts", Some("mht_0000"), Body::empty())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not know this token"),
        "{v}"
    );
}

#[tokio::test]
async fn a_revoked_token_says_when_and_by_whom() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let (s, v) = h
        .call("admin", "DELETE", "/api/v1/tokens/viewer", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revoked_by"], "root");
    let (s, v) = h.call("viewer", "GET", "/api/v1/rollouts", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("revoked on 2026-11-23T14:30:00Z by root"), "{m}");
    // Revoking twice: no live token of that name.
    let (s, _) = h
        .call("admin", "DELETE", "/api/v1/tokens/viewer", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Role × endpoint: each allowed role gets past the role check (the call
/// then fails or succeeds on its merits: an unknown id, an invalid spec),
/// each other role is refused with 403 `forbidden`.
/// (method, path, body, roles allowed, status when allowed)
type Case<'a> = (&'a str, &'a str, Option<Value>, &'a [&'a str], StatusCode);

#[tokio::test]
async fn role_matrix() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let bad_spec = json!({"spec": "name: x\n", "revision": "r"});
    let all = ["viewer", "deployer", "approver", "admin"];
    let deploy = ["deployer", "admin"];
    let approve = ["approver", "admin"];
    let admin = ["admin"];
    let cases: Vec<Case> = vec![
        ("GET", "/api/v1/rollouts", None, &all, StatusCode::OK),
        (
            "GET",
            "/api/v1/rollouts/nope",
            None,
            &all,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/api/v1/rollouts/nope/events",
            None,
            &all,
            StatusCode::NOT_FOUND,
        ),
        ("GET", "/api/v1/freeze", None, &all, StatusCode::OK),
        (
            "POST",
            "/api/v1/pools",
            Some(bad_spec.clone()),
            &all,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/check-target",
            Some(json!({"spec": "name: x\n"})),
            &all,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/check-metrics",
            Some(json!({"spec": "name: x\n"})),
            &all,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/rollouts",
            Some(bad_spec.clone()),
            &deploy,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/rollouts/nope/pause",
            None,
            &deploy,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/v1/rollouts/nope/resume",
            None,
            &deploy,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/v1/rollouts/nope/resume",
            Some(json!({"override_checks": true, "reason": "no data"})),
            &approve,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/v1/rollouts/nope/abort",
            Some(json!({"reason": "bad"})),
            &deploy,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/v1/rollouts/nope/approve",
            Some(json!({"step": 0, "spec_hash": "x"})),
            &approve,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/v1/pools/adopt",
            Some(json!({"spec": "name: x\n", "live": "blue"})),
            &deploy,
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/api/v1/tokens", None, &admin, StatusCode::OK),
        (
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "bad name!", "role": "viewer"})),
            &admin,
            StatusCode::BAD_REQUEST,
        ),
        (
            "DELETE",
            "/api/v1/tokens/nope",
            None,
            &admin,
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/v1/freeze",
            Some(json!({"on": true})),
            &admin,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/v1/calendars/reload",
            None,
            &admin,
            StatusCode::OK,
        ),
        ("GET", "/api/v1/calendars", None, &all, StatusCode::OK),
        (
            "GET",
            "/api/v1/calendars/nse/days?from=2027-01-01&to=2027-01-07",
            None,
            &all,
            StatusCode::OK,
        ),
    ];
    for (method, path, body, allowed, expect) in cases {
        for role in all {
            let (s, v) = h.call(role, method, path, body.clone()).await;
            if allowed.contains(&role) {
                assert_eq!(s, expect, "{role} {method} {path}: {v}");
            } else {
                assert_eq!(s, StatusCode::FORBIDDEN, "{role} {method} {path}: {v}");
                assert_eq!(code(&v), "forbidden");
                assert!(
                    v["error"]["message"].as_str().unwrap().contains(role),
                    "{v}"
                );
            }
        }
    }
}

// ---- request bodies ----------------------------------------------------------

#[tokio::test]
async fn malformed_json_says_what_is_wrong() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let t = h.tokens["deployer"].clone();
    let (s, v) = h
        .raw(
            "POST",
            "/api/v1/rollouts",
            Some(&t),
            Body::from("{\"spec\": "),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(code(&v), "bad_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{v}"
    );
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/rollouts",
            Some(json!({"spec": 1, "revision": "r"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`spec`"),
        "{v}"
    );
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/rollouts",
            Some(json!({"spec": "x", "revision": "r", "extra": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("extra"),
        "{v}"
    );
}

#[tokio::test]
async fn malformed_yaml_and_invalid_specs_list_every_diagnostic() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/rollouts",
            Some(json!({"spec": "name: [unclosed\n", "revision": "r"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(code(&v), "invalid_spec");
    assert!(v["error"]["details"][0]["line"].is_number(), "{v}");
    // Two independent errors: both reported, with their key paths.
    let bad = spec("shop", 1)
        .replace("calendar: nse", "calendar: nope")
        .replace("set_weight: 5", "set_weight: 0");
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/rollouts",
            Some(json!({"spec": bad, "revision": "r"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("spec:2:") && m.contains("calendar `nope` not found"),
        "{m}"
    );
    assert!(v["error"]["details"].as_array().unwrap().len() >= 2, "{v}");
}

#[tokio::test]
async fn oversize_bodies_are_refused_with_413() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let t = h.tokens["deployer"].clone();
    let big = format!(
        "{{\"spec\": \"{}\", \"revision\": \"r\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let (s, v) = h
        .raw("POST", "/api/v1/rollouts", Some(&t), Body::from(big))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(code(&v), "payload_too_large");
}

#[tokio::test]
async fn unknown_routes_and_ids_are_404_json() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let (s, v) = h.call("viewer", "GET", "/api/v1/nothing-here", None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = h
        .call(
            "viewer",
            "GET",
            "/api/v1/rollouts/shop-20261123-abcdef",
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = h.call("viewer", "DELETE", "/api/v1/rollouts", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

// ---- rollouts ----------------------------------------------------------------

async fn start_busy_idempotent(b: Backend) {
    let h = harness(b, Policy::default()).await;
    let (s, first) = h.start("shop", "r1").await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let id = first["id"].as_str().unwrap();
    assert_eq!(first["state"], "pending");
    assert_eq!(first["calendar"]["name"], "nse");
    assert!(first["calendar"]["version"].is_string());
    assert_eq!(
        first["plan"]["steps"].as_array().unwrap().len(),
        3,
        "{first}"
    );
    // The same name, revision and spec: the same rollout, 200.
    let (s, again) = h.start("shop", "r1").await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["id"], id);
    // Another revision on the same target: 409 naming the active rollout.
    let (s, busy) = h.start("shop", "r2").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(code(&busy), "target_busy");
    assert!(
        busy["error"]["message"].as_str().unwrap().contains(id),
        "{busy}"
    );
    // By spec name = its active rollout; list and the active filter.
    let (s, by_name) = h.call("viewer", "GET", "/api/v1/rollouts/shop", None).await;
    assert_eq!((s, &by_name["id"]), (StatusCode::OK, &json!(id)));
    let (_, list) = h
        .call("viewer", "GET", "/api/v1/rollouts?state=active", None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    for k in [
        "id",
        "name",
        "revision",
        "initiator",
        "state",
        "step",
        "canary_weight",
        "desired_weight",
        "waiting_for",
    ] {
        assert!(
            list[0].get(k).is_some(),
            "status field {k} missing: {}",
            list[0]
        );
    }
    let (s, v) = h
        .call("viewer", "GET", "/api/v1/rollouts?state=bogus", None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
}

#[tokio::test]
async fn start_is_idempotent_and_a_busy_target_is_409_sqlite() {
    start_busy_idempotent(Backend::Sqlite).await;
}

#[tokio::test]
async fn start_is_idempotent_and_a_busy_target_is_409_postgres() {
    start_busy_idempotent(Backend::Postgres).await;
}

#[tokio::test]
async fn policy_violations_are_all_listed() {
    let policy = muhurat::policy::load(
        "policy.yaml",
        "max_first_weight: 1\nmin_guard: 45m\nallowed_hosts: [\"10.0.0.*:9999\"]\n",
    )
    .unwrap();
    let h = harness(Backend::Sqlite, policy).await;
    let (s, v) = h.start("shop", "r1").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(code(&v), "policy_violation");
    let paths: Vec<&str> = v["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "windows.guard.before_open",
            "windows.guard.after_close",
            "steps[1].set_weight",
            "analysis.prometheus"
        ]
    );
    // Nothing was created.
    let (_, list) = h.call("viewer", "GET", "/api/v1/rollouts", None).await;
    assert_eq!(list, json!([]));
    // The read-only checks still refuse hosts outside the policy.
    let (s, v) = h
        .call(
            "viewer",
            "POST",
            "/api/v1/check-metrics",
            Some(json!({"spec": spec("shop", 1)})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "policy_violation"));
}

async fn approvals(b: Backend) {
    let h = harness(b, Policy::default()).await;
    let r = h.started("shop", 2).await;
    assert_eq!(r["state"], "awaiting_approval", "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let hash = r["spec_hash"].as_str().unwrap().to_string();
    assert_eq!(r["approval"]["need"], 2);
    let path = format!("/api/v1/rollouts/{id}/approve");
    // Stale: the wrong step, or the wrong spec hash.
    let (s, v) = h
        .call(
            "approver",
            "POST",
            &path,
            Some(json!({"step": 1, "spec_hash": hash})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "stale_approval"),
        "{v}"
    );
    let (s, v) = h
        .call(
            "approver",
            "POST",
            &path,
            Some(json!({"step": 0, "spec_hash": "0".repeat(64)})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "stale_approval"),
        "{v}"
    );
    // The initiator's other token (same principal) cannot approve.
    let (s, v) = h
        .call(
            "asha-approver",
            "POST",
            &path,
            Some(json!({"step": 0, "spec_hash": hash})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "separation_of_duties"),
        "{v}"
    );
    // Two tokens of one approver count once.
    let (s, v) = h
        .call(
            "meera-1",
            "POST",
            &path,
            Some(json!({"step": 0, "spec_hash": hash, "comment": "lgtm"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["approval"]["have"], 1, "{v}");
    let (s, v) = h
        .call(
            "meera-2",
            "POST",
            &path,
            Some(json!({"step": 0, "spec_hash": hash})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "already_approved"),
        "{v}"
    );
    let (_, r) = h
        .call("viewer", "GET", &format!("/api/v1/rollouts/{id}"), None)
        .await;
    assert_eq!(r["state"], "awaiting_approval");
    // A second person completes the step.
    let (s, v) = h
        .call(
            "approver",
            "POST",
            &path,
            Some(json!({"step": 0, "spec_hash": hash})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_ne!(v["state"], "awaiting_approval", "{v}");
    // The audit log names the principals, never a token.
    let (_, log) = h
        .call(
            "viewer",
            "GET",
            &format!("/api/v1/rollouts/{id}/events"),
            None,
        )
        .await;
    let text = log.to_string();
    assert!(text.contains("\"principal\":\"meera\""), "{text}");
    assert!(!h.tokens.values().any(|t| text.contains(t.as_str())));
}

#[tokio::test]
async fn approvals_stale_separation_of_duties_and_one_vote_per_person_sqlite() {
    approvals(Backend::Sqlite).await;
}

#[tokio::test]
async fn approvals_stale_separation_of_duties_and_one_vote_per_person_postgres() {
    approvals(Backend::Postgres).await;
}

#[tokio::test]
async fn the_initiator_name_cannot_approve_either() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    // Started by asha's token on behalf of ravi (the CI user).
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/rollouts",
            Some(json!({"spec": spec("shop", 1), "revision": "r1", "initiator": "ravi"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap();
    let hash = v["spec_hash"].as_str().unwrap();
    for _ in 0..400 {
        let (_, r) = h
            .call("viewer", "GET", &format!("/api/v1/rollouts/{id}"), None)
            .await;
        if r["state"] == "awaiting_approval" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s, v) = h
        .call(
            "approver",
            "POST",
            &format!("/api/v1/rollouts/{id}/approve"),
            Some(json!({"step": 0, "spec_hash": hash})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "separation_of_duties"),
        "{v}"
    );
}

#[tokio::test]
async fn pause_resume_abort_with_reasons() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let r = h.started("shop", 1).await;
    let id = r["id"].as_str().unwrap();
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            &format!("/api/v1/rollouts/{id}/pause"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "paused");
    assert_eq!(v["paused"]["by"], "asha");
    // Overriding checks needs a reason (the engine's rule) and the approver role.
    let (s, v) = h
        .call(
            "approver",
            "POST",
            &format!("/api/v1/rollouts/{id}/resume"),
            Some(json!({"override_checks": true})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "reason_required"),
        "{v}"
    );
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            &format!("/api/v1/rollouts/{id}/resume"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_ne!(v["state"], "paused");
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "reason_required"),
        "{v}"
    );
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(json!({"reason": "wrong build"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Pausing what is no longer running: 409 invalid_state.
    h.state.controller.settled().await;
    let (_, r) = h
        .call("viewer", "GET", &format!("/api/v1/rollouts/{id}"), None)
        .await;
    assert_eq!(r["state"], "aborted", "{r}");
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            &format!("/api/v1/rollouts/{id}/pause"),
            None,
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "invalid_state"),
        "{v}"
    );
}

// ---- pools, checks -------------------------------------------------------------

#[tokio::test]
async fn pools_adopt_and_the_checks() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let body = json!({"spec": spec("shop", 1)});
    let (s, p) = h
        .call("viewer", "POST", "/api/v1/pools", Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["live"], "green");
    assert_eq!(p["idle"], "blue");
    assert_eq!(p["safe_to_deploy"], true, "{p}");
    // adopt_that_would_move_traffic_onto_the_idle_pool_is_refused: blue
    // carries nothing, so making it live would move all traffic onto it —
    // refused, nothing written.
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/pools/adopt",
            Some(json!({"spec": spec("shop", 1), "live": "blue"})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "adopt_refused"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Nothing was written"),
        "{v}"
    );
    // Adopting green, which carries all traffic, records it (no write).
    let (s, p) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/pools/adopt",
            Some(json!({"spec": spec("shop", 1), "live": "green"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(
        (p["live"].as_str(), p["idle"].as_str()),
        (Some("green"), Some("blue"))
    );
    assert_eq!(p["idle_weight_max"], 0.0);
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/pools/adopt",
            Some(json!({"spec": spec("shop", 1), "live": "red"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    // While a rollout is active: not safe, and adopt refuses.
    let r = h.started("shop", 1).await;
    let (_, p) = h
        .call("viewer", "POST", "/api/v1/pools", Some(body.clone()))
        .await;
    assert_eq!(p["safe_to_deploy"], false);
    assert_eq!(p["active_rollout"], r["id"]);
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/pools/adopt",
            Some(json!({"spec": spec("shop", 1), "live": "green"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "target_busy"));
    // check-target: the memory target has no issues.
    let (s, v) = h
        .call("viewer", "POST", "/api/v1/check-target", Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    // check-metrics: each query as sent, value, verdict.
    let (s, v) = h
        .call(
            "viewer",
            "POST",
            "/api/v1/check-metrics",
            Some(json!({"spec": spec("shop", 1), "revision": "r9"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["checks"][0]["verdict"], "pass", "{v}");
    // Blue is the canary (green carries the traffic): its servers are
    // rendered.
    assert_eq!(v["checks"][0]["query"], "errors{server=~\"b1\"}", "{v}");
    assert_eq!(v["checks"][0]["value"], 0.001);
    h.metrics.set(|_, _| Ok(Sample::Value(0.5)));
    let (_, v) = h
        .call("viewer", "POST", "/api/v1/check-metrics", Some(body))
        .await;
    assert_eq!(
        (v["ok"].as_bool(), v["checks"][0]["verdict"].as_str()),
        (Some(false), Some("fail")),
        "{v}"
    );
}

// ---- admin -------------------------------------------------------------------

#[tokio::test]
async fn tokens_freeze_and_reload_are_audited() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let (s, v) = h
        .call(
            "admin",
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "ci", "role": "deployer", "principal": "gitlab"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("mht_"));
    let (s, v) = h
        .call(
            "admin",
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "token_exists"));
    let (s, _) = h
        .raw("GET", "/api/v1/rollouts", Some(&token), Body::empty())
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = h.call("admin", "GET", "/api/v1/tokens", None).await;
    assert!(
        !list.to_string().contains(&token),
        "the token is shown once only"
    );
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("hash").is_none())
    );

    let (s, v) = h
        .call(
            "admin",
            "POST",
            "/api/v1/freeze",
            Some(json!({"on": true, "reason": "budget day"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, f) = h.call("viewer", "GET", "/api/v1/freeze", None).await;
    assert_eq!(
        (f["on"].as_bool(), f["by"].as_str()),
        (Some(true), Some("root"))
    );
    let (s, v) = h
        .call("admin", "POST", "/api/v1/calendars/reload", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["unchanged"].as_array().unwrap().len(), 1, "{v}");

    let events = h
        .state
        .controller
        .store()
        .events(None, 0, 1000)
        .await
        .unwrap();
    let kinds: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|e| (e.event.kind.as_str(), e.event.principal.as_deref()))
        .collect();
    assert!(
        kinds.contains(&("token_created", Some("root"))),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("freeze_on", Some("root"))), "{kinds:?}");
    assert!(
        kinds.contains(&("calendars_reloaded", Some("root"))),
        "{kinds:?}"
    );
    // The plan of a rollout started while frozen has no times.
    let r = h.started("shop", 1).await;
    assert_eq!(r["plan"]["frozen"], true, "{r}");
    assert_eq!(r["plan"]["complete_at"], Value::Null);
}

#[tokio::test]
async fn metrics_and_health_answer_without_a_token() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    h.started("shop", 1).await;
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("muhurat_rollouts{state=\"awaiting_approval\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("muhurat_rollouts{state=\"succeeded\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("muhurat_calendar_coverage_remaining_seconds{calendar=\"nse\"}"),
        "{text}"
    );
    assert!(text.contains("muhurat_clock_skew_seconds 0"), "{text}");
}

async fn scrape(h: &H) -> String {
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// `/metrics` keeps its gauges in memory: they follow each committed state
/// change, load once from the store at start, and a scrape answers the
/// same with the database closed — so no scrape ever queries it.
#[tokio::test]
async fn metrics_gauges_follow_commits_and_a_scrape_never_queries_the_store() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let r = h.started("shop", 1).await;
    let id = r["id"].as_str().unwrap().to_string();
    h.state.controller.settled().await;
    let text = scrape(&h).await;
    assert!(
        text.contains("muhurat_rollouts{state=\"awaiting_approval\"} 1"),
        "{text}"
    );
    assert!(text.contains("muhurat_freeze_on 0"), "{text}");

    let (s, v) = h
        .call(
            "deployer",
            "POST",
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(json!({"reason": "wrong build"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.state.controller.settled().await;
    let (_, r) = h
        .call("viewer", "GET", &format!("/api/v1/rollouts/{id}"), None)
        .await;
    assert_eq!(r["state"], "aborted", "{r}");
    let (s, v) = h
        .call(
            "admin",
            "POST",
            "/api/v1/freeze",
            Some(json!({"on": true, "reason": "budget day"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let text = scrape(&h).await;
    for line in [
        "muhurat_rollouts{state=\"awaiting_approval\"} 0",
        "muhurat_rollouts{state=\"aborted\"} 1",
        "muhurat_freeze_on 1",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }

    // A server started on this database loads the same gauges, once.
    let store = h.state.controller.store().clone();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let restarted = Controller::new(
        store.clone(),
        Arc::new(Calendars::load(&root.join("rollouts/calendars")).unwrap()),
        Arc::new(MemoryFactory::default()),
        Arc::new(h.metrics.clone()),
        Arc::new(ManualClock::new(
            DateTime::parse_from_rfc3339(START)
                .unwrap()
                .with_timezone(&Utc),
        )),
        Config::default(),
    );
    assert!(restarted.gauges().by_state().is_empty());
    restarted.load_gauges().await.unwrap();
    assert_eq!(
        restarted.gauges().by_state(),
        [("aborted".to_string(), 1)].into()
    );
    assert!(restarted.frozen(), "the freeze is loaded too");

    // The database closed: any query fails, yet a scrape answers in full.
    store.pool().close().await;
    assert!(store.freeze().await.is_err(), "the store is really closed");
    let closed = scrape(&h).await;
    for line in [
        "muhurat_rollouts{state=\"aborted\"} 1",
        "muhurat_rollouts{state=\"awaiting_approval\"} 0",
        "muhurat_freeze_on 1",
        "muhurat_transitions_total",
    ] {
        assert!(closed.contains(line), "{line} missing:\n{closed}");
    }
}

// ---- SSE over a real socket --------------------------------------------------

async fn serve(h: &H) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = h.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Read SSE frames until `want` ids have arrived (or fail after 10 s).
async fn read_ids(resp: &mut reqwest::Response, want: usize) -> Vec<(i64, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < want {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("SSE events arrive within 10 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str::<Value>(v).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

async fn sse_resume(b: Backend) {
    let h = harness(b, Policy::default()).await;
    let base = serve(&h).await;
    let client = reqwest::Client::new();
    let token = h.tokens["viewer"].clone();
    let store = h.state.controller.store().clone();
    let before = store.events(None, 0, 1000).await.unwrap();
    let n = before.len();
    assert!(n >= TOKENS.len(), "token creation is audited");
    // From the start: every stored event, in order, id = seq.
    let mut resp = client
        .get(format!("{base}/api/v1/events?after=0"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let got = read_ids(&mut resp, n).await;
    let ids: Vec<i64> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, before.iter().map(|e| e.seq).collect::<Vec<_>>());
    assert_eq!(got[0].1["seq"], json!(ids[0]));
    // A live change arrives on the open stream at once (woken, not polled).
    let (s, _) = h
        .call(
            "admin",
            "POST",
            "/api/v1/freeze",
            Some(json!({"on": true, "reason": "drill"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let live = read_ids(&mut resp, 1).await;
    assert_eq!(live[0].1["kind"], "freeze_on");
    drop(resp);
    // While disconnected, more happens.
    let (s, _) = h
        .call(
            "admin",
            "POST",
            "/api/v1/freeze",
            Some(json!({"on": false, "reason": "drill over"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = h.started("shop", 1).await;
    // Reconnect with Last-Event-ID: exactly what was missed, nothing twice.
    let mut resp = client
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(&token)
        .header("Last-Event-ID", live[0].0.to_string())
        .send()
        .await
        .unwrap();
    let missed = store.events(None, live[0].0, 1000).await.unwrap();
    assert!(
        missed.len() >= 3,
        "freeze_off, created, preflight_passed: {missed:?}"
    );
    let got = read_ids(&mut resp, missed.len()).await;
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        missed.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert_eq!(got[0].1["kind"], "freeze_off");
    assert!(got.iter().any(|(_, e)| e["rollout_id"] == r["id"]));
    // Without a token: 401 before any stream.
    let resp = client
        .get(format!("{base}/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_sqlite() {
    sse_resume(Backend::Sqlite).await;
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_postgres() {
    sse_resume(Backend::Postgres).await;
}

#[tokio::test]
async fn over_a_socket_errors_are_json_too() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let base = serve(&h).await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/api/v1/rollouts"))
        .bearer_auth(&h.tokens["viewer"])
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "forbidden");
    let resp = client
        .post(format!("{base}/api/v1/rollouts"))
        .bearer_auth(&h.tokens["deployer"])
        .body(vec![b'x'; 3 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

// ---- OpenAPI -----------------------------------------------------------------

fn openapi() -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("openapi.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).expect("openapi.yaml parses")
}

#[test]
fn the_router_and_openapi_yaml_have_the_same_routes() {
    let doc = openapi();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    let mut served: Vec<(String, String)> = api::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(
        served, documented,
        "openapi.yaml and api::router differ; document every route (and only those)"
    );
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            let s = &doc["components"]["schemas"][name];
            assert!(!s.is_null(), "dangling $ref {r}");
            resolve(doc, s)
        }
        None => schema,
    }
}

/// Every `required` field present, recursively (objects, array items).
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) {
    let schema = resolve(doc, schema);
    if v.is_null() {
        assert!(
            schema["nullable"] == true || schema.get("type").is_none(),
            "{at}: null but not nullable"
        );
        return;
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        conforms(doc, part, v, at);
    }
    if let Some(req) = schema["required"].as_array() {
        for k in req {
            let k = k.as_str().unwrap();
            assert!(
                v.get(k).is_some(),
                "{at}: required field `{k}` missing in {v}"
            );
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            if let Some(x) = v.get(k) {
                conforms(doc, s, x, &format!("{at}.{k}"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            conforms(doc, items, x, &format!("{at}[{i}]"));
        }
    }
}

fn check_response(doc: &Value, method: &str, path: &str, status: StatusCode, body: &Value) {
    let op = &doc["paths"][path][method];
    assert!(!op.is_null(), "{method} {path} not documented");
    let mut resp = &op["responses"][status.as_u16().to_string()];
    assert!(
        !resp.is_null(),
        "{method} {path}: status {status} not documented"
    );
    if let Some(r) = resp.get("$ref").and_then(Value::as_str) {
        resp = &doc["components"]["responses"][r.trim_start_matches("#/components/responses/")];
    }
    let schema = &resp["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} {status}: no JSON schema"
    );
    conforms(doc, schema, body, &format!("{method} {path} {status}"));
}

#[tokio::test]
async fn real_responses_match_openapi_yaml() {
    let doc = openapi();
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let (s, v) = h.start("shop", "r1").await;
    check_response(&doc, "post", "/api/v1/rollouts", s, &v);
    let (s, v) = h.start("shop", "r1").await;
    check_response(&doc, "post", "/api/v1/rollouts", s, &v);
    let (s, v) = h.start("shop", "r2").await;
    check_response(&doc, "post", "/api/v1/rollouts", s, &v);
    let r = h.started("other", 1).await;
    let id = r["id"].as_str().unwrap();
    let (s, v) = h
        .call("viewer", "GET", &format!("/api/v1/rollouts/{id}"), None)
        .await;
    check_response(&doc, "get", "/api/v1/rollouts/{id}", s, &v);
    let (s, v) = h.call("viewer", "GET", "/api/v1/rollouts/nope", None).await;
    check_response(&doc, "get", "/api/v1/rollouts/{id}", s, &v);
    let (s, v) = h.call("viewer", "GET", "/api/v1/rollouts", None).await;
    check_response(&doc, "get", "/api/v1/rollouts", s, &v);
    let (s, v) = h
        .call(
            "viewer",
            "GET",
            &format!("/api/v1/rollouts/{id}/events"),
            None,
        )
        .await;
    check_response(&doc, "get", "/api/v1/rollouts/{id}/events", s, &v);
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            &format!("/api/v1/rollouts/{id}/pause"),
            Some(json!({"reason": "lunch"})),
        )
        .await;
    check_response(&doc, "post", "/api/v1/rollouts/{id}/pause", s, &v);
    let (s, v) = h
        .call(
            "viewer",
            "POST",
            "/api/v1/pools",
            Some(json!({"spec": spec("third", 1)})),
        )
        .await;
    check_response(&doc, "post", "/api/v1/pools", s, &v);
    let (s, v) = h
        .call(
            "viewer",
            "POST",
            "/api/v1/check-target",
            Some(json!({"spec": spec("third", 1)})),
        )
        .await;
    check_response(&doc, "post", "/api/v1/check-target", s, &v);
    let (s, v) = h
        .call(
            "viewer",
            "POST",
            "/api/v1/check-metrics",
            Some(json!({"spec": spec("third", 1)})),
        )
        .await;
    check_response(&doc, "post", "/api/v1/check-metrics", s, &v);
    let (s, v) = h
        .call(
            "admin",
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "viewer"})),
        )
        .await;
    check_response(&doc, "post", "/api/v1/tokens", s, &v);
    let (s, v) = h.call("admin", "GET", "/api/v1/tokens", None).await;
    check_response(&doc, "get", "/api/v1/tokens", s, &v);
    let (s, v) = h
        .call(
            "admin",
            "POST",
            "/api/v1/freeze",
            Some(json!({"on": false, "reason": "x"})),
        )
        .await;
    check_response(&doc, "post", "/api/v1/freeze", s, &v);
    let (s, v) = h
        .call(
            "viewer",
            "POST",
            "/api/v1/freeze",
            Some(json!({"on": false, "reason": "x"})),
        )
        .await;
    check_response(&doc, "post", "/api/v1/freeze", s, &v);
    let (s, v) = h
        .call("admin", "POST", "/api/v1/calendars/reload", None)
        .await;
    check_response(&doc, "post", "/api/v1/calendars/reload", s, &v);
    let (s, v) = h.call("viewer", "GET", "/api/v1/calendars", None).await;
    check_response(&doc, "get", "/api/v1/calendars", s, &v);
    for q in [
        "nse/days?from=2027-10-25&to=2027-11-03",
        "nse/days?from=2027-01-01&to=2028-01-02",
        "nope/days?from=2027-01-01&to=2027-01-02",
    ] {
        let (s, v) = h
            .call("viewer", "GET", &format!("/api/v1/calendars/{q}"), None)
            .await;
        check_response(&doc, "get", "/api/v1/calendars/{name}/days", s, &v);
    }
    let (s, v) = h.call("nobody", "GET", "/healthz", None).await;
    check_response(&doc, "get", "/healthz", s, &v);
    let (s, v) = h.call("nobody", "GET", "/readyz", None).await;
    check_response(&doc, "get", "/readyz", s, &v);
}

// ---- calendars ---------------------------------------------------------------

#[tokio::test]
async fn calendars_list_coverage_and_provisional_status() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let (s, v) = h.call("viewer", "GET", "/api/v1/calendars", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cals = v["calendars"].as_array().unwrap();
    assert_eq!(cals.len(), 1, "{v}");
    let nse = &cals[0];
    assert_eq!(nse["name"], "nse");
    assert_eq!(nse["coverage"]["from"], "2025-01-01");
    assert_eq!(nse["coverage"]["until"], "2027-12-31");
    assert_eq!(nse["provisional_from"], "2027-01-01");
    assert!(nse["version"].as_str().unwrap().starts_with("2026."), "{v}");
    // 2026-11-23 20:00 IST → 2028-01-01 00:00 IST: 403 days and 4 hours.
    assert_eq!(nse["coverage_remaining_seconds"], 34_833_600, "{v}");
}

#[tokio::test]
async fn calendar_days_show_sessions_holidays_and_blackouts_with_provenance() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let (s, v) = h
        .call(
            "viewer",
            "GET",
            "/api/v1/calendars/nse/days?from=2027-01-25&to=2027-01-26",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let days = v["days"].as_array().unwrap();
    assert_eq!(days.len(), 2);
    assert_eq!(days[0]["date"], "2027-01-25");
    assert_eq!(days[0]["provisional"], true);
    assert_eq!(days[0]["segments"][0]["segment"], "equity");
    assert_eq!(days[0]["segments"][0]["sessions"][0]["open"], "08:45");
    assert_eq!(days[1]["holiday"]["name"], "Republic Day");
    assert_eq!(days[1]["holiday"]["confidence"], "medium");
    assert!(days[1]["holiday"]["source"].as_str().is_some(), "{v}");
    assert_eq!(days[1]["segments"][0]["closed_by_holiday"], true);

    let (_, v) = h
        .call(
            "viewer",
            "GET",
            "/api/v1/calendars/nse/days?from=2026-11-08&to=2026-11-08",
            None,
        )
        .await;
    let b = &v["days"][0]["blackouts"][0];
    assert_eq!(b["from"], "00:00");
    assert_eq!(b["to"], "24:00");
    assert_eq!(b["confidence"], "low");
    assert_eq!(v["days"][0]["provisional"], false);

    // Outside coverage: no sessions, `covered: false`.
    let (_, v) = h
        .call(
            "viewer",
            "GET",
            "/api/v1/calendars/nse/days?from=2028-01-03&to=2028-01-03",
            None,
        )
        .await;
    assert_eq!(v["days"][0]["covered"], false, "{v}");
    assert!(
        v["days"][0]["segments"][0]["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn calendar_days_refuse_bad_and_unbounded_ranges() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    for (q, status, says) in [
        ("from=2027-01-01&to=2027-12-31", StatusCode::OK, ""),
        ("from=2027-01-01&to=2028-01-01", StatusCode::OK, ""),
        (
            "from=2027-01-01&to=2028-01-02",
            StatusCode::BAD_REQUEST,
            "ask for at most 366",
        ),
        (
            "to=2027-01-02",
            StatusCode::BAD_REQUEST,
            "`from` is required",
        ),
        (
            "from=2027-01-01",
            StatusCode::BAD_REQUEST,
            "`to` is required",
        ),
        (
            "from=2027-01-05&to=2027-01-04",
            StatusCode::BAD_REQUEST,
            "before `from`",
        ),
        (
            "from=tomorrow&to=2027-01-04",
            StatusCode::BAD_REQUEST,
            "not a date",
        ),
    ] {
        let (s, v) = h
            .call(
                "viewer",
                "GET",
                &format!("/api/v1/calendars/nse/days?{q}"),
                None,
            )
            .await;
        assert_eq!(s, status, "{q}: {v}");
        if !says.is_empty() {
            assert_eq!(code(&v), "bad_request", "{v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(says),
                "{q}: {v}"
            );
        }
    }
    let (s, v) = h
        .call(
            "viewer",
            "GET",
            "/api/v1/calendars/bse/days?from=2027-01-01&to=2027-01-02",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("loaded: nse"),
        "{v}"
    );
}

#[tokio::test]
async fn readyz_stays_ready_and_says_the_calendar_is_provisional() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let (s, v) = h.call("nobody", "GET", "/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let w = v["warnings"].as_array().unwrap();
    // 2026-11-23: 2027 is provisional; coverage (to 2027-12-31) is far.
    assert_eq!(w.len(), 1, "{v}");
    assert_eq!(w[0]["code"], "calendar_provisional");
    assert!(
        w[0]["message"]
            .as_str()
            .unwrap()
            .contains("data from 2027-01-01 is provisional")
    );
}

#[test]
fn readiness_warns_when_coverage_ends_within_45_days() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cals = Calendars::load(&root.join("rollouts/calendars")).unwrap();
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let codes = |now: &str| -> Vec<String> {
        api::calendars::readiness_warnings(&cals, at(now))
            .iter()
            .map(|w| w["code"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(codes("2027-11-10T12:00:00+05:30"), ["calendar_provisional"]);
    assert_eq!(
        codes("2027-11-20T12:00:00+05:30"),
        ["calendar_coverage_low", "calendar_provisional"]
    );
    let w = api::calendars::readiness_warnings(&cals, at("2027-11-20T12:00:00+05:30"));
    assert!(
        w[0]["message"]
            .as_str()
            .unwrap()
            .contains("coverage ends on 2027-12-31 (in 41 day(s))"),
        "{w:?}"
    );
    // Ended: still low, no longer "provisional".
    assert_eq!(
        codes("2028-01-02T00:00:00+05:30"),
        ["calendar_coverage_low"]
    );
}

#[tokio::test]
async fn rollout_detail_says_which_times_rest_on_provisional_data() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let r = h.started("shop", 1).await;
    let id = r["id"].as_str().unwrap();
    let (s, v) = h
        .call("viewer", "GET", &format!("/api/v1/rollouts/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["calendar"]["provisional_from"], "2027-01-01", "{v}");
    // Waiting for approval in November 2026: no window pending, nothing
    // provisional yet.
    assert_eq!(v["next_window_provisional"], false, "{v}");
    let steps = v["plan"]["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "{v}");
    for st in steps {
        assert_eq!(st["provisional"], false, "{st}");
    }
}

/// The dashboard's timeline names the rule that closes each wait: after
/// approval on Monday 20:00 IST the raise to 5% waits for the commodity
/// session (open until 23:55) and its guard; the plan's step, the rollout's
/// `next_window_after` and its permitted windows all say so, and `guard`
/// carries the margins the calendar page draws.
#[tokio::test]
async fn rollout_detail_names_the_rule_each_wait_waits_for() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let r = h.started("shop", 1).await;
    let id = r["id"].as_str().unwrap().to_string();
    let hash = r["spec_hash"].as_str().unwrap().to_string();
    let path = format!("/api/v1/rollouts/{id}");
    let (_, v) = h.call("viewer", "GET", &path, None).await;
    // Awaiting approval: no window is awaited yet, but the plan already
    // says what the raise after it will wait for.
    assert_eq!(v["next_window_after"], Value::Null, "{v}");
    let raise = &v["plan"]["steps"][1];
    assert_eq!(raise["type"], "set_weight", "{v}");
    let waits = raise["waits_for"].as_str().unwrap_or_default();
    assert!(
        waits.starts_with("the commodity session ends (+"),
        "{raise}"
    );
    // The raise after it needs in-session passes first (evidence:
    // sessions), so it lands a day later — Guru Nanak Jayanti, a holiday
    // on which commodity trades in the evening — when that session ends.
    assert_eq!(v["plan"]["steps"][2]["at"], "2026-11-24T18:55:00Z", "{v}");
    assert_eq!(
        v["plan"]["steps"][2]["waits_for"],
        "the commodity session of Prakash Gurpurb Sri Guru Nanak Dev ends (+30m guard)",
        "{v}"
    );
    assert_eq!(
        v["guard"]["segments"].as_array().map(Vec::len),
        Some(4),
        "{v}"
    );
    assert!(
        v["guard"]["after_close_seconds"].as_i64().unwrap() > 0,
        "{v}"
    );
    let (s, v) = h
        .call(
            "approver",
            "POST",
            &format!("{path}/approve"),
            Some(json!({"step": 0, "spec_hash": hash})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = h.call("viewer", "GET", &path, None).await;
    assert_eq!(v["state"], "waiting_for_window", "{v}");
    assert_eq!(v["next_window_after"].as_str(), Some(waits), "{v}");
    assert_eq!(v["windows"][0]["start"], v["next_window"], "{v}");
    assert_eq!(v["windows"][0]["opens_after"].as_str(), Some(waits), "{v}");
}

// ---- hostile input (issue 11) ------------------------------------------

/// Regression: an approval whose `spec_hash` has a multi-byte character at
/// byte 12 panicked the request task (the engine cut the hash at byte 12
/// for its message); the client got no answer.
#[tokio::test]
async fn approval_with_a_multibyte_spec_hash_is_stale_not_a_panic() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let r = h.started("shop", 1).await;
    let id = r["id"].as_str().unwrap().to_string();
    let hash = "0123456789aé€😀bcdef";
    assert!(!hash.is_char_boundary(12));
    let (s, v) = h
        .call(
            "approver",
            "POST",
            &format!("/api/v1/rollouts/{id}/approve"),
            Some(json!({"step": 0, "spec_hash": hash})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "stale_approval"),
        "{v}"
    );
}

/// A panic inside a handler is a 500 in the JSON error shape with a request
/// id (also in `x-request-id`), never a dropped connection.
#[tokio::test]
async fn a_panicking_handler_answers_500_with_a_request_id() {
    let app = api::harden(Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            let v: Vec<u8> = Vec::new();
            #[allow(clippy::indexing_slicing)]
            let _ = v[7];
            "unreachable"
        }),
    ));
    let resp = app
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(code(&v), "internal");
    assert_eq!(v["error"]["request_id"], rid.as_str());
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&rid),
        "{v}"
    );
}

#[tokio::test]
async fn smaller_findings_bearer_case_trailing_bytes_query_errors_limits_text_fields() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let t = h.tokens["viewer"].clone();
    // The scheme is case-insensitive.
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let resp = h
            .app
            .clone()
            .oneshot(
                Request::get("/api/v1/rollouts")
                    .header("authorization", format!("{scheme} {t}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
    // Query-string errors in the JSON shape; `limit` within 1..=1000.
    for q in ["limit=abc", "limit=0", "limit=1001", "limit=-5"] {
        let (s, v) = h
            .call("viewer", "GET", &format!("/api/v1/rollouts?{q}"), None)
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{q}: {v}"
        );
    }
    let (s, _) = h
        .call("viewer", "GET", "/api/v1/rollouts?limit=1000", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    // Trailing bytes after the JSON body.
    let (s, v) = h
        .raw(
            "POST",
            "/api/v1/rollouts",
            Some(&h.tokens["deployer"]),
            Body::from(format!(
                "{}{{\"x\":1}}",
                json!({"spec": spec("shop", 1), "revision": "r1"})
            )),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{v}"
    );
    assert!(v.to_string().contains("after the JSON value"), "{v}");
    // Free text: no control characters, bounded length.
    for (field, value) in [
        ("revision", "r1\nINFO forged line".to_string()),
        ("revision", "r".repeat(129)),
        ("initiator", "asha\u{1b}[31m".to_string()),
    ] {
        let mut body = json!({"spec": spec("shop", 1), "revision": "r1"});
        body[field] = json!(value);
        let (s, v) = h
            .call("deployer", "POST", "/api/v1/rollouts", Some(body))
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{field}: {v}"
        );
        assert!(v.to_string().contains(field), "{v}");
    }
    let r = h.started("shop", 1).await;
    let id = r["id"].as_str().unwrap();
    let (s, v) = h
        .call(
            "deployer",
            "POST",
            &format!("/api/v1/rollouts/{id}/pause"),
            Some(json!({"reason": "x".repeat(1001)})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{v}"
    );
}

/// A spec name with active rollouts on two targets never picks one.
#[tokio::test]
async fn a_spec_name_with_two_active_rollouts_is_409_with_both_ids() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let a = h.started("shop", 1).await;
    let other = spec("shop", 1).replace("tcp:10.0.0.5:9999", "tcp:10.0.0.6:9999");
    let (s, b) = h
        .call(
            "deployer",
            "POST",
            "/api/v1/rollouts",
            Some(json!({"spec": other, "revision": "r2"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, v) = h.call("viewer", "GET", "/api/v1/rollouts/shop", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "ambiguous_rollout"),
        "{v}"
    );
    let ids = v["error"]["details"]["rollouts"].to_string();
    assert!(
        ids.contains(a["id"].as_str().unwrap()) && ids.contains(b["id"].as_str().unwrap()),
        "{v}"
    );
}

/// Hostile specs through the API: each answered 4xx, fast.
#[tokio::test]
async fn nasty_specs_are_refused_quickly_with_4xx() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let allow: String = (0..1000)
        .map(|i| format!("    - {{name: a{i}, cron: \"*/1 * * * *\", duration: 1s}}\n"))
        .collect();
    let many = spec("shop", 1).replace("traffic:", &format!("windows:\n  allow:\n{allow}traffic:"));
    let cases: Vec<(&str, String)> = vec![
        ("deep nesting", "[".repeat(200_000)),
        ("deep block nesting", (0..1000).map(|i| format!("{}a:\n", " ".repeat(i))).collect()),
        (
            "alias bomb",
            {
                let mut t = "a: &a [l,l,l,l,l,l,l,l,l]\n".to_string();
                for i in 1..9u8 {
                    let (p, c) = ((b'a' + i - 1) as char, (b'a' + i) as char);
                    t.push_str(&format!("{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"));
                }
                t
            },
        ),
        ("1,000 minute rules", many),
        ("year 9999", spec("shop", 1).replace(
            "traffic:",
            "windows:\n  deny:\n    - {name: d, from: \"9999-12-31T00:00:00Z\", to: \"9999-12-31T23:00:00Z\"}\ntraffic:",
        )),
        ("huge numbers", spec("shop", 1).replace("min: 1", "min: 99999999999999999999999999")),
        ("huge duration", spec("shop", 1).replace(
            "traffic:",
            "windows:\n  min_remaining: 99999999999999999999d\ntraffic:",
        )),
    ];
    for (what, text) in cases {
        let t0 = std::time::Instant::now();
        let (s, v) = h
            .call(
                "deployer",
                "POST",
                "/api/v1/rollouts",
                Some(json!({"spec": text, "revision": "r1"})),
            )
            .await;
        let took = t0.elapsed();
        assert!(s.is_client_error(), "{what}: {s} {v}");
        assert!(took < Duration::from_secs(2), "{what} took {took:?}");
    }
    // Larger than the body limit: 413 before it is read.
    let (s, v) = h
        .raw(
            "POST",
            "/api/v1/rollouts",
            Some(&h.tokens["deployer"]),
            Body::from(vec![b'x'; 10 * 1024 * 1024]),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
}

mod no_panics {
    //! Property: no request body, path segment or query string makes a
    //! handler panic (a panic would be a 500 `internal` from the guard).
    use super::*;
    use proptest::prelude::*;

    fn routes() -> Vec<(&'static str, &'static str)> {
        vec![
            ("POST", "/api/v1/rollouts"),
            ("POST", "/api/v1/rollouts/X/pause"),
            ("POST", "/api/v1/rollouts/X/resume"),
            ("POST", "/api/v1/rollouts/X/abort"),
            ("POST", "/api/v1/rollouts/X/approve"),
            ("POST", "/api/v1/pools"),
            ("POST", "/api/v1/check-target"),
            ("POST", "/api/v1/check-metrics"),
            ("POST", "/api/v1/tokens"),
            ("POST", "/api/v1/freeze"),
            ("GET", "/api/v1/rollouts/X"),
            ("GET", "/api/v1/rollouts/X/events"),
            ("GET", "/api/v1/rollouts"),
            ("DELETE", "/api/v1/tokens/X"),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
            Just(Value::from("0123456789aé€😀")),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("spec".to_string()),
                        Just("revision".to_string()),
                        Just("step".to_string()),
                        Just("spec_hash".to_string()),
                        Just("reason".to_string()),
                        Just("comment".to_string()),
                        Just("on".to_string()),
                        Just("name".to_string()),
                        Just("role".to_string()),
                        Just("principal".to_string()),
                        Just("override_checks".to_string()),
                        ".{0,8}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
        #[test]
        fn no_api_input_panics_a_handler(
            route in 0usize..14,
            who in prop_oneof![Just("viewer"), Just("deployer"), Just("approver"), Just("admin")],
            body in json_value(),
            raw_bytes in prop::collection::vec(any::<u8>(), 0..64),
            use_raw in any::<bool>(),
            segment in "[^/?#]{0,12}",
            query in "[a-z=&0-9%é]{0,16}",
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let h = harness(Backend::Sqlite, Policy::default()).await;
                let (method, path) = routes()[route];
                let seg: String = url_escape(&segment);
                let path = format!("{}?{}", path.replace('X', if seg.is_empty() { "x" } else { &seg }), url_escape(&query));
                let body = if use_raw { Body::from(raw_bytes.clone()) } else { Body::from(body.to_string()) };
                let token = h.tokens[who].clone();
                let (s, v) = h.raw(method, &path, Some(&token), body).await;
                assert!(s != StatusCode::INTERNAL_SERVER_ERROR, "{method} {path}: {s} {v}");
                assert!(v.get("error").is_some() || s.is_success(), "{method} {path}: {s} {v}");
            });
        }
    }

    fn url_escape(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.=&".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
}

// ---- auth (issue 11) ----------------------------------------------------

#[tokio::test]
async fn principals_are_normalised_and_the_last_admin_stays() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let (s, v) = h
        .call(
            "admin",
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "asha-caps", "role": "approver", "principal": "  ASHA "})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["principal"], "asha");
    let shouting = v["token"].as_str().unwrap().to_string();
    let (s, v) = h
        .call(
            "admin",
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "evil", "role": "approver", "principal": "ravi\nINFO approved"})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{v}"
    );
    // asha (deployer) started it; `ASHA` is the same person.
    let r = h.started("shop", 1).await;
    let id = r["id"].as_str().unwrap();
    let (s, v) = h
        .raw(
            "POST",
            &format!("/api/v1/rollouts/{id}/approve"),
            Some(&shouting),
            Body::from(json!({"step": 0, "spec_hash": r["spec_hash"]}).to_string()),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "separation_of_duties"),
        "{v}"
    );

    // The last live admin token cannot be revoked through the API.
    let (s, v) = h
        .call("admin", "DELETE", "/api/v1/tokens/admin", None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "last_admin"), "{v}");
    let (s, v) = h
        .call(
            "admin",
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "admin-2", "role": "admin", "principal": "root2"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = h
        .call("admin", "DELETE", "/api/v1/tokens/admin", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_revoked_token_ends_its_open_event_stream_at_once() {
    let h = harness(Backend::Sqlite, Policy::default()).await;
    let base = serve(&h).await;
    let mut resp = reqwest::Client::new()
        .get(format!("{base}/api/v1/events?after=0"))
        .bearer_auth(&h.tokens["viewer"])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The stream is live: the token events of the harness arrive.
    read_ids(&mut resp, 1).await;
    let (s, v) = h
        .call("admin", "DELETE", "/api/v1/tokens/viewer", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let t0 = std::time::Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await {
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Ok(Ok(Some(_))) => {}
            Err(_) => panic!("the stream of a revoked token stayed open"),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // And the token fails everywhere else.
    let (s, _) = h.call("viewer", "GET", "/api/v1/rollouts", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Regression (issue 11): on PostgreSQL a sequence number is taken at
/// insert and becomes visible at commit, so event N+1 can be readable
/// before N. The stream must deliver N, then N+1 — never skip N.
#[tokio::test]
async fn sse_never_skips_an_event_committed_out_of_order_postgres() {
    let h = harness(Backend::Postgres, Policy::default()).await;
    let base = serve(&h).await;
    let pool = h.state.controller.store().pool().clone();
    let mut resp = reqwest::Client::new()
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(&h.tokens["viewer"])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Let the stream take its starting point (the newest event) first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let insert = "INSERT INTO events (rollout_id, at, kind, principal, why, input, state, version) \
                  VALUES (NULL, 0, 'test', NULL, 'out of order', '{}', 'server', 0) RETURNING seq";
    let mut first = pool.begin().await.unwrap();
    let a: i64 = sqlx::Row::get(
        &sqlx::query(insert).fetch_one(&mut *first).await.unwrap(),
        "seq",
    );
    let mut second = pool.begin().await.unwrap();
    let b: i64 = sqlx::Row::get(
        &sqlx::query(insert).fetch_one(&mut *second).await.unwrap(),
        "seq",
    );
    assert!(a < b);
    second.commit().await.unwrap();
    h.state.controller.poke();
    // The stream sees b, but must hold it until a commits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.commit().await.unwrap();
    let got: Vec<i64> = read_ids(&mut resp, 2)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, vec![a, b]);
}
