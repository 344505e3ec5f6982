//! A tmux pane running the real binary, driven by keys and read off the screen, for the
//! end-to-end tests of `top`. Each pane has its own tmux server (socket) and home directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_memwarden")
}

pub fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/training-beside-inference.jsonl")
}

pub fn need_tmux() {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "tmux is not installed: `apt-get install tmux` (or `bash .ci/setup`) installs it"
    );
}

pub struct Pane {
    pub socket: String,
    home: tempfile::TempDir,
}

impl Pane {
    /// Runs `args` in a new pane of `w`×`h`; when it ends the pane shows `EXIT=<code>`.
    pub fn start(args: &[&str], w: u16, h: u16) -> Pane {
        let home = tempfile::tempdir().unwrap();
        Pane::start_in(home, args, w, h, &[])
    }

    pub fn start_in(home: tempfile::TempDir, args: &[&str], w: u16, h: u16, env: &[&str]) -> Pane {
        let socket = format!(
            "mw-top-{}-{}",
            std::process::id(),
            home.path().file_name().unwrap().to_string_lossy()
        );
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "env HOME='{home}' XDG_CONFIG_HOME='{home}/config' XDG_DATA_HOME='{home}/data' {env} '{bin}' {args}; echo EXIT=$?; sleep 60",
            home = home.path().display(),
            env = env.join(" "),
            bin = bin(),
            args = quoted.join(" ")
        );
        let st = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args([
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
                "sh",
                "-c",
                &script,
            ])
            .env_remove("TMUX")
            .env("TERM", "xterm-256color")
            .status()
            .unwrap();
        assert!(st.success());
        Pane { socket, home }
    }

    pub fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            let st = Command::new("tmux")
                .args(["-L", &self.socket, "send-keys", k])
                .status()
                .unwrap();
            assert!(st.success());
            // Let the view take each key on its own, as a person types.
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    /// Waits until the screen satisfies `ok`; panics with the screen after `secs`.
    pub fn wait(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if Instant::now() > until {
                panic!("timed out waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_for(&self, text: &str, secs: u64) -> String {
        self.wait(text, secs, |s| s.contains(text))
    }

    /// The pid of the memwarden process in the pane (the child of the pane's shell).
    pub fn memwarden_pid(&self) -> u32 {
        let o = Command::new("tmux")
            .args(["-L", &self.socket, "display-message", "-p", "#{pane_pid}"])
            .output()
            .unwrap();
        let shell: u32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("memwarden runs in the pane")
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}
