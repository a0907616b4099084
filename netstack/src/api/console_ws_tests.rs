//! `GET /api/v1/vms/{name}/console/ws` over the mock kernel, with the session driven by
//! hand (the server's socket side is `http::server`'s tests).

use alloc::string::String;
use alloc::vec::Vec;

use super::*;
use crate::http::websocket::frame::encode_masked;
use crate::http::websocket::{CloseState, Session, WsLimits};

const KEY: [u8; 4] = [9, 8, 7, 6];

fn upgrade_request(path: &str, token: Option<&str>, version: &str) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: keel\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(token) = token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Upgrades and returns the session the server would hold.
fn open(mock: &mut Mock, path: &str, token: Option<&str>) -> Session {
    let r = send_raw(mock, &upgrade_request(path, token, "13"));
    assert_eq!(r.status, 101, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("Sec-WebSocket-Accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    Session::new(r.upgrade.expect("an upgrade"), WsLimits::default())
}

/// Runs the handler once and returns the payloads of the server's frames: (opcode, bytes).
fn poll(mock: &mut Mock, session: &mut Session) -> Vec<(u8, Vec<u8>)> {
    let router = router();
    router.bind(mock).websocket(session);
    let mut frames = Vec::new();
    let mut out = session.output();
    while let [b0, len, rest @ ..] = out {
        let len = usize::from(*len);
        assert!(len < 126);
        frames.push((b0 & 0x0f, rest[..len].to_vec()));
        out = &rest[len..];
    }
    let n = session.output().len();
    session.advance(n);
    frames
}

fn text(session: &mut Session, message: &str) {
    session.receive(&encode_masked(true, 1, message.as_bytes(), KEY));
}

#[test]
fn token_message_then_history_then_typing() {
    let mut mock = Mock::default();
    let mut s = open(&mut mock, "/api/v1/vms/web/console/ws", None);
    // Nothing before the token.
    assert!(poll(&mut mock, &mut s).is_empty());
    text(&mut s, &format!("{{\"token\":\"{TOKEN}\"}}"));
    // The mock keeps the last 8 bytes of output.
    let frames = poll(&mut mock, &mut s);
    assert_eq!(frames, [(2, b"e guest\n".to_vec())]);
    // Live output, then nothing more until more comes.
    mock.vms[0].console.push_str("$ ");
    assert_eq!(poll(&mut mock, &mut s), [(2, b"$ ".to_vec())]);
    assert!(poll(&mut mock, &mut s).is_empty());
    // Typed bytes go to the guest, as binary or text.
    s.receive(&encode_masked(true, 2, b"uname -r\r", KEY));
    text(&mut s, "x");
    poll(&mut mock, &mut s);
    assert_eq!(mock.vms[0].input, b"uname -r\rx");
    // A second watcher gets the history too.
    let mut t = open(&mut mock, "/api/v1/vms/web/console/ws", Some(TOKEN));
    assert_eq!(poll(&mut mock, &mut t), [(2, b"guest\n$ ".to_vec())]);
}

#[test]
fn wrong_or_missing_token_closes_1008_and_nothing_flows() {
    let mut mock = Mock::default();
    for first in [r#"{"token":"nope"}"#, "not json", r#"{"tok":"x"}"#] {
        let mut s = open(&mut mock, "/api/v1/vms/web/console/ws", None);
        text(&mut s, first);
        // Typed right behind the wrong token: never reaches the guest.
        s.receive(&encode_masked(true, 2, b"reboot\r", KEY));
        let frames = poll(&mut mock, &mut s);
        assert_eq!(frames.len(), 1, "{first}");
        assert_eq!(frames[0].0, 8);
        assert_eq!(&frames[0].1[..2], &1008u16.to_be_bytes());
        assert_eq!(s.state(), CloseState::CloseSent);
        poll(&mut mock, &mut s);
    }
    assert!(mock.vms[0].input.is_empty());
    // An unknown VM is told only after the token.
    let mut s = open(&mut mock, "/api/v1/vms/nosuch/console/ws", None);
    text(&mut s, &format!("{{\"token\":\"{TOKEN}\"}}"));
    let frames = poll(&mut mock, &mut s);
    assert_eq!(&frames[0].1[..2], &1008u16.to_be_bytes());
}

#[test]
fn upgrade_errors() {
    let mut mock = Mock::default();
    let path = "/api/v1/vms/web/console/ws";
    let r = send_raw(&mut mock, &upgrade_request(path, None, "12"));
    assert_eq!(r.status, 426);
    let r = send_raw(&mut mock, &upgrade_request(path, Some("wrong"), "13"));
    assert_eq!(r.status, 401);
    let r = send_raw(
        &mut mock,
        &upgrade_request("/api/v1/vms/nosuch/console/ws", Some(TOKEN), "13"),
    );
    assert_eq!(r.status, 404);
    let r = send_raw(
        &mut mock,
        &upgrade_request("/api/v1/vms/A_B/console/ws", None, "13"),
    );
    assert_eq!(r.status, 400);
    // A plain GET is not an upgrade.
    let r = send_raw(&mut mock, &raw("GET", path, None, None));
    assert_eq!(r.status, 400);
}
