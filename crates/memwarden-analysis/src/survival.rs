//! Will this process survive? OK / TIGHT / OOM per process on a GPU, with the reason.
//!
//! Checks, in order (each one's reason is what the user sees):
//! 1. Spike: the process's past peak minus its current use exceeds the free memory → OOM (a
//!    training step that allocated that much before will do it again).
//! 2. Critical floor: free below 2% of the device → TIGHT, whatever the phase.
//! 3. Stable or shrinking: free below 5% → TIGHT, else OK.
//! 4. Growing or volatile: expected peak = max(past peak, base × framework multiplier), base being
//!    the model size when known, else the current use. Needing more than is free → OOM, more than
//!    three quarters of it → TIGHT.
//!
//! Pre-allocating frameworks (vLLM, SGLang, TGI, JAX) reserve their pool at start and run at 95%+
//! on purpose: they skip the spike check and the floors (1–3), and their expected peak is their
//! use × 1.05, never a multiplier over memory they already hold.
//!
//! Then collective pressure: when the expected peaks of all processes on a device add up to more
//! than the device, every OK becomes TIGHT and every TIGHT becomes OOM.

use std::fmt;

use serde::Serialize;

use crate::phase::Phase;

/// The framework a process runs, as far as is known; callers may leave it `Unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Framework {
    #[default]
    Unknown,
    /// PyTorch, mode unknown.
    PyTorch,
    /// PyTorch running inference only.
    PyTorchInference,
    /// PyTorch full training (optimizer state: the largest multiplier).
    PyTorchTraining,
    /// LoRA / PEFT fine-tuning.
    Lora,
    Jax,
    TensorFlow,
    Vllm,
    Sglang,
    Tgi,
    Ollama,
    LlamaCpp,
    /// Named, but not one this module knows.
    Other(String),
}

impl Framework {
    /// From a free-form name (`vllm`, `text-generation-inference`, `torch`, `llama.cpp`, ...);
    /// case and separators do not matter. An empty name is `Unknown`.
    pub fn from_name(name: &str) -> Framework {
        let n: String = name
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        match n.as_str() {
            "" | "unknown" => Framework::Unknown,
            "pytorch" | "torch" => Framework::PyTorch,
            "pytorchinference" | "torchinference" | "inference" => Framework::PyTorchInference,
            "pytorchtraining" | "torchtraining" | "training" => Framework::PyTorchTraining,
            "lora" | "peft" => Framework::Lora,
            "jax" | "xla" => Framework::Jax,
            "tensorflow" | "tf" => Framework::TensorFlow,
            "vllm" => Framework::Vllm,
            "sglang" => Framework::Sglang,
            "tgi" | "textgenerationinference" | "textgenerationlauncher" => Framework::Tgi,
            "ollama" => Framework::Ollama,
            "llamacpp" | "llamaserver" | "llamacppserver" => Framework::LlamaCpp,
            _ => Framework::Other(crate::report::clip_name(name)),
        }
    }

    /// Frameworks that reserve their memory pool up front.
    pub fn is_preallocating(&self) -> bool {
        matches!(
            self,
            Framework::Vllm | Framework::Sglang | Framework::Tgi | Framework::Jax
        )
    }

    /// Expected peak over the base (weights, or current use) while growing or volatile.
    pub fn multiplier(&self) -> f64 {
        match self {
            Framework::PyTorchInference | Framework::Ollama | Framework::LlamaCpp => 1.2,
            Framework::Lora => 1.5,
            Framework::PyTorchTraining => 4.0,
            Framework::PyTorch | Framework::TensorFlow => 2.5,
            // Their pool is already held: only a small margin on top of it.
            Framework::Vllm | Framework::Sglang | Framework::Tgi | Framework::Jax => 1.05,
            Framework::Unknown | Framework::Other(_) => 1.5,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Framework::Unknown => "unknown",
            Framework::PyTorch => "pytorch",
            Framework::PyTorchInference => "pytorch-inference",
            Framework::PyTorchTraining => "pytorch-training",
            Framework::Lora => "lora",
            Framework::Jax => "jax",
            Framework::TensorFlow => "tensorflow",
            Framework::Vllm => "vllm",
            Framework::Sglang => "sglang",
            Framework::Tgi => "tgi",
            Framework::Ollama => "ollama",
            Framework::LlamaCpp => "llama.cpp",
            Framework::Other(s) => s,
        }
    }
}

impl From<memwarden_probe::framework::Framework> for Framework {
    /// The probe's detection (what a snapshot records) as the survival checks see it.
    fn from(f: memwarden_probe::framework::Framework) -> Framework {
        use memwarden_probe::framework::Framework as P;
        match f {
            P::Vllm => Framework::Vllm,
            P::Sglang => Framework::Sglang,
            P::Tgi => Framework::Tgi,
            P::LlamaCpp => Framework::LlamaCpp,
            P::Ollama => Framework::Ollama,
            P::Jax => Framework::Jax,
            P::Pytorch | P::Comfyui => Framework::PyTorch,
            P::Cuda | P::Rocm | P::Unknown => Framework::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Ok,
    Tight,
    Oom,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Tight => "TIGHT",
            Verdict::Oom => "OOM",
        }
    }

    /// A symbol that carries the verdict without colour.
    pub fn symbol(self) -> char {
        match self {
            Verdict::Ok => '✓',
            Verdict::Tight => '⚠',
            Verdict::Oom => '✗',
        }
    }

