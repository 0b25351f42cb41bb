//! `muhurat windows FILE`: permitted windows and what closes each.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::json;

use super::common::{load_spec_file, parse_time, print_diagnostics};
use super::{EXIT_BAD_INPUT, EXIT_OK, Output};
use crate::calendar::{Calendar, Provenance, Rule};
use crate::clock::Clock;
use crate::duration;
use crate::localtime;
use crate::windows::{self, Block, Explained, Interval};

/// `Fri 27 Nov 00:25 IST` — a local time for people.
pub fn human(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz).format("%a %d %b %H:%M %Z").to_string()
}

fn provenance(p: &Provenance) -> String {
    let mut parts = Vec::new();
    if let Some(c) = p.confidence {
        parts.push(format!("confidence: {c}"));
    }
    if let Some(s) = &p.source {
        parts.push(format!("source: {s}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// Why a window ends, for a person.
pub fn closes(e: &Explained, guard_before: TimeDelta, calendar_until: &str) -> String {
    if let Some(b) = &e.closed_by {
        return match &b.block {
            Block::Session { segment, rule } => {
                let guard = if guard_before.is_zero() {
                    String::new()
                } else {
                    format!(" (guard {})", duration::format(guard_before))
                };
                match rule {
                    Rule::Special(sp) => format!(
                        "{segment} special session: {}{}{guard}",
                        sp.name,
                        provenance(&sp.provenance)
                    ),
                    Rule::HolidaySessions(h) => format!(
                        "{segment} opens on {}{}{guard}",
                        h.name,
                        provenance(&h.provenance)
                    ),
                    _ => format!("{segment} opens{guard}"),
                }
            }
            Block::Blackout(bl) => format!("blackout: {}{}", bl.name, provenance(&bl.provenance)),
            Block::Deny(name) => format!("deny window {name}"),
            Block::Coverage => format!(
                "calendar coverage ends ({calendar_until}) — everything after is blocked until the calendar is extended"
            ),
            Block::Freeze => "global freeze".to_string(),
        };
    }
    if let Some(a) = e.allow_ends {
        return format!("allow window {a} ends");
    }
    "end of the range shown".to_string()
}

/// `{"name", "version", "provisional_from", "provisional_note"}` — how
/// `windows` and `plan` JSON name the calendar.
pub fn calendar_json(cal: &Calendar) -> serde_json::Value {
    json!({
        "name": cal.name,
        "version": cal.version.to_string(),
        "provisional_from": cal.provisional_from.map(|d| d.to_string()),
        "provisional_note": cal.provisional_note,
    })
}

/// "Provisional: …" for text output, when the calendar has provisional data.
pub fn provisional_line(cal: &Calendar) -> Option<String> {
    let from = cal.provisional_from?;
    let note = cal
        .provisional_note
        .as_deref()
        .map_or_else(String::new, |n| format!(" — {n}"));
    Some(format!(
        "Provisional: calendar {} data from {from} is not final; windows marked [provisional] rely on it{note}",
        cal.name
    ))
}

/// Longest range shown (ten years): beyond any calendar's coverage.
pub const MAX_DAYS: u32 = 3660;

pub fn run(
    clock: &dyn Clock,
    file: &Path,
    calendars: Option<&Path>,
    from: Option<&str>,
    to: Option<&str>,
    days: Option<u32>,
    output: Output,
) -> i32 {
    let loaded = match load_spec_file(file, calendars) {
        Ok(l) => l,
        Err(d) => {
            print_diagnostics(&d);
            return EXIT_BAD_INPUT;
        }
    };
    let from = match parse_time("--from", from, clock) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("muhurat windows: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let to = match (to, days) {
        (Some(_), _) => match parse_time("--to", to, clock) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("muhurat windows: {e}");
                return EXIT_BAD_INPUT;
            }
        },
        (None, Some(d)) if d > MAX_DAYS => {
            eprintln!("muhurat windows: --days {d} is above the limit of {MAX_DAYS}");
            return EXIT_BAD_INPUT;
        }
        (None, Some(d)) => from + TimeDelta::days(i64::from(d)),
        (None, None) => from + TimeDelta::days(7),
    };
    if to <= from {
        eprintln!("muhurat windows: --to must be after --from");
        return EXIT_BAD_INPUT;
    }
    if to - from > TimeDelta::days(i64::from(MAX_DAYS)) {
        eprintln!("muhurat windows: the range is longer than {MAX_DAYS} days; shorten it");
        return EXIT_BAD_INPUT;
    }
    let (spec, cal) = (&loaded.spec, &loaded.calendar);
    let tz = spec.windows.timezone;
    let range = Interval::new(from, to);
    let rules = spec.window_rules();
    match output {
        Output::Json => {
            let ws: Vec<_> = windows::permitted(&rules, cal, range, &[])
                .iter()
                .map(|w| {
                    json!({
                        "start": localtime::rfc3339(tz, w.start),
                        "end": localtime::rfc3339(tz, w.end),
                        "provisional": windows::relies_on_provisional(&rules, cal, *w),
                    })
                })
                .collect();
            let doc = json!({
                "calendar": calendar_json(cal),
                "coverage": {"from": cal.valid_from.to_string(), "until": cal.valid_until.to_string()},
                "note": windows::coverage_note(cal, range),
                "windows": ws,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("JSON values serialize")
            );
        }
        Output::Text => {
            println!(
                "Permitted windows for {} — calendar {} {}, segments {}, guard {}/{}, min_remaining {}",
                spec.name,
                cal.name,
                cal.version,
                spec.segments.join(", "),
                duration::format(spec.windows.before_open),
                duration::format(spec.windows.after_close),
                duration::format(spec.windows.min_remaining),
            );
            println!(
                "From {} to {} ({})",
                human(tz, from),
                human(tz, to),
                tz.name()
            );
            println!("Offline: the server's global freeze is not known here.");
            // Only when the range reaches the provisional data (guard included).
            if windows::relies_on_provisional(&rules, cal, range)
                && let Some(note) = provisional_line(cal)
            {
                println!("{note}");
            }
            let coverage = windows::coverage_note(cal, range);
            if let Some(note) = &coverage {
                println!("Coverage: {note}.");
            }
            println!();
            let explained = windows::explain(&rules, cal, range, &[]);
            if explained.is_empty() {
                match &coverage {
                    Some(_) => println!(
                        "No permitted window in this range: the calendar covers {} to {} only — extend the calendar.",
                        cal.valid_from, cal.valid_until
                    ),
                    None => println!("No permitted window in this range."),
                }
            }
            let until = format!("{} valid until {}", cal.name, cal.valid_until);
            for e in &explained {
                let w = e.window;
                let long_enough = w.end - w.start >= spec.windows.min_remaining;
                let note = if long_enough {
                    ""
                } else {
                    "  [shorter than min_remaining: no raise can start]"
                };
                let end_label = if e.cut_at_range_end { "…" } else { "" };
                let provisional = if windows::relies_on_provisional(
                    &rules,
                    cal,
                    Interval::new(w.start, e.ends),
                ) {
                    "  [provisional]"
                } else {
                    ""
                };
                println!(
                    "  {} → {}{} ({}){}{}\n      until {} — {}",
                    human(tz, w.start),
                    human(tz, w.end),
                    end_label,
                    duration::format(w.end - w.start),
                    provisional,
                    note,
                    e.ends.with_timezone(&tz).format("%H:%M %a"),
                    closes(e, spec.windows.before_open, &until),
                );
            }
            // Blackouts in range, so low-confidence entries are visible even
            // where they do not end a window.
            let (first, last) = cal.dates_around(from, to, TimeDelta::zero());
            for (iv, b) in cal.blackouts_between(first, last) {
                if iv.overlaps(&range) {
                    println!(
                        "  blackout {} → {}: {}{}",
                        human(tz, iv.start),
                        human(tz, iv.end),
                        b.name,
                        provenance(&b.provenance)
                    );
                }
            }
        }
    }
    EXIT_OK
}
