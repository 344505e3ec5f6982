//! `memwarden snapshot` and `record` as a user runs them: the real binary, on the real machine
//! and on fake ones.

mod common;
#[path = "../../memwarden-probe/tests/fake_ollama/mod.rs"]
mod fake_ollama;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_bad_input, memwarden, stderr};
use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot};
use serde_json::Value;

fn kib(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

#[test]
fn real_machine_host_figures_match_proc_meminfo() {
    let before = std::fs::read_to_string("/proc/meminfo").unwrap();
    let out = memwarden(&["snapshot", "--json"]);
    let after = std::fs::read_to_string("/proc/meminfo").unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = &snap["host"];
    assert_eq!(host["mem_total_bytes"], kib(&before, "MemTotal:") * 1024);
    assert_eq!(host["swap_total_bytes"], kib(&before, "SwapTotal:") * 1024);
    // MemAvailable moves while we read: it must lie between the readings around ours (with a
    // small margin for the moves between them).
    let avail = host["mem_available_bytes"].as_u64().unwrap();
    let (a, b) = (
        kib(&before, "MemAvailable:") * 1024,
        kib(&after, "MemAvailable:") * 1024,
    );
    let margin = 64 << 20;
    assert!(
        avail + margin >= a.min(b) && avail <= a.max(b) + margin,
        "{avail} vs {a}..{b}"
    );
    // Our own process is in the list, with its identity.
    let me = std::process::id();
    let procs = snap["processes"].as_array().unwrap();
    assert!(
        procs
            .iter()
            .any(|p| p["pid"] == me && p["starttime"].as_u64().unwrap() > 0)
    );
    for key in [
        "version",
        "taken_at_ms",
        "hostname",
        "host",
        "gpus",
        "processes",
        "workloads",
        "numa",
    ] {
        assert!(snap.get(key).is_some(), "missing {key}");
    }
}

#[test]
fn table_on_a_fake_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(32 << 20, 16 << 20, 0, 0).unwrap();
    let mut p = FakeProcess::new(42, "trainer");
    p.rss_kib = Some(3 << 20);
    p.cmdline = vec!["python3".into(), "train.py".into()];
    root.process(&p).unwrap();
    let dir = tmp.path().to_str().unwrap();
    let out = memwarden(&["--root", dir, "snapshot"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(text.starts_with("fakehost  RAM ["), "{text}");
    assert!(
        text.contains(" 50% 16 GiB / 32 GiB used, 16 GiB available"),
        "{text}"
    );
    assert!(text.contains("trainer"), "{text}");
    assert!(text.contains("python3 train.py"), "{text}");
    assert_eq!(stderr(&out), "memwarden: no GPU found: host memory only\n");
}

#[test]
fn bad_inputs_exit_2_with_one_line() {
    assert_bad_input(
        &memwarden(&["--root", "/no/such/dir", "snapshot"]),
        "cannot use /no/such/dir as the host root",
    );
    assert_bad_input(
        &memwarden(&["--gpu-source", "cuda", "snapshot"]),
        "unknown GPU source \"cuda\"",
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.file("/proc/meminfo", "MemTotal: many\n").unwrap();
    assert_bad_input(
        &memwarden(&["--root", tmp.path().to_str().unwrap(), "snapshot", "--json"]),
        "/proc/meminfo is malformed: MemTotal has no size in kB",
    );
    assert_bad_input(&memwarden(&["snapshot", "--bogus"]), "--bogus");
    assert_bad_input(
        &memwarden(&["record", "--out", "/dev/null", "--interval", "soon"]),
        "soon",
    );
}

/// An error says its cause once: the library's message carries it and the binary, which prints
/// the chain of causes, must not find it again as a source.
#[test]
fn an_unreadable_file_names_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    for args in [
        vec!["--root", dir, "snapshot"],
        vec![
            "--root",
            dir,
            "record",
            "--out",
            "/dev/null",
            "--count",
            "1",
        ],
    ] {
        let o = memwarden(&args);
        assert_bad_input(&o, &format!("cannot read {dir}/proc/meminfo: "));
        let err = stderr(&o);
        assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    }
}

/// `record` writes what `snapshot --json` prints, notes included: the same machine, the same
/// notes (an empty GPU list is plain in the list, not a note, in both).
#[test]
fn record_lines_carry_the_notes_snapshot_has() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path().join("root"));
    root.meminfo(32 << 20, 16 << 20, 0, 0).unwrap();
    root.process(&FakeProcess::new(42, "trainer")).unwrap();
    let dir = root.dir().to_str().unwrap();
    let notes = |v: &Value| v.get("notes").cloned().unwrap_or(Value::Array(Vec::new()));
    for with_card in [false, true] {
        if with_card {
            root.card(&FakeCard::apu(1 << 20, 8 << 30, 0)).unwrap();
        }
        for source in ["auto", "drm", "none", "nvml"] {
            let out = memwarden(&["--root", dir, "--gpu-source", source, "snapshot", "--json"]);
            let file = tmp.path().join(format!("{source}-{with_card}.jsonl"));
            let f = file.to_str().unwrap();
            let args = ["--root", dir, "--gpu-source", source, "record", "--out", f];
            let o = memwarden(&[&args[..], &["--count", "1"]].concat());
            if source == "nvml" && !out.status.success() {
                // NVML asked for by name and unusable here: both refuse alike.
                assert_bad_input(&out, "--gpu-source nvml: NVML unavailable");
                assert_bad_input(&o, "--gpu-source nvml: NVML unavailable");
                continue;
            }
            assert!(out.status.success(), "{}", stderr(&out));
            let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let line: Value =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            assert_eq!(notes(&line), notes(&snap), "--gpu-source {source}");
            assert_eq!(line["gpus"], snap["gpus"], "--gpu-source {source}");
            if source != "nvml" {
                // Nothing was skipped or degraded on this machine: nothing to note.
                assert_eq!(
                    notes(&line),
                    Value::Array(Vec::new()),
                    "--gpu-source {source}"
                );
            }
        }
    }
}

