//! `/metrics`: the broker's counters and the machine's snapshot in the Prometheus text format,
//! so that `memwarden serve` is also the node's exporter.

use std::fmt::Write;

use memwarden_probe::Snapshot;

use crate::admission::Phase;
use crate::owner::Status;

mod machine;

pub use machine::{DEFAULT_MAX_PROCESSES, series_bound};

/// Escapes a label value: backslash, double quote and newline.
fn esc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Renders the broker's status (when there is a broker) and a snapshot (when one was read),
/// with per-process series for at most [`DEFAULT_MAX_PROCESSES`] GPU holders.
pub fn render(status: Option<&Status>, snap: Option<&Snapshot>) -> String {
    render_limited(status, snap, DEFAULT_MAX_PROCESSES)
}

/// [`render`] with per-process series for at most `max_processes` GPU holders.
pub fn render_limited(
    status: Option<&Status>,
    snap: Option<&Snapshot>,
    max_processes: usize,
) -> String {
    let mut o = Out(String::with_capacity(8 * 1024));
    if let Some(s) = status {
        broker(&mut o, s);
    }
    if let Some(s) = snap {
        machine::render(&mut o, s, max_processes);
    }
    o.0
}

/// Every phase a consumer's status may report; with "stuck", each is a series of
/// `memwarden_consumer_state` (1 for the current one), so that a router reads "not loaded" as
/// a 1, not as a missing series.
const PHASES: [Phase; 5] = [
    Phase::Loaded,
    Phase::Loading,
    Phase::Unloaded,
    Phase::Unloading,
    Phase::Sleeping,
];

// A phase added without a series above fails to compile here.
const _: fn(Phase) = |p| match p {
    Phase::Loaded | Phase::Loading | Phase::Unloaded | Phase::Unloading | Phase::Sleeping => {}
};

