//! What the processes the broker starts print: each line goes to the broker's own log with the
//! consumer's name in front, and into a bounded ring per consumer that `GET
//! /v1/consumers/{name}/logs` serves (and streams with `?follow=1`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;

/// What a consumer's ring keeps by default: its last mebibyte of output.
pub const DEFAULT_RING_BYTES: usize = 1 << 20;
/// The longest line kept whole; a longer one (a progress bar without newlines, a binary dump)
/// is cut here, so that one line cannot take the ring or the memory.
pub const MAX_LINE: usize = 16 << 10;
/// Lines a slow follower may fall behind before it is told it missed some.
const FOLLOW_BACKLOG: usize = 1024;

/// One consumer's recent output.
pub struct LogRing {
    cap: usize,
    inner: Mutex<Ring>,
    live: broadcast::Sender<Arc<str>>,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<Arc<str>>,
    bytes: usize,
}

impl LogRing {
    pub fn new(cap: usize) -> LogRing {
        LogRing {
            cap,
            inner: Mutex::new(Ring::default()),
            live: broadcast::channel(FOLLOW_BACKLOG).0,
        }
    }

    /// Keeps `line` (dropping the oldest lines past the ring's size) and hands it to followers.
    pub fn push(&self, line: &str) {
        let line: Arc<str> = Arc::from(line);
        if let Ok(mut r) = self.inner.lock() {
            r.bytes += line.len();
            r.lines.push_back(Arc::clone(&line));
            while r.bytes > self.cap {
                match r.lines.pop_front() {
                    Some(old) => r.bytes -= old.len(),
                    None => break,
                }
            }
        }
        // No follower is not an error.
        let _ = self.live.send(line);
    }

    /// The lines kept now, oldest first, and a receiver of every line after them (taken under
    /// the same lock, so that a follower neither misses nor repeats a line).
    pub fn follow(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let r = self.inner.lock().expect("log ring lock");
        (r.lines.iter().cloned().collect(), self.live.subscribe())
    }

    pub fn lines(&self) -> Vec<Arc<str>> {
        self.follow().0
    }
}

/// Every consumer's ring, by name. A ring outlives the process that wrote it, so that the
/// output of a server that failed to start can still be read.
#[derive(Default)]
pub struct Logs {
    rings: Mutex<HashMap<String, Arc<LogRing>>>,
}

impl Logs {
    pub fn ring(&self, consumer: &str) -> Arc<LogRing> {
        let mut m = self.rings.lock().expect("logs lock");
        Arc::clone(
            m.entry(consumer.to_string())
                .or_insert_with(|| Arc::new(LogRing::new(DEFAULT_RING_BYTES))),
        )
    }

    /// The ring of a consumer that has printed something, if any.
    pub fn get(&self, consumer: &str) -> Option<Arc<LogRing>> {
        self.rings.lock().ok()?.get(consumer).cloned()
    }
}

/// Reads `from` to its end, line by line, into `ring` and the broker's log (as `[name] line`).
/// Bytes that are not UTF-8 are replaced and control characters made visible, so a server's
/// output can neither break the log's format nor drive the terminal that shows it.
pub async fn pump(name: String, mut from: impl AsyncRead + Unpin, ring: Arc<LogRing>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            emit(&name, &pending[..end], &ring);
            pending.drain(..=end);
        }
        if pending.len() > MAX_LINE {
            emit(&name, &pending, &ring);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        emit(&name, &pending, &ring);
    }
}

fn emit(name: &str, raw: &[u8], ring: &LogRing) {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let line = memwarden_probe::sanitize::sanitize(&String::from_utf8_lossy(raw), MAX_LINE);
    tracing::info!("[{name}] {line}");
    ring.push(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_size() {
        let ring = LogRing::new(10);
        for l in ["aaaa", "bbbb", "cccc"] {
            ring.push(l);
        }
        let kept: Vec<String> = ring.lines().iter().map(|l| l.to_string()).collect();
        assert_eq!(kept, ["bbbb", "cccc"]);
    }

    #[tokio::test]
    async fn lines_are_split_cut_and_cleaned() {
        let ring = Arc::new(LogRing::new(1 << 20));
        let long = "x".repeat(MAX_LINE * 2 + 5);
        let input = format!("one\r\ntwo \x1b[31mred\n{long}\nlast");
        pump("c".into(), input.as_bytes(), Arc::clone(&ring)).await;
        let lines = ring.lines();
        assert_eq!(&*lines[0], "one");
        assert!(
            !lines[1].contains('\x1b') && lines[1].starts_with("two "),
            "{}",
            lines[1]
        );
        // The long line arrives in pieces of at most MAX_LINE (plus the sanitiser's mark).
        assert!(
            lines[2..lines.len() - 1]
                .iter()
                .all(|l| l.len() <= MAX_LINE + 4)
        );
        assert_eq!(&**lines.last().unwrap(), "last");
    }

    #[tokio::test]
    async fn a_follower_gets_what_was_kept_then_each_new_line_once() {
        let ring = LogRing::new(1 << 20);
        ring.push("before");
        let (kept, mut rx) = ring.follow();
        ring.push("after");
        assert_eq!(kept.len(), 1);
        assert_eq!(&*rx.recv().await.unwrap(), "after");
    }
}
