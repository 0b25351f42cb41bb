//! An in-memory traffic target for controller and engine tests only: it
//! records every write and lets a test play the operator (set a share by
//! hand), the reload (reset to 0) and the broken endpoint (refuse writes).
//! Production backends are `haproxy` and `consul`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::*;

/// What a memory target holds; shared between the test and the backend.
/// Shares are those of the target's *first* pool (by name, e.g. `blue` of
/// blue/green), so the state means the same whichever pool a rollout uses
/// as its canary.
#[derive(Debug, Default)]
pub struct MemoryState {
    /// Endpoint → the first pool's share in effect.
    pub shares: BTreeMap<String, f64>,
    /// Endpoints that refuse writes and reads.
    pub down: std::collections::BTreeSet<String>,
    /// Endpoints that accept writes but do not apply them (never confirm).
    pub stuck: std::collections::BTreeSet<String>,
    pub canary_up: bool,
    pub live_up: bool,
    /// Every write as the canary share asked for: (share, rollback?).
    pub writes: Vec<(u32, bool)>,
    pub drained: bool,
    pub sessions_shut: bool,
}

/// A handle a test keeps to look at and poke the target.
#[derive(Debug, Clone)]
pub struct MemoryTarget(pub Arc<Mutex<MemoryState>>);

impl MemoryTarget {
    pub fn new(endpoints: &[&str]) -> Self {
        let st = MemoryState {
            shares: endpoints.iter().map(|e| (e.to_string(), 0.0)).collect(),
            canary_up: true,
            live_up: true,
            ..Default::default()
        };
        MemoryTarget(Arc::new(Mutex::new(st)))
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
}

impl MemoryBackend {
    pub fn new(target: MemoryTarget, canary_is_first: bool) -> Self {
        MemoryBackend {
            target,
            canary_is_first,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.target.lock()
    }

    /// Stored (first pool) share ↔ canary share: the same map both ways.
    fn flip(&self, s: f64) -> f64 {
        if self.canary_is_first { s } else { 100.0 - s }
    }
}

#[async_trait]
impl TrafficBackend for MemoryBackend {
    async fn apply(&self, share: u32) -> Result<ApplyReport, TrafficError> {
        let mut st = self.lock();
        st.writes.push((share, false));
        write(&mut st, share, self)
    }

    async fn rollback(&self, shutdown_sessions: bool) -> Result<ApplyReport, TrafficError> {
        let mut st = self.lock();
        st.writes.push((0, true));
        let r = write(&mut st, 0, self)?;
        st.drained = true;
        st.sessions_shut |= shutdown_sessions;
        Ok(r)
    }

    async fn read(&self) -> Result<Reading, TrafficError> {
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
                        canary_up: st.canary_up,
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

    async fn prepare(&self) -> Result<(), TrafficError> {
        self.lock().drained = false;
        Ok(())
    }
}

fn write(st: &mut MemoryState, share: u32, b: &MemoryBackend) -> Result<ApplyReport, TrafficError> {
    let mut endpoints = BTreeMap::new();
    let names: Vec<String> = st.shares.keys().cloned().collect();
    for e in names {
        if st.down.contains(&e) {
            endpoints.insert(e.clone(), Err(format!("endpoint {e}: connection refused")));
        } else if st.stuck.contains(&e) {
            endpoints.insert(e.clone(), Ok(b.flip(st.shares[&e])));
        } else {
            st.shares.insert(e.clone(), b.flip(f64::from(share)));
            endpoints.insert(e, Ok(f64::from(share)));
        }
    }
    let confirmed = endpoints
        .values()
        .all(|r| matches!(r, Ok(s) if *s == f64::from(share)));
    let bad: Vec<String> = endpoints
        .iter()
        .filter(|(_, r)| !matches!(r, Ok(s) if *s == f64::from(share)))
        .map(|(e, r)| match r {
            Ok(s) => format!("{e} reads {s}%"),
            Err(m) => m.clone(),
        })
        .collect();
    Ok(ApplyReport {
        confirmed,
        effective_share: f64::from(share),
        detail: if confirmed {
            format!("{share}% confirmed on every endpoint")
        } else {
            format!("not confirmed: {}", bad.join("; "))
        },
        endpoints,
    })
}

/// A factory that hands out one shared [`MemoryTarget`] per target id.
#[derive(Debug, Default, Clone)]
pub struct MemoryFactory {
    pub targets: Arc<Mutex<BTreeMap<String, MemoryTarget>>>,
}

impl MemoryFactory {
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
                MemoryTarget::new(&eps.iter().map(String::as_str).collect::<Vec<_>>())
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
        Arc::new(MemoryBackend::new(
            self.target(traffic),
            orientation.canary.name == *first,
        ))
    }
}
