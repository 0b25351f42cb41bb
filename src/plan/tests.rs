use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use super::*;
use crate::calendar::{self, Calendar};
use crate::spec::{self, Spec};
use crate::windows;

/// IST calendar covering December 2026 only: equity Mon–Fri 09:00–15:30,
/// a holiday on Wed 9th, a Sunday special session on the 13th.
const CAL: &str = r#"
name: t
version: "1"
timezone: Asia/Kolkata
valid_from: 2026-12-01
valid_until: 2026-12-31
segments:
  equity: {days: [mon, tue, wed, thu, fri], open: "09:00", close: "15:30"}
  commodity: {days: [mon, tue, wed, thu, fri], open: "09:00", close: "23:30"}
holidays:
  - {date: 2026-12-09, name: Hol, closed: all}
special_sessions:
  - {date: 2026-12-13, name: Sunday special, sessions: {equity: [{open: "10:00", close: "11:00"}]}}
"#;

fn cal() -> Calendar {
    calendar::parse("t.yaml", CAL).unwrap()
}

fn load(steps: &str, analysis: &str, extra: &str) -> (Spec, Calendar) {
    let text = format!(
        "name: p\ncalendar: t\nsegments: [equity]\n{extra}\ntraffic:\n  haproxy:\n    endpoints: [\"unix:/run/h.sock\"]\n    backend: b\n    pools: {{blue: [b1], green: [g1]}}\n{analysis}\nsteps:\n{steps}\n"
    );
    let l = spec::load("p.yaml", &text, |_| Ok(cal())).unwrap_or_else(|d| panic!("{d:#?}"));
    (l.spec, l.calendar)
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn at(p: &Planned) -> Option<DateTime<Utc>> {
    match p {
        Planned::SetWeight { at, .. } | Planned::Approval { at } | Planned::Pause { at } => *at,
        Planned::Bake { until, .. } => *until,
    }
}

const CHECKS_SESSIONS: &str = "analysis:\n  prometheus: http://127.0.0.1:8428\n  interval: 10m\n  min_passes: 3\n  checks: [{name: e, query: up, max: 1}]";
const CHECKS_ALWAYS: &str = "analysis:\n  prometheus: http://127.0.0.1:8428\n  interval: 10m\n  min_passes: 3\n  evidence: always\n  checks: [{name: e, query: up, max: 1}]";

#[test]
fn first_raise_waits_for_a_window_with_min_remaining() {
    let (s, c) = load(
        "  - set_weight: 10\n  - set_weight: 100",
        "",
        "windows: {guard: {before_open: 30m, after_close: 30m}, min_remaining: 1h}",
    );
    // Thu 3rd 08:00: only 30 minutes left before 08:30 → wait for 16:00.
    let p = plan(&s, &c, t("2026-12-03T08:00:00+05:30"), &[]);
    assert_eq!(at(&p.steps[0]), Some(t("2026-12-03T16:00:00+05:30")));
    // Without analysis the second raise follows at once.
    assert_eq!(at(&p.steps[1]), Some(t("2026-12-03T16:00:00+05:30")));
    assert_eq!(p.complete_at, Some(t("2026-12-03T16:00:00+05:30")));
}

#[test]
fn second_raise_waits_for_in_session_passes() {
    let (s, c) = load(
        "  - set_weight: 10\n  - set_weight: 100",
        CHECKS_SESSIONS,
        "",
    );
    // First raise Thu 3rd 16:00; evaluations every 10m; the first three
    // in-session ones are Fri 4th 09:00, 09:10, 09:20 (t0 + k·10m lands on
    // the hour); the next window opens Fri 16:00.
    let p = plan(&s, &c, t("2026-12-03T16:00:00+05:30"), &[]);
    assert_eq!(at(&p.steps[0]), Some(t("2026-12-03T16:00:00+05:30")));
    assert_eq!(at(&p.steps[1]), Some(t("2026-12-04T16:00:00+05:30")));
}

#[test]
fn evidence_always_counts_night_evaluations() {
    let (s, c) = load("  - set_weight: 10\n  - set_weight: 100", CHECKS_ALWAYS, "");
    let p = plan(&s, &c, t("2026-12-03T16:00:00+05:30"), &[]);
    assert_eq!(at(&p.steps[1]), Some(t("2026-12-03T16:30:00+05:30")));
}

#[test]
fn nth_evaluation_counts_only_instants_inside_sessions() {
    let ev = Evidence_ {
        interval: TimeDelta::minutes(25),
        min_passes: 3,
        always: false,
    };
    let sessions = [
        Interval::new(t("2026-12-04T09:00:00Z"), t("2026-12-04T10:00:00Z")),
        Interval::new(t("2026-12-04T12:00:00Z"), t("2026-12-04T13:00:00Z")),
    ];
    // t0 = 08:50: evaluations 09:15, 09:40 | 10:05 ... 12:00? 08:50 + 25·k: 12:00 is k=7.6 → 12:10 (k=8).
    let got = nth_evaluation(
        &ev,
        t("2026-12-04T08:50:00Z"),
        &sessions,
        t("2026-12-31T00:00:00Z"),
    );
    assert_eq!(got, Some(t("2026-12-04T12:10:00Z")));
    // An evaluation exactly at a session's close does not count; at its open does.
    let ev = Evidence_ {
        interval: TimeDelta::minutes(60),
        min_passes: 1,
        always: false,
    };
    let got = nth_evaluation(
        &ev,
        t("2026-12-04T09:00:00Z"),
        &sessions,
        t("2026-12-31T00:00:00Z"),
    );
    assert_eq!(got, Some(t("2026-12-04T12:00:00Z")));
}

#[test]
fn bake_sessions_counts_trading_days_of_its_segment() {
    let (s, c) = load(
        "  - set_weight: 10\n  - bake: {sessions: 2}\n  - set_weight: 100",
        "",
        "",
    );
    // Raise Tue 8th 16:00; Wed 9th is a holiday; counted days Thu 10th, Fri 11th.
    let p = plan(&s, &c, t("2026-12-08T16:00:00+05:30"), &[]);
    assert_eq!(
        p.steps[1],
        Planned::Bake {
            start: Some(t("2026-12-08T16:00:00+05:30")),
            until: Some(t("2026-12-11T15:30:00+05:30"))
        }
    );
    assert_eq!(at(&p.steps[2]), Some(t("2026-12-11T16:00:00+05:30")));
}

#[test]
fn bake_day_starting_before_the_bake_does_not_count() {
    let (s, c) = load(
        "  - set_weight: 10\n  - bake: {duration: 1h}\n  - bake: {sessions: 1}\n  - set_weight: 100",
        "",
        "windows: {guard: {before_open: 0m, after_close: 0m}, min_remaining: 0m}",
    );
    // Raise at Thu 08:00, first bake to 09:00... the second bake starts at 09:00
    // (equity opens 09:00: at or after the start, so Thu counts).
    let p = plan(&s, &c, t("2026-12-03T08:00:00+05:30"), &[]);
    assert_eq!(at(&p.steps[2]), Some(t("2026-12-03T15:30:00+05:30")));
    // Started at 09:01 the day has begun: Friday is the first counted day.
    let p = plan(&s, &c, t("2026-12-03T08:01:00+05:30"), &[]);
    assert_eq!(at(&p.steps[2]), Some(t("2026-12-04T15:30:00+05:30")));
}

#[test]
fn bake_day_needs_an_evaluation_inside_the_session_when_checks_exist() {
    // A 2h interval with t0 = Sun 13th 08:30 puts evaluations at 10:30 — inside
    // the Sunday special 10:00–11:00, so Sunday counts.
    let checks = "analysis:\n  prometheus: http://127.0.0.1:8428\n  interval: 2h\n  min_passes: 1\n  checks: [{name: e, query: up, max: 1}]";
    let (s, c) = load(
        "  - set_weight: 10\n  - bake: {sessions: 1}\n  - set_weight: 100",
        checks,
        "windows: {guard: {before_open: 0m, after_close: 0m}, min_remaining: 0m}",
    );
    let p = plan(&s, &c, t("2026-12-13T08:30:00+05:30"), &[]);
    assert_eq!(at(&p.steps[1]), Some(t("2026-12-13T11:00:00+05:30")));
    // t0 = 07:30 → evaluations 09:30, 11:30: none inside 10:00–11:00, so
    // Sunday does not count; Monday 14th does.
    let p = plan(&s, &c, t("2026-12-13T07:30:00+05:30"), &[]);
    assert_eq!(at(&p.steps[1]), Some(t("2026-12-14T15:30:00+05:30")));
}

#[test]
fn steps_beyond_coverage_are_null() {
    let (s, c) = load(
        "  - set_weight: 10\n  - bake: {sessions: 3}\n  - approval: {min: 1}\n  - set_weight: 100",
        "",
        "",
    );
    // Raise Wed 30th 16:00: only Thu 31st remains — the bake cannot finish.
    let p = plan(&s, &c, t("2026-12-30T16:00:00+05:30"), &[]);
    assert_eq!(at(&p.steps[0]), Some(t("2026-12-30T16:00:00+05:30")));
    assert_eq!(
        p.steps[1],
        Planned::Bake {
            start: None,
            until: None
        }
    );
    assert_eq!(p.steps[2], Planned::Approval { at: None });
    assert_eq!(
        p.steps[3],
        Planned::SetWeight {
            weight: 100,
            at: None
        }
    );
    assert_eq!(p.complete_at, None);
    let j = p.to_json(chrono_tz::Asia::Kolkata);
    assert_eq!(j["steps"][1]["start"], serde_json::Value::Null);
    assert_eq!(j["complete_at"], serde_json::Value::Null);
}

#[test]
fn bake_duration_ending_exactly_at_coverage_end_completes() {
    let (s, c) = load("  - set_weight: 100\n  - bake: {duration: 2h}", "", "");
    let p = plan(&s, &c, t("2026-12-31T22:00:00+05:30"), &[]);
    assert_eq!(p.complete_at, Some(t("2027-01-01T00:00:00+05:30")));
    let p = plan(&s, &c, t("2026-12-31T22:00:01+05:30"), &[]);
    assert_eq!(p.complete_at, None);
}

#[test]
fn json_shape_matches_the_contract() {
    let (s, c) = load(
        "  - set_weight: 10\n  - bake: {duration: 1h}\n  - approval: {min: 1}\n  - pause: {}\n  - set_weight: 100",
        "",
        "windows: {timezone: UTC}",
    );
    let p = plan(&s, &c, t("2026-12-05T00:00:00Z"), &[]);
    let j = p.to_json(chrono_tz::UTC);
    assert_eq!(j["rollout"], "p");
    assert_eq!(j["calendar"]["name"], "t");
    assert_eq!(j["calendar"]["version"], "1");
    assert_eq!(j["from"], "2026-12-05T00:00:00+00:00");
    let types: Vec<&str> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["set_weight", "bake", "approval", "pause", "set_weight"]
    );
    assert_eq!(j["steps"][0]["weight"], 10);
    assert_eq!(j["steps"][1]["until"], "2026-12-05T01:00:00+00:00");
    assert_eq!(j["steps"][3]["index"], 3);
    assert_eq!(j["complete_at"], "2026-12-05T01:00:00+00:00");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Every planned set_weight lies in a permitted window with at least
    /// min_remaining left, and planned times never go backwards.
    #[test]
    fn planned_raises_lie_in_permitted_windows(
        start_min in 0i64..(60 * 24 * 28),
        guard in 0i64..90,
        min_rem in 0i64..120,
        interval in 1i64..90,
        always in any::<bool>(),
    ) {
        let checks = format!(
            "analysis:\n  prometheus: http://127.0.0.1:8428\n  interval: {interval}m\n  min_passes: 2\n  evidence: {}\n  checks: [{{name: e, query: up, max: 1}}]",
            if always { "always" } else { "sessions" }
        );
        let windows = format!("windows: {{guard: {{before_open: {guard}m, after_close: {guard}m}}, min_remaining: {min_rem}m}}");
        let (s, c) = load("  - set_weight: 5\n  - bake: {sessions: 1}\n  - set_weight: 50\n  - bake: {duration: 3h}\n  - set_weight: 100", &checks, &windows);
        let from = t("2026-12-01T00:00:00+05:30") + TimeDelta::minutes(start_min);
        let p = plan(&s, &c, from, &[]);
        let permitted = windows::permitted(&s.window_rules(), &c, Interval::new(from, c.coverage().end), &[]);
        let mut prev = from;
        let mut seen_null = false;
        for st in &p.steps {
            let a = at(st);
            if seen_null { prop_assert!(a.is_none()); }
            match a {
                None => seen_null = true,
                Some(a) => { prop_assert!(a >= prev); prev = a; }
            }
            if let Planned::SetWeight { at: Some(a), .. } = st {
                let ok = permitted.iter().any(|w| w.contains(*a) && w.end - *a >= s.windows.min_remaining);
                prop_assert!(ok, "raise at {} is not in a permitted window with min_remaining left", a);
            }
        }
    }
}
