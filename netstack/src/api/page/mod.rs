//! The web page: `/` and its assets under `/assets/`, embedded in the kernel image.
//!
//! The sources are `web/src/` (Keel's HTML, JS and CSS) and xterm.js with its fit addon from
//! the npm registry (pinned in `web/package-lock.json`); `netstack/build.rs` gzips each one at
//! build time and lists it in [`ASSETS`] with a strong ETag of its uncompressed bytes. Only
//! the gzip form is stored: a client that accepts gzip gets it as is
//! (`Content-Encoding: gzip`), any other gets it inflated here.
//!
//! Every page response carries the security headers of [`security_headers`] (a
//! Content-Security-Policy without inline script, `frame-ancestors 'none'`, `nosniff`,
//! `no-referrer`), `Cache-Control: no-cache` (the browser revalidates: `If-None-Match` with
//! the ETag answers 304 without a body) and `Vary: Accept-Encoding`. The page itself inserts
//! everything it shows as text, never as HTML.

use alloc::format;
use alloc::string::String;

use crate::http::response::Response;
use crate::http::server::Request;

#[cfg(test)]
mod tests;

/// One embedded file.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub media_type: &'static str,
    /// Its strong ETag, quotes included.
    pub etag: &'static str,
    /// Its uncompressed size in bytes.
    pub size: usize,
    /// It as one gzip member with a 10-byte header (what `build.rs` writes).
    pub gzip: &'static [u8],
}

/// Every embedded file, `/` first.
pub static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The asset at `path`.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// The answer to a `GET` of the page or an asset at `req.path`: 200 with the asset (gzip
/// when accepted), 304 when `If-None-Match` names its ETag, 404 for no such asset; each with
/// the security headers.
pub fn serve(req: &Request<'_>) -> Response {
    let Some(asset) = asset(req.path) else {
        let message = format!(
            "no asset at {}: the page's files are {}",
            super::clip(req.path, 120),
            ASSETS
                .iter()
                .map(|a| a.path)
                .collect::<alloc::vec::Vec<_>>()
                .join(", ")
        );
        return with_page_headers(Response::error(404, &message), req);
    };
    let gzip = accepts_gzip(req.header("accept-encoding"));
    let etag = etag_for(asset, gzip);
    if req
        .header("if-none-match")
        .is_some_and(|tags| matches_etag(tags, asset.etag))
    {
        return with_page_headers(Response::new(304).with_header("ETag", &etag), req);
    }
    let response = if gzip {
        Response::new(200)
            .with_header("Content-Encoding", "gzip")
            .with_body(asset.gzip.to_vec())
    } else {
        match inflate(asset) {
            Some(body) => Response::new(200).with_body(body),
            None => {
                let message = format!(
                    "embedded asset {} does not inflate: the kernel image is damaged; rebuild it",
                    asset.path
                );
                return with_page_headers(Response::error(500, &message), req);
            }
        }
    };
    with_page_headers(
        response
            .with_header("Content-Type", asset.media_type)
            .with_header("ETag", &etag),
        req,
    )
}

/// The ETag of the representation sent: the asset's own for the identity form, with `-gz`
/// inside the quotes for the gzip form (two representations, two tags, RFC 9110 §8.8.3).
fn etag_for(asset: &Asset, gzip: bool) -> String {
    if gzip {
        format!("{}-gz\"", asset.etag.trim_end_matches('"'))
    } else {
        String::from(asset.etag)
    }
}

/// `If-None-Match` matches `etag` (weak comparison, RFC 9110 §13.1.2): `*`, or any listed
/// tag equal to it or to its gzip form, `W/` ignored.
pub fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    let gz = format!("{}-gz\"", etag.trim_end_matches('"'));
    if_none_match.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == etag || tag == gz
    })
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3): `gzip`, `x-gzip` or `*` with a
/// weight above 0. Without the field, no: only the identity form is safe.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(value) = accept_encoding else {
        return false;
    };
    let mut gzip = None;
    let mut star = None;
    for item in value.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let mut allowed = true;
        for param in parts {
            if let Some((name, weight)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("q")
            {
                allowed = weight.trim().parse::<f32>().is_ok_and(|q| q > 0.0);
            }
        }
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(allowed);
        } else if coding == "*" {
            star = Some(allowed);
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// The asset's bytes: its deflate stream between the 10-byte gzip header and the 8-byte
/// trailer, inflated; `None` when it does not inflate to its recorded size.
fn inflate(asset: &Asset) -> Option<alloc::vec::Vec<u8>> {
    let stream = asset.gzip.get(10..asset.gzip.len().checked_sub(8)?)?;
    let body = miniz_oxide::inflate::decompress_to_vec_with_limit(stream, asset.size).ok()?;
    (body.len() == asset.size).then_some(body)
}

/// `response` with [`security_headers`], `Cache-Control: no-cache` and
/// `Vary: Accept-Encoding`.
fn with_page_headers(mut response: Response, req: &Request<'_>) -> Response {
    for (name, value) in security_headers(req.header("host")) {
        response = response.with_header(name, &value);
    }
    response
        .with_header("Cache-Control", "no-cache")
        .with_header("Vary", "Accept-Encoding")
}

/// The security headers of every page response. The policy allows scripts, styles, images
/// and fonts from this origin only and no inline script; connections to this origin, over
/// HTTP and over WebSocket (`ws:`/`wss:` of `host`, named explicitly for browsers whose
/// `'self'` does not cover WebSocket schemes); no framing, no plugins, no `<base>`. Inline
/// styles are allowed: xterm.js sizes its rows and sets its theme through them.
pub fn security_headers(host: Option<&str>) -> [(&'static str, String); 4] {
    let mut connect = String::from("'self'");
    if let Some(host) = host.filter(|h| is_host(h)) {
        connect = format!("'self' ws://{host} wss://{host}");
    }
    [
        (
            "Content-Security-Policy",
            format!(
                "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                 img-src 'self' data:; font-src 'self'; connect-src {connect}; \
                 manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
            ),
        ),
        ("X-Content-Type-Options", String::from("nosniff")),
        ("Referrer-Policy", String::from("no-referrer")),
        ("X-Frame-Options", String::from("DENY")),
    ]
}

/// A `Host` value safe to put in the policy: a name, IPv4 or bracketed IPv6 address and an
/// optional port, nothing that could end a directive or add a source.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}
