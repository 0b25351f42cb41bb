//! HAProxy traffic backend: canary shares written and read through the
//! Runtime API (`stats socket … level admin`) of every HAProxy process that
//! serves the target.
//!
//! The one decision a newcomer must know: **a write proves nothing until it
//! is read back**. Every apply writes all endpoints concurrently, then reads
//! `show servers state` twice, at least [`HaproxyLimits::confirm_interval`]
//! apart, each time bracketed by `show info` so both reads are known to come
//! from the same HAProxy process (a reload in between would otherwise let
//! the old worker "confirm" weights the new worker never had). Anything
//! short of that is reported as not confirmed, naming the endpoint.
//!
//! The socket is treated as untrusted input: one command per connection,
//! read to EOF under a deadline and a size limit, so a broken or hostile
//! peer can neither hang the controller nor exhaust its memory. (One
//! command per connection also sidesteps HAProxy's framing gotcha: some
//! error replies do not end with the blank line the manual promises.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    ApplyReport, EndpointReading, Orientation, Permit, PreflightIssue, Reading, TrafficBackend,
    TrafficError, TrafficFactory,
};
use crate::spec::{Endpoint, Traffic};

/// HAProxy's weight range for `set weight` (manual: 0..256).
pub const MAX_WEIGHT: u32 = 256;

/// `srv_admin_state` bits (HAProxy `enum srv_admin`): any maintenance flag
/// (forced, inherited, from config, from DNS resolution, from a hostname
/// problem) and the two drain flags (forced, inherited).
const ADMIN_MAINT: u32 = 0x01 | 0x02 | 0x04 | 0x20 | 0x40;
const ADMIN_FMAINT: u32 = 0x01;
const ADMIN_FDRAIN: u32 = 0x08;
const ADMIN_DRAIN: u32 = ADMIN_FDRAIN | 0x10;
/// `srv_op_state` 2 = SRV_ST_RUNNING (UP); 3 = stopping; 0/1 = down/starting.
const OP_RUNNING: u32 = 2;

/// Limits that keep one bad socket from hurting the controller.
#[derive(Debug, Clone)]
pub struct HaproxyLimits {
    /// Connecting to the socket (a firewalled TCP endpoint otherwise waits
    /// for the kernel's SYN retries, about two minutes).
    pub connect_timeout: Duration,
    /// The whole exchange after connecting: write the command and read the
    /// reply to EOF. A deadline, not an idle timeout, so a peer that drips
    /// one byte a second cannot keep us forever.
    pub command_timeout: Duration,
    /// Largest reply accepted. `show stat` for a 1,000-server backend is
    /// about 600 KB; anything beyond this is a misbehaving peer.
    pub max_reply_bytes: usize,
    /// Gap between the two confirming reads. 250 ms is well past the 60–90 ms
    /// during which an old worker still answers the socket after a reload
    /// (reference/protocols.md §1.7), so a reload cannot hide between them.
    pub confirm_interval: Duration,
}

impl Default for HaproxyLimits {
    fn default() -> Self {
        HaproxyLimits {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            max_reply_bytes: 4 << 20,
            confirm_interval: Duration::from_millis(250),
        }
    }
}

/// Where the time of one apply went (the fleet benchmark reports both).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyTimings {
    /// Reading configured weights and writing every endpoint.
    pub write: Duration,
    /// The double read-back, including the confirm interval.
    pub confirm: Duration,
}

/// One HAProxy backend across one or more HAProxy processes, oriented for
/// one rollout.
#[derive(Debug, Clone)]
pub struct HaproxyBackend {
    endpoints: Vec<Endpoint>,
    backend: String,
    orientation: Orientation,
    limits: HaproxyLimits,
}

/// A server as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    pub op_state: u32,
    pub admin_state: u32,
    /// Current (runtime) weight.
    pub uweight: u32,
    /// Configured (initial) weight.
    pub iweight: u32,
}

impl ServerState {
    /// UP and not in maintenance or drain.
    pub fn in_service(&self) -> bool {
        self.op_state == OP_RUNNING && self.admin_state & (ADMIN_MAINT | ADMIN_DRAIN) == 0
    }
}

/// The integer weights for one share on one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightPlan {
    /// Server → weight, for both pools.
    pub weights: BTreeMap<String, u32>,
    /// The canary share these weights give, in percent.
    pub effective_share: f64,
}

type EpResult<T> = Result<T, String>;

impl HaproxyBackend {
    pub fn new(
        endpoints: Vec<Endpoint>,
        backend: impl Into<String>,
        orientation: Orientation,
        limits: HaproxyLimits,
    ) -> Self {
        HaproxyBackend {
            endpoints,
            backend: backend.into(),
            orientation,
            limits,
        }
    }

