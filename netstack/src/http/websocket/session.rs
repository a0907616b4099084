//! One WebSocket connection's protocol state, over byte buffers: what the HTTP server's
//! connection holds once a handler has upgraded it. Pure (no sockets, no clock), so the
//! host tests and the fuzz target drive it directly.
//!
//! The server feeds it the client's bytes ([`Session::receive`]) and sends what
//! [`Session::output`] holds; in between, the handler takes whole messages
//! ([`Session::recv`]) and queues its own ([`Session::send_binary`]). The session answers
//! pings, runs the close handshake, reassembles fragments and fails the connection with the
//! RFC's close code on a protocol error. Memory is bounded: at most one message being
//! received ([`WsLimits::max_message`]), [`WsLimits::max_inbox`] messages waiting for the
//! handler and about [`WsLimits::max_output`] bytes waiting for the client; when full it
//! stops reading, so TCP's window pushes back on the client.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use super::close;
use super::frame::{self, MAX_CONTROL_PAYLOAD, MAX_HEAD, Opcode};

/// What a handler's upgrade response asks for: the server keeps it with the session, and
/// the handler reads it back on every call to know what the connection is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// What the connection is for, in the handler's terms (the API: the VM whose console
    /// it is).
    pub target: String,
    /// Whether the upgrade request already carried a valid token; if not, the handler
    /// expects it as the first message.
    pub authorized: bool,
}

/// Size limits of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsLimits {
    /// Longest message (and so frame) accepted from the client: larger gets close 1009.
    pub max_message: usize,
    /// Messages received but not yet taken by the handler.
    pub max_inbox: usize,
    /// Bytes queued for the client beyond which [`Session::send_binary`] refuses more.
    pub max_output: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_message: 16 * 1024,
            max_inbox: 8,
            max_output: 16 * 1024,
        }
    }
}

/// A whole message from the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// The message's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }
}

/// Where the close handshake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseState {
    /// Messages flow both ways.
    Open,
    /// The server sent its close frame and waits for the client's; incoming data is
    /// discarded.
    CloseSent,
    /// Both close frames went (or the connection failed): once the output is sent, the
    /// server closes TCP.
    Closed,
}

/// One WebSocket connection. See the module docs.
#[derive(Debug)]
pub struct Session {
    upgrade: Upgrade,
    /// The handler's position in what it streams (the console: the next byte offset to
    /// send); starts at 0.
    pub cursor: u64,
    limits: WsLimits,
    /// Client bytes not yet parsed into frames.
    rx: Vec<u8>,
    /// The fragmented message being received: its opcode and the bytes so far.
    partial: Option<(Opcode, Vec<u8>)>,
    inbox: VecDeque<Message>,
    out: Vec<u8>,
    sent: usize,
    state: CloseState,
    /// The code of the close frame the server sent, if any.
    close_code: Option<u16>,
}

impl Session {
    /// A session opened by `upgrade`.
    pub fn new(upgrade: Upgrade, limits: WsLimits) -> Session {
        Session {
            upgrade,
            cursor: 0,
            limits,
            rx: Vec::new(),
            partial: None,
            inbox: VecDeque::new(),
            out: Vec::new(),
            sent: 0,
            state: CloseState::Open,
            close_code: None,
        }
    }

    /// What the connection is for (from the handler's upgrade response).
    pub fn target(&self) -> &str {
        &self.upgrade.target
    }

    /// Whether the client has shown a valid token.
    pub fn authorized(&self) -> bool {
        self.upgrade.authorized
    }

    /// Records that the client has shown a valid token.
    pub fn authorize(&mut self) {
        self.upgrade.authorized = true;
    }

    /// Where the close handshake is.
    pub fn state(&self) -> CloseState {
        self.state
    }

    /// The code of the close frame the server sent, if it sent one.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// How many more client bytes the session takes now (0 while its queues are full).
    pub fn receive_space(&self) -> usize {
        if self.state == CloseState::Closed {
            // Everything is discarded: let the client's bytes drain.
            return usize::MAX;
        }
        if self.backlogged() {
            return 0;
        }
        (self.limits.max_message + MAX_HEAD).saturating_sub(self.rx.len())
    }

    /// Takes up to [`receive_space`](Self::receive_space) bytes of `data` from the client
    /// and parses what is complete. Returns how many bytes it took.
    pub fn receive(&mut self, data: &[u8]) -> usize {
        if self.state == CloseState::Closed {
            return data.len();
        }
        let n = data.len().min(self.receive_space());
        self.rx.extend_from_slice(&data[..n]);
        self.process();
        n
    }

    /// The next whole message from the client.
    pub fn recv(&mut self) -> Option<Message> {
        let message = self.inbox.pop_front();
        if message.is_some() {
            // Room again: frames held back in `rx` can go on.
            self.process();
        }
        message
    }

    /// How many payload bytes [`send_binary`](Self::send_binary) takes now.
    pub fn send_space(&self) -> usize {
        if self.state != CloseState::Open {
            return 0;
        }
        self.limits.max_output.saturating_sub(self.pending())
    }

    /// Queues a binary message; refused (false) when it does not fit in
    /// [`send_space`](Self::send_space) or the session is closing.
    pub fn send_binary(&mut self, data: &[u8]) -> bool {
        self.send(Opcode::Binary, data)
    }

