//! `GET /` (and `/ui`): the status page. One self-contained page (HTML, CSS and a little
//! JavaScript compiled into the binary, nothing fetched from elsewhere) that draws the pools
//! and consumers from `/v1/status`, follows the events and a consumer's log, and loads and
//! unloads through the admin routes with the token the user gives it (kept for the browser
//! session only). Without JavaScript it is a plain table rendered here.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use memwarden_probe::size::format_size;

use super::{App, refused};
use crate::owner::Status;

const PAGE: &str = include_str!("page.html");
/// Where the page's server-rendered part goes, inside its `<noscript>`.
const MARK: &str = "<!--STATUS-->";

pub(super) async fn page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    // The page itself holds nothing secret; the status does, and is rendered here only for a
    // request that may read it.
    let fallback = if refused(&app.config(), &headers).is_some() {
        "<p>This broker needs its bearer token: turn JavaScript on to give it, or ask \
         <code>/v1/status</code> with <code>Authorization: Bearer …</code>.</p>"
            .to_string()
    } else {
        match app.broker.status().await {
            Some(st) => table(&st),
            None => "<p>The scheduler does not answer.</p>".to_string(),
        }
    };
    let mut r = Html(PAGE.replacen(MARK, &fallback, 1)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Nothing is loaded from anywhere else, and no other site may frame the buttons.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

/// The status as plain tables, every string from the configuration escaped.
fn table(st: &Status) -> String {
    let mut out = String::from(
        "<table><tr><th>pool</th><th>kind</th><th>size</th><th>promised</th>\
         <th>available</th><th>queued</th></tr>",
    );
    for p in &st.pools {
        let total = p.capacity_bytes.or(p.total_bytes);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.name),
            p.kind,
            total.map_or("-".into(), format_size),
            format_size(p.promised_bytes),
            format_size(p.available_bytes),
            p.queue_length
        );
    }
    out.push_str(
        "</table><table><tr><th>consumer</th><th>pool</th><th>state</th><th>holds</th>\
         <th>declared</th><th>measured</th><th>in flight</th><th>queued</th></tr>",
    );
    for c in &st.consumers {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            escape(&c.name),
            escape(&c.pool),
            c.state,
            format_size(c.resident_bytes),
            format_size(c.declared_bytes),
            c.measured_bytes.map_or("-".into(), format_size),
            c.in_flight,
            c.queued
        );
    }
    out.push_str("</table>");
    out
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_one_place_for_the_table_and_escapes_names() {
        assert_eq!(PAGE.matches(MARK).count(), 1);
        assert_eq!(
            escape("<b a=\"1\">&'"),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
    }
}
