//! Framework detection through a host root: fake machines laid out as directory trees, and a
//! real child process; and the cache keyed by process identity.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memwarden_probe::HostRoot;
use memwarden_probe::framework::{Framework, FrameworkCache, RECHECK_AFTER, detect_process};
use memwarden_probe::process::parse_cmdline;
use memwarden_probe::snapshot::ProcessId;

fn maps_line(i: usize, path: &str) -> String {
    format!("7f{i:04x}000000-7f{i:04x}001000 r-xp 00000000 103:02 {i}    {path}\n")
}

/// A fake machine with one process `pid` whose maps name `libs`.
fn machine(pid: u32, libs: &[&str]) -> (tempfile::TempDir, HostRoot) {
    let dir = tempfile::tempdir().unwrap();
    set_maps(dir.path(), pid, libs);
    let root = HostRoot::new(dir.path()).unwrap();
    (dir, root)
}

fn set_maps(dir: &Path, pid: u32, libs: &[&str]) {
    let p = dir.join(format!("proc/{pid}"));
    fs::create_dir_all(&p).unwrap();
    let mut text = maps_line(0, "/usr/bin/python3.12");
    text.push_str("7f0000000000-7f0000001000 rw-p 00000000 00:00 0    [heap]\n");
    for (i, l) in libs.iter().enumerate() {
        // Each library is mapped in several segments, as the kernel lists them.
        for _ in 0..3 {
            text.push_str(&maps_line(i + 1, l));
        }
    }
    fs::write(p.join("maps"), text).unwrap();
}

const TORCH: &str = "/venv/lib/python3.12/site-packages/torch/lib/libtorch_cuda.so";
const JAX: &str = "/venv/lib/python3.12/site-packages/jaxlib/xla_extension.so";
const CUDART: &str = "/usr/local/cuda/lib64/libcudart.so.12";

#[test]
fn jax_before_pytorch_through_the_root() {
    let (_d, root) = machine(100, &[TORCH, CUDART, JAX]);
    assert_eq!(
        detect_process(&root, 100, "python3 train.py"),
        Framework::Jax
    );
    let (_d, root) = machine(101, &[CUDART, TORCH]);
    assert_eq!(
        detect_process(&root, 101, "python3 train.py"),
        Framework::Pytorch
    );
}

#[test]
fn unreadable_maps_leave_the_command_line_to_decide() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    assert_eq!(
        detect_process(&root, 7, "python3 -m vllm.entrypoints.openai.api_server"),
        Framework::Vllm
    );
    assert_eq!(detect_process(&root, 7, "python3 x.py"), Framework::Unknown);
}

#[test]
fn comfyui_from_its_working_directory() {
    let (d, root) = machine(200, &[TORCH]);
    fs::create_dir_all(d.path().join("srv/ComfyUI")).unwrap();
    std::os::unix::fs::symlink("/srv/ComfyUI", d.path().join("proc/200/cwd")).unwrap();
    assert_eq!(
        detect_process(&root, 200, "python main.py --listen 0.0.0.0 --port 8188"),
        Framework::Comfyui
    );
}

#[test]
fn cache_is_keyed_by_identity_not_pid() {
    let (d, root) = machine(300, &[TORCH]);
    let mut cache = FrameworkCache::new();
    let first = ProcessId {
        pid: 300,
        starttime: 1000,
    };
    let t0 = Instant::now();
    assert_eq!(
        cache.get_or_detect_at(&root, first, "python3 a.py", t0),
        Framework::Pytorch
    );
    // The pid is reused by a JAX process: a new identity, detected afresh.
    set_maps(d.path(), 300, &[JAX]);
    let second = ProcessId {
        pid: 300,
        starttime: 2000,
    };
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        cache.get_or_detect_at(&root, second, "python3 b.py", t1),
        Framework::Jax
    );
    // The first identity's answer is still its own (within the recheck time).
    assert_eq!(
        cache.get_or_detect_at(&root, first, "python3 a.py", t1),
        Framework::Pytorch
    );
    assert_eq!(cache.len(), 2);

    cache.retain_live(&[second]);
    assert_eq!(cache.len(), 1);
    cache.retain_live(&[]);
    assert!(cache.is_empty());
}

