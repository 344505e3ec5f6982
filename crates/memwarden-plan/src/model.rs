//! What an estimate needs to know about a model, whatever file format it came from.

use serde::Serialize;

use crate::gguf::{Header, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Gguf,
    Safetensors,
}

/// The state one recurrent layer keeps per sequence, in f32 elements: llama.cpp's `r` (the
/// convolution or token-shift window) and `s` (the SSM or WKV state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecurrentState {
    pub r_elems: u64,
    pub s_elems: u64,
    /// The width the layer computes in per token: the SSM's inner size, else the embedding.
    pub width: u64,
}

/// The experts of a mixture-of-experts model: what its feed-forward phase computes per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Experts {
    pub count: u64,
    pub used: u64,
    /// Feed-forward width of one expert.
    pub feed_forward_length: u64,
    /// Feed-forward width of the shared experts together (0 without).
    pub shared_length: u64,
}

/// A model's memory-relevant shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub format: ModelFormat,
    pub architecture: String,
    pub weights_bytes: u64,
    pub tensor_count: u64,
    pub block_count: u32,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub feed_forward_length: Option<u64>,
    pub vocab_size: Option<u64>,
    /// Query heads per layer.
    pub head_count: Vec<u64>,
    /// KV heads per layer; 0 for a layer without attention (a recurrent layer).
    pub head_count_kv: Vec<u64>,
    pub key_length: u64,
    pub value_length: u64,
    pub sliding_window: Option<u64>,
    /// Per layer: does it use the sliding window?
    pub swa_layers: Vec<bool>,
    /// The state of each layer without KV heads, when the model has recurrent layers.
    pub recurrent: Option<RecurrentState>,
    /// Weight bytes of each repeating layer (`blk.N.*`); empty when the format does not say.
    pub layer_weights: Vec<u64>,
    /// Multi-head latent attention as llama.cpp runs it (`attention.key_length_mla` given): the
    /// cache holds one compressed K row per token (`key_length` = kv_lora_rank + rope dims)
    /// and no V.
    pub mla: bool,
    pub experts: Option<Experts>,
    pub notes: Vec<String>,
}

/// Sliding-window period for architectures whose GGUF carries the window but not the layer
/// pattern (llama.cpp hard-codes these): layer `l` slides when `l % n < n - 1`.
fn default_swa_period(arch: &str) -> Option<u64> {
    match arch {
        "gemma2" | "gpt-oss" => Some(2),
        "gemma3" => Some(6),
        "cohere2" | "llama4" => Some(4),
        _ => None,
    }
}

