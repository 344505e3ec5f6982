//! The TOML configs: the broker's (`serve --config`) and `top`'s.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = memwarden_broker::config::Config::parse(text, "fuzz.toml", None);
    let _ = memwarden_tui::config::Config::parse(text);
});
