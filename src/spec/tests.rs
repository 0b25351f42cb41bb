//! Spec loading and validation: one case per error kind, each asserting the
//! line and key path of the diagnostic and what it says; then defaults, the
//! hash, warnings and `Endpoint`/`check_query` in isolation.
//!
//! Every case mutates [`BASE`], a valid spec whose line numbers the cases
//! name literally; `mutate` insists each replaced text occurs exactly once,
//! so an edit to `BASE` that shifts lines makes the cases fail loudly rather
//! than test something else.

use rstest::rstest;

use super::validate::check_query;
use super::*;
use crate::diag::Severity;

/// Segments deliberately not in alphabetical order: defaults follow the file.
const CALENDAR: &str = r#"
name: mini
version: "1"
timezone: Asia/Kolkata
valid_from: 2026-01-01
valid_until: 2026-12-31
segments:
  fno: {days: [mon, tue, wed, thu, fri], open: "09:00", close: "15:30"}
  equity: {days: [mon, tue, wed, thu, fri], open: "09:15", close: "15:30"}
  commodity: {days: [mon, tue, wed, thu, fri], open: "09:00", close: "23:30"}
"#;

/// A valid spec without warnings. Line numbers matter: cases name them.
const BASE: &str = r#"name: shop
calendar: mini
segments: [equity, fno]
windows:
  timezone: Asia/Kolkata
  guard: {before_open: 30m, after_close: 30m}
  min_remaining: 15m
  allow:
    - name: nights
      cron: "0 0 * * 1-5"
      duration: 7h
  deny:
    - name: results
      from: 2026-11-10T00:00:00+05:30
      to: 2026-11-14T00:00:00+05:30
    - name: expiry
      cron: "0 0 * * 2"
      duration: 24h
traffic:
  haproxy:
    endpoints: ["unix:/run/haproxy/admin.sock", "tcp:10.0.0.5:9999"]
    backend: shop
    pools: {blue: [b1, b2], green: [g1, g2]}
analysis:
  prometheus: http://127.0.0.1:8428
  checks:
    - name: error-rate
      query: sum(rate(errors{pool="{{canary_pool}}"}[5m]))
      max: 0.01
approvals: {separation_of_duties: true, max_age: 24h}
steps:
  - set_weight: 5
  - bake: {sessions: 1, segment: equity}
  - approval: {min: 1}
  - set_weight: 100
  - bake: {duration: 4h}
"#;

/// Blocks of `BASE`, for cases that remove or replace them whole.
const HAPROXY: &str = r#"  haproxy:
    endpoints: ["unix:/run/haproxy/admin.sock", "tcp:10.0.0.5:9999"]
    backend: shop
    pools: {blue: [b1, b2], green: [g1, g2]}
"#;
const CHECKS: &str = r#"  checks:
    - name: error-rate
      query: sum(rate(errors{pool="{{canary_pool}}"}[5m]))
      max: 0.01
"#;
const STEPS: &str = r#"  - set_weight: 5
  - bake: {sessions: 1, segment: equity}
  - approval: {min: 1}
  - set_weight: 100
  - bake: {duration: 4h}
"#;

const FILE: &str = "shop.yaml";

fn calendar() -> Calendar {
    crate::calendar::parse("mini.yaml", CALENDAR).expect("the test calendar is valid")
}

fn load_text(text: &str) -> Result<Loaded, Vec<Diagnostic>> {
    load(FILE, text, |name| {
        assert_eq!(
            name, "mini",
            "the loader asks for the calendar the spec names"
        );
        Ok(calendar())
    })
}

fn load_ok(text: &str) -> Loaded {
    match load_text(text) {
        Ok(l) => l,
        Err(ds) => panic!("expected a valid spec, got:\n{}", render(&ds)),
    }
}

fn load_err(text: &str) -> Vec<Diagnostic> {
    match load_text(text) {
        Ok(l) => panic!("expected errors, the spec loaded: {:?}", l.spec),
        Err(ds) => ds,
    }
}

fn render(ds: &[Diagnostic]) -> String {
    ds.iter().map(|d| format!("{d}\n")).collect()
}

/// `BASE` with each `(from, to)` applied; each `from` must occur exactly once.
fn mutate(edits: &[(&str, &str)]) -> String {
    let mut text = BASE.to_string();
    for (from, to) in edits {
        assert_eq!(
            text.matches(from).count(),
            1,
            "`{from}` must occur exactly once in the spec being mutated"
        );
        text = text.replacen(from, to, 1);
    }
    text
}

/// The error at `path` whose message or fix contains `needle`; asserts it
/// is on `line` and that its printed form names file, line and path.
fn assert_error(ds: &[Diagnostic], path: &str, line: usize, needle: &str) {
    let found = ds.iter().find(|d| {
        d.severity == Severity::Error
            && d.path == path
            && (d.message.contains(needle) || d.fix.contains(needle))
    });
    let Some(d) = found else {
        panic!(
            "no error at `{path}` mentioning `{needle}`; got:\n{}",
            render(ds)
        );
    };
    assert_eq!(d.line, Some(line), "line of {d}");
    assert!(d.column.is_some(), "column of {d}");
    assert!(!d.fix.is_empty(), "every error says how to fix it: {d}");
    let shown = d.to_string();
    let want = format!("{FILE}:{line}:{}: {path}: ", d.column.unwrap());
    assert!(shown.starts_with(&want), "`{shown}` should start `{want}`");
}

#[test]
fn base_spec_is_valid_without_warnings() {
    let l = load_ok(BASE);
    assert!(
        l.warnings.is_empty(),
        "unexpected warnings:\n{}",
        render(&l.warnings)
    );
    assert_eq!(l.spec.name, "shop");
    assert_eq!(l.calendar.name, "mini");
    assert_eq!(l.spec.steps.len(), 5);
}

