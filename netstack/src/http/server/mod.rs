//! The HTTP/1.1 server: a pool of smoltcp TCP sockets on one port, each a small state machine.
//!
//! [`HttpServer`] adds [`ServerConfig::connections`] TCP sockets to the
//! [`NetStack`]'s socket set, all listening on the same port (smoltcp hands each incoming
//! connection to the first listening socket; a socket goes back to listening when its
//! connection ends). Each [`poll`](HttpServer::poll) moves every connection on:
//!
//! ```text
//!   Listening ──accept──▶ Reading ──request complete──▶ Writing ──keep-alive──▶ Reading
//!       ▲                    │ timeout: 408             │ Connection: close / error
//!       │                    ▼                          ▼
//!       └──────────────── (closed) ◀──── Closing: FIN sent, peer's bytes discarded
//! ```
//!
//! - **Reading** collects bytes into a per-connection buffer bounded by the request
//!   [`Limits`] (head, then `Content-Length` body) and runs [`exchange`] on them; the
//!   [`Handler`] is called once the request is complete. A rejected request gets its 4xx with
//!   the JSON error body and the connection closes; other connections are untouched.
//! - **Slow clients**: a request (from the connection's accept, or from the first byte of a
//!   later request) that is not complete within [`ServerConfig::request_timeout`] gets 408
//!   and the connection closes. A keep-alive connection with no request for
//!   [`ServerConfig::idle_timeout`] is closed. A response the client does not read for
//!   `request_timeout`, and a closing connection whose peer does not finish closing within
//!   it, are aborted.
//! - **Pool exhaustion**: when no socket is left listening, the connection idle longest
//!   between keep-alive requests is aborted to make room (clients retry a request on a
//!   reused connection that fails, RFC 9112 §9.3.1). Connections in the middle of a request
//!   are never evicted; they are bounded by the request timeout.
//! - Pipelined requests are answered in order (bytes after a request are kept for the next).
//!
//! - **WebSocket**: a handler's 101 response with an
//!   [`Upgrade`](crate::http::websocket::Upgrade) turns the connection, once the 101 is
//!   sent, into a [`WsSession`] (state `WebSocket`): client bytes go into it, the handler's
//!   [`Handler::websocket`] runs on it every poll, its output goes out. The socket gets TCP
//!   keep-alives so a vanished client is noticed; a client that closes TCP, resets or stops
//!   reading for `request_timeout`, or one not authorized within it, is dropped and the
//!   session with everything it held goes with it.
//!
//! Time comes in as `now` on every call; [`HttpServer::poll_delay`] says when the next
//! timeout is due. [`HttpServer::serve`] polls the interface and the server together.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

use crate::http::request::Limits;
use crate::http::websocket::{CloseState, Session as WsSession, Upgrade, WsLimits, close};
use crate::iface::NetStack;

mod exchange;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
mod transport;

pub use exchange::{Exchange, Handler, Request, exchange};
pub use transport::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};

use crate::tls::{Session as TlsSession, TlsServer};
use transport::{Io, Pumped};

/// What the plain-HTTP port does when the server also serves HTTPS
/// ([`HttpServer::with_tls`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlainHttp {
    /// No plain-HTTP port.
    Off,
    /// Every request gets `301` to the same path over HTTPS; the handler (and so the API
    /// and its token) is never reached over plain HTTP.
    Redirect,
    /// The handler answers over plain HTTP too (insecure: tests only).
    Serve,
}

/// Plain-HTTP sockets beside the HTTPS ones: a few for redirects, more when serving.
const PLAIN_REDIRECT_CONNECTIONS: usize = 8;
const PLAIN_SERVE_CONNECTIONS: usize = 32;

/// What a slot's connections are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Plain HTTP to the handler.
    Plain,
    /// Plain HTTP answered with a redirect to HTTPS on this port.
    Redirect { https_port: u16 },
    /// HTTPS to the handler.
    Tls,
}

