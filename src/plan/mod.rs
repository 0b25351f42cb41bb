//! The projected timeline of a spec (docs/design.md §6 `plan`).
//!
//! The plan runs the step rules on a virtual clock under the kindest
//! assumptions — every check passes at every evaluation, approvals and
//! resumes come the instant they are asked for, a `set_weight` is confirmed
//! instantly — so it is the *earliest* the rollout can finish. A step that
//! cannot complete before the calendar's coverage ends, and every step after
//! it, has no times: muhurat never plans into time it knows nothing about.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::calendar::Calendar;
use crate::localtime;
use crate::spec::{Evidence, Spec, Step};
use crate::windows::{self, Interval, normalize};

/// What a step of the plan does, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    SetWeight {
        weight: u32,
        at: Option<DateTime<Utc>>,
    },
    Bake {
        start: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    },
    Approval {
        at: Option<DateTime<Utc>>,
    },
    Pause {
        at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub rollout: String,
    pub calendar_name: String,
    pub calendar_version: String,
    pub from: DateTime<Utc>,
    pub steps: Vec<Planned>,
    pub complete_at: Option<DateTime<Utc>>,
    /// The calendar's `provisional_from`, if any.
    pub provisional_from: Option<chrono::NaiveDate>,
    /// A step with a time at or after this instant rests on provisional
    /// calendar data: `provisional_from` 00:00 less the spec's
    /// `before_open` guard and `min_remaining` (a raise needs that much of
    /// its window, which a provisional session may end).
    pub provisional_after: Option<DateTime<Utc>>,
}

/// The evidence rules a raise after the first must satisfy in the plan.
struct Evidence_ {
    interval: TimeDelta,
    min_passes: u32,
    always: bool,
}

/// Project `spec` from `from`. `freeze` is the server's global freeze (empty
/// offline).
pub fn plan(spec: &Spec, cal: &Calendar, from: DateTime<Utc>, freeze: &[Interval]) -> Plan {
    let horizon = cal.coverage().end;
    let range = Interval::new(from, horizon.max(from));
    let rules = spec.window_rules();
    let permitted = windows::permitted(&rules, cal, range, freeze);

    let evidence = spec
        .analysis
        .as_ref()
        .filter(|a| !a.checks.is_empty())
        .map(|a| Evidence_ {
            interval: a.interval,
            min_passes: a.min_passes,
            always: a.evidence == Evidence::Always,
        });
    // Unwidened sessions of the spec's segments: where evaluations count as
    // evidence under `evidence: sessions`. Start a day early: a session that
    // began before `from` still contains evaluations after it.
    let (first, last) = (
        localtime::date_of(cal.timezone, from) - TimeDelta::days(1),
        cal.valid_until,
    );
    let evidence_sessions = if evidence.as_ref().is_some_and(|e| !e.always) {
        let mut v = Vec::new();
        for name in &spec.segments {
            if let Some(seg) = cal.segment(name) {
                v.extend(
                    cal.sessions(seg, first, last)
                        .into_iter()
                        .map(|s| s.interval),
                );
            }
        }
        normalize(v)
    } else {
        Vec::new()
    };

    let mut out = Vec::with_capacity(spec.steps.len());
    let mut t = Some(from);
    let mut last_weight_at: Option<DateTime<Utc>> = None;
    let ok = |x: DateTime<Utc>| (x <= horizon).then_some(x);
    for step in &spec.steps {
        let planned = match step {
            Step::SetWeight(weight) => {
                let at = t.and_then(|now| {
                    let mut earliest = now;
                    if let (Some(ev), Some(t0)) = (&evidence, last_weight_at) {
                        earliest =
                            earliest.max(nth_evaluation(ev, t0, &evidence_sessions, horizon)?);
                    }
                    first_raise_at(&permitted, earliest, spec.windows.min_remaining)
                });
                if at.is_some() {
                    last_weight_at = at;
                }
                t = at;
                Planned::SetWeight {
                    weight: *weight,
                    at,
                }
            }
            Step::BakeDuration(d) => {
                let start = t;
                let until = start.and_then(|s| ok(s + *d));
                t = until;
                Planned::Bake {
                    start: until.and(start),
                    until,
                }
            }
            Step::BakeSessions { sessions, segment } => {
                let start = t;
                let until = start.and_then(|s| {
                    bake_sessions_until(
                        cal,
                        segment,
                        *sessions,
                        s,
                        evidence.as_ref().map(|e| (e, last_weight_at)),
                    )
                });
                t = until;
                Planned::Bake {
                    start: until.and(start),
                    until,
                }
            }
            Step::Approval { .. } => {
                t = t.and_then(ok);
                Planned::Approval { at: t }
            }
            Step::Pause => {
                t = t.and_then(ok);
                Planned::Pause { at: t }
            }
        };
        out.push(planned);
    }
    Plan {
        rollout: spec.name.clone(),
        calendar_name: cal.name.clone(),
        calendar_version: cal.version.to_string(),
        from,
        steps: out,
        complete_at: t,
        provisional_from: cal.provisional_from,
        provisional_after: cal
            .provisional_start()
            .map(|p| p - spec.windows.before_open - spec.windows.min_remaining),
    }
}

