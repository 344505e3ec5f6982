//! A GGUF header reader (versions 2 and 3): metadata key/values and tensor infos, never the
//! weights. The header is untrusted: every count and length is checked against the bytes the
//! file really has before anything is allocated, so a lying header costs an error, not memory.
//! No count read from the file sizes an allocation: entries are kept as they are really read,
//! and what is kept is bounded in total, whatever the file's size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::PlanError;
use crate::ggml;

const MAGIC: &[u8; 4] = b"GGUF";
/// Read the header in pieces of this size; most headers fit in one.
const CHUNK: usize = 256 * 1024;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays may nest; deeper than this is no real model.
const MAX_DEPTH: u32 = 8;
/// Numeric arrays up to this length are kept (per-layer values); longer ones (token ids,
/// scores) are skipped.
const KEEP_ARRAY: u64 = 65_536;
/// The smallest bytes a key/value can take: key length (8) + type (4) + one byte of value.
const MIN_KV_BYTES: u64 = 13;
/// The smallest tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_BYTES: u64 = 24;
/// Real models have at most a few thousand tensors and a few hundred key/values; a header
/// claiming more than these is refused before it is read.
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KVS: u64 = 1 << 20;
/// The most bytes of metadata (keys, strings, kept arrays) kept in memory for one header.
const MAX_KEPT: u64 = 256 << 20;
/// ggml's GGML_MAX_NAME is 64; a longer tensor name is a lie, whatever the file's size.
const MAX_NAME: u64 = 4096;

/// A metadata value. Arrays of numbers or booleans are kept when short; other arrays keep only
/// their length.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    Bools(Vec<bool>),
    Array { len: u64 },
}

impl Value {
    /// A non-negative integer value (any integer type, or a float that is whole).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(v) => Some(*v),
            Value::Int(v) => u64::try_from(*v).ok(),
            Value::Float(f) if *f >= 0.0 && f.fract() == 0.0 && *f < 1e19 => Some(*f as u64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The length of an array value.
    pub fn array_len(&self) -> Option<u64> {
        match self {
            Value::Ints(v) => Some(v.len() as u64),
            Value::Floats(v) => Some(v.len() as u64),
            Value::Bools(v) => Some(v.len() as u64),
            Value::Array { len } => Some(*len),
            _ => None,
        }
    }
}

/// What the header says about one tensor, without its name (only its layer is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// `N` for a tensor named `blk.N.…`, the repeating layers llama.cpp offloads one by one.
    pub layer: Option<u32>,
    pub ggml_type: u32,
    pub elems: u64,
    pub bytes: u64,
}

/// A GGUF file's header.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub file_bytes: u64,
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Where the tensor data begins.
    pub data_offset: u64,
    /// The bytes from the first tensor's data to the end of the last one's: the tensors and
    /// the alignment padding between them, which is what llama.cpp maps (for a split model,
    /// the sum over its shards).
    pub mapped_bytes: u64,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The sum of every tensor's bytes.
    pub fn weights_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    /// The weights as llama.cpp holds them: every tensor with the padding between them.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped_bytes.max(self.weights_bytes())
    }
}

/// Reads the header of the GGUF file at `path`.
pub fn read_header(path: &Path) -> Result<Header, PlanError> {
    let file = File::open(path).map_err(|e| PlanError::io(path, e))?;
    let len = file.metadata().map_err(|e| PlanError::io(path, e))?.len();
    parse(file, len).map_err(|why| match why {
        Why::Io(e) => PlanError::io(path, e),
        Why::Bad(why) => PlanError::Gguf {
            path: path.display().to_string(),
            why,
        },
    })
}

