//! What local inference servers answer: Prometheus text and JSON, per server kind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use memwarden_probe::scrape::{llamacpp, ollama, prometheus, sglang, tgi, vllm};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    match which % 6 {
        0 => {
            let _ = prometheus::parse(text);
        }
        1 => {
            let _ = llamacpp::parse(text);
        }
        2 => {
            let _ = ollama::parse(text);
        }
        3 => {
            let _ = sglang::parse(text);
        }
        4 => {
            let _ = tgi::parse(text);
        }
        _ => {
            let _ = vllm::parse(text);
        }
    }
});