/// Server settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The TCP port (default 80).
    pub port: u16,
    /// How many connections can be open at once: one TCP socket each (default 32).
    pub connections: usize,
    /// Receive buffer of each TCP socket, in bytes (default 4 KiB).
    pub rx_buffer: usize,
    /// Send buffer of each TCP socket, in bytes (default 8 KiB).
    pub tx_buffer: usize,
    /// Request head and body limits.
    pub limits: Limits,
    /// How long a request may take to arrive, and a response to be read (default 10 s).
    pub request_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request (default 30 s).
    pub idle_timeout: Duration,
    /// Size limits of each WebSocket connection.
    pub websocket: WsLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: 80,
            connections: 32,
            rx_buffer: 4096,
            tx_buffer: 8192,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            websocket: WsLimits::default(),
        }
    }
}

/// Why [`HttpServer::new`] refused a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Port 0 cannot be listened on.
    #[error("the HTTP port must not be 0")]
    InvalidPort,
    /// No connections, or socket buffers of 0 bytes.
    #[error("the HTTP server needs at least one connection and non-empty buffers")]
    NoCapacity,
    /// Plain HTTP and HTTPS were given the same port.
    #[error(
        "management.http_port and management.https_port are both {0}: give plain HTTP another \
         port or set management.http = \"off\""
    )]
    SamePorts(u16),
}

/// Counters since the server started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Requests answered by the handler.
    pub handled: u64,
    /// Requests the server refused itself (malformed, too large, incomplete).
    pub rejected: u64,
    /// Connections that timed out (408, unread responses, unfinished closes).
    pub timed_out: u64,
    /// Idle keep-alive connections closed (after the idle timeout, or to make room).
    pub idle_closed: u64,
    /// Connections upgraded to WebSocket.
    pub websockets: u64,
    /// WebSocket connections dropped without a close handshake (reset, FIN, stalled).
    pub websockets_dropped: u64,
    /// TLS connections aborted: failed or timed-out handshakes, TLS errors.
    pub tls_aborted: u64,
    /// TLS connections dropped at accept because [`MAX_HANDSHAKES`] were in progress.
    pub tls_refused: u64,
}

/// Where one connection is.
#[derive(Debug)]
enum Conn {
    /// The socket listens (or is about to).
    Listening,
    /// Collecting a request.
    Reading {
        buf: Vec<u8>,
        /// Bytes the request can still use.
        want: usize,
        /// When this request started (accept or first byte); `None` while idle between
        /// keep-alive requests.
        started: Option<Instant>,
        /// When the connection last became idle.
        idle_since: Instant,
        /// `buf` holds bytes [`exchange`] has not seen (pipelined after the last request).
        unseen: bool,
    },
    /// Sending a response.
    Writing {
        out: Vec<u8>,
        sent: usize,
        keep_alive: bool,
        last_progress: Instant,
        /// Bytes received after the request, for the next one.
        next: Vec<u8>,
        /// A 101's WebSocket: what the connection becomes once `out` is sent.
        upgrade: Option<Upgrade>,
    },
    /// A WebSocket connection.
    WebSocket {
        session: alloc::boxed::Box<WsSession>,
        /// When the upgrade happened (the token must come within `request_timeout`).
        opened: Instant,
        /// When bytes last moved either way.
        last_progress: Instant,
    },
    /// FIN sent (or about to be); waiting for the peer to finish.
    Closing { since: Instant },
}

struct Slot {
    handle: SocketHandle,
    conn: Conn,
    port: u16,
    role: Role,
    /// The TLS session of the current connection (`Role::Tls` only).
    tls: Option<alloc::boxed::Box<TlsSession>>,
    /// When the current TLS connection was accepted (for the handshake timeout).
    accepted_at: Instant,
}

/// What one step of a connection did.
#[derive(PartialEq, Eq)]
enum Step {
    Nothing,
    Progress,
    /// The connection moved to another state: step again.
    Moved,
}

/// The HTTP/1.1 server. See the module docs.
pub struct HttpServer {
    config: ServerConfig,
    slots: Vec<Slot>,
    stats: ServerStats,
    tls: Option<TlsServer>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("config", &self.config)
            .field("open", &self.open_connections())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Adds the server's sockets to `sockets` and starts listening.
    pub fn new(
        config: ServerConfig,
        sockets: &mut SocketSet<'static>,
    ) -> Result<HttpServer, ServerError> {
        if config.port == 0 {
            return Err(ServerError::InvalidPort);
        }
        if config.connections == 0 || config.rx_buffer == 0 || config.tx_buffer == 0 {
            return Err(ServerError::NoCapacity);
        }
        let slots = add_slots(
            &config,
            config.port,
            Role::Plain,
            config.connections,
            sockets,
        );
        Ok(HttpServer {
            config,
            slots,
            stats: ServerStats::default(),
            tls: None,
        })
    }

