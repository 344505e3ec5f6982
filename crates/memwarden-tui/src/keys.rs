//! Keys to actions, and the one table of bindings the footer and the help screen both show.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    StartFilter,
    SortNext,
    SortReverse,
    ToggleView,
    ToggleTree,
    ToggleDetail,
    ToggleMap,
    /// Kernel threads shown or hidden.
    ToggleKernel,
    NextTheme,
    Kill,
    /// Space: pauses a replay, freezes the live view.
    Pause,
    StepBack,
    StepForward,
    Faster,
    Slower,
    Escape,
}

/// One binding as shown to the user: keys, what it does, and whether only a replay has it.
pub struct Binding {
    pub keys: &'static str,
    pub what: &'static str,
    pub footer: Option<&'static str>,
    pub replay_only: bool,
    pub kill: bool,
}

pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: "↑ ↓ PgUp PgDn Home End",
        what: "select a row (the mouse too)",
        footer: None,
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "/",
        what: "filter rows by name, command, user or pid (Esc clears)",
        footer: Some("/ filter"),
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "s  r",
        what: "sort by the next column · reverse the order (or click a header)",
        footer: Some("s sort"),
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "w",
        what: "processes ⇄ workloads (containers, services)",
        footer: Some("w workloads"),
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "t",
        what: "process tree ⇄ flat list",
        footer: Some("t tree"),
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "Enter  d",
        what: "detail of the selected row",
        footer: Some("⏎ detail"),
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "m",
        what: "show or hide the memory maps",
        footer: None,
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "K",
        what: "show or hide kernel threads (hidden at start, as in htop)",
        footer: None,
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "k",
        what: "end the selected process (asks first; SIGTERM, then SIGKILL)",
        footer: Some("k kill"),
        replay_only: false,
        kill: true,
    },
    Binding {
        keys: "space",
        what: "pause (replay) or freeze the screen (live)",
        footer: Some("␣ pause"),
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "← →  + -",
        what: "step one sample back / forward · play faster / slower",
        footer: Some("←→ step"),
        replay_only: true,
        kill: false,
    },
    Binding {
        keys: "c",
        what: "next colour theme (dark, light)",
        footer: None,
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "?",
        what: "this help",
        footer: Some("? help"),
        replay_only: false,
        kill: false,
    },
    Binding {
        keys: "q  Ctrl-C",
        what: "quit",
        footer: Some("q quit"),
        replay_only: false,
        kill: false,
    },
];

/// The action of a key in the main view (not while typing a filter or in a dialog).
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char('c') => Some(Action::Quit),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Char('q') | KeyCode::F(10) => Action::Quit,
        KeyCode::Char('?') | KeyCode::F(1) => Action::Help,
        KeyCode::Up => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::Home,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        KeyCode::Char('/') | KeyCode::F(3) => Action::StartFilter,
        KeyCode::Char('s') | KeyCode::F(6) => Action::SortNext,
        KeyCode::Char('r') => Action::SortReverse,
        KeyCode::Char('w') => Action::ToggleView,
        KeyCode::Char('t') | KeyCode::F(5) => Action::ToggleTree,
        KeyCode::Enter | KeyCode::Char('d') => Action::ToggleDetail,
        KeyCode::Char('m') => Action::ToggleMap,
        KeyCode::Char('K') => Action::ToggleKernel,
        KeyCode::Char('c') => Action::NextTheme,
        KeyCode::Char('k') | KeyCode::F(9) => Action::Kill,
        KeyCode::Char(' ') => Action::Pause,
        KeyCode::Left => Action::StepBack,
        KeyCode::Right => Action::StepForward,
        KeyCode::Char('+') | KeyCode::Char('=') => Action::Faster,
        KeyCode::Char('-') => Action::Slower,
        KeyCode::Esc => Action::Escape,
        _ => return None,
    })
}
