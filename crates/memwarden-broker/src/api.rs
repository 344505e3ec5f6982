//! The HTTP API: the proxy (`/c/{consumer}/…`), leases, status, admin actions, metrics and the
//! scheduler's liveness check.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use memwarden_probe::{Snapshot, error_chain};

use crate::body_budget::{BodyBudget, Charge};
use serde::Deserialize;
use serde_json::json;
use tower_service::Service;

use crate::config::Config;
use crate::handle::{Broker, Permit};
use crate::lifecycle::HttpClient;
use crate::owner::{AdmitError, Msg, Shared};

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
    /// What the bodies held whole by [`by_model`] may take together.
    bodies: Arc<BodyBudget>,
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
        })
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
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/{*openai}", post(by_model))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), auth));
    Router::new()
        .route("/healthz", get(healthz))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    consumer: String,
    /// Seconds, or a duration such as "10m".
    ttl: TtlValue,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TtlValue {
    Seconds(u64),
    Text(String),
}

/// The longest a lease may run without a renewal.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A ttl as a lease body gives it, checked: more than 0 and at most a week.
fn parse_ttl(v: &TtlValue) -> Result<Duration, String> {
    let ttl = match v {
        TtlValue::Seconds(s) => Duration::from_secs(*s),
        TtlValue::Text(t) => {
            humantime::parse_duration(t).map_err(|e| format!("bad ttl {t:?}: {e}"))?
        }
    };
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err("ttl must be more than 0 and at most a week".into());
    }
    Ok(ttl)
}

fn lease_answer(id: &str, consumer: &str, ttl: Duration) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "id": id, "consumer": consumer, "ttl_seconds": ttl.as_secs_f64() }))
}

async fn create_lease(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let req: LeaseRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("a lease body is {{\"consumer\": NAME, \"ttl\": SECONDS or \"10m\"}}: {e}"),
            );
        }
    };
    let ttl = match parse_ttl(&req.ttl) {
        Ok(t) => t,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let permit = match app.broker.acquire(&req.consumer).await {
        Ok(p) => p,
        Err(e) => return admit_error(&e),
    };
    let id = lease_id();
    app.leases.lock().expect("lease lock").insert(
        id.clone(),
        Lease {
            consumer: req.consumer.clone(),
            expires: Instant::now() + ttl,
            ttl,
            _permit: permit,
        },
    );
    (StatusCode::CREATED, lease_answer(&id, &req.consumer, ttl)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    ttl: Option<TtlValue>,
}

/// The ttl a renewal asks for: `None` (keep the lease's own) for an empty body or one
/// without a ttl.
fn renew_ttl(body: &[u8]) -> Result<Option<Duration>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let req: RenewRequest = serde_json::from_slice(body)
        .map_err(|e| format!("a renewal body is empty or {{\"ttl\": SECONDS or \"10m\"}}: {e}"))?;
    req.ttl.as_ref().map(parse_ttl).transpose()
}

async fn renew_lease(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> Response {
    let asked = match renew_ttl(&body) {
        Ok(t) => t,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let now = Instant::now();
    let mut leases = app.leases.lock().expect("lease lock");
    // One the reaper has not come round to yet is over all the same: renewing it would
    // bring back a turn its holder was already told it had lost.
    let Some(lease) = leases.get_mut(&id).filter(|l| l.expires > now) else {
        leases.remove(&id);
        return no_lease(&id);
    };
    let ttl = asked.unwrap_or(lease.ttl);
    lease.expires = now + ttl;
    lease_answer(&id, &lease.consumer, ttl).into_response()
}

fn no_lease(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no lease {:?} (expired or given back)",
            memwarden_probe::sanitize::sanitize(id, 64)
        ),
    )
}

fn lease_id() -> String {
    let mut b = [0u8; 16];
    // Unpredictable ids: one lease holder cannot guess and drop another's lease.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn list_leases(State(app): State<Arc<App>>) -> Response {
    let now = Instant::now();
    let leases = app.leases.lock().expect("lease lock");
    let list: Vec<_> = leases
        .iter()
        .map(|(id, l)| {
            json!({ "id": id, "consumer": l.consumer,
                    "expires_in_seconds": l.expires.saturating_duration_since(now).as_secs_f64() })
        })
        .collect();
    axum::Json(json!({ "leases": list })).into_response()
}

async fn delete_lease(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let removed = app.leases.lock().expect("lease lock").remove(&id);
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => no_lease(&id),
    }
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

/// The most of a request body read to find its `model` (images travel inside chat requests).
const MAX_ROUTED_BODY: usize = 64 << 20;

#[derive(Deserialize)]
struct ModelField {
    model: String,
}

/// An OpenAI-style request (`POST /v1/chat/completions`, `/v1/embeddings`, …) goes to the
/// consumer its body's `model` names, at the same path: one base URL for every server, as
/// applications that switch models by name expect.
async fn by_model(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, mut incoming) = req.into_parts();
    // Held until the request has gone upstream: its bytes count against every body's budget.
    let mut charge = Charge::new(&app.bodies);
    let mut held = bytes::BytesMut::new();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut incoming).await {
        let data = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
        };
        if held.len() + data.len() > MAX_ROUTED_BODY {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a request routed by its model may be {} at most; send larger ones to /c/CONSUMER/…",
                    memwarden_probe::size::format_size(MAX_ROUTED_BODY as u64)
                ),
            );
        }
        if !charge.grow(data.len()) {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many large request bodies at once; try again".into(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        held.extend_from_slice(&data);
    }
    let body = held.freeze();
    let cfg = app.config();
    let Ok(ModelField { model }) = serde_json::from_slice(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{} is routed by the \"model\" of its JSON body, and this one names none \
                 (or send it to /c/CONSUMER{})",
                parts.uri.path(),
                parts.uri.path()
            ),
        );
    };
    let Some(c) = cfg.consumer_for_model(&model) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no consumer serves model {:?} (models: {})",
                memwarden_probe::sanitize::sanitize(&model, 80),
                model_ids(&cfg).join(", ")
            ),
        );
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let consumer = cfg.consumers[c].name.clone();
    let answer = forward(
        app,
        consumer,
        path,
        Request::from_parts(parts, Body::from(body)),
    )
    .await;
    drop(charge);
    answer
}

