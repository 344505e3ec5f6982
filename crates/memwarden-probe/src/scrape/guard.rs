//! Who may be asked: only an address we allow, and only a port that the process in question
//! itself listens on, so that no other local user can put up a listener and feed us numbers.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::diag;
use crate::net::{ListenSocket, parse_listening, socket_inodes};
use crate::root::HostRoot;

/// The address with an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) turned back into IPv4, so
/// that the loopback test and the listening-address match see one form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whether `ip` may be scraped: a loopback address, or one the operator listed.
pub fn host_allowed(ip: IpAddr, extra: &[IpAddr]) -> bool {
    let ip = canonical(ip);
    ip.is_loopback() || extra.iter().any(|a| canonical(*a) == ip)
}

/// Whether a socket listening on `listen` accepts connections made to `target`: the same
/// address, or a wildcard of the same family (`::` also takes IPv4 on a dual-stack socket).
fn covers(listen: IpAddr, target: IpAddr) -> bool {
    let (listen, target) = (canonical(listen), canonical(target));
    listen == target
        || match listen {
            IpAddr::V4(l) => l.is_unspecified() && target.is_ipv4(),
            IpAddr::V6(l) => l.is_unspecified(),
        }
}

/// Whether process `pid` holds the socket that listens on `addr`, seen from this process's
/// network namespace. A listener on the same port but another address, a listener in another
/// namespace (a container's own loopback, which our connection would never reach), or an
/// unreadable process are all "no".
pub fn pid_serves(root: &HostRoot, pid: u32, addr: SocketAddr) -> bool {
    let held = socket_inodes(root, pid);
    if held.is_empty() {
        return false;
    }
    let target = canonical(addr.ip());
    let serves = |s: &ListenSocket| {
        s.port == addr.port() && covers(s.addr, target) && held.contains(&s.inode)
    };
    // An IPv4 address can be served by an IPv4 listener or by a dual-stack `::` one, an IPv6
    // address only by an IPv6 listener; the second table is asked only when needed.
    let families: &[libc::c_int] = if target.is_ipv4() {
        &[libc::AF_INET, libc::AF_INET6]
    } else {
        &[libc::AF_INET6]
    };
    for &family in families {
        match diag::listeners(family) {
            Ok(list) if list.iter().any(&serves) => return true,
            Ok(_) => {}
            // Without sock_diag (a kernel without the module, a sandbox refusing netlink).
            Err(_) => return pid_serves_procfs(root, pid, addr),
        }
    }
    false
}

/// [`pid_serves`] from /proc alone: the process's own socket tables, and its network
/// namespace compared with ours. Reading /proc/net/tcp walks the kernel's whole socket table,
/// so tcp6 is read only when tcp did not answer.
pub fn pid_serves_procfs(root: &HostRoot, pid: u32, addr: SocketAddr) -> bool {
    let held = socket_inodes(root, pid);
    if held.is_empty() || !same_netns(root, pid) {
        return false;
    }
    let target = canonical(addr.ip());
    let files: &[&str] = if target.is_ipv4() {
        &["tcp", "tcp6"]
    } else {
        &["tcp6"]
    };
    files.iter().any(|f| {
        root.read_to_string(&format!("/proc/{pid}/net/{f}"))
            .is_ok_and(|text| {
                parse_listening(&text).iter().any(|s| {
                    s.port == addr.port() && covers(s.addr, target) && held.contains(&s.inode)
                })
            })
    })
}

/// Whether `pid` lives in the network namespace this process connects from. Our own namespace
/// is read from the real /proc: the connection is made from here, whatever the root.
fn same_netns(root: &HostRoot, pid: u32) -> bool {
    let theirs = std::fs::read_link(root.path(&format!("/proc/{pid}/ns/net")));
    let ours = std::fs::read_link(Path::new("/proc/self/ns/net"));
    matches!((theirs, ours), (Ok(t), Ok(o)) if t == o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn loopback_and_listed_hosts() {
        assert!(host_allowed(Ipv4Addr::LOCALHOST.into(), &[]));
        assert!(host_allowed(Ipv4Addr::new(127, 0, 0, 53).into(), &[]));
        assert!(host_allowed(Ipv6Addr::LOCALHOST.into(), &[]));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(host_allowed(mapped, &[]));
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        assert!(!host_allowed(lan, &[]));
        assert!(!host_allowed(Ipv4Addr::UNSPECIFIED.into(), &[]));
        assert!(host_allowed(lan, &[lan]));
        let mapped_lan: IpAddr = "::ffff:192.168.1.5".parse().unwrap();
        assert!(!host_allowed(mapped_lan, &[]));
    }

    #[test]
    fn config_from_json_refuses_unknown_keys() {
        use crate::scrape::ScrapeConfig;
        let c: ScrapeConfig = serde_json::from_str(r#"{"allow_hosts":["10.0.0.5"]}"#).unwrap();
        assert!(c.enabled);
        assert_eq!(c.allow_hosts, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert!(serde_json::from_str::<ScrapeConfig>(r#"{"allow_host":["10.0.0.5"]}"#).is_err());
        assert!(serde_json::from_str::<ScrapeConfig>(r#"{"allow_hosts":["nope"]}"#).is_err());
    }

    #[test]
    fn wildcard_covers_its_family() {
        let lo4: IpAddr = Ipv4Addr::LOCALHOST.into();
        let lo6: IpAddr = Ipv6Addr::LOCALHOST.into();
        assert!(covers(Ipv4Addr::UNSPECIFIED.into(), lo4));
        assert!(!covers(Ipv4Addr::UNSPECIFIED.into(), lo6));
        assert!(covers(Ipv6Addr::UNSPECIFIED.into(), lo4));
        assert!(covers(lo4, lo4));
        assert!(!covers("10.0.0.5".parse().unwrap(), lo4));
        assert!(covers("::ffff:127.0.0.1".parse().unwrap(), lo4));
    }
}
