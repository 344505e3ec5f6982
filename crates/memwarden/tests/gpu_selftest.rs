//! `scripts/gpu-selftest.py`, the self-test a user runs on a GPU machine, tested where no GPU
//! is: its one-line exit without a GPU, its consumer server on host memory, and its broker check
//! (`--device cpu`: `memwarden serve` with a `ram` pool that fits two of its three consumers).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_memwarden");
const MIB: u64 = 1 << 20;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gpu-selftest.py")
}

/// The real interpreter behind `python3` (a version manager's shim needs the PATH the tests
/// take away), or a failure that says how to install it.
fn python() -> PathBuf {
    let o = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output();
    match o {
        Ok(o) if o.status.success() => PathBuf::from(common::stdout(&o).trim()),
        _ => panic!("python3 is needed: apt-get install -y python3 (.ci/setup installs it)"),
    }
}

fn run_script(args: &[&str], path: &str) -> Output {
    Command::new(python())
        .arg(script())
        .args(args)
        .env("PATH", path)
        .output()
        .expect("run the self-test")
}

#[test]
fn without_a_gpu_it_says_so_in_one_line_and_exits_2() {
    // A PATH with no vendor tool on it: no nvidia-smi, no rocm-smi, whatever this machine has.
    let empty = tempfile::tempdir().unwrap();
    let o = run_script(&[BIN], empty.path().to_str().unwrap());
    common::assert_bad_input(&o, "no GPU here");
    assert!(common::stdout(&o).is_empty(), "{}", common::stdout(&o));
    let o = run_script(&["/nonexistent/memwarden"], empty.path().to_str().unwrap());
    common::assert_bad_input(&o, "cargo build --release");
}

/// The consumer mode, started as the script starts it, killed when dropped.
struct ScriptConsumer {
    child: Child,
    port: u16,
}

impl ScriptConsumer {
    fn spawn(gib: &str, extra: &[&str]) -> ScriptConsumer {
        let mut child = Command::new(python())
            .arg(script())
            .args(["consumer", "0", gib, "--device", "cpu", "--name", "t"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the consumer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        ScriptConsumer { child, port }
    }

    fn post(&self, path: &str) -> String {
        request(self.port, "POST", path)
    }

    fn rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }
}

impl Drop for ScriptConsumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request to 127.0.0.1: the status line and the body.
fn request(port: u16, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    format!("{} {body}", head.lines().next().unwrap())
}

#[test]
fn the_consumer_holds_host_memory_while_loaded_and_gives_it_back() {
    let c = ScriptConsumer::spawn("0.0625", &[]);
    let idle = c.rss();
    assert!(request(c.port, "GET", "/health").contains(" 200 "));
    assert!(c.post("/load").contains(" 200 "));
    assert!(c.rss() >= idle + 60 * MIB, "{} after load", c.rss());
    let info = request(c.port, "GET", "/info");
    assert!(info.contains("\"loaded\": true"), "{info}");
    assert!(c.post("/unload").contains(" 200 "));
    assert!(c.rss() < idle + 16 * MIB, "{} after unload", c.rss());
    assert!(request(c.port, "GET", "/work").contains("loaded=False"));
}

#[test]
fn the_liar_answers_its_unload_and_keeps_its_memory() {
    let c = ScriptConsumer::spawn("0.0625", &["--liar"]);
    let idle = c.rss();
    assert!(c.post("/load").contains(" 200 "));
    let answer = c.post("/unload");
    assert!(
        answer.contains(" 200 ") && answer.ends_with("unloaded"),
        "{answer}"
    );
    assert!(c.rss() >= idle + 60 * MIB, "{} after unload", c.rss());
}

/// The pids of processes whose command line holds every one of `needles`.
fn processes_with(needles: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if needles.iter().all(|n| cmd.contains(n)) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn its_broker_check_on_host_memory_holds_and_leaves_nothing_behind() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("run");
    let path = std::env::var("PATH").unwrap_or_default();
    let t = Instant::now();
    let o = Command::new(python())
        .arg(script())
        .args([BIN, "--device", "cpu", "--out", out_dir.to_str().unwrap()])
        .env("PATH", path)
        .output()
        .unwrap();
    let text = common::stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", common::stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(240));
    // The table (kept apart from top's screen, which shows other processes' command lines):
    // each check on one row, and every one holds.
    let table = std::fs::read_to_string(out_dir.join("table.txt")).unwrap();
    assert!(
        text.contains(&table),
        "the table printed is the one kept: {text}"
    );
    let text = table;
    for row in [
        "3 request for liar",
        "3 the liar ends stuck",
        "3 the liar still holds",
        "3 retried unload of the liar",
        "5 no process left behind",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?} in\n{text}"));
        assert!(line.ends_with(" ok"), "{line}");
    }
    // Which consumer the broker evicts is its choice; each it evicted gave its memory back.
    assert!(text.contains(" evicted: memory back "), "{text}");
    // tmux is installed by .ci/setup: no row is left "n/a" either.
    assert!(text.lines().skip(2).all(|l| l.ends_with(" ok")), "{text}");
    // What the broker was given, and that its consumers and it are gone.
    let toml = std::fs::read_to_string(out_dir.join("memwarden.toml")).unwrap();
    assert!(toml.contains("kind = \"ram\""), "{toml}");
    assert_eq!(toml.matches("[[consumer]]").count(), 3, "{toml}");
    // (The other tests' consumers are named "t"; other programs' may be named "a" too.)
    let script = script()
        .canonicalize()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for name in ["a", "b", "liar"] {
        let left = processes_with(&[&script, &format!("--name\0{name}\0")]);
        assert!(left.is_empty(), "{name} left behind: {left:?}");
    }
    assert!(processes_with(&[&out_dir.to_string_lossy()]).is_empty());
}
