//! Writes the example recording `examples/training-beside-inference.jsonl`: five minutes of
//! one 80 GiB GPU shared by a vLLM inference server (a container, its memory reserved up front)
//! and a PyTorch fine-tuning run (a systemd unit) that loads, warms up and then grows, step
//! after step, toward the end of the card.
//!
//! The figures follow the shapes such runs show (weights arriving in a few seconds, an
//! allocator sawtooth on top of a steady rise, a server that holds its pool flat) and are
//! generated, not typed: run `cargo run -p memwarden-tui --example make_recording -- OUT` to
//! write it again. The noise comes from a fixed-seed generator, so the file is the same on
//! every run.

use std::io::Write;

use memwarden_probe::framework::Framework;
use memwarden_probe::snapshot::{
    DeviceFigures, Gpu, HostMemory, NumaNode, Process, ProcessGpu, ResidentSource,
    SNAPSHOT_VERSION, Snapshot, Vendor, Workload, WorkloadKind,
};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
/// Samples, one a second.
const SECONDS: u64 = 300;
/// 2026-03-02 09:00:00 UTC.
const START_MS: u64 = 1_772_442_000_000;
const HZ: u64 = 100;

/// A small deterministic generator (xorshift), so the recording is reproducible.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1).
    fn signed(&mut self) -> f64 {
        self.next() * 2.0 - 1.0
    }
}

fn bytes(gib: f64) -> u64 {
    (gib.max(0.0) * GIB) as u64
}

#[allow(clippy::too_many_arguments)]
fn process(
    pid: u32,
    starttime_s: u64,
    uid: u32,
    name: &str,
    cmdline: &str,
    rss_gib: f64,
    cgroup: &str,
    vram_gib: Option<f64>,
    framework: Option<Framework>,
) -> Process {
    Process {
        pid,
        starttime: starttime_s * HZ,
        ppid: None,
        uid: Some(uid),
        name: name.into(),
        cmdline: cmdline.into(),
        rss_bytes: Some(bytes(rss_gib)),
        cgroup: Some(cgroup.into()),
        gpu: vram_gib
            .map(|v| {
                vec![ProcessGpu {
                    gpu_index: 0,
                    vram_bytes: Some(bytes(v)),
                    gtt_bytes: None,
                }]
            })
            .unwrap_or_default(),
        framework,
        cpu_percent: None,
        gpu_utilization_percent: None,
    }
}

/// The fine-tuning run's GPU memory `t` seconds into the recording (0 before it starts).
fn trainer_vram(t: f64, noise: &mut Noise) -> f64 {
    const START: f64 = 20.0;
    if t < START {
        return 0.0;
    }
    let s = t - START;
    let level = if s < 6.0 {
        // Weights arriving: 8 GiB in six seconds.
        8.0 * (s / 6.0)
    } else if s < 20.0 {
        // Warm-up: optimizer state and the first batches, to 14 GiB.
        8.0 + 6.0 * ((s - 6.0) / 14.0)
    } else {
        // Then growth, about 170 MiB a second (activations kept by a leak in the loop), with
        // the caching allocator's sawtooth on top.
        let grow = 14.0 + 0.166 * (s - 20.0);
        let saw = 0.6 * ((s - 20.0) % 7.0) / 7.0;
        grow + saw
    };
    level + 0.02 * noise.signed()
}

/// How busy vLLM (requests coming in waves) and the trainer (loading, warm-up, then steps
/// that keep the card busy) keep the GPU at `t`. Smooth functions of time rather than the
/// noise generator, so that adding these figures left the memory figures as they were.
fn gpu_busy(t: f64) -> (f64, f64) {
    let vllm = (30.0 + 22.0 * (t / 9.0).sin() + 6.0 * (t / 2.3).cos()).clamp(0.0, 100.0);
    let trainer = match t - 20.0 {
        s if s < 0.0 => 0.0,
        s if s < 6.0 => 4.0,
        s if s < 20.0 => 55.0 + 2.0 * s,
        s => 60.0 - vllm * 0.35 + 4.0 * (s / 3.0).sin(),
    };
    (vllm, trainer.clamp(0.0, 100.0 - vllm))
}