    /// The backend for a `Traffic::Haproxy` target; `None` for other kinds.
    pub fn from_traffic(
        traffic: &Traffic,
        orientation: &Orientation,
        limits: HaproxyLimits,
    ) -> Option<Self> {
        match traffic {
            Traffic::Haproxy {
                endpoints, backend, ..
            } => Some(Self::new(
                endpoints.clone(),
                backend.clone(),
                orientation.clone(),
                limits,
            )),
            Traffic::Consul { .. } => None,
        }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The backend's proxy mode (`http` or `tcp`) as the first endpoint
    /// that answers reports it. `Traffic::Haproxy::shutdown_sessions: None`
    /// means "true for mode tcp"; the caller resolves it with this.
    pub async fn mode(&self) -> Result<String, TrafficError> {
        let mut errors = Vec::new();
        for ep in &self.endpoints {
            match self.show_stat(ep).await {
                Ok(rows) => {
                    if let Some(r) = rows.iter().find(|r| r.get("svname") == Some("BACKEND")) {
                        return Ok(r.get("mode").unwrap_or_default().to_string());
                    }
                    errors.push(format!(
                        "endpoint {ep}: no BACKEND row for {}",
                        self.backend
                    ));
                }
                Err(e) => errors.push(e),
            }
        }
        Err(TrafficError::Unreachable(errors.join("; ")))
    }

    /// [`TrafficBackend::apply`] with the time spent writing and confirming.
    pub async fn apply_timed(
        &self,
        share: u32,
        permit: &Permit,
    ) -> Result<(ApplyReport, ApplyTimings), TrafficError> {
        if share > 100 {
            return Err(TrafficError::Other(format!(
                "canary share {share}% is above 100%"
            )));
        }
        self.check_names()?;
        let started = Instant::now();
        let writes = join_all(
            self.endpoints
                .iter()
                .map(|ep| self.write_share(ep, share, permit)),
        )
        .await;
        let write = started.elapsed();
        let report = self.confirm(share, writes, false).await;
        Ok((
            report,
            ApplyTimings {
                write,
                confirm: started.elapsed() - write,
            },
        ))
    }

    // ---- per-endpoint operations -------------------------------------

    /// Read configured weights, compute and write the weights for `share`.
    async fn write_share(
        &self,
        ep: &Endpoint,
        share: u32,
        permit: &Permit,
    ) -> EpResult<WeightPlan> {
        let servers = self.servers_state(ep).await?;
        let plan = self.plan_for(ep, &servers, share)?;
        let mut wire = Wire::new(self, ep, &servers, permit);
        self.write_weights(&mut wire, &plan.weights).await?;
        Ok(plan)
    }

    fn plan_for(&self, ep: &Endpoint, servers: &[ServerState], share: u32) -> EpResult<WeightPlan> {
        let by_name: BTreeMap<&str, &ServerState> =
            servers.iter().map(|s| (s.name.as_str(), s)).collect();
        let iweights = |pool: &crate::spec::Pool| -> EpResult<Vec<(String, u32)>> {
            pool.servers
                .iter()
                .map(|n| match by_name.get(n.as_str()) {
                    Some(s) => Ok((n.clone(), s.iweight)),
                    None => Err(format!(
                        "endpoint {ep}: backend {} has no server {n} (pool {})",
                        self.backend, pool.name
                    )),
                })
                .collect()
        };
        let canary = iweights(&self.orientation.canary)?;
        let live = iweights(&self.orientation.live)?;
        compute_weights(&canary, &live, share).map_err(|e| format!("endpoint {ep}: {e}"))
    }

    /// Write `weights` in an order that never sends the canary more than
    /// the larger of the old and new share, and never leaves the backend
    /// with every weight at 0 on the way: live increases, canary decreases,
    /// live decreases, canary increases. (Each write is ~100 µs; the order
    /// matters for the requests that land in between.)
    async fn write_weights(
        &self,
        wire: &mut Wire<'_>,
        weights: &BTreeMap<String, u32>,
    ) -> EpResult<()> {
        let now: BTreeMap<String, u32> = wire
            .model
            .iter()
            .map(|s| (s.name.clone(), s.uweight))
            .collect();
        let canary: BTreeSet<&str> = self
            .orientation
            .canary
            .servers
            .iter()
            .map(String::as_str)
            .collect();
        let mut phases: [Vec<(&str, u32)>; 4] = Default::default();
        for (name, &w) in weights {
            let old = now.get(name.as_str()).copied();
            let is_canary = canary.contains(name.as_str());
            let phase = match (is_canary, old.is_none_or(|o| w > o)) {
                (false, true) => 0,
                (true, false) => 1,
                (false, false) => 2,
                (true, true) => 3,
            };
            if old != Some(w) {
                phases[phase].push((name, w));
            }
        }
        for (name, w) in phases.iter().flatten() {
            wire.send(&format!("set weight {}/{name} {w}", self.backend))
                .await?;
        }
        Ok(())
    }

    /// A `set` command: HAProxy answers success with an empty line, so any
    /// text at all is an error.
    async fn set(&self, ep: &Endpoint, cmd: &str) -> EpResult<()> {
        let reply = self.command(ep, cmd).await?;
        if reply.trim().is_empty() {
            Ok(())
        } else {
            Err(format!(
                "endpoint {ep}: `{cmd}` failed: {}",
                excerpt(&reply)
            ))
        }
    }

    async fn command(&self, ep: &Endpoint, cmd: &str) -> EpResult<String> {
        runtime_command(ep, cmd, &self.limits)
            .await
            .map_err(|e| format!("endpoint {ep}: {e}"))
    }

    async fn servers_state(&self, ep: &Endpoint) -> EpResult<Vec<ServerState>> {
        let reply = self
            .command(ep, &format!("show servers state {}", self.backend))
            .await?;
        parse_servers_state(&reply, &self.backend).map_err(|e| format!("endpoint {ep}: {e}"))
    }

    async fn pid(&self, ep: &Endpoint) -> EpResult<u32> {
        let reply = self.command(ep, "show info").await?;
        parse_pid(&reply).map_err(|e| format!("endpoint {ep}: {e}"))
    }

    async fn show_stat(&self, ep: &Endpoint) -> EpResult<Vec<StatRow>> {
        // typemask 2|4: the BACKEND row and the servers.
        let reply = self
            .command(ep, &format!("show stat {} 6 -1", self.backend))
            .await?;
        parse_stat(&reply).map_err(|e| format!("endpoint {ep}: {e}"))
    }

    /// One confirming read: the server state, bracketed by the process id
    /// before and after.
    async fn read_with_pid(&self, ep: &Endpoint) -> EpResult<(u32, Vec<ServerState>, u32)> {
        let before = self.pid(ep).await?;
        let state = self.servers_state(ep).await?;
        let after = self.pid(ep).await?;
        Ok((before, state, after))
    }

    /// Read every endpoint that was written twice, `confirm_interval` apart,
    /// and compare with what was written.
    async fn confirm(
        &self,
        share: u32,
        writes: Vec<EpResult<WeightPlan>>,
        drained: bool,
    ) -> ApplyReport {
        let checks = self
            .endpoints
            .iter()
            .zip(writes)
            .map(|(ep, written)| async move {
                let plan = written?;
                let (pid0, first, pid1) = self.read_with_pid(ep).await?;
                tokio::time::sleep(self.limits.confirm_interval).await;
                let (pid2, second, pid3) = self.read_with_pid(ep).await?;
                if !(pid0 == pid1 && pid1 == pid2 && pid2 == pid3) {
                    return Err(format!(
                        "endpoint {ep}: answered by different HAProxy processes \
                     (pids {pid0}, {pid1}, {pid2}, {pid3}) — reloaded during the write?"
                    ));
                }
                for state in [&first, &second] {
                    self.compare(ep, &plan.weights, state)?;
                    if drained {
                        self.check_drained(ep, state)?;
                    }
                }
                Ok(plan.effective_share)
            });
        let results = join_all(checks).await;
        let endpoints: BTreeMap<String, Result<f64, String>> = self
            .endpoints
            .iter()
            .map(ToString::to_string)
            .zip(results)
            .collect();
        let confirmed = endpoints.values().all(Result::is_ok);
        // Configs may differ between endpoints (and so the integer weights);
        // report the largest canary share actually in effect, the
        // conservative figure for a raise.
        let effective_share = endpoints
            .values()
            .filter_map(|r| r.as_ref().ok().copied())
            .fold(None, |acc: Option<f64>, s| {
                Some(acc.map_or(s, |a| a.max(s)))
            })
            .unwrap_or_else(|| f64::from(share));
        let detail = if confirmed {
            format!(
                "{share}% (effective {effective_share:.2}%) confirmed on every endpoint: {}",
                self.endpoints
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            let bad: Vec<&str> = endpoints
                .values()
                .filter_map(|r| r.as_ref().err().map(String::as_str))
                .collect();
            format!("{share}% not confirmed: {}", bad.join("; "))
        };
        ApplyReport {
            confirmed,
            effective_share,
            detail,
            endpoints,
        }
    }

    fn compare(
        &self,
        ep: &Endpoint,
        want: &BTreeMap<String, u32>,
        state: &[ServerState],
    ) -> EpResult<()> {
        let mut wrong = Vec::new();
        for (name, w) in want {
            match state.iter().find(|s| &s.name == name) {
                Some(s) if s.uweight == *w => {}
                Some(s) => wrong.push(format!("{name} has weight {} (wrote {w})", s.uweight)),
                None => wrong.push(format!("{name} is gone")),
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "endpoint {ep}: {}/{}",
                self.backend,
                wrong.join(", ")
            ))
        }
    }

    /// A rollback is done only when the canary servers take no new
    /// traffic: drained, or put in maintenance by someone.
    fn check_drained(&self, ep: &Endpoint, state: &[ServerState]) -> EpResult<()> {
        let not: Vec<&str> = state
            .iter()
            .filter(|s| self.orientation.canary.servers.contains(&s.name))
            .filter(|s| s.admin_state & (ADMIN_MAINT | ADMIN_DRAIN) == 0)
            .map(|s| s.name.as_str())
            .collect();
        if not.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "endpoint {ep}: {}/{} not drained",
                self.backend,
                not.join(", ")
            ))
        }
    }

    fn reading(&self, servers: &[ServerState]) -> EndpointReading {
        let pool = |p: &crate::spec::Pool| -> Vec<&ServerState> {
            servers
                .iter()
                .filter(|s| p.servers.contains(&s.name))
                .collect()
        };
        let canary = pool(&self.orientation.canary);
        let live = pool(&self.orientation.live);
        // A server an operator (or our rollback) put in maintenance or drain
        // takes no new traffic whatever its weight, so it counts as 0. Health
        // (DOWN) does not: a live server failing its checks must not read as
        // "more canary traffic" and make drift correction lower the canary.
        let weight = |ss: &[&ServerState]| -> u64 {
            ss.iter()
                .filter(|s| s.admin_state & (ADMIN_MAINT | ADMIN_DRAIN) == 0)
                .map(|s| u64::from(s.uweight))
                .sum()
        };
        let (c, l) = (weight(&canary), weight(&live));
        let share = if c + l == 0 {
            0.0
        } else {
            100.0 * c as f64 / (c + l) as f64
        };
        EndpointReading {
            share,
            canary_up: canary.iter().any(|s| s.in_service()),
            live_up: live.iter().any(|s| s.in_service()),
        }
    }

    async fn read_endpoint(&self, ep: &Endpoint) -> EpResult<EndpointReading> {
        let servers = self.servers_state(ep).await?;
        let missing: Vec<&str> = self
            .pool_servers()
            .filter(|n| !servers.iter().any(|s| &s.name == *n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "endpoint {ep}: backend {} has no server {}",
                self.backend,
                missing.join(", ")
            ));
        }
        Ok(self.reading(&servers))
    }

    fn pool_servers(&self) -> impl Iterator<Item = &String> {
        self.orientation
            .canary
            .servers
            .iter()
            .chain(&self.orientation.live.servers)
    }

    /// Rollback on one endpoint: canary to 0 (live to its share-0 weights),
    /// drain the canary servers, optionally shut their sessions.
    async fn rollback_endpoint(
        &self,
        ep: &Endpoint,
        shutdown: bool,
        permit: &Permit,
    ) -> EpResult<WeightPlan> {
        let b = &self.backend;
        let (plan, mut wire) = match self.servers_state(ep).await {
            Ok(servers) => {
                let plan = self.plan_for(ep, &servers, 0)?;
                let mut wire = Wire::new(self, ep, &servers, permit);
                self.write_weights(&mut wire, &plan.weights).await?;
                (plan, wire)
            }
            Err(read_err) => {
                // Cannot read the configured weights: still take the canary
                // out blind — a rollback must not depend on a healthy read.
                // Weight 0 on a canary server can only lower the canary's
                // share, which is what the gate is told.
                for s in &self.orientation.canary.servers {
                    let cmd = format!("set weight {b}/{s} 0");
                    permit
                        .admit(&ep.to_string(), &cmd, 0.0, 0.0, self.command_budget())
                        .map_err(|e| e.to_string())?;
                    self.set(ep, &cmd)
                        .await
                        .map_err(|e| format!("{read_err}; and blind canary write failed: {e}"))?;
                }
                return Err(read_err);
            }
        };
        let mut errors = Vec::new();
        for s in &self.orientation.canary.servers {
            if let Err(e) = wire.send(&format!("set server {b}/{s} state drain")).await {
                errors.push(e);
            }
        }
        if shutdown {
            for s in &self.orientation.canary.servers {
                if let Err(e) = wire
                    .send(&format!("shutdown sessions server {b}/{s}"))
                    .await
                {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(plan)
        } else {
            Err(errors.join("; "))
        }
    }

    async fn preflight_endpoint(&self, ep: &Endpoint) -> Vec<String> {
        let b = &self.backend;
        let servers = match self.servers_state(ep).await {
            Ok(s) => s,
            Err(e) if e.contains("Can't find backend") => {
                return vec![format!(
                    "backend {b} does not exist — check the spec's backend name or the HAProxy config"
                )];
            }
            Err(e) => {
                return vec![
                    e.trim_start_matches(&format!("endpoint {ep}: "))
                        .to_string(),
                ];
            }
        };
        let mut issues = Vec::new();
        let names: BTreeSet<&str> = servers.iter().map(|s| s.name.as_str()).collect();
        let pooled: BTreeSet<&str> = self.pool_servers().map(String::as_str).collect();
        for extra in names.difference(&pooled) {
            issues.push(format!(
                "backend {b} has server {extra}, which is in neither pool — add it to a pool or remove it"
            ));
        }
        for pool in [&self.orientation.canary, &self.orientation.live] {
            for s in &pool.servers {
                if !names.contains(s.as_str()) {
                    issues.push(format!(
                        "backend {b} has no server {s} (pool {}) — add it to the backend or remove it from the pool",
                        pool.name
                    ));
                }
            }
        }
        match self.show_stat(ep).await {
            Ok(rows) => {
                match rows.iter().find(|r| r.get("svname") == Some("BACKEND")) {
                    Some(r) => {
                        let algo = r.get("algo").unwrap_or_default();
                        if algo != "roundrobin" {
                            issues.push(format!(
                                "backend {b} uses balance {} — use `balance roundrobin`: only it \
                                 splits traffic in proportion to the weights",
                                if algo.is_empty() { "(unknown)" } else { algo }
                            ));
                        }
                    }
                    None => issues.push(format!("show stat has no BACKEND row for {b}")),
                }
                for r in &rows {
                    let sv = r.get("svname").unwrap_or_default();
                    if pooled.contains(sv) && !r.get("agent_status").unwrap_or_default().is_empty()
                    {
                        issues.push(format!(
                            "server {b}/{sv} has an agent check, which can change its weight \
                             behind muhurat's back — remove `agent-check` from pool servers"
                        ));
                    }
                }
            }
            Err(e) => issues.push(
                e.trim_start_matches(&format!("endpoint {ep}: "))
                    .to_string(),
            ),
        }
        let canary_up = servers
            .iter()
            .any(|s| self.orientation.canary.servers.contains(&s.name) && s.in_service());
        if !canary_up {
            issues.push(format!(
                "no server of the canary pool {} ({}) is UP and ready — deploy to it and check its health",
                self.orientation.canary.name,
                self.orientation.canary.servers.join(", ")
            ));
        }
        issues
    }

    async fn prepare_endpoint(&self, ep: &Endpoint, permit: &Permit) -> EpResult<()> {
        let b = &self.backend;
        let servers = self.servers_state(ep).await?;
        let mut wire = Wire::new(self, ep, &servers, permit);
        for s in &servers {
            let drained_only =
                s.admin_state & ADMIN_FDRAIN != 0 && s.admin_state & ADMIN_MAINT == 0;
            if self.orientation.canary.servers.contains(&s.name) && drained_only {
                // Weight 0 first, so the server takes nothing the moment it
                // becomes ready (the gate sees that the share stays put).
                wire.send(&format!("set weight {b}/{} 0", s.name)).await?;
                wire.send(&format!("set server {b}/{} state ready", s.name))
                    .await?;
            }
        }
        Ok(())
    }

    /// The longest one command may take to reach an endpoint: what a raise
    /// must leave before its deadline.
    fn command_budget(&self) -> Duration {
        self.limits.connect_timeout + self.limits.command_timeout
    }

    /// Names go into commands verbatim; HAProxy names are
    /// `[A-Za-z0-9_.:-]`, and anything else (`;`, spaces, newlines) would
    /// change the command.
    fn check_names(&self) -> Result<(), TrafficError> {
        let ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
        };
        for n in std::iter::once(&self.backend).chain(self.pool_servers()) {
            if !ok(n) {
                return Err(TrafficError::Other(format!(
                    "`{n}` is not an HAProxy name (letters, digits, `_ . : -`)"
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl TrafficBackend for HaproxyBackend {
    async fn apply(&self, share: u32, permit: &Permit) -> Result<ApplyReport, TrafficError> {
        Ok(self.apply_timed(share, permit).await?.0)
    }

    async fn rollback(
        &self,
        shutdown_sessions: bool,
        permit: &Permit,
    ) -> Result<ApplyReport, TrafficError> {
        self.check_names()?;
        let writes = join_all(
            self.endpoints
                .iter()
                .map(|ep| self.rollback_endpoint(ep, shutdown_sessions, permit)),
        )
        .await;
        Ok(self.confirm(0, writes, true).await)
    }

    async fn read(&self) -> Result<Reading, TrafficError> {
        self.check_names()?;
        let results = join_all(self.endpoints.iter().map(|ep| self.read_endpoint(ep))).await;
        Ok(Reading {
            endpoints: self
                .endpoints
                .iter()
                .map(ToString::to_string)
                .zip(results)
                .collect(),
        })
    }

    async fn preflight(&self) -> Result<Vec<PreflightIssue>, TrafficError> {
        self.check_names()?;
        let all = join_all(self.endpoints.iter().map(|ep| self.preflight_endpoint(ep))).await;
        Ok(self
            .endpoints
            .iter()
            .zip(all)
            .flat_map(|(ep, msgs)| {
                msgs.into_iter().map(move |m| PreflightIssue {
                    endpoint: ep.to_string(),
                    message: format!("endpoint {ep}: {m}"),
                })
            })
            .collect())
    }

    async fn prepare(&self, permit: &Permit) -> Result<(), TrafficError> {
        self.check_names()?;
        let results = join_all(
            self.endpoints
                .iter()
                .map(|ep| self.prepare_endpoint(ep, permit)),
        )
        .await;
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(TrafficError::Unreachable(errors.join("; ")))
        }
    }

    async fn shutdown_sessions_by_default(&self) -> bool {
        // Unknown mode (no endpoint answered): shut sessions — a rollback
        // must not leave customers on the bad version.
        self.mode().await.map_or(true, |m| m == "tcp")
    }
}

/// One endpoint's wire during one write: every command goes through the
/// gate ([`Permit::admit`]) with the canary share it would leave, computed
/// on a model of the servers that starts from the state read before the
/// write and follows each command sent.
struct Wire<'a> {
    backend: &'a HaproxyBackend,
    ep: &'a Endpoint,
    permit: &'a Permit,
    model: Vec<ServerState>,
    baseline: f64,
}

impl<'a> Wire<'a> {
    fn new(
        backend: &'a HaproxyBackend,
        ep: &'a Endpoint,
        servers: &[ServerState],
        permit: &'a Permit,
    ) -> Self {
        let baseline = backend.reading(servers).share;
        Wire {
            backend,
            ep,
            permit,
            model: servers.to_vec(),
            baseline,
        }
    }

    /// The model after `cmd` (only the commands muhurat sends change it).
    fn after(&self, cmd: &str) -> Vec<ServerState> {
        let mut model = self.model.clone();
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let server_of = |path: &str| path.split_once('/').map(|(_, s)| s.to_string());
        let find = |m: &mut Vec<ServerState>, path: &str| {
            let name = server_of(path)?;
            m.iter().position(|s| s.name == name)
        };
        match words.as_slice() {
            ["set", "weight", path, w] => {
                if let (Some(i), Ok(w)) = (find(&mut model, path), w.parse::<u32>()) {
                    model[i].uweight = w;
                }
            }
            ["set", "server", path, "state", st] => {
                if let Some(i) = find(&mut model, path) {
                    match *st {
                        "drain" => model[i].admin_state |= ADMIN_FDRAIN,
                        "maint" => model[i].admin_state |= ADMIN_FMAINT,
                        "ready" => model[i].admin_state &= !(ADMIN_FDRAIN | ADMIN_FMAINT),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        model
    }

    async fn send(&mut self, cmd: &str) -> EpResult<()> {
        let next = self.after(cmd);
        let after = self.backend.reading(&next).share;
        self.permit
            .admit(
                &self.ep.to_string(),
                cmd,
                self.baseline,
                after,
                self.backend.command_budget(),
            )
            .map_err(|e| format!("endpoint {}: {e}", self.ep))?;
        self.backend.set(self.ep, cmd).await?;
        self.model = next;
        Ok(())
    }
}

/// Runs futures concurrently on the current task (endpoints are few; this
/// avoids spawning and keeps borrows simple) and returns results in order.
async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

// ---- transport ----------------------------------------------------------

/// Send one command to an HAProxy Runtime API socket and read the reply to
/// EOF, within `limits`. Public so tests and tools use the same client.
pub async fn runtime_command(
    ep: &Endpoint,
    cmd: &str,
    limits: &HaproxyLimits,
) -> Result<String, String> {
    if cmd.contains('\n') {
        return Err("a command cannot contain a newline".into());
    }
    let connect = async {
        match ep {
            Endpoint::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(|s| Box::new(s) as Box<dyn Stream>),
            Endpoint::Tcp { host, port } => tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map(|s| {
                    let _ = s.set_nodelay(true);
                    Box::new(s) as Box<dyn Stream>
                }),
        }
    };
    let mut stream = match tokio::time::timeout(limits.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Err(_) => {
            return Err(format!(
                "connect timed out after {:?}",
                limits.connect_timeout
            ));
        }
    };
    let exchange = async {
        stream
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        // Half-close: the worker socket answers without it, but the master
        // CLI waits for it (protocols.md §1.7), and it tells any peer we are
        // done talking.
        let _ = stream.shutdown().await;
        let mut reply = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            if reply.len() + n > limits.max_reply_bytes {
                return Err(format!(
                    "reply exceeds {} bytes — not an HAProxy Runtime API socket?",
                    limits.max_reply_bytes
                ));
            }
            reply.extend_from_slice(&buf[..n]);
        }
        Ok::<_, String>(reply)
    };
    match tokio::time::timeout(limits.command_timeout, exchange).await {
        Ok(Ok(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(Err(e)) => Err(format!("`{cmd}`: {e}")),
        Err(_) => Err(format!(
            "`{cmd}`: no complete reply within {:?}",
            limits.command_timeout
        )),
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The first line of a reply, cut and cleaned for an error message (the
/// peer may be hostile: no control characters, no megabytes).
fn excerpt(reply: &str) -> String {
    let mut s: String = reply
        .trim()
        .chars()
        .take(160)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if reply.trim().chars().count() > 160 {
        s.push('…');
    }
    if s.is_empty() {
        "(empty reply)".into()
    } else {
        s
    }
}

// ---- parsing ------------------------------------------------------------

/// Parse `show servers state <backend>` (format version 1), by column name
/// so a later HAProxy that adds columns still parses.
pub fn parse_servers_state(reply: &str, backend: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = reply.lines();
    match lines.next().map(str::trim) {
        Some("1") => {}
        _ => {
            return Err(format!(
                "unexpected reply to `show servers state {backend}`: {}",
                excerpt(reply)
            ));
        }
    }
    let header: Vec<&str> = match lines.next().and_then(|h| h.strip_prefix('#')) {
        Some(h) => h.split_whitespace().collect(),
        None => {
            return Err(format!(
                "`show servers state` has no header line: {}",
                excerpt(reply)
            ));
        }
    };
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("`show servers state` has no column {name}"))
    };
    let (be, name, op, admin, uw, iw) = (
        col("be_name")?,
        col("srv_name")?,
        col("srv_op_state")?,
        col("srv_admin_state")?,
        col("srv_uweight")?,
        col("srv_iweight")?,
    );
    let mut out = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| format!("short line in `show servers state`: {}", excerpt(line)))
        };
        let num = |i: usize| -> Result<u32, String> {
            let v = get(i)?;
            v.parse().map_err(|_| {
                format!(
                    "`{}` is not a number in `show servers state`: {}",
                    excerpt(v),
                    excerpt(line)
                )
            })
        };
        if get(be)? != backend {
            continue;
        }
        out.push(ServerState {
            name: get(name)?.to_string(),
            op_state: num(op)?,
            admin_state: num(admin)?,
            uweight: num(uw)?,
            iweight: num(iw)?,
        });
    }
    Ok(out)
}

/// The `Pid:` line of `show info`.
pub fn parse_pid(reply: &str) -> Result<u32, String> {
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("`show info` has no Pid: {}", excerpt(reply)))
}

/// One row of `show stat` CSV, by column name.
#[derive(Debug, Clone)]
pub struct StatRow(BTreeMap<String, String>);

impl StatRow {
    pub fn get(&self, col: &str) -> Option<&str> {
        self.0.get(col).map(String::as_str)
    }
}

/// Parse `show stat` CSV (header line starts with `# `; names and values
/// never contain commas in HAProxy's output).
pub fn parse_stat(reply: &str) -> Result<Vec<StatRow>, String> {
    let mut lines = reply.lines();
    let header: Vec<&str> = match lines.next().and_then(|h| h.strip_prefix("# ")) {
        Some(h) => h.split(',').collect(),
        None => {
            return Err(format!(
                "unexpected reply to `show stat`: {}",
                excerpt(reply)
            ));
        }
    };
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            StatRow(
                header
                    .iter()
                    .zip(l.split(','))
                    .filter(|(h, _)| !h.is_empty())
                    .map(|(h, v)| (h.to_string(), v.to_string()))
                    .collect(),
            )
        })
        .collect())
}

// ---- weights ------------------------------------------------------------

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A pool's configured weights reduced to their smallest integer ratio; a
/// pool whose weights are all 0 (the usual config for the idle pool)
/// splits evenly.
fn reduced(pool: &[(String, u32)]) -> Vec<u32> {
    let g = pool.iter().fold(0, |g, (_, w)| gcd(g, *w));
    if g == 0 {
        vec![1; pool.len()]
    } else {
        pool.iter().map(|(_, w)| w / g).collect()
    }
}

/// Integer weights (0–256) giving the canary pool `share`% and the live pool
/// the rest, each pool keeping the ratio of its configured weights.
///
/// Every pool weight is `k × reduced ratio`; we search all multipliers
/// (at most 256 × 256 pairs, microseconds) for the canary share closest to
/// `share`, preferring the smallest weights among equally close ones —
/// roundrobin's starvation after a big decrease scales with the weight sum
/// (protocols.md §1.5). 0 and 100 are exact.
pub fn compute_weights(
    canary: &[(String, u32)],
    live: &[(String, u32)],
    share: u32,
) -> Result<WeightPlan, String> {
    if canary.is_empty() || live.is_empty() {
        return Err("both pools need at least one server".into());
    }
    let (rc, rl) = (reduced(canary), reduced(live));
    let (sc, sl) = (
        u64::from(rc.iter().sum::<u32>()),
        u64::from(rl.iter().sum::<u32>()),
    );
    let (mc, ml) = (
        rc.iter().copied().max().unwrap_or(1).max(1),
        rl.iter().copied().max().unwrap_or(1).max(1),
    );
    let (kc_max, kl_max) = (MAX_WEIGHT / mc, MAX_WEIGHT / ml);
    let (kc, kl) = match share {
        0 => (0, 1),
        100 => (1, 0),
        p => {
            let target = f64::from(p);
            let mut best: Option<(f64, u32, u32)> = None;
            for kc in 1..=kc_max {
                for kl in 1..=kl_max {
                    let c = u64::from(kc) * sc;
                    let eff = 100.0 * c as f64 / (c + u64::from(kl) * sl) as f64;
                    let err = (eff - target).abs();
                    // Strictly better by more than float noise; ties keep
                    // the earlier (smaller) pair.
                    if best.is_none_or(|(e, _, _)| err < e - 1e-9) {
                        best = Some((err, kc, kl));
                    }
                }
            }
            match best {
                Some((_, kc, kl)) => (kc, kl),
                None => return Err("a pool's configured weights leave no room below 256".into()),
            }
        }
    };
    let mut weights = BTreeMap::new();
    for ((n, _), r) in canary.iter().zip(&rc) {
        weights.insert(n.clone(), kc * r);
    }
    for ((n, _), r) in live.iter().zip(&rl) {
        weights.insert(n.clone(), kl * r);
    }
    let c = u64::from(kc) * sc;
    let l = u64::from(kl) * sl;
    let effective_share = if c + l == 0 {
        0.0
    } else {
        100.0 * c as f64 / (c + l) as f64
    };
    Ok(WeightPlan {
        weights,
        effective_share,
    })
}

// ---- factory ------------------------------------------------------------

/// Builds [`HaproxyBackend`]s for HAProxy targets and hands every other
/// kind of target to `other` (the Consul factory), or to a backend that
/// refuses every call with a clear error when there is none.
#[derive(Clone, Default)]
pub struct HaproxyFactory {
    pub limits: HaproxyLimits,
    pub other: Option<Arc<dyn TrafficFactory>>,
}

impl HaproxyFactory {
    pub fn new(limits: HaproxyLimits) -> Self {
        HaproxyFactory {
            limits,
            other: None,
        }
    }

    /// Delegate non-HAProxy targets to `other`.
    pub fn with_other(mut self, other: Arc<dyn TrafficFactory>) -> Self {
        self.other = Some(other);
        self
    }
}

impl TrafficFactory for HaproxyFactory {
    fn backend(&self, traffic: &Traffic, orientation: &Orientation) -> Arc<dyn TrafficBackend> {
        if let Some(b) = HaproxyBackend::from_traffic(traffic, orientation, self.limits.clone()) {
            return Arc::new(b);
        }
        match &self.other {
            Some(f) => f.backend(traffic, orientation),
            None => Arc::new(Unsupported(traffic.target_id())),
        }
    }
}

/// A target no configured factory handles: every call is an error.
#[derive(Debug)]
struct Unsupported(String);

impl Unsupported {
    fn err(&self) -> TrafficError {
        let mut m = String::new();
        let _ = write!(m, "no traffic backend configured for target {}", self.0);
        TrafficError::Other(m)
    }
}

#[async_trait]
impl TrafficBackend for Unsupported {
    async fn apply(&self, _: u32, _: &Permit) -> Result<ApplyReport, TrafficError> {
        Err(self.err())
    }
    async fn rollback(&self, _: bool, _: &Permit) -> Result<ApplyReport, TrafficError> {
        Err(self.err())
    }
    async fn read(&self) -> Result<Reading, TrafficError> {
        Err(self.err())
    }
    async fn preflight(&self) -> Result<Vec<PreflightIssue>, TrafficError> {
        Err(self.err())
    }
    async fn prepare(&self, _: &Permit) -> Result<(), TrafficError> {
        Err(self.err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(ws: &[(&str, u32)]) -> Vec<(String, u32)> {
        ws.iter().map(|(n, w)| (n.to_string(), *w)).collect()
    }

    #[test]
    fn every_share_is_within_a_tenth_of_a_point_with_even_pools() {
        let canary = pool(&[("g1", 0), ("g2", 0)]);
        let live = pool(&[("b1", 100), ("b2", 100)]);
        for p in 0..=100 {
            let plan = compute_weights(&canary, &live, p).expect("plan");
            assert!(
                (plan.effective_share - f64::from(p)).abs() <= 0.1,
                "{p}% gave {plan:?}"
            );
            assert_eq!(plan.weights["g1"], plan.weights["g2"], "{p}%");
            assert!(plan.weights.values().all(|w| *w <= MAX_WEIGHT));
        }
    }

    #[test]
    fn ends_are_exact_and_ratios_are_kept() {
        let canary = pool(&[("g1", 10), ("g2", 30)]);
        let live = pool(&[("b1", 50), ("b2", 50), ("b3", 100)]);
        let zero = compute_weights(&canary, &live, 0).expect("plan");
        assert_eq!(zero.effective_share, 0.0);
        assert_eq!((zero.weights["g1"], zero.weights["g2"]), (0, 0));
        let all = compute_weights(&canary, &live, 100).expect("plan");
        assert_eq!(all.effective_share, 100.0);
        assert_eq!(all.weights["b3"], 0);
        for p in [1, 5, 10, 33, 50, 90] {
            let plan = compute_weights(&canary, &live, p).expect("plan");
            assert_eq!(plan.weights["g2"], 3 * plan.weights["g1"], "{p}%: {plan:?}");
            assert_eq!(plan.weights["b3"], 2 * plan.weights["b1"], "{p}%: {plan:?}");
            assert!(
                (plan.effective_share - f64::from(p)).abs() <= 0.1,
                "{p}%: {plan:?}"
            );
        }
    }

    #[test]
    fn unachievable_share_reports_the_share_actually_written() {
        // Ratio 1:3 caps the canary pool at 85+255 = 340 against a live
        // pool of at least 4: 99% is not reachable, 98.84% is.
        let canary = pool(&[("g1", 10), ("g2", 30)]);
        let live = pool(&[("b1", 50), ("b2", 50), ("b3", 100)]);
        let plan = compute_weights(&canary, &live, 99).expect("plan");
        let c = f64::from(plan.weights["g1"] + plan.weights["g2"]);
        let l = f64::from(plan.weights["b1"] + plan.weights["b2"] + plan.weights["b3"]);
        assert!(
            (plan.effective_share - 100.0 * c / (c + l)).abs() < 1e-9,
            "{plan:?}"
        );
        assert!(
            plan.effective_share > 98.8 && plan.effective_share < 99.0,
            "{plan:?}"
        );
    }

    #[test]
    fn servers_state_parses_by_column_name_and_rejects_garbage() {
        let reply = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight\n\
                     3 kite_api 1 b1 127.0.0.1 2 0 95 100\n3 kite_api 2 g1 127.0.0.1 0 8 5 0\n\n";
        let s = parse_servers_state(reply, "kite_api").expect("parses");
        assert_eq!(s.len(), 2);
        assert_eq!(
            (
                s[1].name.as_str(),
                s[1].admin_state,
                s[1].uweight,
                s[1].iweight
            ),
            ("g1", 8, 5, 0)
        );
        assert!(s[0].in_service() && !s[1].in_service());
        let err = parse_servers_state("Can't find backend.\n\n", "x").expect_err("error reply");
        assert!(err.contains("Can't find backend"), "{err}");
        let err = parse_servers_state("1\n# srv_name\nb1\n", "x").expect_err("no columns");
        assert!(err.contains("no column be_name"), "{err}");
        let bad = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight\n3 x 1 b1 a two 0 1 1\n";
        assert!(
            parse_servers_state(bad, "x")
                .expect_err("bad number")
                .contains("not a number")
        );
    }

    #[test]
    fn excerpt_strips_control_characters_and_cuts() {
        let long = format!("\x1b[31m{}", "x".repeat(500));
        let e = excerpt(&long);
        assert!(!e.contains('\x1b') && e.chars().count() <= 161, "{e}");
    }
}
