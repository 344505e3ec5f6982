use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:7078"

[[pool]]
name = "gpu0"
kind = "vram"
gpu = 0
capacity = "20GiB"

[[consumer]]
name = "comfyui"
pool = "gpu0"
resident = "13GiB"
upstream = "http://127.0.0.1:8188"
unload = { method = "POST", path = "/free", body = '{"unload_models":true}' }
health = "GET /system_stats"

[[consumer]]
name = "ollama"
pool = "gpu0"
resident = "6GiB"
upstream = "http://127.0.0.1:11434"
self_managed = true
coexist_with = ["comfyui"]
"#;

#[test]
fn a_workload_names_something() {
    let base = "[[pool]]\nname = \"p\"\nkind = \"ram\"\n[[consumer]]\nname = \"vllm\"\npool = \"p\"\nresident = \"1GiB\"\n";
    let cfg = Config::parse(&format!("{base}workload = \"vllm\"\n"), "t.toml", None).unwrap();
    assert_eq!(cfg.consumers[0].workload.as_deref(), Some("vllm"));
    let e = Config::parse(&format!("{base}workload = \" \"\n"), "t.toml", None).unwrap_err();
    assert_eq!(
        e.0,
        "t.toml:8:12: consumer \"vllm\": an empty workload name"
    );
}

#[test]
fn reads_a_good_config() {
    let c = Config::parse(GOOD, "t.toml", None).unwrap();
    assert_eq!(c.server.listen.port(), 7078);
    assert_eq!(c.pools[0].cushion, 256 << 20);
    assert_eq!(c.pools[0].capacity, Some(20 << 30));
    assert_eq!(c.consumers[0].need, 13 << 30);
    let Some(Unload::Route(unload)) = &c.consumers[0].unload else {
        panic!("an unload route")
    };
    assert_eq!(unload.method, "POST");
    assert_eq!(
        c.consumers[0].health.as_ref().unwrap().path,
        "/system_stats"
    );
    // Said on one side, coexistence holds both ways.
    assert_eq!(c.consumers[0].coexist_with, vec![1]);
    assert_eq!(c.consumers[1].coexist_with, vec![0]);
}

fn err(text: &str) -> String {
    Config::parse(text, "t.toml", None).unwrap_err().0
}