// --- Structural errors: serde stops at the first, with its line and path. ---

#[rstest]
#[case::unknown_key(
    &[("bake: {sessions: 1, segment: equity}", "bake: {sesions: 1, segment: equity}")],
    "steps[1].bake.sesions", 33, "unknown field `sesions`"
)]
#[case::unknown_top_level_key(&[("name: shop\n", "name: shop\ntimeout: 5m\n")], "timeout", 2, "unknown field `timeout`")]
#[case::wrong_type(&[("set_weight: 5", "set_weight: five")], "steps[0].set_weight", 32, "invalid type")]
#[case::negative_weight(&[("set_weight: 5", "set_weight: -5")], "steps[0].set_weight", 32, "expected u32")]
#[case::weight_beyond_u32(&[("set_weight: 5", "set_weight: 5000000000")], "steps[0].set_weight", 32, "invalid value")]
#[case::missing_key(&[("    backend: shop\n", "")], "traffic.haproxy", 21, "missing field `backend`")]
#[case::unknown_enum_value(&[("approvals:", "on_failure: explode\napprovals:")], "on_failure", 30, "`rollback` or `pause`")]
#[case::step_with_two_keys(
    &[("  - approval: {min: 1}\n", "  - approval: {min: 1}\n    pause: {}\n")],
    "steps[2]", 34, "exactly one of the keys"
)]
#[case::empty_step(&[("  - approval: {min: 1}\n", "  - {}\n")], "steps[2]", 34, "exactly one of the keys")]
fn structural_error_is_placed(
    #[case] edits: &[(&str, &str)],
    #[case] path: &str,
    #[case] line: usize,
    #[case] needle: &str,
) {
    let ds = load_err(&mutate(edits));
    assert_eq!(ds.len(), 1, "serde reports one error:\n{}", render(&ds));
    assert_error(&ds, path, line, needle);
    // Regression: `invalid value` and our own `try_from` errors were told to
    // "fix the YAML syntax" of a file whose syntax was fine.
    assert!(!ds[0].fix.contains("YAML syntax"), "{}", ds[0]);
}

#[test]
fn step_with_two_keys_is_placed_at_the_step_with_its_fix() {
    // Regression: serde_yaml_ng put this error on the line of `steps[0]` and
    // the fix said "fix the YAML syntax".
    let ds = load_err(&mutate(&[(
        "  - approval: {min: 1}\n",
        "  - approval: {min: 1}\n    pause: {}\n",
    )]));
    assert_eq!((ds[0].line, ds[0].column), (Some(34), Some(5)));
    assert!(ds[0].fix.contains("its own `-`"), "{}", ds[0]);
    assert!(!ds[0].fix.contains("syntax"), "{}", ds[0]);
}

#[rstest]
// A tab where indentation is expected.
#[case::tab(&[("  min_remaining: 15m", "\tmin_remaining: 15m")], 7)]
// A flow mapping that is never closed: found where the scanner gives up.
#[case::unclosed_flow(&[("green: [g1, g2]}", "green: [g1, g2]")], 24)]
// A line indented less than its siblings.
#[case::bad_indent(&[("  - set_weight: 100", " - set_weight: 100")], 35)]
fn yaml_syntax_error_reports_its_line(#[case] edits: &[(&str, &str)], #[case] line: usize) {
    let ds = load_err(&mutate(edits));
    assert_eq!(ds.len(), 1, "{}", render(&ds));
    let d = &ds[0];
    assert_eq!(d.line, Some(line), "{d}");
    assert!(d.fix.contains("YAML syntax"), "{d}");
    // Regression: the key path serde had reached (`?`, or the key before the
    // error) was printed as if it named the problem.
    assert_eq!(d.path, "", "{d}");
    assert!(!d.to_string().contains("?:"), "{d}");
}

#[test]
fn a_mapping_in_a_list_is_placed_at_its_first_key() {
    // Regression: yaml-rust2 marks a block mapping's start after its first
    // key, so `analysis.checks[0]` was placed at `error-rate`, not `name`.
    let ds = load_err(&mutate(&[("      max: 0.01\n", "")]));
    let d = ds.iter().find(|d| d.path == "analysis.checks[0]").unwrap();
    assert_eq!((d.line, d.column), (Some(27), Some(7)), "{d}");
}

#[test]
fn empty_file_is_one_error() {
    let ds = load_text("  \n").unwrap_err();
    assert_eq!(ds.len(), 1);
    assert!(ds[0].message.contains("empty"), "{}", ds[0]);
}

// --- Semantic errors: validate reports each at its key. ---

