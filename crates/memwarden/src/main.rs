//! The `memwarden` binary: argument parsing and wiring. The work lives in the library crates.

mod cli;
mod cmd;
mod view;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own message spans several lines; keep its first, which names the problem.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("memwarden: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
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
