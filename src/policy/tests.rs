//! Policy: loading (every problem, placed), and `check` as a table — one
//! case per rule, each against a spec that breaks exactly that rule, plus
//! the recommended production policy accepting the example spec.

use rstest::rstest;

use super::*;

const CALENDAR: &str = r#"
name: mini
version: "1"
timezone: Asia/Kolkata
valid_from: 2026-01-01
valid_until: 2026-12-31
segments:
  equity: {days: [mon, tue, wed, thu, fri], open: "09:15", close: "15:30"}
  commodity: {days: [mon, tue, wed, thu, fri], open: "09:00", close: "23:30"}
"#;

/// A spec every case below starts from; it satisfies [`STRICT`].
const BASE: &str = r#"name: shop
calendar: mini
segments: [equity, commodity]
windows:
  guard: {before_open: 30m, after_close: 30m}
  min_remaining: 15m
traffic:
  haproxy:
    endpoints: ["unix:/run/haproxy/admin.sock", "tcp:10.0.0.5:9999"]
    backend: shop
    pools: {blue: [b1], green: [g1]}
analysis:
  prometheus: http://vm.internal:8428
  auth: {bearer_secret: vm-read}
  checks:
    - name: errors
      query: errors{server=~"{{canary_servers}}"}
      max: 0.01
notify:
  - webhook_secret: mattermost
steps:
  - set_weight: 5
  - approval: {min: 1}
  - set_weight: 100
"#;

/// The recommended production policy of docs/api.md (hosts adapted).
const STRICT: &str = r#"version: "2026.11.1"
allowed_calendars: [mini]
required_segments: [equity]
min_guard: 30m
min_min_remaining: 15m
require: both
forbid_no_data_pass: true
max_first_weight: 10
allowed_hosts: ["10.0.0.*:9999", "vm.internal:8428"]
secrets:
  vm-read: {env: VM_READ_TOKEN, hosts: ["vm.internal:8428"], scheme: http}
  mattermost: {env: MATTERMOST_URL, hosts: ["mattermost.internal:443"]}
"#;

fn spec(text: &str) -> Spec {
    let cal = crate::calendar::parse("mini.yaml", CALENDAR).expect("calendar");
    crate::spec::load("shop.yaml", text, |_| Ok(cal))
        .unwrap_or_else(|d| panic!("spec: {d:?}"))
        .spec
}

fn strict() -> Policy {
    load("policy.yaml", STRICT).expect("the strict policy loads")
}

fn mutate(from: &str, to: &str) -> String {
    assert_eq!(BASE.matches(from).count(), 1, "`{from}` must occur once");
    BASE.replacen(from, to, 1)
}

#[test]
fn the_base_spec_satisfies_the_strict_policy() {
    assert_eq!(check(&spec(BASE), &strict()), vec![]);
}

#[test]
fn the_empty_policy_allows_everything_but_secrets() {
    let p = load("p.yaml", "").unwrap();
    assert!(p.is_empty());
    let loose = mutate("set_weight: 5", "set_weight: 50")
        .replace("  auth: {bearer_secret: vm-read}\n", "")
        .replace("notify:\n  - webhook_secret: mattermost\n", "");
    assert_eq!(check(&spec(&loose), &p), vec![]);
    assert_eq!(check(&spec(&loose), &Policy::default()), vec![]);
    // Without a binding no secret is usable: both are named.
    let v = check(&spec(BASE), &Policy::default());
    let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(
        paths,
        ["analysis.auth.bearer_secret", "notify[0].webhook_secret"]
    );
    assert!(v[0].message.contains("`vm-read` is not bound"), "{}", v[0]);
}

#[test]
fn a_secret_is_refused_for_a_host_it_is_not_bound_to() {
    // allowed_hosts lets the host through; the binding does not.
    let p = load(
        "p",
        "secrets:\n  vm-read: {env: V, hosts: [\"vm.internal:8428\"], scheme: http}\n  mattermost: {env: M, hosts: [\"m:443\"]}\n",
    )
    .unwrap();
    let moved = BASE.replace("http://vm.internal:8428", "http://attacker.example:8428");
    let v = check(&spec(&moved), &p);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].path, "analysis.auth.bearer_secret");
    assert!(
        v[0].message
            .contains("`vm-read` may not be sent to http://attacker.example:8428"),
        "{}",
        v[0]
    );
    // The scheme is part of the binding.
    let tls = BASE.replace("http://vm.internal:8428", "https://vm.internal:8428");
    assert_eq!(check(&spec(&tls), &p).len(), 1);
    assert!(names_secrets(&spec(BASE)));
}

