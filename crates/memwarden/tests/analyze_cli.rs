//! `memwarden analyze` as a user runs it: the real binary on recordings written here from
//! `Snapshot` values (the format `memwarden record` writes), good and damaged.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_bad_input, memwarden, stderr};

use memwarden_analysis::pelt::{PeltParams, pelt};
use memwarden_probe::snapshot::{
    Gpu, HostMemory, Process, ProcessGpu, ResidentSource, SNAPSHOT_VERSION, Snapshot, Vendor,
    Workload, WorkloadKind,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The GPU memory of a training run over time, in bytes: idle, a 20 GiB load, a warm-up, then
/// steady growth of 64 MiB/s toward the 80 GiB ceiling (whole 2 MiB pages, as drivers report).
fn training_bytes(i: usize) -> u64 {
    let used = match i {
        0..30 => 512 * MIB,
        30..34 => 512 * MIB + (i as u64 - 29) * 5 * GIB,
        34..60 => 20 * GIB + 512 * MIB + (i as u64 - 33) * 40 * MIB,
        _ => 21 * GIB + 512 * MIB + (i as u64 - 59) * 64 * MIB,
    };
    used / (2 * MIB) * (2 * MIB)
}

/// One snapshot per second: one 80 GiB GPU with the training process and an inference server
/// beside it, two workloads, host RAM.
fn snapshot(i: usize) -> Snapshot {
    let train = training_bytes(i);
    let server = 6 * GIB;
    let gpu_used = train + server + 300 * MIB;
    Snapshot {
        version: SNAPSHOT_VERSION,
        taken_at_ms: 1_700_000_000_000 + i as u64 * 1000,
        hostname: "node7".into(),
        host: HostMemory {
            mem_total_bytes: 128 * GIB,
            mem_available_bytes: 100 * GIB - (i as u64 % 7) * MIB,
            swap_total_bytes: 0,
            swap_free_bytes: 0,
            psi_memory_some_avg10: Some(0.0),
        },
        gpus: vec![Gpu {
            index: 0,
            vendor: Vendor::Nvidia,
            name: "NVIDIA H100 80GB HBM3".into(),
            bus_id: "0000:3b:00.0".into(),
            numa_node: Some(0),
            vram_total_bytes: Some(80 * GIB),
            vram_used_bytes: Some(gpu_used),
            vram_reserved_bytes: None,
            gtt_total_bytes: None,
            gtt_used_bytes: None,
            unified_memory: false,
            error: None,
            figures: Default::default(),
        }],
        processes: vec![
            process(4242, "python3", "python3 train.py", train),
            process(5151, "vllm", "vllm serve qwen", server),
            process(77, "sshd", "sshd", 0),
        ],
        workloads: vec![
            workload("docker:trainer", "trainer", vec![4242], train / 3),
            workload("systemd:vllm.service", "vllm.service", vec![5151], 9 * GIB),
        ],
        numa: Vec::new(),
        notes: Vec::new(),
    }
}

fn process(pid: u32, name: &str, cmdline: &str, vram: u64) -> Process {
    Process {
        pid,
        starttime: 1000 + pid as u64,
        ppid: None,
        uid: Some(1000),
        name: name.into(),
        cmdline: cmdline.into(),
        rss_bytes: Some(GIB),
        cgroup: None,
        framework: None,
        gpu: if vram > 0 {
            vec![ProcessGpu {
                gpu_index: 0,
                vram_bytes: Some(vram),
                gtt_bytes: None,
            }]
        } else {
            Vec::new()
        },
    }
}

fn workload(id: &str, name: &str, pids: Vec<u32>, resident: u64) -> Workload {
    Workload {
        id: id.into(),
        kind: WorkloadKind::Container,
        runtime: Some("docker".into()),
        name: name.into(),
        image: None,
        pids,
        cgroup_bytes: Some(resident),
        estimate_bytes: None,
        resident_bytes: resident,
        resident_source: ResidentSource::Cgroup,
        gpu_vram_bytes: 0,
        gpu_gtt_bytes: 0,
    }
}

const SAMPLES: usize = 300;

fn write_recording(dir: &Path, name: &str, extra: &[(usize, &str)]) -> PathBuf {
    let mut text = String::new();
    for i in 0..SAMPLES {
        for (at, line) in extra {
            if *at == i {
                text.push_str(line);
                text.push('\n');
            }
        }
        text.push_str(&serde_json::to_string(&snapshot(i)).unwrap());
        text.push('\n');
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn series<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no series {key}"))
}

/// One string field of every object in a JSON array.
fn field<'a>(array: &'a Value, name: &str) -> Vec<&'a str> {
    array
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o[name].as_str().unwrap())
        .collect()
}

