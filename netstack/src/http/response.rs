//! HTTP responses: what a [`Handler`](super::server::Handler) returns, and its encoding.
//!
//! A [`Response`] is a status, extra header fields and a body. The server owns the message
//! framing: [`Response::encode`] writes the status line, the handler's fields, then
//! `Content-Length` and `Connection` itself (a handler's own `Content-Length`,
//! `Transfer-Encoding` or `Connection` fields are dropped, and so is any field whose name or
//! value could split the head), and leaves the body out for `HEAD` requests. Every 4xx and
//! 5xx the server or the router produces carries the JSON error body of [`Response::error`]:
//! `{"error":{"status":N,"message":"..."}}`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write as _;

use schemars::JsonSchema;
use serde::Serialize;

/// The `Content-Type` of API responses.
pub const JSON: &str = "application/json";
/// The `Content-Type` of the web page.
pub const HTML: &str = "text/html; charset=utf-8";

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code (100..=999; anything else is sent as 500).
    pub status: u16,
    /// Header fields besides the framing ones, in order.
    pub headers: Vec<(String, String)>,
    /// The body (dropped on the wire for `HEAD` requests).
    pub body: Vec<u8>,
    /// With a 101: the WebSocket the connection becomes once this is sent.
    pub upgrade: Option<crate::http::websocket::Upgrade>,
}

/// An error: every 4xx and 5xx response carries one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody<'a> {
    /// What went wrong.
    pub error: ErrorDetail<'a>,
}

/// The status and message of an error (fields in this order on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErrorDetail<'a> {
    /// The response's status code.
    #[schemars(range(min = 400, max = 599))]
    pub status: u16,
    /// What went wrong and what to do about it.
    pub message: &'a str,
}

impl Response {
    /// A response with no body and no header fields.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            upgrade: None,
        }
    }

    /// `value` as a JSON body with `Content-Type: application/json`. A value that fails to
    /// serialize (a map with non-string keys; never one of the API's types) gives a 500.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status)
                .with_header("Content-Type", JSON)
                .with_body(body),
            Err(_) => Response::error(500, "response could not be encoded as JSON"),
        }
    }

    /// An HTML page.
    pub fn html(status: u16, page: &str) -> Response {
        Response::new(status)
            .with_header("Content-Type", HTML)
            .with_body(page.as_bytes().to_vec())
    }

    /// The JSON error body every 4xx and 5xx carries:
    /// `{"error":{"status":N,"message":"..."}}` ([`ErrorBody`]).
    pub fn error(status: u16, message: &str) -> Response {
        let body = ErrorBody {
            error: ErrorDetail { status, message },
        };
        Response::new(status)
            .with_header("Content-Type", JSON)
            // Cannot fail: two plain structs of a number and a string.
            .with_body(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Makes the connection a WebSocket once this response is sent (for a 101 from
    /// [`switching_protocols`](crate::http::websocket::handshake::switching_protocols)).
    pub fn with_upgrade(mut self, upgrade: crate::http::websocket::Upgrade) -> Response {
        self.upgrade = Some(upgrade);
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    /// The value of the first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The response as bytes on the wire: status line, header fields, `Content-Length`,
    /// `Connection: keep-alive` or `close`, empty line, and the body unless `head_request`.
    /// A 1xx, 204 or 304 response has neither `Content-Length` nor a body (RFC 9110 §8.6,
    /// §15.3.5, §15.4.5).
    pub fn encode(&self, keep_alive: bool, head_request: bool) -> Vec<u8> {
        let status = if (100..=999).contains(&self.status) {
            self.status
        } else {
            500
        };
        let mut head = String::with_capacity(128);
        // Writing to a String cannot fail.
        let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
        for (name, value) in &self.headers {
            if is_framing(name) || !is_token(name) || !is_field_value(value) {
                continue;
            }
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
        if !bodiless {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str(if status == 101 {
            // The only 101 the server sends switches to WebSocket (RFC 6455 §4.2.2).
            "Connection: Upgrade\r\n\r\n"
        } else if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = head.into_bytes();
        if !head_request && !bodiless {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Fields the server writes itself.
fn is_framing(name: &str) -> bool {
    ["content-length", "transfer-encoding", "connection"]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

/// A field name is a token (RFC 9110 §5.1).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A field value holds no control characters but HTAB (RFC 9110 §5.5).
fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The reason phrase for `status` (RFC 9110 §15); `""` for codes without one here.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        core::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn encodes_framing_itself() {
        let r = Response::json(200, &serde_json::json!({"a": 1}))
            .with_header("Content-Length", "999")
            .with_header("Connection", "upgrade")
            .with_header("Transfer-Encoding", "chunked")
            .with_header("X-Split", "a\r\nInjected: yes")
            .with_header("Bad Name", "v")
            .with_header("Cache-Control", "no-store");
        assert_eq!(
            text(&r.encode(true, false)),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Cache-Control: no-store\r\nContent-Length: 7\r\n\
             Connection: keep-alive\r\n\r\n{\"a\":1}"
        );
        assert_eq!(
            text(&r.encode(false, true)),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Cache-Control: no-store\r\nContent-Length: 7\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn no_content_has_no_length_and_no_body() {
        let r = Response::new(204)
            .with_header("Cache-Control", "no-store")
            .with_body(b"dropped".to_vec());
        assert_eq!(
            text(&r.encode(true, false)),
            "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\n\
             Connection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn error_bodies_are_json_and_escaped() {
        let r = Response::error(404, "no VM \"7\"\n");
        assert_eq!(r.status, 404);
        assert_eq!(r.header("content-type"), Some(JSON));
        assert_eq!(
            core::str::from_utf8(&r.body).unwrap(),
            r#"{"error":{"status":404,"message":"no VM \"7\"\n"}}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"status": 404, "message": "no VM \"7\"\n"}})
        );
    }

    #[test]
    fn odd_statuses() {
        assert!(text(&Response::new(0).encode(false, false)).starts_with("HTTP/1.1 500 "));
        assert!(text(&Response::new(1000).encode(false, false)).starts_with("HTTP/1.1 500 "));
        assert!(text(&Response::new(299).encode(false, false)).starts_with("HTTP/1.1 299 \r\n"));
        for s in [
            400, 401, 404, 405, 408, 409, 411, 412, 413, 422, 428, 431, 500, 503,
        ] {
            assert!(!reason_phrase(s).is_empty(), "{s}");
        }
    }
}
