//! Mistakes on the command line, as a user makes them: one line that names the argument at
//! fault, and exit 2.

mod common;

use common::{assert_bad_input, memwarden};

#[test]
fn missing_required_arguments_are_named() {
    assert_bad_input(
        &memwarden(&["fit", "--want", "4"]),
        "the following required arguments were not provided: --per-worker <SIZE> (see --help)",
    );
    assert_bad_input(
        &memwarden(&["fit"]),
        "not provided: --per-worker <SIZE> (see --help)",
    );
    assert_bad_input(&memwarden(&["estimate"]), "not provided: <MODEL>");
    assert_bad_input(&memwarden(&["place"]), "not provided: --cpus <N>");
    assert_bad_input(&memwarden(&["record"]), "not provided: --out <FILE>");
    assert_bad_input(&memwarden(&["run", "--", "true"]), "--consumer <NAME>");
}

#[test]
fn a_negative_number_is_a_bad_value_of_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    std::fs::write(&model, b"").unwrap();
    let model = model.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["fit", "--per-worker", "1GiB", "--want", "-3"],
            "invalid value '-3' for '--want <N>'",
        ),
        (
            &["estimate", model, "--ctx", "-5"],
            "invalid value '-5' for '--ctx <N>'",
        ),
        (
            &["estimate", model, "--parallel", "-1"],
            "invalid value '-1' for '--parallel <N>'",
        ),
        (
            &["estimate", model, "--ubatch", "-512"],
            "invalid value '-512' for '--ubatch <N>'",
        ),
        (
            &["estimate", model, "--gpu", "-1"],
            "invalid value '-1' for '--gpu <IDX>'",
        ),
        (
            &["place", "--cpus", "-2"],
            "invalid value '-2' for '--cpus <N>'",
        ),
        (
            &["place", "--cpus", "2", "--gpu", "-1"],
            "invalid value '-1' for '--gpu <IDX>'",
        ),
        (
            &["place", "--cpus", "2", "--pid", "-1"],
            "invalid value '-1' for '--pid <PID>'",
        ),
        (
            &["snapshot", "--top", "-1"],
            "invalid value '-1' for '--top <N>'",
        ),
        (
            &["record", "--out", "/dev/null", "--count", "-1"],
            "invalid value '-1' for '--count <N>'",
        ),
        (
            &["record", "--out", "/dev/null", "--interval", "-1s"],
            "invalid value '-1s' for '--interval <INTERVAL>'",
        ),
        (
            &["record", "--out", "/dev/null", "--duration", "-1m"],
            "invalid value '-1m' for '--duration <DURATION>'",
        ),
        (
            &["analyze", "f.jsonl", "--min-size", "-2"],
            "invalid value '-2' for '--min-size <N>'",
        ),
        (
            &["analyze", "f.jsonl", "--jump", "-2"],
            "invalid value '-2' for '--jump <N>'",
        ),
        (
            &["analyze", "f.jsonl", "--penalty", "-1"],
            "--penalty must be a number at least 0, not -1",
        ),
        (
            &["top", "--replay", "f.jsonl", "--speed", "-2"],
            "--speed must be a number above 0",
        ),
        (
            &["top", "--interval", "-1s"],
            "invalid value '-1s' for '--interval <INTERVAL>'",
        ),
        (
            &["run", "--consumer", "c", "--ttl", "-5m", "--", "true"],
            "invalid value '-5m' for '--ttl <TTL>'",
        ),
        (
            &["run", "--consumer", "c", "--heartbeat", "-5s", "--", "true"],
            "invalid value '-5s' for '--heartbeat <HEARTBEAT>'",
        ),
    ];
    for (args, needle) in cases {
        let o = memwarden(args);
        assert_bad_input(&o, needle);
        assert!(
            !common::stderr(&o).contains("unexpected argument"),
            "{args:?}"
        );
    }
}

#[test]
fn boolean_environment_variables_take_the_usual_words() {
    for (value, ok) in [
        ("1", true),
        ("yes", true),
        ("on", true),
        ("true", true),
        ("0", true),
        ("off", true),
        ("maybe", false),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_memwarden"))
            .args(["--gpu-source", "none", "snapshot", "--top", "1"])
            .env("MEMWARDEN_NO_SCRAPE", value)
            .output()
            .unwrap();
        assert_eq!(
            o.status.success(),
            ok,
            "{value}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn bare_memwarden_prints_the_usage_and_typos_get_a_suggestion() {
    let o = memwarden(&[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Usage: memwarden"), "{err}");
    assert!(err.contains("snapshot") && err.contains("doctor"), "{err}");
    assert_bad_input(&memwarden(&["snapshto"]), "did you mean 'snapshot'?");
    assert_bad_input(&memwarden(&["fit", "--wnt", "2"]), "did you mean '--want'?");
}

#[test]
fn help_ends_with_examples_and_shows_global_options_only_where_they_matter() {
    let help = |sub: &str| {
        let o = memwarden(&[sub, "--help"]);
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for sub in [
        "snapshot", "top", "record", "analyze", "estimate", "fit", "place", "serve", "run",
        "doctor", "status", "load", "unload", "logs",
    ] {
        let text = help(sub);
        assert!(
            text.contains(&format!("Examples:\n  memwarden {sub}"))
                || text.contains(&format!("$(memwarden {sub}")),
            "{sub}: {text}"
        );
    }
    for sub in ["fit", "run", "estimate"] {
        assert!(help(sub).contains("Exit codes:"), "{sub}");
    }
    let snapshot = help("snapshot");
    let own = snapshot.find("--workload").unwrap();
    let global = snapshot.find("Global options:").expect("a heading");
    assert!(
        own < global && global < snapshot.find("--root").unwrap(),
        "{snapshot}"
    );
    assert!(!help("analyze").contains("--root"));
    assert!(!help("fit").contains("--no-scrape"));
    assert!(help("fit").contains("--gpu-source"));
}

#[test]
fn a_duration_past_any_clock_is_a_bad_value_not_a_panic() {
    for args in [
        &[
            "record",
            "--out",
            "/dev/null",
            "--interval",
            "300000000000y",
        ][..],
        &[
            "record",
            "--out",
            "/dev/null",
            "--duration",
            "18446744073709551615s",
        ],
        &["top", "--interval", "300000000000y"],
        &[
            "run",
            "--consumer",
            "c",
            "--ttl",
            "300000000000y",
            "--",
            "true",
        ],
    ] {
        let o = memwarden(args);
        assert_bad_input(&o, "at most 10 years");
    }
}