/// A per-layer value that GGUF stores either as one scalar or as an array of `n`.
fn per_layer(v: Option<&Value>, n: u32) -> Result<Option<Vec<u64>>, String> {
    let Some(v) = v else { return Ok(None) };
    if let Some(x) = v.as_u64() {
        return Ok(Some(vec![x; n as usize]));
    }
    match v {
        Value::Ints(xs) if xs.len() == n as usize => xs
            .iter()
            .map(|&x| u64::try_from(x).map_err(|_| "a negative value".to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Value::Ints(xs) => Err(format!("{} values for {n} layers", xs.len())),
        _ => Err("not an integer or an array of integers".into()),
    }
}

pub(crate) fn sanitize_name(s: &str) -> String {
    memwarden_probe::sanitize::sanitize(s, 64)
}

impl ModelInfo {
    /// The model described by a GGUF header.
    pub fn from_gguf(h: &Header) -> Result<ModelInfo, String> {
        let arch_raw = h
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or("no general.architecture in the metadata")?;
        let arch = sanitize_name(arch_raw);
        if h.tensors.is_empty() {
            return Err(format!(
                "the file holds no weights (no tensors: a vocabulary-only {arch} GGUF), so \
                 there is no model to size"
            ));
        }
        let key = |k: &str| format!("{arch_raw}.{k}");
        let num = |k: &str| h.get(&key(k)).and_then(Value::as_u64);
        let block_count =
            num("block_count").ok_or_else(|| format!("no {arch}.block_count in the metadata"))?;
        let block_count = u32::try_from(block_count)
            .ok()
            .filter(|&b| b <= 100_000)
            .ok_or_else(|| format!("{arch}.block_count {block_count} is not a layer count"))?;
        let embedding = num("embedding_length");
        let named = |k: &str, r: Result<Option<Vec<u64>>, String>| {
            r.map_err(|e| format!("{arch}.{k}: {e}"))
        };
        let head_count = named(
            "attention.head_count",
            per_layer(h.get(&key("attention.head_count")), block_count),
        )?
        .unwrap_or_default();
        let head_count_kv = named(
            "attention.head_count_kv",
            per_layer(h.get(&key("attention.head_count_kv")), block_count),
        )?
        .unwrap_or_else(|| head_count.clone());
        let max_heads = head_count.iter().copied().max().unwrap_or(0);
        let per_head = match (embedding, max_heads) {
            (Some(e), h) if h > 0 => Some(e / h),
            _ => None,
        };
        let key_length = num("attention.key_length").or(per_head);
        let value_length = num("attention.value_length").or(per_head);
        let mut notes = Vec::new();
        let has_attention = head_count_kv.iter().any(|&k| k > 0);
        let (key_length, value_length) = match (key_length, value_length) {
            (Some(k), Some(v)) => (k, v),
            _ if !has_attention => (0, 0),
            _ => {
                return Err(format!(
                    "cannot tell the attention head size: no {arch}.attention.key_length and \
                     no embedding_length/head_count to derive it from"
                ));
            }
        };
        let sliding_window = num("attention.sliding_window").filter(|&w| w > 0);
        let mut swa_layers = vec![false; block_count as usize];
        if sliding_window.is_some() {
            match h.get(&key("attention.sliding_window_pattern")) {
                Some(Value::Bools(b)) if b.len() == block_count as usize => swa_layers = b.clone(),
                Some(v) if v.as_u64().is_some_and(|n| n > 0) => {
                    set_period(&mut swa_layers, v.as_u64().unwrap_or(1))
                }
                _ => match default_swa_period(arch_raw) {
                    Some(n) => set_period(&mut swa_layers, n),
                    None => notes.push(format!(
                        "{arch} has a sliding window but no layer pattern memwarden knows: every \
                         layer counted with the full context (an upper bound)"
                    )),
                },
            }
        }
        let embd = embedding.unwrap_or(0);
        let ssm = (
            num("ssm.conv_kernel"),
            num("ssm.inner_size"),
            num("ssm.state_size"),
        );
        let recurrent = if let Some(head) = num("wkv.head_size") {
            // RWKV: a token-shift window and a WKV state per head.
            Some(RecurrentState {
                r_elems: num("token_shift_count").unwrap_or(2).saturating_mul(embd),
                s_elems: embd.saturating_mul(head),
                width: embd,
            })
        } else if let Some(l_cache) = num("shortconv.l_cache") {
            // Short-convolution layers (LFM2): a window and no state.
            Some(RecurrentState {
                r_elems: embd.saturating_mul(l_cache.saturating_sub(1)),
                s_elems: 0,
                width: embd,
            })
        } else if let (Some(conv), Some(inner), Some(state)) = ssm {
            // Mamba: the conv window over x, B and C, and the SSM state.
            // Mamba-1 has no groups (llama.cpp's ssm_n_group is 0 then).
            let groups = num("ssm.group_count").unwrap_or(0);
            Some(RecurrentState {
                r_elems: conv.saturating_sub(1).saturating_mul(
                    inner.saturating_add(2u64.saturating_mul(groups).saturating_mul(state)),
                ),
                s_elems: state.saturating_mul(inner),
                width: inner,
            })
        } else {
            None
        };
        // Hybrids that interleave recurrent layers say which layers attend by an interval
        // (`full_attention_interval` n: layer l attends when (l + 1) % n == 0).
        let mut head_count_kv = head_count_kv;
        if let Some(n) = num("full_attention_interval").filter(|&n| n > 0) {
            for (l, kv) in head_count_kv.iter_mut().enumerate() {
                if !(l as u64 + 1).is_multiple_of(n) {
                    *kv = 0;
                }
            }
        }
        let head_count_kv = if head_count_kv.is_empty() && recurrent.is_none() {
            return Err(format!(
                "no {arch}.attention.head_count in the metadata (needed for the KV cache)"
            ));
        } else if head_count_kv.is_empty() {
            vec![0; block_count as usize]
        } else {
            head_count_kv
        };
        let mla = num("attention.key_length_mla").is_some()
            && num("attention.value_length_mla").is_some();
        let experts = match (num("expert_count"), num("expert_used_count")) {
            (Some(count), Some(used)) if count > 0 && used > 0 => {
                let ff = num("expert_feed_forward_length")
                    .or(num("feed_forward_length"))
                    .unwrap_or(0);
                let shared = num("expert_shared_feed_forward_length")
                    .unwrap_or_else(|| num("expert_shared_count").unwrap_or(0).saturating_mul(ff));
                Some(Experts {
                    count,
                    used,
                    feed_forward_length: ff,
                    shared_length: shared,
                })
            }
            _ => None,
        };
        let mut layer_weights = vec![0u64; block_count as usize];
        for t in &h.tensors {
            if let Some(w) = t.layer.and_then(|l| layer_weights.get_mut(l as usize)) {
                *w += t.bytes;
            }
        }
        let vocab_size = h
            .get("tokenizer.ggml.tokens")
            .and_then(Value::array_len)
            .or_else(|| num("vocab_size"));
        Ok(ModelInfo {
            format: ModelFormat::Gguf,
            architecture: arch,
            weights_bytes: h.mapped_bytes(),
            tensor_count: h.tensors.len() as u64,
            block_count,
            context_length: num("context_length"),
            embedding_length: embedding,
            feed_forward_length: num("feed_forward_length"),
            vocab_size,
            head_count,
            head_count_kv,
            key_length,
            value_length,
            sliding_window,
            swa_layers,
            recurrent,
            layer_weights,
            mla,
            experts,
            notes,
        })
    }
}

pub(crate) fn set_period(swa: &mut [bool], n: u64) {
    for (l, s) in swa.iter_mut().enumerate() {
        *s = (l as u64) % n < n - 1;
    }
}
