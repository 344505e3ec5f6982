//! The `memwarden` binary: argument parsing and wiring. The work lives in the library crates.

mod cli;
mod cmd;
mod view;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line naming the problem, never a backtrace: causes are joined with ": ".
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("memwarden: {msg}");
            ExitCode::from(2)
        }
    }
}
