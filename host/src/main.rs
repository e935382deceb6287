//! `host`: train, evaluate, predict, export and fetch (see `host --help`).

use std::process::ExitCode;

use lenet_host::cli::{error_message, exit_status, parse_args, run};

fn main() -> ExitCode {
    match run(parse_args()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_message(&e));
            ExitCode::from(exit_status(&e))
        }
    }
}
