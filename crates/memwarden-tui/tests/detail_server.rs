//! The detail pane asks the selected process's inference server for its figures: a real HTTP
//! server on 127.0.0.1, owned by this test process, answering as vLLM does.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Instant;

use memwarden_probe::framework::Framework;
use memwarden_probe::incremental::Sampler;
use memwarden_probe::scrape::{ScrapeConfig, Scraper};
use memwarden_probe::snapshot::{HostMemory, Process, ProcessGpu, Snapshot};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};
use memwarden_tui::app::App;
use memwarden_tui::live::Event;
use memwarden_tui::theme::ThemeName;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const VLLM_METRICS: &str =
    include_str!("../../memwarden-probe/tests/scrape_samples/vllm_v1_metrics.txt");

/// Answers every request with the metrics, until the test ends.
fn serve_metrics() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{VLLM_METRICS}",
                VLLM_METRICS.len()
            );
            let _ = s.write_all(reply.as_bytes());
        }
    });
    port
}

#[test]
fn the_detail_pane_shows_what_the_server_says() {
    let port = serve_metrics();
    let root = HostRoot::system();
    let me = memwarden_tui::kill::identity_now(&root, std::process::id()).unwrap();
    let p = Process {
        pid: me.pid,
        starttime: me.starttime,
        ppid: None,
        uid: Some(0),
        name: "python3".into(),
        cmdline: format!("python3 -m vllm.entrypoints.openai.api_server --port {port}"),
        rss_bytes: Some(1 << 30),
        cgroup: None,
        gpu: vec![ProcessGpu {
            gpu_index: 0,
            vram_bytes: Some(20 << 30),
            gtt_bytes: None,
        }],
        framework: Some(Framework::Vllm),
        cpu_percent: None,
        gpu_utilization_percent: None,
    };
    let mut scraper = Scraper::new(ScrapeConfig::default());
    let server = scraper
        .scrape_process(&root, p.pid, &p.cmdline, Framework::Vllm)
        .map(|r| r.map_err(|e| e.to_string()));
    let extras = memwarden_tui::live::extras(&root, &p, server);
    let m = match &extras.server {
        Some(Ok(m)) => m.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(m.requests_running, Some(3));
    assert_eq!(m.requests_waiting, Some(7));
    assert!(extras.ports.contains(&port), "{extras:?}");

    let snap = Snapshot {
        version: 1,
        taken_at_ms: 1,
        hostname: "here".into(),
        host: HostMemory {
            mem_total_bytes: 64 << 30,
            mem_available_bytes: 32 << 30,
            ..Default::default()
        },
        gpus: vec![],
        processes: vec![p],
        workloads: vec![],
        numa: vec![],
        notes: vec![],
    };
    let mut app = App::new(ThemeName::Dark, true, 60);
    app.ingest(snap);
    app.on_key(
        KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE),
        Instant::now(),
    );
    app.extras = extras;
    let mut term = Terminal::new(TestBackend::new(160, 40)).unwrap();
    term.draw(|f| memwarden_tui::ui::draw(f, &app, Instant::now()))
        .unwrap();
    let buf = term.backend().buffer().clone();
    let text: String = (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
                + "\n"
        })
        .collect();
    assert!(text.contains("server    vLLM"), "{text}");
    assert!(text.contains("3 running · 7 waiting"), "{text}");
    assert!(text.contains(&format!("listens   {port}")), "{text}");
}

/// A vLLM look-alike in its own process: Python's HTTP server answering with vLLM's metrics.
const FAKE_VLLM: &str = r#"
import http.server, sys
body = open(sys.argv[1], 'rb').read()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
print(s.server_port, flush=True)
s.serve_forever()
"#;

#[test]
fn the_live_thread_brings_the_selected_servers_figures() {
    use std::io::BufRead;
    assert!(
        std::process::Command::new("python3")
            .arg("-V")
            .output()
            .is_ok(),
        "python3 is not installed: `apt-get install python3` (or `bash .ci/setup`) installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.txt");
    std::fs::write(&metrics, VLLM_METRICS).unwrap();
    // Laid out like vLLM's entry point, so its command line names it as vLLM's does.
    let script = dir.path().join("vllm/entrypoints/openai/api_server.py");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, FAKE_VLLM).unwrap();
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg(&metrics)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let root = HostRoot::system();
    let id = memwarden_tui::kill::identity_now(&root, child.id()).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let sampler = Sampler::new(Probe::new(root, GpuSourceKind::None));
    let control = memwarden_tui::live::spawn(sampler, std::time::Duration::from_millis(200), tx);
    control.set_focus(Some(id));
    let mut got = None;
    for _ in 0..25 {
        if let Ok(Event::Sample(s, extras)) = rx.recv_timeout(std::time::Duration::from_secs(5))
            && let Some(Ok(m)) = &extras.server
        {
            assert!(s.servers.contains_key(&id.pid));
            got = Some((m.clone(), extras.ports.clone()));
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (m, ports) = got.expect("the server's figures reach the detail pane");
    assert_eq!(m.requests_running, Some(3));
    assert_eq!(m.requests_waiting, Some(7));
    assert!(ports.contains(&port), "{ports:?}");
}
