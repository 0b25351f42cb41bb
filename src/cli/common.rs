//! File I/O shared by the offline commands: reading specs and calendars.

use std::path::{Path, PathBuf};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::calendar::{self, Calendar};
use crate::clock::Clock;
use crate::diag::{Diagnostic, Severity};
use crate::spec::{self, CalendarLookup, Loaded};

/// Where the calendar `name` lives: `--calendars DIR` (or
/// `MUHURAT_CALENDARS`), else `calendars/` beside the spec file.
pub fn find_calendar(spec_file: &Path, dir: Option<&Path>, name: &str) -> PathBuf {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => spec_file
            .parent()
            .unwrap_or(Path::new("."))
            .join("calendars"),
    };
    dir.join(format!("{name}.yaml"))
}

/// `calendar show NAME`: a path when NAME looks like one (has a `/` or ends
/// in `.yaml`/`.yml`), else `NAME.yaml` in `dir` (`--calendars`,
/// `MUHURAT_CALENDARS`), by default `rollouts/calendars` — the server's
/// default folder.
pub fn find_calendar_by_name(name: &str, dir: Option<&Path>) -> PathBuf {
    if name.contains('/') || name.ends_with(".yaml") || name.ends_with(".yml") {
        return PathBuf::from(name);
    }
    dir.unwrap_or(Path::new("rollouts/calendars"))
        .join(format!("{name}.yaml"))
}

/// A `YYYY-MM-DD` flag value.
pub fn parse_date(flag: &str, text: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{flag} `{text}` is not a date; write YYYY-MM-DD, e.g. 2027-01-04"))
}

fn io_diag(file: &Path, e: &std::io::Error, fix: &str) -> Diagnostic {
    let (message, fix) = if e.kind() == std::io::ErrorKind::InvalidData {
        (
            "the file is not UTF-8 text".to_string(),
            "save it as UTF-8 (specs and calendars are YAML text)",
        )
    } else if e.kind() == std::io::ErrorKind::FileTooLarge {
        (
            format!(
                "the file is above the limit of {} bytes",
                crate::yaml::MAX_BYTES
            ),
            "a spec or calendar is a few KiB; check that this is the right file",
        )
    } else {
        (format!("cannot read the file: {e}"), fix)
    };
    Diagnostic {
        severity: Severity::Error,
        file: file.display().to_string(),
        line: None,
        column: None,
        path: String::new(),
        message,
        fix: fix.to_string(),
    }
}

/// Read a text file of at most [`crate::yaml::MAX_BYTES`] bytes: a larger
/// one is refused before it is read into memory.
pub fn read_limited(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(crate::yaml::MAX_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > crate::yaml::MAX_BYTES {
        return Err(std::io::Error::from(std::io::ErrorKind::FileTooLarge));
    }
    String::from_utf8(buf).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))
}

/// Read and validate a calendar file.
pub fn load_calendar_file(path: &Path) -> Result<Calendar, CalendarLookup> {
    let text = match read_limited(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CalendarLookup::NotFound(format!(
                "no file {}",
                path.display()
            )));
        }
        Err(e) => {
            return Err(CalendarLookup::Invalid(vec![io_diag(
                path,
                &e,
                "check the file's permissions",
            )]));
        }
    };
    calendar::parse(&path.display().to_string(), &text).map_err(CalendarLookup::Invalid)
}

/// Read a spec file, find and load its calendar, validate both.
pub fn load_spec_file(path: &Path, calendars: Option<&Path>) -> Result<Loaded, Vec<Diagnostic>> {
    let text = read_limited(path).map_err(|e| vec![io_diag(path, &e, "check the path")])?;
    spec::load(&path.display().to_string(), &text, |name| {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(CalendarLookup::NotFound(
                "a calendar name is a plain file name without a folder".into(),
            ));
        }
        load_calendar_file(&find_calendar(path, calendars, name))
    })
}

/// Print diagnostics, errors first, to stderr.
pub fn print_diagnostics(diags: &[Diagnostic]) {
    let mut sorted: Vec<&Diagnostic> = diags.iter().collect();
    sorted.sort_by_key(|d| (d.severity, d.file.clone(), d.line, d.column));
    for d in sorted {
        eprintln!("{d}");
    }
}

/// `--from`/`--to`: RFC 3339 with an offset; default now rounded up to the second.
pub fn parse_time(
    flag: &str,
    text: Option<&str>,
    clock: &dyn Clock,
) -> Result<DateTime<Utc>, String> {
    match text {
        Some(t) => DateTime::parse_from_rfc3339(t.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("{flag} `{t}` is not an RFC 3339 time with an offset ({e}); write e.g. 2026-11-27T00:00:00+05:30"))
            // Ranges are computed from it: keep the arithmetic far from
            // chrono's limits (year 262143).
            .and_then(|v| {
                if (1970..=2200).contains(&chrono::Datelike::year(&v)) {
                    Ok(v)
                } else {
                    Err(format!("{flag} `{t}` is outside the years 1970-2200"))
                }
            }),
        None => {
            let now = clock.now();
            let floor = now.duration_trunc(TimeDelta::seconds(1)).unwrap_or(now);
            Ok(if floor < now { floor + TimeDelta::seconds(1) } else { floor })
        }
    }
}