    /// A server for HTTPS on `https_port` with `tls` ([`ServerConfig::connections`] sockets),
    /// and plain HTTP on [`ServerConfig::port`] as `plain` says.
    pub fn with_tls(
        config: ServerConfig,
        tls: TlsServer,
        https_port: u16,
        plain: PlainHttp,
        sockets: &mut SocketSet<'static>,
    ) -> Result<HttpServer, ServerError> {
        if https_port == 0 || (plain != PlainHttp::Off && config.port == 0) {
            return Err(ServerError::InvalidPort);
        }
        if plain != PlainHttp::Off && config.port == https_port {
            return Err(ServerError::SamePorts(https_port));
        }
        if config.connections == 0 || config.rx_buffer == 0 || config.tx_buffer == 0 {
            return Err(ServerError::NoCapacity);
        }
        let mut slots = add_slots(&config, https_port, Role::Tls, config.connections, sockets);
        match plain {
            PlainHttp::Off => {}
            PlainHttp::Redirect => slots.extend(add_slots(
                &config,
                config.port,
                Role::Redirect { https_port },
                PLAIN_REDIRECT_CONNECTIONS,
                sockets,
            )),
            PlainHttp::Serve => slots.extend(add_slots(
                &config,
                config.port,
                Role::Plain,
                PLAIN_SERVE_CONNECTIONS,
                sockets,
            )),
        }
        Ok(HttpServer {
            config,
            slots,
            stats: ServerStats::default(),
            tls: Some(tls),
        })
    }

    /// The TLS settings, when serving HTTPS.
    pub fn tls(&self) -> Option<&TlsServer> {
        self.tls.as_ref()
    }

