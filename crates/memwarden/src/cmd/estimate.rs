//! `memwarden estimate MODEL`: will this model fit, and how? Reads the file's header only.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use memwarden_plan::engine::Engine;
use memwarden_plan::estimate::{Estimate, EstimateOptions, FlashAttn, KvType, estimate_file};
use memwarden_plan::ollama;
use memwarden_plan::topology::find_gpu;
use memwarden_probe::size::{format_size, parse_size};
use memwarden_probe::snapshot::Gpu;

use crate::cli::Global;

#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// A GGUF file, a .safetensors file, a directory of safetensors shards with config.json, or
    /// the name of a model Ollama has pulled (llama3.1:8b)
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Context in tokens, the total over all parallel slots (llama.cpp's -c); default: the
    /// model's trained context length
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub ctx: Option<u64>,
    /// Parallel sequences sharing the context (llama.cpp's -np)
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub parallel: u32,
    /// One KV cache shared by all slots (llama.cpp's -kvu); without it each slot gets its own
    /// share of the context, at least 256 cells
    #[arg(long)]
    pub kv_unified: bool,
    /// Type of the K and V cache: f16, q8_0, q4_0 (also f32, bf16, q4_1, q5_0, q5_1, iq4_nl)
    #[arg(long, default_value = "f16", value_name = "TYPE")]
    pub kv_type: String,
    /// Type of the K cache only (llama.cpp's -ctk), when it differs from --kv-type
    #[arg(long, value_name = "TYPE")]
    pub kv_type_k: Option<String>,
    /// Type of the V cache only (llama.cpp's -ctv); a quantised V needs --flash-attn
    #[arg(long, value_name = "TYPE")]
    pub kv_type_v: Option<String>,
    /// Flash attention: on, off or auto (llama.cpp's -fa; auto, the default, runs it where the
    /// backend can, which is estimated as on; a quantised V cache needs it)
    #[arg(
        long,
        value_name = "on|off|auto",
        num_args = 0..=1,
        default_value = "auto",
        default_missing_value = "on"
    )]
    pub flash_attn: String,
    /// Tokens per logical batch (llama.cpp's -b)
    #[arg(
        long,
        default_value_t = memwarden_plan::estimate::DEFAULT_BATCH,
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub batch: u64,
    /// Tokens per micro-batch (llama.cpp's -ub): sizes the compute buffers
    #[arg(
        long,
        default_value_t = memwarden_plan::estimate::DEFAULT_UBATCH,
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub ubatch: u64,
    /// Fit into this GPU's free memory, read live
    #[arg(
        long,
        value_name = "IDX",
        conflicts_with = "vram",
        allow_negative_numbers = true
    )]
    pub gpu: Option<u32>,
    /// Fit into this much GPU memory (512MiB, 24GiB, …)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub vram: Option<String>,
    /// Exit 0 when the model fits, 1 when it does not (needs --gpu or --vram)
    #[arg(long)]
    pub fits: bool,
    /// Print every figure as one JSON object
    #[arg(long)]
    pub json: bool,
    /// Who runs it: llamacpp (the default), or vllm / sglang, which take a fraction of the
    /// card at start: then --vram is the card's total memory and --gpu reads that GPU's total
    /// (default: the first GPU seen), and the answer is the context the KV share holds
    #[arg(long, default_value = "llamacpp", value_name = "ENGINE")]
    pub engine: String,
    /// vLLM's fraction of the card (default 0.9)
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    pub gpu_memory_utilization: Option<f64>,
    /// SGLang's fraction of the card for weights and KV pool (default: SGLang's, by card size)
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    pub mem_fraction_static: Option<f64>,
    /// vLLM/SGLang KV cache dtype: auto (16-bit), fp8, fp8_e4m3, fp8_e5m2
    #[arg(long, default_value = "auto", value_name = "DTYPE")]
    pub kv_cache_dtype: String,
}

/// The free memory a model could use on a GPU; on a unified-memory GPU that is its GTT too.
pub fn gpu_free(gpu: &Gpu) -> Option<u64> {
    let vram = gpu.vram_free_bytes();
    if gpu.unified_memory {
        Some(vram.unwrap_or(0) + gpu.gtt_free_bytes()?)
    } else {
        vram
    }
}

/// The GGUF blob behind an Ollama model name (`llama3.1:8b`), when Ollama has it.
fn ollama_blob(name: &std::path::Path) -> Result<Option<PathBuf>> {
    let Some(name) = name.to_str() else {
        return Ok(None);
    };
    for dir in ollama::model_dirs() {
        if let Some(blob) = ollama::resolve(&dir, name)? {
            return Ok(Some(blob));
        }
    }
    Ok(None)
}

