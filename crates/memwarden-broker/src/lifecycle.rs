//! Loading and unloading consumers: their HTTP routes, the processes the broker runs itself,
//! and the health wait. Every call here has a bound.

use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use memwarden_probe::error_chain;
use tokio::process::{Child, Command};

use crate::config::{ConsumerConfig, Route, Upstream};

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
    let body = route.body.clone().unwrap_or_default();
    let mut req = Request::builder()
        .method(route.method.as_str())
        .uri(up.url(&route.path))
        .header(hyper::header::HOST, up.authority());
    if route.body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Body::from(body))
        .map_err(|e| format!("bad route {} {}: {e}", route.method, route.path))?;
    let what = format!("{} {}", route.method, up.url(&route.path));
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("{what}: {}", error_chain(&e)))?;
        let status = resp.status();
        // Read the body so that the connection can be reused; its content is not needed.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(format!("{what} answered {status}"))
        }
    };
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        format!(
            "{what} did not answer within {}",
            crate::human::duration(timeout)
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
