//! Line editor tests against a small VT100 screen model: every byte the editor writes is
//! interpreted, and after every key the row under the cursor must show the prompt and the
//! line with the cursor in place.

use std::string::String;
use std::vec::Vec;

use super::*;
use crate::console::complete::{NoCompletion, Rule, Rules, Words};

const PROMPT: &str = "keel> ";

/// A terminal: rows of text, a cursor, a bell counter. It understands CR, LF, BS, BEL,
/// printable ASCII and `ESC [ n K/J/H/C/D`, and panics on anything else or on a write into
/// the last column (the editor must never make the terminal wrap).
struct Screen {
    width: usize,
    rows: Vec<Vec<u8>>,
    row: usize,
    col: usize,
    bells: usize,
    escape: Option<Vec<u8>>,
}

impl Screen {
    fn new(width: usize) -> Screen {
        Screen {
            width,
            rows: std::vec![Vec::new()],
            row: 0,
            col: 0,
            bells: 0,
            escape: None,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        if let Some(seq) = self.escape.as_mut() {
            if seq.is_empty() {
                assert_eq!(b, b'[', "only CSI sequences are expected");
                seq.push(b);
                return;
            }
            if b.is_ascii_digit() || b == b';' {
                seq.push(b);
                return;
            }
            let params = String::from_utf8(seq[1..].to_vec()).unwrap();
            self.escape = None;
            let n: usize = params.parse().unwrap_or(0);
            let row = &mut self.rows[self.row];
            match (b, n) {
                (b'K', 0) => row.truncate(self.col),
                (b'K', 2) => row.clear(),
                (b'J', 2) => self.rows.iter_mut().for_each(Vec::clear),
                (b'H', 0) => (self.row, self.col) = (0, 0),
                (b'C', n) => self.col = (self.col + n.max(1)).min(self.width - 1),
                (b'D', n) => self.col = self.col.saturating_sub(n.max(1)),
                _ => panic!("unexpected sequence ESC [ {params} {}", b as char),
            }
            return;
        }
        match b {
            0x07 => self.bells += 1,
            b'\r' => self.col = 0,
            b'\n' => {
                self.row += 1;
                if self.row == self.rows.len() {
                    self.rows.push(Vec::new());
                }
            }
            0x08 => self.col = self.col.saturating_sub(1),
            0x1b => self.escape = Some(Vec::new()),
            0x20..=0x7e => {
                assert!(
                    self.col < self.width - 1,
                    "write at column {} of {}: the terminal would wrap",
                    self.col,
                    self.width
                );
                let row = &mut self.rows[self.row];
                if row.len() <= self.col {
                    row.resize(self.col + 1, b' ');
                }
                row[self.col] = b;
                self.col += 1;
            }
            _ => panic!("unexpected byte {b:#04x} sent to the terminal"),
        }
    }

    fn line(&self, row: usize) -> String {
        String::from_utf8(self.rows[row].clone())
            .unwrap()
            .trim_end()
            .into()
    }

    fn current(&self) -> String {
        self.line(self.row)
    }
}

/// The editor wired to a screen the way the shell wires it to the UART.
struct Term {
    ed: LineEditor,
    screen: Screen,
    entered: Vec<String>,
    cancelled: usize,
}

impl Term {
    fn new() -> Term {
        Term::with_width(DEFAULT_WIDTH)
    }

    fn with_width(width: usize) -> Term {
        let mut ed = LineEditor::new(PROMPT);
        ed.set_width(width);
        let mut screen = Screen::new(width);
        screen.put(PROMPT.as_bytes());
        Term {
            ed,
            screen,
            entered: Vec::new(),
            cancelled: 0,
        }
    }

    fn keys(&mut self, bytes: &[u8]) -> &mut Term {
        self.keys_with(bytes, &NoCompletion)
    }