    /// Serves `tls` (a replaced certificate) to connections accepted from now on; open
    /// ones keep their session. Does nothing on a server without HTTPS.
    pub fn set_tls(&mut self, tls: TlsServer) {
        if self.tls.is_some() {
            self.tls = Some(tls);
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Connections currently open (not listening).
    pub fn open_connections(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !matches!(s.conn, Conn::Listening))
            .count()
    }

    /// Moves every connection on at time `now`: accepts, reads, calls `handler` for complete
    /// requests, writes, times out, closes. Call after [`NetStack::poll`]; then poll the
    /// stack again to send what was written (or use [`serve`](Self::serve)). Returns whether
    /// anything happened.
    ///
    /// `sockets` must be the set passed to [`new`](Self::new).
    pub fn poll<H: Handler + ?Sized>(
        &mut self,
        now: Instant,
        sockets: &mut SocketSet<'_>,
        handler: &mut H,
    ) -> bool {
        let mut active = false;
        let mut handshakes = self
            .slots
            .iter()
            .filter(|s| transport::handshaking(&s.tls))
            .count();
        for slot in &mut self.slots {
            let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
            // A few steps let a connection go e.g. from accepted to answered in one poll.
            for _ in 0..4 {
                if let (Role::Tls, Some(tls)) = (slot.role, &self.tls) {
                    let was_handshaking = transport::handshaking(&slot.tls);
                    let pumped = transport::pump(
                        tls,
                        socket,
                        &mut slot.tls,
                        &mut slot.accepted_at,
                        now,
                        handshakes,
                    );
                    match pumped {
                        Pumped::Aborted => self.stats.tls_aborted += 1,
                        Pumped::Refused => self.stats.tls_refused += 1,
                        Pumped::Progress => active = true,
                        Pumped::Nothing => {}
                    }
                    match (was_handshaking, transport::handshaking(&slot.tls)) {
                        (false, true) => handshakes += 1,
                        (true, false) => handshakes = handshakes.saturating_sub(1),
                        _ => {}
                    }
                    if matches!(pumped, Pumped::Aborted | Pumped::Refused) {
                        // Listen again only at the next poll: the stack must send the RST
                        // first (listening at once would drop it, leaving the client to
                        // time out).
                        if transport::handshaking(&slot.tls) {
                            handshakes = handshakes.saturating_sub(1);
                        }
                        slot.tls = None;
                        slot.conn = Conn::Listening;
                        active = true;
                        break;
                    }
                }
                let mut io = Io {
                    socket: &mut *socket,
                    tls: slot.tls.as_deref_mut(),
                };
                let step = match slot.role {
                    Role::Redirect { https_port } => step(
                        &mut slot.conn,
                        &mut io,
                        now,
                        slot.port,
                        &self.config,
                        &mut |req: &Request<'_>| redirect(req, https_port),
                        &mut self.stats,
                    ),
                    Role::Plain | Role::Tls => step(
                        &mut slot.conn,
                        &mut io,
                        now,
                        slot.port,
                        &self.config,
                        handler,
                        &mut self.stats,
                    ),
                };
                if matches!(slot.conn, Conn::Listening) {
                    if transport::handshaking(&slot.tls) {
                        handshakes = handshakes.saturating_sub(1);
                    }
                    slot.tls = None;
                }
                active |= step != Step::Nothing;
                if step != Step::Moved {
                    break;
                }
            }
        }
        active | self.make_room(sockets)
    }

    /// How long until the next timeout is due; `None` with no open connection.
    pub fn poll_delay(&self, now: Instant) -> Option<Duration> {
        let timeout = self.config.request_timeout;
        self.slots
            .iter()
            .filter_map(|slot| match &slot.conn {
                Conn::Listening => None,
                Conn::Reading {
                    started: Some(start),
                    ..
                } => Some(*start + timeout),
                Conn::Reading {
                    started: None,
                    idle_since,
                    ..
                } => Some(*idle_since + self.config.idle_timeout),
                Conn::Writing { last_progress, .. } => Some(*last_progress + timeout),
                Conn::WebSocket {
                    session,
                    opened,
                    last_progress,
                } => websocket_deadline(session, *opened, *last_progress, timeout),
                Conn::Closing { since } => Some(*since + timeout),
            })
            .min()
            .map(|due| if due > now { due - now } else { Duration::ZERO })
    }

    /// Polls `stack` and the server until the server has nothing more to send: what the
    /// kernel's network loop calls whenever the NIC has frames or a delay has passed.
    /// Returns whether anything happened; when not, sleep for
    /// [`serve_delay`](Self::serve_delay).
    pub fn serve<D: Device + ?Sized, H: Handler + ?Sized>(
        &mut self,
        now: Instant,
        stack: &mut NetStack,
        device: &mut D,
        handler: &mut H,
    ) -> bool {
        let mut any = false;
        // Bounded: a flood of frames cannot keep the boot CPU here.
        for _ in 0..8 {
            let net = stack.poll(now, device);
            let http = self.poll(now, stack.sockets_mut(), handler);
            any |= net | http;
            if !http {
                break;
            }
        }
        any
    }

    /// The sooner of [`NetStack::poll_delay`] and [`poll_delay`](Self::poll_delay).
    pub fn serve_delay(&self, now: Instant, stack: &mut NetStack) -> Option<Duration> {
        match (stack.poll_delay(now), self.poll_delay(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When every socket is taken, aborts the connection idle longest between keep-alive
    /// requests so that one socket listens again.
    fn make_room(&mut self, sockets: &mut SocketSet<'_>) -> bool {
        let listening = self.slots.iter().any(|slot| {
            matches!(slot.conn, Conn::Listening)
                && sockets.get::<tcp::Socket>(slot.handle).is_listening()
        });
        if listening {
            return false;
        }
        let idle = self
            .slots
            .iter_mut()
            .filter_map(|slot| match &slot.conn {
                Conn::Reading {
                    started: None,
                    idle_since,
                    buf,
                    ..
                } if buf.is_empty() => Some((*idle_since, slot)),
                _ => None,
            })
            .min_by_key(|(since, _)| *since);
        let Some((_, slot)) = idle else {
            return false;
        };
        let socket = sockets.get_mut::<tcp::Socket>(slot.handle);
        socket.abort();
        // Cannot fail: an aborted socket is closed, and the port is not 0.
        let _ = socket.listen(slot.port);
        slot.conn = Conn::Listening;
        slot.tls = None;
        self.stats.idle_closed += 1;
        true
    }
}

/// One step of one connection.
fn step<H: Handler + ?Sized>(
    conn: &mut Conn,
    socket: &mut Io<'_, '_>,
    now: Instant,
    port: u16,
    config: &ServerConfig,
    handler: &mut H,
    stats: &mut ServerStats,
) -> Step {
    match conn {
        Conn::Listening => {
            if !socket.is_open() {
                // A WebSocket may have set these; a new connection starts without.
                socket.set_keep_alive(None);
                socket.set_timeout(None);
                // Closed or TIME-WAIT (no need to wait out 2MSL: the peer closed, or we
                // aborted). Cannot fail: the socket is not open and the port is not 0.
                let _ = socket.listen(port);
                return Step::Nothing;
            }
            match socket.state() {
                tcp::State::Listen | tcp::State::SynReceived => Step::Nothing,
                _ => {
                    stats.accepted += 1;
                    *conn = Conn::Reading {
                        buf: Vec::new(),
                        want: config.limits.max_head_bytes,
                        started: Some(now),
                        idle_since: now,
                        unseen: false,
                    };
                    Step::Moved
                }
            }
        }
        Conn::Reading {
            buf,
            want,
            started,
            idle_since,
            unseen,
        } => {
            if !socket.is_open() {
                *conn = Conn::Listening;
                return Step::Moved;
            }
            let got = receive(socket, buf, want);
            if got && started.is_none() {
                *started = Some(now);
            }
            if got || (*unseen && !buf.is_empty()) {
                *unseen = false;
                let mut handled = false;
                let mut counted = |req: &Request<'_>| {
                    handled = true;
                    handler.handle(req)
                };
                match exchange(buf, &config.limits, &mut counted) {
                    Exchange::Incomplete { want: more } => *want = more,
                    Exchange::Respond {
                        response,
                        consumed,
                        keep_alive,
                        head_request,
                    } => {
                        if handled {
                            stats.handled += 1;
                        } else {
                            stats.rejected += 1;
                        }
                        let next = buf.split_off(consumed.min(buf.len()));
                        let upgrade = response.upgrade.clone().filter(|_| response.status == 101);
                        *conn = Conn::Writing {
                            out: response.encode(keep_alive, head_request),
                            sent: 0,
                            keep_alive: keep_alive || upgrade.is_some(),
                            last_progress: now,
                            next,
                            upgrade,
                        };
                        return Step::Moved;
                    }
                }
            }
            if !socket.may_recv() {
                // The peer has finished sending: a partial request can never complete.
                if buf.is_empty() {
                    socket.close();
                    *conn = Conn::Closing { since: now };
                } else {
                    stats.rejected += 1;
                    *conn = server_error(
                        400,
                        "connection closed before the request was complete",
                        now,
                    );
                }
                return Step::Moved;
            }
            match *started {
                Some(start) if now >= start + config.request_timeout => {
                    stats.timed_out += 1;
                    let secs = config.request_timeout.secs();
                    let message = alloc::format!("request not complete within {secs} s");
                    *conn = server_error(408, &message, now);
                    Step::Moved
                }
                None if now >= *idle_since + config.idle_timeout => {
                    stats.idle_closed += 1;
                    socket.close();
                    *conn = Conn::Closing { since: now };
                    Step::Moved
                }
                _ if got => Step::Progress,
                _ => Step::Nothing,
            }
        }
        Conn::Writing {
            out,
            sent,
            keep_alive,
            last_progress,
            next,
            upgrade,
        } => {
            if !socket.is_open() || !socket.may_send() {
                // Reset by the peer, or it closed its receive side: nobody reads this.
                socket.abort();
                *conn = Conn::Listening;
                return Step::Moved;
            }
            let mut progress = false;
            if *sent < out.len()
                && let Ok(n @ 1..) = socket.send_slice(&out[*sent..])
            {
                *sent += n;
                *last_progress = now;
                progress = true;
            }
            if *sent >= out.len() {
                if let Some(upgrade) = upgrade.take() {
                    stats.websockets += 1;
                    let mut session = WsSession::new(upgrade, config.websocket);
                    // Frames the client sent right behind its upgrade request.
                    session.receive(next);
                    // Keep-alives find a client that vanished without a FIN; unanswered
                    // data or probes abort the socket.
                    socket.set_keep_alive(Some(Duration::from_secs(15)));
                    socket.set_timeout(Some(Duration::from_secs(60)));
                    *conn = Conn::WebSocket {
                        session: alloc::boxed::Box::new(session),
                        opened: now,
                        last_progress: now,
                    };
                } else if *keep_alive {
                    let buf = core::mem::take(next);
                    *conn = Conn::Reading {
                        want: config.limits.max_head_bytes.saturating_sub(buf.len()),
                        started: (!buf.is_empty()).then_some(now),
                        idle_since: now,
                        unseen: !buf.is_empty(),
                        buf,
                    };
                } else {
                    socket.close();
                    *conn = Conn::Closing { since: now };
                }
                return Step::Moved;
            }
            if now >= *last_progress + config.request_timeout {
                stats.timed_out += 1;
                socket.abort();
                *conn = Conn::Listening;
                return Step::Moved;
            }
            if progress {
                Step::Progress
            } else {
                Step::Nothing
            }
        }
        Conn::WebSocket {
            session,
            opened,
            last_progress,
        } => websocket_step(
            conn_ws(session, opened, last_progress),
            socket,
            now,
            config,
            handler,
            stats,
        )
        .unwrap_or_else(|next| {
            *conn = next;
            Step::Moved
        }),
        Conn::Closing { since } => {
            // Discard what the peer still sends (the rest of a refused body), so its window
            // stays open until it has read the response and our FIN.
            let mut discarded = false;
            while socket.can_recv() {
                match socket.recv(|data| (data.len(), data.len())) {
                    Ok(1..) => discarded = true,
                    _ => break,
                }
            }
            if !socket.is_open() {
                *conn = Conn::Listening;
                return Step::Moved;
            }
            if now >= *since + config.request_timeout {
                stats.timed_out += 1;
                socket.abort();
                *conn = Conn::Listening;
                return Step::Moved;
            }
            if discarded {
                Step::Progress
            } else {
                Step::Nothing
            }
        }
    }
}

/// Reads up to `want` bytes into `buf`. Returns whether any arrived.
fn receive(socket: &mut Io<'_, '_>, buf: &mut Vec<u8>, want: &mut usize) -> bool {
    let mut got = false;
    // Twice at most: the receive buffer is a ring, so its data may come in two pieces.
    while *want > 0 && socket.can_recv() {
        let n = socket
            .recv(|data| {
                let n = data.len().min(*want);
                buf.extend_from_slice(&data[..n]);
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        *want -= n;
        got = true;
    }
    got
}

/// The answer on the plain-HTTP port in [`PlainHttp::Redirect`]: `301` to the same host and
/// path over HTTPS (without the query's token ever reaching the API).
fn redirect(req: &Request<'_>, https_port: u16) -> crate::http::response::Response {
    let host = req
        .headers
        .iter()
        .find(|(name, _)| name == "host")
        .map(|(_, value)| host_without_port(value))
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'/'));
    let Some(host) = host else {
        return crate::http::response::Response::error(
            400,
            "plain HTTP only redirects to HTTPS here, and this request has no Host header to \
             redirect to: use https://",
        );
    };
    let port = if https_port == 443 {
        alloc::string::String::new()
    } else {
        alloc::format!(":{https_port}")
    };
    let query = req
        .query
        .map(|q| alloc::format!("?{q}"))
        .unwrap_or_default();
    let location = alloc::format!("https://{host}{port}{}{query}", req.path);
    crate::http::response::Response::error(301, "the management API is served over HTTPS")
        .with_header("location", &location)
}

/// `host[:port]` or `[v6]:port` → the host part.
fn host_without_port(value: &str) -> &str {
    let value = value.trim();
    if let Some(end) = value.find(']') {
        return &value[..=end];
    }
    value.split(':').next().unwrap_or(value)
}

fn add_slots(
    config: &ServerConfig,
    port: u16,
    role: Role,
    count: usize,
    sockets: &mut SocketSet<'static>,
) -> Vec<Slot> {
    (0..count)
        .map(|_| {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; config.rx_buffer]),
                tcp::SocketBuffer::new(vec![0; config.tx_buffer]),
            );
            // Responses are written whole: Nagle would only hold back their last segment.
            socket.set_nagle_enabled(false);
            // Cannot fail: the socket is new and the port is not 0.
            let _ = socket.listen(port);
            Slot {
                handle: sockets.add(socket),
                conn: Conn::Listening,
                port,
                role,
                tls: None,
                accepted_at: Instant::ZERO,
            }
        })
        .collect()
}

