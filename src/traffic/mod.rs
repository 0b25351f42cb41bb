//! Traffic backends: where canary shares are written and read back.
//!
//! The controller never talks to HAProxy or Consul directly: it hands an
//! actuator a share, and the actuator calls a [`TrafficBackend`] for the
//! target. A backend writes every endpoint, then *confirms* the change by
//! reading it back (twice, from the same HAProxy process); a write that is
//! not confirmed everywhere is reported as partial, never as done. Reading
//! the shares in effect is part of the trait, because drift detection runs
//! on every target whether or not a rollout is active.

pub mod consul;
pub mod gate;
pub mod haproxy;
pub mod memory;

use std::collections::BTreeMap;

use async_trait::async_trait;

pub use crate::spec::Orientation;
pub use gate::{GateRefusal, GateWorld, Permit};

/// One endpoint as read now.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointReading {
    /// Effective canary share in percent (the canary pool's part of the
    /// summed effective weights of both pools).
    pub share: f64,
    /// At least one canary server UP and not in maintenance or drain.
    pub canary_up: bool,
    /// At least one live server UP and not in maintenance or drain.
    pub live_up: bool,
}

/// The target as read now: endpoint name → reading, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reading {
    pub endpoints: BTreeMap<String, Result<EndpointReading, String>>,
}

impl Reading {
    /// Every endpoint answered (a reading with a hole in it proves nothing
    /// about the endpoint that did not answer).
    pub fn complete(&self) -> bool {
        !self.endpoints.is_empty() && self.endpoints.values().all(Result::is_ok)
    }

    /// The endpoints that did not answer, with why.
    pub fn unreachable(&self) -> BTreeMap<String, String> {
        self.endpoints
            .iter()
            .filter_map(|(k, v)| v.as_ref().err().map(|e| (k.clone(), e.clone())))
            .collect()
    }

    /// Shares of the endpoints that answered.
    pub fn shares(&self) -> BTreeMap<String, f64> {
        self.endpoints
            .iter()
            .filter_map(|(k, v)| v.as_ref().ok().map(|r| (k.clone(), r.share)))
            .collect()
    }

    /// Some canary server is UP on every endpoint that answered (and at
    /// least one answered).
    pub fn canary_up(&self) -> bool {
        let ok: Vec<_> = self
            .endpoints
            .values()
            .filter_map(|v| v.as_ref().ok())
            .collect();
        !ok.is_empty() && ok.iter().all(|r| r.canary_up)
    }

    pub fn live_up(&self) -> bool {
        let ok: Vec<_> = self
            .endpoints
            .values()
            .filter_map(|v| v.as_ref().ok())
            .collect();
        !ok.is_empty() && ok.iter().all(|r| r.live_up)
    }
}

/// The outcome of a write.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyReport {
    /// Read back equal on every endpoint, twice, from the same process.
    pub confirmed: bool,
    /// The effective canary share written (integer weights rarely give the
    /// exact percentage; within 0.1 point when achievable).
    pub effective_share: f64,
    /// For a person: which endpoint is wrong and how.
    pub detail: String,
    /// Per endpoint: the share read back, or the error.
    pub endpoints: BTreeMap<String, Result<f64, String>>,
}

/// A problem preflight found, naming the endpoint and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightIssue {
    pub endpoint: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrafficError {
    /// Nothing could be reached or read.
    #[error("{0}")]
    Unreachable(String),
    /// Someone else changed the target underneath us (Consul CAS conflict).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The gate refused a command ([`gate`]); nothing more was sent.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Other(String),
}

impl From<GateRefusal> for TrafficError {
    fn from(r: GateRefusal) -> Self {
        TrafficError::Refused(r.to_string())
    }
}

/// One traffic target (an HAProxy backend across endpoints, or a Consul KV
/// document), oriented for one rollout.
///
/// Every write carries a [`Permit`] and passes each command it sends
/// through [`Permit::admit`] first (the gate, [`gate`]).
#[async_trait]
pub trait TrafficBackend: Send + Sync {
    /// Set the canary share to `share`% (the live pool gets the rest) on
    /// every endpoint, then confirm by reading back.
    async fn apply(&self, share: u32, permit: &Permit) -> Result<ApplyReport, TrafficError>;

    /// Rollback/abort: canary share 0 on every reachable endpoint at once,
    /// then drain the canary servers and, when `shutdown_sessions`, shut
    /// their sessions. Confirmed only when every endpoint reads back 0 with
    /// the canary servers drained.
    async fn rollback(
        &self,
        shutdown_sessions: bool,
        permit: &Permit,
    ) -> Result<ApplyReport, TrafficError>;

    /// The shares in effect now (drift detection, pools, status).
    async fn read(&self) -> Result<Reading, TrafficError>;

    /// Check the target can be rolled out on (servers are exactly the two
    /// pools, balance algorithm, agent checks, a canary server UP).
    async fn preflight(&self) -> Result<Vec<PreflightIssue>, TrafficError>;

    /// At the start of a rollout: set canary servers an earlier rollback
    /// left in drain back to ready at weight 0 (maintenance is left alone).
    async fn prepare(&self, permit: &Permit) -> Result<(), TrafficError>;

    /// Whether a rollback shuts the canary servers' sessions when the spec
    /// does not say (`rollback.shutdown_sessions` unset): true for HAProxy
    /// `mode tcp` backends, where a connection is balanced once and would
    /// stay on the bad version; false otherwise.
    async fn shutdown_sessions_by_default(&self) -> bool {
        false
    }
}

/// Builds the backend for a spec's target in a given orientation.
pub trait TrafficFactory: Send + Sync {
    fn backend(
        &self,
        traffic: &crate::spec::Traffic,
        orientation: &Orientation,
    ) -> std::sync::Arc<dyn TrafficBackend>;
}
