//! WebSocket (RFC 6455), server side, above the HTTP server's per-connection byte buffers.
//!
//! A handler answers an upgrade request with [`handshake::check`] and
//! [`handshake::switching_protocols`] plus an [`Upgrade`] (what the connection is for);
//! the server then keeps a [`Session`] for the connection instead of reading requests, and
//! calls [`Handler::websocket`](crate::http::server::Handler::websocket) with it on every
//! poll. [`frame`] parses client frames and encodes server frames; the session runs the
//! protocol (masking required, fragments, ping/pong, the close handshake, size limits,
//! UTF-8 checks). No extensions or subprotocols are negotiated.

pub mod frame;
pub mod handshake;
mod session;
#[cfg(test)]
mod tests;

pub use session::{CloseState, Message, Session, Upgrade, WsLimits};

/// Close codes (RFC 6455 §7.4.1).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutting down, or the stream it served ended).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error: unmasked, reserved bits or opcodes, bad fragments or lengths.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message (or close reason) that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A policy violation: here, a missing or wrong token.
    pub const POLICY: u16 = 1008;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
    /// The server met an unexpected condition.
    pub const INTERNAL: u16 = 1011;

    /// Whether a client may send `code` in a close frame (§7.4): the defined codes that
    /// are not reserved for local use, and the registered and private ranges.
    pub fn valid_received(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}
