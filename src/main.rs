//! The `crier` binary: parse the command line, set up logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = crier::cli::Cli::parse();
    crier::cli::init_logging(&cli);
    match crier::commands::run(&cli) {
        Ok(outcome) => outcome.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
