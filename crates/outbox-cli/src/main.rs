//! The `outbox` command: migrate the schema, enqueue events from the shell, and
//! report the outbox's state.
//!
//! The binary only wires things together: it parses the command line, starts
//! logging, runs the command against the store chosen by the database URL, and
//! turns an error into its chain on stderr and an exit code that says what kind
//! of failure it was.

use std::process::ExitCode;

use clap::Parser;
use outbox::ErrorKind;

mod admin;
mod alerts;
mod cli;
mod commands;
mod dead_letters;
mod demo;
mod http;
mod publishers;
mod relay;
mod replay;
mod watch;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_logging(&args.log);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", err.chain());
            ExitCode::from(exit_code(err.kind()))
        }
    }
}

/// Exit codes follow `sysexits.h`, so scripts can tell bad input from a
/// misconfiguration from an outage.
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput => 65,
        ErrorKind::Config => 78,
        ErrorKind::Unavailable | ErrorKind::Transient => 69,
        _ => 1,
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
