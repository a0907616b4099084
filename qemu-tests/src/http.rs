//! A minimal HTTP/1.1 client for the API tests, over HTTPS (rustls) by default: enough to
//! send well-formed and deliberately malformed requests to Keel through QEMU's `hostfwd` on
//! 127.0.0.1, and to read one response (Content-Length bodies, which is all Keel sends).
//!
//! The appliance's certificate is pinned: a connection is accepted only if the server shows
//! exactly the certificate `keel build` made (`target/keel/tls-cert.pem`, also in every test
//! image's configuration through `tls_cert::default_config`), one a test registered with
//! [`trust_certificate`], or — for an appliance that made its own — the certificate first
//! seen on that forwarded port (pinned for the port from then on). Names are not checked
//! (tests connect to 127.0.0.1); the TLS 1.3 handshake signature is. [`Scheme::Http`] is for tests
//! about plain HTTP itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The appliance port QEMU's `hostfwd` forwards to: HTTPS.
pub const GUEST_API_PORT: u16 = 443;
/// The appliance's plain-HTTP port (redirects to HTTPS unless `management.http = "serve"`).
pub const GUEST_PLAIN_PORT: u16 = 80;

/// How a connection talks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// TLS with the pinned certificate.
    Https,
    /// Plain TCP.
    Http,
}

/// A connection to the appliance: TLS or plain.
pub enum Stream {
    /// HTTPS.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// Plain HTTP.
    Plain(TcpStream),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tls(s) => s.get_ref(),
            Stream::Plain(s) => s,
        }
    }

    /// Sets the read timeout of the socket underneath.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_read_timeout(timeout)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.read(buf),
            Stream::Plain(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.write(buf),
            Stream::Plain(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            Stream::Plain(s) => s.flush(),
        }
    }
}

static EXTRA_TRUSTED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The certificate `keel build` made for the test image (DER), if the file is there.
pub fn build_certificate() -> Option<Vec<u8>> {
    static BUILT: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let pem =
                std::fs::read_to_string(keel_image::output_dir().join("tls-cert.pem")).ok()?;
            pem_to_der(&pem)
        })
        .clone()
}

/// The DER inside a PEM `CERTIFICATE`.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

/// Also trusts `pem` (a certificate the appliance made itself, or an operator's).
pub fn trust_certificate(pem: &str) {
    if let Some(der) = pem_to_der(pem) {
        EXTRA_TRUSTED.lock().unwrap().push(der);
    }
}