#[rstest]
#[case::name_regex(&[("name: shop", "name: Shop_1")], "name", 1, "not a valid name")]
#[case::name_too_long(&[("name: shop", "name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")], "name", 1, "not a valid name")]
#[case::unknown_segment(&[("[equity, fno]", "[equity, fx]")], "segments[1]", 3, "no segment `fx`")]
#[case::unknown_segment_lists_known(&[("[equity, fno]", "[equity, fx]")], "segments[1]", 3, "fno, equity, commodity")]
#[case::empty_segments(&[("[equity, fno]", "[]")], "segments", 3, "segments is empty")]
#[case::duplicate_segment(&[("[equity, fno]", "[equity, fno, equity]")], "segments[2]", 3, "listed twice")]
#[case::bad_timezone(&[("timezone: Asia/Kolkata", "timezone: Asia/Mumbai")], "windows.timezone", 5, "unknown time zone `Asia/Mumbai`")]
#[case::guard_duration(&[("before_open: 30m", "before_open: 30 minutes")], "windows.guard.before_open", 6, "15m")]
#[case::guard_after_close(&[("after_close: 30m", "after_close: 1.5h")], "windows.guard.after_close", 6, "unexpected character `.`")]
#[case::min_remaining_without_unit(&[("min_remaining: 15m", "min_remaining: 15")], "windows.min_remaining", 7, "without a unit")]
#[case::bake_duration(&[("bake: {duration: 4h}", "bake: {duration: 4hours}")], "steps[4].bake.duration", 36, "unexpected character")]
#[case::bake_duration_zero(&[("bake: {duration: 4h}", "bake: {duration: 0h}")], "steps[4].bake.duration", 36, "longer than zero")]
#[case::allow_duration_zero(&[("duration: 7h", "duration: 0m")], "windows.allow[0].duration", 11, "longer than zero")]
#[case::allow_longer_than_a_week(&[("duration: 7h", "duration: 8d")], "windows.allow[0].duration", 11, "longer than 7 days")]
#[case::deny_duration(&[("duration: 24h", "duration: 24")], "windows.deny[1].duration", 18, "without a unit")]
#[case::max_age(&[("max_age: 24h", "max_age: 0s")], "approvals.max_age", 30, "longer than zero")]
#[case::cron_six_fields(&[(r#""0 0 * * 1-5""#, r#""0 0 0 * * 1-5""#)], "windows.allow[0].cron", 10, "has 6 fields")]
#[case::cron_out_of_range(&[(r#""0 0 * * 1-5""#, r#""0 25 * * 1-5""#)], "windows.allow[0].cron", 10, "hour 25 is out of range 0-23")]
#[case::cron_backwards(&[(r#""0 0 * * 1-5""#, r#""0 0 * * fri-mon""#)], "windows.allow[0].cron", 10, "runs backwards")]
#[case::cron_bad_name(&[(r#""0 0 * * 2""#, r#""0 0 * * tues""#)], "windows.deny[1].cron", 17, "`tues` is not a number or a name")]
#[case::deny_without_offset(&[("from: 2026-11-10T00:00:00+05:30", "from: 2026-11-10T00:00:00")], "windows.deny[0].from", 14, "RFC 3339")]
#[case::deny_to_before_from(&[("to: 2026-11-14T00:00:00+05:30", "to: 2026-11-09T00:00:00+05:30")], "windows.deny[0].to", 15, "not after `from`")]
#[case::deny_to_equals_from(&[("to: 2026-11-14T00:00:00+05:30", "to: 2026-11-10T00:00:00+05:30")], "windows.deny[0].to", 15, "not after `from`")]
#[case::deny_incomplete(&[("      to: 2026-11-14T00:00:00+05:30\n", "")], "windows.deny[0]", 13, "either `from` and `to`")]
#[case::deny_mixed_forms(&[("      duration: 24h\n", "      duration: 24h\n      from: 2026-11-10T00:00:00+05:30\n")], "windows.deny[1]", 16, "either `from` and `to`")]
#[case::no_traffic_backend(
    &[(HAPROXY, ""), ("traffic:\n", "traffic: {}\n")], "traffic", 19, "no traffic backend"
)]
#[case::both_backends(
    &[("green: [g1, g2]}\n", "green: [g1, g2]}\n  consul: {address: http://127.0.0.1:8500, kv: {key: k}, pools: {a: [x], b: [y]}}\n")],
    "traffic", 19, "both haproxy and consul"
)]
#[case::one_pool(&[("{blue: [b1, b2], green: [g1, g2]}", "{blue: [b1, b2, g1, g2]}")], "traffic.haproxy.pools", 23, "1 pools given")]
#[case::three_pools(&[("green: [g1, g2]}", "green: [g1], red: [g2]}")], "traffic.haproxy.pools", 23, "3 pools given")]
#[case::pool_named_twice(&[("green: [g1, g2]}", "blue: [g1, g2]}")], "traffic.haproxy.pools.blue", 23, "written twice")]
#[case::overlapping_pools(&[("green: [g1, g2]", "green: [g1, b2]")], "traffic.haproxy.pools.green[1]", 23, "in both pools")]
#[case::empty_pool(&[("green: [g1, g2]", "green: []")], "traffic.haproxy.pools.green", 23, "no servers")]
#[case::bad_pool_name(&[("green: [g1, g2]", "Green: [g1, g2]")], "traffic.haproxy.pools.Green", 23, "not a valid pool name")]
#[case::endpoint_without_port(&[("tcp:10.0.0.5:9999", "tcp:10.0.0.5")], "traffic.haproxy.endpoints[1]", 21, "has no port")]
#[case::endpoint_relative_socket(&[("unix:/run/haproxy/admin.sock", "unix:admin.sock")], "traffic.haproxy.endpoints[0]", 21, "must be absolute")]
#[case::endpoint_scheme(&[("tcp:10.0.0.5:9999", "http://10.0.0.5:9999")], "traffic.haproxy.endpoints[1]", 21, "neither unix:/path nor tcp:host:port")]
#[case::endpoint_twice(&[("tcp:10.0.0.5:9999", "unix:/run/haproxy/admin.sock")], "traffic.haproxy.endpoints[1]", 21, "listed twice")]
#[case::no_endpoints(&[(r#"["unix:/run/haproxy/admin.sock", "tcp:10.0.0.5:9999"]"#, "[]")], "traffic.haproxy.endpoints", 21, "no endpoints")]
#[case::empty_backend(&[("backend: shop", "backend: \"\"")], "traffic.haproxy.backend", 22, "empty backend name")]
#[case::analysis_url(&[("prometheus: http://127.0.0.1:8428", "prometheus: 127.0.0.1:8428")], "analysis.prometheus", 25, "not an http(s) URL")]
#[case::analysis_url_without_host(&[("prometheus: http://127.0.0.1:8428", "prometheus: http:///metrics")], "analysis.prometheus", 25, "not an http(s) URL")]
#[case::auth_both_secrets(
    &[("  checks:\n", "  auth: {bearer_secret: vm, basic_secret: vm}\n  checks:\n")],
    "analysis.auth", 26, "exactly one of bearer_secret and basic_secret"
)]
#[case::auth_empty_secret(&[("  checks:\n", "  auth: {bearer_secret: \" \"}\n  checks:\n")], "analysis.auth.bearer_secret", 26, "empty secret name")]
#[case::interval_zero(&[("  checks:\n", "  interval: 0m\n  checks:\n")], "analysis.interval", 26, "longer than zero")]
#[case::min_passes_zero(&[("  checks:\n", "  min_passes: 0\n  checks:\n")], "analysis.min_passes", 26, "at least 1")]
#[case::inconclusive_limit_zero(&[("  checks:\n", "  inconclusive_limit: 0\n  checks:\n")], "analysis.inconclusive_limit", 26, "at least 1")]
#[case::no_checks(&[(CHECKS, "  checks: []\n")], "analysis.checks", 26, "no checks")]
#[case::check_without_threshold(&[("      max: 0.01\n", "")], "analysis.checks[0]", 27, "no threshold")]
#[case::min_above_max(&[("      max: 0.01\n", "      max: 0.01\n      min: 0.5\n")], "analysis.checks[0].min", 30, "min is above max")]
#[case::failure_limit_zero(&[("      max: 0.01\n", "      max: 0.01\n      failure_limit: 0\n")], "analysis.checks[0].failure_limit", 30, "at least 1")]
#[case::duplicate_check_name(
    &[("      max: 0.01\n", "      max: 0.01\n    - name: error-rate\n      query: up\n      max: 1\n")],
    "analysis.checks[1].name", 30, "defined twice"
)]
#[case::empty_check_name(&[("name: error-rate", "name: \"\"")], "analysis.checks[0].name", 27, "empty check name")]
#[case::unknown_template_variable(&[("{{canary_pool}}", "{{canary}}")], "analysis.checks[0].query", 28, "unknown template variable `{{canary}}`")]
#[case::template_lists_known(&[("{{canary_pool}}", "{{canary}}")], "analysis.checks[0].query", 28, "{{canary_servers}}")]
#[case::unclosed_template(&[("{{canary_pool}}", "{{canary_pool")], "analysis.checks[0].query", 28, "without a closing `}}`")]
#[case::unbalanced_paren(&[("[5m]))", "[5m])")], "analysis.checks[0].query", 28, "`(` is never closed")]
#[case::unbalanced_brace(&[("\"}[5m]", "\"}}[5m]")], "analysis.checks[0].query", 28, "unbalanced `}`")]
#[case::empty_query(&[(r#"sum(rate(errors{pool="{{canary_pool}}"}[5m]))"#, r#""  ""#)], "analysis.checks[0].query", 28, "the query is empty")]
#[case::min_traffic_query(
    &[("      max: 0.01\n", "      max: 0.01\n      min_traffic: {query: \"sum(x\", min: 5}\n")],
    "analysis.checks[0].min_traffic.query", 30, "never closed"
)]
#[case::baseline_without_ratio(
    &[("      max: 0.01\n", "      max: 0.01\n      baseline: {query: up}\n")],
    "analysis.checks[0].baseline", 30, "max_ratio, min_ratio or both"
)]
#[case::baseline_ratios_swapped(
    &[("      max: 0.01\n", "      max: 0.01\n      baseline: {query: up, min_ratio: 2, max_ratio: 1}\n")],
    "analysis.checks[0].baseline.min_ratio", 30, "min_ratio is above max_ratio"
)]
#[case::notify_empty_secret(&[("approvals:", "notify: [{webhook_secret: \"\"}]\napprovals:")], "notify[0].webhook_secret", 30, "empty secret name")]
#[case::weight_not_increasing(&[("  - approval: {min: 1}\n", "  - approval: {min: 1}\n  - set_weight: 5\n")], "steps[3].set_weight", 35, "does not increase on the previous set_weight (5)")]
#[case::weight_zero(&[("set_weight: 5", "set_weight: 0")], "steps[0].set_weight", 32, "weight 0 is not 1-100")]
#[case::weight_above_100(&[("set_weight: 100", "set_weight: 101")], "steps[3].set_weight", 35, "weight 101 is not 1-100")]
#[case::last_weight_not_100(&[("set_weight: 100", "set_weight: 50")], "steps[3].set_weight", 35, "the last set_weight is 50, not 100")]
#[case::no_set_weight(&[("  - set_weight: 5\n", ""), ("  - set_weight: 100\n", "")], "steps", 31, "no set_weight step")]
#[case::no_steps(&[("steps:\n", ""), (STEPS, "steps: []\n")], "steps", 31, "no steps")]
#[case::bake_sessions_zero(&[("sessions: 1", "sessions: 0")], "steps[1].bake.sessions", 33, "at least 1")]
#[case::bake_segment_not_in_spec(&[("segment: equity}", "segment: commodity}")], "steps[1].bake.segment", 33, "`commodity` is not one of the spec's segments")]
#[case::bake_segment_unknown(&[("segment: equity}", "segment: bonds}")], "steps[1].bake.segment", 33, "use one of: equity, fno")]
#[case::bake_both(&[("bake: {duration: 4h}", "bake: {duration: 4h, sessions: 1}")], "steps[4].bake", 36, "both duration and sessions")]
#[case::bake_neither(&[("bake: {duration: 4h}", "bake: {}")], "steps[4].bake", 36, "needs duration or sessions")]
#[case::bake_duration_with_segment(&[("bake: {duration: 4h}", "bake: {duration: 4h, segment: fno}")], "steps[4].bake.segment", 36, "only applies to a bake by sessions")]
#[case::approval_min_zero(&[("approval: {min: 1}", "approval: {min: 0}")], "steps[2].approval.min", 34, "at least 1")]
fn error_is_placed(
    #[case] edits: &[(&str, &str)],
    #[case] path: &str,
    #[case] line: usize,
    #[case] needle: &str,
) {
    let ds = load_err(&mutate(edits));
    assert_error(&ds, path, line, needle);
}

