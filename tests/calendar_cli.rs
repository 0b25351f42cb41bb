//! `muhurat calendar show|diff|check` on the fixtures in
//! `tests/fixtures/calendars/`, compared with golden files in
//! `tests/golden/calendar-*.txt` (stdout, stderr and the exit code). A stale
//! file fails with the command that regenerates it; review the diff before
//! committing it.

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_muhurat"))
        .arg("calendar")
        .args(args)
        .current_dir(root.join("tests/fixtures/calendars"))
        .env_remove("MUHURAT_CALENDARS")
        .output()
        .expect("run muhurat");
    format!(
        "$ muhurat calendar {}\n--- stdout ---\n{}--- stderr ---\n{}--- exit {} ---\n",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1)
    )
}

fn check(golden: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(golden);
    let got = run(args);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).expect("write golden file");
        return got;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "{} is stale (or missing).\n--- got ---\n{got}\n--- want ---\n{want}\nRegenerate with: UPDATE_GOLDEN=1 cargo test --test calendar_cli",
        path.display()
    );
    got
}

#[test]
fn show_text_marks_coverage_holidays_blackouts_and_provisional_days() {
    let out = check(
        "calendar-show.txt",
        &["show", "xch.yaml", "--from", "2027-01-03", "--days", "15"],
    );
    assert!(out.contains("Sun 2027-01-03\n  not covered: blocked (fail closed)"));
    assert!(out.contains("Mon 2027-01-11  [provisional]"));
    assert!(out.contains("--- exit 0 ---"));
}

#[test]
fn show_json_one_segment() {
    let out = check(
        "calendar-show-equity.json.txt",
        &[
            "show",
            "xch.yaml",
            "--from",
            "2027-01-05",
            "--days",
            "2",
            "--segment",
            "equity",
            "-o",
            "json",
        ],
    );
    let json = out
        .split("--- stdout ---\n")
        .nth(1)
        .and_then(|s| s.split("--- stderr ---").next())
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["calendar"]["provisional_from"], "2027-01-11");
    assert_eq!(v["days"][0]["holiday"]["confidence"], "high");
    assert_eq!(v["days"][0]["segments"].as_array().unwrap().len(), 1);
}

#[test]
fn show_refuses_an_unknown_segment() {
    let out = run(&["show", "xch.yaml", "--segment", "fx"]);
    assert!(
        out.contains("no such segment (it has equity, commodity)"),
        "{out}"
    );
    assert!(out.contains("--- exit 2 ---"), "{out}");
}

#[test]
fn diff_adding_a_holiday_opens_a_window() {
    let out = check(
        "calendar-diff-holiday.txt",
        &[
            "diff",
            "xch.yaml",
            "xch-holiday.yaml",
            "--spec",
            "spec-xch.yaml",
        ],
    );
    assert!(out.contains("+ holiday: Founders Day"), "{out}");
    assert!(
        out.contains("opens  Wed 06 Jan 08:30 IST → Thu 07 Jan 00:00 IST"),
        "{out}"
    );
    assert!(!out.contains("\n  closes "), "{out}");
}

#[test]
fn diff_adding_a_saturday_special_session_closes_a_window() {
    let out = check(
        "calendar-diff-saturday.txt",
        &[
            "diff",
            "xch.yaml",
            "xch-saturday.yaml",
            "--spec",
            "spec-xch.yaml",
        ],
    );
    assert!(out.contains("+ equity     09:15-12:30 (special)"), "{out}");
    assert!(
        out.contains("closes Sat 09 Jan 08:45 IST → Sat 09 Jan 13:00 IST"),
        "{out}"
    );
    assert!(!out.contains("\n  opens "), "{out}");
}

#[test]
fn diff_of_a_file_with_itself_changes_nothing_and_says_version_must_rise() {
    let out = run(&["diff", "xch.yaml", "xch.yaml", "--spec", "spec-xch.yaml"]);
    assert!(out.contains("File: unchanged."), "{out}");
    assert!(out.contains("Days: none changed."), "{out}");
    assert!(out.contains("version 1.0 is not greater than 1.0"), "{out}");
    assert!(out.contains("  none\n"), "{out}");
}

#[test]
fn check_reports_every_error_and_every_warning() {
    let out = check(
        "calendar-check.txt",
        &["check", "check-warnings.yaml", "check-errors.yaml"],
    );
    assert!(out.contains("check-errors.yaml: 3 error(s)"), "{out}");
    assert!(out.contains("5 warning(s)"), "{out}");
    assert!(out.contains("--- exit 2 ---"), "{out}");
}

/// Acceptance of issue 10: the diff of the 2026 calendar against the
/// extended one lists only 2027 additions and the version change.
#[test]
fn diff_of_the_2026_nse_calendar_lists_only_2027_and_the_version() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let nse = std::fs::read_to_string(root.join("rollouts/calendars/nse.yaml")).unwrap();
    // The 2026 file as it was: 2027 and the provisional fields removed.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("nse-2026.yaml");
    std::fs::write(&old, nse_2026(&nse)).unwrap();
    let out = run(&[
        "diff",
        old.to_str().unwrap(),
        root.join("rollouts/calendars/nse.yaml").to_str().unwrap(),
    ]);
    assert!(out.contains("--- exit 0 ---"), "{out}");
    for line in out.lines() {
        let date_line =
            line.len() >= 14 && line.as_bytes()[3] == b' ' && line[4..8].parse::<u32>().is_ok();
        if date_line {
            assert!(
                line[4..].starts_with("2027-"),
                "a changed day outside 2027: {line}"
            );
        }
        if let Some(rest) = line.strip_prefix("  - ") {
            assert!(
                rest.starts_with("version:")
                    || rest.starts_with("coverage:")
                    || rest.starts_with("provisional_from: none"),
                "something removed: {line}"
            );
        }
    }
    assert!(out.contains("  + version: 2026.12.1"), "{out}");
    assert!(
        out.contains("  + coverage: 2025-01-01 to 2027-12-31"),
        "{out}"
    );
    assert!(
        out.contains("newly covered with their regular sessions only"),
        "{out}"
    );
}

/// `nse.yaml` without its 2027 data: valid_until 2026-12-31, version
/// 2026.11.1, no provisional fields, no 2027 entries or season.
fn nse_2026(text: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in text.lines() {
        if line.starts_with("provisional_note:") {
            skip = true;
            continue;
        }
        if skip && line.starts_with("  ") {
            continue;
        }
        skip = false;
        if line.starts_with("provisional_from:") || line.contains("{from: 2027-") {
            continue;
        }
        let line = line
            .replace("valid_until: 2027-12-31", "valid_until: 2026-12-31")
            .replace("version: \"2026.12.1\"", "version: \"2026.11.1\"");
        out.push_str(&line);
        out.push('\n');
    }
    // Drop list entries dated 2027 (each starts at `  - date: 2027-`).
    let mut kept = String::new();
    let mut dropping = false;
    for line in out.lines() {
        if line.starts_with("  - date: ") {
            dropping = line.starts_with("  - date: 2027-");
        } else if !line.starts_with("    ") {
            dropping = false;
        }
        if !dropping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}
