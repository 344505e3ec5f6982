//! A small client of the broker's API, for `memwarden run` and for scripts written in Rust.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Method, Request, StatusCode};

use crate::lifecycle::{HttpClient, error_chain, http_client};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

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

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<(StatusCode, String), ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Body::from(body.unwrap_or_default()))
            .map_err(|e| ClientError(e.to_string()))?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| {
                ClientError(format!(
                    "cannot reach the broker at {}: {}",
                    self.base,
                    error_chain(&e)
                ))
            })?;
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
        let body =
            serde_json::json!({ "consumer": consumer, "ttl": ttl.as_secs().max(1) }).to_string();
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

fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| memwarden_probe::sanitize::sanitize(body, 200))
}
