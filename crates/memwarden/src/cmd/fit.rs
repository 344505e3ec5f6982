//! `memwarden fit`: how many workers fit in a pool's free memory. The number alone goes to
//! stdout (for `make -j"$(memwarden fit …)"`), the reasoning to stderr.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use memwarden_plan::fit::{
    DEFAULT_HEADROOM, Fit, FitRequest, Pool, PoolReading, compute_fit, read_pool,
};
use memwarden_probe::size::{format_size, parse_size};

use crate::cli::Global;

#[derive(Debug, Args)]
pub struct FitArgs {
    /// Which memory the workers use: ram, vram[:GPU] or gtt[:GPU]
    #[arg(long, default_value = "ram", value_name = "POOL")]
    pub pool: String,
    /// Memory loaded once and shared by all workers (a model, a cache): 13GiB, 512MiB, …
    #[arg(
        long,
        default_value = "0",
        value_name = "SIZE",
        allow_hyphen_values = true
    )]
    pub fixed: String,
    /// Memory each worker adds
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub per_worker: String,
    /// Workers wanted (the answer is at most this); without it, how many fit at most
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub want: Option<u32>,
    /// Fraction of the free memory to use, in (0, 1]
    #[arg(long, default_value_t = DEFAULT_HEADROOM, value_name = "FRACTION", allow_negative_numbers = true)]
    pub headroom: f64,
    /// Free memory to plan with instead of the live reading (another machine, a test)
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub available: Option<String>,
    /// Print every figure as one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Global, args: FitArgs) -> Result<ExitCode> {
    let pool: Pool = args.pool.parse()?;
    let fixed = parse_size(&args.fixed).context("--fixed")?;
    let per_worker = parse_size(&args.per_worker).context("--per-worker")?;
    if args.want.is_none() && per_worker == 0 {
        bail!("with --per-worker 0 any number of workers fits: give --want");
    }
    // The host's swap, where the answer is about RAM on this machine: what happens when even
    // one worker does not fit depends on it.
    let mut swap_bytes = None;
    let reading = match &args.available {
        Some(a) => PoolReading {
            available_bytes: parse_size(a).context("--available")?,
            source: "--available".into(),
        },
        None => {
            let mut probe = super::probe(g)?;
            if pool == Pool::Ram {
                swap_bytes = probe.host_memory().ok().map(|h| h.swap_total_bytes);
            }
            read_pool(&mut probe, pool)?
        }
    };
    let fit = compute_fit(FitRequest {
        available_bytes: reading.available_bytes,
        fixed_bytes: fixed,
        per_worker_bytes: per_worker,
        // No wish: as many as fit.
        want: args.want.unwrap_or(u32::MAX),
        headroom: args.headroom,
    })?;
    let pool_name = match pool {
        Pool::Ram => "RAM".to_string(),
        Pool::Vram(i) => format!("VRAM of GPU {i}"),
        Pool::Gtt(i) => format!("GTT of GPU {i}"),
    };
    if args.json {
        let mut v = serde_json::to_value(fit)?;
        v["pool"] = pool_name.clone().into();
        v["source"] = reading.source.clone().into();
        if args.want.is_none() {
            v["want"] = serde_json::Value::Null;
            v["reduced"] = false.into();
        }
        println!("{v}");
    } else {
        println!("{}", fit.threads);
    }
    let why = Why {
        pool: &pool_name,
        source: &reading.source,
        wanted: args.want.is_some(),
        swap_bytes,
    };
    eprint!("{}", reasoning(&fit, &why));
    Ok(if fit.swapping {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What the reasoning on stderr says besides the figures.
struct Why<'a> {
    pool: &'a str,
    source: &'a str,
    /// A worker count was asked for (else the answer is the most that fit).
    wanted: bool,
    /// The host's swap, when the pool is this host's RAM.
    swap_bytes: Option<u64>,
}

fn reasoning(f: &Fit, why: &Why) -> String {
    let Why { pool, source, .. } = *why;
    let mut s = format!(
        "memwarden: {pool} free {} ({source}), budget {} at headroom {}; fixed {} + {} × {}/worker -> {} worker(s)\n",
        format_size(f.available_bytes),
        format_size(f.budget_bytes),
        f.headroom,
        format_size(f.fixed_bytes),
        f.threads,
        format_size(f.per_worker_bytes),
        f.threads
    );
    if f.swapping {
        s.push_str(&format!(
            "memwarden: WARNING: {} does not fit the {pool} budget of {}: {} short. Running 1 \
             worker {}; shrink the shared data or free memory.\n",
            if f.per_worker_bytes == 0 {
                format!("the fixed part ({})", format_size(f.fixed_bytes))
            } else {
                format!(
                    "even one worker ({} fixed + {} per worker)",
                    format_size(f.fixed_bytes),
                    format_size(f.per_worker_bytes)
                )
            },
            format_size(f.budget_bytes),
            format_size(f.shortfall_bytes),
            match why.swap_bytes {
                Some(0) => "will be ended by the kernel's OOM killer (this host has no swap)",
                Some(_) => "will swap, or be ended by the kernel's OOM killer",
                None => "will swap or be killed",
            }
        ));
    } else if f.reduced && why.wanted {
        s.push_str(&format!(
            "memwarden: reduced workers {} -> {} to stay out of swap\n",
            f.want, f.threads
        ));
    }
    s
}
