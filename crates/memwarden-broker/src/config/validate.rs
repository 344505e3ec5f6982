//! Checks of what a config file says that the parse alone lets through but that cannot work: a
//! token no client can send, an upstream or route with characters no request line can hold,
//! and the warnings a file earns without being wrong (an API open to the network with no
//! token, a file that sets nothing). Each names the file, line and column.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::{RawConfig, Source, duration};
use super::{Config, ConfigError};

/// Connections the API holds at once when `max_connections` is not given.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// How long a connection may take to send a request's headers, counted from when the server
/// starts waiting for them: on a new connection, and on a kept-alive one after each answer (so
/// it is also how long an idle keep-alive connection stays open).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// A token is sent in `Authorization: Bearer TOKEN`: visible ASCII only, since a client cannot
/// send a NUL or a line break in a header, trims spaces, and encodes other characters in ways
/// that do not compare equal.
pub(super) fn token(src: &Source<'_>, token: &str, at: usize) -> Result<(), ConfigError> {
    if let Some(bad) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(src.at(
            at,
            format!(
                "the token holds {}: a token is visible ASCII without spaces, as a client sends \
                 it in `Authorization: Bearer TOKEN`",
                describe(bad)
            ),
        ));
    }
    Ok(())
}

/// An upstream URL or a route path goes into a request line: no spaces, control characters or
/// non-ASCII (a CRLF there would split the request).
pub(super) fn request_text(
    src: &Source<'_>,
    text: &str,
    at: usize,
    what: &str,
) -> Result<(), ConfigError> {
    match text.chars().find(|c| !c.is_ascii_graphic()) {
        Some(bad) => Err(src.at(
            at,
            format!(
                "{what} {:?} holds {}: it goes into a request line",
                memwarden_probe::sanitize::sanitize(text, 80),
                describe(bad)
            ),
        )),
        None => Ok(()),
    }
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\0' => "a NUL".into(),
        '\r' | '\n' => "a line break".into(),
        c if c.is_control() => format!("a control character (U+{:04X})", c as u32),
        c if c.is_whitespace() => format!("a space (U+{:04X})", c as u32),
        c => format!("a non-ASCII character (U+{:04X})", c as u32),
    }
}

/// The `[server]` settings of connections and reloads, checked.
pub(super) struct Limits {
    pub(super) max_connections: usize,
    pub(super) header_timeout: Duration,
}

pub(super) fn limits(src: &Source<'_>, raw: &RawConfig) -> Result<Limits, ConfigError> {
    let max_connections = match &raw.server.max_connections {
        Some(m) if !(4..=1_000_000).contains(m.get_ref()) => {
            return Err(src.err(m, "max_connections must be from 4 to 1000000"));
        }
        Some(m) => *m.get_ref(),
        None => DEFAULT_MAX_CONNECTIONS,
    };
    let header_timeout = match &raw.server.header_timeout {
        Some(d) => {
            let v = duration(src, d)?;
            if v < Duration::from_millis(100) || v > Duration::from_secs(3600) {
                return Err(src.err(d, "header_timeout must be from 100ms to 1h"));
            }
            v
        }
        None => DEFAULT_HEADER_TIMEOUT,
    };
    Ok(Limits {
        max_connections,
        header_timeout,
    })
}

/// What is allowed but most likely a mistake, one line each.
pub(super) fn warnings(
    src: &Source<'_>,
    raw: &RawConfig,
    listen: SocketAddr,
    has_token: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let s = &raw.server;
    if !listen.ip().is_loopback() && !has_token {
        let msg = format!(
            "listen {listen} takes requests from other machines and no token is set: anyone \
             who reaches it can load, evict and lease (set `token_file`)"
        );
        out.push(match &s.listen {
            Some(l) => src.err(l, msg).0,
            None => format!("{}: {msg}", src.file),
        });
    }
    let sets_nothing = s.listen.is_none()
        && s.token.is_none()
        && s.token_file.is_none()
        && raw.pool.is_empty()
        && raw.consumer.is_empty();
    if sets_nothing && !s.allow_empty {
        out.push(format!(
            "{}: the file sets no listen address, token, pool or consumer: the broker would run \
             as a bare exporter on the default address with no token, and a running broker \
             refuses to reload to it (write `allow_empty = true` under [server] if that is \
             meant)",
            src.file
        ));
    }
    out
}

