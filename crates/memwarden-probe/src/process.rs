//! Parsers for a process's files under /proc/PID.

/// What /proc/PID/stat gives us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat<'a> {
    /// The comm between the parentheses, raw: it may hold spaces and parentheses itself.
    pub comm: &'a [u8],
    pub state: u8,
    pub ppid: u32,
    pub pgrp: i32,
    /// Fields 14 and 15: CPU time in user and kernel mode, in clock ticks, summed.
    pub cpu_ticks: u64,
    /// Field 22: start time in clock ticks since boot.
    pub starttime: u64,
    /// Field 24: resident set size in pages.
    pub rss_pages: u64,
}

/// Parses /proc/PID/stat. The comm is delimited by the first `(` and the *last* `)`, since a
/// process can name itself `a) S 1 (b`.
pub fn parse_stat(buf: &[u8]) -> Option<Stat<'_>> {
    let open = buf.iter().position(|&b| b == b'(')?;
    let close = buf.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = &buf[open + 1..close];
    let rest = std::str::from_utf8(buf.get(close + 1..)?).ok()?;
    // Fields after the comm start at field 3 (state).
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Fields 6 up to 13 are skipped: 8 fields.
    let mut fields = fields.skip(8);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Fields 16 up to 21 are skipped: 6 fields.
    let mut fields = fields.skip(6);
    let starttime = fields.next()?.parse().ok()?;
    let _vsize = fields.next()?;
    let rss_pages = fields.next()?.parse::<i64>().ok()?.max(0) as u64;
    Some(Stat {
        comm,
        state,
        ppid,
        pgrp,
        cpu_ticks: utime.saturating_add(stime),
        starttime,
        rss_pages,
    })
}

/// What /proc/PID/status gives us: the real uid and VmRSS (absent for kernel threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub uid: Option<u32>,
    pub rss_bytes: Option<u64>,
}

pub fn parse_status(buf: &[u8]) -> Status {
    let mut out = Status::default();
    for line in buf.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"Uid:") {
            out.uid = std::str::from_utf8(rest)
                .ok()
                .and_then(|r| r.split_ascii_whitespace().next()?.parse().ok());
        } else if let Some(rest) = line.strip_prefix(b"VmRSS:") {
            out.rss_bytes = std::str::from_utf8(rest)
                .ok()
                .and_then(crate::meminfo::kib_value);
            // VmRSS comes after Uid: nothing more to find.
            break;
        }
    }
    out
}

/// /proc/PID/cmdline: arguments separated by NULs, into one sanitised line.
pub fn parse_cmdline(buf: &[u8]) -> String {
    let trimmed = buf.strip_suffix(b"\0").unwrap_or(buf);
    crate::sanitize::sanitize_bytes(trimmed, crate::sanitize::CMDLINE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &[u8] = b"1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 4 0 987654 123456789 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_with_parentheses_in_comm() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(s.comm, b"my (weird) proc");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 1234);
        assert_eq!(s.cpu_ticks, 5 + 3);
        assert_eq!(s.starttime, 987654);
        assert_eq!(s.rss_pages, 2560);
    }

    #[test]
    fn stat_truncated_is_none() {
        assert_eq!(parse_stat(b"1 (x) S 1 2"), None);
        assert_eq!(parse_stat(b"1 )x( S"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn status_fields() {
        let t = b"Name:\tbash\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\nVmRSS:\t    5120 kB\n";
        assert_eq!(
            parse_status(t),
            Status {
                uid: Some(1000),
                rss_bytes: Some(5120 * 1024)
            }
        );
        assert_eq!(
            parse_status(b"Name:\tkthreadd\nUid:\t0\t0\t0\t0\n").rss_bytes,
            None
        );
    }

    #[test]
    fn cmdline() {
        assert_eq!(parse_cmdline(b"python3\0-m\0vllm\0"), "python3 -m vllm");
        assert_eq!(parse_cmdline(b"evil\x1b]0;x\x07\0"), "evil ]0;x");
        assert_eq!(parse_cmdline(b""), "");
    }
}
