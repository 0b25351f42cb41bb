//! Calendar file → validated [`Calendar`], reporting every problem at once.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Deserialize;

use super::*;
use crate::diag::{Diagnostic, Problem};
use crate::yaml::{self, OrderedMap, Positions};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    name: String,
    version: String,
    timezone: String,
    valid_from: String,
    valid_until: String,
    segments: OrderedMap<RawSegment>,
    #[serde(default)]
    holidays: Vec<RawHoliday>,
    #[serde(default)]
    special_sessions: Vec<RawSpecial>,
    #[serde(default)]
    blackouts: Vec<RawBlackout>,
    provisional_from: Option<String>,
    provisional_note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegment {
    days: Vec<String>,
    open: String,
    close: String,
    #[serde(default)]
    seasons: Vec<RawSeason>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeason {
    from: String,
    to: String,
    open: Option<String>,
    close: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "`all` or a list of segment names such as [equity, fno]"
)]
enum RawClosed {
    Word(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHours {
    open: String,
    close: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHoliday {
    date: String,
    name: String,
    closed: RawClosed,
    #[serde(default)]
    sessions: OrderedMap<Vec<RawHours>>,
    source: Option<String>,
    confidence: Option<Confidence>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpecial {
    date: String,
    name: String,
    sessions: OrderedMap<Vec<RawHours>>,
    source: Option<String>,
    confidence: Option<Confidence>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlackout {
    date: String,
    from: String,
    to: String,
    name: String,
    source: Option<String>,
    confidence: Option<Confidence>,
}

/// Parse and validate a calendar file. `file` is how errors name it.
pub fn parse(file: &str, text: &str) -> Result<Calendar, Vec<Diagnostic>> {
    let raw: RawCalendar = yaml::from_str(file, text).map_err(|d| vec![*d])?;
    let positions = Positions::index(text);
    validate(raw).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| positions.place(file, p))
            .collect()
    })
}

/// `muhurat calendar check`: every error of the file at once (the same
/// diagnostics as [`parse`]), or a valid file and its warnings (see
/// `calendar/check.rs`). `today` is the caller's, for the coverage warning.
pub fn check(
    file: &str,
    text: &str,
    today: NaiveDate,
) -> Result<(Calendar, Vec<Diagnostic>), Vec<Diagnostic>> {
    let raw: RawCalendar = yaml::from_str(file, text).map_err(|d| vec![*d])?;
    let positions = Positions::index(text);
    let by_date = |dates: Vec<&String>| -> BTreeMap<NaiveDate, usize> {
        dates
            .into_iter()
            .enumerate()
            .filter_map(|(i, d)| Some((NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").ok()?, i)))
            .rev() // the first entry of a date wins
            .collect()
    };
    let index = super::check::Index {
        holidays: by_date(raw.holidays.iter().map(|h| &h.date).collect()),
        special_sessions: by_date(raw.special_sessions.iter().map(|s| &s.date).collect()),
    };
    let place = |problems: Vec<Problem>| -> Vec<Diagnostic> {
        problems
            .into_iter()
            .map(|p| positions.place(file, p))
            .collect()
    };
    let cal = validate(raw).map_err(place)?;
    let warnings = place(super::check::warnings(&cal, today, &index));
    Ok((cal, warnings))
}

/// `2026.11.1` → [2026, 11, 1].
pub fn parse_version(s: &str) -> Result<Version, String> {
    let parts: Result<Vec<u64>, _> = s
        .split('.')
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err(())
            } else {
                p.parse::<u64>().map_err(|_| ())
            }
        })
        .collect();
    parts
        .map(Version)
        .map_err(|_| format!("version `{s}` is not dotted numbers"))
}

fn parse_minute(s: &str) -> Result<Minute, String> {
    let b = s.as_bytes();
    let ok = b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit());
    if !ok {
        return Err(format!("time `{s}` is not HH:MM"));
    }
    let h = u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0');
    let m = u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0');
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(format!("time `{s}` is out of range 00:00-24:00"));
    }
    Ok(Minute(h * 60 + m))
}

const TIME_FIX: &str =
    "write a quoted 24-hour time such as \"09:15\" (\"24:00\" is the end of the day)";
const DATE_FIX: &str = "write a date as YYYY-MM-DD";

struct V {
    problems: Vec<Problem>,
}

