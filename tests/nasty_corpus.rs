//! A fixed corpus of hostile inputs for the offline commands, each answered
//! with a clear error (or a bounded answer) **within a stated time and
//! memory**: every run is capped at 1 GiB of address space (`ulimit -v`)
//! and must finish within its time budget (debug build). The corpus is
//! generated here, so it is the same on every machine:
//!
//! | input | command | answer | budget |
//! |---|---|---|---|
//! | alias bomb (9 levels × 9) | validate | "more than 64 aliases" | 2 s |
//! | 10 MB file | validate, calendar check | "above the limit of 1048576" | 2 s |
//! | 200,000 nested `[` | validate, calendar check | "nests deeper than 32" | 2 s |
//! | 1,000 nested block mappings | validate | "nests deeper than 32" | 2 s |
//! | invalid UTF-8 | validate | "not UTF-8 text" | 2 s |
//! | huge numbers | validate | a type error at its line | 2 s |
//! | year 9999 | validate, windows --from | "outside the years 1970-2200" | 2 s |
//! | 1,000 rules of `*/1 * * * *` for 1 s | validate | "1440000 windows a day" | 2 s |
//! | one `*/1 * * * *` rule for 1 s | windows --days 365 | 0 (bounded output) | 20 s |
//! | `--days 4000000000` | windows | "above the limit of 3660" | 2 s |

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_muhurat");
/// Address space cap for every run, in KiB (1 GiB).
const MEM_KIB: u64 = 1024 * 1024;

struct Run {
    code: Option<i32>,
    out: String,
    took: Duration,
}

/// `muhurat ARGS` under `ulimit -v`, from the crate root.
fn run(args: &[&str]) -> Run {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {MEM_KIB} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("MUHURAT_CALENDARS");
    let t0 = Instant::now();
    let o = cmd.output().expect("run muhurat");
    Run {
        code: o.status.code(),
        out: String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout),
        took: t0.elapsed(),
    }
}

fn spec_with(windows: &str) -> String {
    format!(
        "name: nasty\ncalendar: nse\n{windows}traffic:\n  haproxy:\n    endpoints: [\"unix:/run/h.sock\"]\n    backend: b\n    pools: {{blue: [b1], green: [g1]}}\nsteps:\n  - set_weight: 100\n"
    )
}

fn corpus(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut bomb = String::from("a: &a [l,l,l,l,l,l,l,l,l]\n");
    for i in 1..9u8 {
        let (p, c) = ((b'a' + i - 1) as char, (b'a' + i) as char);
        bomb.push_str(&format!(
            "{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        ));
    }
    let _ = dir;
    let many: String = (0..1000)
        .map(|i| format!("    - {{name: a{i}, cron: \"*/1 * * * *\", duration: 1s}}\n"))
        .collect();
    vec![
        ("alias-bomb", bomb.into_bytes()),
        (
            "ten-mb",
            format!("name: x\ndescription: \"{}\"\n", "a".repeat(10 << 20)).into_bytes(),
        ),
        ("deep-flow", "[".repeat(200_000).into_bytes()),
        (
            "deep-block",
            (0..1000)
                .map(|i| format!("{}a:\n", " ".repeat(i)))
                .collect::<String>()
                .into_bytes(),
        ),
        ("invalid-utf8", b"name: \xff\xfe\x00x\ncalendar: nse\n".to_vec()),
        (
            "huge-numbers",
            spec_with("")
                .replace("set_weight: 100", "set_weight: 99999999999999999999999999999")
                .into_bytes(),
        ),
        (
            "year-9999",
            spec_with(
                "windows:\n  deny:\n    - {name: d, from: \"9999-12-30T00:00:00Z\", to: \"9999-12-31T00:00:00Z\"}\n",
            )
            .into_bytes(),
        ),
        (
            "many-minute-rules",
            spec_with(&format!("windows:\n  allow:\n{many}")).into_bytes(),
        ),
    ]
}

#[test]
fn every_nasty_input_is_refused_quickly_within_memory() {
    let dir = tempfile::tempdir().unwrap();
    let wants = [
        ("alias-bomb", "more than 64 aliases"),
        ("ten-mb", "above the limit of 1048576"),
        ("deep-flow", "nests deeper than 32"),
        ("deep-block", "nests deeper than 32"),
        ("invalid-utf8", "not UTF-8 text"),
        ("huge-numbers", "set_weight"),
        ("year-9999", "outside the years 1970-2200"),
        ("many-minute-rules", "1440000 windows a day"),
    ];
    let cals = Path::new(env!("CARGO_MANIFEST_DIR")).join("rollouts/calendars");
    for ((name, bytes), (wname, says)) in corpus(dir.path()).into_iter().zip(wants) {
        assert_eq!(name, wname);
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, &bytes).unwrap();
        let r = run(&[
            "validate",
            f.to_str().unwrap(),
            "--calendars",
            cals.to_str().unwrap(),
        ]);
        assert_eq!(r.code, Some(2), "{name}: {}", r.out);
        assert!(r.out.contains(says), "{name}: want `{says}`:\n{}", r.out);
        assert!(r.took < Duration::from_secs(2), "{name} took {:?}", r.took);
        // The calendar loader shares the YAML limits.
        if matches!(name, "ten-mb" | "deep-flow" | "alias-bomb") {
            let r = run(&["calendar", "check", f.to_str().unwrap()]);
            assert_ne!(r.code, Some(0), "{name}: {}", r.out);
            assert!(
                r.took < Duration::from_secs(2),
                "calendar {name} took {:?}",
                r.took
            );
            assert!(!r.out.contains("panicked"), "{}", r.out);
        }
    }
}

#[test]
fn windows_over_a_year_of_minute_rules_is_bounded_and_ranges_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("one.yaml");
    std::fs::write(
        &f,
        spec_with("windows:\n  allow:\n    - {name: a, cron: \"*/1 * * * *\", duration: 1s}\n"),
    )
    .unwrap();
    let cals = Path::new(env!("CARGO_MANIFEST_DIR")).join("rollouts/calendars");
    let (f, cals) = (f.to_str().unwrap(), cals.to_str().unwrap());
    let r = run(&[
        "windows",
        f,
        "--calendars",
        cals,
        "--from",
        "2026-01-01T00:00:00+05:30",
        "--days",
        "365",
        "-o",
        "json",
    ]);
    assert_eq!(r.code, Some(0), "{}", &r.out[..r.out.len().min(500)]);
    assert!(r.took < Duration::from_secs(20), "took {:?}", r.took);
    for (args, says) in [
        (vec!["--days", "4000000000"], "above the limit of 3660"),
        (
            vec!["--from", "9999-01-01T00:00:00Z"],
            "outside the years 1970-2200",
        ),
        (
            vec![
                "--from",
                "2026-01-01T00:00:00Z",
                "--to",
                "2199-01-01T00:00:00Z",
            ],
            "longer than 3660 days",
        ),
    ] {
        let mut a = vec!["windows", f, "--calendars", cals];
        a.extend(args);
        let r = run(&a);
        assert_eq!(r.code, Some(2), "{}", r.out);
        assert!(r.out.contains(says), "{}", r.out);
        assert!(r.took < Duration::from_secs(2));
    }
    let r = run(&[
        "plan",
        f,
        "--calendars",
        cals,
        "--from",
        "9999-01-01T00:00:00Z",
    ]);
    assert_eq!(r.code, Some(2), "{}", r.out);
}
