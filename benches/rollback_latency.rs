//! Rollback latency: from a failing sample becoming queryable in a real
//! VictoriaMetrics to the canary's weight reading 0 on a real HAProxy (and,
//! separately, to `rolled_back` recorded once the controller has confirmed
//! it), with the real controller loop (`Controller::run`) on the system clock.
//!
//! `cargo bench --bench rollback_latency` (needs
//! `apt-get install -y haproxy victoria-metrics`).
//! `ROLLBACK_LATENCY_ITERATIONS` (default 20, per interval) overrides the
//! count, `ROLLBACK_LATENCY_INTERVALS` (default `2,10`) the check intervals
//! measured, in seconds, and `ROLLBACK_LATENCY_DRIFT_MS` (default 10000,
//! the production default) the controller's `drift_interval` — which the
//! checks' cadence must not depend on.
//!
//! Each iteration starts a fresh rollout of a new revision: 10% is raised
//! and confirmed, the rollout bakes (1h) with its one check (the canary's 5xx
//! ratio over `[5m]`, guarded by `min_traffic`) passing every 10 s
//! (`query_delay: 0s`; VictoriaMetrics runs with `-search.latencyOffset=0s`).
//! Then, at a random offset within the check interval, a sample that shows
//! the canary answering 503 to everything is pushed and flushed; the clock
//! starts when the flush returns. The admin socket is polled every 10 ms.
//! The calendar is a test calendar whose one segment trades one minute a
//! day, 12 h from now, and the spec says `evidence: always`: every instant of
//! the run is permitted and every evaluation counts.
//!
//! Each revision has its own series (`revision="{{revision}}"`), so one
//! iteration's failure does not linger in the next one's `rate()[5m]`.

#[path = "../tests/support/haproxy.rs"]
mod haproxy_support;
#[path = "../tests/support/victoria.rs"]
mod victoria;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use haproxy_support::{Haproxy, NamedServer, config, free_port, servers};
use muhurat::clock::{Clock, SystemClock};
use muhurat::controller::{Calendars, Config, Controller, StartOutcome, StartRequest};
use muhurat::engine::{Rollout, State};
use muhurat::gates::prometheus::PrometheusFactory;
use muhurat::store::Store;
use muhurat::traffic::haproxy::{HaproxyFactory, HaproxyLimits};

/// The target: p99 within one check interval plus a second.
const TARGET_SLACK: Duration = Duration::from_secs(1);
/// The simulated exporter is scraped this often.
const SCRAPE: Duration = Duration::from_secs(15);
/// Canary traffic, requests per second.
const CANARY_RPS: f64 = 20.0;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest-rank percentile.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn summary(label: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let p99 = percentile(&v, 99.0);
    println!(
        "{label:<36} median {:>9}   p99 {:>9}   min {:>9}   max {:>9}",
        secs(percentile(&v, 50.0)),
        secs(p99),
        secs(v[0]),
        secs(v[v.len() - 1])
    );
    p99
}

/// A uniformly random duration in `[0, max)`.
fn random_below(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("random bytes");
    let x = u64::from_le_bytes(b) as f64 / (u64::MAX as f64 + 1.0);
    max.mul_f64(x)
}

/// A UTC calendar whose one segment trades one minute a day, 12 h from now:
/// every instant of the run is permitted and none is in a session.
fn calendar(dir: &Path) {
    let now = SystemClock.now();
    let open = now + TimeDelta::hours(12);
    let close = open + TimeDelta::minutes(1);
    let text = format!(
        "name: bench\nversion: \"1\"\ntimezone: UTC\nvalid_from: {}\nvalid_until: {}\nsegments:\n  equity: {{days: [mon, tue, wed, thu, fri, sat, sun], open: \"{:02}:{:02}\", close: \"{:02}:{:02}\"}}\n",
        now.date_naive() - TimeDelta::days(2),
        now.date_naive() + TimeDelta::days(60),
        open.hour(),
        open.minute(),
        close.hour(),
        close.minute(),
    );
    std::fs::write(dir.join("bench.yaml"), text).expect("write the test calendar");
}

fn spec(sock: &Path, vm: &str, interval: Duration) -> String {
    let sel = r#"pool="{{canary_pool}}",revision="{{revision}}""#;
    format!(
        r#"name: bench
calendar: bench
windows: {{timezone: UTC}}
traffic:
  haproxy:
    endpoints: ["unix:{sock}"]
    backend: kite_api
    pools: {{blue: [b1], green: [g1]}}
analysis:
  prometheus: {vm}
  interval: {interval}s
  query_delay: 0s
  evidence: always
  min_passes: 1
  inconclusive_limit: 10
  checks:
    - name: error-rate
      query: 'sum(rate(http_requests_total{{{sel},code=~"5.."}}[5m])) / sum(rate(http_requests_total{{{sel}}}[5m]))'
      max: 0.01
      min_traffic:
        query: 'sum(rate(http_requests_total{{{sel}}}[5m]))'
        min: 1
steps:
  - set_weight: 10
  - bake: {{duration: 1h}}
  - set_weight: 100
"#,
        sock = sock.display(),
        interval = interval.as_secs()
    )
}

