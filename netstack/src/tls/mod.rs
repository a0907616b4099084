//! TLS for the management plane: rustls' unbuffered server API over Keel's own crypto
//! provider ([`provider`]), one [`Session`] per HTTPS connection.
//!
//! A [`Session`] sits between a TCP socket and the HTTP server's byte buffers: ciphertext from
//! the socket goes in with [`Session::take_ciphertext`], comes out decrypted in
//! [`Session::plaintext`]; plaintext the server writes goes in with [`Session::encrypt`] and
//! leaves as ciphertext in [`Session::pending_ciphertext`]. The HTTP server (and the WebSocket
//! layer above it) never sees a record.
//!
//! Memory per connection is bounded: at most one full record of ciphertext waits to be
//! processed ([`MAX_INCOMING`]), decrypted bytes stop being produced past
//! [`MAX_PLAINTEXT`] until the server reads them, and [`Session::encrypt`] takes no more while
//! [`MAX_OUTGOING`] bytes of ciphertext wait for the socket.

use alloc::sync::Arc;
use alloc::vec::Vec;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

pub mod cert;
pub mod provider;
pub mod random;

pub use cert::{CertError, Identity};

/// A TLS record's largest ciphertext (RFC 8446 §5.2: 2^14 + 256, plus the 5-byte header).
pub const MAX_INCOMING: usize = 16_384 + 256 + 5;
/// Decrypted bytes held for the server before reading more ciphertext.
pub const MAX_PLAINTEXT: usize = 16_384;
/// Ciphertext waiting for the socket before [`Session::encrypt`] takes no more.
pub const MAX_OUTGOING: usize = 32_768;
/// Plaintext encrypted per [`Session::encrypt`] call (one record).
const RECORD_PLAINTEXT: usize = 16_384;

/// Wall-clock time for certificate checks: seconds since 1970, `None` if unknown.
pub type Clock = fn() -> Option<u64>;

/// Why TLS could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate or key was refused by rustls.
    #[error("the TLS certificate or key was refused: {0}")]
    Certificate(String),
    /// The provider could not be set up (a Keel bug).
    #[error("TLS set-up failed: {0}")]
    Setup(String),
}

use alloc::string::String;

#[derive(Debug)]
struct KernelTime(Clock);

impl rustls::time_provider::TimeProvider for KernelTime {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        (self.0)().map(|secs| {
            rustls::pki_types::UnixTime::since_unix_epoch(core::time::Duration::from_secs(secs))
        })
    }
}

/// The server side of TLS: certificate, key and settings shared by every [`Session`].
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<rustls::ServerConfig>,
    fingerprint: String,
}

impl core::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsServer")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// TLS 1.3 with `identity`, time from `clock`.
    pub fn new(identity: &Identity, clock: Clock) -> Result<TlsServer, TlsError> {
        let config = rustls::ServerConfig::builder_with_details(
            Arc::new(provider::provider()),
            Arc::new(KernelTime(clock)),
        )
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(alloc::format!("{e}")))?
        .with_no_client_auth()
        .with_single_cert(
            alloc::vec![rustls::pki_types::CertificateDer::from(
                identity.cert_der.clone()
            )],
            rustls::pki_types::PrivateKeyDer::Pkcs8(identity.key_der.clone().into()),
        )
        .map_err(|e| TlsError::Certificate(alloc::format!("{e}")))?;
        let mut config = config;
        // No resumption: a ticket key would need rotating and storing; full handshakes are
        // cheap enough for a management plane.
        config.send_tls13_tickets = 0;
        config.max_early_data_size = 0;
        Ok(TlsServer {
            config: Arc::new(config),
            fingerprint: identity.fingerprint(),
        })
    }

    /// The certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A session for a new connection.
    pub fn session(&self) -> Result<Session, TlsError> {
        let conn = UnbufferedServerConnection::new(self.config.clone())
            .map_err(|e| TlsError::Setup(alloc::format!("{e}")))?;
        Ok(Session {
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plaintext: Vec::new(),
            established: false,
            peer_closed: false,
            failed: None,
            close_queued: false,
        })
    }
}

/// One TLS connection's state and buffers. See the module docs.
pub struct Session {
    conn: UnbufferedServerConnection,
    incoming: Vec<u8>,
    outgoing: Vec<u8>,
    plaintext: Vec<u8>,
    established: bool,
    peer_closed: bool,
    failed: Option<rustls::Error>,
    close_queued: bool,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("established", &self.established)
            .field("peer_closed", &self.peer_closed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// How many ciphertext bytes [`take_ciphertext`](Self::take_ciphertext) accepts now.
    pub fn ciphertext_room(&self) -> usize {
        if self.plaintext.len() >= MAX_PLAINTEXT || self.failed.is_some() {
            0
        } else {
            MAX_INCOMING.saturating_sub(self.incoming.len())
        }
    }

    /// Takes ciphertext from the socket (up to [`ciphertext_room`](Self::ciphertext_room))
    /// and processes it; returns how many bytes were taken.
    pub fn take_ciphertext(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.ciphertext_room());
        self.incoming.extend_from_slice(&data[..n]);
        self.process();
        n
    }

