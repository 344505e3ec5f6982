//! What the broker does, as a stream: `GET /v1/events`. The events are the broker's own log
//! lines (info and above), taken where they are written, so the log and the stream carry the
//! same facts by construction: loads and unloads with their seconds, evictions, refusals with
//! their reason, stuck consumers, reloads.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

/// Events kept for a new reader.
pub const KEPT: usize = 500;

/// The recent events and their live stream.
pub struct EventHub {
    kept: Mutex<VecDeque<Arc<str>>>,
    live: broadcast::Sender<Arc<str>>,
}

impl Default for EventHub {
    fn default() -> EventHub {
        EventHub {
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            live: broadcast::channel(KEPT).0,
        }
    }
}

impl EventHub {
    /// Keeps one event (a JSON object) and hands it to readers.
    pub fn push(&self, event: Value) {
        let line: Arc<str> = Arc::from(event.to_string());
        if let Ok(mut k) = self.kept.lock() {
            if k.len() == KEPT {
                k.pop_front();
            }
            k.push_back(Arc::clone(&line));
        }
        let _ = self.live.send(line);
    }

    /// The events kept, oldest first, and a receiver of every later one.
    pub fn follow(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let k = self.kept.lock().expect("events lock");
        (k.iter().cloned().collect(), self.live.subscribe())
    }
}

/// Whether a log record is one of the broker's events.
fn is_event(meta: &Metadata<'_>) -> bool {
    meta.is_event() && *meta.level() <= Level::INFO && meta.target().starts_with("memwarden_broker")
}

/// A subscriber that passes everything on to the one in force and also keeps the broker's
/// events in its hub. Tasks of one broker run under it, so that brokers in one process (tests)
/// each see their own.
pub struct Tee {
    inner: Dispatch,
    hub: Arc<EventHub>,
}

impl Tee {
    /// A tee in front of the subscriber in force now.
    pub fn dispatch(hub: Arc<EventHub>) -> Dispatch {
        let inner = tracing::dispatcher::get_default(Dispatch::clone);
        Dispatch::new(Tee { inner, hub })
    }
}

impl Subscriber for Tee {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if is_event(meta) {
            Interest::always()
        } else {
            self.inner.register_callsite(meta)
        }
    }
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        is_event(meta) || self.inner.enabled(meta)
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values)
    }
    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows)
    }
    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        if is_event(meta) {
            let mut fields = Fields(Map::new());
            event.record(&mut fields);
            let mut obj = fields.0;
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            obj.insert("at_ms".into(), at.into());
            obj.insert("level".into(), meta.level().as_str().to_lowercase().into());
            self.hub.push(Value::Object(obj));
        }
        if self.inner.enabled(meta) {
            self.inner.event(event)
        }
    }
    fn enter(&self, span: &Id) {
        self.inner.enter(span)
    }
    fn exit(&self, span: &Id) {
        self.inner.exit(span)
    }
    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }
    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }
}

/// An event's fields as JSON: `message` and the rest by name.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = memwarden_probe::sanitize::sanitize(&format!("{value:?}"), 2048);
        self.0.insert(field.name().into(), text.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let text = memwarden_probe::sanitize::sanitize(value, 2048);
        self.0.insert(field.name().into(), text.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brokers_info_lines_become_events_with_their_fields() {
        let hub = Arc::new(EventHub::default());
        tracing::dispatcher::with_default(&Tee::dispatch(Arc::clone(&hub)), || {
            tracing::info!(consumer = "a", seconds = 1.5, "loaded");
            tracing::debug!("not an event");
            tracing::warn!(target: "elsewhere", "not the broker's");
        });
        let (kept, _) = hub.follow();
        assert_eq!(kept.len(), 1, "{kept:?}");
        let v: Value = serde_json::from_str(&kept[0]).unwrap();
        assert_eq!(v["message"], "loaded");
        assert_eq!(v["consumer"], "a");
        assert_eq!(v["seconds"], 1.5);
        assert_eq!(v["level"], "info");
    }

    #[test]
    fn only_the_last_events_are_kept() {
        let hub = EventHub::default();
        for i in 0..KEPT + 10 {
            hub.push(serde_json::json!({ "n": i }));
        }
        let (kept, _) = hub.follow();
        assert_eq!(kept.len(), KEPT);
        assert!(kept[0].contains("\"n\":10"));
    }
}
