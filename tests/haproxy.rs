//! The HAProxy traffic backend against real HAProxy processes on loopback
//! (see tests/support/haproxy.rs). Needs `apt-get install -y haproxy`;
//! without it every test fails with that instruction.

#[path = "support/haproxy.rs"]
mod haproxy_support;

use std::time::{Duration, Instant};

use haproxy_support::{Haproxy, NamedServer, config, free_port, servers, split};
use muhurat::spec::{Endpoint, Pool, Traffic};
use muhurat::traffic::gate::testing::raise;
use muhurat::traffic::haproxy::{
    HaproxyBackend, HaproxyFactory, HaproxyLimits, parse_servers_state,
};
use muhurat::traffic::{Orientation, TrafficBackend, TrafficFactory};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const BE: &str = "kite_api";

fn orient(canary: &[&str], live: &[&str]) -> Orientation {
    let pool = |name: &str, s: &[&str]| Pool {
        name: name.into(),
        servers: s.iter().map(|x| x.to_string()).collect(),
    };
    Orientation {
        canary: pool("green", canary),
        live: pool("blue", live),
    }
}

fn backend(endpoints: Vec<Endpoint>, o: Orientation) -> HaproxyBackend {
    HaproxyBackend::new(endpoints, BE, o, HaproxyLimits::default())
}

/// Four named servers: live b1, b2 and canary g1, g2.
async fn four() -> Vec<NamedServer> {
    let mut v = Vec::new();
    for n in ["b1", "b2", "g1", "g2"] {
        v.push(NamedServer::start(n).await);
    }
    v
}

/// The usual blue/green config: live at 100 each, the idle pool at 0.
fn blue_green(fe: u16, s: &[NamedServer], balance: &str, opts: &str) -> String {
    config(
        "http",
        fe,
        BE,
        balance,
        &servers(&[
            ("b1", s[0].port, 100, opts),
            ("b2", s[1].port, 100, opts),
            ("g1", s[2].port, 0, opts),
            ("g2", s[3].port, 0, opts),
        ]),
    )
}

