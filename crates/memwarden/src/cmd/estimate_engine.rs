//! `memwarden estimate MODEL --engine vllm|sglang`: what a preallocating engine takes on the
//! card, and how much context its KV share holds.

use std::fmt::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use memwarden_plan::engine::{self, Engine, EngineOptions, EnginePlan};
use memwarden_plan::topology::find_gpu;
use memwarden_probe::size::{format_size, parse_size};
use memwarden_probe::snapshot::Gpu;

use super::estimate::EstimateArgs;
use crate::cli::Global;

/// The card a preallocating engine takes its fraction of: (total, free now, how to name it).
fn card(g: &Global, args: &EstimateArgs, engine: Engine) -> Result<(u64, Option<u64>, String)> {
    if let Some(v) = &args.vram {
        let total = parse_size(v).context("--vram")?;
        return Ok((
            total,
            None,
            format!("a card of {} (--vram)", format_size(total)),
        ));
    }
    let gpus = super::probe(g)?.gpus();
    let gpu: Gpu = match args.gpu {
        Some(idx) => find_gpu(gpus, idx)?,
        None => gpus.into_iter().min_by_key(|g| g.index).with_context(|| {
            format!(
                "--engine {engine} takes a fraction of the card's memory, and no GPU is seen \
                 here: give the card's size with --vram SIZE"
            )
        })?,
    };
    let total = gpu.vram_total_bytes.with_context(|| {
        format!(
            "GPU {} ({}) reports no memory size: give it with --vram SIZE",
            gpu.index, gpu.name
        )
    })?;
    Ok((
        total,
        gpu.vram_free_bytes(),
        format!("GPU {} ({})", gpu.index, gpu.name),
    ))
}

pub fn run(g: &Global, args: &EstimateArgs, engine: Engine) -> Result<ExitCode> {
    let fraction = engine.fraction(args.gpu_memory_utilization, args.mem_fraction_static)?;
    let kv_dtype_bytes = engine::kv_cache_dtype_bytes(&args.kv_cache_dtype)?;
    let llama_only = [
        (args.parallel != 1, "--parallel"),
        (args.kv_type != "f16", "--kv-type"),
        (args.kv_type_k.is_some(), "--kv-type-k"),
        (args.kv_type_v.is_some(), "--kv-type-v"),
        (args.flash_attn != "auto", "--flash-attn"),
        (args.kv_unified, "--kv-unified"),
        (
            args.batch != memwarden_plan::estimate::DEFAULT_BATCH,
            "--batch",
        ),
        (
            args.ubatch != memwarden_plan::estimate::DEFAULT_UBATCH,
            "--ubatch",
        ),
    ];
    if let Some((_, flag)) = llama_only.iter().find(|(given, _)| *given) {
        bail!(
            "{flag} is llama.cpp's: with --engine {engine} the KV cache dtype is --kv-cache-dtype and the number of sequences is the answer"
        );
    }
    if !args.model.exists() {
        bail!("model {} does not exist", args.model.display());
    }
    let (card_bytes, free_bytes, label) = card(g, args, engine)?;
    let opts = EngineOptions {
        engine,
        fraction,
        card_bytes,
        free_bytes,
        ctx: args.ctx,
        kv_dtype_bytes,
    };
    let mut p = engine::plan_file(&args.model, &opts)?;
    // A card given by size alone has no free figure: it holds the model if it was planned.
    if args.vram.is_some() {
        p.fits = Some(true);
    }
    if args.json {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        print!("{}", render(&p, &label));
    }
    Ok(if args.fits && p.fits == Some(false) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn render(p: &EnginePlan, card: &str) -> String {
    let mut out = String::new();
    let flag = p.engine.fraction_flag();
    let default = if p.fraction_default { " (default)" } else { "" };
    let _ = writeln!(
        out,
        "estimate for     {} (safetensors) under {}, context {} tokens per sequence, on {card}",
        p.architecture, p.engine, p.context
    );
    let line = |out: &mut String, label: &str, bytes: u64, why: String| {
        let _ = writeln!(out, "{label:<16} ~{:>10}  {why}", format_size(bytes));
    };
    let need_why = match p.engine {
        Engine::Vllm => format!(
            "{flag} {}{default} of the card, taken at start whatever the context",
            p.fraction
        ),
        _ => format!(
            "{flag} {}{default} of the card ({}) and SGLang's reserve for activations and \
             CUDA graphs beside it",
            p.fraction,
            format_size(p.share_bytes)
        ),
    };
    line(&mut out, "need on card", p.need_bytes, need_why);
    line(
        &mut out,
        "weights",
        p.weights_bytes,
        "from the file's tensors".into(),
    );
    let reserve_why = match p.engine {
        Engine::Vllm => "estimate: the activation peak vLLM profiles, and memory outside torch",
        _ => "estimate: memory outside torch (CUDA context, NCCL)",
    };
    line(&mut out, "reserve", p.reserve_bytes, reserve_why.into());
    line(
        &mut out,
        "KV share",
        p.kv_share_bytes,
        format!(
            "what is left: {} per token{}",
            format_size(p.kv_bytes_per_token),
            if p.mla { " (latent attention)" } else { "" }
        ),
    );
    let _ = writeln!(
        out,
        "holds            {} tokens: {} sequence(s) of {} at once",
        p.max_tokens, p.sequences, p.context
    );
    if let (Some(free), Some(fits)) = (p.free_bytes, p.fits) {
        if fits {
            let _ = writeln!(
                out,
                "fits             yes: {card} has {} free",
                format_size(free)
            );
        } else {
            let _ = writeln!(
                out,
                "fits             no: {card} has {} free, {} short",
                format_size(free),
                format_size(p.need_bytes - free)
            );
        }
    }
    for n in &p.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}
