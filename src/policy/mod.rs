//! The server's policy: a floor under every spec (docs/design.md §3 *Policy*).
//!
//! A spec that validates on its own may still be refused by the server that
//! runs it: a team may not skip analysis, raise straight to 50%, shrink the
//! guard around market hours, or point muhurat at a host it has no business
//! talking to. The policy is loaded like a spec — a raw `deny_unknown_fields`
//! type, then a pure validation that reports every problem — and applied by
//! [`check`], which lists *every* violation at once so a team fixes its spec
//! in one pass. It is used at `POST /api/v1/rollouts` and by
//! `muhurat validate --policy FILE`.
//!
//! The one thing a newcomer must know: [`check`] is pure and sees only the
//! spec. It checks every secret the spec names against its binding (the
//! hosts it may be sent to, [`crate::secrets`]) for the URL the spec would
//! send it to. Webhook URLs live in secrets that only the server can read,
//! so `POST /rollouts` and the notifier resolve them and call
//! [`Policy::url_allowed`] and the binding check on the resolved URL; the
//! spec check cannot see them.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, Problem};
use crate::spec::{Auth, Endpoint, NoData, Spec, Step, Traffic};
use crate::yaml::{self, Positions};

/// What a spec must contain for a step to advance without people or metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Require {
    /// At least one metric check (`analysis.checks`).
    Analysis,
    /// At least one `approval` step.
    Approval,
    /// Both.
    Both,
    /// Neither (the default).
    #[default]
    None,
}

/// The policy as written (server config `policy:` or a `--policy FILE`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Recorded with every decision; default: a hash of the policy.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub allowed_calendars: Option<Vec<String>>,
    #[serde(default)]
    pub required_segments: Option<Vec<String>>,
    /// Minimum for both `windows.guard.before_open` and `after_close`.
    #[serde(default)]
    pub min_guard: Option<String>,
    /// Minimum for `windows.min_remaining`.
    #[serde(default)]
    pub min_min_remaining: Option<String>,
    #[serde(default)]
    pub require: Option<Require>,
    #[serde(default)]
    pub forbid_no_data_pass: Option<bool>,
    #[serde(default)]
    pub max_first_weight: Option<u32>,
    /// Glob patterns (`*`, `?`) for `host:port` or `host`.
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// Secret name → `{env, hosts, scheme?}`: where its value comes from
    /// and the only places it may be sent (see [`crate::secrets`]).
    #[serde(default)]
    pub secrets: Option<BTreeMap<String, crate::secrets::RawBinding>>,
    /// When true, no spec may set `approvals.separation_of_duties: false`.
    #[serde(default)]
    pub require_separation_of_duties: Option<bool>,
}

/// A validated policy. `Policy::default()` is the empty policy: no floor
/// beyond the spec's own validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub version: String,
    /// None: any calendar.
    pub allowed_calendars: Option<Vec<String>>,
    pub required_segments: Vec<String>,
    pub min_guard: Option<TimeDelta>,
    pub min_min_remaining: Option<TimeDelta>,
    pub require: Require,
    pub forbid_no_data_pass: bool,
    pub max_first_weight: Option<u32>,
    /// None: any host. Some(empty): no host at all (only unix sockets).
    pub allowed_hosts: Option<Vec<HostPattern>>,
    /// Every secret the server may use, bound to its hosts. Empty: none.
    pub secrets: crate::secrets::Secrets,
    pub require_separation_of_duties: bool,
}

/// One violation: the spec key path and what is wrong, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// An `allowed_hosts` entry: `10.0.0.*:9999`, `*.internal`, `[::1]:8428`.
/// Without a port it allows every port of the matching hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub text: String,
    host: String,
    port: Option<String>,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty host pattern".into());
        }
        if t.contains("://") || t.contains('/') {
            return Err(format!(
                "`{t}` looks like a URL; write only the host, or host:port (e.g. vm.internal:8428)"
            ));
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{t}`: an IPv6 pattern needs its closing `]`"))?;
            match after {
                "" => (h.to_string(), None),
                p => match p.strip_prefix(':') {
                    Some(port) => (h.to_string(), Some(port.to_string())),
                    None => return Err(format!("`{t}`: write [addr]:port")),
                },
            }
        } else {
            match t.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!(
                        "`{t}`: write IPv6 addresses in brackets, [::1]:8428"
                    ));
                }
                Some((h, p)) => (h.to_string(), Some(p.to_string())),
                None => (t.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("`{t}` has no host"));
        }
        if let Some(p) = &port
            && p != "*"
            && p.parse::<u16>().ok().filter(|p| *p > 0).is_none()
        {
            return Err(format!("`{t}`: port `{p}` is not 1-65535 or *"));
        }
        Ok(HostPattern {
            text: t.to_string(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    pub fn matches(&self, host: &str, port: u16) -> bool {
        glob(&self.host, &host.to_ascii_lowercase())
            && self
                .port
                .as_ref()
                .is_none_or(|p| p == "*" || p.parse::<u16>().ok() == Some(port))
    }
}

/// Shell-style glob: `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with backtracking to the last `*`: linear enough for
    // host names and never recursive on hostile input.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// `host` and `port` of an `http(s)://` URL (default ports 80/443), parsed
