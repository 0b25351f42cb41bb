//! Permitted windows: `permitted = allowed − blocked − denied` (docs/design.md §3).
//!
//! - allowed: the union of the spec's `allow` windows, or all time if none;
//! - blocked: every session of the spec's segments and every calendar
//!   blackout, widened by the guard, and everything outside coverage;
//! - denied: the spec's `deny` windows, plus the server's global freeze.
//!
//! All of it is computed for a range `[from, to)` with look-back (a session or
//! a cron window that began earlier still counts) and clipped to the range.
//! Every blocked piece keeps a label so a person can be told what closes a
//! window; the fast path used by plans drops the labels.

pub mod cron;
mod interval;

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::calendar::{Blackout, Calendar, Rule};
pub use cron::Cron;
pub use interval::{Interval, intersect, normalize, subtract};

/// A recurring window: starts at every cron instant, lasts `duration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CronWindow {
    pub name: String,
    pub cron: Cron,
    #[serde(serialize_with = "crate::spec::ser_secs")]
    pub duration: TimeDelta,
}

/// A deny window: fixed instants or recurring.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DenyRule {
    Fixed {
        name: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    Recurring(CronWindow),
}

impl DenyRule {
    pub fn name(&self) -> &str {
        match self {
            DenyRule::Fixed { name, .. } => name,
            DenyRule::Recurring(w) => &w.name,
        }
    }
}

/// The window rules of one spec, with the segments whose sessions block.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules<'a> {
    pub timezone: Tz,
    pub before_open: TimeDelta,
    pub after_close: TimeDelta,
    pub allow: &'a [CronWindow],
    pub deny: &'a [DenyRule],
    pub segments: &'a [String],
}

/// Why an instant is not permitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Block<'a> {
    /// A session of `segment`, widened by the guard.
    Session {
        segment: &'a str,
        rule: Rule<'a>,
    },
    Blackout(&'a Blackout),
    Deny(&'a str),
    /// Outside the calendar's coverage.
    Coverage,
    /// The server's global freeze.
    Freeze,
}

/// A blocked stretch and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked<'a> {
    pub interval: Interval,
    pub block: Block<'a>,
}

fn cron_windows(ws: &[CronWindow], tz: Tz, range: Interval) -> Vec<(Interval, &CronWindow)> {
    let mut out = Vec::new();
    for w in ws {
        for s in w
            .cron
            .starts_between(tz, range.start - w.duration, range.end)
        {
            let iv = Interval::new(s, s + w.duration);
            if iv.overlaps(&range) {
                out.push((iv, w));
            }
        }
    }
    out
}

/// Allowed time in `range`: the union of allow windows, or the whole range.
pub fn allowed(rules: &Rules, range: Interval) -> Vec<Interval> {
    if rules.allow.is_empty() {
        return vec![range];
    }
    // Overlapping windows of one rule are merged as they are generated, so
    // a rule like `*/1 * * * *` for 1h keeps one interval per run instead
    // of one per minute.
    let mut v = Vec::new();
    for w in rules.allow {
        let mut run: Option<Interval> = None;
        for s in w
            .cron
            .starts_between(rules.timezone, range.start - w.duration, range.end)
        {
            let iv = Interval::new(s, s + w.duration);
            if !iv.overlaps(&range) {
                continue;
            }
            match &mut run {
                Some(r) if iv.start <= r.end => r.end = r.end.max(iv.end),
                _ => v.extend(run.replace(iv)),
            }
        }
        v.extend(run);
    }
    intersect(&normalize(v), &[range])
}

