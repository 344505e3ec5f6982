//! A machine whose /proc and sysfs hold things no kernel writes: links to endless devices,
//! FIFOs that never answer, files far larger than any kernel file. The probe must finish, in
//! bounded memory, and report what it could read.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use memwarden_probe::fakeroot::{FakeCard, FakeProcess, FakeRoot};
use memwarden_probe::root::{MAX_FILE_BYTES, read_bounded};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn fifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(path);
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

fn link(target: &str, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(path);
    std::os::unix::fs::symlink(target, path).unwrap();
}

fn huge(path: &Path) {
    // Sparse: the size is real to a reader, the disk holds nothing.
    std::fs::File::create(path)
        .unwrap()
        .set_len(4 * GIB)
        .unwrap();
}

/// Runs `f` on another thread; a hang is a failure after `within`, not a stuck test run.
fn finishes<T: Send + 'static>(within: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(within)
        .expect("the probe hung on a hostile file")
}

#[test]
fn links_to_devices_fifos_and_huge_files_do_not_hang_or_abort_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = FakeRoot::new(tmp.path());
    root.meminfo(16 << 20, 8 << 20, 0, 0).unwrap();
    root.card(&FakeCard::apu(100 * MIB, 8 * GIB, GIB)).unwrap();
    let mut good = FakeProcess::new(100, "good");
    good.rss_kib = Some(4096);
    root.process(&good).unwrap();
    for pid in [200, 300, 400] {
        root.process(&FakeProcess::new(pid, "hostile")).unwrap();
    }
    let d = tmp.path();
    // /dev/zero never ends; a FIFO with no writer blocks a plain open for ever.
    link("/dev/zero", &d.join("proc/200/status"));
    link("/dev/zero", &d.join("proc/200/cmdline"));
    fifo(&d.join("proc/300/cgroup"));
    fifo(&d.join("proc/300/status"));
    huge(&d.join("proc/400/cmdline"));
    huge(&d.join("proc/400/maps"));
    let dev = d.join("sys/class/drm/card0/device");
    fifo(&dev.join("product_name"));
    link("/dev/zero", &dev.join("mem_info_vram_total"));
    huge(&dev.join("uevent"));
    fifo(&d.join("proc/pressure/memory"));
    link("/dev/urandom", &d.join("proc/sys/kernel/hostname"));

    let root_dir = d.to_path_buf();
    let snap = finishes(Duration::from_secs(60), move || {
        Probe::new(HostRoot::new(root_dir).unwrap(), GpuSourceKind::Auto).snapshot()
    })
    .unwrap();
    let p100 = snap.processes.iter().find(|p| p.pid == 100).unwrap();
    assert_eq!(p100.rss_bytes, Some(4096 * 1024));
    assert_eq!(snap.host.psi_memory_some_avg10, None);
}

#[test]
fn bounded_reads_refuse_what_is_not_a_small_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fifo(&d.join("fifo"));
    link("/dev/zero", &d.join("zero"));
    huge(&d.join("huge"));
    std::fs::write(d.join("small"), "12\n").unwrap();
    let d2 = d.to_path_buf();
    let results = finishes(Duration::from_secs(30), move || {
        ["fifo", "zero", "huge", "small"].map(|n| read_bounded(&d2.join(n), MAX_FILE_BYTES))
    });
    let [fifo, zero, huge, small] = results;
    assert!(fifo.unwrap_err().to_string().contains("FIFO"));
    assert!(zero.unwrap_err().to_string().contains("device"));
    assert!(huge.unwrap_err().to_string().contains("larger than"));
    assert_eq!(small.unwrap(), b"12\n");
}
