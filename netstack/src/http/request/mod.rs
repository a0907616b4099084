//! Parsing an HTTP/1.1 request head with hard limits.
//!
//! [`parse_head`] is called by the connection handler each time bytes arrive, with everything
//! received so far. It answers [`Parsed::Partial`] until the head (request line, header
//! fields, empty line) is complete, then [`Parsed::Complete`] with the parsed [`RequestHead`]
//! and the head's length: the body, if any, starts right after it and is
//! [`RequestHead::content_length`] bytes long. Syntax comes from `httparse`; the policy on top
//! is this module's:
//!
//! | situation | answer | status |
//! | --- | --- | --- |
//! | no complete head within [`Limits::max_head_bytes`] | [`RequestError::HeadTooLarge`] | 431 |
//! | more than [`Limits::max_headers`] header fields | [`RequestError::TooManyHeaders`] | 431 |
//! | not HTTP/1.0 or HTTP/1.1 syntax | [`RequestError::Malformed`] | 400 |
//! | target not `/path`, `http://host/path` or `*` (OPTIONS) | [`RequestError::BadTarget`] | 400 |
//! | HTTP/1.1 without `Host`, or two `Host` | [`RequestError::MissingHost`], [`RequestError::DuplicateHeader`] | 400 |
//! | any `Transfer-Encoding` | [`RequestError::TransferEncoding`] | 411 |
//! | POST, PUT or PATCH without `Content-Length` | [`RequestError::LengthRequired`] | 411 |
//! | `Content-Length` not digits / conflicting | [`RequestError::InvalidContentLength`], [`RequestError::ConflictingContentLength`] | 400 |
//! | `Content-Length` above [`Limits::max_body_bytes`] | [`RequestError::BodyTooLarge`] | 413 |
//! | `Content-Length`, `Transfer-Encoding`, `Connection`, `Host` or `Authorization` not UTF-8 | [`RequestError::InvalidHeaderEncoding`] | 400 |
//! | `Authorization: Bearer` with a malformed token, or two `Authorization` | [`RequestError::MalformedBearerToken`], [`RequestError::DuplicateHeader`] | 400 |
//!
//! **Bodies**: only bodies framed by `Content-Length` are accepted. Chunked transfer coding
//! (and every other transfer coding) is refused with 411 Length Required, which tells the
//! client to resend with a length; the API's JSON bodies are small and always of known size.
//! Since a request with neither header would have an empty body (RFC 9112 §6.3), and an empty
//! POST/PUT/PATCH is almost always a client that forgot its body, those methods must state
//! their length (`Content-Length: 0` is fine). Identical repeated `Content-Length` values are
//! accepted as one (RFC 9110 §8.6).
//!
//! **Keep-alive**: HTTP/1.1 keeps the connection open unless `Connection` lists `close`;
//! HTTP/1.0 closes it unless `Connection` lists `keep-alive`.
//!
//! The parser never panics, whatever the bytes; a fuzz loop in the tests holds it to that.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

mod error;
#[cfg(test)]
mod tests;

pub use error::{RequestError, Syntax};

/// Hard limits on what a request may declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request head (request line, header fields and the empty line), in bytes.
    pub max_head_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest `Content-Length`.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    /// 8 KiB of head, 32 header fields, 64 KiB of body.
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 * 1024,
            max_headers: 32,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// The request method (RFC 9110 §9). Method names are case-sensitive.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `PATCH`
    Patch,
    /// `OPTIONS`
    Options,
    /// Any other method token (`TRACE`, `CONNECT`, `get`, extensions); the router answers
    /// 405 or 501.
    Other(String),
}

