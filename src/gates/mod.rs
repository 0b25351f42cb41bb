//! Metric gates: PromQL checks against Prometheus or VictoriaMetrics.
//!
//! A [`MetricsSource`] answers one instant query; everything else —
//! rendering `{{…}}` variables, the `min_traffic` guard, thresholds,
//! baselines, what no data means — is decided here, so the same rules apply
//! whatever the store answers at night when there is no traffic.

mod check;
pub mod prometheus;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use check::{evaluate, render, uses_pool_vars, vars_for, verdict};

pub use crate::engine::Verdict;

/// The value of an instant query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// One number (±Inf included).
    Value(f64),
    /// An empty result or NaN.
    NoData,
}

/// An answer and the `Date` the server put on it (for the clock-skew check).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub sample: Sample,
    pub server_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GateError(pub String);

/// Something that answers instant PromQL queries.
#[async_trait]
pub trait MetricsSource: Send + Sync {
    /// Evaluate `query` at `time` (already `now − query_delay`).
    async fn query(&self, query: &str, time: DateTime<Utc>) -> Result<Answer, GateError>;
}

/// Values for the `{{…}}` template variables of a check query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vars {
    pub rollout: String,
    pub revision: String,
    pub canary_pool: String,
    pub live_pool: String,
    pub canary_servers: Vec<String>,
    pub live_servers: Vec<String>,
}

/// One check evaluated once.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub check: String,
    pub verdict: Verdict,
    /// The main query's value, when it had one.
    pub value: Option<f64>,
    /// The main query as sent (variables rendered).
    pub query: String,
    /// Why, for a person ("0.031 > max 0.01", "no data", "traffic 0.2 < min 5").
    pub reason: String,
    pub server_date: Option<DateTime<Utc>>,
}
