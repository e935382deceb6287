//! `host`: train, evaluate, predict, export and fetch (see `host --help`).

use std::process::ExitCode;

use clap::Parser;
use lenet_host::cli::{Cli, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
