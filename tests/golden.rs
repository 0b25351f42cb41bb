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
