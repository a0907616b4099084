//! A WebSocket client (RFC 6455) for `keel vm console`: the upgrade to
//! `GET /api/v1/vms/NAME/console/ws` with the bearer token, masked binary frames out, the
//! server's binary frames in, ping answered, the close handshake; over the API client's TLS
//! (the same pinned certificate) for `https://`. The caller falls back to polling when the
//! upgrade fails.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The GUID of the accept key (RFC 6455 §1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Longest server message accepted (the appliance sends at most 4 KiB at a time).
const MAX_PAYLOAD: usize = 1 << 20;

/// What came from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Console bytes.
    Data(Vec<u8>),
    /// The server closed: its code and reason.
    Closed(Option<u16>, String),
    /// Nothing within the read timeout.
    Idle,
}

/// The connection under the WebSocket: plain TCP or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// One console connection.
pub struct WsConsole {
    stream: Stream,
    buf: Vec<u8>,
    mask_state: u64,
}

/// The `Sec-WebSocket-Accept` for `key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    STANDARD.encode(sha.digest().bytes())
}

/// Pseudo-random bits for keys and masks (masking is against proxy cache poisoning by
/// scripts; a CLI needs no cryptographic randomness for it).
fn random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

impl WsConsole {
    /// Connects to `base_url` (`http[s]://host[:port]`; `https` with `tls`, the API
    /// client's configuration) and upgrades `path`. `Err` says why (the caller then polls
    /// instead).
    pub fn connect(
        base_url: &str,
        path: &str,
        token: Option<&str>,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<WsConsole, String> {
        let (authority, default_port, tls) = match (base_url.split_once("://"), tls) {
            (Some(("http", authority)), _) => (authority, 80, None),
            (Some(("https", authority)), Some(tls)) => (authority, 443, Some(tls)),
            _ => {
                return Err(format!(
                    "{base_url}: no way to connect (http, or https with TLS)"
                ));
            }
        };
        // `[v6]:port`, `[v6]`, `host:port`, `host`.
        let has_port = match authority.rfind(']') {
            Some(end) => authority[end..].contains(':'),
            None => authority.contains(':'),
        };
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        };
        let socket = address
            .to_socket_addrs()
            .map_err(|e| format!("{address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address}: no address"))?;
        let tcp =
            TcpStream::connect_timeout(&socket, timeout).map_err(|e| format!("{address}: {e}"))?;
        tcp.set_read_timeout(Some(timeout))
            .and_then(|()| tcp.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let mut stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                // The pin verifier ignores the name; rustls still needs one for SNI.
                let host = address
                    .rsplit_once(':')
                    .map_or(address.as_str(), |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let name = rustls::pki_types::ServerName::try_from(host)
                    .map_err(|e| format!("{address}: {e}"))?;
                let connection =
                    rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(connection, tcp)))
            }
        };
        let mut mask_state = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
            | 1;
        let mut key_bytes = [0u8; 16];
        key_bytes[..8].copy_from_slice(&random(&mut mask_state).to_le_bytes());
        key_bytes[8..].copy_from_slice(&random(&mut mask_state).to_le_bytes());
        let key = STANDARD.encode(key_bytes);
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .and_then(|()| stream.flush())
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 8192 {
                return Err(String::from("answer head too long"));
            }
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                Ok(_) => return Err(String::from("closed during the handshake")),
                Err(e) => return Err(e.to_string()),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let status = head.lines().next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101") {
            return Err(format!("the appliance answered {status}"));
        }
        let accept = accept_key(&key);
        let accepted = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                n.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
            })
        });
        if !accepted {
            return Err(String::from("wrong Sec-WebSocket-Accept in the answer"));
        }
        Ok(WsConsole {
            stream,
            buf: Vec::new(),
            mask_state,
        })
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let key = (random(&mut self.mask_state) as u32).to_le_bytes();
        self.stream.write_all(&frame(opcode, payload, key))?;
        self.stream.flush()
    }

    /// Sends typed bytes.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // The appliance takes messages of up to 16 KiB.
        for piece in bytes.chunks(4096) {
            self.send_frame(0x2, piece)?;
        }
        Ok(())
    }

    /// Starts the close handshake with 1000.
    pub fn close(&mut self) -> std::io::Result<()> {
        self.send_frame(0x8, &1000u16.to_be_bytes())
    }

    /// The next message, waiting at most `wait`.
    pub fn receive(&mut self, wait: Duration) -> std::io::Result<Incoming> {
        loop {
            if let Some((opcode, payload, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                match opcode {
                    0x0..=0x2 => return Ok(Incoming::Data(payload)),
                    0x8 => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                        return Ok(Incoming::Closed(code, reason.into_owned()));
                    }
                    0x9 => self.send_frame(0xA, &payload)?,
                    _ => {}
                }
                continue;
            }
            self.stream
                .tcp()
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(Incoming::Closed(None, String::from("connection closed"))),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Incoming::Idle);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A masked client frame.
pub fn frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// A server frame at the start of `buf`: opcode, payload, bytes used; `None` if incomplete.
pub fn parse(buf: &[u8]) -> std::io::Result<Option<(u8, Vec<u8>, usize)>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(bad("the appliance sent a masked frame"));
    }
    let (len, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_PAYLOAD as u64 {
        return Err(bad("frame too large"));
    }
    let len = len as usize;
    Ok(buf
        .get(at..at + len)
        .map(|payload| (b0 & 0x0f, payload.to_vec(), at + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_are_masked_and_server_frames_parse() {
        let f = frame(0x2, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        // RFC 6455 §5.7, as binary.
        assert_eq!(
            f,
            [
                0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        assert_eq!(frame(0x2, &[0; 300], [0; 4])[1..4], [0x80 | 126, 1, 44]);
        let server = [0x82, 0x03, b'a', b'b', b'c', 0x88];
        assert_eq!(parse(&server).unwrap(), Some((2, b"abc".to_vec(), 5)));
        assert_eq!(parse(&server[5..]).unwrap(), None);
        assert_eq!(parse(&[0x82, 0x7e, 0x01]).unwrap(), None);
        assert!(parse(&[0x82, 0x81, 0, 0, 0, 0, 1]).is_err());
    }
}
