//! Local wall-clock times → instants, with crontab's daylight-saving rules.
//!
//! Calendars and cron rules are written in local time; everything inside
//! muhurat is UTC. The two conversions that are not one-to-one are pinned
//! here once: a local time inside a daylight-saving gap means the first
//! instant after the gap, and a local time that occurs twice means its first
//! occurrence. India has no DST, but specs may use `America/New_York` or UTC.

use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

/// The instant of local time `ndt` in `tz`.
pub fn resolve(tz: Tz, ndt: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&ndt) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => {
            // Inside a gap: the first local minute that exists again is the
            // instant the clock jumped to. Real gaps are minute-aligned and
            // at most a few hours long; two days bounds the search.
            let mut probe = ndt;
            for _ in 0..(2 * 24 * 60) {
                probe += TimeDelta::minutes(1);
                match tz.from_local_datetime(&probe) {
                    LocalResult::Single(t) => return t.with_timezone(&Utc),
                    LocalResult::Ambiguous(a, b) => return a.min(b).with_timezone(&Utc),
                    LocalResult::None => {}
                }
            }
            // Unreachable for any zone in the tz database; fall back to the
            // standard offset rather than panic.
            Utc.from_utc_datetime(&ndt)
        }
    }
}

/// Like [`resolve`], but a local time that occurs twice means its *last*
/// occurrence. Used for the end of a session or blackout: when the clock
/// falls back, the session is blocked until the later instant (fail closed).
pub fn resolve_end(tz: Tz, ndt: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&ndt) {
        LocalResult::Ambiguous(a, b) => a.max(b).with_timezone(&Utc),
        _ => resolve(tz, ndt),
    }
}

/// [`at_minutes`] for the end of an interval: see [`resolve_end`].
pub fn end_at_minutes(tz: Tz, date: NaiveDate, minutes: u16) -> DateTime<Utc> {
    let (date, minutes) = split_minutes(date, minutes);
    resolve_end(tz, date.and_time(minutes))
}

fn split_minutes(date: NaiveDate, minutes: u16) -> (NaiveDate, NaiveTime) {
    let (date, minutes) = if minutes >= 1440 {
        (date.succ_opt().unwrap_or(date), minutes - 1440)
    } else {
        (date, minutes)
    };
    let time = NaiveTime::from_hms_opt(u32::from(minutes / 60), u32::from(minutes % 60), 0)
        .unwrap_or(NaiveTime::MIN);
    (date, time)
}

/// The instant of `minutes` after local midnight on `date` (1440 = the next
/// midnight, the calendar's `24:00`).
pub fn at_minutes(tz: Tz, date: NaiveDate, minutes: u16) -> DateTime<Utc> {
    let (date, time) = split_minutes(date, minutes);
    resolve(tz, date.and_time(time))
}

/// Local date of `t` in `tz`.
pub fn date_of(tz: Tz, t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// Format an instant as RFC 3339 to the second with the numeric offset that
/// `tz` has at that instant (UTC written `+00:00`), as the CLI contract asks.
pub fn rfc3339(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::New_York;

    fn ndt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn gap_starts_when_the_clock_jumps() {
        // 2026-03-08 02:30 does not exist in New York; clocks go 02:00 → 03:00 EDT.
        let t = resolve(New_York, ndt("2026-03-08 02:30"));
        assert_eq!(rfc3339(New_York, t), "2026-03-08T03:00:00-04:00");
    }

    #[test]
    fn repeated_time_is_its_first_occurrence() {
        // 2026-11-01 01:30 happens twice in New York; the first is EDT.
        let t = resolve(New_York, ndt("2026-11-01 01:30"));
        assert_eq!(rfc3339(New_York, t), "2026-11-01T01:30:00-04:00");
    }

    #[test]
    fn a_repeated_end_time_is_its_last_occurrence() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let end = end_at_minutes(New_York, d, 90);
        assert_eq!(rfc3339(New_York, end), "2026-11-01T01:30:00-05:00");
        assert_eq!(
            rfc3339(New_York, at_minutes(New_York, d, 90)),
            "2026-11-01T01:30:00-04:00"
        );
    }

    #[test]
    fn twenty_four_hundred_is_next_midnight() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 8).unwrap();
        let t = at_minutes(chrono_tz::Asia::Kolkata, d, 1440);
        assert_eq!(end_at_minutes(chrono_tz::Asia::Kolkata, d, 1440), t);
        assert_eq!(
            rfc3339(chrono_tz::Asia::Kolkata, t),
            "2026-11-09T00:00:00+05:30"
        );
        assert_eq!(rfc3339(chrono_tz::UTC, t), "2026-11-08T18:30:00+00:00");
    }
}
