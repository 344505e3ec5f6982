//! Lying, truncated and fuzzed GGUF headers: a clear error, never a panic or a huge allocation.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;

use common::gguf_writer::{
    Gguf, Meta, header_prefix as prefix, llama, put_str, sparse_10_gib as sparse,
};
use memwarden_plan::gguf;
use proptest::prelude::*;

/// Records the largest single allocation each thread makes, so that a test can hold the reader
/// to "no allocation beyond a small multiple of the file's size".
struct Largest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// Parses `bytes` and checks that no single allocation exceeded 16 times their length (plus a
/// little for the error message): a lying count must cost an error, not memory. Real entries
/// may cost ~10 times their bytes: the smallest key/value pair is 13 bytes on disk (empty key,
/// one-byte value) and over 100 in memory.
fn parse(bytes: &[u8]) -> Result<gguf::Header, String> {
    LARGEST.with(|c| c.set(0));
    let r = gguf::parse(Cursor::new(bytes), bytes.len() as u64).map_err(|e| e.to_string());
    let largest = LARGEST.with(|c| c.get());
    assert!(
        largest <= 16 * bytes.len() + 4096,
        "allocated {largest} bytes for a {}-byte header",
        bytes.len()
    );
    r
}

#[test]
fn a_tensor_count_of_2_pow_40_is_refused_before_allocating() {
    let b = prefix(1 << 40, 0);
    let e = parse(&b).unwrap_err();
    assert!(e.contains("claims 1099511627776 tensors"), "{e}");
}

#[test]
fn a_huge_metadata_count_is_refused() {
    let e = parse(&prefix(0, u64::MAX)).unwrap_err();
    assert!(e.contains("metadata key/values"), "{e}");
}

#[test]
fn a_string_length_past_the_end() {
    let mut b = prefix(0, 1);
    b.extend((1u64 << 50).to_le_bytes());
    b.extend(b"general.architecture");
    let e = parse(&b).unwrap_err();
    assert!(e.contains("needs 1125899906842624 bytes"), "{e}");
    assert!(e.contains("file ends at byte"), "{e}");
}

#[test]
fn deeply_nested_arrays() {
    let mut b = prefix(0, 1);
    put_str(&mut b, "deep");
    b.extend(9u32.to_le_bytes());
    for _ in 0..100 {
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
    }
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    let e = parse(&b).unwrap_err();
    assert!(e.contains("nested deeper"), "{e}");
    assert!(e.contains("\"deep\""), "{e}");
}

#[test]
fn an_array_longer_than_the_file() {
    let mut b = prefix(0, 1);
    put_str(&mut b, "a");
    b.extend(9u32.to_le_bytes());
    b.extend(4u32.to_le_bytes());
    b.extend((1u64 << 60).to_le_bytes());
    let e = parse(&b).unwrap_err();
    assert!(e.contains("claims 1152921504606846976 elements"), "{e}");
}

#[test]
fn huge_n_dims() {
    let mut b = prefix(1, 0);
    put_str(&mut b, "t");
    b.extend(u32::MAX.to_le_bytes());
    b.extend([0u8; 64]);
    let e = parse(&b).unwrap_err();
    assert!(e.contains("4294967295 dimensions"), "{e}");
}

