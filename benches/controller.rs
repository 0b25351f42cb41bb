//! 1,000 active rollouts in one controller on SQLite: resident memory, CPU
//! while idle, and the time of one controller pass over all of them.
//! Run: cargo bench --bench controller
//!
//! Each rollout has its own in-memory traffic target (the HAProxy fleet
//! benchmark measures the wire separately) and a scripted metrics source, so
//! the figures are the controller's and the store's own cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use muhurat::clock::ManualClock;
use muhurat::controller::testing::ScriptedMetrics;
use muhurat::controller::{Calendars, Config, Controller, StartOutcome, StartRequest};
use muhurat::gates::Sample;
use muhurat::store::{Backend, testing};
use muhurat::traffic::memory::MemoryFactory;

const N: usize = 1000;

fn spec(i: usize) -> String {
    format!(
        r#"name: svc-{i}
calendar: nse
traffic:
  haproxy:
    endpoints: ["unix:/run/haproxy/{i}.sock"]
    backend: be_{i}
    pools: {{blue: [b1, b2], green: [g1, g2]}}
analysis:
  prometheus: http://127.0.0.1:8428
  interval: 1m
  checks: [{{name: errors, query: "sum(rate(errors[5m]))", max: 0.01}}]
steps:
  - set_weight: 5
  - bake: {{sessions: 1}}
  - approval: {{min: 1}}
  - set_weight: 100
"#
    )
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of this process, in clock ticks (100 Hz on Linux).
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

async fn timed(c: &Arc<Controller>, n: usize) -> (Duration, Duration) {
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let r = c.pass().await.unwrap();
        c.settled().await;
        times.push(t.elapsed());
        assert_eq!(r.rollouts, N);
    }
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (store, _url, dir) = testing::fresh(Backend::Sqlite).await;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cals = Arc::new(Calendars::load(&root.join("rollouts/calendars")).unwrap());
        let metrics = ScriptedMetrics::new(|_, _| Ok(Sample::Value(0.001)));
        // A manual clock makes the figures independent of the time of day
        // the benchmark runs at.
        let clock = Arc::new(ManualClock::new(t("2026-11-26T17:00:00+05:30")));
        let journal = dir
            .as_ref()
            .map(|d| d.path().join("journal"))
            .unwrap_or_default();
        let cfg = Config {
            drift_interval: TimeDelta::seconds(10),
            measure_db_skew: false,
            journal,
            // This machine's kernel reports its clock unsynchronised.
            allow_unsynced_clock: true,
            ..Config::default()
        };
        let c = Controller::new(
            store,
            cals,
            Arc::new(MemoryFactory::default()),
            Arc::new(metrics),
            clock.clone(),
            cfg,
        );
        let t0 = Instant::now();
        for i in 0..N {
            let out = c
                .start(StartRequest {
                    spec_yaml: spec(i),
                    revision: "r1".into(),
                    initiator: "ci".into(),
                    principal: "ci".into(),
                })
                .await
                .unwrap();
            assert!(matches!(out, StartOutcome::Created(_)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!(
            "created {N} rollouts in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        // The window opens at 00:25: every rollout raises to 5%.
        c.pass().await.unwrap();
        clock.set(t("2026-11-27T00:30:00+05:30"));
        for _ in 0..3 {
            c.pass().await.unwrap();
            c.settled().await;
        }
        // Friday 10:00, in session: all 1,000 baking at 5%.
        clock.set(t("2026-11-27T10:00:00+05:30"));
        c.pass().await.unwrap();
        c.settled().await;
        // A pass where nothing is due but the drift reads.
        let mut quiet = Vec::new();
        for _ in 0..10 {
            clock.advance(TimeDelta::seconds(11));
            let t = Instant::now();
            c.pass().await.unwrap();
            c.settled().await;
            quiet.push(t.elapsed());
        }
        quiet.sort();
        let tq = Instant::now();
        let rows = c.store().active_for_pass().await.unwrap();
        let q_ms = tq.elapsed().as_secs_f64() * 1000.0;
        let tp = Instant::now();
        for r in &rows {
            let _: muhurat::engine::Rollout = serde_json::from_str(&r.data).unwrap();
        }
        let parse_ms = tp.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "  (of which: loading the rows {q_ms:.1} ms, parsing their state {parse_ms:.1} ms)"
        );
        // A pass where every rollout's checks are due (worst case).
        clock.advance(TimeDelta::minutes(1));
        let (busy_med, _) = timed(&c, 1).await;
        let states = c.store().rollouts(true, 10_000).await.unwrap();
        let baking = states.iter().filter(|r| r.state == "baking").count();
        // Idle: the real loop for 20 s of wall time, nothing due.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let cpu0 = cpu_ticks();
        let w0 = Instant::now();
        let task = tokio::spawn(c.clone().run(stop_rx));
        tokio::time::sleep(Duration::from_secs(20)).await;
        let cpu = (cpu_ticks() - cpu0) as f64 / 100.0;
        let wall = w0.elapsed().as_secs_f64();
        let _ = stop_tx.send(true);
        let _ = task.await;
        println!("controller bench, {N} active rollouts on SQLite ({baking} baking):");
        println!(
            "  pass, nothing due but drift reads (median of 10): {:.1} ms   (max {:.1} ms)",
            quiet[5].as_secs_f64() * 1000.0,
            quiet[9].as_secs_f64() * 1000.0
        );
        println!(
            "  pass, every rollout's checks due:                 {:.1} ms",
            busy_med.as_secs_f64() * 1000.0
        );
        println!(
            "  resident memory:                                  {:.1} MiB",
            rss_kib() as f64 / 1024.0
        );
        println!(
            "  CPU while idle (the loop, drift every 10 s):      {:.2}% of one core over {:.0} s",
            100.0 * cpu / wall,
            wall
        );
    });
}
