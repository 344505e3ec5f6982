//! `serve --check` on start commands with macros: `${PORT}` needs no port written, and an
//! unknown macro is refused with the file and line, before anything runs.

mod common;

use common::{assert_bad_input, memwarden, stdout};

#[test]
fn serve_check_takes_port_macros_and_names_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, start: &str| {
        let f = dir.path().join(name);
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"ram\"\nkind = \"ram\"\n\
             [[consumer]]\nname = \"llm\"\npool = \"ram\"\nresident = \"1GiB\"\nstart = {start}\n"
        );
        std::fs::write(&f, toml).unwrap();
        memwarden(&["serve", "--check", "--config", f.to_str().unwrap()])
    };
    let out = check(
        "good.toml",
        r#"["sh", "-c", "exec srv --port ${PORT} --alias ${NAME}"]"#,
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        stdout(&out).contains("\n  llm: not running: started on its first load"),
        "{}",
        stdout(&out)
    );
    assert_bad_input(
        &check("typo.toml", r#"["srv", "--port", "${PORTS}"]"#),
        "typo.toml:10:9: consumer \"llm\": unknown macro ${PORTS}",
    );
}
