//! The handle everyone else holds: it sends messages to the state owner and turns a granted
//! request into a [`Permit`] that gives the work back when dropped, whatever happens to the
//! request (finished, failed, or its client gone). A request first tries its consumer's open
//! [`Gate`], the owner's fast path, and asks the owner only when that is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::gate::{Gate, Gates};
use crate::owner::{AdmitError, Msg, Status};

#[derive(Clone)]
pub struct Broker {
    tx: mpsc::UnboundedSender<Msg>,
    next_id: Arc<AtomicU64>,
    gates: Arc<Gates>,
}

/// Work admitted for a consumer: it stays "in use" until this is dropped.
#[derive(Debug)]
pub struct Permit {
    by: Admitted,
    tx: mpsc::UnboundedSender<Msg>,
}

#[derive(Debug)]
enum Admitted {
    /// Granted by the owner, under this request id.
    Owner(u64),
    Gate(Arc<Gate>),
}

impl Drop for Permit {
    fn drop(&mut self) {
        let msg = match &self.by {
            Admitted::Owner(id) => Msg::Release { id: *id },
            Admitted::Gate(g) if g.leave() => return,
            Admitted::Gate(g) => Msg::GateRelease { gate: g.id },
        };
        let _ = self.tx.send(msg);
    }
}

/// A request waiting for its turn: dropped before the answer (the client went away), it
/// leaves the queue at once.
struct Pending {
    id: u64,
    tx: mpsc::UnboundedSender<Msg>,
    armed: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.send(Msg::Cancel { id: self.id });
        }
    }
}

impl Broker {
    pub fn new(tx: mpsc::UnboundedSender<Msg>, gates: Arc<Gates>) -> Broker {
        Broker {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            gates,
        }
    }

    pub fn send(&self, msg: Msg) {
        let _ = self.tx.send(msg);
    }

    /// Waits for a turn to run work on `consumer` (the queue's bounds apply).
    pub async fn acquire(&self, consumer: &str) -> Result<Permit, AdmitError> {
        if let Some(gate) = self.gates.get(consumer)
            && gate.enter()
        {
            return Ok(Permit {
                by: Admitted::Gate(gate),
                tx: self.tx.clone(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let mut pending = Pending {
            id,
            tx: self.tx.clone(),
            armed: true,
        };
        if self
            .tx
            .send(Msg::Acquire {
                id,
                consumer: consumer.to_string(),
                reply,
            })
            .is_err()
        {
            pending.armed = false;
            return Err(AdmitError::ShuttingDown);
        }
        let answer = rx.await.unwrap_or(Err(AdmitError::ShuttingDown));
        pending.armed = false;
        answer.map(|()| Permit {
            by: Admitted::Owner(id),
            tx: self.tx.clone(),
        })
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Msg,
        wait: Duration,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).ok()?;
        tokio::time::timeout(wait, rx).await.ok()?.ok()
    }

    pub async fn status(&self) -> Option<Status> {
        self.ask(Msg::Status, Duration::from_secs(5)).await
    }

    /// Whether the state owner answers within `wait`.
    pub async fn ping(&self, wait: Duration) -> bool {
        self.ask(Msg::Ping, wait).await.is_some()
    }

    /// Unloads a consumer now; a stuck one's answer waits for its retried unload, at most
    /// `wait`.
    pub async fn admin_unload(
        &self,
        consumer: &str,
        wait: Duration,
    ) -> Result<String, (u16, String)> {
        let consumer = consumer.to_string();
        self.ask(|reply| Msg::AdminUnload { consumer, reply }, wait)
            .await
            .unwrap_or(Err((503, "the broker did not answer".into())))
    }
}