/// A response of the server's own that closes the connection.
fn server_error(status: u16, message: &str, now: Instant) -> Conn {
    let response = crate::http::response::Response::error(status, message);
    Conn::Writing {
        out: response.encode(false, false),
        sent: 0,
        keep_alive: false,
        last_progress: now,
        next: Vec::new(),
        upgrade: None,
    }
}

/// The parts of a `Conn::WebSocket`, borrowed.
struct WsConn<'a> {
    session: &'a mut WsSession,
    opened: Instant,
    last_progress: &'a mut Instant,
}

fn conn_ws<'a>(
    session: &'a mut alloc::boxed::Box<WsSession>,
    opened: &Instant,
    last_progress: &'a mut Instant,
) -> WsConn<'a> {
    WsConn {
        session,
        opened: *opened,
        last_progress,
    }
}

/// When a WebSocket connection is due a check: the token's deadline, or the client's
/// while output waits or the close handshake runs; `None` for an idle open one.
fn websocket_deadline(
    session: &WsSession,
    opened: Instant,
    last_progress: Instant,
    timeout: Duration,
) -> Option<Instant> {
    if session.state() == CloseState::Open && !session.authorized() {
        Some(opened + timeout)
    } else if !session.output().is_empty() || session.state() != CloseState::Open {
        Some(last_progress + timeout)
    } else {
        None
    }
}

