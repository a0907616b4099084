//! A minimal line editor over a byte stream: echo, backspace, Ctrl-C and Ctrl-U, and escape
//! sequences (arrow keys) swallowed so they do not end up in the line.

/// Longest line accepted; further input is refused with a bell.
pub const MAX_LINE: usize = 256;

/// What the caller should do after feeding a byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing to do.
    None,
    /// Send these bytes to the terminal.
    Echo(&'static [u8]),
    /// Echo one printable byte.
    EchoByte(u8),
    /// The line is complete (Enter).
    Line,
    /// The line was abandoned (Ctrl-C): print a new prompt.
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    Started,
    Csi,
}

/// The line being typed.
pub struct LineEditor {
    buf: heapless::Vec<u8, MAX_LINE>,
    escape: Escape,
    last_was_cr: bool,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    /// An empty editor.
    pub const fn new() -> LineEditor {
        LineEditor {
            buf: heapless::Vec::new(),
            escape: Escape::None,
            last_was_cr: false,
        }
    }

    /// The text typed so far (non-UTF-8 bytes are never stored: only printable ASCII is).
    pub fn text(&self) -> &str {
        core::str::from_utf8(&self.buf).unwrap_or("")
    }

    /// Clears the line after it was handled.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Feeds one input byte.
    pub fn feed(&mut self, byte: u8) -> Event {
        let was_cr = core::mem::replace(&mut self.last_was_cr, byte == b'\r');
        match self.escape {
            Escape::Started => {
                self.escape = if byte == b'[' || byte == b'O' {
                    Escape::Csi
                } else {
                    Escape::None
                };
                return Event::None;
            }
            Escape::Csi => {
                // Parameters and intermediates continue; a final byte in 0x40..=0x7e ends it.
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return Event::None;
            }
            Escape::None => {}
        }
        match byte {
            b'\r' => Event::Line,
            // A terminal that sends CR LF: the LF after a CR is not a second Enter.
            b'\n' if was_cr => Event::None,
            b'\n' => Event::Line,
            0x1b => {
                self.escape = Escape::Started;
                Event::None
            }
            0x08 | 0x7f => {
                if self.buf.pop().is_some() {
                    Event::Echo(b"\x08 \x08")
                } else {
                    Event::None
                }
            }
            0x03 => {
                self.buf.clear();
                Event::Cancelled
            }
            0x15 => {
                // Ctrl-U: erase the whole line on screen.
                let n = self.buf.len();
                self.buf.clear();
                if n == 0 {
                    Event::None
                } else {
                    Event::Echo(b"\r\x1b[2Kkeel> ")
                }
            }
            0x20..=0x7e => {
                if self.buf.push(byte).is_ok() {
                    Event::EchoByte(byte)
                } else {
                    Event::Echo(b"\x07")
                }
            }
            _ => Event::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(ed: &mut LineEditor, bytes: &[u8]) -> std::vec::Vec<Event> {
        bytes.iter().map(|&b| ed.feed(b)).collect()
    }

    #[test]
    fn typing_backspace_and_enter() {
        let mut ed = LineEditor::new();
        feed_all(&mut ed, b"memx");
        assert_eq!(ed.feed(0x7f), Event::Echo(b"\x08 \x08"));
        assert_eq!(ed.text(), "mem");
        assert_eq!(ed.feed(b'\r'), Event::Line);
        assert_eq!(ed.feed(b'\n'), Event::None, "CR LF is one Enter");
        assert_eq!(ed.feed(0x7f), Event::Echo(b"\x08 \x08"));
        ed.clear();
        assert_eq!(ed.feed(0x7f), Event::None, "nothing to erase");
    }

    #[test]
    fn escape_sequences_are_swallowed() {
        let mut ed = LineEditor::new();
        feed_all(&mut ed, b"ab\x1b[A\x1b[1;5Cc\x1bOH");
        assert_eq!(ed.text(), "abc");
    }

    #[test]
    fn ctrl_c_cancels_and_long_lines_ring_the_bell() {
        let mut ed = LineEditor::new();
        feed_all(&mut ed, b"rebo");
        assert_eq!(ed.feed(0x03), Event::Cancelled);
        assert_eq!(ed.text(), "");
        for _ in 0..MAX_LINE {
            ed.feed(b'x');
        }
        assert_eq!(ed.feed(b'x'), Event::Echo(b"\x07"));
        assert_eq!(ed.text().len(), MAX_LINE);
    }

    #[test]
    fn control_and_high_bytes_never_enter_the_line() {
        let mut ed = LineEditor::new();
        for b in 0u8..=255 {
            if b != b'\r' && b != b'\n' && b != 0x1b && b != 0x03 {
                ed.feed(b);
            }
            ed.escape = Escape::None;
        }
        assert!(ed.text().bytes().all(|b| (0x20..=0x7e).contains(&b)));
    }
}
