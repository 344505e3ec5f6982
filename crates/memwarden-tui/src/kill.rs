//! Ending a process from the interface, safely: the target is a process identity
//! `(pid, starttime)`, checked again right before the signal through a pidfd (so a pid reused
//! between the check and the signal cannot be hit), only the user's own processes (or any as
//! root), and every attempt appended to an audit log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use memwarden_probe::HostRoot;
use memwarden_probe::process::parse_stat;
use memwarden_probe::snapshot::ProcessId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
        }
    }

    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KillError {
    #[error("process {0} has exited")]
    Gone(u32),
    #[error("pid {0} now belongs to another process (its start time changed): not signalled")]
    Reused(u32),
    #[error("process {pid} belongs to uid {owner}, not to you (uid {me})")]
    NotOwner { pid: u32, owner: u32, me: u32 },
    #[error("pid {pid} is {what}: memwarden never signals it")]
    Protected { pid: u32, what: &'static str },
    #[error("cannot signal process {pid}: {why}")]
    Os { pid: u32, why: String },
}

fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    memwarden_probe::root::read_bounded(path, memwarden_probe::root::SMALL_FILE_BYTES)
}

/// The identity of `pid` now, from /proc/PID/stat; `None` when it has exited.
pub fn identity_now(root: &HostRoot, pid: u32) -> Option<ProcessId> {
    let stat = read_small(&root.path(&format!("/proc/{pid}/stat"))).ok()?;
    let st = parse_stat(&stat)?;
    Some(ProcessId {
        pid,
        starttime: st.starttime,
    })
}

/// Whether the process is still the one we mean.
pub fn is_alive(root: &HostRoot, target: ProcessId) -> bool {
    identity_now(root, target.pid) == Some(target)
}

/// The real owner of a process, from /proc/PID/status.
fn owner(root: &HostRoot, pid: u32) -> Option<u32> {
    let status = read_small(&root.path(&format!("/proc/{pid}/status"))).ok()?;
    memwarden_probe::process::parse_status(&status).uid
}

/// Processes whose end takes the machine or the user's own terminal down with them: init, the
/// leader of the session memwarden runs in (the login shell of this terminal) and memwarden
/// itself; and pid 0, which is no process: kill(0, …) signals memwarden's whole process group.
/// `None` when `pid` is none of them.
pub fn protected(pid: u32, session_leader: Option<u32>, me: u32) -> Option<&'static str> {
    if pid == 0 {
        Some("pid 0 (to the kernel, this whole process group)")
    } else if pid == 1 {
        Some("init (pid 1)")
    } else if session_leader == Some(pid) {
        Some("the leader of this terminal's session")
    } else if pid == me {
        Some("this memwarden")
    } else {
        None
    }
}

/// The refusal for a protected `pid` in the running process's own context.
pub fn guard(pid: u32) -> Result<(), KillError> {
    // SAFETY: getsid(0) has no preconditions; it returns -1 only on error.
    let sid = unsafe { libc::getsid(0) };
    let leader = u32::try_from(sid).ok().filter(|&s| s > 0);
    match protected(pid, leader, std::process::id()) {
        Some(what) => Err(KillError::Protected { pid, what }),
        None => Ok(()),
    }
}

/// May the user with effective uid `me` signal a process owned by `owner`? Root may signal
/// any; others only their own (the kernel would allow more with capabilities: we do not).
pub fn may_signal(me: u32, owner: u32) -> bool {
    me == 0 || me == owner
}

