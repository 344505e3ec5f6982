//! `serve --check` on servers that sleep: vLLM's sleep routes exist only with
//! `VLLM_SERVER_DEV_MODE=1`, and the check reads whether the server found on the port has it.

mod common;

use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot};

/// A vLLM-like server `pid` listening on `port` (socket inode `inode`) with `environ`.
fn server(root: &FakeRoot, pid: u32, port: u16, inode: u64, environ: &str) {
    let mut p = FakeProcess::new(pid, "vllm");
    p.fd_links = vec![(3, format!("socket:[{inode}]"))];
    root.process(&p).unwrap();
    root.file(&format!("/proc/{pid}/environ"), environ).unwrap();
    root.file(&format!("/proc/{pid}/net/tcp"), tcp(&[(port, inode)]))
        .unwrap();
}

fn tcp(listening: &[(u16, u64)]) -> String {
    let mut t = String::from(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
    );
    for (i, (port, inode)) in listening.iter().enumerate() {
        t.push_str(&format!(
            "   {i}: 0100007F:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
        ));
    }
    t
}

#[test]
fn serve_check_says_whether_vllm_can_sleep() {
    let dir = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(dir.path().join("root"));
    root.meminfo(32 << 20, 16 << 20, 0, 0).unwrap();
    root.card(&FakeCard::apu(0, 16 << 30, 0)).unwrap();
    root.file("/proc/net/tcp", tcp(&[(8001, 701), (8002, 702)]))
        .unwrap();
    server(&root, 41, 8001, 701, "PATH=/bin\0VLLM_SERVER_DEV_MODE=1\0");
    server(&root, 42, 8002, 702, "PATH=/bin\0");
    let consumer = |name: &str, port: u16, sleep: &str| {
        format!(
            "[[consumer]]\nname = \"{name}\"\npool = \"gpu0\"\nresident = \"100MiB\"\n\
             upstream = \"http://127.0.0.1:{port}\"\nsleep = \"{sleep}\"\n"
        )
    };
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"gpu0\"\nkind = \"vram\"\ngpu = 0\n\
         cushion = \"64MiB\"\n{}{}{}{}",
        consumer("dev", 8001, "vllm"),
        consumer("plain", 8002, "vllm"),
        consumer("down", 8003, "vllm"),
        consumer("sg", 8004, "sglang"),
    );
    let f = dir.path().join("m.toml");
    std::fs::write(&f, toml).unwrap();
    let o = common::serve_check(&dir.path().join("root"), &f);
    let said = common::stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{said}{}", common::stderr(&o));
    let line = |name: &str| {
        said.lines()
            .find(|l| l.starts_with(&format!("  {name}: ")))
            .unwrap_or_else(|| panic!("no line for {name}: {said}"))
            .to_string()
    };
    assert!(
        line("dev")
            .ends_with("; sleeps through vLLM's development routes: VLLM_SERVER_DEV_MODE=1 is set"),
        "{said}"
    );
    assert!(
        line("plain")
            .contains("VLLM_SERVER_DEV_MODE=1 is not in its environment: /sleep will answer 404"),
        "{said}"
    );
    assert!(
        line("down")
            .contains("the server must run with VLLM_SERVER_DEV_MODE=1 and --enable-sleep-mode"),
        "{said}"
    );
    assert!(line("sg").contains("--enable-memory-saver"), "{said}");
}
