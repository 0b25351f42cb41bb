//! Raw spec types: exactly the YAML of docs/design.md §4, nothing checked yet but
//! shape. Unknown keys are errors (`deny_unknown_fields`, never `flatten`).

use serde::Deserialize;

use crate::yaml::OrderedMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub name: String,
    pub description: Option<String>,
    pub calendar: String,
    pub segments: Option<Vec<String>>,
    #[serde(default)]
    pub windows: RawWindows,
    pub traffic: RawTraffic,
    pub analysis: Option<RawAnalysis>,
    pub on_failure: Option<OnFailure>,
    #[serde(default)]
    pub approvals: RawApprovals,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    pub steps: Vec<RawStep>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindows {
    pub timezone: Option<String>,
    pub guard: Option<RawGuard>,
    pub min_remaining: Option<String>,
    #[serde(default)]
    pub allow: Vec<RawAllow>,
    #[serde(default)]
    pub deny: Vec<RawDeny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub before_open: Option<String>,
    pub after_close: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    pub name: String,
    pub cron: String,
    pub duration: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeny {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cron: Option<String>,
    pub duration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraffic {
    pub haproxy: Option<RawHaproxy>,
    pub consul: Option<RawConsul>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHaproxy {
    pub endpoints: Vec<String>,
    pub backend: String,
    /// Kept with duplicates: a BTreeMap silently kept the last of two
    /// `blue:` keys, dropping servers without a word.
    pub pools: OrderedMap<Vec<String>>,
    pub rollback: Option<RawRollback>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollback {
    pub shutdown_sessions: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsul {
    pub address: String,
    pub token_secret: Option<String>,
    pub kv: RawKv,
    /// Kept with duplicates: a BTreeMap silently kept the last of two
    /// `blue:` keys, dropping servers without a word.
    pub pools: OrderedMap<Vec<String>>,
    pub verify: Option<RawVerify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKv {
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub haproxy_endpoints: Vec<String>,
    pub backend: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    pub prometheus: String,
    pub auth: Option<RawAuth>,
    pub interval: Option<String>,
    pub query_delay: Option<String>,
    pub evidence: Option<Evidence>,
    pub min_passes: Option<u32>,
    pub inconclusive_limit: Option<u32>,
    #[serde(default)]
    pub checks: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub bearer_secret: Option<String>,
    pub basic_secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub name: String,
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub failure_limit: Option<u32>,
    pub no_data: Option<NoData>,
    pub min_traffic: Option<RawMinTraffic>,
    pub baseline: Option<RawBaseline>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMinTraffic {
    pub query: String,
    pub min: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBaseline {
    pub query: String,
    pub max_ratio: Option<f64>,
    pub min_ratio: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Rollback,
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    Sessions,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    Pass,
    Fail,
    Inconclusive,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    pub separation_of_duties: Option<bool>,
    pub max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub webhook_secret: String,
}

/// One step. YAML writes it as a one-key map (`- set_weight: 5`); serde_yaml
/// wants tags for enums, so it is read as a map with optional keys first.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawStepMap")]
pub enum RawStep {
    SetWeight(u32),
    Bake(RawBake),
    Approval(RawApproval),
    Pause(RawPause),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBake {
    pub duration: Option<String>,
    pub sessions: Option<u32>,
    pub segment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApproval {
    pub min: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPause {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStepMap {
    set_weight: Option<u32>,
    bake: Option<RawBake>,
    approval: Option<RawApproval>,
    pause: Option<RawPause>,
}

impl TryFrom<RawStepMap> for RawStep {
    type Error = String;

    fn try_from(m: RawStepMap) -> Result<Self, String> {
        match (m.set_weight, m.bake, m.approval, m.pause) {
            (Some(w), None, None, None) => Ok(RawStep::SetWeight(w)),
            (None, Some(b), None, None) => Ok(RawStep::Bake(b)),
            (None, None, Some(a), None) => Ok(RawStep::Approval(a)),
            (None, None, None, Some(p)) => Ok(RawStep::Pause(p)),
            _ => Err("a step has exactly one of the keys set_weight, bake, approval, pause; start each step with its own `-`".into()),
        }
    }
}
