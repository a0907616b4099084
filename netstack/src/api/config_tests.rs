//! `GET` / `PUT /api/v1/config` against the mock: ETags, 428, 412, 400, 422 with every
//! problem, 503 without a disk, and that a refused `PUT` changes nothing.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use keel_config::{Config, edit};
use serde_json::{Value, json};

use super::super::mock::Mock;
use super::{TOKEN, body, error_of, get, send_raw};
use crate::http::response::Response;

/// `PUT /api/v1/config` with `If-Match: if_match` (when given) and `body`.
fn put(mock: &mut Mock, if_match: Option<&str>, body: &str) -> Response {
    let mut req =
        format!("PUT /api/v1/config HTTP/1.1\r\nHost: keel\r\nAuthorization: Bearer {TOKEN}\r\n");
    if let Some(tag) = if_match {
        req.push_str(&format!("If-Match: {tag}\r\n"));
    }
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    send_raw(mock, req.as_bytes())
}

fn etag_of(r: &Response) -> String {
    String::from(r.header("etag").expect("an ETag header"))
}

/// The mock's configuration with `hostname` changed, as JSON.
fn renamed(mock: &Mock, hostname: &str) -> String {
    let mut config = mock.config.clone();
    config.hostname = String::from(hostname);
    String::from_utf8(config.to_json_pretty()).unwrap()
}

#[test]
fn get_answers_the_canonical_document_and_its_etag() {
    let mut mock = Mock::default();
    let r = get(&mut mock, "/api/v1/config");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, mock.config.to_json_pretty());
    let tag = etag_of(&r);
    assert_eq!(tag, edit::etag(&mock.config));
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() == 18,
        "{tag}"
    );
    assert_eq!(body(&r)["hostname"], "keel-test");
    // The same document, the same tag.
    assert_eq!(etag_of(&get(&mut mock, "/api/v1/config")), tag);
}

#[test]
fn put_without_if_match_is_428_and_changes_nothing() {
    let mut mock = Mock::default();
    let before = mock.config.clone();
    let doc = renamed(&mock, "web1");
    let r = put(&mut mock, None, &doc);
    let (status, message) = error_of(&r);
    assert_eq!(status, 428);
    assert!(message.contains("needs If-Match"), "{message}");
    assert_eq!(mock.config, before);
    assert!(mock.changes.is_empty());
}

#[test]
fn put_with_a_stale_etag_is_412_and_changes_nothing() {
    let mut mock = Mock::default();
    let before = mock.config.clone();
    let current = edit::etag(&before);
    for stale in [
        "\"0000000000000000\"",
        // A weak tag never matches, even with the right hash.
        &format!("W/{current}"),
    ] {
        let doc = renamed(&mock, "web1");
        let r = put(&mut mock, Some(stale), &doc);
        let (status, message) = error_of(&r);
        assert_eq!(status, 412, "{stale}");
        assert!(message.contains(&current), "{message}");
        assert_eq!(r.header("etag"), Some(current.as_str()));
    }
    // Not an entity tag at all: 400.
    for malformed in [current.trim_matches('"'), ""] {
        let doc = renamed(&mock, "web1");
        let r = put(&mut mock, Some(malformed), &doc);
        let (status, message) = error_of(&r);
        assert_eq!(status, 400, "{malformed:?}");
        assert!(message.starts_with("If-Match must be *"), "{message}");
    }
    // A broken document is reported as such, whatever the If-Match.
    let r = put(
        &mut mock,
        Some("\"0000000000000000\""),
        "{\"hostname\":\"-x-\"}",
    );
    assert_eq!(r.status, 422);
    let r = put(&mut mock, None, "");
    assert_eq!(r.status, 400);
    assert_eq!(mock.config, before);
    assert!(mock.changes.is_empty());
}