#[test]
fn record_out_dash_writes_to_standard_output() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(32 << 20, 16 << 20, 0, 0).unwrap();
    let dir = root.dir().to_str().unwrap();
    let o = memwarden(&[
        "--root",
        dir,
        "record",
        "--out",
        "-",
        "--count",
        "2",
        "--interval",
        "10ms",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
    assert!(!std::path::Path::new("-").exists());
}

#[test]
fn record_appends_whole_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run.jsonl");
    // A recording that an earlier crash left with a half line.
    std::fs::write(&out, "{\"version\":1,\"taken").unwrap();
    let o = memwarden(&[
        "record",
        "--out",
        out.to_str().unwrap(),
        "--interval",
        "10ms",
        "--count",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0], "{\"version\":1,\"taken",
        "the half line stays alone"
    );
    for l in &lines[1..] {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["version"], 1);
    }
    assert!(text.ends_with('\n'));
}

#[test]
fn record_stops_cleanly_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_memwarden"))
        .args([
            "record",
            "--out",
            out.to_str().unwrap(),
            "--interval",
            "20ms",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for a first line, then interrupt as Ctrl-C does.
    for _ in 0..200 {
        if std::fs::read_to_string(&out).is_ok_and(|t| t.contains('\n')) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'));
    assert!(!text.is_empty());
    for l in text.lines() {
        serde_json::from_str::<Value>(l).unwrap();
    }
}

#[test]
fn workloads_lead_the_table_and_narrow() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(32 << 20, 16 << 20, 0, 0).unwrap();
    let id = "abcdefabcdef0123456789012345678901234567890123456789012345678901";
    let cg = format!("/machine.slice/libpod-{id}.scope");
    root.cgroup_v2(&cg, 3 << 30, None, 3 << 30, 0).unwrap();
    root.file(
        "/var/lib/containers/storage/overlay-containers/containers.json",
        format!(r#"[{{"id":"{id}","names":["comfyui"]}}]"#),
    )
    .unwrap();
    let mut comfy = FakeProcess::new(50, "python3");
    comfy.cgroup = format!("0::{cg}\n");
    root.process(&comfy).unwrap();
    root.process(&FakeProcess::new(60, "bash")).unwrap();
    let dir = tmp.path().to_str().unwrap();

    let out = memwarden(&["--root", dir, "snapshot"]);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let table = text.find("WORKLOAD").expect("a workloads table");
    assert!(
        table < text.find("COMMAND").unwrap(),
        "workloads come first: {text}"
    );
    assert!(text.contains("comfyui"), "{text}");
    assert!(text.contains("3 GiB cgroup"), "{text}");

    let out = memwarden(&["--root", dir, "snapshot", "--json", "--workload", "comfyui"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &snap["workloads"];
    assert_eq!(w.as_array().unwrap().len(), 1);
    assert_eq!(w[0]["kind"], "container");
    assert_eq!(w[0]["runtime"], "podman");
    assert_eq!(w[0]["resident_bytes"], 3u64 << 30);
    assert_eq!(w[0]["resident_source"], "cgroup");
    let pids: Vec<u64> = snap["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, vec![50]);
    // The start of an id works too; a name that matches nothing is bad input.
    let out = memwarden(&["--root", dir, "snapshot", "--workload", "podman:abcdef"]);
    assert!(out.status.success());
    assert_bad_input(
        &memwarden(&["--root", dir, "snapshot", "--workload", "nothing"]),
        "no workload named \"nothing\" (there are: bash, comfyui)",
    );
}

#[test]
fn nvml_asked_for_by_name_where_it_cannot_load_is_bad_input() {
    // This machine may or may not have the NVIDIA driver: with it, GPUs; without, exit 2.
    let out = memwarden(&["--gpu-source", "nvml", "snapshot", "--top", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => assert!(text.lines().any(|l| l.starts_with("GPU ")), "{text}"),
        _ => assert_bad_input(&out, "--gpu-source nvml: NVML unavailable: "),
    }
    // `auto` keeps its notice and goes on.
    let out = memwarden(&["--gpu-source", "auto", "snapshot", "--top", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn no_scrape_keeps_memwarden_from_asking_servers() {
    assert!(
        Command::new("python3").arg("--version").output().is_ok(),
        "python3 is not installed: `apt-get install python3` (or `bash .ci/setup`) installs it"
    );
    let (mut server, _) = fake_ollama::fake_ollama(
        r#"{"models":[{"name":"qwen3:32b","size":21474836480,"size_vram":21474836480}]}"#,
    );
    let estimate = |args: &[&str]| -> Value {
        let out = memwarden(args);
        assert!(out.status.success(), "{}", stderr(&out));
        let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
        let w = snap["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["pids"].as_array().unwrap().contains(&server.id().into()))
            .cloned()
            .expect("the server's workload");
        w["estimate_bytes"].clone()
    };
    let asked = estimate(&["snapshot", "--json"]);
    let not_asked = estimate(&["--no-scrape", "snapshot", "--json"]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(asked, Value::from(20u64 << 30));
    assert_eq!(not_asked, Value::Null);
}

#[test]
fn escapes_in_sysfs_strings_never_reach_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(32 << 20, 16 << 20, 0, 0).unwrap();
    root.card(&FakeCard {
        bus_id: "0000:c3:00.0\x1b]0;owned\x07\x1b[2J".into(),
        ..FakeCard::apu(1 << 20, 8 << 30, 1 << 30)
    })
    .unwrap();
    root.file(
        "/sys/class/drm/card0/device/product_name",
        "Radeon\x1b[31m\r\n",
    )
    .unwrap();
    root.file("/proc/sys/kernel/hostname", "host\x1b[2Jname\n")
        .unwrap();
    let dir = tmp.path().to_str().unwrap();
    let out = memwarden(&["--root", dir, "snapshot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(text.contains("GPU 0 Radeon"), "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
}
