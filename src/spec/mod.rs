//! Rollout specs: YAML → raw types → validated domain [`Spec`].
//!
//! Loading is two stages, as in Vector's config: serde checks the shape
//! (unknown keys, types) and stops at the first structural error; then a pure
//! [`validate`] checks every semantic rule of docs/design.md §4 and returns *all*
//! problems, each placed at its line and key path. A spec, once validated, is
//! immutable; its hash is the SHA-256 of its canonical JSON.

mod raw;
mod validate;

use std::fmt;

use chrono::TimeDelta;
use chrono_tz::Tz;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::calendar::Calendar;
use crate::diag::{Diagnostic, Severity};
use crate::windows::{CronWindow, DenyRule, Rules};
use crate::yaml::{self, Positions};

pub use raw::{Evidence, NoData, OnFailure, RawSpec};
pub use validate::{TEMPLATE_VARS, validate};

/// Serialize a duration as whole seconds (canonical JSON, spec hash).
pub fn ser_secs<S: Serializer>(d: &TimeDelta, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(d.num_seconds())
}

fn ser_tz<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

/// A validated rollout spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spec {
    pub name: String,
    pub description: Option<String>,
    pub calendar: String,
    /// Segments whose sessions block shifts; defaulted from the calendar.
    pub segments: Vec<String>,
    pub windows: Windows,
    pub traffic: Traffic,
    pub analysis: Option<Analysis>,
    pub on_failure: OnFailure,
    pub approvals: Approvals,
    pub notify: Vec<Notify>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Windows {
    #[serde(serialize_with = "ser_tz")]
    pub timezone: Tz,
    #[serde(serialize_with = "ser_secs")]
    pub before_open: TimeDelta,
    #[serde(serialize_with = "ser_secs")]
    pub after_close: TimeDelta,
    /// A raise is only decided with at least this much of its window left.
    #[serde(serialize_with = "ser_secs")]
    pub min_remaining: TimeDelta,
    pub allow: Vec<CronWindow>,
    pub deny: Vec<DenyRule>,
}

