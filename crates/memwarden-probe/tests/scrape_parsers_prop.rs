//! Whatever a server answers, the parsers return a reading or a reason, never a panic; and a
//! well-formed exposition reads back exactly what was written.

use memwarden_probe::framework::detect;
use memwarden_probe::scrape::ServerKind;
use memwarden_probe::scrape::prometheus::parse;
use proptest::prelude::*;

const KINDS: [ServerKind; 5] = [
    ServerKind::Tgi,
    ServerKind::LlamaCpp,
    ServerKind::Vllm,
    ServerKind::Ollama,
    ServerKind::Sglang,
];

/// Text near the formats: metric-like lines, braces, quotes, JSON punctuation.
fn near_format() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("vllm:num_requests_running".to_string()),
            Just("llamacpp:requests_deferred".to_string()),
            Just("{model_name=\"".to_string()),
            Just("\\\"".to_string()),
            Just("\"} ".to_string()),
            Just(",".to_string()),
            Just(" NaN".to_string()),
            Just(" -Inf".to_string()),
            Just("\n".to_string()),
            Just("# HELP x\n".to_string()),
            Just("{\"models\":[{\"size\":".to_string()),
            Just("{\"internal_states\":[{\"memory_usage\":{\"kvcache\":".to_string()),
            Just("1e309".to_string()),
            Just("]}".to_string()),
            "[ -~]{0,12}",
            any::<String>(),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn no_input_panics(text in near_format()) {
        let _ = parse(&text);
        for kind in KINDS {
            let _ = kind.parse(&text);
        }
        let _ = detect(&text, &text);
    }

    #[test]
    fn written_samples_read_back(
        series in prop::collection::vec(
            ("[a-z_:][a-z0-9_:]{0,20}", "[ -~]{0,16}", -1.0e12f64..1.0e12),
            1..20,
        )
    ) {
        let mut text = String::from("# TYPE x gauge\n");
        for (name, label, value) in &series {
            let escaped = label.replace('\\', "\\\\").replace('"', "\\\"");
            text.push_str(&format!("{name}{{model_name=\"{escaped}\",engine=\"0\"}} {value:e}\n"));
        }
        let samples = parse(&text).unwrap();
        prop_assert_eq!(samples.len(), series.len());
        for (s, (name, label, value)) in samples.iter().zip(&series) {
            prop_assert_eq!(s.name, name.as_str());
            prop_assert_eq!(s.label("model_name"), Some(label.as_str()));
            prop_assert_eq!(s.value, *value);
        }
    }
}
