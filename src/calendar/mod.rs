//! Exchange calendars: which sessions each segment has on each date.
//!
//! A calendar is a versioned data file (docs/design.md §5). For a date D and a segment
//! S the first rule that applies wins: a special session on D listing S; a
//! holiday on D giving sessions for S; a holiday on D closing S; D's weekday
//! in S's days (with the season covering D); otherwise nothing. Coverage is
//! `[valid_from, valid_until]`; callers treat everything outside it as
//! blocked (fail closed), but dates just outside still produce their regular
//! sessions so that guards widen into the coverage correctly.

mod check;
mod days;
mod load;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;

use crate::localtime;
use crate::windows::Interval;

pub use check::COVERAGE_WARNING_DAYS;
pub use days::{CalendarInfo, Coverage, Day, DayBlackout, DayEntry, DaySegment, DaySession};
pub use load::{check, parse, parse_version};

/// Minutes after local midnight, `0..=1440` (1440 is the file's `24:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minute(pub u16);

impl fmt::Display for Minute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// Local opening hours `[open, close)` on one date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    pub open: Minute,
    pub close: Minute,
}

/// A calendar version such as `2026.11.1`, compared part by part as integers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub Vec<u64>);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    High,
    Medium,
    Low,
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Confidence::High => "high",
            Confidence::Medium => "medium",
            Confidence::Low => "low",
        })
    }
}

/// Where an entry comes from, shown to people deciding whether to trust it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    pub source: Option<String>,
    pub confidence: Option<Confidence>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Season {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub hours: Hours,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    /// Indexed by `Weekday::num_days_from_monday()`.
    pub days: [bool; 7],
    pub hours: Hours,
    pub seasons: Vec<Season>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    All,
    Segments(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holiday {
    pub name: String,
    pub closed: Closed,
    /// Replacement hours per segment.
    pub sessions: BTreeMap<String, Vec<Hours>>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialSession {
    pub name: String,
    pub sessions: BTreeMap<String, Vec<Hours>>,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blackout {
    pub date: NaiveDate,
    pub hours: Hours,
    pub name: String,
    pub provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub name: String,
    pub version: Version,
    pub timezone: Tz,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
    /// In file order: a spec without `segments` and a bake without `segment`
    /// default to the first.
    pub segments: Vec<Segment>,
    pub holidays: BTreeMap<NaiveDate, Holiday>,
    pub special_sessions: BTreeMap<NaiveDate, SpecialSession>,
    /// Sorted by date.
    pub blackouts: Vec<Blackout>,
    /// From this date on the data is not final (next year's holidays not yet
    /// notified, say): the tools mark every window that relies on it.
    pub provisional_from: Option<NaiveDate>,
    /// Why the data is provisional, for people.
    pub provisional_note: Option<String>,
}

/// Which rule of docs/design.md §5 decided a date's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule<'a> {
    Special(&'a SpecialSession),
    HolidaySessions(&'a Holiday),
    HolidayClosed(&'a Holiday),
    Regular,
    Season(&'a Season),
    NoSession,
}

/// One session of one segment, as an instant interval. A close at a local
/// time that occurs twice (clocks falling back) is its later occurrence, so a
/// session is never cut short (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session<'a> {
    pub segment: &'a str,
    pub date: NaiveDate,
    pub interval: Interval,
    pub rule: Rule<'a>,
}

impl Calendar {
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    pub fn segment_names(&self) -> Vec<String> {
        self.segments.iter().map(|s| s.name.clone()).collect()
    }

    /// `[valid_from 00:00, valid_until + 1 day 00:00)` in the calendar's zone.
    pub fn coverage(&self) -> Interval {
        Interval::new(
            localtime::at_minutes(self.timezone, self.valid_from, 0),
            localtime::at_minutes(self.timezone, self.valid_until, 1440),
        )
    }

    /// The first instant whose blocking may rest on provisional data:
    /// `provisional_from` 00:00 in the calendar's zone.
    pub fn provisional_start(&self) -> Option<DateTime<Utc>> {
        self.provisional_from
            .map(|d| localtime::at_minutes(self.timezone, d, 0))
    }

    /// Is `date`'s data provisional?
    pub fn is_provisional(&self, date: NaiveDate) -> bool {
        self.provisional_from.is_some_and(|p| date >= p)
    }

    /// The local hours of `segment` on `date`, and the rule that decided them.
    pub fn hours_on<'a>(&'a self, segment: &'a Segment, date: NaiveDate) -> (Vec<Hours>, Rule<'a>) {
        if let Some(sp) = self.special_sessions.get(&date)
            && let Some(h) = sp.sessions.get(&segment.name)
        {
            return (h.clone(), Rule::Special(sp));
        }
        if let Some(hol) = self.holidays.get(&date) {
            if let Some(h) = hol.sessions.get(&segment.name) {
                return (h.clone(), Rule::HolidaySessions(hol));
            }
            let closed = match &hol.closed {
                Closed::All => true,
                Closed::Segments(list) => list.contains(&segment.name),
            };
            if closed {
                return (Vec::new(), Rule::HolidayClosed(hol));
            }
        }
        if segment.days[date.weekday().num_days_from_monday() as usize] {
            if let Some(season) = segment
                .seasons
                .iter()
                .find(|s| s.from <= date && date <= s.to)
            {
                return (vec![season.hours], Rule::Season(season));
            }
            return (vec![segment.hours], Rule::Regular);
        }
        (Vec::new(), Rule::NoSession)
    }

    /// Sessions of `segment` on local dates `first..=last`, in order.
    pub fn sessions<'a>(
        &'a self,
        segment: &'a Segment,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Vec<Session<'a>> {
        let mut out = Vec::new();
        let mut d = first;
        while d <= last {
            let (hours, rule) = self.hours_on(segment, d);
            for h in hours {
                out.push(Session {
                    segment: &segment.name,
                    date: d,
                    interval: Interval::new(
                        localtime::at_minutes(self.timezone, d, h.open.0),
                        localtime::end_at_minutes(self.timezone, d, h.close.0),
                    ),
                    rule,
                });
            }
            d += TimeDelta::days(1);
        }
        out
    }

    /// Blackouts on local dates `first..=last`, as instants.
    pub fn blackouts_between(
        &self,
        first: NaiveDate,
        last: NaiveDate,
    ) -> Vec<(Interval, &Blackout)> {
        let start = self.blackouts.partition_point(|b| b.date < first);
        self.blackouts[start..]
            .iter()
            .take_while(|b| b.date <= last)
            .map(|b| {
                (
                    Interval::new(
                        localtime::at_minutes(self.timezone, b.date, b.hours.open.0),
                        localtime::end_at_minutes(self.timezone, b.date, b.hours.close.0),
                    ),
                    b,
                )
            })
            .collect()
    }

    /// Local date range that covers `[from, to)` plus `margin` either side.
    pub fn dates_around(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        margin: TimeDelta,
    ) -> (NaiveDate, NaiveDate) {
        (
            localtime::date_of(self.timezone, from - margin) - TimeDelta::days(1),
            localtime::date_of(self.timezone, to + margin) + TimeDelta::days(1),
        )
    }
}

/// `mon`…`sun` → chrono weekday.
pub fn weekday_from_name(s: &str) -> Option<Weekday> {
    match s.to_ascii_lowercase().as_str() {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
