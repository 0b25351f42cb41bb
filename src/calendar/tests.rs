//! Table tests for the calendar: the five resolution rules of docs/design.md §5 on a
//! small inline calendar, instants (24:00, coverage, daylight saving), and
//! one validation test per kind of error, each pinned to its line and key path.

use super::*;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rstest::rstest;

use crate::diag::{Diagnostic, Severity};

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn load(text: &str) -> Calendar {
    match parse("test.yaml", text) {
        Ok(c) => c,
        Err(diags) => panic!(
            "calendar should be valid:\n{}",
            diags
                .iter()
                .map(Diagnostic::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// One calendar exercising every rule. Weekdays are noted because each case
/// depends on them.
const RULES: &str = r#"
name: test
version: "1.0"
timezone: Asia/Kolkata
valid_from: 2026-01-01
valid_until: 2026-12-31
segments:
  equity: {days: [mon, tue, wed, thu, fri], open: "09:15", close: "15:30"}
  currency: {days: [mon, tue, wed, thu, fri], open: "09:00", close: "17:00"}
  commodity:
    days: [mon, tue, wed, thu, fri]
    open: "09:00"
    close: "23:55"
    seasons:
      # Close only; Tue .. Thu, so the days either side are weekdays too.
      - {from: 2026-03-10, to: 2026-10-29, close: "23:30"}
      # Open only; Tue .. Thu.
      - {from: 2026-11-17, to: 2026-11-19, open: "10:00"}
  night: {days: [sat], open: "20:00", close: "24:00"}
holidays:
  - date: 2026-01-01      # Thu: nothing closed, commodity hours replaced
    name: New Year
    closed: []
    sessions: {commodity: [{open: "09:00", close: "17:00"}]}
  - date: 2026-01-26      # Mon
    name: Republic Day
    closed: all
  - date: 2026-02-19      # Thu
    name: Currency only
    closed: [currency]
  - date: 2026-03-03      # Tue
    name: Holi
    closed: [equity, currency]
    sessions: {commodity: [{open: "17:00", close: "23:55"}]}
  - date: 2026-04-03      # Fri, inside the 23:30 season
    name: Good Friday with a currency window
    closed: all
    sessions: {currency: [{open: "10:00", close: "12:00"}]}
  - date: 2026-05-01      # Fri, inside the 23:30 season
    name: Maharashtra Day
    closed: [equity, currency]
    sessions: {commodity: [{open: "17:00", close: "23:55"}]}
  - date: 2026-10-21      # Wed, also a special session
    name: Diwali
    closed: all
special_sessions:
  - date: 2026-02-01      # Sun
    name: Budget
    sessions:
      equity: [{open: "08:45", close: "16:15"}]
      commodity: [{open: "08:45", close: "17:15"}]
  - date: 2026-05-16      # Sat, two sessions written out of order
    name: DR drill
    sessions:
      equity: [{open: "11:30", close: "12:30"}, {open: "09:15", close: "10:00"}]
  - date: 2026-10-21
    name: Muhurat
    sessions:
      equity: [{open: "13:15", close: "15:15"}]
      commodity: [{open: "13:30", close: "15:00"}]
blackouts:
  - {date: 2026-06-10, from: "14:00", to: "15:00", name: afternoon}
  - {date: 2026-06-10, from: "10:00", to: "11:00", name: morning}
  - {date: 2026-06-11, from: "10:00", to: "11:00", name: next day}
  - {date: 2026-11-08, from: "00:00", to: "24:00", name: Muhurat hours unknown, source: "NSE CMTR71775", confidence: low}
"#;

/// Which rule decided, with the name of the entry that decided it.
fn rule_of(rule: Rule<'_>) -> String {
    match rule {
        Rule::Special(s) => format!("special {}", s.name),
        Rule::HolidaySessions(h) => format!("holiday sessions {}", h.name),
        Rule::HolidayClosed(h) => format!("holiday closed {}", h.name),
        Rule::Regular => "regular".into(),
        Rule::Season(s) => format!("season {}", s.from),
        Rule::NoSession => "none".into(),
    }
}

#[rstest]
// 1. A special session that lists the segment wins, on weekends too.
#[case::special_on_sunday("2026-02-01", "equity", &[("08:45", "16:15")], "special Budget")]
#[case::special_other_segment("2026-02-01", "commodity", &[("08:45", "17:15")], "special Budget")]
#[case::special_not_listing_segment_on_sunday("2026-02-01", "currency", &[], "none")]
#[case::special_two_sessions_sorted("2026-05-16", "equity", &[("09:15", "10:00"), ("11:30", "12:30")], "special DR drill")]
#[case::special_not_listing_falls_to_weekday("2026-05-16", "night", &[("20:00", "24:00")], "regular")]
// A date in both holidays and special_sessions: listed segments trade the
// special hours, the others fall through to the holiday.
#[case::special_beats_holiday("2026-10-21", "equity", &[("13:15", "15:15")], "special Muhurat")]
#[case::special_beats_holiday_commodity("2026-10-21", "commodity", &[("13:30", "15:00")], "special Muhurat")]
#[case::holiday_applies_when_special_omits_segment("2026-10-21", "currency", &[], "holiday closed Diwali")]
// 2. A holiday giving sessions for the segment: exactly those.
#[case::holiday_sessions("2026-03-03", "commodity", &[("17:00", "23:55")], "holiday sessions Holi")]
#[case::holiday_sessions_with_empty_closed("2026-01-01", "commodity", &[("09:00", "17:00")], "holiday sessions New Year")]
#[case::holiday_sessions_beat_closed_all("2026-04-03", "currency", &[("10:00", "12:00")], "holiday sessions Good Friday with a currency window")]
#[case::holiday_sessions_ignore_season("2026-05-01", "commodity", &[("17:00", "23:55")], "holiday sessions Maharashtra Day")]
// 3. A holiday closing the segment, by list or `all`.
#[case::holiday_closes_listed("2026-03-03", "equity", &[], "holiday closed Holi")]
#[case::holiday_closes_listed_other("2026-03-03", "currency", &[], "holiday closed Holi")]
#[case::holiday_closes_all("2026-01-26", "equity", &[], "holiday closed Republic Day")]
#[case::holiday_closes_all_commodity("2026-01-26", "commodity", &[], "holiday closed Republic Day")]
#[case::closed_all_with_sessions_closes_others("2026-04-03", "equity", &[], "holiday closed Good Friday with a currency window")]
#[case::closed_all_with_sessions_closes_others_in_season("2026-04-03", "commodity", &[], "holiday closed Good Friday with a currency window")]
// 4. The weekday's regular session: holidays that neither close the segment
// nor give it sessions leave it alone.
#[case::empty_closed_leaves_others_regular("2026-01-01", "equity", &[("09:15", "15:30")], "regular")]
#[case::unlisted_segment_is_regular("2026-02-19", "equity", &[("09:15", "15:30")], "regular")]
#[case::listed_segment_closed("2026-02-19", "currency", &[], "holiday closed Currency only")]
#[case::regular_weekday("2026-06-10", "currency", &[("09:00", "17:00")], "regular")]
#[case::regular_saturday_segment("2026-05-23", "night", &[("20:00", "24:00")], "regular")]
// 5. Otherwise nothing.
#[case::weekend_saturday("2026-06-13", "equity", &[], "none")]
#[case::weekend_sunday("2026-06-14", "commodity", &[], "none")]
#[case::weekday_not_in_days("2026-06-10", "night", &[], "none")]
// Seasons: inclusive at both ends, close-only and open-only.
#[case::day_before_close_season("2026-03-09", "commodity", &[("09:00", "23:55")], "regular")]
#[case::first_day_of_close_season("2026-03-10", "commodity", &[("09:00", "23:30")], "season 2026-03-10")]
#[case::last_day_of_close_season("2026-10-29", "commodity", &[("09:00", "23:30")], "season 2026-03-10")]
#[case::day_after_close_season("2026-10-30", "commodity", &[("09:00", "23:55")], "regular")]
#[case::day_before_open_season("2026-11-16", "commodity", &[("09:00", "23:55")], "regular")]
#[case::first_day_of_open_season("2026-11-17", "commodity", &[("10:00", "23:55")], "season 2026-11-17")]
#[case::last_day_of_open_season("2026-11-19", "commodity", &[("10:00", "23:55")], "season 2026-11-17")]
#[case::day_after_open_season("2026-11-20", "commodity", &[("09:00", "23:55")], "regular")]
#[case::season_only_for_its_segment("2026-07-15", "currency", &[("09:00", "17:00")], "regular")]
// Just outside coverage the regular sessions still exist (guards widen into
// the coverage from them).
#[case::day_before_coverage("2025-12-31", "equity", &[("09:15", "15:30")], "regular")]
#[case::day_after_coverage("2027-01-01", "commodity", &[("09:00", "23:55")], "regular")]
fn resolution_rules(
    #[case] date: &str,
    #[case] segment: &str,
    #[case] expected: &[(&str, &str)],
    #[case] expected_rule: &str,
) {
    let cal = load(RULES);
    let seg = cal.segment(segment).unwrap();
    let (hours, rule) = cal.hours_on(seg, d(date));
    let got: Vec<(String, String)> = hours
        .iter()
        .map(|h| (h.open.to_string(), h.close.to_string()))
        .collect();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(o, c)| (o.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want, "{segment} on {date}");
    assert_eq!(rule_of(rule), expected_rule, "{segment} on {date}");
}

#[test]
fn twenty_four_hundred_closes_at_next_local_midnight() {
    let cal = load(RULES);
    let night = cal.segment("night").unwrap();
    let s = cal.sessions(night, d("2026-05-23"), d("2026-05-23"));
    assert_eq!(s.len(), 1);
    // 20:00 and 24:00 IST (+05:30).
    assert_eq!(s[0].interval.start, utc("2026-05-23T14:30:00Z"));
    assert_eq!(s[0].interval.end, utc("2026-05-24T00:00:00+05:30"));
    assert_eq!(s[0].date, d("2026-05-23"));
}

#[test]
fn sessions_come_in_date_and_time_order_with_their_rule() {
    let cal = load(RULES);
    let equity = cal.segment("equity").unwrap();
    // Fri regular, Sat DR drill (two sessions), Sun nothing, Mon regular.
    let s = cal.sessions(equity, d("2026-05-15"), d("2026-05-18"));
    let got: Vec<(NaiveDate, DateTime<Utc>, DateTime<Utc>, String)> = s
        .iter()
        .map(|s| {
            assert_eq!(s.segment, "equity");
            (s.date, s.interval.start, s.interval.end, rule_of(s.rule))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                d("2026-05-15"),
                utc("2026-05-15T09:15:00+05:30"),
                utc("2026-05-15T15:30:00+05:30"),
                "regular".to_string()
            ),
            (
                d("2026-05-16"),
                utc("2026-05-16T09:15:00+05:30"),
                utc("2026-05-16T10:00:00+05:30"),
                "special DR drill".to_string()
            ),
            (
                d("2026-05-16"),
                utc("2026-05-16T11:30:00+05:30"),
                utc("2026-05-16T12:30:00+05:30"),
                "special DR drill".to_string()
            ),
            (
                d("2026-05-18"),
                utc("2026-05-18T09:15:00+05:30"),
                utc("2026-05-18T15:30:00+05:30"),
                "regular".to_string()
            ),
        ]
    );
}

#[test]
fn coverage_is_local_midnight_to_midnight_after_valid_until() {
    let cal = load(RULES);
    let cov = cal.coverage();
    assert_eq!(cov.start, utc("2026-01-01T00:00:00+05:30"));
    assert_eq!(cov.start, utc("2025-12-31T18:30:00Z"));
    assert_eq!(cov.end, utc("2027-01-01T00:00:00+05:30"));
    // Half-open: the last instant of valid_until is covered, the next
    // midnight is not.
    assert!(cov.contains(utc("2026-12-31T23:59:59+05:30")));
    assert!(!cov.contains(cov.end));
    assert!(!cov.contains(cov.start - TimeDelta::seconds(1)));
}

#[test]
fn sessions_just_outside_coverage_are_produced_but_not_covered() {
    let cal = load(RULES);
    let equity = cal.segment("equity").unwrap();
    let s = cal.sessions(equity, d("2025-12-31"), d("2025-12-31"));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].interval.start, utc("2025-12-31T09:15:00+05:30"));
    assert!(!cal.coverage().overlaps(&s[0].interval));
}

#[test]
fn several_blackouts_on_one_date_are_sorted_and_half_open() {
    let cal = load(RULES);
    let b = cal.blackouts_between(d("2026-06-10"), d("2026-06-10"));
    let got: Vec<(&str, DateTime<Utc>, DateTime<Utc>)> = b
        .iter()
        .map(|(i, b)| (b.name.as_str(), i.start, i.end))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "morning",
                utc("2026-06-10T10:00:00+05:30"),
                utc("2026-06-10T11:00:00+05:30")
            ),
            (
                "afternoon",
                utc("2026-06-10T14:00:00+05:30"),
                utc("2026-06-10T15:00:00+05:30")
            ),
        ]
    );
    let (morning, _) = b[0];
    assert!(morning.contains(utc("2026-06-10T10:00:00+05:30")));
    assert!(morning.contains(utc("2026-06-10T10:59:59+05:30")));
    assert!(!morning.contains(utc("2026-06-10T11:00:00+05:30")));
    assert!(!morning.contains(utc("2026-06-10T09:59:59+05:30")));
}

