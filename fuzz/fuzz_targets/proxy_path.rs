//! The proxy's reading of a request target (`/c/NAME/…?…`): whatever path it lets through
//! must stay inside the consumer's base (no `..` climbing above it).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = axum::http::Uri::try_from(data) else {
        return;
    };
    if let Some((_, Ok(path))) = memwarden_broker::proxy_path::proxied(&uri) {
        let path = path.split('?').next().unwrap_or("");
        let mut depth = 0i64;
        for seg in path.split('/').skip(1) {
            match seg {
                ".." => depth -= 1,
                "." | "" => {}
                _ => depth += 1,
            }
            assert!(depth >= 0, "{path} climbs above the base");
        }
    }
});
