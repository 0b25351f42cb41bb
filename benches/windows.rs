//! Permitted windows over 365 days of the NSE calendar (all four segments,
//! allow and deny rules), the worst case of the dashboard's explained
//! windows, and the plan of rollouts/kite-api.yaml.
//! Run: cargo bench --bench windows

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use muhurat::spec::{self, CalendarLookup};
use muhurat::windows::{self, Interval};

fn load(spec_yaml: &str) -> spec::Loaded {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("rollouts/calendars/nse.yaml")).unwrap();
    spec::load("bench.yaml", spec_yaml, |_| {
        muhurat::calendar::parse("nse.yaml", &text).map_err(CalendarLookup::Invalid)
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kite = std::fs::read_to_string(root.join("rollouts/kite-api.yaml")).unwrap();
    // kite-api plus allow and deny rules of both kinds.
    let with_rules = kite.replacen(
        "  deny:\n",
        "  allow:\n    - {name: nights, cron: \"0 0 * * 1-5\", duration: 8h}\n    - {name: weekends, cron: \"0 0 * * sat,sun\", duration: 24h}\n  deny:\n    - {name: results, from: \"2026-05-10T00:00:00+05:30\", to: \"2026-05-14T00:00:00+05:30\"}\n",
        1,
    );
    let loaded = load(&with_rules);
    let from: DateTime<Utc> = "2026-01-01T00:00:00+05:30".parse().unwrap();
    let range = Interval::new(from, from + TimeDelta::days(365));
    let rules = loaded.spec.window_rules();
    let n = windows::permitted(&rules, &loaded.calendar, range, &[]).len();
    eprintln!("permitted windows in 365 days: {n}");
    c.bench_function(
        "permitted windows, NSE, 365 days, 4 segments, allow+deny",
        |b| {
            b.iter(|| {
                windows::permitted(black_box(&rules), black_box(&loaded.calendar), range, &[])
            })
        },
    );

    // The worst a valid spec can ask of the dashboard's permitted windows
    // (14 days, each with what opens and closes it): an allow rule starting
    // every minute, the most `validate` accepts, for 30 s.
    let worst = kite.replacen(
        "  deny:\n    - name: weekly-expiry-eve        # no raises the night before Tuesday expiry\n      cron: \"0 0 * * 2\"\n      duration: 7h\n",
        "  allow:\n    - {name: every-minute, cron: \"* * * * *\", duration: 30s}\n",
        1,
    );
    let worst = load(&worst);
    let from: DateTime<Utc> = "2026-11-09T09:30:00+05:30".parse().unwrap();
    let range = Interval::new(from, from + TimeDelta::days(14));
    let rules = worst.spec.window_rules();
    let n = windows::explain(&rules, &worst.calendar, range, &[]).len();
    eprintln!("explained windows in 14 days, allow every minute: {n}");
    c.bench_function(
        "explain windows, NSE, 14 days, allow every minute for 30s (worst case)",
        |b| b.iter(|| windows::explain(black_box(&rules), black_box(&worst.calendar), range, &[])),
    );

    let kite = load(&kite);
    let from: DateTime<Utc> = "2026-02-02T17:00:00+05:30".parse().unwrap();
    c.bench_function("plan rollouts/kite-api.yaml", |b| {
        b.iter(|| muhurat::plan::plan(black_box(&kite.spec), black_box(&kite.calendar), from, &[]))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
