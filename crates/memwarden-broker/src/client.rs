//! A small client of the broker's API, for `memwarden run` and for scripts written in Rust.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Method, Request, StatusCode};

use memwarden_probe::error_chain;

use crate::lifecycle::{HttpClient, http_client};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

/// Why a lease was not renewed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The broker no longer has it: expired, given back, or the broker restarted.
    #[error("lease {0} is gone (expired, given back, or the broker restarted)")]
    Gone(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The broker's base URL (`http://127.0.0.1:7077`) and its bearer token.
#[derive(Debug, Clone)]
pub struct BrokerClient {
    base: String,
    token: Option<String>,
    client: HttpClient,
}

impl BrokerClient {
    pub fn new(base: &str, token: Option<String>) -> Result<BrokerClient, ClientError> {
        if !base.starts_with("http://") {
            return Err(ClientError(format!(
                "broker URL {base:?} must start with http://"
            )));
        }
        Ok(BrokerClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            client: http_client(),
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Request<Body>, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        req.body(Body::from(body.unwrap_or_default()))
            .map_err(|e| ClientError(e.to_string()))
    }

    fn unreachable(&self, e: &dyn std::error::Error) -> ClientError {
        ClientError(format!(
            "cannot reach the broker at {}: {}",
            self.base,
            error_chain(e)
        ))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<(StatusCode, String), ClientError> {
        let req = self.request(method, path, body)?;
        let call = async {
            let resp = (self.client.request(req).await).map_err(|e| self.unreachable(&e))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError(format!("the broker broke off its answer: {e}")))?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(timeout, call).await.map_err(|_| {
            ClientError(format!(
                "the broker at {} did not answer in time",
                self.base
            ))
        })?
    }

    /// Waits for a lease on `consumer` (the broker's queue bounds the wait) and returns its id.
    pub async fn take_lease(&self, consumer: &str, ttl: Duration) -> Result<String, ClientError> {
        let body = serde_json::json!({ "consumer": consumer, "ttl": ttl_value(ttl) }).to_string();
        // The broker answers within its max_wait; this bound only guards against a hung broker.
        let (status, text) = self
            .call(
                Method::POST,
                "/v1/leases",
                Some(body),
                Duration::from_secs(3600),
            )
            .await?;
        if status != StatusCode::CREATED {
            return Err(ClientError(format!(
                "no lease on {consumer:?}: {} ({})",
                error_text(&text),
                status
            )));
        }
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ClientError(format!("the broker's answer is not JSON: {e}")))?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError("the broker's answer has no lease id".into()))
    }

    /// Extends a lease to `ttl` from now (`None`: the ttl it was taken with) and returns the
    /// ttl the broker granted.
    pub async fn renew_lease(
        &self,
        id: &str,
        ttl: Option<Duration>,
    ) -> Result<Duration, RenewError> {
        let body = ttl.map(|t| serde_json::json!({ "ttl": ttl_value(t) }).to_string());
        let (status, text) = self
            .call(
                Method::POST,
                &format!("/v1/leases/{id}/renew"),
                body,
                Duration::from_secs(10),
            )
            .await?;
        match status {
            StatusCode::OK => granted_ttl(&text).map_err(RenewError::from),
            StatusCode::NOT_FOUND => Err(RenewError::Gone(id.to_string())),
            s => Err(ClientError(format!(
                "renewing lease {id} failed: {} ({s})",
                error_text(&text)
            ))
            .into()),
        }
    }

    /// Gives a lease back. A lease that has already expired is not an error.
    pub async fn give_back(&self, id: &str) -> Result<(), ClientError> {
        let (status, text) = self
            .call(
                Method::DELETE,
                &format!("/v1/leases/{id}"),
                None,
                Duration::from_secs(10),
            )
            .await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            s => Err(ClientError(format!(
                "giving lease {id} back failed: {} ({s})",
                error_text(&text)
            ))),
        }
    }
}