/// The earliest `t ≥ earliest` inside a permitted interval with at least
/// `min_remaining` of it left.
pub fn first_raise_at(
    permitted: &[Interval],
    earliest: DateTime<Utc>,
    min_remaining: TimeDelta,
) -> Option<DateTime<Utc>> {
    permitted.iter().find_map(|w| {
        let t = w.start.max(earliest);
        (t < w.end && w.end - t >= min_remaining).then_some(t)
    })
}

fn div_ceil(a: TimeDelta, b: TimeDelta) -> i64 {
    let (a, b) = (a.num_milliseconds(), b.num_milliseconds());
    a.div_euclid(b) + i64::from(a.rem_euclid(b) != 0)
}

/// The instant of the `min_passes`-th counted evaluation after `t0`
/// (evaluations at `t0 + k·interval`, k ≥ 1).
fn nth_evaluation(
    ev: &Evidence_,
    t0: DateTime<Utc>,
    sessions: &[Interval],
    horizon: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let n = i64::from(ev.min_passes);
    if ev.always {
        let at = t0 + ev.interval * n as i32;
        return (at <= horizon).then_some(at);
    }
    let mut seen = 0i64;
    for s in sessions.iter().filter(|s| s.end > t0) {
        let k_lo = div_ceil(s.start - t0, ev.interval).max(1);
        let k_hi = div_ceil(s.end - t0, ev.interval) - 1;
        if k_hi < k_lo {
            continue;
        }
        let here = k_hi - k_lo + 1;
        if seen + here >= n {
            let k = k_lo + (n - seen - 1);
            return Some(t0 + ev.interval * k as i32);
        }
        seen += here;
    }
    None
}

/// Does some evaluation `t0 + k·interval` (k ≥ 1) fall inside `iv`?
fn evaluation_in(interval: TimeDelta, t0: DateTime<Utc>, iv: Interval) -> bool {
    if iv.end <= t0 {
        return false;
    }
    let k = div_ceil(iv.start - t0, interval).max(1);
    t0 + interval * (k as i32) < iv.end
}

/// The end of a `bake: {sessions: n, segment}` that starts at `start`: the
/// last close of `segment` on the n-th counted trading day.
fn bake_sessions_until(
    cal: &Calendar,
    segment: &str,
    n: u32,
    start: DateTime<Utc>,
    checks: Option<(&Evidence_, Option<DateTime<Utc>>)>,
) -> Option<DateTime<Utc>> {
    let seg = cal.segment(segment)?;
    let first = localtime::date_of(cal.timezone, start) - TimeDelta::days(1);
    let sessions = cal.sessions(seg, first, cal.valid_until);
    let mut counted = 0u32;
    let mut i = 0;
    while i < sessions.len() {
        let date = sessions[i].date;
        let mut j = i;
        while j < sessions.len() && sessions[j].date == date {
            j += 1;
        }
        let day = &sessions[i..j];
        i = j;
        let open = day.iter().map(|s| s.interval.start).min()?;
        let close = day.iter().map(|s| s.interval.end).max()?;
        if open < start {
            continue;
        }
        let counts = match checks {
            None => true,
            Some((_, None)) => false,
            Some((ev, Some(t0))) => day
                .iter()
                .any(|s| evaluation_in(ev.interval, t0, s.interval)),
        };
        if counts {
            counted += 1;
            if counted == n {
                return (close <= cal.coverage().end).then_some(close);
            }
        }
    }
    None
}

impl Planned {
    /// The latest time of this step, if planned.
    pub fn last_time(&self) -> Option<DateTime<Utc>> {
        match self {
            Planned::SetWeight { at, .. } | Planned::Approval { at } | Planned::Pause { at } => *at,
            Planned::Bake { until, .. } => *until,
        }
    }
}

impl Plan {
    /// Does step `i` rest on provisional calendar data? Steps run in order,
    /// so a step is provisional when its own latest time reaches
    /// [`Plan::provisional_after`]; a step without times is not planned at
    /// all and so not "provisional".
    pub fn is_provisional(&self, i: usize) -> bool {
        match (
            self.provisional_after,
            self.steps.get(i).and_then(Planned::last_time),
        ) {
            (Some(p), Some(t)) => t >= p,
            _ => false,
        }
    }

    /// The `plan -o json` document, instants in `tz`'s offsets.
    pub fn to_json(&self, tz: Tz) -> Value {
        let f = |t: &Option<DateTime<Utc>>| t.map(|t| localtime::rfc3339(tz, t));
        let steps: Vec<Value> = self
            .steps
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let mut v = match s {
                    Planned::SetWeight { weight, at } => {
                        json!({"index": index, "type": "set_weight", "weight": weight, "at": f(at)})
                    }
                    Planned::Bake { start, until } => {
                        json!({"index": index, "type": "bake", "start": f(start), "until": f(until)})
                    }
                    Planned::Approval { at } => {
                        json!({"index": index, "type": "approval", "at": f(at)})
                    }
                    Planned::Pause { at } => {
                        json!({"index": index, "type": "pause", "at": f(at)})
                    }
                };
                v["provisional"] = json!(self.is_provisional(index));
                v
            })
            .collect();
        json!({
            "rollout": self.rollout,
            "calendar": {
                "name": self.calendar_name,
                "version": self.calendar_version,
                "provisional_from": self.provisional_from.map(|d| d.to_string()),
            },
            "from": localtime::rfc3339(tz, self.from),
            "steps": steps,
            "complete_at": f(&self.complete_at),
        })
    }
}

#[cfg(test)]
mod tests;