#[rstest]
#[case::one_day("2026-06-11", "2026-06-11", &["next day"])]
#[case::range_inclusive("2026-06-10", "2026-06-11", &["morning", "afternoon", "next day"])]
#[case::before_all("2026-01-01", "2026-06-09", &[])]
#[case::between("2026-06-12", "2026-11-07", &[])]
#[case::last("2026-11-08", "2026-12-31", &["Muhurat hours unknown"])]
fn blackouts_between_is_inclusive_of_both_dates(
    #[case] first: &str,
    #[case] last: &str,
    #[case] expected: &[&str],
) {
    let cal = load(RULES);
    let names: Vec<&str> = cal
        .blackouts_between(d(first), d(last))
        .iter()
        .map(|(_, b)| b.name.as_str())
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn whole_day_blackout_keeps_its_provenance() {
    let cal = load(RULES);
    let b = cal.blackouts_between(d("2026-11-08"), d("2026-11-08"));
    assert_eq!(b.len(), 1);
    let (i, blackout) = b[0];
    assert_eq!(i.start, utc("2026-11-08T00:00:00+05:30"));
    assert_eq!(i.end, utc("2026-11-09T00:00:00+05:30"));
    assert_eq!(
        blackout.provenance,
        Provenance {
            source: Some("NSE CMTR71775".into()),
            confidence: Some(Confidence::Low),
        }
    );
}

const NEW_YORK: &str = r#"
name: nyc
version: "1"
timezone: America/New_York
valid_from: 2026-01-01
valid_until: 2026-12-31
segments:
  allday: {days: [mon, tue, wed, thu, fri, sat, sun], open: "00:00", close: "24:00"}
  across: {days: [mon, tue, wed, thu, fri, sat, sun], open: "00:30", close: "03:30"}
  ingap: {days: [sun], open: "02:30", close: "04:00"}
"#;

#[rstest]
// 2026-03-08: clocks go 02:00 EST → 03:00 EDT; 2026-11-01: 02:00 EDT → 01:00 EST.
#[case::ordinary_day("allday", "2026-03-07", "2026-03-07T05:00:00Z", 24 * 60)]
#[case::spring_forward_day_is_23_hours("allday", "2026-03-08", "2026-03-08T05:00:00Z", 23 * 60)]
#[case::fall_back_day_is_25_hours("allday", "2026-11-01", "2026-11-01T04:00:00Z", 25 * 60)]
#[case::across_spring_forward("across", "2026-03-08", "2026-03-08T05:30:00Z", 2 * 60)]
#[case::across_fall_back("across", "2026-11-01", "2026-11-01T04:30:00Z", 4 * 60)]
#[case::across_ordinary("across", "2026-11-08", "2026-11-08T05:30:00Z", 3 * 60)]
// An open inside the gap begins at the first instant after it (03:00 EDT).
#[case::open_in_gap("ingap", "2026-03-08", "2026-03-08T07:00:00Z", 60)]
#[case::open_not_in_gap("ingap", "2026-03-15", "2026-03-15T06:30:00Z", 90)]
fn sessions_on_daylight_saving_days_have_true_elapsed_length(
    #[case] segment: &str,
    #[case] date: &str,
    #[case] start: &str,
    #[case] minutes: i64,
) {
    let cal = load(NEW_YORK);
    let seg = cal.segment(segment).unwrap();
    let s = cal.sessions(seg, d(date), d(date));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].interval.start, utc(start));
    assert_eq!(
        s[0].interval.end - s[0].interval.start,
        TimeDelta::minutes(minutes)
    );
}

