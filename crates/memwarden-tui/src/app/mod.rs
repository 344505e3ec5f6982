//! The interface's state and what every key does to it. Nothing here draws or reads the
//! machine (except the one-file identity checks of a kill), so it is driven the same way by the
//! event loop and by tests.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use memwarden_probe::HostRoot;
use memwarden_probe::snapshot::{Process, ProcessId, Snapshot};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};

use crate::analysis::Analyst;
use crate::broker::BrokerState;
use crate::insight::Insights;
use crate::keys::{self, Action};

mod killing;
use crate::table::{self, Row, RowKey, SortKey};
use crate::theme::{Theme, ThemeName};
pub use killing::{KILL_GRACE, KillDialog, KillStage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Processes,
    Workloads,
}

/// What the event loop must do for a key (the sample source is its business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Quit,
    TogglePause,
    StepBack,
    StepForward,
    Faster,
    Slower,
}

/// Facts about one process that only the live source can read (its open files), for the
/// detail pane.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras {
    pub id: Option<ProcessId>,
    /// Model files the process holds open: path and size.
    pub model_files: Vec<(String, u64)>,
    /// TCP ports it listens on.
    pub ports: Vec<u16>,
    /// What its inference server says (KV cache, requests, models), when it runs one we know
    /// how to ask; the error is why it could not be read.
    pub server: Option<Result<memwarden_probe::scrape::ServerMetrics, String>>,
}

/// Replay progress, for the header.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayStatus {
    pub file: String,
    pub position: usize,
    pub len: usize,
    pub speed: f64,
    pub paused: bool,
    pub skipped: usize,
}

/// Screen regions of the last frame, for the mouse.
#[derive(Debug, Clone, Default)]
pub struct HitMap {
    /// The table's rows (below its header).
    pub rows: Rect,
    /// The header line and the x range of each sortable column.
    pub header: Rect,
    pub columns: Vec<(u16, u16, SortKey)>,
    /// Index of the first row drawn.
    pub offset: usize,
}

pub struct App {
    pub theme: Theme,
    /// Colour may be switched between themes (not under NO_COLOR).
    pub colour: bool,
    pub snap: Option<Snapshot>,
    pub parents: HashMap<u32, u32>,
    pub insights: Insights,
    analyst: Analyst,
    pub users: HashMap<u32, String>,
    pub view: View,
    pub tree: bool,
    pub show_map: bool,
    pub sort: SortKey,
    pub descending: bool,
    pub filter: String,
    pub filtering: bool,
    pub rows: Vec<Row>,
    pub selected: usize,
    selected_key: Option<RowKey>,
    /// Whether the user chose a row (keys, mouse): only then does the selection follow its
    /// process as the rows re-sort. Until then it stays on the first row, as htop's does: a
    /// row picked by no one and followed to wherever it sorts next opened the view scrolled
    /// to the bottom of the list.
    picked: bool,
    pub detail: bool,
    pub help: bool,
    /// `Some` when killing is possible: the root to check identities under, the audit log.
    kill_at: Option<(HostRoot, Option<PathBuf>)>,
    /// Why `k` does nothing here, when it does nothing.
    pub kill_off: Option<String>,
    pub dialog: Option<KillDialog>,
    pub status: Option<(String, Instant)>,
    /// Live view frozen by space: samples are dropped until unfrozen.
    pub frozen: bool,
    pub replay: Option<ReplayStatus>,
    pub interval: Duration,
    pub extras: Extras,
    pub hits: RefCell<HitMap>,
    pub samples_seen: u64,
    /// Kernel threads in the process table (`K`); hidden by default, as htop does.
    pub kernel_threads: bool,
    /// Each GPU's utilization over the same samples as its memory history (`None` where the
    /// device did not say), for the history chart.
    pub gpu_busy: HashMap<u32, VecDeque<Option<f64>>>,
    history: usize,
    /// The broker's pools and consumers, when one answers.
    pub broker: Option<BrokerState>,
}

