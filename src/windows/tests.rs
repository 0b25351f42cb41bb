use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use rstest::rstest;

use super::*;
use crate::calendar::{self, Calendar};
use crate::localtime;

/// A small calendar in IST: equity Mon–Fri 09:00–15:30, commodity Mon–Fri
/// 09:00–23:55 (23:30 in a March–October season), a Sunday special session
/// in two parts, a holiday that keeps commodity's evening, a blackout.
const CAL: &str = r#"
name: t
version: "1"
timezone: Asia/Kolkata
valid_from: 2026-01-01
valid_until: 2026-12-31
segments:
  equity: {days: [mon, tue, wed, thu, fri], open: "09:00", close: "15:30"}
  commodity:
    days: [mon, tue, wed, thu, fri]
    open: "09:00"
    close: "23:55"
    seasons: [{from: 2026-03-09, to: 2026-10-30, close: "23:30"}]
holidays:
  - {date: 2026-12-02, name: Hol, closed: all, sessions: {commodity: [{open: "17:00", close: "23:55"}]}}
special_sessions:
  - date: 2026-12-06
    name: Split Sunday
    sessions: {equity: [{open: "09:00", close: "10:00"}, {open: "14:00", close: "15:00"}]}
blackouts:
  - {date: 2026-12-12, name: Drill, from: "10:00", to: "12:00", confidence: low}
  - {date: 2026-12-13, name: Whole day, from: "00:00", to: "24:00"}
"#;

fn cal() -> Calendar {
    calendar::parse("t.yaml", CAL).expect("test calendar is valid")
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn rules<'a>(
    segments: &'a [String],
    allow: &'a [CronWindow],
    deny: &'a [DenyRule],
    tz: Tz,
    guard: i64,
) -> Rules<'a> {
    Rules {
        timezone: tz,
        before_open: TimeDelta::minutes(guard),
        after_close: TimeDelta::minutes(guard),
        allow,
        deny,
        segments,
    }
}

fn show(tz: Tz, v: &[Interval]) -> Vec<(String, String)> {
    v.iter()
        .map(|i| {
            (
                localtime::rfc3339(tz, i.start),
                localtime::rfc3339(tz, i.end),
            )
        })
        .collect()
}

fn segs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cw(name: &str, cron: &str, mins: i64) -> CronWindow {
    CronWindow {
        name: name.into(),
        cron: Cron::parse(cron).unwrap(),
        duration: TimeDelta::minutes(mins),
    }
}

const IST: Tz = chrono_tz::Asia::Kolkata;

#[test]
fn guard_widens_sessions_both_sides() {
    let c = cal();
    let s = segs(&["equity"]);
    let r = rules(&s, &[], &[], IST, 30);
    // Thu 2026-12-03 00:00 → Fri 2026-12-04 00:00.
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-03T00:00:00+05:30"),
            t("2026-12-04T00:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        show(IST, &got),
        vec![
            (
                "2026-12-03T00:00:00+05:30".into(),
                "2026-12-03T08:30:00+05:30".into()
            ),
            (
                "2026-12-03T16:00:00+05:30".into(),
                "2026-12-04T00:00:00+05:30".into()
            ),
        ]
    );
}