#[test]
fn invalid_documents_are_422_with_every_problem_and_change_nothing() {
    let mut mock = Mock::default();
    let before = get(&mut mock, "/api/v1/config");
    let tag = etag_of(&before);
    let mut doc = mock.config.to_value();
    doc["network"] = json!({"mode": "static", "address": "10.0.2.15", "prefix": 40});
    doc["vms"] = json!([{"name": "web", "memory_mib": 5, "kernel": "bzImage"}]);
    doc["hostname"] = json!("-bad-");
    let r = put(&mut mock, Some(&tag), &doc.to_string());
    let (status, message) = error_of(&r);
    assert_eq!(status, 422);
    assert!(
        message.starts_with("invalid configuration, 3 problems: "),
        "{message}"
    );
    assert!(message.ends_with("(nothing was changed)"), "{message}");
    let errors = body(&r)["errors"].as_array().unwrap().clone();
    let paths: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["hostname", "network.prefix", "vms[0].memory_mib"]);
    for e in &errors {
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
    }
    // A wrong shape: one problem, with its path.
    let mut doc = mock.config.to_value();
    doc["network"]["speed"] = json!(100);
    let r = put(&mut mock, Some(&tag), &doc.to_string());
    assert_eq!(r.status, 422);
    let errors = &body(&r)["errors"];
    assert_eq!(errors.as_array().unwrap().len(), 1);
    assert_eq!(errors[0]["path"], "network.speed");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown field"),
        "{errors}"
    );
    let mut doc = mock.config.to_value();
    doc["management"]["http_port"] = json!("eighty");
    let r = put(&mut mock, Some(&tag), &doc.to_string());
    assert_eq!(r.status, 422);
    assert_eq!(body(&r)["errors"][0]["path"], "management.http_port");
    // Not JSON, or no body at all: 400.
    for bad in ["{", "", "  ", "{\"hostname\": }"] {
        let r = put(&mut mock, Some(&tag), bad);
        assert_eq!(error_of(&r).0, 400, "{bad:?}");
    }
    // Nothing changed: the same document and tag.
    let after = get(&mut mock, "/api/v1/config");
    assert_eq!(after.body, before.body);
    assert_eq!(etag_of(&after), tag);
    assert!(mock.changes.is_empty());
}

#[test]
fn valid_put_saves_and_answers_the_new_etag() {
    let mut mock = Mock::default();
    let old_tag = etag_of(&get(&mut mock, "/api/v1/config"));
    let doc = renamed(&mock, "web1");
    let r = put(&mut mock, Some(&old_tag), &doc);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(mock.config.hostname, "web1");
    let new_tag = etag_of(&r);
    assert_ne!(new_tag, old_tag);
    assert_eq!(new_tag, edit::etag(&mock.config));
    assert_eq!(r.body, mock.config.to_json_pretty());
    assert_eq!(mock.changes, ["save config web1 as generation 2"]);
    // GET agrees, and the system info carries the new hostname.
    let g = get(&mut mock, "/api/v1/config");
    assert_eq!((etag_of(&g), g.body), (new_tag.clone(), r.body.clone()));
    assert_eq!(body(&get(&mut mock, "/api/v1/system"))["hostname"], "web1");
    // The old tag is stale now.
    let doc = renamed(&mock, "web2");
    let r = put(&mut mock, Some(&old_tag), &doc);
    assert_eq!(r.status, 412);
    // A list of tags matches if any does; `*` always matches.
    let list = format!("\"1111111111111111\", {new_tag}");
    let doc = renamed(&mock, "web2");
    let r = put(&mut mock, Some(&list), &doc);
    assert_eq!(r.status, 200);
    let doc = renamed(&mock, "web3");
    let r = put(&mut mock, Some("*"), &doc);
    assert_eq!(r.status, 200);
    assert_eq!(mock.config.hostname, "web3");
    assert_eq!(mock.changes.len(), 3);
    // A minimal document is the defaults for everything it leaves out.
    let r = put(&mut mock, Some("*"), r#"{"hostname":"bare"}"#);
    assert_eq!(r.status, 200);
    let expected = Config {
        hostname: String::from("bare"),
        ..Config::default()
    };
    assert_eq!(mock.config, expected);
    assert_eq!(body(&r), serde_json::to_value(&expected).unwrap());
    assert_eq!(
        body(&r)["management"]["api_tokens"],
        Value::Array(Vec::new())
    );
}

#[test]
fn put_without_a_boot_disk_is_503_and_changes_nothing() {
    let mut mock = Mock {
        store: None,
        ..Mock::default()
    };
    let before = mock.config.clone();
    let tag = edit::etag(&before);
    let doc = renamed(&mock, "web1");
    let r = put(&mut mock, Some(&tag), &doc);
    assert_eq!(
        error_of(&r),
        (
            503,
            String::from("cannot save the configuration: no boot disk found")
        )
    );
    assert_eq!(mock.config, before);
    assert!(mock.changes.is_empty());
}
