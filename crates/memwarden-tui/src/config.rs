//! The configuration file, `$XDG_CONFIG_HOME/memwarden/config.toml` (else
//! `~/.config/memwarden/config.toml`). Unknown keys are refused with the file, line and key, so
//! a typo never silently does nothing. Command-line flags win over the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::TuiError;
use crate::theme::ThemeName;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Time between samples, in seconds.
    pub interval: f64,
    pub theme: ThemeName,
    /// Kill from the interface (`k`); `false` on shared servers.
    pub kill: bool,
    /// The table shows workloads (containers, services) instead of processes at start.
    pub workloads: bool,
    /// The process table as a tree (children under their parent).
    pub tree: bool,
    /// Sort column at start: `pid`, `name`, `vram`, `gtt`, `rss`, `phase`, `verdict`.
    pub sort: crate::table::SortKey,
    /// Samples of history kept per series (for sparklines and the analysis).
    pub history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: 1.0,
            theme: ThemeName::Dark,
            kill: true,
            workloads: false,
            tree: false,
            sort: crate::table::SortKey::Memory,
            history: 600,
        }
    }
}

impl Config {
    /// The default place of the file, from the XDG variables; `None` without a home.
    pub fn default_path() -> Option<PathBuf> {
        xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("memwarden").join("config.toml"))
    }

    /// Reads the file; a missing file is the defaults, a bad one an error naming the problem.
    pub fn load(path: &Path) -> Result<Config, TuiError> {
        let text = match memwarden_probe::root::read_to_string_bounded(path, 1 << 20) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(bad(path, e.to_string())),
        };
        Config::parse(&text).map_err(|why| bad(path, why))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines with a source excerpt: keep it to one line.
            let msg = e.message().replace('\n', " ");
            let Some(span) = e.span() else {
                return msg;
            };
            let start = span.start.min(text.len());
            let n = text[..start].matches('\n').count() + 1;
            let line = text.lines().nth(n - 1).unwrap_or("").trim();
            format!(
                "line {n} ({}): {msg}",
                memwarden_probe::sanitize::sanitize(line, 60)
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.interval.is_finite() && (0.1..=3600.0).contains(&self.interval)) {
            return Err(format!(
                "interval must be between 0.1 and 3600 seconds, not {}",
                self.interval
            ));
        }
        if !(10..=100_000).contains(&self.history) {
            return Err(format!(
                "history must be between 10 and 100000 samples, not {}",
                self.history
            ));
        }
        Ok(())
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval)
    }
}

fn bad(path: &Path, why: String) -> TuiError {
    TuiError::Config {
        file: path.display().to_string(),
        why,
    }
}

/// `$VAR` when set to an absolute path, else `$HOME/<fallback>` (the XDG base directory rule).
pub fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(var) {
        let p = PathBuf::from(v);
        if p.is_absolute() {
            return Some(p);
        }
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(fallback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::parse("interval = 0.5\ntheme = \"light\"\nkill = false\n").unwrap();
        assert_eq!(c.interval(), Duration::from_millis(500));
        assert_eq!(c.theme, ThemeName::Light);
        assert!(!c.kill);
    }

    #[test]
    fn unknown_keys_are_refused_with_the_line() {
        let e = Config::parse("interval = 1\ncolour = \"red\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("colour"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = Config::parse("theme = \"pink\"\n").unwrap_err();
        assert!(e.contains("pink") || e.contains("variant"), "{e}");
        let e = Config::parse("interval = 0\n").unwrap_err();
        assert!(e.contains("interval"), "{e}");
        let e = Config::parse("interval = \n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn missing_file_is_the_defaults_bad_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        assert_eq!(Config::load(&p).unwrap(), Config::default());
        std::fs::write(&p, "kill = \"yes\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("kill"), "{e}");
    }
}
