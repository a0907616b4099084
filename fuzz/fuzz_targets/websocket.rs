//! Arbitrary bytes from a WebSocket client: the frame parser and the session (fragments,
//! control frames, the close handshake, the size limits). Byte 0 picks how the rest is cut
//! into reads (as TCP may cut it); nothing may panic, every message delivered fits the
//! limit (text ones are UTF-8 by type), the output is a sequence of well-formed unmasked
//! server frames, and a failed session always says why with a valid close code.
//!
//! Seeds: `corpus/websocket/` (`python3 make_seeds.py`). From `fuzz/`:
//! `cp -r corpus/websocket /tmp/ws && cargo +nightly-2025-06-05 fuzz run websocket /tmp/ws`.
#![no_main]

use keel_netstack::http::websocket::frame;
use keel_netstack::http::websocket::{CloseState, Message, Session, Upgrade, WsLimits};
use libfuzzer_sys::fuzz_target;

const LIMITS: WsLimits = WsLimits {
    max_message: 256,
    max_inbox: 4,
    max_output: 512,
};

/// Checks that `out` is whole unmasked server frames; returns the last close code sent.
fn check_output(mut out: &[u8]) -> Option<u16> {
    let mut close = None;
    while let [b0, b1, rest @ ..] = out {
        assert_eq!(b0 & 0x70, 0, "reserved bits in a server frame");
        assert_eq!(b1 & 0x80, 0, "server frames are never masked");
        let (len, rest) = match b1 & 0x7f {
            126 => (usize::from(u16::from_be_bytes([rest[0], rest[1]])), &rest[2..]),
            127 => panic!("no server frame here is that long"),
            n => (usize::from(n), rest),
        };
        assert!(rest.len() >= len, "truncated server frame");
        if b0 & 0x0f == 0x8 {
            assert!(len >= 2 && len <= 125);
            close = Some(u16::from_be_bytes([rest[0], rest[1]]));
        }
        out = &rest[len..];
    }
    close
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let _ = frame::parse(input, LIMITS.max_message);
    let mut session = Session::new(
        Upgrade {
            target: String::from("fuzz"),
            authorized: true,
        },
        LIMITS,
    );
    let step = usize::from(cut % 17) + 1;
    let mut rest = input;
    let mut sent = Vec::new();
    let mut stalls = 0;
    while !rest.is_empty() && stalls < 3 {
        let n = session.receive(&rest[..step.min(rest.len())]);
        rest = &rest[n..];
        stalls = if n == 0 { stalls + 1 } else { 0 };
        while let Some(message) = session.recv() {
            assert!(message.bytes().len() <= LIMITS.max_message);
            if let Message::Binary(bytes) = &message {
                // Echo, as a console would answer: refused only when it does not fit.
                let fits = bytes.len() <= session.send_space();
                assert_eq!(session.send_binary(bytes), fits);
            }
        }
        // The client reads everything the server sent.
        sent.extend_from_slice(session.output());
        let n = session.output().len();
        session.advance(n);
    }
    let close = check_output(&sent);
    match session.state() {
        CloseState::Closed => {
            let code = close.expect("a closed session sent its close frame");
            assert!(matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999), "{code}");
            assert!(session.is_finished());
        }
        CloseState::Open => assert!(close.is_none()),
        CloseState::CloseSent => unreachable!("the server never closes on its own here"),
    }
});
