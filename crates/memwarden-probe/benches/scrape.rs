//! What framework detection and server scraping cost a snapshot, measured side by side in one
//! run: detection from the command line, from a large Python process's maps (read from a
//! file) and from the cache; parsing a vLLM metrics page; and a scrape that asks a real local
//! server, its port-owner check alone, and a scrape answered within the 5 s interval.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use memwarden_probe::HostRoot;
use memwarden_probe::framework::{Framework, FrameworkCache, detect, detect_process};
use memwarden_probe::scrape::guard::{pid_serves, pid_serves_procfs};
use memwarden_probe::scrape::{Clock, MIN_INTERVAL, ScrapeConfig, Scraper, ServerKind};
use memwarden_probe::snapshot::ProcessId;

const VLLM_METRICS: &str = include_str!("../tests/scrape_samples/vllm_v1_metrics.txt");

/// The maps of a large Python process: 800 shared objects of site-packages, four segments
/// each, anonymous mappings between them, and libtorch near the end (about 5,000 lines).
fn python_maps() -> String {
    let mut out = String::new();
    let mut addr = 0x7f00_0000_0000u64;
    let mut line = |path: &str| {
        out.push_str(&format!(
            "{:x}-{:x} r-xp 00000000 103:02 1234567    {path}\n",
            addr,
            addr + 0x1000
        ));
        addr += 0x1000;
    };
    for i in 0..800 {
        let path = format!(
            "/home/u/.venv/lib/python3.12/site-packages/pkg{i}/_native{i}.cpython-312-x86_64-linux-gnu.so"
        );
        for _ in 0..4 {
            line(&path);
        }
        line("");
        line("[anon:python]");
    }
    for _ in 0..4 {
        line("/home/u/.venv/lib/python3.12/site-packages/torch/lib/libtorch_cuda.so");
    }
    out
}

#[derive(Clone)]
struct ManualClock(Arc<Mutex<Instant>>);

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

fn bench(c: &mut Criterion) {
    let maps = python_maps();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc/4242")).unwrap();
    std::fs::write(dir.path().join("proc/4242/maps"), &maps).unwrap();
    let root = HostRoot::new(dir.path()).unwrap();
    assert_eq!(detect("python3 train.py", &maps), Framework::Pytorch);

    let mut g = c.benchmark_group("framework");
    g.bench_function("cmdline (vllm serve)", |b| {
        b.iter(|| detect_process(&root, 4242, black_box("/venv/bin/vllm serve Qwen/Qwen3-8B")))
    });
    g.bench_function("maps of a large Python process", |b| {
        b.iter(|| detect_process(&root, 4242, black_box("python3 train.py")))
    });
    g.bench_function("maps text in memory", |b| {
        b.iter(|| detect(black_box("python3 train.py"), black_box(&maps)))
    });
    let mut cache = FrameworkCache::new();
    let id = ProcessId {
        pid: 4242,
        starttime: 99,
    };
    g.bench_function("cache hit", |b| {
        b.iter(|| cache.get_or_detect(&root, black_box(id), "python3 train.py"))
    });
    g.finish();

    let mut g = c.benchmark_group("scrape");
    g.bench_function("parse vLLM metrics page", |b| {
        b.iter(|| ServerKind::Vllm.parse(black_box(VLLM_METRICS)).unwrap())
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr: SocketAddr = std_listener.local_addr().unwrap();
    let listener = {
        let _g = rt.enter();
        tokio::net::TcpListener::from_std(std_listener).unwrap()
    };
    let app = Router::new().route("/metrics", get(|| async { VLLM_METRICS }));
    rt.spawn(async move { axum::serve(listener, app).await });

    let system = HostRoot::system();
    let me = std::process::id();
    let clock = ManualClock(Arc::new(Mutex::new(Instant::now())));
    let mut scraper = Scraper::with_clock(ScrapeConfig::default(), Box::new(clock.clone()));
    g.bench_function("request to a local server", |b| {
        b.iter(|| {
            *clock.0.lock().unwrap() += MIN_INTERVAL;
            scraper.scrape(&system, me, ServerKind::Vllm, addr).unwrap()
        })
    });
    g.bench_function("port owner check by netlink (IPv4 listener)", |b| {
        b.iter(|| assert!(pid_serves(&system, me, black_box(addr))))
    });
    g.bench_function("port owner check from /proc (the fallback)", |b| {
        b.iter(|| assert!(pid_serves_procfs(&system, me, black_box(addr))))
    });
    g.bench_function("within the interval (last answer)", |b| {
        b.iter(|| {
            *clock.0.lock().unwrap() += Duration::from_nanos(1);
            scraper.scrape(&system, me, ServerKind::Vllm, addr).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
