//! Fake machines as directory trees, for tests and benchmarks here and in the crates built on
//! the probe. A [`FakeRoot`] writes the files a real kernel would show, in the same formats, so
//! that the probe reads it through `--root` exactly as it reads `/`.

use std::io;
use std::path::{Path, PathBuf};

/// A process as the fake /proc shows it.
#[derive(Debug, Clone)]
pub struct FakeProcess {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub starttime: u64,
    pub uid: u32,
    /// `None` writes a status without VmRSS, as for a kernel thread.
    pub rss_kib: Option<u64>,
    pub cmdline: Vec<String>,
    /// The whole /proc/PID/cgroup text.
    pub cgroup: String,
    /// fdinfo files by fd number; each gets an fd link too (a DRM render node for DRM text,
    /// else a socket).
    pub fdinfo: Vec<(u32, String)>,
    /// Further fd links by fd number: the link's target text. A relative target resolves
    /// inside the fake root, as a real `/proc/PID/fd/N` link reaches the open file.
    pub fd_links: Vec<(u32, String)>,
    /// CPU time in clock ticks, user and system (fields 14 and 15 of stat).
    pub cpu_ticks: (u64, u64),
}

impl FakeProcess {
    /// A plain process in the root cgroup (v2) with no fds.
    pub fn new(pid: u32, comm: &str) -> FakeProcess {
        FakeProcess {
            pid,
            ppid: 1,
            comm: comm.to_string(),
            starttime: 1000 + u64::from(pid),
            uid: 1000,
            rss_kib: Some(1024),
            cmdline: vec![comm.to_string()],
            cgroup: "0::/\n".to_string(),
            fdinfo: Vec::new(),
            fd_links: Vec::new(),
            cpu_ticks: (5, 3),
        }
    }
}

/// A DRM card in the fake sysfs.
#[derive(Debug, Clone)]
pub struct FakeCard {
    pub card: u32,
    pub bus_id: String,
    pub vendor: u32,
    pub device: u32,
    pub numa_node: i32,
    pub vram_total: Option<u64>,
    pub vram_used: Option<u64>,
    pub gtt_total: Option<u64>,
    pub gtt_used: Option<u64>,
}

