//! Tab completion for the line editor: the [`Completer`] trait the shell implements (or
//! composes from [`Rules`]), and the matching the editor does on what a completer offers.
//!
//! A completer sees the text before the cursor and offers whole words for the word being
//! completed (the text after the last space). It may offer words that do not fit: the editor
//! keeps only those that start with the partial word and are printable ASCII without spaces.

use super::line::MAX_LINE;

/// Offers the words that could stand where the cursor's word is.
pub trait Completer {
    /// Calls `out` once per candidate word for the last word of `before_cursor` (which is
    /// empty when `before_cursor` is empty or ends in a space). Called on every Tab, and once
    /// more when the editor lists the candidates, so it should offer the same words both times,
    /// each once (a listing drops only a repeat of the word just before it).
    fn complete(&self, before_cursor: &str, out: &mut dyn FnMut(&str));
}

/// Any `Fn(before_cursor, out)` closure is a completer, so a caller can build one inline
/// around borrowed state (the VM table).
impl<F: Fn(&str, &mut dyn FnMut(&str))> Completer for F {
    fn complete(&self, before_cursor: &str, out: &mut dyn FnMut(&str)) {
        self(before_cursor, out)
    }
}

/// A completer that never offers anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCompletion;

impl Completer for NoCompletion {
    fn complete(&self, _before_cursor: &str, _out: &mut dyn FnMut(&str)) {}
}

/// A function that offers words one by one to the sink it is given.
pub type WordSource<'a> = &'a dyn Fn(&mut dyn FnMut(&str));

/// A source of words for one position of a command line.
#[derive(Clone, Copy)]
pub enum Words<'a> {
    /// A fixed list (subcommands, names known up front).
    List(&'a [&'a str]),
    /// Words produced on each Tab (VM ids, boot module names): the function offers each one.
    Dynamic(WordSource<'a>),
    /// The literal words of a usage table such as the shell's `COMMANDS`: the first element
    /// of each pair is a usage line (`"vm stop <id>"`). After the words typed past the rule's
    /// prefix, the next word of every usage line that starts with those words is offered if it
    /// is a literal (letters, digits, `-`, `_`, `.`), so `<id>`, `[mem=<MiB>]` and `|` never
    /// are. Works at any depth: `vm ` offers `run list stop log`.
    Usage(&'a [(&'a str, &'a str)]),
    /// The words of `source` wherever a usage line of `table` has `placeholder` next (the
    /// same matching as [`Words::Usage`]): `<vm>` → VM names, `<module>` → boot modules.
    Argument {
        /// The usage table.
        table: &'a [(&'a str, &'a str)],
        /// The placeholder word exactly as the table writes it (`"<vm>"`).
        placeholder: &'a str,
        /// The words it stands for.
        source: WordSource<'a>,
    },
    /// Options that may come in any order, any number of times (`vm create`'s `kernel=`,
    /// `disk=`, `nic=bridged`): offered at every position once `skip` words (`<name>`) have
    /// been typed after the rule's prefix.
    Options {
        /// Words after the prefix before the options start.
        skip: usize,
        /// The option words.
        list: &'a [&'a str],
    },
}

/// Offers `words` when the complete words before the cursor start with `after`.
#[derive(Clone, Copy)]
pub struct Rule<'a> {
    /// The words that must come first (`&[]` for the command word, `&["vm", "stop"]` for the
    /// argument of `vm stop`).
    pub after: &'a [&'a str],
    /// What to offer. [`Words::List`] and [`Words::Dynamic`] apply only right after `after`;
    /// [`Words::Usage`] continues matching its table against further words.
    pub words: Words<'a>,
}

/// A completer made of rules; every rule that matches contributes.
///
/// (Not a doctest: the kernel crate is a binary.)
///
/// ```ignore
/// use crate::console::complete::{Rule, Rules, Words};
/// const TABLE: &[(&str, &str)] = &[("vm list", ""), ("vm stop <id>", ""), ("mem", "")];
/// let ids = |emit: &mut dyn FnMut(&str)| { emit("1"); emit("2") };
/// let rules = [
///     Rule { after: &[], words: Words::Usage(TABLE) },
///     Rule { after: &["vm", "stop"], words: Words::Dynamic(&ids) },
/// ];
/// let completer = Rules(&rules);
/// ```
#[derive(Clone, Copy)]
pub struct Rules<'a>(pub &'a [Rule<'a>]);

impl Completer for Rules<'_> {
    fn complete(&self, before_cursor: &str, out: &mut dyn FnMut(&str)) {
        let typed = &before_cursor[..partial_word_start(before_cursor.as_bytes())];
        for rule in self.0 {
            let mut words = typed.split_ascii_whitespace();
            if !rule.after.iter().all(|a| words.next() == Some(*a)) {
                continue;
            }
            match rule.words {
                Words::List(list) => {
                    if words.next().is_none() {
                        list.iter().for_each(|w| out(w));
                    }
                }
                Words::Dynamic(source) => {
                    if words.next().is_none() {
                        source(out);
                    }
                }
                Words::Usage(table) => usage_words(table, words, out),
                Words::Options { skip, list } => {
                    if words.count() >= skip {
                        list.iter().for_each(|w| out(w));
                    }
                }
                Words::Argument {
                    table,
                    placeholder,
                    source,
                } => {
                    if table
                        .iter()
                        .any(|(usage, _)| word_after(usage, words.clone()) == Some(placeholder))
                    {
                        source(out);
                    }
                }
            }
        }
    }
}