fn json_report(path: &Path, extra: &[&str]) -> (Value, Output) {
    let mut args = vec!["analyze", path.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let o = memwarden(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    (serde_json::from_slice(&o.stdout).unwrap(), o)
}

#[test]
fn json_has_every_series_with_phases_oom_ranges_and_changepoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_recording(dir.path(), "run.jsonl", &[]);
    let (report, o) = json_report(&path, &["--penalty", "500"]);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    assert_eq!(report["snapshots"], SAMPLES);
    let keys = field(&report["series"], "key");
    assert_eq!(
        keys,
        [
            "gpu:0",
            "host:ram",
            "workload:docker:trainer",
            "workload:systemd:vllm.service",
            "process:4242:5242",
            "process:5151:6151",
        ],
        "sshd holds no GPU memory and has no series"
    );

    let gpu = series(&report, "gpu:0");
    assert_eq!(gpu["samples"], SAMPLES);
    assert_eq!(gpu["total_mib"], 81920.0);
    // Changepoints exactly as the library (checked against ruptures) finds them on MiB values.
    let mib: Vec<f64> = (0..SAMPLES)
        .map(|i| (training_bytes(i) + 6 * GIB + 300 * MIB) as f64 / MIB as f64)
        .collect();
    let want = pelt(
        &mib,
        &PeltParams {
            penalty: 500.0,
            min_size: 2,
            jump: 1,
        },
    )
    .unwrap();
    let got: Vec<usize> = gpu["changepoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(got, want);
    assert_eq!(*got.last().unwrap(), SAMPLES);
    assert!(got.contains(&30), "the load starts at sample 30: {got:?}");

    let labels = field(&gpu["segments"], "label");
    // The inference server's 6 GiB were there from the start: a plateau, not idle.
    assert_eq!(labels[0], "plateau", "{labels:?}");
    assert!(labels.contains(&"load"), "{labels:?}");
    assert!(
        labels.iter().any(|l| l.contains("growth")),
        "a 64 MiB/s rise is growth: {labels:?}"
    );

    let phases = field(&gpu["phases"], "phase");
    assert_eq!(phases[0], "stable");
    assert_eq!(*phases.last().unwrap(), "growing", "{phases:?}");

    // Growing at 64 MiB/s toward the ceiling: a range, never one number.
    let ooms = gpu["oom_predictions"].as_array().unwrap();
    assert!(!ooms.is_empty());
    let last = &ooms.last().unwrap()["last"];
    let low = last["seconds_low"].as_f64().unwrap();
    let high = last["seconds_high"].as_f64().unwrap();
    assert!(low <= high, "{last}");
    // At the last sample, free is 80 GiB − used; at 64 MiB/s that is the true time left.
    let free_mib = 81920.0 - mib[SAMPLES - 1];
    let truth = free_mib / 64.0;
    assert!(
        low <= truth * 1.05 && truth <= high * 1.05,
        "{low}–{high} s should contain {truth} s"
    );

    // Workload series carry their resident bytes; processes their GPU memory.
    let w = series(&report, "workload:systemd:vllm.service");
    assert_eq!(w["last_mib"], 9216.0);
    assert_eq!(w["phases"][0]["phase"], "stable");
    let p = series(&report, "process:4242:5242");
    assert_eq!(p["name"], "python3");
    assert_eq!(
        p["peak_mib"],
        training_bytes(SAMPLES - 1) as f64 / MIB as f64
    );
}

#[test]
fn changepoints_equal_ruptures_when_present() {
    let probe = Command::new("python3")
        .args(["-c", "import ruptures"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "python3 with ruptures is not installed: `bash .ci/setup` installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_recording(dir.path(), "run.jsonl", &[]);
    for (pen, min_size, jump) in [("500", "2", "1"), ("64", "3", "5")] {
        let (report, _) = json_report(
            &path,
            &["--penalty", pen, "--min-size", min_size, "--jump", jump],
        );
        let script = format!(
            "import json, sys, numpy as np, ruptures as rpt\n\
             x = np.array([v / 1048576 for v in json.load(sys.stdin)])\n\
             print(json.dumps(rpt.Pelt(model='l2', min_size={min_size}, jump={jump}).fit(x).predict(pen={pen})))"
        );
        let bytes: Vec<u64> = (0..SAMPLES)
            .map(|i| training_bytes(i) + 6 * GIB + 300 * MIB)
            .collect();
        let mut child = Command::new("python3")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(serde_json::to_string(&bytes).unwrap().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let want: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(series(&report, "gpu:0")["changepoints"], want, "pen {pen}");
    }
}

#[test]
fn text_report_names_the_story() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_recording(dir.path(), "run.jsonl", &[]);
    let o = memwarden(&["analyze", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("300 snapshot(s) over 4:59"), "{text}");
    assert!(
        text.contains("GPU 0 NVIDIA H100 80GB HBM3 [gpu:0]"),
        "{text}"
    );
    assert!(text.contains("▲ growing"), "{text}");
    assert!(text.contains("OOM in"), "{text}");
    assert!(text.contains("load"), "{text}");
    assert!(text.contains("vllm.service"), "{text}");
}

#[test]
fn damaged_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut newer = serde_json::to_value(snapshot(5)).unwrap();
    newer["version"] = Value::from(2);
    let newer = newer.to_string();
    let half = serde_json::to_string(&snapshot(9)).unwrap();
    let half = &half[..half.len() / 2];
    let path = write_recording(
        dir.path(),
        "damaged.jsonl",
        &[
            (3, "garbage \u{1b}[31m"),
            (10, &newer),
            (200, half),
            (250, ""),
        ],
    );
    let (report, o) = json_report(&path, &[]);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("skipped 3 of 304 line(s)"), "{err}");
    assert!(err.contains("line 4: not JSON"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "untrusted text is sanitised: {err:?}"
    );
    assert_eq!(report["snapshots"], SAMPLES);
}

#[test]
fn nothing_usable_is_bad_input_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut newer = serde_json::to_value(snapshot(0)).unwrap();
    newer["version"] = Value::from(7);
    let path = dir.path().join("newer.jsonl");
    std::fs::write(&path, format!("\n{newer}\n{{\"version\":1}}\n")).unwrap();
    let o = memwarden(&["analyze", path.to_str().unwrap()]);
    assert_bad_input(&o, "line 2: version 7, expected 1");

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    assert_bad_input(
        &memwarden(&["analyze", empty.to_str().unwrap()]),
        "the recording is empty",
    );
    let binary = dir.path().join("binary.jsonl");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, b'\n']).unwrap();
    assert_bad_input(
        &memwarden(&["analyze", binary.to_str().unwrap()]),
        "line 1: not UTF-8",
    );
    assert_bad_input(
        &memwarden(&[
            "analyze",
            dir.path().join("missing.jsonl").to_str().unwrap(),
        ]),
        "cannot read",
    );
}

#[test]
fn bad_flags_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_recording(dir.path(), "run.jsonl", &[]);
    let p = path.to_str().unwrap();
    assert_bad_input(&memwarden(&["analyze", p, "--jump", "0"]), "--jump");
    assert_bad_input(&memwarden(&["analyze", p, "--min-size", "0"]), "--min-size");
    assert_bad_input(&memwarden(&["analyze", p, "--penalty=-1"]), "--penalty");
    assert_bad_input(&memwarden(&["analyze", p, "--penalty", "NaN"]), "--penalty");
}

