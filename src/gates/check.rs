//! One check, evaluated once: render the query, ask the source, decide.
//!
//! The decision ([`verdict`]) is a pure function of the numbers so that every
//! rule of docs/design.md §3 is table-tested without a server; [`evaluate`] is the
//! thin async shell around it. The one decision a newcomer must know: *no
//! data is never a pass by accident*. An empty result, NaN, too little
//! traffic or an unusable baseline all end in `inconclusive` (or the check's
//! explicit `no_data`), so silence at night can neither advance nor fail a
//! rollout. Streaks, limits and evidence live in the engine, not here.

use chrono::{DateTime, Utc};

use super::{Evaluation, GateError, MetricsSource, Sample, Vars, Verdict};
use crate::spec::{Check, NoData, Spec};

/// Substitute the `{{…}}` template variables of a check query.
///
/// `{{canary_servers}}` and `{{live_servers}}` become regex alternations
/// (`g1|g2`) of regex-escaped names, meant for `server=~"…"`. A PromQL
/// string in double or single quotes decodes backslash escapes, so inside
/// one every backslash the regex needs is doubled (`g1\\.a`); in backticks
/// or outside a string it is written once. Without this, a server named
/// `g1.a` would also match `g1xa`, or Prometheus would reject `"g1\.a"` as an
/// unknown escape. Unknown variables are left as written (`validate`
/// rejects them before a spec gets here).
pub fn render(query: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(query.len() + 32);
    let mut quote = Quote::None;
    let mut rest = query;
    while let Some(open) = rest.find("{{") {
        let (before, after) = rest.split_at(open);
        quote = quote.scan(before);
        out.push_str(before);
        let Some(close) = after[2..].find("}}") else {
            rest = after;
            break;
        };
        let name = after[2..2 + close].trim();
        let whole = &after[..close + 4];
        match value_of(name, vars, quote) {
            Some(v) => out.push_str(&v),
            None => out.push_str(whole),
        }
        rest = &after[close + 4..];
    }
    out.push_str(rest);
    out
}

/// Does `query` use a variable that depends on which pool is the canary
/// (`{{canary_pool}}`, `{{live_pool}}`, `{{canary_servers}}`,
/// `{{live_servers}}`)? A query that does cannot be run before that is known.
pub fn uses_pool_vars(query: &str) -> bool {
    let mut rest = query;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return false;
        };
        let name = after[..close].trim();
        if matches!(
            name,
            "canary_pool" | "live_pool" | "canary_servers" | "live_servers"
        ) {
            return true;
        }
        rest = &after[close + 2..];
    }
    false
}

/// Which PromQL string literal (if any) the text scanned so far leaves us in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    /// `"…"` or `'…'`: backslash escapes are decoded.
    Escaped(char),
    /// `` `…` ``: raw.
    Raw,
    /// A `#` comment, up to the end of the line.
    Comment,
}

impl Quote {
    fn scan(mut self, text: &str) -> Quote {
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            self = match (self, c) {
                (Quote::None, '"' | '\'') => Quote::Escaped(c),
                (Quote::None, '`') => Quote::Raw,
                (Quote::None, '#') => Quote::Comment,
                (Quote::Escaped(_), '\\') => {
                    chars.next();
                    self
                }
                (Quote::Escaped(q), c) if c == q => Quote::None,
                (Quote::Raw, '`') => Quote::None,
                (Quote::Comment, '\n') => Quote::None,
                (s, _) => s,
            };
        }
        self
    }
}

fn value_of(name: &str, vars: &Vars, quote: Quote) -> Option<String> {
    let plain = |s: &str| match quote {
        Quote::Escaped(q) => escape_for_string(s, q),
        _ => s.to_string(),
    };
    Some(match name {
        "rollout" => plain(&vars.rollout),
        "revision" => plain(&vars.revision),
        "canary_pool" => plain(&vars.canary_pool),
        "live_pool" => plain(&vars.live_pool),
        "canary_servers" => plain(&alternation(&vars.canary_servers)),
        "live_servers" => plain(&alternation(&vars.live_servers)),
        _ => return None,
    })
}

/// `g1|g2`, each name regex-escaped. An empty pool renders as a regex that
/// matches nothing, not as `""` (which would match series without the label).
fn alternation(names: &[String]) -> String {
    if names.is_empty() {
        // RE2 has no `(?!)`; a character class that excludes everything
        // matches nothing.
        return "[^\\s\\S]".to_string();
    }
    names
        .iter()
        .map(|n| regex_escape(n))
        .collect::<Vec<_>>()
        .join("|")
}

