//! The only place that reads the wall clock, and the kernel's word on
//! whether that clock is synchronised.
//!
//! Everything else takes `now` as an argument, so the core is pure and tests
//! drive time explicitly. clippy's `disallowed-methods` enforces this. A
//! raise needs a trusted clock (docs/design.md, *Clock*); the kernel's NTP
//! state ([`KernelSync`], from `adjtimex(2)`) is the one source that always
//! exists, so it is read here beside the time itself.

use chrono::{DateTime, Utc};

/// What the kernel says about its clock's synchronisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSync {
    /// Synchronised by NTP (chrony, ntpd, systemd-timesyncd), with the
    /// kernel's maximum error estimate in microseconds.
    Synchronised { max_error_us: i64 },
    /// `adjtimex` reports `TIME_ERROR` / `STA_UNSYNC`: nothing disciplines
    /// the clock.
    Unsynchronised,
    /// The kernel could not be asked (not Linux, or the call failed).
    Unknown,
}

/// A source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// The kernel's synchronisation state for this clock.
    fn kernel_sync(&self) -> KernelSync;
}

/// The host's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn kernel_sync(&self) -> KernelSync {
        kernel_sync()
    }
}

/// Ask the kernel (read-only `adjtimex`, `modes = 0`).
#[cfg(target_os = "linux")]
pub fn kernel_sync() -> KernelSync {
    // SAFETY: a zeroed `timex` with `modes = 0` only reads the kernel's
    // state into the struct we own.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return KernelSync::Unknown;
    }
    if state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0 {
        KernelSync::Unsynchronised
    } else {
        KernelSync::Synchronised {
            max_error_us: tx.maxerror,
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn kernel_sync() -> KernelSync {
    KernelSync::Unknown
}

/// A clock that only moves when told to, for tests and simulations. Its
/// kernel state is synchronised unless a test says otherwise.
#[derive(Debug)]
pub struct ManualClock(
    std::sync::Mutex<DateTime<Utc>>,
    std::sync::Mutex<KernelSync>,
);

impl ManualClock {
    pub fn new(t: DateTime<Utc>) -> Self {
        ManualClock(
            std::sync::Mutex::new(t),
            std::sync::Mutex::new(KernelSync::Synchronised { max_error_us: 1000 }),
        )
    }

    /// Play the kernel: synchronised or not.
    pub fn set_kernel_sync(&self, s: KernelSync) {
        *self.1.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    pub fn advance(&self, d: chrono::TimeDelta) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kernel_sync(&self) -> KernelSync {
        *self.1.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_answers_adjtimex() {
        // This machine's kernel may or may not be synchronised; it must
        // answer one or the other on Linux, never "unknown".
        #[cfg(target_os = "linux")]
        assert_ne!(kernel_sync(), KernelSync::Unknown);
    }
}