#[test]
fn dimensions_that_overflow() {
    let mut b = prefix(1, 0);
    put_str(&mut b, "t");
    b.extend(2u32.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    let e = parse(&b).unwrap_err();
    assert!(e.contains("64 bits"), "{e}");
}

#[test]
fn not_gguf_old_and_big_endian() {
    assert!(parse(b"GGML1234").unwrap_err().contains("magic"));
    let mut v1 = b"GGUF".to_vec();
    v1.extend(1u32.to_le_bytes());
    assert!(parse(&v1).unwrap_err().contains("version 1"));
    let mut be = b"GGUF".to_vec();
    be.extend(3u32.to_be_bytes());
    assert!(parse(&be).unwrap_err().contains("big-endian"));
    assert!(parse(b"GG").unwrap_err().contains("file ends"));
}

#[test]
fn truncated_data_is_a_truncated_download() {
    let g = llama(2, 256, 4, 4, 512, 1);
    let (head, len) = g.header();
    let mut whole = head.clone();
    whole.resize(len as usize, 0);
    assert!(parse(&whole).is_ok());
    whole.truncate(len as usize - 1);
    let e = parse(&whole).unwrap_err();
    assert!(e.contains("truncated download"), "{e}");
    for cut in [10, head.len() / 2, head.len() - 1] {
        let e = parse(&head[..cut]).unwrap_err();
        assert!(
            e.contains("file ends at byte") || e.contains("rest of the file"),
            "cut {cut}: {e}"
        );
    }
}

#[test]
fn unknown_types_are_named() {
    let mut b = prefix(0, 1);
    put_str(&mut b, "k");
    b.extend(77u32.to_le_bytes());
    assert!(parse(&b).unwrap_err().contains("unknown value type 77"));
    let g = Gguf::new()
        .kv("general.architecture", Meta::Str("llama".into()))
        .tensor("t", &[32], 1);
    let (mut head, len) = g.header();
    // The tensor's type sits 12 bytes before the end of the infos (type u32 + offset u64).
    let at = head.len() - 12;
    head[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    head.resize(len as usize, 0);
    assert!(parse(&head).unwrap_err().contains("unknown ggml type 4"));
}

/// Found by the property below: 225 genuine pairs of 13 bytes (empty key, one-byte value)
/// are real memory, about ten times their bytes, and within the bound.
#[test]
fn many_minimal_pairs_stay_within_the_bound() {
    let mut b = prefix(0, 225);
    b.resize(b.len() + 225 * 13, 0);
    let _ = parse(&b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Counts as large as the file allows, each claiming the most it can: still bounded.
    #[test]
    fn counts_at_the_edge_of_the_file(tensors in 0u64..4096, kvs in 0u64..4096, pad in 0usize..4096) {
        let mut b = prefix(tensors, kvs);
        b.resize(b.len() + pad, 0);
        let _ = parse(&b);
    }

    /// Any byte changed, any cut: an answer or an error, never a panic; and no allocation can
    /// exceed the input, which the bounds checks guarantee and a 2^40 count above would expose.
    #[test]
    fn fuzzed_headers_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let g = llama(2, 256, 4, 2, 512, 8)
            .kv("x.nested", Meta::Array(9, vec![Meta::i32s(&[1, 2]), Meta::i32s(&[3])]));
        let (head, len) = g.header();
        let mut bytes = head;
        bytes.resize(len as usize, 0);
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        let end = cut.index(bytes.len() + 1);
        let _ = parse(&bytes[..end]);
    }

    #[test]
    fn random_bytes_after_the_magic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut b = b"GGUF\x03\0\0\0".to_vec();
        b.extend(tail);
        let _ = parse(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// safetensors: any header length and any bytes after it give an answer or an error.
    #[test]
    fn fuzzed_safetensors_headers_never_panic(
        len in prop_oneof![any::<u64>(), 0u64..64],
        body in proptest::collection::vec(any::<u8>(), 0..64),
        json_like in proptest::bool::ANY,
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 8}"#,
        )
        .unwrap();
        let f = dir.path().join("model.safetensors");
        let mut b = len.to_le_bytes().to_vec();
        if json_like {
            b.extend(br#"{"w": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, "#);
        }
        b.extend(&body);
        std::fs::write(&f, &b).unwrap();
        let opts = memwarden_plan::EstimateOptions { ctx: Some(8), ..Default::default() };
        let _ = memwarden_plan::estimate_file(&f, &opts);
    }
}

/// Reads the header at `path`, holding the largest single allocation to `bound` bytes.
fn read_bounded(path: &std::path::Path, bound: usize) -> Result<gguf::Header, String> {
    LARGEST.with(|c| c.set(0));
    let r = gguf::read_header(path).map_err(|e| e.to_string());
    let largest = LARGEST.with(|c| c.get());
    assert!(largest <= bound, "allocated {largest} bytes");
    r
}

/// Counts "bounded by the file's size" are no bound on a big sparse file: a count is a claim,
/// and memory is spent only on entries really read, up to a fixed total.
#[test]
fn counts_as_large_as_a_10_gib_sparse_file_cost_an_error_not_memory() {
    let dir = tempfile::tempdir().unwrap();
    let room = ((10u64 << 30) - 24) / 24;
    let p = sparse(dir.path(), &prefix(room, 0));
    let e = read_bounded(&p, 1 << 20).unwrap_err();
    assert!(e.contains(&format!("claims {room} tensors")), "{e}");
    let room = ((10u64 << 30) - 24) / 13;
    let p = sparse(dir.path(), &prefix(0, room));
    let e = read_bounded(&p, 1 << 20).unwrap_err();
    assert!(e.contains("metadata key/values"), "{e}");
}

#[test]
fn a_string_of_8_gib_in_a_10_gib_file_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = prefix(0, 1);
    b.extend((8u64 << 30).to_le_bytes());
    let p = sparse(dir.path(), &b);
    let e = read_bounded(&p, 1 << 20).unwrap_err();
    assert!(e.contains("MiB of metadata"), "{e}");
    // A tensor name of a gigabyte: ggml's names are 64 bytes.
    let mut b = prefix(1, 0);
    b.extend((1u64 << 30).to_le_bytes());
    let p = sparse(dir.path(), &b);
    let e = read_bounded(&p, 1 << 20).unwrap_err();
    assert!(e.contains("name claims 1073741824 bytes"), "{e}");
}

/// The most tensors a header may claim, each really there (zeros are a valid empty-named f32
/// scalar): memory grows with what is read and stays within tens of MiB.
#[test]
fn the_largest_allowed_count_read_in_full_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let p = sparse(dir.path(), &prefix(1 << 20, 0));
    let h = read_bounded(&p, 64 << 20).unwrap();
    assert_eq!(h.tensors.len(), 1 << 20);
    let e = read_bounded(&sparse(dir.path(), &prefix((1 << 20) + 1, 0)), 1 << 20).unwrap_err();
    assert!(e.contains("no model has more than 1048576"), "{e}");
}