/// Reads a GGUF file's header; for the first shard of a split model (`split.count` > 1, files
/// named `NAME-00001-of-0000N.gguf`), the other shards' tensors are added, so the weights are
/// the whole model's.
pub fn read_split(path: &Path) -> Result<Header, PlanError> {
    let mut header = read_header(path)?;
    let count = header
        .get("split.count")
        .and_then(Value::as_u64)
        .unwrap_or(1);
    if count <= 1 {
        return Ok(header);
    }
    let bad = |why: String| PlanError::Gguf {
        path: path.display().to_string(),
        why,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let stem = name
        .strip_suffix(".gguf")
        .and_then(|s| s.get(..s.len().checked_sub(15)?))
        .ok_or_else(|| {
            bad(format!(
                "one shard of a model split in {count}, but its name does not follow                  NAME-00001-of-{count:05}.gguf, so the other shards cannot be found"
            ))
        })?;
    if count > 9999 {
        return Err(bad(format!("split.count {count} is not a shard count")));
    }
    let first = format!("{stem}-00001-of-{count:05}.gguf");
    if name != first {
        return Err(bad(format!(
            "a shard of a split model: estimate the first one, {first}"
        )));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    for i in 2..=count {
        let shard = dir.join(format!("{stem}-{i:05}-of-{count:05}.gguf"));
        if !shard.exists() {
            return Err(bad(format!(
                "shard {} of the split model is missing",
                shard.display()
            )));
        }
        let h = read_header(&shard)?;
        header.tensors.extend(h.tensors);
        header.mapped_bytes = header.mapped_bytes.saturating_add(h.mapped_bytes);
        header.file_bytes = header.file_bytes.saturating_add(h.file_bytes);
    }
    Ok(header)
}

/// Reads a GGUF header from any reader of `len` bytes (a file, or bytes in memory).
pub fn parse<R: Read + Seek>(inner: R, len: u64) -> Result<Header, Why> {
    let mut r = Reader {
        inner,
        buf: Vec::new(),
        start: 0,
        pos: 0,
        len,
        kept: 0,
    };
    let magic = r.take(4, "the magic number")?;
    if magic != MAGIC {
        return Err(Why::Bad(
            "no GGUF magic number at the start (not a GGUF file)".into(),
        ));
    }
    let version = r.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(bad(
                "GGUF version 1 is not supported (versions 2 and 3 are)",
            ));
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(bad("big-endian GGUF files are not supported"));
        }
        v => return Err(Why::Bad(format!("unknown GGUF version {v}"))),
    }
    let tensor_count = r.u64("the tensor count")?;
    let kv_count = r.u64("the metadata count")?;
    check_count(&r, kv_count, MIN_KV_BYTES, MAX_KVS, "metadata key/values")?;
    let mut metadata = HashMap::new();
    for _ in 0..kv_count {
        let at = r.offset();
        let key = r.string("a metadata key")?;
        r.keep(64)?;
        let ty = r.u32("a metadata type")?;
        let value = r.value(ty, 0).map_err(|e| e.context(&key, at))?;
        r.keep(match &value {
            Value::Ints(v) => v.len() as u64 * 8,
            Value::Floats(v) => v.len() as u64 * 8,
            Value::Bools(v) => v.len() as u64,
            _ => 0,
        })?;
        metadata.insert(key, value);
    }
    check_count(&r, tensor_count, MIN_TENSOR_BYTES, MAX_TENSORS, "tensors")?;
    // Grown as tensor infos are really read: the count is a claim, not a size.
    let mut tensors = Vec::new();
    let mut offsets = Vec::new();
    for i in 0..tensor_count {
        let name_len = r.u64("a tensor name length")?;
        if name_len > MAX_NAME {
            return Err(Why::Bad(format!(
                "tensor {i}'s name claims {name_len} bytes (ggml names are at most 64)"
            )));
        }
        let name = r.take(name_len, "a tensor name")?;
        let layer = layer_of(name);
        let n_dims = r.u32("a tensor's dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(Why::Bad(format!(
                "tensor {i} claims {n_dims} dimensions (ggml allows at most {MAX_DIMS})"
            )));
        }
        let mut elems: u64 = 1;
        let mut first_dim = 1;
        for d in 0..n_dims {
            let dim = r.u64("a tensor dimension")?;
            if d == 0 {
                first_dim = dim;
            }
            elems = elems.checked_mul(dim).ok_or_else(|| {
                Why::Bad(format!("tensor {i} has more elements than fit in 64 bits"))
            })?;
        }
        let ggml_type = r.u32("a tensor type")?;
        let layout = ggml::layout(ggml_type)
            .ok_or_else(|| Why::Bad(format!("tensor {i} has unknown ggml type {ggml_type}")))?;
        if first_dim % layout.block_elems != 0 {
            return Err(Why::Bad(format!(
                "tensor {i}: a row of {first_dim} elements is not a whole number of {} blocks",
                layout.name
            )));
        }
        let bytes = (elems / layout.block_elems)
            .checked_mul(layout.block_bytes)
            .ok_or_else(|| Why::Bad(format!("tensor {i} is larger than 2^64 bytes")))?;
        let offset = r.u64("a tensor offset")?;
        offsets.push((offset, bytes));
        tensors.push(TensorInfo {
            layer,
            ggml_type,
            elems,
            bytes,
        });
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 30 => a,
            _ => return Err(bad("general.alignment is not a power of two")),
        },
    };
    let data_offset = r.offset().div_ceil(alignment) * alignment;
    let data_bytes = len.saturating_sub(data_offset);
    for (i, (offset, bytes)) in offsets.iter().enumerate() {
        if offset % alignment != 0 {
            return Err(Why::Bad(format!(
                "tensor {i}'s data offset {offset} is not aligned to {alignment} bytes"
            )));
        }
        if offset
            .checked_add(*bytes)
            .is_none_or(|end| end > data_bytes)
        {
            return Err(Why::Bad(format!(
                "tensor {i}'s data ({bytes} bytes at offset {offset}) runs past the end of the \
                 file ({len} bytes): truncated download?"
            )));
        }
    }
    let first = offsets.iter().map(|&(o, _)| o).min().unwrap_or(0);
    // Each end was checked above to lie inside the file.
    let last = offsets.iter().map(|&(o, b)| o + b).max().unwrap_or(0);
    Ok(Header {
        version,
        file_bytes: len,
        metadata,
        tensors,
        data_offset,
        mapped_bytes: last - first,
    })
}

