//! Diagnostics for files a person wrote: specs, calendars, policies.
//!
//! Every problem is reported as `file:line:col: key.path: what is wrong — how
//! to fix it`, and all problems of a file are collected before anything is
//! printed, so a tired operator fixes a file in one pass instead of ten.

use std::fmt;

/// How bad a diagnostic is. Warnings are printed but never change the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as the user named it.
    pub file: String,
    /// 1-based line and column, when the problem can be pinned to a place.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Key path such as `steps[3].bake.sessions`; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if !self.fix.is_empty() {
            write!(f, " — {}", self.fix)?;
        }
        Ok(())
    }
}

/// A problem found by a pure validator, before it is placed in a file.
///
/// Validators know key paths, not lines; the loader that parsed the file maps
/// each path back to a line and column (see [`crate::yaml::Positions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub path: String,
    pub message: String,
    pub fix: String,
}

impl Problem {
    pub fn error(
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub fn warning(
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// True when any diagnostic is an error (warnings alone do not fail a file).
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(|d| d.severity == Severity::Error)
}
