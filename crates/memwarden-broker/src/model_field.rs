//! Finds the top-level `"model"` of a JSON request body as its bytes arrive, so that the proxy
//! can route a request without holding its whole body: it reads only up to the end of that
//! string, and forwards the rest as it comes.
//!
//! The bytes before the model are checked as JSON (the grammar, string escapes, UTF-8,
//! serde_json's nesting limit of 127); what follows the model is not read at all, so an error
//! there is the upstream's to find. Numbers are checked for their grammar, not their range.
//! Keys are compared after unescaping (`"mod\u0065l"` is `model`); a `model` inside a nested
//! object or array does not count.
//!
//! **Duplicate keys.** The first top-level `model` wins, and scanning stops there: a later
//! duplicate is never read. (serde_json takes the last one, which a reader that stops early
//! cannot know.) The model server sees the body as sent.

/// How deep objects and arrays may nest, the top-level object included (serde_json's limit).
const MAX_DEPTH: u32 = 127;

/// Why a body has no model a request can be routed by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("not JSON at byte {at}: {why}")]
    Invalid { at: u64, why: &'static str },
    #[error("its \"model\" (at byte {at}) is not a string")]
    NotString { at: u64 },
    #[error("its JSON object has no \"model\"")]
    NoModel,
    #[error("the body ended before its \"model\" (after {at} bytes)")]
    Truncated { at: u64 },
}

/// What a string's bytes are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Checked and dropped.
    Skip,
    /// A key of the top-level object: kept (a few bytes) to compare with `model`.
    TopKey,
    /// The top-level model: kept whole.
    Model,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level `{`.
    Start,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// A value.
    Value,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After a value: `,` or the end of its container.
    After,
    Str,
    /// After `\` in a string.
    Escape,
    /// In `\uXXXX`: `digits` read so far.
    Hex {
        digits: u8,
        value: u16,
    },
    /// After a leading surrogate's escape: its trailing one must follow (`\`, then `u`).
    Trail {
        backslash: bool,
    },
    /// Continuation bytes of a UTF-8 sequence: how many remain, and the range of the next.
    Utf8 {
        left: u8,
        lo: u8,
        hi: u8,
    },
    Number(Num),
    Literal {
        word: &'static [u8],
        at: u8,
    },
    Found,
    Failed,
}

/// An incremental scanner: [`ModelScanner::push`] each chunk of a body until it returns the
/// model; [`ModelScanner::finish`] at the end of a body that had none.
#[derive(Debug)]
pub struct ModelScanner {
    state: State,
    /// Bytes consumed so far.
    at: u64,
    /// How deep the current value nests (1: inside the top-level object).
    depth: u32,
    /// Bit `d` set: the container at depth `d + 1` is an array.
    arrays: u128,
    target: Target,
    /// Whether the string being read is a key.
    in_key: bool,
    /// The key just read, at the top level: whether it is `model`.
    key_is_model: bool,
    /// The unescaped bytes of a top-level key (up to 6) or of the model.
    text: Vec<u8>,
    /// A leading surrogate waiting for its trailing one.
    high: u16,
    model: Option<String>,
}

impl Default for ModelScanner {
    fn default() -> Self {
        ModelScanner::new()
    }
}

impl ModelScanner {
    pub fn new() -> ModelScanner {
        ModelScanner {
            state: State::Start,
            at: 0,
            depth: 0,
            arrays: 0,
            target: Target::Skip,
            in_key: false,
            key_is_model: false,
            text: Vec::new(),
            high: 0,
            model: None,
        }
    }

    /// Bytes consumed so far: once the model is found, the offset just past its closing quote.
    pub fn consumed(&self) -> u64 {
        self.at
    }

