//! The `egret` binary: argv → command → exit code. Everything else lives in
//! the library (see ARCHITECTURE.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    match egret::cli::parse(std::env::args().skip(1)) {
        Ok(cmd) => egret::cmd::run(cmd),
        Err(e) => {
            eprintln!("egret: {e}");
            ExitCode::from(egret::cmd::EXIT_INVALID)
        }
    }
}