impl V {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem::error(path, msg, fix));
    }

    fn date(&mut self, path: &str, s: &str) -> Option<NaiveDate> {
        match NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => {
                self.err(path, format!("`{s}` is not a date"), DATE_FIX);
                None
            }
        }
    }

    fn minute(&mut self, path: &str, s: &str) -> Option<Minute> {
        match parse_minute(s) {
            Ok(m) => Some(m),
            Err(e) => {
                self.err(path, e, TIME_FIX);
                None
            }
        }
    }

    fn hours(&mut self, path: &str, open: &str, close: &str) -> Option<Hours> {
        let o = self.minute(&format!("{path}.open"), open);
        let c = self.minute(&format!("{path}.close"), close);
        let (o, c) = (o?, c?);
        if o >= c {
            self.err(
                format!("{path}.close"),
                format!("close {c} is not after open {o}"),
                "a session must close after it opens on the same date; split a session that crosses midnight at \"24:00\"",
            );
            return None;
        }
        Some(Hours { open: o, close: c })
    }

    fn in_coverage(&mut self, path: &str, d: NaiveDate, cov: Option<(NaiveDate, NaiveDate)>) {
        if let Some((from, until)) = cov
            && (d < from || d > until)
        {
            self.err(
                path,
                format!("{d} is outside the calendar's coverage {from}..{until}"),
                "move the entry inside valid_from..valid_until or widen the coverage",
            );
        }
    }

    fn session_map(
        &mut self,
        path: &str,
        map: &OrderedMap<Vec<RawHours>>,
        known: &BTreeSet<String>,
    ) -> BTreeMap<String, Vec<Hours>> {
        let mut out = BTreeMap::new();
        for (seg, list) in &map.0 {
            let p = format!("{path}.{seg}");
            if !known.contains(seg) {
                self.err(&p, format!("unknown segment `{seg}`"), segments_fix(known));
                continue;
            }
            if out.contains_key(seg) {
                self.err(
                    &p,
                    format!("segment `{seg}` is listed twice"),
                    "merge its sessions into one list",
                );
                continue;
            }
            let mut hours: Vec<Hours> = Vec::new();
            for (i, h) in list.iter().enumerate() {
                if let Some(h) = self.hours(&format!("{p}[{i}]"), &h.open, &h.close) {
                    hours.push(h);
                }
            }
            hours.sort_by_key(|h| h.open);
            for w in hours.windows(2) {
                if w[1].open < w[0].close {
                    self.err(
                        &p,
                        format!(
                            "sessions {}-{} and {}-{} overlap",
                            w[0].open, w[0].close, w[1].open, w[1].close
                        ),
                        "merge overlapping sessions into one",
                    );
                }
            }
            out.insert(seg.clone(), hours);
        }
        out
    }
}

