//! Random bytes into every parser of untrusted kernel text: never a panic.

use memwarden_probe::{cgroup, fdinfo, meminfo, net, numa, process, size};
use proptest::prelude::*;

proptest! {
    #[test]
    fn stat_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = process::parse_stat(&bytes);
        let _ = process::parse_status(&bytes);
        let _ = process::parse_cmdline(&bytes);
    }

    #[test]
    fn stat_like_text_never_panics(comm in ".{0,40}", rest in "[0-9 -]{0,200}") {
        let text = format!("12 ({comm}) S {rest}");
        let _ = process::parse_stat(text.as_bytes());
    }

    #[test]
    fn fdinfo_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), tail in "[ -~\n\t]{0,200}") {
        let _ = fdinfo::parse_drm_fdinfo(&bytes);
        let text = format!("drm-driver: x\n{tail}");
        let _ = fdinfo::parse_drm_fdinfo(text.as_bytes());
    }

    #[test]
    fn meminfo_never_panics(text in "[ -~\n]{0,400}") {
        let _ = meminfo::parse_meminfo(&text);
        let _ = meminfo::parse_psi_some_avg10(&text);
        let _ = numa::parse_node_meminfo(&text);
        let _ = numa::parse_cpulist(&text);
    }

    #[test]
    fn cgroup_and_net_never_panic(text in "[ -~\n]{0,400}") {
        let _ = cgroup::parse_proc_cgroup(&text);
        let _ = cgroup::parse_limit(&text);
        let _ = cgroup::stat_value(&text, "anon");
        let _ = net::parse_listening(&text);
        let _ = size::parse_size(&text);
    }

    #[test]
    fn meminfo_round_trips(total in 0u64..1 << 40, avail in 0u64..1 << 40) {
        let text = format!("MemTotal: {total} kB\nMemAvailable: {avail} kB\n");
        let m = meminfo::parse_meminfo(&text).unwrap();
        prop_assert_eq!(m.mem_total_bytes, total * 1024);
        prop_assert_eq!(m.mem_available_bytes, avail * 1024);
    }

    #[test]
    fn cpulists_round_trip(mut cpus in proptest::collection::vec(0u32..512, 0..64)) {
        let text = numa::format_cpulist(&cpus);
        cpus.sort_unstable();
        cpus.dedup();
        prop_assert_eq!(numa::parse_cpulist(&text), Some(cpus));
    }
}
