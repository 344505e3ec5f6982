//! memwarden-tui: the live terminal view (`memwarden top`). GPU and host memory, who holds it
//! (a memory map per device), where it is heading (phases, OOM ranges, survival verdicts from
//! the analysis), and what to do about it (kill, safely).
//!
//! The machine is read on a background thread ([`live`]) or played back from a recording
//! ([`replay`]); the event loop ([`run`]) never waits on /proc or the GPU driver. Everything
//! drawn comes from [`app::App`], so the screens can be rendered on a test backend.

pub mod analysis;
pub mod app;
pub mod config;
pub mod insight;
pub mod keys;
pub mod kill;
pub mod live;
pub mod memmap;
pub mod replay;
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
    #[error("{0}")]
    Probe(#[from] memwarden_probe::ProbeError),
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}