impl App {
    pub fn new(theme: ThemeName, colour: bool, history: usize) -> App {
        App {
            theme: Theme::new(if colour { theme } else { ThemeName::Mono }),
            colour,
            snap: None,
            parents: HashMap::new(),
            insights: Insights::default(),
            analyst: Analyst::new(history),
            users: HashMap::new(),
            view: View::Processes,
            tree: false,
            show_map: true,
            sort: SortKey::Memory,
            descending: true,
            filter: String::new(),
            filtering: false,
            rows: Vec::new(),
            selected: 0,
            selected_key: None,
            picked: false,
            detail: false,
            help: false,
            kill_at: None,
            kill_off: Some("kill is turned off".into()),
            dialog: None,
            status: None,
            frozen: false,
            replay: None,
            interval: Duration::from_secs(1),
            extras: Extras::default(),
            hits: RefCell::new(HitMap::default()),
            samples_seen: 0,
            kernel_threads: false,
            gpu_busy: HashMap::new(),
            history: history.max(1),
            broker: None,
        }
    }

    /// Allows `k`, checking identities under `root` and logging to `audit` (when known).
    pub fn enable_kill(&mut self, root: HostRoot, audit: Option<PathBuf>) {
        self.kill_at = Some((root, audit));
        self.kill_off = None;
    }

    pub fn disable_kill(&mut self, why: &str) {
        self.kill_at = None;
        self.kill_off = Some(why.to_string());
    }

    pub fn kill_enabled(&self) -> bool {
        self.kill_at.is_some()
    }

    pub fn set_sort(&mut self, key: SortKey) {
        self.sort = key;
        self.descending = key.default_descending();
        self.rebuild();
    }

    pub fn set_theme(&mut self, name: ThemeName) {
        if self.colour {
            self.theme = Theme::new(name);
        }
    }

    /// A new reading: into the analysis, then onto the screen (unless frozen).
    pub fn ingest(&mut self, mut snap: Snapshot) {
        if self.frozen {
            return;
        }
        // A replayed recording's strings reach the terminal as they are written in the file.
        memwarden_probe::sanitize::sanitize_snapshot(&mut snap);
        self.analyst.observe(&snap);
        self.gpu_busy
            .retain(|i, _| snap.gpus.iter().any(|g| g.index == *i));
        for g in &snap.gpus {
            let h = self.gpu_busy.entry(g.index).or_default();
            if h.len() == self.history {
                h.pop_front();
            }
            h.push_back(g.figures.utilization_percent);
        }
        let focus = self.detail.then_some(self.selected_key.as_ref()).flatten();
        self.analyst.insights_into(&snap, focus, &mut self.insights);
        self.samples_seen += 1;
        self.parents = snap.parents();
        self.snap = Some(snap);
        self.rebuild();
    }

    /// Starts over from an empty history (a replay stepped back is replayed up to there).
    pub fn reset_history(&mut self) {
        self.analyst.reset();
        self.gpu_busy.clear();
        self.insights = Insights::default();
        self.samples_seen = 0;
    }

    /// The table rows from the current snapshot, view, filter, sort and tree.
    pub fn rebuild(&mut self) {
        let Some(snap) = &self.snap else {
            self.rows.clear();
            return;
        };
        if self.view == View::Workloads && snap.workloads.is_empty() {
            // Nothing grouped in this snapshot (a source without workloads): processes, not
            // an empty table.
            self.view = View::Processes;
        }
        let rows = match self.view {
            View::Processes => {
                table::process_rows(snap, &self.insights, &self.users, self.kernel_threads)
            }
            View::Workloads => table::workload_rows(snap, &self.insights),
        };
        let tree = (self.tree && self.view == View::Processes && !self.parents.is_empty())
            .then_some(&self.parents);
        self.rows = table::arrange(rows, self.sort, self.descending, &self.filter, tree);
        // The selection the user made follows its process across samples and re-sorts.
        if !self.picked {
            self.selected = 0;
        } else if let Some(key) = &self.selected_key
            && let Some(i) = self.rows.iter().position(|r| &r.key == key)
        {
            self.selected = i;
        }
        self.selected = self.selected.min(self.rows.len().saturating_sub(1));
        self.selected_key = self.rows.get(self.selected).map(|r| r.key.clone());
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.rows.get(self.selected)
    }

