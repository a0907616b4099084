//! Pure edits of a [`Config`]: what `config set` on the console and `PATCH`/`PUT` over HTTP
//! do, without touching a disk.
//!
//! An edit works on the configuration's JSON form: it serializes the current configuration,
//! changes the [`Value`] at a path, deserializes the result through the schema (so unknown
//! fields and wrong types are refused with their path) and validates it (so the result
//! obeys every rule). The input configuration is never modified: on any error the caller
//! still holds the old one.
//!
//! # Paths
//!
//! A path is a field name followed by `.field` and `[index]` steps: `hostname`,
//! `network.mode`, `management.api_tokens[0]`, `vms[1].memory_mib`. A field that is absent
//! because it is optional (`network.gateway`) can be set all the same. Setting `vms[N]`
//! where `N` is the current length appends an element.
//!
//! # Values
//!
//! A value that parses as JSON is used as that JSON (`80`, `true`, `["10.0.2.3"]`,
//! `{"name":"web","memory_mib":256,"kernel":"bzImage"}`, `"quoted string"`); anything else is
//! taken as a bare string, so `config set hostname web1` works. JSON `null` clears an
//! optional field.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::fmt::Write as _;

use serde_json::Value;

use crate::schema::{self, Config, SchemaError, SchemaErrorKind, ValidationError};

/// Longest path [`set`] and [`unset`] accept.
pub const MAX_PATH_LEN: usize = 256;

/// Why an edit was refused. The original configuration is unchanged in every case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The path is not of the form `field`, `field.field`, `field[index]`.
    #[error(
        "bad path \"{}\": {reason} (paths look like network.mode or vms[0].memory_mib)",
        path.escape_default()
    )]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The path names a field the schema does not have.
    #[error("{path}: no such setting{}", one_of(expected))]
    UnknownPath {
        /// The path up to and including the unknown field.
        path: String,
        /// The fields that exist at that level.
        expected: &'static [&'static str],
    },
    /// The path steps into a value that has no fields or elements (`hostname.x`), or uses a
    /// field name on a list or an index on an object.
    #[error("{path} is {found}; the path cannot continue there")]
    WrongStep {
        /// The path up to the value that cannot be stepped into.
        path: String,
        /// What that value is: "a list", "an object", "a string"...
        found: &'static str,
    },
    /// An index past the end of a list (only the length itself is allowed, to append).
    #[error("{path}: index out of range (the list has {len} elements; index {len} appends)")]
    IndexOutOfRange {
        /// The path including the index.
        path: String,
        /// The list's length.
        len: usize,
    },
    /// The new value has the wrong type, or a required field would be missing.
    #[error(transparent)]
    Schema(SchemaError),
    /// The edited configuration breaks these rules.
    #[error("{}", crate::schema::joined(.0))]
    Invalid(Vec<ValidationError>),
}

/// `; expected one of: a, b` for [`EditError::UnknownPath`]; nothing without names.
fn one_of(expected: &[&str]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        alloc::format!("; expected one of: {}", expected.join(", "))
    }
}

/// One step of a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step<'a> {
    Field(&'a str),
    Index(usize),
}

/// Splits `path` into steps; it must start with a field.
fn parse_path(path: &str) -> Result<Vec<Step<'_>>, EditError> {
    let bad = |reason| EditError::BadPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("it is empty"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(bad("it is longer than 256 bytes"));
    }
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = path.as_bytes();
    let mut steps = Vec::new();
    let mut i = 0;
    let mut expect_field = true;
    while i < bytes.len() {
        if expect_field {
            let start = i;
            while i < bytes.len() && is_name(bytes[i]) {
                i += 1;
            }
            if i == start {
                return Err(bad("a field name (letters, digits, '_') is missing"));
            }
            steps.push(Step::Field(&path[start..i]));
            expect_field = false;
        } else if bytes[i] == b'.' {
            i += 1;
            expect_field = true;
        } else if bytes[i] == b'[' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if end == start || end >= bytes.len() || bytes[end] != b']' {
                return Err(bad("'[' must be followed by an index and ']'"));
            }
            let index = path[start..end]
                .parse()
                .map_err(|_| bad("the index is too large"))?;
            steps.push(Step::Index(index));
            i = end + 1;
        } else {
            return Err(bad("expected '.' or '[' after a field name or index"));
        }
    }
    if expect_field {
        return Err(bad("it ends with '.'"));
    }
    Ok(steps)
}