#[test]
fn require_separation_of_duties_cannot_be_switched_off_by_a_spec() {
    let p = load("p", "require_separation_of_duties: true\nsecrets:\n  vm-read: {env: V, hosts: [\"vm.internal:8428\"], scheme: http}\n  mattermost: {env: M, hosts: [\"m:443\"]}\n").unwrap();
    assert_eq!(check(&spec(BASE), &p), vec![]);
    let off = format!("{BASE}approvals: {{separation_of_duties: false}}\n");
    let v = check(&spec(&off), &p);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].path, "approvals.separation_of_duties");
}

#[test]
fn a_policy_file_may_be_wrapped_in_policy_as_in_the_config() {
    let p = load("p", "policy:\n  max_first_weight: 10\n").unwrap();
    assert_eq!(p.max_first_weight, Some(10));
    let d = load("p", "policy:\n  max_first_weight: 0\n").unwrap_err();
    assert_eq!(d[0].path, "policy.max_first_weight");
    assert_eq!(d[0].line, Some(2));
}

#[rstest]
#[case::calendar(
    "calendar: mini",
    "calendar: mini\n",
    "allowed_calendars: [nse]",
    "calendar",
    "not allowed"
)]
#[case::segments(
    "segments: [equity, commodity]",
    "segments: [commodity]",
    "",
    "segments",
    "requires segments equity"
)]
#[case::guard_before(
    "before_open: 30m",
    "before_open: 10m",
    "",
    "windows.guard.before_open",
    "10m is below the server policy's min_guard of 30m"
)]
#[case::guard_after(
    "after_close: 30m",
    "after_close: 0m",
    "",
    "windows.guard.after_close",
    "below the server policy's min_guard"
)]
#[case::min_remaining(
    "min_remaining: 15m",
    "min_remaining: 5m",
    "",
    "windows.min_remaining",
    "min_min_remaining"
)]
#[case::approval(
    "  - approval: {min: 1}\n",
    "",
    "",
    "steps",
    "requires a human approval"
)]
#[case::no_data_pass(
    "      max: 0.01\n",
    "      max: 0.01\n      no_data: pass\n",
    "",
    "analysis.checks[0].no_data",
    "passes on no data"
)]
#[case::first_weight(
    "set_weight: 5",
    "set_weight: 25",
    "",
    "steps[0].set_weight",
    "25%, above the server policy's max_first_weight of 10%"
)]
#[case::tcp_host(
    "tcp:10.0.0.5:9999",
    "tcp:192.168.1.5:9999",
    "",
    "traffic.haproxy.endpoints[1]",
    "192.168.1.5:9999 is not in the server policy's allowed_hosts"
)]
#[case::tcp_port(
    "tcp:10.0.0.5:9999",
    "tcp:10.0.0.5:9998",
    "",
    "traffic.haproxy.endpoints[1]",
    "allowed_hosts"
)]
#[case::metrics_host(
    "http://vm.internal:8428\n  auth: {bearer_secret: vm-read}",
    "http://evil.example:8428",
    "",
    "analysis.prometheus",
    "evil.example:8428"
)]
#[case::secret(
    "bearer_secret: vm-read",
    "bearer_secret: vm-write",
    "",
    "analysis.auth.bearer_secret",
    "secret `vm-write` is not bound"
)]
#[case::webhook_secret(
    "webhook_secret: mattermost",
    "webhook_secret: slack",
    "",
    "notify[0].webhook_secret",
    "secret `slack`"
)]
fn each_rule_is_reported_at_its_key(
    #[case] from: &str,
    #[case] to: &str,
    #[case] policy_override: &str,
    #[case] path: &str,
    #[case] says: &str,
) {
    let policy = if policy_override.is_empty() {
        strict()
    } else {
        let key = policy_override.split(':').next().unwrap();
        let text: String = STRICT
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{key}:")) {
                    policy_override.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        load("p.yaml", &text).unwrap()
    };
    let v = check(&spec(&mutate(from, to)), &policy);
    assert_eq!(v.len(), 1, "exactly one violation expected: {v:?}");
    assert_eq!(v[0].path, path);
    assert!(v[0].message.contains(says), "{}", v[0].message);
}

