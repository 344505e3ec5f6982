//! A small model server stand-in for testing the broker on any machine: it allocates and
//! touches its size of memory on load and gives it back to the kernel on unload.
//!
//! `memwarden-test-consumer --size 64MiB [--mode normal|lying|crash|slow|stubborn] [--port N]
//! [--loaded]` prints `listening on PORT` once it accepts connections. Routes: `POST /load`,
//! `POST /unload` (a lying consumer answers 200 and keeps the memory; a slow one frees it
//! 1.5 s later; a stubborn one keeps it until a second unload), `GET /health`,
//! `ANY /work?ms=N` (a crashing consumer exits in the middle of it), `GET /stream?n=N`
//! (server-sent events), `POST /echo`, `GET /upgrade` (a protocol upgrade that echoes),
//! `GET /forwarded-for`, `ANY /` and `ANY /path/…` (the path and query they were asked for),
//! `POST /v1/…` (its name, path and the body it was sent), and Ollama's `GET /api/ps` and
//! `POST /api/generate` with `keep_alive: 0` (its one model, `NAME:latest`, unloaded).
//!
//! With `--vram-file PATH` its size is held on a stand-in GPU instead: the bytes it holds
//! there (1 MiB of context, and its weights while loaded and awake) are written to PATH, from
//! which a test's fake `/proc` and sysfs make the driver's figures. It then also speaks the
//! sleep routes of vLLM (`POST /sleep?level=1|2`, `POST /wake_up`, `GET /is_sleeping`,
//! `POST /collective_rpc`) and SGLang (`POST /release_memory_occupation`,
//! `POST /resume_memory_occupation`): a level-1 sleep moves its weights into host RAM (memory
//! it allocates and touches), a level-2 sleep drops them; a lying consumer answers a sleep
//! with 200 and keeps them on the GPU. `--load-ms N` makes a load take that long, as reading
//! a model from disk does.
//!
//! `memwarden-test-consumer --forward-to PORT [--port N]` is a plain TCP forwarder to
//! 127.0.0.1:PORT instead, as docker-proxy stands in front of a container's server: run
//! through a link named `docker-proxy`, it owns the port under that name.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Lying,
    Crash,
    /// Answers the unload at once and frees the memory 1.5 s later (as ComfyUI frees between
    /// prompts).
    Slow,
    /// Keeps the memory at the first unload and frees it at the next.
    Stubborn,
}

