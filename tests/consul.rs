//! The Consul KV traffic backend against the in-process Consul double
//! (tests/support/consul_double.rs — Consul cannot be installed here) and,
//! for the `verify` step, a REAL HAProxy started by the test (needs
//! `apt-get install -y haproxy`; without it those tests fail saying so).
//!
//! consul-template is simulated where a test needs the document to reach
//! HAProxy: the test copies the document's weights to HAProxy through the
//! Runtime API, which is the effect a render + reload has.

#[path = "support/consul_double.rs"]
mod consul_double;
#[path = "support/haproxy.rs"]
mod haproxy_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use consul_double::{ConsulDouble, Rights};
use haproxy_support::{Haproxy, NamedServer, config, free_port, servers, split};
use muhurat::secrets::{Scheme, Secrets};
use muhurat::spec::{Pool, Traffic, Verify};
use muhurat::traffic::consul::{
    ConsulBackend, ConsulFactory, ConsulLimits, ConsulTarget, WeightsDocument,
};
use muhurat::traffic::gate::testing::raise;
use muhurat::traffic::haproxy::HaproxyFactory;
use muhurat::traffic::{Orientation, TrafficBackend, TrafficError, TrafficFactory};

const KEY: &str = "muhurat/kite-api/weights";
const BE: &str = "kite_api";

fn pool(name: &str, s: &[&str]) -> Pool {
    Pool {
        name: name.into(),
        servers: s.iter().map(|x| x.to_string()).collect(),
    }
}

/// Canary green (g1, g2), live blue (b1, b2).
fn orient() -> Orientation {
    Orientation {
        canary: pool("green", &["g1", "g2"]),
        live: pool("blue", &["b1", "b2"]),
    }
}

/// Short waits so the unconfirmed cases do not take 15 s each.
fn limits() -> ConsulLimits {
    ConsulLimits {
        request_timeout: Duration::from_millis(700),
        confirm_wait: Duration::from_millis(1200),
        ..ConsulLimits::default()
    }
}

fn target(c: &ConsulDouble, secret: Option<&str>, verify: Option<Verify>) -> ConsulTarget {
    ConsulTarget {
        address: c.address(),
        key: KEY.into(),
        token_secret: secret.map(str::to_string),
        verify,
    }
}

fn backend(c: &ConsulDouble, verify: Option<Verify>) -> ConsulBackend {
    ConsulBackend::new(target(c, None, verify), orient(), None, limits()).expect("backend")
}

fn doc(c: &ConsulDouble) -> WeightsDocument {
    let e = c.entry(KEY).expect("the document exists");
    serde_json::from_slice(&e.value).expect("a weights document")
}

/// A document as someone else (a person, another tool) would write it.
fn foreign(canary: u32, live: u32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": 1, "live_pool": "blue", "idle_pool": "green",
        "canary_share": 0, "effective_share": 0.0,
        "weights": {"g1": canary, "g2": canary, "b1": live, "b2": live},
        "edited_by": "an operator",
    }))
    .expect("json")
}

/// The PUTs the double received, as their query strings.
fn puts(c: &ConsulDouble) -> Vec<String> {
    c.requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.query)
        .collect()
}

