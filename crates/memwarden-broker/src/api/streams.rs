//! The two streams: `GET /v1/consumers/{name}/logs`, what a consumer's process printed (plain
//! text), and `GET /v1/events`, what the broker did (JSON); each with `?follow=1` as
//! server-sent events: what is kept, then each new one as it comes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{App, error};

#[derive(Deserialize)]
pub(super) struct FollowQuery {
    follow: Option<String>,
}

impl FollowQuery {
    fn follow(&self) -> bool {
        matches!(self.follow.as_deref(), Some("1" | "true" | "yes" | ""))
    }
}

fn sse(app: &App, kept: Vec<Arc<str>>, rx: tokio::sync::broadcast::Receiver<Arc<str>>) -> Response {
    Sse::new(follow_stream(kept, rx).take_until(app.streams_end()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

pub(super) async fn events(State(app): State<Arc<App>>, Query(q): Query<FollowQuery>) -> Response {
    let (kept, rx) = app.shared.events.follow();
    if q.follow() {
        return sse(&app, kept, rx);
    }
    let list: Vec<serde_json::Value> = kept
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    axum::Json(serde_json::json!({ "events": list })).into_response()
}

pub(super) async fn consumer_logs(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<FollowQuery>,
) -> Response {
    if !app.config().consumers.iter().any(|c| c.name == name) {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown consumer {:?}",
                memwarden_probe::sanitize::sanitize(&name, 80)
            ),
        );
    }
    let ring = app.shared.logs.ring(&name);
    if !q.follow() {
        let mut text = String::new();
        for l in ring.lines() {
            text.push_str(&l);
            text.push('\n');
        }
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    }
    let (kept, rx) = ring.follow();
    sse(&app, kept, rx)
}

/// The kept lines, then the live ones; a follower that fell behind is told how many it missed
/// rather than cut off.
fn follow_stream(
    kept: Vec<Arc<str>>,
    rx: tokio::sync::broadcast::Receiver<Arc<str>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let kept = stream::iter(kept).map(|l| Ok(Event::default().data(&*l)));
    let live = stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(l) => Event::default().data(&*l),
            Err(RecvError::Lagged(n)) => {
                Event::default().event("missed").data(format!("{n} lines"))
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    kept.chain(live)
}