#[rstest]
#[case::zero_guard(0, "09:00", "15:30")]
#[case::guard_45m(45, "08:15", "16:15")]
fn guard_sizes(#[case] guard: i64, #[case] until: &str, #[case] from: &str) {
    let c = cal();
    let s = segs(&["equity"]);
    let r = rules(&s, &[], &[], IST, guard);
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-03T00:00:00+05:30"),
            t("2026-12-04T00:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].end, t(&format!("2026-12-03T{until}:00+05:30")));
    assert_eq!(got[1].start, t(&format!("2026-12-03T{from}:00+05:30")));
}

#[test]
fn previous_days_session_and_its_guard_count_look_back() {
    // Commodity closes Thu 23:55 + 30m guard → blocked until Fri 00:25, even
    // though the range starts at Fri 00:00.
    let c = cal();
    let s = segs(&["commodity"]);
    let r = rules(&s, &[], &[], IST, 30);
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-04T00:00:00+05:30"),
            t("2026-12-04T12:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        show(IST, &got),
        vec![(
            "2026-12-04T00:25:00+05:30".into(),
            "2026-12-04T08:30:00+05:30".into()
        )]
    );
}

#[test]
fn seasons_move_the_close() {
    let c = cal();
    let s = segs(&["commodity"]);
    let r = rules(&s, &[], &[], IST, 0);
    // 2026-10-30 (Fri) is the season's last day: close 23:30; 2026-11-02 (Mon) 23:55.
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-10-30T12:00:00+05:30"),
            t("2026-10-31T12:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(got[0].start, t("2026-10-30T23:30:00+05:30"));
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-11-02T12:00:00+05:30"),
            t("2026-11-03T12:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(got[0].start, t("2026-11-02T23:55:00+05:30"));
}

#[test]
fn holiday_replacement_sessions_block_only_their_hours() {
    let c = cal();
    let s = segs(&["equity", "commodity"]);
    let r = rules(&s, &[], &[], IST, 30);
    // Wed 2026-12-02: equity closed, commodity 17:00–23:55 only.
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-02T00:00:00+05:30"),
            t("2026-12-03T00:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        show(IST, &got),
        vec![(
            "2026-12-02T00:25:00+05:30".into(),
            "2026-12-02T16:30:00+05:30".into()
        )]
    );
}

#[test]
fn split_special_session_leaves_the_gap_between_its_parts() {
    let c = cal();
    let s = segs(&["equity"]);
    let r = rules(&s, &[], &[], IST, 30);
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-06T00:00:00+05:30"),
            t("2026-12-07T00:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        show(IST, &got),
        vec![
            (
                "2026-12-06T00:00:00+05:30".into(),
                "2026-12-06T08:30:00+05:30".into()
            ),
            (
                "2026-12-06T10:30:00+05:30".into(),
                "2026-12-06T13:30:00+05:30".into()
            ),
            (
                "2026-12-06T15:30:00+05:30".into(),
                "2026-12-07T00:00:00+05:30".into()
            ),
        ]
    );
}

#[test]
fn blackouts_are_widened_and_24_00_reaches_midnight() {
    let c = cal();
    let s = segs(&["equity"]);
    let r = rules(&s, &[], &[], IST, 30);
    // Sat 12th: 10:00–12:00 blackout → 09:30–12:30. Sun 13th whole day → Sat 23:30 – Mon 00:30.
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-12T00:00:00+05:30"),
            t("2026-12-14T06:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        show(IST, &got),
        vec![
            (
                "2026-12-12T00:00:00+05:30".into(),
                "2026-12-12T09:30:00+05:30".into()
            ),
            (
                "2026-12-12T12:30:00+05:30".into(),
                "2026-12-12T23:30:00+05:30".into()
            ),
            (
                "2026-12-14T00:30:00+05:30".into(),
                "2026-12-14T06:00:00+05:30".into()
            ),
        ]
    );
}

#[test]
fn outside_coverage_everything_is_blocked() {
    let c = cal();
    let s = segs(&["equity"]);
    let r = rules(&s, &[], &[], IST, 0);
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-31T18:00:00+05:30"),
            t("2027-01-03T00:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        show(IST, &got),
        vec![(
            "2026-12-31T18:00:00+05:30".into(),
            "2027-01-01T00:00:00+05:30".into()
        )]
    );
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2025-12-30T00:00:00+05:30"),
            t("2026-01-01T06:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        show(IST, &got),
        vec![(
            "2026-01-01T00:00:00+05:30".into(),
            "2026-01-01T06:00:00+05:30".into()
        )]
    );
    // Entirely outside: nothing.
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2027-02-01T00:00:00+05:30"),
            t("2027-02-08T00:00:00+05:30"),
        ),
        &[],
    );
    assert!(got.is_empty());
}

#[test]
fn allow_windows_restrict_and_look_back() {
    let c = cal();
    let s = segs(&["equity"]);
    // 22:00 Mon–Fri for 10h: started Thu 22:00, still open at Fri 02:00.
    let allow = [cw("nights", "0 22 * * 1-5", 600)];
    let r = rules(&s, &allow, &[], IST, 30);
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-04T02:00:00+05:30"),
            t("2026-12-05T12:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        show(IST, &got),
        vec![
            (
                "2026-12-04T02:00:00+05:30".into(),
                "2026-12-04T08:00:00+05:30".into()
            ),
            (
                "2026-12-04T22:00:00+05:30".into(),
                "2026-12-05T08:00:00+05:30".into()
            ),
        ]
    );
}

#[test]
fn deny_windows_fixed_and_recurring() {
    let c = cal();
    let s = segs(&["equity"]);
    let deny = [
        DenyRule::Fixed {
            name: "results".into(),
            from: t("2026-12-03T18:00:00+05:30"),
            to: t("2026-12-03T20:00:00+05:30"),
        },
        DenyRule::Recurring(cw("expiry", "0 0 * * thu", 120)),
    ];
    let r = rules(&s, &[], &deny, IST, 30);
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-03T00:00:00+05:30"),
            t("2026-12-04T00:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        show(IST, &got),
        vec![
            (
                "2026-12-03T02:00:00+05:30".into(),
                "2026-12-03T08:30:00+05:30".into()
            ),
            (
                "2026-12-03T16:00:00+05:30".into(),
                "2026-12-03T18:00:00+05:30".into()
            ),
            (
                "2026-12-03T20:00:00+05:30".into(),
                "2026-12-04T00:00:00+05:30".into()
            ),
        ]
    );
}

#[test]
fn freeze_blocks_like_a_deny() {
    let c = cal();
    let s = segs(&["equity"]);
    let r = rules(&s, &[], &[], IST, 30);
    let freeze = [Interval::new(
        t("2026-12-03T20:00:00+05:30"),
        t("2026-12-10T00:00:00+05:30"),
    )];
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-12-03T16:00:00+05:30"),
            t("2026-12-04T00:00:00+05:30"),
        ),
        &freeze,
    );
    assert_eq!(
        show(IST, &got),
        vec![(
            "2026-12-03T16:00:00+05:30".into(),
            "2026-12-03T20:00:00+05:30".into()
        )]
    );
}