/// SHA-256 fingerprint of a DER certificate, `AB:CD:…` (as Keel prints it).
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Accepts exactly the pinned certificates; checks handshake signatures with ring.
#[derive(Debug)]
struct Pinned {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

/// Certificates pinned on first use, per forwarded port (the server name is `port-N`).
static FIRST_USE: Mutex<Vec<(String, Vec<u8>)>> = Mutex::new(Vec::new());

impl Pinned {
    /// An appliance that made its own certificate (an image without `keel build`'s): the
    /// first certificate seen on a port is pinned for that port, as the `keel` client does;
    /// a different one later on the same port is refused.
    fn first_use(&self, server_name: &rustls::pki_types::ServerName<'_>, der: &[u8]) -> bool {
        let name = server_name.to_str().into_owned();
        let mut pins = FIRST_USE.lock().unwrap();
        match pins.iter().find(|(n, _)| *n == name) {
            Some((_, pinned)) => pinned == der,
            None => {
                pins.push((name, der.to_vec()));
                true
            }
        }
    }
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let der = end_entity.as_ref();
        let known = build_certificate().is_some_and(|c| c == der)
            || EXTRA_TRUSTED.lock().unwrap().iter().any(|c| c == der)
            || self.first_use(server_name, der);
        if known {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the appliance showed certificate SHA-256 {}, not the pinned one",
                fingerprint(der)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client configuration every HTTPS connection uses.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            #[allow(deprecated)] // ring's provider without post-quantum groups: what Keel has.
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let algorithms = provider.signature_verification_algorithms;
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("ring offers TLS 1.3")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { algorithms }))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// A parsed response.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines (name lower-cased, value trimmed).
    pub headers: Vec<(String, String)>,
    /// The body, as text (Keel sends JSON or HTML).
    pub body: String,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A free TCP port on 127.0.0.1 for `hostfwd` (bound and released; a tiny race is
/// acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port on 127.0.0.1")
}

/// The QEMU `-nic` argument for user networking with the appliance's HTTPS port
/// ([`GUEST_API_PORT`]) forwarded from `port` on 127.0.0.1 only.
pub fn nic_arg(model: &str, port: u16) -> String {
    format!("user,model={model},hostfwd=tcp:127.0.0.1:{port}-:{GUEST_API_PORT}")
}

/// [`nic_arg`] with the appliance's plain-HTTP port ([`GUEST_PLAIN_PORT`]) also forwarded,
/// from `plain`: for clients that still speak plain HTTP to an appliance with
/// `management.http = "serve"`.
pub fn nic_arg_with_plain(model: &str, port: u16, plain: u16) -> String {
    format!(
        "{},hostfwd=tcp:127.0.0.1:{plain}-:{GUEST_PLAIN_PORT}",
        nic_arg(model, port)
    )
}

/// The accept queue [`deepen_hostfwd_backlog`] gives QEMU's `hostfwd` socket.
pub const HOSTFWD_BACKLOG: i32 = 128;

/// Deepens the accept queue of QEMU's `hostfwd` listening socket on 127.0.0.1:`port` to
/// [`HOSTFWD_BACKLOG`].
///
/// libslirp listens on a `hostfwd` port with `listen(fd, 1)` and accepts one connection per
/// main-loop iteration, so Linux queues at most two handshaken connections for it. A burst
/// of simultaneous connects overflows that queue (`TcpExtListenOverflows`): the kernel drops
/// the SYNs and final ACKs of the excess, and those connections reach the guest only on the
/// next retransmissions, all at once, of which two fit again — a backoff that leaves some of
/// fifty clients without an answer for 20 s and more, worse when another QEMU competes for
/// the CPU. The guest never sees them. `listen` on an already listening socket only changes
/// its backlog, so this takes a copy of QEMU's descriptor (`pidfd_getfd`: Linux 5.6, and
/// the right to ptrace QEMU, which a parent has) and calls it again.
#[cfg(target_os = "linux")]
pub fn deepen_hostfwd_backlog(qemu_pid: u32, port: u16) -> Result<(), String> {
    use std::os::fd::{FromRawFd, OwnedFd};

    // Local address 127.0.0.1:port in LISTEN state (0A), from /proc/net/tcp.
    let local = format!("0100007F:{port:04X}");
    let table =
        std::fs::read_to_string("/proc/net/tcp").map_err(|e| format!("/proc/net/tcp: {e}"))?;
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| f[9].to_owned())
        .collect();
    if inodes.is_empty() {
        return Err(format!("no socket listens on 127.0.0.1:{port}"));
    }
    let fds = std::fs::read_dir(format!("/proc/{qemu_pid}/fd"))
        .map_err(|e| format!("/proc/{qemu_pid}/fd: {e}"))?;
    let target = fds
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let link = std::fs::read_link(entry.path()).ok()?;
            let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            inodes.iter().any(|i| i == inode).then_some(())?;
            entry.file_name().to_str()?.parse::<i32>().ok()
        })
        .next()
        .ok_or_else(|| format!("QEMU (pid {qemu_pid}) holds no socket on 127.0.0.1:{port}"))?;
    let os_error = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, qemu_pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(os_error("pidfd_open"));
    }
    // SAFETY: `pidfd` is a descriptor just returned to us and owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that process and flags, and
    // returns a new descriptor in ours or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            target,
            0,
        )
    };
    if fd < 0 {
        return Err(os_error("pidfd_getfd"));
    }
    // SAFETY: as for `pidfd`; it refers to QEMU's socket, which stays open in QEMU.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: listen on a valid descriptor of a listening TCP socket.
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&fd), HOSTFWD_BACKLOG) } < 0 {
        return Err(os_error("listen"));
    }
    Ok(())
}