/// Offers the literal word that follows `typed` in each usage line, each word once.
fn usage_words<'t>(
    table: &[(&str, &str)],
    typed: impl Iterator<Item = &'t str> + Clone,
    out: &mut dyn FnMut(&str),
) {
    for (i, (usage, _)) in table.iter().enumerate() {
        let Some(word) = literal_after(usage, typed.clone()) else {
            continue;
        };
        let seen = table[..i]
            .iter()
            .any(|(earlier, _)| literal_after(earlier, typed.clone()) == Some(word));
        if !seen {
            out(word);
        }
    }
}

/// The word of `usage` after the words `typed`, if `usage` starts with them and it is literal.
fn literal_after<'u, 't>(usage: &'u str, typed: impl Iterator<Item = &'t str>) -> Option<&'u str> {
    word_after(usage, typed).filter(|w| is_literal(w))
}

/// The word of `usage` after the words `typed`, if `usage` starts with them; a `<…>`
/// placeholder in `usage` stands for any one typed word.
fn word_after<'u, 't>(usage: &'u str, typed: impl Iterator<Item = &'t str>) -> Option<&'u str> {
    let mut words = usage.split_ascii_whitespace();
    for t in typed {
        match words.next() {
            Some(w) if w == t || w.starts_with('<') => {}
            _ => return None,
        }
    }
    words.next()
}

fn is_literal(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where the word being completed starts: after the last space (or other ASCII whitespace).
pub fn partial_word_start(before_cursor: &[u8]) -> usize {
    before_cursor
        .iter()
        .rposition(u8::is_ascii_whitespace)
        .map_or(0, |i| i + 1)
}

/// Whether the editor can insert `candidate` for the partial word `prefix`.
pub(crate) fn usable(prefix: &[u8], candidate: &[u8]) -> bool {
    candidate.len() <= MAX_LINE
        && candidate.starts_with(prefix)
        && candidate.iter().all(|b| (0x21..=0x7e).contains(b))
        && !candidate.is_empty()
}

/// What the candidates for one Tab have in common.
pub(crate) struct Matches<'p> {
    prefix: &'p [u8],
    /// The first usable candidate.
    pub first: heapless::Vec<u8, MAX_LINE>,
    /// Length of the prefix all usable candidates share with `first`.
    pub common: usize,
    /// Usable candidates offered (repeats included).
    pub count: usize,
    /// Whether some candidate differs from `first`.
    pub distinct: bool,
    /// Length of the longest usable candidate.
    pub longest: usize,
}

