//! The scanner that finds a request body's top-level `model` as its bytes arrive: fed the input
//! in pieces cut where its first byte says, it must agree with itself fed whole, and a model
//! it finds must be what serde_json reads from the bytes it consumed, closed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use memwarden_broker::model_field::ModelScanner;

fn scan(body: &[u8], piece: usize) -> (Result<String, String>, u64) {
    let mut s = ModelScanner::new();
    for chunk in body.chunks(piece.max(1)) {
        match s.push(chunk) {
            Ok(Some(m)) => return (Ok(m.to_string()), s.consumed()),
            Ok(None) => {}
            Err(e) => return (Err(e.to_string()), s.consumed()),
        }
    }
    (s.finish().map(str::to_string).map_err(|e| e.to_string()), s.consumed())
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = scan(body, body.len());
    assert_eq!(scan(body, usize::from(cut)), whole, "pieces of {cut} disagree");
    if let (Ok(model), consumed) = &whole {
        let mut read = body[..*consumed as usize].to_vec();
        read.push(b'}');
        match serde_json::from_slice::<serde_json::Value>(&read) {
            Ok(v) => assert_eq!(v["model"].as_str(), Some(model.as_str())),
            // Numbers are checked for their grammar, not their range.
            Err(e) => assert!(e.to_string().contains("number out of range"), "{e}"),
        }
    }
});