#[test]
fn coverage_in_a_daylight_saving_zone_uses_local_midnights() {
    let cal = load(NEW_YORK);
    let cov = cal.coverage();
    // Both ends are in winter: EST, -05:00.
    assert_eq!(cov.start, utc("2026-01-01T05:00:00Z"));
    assert_eq!(cov.end, utc("2027-01-01T05:00:00Z"));
}

// ---------------------------------------------------------------------------
// Validation. Each case starts from a valid file, makes one edit and/or
// appends lines, and expects exactly one error at a known line and key path.

/// A valid calendar; appended text starts at line 12.
const BASE: &str = r#"name: t
version: "1.0"
timezone: Asia/Kolkata
valid_from: 2026-01-01
valid_until: 2026-12-31
segments:
  equity: {days: [mon, tue, wed, thu, fri], open: "09:15", close: "15:30"}
  commodity:
    days: [mon, tue, wed, thu, fri]
    open: "09:00"
    close: "23:55"
"#;

fn edited(old: &str, new: &str, extra: &str) -> String {
    let mut text = BASE.to_string();
    if !old.is_empty() {
        assert!(text.contains(old), "edit `{old}` does not apply");
        text = text.replacen(old, new, 1);
    }
    text.push_str(extra);
    text
}

#[test]
fn base_calendar_is_valid() {
    let cal = load(&edited("", "", ""));
    assert_eq!(cal.segment_names(), vec!["equity", "commodity"]);
}

