//! Notification delivery from the outbox against a real HTTP receiver on
//! loopback (axum): delivered once per event across a restart, retried with
//! backoff on 500, and a hung receiver neither blocks other writes to the
//! store nor the worker itself (per-request timeout).
//!
//! Webhook URLs come from secrets, which the server reads from environment
//! variables. Setting variables while other threads run is unsound, so one
//! receiver serves every test under per-test paths and all the variables are
//! set once, before any test does anything else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use muhurat::clock::{Clock, ManualClock};
use muhurat::notify::{self, Options, Worker};
use muhurat::secrets::{Scheme, Secrets};
use muhurat::store::{Backend, NewEvent, NewOutbox, Store, testing};
use serde_json::Value;
use sqlx::Row;

/// What the receiver got, per path (`kind/name`).
type Seen = Arc<Mutex<HashMap<String, Vec<Value>>>>;

struct Receiver {
    seen: Seen,
    port: u16,
}

const SECRETS: &[(&str, &str)] = &[
    ("restart-hook", "ok/restart"),
    ("flaky-hook", "flaky/retry"),
    ("hang-hook", "hang/hang"),
    ("link-hook", "ok/link"),
    ("unbound-hook", "ok/unbound"),
];

fn var_of(secret: &str) -> String {
    format!(
        "MUHURAT_TEST_NOTIFY_{}",
        secret.replace('-', "_").to_uppercase()
    )
}

/// Start the shared receiver and set every webhook variable, once.
fn receiver() -> &'static Receiver {
    static R: OnceLock<Receiver> = OnceLock::new();
    R.get_or_init(|| {
        let seen: Seen = Arc::default();
        let s2 = seen.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(l.local_addr().expect("addr").port())
                    .expect("send port");
                let app = Router::new().route(
                    "/{kind}/{name}",
                    post(
                        move |Path((kind, name)): Path<(String, String)>,
                              Json(body): Json<Value>| {
                            let seen = s2.clone();
                            async move {
                                let n = {
                                    let mut g = seen.lock().unwrap();
                                    let v = g.entry(format!("{kind}/{name}")).or_default();
                                    v.push(body);
                                    v.len()
                                };
                                match kind.as_str() {
                                    // Two failures, then success.
                                    "flaky" if n <= 2 => StatusCode::INTERNAL_SERVER_ERROR,
                                    "hang" => {
                                        tokio::time::sleep(Duration::from_secs(3600)).await;
                                        StatusCode::OK
                                    }
                                    _ => StatusCode::OK,
                                }
                            }
                        },
                    ),
                );
                axum::serve(l, app).await.expect("serve");
            });
        });
        let port = rx.recv().expect("receiver port");
        for (secret, path) in SECRETS {
            // SAFETY: runs once, inside OnceLock::get_or_init, before any test
            // has started a thread that reads the environment: every test
            // calls `receiver()` first.
            unsafe { std::env::set_var(var_of(secret), format!("http://127.0.0.1:{port}/{path}")) };
        }
        Receiver { seen, port }
    })
}

/// Every webhook secret bound to the receiver (http, loopback).
fn secrets() -> Secrets {
    let host = format!("127.0.0.1:{}", receiver().port);
    let mut all = Secrets::default();
    for (s, _) in SECRETS {
        all.bindings.extend(
            Secrets::one(s, &var_of(s), Scheme::Http, &[host.as_str()])
                .unwrap()
                .bindings,
        );
    }
    all
}

