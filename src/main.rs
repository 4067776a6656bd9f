//! The `crier` binary: parse the command line, set up logging, run, map to an exit code.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system's malloc (the `mimalloc` feature, on by default):
/// compared side by side in the README's "Speed and memory".
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