#[rstest]
#[case::version_not_dotted_numeric(
    "version: \"1.0\"",
    "version: \"2026.x\"",
    "",
    2,
    "version",
    "not dotted numbers"
)]
#[case::unknown_timezone(
    "Asia/Kolkata",
    "Asia/Bombay_Typo",
    "",
    3,
    "timezone",
    "unknown time zone `Asia/Bombay_Typo`"
)]
#[case::valid_until_before_valid_from(
    "valid_until: 2026-12-31",
    "valid_until: 2025-12-31",
    "",
    5,
    "valid_until",
    "before valid_from"
)]
#[case::time_not_hh_mm(
    "open: \"09:15\"",
    "open: \"9:15\"",
    "",
    7,
    "segments.equity.open",
    "not HH:MM"
)]
#[case::time_past_24_00(
    "close: \"23:55\"",
    "close: \"24:30\"",
    "",
    11,
    "segments.commodity.close",
    "out of range"
)]
#[case::open_equal_close(
    "close: \"15:30\"",
    "close: \"09:15\"",
    "",
    7,
    "segments.equity.close",
    "not after open"
)]
#[case::open_after_close(
    "open: \"09:00\"",
    "open: \"23:56\"",
    "",
    11,
    "segments.commodity.close",
    "not after open"
)]
#[case::bad_weekday_name(
    "[mon, tue, wed, thu, fri]",
    "[mon, tue, wed, thur, fri]",
    "",
    7,
    "segments.equity.days[3]",
    "`thur` is not a weekday"
)]
#[case::no_segments(
    "segments:\n  equity: {days: [mon, tue, wed, thu, fri], open: \"09:15\", close: \"15:30\"}\n  commodity:\n    days: [mon, tue, wed, thu, fri]\n    open: \"09:00\"\n    close: \"23:55\"\n",
    "segments: {}\n",
    "",
    6,
    "segments",
    "no segments"
)]
#[case::holiday_closes_unknown_segment(
    "",
    "",
    "holidays:\n  - {date: 2026-03-03, name: Holi, closed: [equity, fx]}\n",
    13,
    "holidays[0].closed[1]",
    "unknown segment `fx`"
)]
#[case::holiday_sessions_for_unknown_segment(
    "",
    "",
    "holidays:\n  - date: 2026-03-03\n    name: Holi\n    closed: [equity]\n    sessions: {mcx: [{open: \"17:00\", close: \"23:55\"}]}\n",
    16,
    "holidays[0].sessions.mcx",
    "unknown segment `mcx`"
)]
#[case::special_session_for_unknown_segment(
    "",
    "",
    "special_sessions:\n  - date: 2026-02-01\n    name: Budget\n    sessions:\n      equity: [{open: \"08:45\", close: \"16:15\"}]\n      fx: [{open: \"09:00\", close: \"17:00\"}]\n",
    17,
    "special_sessions[0].sessions.fx",
    "unknown segment `fx`"
)]
#[case::holiday_closed_neither_all_nor_list(
    "",
    "",
    "holidays:\n  - {date: 2026-03-03, name: Holi, closed: some}\n",
    13,
    "holidays[0].closed",
    "`some` is neither `all` nor a list"
)]
#[case::holiday_session_times_malformed(
    "",
    "",
    "holidays:\n  - date: 2026-03-03\n    name: Holi\n    closed: [equity]\n    sessions: {commodity: [{open: \"17:00\", close: \"23:5\"}]}\n",
    16,
    "holidays[0].sessions.commodity[0].close",
    "not HH:MM"
)]
#[case::duplicate_holiday_date(
    "",
    "",
    "holidays:\n  - {date: 2026-03-03, name: Holi, closed: all}\n  - {date: 2026-03-03, name: Holi again, closed: [equity]}\n",
    14,
    "holidays[1].date",
    "listed twice in holidays"
)]
#[case::duplicate_special_session_date(
    "",
    "",
    "special_sessions:\n  - {date: 2026-02-01, name: A, sessions: {equity: [{open: \"09:00\", close: \"10:00\"}]}}\n  - {date: 2026-02-01, name: B, sessions: {equity: [{open: \"11:00\", close: \"12:00\"}]}}\n",
    14,
    "special_sessions[1].date",
    "listed twice in special_sessions"
)]
#[case::holiday_outside_coverage(
    "",
    "",
    "holidays:\n  - {date: 2027-01-01, name: New Year, closed: all}\n",
    13,
    "holidays[0].date",
    "outside the calendar's coverage"
)]
#[case::special_session_outside_coverage(
    "",
    "",
    "special_sessions:\n  - {date: 2025-12-31, name: A, sessions: {equity: [{open: \"09:00\", close: \"10:00\"}]}}\n",
    13,
    "special_sessions[0].date",
    "outside the calendar's coverage"
)]
#[case::blackout_outside_coverage(
    "",
    "",
    "blackouts:\n  - {date: 2027-01-01, from: \"00:00\", to: \"24:00\", name: x}\n",
    13,
    "blackouts[0].date",
    "outside the calendar's coverage"
)]
#[case::season_start_outside_coverage(
    "",
    "",
    "    seasons:\n      - {from: 2025-11-01, to: 2026-01-31, close: \"23:30\"}\n",
    13,
    "segments.commodity.seasons[0].from",
    "outside the calendar's coverage"
)]
#[case::season_end_outside_coverage(
    "",
    "",
    "    seasons:\n      - {from: 2026-11-01, to: 2027-01-31, close: \"23:30\"}\n",
    13,
    "segments.commodity.seasons[0].to",
    "outside the calendar's coverage"
)]
#[case::overlapping_seasons(
    "",
    "",
    "    seasons:\n      - {from: 2026-03-09, to: 2026-10-30, close: \"23:30\"}\n      - {from: 2026-10-30, to: 2026-11-30, open: \"10:00\"}\n",
    12,
    "segments.commodity.seasons",
    "overlap"
)]
#[case::season_changing_nothing(
    "",
    "",
    "    seasons:\n      - {from: 2026-03-09, to: 2026-10-30}\n",
    13,
    "segments.commodity.seasons[0]",
    "changes nothing"
)]
#[case::season_open_after_base_close(
    "",
    "",
    "    seasons:\n      - {from: 2026-03-09, to: 2026-10-30, open: \"23:55\"}\n",
    13,
    "segments.commodity.seasons[0].close",
    "not after open"
)]
#[case::blackout_from_equals_to(
    "",
    "",
    "blackouts:\n  - {date: 2026-11-08, from: \"10:00\", to: \"10:00\", name: x}\n",
    13,
    "blackouts[0].to",
    "not after from"
)]
#[case::provisional_from_outside_coverage(
    "",
    "",
    "provisional_from: 2027-01-01\n",
    12,
    "provisional_from",
    "outside the calendar's coverage"
)]
#[case::provisional_from_not_a_date(
    "",
    "",
    "provisional_from: next year\n",
    12,
    "provisional_from",
    "not a date"
)]
#[case::provisional_note_without_provisional_from(
    "",
    "",
    "provisional_note: 2027 is not final\n",
    12,
    "provisional_note",
    "no provisional_from"
)]
#[case::blackout_from_after_to(
    "",
    "",
    "blackouts:\n  - {date: 2026-11-08, from: \"24:00\", to: \"23:00\", name: x}\n",
    13,
    "blackouts[0].to",
    "not after from"
)]
fn validation_error_is_placed(
    #[case] old: &str,
    #[case] new: &str,
    #[case] extra: &str,
    #[case] line: usize,
    #[case] path: &str,
    #[case] message: &str,
) {
    let text = edited(old, new, extra);
    let errs = parse("cal.yaml", &text).expect_err("the calendar should be refused");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(e.file, "cal.yaml");
    assert_eq!(e.path, path, "{e}");
    assert_eq!(e.line, Some(line), "{e}");
    assert!(e.message.contains(message), "{e}");
    assert!(!e.fix.is_empty(), "every error says how to fix it: {e}");
}

