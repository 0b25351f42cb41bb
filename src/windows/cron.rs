//! crontab(5) expressions for window start instants.
//!
//! The `cron` crate is not crontab: it wants a seconds field, numbers Sunday
//! as 1 and ANDs the two day fields (see reference/crates.md). Specs are
//! written by people who know crontab, so muhurat parses the five fields
//! itself and matches days exactly as Vixie cron does:
//! - day of week 0–7, 0 and 7 = Sunday; `sun`…`sat`, `jan`…`dec` in any case
//!   wherever a number may stand;
//! - `*/S`, `N-M/S`, and `N/S` meaning `N-max/S`; a backwards range is an error;
//! - a day field is *unrestricted* exactly when it begins with `*`; when both
//!   are restricted a day matches if either matches (OR), else both must.
//!
//! Expansion to instants lives here too, with the DST rules of
//! [`crate::localtime`]: a start in a gap begins when the clock jumps, and a
//! repeated local time starts once, at its first occurrence.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::localtime;

/// A parsed crontab(5) expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    minutes: u64, // bit m for minute m
    hours: u32,   // bit h
    dom: u32,     // bit d, 1..=31
    months: u16,  // bit m, 1..=12
    dow: u8,      // bit d, 0..=6 (7 folded into 0)
    dom_star: bool,
    dow_star: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.source)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl serde::Serialize for Cron {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

const DOW_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

struct Field {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    name_base: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        what: "minute",
        min: 0,
        max: 59,
        names: &[],
        name_base: 0,
    },
    Field {
        what: "hour",
        min: 0,
        max: 23,
        names: &[],
        name_base: 0,
    },
    Field {
        what: "day of month",
        min: 1,
        max: 31,
        names: &[],
        name_base: 0,
    },
    Field {
        what: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
        name_base: 1,
    },
    Field {
        what: "day of week",
        min: 0,
        max: 7,
        names: &DOW_NAMES,
        name_base: 0,
    },
];

impl Field {
    fn value(&self, tok: &str, range_end: bool) -> Result<u32, String> {
        let lower = tok.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            let v = i as u32 + self.name_base;
            // `mon-sun` means Monday to Sunday: Sunday as a range end is 7.
            if range_end && self.what == "day of week" && v == 0 {
                return Ok(7);
            }
            return Ok(v);
        }
        let v: u32 = tok.parse().map_err(|_| {
            if self.names.is_empty() {
                format!("{} `{tok}` is not a number", self.what)
            } else {
                format!(
                    "{} `{tok}` is not a number or a name ({})",
                    self.what,
                    self.names.join(", ")
                )
            }
        })?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} {v} is out of range {}-{}",
                self.what, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// Parse one field into a bit set over `min..=max`.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!(
                    "{} field `{text}` has an empty list item",
                    self.what
                ));
            }
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let s: u32 = s
                        .parse()
                        .map_err(|_| format!("{} step `{s}` is not a number", self.what))?;
                    if s == 0 {
                        return Err(format!("{} step must be at least 1", self.what));
                    }
                    (r, Some(s))
                }
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let lo = self.value(a, false)?;
                let hi = self.value(b, true)?;
                if lo > hi {
                    return Err(format!(
                        "{} range `{range}` runs backwards; write it from low to high (e.g. mon-fri) or as a list",
                        self.what
                    ));
                }
                (lo, hi)
            } else {
                let v = self.value(range, false)?;
                // `N/S` means `N-max/S`, as in crontab.
                if step.is_some() {
                    (v, self.max)
                } else {
                    (v, v)
                }
            };
            // `step_by` cannot overflow: `v += step` did, for a step near
            // u32::MAX (a panic in debug builds, wrapped extra bits in release).
            for v in (lo..=hi).step_by(step.map_or(1, |s| s as usize)) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }
}