fn conflict(r: Result<muhurat::traffic::ApplyReport, TrafficError>) -> String {
    match r {
        Err(TrafficError::Conflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn document_is_created_with_cas_0_then_updated_with_the_index_it_was_read_at() {
    let c = ConsulDouble::start().await;
    let b = backend(&c, None).with_rollout("kite-api-20261126-1a2b3c", "abc123");

    let r = b.apply(5, &raise(5)).await.expect("apply 5");
    assert_eq!(puts(&c), ["cas=0"], "created only if absent");
    let d = doc(&c);
    assert_eq!(
        (d.live_pool.as_str(), d.idle_pool.as_str(), d.canary_share),
        ("blue", "green", 5)
    );
    assert_eq!(d.weights["g1"], d.weights["g2"]);
    assert_eq!(d.weights["b1"], d.weights["b2"]);
    let (g, l) = (d.weights["g1"] as f64, d.weights["b1"] as f64);
    assert!((100.0 * g / (g + l) - 5.0).abs() <= 0.1, "{d:?}");
    assert_eq!(d.rollout.as_deref(), Some("kite-api-20261126-1a2b3c"));
    assert_eq!(d.revision.as_deref(), Some("abc123"));
    // No verify: never confirmed, and the report says why.
    assert!(!r.confirmed, "{r:?}");
    assert!(r.detail.contains("no `verify`"), "{}", r.detail);
    assert!((r.effective_share - 5.0).abs() <= 0.1);

    let first = c.entry(KEY).expect("entry").modify_index;
    c.clear_requests();
    let r = b.apply(10, &raise(10)).await.expect("apply 10");
    assert!(!r.confirmed);
    assert_eq!(puts(&c), [format!("cas={first}")]);
    assert_eq!(doc(&c).canary_share, 10);

    // Asking again for what the document already says writes nothing (no
    // new index to wake consul-template for).
    let idx = c.entry(KEY).expect("entry").modify_index;
    c.clear_requests();
    b.apply(10, &raise(10)).await.expect("apply 10 again");
    assert!(puts(&c).is_empty(), "{:?}", c.requests());
    assert_eq!(c.entry(KEY).expect("entry").modify_index, idx);

    // Without verify, read() is the document's share (what was asked for,
    // not what is in effect).
    let reading = b.read().await.expect("read");
    let shares: Vec<f64> = reading.shares().into_values().collect();
    assert_eq!(shares.len(), 1);
    assert!((shares[0] - 10.0).abs() <= 0.1, "{reading:?}");
    assert!(!reading.canary_up(), "KV says nothing about health");
}

#[tokio::test]
async fn someone_elses_write_is_a_conflict_and_is_not_overwritten() {
    let c = ConsulDouble::start().await;
    let b = backend(&c, None);
    b.apply(5, &raise(5)).await.expect("apply 5");

    // An operator's break-glass through another client: canary to 0.
    let theirs = foreign(0, 100);
    let ok = reqwest::Client::new()
        .put(format!("{}/v1/kv/{KEY}", c.address()))
        .body(theirs.clone())
        .send()
        .await
        .expect("foreign PUT")
        .text()
        .await
        .expect("body");
    assert_eq!(ok, "true");
    let their_index = c.entry(KEY).expect("entry").modify_index;

    c.clear_requests();
    let m = conflict(b.apply(10, &raise(10)).await);
    assert!(m.contains("someone else wrote the document"), "{m}");
    assert!(m.contains(&format!("ModifyIndex {their_index}")), "{m}");
    assert!(m.contains("not overwritten"), "{m}");
    assert!(puts(&c).is_empty(), "nothing written: {:?}", c.requests());
    assert_eq!(c.entry(KEY).expect("entry").value, theirs);

    // Reported once: the controller pauses on it, and the write after a
    // human resumes goes through, with their index.
    c.clear_requests();
    b.apply(10, &raise(10)).await.expect("apply after resume");
    assert_eq!(puts(&c), [format!("cas={their_index}")]);
    assert_eq!(doc(&c).canary_share, 10);
}

/// Defect 2: after a CAS conflict on a raise the foreign index was
/// remembered as muhurat's own, so the pause's revert (back to the last
/// confirmed 5%) was written over the operator's break-glass 0%.
#[tokio::test]
async fn revert_after_a_conflict_never_writes_over_the_operators_lower_value() {
    let c = ConsulDouble::start().await;
    let b = backend(&c, None);
    b.apply(5, &raise(5)).await.expect("apply 5");
    let theirs = foreign(0, 100);
    c.put(KEY, &theirs);
    // The raise meets their document: a conflict, nothing written.
    let m = conflict(b.apply(10, &raise(10)).await);
    assert!(m.contains("not overwritten"), "{m}");
    // The controller pauses and reverts to the confirmed 5% — a decrease
    // permit, which the gate refuses: 0% → 5% would raise the canary.
    c.clear_requests();
    let r = b.apply(5, &decrease()).await;
    assert!(
        matches!(&r, Err(TrafficError::Refused(m)) if m.contains("may only lower")),
        "{r:?}"
    );
    assert!(puts(&c).is_empty(), "nothing written: {:?}", c.requests());
    assert_eq!(c.entry(KEY).expect("entry").value, theirs);
}

#[tokio::test]
async fn a_write_that_loses_the_cas_race_is_a_conflict_and_nothing_is_overwritten() {
    let c = ConsulDouble::start().await;
    let b = backend(&c, None);
    b.apply(5, &raise(5)).await.expect("apply 5");
    let ours = c.entry(KEY).expect("entry").modify_index;

    let theirs = foreign(0, 100);
    c.write_before_next_put(KEY, &theirs);
    c.clear_requests();
    let m = conflict(b.apply(10, &raise(10)).await);
    assert!(m.contains(&format!("refused ?cas={ours}")), "{m}");
    assert!(m.contains("not overwritten"), "{m}");
    // One PUT, refused; the re-read saw a share of 0 and did not raise it.
    assert_eq!(puts(&c), [format!("cas={ours}")]);
    assert_eq!(c.entry(KEY).expect("entry").value, theirs);
}

#[tokio::test]
async fn rollback_on_conflict_rereads_and_writes_the_decrease() {
    let c = ConsulDouble::start().await;
    let b = backend(&c, None);
    b.apply(10, &raise(10)).await.expect("apply 10");

    // Someone raised the canary to 30%: a rollback writes 0 over it, with
    // the index it re-read, and reports the conflict.
    let their_index = c.put(KEY, &foreign(30, 70));
    c.clear_requests();
    let m = conflict(b.rollback(false, &decrease()).await);
    assert!(m.contains("someone else wrote the document"), "{m}");
    assert!(m.contains("30.00%"), "{m}");
    assert!(m.contains("wrote the decrease to 0%"), "{m}");
    assert_eq!(puts(&c), [format!("cas={their_index}")]);
    let d = doc(&c);
    assert_eq!(
        (d.canary_share, d.weights["g1"], d.weights["g2"]),
        (0, 0, 0)
    );

    // The same when the other write lands between our read and our write:
    // the refused CAS is followed by a re-read and a write at the new index.
    b.apply(10, &raise(10))
        .await
        .expect("apply 10 after the pause");
    let ours = c.entry(KEY).expect("entry").modify_index;
    c.write_before_next_put(KEY, &foreign(50, 50));
    c.clear_requests();
    let m = conflict(b.rollback(false, &decrease()).await);
    assert!(m.contains("wrote the decrease to 0%"), "{m}");
    let raced = ours + 1;
    assert_eq!(puts(&c), [format!("cas={ours}"), format!("cas={raced}")]);
    assert_eq!(doc(&c).canary_share, 0);

    // Someone already set it to 0: nothing to decrease, nothing written,
    // still reported.
    b.apply(10, &raise(10)).await.expect("apply 10 again");
    let zero = foreign(0, 100);
    c.put(KEY, &zero);
    c.clear_requests();
    let m = conflict(b.rollback(false, &decrease()).await);
    assert!(m.contains("not overwritten"), "{m}");
    assert!(puts(&c).is_empty());
    assert_eq!(c.entry(KEY).expect("entry").value, zero);
}

#[tokio::test]
async fn acl_403_is_a_clear_error_naming_the_secret_and_never_the_token() {
    let c = ConsulDouble::start().await;
    c.enable_acl(&[
        ("token-that-writes", "muhurat/", Rights::Write),
        ("token-that-reads", "muhurat/", Rights::Read),
    ]);
    let with = |token: Option<&str>, secret: Option<&str>| {
        ConsulBackend::new(
            target(&c, secret, None),
            orient(),
            token.map(str::to_string),
            limits(),
        )
        .expect("backend")
    };

    let err = with(Some("no-such-token-s3cr3t"), Some("consul-prod"))
        .apply(5, &raise(5))
        .await
        .expect_err("unknown token");
    let m = err.to_string();
    assert!(
        matches!(err, TrafficError::Other(_)),
        "not retryable: {err:?}"
    );
    assert!(
        m.contains("secret `consul-prod`") && m.contains("403"),
        "{m}"
    );
    assert!(m.contains("ACL not found"), "{m}");
    assert!(!m.contains("no-such-token-s3cr3t"), "token leaked: {m}");

    // Reading is allowed, writing is not.
    let m = with(Some("token-that-reads"), Some("consul-prod"))
        .apply(5, &raise(5))
        .await
        .expect_err("read-only token")
        .to_string();
    assert!(
        m.contains("Permission denied") && m.contains("key:write"),
        "{m}"
    );
    assert!(m.contains("secret `consul-prod`") && m.contains(KEY), "{m}");
    assert!(!m.contains("token-that-reads"), "token leaked: {m}");

    let m = with(None, None)
        .apply(5, &raise(5))
        .await
        .expect_err("anonymous")
        .to_string();
    assert!(m.contains("default token"), "{m}");

    c.clear_requests();
    with(Some("token-that-writes"), Some("consul-prod"))
        .apply(5, &raise(5))
        .await
        .expect("allowed");
    assert!(
        c.requests()
            .iter()
            .all(|r| r.token.as_deref() == Some("token-that-writes") && !r.query.contains("token")),
        "the token travels in X-Consul-Token only: {:?}",
        c.requests()
    );

    // A secret the server does not have: every call says which and where.
    let traffic = Traffic::Consul {
        address: c.address(),
        token_secret: Some("consul-missing".into()),
        key: KEY.into(),
        pools: [pool("blue", &["b1", "b2"]), pool("green", &["g1", "g2"])],
        verify: None,
    };
    let f = HaproxyFactory::default().with_other(std::sync::Arc::new(ConsulFactory::new(
        Secrets::one(
            "consul-missing",
            "MUHURAT_TEST_CONSUL_UNSET_XYZ",
            Scheme::Http,
            &[c.address().trim_start_matches("http://")],
        )
        .unwrap(),
        limits(),
    )));
    let m = f
        .backend(&traffic, &orient())
        .apply(5, &raise(5))
        .await
        .expect_err("no secret")
        .to_string();
    assert!(
        m.contains("consul-missing") && m.contains("MUHURAT_TEST_CONSUL_UNSET_XYZ"),
        "{m}"
    );
}

#[tokio::test]
async fn a_hung_or_failing_consul_is_a_retryable_error_in_bounded_time() {
    let c = ConsulDouble::start().await;
    let b = backend(&c, None);

    c.hang(true);
    let started = Instant::now();
    let err = b.apply(5, &raise(5)).await.expect_err("hung");
    assert!(
        matches!(&err, TrafficError::Unreachable(m) if m.contains("timed out")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    c.hang(false);

    c.fail_next(1, 500, "rpc error making call: No cluster leader");
    let err = b.apply(5, &raise(5)).await.expect_err("500");
    assert!(
        matches!(&err, TrafficError::Unreachable(m) if m.contains("500") && m.contains("No cluster leader")),
        "{err:?}"
    );
    c.fail_next(1, 429, "rate limit exceeded");
    assert!(matches!(
        b.apply(5, &raise(5)).await,
        Err(TrafficError::Unreachable(_))
    ));
    // The caller retries; the next attempt goes through.
    b.apply(5, &raise(5)).await.expect("after the failures");

    c.oversized(true);
    let err = b.apply(10, &raise(10)).await.expect_err("oversized");
    assert!(err.to_string().contains("larger than"), "{err:?}");
    c.oversized(false);

    // Nothing listening at all.
    let gone = ConsulTarget {
        address: format!("http://127.0.0.1:{}", free_port()),
        ..target(&c, None, None)
    };
    let err = ConsulBackend::new(gone, orient(), None, limits())
        .expect("backend")
        .apply(5, &raise(5))
        .await
        .expect_err("refused");
    assert!(matches!(err, TrafficError::Unreachable(_)), "{err:?}");
}

// ---- with a real HAProxy for `verify` --------------------------------------

async fn four() -> Vec<NamedServer> {
    let mut v = Vec::new();
    for n in ["b1", "b2", "g1", "g2"] {
        v.push(NamedServer::start(n).await);
    }
    v
}

/// Live pool at 100 each, idle pool at 0 — what the template renders
/// before any rollout.
async fn haproxy(s: &[NamedServer]) -> (Haproxy, u16) {
    let fe = free_port();
    let cfg = config(
        "http",
        fe,
        BE,
        "roundrobin",
        &servers(&[
            ("b1", s[0].port, 100, ""),
            ("b2", s[1].port, 100, ""),
            ("g1", s[2].port, 0, ""),
            ("g2", s[3].port, 0, ""),
        ]),
    );
    (Haproxy::start(&cfg).await, fe)
}

/// What consul-template + a reload do: put the document's weights into
/// HAProxy.
async fn render(c: &ConsulDouble, h: &Haproxy) {
    for (server, w) in doc(c).weights {
        let reply = h
            .cmd(&format!("set weight {BE}/{server} {w}"))
            .await
            .expect("set weight");
        assert!(reply.trim().is_empty(), "{reply}");
    }
}

fn canary_pct(counts: &BTreeMap<String, usize>, n: usize) -> f64 {
    let c: usize = ["g1", "g2"]
        .iter()
        .map(|s| counts.get(*s).copied().unwrap_or(0))
        .sum();
    100.0 * c as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raise_is_confirmed_only_when_haproxy_shows_the_share() {
    let s = four().await;
    let (h, fe) = haproxy(&s).await;
    let c = ConsulDouble::start().await;
    let verify = Verify {
        haproxy_endpoints: vec![h.unix()],
        backend: BE.into(),
    };
    let b = backend(&c, Some(verify));

    // The KV write happens, but nothing renders it: not confirmed, and the
    // report names the endpoint and what it shows.
    let r = b.apply(10, &raise(10)).await.expect("apply 10");
    assert!(!r.confirmed, "{r:?}");
    assert!(
        r.detail.contains(&h.unix().to_string()) && r.detail.contains("shows 0.00%"),
        "{}",
        r.detail
    );
    assert_eq!(doc(&c).canary_share, 10);
    let reading = b.read().await.expect("read");
    assert_eq!(reading.shares().into_values().collect::<Vec<_>>(), [0.0]);

    // consul-template renders it a little later; the retried apply writes
    // nothing new and is confirmed by HAProxy itself.
    let idx = c.entry(KEY).expect("entry").modify_index;
    let (c2, h2) = (&c, &h);
    let permit = raise(10);
    let (r, ()) = tokio::join!(b.apply(10, &permit), async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        render(c2, h2).await;
    });
    let r = r.expect("apply 10 again");
    assert!(r.confirmed, "{r:?}");
    assert_eq!(
        c.entry(KEY).expect("entry").modify_index,
        idx,
        "no new write"
    );
    let got = r.endpoints[&h.unix().to_string()]
        .clone()
        .expect("endpoint ok");
    assert!((got - 10.0).abs() <= 0.5, "{r:?}");
    let n = 400;
    let pct = canary_pct(&split(fe, n).await, n);
    assert!((pct - 10.0).abs() <= 1.0, "observed {pct}%");

    // Rendered, then changed behind our back (a reload without the new
    // config): the next apply is not confirmed.
    h.cmd(&format!("set weight {BE}/g1 0")).await.expect("cmd");
    let r = b.apply(10, &raise(10)).await.expect("apply 10 once more");
    assert!(!r.confirmed, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_writes_0_and_drains_through_admin_verify_sockets() {
    let s = four().await;
    let (h, fe) = haproxy(&s).await;
    let c = ConsulDouble::start().await;
    let verify = Verify {
        haproxy_endpoints: vec![h.tcp()],
        backend: BE.into(),
    };
    let b = backend(&c, Some(verify));
    b.apply(50, &raise(50)).await.expect("apply 50");
    render(&c, &h).await;
    assert!(b.apply(50, &raise(50)).await.expect("confirm 50").confirmed);

    // No render needed: the admin socket takes the canary out at once.
    let r = b.rollback(false, &decrease()).await.expect("rollback");
    assert!(r.confirmed, "{r:?}");
    assert_eq!(doc(&c).canary_share, 0);
    let state = h
        .cmd(&format!("show servers state {BE}"))
        .await
        .expect("state");
    let parsed = muhurat::traffic::haproxy::parse_servers_state(&state, BE).expect("parse");
    for g in parsed.iter().filter(|s| s.name.starts_with('g')) {
        assert_eq!(g.admin_state & 0x08, 0x08, "{g:?} drained");
        assert_eq!(g.uweight, 0, "{g:?}");
    }
    let n = 100;
    assert_eq!(canary_pct(&split(fe, n).await, n), 0.0);

    // The next rollout's prepare() sets the drained servers back to ready
    // (at weight 0).
    b.prepare(&decrease()).await.expect("prepare");
    let state = h
        .cmd(&format!("show servers state {BE}"))
        .await
        .expect("state");
    let parsed = muhurat::traffic::haproxy::parse_servers_state(&state, BE).expect("parse");
    assert!(
        parsed.iter().all(|s| s.admin_state & 0x08 == 0),
        "{parsed:?}"
    );
}

#[tokio::test]
async fn preflight_checks_the_token_the_document_and_the_verify_backend() {
    let c = ConsulDouble::start().await;
    c.enable_acl(&[("reader", "muhurat/", Rights::Read)]);
    let b = ConsulBackend::new(
        target(&c, Some("consul-prod"), None),
        orient(),
        Some("wrong".into()),
        limits(),
    )
    .expect("backend");
    let issues = b.preflight().await.expect("preflight");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].message.contains("consul-prod"), "{issues:?}");

    // A document for some other target's servers.
    let b = ConsulBackend::new(
        target(&c, Some("consul-prod"), None),
        orient(),
        Some("reader".into()),
        limits(),
    )
    .expect("backend");
    c.put(
        KEY,
        br#"{"version":1,"live_pool":"a","idle_pool":"b","canary_share":0,"effective_share":0,"weights":{"x1":1,"y1":0}}"#,
    );
    let issues = b.preflight().await.expect("preflight");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].message.contains("unusable"), "{issues:?}");
}

#[test]
fn the_template_blocks_on_key_and_never_uses_key_or_default() {
    let t = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/consul-template/haproxy-weights.ctmpl"
    ))
    .expect("template");
    // Every action outside comments.
    let actions: Vec<&str> = t
        .split("{{")
        .skip(1)
        .filter_map(|a| a.split_once("}}").map(|(a, _)| a.trim_matches('-').trim()))
        .filter(|a| !a.starts_with("/*"))
        .collect();
    assert!(
        actions.iter().all(|a| !a.contains("keyOrDefault")),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a.contains(&format!("key \"{KEY}\"")) && a.contains("parseJSON")),
        "{actions:?}"
    );
    for s in ["b1", "b2", "g1", "g2"] {
        assert!(
            t.contains(&format!("server {s} ")) && t.contains(&format!("\"{s}\"")),
            "server {s}"
        );
    }
}

