//! Which process owns a listening TCP port: /proc/PID/net/tcp{,6} (the process's own network
//! namespace) maps the port to a socket inode, and /proc/PID/fd names the inodes it holds.
//! Used to check that an inference server's port belongs to the process we attribute it to,
//! and by the broker to find a consumer's process.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::root::HostRoot;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSocket {
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
}

const TCP_LISTEN: &str = "0A";

/// Parses /proc/net/tcp or tcp6 and keeps the listening sockets.
pub fn parse_listening(text: &str) -> Vec<ListenSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 10 || f[3] != TCP_LISTEN {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            Some(ListenSocket {
                addr: parse_hex_addr(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// The kernel prints addresses as native-endian 32-bit words in hex.
fn parse_hex_addr(hex: &str) -> Option<IpAddr> {
    // Sliced by bytes below: anything but ASCII hex is refused first (found by fuzzing).
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(native_bytes(hex)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let chunk: [u8; 4] = native_bytes(&hex[i * 8..i * 8 + 8])?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&chunk);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// An 8-digit hex word as the kernel printed it (`%08X` of a u32 in memory order) back into
/// the four bytes as they sit in memory.
fn native_bytes(hex: &str) -> Option<[u8; 4]> {
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

/// The socket inodes a process holds open (`socket:[N]` fd links). Empty when we may not read
/// its fds.
pub fn socket_inodes(root: &HostRoot, pid: u32) -> HashSet<u64> {
    let dir = root.path(&format!("/proc/{pid}/fd"));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .filter_map(|e| {
            let target = std::fs::read_link(e.ok()?.path()).ok()?;
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The sockets listening in `pid`'s network namespace.
pub fn listening_sockets(root: &HostRoot, pid: u32) -> Vec<ListenSocket> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| root.read_to_string(&format!("/proc/{pid}/net/{f}")).ok())
        .flat_map(|t| parse_listening(&t))
        .collect()
}

/// Whether `pid` itself holds a socket listening on `port` (any address).
pub fn pid_owns_port(root: &HostRoot, pid: u32, port: u16) -> bool {
    let wanted: HashSet<u64> = listening_sockets(root, pid)
        .into_iter()
        .filter(|s| s.port == port)
        .map(|s| s.inode)
        .collect();
    !wanted.is_empty() && !socket_inodes(root, pid).is_disjoint(&wanted)
}

/// The process that holds the socket listening on `port`, searching every process; `None` when
/// no readable process holds it.
pub fn owner_of_port(root: &HostRoot, port: u16) -> Option<u32> {
    let wanted = listening_on(root, port);
    if wanted.is_empty() {
        return None;
    }
    let entries = std::fs::read_dir(root.path("/proc")).ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| !socket_inodes(root, pid).is_disjoint(&wanted))
}

/// Which process holds the socket listening on each of many ports, read once: the socket
/// tables once, and the descriptors of every process once (only if one of the ports has a
/// listener). Asking [`owner_of_port`] for each of N ports reads them N times, which for a
/// broker of 200 consumers on a busy machine takes seconds.
#[derive(Debug, Default)]
pub struct PortIndex {
    /// port -> the inodes listening on it; every port asked for has an entry.
    listening: HashMap<u16, HashSet<u64>>,
    /// inode -> (the place of its process in /proc's listing, pid): the first one holding it,
    /// as [`owner_of_port`] finds it.
    holders: HashMap<u64, (usize, u32)>,
}

impl PortIndex {
    pub fn read(root: &HostRoot, ports: &[u16]) -> PortIndex {
        let mut listening: HashMap<u16, HashSet<u64>> =
            ports.iter().map(|p| (*p, HashSet::new())).collect();
        let tables = ["/proc/net/tcp", "/proc/net/tcp6"];
        for s in (tables.iter().filter_map(|t| root.read_to_string(t).ok()))
            .flat_map(|t| parse_listening(&t))
        {
            if let Some(inodes) = listening.get_mut(&s.port) {
                inodes.insert(s.inode);
            }
        }
        let wanted: HashSet<u64> = listening.values().flatten().copied().collect();
        let mut holders = HashMap::new();
        if !wanted.is_empty()
            && let Ok(entries) = std::fs::read_dir(root.path("/proc"))
        {
            let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
            for (place, pid) in pids.enumerate() {
                for inode in socket_inodes(root, pid).intersection(&wanted) {
                    holders.entry(*inode).or_insert((place, pid));
                }
                if holders.len() == wanted.len() {
                    break;
                }
            }
        }
        PortIndex { listening, holders }
    }

    /// Whether `port` was among those read.
    pub fn covers(&self, port: u16) -> bool {
        self.listening.contains_key(&port)
    }

    /// [`listening_on`] from the index.
    pub fn listening_on(&self, port: u16) -> HashSet<u64> {
        self.listening.get(&port).cloned().unwrap_or_default()
    }

    /// [`owner_of_port`] from the index.
    pub fn owner_of_port(&self, port: u16) -> Option<u32> {
        (self.listening.get(&port)?.iter())
            .filter_map(|i| self.holders.get(i))
            .min()
            .map(|(_, pid)| *pid)
    }
}

/// The inodes of the sockets listening on `port` in this network namespace (any address).
pub fn listening_on(root: &HostRoot, port: u16) -> HashSet<u64> {
    root.read_to_string("/proc/net/tcp")
        .into_iter()
        .chain(root.read_to_string("/proc/net/tcp6"))
        .flat_map(|t| parse_listening(&t))
        .filter(|s| s.port == port)
        .map(|s| s.inode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_ascii_address_is_refused_not_sliced_mid_character() {
        // fuzz/artifacts/procfs: a 32-byte address whose 8th byte is inside a character.
        let t = "header\n   0: 0100007\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}F:1F90 \
             00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1\n";
        assert_eq!(
            "0100007\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}F".len(),
            32
        );
        assert!(parse_listening(t).is_empty());
    }

    #[test]
    fn parses_listeners() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:A0B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 999 1 0000000000000000 20 4 30 10 -1\n";
        let s = parse_listening(t);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].port, 8080);
        assert_eq!(s[0].inode, 12345);
        if cfg!(target_endian = "little") {
            assert_eq!(s[0].addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
    }

    #[test]
    fn parses_v6_loopback() {
        if cfg!(target_endian = "little") {
            let a = parse_hex_addr("00000000000000000000000001000000").unwrap();
            assert_eq!(a, IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
    }
}
