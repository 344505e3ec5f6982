//! A GGUF header from anyone: bytes in memory, of the length they really have.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = memwarden_plan::gguf::parse(std::io::Cursor::new(data), data.len() as u64);
});