#[tokio::test]
async fn the_double_speaks_consuls_wire_format() {
    let c = ConsulDouble::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/kv/{KEY}", c.address());

    let r = http.get(&url).send().await.expect("get");
    assert_eq!(r.status(), 404);
    let idx: u64 = r.headers()["X-Consul-Index"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    assert!(idx >= 1);
    assert_eq!(r.text().await.expect("body"), "");

    let put = |q: String, v: &'static str| {
        let http = http.clone();
        let url = format!("{url}{q}");
        async move {
            http.put(url)
                .body(v)
                .send()
                .await
                .expect("put")
                .text()
                .await
                .expect("body")
        }
    };
    assert_eq!(put("?cas=0".into(), "5").await, "true");
    assert_eq!(
        put("?cas=0".into(), "6").await,
        "false",
        "cas=0 creates only"
    );
    let e = c.entry(KEY).expect("entry");
    assert_eq!(put("?cas=1".into(), "7").await, "false");
    assert_eq!(put(format!("?cas={}", e.modify_index), "8").await, "true");

    let r = http.get(&url).send().await.expect("get");
    let index = r.headers()["X-Consul-Index"]
        .to_str()
        .expect("ascii")
        .to_string();
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body[0]["Key"], KEY);
    assert_eq!(body[0]["Value"], "OA=="); // base64 of "8"
    assert_eq!(body[0]["ModifyIndex"].to_string(), index);
    assert_eq!(body[0]["CreateIndex"], e.create_index);
    let raw = http.get(format!("{url}?raw")).send().await.expect("raw");
    assert_eq!(raw.headers()["Content-Type"], "text/plain");
    assert_eq!(raw.text().await.expect("body"), "8");

    // Blocking: waits for a change, or for `wait`.
    let started = Instant::now();
    let r = http
        .get(format!("{url}?index={index}&wait=300ms"))
        .send()
        .await
        .expect("blocking get");
    assert!(started.elapsed() >= Duration::from_millis(280));
    assert_eq!(
        r.headers()["X-Consul-Index"].to_str().expect("ascii"),
        index
    );
    let (r, _) = tokio::join!(
        http.get(format!("{url}?index={index}&wait=5s")).send(),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.put(KEY, b"9");
        }
    );
    let body: serde_json::Value = r.expect("woken").json().await.expect("json");
    assert_eq!(body[0]["Value"], "OQ==");
    let r = http
        .get(format!("{url}?wait=soon"))
        .send()
        .await
        .expect("bad wait");
    assert_eq!(
        (r.status().as_u16(), r.text().await.expect("body")),
        (400, "Invalid wait time".to_string())
    );
}

/// A decrease permit, as the controller gives rollbacks and prepares.
fn decrease() -> muhurat::traffic::Permit {
    muhurat::traffic::Permit::decrease("test")
}
