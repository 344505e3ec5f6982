//! `estimate` against llama.cpp itself. Small random-weight GGUF models of each architecture
//! memwarden models (tests/oracle/make_models.py) are loaded by llama.cpp, built from source by
//! `.ci/llama.sh`, through a small C++ program (tests/oracle/sizes.cpp) that prints the bytes
//! llama.cpp allocates for the model, the context (KV cache, recurrent state) and the compute
//! buffer. Over a grid of contexts, cache types, flash attention settings, slots with and
//! without a unified cache and micro-batch sizes: weights and context must be equal to the
//! byte, compute within `COMPUTE_BAND` of llama.cpp's, and the total never below llama.cpp's.
//! A configuration llama.cpp refuses must be refused by `estimate` too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use memwarden_plan::estimate::{EstimateOptions, FlashAttn, KvType, estimate_file};

/// The llama-cpp-python release whose vendored llama.cpp `.ci/llama.sh` builds.
const LLAMA_CPP_PYTHON: &str = "0.3.36";

/// How far the compute estimate may be from llama.cpp's compute buffer, as a ratio. The graph
/// allocator places tensors first-fit in one buffer, so the buffer carries fragmentation that
/// depends on the order of the graph's nodes; docs/PLAN.md lists what each architecture shows.
const COMPUTE_BAND: (f64, f64) = (0.90, 1.10);

/// Architectures memwarden models, and two of other proportions: `llama-wide` and `mamba-wide`
/// (a small vocabulary, so that its recurrent layers set the compute buffer).
const ARCHS: [&str; 13] = [
    "llama",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "phi3",
    "gemma2",
    "gemma3",
    "gpt-oss",
    "deepseek2",
    "mamba",
    "granitehybrid",
    "llama-wide",
    "mamba-wide",
];

fn llama_dir() -> PathBuf {
    let cache = std::env::var_os("MEMWARDEN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/memwarden")))
        .expect("neither MEMWARDEN_CACHE nor HOME is set");
    let dir = cache.join(format!("llama.cpp-{LLAMA_CPP_PYTHON}"));
    assert!(
        dir.join(".built").exists(),
        "llama.cpp is not built at {}: run `bash .ci/llama.sh` (`bash .ci/setup` runs it)",
        dir.display()
    );
    dir
}

