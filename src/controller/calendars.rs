//! The calendars in force: server state, not snapshots (docs/design.md §3).
//!
//! Loaded from the `--calendars` folder at start and again on SIGHUP or
//! `POST /api/v1/calendars/reload`. A file that is invalid, or whose version
//! is not greater than the one in force, is refused and the previous one
//! stays in force: a typo in a calendar must never open a window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, TimeDelta, Utc};

use crate::calendar::{self, Calendar};

/// Warn when less coverage than this remains.
pub const COVERAGE_WARNING: TimeDelta = TimeDelta::days(45);

/// What one reload did, file by file, for the log and the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    pub unchanged: Vec<String>,
    pub refused: Vec<String>,
}

#[derive(Debug)]
pub struct Calendars {
    dir: PathBuf,
    in_force: RwLock<BTreeMap<String, Arc<Calendar>>>,
}

impl Calendars {
    /// Load every `*.yaml` in `dir`. At start an invalid file is an error:
    /// better to refuse to start than to run without a calendar.
    pub fn load(dir: &Path) -> Result<Calendars, String> {
        let c = Calendars {
            dir: dir.to_path_buf(),
            in_force: RwLock::new(BTreeMap::new()),
        };
        let report = c.reload();
        if !report.refused.is_empty() {
            return Err(report.refused.join("\n"));
        }
        if c.names().is_empty() {
            return Err(format!(
                "no calendar (*.yaml) in {}: pass --calendars DIR",
                dir.display()
            ));
        }
        Ok(c)
    }

    /// A registry holding exactly these calendars (tests, benchmarks).
    pub fn from_calendars(cals: Vec<Calendar>) -> Calendars {
        Calendars {
            dir: PathBuf::new(),
            in_force: RwLock::new(
                cals.into_iter()
                    .map(|c| (c.name.clone(), Arc::new(c)))
                    .collect(),
            ),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, name: &str) -> Option<Arc<Calendar>> {
        self.in_force
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.in_force
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Arc<Calendar>> {
        self.in_force
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Re-read the folder. Each file is taken only if valid and newer.
    pub fn reload(&self) -> ReloadReport {
        self.reload_with(|_| Ok(()))
    }

    /// [`Calendars::reload`], taking a new version only if `accept` says
    /// so (the controller refuses one that active rollouts' specs no
    /// longer validate against: docs/design.md, *Calendar reloads*).
    pub fn reload_with(&self, accept: impl Fn(&Calendar) -> Result<(), String>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                report.refused.push(format!(
                    "{}: cannot read the folder: {e}",
                    self.dir.display()
                ));
                return report;
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        paths.sort();
        for path in paths {
            let shown = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    report.refused.push(format!("{shown}: cannot read: {e}"));
                    continue;
                }
            };
            let cal = match calendar::parse(&shown, &text) {
                Ok(c) => c,
                Err(diags) => {
                    let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
                    report.refused.push(format!(
                        "{shown}: invalid, the previous version stays in force:\n  {}",
                        lines.join("\n  ")
                    ));
                    continue;
                }
            };
            let mut map = self.in_force.write().unwrap_or_else(|e| e.into_inner());
            match map.get(&cal.name) {
                Some(cur) if cur.as_ref() == &cal => report.unchanged.push(format!("{} {}", cal.name, cal.version)),
                Some(cur) if cal.version <= cur.version => report.refused.push(format!(
                    "{shown}: version {} is not greater than {} in force; raise `version` with every change",
                    cal.version, cur.version
                )),
                _ => match accept(&cal) {
                    Ok(()) => {
                        report.loaded.push(format!("{} {}", cal.name, cal.version));
                        map.insert(cal.name.clone(), Arc::new(cal));
                    }
                    Err(why) => report.refused.push(format!(
                        "{shown}: version {} refused, the previous version stays in force: {why}",
                        cal.version
                    )),
                },
            }
        }
        report
    }

    /// Seconds of coverage left per calendar at `now` (negative: expired).
    pub fn coverage_remaining(&self, now: DateTime<Utc>) -> Vec<(String, i64)> {
        self.all()
            .iter()
            .map(|c| (c.name.clone(), (c.coverage().end - now).num_seconds()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAL: &str = "name: t\nversion: \"VERSION\"\ntimezone: Asia/Kolkata\nvalid_from: 2026-01-01\nvalid_until: 2026-12-31\nsegments:\n  equity: {days: [mon], open: \"09:00\", close: \"15:30\"}\n";

    fn write(dir: &Path, version: &str) {
        std::fs::write(dir.join("t.yaml"), CAL.replace("VERSION", version)).unwrap();
    }

    #[test]
    fn reload_takes_only_newer_valid_files() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "1.2");
        let c = Calendars::load(d.path()).unwrap();
        assert_eq!(c.get("t").unwrap().version.to_string(), "1.2");
        // Same file: unchanged.
        assert_eq!(c.reload().unchanged, vec!["t 1.2"]);
        // Older version: refused, 1.2 stays.
        write(d.path(), "1.1.9");
        let r = c.reload();
        assert!(r.refused[0].contains("not greater than 1.2"), "{r:?}");
        assert_eq!(c.get("t").unwrap().version.to_string(), "1.2");
        // Invalid: refused, 1.2 stays.
        std::fs::write(d.path().join("t.yaml"), "name: t\nversion: \"2\"\n").unwrap();
        let r = c.reload();
        assert!(r.refused[0].contains("invalid"), "{r:?}");
        assert_eq!(c.get("t").unwrap().version.to_string(), "1.2");
        // Newer: loaded.
        write(d.path(), "1.10");
        assert_eq!(c.reload().loaded, vec!["t 1.10"]);
        assert_eq!(c.get("t").unwrap().version.to_string(), "1.10");
    }

    #[test]
    fn start_refuses_an_invalid_or_empty_folder() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            Calendars::load(d.path())
                .unwrap_err()
                .contains("no calendar")
        );
        std::fs::write(d.path().join("x.yaml"), "nope: 1\n").unwrap();
        assert!(Calendars::load(d.path()).is_err());
    }

    #[test]
    fn coverage_remaining_counts_down() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "1");
        let c = Calendars::load(d.path()).unwrap();
        let now: DateTime<Utc> = "2026-12-01T00:00:00+05:30".parse().unwrap();
        assert_eq!(
            c.coverage_remaining(now),
            vec![("t".to_string(), 31 * 86_400)]
        );
    }
}
