//! The shipped calendar `rollouts/calendars/nse.yaml` against the research
//! data it was derived from (`tests/fixtures/indian-market-sessions.yaml`, a
//! verbatim copy of `shared/reference/indian-market-sessions.yaml`).
//!
//! The reference is not in the calendar's format: it lists holidays with a
//! commodity morning/evening split, special sessions one row per (date,
//! segment) with trading `start`/`end` plus wider activity windows, and the
//! MCX close as dated periods. `expected_*` below spell out how that shape
//! maps to "which segments trade on which date"; the tests then compare the
//! calendar, as loaded by `muhurat::calendar::parse`, day by day.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc, Weekday};
use muhurat::calendar::{self, Calendar, Confidence, Rule};
use serde::Deserialize;

const CALENDAR: &str = include_str!("../rollouts/calendars/nse.yaml");
const REFERENCE: &str = include_str!("fixtures/indian-market-sessions.yaml");
const SEGMENTS: [&str; 4] = ["equity", "fno", "currency", "commodity"];

// ---------------------------------------------------------------------------
// The reference file, as far as these tests read it (unknown keys ignored).

#[derive(Deserialize)]
struct Reference {
    timezone: String,
    regular_sessions: RefRegular,
    holidays: RefHolidays,
    special_sessions: Vec<RefSpecial>,
}

#[derive(Deserialize)]
struct RefRegular {
    equity: RefVersioned,
    fno: RefVersioned,
    currency: RefVersioned,
    commodity: RefCommodity,
}

#[derive(Deserialize)]
struct RefVersioned {
    versions: Vec<RefVersion>,
}

#[derive(Deserialize)]
struct RefVersion {
    activity_window: Option<Span>,
    #[serde(default)]
    phases: Vec<Span>,
}

#[derive(Deserialize)]
struct RefCommodity {
    close_rule: RefCloseRule,
}

#[derive(Deserialize)]
struct RefCloseRule {
    periods: Vec<RefClosePeriod>,
}

#[derive(Deserialize)]
struct RefClosePeriod {
    from: NaiveDate,
    to: NaiveDate,
    close: String,
}

#[derive(Deserialize)]
struct RefHolidays {
    #[serde(rename = "2025")]
    y2025: Vec<RefHoliday>,
    #[serde(rename = "2026")]
    y2026: Vec<RefHoliday>,
}

#[derive(Deserialize)]
struct RefHoliday {
    date: NaiveDate,
    weekday: String,
    /// Segments closed for the whole day.
    closed: Vec<String>,
    /// Present when commodity is not simply open or closed all day.
    commodity: Option<RefCommoditySplit>,
}