/// The model names requests may ask for: each proxied consumer's `models`, or its name.
fn model_ids(cfg: &Config) -> Vec<&str> {
    (cfg.consumers.iter())
        .filter(|c| c.upstream.is_some())
        .flat_map(|c| match c.models.is_empty() {
            true => vec![c.name.as_str()],
            false => c.models.iter().map(String::as_str).collect(),
        })
        .collect()
}

/// `GET /v1/models` as OpenAI's API answers it, so that applications list what they may ask for.
async fn models(State(app): State<Arc<App>>) -> Response {
    let cfg = app.config();
    let data: Vec<_> = model_ids(&cfg)
        .into_iter()
        .map(|id| json!({ "id": id, "object": "model", "owned_by": "memwarden" }))
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

/// Headers that belong to one connection, not to the message (RFC 9110 7.6.1).
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(name);
    }
    h.remove("keep-alive");
}

async fn forward(app: Arc<App>, consumer: String, path: String, mut req: Request) -> Response {
    let cfg = app.config();
    if let Some(r) = refused(&cfg, req.headers()) {
        return r;
    }
    let Some(c) = cfg.consumer_index(&consumer) else {
        let known: Vec<&str> = cfg.consumers.iter().map(|c| c.name.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown consumer {:?} (consumers: {})",
                memwarden_probe::sanitize::sanitize(&consumer, 64),
                if known.is_empty() {
                    "none configured".into()
                } else {
                    known.join(", ")
                }
            ),
        );
    };
    let Some(up) = &cfg.consumers[c].upstream else {
        return error(
            StatusCode::NOT_FOUND,
            format!("consumer {consumer:?} has no upstream to proxy to; use a lease"),
        );
    };
    // Admitted before anything is sent: from here the consumer counts as in use.
    let permit = match app.broker.acquire(&consumer).await {
        Ok(p) => p,
        Err(e) => return admit_error(&e),
    };
    // A protocol upgrade (a WebSocket, as ComfyUI's UI opens) keeps its Upgrade and
    // Connection headers, and the connection is spliced through once the upstream agrees.
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = match up.url(&path).parse() {
        Ok(u) => u,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad path: {e}")),
    };
    strip_hop_by_hop(&mut parts.headers);
    if let Some(u) = &upgrade {
        parts.headers.insert(header::UPGRADE, u.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // Who asked, for the upstream's logs: appended to what earlier proxies said.
    if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        let xff = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert("x-forwarded-for", v);
        }
    }
    // The broker's own token is not the upstream's business.
    if cfg.server.token.is_some() {
        parts.headers.remove(header::AUTHORIZATION);
    }
    if let Ok(v) = HeaderValue::from_str(&up.authority()) {
        parts.headers.insert(header::HOST, v);
    }
    let upstream_req = hyper::Request::from_parts(parts, body);
    let client: &HttpClient = &app.shared.client;
    let wait = cfg.consumers[c].response_timeout;
    let answer = tokio::select! {
        biased;
        answer = client.request(upstream_req) => answer.map_err(|e| {
            let why = format!("failed: {}", error_chain(&e));
            (StatusCode::BAD_GATEWAY, why)
        }),
        () = app.past(Instant::now() + wait) => Err((
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "did not start answering within {} (its response_timeout)",
                crate::human::duration(wait)
            ),
        )),
    };
    let mut resp = match answer {
        Ok(resp) => resp,
        Err((status, why)) => {
            drop(permit);
            let msg = format!("upstream of {consumer:?} at {} {why}", up.authority());
            app.broker.send(Msg::UpstreamFailed { consumer });
            return error(status, msg);
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        return splice(
            resp.headers().clone(),
            client_upgrade,
            hyper::upgrade::on(&mut resp),
            permit,
        );
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Body::new(Held {
        inner: body,
        _permit: permit,
        app: Some((Arc::clone(&app), consumer)),
    });
    Response::from_parts(parts, body)
}

/// Answers 101 to the client and copies bytes both ways between the two upgraded
/// connections; the consumer stays in use until either side closes.
fn splice(
    headers: HeaderMap,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    permit: Permit,
) -> Response {
    tokio::spawn(async move {
        let _permit = permit;
        let (Ok(c), Ok(u)) = tokio::join!(client, upstream) else {
            return;
        };
        let mut c = hyper_util::rt::TokioIo::new(c);
        let mut u = hyper_util::rt::TokioIo::new(u);
        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = headers;
    resp
}

/// A response body that keeps its consumer "in use" until the last byte is sent or the
/// client goes away, so streamed answers (server-sent events) count as work.
struct Held {
    inner: hyper::body::Incoming,
    _permit: Permit,
    /// Told when the upstream breaks off mid-answer.
    app: Option<(Arc<App>, String)>,
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &r
            && let Some((app, consumer)) = self.app.take()
        {
            app.broker.send(Msg::UpstreamFailed { consumer });
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
