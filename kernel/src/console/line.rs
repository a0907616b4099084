//! The console's line editor over a byte stream from a VT100/ANSI terminal: editing anywhere
//! in the line, history ([`History`]) and Tab completion (a [`Completer`] from the caller).
//!
//! The editor owns no terminal: [`LineEditor::feed`] takes one input byte and writes what the
//! terminal must show into a caller-supplied byte sink, so the screen always holds the prompt
//! and the line with the cursor in place. No heap is used: the line, the history and the
//! completion state live in fixed `heapless` buffers.
//!
//! Redraw model: the editor never lets the terminal wrap. The prompt and the line fill one
//! row of [`LineEditor::set_width`] columns (80 unless told), keeping the last column free;
//! a longer line scrolls sideways so the cursor stays visible. Typing at the end of a line
//! that fits echoes the byte, Left/Right that keep the view move the cursor, and every other
//! edit redraws the row: `CR`, prompt, visible text, `ESC [ K`, `CR`, `ESC [ <col> C`.
//!
//! Keys: printable ASCII inserts at the cursor; Left/Right (`ESC [ D`/`C`, Ctrl-B/F), Home
//! (`ESC [ H`, `ESC [ 1 ~`, `ESC [ 7 ~`, `ESC O H`, Ctrl-A), End (`ESC [ F`, `ESC [ 4 ~`,
//! `ESC [ 8 ~`, `ESC O F`, Ctrl-E), word left/right (Ctrl- or Alt-arrows, Alt-B/F),
//! Backspace (0x7F, 0x08), Delete (`ESC [ 3 ~`, Ctrl-D on a non-empty line), Ctrl-U and
//! Ctrl-K (kill to start/end), Ctrl-W and Alt-Backspace (delete the word before the cursor),
//! Up/Down (`ESC [ A`/`B`, Ctrl-P/N) walk the history, Tab completes, Ctrl-L clears the
//! screen, Ctrl-C abandons the line and Enter (CR, LF, or CR LF as one) ends it. Anything
//! else, including unknown escape sequences and bytes above 0x7E, is ignored; the line only
//! ever holds printable ASCII.

use core::fmt::Write as _;

use super::complete::{self, Completer, Matches};
use super::history::History;

/// Longest line accepted; further input is refused with a bell.
pub const MAX_LINE: usize = 256;

/// Terminal width assumed until [`LineEditor::set_width`] says otherwise.
pub const DEFAULT_WIDTH: usize = 80;

const BELL: &[u8] = b"\x07";
const CRLF: &[u8] = b"\r\n";

/// What the caller should do after feeding a byte (terminal output has already gone to the
/// sink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing more to do.
    None,
    /// The line is complete (Enter): run [`LineEditor::text`], then call
    /// [`LineEditor::clear`]. The line is already in the history. The editor printed no
    /// newline: the caller does, before the command's output.
    Line,
    /// The line was abandoned (Ctrl-C) and is cleared: print `^C`, a newline and a new
    /// prompt.
    Cancelled,
}

/// Where the escape-sequence parser is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// After ESC [ : the first two numeric parameters; `count` counts separators; `odd` marks
    /// private or intermediate bytes, which no key we know uses.
    Csi {
        params: [u16; 2],
        count: u8,
        odd: bool,
    },
    /// After ESC O (application cursor keys).
    Ss3,
}

/// What an input byte amounts to once escape sequences are taken into account.
enum Step {
    /// Part of a sequence still going, or a sequence that means nothing to us.
    Consumed,
    /// A sequence naming a key.
    Key(Key),
    /// A byte outside any sequence (it may have ended an unfinished one).
    Byte,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Left,
    Right,
    WordLeft,
    WordRight,
    Home,
    End,
    Up,
    Down,
    Delete,
    DeleteWordBefore,
}

/// [`core::fmt::Write`] over a byte sink, for numbers in escape sequences.
struct Sink<'a>(&'a mut dyn FnMut(&[u8]));

impl core::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        (self.0)(s.as_bytes());
        Ok(())
    }
}

/// The line being typed, its history and the terminal state behind it.
pub struct LineEditor {
    prompt: &'static str,
    width: usize,
    buf: heapless::Vec<u8, MAX_LINE>,
    /// Index into `buf`, `0..=buf.len()`.
    cursor: usize,
    escape: Escape,
    last_was_cr: bool,
    last_was_tab: bool,
    history: History,
}

impl LineEditor {
    /// An empty editor that draws `prompt` (printable ASCII, one column per byte) in front of
    /// the line. The caller prints the first prompt itself.
    pub const fn new(prompt: &'static str) -> LineEditor {
        LineEditor {
            prompt,
            width: DEFAULT_WIDTH,
            buf: heapless::Vec::new(),
            cursor: 0,
            escape: Escape::None,
            last_was_cr: false,
            last_was_tab: false,
            history: History::new(),
        }
    }

