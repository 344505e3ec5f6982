//! ggml tensor types: how many elements one block holds and how many bytes it takes. The
//! numbers are the block layouts of ggml's quantisation formats (`ggml-common.h`).

/// One ggml type's storage layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeLayout {
    pub name: &'static str,
    /// Elements per block (1 for plain types).
    pub block_elems: u64,
    /// Bytes per block.
    pub block_bytes: u64,
}

/// Indexed by the ggml type id; `None` for ids that were retired (4, 5, 31–33, 36–38).
const TYPES: [Option<(&str, u64, u64)>; 40] = [
    Some(("f32", 1, 4)),
    Some(("f16", 1, 2)),
    Some(("q4_0", 32, 18)),
    Some(("q4_1", 32, 20)),
    None,
    None,
    Some(("q5_0", 32, 22)),
    Some(("q5_1", 32, 24)),
    Some(("q8_0", 32, 34)),
    Some(("q8_1", 32, 36)),
    Some(("q2_K", 256, 84)),
    Some(("q3_K", 256, 110)),
    Some(("q4_K", 256, 144)),
    Some(("q5_K", 256, 176)),
    Some(("q6_K", 256, 210)),
    Some(("q8_K", 256, 292)),
    Some(("iq2_xxs", 256, 66)),
    Some(("iq2_xs", 256, 74)),
    Some(("iq3_xxs", 256, 98)),
    Some(("iq1_s", 256, 50)),
    Some(("iq4_nl", 32, 18)),
    Some(("iq3_s", 256, 110)),
    Some(("iq2_s", 256, 82)),
    Some(("iq4_xs", 256, 136)),
    Some(("i8", 1, 1)),
    Some(("i16", 1, 2)),
    Some(("i32", 1, 4)),
    Some(("i64", 1, 8)),
    Some(("f64", 1, 8)),
    Some(("iq1_m", 256, 56)),
    Some(("bf16", 1, 2)),
    None,
    None,
    None,
    Some(("tq1_0", 256, 54)),
    Some(("tq2_0", 256, 66)),
    None,
    None,
    None,
    Some(("mxfp4", 32, 17)),
];

/// The layout of ggml type `id`, when memwarden knows it.
pub fn layout(id: u32) -> Option<TypeLayout> {
    let (name, block_elems, block_bytes) = (*TYPES.get(id as usize)?)?;
    Some(TypeLayout {
        name,
        block_elems,
        block_bytes,
    })
}

/// The id of a type by its name (`q8_0`, `f16`, case-insensitive).
pub fn id_of(name: &str) -> Option<u32> {
    TYPES
        .iter()
        .position(|t| t.is_some_and(|(n, _, _)| n.eq_ignore_ascii_case(name)))
        .map(|i| i as u32)
}

impl TypeLayout {
    /// Bytes of a row of `elems` elements, as `ggml_row_size` computes it. A row that is not a
    /// whole number of blocks cannot be stored by ggml; it is rounded up to whole blocks here so
    /// an estimate never comes out low. `None` on overflow.
    pub fn row_bytes(&self, elems: u64) -> Option<u64> {
        elems
            .div_ceil(self.block_elems)
            .checked_mul(self.block_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_layouts() {
        assert_eq!(layout(8).unwrap().row_bytes(4096), Some(4096 / 32 * 34));
        assert_eq!(layout(1).unwrap().row_bytes(10), Some(20));
        assert_eq!(layout(12).unwrap().row_bytes(256), Some(144));
        assert_eq!(layout(4), None);
        assert_eq!(layout(1000), None);
        assert_eq!(id_of("Q8_0"), Some(8));
        assert_eq!(id_of("bf16"), Some(30));
        assert_eq!(id_of("q4_2"), None);
    }
}
