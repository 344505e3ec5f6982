//! The status page in a real browser: headless Chromium loads it from a running broker with
//! test consumers, runs its JavaScript, and the rendered DOM is checked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Headless Chromium with its own profile, a few seconds of virtual time for the page's
/// scripts, then `args` on `url`; its output, once it succeeded.
fn headless(url: &str, args: &[String]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The page as Chromium renders it after its scripts ran.
fn rendered(url: &str) -> String {
    let out = headless(url, &["--dump-dom".to_string()]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(o) = Command::new("which").arg(name).output()
            && o.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        }
    }
    panic!(
        "chromium is needed: apt-get install --no-install-recommends chromium \
         (`bash .ci/setup` installs it)"
    );
}

/// The state cell of `consumer`'s row in the rendered page.
fn state_of(dom: &str, consumer: &str) -> String {
    let row = dom
        .find(&format!("<tr data-consumer=\"{consumer}\">"))
        .unwrap_or_else(|| panic!("no row for {consumer} in {dom}"));
    let cell = &dom[row..];
    let start = cell.find("class=\"state state-").unwrap();
    let text = &cell[start..];
    let text = &text[text.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].to_string()
}

fn screenshot(url: &str, to: &Path, size: &str) {
    headless(
        url,
        &[
            "--hide-scrollbars".to_string(),
            format!("--window-size={size}"),
            format!("--screenshot={}", to.display()),
        ],
    );
    let png = std::fs::read(to).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_pools_and_consumers_and_follows_a_load() {
    let a = TestConsumer::spawn("a", "16MiB", "normal");
    let b = TestConsumer::spawn("b", "16MiB", "normal");
    let toml = pool_toml("256MiB", "")
        + &consumer_toml("a", a.port, "32MiB", "")
        + &consumer_toml("b", b.port, "32MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());
    assert_eq!(http("GET", format!("{base}/c/a/work"), "").await.0, 200);

    let url = format!("{base}/");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || rendered(&url)
    })
    .await
    .unwrap();
    assert_eq!(state_of(&dom, "a"), "loaded");
    assert_eq!(state_of(&dom, "b"), "unloaded");
    assert!(dom.contains("data-pool=\"ram\""), "{dom}");
    // The events of the load were streamed into the page.
    let events = &dom[dom.find("id=\"events\"").unwrap()..];
    assert!(events.contains("a: loaded"), "{events}");

    let (code, _) = http("POST", format!("{base}/v1/consumers/b/load"), "").await;
    assert_eq!(code, 200);
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || rendered(&url)
    })
    .await
    .unwrap();
    assert_eq!(state_of(&dom, "b"), "loaded");

    // Without JavaScript the status is a plain table the broker renders into the page.
    let (code, html) = http("GET", &url, "").await;
    assert_eq!(code, 200);
    let noscript = &html[html.find("<noscript>").unwrap()..html.find("</noscript>").unwrap()];
    assert!(
        noscript.contains("<td>b</td><td>ram</td><td>loaded</td>"),
        "{noscript}"
    );

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tokio::task::spawn_blocking(move || {
        screenshot(&url, &dir.join("broker-status.png"), "1000,760");
        screenshot(&url, &dir.join("broker-status-phone.png"), "390,844");
    })
    .await
    .unwrap();
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_and_shows_nothing_before() {
    let a = TestConsumer::spawn("a", "16MiB", "normal");
    let toml = pool_toml("256MiB", "").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ntoken = \"s3cret\"",
    ) + &consumer_toml("a", a.port, "32MiB", "");
    let r = start(&toml).await;
    let base = format!("http://{}", r.addr());

    // The page itself needs no token, but shows no status without one.
    let (code, html) = http("GET", format!("{base}/"), "").await;
    assert_eq!(code, 200);
    assert!(!html.contains("<td>a</td>") && html.contains("needs its bearer token"));

    let url = format!("{base}/");
    let dom = tokio::task::spawn_blocking(move || rendered(&url))
        .await
        .unwrap();
    assert!(!dom.contains("data-consumer=\"a\""), "{dom}");
    assert!(dom.contains("The broker refused the token."), "{dom}");

    // Given the token (here in the link's fragment, which never reaches the server), it shows.
    let url = format!("{base}/#token=s3cret");
    let dom = tokio::task::spawn_blocking(move || rendered(&url))
        .await
        .unwrap();
    assert_eq!(state_of(&dom, "a"), "unloaded");
    r.shutdown().await;
}
