//! What `serve --check` finds besides the broker's own checks: mistakes that only show once the
//! broker runs (a `start` program that does not exist; a consumer that can never be evicted
//! and alone fills a pool others share). Pure over the configuration and the machine's facts.

use std::path::Path;

use memwarden_broker::Config;
use memwarden_broker::config::PoolKind;
use memwarden_probe::HostRoot;
use memwarden_probe::size::format_size;
use memwarden_probe::snapshot::Gpu;

/// The problems found, one line each; none means the file is fine on these counts.
pub fn problems(
    cfg: &Config,
    pool_totals: &[Option<u64>],
    runnable: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for c in &cfg.consumers {
        if let Some(prog) = c.start.as_ref().and_then(|argv| argv.first())
            && !runnable(prog)
        {
            out.push(format!(
                "consumer {:?}: its start program {prog:?} is not found or not executable",
                c.name
            ));
        }
    }
    for (i, c) in cfg.consumers.iter().enumerate() {
        let never_evicted = c.pinned || c.self_managed || !c.can_unload();
        let (Some(pool), Some(Some(total))) = (cfg.pools.get(c.pool), pool_totals.get(c.pool))
        else {
            continue;
        };
        let room = total.saturating_sub(pool.cushion);
        let shares = cfg
            .consumers
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.pool == c.pool);
        if never_evicted && shares && c.need >= room {
            out.push(format!(
                "consumer {:?} can never be evicted ({}) and alone fills pool {:?} ({} of {} \
                 beside the cushion): the other consumers there could never load",
                c.name,
                if c.pinned {
                    "pinned"
                } else if c.self_managed {
                    "self_managed"
                } else {
                    "no unload and no start"
                },
                pool.name,
                format_size(c.need),
                format_size(room)
            ));
        }
    }
    out
}

/// Each pool's size: its `capacity`, else what the machine says.
pub fn pool_totals(cfg: &Config, ram_total: Option<u64>, gpus: &[Gpu]) -> Vec<Option<u64>> {
    cfg.pools
        .iter()
        .map(|p| {
            p.capacity.or_else(|| {
                let gpu = || gpus.iter().find(|g| g.index == p.gpu.unwrap_or(0));
                match p.kind {
                    PoolKind::Ram => ram_total,
                    PoolKind::Vram => gpu().and_then(|g| g.vram_total_bytes),
                    PoolKind::Gtt => gpu().and_then(|g| g.gtt_total_bytes),
                }
            })
        })
        .collect()
}

/// A program as a `start` command names it, on the machine under `root`: a path must be an
/// executable file; a bare name must be one in `PATH`.
pub fn runnable(root: &HostRoot, prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(root.path(&p.to_string_lossy()))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        return executable(Path::new(prog));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| executable(&d.join(prog))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml", None).unwrap()
    }

    const BASE: &str = r#"
[[pool]]
name = "gpu"
kind = "vram"
gpu = 0
capacity = "24GiB"
cushion = "1GiB"
"#;

    #[test]
    fn a_start_program_that_does_not_exist_is_named() {
        let cfg = config(&format!(
            "{BASE}\n[[consumer]]\nname = \"a\"\npool = \"gpu\"\nresident = \"4GiB\"\n\
             upstream = \"http://127.0.0.1:9000\"\nstart = [\"/opt/nowhere/llama-server\", \"-m\", \"x\"]\n"
        ));
        let totals = pool_totals(&cfg, None, &[]);
        let found = problems(&cfg, &totals, |p| runnable(&HostRoot::system(), p));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("\"/opt/nowhere/llama-server\" is not found"),
            "{found:?}"
        );
        let runnable = |p: &str| runnable(&HostRoot::system(), p);
        assert!(runnable("sh") && runnable("/bin/sh"));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("server");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert!(!runnable(plain.to_str().unwrap()), "not executable");
        assert!(!runnable(dir.path().to_str().unwrap()), "a directory");
    }

    #[test]
    fn a_pinned_consumer_that_fills_a_shared_pool_is_named() {
        let two = |need: &str| {
            config(&format!(
                "{BASE}\n[[consumer]]\nname = \"big\"\npool = \"gpu\"\nresident = \"{need}\"\npinned = true\n\
                 upstream = \"http://127.0.0.1:9000\"\nunload = {{ method = \"POST\", path = \"/unload\" }}\n\
                 [[consumer]]\nname = \"small\"\npool = \"gpu\"\nresident = \"2GiB\"\n\
                 upstream = \"http://127.0.0.1:9001\"\nunload = {{ method = \"POST\", path = \"/unload\" }}\n"
            ))
        };
        let cfg = two("23GiB");
        let found = problems(&cfg, &pool_totals(&cfg, None, &[]), |_| true);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("consumer \"big\" can never be evicted (pinned)"),
            "{found:?}"
        );
        let cfg = two("20GiB");
        assert!(problems(&cfg, &pool_totals(&cfg, None, &[]), |_| true).is_empty());
    }
}