#[rstest]
#[case::consul_address_not_url(("address: http://127.0.0.1:8500/", "address: 127.0.0.1:8500"), "traffic.consul.address", 21, "not an http(s) URL")]
#[case::consul_key_with_space(("key: muhurat/shop/weights", "key: muhurat shop"), "traffic.consul.kv.key", 22, "not a KV key")]
#[case::consul_key_traversal(("key: muhurat/shop/weights", "key: \"../../../secret.txt\""), "traffic.consul.kv.key", 22, "not a plain KV key")]
#[case::consul_key_leading_slash(("key: muhurat/shop/weights", "key: /muhurat/shop/weights"), "traffic.consul.kv.key", 22, "no leading `/`")]
#[case::consul_key_query(("key: muhurat/shop/weights", "key: \"k?recurse=true\""), "traffic.consul.kv.key", 22, "not a plain KV key")]
#[case::consul_empty_token_secret(("    kv:", "    token_secret: \"\"\n    kv:"), "traffic.consul.token_secret", 22, "empty secret name")]
#[case::consul_one_pool(("{blue: [b1, b2], green: [g1, g2]}", "{blue: [b1, b2, g1, g2]}"), "traffic.consul.pools", 23, "1 pools given")]
#[case::consul_verify_endpoint((r#"["unix:/run/haproxy/admin.sock"]"#, r#"["sock"]"#), "traffic.consul.verify.haproxy_endpoints[0]", 24, "neither unix")]
fn consul_error_is_placed(
    #[case] edit: (&str, &str),
    #[case] path: &str,
    #[case] line: usize,
    #[case] needle: &str,
) {
    assert_eq!(
        CONSUL.matches(edit.0).count(),
        1,
        "`{}` once in CONSUL",
        edit.0
    );
    let ds = load_err(&consul_spec(&CONSUL.replacen(edit.0, edit.1, 1)));
    assert_error(&ds, path, line, needle);
}

