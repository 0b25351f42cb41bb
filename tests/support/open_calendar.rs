//! A calendar for tests that run a real server on the wall clock: a week
//! around today (IST), every date of it a closed holiday, so nothing inside
//! its coverage is blocked and raises happen at once.

use chrono::TimeDelta;
use muhurat::clock::{Clock, SystemClock};

/// The calendar file `name.yaml` should hold.
pub fn calendar_yaml(name: &str) -> String {
    let today = SystemClock
        .now()
        .with_timezone(&chrono_tz::Asia::Kolkata)
        .date_naive();
    let from = today - TimeDelta::days(3);
    let until = today + TimeDelta::days(3);
    let holidays: String = (0..=6)
        .map(|i| {
            format!(
                "  - {{date: {}, name: h{i}, closed: all}}\n",
                from + TimeDelta::days(i)
            )
        })
        .collect();
    format!(
        "name: {name}\nversion: \"1\"\ntimezone: Asia/Kolkata\nvalid_from: {from}\nvalid_until: {until}\n\
         segments:\n  equity: {{days: [mon, tue, wed, thu, fri], open: \"09:15\", close: \"15:30\"}}\n\
         holidays:\n{holidays}"
    )
}