impl Method {
    fn parse(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other(token) => token,
        }
    }

    /// The methods whose requests must carry a `Content-Length` (see the module docs).
    fn length_required(&self) -> Option<&'static str> {
        match self {
            Method::Post => Some("POST"),
            Method::Put => Some("PUT"),
            Method::Patch => Some("PATCH"),
            _ => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, validated request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The path of the request-target (`*` for `OPTIONS *`), as sent: not percent-decoded.
    pub path: String,
    /// The query after `?`, as sent, without the `?`.
    pub query: Option<String>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// All header fields in order, names lower-cased, values without surrounding whitespace.
    /// Values of headers this module does not interpret are decoded lossily (invalid UTF-8
    /// becomes U+FFFD).
    pub headers: Vec<(String, String)>,
    /// The body length, when `Content-Length` was sent (already checked against the limit).
    pub content_length: Option<usize>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The token of `Authorization: Bearer <token>`; `None` without it or with another
    /// scheme.
    pub bearer_token: Option<String>,
}

impl RequestHead {
    /// The value of the first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Bytes of body that follow the head (0 without `Content-Length`).
    pub fn body_len(&self) -> usize {
        self.content_length.unwrap_or(0)
    }
}

/// The outcome of [`parse_head`] on the bytes received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet; read more and call again with all bytes so far.
    Partial,
    /// The head is complete.
    Complete {
        /// The parsed head.
        head: RequestHead,
        /// Length of the head in bytes, including the final empty line: the body starts at
        /// this offset.
        head_len: usize,
    },
}

/// Parses the request head at the start of `buf`.
///
/// `buf` holds everything received on the connection for this request; bytes after the head
/// (the body, or a pipelined request) are left alone. Returns [`Parsed::Partial`] while the
/// head is incomplete and `buf` is shorter than [`Limits::max_head_bytes`], and
/// [`RequestError::HeadTooLarge`] once it is not: a complete head never exceeds the limit. At
/// most `max_head_bytes` bytes are ever examined.
///
/// ```
/// use keel_netstack::http::request::{parse_head, Limits, Method, Parsed};
///
/// let req = b"POST /api/v1/vms?start=1 HTTP/1.1\r\nHost: keel\r\n\
///             Authorization: Bearer s3cret\r\nContent-Length: 2\r\n\r\n{}";
/// let limits = Limits::default();
/// assert_eq!(parse_head(&req[..20], &limits), Ok(Parsed::Partial));
/// let Ok(Parsed::Complete { head, head_len }) = parse_head(req, &limits) else { panic!() };
/// assert_eq!(head.method, Method::Post);
/// assert_eq!(head.path, "/api/v1/vms");
/// assert_eq!(head.query.as_deref(), Some("start=1"));
/// assert_eq!(head.bearer_token.as_deref(), Some("s3cret"));
/// assert_eq!(&req[head_len..], b"{}");
/// ```
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Parsed, RequestError> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let mut fields = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head_bytes => {
            return Err(RequestError::HeadTooLarge {
                max: limits.max_head_bytes,
            });
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::TooManyHeaders {
                max: limits.max_headers,
            });
        }
        Err(err) => return Err(err.into()),
    };
    // httparse fills all three once the head is complete; a missing one is still answered,
    // not unwrapped.
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(RequestError::Malformed(Syntax::RequestLine));
    };
    let method = Method::parse(method);
    let (path, query) = split_target(&method, target)?;
    let fields = Fields::collect(request.headers)?;
    let head = fields.into_head(method, path, query, version, limits)?;
    Ok(Parsed::Complete { head, head_len })
}