/// Replaces the haproxy block of `BASE` (lines 20-23); address on line 21.
const CONSUL: &str = r#"  consul:
    address: http://127.0.0.1:8500/
    kv: {key: muhurat/shop/weights}
    pools: {blue: [b1, b2], green: [g1, g2]}
    verify: {haproxy_endpoints: ["unix:/run/haproxy/admin.sock"], backend: shop}
"#;

fn consul_spec(consul: &str) -> String {
    mutate(&[(HAPROXY, consul)])
}

#[test]
fn consul_spec_loads_with_its_target() {
    let l = load_ok(&consul_spec(CONSUL));
    match &l.spec.traffic {
        Traffic::Consul {
            address,
            key,
            verify,
            token_secret,
            ..
        } => {
            assert_eq!(address, "http://127.0.0.1:8500/");
            assert_eq!(key, "muhurat/shop/weights");
            assert_eq!(token_secret, &None);
            assert_eq!(verify.as_ref().unwrap().backend, "shop");
        }
        other => panic!("expected consul, got {other:?}"),
    }
    // Trailing and leading slashes do not make two targets.
    assert_eq!(
        l.spec.traffic.target_id(),
        "consul:http://127.0.0.1:8500/muhurat/shop/weights"
    );
    assert!(l.warnings.is_empty(), "{}", render(&l.warnings));
}

#[test]
fn consul_without_verify_warns() {
    let consul = CONSUL.replacen(
        "    verify: {haproxy_endpoints: [\"unix:/run/haproxy/admin.sock\"], backend: shop}\n",
        "",
        1,
    );
    assert_ne!(consul, CONSUL);
    let l = load_ok(&consul_spec(&consul));
    let w = l
        .warnings
        .iter()
        .find(|d| d.path == "traffic.consul")
        .expect("a warning about verify");
    assert!(w.message.contains("no `verify`"), "{w}");
    assert_eq!(w.line, Some(20), "{w}");
}

#[test]
fn missing_calendar_is_reported_at_the_calendar_key() {
    let ds = load(FILE, BASE, |_| {
        Err(CalendarLookup::NotFound(
            "no file rollouts/calendars/mini.yaml".into(),
        ))
    })
    .unwrap_err();
    assert_error(&ds, "calendar", 2, "calendar `mini` not found");
    let d = ds.iter().find(|d| d.path == "calendar").unwrap();
    assert!(
        d.message.contains("rollouts/calendars/mini.yaml"),
        "names where it looked: {d}"
    );
    assert!(d.fix.contains("--calendars"), "{d}");
}

#[test]
fn missing_calendar_still_reports_the_other_errors() {
    // Rules that need no calendar run anyway, so a fix takes one pass.
    let text = mutate(&[("set_weight: 5", "set_weight: 0")]);
    let ds = load(FILE, &text, |_| {
        Err(CalendarLookup::NotFound("gone".into()))
    })
    .unwrap_err();
    assert_error(&ds, "calendar", 2, "not found");
    assert_error(&ds, "steps[0].set_weight", 32, "not 1-100");
    // Without a calendar the spec's own segments cannot be checked against
    // it, and that is not reported as an error.
    assert!(
        !ds.iter().any(|d| d.path.starts_with("segments")),
        "{}",
        render(&ds)
    );
}

