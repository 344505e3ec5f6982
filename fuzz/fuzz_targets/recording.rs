//! A recording (JSON Lines of snapshots): streamed as `analyze` reads it, and one line alone.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = memwarden_analysis::RecordingReader::new();
    let _ = r.read_from(data);
    let mut rec = r.finish();
    for s in &mut rec.snapshots {
        memwarden_probe::sanitize::sanitize_snapshot(s);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = memwarden_analysis::parse_line(text);
    }
});
