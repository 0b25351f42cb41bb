//! Parse the command line and dispatch; nothing else.

use clap::Parser;

fn main() {
    let cli = muhurat::cli::Cli::parse();
    if cli.ends_on_closed_pipe() {
        muhurat::cli::default_sigpipe();
    }
    let code = muhurat::cli::run(cli);
    std::process::exit(code);
}
