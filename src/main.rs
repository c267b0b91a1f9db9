//! The `lifeboat` command: argument parsing, logging, and turning errors into exit codes.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    // Two malloc arenas instead of up to 8 per core: a full backup of the 2 GiB benchmark
    // dataset peaked at 85-90 MiB instead of 95-96, in the same time (src/memory.rs).
    lifeboat::memory::limit_arenas(2);
    let args = cli::Cli::parse();
    cli::init_logging(
        args.verbose,
        matches!(args.command, cli::Command::Daemon(_)),
        args.log_format == "json",
    );
    if let Err(e) = lifeboat::interrupt::install_handlers() {
        eprintln!(
            "lifeboat: warning: cannot install signal handlers: {}",
            lifeboat::display::scrub(&e.to_string())
        );
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            // The reader of our output went away (`lifeboat snapshots | head`): stop quietly,
            // with the status a shell gives a command killed by SIGPIPE.
            if err.downcast_ref::<cli::OutputClosed>().is_some() {
                return ExitCode::from(cli::EXIT_BROKEN_PIPE);
            }
            print_error(&err);
            match err.downcast_ref::<lifeboat::Error>() {
                Some(e) if e.is_clean_interrupt() => return ExitCode::from(cli::EXIT_INTERRUPTED),
                Some(lifeboat::Error::WrongPassword { .. }) => {
                    return ExitCode::from(cli::EXIT_WRONG_PASSWORD)
                }
                Some(lifeboat::Error::Unreachable { .. }) => {
                    return ExitCode::from(cli::EXIT_UNREACHABLE)
                }
                Some(lifeboat::Error::AmbiguousSnapshot { .. }) => {
                    return ExitCode::from(cli::EXIT_AMBIGUOUS)
                }
                _ => {}
            }
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}

/// Prints a failed command's error. Messages name files of backed-up trees and repositories:
/// control characters are escaped (a newline in a name would forge a line). A config's list of
/// errors keeps one error a line.
fn print_error(err: &anyhow::Error) {
    if let Some(errors) = err.downcast_ref::<lifeboat::daemon::config::ConfigErrors>() {
        let head = if err.chain().count() > 1 {
            err.to_string()
        } else {
            "invalid config".to_string()
        };
        eprintln!(
            "lifeboat: error: {}:\n{}",
            lifeboat::display::scrub(&head),
            lifeboat::display::scrub_lines(&errors.to_string())
        );
        return;
    }
    // An ambiguous `latest`: one candidate and its command a line.
    if let Some(lifeboat::Error::AmbiguousSnapshot {
        selector,
        candidates,
    }) = err.downcast_ref::<lifeboat::Error>()
    {
        eprintln!(
            "lifeboat: error: {}",
            lifeboat::display::scrub_lines(&cli::ambiguous_message(selector, candidates))
        );
        return;
    }
    eprintln!(
        "lifeboat: error: {}",
        lifeboat::display::scrub(&format!("{err:#}"))
    );
}