/// Memory mapped straight from the kernel, so that unmapping it really gives it back (a
/// `Vec` freed through malloc may stay in the process).
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is owned by one value and only unmapped on drop.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(len: usize) -> Option<Mapping> {
        if len == 0 {
            return Some(Mapping {
                ptr: std::ptr::null_mut(),
                len,
            });
        }
        // SAFETY: an anonymous private mapping with no address hint.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // Touch every page so the memory is resident, as a loaded model's weights are.
        let bytes = ptr as *mut u8;
        let mut off = 0;
        while off < len {
            // SAFETY: off < len, inside the mapping.
            unsafe { bytes.add(off).write_volatile(1) };
            off += 4096;
        }
        Some(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: ptr/len are the mapping made in `new`.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

struct Consumer {
    size: usize,
    mode: Mode,
    name: String,
    held: Mutex<Option<Mapping>>,
    /// What a lying consumer keeps after saying it unloaded.
    kept: Mutex<Vec<Mapping>>,
    /// The stand-in GPU, when there is one.
    gpu: Option<Gpu>,
    load_ms: u64,
}

/// A stand-in GPU: what the consumer holds there is a number written to a file.
struct Gpu {
    file: std::path::PathBuf,
    state: Mutex<GpuState>,
}

#[derive(Default)]
struct GpuState {
    /// Its weights are on the GPU.
    loaded: bool,
    /// 0 awake, else the level it sleeps at.
    asleep: u8,
    /// Its weights in host RAM while it sleeps at level 1.
    host: Option<Mapping>,
}

/// What a server holds on a GPU whatever it does: its runtime's context.
const CONTEXT: u64 = 1 << 20;

impl Gpu {
    /// Writes what it holds now, whole (the reader must never see half a number).
    fn publish(&self, size: usize, st: &GpuState) {
        let held = CONTEXT + if st.loaded { size as u64 } else { 0 };
        let tmp = self.file.with_extension("new");
        if std::fs::write(&tmp, held.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &self.file);
        }
    }
}

type App = Arc<Consumer>;

fn usage(msg: &str) -> ! {
    eprintln!("memwarden-test-consumer: {msg}");
    eprintln!(
        "usage: memwarden-test-consumer --size SIZE [--mode normal|lying|crash|slow|stubborn] [--port N] [--loaded] [--name NAME] [--vram-file PATH] [--load-ms N]"
    );
    eprintln!("       memwarden-test-consumer --forward-to PORT [--port N]");
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut size = None;
    let mut mode = Mode::Normal;
    let mut port = 0u16;
    let mut loaded = false;
    let mut name = String::from("consumer");
    let mut forward_to = None;
    let mut vram_file = None;
    let mut load_ms = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--size" => {
                let v = val();
                size = Some(
                    memwarden_probe::size::parse_size(&v).unwrap_or_else(|e| usage(&e.to_string()))
                        as usize,
                );
            }
            "--mode" => {
                mode = match val().as_str() {
                    "normal" => Mode::Normal,
                    "lying" => Mode::Lying,
                    "crash" => Mode::Crash,
                    "slow" => Mode::Slow,
                    "stubborn" => Mode::Stubborn,
                    m => usage(&format!("unknown mode {m:?}")),
                }
            }
            "--port" => port = val().parse().unwrap_or_else(|_| usage("bad port")),
            "--name" => name = val(),
            "--loaded" => loaded = true,
            "--vram-file" => vram_file = Some(std::path::PathBuf::from(val())),
            "--load-ms" => load_ms = val().parse().unwrap_or_else(|_| usage("bad --load-ms")),
            "--forward-to" => {
                forward_to = Some(val().parse().unwrap_or_else(|_| usage("bad port")));
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if let Some(to) = forward_to {
        return forward(port, to).await;
    }
    let size = size.unwrap_or_else(|| usage("--size is required"));
    let app = Arc::new(Consumer {
        size,
        mode,
        name,
        held: Mutex::new(None),
        kept: Mutex::new(Vec::new()),
        gpu: vram_file.map(|file| Gpu {
            file,
            state: Mutex::default(),
        }),
        load_ms,
    });
    if let Some(g) = &app.gpu {
        g.publish(app.size, &g.state.lock().expect("lock"));
    }
    if loaded {
        load(State(Arc::clone(&app))).await;
    }
    let router = Router::new()
        .route("/load", post(load))
        .route("/unload", post(unload))
        .route("/health", get(|| async { "ok" }))
        .route("/work", any(work))
        .route("/stream", get(stream))
        .route("/echo", post(|b: Bytes| async move { b }))
        .route("/", any(|uri: Uri| async move { uri.to_string() }))
        .route(
            "/path/{*rest}",
            any(|uri: Uri| async move { uri.to_string() }),
        )
        .route("/v1/{*rest}", post(openai))
        .route("/api/ps", get(ollama_ps))
        .route("/api/generate", post(ollama_generate))
        .route("/sleep", post(vllm_sleep))
        .route("/wake_up", post(wake))
        .route("/is_sleeping", get(is_sleeping))
        .route("/collective_rpc", post(|| async { "{}" }))
        .route("/release_memory_occupation", post(sglang_release))
        .route("/resume_memory_occupation", post(wake))
        .route("/upgrade", get(upgrade))
        .route(
            "/forwarded-for",
            get(|h: axum::http::HeaderMap| async move {
                h.get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(app);
    let listener = listen(port).await;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("memwarden-test-consumer: {e}");
        std::process::exit(1);
    }
}

/// An OpenAI-style route: who answered, for which path, and the body it was sent.
async fn openai(State(app): State<App>, uri: Uri, body: Bytes) -> String {
    format!("{} {uri} {}", app.name, String::from_utf8_lossy(&body))
}

/// Binds 127.0.0.1:`port` (0: one the OS picks) and says which port on the first line of
/// stdout, where the tests read it.
async fn listen(port: u16) -> tokio::net::TcpListener {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| usage(&format!("cannot listen: {e}")));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    println!("listening on {port}");
    let _ = std::io::stdout().flush();
    listener
}

/// Copies every connection on `port` to 127.0.0.1:`to` and back.
async fn forward(port: u16, to: u16) {
    let listener = listen(port).await;
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}

async fn load(State(app): State<App>) -> Response {
    if app.load_ms > 0 {
        tokio::time::sleep(Duration::from_millis(app.load_ms.min(60_000))).await;
    }
    if let Some(g) = &app.gpu {
        let mut st = g.state.lock().expect("lock");
        *st = GpuState {
            loaded: true,
            ..GpuState::default()
        };
        g.publish(app.size, &st);
        return (StatusCode::OK, "loaded").into_response();
    }
    let mut held = app.held.lock().expect("lock");
    if held.is_none() {
        match Mapping::new(app.size) {
            Some(m) => *held = Some(m),
            None => return (StatusCode::INSUFFICIENT_STORAGE, "cannot allocate").into_response(),
        }
    }
    (StatusCode::OK, "loaded").into_response()
}

async fn unload(State(app): State<App>) -> Response {
    if let Some(g) = &app.gpu {
        let mut st = g.state.lock().expect("lock");
        if app.mode != Mode::Lying {
            *st = GpuState::default();
        }
        g.publish(app.size, &st);
        return (StatusCode::OK, "unloaded").into_response();
    }
    let taken = app.held.lock().expect("lock").take();
    match (taken, app.mode) {
        (Some(m), Mode::Lying | Mode::Stubborn) => app.kept.lock().expect("lock").push(m),
        (None, Mode::Stubborn) => app.kept.lock().expect("lock").clear(),
        (Some(m), Mode::Slow) => {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                drop(m);
            });
        }
        _ => {}
    }
    (StatusCode::OK, "unloaded").into_response()
}

