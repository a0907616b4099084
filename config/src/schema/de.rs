//! Deserializing the schema from a parsed [`serde_json::Value`], with errors that name the
//! field (`vms[1].memory_mib: expected ...`) in words an operator knows.
//!
//! serde_json reports type errors with a line and column only, and `toml` with a byte span;
//! neither names the field. Both front ends therefore parse into a [`Value`] first and
//! deserialize the schema types from it through [`from_value`]:
//!
//! - `serde_path_to_error` tracks where the walk is and names the path of the failing node;
//! - the [`Deserializer`] here walks the value with an error type of its own, whose messages
//!   say `an integer from 0 to 65535` and `a list` where serde would say `u16` and `a
//!   sequence`, and which takes a struct only from an object (serde's derived visitors would
//!   also fill one from a list, field by field, which no operator means). serde_json's own
//!   `Value` deserializer has neither, and its error type cannot be swapped, so this one stays.
//!
//! The walk descends only as deep as the schema types do, and never panics: every mismatch
//! is a [`SchemaError`].

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

use serde::de::value::{BorrowedStrDeserializer, StrDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, Expected, IntoDeserializer, MapAccess,
    SeqAccess, Unexpected, Visitor,
};
use serde_json::Value;

/// A JSON value that does not have the shape of the schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{kind}", at(path))]
pub struct SchemaError {
    /// Where: `network.mode`, `vms[0].kernel`; empty for the document itself.
    pub path: String,
    /// What is wrong there.
    pub kind: SchemaErrorKind,
}

/// What [`SchemaError`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SchemaErrorKind {
    /// The field at `path` (its last component) does not exist in the schema.
    #[error("unknown field; {}", one_of(expected))]
    UnknownField {
        /// The fields that do exist at that level.
        expected: &'static [&'static str],
    },
    /// The required field at `path` is absent.
    #[error("required field is missing")]
    MissingField,
    /// The value at `path` has the wrong type or an impossible value.
    #[error("{message}")]
    Invalid {
        /// What was expected and what was found.
        message: String,
    },
}

/// `path: `, or nothing for the document itself.
fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// What an unknown field could have been.
fn one_of(expected: &[&str]) -> String {
    if expected.is_empty() {
        "no fields are allowed here".to_owned()
    } else {
        format!("expected one of: {}", expected.join(", "))
    }
}

/// Deserializes `T` from `value`, naming the path of the first node that does not fit.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, SchemaError> {
    serde_path_to_error::deserialize(At { value }).map_err(|err| {
        // `.` is serde_path_to_error's name for the document itself.
        let path = match err.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        let (path, kind) = match err.into_inner() {
            // The path of an unknown field ends in its name already.
            DeError::UnknownField { expected, .. } => {
                (path, SchemaErrorKind::UnknownField { expected })
            }
            // A missing field is found by the object that lacks it.
            DeError::MissingField { field } if path.is_empty() => {
                (field.to_owned(), SchemaErrorKind::MissingField)
            }
            DeError::MissingField { field } => {
                (format!("{path}.{field}"), SchemaErrorKind::MissingField)
            }
            DeError::Invalid(message) | DeError::Custom(message) => {
                (path, SchemaErrorKind::Invalid { message })
            }
        };
        SchemaError { path, kind }
    })
}

