//! Running the real binary as a user does, shared by the command-line tests.
// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `memwarden ARGS` with no root or GPU source taken from the environment.
pub fn memwarden(args: &[&str]) -> Output {
    memwarden_with(args, &[])
}

/// `memwarden ARGS` with these environment variables set.
pub fn memwarden_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memwarden"))
        .args(args)
        .env_remove("MEMWARDEN_ROOT")
        .env_remove("MEMWARDEN_GPU_SOURCE")
        .envs(env.iter().copied())
        .output()
        .expect("run memwarden")
}

/// `memwarden --root ROOT --gpu-source drm ARGS`: a command on a fixture machine whose GPUs
/// are found through DRM.
pub fn on_drm_machine(root: &Path, args: &[&str]) -> Output {
    let root = root.to_str().expect("a UTF-8 path");
    memwarden(&[&["--root", root, "--gpu-source", "drm"], args].concat())
}

/// `serve --check` of a broker configuration on such a machine.
pub fn serve_check(root: &Path, config: &Path) -> Output {
    let config = config.to_str().expect("a UTF-8 path");
    on_drm_machine(root, &["serve", "--check", "--config", config])
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Bad input: exit 2 and one line naming the problem, never a panic.
pub fn assert_bad_input(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}
