//! The live source: a background thread samples the machine every interval and sends the
//! result to the event loop, so that drawing and keys never wait on /proc or the GPU driver.
//! The sampler itself keeps NVML's slow process lists to once a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memwarden_probe::HostRoot;
use memwarden_probe::incremental::{Sample, Sampler};
use memwarden_probe::procfs::OpenFile;
use memwarden_probe::scrape::ServerKind;
use memwarden_probe::snapshot::{Process, ProcessId};

use crate::app::Extras;

/// What reaches the event loop, from any thread.
#[derive(Debug)]
pub enum Event {
    Input(ratatui::crossterm::event::Event),
    Sample(Box<Sample>, Box<Extras>),
    /// A sample failed (an unreadable /proc/meminfo): said in the status line, sampling goes on.
    SampleError(String),
    /// SIGHUP: read the config file again.
    Reload,
    /// SIGTERM or SIGINT: leave as `q` does.
    Terminate,
    /// The input reader failed (the terminal went away).
    InputGone(String),
    /// The broker's answer (`None`: the default broker is not there).
    Broker(Option<Box<crate::broker::BrokerState>>),
}

/// Controls of the sampling thread.
#[derive(Debug, Clone)]
pub struct LiveControl {
    interval_ms: Arc<AtomicU64>,
    focus: Arc<Mutex<Option<ProcessId>>>,
}

impl LiveControl {
    pub fn set_interval(&self, d: Duration) {
        self.interval_ms.store(
            d.as_millis().clamp(100, 3_600_000) as u64,
            Ordering::Relaxed,
        );
    }

    /// The process the detail pane shows: its open files are read with the next sample.
    pub fn set_focus(&self, id: Option<ProcessId>) {
        if let Ok(mut f) = self.focus.lock() {
            *f = id;
        }
    }
}

/// Starts the sampling thread. It ends by itself when the event loop's receiver is gone.
pub fn spawn(mut sampler: Sampler, interval: Duration, tx: Sender<Event>) -> LiveControl {
    let control = LiveControl {
        interval_ms: Arc::new(AtomicU64::new(0)),
        focus: Arc::new(Mutex::new(None)),
    };
    control.set_interval(interval);
    let c = control.clone();
    let root = sampler.probe().root().clone();
    std::thread::Builder::new()
        .name("memwarden-sampler".into())
        .spawn(move || {
            let mut next = Instant::now();
            loop {
                let event = match sampler.sample() {
                    Ok(s) => {
                        let focus = c.focus.lock().ok().and_then(|f| *f);
                        let extras = focus
                            .and_then(|id| {
                                let p = s.snapshot.processes.iter().find(|p| p.identity() == id)?;
                                let server = p.framework.and_then(|f| {
                                    ServerKind::for_framework(f)?;
                                    Some(match s.servers.get(&p.pid) {
                                        Some(m) => Ok(m.clone()),
                                        None => Err(server_note(&s.snapshot.notes, p.pid)),
                                    })
                                });
                                Some(extras(&root, p, server))
                            })
                            .unwrap_or_default();
                        Event::Sample(Box::new(s), Box::new(extras))
                    }
                    Err(e) => Event::SampleError(e.to_string()),
                };
                if tx.send(event).is_err() {
                    return;
                }
                let interval = Duration::from_millis(c.interval_ms.load(Ordering::Relaxed));
                next += interval;
                let now = Instant::now();
                if next <= now {
                    // Sampling took longer than the interval: start again from now, no burst.
                    next = now;
                } else {
                    std::thread::sleep(next - now);
                }
            }
        })
        .expect("spawning a thread");
    control
}

/// Why a server's figures are missing, from the sample's notes.
fn server_note(notes: &[String], pid: u32) -> String {
    let tag = format!("server of pid {pid} skipped: ");
    notes
        .iter()
        .find_map(|n| n.split_once(&tag).map(|(_, why)| why.to_string()))
        .unwrap_or_else(|| "not asked yet".into())
}

/// The open model files and listening ports of one process, with what its server said.
pub fn extras(
    root: &HostRoot,
    p: &Process,
    server: Option<Result<memwarden_probe::scrape::ServerMetrics, String>>,
) -> Extras {
    let id = p.identity();
    let mut out = Extras {
        id: Some(id),
        server,
        ..Extras::default()
    };
    let dir = root.path(&format!("/proc/{}/fd", id.pid));
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut seen: HashMap<String, u64> = HashMap::new();
        for e in entries.flatten().take(4096) {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            // The same rule as the snapshot's estimates; a file deleted while open is left out.
            let Some(file) = OpenFile::model(&e.file_name(), target.as_os_str().as_encoded_bytes())
                .filter(|f| !f.deleted)
            else {
                continue;
            };
            // Size through the fd link: it reaches the file inside another mount namespace.
            let size = std::fs::metadata(e.path()).map_or(0, |m| m.len());
            seen.insert(memwarden_probe::sanitize::sanitize(&file.path, 160), size);
        }
        let mut files: Vec<(String, u64)> = seen.into_iter().collect();
        files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        files.truncate(8);
        out.model_files = files;
    }
    let inodes = memwarden_probe::net::socket_inodes(root, id.pid);
    let mut ports: Vec<u16> = memwarden_probe::net::listening_sockets(root, id.pid)
        .into_iter()
        .filter(|s| inodes.contains(&s.inode))
        .map(|s| s.port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    out.ports = ports;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_name_open_model_files() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny.gguf");
        std::fs::write(&model, vec![0u8; 4096]).unwrap();
        let _held = std::fs::File::open(&model).unwrap();
        let root = HostRoot::system();
        let me = crate::kill::identity_now(&root, std::process::id()).unwrap();
        let p = Process {
            pid: me.pid,
            starttime: me.starttime,
            ppid: None,
            uid: None,
            name: "test".into(),
            cmdline: "test".into(),
            rss_bytes: None,
            cgroup: None,
            gpu: vec![],
            framework: None,
            cpu_percent: None,
            gpu_utilization_percent: None,
        };
        let x = extras(&root, &p, None);
        assert_eq!(x.server, None);
        assert!(
            x.model_files
                .iter()
                .any(|(p, s)| p.ends_with("tiny.gguf") && *s == 4096),
            "{x:?}"
        );
    }

    #[test]
    fn samples_arrive_and_the_thread_stops_with_the_receiver() {
        let (tx, rx) = std::sync::mpsc::channel();
        let probe =
            memwarden_probe::Probe::new(HostRoot::system(), memwarden_probe::GpuSourceKind::None);
        let c = spawn(Sampler::new(probe), Duration::from_millis(100), tx);
        c.set_focus(None);
        for _ in 0..2 {
            match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
                Event::Sample(s, _) => {
                    assert!(
                        s.snapshot
                            .processes
                            .iter()
                            .any(|p| p.pid == std::process::id())
                    )
                }
                other => panic!("{other:?}"),
            }
        }
        drop(rx);
    }
}
