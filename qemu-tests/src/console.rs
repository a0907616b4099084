//! The serial console: a background thread copies every byte the emulator sends on COM1 into a
//! shared transcript, and waits search that transcript, with a deadline, from a cursor that
//! each successful wait moves past its match (so a second `Keel 0.1.0` after a reboot is found
//! as a new match, not the first banner again).
//!
//! Nothing here knows about emulators: the reader is any `Read`, which the unit tests replace
//! with a pipe they write to themselves.

use std::fmt;
use std::io::{ErrorKind, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use regex::bytes::Regex;

/// What a wait looks for in the console output.
#[derive(Clone, Debug)]
pub enum Pattern {
    /// An exact byte string.
    Text(String),
    /// A regular expression over the raw bytes (`regex::bytes`, so invalid UTF-8 and escape
    /// sequences in firmware output do not get in the way). Anchors see the whole transcript:
    /// `(?m)^` matches at a line start even when the cursor sits in the middle of a line.
    Regex(Regex),
}

impl Pattern {
    /// A pattern for an exact string.
    pub fn text(text: impl Into<String>) -> Self {
        Pattern::Text(text.into())
    }

    /// A regular-expression pattern.
    ///
    /// # Panics
    ///
    /// If `re` does not compile: patterns are written in test code, and a bad one is a bug in
    /// the test. Use [`Pattern::try_regex`] for patterns built at run time.
    pub fn regex(re: &str) -> Self {
        match Self::try_regex(re) {
            Ok(p) => p,
            Err(e) => panic!("invalid regex {re:?}: {e}"),
        }
    }

    /// A regular-expression pattern, or the compile error.
    pub fn try_regex(re: &str) -> Result<Self, regex::Error> {
        Regex::new(re).map(Pattern::Regex)
    }

    /// A pattern for a whole line that starts with `prefix`: group 1 is the rest of the line,
    /// without its line terminator. It matches only once the line terminator has arrived, so
    /// the value is never cut short.
    pub fn line_starting(prefix: &str) -> Self {
        Self::regex(&format!(r"(?m)^{}([^\r\n]*)\r?\n", regex::escape(prefix)))
    }

    /// Finds the first match that starts at or after `start`.
    fn find(&self, haystack: &[u8], start: usize) -> Option<Found> {
        if start > haystack.len() {
            return None;
        }
        match self {
            Pattern::Text(text) => {
                let needle = text.as_bytes();
                let pos = find_bytes(&haystack[start..], needle)? + start;
                Some(Found {
                    start: pos,
                    end: pos + needle.len(),
                    groups: Vec::new(),
                })
            }
            Pattern::Regex(re) => {
                let caps = re.captures_at(haystack, start)?;
                let whole = caps.get(0)?;
                let groups = caps
                    .iter()
                    .skip(1)
                    .map(|g| g.map(|g| String::from_utf8_lossy(g.as_bytes()).into_owned()))
                    .collect();
                Some(Found {
                    start: whole.start(),
                    end: whole.end(),
                    groups,
                })
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Text(t) => write!(f, "text {t:?}"),
            Pattern::Regex(re) => write!(f, "regex /{}/", re.as_str()),
        }
    }
}

impl From<&str> for Pattern {
    fn from(text: &str) -> Self {
        Pattern::Text(text.to_owned())
    }
}

impl From<String> for Pattern {
    fn from(text: String) -> Self {
        Pattern::Text(text)
    }
}

impl From<&String> for Pattern {
    fn from(text: &String) -> Self {
        Pattern::Text(text.clone())
    }
}

impl From<Regex> for Pattern {
    fn from(re: Regex) -> Self {
        Pattern::Regex(re)
    }
}

impl From<&Pattern> for Pattern {
    fn from(p: &Pattern) -> Self {
        p.clone()
    }
}

/// The position of a substring in `haystack`.
fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Found {
    start: usize,
    end: usize,
    groups: Vec<Option<String>>,
}

/// A successful wait.
#[derive(Clone, Debug)]
pub struct Match {
    /// The output between the previous cursor and the match (lossy UTF-8, raw line endings).
    pub before: String,
    /// The matched text.
    pub text: String,
    /// Capture groups 1.. of a regex pattern (`None` for a group that did not take part).
    pub groups: Vec<Option<String>>,
    /// When the last byte of the match arrived, measured from the emulator's start.
    pub at: Duration,
}

impl Match {
    /// Capture group `i` (1-based, like the regex), or `""` if it did not take part.
    pub fn group(&self, i: usize) -> &str {
        i.checked_sub(1)
            .and_then(|i| self.groups.get(i))
            .and_then(|g| g.as_deref())
            .unwrap_or("")
    }
}

/// Why a wait ended without a match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitFailure {
    /// The deadline passed.
    Timeout,
    /// The stream ended (the emulator exited or closed the connection); the string says how.
    Closed(String),
}

struct State {
    buf: Vec<u8>,
    /// `(end offset, arrival time)` of every chunk read, in order.
    arrivals: Vec<(usize, Instant)>,
    closed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The reader thread never panics while holding the lock, and the state stays
        // consistent at every unlock, so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The console of one emulator: the transcript so far and a cursor into it.
pub struct Console {
    shared: Arc<Shared>,
    cursor: usize,
    started: Instant,
}

impl Console {
    /// Starts a thread that copies `reader` into the transcript until it ends. `started` is
    /// the emulator's start time, the origin of [`Match::at`].
    pub fn spawn<R: Read + Send + 'static>(mut reader: R, started: Instant) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::new(),
                arrivals: Vec::new(),
                closed: None,
            }),
            changed: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("console-reader".into())
            .spawn(move || {
                let mut chunk = [0u8; 4096];
                loop {
                    let (data, closed) = match reader.read(&mut chunk) {
                        Ok(0) => (&chunk[..0], Some("end of stream".to_owned())),
                        Ok(n) => (&chunk[..n], None),
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => (&chunk[..0], Some(format!("read error: {e}"))),
                    };
                    let mut state = theirs.lock();
                    if !data.is_empty() {
                        state.buf.extend_from_slice(data);
                        let end = state.buf.len();
                        state.arrivals.push((end, Instant::now()));
                    }
                    let done = closed.is_some();
                    state.closed = closed;
                    drop(state);
                    theirs.changed.notify_all();
                    if done {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            shared.lock().closed = Some(format!("could not start the reader thread: {e}"));
        }
        Console {
            shared,
            cursor: 0,
            started,
        }
    }

    /// Waits until `pattern` appears after the cursor, then moves the cursor past it.
    pub fn wait_for(&mut self, pattern: &Pattern, timeout: Duration) -> Result<Match, WaitFailure> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(found) = pattern.find(&state.buf, self.cursor) {
                let before = String::from_utf8_lossy(&state.buf[self.cursor..found.start]);
                let text = String::from_utf8_lossy(&state.buf[found.start..found.end]);
                let arrived = arrival(&state.arrivals, found.end).unwrap_or_else(Instant::now);
                let m = Match {
                    before: before.into_owned(),
                    text: text.into_owned(),
                    groups: found.groups,
                    at: arrived.saturating_duration_since(self.started),
                };
                self.cursor = found.end;
                return Ok(m);
            }
            if let Some(why) = &state.closed {
                return Err(WaitFailure::Closed(why.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitFailure::Timeout);
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until the stream ends (the emulator exited), up to `timeout`; true if it did.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.closed.is_some() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Everything received so far.
    pub fn transcript(&self) -> Vec<u8> {
        self.shared.lock().buf.clone()
    }

    /// How many bytes have been received.
    pub fn len(&self) -> usize {
        self.shared.lock().buf.len()
    }

    /// True if nothing has been received yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset just past the last match.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Moves the cursor to the end of what has arrived, so later waits see only new output.
    pub fn skip_to_end(&mut self) {
        self.cursor = self.len();
    }

    /// Why the stream ended, if it has.
    pub fn closed(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }
}

/// When the byte just before offset `end` arrived.
fn arrival(arrivals: &[(usize, Instant)], end: usize) -> Option<Instant> {
    let i = arrivals.partition_point(|&(chunk_end, _)| chunk_end < end);
    arrivals.get(i).map(|&(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    /// A reader fed through a channel: each message is one chunk; dropping the sender ends
    /// the stream.
    struct FakeSerial(mpsc::Receiver<Vec<u8>>, Vec<u8>);

    impl Read for FakeSerial {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.1.is_empty() {
                match self.0.recv() {
                    Ok(chunk) => self.1 = chunk,
                    Err(_) => return Ok(0),
                }
            }
            let n = out.len().min(self.1.len());
            out[..n].copy_from_slice(&self.1[..n]);
            self.1.drain(..n);
            Ok(n)
        }
    }

    fn fake() -> (mpsc::Sender<Vec<u8>>, Console) {
        let (tx, rx) = mpsc::channel();
        (
            tx,
            Console::spawn(FakeSerial(rx, Vec::new()), Instant::now()),
        )
    }

    const SHORT: Duration = Duration::from_millis(100);
    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn finds_text_and_moves_the_cursor() {
        let (tx, mut con) = fake();
        tx.send(b"Keel 0.1.0\r\nkeel> version\r\nKeel 0.1.0\r\nkeel> ".to_vec())
            .unwrap();
        let first = con.wait_for(&"Keel 0.1.0".into(), LONG).unwrap();
        assert_eq!(first.before, "");
        let prompt = con.wait_for(&"keel> ".into(), LONG).unwrap();
        assert_eq!(prompt.before, "\r\n");
        let second = con.wait_for(&"Keel 0.1.0".into(), LONG).unwrap();
        assert_eq!(second.before, "version\r\n");
        assert_eq!(
            con.wait_for(&"Keel 0.1.0".into(), SHORT).unwrap_err(),
            WaitFailure::Timeout
        );
    }

    #[test]
    fn waits_for_output_that_arrives_later_in_pieces() {
        let (tx, mut con) = fake();
        let feeder = thread::spawn(move || {
            for piece in ["ke", "el", "> "] {
                thread::sleep(Duration::from_millis(30));
                tx.send(piece.as_bytes().to_vec()).unwrap();
            }
            tx
        });
        let m = con.wait_for(&"keel> ".into(), LONG).unwrap();
        assert_eq!(m.text, "keel> ");
        assert!(m.at >= Duration::from_millis(60), "at = {:?}", m.at);
        drop(feeder.join().unwrap());
    }

    #[test]
    fn times_out_near_the_deadline() {
        let (_tx, mut con) = fake();
        let t0 = Instant::now();
        let err = con
            .wait_for(&"never".into(), Duration::from_millis(200))
            .unwrap_err();
        assert_eq!(err, WaitFailure::Timeout);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }

    #[test]
    fn a_closed_stream_fails_at_once() {
        let (tx, mut con) = fake();
        tx.send(b"partial output".to_vec()).unwrap();
        drop(tx);
        let t0 = Instant::now();
        let err = con.wait_for(&"keel> ".into(), LONG).unwrap_err();
        assert_eq!(err, WaitFailure::Closed("end of stream".into()));
        assert!(t0.elapsed() < Duration::from_secs(5));
        // What arrived before the end is still matched.
        assert!(con.wait_for(&"partial".into(), SHORT).is_ok());
        assert!(con.wait_closed(SHORT));
    }

    #[test]
    fn regex_captures_and_line_anchors() {
        let (tx, mut con) = fake();
        tx.send(b"  memory:         1006 MiB usable\r\n  cpus:           2\r\n".to_vec())
            .unwrap();
        let m = con
            .wait_for(&Pattern::regex(r"memory:\s+(\d+) MiB"), LONG)
            .unwrap();
        assert_eq!(m.group(1), "1006");
        assert_eq!(m.group(2), "");
        // The cursor is mid-line now; `^` still only matches at real line starts.
        let m = con
            .wait_for(&Pattern::regex(r"(?m)^  cpus:\s+(\d+)"), LONG)
            .unwrap();
        assert_eq!(m.group(1), "2");
    }

    #[test]
    fn line_starting_waits_for_the_line_end() {
        let (tx, mut con) = fake();
        tx.send(b"  rip: 0xffff8000".to_vec()).unwrap();
        let pat = Pattern::line_starting("  rip: ");
        assert_eq!(con.wait_for(&pat, SHORT).unwrap_err(), WaitFailure::Timeout);
        tx.send(b"00012345\r\n".to_vec()).unwrap();
        let m = con.wait_for(&pat, LONG).unwrap();
        assert_eq!(m.group(1), "0xffff800000012345");
    }

    #[test]
    fn binary_output_does_not_break_matching() {
        let (tx, mut con) = fake();
        tx.send(b"\x1b[H\x1b[J\xff\xfeKeel 0.1.0\r\n".to_vec())
            .unwrap();
        let m = con.wait_for(&"Keel 0.1.0".into(), LONG).unwrap();
        assert!(m.before.ends_with("\u{fffd}\u{fffd}"), "{:?}", m.before);
    }

    #[test]
    fn skip_to_end_ignores_old_output() {
        let (tx, mut con) = fake();
        tx.send(b"keel> ".to_vec()).unwrap();
        con.wait_for(&"> ".into(), LONG).unwrap();
        tx.send(b"old keel> ".to_vec()).unwrap();
        con.wait_for(&"old".into(), LONG).unwrap();
        con.skip_to_end();
        assert_eq!(
            con.wait_for(&"keel> ".into(), SHORT).unwrap_err(),
            WaitFailure::Timeout
        );
    }

    #[test]
    fn works_over_a_real_pipe() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let mut con = Console::spawn(reader, Instant::now());
        writer.write_all(b"hello\n").unwrap();
        assert_eq!(con.wait_for(&"hello".into(), LONG).unwrap().text, "hello");
        drop(writer);
        assert!(con.wait_closed(LONG));
        assert_eq!(con.transcript(), b"hello\n");
    }

    #[test]
    fn arrival_lookup() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        let arrivals = [(4, t0), (10, t1)];
        assert_eq!(arrival(&arrivals, 1), Some(t0));
        assert_eq!(arrival(&arrivals, 4), Some(t0));
        assert_eq!(arrival(&arrivals, 5), Some(t1));
        assert_eq!(arrival(&arrivals, 11), None);
    }
}
