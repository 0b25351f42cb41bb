//! Metric gates against the real servers: VictoriaMetrics 1.79 and
//! Prometheus 2.42 from Debian, started per test on loopback.
//!
//! Data is pushed with explicit millisecond timestamps a few minutes before
//! the query time, then flushed, and VictoriaMetrics runs without its 30 s
//! latency offset; so every answer is determined by the fixture, not by
//! timing. (protocols.md §3.2–3.4.)

#[path = "support/victoria.rs"]
mod victoria;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use muhurat::clock::{Clock, SystemClock};
use muhurat::gates::prometheus::{Client, Credentials, Method, Options};
use muhurat::gates::{MetricsSource, Sample, Vars, Verdict, evaluate};
use muhurat::spec::{Baseline, Check, MinTraffic, NoData};

/// The query time: a whole minute safely in the past, so that every sample
/// of the fixture is at or before it and inside VM's lookback.
fn query_time() -> DateTime<Utc> {
    let now = SystemClock.now() - TimeDelta::minutes(2);
    now.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("valid time")
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Counters every 15 s over the 10 minutes up to `t`, per server:
/// per-step increments of 2xx and 5xx responses. Counters start well
/// before the 5m window, so `rate()` is exact (protocols.md §3.3: VM's
/// `increase()` treats a first sample inside the window differently).
fn counters(t: DateTime<Utc>, servers: &[(&str, u32, u32)]) -> String {
    let mut out = String::new();
    for step in 0..=40i64 {
        let at = ms(t - TimeDelta::seconds(15 * (40 - step)));
        for (server, ok, bad) in servers {
            let s = step;
            out.push_str(&format!(
                "http_requests_total{{server=\"{server}\",code=\"2xx\"}} {} {at}\n",
                s * i64::from(*ok)
            ));
            out.push_str(&format!(
                "http_requests_total{{server=\"{server}\",code=\"5xx\"}} {} {at}\n",
                s * i64::from(*bad)
            ));
        }
    }
    out
}

/// Blue (b1) serves 10 % errors; green (g1, g2) 0.5 %.
fn fleet(t: DateTime<Utc>) -> String {
    counters(t, &[("g1", 100, 0), ("g2", 99, 1), ("b1", 90, 10)])
}

/// Green canary, blue live.
fn green_canary() -> Vars {
    Vars {
        rollout: "r-42".into(),
        revision: "abc123".into(),
        canary_pool: "green".into(),
        live_pool: "blue".into(),
        canary_servers: vec!["g1".into(), "g2".into()],
        live_servers: vec!["b1".into()],
    }
}

/// The other orientation: the next rollout goes from green back to blue.
fn blue_canary() -> Vars {
    Vars {
        canary_pool: "blue".into(),
        live_pool: "green".into(),
        canary_servers: vec!["b1".into()],
        live_servers: vec!["g1".into(), "g2".into()],
        ..green_canary()
    }
}

const ERROR_RATIO: &str = r#"sum(rate(http_requests_total{server=~"{{canary_servers}}",code="5xx"}[5m]))
  / sum(rate(http_requests_total{server=~"{{ canary_servers }}"}[5m]))"#;
const TRAFFIC: &str = r#"sum(rate(http_requests_total{server=~"{{canary_servers}}"}[5m]))"#;

fn check(query: &str) -> Check {
    Check {
        name: "error-rate".into(),
        query: query.into(),
        min: None,
        max: Some(0.01),
        failure_limit: 1,
        no_data: NoData::Inconclusive,
        min_traffic: None,
        baseline: None,
    }
}

fn client(url: &str) -> Client {
    Client::new(url, None, Options::default()).expect("client")
}

#[tokio::test]
async fn error_ratio_passes_for_the_healthy_pool_and_fails_for_the_broken_one() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    vm.push(&fleet(t)).await;
    let c = client(&vm.url);

    let green = evaluate(&check(ERROR_RATIO), &c, &green_canary(), t).await;
    assert_eq!(green.verdict, Verdict::Pass, "{}", green.reason);
    let v = green.value.expect("a value");
    assert!((v - 0.005).abs() < 1e-9, "green ratio {v}");
    assert!(
        green.query.contains(r#"server=~"g1|g2""#),
        "query as sent: {}",
        green.query
    );
    assert!(!green.query.contains("{{"), "{}", green.query);

    // Same spec, other orientation: blue is now the canary.
    let blue = evaluate(&check(ERROR_RATIO), &c, &blue_canary(), t).await;
    assert_eq!(blue.verdict, Verdict::Fail, "{}", blue.reason);
    assert_eq!(blue.reason, "0.1 > max 0.01");
    assert!(blue.query.contains(r#"server=~"b1""#), "{}", blue.query);
}

#[tokio::test]
async fn live_servers_and_pool_names_render_for_both_orientations() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    vm.push(&format!(
        "deploy_info{{pool=\"green\",rev=\"abc123\",rollout=\"r-42\"}} 7 {}\n\
         deploy_info{{pool=\"blue\",rev=\"abc123\",rollout=\"r-42\"}} 3 {}\n",
        ms(t),
        ms(t)
    ))
    .await;
    vm.push(&fleet(t)).await;
    let c = client(&vm.url);
    let q = r#"sum(deploy_info{pool="{{canary_pool}}",rev="{{revision}}",rollout="{{rollout}}"})
        * 1000 + sum(rate(http_requests_total{server=~"{{live_servers}}"}[5m]))"#;
    let mut k = check(q);
    k.max = None;
    k.min = Some(0.0);
    // green canary: 7*1000 + live (blue) 100 req / 15 s.
    let e = evaluate(&k, &c, &green_canary(), t).await;
    let v = e.value.expect(&e.reason);
    assert!((v - (7000.0 + 100.0 / 15.0)).abs() < 1e-6, "{v}");
    // blue canary: 3*1000 + live (green) 200 req / 15 s.
    let e = evaluate(&k, &c, &blue_canary(), t).await;
    let v = e.value.expect(&e.reason);
    assert!((v - (3000.0 + 200.0 / 15.0)).abs() < 1e-6, "{v}");
}

#[tokio::test]
async fn server_names_with_regex_characters_match_only_themselves() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    // `g1xa` would match an unescaped `g1.a`.
    vm.push(&format!(
        "up_gauge{{server=\"g1.a\"}} 1 {0}\nup_gauge{{server=\"g1xa\"}} 100 {0}\n",
        ms(t)
    ))
    .await;
    let c = client(&vm.url);
    let vars = Vars {
        canary_servers: vec!["g1.a".into()],
        ..green_canary()
    };
    for q in [
        r#"sum(up_gauge{server=~"{{canary_servers}}"})"#,
        r#"sum(up_gauge{server=~'{{canary_servers}}'})"#,
        "sum(up_gauge{server=~`{{canary_servers}}`})",
    ] {
        let e = evaluate(&check(q), &c, &vars, t).await;
        assert_eq!(e.value, Some(1.0), "{q} → {} ({})", e.query, e.reason);
    }
}

#[tokio::test]
async fn no_data_yields_the_checks_no_data_verdict() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    vm.push(&fleet(t)).await;
    let c = client(&vm.url);

    // An empty result: nothing matches.
    let empty = r#"sum(rate(http_requests_total{server=~"nobody"}[5m]))"#;
    let answer = c.query(empty, t).await.expect("query");
    assert_eq!(answer.sample, Sample::NoData);
    for (no_data, want) in [
        (NoData::Inconclusive, Verdict::Inconclusive),
        (NoData::Fail, Verdict::Fail),
        (NoData::Pass, Verdict::Pass),
    ] {
        let k = Check {
            no_data,
            ..check(empty)
        };
        let e = evaluate(&k, &c, &green_canary(), t).await;
        assert_eq!(e.verdict, want, "{}", e.reason);
        assert_eq!(e.value, None);
        assert!(e.reason.starts_with("no data"), "{}", e.reason);
    }
}

