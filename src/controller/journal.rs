//! The local journal: decisions taken while the store is unreachable.
//!
//! With the database down the controller makes no raise, but a check that
//! reaches `failure_limit` must still roll back (docs/design.md §8). Each input it
//! acts on is first appended here (and fsynced) — persist before acting —
//! and replayed through the store, in order, when the store answers again.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::Input;

/// One journalled input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub rollout_id: String,
    pub at: DateTime<Utc>,
    pub input: Input,
}

#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Journal { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append and fsync one entry.
    pub fn append(&self, e: &Entry) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let line = serde_json::to_string(e).map_err(std::io::Error::other)?;
        writeln!(f, "{line}")?;
        f.sync_all()
    }

    /// Every entry, oldest first. A torn last line (a crash mid-write) is
    /// skipped: its action was never taken.
    pub fn entries(&self) -> std::io::Result<Vec<Entry>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Keep only `rest` (the entries not yet persisted).
    pub fn keep(&self, rest: &[Entry]) -> std::io::Result<()> {
        if rest.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        for e in rest {
            writeln!(
                f,
                "{}",
                serde_json::to_string(e).map_err(std::io::Error::other)?
            )?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_keep() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::new(d.path().join("j.jsonl"));
        assert!(j.entries().unwrap().is_empty());
        let e = |id: &str| Entry {
            rollout_id: id.into(),
            at: "2026-11-26T10:00:00Z".parse().unwrap(),
            input: Input::Tick,
        };
        j.append(&e("a")).unwrap();
        j.append(&e("b")).unwrap();
        // A torn line is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(b"{\"rollout_id\":")
            .unwrap();
        assert_eq!(j.entries().unwrap(), vec![e("a"), e("b")]);
        j.keep(&[e("b")]).unwrap();
        assert_eq!(j.entries().unwrap(), vec![e("b")]);
        j.keep(&[]).unwrap();
        assert!(!j.path().exists());
    }
}
