#![allow(dead_code)]

pub mod gguf_writer;
pub mod sysfs;

use std::path::Path;

/// Writes a safetensors file of `(name, dtype, shape)` tensors with zeroed data.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[u64])]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let size = match *dtype {
            "F32" => 4,
            "F16" | "BF16" => 2,
            "U8" | "I8" => 1,
            other => panic!("test writer does not know {other}"),
        } * shape.iter().product::<u64>();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}),
        );
        offset += size;
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(&text);
    std::fs::write(path, &out).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(out.len() as u64 + offset).unwrap();
}