/// CPU per process at `t`: the trainer's main loop on one core, its data workers on most of
/// one each, the server's scheduler, and the idle rest.
fn cpu_use(pid: u32, t: f64) -> f64 {
    let wobble = (t / 5.0 + f64::from(pid)).sin();
    match pid {
        2100 => 14.0 + 6.0 * wobble,
        3300 => 99.0 + 1.0 * wobble,
        3312 | 3313 => 62.0 + 9.0 * wobble,
        1240 => 0.7 + 0.3 * wobble,
        _ => 0.0,
    }
}

/// An A100 SXM at `busy` percent: hotter and hungrier as it works; passively cooled, so no fan.
fn device_figures(busy: f64) -> DeviceFigures {
    DeviceFigures {
        utilization_percent: Some(busy.round()),
        memory_utilization_percent: Some((busy * 0.45).round()),
        temperature_celsius: Some((34.0 + busy * 0.38).round()),
        power_watts: Some((62.0 + busy * 3.1).round()),
        power_limit_watts: Some(400.0),
        fan_percent: None,
        clock_graphics_mhz: Some(if busy > 5.0 { 1410 } else { 210 }),
    }
}

fn snapshot(t: u64, noise: &mut Noise) -> Snapshot {
    let tf = t as f64;
    // vLLM holds its pool flat: NVML reports the same figure sample after sample.
    let vllm_vram = 21.75;
    let trainer = trainer_vram(tf, noise);
    let trainer_running = trainer > 0.0;
    let driver_overhead = 0.55;
    let used = (vllm_vram + trainer + driver_overhead).min(79.9);

    let vllm_cg = "/system.slice/docker-4f1c2a9e7b3d.scope";
    let train_cg = "/system.slice/train-lora.service";
    let mut processes = vec![
        process(
            1,
            0,
            0,
            "systemd",
            "/sbin/init",
            0.012,
            "/init.scope",
            None,
            None,
        ),
        process(
            812,
            4,
            0,
            "sshd",
            "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
            0.008,
            "/system.slice/ssh.service",
            None,
            None,
        ),
        process(
            1240,
            9,
            0,
            "dockerd",
            "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock",
            0.09,
            "/system.slice/docker.service",
            None,
            None,
        ),
        process(
            2100,
            60,
            1000,
            "python3",
            "python3 -m vllm.entrypoints.openai.api_server --model meta-llama/Meta-Llama-3-8B-Instruct --gpu-memory-utilization 0.27 --port 8000",
            6.1 + 0.02 * noise.signed(),
            vllm_cg,
            Some(vllm_vram),
            Some(Framework::Vllm),
        ),
        process(
            2301,
            300,
            1000,
            "bash",
            "-bash",
            0.005,
            "/user.slice/user-1000.slice/session-3.scope",
            None,
            None,
        ),
    ];
    let mut workloads = vec![Workload {
        id: "docker-4f1c2a9e7b3d".into(),
        kind: WorkloadKind::Container,
        runtime: Some("docker".into()),
        name: "vllm-llama3-8b".into(),
        image: Some("vllm/vllm-openai:v0.6.3".into()),
        pids: vec![2100],
        cgroup_bytes: Some(bytes(6.4)),
        estimate_bytes: Some(bytes(15.0)),
        resident_bytes: bytes(15.0),
        resident_source: ResidentSource::Estimate,
        gpu_vram_bytes: bytes(vllm_vram),
        gpu_gtt_bytes: 0,
    }];
    let boot_s = 3600;
    if trainer_running {
        let s = tf - 20.0;
        let rss = (2.0 + 0.5 * s.min(20.0) / 20.0 + 0.004 * s).min(8.0);
        let workers = 3.1 + 0.05 * noise.signed();
        processes.push(process(
            3300,
            boot_s + 20,
            1000,
            "python",
            "python train.py --model meta-llama/Llama-3.2-3B --lora-r 16 --batch-size 8 --epochs 3",
            rss,
            train_cg,
            Some(trainer),
            Some(Framework::Pytorch),
        ));
        for (i, pid) in [3312u32, 3313].iter().enumerate() {
            processes.push(process(
                *pid,
                boot_s + 27 + i as u64,
                1000,
                "pt_data_worker",
                "python train.py --model meta-llama/Llama-3.2-3B --lora-r 16 --batch-size 8 --epochs 3",
                workers,
                train_cg,
                None,
                None,
            ));
        }
        let cg = rss + 2.0 * workers + 0.4;
        workloads.push(Workload {
            id: "train-lora.service".into(),
            kind: WorkloadKind::Service,
            runtime: Some("systemd".into()),
            name: "train-lora.service".into(),
            image: None,
            pids: vec![3300, 3312, 3313],
            cgroup_bytes: Some(bytes(cg)),
            estimate_bytes: None,
            resident_bytes: bytes(cg),
            resident_source: ResidentSource::Cgroup,
            gpu_vram_bytes: bytes(trainer),
            gpu_gtt_bytes: 0,
        });
    }
    let (vllm_busy, trainer_busy) = gpu_busy(tf);
    for p in &mut processes {
        // CPU and GPU use between samples: none at the first, as a live recording starts.
        if t > 0 {
            p.cpu_percent = Some(cpu_use(p.pid, tf));
            p.gpu_utilization_percent = match p.pid {
                2100 => Some(vllm_busy),
                3300 => Some(trainer_busy),
                _ => None,
            };
        }
    }
    for p in &mut processes {
        // The tree `top` draws: the trainer's data workers under it, the login shell under
        // sshd, everything else started by init.
        p.ppid = Some(match p.pid {
            1 => 0,
            2301 => 812,
            3312 | 3313 => 3300,
            _ => 1,
        });
    }
    let ram_used: f64 = processes
        .iter()
        .map(|p| p.rss_bytes.unwrap_or(0) as f64 / GIB)
        .sum::<f64>()
        + 9.0
        + if trainer_running {
            // The dataset read through the page cache (counted as used here, not available).
            (tf - 20.0) * 0.05
        } else {
            0.0
        };
    let total_ram = 256.0;
    Snapshot {
        version: SNAPSHOT_VERSION,
        taken_at_ms: START_MS + t * 1000,
        hostname: "gpu-node-07".into(),
        host: HostMemory {
            mem_total_bytes: bytes(total_ram),
            mem_available_bytes: bytes(total_ram - ram_used),
            swap_total_bytes: bytes(8.0),
            swap_free_bytes: bytes(8.0),
            psi_memory_some_avg10: Some(if trainer_running { 0.12 } else { 0.0 }),
        },
        gpus: vec![Gpu {
            index: 0,
            vendor: Vendor::Nvidia,
            name: "NVIDIA A100-SXM4-80GB".into(),
            bus_id: "0000:07:00.0".into(),
            numa_node: Some(0),
            vram_total_bytes: Some(bytes(80.0)),
            vram_used_bytes: Some((used * GIB) as u64 / MIB as u64 * MIB as u64),
            vram_reserved_bytes: None,
            gtt_total_bytes: None,
            gtt_used_bytes: None,
            unified_memory: false,
            error: None,
            figures: device_figures(vllm_busy + trainer_busy),
        }],
        processes,
        workloads,
        numa: vec![
            NumaNode {
                node: 0,
                cpus: "0-31,64-95".into(),
                mem_total_bytes: bytes(128.0),
                mem_free_bytes: bytes(128.0 - ram_used * 0.7),
            },
            NumaNode {
                node: 1,
                cpus: "32-63,96-127".into(),
                mem_total_bytes: bytes(128.0),
                mem_free_bytes: bytes(128.0 - ram_used * 0.3),
            },
        ],
        notes: vec![],
    }
}

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/training-beside-inference.jsonl".into());
    let mut noise = Noise(0x5eed_1234_abcd_0042);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    for t in 0..SECONDS {
        let line = serde_json::to_string(&snapshot(t, &mut noise))?;
        writeln!(file, "{line}")?;
    }
    file.flush()?;
    eprintln!("wrote {SECONDS} snapshots to {out}");
    Ok(())
}
