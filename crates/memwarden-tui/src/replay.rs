//! Recordings: JSON Lines files of snapshots (what `memwarden record` writes), and a player
//! that hands them out at the recorded pace times a speed factor, paused or stepped by hand.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use memwarden_analysis::recording::RecordingReader;
use memwarden_probe::snapshot::Snapshot;

use crate::TuiError;

/// A recording read into memory, with what had to be skipped.
#[derive(Debug, Clone)]
pub struct Recording {
    pub samples: Vec<Snapshot>,
    /// Lines that were not a usable snapshot (a half line, a wrong version, garbage).
    pub skipped: usize,
    /// The first skipped line and why, for the status line.
    pub first_problem: Option<(usize, String)>,
}

impl Recording {
    /// Reads a recording, plain or zstd-compressed.
    pub fn open(path: &Path) -> Result<Recording, TuiError> {
        let reader =
            memwarden_analysis::recording::open(path).map_err(|e| TuiError::Recording {
                file: path.display().to_string(),
                why: e.to_string(),
            })?;
        Recording::read(reader, &path.display().to_string())
    }

    /// Reads every line; skips blank lines silently and bad ones with a count. Fails (naming
    /// the first bad line) only when nothing is usable.
    pub fn read(reader: impl BufRead, name: &str) -> Result<Recording, TuiError> {
        let mut r = RecordingReader::new();
        r.read_from(reader).map_err(|e| TuiError::Recording {
            file: name.to_string(),
            why: format!("line {}: {e}", r.lines() + 1),
        })?;
        let rec = r.finish();
        let first_problem = rec.skipped.first().map(|s| (s.line, s.reason.clone()));
        if rec.snapshots.is_empty() {
            let why = match &first_problem {
                Some((n, why)) => format!("no usable snapshot (line {n}: {why})"),
                None => "no snapshot in the file (it is empty)".into(),
            };
            return Err(TuiError::Recording {
                file: name.to_string(),
                why,
            });
        }
        Ok(Recording {
            samples: rec.snapshots,
            skipped: rec.skipped_count,
            first_problem,
        })
    }
}

/// Plays a recording: `due` says when the next sample is due on the wall clock, so the event
/// loop can sleep until then.
#[derive(Debug)]
pub struct Player {
    recording: Recording,
    /// Index of the sample shown last; `None` before the first.
    pos: Option<usize>,
    speed: f64,
    paused: bool,
    /// Wall-clock time the next sample is due (when playing).
    next_at: Option<Instant>,
}

pub const SPEEDS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

impl Player {
    pub fn new(recording: Recording, speed: f64) -> Player {
        Player {
            recording,
            pos: None,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
            paused: false,
            next_at: None,
        }
    }

    pub fn recording(&self) -> &Recording {
        &self.recording
    }

    pub fn len(&self) -> usize {
        self.recording.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recording.samples.is_empty()
    }