/// Compiles the oracle against the cached libllama, once per test run.
fn build_oracle(llama: &Path, out: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/sizes.cpp");
    let exe = out.join("llama-sizes");
    let lib = llama.join("lib");
    let status = Command::new("g++")
        .args(["-std=c++17", "-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg(format!("-I{}", llama.join("include").display()))
        .arg(format!("-L{}", lib.display()))
        .args(["-lllama", "-lggml", "-lggml-base"])
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .status()
        .unwrap_or_else(|e| panic!("g++ cannot run ({e}): `bash .ci/llama.sh` installs it"));
    assert!(
        status.success(),
        "the oracle {} did not compile",
        src.display()
    );
    exe
}

fn make_models(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/make_models.py");
    let run = Command::new("python3")
        .arg(&script)
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("python3 cannot run ({e}): `bash .ci/setup` installs it"));
    assert!(
        run.status.success(),
        "make_models.py failed (`bash .ci/setup` installs the gguf package): {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[derive(Debug, Clone)]
struct Config {
    ctx: u64,
    parallel: u32,
    unified: bool,
    type_k: &'static str,
    type_v: &'static str,
    fa: &'static str,
    batch: u64,
    ubatch: u64,
}

impl Config {
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {}",
            self.ctx,
            self.parallel,
            u8::from(self.unified),
            self.type_k,
            self.type_v,
            self.fa,
            self.batch,
            self.ubatch
        )
    }

    fn options(&self) -> EstimateOptions {
        EstimateOptions {
            ctx: Some(self.ctx),
            parallel: self.parallel,
            kv_unified: self.unified,
            kv_type: self.type_k.parse::<KvType>().unwrap(),
            kv_type_v: Some(self.type_v.parse::<KvType>().unwrap()),
            flash_attn: self.fa.parse::<FlashAttn>().unwrap(),
            batch: self.batch,
            ubatch: self.ubatch,
            ..EstimateOptions::default()
        }
    }
}

fn grid() -> Vec<Config> {
    let mut out = Vec::new();
    for ctx in [512, 4000, 16384] {
        for (type_k, type_v) in [
            ("f16", "f16"),
            ("q8_0", "q8_0"),
            ("q4_0", "q4_0"),
            ("q8_0", "f16"),
        ] {
            for fa in ["on", "off", "auto"] {
                for (parallel, unified) in [(1, false), (4, false), (4, true)] {
                    for (batch, ubatch) in [(2048, 512), (2048, 128), (256, 512)] {
                        out.push(Config {
                            ctx,
                            parallel,
                            unified,
                            type_k,
                            type_v,
                            fa,
                            batch,
                            ubatch,
                        });
                    }
                }
            }
        }
    }
    out
}

/// What llama.cpp allocated for one configuration, or why it refused it.
#[derive(Debug)]
enum Sizes {
    Ok {
        model: u64,
        context: u64,
        compute: u64,
    },
    Refused(String),
}

fn run_oracle(exe: &Path, model: &Path, configs: &[Config]) -> Vec<Sizes> {
    let mut child = Command::new(exe)
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the oracle starts");
    let input: String = configs.iter().map(|c| c.line() + "\n").collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let sizes: Vec<Sizes> = text
        .lines()
        .map(|l| {
            if let Some(err) = l.strip_prefix("err ") {
                return Sizes::Refused(err.to_string());
            }
            let field = |name: &str| -> u64 {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {name} in the oracle's line {l:?}"))
            };
            Sizes::Ok {
                model: field("model"),
                context: field("context"),
                compute: field("compute"),
            }
        })
        .collect();
    assert_eq!(
        sizes.len(),
        configs.len(),
        "the oracle answered {} of {} configurations for {} ({}; stderr: {})",
        sizes.len(),
        configs.len(),
        model.display(),
        text.lines().next().unwrap_or("no output"),
        String::from_utf8_lossy(&out.stderr)
    );
    sizes
}

/// One architecture's results over the grid.
#[derive(Default)]
struct Tally {
    configs: usize,
    refused: usize,
    weights_exact: usize,
    context_exact: usize,
    compute_min: f64,
    compute_max: f64,
    failures: Vec<String>,
}

fn check(arch: &str, model: &Path, configs: &[Config], sizes: &[Sizes]) -> Tally {
    let mut t = Tally {
        compute_min: f64::INFINITY,
        compute_max: 0.0,
        ..Tally::default()
    };
    for (c, s) in configs.iter().zip(sizes) {
        let ours = estimate_file(model, &c.options());
        let (model_b, context_b, compute_b) = match (s, &ours) {
            (Sizes::Refused(_), Err(_)) => {
                t.refused += 1;
                continue;
            }
            (Sizes::Refused(why), Ok(_)) => {
                t.failures.push(format!(
                    "{arch} [{}]: llama.cpp refuses ({why}), estimate does not",
                    c.line()
                ));
                continue;
            }
            (Sizes::Ok { .. }, Err(e)) => {
                t.failures.push(format!(
                    "{arch} [{}]: llama.cpp runs it, estimate refuses: {e}",
                    c.line()
                ));
                continue;
            }
            (
                Sizes::Ok {
                    model,
                    context,
                    compute,
                },
                Ok(_),
            ) => (*model, *context, *compute),
        };
        let e = ours.unwrap();
        t.configs += 1;
        let context_ours = e.kv_cache_bytes + e.recurrent_state_bytes;
        if e.weights_bytes == model_b {
            t.weights_exact += 1;
        } else {
            t.failures.push(format!(
                "{arch} [{}]: weights {} != llama.cpp {model_b}",
                c.line(),
                e.weights_bytes
            ));
        }
        if context_ours == context_b {
            t.context_exact += 1;
        } else {
            t.failures.push(format!(
                "{arch} [{}]: KV + state {context_ours} != llama.cpp {context_b}",
                c.line()
            ));
        }
        let ratio = e.compute_bytes as f64 / compute_b as f64;
        t.compute_min = t.compute_min.min(ratio);
        t.compute_max = t.compute_max.max(ratio);
        if !(COMPUTE_BAND.0..=COMPUTE_BAND.1).contains(&ratio) {
            t.failures.push(format!(
                "{arch} [{}]: compute {} is {ratio:.3} x llama.cpp's {compute_b}",
                c.line(),
                e.compute_bytes
            ));
        }
        if e.total_bytes < model_b + context_b + compute_b {
            t.failures.push(format!(
                "{arch} [{}]: total {} below llama.cpp's {}",
                c.line(),
                e.total_bytes,
                model_b + context_b + compute_b
            ));
        }
    }
    t
}

#[test]
fn estimates_equal_what_llama_cpp_allocates() {
    let llama = llama_dir();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = build_oracle(&llama, dir.path());
    make_models(dir.path());
    let configs = grid();
    // Two architectures at a time: one oracle process each, the estimates beside them.
    let tallies: Vec<(&str, Tally)> = ARCHS
        .chunks(ARCHS.len().div_ceil(2))
        .map(|chunk| {
            let (exe, dir, configs) = (exe.clone(), dir.path().to_path_buf(), configs.clone());
            std::thread::spawn(move || {
                chunk
                    .iter()
                    .map(|&arch| {
                        let model = dir.join(format!("{arch}.gguf"));
                        let sizes = run_oracle(&exe, &model, &configs);
                        (arch, check(arch, &model, &configs, &sizes))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    println!(
        "| architecture | configurations | refused by both | weights exact | KV + state exact | compute / llama.cpp |"
    );
    println!("|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for (arch, t) in &tallies {
        println!(
            "| {arch} | {} | {} | {}/{} | {}/{} | {:.3} – {:.3} |",
            t.configs,
            t.refused,
            t.weights_exact,
            t.configs,
            t.context_exact,
            t.configs,
            t.compute_min,
            t.compute_max
        );
        failures.extend(t.failures.iter().cloned());
    }
    for (arch, t) in &tallies {
        assert!(t.configs > 0, "{arch}: llama.cpp ran none of the grid");
    }
    assert!(
        failures.is_empty(),
        "{} mismatches against llama.cpp:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