    /// The model, once found.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Reads `chunk`, the next bytes of the body: `Ok(Some(model))` as soon as the model's
    /// closing quote is in (later bytes are not looked at, now or on later calls), `Ok(None)`
    /// when more is needed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<&str>, ScanError> {
        if self.state == State::Failed {
            return Err(self.fail("a body already refused"));
        }
        let mut i = 0;
        while i < chunk.len() && self.state != State::Found {
            // The bulk of a large body is the text of its messages: skipped a run at a time.
            if self.state == State::Str && self.target == Target::Skip {
                let plain = chunk[i..]
                    .iter()
                    .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
                    .unwrap_or(chunk.len() - i);
                i += plain;
                self.at += plain as u64;
                if i == chunk.len() {
                    break;
                }
            }
            if let Err(e) = self.step(chunk[i]) {
                self.state = State::Failed;
                return Err(e);
            }
            self.at += 1;
            i += 1;
        }
        Ok(self.model.as_deref())
    }

    /// The body has ended: the model, or why there is none.
    pub fn finish(&self) -> Result<&str, ScanError> {
        match (&self.model, self.state) {
            (Some(m), _) => Ok(m),
            (None, State::Failed) => Err(ScanError::Invalid {
                at: self.at,
                why: "a body already refused",
            }),
            (None, _) => Err(ScanError::Truncated { at: self.at }),
        }
    }

    fn fail(&self, why: &'static str) -> ScanError {
        ScanError::Invalid { at: self.at, why }
    }

    fn step(&mut self, b: u8) -> Result<(), ScanError> {
        match self.state {
            State::Str => self.string_byte(b),
            State::Escape => self.escape(b),
            State::Hex { digits, value } => self.hex(b, digits, value),
            State::Trail { backslash } => match (backslash, b) {
                (false, b'\\') => {
                    self.state = State::Trail { backslash: true };
                    Ok(())
                }
                (true, b'u') => {
                    self.state = State::Hex {
                        digits: 0,
                        value: 0,
                    };
                    Ok(())
                }
                _ => Err(self.fail("a leading surrogate escape without its trailing one")),
            },
            State::Utf8 { left, lo, hi } => {
                if !(lo..=hi).contains(&b) {
                    return Err(self.fail("invalid UTF-8 in a string"));
                }
                self.keep(b);
                self.state = match left {
                    1 => State::Str,
                    _ => State::Utf8 {
                        left: left - 1,
                        lo: 0x80,
                        hi: 0xBF,
                    },
                };
                Ok(())
            }
            State::Number(n) => self.number(b, n),
            State::Literal { word, at } => {
                if word[at as usize] != b {
                    return Err(self.fail("an unknown literal (not true, false or null)"));
                }
                self.state = match at as usize + 1 == word.len() {
                    true => State::After,
                    false => State::Literal { word, at: at + 1 },
                };
                Ok(())
            }
            _ if is_space(b) => Ok(()),
            State::Start => match b {
                b'{' => self.open(false, State::KeyOrEnd),
                _ => Err(self.fail("a request body routed by its model must be a JSON object")),
            },
            State::KeyOrEnd if b == b'}' => self.close(),
            State::KeyOrEnd | State::Key => match b {
                b'"' => {
                    self.begin_string(match self.depth {
                        1 => Target::TopKey,
                        _ => Target::Skip,
                    });
                    self.in_key = true;
                    Ok(())
                }
                _ => Err(self.fail("expected a key (a string)")),
            },
            State::Colon => match b {
                b':' => {
                    self.state = State::Value;
                    Ok(())
                }
                _ => Err(self.fail("expected ':' after a key")),
            },
            State::ValueOrEnd if b == b']' => self.close(),
            State::Value | State::ValueOrEnd => self.value(b),
            State::After => match (b, self.in_array()) {
                (b',', false) => {
                    self.state = State::Key;
                    Ok(())
                }
                (b',', true) => {
                    self.state = State::Value;
                    Ok(())
                }
                (b'}', false) => self.close(),
                (b']', true) => self.close(),
                _ => Err(self.fail("expected ',' or the end of an object or array")),
            },
            State::Found | State::Failed => Ok(()),
        }
    }

    fn in_array(&self) -> bool {
        self.depth > 0 && self.arrays & (1u128 << (self.depth - 1)) != 0
    }

    fn open(&mut self, array: bool, next: State) -> Result<(), ScanError> {
        if self.depth == MAX_DEPTH {
            return Err(self.fail("nested more than 127 deep"));
        }
        let bit = 1u128 << self.depth;
        self.arrays = if array {
            self.arrays | bit
        } else {
            self.arrays & !bit
        };
        self.depth += 1;
        self.state = next;
        Ok(())
    }

    fn close(&mut self) -> Result<(), ScanError> {
        self.depth -= 1;
        if self.depth == 0 {
            return Err(ScanError::NoModel);
        }
        self.state = State::After;
        Ok(())
    }

    /// The first byte of a value.
    fn value(&mut self, b: u8) -> Result<(), ScanError> {
        let model_value = self.depth == 1 && self.key_is_model;
        self.key_is_model = false;
        if model_value && b != b'"' {
            return Err(ScanError::NotString { at: self.at });
        }
        match b {
            b'"' => {
                self.begin_string(match model_value {
                    true => Target::Model,
                    false => Target::Skip,
                });
                Ok(())
            }
            b'{' => self.open(false, State::KeyOrEnd),
            b'[' => self.open(true, State::ValueOrEnd),
            b'-' => {
                self.state = State::Number(Num::Minus);
                Ok(())
            }
            b'0' => {
                self.state = State::Number(Num::Zero);
                Ok(())
            }
            b'1'..=b'9' => {
                self.state = State::Number(Num::Int);
                Ok(())
            }
            b't' | b'f' | b'n' => {
                let word: &'static [u8] = match b {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                self.state = State::Literal { word, at: 1 };
                Ok(())
            }
            _ => Err(self.fail("expected a value")),
        }
    }

    fn number(&mut self, b: u8, n: Num) -> Result<(), ScanError> {
        let digit = b.is_ascii_digit();
        let next = match (n, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, _) if digit => Num::Int,
            (Num::Int, _) if digit => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
            (Num::Dot | Num::Frac, _) if digit => Num::Frac,
            (Num::Exp, b'+' | b'-') => Num::ExpSign,
            (Num::Exp | Num::ExpSign | Num::ExpDigits, _) if digit => Num::ExpDigits,
            // The number has ended: this byte is whatever follows a value.
            (Num::Zero | Num::Int | Num::Frac | Num::ExpDigits, _) => {
                self.state = State::After;
                return self.step(b);
            }
            _ => return Err(self.fail("an invalid number")),
        };
        self.state = State::Number(next);
        Ok(())
    }

    fn begin_string(&mut self, target: Target) {
        self.target = target;
        self.in_key = false;
        self.text.clear();
        self.state = State::Str;
    }

    /// Keeps an unescaped byte of a string whose text matters.
    fn keep(&mut self, b: u8) {
        match self.target {
            Target::Skip => {}
            // Longer than "model": not it, and no need to keep more.
            Target::TopKey if self.text.len() > 5 => {}
            Target::TopKey | Target::Model => self.text.push(b),
        }
    }

    fn string_byte(&mut self, b: u8) -> Result<(), ScanError> {
        match b {
            b'"' => self.end_string(),
            b'\\' => {
                self.state = State::Escape;
                Ok(())
            }
            0..=0x1F => Err(self.fail("a control character inside a string")),
            0x20..=0x7F => {
                self.keep(b);
                Ok(())
            }
            _ => {
                // The ranges that make UTF-8 reject overlong forms and surrogates.
                let (left, lo, hi) = match b {
                    0xC2..=0xDF => (1, 0x80, 0xBF),
                    0xE0 => (2, 0xA0, 0xBF),
                    0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
                    0xED => (2, 0x80, 0x9F),
                    0xF0 => (3, 0x90, 0xBF),
                    0xF1..=0xF3 => (3, 0x80, 0xBF),
                    0xF4 => (3, 0x80, 0x8F),
                    _ => return Err(self.fail("invalid UTF-8 in a string")),
                };
                self.keep(b);
                self.state = State::Utf8 { left, lo, hi };
                Ok(())
            }
        }
    }

    fn escape(&mut self, b: u8) -> Result<(), ScanError> {
        let c = match b {
            b'"' | b'\\' | b'/' => b,
            b'b' => 0x08,
            b'f' => 0x0C,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                self.state = State::Hex {
                    digits: 0,
                    value: 0,
                };
                return Ok(());
            }
            _ => return Err(self.fail("an invalid escape in a string")),
        };
        self.keep(c);
        self.state = State::Str;
        Ok(())
    }

    fn hex(&mut self, b: u8, digits: u8, value: u16) -> Result<(), ScanError> {
        let Some(d) = (b as char).to_digit(16) else {
            return Err(self.fail("an invalid \\u escape"));
        };
        let value = (value << 4) | d as u16;
        if digits < 3 {
            self.state = State::Hex {
                digits: digits + 1,
                value,
            };
            return Ok(());
        }
        let high = std::mem::take(&mut self.high);
        let code = match (high, value) {
            (0, 0xD800..=0xDBFF) => {
                self.high = value;
                self.state = State::Trail { backslash: false };
                return Ok(());
            }
            (0, 0xDC00..=0xDFFF) => return Err(self.fail("a lone trailing surrogate escape")),
            (0, v) => u32::from(v),
            (h, 0xDC00..=0xDFFF) => {
                0x10000 + ((u32::from(h) - 0xD800) << 10) + (u32::from(value) - 0xDC00)
            }
            _ => return Err(self.fail("a leading surrogate escape without its trailing one")),
        };
        // Every code point reaching here is a valid char (surrogates were paired above).
        let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut buf = [0u8; 4];
        for &byte in c.encode_utf8(&mut buf).as_bytes() {
            self.keep(byte);
        }
        self.state = State::Str;
        Ok(())
    }

    fn end_string(&mut self) -> Result<(), ScanError> {
        match self.target {
            Target::Skip if self.in_key => self.state = State::Colon,
            Target::Skip => self.state = State::After,
            Target::TopKey => {
                self.key_is_model = self.text == b"model";
                self.state = State::Colon;
            }
            Target::Model => {
                // Checked byte by byte above, so always valid.
                let text = std::mem::take(&mut self.text);
                self.model = Some(String::from_utf8(text).map_err(|_| self.fail("invalid UTF-8"))?);
                self.state = State::Found;
                return Ok(());
            }
        }
        Ok(())
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
#[path = "model_field_tests.rs"]
mod tests;
