//! `muhurat calendar show|diff|check`: look at a calendar without reading
//! YAML, see what a change to it does before it ships, and check it.
//!
//! All three are offline and read files only. `diff` is what a reviewer of
//! a calendar merge request needs: the days whose sessions, holidays,
//! special sessions or blackouts change, and — for each `--spec` — the
//! permitted windows that open or close because of it. Days that a change
//! newly covers with nothing but their regular sessions are counted, not
//! listed, so extending a calendar by a year reads as its exceptions.

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, TimeDelta};
use clap::Subcommand;
use serde_json::json;

use super::common::{find_calendar_by_name, parse_date, print_diagnostics};
use super::windows::{human, provisional_line};
use super::{EXIT_BAD_INPUT, EXIT_OK, Output};
use crate::calendar::{self, Calendar, Day};
use crate::clock::Clock;
use crate::diag::{Diagnostic, Severity};
use crate::duration;
use crate::localtime;
use crate::spec::{self, CalendarLookup};
use crate::windows::{self, Interval};

/// At most this many opened (or closed) windows are listed per spec.
const MAX_WINDOWS_LISTED: usize = 40;

#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// Show each day's sessions per segment, holidays, special sessions and
    /// blackouts (with source and confidence), coverage and provisional data.
    Show {
        /// A calendar name (NAME.yaml in --calendars), or a path to a file.
        name: String,
        /// Folder of calendar files [default: rollouts/calendars].
        #[arg(long, env = "MUHURAT_CALENDARS")]
        calendars: Option<PathBuf>,
        /// First day, YYYY-MM-DD [default: today in the calendar's zone].
        #[arg(long)]
        from: Option<String>,
        /// Number of days.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Only these segments (repeat for several).
        #[arg(long)]
        segment: Vec<String>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// What changes from OLD to NEW: days, sessions, and for each --spec the
    /// permitted windows that open or close.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Rollout specs whose permitted windows to compare (repeatable).
        #[arg(long = "spec", num_args = 1..)]
        specs: Vec<PathBuf>,
    },
    /// Validate calendar files (every error at once, as `validate`) and warn
    /// about coverage ending within 45 days, weekdays with no session and no
    /// holiday, weekend holidays, and special sessions that repeat a regular day.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(clock: &dyn Clock, cmd: &CalendarCommand) -> i32 {
    match cmd {
        CalendarCommand::Show {
            name,
            calendars,
            from,
            days,
            segment,
            output,
        } => show(
            clock,
            name,
            calendars.as_deref(),
            from.as_deref(),
            *days,
            segment,
            *output,
        ),
        CalendarCommand::Diff { old, new, specs } => diff(old, new, specs),
        CalendarCommand::Check { files } => check(clock, files),
    }
}

fn load(path: &Path) -> Result<Calendar, i32> {
    match super::common::load_calendar_file(path) {
        Ok(c) => Ok(c),
        Err(CalendarLookup::NotFound(m)) => {
            eprintln!("muhurat calendar: {m}");
            Err(EXIT_BAD_INPUT)
        }
        Err(CalendarLookup::Invalid(d)) => {
            print_diagnostics(&d);
            Err(EXIT_BAD_INPUT)
        }
    }
}

/// `Calendar nse 2026.12.1 (Asia/Kolkata) covers 2025-01-01 to 2027-12-31`.
fn header(cal: &Calendar) -> String {
    format!(
        "Calendar {} {} ({}) covers {} to {}",
        cal.name,
        cal.version,
        cal.timezone.name(),
        cal.valid_from,
        cal.valid_until
    )
}

fn show(
    clock: &dyn Clock,
    name: &str,
    dir: Option<&Path>,
    from: Option<&str>,
    days: u32,
    only: &[String],
    output: Output,
) -> i32 {
    let cal = match load(&find_calendar_by_name(name, dir)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for s in only {
        if cal.segment(s).is_none() {
            eprintln!(
                "muhurat calendar show: --segment {s}: calendar {} has no such segment (it has {})",
                cal.name,
                cal.segment_names().join(", ")
            );
            return EXIT_BAD_INPUT;
        }
    }
    let first = match from {
        Some(t) => match parse_date("--from", t) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("muhurat calendar show: {e}");
                return EXIT_BAD_INPUT;
            }
        },
        None => localtime::date_of(cal.timezone, clock.now()),
    };
    if days == 0 {
        eprintln!("muhurat calendar show: --days must be at least 1");
        return EXIT_BAD_INPUT;
    }
    let last = first + TimeDelta::days(i64::from(days) - 1);
    let list = cal.days(first, last, only);
    match output {
        Output::Json => {
            let doc = json!({
                "calendar": cal.info(),
                "from": first.to_string(),
                "to": last.to_string(),
                "days": list,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).expect("JSON values serialize")
            );
        }
        Output::Text => {
            println!("{}", header(&cal));
            if let Some(p) = provisional_line(&cal) {
                println!("{}", p.replace("windows marked", "days marked"));
            }
            for day in &list {
                let mut tags = Vec::new();
                if day.provisional && day.covered {
                    tags.push("[provisional]");
                }
                println!();
                println!(
                    "{} {}{}{}",
                    day.weekday,
                    day.date,
                    if tags.is_empty() { "" } else { "  " },
                    tags.join(" ")
                );
                for line in day.lines() {
                    println!("  {line}");
                }
            }
        }
    }
    EXIT_OK
}

