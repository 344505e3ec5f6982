//! The kill flow of the interface: ask, SIGTERM, watch, offer SIGKILL; every attempt audited.

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use memwarden_probe::snapshot::ProcessId;

use super::App;
use crate::kill::{self, KillError, Signal};

/// How long after SIGTERM the user is offered SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub enum KillStage {
    Confirm,
    /// SIGTERM sent at this time; waiting to see it go.
    Sent(Instant),
    /// Still there after the grace period: SIGKILL is offered.
    OfferKill,
    Done(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct KillDialog {
    pub target: ProcessId,
    pub name: String,
    pub command: String,
    pub age: Option<Duration>,
    pub stage: KillStage,
}

impl App {
    /// Time passes: a signalled process is watched until it goes or the grace period ends.
    pub fn tick(&mut self, now: Instant) {
        let Some(d) = &mut self.dialog else {
            return;
        };
        let KillStage::Sent(at) = d.stage else {
            return;
        };
        let Some((root, _)) = &self.kill_at else {
            return;
        };
        if !kill::is_alive(root, d.target) {
            d.stage = KillStage::Done(format!("{} (pid {}) has exited", d.name, d.target.pid));
        } else if now.saturating_duration_since(at) >= KILL_GRACE {
            d.stage = KillStage::OfferKill;
        }
    }

    pub(super) fn ask_kill(&mut self, now: Instant) {
        if let Some(why) = &self.kill_off {
            let why = why.clone();
            self.say(why, now);
            return;
        }
        let Some(p) = self.selected_process() else {
            self.say(
                "select a process to end (workloads are ended by their runtime)",
                now,
            );
            return;
        };
        let (target, name, command) = (p.identity(), p.name.clone(), p.cmdline.clone());
        if self.kill_at.is_none() {
            return;
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let refused = match p.uid {
            Some(owner) if !kill::may_signal(me, owner) => Err(KillError::NotOwner {
                pid: p.pid,
                owner,
                me,
            }),
            _ => kill::guard(p.pid),
        };
        if let Err(e) = refused {
            // A refusal is an attempt too: the audit log holds every one (docs/TOP.md).
            let note = self.audit(target, &name, Signal::Term, &Err(e.clone()));
            self.say(format!("not signalled: {e}{note}"), now);
            return;
        }
        let Some((root, _)) = &self.kill_at else {
            return;
        };
        let age = kill::process_age(root, target.starttime);
        self.dialog = Some(KillDialog {
            target,
            name,
            command,
            age,
            stage: KillStage::Confirm,
        });
    }

    /// Appends an attempt to the audit log; the note to show when it could not be written.
    fn audit(
        &self,
        target: ProcessId,
        name: &str,
        signal: Signal,
        outcome: &Result<(), KillError>,
    ) -> String {
        match self.kill_at.as_ref().and_then(|(_, audit)| audit.as_ref()) {
            Some(path) => kill::audit(path, target, name, signal, outcome)
                .err()
                .map(|e| format!(" (audit log not written: {e})"))
                .unwrap_or_default(),
            None => " (no audit log: no home directory)".into(),
        }
    }

    pub(super) fn dialog_key(&mut self, key: KeyEvent, now: Instant) {
        let Some(d) = &self.dialog else {
            return;
        };
        let signal = match (&d.stage, key.code) {
            (KillStage::Confirm, KeyCode::Char('y') | KeyCode::Enter) => Signal::Term,
            (KillStage::OfferKill, KeyCode::Char('K')) => Signal::Kill,
            (KillStage::Sent(_), KeyCode::Esc | KeyCode::Char('n')) => {
                // Stop waiting; the signal has gone already.
                self.dialog = None;
                return;
            }
            (KillStage::Sent(_), _) => return,
            _ => {
                self.dialog = None;
                return;
            }
        };
        let (target, name) = (d.target, d.name.clone());
        let Some((root, _)) = &self.kill_at else {
            self.dialog = None;
            return;
        };
        let outcome = kill::send(root, target, signal);
        let note = self.audit(target, &name, signal, &outcome);
        let stage = match (&outcome, signal) {
            (Ok(()), Signal::Term) => KillStage::Sent(now),
            (Ok(()), Signal::Kill) => {
                KillStage::Done(format!("SIGKILL sent to {name} (pid {}){note}", target.pid))
            }
            (Err(KillError::Gone(_)), _) => {
                KillStage::Done(format!("{name} (pid {}) had already exited", target.pid))
            }
            (Err(e), _) => KillStage::Done(format!("not signalled: {e}{note}")),
        };
        if !note.is_empty() {
            self.say(note.trim().to_string(), now);
        }
        if let Some(d) = &mut self.dialog {
            d.stage = stage;
        }
    }
}