#[test]
fn unknown_keys_name_line_and_column() {
    let e = err("[server]\nlisten = \"127.0.0.1:1\"\ncolour = 3\n");
    assert!(e.starts_with("t.toml:3:1:"), "{e}");
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn unknown_pool_and_coexist_are_refused() {
    let e = err("[[consumer]]\nname = \"a\"\npool = \"nope\"\nresident = 1\n");
    assert!(
        e.contains("t.toml:3:8") && e.contains("unknown pool \"nope\""),
        "{e}"
    );
    let e = err(
        "[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=1\ncoexist_with=[\"ghost\"]\n",
    );
    assert!(e.contains("t.toml:8:15") && e.contains("\"ghost\""), "{e}");
}

#[test]
fn a_model_name_routes_to_one_consumer() {
    let two = |a_models: &str, b_models: &str| {
        format!(
            "[[pool]]\nname=\"p\"\nkind=\"ram\"\n\
             [[consumer]]\nname=\"a\"\npool=\"p\"\nresident=1\nupstream=\"http://127.0.0.1:1\"\nmodels={a_models}\n\
             [[consumer]]\nname=\"b\"\npool=\"p\"\nresident=1\nupstream=\"http://127.0.0.1:2\"\nmodels={b_models}\n"
        )
    };
    let c = Config::parse(&two(r#"["llama3:8b", "a"]"#, "[]"), "t.toml", None).unwrap();
    assert_eq!(c.consumer_for_model("llama3:8b"), Some(0));
    assert_eq!(c.consumer_for_model("a"), Some(0));
    assert_eq!(c.consumer_for_model("b"), Some(1));
    assert_eq!(c.consumer_for_model("qwen"), None);
    let e = err(&two(r#"["llama3:8b"]"#, r#"["x", "llama3:8b"]"#));
    assert_eq!(
        e,
        "t.toml:15:14: consumer \"b\": model \"llama3:8b\" is already a model of consumer \"a\""
    );
    let e = err(&two(r#"["b"]"#, "[]"));
    assert!(
        e.starts_with("t.toml:9:9: consumer \"a\": model \"b\" is already the name of another"),
        "{e}"
    );
    assert!(err(&two(r#"[""]"#, "[]")).contains("a model name is 1 to 256 characters"));
    let e = err(
        "[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"job\"\npool=\"p\"\nresident=1\nmodels=[\"m\"]\n",
    );
    assert!(e.contains("models need an upstream"), "{e}");
}

#[test]
fn ollama_is_unloaded_by_its_own_api() {
    let text = |unload: &str, extra: &str| {
        format!(
            "[[pool]]\nname=\"p\"\nkind=\"vram\"\ngpu=0\n[[consumer]]\nname=\"o\"\npool=\"p\"\n\
             resident=1\nupstream=\"http://127.0.0.1:11434\"\nunload={unload}\n{extra}"
        )
    };
    let c = Config::parse(&text("\"ollama\"", ""), "t.toml", None).unwrap();
    let o = &c.consumers[0];
    assert_eq!(o.unload, Some(Unload::Ollama));
    assert!(o.can_unload() && o.may_hold_nothing() && !o.self_managed);
    let c = Config::parse(&text("\"POST /free\"", ""), "t.toml", None).unwrap();
    assert!(!c.consumers[0].may_hold_nothing());
    let c = Config::parse(&text("\"POST /free\"", "self_managed=true"), "t.toml", None);
    assert!(c.unwrap().consumers[0].may_hold_nothing());
    // Any other single word is a path, which must start with '/'.
    assert!(err(&text("\"olama\"", "")).contains("must start with '/'"));
}

#[test]
fn cushion_larger_than_the_pool_is_refused() {
    let e = err("[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"1GiB\"\ncushion=\"2GiB\"\n");
    assert!(e.contains("t.toml:5:9") && e.contains("cushion"), "{e}");
}

#[test]
fn the_default_cushion_must_fit_the_capacity_too() {
    let e = err("[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"100MiB\"\n");
    assert!(
        e.starts_with("t.toml:4:10: pool \"p\": the capacity (100 MiB) is not larger than the default cushion (256 MiB)"),
        "{e}"
    );
    let e = err("[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"256MiB\"\n");
    assert!(e.contains("default cushion"), "{e}");
    // A capacity of 0 keeps its own message.
    assert!(
        err("[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=0\n")
            .contains("capacity must be more than 0")
    );
    let c = Config::parse(
        "[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"257MiB\"\n",
        "t.toml",
        None,
    )
    .unwrap();
    assert_eq!(c.pools[0].cushion, DEFAULT_CUSHION);
    let c = Config::parse(
        "[[pool]]\nname=\"p\"\nkind=\"ram\"\ncapacity=\"100MiB\"\ncushion=\"10MiB\"\n",
        "t.toml",
        None,
    )
    .unwrap();
    assert_eq!(c.pools[0].cushion, 10 << 20);
}

#[test]
fn a_size_that_is_not_a_whole_number_of_bytes_is_named() {
    let pool = |cushion: &str| {
        err(&format!(
            "[[pool]]\nname=\"p\"\nkind=\"ram\"\ncushion = {cushion}\n"
        ))
    };
    assert_eq!(
        pool("-5"),
        "t.toml:4:11: a size is a whole number of bytes or a string such as \"24GiB\" (got -5)"
    );
    assert_eq!(
        pool("1.5"),
        "t.toml:4:11: a size is a whole number of bytes or a string such as \"24GiB\" (got 1.5)"
    );
    assert_eq!(
        pool("2.0"),
        "t.toml:4:11: a size is a whole number of bytes or a string such as \"24GiB\" (got 2.0)"
    );
    let e = pool("true");
    assert!(
        e.starts_with("t.toml:4:11: ")
            && e.contains("expected a whole number of bytes or a string such as \"24GiB\""),
        "{e}"
    );
    // In a consumer's `resident` as in a pool's `cushion` and `capacity`.
    let e = err(
        "[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=-1\n",
    );
    assert!(
        e.starts_with("t.toml:7:10: a size is") && e.ends_with("(got -1)"),
        "{e}"
    );
    // Whole numbers and strings still read.
    let c = Config::parse(
        "[[pool]]\nname=\"p\"\nkind=\"ram\"\ncushion = 1048576\ncapacity = \"1GiB\"\n",
        "t.toml",
        None,
    )
    .unwrap();
    assert_eq!(
        (c.pools[0].cushion, c.pools[0].capacity),
        (1 << 20, Some(1 << 30))
    );
}

#[test]
fn other_mistakes_are_named() {
    assert!(err("[[pool]]\nname=\"p\"\nkind=\"vram\"\n").contains("needs `gpu = N`"));
    assert!(err("[[pool]]\nname=\"p\"\nkind=\"hbm\"\n").contains("t.toml:3:6"));
    assert!(
        err("[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\n")
            .contains("needs `resident")
    );
    assert!(
        err("[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=\"12XB\"\n")
            .contains("unknown unit")
    );
    assert!(
        err("[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=1\nunload=\"POST /u\"\n")
            .contains("routes need an `upstream`")
    );
    assert!(
        err("[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nresident=1\nupstream=\"https://x\"\n")
            .contains("http://")
    );
    assert!(err("[server]\nlisten=\"nowhere\"\n").contains("not an address:port"));
    let e = err("[[pool]]\nname=\"p\"\nkind=\"ram\"\nstuck_retry=\"100ms\"\n");
    assert!(
        e.starts_with("t.toml:4:13:") && e.contains("at least 1s"),
        "{e}"
    );
}

#[test]
fn token_file_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, "s3cret\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!("[server]\ntoken_file = {:?}\n", f.display().to_string());
    let e = Config::parse(&text, "t.toml", None).unwrap_err().0;
    assert!(e.contains("0644") && e.contains("0600"), "{e}");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = Config::parse(&text, "t.toml", None).unwrap();
    assert_eq!(c.server.token.as_deref(), Some("s3cret"));
}

#[test]
fn estimates_use_the_estimator() {
    let text = "[[pool]]\nname=\"p\"\nkind=\"ram\"\n[[consumer]]\nname=\"a\"\npool=\"p\"\nestimate={ model=\"m.gguf\", ctx=4096 }\n";
    assert!(err(text).contains("not available"));
    let est = |r: &EstimateRequest<'_>| Ok(r.ctx * 1000);
    let c = Config::parse(text, "t.toml", Some(&est)).unwrap();
    assert_eq!(c.consumers[0].need, 4_096_000);
}

#[test]
fn an_engine_estimate_is_asked_for_the_pools_card() {
    let text = "[[pool]]\nname=\"gpu\"\nkind=\"vram\"\ngpu=1\ncapacity=\"24GiB\"\n\
                [[consumer]]\nname=\"v\"\npool=\"gpu\"\n\
                estimate={ model=\"m\", ctx=8192, engine=\"vllm\", gpu_memory_utilization=0.5 }\n";
    // A stand-in for the engine's arithmetic: its fraction of the pool's card.
    let est = |r: &EstimateRequest<'_>| {
        assert_eq!((r.engine, r.ctx, r.pool.gpu), (Some("vllm"), 8192, Some(1)));
        assert_eq!(r.mem_fraction_static, None);
        let f = r.gpu_memory_utilization.ok_or("no fraction")?;
        Ok((r.pool.capacity.ok_or("no card")? as f64 * f) as u64)
    };
    let c = Config::parse(text, "t.toml", Some(&est)).unwrap();
    assert_eq!(c.consumers[0].need, 12 << 30);
    assert!(matches!(
        &c.consumers[0].need_source,
        NeedSource::Estimate { engine: Some(e), ctx: 8192, .. } if e == "vllm"
    ));
    // The estimator's refusal names the consumer and the line.
    let refuse = |_: &EstimateRequest<'_>| Err("the weights exceed vllm's share".to_string());
    let e = Config::parse(text, "t.toml", Some(&refuse)).unwrap_err().0;
    assert!(
        e.starts_with("t.toml:9:") && e.contains("consumer \"v\"") && e.contains("exceed"),
        "{e}"
    );
    let typo = text.replace("gpu_memory_utilization", "gpu_mem_util");
    assert!(
        err(&typo).contains("unknown field `gpu_mem_util`"),
        "{}",
        err(&typo)
    );
}
