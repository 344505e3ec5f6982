//! The files under deploy/ stay true to the code: the example configuration parses, and every
//! metric the Grafana dashboard queries is one the broker exports.

mod common;

use std::path::Path;

use common::*;
use memwarden_broker::Config;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_example_configuration_parses() {
    let cfg = Config::parse(&deploy("memwarden.toml"), "memwarden.toml", None).unwrap();
    assert_eq!(cfg.consumers.len(), 3);
    assert!(cfg.consumers[0].self_managed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_queries_exported_metrics() {
    let dash: serde_json::Value = serde_json::from_str(&deploy("grafana-dashboard.json")).unwrap();
    let mut names = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("memwarden_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.push(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(names.len() > 10);
    let a = TestConsumer::spawn("a", "1MiB", "normal");
    let toml = pool_toml("64MiB", "") + &consumer_toml("a", a.port, "1MiB", "");
    let r = start(&toml).await;
    let (code, text) = http("GET", format!("http://{}/metrics", r.addr()), "").await;
    assert_eq!(code, 200);
    for n in names {
        assert!(
            text.contains(&format!("# TYPE {n} ")),
            "the dashboard queries {n}, which is not exported"
        );
    }
    r.shutdown().await;
}