#[test]
fn invalid_calendar_reports_its_own_diagnostics() {
    let bad = crate::calendar::parse("mini.yaml", &CALENDAR.replace("\"09:15\"", "\"9.15\""))
        .expect_err("the mutated calendar is invalid");
    let n = bad.len();
    let ds = load(FILE, BASE, |_| Err(CalendarLookup::Invalid(bad))).unwrap_err();
    assert_error(&ds, "calendar", 2, "is invalid");
    assert_eq!(
        ds.iter().filter(|d| d.file == "mini.yaml").count(),
        n,
        "the calendar's own problems are passed on: {}",
        render(&ds)
    );
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let text = mutate(&[
        ("name: shop", "name: Shop"),
        ("[equity, fno]", "[equity, fx]"),
        ("timezone: Asia/Kolkata", "timezone: Mars/Olympus"),
        (r#""0 0 * * 1-5""#, r#""0 0 * * fri-mon""#),
        ("green: [g1, g2]", "green: [g1, b1]"),
        ("{{canary_pool}}", "{{canary}}"),
        ("set_weight: 5", "set_weight: 0"),
        ("sessions: 1", "sessions: 0"),
        ("approval: {min: 1}", "approval: {min: 0}"),
        ("bake: {duration: 4h}", "bake: {duration: forever}"),
    ]);
    let ds = load_err(&text);
    let mut got: Vec<(String, Option<usize>)> = ds
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.path.clone(), d.line))
        .collect();
    got.sort_by_key(|(_, l)| *l);
    let want: Vec<(String, Option<usize>)> = [
        ("name", 1),
        ("segments[1]", 3),
        ("windows.timezone", 5),
        ("windows.allow[0].cron", 10),
        ("traffic.haproxy.pools.green[1]", 23),
        ("analysis.checks[0].query", 28),
        ("steps[0].set_weight", 32),
        ("steps[1].bake.sessions", 33),
        ("steps[2].approval.min", 34),
        ("steps[4].bake.duration", 36),
    ]
    .iter()
    .map(|(p, l)| (p.to_string(), Some(*l)))
    .collect();
    assert_eq!(got, want, "\n{}", render(&ds));
}

// --- Warnings: the spec loads, and says what is risky. ---

#[rstest]
#[case::no_analysis(
    &[("analysis:\n  prometheus: http://127.0.0.1:8428\n", ""), (CHECKS, "")],
    "analysis", None, "no analysis"
)]
#[case::no_approval(&[("  - approval: {min: 1}\n", "")], "steps", Some(31), "no approval step")]
#[case::first_weight_large(&[("set_weight: 5", "set_weight: 20")], "steps[0].set_weight", Some(32), "the first weight is 20%")]
#[case::min_remaining_below_one_command(&[("min_remaining: 15m", "min_remaining: 5s")], "windows.min_remaining", Some(7), "less than one command may take (7s)")]
fn warning_is_reported_and_the_spec_loads(
    #[case] edits: &[(&str, &str)],
    #[case] path: &str,
    #[case] line: Option<usize>,
    #[case] needle: &str,
) {
    let l = load_ok(&mutate(edits));
    assert_eq!(l.warnings.len(), 1, "{}", render(&l.warnings));
    let w = &l.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.path, path);
    assert_eq!(w.line, line, "{w}");
    assert!(w.message.contains(needle), "{w}");
    assert!(w.to_string().contains(": warning: "), "{w}");
}

#[test]
fn warnings_accompany_errors() {
    let ds = load_err(&mutate(&[
        ("set_weight: 5", "set_weight: 20"),
        ("sessions: 1", "sessions: 0"),
    ]));
    assert_error(&ds, "steps[1].bake.sessions", 33, "at least 1");
    assert!(
        ds.iter()
            .any(|d| d.severity == Severity::Warning && d.path == "steps[0].set_weight"),
        "{}",
        render(&ds)
    );
}

// --- Accepted edge values ---

#[rstest]
#[case::zero_guard(&[("before_open: 30m, after_close: 30m", "before_open: 0m, after_close: 0s")])]
#[case::zero_min_remaining(&[("min_remaining: 15m", "min_remaining: 0m")])]
#[case::combined_durations(&[("duration: 7h", "duration: 6h30m"), ("max_age: 24h", "max_age: 1d12h")])]
#[case::cron_names(&[(r#""0 0 * * 1-5""#, r#""30 22 * * mon-fri""#)])]
#[case::cron_sunday_as_range_end(&[(r#""0 0 * * 1-5""#, r#""0 0 * * sat-sun""#)])]
#[case::ipv6_endpoint(&[("tcp:10.0.0.5:9999", "tcp:[::1]:9999")])]
#[case::pause_step(&[("  - approval: {min: 1}\n", "  - approval: {min: 1}\n  - pause: {}\n")])]
#[case::template_with_spaces(&[("{{canary_pool}}", "{{ canary_pool }}")])]
#[case::braces_inside_strings(&[("errors{pool=", "errors{msg=\"a)b}\",pool=")])]
fn edge_value_is_accepted(#[case] edits: &[(&str, &str)]) {
    load_ok(&mutate(edits));
}

// --- Defaults ---

const MINIMAL: &str = r#"
name: tiny
calendar: mini
traffic:
  haproxy:
    endpoints: ["unix:/run/haproxy/admin.sock"]
    backend: tiny
    pools: {green: [g1], blue: [b1]}
analysis:
  prometheus: https://vm.example
  checks:
    - {name: up, query: up, min: 1}
steps:
  - set_weight: 10
  - bake: {sessions: 2}
  - approval: {}
  - set_weight: 100
"#;