/// Serde stops at the first structural error (unknown key, missing key,
/// wrong type), so these are reported alone with serde's own position.
#[rstest]
#[case::unknown_top_level_key(
    "valid_until: 2026-12-31",
    "valid_until: 2026-12-31\nvalid_to: 2026-12-31",
    "",
    6,
    "valid_to",
    "unknown field `valid_to`"
)]
#[case::unknown_key_in_holiday(
    "",
    "",
    "holidays:\n  - date: 2026-03-03\n    name: Holi\n    closed: all\n    reason: festival\n",
    16,
    "holidays[0].reason",
    "unknown field `reason`"
)]
#[case::holiday_without_closed(
    "",
    "",
    "holidays:\n  - date: 2026-03-03\n    name: Holi\n",
    13,
    "holidays[0]",
    "missing field `closed`"
)]
#[case::holiday_closed_not_a_word_or_list(
    "",
    "",
    "holidays:\n  - date: 2026-03-03\n    name: Holi\n    closed: {equity: true}\n",
    15,
    "holidays[0].closed",
    "`all` or a list of segment names"
)]
#[case::bad_confidence(
    "",
    "",
    "blackouts:\n  - {date: 2026-11-08, from: \"00:00\", to: \"24:00\", name: x, confidence: sure}\n",
    13,
    "blackouts[0].confidence",
    "unknown variant `sure`"
)]
fn structural_error_is_placed(
    #[case] old: &str,
    #[case] new: &str,
    #[case] extra: &str,
    #[case] line: usize,
    #[case] path: &str,
    #[case] message: &str,
) {
    let text = edited(old, new, extra);
    let errs = parse("cal.yaml", &text).expect_err("the calendar should be refused");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(e.path, path, "{e}");
    assert_eq!(e.line, Some(line), "{e}");
    assert!(e.message.contains(message), "{e}");
}