/// Renders steps as a path (`vms[0].name`).
fn render(steps: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in steps {
        // Writing to a String cannot fail.
        let _ = match step {
            Step::Field(name) if out.is_empty() => write!(out, "{name}"),
            Step::Field(name) => write!(out, ".{name}"),
            Step::Index(i) => write!(out, "[{i}]"),
        };
    }
    out
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Parses a value as the console and query strings give it: JSON if it is JSON, else a bare
/// string.
pub fn parse_value(value: &str) -> Value {
    serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()))
}

/// One change of an [`apply`] batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Set the value at `path`, parsed with [`parse_value`].
    Set {
        /// Where.
        path: &'a str,
        /// The new value.
        value: &'a str,
    },
    /// Remove the list element at `path`, or reset the field at `path` to its default.
    Unset {
        /// Where.
        path: &'a str,
    },
}

/// Returns `config` with `path` set to `value` (see the [module docs](self)), validated.
pub fn set(config: &Config, path: &str, value: &str) -> Result<Config, EditError> {
    apply(config, &[Edit::Set { path, value }])
}

/// Returns `config` without the list element at `path` (`vms[1]`, `network.dns[0]`), or with
/// the field at `path` reset to its default (`network.gateway`, `management.http_port`);
/// validated. Resetting a required field (`vms[0].memory_mib`) is refused.
pub fn unset(config: &Config, path: &str) -> Result<Config, EditError> {
    apply(config, &[Edit::Unset { path }])
}