    fn keys_with(&mut self, bytes: &[u8], completer: &dyn Completer) -> &mut Term {
        for &b in bytes {
            let screen = &mut self.screen;
            match self.ed.feed(b, completer, &mut |out| screen.put(out)) {
                Event::None => {}
                Event::Line => {
                    self.entered.push(self.ed.text().into());
                    self.ed.clear();
                    self.screen.put(b"\r\n");
                    self.screen.put(PROMPT.as_bytes());
                }
                Event::Cancelled => {
                    assert_eq!(self.ed.text(), "");
                    self.cancelled += 1;
                    // A real terminal wraps a `^C` typed in its last columns; the model
                    // does not, so leave it out there.
                    if self.screen.col + 3 < self.screen.width {
                        self.screen.put(b"^C");
                    }
                    self.screen.put(b"\r\n");
                    self.screen.put(PROMPT.as_bytes());
                }
            }
            self.check();
        }
        self
    }

    /// The row under the cursor shows the prompt and the visible part of the line, with the
    /// cursor on the editor's cursor; the line is printable ASCII.
    fn check(&self) {
        let ed = &self.ed;
        assert!(ed.buf.iter().all(|b| (0x20..=0x7e).contains(b)));
        assert!(ed.cursor() <= ed.text().len());
        let (start, end) = ed.window();
        let expected = std::format!("{PROMPT}{}", &ed.text()[start..end]);
        assert_eq!(self.screen.current(), expected.trim_end(), "screen row");
        assert_eq!(
            self.screen.col,
            PROMPT.len() + ed.cursor() - start,
            "cursor column"
        );
        assert!(self.screen.escape.is_none(), "unfinished escape sequence");
    }