/// One step of a WebSocket connection: `Err(next state)` when the connection leaves it.
fn websocket_step<H: Handler + ?Sized>(
    ws: WsConn<'_>,
    socket: &mut Io<'_, '_>,
    now: Instant,
    config: &ServerConfig,
    handler: &mut H,
    stats: &mut ServerStats,
) -> Result<Step, Conn> {
    let WsConn {
        session,
        opened,
        last_progress,
    } = ws;
    let mut progress = false;
    // Twice at most, as in `receive`: the receive buffer is a ring.
    for _ in 0..2 {
        if !socket.can_recv() || session.receive_space() == 0 {
            break;
        }
        match socket.recv(|data| {
            let n = session.receive(data);
            (n, n)
        }) {
            Ok(1..) => progress = true,
            _ => break,
        }
    }
    if session.state() == CloseState::Open
        && !session.authorized()
        && now >= opened + config.request_timeout
    {
        let secs = config.request_timeout.secs();
        let reason = alloc::format!("no token within {secs} s");
        session.close(close::POLICY, &reason);
    }
    let before = session.output().len();
    handler.websocket(session);
    progress |= session.output().len() != before;
    if !session.output().is_empty()
        && let Ok(n @ 1..) = socket.send_slice(session.output())
    {
        session.advance(n);
        progress = true;
    }
    if progress {
        *last_progress = now;
    }
    if session.is_finished() {
        socket.close();
        return Err(Conn::Closing { since: now });
    }
    let gone = !socket.is_open() || !socket.may_recv() || !socket.may_send();
    let stalled = (!session.output().is_empty() || session.state() != CloseState::Open)
        && now >= *last_progress + config.request_timeout;
    if gone || stalled {
        // The client vanished (mid-frame, perhaps), stopped reading, or never finished
        // the close handshake: drop it and everything the session held.
        stats.websockets_dropped += 1;
        if stalled {
            stats.timed_out += 1;
        }
        socket.abort();
        return Err(Conn::Listening);
    }
    Ok(if progress {
        Step::Progress
    } else {
        Step::Nothing
    })
}