#[test]
fn defaults_follow_the_design() {
    let s = load_ok(MINIMAL).spec;
    let w = &s.windows;
    assert_eq!(w.timezone, chrono_tz::Asia::Kolkata);
    assert_eq!(w.before_open, TimeDelta::minutes(30));
    assert_eq!(w.after_close, TimeDelta::minutes(30));
    assert_eq!(w.min_remaining, TimeDelta::minutes(15));
    assert!(w.allow.is_empty() && w.deny.is_empty());
    let a = s.analysis.as_ref().unwrap();
    assert_eq!(a.interval, TimeDelta::minutes(1));
    assert_eq!(a.query_delay, TimeDelta::seconds(30));
    assert_eq!(a.evidence, Evidence::Sessions);
    assert_eq!(a.min_passes, 5);
    assert_eq!(a.inconclusive_limit, 10);
    assert_eq!(a.auth, None);
    let c = &a.checks[0];
    assert_eq!(c.failure_limit, 1);
    assert_eq!(c.no_data, NoData::Inconclusive);
    assert_eq!((c.min, c.max), (Some(1.0), None));
    assert_eq!(s.on_failure, OnFailure::Rollback);
    assert!(s.approvals.separation_of_duties);
    assert_eq!(s.approvals.max_age, TimeDelta::hours(24));
    assert!(s.notify.is_empty());
    assert_eq!(s.description, None);
    assert_eq!(s.steps[2], Step::Approval { min: 1 });
    match &s.traffic {
        Traffic::Haproxy {
            shutdown_sessions,
            pools,
            ..
        } => {
            // None: decided at preflight from the backend's mode.
            assert_eq!(*shutdown_sessions, None);
            // Pools come out sorted by name whatever the file order.
            assert_eq!(pools[0].name, "blue");
            assert_eq!(pools[1].name, "green");
            assert_eq!(pools[1].servers, ["g1"]);
        }
        other => panic!("expected haproxy, got {other:?}"),
    }
}

#[test]
fn segments_default_to_the_calendar_in_file_order() {
    let s = load_ok(MINIMAL).spec;
    assert_eq!(s.segments, ["fno", "equity", "commodity"]);
    // A bake without a segment uses the first segment.
    assert_eq!(
        s.steps[1],
        Step::BakeSessions {
            sessions: 2,
            segment: "fno".into()
        }
    );
}

#[test]
fn bake_segment_defaults_to_the_first_of_the_specs_segments() {
    let text = MINIMAL.replacen("traffic:", "segments: [commodity, equity]\ntraffic:", 1);
    let s = load_ok(&text).spec;
    assert_eq!(s.segments, ["commodity", "equity"]);
    assert_eq!(
        s.steps[1],
        Step::BakeSessions {
            sessions: 2,
            segment: "commodity".into()
        }
    );
}

#[test]
fn explicit_values_override_defaults() {
    let text = MINIMAL
        .replacen(
            "traffic:",
            "windows:\n  timezone: UTC\n  guard: {before_open: 45m}\n  min_remaining: 0m\non_failure: pause\napprovals: {separation_of_duties: false, max_age: 2h}\ntraffic:",
            1,
        )
        .replacen(
            "    backend: tiny\n",
            "    backend: tiny\n    rollback: {shutdown_sessions: false}\n",
            1,
        )
        .replacen(
            "  checks:",
            "  interval: 2m\n  query_delay: 0s\n  evidence: always\n  min_passes: 3\n  inconclusive_limit: 4\n  auth: {basic_secret: vm}\n  checks:",
            1,
        )
        .replacen(
            "{name: up, query: up, min: 1}",
            "{name: up, query: up, min: 1, failure_limit: 3, no_data: fail}",
            1,
        );
    let s = load_ok(&text).spec;
    assert_eq!(s.windows.timezone, chrono_tz::UTC);
    assert_eq!(s.windows.before_open, TimeDelta::minutes(45));
    // An unset half of `guard` keeps its default.
    assert_eq!(s.windows.after_close, TimeDelta::minutes(30));
    assert_eq!(s.windows.min_remaining, TimeDelta::zero());
    assert_eq!(s.on_failure, OnFailure::Pause);
    assert!(!s.approvals.separation_of_duties);
    assert_eq!(s.approvals.max_age, TimeDelta::hours(2));
    let a = s.analysis.as_ref().unwrap();
    assert_eq!(a.interval, TimeDelta::minutes(2));
    assert_eq!(a.query_delay, TimeDelta::zero());
    assert_eq!(a.evidence, Evidence::Always);
    assert_eq!((a.min_passes, a.inconclusive_limit), (3, 4));
    assert_eq!(a.auth, Some(Auth::BasicSecret("vm".into())));
    assert_eq!(a.checks[0].failure_limit, 3);
    assert_eq!(a.checks[0].no_data, NoData::Fail);
    assert!(matches!(
        s.traffic,
        Traffic::Haproxy {
            shutdown_sessions: Some(false),
            ..
        }
    ));
}

#[test]
fn base_spec_steps_and_windows() {
    let s = load_ok(BASE).spec;
    assert_eq!(
        s.steps,
        [
            Step::SetWeight(5),
            Step::BakeSessions {
                sessions: 1,
                segment: "equity".into()
            },
            Step::Approval { min: 1 },
            Step::SetWeight(100),
            Step::BakeDuration(TimeDelta::hours(4)),
        ]
    );
    assert_eq!(
        s.steps.iter().map(Step::kind).collect::<Vec<_>>(),
        ["set_weight", "bake", "approval", "set_weight", "bake"]
    );
    assert_eq!(s.windows.allow.len(), 1);
    assert_eq!(s.windows.allow[0].duration, TimeDelta::hours(7));
    assert_eq!(s.windows.deny.len(), 2);
    assert!(s.has_checks());
}

// --- Hash ---

#[test]
fn hash_ignores_key_order_comments_and_style() {
    let a = load_ok(MINIMAL).spec.hash();
    let reordered = r#"
# the same spec, written differently
steps:
  - set_weight: 10          # a small start
  - bake:
      sessions: 2
  - approval: {}
  - set_weight: 100
calendar: mini
name: tiny
analysis:
  checks:
    - min: 1
      query: up
      name: up
  prometheus: https://vm.example
traffic:
  haproxy:
    pools:
      blue: [b1]
      green: [g1]
    backend: tiny
    endpoints:
      - unix:/run/haproxy/admin.sock
"#;
    let b = load_ok(reordered).spec.hash();
    assert_eq!(a, b);
    assert_eq!(a.len(), 64);
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
}