/// Sends `signal` to `target` if, and only if, it is still the same process and the user's.
pub fn send(root: &HostRoot, target: ProcessId, signal: Signal) -> Result<(), KillError> {
    let pid = target.pid;
    guard(pid)?;
    let raw_pid = libc::pid_t::try_from(pid).map_err(|_| KillError::Gone(pid))?;
    // A pidfd pins the process: once its identity is checked through /proc, the signal
    // reaches that process or none, even if the pid is reused in between.
    let pidfd = Pidfd::open(raw_pid);
    match identity_now(root, pid) {
        None => return Err(KillError::Gone(pid)),
        Some(now) if now != target => return Err(KillError::Reused(pid)),
        Some(_) => {}
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if let Some(owner) = owner(root, pid)
        && !may_signal(me, owner)
    {
        return Err(KillError::NotOwner { pid, owner, me });
    }
    let rc = match &pidfd {
        Ok(fd) => fd.send(signal.number()),
        // Kernels before 5.3 have no pidfd: the identity check just above narrows the window.
        // SAFETY: kill has no memory preconditions.
        Err(_) => unsafe { libc::kill(raw_pid, signal.number()) },
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Err(KillError::Gone(pid)),
        _ => Err(KillError::Os {
            pid,
            why: err.to_string(),
        }),
    }
}

struct Pidfd(libc::c_int);

impl Pidfd {
    fn open(pid: libc::pid_t) -> std::io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Pidfd(fd as libc::c_int))
    }

    fn send(&self, sig: libc::c_int) -> libc::c_int {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            ) as libc::c_int
        }
    }
}

impl Drop for Pidfd {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// How long the process has run, from its start time in clock ticks and /proc/uptime.
pub fn process_age(root: &HostRoot, starttime_ticks: u64) -> Option<Duration> {
    let uptime: f64 = root
        .read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    };
    let age = uptime - starttime_ticks as f64 / hz;
    (age.is_finite() && age >= 0.0).then(|| Duration::from_secs_f64(age))
}

/// `3d 4h`, `2h 05m`, `7m 12s`, `42s`: the age as a person reads it in a confirmation.
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// The audit log: `$XDG_DATA_HOME/memwarden/audit.log`, else `~/.local/share/memwarden/…`.
pub fn default_audit_path() -> Option<PathBuf> {
    crate::config::xdg_dir("XDG_DATA_HOME", ".local/share")
        .map(|d| d.join("memwarden").join("audit.log"))
}

/// Appends one line per attempt: time, who, what, to whom, and the outcome.
pub fn audit(
    path: &Path,
    target: ProcessId,
    name: &str,
    signal: Signal,
    outcome: &Result<(), KillError>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let result = match outcome {
        Ok(()) => "sent".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    let line = format!(
        "{time} uid={me} {sig} pid={pid} starttime={st} name={name:?} result={result:?}\n",
        time = humantime::format_rfc3339_seconds(SystemTime::now()),
        sig = signal.name(),
        pid = target.pid,
        st = target.starttime,
        name = memwarden_probe::sanitize::sanitize(name, 64),
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_rule() {
        assert!(may_signal(0, 1000));
        assert!(may_signal(1000, 1000));
        assert!(!may_signal(1000, 0));
        assert!(!may_signal(1000, 1001));
    }

    #[test]
    fn init_session_leader_and_self_are_protected() {
        assert!(protected(1, Some(400), 500).is_some());
        assert!(protected(400, Some(400), 500).is_some());
        assert!(protected(500, Some(400), 500).is_some());
        assert_eq!(protected(401, Some(400), 500), None);
        assert_eq!(protected(2, None, 500), None);
        // A session leader outside this pid namespace reads as 0: pid 0 stays refused anyway.
        assert!(protected(0, None, 500).is_some());
        assert!(matches!(
            send(
                &HostRoot::system(),
                ProcessId {
                    pid: 1,
                    starttime: 0
                },
                Signal::Term
            ),
            Err(KillError::Protected { pid: 1, .. })
        ));
    }

    #[test]
    fn ages() {
        assert_eq!(format_age(Duration::from_secs(42)), "42s");
        assert_eq!(format_age(Duration::from_secs(7 * 60 + 12)), "7m 12s");
        assert_eq!(format_age(Duration::from_secs(2 * 3600 + 300)), "2h 05m");
        assert_eq!(
            format_age(Duration::from_secs(3 * 86400 + 4 * 3600)),
            "3d 4h"
        );
    }

    #[test]
    fn own_process_has_an_age() {
        let root = HostRoot::system();
        let me = identity_now(&root, std::process::id()).unwrap();
        assert!(process_age(&root, me.starttime).is_some());
        assert!(is_alive(&root, me));
    }
}