/// `unix:/path` or `tcp:host:port` — an HAProxy Runtime API socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Unix(String),
    Tcp { host: String, port: u16 },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{p}"),
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("`{s}`: the socket path must be absolute"));
            }
            return Ok(Endpoint::Unix(path.to_string()));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = if let Some(r) = rest.strip_prefix('[') {
                let (h, p) = r
                    .split_once("]:")
                    .ok_or_else(|| format!("`{s}`: write an IPv6 endpoint as tcp:[::1]:9999"))?;
                (h, p)
            } else {
                let (h, p) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| format!("`{s}` has no port"))?;
                // Unbracketed IPv6 is ambiguous: `tcp:fe80::1` was read as
                // host `fe80:`, port 1.
                if h.contains(':') {
                    return Err(format!("`{s}`: write an IPv6 endpoint as tcp:[::1]:9999"));
                }
                (h, p)
            };
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{s}`: port `{port}` is not 1-65535"))?;
            if host.is_empty() {
                return Err(format!("`{s}` has no host"));
            }
            return Ok(Endpoint::Tcp {
                host: host.to_string(),
                port,
            });
        }
        Err(format!("`{s}` is neither unix:/path nor tcp:host:port"))
    }
}

/// A named group of HAProxy servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    pub name: String,
    pub servers: Vec<String>,
}

/// Which pool is the canary (idle, receiving the new version) and which is
/// live, for one target. Decided in one place only:
/// [`crate::engine::target::orientation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orientation {
    pub canary: Pool,
    pub live: Pool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Traffic {
    Haproxy {
        endpoints: Vec<Endpoint>,
        backend: String,
        /// Exactly two, sorted by name.
        pools: [Pool; 2],
        /// None: the default (true for `mode tcp` backends, decided at preflight).
        shutdown_sessions: Option<bool>,
    },
    Consul {
        address: String,
        token_secret: Option<String>,
        key: String,
        pools: [Pool; 2],
        verify: Option<Verify>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verify {
    pub haproxy_endpoints: Vec<Endpoint>,
    pub backend: String,
}

impl Traffic {
    pub fn pools(&self) -> &[Pool; 2] {
        match self {
            Traffic::Haproxy { pools, .. } | Traffic::Consul { pools, .. } => pools,
        }
    }

    /// The traffic target this spec moves: `haproxy:<backend>@<endpoints,
    /// sorted>` or `consul:<address>/<key>`. Pool state and the one-active-
    /// rollout rule are kept per target.
    pub fn target_id(&self) -> String {
        match self {
            Traffic::Haproxy {
                endpoints, backend, ..
            } => {
                let mut eps: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
                eps.sort();
                format!("haproxy:{backend}@{}", eps.join(","))
            }
            Traffic::Consul { address, key, .. } => {
                format!(
                    "consul:{}/{}",
                    address.trim_end_matches('/'),
                    key.trim_start_matches('/')
                )
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    BearerSecret(String),
    BasicSecret(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub prometheus: String,
    pub auth: Option<Auth>,
    #[serde(serialize_with = "ser_secs")]
    pub interval: TimeDelta,
    #[serde(serialize_with = "ser_secs")]
    pub query_delay: TimeDelta,
    pub evidence: Evidence,
    pub min_passes: u32,
    pub inconclusive_limit: u32,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub failure_limit: u32,
    pub no_data: NoData,
    pub min_traffic: Option<MinTraffic>,
    pub baseline: Option<Baseline>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinTraffic {
    pub query: String,
    pub min: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    pub query: String,
    pub max_ratio: Option<f64>,
    pub min_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approvals {
    pub separation_of_duties: bool,
    #[serde(serialize_with = "ser_secs")]
    pub max_age: TimeDelta,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notify {
    pub webhook_secret: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    SetWeight(u32),
    BakeDuration(#[serde(serialize_with = "ser_secs")] TimeDelta),
    BakeSessions { sessions: u32, segment: String },
    Approval { min: u32 },
    Pause,
}

impl Step {
    /// The step kind as named in `plan -o json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::SetWeight(_) => "set_weight",
            Step::BakeDuration(_) | Step::BakeSessions { .. } => "bake",
            Step::Approval { .. } => "approval",
            Step::Pause => "pause",
        }
    }
}

impl Spec {
    /// SHA-256 (hex) of the canonical JSON of the validated spec: object keys
    /// sorted, durations in seconds. Approvals name it, and a retried CI job
    /// with the same hash gets the same rollout back.
    pub fn hash(&self) -> String {
        let value = canonical(serde_json::to_value(self).expect("a spec always serializes"));
        let bytes = serde_json::to_vec(&value).expect("a JSON value always serializes");
        let digest = Sha256::digest(&bytes);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn window_rules(&self) -> Rules<'_> {
        Rules {
            timezone: self.windows.timezone,
            before_open: self.windows.before_open,
            after_close: self.windows.after_close,
            allow: &self.windows.allow,
            deny: &self.windows.deny,
            segments: &self.segments,
        }
    }

    pub fn has_checks(&self) -> bool {
        self.analysis.as_ref().is_some_and(|a| !a.checks.is_empty())
    }
}

/// The same JSON with every object's keys sorted, recursively. serde_json
/// keeps insertion order (`preserve_order`, for readable CLI output), so the
/// hash must not depend on it.
fn canonical(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Why a calendar named by a spec could not be had.
#[derive(Debug, Clone)]
pub enum CalendarLookup {
    /// No such file; the message says where it was looked for.
    NotFound(String),
    /// The file exists but is invalid; its own diagnostics.
    Invalid(Vec<Diagnostic>),
}

/// A spec that loaded, with its calendar and any warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: Spec,
    pub calendar: Calendar,
    pub warnings: Vec<Diagnostic>,
}

/// Load a spec from `text` (named `file` in messages). `calendars` finds the
/// calendar the spec names; it is the only I/O, and the caller's.
pub fn load(
    file: &str,
    text: &str,
    calendars: impl FnOnce(&str) -> Result<Calendar, CalendarLookup>,
) -> Result<Loaded, Vec<Diagnostic>> {
    let raw: RawSpec = yaml::from_str(file, text).map_err(|d| vec![*d])?;
    let positions = Positions::index(text);
    let mut diags = Vec::new();
    let calendar = match calendars(raw.calendar.trim()) {
        Ok(c) => Some(c),
        Err(CalendarLookup::NotFound(msg)) => {
            diags.push(positions.place(
                file,
                crate::diag::Problem::error(
                    "calendar",
                    format!("calendar `{}` not found: {msg}", raw.calendar),
                    "check the name, or pass --calendars DIR (env MUHURAT_CALENDARS)",
                ),
            ));
            None
        }
        Err(CalendarLookup::Invalid(mut ds)) => {
            diags.push(positions.place(
                file,
                crate::diag::Problem::error(
                    "calendar",
                    format!(
                        "calendar `{}` is invalid ({} problems listed below)",
                        raw.calendar,
                        ds.len()
                    ),
                    "fix the calendar file",
                ),
            ));
            diags.append(&mut ds);
            None
        }
    };
    let outcome = validate(&raw, calendar.as_ref());
    let (spec, problems) = match outcome {
        Ok((spec, warnings)) => (Some(spec), warnings),
        Err(problems) => (None, problems),
    };
    diags.extend(problems.into_iter().map(|p| positions.place(file, p)));
    match (spec, calendar) {
        (Some(spec), Some(calendar)) if !crate::diag::has_errors(&diags) => Ok(Loaded {
            spec,
            calendar,
            warnings: diags
                .into_iter()
                .filter(|d| d.severity == Severity::Warning)
                .collect(),
        }),
        _ => Err(diags),
    }
}

#[cfg(test)]
mod tests;
