//! The event loop: owns the terminal, takes keys, mouse, samples and SIGHUP from one channel,
//! draws after each. It sleeps in the channel until something happens (or a replay sample or
//! a kill's grace period is due), so an idle screen costs nothing between samples.

use std::collections::HashMap;
use std::io::stdout;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use memwarden_probe::incremental::Sampler;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, KeyEventKind};
use ratatui::crossterm::execute;

use crate::TuiError;
use crate::app::{App, Command, ReplayStatus};
use crate::config::Config;
use crate::live::{self, Event, LiveControl};
use crate::replay::Player;
use crate::resident;
use crate::theme::ThemeName;

pub enum Source {
    Live(Box<Sampler>),
    Replay { player: Player, name: String },
}

/// What the command line said; it wins over the config file, also after a reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub interval: Option<Duration>,
    pub theme: Option<ThemeName>,
    pub no_kill: bool,
}

pub struct Options {
    pub config: Config,
    /// The config file to read again on SIGHUP.
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
    pub colour: bool,
    pub source: Source,
    pub users: HashMap<u32, String>,
    /// Where kills are checked and logged; `None` turns kill off (replay, a fake root).
    pub kill: Result<(memwarden_probe::HostRoot, Option<PathBuf>), String>,
    /// The broker to show beside the live view, if any.
    pub broker: Option<crate::broker::BrokerSource>,
}

/// How often the broker is asked while it answers.
const BROKER_EVERY: Duration = Duration::from_secs(2);
/// When, after start, the code run only at start is unmapped (resident.rs): once the first
/// sample is drawn, and again once the first samples read one file per process and the broker
/// has answered; until then the start's code would set the view's peak resident memory.
const SETTLE_AT: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(3)];

/// Applies a config (with the command line's overrides on top) to the app.
pub fn apply_config(app: &mut App, cfg: &Config, o: &Overrides) {
    app.interval = o.interval.unwrap_or_else(|| cfg.interval());
    app.set_theme(o.theme.unwrap_or(cfg.theme));
    app.tree = cfg.tree;
}

/// Builds the app for the options (also used by tests to render what `run` would show).
pub fn build_app(opts: &Options) -> App {
    let cfg = &opts.config;
    let mut app = App::new(
        opts.overrides.theme.unwrap_or(cfg.theme),
        opts.colour,
        cfg.history,
    );
    apply_config(&mut app, cfg, &opts.overrides);
    app.users = opts.users.clone();
    app.set_sort(cfg.sort);
    if cfg.workloads {
        app.view = crate::app::View::Workloads;
    }
    match &opts.kill {
        _ if opts.overrides.no_kill => app.disable_kill("kill is turned off (--no-kill)"),
        _ if !cfg.kill => app.disable_kill("kill is turned off in the config file"),
        Ok((root, audit)) => app.enable_kill(root.clone(), audit.clone()),
        Err(why) => app.disable_kill(why),
    }
    app
}

/// Restores the terminal however the loop ends (an error, a panic unwinding).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(stdout(), DisableMouseCapture);
        ratatui::restore();
    }
}