/// A process that held GPU memory has a row in every sample it is in, 0 included (before it
/// loads, after it frees); one that never held any has none, as in the analysis's series.
#[test]
fn csv_keeps_a_gpu_process_in_the_samples_where_it_holds_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..4 {
        let mut s = snapshot(i);
        // The trainer frees its GPU memory in the last two samples; a late loader starts
        // without any and loads in the third.
        if i >= 2 {
            s.processes[0].gpu.clear();
        }
        let late = if i == 2 { 2 * GIB } else { 0 };
        s.processes.push(process(9000, "late", "late --load", late));
        text.push_str(&serde_json::to_string(&s).unwrap());
        text.push('\n');
    }
    let path = dir.path().join("run.jsonl");
    std::fs::write(&path, text).unwrap();
    let csv = dir.path().join("out.csv");
    let o = memwarden(&[
        "analyze",
        path.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows = |key: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(&format!(",process,{key},")))
            .map(|l| l.rsplit(',').nth(1).unwrap().to_string())
            .collect()
    };
    let trainer = |i| training_bytes(i).to_string();
    assert_eq!(
        rows("process:4242:5242"),
        [trainer(0), trainer(1), "0".into(), "0".into()]
    );
    assert_eq!(
        rows("process:9000:10000"),
        ["0", "0", &(2 * GIB).to_string(), "0"]
    );
    assert_eq!(rows("process:77:1077"), Vec::<String>::new());
}

