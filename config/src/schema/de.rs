//! A serde [`Deserializer`] over a parsed [`serde_json::Value`] that knows where it is.
//!
//! serde_json reports type errors with a line and column only, and `toml` with a byte span;
//! neither names the field. Both front ends therefore parse into a [`Value`] first and
//! deserialize the schema types from it through [`from_value`], which attaches the path of
//! the failing node (`vms[1].memory_mib`) to every error. The walk descends only as deep as
//! the schema types do, and never panics: every mismatch is a [`SchemaError`].

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    /// Where: `network.mode`, `vms[0].kernel`; empty for the document itself.
    pub path: String,
    /// What is wrong there.
    pub kind: SchemaErrorKind,
}

/// What [`SchemaError`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaErrorKind {
    /// The field at `path` (its last component) does not exist in the schema.
    UnknownField {
        /// The fields that do exist at that level.
        expected: &'static [&'static str],
    },
    /// The required field at `path` is absent.
    MissingField,
    /// The value at `path` has the wrong type or an impossible value.
    Invalid {
        /// What was expected and what was found.
        message: String,
    },
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        match &self.kind {
            SchemaErrorKind::UnknownField { expected: [] } => {
                f.write_str("unknown field; no fields are allowed here")
            }
            SchemaErrorKind::UnknownField { expected } => {
                f.write_str("unknown field; expected one of: ")?;
                write_list(f, expected)
            }
            SchemaErrorKind::MissingField => f.write_str("required field is missing"),
            SchemaErrorKind::Invalid { message } => f.write_str(message),
        }
    }
}

impl core::error::Error for SchemaError {}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[&str]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        f.write_str(item)?;
    }
    Ok(())
}

/// Deserializes `T` from `value`, naming the path of the first node that does not fit.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, SchemaError> {
    T::deserialize(At {
        value,
        path: &Path::Root,
    })
    .map_err(DeError::into_schema_error)
}

/// A position in the document, as a chain of parents on the stack.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// `parent.field`, or `field` at the top level.
fn join(parent: &Path<'_>, field: &str) -> String {
    Path::Key(parent, field).to_string()
}

/// The error type of the walk: a [`SchemaError`] whose path is filled in on the way out, by
/// the innermost node that saw it.
#[derive(Debug)]
struct DeError {
    path: Option<String>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    MissingField {
        field: &'static str,
    },
    Invalid(String),
    /// A message from a type's own parser (`invalid IPv4 address syntax`), which does not say
    /// what it was given.
    Custom(String),
}

impl DeError {
    fn invalid(message: String) -> DeError {
        DeError {
            path: None,
            kind: Kind::Invalid(message),
        }
    }

    /// Places the error at `path` unless an inner node already did. Field errors come up from
    /// the object that holds the field, so their path is the object's plus the field name.
    fn at(mut self, path: &Path<'_>) -> DeError {
        if self.path.is_none() {
            self.path = Some(match &self.kind {
                Kind::UnknownField { field, .. } => join(path, field),
                Kind::MissingField { field } => join(path, field),
                Kind::Invalid(_) | Kind::Custom(_) => path.to_string(),
            });
        }
        self
    }

    /// Adds the offending string to a parser's message that lacks it.
    fn found_str(mut self, found: &str) -> DeError {
        if let Kind::Custom(message) = &self.kind {
            let shown: String = found.chars().take(64).collect();
            let ellipsis = if shown.len() < found.len() { "..." } else { "" };
            self.kind = Kind::Invalid(format!(
                "{message}: found \"{}{ellipsis}\"",
                shown.escape_default()
            ));
        }
        self
    }

    fn into_schema_error(self) -> SchemaError {
        SchemaError {
            path: self.path.unwrap_or_default(),
            kind: match self.kind {
                Kind::UnknownField { expected, .. } => SchemaErrorKind::UnknownField { expected },
                Kind::MissingField { .. } => SchemaErrorKind::MissingField,
                Kind::Invalid(message) | Kind::Custom(message) => {
                    SchemaErrorKind::Invalid { message }
                }
            },
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::UnknownField { field, .. } => write!(f, "unknown field {field}"),
            Kind::MissingField { field } => write!(f, "missing field {field}"),
            Kind::Invalid(message) | Kind::Custom(message) => f.write_str(message),
        }
    }
}