#[test]
fn several_errors_are_reported_at_once_in_file_order() {
    let text = edited(
        "version: \"1.0\"",
        "version: \"1..2\"",
        concat!(
            "holidays:\n",                                                       // 12
            "  - {date: 2026-03-03, name: Holi, closed: [fx]}\n",                // 13
            "  - {date: 2027-03-03, name: Later, closed: all}\n",                // 14
            "blackouts:\n",                                                      // 15
            "  - {date: 2026-11-08, from: \"10:00\", to: \"09:00\", name: x}\n", // 16
        ),
    );
    let errs = parse("cal.yaml", &text).expect_err("the calendar should be refused");
    let got: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(2), "version"),
            (Some(13), "holidays[0].closed[0]"),
            (Some(14), "holidays[1].date"),
            (Some(16), "blackouts[0].to"),
        ],
        "{errs:#?}"
    );
}

/// Regression: a holiday whose `closed` was neither `all` nor a list
/// stopped its own checks, hiding its sessions' errors and a later duplicate
/// of its date until the first error was fixed.
#[test]
fn bad_closed_word_does_not_hide_the_entrys_other_errors() {
    let text = edited(
        "",
        "",
        concat!(
            "holidays:\n",                                                 // 12
            "  - date: 2026-03-03\n",                                      // 13
            "    name: Holi\n",                                            // 14
            "    closed: some\n",                                          // 15
            "    sessions: {fx: [{open: \"17:00\", close: \"23:55\"}]}\n", // 16
            "  - {date: 2026-03-03, name: Holi again, closed: all}\n",     // 17
        ),
    );
    let errs = parse("cal.yaml", &text).unwrap_err();
    let got: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(15), "holidays[0].closed"),
            (Some(16), "holidays[0].sessions.fx"),
            (Some(17), "holidays[1].date"),
        ],
        "{errs:#?}"
    );
}

