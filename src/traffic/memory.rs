//! An in-memory traffic target for controller tests and the simulation
//! only: several endpoints that can be down, stuck, slow or hand-edited,
//! and a log of every command each endpoint received, with the clock at that
//! instant and the permit it was sent under. Production backends are
//! `haproxy` and `consul`.
//!
//! Like the real backends, every command passes the gate
//! ([`Permit::admit`]) first, with the canary share the endpoint had when
//! the write began and the share the command leaves; a refused command is
//! logged as refused and not applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::clock::{Clock, ManualClock};

/// One command an endpoint received (or the gate refused).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The clock when the command reached the endpoint (after its latency).
    pub at: DateTime<Utc>,
    pub endpoint: String,
    /// The pool this write treated as the canary.
    pub canary: String,
    /// Canary share before and after the command (of `canary`).
    pub before: f64,
    pub after: f64,
    /// A drain of the canary servers (rollback), not a weight.
    pub drain: bool,
    /// `Some(deadline)` when sent under a raise permit.
    pub raise_deadline: Option<DateTime<Utc>>,
    /// The gate refused it: nothing changed.
    pub refused: Option<String>,
}

/// What a memory target holds; shared between the test and the backend.
/// Shares are those of the target's *first* pool (by name, e.g. `blue` of
/// blue/green), so the state means the same whichever pool a rollout uses
/// as its canary.
#[derive(Debug, Default)]
pub struct MemoryState {
    /// The first pool's name (shares are its shares).
    pub first: String,
    /// Endpoint → the first pool's share in effect.
    pub shares: BTreeMap<String, f64>,
    /// Endpoints that refuse writes and reads.
    pub down: BTreeSet<String>,
    /// Endpoints that accept writes but do not apply them (never confirm).
    pub stuck: BTreeSet<String>,
    /// Per endpoint: how long each command takes (the clock moves on by
    /// this much before the command lands, when the target has a clock).
    pub latency: BTreeMap<String, TimeDelta>,
    pub canary_up: bool,
    pub live_up: bool,
    /// Every write as the canary share asked for: (share, rollback?).
    pub writes: Vec<(u32, bool)>,
    /// Endpoints whose canary servers are drained (by a rollback).
    pub drained_on: BTreeSet<String>,
    /// Some endpoint was drained by a rollback since the last prepare.
    pub drained: bool,
    pub sessions_shut: bool,
    /// Every command every endpoint received, in order.
    pub log: Vec<Command>,
    /// Called at every read, before it (a test breaks the world there).
    pub on_read: Option<Hook>,
}

/// A test's hook; runs outside the target's lock.
#[derive(Clone)]
pub struct Hook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// A handle a test keeps to look at and poke the target.
#[derive(Clone)]
pub struct MemoryTarget(pub Arc<Mutex<MemoryState>>, Option<Arc<ManualClock>>);

impl std::fmt::Debug for MemoryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryTarget")
    }
}

impl MemoryTarget {
    pub fn new(endpoints: &[&str]) -> Self {
        let st = MemoryState {
            shares: endpoints.iter().map(|e| (e.to_string(), 0.0)).collect(),
            canary_up: true,
            live_up: true,
            ..Default::default()
        };
        MemoryTarget(Arc::new(Mutex::new(st)), None)
    }

    /// A target whose endpoint latencies move `clock` on (simulations).
    pub fn with_clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.1 = Some(clock);
        self
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first pool's share on every endpoint, if they agree.
    pub fn share(&self) -> Option<f64> {
        let st = self.lock();
        let mut v = st.shares.values();
        let first = *v.next()?;
        v.all(|s| *s == first).then_some(first)
    }

    /// Play an operator or a reload: set the first pool's share on one
    /// endpoint by hand.
    pub fn set(&self, endpoint: &str, share: f64) {
        self.lock().shares.insert(endpoint.to_string(), share);
    }
}

/// A memory target seen through one orientation.
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    pub target: MemoryTarget,
    /// The canary is the first pool: its share is the stored share.
    canary_is_first: bool,
    canary: String,
}