#[tokio::test]
async fn nan_from_a_quiet_night_is_no_data_not_a_pass() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    // Flat counters: no request in the window, so errors/total is 0/0.
    vm.push(&counters(t, &[("g1", 0, 0), ("g2", 0, 0)])).await;
    let c = client(&vm.url);
    // The series exist (their rate is 0)...
    let traffic_q = TRAFFIC.replace("{{canary_servers}}", "g1|g2");
    let traffic = c.query(&traffic_q, t).await.expect("traffic");
    assert_eq!(traffic.sample, Sample::Value(0.0));
    // ...but the ratio is NaN, which VictoriaMetrics drops to an empty result.
    let e = evaluate(&check(ERROR_RATIO), &c, &green_canary(), t).await;
    assert_eq!(e.verdict, Verdict::Inconclusive, "{}", e.reason);
    assert_eq!(c.query("0/0", t).await.expect("0/0").sample, Sample::NoData);
}

#[tokio::test]
async fn infinity_is_a_number() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    // Errors counted, but the total counter never moved: x/0 = +Inf.
    vm.push(&counters(t, &[("g1", 0, 0)])).await;
    vm.push(&format!(
        "errs_total{{server=\"g1\"}} 0 {}\nerrs_total{{server=\"g1\"}} 30 {}\n",
        ms(t - TimeDelta::minutes(4)),
        ms(t)
    ))
    .await;
    let c = client(&vm.url);
    let q = r#"sum(rate(errs_total{server=~"{{canary_servers}}"}[5m])) / sum(rate(http_requests_total{server=~"{{canary_servers}}"}[5m]))"#;
    let e = evaluate(&check(q), &c, &green_canary(), t).await;
    assert_eq!(e.value, Some(f64::INFINITY), "{}", e.reason);
    assert_eq!(e.verdict, Verdict::Fail);
    assert_eq!(e.reason, "+Inf > max 0.01");

    let mut k = check("-1/0");
    k.max = None;
    k.min = Some(0.0);
    let e = evaluate(&k, &c, &green_canary(), t).await;
    assert_eq!(e.value, Some(f64::NEG_INFINITY));
    assert_eq!(
        (e.verdict, e.reason.as_str()),
        (Verdict::Fail, "-Inf < min 0")
    );
}

