//! `muhurat validate FILE…`: every problem of every file, then an exit code.

use std::path::{Path, PathBuf};

use super::common::{load_spec_file, print_diagnostics};
use super::{EXIT_BAD_INPUT, EXIT_OK};

/// Load `--policy FILE` (the server's policy, as `policy:` in its config).
fn load_policy(path: &Path) -> Result<crate::policy::Policy, ()> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("{}: cannot read the policy file: {e}", path.display());
    })?;
    crate::policy::load(&path.display().to_string(), &text).map_err(|diags| {
        print_diagnostics(&diags);
    })
}

pub fn run(files: &[PathBuf], calendars: Option<&Path>, policy: Option<&Path>) -> i32 {
    let policy = match policy.map(load_policy).transpose() {
        Ok(p) => p,
        Err(()) => return EXIT_BAD_INPUT,
    };
    let mut failed = false;
    for f in files {
        match load_spec_file(f, calendars) {
            Ok(loaded) => {
                print_diagnostics(&loaded.warnings);
                // The same floor the server applies at POST /rollouts.
                if let Some(p) = &policy {
                    let violations = crate::policy::check(&loaded.spec, p);
                    if !violations.is_empty() {
                        failed = true;
                        for v in &violations {
                            eprintln!("{}: policy violation: {v}", f.display());
                        }
                        eprintln!("{}: {} policy violation(s)", f.display(), violations.len());
                        continue;
                    }
                }
                let cal = &loaded.calendar;
                println!(
                    "{}: ok — spec {} (hash {}), calendar {} {} covering {} to {}",
                    f.display(),
                    loaded.spec.name,
                    &loaded.spec.hash()[..12],
                    cal.name,
                    cal.version,
                    cal.valid_from,
                    cal.valid_until
                );
            }
            Err(diags) => {
                failed = true;
                print_diagnostics(&diags);
                let n = diags
                    .iter()
                    .filter(|d| d.severity == crate::diag::Severity::Error)
                    .count();
                eprintln!("{}: {n} error(s)", f.display());
            }
        }
    }
    if failed { EXIT_BAD_INPUT } else { EXIT_OK }
}
