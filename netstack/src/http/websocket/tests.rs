use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::frame::{self, FrameError, Opcode, encode_masked};
use super::handshake::{self, HandshakeError};
use super::*;
use crate::http::request::Method;
use crate::http::server::Request;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn session() -> Session {
    Session::new(
        Upgrade {
            target: String::from("web"),
            authorized: false,
        },
        WsLimits {
            max_message: 64,
            max_inbox: 2,
            max_output: 256,
        },
    )
}

/// The server's frames in `out`: (fin, opcode bits, payload).
fn server_frames(mut out: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while let [b0, b1, rest @ ..] = out {
        assert_eq!(b1 & 0x80, 0, "server frames are unmasked");
        let (len, rest) = match b1 & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([rest[0], rest[1]])),
                &rest[2..],
            ),
            127 => {
                let mut be = [0; 8];
                be.copy_from_slice(&rest[..8]);
                (u64::from_be_bytes(be) as usize, &rest[8..])
            }
            n => (usize::from(n), rest),
        };
        frames.push((b0 & 0x80 != 0, b0 & 0x0f, rest[..len].to_vec()));
        out = &rest[len..];
    }
    frames
}

fn drain(s: &mut Session) -> Vec<(bool, u8, Vec<u8>)> {
    let frames = server_frames(s.output());
    let n = s.output().len();
    s.advance(n);
    frames
}

fn close_code(frames: &[(bool, u8, Vec<u8>)]) -> u16 {
    let (_, op, payload) = frames.last().expect("a close frame");
    assert_eq!(*op, 0x8);
    u16::from_be_bytes([payload[0], payload[1]])
}

