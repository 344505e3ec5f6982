//! Reading a server-sent event stream (what the broker's followed logs and events are), as the
//! HTML standard defines it: events end at a blank line; `data:` lines join with newlines.

/// One event: its `event:` name, if any, and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

/// The most of a partial line kept between chunks: a stream that never ends a line cannot
/// grow this reader without bound.
const MAX_PENDING: usize = 1 << 20;

/// Turns the chunks of a stream into whole events.
#[derive(Default)]
pub struct Events {
    pending: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl Events {
    /// Takes the next chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            self.line(line, &mut out);
        }
        if self.pending.len() > MAX_PENDING {
            self.pending.clear();
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(Event {
                    event: self.event.take(),
                    data,
                });
            }
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return; // a comment: the keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_whole_across_chunks_and_comments_are_skipped() {
        let mut e = Events::default();
        assert!(e.push(b": keep-alive\n\ndata: hel").is_empty());
        let got = e.push(b"lo\r\n\r\nevent: missed\ndata: 3 lines\ndata: more\n\n");
        assert_eq!(
            got,
            [
                Event {
                    event: None,
                    data: "hello".into()
                },
                Event {
                    event: Some("missed".into()),
                    data: "3 lines\nmore".into()
                }
            ]
        );
    }

    #[test]
    fn an_endless_line_is_dropped_not_kept() {
        let mut e = Events::default();
        for _ in 0..300 {
            e.push(&[b'x'; 8192]);
        }
        assert!(e.pending.len() <= MAX_PENDING);
    }
}