/// Why a running broker on `old` must not reload to `new`: a file emptied or cut short by
/// mistake (a failed copy, an editor's truncation) would move it to the default address with no
/// token and forget every consumer. `allow_empty = true` in the new file says it is meant.
pub fn reload_drops(old: &Config, new: &Config) -> Option<String> {
    if new.server.allow_empty {
        return None;
    }
    let mut dropped = Vec::new();
    if !old.consumers.is_empty() && new.consumers.is_empty() {
        dropped.push(format!("every consumer ({} now)", old.consumers.len()));
    }
    if old.server.token.is_some() && new.server.token.is_none() {
        dropped.push("the token".to_string());
    }
    if old.server.listen_given && !new.server.listen_given {
        dropped.push(format!("the listen address ({})", old.server.listen));
    }
    (!dropped.is_empty()).then(|| {
        format!(
            "it would drop {}; write `allow_empty = true` under [server] if that is meant",
            dropped.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(text: &str) -> String {
        Config::parse(text, "t.toml", None).unwrap_err().0
    }

    const POOL: &str = "[[pool]]\nname = \"p\"\nkind = \"ram\"\n";

    fn consumer(extra: &str) -> String {
        format!("{POOL}[[consumer]]\nname = \"c\"\npool = \"p\"\nresident = \"1GiB\"\n{extra}")
    }

    #[test]
    fn tokens_no_client_can_send_are_refused_where_written() {
        for (token, what) in [
            ("\" \"", "a space"),
            ("\"ab\\u0000cd\"", "a NUL"),
            ("\"s\u{e9}cret\"", "a non-ASCII character (U+00E9)"),
            ("\"ab\\u0007\"", "a control character (U+0007)"),
            ("\"two words\"", "a space"),
            ("\"line\\r\\n\"", "a line break"),
        ] {
            let e = err(&format!("[server]\n# the token\ntoken = {token}\n"));
            assert!(e.starts_with("t.toml:3:9: the token holds "), "{e}");
            assert!(e.contains(what), "{token}: {e}");
        }
        let ok = "[server]\ntoken = \"Abc-123_~!.xyz\"\n";
        assert!(Config::parse(ok, "t.toml", None).is_ok());
    }

    #[test]
    fn upstreams_and_routes_that_would_split_a_request_are_refused() {
        let e = err(&consumer(
            "upstream = \"http://127.0.0.1:9000/v1\\r\\nX: y\"\n",
        ));
        // Shown sanitised: the control characters never reach a terminal.
        assert!(
            e.starts_with(
                "t.toml:8:12: upstream \"http://127.0.0.1:9000/v1  X: y\" holds a line break"
            ),
            "{e}"
        );
        let e = err(&consumer("upstream = \"http://127.0.0.1:9000/a b\"\n"));
        assert!(
            e.starts_with("t.toml:8:12: upstream ") && e.contains("holds a space"),
            "{e}"
        );
        let e = err(&consumer(
            "upstream = \"http://127.0.0.1:9000\"\nunload = { method = \"POST\", path = \"/free\\nnow\" }\n",
        ));
        assert!(
            e.starts_with("t.toml:9:10: route path \"/free now\" holds a line break"),
            "{e}"
        );
    }

    #[test]
    fn an_open_listen_without_a_token_is_warned_about_where_written() {
        let cfg = Config::parse("[server]\nlisten = \"0.0.0.0:7077\"\n", "t.toml", None).unwrap();
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(
            cfg.warnings[0].starts_with("t.toml:2:10: listen 0.0.0.0:7077 takes requests from other machines and no token is set"),
            "{:?}",
            cfg.warnings
        );
        let with_token = "[server]\nlisten = \"0.0.0.0:7077\"\ntoken = \"abc\"\n";
        assert!(
            Config::parse(with_token, "t.toml", None)
                .unwrap()
                .warnings
                .is_empty()
        );
        let local = "[server]\nlisten = \"[::1]:7077\"\n";
        assert!(
            Config::parse(local, "t.toml", None)
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn a_file_that_sets_nothing_is_warned_about_unless_it_says_so() {
        for text in ["", "# emptied\n", "[server]\n"] {
            let cfg = Config::parse(text, "t.toml", None).unwrap();
            assert_eq!(cfg.warnings.len(), 1, "{text:?}");
            assert!(
                cfg.warnings[0].contains("allow_empty = true"),
                "{:?}",
                cfg.warnings
            );
            assert!(!cfg.server.allow_empty && !cfg.server.listen_given);
        }
        let cfg = Config::parse("[server]\nallow_empty = true\n", "t.toml", None).unwrap();
        assert!(cfg.warnings.is_empty() && cfg.server.allow_empty);
    }

    #[test]
    fn durations_past_ten_years_are_refused_where_written() {
        for (key, value) in [
            ("load_timeout", "300000000000y"),
            ("response_timeout", "18446744073709551615s"),
            ("idle_ttl", "3651d"),
            ("stop_timeout", "300000000000y"),
        ] {
            let e = err(&consumer(&format!("{key} = \"{value}\"\n")));
            let col = key.len() + 4;
            assert_eq!(
                e,
                format!("t.toml:8:{col}: invalid duration {value:?}: at most 10 years"),
                "{key}"
            );
        }
        let e = err(&format!("{POOL}max_wait = \"300000000000y\"\n"));
        assert_eq!(
            e,
            "t.toml:4:12: invalid duration \"300000000000y\": at most 10 years"
        );
        let e = err("[server]\nshutdown_grace = \"18446744073709551615s\"\n");
        assert!(e.starts_with("t.toml:2:18: invalid duration"), "{e}");
    }

    #[test]
    fn a_reload_that_drops_every_consumer_the_token_or_the_address_is_named() {
        use super::reload_drops;
        let parse = |t: &str| Config::parse(t, "t.toml", None).unwrap();
        let full = parse(&format!(
            "[server]\nlisten = \"127.0.0.1:7078\"\ntoken = \"abc\"\n{}",
            consumer("")
        ));
        assert_eq!(
            reload_drops(&full, &parse("")).as_deref(),
            Some(
                "it would drop every consumer (1 now), the token, the listen address \
                 (127.0.0.1:7078); write `allow_empty = true` under [server] if that is meant"
            )
        );
        let no_token = parse(&format!(
            "[server]\nlisten = \"127.0.0.1:7079\"\n{}",
            consumer("")
        ));
        assert_eq!(
            reload_drops(&full, &no_token).as_deref(),
            Some(
                "it would drop the token; write `allow_empty = true` under [server] if that is meant"
            )
        );
        assert_eq!(reload_drops(&full, &full), None);
        assert_eq!(reload_drops(&parse(""), &full), None);
        assert_eq!(
            reload_drops(&full, &parse("[server]\nallow_empty = true\n")),
            None
        );
    }

    #[test]
    fn connection_limits_are_bounded() {
        let cfg = Config::parse(
            "[server]\nmax_connections = 64\nheader_timeout = \"2s\"\n",
            "t.toml",
            None,
        )
        .unwrap();
        assert_eq!(cfg.server.max_connections, 64);
        assert_eq!(cfg.server.header_timeout, std::time::Duration::from_secs(2));
        let e = err("[server]\nmax_connections = 0\n");
        assert_eq!(e, "t.toml:2:19: max_connections must be from 4 to 1000000");
        let e = err("[server]\nheader_timeout = \"0s\"\n");
        assert_eq!(e, "t.toml:2:18: header_timeout must be from 100ms to 1h");
    }
}
