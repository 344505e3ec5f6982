//! The HTTP API: the proxy (`/c/{consumer}/…`), leases, status, admin actions, metrics and the
//! scheduler's liveness check.

mod leases;
mod page;
mod proxy;
mod streams;
mod upload;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use memwarden_probe::Snapshot;
use serde_json::json;
use tower_service::Service;

use crate::config::Config;
use crate::handle::{Broker, Permit};
use crate::owner::{AdmitError, Shared};
use leases::{create_lease, delete_lease, list_leases, renew_lease};
use proxy::{by_model, forward, models};
use streams::{consumer_logs, events};

use crate::body_budget::BodyBudget;

/// What the handlers share.
pub struct App {
    pub broker: Broker,
    pub shared: Arc<Shared>,
    /// The configuration in force (replaced on reload).
    pub config: RwLock<Arc<Config>>,
    pub leases: Mutex<HashMap<String, Lease>>,
    snapshot: tokio::sync::Mutex<Option<(Instant, Arc<Snapshot>)>>,
    /// Ticks once a second ([`App::tick_clock`]): what the bounds of proxied requests wait on.
    clock: tokio::sync::watch::Sender<()>,
    /// What the body prefixes held by [`by_model`] (to find their model) may take together.
    bodies: Arc<BodyBudget>,
    /// Set once the broker shuts down: streams that would never end by themselves (a followed
    /// log) end then, rather than hold the shutdown for its whole grace.
    closing: tokio::sync::watch::Sender<bool>,
}

pub struct Lease {
    pub consumer: String,
    pub expires: Instant,
    /// The ttl it was taken with: what a renewal without a ttl extends it by.
    pub ttl: Duration,
    _permit: Permit,
}

impl App {
    pub fn new(broker: Broker, shared: Arc<Shared>, config: Arc<Config>) -> Arc<App> {
        Arc::new(App {
            broker,
            shared,
            config: RwLock::new(config),
            leases: Mutex::new(HashMap::new()),
            snapshot: tokio::sync::Mutex::new(None),
            clock: tokio::sync::watch::Sender::new(()),
            bodies: BodyBudget::new(crate::body_budget::TOTAL_BUFFERED),
            closing: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Ends every endless stream (see [`App::closing`]).
    pub fn end_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`App::end_streams`] has been called.
    fn streams_end(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|&closing| closing).await;
        }
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().expect("config lock"))
    }

    /// Wakes the requests waiting for their upstream's answer to check their deadline.
    pub fn tick_clock(&self) {
        self.clock.send_replace(());
    }

    /// Resolves once `deadline` has passed, seen at the clock's one-second ticks. A tokio timer
    /// per proxied request would be registered on the runtime's timer wheel, shared by all its
    /// workers, and taken off again when the answer comes, for a deadline that almost never
    /// fires and is minutes long: one tick a second serves them all.
    async fn past(&self, deadline: Instant) {
        let mut tick = self.clock.subscribe();
        while Instant::now() < deadline {
            if tick.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Drops the leases whose time is up.
    pub fn expire_leases(&self) -> usize {
        let now = Instant::now();
        let mut leases = self.leases.lock().expect("lease lock");
        let before = leases.len();
        leases.retain(|_, l| l.expires > now);
        before - leases.len()
    }
}

/// The service the server runs. Proxied requests (`/c/{consumer}/…`, nearly all of the
/// traffic) go straight to the proxy; the rest through the router. The router's matching,
/// extractors and middleware cost a proxied request about as much CPU as a fifth of the
/// whole hop (measured with the proxy bench), for a prefix one comparison tells apart.
#[derive(Clone)]
pub struct Front {
    app: Arc<App>,
    router: Router,
}

impl Front {
    pub fn new(app: Arc<App>) -> Front {
        Front {
            router: router(Arc::clone(&app)),
            app,
        }
    }
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match crate::proxy_path::proxied(req.uri()) {
            Some((consumer, Ok(path))) => {
                let app = Arc::clone(&self.app);
                Box::pin(async move { Ok(forward(app, consumer, path, req).await) })
            }
            Some((_, Err(why))) => {
                let r = error(StatusCode::BAD_REQUEST, why.to_string());
                Box::pin(async move { Ok(r) })
            }
            None => Box::pin(self.router.call(req)),
        }
    }
}

/// Everything but the proxy (see [`Front`]).
fn router(app: Arc<App>) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/leases", post(create_lease).get(list_leases))
        .route("/v1/leases/{id}", delete(delete_lease))
        .route("/v1/leases/{id}/renew", post(renew_lease))
        .route("/v1/consumers/{name}/load", post(admin_load))
        .route("/v1/consumers/{name}/unload", post(admin_unload))
        .route("/v1/consumers/{name}/logs", get(consumer_logs))
        .route("/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/{*openai}", post(by_model))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(page::page))
        .route("/ui", get(page::page))
        .merge(protected)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route".into()) })
        .with_state(app)
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, axum::Json(json!({ "error": msg }))).into_response()
}

fn admit_error(e: &AdmitError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = error(status, e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match refused(&app.config(), req.headers()) {
        Some(r) => r,
        None => next.run(req).await,
    }
}

/// The 401 answer for a request without the bearer token the configuration asks for.
fn refused(cfg: &Config, headers: &HeaderMap) -> Option<Response> {
    let token = cfg.server.token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        return None;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "a bearer token is required".into(),
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    if app.broker.ping(Duration::from_secs(2)).await {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler does not answer".into(),
        )
    }
}

async fn status(State(app): State<Arc<App>>) -> Response {
    match app.broker.status().await {
        Some(s) => axum::Json(s).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler does not answer".into(),
        ),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let status = app.broker.status().await;
    let snap = snapshot(&app).await;
    let text = crate::metrics::render(status.as_ref(), snap.as_deref());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The machine's snapshot, read at most once a second however often it is scraped.
async fn snapshot(app: &Arc<App>) -> Option<Arc<Snapshot>> {
    let mut cache = app.snapshot.lock().await;
    if let Some((at, s)) = cache.as_ref()
        && at.elapsed() < Duration::from_secs(1)
    {
        return Some(Arc::clone(s));
    }
    let shared = Arc::clone(&app.shared);
    let snap = tokio::task::spawn_blocking(move || shared.probe.lock().ok()?.snapshot().ok())
        .await
        .ok()
        .flatten()
        .map(Arc::new)?;
    *cache = Some((Instant::now(), Arc::clone(&snap)));
    Some(snap)
}

async fn admin_load(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    // A turn that is given back at once: the consumer is loaded (evicting what it must) and
    // stays loaded.
    match app.broker.acquire(&name).await {
        Ok(_permit) => axum::Json(json!({ "consumer": name, "state": "loaded" })).into_response(),
        Err(e) => admit_error(&e),
    }
}

async fn admin_unload(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let wait = crate::owner::unload_bound(&app.config(), &name);
    match app.broker.admin_unload(&name, wait).await {
        Ok(msg) => (StatusCode::ACCEPTED, axum::Json(json!({ "result": msg }))).into_response(),
        Err((code, msg)) => error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::CONFLICT),
            msg,
        ),
    }
}