fn broker(o: &mut Out, s: &Status) {
    let c = &s.counters;
    let counters: [(&str, &str, f64); 13] = [
        (
            "memwarden_broker_evictions_total",
            "Consumers unloaded to make room, memory verified back",
            c.evictions as f64,
        ),
        (
            "memwarden_broker_idle_unloads_total",
            "Consumers unloaded after their idle_ttl or by an admin",
            c.idle_unloads as f64,
        ),
        (
            "memwarden_broker_loads_total",
            "Consumers loaded",
            c.loads as f64,
        ),
        (
            "memwarden_broker_load_failures_total",
            "Loads that failed or were not ready in time",
            c.load_failures as f64,
        ),
        (
            "memwarden_broker_load_seconds_total",
            "Time spent loading consumers",
            c.load_seconds_total,
        ),
        (
            "memwarden_broker_sleeps_total",
            "Servers put to sleep to make room, memory verified back",
            c.sleeps as f64,
        ),
        (
            "memwarden_broker_wakes_total",
            "Sleeping servers woken",
            c.wakes as f64,
        ),
        (
            "memwarden_broker_wake_seconds_total",
            "Time spent waking servers",
            c.wake_seconds_total,
        ),
        (
            "memwarden_broker_unload_failures_total",
            "Unload calls that failed",
            c.unload_failures as f64,
        ),
        (
            "memwarden_broker_stuck_total",
            "Unloads after which the memory did not come back",
            c.stuck as f64,
        ),
        (
            "memwarden_broker_requests_served_total",
            "Requests and leases admitted",
            c.served as f64,
        ),
        (
            "memwarden_broker_requests_cancelled_total",
            "Requests whose client left while queued",
            c.cancelled as f64,
        ),
        (
            "memwarden_broker_upstream_errors_total",
            "Requests whose upstream could not be reached or broke off",
            c.upstream_errors as f64,
        ),
    ];
    for (name, help, v) in counters {
        o.one(name, "counter", help, v);
    }
    let name = "memwarden_broker_requests_rejected_total";
    o.family(name, "counter", "Requests refused, by reason");
    for (reason, v) in [
        ("queue_full", c.rejected_queue_full),
        ("timeout", c.rejected_timeout),
        ("never_fits", c.rejected_never_fits),
        (
            "other",
            c.rejected
                .saturating_sub(c.rejected_queue_full + c.rejected_timeout + c.rejected_never_fits),
        ),
    ] {
        o.sample(name, &[("reason", reason)], v as f64);
    }
    type PoolFig = fn(&crate::owner::PoolStatus) -> Option<f64>;
    let pool_figs: [(&str, &str, PoolFig); 7] = [
        (
            "memwarden_pool_total_bytes",
            "The pool's size (its capacity, else the device's)",
            |p| p.total_bytes.map(|v| v as f64),
        ),
        (
            "memwarden_pool_free_bytes",
            "Free memory in the pool as the broker counts it",
            |p| Some(p.free_bytes as f64),
        ),
        (
            "memwarden_pool_promised_bytes",
            "Memory promised to loads under way",
            |p| Some(p.promised_bytes as f64),
        ),
        (
            "memwarden_pool_cushion_bytes",
            "Memory kept free in the pool",
            |p| Some(p.cushion_bytes as f64),
        ),
        (
            "memwarden_pool_available_bytes",
            "What a new load may take now",
            |p| Some(p.available_bytes as f64),
        ),
        (
            "memwarden_pool_queue_length",
            "Requests waiting for the pool",
            |p| Some(p.queue_length as f64),
        ),
        (
            "memwarden_pool_oldest_queued_seconds",
            "Age of the oldest waiting request",
            |p| Some(p.oldest_queued_seconds),
        ),
    ];
    for (name, help, f) in pool_figs {
        o.family(name, "gauge", help);
        for p in &s.pools {
            if let Some(v) = f(p) {
                o.sample(name, &[("pool", &p.name), ("kind", p.kind)], v);
            }
        }
    }
    let name = "memwarden_consumer_state";
    o.family(name, "gauge", "1 for the consumer's current state");
    for cs in &s.consumers {
        for st in PHASES.iter().map(|p| p.as_str()).chain(["stuck"]) {
            let v = if cs.state == st { 1.0 } else { 0.0 };
            o.sample(
                name,
                &[("consumer", &cs.name), ("pool", &cs.pool), ("state", st)],
                v,
            );
        }
    }
    type ConsFig = fn(&crate::owner::ConsumerStatus) -> Option<f64>;
    let cons_figs: [(&str, &str, &str, ConsFig); 8] = [
        (
            "memwarden_consumer_resident_bytes",
            "gauge",
            "What the consumer is counted as holding",
            |c| Some(c.resident_bytes as f64),
        ),
        (
            "memwarden_consumer_declared_bytes",
            "gauge",
            "The consumer's declared resident size or estimate",
            |c| Some(c.declared_bytes as f64),
        ),
        (
            "memwarden_consumer_measured_bytes",
            "gauge",
            "What the consumer's processes were measured to hold",
            |c| c.measured_bytes.map(|v| v as f64),
        ),
        (
            "memwarden_consumer_requests_running",
            "gauge",
            "Requests and leases running on the consumer",
            |c| Some(c.in_flight as f64),
        ),
        (
            "memwarden_consumer_requests_waiting",
            "gauge",
            "Requests waiting for the consumer (its turn or its pool's room)",
            |c| Some(c.queued as f64),
        ),
        (
            "memwarden_consumer_last_load_seconds",
            "gauge",
            "How long the consumer's last load took",
            |c| c.last_load_seconds,
        ),
        (
            "memwarden_consumer_last_wake_seconds",
            "gauge",
            "How long the consumer's last wake from sleep took",
            |c| c.last_wake_seconds,
        ),
        (
            "memwarden_consumer_sleep_host_bytes",
            "gauge",
            "What a sleeping consumer's processes hold in host RAM",
            |c| c.sleep_host_bytes.map(|v| v as f64),
        ),
    ];
    for (name, kind, help, f) in cons_figs {
        o.family(name, kind, help);
        for cs in &s.consumers {
            if let Some(v) = f(cs) {
                o.sample(name, &[("consumer", &cs.name), ("pool", &cs.pool)], v);
            }
        }
    }
    type ConsCount = fn(&crate::owner::ConsumerStatus) -> u64;
    let cons_counts: [(&str, &str, ConsCount); 3] = [
        (
            "memwarden_consumer_loads_total",
            "Loads of the consumer",
            |c| c.loads,
        ),
        (
            "memwarden_consumer_sleeps_total",
            "Times the consumer was put to sleep",
            |c| c.sleeps,
        ),
        (
            "memwarden_consumer_wakes_total",
            "Wakes of the consumer from sleep",
            |c| c.wakes,
        ),
    ];
    for (name, help, f) in cons_counts {
        o.family(name, "counter", help);
        for cs in &s.consumers {
            o.sample(
                name,
                &[("consumer", &cs.name), ("pool", &cs.pool)],
                f(cs) as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd\x1b"), "a\\\"b\\\\c\\nd ");
    }
}
