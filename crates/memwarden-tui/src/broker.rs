//! The memwarden broker beside the view, when one answers: its pools and consumers from
//! `/v1/status`. The broker is asked on a thread of its own, with a short timeout, so a slow or
//! absent broker never holds a frame; the answer reaches the event loop like a sample does.

use std::sync::mpsc::Sender;
use std::time::Duration;

use memwarden_probe::sanitize::sanitize;
use serde_json::Value;

use crate::live::Event;

/// How the view asks the broker: given by the binary, which links the broker's client. It
/// must return within its own short timeout.
pub type AskBroker = Box<dyn FnMut() -> Result<Value, String> + Send>;

/// Where the broker is and how to ask it.
pub struct BrokerSource {
    pub url: String,
    /// Asked for by name (`--broker`, `MEMWARDEN_BROKER`): a failure is shown. The default
    /// local broker that does not answer is simply not there: no pane.
    pub explicit: bool,
    pub ask: AskBroker,
}

/// Pools and consumers shown; a broker with more says how many more.
const MAX_ROWS: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub kind: String,
    /// The configured capacity, else the device's total.
    pub total: Option<u64>,
    pub promised: Option<u64>,
    pub available: Option<u64>,
    pub queue: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    pub name: String,
    pub pool: String,
    /// As the broker says it: `loaded`, `loading`, `unloaded`, `unloading`, `stuck`,
    /// `sleeping`, ...
    pub state: String,
    pub pinned: bool,
    /// What it holds now, and what its configuration declares it needs.
    pub holds: Option<u64>,
    pub declared: Option<u64>,
    pub in_flight: u64,
    pub queued: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerView {
    pub url: String,
    pub pools: Vec<Pool>,
    pub consumers: Vec<Consumer>,
    /// Pools and consumers beyond what is kept.
    pub more: usize,
}

/// What the pane shows: the broker's last answer, or why it gave none.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerState {
    Answered(BrokerView),
    Failed { url: String, why: String },
}

/// The view of a `/v1/status` answer. Every string came from the broker's configuration and
/// is sanitised before it can reach the terminal; a missing figure stays unknown.
pub fn parse_status(url: &str, v: &Value) -> BrokerView {
    let empty = Vec::new();
    let text = |v: &Value| {
        v.as_str()
            .map_or_else(|| "-".to_string(), |s| sanitize(s, 40))
    };
    let pools_in = v["pools"].as_array().unwrap_or(&empty);
    let consumers_in = v["consumers"].as_array().unwrap_or(&empty);
    let pools = pools_in
        .iter()
        .take(MAX_ROWS)
        .map(|p| Pool {
            name: text(&p["name"]),
            kind: text(&p["kind"]),
            total: p["capacity_bytes"]
                .as_u64()
                .or_else(|| p["total_bytes"].as_u64()),
            promised: p["promised_bytes"].as_u64(),
            available: p["available_bytes"].as_u64(),
            queue: p["queue_length"].as_u64().unwrap_or(0),
        })
        .collect();
    let consumers = consumers_in
        .iter()
        .take(MAX_ROWS)
        .map(|c| Consumer {
            name: text(&c["name"]),
            pool: text(&c["pool"]),
            state: text(&c["state"]),
            pinned: c["pinned"].as_bool() == Some(true),
            holds: c["resident_bytes"].as_u64(),
            declared: c["declared_bytes"].as_u64(),
            in_flight: c["in_flight"].as_u64().unwrap_or(0),
            queued: c["queued"].as_u64().unwrap_or(0),
        })
        .collect();
    BrokerView {
        url: sanitize(url, 80),
        pools,
        consumers,
        more: (pools_in.len() + consumers_in.len())
            .saturating_sub(pools_in.len().min(MAX_ROWS) + consumers_in.len().min(MAX_ROWS)),
    }
}

/// What the pane shows after an answer: `None` hides it (the default broker is not there).
pub fn state_after(
    url: &str,
    explicit: bool,
    answer: Result<Value, String>,
) -> Option<BrokerState> {
    match answer {
        Ok(v) => Some(BrokerState::Answered(parse_status(url, &v))),
        Err(why) if explicit => Some(BrokerState::Failed {
            url: sanitize(url, 80),
            why: sanitize(&why, 160),
        }),
        Err(_) => None,
    }
}

/// Asks the broker every `every` (every 5 × `every` while the default one is absent) on its
/// own thread; ends when the event loop's receiver is gone.
pub fn spawn(mut source: BrokerSource, every: Duration, tx: Sender<Event>) {
    let _ = std::thread::Builder::new()
        .name("memwarden-broker".into())
        .spawn(move || {
            loop {
                let state = state_after(&source.url, source.explicit, (source.ask)());
                let absent = state.is_none();
                if tx.send(Event::Broker(state.map(Box::new))).is_err() {
                    return;
                }
                std::thread::sleep(if absent { every * 5 } else { every });
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_into_pools_and_consumers() {
        let v = serde_json::json!({
            "pools": [{"name": "gpu0", "kind": "vram", "total_bytes": 24u64 << 30,
                       "capacity_bytes": null, "promised_bytes": 8u64 << 30,
                       "available_bytes": 10u64 << 30, "queue_length": 2}],
            "consumers": [
                {"name": "llm\u{1b}[2J", "pool": "gpu0", "state": "stuck", "resident_bytes": 8u64 << 30,
                 "declared_bytes": 6u64 << 30, "in_flight": 1, "queued": 3, "pinned": true},
                {"name": "sd", "pool": "gpu0", "state": "sleeping"}
            ]
        });
        let b = parse_status("http://127.0.0.1:7077", &v);
        assert_eq!(b.pools[0].total, Some(24 << 30));
        assert_eq!(b.pools[0].queue, 2);
        let c = &b.consumers[0];
        assert!(!c.name.contains('\u{1b}'));
        assert_eq!((c.state.as_str(), c.pinned, c.queued), ("stuck", true, 3));
        assert_eq!((c.holds, c.declared), (Some(8 << 30), Some(6 << 30)));
        // What the broker leaves out stays unknown.
        assert_eq!(
            (b.consumers[1].holds, b.consumers[1].declared),
            (None, None)
        );
        assert_eq!(b.more, 0);
    }

    #[test]
    fn an_absent_default_broker_hides_the_pane_a_named_one_says_why() {
        assert_eq!(state_after("u", false, Err("refused".into())), None);
        assert_eq!(
            state_after("u", true, Err("refused".into())),
            Some(BrokerState::Failed {
                url: "u".into(),
                why: "refused".into()
            })
        );
        assert!(matches!(
            state_after("u", false, Ok(serde_json::json!({}))),
            Some(BrokerState::Answered(_))
        ));
    }

    #[test]
    fn a_huge_answer_is_cut_and_counted() {
        let consumers: Vec<Value> = (0..100)
            .map(|i| serde_json::json!({"name": format!("c{i}")}))
            .collect();
        let b = parse_status("u", &serde_json::json!({ "consumers": consumers }));
        assert_eq!(b.consumers.len(), MAX_ROWS);
        assert_eq!(b.more, 100 - MAX_ROWS);
    }
}
