//! Pure analysis over snapshots and their history: what the memory is doing over time and
//! whether it will run out.
//!
//! Everything here is computation: no file, no clock, no printing. Time comes from the
//! snapshots' `taken_at_ms`, so a recording replayed at any speed gives the same answers as the
//! live view that made it.
//!
//! - [`History`]: bounded series per GPU, per process identity `(pid, starttime)`, per workload
//!   and for host RAM, fed one [`Snapshot`](memwarden_probe::Snapshot) at a time.
//! - [`phase`]: stable / growing / shrinking / volatile per series, with hysteresis, an EMA rate
//!   and a confidence.
//! - [`oom`]: when a growing series will run out, as a time range, never a single number.
//! - [`survival`]: OK / TIGHT / OOM per process, with the reason.
//! - [`pelt`]: exact PELT changepoints with the L2 cost, breakpoint for breakpoint the same as
//!   the `ruptures` package; [`segments`] labels the pieces between them.
//! - [`recording`]: reads a JSON Lines recording (from a string) and skips bad lines with a count;
//!   [`report`] runs the whole analysis over one, offline.

pub mod history;
pub mod oom;
pub mod pelt;
pub mod phase;
pub mod recording;
pub mod report;
pub mod segments;
pub mod series;
pub mod survival;
pub mod synth;

pub use history::{History, HistoryConfig, ProcessTrack, ProcessVerdict, SeriesKey, Track};
pub use oom::{OomConfig, OomPrediction, OomPredictor};
pub use pelt::{PeltError, PeltParams, pelt};
pub use phase::{Phase, PhaseConfig, PhaseDetector, PhaseState};
pub use recording::{Recording, RecordingReader, SkippedLine, parse_line, parse_recording};
pub use report::{
    AnalyzeParams, OomEvent, PhaseSpan, Report, SeriesKind, SeriesReport, analyze, auto_penalty,
};
pub use segments::{LabelContext, Segment, SegmentLabel, label_segments};
pub use series::{Sample, Series};
pub use survival::{
    Framework, Survival, SurvivalConfig, SurvivalInput, Verdict, assess_gpu, survival,
};

/// Bytes per MiB: series values and changepoint costs are in MiB so that a penalty means the same
/// on a 8 GiB card and an 80 GiB one.
pub const MIB: f64 = 1_048_576.0;

/// Bytes to MiB as floating point.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}