    /// The line and the cursor's position in it.
    fn shows(&self, text: &str, cursor: usize) {
        assert_eq!(self.ed.text(), text);
        assert_eq!(self.ed.cursor(), cursor);
        assert_eq!(
            self.screen.current(),
            std::format!("{PROMPT}{text}").trim_end()
        );
    }
}

#[test]
fn typing_backspace_and_enter() {
    let mut t = Term::new();
    t.keys(b"memx\x7f").shows("mem", 3);
    t.keys(b"\r\n");
    assert_eq!(t.entered, ["mem"], "CR LF is one Enter");
    t.keys(b"cpus\n\n");
    assert_eq!(t.entered, ["mem", "cpus", ""], "LF alone is Enter");
    t.keys(b"\x7f\x08").shows("", 0);
    assert_eq!(t.screen.bells, 0, "nothing to erase is quiet");
    assert_eq!(t.screen.line(0), "keel> mem");
}

#[test]
fn left_right_and_insert_in_the_middle() {
    let mut t = Term::new();
    t.keys(b"vmlist\x1b[D\x1b[D\x1b[D\x1b[D").shows("vmlist", 2);
    t.keys(b" ").shows("vm list", 3);
    t.keys(b"\x1b[C\x1b[C").shows("vm list", 5);
    t.keys(b"\x1b[C\x1b[C\x1b[C").shows("vm list", 7);
    t.keys(b"\x02\x02\x06").shows("vm list", 6);
    t.keys(b"\x01\x1b[D").shows("vm list", 0);
    t.keys(b"\r");
    assert_eq!(t.entered, ["vm list"]);
}

#[test]
fn home_and_end_in_every_spelling() {
    let homes: [&[u8]; 5] = [b"\x1b[H", b"\x1b[1~", b"\x1b[7~", b"\x1bOH", b"\x01"];
    let ends: [&[u8]; 5] = [b"\x1b[F", b"\x1b[4~", b"\x1b[8~", b"\x1bOF", b"\x05"];
    for (home, end) in homes.iter().zip(ends) {
        let mut t = Term::new();
        t.keys(b"net").keys(home).shows("net", 0);
        t.keys(b"x").shows("xnet", 1);
        t.keys(end).shows("xnet", 4);
    }
}

#[test]
fn backspace_and_delete_anywhere() {
    let mut t = Term::new();
    t.keys(b"abcdef\x1b[D\x1b[D").shows("abcdef", 4);
    t.keys(b"\x7f").shows("abcef", 3);
    t.keys(b"\x08").shows("abef", 2);
    t.keys(b"\x1b[3~").shows("abf", 2);
    t.keys(b"\x04").shows("ab", 2);
    t.keys(b"\x1b[3~\x04").shows("ab", 2);
    t.keys(b"\x01\x7f").shows("ab", 0);
    t.keys(b"\x1b[3~\x1b[3;5~").shows("", 0);
    t.keys(b"\x04").shows("", 0);
    assert_eq!(t.screen.bells, 0);
}

#[test]
fn kill_keys() {
    let mut t = Term::new();
    t.keys(b"vm stop 12\x1b[D\x1b[D").shows("vm stop 12", 8);
    t.keys(b"\x15").shows("12", 0);
    t.keys(b"\x05 x\x0b").shows("12 x", 4);
    t.keys(b"\x1b[D\x0b").shows("12 ", 3);

    let mut t = Term::new();
    t.keys(b"vm  run   hello.bin  ")
        .keys(b"\x17")
        .shows("vm  run   ", 10);
    t.keys(b"\x17").shows("vm  ", 4);
    t.keys(b"\x1b\x7f").shows("", 0);
    t.keys(b"\x17\x15").shows("", 0);

    let mut t = Term::new();
    t.keys(b"store sum file\x1b[1;5D")
        .shows("store sum file", 10);
    t.keys(b"\x17").shows("store file", 6);
    t.keys(b"\x1bb\x1bb").shows("store file", 0);
    t.keys(b"\x1bf").shows("store file", 5);
    t.keys(b"\x1b[1;3C").shows("store file", 10);
}

#[test]
fn ctrl_c_cancels_and_long_lines_ring_the_bell() {
    let mut t = Term::new();
    t.keys(b"rebo\x1b[D\x03");
    assert_eq!(t.cancelled, 1);
    assert!(t.entered.is_empty());
    assert_eq!(t.screen.line(0), "keel> rebo^C");
    t.shows("", 0);
    t.keys(&[b'x'; MAX_LINE]);
    assert_eq!(t.screen.bells, 0);
    t.keys(b"y\x01z");
    assert_eq!(t.screen.bells, 2);
    assert_eq!(t.ed.text().len(), MAX_LINE);
    assert!(!t.ed.text().contains(['y', 'z']));
}

#[test]
fn long_lines_scroll_sideways_without_wrapping() {
    let mut t = Term::with_width(20);
    // 13 columns of text fit after the 6-column prompt, leaving the last column free.
    t.keys(b"0123456789abc");
    assert_eq!(t.screen.current(), "keel> 0123456789abc");
    t.keys(b"def");
    assert_eq!(t.screen.current(), "keel> 3456789abcdef");
    t.keys(b"\x01");
    assert_eq!(t.screen.current(), "keel> 0123456789abc");
    assert_eq!(t.screen.col, PROMPT.len());
    t.keys(b"\x05\x7f\x7f\x7f\x7f");
    assert_eq!(t.screen.current(), "keel> 0123456789ab");
    t.keys(b"\r");
    assert_eq!(t.entered, ["0123456789ab"]);
}

#[test]
fn ctrl_l_clears_the_screen_and_redraws() {
    let mut t = Term::new();
    t.keys(b"mem\rvm lxst\x1b[D\x1b[D\x0c");
    assert_eq!(t.screen.row, 0);
    assert_eq!(t.screen.line(1), "");
    t.shows("vm lxst", 5);
}

#[test]
fn redraw_after_asynchronous_output() {
    let mut t = Term::new();
    t.keys(b"vm log 1\x1b[D\x1b[D");
    // What the shell does with guest output.
    t.screen.put(b"\r\x1b[2K[vm1] hello\r\n");
    let screen = &mut t.screen;
    t.ed.redraw(&mut |out| screen.put(out));
    t.check();
    assert_eq!(t.screen.line(0), "[vm1] hello");
    t.shows("vm log 1", 6);
    t.keys(b"2").shows("vm log2 1", 7);
}

#[test]
fn escape_sequences_never_insert_bytes() {
    let mut t = Term::new();
    t.keys(b"ab\x1b[A\x1b[1;5Cc\x1bOH").shows("abc", 0);
    t.keys(b"\x1b[?25h\x1b[200~\x1b[2~\x1b[5~\x1bx\x1b[>1;2m\x1b[1:2C\x1bO5")
        .shows("abc", 0);
    t.keys(b"\x1b[99999999999999999999;99999999999Z")
        .shows("abc", 0);
    // A control byte ends an unfinished sequence and still counts.
    t.keys(b"\x1b[1\r");
    assert_eq!(t.entered, ["abc"]);
    t.keys(b"x\x1b\x03");
    assert_eq!(t.cancelled, 1);
    t.keys(b"\x1b\x1b[Dq\x1bO\x7f").shows("", 0);
}

#[test]
fn control_and_high_bytes_never_enter_the_line() {
    let mut t = Term::new();
    for b in 0u8..=255 {
        if !matches!(b, b'\r' | b'\n' | 0x1b | 0x03) {
            t.keys(&[b]);
            t.ed.escape = Escape::None;
        }
    }
    assert!(t.ed.text().bytes().all(|b| (0x20..=0x7e).contains(&b)));
}

#[test]
fn history_walks_back_and_restores_the_new_line() {
    let mut t = Term::new();
    t.keys(b"mem\rcpus\rcpus\r   \r\rve");
    assert_eq!(t.ed.history().collect::<Vec<_>>(), ["mem", "cpus"]);
    t.keys(b"\x1b[A").shows("cpus", 4);
    t.keys(b"\x1b[A").shows("mem", 3);
    t.keys(b"\x1b[A").shows("mem", 3);
    assert_eq!(t.screen.bells, 1, "nothing older");
    t.keys(b"\x1b[B").shows("cpus", 4);
    t.keys(b"\x1bOB").shows("ve", 2);
    t.keys(b"\x1b[B").shows("ve", 2);
    t.keys(b"\x10\x10x\r");
    assert_eq!(t.entered.last().unwrap(), "memx");
    t.keys(b"\x10").shows("memx", 4);
    t.keys(b"\x0e").shows("", 0);
    t.keys(b"\x1b[A\x03\x1b[B").shows("", 0);
}

/// A completer shaped like the shell's: a usage table and VM ids.
fn with_completer(f: impl FnOnce(&dyn Completer)) {
    const TABLE: &[(&str, &str)] = &[
        ("help", ""),
        ("version", ""),
        ("mem", ""),
        ("modules", ""),
        ("config show", ""),
        ("console", ""),
        ("vm run <module>", ""),
        ("vm list", ""),
        ("vm stop <id>", ""),
        ("vm log <id>", ""),
        ("vm create <name> [kernel=<file>] [nic=bridged]", ""),
    ];
    let ids = |emit: &mut dyn FnMut(&str)| {
        for id in ["1", "2", "10"] {
            emit(id);
        }
    };
    let rules = [
        Rule {
            after: &[],
            words: Words::Usage(TABLE),
        },
        Rule {
            after: &["vm", "stop"],
            words: Words::Dynamic(&ids),
        },
        Rule {
            after: &["vm", "create"],
            words: Words::Options {
                skip: 1,
                list: &["kernel=", "disk=partition:", "nic=bridged", "nic=internal"],
            },
        },
    ];
    f(&Rules(&rules));
}

#[test]
fn tab_completes_an_option_that_takes_a_value_without_a_space() {
    with_completer(|c| {
        let mut t = Term::new();
        t.keys_with(b"vm create web k\t", c)
            .shows("vm create web kernel=", 21);
        t.keys_with(b"vmlinuz d\t", c)
            .shows("vm create web kernel=vmlinuz disk=partition:", 44);
        // A whole option word gets its space; two that share `nic=` complete to that.
        t.keys_with(b"big n\t", c)
            .shows("vm create web kernel=vmlinuz disk=partition:big nic=", 52);
        t.keys_with(b"i\t", c).shows(
            "vm create web kernel=vmlinuz disk=partition:big nic=internal ",
            61,
        );
        assert_eq!(t.screen.bells, 0);
    });
}

#[test]
fn tab_completes_a_unique_word_with_a_space() {
    with_completer(|c| {
        let mut t = Term::new();
        t.keys_with(b"ver\t", c).shows("version ", 8);
        t.keys_with(b"\x15vm s\t", c).shows("vm stop ", 8);
        t.keys_with(b"\x15vm\t", c).shows("vm ", 3);
        t.keys_with(b"\x15vm st\x01\x1b[C\x1b[C\x1b[C\x1b[C\x1b[C\t", c)
            .shows("vm stop ", 8);
        // In the middle of the line: the rest of the word goes in at the cursor.
        t.keys_with(b"\x15vm  10\x01\x1b[C\x1b[C\x1b[C", c);
        t.keys_with(b"li\t", c).shows("vm list 10", 7);
        assert_eq!(t.screen.bells, 0);
    });
}

#[test]
fn tab_inserts_the_common_prefix_then_lists() {
    with_completer(|c| {
        let mut t = Term::new();
        t.keys_with(b"c\t", c).shows("con", 3);
        assert_eq!(t.screen.bells, 0);
        let row = t.screen.row;
        t.keys_with(b"\t", c);
        assert_eq!(t.screen.line(row), "keel> con");
        assert_eq!(t.screen.line(row + 1), "config   console");
        t.shows("con", 3);
        t.keys_with(b"s\t", c).shows("console ", 8);

        // No progress on the first Tab: bell; the second lists.
        let mut t = Term::new();
        t.keys_with(b"vm stop \t", c).shows("vm stop ", 8);
        assert_eq!(t.screen.bells, 1);
        t.keys_with(b"\t", c);
        assert_eq!(t.screen.line(1), "1   2   10");
        t.shows("vm stop ", 8);
        t.keys_with(b"1\t", c).shows("vm stop 1", 9);
        assert_eq!(t.screen.bells, 2);
        t.keys_with(b"\x7fm\t\t", c).shows("vm stop m", 9);
        assert_eq!(t.screen.bells, 4, "nothing to offer, nothing to list");
    });
}

#[test]
fn listings_wrap_into_rows() {
    let words = |emit: &mut dyn FnMut(&str)| {
        for i in 0..12 {
            emit(&std::format!("name{i:02}"));
        }
        emit("name11");
        emit("bad word");
        emit("\u{e9}t\u{e9}");
    };
    let rules = [Rule {
        after: &[],
        words: Words::Dynamic(&words),
    }];
    let mut t = Term::with_width(30);
    t.keys_with(b"\t\t", &Rules(&rules)).shows("name", 4);
    assert_eq!(t.screen.line(1), "name00  name01  name02");
    assert_eq!(t.screen.line(4), "name09  name10  name11");
    assert_eq!(t.screen.line(5), "keel> name");
}

#[test]
fn tab_without_completer_rings_the_bell() {
    let mut t = Term::new();
    t.keys(b"mem\t\t").shows("mem", 3);
    assert_eq!(t.screen.bells, 2);
}

#[test]
fn random_bytes_never_panic_and_keep_the_screen_right() {
    // xorshift64*: deterministic, no dependencies.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    // Biased towards the bytes that do something, so sequences and edits are common.
    const INTERESTING: &[u8] = b"\x1b\x1b\x1b[[[O~;0123456789ABCDFH\x7f\x08\t\t\x01\x02\x03\x04\x05\x06\x0b\x0c\x0e\x10\x15\x17\r\n mv cs";
    with_completer(|c| {
        for width in [80, 24, 8] {
            let mut t = Term::with_width(width);
            for _ in 0..60_000 {
                let r = next();
                let byte = match r % 4 {
                    0 => (r >> 8) as u8,
                    1 => b'a' + ((r >> 8) % 26) as u8,
                    _ => INTERESTING[((r >> 8) as usize) % INTERESTING.len()],
                };
                t.keys_with(&[byte], c);
            }
            // Lines that filled up: exercise the bell path at the limit too.
            t.keys_with(&[b'x'; MAX_LINE + 3], c);
            assert_eq!(t.ed.text().len(), MAX_LINE);
        }
    });
}
