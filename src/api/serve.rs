//! The HTTP listener, hardened: a connection limit, header-read and idle
//! timeouts, and descriptors kept back for the controller.
//!
//! The decision a newcomer must know: **the API must never starve the
//! controller.** Both live in one process and share its file descriptors;
//! 20,000 idle connections from one client once used them all, and drift
//! reads, rollbacks and the journal failed with "too many open files". So
//! the listener holds at most [`Limits::max_connections`] sockets — sized
//! from `RLIMIT_NOFILE` minus a reserve for the controller — and stops
//! accepting while full (the kernel's backlog queues the rest). A client
//! that connects and sends nothing, or sends its headers a byte at a time,
//! is cut off after [`Limits::header_read_timeout`]; between keep-alive
//! requests the same timer closes idle connections. Under pressure (more
//! than a quarter of the slots in use) new connections get only
//! [`Limits::busy_header_read_timeout`], so a flood of idle sockets churns
//! away within a second while real requests, which send their headers at
//! once, are served. Plain `axum::serve` sets no timer, so hyper's header
//! timeout never ran.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// File descriptors kept for the controller, the store pool, HAProxy and
/// Consul connections, the journal and the calendars, whatever the API's
/// load.
pub const FD_RESERVE: usize = 512;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Open API connections at most (SSE streams included).
    pub max_connections: usize,
    /// A request's headers must arrive within this; also how long an idle
    /// keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// The same, for connections accepted while more than a quarter of the
    /// slots are in use.
    pub busy_header_read_timeout: Duration,
    /// On shutdown, connections still busy after this are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: connection_budget(open_files_limit()),
            header_read_timeout: Duration::from_secs(10),
            busy_header_read_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The process's soft `RLIMIT_NOFILE`, from `/proc/self/limits` (1024,
/// the usual default, when it cannot be read).
pub fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// API connections allowed under a descriptor limit: half of what is left
/// after the reserve (each connection may briefly need a second descriptor,
/// e.g. a `check-target` to HAProxy), at least 16, at most 8,192.
pub fn connection_budget(nofile: usize) -> usize {
    (nofile.saturating_sub(FD_RESERVE) / 2).clamp(16, 8192)
}

/// Serve `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout_s = limits.header_read_timeout.as_secs(),
        "HTTP listener limits."
    );
    loop {
        // Wait for a free slot first: while full, nothing more is accepted.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "Accept failed; retrying shortly.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let busy = slots.available_permits() < limits.max_connections * 3 / 4;
        let header_timeout = if busy {
            limits.busy_header_read_timeout
        } else {
            limits.header_read_timeout
        };
        // The peer address, for the dashboard's sign-in rate limit.
        let svc = TowerToHyperService::new(
            app.clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("HTTP connections still open after the grace period; dropping them.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_keeps_its_descriptors() {
        assert_eq!(connection_budget(20_000), 8192);
        assert_eq!(connection_budget(4096), 1792);
        assert_eq!(connection_budget(1024), 256);
        assert_eq!(connection_budget(100), 16);
        assert!(open_files_limit() >= 16);
    }
}
