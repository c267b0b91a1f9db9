//! The `lifeboat` command: argument parsing, logging, and turning errors into exit codes.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lifeboat: error: {err:#}");
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
