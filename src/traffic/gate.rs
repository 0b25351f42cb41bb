//! The gate at the wire: one check, immediately before every command a
//! traffic backend sends, that enforces the safety rules whatever code path
//! asked for the write.
//!
//! The one decision a newcomer must know: **backends do not trust their
//! callers.** Every write (`apply`, `rollback`, `prepare`) carries a
//! [`Permit`], and before each single command — an HAProxy `set weight`,
//! `set server … state`, a Consul KV `PUT` — the backend works out the canary
//! share on that endpoint after the command and asks [`Permit::admit`]. The
//! invariants it enforces (docs/design.md §Safety, "W" and "O"):
//!
//! - **W — no move towards the non-live pool without a live raise.** A
//!   command that leaves the canary (the pool that is not the target's
//!   recorded live pool) with a larger share on an endpoint than that
//!   endpoint had when the write began is sent only under a
//!   [`Permit::Raise`], which only the controller's actuator builds from a
//!   raise the engine decided and committed; and only if, *at that instant*,
//!   the raise's deadline is further away than the command's own timeout,
//!   the global freeze is off and the clock is trusted
//!   ([`GateWorld::raise_blocked`]). A raise never writes above its target
//!   share (plus the rounding the integer weights need).
//! - **O — the operator's hand wins.** A [`Permit::Decrease`] (rollback,
//!   abort, revert of an expired raise, drift correction, idle-pool hold,
//!   adopt, preparing drained servers) never raises the canary on any
//!   endpoint, so a share a person or a reload lowered is never written back
//!   up by a decrease that raced with them.
//!
//! "The share when the write began" is per endpoint and per write: the
//! state the backend read just before it, tracked command by command. So a
//! decrease may pass through a transient dip (live weight raised before the
//! canary's is) but never above where the endpoint was.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Slack for float arithmetic on shares computed from integer weights.
const SHARE_EPSILON: f64 = 1e-6;

/// How far above its target share a raise may write: integer HAProxy
/// weights rarely give the exact percentage, and the engine treats anything
/// within this of the confirmed share as no drift (`DRIFT_TOLERANCE`).
pub const RAISE_ROUNDING: f64 = 0.5;

/// What the gate needs to know about the world at the instant of a command.
pub trait GateWorld: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Why no raise may be written right now (the global freeze is on, the
    /// clock is not trusted), or `None`.
    fn raise_blocked(&self) -> Option<String>;

    /// Why no command at all may be sent now (this server lost its
    /// one-server lock), or `None`.
    fn not_acting(&self) -> Option<String> {
        None
    }
}

/// The authority a write carries down to the wire.
#[derive(Clone)]
pub enum Permit {
    /// May lower the canary share, never raise it above where each endpoint
    /// was when the write began. With a `world`, no command is sent while
    /// it says this server is not acting.
    Decrease {
        why: String,
        world: Option<Arc<dyn GateWorld>>,
    },
    /// A raise the engine decided and committed (`rollout`, write `version`)
    /// to `to`%, valid until `deadline` while `world` allows raises.
    /// `landed`: per endpoint, the share an earlier attempt of this raise
    /// was read back at — an endpoint now below it was lowered by someone
    /// since, and is never raised back by a retry.
    Raise {
        rollout: String,
        version: u64,
        to: u32,
        deadline: DateTime<Utc>,
        world: Arc<dyn GateWorld>,
        landed: std::collections::BTreeMap<String, f64>,
    },
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Permit::Decrease { why, .. } => write!(f, "Permit::Decrease({why})"),
            Permit::Raise {
                rollout,
                version,
                to,
                deadline,
                ..
            } => write!(
                f,
                "Permit::Raise({rollout} v{version} to {to}% until {deadline})"
            ),
        }
    }
}

/// A command the gate refused; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gate refused `{command}` on {endpoint}: {why}")]
pub struct GateRefusal {
    pub endpoint: String,
    pub command: String,
    pub why: String,
}

