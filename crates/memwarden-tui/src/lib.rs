//! memwarden-tui: the live terminal view (`memwarden top`). GPU and host memory, who holds it
//! (a memory map per device), where it is heading (phases, OOM ranges, survival verdicts from
//! the analysis), and what to do about it (kill, safely).
//!
//! The machine is read on a background thread ([`live`]) or played back from a recording
//! ([`replay`]); the event loop ([`run`]) never waits on /proc or the GPU driver. Everything
//! drawn comes from [`app::App`], so the screens can be rendered on a test backend.

pub mod analysis;
pub mod app;
pub mod broker;
pub mod config;
pub mod insight;
pub mod keys;
pub mod kill;
pub mod live;
pub mod memmap;
pub mod replay;
mod resident;
pub mod run;
pub mod table;
pub mod theme;
pub mod ui;

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("{file}: {why}")]
    Recording { file: String, why: String },
    #[error("bad config {file}: {why}")]
    Config { file: String, why: String },
    #[error(transparent)]
    Probe(#[from] memwarden_probe::ProbeError),
    /// Not `#[from]`, which would also make the error its `source()`: it is in the message
    /// already, and the binary prints the whole chain.
    #[error("terminal: {0}")]
    Terminal(std::io::Error),
}

impl From<std::io::Error> for TuiError {
    fn from(e: std::io::Error) -> TuiError {
        TuiError::Terminal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memwarden_probe::error_chain as chain;

    #[test]
    fn errors_say_their_cause_once() {
        let probe = memwarden_probe::ProbeError::Read {
            file: "/proc/meminfo".into(),
            cause: std::io::Error::other("gone"),
        };
        assert_eq!(
            chain(&TuiError::from(probe)),
            "cannot read /proc/meminfo: gone"
        );
        assert_eq!(
            chain(&TuiError::from(std::io::Error::other("no tty"))),
            "terminal: no tty"
        );
    }
}
