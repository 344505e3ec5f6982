use std::sync::Arc;
use std::time::Duration;

use memwarden_probe::Probe;
use tokio::sync::{mpsc, oneshot};

use super::{AdmitError, Found, Msg, Owner, Shared};
use crate::admission::Phase;
use crate::config::Config;

/// Two upstream-only consumers, found up at start, that may not run at once.
fn two_rivals() -> (Owner, mpsc::UnboundedReceiver<Msg>) {
    let toml = "[[pool]]\nname = \"ram\"\nkind = \"ram\"\ncapacity = \"1GiB\"\n\
                [[consumer]]\nname = \"a\"\npool = \"ram\"\nresident = \"1MiB\"\nupstream = \"http://127.0.0.1:9\"\n\
                [[consumer]]\nname = \"b\"\npool = \"ram\"\nresident = \"1MiB\"\nupstream = \"http://127.0.0.1:9\"\n";
    let cfg = Arc::new(Config::parse(toml, "t.toml", None).unwrap());
    let probe = Probe::new(
        memwarden_probe::HostRoot::system(),
        memwarden_probe::GpuSourceKind::None,
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let mut o = Owner::new(cfg, tx, Shared::new(probe));
    for (c, name) in ["a", "b"].into_iter().enumerate() {
        o.probe(c);
        assert_eq!(o.cons[c].phase, Phase::Loading);
        o.probed(name, o.rt[c].generation, Found::Up);
        assert_eq!(o.cons[c].phase, Phase::Loaded);
    }
    (o, rx)
}

fn acquire(o: &mut Owner, id: u64, name: &str) -> oneshot::Receiver<Result<(), AdmitError>> {
    let (reply, rx) = oneshot::channel();
    o.handle(Msg::Acquire {
        id,
        consumer: name.into(),
        reply,
    });
    o.schedule(0);
    o.open_gates();
    rx
}

#[tokio::test]
async fn work_through_a_gate_is_counted_before_a_rival_is_decided() {
    let (mut o, _rx) = two_rivals();
    o.open_gates();
    let gates = Arc::clone(&o.shared.gates);
    // One gate of the two rivals: the other's requests go to the owner.
    let a = gates.get("a").expect("a's gate is open");
    assert!(gates.get("b").is_none());
    assert!(a.enter());
    // A request for b closes a's gate first: the request running through it counts, so b
    // waits for it.
    let mut b = acquire(&mut o, 1, "b");
    assert!(!a.enter(), "closed");
    assert_eq!(o.cons[0].in_flight, 1);
    assert!(b.try_recv().is_err(), "b must not run beside a");
    // a's request ends: told by message, as the gate is closed, and b runs.
    assert!(!a.leave());
    o.handle(Msg::GateRelease { gate: a.id });
    o.schedule(0);
    o.open_gates();
    assert!(b.try_recv().unwrap().is_ok());
    assert_eq!(o.cons[0].in_flight, 0);
    assert!(o.cons[0].last_used.is_some());
    // b runs (granted by the owner), so a gets no gate; b's gate opens, as b is busy.
    assert!(gates.get("a").is_some_and(|g| !g.enter()));
    assert!(gates.get("b").expect("b's gate").enter());
    let st = o.status();
    assert_eq!(st.counters.served, 3);
    assert_eq!(st.consumers[1].in_flight, 2);
}

#[tokio::test]
async fn no_gate_opens_while_its_pool_has_a_queue_or_the_broker_stops() {
    let (mut o, _rx) = two_rivals();
    // a runs by the owner's grant; b's request waits for it.
    let _a = acquire(&mut o, 1, "a");
    let _b = acquire(&mut o, 2, "b");
    assert_eq!(o.pools[0].queue.len(), 1);
    assert!(o.shared.gates.get("a").is_none_or(|g| !g.enter()));
    o.handle(Msg::Release { id: 1 });
    o.schedule(0);
    o.open_gates();
    assert!(o.pools[0].queue.is_empty());
    assert!(o.shared.gates.get("b").is_some_and(|g| g.enter()));
    o.handle(Msg::Shutdown);
    o.open_gates();
    assert!(o.gates.iter().all(Option::is_none));
    assert!(o.shared.gates.get("b").is_some_and(|g| !g.enter()));
}

#[tokio::test]
async fn a_stuck_consumers_retries_back_off_to_a_bound() {
    let (mut o, _rx) = two_rivals();
    let first = o.cfg.pools[0].stuck_retry;
    o.retry_later(0, false);
    assert_eq!(o.rt[0].retry_every, first);
    let mut waits = Vec::new();
    for _ in 0..8 {
        o.retry_later(0, true);
        waits.push(o.rt[0].retry_every.as_secs());
    }
    assert_eq!(waits, [60, 120, 240, 480, 600, 600, 600, 600]);
    // Found stuck anew: from the start again.
    o.retry_later(0, false);
    assert_eq!(o.rt[0].retry_every, first);
    assert!(o.rt[0].retry_at.is_some());
}

#[test]
fn a_timeout_says_its_wait_to_the_millisecond() {
    let e = AdmitError::Timeout {
        consumer: "b".into(),
        waited: Duration::new(8, 52_468_548),
        reason: "r".into(),
    };
    assert_eq!(e.to_string(), "waited 8s 52ms for \"b\" without a turn: r");
}