pub fn run(g: &Global, args: EstimateArgs) -> Result<ExitCode> {
    let engine: Engine = args.engine.parse()?;
    if engine.preallocates() {
        return super::estimate_engine::run(g, &args, engine);
    }
    engine.fraction(args.gpu_memory_utilization, args.mem_fraction_static)?;
    if args.kv_cache_dtype != "auto" {
        bail!("--kv-cache-dtype is for --engine vllm or sglang: llama.cpp's is --kv-type");
    }
    let kv_type: KvType = args.kv_type.parse()?;
    let flash_attn: FlashAttn = args.flash_attn.parse()?;
    let kv_type_k = args
        .kv_type_k
        .as_deref()
        .map(str::parse::<KvType>)
        .transpose()?;
    let kv_type_v = args
        .kv_type_v
        .as_deref()
        .map(str::parse::<KvType>)
        .transpose()?;
    let (vram, gpu_label) = match (&args.vram, args.gpu) {
        (Some(v), _) => (Some(parse_size(v).context("--vram")?), None),
        (None, Some(idx)) => {
            let gpu = find_gpu(super::probe(g)?.gpus(), idx)?;
            let free = gpu_free(&gpu).with_context(|| {
                format!("GPU {idx} ({}) reports no free-memory figure", gpu.name)
            })?;
            (Some(free), Some(format!("GPU {idx} ({})", gpu.name)))
        }
        (None, None) => (None, None),
    };
    if args.fits && vram.is_none() {
        bail!("--fits needs --gpu IDX or --vram SIZE to fit into");
    }
    let model = if args.model.exists() {
        args.model.clone()
    } else {
        ollama_blob(&args.model)?.with_context(|| {
            format!(
                "model file {} does not exist (nor is it a model Ollama has here)",
                args.model.display()
            )
        })?
    };
    let opts = EstimateOptions {
        ctx: args.ctx,
        parallel: args.parallel,
        kv_unified: args.kv_unified,
        kv_type,
        kv_type_k,
        kv_type_v,
        flash_attn,
        vram_bytes: vram,
        batch: args.batch,
        ubatch: args.ubatch,
    };
    let e = estimate_file(&model, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string(&e)?);
    } else {
        print!("{}", render(&e, gpu_label.as_deref()));
    }
    Ok(if args.fits && e.fits == Some(false) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn render(e: &Estimate, gpu: Option<&str>) -> String {
    let mut out = String::new();
    let ub = e.ubatch;
    let fmt = match e.format {
        memwarden_plan::model::ModelFormat::Gguf => "GGUF",
        memwarden_plan::model::ModelFormat::Safetensors => "safetensors",
    };
    let slots = match (e.parallel, e.kv_streams) {
        (1, _) => String::new(),
        (n, 1) => format!(" ({n} slots sharing one cache)"),
        (n, s) => format!(" ({n} slots, a cache of {} cells each)", e.kv_size / s),
    };
    let _ = writeln!(
        out,
        "estimate for     {} ({fmt}, {} layers), context {} tokens{slots}, KV cache {}{}",
        e.architecture,
        e.layers,
        e.context,
        if e.kv_type == e.kv_type_v {
            e.kv_type.to_string()
        } else {
            format!("K {} V {}", e.kv_type, e.kv_type_v)
        },
        if e.flash_attn {
            ", flash attention"
        } else {
            ""
        }
    );
    let line = |out: &mut String, label: &str, bytes: u64, why: String| {
        let _ = writeln!(out, "{label:<16} ~{:>10}  {why}", format_size(bytes));
    };
    line(
        &mut out,
        "weights",
        e.weights_bytes,
        "from the file's tensors".into(),
    );
    let swa = e
        .kv_size_swa
        .map(|s| format!(", sliding-window layers {s} cells"))
        .unwrap_or_default();
    line(
        &mut out,
        "KV cache",
        e.kv_cache_bytes,
        format!(
            "{} cells{swa}: K {} + V {}",
            e.kv_size,
            format_size(e.kv_k_bytes),
            format_size(e.kv_v_bytes)
        ),
    );
    if e.recurrent_state_bytes > 0 {
        line(
            &mut out,
            "recurrent state",
            e.recurrent_state_bytes,
            format!("{} sequence(s)", e.parallel),
        );
    }
    line(
        &mut out,
        "compute buffer",
        e.compute_bytes,
        format!("estimate: the largest step of one {ub}-token micro-batch"),
    );
    line(
        &mut out,
        "runtime reserve",
        e.runtime_bytes,
        "estimate: GPU runtime context and allocator slack".into(),
    );
    line(&mut out, "total", e.total_bytes, "estimate".into());
    if let (Some(vram), Some(fits)) = (e.vram_bytes, e.fits) {
        let target = gpu.map_or_else(
            || format!("{} of VRAM", format_size(vram)),
            |g| format!("{g} with {} free", format_size(vram)),
        );
        if fits {
            let _ = writeln!(
                out,
                "fits             yes: {target}, {} to spare",
                format_size(vram - e.total_bytes)
            );
        } else {
            let _ = write!(
                out,
                "fits             no: {target}, {} short",
                format_size(e.total_bytes - vram)
            );
            match e.gpu_layers {
                Some(n) => {
                    let _ = writeln!(
                        out,
                        "; {n} of {} layers could be offloaded (llama.cpp -ngl {n})",
                        e.layers
                    );
                }
                None => out.push('\n'),
            }
        }
    }
    for n in &e.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
