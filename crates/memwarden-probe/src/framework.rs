//! Which framework a process runs, from its command line and the libraries it has mapped.
//!
//! Servers (vLLM, SGLang, TGI, llama.cpp, Ollama, ComfyUI) name themselves on the command line;
//! libraries tell the rest apart. JAX is checked before PyTorch because JAX environments often
//! load libtorch too, and a server is checked before both because it loads them.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::root::HostRoot;
use crate::snapshot::ProcessId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    Vllm,
    Sglang,
    Tgi,
    #[serde(rename = "llamacpp")]
    LlamaCpp,
    Ollama,
    Comfyui,
    Jax,
    Pytorch,
    Cuda,
    Rocm,
    Unknown,
}

impl Framework {
    /// The name a person reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Vllm => "vLLM",
            Framework::Sglang => "SGLang",
            Framework::Tgi => "TGI",
            Framework::LlamaCpp => "llama.cpp",
            Framework::Ollama => "Ollama",
            Framework::Comfyui => "ComfyUI",
            Framework::Jax => "JAX",
            Framework::Pytorch => "PyTorch",
            Framework::Cuda => "CUDA",
            Framework::Rocm => "ROCm",
            Framework::Unknown => "unknown",
        }
    }

    /// Whether the framework takes a memory pool up front (the KV cache of a serving engine,
    /// JAX's 75–90% of the device), so that its usage is flat by design and says nothing of
    /// how close it is to running out.
    pub fn preallocates(self) -> bool {
        matches!(
            self,
            Framework::Vllm | Framework::Sglang | Framework::Tgi | Framework::Jax
        )
    }

    /// Whether the answer came from the command line, which does not change for the life of
    /// the process. A library-based answer can change as the process imports more.
    fn is_final(self) -> bool {
        matches!(
            self,
            Framework::Vllm
                | Framework::Sglang
                | Framework::Tgi
                | Framework::LlamaCpp
                | Framework::Ollama
                | Framework::Comfyui
        )
    }
}