#[test]
fn windows_in_utc_show_utc_offsets() {
    let c = cal();
    let s = segs(&["equity"]);
    let allow = [cw("utc-night", "0 20 * * *", 240)];
    let r = rules(&s, &allow, &[], chrono_tz::UTC, 30);
    let got = permitted(
        &r,
        &c,
        Interval::new(t("2026-12-03T00:00:00Z"), t("2026-12-04T00:00:00Z")),
        &[],
    );
    assert_eq!(
        show(chrono_tz::UTC, &got),
        vec![(
            "2026-12-03T20:00:00+00:00".into(),
            "2026-12-04T00:00:00+00:00".into()
        )]
    );
}

#[test]
fn windows_in_new_york_across_both_dst_changes() {
    let ny = chrono_tz::America::New_York;
    let c = cal();
    let s: Vec<String> = Vec::new(); // no segments: only the allow rule shapes the windows
    // 01:30 for 2h, elapsed time.
    let allow = [cw("early", "30 1 * * *", 120)];
    let r = rules(&s, &allow, &[], ny, 0);
    // Spring forward 2026-03-08: 01:30 EST + 2h elapsed = 04:30 EDT.
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-03-08T00:00:00-05:00"),
            t("2026-03-08T12:00:00-04:00"),
        ),
        &[],
    );
    assert_eq!(
        show(ny, &got),
        vec![(
            "2026-03-08T01:30:00-05:00".into(),
            "2026-03-08T04:30:00-04:00".into()
        )]
    );
    // Fall back 2026-11-01: 01:30 happens twice; the window starts once, at the
    // first (EDT), and lasts 2h elapsed → 02:30 EST.
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-11-01T00:00:00-04:00"),
            t("2026-11-01T12:00:00-05:00"),
        ),
        &[],
    );
    assert_eq!(
        show(ny, &got),
        vec![(
            "2026-11-01T01:30:00-04:00".into(),
            "2026-11-01T02:30:00-05:00".into()
        )]
    );
    // A start inside the spring gap (02:30) begins when the clock jumps (03:00 EDT).
    let allow = [cw("gap", "30 2 * * *", 60)];
    let r = rules(&s, &allow, &[], ny, 0);
    let got = permitted(
        &r,
        &c,
        Interval::new(
            t("2026-03-08T00:00:00-05:00"),
            t("2026-03-08T12:00:00-04:00"),
        ),
        &[],
    );
    assert_eq!(
        show(ny, &got),
        vec![(
            "2026-03-08T03:00:00-04:00".into(),
            "2026-03-08T04:00:00-04:00".into()
        )]
    );
}

