//! `GET /api/v1/vms/{name}/console/ws`: a VM's serial console over a WebSocket.
//!
//! Browsers cannot set headers on a WebSocket, so the token comes as the first text message,
//! `{"token":"..."}`, after the upgrade; a client that can sends `Authorization: Bearer` on
//! the upgrade request instead. Until a valid token is in, nothing of the guest flows and
//! nothing typed reaches it: a wrong token closes with 1008, and so does none within the
//! server's request timeout. Then the server sends the console's kept history followed by
//! live output as binary messages, and every client message (binary or text) is typed to the
//! guest, as `POST /api/v1/vms/{name}/console` does. Each connection keeps its own position
//! in the output, so several clients can watch one console; a client that goes away takes
//! nothing with it but its position.
//!
//! Without a token on the upgrade, the VM's existence is checked only after the token
//! message (closing with 1008 if it does not exist), so the answer does not tell clients
//! without a token which VMs exist.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{ApiError, Management, Router, VmKey};
use crate::http::response::Response;
use crate::http::server::Request;
use crate::http::websocket::{CloseState, Message, Session, Upgrade, close, handshake};

/// Most console bytes sent in one message.
const MAX_CHUNK: usize = 4096;

/// The upgrade request: 101 with the session's [`Upgrade`], or the HTTP error.
pub fn upgrade<M: Management + ?Sized>(
    router: &Router,
    mgmt: &mut M,
    segment: &str,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let key = VmKey::parse(segment).map_err(|message| Response::error(400, &message))?;
    let authorized = match req.bearer_token {
        Some(_) => {
            router.authorize(req)?;
            if mgmt.vm(&key).is_none() {
                return Err(Response::error(404, &format!("no VM named {key}")));
            }
            true
        }
        None => false,
    };
    let accept = handshake::check(req).map_err(|e| e.response())?;
    Ok(
        handshake::switching_protocols(&accept).with_upgrade(Upgrade {
            target: String::from(segment),
            authorized,
        }),
    )
}

/// The token of a `{"token":"..."}` message.
fn token_message(message: &Message) -> Option<String> {
    let Message::Text(text) = message else {
        return None;
    };
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("token")?.as_str().map(String::from)
}

/// Runs one console session: the token, then typed bytes in and console output out.
pub fn serve<M: Management + ?Sized>(router: &Router, mgmt: &mut M, session: &mut Session) {
    if session.state() != CloseState::Open {
        // Closing: what the client still sends is of no use.
        while session.recv().is_some() {}
        return;
    }
    let target = String::from(session.target());
    let Ok(key) = VmKey::parse(&target) else {
        // The upgrade checked it; a target from elsewhere is a bug.
        session.close(close::INTERNAL, "session without a VM");
        return;
    };
    if !session.authorized() {
        let Some(message) = session.recv() else {
            return;
        };
        let valid = token_message(&message).is_some_and(|token| router.token_ok(&token));
        if !valid {
            session.close(
                close::POLICY,
                "invalid token: send {\"token\":\"<API token>\"} as the first message",
            );
            return;
        }
        if mgmt.vm(&key).is_none() {
            session.close(close::POLICY, &format!("no VM named {key}"));
            return;
        }
        session.authorize();
    }
    while let Some(message) = session.recv() {
        match mgmt.console_input(&key, message.bytes()) {
            // Bytes beyond what the guest's queue takes are dropped, as on the POST route.
            // Typed while the VM is not running: dropped too, as a UART with nobody behind.
            Ok(_) | Err(ApiError::Conflict(_)) => {}
            Err(err) => {
                session.close(close::GOING_AWAY, err.message());
                return;
            }
        }
    }
    send_output(mgmt, &key, session);
}

/// Sends what the console has beyond the session's cursor, as much as fits.
fn send_output<M: Management + ?Sized>(mgmt: &mut M, key: &VmKey<'_>, session: &mut Session) {
    // Bounded: each round sends a chunk or stops.
    for _ in 0..8 {
        let space = session.send_space().min(MAX_CHUNK);
        if space == 0 {
            return;
        }
        let (bytes, next) = match mgmt.console_bytes(key, session.cursor) {
            Ok(chunk) => chunk,
            Err(err) => {
                session.close(close::GOING_AWAY, err.message());
                return;
            }
        };
        if next < session.cursor {
            // The VM was started again: its console counts from 0.
            session.cursor = 0;
            continue;
        }
        if bytes.is_empty() {
            return;
        }
        let start = next.saturating_sub(bytes.len() as u64);
        let n = bytes.len().min(space);
        if !session.send_binary(&bytes[..n]) {
            return;
        }
        session.cursor = start + n as u64;
    }
}

/// Console output as raw bytes, from [`Management::console`] for kernels that only have
/// the text form (the kernel overrides [`Management::console_bytes`] with the raw bytes).
pub(crate) fn bytes_from_chunk(chunk: super::ConsoleChunk) -> (Vec<u8>, u64) {
    (chunk.data.into_bytes(), chunk.next)
}