/// Escape RE2 metacharacters (PromQL regexes are RE2, fully anchored).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Make `s` decode to itself inside a PromQL string quoted with `q`.
fn escape_for_string(s: &str, q: char) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c == '\\' || c == q {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Template values for a rollout whose canary (idle) pool is `canary_pool`.
/// The live pool is the spec's other pool.
pub fn vars_for(
    spec: &Spec,
    rollout: &str,
    revision: &str,
    canary_pool: &str,
) -> Result<Vars, GateError> {
    let pools = spec.traffic.pools();
    let (canary, live) = match pools {
        [a, b] if a.name == canary_pool => (a, b),
        [a, b] if b.name == canary_pool => (b, a),
        [a, b] => {
            return Err(GateError(format!(
                "pool `{canary_pool}` is not one of the spec's pools ({}, {})",
                a.name, b.name
            )));
        }
    };
    Ok(Vars {
        rollout: rollout.to_string(),
        revision: revision.to_string(),
        canary_pool: canary.name.clone(),
        live_pool: live.name.clone(),
        canary_servers: canary.servers.clone(),
        live_servers: live.servers.clone(),
    })
}

/// A number for a person: `+Inf`, `-Inf`, `NaN`, else at most 6
/// significant digits (rate ratios come back as 0.09999999999999999).
pub(crate) fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x == f64::INFINITY {
        "+Inf".into()
    } else if x == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        // Round to 6 significant digits, then print the shortest form of
        // the rounded number (no trailing zeros, no exponent for 0.1).
        let rounded: f64 = format!("{x:.5e}").parse().unwrap_or(x);
        format!("{rounded}")
    }
}

/// `value` and `limit` for a reason; at full precision when rounding would
/// make a breach read "0.01 > max 0.01".
fn fmt_vs(value: f64, limit: f64) -> (String, String) {
    let (v, l) = (fmt_num(value), fmt_num(limit));
    if v == l && value != limit {
        (format!("{value}"), format!("{limit}"))
    } else {
        (v, l)
    }
}

