//! The router against a mock kernel: every route, auth, every error status, and every
//! response checked against the OpenAPI document.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::mock::Mock;
use super::*;
use crate::http::request::Limits;
use crate::http::server::{Exchange, exchange};

#[path = "config_tests.rs"]
mod config_routes;
#[path = "console_ws_tests.rs"]
mod console_ws_routes;
#[path = "disks_tests.rs"]
mod disk_routes;
#[path = "events_tests.rs"]
mod event_routes;
#[path = "migrate_tests.rs"]
mod migrate_routes;
#[path = "network_tests.rs"]
mod network_routes;
#[path = "saved_tests.rs"]
mod saved_routes;
#[path = "snapshots_tests.rs"]
mod snapshot_routes;
#[path = "vms_tests.rs"]
mod vm_routes;

const TOKEN: &str = "s3cret-token";

fn router() -> Router {
    Router::new(["first-token", "", TOKEN])
}

/// A request as bytes.
fn raw(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: keel\r\n");
    if let Some(token) = token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    req.into_bytes()
}

/// A request with a token and a body of media type `content_type`.
fn typed(method: &str, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: keel\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Runs `bytes` through the parser and the router; checks the response against the
/// OpenAPI document.
fn send_raw(mock: &mut Mock, bytes: &[u8]) -> Response {
    let router = router();
    match exchange(bytes, &Limits::default(), &mut router.bind(mock)) {
        Exchange::Respond { response, .. } => {
            conforms(bytes, &response);
            response
        }
        Exchange::Incomplete { want } => panic!("incomplete request, wants {want} more"),
    }
}

fn send(mock: &mut Mock, method: &str, path: &str, body: Option<&str>) -> Response {
    send_raw(mock, &raw(method, path, Some(TOKEN), body))
}

fn get(mock: &mut Mock, path: &str) -> Response {
    send(mock, "GET", path, None)
}

fn body(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap()
}

/// Status and error message of an error response.
fn error_of(response: &Response) -> (u16, String) {
    let v = body(response);
    assert_eq!(v["error"]["status"], response.status);
    (
        response.status,
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn health_openapi_and_page_need_no_token() {
    let mut mock = Mock::default();
    let r = send_raw(&mut mock, &raw("GET", "/api/v1/health", None, None));
    assert_eq!((r.status, body(&r)), (200, json!({"status": "ok"})));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = send_raw(&mut mock, &raw("GET", "/api/v1/openapi.json", None, None));
    assert_eq!(r.status, 200);
    assert_eq!(body(&r), openapi::document());
    let r = send_raw(&mut mock, &raw("GET", "/", None, None));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        core::str::from_utf8(&r.body)
            .unwrap()
            .contains("/assets/app.js")
    );
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(r.header("etag").is_some());
    let r = send_raw(&mut mock, &raw("GET", "/assets/app.js", None, None));
    assert_eq!(r.status, 200);
    assert!(
        core::str::from_utf8(&r.body)
            .unwrap()
            .contains("/api/v1/vms")
    );
    // A wrong token on a public route does not matter.
    let r = send_raw(&mut mock, &raw("GET", "/api/v1/health", Some("nope"), None));
    assert_eq!(r.status, 200);
}

#[test]
fn everything_else_needs_the_token() {
    let mut mock = Mock::default();
    let protected = [
        ("GET", "/api/v1/system"),
        ("GET", "/api/v1/modules"),
        ("GET", "/api/v1/store"),
        ("GET", "/api/v1/config"),
        ("PUT", "/api/v1/config"),
        ("POST", "/api/v1/modules/0/run"),
        ("GET", "/api/v1/vms"),
        ("POST", "/api/v1/vms"),
        ("GET", "/api/v1/vms/1"),
        ("GET", "/api/v1/vms/web"),
        ("DELETE", "/api/v1/vms/web"),
        ("POST", "/api/v1/vms/web/start"),
        ("POST", "/api/v1/vms/1/stop"),
        ("POST", "/api/v1/vms/web/restart"),
        ("POST", "/api/v1/vms/web/pause"),
        ("POST", "/api/v1/vms/1/resume"),
        ("GET", "/api/v1/vms/1/console"),
        ("POST", "/api/v1/vms/web/console"),
        ("POST", "/api/v1/vms/web/save"),
        ("GET", "/api/v1/saved"),
        ("GET", "/api/v1/saved/web"),
        ("DELETE", "/api/v1/saved/web"),
        ("POST", "/api/v1/saved/web/restore"),
        ("GET", "/api/v1/saved/Bad_Name"),
        ("GET", "/api/v1/network"),
        // Unknown paths under /api/v1, wrong methods and bad names on protected paths: 401
        // first.
        ("GET", "/api/v1/nothing-here"),
        ("GET", "/api/v1"),
        ("DELETE", "/api/v1/vms"),
        ("GET", "/api/v1/vms/ABC"),
    ];
    for (method, path) in protected {
        let body = matches!(method, "POST" | "PUT").then_some("{\"module\":\"0\"}");
        for token in [
            None,
            Some("wrong"),
            Some("s3cret-toke"),
            Some("s3cret-token2"),
        ] {
            let r = send_raw(&mut mock, &raw(method, path, token, body));
            let (status, message) = error_of(&r);
            assert_eq!(status, 401, "{method} {path} {token:?}");
            let challenge = r.header("www-authenticate").unwrap();
            if token.is_none() {
                assert_eq!(challenge, "Bearer realm=\"keel\"");
                assert_eq!(
                    message,
                    "missing bearer token: send Authorization: Bearer <token>"
                );
            } else {
                assert_eq!(challenge, "Bearer realm=\"keel\", error=\"invalid_token\"");
                assert_eq!(message, "invalid bearer token");
            }
        }
    }
    // Another scheme is no token.
    let basic = b"GET /api/v1/system HTTP/1.1\r\nHost: k\r\nAuthorization: Basic YTpi\r\n\r\n";
    assert_eq!(send_raw(&mut mock, basic).status, 401);
    // A malformed bearer token is a bad request.
    let bad = b"GET /api/v1/system HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer a b\r\n\r\n";
    assert_eq!(send_raw(&mut mock, bad).status, 400);
    // Both accepted tokens work; the empty one was dropped.
    for token in ["first-token", TOKEN] {
        let r = send_raw(&mut mock, &raw("GET", "/api/v1/system", Some(token), None));
        assert_eq!(r.status, 200);
    }
    assert!(mock.changes.is_empty());
    // With no tokens at all, nothing protected is reachable.
    let none = Router::new(Vec::<String>::new());
    let r = none.handle(
        &mut mock,
        &crate::http::server::Request {
            method: &crate::http::Method::Get,
            path: "/api/v1/system",
            query: None,
            headers: &[],
            bearer_token: Some(""),
            body: b"",
        },
    );
    assert_eq!(r.status, 401);
}

#[test]
fn constant_time_compare() {
    assert!(ct_eq(b"", b""));
    assert!(ct_eq(b"abc", b"abc"));
    assert!(!ct_eq(b"abc", b"abd"));
    assert!(!ct_eq(b"abc", b"ab"));
    assert!(!ct_eq(b"ab", b"abc"));
    assert!(!ct_eq(b"abc\0", b"abc"));
    assert!(!ct_eq(b"", b"a"));
}

#[test]
fn store_listing() {
    let mut mock = Mock::default();
    let r = get(&mut mock, "/api/v1/store");
    assert_eq!(r.status, 200);
    assert_eq!(
        body(&r),
        json!({"files": [
            {"name": "vmlinuz-6.1", "size": 5000000},
            {"name": "initrd.cpio", "size": 1234}
        ]})
    );
    mock.store = None;
    let r = get(&mut mock, "/api/v1/store");
    assert_eq!(
        error_of(&r),
        (503, String::from("no guest store: no boot disk found"))
    );
}

#[test]
fn system_shows_the_hardware_with_null_for_absent_values() {
    let mut mock = Mock::default();
    let r = get(&mut mock, "/api/v1/system");
    assert_eq!(
        body(&r)["hardware"],
        json!({
            "source": "SMBIOS 3.0",
            "vendor": "KeelTest",
            "product": "Rack9",
            "serial": "SN-4711",
            "bios_vendor": "TestBIOS",
            "bios_version": "9.9",
            "bios_date": null,
        })
    );
    conforms(b"GET /api/v1/system HTTP/1.1\r\n", &r);
    let doc = openapi::document();
    let hardware = &doc["components"]["schemas"]["Hardware"];
    for field in [
        "source",
        "vendor",
        "product",
        "serial",
        "bios_vendor",
        "bios_version",
        "bios_date",
    ] {
        assert_eq!(hardware["properties"][field]["nullable"], true, "{field}");
    }
    // An older Keel's answer, without `hardware`, still reads (the fleet view asks both).
    let mut old = serde_json::to_value(mock.system()).unwrap();
    old.as_object_mut().unwrap().remove("hardware");
    let parsed: SystemInfo = serde_json::from_value(old).unwrap();
    assert_eq!(parsed.hardware, HardwareInfo::default());
}

#[test]
fn system_memory_bill_parts_sum_to_the_used_total_and_old_answers_still_read() {
    let mut mock = Mock::default();
    let r = get(&mut mock, "/api/v1/system");
    conforms(b"GET /api/v1/system HTTP/1.1\r\n", &r);
    let memory = &body(&r)["memory"];
    let used = memory["total_bytes"].as_u64().unwrap() - memory["free_bytes"].as_u64().unwrap();
    let by_use = memory["by_use"].as_object().unwrap();
    let parts: u64 = by_use
        .iter()
        .filter(|(k, _)| *k != "heap_used_bytes")
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(parts, used);
    let vm = &memory["vms"][0];
    assert_eq!(vm["name"], "web");
    assert_eq!(vm["guest_ram_bytes"], 64 << 20);
    let overhead: u64 = vm["by_use"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(vm["overhead_bytes"].as_u64().unwrap(), overhead);
    let doc = openapi::document();
    let schema = &doc["components"]["schemas"];
    for field in ["total_bytes", "free_bytes", "by_use", "vms"] {
        assert!(schema["Memory"]["properties"][field].is_object(), "{field}");
    }
    for field in ["kernel_image_bytes", "heap_used_bytes", "vms_bytes"] {
        assert!(
            schema["MemoryByUse"]["properties"][field].is_object(),
            "{field}"
        );
    }
    assert!(schema["VmMemoryByUse"]["properties"]["second_level_tables_bytes"].is_object());
    // An older Keel's answer, with totals only, still reads.
    let old = json!({"total_bytes": 1024, "free_bytes": 512});
    let parsed: MemoryInfo = serde_json::from_value(old).unwrap();
    assert_eq!(parsed.by_use, MemoryByUse::default());
    assert!(parsed.vms.is_empty());
}

#[test]
fn system_modules_and_list() {
    let mut mock = Mock::default();
    let r = get(&mut mock, "/api/v1/system");
    assert_eq!(r.status, 200);
    assert_eq!(body(&r), serde_json::to_value(mock.system()).unwrap());
    assert_eq!(body(&r)["network"]["address"], "10.0.2.15/24");
    let r = get(&mut mock, "/api/v1/modules");
    assert_eq!(
        body(&r),
        json!({"modules": [
            {"index": 0, "name": "hello.bin", "size_bytes": 512},
            {"index": 1, "name": "linux.bzImage", "size_bytes": 9000000}
        ]})
    );
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let mut mock = Mock::default();
    for path in [
        "/nothing",
        "/index.html",
        "/api",
        "/api/v2/vms",
        "/api/v1/vms/",
        "/api/v1/vms/web/suspend",
        "/api/v1/modules/0",
    ] {
        let r = send_raw(&mut mock, &raw("GET", path, None, None));
        let expected = if routes::under_api(path) { 401 } else { 404 };
        assert_eq!(r.status, expected, "{path}");
        let r = get(&mut mock, path);
        assert_eq!(error_of(&r), (404, format!("no resource at {path}")));
    }
    for (method, path, allow) in [
        ("DELETE", "/api/v1/vms", "GET, POST"),
        ("PUT", "/api/v1/vms/1", "GET, DELETE"),
        ("PATCH", "/api/v1/vms/web/console", "GET, POST"),
        ("GET", "/api/v1/vms/1/stop", "POST"),
        ("GET", "/api/v1/modules/0/run", "POST"),
        ("POST", "/api/v1/system", "GET"),
        ("OPTIONS", "/api/v1/modules", "GET"),
        ("get", "/api/v1/modules", "GET"),
        ("HEAD", "/", "GET"),
    ] {
        let body = matches!(method, "POST" | "PUT" | "PATCH").then_some("{}");
        let r = send(&mut mock, method, path, body);
        let (status, message) = error_of(&r);
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some(allow));
        assert_eq!(
            message,
            format!("method {method} not allowed on {path}: use {allow}")
        );
    }
    // Public paths answer 405 without a token.
    let r = send_raw(&mut mock, &raw("POST", "/api/v1/health", None, Some("")));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    // HEAD: 405, and the server sends no body.
    let bytes = raw("HEAD", "/api/v1/health", None, None);
    let router = router();
    let Exchange::Respond { head_request, .. } =
        exchange(&bytes, &Limits::default(), &mut router.bind(&mut mock))
    else {
        panic!()
    };
    assert!(head_request);
    assert!(mock.changes.is_empty());
}

#[test]
fn parser_limits_reach_the_client() {
    let mut mock = Mock::default();
    let no_length =
        format!("POST /api/v1/vms HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    assert_eq!(error_of(&send_raw(&mut mock, no_length.as_bytes())).0, 411);
    let chunked = b"POST /api/v1/vms HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(error_of(&send_raw(&mut mock, chunked)).0, 411);
    let too_big = format!(
        "POST /api/v1/vms HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 65537\r\n\r\n"
    );
    let (status, message) = error_of(&send_raw(&mut mock, too_big.as_bytes()));
    assert_eq!(
        (status, message.as_str()),
        (413, "request body exceeds 65536 bytes")
    );
    let huge_head = format!(
        "GET /api/v1/health HTTP/1.1\r\nHost: k\r\nX: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(error_of(&send_raw(&mut mock, huge_head.as_bytes())).0, 431);
    let mut many = String::from("GET /api/v1/health HTTP/1.1\r\nHost: k\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(error_of(&send_raw(&mut mock, many.as_bytes())).0, 431);
    assert_eq!(error_of(&send_raw(&mut mock, b"BLAH\r\n\r\n")).0, 400);
    assert!(mock.changes.is_empty());
}

/// Every (METHOD, path) the document describes.
fn documented() -> BTreeSet<(String, String)> {
    let doc = openapi::document();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for key in item.as_object().unwrap().keys() {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&key.as_str())
            {
                out.insert((key.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn openapi_paths_are_exactly_the_routes() {
    let routes: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented(), routes);
    // And the document says which ones need no token.
    let doc = openapi::document();
    for route in ROUTES {
        let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
        let public = op.get("security") == Some(&json!([]));
        assert_eq!(public, route.public, "{} {}", route.method, route.path);
    }
}

#[test]
fn openapi_lists_exactly_the_statuses_of_the_route_table() {
    let doc = openapi::document();
    for route in ROUTES {
        let responses = doc["paths"][route.path][route.method.to_ascii_lowercase()]["responses"]
            .as_object()
            .unwrap();
        let listed: Vec<u16> = responses
            .keys()
            .filter(|k| *k != "default")
            .map(|k| k.parse().unwrap())
            .collect();
        assert_eq!(listed, route.statuses(), "{} {}", route.method, route.path);
        // Every route can get the server's own answers, and only public ones miss 401.
        for status in routes::SERVER_ERRORS {
            assert!(listed.contains(status), "{} {}", route.method, route.path);
        }
        // The WebSocket console is public for browsers, but checks a bearer token if sent.
        let checks_token = !route.public || route.op == Op::ConsoleWs;
        assert_eq!(listed.contains(&401), checks_token, "{}", route.path);
        let body = ["POST", "PUT"].contains(&route.method);
        assert_eq!(
            listed.contains(&411),
            body,
            "{} {}",
            route.method,
            route.path
        );
        // Each status has a description with content (HTML only for the page), but 204,
        // 304 and the WebSocket's 101, which have none.
        for (status, response) in responses {
            let response = resolve(&doc, response);
            assert!(
                response["description"].is_string(),
                "{} {status}",
                route.path
            );
            assert_eq!(
                response["content"].is_object(),
                !["204", "304", "101"].contains(&status.as_str()),
                "{} {status}",
                route.path
            );
        }
    }
}

/// The error statuses each route's handler answers with, as the router's own tests see them:
/// every status a route's table entry lists beyond the server's answers is reached by some
/// request here, so the table lists nothing the router cannot say.
#[test]
fn every_listed_handler_error_is_reachable() {
    let mut mock = Mock::default();
    let mut seen: BTreeSet<(&str, &str, u16)> = BTreeSet::new();
    let mut record = |mock: &mut Mock, method: &'static str, path: &str, body: Option<&str>| {
        let r = send(mock, method, path, body);
        let route = routes::lookup(path.split('?').next().unwrap())
            .map(|(r, _)| r)
            .find(|r| r.method == method)
            .unwrap();
        seen.insert((route.method, route.path, r.status));
    };
    for path in ["/api/v1/vms/ABC", "/api/v1/vms/nosuch"] {
        for (method, suffix) in [
            ("GET", ""),
            ("DELETE", ""),
            ("POST", "/start"),
            ("POST", "/stop"),
            ("POST", "/restart"),
            ("POST", "/pause"),
            ("POST", "/resume"),
            ("GET", "/console"),
            ("POST", "/snapshot"),
            ("GET", "/console/ws"),
        ] {
            let body = (method == "POST").then_some("");
            record(&mut mock, method, &format!("{path}{suffix}"), body);
        }
    }
    for path in ["/api/v1/vms/ABC/migrate", "/api/v1/vms/nosuch/migrate"] {
        record(&mut mock, "POST", path, Some(r#"{"host":"10.0.0.2"}"#));
    }
    record(&mut mock, "POST", "/api/v1/vms/2/resume", Some(""));
    record(&mut mock, "POST", "/api/v1/vms/2/pause", Some(""));
    record(&mut mock, "POST", "/api/v1/vms/web/pause", Some("x"));
    record(&mut mock, "POST", "/api/v1/vms/web/resume", Some("x"));
    // Saved VMs: web paused and saved; a name taken, a VM not paused, a bad name, no memory;
    // a damaged saved VM, then no memory for a restore.
    mock.pause_vm(&VmKey::Name("web")).unwrap();
    record(&mut mock, "POST", "/api/v1/vms/web/save", Some(""));
    for (path, body) in [
        ("/api/v1/vms/web/save", ""),
        ("/api/v1/vms/db/save", ""),
        ("/api/v1/vms/web/save", "[]"),
        ("/api/v1/vms/web/save", r#"{"name":"A"}"#),
        ("/api/v1/vms/nosuch/save", ""),
        ("/api/v1/saved/nosuch/restore", ""),
        ("/api/v1/saved/A/restore", ""),
    ] {
        record(&mut mock, "POST", path, Some(body));
    }
    for path in [
        "/api/v1/saved/web",
        "/api/v1/saved/nosuch",
        "/api/v1/saved/A",
    ] {
        record(&mut mock, "GET", path, None);
    }
    mock.saved[0].damaged = true;
    record(&mut mock, "POST", "/api/v1/saved/web/restore", Some(""));
    mock.saved[0].damaged = false;
    mock.free_mib = 32;
    record(&mut mock, "POST", "/api/v1/saved/web/restore", Some(""));
    record(
        &mut mock,
        "POST",
        "/api/v1/vms/web/save",
        Some(r#"{"name":"x"}"#),
    );
    mock.free_mib = 400;
    record(&mut mock, "POST", "/api/v1/saved/web/restore", Some(""));
    for path in [
        "/api/v1/saved/A",
        "/api/v1/saved/nosuch",
        "/api/v1/saved/web",
    ] {
        record(&mut mock, "DELETE", path, None);
    }
    let seen_for = |path: &str, method: &str| -> BTreeSet<u16> {
        seen.iter()
            .filter(|(m, p, _)| *m == method && *p == path)
            .map(|(_, _, s)| *s)
            .collect()
    };
    for (method, path) in [
        ("POST", "/api/v1/vms/{name}/pause"),
        ("POST", "/api/v1/vms/{name}/resume"),
    ] {
        assert_eq!(
            seen_for(path, method),
            BTreeSet::from([400, 404, 409]),
            "{method} {path}"
        );
    }
    for (method, path, statuses) in [
        (
            "POST",
            "/api/v1/vms/{name}/save",
            &[201, 400, 404, 409, 422, 503][..],
        ),
        (
            "POST",
            "/api/v1/saved/{saved}/restore",
            &[201, 400, 404, 422, 503],
        ),
        ("GET", "/api/v1/saved/{saved}", &[200, 400, 404]),
        ("DELETE", "/api/v1/saved/{saved}", &[204, 400, 404]),
    ] {
        assert_eq!(
            seen_for(path, method),
            BTreeSet::from_iter(statuses.iter().copied()),
            "{method} {path}"
        );
    }
    // (Console input's 400, 404, 409, 413 and 415 are the console tests' in vms_tests.rs.)
    for route in ROUTES
        .iter()
        .filter(|r| r.path.contains("{name}") && r.op != Op::ConsoleInput)
    {
        let statuses = seen_for(route.path, route.method);
        assert!(
            statuses.is_superset(&BTreeSet::from([400, 404])),
            "{} {}",
            route.method,
            route.path
        );
    }
}

#[test]
fn openapi_schemas_carry_the_limits() {
    use keel_config::limits;
    let doc = openapi::document();
    let schemas = &doc["components"]["schemas"];
    let vm = &schemas["ConfigVm"]["properties"];
    assert_eq!(vm["memory_mib"]["minimum"], limits::MIN_MEMORY_MIB);
    assert_eq!(vm["memory_mib"]["maximum"], limits::MAX_MEMORY_MIB);
    assert_eq!(vm["memory_mib"]["multipleOf"], limits::MEMORY_ALIGN_MIB);
    assert_eq!(vm["vcpus"]["maximum"], limits::MAX_VCPUS);
    assert_eq!(vm["name"]["maxLength"], limits::MAX_VM_NAME_LEN);
    assert_eq!(vm["cmdline"]["maxLength"], limits::MAX_CMDLINE_LEN);
    assert_eq!(vm["disks"]["maxItems"], limits::MAX_VM_DISKS);
    let disk = &schemas["ConfigVmDisk"];
    assert_eq!(
        disk["properties"]["serial"]["maxLength"],
        limits::MAX_DISK_SERIAL_LEN
    );
    assert_eq!(
        disk["properties"]["partition"]["maxLength"],
        limits::MAX_VM_NAME_LEN
    );
    // Its request form: every field has a default, so none is required (the response
    // generator's form would require `readonly`).
    assert_eq!(disk.get("required"), None, "{disk}");
    assert_eq!(disk["additionalProperties"], false);
    assert_eq!(vm["nics"]["maxItems"], limits::MAX_VM_NICS);
    let nic = &schemas["ConfigVmNic"];
    assert_eq!(nic["required"], json!(["network"]));
    assert_eq!(
        nic["properties"]["network"]["allOf"][0]["$ref"],
        "#/components/schemas/NicNetwork"
    );
    assert_eq!(
        schemas["NicNetwork"]["enum"],
        json!(["bridged", "internal"])
    );
    assert_eq!(
        nic["properties"]["mac"]["pattern"],
        keel_config::mac::mac_pattern()
    );
    let internal = &schemas["ConfigInternalNetwork"]["properties"];
    assert_eq!(internal["prefix"]["minimum"], limits::MIN_INTERNAL_PREFIX);
    assert_eq!(internal["prefix"]["maximum"], limits::MAX_INTERNAL_PREFIX);
    assert_eq!(internal["address"]["format"], "ipv4");
    assert_eq!(
        schemas["PortKindView"]["enum"],
        json!(["uplink", "appliance", "guest"])
    );
    let run = &schemas["RunModule"]["properties"];
    assert_eq!(run["mem_mib"]["minimum"], limits::MIN_RUN_MEMORY_MIB);
    assert_eq!(run["mem_mib"]["maximum"], limits::MAX_MEMORY_MIB);
    assert_eq!(run["vcpus"]["maximum"], limits::MAX_VCPUS);
    let name = &doc["components"]["parameters"]["VmName"]["schema"]["pattern"];
    assert_eq!(
        name,
        &format!("^({}|[0-9]{{1,10}})$", limits::vm_name_pattern())
    );
    // Every state the API can report, paused included, is in the enum.
    assert_eq!(
        schemas["VmState"]["enum"],
        json!([
            "defined", "running", "idle", "paused", "stopping", "stopped"
        ])
    );
    // A saved VM's name follows the VM naming rule, or is a number.
    let saved = &doc["components"]["parameters"]["SavedName"]["schema"]["pattern"];
    assert_eq!(saved, name);
    assert_eq!(
        schemas["SaveRequest"]["properties"]["name"]["pattern"],
        *name
    );
    // Request bodies that refuse unknown fields say so.
    for name in [
        "Config",
        "ConfigVm",
        "ConfigNetwork",
        "ConfigManagement",
        "ConfigVmNic",
        "ConfigInternalNetwork",
        "RunModule",
        "StopRequest",
        "SaveRequest",
    ] {
        assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
    }
}

#[test]
fn openapi_references_resolve() {
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let target = r.strip_prefix('#').unwrap();
                    assert!(doc.pointer(target).is_some(), "dangling {r}");
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    let doc = openapi::document();
    walk(&doc, &doc);
    assert_eq!(doc["openapi"], "3.0.3");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(Value::String(r)) = v.get("$ref") {
        v = doc.pointer(r.strip_prefix('#').unwrap()).unwrap();
    }
    v
}

/// A JSON Schema check for the subset the document uses.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(doc, schema);
    // `allOf: [{"$ref"}]` with a description beside it: schemars' form of a described field.
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for part in all {
            validate(doc, part, value, at);
        }
        return;
    }
    if value.is_null() {
        assert_eq!(schema.get("nullable"), Some(&json!(true)), "{at}: null");
        return;
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        assert!(allowed.contains(value), "{at}: {value} not in {allowed:?}");
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let map = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object"));
            let props = schema.get("properties").and_then(Value::as_object);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                assert!(
                    map.contains_key(required.as_str().unwrap()),
                    "{at}: missing {required}"
                );
            }
            for (key, v) in map {
                let at = format!("{at}.{key}");
                match (
                    props.and_then(|p| p.get(key)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => validate(doc, s, v, &at),
                    (None, Some(Value::Bool(false))) => panic!("{at}: not allowed"),
                    (None, Some(s @ Value::Object(_))) => validate(doc, s, v, &at),
                    // Our bodies never carry fields the document does not name.
                    (None, _) if props.is_some() => panic!("{at}: undocumented field"),
                    (None, _) => {}
                }
            }
        }
        Some("array") => {
            let items = value
                .as_array()
                .unwrap_or_else(|| panic!("{at}: not an array"));
            for (i, item) in items.iter().enumerate() {
                validate(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        Some("string") => assert!(value.is_string(), "{at}: not a string"),
        Some("boolean") => assert!(value.is_boolean(), "{at}: not a boolean"),
        Some("integer") => {
            let n = value
                .as_u64()
                .unwrap_or_else(|| panic!("{at}: not a non-negative integer"));
            if let Some(min) = schema.get("minimum").and_then(Value::as_u64) {
                assert!(n >= min, "{at}: {n} < {min}");
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_u64) {
                assert!(n <= max, "{at}: {n} > {max}");
            }
        }
        other => panic!("{at}: schema type {other:?}"),
    }
}

/// Checks `response` (to the request in `bytes`) against what the document says.
fn conforms(bytes: &[u8], response: &Response) {
    let doc = openapi::document();
    let text = String::from_utf8_lossy(bytes);
    let mut words = text.split(' ');
    let token = words.next().unwrap_or("");
    let method = token.to_ascii_lowercase();
    let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
    let route = routes::lookup(path)
        .map(|(r, _)| r)
        .find(|r| r.method == token);
    let status = response.status.to_string();
    let documented = match route {
        Some(route) => {
            // Listed for the operation itself, not left to `default`.
            assert!(
                route.statuses().contains(&response.status),
                "{method} {path}: {status} is not in the route table"
            );
            let responses = &doc["paths"][route.path][&method]["responses"];
            let documented = responses.get(&status);
            resolve(
                &doc,
                documented.unwrap_or_else(|| panic!("{method} {path}: {status} undocumented")),
            )
        }
        None => {
            assert!(
                response.status >= 400,
                "{method} {path}: {status} without a route"
            );
            &doc["components"]["responses"]["Error"]
        }
    };
    let content_type = response.header("content-type").unwrap_or("");
    if response.status == 204 || response.status == 101 {
        assert!(
            documented.get("content").is_none(),
            "{method} {path}: {status} with content"
        );
        assert!(response.body.is_empty() && content_type.is_empty());
        return;
    }
    let media = content_type.split(';').next().unwrap();
    let schema = &documented["content"][media]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path}: {status} as {content_type} undocumented"
    );
    if media == "application/json" {
        let value: Value = serde_json::from_slice(&response.body).unwrap();
        validate(&doc, schema, &value, "$");
    }
    if response.status >= 400 {
        assert_eq!(media, "application/json");
    }
}

#[test]
fn arbitrary_requests_never_panic_the_router() {
    // Random edits of valid requests, through the parser and the router.
    let seeds: [Vec<u8>; 10] = [
        raw("GET", "/api/v1/vms/1/console?since=3", Some(TOKEN), None),
        raw(
            "POST",
            "/api/v1/modules/0/run",
            Some(TOKEN),
            Some(r#"{"mem_mib":16}"#),
        ),
        raw(
            "POST",
            "/api/v1/vms",
            Some(TOKEN),
            Some(r#"{"name":"a","kernel":"vmlinuz-6.1","memory_mib":64}"#),
        ),
        raw("POST", "/api/v1/vms/web/stop", Some(TOKEN), Some("")),
        raw(
            "POST",
            "/api/v1/vms/web/restart",
            Some(TOKEN),
            Some(r#"{"timeout_s":5}"#),
        ),
        raw("DELETE", "/api/v1/vms/db", Some(TOKEN), None),
        typed("POST", "/api/v1/vms/1/console", "text/plain", b"ls\r"),
        raw("GET", "/api/v1/system", None, None),
        raw(
            "POST",
            "/api/v1/vms/web/save",
            Some(TOKEN),
            Some(r#"{"name":"web-1"}"#),
        ),
        raw("POST", "/api/v1/saved/web/restore", Some(TOKEN), Some("")),
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut mock = Mock::default();
    mock.pause_vm(&VmKey::Name("web")).unwrap();
    mock.save_vm(&VmKey::Name("web"), None).unwrap();
    let router = router();
    let alphabet = b"/{}\":,0123456789abz?&=% \r\n\xff";
    for _ in 0..20_000 {
        let mut input = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..1 + next() % 3 {
            let i = (next() as usize) % input.len();
            input[i] = alphabet[(next() as usize) % alphabet.len()];
        }
        if let Exchange::Respond { response, .. } =
            exchange(&input, &Limits::default(), &mut router.bind(&mut mock))
        {
            assert!((200..600).contains(&response.status));
            if response.status >= 400 {
                error_of(&response);
            }
        }
    }
}
