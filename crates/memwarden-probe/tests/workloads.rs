//! Workloads on fake machines (exact numbers) and on the real one (a real child process).

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot, amdgpu_fdinfo};
use memwarden_probe::snapshot::{ResidentSource, Snapshot, Workload, WorkloadKind};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

mod fake_ollama;
use fake_ollama::fake_ollama;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const QWEN: &str = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
const COMFY: &str = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";
const VLLM: &str = "cccccccccccc3333333333333333333333333333333333333333333333333333";
const POD_UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

fn snapshot(root: &FakeRoot) -> Snapshot {
    let mut p = Probe::new(HostRoot::new(root.dir()).unwrap(), GpuSourceKind::Auto);
    p.snapshot().unwrap()
}

fn find<'a>(snap: &'a Snapshot, name: &str) -> &'a Workload {
    snap.workloads
        .iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no workload {name}: {:#?}", snap.workloads))
}

/// A sparse file of `len` bytes: its size without its disk.
fn model(root: &FakeRoot, rel: &str, len: u64) {
    root.file(rel, "").unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.dir().join(rel.trim_start_matches('/')))
        .unwrap();
    f.set_len(len).unwrap();
}

#[test]
fn podman_pair_on_cgroup_v2() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(128 << 20, 64 << 20, 0, 0).unwrap();
    root.card(&FakeCard::apu(0, 120 * GIB, 21 * GIB)).unwrap();
    root.file(
        "/var/lib/containers/storage/overlay-containers/containers.json",
        format!(r#"[{{"id":"{QWEN}","names":["hal0-slot-qwen"]}},{{"id":"{COMFY}","names":["comfyui"]}}]"#),
    )
    .unwrap();
    // Qwen: the cgroup saw 2 GiB, but the process holds a 20 GiB model open (in GTT, which
    // the memory cgroup is not charged for): the estimate must win.
    let qwen_cg = format!("/machine.slice/libpod-{QWEN}.scope");
    root.cgroup_v2(&qwen_cg, 2 * GIB, None, 2 * GIB, 0).unwrap();
    model(&root, "/models/qwen3-32b-q4_k_m.gguf", 20 * GIB);
    let mut server = FakeProcess::new(1000, "llama-server");
    server.cgroup = format!("0::{qwen_cg}/container\n");
    server.rss_kib = Some(1 << 20);
    server.cmdline = vec![
        "llama-server".into(),
        "-m".into(),
        "/models/qwen3-32b-q4_k_m.gguf".into(),
    ];
    // The same file through two fds counts once; a deleted one is skipped with a note.
    server.fd_links = vec![
        (10, "../../../models/qwen3-32b-q4_k_m.gguf".into()),
        (11, "../../../models/qwen3-32b-q4_k_m.gguf".into()),
        (12, "/models/old.gguf (deleted)".into()),
        (13, "/tmp/log.txt".into()),
    ];
    server.fdinfo = vec![(5, amdgpu_fdinfo("0000:c3:00.0", 1, "0 KiB", "21 GiB"))];
    root.process(&server).unwrap();
    let mut helper = FakeProcess::new(1001, "sh");
    helper.cgroup = format!("0::{qwen_cg}/container\n");
    helper.rss_kib = Some(1024);
    root.process(&helper).unwrap();
    // ComfyUI: its cgroup (12 GiB) is larger than its 6 GiB checkpoint: the cgroup wins.
    let comfy_cg = format!("/machine.slice/libpod-{COMFY}.scope");
    root.cgroup_v2(&comfy_cg, 12 * GIB, Some(16 * GIB), 11 * GIB, GIB)
        .unwrap();
    model(&root, "/models/sdxl.safetensors", 6 * GIB);
    let mut comfy = FakeProcess::new(2000, "python3");
    comfy.cgroup = format!("0::{comfy_cg}\n");
    comfy.fd_links = vec![(7, "../../../models/sdxl.safetensors".into())];
    root.process(&comfy).unwrap();
    // Podman's monitor is not the container.
    let mut conmon = FakeProcess::new(999, "conmon");
    conmon.cgroup = format!("0::/machine.slice/libpod-conmon-{QWEN}.scope\n");
    root.process(&conmon).unwrap();

    let snap = snapshot(&root);
    let qwen = find(&snap, "hal0-slot-qwen");
    assert_eq!(qwen.kind, WorkloadKind::Container);
    assert_eq!(qwen.runtime.as_deref(), Some("podman"));
    assert_eq!(qwen.id, format!("podman:{QWEN}"));
    assert_eq!(qwen.pids, vec![1000, 1001]);
    assert_eq!(qwen.cgroup_bytes, Some(2 * GIB));
    assert_eq!(qwen.estimate_bytes, Some(20 * GIB));
    assert_eq!(qwen.resident_bytes, 20 * GIB);
    assert_eq!(qwen.resident_source, ResidentSource::Estimate);
    assert_eq!(qwen.gpu_vram_bytes, 0);
    assert_eq!(qwen.gpu_gtt_bytes, 21 * GIB);

    let comfy = find(&snap, "comfyui");
    assert_eq!(comfy.pids, vec![2000]);
    assert_eq!(comfy.cgroup_bytes, Some(12 * GIB));
    assert_eq!(comfy.estimate_bytes, Some(6 * GIB));
    assert_eq!(comfy.resident_bytes, 12 * GIB);
    assert_eq!(comfy.resident_source, ResidentSource::Cgroup);

    let conmon = find(&snap, "conmon");
    assert_eq!(conmon.kind, WorkloadKind::Process);
    assert_eq!(conmon.resident_source, ResidentSource::Rss);
    assert_eq!(conmon.resident_bytes, MIB);
    // The GPU holder sorts first.
    assert_eq!(snap.workloads[0].name, "hal0-slot-qwen");
    assert!(
        snap.notes
            .iter()
            .any(|n| n.contains("1 open model file(s) already deleted")),
        "{:?}",
        snap.notes
    );
}