/// Regression: an entry with an unparseable date skipped the checks of its
/// sessions; a segment with invalid hours skipped the checks of its seasons.
#[test]
fn bad_date_or_segment_hours_do_not_hide_nested_errors() {
    let text = edited(
        "close: \"23:55\"",
        "close: \"23:60\"",
        concat!(
            "    seasons:\n",                                                // 12
            "      - {from: 2026-10-30, to: 2026-03-09, close: \"23:3\"}\n", // 13
            "holidays:\n",                                                   // 14
            "  - date: 2026-02-30\n",                                        // 15
            "    name: No such day\n",                                       // 16
            "    closed: [fx]\n",                                            // 17
            "special_sessions:\n",                                           // 18
            "  - {date: 26-02-01, name: B, sessions: {fx: [{open: \"09:00\", close: \"10:00\"}]}}\n", // 19
        ),
    );
    let errs = parse("cal.yaml", &text).unwrap_err();
    let got: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some(11), "segments.commodity.close"),
            (Some(13), "segments.commodity.seasons[0].close"),
            (Some(13), "segments.commodity.seasons[0].to"),
            (Some(15), "holidays[0].date"),
            (Some(17), "holidays[0].closed[0]"),
            (Some(19), "special_sessions[0].date"),
            (Some(19), "special_sessions[0].sessions.fx"),
        ],
        "{errs:#?}"
    );
}