#[test]
fn unknown_identity_is_never_cached() {
    let (d, root) = machine(400, &[TORCH]);
    let mut cache = FrameworkCache::new();
    let unknown = ProcessId {
        pid: 400,
        starttime: 0,
    };
    assert_eq!(
        cache.get_or_detect(&root, unknown, "python3 x.py"),
        Framework::Pytorch
    );
    assert!(cache.is_empty());
    set_maps(d.path(), 400, &[JAX]);
    assert_eq!(
        cache.get_or_detect(&root, unknown, "python3 x.py"),
        Framework::Jax
    );
    assert!(cache.is_empty());
}

#[test]
fn library_answers_are_rechecked_command_line_answers_are_not() {
    let (d, root) = machine(500, &[]);
    let mut cache = FrameworkCache::new();
    let id = ProcessId {
        pid: 500,
        starttime: 77,
    };
    let t0 = Instant::now();
    assert_eq!(
        cache.get_or_detect_at(&root, id, "python3 x.py", t0),
        Framework::Unknown
    );
    // The script imports torch a little later.
    set_maps(d.path(), 500, &[TORCH]);
    let soon = t0 + RECHECK_AFTER - Duration::from_secs(1);
    assert_eq!(
        cache.get_or_detect_at(&root, id, "python3 x.py", soon),
        Framework::Unknown
    );
    let later = t0 + RECHECK_AFTER;
    assert_eq!(
        cache.get_or_detect_at(&root, id, "python3 x.py", later),
        Framework::Pytorch
    );

    // A compiled program has its libraries from the start: its answer is kept.
    let prog = ProcessId {
        pid: 500,
        starttime: 78,
    };
    set_maps(d.path(), 500, &[]);
    assert_eq!(
        cache.get_or_detect_at(&root, prog, "./saxpy", t0),
        Framework::Unknown
    );
    set_maps(d.path(), 500, &[CUDART]);
    assert_eq!(
        cache.get_or_detect_at(&root, prog, "./saxpy", t0 + RECHECK_AFTER * 10),
        Framework::Unknown
    );

    // A server named on its command line stays what it is, without reading maps again.
    let srv = ProcessId {
        pid: 501,
        starttime: 9,
    };
    assert_eq!(
        cache.get_or_detect_at(&root, srv, "/usr/bin/ollama serve", t0),
        Framework::Ollama
    );
    assert_eq!(
        cache.get_or_detect_at(&root, srv, "/usr/bin/ollama serve", t0 + RECHECK_AFTER * 10),
        Framework::Ollama
    );
}

#[test]
fn a_real_comfyui_process() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("ComfyUI");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("main.py"), "import time\ntime.sleep(30)\n").unwrap();
    let mut child = Command::new("python3")
        .arg("main.py")
        .current_dir(&app)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("python3 cannot run ({e}): `apt-get install python3` (or `bash .ci/setup`) installs it")
        });
    let pid = child.id();
    let root = HostRoot::system();
    // A launcher (a pyenv shim, say) may run first and exec python a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let cmdline = loop {
        let c = parse_cmdline(&fs::read(format!("/proc/{pid}/cmdline")).unwrap());
        let exe = c
            .split(' ')
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("");
        if exe.starts_with("python") || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(cmdline.ends_with("main.py"), "{cmdline}");
    let found = detect_process(&root, pid, &cmdline);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(found, Framework::Comfyui);

    // And this test process itself is no framework at all.
    let me = std::process::id();
    let mine = parse_cmdline(&fs::read(format!("/proc/{me}/cmdline")).unwrap());
    assert_eq!(detect_process(&root, me, &mine), Framework::Unknown);
}