/// The canary's exporter for one revision: 200 and 503 counters.
struct Exporter {
    revision: String,
    ok: f64,
    errors: f64,
    error_ratio: f64,
    last: DateTime<Utc>,
}

impl Exporter {
    fn sample(&self, at: DateTime<Utc>) -> String {
        let ms = at.timestamp_millis();
        let r = &self.revision;
        format!(
            "http_requests_total{{pool=\"blue\",revision=\"{r}\",code=\"200\"}} {} {ms}\n\
             http_requests_total{{pool=\"blue\",revision=\"{r}\",code=\"503\"}} {} {ms}\n",
            self.ok, self.errors
        )
    }

    /// Requests served from the last sample until `at`, then a sample at `at`.
    fn serve_until(&mut self, at: DateTime<Utc>) -> String {
        let n = CANARY_RPS * (at - self.last).num_milliseconds() as f64 / 1000.0;
        self.ok += n * (1.0 - self.error_ratio);
        self.errors += n * self.error_ratio;
        self.last = at;
        self.sample(at)
    }

    /// Six minutes of healthy history up to `now`, so `rate()[5m]` is exact
    /// from the first evaluation.
    fn new(revision: String, now: DateTime<Utc>) -> (Exporter, String) {
        let start = now - TimeDelta::minutes(6);
        let mut e = Exporter {
            revision,
            ok: 1_000_000.0,
            errors: 200.0,
            error_ratio: 0.002,
            last: start,
        };
        let mut lines = e.sample(start);
        let mut at = start;
        while at + TimeDelta::seconds(15) <= now {
            at += TimeDelta::seconds(15);
            lines.push_str(&e.serve_until(at));
        }
        (e, lines)
    }
}

async fn rollout(c: &Controller, id: &str) -> Rollout {
    let rec = c.store().rollout(id).await.unwrap().unwrap();
    serde_json::from_str(&rec.data).unwrap()
}