/// Why a header could not be read.
#[derive(Debug)]
pub enum Why {
    Io(std::io::Error),
    Bad(String),
}

impl Why {
    fn context(self, key: &str, at: u64) -> Why {
        match self {
            Why::Bad(s) => Why::Bad(format!(
                "metadata key {:?} at byte {at}: {s}",
                memwarden_probe::sanitize::sanitize(key, 80)
            )),
            io => io,
        }
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Io(e) => write!(f, "{e}"),
            Why::Bad(s) => f.write_str(s),
        }
    }
}

fn bad(s: &str) -> Why {
    Why::Bad(s.to_string())
}

fn check_count<R>(
    r: &Reader<R>,
    count: u64,
    min_bytes: u64,
    max: u64,
    what: &str,
) -> Result<(), Why> {
    if count > max {
        return Err(Why::Bad(format!(
            "the header claims {count} {what}; no model has more than {max}"
        )));
    }
    let room = r.remaining() / min_bytes;
    if count > room {
        return Err(Why::Bad(format!(
            "the header claims {count} {what}, but the rest of the file ({} bytes) has room \
             for at most {room}",
            r.remaining()
        )));
    }
    Ok(())
}

/// `blk.12.attn_q.weight` -> 12.
fn layer_of(name: &[u8]) -> Option<u32> {
    let rest = name.strip_prefix(b"blk.")?;
    let end = rest.iter().position(|&b| b == b'.')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// A forward-only reader over the header that knows where the file ends.
struct Reader<R> {
    inner: R,
    /// Bytes of the file from `start`; `inner` is positioned at `start + buf.len()`.
    buf: Vec<u8>,
    start: u64,
    pos: usize,
    len: u64,
    /// Bytes of metadata kept so far, against `MAX_KEPT`.
    kept: u64,
}

impl<R> Reader<R> {
    fn offset(&self) -> u64 {
        self.start + self.pos as u64
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.offset())
    }

    /// Counts `n` more bytes of metadata kept in memory, refusing a header that keeps too much.
    fn keep(&mut self, n: u64) -> Result<(), Why> {
        self.kept = self.kept.saturating_add(n);
        if self.kept > MAX_KEPT {
            return Err(Why::Bad(format!(
                "the header holds more than {} MiB of metadata; no model has that much",
                MAX_KEPT >> 20
            )));
        }
        Ok(())
    }
}

