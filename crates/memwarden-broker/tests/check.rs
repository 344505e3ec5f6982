//! `serve --check` says, per consumer, which processes its memory will be read from: tried on
//! real processes of this machine.

mod common;

use common::*;
use memwarden_broker::{Config, check_config};
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

#[test]
fn check_names_the_processes_read_or_why_there_are_none() {
    let server = TestConsumer::spawn_as("llama-server", "a", "32MiB", "normal");
    let relay = Forwarder::spawn("docker-proxy", server.port);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free.local_addr().unwrap().port();
    drop(free);
    let consumer = |name: &str, extra: &str| {
        format!("[[consumer]]\nname = \"{name}\"\npool = \"ram\"\nresident = \"64MiB\"\n{extra}\n")
    };
    let up = |port: u16| format!("upstream = \"http://127.0.0.1:{port}\"");
    let toml = pool_toml("1GiB", "")
        + &consumer("direct", &up(server.port))
        + &consumer("forwarded", &up(relay.port))
        + &consumer("named", &(up(relay.port) + "\nworkload = \"llama-server\""))
        + &consumer("down", &up(closed))
        + &consumer("remote", "upstream = \"http://10.0.0.9:8000\"")
        + &consumer("job", "");
    let cfg = Config::parse(&toml, "check.toml", None).unwrap();
    let mut probe = Probe::new(HostRoot::system(), GpuSourceKind::None);
    let lines = check_config(&cfg, &mut probe).unwrap();
    let pid = server.child.id();
    let line = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no line for {name}: {lines:#?}"))
            .clone()
    };
    assert!(
        line("direct").starts_with(&format!("direct: reads llama-server ({pid}): holds ")),
        "{lines:#?}"
    );
    assert!(
        line("forwarded").contains(&format!(
            "its declared 64 MiB stands: port {} is held by docker-proxy (pid {})",
            relay.port,
            relay.child.id()
        )),
        "{lines:#?}"
    );
    // Named by its workload, the server behind the forwarder is read itself.
    assert!(
        line("named").starts_with(&format!("named: reads llama-server ({pid}): holds ")),
        "{lines:#?}"
    );
    assert!(
        line("down").contains(&format!("nothing listens on port {closed} here")),
        "{lines:#?}"
    );
    assert!(line("remote").ends_with("its upstream is not on this machine"));
    assert!(line("job").contains("only while a lease or request runs"));
}