pub fn run(opts: Options) -> Result<(), TuiError> {
    let mut app = build_app(&opts);
    let Options {
        config_path,
        overrides,
        source,
        broker,
        ..
    } = opts;
    let (tx, rx) = mpsc::channel::<Event>();

    let mut terminal = ratatui::try_init()?;
    let _guard = TerminalGuard;
    execute!(stdout(), EnableMouseCapture)?;

    let input_tx = tx.clone();
    std::thread::Builder::new()
        .name("memwarden-input".into())
        .spawn(move || {
            loop {
                match event::read() {
                    Ok(e) => {
                        if input_tx.send(Event::Input(e)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = input_tx.send(Event::InputGone(e.to_string()));
                        return;
                    }
                }
            }
        })?;
    let hup_tx = tx.clone();
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // SIGTERM and SIGINT end the view like `q` does, so the terminal is restored.
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("memwarden-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let e = if sig == SIGHUP {
                    Event::Reload
                } else {
                    Event::Terminate
                };
                if hup_tx.send(e).is_err() {
                    return;
                }
            }
        })?;

    let (mut player, live_control, replay_name) = match source {
        Source::Live(sampler) => {
            if let Some(b) = broker {
                crate::broker::spawn(b, BROKER_EVERY, tx.clone());
            }
            (None, Some(live::spawn(*sampler, app.interval, tx)), None)
        }
        Source::Replay { player, name } => {
            drop(tx);
            (Some(player), None, Some(name))
        }
    };
    if let (Some(p), Some(name)) = (&player, &replay_name) {
        // A player started paused (or stepped) already stands on a sample: show it.
        for s in &p.recording().samples[..p.position()] {
            app.ingest(s.clone());
        }
        app.replay = Some(replay_status(p, name));
    }

    // The first seconds run code that never runs again (set-up, the first full read of the
    // machine, the first answers of the broker): dropped from the resident set as they pass.
    let started = Instant::now();
    let mut settled = 0;
    loop {
        let now = Instant::now();
        if let (Some(p), Some(name)) = (&mut player, &replay_name) {
            let due: Vec<_> = p.advance(now).into_iter().cloned().collect();
            for snap in due {
                app.ingest(snap);
            }
            app.replay = Some(replay_status(p, name));
        }
        app.tick(now);
        terminal.draw(|f| crate::ui::draw(f, &app, now))?;
        resident::release_free_heap();
        if let Some(&at) = SETTLE_AT.get(settled)
            && now.duration_since(started) >= at
        {
            resident::drop_start_up_code();
            settled += 1;
        }

        let deadline = [app.deadline(), player.as_ref().and_then(Player::due)]
            .into_iter()
            .flatten()
            .min();
        let first = wait(&rx, deadline);
        let mut events = Vec::new();
        match first {
            Ok(e) => events.push(e),
            Err(RecvTimeoutError::Timeout) => {}
            // Replay with every sender gone is fine: keys still come from the input thread,
            // which holds a sender; all gone means input is gone too.
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        // Take whatever else is queued before drawing again (a burst of keys, a resize).
        events.extend(rx.try_iter().take(256));
        for e in events {
            let quit = handle(
                e,
                &mut app,
                &mut player,
                live_control.as_ref(),
                config_path.as_ref(),
                &overrides,
            )?;
            if quit {
                return Ok(());
            }
        }
        if let Some(c) = &live_control {
            c.set_focus(app.focus());
        }
    }
}

fn wait(rx: &Receiver<Event>, deadline: Option<Instant>) -> Result<Event, RecvTimeoutError> {
    match deadline {
        Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
    }
}

fn replay_status(p: &Player, name: &str) -> ReplayStatus {
    ReplayStatus {
        file: name.to_string(),
        position: p.position(),
        len: p.len(),
        speed: p.speed(),
        paused: p.paused(),
        skipped: p.recording().skipped,
    }
}

/// One event; `Ok(true)` to quit.
fn handle(
    e: Event,
    app: &mut App,
    player: &mut Option<Player>,
    live: Option<&LiveControl>,
    config_path: Option<&PathBuf>,
    overrides: &Overrides,
) -> Result<bool, TuiError> {
    let now = Instant::now();
    match e {
        Event::Input(event::Event::Key(k)) if k.kind != KeyEventKind::Release => {
            let Some(cmd) = app.on_key(k, now) else {
                return Ok(false);
            };
            let Some(p) = player.as_mut() else {
                return Ok(cmd == Command::Quit);
            };
            match cmd {
                Command::Quit => return Ok(true),
                Command::TogglePause => p.toggle_pause(now),
                Command::StepForward => {
                    if let Some(s) = p.step_forward().cloned() {
                        app.ingest(s);
                    }
                }
                Command::StepBack => {
                    if let Some(upto) = p.step_back() {
                        // The analysis only moves forward: rebuild it up to the new position.
                        let upto = upto.to_vec();
                        app.reset_history();
                        for s in upto {
                            app.ingest(s);
                        }
                    }
                }
                Command::Faster => p.faster(),
                Command::Slower => p.slower(),
            }
        }
        Event::Input(event::Event::Mouse(m)) => app.on_mouse(m),
        Event::Input(_) => {}
        Event::Sample(s, extras) => {
            let s = *s;
            app.extras = *extras;
            app.ingest(s.snapshot);
        }
        Event::SampleError(why) => app.say(format!("reading failed: {why}"), now),
        Event::Reload => match config_path {
            Some(path) => match Config::load(path) {
                Ok(cfg) => {
                    apply_config(app, &cfg, overrides);
                    if let Some(l) = live {
                        l.set_interval(app.interval);
                    }
                    app.rebuild();
                    app.say(format!("reloaded {}", path.display()), now);
                }
                // A daemon-like view keeps running on a bad reload, with the old settings.
                Err(e) => app.say(format!("{e} (kept the previous settings)"), now),
            },
            None => app.say("SIGHUP: no config file to reload", now),
        },
        Event::Broker(state) => app.broker = state.map(|b| *b),
        Event::Terminate => return Ok(true),
        Event::InputGone(why) => {
            return Err(TuiError::Terminal(std::io::Error::other(format!(
                "cannot read the keyboard: {why}"
            ))));
        }
    }
    Ok(false)
}
