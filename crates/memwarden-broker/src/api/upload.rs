//! The request bodies the proxy sends upstream: streamed, never held whole. A request routed by
//! its `model` sends the prefix read to find it, then the rest as the client sends it; every
//! body is watched, so that a client breaking off is not taken for a failing upstream and the
//! wait for an answer counts from the last byte sent.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as _, Frame, SizeHint};

use crate::body_budget::Charge;

/// The bytes read to find the model, then the rest of the client's body, unread until the
/// upstream asks for it (so a request waiting its turn leaves it in the socket).
pub(super) struct Prefixed {
    prefix: VecDeque<Bytes>,
    rest: Body,
    /// The prefix's share of the bodies' budget, given back once it is handed on.
    charge: Option<Charge>,
}

impl Prefixed {
    pub(super) fn new(prefix: VecDeque<Bytes>, rest: Body, charge: Charge) -> Prefixed {
        Prefixed {
            prefix,
            rest,
            charge: Some(charge),
        }
    }
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(b) = self.prefix.pop_front() {
            if self.prefix.is_empty() {
                self.charge = None;
            }
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        self.charge = None;
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self.prefix.iter().map(|b| b.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(held));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

/// How the sending of one request body goes.
#[derive(Debug)]
pub(super) struct Progress {
    start: Instant,
    /// When a byte last went upstream, in milliseconds after `start`.
    moved_ms: AtomicU64,
    done: AtomicBool,
    broke: AtomicBool,
}

impl Progress {
    pub(super) fn new() -> Arc<Progress> {
        Arc::new(Progress {
            start: Instant::now(),
            moved_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
            broke: AtomicBool::new(false),
        })
    }

    /// When the body last moved (or the request started).
    pub(super) fn last_moved(&self) -> Instant {
        self.start + Duration::from_millis(self.moved_ms.load(Ordering::Relaxed))
    }

    /// Whether the client's body ended before it was all sent.
    pub(super) fn broke(&self) -> bool {
        self.broke.load(Ordering::Relaxed)
    }

    /// Whether the whole body has gone upstream.
    pub(super) fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    fn moved(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.moved_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// A request body on its way upstream, telling [`Progress`] how it goes.
pub(super) struct Watched {
    inner: Body,
    progress: Arc<Progress>,
}

impl Watched {
    pub(super) fn new(inner: Body, progress: Arc<Progress>) -> Watched {
        if inner.is_end_stream() {
            progress.done.store(true, Ordering::Relaxed);
        }
        Watched { inner, progress }
    }
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        let p = &self.progress;
        match &r {
            Poll::Ready(Some(Ok(_))) => {
                p.moved();
                if self.inner.is_end_stream() {
                    p.done.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(_))) => p.broke.store(true, Ordering::Relaxed),
            Poll::Ready(None) => {
                p.moved();
                p.done.store(true, Ordering::Relaxed);
            }
            Poll::Pending => {}
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

/// How long, and how much, of a refused request's body is read and thrown away after the
/// answer. A client still sending its body when the answer comes (a 503 or 507 before an upload
/// is read) would otherwise see its connection reset: closing a socket with unread bytes in it
/// sends a reset, which can discard the answer before the client reads it.
const LINGER_FOR: Duration = Duration::from_secs(10);
const LINGER_BYTES: u64 = 1 << 30;

/// Reads what is left of a body the broker will not use, in the background, within
/// [`LINGER_FOR`] and [`LINGER_BYTES`], keeping none of it.
pub(super) fn linger(mut body: Body) {
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let mut left = LINGER_BYTES;
        let drain = async {
            while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                match left.checked_sub(n) {
                    Some(l) => left = l,
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_FOR, drain).await;
    });
}
