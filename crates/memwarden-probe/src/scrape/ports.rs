//! Where a server process might answer: the port its command line names, its framework's
//! default port, and the sockets it listens on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::diag;
use crate::framework::Framework;
use crate::net::{listening_sockets, socket_inodes};
use crate::root::HostRoot;

/// The port a framework listens on when not told otherwise.
pub fn default_port(framework: Framework) -> Option<u16> {
    match framework {
        Framework::Vllm => Some(8000),
        Framework::Sglang => Some(30000),
        Framework::LlamaCpp => Some(8080),
        Framework::Ollama => Some(11434),
        Framework::Tgi => Some(3000),
        Framework::Comfyui => Some(8188),
        _ => None,
    }
}

/// The value of `--port N` or `--port=N` in a command line.
pub fn cmdline_port(cmdline: &str) -> Option<u16> {
    let mut args = cmdline.split_ascii_whitespace();
    while let Some(a) = args.next() {
        if a == "--port" {
            return args.next()?.parse().ok();
        }
        if let Some(v) = a.strip_prefix("--port=") {
            return v.parse().ok();
        }
    }
    None
}

/// The addresses worth asking, best first: the ports `pid` itself listens on, the one named on
/// its command line (then the framework's default) ahead of the others. A wildcard listener
/// is reached through loopback; a listener on one specific address is listed as it is (and a
/// scrape of it is refused unless that address is allowed). Ollama's model runner takes
/// `--port` for its private port, so its command line port is not preferred.
pub fn candidate_addrs(
    root: &HostRoot,
    pid: u32,
    cmdline: &str,
    framework: Framework,
) -> Vec<SocketAddr> {
    let held = socket_inodes(root, pid);
    // A process holding no socket listens nowhere: skip the costly walk of the socket tables.
    if held.is_empty() {
        return Vec::new();
    }
    // The listeners of our namespace (the ones a connection from here reaches) by netlink,
    // else the process's own tables.
    let listening = match (
        diag::listeners(libc::AF_INET),
        diag::listeners(libc::AF_INET6),
    ) {
        (Ok(mut v4), Ok(v6)) => {
            v4.extend(v6);
            v4
        }
        _ => listening_sockets(root, pid),
    };
    let mut addrs: Vec<SocketAddr> = listening
        .into_iter()
        .filter(|s| held.contains(&s.inode))
        .map(|s| SocketAddr::new(reachable(s.addr), s.port))
        .collect();
    addrs.sort_by_key(|a| (a.is_ipv6(), a.port(), !a.ip().is_loopback(), a.ip()));
    addrs.dedup();
    if let Some(p) = preferred_port(cmdline, framework) {
        // Stable: keeps IPv4 ahead of IPv6 among the preferred port's listeners.
        addrs.sort_by_key(|a| a.port() != p);
    }
    addrs
}

/// Whether the process is Ollama's model runner, which serves only its parent on a private
/// port (`--port`), not the API.
pub fn is_ollama_runner(cmdline: &str, framework: Framework) -> bool {
    framework == Framework::Ollama && cmdline.split_ascii_whitespace().nth(1) == Some("runner")
}

/// The port the server most likely answers on: its `--port`, else its framework's default.
pub fn preferred_port(cmdline: &str, framework: Framework) -> Option<u16> {
    if is_ollama_runner(cmdline, framework) {
        return None;
    }
    cmdline_port(cmdline).or(default_port(framework))
}

fn reachable(listen: IpAddr) -> IpAddr {
    match listen.to_canonical() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_flags() {
        assert_eq!(
            cmdline_port("llama-server -m x.gguf --port 8081"),
            Some(8081)
        );
        assert_eq!(
            cmdline_port("vllm serve m --port=9000 --host 0.0.0.0"),
            Some(9000)
        );
        assert_eq!(cmdline_port("vllm serve m --port"), None);
        assert_eq!(cmdline_port("vllm serve m --port 99999"), None);
        assert_eq!(cmdline_port("x --ports 1"), None);
    }
}