#[test]
fn explain_names_what_closes_each_window() {
    let c = cal();
    let s = segs(&["equity"]);
    let r = rules(&s, &[], &[], IST, 30);
    let ex = explain(
        &r,
        &c,
        Interval::new(
            t("2026-12-11T18:00:00+05:30"),
            t("2026-12-12T12:00:00+05:30"),
        ),
        &[],
    );
    assert_eq!(ex[0].window.end, t("2026-12-12T09:30:00+05:30"));
    match &ex[0].closed_by.as_ref().unwrap().block {
        Block::Blackout(b) => assert_eq!(b.name, "Drill"),
        other => panic!("expected the blackout, got {other:?}"),
    }
    let ex = explain(
        &r,
        &c,
        Interval::new(
            t("2026-12-03T00:00:00+05:30"),
            t("2026-12-03T06:00:00+05:30"),
        ),
        &[],
    );
    assert!(matches!(
        ex[0].closed_by.as_ref().unwrap().block,
        Block::Session {
            segment: "equity",
            ..
        }
    ));
    assert!(ex[0].cut_at_range_end);
}

// Property: whatever the rules, a permitted window never overlaps a widened
// session, a blackout or a deny window, and always lies in an allow window.
const CRONS: [&str; 5] = [
    "0 0 * * 1-5",
    "30 22 * * *",
    "0 */6 * * *",
    "15 1 1,15 * sat",
    "0 20 * * sat,sun",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn permitted_never_touches_blocked_time(
        start_min in 0i64..(60 * 24 * 330),
        len_h in 1i64..(24 * 14),
        guard in 0i64..120,
        allow_ix in proptest::option::of(0usize..CRONS.len()),
        allow_len in 30i64..(60 * 30),
        deny_ix in proptest::option::of(0usize..CRONS.len()),
        deny_len in 30i64..(60 * 10),
        seg_mask in 1u8..4,
    ) {
        let c = cal();
        let from = t("2026-01-01T00:00:00+05:30") + TimeDelta::minutes(start_min);
        let range = Interval::new(from, from + TimeDelta::hours(len_h));
        let mut s = Vec::new();
        if seg_mask & 1 != 0 { s.push("equity".to_string()); }
        if seg_mask & 2 != 0 { s.push("commodity".to_string()); }
        let allow: Vec<CronWindow> = allow_ix.map(|i| cw("a", CRONS[i], allow_len)).into_iter().collect();
        let deny: Vec<DenyRule> = deny_ix.map(|i| DenyRule::Recurring(cw("d", CRONS[i], deny_len))).into_iter().collect();
        let r = rules(&s, &allow, &deny, IST, guard);
        let got = permitted(&r, &c, range, &[]);
        let g = TimeDelta::minutes(guard);
        // Independent enumeration of what must be blocked, day by day.
        let (first, last) = (localtime::date_of(IST, range.start) - TimeDelta::days(2), localtime::date_of(IST, range.end) + TimeDelta::days(1));
        let mut bad = Vec::new();
        for name in &s {
            let seg = c.segment(name).unwrap();
            for sess in c.sessions(seg, first, last) {
                bad.push(Interval::new(sess.interval.start - g, sess.interval.end + g));
            }
        }
        for (iv, _) in c.blackouts_between(first, last) {
            bad.push(Interval::new(iv.start - g, iv.end + g));
        }
        for d in &deny {
            if let DenyRule::Recurring(w) = d {
                for st in w.cron.starts_between(IST, range.start - w.duration, range.end) {
                    bad.push(Interval::new(st, st + w.duration));
                }
            }
        }
        for w in &got {
            prop_assert!(range.start <= w.start && w.end <= range.end && w.start < w.end);
            for b in &bad {
                prop_assert!(!w.overlaps(b), "window {:?} overlaps blocked {:?}", w, b);
            }
            if let Some(a) = allow.first() {
                let starts = a.cron.starts_between(IST, w.start - a.duration, w.end);
                let allowed = normalize(starts.into_iter().map(|st| Interval::new(st, st + a.duration)).collect());
                prop_assert!(allowed.iter().any(|x| x.start <= w.start && w.end <= x.end), "window {:?} outside every allow window", w);
            }
        }
        // And windows are maximal: the instant just before a window's start
        // (inside the range) is blocked, denied, or not allowed.
        for w in &got {
            if w.start > range.start {
                let before = w.start - TimeDelta::seconds(1);
                let in_bad = bad.iter().any(|b| b.contains(before));
                let in_allow = allow.first().is_none_or(|a| {
                    a.cron.starts_between(IST, before - a.duration, before + TimeDelta::seconds(1))
                        .into_iter().any(|st| Interval::new(st, st + a.duration).contains(before))
                });
                prop_assert!(in_bad || !in_allow, "instant before {:?} is neither blocked nor outside allow", w);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Provisional data and coverage (issue 10).

fn provisional_cal() -> Calendar {
    let text = CAL.replace(
        "valid_until: 2026-12-31\n",
        "valid_until: 2026-12-31\nprovisional_from: 2026-12-20\n",
    );
    calendar::parse("t.yaml", &text).expect("test calendar is valid")
}

#[rstest]
// Ends well before 2026-12-20 00:00 IST: decided by final data.
#[case::before("2026-12-18T00:25:00+05:30", "2026-12-18T08:30:00+05:30", 30, false)]
// Ends at 23:45 on the 19th; a 30-minute guard reaches 00:15 on the 20th,
// so a provisional session could end it.
#[case::guard_reaches_in("2026-12-19T20:00:00+05:30", "2026-12-19T23:45:00+05:30", 30, true)]
#[case::guard_stops_short("2026-12-19T20:00:00+05:30", "2026-12-19T23:45:00+05:30", 10, false)]
#[case::inside("2026-12-21T00:25:00+05:30", "2026-12-21T08:30:00+05:30", 0, true)]
fn a_window_relies_on_provisional_data_when_its_end_and_guard_reach_it(
    #[case] start: &str,
    #[case] end: &str,
    #[case] guard: i64,
    #[case] want: bool,
) {
    let cal = provisional_cal();
    let s = segs(&["equity"]);
    let r = rules(&s, &[], &[], chrono_tz::Asia::Kolkata, guard);
    let w = Interval::new(t(start), t(end));
    assert_eq!(relies_on_provisional(&r, &cal, w), want);
    // Without provisional_from nothing is provisional.
    assert!(!relies_on_provisional(&r, &super::tests::cal(), w));
}

#[rstest]
#[case::inside("2026-06-01T00:00:00+05:30", "2026-06-08T00:00:00+05:30", None)]
#[case::exactly_coverage("2026-01-01T00:00:00+05:30", "2027-01-01T00:00:00+05:30", None)]
#[case::reaches_past_end(
    "2026-12-28T00:00:00+05:30",
    "2027-01-04T00:00:00+05:30",
    Some("reaches outside")
)]
#[case::starts_before(
    "2025-12-28T00:00:00+05:30",
    "2026-01-04T00:00:00+05:30",
    Some("reaches outside")
)]
#[case::wholly_after(
    "2027-01-02T00:00:00+05:30",
    "2027-01-04T00:00:00+05:30",
    Some("lies outside")
)]
fn coverage_note_names_the_coverage_when_the_range_leaves_it(
    #[case] from: &str,
    #[case] to: &str,
    #[case] want: Option<&str>,
) {
    let note = coverage_note(&cal(), Interval::new(t(from), t(to)));
    match want {
        None => assert_eq!(note, None),
        Some(w) => {
            let n = note.expect("a note");
            assert!(n.contains(w), "{n}");
            assert!(n.contains("2026-01-01 to 2026-12-31"), "{n}");
        }
    }
}

