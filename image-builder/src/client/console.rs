//! `keel vm console NAME`: the guest's serial console over the API.
//!
//! Over the WebSocket `GET …/console/ws` (with the bearer token on the upgrade): the
//! appliance sends the recent history and then live output as it comes, and typed bytes go
//! out as binary messages. When the upgrade fails (an `https://` address, an appliance
//! without the route), it falls back to polling:
//!
//! Output: `GET …/console?since=N` polled, `next` carried to the next poll, so nothing is
//! printed twice; `dropped` bytes (the kernel's ring buffer moved on) are reported. Input: what
//! is read from stdin goes to `POST …/console` as raw bytes, in pieces of at most the API's
//! 4096. Ctrl-] (0x1d) detaches, as with telnet and virsh. When stdin is a terminal it is put
//! in raw mode (every key, Ctrl-C included, goes to the guest) and restored on the way out,
//! also after an error or a panic (the guard's `Drop`). When stdin is not a terminal (a
//! script, a test), its end detaches after [`LINGER`] more of output, so a piped command's
//! answer is still printed.

use std::io::{Read, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ApiClient, ClientError, CommandError};

/// The byte that detaches: Ctrl-].
pub const DETACH: u8 = 0x1d;

/// How often the console is polled while nothing is typed.
const POLL: Duration = Duration::from_millis(150);

/// How long output is still followed after stdin ends.
const LINGER: Duration = Duration::from_secs(2);

/// The most console input one request may carry (the API's `MAX_CONSOLE_INPUT`).
const MAX_INPUT: usize = 4096;

enum Input {
    Bytes(Vec<u8>),
    End,
    Failed(std::io::Error),
}

/// Attaches to the console at `path` (`/api/v1/vms/NAME/console`) until Ctrl-] or the end of
/// a non-terminal stdin.
pub fn attach(client: &ApiClient, name: &str, path: &str) -> Result<(), CommandError> {
    // The VM must exist before the terminal changes mode: a typo is an ordinary error.
    let first = client.get(&format!("{path}?since=0"))?;
    let mut next = first.get("next").and_then(Value::as_u64).unwrap_or(0);
    let ws_path = format!("{path}/ws");
    let ws = super::websocket::WsConsole::connect(
        client.base_url(),
        &ws_path,
        client.token(),
        client.tls_config(),
        Duration::from_secs(10),
    );
    let terminal = RawTerminal::enter();
    let ws_refusal = match ws {
        Ok(ws) => {
            eprint!(
                "attached to {name} on {} (Ctrl-] detaches)\r\n",
                client.base_url()
            );
            let result = attach_ws(ws, stdin_reader());
            drop(terminal);
            eprintln!("\ndetached from {name}");
            return result;
        }
        Err(reason) => reason,
    };
    // Said, so that a slower console (polled every few hundred ms) has a known cause.
    eprint!(
        "attached to {name} on {} (Ctrl-] detaches; polling: no WebSocket: {ws_refusal})\r\n",
        client.base_url()
    );
    let mut stdout = std::io::stdout();
    // Recent output first, as a terminal would have shown it.
    if let Some(data) = first.get("data").and_then(Value::as_str) {
        let _ = stdout.write_all(data.as_bytes());
        let _ = stdout.flush();
    }
    let receiver = stdin_reader();
    let mut lingering_until: Option<Instant> = None;
    let result = loop {
        match receiver.recv_timeout(POLL) {
            Ok(Input::Bytes(bytes)) => {
                let (send, detach) = split_at_detach(&bytes);
                if let Err(e) = send_input(client, path, send) {
                    break Err(e.into());
                }
                if detach {
                    break Ok(());
                }
            }
            Ok(Input::End) | Err(RecvTimeoutError::Disconnected) => {
                lingering_until.get_or_insert_with(|| Instant::now() + LINGER);
            }
            Ok(Input::Failed(e)) => {
                break Err(CommandError::Local(format!("reading stdin: {e}")));
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        match poll(client, path, next, &mut stdout) {
            Ok(n) => next = n,
            Err(e) => break Err(e.into()),
        }
        if lingering_until.is_some_and(|t| Instant::now() >= t) {
            break Ok(());
        }
    };
    drop(terminal);
    eprintln!("\ndetached from {name}");
    result
}

/// Reads stdin on a thread of its own (reading blocks, and the output must keep flowing);
/// the thread is left blocked in read() on detach, and the process ends soon after.
fn stdin_reader() -> mpsc::Receiver<Input> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = [0u8; 1024];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) => {
                    let _ = sender.send(Input::End);
                    return;
                }
                Ok(n) => {
                    if sender.send(Input::Bytes(buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = sender.send(Input::Failed(e));
                    return;
                }
            }
        }
    });
    receiver
}

