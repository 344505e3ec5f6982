//! A model's `config.json` (safetensors models), as JSON and then as the model description.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = memwarden_plan::safetensors::from_config(&v);
    }
});
