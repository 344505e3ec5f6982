// The oracle: loads a GGUF with llama.cpp (CPU only) and prints, for each configuration read
// from stdin, the bytes llama.cpp itself allocates for the model, the context (KV cache and
// recurrent state) and the compute buffer. memwarden-plan's tests/llama_oracle.rs compares
// `estimate` against these figures.
//
// stdin, one configuration a line:
//   n_ctx n_seq_max kv_unified(0|1) type_k type_v flash_attn(on|off|auto) n_batch n_ubatch
// stdout, one line each:
//   ok model=B context=B compute=B n_ctx=N n_ctx_seq=N
//   or: err MESSAGE   (llama.cpp refused the configuration)
//
// The byte figures come from llama_get_memory_breakdown, which this llama.cpp exports from
// libllama but declares only in its internal src/llama-ext.h (not installed); the declaration
// below repeats it. It is C++ (a std::map by value), so it must match that header exactly.

#include "llama.h"

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

struct llama_memory_breakdown_data {
    size_t model   = 0;
    size_t context = 0;
    size_t compute = 0;

    size_t total() const { return model + context + compute; }
};

using llama_memory_breakdown = std::map<ggml_backend_buffer_type_t, llama_memory_breakdown_data>;

LLAMA_API llama_memory_breakdown llama_get_memory_breakdown(const struct llama_context * ctx);

static std::string last_error;

static void on_log(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) {
        last_error += text;
    }
}

static bool parse_type(const std::string & s, ggml_type & out) {
    static const std::map<std::string, ggml_type> types = {
        {"f32", GGML_TYPE_F32},   {"f16", GGML_TYPE_F16},   {"bf16", GGML_TYPE_BF16},
        {"q8_0", GGML_TYPE_Q8_0}, {"q4_0", GGML_TYPE_Q4_0}, {"q4_1", GGML_TYPE_Q4_1},
        {"q5_0", GGML_TYPE_Q5_0}, {"q5_1", GGML_TYPE_Q5_1}, {"iq4_nl", GGML_TYPE_IQ4_NL},
    };
    auto it = types.find(s);
    if (it == types.end()) {
        return false;
    }
    out = it->second;
    return true;
}

static std::string one_line(std::string s) {
    for (char & c : s) {
        if (c == '\n' || c == '\r') {
            c = ' ';
        }
    }
    return s;
}

int main(int argc, char ** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.gguf < configurations\n", argv[0]);
        return 2;
    }
    llama_log_set(on_log, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        printf("err cannot load %s: %s\n", argv[1], one_line(last_error).c_str());
        return 1;
    }

    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.empty()) {
            continue;
        }
        std::istringstream in(line);
        unsigned n_ctx, n_seq, unified, n_batch, n_ubatch;
        std::string tk, tv, fa;
        if (!(in >> n_ctx >> n_seq >> unified >> tk >> tv >> fa >> n_batch >> n_ubatch)) {
            printf("err bad configuration line: %s\n", line.c_str());
            fflush(stdout);
            continue;
        }
        // As llama.cpp's own tools (common_context_params_to_llama) set them.
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx      = n_ctx;
        cp.n_seq_max  = n_seq;
        cp.kv_unified = unified != 0;
        cp.n_batch    = n_batch;
        cp.n_ubatch   = n_ubatch;
        cp.swa_full   = false;
        cp.n_outputs_max = 0;
        cp.n_outputs_max_per_seq = 0;
        cp.n_threads  = 1;
        cp.n_threads_batch = 1;
        if (!parse_type(tk, cp.type_k) || !parse_type(tv, cp.type_v)) {
            printf("err unknown cache type in: %s\n", line.c_str());
            fflush(stdout);
            continue;
        }
        if (fa == "on") {
            cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
        } else if (fa == "off") {
            cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        } else {
            cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
        }
        last_error.clear();
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx) {
            printf("err %s\n", one_line(last_error).c_str());
            fflush(stdout);
            continue;
        }
        llama_memory_breakdown_data sum;
        for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
            sum.model += mb.model;
            sum.context += mb.context;
            sum.compute += mb.compute;
        }
        printf("ok model=%zu context=%zu compute=%zu n_ctx=%u n_ctx_seq=%u\n", sum.model,
               sum.context, sum.compute, llama_n_ctx(ctx), llama_n_ctx_seq(ctx));
        fflush(stdout);
        llama_free(ctx);
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
