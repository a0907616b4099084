//! A tiny WebSocket client (RFC 6455) for the WebSocket tests, over [`crate::http`]'s
//! connections: it can speak the protocol properly and break it on purpose (unmasked
//! frames, oversize lengths, half frames, bad handshakes).

use std::io::{Read, Write};
use std::time::Duration;

use crate::http::{self, Response};

/// The key of RFC 6455 §1.3's example; its accept value is [`EXAMPLE_ACCEPT`].
pub const EXAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// `Sec-WebSocket-Accept` for [`EXAMPLE_KEY`].
pub const EXAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// What the server sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A pong with its payload.
    Pong(Vec<u8>),
    /// A close frame: its code (if any) and reason.
    Close(Option<u16>, String),
}

/// One client connection after a successful upgrade.
pub struct WsClient {
    stream: http::Stream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

/// How a handshake went wrong.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The server answered, but not with 101.
    Refused(Response),
    /// The connection failed.
    Io(std::io::Error),
    /// A 101 whose `Sec-WebSocket-Accept` is not the key's.
    BadAccept(String),
}

/// The upgrade request for `path`.
pub fn upgrade_request(path: &str, key: &str, version: &str, token: Option<&str>) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n"
    );
    if let Some(token) = token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    req.push_str("\r\n");
    req
}

impl WsClient {
    /// Connects to 127.0.0.1:`port` and upgrades `path` (version 13, [`EXAMPLE_KEY`]), with a
    /// bearer token if given.
    pub fn connect(
        port: u16,
        path: &str,
        token: Option<&str>,
    ) -> Result<WsClient, HandshakeFailure> {
        Self::connect_with(port, &upgrade_request(path, EXAMPLE_KEY, "13", token))
    }

    /// Sends `request` (an upgrade request, perhaps a broken one) and reads the answer.
    pub fn connect_with(port: u16, request: &str) -> Result<WsClient, HandshakeFailure> {
        let mut stream =
            http::connect(port, Duration::from_secs(20)).map_err(HandshakeFailure::Io)?;
        stream
            .write_all(request.as_bytes())
            .map_err(HandshakeFailure::Io)?;
        // Read the head byte by byte, so no frame byte after it is taken.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                Ok(_) => {
                    return Err(HandshakeFailure::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("closed after {:?}", String::from_utf8_lossy(&head)),
                    )));
                }
                Err(e) => return Err(HandshakeFailure::Io(e)),
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        if !text.starts_with("HTTP/1.1 101 ") {
            // Not an upgrade: a normal response with a body; parse it whole.
            let mut rest = Vec::new();
            let length = text
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            rest.resize(length, 0);
            stream.read_exact(&mut rest).map_err(HandshakeFailure::Io)?;
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let headers = text
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            return Err(HandshakeFailure::Refused(Response {
                status,
                headers,
                body: String::from_utf8_lossy(&rest).into_owned(),
            }));
        }
        let key = request
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap_or("");
        let expected = if key == EXAMPLE_KEY {
            EXAMPLE_ACCEPT
        } else {
            ""
        };
        if !expected.is_empty() && !text.contains(&format!("Sec-WebSocket-Accept: {expected}\r\n"))
        {
            return Err(HandshakeFailure::BadAccept(text));
        }
        Ok(WsClient {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one frame, masked (as a client must) or not.
    pub fn send_frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
        masked: bool,
    ) -> std::io::Result<()> {
        let bytes = frame(
            fin,
            opcode,
            payload,
            masked.then_some([0x5a, 0x17, 0xc3, 0x81]),
        );
        self.send_raw(&bytes)
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send_frame(true, 0x1, text.as_bytes(), true)
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.send_frame(true, 0x2, bytes, true)
    }

    /// Sends the token message browsers send.
    pub fn send_token(&mut self, token: &str) -> std::io::Result<()> {
        self.send_text(&format!("{{\"token\":\"{token}\"}}"))
    }

    /// The next frame from the server within `timeout`.
    pub fn receive(&mut self, timeout: Duration) -> std::io::Result<Received> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some((received, used)) = parse_server_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(received);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no whole frame within {timeout:?} ({} bytes)",
                        self.buf.len()
                    ),
                ));
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Binary console output until it contains `needle` (within `timeout`); all of it.
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut text = String::new();
        while !text.contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.receive(left) {
                Ok(Received::Binary(bytes)) => text.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(other) => return Err(format!("{other:?} before {needle:?} (after {text:?})")),
                Err(e) => return Err(format!("{e} before {needle:?} (after {text:?})")),
            }
        }
        Ok(text)
    }

    /// Whether the server closed TCP (EOF or reset) within `timeout`, discarding frames.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.receive(left) {
                Ok(_) => {}
                Err(e) => return e.kind() != std::io::ErrorKind::TimedOut,
            }
        }
    }

    /// Drops the connection without a close frame.
    pub fn vanish(self) {
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Both);
    }
}

/// One frame as bytes, masked with `key` if given.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match key {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A server frame from the start of `buf`: `None` while incomplete.
fn parse_server_frame(buf: &[u8]) -> std::io::Result<Option<(Received, usize)>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(bad("the server masked a frame"));
    }
    if b0 & 0x80 == 0 {
        return Err(bad(
            "the server fragmented a message (not expected from Keel)",
        ));
    }
    let (len, at) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(be) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    let Some(payload) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let received = match b0 & 0x0f {
        0x1 => Received::Text(String::from_utf8_lossy(payload).into_owned()),
        0x2 => Received::Binary(payload.to_vec()),
        0xA => Received::Pong(payload.to_vec()),
        0x8 => {
            let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
            Received::Close(code, reason)
        }
        other => {
            return Err(bad(&format!(
                "unexpected opcode {other:#x} from the server"
            )));
        }
    };
    Ok(Some((received, at + len)))
}
