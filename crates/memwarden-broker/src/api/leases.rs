//! Leases: a turn on a consumer held by a batch job (`memwarden run`) for a ttl it renews.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::{App, Lease, admit_error, error};

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

pub(super) async fn create_lease(State(app): State<Arc<App>>, body: Bytes) -> Response {
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

pub(super) async fn renew_lease(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
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

pub(super) async fn list_leases(State(app): State<Arc<App>>) -> Response {
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

pub(super) async fn delete_lease(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let removed = app.leases.lock().expect("lease lock").remove(&id);
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => no_lease(&id),
    }
}
