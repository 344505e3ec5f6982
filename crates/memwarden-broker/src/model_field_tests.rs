use proptest::prelude::*;
use serde_json::Value;

use super::*;

/// Scans `body` cut into `chunks` pieces at `cuts`, then ends it.
fn scan(body: &[u8], cuts: &[usize]) -> (Result<String, ScanError>, u64) {
    let mut s = ModelScanner::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut from = 0;
    for to in cuts.into_iter().chain([body.len()]) {
        match s.push(&body[from..to]) {
            Ok(Some(m)) => return (Ok(m.to_string()), s.consumed()),
            Ok(None) => {}
            Err(e) => return (Err(e), s.consumed()),
        }
        from = to;
    }
    (s.finish().map(str::to_string), s.consumed())
}

fn model_of(body: &str) -> Result<String, ScanError> {
    scan(body.as_bytes(), &[]).0
}

#[test]
fn finds_the_top_level_model_however_it_is_written() {
    let ok = |body: &str, want: &str| assert_eq!(model_of(body).as_deref(), Ok(want), "{body}");
    ok(r#"{"model":"a"}"#, "a");
    ok(" \r\n\t{ \"model\" :\n \"a b\" }", "a b");
    ok(r#"{"mod\u0065l":"x"}"#, "x");
    ok(r#"{"model":"\u00e9\ud83d\ude00\n\"\\\/"}"#, "é😀\n\"\\/");
    ok(r#"{"model":"é😀"}"#, "é😀");
    // Nested `model` keys, and a model in an array, do not count.
    ok(
        r#"{"messages":[{"model":"no"},"model",{"a":{"model":1}}],"n":-1.5e+3,"t":true,"f":false,"z":null,"model":"yes"}"#,
        "yes",
    );
    ok(r#"{"modelx":"no","mode":"no","model":"yes"}"#, "yes");
    // The first of two wins; the rest is never read, so garbage after it passes.
    ok(r#"{"model":"first","model":"second"}"#, "first");
    ok(r#"{"model":"a"  this is not JSON"#, "a");
}

#[test]
fn refuses_what_has_no_string_model() {
    let err = |body: &str| model_of(body).unwrap_err();
    assert_eq!(err(r#"{"model": 7}"#), ScanError::NotString { at: 10 });
    assert_eq!(err(r#"{"model":null}"#), ScanError::NotString { at: 9 });
    assert_eq!(err(r#"{"model":["a"]}"#), ScanError::NotString { at: 9 });
    assert_eq!(err(r#"{"messages":[{"model":"a"}]}"#), ScanError::NoModel);
    assert_eq!(err("{}"), ScanError::NoModel);
    assert_eq!(err(""), ScanError::Truncated { at: 0 });
    assert_eq!(err(r#"{"model":"a"#), ScanError::Truncated { at: 11 });
    for bad in [
        "not json",
        r#"{"a":tru}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":-}"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12g4"}"#,
        r#"{"a":"\ud800"}"#,
        r#"{"a":"\udc00"}"#,
        r#"{"a":"\ud800\u0041"}"#,
        "{\"a\":\"\u{1}\"}",
        r#"{"a":[}"#,
        r#"{"a":{]}"#,
    ] {
        let e = err(bad);
        assert!(matches!(e, ScanError::Invalid { .. }), "{bad}: {e:?}");
        assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
    }
    for bad in [
        &b"{\"a\":\"\xff\"}"[..],
        b"{\"a\":\"\xc0\xaf\"}",
        b"{\"a\":\"\xed\xa0\x80\"}",
    ] {
        assert!(matches!(scan(bad, &[]).0, Err(ScanError::Invalid { .. })));
        assert!(serde_json::from_slice::<Value>(bad).is_err());
    }
    assert!(matches!(err(r#"["model","a"]"#), ScanError::Invalid { .. }));
    let e = err(r#"{"a":"\q"}"#).to_string();
    assert_eq!(e, "not JSON at byte 7: an invalid escape in a string");
}

#[test]
fn nests_as_deep_as_serde_json_and_no_deeper() {
    for depth in [127, 128, 129] {
        let body = format!(
            "{{\"a\":{}{},\"model\":\"m\"}}",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        );
        let ours = model_of(&body);
        let theirs = serde_json::from_str::<Value>(&body);
        assert_eq!(ours.is_ok(), theirs.is_ok(), "depth {depth}: {ours:?}");
    }
}

#[test]
fn stops_at_the_model_and_stays_stopped() {
    let mut s = ModelScanner::new();
    assert_eq!(s.push(br#"{"model":"#).unwrap(), None);
    assert_eq!(s.push(br#""ab"#).unwrap(), None);
    assert_eq!(s.push(br#"c", "more": [[["#).unwrap(), Some("abc"));
    assert_eq!(s.consumed(), 14);
    assert_eq!(s.push(b"}}}garbage").unwrap(), Some("abc"));
    assert_eq!(s.finish(), Ok("abc"));
    let mut s = ModelScanner::new();
    assert!(s.push(b"[").is_err());
    assert!(
        s.push(br#"{"model":"a"}"#).is_err(),
        "a refused body stays refused"
    );
}

/// JSON values with `model` keys here and there, nested as request bodies nest.
fn json() -> impl Strategy<Value = Value> {
    let text = prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter);
    let key = prop_oneof![
        Just("model".to_string()),
        Just("messages".to_string()),
        text.clone()
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text.prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A top-level object's entries in the order written, keys unique; one may be `model`.
fn body() -> impl Strategy<Value = Vec<(String, Value)>> {
    let model = prop_oneof![
        3 => prop::collection::vec(any::<char>(), 0..12).prop_map(|c| Value::from(String::from_iter(c))),
        1 => json(),
    ];
    (
        prop::collection::vec((prop::collection::vec(any::<char>(), 0..6), json()), 0..6),
        prop::option::of(model),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(entries, model, at)| {
            let mut seen = std::collections::HashSet::new();
            let mut out: Vec<(String, Value)> = entries
                .into_iter()
                .map(|(k, v)| (String::from_iter(k), v))
                .filter(|(k, _)| k != "model" && seen.insert(k.clone()))
                .collect();
            if let Some(m) = model {
                out.insert(at.index(out.len() + 1), ("model".into(), m));
            }
            out
        })
}

/// Writes a JSON string: as serde_json does, or every character as a `\u` escape.
fn write_str(s: &str, escape_all: bool, out: &mut String) {
    if !escape_all {
        out.push_str(&serde_json::to_string(s).unwrap());
        return;
    }
    out.push('"');
    let mut units = [0u16; 2];
    for c in s.chars() {
        for u in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{u:04x}"));
        }
    }
    out.push('"');
}

fn write(v: &Value, escape_all: bool, space: &str, out: &mut String) {
    match v {
        Value::String(s) => write_str(s, escape_all, out),
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(space);
                write(v, escape_all, space, out);
            }
            out.push(']');
        }
        Value::Object(o) => write_object(o.iter(), escape_all, space, out),
        v => out.push_str(&v.to_string()),
    }
}

fn write_object<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    escape_all: bool,
    space: &str,
    out: &mut String,
) {
    out.push('{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(space);
        write_str(k, escape_all, out);
        out.push_str(space);
        out.push(':');
        out.push_str(space);
        write(v, escape_all, space, out);
    }
    out.push_str(space);
    out.push('}');
}

/// What serde_json makes of a whole body: its top-level model, as the scanner should report.
fn expected(v: &Value) -> Result<String, ScanError> {
    match v.get("model") {
        Some(Value::String(m)) => Ok(m.clone()),
        Some(_) => Err(ScanError::NotString { at: 0 }),
        None => Err(ScanError::NoModel),
    }
}

/// The scanner's answer with the position of a `NotString` dropped (serde_json has no such).
fn comparable(r: Result<String, ScanError>) -> Result<String, ScanError> {
    r.map_err(|e| match e {
        ScanError::NotString { .. } => ScanError::NotString { at: 0 },
        e => e,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn finds_what_serde_json_finds(
        entries in body(),
        escape_all in any::<bool>(),
        space in prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r\n")],
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut text = String::new();
        write_object(entries.iter().map(|(k, v)| (k, v)), escape_all, space, &mut text);
        let v: Value = serde_json::from_str(&text).expect("written as JSON");
        prop_assert_eq!(comparable(scan(text.as_bytes(), &cuts).0), expected(&v), "{}", text);
    }

    /// A body spoiled by one byte: never a model serde_json would not agree on, never a refusal
    /// of a body serde_json reads.
    #[test]
    fn agrees_with_serde_json_on_spoiled_bodies(
        entries in body(),
        escape_all in any::<bool>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0..3u8,
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut text = String::new();
        write_object(entries.iter().map(|(k, v)| (k, v)), escape_all, "", &mut text);
        let mut bytes = text.into_bytes();
        let i = at.index(bytes.len());
        match how {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => bytes.truncate(i),
        }
        let (ours, consumed) = scan(&bytes, &cuts);
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            prop_assert_eq!(comparable(ours.clone()), expected(&v));
        }
        if let Ok(m) = &ours {
            // What the scanner read, closed, is JSON whose model is the one found.
            let mut prefix = bytes[..consumed as usize].to_vec();
            prefix.push(b'}');
            match serde_json::from_slice::<Value>(&prefix) {
                Ok(v) => prop_assert_eq!(v["model"].as_str(), Some(m.as_str())),
                // The scanner checks a number's grammar, not its range.
                Err(e) => prop_assert!(e.to_string().contains("number out of range"), "{e}"),
            }
        }
    }
}
