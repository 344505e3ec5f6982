//! Reading a recording: JSON Lines, one snapshot per line, as `memwarden record` writes them.
//!
//! A recording cut short (a crash, a full disk) ends in a half line, and one assembled by hand
//! may hold anything: bad lines are skipped and counted, never fatal by themselves. Whether a
//! recording with no usable line at all is an error is the caller's call.

use memwarden_probe::snapshot::{SNAPSHOT_VERSION, Snapshot};

/// A line that was not used, and why (1-based line number).
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedLine {
    pub line: usize,
    pub reason: String,
}

/// The usable snapshots of a recording, in file order, and the lines that were skipped.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub snapshots: Vec<Snapshot>,
    pub skipped: Vec<SkippedLine>,
}

/// Parses one line. Blank lines are `Ok(None)`.
pub fn parse_line(line: &str) -> Result<Option<Snapshot>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    // The common case in one pass; only a line that fails is looked at again, for the version
    // first, so that a newer format says so instead of failing on a field it renamed.
    match serde_json::from_str::<Snapshot>(line) {
        Ok(s) if s.version == SNAPSHOT_VERSION => Ok(Some(s)),
        Ok(s) => Err(format!(
            "version {}, expected {SNAPSHOT_VERSION}",
            s.version
        )),
        Err(e) => {
            #[derive(serde::Deserialize)]
            struct Versioned {
                version: Option<serde_json::Value>,
            }
            match serde_json::from_str::<Versioned>(line) {
                Err(e) => Err(format!("not JSON: {e}")),
                Ok(Versioned { version: None }) => {
                    Err("no version field: not a memwarden snapshot".to_string())
                }
                Ok(Versioned { version: Some(v) }) if v != SNAPSHOT_VERSION => {
                    Err(format!("version {v}, expected {SNAPSHOT_VERSION}"))
                }
                Ok(_) => Err(format!("not a snapshot: {e}")),
            }
        }
    }
}

/// Accumulates lines; snapshots older than the one before are skipped (time only moves forward
/// in one recording).
#[derive(Debug, Default)]
pub struct RecordingReader {
    recording: Recording,
    line_no: usize,
}

impl RecordingReader {
    pub fn new() -> RecordingReader {
        RecordingReader::default()
    }

    /// Feeds the next line of the file.
    pub fn feed(&mut self, line: &str) {
        self.line_no += 1;
        match parse_line(line) {
            Ok(None) => {}
            Ok(Some(s)) => {
                if let Some(prev) = self.recording.snapshots.last()
                    && s.taken_at_ms < prev.taken_at_ms
                {
                    self.skip(format!(
                        "taken at {} ms, before the line above it ({} ms)",
                        s.taken_at_ms, prev.taken_at_ms
                    ));
                    return;
                }
                self.recording.snapshots.push(s);
            }
            Err(reason) => self.skip(reason),
        }
    }

    /// Feeds a line that could not be read as text (invalid UTF-8).
    pub fn feed_unreadable(&mut self, why: &str) {
        self.line_no += 1;
        self.skip(why.to_string());
    }

    fn skip(&mut self, reason: String) {
        let reason = memwarden_probe::sanitize::sanitize(&reason, 200);
        self.recording.skipped.push(SkippedLine {
            line: self.line_no,
            reason,
        });
    }

    pub fn lines(&self) -> usize {
        self.line_no
    }

    pub fn finish(self) -> Recording {
        self.recording
    }
}

/// Parses a whole recording held in memory.
pub fn parse_recording(text: &str) -> Recording {
    let mut r = RecordingReader::new();
    for line in text.lines() {
        r.feed(line);
    }
    r.finish()
}
