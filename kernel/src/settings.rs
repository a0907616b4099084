//! The running configuration: loaded from the boot disk's `keel-config` partition at boot,
//! edited on the console (`config set`, kept as a pending copy until `config save`), and
//! replaced by `PUT /api/v1/config`.
//!
//! [`Settings`] is pure (the disk comes in as a [`BlockDevice`]) and host-tested. The kernel's
//! main loop (`crate::runtime::Kernel`) owns the one instance and lends it to the console and
//! the API in turn; nothing else holds it.
//!
//! What takes effect when: the hostname and the API tokens at once (every reader asks
//! [`Settings::current`]; when [`Settings::revision`] moves the main loop hands the new
//! configuration to the HTTP plane, for its tokens, and to the VM manager); the network
//! addressing and the HTTP port at the next boot ([`Settings::reboot_needed`] says which of
//! them changed since boot).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use keel_config::edit::{self, Change, EditError};
use keel_config::record::{self, BlockDevice, RecordError, Slot, SlotFault, SlotState, StoreError};
use keel_config::{Config, ValidationError};

/// Where the running configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A record on the boot disk: loaded at boot, or saved since.
    Disk {
        /// Its generation.
        generation: u64,
        /// The slot it was loaded from (`None` after a save: the store picks the slot).
        slot: Option<Slot>,
    },
    /// The built-in defaults, because the boot disk holds no usable configuration.
    Defaults {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Disk {
                generation,
                slot: Some(slot),
            } => write!(f, "generation {generation} from slot {slot}"),
            Source::Disk {
                generation,
                slot: None,
            } => write!(f, "generation {generation} (saved since boot)"),
            Source::Defaults { reason } => write!(f, "built-in defaults ({reason})"),
        }
    }
}

/// Why a save was refused or failed. The running and the saved configuration are unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveError<E> {
    /// The configuration was replaced (over HTTP) after the pending edits began; saving them
    /// would silently undo that change.
    Stale,
    /// The configuration breaks these rules.
    Invalid(Vec<ValidationError>),
    /// The disk refused or failed.
    Store(StoreError<E>),
}

impl<E: fmt::Display> fmt::Display for SaveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaveError::Stale => f.write_str(
                "the configuration was replaced (over HTTP) since your first 'config set': \
                 'config diff' shows your edits against it; 'config revert' drops them",
            ),
            SaveError::Invalid(errors) => {
                f.write_str("invalid configuration: ")?;
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
            SaveError::Store(e) => write!(
                f,
                "saving to the boot disk failed: {e}; the previous configuration is still in effect"
            ),
        }
    }
}

/// Console edits not saved yet.
#[derive(Clone, Debug)]
struct Pending {
    config: Config,
    /// The ETag of the running configuration when the first edit was made.
    base: String,
}

/// The running configuration and the console's pending edits.
#[derive(Clone, Debug)]
pub struct Settings {
    current: Config,
    source: Source,
    pending: Option<Pending>,
    /// The configuration the network came up with at boot.
    booted: Config,
    revision: u64,
}

/// What a save did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    /// The generation it was saved as.
    pub generation: u64,
    /// What changed against the previous running configuration (tokens not masked).
    pub changes: Vec<Change>,
}

impl Settings {
    /// Running with `config`, from `source`.
    pub fn new(config: Config, source: Source) -> Settings {
        Settings {
            booted: config.clone(),
            current: config,
            source,
            pending: None,
            revision: 0,
        }
    }

    /// Loads the configuration at boot: the newest valid record of `disk`; the built-in
    /// defaults when there is no disk (`Err` says why) or no valid record on it. Returns the
    /// settings and the lines to print on the console: one saying what was loaded, or a
    /// loud warning, and a warning about a damaged other slot.
    pub fn boot<D: BlockDevice>(disk: Result<&mut D, String>) -> (Settings, Vec<String>)
    where
        D::Error: fmt::Display,
    {
        let defaults = |reason: String| {
            let line = format!(
                "WARNING: no valid configuration on the boot disk ({reason}): \
                 running with built-in defaults"
            );
            (
                Settings::new(Config::default(), Source::Defaults { reason }),
                alloc::vec![line],
            )
        };
        let dev = match disk {
            Ok(dev) => dev,
            Err(reason) => return defaults(reason),
        };
        let loaded = match record::load(dev) {
            Ok(loaded) => loaded,
            Err(e) => return defaults(e.to_string()),
        };
        let config = match Config::from_json(&loaded.payload) {
            Ok(config) => config,
            Err(e) => {
                return defaults(format!(
                    "generation {} in slot {} is not a usable configuration: {e}",
                    loaded.generation, loaded.slot
                ));
            }
        };
        let source = Source::Disk {
            generation: loaded.generation,
            slot: Some(loaded.slot),
        };
        let mut lines = alloc::vec![format!("config: loaded {source}")];
        match &loaded.other_slot_state {
            // A slot never written (a new image) is not worth a warning.
            SlotState::Faulty(SlotFault::Invalid(RecordError::Blank)) | SlotState::Valid { .. } => {
            }
            SlotState::Faulty(fault) => lines.push(format!(
                "warning: config slot {} holds no usable record ({fault}); the next save \
                 rewrites it",
                loaded.slot.other()
            )),
        }
        (Settings::new(config, source), lines)
    }

