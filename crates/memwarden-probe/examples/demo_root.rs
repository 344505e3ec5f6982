//! Lays out a demo machine (an APU host running two model containers and a service) as a
//! directory tree, so that memwarden can be tried without such a machine:
//!
//! ```sh
//! cargo run -p memwarden-probe --example demo_root -- /tmp/demo
//! memwarden --root /tmp/demo snapshot
//! ```

use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot, amdgpu_fdinfo};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const APU: &str = "0000:c3:00.0";
const QWEN: &str = "7d1f0c9e5b3a28461f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a";
const COMFY: &str = "2b4d6f8a0c1e3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c";

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: demo_root DIR");
        std::process::exit(2);
    };
    let root = FakeRoot::new(&dir);
    root.meminfo(120 << 20, 58 << 20, 8 << 20, 8 << 20)?;
    root.file("/proc/sys/kernel/hostname", "strix\n")?;
    root.file(
        "/proc/pressure/memory",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    )?;
    root.card(&FakeCard {
        card: 1,
        ..FakeCard::apu(310 * MIB, 110 * GIB, 41 * GIB)
    })?;
    root.file(
        "/sys/class/drm/card1/device/product_name",
        "AMD Radeon 8060S\n",
    )?;
    root.numa_node(0, "0-31", 120 << 20, 58 << 20)?;
    root.file(
        "/var/lib/containers/storage/overlay-containers/containers.json",
        format!(
            r#"[{{"id":"{QWEN}","names":["hal0-slot-qwen"]}},{{"id":"{COMFY}","names":["comfyui"]}}]"#
        ),
    )?;

    // A llama.cpp container: its cgroup saw 2.1 GiB, its 19 GiB model sits in GTT.
    let qwen_cg = format!("/machine.slice/libpod-{QWEN}.scope");
    root.cgroup_v2(&qwen_cg, 2254857830, None, 2 * GIB, 100 * MIB)?;
    sparse(&root, "/models/qwen3-32b-q4_k_m.gguf", 19_762_149_376)?;
    let mut llama = FakeProcess::new(4242, "llama-server");
    llama.uid = 1000;
    llama.cgroup = format!("0::{qwen_cg}/container\n");
    llama.rss_kib = Some(1_900_000);
    llama.cmdline = [
        "/app/llama-server",
        "-m",
        "/models/qwen3-32b-q4_k_m.gguf",
        "-c",
        "32768",
        "--port",
        "8080",
    ]
    .map(String::from)
    .to_vec();
    llama.fd_links = vec![(9, "../../../models/qwen3-32b-q4_k_m.gguf".into())];
    llama.fdinfo = vec![(7, amdgpu_fdinfo(APU, 12, "262144 KiB", "24 GiB"))];
    root.process(&llama)?;

    // ComfyUI: its cgroup holds more than its checkpoint.
    let comfy_cg = format!("/machine.slice/libpod-{COMFY}.scope");
    root.cgroup_v2(&comfy_cg, 14 * GIB, Some(24 * GIB), 13 * GIB, GIB)?;
    sparse(&root, "/models/sdxl_base_1.0.safetensors", 6_938_078_334)?;
    let mut comfy = FakeProcess::new(5150, "python3");
    comfy.uid = 1000;
    comfy.cgroup = format!("0::{comfy_cg}\n");
    comfy.rss_kib = Some(13 << 20);
    comfy.cmdline = ["python3", "/ComfyUI/main.py", "--listen", "127.0.0.1"]
        .map(String::from)
        .to_vec();
    comfy.fd_links = vec![(11, "../../../models/sdxl_base_1.0.safetensors".into())];
    comfy.fdinfo = vec![(8, amdgpu_fdinfo(APU, 13, "49152 KiB", "15 GiB"))];
    root.process(&comfy)?;

    // A systemd service and a shell.
    root.cgroup_v2(
        "/system.slice/whisper.service",
        1_610_612_736,
        None,
        GIB,
        500 * MIB,
    )?;
    let mut whisper = FakeProcess::new(3100, "whisper-server");
    whisper.cgroup = "0::/system.slice/whisper.service\n".into();
    whisper.rss_kib = Some(1_400_000);
    whisper.cmdline = ["/usr/local/bin/whisper-server", "--model", "large-v3"]
        .map(String::from)
        .to_vec();
    whisper.fdinfo = vec![(5, amdgpu_fdinfo(APU, 14, "8192 KiB", "1536 MiB"))];
    root.process(&whisper)?;
    let mut shell = FakeProcess::new(900, "bash");
    shell.cgroup = "0::/user.slice/user-1000.slice/session-2.scope\n".into();
    shell.rss_kib = Some(5200);
    shell.cmdline = vec!["-bash".into()];
    root.process(&shell)?;
    Ok(())
}

fn sparse(root: &FakeRoot, rel: &str, len: u64) -> std::io::Result<()> {
    root.file(rel, "")?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.dir().join(rel.trim_start_matches('/')))?
        .set_len(len)
}