    /// 1-based position of the sample shown, for the status line.
    pub fn position(&self) -> usize {
        self.pos.map_or(0, |p| p + 1)
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn at_end(&self) -> bool {
        self.pos.is_some_and(|p| p + 1 >= self.len())
    }

    pub fn toggle_pause(&mut self, now: Instant) {
        self.paused = !self.paused;
        self.next_at = (!self.paused).then(|| now + self.gap_after_current());
    }

    pub fn faster(&mut self) {
        self.speed = SPEEDS
            .iter()
            .copied()
            .find(|&s| s > self.speed)
            .unwrap_or(self.speed);
    }

    pub fn slower(&mut self) {
        self.speed = SPEEDS
            .iter()
            .rev()
            .copied()
            .find(|&s| s < self.speed)
            .unwrap_or(self.speed);
    }

    /// When the event loop must wake for the next sample; `None` when paused or at the end.
    pub fn due(&self) -> Option<Instant> {
        if self.paused || self.at_end() {
            return None;
        }
        Some(self.next_at.unwrap_or_else(Instant::now))
    }

    /// Like [`Player::due`], with the first sample due at once.
    fn due_by(&self, now: Instant) -> Option<Instant> {
        if self.paused || self.at_end() {
            return None;
        }
        Some(self.next_at.unwrap_or(now))
    }

    /// The samples due at `now` (several when the speed outruns the screen), in order.
    pub fn advance(&mut self, now: Instant) -> Vec<&Snapshot> {
        let mut out = Vec::new();
        let mut indices = Vec::new();
        while let Some(due) = self.due_by(now) {
            if due > now {
                break;
            }
            let next = self.pos.map_or(0, |p| p + 1);
            self.pos = Some(next);
            indices.push(next);
            // Schedule from the previous due time, not from now, so the pace does not drift.
            self.next_at = Some(due + self.gap_after_current());
            if indices.len() > 10_000 {
                break;
            }
        }
        for i in indices {
            out.push(&self.recording.samples[i]);
        }
        out
    }

    /// One sample forward (the arrow keys); pauses playback.
    pub fn step_forward(&mut self) -> Option<&Snapshot> {
        self.paused = true;
        self.next_at = None;
        let next = self.pos.map_or(0, |p| p + 1);
        if next >= self.len() {
            return None;
        }
        self.pos = Some(next);
        self.recording.samples.get(next)
    }

    /// The samples up to one before the current one, to rebuild the history from the start
    /// (the analysis only moves forward); pauses playback.
    pub fn step_back(&mut self) -> Option<&[Snapshot]> {
        self.paused = true;
        self.next_at = None;
        let p = self.pos?;
        if p == 0 {
            return None;
        }
        self.pos = Some(p - 1);
        Some(&self.recording.samples[..p])
    }

    fn gap_after_current(&self) -> Duration {
        let Some(p) = self.pos else {
            return Duration::ZERO;
        };
        let s = &self.recording.samples;
        let gap_ms = match (s.get(p), s.get(p + 1)) {
            (Some(a), Some(b)) => b.taken_at_ms.saturating_sub(a.taken_at_ms),
            _ => 0,
        };
        // A gap of hours in a recording (the machine was off) plays as at most 5 s.
        let gap = Duration::from_millis(gap_ms).div_f64(self.speed);
        gap.min(Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn line(t: u64) -> String {
        format!(
            r#"{{"version":1,"taken_at_ms":{t},"hostname":"h","host":{{"mem_total_bytes":100,"mem_available_bytes":50,"swap_total_bytes":0,"swap_free_bytes":0,"psi_memory_some_avg10":null}},"gpus":[],"processes":[]}}"#
        )
    }

    #[test]
    fn skips_bad_lines_with_a_count() {
        let text = format!(
            "{}\n{{\"version\":1,\"taken\n\n{}\nhello\n{}\n",
            line(1000),
            r#"{"version":7,"taken_at_ms":1}"#,
            line(2000)
        );
        let r = Recording::read(text.as_bytes(), "rec.jsonl").unwrap();
        assert_eq!(r.samples.len(), 2);
        assert_eq!(r.skipped, 3);
        let (n, why) = r.first_problem.unwrap();
        assert_eq!(n, 2);
        assert!(why.contains("not JSON"), "{why}");
    }

    #[test]
    fn nothing_usable_names_the_line() {
        let text = "\n\n{\"version\":2,\"taken_at_ms\":1}\ngarbage\n";
        let e = Recording::read(text.as_bytes(), "rec.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rec.jsonl") && e.contains("line 3"), "{e}");
        assert!(e.contains("version 2"), "{e}");
        let e = Recording::read("".as_bytes(), "x").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn plays_at_the_recorded_pace_times_the_speed() {
        let text = format!("{}\n{}\n{}\n", line(0), line(1000), line(3000));
        let rec = Recording::read(text.as_bytes(), "r").unwrap();
        let mut p = Player::new(rec, 2.0);
        let t0 = Instant::now();
        assert_eq!(p.advance(t0).len(), 1);
        // The next sample is 1 s later in the recording: 500 ms at 2x.
        assert!(p.advance(t0 + Duration::from_millis(400)).is_empty());
        assert_eq!(p.advance(t0 + Duration::from_millis(500)).len(), 1);
        // The last one is due 1 s after that; both catch up at once when late.
        let got = p.advance(t0 + Duration::from_secs(10));
        assert_eq!(got.len(), 1);
        assert!(p.at_end());
        assert_eq!(p.due(), None);
    }

    #[test]
    fn pause_and_step() {
        let text = format!("{}\n{}\n{}\n", line(0), line(1000), line(2000));
        let rec = Recording::read(text.as_bytes(), "r").unwrap();
        let mut p = Player::new(rec, 1.0);
        let t0 = Instant::now();
        p.advance(t0);
        p.toggle_pause(t0);
        assert!(p.paused() && p.due().is_none());
        assert_eq!(p.step_forward().unwrap().taken_at_ms, 1000);
        assert_eq!(p.position(), 2);
        assert_eq!(p.step_back().unwrap().len(), 1);
        assert_eq!(p.position(), 1);
        assert!(p.step_back().is_none());
        p.faster();
        assert_eq!(p.speed(), 2.0);
        p.slower();
        p.slower();
        assert_eq!(p.speed(), 0.5);
    }
}
