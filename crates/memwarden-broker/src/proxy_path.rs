//! The path of a proxied request (`/c/NAME/…`): which consumer, and what to ask its upstream
//! for, confined to the upstream's base path.
//!
//! A proxy passes a path on as the client wrote it (`%2F` stays `%2F`), but dot segments are
//! resolved here: an upstream at `http://host/api/tenant1` must never be asked for
//! `/api/tenant1/../../admin`, whether its server resolves `..` itself or a proxy behind it does.

use axum::http::Uri;

/// A proxied request's consumer and either the path and query for its upstream, or why the
/// path is refused. `None`: not a proxied request.
pub fn proxied(uri: &Uri) -> Option<(String, Result<String, &'static str>)> {
    let after = uri.path().strip_prefix("/c/")?;
    let (consumer, rest) = after.split_at(after.find('/').unwrap_or(after.len()));
    if consumer.is_empty() {
        return None;
    }
    let path = confine(rest).map(|mut path| {
        if let Some(q) = uri.query() {
            path.push('?');
            path.push_str(q);
        }
        path
    });
    Some((consumer.to_string(), path))
}

/// `rest` with its dot segments (`.`, `..`, and their `%2e` spellings) resolved, starting with
/// `/`; refused when a `..` would climb above the start.
pub fn confine(rest: &str) -> Result<String, &'static str> {
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = rest.is_empty() || rest.ends_with('/');
    for (i, seg) in segments.iter().enumerate() {
        match dots(seg) {
            1 => trailing_slash |= i == last,
            2 => {
                if kept.pop().is_none() {
                    return Err("the path climbs above the consumer's base path (..)");
                }
                trailing_slash |= i == last;
            }
            _ => {
                // A separator spelt `%2F` or `\` inside a segment could become a real one
                // further on, turning `..%2F..` into two climbs: refused outright.
                if seg.contains('\\') || (seg.contains("..") && has_encoded_slash(seg)) {
                    return Err("the path hides a separator next to dot segments");
                }
                if i != last || !seg.is_empty() {
                    kept.push(seg);
                }
            }
        }
    }
    let mut out = String::with_capacity(rest.len() + 1);
    for seg in &kept {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() || trailing_slash && !out.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

/// 1 for `.`, 2 for `..` (in any mix of `.` and `%2e`), 0 for anything else.
fn dots(seg: &str) -> usize {
    let mut n = 0;
    let mut s = seg.as_bytes();
    while !s.is_empty() {
        if s[0] == b'.' {
            s = &s[1..];
        } else if s.len() >= 3 && s[0] == b'%' && s[1] == b'2' && (s[2] | 0x20) == b'e' {
            s = &s[3..];
        } else {
            return 0;
        }
        n += 1;
        if n > 2 {
            return 0;
        }
    }
    n
}

fn has_encoded_slash(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    lower.contains("%2f") || lower.contains("%5c")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(uri: &str) -> Option<(String, Result<String, &'static str>)> {
        proxied(&uri.parse().unwrap())
    }

    #[test]
    fn a_proxied_path_is_passed_on_as_written() {
        let some = |c: &str, p: &str| Some((c.to_string(), Ok(p.to_string())));
        assert_eq!(split("/c/a"), some("a", "/"));
        assert_eq!(split("/c/a/"), some("a", "/"));
        assert_eq!(split("/c/a?x=1"), some("a", "/?x=1"));
        assert_eq!(split("/c/llm/v1/chat?s=1"), some("llm", "/v1/chat?s=1"));
        assert_eq!(split("/c/a/x%2Fy%20z"), some("a", "/x%2Fy%20z"));
        assert_eq!(split("/c/a/v1/models/"), some("a", "/v1/models/"));
        for other in ["/c", "/c/", "/c//x", "/v1/status", "/cc/a/x", "/healthz"] {
            assert_eq!(split(other), None, "{other}");
        }
    }

    #[test]
    fn dot_segments_resolve_inside_the_base_and_never_above_it() {
        assert_eq!(confine("/v1/./x/../models").unwrap(), "/v1/models");
        assert_eq!(confine("/v1/x/..").unwrap(), "/v1/");
        assert_eq!(confine("/v1/%2e").unwrap(), "/v1/");
        assert_eq!(confine("/a..b/c").unwrap(), "/a..b/c");
        for bad in [
            "/..",
            "/x/../../admin",
            "/%2e%2e/admin",
            "/.%2E/admin",
            "/v1/../../x",
            "/..%2f..%2fadmin",
            "/..\\admin",
        ] {
            assert!(confine(bad).is_err(), "{bad}");
        }
    }
}