    pub fn selected_process(&self) -> Option<&Process> {
        let RowKey::Process(id) = &self.selected_row()?.key else {
            return None;
        };
        self.snap
            .as_ref()?
            .processes
            .iter()
            .find(|p| p.identity() == *id)
    }

    /// The process the detail pane is about, for the live source to look at closer.
    pub fn focus(&self) -> Option<ProcessId> {
        if !self.detail {
            return None;
        }
        self.selected_process().map(Process::identity)
    }

    fn select(&mut self, i: usize) {
        self.picked = true;
        let before = self.selected_key.clone();
        self.selected = i.min(self.rows.len().saturating_sub(1));
        self.selected_key = self.rows.get(self.selected).map(|r| r.key.clone());
        if self.detail && self.selected_key != before {
            self.refresh_insights();
        }
    }

    /// The analysis again for the current snapshot: the detail pane's row gets its history and
    /// changepoints now, not at the next sample (a paused replay may have none coming).
    fn refresh_insights(&mut self) {
        if let Some(snap) = &self.snap {
            let focus = self.detail.then_some(self.selected_key.as_ref()).flatten();
            self.analyst.insights_into(snap, focus, &mut self.insights);
            self.rows_verdicts_refresh();
        }
    }

    /// Phases and verdicts in the rows follow the insights.
    fn rows_verdicts_refresh(&mut self) {
        for r in &mut self.rows {
            let view = match &r.key {
                RowKey::Process(id) => self.insights.processes.get(id),
                RowKey::Workload(id) => self.insights.workloads.get(id),
            };
            r.phase = view.and_then(|v| v.phase);
            r.verdict = view.and_then(|v| v.verdict.as_ref().map(|(v, _)| *v));
        }
    }

    pub fn say(&mut self, msg: impl Into<String>, now: Instant) {
        self.status = Some((msg.into(), now));
    }

    /// The status message, while it is fresh (5 s).
    pub fn status_text(&self, now: Instant) -> Option<&str> {
        match &self.status {
            Some((m, at)) if now.saturating_duration_since(*at) < Duration::from_secs(5) => Some(m),
            _ => None,
        }
    }

