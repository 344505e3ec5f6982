#!/usr/bin/env python3
"""Writes small random-weight GGUF models that llama.cpp loads, one per architecture family
memwarden's estimate models: dense GQA, sliding-window (interleaved), MLA and recurrent.

usage: make_models.py OUT_DIR [ARCH ...]   (default: every architecture below)

Each file has a few layers of small dimensions, f16 matrices and f32 vectors, and a real
SentencePiece-style vocabulary (control, byte and normal tokens), so that llama.cpp loads it
as it would a converted model. The weights are random: only the sizes matter here.
"""

import os
import sys

import numpy as np
from gguf import GGUFWriter

EMBD = 128
HEADS = 4
HEADS_KV = 2
HEAD_DIM = 32
FF = 256
CTX_TRAIN = 8192
VOCAB = 4096
RNG = np.random.default_rng(14)


def vocab(w):
    tokens = ["<unk>", "<s>", "</s>", "<|endoftext|>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces = ["\u2581" + c for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    pieces += ["\u2581the", "\u2581of", "\u2581and", "ing", "ed", "er", "\u2581in", "\u2581to", "\u2581is"]
    # Real vocabularies are ~30 times the embedding width, which makes the logits the largest
    # compute tensor at short contexts, as in real models.
    pieces += [f"\u2581w{i}" for i in range(VOCAB - 4 - 256 - len(pieces))]
    tokens += pieces
    types = [2, 3, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 4 + [0.0] * 256 + [-float(i) for i in range(len(pieces))]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    return len(tokens)


class Model:
    def __init__(self, arch, layers):
        self.arch = arch
        self.layers = layers
        self.tensors = []

    def t(self, name, *ne):
        """A tensor of ggml shape ne (innermost first); f16 when it is a matrix."""
        shape = tuple(reversed(ne))
        dtype = np.float16 if len(ne) >= 2 else np.float32
        self.tensors.append((name, (RNG.standard_normal(shape) * 0.02).astype(dtype)))

    def blk(self, i, name, *ne):
        self.t(f"blk.{i}.{name}", *ne)


def common(w, arch, layers, heads=None, heads_kv=None, ff=None):
    heads = HEADS if heads is None else heads
    heads_kv = HEADS_KV if heads_kv is None else heads_kv
    ff = FF if ff is None else ff
    w.add_context_length(CTX_TRAIN)
    w.add_embedding_length(EMBD)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(heads_kv)
    w.add_layer_norm_rms_eps(1e-6)


def head_keys(w):
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)


def expert_keys(w, count, ff_exp):
    """count experts of ff_exp, two used per token."""
    w.add_expert_count(count)
    w.add_expert_used_count(2)
    w.add_expert_feed_forward_length(ff_exp)


def ends(m, n_vocab, tied=False):
    """The token embedding, the output norm and (unless tied to the embedding) the output."""
    m.t("token_embd.weight", EMBD, n_vocab)
    m.t("output_norm.weight", EMBD)
    if not tied:
        m.t("output.weight", EMBD, n_vocab)


def attention(m, i, bias=False, qk_norm=False):
    """Layer i's Q, K, V and output projections (optionally with biases and Q/K norms)."""
    q, kv = HEADS * HEAD_DIM, HEADS_KV * HEAD_DIM
    for n, d in (("q", q), ("k", kv), ("v", kv)):
        m.blk(i, f"attn_{n}.weight", EMBD, d)
        if bias:
            m.blk(i, f"attn_{n}.bias", d)
    if qk_norm:
        m.blk(i, "attn_q_norm.weight", HEAD_DIM)
        m.blk(i, "attn_k_norm.weight", HEAD_DIM)
    m.blk(i, "attn_output.weight", q, EMBD)


def experts(m, i, count, ff_exp, bias=False):
    """Layer i's router and routed experts (gate, up, down)."""
    m.blk(i, "ffn_gate_inp.weight", EMBD, count)
    for n, a, b in (("gate", EMBD, ff_exp), ("up", EMBD, ff_exp), ("down", ff_exp, EMBD)):
        m.blk(i, f"ffn_{n}_exps.weight", a, b, count)
        if bias:
            m.blk(i, f"ffn_{n}_exps.bias", b, count)
    if bias:
        m.blk(i, "ffn_gate_inp.bias", count)


def dense(m, n_vocab, qkv_bias=False, qk_norm=False, post_norms=False, fused_up=False,
          tied=False):
    ends(m, n_vocab, tied)
    for i in range(m.layers):
        m.blk(i, "attn_norm.weight", EMBD)
        attention(m, i, qkv_bias, qk_norm)
        m.blk(i, "ffn_norm.weight", EMBD)
        if post_norms:
            m.blk(i, "post_attention_norm.weight", EMBD)
            m.blk(i, "post_ffw_norm.weight", EMBD)
        if fused_up:
            m.blk(i, "ffn_up.weight", EMBD, 2 * FF)
        else:
            m.blk(i, "ffn_gate.weight", EMBD, FF)
            m.blk(i, "ffn_up.weight", EMBD, FF)
        m.blk(i, "ffn_down.weight", FF, EMBD)


def build(arch):
    """(gguf architecture name, writer callback) for one of the models below."""
    def llama(w, m, n_vocab):
        common(w, "llama", m.layers)
        w.add_rope_dimension_count(HEAD_DIM)
        dense(m, n_vocab)

    def qwen2(w, m, n_vocab):
        common(w, "qwen2", m.layers)
        dense(m, n_vocab, qkv_bias=True)

    def qwen3(w, m, n_vocab):
        common(w, "qwen3", m.layers)
        head_keys(w)
        dense(m, n_vocab, qk_norm=True)

    def phi3(w, m, n_vocab):
        common(w, "phi3", m.layers)
        w.add_rope_dimension_count(HEAD_DIM)
        dense(m, n_vocab, fused_up=True)

    def gemma2(w, m, n_vocab):
        common(w, "gemma2", m.layers)
        head_keys(w)
        w.add_sliding_window(256)
        w.add_float32("gemma2.attn_logit_softcapping", 50.0)
        w.add_float32("gemma2.final_logit_softcapping", 30.0)
        dense(m, n_vocab, post_norms=True, tied=True)

    def gemma3(w, m, n_vocab):
        common(w, "gemma3", m.layers)
        head_keys(w)
        w.add_sliding_window(512)
        dense(m, n_vocab, qk_norm=True, post_norms=True, tied=True)

    def gpt_oss(w, m, n_vocab):
        n_experts, ff_exp = 4, 64
        common(w, "gpt-oss", m.layers)
        head_keys(w)
        w.add_rope_dimension_count(HEAD_DIM)
        w.add_sliding_window(128)
        expert_keys(w, n_experts, ff_exp)
        ends(m, n_vocab)
        for i in range(m.layers):
            m.blk(i, "attn_norm.weight", EMBD)
            m.blk(i, "post_attention_norm.weight", EMBD)
            attention(m, i, bias=True)
            m.blk(i, "attn_output.bias", EMBD)
            m.blk(i, "attn_sinks.weight", HEADS)
            experts(m, i, n_experts, ff_exp, bias=True)

    def deepseek2(w, m, n_vocab):
        # Multi-head latent attention as llama.cpp's converter writes it: one KV "head" of
        # kv_lora_rank + rope dims (K) and kv_lora_rank (V), the per-head sizes as *_mla.
        kv_lora, q_lora, rope, nope, v_head = 64, 48, 32, 32, 32
        n_experts, ff_exp = 4, 64
        common(w, "deepseek2", m.layers, heads_kv=1)
        w.add_key_length(kv_lora + rope)
        w.add_value_length(kv_lora)
        w.add_uint32("deepseek2.attention.key_length_mla", nope + rope)
        w.add_uint32("deepseek2.attention.value_length_mla", v_head)
        w.add_q_lora_rank(q_lora)
        w.add_kv_lora_rank(kv_lora)
        w.add_rope_dimension_count(rope)
        w.add_leading_dense_block_count(1)
        w.add_expert_count(n_experts)
        w.add_expert_used_count(2)
        w.add_expert_shared_count(1)
        w.add_expert_feed_forward_length(ff_exp)
        w.add_expert_weights_scale(1.0)
        ends(m, n_vocab)
        for i in range(m.layers):
            m.blk(i, "attn_norm.weight", EMBD)
            m.blk(i, "attn_q_a_norm.weight", q_lora)
            m.blk(i, "attn_kv_a_norm.weight", kv_lora)
            m.blk(i, "attn_q_a.weight", EMBD, q_lora)
            m.blk(i, "attn_q_b.weight", q_lora, HEADS * (nope + rope))
            m.blk(i, "attn_kv_a_mqa.weight", EMBD, kv_lora + rope)
            m.blk(i, "attn_k_b.weight", nope, kv_lora, HEADS)
            m.blk(i, "attn_v_b.weight", kv_lora, v_head, HEADS)
            m.blk(i, "attn_output.weight", HEADS * v_head, EMBD)
            m.blk(i, "ffn_norm.weight", EMBD)
            if i == 0:
                m.blk(i, "ffn_gate.weight", EMBD, FF)
                m.blk(i, "ffn_up.weight", EMBD, FF)
                m.blk(i, "ffn_down.weight", FF, EMBD)
            else:
                experts(m, i, n_experts, ff_exp)
                m.blk(i, "ffn_gate_shexp.weight", EMBD, ff_exp)
                m.blk(i, "ffn_up_shexp.weight", EMBD, ff_exp)
                m.blk(i, "ffn_down_shexp.weight", ff_exp, EMBD)

    def mamba(w, m, n_vocab):
        d_conv, d_inner, d_state, dt_rank = 4, 2 * EMBD, 16, 8
        common(w, "mamba", m.layers, heads=0, heads_kv=0, ff=0)
        w.add_ssm_conv_kernel(d_conv)
        w.add_ssm_inner_size(d_inner)
        w.add_ssm_state_size(d_state)
        w.add_ssm_time_step_rank(dt_rank)
        ends(m, n_vocab)
        for i in range(m.layers):
            m.blk(i, "attn_norm.weight", EMBD)
            m.blk(i, "ssm_in.weight", EMBD, 2 * d_inner)
            m.blk(i, "ssm_conv1d.weight", d_conv, d_inner)
            m.blk(i, "ssm_conv1d.bias", d_inner)
            m.blk(i, "ssm_x.weight", d_inner, dt_rank + 2 * d_state)
            m.blk(i, "ssm_dt.weight", dt_rank, d_inner)
            m.blk(i, "ssm_dt.bias", d_inner)
            m.blk(i, "ssm_a", d_state, d_inner)
            m.blk(i, "ssm_d", d_inner)
            m.blk(i, "ssm_out.weight", d_inner, EMBD)

    def qwen3moe(w, m, n_vocab):
        n_experts, ff_exp = 8, 64
        common(w, "qwen3moe", m.layers)
        head_keys(w)
        expert_keys(w, n_experts, ff_exp)
        ends(m, n_vocab)
        for i in range(m.layers):
            m.blk(i, "attn_norm.weight", EMBD)
            attention(m, i, qk_norm=True)
            m.blk(i, "ffn_norm.weight", EMBD)
            experts(m, i, n_experts, ff_exp)

    def granitehybrid(w, m, n_vocab):
        # Mamba-2 layers with attention layers between them (0 KV heads: a recurrent layer).
        d_conv, d_inner, d_state, n_ssm_head, groups = 4, 2 * EMBD, 16, 8, 1
        common(w, "granitehybrid", m.layers, heads_kv=[0, HEADS_KV, 0, HEADS_KV])
        w.add_rope_dimension_count(HEAD_DIM)
        w.add_ssm_conv_kernel(d_conv)
        w.add_ssm_inner_size(d_inner)
        w.add_ssm_state_size(d_state)
        w.add_ssm_time_step_rank(n_ssm_head)
        w.add_ssm_group_count(groups)
        ends(m, n_vocab)
        conv = d_inner + 2 * groups * d_state
        for i in range(m.layers):
            m.blk(i, "attn_norm.weight", EMBD)
            if i % 2 == 0:
                m.blk(i, "ssm_in.weight", EMBD, 2 * d_inner + 2 * groups * d_state + n_ssm_head)
                m.blk(i, "ssm_conv1d.weight", d_conv, conv)
                m.blk(i, "ssm_conv1d.bias", conv)
                m.blk(i, "ssm_dt.bias", n_ssm_head)
                m.blk(i, "ssm_a", 1, n_ssm_head)
                m.blk(i, "ssm_d", 1, n_ssm_head)
                m.blk(i, "ssm_norm.weight", d_inner // groups, groups)
                m.blk(i, "ssm_out.weight", d_inner, EMBD)
            else:
                attention(m, i)
            m.blk(i, "ffn_norm.weight", EMBD)
            m.blk(i, "ffn_gate.weight", EMBD, FF)
            m.blk(i, "ffn_up.weight", EMBD, FF)
            m.blk(i, "ffn_down.weight", FF, EMBD)

    table = {
        "qwen3moe": ("qwen3moe", 4, qwen3moe),
        "granitehybrid": ("granitehybrid", 4, granitehybrid),
        "llama": ("llama", 4, llama),
        "qwen2": ("qwen2", 4, qwen2),
        "qwen3": ("qwen3", 4, qwen3),
        "phi3": ("phi3", 4, phi3),
        "gemma2": ("gemma2", 4, gemma2),
        "gemma3": ("gemma3", 6, gemma3),
        "gpt-oss": ("gpt-oss", 4, gpt_oss),
        "deepseek2": ("deepseek2", 3, deepseek2),
        "mamba": ("mamba", 3, mamba),
    }
    return table[arch]


ARCHS = ["llama", "qwen2", "qwen3", "qwen3moe", "phi3", "gemma2", "gemma3", "gpt-oss", "deepseek2",
         "mamba", "granitehybrid", "llama-wide", "mamba-wide"]

# Models of another shape: the architecture they are and the dimensions that differ.
VARIANTS = {
    # Wider than deep, a long feed-forward, 8 query heads per KV head: the compute buffer's
    # phases in other proportions.
    "llama-wide": ("llama", {"EMBD": 256, "HEADS": 8, "HEADS_KV": 1, "FF": 1024, "VOCAB": 2048}),
    # A small vocabulary, so that the recurrent layers rather than the logits set the buffer.
    "mamba-wide": ("mamba", {"EMBD": 512, "VOCAB": 512}),
}


def write(out_dir, arch):
    base, dims = VARIANTS.get(arch, (arch, {}))
    saved = {k: globals()[k] for k in dims}
    globals().update(dims)
    try:
        return write_one(out_dir, arch, base)
    finally:
        globals().update(saved)


def write_one(out_dir, arch, base):
    name, layers, fill = build(base)
    path = os.path.join(out_dir, f"{arch}.gguf")
    w = GGUFWriter(path, name)
    w.add_name(f"memwarden oracle {arch}")
    m = Model(name, layers)
    n_vocab = vocab(w)
    fill(w, m, n_vocab)
    for tname, data in m.tensors:
        w.add_tensor(tname, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: make_models.py OUT_DIR [ARCH ...]")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for arch in sys.argv[2:] or ARCHS:
        print(write(out_dir, arch))


if __name__ == "__main__":
    main()
