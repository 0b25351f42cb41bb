//! `muhurat calendar check`: the warnings a valid calendar can still earn.
//!
//! Errors are the loader's (the same diagnostics `validate` prints); these
//! are the smells a reviewer of a calendar change should look at: coverage
//! about to end (after it nothing moves), a weekday where nothing trades and
//! no holiday says why (a missing session opens time), a holiday on a
//! weekend (usually a wrong date), and a special session that only repeats
//! a regular day's hours (usually a wrong date or hours). `today` comes from
//! the caller: this module does not read the clock.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, TimeDelta, Weekday};

use super::Calendar;
use crate::diag::Problem;

/// Warn when less coverage than this remains (as the server does).
pub const COVERAGE_WARNING_DAYS: i64 = 45;

/// At most this many "weekday with no session" warnings are listed one by
/// one; the rest are counted in one more.
const MAX_EMPTY_WEEKDAYS: usize = 10;

/// Raw entry positions, so a warning names the line of the entry.
pub(super) struct Index {
    pub holidays: BTreeMap<NaiveDate, usize>,
    pub special_sessions: BTreeMap<NaiveDate, usize>,
}

pub(super) fn warnings(cal: &Calendar, today: NaiveDate, index: &Index) -> Vec<Problem> {
    let mut out = Vec::new();

    let left = (cal.valid_until - today).num_days() + 1;
    if left <= 0 {
        out.push(Problem::warning(
            "valid_until",
            format!(
                "coverage ended on {}: every instant after it is blocked (fail closed)",
                cal.valid_until
            ),
            "add the next period's data, move valid_until, raise version and reload the server",
        ));
    } else if left < COVERAGE_WARNING_DAYS {
        out.push(Problem::warning(
            "valid_until",
            format!(
                "coverage ends on {}, in {left} day(s): after that every instant is blocked (fail closed)",
                cal.valid_until
            ),
            "add the next period's data (provisional if need be: see provisional_from), raise version and reload the server",
        ));
    }

    let mut empty = Vec::new();
    let mut d = cal.valid_from;
    while d <= cal.valid_until {
        let weekday = !matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
        if weekday
            && !cal.holidays.contains_key(&d)
            && cal.segments.iter().all(|s| cal.hours_on(s, d).0.is_empty())
        {
            empty.push(d);
        }
        d += TimeDelta::days(1);
    }
    for d in empty.iter().take(MAX_EMPTY_WEEKDAYS) {
        out.push(Problem::warning(
            "segments",
            format!(
                "{} {d} is a weekday with no session in any segment and no holiday",
                d.weekday()
            ),
            "add the holiday that closes it (with source and confidence), or add the weekday to the segments' days",
        ));
    }
    if empty.len() > MAX_EMPTY_WEEKDAYS {
        out.push(Problem::warning(
            "segments",
            format!(
                "{} more weekday(s) with no session and no holiday",
                empty.len() - MAX_EMPTY_WEEKDAYS
            ),
            "see the ones listed above",
        ));
    }

    for (date, h) in &cal.holidays {
        if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
            let i = index.holidays.get(date).copied().unwrap_or_default();
            out.push(Problem::warning(
                format!("holidays[{i}].date"),
                format!(
                    "holiday {} on {} {date} falls on a weekend",
                    h.name,
                    date.weekday()
                ),
                "check the date; a weekend holiday needs no entry when nothing trades that day",
            ));
        }
    }

    for (date, sp) in &cal.special_sessions {
        let i = index
            .special_sessions
            .get(date)
            .copied()
            .unwrap_or_default();
        for (segment, hours) in &sp.sessions {
            let Some(seg) = cal.segment(segment) else {
                continue;
            };
            if cal.holidays.contains_key(date) {
                continue; // replaces a holiday's closure: not a regular day
            }
            // What the day would be without the special session: rule 4.
            if !seg.days[date.weekday().num_days_from_monday() as usize] {
                continue;
            }
            let regular = seg
                .seasons
                .iter()
                .find(|s| s.from <= *date && *date <= s.to)
                .map_or(seg.hours, |s| s.hours);
            if hours.as_slice() == [regular] {
                out.push(Problem::warning(
                    format!("special_sessions[{i}].sessions.{segment}"),
                    format!(
                        "special session {} gives {segment} its regular hours {}-{} on a regular trading day ({} {date}): it changes nothing",
                        sp.name,
                        regular.open,
                        regular.close,
                        date.weekday()
                    ),
                    "check the date and the notified hours, or remove the entry",
                ));
            }
        }
    }
    out
}