#[test]
fn csv_has_a_row_per_sample_per_device_and_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_recording(dir.path(), "run.jsonl", &[]);
    let csv = dir.path().join("out.csv");
    let o = memwarden(&[
        "analyze",
        path.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The CSV was asked for, not the report.
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    // `-` is standard output, with the same rows.
    let o = memwarden(&["analyze", path.to_str().unwrap(), "--csv", "-"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), text);
    assert!(!dir.path().join("-").exists());
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("taken_at_ms,kind,key,name,used_bytes,total_bytes")
    );
    let rows: Vec<&str> = lines.collect();
    // Per snapshot: the GPU, the host, two workloads, two processes with GPU memory.
    assert_eq!(rows.len(), SAMPLES * 6);
    let first_gpu = format!(
        "1700000000000,gpu,gpu:0,NVIDIA H100 80GB HBM3,{},{}",
        training_bytes(0) + 6 * GIB + 300 * MIB,
        80 * GIB
    );
    assert_eq!(rows[0], first_gpu);
    assert!(
        rows.iter()
            .any(|r| r.starts_with("1700000299000,process,process:4242:5242,python3,"))
    );
    let unwritable = dir.path().join("no/such/dir/out.csv");
    assert_bad_input(
        &memwarden(&[
            "analyze",
            path.to_str().unwrap(),
            "--csv",
            unwritable.to_str().unwrap(),
        ]),
        "cannot write",
    );
}

