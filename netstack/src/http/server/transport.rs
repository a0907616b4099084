//! The per-connection transport under the HTTP state machine: plain TCP, or TLS through a
//! [`Session`]. [`Io`] has the names of the `tcp::Socket` methods the state machine uses, so
//! `step` (and the WebSocket layer above it) reads and writes plaintext either way; the
//! ciphertext moves between socket and session in [`pump`], before and after each step.

use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use crate::tls::{Session, TlsServer};

/// Handshakes in progress at once; connections past it are dropped at accept, so a
/// handshake flood cannot take the CPU from the console and the VMs.
pub const MAX_HANDSHAKES: usize = 64;
/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection's socket, seen through its TLS session if it has one.
pub struct Io<'s, 'a> {
    pub(super) socket: &'s mut tcp::Socket<'a>,
    pub(super) tls: Option<&'s mut Session>,
}

impl Io<'_, '_> {
    pub fn is_open(&self) -> bool {
        self.socket.is_open()
    }

    pub fn state(&self) -> tcp::State {
        self.socket.state()
    }

    pub fn listen(&mut self, port: u16) -> Result<(), tcp::ListenError> {
        self.socket.listen(port)
    }

    /// TCP keep-alive on the socket itself (TLS or not: it probes the peer, not the data).
    pub fn set_keep_alive(&mut self, interval: Option<Duration>) {
        self.socket.set_keep_alive(interval);
    }

    /// The socket's TCP timeout (abort after this long without an acknowledgement).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.socket.set_timeout(timeout);
    }

    pub fn abort(&mut self) {
        self.socket.abort();
    }

    /// Whether more request bytes can still come.
    pub fn may_recv(&mut self) -> bool {
        match self.tls.as_deref_mut() {
            None => self.socket.may_recv(),
            Some(tls) => {
                !tls.plaintext().is_empty() || (self.socket.may_recv() && !tls.peer_closed())
            }
        }
    }

    pub fn may_send(&self) -> bool {
        self.socket.may_send() && self.tls.as_deref().is_none_or(|t| t.failure().is_none())
    }

    pub fn can_recv(&mut self) -> bool {
        match self.tls.as_deref_mut() {
            None => self.socket.can_recv(),
            Some(tls) => !tls.plaintext().is_empty(),
        }
    }

    /// Like `tcp::Socket::recv`, over plaintext.
    pub fn recv<R>(
        &mut self,
        f: impl FnOnce(&mut [u8]) -> (usize, R),
    ) -> Result<R, tcp::RecvError> {
        match self.tls.as_deref_mut() {
            None => self.socket.recv(f),
            Some(tls) => {
                let buf = tls.plaintext();
                let (n, r) = f(&mut buf[..]);
                buf.drain(..n.min(buf.len()));
                Ok(r)
            }
        }
    }

    /// Like `tcp::Socket::send_slice`, of plaintext (encrypted first with TLS).
    pub fn send_slice(&mut self, data: &[u8]) -> Result<usize, tcp::SendError> {
        match self.tls.as_deref_mut() {
            None => self.socket.send_slice(data),
            Some(tls) => {
                let n = tls.encrypt(data);
                flush(self.socket, tls);
                Ok(n)
            }
        }
    }

    /// Closes the sending side (with TLS: after a close_notify and all pending ciphertext).
    pub fn close(&mut self) {
        match self.tls.as_deref_mut() {
            None => self.socket.close(),
            Some(tls) => {
                tls.close_notify();
                flush(self.socket, tls);
                finish_close(self.socket, tls);
            }
        }
    }
}

/// Sends what the socket takes of the session's pending ciphertext.
fn flush(socket: &mut tcp::Socket<'_>, tls: &mut Session) {
    let out = tls.pending_ciphertext();
    if out.is_empty() || !socket.may_send() {
        return;
    }
    if let Ok(n @ 1..) = socket.send_slice(out) {
        out.drain(..n);
    }
}

/// Sends the FIN once a queued close_notify and everything before it left.
fn finish_close(socket: &mut tcp::Socket<'_>, tls: &mut Session) {
    if tls.close_queued()
        && tls.pending_ciphertext().is_empty()
        && matches!(
            socket.state(),
            tcp::State::Established | tcp::State::CloseWait
        )
    {
        socket.close();
    }
}

/// What [`pump`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pumped {
    Nothing,
    Progress,
    /// The connection was aborted (handshake failed, timed out, or over the cap).
    Aborted,
    /// A new connection over [`MAX_HANDSHAKES`] was dropped.
    Refused,
}

/// Moves ciphertext between `socket` and the slot's session: starts a session for a newly
/// accepted connection, feeds it what arrived, sends what it produced, and aborts
/// connections whose handshake failed or takes longer than [`HANDSHAKE_TIMEOUT`].
/// `handshakes` is the number of sessions still handshaking (for the cap).
pub fn pump(
    server: &TlsServer,
    socket: &mut tcp::Socket<'_>,
    slot: &mut Option<alloc::boxed::Box<Session>>,
    accepted_at: &mut Instant,
    now: Instant,
    handshakes: usize,
) -> Pumped {
    if slot.is_none() {
        let accepted = socket.is_open()
            && !matches!(socket.state(), tcp::State::Listen | tcp::State::SynReceived);
        if !accepted {
            return Pumped::Nothing;
        }
        if handshakes >= MAX_HANDSHAKES {
            socket.abort();
            return Pumped::Refused;
        }
        match server.session() {
            Ok(session) => *slot = Some(alloc::boxed::Box::new(session)),
            Err(_) => {
                socket.abort();
                return Pumped::Aborted;
            }
        }
        *accepted_at = now;
    }
    let Some(tls) = slot.as_deref_mut() else {
        return Pumped::Nothing;
    };
    let mut progress = false;
    while socket.can_recv() && tls.ciphertext_room() > 0 {
        let taken = socket
            .recv(|data| {
                let n = tls.take_ciphertext(data);
                (n, n)
            })
            .unwrap_or(0);
        if taken == 0 {
            break;
        }
        progress = true;
    }
    let before = tls.pending_ciphertext().len();
    flush(socket, tls);
    progress |= tls.pending_ciphertext().len() != before;
    finish_close(socket, tls);
    let stalled = !tls.is_established() && now >= *accepted_at + HANDSHAKE_TIMEOUT;
    if (tls.failure().is_some() && tls.pending_ciphertext().is_empty()) || stalled {
        socket.abort();
        return Pumped::Aborted;
    }
    if progress {
        Pumped::Progress
    } else {
        Pumped::Nothing
    }
}

/// Whether a slot's session is still handshaking.
pub fn handshaking(slot: &Option<alloc::boxed::Box<Session>>) -> bool {
    slot.as_deref().is_some_and(|s| !s.is_established())
}