/// Ollama's list of loaded models: one, `NAME:latest`, while loaded.
async fn ollama_ps(State(app): State<App>) -> Response {
    let loaded = app.held.lock().expect("lock").is_some();
    let models: Vec<_> = (loaded.then(|| format!("{}:latest", app.name)).into_iter())
        .map(|name| serde_json::json!({ "name": name, "model": name }))
        .collect();
    axum::Json(serde_json::json!({ "models": models })).into_response()
}

#[derive(serde::Deserialize)]
struct Generate {
    model: String,
    keep_alive: Option<i64>,
}

/// Ollama's unload: `{"model": NAME, "keep_alive": 0}` lets the model go (as an unload does in
/// this consumer's mode); other generation is not served here.
async fn ollama_generate(State(app): State<App>, body: Bytes) -> Response {
    // Ollama reads the body as JSON whatever its content type says.
    let Ok(g) = serde_json::from_slice::<Generate>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a generate request").into_response();
    };
    if g.model != format!("{}:latest", app.name) {
        return (StatusCode::NOT_FOUND, "model not found").into_response();
    }
    if g.keep_alive != Some(0) {
        return (StatusCode::BAD_REQUEST, "only unloading is served").into_response();
    }
    unload(State(app)).await
}

#[derive(serde::Deserialize)]
struct SleepQuery {
    level: Option<u8>,
}

/// vLLM's `POST /sleep?level=N`.
async fn vllm_sleep(State(app): State<App>, Query(q): Query<SleepQuery>) -> Response {
    match q.level.unwrap_or(1) {
        level @ (1 | 2) => sleep(&app, level),
        _ => (StatusCode::BAD_REQUEST, "level is 1 or 2").into_response(),
    }
}

/// SGLang's memory release, which keeps the weights in host RAM (as with its CPU backup).
async fn sglang_release(State(app): State<App>) -> Response {
    sleep(&app, 1)
}

/// Gives the GPU memory back: the weights go to host RAM (level 1) or are dropped (level 2).
/// A lying consumer answers as though it did, and keeps them where they are.
fn sleep(app: &App, level: u8) -> Response {
    let Some(g) = &app.gpu else {
        return (StatusCode::NOT_FOUND, "no sleep mode without --vram-file").into_response();
    };
    let mut st = g.state.lock().expect("lock");
    if app.mode != Mode::Lying && st.asleep == 0 {
        if level == 1 && st.loaded {
            match Mapping::new(app.size) {
                Some(m) => st.host = Some(m),
                None => {
                    return (StatusCode::INSUFFICIENT_STORAGE, "cannot allocate").into_response();
                }
            }
        }
        st.loaded = false;
        st.asleep = level;
        g.publish(app.size, &st);
    }
    (StatusCode::OK, "asleep").into_response()
}

/// vLLM's `POST /wake_up` and SGLang's resume: the weights back on the GPU, host RAM freed.
async fn wake(State(app): State<App>) -> Response {
    let Some(g) = &app.gpu else {
        return (StatusCode::NOT_FOUND, "no sleep mode without --vram-file").into_response();
    };
    let mut st = g.state.lock().expect("lock");
    if st.asleep > 0 {
        *st = GpuState {
            loaded: true,
            ..GpuState::default()
        };
        g.publish(app.size, &st);
    }
    (StatusCode::OK, "awake").into_response()
}

async fn is_sleeping(State(app): State<App>) -> Response {
    let asleep = app
        .gpu
        .as_ref()
        .is_some_and(|g| g.state.lock().expect("lock").asleep > 0);
    axum::Json(serde_json::json!({ "is_sleeping": asleep })).into_response()
}

#[derive(serde::Deserialize)]
struct WorkQuery {
    ms: Option<u64>,
    n: Option<u32>,
}

async fn work(State(app): State<App>, Query(q): Query<WorkQuery>) -> Response {
    if app.mode == Mode::Crash {
        // Dies with the request read and no answer sent, as a server that runs out of memory.
        std::process::exit(3);
    }
    if let Some(ms) = q.ms {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let loaded = match &app.gpu {
        Some(g) => g.state.lock().expect("lock").loaded,
        None => app.held.lock().expect("lock").is_some(),
    };
    format!("{} ok loaded={loaded}\n", app.name).into_response()
}

/// A protocol upgrade (`Upgrade: echo`): after the 101, every byte sent comes back.
async fn upgrade(mut req: axum::extract::Request) -> Response {
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(up) = on.await {
            let io = hyper_util::rt::TokioIo::new(up);
            let (mut r, mut w) = tokio::io::split(io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::UPGRADE, "echo"), (header::CONNECTION, "upgrade")],
    )
        .into_response()
}

async fn stream(State(app): State<App>, Query(q): Query<WorkQuery>) -> Response {
    let n = q.n.unwrap_or(3).min(1000);
    let name = app.name.clone();
    let events = futures_util::stream::unfold(0u32, move |i| {
        let name = name.clone();
        async move {
            if i >= n {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let ev = Bytes::from(format!("data: {name} {i}\n\n"));
            Some((Ok::<_, std::convert::Infallible>(ev), i + 1))
        }
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(events),
    )
        .into_response()
}
