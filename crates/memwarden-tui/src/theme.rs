//! Colours. Every colour-coded fact on screen also carries a symbol or a word, so the mono
//! theme (NO_COLOR, `--no-color`) loses nothing but colour.

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThemeName {
    Dark,
    Light,
    /// No colour at all: bold and reverse video only.
    Mono,
}

impl ThemeName {
    pub fn parse(s: &str) -> Option<ThemeName> {
        match s {
            "dark" => Some(ThemeName::Dark),
            "light" => Some(ThemeName::Light),
            "mono" => Some(ThemeName::Mono),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ThemeName::Dark => "dark",
            ThemeName::Light => "light",
            ThemeName::Mono => "mono",
        }
    }

    /// The next theme for the `t` key (mono stays mono when colour is off).
    pub fn next(self) -> ThemeName {
        match self {
            ThemeName::Dark => ThemeName::Light,
            ThemeName::Light => ThemeName::Dark,
            ThemeName::Mono => ThemeName::Mono,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Theme {
    pub name: ThemeName,
    pub base: Style,
    pub dim: Style,
    pub title: Style,
    pub border: Style,
    pub header: Style,
    pub selected: Style,
    pub ok: Style,
    pub warn: Style,
    pub bad: Style,
    /// The bar's free part.
    pub free: Style,
    /// Colours cycled through the memory map's segments.
    pub segments: [Style; 6],
}

impl Theme {
    pub fn new(name: ThemeName) -> Theme {
        match name {
            ThemeName::Dark => Theme::coloured(name, Color::Gray, Color::DarkGray, Color::Cyan),
            ThemeName::Light => Theme::coloured(name, Color::Black, Color::Gray, Color::Blue),
            ThemeName::Mono => {
                let plain = Style::new();
                Theme {
                    name,
                    base: plain,
                    dim: plain,
                    title: plain.add_modifier(Modifier::BOLD),
                    border: plain,
                    header: plain.add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                    selected: plain.add_modifier(Modifier::REVERSED),
                    ok: plain,
                    warn: plain.add_modifier(Modifier::BOLD),
                    bad: plain.add_modifier(Modifier::BOLD),
                    free: plain,
                    segments: [plain; 6],
                }
            }
        }
    }

    fn coloured(name: ThemeName, fg: Color, dim: Color, accent: Color) -> Theme {
        let light = name == ThemeName::Light;
        let s = |c: Color| Style::new().fg(c);
        Theme {
            name,
            base: s(fg),
            dim: s(dim),
            title: s(accent).add_modifier(Modifier::BOLD),
            border: s(dim),
            header: s(accent).add_modifier(Modifier::BOLD),
            selected: if light {
                Style::new().bg(Color::Rgb(200, 220, 255)).fg(Color::Black)
            } else {
                Style::new().bg(Color::Rgb(40, 60, 90)).fg(Color::White)
            },
            ok: s(if light {
                Color::Rgb(0, 120, 0)
            } else {
                Color::Green
            }),
            warn: s(if light {
                Color::Rgb(160, 100, 0)
            } else {
                Color::Yellow
            })
            .add_modifier(Modifier::BOLD),
            bad: s(if light {
                Color::Rgb(180, 0, 0)
            } else {
                Color::Red
            })
            .add_modifier(Modifier::BOLD),
            free: s(dim),
            segments: [
                s(Color::Rgb(86, 156, 214)),
                s(Color::Rgb(197, 134, 192)),
                s(Color::Rgb(78, 201, 176)),
                s(Color::Rgb(220, 170, 90)),
                s(Color::Rgb(206, 120, 120)),
                s(Color::Rgb(150, 170, 90)),
            ],
        }
    }

    pub fn segment(&self, i: usize) -> Style {
        self.segments[i % self.segments.len()]
    }

    /// Whether colour carries nothing here: the memory map then marks segments with letters.
    pub fn is_mono(&self) -> bool {
        self.name == ThemeName::Mono
    }
}

/// Whether the environment asks for no colour (<https://no-color.org>: set and not empty).
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}