impl Cron {
    /// Parse a five-field crontab(5) expression.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "`{text}` has {} fields; write five: minute hour day-of-month month day-of-week (crontab(5), no seconds field)",
                fields.len()
            ));
        }
        let mut bits = [0u64; 5];
        for (i, f) in FIELDS.iter().enumerate() {
            bits[i] = f.parse(fields[i])?;
        }
        // Fold Sunday-as-7 into Sunday-as-0.
        let mut dow = bits[4];
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & !(1 << 7);
        }
        Ok(Cron {
            source: fields.join(" "),
            minutes: bits[0],
            hours: bits[1] as u32,
            dom: bits[2] as u32,
            months: bits[3] as u16,
            dow: dow as u8,
            dom_star: fields[2].starts_with('*'),
            dow_star: fields[4].starts_with('*'),
        })
    }

    /// How many windows start on a day that matches (minutes × hours):
    /// what a rule costs to expand, per day.
    pub fn starts_per_day(&self) -> u32 {
        self.minutes.count_ones() * self.hours.count_ones()
    }

    /// Does a window start on `date` (at some minute)?
    pub fn matches_date(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom_ok = self.dom & (1 << date.day()) != 0;
        let dow_ok = self.dow & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_star || self.dow_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }

    /// Every start instant in `[from, to)`, in ascending order, for a rule
    /// written in `tz`.
    pub fn starts_between(
        &self,
        tz: Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        if from >= to {
            return out;
        }
        // A day either side: the local date of an instant can be the UTC day
        // before or after, and a gap can push a start into the next day.
        let first = localtime::date_of(tz, from) - TimeDelta::days(1);
        let last = localtime::date_of(tz, to) + TimeDelta::days(1);
        let mut d = first;
        while d <= last {
            if self.matches_date(d) {
                for h in 0..24u32 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    for m in 0..60u32 {
                        if self.minutes & (1 << m) == 0 {
                            continue;
                        }
                        let t = NaiveTime::from_hms_opt(h, m, 0).expect("h < 24, m < 60");
                        let at = localtime::resolve(tz, d.and_time(t));
                        if at >= from && at < to {
                            out.push(at);
                        }
                    }
                }
            }
            d += TimeDelta::days(1);
        }
        out.sort_unstable();
        // Two local times in one DST gap resolve to the same instant.
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Weekday;
    use rstest::rstest;

    fn days_matching(expr: &str, from: NaiveDate, n: i64) -> Vec<NaiveDate> {
        let c = Cron::parse(expr).unwrap();
        (0..n)
            .map(|i| from + TimeDelta::days(i))
            .filter(|d| c.matches_date(*d))
            .collect()
    }

    fn weekdays(expr: &str) -> Vec<Weekday> {
        // 2026-11-29 is a Sunday.
        let from = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        days_matching(expr, from, 7)
            .iter()
            .map(|d| d.weekday())
            .collect()
    }

    use Weekday::*;

    #[rstest]
    #[case("0 1 * * 1-5", vec![Mon, Tue, Wed, Thu, Fri])]
    #[case("0 1 * * 0", vec![Sun])]
    #[case("0 1 * * 7", vec![Sun])]
    #[case("0 1 * * 0,7", vec![Sun])]
    #[case("0 1 * * mon-fri", vec![Mon, Tue, Wed, Thu, Fri])]
    #[case("0 1 * * MON-Fri", vec![Mon, Tue, Wed, Thu, Fri])]
    #[case("0 1 * * sat,sun", vec![Sun, Sat])]
    #[case("0 1 * * 5-7", vec![Sun, Fri, Sat])]
    #[case("0 1 * * fri-sun", vec![Sun, Fri, Sat])]
    #[case("0 1 * * */2", vec![Sun, Tue, Thu, Sat])]
    #[case("0 1 * * 1-5/2", vec![Mon, Wed, Fri])]
    // `N/S` is `N-max/S`, and the weekday max is 7 (Sunday).
    #[case("0 1 * * 3/2", vec![Sun, Wed, Fri])]
    #[case("0 1 * * *", vec![Sun, Mon, Tue, Wed, Thu, Fri, Sat])]
    fn weekday_field(#[case] expr: &str, #[case] want: Vec<Weekday>) {
        assert_eq!(weekdays(expr), want, "{expr}");
    }

    #[test]
    fn both_day_fields_restricted_is_or() {
        // The 1st of the month OR any Monday, across December 2026.
        let from = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let got = days_matching("0 0 1 * mon", from, 31);
        let want: Vec<u32> = vec![1, 7, 14, 21, 28];
        assert_eq!(got.iter().map(|d| d.day()).collect::<Vec<_>>(), want);
    }

    #[test]
    fn star_step_day_of_month_is_unrestricted_so_and_applies() {
        // `*/2` begins with `*`: crontab ANDs it with the weekday field.
        let from = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let got = days_matching("0 0 */2 * mon", from, 31);
        // Mondays in Dec 2026: 7, 14, 21, 28; of those, odd days of month: 7, 21.
        assert_eq!(got.iter().map(|d| d.day()).collect::<Vec<_>>(), vec![7, 21]);
        let got = days_matching("0 0 */2 * tue", from, 31);
        assert_eq!(
            got.iter().map(|d| d.day()).collect::<Vec<_>>(),
            vec![1, 15, 29]
        );
    }

    #[test]
    fn months_by_name_and_number() {
        let from = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let got = days_matching("0 0 1 jan,Mar,12 *", from, 365);
        assert_eq!(
            got.iter().map(|d| d.month()).collect::<Vec<_>>(),
            vec![1, 3, 12]
        );
    }

    #[rstest]
    #[case("0 1 * *", "has 4 fields")]
    #[case("0 0 1 * * 1-5", "has 6 fields")]
    #[case("60 1 * * *", "minute 60 is out of range 0-59")]
    #[case("0 24 * * *", "hour 24 is out of range 0-23")]
    #[case("0 1 0 * *", "day of month 0 is out of range 1-31")]
    #[case("0 1 * 13 *", "month 13 is out of range 1-12")]
    #[case("0 1 * * 8", "day of week 8 is out of range 0-7")]
    #[case("0 1 * * fri-mon", "runs backwards")]
    #[case("0 1 * * */0", "step must be at least 1")]
    #[case("0 1 * * funday", "not a number or a name")]
    #[case("0 1 * * 1,,2", "empty list item")]
    fn rejects(#[case] expr: &str, #[case] needle: &str) {
        let e = Cron::parse(expr).unwrap_err();
        assert!(e.contains(needle), "{expr}: {e}");
    }

    #[test]
    fn step_near_u32_max_overflowed_into_extra_minutes() {
        // `v += step` overflowed u32: a panic in debug builds; in release the
        // wrapped sum stepped back down, so `5/4294967295` also started at
        // minutes 0-4.
        for (expr, minutes) in [
            ("1/4294967295 * * * *", 1u64 << 1),
            ("5/4294967295 * * * *", 1 << 5),
            ("*/4294967295 * * * *", 1),
            ("3-9/4294967290 * * * *", 1 << 3),
        ] {
            assert_eq!(Cron::parse(expr).unwrap().minutes, minutes, "{expr}");
        }
        let c = Cron::parse("0 0 1 1 0/4294967295").unwrap();
        assert_eq!(c.dow, 1);
    }

    #[test]
    fn starts_in_a_dst_gap_begin_when_the_clock_jumps_and_repeats_start_once() {
        let tz = chrono_tz::America::New_York;
        let c = Cron::parse("30 2 * * *").unwrap();
        let from = "2026-03-07T00:00:00Z".parse().unwrap();
        let to = "2026-03-10T00:00:00Z".parse().unwrap();
        let got: Vec<String> = c
            .starts_between(tz, from, to)
            .into_iter()
            .map(|t| localtime::rfc3339(tz, t))
            .collect();
        assert_eq!(
            got,
            vec![
                "2026-03-07T02:30:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-09T02:30:00-04:00"
            ]
        );
        let c = Cron::parse("30 1 * * *").unwrap();
        let from = "2026-10-31T12:00:00Z".parse().unwrap();
        let to = "2026-11-02T12:00:00Z".parse().unwrap();
        let got: Vec<String> = c
            .starts_between(tz, from, to)
            .into_iter()
            .map(|t| localtime::rfc3339(tz, t))
            .collect();
        assert_eq!(
            got,
            vec!["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
    }

    #[test]
    fn two_gap_times_start_once() {
        let tz = chrono_tz::America::New_York;
        let c = Cron::parse("0,30 2 8 3 *").unwrap();
        let from = "2026-03-08T00:00:00Z".parse().unwrap();
        let to = "2026-03-09T00:00:00Z".parse().unwrap();
        assert_eq!(c.starts_between(tz, from, to).len(), 1);
    }
}
