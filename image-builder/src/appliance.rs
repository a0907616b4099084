//! The appliance configuration an image starts with: `keel build --config <appliance.toml>`.
//!
//! The operator writes TOML (`config/appliance.example.toml` documents every field). This
//! module reads it into the same [`Config`] the kernel uses, through the same schema walk and
//! the same validator ([`Config::from_value`]), so an image never carries a configuration the
//! appliance would refuse. Every error carries the schema path (`vms[1].memory_mib`) and,
//! where the TOML has one, the file's line and column.
//!
//! The result is stored as the configuration partition's first record: the canonical JSON
//! ([`Config::to_json_pretty`]) in slot A with generation 1, written by
//! [`crate::gpt_image::write_image`].
//!
//! Without `--config`, the image gets [`crate::tls_cert::default_config`]: the built-in defaults plus the API
//! token `keel build` keeps in `target/keel/api-token`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use keel_config::schema::{SchemaError, SchemaErrorKind};
use keel_config::{Config, ConfigError, ValidationError};
use serde_json::Value;
use toml::de::{DeTable, DeValue};

/// A line and column in the TOML file, both 1-based (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Line number.
    pub line: usize,
    /// Column number.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Location {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A schema or validation error, placed in the TOML file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<E> {
    /// Where the field (or, when it is missing, its table) is; `None` for the whole document.
    pub location: Option<Location>,
    /// The error, with its schema path.
    pub error: E,
}

impl<E: fmt::Display> fmt::Display for Located<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(at) => write!(f, "{at}: {}", self.error),
            None => self.error.fmt(f),
        }
    }
}

/// Why a TOML appliance configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum TomlConfigError {
    /// The text is not TOML.
    #[error("not valid TOML at {location}: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// What it expected.
        message: String,
    },
    /// The TOML does not have the schema's shape (unknown key, wrong type, missing field).
    #[error("{0}")]
    Schema(Located<SchemaError>),
    /// The values break the schema's rules; every violation.
    #[error("{}", list(.0))]
    Invalid(Vec<Located<ValidationError>>),
}

fn list(errors: &[Located<ValidationError>]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    format!(
        "{} error{}:\n  {}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        lines.join("\n  ")
    )
}

/// Why `keel build --config <file>` cannot use the file.
#[derive(Debug, thiserror::Error)]
pub enum ApplianceConfigError {
    /// The file cannot be read.
    #[error("cannot read the appliance configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("appliance configuration {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: TomlConfigError,
    },
}

/// Reads and validates the appliance configuration in `path`.
pub fn load(path: &Path) -> Result<Config, ApplianceConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ApplianceConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(&text).map_err(|source| ApplianceConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses and validates a TOML appliance configuration.
pub fn parse_toml(text: &str) -> Result<Config, TomlConfigError> {
    let table = DeTable::parse(text).map_err(|e| TomlConfigError::Syntax {
        location: Location::of_offset(text, e.span().map_or(0, |s| s.start)),
        message: e.message().trim_end().to_string(),
    })?;
    let mut spans = BTreeMap::new();
    let mut path = String::new();
    let value = table_to_json(text, table.get_ref(), &mut path, &mut spans)?;
    let locate = |schema_path: &str| locate(text, &spans, schema_path);
    match Config::from_value(&value) {
        Ok(config) => Ok(config),
        Err(ConfigError::Schema(error)) => {
            let location = match error.kind {
                // A missing field has no span: point at the table that lacks it.
                SchemaErrorKind::MissingField => locate(parent(&error.path)),
                _ => locate(&error.path),
            };
            Err(TomlConfigError::Schema(Located { location, error }))
        }
        Err(ConfigError::Invalid(errors)) => Err(TomlConfigError::Invalid(
            errors
                .into_iter()
                .map(|error| Located {
                    location: locate(&error.path),
                    error,
                })
                .collect(),
        )),
        // `from_value` never parses text, so it has no syntax errors to return.
        Err(ConfigError::Syntax {
            line,
            column,
            message,
        }) => Err(TomlConfigError::Syntax {
            location: Location { line, column },
            message,
        }),
    }
}

/// The span of the node at `path`, or of its nearest ancestor that was written in the file.
fn locate(text: &str, spans: &BTreeMap<String, Range<usize>>, mut path: &str) -> Option<Location> {
    loop {
        if let Some(span) = spans.get(path) {
            return Some(Location::of_offset(text, span.start));
        }
        if path.is_empty() {
            return None;
        }
        path = parent(path);
    }
}

/// `vms[1]` for `vms[1].kernel`, `vms` for `vms[1]`, `` for `hostname`.
fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// Converts a parsed TOML table to JSON, recording the span of every key (for tables'
/// members) and element (for arrays) under its schema path.
fn table_to_json(
    text: &str,
    table: &DeTable<'_>,
    path: &mut String,
    spans: &mut BTreeMap<String, Range<usize>>,
) -> Result<Value, TomlConfigError> {
    let mut map = serde_json::Map::new();
    let restore = path.len();
    for (key, value) in table.iter() {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        spans.insert(path.clone(), key.span());
        let json = value_to_json(text, value.get_ref(), value.span(), path, spans)?;
        map.insert(key.get_ref().to_string(), json);
        path.truncate(restore);
    }
    Ok(Value::Object(map))
}

fn value_to_json(
    text: &str,
    value: &DeValue<'_>,
    span: Range<usize>,
    path: &mut String,
    spans: &mut BTreeMap<String, Range<usize>>,
) -> Result<Value, TomlConfigError> {
    Ok(match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => {
            let digits: String = i.as_str().chars().filter(|&c| c != '_').collect();
            // Beyond 64 bits, the schema refuses the string with the field's expected type.
            if let Ok(n) = u64::from_str_radix(&digits, i.radix()) {
                Value::from(n)
            } else if let Ok(n) = i64::from_str_radix(&digits, i.radix()) {
                Value::from(n)
            } else {
                Value::String(i.as_str().to_string())
            }
        }
        DeValue::Float(f) => {
            let digits: String = f.as_str().chars().filter(|&c| c != '_').collect();
            // TOML's inf and nan have no JSON form; as a string the schema refuses them
            // with the field's expected type.
            match digits
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Some(n) => Value::Number(n),
                None => Value::String(digits),
            }
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        // No field is a date-time. Refused here rather than turned into a string, which a
        // string field would accept (`hostname = 2024-01-01`).
        DeValue::Datetime(_) => {
            return Err(TomlConfigError::Schema(Located {
                location: Some(Location::of_offset(text, span.start)),
                error: SchemaError {
                    path: path.clone(),
                    kind: SchemaErrorKind::Invalid {
                        message: "expected a value of this field's type, found a TOML date-time \
                                  (quote it if it is meant as a string)"
                            .to_string(),
                    },
                },
            }));
        }
        DeValue::Array(items) => {
            let restore = path.len();
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                path.push_str(&format!("[{index}]"));
                spans.insert(path.clone(), item.span());
                out.push(value_to_json(
                    text,
                    item.get_ref(),
                    item.span(),
                    path,
                    spans,
                )?);
                path.truncate(restore);
            }
            Value::Array(out)
        }
        DeValue::Table(table) => {
            // The key's span is already recorded; a table's own span marks `[[vms]]` entries.
            spans.entry(path.clone()).or_insert(span);
            table_to_json(text, table, path, spans)?
        }
    })
}

#[cfg(test)]
#[path = "appliance_tests.rs"]
mod tests;
