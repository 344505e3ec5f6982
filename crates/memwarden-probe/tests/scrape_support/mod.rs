//! Real HTTP servers on 127.0.0.1 for the scraper tests, run by this very process (so that
//! the port-ownership rule lets our own pid through), and a clock the tests move by hand.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::routing::get;
use memwarden_probe::HostRoot;
use memwarden_probe::scrape::Clock;

pub struct TestServer {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl TestServer {
    /// How many requests the server has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Serves `router` on `ip`, port 0, counting every request.
pub fn serve_on(ip: IpAddr, router: Router) -> TestServer {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            next.run(req).await
        }
    }));
    let std_listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(std_listener).unwrap()
    };
    rt.spawn(async move { axum::serve(listener, router).await });
    TestServer {
        addr,
        hits,
        _rt: rt,
    }
}

pub fn serve(router: Router) -> TestServer {
    serve_on(IpAddr::V4(Ipv4Addr::LOCALHOST), router)
}

/// A server answering `body` with `content_type` at `path`.
pub fn serve_fixed(path: &str, content_type: &'static str, body: &'static str) -> TestServer {
    serve(Router::new().route(
        path,
        get(move || async move { ([(CONTENT_TYPE, content_type)], body) }),
    ))
}

pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const JSON: &str = "application/json";

pub fn me() -> u32 {
    std::process::id()
}

pub fn root() -> HostRoot {
    HostRoot::system()
}

/// A clock that moves only when told.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock(Arc::new(Mutex::new(Instant::now())))
    }

    pub fn advance(&self, by: std::time::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}
