//! Large request bodies routed by their `model`: read only up to the model, the rest streamed
//! through byte-exact, and the memory of the whole process (client, broker and upstream run in
//! it, each streaming) measured by its peak resident size, far below the bodies' size.

mod common;

use std::convert::Infallible;
use std::hash::{DefaultHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use hyper::Request;
use memwarden_broker::client::BrokerClient;

const MIB: u64 = 1 << 20;

/// An upstream that reads each request body as it comes and keeps none of it: it answers the
/// number of bytes and their hash, and counts the requests it saw.
async fn counting_upstream() -> (u16, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let app = axum::Router::new()
        .fallback(move |req: axum::extract::Request| async move {
            count.fetch_add(1, Ordering::Relaxed);
            let mut body = req.into_body();
            let (mut n, mut h) = (0u64, DefaultHasher::new());
            while let Some(frame) = body.frame().await {
                match frame.map(|f| f.into_data()) {
                    Ok(Ok(d)) => {
                        n += d.len() as u64;
                        h.write(&d);
                    }
                    Ok(Err(_)) => {}
                    Err(e) => return format!("broken off: {e}"),
                }
            }
            format!("{n} {:x}", h.finish())
        })
        .layer(axum::extract::DefaultBodyLimit::disable());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (port, seen)
}

/// A broker with one consumer, serving model `big`, in front of [`counting_upstream`]; `extra`
/// goes into the consumer's block.
async fn broker_with(extra: &str) -> (memwarden_broker::Running, String, Arc<AtomicUsize>) {
    let (port, seen) = counting_upstream().await;
    let toml = pool_toml("4GiB", "")
        + &format!(
            "[[consumer]]\nname = \"up\"\npool = \"ram\"\nresident = \"1MiB\"\n\
             upstream = \"http://127.0.0.1:{port}\"\nmodels = [\"big\"]\n{extra}\n"
        );
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    (r, base, seen)
}

async fn broker() -> (memwarden_broker::Running, String) {
    let (r, base, _) = broker_with("").await;
    (r, base)
}

/// A chat request with `filler` bytes of message, its model before or after them.
struct Chat {
    head: Bytes,
    filler: u64,
    tail: Bytes,
}

impl Chat {
    fn model_first(filler: u64) -> Chat {
        Chat {
            head: Bytes::from_static(br#"{"model":"big","messages":[{"role":"user","content":""#),
            filler,
            tail: Bytes::from_static(br#""}]}"#),
        }
    }

    fn model_last(filler: u64) -> Chat {
        Chat {
            head: Bytes::from_static(br#"{"messages":[{"role":"user","content":""#),
            filler,
            tail: Bytes::from_static(br#""}],"model":"big"}"#),
        }
    }

    fn len(&self) -> u64 {
        self.head.len() as u64 + self.filler + self.tail.len() as u64
    }

    /// The body in pieces, all slices of one shared buffer: sending it holds no copy.
    fn chunks(&self) -> impl Iterator<Item = Bytes> + Send + 'static {
        static TEXT: OnceLock<Bytes> = OnceLock::new();
        let text = TEXT
            .get_or_init(|| (0..MIB).map(|i| b'a' + (i % 26) as u8).collect())
            .clone();
        let filler = self.filler;
        let middle = (0..filler.div_ceil(MIB))
            .map(move |i| text.slice(..(filler - i * MIB).min(MIB) as usize));
        [self.head.clone()]
            .into_iter()
            .chain(middle)
            .chain([self.tail.clone()])
    }

    /// What [`counting_upstream`] answers for this body, received whole.
    fn answer(&self) -> String {
        let mut h = DefaultHasher::new();
        self.chunks().for_each(|c| h.write(&c));
        format!("{} {:x}", self.len(), h.finish())
    }

    async fn send(&self, base: &str) -> (u16, Option<String>, String) {
        self.send_to(base, "/v1/chat/completions").await
    }

    async fn send_to(&self, base: &str, path: &str) -> (u16, Option<String>, String) {
        let stream = futures_util::stream::iter(self.chunks().map(Ok::<_, Infallible>));
        let req = Request::post(format!("{base}{path}"))
            .header("content-length", self.len())
            .body(Body::from_stream(stream))
            .unwrap();
        let resp = client().request(req).await.expect("an answer");
        let status = resp.status().as_u16();
        let retry = (resp.headers().get("retry-after")).map(|v| v.to_str().unwrap().to_string());
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("the whole answer")
            .to_bytes();
        (status, retry, String::from_utf8_lossy(&body).into_owned())
    }
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    (s.lines().find_map(|l| l.strip_prefix(field)))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Runs `f` and returns what it returns and how far the process's resident memory rose above
/// what it was before, at its peak (Linux resets the peak on writing 5 to clear_refs).
async fn peak_growth<T>(f: impl std::future::Future<Output = T>) -> (T, u64) {
    std::fs::write("/proc/self/clear_refs", "5").expect(
        "resetting the peak RSS needs Linux 4.0 or later and a writable /proc/self/clear_refs",
    );
    let before = status_kib("VmRSS:");
    let out = f.await;
    let grew = status_kib("VmHWM:").saturating_sub(before) * 1024;
    eprintln!("peak resident memory grew by {} MiB", grew / MIB);
    (out, grew)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_far_larger_than_memory_allows_streams_through_byte_exact() {
    let _one = one_at_a_time().await;
    let (r, base) = broker().await;
    let chat = Chat::model_first(200 * MIB);
    let want = chat.answer();
    let ((code, _, answer), grew) = peak_growth(chat.send(&base)).await;
    assert_eq!((code, answer), (200, want));
    assert!(
        grew < 48 * MIB,
        "the process grew {} MiB for a 200 MiB body",
        grew / MIB
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_after_a_large_message_is_found_within_the_cap() {
    let _one = one_at_a_time().await;
    let (r, base) = broker().await;
    let chat = Chat::model_last(40 * MIB);
    let (code, _, answer) = chat.send(&base).await;
    assert_eq!((code, answer), (200, chat.answer()));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_beyond_the_first_64_mib_is_refused_in_one_line() {
    let _one = one_at_a_time().await;
    let (r, base) = broker().await;
    let (code, _, answer) = Chat::model_last(64 * MIB).send(&base).await;
    assert_eq!(code, 413, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let line = v["error"].as_str().unwrap();
    assert_eq!(
        line,
        "a request routed by its model must name it within its first 64 MiB; \
         send it to /c/CONSUMER/v1/chat/completions"
    );
    // The broker goes on routing.
    let small = Chat::model_first(10);
    assert_eq!(small.send(&base).await.2, small.answer());
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_bodies_at_once_take_bounded_memory() {
    let _one = one_at_a_time().await;
    let (r, base) = broker().await;
    // Model first: each body streams, none is held.
    let chat = Chat::model_first(63 * MIB);
    let want = chat.answer();
    let sends = (0..16).map(|_| chat.send(&base));
    let (answers, grew) = peak_growth(futures_util::future::join_all(sends)).await;
    for (code, _, answer) in answers {
        assert_eq!((code, &answer), (200, &want));
    }
    assert!(
        grew < 64 * MIB,
        "16 bodies of 63 MiB grew the process {} MiB",
        grew / MIB
    );

    // Model last: each body is held up to its model, all of them within one budget (256 MiB);
    // past it a request is told to come back.
    let chat = Chat::model_last(32 * MIB);
    let want = chat.answer();
    let sends = (0..16).map(|_| chat.send(&base));
    let (answers, grew) = peak_growth(futures_util::future::join_all(sends)).await;
    for (code, retry, answer) in answers {
        match code {
            200 => assert_eq!(answer, want),
            503 => assert_eq!(retry.as_deref(), Some("1"), "{answer}"),
            _ => panic!("{code} {answer}"),
        }
    }
    assert!(
        grew < 320 * MIB,
        "16 bodies of 24 MiB held grew the process {} MiB",
        grew / MIB
    );
    r.shutdown().await;
}

/// A request refused before its body is read (an unknown consumer or model) gets its answer,
/// not a reset connection, however much of its body is still on its way: the broker reads the
/// rest off the socket after answering instead of closing a socket with bytes unread in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_its_body_is_read_gets_its_answer() {
    let _one = one_at_a_time().await;
    let (r, base) = broker().await;
    let nobody = Chat {
        head: Bytes::from_static(br#"{"model":"nobody","messages":[{"role":"user","content":""#),
        ..Chat::model_first(32 * MIB)
    };
    for _ in 0..8 {
        let to_nowhere = Chat::model_first(32 * MIB);
        let (code, _, answer) = to_nowhere.send_to(&base, "/c/nosuch/v1/chat").await;
        assert_eq!(code, 404, "{answer}");
        let (code, _, answer) = nobody.send(&base).await;
        assert_eq!(code, 404, "{answer}");
    }
    let small = Chat::model_first(10);
    assert_eq!(small.send(&base).await.2, small.answer());
    r.shutdown().await;
}

/// The requests waiting for `up`, as `/metrics` says.
async fn waiting(base: &str) -> String {
    let (code, text) = http("GET", format!("{base}/metrics"), "").await;
    assert_eq!(code, 200, "{text}");
    let series = "memwarden_consumer_requests_waiting{consumer=\"up\",pool=\"ram\"} ";
    (text.lines().find_map(|l| l.strip_prefix(series)))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .to_string()
}

async fn until_waiting(base: &str, n: &str) {
    for _ in 0..400 {
        if waiting(base).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never {n} waiting");
}

/// While a request waits its turn the rest of its body stays unread in the socket, so a client
/// that goes away then is seen when the turn comes: the body breaks off on its way upstream,
/// the request ends, and the upstream is not blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_while_queued_ends_its_request_cleanly() {
    use tokio::io::AsyncWriteExt;
    let _one = one_at_a_time().await;
    let (r, base, _) = broker_with("max_concurrent = 1").await;
    let lease = BrokerClient::new(&base, None).unwrap();
    let id = lease
        .take_lease("up", Duration::from_secs(60))
        .await
        .unwrap();
    // Its model, of a body of 100 MiB that never comes.
    let mut conn = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    let head = Chat::model_first(0).head;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        100 * MIB
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    conn.write_all(&head).await.unwrap();
    until_waiting(&base, "1").await;
    drop(conn);
    lease.give_back(&id).await.unwrap();
    until_waiting(&base, "0").await;
    let small = Chat::model_first(10);
    assert_eq!(small.send(&base).await.2, small.answer());
    let st = status(&r).await;
    assert_eq!(st["counters"]["upstream_errors"], 0, "{st:#}");
    assert_eq!(consumer(&st, "up")["in_flight"], 0, "{st:#}");
    r.shutdown().await;
}
