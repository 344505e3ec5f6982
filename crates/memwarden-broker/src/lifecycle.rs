//! Loading and unloading consumers: their HTTP routes, the processes the broker runs itself,
//! and the health wait. Every call here has a bound.

use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use memwarden_probe::error_chain;
use memwarden_probe::sanitize::sanitize;
use serde::Deserialize;
use tokio::process::{Child, Command};

use crate::config::{ConsumerConfig, Route, Upstream};
use crate::human;

pub type HttpClient = Client<HttpConnector, Body>;

/// A pooled HTTP/1 client for upstreams (keep-alive matters for the proxy's overhead).
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Calls a route and returns its status when it is a success, or why not.
pub async fn call_route(
    client: &HttpClient,
    up: &Upstream,
    route: &Route,
    timeout: Duration,
) -> Result<u16, String> {
    let call = exchange(client, up, &route.method, &route.path, route.body.clone());
    let (status, _) = tokio::time::timeout(timeout, call).await.map_err(|_| {
        format!(
            "{} {} did not answer within {}",
            route.method,
            up.url(&route.path),
            human::duration(timeout)
        )
    })??;
    Ok(status)
}

/// One request to an upstream: the status of a success and its body, or why not (a JSON body
/// is sent as such).
async fn exchange(
    client: &HttpClient,
    up: &Upstream,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, Bytes), String> {
    let what = format!("{method} {}", up.url(path));
    let mut req = Request::builder()
        .method(method)
        .uri(up.url(path))
        .header(hyper::header::HOST, up.authority());
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Body::from(body.unwrap_or_default()))
        .map_err(|e| format!("bad route {method} {path}: {e}"))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("{what}: {}", error_chain(&e)))?;
    let status = resp.status();
    // Read to the end, so that the connection can be reused.
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status.is_success() {
        Ok((status.as_u16(), body))
    } else {
        Err(format!("{what} answered {status}"))
    }
}

/// Unloads every model an Ollama server has loaded: the models `GET /api/ps` lists, each by
/// `POST /api/generate {"model": NAME, "keep_alive": 0}` (Ollama has no route that unloads
/// them all). Whether the memory came back is for the caller's measurement to say.
pub async fn unload_ollama(
    client: &HttpClient,
    up: &Upstream,
    timeout: Duration,
) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Ps {
        #[serde(default)]
        models: Option<Vec<Loaded>>,
    }
    #[derive(Deserialize)]
    struct Loaded {
        name: String,
    }
    let run = async {
        let (_, body) = exchange(client, up, "GET", "/api/ps", None).await?;
        let ps: Ps = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "GET {} is not Ollama's list of loaded models: {e}",
                up.url("/api/ps")
            )
        })?;
        for m in ps.models.unwrap_or_default() {
            let unload = serde_json::json!({ "model": m.name, "keep_alive": 0 }).to_string();
            exchange(client, up, "POST", "/api/generate", Some(unload))
                .await
                .map_err(|e| format!("unloading {:?}: {e}", sanitize(&m.name, 80)))?;
        }
        Ok(())
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| {
        format!(
            "Ollama at {} did not unload its models within {}",
            up.authority(),
            human::duration(timeout)
        )
    })?
}

/// Waits until the consumer answers: its health route with a success, or, without one, its
/// upstream accepting connections. Polls every 100 ms until `deadline`.
pub async fn wait_ready(
    client: &HttpClient,
    c: &ConsumerConfig,
    deadline: Instant,
    child: Option<&mut Child>,
) -> Result<(), String> {
    let Some(up) = &c.upstream else {
        return Ok(());
    };
    let mut child = child;
    loop {
        let step = match &c.health {
            Some(h) => call_route(client, up, h, Duration::from_secs(2))
                .await
                .map(|_| ()),
            None => tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(up.authority()),
            )
            .await
            .map_err(|_| "connect timed out".to_string())
            .and_then(|r| {
                r.map(|_| ())
                    .map_err(|e| format!("{}: {e}", up.authority()))
            }),
        };
        let last = match step {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if let Some(ch) = child.as_deref_mut()
            && let Ok(Some(status)) = ch.try_wait()
        {
            return Err(format!("its process exited while loading ({status})"));
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready in time: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback port nothing listens on now, other than those in `taken` (the ports other
/// consumers' starts were given, which may not be listening yet): for a start command's
/// `${PORT}`. The server binds it a moment later; another process taking it first in between
/// fails that load, and the next load chooses again.
pub fn free_port(taken: &[u16]) -> Result<u16, String> {
    for _ in 0..64 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port for ${{PORT}}: {e}"))?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err("cannot find a free port for ${PORT}: every one offered was taken".into())
}

/// A command with `${PORT}` put in.
pub fn with_port(cmd: &[String], port: u16) -> Vec<String> {
    let port = port.to_string();
    cmd.iter()
        .map(|w| w.replace(crate::config::PORT, &port))
        .collect()
}

/// Starts a consumer's process in a process group of its own, so that stopping it reaches
/// every process it started.
pub fn start_process(cmd: &[String]) -> Result<Child, String> {
    let (prog, args) = cmd.split_first().ok_or("empty start command")?;
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("cannot start {prog:?}: {e}"))
}

/// [`start_process`] with the process's stdout and stderr read into the consumer's log ring
/// (and the broker's log), instead of mixed unmarked into the broker's own output.
pub fn start_logged(
    cmd: &[String],
    name: &str,
    ring: std::sync::Arc<crate::logs::LogRing>,
) -> Result<Child, String> {
    let (prog, args) = cmd.split_first().ok_or("empty start command")?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| format!("cannot start {prog:?}: {e}"))?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(crate::logs::pump(name.to_string(), out, ring.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(crate::logs::pump(name.to_string(), err, ring));
    }
    Ok(child)
}

/// Stops a process group: the `stop` command if there is one, else SIGTERM; SIGKILL when it
/// has not exited within `grace`.
pub async fn stop_process(child: &mut Child, stop: Option<&[String]>, grace: Duration) {
    let Some(pid) = child.id() else {
        return; // already reaped
    };
    let pgid = pid as i32;
    let asked = match stop {
        Some(cmd) => match start_process(cmd) {
            Ok(mut s) => tokio::time::timeout(grace, s.wait()).await.is_ok(),
            Err(_) => false,
        },
        None => false,
    };
    if !asked {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
    // Children of the leader may outlive it; they are in its group.
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}