#[test]
fn docker_v1_pod_service_and_plain_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(64 << 20, 32 << 20, 0, 0).unwrap();
    // Docker (cgroupfs driver) on cgroup v1, named by its state file.
    root.cgroup_v1(
        &format!("/docker/{VLLM}"),
        5 * GIB,
        Some(8 * GIB),
        4 * GIB,
        GIB,
    )
    .unwrap();
    root.file(
        &format!("/var/lib/docker/containers/{VLLM}/config.v2.json"),
        r#"{"Name":"/vllm","Config":{"Image":"vllm/vllm-openai:latest"}}"#,
    )
    .unwrap();
    let mut vllm = FakeProcess::new(300, "python3");
    vllm.cgroup = format!("11:memory:/docker/{VLLM}\n0::/\n");
    root.process(&vllm).unwrap();
    // A Kubernetes pod (systemd driver) with two containers; its pod cgroup holds both.
    let pod_slice = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        POD_UID.replace('-', "_")
    );
    root.cgroup_v1(&pod_slice, 3 * GIB, None, 3 * GIB, 0)
        .unwrap();
    root.file(
        &format!("/var/log/pods/ml_embedder-0_{POD_UID}/c/0.log"),
        "",
    )
    .unwrap();
    for (pid, c) in [(400, VLLM), (401, QWEN)] {
        let mut p = FakeProcess::new(pid, "embedder");
        p.cgroup = format!("9:memory:{pod_slice}/cri-containerd-{c}.scope\n");
        root.process(&p).unwrap();
    }
    // A systemd service without a memory cgroup directory: its reading is unknown.
    let mut ollama = FakeProcess::new(500, "ollama");
    ollama.cgroup = "9:memory:/system.slice/ollama.service\n".into();
    ollama.rss_kib = Some(512 * 1024);
    root.process(&ollama).unwrap();
    // A plain process and a kernel thread.
    let mut shell = FakeProcess::new(600, "bash");
    shell.rss_kib = Some(4096);
    root.process(&shell).unwrap();
    let mut kthread = FakeProcess::new(2, "kthreadd");
    kthread.cmdline = vec![];
    kthread.rss_kib = None;
    root.process(&kthread).unwrap();

    let snap = snapshot(&root);
    let v = find(&snap, "vllm");
    assert_eq!(
        (v.kind, v.runtime.as_deref()),
        (WorkloadKind::Container, Some("docker"))
    );
    assert_eq!(v.image.as_deref(), Some("vllm/vllm-openai:latest"));
    assert_eq!(v.cgroup_bytes, Some(5 * GIB));
    assert_eq!(v.estimate_bytes, None);
    assert_eq!(
        (v.resident_bytes, v.resident_source),
        (5 * GIB, ResidentSource::Cgroup)
    );

    let pod = find(&snap, "ml/embedder-0");
    assert_eq!(
        (pod.kind, pod.runtime.as_deref()),
        (WorkloadKind::Pod, Some("kubernetes"))
    );
    assert_eq!(pod.pids, vec![400, 401]);
    assert_eq!(pod.cgroup_bytes, Some(3 * GIB));

    let svc = find(&snap, "ollama.service");
    assert_eq!(svc.kind, WorkloadKind::Service);
    assert_eq!(svc.cgroup_bytes, None);
    assert_eq!(
        (svc.resident_bytes, svc.resident_source),
        (512 * MIB, ResidentSource::Rss)
    );

    let bash = find(&snap, "bash");
    assert_eq!(bash.kind, WorkloadKind::Process);
    assert_eq!(bash.id, "pid:600:1600");
    assert_eq!(bash.resident_bytes, 4 * MIB);
    assert!(snap.workloads.iter().all(|w| w.name != "kthreadd"));
    assert_eq!(snap.workloads.len(), 4);
}