fn canary_pct(
    counts: &std::collections::BTreeMap<String, usize>,
    canary: &[&str],
    n: usize,
) -> f64 {
    let c: usize = canary
        .iter()
        .map(|s| counts.get(*s).copied().unwrap_or(0))
        .sum();
    100.0 * c as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_are_confirmed_by_read_back_and_by_the_real_split() {
    let s = four().await;
    let (fe1, fe2) = (free_port(), free_port());
    let h1 = Haproxy::start(&blue_green(fe1, &s, "roundrobin", "")).await;
    let h2 = Haproxy::start(&blue_green(fe2, &s, "roundrobin", "")).await;
    // One endpoint over the UNIX socket, the other over TCP.
    let b = backend(
        vec![h1.unix(), h2.tcp()],
        orient(&["g1", "g2"], &["b1", "b2"]),
    );
    const N: usize = 2000;
    for p in [5u32, 10, 50, 100, 0] {
        let report = b.apply(p, &raise(p)).await.expect("apply");
        assert!(report.confirmed, "{p}%: {}", report.detail);
        assert!(
            (report.effective_share - f64::from(p)).abs() <= 0.1,
            "{p}%: {report:?}"
        );
        assert_eq!(report.endpoints.len(), 2);
        let reading = b.read().await.expect("read");
        for (ep, share) in reading.shares() {
            assert!(
                (share - f64::from(p)).abs() <= 0.1,
                "{p}%: {ep} reads {share}"
            );
        }
        for fe in [fe1, fe2] {
            let counts = split(fe, N).await;
            assert_eq!(
                counts.get("(failed)"),
                None,
                "{p}%: failed requests: {counts:?}"
            );
            let got = canary_pct(&counts, &["g1", "g2"], N);
            assert!(
                (got - f64::from(p)).abs() <= 1.0,
                "{p}%: canary got {got}% — {counts:?}"
            );
            // Within the canary pool (configured weights 0/0) the split is even.
            let (g1, g2) = (
                counts.get("g1").copied().unwrap_or(0),
                counts.get("g2").copied().unwrap_or(0),
            );
            assert!(g1.abs_diff(g2) <= N / 100, "{p}%: g1 {g1} vs g2 {g2}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unequal_configured_weights_keep_their_ratio() {
    let s = four().await;
    let fe = free_port();
    let cfg = config(
        "http",
        fe,
        BE,
        "roundrobin",
        &servers(&[
            ("b1", s[0].port, 100, ""),
            ("b2", s[1].port, 50, ""),
            ("g1", s[2].port, 10, ""),
            ("g2", s[3].port, 30, ""),
        ]),
    );
    let h = Haproxy::start(&cfg).await;
    let b = backend(vec![h.unix()], orient(&["g1", "g2"], &["b1", "b2"]));
    let report = b.apply(20, &raise(20)).await.expect("apply");
    assert!(report.confirmed, "{}", report.detail);
    let state = parse_servers_state(
        &h.cmd(&format!("show servers state {BE}"))
            .await
            .expect("state"),
        BE,
    )
    .expect("parse");
    let w = |n: &str| {
        state
            .iter()
            .find(|x| x.name == n)
            .map(|x| x.uweight)
            .expect("server")
    };
    assert_eq!(w("g2"), 3 * w("g1"), "canary keeps 10:30");
    assert_eq!(w("b1"), 2 * w("b2"), "live keeps 100:50");
    const N: usize = 2000;
    let counts = split(fe, N).await;
    let pct = |n: &str| 100.0 * counts.get(n).copied().unwrap_or(0) as f64 / N as f64;
    for (srv, want) in [("g1", 5.0), ("g2", 15.0), ("b1", 53.33), ("b2", 26.67)] {
        assert!(
            (pct(srv) - want).abs() <= 1.0,
            "{srv}: {}% (want {want}%) — {counts:?}",
            pct(srv)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_is_not_confirmed_and_converges_when_back() {
    let s = four().await;
    let h1 = Haproxy::start(&blue_green(free_port(), &s, "roundrobin", "")).await;
    let mut h2 = Haproxy::start(&blue_green(free_port(), &s, "roundrobin", "")).await;
    let (e1, e2) = (h1.unix().to_string(), h2.unix().to_string());
    let b = backend(
        vec![h1.unix(), h2.unix()],
        orient(&["g1", "g2"], &["b1", "b2"]),
    );
    h2.stop();
    let report = b.apply(10, &raise(10)).await.expect("apply");
    assert!(!report.confirmed, "{report:?}");
    assert!(
        report.detail.contains(&e2),
        "detail names the down endpoint: {}",
        report.detail
    );
    assert!(
        !report.detail.contains(&format!("{e1}:")),
        "the good endpoint is not blamed: {}",
        report.detail
    );
    assert!(report.endpoints[&e1].is_ok(), "{report:?}");
    assert!(
        report.endpoints[&e2]
            .as_ref()
            .is_err_and(|e| e.contains("cannot connect")),
        "{report:?}"
    );
    let reading = b.read().await.expect("read");
    assert!(reading.endpoints[&e2].is_err());
    assert!((reading.shares()[&e1] - 10.0).abs() < 0.1);

    h2.start_again().await;
    let report = b.apply(10, &raise(10)).await.expect("apply");
    assert!(report.confirmed, "{}", report.detail);
    let shares = b.read().await.expect("read").shares();
    assert_eq!(shares.len(), 2);
    assert!(
        shares.values().all(|s| (s - 10.0).abs() < 0.1),
        "{shares:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_without_state_file_reads_as_drift_towards_less() {
    let s = four().await;
    let mut h = Haproxy::start(&blue_green(free_port(), &s, "roundrobin", "")).await;
    let ep = h.unix().to_string();
    let b = backend(vec![h.unix()], orient(&["g1", "g2"], &["b1", "b2"]));
    assert!(b.apply(10, &raise(10)).await.expect("apply").confirmed);
    h.reload().await;
    // No server-state-file: the new worker starts from the config, where the
    // idle pool is at weight 0.
    let share = b.read().await.expect("read").shares()[&ep];
    assert_eq!(
        share, 0.0,
        "after reload the canary share is back to config"
    );
    // And nothing in the backend raised it back on its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.read().await.expect("read").shares()[&ep], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_set_canary_weight_shows_in_read() {
    let s = four().await;
    let h = Haproxy::start(&blue_green(free_port(), &s, "roundrobin", "")).await;
    let ep = h.unix().to_string();
    let b = backend(vec![h.unix()], orient(&["g1", "g2"], &["b1", "b2"]));
    assert!(b.apply(10, &raise(10)).await.expect("apply").confirmed);
    // Operator raises g1 by hand: drift towards more.
    assert_eq!(
        h.cmd(&format!("set weight {BE}/g1 200"))
            .await
            .expect("set")
            .trim(),
        ""
    );
    let share = b.read().await.expect("read").shares()[&ep];
    assert!(share > 50.0, "hand-set weight must show: {share}");
    // Break-glass: the operator sets the canary to 0.
    for g in ["g1", "g2"] {
        assert_eq!(
            h.cmd(&format!("set weight {BE}/{g} 0"))
                .await
                .expect("set")
                .trim(),
            ""
        );
    }
    assert_eq!(b.read().await.expect("read").shares()[&ep], 0.0);
    // Putting a canary server in maintenance takes it out too.
    assert!(b.apply(10, &raise(10)).await.expect("apply").confirmed);
    for g in ["g1", "g2"] {
        h.cmd(&format!("set server {BE}/{g} state maint"))
            .await
            .expect("maint");
    }
    let r = b.read().await.expect("read");
    assert_eq!(r.shares()[&ep], 0.0);
    assert!(!r.canary_up() && r.live_up());
}

/// Preflight issues for the endpoint(s), polled until `want` shows (health
/// checks need a moment to mark servers DOWN) or 5 s pass.
async fn preflight_until(b: &HaproxyBackend, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let issues: Vec<String> = b
            .preflight()
            .await
            .expect("preflight")
            .into_iter()
            .map(|i| i.message)
            .collect();
        if issues.iter().any(|m| m.contains(want)) || Instant::now() > deadline {
            return issues;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_passes_a_good_target_and_names_every_problem() {
    let s = four().await;
    let extra = NamedServer::start("b3").await;
    let fe = free_port();
    let good = Haproxy::start(&blue_green(fe, &s, "roundrobin", "check inter 100ms")).await;
    let ep = good.unix().to_string();
    let o = orient(&["g1", "g2"], &["b1", "b2"]);
    let issues = backend(vec![good.unix()], o.clone())
        .preflight()
        .await
        .expect("preflight");
    assert!(issues.is_empty(), "a good target has no issues: {issues:?}");

    // Missing server: the spec names g3, the backend has no such server.
    let missing = backend(
        vec![good.unix()],
        orient(&["g1", "g2", "g3"], &["b1", "b2"]),
    );
    let issues = preflight_until(&missing, "g3").await;
    assert!(
        issues.iter().any(|m| m == &format!("endpoint {ep}: backend {BE} has no server g3 (pool green) — add it to the backend or remove it from the pool")),
        "{issues:?}"
    );

    // Extra server b3, leastconn and an agent check, all in one backend.
    let cfg = config(
        "http",
        free_port(),
        BE,
        "leastconn",
        &servers(&[
            (
                "b1",
                s[0].port,
                100,
                &format!("agent-check agent-port {} agent-inter 1s", free_port()),
            ),
            ("b2", s[1].port, 100, ""),
            ("b3", extra.port, 100, ""),
            ("g1", s[2].port, 0, ""),
            ("g2", s[3].port, 0, ""),
        ]),
    );
    let bad = Haproxy::start(&cfg).await;
    let bad_ep = bad.tcp().to_string();
    let issues = preflight_until(&backend(vec![bad.tcp()], o.clone()), "b3").await;
    assert!(
        issues.contains(&format!(
            "endpoint {bad_ep}: backend {BE} has server b3, which is in neither pool — add it to a pool or remove it"
        )),
        "{issues:?}"
    );
    assert!(
        issues
            .iter()
            .any(|m| m.contains("uses balance leastconn") && m.contains("roundrobin")),
        "{issues:?}"
    );
    assert!(
        issues.iter().any(|m| m.contains("b1 has an agent check")),
        "{issues:?}"
    );
    assert_eq!(issues.len(), 3, "nothing else is wrong: {issues:?}");

    // All canary servers DOWN: their health checks point at a closed port.
    let closed = free_port();
    let opts = format!("check port {closed} inter 100ms fall 1 rise 1");
    let cfg = config(
        "http",
        free_port(),
        BE,
        "roundrobin",
        &servers(&[
            ("b1", s[0].port, 100, ""),
            ("b2", s[1].port, 100, ""),
            ("g1", s[2].port, 0, &opts),
            ("g2", s[3].port, 0, &opts),
        ]),
    );
    let down = Haproxy::start(&cfg).await;
    let b = backend(vec![down.unix()], o.clone());
    let issues = preflight_until(&b, "canary pool").await;
    assert!(
        issues
            .iter()
            .any(|m| m.contains("no server of the canary pool green (g1, g2) is UP")),
        "{issues:?}"
    );
    assert!(!b.read().await.expect("read").canary_up());

    // A backend that does not exist.
    let nope = HaproxyBackend::new(vec![good.unix()], "nope", o, HaproxyLimits::default());
    let issues = nope.preflight().await.expect("preflight");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(
        issues[0].message.contains("backend nope does not exist"),
        "{issues:?}"
    );
}

/// A socket we control: `behaviour` decides what a connection gets.
async fn fake_socket(behaviour: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                match behaviour {
                    "garbage" => {
                        // Read the command like a server would, then answer nonsense.
                        let mut cmd = [0u8; 256];
                        let _ = sock.read(&mut cmd).await;
                        let _ = sock
                            .write_all(b"\x1b[2JHELLO I AM NOT HAPROXY\r\n\x00\x01")
                            .await;
                    }
                    "silent" => tokio::time::sleep(Duration::from_secs(60)).await,
                    "flood" => {
                        let chunk = vec![b'A'; 64 * 1024];
                        while sock.write_all(&chunk).await.is_ok() {}
                    }
                    _ => {}
                }
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sockets_time_out_or_are_refused_with_a_clear_error() {
    let s = four().await;
    let h = Haproxy::start(&blue_green(free_port(), &s, "roundrobin", "")).await;
    let limits = HaproxyLimits {
        connect_timeout: Duration::from_millis(500),
        command_timeout: Duration::from_millis(500),
        max_reply_bytes: 256 * 1024,
        ..HaproxyLimits::default()
    };
    for (behaviour, want) in [
        ("garbage", "unexpected reply"),
        ("silent", "no complete reply within"),
        ("flood", "reply exceeds"),
    ] {
        let (port, task) = fake_socket(behaviour).await;
        let fake = Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let fake_name = fake.to_string();
        let b = HaproxyBackend::new(
            vec![h.unix(), fake],
            BE,
            orient(&["g1", "g2"], &["b1", "b2"]),
            limits.clone(),
        );

        let t = Instant::now();
        let reading = b.read().await.expect("read");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{behaviour}: read took {:?}",
            t.elapsed()
        );
        let err = reading.endpoints[&fake_name]
            .as_ref()
            .expect_err("fake endpoint fails");
        assert!(
            err.contains(want) && err.contains(&fake_name),
            "{behaviour}: {err}"
        );
        assert!(
            reading.endpoints[&h.unix().to_string()].is_ok(),
            "{behaviour}: the real one still reads"
        );

        let t = Instant::now();
        let report = b.apply(5, &raise(5)).await.expect("apply");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{behaviour}: apply took {:?}",
            t.elapsed()
        );
        assert!(!report.confirmed);
        assert!(
            report.detail.contains(&fake_name) && report.detail.contains(want),
            "{behaviour}: {}",
            report.detail
        );
        assert!(
            !report.detail.contains('\x1b'),
            "control characters from the peer are not echoed"
        );
        assert!(
            report.endpoints[&h.unix().to_string()].is_ok(),
            "{behaviour}: the real endpoint was written: {report:?}"
        );

        let issues = b.preflight().await.expect("preflight");
        assert!(
            issues
                .iter()
                .any(|i| i.endpoint == fake_name && i.message.contains(want)),
            "{behaviour}: {issues:?}"
        );
        task.abort();
    }
    // Nothing listening at all: refused at once.
    let dead = Endpoint::Unix(h.dir.path().join("nobody.sock").display().to_string());
    let b = HaproxyBackend::new(vec![dead.clone()], BE, orient(&["g1"], &["b1"]), limits);
    let r = b.read().await.expect("read");
    assert!(
        r.endpoints[&dead.to_string()]
            .as_ref()
            .is_err_and(|e| e.contains("cannot connect")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_drains_and_shuts_tcp_sessions_and_prepare_readies() {
    let b1 = NamedServer::start("b1").await;
    let g1 = NamedServer::start("g1").await;
    let fe = free_port();
    let cfg = config(
        "tcp",
        fe,
        BE,
        "roundrobin",
        &servers(&[("b1", b1.port, 100, ""), ("g1", g1.port, 0, "")]),
    );
    let h = Haproxy::start(&cfg).await;
    let ep = h.unix().to_string();
    let b = backend(vec![h.unix()], orient(&["g1"], &["b1"]));
    assert_eq!(b.mode().await.expect("mode"), "tcp");
    assert!(b.apply(100, &raise(100)).await.expect("apply").confirmed);

    // A long-lived TCP session, routed once, to the canary.
    let conn = tokio::net::TcpStream::connect(("127.0.0.1", fe))
        .await
        .expect("connect");
    let mut conn = tokio::io::BufReader::new(conn);
    let ping = async |c: &mut tokio::io::BufReader<tokio::net::TcpStream>| -> Option<String> {
        c.get_mut().write_all(b"ping\n").await.ok()?;
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(2), c.read_line(&mut line))
            .await
            .ok()?
            .ok()?;
        (n > 0).then(|| line.trim().to_string())
    };
    assert_eq!(ping(&mut conn).await.as_deref(), Some("g1"));

    // Rollback without shutdown: weight 0 and drain, the session survives.
    let report = b.rollback(false, &decrease()).await.expect("rollback");
    assert!(report.confirmed, "{}", report.detail);
    assert_eq!(report.effective_share, 0.0);
    let state = parse_servers_state(
        &h.cmd(&format!("show servers state {BE}"))
            .await
            .expect("state"),
        BE,
    )
    .expect("parse");
    let g = state.iter().find(|x| x.name == "g1").expect("g1");
    assert_eq!(
        (g.uweight, g.admin_state & 0x08),
        (0, 0x08),
        "g1 weight 0 and drained: {g:?}"
    );
    let r = b.read().await.expect("read");
    assert_eq!(r.shares()[&ep], 0.0);
    assert!(!r.canary_up() && r.live_up());
    assert_eq!(
        ping(&mut conn).await.as_deref(),
        Some("g1"),
        "without shutdown the session stays"
    );

    // Rollback with shutdown: the session on the canary is closed.
    assert!(
        b.rollback(true, &decrease())
            .await
            .expect("rollback")
            .confirmed
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the session was not closed within 2 s"
    );
    assert_eq!(ping(&mut conn).await, None, "the session is gone");
    // New sessions go to the live pool.
    let fresh = tokio::net::TcpStream::connect(("127.0.0.1", fe))
        .await
        .expect("connect");
    let mut fresh = tokio::io::BufReader::new(fresh);
    assert_eq!(ping(&mut fresh).await.as_deref(), Some("b1"));

    // The next rollout: drained canary back to ready at weight 0; a server
    // in maintenance is left alone.
    b.prepare(&decrease()).await.expect("prepare");
    let state = parse_servers_state(
        &h.cmd(&format!("show servers state {BE}"))
            .await
            .expect("state"),
        BE,
    )
    .expect("parse");
    let g = state.iter().find(|x| x.name == "g1").expect("g1");
    assert_eq!(
        (g.uweight, g.admin_state),
        (0, 0),
        "g1 ready at weight 0: {g:?}"
    );
    assert!(b.read().await.expect("read").canary_up());
    h.cmd(&format!("set server {BE}/g1 state maint"))
        .await
        .expect("maint");
    b.prepare(&decrease()).await.expect("prepare");
    let state = parse_servers_state(
        &h.cmd(&format!("show servers state {BE}"))
            .await
            .expect("state"),
        BE,
    )
    .expect("parse");
    assert_eq!(
        state
            .iter()
            .find(|x| x.name == "g1")
            .expect("g1")
            .admin_state
            & 0x01,
        0x01,
        "maint left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_builds_haproxy_backends_and_refuses_other_targets() {
    let s = four().await;
    let h = Haproxy::start(&blue_green(free_port(), &s, "roundrobin", "")).await;
    let o = orient(&["g1", "g2"], &["b1", "b2"]);
    let pools = [o.live.clone(), o.canary.clone()];
    let traffic = Traffic::Haproxy {
        endpoints: vec![h.unix()],
        backend: BE.into(),
        pools: pools.clone(),
        shutdown_sessions: None,
    };
    let f = HaproxyFactory::default();
    let b = f.backend(&traffic, &o);
    assert!(b.apply(50, &raise(50)).await.expect("apply").confirmed);
    assert!((b.read().await.expect("read").shares()[&h.unix().to_string()] - 50.0).abs() < 0.1);
    let consul = Traffic::Consul {
        address: "http://127.0.0.1:8500".into(),
        token_secret: None,
        key: "k".into(),
        pools,
        verify: None,
    };
    let err = f
        .backend(&consul, &o)
        .read()
        .await
        .expect_err("no consul factory configured");
    assert!(
        err.to_string()
            .contains("no traffic backend configured for target consul:"),
        "{err}"
    );
}

/// A decrease permit, as the controller gives rollbacks and prepares.
fn decrease() -> muhurat::traffic::Permit {
    muhurat::traffic::Permit::decrease("test")
}
