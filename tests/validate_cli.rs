//! `muhurat validate` (and the other offline commands) on good and broken
//! specs, run as the real binary: exit 0 on the example specs; exit 2 on a
//! broken one, with `file:line:col: key.path:` for every problem.
//!
//! Fixtures live in `tests/fixtures/specs/`; each says in its first line what
//! is wrong with it. Paths are given relative to the crate root, which is the
//! working directory of every command here, so messages name them as written.

use std::process::{Command, Output};

const FIXTURES: &str = "tests/fixtures/specs";
const CALENDARS: &str = "rollouts/calendars";

/// Run `muhurat ARGS` in the crate root, without a calendar folder from the
/// environment (it would change where calendars are looked for).
fn muhurat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muhurat"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("MUHURAT_CALENDARS")
        .output()
        .expect("the muhurat binary runs")
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn validate(name: &str) -> Output {
    muhurat(&["validate", &fixture(name), "--calendars", CALENDARS])
}

/// Exit code 2, and every `line` appears at the start of a line of stderr.
fn assert_bad_input(o: &Output, lines: &[String]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr:\n{err}");
    for want in lines {
        assert!(
            err.lines().any(|l| l.starts_with(want.as_str())),
            "stderr has no line starting `{want}`:\n{err}"
        );
    }
}

#[test]
fn example_specs_are_valid() {
    let o = muhurat(&[
        "validate",
        "rollouts/kite-api.yaml",
        "rollouts/console-consul.yaml",
    ]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    // Found beside the specs, in rollouts/calendars/, without --calendars.
    assert!(
        out.contains("rollouts/kite-api.yaml: ok — spec kite-api (hash "),
        "{out}"
    );
    assert!(
        out.contains("rollouts/console-consul.yaml: ok — spec console (hash "),
        "{out}"
    );
    assert!(out.contains("calendar nse "), "{out}");
    assert!(!err.contains("error"), "{err}");
}

#[test]
fn several_errors_are_all_listed_with_line_and_key() {
    let f = fixture("several-errors.yaml");
    let o = validate("several-errors.yaml");
    let want: Vec<String> = [
        "2:7: name: `Broken_Spec` is not a valid name",
        "4:20: segments[1]: the calendar has no segment `fx`",
        "6:13: windows.timezone: unknown time zone `Asia/Bombay/Fort`",
        "7:18: windows.min_remaining: `15` ends in a number without a unit",
        "10:13: windows.allow[0].cron: day of week range `fri-mon` runs backwards",
        "14:49: traffic.haproxy.endpoints[1]: `tcp:10.0.0.5` has no port",
        "16:41: traffic.haproxy.pools.green[1]: server `b2` is in both pools",
        "21:14: analysis.checks[0].query: unknown template variable `{{canary}}`",
        "24:17: steps[0].set_weight: weight 0 is not 1-100",
        "25:22: steps[1].bake.sessions: must be at least 1",
        "27:17: steps[3].set_weight: the last set_weight is 50, not 100",
    ]
    .iter()
    .map(|s| format!("{f}:{s}"))
    .collect();
    assert_bad_input(&o, &want);
    let err = stderr(&o);
    // Each problem once, each says how to fix it, and the count adds up.
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(&f)).collect();
    for w in &want {
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(w.as_str())).count(),
            1,
            "{w}"
        );
    }
    let problems: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(" — ") && !l.contains(": warning: "))
        .collect();
    assert_eq!(problems.len(), want.len(), "{err}");
    assert!(err.contains(&format!("{f}: 11 error(s)")), "{err}");
    // Errors are printed in file order.
    let firsts: Vec<usize> = want
        .iter()
        .map(|w| err.find(w.as_str()).expect("listed"))
        .collect();
    assert!(firsts.windows(2).all(|p| p[0] < p[1]), "{err}");
}

