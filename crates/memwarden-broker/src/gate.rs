//! The fast path: a gate the state owner opens for a consumer while a request for it would be
//! granted at once anyway (it is loaded, nothing waits in its pool, nothing it may not run
//! beside is running). Requests pass an open gate with one atomic step instead of a round trip
//! to the owner. The owner takes the gate back before any decision that reads work in flight:
//! closing it is one atomic swap that tells how many requests are still running through it,
//! and those are counted in flight from then on, each reporting its end by message as any
//! granted request does. So every decision still sees exact counts, made by the one owner.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Set while the gate is open.
const OPEN: u64 = 1 << 63;
/// The low 32 bits count the requests running through the gate; the bits above (below OPEN)
/// count those that finished while it was open.
const RUNNING: u64 = (1 << 32) - 1;
const DONE_ONE: u64 = 1 << 32;
/// Past this many finished requests the gate refuses (they go the slow way), so the count
/// cannot reach the open bit however long the owner leaves it open.
const DONE_MAX: u64 = 1 << 30;

/// What a gate had seen when it was closed (or peeked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Count {
    /// Requests still running through it.
    pub running: u32,
    /// Requests let through since it opened, running or finished.
    pub admitted: u64,
    /// When its last request finished, in milliseconds since the owner's epoch.
    pub last_used: Option<u64>,
}

#[derive(Debug)]
pub struct Gate {
    /// Names it to the owner when a request that passed it ends after it closed.
    pub id: u64,
    word: AtomicU64,
    /// How many may run through it at once.
    limit: u32,
    epoch: Instant,
    /// Milliseconds since `epoch` plus one; zero while none has finished.
    last_used: AtomicU64,
}

impl Gate {
    /// An open gate letting `limit` requests run at once.
    pub fn open(id: u64, limit: u32, epoch: Instant) -> Gate {
        Gate {
            id,
            word: AtomicU64::new(OPEN),
            limit,
            epoch,
            last_used: AtomicU64::new(0),
        }
    }

    /// Lets one request through if the gate is open and below its limit.
    pub fn enter(&self) -> bool {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let done = (w & !OPEN) >> 32;
            if w & OPEN == 0 || w & RUNNING >= u64::from(self.limit) || done >= DONE_MAX {
                return false;
            }
            match (self.word).compare_exchange_weak(w, w + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// Ends a request that entered. False when the gate was closed meanwhile: the owner
    /// counted the request in flight when it closed the gate, and must be told.
    pub fn leave(&self) -> bool {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        // Before the count changes, so the owner that sees the count also sees the time.
        self.last_used.fetch_max(ms, Ordering::AcqRel);
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if w & OPEN == 0 {
                return false;
            }
            let next = w - 1 + DONE_ONE;
            match (self.word).compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }

    /// Closes the gate: nothing more passes, and the requests still running are from now on
    /// the owner's to count. Closing a closed gate tells nothing more.
    pub fn close(&self) -> Count {
        self.count(self.word.swap(0, Ordering::AcqRel))
    }

    /// What the gate counts now, leaving it open (for status, which may be a moment stale).
    pub fn peek(&self) -> Count {
        self.count(self.word.load(Ordering::Acquire))
    }

    fn count(&self, w: u64) -> Count {
        let running = (w & RUNNING) as u32;
        let last = self.last_used.load(Ordering::Acquire);
        Count {
            running,
            admitted: u64::from(running) + ((w & !OPEN) >> 32),
            last_used: last.checked_sub(1),
        }
    }
}

/// The gates the owner has opened, by consumer name: where a request looks first.
#[derive(Debug, Default)]
pub struct Gates(RwLock<HashMap<String, Arc<Gate>>>);

impl Gates {
    /// The consumer's gate, if one was opened (it may have closed since).
    pub fn get(&self, consumer: &str) -> Option<Arc<Gate>> {
        self.0.read().ok()?.get(consumer).cloned()
    }

    pub fn put(&self, consumer: &str, gate: Arc<Gate>) {
        if let Ok(mut m) = self.0.write() {
            m.insert(consumer.to_string(), gate);
        }
    }

    /// Forgets every gate (the owner has closed them all).
    pub fn clear(&self) {
        if let Ok(mut m) = self.0.write() {
            m.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_gate_counts_what_passed_and_what_still_runs() {
        let g = Gate::open(1, 2, Instant::now());
        assert!(g.enter());
        assert!(g.enter());
        assert!(!g.enter(), "its limit holds");
        assert!(g.leave());
        assert_eq!(g.peek().running, 1);
        assert_eq!(g.peek().admitted, 2);
        assert!(g.peek().last_used.is_some());
        assert!(g.enter());
        let c = g.close();
        assert_eq!((c.running, c.admitted), (2, 3));
        assert!(!g.enter(), "closed");
        assert!(
            !g.leave(),
            "a request that ends after the close is the owner's"
        );
        assert_eq!(
            g.close(),
            Count {
                last_used: c.last_used,
                ..Count::default()
            }
        );
    }

    /// Threads pass gates as fast as they can while the owner closes each and opens the
    /// next: every request is counted exactly once, either as finished through its gate or as
    /// running when it closed (and then reported by its end), never both, never neither.
    #[test]
    fn no_request_is_lost_or_counted_twice_while_gates_close_under_it() {
        let epoch = Instant::now();
        let current = Arc::new(RwLock::new(Arc::new(Gate::open(0, u32::MAX, epoch))));
        let stop = Arc::new(AtomicBool::new(false));
        let entered = Arc::new(AtomicU64::new(0));
        let reported = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (current, stop) = (Arc::clone(&current), Arc::clone(&stop));
                let (entered, reported) = (Arc::clone(&entered), Arc::clone(&reported));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let g = Arc::clone(&current.read().unwrap());
                        if g.enter() {
                            entered.fetch_add(1, Ordering::Relaxed);
                            std::hint::spin_loop();
                            if !g.leave() {
                                reported.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        let (mut admitted, mut adopted) = (0u64, 0u64);
        let give_up = Instant::now() + std::time::Duration::from_secs(20);
        // At least 2,000 gates, and until the threads have passed them many times.
        for id in 1.. {
            if id > 2000 && (entered.load(Ordering::Relaxed) > 20_000 || Instant::now() > give_up) {
                break;
            }
            let next = Arc::new(Gate::open(id, u32::MAX, epoch));
            let old = std::mem::replace(&mut *current.write().unwrap(), next);
            let c = old.close();
            admitted += c.admitted;
            adopted += u64::from(c.running);
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let c = current.read().unwrap().close();
        admitted += c.admitted;
        adopted += u64::from(c.running);
        assert!(entered.load(Ordering::Relaxed) > 20_000);
        assert_eq!(admitted, entered.load(Ordering::Relaxed));
        assert_eq!(adopted, reported.load(Ordering::Relaxed));
    }
}