/// Every blocked or denied stretch overlapping `range`, labelled, unmerged.
/// `freeze` is the server's global freeze, if on (from when it was switched on).
pub fn blocked<'a>(
    rules: &Rules<'a>,
    cal: &'a Calendar,
    range: Interval,
    freeze: &[Interval],
) -> Vec<Blocked<'a>> {
    let mut out = Vec::new();
    let guard = rules.before_open.max(rules.after_close);
    let (first, last) = cal.dates_around(range.start, range.end, guard);
    for name in rules.segments {
        let Some(seg) = cal.segment(name) else {
            continue;
        };
        for s in cal.sessions(seg, first, last) {
            let iv = Interval::new(
                s.interval.start - rules.before_open,
                s.interval.end + rules.after_close,
            );
            if iv.overlaps(&range) {
                out.push(Blocked {
                    interval: iv,
                    block: Block::Session {
                        segment: s.segment,
                        rule: s.rule,
                    },
                });
            }
        }
    }
    for (iv, b) in cal.blackouts_between(first, last) {
        let iv = Interval::new(iv.start - rules.before_open, iv.end + rules.after_close);
        if iv.overlaps(&range) {
            out.push(Blocked {
                interval: iv,
                block: Block::Blackout(b),
            });
        }
    }
    let cov = cal.coverage();
    if range.start < cov.start {
        out.push(Blocked {
            interval: Interval::new(range.start, cov.start.min(range.end)),
            block: Block::Coverage,
        });
    }
    if range.end > cov.end {
        out.push(Blocked {
            interval: Interval::new(cov.end.max(range.start), range.end),
            block: Block::Coverage,
        });
    }
    for d in rules.deny {
        match d {
            DenyRule::Fixed { name, from, to } => {
                let iv = Interval::new(*from, *to);
                if iv.overlaps(&range) {
                    out.push(Blocked {
                        interval: iv,
                        block: Block::Deny(name),
                    });
                }
            }
            DenyRule::Recurring(w) => {
                for (iv, w) in cron_windows(std::slice::from_ref(w), rules.timezone, range) {
                    out.push(Blocked {
                        interval: iv,
                        block: Block::Deny(&w.name),
                    });
                }
            }
        }
    }
    for f in freeze {
        if f.overlaps(&range) {
            out.push(Blocked {
                interval: *f,
                block: Block::Freeze,
            });
        }
    }
    out
}

/// Permitted intervals in `range`, sorted and merged.
pub fn permitted(
    rules: &Rules,
    cal: &Calendar,
    range: Interval,
    freeze: &[Interval],
) -> Vec<Interval> {
    if range.is_empty() {
        return Vec::new();
    }
    let cuts = normalize(
        blocked(rules, cal, range, freeze)
            .into_iter()
            .map(|b| b.interval)
            .collect(),
    );
    subtract(&allowed(rules, range), &cuts)
}

/// A permitted window and what ends it.
#[derive(Debug, Clone)]
pub struct Explained<'a> {
    pub window: Interval,
    /// The blocked stretch that begins where the window ends, if any.
    pub closed_by: Option<Blocked<'a>>,
    /// The allow window that ends where this window ends, if that is what ends it.
    pub allow_ends: Option<&'a str>,
    /// The blocked stretch that ends where the window begins: what a raise
    /// waiting for this window waits for. `None` when the window begins at
    /// the start of the range (nothing to wait for).
    pub opened_by: Option<Blocked<'a>>,
    /// The allow window that begins where this window begins (with or
    /// without a block ending there too).
    pub allow_starts: Option<&'a str>,
    /// The window goes on past the range shown; `ends` is its real end.
    pub cut_at_range_end: bool,
    /// Where the window really ends (after `window.end` when cut).
    pub ends: DateTime<Utc>,
}

/// Permitted windows with what closes each, for people.
pub fn explain<'a>(
    rules: &Rules<'a>,
    cal: &'a Calendar,
    range: Interval,
    freeze: &[Interval],
) -> Vec<Explained<'a>> {
    // Look a little past the range so a window clipped at `to` still says
    // what would close it.
    let wide = Interval::new(range.start, range.end + TimeDelta::days(4));
    let blocks = blocked(rules, cal, wide, freeze);
    let cuts = normalize(blocks.iter().map(|b| b.interval).collect());
    let allow_iv = cron_windows(rules.allow, rules.timezone, wide);
    let all = subtract(&allowed(rules, wide), &cuts);
    // A window begins where a block ends (or an allow window begins) and
    // ends where a block begins (or an allow window ends): look those up by
    // instant, so a spec with thousands of windows stays linear.
    let mut block_starts: HashMap<DateTime<Utc>, &Blocked> = HashMap::new();
    let mut block_ends: HashMap<DateTime<Utc>, &Blocked> = HashMap::new();
    for b in &blocks {
        for (map, at) in [
            (&mut block_starts, b.interval.start),
            (&mut block_ends, b.interval.end),
        ] {
            let e = map.entry(at).or_insert(b);
            if block_rank(&b.block) < block_rank(&e.block) {
                *e = b;
            }
        }
    }
    let mut allow_starts: HashMap<DateTime<Utc>, &str> = HashMap::new();
    let mut allow_ends: HashMap<DateTime<Utc>, &str> = HashMap::new();
    for (iv, a) in &allow_iv {
        allow_starts.entry(iv.start).or_insert(a.name.as_str());
        allow_ends.entry(iv.end).or_insert(a.name.as_str());
    }
    all.into_iter()
        .filter(|w| w.start < range.end)
        .map(|w| {
            let shown = Interval::new(w.start, w.end.min(range.end));
            // No block overlaps a permitted window, so one that covers its
            // end begins exactly there.
            let closed_by = block_starts.get(&w.end).map(|b| (*b).clone());
            let allow_ends = if closed_by.is_some() {
                None
            } else {
                allow_ends.get(&w.end).copied()
            };
            // Nothing to wait for when the window is open from the start.
            let opens_later = w.start > range.start;
            let opened_by = block_ends
                .get(&w.start)
                .filter(|_| opens_later)
                .map(|b| (*b).clone());
            let allow_starts = allow_starts.get(&w.start).copied().filter(|_| opens_later);
            Explained {
                window: shown,
                closed_by,
                allow_ends,
                opened_by,
                allow_starts,
                cut_at_range_end: w.end > range.end,
                ends: w.end,
            }
        })
        .collect()
}

