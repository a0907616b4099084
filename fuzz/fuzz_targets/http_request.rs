//! Arbitrary bytes as a request on a connection: the head parser, the body framing and the
//! `/api/v1` router over the router tests' in-memory kernel (`api::mock`, through the `mock`
//! feature). Nothing may panic, and every answer must be a well-formed response: a known
//! status, and the JSON error body on every 4xx/5xx.
//!
//! Seeds: `corpus/http_request/` (valid API requests to mutate). From `fuzz/`, with
//! cargo-fuzz on the pinned nightly, on a copy so the run does not grow the committed corpus:
//! `cp -r corpus/http_request /tmp/http && cargo +nightly-2025-06-05 fuzz run http_request /tmp/http`.
#![no_main]

use std::sync::OnceLock;

use keel_netstack::api::Router;
use keel_netstack::api::mock::Mock;
use keel_netstack::http::request::Limits;
use keel_netstack::http::server::{Exchange, exchange};
use libfuzzer_sys::fuzz_target;

/// Built once: it renders the OpenAPI document.
static ROUTER: OnceLock<Router> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let router = ROUTER.get_or_init(|| Router::new(["fuzz-token"]));
    let mut kernel = Mock::default();
    let tight = Limits {
        max_head_bytes: 512,
        max_headers: 8,
        max_body_bytes: 256,
    };
    for limits in [Limits::default(), tight] {
        // As the server does: answer, then go on with the bytes after the request.
        let mut rest = data;
        for _ in 0..4 {
            match exchange(rest, &limits, &mut router.bind(&mut kernel)) {
                Exchange::Incomplete { want } => {
                    assert!(want >= 1);
                    break;
                }
                Exchange::Respond {
                    response,
                    consumed,
                    keep_alive,
                    head_request,
                } => {
                    assert!((100..=599).contains(&response.status));
                    assert!(consumed <= rest.len());
                    if response.status >= 400 {
                        // `{"error":{"status":N,"message":"…"}}`, and a 422's `errors` beside it.
                        let body: serde_json::Value =
                            serde_json::from_slice(&response.body).expect("error body is JSON");
                        assert_eq!(body["error"]["status"], response.status, "{body}");
                        assert!(body["error"]["message"].is_string(), "{body}");
                    }
                    let wire = response.encode(keep_alive, head_request);
                    assert!(wire.starts_with(b"HTTP/1.1 "));
                    if !keep_alive || consumed == 0 {
                        break;
                    }
                    rest = &rest[consumed..];
                }
            }
        }
    }
});
