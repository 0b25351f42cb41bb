//! Whether the clock may be trusted for a raise (docs/design.md, *Clock*).
//!
//! Three sources, each with its own expiry: the kernel's NTP state
//! (`adjtimex`, always available on Linux, read every pass), PostgreSQL's
//! clock, and the `Date` of the metrics store's answers. The one decision a
//! newcomer must know: **an unknown clock is untrusted** — no measurement
//! is not "no skew". Only an operator's explicit `allow_unsynced_clock`
//! trusts a kernel that reports itself unsynchronised, and every decision
//! then records that it did.

use chrono::{DateTime, TimeDelta, Utc};

use super::Config;
use crate::clock::KernelSync;

/// A measurement older than this no longer counts (a metrics store that
/// stopped answering must not keep vouching for the clock).
pub const SKEW_TTL: TimeDelta = TimeDelta::minutes(10);

#[derive(Debug, Default)]
pub struct Trust {
    kernel: Option<(DateTime<Utc>, KernelSync)>,
    db: Option<(DateTime<Utc>, TimeDelta)>,
    metrics: Option<(DateTime<Utc>, TimeDelta)>,
}

/// The verdict, for the engine, `/readyz` and the audit log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClockStatus {
    pub trusted: bool,
    /// `clock_unsynchronised`, `clock_skew` or `clock_unknown` when untrusted.
    pub code: Option<&'static str>,
    /// Why not, and how to fix it.
    pub problem: Option<String>,
    /// Recorded with every decision when the clock is trusted only because
    /// of `allow_unsynced_clock`.
    pub note: Option<String>,
    /// The largest current measured skew (database, metrics store).
    #[serde(skip)]
    pub skew: Option<TimeDelta>,
    pub skew_ms: Option<i64>,
    pub kernel: String,
}

impl Trust {
    pub fn kernel(&mut self, at: DateTime<Utc>, s: KernelSync) {
        self.kernel = Some((at, s));
    }

    pub fn db(&mut self, at: DateTime<Utc>, skew: TimeDelta) {
        self.db = Some((at, skew));
    }

    pub fn metrics(&mut self, at: DateTime<Utc>, skew: TimeDelta) {
        self.metrics = Some((at, skew));
    }

    pub fn status(&self, now: DateTime<Utc>, cfg: &Config) -> ClockStatus {
        let fresh = |m: &Option<(DateTime<Utc>, TimeDelta)>| {
            m.filter(|(at, _)| now - *at <= SKEW_TTL).map(|(_, s)| s)
        };
        let skew = [fresh(&self.db), fresh(&self.metrics)]
            .into_iter()
            .flatten()
            .max_by_key(|d| d.num_milliseconds().abs());
        let max = cfg.max_clock_skew;
        let kernel = self
            .kernel
            .filter(|(at, _)| now - *at <= SKEW_TTL)
            .map(|(_, k)| k);
        let mut note = None;
        let kernel_problem: Option<(&'static str, String)> = match kernel {
            Some(KernelSync::Synchronised { max_error_us }) => {
                (max_error_us > max.num_microseconds().unwrap_or(i64::MAX)).then(|| {
                    (
                        "clock_skew",
                        format!(
                            "the kernel's maximum clock error is {} ms, above max_clock_skew ({} ms) — check chrony/ntpd",
                            max_error_us / 1000,
                            max.num_milliseconds()
                        ),
                    )
                })
            }
            Some(KernelSync::Unsynchronised) if cfg.allow_unsynced_clock => {
                note = Some(
                    "the kernel reports the clock unsynchronised; trusted because allow_unsynced_clock is set"
                        .to_string(),
                );
                None
            }
            Some(KernelSync::Unsynchronised) => Some((
                "clock_unsynchronised",
                "the kernel reports the clock unsynchronised (adjtimex): no raise until it is — start \
                 chrony or ntpd, or run with --allow-unsynced-clock (MUHURAT_ALLOW_UNSYNCED_CLOCK=1) \
                 if you accept the risk"
                    .to_string(),
            )),
            Some(KernelSync::Unknown) | None if cfg.allow_unsynced_clock => {
                note = Some(
                    "the kernel's clock state is unknown; trusted because allow_unsynced_clock is set"
                        .to_string(),
                );
                None
            }
            Some(KernelSync::Unknown) | None => Some((
                "clock_unknown",
                "the clock's synchronisation is unknown (the kernel could not be asked): no raise — \
                 run on Linux with NTP, or with --allow-unsynced-clock if you accept the risk"
                    .to_string(),
            )),
        };
        let skew_problem = skew
            .filter(|s| s.num_milliseconds().abs() > max.num_milliseconds())
            .map(|s| {
                (
                    "clock_skew",
                    format!(
                        "clock skew {} ms (against the database or the metrics store) exceeds \
                         max_clock_skew ({} ms): no raise until the clock is fixed",
                        s.num_milliseconds(),
                        max.num_milliseconds()
                    ),
                )
            });
        let problem = skew_problem.or(kernel_problem);
        ClockStatus {
            trusted: problem.is_none(),
            code: problem.as_ref().map(|p| p.0),
            problem: problem.map(|p| p.1),
            note,
            skew,
            skew_ms: skew.map(|d| d.num_milliseconds()),
            kernel: match kernel {
                Some(KernelSync::Synchronised { max_error_us }) => {
                    format!("synchronised (max error {} ms)", max_error_us / 1000)
                }
                Some(KernelSync::Unsynchronised) => "unsynchronised".into(),
                Some(KernelSync::Unknown) | None => "unknown".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn clock_trust_fails_closed_when_nothing_was_measured() {
        let cfg = Config::default();
        let s = Trust::default().status(t("2026-12-07T00:00:00Z"), &cfg);
        assert!(!s.trusted);
        assert_eq!(s.code, Some("clock_unknown"));
    }

    #[test]
    fn an_unsynchronised_kernel_is_untrusted_unless_allowed_and_then_noted() {
        let now = t("2026-12-07T00:00:00Z");
        let mut tr = Trust::default();
        tr.kernel(now, KernelSync::Unsynchronised);
        let s = tr.status(now, &Config::default());
        assert!(!s.trusted);
        assert!(s.problem.unwrap().contains("chrony"));
        let allow = Config {
            allow_unsynced_clock: true,
            ..Config::default()
        };
        let s = tr.status(now, &allow);
        assert!(s.trusted);
        assert!(s.note.unwrap().contains("allow_unsynced_clock"));
    }

    #[test]
    fn skews_expire_and_a_large_one_is_untrusted() {
        let now = t("2026-12-07T00:00:00Z");
        let mut tr = Trust::default();
        tr.kernel(
            now,
            KernelSync::Synchronised {
                max_error_us: 20_000,
            },
        );
        tr.metrics(now, TimeDelta::seconds(9));
        let cfg = Config::default();
        assert_eq!(tr.status(now, &cfg).code, Some("clock_skew"));
        // Eleven minutes on (and the kernel read again): the old skew no
        // longer counts.
        let later = now + TimeDelta::minutes(11);
        tr.kernel(
            later,
            KernelSync::Synchronised {
                max_error_us: 20_000,
            },
        );
        assert!(tr.status(later, &cfg).trusted);
        // A kernel whose own error estimate is above max_clock_skew.
        tr.kernel(
            later,
            KernelSync::Synchronised {
                max_error_us: 6_000_000,
            },
        );
        assert!(!tr.status(later, &cfg).trusted);
    }
}
