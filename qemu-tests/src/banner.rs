//! The boot banner the kernel prints on COM1 before its first prompt:
//!
//! ```text
//! Keel 0.1.0
//!   hostname:       keel
//!   boot path:      PVH
//!   cpu:            AuthenticAMD, QEMU Virtual CPU version 2.5+
//!   virtualization: AMD-V with NPT, ...
//!   memory:         1006 MiB usable
//!   cpus:           2
//!   boot time:      37 ms from kernel entry to prompt
//! keel>
//! ```

use crate::report::printable;

/// The first line of the banner, and of `version`'s answer.
pub const VERSION_LINE: &str = "Keel 0.1.0";

/// The console prompt (note the trailing space; no newline follows it).
pub const PROMPT: &str = "keel> ";

/// The parsed banner: the `label: value` lines between the version line and the prompt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Banner {
    fields: Vec<(String, String)>,
    /// The banner as printed, made printable (see [`crate::report::printable`]).
    pub text: String,
}

impl Banner {
    /// Parses the console text that followed the version line, up to the prompt. Lines that
    /// are not indented `label: value` pairs are kept in [`Banner::text`] but not as fields.
    pub fn parse(raw: &[u8]) -> Self {
        let text = printable(raw);
        let fields = text
            .lines()
            .filter_map(|line| {
                let body = line.strip_prefix("  ")?;
                let (label, value) = body.split_once(':')?;
                let label = label.trim();
                let plain = !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-');
                plain.then(|| (label.to_owned(), value.trim().to_owned()))
            })
            .collect();
        Banner { fields, text }
    }

    /// The value of a field (`"boot path"`, `"cpus"`, ...), trimmed.
    pub fn field(&self, label: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.as_str())
    }

    /// The first unsigned integer in a field's value (`memory: 1006 MiB usable` → 1006).
    pub fn number(&self, label: &str) -> Option<u64> {
        first_number(self.field(label)?)
    }

    /// All fields, in the order printed.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }
}

/// The first run of ASCII digits in `s`, as a number.
pub fn first_number(s: &str) -> Option<u64> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let digits: String = s[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\r\n  boot path:      PVH\r\n  cpu:            AuthenticAMD, QEMU Virtual CPU version 2.5+\r\n  virtualization: AMD-V with NPT, ASID\r\n  memory:         1006 MiB usable\r\n  cpus:           2\r\n  boot time:      37 ms from kernel entry to prompt\r\n";

    #[test]
    fn parses_the_contract_banner() {
        let b = Banner::parse(SAMPLE);
        assert_eq!(b.field("boot path"), Some("PVH"));
        assert_eq!(
            b.field("cpu"),
            Some("AuthenticAMD, QEMU Virtual CPU version 2.5+")
        );
        assert_eq!(b.field("virtualization"), Some("AMD-V with NPT, ASID"));
        assert_eq!(b.number("memory"), Some(1006));
        assert_eq!(b.number("cpus"), Some(2));
        assert_eq!(b.number("boot time"), Some(37));
        assert_eq!(b.field("nonexistent"), None);
        assert_eq!(b.fields().len(), 6);
    }

    #[test]
    fn ignores_lines_that_are_not_fields() {
        let b = Banner::parse(b"noise: not indented\r\n  [ 0.1] log: x\r\n  cpus: 4\r\n");
        assert_eq!(b.fields().len(), 1);
        assert_eq!(b.number("cpus"), Some(4));
    }

    #[test]
    fn values_with_colons_survive() {
        let b = Banner::parse(b"  virtualization: none (cpuid: no svm)\r\n");
        assert_eq!(b.field("virtualization"), Some("none (cpuid: no svm)"));
    }

    #[test]
    fn first_number_cases() {
        assert_eq!(first_number("1006 MiB usable"), Some(1006));
        assert_eq!(first_number("took 37 ms"), Some(37));
        assert_eq!(first_number("none"), None);
        assert_eq!(first_number(""), None);
    }
}