impl Permit {
    /// A decrease for tools and tests (no world: nothing can stop it).
    pub fn decrease(why: impl Into<String>) -> Permit {
        Permit::Decrease {
            why: why.into(),
            world: None,
        }
    }

    pub fn is_raise(&self) -> bool {
        matches!(self, Permit::Raise { .. })
    }

    /// May `command` be sent to `endpoint` now? `baseline` is the canary
    /// share on that endpoint when this write began, `after` the share the
    /// command leaves, `timeout` the longest the command may take to reach
    /// the endpoint (a raise must land before its deadline).
    pub fn admit(
        &self,
        endpoint: &str,
        command: &str,
        baseline: f64,
        after: f64,
        timeout: Duration,
    ) -> Result<(), GateRefusal> {
        let refuse = |why: String| GateRefusal {
            endpoint: endpoint.to_string(),
            command: command.to_string(),
            why,
        };
        let world = match self {
            Permit::Decrease { world, .. } => world.as_ref(),
            Permit::Raise { world, .. } => Some(world),
        };
        if let Some(why) = world.and_then(|w| w.not_acting()) {
            return Err(refuse(format!("this server is not acting: {why}")));
        }
        if after <= baseline + SHARE_EPSILON {
            return Ok(());
        }
        match self {
            Permit::Decrease { why, .. } => Err(refuse(format!(
                "it would take the canary from {baseline:.2}% to {after:.2}%, and this write ({why}) \
                 may only lower it — a person or a reload lowered it since it was decided?"
            ))),
            Permit::Raise {
                to,
                deadline,
                world,
                landed,
                ..
            } => {
                if let Some(l) = landed.get(endpoint)
                    && baseline < l - RAISE_ROUNDING
                {
                    return Err(refuse(format!(
                        "this raise had landed at {l:.2}% here and the endpoint now reads                          {baseline:.2}%: someone lowered it (a person, a reload) — not raised back"
                    )));
                }
                if after > f64::from(*to) + RAISE_ROUNDING {
                    return Err(refuse(format!(
                        "it would take the canary to {after:.2}%, above the {to}% this raise may write"
                    )));
                }
                let now = world.now();
                let margin = TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
                if now + margin >= *deadline {
                    return Err(refuse(format!(
                        "the raise to {to}% must land before its deadline {deadline}, and the \
                         command may take up to {timeout:?} (now {now})"
                    )));
                }
                if let Some(why) = world.raise_blocked() {
                    return Err(refuse(format!("no raise now: {why}")));
                }
                Ok(())
            }
        }
    }
}

/// Worlds for tools and tests that drive a backend outside the controller.
pub mod testing {
    use super::*;

    /// The system clock, no freeze, a trusted clock: what an adapter test
    /// writing a real HAProxy needs for a raise. Production raises come
    /// only from the controller's actuator, whose world is the controller.
    #[derive(Debug, Default)]
    pub struct OpenWorld;

    impl GateWorld for OpenWorld {
        fn now(&self) -> DateTime<Utc> {
            use crate::clock::Clock;
            crate::clock::SystemClock.now()
        }
        fn raise_blocked(&self) -> Option<String> {
            None
        }
    }