#[test]
fn structural_errors_name_line_and_key() {
    let cases = [
        (
            "unknown-key.yaml",
            "11:12: steps[1].bake.sesions: unknown field `sesions`",
        ),
        (
            "wrong-type.yaml",
            "10:17: steps[0].set_weight: invalid type: string \"five\"",
        ),
        // Placed at the offending step, not at the first one.
        (
            "two-keys-step.yaml",
            "11:5: steps[1]: a step has exactly one of the keys",
        ),
    ];
    for (name, want) in cases {
        let o = validate(name);
        assert_bad_input(&o, &[format!("{}:{want}", fixture(name))]);
        assert!(
            stderr(&o).contains(&format!("{}: 1 error(s)", fixture(name))),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let f = fixture("syntax-error.yaml");
    let o = validate("syntax-error.yaml");
    // The tab is on line 7. No key path: the parser cannot know one.
    assert_bad_input(
        &o,
        &[format!(
            "{f}:7:1: found character that cannot start any token"
        )],
    );
    assert!(stderr(&o).contains("fix the YAML syntax"), "{}", stderr(&o));
}

#[test]
fn missing_calendar_names_the_file_looked_for() {
    let f = fixture("missing-calendar.yaml");
    let o = validate("missing-calendar.yaml");
    assert_bad_input(
        &o,
        &[format!(
            "{f}:3:11: calendar: calendar `lse` not found: no file {CALENDARS}/lse.yaml"
        )],
    );
    assert!(stderr(&o).contains("--calendars DIR"), "{}", stderr(&o));
}

#[test]
fn calendar_is_looked_for_beside_the_spec_by_default() {
    // The fixtures folder has no calendars/ of its own.
    let f = fixture("warnings-only.yaml");
    let o = muhurat(&["validate", &f]);
    assert_bad_input(
        &o,
        &[format!(
            "{f}:3:11: calendar: calendar `nse` not found: no file {FIXTURES}/calendars/nse.yaml"
        )],
    );
    // MUHURAT_CALENDARS stands in for --calendars.
    let o = Command::new(env!("CARGO_BIN_EXE_muhurat"))
        .args(["validate", &f])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MUHURAT_CALENDARS", CALENDARS)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn warnings_are_printed_but_do_not_fail() {
    let f = fixture("warnings-only.yaml");
    let o = validate("warnings-only.yaml");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(stdout(&o).contains(&format!("{f}: ok — spec risky")));
    for want in [
        format!("{f}: warning: analysis: no analysis"),
        format!("{f}:9:1: warning: steps: no approval step"),
        format!("{f}:10:17: warning: steps[0].set_weight: the first weight is 50%"),
    ] {
        assert!(err.lines().any(|l| l.starts_with(&want)), "{want}\n{err}");
    }
}

#[test]
fn one_broken_file_fails_the_run_and_the_others_are_still_checked() {
    let broken = fixture("unknown-key.yaml");
    let o = muhurat(&[
        "validate",
        &broken,
        "rollouts/kite-api.yaml",
        "--calendars",
        CALENDARS,
    ]);
    assert_bad_input(&o, &[format!("{broken}:11:12: steps[1].bake.sesions:")]);
    assert!(
        stdout(&o).contains("rollouts/kite-api.yaml: ok"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn nonexistent_spec_file_is_bad_input() {
    let f = fixture("no-such-spec.yaml");
    let o = muhurat(&["validate", &f, "--calendars", CALENDARS]);
    assert_bad_input(&o, &[format!("{f}: cannot read the file: ")]);
    let err = stderr(&o);
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(err.contains("check the path"), "{err}");
}

#[test]
fn validate_without_files_is_a_usage_error() {
    let o = muhurat(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn windows_and_plan_refuse_a_broken_spec() {
    let f = fixture("several-errors.yaml");
    for cmd in ["windows", "plan"] {
        let o = muhurat(&[
            cmd,
            &f,
            "--calendars",
            CALENDARS,
            "--from",
            "2026-11-27T00:00:00+05:30",
        ]);
        assert_bad_input(
            &o,
            &[
                format!("{f}:2:7: name:"),
                format!("{f}:27:17: steps[3].set_weight:"),
            ],
        );
        assert!(stdout(&o).is_empty(), "{cmd} printed: {}", stdout(&o));
    }
    let f = fixture("syntax-error.yaml");
    for cmd in ["windows", "plan"] {
        let o = muhurat(&[cmd, &f, "--calendars", CALENDARS]);
        assert_bad_input(&o, &[format!("{f}:7:1: ")]);
    }
}

/// Regression: a verb writing into a closed pipe (`muhurat windows … |
/// head`) panicked ("failed printing to stdout: Broken pipe", exit 101).
/// Now it ends as Unix tools do: killed quietly by SIGPIPE.
#[test]
fn cli_panicked_writing_into_a_closed_pipe() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_muhurat"))
        .args([
            "windows",
            "rollouts/kite-api.yaml",
            "--calendars",
            CALENDARS,
            "--from",
            "2026-12-07T00:00:00+05:30",
            "--days",
            "300",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("MUHURAT_CALENDARS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the muhurat binary runs");
    // Close the reading end before the first line is written: every write
    // of the command meets a closed pipe.
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("muhurat ends");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "stderr:\n{err}");
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}\n{err}",
        o.status
    );
}