/// Contiguous runs of dates, as `2027-01-01..2027-12-31` (or one date).
fn runs(dates: &[NaiveDate]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < dates.len() {
        let mut j = i;
        while j + 1 < dates.len() && dates[j + 1] == dates[j] + TimeDelta::days(1) {
            j += 1;
        }
        out.push(if i == j {
            dates[i].to_string()
        } else {
            format!("{}..{}", dates[i], dates[j])
        });
        i = j + 1;
    }
    out
}

fn segment_lines(cal: &Calendar) -> Vec<String> {
    let mut out = Vec::new();
    for s in &cal.segments {
        let days: Vec<String> = (0..7)
            .filter(|i| s.days[*i])
            .map(|i| {
                chrono::Weekday::try_from(i as u8)
                    .map(|w| w.to_string())
                    .unwrap_or_default()
            })
            .collect();
        out.push(format!(
            "segment {}: {} {}-{}",
            s.name,
            days.join(","),
            s.hours.open,
            s.hours.close
        ));
        for se in &s.seasons {
            out.push(format!(
                "segment {} season {}..{}: {}-{}",
                s.name, se.from, se.to, se.hours.open, se.hours.close
            ));
        }
    }
    out
}

fn print_changes(old: &[String], new: &[String]) {
    for l in old.iter().filter(|l| !new.contains(l)) {
        println!("  - {l}");
    }
    for l in new.iter().filter(|l| !old.contains(l)) {
        println!("  + {l}");
    }
}