    /// Queues a text message, as [`send_binary`](Self::send_binary).
    pub fn send_text(&mut self, text: &str) -> bool {
        self.send(Opcode::Text, text.as_bytes())
    }

    fn send(&mut self, opcode: Opcode, data: &[u8]) -> bool {
        if data.len() > self.send_space() {
            return false;
        }
        self.compact_output();
        frame::encode(opcode, data, &mut self.out);
        true
    }

    /// Starts the close handshake with `code` and `reason` (cut to fit a control frame);
    /// nothing more is sent or delivered after it. Does nothing once closing.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.state != CloseState::Open {
            return;
        }
        self.queue_close(code, reason);
        self.state = CloseState::CloseSent;
    }

    /// Bytes to send to the client.
    pub fn output(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// Marks `n` bytes of [`output`](Self::output) as sent.
    pub fn advance(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
    }

    /// Whether the close handshake is over and everything is sent: time to close TCP.
    pub fn is_finished(&self) -> bool {
        self.state == CloseState::Closed && self.output().is_empty()
    }

    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Whether the session should stop reading: the handler or the client is behind.
    fn backlogged(&self) -> bool {
        self.inbox.len() >= self.limits.max_inbox || self.pending() >= self.limits.max_output
    }

    fn compact_output(&mut self) {
        if self.sent > 0 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        let mut payload = Vec::with_capacity(MAX_CONTROL_PAYLOAD);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(clip_utf8(reason, MAX_CONTROL_PAYLOAD - 2).as_bytes());
        self.compact_output();
        frame::encode(Opcode::Close, &payload, &mut self.out);
        self.close_code = Some(code);
    }

    /// Fails the connection (§7.1.7): a close frame with `code`, then TCP closes without
    /// waiting for the client's.
    fn fail(&mut self, code: u16, reason: &str) {
        if self.state == CloseState::Open {
            self.queue_close(code, reason);
        }
        self.state = CloseState::Closed;
        self.rx = Vec::new();
        self.partial = None;
    }

    /// Parses the frames in `rx` while there is room for what they produce.
    fn process(&mut self) {
        let mut used = 0;
        while self.state != CloseState::Closed && !self.backlogged() {
            match frame::parse(&self.rx[used..], self.limits.max_message) {
                Ok(None) => break,
                Ok(Some((frame, n))) => {
                    used += n;
                    self.on_frame(frame);
                }
                Err(err) => {
                    let reason = alloc::format!("{err}");
                    self.fail(err.close_code(), &reason);
                    return;
                }
            }
        }
        if self.state == CloseState::Closed {
            self.rx = Vec::new();
        } else {
            self.rx.drain(..used);
        }
    }

    fn on_frame(&mut self, frame: frame::Frame) {
        match frame.opcode {
            Opcode::Ping => {
                if self.state == CloseState::Open {
                    self.compact_output();
                    frame::encode(Opcode::Pong, &frame.payload, &mut self.out);
                }
            }
            Opcode::Pong => {}
            Opcode::Close => self.on_close(&frame.payload),
            _ if self.state != CloseState::Open => {}
            Opcode::Text | Opcode::Binary if self.partial.is_some() => self.fail(
                close::PROTOCOL_ERROR,
                "a new message started before the fragmented one ended",
            ),
            Opcode::Continuation if self.partial.is_none() => self.fail(
                close::PROTOCOL_ERROR,
                "continuation frame without a message",
            ),
            opcode => {
                let (kind, mut bytes) = match self.partial.take() {
                    Some((kind, mut bytes)) => {
                        bytes.extend_from_slice(&frame.payload);
                        (kind, bytes)
                    }
                    None => (opcode, frame.payload),
                };
                if bytes.len() > self.limits.max_message {
                    let reason = alloc::format!(
                        "message longer than the {} bytes accepted",
                        self.limits.max_message
                    );
                    self.fail(close::TOO_BIG, &reason);
                    return;
                }
                if !frame.fin {
                    self.partial = Some((kind, bytes));
                    return;
                }
                let message = if kind == Opcode::Text {
                    match String::from_utf8(core::mem::take(&mut bytes)) {
                        Ok(text) => Message::Text(text),
                        Err(_) => {
                            self.fail(close::INVALID_DATA, "text message is not UTF-8");
                            return;
                        }
                    }
                } else {
                    Message::Binary(bytes)
                };
                self.inbox.push_back(message);
            }
        }
    }

    /// The client's close frame: answer it (echoing its code) unless the server closed
    /// first, and finish.
    fn on_close(&mut self, payload: &[u8]) {
        let code = match payload {
            [] => None,
            [_] => {
                self.fail(close::PROTOCOL_ERROR, "close frame with a 1-byte payload");
                return;
            }
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !close::valid_received(code) {
                    self.fail(close::PROTOCOL_ERROR, "invalid close code");
                    return;
                }
                if core::str::from_utf8(reason).is_err() {
                    self.fail(close::INVALID_DATA, "close reason is not UTF-8");
                    return;
                }
                Some(code)
            }
        };
        if self.state == CloseState::Open {
            self.queue_close(code.unwrap_or(close::NORMAL), "");
        }
        self.state = CloseState::Closed;
        self.partial = None;
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
