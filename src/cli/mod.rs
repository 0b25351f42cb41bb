//! The command line (docs/design.md §6): one module per subcommand.
//!
//! Commands return an exit code rather than calling `exit` themselves, so
//! tests can run them in-process. Exit codes are a contract: 0 success,
//! 1 the rollout failed, 2 bad input, 3 unreachable/internal error,
//! 4 timeout, 5 a human must act, 6 refused.

mod calendar;
mod common;
mod plan;
mod pools;
pub mod remote;
mod rollouts;
pub mod server;
pub mod start;
mod token;
mod validate;
mod windows;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use calendar::CalendarCommand;
pub use remote::RemoteArgs;
pub use start::{StartArgs, WaitFor};
pub use token::{Role, TokenCommand};

pub use common::{find_calendar, load_calendar_file, load_spec_file};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;
pub const EXIT_INTERNAL: i32 = 3;
/// `--timeout` reached while the rollout is healthy and in progress.
pub const EXIT_TIMEOUT: i32 = 4;
/// A human must act: the rollout is paused, or `pools` says not safe.
pub const EXIT_HUMAN: i32 = 5;
/// Authentication or authorisation refused (401/403).
pub const EXIT_AUTH: i32 = 6;

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
        /// Also check against a server policy file (YAML, as `policy:` in the server config).
        #[arg(long)]
        policy: Option<PathBuf>,
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
    /// Ask the server which pool is idle and whether it is safe to deploy to
    /// it (exit 5 when not).
    Pools {
        file: PathBuf,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Move all traffic of a spec's target to POOL and record it as live
    /// (before the first rollout, when both pools carry traffic).
    Adopt {
        file: PathBuf,
        /// The pool to make live.
        #[arg(long)]
        live: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Start a rollout of a spec for a revision; print its id; optionally wait.
    Start(StartArgs),
    /// Show a rollout (an id, or a spec name: its active rollout), or list them.
    Status {
        rollout: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Hold a rollout where it is (decreases and checks continue).
    Pause {
        rollout: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Let a paused rollout go on.
    Resume {
        rollout: String,
        /// Step past a no-data deadlock (approver/admin; needs --reason; audited).
        #[arg(long, requires = "reason")]
        override_checks: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Take the canary pool to 0 and drain it; the rollout ends `aborted`.
    Abort {
        rollout: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Approve the step a rollout waits at, after showing what happens next.
    Approve {
        rollout: String,
        /// The 0-based step to approve [default: the one it waits at].
        #[arg(long)]
        step: Option<u64>,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Turn the global freeze on or off: no raise anywhere while on.
    Freeze {
        #[arg(value_enum)]
        state: Switch,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Ask the server to check a spec's traffic target (exit 1 on any problem).
    CheckTarget {
        file: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Ask the server to run a spec's metric checks once (exit 1 on any failure).
    CheckMetrics {
        file: PathBuf,
        #[arg(long)]
        revision: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Look at, compare and check exchange calendars (offline).
    #[command(subcommand)]
    Calendar(CalendarCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Cli {
    /// Whether this command may die of SIGPIPE like any Unix tool: every
    /// verb but `server` (see [`default_sigpipe`]).
    pub fn ends_on_closed_pipe(&self) -> bool {
        !matches!(self.command, Command::Server(_))
    }
}

/// A verb writing into a closed pipe (`muhurat windows … | head`) ends
/// quietly, as Unix tools do, instead of panicking in `println!`: Rust
/// ignores SIGPIPE, so the write fails and `println!` panics. Only for the
/// CLI verbs: the server keeps it ignored — a client that hangs up must be
/// an error on that one socket, never the end of the process. Call it from
/// `main`, before any thread starts.
pub fn default_sigpipe() {
    // SAFETY: called from `main` before any thread is spawned; it changes
    // the disposition of one signal and touches no memory.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Run a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let clock = crate::clock::SystemClock;
    match cli.command {
        Command::Validate {
            files,
            calendars,
            policy,
        } => validate::run(&files, calendars.as_deref(), policy.as_deref()),
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
        Command::Pools {
            file,
            output,
            remote,
        } => pools::pools(&file, output, &remote),
        Command::Adopt { file, live, remote } => pools::adopt(&file, &live, &remote),
        Command::Start(args) => start::run(&args),
        Command::Status {
            rollout,
            output,
            remote,
        } => rollouts::status(rollout.as_deref(), output, &remote),
        Command::Pause {
            rollout,
            reason,
            remote,
        } => rollouts::pause(&rollout, reason.as_deref(), &remote),
        Command::Resume {
            rollout,
            override_checks,
            reason,
            remote,
        } => rollouts::resume(&rollout, override_checks, reason.as_deref(), &remote),
        Command::Abort {
            rollout,
            reason,
            remote,
        } => rollouts::abort(&rollout, &reason, &remote),
        Command::Approve {
            rollout,
            step,
            comment,
            remote,
        } => rollouts::approve(&rollout, step, comment.as_deref(), &remote),
        Command::Freeze {
            state,
            reason,
            remote,
        } => pools::freeze(state == Switch::On, &reason, &remote),
        Command::CheckTarget { file, remote } => pools::check("check-target", &file, None, &remote),
        Command::CheckMetrics {
            file,
            revision,
            remote,
        } => pools::check("check-metrics", &file, revision.as_deref(), &remote),
        Command::Token(cmd) => token::run(&cmd),
        Command::Calendar(cmd) => calendar::run(&clock, &cmd),
    }
}
