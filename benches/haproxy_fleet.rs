//! Weight change across a fleet of 20 real HAProxy processes on this
//! machine: time from decision (calling `apply`) to confirmed everywhere,
//! with the write phase and the confirming double read (which includes the
//! 250 ms interval) reported separately.
//!
//! `cargo bench --bench haproxy_fleet` (needs `apt-get install -y haproxy`).
//! `HAPROXY_FLEET_ITERATIONS` (default 100) and `HAPROXY_FLEET_SIZE`
//! (default 20) override the defaults.

#[path = "../tests/support/haproxy.rs"]
mod haproxy_support;

use std::time::{Duration, Instant};

use haproxy_support::{Haproxy, NamedServer, config, free_port, servers};
use muhurat::spec::Pool;
use muhurat::traffic::gate::testing::raise;
use muhurat::traffic::haproxy::{HaproxyBackend, HaproxyLimits};
use muhurat::traffic::{Orientation, TrafficBackend};

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

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn summary(label: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{label:<28} median {:>9}   p99 {:>9}   min {:>9}   max {:>9}",
        ms(percentile(&v, 50.0)),
        ms(percentile(&v, 99.0)),
        ms(v[0]),
        ms(v[v.len() - 1])
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fleet = env_or("HAPROXY_FLEET_SIZE", 20);
    let iterations = env_or("HAPROXY_FLEET_ITERATIONS", 100);
    let mut backends = Vec::new();
    for n in ["b1", "b2", "g1", "g2"] {
        backends.push(NamedServer::start(n).await);
    }
    let server_lines = servers(&[
        ("b1", backends[0].port, 100, ""),
        ("b2", backends[1].port, 100, ""),
        ("g1", backends[2].port, 0, ""),
        ("g2", backends[3].port, 0, ""),
    ]);
    let mut procs = Vec::new();
    for _ in 0..fleet {
        procs.push(
            Haproxy::start(&config(
                "http",
                free_port(),
                "kite_api",
                "roundrobin",
                &server_lines,
            ))
            .await,
        );
    }
    let pool = |name: &str, s: &[&str]| Pool {
        name: name.into(),
        servers: s.iter().map(|x| x.to_string()).collect(),
    };
    let orientation = Orientation {
        canary: pool("green", &["g1", "g2"]),
        live: pool("blue", &["b1", "b2"]),
    };
    let backend = HaproxyBackend::new(
        procs.iter().map(Haproxy::unix).collect(),
        "kite_api",
        orientation,
        HaproxyLimits::default(),
    );

    let shares = [5u32, 10, 50, 100, 0];
    let (mut total, mut write, mut confirm, mut reads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut unconfirmed = 0;
    for i in 0..iterations {
        let share = shares[i % shares.len()];
        let t = Instant::now();
        let (report, timings) = backend
            .apply_timed(share, &raise(share))
            .await
            .expect("apply");
        total.push(t.elapsed());
        write.push(timings.write);
        confirm.push(timings.confirm);
        if !report.confirmed {
            unconfirmed += 1;
            eprintln!("not confirmed: {}", report.detail);
        }
        let t = Instant::now();
        let reading = backend.read().await.expect("read");
        reads.push(t.elapsed());
        assert_eq!(reading.shares().len(), fleet, "every endpoint reads");
    }
    println!(
        "haproxy_fleet: {fleet} HAProxy processes (UNIX admin sockets), 4 servers each, {iterations} weight changes \
         cycling {shares:?}%, {} logical CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    summary("decision → confirmed", total);
    summary("  write phase", write);
    summary("  confirm (2 reads, 250 ms)", confirm);
    summary("read() across the fleet", reads);
    println!("unconfirmed: {unconfirmed} of {iterations}");
    assert_eq!(
        unconfirmed, 0,
        "every change must confirm on an idle machine"
    );
}
