//! Command history for the line editor: a fixed ring of past lines and the Up/Down walk
//! through it.
//!
//! The walk keeps the line being typed when it starts (the "newest" entry) and gives it back
//! when the operator comes down past the most recent entry. Edits to a recalled entry are not
//! written back into the history: walking away from it shows the stored entry again next time.

use super::line::MAX_LINE;

/// Lines kept; the oldest is dropped when a new one arrives.
pub const HISTORY_LEN: usize = 32;

/// One stored line: printable ASCII only (the editor never stores anything else).
type Entry = heapless::Vec<u8, MAX_LINE>;

/// Past lines, oldest first, and the position of an Up/Down walk.
pub struct History {
    entries: heapless::Deque<Entry, HISTORY_LEN>,
    /// `None` while editing the new line; `Some(n)` while showing the `n`th most recent entry
    /// (0 is the most recent).
    walk: Option<usize>,
    /// The new line as it was when the walk started.
    saved: Entry,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history.
    pub const fn new() -> History {
        History {
            entries: heapless::Deque::new(),
            walk: None,
            saved: heapless::Vec::new(),
        }
    }

    /// Number of stored lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no line is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The stored lines, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|e| e.as_slice())
    }

    /// Whether an Up/Down walk is in progress.
    pub fn walking(&self) -> bool {
        self.walk.is_some()
    }

    /// Stores a finished line and ends any walk. Blank lines, lines longer than
    /// [`MAX_LINE`] and repeats of the most recent entry are not stored.
    pub fn add(&mut self, line: &[u8]) {
        self.end_walk();
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if self
            .entries
            .back()
            .is_some_and(|last| last.as_slice() == line)
        {
            return;
        }
        let Ok(entry) = Entry::from_slice(line) else {
            return;
        };
        if self.entries.is_full() {
            self.entries.pop_front();
        }
        // Cannot fail: a slot was freed above when the ring was full.
        let _ = self.entries.push_back(entry);
    }

    /// Ends a walk without restoring anything (the line was entered or abandoned).
    pub fn end_walk(&mut self) {
        self.walk = None;
        self.saved.clear();
    }

    /// Up: the next older entry, or `None` at the oldest one. `current` is the line on screen;
    /// it is kept when the walk starts so that [`newer`](Self::newer) can give it back.
    pub fn older(&mut self, current: &[u8]) -> Option<&[u8]> {
        let next = match self.walk {
            None => 0,
            Some(n) => n + 1,
        };
        if next >= self.entries.len() {
            return None;
        }
        if self.walk.is_none() {
            self.saved.clear();
            // `current` comes from the editor's buffer, which has the same capacity.
            let _ = self
                .saved
                .extend_from_slice(&current[..current.len().min(MAX_LINE)]);
        }
        self.walk = Some(next);
        self.recent(next)
    }

    /// Down: the next newer entry, the line that was being typed when the walk started, or
    /// `None` when no walk is in progress.
    pub fn newer(&mut self) -> Option<&[u8]> {
        match self.walk? {
            0 => {
                self.walk = None;
                Some(self.saved.as_slice())
            }
            n => {
                self.walk = Some(n - 1);
                self.recent(n - 1)
            }
        }
    }

    /// The `n`th most recent entry (0 is the most recent).
    fn recent(&self, n: usize) -> Option<&[u8]> {
        let index = self.entries.len().checked_sub(n + 1)?;
        self.entries.get(index).map(|e| e.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk_up(h: &mut History, current: &[u8]) -> std::vec::Vec<std::string::String> {
        let mut seen = std::vec::Vec::new();
        let mut first = true;
        loop {
            let cur: &[u8] = if first { current } else { b"" };
            first = false;
            match h.older(cur) {
                Some(e) => seen.push(std::string::String::from_utf8(e.to_vec()).unwrap()),
                None => return seen,
            }
        }
    }

    #[test]
    fn most_recent_first_and_the_new_line_comes_back() {
        let mut h = History::new();
        h.add(b"mem");
        h.add(b"cpus");
        h.add(b"net");
        assert_eq!(walk_up(&mut h, b"ve"), ["net", "cpus", "mem"]);
        assert!(h.walking());
        assert_eq!(h.newer(), Some(&b"cpus"[..]));
        assert_eq!(h.newer(), Some(&b"net"[..]));
        assert_eq!(h.newer(), Some(&b"ve"[..]), "the line being typed");
        assert!(!h.walking());
        assert_eq!(h.newer(), None);
    }

    #[test]
    fn blanks_and_repeats_are_not_stored() {
        let mut h = History::new();
        h.add(b"");
        h.add(b"   ");
        h.add(b"mem");
        h.add(b"mem");
        h.add(b"cpus");
        h.add(b"mem");
        assert_eq!(
            h.iter().collect::<std::vec::Vec<_>>(),
            [&b"mem"[..], b"cpus", b"mem"]
        );
    }

    #[test]
    fn capacity_is_fixed_and_the_oldest_goes() {
        let mut h = History::new();
        for i in 0..HISTORY_LEN + 5 {
            h.add(std::format!("cmd{i}").as_bytes());
        }
        assert_eq!(h.len(), HISTORY_LEN);
        assert_eq!(h.iter().next(), Some(&b"cmd5"[..]));
        let up = walk_up(&mut h, b"");
        assert_eq!(up.len(), HISTORY_LEN);
        assert_eq!(up[0], std::format!("cmd{}", HISTORY_LEN + 4));
    }

    #[test]
    fn empty_history_has_nothing_to_walk() {
        let mut h = History::new();
        assert!(h.is_empty());
        assert_eq!(h.older(b"abc"), None);
        assert!(!h.walking());
        assert_eq!(h.newer(), None);
    }

    #[test]
    fn adding_ends_the_walk() {
        let mut h = History::new();
        h.add(b"a");
        h.add(b"b");
        assert_eq!(h.older(b"x"), Some(&b"b"[..]));
        h.add(b"b");
        assert!(!h.walking());
        assert_eq!(h.older(b""), Some(&b"b"[..]));
    }
}