#[test]
fn require_analysis_refuses_a_spec_without_checks() {
    let no_analysis: String = {
        let start = BASE.find("analysis:").unwrap();
        let end = BASE.find("notify:").unwrap();
        format!("{}{}", &BASE[..start], &BASE[end..])
    };
    let v = check(&spec(&no_analysis), &strict());
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].path, "analysis");
    let approval_only = load(
        "p",
        "require: approval\nsecrets: {mattermost: {env: M, hosts: [\"m:443\"]}}",
    )
    .unwrap();
    assert_eq!(check(&spec(&no_analysis), &approval_only), vec![]);
}

#[test]
fn every_violation_is_listed_at_once() {
    let bad = mutate("set_weight: 5", "set_weight: 50")
        .replace("before_open: 30m", "before_open: 0m")
        .replace("tcp:10.0.0.5:9999", "tcp:1.2.3.4:1");
    let v = check(&spec(&bad), &strict());
    let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "windows.guard.before_open",
            "steps[0].set_weight",
            "traffic.haproxy.endpoints[1]"
        ]
    );
    assert_eq!(check_hosts(&spec(&bad), &strict()).len(), 1);
}

#[test]
fn loading_reports_every_problem_with_its_line() {
    let text = "min_guard: 30 minutes\nmax_first_weight: 0\nallowed_hosts: [\"http://vm:8428\", \"ok.internal\"]\nsecrets: {vm: {env: \"not a var\", hosts: [\"vm:1\"]}}\n";
    let d = load("policy.yaml", text).unwrap_err();
    let got: Vec<(Option<usize>, &str)> = d.iter().map(|d| (d.line, d.path.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(1), "min_guard"),
            (Some(2), "max_first_weight"),
            (Some(3), "allowed_hosts[0]"),
            (Some(4), "secrets.vm.env"),
        ]
    );
    assert!(d[2].message.contains("looks like a URL"), "{}", d[2]);
}

#[test]
fn unknown_keys_are_errors() {
    let d = load("policy.yaml", "min_gaurd: 30m\n").unwrap_err();
    assert_eq!(d.len(), 1);
    assert!(d[0].to_string().contains("min_gaurd"), "{}", d[0]);
    let d = load("policy.yaml", "require: always\n").unwrap_err();
    assert!(d[0].to_string().contains("require"), "{}", d[0]);
}

#[test]
fn the_version_defaults_to_a_stable_hash() {
    let a = load("p", "min_guard: 30m\nmax_first_weight: 10\n").unwrap();
    let b = load("p", "max_first_weight: 10\nmin_guard: 30m\n").unwrap();
    assert!(a.version.starts_with("sha256:"), "{}", a.version);
    assert_eq!(a.version, b.version);
    assert_ne!(a.version, load("p", "min_guard: 31m").unwrap().version);
    assert_eq!(strict().version, "2026.11.1");
}

#[rstest]
#[case("10.0.0.*:9999", "10.0.0.5", 9999, true)]
#[case("10.0.0.*:9999", "10.0.1.5", 9999, false)]
#[case("*.internal", "vm.internal", 443, true)]
#[case("*.internal", "vm.internal.example", 443, false)]
#[case("vm?.internal:*", "vm1.internal", 1, true)]
#[case("VM.Internal:8428", "vm.internal", 8428, true)]
#[case("[::1]:8428", "::1", 8428, true)]
#[case("[::1]", "::1", 9, true)]
fn host_patterns(#[case] pattern: &str, #[case] host: &str, #[case] port: u16, #[case] ok: bool) {
    assert_eq!(HostPattern::parse(pattern).unwrap().matches(host, port), ok);
}

#[rstest]
#[case("https://hooks.example/x", "hooks.example", 443)]
#[case("http://u:p@vm:8428/select/0", "vm", 8428)]
#[case("http://[::1]:8500", "::1", 8500)]
#[case("http://vm.internal", "vm.internal", 80)]
fn url_hosts(#[case] url: &str, #[case] host: &str, #[case] port: u16) {
    assert_eq!(url_host_port(url).unwrap(), (host.to_string(), port));
}

#[test]
fn webhook_urls_are_checked_at_delivery() {
    let p = strict();
    assert!(p.url_allowed("http://vm.internal:8428/x").is_ok());
    let e = p
        .url_allowed("https://hooks.slack.com/services/x")
        .unwrap_err();
    assert!(e.contains("hooks.slack.com:443"), "{e}");
    assert!(Policy::default().url_allowed("https://anything").is_ok());
}
