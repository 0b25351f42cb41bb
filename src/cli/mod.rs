//! The command line (DESIGN §6): one module per subcommand.
//!
//! Commands return an exit code rather than calling `exit` themselves, so
//! tests can run them in-process. Exit codes are a contract: 0 success,
//! 1 the rollout failed, 2 bad input, 3 unreachable/internal error,
//! 4 timeout, 5 a human must act, 6 refused.

mod common;
mod plan;
pub mod server;
mod validate;
mod windows;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use common::{find_calendar, load_calendar_file, load_spec_file};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;
pub const EXIT_INTERNAL: i32 = 3;

/// Phased deployments that move traffic only while the markets are closed.
#[derive(Debug, Parser)]
#[command(name = "muhurat", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check rollout specs (and the calendars they name); print every problem.
    Validate {
        /// Spec files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Folder of calendar files NAME.yaml (default: calendars/ beside the spec).
        #[arg(long, env = "MUHURAT_CALENDARS")]
        calendars: Option<PathBuf>,
    },
    /// Show the permitted windows of a spec: when traffic may be raised.
    Windows {
        file: PathBuf,
        #[arg(long, env = "MUHURAT_CALENDARS")]
        calendars: Option<PathBuf>,
        /// Start, RFC 3339 with an offset (default: now, rounded up to the second).
        #[arg(long)]
        from: Option<String>,
        /// End, RFC 3339 with an offset (default: 7 days after --from).
        #[arg(long, conflicts_with = "days")]
        to: Option<String>,
        /// Length of the range in days.
        #[arg(long)]
        days: Option<u32>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Run the controller, API and dashboard (one process per database).
    Server(server::ServerArgs),
    /// Project when each step of a spec would happen if every check passes.
    Plan {
        file: PathBuf,
        #[arg(long, env = "MUHURAT_CALENDARS")]
        calendars: Option<PathBuf>,
        /// Start, RFC 3339 with an offset (default: now, rounded up to the second).
        #[arg(long)]
        from: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
}

/// Run a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let clock = crate::clock::SystemClock;
    match cli.command {
        Command::Validate { files, calendars } => validate::run(&files, calendars.as_deref()),
        Command::Server(args) => server::run(&args),
        Command::Windows {
            file,
            calendars,
            from,
            to,
            days,
            output,
        } => windows::run(
            &clock,
            &file,
            calendars.as_deref(),
            from.as_deref(),
            to.as_deref(),
            days,
            output,
        ),
        Command::Plan {
            file,
            calendars,
            from,
            output,
        } => plan::run(&clock, &file, calendars.as_deref(), from.as_deref(), output),
    }
}
