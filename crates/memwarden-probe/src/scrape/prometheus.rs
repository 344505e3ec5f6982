//! A parser for the Prometheus text exposition format (version 0.0.4), as llama.cpp's and
//! vLLM's `/metrics` serve it. Strict on purpose: a line that is not a comment, blank, or a
//! well-formed sample makes the whole answer malformed, so a page that is not metrics (an HTML
//! error page, a truncated body) is never half-read into numbers.
//!
//! Metric names may hold colons (`vllm:num_requests_running`, `llamacpp:requests_processing`);
//! label values may hold commas, braces and escaped quotes.

use std::fmt;

use super::{ScrapeError, ServerKind, ServerMetrics, count, ratio};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub why: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

/// Parses a whole exposition into its samples, in order.
pub fn parse(text: &str) -> Result<Vec<Sample<'_>>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(|why| ParseError { line: i + 1, why })?;
        out.push(sample);
    }
    Ok(out)
}

/// A server whose page carries one unlabelled gauge each for running and waiting requests (and
/// maybe one for KV-cache usage), as llama.cpp's and TGI's do.
pub(super) struct SingleGauges {
    pub kind: ServerKind,
    pub running: &'static str,
    pub waiting: &'static str,
    pub kv_usage: Option<&'static str>,
}

impl SingleGauges {
    /// Reads the gauges; a page with neither request gauge is not this server's.
    pub fn read(&self, body: &str) -> Result<ServerMetrics, ScrapeError> {
        let samples = parse(body).map_err(|e| ScrapeError::Malformed(e.to_string()))?;
        let value = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
        let running = value(self.running);
        let waiting = value(self.waiting);
        if running.is_none() && waiting.is_none() {
            return Err(ScrapeError::Malformed(format!(
                "no {} or {} in the answer",
                self.running, self.waiting
            )));
        }
        Ok(ServerMetrics {
            kind: self.kind,
            kv_cache_usage_ratio: self.kv_usage.and_then(value).and_then(ratio),
            kv_cache_bytes: None,
            requests_running: running.and_then(count),
            requests_waiting: waiting.and_then(count),
            models: Vec::new(),
        })
    }
}

fn parse_sample(line: &str) -> Result<Sample<'_>, &'static str> {
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("a sample must start with a metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space before the value");
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = parse_value(fields.next().ok_or("missing value")?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing text after the timestamp");
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses `name="value",...}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut Vec<(&'a str, String)>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated labels")?;
        let key = &s[..end];
        if key.is_empty() {
            return Err("empty label name");
        }
        s = s[end..].trim_start();
        s = s.strip_prefix('=').ok_or("expected = after a label name")?;
        s = s.trim_start();
        s = s.strip_prefix('"').ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err("bad escape in a label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key, value));
        s = s[close + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected , or } after a label");
        }
    }
}

fn parse_value(v: &str) -> Result<f64, &'static str> {
    match v {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => {
            // Rust also accepts `inf`, `nan` and `infinity`; the format does not.
            if v.bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
            {
                return Err("bad value");
            }
            v.parse::<f64>().map_err(|_| "bad value")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_colons_labels_with_commas() {
        let t = "# HELP vllm:num_requests_running Number of requests.\n\
                 # TYPE vllm:num_requests_running gauge\n\
                 vllm:num_requests_running{engine=\"0\",model_name=\"a,b}\\\"c\\\\\"} 3.0\n\
                 llamacpp:requests_deferred 0\n\
                 x_total{a=\"1\",} 1e3 1700000000000\n";
        let s = parse(t).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "vllm:num_requests_running");
        assert_eq!(s[0].label("model_name"), Some("a,b}\"c\\"));
        assert_eq!(s[0].label("engine"), Some("0"));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].value, 0.0);
        assert_eq!(s[2].value, 1000.0);
    }

    #[test]
    fn special_values() {
        let s = parse("a NaN\nb +Inf\nc -Inf\n").unwrap();
        assert!(s[0].value.is_nan());
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        assert!(parse("a inf\n").is_err());
        assert!(parse("a infinity\n").is_err());
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            "<html><body>hi</body></html>",
            "{\"models\":[]}",
            "a{b=\"1\" 2",
            "a{b=1} 2",
            "a{b=\"1\"}2",
            "a",
            "a 1 2 3",
            "a 1 notatime",
            "1abc 2",
            "a{b=\"x\\q\"} 1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse("ok 1\nbad line here\n").unwrap_err().line, 2);
        assert_eq!(parse("").unwrap(), vec![]);
    }
}