    /// Sets the terminal width in columns (at least 2 are used).
    pub fn set_width(&mut self, columns: usize) {
        self.width = columns.max(2);
    }

    /// The text typed so far (only printable ASCII is ever stored).
    pub fn text(&self) -> &str {
        core::str::from_utf8(&self.buf).unwrap_or("")
    }

    /// The cursor's position in [`text`](Self::text), in bytes.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The lines entered so far, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &str> {
        self.history
            .iter()
            .map(|line| core::str::from_utf8(line).unwrap_or(""))
    }

    /// Empties the line after it was handled (or abandoned).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.cursor = 0;
        self.history.end_walk();
    }

    /// Draws the prompt and the line on the cursor's row, with the cursor in place: for after
    /// the caller printed something else (asynchronous output ending in a newline).
    pub fn redraw(&self, out: &mut dyn FnMut(&[u8])) {
        let (start, end) = self.window();
        out(b"\r");
        out(self.prompt.as_bytes());
        out(&self.buf[start..end]);
        out(b"\x1b[K\r");
        let column = self.prompt.len() + self.cursor - start;
        if column > 0 {
            let _ = write!(Sink(out), "\x1b[{column}C");
        }
    }

    /// Feeds one input byte; terminal output goes to `out`. Tab asks `completer` for
    /// candidates.
    pub fn feed(
        &mut self,
        byte: u8,
        completer: &dyn Completer,
        out: &mut dyn FnMut(&[u8]),
    ) -> Event {
        let was_cr = core::mem::replace(&mut self.last_was_cr, byte == b'\r');
        let was_tab = core::mem::replace(&mut self.last_was_tab, false);
        match self.escape_step(byte) {
            Step::Consumed => return Event::None,
            Step::Key(key) => {
                self.key(key, out);
                return Event::None;
            }
            Step::Byte => {}
        }
        match byte {
            b'\r' => return self.enter(out),
            // A terminal that sends CR LF: the LF after a CR is not a second Enter.
            b'\n' if was_cr => {}
            b'\n' => return self.enter(out),
            0x1b => self.escape = Escape::Started,
            0x03 => {
                // The caller's `^C` goes after the whole line.
                self.move_to(self.buf.len(), out);
                self.clear();
                return Event::Cancelled;
            }
            0x01 => self.key(Key::Home, out),
            0x02 => self.key(Key::Left, out),
            0x04 if !self.buf.is_empty() => self.key(Key::Delete, out),
            0x05 => self.key(Key::End, out),
            0x06 => self.key(Key::Right, out),
            0x08 | 0x7f if self.cursor > 0 => self.delete(self.cursor - 1, self.cursor, out),
            b'\t' => self.tab(was_tab, completer, out),
            0x0b => self.delete(self.cursor, self.buf.len(), out),
            0x0c => {
                out(b"\x1b[H\x1b[2J");
                self.redraw(out);
            }
            0x0e => self.key(Key::Down, out),
            0x10 => self.key(Key::Up, out),
            0x15 => self.delete(0, self.cursor, out),
            0x17 => self.key(Key::DeleteWordBefore, out),
            0x20..=0x7e => self.insert(&[byte], out),
            _ => {}
        }
        Event::None
    }

    fn enter(&mut self, out: &mut dyn FnMut(&[u8])) -> Event {
        // Leave the end of the line on screen (it matters when the line scrolled sideways).
        self.move_to(self.buf.len(), out);
        self.history.add(&self.buf);
        Event::Line
    }

    /// Runs the escape-sequence parser over one byte. A control byte in the middle of a
    /// sequence ends it and counts by itself, so a stray ESC cannot swallow Enter or Ctrl-C.
    fn escape_step(&mut self, byte: u8) -> Step {
        match self.escape {
            Escape::None => Step::Byte,
            Escape::Started => {
                self.escape = Escape::None;
                match byte {
                    b'[' => {
                        self.escape = Escape::Csi {
                            params: [0; 2],
                            count: 0,
                            odd: false,
                        };
                        Step::Consumed
                    }
                    b'O' => {
                        self.escape = Escape::Ss3;
                        Step::Consumed
                    }
                    b'b' => Step::Key(Key::WordLeft),
                    b'f' => Step::Key(Key::WordRight),
                    0x08 | 0x7f => Step::Key(Key::DeleteWordBefore),
                    // Other Alt- combinations mean nothing here.
                    0x20..=0x7e => Step::Consumed,
                    _ => Step::Byte,
                }
            }
            Escape::Ss3 => {
                self.escape = Escape::None;
                match byte {
                    0x40..=0x7e => Self::final_key(byte, [0; 2]).map_or(Step::Consumed, Step::Key),
                    0x20..=0x3f => Step::Consumed,
                    _ => Step::Byte,
                }
            }
            Escape::Csi {
                ref mut params,
                ref mut count,
                ref mut odd,
            } => match byte {
                b'0'..=b'9' => {
                    let p = &mut params[usize::from(*count).min(1)];
                    *p = p.saturating_mul(10).saturating_add(u16::from(byte - b'0'));
                    Step::Consumed
                }
                b';' => {
                    *count = count.saturating_add(1);
                    Step::Consumed
                }
                // Sub-parameters, private markers and intermediates.
                b':' | 0x3c..=0x3f | 0x20..=0x2f => {
                    *odd = true;
                    Step::Consumed
                }
                0x40..=0x7e => {
                    let (params, odd) = (*params, *odd);
                    self.escape = Escape::None;
                    if odd {
                        return Step::Consumed;
                    }
                    Self::final_key(byte, params).map_or(Step::Consumed, Step::Key)
                }
                _ => {
                    self.escape = Escape::None;
                    Step::Byte
                }
            },
        }
    }

    /// The key a CSI or SS3 sequence names by its final byte and parameters (the second
    /// parameter is the xterm modifier: 3 Alt, 5 Ctrl).
    fn final_key(final_byte: u8, [first, modifier]: [u16; 2]) -> Option<Key> {
        let word = matches!(modifier, 3 | 5);
        Some(match final_byte {
            b'A' => Key::Up,
            b'B' => Key::Down,
            b'C' if word => Key::WordRight,
            b'C' => Key::Right,
            b'D' if word => Key::WordLeft,
            b'D' => Key::Left,
            b'H' => Key::Home,
            b'F' => Key::End,
            b'~' => match first {
                1 | 7 => Key::Home,
                4 | 8 => Key::End,
                3 => Key::Delete,
                _ => return None,
            },
            _ => return None,
        })
    }

    fn key(&mut self, key: Key, out: &mut dyn FnMut(&[u8])) {
        match key {
            Key::Left => self.move_to(self.cursor.saturating_sub(1), out),
            Key::Right => self.move_to((self.cursor + 1).min(self.buf.len()), out),
            Key::Home => self.move_to(0, out),
            Key::End => self.move_to(self.buf.len(), out),
            Key::WordLeft => self.move_to(self.word_start_before(self.cursor), out),
            Key::WordRight => self.move_to(self.word_end_after(self.cursor), out),
            Key::Delete => {
                if self.cursor < self.buf.len() {
                    self.delete(self.cursor, self.cursor + 1, out);
                }
            }
            Key::DeleteWordBefore => {
                self.delete(self.word_start_before(self.cursor), self.cursor, out)
            }
            Key::Up => {
                let recalled = self.history.older(&self.buf);
                match recalled {
                    Some(line) => {
                        Self::replace(&mut self.buf, line);
                        self.cursor = self.buf.len();
                        self.redraw(out);
                    }
                    None => out(BELL),
                }
            }
            Key::Down => {
                if let Some(line) = self.history.newer() {
                    Self::replace(&mut self.buf, line);
                    self.cursor = self.buf.len();
                    self.redraw(out);
                }
            }
        }
    }

    fn replace(buf: &mut heapless::Vec<u8, MAX_LINE>, line: &[u8]) {
        buf.clear();
        // History entries have the line's capacity, so this takes them whole.
        let _ = buf.extend_from_slice(&line[..line.len().min(MAX_LINE)]);
    }

    /// Start of the word before `at`: back over spaces, then over non-spaces.
    fn word_start_before(&self, at: usize) -> usize {
        let before = &self.buf[..at.min(self.buf.len())];
        let end = before.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        before[..end]
            .iter()
            .rposition(|&b| b == b' ')
            .map_or(0, |i| i + 1)
    }

    /// End of the word after `at`: forward over spaces, then over non-spaces.
    fn word_end_after(&self, at: usize) -> usize {
        let at = at.min(self.buf.len());
        let after = &self.buf[at..];
        let start = after.iter().position(|&b| b != b' ').unwrap_or(after.len());
        at + start
            + after[start..]
                .iter()
                .position(|&b| b == b' ')
                .unwrap_or(after.len() - start)
    }

    /// Columns available for text: the row minus the prompt and the always-free last column.
    fn room(&self) -> usize {
        self.width.saturating_sub(self.prompt.len() + 1).max(1)
    }

    /// The visible part of the line, `start..end`: as much as fits, with the cursor in view.
    fn window(&self) -> (usize, usize) {
        let room = self.room();
        let start = self.cursor.saturating_sub(room);
        (start, self.buf.len().min(start + room))
    }

    fn move_to(&mut self, to: usize, out: &mut dyn FnMut(&[u8])) {
        let from = self.cursor;
        if to == from || to > self.buf.len() {
            return;
        }
        let (start_before, _) = self.window();
        self.cursor = to;
        if self.window().0 != start_before {
            self.redraw(out);
        } else if to < from {
            let _ = write!(Sink(out), "\x1b[{}D", from - to);
        } else {
            let _ = write!(Sink(out), "\x1b[{}C", to - from);
        }
    }

    /// Inserts printable bytes at the cursor, or rings the bell if they do not fit.
    fn insert(&mut self, bytes: &[u8], out: &mut dyn FnMut(&[u8])) {
        let at_end = self.cursor == self.buf.len();
        if self.buf.extend_from_slice(bytes).is_err() {
            out(BELL);
            return;
        }
        self.buf[self.cursor..].rotate_right(bytes.len());
        self.cursor += bytes.len();
        if at_end && self.window().0 == 0 {
            out(bytes);
        } else {
            self.redraw(out);
        }
    }

    /// Deletes `from..to` (clamped to the line) and leaves the cursor at `from`.
    fn delete(&mut self, from: usize, to: usize, out: &mut dyn FnMut(&[u8])) {
        let len = self.buf.len();
        let to = to.min(len);
        if from >= to {
            return;
        }
        let backspace_at_end = to == len && self.cursor == len && to - from == 1;
        let (start_before, _) = self.window();
        self.buf.copy_within(to.., from);
        self.buf.truncate(len - (to - from));
        self.cursor = from;
        if backspace_at_end && start_before == 0 {
            out(b"\x08 \x08");
        } else {
            self.redraw(out);
        }
    }

    /// Tab: complete the word before the cursor.
    fn tab(&mut self, was_tab: bool, completer: &dyn Completer, out: &mut dyn FnMut(&[u8])) {
        self.last_was_tab = true;
        let before = &self.buf[..self.cursor];
        let prefix = &before[complete::partial_word_start(before)..];
        let before_text = core::str::from_utf8(before).unwrap_or("");
        let mut matches = Matches::new(prefix);
        completer.complete(before_text, &mut |word| matches.offer(word));
        let typed = prefix.len();
        let Matches {
            first,
            common,
            count,
            distinct,
            longest,
            ..
        } = matches;
        if count == 0 {
            out(BELL);
        } else if !distinct {
            let mut rest: heapless::Vec<u8, MAX_LINE> = heapless::Vec::new();
            let _ = rest.extend_from_slice(&first[typed.min(first.len())..]);
            // An option that wants its value right after it (`kernel=`, `disk=partition:`)
            // gets no space.
            let wants_value = matches!(first.last(), Some(b'=' | b':'));
            if wants_value {
                self.insert(&rest, out);
            } else if self.buf.get(self.cursor) == Some(&b' ') {
                if rest.is_empty() {
                    self.move_to(self.cursor + 1, out);
                } else {
                    self.insert(&rest, out);
                }
            } else if rest.push(b' ').is_ok() {
                self.insert(&rest, out);
            } else {
                out(BELL);
            }
        } else if common > typed {
            self.insert(&first[typed..common], out);
        } else if was_tab {
            self.list(completer, longest, out);
        } else {
            out(BELL);
        }
    }

    /// Prints the candidates in columns below the line, then draws the line again.
    fn list(&self, completer: &dyn Completer, longest: usize, out: &mut dyn FnMut(&[u8])) {
        const SPACES: &[u8] = &[b' '; 16];
        let before = &self.buf[..self.cursor];
        let prefix = &before[complete::partial_word_start(before)..];
        let usable_width = self.width - 1;
        let column_width = (longest + 2).min(usable_width);
        let per_row = (usable_width / column_width).max(1);
        let mut in_row = 0;
        let mut previous: heapless::Vec<u8, MAX_LINE> = heapless::Vec::new();
        out(CRLF);
        completer.complete(core::str::from_utf8(before).unwrap_or(""), &mut |word| {
            let word = word.as_bytes();
            if !complete::usable(prefix, word) || word == previous.as_slice() {
                return;
            }
            previous.clear();
            let _ = previous.extend_from_slice(word);
            if in_row == per_row {
                out(CRLF);
                in_row = 0;
            }
            let shown = &word[..word.len().min(usable_width)];
            out(shown);
            in_row += 1;
            if in_row < per_row {
                let mut pad = column_width.saturating_sub(shown.len());
                while pad > 0 {
                    let n = pad.min(SPACES.len());
                    out(&SPACES[..n]);
                    pad -= n;
                }
            }
        });
        out(CRLF);
        self.redraw(out);
    }
}

#[cfg(test)]
#[path = "line_tests.rs"]
mod tests;