#[derive(Deserialize)]
struct RefCommoditySplit {
    morning: OpenClosed,
    evening: OpenClosed,
    evening_close: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OpenClosed {
    Open,
    Closed,
}

#[derive(Deserialize, Clone)]
struct RefSpecial {
    date: NaiveDate,
    /// A segment name, or `all`.
    segment: String,
    /// Trading hours; null when the segment did not trade or the hours are
    /// not known.
    start: Option<String>,
    end: Option<String>,
    activity_window: Option<Span>,
    #[serde(default)]
    phases: Vec<Span>,
    /// For a day whose hours are unknown: the time to block.
    conservative_block: Option<Span>,
}

#[derive(Deserialize, Clone)]
struct Span {
    start: String,
    end: String,
}

fn reference() -> Reference {
    serde_yaml_ng::from_str(REFERENCE).expect("the reference fixture parses")
}

fn nse() -> Calendar {
    match calendar::parse("rollouts/calendars/nse.yaml", CALENDAR) {
        Ok(c) => c,
        Err(diags) => panic!(
            "nse.yaml is invalid:\n{}",
            diags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn ist(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn minutes(hhmm: &str) -> u16 {
    let (h, m) = hhmm.split_once(':').expect("HH:MM");
    h.parse::<u16>().unwrap() * 60 + m.parse::<u16>().unwrap()
}

fn is_weekday(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

fn dates(first: NaiveDate, last: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    first.iter_days().take_while(move |d| *d <= last)
}

fn hours_on(cal: &Calendar, segment: &str, d: NaiveDate) -> Vec<(String, String)> {
    let seg = cal.segment(segment).unwrap();
    cal.hours_on(seg, d)
        .0
        .iter()
        .map(|h| (h.open.to_string(), h.close.to_string()))
        .collect()
}

fn pair(open: &str, close: &str) -> (String, String) {
    (open.to_string(), close.to_string())
}

// ---------------------------------------------------------------------------
// How the reference maps to sessions.

/// The reference, indexed by date.
struct Expected {
    holidays: BTreeMap<NaiveDate, RefHoliday>,
    /// (date, segment) → its special-session row; `segment: all` rows are
    /// expanded to every segment.
    special: BTreeMap<(NaiveDate, String), RefSpecial>,
    close_periods: Vec<RefClosePeriod>,
}

impl Expected {
    fn new(r: Reference) -> Expected {
        let mut holidays = BTreeMap::new();
        for h in r.holidays.y2025.into_iter().chain(r.holidays.y2026) {
            let d = h.date;
            assert!(holidays.insert(d, h).is_none(), "reference lists {d} twice");
        }
        let mut special = BTreeMap::new();
        for s in r.special_sessions {
            let segments: Vec<String> = if s.segment == "all" {
                SEGMENTS.iter().map(|s| s.to_string()).collect()
            } else {
                vec![s.segment.clone()]
            };
            for seg in segments {
                let key = (s.date, seg);
                assert!(!special.contains_key(&key), "reference lists {key:?} twice");
                special.insert(key, s.clone());
            }
        }
        Expected {
            holidays,
            special,
            close_periods: r.regular_sessions.commodity.close_rule.periods,
        }
    }

    /// Does the reference say `segment` trades at all on `d`? The same order
    /// as the calendar's rules:
    /// 1. a special-session row for the date and segment decides: it trades
    ///    when the row has hours (`start: null` means it did not trade, or
    ///    that the hours are unknown and the day is a blackout instead);
    /// 2. on a holiday, commodity with a morning/evening split trades when
    ///    either half is open; a segment in `closed` does not trade;
    /// 3. otherwise every segment trades Monday to Friday.
    fn trades(&self, d: NaiveDate, segment: &str) -> bool {
        if let Some(s) = self.special.get(&(d, segment.to_string())) {
            return s.start.is_some();
        }
        if let Some(h) = self.holidays.get(&d) {
            if segment == "commodity"
                && let Some(split) = &h.commodity
            {
                return split.morning == OpenClosed::Open || split.evening == OpenClosed::Open;
            }
            if h.closed.iter().any(|s| s == segment) {
                return false;
            }
        }
        is_weekday(d)
    }

    /// The MCX non-agri close on `d`: 23:30 while the US is on daylight time,
    /// 23:55 otherwise, as dated periods.
    fn commodity_close(&self, d: NaiveDate) -> &str {
        self.close_periods
            .iter()
            .find(|p| p.from <= d && d <= p.to)
            .map(|p| p.close.as_str())
            .unwrap_or_else(|| panic!("reference has no commodity close period for {d}"))
    }

    /// Commodity hours on a weekday without a special session: the morning
    /// half is 09:00–17:00, the evening half 17:00–close; both halves open
    /// are one session 09:00–close.
    fn commodity_hours(&self, d: NaiveDate) -> Vec<(String, String)> {
        let close = self.commodity_close(d);
        let Some(h) = self.holidays.get(&d) else {
            return vec![pair("09:00", close)];
        };
        match &h.commodity {
            None if h.closed.iter().any(|s| s == "commodity") => vec![],
            None => vec![pair("09:00", close)],
            Some(split) => {
                if let Some(evening_close) = &split.evening_close {
                    assert_eq!(
                        evening_close, close,
                        "reference: {d} evening close disagrees with the close periods"
                    );
                }
                match (split.morning, split.evening) {
                    (OpenClosed::Open, OpenClosed::Open) => vec![pair("09:00", close)],
                    (OpenClosed::Open, OpenClosed::Closed) => vec![pair("09:00", "17:00")],
                    (OpenClosed::Closed, OpenClosed::Open) => vec![pair("17:00", close)],
                    (OpenClosed::Closed, OpenClosed::Closed) => vec![],
                }
            }
        }
    }
}

fn coverage_dates() -> impl Iterator<Item = NaiveDate> {
    dates(date("2025-01-01"), date("2026-12-31"))
}

// ---------------------------------------------------------------------------
// Day-by-day comparison.

#[test]
fn calendar_covers_the_compared_range_in_ist() {
    let cal = nse();
    let r = reference();
    assert_eq!(cal.name, "nse");
    assert_eq!(cal.valid_from, date("2025-01-01"));
    // The reference covers 2025-2026; 2027 is provisional (checked below).
    assert_eq!(cal.valid_until, date("2027-12-31"));
    assert_eq!(cal.provisional_from, Some(date("2027-01-01")));
    assert!(
        cal.provisional_note
            .as_deref()
            .is_some_and(|n| n.contains("2027"))
    );
    assert_eq!(cal.timezone.name(), r.timezone);
    assert_eq!(cal.segment_names(), SEGMENTS);
}

#[test]
fn every_date_and_segment_trades_exactly_when_the_reference_says() {
    let cal = nse();
    let expected = Expected::new(reference());
    let mut mismatches = Vec::new();
    let mut trading = 0;
    for d in coverage_dates() {
        for segment in SEGMENTS {
            let got = hours_on(&cal, segment, d);
            let has_session = !got.is_empty();
            let want = expected.trades(d, segment);
            trading += usize::from(want);
            if has_session != want {
                mismatches.push(format!(
                    "{d} ({}) {segment}: calendar {got:?}, reference {}",
                    d.weekday(),
                    if want { "trades" } else { "no session" }
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // Roughly 250 trading days a year per segment: the comparison saw both
    // outcomes in bulk, so neither side was trivially empty.
    assert!((1900..2100).contains(&trading), "{trading}");
}

#[test]
fn weekday_holidays_are_the_reference_holidays() {
    let cal = nse();
    let expected = Expected::new(reference());
    for (d, h) in &expected.holidays {
        let weekday = d.weekday().to_string().to_uppercase();
        assert_eq!(h.weekday, weekday, "reference weekday of {d}");
    }
    // The reference's years only; 2027 has its own tests below.
    let in_calendar: BTreeSet<NaiveDate> = cal
        .holidays
        .keys()
        .copied()
        .filter(|d| d.year() <= 2026)
        .collect();
    let in_reference: BTreeSet<NaiveDate> = expected.holidays.keys().copied().collect();
    assert_eq!(in_calendar, in_reference);
    assert_eq!(in_reference.iter().filter(|d| d.year() == 2025).count(), 19);
    assert_eq!(in_reference.iter().filter(|d| d.year() == 2026).count(), 21);
}

#[test]
fn commodity_hours_follow_the_split_and_the_close_periods() {
    let cal = nse();
    let expected = Expected::new(reference());
    let mut mismatches = Vec::new();
    for d in coverage_dates().filter(|d| is_weekday(*d)) {
        if expected.special.contains_key(&(d, "commodity".to_string())) {
            continue; // checked against the special-session rows
        }
        let got = hours_on(&cal, "commodity", d);
        let want = expected.commodity_hours(d);
        if got != want {
            mismatches.push(format!("{d}: calendar {got:?}, reference {want:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn regular_hours_are_the_widest_reference_window() {
    let cal = nse();
    let r = reference();
    let widest = |versions: &[RefVersion], use_phases: bool| -> (String, String) {
        let spans: Vec<&Span> = versions
            .iter()
            .flat_map(|v| {
                if use_phases {
                    v.phases.iter().collect::<Vec<_>>()
                } else {
                    v.activity_window.iter().collect()
                }
            })
            .collect();
        assert!(!spans.is_empty());
        let open = spans.iter().map(|s| s.start.clone()).min().unwrap();
        let close = spans.iter().map(|s| s.end.clone()).max().unwrap();
        (open, close)
    };
    let regular = |segment: &str| {
        let s = cal.segment(segment).unwrap();
        (s.hours.open.to_string(), s.hours.close.to_string())
    };
    // Equity and F&O: first order activity .. trade-modification cut-off,
    // widest over the dated versions (the F&O pre-open only from 2025-12-08).
    assert_eq!(
        regular("equity"),
        widest(&r.regular_sessions.equity.versions, false)
    );
    assert_eq!(
        regular("fno"),
        widest(&r.regular_sessions.fno.versions, false)
    );
    // Currency has no activity window; its phases go to 19:30 for
    // cross-currency pairs.
    assert_eq!(
        regular("currency"),
        widest(&r.regular_sessions.currency.versions, true)
    );
    assert_eq!(regular("currency"), pair("09:00", "19:30"));
}

#[test]
fn special_sessions_cover_the_reference_hours_and_phases() {
    let cal = nse();
    let expected = Expected::new(reference());
    let mut checked = 0;
    for ((d, segment), row) in &expected.special {
        if *d < cal.valid_from || *d > cal.valid_until {
            continue; // 2024 history
        }
        let (Some(start), Some(end)) = (&row.start, &row.end) else {
            continue; // did not trade, or hours unknown (see the blackout test)
        };
        // Everything the exchange does that day: trading hours, activity
        // window, phases (pre-open, modification cut-off).
        let spans = std::iter::once(Span {
            start: start.clone(),
            end: end.clone(),
        })
        .chain(row.activity_window.clone())
        .chain(row.phases.iter().cloned());
        let lo = spans.clone().map(|s| minutes(&s.start)).min().unwrap();
        let hi = spans.map(|s| minutes(&s.end)).max().unwrap();

        let seg = cal.segment(segment).unwrap();
        let (hours, rule) = cal.hours_on(seg, *d);
        assert!(
            matches!(rule, Rule::Special(_)),
            "{d} {segment} ({}): decided by {rule:?}",
            row.segment
        );
        assert!(
            hours.iter().any(|h| h.open.0 <= lo && hi <= h.close.0),
            "{d} {segment}: calendar {hours:?} does not cover {lo}..{hi} minutes"
        );
        checked += 1;
    }
    // 2025-02-01 ×3, 2025-10-21 ×4, 2026-02-01 ×3.
    assert_eq!(checked, 10);
}

#[test]
fn days_with_unknown_hours_are_blacked_out_at_least_as_long_as_the_reference_block() {
    let cal = nse();
    let expected = Expected::new(reference());
    let mut checked = 0;
    for ((d, segment), row) in &expected.special {
        let Some(block) = &row.conservative_block else {
            continue;
        };
        let blackouts = cal.blackouts_between(*d, *d);
        assert!(
            blackouts.iter().any(|(_, b)| {
                b.hours.open.0 <= minutes(&block.start) && minutes(&block.end) <= b.hours.close.0
            }),
            "{d} {segment}: no blackout covers {}-{}",
            block.start,
            block.end
        );
        checked += 1;
    }
    assert_eq!(checked, SEGMENTS.len(), "one `all` row, 2026-11-08");
}

// ---------------------------------------------------------------------------
// Named facts.

#[test]
fn election_holiday_2026_01_15_closes_equity_but_not_the_commodity_evening() {
    let cal = nse();
    let d = date("2026-01-15");
    for segment in ["equity", "fno", "currency"] {
        let (hours, rule) = cal.hours_on(cal.segment(segment).unwrap(), d);
        assert!(hours.is_empty(), "{segment}");
        assert!(
            matches!(rule, Rule::HolidayClosed(_)),
            "{segment}: {rule:?}"
        );
    }
    let commodity = cal.segment("commodity").unwrap();
    let s = cal.sessions(commodity, d, d);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].interval.start, ist("2026-01-15T17:00:00+05:30"));
    assert_eq!(s[0].interval.end, ist("2026-01-15T23:55:00+05:30"));
}

#[test]
fn budget_sunday_2026_02_01_trades_equity_08_45_to_16_15() {
    let cal = nse();
    let d = date("2026-02-01");
    assert_eq!(d.weekday(), Weekday::Sun);
    let equity = cal.segment("equity").unwrap();
    let s = cal.sessions(equity, d, d);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].interval.start, ist("2026-02-01T08:45:00+05:30"));
    assert_eq!(s[0].interval.end, ist("2026-02-01T16:15:00+05:30"));
    assert!(matches!(s[0].rule, Rule::Special(_)));
    assert!(hours_on(&cal, "currency", d).is_empty());
}

#[test]
fn muhurat_2026_11_08_is_a_whole_day_low_confidence_blackout() {
    let cal = nse();
    let d = date("2026-11-08");
    let b = cal.blackouts_between(d, d);
    assert_eq!(b.len(), 1);
    let (interval, blackout) = b[0];
    assert_eq!(interval.start, ist("2026-11-08T00:00:00+05:30"));
    assert_eq!(interval.end, ist("2026-11-09T00:00:00+05:30"));
    assert_eq!(interval.end - interval.start, TimeDelta::hours(24));
    assert_eq!(blackout.provenance.confidence, Some(Confidence::Low));
    for segment in SEGMENTS {
        assert!(hours_on(&cal, segment, d).is_empty(), "{segment}");
    }
}

#[test]
fn commodity_closes_23_30_in_us_summer_and_23_55_in_winter() {
    let cal = nse();
    let commodity = cal.segment("commodity").unwrap();
    for (d, close) in [
        ("2026-07-15", "2026-07-15T23:30:00+05:30"),
        ("2026-11-20", "2026-11-20T23:55:00+05:30"),
    ] {
        let s = cal.sessions(commodity, date(d), date(d));
        assert_eq!(s.len(), 1, "{d}");
        assert_eq!(s[0].interval.start, ist(&format!("{d}T09:00:00+05:30")));
        assert_eq!(s[0].interval.end, ist(close), "{d}");
    }
}

#[test]
fn muhurat_2025_10_21_has_only_its_special_sessions() {
    let cal = nse();
    let d = date("2025-10-21");
    for (segment, open, close) in [
        ("equity", "13:15", "15:15"),
        ("fno", "13:15", "15:15"),
        ("currency", "13:45", "14:45"),
        ("commodity", "13:30", "15:00"),
    ] {
        let seg = cal.segment(segment).unwrap();
        let s = cal.sessions(seg, d, d);
        assert_eq!(s.len(), 1, "{segment}: no regular or evening session");
        assert!(matches!(s[0].rule, Rule::Special(_)), "{segment}");
        assert_eq!(
            s[0].interval.start,
            ist(&format!("2025-10-21T{open}:00+05:30"))
        );
        assert_eq!(
            s[0].interval.end,
            ist(&format!("2025-10-21T{close}:00+05:30"))
        );
    }
    // The regular sessions are closed by the holiday underneath.
    assert!(cal.holidays.contains_key(&d));
}

/// The loader keeps `source` and `confidence` optional; the shipped calendar
/// must still give both for every entry, so they are checked in the text.
#[test]
fn every_entry_carries_source_and_confidence() {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(CALENDAR).unwrap();
    let mut checked = 0;
    for list in ["holidays", "special_sessions", "blackouts"] {
        let entries = doc[list].as_sequence().unwrap_or_else(|| panic!("{list}"));
        assert!(!entries.is_empty(), "{list}");
        for e in entries {
            let what = format!("{list} {:?}", e["date"]);
            let source = e["source"].as_str().unwrap_or_default();
            assert!(!source.trim().is_empty(), "{what}: no source");
            let confidence = e["confidence"].as_str().unwrap_or_default();
            assert!(
                ["high", "medium", "low"].contains(&confidence),
                "{what}: confidence {confidence:?}"
            );
            checked += 1;
        }
    }
    let cal = nse();
    assert_eq!(
        checked,
        cal.holidays.len() + cal.special_sessions.len() + cal.blackouts.len()
    );
}

#[test]
fn version_is_dotted_numeric() {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(CALENDAR).unwrap();
    // Quoted in the file: an unquoted 2026.10 would be read as a float.
    let text = doc["version"].as_str().expect("version is a string");
    assert!(
        text.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "{text}"
    );
    let cal = nse();
    assert_eq!(cal.version.to_string(), text);
    assert_eq!(Ok(cal.version), calendar::parse_version(text));
}

// ---------------------------------------------------------------------------
// 2027: provisional, fail-safe (issue 10). The reference has no 2027
// holidays, so these tests state the rules the data must follow instead.

fn dates_2027() -> impl Iterator<Item = NaiveDate> {
    dates(date("2027-01-01"), date("2027-12-31"))
}

/// The only 2027 holidays are the fixed-date ones that closed every segment
/// in 2025 and 2026 and fall on a weekday: a holiday opens time, so nothing
/// unconfirmed may be encoded.
#[test]
fn holidays_2027_are_only_republic_day_and_good_friday() {
    let cal = nse();
    let got: Vec<(NaiveDate, &str)> = cal
        .holidays
        .iter()
        .filter(|(d, _)| d.year() == 2027)
        .map(|(d, h)| (*d, h.name.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (date("2027-01-26"), "Republic Day"),
            (date("2027-03-26"), "Good Friday")
        ]
    );
    for d in [date("2027-01-26"), date("2027-03-26")] {
        let h = &cal.holidays[&d];
        assert_eq!(h.closed, calendar::Closed::All, "{d}");
        assert!(h.sessions.is_empty(), "{d}");
        assert!(h.provenance.source.is_some(), "{d}");
        assert!(h.provenance.confidence.is_some(), "{d}");
        assert!(is_weekday(d), "{d}");
    }
    assert!(cal.special_sessions.keys().all(|d| d.year() < 2027));
}

#[test]
fn every_2027_weekday_that_is_not_a_listed_holiday_trades_every_segment() {
    let cal = nse();
    let mut trading_days = 0;
    for d in dates_2027() {
        let holiday = cal.holidays.contains_key(&d);
        for segment in SEGMENTS {
            let got = hours_on(&cal, segment, d);
            if is_weekday(d) && !holiday {
                assert_eq!(got.len(), 1, "{d} {segment}: {got:?}");
            } else {
                assert!(got.is_empty(), "{d} {segment}: {got:?}");
            }
        }
        if is_weekday(d) && !holiday {
            let equity = hours_on(&cal, "equity", d);
            assert_eq!(equity, vec![pair("08:45", "16:15")], "{d}");
            trading_days += 1;
        }
    }
    // 261 weekdays in 2027 less the two holidays.
    assert_eq!(trading_days, 259);
}

/// US daylight time, from the tz database rather than the calendar: is
/// New York on daylight time at noon of `d` (an Indian trading day)?
fn us_dst(d: NaiveDate) -> bool {
    use chrono::{Offset, TimeZone};
    let ny = chrono_tz::America::New_York;
    let noon = ny
        .from_local_datetime(&d.and_hms_opt(12, 0, 0).unwrap())
        .unwrap();
    noon.offset().fix().local_minus_utc() == -4 * 3600
}

#[test]
fn every_mcx_close_in_2027_is_23_30_in_us_dst_and_23_55_outside() {
    let cal = nse();
    let commodity = cal.segment("commodity").unwrap();
    let (mut summer, mut winter) = (0, 0);
    for d in dates_2027() {
        for s in cal.sessions(commodity, d, d) {
            let close = if us_dst(d) { "23:30" } else { "23:55" };
            assert_eq!(
                s.interval.end,
                ist(&format!("{d}T{close}:00+05:30")),
                "{d} ({})",
                d.weekday()
            );
            if us_dst(d) {
                summer += 1;
            } else {
                winter += 1;
            }
        }
    }
    // The switch days themselves, named: the Monday after each US change.
    assert!(us_dst(date("2027-03-15")) && !us_dst(date("2027-03-12")));
    assert!(us_dst(date("2027-11-05")) && !us_dst(date("2027-11-08")));
    assert!(summer > 150 && winter > 80, "{summer} {winter}");
}

#[test]
fn diwali_2027_blackout_covers_each_plausible_muhurat_date_whole() {
    let cal = nse();
    // Laxmi Pujan is expected on Fri 2027-10-29; the exchanges' date can
    // differ by a day or two from almanacs, and the hours are unknown.
    for d in dates(date("2027-10-27"), date("2027-11-02")) {
        let b = cal.blackouts_between(d, d);
        assert!(
            b.iter().any(|(iv, bl)| {
                iv.start == ist(&format!("{d}T00:00:00+05:30"))
                    && iv.end - iv.start == TimeDelta::hours(24)
                    && bl.provenance.confidence == Some(Confidence::Low)
            }),
            "{d}: not blacked out whole"
        );
    }
}

fn windows_json(from: &str, days: &str) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muhurat"))
        .args([
            "windows",
            "rollouts/kite-api.yaml",
            "--from",
            from,
            "--days",
            days,
            "-o",
            "json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("MUHURAT_CALENDARS")
        .output()
        .expect("run muhurat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Acceptance of issue 10: a new user on 2026-12-31 and on 2027-01-04 sees
/// permitted windows in 2027, marked provisional, none inside a weekday
/// session.
#[test]
fn windows_over_2027_are_provisional_and_never_inside_a_weekday_session() {
    let cal = nse();
    let equity = cal.segment("equity").unwrap();
    let commodity = cal.segment("commodity").unwrap();
    for from in ["2026-12-31T00:00:00+05:30", "2027-01-04T00:00:00+05:30"] {
        let v = windows_json(from, "7");
        assert_eq!(v["calendar"]["provisional_from"], "2027-01-01", "{v}");
        assert!(v["note"].is_null(), "inside coverage: {v}");
        let ws = v["windows"].as_array().unwrap();
        let in_2027: Vec<_> = ws
            .iter()
            .filter(|w| w["start"].as_str().unwrap() >= "2027")
            .collect();
        assert!(in_2027.len() >= 3, "{from}: {v}");
        for w in ws {
            let (start, end) = (
                ist(w["start"].as_str().unwrap()),
                ist(w["end"].as_str().unwrap()),
            );
            if end > ist("2027-01-01T00:00:00+05:30") {
                assert_eq!(w["provisional"], true, "{w}");
            }
            let (first, last) = (
                start.with_timezone(&cal.timezone).date_naive(),
                end.with_timezone(&cal.timezone).date_naive(),
            );
            for s in cal
                .sessions(equity, first, last)
                .into_iter()
                .chain(cal.sessions(commodity, first, last))
            {
                assert!(
                    !(s.interval.start < end && start < s.interval.end),
                    "{w} overlaps the {} session of {}",
                    s.segment,
                    s.date
                );
            }
        }
    }
}

/// `muhurat calendar check` has nothing to say about the shipped calendar
/// on the day 2027 was added; with the 2026 coverage it would have warned.
#[test]
fn calendar_check_finds_no_warning_in_nse_yaml() {
    let (cal, warnings) = calendar::check("nse.yaml", CALENDAR, date("2026-12-05")).expect("valid");
    assert!(warnings.is_empty(), "{warnings:#?}");
    assert_eq!(cal.valid_until, date("2027-12-31"));
    // 45 days before the end of 2027 the same file warns.
    let (_, warnings) = calendar::check("nse.yaml", CALENDAR, date("2027-11-20")).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].message.contains("coverage ends on 2027-12-31"));
}
