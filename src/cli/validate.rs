//! `muhurat validate FILE…`: every problem of every file, then an exit code.

use std::path::{Path, PathBuf};

use super::common::{load_spec_file, print_diagnostics};
use super::{EXIT_BAD_INPUT, EXIT_OK};

pub fn run(files: &[PathBuf], calendars: Option<&Path>) -> i32 {
    let mut failed = false;
    for f in files {
        match load_spec_file(f, calendars) {
            Ok(loaded) => {
                print_diagnostics(&loaded.warnings);
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
