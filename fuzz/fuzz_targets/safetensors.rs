//! A safetensors file's header: the 8-byte length, the JSON it promises, and the tensors it
//! lists checked against the data that follows.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = memwarden_plan::safetensors::parse_shard(data);
});
