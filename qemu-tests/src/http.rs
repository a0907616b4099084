//! A minimal HTTP/1.1 client over `std::net::TcpStream` for the API tests: enough to send
//! well-formed and deliberately malformed requests to Keel through QEMU's `hostfwd` on
//! 127.0.0.1, and to read one response (Content-Length bodies, which is all Keel sends).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

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

/// The QEMU `-nic` argument for user networking with port 80 forwarded from `port` on
/// 127.0.0.1 only.
pub fn nic_arg(model: &str, port: u16) -> String {
    format!("user,model={model},hostfwd=tcp:127.0.0.1:{port}-:80")
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
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
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

/// Connects to 127.0.0.1:`port` with a read timeout.
pub fn connect(port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Sends raw bytes on a new connection and reads one response.
pub fn raw(port: u16, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = connect(port, Duration::from_secs(20))?;
    stream.write_all(request)?;
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
    raw(port, req.as_bytes())
}

/// The web page's URL on 127.0.0.1:`port`, for a browser (the scheme follows this module's
/// transport).
pub fn page_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/")
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

/// Retries `GET path` until it answers (the guest needs a DHCP lease first).
pub fn wait_until_up(port: u16, path: &str, deadline: Duration) -> Result<Response, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < deadline {
        match request(port, "GET", path, None, None) {
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
        let r = request(port, "GET", "/x", Some("t"), None).unwrap();
        server.join().unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, "{\"a\":1}");
    }
}