impl<R: Read + Seek> Reader<R> {
    fn take(&mut self, n: u64, what: &str) -> Result<&[u8], Why> {
        if n > self.remaining() {
            return Err(Why::Bad(format!(
                "{what} at byte {} needs {n} bytes, but the file ends at byte {}",
                self.offset(),
                self.len
            )));
        }
        let n = n as usize;
        if self.pos + n > self.buf.len() {
            self.fill(n)?;
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Makes at least `n` bytes (known to exist in the file) available from `pos`.
    fn fill(&mut self, n: usize) -> Result<(), Why> {
        self.buf.drain(..self.pos);
        self.start += self.pos as u64;
        self.pos = 0;
        let target = (n.max(CHUNK) as u64).min(self.remaining()) as usize;
        let have = self.buf.len();
        self.buf.resize(target, 0);
        self.inner
            .read_exact(&mut self.buf[have..])
            .map_err(Why::Io)?;
        Ok(())
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), Why> {
        if n > self.remaining() {
            return Err(Why::Bad(format!(
                "{what} at byte {} needs {n} bytes, but the file ends at byte {}",
                self.offset(),
                self.len
            )));
        }
        if self.pos as u64 + n <= self.buf.len() as u64 {
            self.pos += n as usize;
        } else {
            let to = self.offset() + n;
            self.inner.seek(SeekFrom::Start(to)).map_err(Why::Io)?;
            self.start = to;
            self.buf.clear();
            self.pos = 0;
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Why> {
        let s = self.take(N as u64, what)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, Why> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, Why> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, Why> {
        let n = self.u64(what)?;
        // Counted before it is read (a claimed length sizes the buffer that reads it), once it
        // is known to fit the file, so a length past the end is named as such.
        if n <= self.remaining() {
            self.keep(n)?;
        }
        let s = self.take(n, what)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, Why> {
        Ok(match ty {
            0 => Value::Uint(self.array::<1>("a u8")?[0] as u64),
            1 => Value::Int(self.array::<1>("an i8")?[0] as i8 as i64),
            2 => Value::Uint(u16::from_le_bytes(self.array("a u16")?) as u64),
            3 => Value::Int(i16::from_le_bytes(self.array("an i16")?) as i64),
            4 => Value::Uint(self.u32("a u32")? as u64),
            5 => Value::Int(i32::from_le_bytes(self.array("an i32")?) as i64),
            6 => Value::Float(f32::from_le_bytes(self.array("an f32")?) as f64),
            7 => Value::Bool(self.array::<1>("a bool")?[0] != 0),
            8 => Value::Str(self.string("a string")?),
            9 => self.array_value(depth)?,
            10 => Value::Uint(self.u64("a u64")?),
            11 => Value::Int(i64::from_le_bytes(self.array("an i64")?)),
            12 => Value::Float(f64::from_le_bytes(self.array("an f64")?)),
            other => return Err(Why::Bad(format!("unknown value type {other}"))),
        })
    }

    fn array_value(&mut self, depth: u32) -> Result<Value, Why> {
        if depth >= MAX_DEPTH {
            return Err(Why::Bad(format!(
                "arrays nested deeper than {MAX_DEPTH} levels"
            )));
        }
        let ty = self.u32("an array's element type")?;
        let len = self.u64("an array's length")?;
        let fixed = match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            8 => None,
            9 => None,
            other => return Err(Why::Bad(format!("unknown array element type {other}"))),
        };
        // The smallest an element can be: a string or an array still has its 8-byte length.
        let min = fixed.unwrap_or(if ty == 8 { 8 } else { 12 });
        if len > self.remaining() / min {
            return Err(Why::Bad(format!(
                "an array at byte {} claims {len} elements, more than the rest of the file \
                 ({} bytes) can hold",
                self.offset(),
                self.remaining()
            )));
        }
        match fixed {
            Some(size) if len > KEEP_ARRAY => {
                self.skip(len * size, "an array")?;
                Ok(Value::Array { len })
            }
            Some(_) => {
                let mut ints = Vec::new();
                let mut floats = Vec::new();
                let mut bools = Vec::new();
                for _ in 0..len {
                    match self.value(ty, depth + 1)? {
                        Value::Uint(v) => ints.push(v.min(i64::MAX as u64) as i64),
                        Value::Int(v) => ints.push(v),
                        Value::Float(v) => floats.push(v),
                        Value::Bool(v) => bools.push(v),
                        other => {
                            return Err(Why::Bad(format!(
                                "an array element of type {ty} read as {other:?}"
                            )));
                        }
                    }
                }
                Ok(match ty {
                    6 | 12 => Value::Floats(floats),
                    7 => Value::Bools(bools),
                    _ => Value::Ints(ints),
                })
            }
            None if ty == 8 => {
                for _ in 0..len {
                    let n = self.u64("a string length in an array")?;
                    self.skip(n, "a string in an array")?;
                }
                Ok(Value::Array { len })
            }
            None => {
                for _ in 0..len {
                    self.array_value(depth + 1)?;
                }
                Ok(Value::Array { len })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_from_names() {
        assert_eq!(layer_of(b"blk.12.attn_q.weight"), Some(12));
        assert_eq!(layer_of(b"token_embd.weight"), None);
        assert_eq!(layer_of(b"blk.x.y"), None);
    }
}
