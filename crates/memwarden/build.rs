//! Lays out the release binary for `top`'s resident memory (docs/PERFORMANCE.md, "top").
//!
//! The kernel maps a page of a program's code together with up to 64 KiB around it, so the few
//! hundred functions `top` runs, scattered over 8 MB of code, kept ~5 MiB of it resident.
//! `top-hot-symbols.txt` (written by `scripts/top-layout.sh`) names them; lld's
//! `--symbol-ordering-file` puts them side by side. `-z pack-relative-relocs` packs the
//! relocation table the loader reads at start (400 KB → 5 KB).
//!
//! Both are linker options that only lld (and glibc ≥ 2.36 for the second) understand, so they
//! are used only when a release build links with the toolchain's own linker and a small program
//! linked here with them builds and runs; otherwise the binary is linked as usual.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let list = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("top-hot-symbols.txt");
    println!("cargo:rerun-if-changed=top-hot-symbols.txt");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("PROFILE").as_deref() != Ok("release")
        || env::var_os("RUSTC_LINKER").is_some()
        || env::var("TARGET").ok() != env::var("HOST").ok()
        || !list.is_file()
    {
        return;
    }
    let args = [
        format!("-Wl,--symbol-ordering-file={}", list.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
        "-Wl,-z,pack-relative-relocs".to_string(),
    ];
    if links_and_runs(&args) {
        for a in &args {
            println!("cargo:rustc-link-arg-bin=memwarden={a}");
        }
    }
}

/// Whether a small program linked with `args` by this rustc's default linker builds and runs.
fn links_and_runs(args: &[String]) -> bool {
    let Some(out) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let src = out.join("layout_probe.rs");
    let bin = out.join("layout_probe");
    if std::fs::write(
        &src,
        "fn main() { println!(\"{}\", std::env::args().count()); }\n",
    )
    .is_err()
    {
        return false;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.arg(&src).arg("-o").arg(&bin);
    for a in args {
        cmd.arg("-C").arg(format!("link-arg={a}"));
    }
    let built = cmd.output().map(|o| o.status.success()).unwrap_or(false);
    built
        && Command::new(&bin)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}
