//! The semantic rules of docs/design.md §4, checked all at once.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::raw::*;
use super::*;
use crate::diag::Problem;
use crate::duration;
use crate::windows::{Cron, CronWindow, DenyRule};

/// Most windows that all recurring `allow` and `deny` rules together may
/// start in one day (one a minute).
pub const MAX_CRON_STARTS_PER_DAY: u64 = 1440;
/// Most `allow` rules, and most `deny` rules, in one spec.
pub const MAX_WINDOW_RULES: usize = 100;

/// What one command to a traffic endpoint may take by default (HAProxy: 2 s
/// to connect + 5 s for the exchange, `traffic::haproxy::HaproxyLimits`); a
/// `min_remaining` below it is warned about.
pub const MIN_REMAINING_FLOOR: TimeDelta = TimeDelta::seconds(7);

/// Variables a check query may use (docs/design.md §3 *Checks*).
pub const TEMPLATE_VARS: [&str; 6] = [
    "rollout",
    "revision",
    "canary_pool",
    "live_pool",
    "canary_servers",
    "live_servers",
];

/// A spec name, also used for pool/check names where they end up in URLs.
pub fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

struct V {
    problems: Vec<Problem>,
}

impl V {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem::error(path, msg, fix));
    }

    fn warn(&mut self, path: impl Into<String>, msg: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem::warning(path, msg, fix));
    }

    fn duration(
        &mut self,
        path: &str,
        text: Option<&str>,
        default: TimeDelta,
        allow_zero: bool,
    ) -> TimeDelta {
        let Some(t) = text else { return default };
        match duration::parse(t) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.err(path, "must be longer than zero", duration::FIX);
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.err(path, e, duration::FIX);
                default
            }
        }
    }

    fn cron(&mut self, path: &str, text: &str) -> Option<Cron> {
        Cron::parse(text)
            .map_err(|e| {
                self.err(
                    path,
                    e,
                    "write five crontab(5) fields, e.g. \"0 0 * * 1-5\" for 00:00 Monday to Friday",
                )
            })
            .ok()
    }

    fn instant(&mut self, path: &str, text: &str) -> Option<DateTime<Utc>> {
        match DateTime::parse_from_rfc3339(text.trim()) {
            // Arithmetic with guards and durations must never overflow.
            Ok(t) if !(1970..=2200).contains(&chrono::Datelike::year(&t)) => {
                self.err(
                    path,
                    format!("`{text}` is outside the years 1970-2200"),
                    "write a time near the rollout, e.g. 2026-11-10T00:00:00+05:30",
                );
                None
            }
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.err(
                    path,
                    format!("`{text}` is not an RFC 3339 time with an offset"),
                    "write e.g. 2026-11-10T00:00:00+05:30",
                );
                None
            }
        }
    }

    fn endpoints(&mut self, path: &str, list: &[String]) -> Vec<Endpoint> {
        if list.is_empty() {
            self.err(
                path,
                "no endpoints",
                "list the HAProxy Runtime API sockets, e.g. [\"unix:/run/haproxy/admin.sock\"]",
            );
        }
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, e) in list.iter().enumerate() {
            match Endpoint::parse(e.trim()) {
                Ok(ep) => {
                    if !seen.insert(ep.clone()) {
                        self.err(
                            format!("{path}[{i}]"),
                            format!("endpoint {ep} is listed twice"),
                            "list each endpoint once",
                        );
                    }
                    out.push(ep);
                }
                Err(m) => self.err(
                    format!("{path}[{i}]"),
                    m,
                    "write unix:/run/haproxy/admin.sock or tcp:10.0.0.5:9999",
                ),
            }
        }
        out
    }

    fn pools(
        &mut self,
        path: &str,
        raw: &crate::yaml::OrderedMap<Vec<String>>,
    ) -> Option<[Pool; 2]> {
        // A pool named twice is reported as such, not folded into one (which
        // dropped the first pool's servers) nor counted as a third pool.
        let mut names: BTreeSet<&str> = BTreeSet::new();
        let mut dup = false;
        for (name, _) in &raw.0 {
            if !names.insert(name.as_str()) {
                self.err(
                    format!("{path}.{name}"),
                    format!("pool `{name}` is written twice"),
                    "write each pool once, listing all its servers",
                );
                dup = true;
            }
        }
        if dup {
            return None;
        }
        if raw.0.len() != 2 {
            self.err(
                path,
                format!("{} pools given; a target has exactly two", raw.0.len()),
                "name two pools of servers, e.g. {blue: [b1, b2], green: [g1, g2]}",
            );
            return None;
        }
        // Sorted by name, as `Traffic` promises.
        let mut sorted: Vec<&(String, Vec<String>)> = raw.0.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut ok = true;
        for (name, servers) in sorted.iter().map(|e| (&e.0, &e.1)) {
            let p = format!("{path}.{name}");
            if !is_name(name) {
                self.err(
                    &p,
                    format!("`{name}` is not a valid pool name"),
                    "use lower-case letters, digits and -",
                );
                ok = false;
            }
            if servers.is_empty() {
                self.err(
                    &p,
                    format!("pool `{name}` has no servers"),
                    "list the HAProxy server names of the pool",
                );
                ok = false;
            }
            for (i, s) in servers.iter().enumerate() {
                if s.trim().is_empty() || s.contains(char::is_whitespace) {
                    self.err(
                        format!("{p}[{i}]"),
                        format!("`{s}` is not a server name"),
                        "write the server's name as in haproxy.cfg",
                    );
                    ok = false;
                } else if !seen.insert(s.as_str()) {
                    self.err(
                        format!("{p}[{i}]"),
                        format!("server `{s}` is in both pools or listed twice"),
                        "put each server in exactly one pool, once",
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        let mut it = sorted.iter().map(|(n, s)| Pool {
            name: n.clone(),
            servers: s.clone(),
        });
        Some([it.next()?, it.next()?])
    }

    fn url(&mut self, path: &str, url: &str) {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url
                .split_once("://")
                .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
        if !ok {
            self.err(
                path,
                format!("`{url}` is not an http(s) URL"),
                "write e.g. http://127.0.0.1:8428",
            );
        }
    }

    fn query(&mut self, path: &str, q: &str) {
        if let Err(e) = check_query(q) {
            self.err(
                path,
                e,
                "fix the query; `muhurat check-metrics` runs it against the server",
            );
        }
    }

    fn secret(&mut self, path: &str, name: &str) {
        if name.trim().is_empty() {
            self.err(
                path,
                "empty secret name",
                "name a secret defined in the server policy's `secrets`",
            );
        }
    }
}

/// Obvious mistakes in a PromQL query: empty, unknown `{{…}}` variables,
/// unbalanced brackets. The server's `check-metrics` is the real test.
pub fn check_query(q: &str) -> Result<(), String> {
    if q.trim().is_empty() {
        return Err("the query is empty".into());
    }
    // Replace templates by a neutral token, checking each name.
    let mut plain = String::with_capacity(q.len());
    let mut rest = q;
    while let Some(i) = rest.find("{{") {
        plain.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return Err("`{{` without a closing `}}`".into());
        };
        let var = after[..j].trim();
        if !TEMPLATE_VARS.contains(&var) {
            return Err(format!(
                "unknown template variable `{{{{{var}}}}}`; known: {}",
                TEMPLATE_VARS.map(|v| format!("{{{{{v}}}}}")).join(", ")
            ));
        }
        plain.push('x');
        rest = &after[j + 2..];
    }
    plain.push_str(rest);
    let mut stack = Vec::new();
    let mut chars = plain.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(qc) = quote {
            if c == '\\' && qc != '`' {
                chars.next();
            } else if c == qc {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '#' => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(want) {
                    return Err(format!("unbalanced `{c}` in the query"));
                }
            }
            _ => {}
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated string starting with {q}"));
    }
    if let Some(open) = stack.pop() {
        return Err(format!("`{open}` is never closed in the query"));
    }
    Ok(())
}

/// Check every rule; `Ok` carries the spec and its warnings, `Err` every
/// problem (errors and warnings). Without a calendar (not found or invalid)
/// the rules that need it are skipped and the rest still reported.
pub fn validate(
    raw: &RawSpec,
    calendar: Option<&Calendar>,
) -> Result<(Spec, Vec<Problem>), Vec<Problem>> {
    let mut v = V {
        problems: Vec::new(),
    };

    if !is_name(&raw.name) {
        v.err(
            "name",
            format!("`{}` is not a valid name", raw.name),
            "use 1-63 lower-case letters, digits and -, starting with a letter or digit",
        );
    }
    if raw.calendar.trim().is_empty() {
        v.err(
            "calendar",
            "empty calendar name",
            "name a calendar such as nse (the file nse.yaml)",
        );
    }

    // Segments.
    let known: Option<Vec<String>> = calendar.map(Calendar::segment_names);
    let segments: Vec<String> = match &raw.segments {
        Some(list) => {
            if list.is_empty() {
                v.err(
                    "segments",
                    "segments is empty",
                    "omit it to block every segment of the calendar, or list some",
                );
            }
            let mut seen = BTreeSet::new();
            for (i, s) in list.iter().enumerate() {
                if !seen.insert(s) {
                    v.err(
                        format!("segments[{i}]"),
                        format!("segment `{s}` is listed twice"),
                        "list each segment once",
                    );
                }
                if let Some(k) = &known
                    && !k.contains(s)
                {
                    v.err(
                        format!("segments[{i}]"),
                        format!("the calendar has no segment `{s}`"),
                        format!("use one of: {}", k.join(", ")),
                    );
                }
            }
            list.clone()
        }
        None => known.clone().unwrap_or_default(),
    };

    // Windows.
    let w = &raw.windows;
    let timezone: Tz = match &w.timezone {
        None => chrono_tz::Asia::Kolkata,
        Some(name) => name.parse().unwrap_or_else(|_| {
            v.err(
                "windows.timezone",
                format!("unknown time zone `{name}`"),
                "use an IANA zone name such as Asia/Kolkata or UTC",
            );
            chrono_tz::Asia::Kolkata
        }),
    };
    let thirty = TimeDelta::minutes(30);
    let (before_open, after_close) = match &w.guard {
        None => (thirty, thirty),
        Some(g) => (
            v.duration(
                "windows.guard.before_open",
                g.before_open.as_deref(),
                thirty,
                true,
            ),
            v.duration(
                "windows.guard.after_close",
                g.after_close.as_deref(),
                thirty,
                true,
            ),
        ),
    };
    let min_remaining = v.duration(
        "windows.min_remaining",
        w.min_remaining.as_deref(),
        TimeDelta::minutes(15),
        true,
    );
    // A raise carries its window's end as a deadline, and the gate refuses
    // a command that could land after it (HAProxy: 2 s to connect + 5 s per
    // command). A raise decided with less left than that is bound to expire.
    if w.min_remaining.is_some() && min_remaining < MIN_REMAINING_FLOOR {
        v.warn(
            "windows.min_remaining",
            format!(
                "{} is less than one command may take ({}): a raise decided this close to a window's end is refused at the wire and expires",
                crate::duration::format(min_remaining),
                crate::duration::format(MIN_REMAINING_FLOOR)
            ),
            "use 10s or more (production: 15m, the default, leaves time to confirm and to roll back)",
        );
    }
    let mut allow = Vec::new();
    for (i, a) in w.allow.iter().enumerate() {
        let p = format!("windows.allow[{i}]");
        let cron = v.cron(&format!("{p}.cron"), &a.cron);
        let d = v.duration(
            &format!("{p}.duration"),
            Some(&a.duration),
            TimeDelta::zero(),
            false,
        );
        if d > TimeDelta::days(7) {
            v.err(
                format!("{p}.duration"),
                "an allow window is longer than 7 days",
                "shorten it; windows are meant to be nights or weekends",
            );
        }
        if let Some(cron) = cron {
            allow.push(CronWindow {
                name: a.name.clone(),
                cron,
                duration: d,
            });
        }
    }
    let mut deny = Vec::new();
    for (i, d) in w.deny.iter().enumerate() {
        let p = format!("windows.deny[{i}]");
        match (&d.from, &d.to, &d.cron, &d.duration) {
            (Some(f), Some(t), None, None) => {
                let from = v.instant(&format!("{p}.from"), f);
                let to = v.instant(&format!("{p}.to"), t);
                if let (Some(from), Some(to)) = (from, to) {
                    if from >= to {
                        v.err(
                            format!("{p}.to"),
                            "`to` is not after `from`",
                            "a deny window must end after it starts",
                        );
                    } else {
                        deny.push(DenyRule::Fixed {
                            name: d.name.clone(),
                            from,
                            to,
                        });
                    }
                }
            }
            (None, None, Some(c), Some(dur)) => {
                let cron = v.cron(&format!("{p}.cron"), c);
                let dd = v.duration(
                    &format!("{p}.duration"),
                    Some(dur),
                    TimeDelta::zero(),
                    false,
                );
                if let Some(cron) = cron {
                    deny.push(DenyRule::Recurring(CronWindow {
                        name: d.name.clone(),
                        cron,
                        duration: dd,
                    }));
                }
            }
            _ => v.err(
                &p,
                "a deny window needs either `from` and `to`, or `cron` and `duration`",
                "give one of the two forms",
            ),
        }
    }

    // Expansion cost: every recurring rule is expanded into windows for
    // the whole range a plan or `windows --days` asks for. One start a
    // minute across all rules is generous for nights and weekends and keeps
    // a year of windows in a few MB; 1,000 rules of `*/1 * * * *` would be
    // 525 million windows.
    let starts: u64 = allow
        .iter()
        .map(|w| u64::from(w.cron.starts_per_day()))
        .chain(deny.iter().filter_map(|d| match d {
            DenyRule::Recurring(w) => Some(u64::from(w.cron.starts_per_day())),
            DenyRule::Fixed { .. } => None,
        }))
        .sum();
    if starts > MAX_CRON_STARTS_PER_DAY {
        v.err(
            "windows",
            format!(
                "the allow and deny rules start up to {starts} windows a day, above the limit of {MAX_CRON_STARTS_PER_DAY}"
            ),
            "use fewer rules and longer windows: one rule such as {cron: \"0 0 * * 1-5\", duration: 7h} per night",
        );
    }
    for (key, n) in [
        ("windows.allow", w.allow.len()),
        ("windows.deny", w.deny.len()),
    ] {
        if n > MAX_WINDOW_RULES {
            v.err(
                key,
                format!("{n} rules, above the limit of {MAX_WINDOW_RULES}"),
                "merge rules; a few nights and freezes are what windows are for",
            );
        }
    }

    // Traffic.
    let t = &raw.traffic;
    let traffic = match (&t.haproxy, &t.consul) {
        (Some(h), None) => {
            let endpoints = v.endpoints("traffic.haproxy.endpoints", &h.endpoints);
            if h.backend.trim().is_empty() {
                v.err(
                    "traffic.haproxy.backend",
                    "empty backend name",
                    "name the HAProxy backend as in haproxy.cfg",
                );
            }
            let pools = v.pools("traffic.haproxy.pools", &h.pools);
            pools.map(|pools| Traffic::Haproxy {
                endpoints,
                backend: h.backend.clone(),
                pools,
                shutdown_sessions: h.rollback.as_ref().and_then(|r| r.shutdown_sessions),
            })
        }
        (None, Some(c)) => {
            v.url("traffic.consul.address", &c.address);
            if let Some(s) = &c.token_secret {
                v.secret("traffic.consul.token_secret", s);
            }
            // The key becomes a URL path under /v1/kv/: `..`, a leading `/`,
            // `?`, `#`, `%` or `\` could walk the server to another path of
            // the agent (or a proxy in front of it) and echo what is there.
            let k = &c.kv.key;
            let traverses = k.starts_with('/')
                || k.split('/')
                    .any(|seg| seg == ".." || seg == "." || seg.is_empty())
                || k.contains(['?', '#', '%', '\\'])
                || k.chars().any(char::is_control);
            if traverses {
                v.err(
                    "traffic.consul.kv.key",
                    format!("`{k}` is not a plain KV key (no leading `/`, no `.`/`..` or empty segments, no ? # % \\)"),
                    "write a key such as muhurat/kite-api/weights",
                );
            } else if c.kv.key.trim().is_empty() || c.kv.key.contains(char::is_whitespace) {
                v.err(
                    "traffic.consul.kv.key",
                    format!("`{}` is not a KV key", c.kv.key),
                    "write a key such as muhurat/kite-api/weights",
                );
            }
            let pools = v.pools("traffic.consul.pools", &c.pools);
            let verify = c.verify.as_ref().map(|vf| Verify {
                haproxy_endpoints: v.endpoints(
                    "traffic.consul.verify.haproxy_endpoints",
                    &vf.haproxy_endpoints,
                ),
                backend: vf.backend.clone(),
            });
            if verify.is_none() {
                v.warn(
                    "traffic.consul",
                    "no `verify`: a KV write proves nothing about HAProxy, so no weight change can ever be confirmed — the rollout will not advance, and a rollback or abort stays `rolling_back` (retried) until a person confirms by hand that HAProxy has the canary at 0",
                    "add verify: {haproxy_endpoints: [...], backend: ...}",
                );
            }
            pools.map(|pools| Traffic::Consul {
                address: c.address.clone(),
                token_secret: c.token_secret.clone(),
                key: c.kv.key.clone(),
                pools,
                verify,
            })
        }
        (Some(_), Some(_)) => {
            v.err(
                "traffic",
                "both haproxy and consul are given",
                "keep exactly one traffic backend",
            );
            None
        }
        (None, None) => {
            v.err(
                "traffic",
                "no traffic backend",
                "add traffic.haproxy or traffic.consul",
            );
            None
        }
    };

    // Analysis.
    let analysis = raw.analysis.as_ref().map(|a| {
        v.url("analysis.prometheus", &a.prometheus);
        let auth = match &a.auth {
            None => None,
            Some(RawAuth {
                bearer_secret: Some(b),
                basic_secret: None,
            }) => {
                v.secret("analysis.auth.bearer_secret", b);
                Some(Auth::BearerSecret(b.clone()))
            }
            Some(RawAuth {
                bearer_secret: None,
                basic_secret: Some(b),
            }) => {
                v.secret("analysis.auth.basic_secret", b);
                Some(Auth::BasicSecret(b.clone()))
            }
            Some(_) => {
                v.err(
                    "analysis.auth",
                    "give exactly one of bearer_secret and basic_secret",
                    "keep one",
                );
                None
            }
        };
        let interval = v.duration(
            "analysis.interval",
            a.interval.as_deref(),
            TimeDelta::minutes(1),
            false,
        );
        let query_delay = v.duration(
            "analysis.query_delay",
            a.query_delay.as_deref(),
            TimeDelta::seconds(30),
            true,
        );
        let min_passes = a.min_passes.unwrap_or(5);
        if min_passes == 0 {
            v.err(
                "analysis.min_passes",
                "must be at least 1",
                "a step never advances without evidence; use 1 or more",
            );
        }
        let inconclusive_limit = a.inconclusive_limit.unwrap_or(10);
        if inconclusive_limit == 0 {
            v.err(
                "analysis.inconclusive_limit",
                "must be at least 1",
                "use 1 or more",
            );
        }
        if a.checks.is_empty() {
            v.err(
                "analysis.checks",
                "no checks",
                "add at least one check, or remove `analysis`",
            );
        }
        let mut names = BTreeSet::new();
        let mut checks = Vec::new();
        for (i, c) in a.checks.iter().enumerate() {
            let p = format!("analysis.checks[{i}]");
            if c.name.trim().is_empty() {
                v.err(
                    format!("{p}.name"),
                    "empty check name",
                    "name the check, e.g. error-rate",
                );
            } else if !names.insert(c.name.clone()) {
                v.err(
                    format!("{p}.name"),
                    format!("check `{}` is defined twice", c.name),
                    "give each check its own name",
                );
            }
            v.query(&format!("{p}.query"), &c.query);
            if let Some(mt) = &c.min_traffic {
                v.query(&format!("{p}.min_traffic.query"), &mt.query);
            }
            if let Some(b) = &c.baseline {
                v.query(&format!("{p}.baseline.query"), &b.query);
                if b.max_ratio.is_none() && b.min_ratio.is_none() {
                    v.err(
                        format!("{p}.baseline"),
                        "a baseline needs max_ratio, min_ratio or both",
                        "add max_ratio: 1.2 for \"at most 20% worse than live\"",
                    );
                }
                if let (Some(lo), Some(hi)) = (b.min_ratio, b.max_ratio)
                    && lo > hi
                {
                    v.err(
                        format!("{p}.baseline.min_ratio"),
                        "min_ratio is above max_ratio",
                        "no value could pass; swap them",
                    );
                }
            }
            if c.min.is_none() && c.max.is_none() && c.baseline.is_none() {
                v.err(
                    &p,
                    "the check has no threshold",
                    "give max, min or baseline; a check without one passes on any value",
                );
            }
            if let (Some(lo), Some(hi)) = (c.min, c.max)
                && lo > hi
            {
                v.err(
                    format!("{p}.min"),
                    "min is above max",
                    "no value could pass; swap them",
                );
            }
            for (k, x) in [("min", c.min), ("max", c.max)] {
                if x.is_some_and(f64::is_nan) {
                    v.err(
                        format!("{p}.{k}"),
                        "NaN is not a threshold",
                        "write a number",
                    );
                }
            }
            let failure_limit = c.failure_limit.unwrap_or(1);
            if failure_limit == 0 {
                v.err(
                    format!("{p}.failure_limit"),
                    "must be at least 1",
                    "1 rolls back on the first failure",
                );
            }
            checks.push(Check {
                name: c.name.clone(),
                query: c.query.clone(),
                min: c.min,
                max: c.max,
                failure_limit,
                no_data: c.no_data.unwrap_or(NoData::Inconclusive),
                min_traffic: c.min_traffic.as_ref().map(|m| MinTraffic {
                    query: m.query.clone(),
                    min: m.min,
                }),
                baseline: c.baseline.as_ref().map(|b| Baseline {
                    query: b.query.clone(),
                    max_ratio: b.max_ratio,
                    min_ratio: b.min_ratio,
                }),
            });
        }
        Analysis {
            prometheus: a.prometheus.clone(),
            auth,
            interval,
            query_delay,
            evidence: a.evidence.unwrap_or(Evidence::Sessions),
            min_passes,
            inconclusive_limit,
            checks,
        }
    });
    if raw.analysis.is_none() {
        v.warn(
            "analysis",
            "no analysis: the rollout advances on time and approvals alone",
            "add analysis.checks so a failing canary rolls back",
        );
    }

    // Approvals and notify.
    let approvals = Approvals {
        separation_of_duties: raw.approvals.separation_of_duties.unwrap_or(true),
        max_age: v.duration(
            "approvals.max_age",
            raw.approvals.max_age.as_deref(),
            TimeDelta::hours(24),
            false,
        ),
    };
    for (i, n) in raw.notify.iter().enumerate() {
        v.secret(&format!("notify[{i}].webhook_secret"), &n.webhook_secret);
    }

    // Steps.
    let default_segment = segments.first().cloned();
    let mut steps = Vec::new();
    let mut last_weight: Option<(usize, u32)> = None;
    if raw.steps.is_empty() {
        v.err(
            "steps",
            "no steps",
            "add steps, e.g. - set_weight: 5 ... - set_weight: 100",
        );
    }
    for (i, s) in raw.steps.iter().enumerate() {
        let p = format!("steps[{i}]");
        match s {
            RawStep::SetWeight(w) => {
                let path = format!("{p}.set_weight");
                if *w == 0 || *w > 100 {
                    v.err(&path, format!("weight {w} is not 1-100"), "a set_weight raises the canary share to 1-100%; lowering is what rollback and abort are for");
                } else if let Some((_, prev)) = last_weight
                    && *w <= prev
                {
                    v.err(
                        &path,
                        format!("weight {w} does not increase on the previous set_weight ({prev})"),
                        "set_weight values must strictly increase",
                    );
                }
                last_weight = Some((i, *w));
                steps.push(Step::SetWeight(*w));
            }
            RawStep::Bake(b) => match (&b.duration, b.sessions) {
                (Some(d), None) => {
                    if b.segment.is_some() {
                        v.err(
                            format!("{p}.bake.segment"),
                            "segment only applies to a bake by sessions",
                            "remove it, or bake by sessions",
                        );
                    }
                    let d = v.duration(
                        &format!("{p}.bake.duration"),
                        Some(d),
                        TimeDelta::zero(),
                        false,
                    );
                    steps.push(Step::BakeDuration(d));
                }
                (None, Some(n)) => {
                    if n == 0 {
                        v.err(
                            format!("{p}.bake.sessions"),
                            "must be at least 1",
                            "bake through 1 or more trading days",
                        );
                    }
                    let seg = b
                        .segment
                        .clone()
                        .or_else(|| default_segment.clone())
                        .unwrap_or_default();
                    if !segments.contains(&seg) && (calendar.is_some() || raw.segments.is_some()) {
                        v.err(
                            format!("{p}.bake.segment"),
                            format!("`{seg}` is not one of the spec's segments"),
                            format!("use one of: {}", segments.join(", ")),
                        );
                    }
                    steps.push(Step::BakeSessions {
                        sessions: n,
                        segment: seg,
                    });
                }
                (Some(_), Some(_)) => v.err(
                    format!("{p}.bake"),
                    "both duration and sessions given",
                    "bake either for a duration or through trading sessions",
                ),
                (None, None) => v.err(
                    format!("{p}.bake"),
                    "a bake needs duration or sessions",
                    "write bake: {duration: 4h} or bake: {sessions: 1}",
                ),
            },
            RawStep::Approval(a) => {
                let min = a.min.unwrap_or(1);
                if min == 0 {
                    v.err(
                        format!("{p}.approval.min"),
                        "must be at least 1",
                        "an approval step waits for 1 or more approvers",
                    );
                }
                steps.push(Step::Approval { min });
            }
            RawStep::Pause(_) => steps.push(Step::Pause),
        }
    }
    let weights: Vec<u32> = steps
        .iter()
        .filter_map(|s| {
            if let Step::SetWeight(w) = s {
                Some(*w)
            } else {
                None
            }
        })
        .collect();
    match last_weight {
        None if !raw.steps.is_empty() => v.err(
            "steps",
            "no set_weight step",
            "end the steps with set_weight: 100",
        ),
        Some((i, w)) if w != 100 => v.err(
            format!("steps[{i}].set_weight"),
            format!("the last set_weight is {w}, not 100"),
            "end with set_weight: 100 so the rollout completes",
        ),
        _ => {}
    }
    if let Some(first) = weights.first()
        && *first > 10
    {
        let i = raw
            .steps
            .iter()
            .position(|s| matches!(s, RawStep::SetWeight(_)))
            .unwrap_or(0);
        v.warn(
            format!("steps[{i}].set_weight"),
            format!("the first weight is {first}%"),
            "start with 10% or less so a bad release reaches few customers",
        );
    }
    if !steps.iter().any(|s| matches!(s, Step::Approval { .. })) && !steps.is_empty() {
        v.warn(
            "steps",
            "no approval step: no person confirms before traffic grows",
            "add - approval: {min: 1} before the larger raises",
        );
    }

    let has_errors = v
        .problems
        .iter()
        .any(|p| p.severity == crate::diag::Severity::Error);
    match traffic {
        Some(traffic) if !has_errors => Ok((
            Spec {
                name: raw.name.clone(),
                description: raw.description.clone(),
                calendar: raw.calendar.trim().to_string(),
                segments,
                windows: Windows {
                    timezone,
                    before_open,
                    after_close,
                    min_remaining,
                    allow,
                    deny,
                },
                traffic,
                analysis,
                on_failure: raw.on_failure.unwrap_or(OnFailure::Rollback),
                approvals,
                notify: raw
                    .notify
                    .iter()
                    .map(|n| Notify {
                        webhook_secret: n.webhook_secret.clone(),
                    })
                    .collect(),
                steps,
            },
            v.problems,
        )),
        _ => Err(v.problems),
    }
}
