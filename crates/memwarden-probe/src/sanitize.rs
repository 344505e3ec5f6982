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

/// [`sanitize`] in place, allocating only for text that needs it (nearly none does).
pub fn sanitize_in_place(s: &mut String, max: usize) {
    if s.len() > max || s.chars().any(char::is_control) {
        *s = sanitize(s, max);
    }
}

/// The longest free text kept (a note, an error, a cgroup path), in characters.
pub const TEXT_MAX: usize = 512;

/// Every string of a snapshot made safe for a terminal. A snapshot is the probe's (already
/// clean) or a recording's, which anyone may have written: whatever shows one calls this first.
pub fn sanitize_snapshot(snap: &mut crate::Snapshot) {
    sanitize_in_place(&mut snap.hostname, NAME_MAX);
    for n in &mut snap.notes {
        sanitize_in_place(n, TEXT_MAX);
    }
    for g in &mut snap.gpus {
        sanitize_in_place(&mut g.name, NAME_MAX);
        sanitize_in_place(&mut g.bus_id, NAME_MAX);
        if let Some(e) = &mut g.error {
            sanitize_in_place(e, TEXT_MAX);
        }
    }
    for p in &mut snap.processes {
        sanitize_in_place(&mut p.name, NAME_MAX);
        sanitize_in_place(&mut p.cmdline, CMDLINE_MAX);
        if let Some(c) = &mut p.cgroup {
            sanitize_in_place(c, TEXT_MAX);
        }
    }
    for w in &mut snap.workloads {
        sanitize_in_place(&mut w.id, TEXT_MAX);
        sanitize_in_place(&mut w.name, NAME_MAX);
        for s in [&mut w.runtime, &mut w.image].into_iter().flatten() {
            sanitize_in_place(s, NAME_MAX);
        }
    }
    for n in &mut snap.numa {
        sanitize_in_place(&mut n.cpus, NAME_MAX);
    }
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