async fn wait_for(
    c: &Controller,
    id: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&Rollout) -> bool,
) -> Rollout {
    let deadline = Instant::now() + within;
    loop {
        let r = rollout(c, id).await;
        if ok(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "rollout {id}: not {what} within {within:?}: state {:?}, {:?}",
            r.state,
            r.waiting_for
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Poll the check's query, sent as the controller sends it (a POST form with
/// `time` = now), every 10 ms until it shows the failure: the moment the
/// failing sample became queryable. (VictoriaMetrics 1.79 answers a query
/// for "now" from data at least ~1 s old even after `/internal/force_flush`
/// and with `-search.disableCache`; only `nocache=1`, which the controller
/// does not send, sees it sooner. The flush returning is not the origin.)
async fn queryable(vm: &str, revision: &str) -> (Instant, DateTime<Utc>) {
    let sel = format!(r#"pool="blue",revision="{revision}""#);
    let query = format!(
        r#"sum(rate(http_requests_total{{{sel},code=~"5.."}}[5m])) / sum(rate(http_requests_total{{{sel}}}[5m]))"#
    );
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let now = SystemClock.now();
        let time = format!("{:.3}", now.timestamp_millis() as f64 / 1000.0);
        let body: serde_json::Value = http
            .post(format!("{vm}/api/v1/query"))
            .form(&[("query", query.as_str()), ("time", time.as_str())])
            .send()
            .await
            .expect("query VictoriaMetrics")
            .json()
            .await
            .expect("a JSON answer");
        let value = body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        if value.is_some_and(|v| v > 0.01) {
            return (Instant::now(), now);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the failing sample did not become queryable within 10 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The canary server's current weight, from `get weight`.
async fn canary_weight(h: &Haproxy) -> u32 {
    let out = h.cmd("get weight kite_api/b1").await.expect("get weight");
    out.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `get weight` answer: {out:?}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iterations = env_or("ROLLBACK_LATENCY_ITERATIONS", 20).max(1);
    let drift_ms = env_or("ROLLBACK_LATENCY_DRIFT_MS", 10_000).max(50);
    let intervals: Vec<u64> = std::env::var("ROLLBACK_LATENCY_INTERVALS")
        .unwrap_or_else(|_| "2,10".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // `RUST_LOG=muhurat=debug` shows the controller's passes with their times.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let vm = victoria::victoria_metrics(&[]).await;
    let b1 = NamedServer::start("b1").await;
    let g1 = NamedServer::start("g1").await;
    let lines = servers(&[("b1", b1.port, 0, ""), ("g1", g1.port, 100, "")]);
    let haproxy = Haproxy::start(&config(
        "http",
        free_port(),
        "kite_api",
        "roundrobin",
        &lines,
    ))
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    calendar(dir.path());
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    let store = Store::open(&db).await.expect("open SQLite");
    let c = Controller::new(
        store,
        Arc::new(Calendars::load(dir.path()).expect("load the test calendar")),
        Arc::new(HaproxyFactory::new(HaproxyLimits::default())),
        Arc::new(PrometheusFactory::default()),
        Arc::new(SystemClock),
        Config {
            drift_interval: TimeDelta::milliseconds(drift_ms as i64),
            journal: dir.path().join("journal"),
            // This machine's kernel reports its clock unsynchronised.
            allow_unsynced_clock: true,
            ..Config::default()
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(c.clone().run(stop_rx));
    let mut met = true;
    for interval_s in intervals {
        let interval = Duration::from_secs(interval_s);
        let yaml = spec(&haproxy.sock, &vm.url, interval);
        let mut to_zero = Vec::new();
        let mut to_recorded = Vec::new();
        let mut waits = Vec::new();
        let mut reactions = Vec::new();
        for i in 0..iterations {
            let revision = format!("r{interval_s}-{i}");
            let (exporter, history) = Exporter::new(revision.clone(), SystemClock.now());
            vm.push(&history).await;
            let exporter = Arc::new(tokio::sync::Mutex::new(exporter));
            // The scraper: a sample every 15 s, as long as the iteration runs.
            let scraper = {
                let exporter = exporter.clone();
                let url = vm.url.clone();
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    loop {
                        tokio::time::sleep(SCRAPE).await;
                        let mut e = exporter.lock().await;
                        let body = e.serve_until(SystemClock.now());
                        let _ = http
                            .post(format!("{url}/api/v1/import/prometheus"))
                            .body(body)
                            .send()
                            .await;
                        let _ = http.get(format!("{url}/internal/force_flush")).send().await;
                    }
                })
            };

            let out = c
                .start(StartRequest {
                    spec_yaml: yaml.clone(),
                    revision: revision.clone(),
                    initiator: "ci".into(),
                    principal: "ci".into(),
                })
                .await
                .expect("start");
            let StartOutcome::Created(rec) = out else {
                panic!("expected a new rollout")
            };
            let id = rec.id;
            // 10% confirmed, baking, and the check has passed at least once.
            let r = wait_for(
                &c,
                &id,
                Duration::from_secs(30),
                "baking with a pass",
                |r| {
                    r.state == State::Baking
                        && r.confirmed == 10
                        && r.checks.get("error-rate").is_some_and(|s| s.passes >= 1)
                },
            )
            .await;
            assert!(
                canary_weight(&haproxy).await > 0,
                "the canary carries traffic"
            );
            assert_eq!(r.checks["error-rate"].failure_streak, 0);

            // A random moment within the interval: the canary starts failing.
            tokio::time::sleep(random_below(interval)).await;
            {
                let mut e = exporter.lock().await;
                // Everything since the last scrape (and from now on) is a 503;
                // at least 15 s worth, as a scrape that follows a failure would
                // show.
                let since = (SystemClock.now() - e.last).num_milliseconds().max(1) as f64;
                e.errors += CANARY_RPS * (15_000.0 - since).max(0.0) / 1000.0;
                e.error_ratio = 1.0;
                let body = e.serve_until(SystemClock.now());
                vm.push(&body).await; // import, then /internal/force_flush
            }
            let (t_queryable, queryable_wall) = queryable(&vm.url, &revision).await;
            let (zero_at, zero_wall) = loop {
                if canary_weight(&haproxy).await == 0 {
                    break (Instant::now(), SystemClock.now());
                }
                assert!(
                    t_queryable.elapsed() < Duration::from_secs(60),
                    "iteration {i}: no rollback within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let r = wait_for(&c, &id, Duration::from_secs(30), "rolled back", |r| {
                r.state == State::RolledBack
            })
            .await;
            let recorded_at = Instant::now();
            scraper.abort();
            assert_eq!(r.confirmed, 0);
            // The evaluation that saw the failure: its scheduled instant splits
            // the latency into waiting for it and reacting to it.
            let failed_at = c
                .store()
                .check_results(&id, 1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|x| x.verdict == "fail")
                .map(|x| x.at)
                .min()
                .unwrap_or_else(|| panic!("iteration {i}: rolled back without a failed check"));
            let latency = zero_at - t_queryable;
            let wait = (failed_at - queryable_wall).to_std().unwrap_or_default();
            let react = (zero_wall - failed_at).to_std().unwrap_or_default();
            eprintln!(
                "iteration {i:>2}: weight 0 after {} (waiting for the evaluation {}, then {})",
                secs(latency),
                secs(wait),
                secs(react)
            );
            to_zero.push(latency);
            to_recorded.push(recorded_at - t_queryable);
            waits.push(wait);
            reactions.push(react);
        }
        println!(
            "rollback latency, {iterations} rollouts, check interval {interval_s} s, drift interval {drift_ms} ms, real VictoriaMetrics + HAProxy:"
        );
        let p99 = summary("  failing sample -> weight 0", to_zero);
        summary("  failing sample -> rolled_back", to_recorded);
        summary("  (of which: waiting for the check)", waits);
        summary("  (of which: check -> weight 0)", reactions);
        let target = interval + TARGET_SLACK;
        if p99 < target {
            println!("  target: p99 under {} — met", secs(target));
        } else {
            println!("  target: p99 under {} — NOT met", secs(target));
            met = false;
        }
    }
    let _ = stop_tx.send(true);
    let _ = controller.await;
    if !met {
        std::process::exit(1);
    }
}
