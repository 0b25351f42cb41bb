//! Decisions about a traffic target itself, outside any one rollout: which
//! pool is live (orientation), adopting a live pool, and holding the idle
//! pool at 0 while no rollout is active.
//!
//! The one decision a newcomer must know: these are the only places besides
//! [`super::step`] that decide a traffic move, and like it they are pure —
//! they take what was read and return a decision (with the words for the
//! audit log) or a refusal. The controller executes a decision through the
//! actuator of the target with a *decrease* permit, so the gate at the wire
//! ([`crate::traffic::gate`]) refuses any command of it that would move
//! traffic towards the non-live pool. Nothing here can raise a pool.

use std::collections::BTreeMap;

use crate::spec::{Orientation, Spec};

use super::DRIFT_TOLERANCE;

/// A reading: the share per endpoint, and the endpoints that did not
/// answer with why.
pub type Shares<'a> = (&'a BTreeMap<String, f64>, &'a BTreeMap<String, String>);

/// The pools as stored for a target (`live`, `idle` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPools<'a> {
    pub live: &'a str,
    pub idle: &'a str,
}

/// Why the orientation of a target cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrientationError {
    /// The stored pool names are not the spec's pools.
    #[error(
        "the target's recorded pools are live `{live}` / idle `{idle}`, but the spec's pools are \
         `{a}` and `{b}` — run `muhurat adopt FILE --live POOL` to record which of the spec's pools is live"
    )]
    Mismatch {
        live: String,
        idle: String,
        a: String,
        b: String,
    },
    /// Never rolled out, and the reading does not say which pool is live.
    #[error("{0}")]
    Unknown(String),
}

impl OrientationError {
    /// The stable error code for the API (409).
    pub fn code(&self) -> &'static str {
        "needs_adopt"
    }
}

