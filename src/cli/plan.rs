//! `muhurat plan FILE`: the projected timeline.

use std::path::Path;

use super::common::{load_spec_file, parse_time, print_diagnostics};
use super::windows::human;
use super::{EXIT_BAD_INPUT, EXIT_OK, Output};
use crate::clock::Clock;
use crate::duration;
use crate::plan::{self, Planned};
use crate::spec::Step;

pub fn run(
    clock: &dyn Clock,
    file: &Path,
    calendars: Option<&Path>,
    from: Option<&str>,
    output: Output,
) -> i32 {
    let loaded = match load_spec_file(file, calendars) {
        Ok(l) => l,
        Err(d) => {
            print_diagnostics(&d);
            return EXIT_BAD_INPUT;
        }
    };
    let from = match parse_time("--from", from, clock) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("muhurat plan: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let (spec, cal) = (&loaded.spec, &loaded.calendar);
    let tz = spec.windows.timezone;
    let p = plan::plan(spec, cal, from, &[]);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&p.to_json(tz)).expect("JSON values serialize")
        ),
        Output::Text => {
            println!(
                "Plan for {} from {} — calendar {} {} (valid until {})",
                spec.name,
                human(tz, from),
                cal.name,
                cal.version,
                cal.valid_until
            );
            println!(
                "Assumes every check passes and approvals come at once; offline, the server's global freeze is not known."
            );
            if (0..p.steps.len()).any(|i| p.is_provisional(i))
                && let Some(note) = super::windows::provisional_line(cal)
            {
                println!("{}", note.replace("windows marked", "steps marked"));
            }
            println!();
            let t = |x: &Option<chrono::DateTime<chrono::Utc>>| {
                x.map_or_else(
                    || "— (beyond the calendar's coverage)".to_string(),
                    |x| human(tz, x),
                )
            };
            for (i, (step, planned)) in spec.steps.iter().zip(&p.steps).enumerate() {
                let what = match step {
                    Step::SetWeight(w) => format!("set_weight {w}%"),
                    Step::BakeDuration(d) => format!("bake {}", duration::format(*d)),
                    Step::BakeSessions { sessions, segment } => {
                        format!("bake {sessions} {segment} trading day(s)")
                    }
                    Step::Approval { min } => format!("approval by {min}"),
                    Step::Pause => "pause".to_string(),
                };
                let when = match planned {
                    Planned::SetWeight { at, .. }
                    | Planned::Approval { at }
                    | Planned::Pause { at } => t(at),
                    Planned::Bake { start, until } => match (start, until) {
                        (Some(_), Some(_)) => format!("{} → {}", t(start), t(until)),
                        _ => t(until),
                    },
                };
                let provisional = if p.is_provisional(i) {
                    "  [provisional]"
                } else {
                    ""
                };
                println!("  {i:>2}  {what:<32} {when}{provisional}");
            }
            println!();
            match p.complete_at {
                Some(c) => println!("Complete at {} at the earliest.", human(tz, c)),
                None => println!(
                    "Cannot complete before the calendar's coverage ends ({}): extend the calendar.",
                    cal.valid_until
                ),
            }
        }
    }
    EXIT_OK
}