fn got(path: &str) -> Vec<Value> {
    receiver()
        .seen
        .lock()
        .unwrap()
        .get(path)
        .cloned()
        .unwrap_or_default()
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T19:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Append an event and queue its notification, as a transition would.
async fn notify_event(store: &Store, at: DateTime<Utc>, secret: &str, text: &str) -> i64 {
    let seq = store
        .append_event(&NewEvent {
            rollout_id: Some("kite-api-20261126-abc123".into()),
            at,
            kind: "paused".into(),
            why: text.into(),
            input: "{}".into(),
            state: "paused".into(),
            version: 1,
            ..Default::default()
        })
        .await
        .expect("append event");
    let o = NewOutbox {
        channel: format!("webhook:{secret}"),
        payload: serde_json::json!({"kind": "paused", "text": text}).to_string(),
        ..Default::default()
    };
    store.enqueue(seq, &o, at).await.expect("enqueue");
    // The same (event, channel) again, as a retried transition would: the
    // outbox's unique key keeps one row.
    store.enqueue(seq, &o, at).await.expect("enqueue again");
    seq
}

fn worker(store: &Store, clock: Arc<ManualClock>, opts: Options) -> Worker {
    Worker {
        store: store.clone(),
        policy: Arc::new(muhurat::policy::Policy::default()),
        secrets: secrets(),
        http: notify::client(),
        clock,
        opts,
    }
}

#[tokio::test]
async fn delivered_once_per_event_across_a_restart() {
    receiver();
    let (store, url, _dir) = testing::fresh(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::new(t0()));
    notify_event(&store, t0(), "restart-hook", "first").await;
    notify_event(&store, t0(), "restart-hook", "second").await;

    let r = worker(&store, clock.clone(), Options::default())
        .deliver_once()
        .await
        .unwrap();
    assert_eq!((r.sent, r.failed), (2, 0));
    drop(store);

    // "Restart": a new connection to the same database, a new worker.
    let store = Store::open(&url).await.expect("reopen");
    clock.advance(TimeDelta::minutes(1));
    let w = worker(&store, clock.clone(), Options::default());
    assert_eq!(
        w.deliver_once().await.unwrap().sent,
        0,
        "nothing is sent twice"
    );
    notify_event(&store, clock.now(), "restart-hook", "third").await;
    assert_eq!(w.deliver_once().await.unwrap().sent, 1);
    assert_eq!(w.deliver_once().await.unwrap().sent, 0);

    // Sent concurrently within a pass, so compare as a set.
    let mut texts: Vec<String> = got("ok/restart")
        .iter()
        .map(|b| b["text"].as_str().unwrap_or_default().to_string())
        .collect();
    texts.sort();
    assert_eq!(texts, ["first", "second", "third"]);
}

#[tokio::test]
async fn retried_with_backoff_on_500_until_delivered() {
    receiver();
    let (store, _url, _dir) = testing::fresh(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::new(t0()));
    notify_event(&store, t0(), "flaky-hook", "kite-api paused").await;
    let opts = Options::default();
    let w = worker(&store, clock.clone(), opts.clone());

    let r = w.deliver_once().await.unwrap();
    assert_eq!((r.sent, r.failed), (0, 1));
    // Not due again until the first backoff has passed.
    assert_eq!(w.deliver_once().await.unwrap(), notify::Report::default());
    clock.advance(notify::backoff(&opts, 0) - TimeDelta::milliseconds(1));
    assert_eq!(w.deliver_once().await.unwrap(), notify::Report::default());
    clock.advance(TimeDelta::milliseconds(1));
    assert_eq!(w.deliver_once().await.unwrap().failed, 1, "second 500");
    // The second wait is twice the first.
    clock.advance(notify::backoff(&opts, 0));
    assert_eq!(w.deliver_once().await.unwrap(), notify::Report::default());
    clock.advance(notify::backoff(&opts, 1) - notify::backoff(&opts, 0));
    assert_eq!(
        w.deliver_once().await.unwrap().sent,
        1,
        "third try succeeds"
    );
    clock.advance(TimeDelta::hours(1));
    assert_eq!(w.deliver_once().await.unwrap(), notify::Report::default());

    assert_eq!(got("flaky/retry").len(), 3);
    let row = sqlx::query("SELECT attempts, sent_at, last_error FROM outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(row.try_get::<i64, _>("attempts").unwrap(), 3);
    assert!(row.try_get::<Option<i64>, _>("sent_at").unwrap().is_some());
    assert_eq!(
        row.try_get::<Option<String>, _>("last_error").unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_receiver_is_cut_off_and_blocks_nothing() {
    receiver();
    let (store, _url, _dir) = testing::fresh(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::new(t0()));
    notify_event(&store, t0(), "hang-hook", "kite-api rolled back").await;
    let opts = Options {
        request_timeout: Duration::from_millis(700),
        ..Options::default()
    };
    let w = worker(&store, clock.clone(), opts);
    let began = Instant::now();
    let pass = tokio::spawn(async move { w.deliver_once().await });

    // While the webhook hangs, the store takes writes at once: the worker
    // holds no transaction across the HTTP call, so the controller's
    // transitions never wait for it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pass.is_finished(), "the receiver should still be hanging");
    let write = Instant::now();
    notify_event(&store, t0(), "link-hook", "meanwhile").await;
    assert!(
        write.elapsed() < Duration::from_millis(300),
        "a store write waited {:?} for the webhook",
        write.elapsed()
    );

    let r = pass.await.unwrap().unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "the pass took {:?}: the timeout did not cut the hung call off",
        began.elapsed()
    );
    assert_eq!(r.failed, 1);
    let err: Option<String> =
        sqlx::query("SELECT last_error FROM outbox WHERE channel = 'webhook:hang-hook'")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get("last_error")
            .unwrap();
    let err = err.expect("the failure is recorded");
    assert!(err.contains("no answer within"), "{err}");
    assert!(
        !err.contains("127.0.0.1"),
        "the webhook URL is a secret: {err}"
    );
    assert_eq!(got("hang/hang").len(), 1);
}

#[tokio::test]
async fn messages_link_the_dashboard_when_a_public_url_is_set() {
    receiver();
    let (store, _url, _dir) = testing::fresh(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let before = got("ok/link").len();
    notify_event(&store, t0(), "link-hook", "kite-api awaits approval").await;
    let opts = Options {
        public_url: Some("https://muhurat.internal/".into()),
        ..Options::default()
    };
    assert_eq!(
        worker(&store, clock, opts)
            .deliver_once()
            .await
            .unwrap()
            .sent,
        1
    );
    let all = got("ok/link");
    let body = all[before..]
        .iter()
        .find(|b| {
            b["text"]
                .as_str()
                .unwrap_or("")
                .starts_with("kite-api awaits")
        })
        .expect("delivered");
    assert_eq!(
        body,
        &serde_json::json!({"text": "kite-api awaits approval\nhttps://muhurat.internal/rollouts/kite-api-20261126-abc123"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_stops_when_told() {
    receiver();
    let (store, _url, _dir) = testing::fresh(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let opts = Options {
        poll_every: Duration::from_millis(50),
        ..Options::default()
    };
    let task = tokio::spawn(worker(&store, clock, opts).run(rx));
    tokio::time::sleep(Duration::from_millis(120)).await;
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stopped within 2 s")
        .unwrap();
}

/// A webhook URL that points outside its secret's binding (or outside the
/// policy's allowed_hosts) is never called: the row fails with a message
/// that names the secret, not the URL.
#[tokio::test]
async fn a_webhook_outside_its_binding_or_allowed_hosts_is_never_called() {
    receiver();
    let (store, _url, _dir) = testing::fresh(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let mut w = worker(&store, clock.clone(), Options::default());
    // Bound elsewhere: the URL in the environment points at the receiver.
    w.secrets.bindings.extend(
        Secrets::one(
            "unbound-hook",
            &var_of("unbound-hook"),
            Scheme::Http,
            &["127.0.0.1:1"],
        )
        .unwrap()
        .bindings,
    );
    notify_event(&store, t0(), "unbound-hook", "should not arrive").await;
    let r = w.deliver_once().await.unwrap();
    assert_eq!((r.sent, r.failed), (0, 1));
    let row = sqlx::query("SELECT last_error FROM outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let err: String = row.try_get("last_error").unwrap();
    assert!(
        err.contains("secret `unbound-hook` may not be sent to http://127.0.0.1:"),
        "{err}"
    );
    assert!(
        !err.contains("ok/unbound"),
        "the URL's path is the secret: {err}"
    );
    // Bound, but outside allowed_hosts.
    let (store, _url, _dir2) = testing::fresh(Backend::Sqlite).await;
    let mut w = worker(&store, clock, Options::default());
    w.policy = Arc::new(muhurat::policy::load("p", "allowed_hosts: [\"hooks.internal\"]").unwrap());
    notify_event(&store, t0(), "link-hook", "should not arrive either").await;
    let r = w.deliver_once().await.unwrap();
    assert_eq!((r.sent, r.failed), (0, 1));
    assert!(got("ok/unbound").is_empty());
    assert!(
        got("ok/link")
            .iter()
            .all(|v| !v.to_string().contains("should not arrive")),
        "{:?}",
        got("ok/link")
    );
}
