//! The fleet inventory: which appliances `keel fleet …` (and `keel --appliance NAME`) talk to.
//!
//! A TOML file, by default `$XDG_CONFIG_HOME/keel/fleet.toml` (`~/.config/keel/fleet.toml`
//! when `XDG_CONFIG_HOME` is unset), one `[[appliance]]` table per appliance:
//!
//! ```toml
//! [[appliance]]
//! name = "rack1-a"
//! url = "https://10.0.0.5"
//! token = "…"            # optional; else KEEL_TOKEN
//! fingerprint = "AB:CD:…" # optional: the certificate's SHA-256; else pinned on first use
//!                         # in `known-appliances` next to this file
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why an inventory could not be used. Every message names the file, so an operator with
/// several inventories knows which one to fix.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Neither `--fleet` nor a home directory to find the default inventory under.
    #[error(
        "no inventory: pass --fleet FILE, or set HOME (or XDG_CONFIG_HOME) so that \
         ~/.config/keel/fleet.toml can be found"
    )]
    NoDefaultPath,
    /// The file could not be read (absent, unreadable).
    #[error("cannot read the inventory {}: {source} (create it with one [[appliance]] table \
             per appliance: name, url, optional token; or pass --fleet FILE)", path.display())]
    Read {
        /// The inventory file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Not TOML, or not the inventory's shape (unknown or missing keys, wrong types); the
    /// message carries the line and column.
    #[error("the inventory {} is not valid: {message}", path.display())]
    Parse {
        /// The inventory file.
        path: PathBuf,
        /// The TOML parser's message, with the place in the file.
        message: String,
    },
    /// The file parsed but one appliance's entry breaks a rule (empty name, bad URL, a name
    /// used twice, no appliances at all).
    #[error("the inventory {}: {problem}", path.display())]
    Invalid {
        /// The inventory file.
        path: PathBuf,
        /// What is wrong, naming the appliance (`appliance[2] "rack1-b"`).
        problem: String,
    },
}

/// The file's shape as serde reads it; [`load_inventory`] checks the rules serde cannot.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    #[serde(default)]
    appliance: Vec<InventoryEntry>,
}

/// One appliance of the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryEntry {
    /// What the operator calls it (`rack1-a`): unique in the inventory, used by `--appliance`
    /// and `--place`, and as the first column of fleet tables.
    pub name: String,
    /// Where its API listens: `http://host[:port]`, no path.
    pub url: String,
    /// Its API token; `None` means KEEL_TOKEN (or no token) at the time of the command.
    #[serde(default)]
    pub token: Option<String>,
    /// The SHA-256 fingerprint its `https://` certificate must have (as the appliance's
    /// `net` command prints it); `None` pins the certificate on first use in the pin file.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl InventoryEntry {
    /// The fingerprint in canonical form (checked by [`parse_inventory`], so a present one
    /// is valid).
    pub fn checked_fingerprint(&self) -> Option<String> {
        self.fingerprint
            .as_deref()
            .and_then(crate::client::pin::normalize_fingerprint)
    }
}

/// Every appliance of an inventory file, in the file's order (fleet tables keep that order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// The appliances.
    pub appliances: Vec<InventoryEntry>,
}

impl Inventory {
    /// The appliance called `name`, if the inventory has one.
    pub fn find(&self, name: &str) -> Option<&InventoryEntry> {
        self.appliances.iter().find(|a| a.name == name)
    }

    /// The names, comma-separated: for "no appliance X; the inventory has …" messages.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.appliances.iter().map(|a| a.name.as_str()).collect();
        names.join(", ")
    }
}

/// Where the inventory is when `--fleet` is not given: `$XDG_CONFIG_HOME/keel/fleet.toml`,
/// else `$HOME/.config/keel/fleet.toml` (the XDG base directory rules; an empty or relative
/// `XDG_CONFIG_HOME` is ignored, as the spec says).
pub fn default_inventory_path() -> Result<PathBuf, FleetError> {
    default_inventory_path_from(
        std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// [`default_inventory_path`] with the environment passed in (for tests).
pub fn default_inventory_path_from(
    xdg_config_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf, FleetError> {
    let config_dir = match (xdg_config_home, home) {
        (Some(xdg), _) if xdg.is_absolute() => xdg,
        (_, Some(home)) if !home.as_os_str().is_empty() => home.join(".config"),
        _ => return Err(FleetError::NoDefaultPath),
    };
    Ok(config_dir.join("keel").join("fleet.toml"))
}

/// Reads and checks the inventory at `path`.
pub fn load_inventory(path: &Path) -> Result<Inventory, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_inventory(&text, path)
}

/// Parses and checks inventory text; `path` is only for messages.
pub fn parse_inventory(text: &str, path: &Path) -> Result<Inventory, FleetError> {
    let file: InventoryFile = toml::from_str(text).map_err(|e| FleetError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let invalid = |problem: String| FleetError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    if file.appliance.is_empty() {
        return Err(invalid(
            "no appliances: add one [[appliance]] table per appliance (name, url, optional token)"
                .to_string(),
        ));
    }
    for (index, entry) in file.appliance.iter().enumerate() {
        let name = entry.name.trim();
        if name.is_empty() || name != entry.name || name.chars().any(char::is_whitespace) {
            return Err(invalid(format!(
                "appliance[{index}]: name {:?} must be non-empty, without spaces",
                entry.name
            )));
        }
        // `--place auto` means "choose": an appliance of that name could never be named.
        if entry.name == "auto" {
            return Err(invalid(format!(
                "appliance[{index}]: the name \"auto\" is reserved (`--place auto` means \
                 choose one): call it something else"
            )));
        }
        if let Some(reason) = url_problem(&entry.url) {
            return Err(invalid(format!(
                "appliance[{index}] {:?}: url {:?} {reason} (like https://10.0.0.5 or \
                 https://127.0.0.1:8443)",
                entry.name, entry.url
            )));
        }
        if let Some(print) = &entry.fingerprint
            && crate::client::pin::normalize_fingerprint(print).is_none()
        {
            return Err(invalid(format!(
                "appliance[{index}] {:?}: fingerprint {print:?} is not a SHA-256 fingerprint \
                 (32 bytes of hex, colons allowed, as the appliance's `net` command prints it)",
                entry.name
            )));
        }
        if let Some(first) = file.appliance[..index]
            .iter()
            .position(|other| other.name == entry.name)
        {
            return Err(invalid(format!(
                "appliance[{index}]: the name {:?} is used by appliance[{first}] already: \
                 names must be unique",
                entry.name
            )));
        }
    }
    Ok(Inventory {
        appliances: file.appliance,
    })
}

/// What is wrong with an appliance URL, if anything: paths are the client's business, so
/// only `https://host[:port]` (or `http://` for an appliance with `management.http =
/// "serve"`) is accepted.
fn url_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Some("is not an https:// URL");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Some("has no host");
    }
    if authority.contains('/') || authority.contains('?') || authority.contains('#') {
        return Some("has a path: give only https://host[:port]");
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Some("has a port that is not a number from 0 to 65535");
    }
    None
}
