//! Golden files for generated artefacts: `plan -o json` and `windows -o json`
//! of the example specs from a fixed `--from`. A stale file fails with the
//! command that regenerates it; review the diff before committing it.

use std::path::Path;
use std::process::Command;

const FROM: &str = "2026-11-26T17:00:00+05:30";

fn muhurat(args: &[&str]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_muhurat"))
        .args(args)
        .current_dir(root)
        .env_remove("MUHURAT_CALENDARS")
        .output()
        .expect("run muhurat");
    assert!(
        out.status.success(),
        "muhurat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn check(golden: &str, args: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(golden);
    let got = muhurat(args);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "{} is stale (or missing).\n--- got ---\n{got}\n--- want ---\n{want}\nRegenerate with: UPDATE_GOLDEN=1 cargo test --test golden",
        path.display()
    );
}

#[test]
fn plan_kite_api() {
    check(
        "plan-kite-api.json",
        &[
            "plan",
            "rollouts/kite-api.yaml",
            "--from",
            FROM,
            "-o",
            "json",
        ],
    );
}

#[test]
fn plan_console_consul() {
    check(
        "plan-console-consul.json",
        &[
            "plan",
            "rollouts/console-consul.yaml",
            "--from",
            FROM,
            "-o",
            "json",
        ],
    );
}

#[test]
fn windows_kite_api() {
    check(
        "windows-kite-api.json",
        &[
            "windows",
            "rollouts/kite-api.yaml",
            "--from",
            FROM,
            "--days",
            "14",
            "-o",
            "json",
        ],
    );
}

#[test]
fn plan_kite_api_near_coverage_end_has_null_steps() {
    // Not a golden file: the contract says steps past coverage are null.
    let out = muhurat(&[
        "plan",
        "rollouts/kite-api.yaml",
        "--from",
        "2027-12-29T17:00:00+05:30",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["complete_at"].is_null(), "{out}");
    let steps = v["steps"].as_array().unwrap();
    assert!(steps[0]["at"].is_string(), "{out}");
    assert!(steps.last().unwrap()["until"].is_null(), "{out}");
}

/// Issue 10: a range (partly) outside the calendar's coverage says so, in
/// text and JSON — never just "No permitted window".
#[test]
fn windows_past_coverage_says_the_calendar_ends_there() {
    let json_out = muhurat(&[
        "windows",
        "rollouts/kite-api.yaml",
        "--from",
        "2027-12-30T00:00:00+05:30",
        "--days",
        "5",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["coverage"]["from"], "2025-01-01", "{v}");
    assert_eq!(v["coverage"]["until"], "2027-12-31", "{v}");
    let note = v["note"].as_str().expect("a coverage note");
    assert!(
        note.contains("reaches outside the coverage of calendar nse"),
        "{note}"
    );
    // Windows up to the end of coverage are still shown.
    assert!(!v["windows"].as_array().unwrap().is_empty(), "{v}");

    let text = muhurat(&[
        "windows",
        "rollouts/kite-api.yaml",
        "--from",
        "2028-01-02T00:00:00+05:30",
        "--days",
        "3",
    ]);
    assert!(
        text.contains("No permitted window in this range: the calendar covers 2025-01-01 to 2027-12-31 only — extend the calendar."),
        "{text}"
    );
    assert!(text.contains("Coverage: the range lies outside"), "{text}");

    let inside = muhurat(&[
        "windows",
        "rollouts/kite-api.yaml",
        "--from",
        "2026-06-01T00:00:00+05:30",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&inside).unwrap();
    assert!(v["note"].is_null(), "{v}");
}

/// Issue 10: plan steps that rest on 2027 (provisional) data say so.
#[test]
fn plan_into_2027_marks_steps_provisional() {
    let out = muhurat(&[
        "plan",
        "rollouts/kite-api.yaml",
        "--from",
        "2026-12-30T17:00:00+05:30",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["calendar"]["provisional_from"], "2027-01-01", "{out}");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["provisional"], false, "raise on 31 Dec: {out}");
    assert_eq!(steps.last().unwrap()["provisional"], true, "{out}");
    assert!(v["complete_at"].as_str().unwrap() >= "2027", "{out}");
    let text = muhurat(&[
        "plan",
        "rollouts/kite-api.yaml",
        "--from",
        "2026-12-30T17:00:00+05:30",
    ]);
    assert!(text.contains("[provisional]"), "{text}");
    assert!(
        text.contains("Provisional: calendar nse data from 2027-01-01"),
        "{text}"
    );
}