/// Reads one response from `stream`.
pub fn read_response(stream: &mut impl Read) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Connects over HTTPS to 127.0.0.1:`port` with read and write timeouts (the handshake
/// completes here).
pub fn connect(port: u16, timeout: Duration) -> std::io::Result<Stream> {
    connect_with(Scheme::Https, port, timeout)
}

/// Connects to 127.0.0.1:`port` with `scheme`.
pub fn connect_with(scheme: Scheme, port: u16, timeout: Duration) -> std::io::Result<Stream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    tcp.set_nodelay(true)?;
    match scheme {
        Scheme::Http => Ok(Stream::Plain(tcp)),
        Scheme::Https => {
            let name = rustls::pki_types::ServerName::try_from(format!("port-{port}"))
                .map_err(std::io::Error::other)?;
            let conn = rustls::ClientConnection::new(client_config(), name)
                .map_err(std::io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock)?;
            }
            Ok(Stream::Tls(Box::new(tls)))
        }
    }
}

/// Sends raw bytes on a new HTTPS connection and reads one response.
pub fn raw(port: u16, request: &[u8]) -> std::io::Result<Response> {
    raw_with(Scheme::Https, port, request)
}

/// [`raw`] with `scheme`.
pub fn raw_with(scheme: Scheme, port: u16, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = connect_with(scheme, port, Duration::from_secs(20))?;
    stream.write_all(request)?;
    stream.flush()?;
    read_response(&mut stream)
}

/// One request with an optional bearer token and JSON body, `Connection: close`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<Response> {
    request_with(Scheme::Https, port, method, path, token, body)
}

/// [`request`] with `scheme`.
pub fn request_with(
    scheme: Scheme,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<Response> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    match body {
        Some(body) => req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None if matches!(method, "POST" | "PUT" | "PATCH") => {
            req.push_str("Content-Length: 0\r\n\r\n")
        }
        None => req.push_str("\r\n"),
    }
    raw_with(scheme, port, req.as_bytes())
}

/// The web page's URL on 127.0.0.1:`port`, for a browser (the scheme follows this module's
/// transport).
pub fn page_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}/")
}

/// Right after Keel's banner: waits for its DHCP lease notice and the prompt redrawn under it,
/// deepens QEMU's `hostfwd` accept queue on `port` ([`deepen_hostfwd_backlog`]) and waits until
/// `GET /api/v1/health` answers there; fails the test with the machine's report otherwise.
/// Returns the lease line.
pub fn await_api(m: &mut crate::Machine, port: u16) -> String {
    // The whole line: console output arrives in pieces, so match up to its end.
    let lease = m
        .expect(crate::Pattern::regex(
            r"network: DHCP lease 10\.0\.2\.15/24[^\r\n]*\r?\n",
        ))
        .text
        .trim_end()
        .to_owned();
    m.expect_prompt();
    if let Err(e) = deepen_hostfwd_backlog(m.pid(), port) {
        m.fail(format!("deepening the hostfwd accept queue: {e}"));
    }
    if let Err(e) = wait_until_up(port, "/api/v1/health", Duration::from_secs(30)) {
        m.fail(&e);
    }
    lease
}

/// Retries `GET path` over HTTPS until it answers (the guest needs a DHCP lease first).
pub fn wait_until_up(port: u16, path: &str, deadline: Duration) -> Result<Response, String> {
    wait_until_up_with(Scheme::Https, port, path, deadline)
}

/// [`wait_until_up`] with `scheme` (plain HTTP for a guest's own web server).
pub fn wait_until_up_with(
    scheme: Scheme,
    port: u16,
    path: &str,
    deadline: Duration,
) -> Result<Response, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < deadline {
        match request_with(scheme, port, "GET", path, None, None) {
            Ok(r) => return Ok(r),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!(
        "no HTTP answer on 127.0.0.1:{port}{path} within {deadline:?}: {last}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_from_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}").unwrap();
        });
        let r = request_with(Scheme::Http, port, "GET", "/x", Some("t"), None).unwrap();
        server.join().unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, "{\"a\":1}");
    }
}