#[test]
fn diagnostic_names_file_line_and_path() {
    let text = edited("Asia/Kolkata", "Mars/Olympus", "");
    let errs = parse("rollouts/calendars/t.yaml", &text).unwrap_err();
    let shown = errs[0].to_string();
    assert!(
        shown.starts_with(
            "rollouts/calendars/t.yaml:3:11: timezone: unknown time zone `Mars/Olympus`"
        ),
        "{shown}"
    );
}

#[rstest]
#[case::month_two_digits_vs_one("2026.11.1", "2026.9.30")]
#[case::longer_is_later("2026.11.1", "2026.11")]
#[case::numeric_not_textual("10", "9")]
#[case::patch("2026.11.2", "2026.11.1")]
fn versions_compare_part_by_part_as_integers(#[case] later: &str, #[case] earlier: &str) {
    let later = parse_version(later).unwrap();
    let earlier = parse_version(earlier).unwrap();
    assert!(later > earlier, "{later} > {earlier}");
    assert!(earlier < later);
}

#[test]
fn version_parts_and_display() {
    let v = parse_version("2026.11.1").unwrap();
    assert_eq!(v, Version(vec![2026, 11, 1]));
    assert_eq!(v.to_string(), "2026.11.1");
}

#[rstest]
#[case::letter("2026.x")]
#[case::empty("")]
#[case::empty_part("1..2")]
#[case::leading_dot(".1")]
#[case::trailing_dot("1.")]
#[case::sign("+1")]
#[case::space("1. 2")]
#[case::overflow("99999999999999999999")]
fn malformed_versions_are_rejected(#[case] s: &str) {
    assert!(parse_version(s).is_err(), "`{s}` should be rejected");
}

#[test]
fn provisional_from_marks_dates_from_local_midnight() {
    let cal = load(&edited(
        "",
        "",
        "provisional_from: 2026-07-01\nprovisional_note: \"  H2 not notified \"\n",
    ));
    assert_eq!(cal.provisional_from, Some(d("2026-07-01")));
    assert_eq!(cal.provisional_note.as_deref(), Some("H2 not notified"));
    assert_eq!(
        cal.provisional_start(),
        Some(utc("2026-06-30T18:30:00Z")),
        "00:00 IST"
    );
    assert!(!cal.is_provisional(d("2026-06-30")));
    assert!(cal.is_provisional(d("2026-07-01")));
    let plain = load(&edited("", "", ""));
    assert_eq!(plain.provisional_start(), None);
    assert!(!plain.is_provisional(d("2026-12-31")));
}