/// What a blocked stretch is, in a few words for people: "equity
/// session", "equity special session (Muhurat trading)", "blackout Drill".
pub fn block_label(b: &Block) -> String {
    match b {
        Block::Session { segment, rule } => match rule {
            Rule::Special(sp) => format!("{segment} special session ({})", sp.name),
            Rule::HolidaySessions(h) => format!("{segment} session of {}", h.name),
            _ => format!("{segment} session"),
        },
        Block::Blackout(bl) => format!("blackout {}", bl.name),
        Block::Deny(name) => format!("deny window {name}"),
        Block::Coverage => "the calendar's coverage".to_string(),
        Block::Freeze => "the global freeze".to_string(),
    }
}

/// What a raise waiting for the window `e` waits for, for people: "the
/// equity session ends (+15m guard)", "allow window nightly opens". `None`
/// when the window is open from the start of the range shown.
pub fn opens_after(e: &Explained, after_close: TimeDelta) -> Option<String> {
    let block = e.opened_by.as_ref().map(|b| {
        let guard = if after_close.is_zero() {
            String::new()
        } else {
            format!(" (+{} guard)", crate::duration::format(after_close))
        };
        match &b.block {
            Block::Session { .. } | Block::Blackout(_) => {
                format!("the {} ends{guard}", block_label(&b.block))
            }
            Block::Coverage => "the calendar's coverage begins".to_string(),
            Block::Freeze => "the global freeze is lifted".to_string(),
            other => format!("{} ends", block_label(other)),
        }
    });
    let allow = e.allow_starts.map(|a| format!("allow window {a} opens"));
    match (block, allow) {
        // Both end the wait: removing either would not open it earlier.
        (Some(b), Some(a)) => Some(format!("{b} and {a}")),
        (b, a) => b.or(a),
    }
}

/// Does the permitted window `w` rest on provisional calendar data? What
/// ends a window is decided by sessions and blackouts up to `before_open`
/// after its end (what starts it, by earlier ones), so it does when that
/// reaches the calendar's `provisional_from`.
pub fn relies_on_provisional(rules: &Rules, cal: &Calendar, w: Interval) -> bool {
    cal.provisional_start()
        .is_some_and(|p| w.end + rules.before_open > p)
}

/// How far ahead the engine's permitted windows are known at least
/// (`engine::Ctx::permitted` covers `[now, now + KNOWN_AHEAD)`).
pub const KNOWN_AHEAD: TimeDelta = TimeDelta::days(7);

/// `waiting_for` when no raise window is in the engine's windows: when the
/// calendar's coverage ends within [`KNOWN_AHEAD`], no window can come
/// before it ends (everything after is blocked), and the fix is to extend
/// the calendar — say exactly that. `None` when coverage goes on past what
/// is known, so the cause is elsewhere (deny rules, freeze).
pub fn no_window_before_coverage_end(cal: &Calendar, now: DateTime<Utc>) -> Option<String> {
    let end = cal.coverage().end;
    if end > now + KNOWN_AHEAD {
        return None;
    }
    let verb = if end <= now { "ended" } else { "ends" };
    Some(format!(
        "no permitted window before the calendar {} {verb} on {} — extend the calendar",
        cal.name, cal.valid_until
    ))
}

/// When `range` reaches outside the calendar's coverage, a sentence saying
/// so (everything there is blocked), for `windows` and the API.
pub fn coverage_note(cal: &Calendar, range: Interval) -> Option<String> {
    let cov = cal.coverage();
    if range.start >= cov.start && range.end <= cov.end {
        return None;
    }
    let how = if range.end <= cov.start || range.start >= cov.end {
        "lies outside"
    } else {
        "reaches outside"
    };
    Some(format!(
        "the range {how} the coverage of calendar {} ({} to {}): everything outside it is blocked (fail closed) until the calendar is extended",
        cal.name, cal.valid_from, cal.valid_until
    ))
}

fn block_rank(b: &Block) -> u8 {
    match b {
        Block::Freeze => 0,
        Block::Coverage => 1,
        Block::Blackout(_) => 2,
        Block::Deny(_) => 3,
        Block::Session { .. } => 4,
    }
}

#[cfg(test)]
mod tests;