#[test]
fn rfc_example_accept_key() {
    // RFC 6455 §1.3.
    assert_eq!(
        handshake::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn parses_rfc_masked_hello() {
    // RFC 6455 §5.7: a single-frame masked text message "Hello".
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let (frame, n) = frame::parse(&bytes, 125).unwrap().unwrap();
    assert_eq!(n, bytes.len());
    assert!(frame.fin);
    assert_eq!(frame.opcode, Opcode::Text);
    assert_eq!(frame.payload, b"Hello");
    for cut in 0..bytes.len() {
        assert_eq!(frame::parse(&bytes[..cut], 125), Ok(None), "{cut}");
    }
}

#[test]
fn encodes_lengths_in_shortest_form() {
    for (len, head) in [
        (5usize, 2usize),
        (125, 2),
        (126, 4),
        (65535, 4),
        (65536, 10),
    ] {
        let mut out = Vec::new();
        frame::encode(Opcode::Binary, &vec![7; len], &mut out);
        assert_eq!(out.len(), head + len, "{len}");
        let frames = server_frames(&out);
        assert_eq!(frames[0].2.len(), len);
        // And a client's frame of the same length parses back.
        let masked = encode_masked(true, 2, &vec![7; len], KEY);
        let (frame, n) = frame::parse(&masked, 1 << 20).unwrap().unwrap();
        assert_eq!((n, frame.payload.len()), (masked.len(), len));
    }
}

#[test]
fn refuses_bad_frames() {
    let unmasked = [0x81, 0x01, b'a'];
    assert_eq!(frame::parse(&unmasked, 125), Err(FrameError::Unmasked));
    assert_eq!(
        frame::parse(&[0xC1, 0x80, 0, 0, 0, 0], 125),
        Err(FrameError::ReservedBits)
    );
    assert_eq!(
        frame::parse(&[0x83, 0x80, 0, 0, 0, 0], 125),
        Err(FrameError::ReservedOpcode(3))
    );
    // A fragmented ping, and a 126-byte one.
    assert_eq!(
        frame::parse(&[0x09, 0x80, 0, 0, 0, 0], 125),
        Err(FrameError::BadControl)
    );
    let long_ping = encode_masked(true, 9, &[0; 126], KEY);
    assert_eq!(frame::parse(&long_ping, 1000), Err(FrameError::BadControl));
    // 5 bytes announced in the 16-bit form.
    assert_eq!(
        frame::parse(&[0x82, 0xFE, 0, 5], 1000),
        Err(FrameError::BadLength)
    );
    // The top bit of the 64-bit length.
    assert_eq!(
        frame::parse(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], 1000),
        Err(FrameError::BadLength)
    );
    // Too big is known from the head alone.
    assert_eq!(
        frame::parse(&[0x82, 0xFE, 0x10, 0x00], 1000),
        Err(FrameError::TooBig {
            len: 4096,
            max: 1000
        })
    );
    assert_eq!(FrameError::TooBig { len: 1, max: 0 }.close_code(), 1009);
    assert_eq!(FrameError::Unmasked.close_code(), 1002);
}

#[test]
fn delivers_messages_and_fragments() {
    let mut s = session();
    let mut bytes = encode_masked(true, 1, b"one", KEY);
    bytes.extend(encode_masked(false, 2, b"tw", KEY));
    // A ping between fragments is answered at once.
    bytes.extend(encode_masked(true, 9, b"p", KEY));
    bytes.extend(encode_masked(true, 0, b"o", KEY));
    assert_eq!(s.receive(&bytes), bytes.len());
    assert_eq!(s.recv(), Some(Message::Text(String::from("one"))));
    assert_eq!(s.recv(), Some(Message::Binary(b"two".to_vec())));
    assert_eq!(s.recv(), None);
    assert_eq!(drain(&mut s), [(true, 0xA, b"p".to_vec())]);
    assert_eq!(s.state(), CloseState::Open);
}

#[test]
fn split_at_every_byte() {
    let mut bytes = encode_masked(true, 2, b"hello world", KEY);
    bytes.extend(encode_masked(true, 1, "é".as_bytes(), KEY));
    let mut s = session();
    for b in &bytes {
        assert_eq!(s.receive(core::slice::from_ref(b)), 1);
    }
    assert_eq!(s.recv(), Some(Message::Binary(b"hello world".to_vec())));
    assert_eq!(s.recv(), Some(Message::Text(String::from("é"))));
}

#[test]
fn unmasked_frame_fails_with_1002() {
    let mut s = session();
    s.receive(&[0x82, 0x01, 0x00]);
    assert_eq!(s.state(), CloseState::Closed);
    assert_eq!(close_code(&drain(&mut s)), close::PROTOCOL_ERROR);
    assert!(s.is_finished());
    // Whatever follows is discarded.
    assert_eq!(s.receive(&[1, 2, 3]), 3);
    assert_eq!(s.recv(), None);
    assert!(s.output().is_empty());
}

#[test]
fn oversize_frame_and_message_fail_with_1009() {
    let mut s = session();
    s.receive(&encode_masked(true, 2, &[0; 65], KEY)[..4]);
    assert_eq!(close_code(&drain(&mut s)), close::TOO_BIG);
    // Fragments that add up to too much.
    let mut s = session();
    s.receive(&encode_masked(false, 2, &[0; 40], KEY));
    s.receive(&encode_masked(true, 0, &[0; 40], KEY));
    assert_eq!(close_code(&drain(&mut s)), close::TOO_BIG);
    assert_eq!(s.recv(), None);
}

#[test]
fn bad_fragment_sequences_and_utf8() {
    let mut s = session();
    s.receive(&encode_masked(true, 0, b"x", KEY));
    assert_eq!(close_code(&drain(&mut s)), close::PROTOCOL_ERROR);
    let mut s = session();
    s.receive(&encode_masked(false, 1, b"x", KEY));
    s.receive(&encode_masked(true, 1, b"y", KEY));
    assert_eq!(close_code(&drain(&mut s)), close::PROTOCOL_ERROR);
    let mut s = session();
    s.receive(&encode_masked(true, 1, &[0xff, 0xfe], KEY));
    assert_eq!(close_code(&drain(&mut s)), close::INVALID_DATA);
    // A text message split inside a character is fine.
    let mut s = session();
    s.receive(&encode_masked(false, 1, &[0xc3], KEY));
    s.receive(&encode_masked(true, 0, &[0xa9], KEY));
    assert_eq!(s.recv(), Some(Message::Text(String::from("é"))));
}

#[test]
fn client_close_is_echoed() {
    let mut s = session();
    s.receive(&encode_masked(
        true,
        8,
        &[0x03, 0xe8, b'b', b'y', b'e'],
        KEY,
    ));
    assert_eq!(s.state(), CloseState::Closed);
    let frames = drain(&mut s);
    assert_eq!(close_code(&frames), 1000);
    assert!(s.is_finished());
    // Without a code: answered with 1000. With a reserved code (1005) or 1 byte: 1002.
    let mut s = session();
    s.receive(&encode_masked(true, 8, &[], KEY));
    assert_eq!(close_code(&drain(&mut s)), 1000);
    for payload in [&[0x03, 0xed][..], &[0x03]] {
        let mut s = session();
        s.receive(&encode_masked(true, 8, payload, KEY));
        assert_eq!(close_code(&drain(&mut s)), 1002, "{payload:?}");
    }
}

#[test]
fn server_close_waits_for_the_client() {
    let mut s = session();
    s.close(close::POLICY, "invalid token");
    assert_eq!(s.state(), CloseState::CloseSent);
    let frames = drain(&mut s);
    assert_eq!(close_code(&frames), 1008);
    assert_eq!(&frames[0].2[2..], b"invalid token");
    assert!(!s.send_binary(b"late"));
    // Data after our close is dropped; the client's close finishes without a second close.
    s.receive(&encode_masked(true, 2, b"late", KEY));
    assert_eq!(s.recv(), None);
    s.receive(&encode_masked(true, 8, &[0x03, 0xf0], KEY));
    assert_eq!(s.state(), CloseState::Closed);
    assert!(s.output().is_empty());
    assert!(s.is_finished());
}

#[test]
fn bounded_queues_push_back() {
    let mut s = session();
    let one = encode_masked(true, 2, b"m", KEY);
    let bytes: Vec<u8> = one.iter().copied().cycle().take(one.len() * 5).collect();
    let took = s.receive(&bytes);
    // Two messages fit the inbox; the rest waits in the receive buffer (bounded).
    assert!(took <= 64 + frame::MAX_HEAD, "{took}");
    assert_eq!(s.recv(), Some(Message::Binary(b"m".to_vec())));
    assert_eq!(s.recv(), Some(Message::Binary(b"m".to_vec())));
    let more = s.receive(&bytes[took..]);
    let mut count = 0;
    while s.recv().is_some() {
        count += 1;
    }
    assert_eq!(2 + count, (took + more) / one.len());
    // Output: refused beyond the limit until the client reads.
    assert!(s.send_binary(&[1; 200]));
    assert!(!s.send_binary(&[1; 200]));
    let n = s.output().len();
    s.advance(n);
    assert!(s.send_binary(&[1; 200]));
}

fn upgrade_request<'a>(headers: &'a [(String, String)]) -> Request<'a> {
    Request {
        method: &Method::Get,
        path: "/api/v1/vms/web/console/ws",
        query: None,
        headers,
        bearer_token: None,
        body: &[],
    }
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (String::from(*n), String::from(*v)))
        .collect()
}