#[tokio::test]
async fn several_series_is_an_error_that_says_to_aggregate() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    vm.push(&fleet(t)).await;
    let c = client(&vm.url);
    let q = r#"rate(http_requests_total{code="5xx"}[5m])"#;
    let e = evaluate(&check(q), &c, &green_canary(), t).await;
    assert_eq!(e.verdict, Verdict::Error);
    assert_eq!(
        e.reason,
        "check `error-rate`: query failed: query returned 3 series (server=b1, g1, g2); \
         wrap it in sum() or max()"
    );
}

#[tokio::test]
async fn bad_promql_is_an_error_with_the_servers_text() {
    let vm = victoria::victoria_metrics(&[]).await;
    let c = client(&vm.url);
    let e = evaluate(
        &check("sum(rate(x{a=\"b\"[5m])"),
        &c,
        &green_canary(),
        query_time(),
    )
    .await;
    assert_eq!(e.verdict, Verdict::Error);
    assert!(
        e.reason.starts_with(
            "check `error-rate`: query failed: the server rejected the query (HTTP 422): "
        ),
        "{}",
        e.reason
    );
    // The parser's own words reach the person.
    assert!(e.reason.contains(r#"unexpected token "[""#), "{}", e.reason);
}

#[tokio::test]
async fn min_traffic_guard_makes_a_bad_value_inconclusive() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    vm.push(&fleet(t)).await;
    let c = client(&vm.url);
    // Blue canary: 10 % errors at 100 req / 15 s ≈ 6.67 req/s.
    let guarded = |min| Check {
        min_traffic: Some(MinTraffic {
            query: TRAFFIC.into(),
            min,
        }),
        ..check(ERROR_RATIO)
    };
    let e = evaluate(&guarded(50.0), &c, &blue_canary(), t).await;
    assert_eq!(e.verdict, Verdict::Inconclusive, "{}", e.reason);
    assert!(e.reason.starts_with("traffic 6.66"), "{}", e.reason);
    let v = e.value.expect("the value is still recorded");
    assert!((v - 0.1).abs() < 1e-9, "{v}");

    let e = evaluate(&guarded(5.0), &c, &blue_canary(), t).await;
    assert_eq!(e.verdict, Verdict::Fail, "{}", e.reason);
    assert!(e.reason.contains(">= min_traffic 5"), "{}", e.reason);

    // A guard over a pool with no series at all: no traffic data.
    let vars = Vars {
        canary_servers: vec!["ghost".into()],
        ..blue_canary()
    };
    let e = evaluate(&guarded(5.0), &c, &vars, t).await;
    assert_eq!(e.verdict, Verdict::Inconclusive, "{}", e.reason);
}

#[tokio::test]
async fn baseline_ratios_including_a_zero_baseline() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    vm.push(&format!(
        "p99_seconds{{pool=\"green\"}} 0.24 {0}\np99_seconds{{pool=\"blue\"}} 0.2 {0}\n\
         p99_seconds{{pool=\"idle\"}} 0 {0}\n",
        ms(t)
    ))
    .await;
    let c = client(&vm.url);
    let latency = |max_ratio, min_ratio, live: &str| Check {
        name: "latency-vs-live".into(),
        max: None,
        baseline: Some(Baseline {
            query: format!(r#"max(p99_seconds{{pool="{live}"}})"#),
            max_ratio,
            min_ratio,
        }),
        ..check(r#"max(p99_seconds{pool="{{canary_pool}}"})"#)
    };
    let live = r#"{{live_pool}}"#;
    // Green canary vs blue: 0.24 / 0.2 = 1.2.
    let e = evaluate(&latency(Some(1.25), None, live), &c, &green_canary(), t).await;
    assert_eq!(e.verdict, Verdict::Pass, "{}", e.reason);
    let e = evaluate(&latency(Some(1.1), None, live), &c, &green_canary(), t).await;
    assert_eq!(e.verdict, Verdict::Fail, "{}", e.reason);
    assert!(e.reason.contains("> max_ratio 1.1"), "{}", e.reason);
    // Other orientation: blue vs green = 0.833…
    let e = evaluate(&latency(Some(1.1), Some(0.9), live), &c, &blue_canary(), t).await;
    assert_eq!(e.verdict, Verdict::Fail, "{}", e.reason);
    assert!(e.reason.contains("< min_ratio 0.9"), "{}", e.reason);
    // A baseline of 0 or of nothing proves nothing.
    let e = evaluate(&latency(Some(1.2), None, "idle"), &c, &green_canary(), t).await;
    assert_eq!(e.verdict, Verdict::Inconclusive, "{}", e.reason);
    assert!(e.reason.contains("baseline is 0"), "{}", e.reason);
    let e = evaluate(&latency(Some(1.2), None, "nobody"), &c, &green_canary(), t).await;
    assert_eq!(e.verdict, Verdict::Inconclusive, "{}", e.reason);
    assert!(e.reason.contains("no baseline data"), "{}", e.reason);
}

#[tokio::test]
async fn answers_carry_the_server_date_and_get_works_too() {
    let vm = victoria::victoria_metrics(&[]).await;
    let c = Client::new(
        &format!("{}/", vm.url),
        None,
        Options {
            method: Method::Get,
            ..Options::default()
        },
    )
    .expect("client");
    let before = SystemClock.now();
    let a = c.query("1+1", query_time()).await.expect("query");
    assert_eq!(a.sample, Sample::Value(2.0));
    let date = a.server_date.expect("a Date header");
    // HTTP dates have whole seconds.
    assert!(
        (date - before).num_seconds().abs() <= 2,
        "{date} vs {before}"
    );
}

#[tokio::test]
async fn basic_auth_is_sent_and_a_wrong_password_is_a_clear_error() {
    let vm =
        victoria::victoria_metrics(&["-httpAuth.username=reader", "-httpAuth.password=s3cr3t"])
            .await;
    let creds = |p: &str| {
        Some(Credentials::Basic {
            username: "reader".into(),
            password: p.into(),
        })
    };
    let good = Client::new(&vm.url, creds("s3cr3t"), Options::default()).expect("client");
    let a = good.query("vector(3)", query_time()).await.expect("query");
    assert_eq!(a.sample, Sample::Value(3.0));

    let bad = Client::new(&vm.url, creds("wrong"), Options::default()).expect("client");
    let err = bad.query("vector(3)", query_time()).await.unwrap_err().0;
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("check analysis.auth"), "{err}");
    assert!(!err.contains("wrong") && !err.contains("s3cr3t"), "{err}");

    let none = client(&vm.url);
    assert!(none.query("1", query_time()).await.is_err());
}

#[tokio::test]
async fn unreachable_server_is_an_error() {
    let addr = victoria::closed_port();
    let c = client(&format!("http://{addr}"));
    let e = evaluate(&check("1"), &c, &green_canary(), query_time()).await;
    assert_eq!(e.verdict, Verdict::Error);
    assert!(
        e.reason.starts_with(&format!(
            "check `error-rate`: query failed: http://{addr}/api/v1/query cannot connect"
        )),
        "{}",
        e.reason
    );
}

#[tokio::test]
async fn a_listener_that_never_answers_times_out() {
    let (addr, task) = victoria::silent_listener().await;
    let c = Client::new(
        &format!("http://{addr}"),
        None,
        Options {
            timeout: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .expect("client");
    let started = Instant::now();
    let err = c.query("1", query_time()).await.unwrap_err().0;
    let took = started.elapsed();
    task.abort();
    assert!(err.contains("no complete answer within 0.3s"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn a_huge_answer_stops_at_the_size_limit() {
    // Real VictoriaMetrics, a query over 300 series, a 4 KiB limit.
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    let lines: String = (0..300)
        .map(|i| {
            format!(
                "wide{{instance=\"host-{i:04}.example.internal:9100\"}} {i} {}\n",
                ms(t)
            )
        })
        .collect();
    vm.push(&lines).await;
    let small = |url: &str| {
        Client::new(
            url,
            None,
            Options {
                max_body_bytes: 4096,
                timeout: Duration::from_secs(5),
                ..Options::default()
            },
        )
        .expect("client")
    };
    let err = small(&vm.url).query("wide", t).await.unwrap_err().0;
    assert!(err.contains("larger than the 4096 byte limit"), "{err}");
    assert!(err.contains("aggregate the query"), "{err}");
    // Aggregated, the same data is one small number.
    let a = small(&vm.url).query("count(wide)", t).await.expect("count");
    assert_eq!(a.sample, Sample::Value(300.0));

    // A body that never ends is cut at the limit, not read until the timeout.
    let (addr, task) = victoria::endless_listener().await;
    let started = Instant::now();
    let err = small(&format!("http://{addr}"))
        .query("1", t)
        .await
        .unwrap_err()
        .0;
    task.abort();
    assert!(err.contains("byte limit (stopped after"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_proxy_error_page_is_an_error_not_a_parse_failure() {
    let (addr, task) = victoria::canned_listener(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 31\r\n\
         Connection: close\r\n\r\n<html>upstream is down</html>\r\n",
    )
    .await;
    let err = client(&format!("http://{addr}"))
        .query("1", query_time())
        .await
        .unwrap_err()
        .0;
    task.abort();
    assert_eq!(
        err,
        "HTTP 502 Bad Gateway with a body that is not a Prometheus API answer: \
         <html>upstream is down</html>"
    );
}

/// Prometheus answers scalars as `scalar`, NaN as "NaN", and bad PromQL as
/// 400 bad_data, where VictoriaMetrics answers vector / empty / 422.
#[tokio::test]
async fn prometheus_shapes_are_understood() {
    let prom = victoria::prometheus().await;
    let c = client(&prom.url);
    let t = query_time();
    let value = |q: &'static str| {
        let c = c.clone();
        async move { c.query(q, t).await.map(|a| a.sample) }
    };
    assert_eq!(value("scalar(vector(0.5))").await, Ok(Sample::Value(0.5)));
    assert_eq!(value("1+1").await, Ok(Sample::Value(2.0)));
    assert_eq!(value("vector(1)").await, Ok(Sample::Value(1.0)));
    assert_eq!(value("1/0").await, Ok(Sample::Value(f64::INFINITY)));
    assert_eq!(value("-1/0").await, Ok(Sample::Value(f64::NEG_INFINITY)));
    assert_eq!(value("0/0").await, Ok(Sample::NoData), "scalar NaN");
    assert_eq!(
        value("vector(0)/vector(0)").await,
        Ok(Sample::NoData),
        "vector NaN"
    );
    assert_eq!(value("scalar(nonexistent)").await, Ok(Sample::NoData));
    assert_eq!(value("nonexistent").await, Ok(Sample::NoData));

    let two = r#"label_replace(vector(1), "server", "g1", "", "") or label_replace(vector(2), "server", "g2", "", "")"#;
    let err = value(two).await.unwrap_err().0;
    assert_eq!(
        err,
        "query returned 2 series (server=g1, g2); wrap it in sum() or max()"
    );

    let err = value("sum(").await.unwrap_err().0;
    assert!(
        err.starts_with(
            "the server rejected the query (HTTP 400, bad_data): invalid parameter \"query\""
        ),
        "{err}"
    );
    let err = value("vector(1)[5m:1m]").await.unwrap_err().0;
    assert!(err.contains("range vector"), "{err}");

    // A rendered regex with an escaped dot is valid PromQL inside "…" (a
    // single backslash would be an unknown escape to Prometheus' parser).
    let vars = Vars {
        canary_servers: vec!["g1.a".into()],
        ..green_canary()
    };
    let e = evaluate(
        &check(r#"count(up{server=~"{{canary_servers}}"})"#),
        &c,
        &vars,
        t,
    )
    .await;
    assert_eq!(e.verdict, Verdict::Inconclusive, "{}", e.reason);
    assert!(e.query.contains(r#""g1\\.a""#), "{}", e.query);
    assert!(e.server_date.is_some());
}

/// How long one evaluation takes against a real VictoriaMetrics on
/// loopback: a guarded check with a baseline (three queries). The rollback
/// budget is one interval plus well under a second; this is the part the
/// gate contributes. Run with `--nocapture` to see the numbers.
#[tokio::test]
async fn one_evaluation_is_a_few_milliseconds() {
    let vm = victoria::victoria_metrics(&[]).await;
    let t = query_time();
    vm.push(&fleet(t)).await;
    let c = client(&vm.url);
    let k = Check {
        min_traffic: Some(MinTraffic {
            query: TRAFFIC.into(),
            min: 1.0,
        }),
        baseline: Some(Baseline {
            query: ERROR_RATIO.replace("canary_servers", "live_servers"),
            max_ratio: Some(2.0),
            min_ratio: None,
        }),
        ..check(ERROR_RATIO)
    };
    let mut took = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let e = evaluate(&k, &c, &green_canary(), t).await;
        took.push(started.elapsed());
        assert_eq!(e.verdict, Verdict::Pass, "{}", e.reason);
    }
    took.sort();
    let p50 = took[took.len() / 2];
    let p99 = took[took.len() * 99 / 100];
    println!(
        "evaluate (3 queries, VictoriaMetrics on loopback): p50 {p50:?}, p99 {p99:?}, max {:?}",
        took[took.len() - 1]
    );
    assert!(p99 < Duration::from_millis(250), "p99 {p99:?}");
}