fn segments_fix(known: &BTreeSet<String>) -> String {
    format!(
        "use one of the calendar's segments: {}",
        known.iter().cloned().collect::<Vec<_>>().join(", ")
    )
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn validate(raw: RawCalendar) -> Result<Calendar, Vec<Problem>> {
    let mut v = V {
        problems: Vec::new(),
    };

    if !is_name(&raw.name) {
        v.err(
            "name",
            format!("`{}` is not a valid calendar name", raw.name),
            "use lower-case letters, digits, - and _ (the file is NAME.yaml)",
        );
    }
    let version = parse_version(raw.version.trim())
        .map_err(|e| v.err("version", e, "write a dotted numeric version such as \"2026.11.1\" and raise it with every change"))
        .ok();
    let timezone: Option<Tz> = raw
        .timezone
        .parse()
        .map_err(|_| {
            v.err(
                "timezone",
                format!("unknown time zone `{}`", raw.timezone),
                "use an IANA zone name such as Asia/Kolkata",
            )
        })
        .ok();
    let from = v.date("valid_from", &raw.valid_from);
    let until = v.date("valid_until", &raw.valid_until);
    let cov = match (from, until) {
        (Some(f), Some(u)) if f <= u => Some((f, u)),
        (Some(f), Some(u)) => {
            v.err(
                "valid_until",
                format!("valid_until {u} is before valid_from {f}"),
                "swap the dates",
            );
            None
        }
        _ => None,
    };

    let mut segments = Vec::new();
    let mut known = BTreeSet::new();
    if raw.segments.0.is_empty() {
        v.err("segments", "the calendar has no segments", "add at least one segment, e.g. equity: {days: [mon, tue, wed, thu, fri], open: \"09:15\", close: \"15:30\"}");
    }
    for (name, s) in &raw.segments.0 {
        let p = format!("segments.{name}");
        if !known.insert(name.clone()) {
            v.err(
                &p,
                format!("segment `{name}` is defined twice"),
                "keep one definition",
            );
            continue;
        }
        if !is_name(name) {
            v.err(
                &p,
                format!("`{name}` is not a valid segment name"),
                "use lower-case letters, digits, - and _",
            );
        }
        let mut days = [false; 7];
        if s.days.is_empty() {
            v.err(
                format!("{p}.days"),
                "no trading days",
                "list the weekdays the segment trades, e.g. [mon, tue, wed, thu, fri]",
            );
        }
        for (i, d) in s.days.iter().enumerate() {
            match weekday_from_name(d) {
                Some(w) => days[w.num_days_from_monday() as usize] = true,
                None => v.err(
                    format!("{p}.days[{i}]"),
                    format!("`{d}` is not a weekday"),
                    "use mon, tue, wed, thu, fri, sat or sun",
                ),
            }
        }
        let hours = v.hours(&p, &s.open, &s.close);
        let mut seasons = Vec::new();
        for (i, se) in s.seasons.iter().enumerate() {
            let sp = format!("{p}.seasons[{i}]");
            let f = v.date(&format!("{sp}.from"), &se.from);
            let t = v.date(&format!("{sp}.to"), &se.to);
            if let Some(f) = f {
                v.in_coverage(&format!("{sp}.from"), f, cov);
            }
            if let Some(t) = t {
                v.in_coverage(&format!("{sp}.to"), t, cov);
            }
            if se.open.is_none() && se.close.is_none() {
                v.err(
                    &sp,
                    "the season changes nothing",
                    "give open, close or both",
                );
            }
            let open = se
                .open
                .as_deref()
                .map(|o| v.minute(&format!("{sp}.open"), o));
            let close = se
                .close
                .as_deref()
                .map(|c| v.minute(&format!("{sp}.close"), c));
            let (Some(f), Some(t)) = (f, t) else { continue };
            if f > t {
                v.err(
                    format!("{sp}.to"),
                    format!("season ends {t}, before it starts {f}"),
                    "seasons are inclusive date ranges: from ≤ to",
                );
                continue;
            }
            // Checked only now, after the season's own times and dates: an
            // invalid segment `open`/`close` must not hide the season's errors
            // (every problem is reported in one pass).
            let Some(base) = hours else { continue };
            let open = match open {
                Some(Some(o)) => o,
                Some(None) => continue,
                None => base.open,
            };
            let close = match close {
                Some(Some(c)) => c,
                Some(None) => continue,
                None => base.close,
            };
            if open >= close {
                v.err(
                    format!("{sp}.close"),
                    format!("close {close} is not after open {open}"),
                    "a session must close after it opens",
                );
                continue;
            }
            seasons.push(Season {
                from: f,
                to: t,
                hours: Hours { open, close },
            });
        }
        seasons.sort_by_key(|s| s.from);
        for w in seasons.windows(2) {
            if w[1].from <= w[0].to {
                v.err(
                    format!("{p}.seasons"),
                    format!(
                        "seasons {}..{} and {}..{} overlap",
                        w[0].from, w[0].to, w[1].from, w[1].to
                    ),
                    "make the date ranges disjoint",
                );
            }
        }
        if let Some(hours) = hours {
            segments.push(Segment {
                name: name.clone(),
                days,
                hours,
                seasons,
            });
        }
    }

    let mut holidays = BTreeMap::new();
    for (i, h) in raw.holidays.iter().enumerate() {
        let p = format!("holidays[{i}]");
        // A bad date or `closed` does not stop the entry's other checks
        // (its sessions, a later duplicate of its date): every problem is
        // reported in one pass.
        let date = v.date(&format!("{p}.date"), &h.date);
        if let Some(date) = date {
            v.in_coverage(&format!("{p}.date"), date, cov);
        }
        let closed = match &h.closed {
            RawClosed::Word(w) if w == "all" => Closed::All,
            RawClosed::Word(w) => {
                v.err(
                    format!("{p}.closed"),
                    format!("`{w}` is neither `all` nor a list"),
                    "write `all`, or a list such as [equity, fno], or [] when only sessions change",
                );
                // Placeholder so the checks go on; the file is refused anyway.
                Closed::All
            }
            RawClosed::List(list) => {
                for (j, s) in list.iter().enumerate() {
                    if !known.contains(s) {
                        v.err(
                            format!("{p}.closed[{j}]"),
                            format!("unknown segment `{s}`"),
                            segments_fix(&known),
                        );
                    }
                }
                Closed::Segments(list.clone())
            }
        };
        let sessions = v.session_map(&format!("{p}.sessions"), &h.sessions, &known);
        let Some(date) = date else { continue };
        let hol = Holiday {
            name: h.name.clone(),
            closed,
            sessions,
            provenance: Provenance {
                source: h.source.clone(),
                confidence: h.confidence,
            },
        };
        if holidays.insert(date, hol).is_some() {
            v.err(
                format!("{p}.date"),
                format!("{date} is listed twice in holidays"),
                "merge the two entries into one",
            );
        }
    }

    let mut special_sessions = BTreeMap::new();
    for (i, s) in raw.special_sessions.iter().enumerate() {
        let p = format!("special_sessions[{i}]");
        // As for holidays: a bad date does not hide the sessions' errors.
        let date = v.date(&format!("{p}.date"), &s.date);
        if let Some(date) = date {
            v.in_coverage(&format!("{p}.date"), date, cov);
        }
        if s.sessions.0.is_empty() {
            v.err(
                format!("{p}.sessions"),
                "no sessions listed",
                "give each segment's hours, e.g. {equity: [{open: \"18:00\", close: \"19:15\"}]}",
            );
        }
        let sessions = v.session_map(&format!("{p}.sessions"), &s.sessions, &known);
        let Some(date) = date else { continue };
        let sp = SpecialSession {
            name: s.name.clone(),
            sessions,
            provenance: Provenance {
                source: s.source.clone(),
                confidence: s.confidence,
            },
        };
        if special_sessions.insert(date, sp).is_some() {
            v.err(
                format!("{p}.date"),
                format!("{date} is listed twice in special_sessions"),
                "merge the two entries into one",
            );
        }
    }

    let mut blackouts = Vec::new();
    for (i, b) in raw.blackouts.iter().enumerate() {
        let p = format!("blackouts[{i}]");
        let date = v.date(&format!("{p}.date"), &b.date);
        if let Some(d) = date {
            v.in_coverage(&format!("{p}.date"), d, cov);
        }
        let f = v.minute(&format!("{p}.from"), &b.from);
        let t = v.minute(&format!("{p}.to"), &b.to);
        let (Some(date), Some(f), Some(t)) = (date, f, t) else {
            continue;
        };
        if f >= t {
            v.err(
                format!("{p}.to"),
                format!("to {t} is not after from {f}"),
                "a blackout must end after it starts; use \"24:00\" for the end of the day",
            );
            continue;
        }
        blackouts.push(Blackout {
            date,
            hours: Hours { open: f, close: t },
            name: b.name.clone(),
            provenance: Provenance {
                source: b.source.clone(),
                confidence: b.confidence,
            },
        });
    }
    blackouts.sort_by_key(|b| (b.date, b.hours.open));

    let provisional_from = raw.provisional_from.as_deref().and_then(|s| {
        let d = v.date("provisional_from", s)?;
        v.in_coverage("provisional_from", d, cov);
        Some(d)
    });
    let provisional_note = raw
        .provisional_note
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if provisional_note.is_some() && raw.provisional_from.is_none() {
        v.err(
            "provisional_note",
            "a note about provisional data, but no provisional_from",
            "add provisional_from: YYYY-MM-DD (the first date whose data is not final), or remove the note",
        );
    }

    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let (Some(version), Some(timezone), Some((valid_from, valid_until))) = (version, timezone, cov)
    else {
        unreachable!("every missing part recorded a problem")
    };
    Ok(Calendar {
        name: raw.name,
        version,
        timezone,
        valid_from,
        valid_until,
        segments,
        holidays,
        special_sessions,
        blackouts,
        provisional_from,
        provisional_note,
    })
}
