//! The `memwarden` binary: argument parsing and wiring. The work lives in the library crates.

mod cli;
mod cmd;
mod help;
mod view;

use std::process::ExitCode;

use clap::error::ErrorKind;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Bare `memwarden`: the usage with the command list, as a mistake (to stderr).
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("memwarden: {} (see --help)", clap_one_line(&e.to_string()));
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

/// clap's message on one line. It spans several: the problem, then for some problems what it
/// is about on indented lines (the missing arguments), then a blank line, a usage line and
/// tips. The problem, its indented lines and a "did you mean" tip name everything; the rest is
/// left to `--help`.
fn clap_one_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut out = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let details: Vec<&str> = lines
        .by_ref()
        .take_while(|l| l.starts_with([' ', '\t']) && !l.trim().is_empty())
        .map(str::trim)
        .collect();
    if !details.is_empty() {
        if !out.ends_with(':') {
            out.push(':');
        }
        out.push(' ');
        out.push_str(&details.join(", "));
    }
    let similar = lines
        .filter_map(|l| l.trim().strip_prefix("tip: "))
        .find_map(|t| {
            t.split_once(" exist: ")
                .or_else(|| t.split_once(" exists: "))
        });
    if let Some((_, names)) = similar {
        out.push_str(&format!("; did you mean {names}?"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clap_one_line;

    #[test]
    fn clap_messages_keep_the_names_on_one_line() {
        let missing = "error: the following required arguments were not provided:\n  \
                       --per-worker <SIZE>\n  --want <N>\n\nUsage: memwarden fit --per-worker \
                       <SIZE> --want <N>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_one_line(missing),
            "the following required arguments were not provided: --per-worker <SIZE>, --want <N>"
        );
        let unexpected = "error: unexpected argument '--wnt' found\n\n  tip: a similar argument \
                          exists: '--want'\n\nUsage: memwarden fit [OPTIONS]\n";
        assert_eq!(
            clap_one_line(unexpected),
            "unexpected argument '--wnt' found; did you mean '--want'?"
        );
        let sub = "error: unrecognized subcommand 'snapshto'\n\n  tip: a similar subcommand \
                   exists: 'snapshot'\n\nUsage: memwarden [OPTIONS] <COMMAND>\n";
        assert_eq!(
            clap_one_line(sub),
            "unrecognized subcommand 'snapshto'; did you mean 'snapshot'?"
        );
    }
}