/// The console over its WebSocket until Ctrl-], the end of a non-terminal stdin (after
/// [`LINGER`]) or the appliance closing it.
fn attach_ws(
    mut ws: super::websocket::WsConsole,
    input: mpsc::Receiver<Input>,
) -> Result<(), CommandError> {
    use super::websocket::Incoming;
    let mut stdout = std::io::stdout();
    let mut lingering_until: Option<Instant> = None;
    let mut detaching = false;
    let failed = |e: std::io::Error| CommandError::Local(format!("console connection: {e}"));
    loop {
        loop {
            match input.try_recv() {
                Ok(Input::Bytes(bytes)) => {
                    let (send, detach) = split_at_detach(&bytes);
                    ws.send(send).map_err(failed)?;
                    if detach && !detaching {
                        detaching = true;
                        ws.close().map_err(failed)?;
                        lingering_until = Some(Instant::now() + LINGER);
                    }
                }
                Ok(Input::End) | Err(mpsc::TryRecvError::Disconnected) => {
                    lingering_until.get_or_insert_with(|| Instant::now() + LINGER);
                    break;
                }
                Ok(Input::Failed(e)) => {
                    return Err(CommandError::Local(format!("reading stdin: {e}")));
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        match ws.receive(Duration::from_millis(50)).map_err(failed)? {
            Incoming::Data(bytes) => {
                let _ = stdout.write_all(&bytes);
                let _ = stdout.flush();
            }
            Incoming::Closed(code, reason) => {
                if !detaching {
                    let code = code.map_or(String::new(), |c| format!(" {c}"));
                    eprint!("\r\n[keel: the appliance closed the console{code}: {reason}]\r\n");
                }
                return Ok(());
            }
            Incoming::Idle => {}
        }
        if lingering_until.is_some_and(|t| Instant::now() >= t) {
            if !detaching {
                let _ = ws.close();
            }
            return Ok(());
        }
    }
}

/// `bytes` up to the first Ctrl-], and whether there was one.
pub fn split_at_detach(bytes: &[u8]) -> (&[u8], bool) {
    match bytes.iter().position(|&b| b == DETACH) {
        Some(i) => (&bytes[..i], true),
        None => (bytes, false),
    }
}

fn send_input(client: &ApiClient, path: &str, bytes: &[u8]) -> Result<(), ClientError> {
    for piece in bytes.chunks(MAX_INPUT) {
        let answer = client.send_bytes(path, piece)?;
        if answer.get("dropped").and_then(Value::as_u64).unwrap_or(0) > 0 {
            eprint!("\r\n[keel: the guest's input queue was full; some typed bytes were lost]\r\n");
        }
    }
    Ok(())
}

/// Prints the output from `since` on; the offset to ask for next.
fn poll(
    client: &ApiClient,
    path: &str,
    since: u64,
    out: &mut impl Write,
) -> Result<u64, ClientError> {
    let chunk = client.get(&format!("{path}?since={since}"))?;
    let dropped = chunk.get("dropped").and_then(Value::as_u64).unwrap_or(0);
    if dropped > 0 {
        let _ = write!(out, "\r\n[keel: {dropped} bytes of output were lost]\r\n");
    }
    if let Some(data) = chunk.get("data").and_then(Value::as_str)
        && !data.is_empty()
    {
        let _ = out.write_all(data.as_bytes());
    }
    let _ = out.flush();
    Ok(chunk.get("next").and_then(Value::as_u64).unwrap_or(since))
}

/// Stdin in raw mode while it lives, when stdin is a terminal; restored on drop.
struct RawTerminal {
    saved: Option<libc::termios>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        // SAFETY: isatty/tcgetattr/tcsetattr only read and write the termios struct given,
        // which is a plain C struct owned here.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return RawTerminal { saved: None };
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return RawTerminal { saved: None };
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            // Keep output processing: our own messages end in \n, not \r\n.
            raw.c_oflag |= libc::OPOST | libc::ONLCR;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return RawTerminal { saved: None };
            }
            RawTerminal { saved: Some(saved) }
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the attributes read in `enter`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}