/// The one function that decides which pool of a spec's target is the
/// canary. With stored pools, those (their names must be the spec's).
/// Before a target's first rollout, from a reading taken with the spec's
/// *first* pool as canary (`first_pool_shares`: that pool's share per
/// endpoint, and the endpoints that did not answer): the pool carrying all
/// traffic on every endpoint is live.
pub fn orientation(
    spec: &Spec,
    stored: Option<StoredPools<'_>>,
    first_pool_shares: Option<Shares<'_>>,
) -> Result<Orientation, OrientationError> {
    let [a, b] = spec.traffic.pools().clone();
    if let Some(p) = stored {
        return if p.idle == a.name && p.live == b.name {
            Ok(Orientation { canary: a, live: b })
        } else if p.idle == b.name && p.live == a.name {
            Ok(Orientation { canary: b, live: a })
        } else {
            Err(OrientationError::Mismatch {
                live: p.live.to_string(),
                idle: p.idle.to_string(),
                a: a.name,
                b: b.name,
            })
        };
    }
    let target = spec.traffic.target_id();
    let Some((shares, unreachable)) = first_pool_shares else {
        return Err(OrientationError::Unknown(format!(
            "target {target} has no recorded pools and was not read"
        )));
    };
    if let Some((ep, e)) = unreachable.iter().next() {
        return Err(OrientationError::Unknown(format!(
            "cannot tell which pool of {target} is live: endpoint {ep} did not answer ({e})"
        )));
    }
    if shares.is_empty() {
        return Err(OrientationError::Unknown(format!(
            "no endpoint of {target} answered; cannot tell which pool is live"
        )));
    }
    if shares.values().all(|s| *s <= DRIFT_TOLERANCE) {
        Ok(Orientation { canary: a, live: b })
    } else if shares.values().all(|s| *s >= 100.0 - DRIFT_TOLERANCE) {
        Ok(Orientation { canary: b, live: a })
    } else {
        Err(OrientationError::Unknown(format!(
            "both pools of {target} carry traffic ({}); run `muhurat adopt FILE --live POOL` first",
            shares
                .iter()
                .map(|(e, s)| format!("{e}: {}={s:.1}%", a.name))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// What adopting a live pool does.
#[derive(Debug, Clone, PartialEq)]
pub struct Adopt {
    pub orientation: Orientation,
    /// Write the other pool to 0 (a decrease of it); `false` when it is at 0
    /// on every endpoint already and only the record changes.
    pub write_zero: bool,
    /// For the audit log.
    pub why: String,
}

/// `adopt --live POOL` (docs/design.md §3 *Pools*): allowed at any time only as a
/// decrease of the other pool towards the pool that carries the most — the
/// named pool must carry more than half of the traffic on every endpoint,
/// and every endpoint must have answered. Making live a pool that carries
/// less is a raise of that pool: refused outright (that is what a rollout
/// is for). `other_shares` are the other pool's shares per endpoint.
pub fn adopt(
    spec: &Spec,
    stored: Option<StoredPools<'_>>,
    live: &str,
    other_shares: &BTreeMap<String, f64>,
    unreachable: &BTreeMap<String, String>,
    by: &str,
) -> Result<Adopt, String> {
    let [a, b] = spec.traffic.pools().clone();
    let (live_pool, other) = if live == a.name {
        (a, b)
    } else if live == b.name {
        (b, a)
    } else {
        return Err(format!(
            "`live`: `{live}` is not a pool of this spec ({} or {})",
            a.name, b.name
        ));
    };
    let target = spec.traffic.target_id();
    if let Some((ep, e)) = unreachable.iter().next() {
        return Err(format!(
            "endpoint {ep} of {target} did not answer ({e}); adopt needs every endpoint — nothing was written"
        ));
    }
    if other_shares.is_empty() {
        return Err(format!(
            "no endpoint of {target} answered; nothing was written"
        ));
    }
    let carries_less: Vec<String> = other_shares
        .iter()
        .filter(|(_, s)| **s >= 50.0)
        .map(|(e, s)| format!("{e}: {} {:.1}%", live_pool.name, 100.0 - s))
        .collect();
    if !carries_less.is_empty() {
        return Err(format!(
            "refused: {} does not carry most of the traffic of {target} ({}); making it live would \
             move traffic onto it, which only a rollout may do, inside a permitted window — \
             adopt the pool that carries the most, then start a rollout. Nothing was written.",
            live_pool.name,
            carries_less.join(", ")
        ));
    }
    let write_zero = other_shares.values().any(|s| *s > 0.0);
    // With pools on record, taking traffic off the recorded live pool
    // moves it onto the other one: only a rollout may do that. Recording a
    // pool that already carries everything moves nothing and is allowed.
    if let Some(p) = stored
        && p.live != live_pool.name
        && write_zero
    {
        return Err(format!(
            "refused: {} is the recorded live pool of {target}; adopting {} would take traffic              off it ({}), which only a rollout may do, inside a permitted window. Move the              traffic by hand first if you mean to (then adopt records it). Nothing was written.",
            p.live,
            live_pool.name,
            other_shares
                .iter()
                .map(|(e, s)| format!("{e}: {} {s:.1}%", p.live))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let why = if write_zero {
        format!(
            "{by} adopted {} as the live pool of {target}; {} set to 0 (from {})",
            live_pool.name,
            other.name,
            other_shares
                .iter()
                .map(|(e, s)| format!("{e}: {s:.1}%"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "{by} adopted {} as the live pool of {target}; {} already at 0 everywhere",
            live_pool.name, other.name
        )
    };
    Ok(Adopt {
        orientation: Orientation {
            canary: other,
            live: live_pool,
        },
        write_zero,
        why,
    })
}

/// What to do about an idle pool that carries traffic while no rollout of
/// its target is active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Set the idle pool back to 0 (a decrease of it), with why.
    ToZero { why: String },
    /// It carries most of the traffic somewhere: the record may be wrong
    /// (or a person moved traffic on purpose). Moving most of the traffic is
    /// never done automatically; a person must adopt.
    Alert { why: String },
}

/// The idle-pool hold (docs/design.md §3 *Drift*): `idle_shares` as read with the
/// idle pool as canary.
pub fn hold_idle(target: &str, idle: &str, idle_shares: &BTreeMap<String, f64>) -> Option<Hold> {
    let above: Vec<(&String, &f64)> = idle_shares
        .iter()
        .filter(|(_, s)| **s > DRIFT_TOLERANCE)
        .collect();
    if above.is_empty() {
        return None;
    }
    let list = above
        .iter()
        .map(|(e, s)| format!("{e}: {s:.1}%"))
        .collect::<Vec<_>>()
        .join(", ");
    if above.iter().any(|(_, s)| **s >= 50.0) {
        return Some(Hold::Alert {
            why: format!(
                "idle pool {idle} of {target} carries most of the traffic with no active rollout \
                 ({list}); not moved automatically — if it should be live, run `muhurat adopt FILE \
                 --live {idle}`; otherwise set it to 0 by hand"
            ),
        });
    }
    Some(Hold::ToZero {
        why: format!(
            "idle pool {idle} of {target} carries traffic with no active rollout ({list}) — set back to 0"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let yaml = "name: web\ncalendar: nse\ntraffic:\n  haproxy:\n    endpoints: [\"unix:/a.sock\"]\n    backend: web\n    pools: {blue: [b1], green: [g1]}\nsteps:\n  - set_weight: 100\n";
        let cal = crate::calendar::parse(
            "nse.yaml",
            "name: nse\nversion: \"1\"\ntimezone: Asia/Kolkata\nvalid_from: 2026-01-01\nvalid_until: 2026-12-31\nsegments:\n  equity: {days: [mon], open: \"09:00\", close: \"15:30\"}\n",
        )
        .unwrap();
        crate::spec::load("spec.yaml", yaml, |_| Ok(cal.clone()))
            .unwrap()
            .spec
    }

    fn shares(v: &[(&str, f64)]) -> BTreeMap<String, f64> {
        v.iter().map(|(e, s)| (e.to_string(), *s)).collect()
    }

    #[test]
    fn stored_pool_names_that_are_not_the_specs_need_adopt() {
        let s = spec();
        let e = orientation(
            &s,
            Some(StoredPools {
                live: "red",
                idle: "green",
            }),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, OrientationError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("adopt"), "{e}");
        let o = orientation(
            &s,
            Some(StoredPools {
                live: "green",
                idle: "blue",
            }),
            None,
        )
        .unwrap();
        assert_eq!(
            (o.canary.name.as_str(), o.live.name.as_str()),
            ("blue", "green")
        );
    }

    #[test]
    fn first_rollout_orientation_comes_from_the_weights_not_the_spec_order() {
        let s = spec();
        let none = BTreeMap::new();
        // blue (the first pool) carries everything: blue is live.
        let o = orientation(&s, None, Some((&shares(&[("a", 100.0)]), &none))).unwrap();
        assert_eq!(o.live.name, "blue");
        let o = orientation(&s, None, Some((&shares(&[("a", 0.0)]), &none))).unwrap();
        assert_eq!(o.live.name, "green");
        assert!(orientation(&s, None, Some((&shares(&[("a", 30.0)]), &none))).is_err());
        let down = [("b".to_string(), "refused".to_string())].into();
        assert!(orientation(&s, None, Some((&shares(&[("a", 0.0)]), &down))).is_err());
    }

    #[test]
    fn adopt_that_would_move_traffic_onto_the_idle_pool_is_refused() {
        let s = spec();
        let none = BTreeMap::new();
        // green carries 0%: adopting it would move all traffic onto it.
        let e = adopt(&s, None, "green", &shares(&[("a", 100.0)]), &none, "ravi").unwrap_err();
        assert!(e.contains("refused"), "{e}");
        // blue carries 90%: adopting it sets green (10%) to 0.
        let d = adopt(&s, None, "blue", &shares(&[("a", 10.0)]), &none, "ravi").unwrap();
        assert!(d.write_zero);
        assert_eq!(d.orientation.canary.name, "green");
        // a hole in the reading: refused.
        let down = [("b".to_string(), "timeout".to_string())].into();
        assert!(adopt(&s, None, "blue", &shares(&[("a", 10.0)]), &down, "ravi").is_err());
    }

    /// Review finding: with blue recorded live and green at 51% by hand,
    /// adopting green wrote blue to 0 — all traffic onto the non-live pool
    /// at any hour.
    #[test]
    fn adopt_never_takes_traffic_off_the_recorded_live_pool() {
        let s = spec();
        let none = BTreeMap::new();
        let stored = Some(StoredPools {
            live: "blue",
            idle: "green",
        });
        // other_shares are blue's (adopting green): 49% still on blue.
        let e = adopt(&s, stored, "green", &shares(&[("a", 49.0)]), &none, "ravi").unwrap_err();
        assert!(e.contains("recorded live pool"), "{e}");
        // Green carrying everything already: recording it moves nothing.
        let d = adopt(&s, stored, "green", &shares(&[("a", 0.0)]), &none, "ravi").unwrap();
        assert!(!d.write_zero);
        // Adopting the recorded live pool: a decrease of green, allowed.
        let d = adopt(&s, stored, "blue", &shares(&[("a", 20.0)]), &none, "ravi").unwrap();
        assert!(d.write_zero);
    }

    #[test]
    fn idle_hold_never_moves_most_of_the_traffic() {
        assert_eq!(hold_idle("t", "green", &shares(&[("a", 0.0)])), None);
        assert!(matches!(
            hold_idle("t", "green", &shares(&[("a", 5.0)])),
            Some(Hold::ToZero { .. })
        ));
        assert!(matches!(
            hold_idle("t", "green", &shares(&[("a", 100.0)])),
            Some(Hold::Alert { .. })
        ));
    }
}