/// The error type of the walk; `serde_path_to_error` says where it happened.
#[derive(Debug, thiserror::Error)]
enum DeError {
    #[error("unknown field {field}")]
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    #[error("missing field {field}")]
    MissingField { field: &'static str },
    #[error("{0}")]
    Invalid(String),
    /// A message from a type's own parser (`invalid IPv4 address syntax`), which does not say
    /// what it was given.
    #[error("{0}")]
    Custom(String),
}

impl DeError {
    /// Adds the offending string to a parser's message that lacks it.
    fn found_str(self, found: &str) -> DeError {
        match self {
            DeError::Custom(message) => {
                let shown: String = found.chars().take(64).collect();
                let ellipsis = if shown.len() < found.len() { "..." } else { "" };
                DeError::Invalid(format!(
                    "{message}: found \"{}{ellipsis}\"",
                    shown.escape_default()
                ))
            }
            other => other,
        }
    }
}

/// Rewrites serde's type names (`u16`, `struct Vm`) as an operator would say them.
fn describe(expected: &dyn Expected) -> String {
    let raw = format!("{expected}");
    match raw.as_str() {
        "u8" => "an integer from 0 to 255".to_owned(),
        "u16" => "an integer from 0 to 65535".to_owned(),
        "u32" => "an integer from 0 to 4294967295".to_owned(),
        "u64" => "a non-negative integer".to_owned(),
        "a sequence" => "a list".to_owned(),
        "IPv4 address" => "an IPv4 address such as 10.0.2.15".to_owned(),
        other if other.starts_with("struct ") => "an object (a TOML table)".to_owned(),
        _ => raw,
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::Custom(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let found = match unexp {
            Unexpected::Unit => "null".to_owned(),
            Unexpected::Seq => "a list".to_owned(),
            Unexpected::Map => "an object".to_owned(),
            other => other.to_string(),
        };
        DeError::Invalid(format!("expected {}, found {found}", describe(exp)))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let message = match unexp {
            Unexpected::Unsigned(n) => format!("{n} is out of range: expected {}", describe(exp)),
            Unexpected::Signed(n) => format!("{n} is out of range: expected {}", describe(exp)),
            other => format!("invalid value {other}: expected {}", describe(exp)),
        };
        DeError::Invalid(message)
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut message = format!("unknown value \"{variant}\"; expected one of: ");
        for (i, name) in expected.iter().enumerate() {
            if i > 0 {
                message.push_str(", ");
            }
            message.push('"');
            message.push_str(name);
            message.push('"');
        }
        DeError::Invalid(message)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::UnknownField {
            field: field.to_owned(),
            expected,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::MissingField { field }
    }
}

/// How serde's error messages name a JSON node.
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Other("null"),
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (_, Some(i), _) => Unexpected::Signed(i),
            (_, _, Some(f)) => Unexpected::Float(f),
            _ => Unexpected::Other("number"),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// One node of the document.
struct At<'de> {
    value: &'de Value,
}

impl<'de> Deserializer<'de> for At<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else if let Some(f) = n.as_f64() {
                    visitor.visit_f64(f)
                } else {
                    Err(DeError::Invalid(format!(
                        "number {n} cannot be represented"
                    )))
                }
            }
            Value::String(s) => visitor
                .visit_borrowed_str(s)
                .map_err(|e: DeError| e.found_str(s)),
            Value::Array(items) => {
                let mut seq = Seq {
                    items: items.iter(),
                };
                let out = visitor.visit_seq(&mut seq)?;
                if seq.items.len() != 0 {
                    return Err(<DeError as de::Error>::invalid_length(
                        items.len(),
                        &"fewer elements",
                    ));
                }
                Ok(out)
            }
            Value::Object(map) => visitor.visit_map(Map {
                entries: map.iter(),
                pending: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // Only objects: serde's derived visitors would also fill a struct from a list,
        // field by field in declaration order, which no operator means.
        match self.value {
            Value::Object(_) => self.deserialize_any(visitor),
            other => Err(<DeError as de::Error>::invalid_type(
                unexpected(other),
                &visitor,
            )),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // The schema's enums are all unit variants written as strings ("dhcp").
        match self.value {
            Value::String(s) => {
                let access: StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(access)
            }
            other => Err(<DeError as de::Error>::invalid_type(
                unexpected(other),
                &"a string",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map
        identifier ignored_any
    }
}

/// The elements of an array.
struct Seq<'de> {
    items: core::slice::Iter<'de, Value>,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some(value) => seed.deserialize(At { value }).map(Some),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The members of an object.
struct Map<'de> {
    entries: serde_json::map::Iter<'de>,
    pending: Option<&'de Value>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            None => Ok(None),
            Some((key, value)) => {
                self.pending = Some(value);
                let key: BorrowedStrDeserializer<'de, DeError> =
                    BorrowedStrDeserializer::new(key.as_str());
                seed.deserialize(key).map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(value) = self.pending.take() else {
            return Err(DeError::Invalid(
                "internal: object value requested before its key".to_owned(),
            ));
        };
        seed.deserialize(At { value })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}
