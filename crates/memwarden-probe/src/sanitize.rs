//! Text from /proc, sysfs or a server is untrusted: it can carry terminal escapes or be huge.

/// The longest cmdline kept, in characters.
pub const CMDLINE_MAX: usize = 512;
/// The longest name (comm, device name, container name) kept, in characters.
pub const NAME_MAX: usize = 128;

/// Replaces control characters (and so every escape sequence's introducer) by a space or, for
/// NUL separators, a space; bounds the length to `max` characters with a trailing `…`.
pub fn sanitize(raw: &str, max: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max + 4));
    for (count, c) in raw.chars().enumerate() {
        if count == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

/// Bytes that may not be UTF-8 (a cmdline, a comm) into sanitised text.
pub fn sanitize_bytes(raw: &[u8], max: usize) -> String {
    sanitize(&String::from_utf8_lossy(raw), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes_and_bounds() {
        assert_eq!(sanitize("a\x1b[31mred\0b\n", 64), "a [31mred b");
        assert_eq!(sanitize("abcdef", 3), "abc…");
        assert_eq!(sanitize("", 3), "");
    }
}
