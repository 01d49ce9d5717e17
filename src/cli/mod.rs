//! The `rudder-kustomer` command line: `plan` (offline dry run: the requests each event
//! would cause) and `send` (backfill and replay through the Lambda's own [`Pipeline`]).
//! Options are parsed in one place for both; `src/bin/` only calls [`main`].
//!
//! [`Pipeline`]: crate::pipeline::Pipeline

#[cfg(feature = "deliver")]
pub mod checkpoint;
pub mod input;
#[cfg(feature = "deliver")]
mod journal;
mod options;
mod plan;
#[cfg(feature = "deliver")]
pub mod progress;
#[cfg(feature = "deliver")]
mod send;

use std::ffi::OsString;
use std::process::ExitCode;

use options::{parse_options, USAGE};
pub use options::{
    Command, Options, EXIT_INTERRUPTED, EXIT_REFUSED_KEY, EXIT_SOME_FAILED, EXIT_USAGE,
};

/// `rudder-kustomer SUBCOMMAND ...`: `args` without the program name.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let program = "rudder-kustomer";
    let mut args = args.into_iter();
    let command = match args.next().as_ref().and_then(|a| a.to_str()) {
        Some("plan") => Command::Plan,
        Some("send") => Command::Send,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("{program}: unknown subcommand {other:?}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
        None => {
            eprintln!("{program}: a subcommand is required\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    run(program, command, args.collect())
}

/// One subcommand: `transform` calls this with [`Command::Plan`].
pub fn run(program: &str, command: Command, args: Vec<OsString>) -> ExitCode {
    let options = match parse_options(command, args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{program}: {message}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match command {
        #[cfg(feature = "deliver")]
        Command::Send if !options.dry_run => send::run(program, &options),
        #[cfg(not(feature = "deliver"))]
        Command::Send if !options.dry_run => {
            eprintln!("{program}: this build has no send (built without the `deliver` feature)");
            ExitCode::from(EXIT_USAGE)
        }
        _ => plan::run(program, &options),
    }
}
