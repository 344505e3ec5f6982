//! Saying whom the room is held by: every refusal (503, 507) and every log line about one
//! names the consumers that hold what the request needs, how and how much, so that whoever
//! reads it sees whom to blame.

use std::time::Instant;

use memwarden_probe::size::format_size;

use super::Owner;
use crate::admission::{self, Decision, Hold, Holder};

impl Owner {
    /// `"p" (pinned, 6 GiB), "trainer" (leased, 20 GiB)`: the consumers that hold room in
    /// consumer `c`'s pool (those that never make room for it alone when `fixed`), or `None`
    /// when there are none.
    pub(super) fn holders_text(&self, c: usize, fixed: bool) -> Option<String> {
        let list: Vec<String> = admission::holders(&self.cons, c)
            .into_iter()
            .filter(|h| !fixed || h.hold.is_fixed())
            .map(|h| self.holder_text(h))
            .collect();
        (!list.is_empty()).then(|| list.join(", "))
    }

    fn holder_text(&self, h: Holder) -> String {
        let cfg = &self.cfg.consumers[h.consumer];
        let how = match h.hold {
            Hold::Kept if cfg.pinned => "pinned",
            Hold::Kept if cfg.self_managed => "self-managed",
            Hold::Kept => "up, with no unload route or start command",
            other => other.as_str(),
        };
        format!("{:?} ({how}, {})", cfg.name, format_size(h.bytes))
    }

    /// Why a request for `c` in pool `p`, refused because the queue is full, would have had
    /// to wait.
    pub(super) fn would_wait(&self, p: usize, c: usize) -> String {
        let decision = admission::decide(self.pool_view(p), &self.cons, c);
        let why = match &decision {
            Decision::Wait(w) => self.wait_reason(c, Some(w)),
            Decision::Evict(v) => {
                let names: Vec<String> = v.iter().map(|&v| self.holder_name(v)).collect();
                format!("it needs {} evicted first", names.join(", "))
            }
            Decision::Load => format!("{} has to be loaded first", self.holder_name(c)),
            Decision::Run => "requests that have waited longer have their turn first".into(),
            Decision::Never { need, room } => self.never_message(c, *need, *room),
        };
        let oldest = self.pools[p]
            .queue
            .front()
            .map(|w| Instant::now() - w.since);
        match oldest {
            Some(o) => format!(
                "{why} (the oldest has waited {})",
                crate::human::duration(o)
            ),
            None => why,
        }
    }

    fn holder_name(&self, c: usize) -> String {
        format!("{:?}", self.cfg.consumers[c].name)
    }
}
