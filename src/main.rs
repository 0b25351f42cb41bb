//! Parse the command line and dispatch; nothing else.

use clap::Parser;

fn main() {
    let cli = muhurat::cli::Cli::parse();
    let code = muhurat::cli::run(cli);
    std::process::exit(code);
}