    /// A raise permit to `to`% valid for an hour, for adapter tests and
    /// benchmarks.
    pub fn raise(to: u32) -> Permit {
        let world = Arc::new(OpenWorld);
        Permit::Raise {
            rollout: "test".into(),
            version: 0,
            to,
            deadline: world.now() + TimeDelta::hours(1),
            world,
            landed: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct World {
        now: Mutex<DateTime<Utc>>,
        blocked: Mutex<Option<String>>,
    }

    impl GateWorld for World {
        fn now(&self) -> DateTime<Utc> {
            *self.now.lock().unwrap()
        }
        fn raise_blocked(&self) -> Option<String> {
            self.blocked.lock().unwrap().clone()
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn raise(world: Arc<World>, deadline: &str) -> Permit {
        Permit::Raise {
            rollout: "r".into(),
            version: 2,
            to: 10,
            deadline: t(deadline),
            world,
            landed: Default::default(),
        }
    }

    const SEC: Duration = Duration::from_secs(7);

    #[test]
    fn a_decrease_never_raises_an_endpoint_above_where_it_was() {
        let p = Permit::decrease("revert");
        assert!(p.admit("ep", "set weight b/g1 0", 10.0, 0.0, SEC).is_ok());
        assert!(p.admit("ep", "set weight b/b1 9", 10.0, 10.0, SEC).is_ok());
        let e = p
            .admit("ep", "set weight b/g1 1", 0.0, 5.0, SEC)
            .unwrap_err();
        assert!(e.why.contains("may only lower"), "{e}");
    }

    #[test]
    fn a_raise_is_checked_against_its_deadline_at_every_command() {
        let w = Arc::new(World {
            now: Mutex::new(t("2026-12-07T18:59:50Z")),
            blocked: Mutex::new(None),
        });
        let p = raise(w.clone(), "2026-12-07T19:00:00Z");
        // 10 s left, a 7 s command: sent.
        assert!(p.admit("ep", "set weight b/g1 1", 5.0, 10.0, SEC).is_ok());
        // 3 s later only 7 s are left: the same command is refused.
        *w.now.lock().unwrap() = t("2026-12-07T18:59:53Z");
        let e = p
            .admit("ep", "set weight b/g2 1", 5.0, 10.0, SEC)
            .unwrap_err();
        assert!(e.why.contains("deadline"), "{e}");
        // A command that does not raise still goes (finishing a decrease).
        assert!(p.admit("ep", "set weight b/b1 9", 5.0, 4.0, SEC).is_ok());
    }

    #[test]
    fn a_raise_is_refused_while_frozen_or_the_clock_is_untrusted() {
        let w = Arc::new(World {
            now: Mutex::new(t("2026-12-07T18:00:00Z")),
            blocked: Mutex::new(Some("global freeze is on".into())),
        });
        let p = raise(w.clone(), "2026-12-07T19:00:00Z");
        let e = p
            .admit("ep", "set weight b/g1 1", 5.0, 10.0, SEC)
            .unwrap_err();
        assert!(e.why.contains("freeze"), "{e}");
        *w.blocked.lock().unwrap() = None;
        assert!(p.admit("ep", "set weight b/g1 1", 5.0, 10.0, SEC).is_ok());
    }

    #[test]
    fn a_retried_raise_never_raises_an_endpoint_someone_lowered_since() {
        let w = Arc::new(World {
            now: Mutex::new(t("2026-12-07T18:00:00Z")),
            blocked: Mutex::new(None),
        });
        let p = Permit::Raise {
            rollout: "r".into(),
            version: 2,
            to: 10,
            deadline: t("2026-12-07T19:00:00Z"),
            world: w,
            landed: [("a".to_string(), 10.0)].into(),
        };
        // a had 10% from the first attempt; a person set it to 0.
        let e = p
            .admit("a", "set weight b/g1 1", 0.0, 10.0, SEC)
            .unwrap_err();
        assert!(e.why.contains("lowered"), "{e}");
        // b never got it: the retry may raise b.
        assert!(p.admit("b", "set weight b/g1 1", 0.0, 10.0, SEC).is_ok());
    }

    #[test]
    fn a_raise_never_writes_above_its_target() {
        let w = Arc::new(World {
            now: Mutex::new(t("2026-12-07T18:00:00Z")),
            blocked: Mutex::new(None),
        });
        let p = raise(w, "2026-12-07T19:00:00Z");
        assert!(p.admit("ep", "c", 5.0, 10.4, SEC).is_ok());
        assert!(p.admit("ep", "c", 5.0, 50.0, SEC).is_err());
    }
}
