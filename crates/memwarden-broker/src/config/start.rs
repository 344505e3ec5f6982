//! A consumer's start and stop commands and its upstream, with the macros a start command may
//! use (as llama-swap's): `${NAME}` and `${MODEL}`, put in here, and `${PORT}`, a free
//! loopback port chosen at each start, which is then also the upstream's.

use toml::Spanned;

use super::raw::{RawConsumer, Source};
use super::{ConfigError, NeedSource, Upstream};

/// The macro left in a start or stop command until a start chooses its port.
pub const PORT: &str = "${PORT}";

/// What the file says of how to run a consumer and where it answers, checked.
pub(super) struct Started {
    pub(super) start: Option<Vec<String>>,
    pub(super) stop: Option<Vec<String>>,
    pub(super) upstream: Option<Upstream>,
}

/// The `${…}` names in `text`, or why one is not closed.
fn macro_names(text: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let tail = &rest[i + 2..];
        let end = tail
            .find('}')
            .ok_or_else(|| format!("an unclosed \"${{\" in {text:?}"))?;
        names.push(&tail[..end]);
        rest = &tail[end + 1..];
    }
    Ok(names)
}

pub(super) fn started(
    src: &Source<'_>,
    c: &RawConsumer,
    need_source: &NeedSource,
) -> Result<Started, ConfigError> {
    let name = c.name.get_ref();
    // `${MODEL}`: the file the estimate reads (what `llama-server -m` takes), else the first
    // name requests ask for it by (what `vllm serve` takes).
    let model = match need_source {
        NeedSource::Estimate { model, .. } => Some(model.display().to_string()),
        NeedSource::Resident => c.models.first().map(|m| m.get_ref().clone()),
    };
    let mut port_in_start = false;
    let mut commands = [None, None];
    for (i, (out, cmd)) in commands.iter_mut().zip([&c.start, &c.stop]).enumerate() {
        let Some(cmd) = cmd else { continue };
        let mut words = Vec::with_capacity(cmd.get_ref().len());
        for word in cmd.get_ref() {
            for m in
                macro_names(word).map_err(|e| src.err(cmd, format!("consumer {name:?}: {e}")))?
            {
                match m {
                    // The start (first) decides; a stop may then name the same port.
                    "PORT" if i == 0 => port_in_start = true,
                    "PORT" if port_in_start => {}
                    "PORT" => {
                        return Err(src.err(
                            cmd,
                            format!("consumer {name:?}: ${{PORT}} in `stop` needs its start command to use it"),
                        ));
                    }
                    "NAME" => {}
                    "MODEL" if model.is_some() => {}
                    "MODEL" => {
                        return Err(src.err(
                            cmd,
                            format!(
                                "consumer {name:?}: ${{MODEL}} needs `models` or `estimate` to say which model"
                            ),
                        ));
                    }
                    other => {
                        return Err(src.err(
                            cmd,
                            format!(
                                "consumer {name:?}: unknown macro ${{{}}} (known: ${{PORT}}, ${{MODEL}}, ${{NAME}})",
                                memwarden_probe::sanitize::sanitize(other, 40)
                            ),
                        ));
                    }
                }
            }
            let word = word.replace("${NAME}", name);
            words.push(match &model {
                Some(m) => word.replace("${MODEL}", m),
                None => word,
            });
        }
        *out = Some(words);
    }
    let [start, stop] = commands;
    let upstream = match &c.upstream {
        Some(u) => Some(upstream(src, u, name, port_in_start)?),
        // A start command given its port needs no upstream: it answers there.
        None if port_in_start => Some(Upstream {
            host: "127.0.0.1".into(),
            port: 0,
            base: String::new(),
        }),
        None => None,
    };
    if port_in_start && upstream.as_ref().is_some_and(|u| u.port != 0) {
        let at = c.upstream.as_ref().expect("a fixed port was written");
        return Err(src.err(
            at,
            format!(
                "consumer {name:?}: its start command is given ${{PORT}}, so its upstream must \
                 use ${{PORT}} too (or be left out)"
            ),
        ));
    }
    Ok(Started {
        start,
        stop,
        upstream,
    })
}