#[test]
fn odd_inputs_leave_the_workload_standing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(8 << 20, 4 << 20, 0, 0).unwrap();
    let mut p = FakeProcess::new(700, "odd");
    p.cgroup = "0::/../../etc\x1b[2J/docker-zz.scope\n".into();
    // A model link that leads nowhere (the file went away) and one to a directory.
    p.fd_links = vec![
        (3, "../../../gone/model.gguf".into()),
        (4, "../../../models.bin".into()),
    ];
    root.process(&p).unwrap();
    std::fs::create_dir_all(tmp.path().join("models.bin")).unwrap();
    let snap = snapshot(&root);
    let w = find(&snap, "odd");
    assert_eq!(w.estimate_bytes, None);
    assert_eq!(w.resident_source, ResidentSource::Rss);
    assert!(
        snap.notes.iter().any(|n| n.contains("closed or gone")),
        "{:?}",
        snap.notes
    );
    assert!(
        !snap.processes[0]
            .cgroup
            .as_deref()
            .unwrap()
            .contains('\x1b')
    );
}

/// The child side of `a_real_process_is_attributed`: allocates and touches `MEMWARDEN_CHILD_MIB`,
/// opens the model file, says "ready", and waits for its stdin to close.
#[test]
fn child_helper() {
    let Ok(mib) = std::env::var("MEMWARDEN_CHILD_MIB") else {
        return;
    };
    let mib: usize = mib.parse().unwrap();
    let mut block = vec![0u8; mib << 20];
    for i in (0..block.len()).step_by(4096) {
        block[i] = 1;
    }
    let _model = std::fs::File::open(std::env::var("MEMWARDEN_CHILD_MODEL").unwrap()).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    std::hint::black_box(&block);
}

#[test]
fn a_real_process_is_attributed() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny-llm.gguf");
    std::fs::File::create(&model)
        .unwrap()
        .set_len(300 * MIB)
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_helper", "--nocapture", "--test-threads=1"])
        .env("MEMWARDEN_CHILD_MIB", "96")
        .env("MEMWARDEN_CHILD_MODEL", &model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
    }
    let mut probe = Probe::new(HostRoot::system(), GpuSourceKind::None);
    let snap = probe.snapshot().unwrap();
    drop(child.stdin.take());
    child.wait().unwrap();

    let w = snap
        .workloads
        .iter()
        .find(|w| w.pids.contains(&child.id()))
        .expect("the child's workload");
    let proc_ = snap.processes.iter().find(|p| p.pid == child.id()).unwrap();
    assert!(
        proc_.rss_bytes.unwrap() >= 96 * MIB,
        "{:?}",
        proc_.rss_bytes
    );
    // The model file is counted in the estimate, at its size.
    assert!(w.estimate_bytes.unwrap() >= 300 * MIB, "{w:?}");
    if w.kind == WorkloadKind::Process {
        assert_eq!(w.estimate_bytes, Some(300 * MIB));
        assert_eq!(
            (w.resident_bytes, w.resident_source),
            (300 * MIB, ResidentSource::Estimate)
        );
    } else {
        // In a container or service, the max rule holds against its cgroup.
        assert_eq!(
            w.resident_bytes,
            w.cgroup_bytes.unwrap_or(0).max(w.estimate_bytes.unwrap())
        );
    }
}

#[test]
fn an_inference_servers_own_figures_feed_the_estimate() {
    assert!(
        Command::new("python3").arg("--version").output().is_ok(),
        "python3 is not installed: `apt-get install python3` (or `bash .ci/setup`) installs it"
    );
    let (mut good, _) = fake_ollama(
        r#"{"models":[{"name":"qwen3:32b","size":21474836480,"size_vram":21474836480},{"name":"nomic-embed","size":1073741824,"size_vram":0}]}"#,
    );
    let (mut html, _) = fake_ollama("");
    let mut probe = Probe::new(HostRoot::system(), GpuSourceKind::None);
    let snap = probe.snapshot().unwrap();
    let _ = good.kill();
    let _ = html.kill();
    let _ = good.wait();
    let _ = html.wait();

    let w = snap
        .workloads
        .iter()
        .find(|w| w.pids.contains(&good.id()))
        .expect("the server's workload");
    let p = snap.processes.iter().find(|p| p.pid == good.id()).unwrap();
    assert_eq!(
        p.framework,
        Some(memwarden_probe::framework::Framework::Ollama)
    );
    assert_eq!(w.estimate_bytes, Some(21 * GIB));
    if w.kind == WorkloadKind::Process {
        assert_eq!(
            (w.resident_bytes, w.resident_source),
            (21 * GIB, ResidentSource::Estimate)
        );
    }
    // The server that answers HTML still appears; the snapshot says what was skipped.
    let bad = snap
        .workloads
        .iter()
        .find(|w| w.pids.contains(&html.id()))
        .unwrap();
    assert_eq!(bad.estimate_bytes, None);
    let note = format!("Ollama server of pid {} skipped: ", html.id());
    assert!(
        snap.notes.iter().any(|n| n.starts_with(&note)),
        "{:?}",
        snap.notes
    );
}