    /// When the loop must wake even without input or samples (kill grace, status expiry).
    pub fn deadline(&self) -> Option<Instant> {
        let dialog = match self.dialog.as_ref().map(|d| &d.stage) {
            // Look for the process to go four times a second during the grace period.
            Some(KillStage::Sent(_)) => Some(Instant::now() + Duration::from_millis(250)),
            _ => None,
        };
        let status = self
            .status
            .as_ref()
            .map(|(_, at)| *at + Duration::from_secs(5));
        match (dialog, status) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_key(&mut self, key: KeyEvent, now: Instant) -> Option<Command> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Command::Quit);
        }
        if self.dialog.is_some() {
            self.dialog_key(key, now);
            return None;
        }
        if self.help {
            self.help = false;
            return None;
        }
        if self.filtering {
            match key.code {
                KeyCode::Esc => {
                    self.filter.clear();
                    self.filtering = false;
                }
                KeyCode::Enter => self.filtering = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !c.is_control() && self.filter.chars().count() < 64 => {
                    self.filter.push(c)
                }
                KeyCode::Up => self.select(self.selected.saturating_sub(1)),
                KeyCode::Down => self.select(self.selected + 1),
                _ => {}
            }
            self.rebuild();
            return None;
        }
        let page = self.hits.borrow().rows.height.max(1) as usize;
        match keys::action(key)? {
            Action::Quit => return Some(Command::Quit),
            Action::Help => self.help = true,
            Action::Up => self.select(self.selected.saturating_sub(1)),
            Action::Down => self.select(self.selected + 1),
            Action::PageUp => self.select(self.selected.saturating_sub(page)),
            Action::PageDown => self.select(self.selected + page),
            Action::Home => {
                self.select(0);
                // Back at the top, it stays there.
                self.picked = false;
            }
            Action::End => self.select(usize::MAX),
            Action::StartFilter => self.filtering = true,
            Action::SortNext => {
                self.set_sort(self.sort.next());
                self.say(format!("sorted by {}", self.sort.label()), now);
            }
            Action::SortReverse => {
                self.descending = !self.descending;
                self.rebuild();
            }
            Action::ToggleView => {
                self.view = match self.view {
                    View::Processes => View::Workloads,
                    View::Workloads => View::Processes,
                };
                let none = self.snap.as_ref().is_some_and(|s| s.workloads.is_empty());
                if self.view == View::Workloads && none {
                    self.say("no workloads in this snapshot: showing processes", now);
                    self.view = View::Processes;
                }
                self.selected = 0;
                self.selected_key = None;
                self.picked = false;
                self.rebuild();
            }
            Action::ToggleTree => {
                self.tree = !self.tree;
                if self.tree && self.parents.is_empty() {
                    self.say("no parent pids in this source: the tree is flat", now);
                }
                self.rebuild();
            }
            Action::ToggleDetail => {
                self.detail = !self.detail;
                self.refresh_insights();
            }
            Action::ToggleMap => self.show_map = !self.show_map,
            Action::ToggleKernel => {
                self.kernel_threads = !self.kernel_threads;
                self.say(
                    if self.kernel_threads {
                        "kernel threads shown"
                    } else {
                        "kernel threads hidden"
                    },
                    now,
                );
                self.rebuild();
            }
            Action::NextTheme => {
                if self.colour {
                    self.theme = Theme::new(self.theme.name.next());
                    self.say(format!("theme: {}", self.theme.name.as_str()), now);
                } else {
                    self.say("colour is off (NO_COLOR or --no-color)", now);
                }
            }
            Action::Kill => self.ask_kill(now),
            Action::Pause => {
                if self.replay.is_some() {
                    return Some(Command::TogglePause);
                }
                self.frozen = !self.frozen;
                self.say(
                    if self.frozen {
                        "frozen: space resumes"
                    } else {
                        "live again"
                    },
                    now,
                );
            }
            Action::StepBack => return self.replay.is_some().then_some(Command::StepBack),
            Action::StepForward => return self.replay.is_some().then_some(Command::StepForward),
            Action::Faster => return self.replay.is_some().then_some(Command::Faster),
            Action::Slower => return self.replay.is_some().then_some(Command::Slower),
            Action::Escape => {
                if !self.filter.is_empty() {
                    self.filter.clear();
                    self.rebuild();
                } else {
                    self.detail = false;
                }
            }
        }
        None
    }

    pub fn on_mouse(&mut self, m: MouseEvent) {
        let hits = self.hits.borrow().clone();
        let at = Position::new(m.column, m.row);
        match m.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                if hits.rows.contains(at) {
                    self.select(hits.offset + usize::from(m.row - hits.rows.y));
                } else if hits.header.contains(at)
                    && let Some(&(_, _, key)) = hits
                        .columns
                        .iter()
                        .find(|(x0, x1, _)| (*x0..*x1).contains(&m.column))
                {
                    if key == self.sort {
                        self.descending = !self.descending;
                        self.rebuild();
                    } else {
                        self.set_sort(key);
                    }
                }
            }
            MouseEventKind::ScrollDown => self.select(self.selected + 3),
            MouseEventKind::ScrollUp => self.select(self.selected.saturating_sub(3)),
            _ => {}
        }
    }

    /// Header text for the source.
    pub fn source_label(&self) -> String {
        match &self.replay {
            Some(r) => format!(
                "replay {}/{} ×{}{}",
                r.position,
                r.len,
                trim_float(r.speed),
                if r.position >= r.len {
                    " ■ end"
                } else if r.paused {
                    " ⏸ paused"
                } else {
                    " ▶"
                }
            ),
            None if self.frozen => "live ⏸ frozen".into(),
            None => format!("live every {}", humanize(self.interval)),
        }
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// uid -> user name from an /etc/passwd text.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, memwarden_probe::sanitize::sanitize(name, 16)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd() {
        let u = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad\nann:x:1000:1000::/h:/bin/sh\n");
        assert_eq!(u.get(&0).map(String::as_str), Some("root"));
        assert_eq!(u.get(&1000).map(String::as_str), Some("ann"));
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn floats() {
        assert_eq!(trim_float(2.0), "2");
        assert_eq!(trim_float(0.25), "0.25");
    }
}