#[test]
fn a_short_noisy_piece_shows_where_it_lay_not_only_its_mean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.jsonl");
    let mut text = String::new();
    for (i, mib) in [102u64, 110, 157, 120, 160, 101, 150, 103]
        .iter()
        .enumerate()
    {
        let line = serde_json::json!({
            "version": 1, "taken_at_ms": 1_700_000_000_000u64 + i as u64 * 1000, "hostname": "h",
            "host": {"mem_total_bytes": 16 * GIB, "mem_available_bytes": 16 * GIB - mib * MIB,
                     "swap_total_bytes": 0, "swap_free_bytes": 0, "psi_memory_some_avg10": null},
            "gpus": [], "processes": [], "workloads": []
        });
        text.push_str(&format!("{line}\n"));
    }
    std::fs::write(&path, text).unwrap();
    let o = memwarden(&["analyze", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("volatile         101 MiB … 160 MiB, mean 125 MiB"),
        "{out}"
    );
}

/// A rise of 20 MiB/s for 8 s, then a fall of 6 MiB/s for 10 s. The detector's window still
/// says growing well after the rise ends; no span may be labelled growing at a flat or falling
/// rate (it was: "growing" from 21 s to 28 s at −6 MiB/s), and the spans start where the moves
/// did.
#[test]
fn json_phase_labels_agree_with_their_rates() {
    let mut mib = vec![10_000u64; 15];
    for _ in 0..8 {
        mib.push(mib.last().unwrap() + 20);
    }
    for _ in 0..10 {
        mib.push(mib.last().unwrap() - 6);
    }
    mib.extend([mib.last().copied().unwrap(); 15]);
    let start = 1_700_000_000_000u64;
    let mut text = String::new();
    for (i, m) in mib.iter().enumerate() {
        let mut s = snapshot(0);
        s.taken_at_ms = start + i as u64 * 1000;
        s.gpus[0].vram_used_bytes = Some(m * MIB);
        text.push_str(&serde_json::to_string(&s).unwrap());
        text.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rise-and-fall.jsonl");
    std::fs::write(&path, text).unwrap();
    let (report, _) = json_report(&path, &[]);
    let phases = series(&report, "gpu:0")["phases"].as_array().unwrap();
    let floor = 1.0; // the GPU detector's noise floor, MiB/s
    for p in phases {
        let rate = p["rate_mib_s"].as_f64().unwrap();
        match p["phase"].as_str().unwrap() {
            "growing" => assert!(rate > floor, "{p}"),
            "shrinking" => assert!(rate < -floor, "{p}"),
            "stable" => assert!(rate.abs() <= floor, "{p}"),
            _ => {}
        }
    }
    let span = |phase: &str| {
        let p = phases.iter().find(|p| p["phase"] == phase).unwrap();
        (
            (p["start_ms"].as_u64().unwrap() - start) / 1000,
            (p["end_ms"].as_u64().unwrap() - start) / 1000,
            p["rate_mib_s"].as_f64().unwrap(),
        )
    };
    // The rise reaches sample 15 first and ends at 22; the fall, whose first step (22–23) is a
    // span of its own (volatile), runs to 32.
    assert_eq!(span("growing"), (15, 22, 20.0), "{phases:?}");
    assert_eq!(span("shrinking"), (23, 32, -6.0), "{phases:?}");
    assert_eq!(phases[0]["phase"], "stable");
    assert_eq!(phases.last().unwrap()["phase"], "stable");
}

#[test]
fn a_gigabyte_line_of_nul_bytes_is_skipped_in_bounded_memory() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let good = write_recording(dir.path(), "good.jsonl", &[]);
    let path = dir.path().join("nul.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    // A sparse half GiB of NUL bytes with no newline, then a good recording.
    f.set_len(GIB / 2).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::End(0)).unwrap();
    f.write_all(b"\n").unwrap();
    f.write_all(&std::fs::read(&good).unwrap()).unwrap();
    drop(f);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memwarden"));
    cmd.args(["analyze", "--json"]).arg(&path);
    // SAFETY: setrlimit is async-signal-safe; the limit is below the size of the line, so
    // holding the line whole fails.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 384 << 20,
                rlim_max: 384 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("skipped 1 of"), "{err}");
    assert!(err.contains("longer than"), "{err}");
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["snapshots"], SAMPLES);
}
