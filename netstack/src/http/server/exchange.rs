//! One request/response exchange on the bytes a connection has received, without sockets.
//!
//! [`exchange`] is the part of the server that sees peer bytes: it runs
//! [`parse_head`](crate::http::request::parse_head) on what arrived so far, waits for the
//! `Content-Length` body, hands the [`Request`] to the [`Handler`] and returns the
//! [`Response`] with what the connection should do next. Rejected heads become the
//! parser's 4xx with the JSON error body and close the connection (the rest of the stream
//! cannot be trusted to start at a request boundary). The socket side lives in the parent
//! module; the fuzz target drives this function directly.

use alloc::format;
use alloc::string::String;

use crate::http::request::{Limits, Method, Parsed, RequestHead, parse_head};
use crate::http::response::Response;
use crate::http::websocket::Session;

/// A complete request, as the [`Handler`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, as sent (not percent-decoded).
    pub path: &'a str,
    /// The query after `?`, without the `?`.
    pub query: Option<&'a str>,
    /// Header fields in order, names lower-case.
    pub headers: &'a [(String, String)],
    /// The token of `Authorization: Bearer <token>`, if sent.
    pub bearer_token: Option<&'a str>,
    /// The body (`Content-Length` bytes; empty without one).
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The request described by a parsed head and its body.
    pub fn new(head: &'a RequestHead, body: &'a [u8]) -> Request<'a> {
        Request {
            method: &head.method,
            path: &head.path,
            query: head.query.as_deref(),
            headers: &head.headers,
            bearer_token: head.bearer_token.as_deref(),
            body,
        }
    }

    /// The value of the first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The values of query parameter `name` (`a=1&b&a=2`: `a` gives `1`, `2`; `b` gives
    /// `""`), as sent: not percent-decoded.
    pub fn query_params(&self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .filter(move |(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// What the server calls for each complete request.
///
/// Called once per request, in arrival order per connection, from
/// [`HttpServer::poll`](super::HttpServer::poll); it must not block (the management plane
/// runs on the boot CPU). It never sees a malformed request: those are answered by the
/// server.
pub trait Handler {
    /// The response to `req`.
    fn handle(&mut self, req: &Request<'_>) -> Response;

    /// Runs a WebSocket connection that a 101 response of [`handle`](Self::handle) opened,
    /// on every poll: take the client's messages ([`Session::recv`]), queue output, close.
    /// Like `handle`, it must not block. Without an implementation, the connection is
    /// closed with 1011 (the handler opened a WebSocket it cannot serve).
    fn websocket(&mut self, session: &mut Session) {
        session.close(
            crate::http::websocket::close::INTERNAL,
            "no WebSocket service here",
        );
    }
}

impl<F: FnMut(&Request<'_>) -> Response> Handler for F {
    fn handle(&mut self, req: &Request<'_>) -> Response {
        self(req)
    }
}

/// The outcome of [`exchange`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// No complete request yet: read up to `want` more bytes and call again with all of
    /// them.
    Incomplete {
        /// How many more bytes the request can use (at least 1).
        want: usize,
    },
    /// A response to send.
    Respond {
        /// The response.
        response: Response,
        /// Bytes of the input this request used; what follows is the next request.
        consumed: usize,
        /// Whether the connection stays open afterwards.
        keep_alive: bool,
        /// Whether the request was `HEAD` (send the head only).
        head_request: bool,
    },
}

/// Runs one exchange on `buf`, everything received for this request so far.
///
/// Never panics, whatever the bytes; reads no more than `max_head_bytes` of head and
/// `max_body_bytes` of body.
pub fn exchange<H: Handler + ?Sized>(buf: &[u8], limits: &Limits, handler: &mut H) -> Exchange {
    let (head, head_len) = match parse_head(buf, limits) {
        Ok(Parsed::Complete { head, head_len }) => (head, head_len),
        Ok(Parsed::Partial) => {
            return Exchange::Incomplete {
                want: limits.max_head_bytes.saturating_sub(buf.len()).max(1),
            };
        }
        Err(err) => return reject(err.status(), &format!("{err}"), buf.len()),
    };
    // `parse_head` checked the length against `max_body_bytes`.
    let end = head_len.saturating_add(head.body_len());
    let Some(body) = buf.get(head_len..end) else {
        return Exchange::Incomplete {
            want: end - buf.len(),
        };
    };
    let request = Request::new(&head, body);
    let response = handler.handle(&request);
    Exchange::Respond {
        response,
        consumed: end,
        keep_alive: head.keep_alive,
        head_request: head.method == Method::Head,
    }
}

/// A response the server gives on its own (bad request, timeout): the JSON error body,
/// and the connection closes.
pub(crate) fn reject(status: u16, message: &str, consumed: usize) -> Exchange {
    Exchange::Respond {
        response: Response::error(status, message),
        consumed,
        keep_alive: false,
        head_request: false,
    }
}
