//! What the view gives back to the kernel of its own memory, so that a view left open for days
//! stays small (docs/PERFORMANCE.md, "top").

/// Hands the heap's free pages back to the kernel after each frame. Each sample frees a whole
/// snapshot while the next one is built, and glibc keeps what it freed in the middle of the
/// heap resident: without this, top's resident heap settles ~0.4 MiB above what it uses. The
/// walk over the free lists costs microseconds once a frame.
pub(crate) fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the kernel; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Unmaps the program's code and read-only data from this process once the view is up, so
/// that only what the view runs from then on comes back. The pages stay in the page cache
/// (a page touched again is mapped again, without reading the disk), but the code that ran once
/// at start (argument parsing, configuration, the first full read of the machine, the terminal's
/// set-up), laid out apart from the code run each sample (crates/memwarden/build.rs), no longer
/// counts in the view's resident memory.
///
/// Only segments the program never writes are touched: for a private file mapping that was
/// never written, `MADV_DONTNEED` drops the pages and the next access maps the file's bytes again,
/// exactly as they were. Writable segments (data, and the relocated tables made read-only after
/// start-up) would lose what was written to them, and are left alone.
pub(crate) fn drop_start_up_code() {
    #[cfg(target_os = "linux")]
    // SAFETY: dl_iterate_phdr calls `each` with a valid dl_phdr_info for each loaded object; the
    // first is the program itself, and `each` stops there.
    unsafe {
        libc::dl_iterate_phdr(Some(each), std::ptr::null_mut());
    }
}

#[cfg(target_os = "linux")]
unsafe extern "C" fn each(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    _data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: the loader hands a valid pointer to the object's info and its program headers.
    let info = unsafe { &*info };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: as above; dlpi_phnum headers follow dlpi_phdr.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return 1,
    };
    for h in headers {
        if h.p_type != libc::PT_LOAD || h.p_flags & libc::PF_W != 0 {
            continue;
        }
        let start = (info.dlpi_addr as usize).wrapping_add(h.p_vaddr as usize);
        let (from, to) = (
            start / page * page,
            (start + h.p_memsz as usize).div_ceil(page) * page,
        );
        // SAFETY: [from, to) lies within one of the program's own read-only, file-backed
        // segments (rounded to whole pages, which belong to that segment's mapping alone).
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
        }
    }
    // Stop after the first object, the program: the libraries are shared and left as they are.
    1
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    fn rss_file_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        (s.lines().find_map(|l| l.strip_prefix("RssFile:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Written at run time: lives in a writable segment, which must keep what was written.
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    /// A pointer the loader relocates at start (read-only after relocation): must stay relocated.
    static NAMES: [&str; 3] = ["host", "gpu", "gtt"];

    #[test]
    fn start_up_code_leaves_the_resident_set_and_the_program_runs_on_unchanged() {
        WRITTEN.store(0x5eed, Ordering::Relaxed);
        let table: Vec<String> = (0..64).map(|i| format!("{i:>4}|{:x}", i * 977)).collect();
        let before = rss_file_kib();
        super::drop_start_up_code();
        let after = rss_file_kib();
        assert!(
            after < before,
            "file pages resident: {before} KiB before, {after} KiB after"
        );
        // Code, read-only data, relocated tables and written data are all as they were.
        let again: Vec<String> = (0..64).map(|i| format!("{i:>4}|{:x}", i * 977)).collect();
        assert_eq!(table, again);
        assert_eq!(WRITTEN.load(Ordering::Relaxed), 0x5eed);
        assert_eq!(NAMES.join(","), "host,gpu,gtt");
        super::release_free_heap();
    }
}