#[rstest]
#[case::far_from_the_end("2026-12-01T00:00:00+05:30", None)]
#[case::end_within_the_known_week(
    "2026-12-28T00:00:00+05:30",
    Some("no permitted window before the calendar t ends on 2026-12-31 — extend the calendar")
)]
#[case::already_ended(
    "2027-01-05T00:00:00+05:30",
    Some("no permitted window before the calendar t ended on 2026-12-31 — extend the calendar")
)]
fn waiting_for_names_the_calendar_end_when_it_is_within_sight(
    #[case] now: &str,
    #[case] want: Option<&str>,
) {
    assert_eq!(
        no_window_before_coverage_end(&cal(), t(now)).as_deref(),
        want
    );
}

#[test]
fn explain_names_what_opens_each_window() {
    let c = cal();
    let s = segs(&["equity"]);
    let r = rules(&s, &[], &[], IST, 30);
    let opens = |from: &str, to: &str| -> Vec<(String, Option<String>)> {
        explain(&r, &c, Interval::new(t(from), t(to)), &[])
            .iter()
            .map(|e| {
                (
                    localtime::rfc3339(IST, e.window.start),
                    opens_after(e, r.after_close),
                )
            })
            .collect()
    };
    // Thursday 10:00 IST, inside the widened equity session: the window
    // opens at 16:00, when the session and its guard end.
    assert_eq!(
        opens("2026-12-03T10:00:00+05:30", "2026-12-03T20:00:00+05:30"),
        vec![(
            "2026-12-03T16:00:00+05:30".into(),
            Some("the equity session ends (+30m guard)".into())
        )]
    );
    // Open from the start of the range: nothing to wait for.
    assert_eq!(
        opens("2026-12-03T17:00:00+05:30", "2026-12-03T20:00:00+05:30"),
        vec![("2026-12-03T17:00:00+05:30".into(), None)]
    );
    // A special session names itself; a blackout too.
    let sunday = opens("2026-12-06T09:00:00+05:30", "2026-12-06T12:00:00+05:30");
    assert_eq!(
        sunday[0].1.as_deref(),
        Some("the equity special session (Split Sunday) ends (+30m guard)")
    );
    let drill = opens("2026-12-12T11:00:00+05:30", "2026-12-12T14:00:00+05:30");
    assert_eq!(
        drill,
        vec![(
            "2026-12-12T12:30:00+05:30".into(),
            Some("the blackout Drill ends (+30m guard)".into())
        )]
    );
    // Where an allow window opens the time, it is named.
    let allow = [cw("nightly", "0 22 * * *", 60)];
    let r = rules(&s, &allow, &[], IST, 30);
    let ex = explain(
        &r,
        &c,
        Interval::new(
            t("2026-12-03T17:00:00+05:30"),
            t("2026-12-03T23:30:00+05:30"),
        ),
        &[],
    );
    assert_eq!(ex.len(), 1);
    assert_eq!(
        opens_after(&ex[0], r.after_close).as_deref(),
        Some("allow window nightly opens")
    );
    // A deny window ending as the allow window begins: both end the wait.
    let deny = [DenyRule::Fixed {
        name: "results".into(),
        from: t("2026-12-03T21:00:00+05:30"),
        to: t("2026-12-03T22:00:00+05:30"),
    }];
    let r = rules(&s, &allow, &deny, IST, 30);
    let ex = explain(
        &r,
        &c,
        Interval::new(
            t("2026-12-03T17:00:00+05:30"),
            t("2026-12-03T23:30:00+05:30"),
        ),
        &[],
    );
    assert_eq!(
        opens_after(&ex[0], r.after_close).as_deref(),
        Some("deny window results ends and allow window nightly opens")
    );
}
