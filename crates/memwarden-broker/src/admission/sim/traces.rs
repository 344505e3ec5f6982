//! The synthetic traces the policies are compared on, each on a 24 GiB card and drawn from a
//! fixed seed, so every run replays the same requests.

use super::{Client, Model, Step, Trace};

const GIB: u64 = 1 << 30;
const MINUTE: u64 = 60_000;

/// Numbers that look random and are the same on every run.
struct Draw(u64);

impl Draw {
    /// In `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = (self.0)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo + 1)
    }
}

fn model(name: &'static str, gib: f64, load_ms: u64) -> Model {
    Model {
        name,
        need: (gib * GIB as f64) as u64,
        load_ms,
        unload_ms: 1_500,
        max_concurrent: 4,
        priority: 0,
        min_residency_ms: 5_000,
        coexist_with: Vec::new(),
        ephemeral: false,
    }
}

/// An agent framework running tasks for 20 minutes, a new one every 5 to 10 s: each task
/// plans with one model and writes code with another, five times in turn, a moment apart. The
/// two (14 and 12 GiB) cannot share the card; they are llama.cpp servers that load from the
/// page cache in 4 and 3.5 s.
pub fn alternating() -> Trace {
    alternating_with(4_000, 3_500)
}

/// The same with loads of 9 and 7 s (a vLLM start, or weights read from disk).
pub fn alternating_slow_loads() -> Trace {
    Trace {
        name: "the same, with 9 s and 7 s loads",
        ..alternating_with(9_000, 7_000)
    }
}

fn alternating_with(load_planner: u64, load_coder: u64) -> Trace {
    let mut d = Draw(1);
    let mut clients = Vec::new();
    let mut t = 0;
    while t < 20 * MINUTE {
        let mut steps = Vec::new();
        for _ in 0..5 {
            steps.push(Step {
                model: 0,
                after_ms: d.between(200, 1_000),
                work_ms: d.between(1_500, 4_000),
            });
            steps.push(Step {
                model: 1,
                after_ms: d.between(200, 1_000),
                work_ms: d.between(1_000, 3_000),
            });
        }
        clients.push(Client { start_ms: t, steps });
        t += d.between(5_000, 10_000);
    }
    Trace {
        name: "an agent alternating between two models",
        capacity: 24 * GIB,
        max_wait_ms: 120_000,
        models: vec![
            model("planner", 14.0, load_planner),
            model("coder", 12.0, load_coder),
        ],
        clients,
    }
}

/// Four models of which three fit at once, asked for in bursts for 20 minutes: a chat model
/// and an embedder often, a code model and a vision model (slow to load) now and then.
pub fn bursty_four() -> Trace {
    let mut d = Draw(2);
    let mut clients = Vec::new();
    let mut t = 0;
    while t < 20 * MINUTE {
        let model = match d.between(0, 99) {
            0..45 => 0,
            45..75 => 1,
            75..88 => 2,
            _ => 3,
        };
        let work = [(2_000, 6_000), (100, 400), (2_000, 8_000), (1_000, 3_000)][model];
        for _ in 0..d.between(3, 12) {
            clients.push(Client {
                start_ms: t + d.between(0, 3_000),
                steps: vec![Step {
                    model,
                    after_ms: 0,
                    work_ms: d.between(work.0, work.1),
                }],
            });
        }
        t += d.between(3_000, 12_000);
    }
    Trace {
        name: "a bursty mix of four models",
        capacity: 24 * GIB,
        max_wait_ms: 120_000,
        models: vec![
            model("chat", 10.0, 6_000),
            model("embed", 2.0, 1_500),
            model("code", 11.0, 8_000),
            model("vision", 11.0, 12_000),
        ],
        clients,
    }
}

/// A chat model and an embedder that share the card, used all the time, and two 90-second
/// batch jobs under a lease that need nearly all of it; the jobs have the lower priority.
pub fn lease_beside_interactive() -> Trace {
    let mut d = Draw(3);
    let mut clients = Vec::new();
    let mut t = 0;
    while t < 15 * MINUTE {
        clients.push(Client {
            start_ms: t,
            steps: vec![Step {
                model: 0,
                after_ms: 0,
                work_ms: d.between(1_000, 3_000),
            }],
        });
        t += d.between(1_000, 4_000);
    }
    let mut t = 0;
    while t < 15 * MINUTE {
        clients.push(Client {
            start_ms: t,
            steps: vec![Step {
                model: 1,
                after_ms: 0,
                work_ms: d.between(100, 300),
            }],
        });
        t += d.between(500, 2_000);
    }
    for start in [2 * MINUTE, 7 * MINUTE] {
        clients.push(Client {
            start_ms: start,
            steps: vec![Step {
                model: 2,
                after_ms: 0,
                work_ms: 90_000,
            }],
        });
    }
    let mut chat = model("chat", 8.0, 6_000);
    chat.coexist_with = vec![1];
    let mut embed = model("embed", 2.0, 1_500);
    embed.coexist_with = vec![0];
    let mut job = model("trainer", 20.0, 0);
    job.ephemeral = true;
    job.priority = -1;
    Trace {
        name: "a batch lease beside interactive traffic",
        capacity: 24 * GIB,
        max_wait_ms: 120_000,
        models: vec![chat, embed, job],
        clients,
    }
}

/// Every trace, in the order the figures give them.
pub fn all() -> Vec<Trace> {
    vec![
        alternating(),
        alternating_slow_loads(),
        bursty_four(),
        lease_beside_interactive(),
    ]
}
