//! One calendar day as people and the dashboard see it: each segment's
//! sessions with the rule that decided them, the holiday, the special
//! session and the blackouts with their `source` and `confidence`, and
//! whether the day is covered and final.
//!
//! `muhurat calendar show`, `calendar diff` and `GET
//! /api/v1/calendars/{name}/days` all build on [`Calendar::day`], so the
//! three never disagree about what a day holds. A day outside coverage
//! shows no sessions at all: everything there is blocked (fail closed), and
//! showing the regular sessions the resolver still produces there (for
//! guards) would suggest otherwise.

use chrono::{Datelike, NaiveDate, TimeDelta};
use serde::Serialize;

use super::{Calendar, Closed, Hours, Provenance, Rule};

/// A session's local hours and the rule of docs/design.md §5 that gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaySession {
    pub open: String,
    pub close: String,
    /// `special`, `holiday`, `season` or `regular`.
    pub rule: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaySegment {
    pub segment: String,
    pub sessions: Vec<DaySession>,
    /// Closed by the holiday (rule 3), rather than simply not trading.
    pub closed_by_holiday: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayEntry {
    pub name: String,
    /// Holidays only: `all` or the segments closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<Vec<String>>,
    pub source: Option<String>,
    pub confidence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayBlackout {
    pub from: String,
    pub to: String,
    pub name: String,
    pub source: Option<String>,
    pub confidence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    pub date: NaiveDate,
    /// `Mon` … `Sun`.
    pub weekday: String,
    /// Inside `[valid_from, valid_until]`; outside, every instant is blocked.
    pub covered: bool,
    /// On or after the calendar's `provisional_from`.
    pub provisional: bool,
    pub segments: Vec<DaySegment>,
    pub holiday: Option<DayEntry>,
    pub special_session: Option<DayEntry>,
    pub blackouts: Vec<DayBlackout>,
}

/// A calendar's identity, coverage and provisional status: how `calendar
/// show -o json` and `GET /api/v1/calendars` name a calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalendarInfo {
    pub name: String,
    pub version: String,
    pub timezone: String,
    pub coverage: Coverage,
    pub provisional_from: Option<NaiveDate>,
    pub provisional_note: Option<String>,
}

/// `[from, until]`, both dates inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coverage {
    pub from: NaiveDate,
    pub until: NaiveDate,
}

fn hours(h: &Hours, rule: &'static str) -> DaySession {
    DaySession {
        open: h.open.to_string(),
        close: h.close.to_string(),
        rule,
    }
}

fn entry(name: &str, closed: Option<Vec<String>>, p: &Provenance) -> DayEntry {
    DayEntry {
        name: name.to_string(),
        closed,
        source: p.source.clone(),
        confidence: p.confidence.map(|c| c.to_string()),
    }
}

impl Calendar {
    pub fn info(&self) -> CalendarInfo {
        CalendarInfo {
            name: self.name.clone(),
            version: self.version.to_string(),
            timezone: self.timezone.name().to_string(),
            coverage: Coverage {
                from: self.valid_from,
                until: self.valid_until,
            },
            provisional_from: self.provisional_from,
            provisional_note: self.provisional_note.clone(),
        }
    }

    /// The day `date`, for the segments named in `only` (all when empty).
    pub fn day(&self, date: NaiveDate, only: &[String]) -> Day {
        let covered = self.valid_from <= date && date <= self.valid_until;
        let segments = self
            .segments
            .iter()
            .filter(|s| only.is_empty() || only.contains(&s.name))
            .map(|seg| {
                let (list, rule) = self.hours_on(seg, date);
                let label = match rule {
                    Rule::Special(_) => "special",
                    Rule::HolidaySessions(_) => "holiday",
                    Rule::Season(_) => "season",
                    _ => "regular",
                };
                DaySegment {
                    segment: seg.name.clone(),
                    sessions: if covered {
                        list.iter().map(|h| hours(h, label)).collect()
                    } else {
                        Vec::new()
                    },
                    closed_by_holiday: covered && matches!(rule, Rule::HolidayClosed(_)),
                }
            })
            .collect();
        let holiday = self.holidays.get(&date).map(|h| {
            let closed = match &h.closed {
                Closed::All => vec!["all".to_string()],
                Closed::Segments(v) => v.clone(),
            };
            entry(&h.name, Some(closed), &h.provenance)
        });
        let special_session = self
            .special_sessions
            .get(&date)
            .map(|s| entry(&s.name, None, &s.provenance));
        let blackouts = self
            .blackouts
            .iter()
            .filter(|b| b.date == date)
            .map(|b| DayBlackout {
                from: b.hours.open.to_string(),
                to: b.hours.close.to_string(),
                name: b.name.clone(),
                source: b.provenance.source.clone(),
                confidence: b.provenance.confidence.map(|c| c.to_string()),
            })
            .collect();
        Day {
            date,
            weekday: date.weekday().to_string(),
            covered,
            provisional: self.is_provisional(date),
            segments,
            holiday,
            special_session,
            blackouts,
        }
    }

    /// Days `first..=last`.
    pub fn days(&self, first: NaiveDate, last: NaiveDate, only: &[String]) -> Vec<Day> {
        let mut out = Vec::new();
        let mut d = first;
        while d <= last {
            out.push(self.day(d, only));
            d += TimeDelta::days(1);
        }
        out
    }
}

fn provenance_text(source: &Option<String>, confidence: &Option<String>) -> String {
    let mut parts = Vec::new();
    if let Some(c) = confidence {
        parts.push(format!("confidence: {c}"));
    }
    if let Some(s) = source {
        parts.push(format!("source: {s}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

impl Day {
    /// One line per fact, for `calendar show` and for `calendar diff` (which
    /// compares these lines between two calendars).
    pub fn lines(&self) -> Vec<String> {
        if !self.covered {
            return vec!["not covered: blocked (fail closed)".to_string()];
        }
        let mut out = Vec::new();
        if let Some(h) = &self.holiday {
            let closed = h.closed.as_deref().unwrap_or_default();
            let closed = if closed.is_empty() {
                "nothing".to_string()
            } else {
                closed.join(", ")
            };
            out.push(format!(
                "holiday: {} (closes {closed}){}",
                h.name,
                provenance_text(&h.source, &h.confidence)
            ));
        }
        if let Some(s) = &self.special_session {
            out.push(format!(
                "special session: {}{}",
                s.name,
                provenance_text(&s.source, &s.confidence)
            ));
        }
        for seg in &self.segments {
            let text = if seg.sessions.is_empty() {
                if seg.closed_by_holiday {
                    "closed (holiday)".to_string()
                } else {
                    "no session".to_string()
                }
            } else {
                seg.sessions
                    .iter()
                    .map(|s| {
                        let how = if s.rule == "regular" {
                            String::new()
                        } else {
                            format!(" ({})", s.rule)
                        };
                        format!("{}-{}{how}", s.open, s.close)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push(format!("{:<10} {text}", seg.segment));
        }
        for b in &self.blackouts {
            out.push(format!(
                "blackout {}-{}: {}{}",
                b.from,
                b.to,
                b.name,
                provenance_text(&b.source, &b.confidence)
            ));
        }
        out
    }

    /// Only regular (or seasonal) sessions: nothing a reviewer must read.
    pub fn is_plain(&self) -> bool {
        self.covered
            && self.holiday.is_none()
            && self.special_session.is_none()
            && self.blackouts.is_empty()
            && self.segments.iter().all(|s| {
                s.sessions
                    .iter()
                    .all(|x| matches!(x.rule, "regular" | "season"))
            })
    }
}