fn upstream(
    src: &Source<'_>,
    u: &Spanned<String>,
    name: &str,
    port_in_start: bool,
) -> Result<Upstream, ConfigError> {
    let text = u.get_ref();
    super::validate::request_text(src, text, u.span().start, "upstream")?;
    let bad = |why: &str| src.err(u, format!("upstream {text:?}: {why}"));
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| bad("must start with http:// (model servers are reached on the host)"))?;
    let (authority, base) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, PORT)) => (h, 0),
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
        None => (authority, 80),
    };
    if !macro_names(base).map_err(|e| bad(&e))?.is_empty() || host.contains("${") {
        return Err(bad("only its port may be ${PORT}"));
    }
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let up = Upstream {
        host: host.to_string(),
        port,
        base: base.to_string(),
    };
    if port == 0 && !port_in_start {
        return Err(src.err(
            u,
            format!(
                "consumer {name:?}: its upstream's port is ${{PORT}}, which its start command must be given"
            ),
        ));
    }
    if port == 0 && !up.is_local() {
        return Err(bad("${PORT} is a port on this machine: use 127.0.0.1"));
    }
    Ok(up)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const POOL: &str = "[[pool]]\nname = \"p\"\nkind = \"ram\"\n[[consumer]]\nname = \"llm\"\npool = \"p\"\nresident = \"1GiB\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{POOL}{extra}"), "t.toml", None).map_err(|e| e.0)
    }

    #[test]
    fn name_and_model_are_put_in_and_port_is_left_for_the_start() {
        let cfg = parse(
            "models = [\"qwen3\"]\nstart = [\"srv\", \"--port\", \"${PORT}\", \"--alias\", \"${NAME}-${MODEL}\"]\n\
             stop = [\"kill-port\", \"${PORT}\"]\n",
        )
        .unwrap();
        let c = &cfg.consumers[0];
        let start = c.start.as_deref().unwrap();
        assert_eq!(start, ["srv", "--port", "${PORT}", "--alias", "llm-qwen3"]);
        assert_eq!(c.stop.as_deref().unwrap(), ["kill-port", "${PORT}"]);
        // No upstream written: the port the start is given, on loopback.
        let up = c.upstream.as_ref().unwrap();
        assert_eq!(
            (up.host.as_str(), up.port, up.base.as_str()),
            ("127.0.0.1", 0, "")
        );
        let with_base = parse(
            "upstream = \"http://localhost:${PORT}/v1/\"\nstart = [\"srv\", \"-p\", \"${PORT}\"]\n",
        )
        .unwrap();
        let up = with_base.consumers[0].upstream.clone().unwrap();
        assert_eq!(
            (up.host.as_str(), up.port, up.base.as_str()),
            ("localhost", 0, "/v1")
        );
    }

    #[test]
    fn a_command_without_port_keeps_its_upstream() {
        let cfg = parse("upstream = \"http://127.0.0.1:8080\"\nstart = [\"srv\", \"${NAME}\"]\n")
            .unwrap();
        assert_eq!(cfg.consumers[0].upstream.as_ref().unwrap().port, 8080);
        assert_eq!(cfg.consumers[0].start.as_deref().unwrap(), ["srv", "llm"]);
    }

    #[test]
    fn macros_that_cannot_be_put_in_are_errors_naming_the_line() {
        let cases = [
            (
                "start = [\"srv\", \"${PROT}\"]\n",
                "t.toml:8:9: consumer \"llm\": unknown macro ${PROT} (known: ${PORT}, ${MODEL}, ${NAME})",
            ),
            (
                "start = [\"srv\", \"${PORT\"]\n",
                "t.toml:8:9: consumer \"llm\": an unclosed \"${\" in \"${PORT\"",
            ),
            (
                "start = [\"srv\", \"${MODEL}\"]\n",
                "t.toml:8:9: consumer \"llm\": ${MODEL} needs `models` or `estimate` to say which model",
            ),
            (
                "upstream = \"http://127.0.0.1:8080\"\nstart = [\"srv\", \"${PORT}\"]\n",
                "t.toml:8:12: consumer \"llm\": its start command is given ${PORT}, so its upstream must use ${PORT} too (or be left out)",
            ),
            (
                "upstream = \"http://127.0.0.1:${PORT}\"\nstart = [\"srv\"]\n",
                "t.toml:8:12: consumer \"llm\": its upstream's port is ${PORT}, which its start command must be given",
            ),
            (
                "upstream = \"http://10.0.0.2:${PORT}\"\nstart = [\"srv\", \"${PORT}\"]\n",
                "t.toml:8:12: upstream \"http://10.0.0.2:${PORT}\": ${PORT} is a port on this machine: use 127.0.0.1",
            ),
            (
                "upstream = \"http://127.0.0.1:${PORT}/${NAME}\"\nstart = [\"srv\", \"${PORT}\"]\n",
                "t.toml:8:12: upstream \"http://127.0.0.1:${PORT}/${NAME}\": only its port may be ${PORT}",
            ),
            (
                "upstream = \"http://${NAME}:${PORT}\"\nstart = [\"srv\", \"${PORT}\"]\n",
                "t.toml:8:12: upstream \"http://${NAME}:${PORT}\": only its port may be ${PORT}",
            ),
            (
                "start = [\"srv\"]\nstop = [\"stop\", \"${PORT}\"]\n",
                "t.toml:9:8: consumer \"llm\": ${PORT} in `stop` needs its start command to use it",
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(parse(extra).unwrap_err(), want, "{extra}");
        }
    }
}
