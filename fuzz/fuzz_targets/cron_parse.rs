//! crontab(5) parsing, then expansion over two days in a zone with DST:
//! no panic, and every start lies in the range, sorted and unique.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = muhurat::windows::Cron::parse(text) else {
        return;
    };
    let from = Utc.with_ymd_and_hms(2026, 3, 7, 12, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2026, 3, 9, 12, 0, 0).unwrap();
    let starts = c.starts_between(chrono_tz::America::New_York, from, to);
    assert!(starts.len() <= 2 * 2 * 1440 + 1440);
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    assert!(starts.iter().all(|t| *t >= from && *t < to));
});
