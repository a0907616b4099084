//! The management API's bearer token, until the configuration partition carries it.
//!
//! `keel build` creates a random token once, keeps it in `target/keel/api-token` (mode 0600)
//! so rebuilds keep it, and passes it to the kernel as `keel.api-token=<token>` on the
//! command line in `grub.cfg`.

use std::io::{Read, Write};
use std::path::Path;

/// Length of a token in hex characters (128 random bits).
pub const TOKEN_HEX_LEN: usize = 32;

/// Whether `token` looks like one `keel build` makes.
pub fn is_valid(token: &str) -> bool {
    token.len() == TOKEN_HEX_LEN && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads the token in `path`, or creates a new random one there.
pub fn load_or_create(path: &Path) -> std::io::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if is_valid(existing) {
            return Ok(existing.to_owned());
        }
    }
    let mut random = [0u8; TOKEN_HEX_LEN / 2];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{token}")?;
    Ok(token)
}

/// `cmdline` with `keel.api-token=<token>` appended, unless it already sets one.
pub fn with_token(cmdline: &str, token: &str) -> String {
    if cmdline
        .split_whitespace()
        .any(|w| w.starts_with("keel.api-token="))
    {
        return cmdline.to_owned();
    }
    let sep = if cmdline.trim().is_empty() { "" } else { " " };
    format!("{}{sep}keel.api-token={token}", cmdline.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        let first = load_or_create(&path).unwrap();
        assert!(is_valid(&first), "{first}");
        assert_eq!(load_or_create(&path).unwrap(), first);
        std::fs::write(&path, "garbage").unwrap();
        let second = load_or_create(&path).unwrap();
        assert!(is_valid(&second));
        assert_ne!(second, first);
    }

    #[test]
    fn the_cmdline_gets_the_token_once() {
        assert_eq!(with_token("", "ab"), "keel.api-token=ab");
        assert_eq!(with_token("quiet", "ab"), "quiet keel.api-token=ab");
        assert_eq!(with_token("keel.api-token=x", "ab"), "keel.api-token=x");
    }
}
