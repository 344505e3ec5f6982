//! The proxy: `/c/{consumer}/…` and OpenAI-style requests routed by their `model`, each
//! passed to its consumer's upstream once the broker grants it a turn.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use memwarden_probe::error_chain;
use serde_json::json;

use super::upload::{Prefixed, Progress, Watched, linger};
use super::{App, admit_error, error, refused};
use crate::body_budget::Charge;
use crate::config::Config;
use crate::handle::Permit;
use crate::lifecycle::HttpClient;
use crate::model_field::ModelScanner;
use crate::owner::Msg;

/// The most of a request body read to find its `model` (images travel inside chat requests);
/// the rest of the body is streamed, however long.
const MAX_ROUTED_PREFIX: usize = 64 << 20;

/// An OpenAI-style request (`POST /v1/chat/completions`, `/v1/embeddings`, …) goes to the
/// consumer its body's `model` names, at the same path: one base URL for every server, as
/// applications that switch models by name expect. The body is read only up to its model; the
/// rest stays with the client until the upstream reads it.
pub(super) async fn by_model(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, mut incoming) = req.into_parts();
    let (model, prefix, charge) = match read_to_model(&app, parts.uri.path(), &mut incoming).await {
        Ok(found) => found,
        Err(refusal) => {
            linger(incoming);
            return refusal;
        }
    };
    let cfg = app.config();
    let Some(c) = cfg.consumer_for_model(&model) else {
        linger(incoming);
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
    let body = Body::new(Prefixed::new(prefix, incoming, charge));
    forward(app, consumer, path, Request::from_parts(parts, body)).await
}

/// Reads a body up to its top-level `model`: the model, the bytes read, and their charge
/// against the bodies' budget; or the answer that refuses the request.
async fn read_to_model(
    app: &App,
    path: &str,
    incoming: &mut Body,
) -> Result<(String, VecDeque<Bytes>, Charge), Response> {
    let not_routed = |why: String| {
        error(
            StatusCode::BAD_REQUEST,
            format!(
                "{path} is routed by the \"model\" of its JSON body, and this one cannot be: {why} \
                 (or send it to /c/CONSUMER{path})"
            ),
        )
    };
    // Held until the prefix has gone upstream: its bytes count against every body's budget.
    let mut charge = Charge::new(&app.bodies);
    let mut scan = ModelScanner::new();
    let mut prefix = VecDeque::new();
    let mut held = 0;
    let model = loop {
        let data = match http_body_util::BodyExt::frame(incoming).await {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body: {e}"),
                ));
            }
            None => match scan.finish() {
                Ok(m) => break m.to_string(),
                Err(e) => return Err(not_routed(e.to_string())),
            },
        };
        if !charge.grow(data.len()) {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many large request bodies at once; try again".into(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(r);
        }
        let room = MAX_ROUTED_PREFIX - held;
        let found = match scan.push(&data[..data.len().min(room)]) {
            Ok(found) => found.map(str::to_string),
            Err(e) => return Err(not_routed(e.to_string())),
        };
        held += data.len();
        prefix.push_back(data);
        if let Some(m) = found {
            break m;
        }
        if held >= MAX_ROUTED_PREFIX {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a request routed by its model must name it within its first {}; send it to /c/CONSUMER{path}",
                    memwarden_probe::size::format_size(MAX_ROUTED_PREFIX as u64)
                ),
            ));
        }
    };
    Ok((model, prefix, charge))
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
pub(super) async fn models(State(app): State<Arc<App>>) -> Response {
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

pub(super) async fn forward(
    app: Arc<App>,
    consumer: String,
    path: String,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let resp = forward_taking(
        app,
        consumer,
        path,
        Request::from_parts(parts, ()),
        &mut body,
    )
    .await;
    // Refused before the body went upstream: it is read off the socket after the answer.
    if let Some(unread) = body {
        linger(unread);
    }
    resp
}

/// [`forward`], taking `body` only once the request goes upstream.
async fn forward_taking(
    app: Arc<App>,
    consumer: String,
    path: String,
    mut req: Request<()>,
    body: &mut Option<Body>,
) -> Response {
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
    if cfg.consumers[c].upstream.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("consumer {consumer:?} has no upstream to proxy to; use a lease"),
        );
    }
    // Admitted before anything is sent: from here the consumer counts as in use.
    let permit = match app.broker.acquire(&consumer).await {
        Ok(p) => p,
        Err(e) => return admit_error(&e),
    };
    // Only now: an upstream of `${PORT}` is on the port of the start that admitted it.
    let Some(up) = app.shared.upstream(&cfg.consumers[c]) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("consumer {consumer:?} is not running"),
        );
    };
    // A protocol upgrade (a WebSocket, as ComfyUI's UI opens) keeps its Upgrade and
    // Connection headers, and the connection is spliced through once the upstream agrees.
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, ()) = req.into_parts();
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
    let progress = Progress::new();
    let body = Body::new(Watched::new(
        body.take().unwrap_or_else(Body::empty),
        Arc::clone(&progress),
    ));
    let upstream_req = hyper::Request::from_parts(parts, body);
    let client: &HttpClient = &app.shared.client;
    let wait = cfg.consumers[c].response_timeout;
    // Counted from the last byte of the request sent: a long upload is not a slow answer.
    let bound = async {
        while progress.last_moved() + wait > Instant::now() {
            app.past(progress.last_moved() + wait).await;
        }
    };
    let answer = tokio::select! {
        biased;
        answer = client.request(upstream_req) => answer.map_err(|e| {
            let why = format!("failed: {}", error_chain(&e));
            (StatusCode::BAD_GATEWAY, why)
        }),
        () = bound => Err((
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "did not start answering within {} (its response_timeout)",
                crate::human::duration(wait)
            ),
        )),
    };
    let mut resp = match answer {
        Ok(resp) => resp,
        // The client's body broke off (it went away): not the upstream's failure.
        Err(_) if progress.broke() => {
            return error(
                StatusCode::BAD_REQUEST,
                "the request body broke off before it was all sent".into(),
            );
        }
        // A body that stopped moving: the client or the upstream stalled, and which is unknown.
        Err((status, _)) if !progress.done() && status == StatusCode::GATEWAY_TIMEOUT => {
            return error(
                status,
                format!(
                    "the request body to {consumer:?} did not move for {} (its response_timeout)",
                    crate::human::duration(wait)
                ),
            );
        }
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