    /// The running configuration.
    pub fn current(&self) -> &Config {
        &self.current
    }

    /// Where it came from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Counts replacements of the running configuration since boot.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The pending copy, if `config set` made one.
    pub fn pending(&self) -> Option<&Config> {
        self.pending.as_ref().map(|p| &p.config)
    }

    /// Sets `path` to `value` in the pending copy (made from the running configuration on
    /// the first edit). On error nothing changes.
    pub fn set(&mut self, path: &str, value: &str) -> Result<Vec<Change>, EditError> {
        let base = self.pending().unwrap_or(&self.current);
        let edited = edit::set(base, path, value)?;
        let changes = edit::diff(base, &edited);
        match &mut self.pending {
            Some(pending) => pending.config = edited,
            None => {
                self.pending = Some(Pending {
                    config: edited,
                    base: edit::etag(&self.current),
                })
            }
        }
        Ok(changes)
    }

    /// Drops the pending copy; says whether there was one.
    pub fn revert(&mut self) -> bool {
        self.pending.take().is_some()
    }

    /// The pending copy against the running configuration (empty without pending edits).
    pub fn diff(&self) -> Vec<Change> {
        self.pending()
            .map(|p| edit::diff(&self.current, p))
            .unwrap_or_default()
    }

    /// Saves the pending copy (or, without edits, the running configuration again) to
    /// `disk` and makes it the running configuration.
    pub fn save_pending<D: BlockDevice>(
        &mut self,
        disk: &mut D,
    ) -> Result<Saved, SaveError<D::Error>> {
        let config = match &self.pending {
            Some(p) if p.base != edit::etag(&self.current) => return Err(SaveError::Stale),
            Some(p) => p.config.clone(),
            None => self.current.clone(),
        };
        let saved = self.persist(disk, config)?;
        self.pending = None;
        Ok(saved)
    }

    /// Saves `config` to `disk` and makes it the running configuration (`PUT`). Pending
    /// console edits stay, and `config save` will refuse them as stale.
    pub fn replace<D: BlockDevice>(
        &mut self,
        disk: &mut D,
        config: Config,
    ) -> Result<Saved, SaveError<D::Error>> {
        self.persist(disk, config)
    }

    fn persist<D: BlockDevice>(
        &mut self,
        disk: &mut D,
        config: Config,
    ) -> Result<Saved, SaveError<D::Error>> {
        config.validate().map_err(SaveError::Invalid)?;
        let generation = record::save(disk, &config.to_json_pretty()).map_err(SaveError::Store)?;
        let changes = edit::diff(&self.current, &config);
        self.current = config;
        self.source = Source::Disk {
            generation,
            slot: None,
        };
        self.revision += 1;
        Ok(Saved {
            generation,
            changes,
        })
    }

    /// The settings that differ from what the network came up with at boot and only take
    /// effect at the next boot.
    pub fn reboot_needed(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.current.network != self.booted.network {
            out.push("network");
        }
        if self.current.management.http_port != self.booted.management.http_port {
            out.push("management.http_port");
        }
        out
    }
}

/// Whether `path` holds an API token.
fn is_token(path: &str) -> bool {
    path.starts_with("management.api_tokens")
}

/// A value as `config show` and `config diff` print it: compact JSON, with API tokens
/// masked to their last four characters (`"****cdef"`).
pub fn display_value(path: &str, json: &str) -> String {
    // The HTTPS key never shows on the console (nor in `config diff`).
    if path == "management.certificate.key_pem" || path == "management.certificate" {
        return String::from("\"(withheld)\"");
    }
    if !is_token(path) {
        return json.to_string();
    }
    if json == "[]" {
        // No tokens: nothing secret.
        return json.to_string();
    }
    // A token is a JSON string of `A-Za-z0-9._~+/-` (validation guarantees it), so it has no
    // escapes; anything else (a whole list) is masked entirely.
    match json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
        Some(token) if !token.contains(['"', '\\']) => {
            let start = token.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
            format!("\"****{}\"", &token[start..])
        }
        _ => String::from("\"****\""),
    }
}

/// `config show`'s lines: `path = value`, every leaf, tokens masked.
pub fn show_lines(config: &Config) -> Vec<String> {
    edit::leaves(config)
        .into_iter()
        .map(|(path, value)| {
            let value = display_value(&path, &value);
            format!("{path} = {value}")
        })
        .collect()
}

/// One change as `config diff` prints it: `path: old -> new`, tokens masked.
pub fn change_line(change: &Change) -> String {
    let show = |v: &Option<String>| match v {
        Some(v) => display_value(&change.path, v),
        None => String::from("(unset)"),
    };
    format!(
        "{}: {} -> {}",
        change.path,
        show(&change.old),
        show(&change.new)
    )
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