#[test]
fn handshake_checks() {
    let good = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let h = headers(&good);
    assert_eq!(
        handshake::check(&upgrade_request(&h)).as_deref(),
        Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    let mut bad_version = good;
    bad_version[2].1 = "8";
    let h = headers(&bad_version);
    let err = handshake::check(&upgrade_request(&h)).unwrap_err();
    assert_eq!(err, HandshakeError::Version(Some(String::from("8"))));
    let response = err.response();
    assert_eq!(response.status, 426);
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
    let h = headers(&good[..3]);
    assert_eq!(
        handshake::check(&upgrade_request(&h)),
        Err(HandshakeError::Key)
    );
    let mut bad_key = good;
    bad_key[3].1 = "c2hvcnQ=";
    let h = headers(&bad_key);
    let err = handshake::check(&upgrade_request(&h)).unwrap_err();
    assert_eq!(err, HandshakeError::Key);
    assert_eq!(err.response().status, 400);
    let h = headers(&good[1..]);
    assert_eq!(
        handshake::check(&upgrade_request(&h)),
        Err(HandshakeError::NotUpgrade)
    );
    let wire = handshake::switching_protocols("abc").encode(true, false);
    let text = String::from_utf8(wire).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(text.contains("Connection: Upgrade\r\n"), "{text}");
    assert!(!text.contains("Content-Length"), "{text}");
}
