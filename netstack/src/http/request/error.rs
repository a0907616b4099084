//! Why a request head is rejected, and the status code that says so.

/// Which part of the request head is not valid HTTP/1.1 syntax (RFC 9112).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// The request line: method token or request-target characters.
    RequestLine,
    /// The HTTP version is not `HTTP/1.0` or `HTTP/1.1`.
    Version,
    /// A header field name (including whitespace before the colon).
    HeaderName,
    /// A header field value (control characters, obsolete line folding).
    HeaderValue,
    /// A line does not end in CRLF (or a bare LF).
    LineEnding,
}

impl Syntax {
    fn what(self) -> &'static str {
        match self {
            Syntax::RequestLine => "request line",
            Syntax::Version => "HTTP version",
            Syntax::HeaderName => "header name",
            Syntax::HeaderValue => "header value",
            Syntax::LineEnding => "line ending",
        }
    }
}

/// Why a request head is rejected. [`status`](RequestError::status) gives the response
/// status; [`Display`](core::fmt::Display) a short message for the JSON error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not valid HTTP/1.x syntax. 400.
    #[error("malformed {}", .0.what())]
    Malformed(Syntax),
    /// The request-target is not an absolute path, an absolute URI, or `*` with OPTIONS. 400.
    #[error("request target must be an absolute path (or * with OPTIONS)")]
    BadTarget,
    /// The head is longer than [`Limits::max_head_bytes`](super::Limits). 431.
    #[error("request head exceeds {max} bytes")]
    HeadTooLarge {
        /// The limit.
        max: usize,
    },
    /// More header fields than [`Limits::max_headers`](super::Limits). 431.
    #[error("more than {max} request header fields")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// A `Content-Length` value is not a decimal number. 400.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// `Content-Length` given more than once with different values. 400.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// The declared body is larger than [`Limits::max_body_bytes`](super::Limits). 413.
    #[error("request body exceeds {max} bytes")]
    BodyTooLarge {
        /// The limit.
        max: usize,
    },
    /// A method that carries a body (POST, PUT, PATCH) came without `Content-Length`. 411.
    #[error("{method} requires a Content-Length header")]
    LengthRequired {
        /// The method.
        method: &'static str,
    },
    /// `Transfer-Encoding` (chunked or any other) is not accepted: bodies must come with a
    /// `Content-Length`. 411.
    #[error("Transfer-Encoding is not supported: send the body with Content-Length")]
    TransferEncoding,
    /// A header this server interprets is not valid UTF-8. 400.
    #[error("header {name} is not valid UTF-8")]
    InvalidHeaderEncoding {
        /// The header name, lower-case.
        name: &'static str,
    },
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2). 400.
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    /// A header that must appear at most once appears more often. 400.
    #[error("more than one {name} header")]
    DuplicateHeader {
        /// The header name, lower-case.
        name: &'static str,
    },
    /// `Authorization: Bearer` with an empty or malformed token (RFC 6750 §2.1). 400.
    #[error("malformed bearer token in the Authorization header")]
    MalformedBearerToken,
}

impl RequestError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Malformed(_)
            | RequestError::BadTarget
            | RequestError::InvalidContentLength
            | RequestError::ConflictingContentLength
            | RequestError::InvalidHeaderEncoding { .. }
            | RequestError::MissingHost
            | RequestError::DuplicateHeader { .. }
            | RequestError::MalformedBearerToken => 400,
            RequestError::LengthRequired { .. } | RequestError::TransferEncoding => 411,
            RequestError::BodyTooLarge { .. } => 413,
            RequestError::HeadTooLarge { .. } | RequestError::TooManyHeaders { .. } => 431,
        }
    }

    /// The reason phrase of [`status`](Self::status).
    pub fn reason(&self) -> &'static str {
        match self.status() {
            411 => "Length Required",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        }
    }
}

impl From<httparse::Error> for RequestError {
    fn from(err: httparse::Error) -> Self {
        // `TooManyHeaders` carries the limit and is mapped by the caller.
        RequestError::Malformed(match err {
            httparse::Error::HeaderName => Syntax::HeaderName,
            httparse::Error::HeaderValue => Syntax::HeaderValue,
            httparse::Error::NewLine => Syntax::LineEnding,
            httparse::Error::Version => Syntax::Version,
            httparse::Error::Token | httparse::Error::Status | httparse::Error::TooManyHeaders => {
                Syntax::RequestLine
            }
        })
    }
}
