//! Reading a recording: JSON Lines, one snapshot per line, as `memwarden record` writes them,
//! plain or zstd-compressed.
//!
//! A recording cut short (a crash, a full disk) ends in a half line, and one assembled by hand
//! may hold anything: bad lines are skipped and counted, never fatal by themselves. Whether a
//! recording with no usable line at all is an error is the caller's call.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use memwarden_probe::snapshot::{SNAPSHOT_VERSION, Snapshot};

/// The longest line read as a snapshot. A snapshot of thousands of processes is a few MiB; a
/// longer line is skipped without being held, so one huge line cannot take the memory with it.
pub const MAX_LINE_BYTES: usize = 32 << 20;

/// How many skipped lines keep their reason; the rest are only counted.
pub const SKIPPED_KEPT: usize = 1000;

/// The first bytes of a zstd frame: a compressed recording is known by them, whatever its name.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Opens a recording for reading, plain or zstd-compressed (`memwarden record --out
/// FILE.jsonl.zst`). A compressed recording cut short (a crash before its last frame was
/// finished) reads up to where its data stops, as a plain one cut short does: whatever
/// cannot be decoded any more is taken for the end, and a half line there is skipped.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let mut file = BufReader::new(File::open(path)?);
    if file.fill_buf()?.starts_with(&ZSTD_MAGIC) {
        let decoder = zstd::stream::read::Decoder::with_buffer(file)?;
        return Ok(Box::new(BufReader::new(UntilUndecodable(decoder))));
    }
    Ok(Box::new(file))
}

/// A decoder whose first error is the end of its data.
struct UntilUndecodable<R>(R);

impl<R: Read> Read for UntilUndecodable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Ok(0),
                ok => return ok,
            }
        }
    }
}

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
    /// The first [`SKIPPED_KEPT`] skipped lines.
    pub skipped: Vec<SkippedLine>,
    /// Every skipped line, counted.
    pub skipped_count: usize,
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

    /// Reads every line of `reader`, each bounded by [`MAX_LINE_BYTES`]: a longer one (or a file
    /// of NUL bytes with no newline at all) is skipped as it streams past, in constant memory.
    pub fn read_from(&mut self, mut reader: impl BufRead) -> io::Result<()> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let chunk = match reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], i + 1),
                None => (chunk, chunk.len()),
            };
            let ends = done > part.len();
            if !too_long {
                if line.len() + part.len() > MAX_LINE_BYTES {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(part);
                }
            }
            reader.consume(done);
            if ends {
                self.feed_bytes(&line, too_long);
                line.clear();
                too_long = false;
            }
        }
        if too_long || !line.is_empty() {
            self.feed_bytes(&line, too_long);
        }
        Ok(())
    }

    fn feed_bytes(&mut self, line: &[u8], too_long: bool) {
        if too_long {
            self.feed_unreadable(&format!("longer than {MAX_LINE_BYTES} bytes"));
            return;
        }
        match std::str::from_utf8(line) {
            Ok(text) => self.feed(text),
            Err(_) => self.feed_unreadable("not UTF-8 text"),
        }
    }

    fn skip(&mut self, reason: String) {
        self.recording.skipped_count += 1;
        if self.recording.skipped.len() >= SKIPPED_KEPT {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_recordings_read_like_plain_ones_even_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let line = |t: u64| {
            format!(
                "{{\"version\":{SNAPSHOT_VERSION},\"taken_at_ms\":{t},\"hostname\":\"h\",\
\"host\":{{\"mem_total_bytes\":1,\"mem_available_bytes\":1,\"swap_total_bytes\":0,\
\"swap_free_bytes\":0,\"psi_memory_some_avg10\":null}},\"gpus\":[],\"processes\":[]}}\n"
            )
        };
        let read = |path: &Path| {
            let mut r = RecordingReader::new();
            r.read_from(open(path).unwrap()).unwrap();
            r.finish()
        };
        // Two frames, as two runs of `record` appending to one file write them.
        let whole = dir.path().join("whole.jsonl.zst");
        let mut bytes = zstd::encode_all((line(1) + &line(2)).as_bytes(), 3).unwrap();
        bytes.extend(zstd::encode_all(line(3).as_bytes(), 3).unwrap());
        std::fs::write(&whole, &bytes).unwrap();
        assert!(bytes.starts_with(&ZSTD_MAGIC));
        let rec = read(&whole);
        assert_eq!(rec.snapshots.len(), 3);
        assert_eq!(rec.skipped_count, 0);
        // A frame never finished (the recorder was killed): what was flushed still reads.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        use std::io::Write;
        enc.write_all(line(1).as_bytes()).unwrap();
        enc.flush().unwrap();
        enc.write_all(line(2).as_bytes()).unwrap();
        enc.flush().unwrap();
        let cut = dir.path().join("cut.jsonl.zst");
        std::fs::write(&cut, enc.get_ref()).unwrap();
        assert_eq!(read(&cut).snapshots.len(), 2);
        // Plain files are read as they are, whatever their name.
        let plain = dir.path().join("plain.zst");
        std::fs::write(&plain, line(5)).unwrap();
        assert_eq!(read(&plain).snapshots[0].taken_at_ms, 5);
    }
    use std::io::Read;

    #[test]
    fn an_over_long_line_streams_past_and_the_next_one_is_read() {
        let long = std::io::repeat(0).take(MAX_LINE_BYTES as u64 + 10);
        let input = std::io::BufReader::new(long.chain(&b"\nnot json\nlast"[..]));
        let mut r = RecordingReader::new();
        r.read_from(input).unwrap();
        let rec = r.finish();
        assert_eq!(rec.skipped_count, 3);
        assert_eq!(rec.skipped[0].line, 1);
        assert!(rec.skipped[0].reason.contains("longer than"));
        assert_eq!(rec.skipped[1].line, 2);
        assert_eq!(rec.skipped[2].line, 3, "a last line without newline counts");
    }

    #[test]
    fn skipped_lines_are_counted_past_the_ones_kept() {
        let text = "x\n".repeat(SKIPPED_KEPT + 5);
        let mut r = RecordingReader::new();
        r.read_from(text.as_bytes()).unwrap();
        let rec = r.finish();
        assert_eq!(rec.skipped_count, SKIPPED_KEPT + 5);
        assert_eq!(rec.skipped.len(), SKIPPED_KEPT);
    }
}