impl<'p> Matches<'p> {
    pub fn new(prefix: &'p [u8]) -> Matches<'p> {
        Matches {
            prefix,
            first: heapless::Vec::new(),
            common: 0,
            count: 0,
            distinct: false,
            longest: 0,
        }
    }

    /// Takes one offered word.
    pub fn offer(&mut self, candidate: &str) {
        let c = candidate.as_bytes();
        if !usable(self.prefix, c) {
            return;
        }
        if self.count == 0 {
            self.first.clear();
            // Cannot fail: `usable` bounds the length by the capacity.
            let _ = self.first.extend_from_slice(c);
            self.common = c.len();
        } else {
            if c != self.first.as_slice() {
                self.distinct = true;
            }
            self.common = self
                .first
                .iter()
                .zip(c)
                .take(self.common)
                .take_while(|(a, b)| a == b)
                .count();
        }
        self.longest = self.longest.max(c.len());
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[(&str, &str)] = &[
        ("help", ""),
        ("mem", ""),
        ("modules", ""),
        ("store ls", ""),
        ("store sum <name>", ""),
        ("vm run <module> [initrd=<module>] [mem=<MiB>]", ""),
        ("vm list", ""),
        ("vm stop <id>", ""),
        ("vm log <id>", ""),
        ("config show", ""),
        ("config set <key> <value>", ""),
        ("vm info <vm>", ""),
        ("vm console <vm>", ""),
        ("net route <vm> add", ""),
    ];

    fn offered(c: &dyn Completer, before: &str) -> std::vec::Vec<std::string::String> {
        let mut words = std::vec::Vec::new();
        c.complete(before, &mut |w| words.push(std::string::String::from(w)));
        words
    }

    fn shell_like<R>(f: impl FnOnce(&Rules<'_>) -> R) -> R {
        let ids = |emit: &mut dyn FnMut(&str)| {
            emit("1");
            emit("12");
        };
        let names = |emit: &mut dyn FnMut(&str)| {
            emit("web");
            emit("db");
        };
        let rules = [
            Rule {
                after: &[],
                words: Words::Usage(TABLE),
            },
            Rule {
                after: &["help"],
                words: Words::Usage(TABLE),
            },
            Rule {
                after: &["vm", "stop"],
                words: Words::Dynamic(&ids),
            },
            Rule {
                after: &["vm", "run"],
                words: Words::List(&["hello.bin", "vmlinuz"]),
            },
            Rule {
                after: &[],
                words: Words::Argument {
                    table: TABLE,
                    placeholder: "<vm>",
                    source: &names,
                },
            },
            Rule {
                after: &["vm", "create"],
                words: Words::Options {
                    skip: 1,
                    list: &["kernel=", "nic=bridged", "nic=internal", "autostart"],
                },
            },
        ];
        f(&Rules(&rules))
    }

    #[test]
    fn usage_table_gives_commands_and_subcommands() {
        shell_like(|c| {
            assert_eq!(
                offered(c, "m"),
                ["help", "mem", "modules", "store", "vm", "config", "net"]
            );
            let vm = ["run", "list", "stop", "log", "info", "console"];
            assert_eq!(offered(c, "vm "), vm);
            assert_eq!(offered(c, "vm  st"), vm);
            assert_eq!(offered(c, "store s"), ["ls", "sum"]);
            assert_eq!(offered(c, "config "), ["show", "set"]);
            assert!(offered(c, "config set ").is_empty(), "<key> is no literal");
            assert!(offered(c, "mem ").is_empty());
        });
    }

    #[test]
    fn help_takes_commands_at_any_depth() {
        shell_like(|c| {
            assert_eq!(offered(c, "help ").len(), 7);
            assert_eq!(offered(c, "help vm l")[..4], ["run", "list", "stop", "log"]);
        });
    }

    #[test]
    fn dynamic_and_list_rules_fill_argument_positions() {
        shell_like(|c| {
            assert_eq!(offered(c, "vm stop "), ["1", "12"]);
            assert_eq!(offered(c, "vm stop 1"), ["1", "12"]);
            assert!(
                offered(c, "vm stop 1 ").is_empty(),
                "only right after the prefix"
            );
            assert_eq!(offered(c, "vm run v"), ["hello.bin", "vmlinuz"]);
            assert!(offered(c, "vm log ").is_empty());
        });
    }

    #[test]
    fn placeholders_take_caller_words_and_match_any_typed_word() {
        shell_like(|c| {
            assert_eq!(offered(c, "vm info "), ["web", "db"]);
            assert_eq!(offered(c, "vm console w"), ["web", "db"]);
            assert_eq!(offered(c, "net route "), ["web", "db"]);
            assert_eq!(offered(c, "net route web "), ["add"]);
            assert!(offered(c, "vm info web ").is_empty());
            assert!(offered(c, "vm list ").is_empty());
            assert!(
                offered(c, "help vm info ").is_empty(),
                "the rule's table starts at the command word"
            );
        });
    }

    #[test]
    fn options_come_at_any_position_after_the_skipped_words() {
        shell_like(|c| {
            let options = ["kernel=", "nic=bridged", "nic=internal", "autostart"];
            assert!(offered(c, "vm create ").is_empty(), "the name comes first");
            assert!(offered(c, "vm create we").is_empty());
            assert_eq!(offered(c, "vm create web "), options);
            assert_eq!(offered(c, "vm create web kernel=k nic="), options);
            assert_eq!(
                offered(c, "vm create web nic=bridged nic=internal "),
                options
            );
            assert!(offered(c, "vm info web ").is_empty());
        });
        // The editor keeps those that fit the partial word: `nic=` completes to both.
        let mut m = Matches::new(b"nic=");
        for w in ["kernel=", "nic=bridged", "nic=internal", "autostart"] {
            m.offer(w);
        }
        assert_eq!((m.count, m.common), (2, 4));
    }

    #[test]
    fn matches_find_the_common_prefix() {
        let mut m = Matches::new(b"m");
        for w in ["help", "mem", "modules", "m e", "m\u{e9}", "mem"] {
            m.offer(w);
        }
        assert_eq!(m.count, 3);
        assert!(m.distinct);
        assert_eq!(&m.first[..m.common], b"m");
        assert_eq!(m.longest, 7);

        let mut m = Matches::new(b"st");
        m.offer("stop");
        m.offer("stop");
        assert!(!m.distinct, "repeats are one candidate");
        assert_eq!(m.common, 4);
    }

    #[test]
    fn closures_are_completers() {
        let names = ["alpha", "beta"];
        let closure = |before: &str, out: &mut dyn FnMut(&str)| {
            if before.starts_with("vm ") {
                names.iter().for_each(|n| out(n));
            }
        };
        assert_eq!(offered(&closure, "vm a"), ["alpha", "beta"]);
        assert!(offered(&closure, "a").is_empty());
    }

    #[test]
    fn no_completion_offers_nothing() {
        assert!(offered(&NoCompletion, "vm ").is_empty());
        assert_eq!(partial_word_start(b"vm st"), 3);
        assert_eq!(partial_word_start(b"vm"), 0);
        assert_eq!(partial_word_start(b""), 0);
    }
}
