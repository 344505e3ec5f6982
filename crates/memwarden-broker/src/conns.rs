//! The API's connections. Anyone on the machine can open them, token or not, so none may hold
//! the server: each must send its request headers within `header_timeout` of the server
//! waiting for them (on a new connection, and on a kept-alive one after each answer, which
//! bounds idle keep-alive too), and at most `max_connections` are held at once. When a new one
//! arrives with every slot taken, the oldest connection not in a request is closed at once (a
//! slow or idle client); if every one is in a request, the oldest is asked to close once its
//! answer is sent. So `/healthz` answers while a local client opens connections and sends
//! nothing, or sends headers one byte at a time.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::api::Front;

/// How the server bounds its connections (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
}

impl Limits {
    /// The configured bound, lowered to what this process's file descriptor limit allows: each
    /// connection may need a second descriptor to its upstream, and the daemon keeps some for
    /// /proc, logs and children.
    pub(crate) fn effective(self) -> Limits {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur
        } else {
            1024
        };
        let room = usize::try_from(soft.saturating_sub(64) / 2).unwrap_or(usize::MAX);
        Limits {
            max_connections: self.max_connections.min(room).max(4),
            ..self
        }
    }
}

/// What a connection is told by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Serve,
    /// Finish the request in flight, then close.
    Close,
    /// Close now (it is between requests or still sending headers).
    Cut,
}

struct Slot {
    id: u64,
    /// Requests in flight on it, counted until their answer's body is sent.
    busy: Arc<AtomicUsize>,
    order: watch::Sender<Order>,
}

/// Connections held, oldest first.
#[derive(Default)]
struct Table {
    slots: Mutex<VecDeque<Slot>>,
}

impl Table {
    /// Frees a slot for a newcomer: cuts the oldest connection not in a request, else asks the
    /// oldest one not yet asked to close after its answer.
    fn shed(&self) {
        let slots = self.slots.lock().expect("connection table");
        let told = |s: &&Slot| *s.order.borrow() != Order::Serve;
        let idle = (slots.iter())
            .filter(|s| !told(s))
            .find(|s| s.busy.load(Ordering::Acquire) == 0);
        if let Some(s) = idle {
            let _ = s.order.send(Order::Cut);
        } else if let Some(s) = slots.iter().find(|s| !told(s)) {
            let _ = s.order.send(Order::Close);
        }
    }

    /// Tells every connection to end: idle ones now, busy ones after their answer.
    fn end_all(&self) {
        for s in self.slots.lock().expect("connection table").iter() {
            let idle = s.busy.load(Ordering::Acquire) == 0;
            let _ = s.order.send(if idle { Order::Cut } else { Order::Close });
        }
    }

    fn remove(&self, id: u64) {
        self.slots
            .lock()
            .expect("connection table")
            .retain(|s| s.id != id);
    }
}

/// Serves `front` on `listener` until `stop`; then ends every connection (requests in flight
/// finish) and returns once all have closed.
pub(crate) async fn serve(
    listener: TcpListener,
    front: Front,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let table = Arc::new(Table::default());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    for id in 0u64.. {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was taken: neither
                    // ends the server.
                    tracing::debug!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let permit = loop {
            if let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
                break Some(p);
            }
            table.shed();
            tokio::select! {
                _ = &mut stop => break None,
                p = tokio::time::timeout(Duration::from_millis(100), Arc::clone(&slots).acquire_owned()) => {
                    if let Ok(Ok(p)) = p {
                        break Some(p);
                    }
                }
            }
        };
        let Some(permit) = permit else { break };
        // Streamed answers go out in several writes: Nagle's algorithm would hold them.
        let _ = tcp.set_nodelay(true);
        let busy = Arc::new(AtomicUsize::new(0));
        let (order, orders) = watch::channel(Order::Serve);
        table
            .slots
            .lock()
            .expect("connection table")
            .push_back(Slot {
                id,
                busy: Arc::clone(&busy),
                order,
            });
        let table = Arc::clone(&table);
        let front = front.clone();
        conns.spawn(async move {
            connection(tcp, peer, front, busy, orders, limits.header_timeout).await;
            table.remove(id);
            drop(permit);
        });
    }
    table.end_all();
    while conns.join_next().await.is_some() {}
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    front: Front,
    busy: Arc<AtomicUsize>,
    mut orders: watch::Receiver<Order>,
    header_timeout: Duration,
) {
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let guard = Busy::new(&busy);
        let answer = front.clone().call(req.map(Body::new));
        async move {
            let resp = answer.await?;
            // The request counts as in flight until its body is sent (or dropped).
            Ok::<_, Infallible>(resp.map(|b| {
                Body::new(b.map_frame(move |f| {
                    let _ = &guard;
                    f
                }))
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let mut told = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "connection: {e}");
                }
                return;
            }
            changed = orders.changed(), if !told => {
                match changed.map(|()| *orders.borrow()) {
                    Ok(Order::Serve) => {}
                    Ok(Order::Cut) => return,
                    Ok(Order::Close) | Err(_) => {
                        told = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// One request in flight on a connection.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(n: &Arc<AtomicUsize>) -> Busy {
        n.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(n))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
