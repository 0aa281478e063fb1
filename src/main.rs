//! The `egret` binary: argv → command → exit code. Everything else lives in
//! the library (see ARCHITECTURE.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    let outcome = egret::cli::parse(std::env::args().skip(1))
        .map_err(egret::startup::Failure::invalid)
        .and_then(egret::cmd::run);
    // The one place a failure is printed and becomes the exit code.
    outcome.unwrap_or_else(|f| {
        eprintln!("egret: {f}");
        f.exit_code()
    })
}
