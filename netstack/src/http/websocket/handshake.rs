//! The opening handshake (RFC 6455 §4.2): checking a client's upgrade request and the
//! `Sec-WebSocket-Accept` value of the server's 101 answer.

use alloc::string::String;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::http::response::Response;
use crate::http::server::Request;

/// The GUID every server appends to the client's key (§1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// No `Upgrade: websocket`, or no `upgrade` token in `Connection`.
    #[error(
        "not a WebSocket upgrade: send Upgrade: websocket and Connection: Upgrade on a GET request"
    )]
    NotUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13.
    #[error("unsupported WebSocket version {0:?}: only 13 (RFC 6455) is spoken")]
    Version(Option<String>),
    /// `Sec-WebSocket-Key` missing, or not the base64 of 16 bytes.
    #[error("Sec-WebSocket-Key must be the base64 encoding of 16 random bytes")]
    Key,
}

impl HandshakeError {
    /// The HTTP answer: 426 with the version the server speaks for a wrong version (§4.4),
    /// 400 otherwise.
    pub fn response(&self) -> Response {
        let message = alloc::format!("{self}");
        match self {
            HandshakeError::Version(_) => {
                Response::error(426, &message).with_header("Sec-WebSocket-Version", "13")
            }
            _ => Response::error(400, &message),
        }
    }
}

/// Checks that `req` asks for a WebSocket (version 13 with a valid key) and returns the
/// `Sec-WebSocket-Accept` value for the answer.
pub fn check(req: &Request<'_>) -> Result<String, HandshakeError> {
    let has_token = |name: &str, token: &str| {
        req.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if req.method.as_str() != "GET"
        || !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    match req.header("sec-websocket-version").map(str::trim) {
        Some("13") => {}
        other => {
            return Err(HandshakeError::Version(
                other.map(|v| crate::api::clip(v, 20)),
            ));
        }
    }
    let key = req
        .header("sec-websocket-key")
        .map(str::trim)
        .ok_or(HandshakeError::Key)?;
    let mut decoded = [0u8; 18];
    match STANDARD.decode_slice(key, &mut decoded) {
        Ok(16) => {}
        _ => return Err(HandshakeError::Key),
    }
    Ok(accept_key(key))
}

/// `Sec-WebSocket-Accept`: base64(SHA-1(key + GUID)) (§4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    STANDARD.encode(sha.digest().bytes())
}

/// The 101 answer that switches the connection to the WebSocket protocol.
pub fn switching_protocols(accept: &str) -> Response {
    Response::new(101)
        .with_header("Upgrade", "websocket")
        .with_header("Sec-WebSocket-Accept", accept)
}