/// Splits a request-target (RFC 9112 §3.2) into path and query.
fn split_target(method: &Method, target: &str) -> Result<(String, Option<String>), RequestError> {
    if target == "*" {
        return if *method == Method::Options {
            Ok((String::from("*"), None))
        } else {
            Err(RequestError::BadTarget)
        };
    }
    let origin = if target.starts_with('/') {
        target
    } else if let Some(rest) = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
    {
        // absolute-form: drop the authority; the path is what follows it.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if end == 0 {
            return Err(RequestError::BadTarget);
        }
        &rest[end..]
    } else {
        return Err(RequestError::BadTarget);
    };
    let (path, query) = match origin.split_once('?') {
        Some((path, query)) => (path, Some(String::from(query))),
        None => (origin, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((String::from(path), query))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Trims optional whitespace (SP, HTAB) around a field value.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Headers this module interprets; their values must be UTF-8.
const INTERPRETED: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "authorization",
];

/// The header fields, decoded, plus what the policy needs from them.
struct Fields {
    headers: Vec<(String, String)>,
}

impl Fields {
    fn collect(raw: &[httparse::Header<'_>]) -> Result<Fields, RequestError> {
        let mut headers = Vec::with_capacity(raw.len());
        for field in raw {
            let name = field.name.to_ascii_lowercase();
            let value = trim_ows(field.value);
            let value = match INTERPRETED.iter().find(|n| **n == name) {
                Some(known) => core::str::from_utf8(value)
                    .map_err(|_| RequestError::InvalidHeaderEncoding { name: known })?
                    .to_owned(),
                None => String::from_utf8_lossy(value).into_owned(),
            };
            headers.push((name, value));
        }
        Ok(Fields { headers })
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Comma-separated list elements of every `name` field, trimmed, empty ones skipped
    /// (RFC 9110 §5.6.1).
    fn list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name)
            .flat_map(|v| v.split(','))
            .map(|e| e.trim_matches([' ', '\t']))
            .filter(|e| !e.is_empty())
    }

    fn at_most_once(&self, name: &'static str) -> Result<Option<&str>, RequestError> {
        let mut values = self.values(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(RequestError::DuplicateHeader { name });
        }
        Ok(first)
    }

    fn into_head(
        self,
        method: Method,
        path: String,
        query: Option<String>,
        version: u8,
        limits: &Limits,
    ) -> Result<RequestHead, RequestError> {
        let host = self.at_most_once("host")?;
        if version == 1 && host.is_none() {
            return Err(RequestError::MissingHost);
        }

        if self.values("transfer-encoding").next().is_some() {
            return Err(RequestError::TransferEncoding);
        }
        let content_length = self.content_length(limits)?;
        if content_length.is_none()
            && let Some(method) = method.length_required()
        {
            return Err(RequestError::LengthRequired { method });
        }

        let keep_alive = if version == 0 {
            self.list("connection")
                .any(|t| t.eq_ignore_ascii_case("keep-alive"))
        } else {
            !self
                .list("connection")
                .any(|t| t.eq_ignore_ascii_case("close"))
        };

        let bearer_token = match self.at_most_once("authorization")? {
            Some(value) => bearer_token(value)?,
            None => None,
        };

        Ok(RequestHead {
            method,
            path,
            query,
            version,
            headers: self.headers,
            content_length,
            keep_alive,
            bearer_token,
        })
    }

    /// `Content-Length` (RFC 9110 §8.6): `1*DIGIT`; repeated fields or list elements must all
    /// be the same number.
    fn content_length(&self, limits: &Limits) -> Result<Option<usize>, RequestError> {
        let mut seen: Option<&str> = None;
        for value in self.values("content-length") {
            // Every value has at least one element, so `seen` is set or we returned.
            for element in value.split(',').map(|e| e.trim_matches([' ', '\t'])) {
                if element.is_empty() || !element.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(RequestError::InvalidContentLength);
                }
                // Compare numbers, not spellings: "007" and "7" agree.
                let digits = element.trim_start_matches('0');
                match seen {
                    Some(previous) if previous != digits => {
                        return Err(RequestError::ConflictingContentLength);
                    }
                    _ => seen = Some(digits),
                }
            }
        }
        let Some(digits) = seen else {
            return Ok(None);
        };
        let too_large = RequestError::BodyTooLarge {
            max: limits.max_body_bytes,
        };
        // More digits than any usize has: too large, not malformed.
        let length = if digits.is_empty() {
            0
        } else {
            digits.parse::<usize>().map_err(|_| too_large)?
        };
        if length > limits.max_body_bytes {
            return Err(too_large);
        }
        Ok(Some(length))
    }
}

/// The token of an `Authorization` value with the `Bearer` scheme (case-insensitive), checked
/// against RFC 6750's `b64token` syntax. Other schemes give `None`.
fn bearer_token(value: &str) -> Result<Option<String>, RequestError> {
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_matches([' ', '\t']);
    let body = token.trim_end_matches('=');
    let valid = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if valid {
        Ok(Some(String::from(token)))
    } else {
        Err(RequestError::MalformedBearerToken)
    }
}