impl MemoryBackend {
    pub fn new(target: MemoryTarget, canary_is_first: bool) -> Self {
        MemoryBackend {
            target,
            canary_is_first,
            canary: String::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.target.lock()
    }

    /// Stored (first pool) share ↔ canary share: the same map both ways.
    fn flip(&self, s: f64) -> f64 {
        if self.canary_is_first { s } else { 100.0 - s }
    }

    /// Send one command to one endpoint through the gate: `share` is the
    /// canary share it sets (`None`: a drain, which leaves the weights).
    fn send(
        &self,
        st: &mut MemoryState,
        ep: &str,
        share: Option<f64>,
        permit: &Permit,
    ) -> Result<(), String> {
        if st.down.contains(ep) {
            if let (Some(c), Some(l)) = (&self.target.1, st.latency.get(ep)) {
                c.advance(*l);
            }
            return Err(format!("endpoint {ep}: connection refused"));
        }
        let latency = st.latency.get(ep).copied().unwrap_or_default();
        let timeout = latency.to_std().unwrap_or_default() + Duration::from_secs(1);
        let before = self.flip(st.shares.get(ep).copied().unwrap_or(0.0));
        let after = share.unwrap_or(before);
        let cmd = match share {
            Some(s) => format!("set canary {s}%"),
            None => "drain canary".to_string(),
        };
        let now = self.target.1.as_ref().map(|c| c.now()).unwrap_or_default();
        let refused = permit.admit(ep, &cmd, before, after, timeout).err();
        let raise_deadline = match permit {
            Permit::Raise { deadline, .. } => Some(*deadline),
            Permit::Decrease { .. } => None,
        };
        // The command travels for `latency` before it lands.
        let at = match (&self.target.1, refused.is_none()) {
            (Some(c), true) => {
                c.advance(latency);
                c.now()
            }
            _ => now,
        };
        st.log.push(Command {
            at,
            endpoint: ep.to_string(),
            canary: self.canary.clone(),
            before,
            after,
            drain: share.is_none(),
            raise_deadline,
            refused: refused.as_ref().map(ToString::to_string),
        });
        if let Some(r) = refused {
            return Err(format!("endpoint {ep}: {r}"));
        }
        if st.stuck.contains(ep) {
            return Ok(());
        }
        match share {
            Some(s) => {
                let stored = self.flip(s);
                st.shares.insert(ep.to_string(), stored);
            }
            None => {
                st.drained_on.insert(ep.to_string());
                st.drained = true;
            }
        }
        Ok(())
    }

    fn write(&self, share: u32, rollback: bool, shutdown: bool, permit: &Permit) -> ApplyReport {
        let mut st = self.lock();
        st.writes.push((share, rollback));
        let names: Vec<String> = st.shares.keys().cloned().collect();
        let mut endpoints = BTreeMap::new();
        for e in names {
            let mut r = self.send(&mut st, &e, Some(f64::from(share)), permit);
            if rollback && r.is_ok() {
                r = self.send(&mut st, &e, None, permit);
                st.sessions_shut |= shutdown;
            }
            let got = r.map(|()| self.flip(st.shares[&e])).and_then(|s| {
                if (s - f64::from(share)).abs() > 1e-9 {
                    Err(format!("{e} reads {s}%"))
                } else if rollback && !st.drained_on.contains(&e) {
                    Err(format!("{e}: canary not drained"))
                } else {
                    Ok(s)
                }
            });
            endpoints.insert(e, got);
        }
        let confirmed = endpoints.values().all(Result::is_ok);
        let bad: Vec<String> = endpoints
            .values()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        ApplyReport {
            confirmed,
            effective_share: f64::from(share),
            detail: if confirmed {
                format!("{share}% confirmed on every endpoint")
            } else {
                format!("{share}% not confirmed: {}", bad.join("; "))
            },
            endpoints,
        }
    }
}

#[async_trait]
impl TrafficBackend for MemoryBackend {
    async fn apply(&self, share: u32, permit: &Permit) -> Result<ApplyReport, TrafficError> {
        Ok(self.write(share, false, false, permit))
    }

    async fn rollback(
        &self,
        shutdown_sessions: bool,
        permit: &Permit,
    ) -> Result<ApplyReport, TrafficError> {
        Ok(self.write(0, true, shutdown_sessions, permit))
    }

    async fn read(&self) -> Result<Reading, TrafficError> {
        let hook = self.lock().on_read.clone();
        if let Some(h) = hook {
            (h.0)();
        }
        let st = self.lock();
        let endpoints = st
            .shares
            .iter()
            .map(|(e, s)| {
                let r = if st.down.contains(e) {
                    Err(format!("endpoint {e}: connection refused"))
                } else {
                    Ok(EndpointReading {
                        share: self.flip(*s),
                        canary_up: st.canary_up && !st.drained_on.contains(e),
                        live_up: st.live_up,
                    })
                };
                (e.clone(), r)
            })
            .collect();
        Ok(Reading { endpoints })
    }

    async fn preflight(&self) -> Result<Vec<PreflightIssue>, TrafficError> {
        let st = self.lock();
        Ok(if st.canary_up {
            Vec::new()
        } else {
            vec![PreflightIssue {
                endpoint: "memory".into(),
                message: "no canary server is UP".into(),
            }]
        })
    }

    async fn prepare(&self, _: &Permit) -> Result<(), TrafficError> {
        // Drained servers come back at weight 0: the share does not move.
        let mut st = self.lock();
        st.drained = false;
        st.drained_on.clear();
        Ok(())
    }
}

/// A factory that hands out one shared [`MemoryTarget`] per target id.
#[derive(Default, Clone)]
pub struct MemoryFactory {
    pub targets: Arc<Mutex<BTreeMap<String, MemoryTarget>>>,
    /// Given to every target it creates (simulations).
    pub clock: Option<Arc<ManualClock>>,
}

impl std::fmt::Debug for MemoryFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryFactory")
    }
}

impl MemoryFactory {
    /// A factory whose targets' latencies move `clock` on.
    pub fn with_clock(clock: Arc<ManualClock>) -> Self {
        MemoryFactory {
            targets: Arc::default(),
            clock: Some(clock),
        }
    }

    /// The target a spec's traffic maps to, created on first use.
    pub fn target(&self, traffic: &crate::spec::Traffic) -> MemoryTarget {
        let id = traffic.target_id();
        let mut m = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id)
            .or_insert_with(|| {
                let eps: Vec<String> = match traffic {
                    crate::spec::Traffic::Haproxy { endpoints, .. } => {
                        endpoints.iter().map(ToString::to_string).collect()
                    }
                    crate::spec::Traffic::Consul { key, .. } => vec![format!("consul:{key}")],
                };
                let t = MemoryTarget::new(&eps.iter().map(String::as_str).collect::<Vec<_>>());
                t.lock().first = traffic.pools()[0].name.clone();
                match &self.clock {
                    Some(c) => t.with_clock(c.clone()),
                    None => t,
                }
            })
            .clone()
    }
}

impl TrafficFactory for MemoryFactory {
    fn backend(
        &self,
        traffic: &crate::spec::Traffic,
        orientation: &Orientation,
    ) -> Arc<dyn TrafficBackend> {
        let first = &traffic.pools()[0].name;
        let mut b = MemoryBackend::new(self.target(traffic), orientation.canary.name == *first);
        b.canary = orientation.canary.name.clone();
        Arc::new(b)
    }
}