/// Applies `edits` in order and validates only the end result, so several fields that must
/// change together (switching `network.mode` to `static` with its `address` and `prefix`)
/// can change in one step.
pub fn apply(config: &Config, edits: &[Edit<'_>]) -> Result<Config, EditError> {
    let mut doc = config.to_value();
    for edit in edits {
        match *edit {
            Edit::Set { path, value } => {
                let steps = parse_path(path)?;
                set_value(&mut doc, &steps, parse_value(value))?;
            }
            Edit::Unset { path } => {
                let steps = parse_path(path)?;
                unset_value(&mut doc, &steps)?;
            }
        }
    }
    let new: Config = schema::from_value(&doc).map_err(schema_to_edit)?;
    new.validate().map_err(EditError::Invalid)?;
    Ok(new)
}

fn schema_to_edit(e: SchemaError) -> EditError {
    match e.kind {
        SchemaErrorKind::UnknownField { expected } => EditError::UnknownPath {
            path: e.path,
            expected,
        },
        _ => EditError::Schema(e),
    }
}

/// Walks to the parent of the last step, creating absent fields on the way (as an empty list
/// or object, whichever the next step needs; the schema check refuses them afterwards if the
/// field does not exist).
fn walk_to_parent<'v>(doc: &'v mut Value, steps: &[Step<'_>]) -> Result<&'v mut Value, EditError> {
    let mut node = doc;
    for (i, step) in steps.iter().enumerate().take(steps.len().saturating_sub(1)) {
        let next_is_index = matches!(steps.get(i + 1), Some(Step::Index(_)));
        node = match (*step, node) {
            (Step::Field(name), Value::Object(map)) => {
                map.entry(name.to_owned()).or_insert_with(|| {
                    if next_is_index {
                        Value::Array(Vec::new())
                    } else {
                        Value::Object(serde_json::Map::new())
                    }
                })
            }
            (Step::Index(index), Value::Array(items)) => {
                let len = items.len();
                items
                    .get_mut(index)
                    .ok_or_else(|| EditError::IndexOutOfRange {
                        path: render(&steps[..=i]),
                        len,
                    })?
            }
            (_, other) => {
                return Err(EditError::WrongStep {
                    path: render(&steps[..i]),
                    found: kind_of(other),
                });
            }
        };
    }
    Ok(node)
}

fn set_value(doc: &mut Value, steps: &[Step<'_>], value: Value) -> Result<(), EditError> {
    let Some((last, parents)) = steps.split_last() else {
        return Ok(());
    };
    match (*last, walk_to_parent(doc, steps)?) {
        (Step::Field(name), Value::Object(map)) => {
            map.insert(name.to_owned(), value);
            Ok(())
        }
        (Step::Index(index), Value::Array(items)) => {
            if let Some(slot) = items.get_mut(index) {
                *slot = value;
                Ok(())
            } else if index == items.len() {
                items.push(value);
                Ok(())
            } else {
                Err(EditError::IndexOutOfRange {
                    path: render(steps),
                    len: items.len(),
                })
            }
        }
        (_, other) => Err(EditError::WrongStep {
            path: render(parents),
            found: kind_of(other),
        }),
    }
}

fn unset_value(doc: &mut Value, steps: &[Step<'_>]) -> Result<(), EditError> {
    let Some((last, parents)) = steps.split_last() else {
        return Ok(());
    };
    match (*last, walk_to_parent(doc, steps)?) {
        (Step::Field(name), Value::Object(map)) => {
            if map.remove(name).is_none() {
                // Absent already: either an optional field at its default, or a typo.
                // Asking the schema about a `null` there tells the two apart.
                map.insert(name.to_owned(), Value::Null);
                let probe = schema::from_value::<Config>(doc);
                if let Err(SchemaError {
                    path,
                    kind: SchemaErrorKind::UnknownField { expected },
                }) = probe
                    && path == render(steps)
                {
                    return Err(EditError::UnknownPath { path, expected });
                }
                // Walk again (the probe needed `doc` whole) and take the probe back out.
                if let Value::Object(map) = walk_to_parent(doc, steps)? {
                    map.remove(name);
                }
            }
            Ok(())
        }
        (Step::Index(index), Value::Array(items)) => {
            if index < items.len() {
                items.remove(index);
                Ok(())
            } else {
                Err(EditError::IndexOutOfRange {
                    path: render(steps),
                    len: items.len(),
                })
            }
        }
        (_, other) => Err(EditError::WrongStep {
            path: render(parents),
            found: kind_of(other),
        }),
    }
}

/// One leaf that differs between two configurations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The leaf's path (`network.address`, `vms[0].autostart`).
    pub path: String,
    /// The old value as compact JSON; `None` if it was absent.
    pub old: Option<String>,
    /// The new value as compact JSON; `None` if it is now absent.
    pub new: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".to_owned());
        write!(
            f,
            "{}: {} -> {}",
            self.path,
            show(&self.old),
            show(&self.new)
        )
    }
}

/// The leaves that differ between `old` and `new`, ordered by path (object fields
/// alphabetically, list elements by index). A list that grew or shrank shows its extra
/// elements' leaves as added or removed.
///
/// API tokens appear in the result like any other value: callers that log or display
/// changes should mask paths under `management.api_tokens`.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut changes = Vec::new();
    diff_values(
        &mut String::new(),
        Some(&old.to_value()),
        Some(&new.to_value()),
        &mut changes,
    );
    changes
}

fn diff_values(path: &mut String, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    let restore = path.len();
    let nothing_inside = |v: Option<&Value>| match v {
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(map)) => map.is_empty(),
        _ => true,
    };
    if nothing_inside(old) && nothing_inside(new) {
        // `[]` against absent: nothing to descend into, so the container is the leaf.
        out.push(Change {
            path: path.clone(),
            old: old.map(Value::to_string),
            new: new.map(Value::to_string),
        });
        return;
    }
    match (old, new) {
        // (None, None) is equal and returned above.
        (Some(Value::Object(_)) | None, Some(Value::Object(_)) | None) => {
            let empty = serde_json::Map::new();
            let a = match old {
                Some(Value::Object(m)) => m,
                _ => &empty,
            };
            let b = match new {
                Some(Value::Object(m)) => m,
                _ => &empty,
            };
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                diff_values(path, a.get(key), b.get(key), out);
                path.truncate(restore);
            }
        }
        (Some(Value::Array(_)) | None, Some(Value::Array(_)) | None) => {
            let empty = Vec::new();
            let a = match old {
                Some(Value::Array(items)) => items,
                _ => &empty,
            };
            let b = match new {
                Some(Value::Array(items)) => items,
                _ => &empty,
            };
            for i in 0..a.len().max(b.len()) {
                // Writing to a String cannot fail.
                let _ = write!(path, "[{i}]");
                diff_values(path, a.get(i), b.get(i), out);
                path.truncate(restore);
            }
        }
        _ => out.push(Change {
            path: path.clone(),
            old: old.map(Value::to_string),
            new: new.map(Value::to_string),
        }),
    }
}

/// A strong entity tag (RFC 9110 §8.8.3) for `config`: the 64-bit FNV-1a hash of its
/// canonical JSON in hex, quoted: `"8c3f0e2a9d51b7c4"`. Equal configurations have equal tags.
pub fn etag(config: &Config) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = config
        .to_json_pretty()
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    format!("\"{hash:016x}\"")
}

/// The paths of `config`'s leaves with their compact JSON values, in [`diff`] order: what
/// `config show` prints.
pub fn leaves(config: &Config) -> Vec<(String, String)> {
    let mut changes = Vec::new();
    diff_values(
        &mut String::new(),
        None,
        Some(&config.to_value()),
        &mut changes,
    );
    changes
        .into_iter()
        .filter_map(|c| c.new.map(|v| (c.path, v)))
        .collect()
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
