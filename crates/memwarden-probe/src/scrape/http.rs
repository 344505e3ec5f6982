//! One bounded HTTP/1.1 GET: no redirects, no proxy, no compression, a time limit over the
//! whole exchange and a cap on the body.

use std::net::SocketAddr;
use std::time::Duration;

use super::ScrapeError;

/// What a server may answer at most; a longer answer is cut off there and thrown away.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The time limit of one request, from connecting to the last byte of the body.
pub const TIMEOUT: Duration = Duration::from_millis(500);

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        // A redirect could lead anywhere (another port, another host): the 3xx is returned
        // as it is and refused by the caller.
        .max_redirects(0)
        .http_status_as_error(false)
        // An HTTP_PROXY in the environment must not carry a loopback request off the machine.
        .proxy(None)
        .timeout_global(Some(TIMEOUT))
        .max_response_header_size(16 * 1024)
        .user_agent(concat!("memwarden/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// GETs `path` from `addr` and returns the body as text.
pub fn get(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> Result<String, ScrapeError> {
    let url = format!("http://{addr}{path}");
    let mut resp = agent.get(&url).call().map_err(from_ureq)?;
    let status = resp.status().as_u16();
    if (300..400).contains(&status) {
        return Err(ScrapeError::Redirect(status));
    }
    if status != 200 {
        return Err(ScrapeError::Status(status));
    }
    let html = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("html"));
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES as u64)
        .read_to_vec()
        .map_err(from_ureq)?;
    let text = String::from_utf8(body)
        .map_err(|_| ScrapeError::Malformed("the answer is not UTF-8 text".into()))?;
    if html || looks_like_html(&text) {
        return Err(ScrapeError::Malformed(
            "the server answered an HTML page".into(),
        ));
    }
    Ok(text)
}

fn looks_like_html(text: &str) -> bool {
    let head = text.trim_start();
    let head = &head.as_bytes()[..head.len().min(15)];
    let lower = head.to_ascii_lowercase();
    lower.starts_with(b"<!doctype") || lower.starts_with(b"<html")
}

fn from_ureq(e: ureq::Error) -> ScrapeError {
    match e {
        ureq::Error::Timeout(_) => ScrapeError::Timeout,
        ureq::Error::BodyExceedsLimit(_) => ScrapeError::TooLarge,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ScrapeError::Timeout,
        ureq::Error::Io(io) => ScrapeError::Connect(io.kind().to_string()),
        other => ScrapeError::Connect(other.to_string()),
    }
}