/// Decide one evaluation from the numbers, exactly as docs/design.md §3 says.
///
/// `traffic` is the `min_traffic` query's answer and `baseline` the
/// baseline query's; pass `None` when the check has no such query. Order:
/// 1. too little traffic (or no traffic data) → inconclusive, whatever the
///    value says: a ratio over three requests proves nothing either way;
/// 2. no data (empty or NaN) → the check's `no_data` verdict;
/// 3. `min`/`max`: pass when `value >= min` and `value <= max` (±Inf are
///    numbers and compare as such);
/// 4. baseline: canary ÷ baseline within `[min_ratio, max_ratio]`; a
///    baseline of 0, empty or NaN (or an undefined ratio, Inf ÷ Inf) is
///    inconclusive.
///
/// Thresholds and baseline combine as "all must hold": any breach is a fail
/// (a threshold breach is a fact even when the baseline is unusable);
/// otherwise any inconclusive part makes the whole inconclusive.
pub fn verdict(
    check: &Check,
    value: Sample,
    traffic: Option<Sample>,
    baseline: Option<Sample>,
) -> (Verdict, String) {
    if let Some(guard) = &check.min_traffic {
        match traffic.map(no_nan) {
            Some(Sample::Value(t)) if t >= guard.min => {}
            Some(Sample::Value(t)) => {
                let (ts, ms) = fmt_vs(t, guard.min);
                return (
                    Verdict::Inconclusive,
                    format!("traffic {ts} < min_traffic {ms}"),
                );
            }
            Some(Sample::NoData) | None => {
                return (
                    Verdict::Inconclusive,
                    format!(
                        "no traffic data (min_traffic {} not shown to be met)",
                        fmt_num(guard.min)
                    ),
                );
            }
        }
    }

    let v = match no_nan(value) {
        Sample::Value(v) => v,
        Sample::NoData => {
            let verdict = match check.no_data {
                NoData::Pass => Verdict::Pass,
                NoData::Fail => Verdict::Fail,
                NoData::Inconclusive => Verdict::Inconclusive,
            };
            let word = match check.no_data {
                NoData::Pass => "pass",
                NoData::Fail => "fail",
                NoData::Inconclusive => "inconclusive",
            };
            return (
                verdict,
                format!("no data (empty result or NaN); no_data: {word}"),
            );
        }
    };

    let mut breaches = Vec::new();
    let mut holds = Vec::new();
    let mut unknown = Vec::new();

    if let Some(max) = check.max {
        let (vs, ms) = fmt_vs(v, max);
        if v <= max {
            holds.push(format!("{vs} <= max {ms}"));
        } else {
            breaches.push(format!("{vs} > max {ms}"));
        }
    }
    if let Some(min) = check.min {
        let (vs, ms) = fmt_vs(v, min);
        if v >= min {
            holds.push(format!("{vs} >= min {ms}"));
        } else {
            breaches.push(format!("{vs} < min {ms}"));
        }
    }

    if let Some(b) = &check.baseline {
        match baseline.map(no_nan) {
            None | Some(Sample::NoData) => unknown.push("no baseline data".to_string()),
            // A float pattern compares with `==`, so -0.0 lands here too.
            Some(Sample::Value(0.0)) => {
                unknown.push("baseline is 0; the ratio is undefined".to_string())
            }
            Some(Sample::Value(base)) => {
                let ratio = v / base;
                let what = format!("(canary {} / baseline {})", fmt_num(v), fmt_num(base));
                if ratio.is_nan() {
                    unknown.push(format!("ratio {what} is undefined"));
                } else {
                    let describe = |limit: f64| {
                        let (r, l) = fmt_vs(ratio, limit);
                        (format!("{r} {what}"), l)
                    };
                    if let Some(hi) = b.max_ratio {
                        let (w, l) = describe(hi);
                        if ratio <= hi {
                            holds.push(format!("ratio {w} <= max_ratio {l}"));
                        } else {
                            breaches.push(format!("ratio {w} > max_ratio {l}"));
                        }
                    }
                    if let Some(lo) = b.min_ratio {
                        let (w, l) = describe(lo);
                        if ratio >= lo {
                            holds.push(format!("ratio {w} >= min_ratio {l}"));
                        } else {
                            breaches.push(format!("ratio {w} < min_ratio {l}"));
                        }
                    }
                }
            }
        }
    }

    if !breaches.is_empty() {
        (Verdict::Fail, breaches.join("; "))
    } else if !unknown.is_empty() {
        (Verdict::Inconclusive, unknown.join("; "))
    } else if holds.is_empty() {
        // validate() refuses a check without a threshold; should one get here
        // anyway, it must not pass on any value.
        (
            Verdict::Inconclusive,
            format!("{} (the check has no threshold)", fmt_num(v)),
        )
    } else {
        (Verdict::Pass, holds.join("; "))
    }
}

async fn optional(
    source: &dyn MetricsSource,
    query: Option<&str>,
    time: DateTime<Utc>,
) -> Option<Result<super::Answer, GateError>> {
    match query {
        Some(q) => Some(source.query(q, time).await),
        None => None,
    }
}

/// A NaN value is no data, wherever it came from.
fn no_nan(s: Sample) -> Sample {
    match s {
        Sample::Value(x) if x.is_nan() => Sample::NoData,
        s => s,
    }
}