/// by the same `url` crate the HTTP client uses, so the host checked is the
/// host connected to (no parser differential with `user@` or `\\`).
pub fn url_host_port(url: &str) -> Result<(String, u16), String> {
    let u = url::Url::parse(url.trim()).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match u.scheme() {
        "http" | "https" => {}
        other => return Err(format!("`{url}`: scheme `{other}` is not http or https")),
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(format!("`{url}` has no host")),
    };
    let port = u
        .port_or_known_default()
        .ok_or_else(|| format!("`{url}` has no port"))?;
    Ok((host, port))
}

impl Policy {
    /// Is `host:port` allowed? Always true without `allowed_hosts`.
    pub fn host_allowed(&self, host: &str, port: u16) -> bool {
        self.allowed_hosts
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.matches(host, port)))
    }

    /// For URLs only the server sees (webhooks, resolved from secrets):
    /// `Err` says why the URL may not be used.
    pub fn url_allowed(&self, url: &str) -> Result<(), String> {
        let (host, port) = url_host_port(url)?;
        if self.host_allowed(&host, port) {
            Ok(())
        } else {
            Err(format!(
                "host {host}:{port} is not in the server policy's allowed_hosts ({})",
                self.hosts_list()
            ))
        }
    }

    fn hosts_list(&self) -> String {
        match &self.allowed_hosts {
            None => "any".into(),
            Some(ps) if ps.is_empty() => "none".into(),
            Some(ps) => ps
                .iter()
                .map(|p| p.text.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The secret bindings, for the clients that send them.
    pub fn secrets(&self) -> crate::secrets::Secrets {
        self.secrets.clone()
    }

    /// True for the empty policy (nothing beyond the spec's own rules).
    pub fn is_empty(&self) -> bool {
        Policy {
            version: self.version.clone(),
            ..Policy::default()
        } == *self
    }
}

/// Validate a raw policy; `prefix` is prepended to key paths (e.g.
/// `policy` inside the server config). Returns every problem.
pub fn validate(raw: &RawPolicy, prefix: &str) -> Result<Policy, Vec<Problem>> {
    let at = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let mut problems = Vec::new();
    let mut dur = |key: &str, v: &Option<String>| -> Option<TimeDelta> {
        let text = v.as_ref()?;
        match crate::duration::parse(text) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(Problem::error(at(key), e, crate::duration::FIX));
                None
            }
        }
    };
    let min_guard = dur("min_guard", &raw.min_guard);
    let min_min_remaining = dur("min_min_remaining", &raw.min_min_remaining);
    if let Some(w) = raw.max_first_weight
        && !(1..=100).contains(&w)
    {
        problems.push(Problem::error(
            at("max_first_weight"),
            format!("{w} is not a share between 1 and 100"),
            "write a percentage such as 5",
        ));
    }
    if let Some(v) = &raw.version
        && v.trim().is_empty()
    {
        problems.push(Problem::error(
            at("version"),
            "the version is empty",
            "write a version such as \"2026.11.1\", or leave the key out to use a hash",
        ));
    }
    for (key, list) in [
        ("allowed_calendars", &raw.allowed_calendars),
        ("required_segments", &raw.required_segments),
    ] {
        for (i, s) in list.iter().flatten().enumerate() {
            if s.trim().is_empty() {
                problems.push(Problem::error(
                    format!("{}[{i}]", at(key)),
                    "an empty name",
                    "remove the entry or write a name",
                ));
            }
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in raw.allowed_hosts.iter().flatten().enumerate() {
        match HostPattern::parse(h) {
            Ok(p) => hosts.push(p),
            Err(e) => problems.push(Problem::error(
                format!("{}[{i}]", at("allowed_hosts")),
                e,
                "write host, host:port or a glob such as *.internal:8428",
            )),
        }
    }
    let mut secrets = crate::secrets::Secrets::default();
    for (name, b) in raw.secrets.iter().flatten() {
        if name.trim().is_empty() {
            problems.push(Problem::error(
                at("secrets"),
                "a secret with an empty name",
                "name every secret",
            ));
        }
        match crate::secrets::validate_binding(b) {
            Ok(b) => {
                secrets.bindings.insert(name.clone(), b);
            }
            Err(ps) => {
                for (key, message, fix) in ps {
                    problems.push(Problem::error(
                        format!("{}.{name}.{key}", at("secrets")),
                        message,
                        fix,
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let version = raw.version.clone().unwrap_or_else(|| {
        // Stable across restarts and key order: a hash of the canonical form.
        let json = serde_json::to_value(raw).unwrap_or_default();
        let bytes = serde_json::to_vec(&sorted(json)).unwrap_or_default();
        let d = Sha256::digest(&bytes);
        let hex: String = d.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    });
    Ok(Policy {
        version,
        allowed_calendars: raw.allowed_calendars.clone(),
        required_segments: raw.required_segments.clone().unwrap_or_default(),
        min_guard,
        min_min_remaining,
        require: raw.require.unwrap_or_default(),
        forbid_no_data_pass: raw.forbid_no_data_pass.unwrap_or(false),
        max_first_weight: raw.max_first_weight,
        allowed_hosts: raw.allowed_hosts.as_ref().map(|_| hosts),
        secrets,
        require_separation_of_duties: raw.require_separation_of_duties.unwrap_or(false),
    })
}

fn sorted(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut e: Vec<_> = m.into_iter().collect();
            e.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(e.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        o => o,
    }
}

/// A policy file may also be written as it appears in the server config,
/// under a single `policy:` key (so the README's example loads as printed).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    policy: RawPolicy,
}

/// Load a policy file (what `muhurat validate --policy FILE` and
/// `muhurat server --policy FILE` need): every problem, placed at its line
/// and column.
pub fn load(file: &str, text: &str) -> Result<Policy, Vec<Diagnostic>> {
    // An empty file is the empty policy, like `policy: {}`.
    let wrapped = text
        .lines()
        .any(|l| l.starts_with("policy:") || l.starts_with("policy :"));
    let (raw, prefix): (RawPolicy, &str) = if text.trim().is_empty() {
        (RawPolicy::default(), "")
    } else if wrapped {
        let w: Wrapped = yaml::from_str(file, text).map_err(|d| vec![*d])?;
        (w.policy, "policy")
    } else {
        (yaml::from_str(file, text).map_err(|d| vec![*d])?, "")
    };
    let positions = Positions::index(text);
    validate(&raw, prefix).map_err(|ps| ps.into_iter().map(|p| positions.place(file, p)).collect())
}

/// Every way `spec` falls below `policy`, in spec order. Empty: allowed.
pub fn check(spec: &Spec, policy: &Policy) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut push = |path: &str, message: String| {
        v.push(Violation {
            path: path.to_string(),
            message,
        })
    };
    if let Some(allowed) = &policy.allowed_calendars
        && !allowed.iter().any(|c| c == &spec.calendar)
    {
        push(
            "calendar",
            format!(
                "calendar `{}` is not allowed by the server policy (allowed: {})",
                spec.calendar,
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        );
    }
    let missing: Vec<&str> = policy
        .required_segments
        .iter()
        .filter(|s| !spec.segments.contains(s))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        push(
            "segments",
            format!(
                "the server policy requires segments {} to block shifts; add them to `segments`",
                missing.join(", ")
            ),
        );
    }
    if let Some(min) = policy.min_guard {
        let f = crate::duration::format;
        for (key, d) in [
            ("windows.guard.before_open", spec.windows.before_open),
            ("windows.guard.after_close", spec.windows.after_close),
        ] {
            if d < min {
                push(
                    key,
                    format!(
                        "{} is below the server policy's min_guard of {}",
                        f(d),
                        f(min)
                    ),
                );
            }
        }
    }
    if let Some(min) = policy.min_min_remaining
        && spec.windows.min_remaining < min
    {
        let f = crate::duration::format;
        push(
            "windows.min_remaining",
            format!(
                "{} is below the server policy's min_min_remaining of {}",
                f(spec.windows.min_remaining),
                f(min)
            ),
        );
    }
    let has_approval = spec
        .steps
        .iter()
        .any(|s| matches!(s, Step::Approval { .. }));
    let (need_analysis, need_approval) = match policy.require {
        Require::Analysis => (true, false),
        Require::Approval => (false, true),
        Require::Both => (true, true),
        Require::None => (false, false),
    };
    if need_analysis && !spec.has_checks() {
        push(
            "analysis",
            "the server policy requires metric checks: add `analysis` with at least one check"
                .into(),
        );
    }
    if need_approval && !has_approval {
        push(
            "steps",
            "the server policy requires a human approval: add an `approval: {min: 1}` step before a raise"
                .into(),
        );
    }
    if policy.forbid_no_data_pass
        && let Some(a) = &spec.analysis
    {
        for (i, c) in a.checks.iter().enumerate() {
            if c.no_data == NoData::Pass {
                push(
                    &format!("analysis.checks[{i}].no_data"),
                    format!(
                        "check `{}` passes on no data, which the server policy forbids: use inconclusive (the default) or fail",
                        c.name
                    ),
                );
            }
        }
    }
    if let Some(max) = policy.max_first_weight
        && let Some((i, w)) = spec.steps.iter().enumerate().find_map(|(i, s)| match s {
            Step::SetWeight(w) => Some((i, *w)),
            _ => None,
        })
        && w > max
    {
        push(
            &format!("steps[{i}].set_weight"),
            format!(
                "the first raise goes to {w}%, above the server policy's max_first_weight of {max}%: start with a smaller canary"
            ),
        );
    }
    if policy.require_separation_of_duties && !spec.approvals.separation_of_duties {
        push(
            "approvals.separation_of_duties",
            "the server policy requires separation of duties: remove `separation_of_duties: false` (the initiator may not approve)".into(),
        );
    }
    v.extend(check_reach(spec, policy));
    v
}

/// Only the checks that guard the server's network reach — `allowed_hosts`
/// and the secrets' bindings — for read-only endpoints that contact a
/// spec's target or metrics store (`pools`, `check-target`,
/// `check-metrics`). A violation here means no connection is made.
pub fn check_reach(spec: &Spec, policy: &Policy) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut push = |path: &str, message: String| {
        v.push(Violation {
            path: path.to_string(),
            message,
        })
    };
    for (path, host, port) in hosts_of(spec, &mut push) {
        if !policy.host_allowed(&host, port) {
            push(
                &path,
                format!(
                    "host {host}:{port} is not in the server policy's allowed_hosts ({})",
                    policy.hosts_list()
                ),
            );
        }
    }
    for (path, name, url) in secrets_of(spec) {
        let r = match &url {
            Some(u) => policy.secrets.check_destination(&name, u),
            // A webhook's destination is its value: checked at delivery.
            None => policy.secrets.binding(&name).map(|_| ()),
        };
        if let Err(e) = r {
            push(&path, e.to_string());
        }
    }
    v
}

/// Kept for callers that only name hosts; same as [`check_reach`].
pub fn check_hosts(spec: &Spec, policy: &Policy) -> Vec<Violation> {
    check_reach(spec, policy)
}

/// Does the spec name any secret? (`pools`, `check-target` and
/// `check-metrics` then need the deployer role.)
pub fn names_secrets(spec: &Spec) -> bool {
    !secrets_of(spec).is_empty()
}

/// Every network host the spec makes the server contact: (key path, host, port).
/// A URL that cannot be read is itself reported through `bad`.
fn hosts_of(spec: &Spec, bad: &mut impl FnMut(&str, String)) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    let endpoints = |out: &mut Vec<_>, key: &str, eps: &[Endpoint]| {
        for (i, e) in eps.iter().enumerate() {
            if let Endpoint::Tcp { host, port } = e {
                out.push((format!("{key}[{i}]"), host.clone(), *port));
            }
        }
    };
    match &spec.traffic {
        Traffic::Haproxy { endpoints: eps, .. } => {
            endpoints(&mut out, "traffic.haproxy.endpoints", eps)
        }
        Traffic::Consul {
            address, verify, ..
        } => {
            match url_host_port(address) {
                Ok((h, p)) => out.push(("traffic.consul.address".into(), h, p)),
                Err(e) => bad("traffic.consul.address", e),
            }
            if let Some(v) = verify {
                endpoints(
                    &mut out,
                    "traffic.consul.verify.haproxy_endpoints",
                    &v.haproxy_endpoints,
                );
            }
        }
    }
    if let Some(a) = &spec.analysis {
        match url_host_port(&a.prometheus) {
            Ok((h, p)) => out.push(("analysis.prometheus".into(), h, p)),
            Err(e) => bad("analysis.prometheus", e),
        }
    }
    out
}

/// Every secret the spec refers to: (key path, name, the URL it would be
/// sent to — `None` for a webhook, whose value is the URL).
fn secrets_of(spec: &Spec) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    if let Traffic::Consul {
        token_secret: Some(s),
        address,
        ..
    } = &spec.traffic
    {
        out.push((
            "traffic.consul.token_secret".into(),
            s.clone(),
            Some(address.clone()),
        ));
    }
    if let Some(a) = &spec.analysis {
        match &a.auth {
            Some(Auth::BearerSecret(s)) => out.push((
                "analysis.auth.bearer_secret".into(),
                s.clone(),
                Some(a.prometheus.clone()),
            )),
            Some(Auth::BasicSecret(s)) => out.push((
                "analysis.auth.basic_secret".into(),
                s.clone(),
                Some(a.prometheus.clone()),
            )),
            None => {}
        }
    }
    for (i, n) in spec.notify.iter().enumerate() {
        out.push((
            format!("notify[{i}].webhook_secret"),
            n.webhook_secret.clone(),
            None,
        ));
    }
    out
}

#[cfg(test)]
mod tests;