    /// One step worse (OK → TIGHT → OOM).
    pub fn upgraded(self) -> Verdict {
        match self {
            Verdict::Ok => Verdict::Tight,
            Verdict::Tight | Verdict::Oom => Verdict::Oom,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one process on one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct SurvivalInput {
    /// The process's GPU memory now.
    pub used_bytes: u64,
    /// The highest GPU memory seen for this process identity.
    pub peak_bytes: u64,
    pub phase: Phase,
    pub framework: Framework,
    /// Size of the model's weights, when known (from open model files).
    pub model_bytes: Option<u64>,
}

/// Thresholds of the checks; the defaults are the documented ones.
#[derive(Debug, Clone, PartialEq)]
pub struct SurvivalConfig {
    /// Free below this share of the device → TIGHT in any phase.
    pub critical_free_fraction: f64,
    /// Free below this share → TIGHT even when stable.
    pub stable_free_fraction: f64,
    /// Needing more than this share of the free memory → TIGHT.
    pub tight_need_fraction: f64,
    /// Expected peak of a pre-allocating framework over its use.
    pub preallocated_factor: f64,
}

impl Default for SurvivalConfig {
    fn default() -> Self {
        SurvivalConfig {
            critical_free_fraction: 0.02,
            stable_free_fraction: 0.05,
            tight_need_fraction: 0.75,
            preallocated_factor: 1.05,
        }
    }
}

/// A verdict, why, and the expected peak that went into the collective check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Survival {
    pub verdict: Verdict,
    pub reason: String,
    pub expected_peak_bytes: u64,
}

/// The verdict for one process, before collective pressure. `gpu_total_bytes` of 0 (unknown)
/// skips the headroom floors.
pub fn survival(
    p: &SurvivalInput,
    gpu_total_bytes: u64,
    gpu_free_bytes: u64,
    cfg: &SurvivalConfig,
) -> Survival {
    let used = p.used_bytes as f64;
    let peak_seen = p.peak_bytes.max(p.used_bytes) as f64;
    let free = gpu_free_bytes as f64;
    let total = gpu_total_bytes as f64;
    let gib = |b: f64| crate::report::human_bytes(b);
    let make = |verdict, reason: String, peak: f64| Survival {
        verdict,
        reason,
        expected_peak_bytes: finite_u64(peak),
    };

    let prealloc = p.framework.is_preallocating();
    if !prealloc && peak_seen - used > free {
        return make(
            Verdict::Oom,
            format!(
                "past peak is {} above current use, only {} free",
                gib(peak_seen - used),
                gib(free)
            ),
            peak_seen,
        );
    }
    if !prealloc && total > 0.0 && free < total * cfg.critical_free_fraction {
        return make(
            Verdict::Tight,
            format!(
                "only {} free ({:.1}% of the device)",
                gib(free),
                100.0 * free / total
            ),
            peak_seen,
        );
    }
    match p.phase {
        Phase::Stable | Phase::Shrinking => {
            if prealloc {
                make(
                    Verdict::Ok,
                    format!(
                        "{}, {} pre-allocates its pool and runs full on purpose",
                        p.phase.as_str(),
                        p.framework.as_str()
                    ),
                    peak_seen.max(used * cfg.preallocated_factor),
                )
            } else if total > 0.0 && free < total * cfg.stable_free_fraction {
                make(
                    Verdict::Tight,
                    format!(
                        "{} but only {} free ({:.1}%)",
                        p.phase.as_str(),
                        gib(free),
                        100.0 * free / total
                    ),
                    peak_seen,
                )
            } else {
                make(Verdict::Ok, p.phase.as_str().to_string(), peak_seen)
            }
        }
        Phase::Growing | Phase::Volatile => {
            // A pre-allocating framework already holds its pool: a multiplier over it would
            // count the pool twice, whatever the model's size.
            let (m, base, what) = if prealloc {
                (cfg.preallocated_factor, used, "use, pre-allocated")
            } else {
                match p.model_bytes {
                    Some(b) => (p.framework.multiplier(), b as f64, "weights"),
                    None => (p.framework.multiplier(), used, "use"),
                }
            };
            let expected = peak_seen.max(base * m);
            let need = (expected - used).max(0.0);
            let why = format!(
                "{}: expected peak {} ({} × {:.2} for {}), needs {} more, {} free",
                p.phase.as_str(),
                gib(expected),
                what,
                m,
                p.framework.as_str(),
                gib(need),
                gib(free)
            );
            let verdict = if need > free {
                Verdict::Oom
            } else if need > free * cfg.tight_need_fraction {
                Verdict::Tight
            } else {
                Verdict::Ok
            };
            make(verdict, why, expected)
        }
    }
}

/// Verdicts for every process on one device, with collective pressure applied.
pub fn assess_gpu(
    processes: &[SurvivalInput],
    gpu_total_bytes: u64,
    gpu_free_bytes: u64,
    cfg: &SurvivalConfig,
) -> Vec<Survival> {
    let mut out: Vec<Survival> = processes
        .iter()
        .map(|p| survival(p, gpu_total_bytes, gpu_free_bytes, cfg))
        .collect();
    let demand: u128 = out.iter().map(|s| s.expected_peak_bytes as u128).sum();
    if gpu_total_bytes > 0 && demand > gpu_total_bytes as u128 {
        let note = format!(
            "; together the processes expect {} of {}",
            crate::report::human_bytes(demand as f64),
            crate::report::human_bytes(gpu_total_bytes as f64)
        );
        for s in &mut out {
            if s.verdict != Verdict::Oom {
                s.verdict = s.verdict.upgraded();
                s.reason.push_str(&note);
            }
        }
    }
    out
}

fn finite_u64(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.min(u64::MAX as f64) as u64
    } else {
        0
    }
}
