//! The TCP listeners of this process's network namespace, asked of the kernel over netlink
//! (`sock_diag`, Documentation/networking and `linux/inet_diag.h`). Asking for listeners only
//! makes the kernel walk its listening table alone, where printing /proc/net/tcp walks every
//! socket of the machine (about a millisecond even when nearly empty). And the answer is about
//! the namespace our own connection goes through, which is the one that matters.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::net::ListenSocket;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then a 48-byte socket id.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` up to and including `idiag_inode`.
const MSG_LEN: usize = 72;

/// The listening TCP sockets of `family` (`libc::AF_INET` or `libc::AF_INET6`).
pub fn listeners(family: libc::c_int) -> io::Result<Vec<ListenSocket>> {
    // SAFETY: plain socket(2) call; the descriptor is owned right below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_receive_timeout(&fd)?;

    let mut req = Vec::with_capacity(NLMSG_HDR_LEN + REQ_LEN);
    req.extend_from_slice(&((NLMSG_HDR_LEN + REQ_LEN) as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    req.push(family as u8);
    req.push(libc::IPPROTO_TCP as u8);
    req.push(0); // no extensions
    req.push(0);
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req.resize(NLMSG_HDR_LEN + REQ_LEN, 0); // the socket id: all zero, no filter

    // SAFETY: a zeroed sockaddr_nl is valid; the kernel is the destination (pid 0).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `req` and `kernel` outlive the call and their lengths are given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }

    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag ended early",
            ));
        }
        if parse_messages(&buf[..n as usize], &mut out)? {
            return Ok(out);
        }
    }
}

fn set_receive_timeout(fd: &OwnedFd) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: `tv` outlives the call and its size is given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one datagram of netlink messages into `out`; true once the dump is done.
fn parse_messages(mut data: &[u8], out: &mut Vec<ListenSocket>) -> io::Result<bool> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag answer");
    while data.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(data[4..6].try_into().unwrap());
        if len < NLMSG_HDR_LEN || len > data.len() {
            return Err(malformed());
        }
        let body = &data[NLMSG_HDR_LEN..len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = body
                    .get(0..4)
                    .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                    .ok_or_else(malformed)?;
                return Err(io::Error::from_raw_os_error(-code));
            }
            SOCK_DIAG_BY_FAMILY => {
                if body.len() < MSG_LEN {
                    return Err(malformed());
                }
                if let Some(s) = parse_diag_msg(body) {
                    out.push(s);
                }
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        let step = (len + 3) & !3;
        data = data.get(step..).unwrap_or(&[]);
    }
    Ok(false)
}

/// One `struct inet_diag_msg`: family and state, then the socket id (ports in network order,
/// addresses as they sit on the wire), then timers and queues, uid and inode.
fn parse_diag_msg(m: &[u8]) -> Option<ListenSocket> {
    let family = m[0] as libc::c_int;
    if u32::from(m[1]) != TCP_LISTEN {
        return None;
    }
    let port = u16::from_be_bytes([m[4], m[5]]);
    let addr = match family {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(m[8], m[9], m[10], m[11])),
        libc::AF_INET6 => {
            let b: [u8; 16] = m[8..24].try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    let inode = u32::from_ne_bytes(m[68..72].try_into().ok()?);
    Some(ListenSocket {
        addr,
        port,
        inode: u64::from(inode),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_our_own_listeners() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let found = listeners(libc::AF_INET).expect("sock_diag answers on a Linux kernel");
        let mine: Vec<_> = found.iter().filter(|s| s.port == port).collect();
        assert_eq!(mine.len(), 1, "{found:?}");
        assert_eq!(mine[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(mine[0].inode > 0);
        let proc_view =
            crate::net::listening_sockets(&crate::HostRoot::system(), std::process::id());
        assert!(proc_view.contains(mine[0]), "netlink and /proc disagree");

        if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
            let port6 = v6.local_addr().unwrap().port();
            let found6 = listeners(libc::AF_INET6).unwrap();
            assert!(
                found6
                    .iter()
                    .any(|s| s.port == port6 && s.addr == IpAddr::V6(Ipv6Addr::LOCALHOST))
            );
        }
    }

    #[test]
    fn rejects_truncated_answers() {
        let mut out = Vec::new();
        let mut msg = vec![0u8; NLMSG_HDR_LEN];
        msg[0..4].copy_from_slice(&100u32.to_ne_bytes());
        assert!(parse_messages(&msg, &mut out).is_err());
        msg[0..4].copy_from_slice(&(NLMSG_HDR_LEN as u32).to_ne_bytes());
        msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert!(parse_messages(&msg, &mut out).is_err());
        msg[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        assert!(parse_messages(&msg, &mut out).unwrap());
    }
}