impl core::error::Error for DeError {}

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
        DeError {
            path: None,
            kind: Kind::Custom(msg.to_string()),
        }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let found = match unexp {
            Unexpected::Unit => "null".to_owned(),
            Unexpected::Seq => "a list".to_owned(),
            Unexpected::Map => "an object".to_owned(),
            other => other.to_string(),
        };
        DeError::invalid(format!("expected {}, found {found}", describe(exp)))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        let message = match unexp {
            Unexpected::Unsigned(n) => format!("{n} is out of range: expected {}", describe(exp)),
            Unexpected::Signed(n) => format!("{n} is out of range: expected {}", describe(exp)),
            other => format!("invalid value {other}: expected {}", describe(exp)),
        };
        DeError::invalid(message)
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
        DeError::invalid(message)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            path: None,
            kind: Kind::UnknownField {
                field: field.to_owned(),
                expected,
            },
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            path: None,
            kind: Kind::MissingField { field },
        }
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

/// One node of the document and where it is.
struct At<'de, 'p> {
    value: &'de Value,
    path: &'p Path<'p>,
}

impl<'de> Deserializer<'de> for At<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.path;
        let result = match self.value {
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
                    Err(DeError::invalid(format!(
                        "number {n} cannot be represented"
                    )))
                }
            }
            Value::String(s) => visitor
                .visit_borrowed_str(s)
                .map_err(|e: DeError| e.found_str(s)),
            Value::Array(items) => {
                let mut seq = Seq {
                    items: items.iter().enumerate(),
                    path,
                };
                let out = visitor.visit_seq(&mut seq)?;
                if seq.items.len() != 0 {
                    return Err(<DeError as de::Error>::invalid_length(
                        items.len(),
                        &"fewer elements",
                    )
                    .at(path));
                }
                Ok(out)
            }
            Value::Object(map) => visitor.visit_map(Map {
                entries: map.iter(),
                pending: None,
                path,
            }),
        };
        result.map_err(|e| e.at(path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.path;
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(path))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path;
        visitor.visit_newtype_struct(self).map_err(|e| e.at(path))
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
            other => {
                Err(<DeError as de::Error>::invalid_type(unexpected(other), &visitor).at(self.path))
            }
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // The schema's enums are all unit variants written as strings ("dhcp").
        let result = match self.value {
            Value::String(s) => {
                let access: StrDeserializer<'_, DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(access)
            }
            other => Err(<DeError as de::Error>::invalid_type(
                unexpected(other),
                &"a string",
            )),
        };
        result.map_err(|e| e.at(self.path))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map
        identifier ignored_any
    }
}

/// The elements of an array, each at `path[i]`.
struct Seq<'de, 'p> {
    items: core::iter::Enumerate<core::slice::Iter<'de, Value>>,
    path: &'p Path<'p>,
}

impl<'de> SeqAccess<'de> for Seq<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((index, value)) => {
                let path = Path::Index(self.path, index);
                seed.deserialize(At { value, path: &path }).map(Some)
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The members of an object, each value at `path.key`.
struct Map<'de, 'p> {
    entries: serde_json::map::Iter<'de>,
    pending: Option<(&'de str, &'de Value)>,
    path: &'p Path<'p>,
}

impl<'de> MapAccess<'de> for Map<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            None => Ok(None),
            Some((key, value)) => {
                self.pending = Some((key.as_str(), value));
                let key: BorrowedStrDeserializer<'de, DeError> =
                    BorrowedStrDeserializer::new(key.as_str());
                seed.deserialize(key).map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(DeError::invalid(
                "internal: object value requested before its key".to_owned(),
            ));
        };
        let path = Path::Key(self.path, key);
        seed.deserialize(At { value, path: &path })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}
