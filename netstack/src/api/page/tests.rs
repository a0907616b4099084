//! The page's assets: lookup, gzip negotiation, ETag revalidation, security headers.

use alloc::string::String;
use alloc::vec::Vec;

use super::*;
use crate::http::request::Method;

fn get<'a>(path: &'a str, headers: &'a [(String, String)]) -> Request<'a> {
    Request {
        method: &Method::Get,
        path,
        query: None,
        headers,
        bearer_token: None,
        body: &[],
    }
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (String::from(*n), String::from(*v)))
        .collect()
}

#[test]
fn every_asset_inflates_to_its_size_and_the_page_links_only_embedded_assets() {
    assert_eq!(ASSETS[0].path, "/");
    for a in ASSETS {
        let body = inflate(a).unwrap_or_else(|| panic!("{} does not inflate", a.path));
        assert_eq!(body.len(), a.size, "{}", a.path);
        assert!(
            a.gzip.len() < a.size.max(64),
            "{} is not smaller gzipped",
            a.path
        );
    }
    let index = String::from_utf8(inflate(&ASSETS[0]).unwrap()).unwrap();
    for link in index.split('"').filter(|s| s.starts_with("/assets/")) {
        assert!(
            asset(link).is_some(),
            "index.html links {link}, not embedded"
        );
    }
    assert!(!index.contains("<script>"), "inline script in index.html");
}

#[test]
fn gzip_is_sent_only_when_accepted() {
    let h = headers(&[("accept-encoding", "gzip, deflate, br")]);
    let r = serve(&get("/assets/app.js", &h));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert_eq!(
        r.header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(&r.body[..2], &[0x1f, 0x8b]);

    let h = headers(&[("accept-encoding", "gzip;q=0, identity")]);
    let r = serve(&get("/assets/app.js", &h));
    assert_eq!(r.header("Content-Encoding"), None);
    assert_eq!(r.body.len(), asset("/assets/app.js").unwrap().size);

    let r = serve(&get("/", &[]));
    assert_eq!(r.header("Content-Encoding"), None);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert!(r.body.starts_with(b"<!doctype html>"));
}

#[test]
fn accept_encoding_weights() {
    assert!(accepts_gzip(Some("gzip")));
    assert!(accepts_gzip(Some("deflate, GZIP;q=0.5")));
    assert!(accepts_gzip(Some("*")));
    assert!(accepts_gzip(Some("x-gzip")));
    assert!(!accepts_gzip(None));
    assert!(!accepts_gzip(Some("")));
    assert!(!accepts_gzip(Some("br, deflate")));
    assert!(!accepts_gzip(Some("gzip;q=0")));
    assert!(!accepts_gzip(Some("*;q=0.0")));
    assert!(!accepts_gzip(Some("*, gzip;q=0")));
    assert!(!accepts_gzip(Some("gzip;q=nonsense")));
}

#[test]
fn if_none_match_with_either_etag_answers_304_without_body() {
    let a = asset("/assets/style.css").unwrap();
    let h = headers(&[("accept-encoding", "gzip")]);
    let first = serve(&get(a.path, &h));
    let gz_tag = String::from(first.header("ETag").unwrap());
    assert_ne!(gz_tag, a.etag);
    for tag in [
        gz_tag.as_str(),
        a.etag,
        "\"other\", W/".trim_end_matches("W/"),
        "*",
    ] {
        let h = headers(&[("accept-encoding", "gzip"), ("if-none-match", tag)]);
        let r = serve(&get(a.path, &h));
        if tag.contains("other") {
            assert_eq!(r.status, 200);
            continue;
        }
        assert_eq!(r.status, 304, "If-None-Match: {tag}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("ETag"), Some(gz_tag.as_str()));
        let wire = r.encode(true, false);
        assert!(!String::from_utf8_lossy(&wire).contains("Content-Length"));
    }
    let weak = alloc::format!("W/{}", a.etag);
    assert!(matches_etag(&alloc::format!("\"x\", {weak}"), a.etag));
    assert!(!matches_etag("\"x\"", a.etag));
}

#[test]
fn every_page_response_carries_the_security_headers() {
    let h = headers(&[("host", "192.0.2.7:8080")]);
    for path in ["/", "/assets/app.js", "/assets/nope.js"] {
        let r = serve(&get(path, &h));
        let csp = r.header("Content-Security-Policy").unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-eval"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("connect-src 'self' ws://192.0.2.7:8080 wss://192.0.2.7:8080;"));
        assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(r.header("Referrer-Policy"), Some("no-referrer"));
        assert_eq!(r.header("Cache-Control"), Some("no-cache"));
    }
    assert_eq!(serve(&get("/assets/nope.js", &h)).status, 404);
    // A Host that could inject a source or a directive is left out.
    let h = headers(&[("host", "evil; script-src *")]);
    let csp = String::from(
        serve(&get("/", &h))
            .header("Content-Security-Policy")
            .unwrap(),
    );
    assert!(csp.contains("connect-src 'self';"), "{csp}");
}

#[test]
fn licences_of_the_vendored_code_are_served() {
    let text = String::from_utf8(inflate(asset("/assets/licenses.txt").unwrap()).unwrap()).unwrap();
    assert!(text.contains("==== @xterm/xterm "));
    assert!(text.contains("==== @xterm/addon-fit "));
    assert!(text.contains("Permission is hereby granted"));
}