impl BrokerClient {
    /// `GET /v1/status`, as the broker answers it.
    pub async fn status(&self) -> Result<serde_json::Value, ClientError> {
        let (status, text) = self
            .call(Method::GET, "/v1/status", None, Duration::from_secs(10))
            .await?;
        if status != StatusCode::OK {
            return Err(ClientError(format!(
                "the broker refused its status: {} ({status})",
                error_text(&text)
            )));
        }
        serde_json::from_str(&text)
            .map_err(|e| ClientError(format!("the broker's answer is not JSON: {e}")))
    }

    /// Loads `consumer` (evicting what the broker must) and keeps it loaded; waits as long as
    /// the broker's queue lets it.
    pub async fn load(&self, consumer: &str) -> Result<(), ClientError> {
        let (status, text) = self
            .call(
                Method::POST,
                &format!("/v1/consumers/{}/load", path_segment(consumer)),
                None,
                Duration::from_secs(3600),
            )
            .await?;
        match status {
            StatusCode::OK => Ok(()),
            s => Err(ClientError(format!(
                "{consumer:?} was not loaded: {} ({s})",
                error_text(&text)
            ))),
        }
    }

    /// Unloads `consumer` and returns what the broker said it did.
    pub async fn unload(&self, consumer: &str) -> Result<String, ClientError> {
        let (status, text) = self
            .call(
                Method::POST,
                &format!("/v1/consumers/{}/unload", path_segment(consumer)),
                None,
                Duration::from_secs(3600),
            )
            .await?;
        if !status.is_success() {
            return Err(ClientError(format!(
                "{consumer:?} was not unloaded: {} ({status})",
                error_text(&text)
            )));
        }
        Ok(serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["result"].as_str().map(str::to_string))
            .unwrap_or_else(|| "unloaded".into()))
    }
}

impl BrokerClient {
    /// What `consumer`'s process printed, as the broker keeps it.
    pub async fn logs(&self, consumer: &str) -> Result<String, ClientError> {
        let path = format!("/v1/consumers/{}/logs", path_segment(consumer));
        let (status, text) = self
            .call(Method::GET, &path, None, Duration::from_secs(10))
            .await?;
        match status {
            StatusCode::OK => Ok(text),
            s => Err(ClientError(format!(
                "no logs of {consumer:?}: {} ({s})",
                error_text(&text)
            ))),
        }
    }

    /// Follows `consumer`'s output: `line` gets each line kept and then each new one, until
    /// the broker ends the stream. `missed` gets how many lines were lost when this reader
    /// fell behind.
    pub async fn follow_logs(
        &self,
        consumer: &str,
        mut line: impl FnMut(&str),
        mut missed: impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let path = format!("/v1/consumers/{}/logs?follow=1", path_segment(consumer));
        let req = self.request(Method::GET, &path, None)?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| {
                ClientError(format!(
                    "the broker at {} did not answer in time",
                    self.base
                ))
            })?
            .map_err(|e| self.unreachable(&e))?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let text = resp.into_body().collect().await.map(|b| b.to_bytes());
            let text = String::from_utf8_lossy(&text.unwrap_or_default()).into_owned();
            return Err(ClientError(format!(
                "no logs of {consumer:?}: {} ({status})",
                error_text(&text)
            )));
        }
        let mut body = resp.into_body();
        let mut events = crate::sse::Events::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError(format!("the log stream broke off: {e}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for ev in events.push(&data) {
                match ev.event.as_deref() {
                    Some("missed") => missed(&ev.data),
                    _ => line(&ev.data),
                }
            }
        }
        Ok(())
    }
}

/// A consumer's name as one path segment: percent-encoded beyond the characters a name may
/// hold unescaped, so a name can never reach another route.
fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A ttl as the broker reads it: whole seconds as a number, anything finer in milliseconds
/// (so a short test lease is not rounded up to a second).
fn ttl_value(ttl: Duration) -> serde_json::Value {
    if ttl.subsec_nanos() == 0 {
        ttl.as_secs().max(1).into()
    } else {
        format!("{}ms", ttl.as_millis().max(1)).into()
    }
}

fn granted_ttl(body: &str) -> Result<Duration, ClientError> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| ClientError(format!("the broker's answer is not JSON: {e}")))?;
    v["ttl_seconds"]
        .as_f64()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| ClientError("the broker's answer has no ttl_seconds".into()))
}

fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| memwarden_probe::sanitize::sanitize(body, 200))
}
