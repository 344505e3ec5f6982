//! `memwarden status`, `load` and `unload` as a user runs them: the real binary against a real
//! broker on 127.0.0.1 that starts a real server.

mod common;

use std::process::{Command, Output};

use common::assert_bad_input;
use memwarden_broker::Config;
use memwarden_probe::{GpuSourceKind, HostRoot, Probe};

const BIN: &str = env!("CARGO_BIN_EXE_memwarden");

/// A broker with one consumer, "web": Python's HTTP server on a free port, started on demand.
fn web_broker(rt: &tokio::runtime::Runtime, token: Option<&str>) -> memwarden_broker::Running {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = token.map_or(String::new(), |t| format!("token = \"{t}\"\n"));
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{token}[[pool]]\nname = \"ram\"\nkind = \"ram\"\n\
         capacity = \"1GiB\"\n[[consumer]]\nname = \"web\"\npool = \"ram\"\nresident = \"64MiB\"\n\
         upstream = \"http://127.0.0.1:{port}\"\nhealth = \"GET /\"\n\
         start = [\"python3\", \"-m\", \"http.server\", \"{port}\", \"--bind\", \"127.0.0.1\"]\n\
         stop_timeout = \"2s\"\n"
    );
    let cfg = Config::parse(&toml, "t.toml", None).unwrap();
    rt.block_on(memwarden_broker::start(
        cfg,
        Probe::new(HostRoot::system(), GpuSourceKind::None),
    ))
    .unwrap()
}

fn ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MEMWARDEN_TOKEN")
        .env_remove("MEMWARDEN_BROKER")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The state column of `web` in `memwarden status`.
fn web_state(url: &str) -> String {
    let o = ctl(&["status", "--broker", url], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("{out}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn status_load_and_unload_drive_a_real_broker() {
    if Command::new("python3").arg("--version").output().is_err() {
        panic!("python3 is needed: apt-get install python3");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = web_broker(&rt, None);
    let url = format!("http://{}", r.addr());
    assert_eq!(web_state(&url), "unloaded");
    let o = ctl(&["status", "--broker", &url], &[]);
    assert!(stdout(&o).starts_with("POOL "), "{}", stdout(&o));

    let o = ctl(&["load", "web"], &[("MEMWARDEN_BROKER", &url)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), "web: loaded\n");
    assert_eq!(web_state(&url), "loaded");

    let o = ctl(&["status", "--broker", &url, "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["consumers"][0]["state"], "loaded");

    let o = ctl(&["unload", "web", "--broker", &url], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(web_state(&url), "unloaded");

    // What the server printed (Python's server logs each request it answers to stderr).
    let o = ctl(&["logs", "web", "--broker", &url], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).contains("\"GET / HTTP/1.1\" 200"),
        "{}",
        stdout(&o)
    );
    assert_bad_input(&ctl(&["logs", "nosuch", "--broker", &url], &[]), "nosuch");

    // A name the broker does not know is the broker's refusal, on one line.
    let o = ctl(&["load", "nosuch", "--broker", &url], &[]);
    assert_bad_input(&o, "nosuch");
    rt.block_on(r.shutdown());
}

#[test]
fn logs_follow_prints_lines_until_the_broker_ends_the_stream() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = web_broker(&rt, None);
    let url = format!("http://{}", r.addr());
    let follower = Command::new(BIN)
        .args(["logs", "-f", "web", "--broker", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        ctl(&["load", "web", "--broker", &url], &[])
            .status
            .success()
    );
    // Shutting the broker down ends the stream, and with it `logs -f`.
    rt.block_on(r.shutdown());
    let o = follower.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("\"GET / HTTP/1.1\" 200"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_broker_that_does_not_answer_or_refuses_the_token_is_one_line_and_exit_2() {
    // A port with no listener: taken, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = format!("http://127.0.0.1:{port}");
    assert_bad_input(&ctl(&["status", "--broker", &gone], &[]), "cannot reach");
    assert_bad_input(
        &ctl(&["unload", "x", "--broker", &gone], &[]),
        "cannot reach",
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = web_broker(&rt, Some("s3cret"));
    let url = format!("http://{}", r.addr());
    assert_bad_input(&ctl(&["status", "--broker", &url], &[]), "401");
    let o = ctl(
        &["status", "--broker", &url],
        &[("MEMWARDEN_TOKEN", "s3cret")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("web "), "{}", stdout(&o));
    rt.block_on(r.shutdown());
}