#[rstest]
#[case::weight(("set_weight: 10", "set_weight: 9"))]
#[case::bake(("sessions: 2", "sessions: 3"))]
#[case::threshold(("min: 1}", "min: 2}"))]
#[case::server_moved(("{green: [g1], blue: [b1]}", "{green: [g1, b1], blue: [b2]}"))]
#[case::approval_min(("  - approval: {}", "  - approval: {min: 2}"))]
fn hash_changes_with_the_spec(#[case] edit: (&str, &str)) {
    let a = load_ok(MINIMAL).spec.hash();
    let changed = MINIMAL.replacen(edit.0, edit.1, 1);
    assert_ne!(changed, MINIMAL, "`{}` is in MINIMAL", edit.0);
    assert_ne!(load_ok(&changed).spec.hash(), a);
}

#[test]
fn hash_of_explicit_defaults_equals_implicit() {
    // The hash is of the validated spec, so writing a default changes nothing.
    let explicit = MINIMAL.replacen("  - approval: {}", "  - approval: {min: 1}", 1);
    assert_eq!(load_ok(&explicit).spec.hash(), load_ok(MINIMAL).spec.hash());
}

// --- Target id and endpoints ---

#[test]
fn target_id_sorts_endpoints() {
    let s = load_ok(BASE).spec;
    assert_eq!(
        s.traffic.target_id(),
        "haproxy:shop@tcp:10.0.0.5:9999,unix:/run/haproxy/admin.sock"
    );
    // Order in the file does not change the target.
    let swapped = mutate(&[(
        r#"["unix:/run/haproxy/admin.sock", "tcp:10.0.0.5:9999"]"#,
        r#"["tcp:10.0.0.5:9999", "unix:/run/haproxy/admin.sock"]"#,
    )]);
    assert_eq!(
        load_ok(&swapped).spec.traffic.target_id(),
        s.traffic.target_id()
    );
}

#[rstest]
#[case("unix:/run/haproxy/admin.sock", Endpoint::Unix("/run/haproxy/admin.sock".into()))]
#[case("tcp:10.0.0.5:9999", Endpoint::Tcp { host: "10.0.0.5".into(), port: 9999 })]
#[case("tcp:lb1.internal:1", Endpoint::Tcp { host: "lb1.internal".into(), port: 1 })]
#[case("tcp:[::1]:9999", Endpoint::Tcp { host: "::1".into(), port: 9999 })]
#[case("tcp:[fe80::1]:65535", Endpoint::Tcp { host: "fe80::1".into(), port: 65535 })]
fn endpoint_parses_and_prints_back(#[case] text: &str, #[case] want: Endpoint) {
    let ep = Endpoint::parse(text).unwrap();
    assert_eq!(ep, want);
    assert_eq!(ep.to_string(), text);
}

#[rstest]
#[case::relative_socket("unix:admin.sock", "absolute")]
#[case::no_port("tcp:10.0.0.5", "no port")]
#[case::port_zero("tcp:10.0.0.5:0", "not 1-65535")]
#[case::port_too_big("tcp:10.0.0.5:65536", "not 1-65535")]
#[case::port_not_number("tcp:10.0.0.5:http", "not 1-65535")]
#[case::no_host("tcp::9999", "no host")]
#[case::empty_brackets("tcp:[]:9999", "no host")]
#[case::ipv6_without_port("tcp:[::1]", "tcp:[::1]:9999")]
#[case::ipv6_without_brackets("tcp:fe80::1:9999", "tcp:[::1]:9999")]
// Was read as host `fe80:`, port 1.
#[case::ipv6_without_brackets_or_port("tcp:fe80::1", "tcp:[::1]:9999")]
#[case::scheme("http://10.0.0.5:9999", "neither")]
#[case::bare_path("/run/haproxy/admin.sock", "neither")]
fn endpoint_rejects(#[case] text: &str, #[case] needle: &str) {
    let e = Endpoint::parse(text).unwrap_err();
    assert!(e.contains(needle), "`{text}`: {e}");
}

// --- Queries ---

#[rstest]
#[case::plain("up")]
#[case::every_variable(
    r#"sum(x{r="{{rollout}}",v="{{revision}}",c="{{canary_pool}}",l="{{live_pool}}",s=~"{{canary_servers}}",t=~"{{live_servers}}"})"#
)]
#[case::brackets_in_strings(r#"sum(x{a="(]}", b='[{'})"#)]
#[case::escaped_quote(r#"x{a="\")"}"#)]
#[case::comment("sum(x) # (unbalanced in a comment")]
#[case::multiline("sum(rate(x[5m]))\n/ sum(rate(y[5m]))\n")]
fn query_is_accepted(#[case] q: &str) {
    assert_eq!(check_query(q), Ok(()), "{q}");
}

#[rstest]
#[case::empty("", "empty")]
#[case::blank(" \n ", "empty")]
#[case::unknown_variable("x{p=\"{{pool}}\"}", "unknown template variable `{{pool}}`")]
#[case::unclosed_template("x{p=\"{{rollout\"}", "without a closing")]
#[case::unclosed_paren("sum(rate(x[5m])", "`(` is never closed")]
#[case::extra_paren("sum(x))", "unbalanced `)`")]
#[case::mismatched("sum(x]", "unbalanced `]`")]
#[case::unclosed_brace("x{a=\"b\"", "`{` is never closed")]
#[case::unterminated_string("x{a=\"b}", "unterminated string")]
fn query_is_rejected(#[case] q: &str, #[case] needle: &str) {
    let e = check_query(q).unwrap_err();
    assert!(e.contains(needle), "`{q}`: {e}");
}
