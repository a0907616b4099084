//! Turning raw console bytes into text a person can read in a failed test's output.

/// How much of the console transcript a failure report shows.
pub const TRANSCRIPT_TAIL: usize = 4096;

/// How much of the decoded COM2 log, and of each emulator log file, a report shows.
pub const LOG_TAIL: usize = 4096;

/// Renders console bytes as plain text: ANSI escape sequences (firmware and GRUB move the
/// cursor a lot) are dropped, `\r\n` and `\n\r` become `\n`, a lone `\r` is dropped, other
/// control bytes and invalid UTF-8 are shown as `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0x1b => i = skip_escape(bytes, i),
            b'\r' => i += 1,
            b'\n' | b'\t' => {
                out.push(bytes[i] as char);
                i += 1;
            }
            b if b < 0x20 || b == 0x7f => {
                out.push_str(&format!("\\x{b:02x}"));
                i += 1;
            }
            b if b < 0x80 => {
                out.push(b as char);
                i += 1;
            }
            _ => {
                // Multi-byte UTF-8: take the longest valid sequence starting here.
                let end = (i + 4).min(bytes.len());
                match (i + 2..=end)
                    .rev()
                    .find_map(|e| std::str::from_utf8(&bytes[i..e]).ok().map(|s| (s, e)))
                {
                    Some((s, e)) => {
                        out.push_str(s);
                        i = e;
                    }
                    None => {
                        out.push_str(&format!("\\x{:02x}", bytes[i]));
                        i += 1;
                    }
                }
            }
        }
    }
    out
}

/// Returns the index just past the escape sequence that starts at `start` (an ESC byte).
fn skip_escape(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    match bytes.get(i) {
        // CSI: parameters and intermediates, then one final byte in 0x40..=0x7e.
        Some(b'[') => {
            i += 1;
            while let Some(&b) = bytes.get(i) {
                i += 1;
                if (0x40..=0x7e).contains(&b) {
                    break;
                }
            }
            i
        }
        // Two-byte sequences such as ESC c or ESC 7.
        Some(_) => i + 1,
        None => i,
    }
}

/// The last `max` bytes of `bytes`, rendered with [`printable`], and whether anything was cut.
/// The cut moves forward to the next line start when one is near, so the first line shown is
/// whole.
pub fn tail(bytes: &[u8], max: usize) -> (String, bool) {
    if bytes.len() <= max {
        return (printable(bytes), false);
    }
    let mut start = bytes.len() - max;
    if let Some(nl) = bytes[start..].iter().take(200).position(|&b| b == b'\n') {
        start += nl + 1;
    }
    (printable(&bytes[start..]), true)
}

/// The last `max` bytes of a text, cut at a character boundary.
pub fn tail_str(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Normalizes console text for assertions: `printable`, then trailing spaces removed from
/// every line.
pub fn clean(bytes: &[u8]) -> String {
    printable(bytes)
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A section of a failure report: a header line, the body, and a newline at the end.
pub fn section(out: &mut String, title: &str, body: &str) {
    out.push_str("--- ");
    out.push_str(title);
    out.push_str(" ---\n");
    out.push_str(body);
    if !body.ends_with('\n') {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes_and_carriage_returns() {
        let raw = b"\x1b[H\x1b[J\x1b[1;1HVEHICLE\r\n\rgrub> \x1b[9;7He\x1b[?25h\r\nok\x1bc";
        assert_eq!(printable(raw), "VEHICLE\ngrub> e\nok");
    }

    #[test]
    fn shows_control_bytes_and_bad_utf8() {
        assert_eq!(printable(b"a\x00b\x07\xffc\x7f"), "a\\x00b\\x07\\xffc\\x7f");
        assert_eq!(printable("µs ✓".as_bytes()), "µs ✓");
        // A multi-byte sequence cut off by the end of the buffer.
        assert_eq!(printable(&"✓".as_bytes()[..2]), "\\xe2\\x9c");
        assert_eq!(printable(b"tab\there"), "tab\there");
        // An escape at the very end.
        assert_eq!(printable(b"x\x1b"), "x");
        assert_eq!(printable(b"x\x1b[12"), "x");
    }

    #[test]
    fn tail_keeps_the_end_and_starts_at_a_line() {
        let mut raw = Vec::new();
        for i in 0..1000 {
            raw.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        let (text, cut) = tail(&raw, 100);
        assert!(cut);
        assert!(text.ends_with("line 999\n"));
        assert!(text.starts_with("line "), "{text:?}");
        assert!(text.len() <= 100);
        let (whole, cut) = tail(b"short\r\n", 100);
        assert!(!cut);
        assert_eq!(whole, "short\n");
    }

    #[test]
    fn tail_without_newlines_still_cuts() {
        let raw = vec![b'x'; 10_000];
        let (text, cut) = tail(&raw, 4096);
        assert!(cut);
        assert_eq!(text.len(), 4096);
    }

    #[test]
    fn tail_str_respects_char_boundaries() {
        assert_eq!(tail_str("abc", 10), "abc");
        assert_eq!(tail_str("aµµ", 3), "µ");
        assert_eq!(tail_str("hello", 2), "lo");
    }

    #[test]
    fn clean_trims_lines() {
        assert_eq!(clean(b"a  \r\nb\t\r\n"), "a\nb");
    }
}