/// Evaluate `check` once at `query_time` (the caller's `now − query_delay`).
///
/// The main, traffic and baseline queries run concurrently: the time from a
/// failing sample to a rollback is bounded by one interval plus this call.
/// A failed query yields `Verdict::Error` with a message naming the check
/// and which of its queries failed; a partial answer is never judged.
pub async fn evaluate(
    check: &Check,
    source: &dyn MetricsSource,
    vars: &Vars,
    query_time: DateTime<Utc>,
) -> Evaluation {
    let query = render(&check.query, vars);
    let traffic_q = check.min_traffic.as_ref().map(|m| render(&m.query, vars));
    let baseline_q = check.baseline.as_ref().map(|b| render(&b.query, vars));

    let (main, traffic, baseline) = tokio::join!(
        source.query(&query, query_time),
        optional(source, traffic_q.as_deref(), query_time),
        optional(source, baseline_q.as_deref(), query_time),
    );

    let error = |which: &str, e: GateError| Evaluation {
        check: check.name.clone(),
        verdict: Verdict::Error,
        value: None,
        query: query.clone(),
        reason: format!("check `{}`: {which} failed: {e}", check.name),
        server_date: None,
    };
    let main = match main {
        Ok(a) => a,
        Err(e) => return error("query", e),
    };
    let traffic = match traffic.transpose() {
        Ok(a) => a,
        Err(e) => return error("min_traffic query", e),
    };
    let baseline = match baseline.transpose() {
        Ok(a) => a,
        Err(e) => return error("baseline query", e),
    };

    let (verdict, mut reason) = verdict(
        check,
        main.sample,
        traffic.as_ref().map(|a| a.sample),
        baseline.as_ref().map(|a| a.sample),
    );
    // Show the guard's number even when it held, so a person reading
    // check-metrics sees how close to the guard the traffic is.
    if let (Some(guard), Some(Sample::Value(t))) = (
        &check.min_traffic,
        traffic.as_ref().map(|a| no_nan(a.sample)),
    ) && t >= guard.min
    {
        reason.push_str(&format!(
            "; traffic {} >= min_traffic {}",
            fmt_num(t),
            fmt_num(guard.min)
        ));
    }
    Evaluation {
        check: check.name.clone(),
        verdict,
        value: match no_nan(main.sample) {
            Sample::Value(v) => Some(v),
            Sample::NoData => None,
        },
        query,
        reason,
        server_date: main.server_date,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Baseline, MinTraffic};
    use rstest::rstest;

    const INF: f64 = f64::INFINITY;
    const NAN: f64 = f64::NAN;
    use Sample::{NoData as Nd, Value as V};
    use Verdict::{Fail as F, Inconclusive as I, Pass as P};

    fn check(min: Option<f64>, max: Option<f64>) -> Check {
        Check {
            name: "error-rate".into(),
            query: "x".into(),
            min,
            max,
            failure_limit: 1,
            no_data: NoData::Inconclusive,
            min_traffic: None,
            baseline: None,
        }
    }

    #[rstest]
    // max only: pass when value <= max (equal passes).
    #[case::below_max(None, Some(0.01), V(0.005), P)]
    #[case::at_max(None, Some(0.01), V(0.01), P)]
    #[case::above_max(None, Some(0.01), V(0.031), F)]
    // min only: pass when value >= min.
    #[case::above_min(Some(0.99), None, V(0.995), P)]
    #[case::at_min(Some(0.99), None, V(0.99), P)]
    #[case::below_min(Some(0.99), None, V(0.5), F)]
    // both.
    #[case::inside(Some(1.0), Some(2.0), V(1.5), P)]
    #[case::under(Some(1.0), Some(2.0), V(0.5), F)]
    #[case::over(Some(1.0), Some(2.0), V(2.5), F)]
    // ±Inf are numbers.
    #[case::plus_inf_over_max(None, Some(0.01), V(INF), F)]
    #[case::plus_inf_over_min(Some(0.0), None, V(INF), P)]
    #[case::minus_inf_under_min(Some(0.0), None, V(-INF), F)]
    #[case::minus_inf_under_max(None, Some(0.01), V(-INF), P)]
    #[case::inf_max_inf(None, Some(INF), V(INF), P)]
    // No data: the default no_data is inconclusive, never a pass.
    #[case::no_data(None, Some(0.01), Nd, I)]
    #[case::nan_is_no_data(None, Some(0.01), V(NAN), I)]
    fn thresholds(
        #[case] min: Option<f64>,
        #[case] max: Option<f64>,
        #[case] value: Sample,
        #[case] want: Verdict,
    ) {
        let (got, reason) = verdict(&check(min, max), value, None, None);
        assert_eq!(got, want, "{reason}");
    }

    #[rstest]
    #[case::pass(NoData::Pass, P)]
    #[case::fail(NoData::Fail, F)]
    #[case::inconclusive(NoData::Inconclusive, I)]
    fn no_data_verdict_is_the_checks(#[case] no_data: NoData, #[case] want: Verdict) {
        let c = Check {
            no_data,
            ..check(None, Some(0.01))
        };
        for value in [Nd, V(NAN)] {
            let (got, reason) = verdict(&c, value, None, None);
            assert_eq!(got, want);
            assert!(reason.starts_with("no data"), "{reason}");
        }
    }

    fn guarded(no_data: NoData) -> Check {
        Check {
            no_data,
            min_traffic: Some(MinTraffic {
                query: "t".into(),
                min: 5.0,
            }),
            ..check(None, Some(0.01))
        }
    }

    #[rstest]
    #[case::enough_and_good(Some(V(12.0)), V(0.001), P)]
    #[case::exactly_min(Some(V(5.0)), V(0.001), P)]
    #[case::enough_and_bad(Some(V(12.0)), V(0.5), F)]
    // Below the guard, even a terrible value is only inconclusive.
    #[case::too_little_bad(Some(V(0.2)), V(0.5), I)]
    #[case::too_little_good(Some(V(0.2)), V(0.001), I)]
    #[case::no_traffic_data(Some(Nd), V(0.001), I)]
    #[case::nan_traffic(Some(V(NAN)), V(0.001), I)]
    #[case::traffic_not_queried(None, V(0.001), I)]
    #[case::inf_traffic(Some(V(INF)), V(0.001), P)]
    fn min_traffic_guard(
        #[case] traffic: Option<Sample>,
        #[case] value: Sample,
        #[case] want: Verdict,
    ) {
        let (got, reason) = verdict(&guarded(NoData::Inconclusive), value, traffic, None);
        assert_eq!(got, want, "{reason}");
    }

    #[test]
    fn guard_comes_before_no_data() {
        // At night: no traffic and no error series. `no_data: fail` must not
        // roll back a rollout merely because nobody is trading.
        let (got, reason) = verdict(&guarded(NoData::Fail), Nd, Some(V(0.0)), None);
        assert_eq!(got, I);
        assert_eq!(reason, "traffic 0 < min_traffic 5");
        // With traffic, no data means what the check says.
        let (got, _) = verdict(&guarded(NoData::Fail), Nd, Some(V(9.0)), None);
        assert_eq!(got, F);
    }

    fn vs_baseline(min_ratio: Option<f64>, max_ratio: Option<f64>) -> Check {
        Check {
            baseline: Some(Baseline {
                query: "b".into(),
                max_ratio,
                min_ratio,
            }),
            ..check(None, None)
        }
    }

    #[rstest]
    #[case::within_max(None, Some(1.2), V(0.22), Some(V(0.2)), P)]
    #[case::at_max(None, Some(1.25), V(0.25), Some(V(0.2)), P)]
    #[case::over_max(None, Some(1.2), V(0.3), Some(V(0.2)), F)]
    #[case::within_min(Some(0.8), None, V(0.9), Some(V(1.0)), P)]
    #[case::under_min(Some(0.8), None, V(0.5), Some(V(1.0)), F)]
    #[case::in_band(Some(0.8), Some(1.2), V(1.0), Some(V(1.0)), P)]
    #[case::zero_baseline(None, Some(1.2), V(0.3), Some(V(0.0)), I)]
    #[case::negative_zero_baseline(None, Some(1.2), V(0.3), Some(V(-0.0)), I)]
    #[case::empty_baseline(None, Some(1.2), V(0.3), Some(Nd), I)]
    #[case::nan_baseline(None, Some(1.2), V(0.3), Some(V(NAN)), I)]
    #[case::baseline_not_queried(None, Some(1.2), V(0.3), None, I)]
    #[case::inf_canary(None, Some(1.2), V(INF), Some(V(0.2)), F)]
    #[case::inf_baseline(None, Some(1.2), V(0.3), Some(V(INF)), P)]
    #[case::inf_over_inf(None, Some(1.2), V(INF), Some(V(INF)), I)]
    #[case::canary_no_data(None, Some(1.2), Nd, Some(V(0.2)), I)]
    fn baseline_ratio(
        #[case] min_ratio: Option<f64>,
        #[case] max_ratio: Option<f64>,
        #[case] value: Sample,
        #[case] base: Option<Sample>,
        #[case] want: Verdict,
    ) {
        let (got, reason) = verdict(&vs_baseline(min_ratio, max_ratio), value, None, base);
        assert_eq!(got, want, "{reason}");
    }

    #[rstest]
    // Both hold → pass.
    #[case::both_hold(V(0.005), Some(V(0.005)), P)]
    // Threshold breached, baseline fine → fail.
    #[case::threshold_breach(V(0.02), Some(V(0.02)), F)]
    // Threshold fine, baseline breached → fail.
    #[case::baseline_breach(V(0.009), Some(V(0.001)), F)]
    // Threshold fine, baseline unusable → inconclusive, not pass.
    #[case::baseline_zero(V(0.005), Some(V(0.0)), I)]
    // Threshold breached, baseline unusable → still a fail.
    #[case::breach_and_zero(V(0.5), Some(V(0.0)), F)]
    fn thresholds_and_baseline_all_must_hold(
        #[case] value: Sample,
        #[case] base: Option<Sample>,
        #[case] want: Verdict,
    ) {
        let c = Check {
            max: Some(0.01),
            ..vs_baseline(None, Some(1.2))
        };
        let (got, reason) = verdict(&c, value, None, base);
        assert_eq!(got, want, "{reason}");
    }

    #[test]
    fn reasons_say_why() {
        let (_, r) = verdict(&check(None, Some(0.01)), V(0.031), None, None);
        assert_eq!(r, "0.031 > max 0.01");
        let (_, r) = verdict(&check(None, Some(0.01)), V(INF), None, None);
        assert_eq!(r, "+Inf > max 0.01");
        let (_, r) = verdict(&vs_baseline(None, Some(1.2)), V(0.3), None, Some(V(0.2)));
        assert!(r.contains("> max_ratio 1.2"), "{r}");
        let (_, r) = verdict(&vs_baseline(None, Some(1.2)), V(0.3), None, Some(V(0.0)));
        assert!(r.contains("baseline is 0"), "{r}");
    }

    #[rstest]
    #[case::rate_ratio(0.09999999999999999, "0.1")]
    #[case::long(6.666666666666667, "6.66667")]
    #[case::big(123456789.0, "123457000")]
    #[case::small(0.000012345678, "0.0000123457")]
    #[case::zero(0.0, "0")]
    #[case::inf(f64::INFINITY, "+Inf")]
    fn numbers_for_people(#[case] x: f64, #[case] want: &str) {
        assert_eq!(fmt_num(x), want);
    }

    #[test]
    fn rounding_never_hides_a_breach() {
        let (_, r) = verdict(&check(None, Some(0.01)), V(0.0100000001), None, None);
        assert_eq!(r, "0.0100000001 > max 0.01");
    }

    #[test]
    fn a_check_without_threshold_never_passes() {
        let (got, _) = verdict(&check(None, None), V(1.0), None, None);
        assert_eq!(got, I);
    }

    fn vars() -> Vars {
        Vars {
            rollout: "r-1".into(),
            revision: "abc123".into(),
            canary_pool: "green".into(),
            live_pool: "blue".into(),
            canary_servers: vec!["g1".into(), "g2".into()],
            live_servers: vec!["b1.a".into()],
        }
    }

    #[rstest]
    #[case::servers(r#"x{server=~"{{canary_servers}}"}"#, r#"x{server=~"g1|g2"}"#)]
    #[case::spaces(r#"x{server=~"{{ canary_servers }}"}"#, r#"x{server=~"g1|g2"}"#)]
    #[case::escaped_in_double(r#"x{server=~"{{live_servers}}"}"#, r#"x{server=~"b1\\.a"}"#)]
    #[case::escaped_in_single(r#"x{server=~'{{live_servers}}'}"#, r#"x{server=~'b1\\.a'}"#)]
    #[case::raw_in_backticks(r#"x{server=~`{{live_servers}}`}"#, r#"x{server=~`b1\.a`}"#)]
    #[case::after_escaped_quote(
        r#"x{a="q\"{{revision}}", s=~"{{live_servers}}"}"#,
        r#"x{a="q\"abc123", s=~"b1\\.a"}"#
    )]
    #[case::pools(
        r#"x{pool="{{canary_pool}}"} / x{pool="{{live_pool}}"}"#,
        r#"x{pool="green"} / x{pool="blue"}"#
    )]
    #[case::rollout(r#"x{r="{{rollout}}",v="{{revision}}"}"#, r#"x{r="r-1",v="abc123"}"#)]
    #[case::unknown_left_alone("x{a=\"{{nope}}\"}", "x{a=\"{{nope}}\"}")]
    #[case::unclosed("x{a=\"{{rollout\"}", "x{a=\"{{rollout\"}")]
    #[case::comment_quote("# it's\nx{s=~\"{{live_servers}}\"}", "# it's\nx{s=~\"b1\\\\.a\"}")]
    fn render_cases(#[case] query: &str, #[case] want: &str) {
        assert_eq!(render(query, &vars()), want);
    }

    #[test]
    fn render_escapes_every_regex_metacharacter() {
        let v = Vars {
            canary_servers: vec!["a.b+c*d?e(f)g|h[i]j{k}l^m$n\\o".into()],
            ..vars()
        };
        assert_eq!(
            render("`{{canary_servers}}`", &v),
            r"`a\.b\+c\*d\?e\(f\)g\|h\[i\]j\{k\}l\^m\$n\\o`"
        );
    }

    #[test]
    fn empty_pool_matches_nothing() {
        let v = Vars {
            canary_servers: vec![],
            ..vars()
        };
        assert_eq!(
            render(r#"x{s=~"{{canary_servers}}"}"#, &v),
            r#"x{s=~"[^\\s\\S]"}"#
        );
    }
}