    /// Processes buffered records: handshake messages (answers go to the outgoing buffer),
    /// application data (to [`plaintext`](Self::plaintext)), alerts.
    pub fn process(&mut self) {
        // Each round consumes a record or produces output; the bound only guards the loop.
        for _ in 0..64 {
            if self.failed.is_some() || self.plaintext.len() >= MAX_PLAINTEXT {
                return;
            }
            let Session {
                conn,
                incoming,
                outgoing,
                plaintext,
                ..
            } = self;
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming);
            let mut again = true;
            match state {
                Err(e) => {
                    self.failed = Some(e);
                    again = false;
                }
                Ok(ConnectionState::ReadTraffic(mut read)) => {
                    while let Some(record) = read.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                plaintext.extend_from_slice(record.payload);
                            }
                            Err(e) => {
                                self.failed = Some(e);
                                break;
                            }
                        }
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let start = outgoing.len();
                    outgoing.resize(start + 2048, 0);
                    match encode.encode(&mut outgoing[start..]) {
                        Ok(n) => outgoing.truncate(start + n),
                        Err(EncodeError::InsufficientSize(size)) => {
                            outgoing.resize(start + size.required_size, 0);
                            match encode.encode(&mut outgoing[start..]) {
                                Ok(n) => outgoing.truncate(start + n),
                                Err(_) => {
                                    outgoing.truncate(start);
                                    self.failed = Some(rustls::Error::EncryptError);
                                }
                            }
                        }
                        Err(_) => outgoing.truncate(start),
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // The bytes are in `outgoing`; the caller sends them.
                    transmit.done();
                }
                Ok(ConnectionState::BlockedHandshake) => again = false,
                Ok(ConnectionState::WriteTraffic(_)) => {
                    self.established = true;
                    again = false;
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    self.peer_closed = true;
                    again = false;
                }
                Ok(ConnectionState::ReadEarlyData(_)) | Ok(_) => {
                    // Early data is off (max_early_data_size 0); anything else is unknown.
                    self.failed = Some(rustls::Error::General("unexpected TLS state".into()));
                    again = false;
                }
            }
            let discard = discard.min(self.incoming.len());
            self.incoming.drain(..discard);
            if !again {
                return;
            }
        }
    }

    /// Encrypts up to one record of `data` once the handshake is done and the outgoing
    /// buffer has room; returns how many bytes it took (0 while handshaking or full).
    pub fn encrypt(&mut self, data: &[u8]) -> usize {
        if !self.established
            || self.failed.is_some()
            || self.close_queued
            || self.outgoing.len() >= MAX_OUTGOING
            || data.is_empty()
        {
            return 0;
        }
        let chunk = &data[..data.len().min(RECORD_PLAINTEXT)];
        let Session {
            conn,
            incoming,
            outgoing,
            ..
        } = self;
        let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming);
        let taken = match state {
            Ok(ConnectionState::WriteTraffic(mut write)) => {
                let start = outgoing.len();
                outgoing.resize(start + chunk.len() + 64, 0);
                match write.encrypt(chunk, &mut outgoing[start..]) {
                    Ok(n) => {
                        outgoing.truncate(start + n);
                        chunk.len()
                    }
                    Err(EncryptError::InsufficientSize(size)) => {
                        outgoing.resize(start + size.required_size, 0);
                        match write.encrypt(chunk, &mut outgoing[start..]) {
                            Ok(n) => {
                                outgoing.truncate(start + n);
                                chunk.len()
                            }
                            Err(_) => {
                                outgoing.truncate(start);
                                0
                            }
                        }
                    }
                    Err(_) => {
                        outgoing.truncate(start);
                        0
                    }
                }
            }
            // Records wait to be read first (or the connection ended): the next
            // `process` deals with them.
            _ => 0,
        };
        let discard = discard.min(self.incoming.len());
        self.incoming.drain(..discard);
        taken
    }

    /// Queues a close_notify alert (once) after what was encrypted so far.
    pub fn close_notify(&mut self) {
        if self.close_queued || !self.established || self.failed.is_some() {
            self.close_queued = true;
            return;
        }
        self.close_queued = true;
        let Session {
            conn,
            incoming,
            outgoing,
            ..
        } = self;
        let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming);
        if let Ok(ConnectionState::WriteTraffic(mut write)) = state {
            let start = outgoing.len();
            outgoing.resize(start + 64, 0);
            match write.queue_close_notify(&mut outgoing[start..]) {
                Ok(n) => outgoing.truncate(start + n),
                Err(_) => outgoing.truncate(start),
            }
        }
        let discard = discard.min(self.incoming.len());
        self.incoming.drain(..discard);
    }

    /// Decrypted bytes not yet read by the server.
    pub fn plaintext(&mut self) -> &mut Vec<u8> {
        &mut self.plaintext
    }

    /// Ciphertext waiting for the socket; the caller drains what it sent.
    pub fn pending_ciphertext(&mut self) -> &mut Vec<u8> {
        &mut self.outgoing
    }

    /// Whether a close_notify was queued ([`close_notify`](Self::close_notify)).
    pub fn close_queued(&self) -> bool {
        self.close_queued
    }

    /// Whether the handshake finished.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Whether the peer sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The error that ended the session, if one did.
    pub fn failure(&self) -> Option<&rustls::Error> {
        self.failed.as_ref()
    }
}
