//! Files of /proc and sysfs that another user's process or a driver controls. The first byte
//! picks the parser, so one target's corpus covers them all.
#![no_main]
use libfuzzer_sys::fuzz_target;
use memwarden_probe::{cgroup, fdinfo, framework, gpu, meminfo, net, numa, process};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    match which % 10 {
        0 => {
            let _ = process::parse_stat(body);
        }
        1 => {
            let _ = process::parse_status(body);
        }
        2 => {
            let _ = process::parse_cmdline(body);
        }
        3 => {
            let _ = cgroup::parse_proc_cgroup(&text);
            let _ = cgroup::parse_limit(&text);
            let _ = cgroup::stat_value(&text, "anon");
        }
        4 => {
            let _ = fdinfo::parse_drm_fdinfo(body);
        }
        5 => {
            let _ = meminfo::parse_meminfo(&text);
            let _ = meminfo::parse_psi_some_avg10(&text);
        }
        6 => {
            let _ = framework::detect("python3 -m server", &text);
        }
        7 => {
            let _ = numa::parse_node_meminfo(&text);
            let _ = numa::parse_cpulist(&text);
        }
        8 => {
            let _ = net::parse_listening(&text);
        }
        _ => {
            let _ = gpu::normalize_bus_id(&text);
        }
    }
});