fn diff(old_path: &Path, new_path: &Path, specs: &[PathBuf]) -> i32 {
    let (old, new) = match (load(old_path), load(new_path)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    println!(
        "Calendar diff {} {} → {} {}",
        old.name, old.version, new.name, new.version
    );
    let file_lines = |c: &Calendar| {
        let mut v = vec![
            format!("name: {}", c.name),
            format!("version: {}", c.version),
            format!("timezone: {}", c.timezone.name()),
            format!("coverage: {} to {}", c.valid_from, c.valid_until),
            format!(
                "provisional_from: {}",
                c.provisional_from
                    .map_or_else(|| "none".to_string(), |d| d.to_string())
            ),
        ];
        if let Some(n) = &c.provisional_note {
            v.push(format!("provisional_note: {n}"));
        }
        v.extend(segment_lines(c));
        v
    };
    let (fo, fnew) = (file_lines(&old), file_lines(&new));
    if fo == fnew {
        println!("File: unchanged.");
    } else {
        println!("File:");
        print_changes(&fo, &fnew);
    }
    if new.version <= old.version {
        println!(
            "  ! version {} is not greater than {}: the server will refuse the new file — raise version",
            new.version, old.version
        );
    }

    let first = old.valid_from.min(new.valid_from);
    let last = old.valid_until.max(new.valid_until);
    let mut newly_plain = Vec::new();
    let mut lost = Vec::new();
    let mut changed = 0usize;
    let mut listed = Vec::new();
    let mut d = first;
    while d <= last {
        let (a, b) = (old.day(d, &[]), new.day(d, &[]));
        if a != b {
            changed += 1;
            if !a.covered && b.is_plain() {
                newly_plain.push(d);
            } else if a.covered && !b.covered {
                lost.push(d);
            } else {
                listed.push((a, b));
            }
        }
        d += TimeDelta::days(1);
    }
    println!();
    if changed == 0 {
        println!("Days: none changed.");
    } else {
        println!("Days: {changed} changed.");
    }
    if !newly_plain.is_empty() {
        println!(
            "  newly covered with their regular sessions only (not listed): {} day(s), {}",
            newly_plain.len(),
            runs(&newly_plain).join(", ")
        );
    }
    if !lost.is_empty() {
        println!(
            "  no longer covered (blocked from now on): {}",
            runs(&lost).join(", ")
        );
    }
    for (a, b) in &listed {
        let tag = if b.provisional && b.covered {
            "  [provisional]"
        } else {
            ""
        };
        if a.covered {
            println!("{} {}{tag}", b.weekday, b.date);
            print_changes(&day_diff_lines(a), &day_diff_lines(b));
        } else {
            // Newly covered: everything is new; only the day itself is shown.
            println!("{} {}  (newly covered){tag}", b.weekday, b.date);
            print_changes(&[], &b.lines());
        }
    }

    for spec_path in specs {
        if let Err(code) = spec_windows(spec_path, &old, &new) {
            return code;
        }
    }
    EXIT_OK
}

/// A day's lines for comparison; provisional status is part of the day.
fn day_diff_lines(d: &Day) -> Vec<String> {
    let mut v = d.lines();
    if d.covered && d.provisional {
        v.push("provisional".to_string());
    }
    v
}

fn spec_windows(path: &Path, old: &Calendar, new: &Calendar) -> Result<(), i32> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("{}: cannot read the spec: {e}", path.display());
        EXIT_BAD_INPUT
    })?;
    let file = path.display().to_string();
    let load_with = |cal: &Calendar| {
        spec::load(&file, &text, |_| Ok(cal.clone())).map_err(|d| {
            print_diagnostics(&d);
            EXIT_BAD_INPUT
        })
    };
    let (lo, ln) = (load_with(old)?, load_with(new)?);
    let spec = &ln.spec;
    if spec.calendar != new.name {
        println!(
            "\n(note: {} names calendar {}; compared with {} anyway)",
            file, spec.calendar, new.name
        );
    }
    let tz = spec.windows.timezone;
    let start = old.coverage().start.min(new.coverage().start);
    let end = old.coverage().end.max(new.coverage().end);
    let range = Interval::new(start, end);
    let a = windows::permitted(&lo.spec.window_rules(), old, range, &[]);
    let b = windows::permitted(&ln.spec.window_rules(), new, range, &[]);
    let opened = windows::subtract(&b, &a);
    let closed = windows::subtract(&a, &b);
    println!();
    println!(
        "Spec {} ({}): permitted windows that change (offline: no freeze)",
        spec.name, file
    );
    if opened.is_empty() && closed.is_empty() {
        println!("  none");
    }
    for (label, list) in [("opens", &opened), ("closes", &closed)] {
        for w in list.iter().take(MAX_WINDOWS_LISTED) {
            let prov = if label == "opens"
                && windows::relies_on_provisional(&ln.spec.window_rules(), new, *w)
            {
                "  [provisional]"
            } else {
                ""
            };
            println!(
                "  {label:<6} {} → {} ({}){prov}",
                human(tz, w.start),
                human(tz, w.end),
                duration::format(w.end - w.start)
            );
        }
        if list.len() > MAX_WINDOWS_LISTED {
            let total: TimeDelta = list.iter().map(|w| w.end - w.start).sum();
            println!(
                "  … {} more that {label} ({} in all, {} windows)",
                list.len() - MAX_WINDOWS_LISTED,
                duration::format(total),
                list.len()
            );
        }
    }
    Ok(())
}

fn check(clock: &dyn Clock, files: &[PathBuf]) -> i32 {
    let mut failed = false;
    for f in files {
        let shown = f.display().to_string();
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{shown}: cannot read the file: {e}");
                failed = true;
                continue;
            }
        };
        // "Today" in the calendar's own zone is only known after parsing;
        // UTC's date is at most a day off, which a 45-day warning absorbs.
        let today = clock.now().date_naive();
        match calendar::check(&shown, &text, today) {
            Ok((cal, warnings)) => {
                print_diagnostics(&warnings);
                let prov = cal
                    .provisional_from
                    .map_or_else(String::new, |d| format!(", provisional from {d}"));
                println!(
                    "{shown}: ok — calendar {} {} covering {} to {}{prov}; {} warning(s)",
                    cal.name,
                    cal.version,
                    cal.valid_from,
                    cal.valid_until,
                    warnings.len()
                );
            }
            Err(diags) => {
                failed = true;
                print_diagnostics(&diags);
                let n = diags
                    .iter()
                    .filter(|d: &&Diagnostic| d.severity == Severity::Error)
                    .count();
                eprintln!("{shown}: {n} error(s)");
            }
        }
    }
    if failed { EXIT_BAD_INPUT } else { EXIT_OK }
}