impl FakeCard {
    /// An APU (a Strix Halo-like `1002:1586` at `0000:c3:00.0`, no NUMA node) with a 512 MiB
    /// VRAM carve-out and `gtt_total` of system RAM mapped for it.
    pub fn apu(vram_used: u64, gtt_total: u64, gtt_used: u64) -> FakeCard {
        FakeCard {
            card: 0,
            bus_id: "0000:c3:00.0".into(),
            vendor: 0x1002,
            device: 0x1586,
            numa_node: -1,
            vram_total: Some(512 << 20),
            vram_used: Some(vram_used),
            gtt_total: Some(gtt_total),
            gtt_used: Some(gtt_used),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeRoot {
    dir: PathBuf,
}

impl FakeRoot {
    /// A fake machine in `dir` (which the caller owns, usually a temporary directory).
    pub fn new(dir: impl Into<PathBuf>) -> FakeRoot {
        FakeRoot { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `content` at the machine path `rel`, creating directories.
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>) -> io::Result<&Self> {
        let path = self.dir.join(rel.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
        Ok(self)
    }

    /// /proc/meminfo (figures in KiB, as the kernel prints them), /proc/stat's boot time and the
    /// hostname.
    pub fn meminfo(
        &self,
        total_kib: u64,
        available_kib: u64,
        swap_total_kib: u64,
        swap_free_kib: u64,
    ) -> io::Result<&Self> {
        self.file(
            "/proc/meminfo",
            format!(
                "MemTotal:       {total_kib} kB\nMemFree:        {available_kib} kB\n\
MemAvailable:   {available_kib} kB\nBuffers:               0 kB\nCached:                0 kB\n\
SwapCached:            0 kB\nSwapTotal:      {swap_total_kib} kB\nSwapFree:       {swap_free_kib} kB\n"
            ),
        )?;
        self.file(
            "/proc/stat",
            "cpu  1 0 1 100 0 0 0 0 0 0\nbtime 1700000000\n",
        )?;
        self.file("/proc/sys/kernel/hostname", "fakehost\n")
    }

    pub fn process(&self, p: &FakeProcess) -> io::Result<&Self> {
        let base = format!("/proc/{}", p.pid);
        let rss_pages = p.rss_kib.unwrap_or(0) / 4;
        self.file(
            &format!("{base}/stat"),
            format!(
                "{} ({}) S {} {} {} 0 -1 4194560 100 0 0 0 {} {} 0 0 20 0 1 0 {} 123456789 {} \
18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
                p.pid,
                p.comm,
                p.ppid,
                p.pid,
                p.pid,
                p.cpu_ticks.0,
                p.cpu_ticks.1,
                p.starttime,
                rss_pages
            ),
        )?;
        let mut status = format!(
            "Name:\t{}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t{}\n\
Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n",
            p.comm,
            p.ppid,
            pid = p.pid,
            uid = p.uid
        );
        if let Some(rss) = p.rss_kib {
            status.push_str(&format!(
                "VmPeak:\t  {0} kB\nVmSize:\t  {0} kB\nVmHWM:\t  {rss} kB\nVmRSS:\t  {rss} kB\n\
RssAnon:\t  {rss} kB\nThreads:\t1\n",
                rss * 2
            ));
        }
        self.file(&format!("{base}/status"), status)?;
        let mut cmdline = p.cmdline.join("\0");
        if !cmdline.is_empty() {
            cmdline.push('\0');
        }
        self.file(&format!("{base}/cmdline"), cmdline)?;
        self.file(&format!("{base}/cgroup"), &p.cgroup)?;
        self.file(
            &format!("{base}/statm"),
            format!("{} {rss_pages} 0 1 0 {rss_pages} 0\n", rss_pages * 2),
        )?;
        let fd_dir = self.dir.join(format!("proc/{}/fd", p.pid));
        std::fs::create_dir_all(&fd_dir)?;
        std::fs::create_dir_all(self.dir.join(format!("proc/{}/fdinfo", p.pid)))?;
        for (fd, text) in &p.fdinfo {
            self.file(&format!("{base}/fdinfo/{fd}"), text)?;
            let target = if text.contains("drm-driver:") {
                "/dev/dri/renderD128".to_string()
            } else {
                format!("socket:[{}]", 10_000 + fd)
            };
            symlink(&target, &fd_dir.join(fd.to_string()))?;
        }
        for (fd, target) in &p.fd_links {
            symlink(target, &fd_dir.join(fd.to_string()))?;
            self.file(&format!("{base}/fdinfo/{fd}"), plain_fdinfo())?;
        }
        Ok(self)
    }

    pub fn card(&self, c: &FakeCard) -> io::Result<&Self> {
        let dev = format!("/sys/class/drm/card{}/device", c.card);
        self.file(
            &format!("{dev}/uevent"),
            format!("DRIVER=amdgpu\nPCI_SLOT_NAME={}\n", c.bus_id),
        )?;
        self.file(&format!("{dev}/vendor"), format!("0x{:04x}\n", c.vendor))?;
        self.file(&format!("{dev}/device"), format!("0x{:04x}\n", c.device))?;
        self.file(&format!("{dev}/numa_node"), format!("{}\n", c.numa_node))?;
        for (name, v) in [
            ("mem_info_vram_total", c.vram_total),
            ("mem_info_vram_used", c.vram_used),
            ("mem_info_gtt_total", c.gtt_total),
            ("mem_info_gtt_used", c.gtt_used),
        ] {
            if let Some(v) = v {
                self.file(&format!("{dev}/{name}"), format!("{v}\n"))?;
            }
        }
        // A connector beside the card, which the probe must not take for a GPU.
        self.file(
            &format!("/sys/class/drm/card{}-DP-1/status", c.card),
            "disconnected\n",
        )?;
        Ok(self)
    }

    pub fn numa_node(
        &self,
        node: u32,
        cpulist: &str,
        total_kib: u64,
        free_kib: u64,
    ) -> io::Result<&Self> {
        let dir = format!("/sys/devices/system/node/node{node}");
        self.file(&format!("{dir}/cpulist"), format!("{cpulist}\n"))?;
        self.file(
            &format!("{dir}/meminfo"),
            format!(
                "Node {node} MemTotal:       {total_kib} kB\nNode {node} MemFree:        {free_kib} kB\n\
Node {node} MemUsed:        {} kB\n",
                total_kib.saturating_sub(free_kib)
            ),
        )
    }

    /// A v2 cgroup (`/sys/fs/cgroup` as the unified root) with its memory files.
    pub fn cgroup_v2(
        &self,
        path: &str,
        current: u64,
        max: Option<u64>,
        anon: u64,
        file: u64,
    ) -> io::Result<&Self> {
        self.file("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n")?;
        let dir = format!("/sys/fs/cgroup/{}", path.trim_matches('/'));
        self.file(&format!("{dir}/memory.current"), format!("{current}\n"))?;
        self.file(
            &format!("{dir}/memory.max"),
            max.map_or("max\n".to_string(), |m| format!("{m}\n")),
        )?;
        self.file(
            &format!("{dir}/memory.stat"),
            format!("anon {anon}\nfile {file}\nkernel 0\nshmem 0\n"),
        )
    }

    /// A v1 memory cgroup (`/sys/fs/cgroup/memory`) with its memory files.
    pub fn cgroup_v1(
        &self,
        path: &str,
        usage: u64,
        limit: Option<u64>,
        rss: u64,
        cache: u64,
    ) -> io::Result<&Self> {
        self.file("/sys/fs/cgroup/memory/memory.usage_in_bytes", "0\n")?;
        let dir = format!("/sys/fs/cgroup/memory/{}", path.trim_matches('/'));
        self.file(
            &format!("{dir}/memory.usage_in_bytes"),
            format!("{usage}\n"),
        )?;
        self.file(
            &format!("{dir}/memory.limit_in_bytes"),
            format!("{}\n", limit.unwrap_or(9223372036854771712)),
        )?;
        self.file(
            &format!("{dir}/memory.stat"),
            format!("cache {cache}\nrss {rss}\nrss_huge 0\nmapped_file 0\n"),
        )
    }
}

/// Creates a symlink, replacing one that is there.
fn symlink(target: &str, link: &Path) -> io::Result<()> {
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(target, link)
}

/// The AMD fdinfo text of one DRM client, as amdgpu prints it (legacy `drm-memory-*` keys).
pub fn amdgpu_fdinfo(pdev: &str, client_id: u64, vram: &str, gtt: &str) -> String {
    format!(
        "pos:\t0\nflags:\t02100002\nmnt_id:\t24\nino:\t1043\ndrm-driver:\tamdgpu\n\
drm-pdev:\t{pdev}\ndrm-client-id:\t{client_id}\ndrm-pasid:\t32770\ndrm-memory-vram:\t{vram}\n\
drm-memory-gtt:\t{gtt}\ndrm-memory-cpu:\t0 KiB\namd-memory-visible-vram:\t0 KiB\n\
drm-engine-gfx:\t1016940 ns\ndrm-engine-compute:\t0 ns\n"
    )
}

/// The fdinfo of a plain (non-DRM) file.
pub fn plain_fdinfo() -> String {
    "pos:\t0\nflags:\t02\nmnt_id:\t24\nino:\t4321\n".to_string()
}

/// A machine with `processes` processes in 50 services, each holding `fds` fds, one in four of
/// them a DRM client of an APU, and one process in ten a model file: the benchmark's fake root.
pub fn populate_bench_root(root: &FakeRoot, processes: u32, fds: u32) -> io::Result<()> {
    root.meminfo(128 << 20, 64 << 20, 0, 0)?;
    root.card(&FakeCard::apu(100 << 20, 120 << 30, 30 << 30))?;
    root.numa_node(0, "0-31", 128 << 20, 64 << 20)?;
    for s in 0..50 {
        root.cgroup_v2(
            &format!("/system.slice/app-{s}.service"),
            1 << 30,
            None,
            1 << 29,
            1 << 29,
        )?;
    }
    root.file("/models/m.gguf", vec![0u8; 4096])?;
    for i in 0..processes {
        let pid = 100 + i;
        let mut p = FakeProcess::new(pid, &format!("worker-{i}"));
        p.cmdline = vec![
            "/usr/bin/python3".into(),
            "-m".into(),
            "server".into(),
            format!("--id={i}"),
        ];
        p.cgroup = format!("0::/system.slice/app-{}.service\n", i % 50);
        p.fdinfo = (0..fds)
            .map(|fd| {
                let text = if fd % 4 == 3 {
                    amdgpu_fdinfo(
                        "0000:c3:00.0",
                        u64::from(pid) * 10 + u64::from(fd),
                        "4096 KiB",
                        "1 MiB",
                    )
                } else {
                    plain_fdinfo()
                };
                (fd, text)
            })
            .collect();
        if i % 10 == 0 {
            p.fd_links = vec![(fds, "../../../models/m.gguf".into())];
        }
        root.process(&p)?;
    }
    Ok(())
}
