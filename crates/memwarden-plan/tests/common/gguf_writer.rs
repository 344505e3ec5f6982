//! A small GGUF writer for tests and benchmarks: metadata of every value type and tensor infos
//! with known shapes. Tensor data is a sparse hole, so a "70 GB" model costs no disk.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

pub enum Meta {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Element type id and the encoded elements.
    Array(u32, Vec<Meta>),
}

impl Meta {
    pub fn type_id(&self) -> u32 {
        match self {
            Meta::U8(_) => 0,
            Meta::I8(_) => 1,
            Meta::U16(_) => 2,
            Meta::I16(_) => 3,
            Meta::U32(_) => 4,
            Meta::I32(_) => 5,
            Meta::F32(_) => 6,
            Meta::Bool(_) => 7,
            Meta::Str(_) => 8,
            Meta::Array(..) => 9,
            Meta::U64(_) => 10,
            Meta::I64(_) => 11,
            Meta::F64(_) => 12,
        }
    }

    pub fn strs(items: &[&str]) -> Meta {
        Meta::Array(8, items.iter().map(|s| Meta::Str(s.to_string())).collect())
    }

    pub fn i32s(items: &[i32]) -> Meta {
        Meta::Array(5, items.iter().map(|&v| Meta::I32(v)).collect())
    }

    pub fn bools(items: &[bool]) -> Meta {
        Meta::Array(7, items.iter().map(|&v| Meta::Bool(v)).collect())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Meta::U8(v) => out.push(*v),
            Meta::I8(v) => out.push(*v as u8),
            Meta::U16(v) => out.extend(v.to_le_bytes()),
            Meta::I16(v) => out.extend(v.to_le_bytes()),
            Meta::U32(v) => out.extend(v.to_le_bytes()),
            Meta::I32(v) => out.extend(v.to_le_bytes()),
            Meta::F32(v) => out.extend(v.to_le_bytes()),
            Meta::Bool(v) => out.push(*v as u8),
            Meta::Str(s) => put_str(out, s),
            Meta::U64(v) => out.extend(v.to_le_bytes()),
            Meta::I64(v) => out.extend(v.to_le_bytes()),
            Meta::F64(v) => out.extend(v.to_le_bytes()),
            Meta::Array(ty, items) => {
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for i in items {
                    i.encode(out);
                }
            }
        }
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
}

/// (block elements, block bytes) of the types the tests use.
pub fn block(ggml_type: u32) -> (u64, u64) {
    match ggml_type {
        0 => (1, 4),
        1 | 30 => (1, 2),
        2 => (32, 18),
        8 => (32, 34),
        12 => (256, 144),
        14 => (256, 210),
        other => panic!("test writer does not know type {other}"),
    }
}

pub fn tensor_bytes(t: &Tensor) -> u64 {
    let (be, bb) = block(t.ggml_type);
    t.dims.iter().product::<u64>() / be * bb
}

#[derive(Default)]
pub struct Gguf {
    pub version: u32,
    pub meta: Vec<(String, Meta)>,
    pub tensors: Vec<Tensor>,
}

impl Gguf {
    pub fn new() -> Gguf {
        Gguf {
            version: 3,
            ..Gguf::default()
        }
    }

    pub fn kv(mut self, key: &str, v: Meta) -> Gguf {
        self.meta.push((key.to_string(), v));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32) -> Gguf {
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type,
        });
        self
    }

    /// The header bytes, and the total file length with the (aligned) tensor data.
    pub fn header(&self) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        out.extend(b"GGUF");
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            put_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.encode(&mut out);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ggml_type.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += tensor_bytes(t).next_multiple_of(32);
        }
        let data_start = (out.len() as u64).next_multiple_of(32);
        (out, data_start + offset)
    }

    pub fn write(&self, path: &Path) {
        let (head, len) = self.header();
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(&head).unwrap();
        f.set_len(len).unwrap();
    }
}

/// A llama-shaped model: `layers` blocks of f16 attention and feed-forward weights.
pub fn llama(layers: u32, embd: u64, heads: u32, kv_heads: u32, ctx: u32, wtype: u32) -> Gguf {
    let head_dim = embd / heads as u64;
    let kv_dim = head_dim * kv_heads as u64;
    let ff = embd * 4;
    let vocab = 320u64;
    let mut g = Gguf::new()
        .kv("general.architecture", Meta::Str("llama".into()))
        .kv("general.name", Meta::Str("test llama".into()))
        .kv("llama.block_count", Meta::U32(layers))
        .kv("llama.context_length", Meta::U32(ctx))
        .kv("llama.embedding_length", Meta::U32(embd as u32))
        .kv("llama.feed_forward_length", Meta::U32(ff as u32))
        .kv("llama.attention.head_count", Meta::U32(heads))
        .kv("llama.attention.head_count_kv", Meta::U32(kv_heads))
        .kv("llama.rope.freq_base", Meta::F32(10000.0))
        .kv("tokenizer.ggml.model", Meta::Str("llama".into()))
        .kv(
            "tokenizer.ggml.tokens",
            Meta::strs(
                &(0..vocab)
                    .map(|i| format!("t{i}"))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ),
        )
        .tensor("token_embd.weight", &[embd, vocab], wtype);
    for l in 0..layers {
        g = g
            .tensor(&format!("blk.{l}.attn_norm.weight"), &[embd], 0)
            .tensor(&format!("blk.{l}.attn_q.weight"), &[embd, embd], wtype)
            .tensor(&format!("blk.{l}.attn_k.weight"), &[embd, kv_dim], wtype)
            .tensor(&format!("blk.{l}.attn_v.weight"), &[embd, kv_dim], wtype)
            .tensor(&format!("blk.{l}.attn_output.weight"), &[embd, embd], wtype)
            .tensor(&format!("blk.{l}.ffn_norm.weight"), &[embd], 0)
            .tensor(&format!("blk.{l}.ffn_gate.weight"), &[embd, ff], wtype)
            .tensor(&format!("blk.{l}.ffn_up.weight"), &[embd, ff], wtype)
            .tensor(&format!("blk.{l}.ffn_down.weight"), &[ff, embd], wtype);
    }
    g.tensor("output_norm.weight", &[embd], 0)
        .tensor("output.weight", &[embd, vocab], wtype)
}

/// The weight bytes `llama` writes.
pub fn weights_of(g: &Gguf) -> u64 {
    g.tensors.iter().map(tensor_bytes).sum()
}

/// The start of a GGUF v3 header claiming `tensors` tensors and `kvs` metadata pairs.
pub fn header_prefix(tensors: u64, kvs: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(tensors.to_le_bytes());
    b.extend(kvs.to_le_bytes());
    b
}

/// A 10 GiB sparse file (no disk used) at `dir/sparse.gguf` that starts with `head`: room for
/// any count a lying header claims "bounded by the file's size".
pub fn sparse_10_gib(dir: &Path, head: &[u8]) -> std::path::PathBuf {
    let p = dir.join("sparse.gguf");
    std::fs::write(&p, head).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    p
}