impl std::fmt::Display for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Detects the framework from a command line (arguments separated by spaces, as the snapshot
/// carries it) and the text of /proc/PID/maps (empty when unreadable).
pub fn detect(cmdline: &str, maps_text: &str) -> Framework {
    detect_with_cwd(cmdline, maps_text, None)
}

/// [`detect`], with the process's working directory when known: ComfyUI is started as a bare
/// `python main.py` from its own directory.
pub fn detect_with_cwd(cmdline: &str, maps_text: &str, cwd: Option<&Path>) -> Framework {
    if let Some(f) = from_cmdline(cmdline) {
        return f;
    }
    let runs_main = cmdline
        .split_ascii_whitespace()
        .any(|a| basename(a) == "main.py");
    let libs = Libraries::scan(maps_text, runs_main);
    // ComfyUI's usual start is `python main.py` in its checkout: the directory or the
    // libraries (its custom nodes, its venv) carry the name.
    let cwd_says = cwd
        .and_then(|c| c.to_str())
        .is_some_and(|c| contains_ignore_case(c, "comfyui"));
    if runs_main && (cwd_says || libs.comfyui) {
        return Framework::Comfyui;
    }
    libs.framework()
}

fn from_cmdline(cmdline: &str) -> Option<Framework> {
    let lower = cmdline.to_ascii_lowercase();
    let args: Vec<&str> = lower.split_ascii_whitespace().collect();
    let first = args.first().copied().unwrap_or("");
    let exe = basename(first);

    // Engine subprocesses rename themselves (setproctitle): `VLLM::EngineCore`,
    // `sglang::scheduler_TP0`.
    if first.starts_with("vllm::") {
        return Some(Framework::Vllm);
    }
    if first.starts_with("sglang::") {
        return Some(Framework::Sglang);
    }
    if exe == "ollama" || exe.starts_with("ollama_llama_server") {
        return Some(Framework::Ollama);
    }
    if exe.starts_with("llama-server") || exe.starts_with("llama_server") {
        return Some(Framework::LlamaCpp);
    }
    if exe.starts_with("text-generation-launcher")
        || exe.starts_with("text-generation-server")
        || exe.starts_with("text-generation-router")
    {
        return Some(Framework::Tgi);
    }

    // Python (or a console script) running a module or a script of the framework.
    for (i, arg) in args.iter().enumerate() {
        let module = if i > 0 && args[i - 1] == "-m" {
            *arg
        } else {
            ""
        };
        let base = basename(arg);
        // The program itself or the script an interpreter runs (`python /venv/bin/vllm`).
        let runs = i <= 1;
        if in_module(module, "vllm")
            || (runs && base == "vllm")
            || arg.contains("vllm/entrypoints")
            || arg.contains("vllm.entrypoints")
        {
            return Some(Framework::Vllm);
        }
        if in_module(module, "sglang")
            || (runs && base == "sglang")
            || arg.contains("sglang/launch_server")
        {
            return Some(Framework::Sglang);
        }
        if in_module(module, "text_generation_server") || (runs && base == "text-generation-server")
        {
            return Some(Framework::Tgi);
        }
        if in_module(module, "llama_cpp.server") {
            return Some(Framework::LlamaCpp);
        }
        if arg.contains("comfyui/main.py")
            || (runs && base == "comfyui")
            || (runs && base == "comfy" && args.get(i + 1) == Some(&"launch"))
        {
            return Some(Framework::Comfyui);
        }
        if i == 0 && (base == "torchrun" || base.starts_with("torchrun")) {
            return Some(Framework::Pytorch);
        }
        if in_module(module, "torch.distributed.run")
            || in_module(module, "torch.distributed.launch")
        {
            return Some(Framework::Pytorch);
        }
    }
    None
}

/// Whether `python -m module` runs `package` or one of its submodules (`vllm`,
/// `vllm.entrypoints.openai.api_server`, but not `vllm_flash_attn`).
fn in_module(module: &str, package: &str) -> bool {
    module
        .strip_prefix(package)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Whether the program is a Python interpreter (or a launcher of one), which loads framework
/// libraries on import rather than at start.
fn is_interpreter(cmdline: &str) -> bool {
    let exe = basename(cmdline.split_ascii_whitespace().next().unwrap_or(""));
    exe.starts_with("python") || exe == "uv" || exe == "env" || exe == "ipython" || exe == "jupyter"
}

fn basename(arg: &str) -> &str {
    arg.rsplit('/').next().unwrap_or(arg)
}

/// What the mapped files of a process tell, found in one pass over its maps. Consecutive
/// lines usually name the same file (one line per segment), so each run is looked at once.
#[derive(Debug, Default)]
struct Libraries {
    jax: bool,
    torch: bool,
    rocm: bool,
    cuda: bool,
    comfyui: bool,
}

impl Libraries {
    fn scan(text: &str, look_for_comfyui: bool) -> Libraries {
        let mut out = Libraries::default();
        let mut last: &str = "";
        for line in text.lines() {
            let Some(path) = maps_path(line) else {
                continue;
            };
            if path == last {
                continue;
            }
            last = path;
            out.note(path, look_for_comfyui);
        }
        out
    }

    fn note(&mut self, path: &str, look_for_comfyui: bool) {
        let n = basename(path);
        if n.starts_with("libxla_extension")
            || n.starts_with("xla_extension")
            || n.starts_with("libtpu")
            || n.starts_with("libjax")
            || path.contains("/jaxlib/")
        {
            self.jax = true;
        } else if n.starts_with("libtorch_cuda")
            || n.starts_with("libtorch_hip")
            || n.starts_with("libtorch_cpu")
            || n.starts_with("libtorch.so")
            || n.starts_with("libc10")
        {
            self.torch = true;
        } else if n.starts_with("libamdhip64") || n.starts_with("libhsa-runtime64") {
            self.rocm = true;
        } else if n.starts_with("libcudart")
            || n.starts_with("libcuda.so")
            || n.starts_with("libcublas")
            || n.starts_with("libnvrtc")
        {
            self.cuda = true;
        }
        if look_for_comfyui && !self.comfyui && contains_ignore_case(path, "/comfyui/") {
            self.comfyui = true;
        }
    }

    fn framework(&self) -> Framework {
        // JAX before PyTorch: a JAX environment often has libtorch loaded too.
        if self.jax {
            Framework::Jax
        } else if self.torch {
            Framework::Pytorch
        } else if self.rocm {
            Framework::Rocm
        } else if self.cuda {
            Framework::Cuda
        } else {
            Framework::Unknown
        }
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The pathname column of a maps line (`addr perms offset dev inode   pathname`), when it is a
/// file. None of the first five fields holds a `/`, so the path starts at the first one; a
/// search for one byte is much cheaper than splitting every line into fields.
fn maps_path(line: &str) -> Option<&str> {
    let start = line.find('/')?;
    let path = line[start..].trim_end();
    Some(path.strip_suffix(" (deleted)").unwrap_or(path))
}

/// How long a library-based answer about a Python process is trusted before /proc/PID/maps is
/// read again: it imports torch or jax some time after it starts. Other answers are kept for
/// the life of the process.
pub const RECHECK_AFTER: Duration = Duration::from_secs(30);

/// Beyond this many identities the cache starts over, so that a caller that never prunes
/// cannot make it grow without bound.
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Entry {
    framework: Framework,
    checked_at: Instant,
    /// Whether the answer can still change: a Python interpreter imports its frameworks as it
    /// runs, where a compiled program has its libraries linked from the start.
    may_change: bool,
}

/// Detection results per process identity. Keyed by `(pid, starttime)`, never the pid alone,
/// since the kernel reuses pids; an identity with starttime 0 (its stat was unreadable) is
/// never cached.
#[derive(Debug, Default)]
pub struct FrameworkCache {
    entries: HashMap<ProcessId, Entry>,
}

impl FrameworkCache {
    pub fn new() -> FrameworkCache {
        FrameworkCache::default()
    }

    /// The framework of process `id`, detected on first sight (reading its maps and working
    /// directory through `root`) and reused afterwards.
    pub fn get_or_detect(&mut self, root: &HostRoot, id: ProcessId, cmdline: &str) -> Framework {
        self.get_or_detect_at(root, id, cmdline, Instant::now())
    }

    /// [`FrameworkCache::get_or_detect`] at a given instant (for a caller with its own clock).
    pub fn get_or_detect_at(
        &mut self,
        root: &HostRoot,
        id: ProcessId,
        cmdline: &str,
        now: Instant,
    ) -> Framework {
        if id.starttime != 0
            && let Some(e) = self.entries.get(&id)
            && (!e.may_change || now.duration_since(e.checked_at) < RECHECK_AFTER)
        {
            return e.framework;
        }
        let framework = detect_process(root, id.pid, cmdline);
        if id.starttime != 0 {
            if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&id) {
                self.entries.clear();
            }
            self.entries.insert(
                id,
                Entry {
                    framework,
                    checked_at: now,
                    may_change: !framework.is_final()
                        && framework != Framework::Jax
                        && is_interpreter(cmdline),
                },
            );
        }
        framework
    }

    /// Forgets every identity not in `live` (the processes of the latest scan).
    pub fn retain_live<'a>(&mut self, live: impl IntoIterator<Item = &'a ProcessId>) {
        let live: std::collections::HashSet<&ProcessId> = live.into_iter().collect();
        self.entries.retain(|id, _| live.contains(id));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Detects one process's framework through `root`, reading its maps only when the command line
/// does not already tell.
pub fn detect_process(root: &HostRoot, pid: u32, cmdline: &str) -> Framework {
    if let Some(f) = from_cmdline(cmdline) {
        return f;
    }
    // An unreadable maps file (another user's process without privileges, or a process that
    // just exited) leaves the command line alone to decide.
    let maps = crate::root::read_bounded(
        &root.path(&format!("/proc/{pid}/maps")),
        crate::root::MAX_FILE_BYTES,
    )
    .unwrap_or_default();
    let maps = String::from_utf8_lossy(&maps);
    let cwd = std::fs::read_link(root.path(&format!("/proc/{pid}/cwd"))).ok();
    detect_with_cwd(cmdline, &maps, cwd.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(libs: &[&str]) -> String {
        libs.iter()
            .enumerate()
            .map(|(i, l)| {
                format!("7f{i:02x}00000000-7f{i:02x}00001000 r-xp 00000000 103:02 {i}    {l}\n")
            })
            .collect()
    }

    #[test]
    fn maps_path_column() {
        assert_eq!(
            maps_path("7f00-7f01 r-xp 00000000 103:02 42      /usr/lib/libcudart.so.12"),
            Some("/usr/lib/libcudart.so.12")
        );
        assert_eq!(
            maps_path("7f00-7f01 rw-p 00000000 00:00 0                [heap]"),
            None
        );
        assert_eq!(maps_path("7f00-7f01 rw-p 00000000 00:00 0"), None);
        assert_eq!(
            maps_path("7f00-7f01 r-xp 0 103:02 42 /opt/my libs/libtorch_cpu.so (deleted)"),
            Some("/opt/my libs/libtorch_cpu.so")
        );
        assert_eq!(maps_path(""), None);
    }

    #[test]
    fn jax_wins_over_torch() {
        let m = maps(&[
            "/venv/lib/python3.12/site-packages/torch/lib/libtorch_cpu.so",
            "/venv/lib/python3.12/site-packages/jaxlib/xla_extension.so",
        ]);
        assert_eq!(detect("python3 train.py", &m), Framework::Jax);
    }

    #[test]
    fn server_wins_over_libraries() {
        let m = maps(&["/venv/lib/site-packages/torch/lib/libtorch_cuda.so"]);
        assert_eq!(
            detect(
                "python3 -m vllm.entrypoints.openai.api_server --port 8000",
                &m
            ),
            Framework::Vllm
        );
        assert_eq!(
            detect("/venv/bin/vllm serve Qwen/Qwen3-8B", &m),
            Framework::Vllm
        );
        assert_eq!(detect("VLLM::EngineCore", &m), Framework::Vllm);
        assert_eq!(
            detect("python -m sglang.launch_server --model-path x", &m),
            Framework::Sglang
        );
        assert_eq!(detect("sglang::scheduler_TP0", &m), Framework::Sglang);
        assert_eq!(
            detect("text-generation-launcher --model-id x", ""),
            Framework::Tgi
        );
        assert_eq!(
            detect(
                "/usr/src/.venv/bin/python /usr/src/.venv/bin/text-generation-server serve x",
                ""
            ),
            Framework::Tgi
        );
        assert_eq!(
            detect("/app/llama-server -m /models/q.gguf --port 8080", ""),
            Framework::LlamaCpp
        );
        assert_eq!(
            detect("python3 -m llama_cpp.server --model x.gguf", ""),
            Framework::LlamaCpp
        );
        assert_eq!(detect("/usr/local/bin/ollama serve", ""), Framework::Ollama);
        assert_eq!(
            detect(
                "/usr/bin/ollama runner --model /root/.ollama/models/blobs/sha256-1 --port 40001",
                ""
            ),
            Framework::Ollama
        );
        assert_eq!(
            detect("python /srv/ComfyUI/main.py --listen", &m),
            Framework::Comfyui
        );
        assert_eq!(
            detect("torchrun --nproc-per-node 8 train.py", ""),
            Framework::Pytorch
        );
        assert_eq!(
            detect(
                "python -m torch.distributed.run --nproc-per-node 2 t.py",
                ""
            ),
            Framework::Pytorch
        );
        assert_eq!(
            detect("python -m vllm_flash_attn.selftest", ""),
            Framework::Unknown
        );
        assert_eq!(detect("python -m vllm", ""), Framework::Vllm);
    }

    #[test]
    fn libraries_decide_the_rest() {
        let torch = maps(&["/v/torch/lib/libc10.so", "/v/torch/lib/libtorch_cuda.so"]);
        assert_eq!(detect("python3 train.py", &torch), Framework::Pytorch);
        let hip = maps(&["/opt/rocm/lib/libamdhip64.so.6"]);
        assert_eq!(detect("./bench", &hip), Framework::Rocm);
        let cuda = maps(&[
            "/usr/lib/x86_64-linux-gnu/libcuda.so.570.1",
            "/usr/local/cuda/lib64/libcudart.so.12",
        ]);
        assert_eq!(detect("./saxpy", &cuda), Framework::Cuda);
        assert_eq!(
            detect("bash", &maps(&["/usr/lib/libc.so.6"])),
            Framework::Unknown
        );
        assert_eq!(detect("", ""), Framework::Unknown);
    }

    #[test]
    fn comfyui_by_working_directory() {
        let cwd = Path::new("/home/u/ComfyUI");
        assert_eq!(
            detect_with_cwd("python main.py --listen 0.0.0.0", "", Some(cwd)),
            Framework::Comfyui
        );
        assert_eq!(
            detect_with_cwd("python main.py", "", Some(Path::new("/srv/app"))),
            Framework::Unknown
        );
    }

    #[test]
    fn names_and_preallocation() {
        assert_eq!(
            serde_json::to_string(&Framework::LlamaCpp).unwrap(),
            "\"llamacpp\""
        );
        assert_eq!(
            serde_json::to_string(&Framework::Pytorch).unwrap(),
            "\"pytorch\""
        );
        assert!(Framework::Vllm.preallocates());
        assert!(Framework::Jax.preallocates());
        assert!(!Framework::Ollama.preallocates());
        assert!(!Framework::Pytorch.preallocates());
    }
}
