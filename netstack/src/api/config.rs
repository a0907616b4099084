//! `GET` and `PUT /api/v1/config`: the whole configuration document, with an `ETag` for
//! optimistic concurrency.
//!
//! - `GET` answers the canonical JSON ([`Config::to_json_pretty`]) with
//!   `ETag: `[`edit::etag`].
//! - `PUT` replaces the whole document. First the body: none or not JSON → 400; JSON that is
//!   not a valid configuration → 422 with every problem and its path in `errors`. Then the
//!   precondition: the request must carry `If-Match` with the ETag the client last read (or
//!   `*`, to overwrite whatever is there): without one the answer is 428 Precondition
//!   Required, so that two operators can never overwrite each other's changes silently; with
//!   a malformed one 400; with a stale one 412 Precondition Failed. (The body comes first so
//!   that a broken document is reported as such whatever its `If-Match`; nothing is changed
//!   before both checks pass.) A valid document is saved through
//!   [`Management::save_config`] and answered like a `GET`, with the new ETag. A refused
//!   request changes nothing.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use keel_config::{Config, ConfigError, edit};
use schemars::JsonSchema;
use serde::Serialize;

use super::Management;
use crate::http::response::{ErrorDetail, Response};
use crate::http::server::Request;

/// One problem with a `PUT` body, as the 422 answer lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Problem {
    /// Where: `network.prefix`, `vms[0].memory_mib`; empty for the document itself.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// `GET /api/v1/config`.
pub fn get<M: Management + ?Sized>(mgmt: &M) -> Response {
    document(&mgmt.config())
}

/// The canonical document with its ETag.
fn document(config: &Config) -> Response {
    Response::new(200)
        .with_header("Content-Type", crate::http::response::JSON)
        .with_header("ETag", &edit::etag(config))
        .with_body(config.to_json_pretty())
}

/// `PUT /api/v1/config`.
pub fn put<M: Management + ?Sized>(mgmt: &mut M, req: &Request<'_>) -> Result<Response, Response> {
    let config = parse(req.body)?;
    let current = edit::etag(&mgmt.config());
    let conditions: Vec<&str> = req
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("if-match"))
        .map(|(_, value)| value.as_str())
        .collect();
    if conditions.is_empty() {
        return Err(Response::error(
            428,
            "PUT /api/v1/config needs If-Match: send the ETag of your last GET /api/v1/config \
             (or If-Match: * to replace the configuration whatever it is)",
        ));
    }
    if !conditions.iter().all(|value| well_formed(value)) {
        return Err(Response::error(
            400,
            "If-Match must be * or a list of quoted ETags, e.g. If-Match: \"0123456789abcdef\"",
        ));
    }
    if !conditions.iter().any(|value| if_match(value, &current)) {
        let message = format!(
            "the configuration has changed since you read it (its ETag is now {current}): \
             GET /api/v1/config again and reapply your change"
        );
        return Err(Response::error(412, &message).with_header("ETag", &current));
    }
    mgmt.save_config(config).map_err(super::api_error)?;
    Ok(document(&mgmt.config()))
}

/// Whether an `If-Match` field value is `*` or a comma-separated list of entity tags
/// (`"..."` or `W/"..."`, RFC 9110 §8.8.3).
fn well_formed(value: &str) -> bool {
    let value = value.trim();
    if value == "*" {
        return true;
    }
    value.split(',').map(str::trim).all(|tag| {
        let opaque = tag.strip_prefix("W/").unwrap_or(tag);
        opaque.len() >= 2
            && opaque.starts_with('"')
            && opaque.ends_with('"')
            && !opaque[1..opaque.len() - 1].contains('"')
    })
}

/// Whether an `If-Match` field value matches the current strong ETag `current`
/// (RFC 9110 §13.1.1: `*`, or a list of entity tags compared strongly; weak tags never
/// match).
pub fn if_match(value: &str, current: &str) -> bool {
    let value = value.trim();
    if value == "*" {
        return true;
    }
    value
        .split(',')
        .map(str::trim)
        .any(|tag| !tag.starts_with("W/") && tag == current)
}

/// The body as a configuration: 400 when it is not JSON, 422 with every problem when it is
/// not a valid configuration.
fn parse(body: &[u8]) -> Result<Config, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Response::error(
            400,
            "request body must be the whole configuration as a JSON object \
             (GET /api/v1/config gives the current one)",
        ));
    }
    Config::from_json(body).map_err(|err| match problems(err) {
        Ok(problems) => invalid("configuration", problems),
        Err(bad_request) => bad_request,
    })
}

/// The problems of a refused document, or the 400 answer when it is not JSON.
pub(super) fn problems(err: ConfigError) -> Result<Vec<Problem>, Response> {
    match err {
        ConfigError::Syntax { .. } => Err(Response::error(
            400,
            &format!("invalid request body: {err}"),
        )),
        ConfigError::Schema(e) => {
            let full = e.to_string();
            let prefix = format!("{}: ", e.path);
            let message = full.strip_prefix(&prefix).unwrap_or(&full).to_string();
            Ok(alloc::vec![Problem {
                path: e.path,
                message,
            }])
        }
        ConfigError::Invalid(errors) => Ok(errors
            .into_iter()
            .map(|e| Problem {
                path: e.path,
                message: e.message,
            })
            .collect()),
    }
}

/// 422 with the standard error object plus the list of problems with `what` (`configuration`,
/// `VM definition`).
pub(super) fn invalid(what: &str, errors: Vec<Problem>) -> Response {
    let mut message = match errors.len() {
        1 => format!("invalid {what}: "),
        n => format!("invalid {what}, {n} problems: "),
    };
    for (i, p) in errors.iter().enumerate() {
        if i > 0 {
            message.push_str("; ");
        }
        if !p.path.is_empty() {
            message.push_str(&p.path);
            message.push_str(": ");
        }
        message.push_str(&p.message);
    }
    message.push_str(" (nothing was changed)");
    Response::json(
        422,
        &InvalidBody {
            error: ErrorDetail {
                status: 422,
                message: &message,
            },
            errors: &errors,
        },
    )
}

/// A 422 answer: the error and, when `PUT /api/v1/config` or `POST /api/v1/vms` refuse a
/// document for its values, every problem with its path (other 422s carry the error alone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(rename = "Invalid")]
pub struct InvalidBody<'a> {
    /// What went wrong, all problems in one message.
    pub error: ErrorDetail<'a>,
    /// Every problem, in document order (never empty when present).
    #[serde(skip_serializing_if = "<[Problem]>::is_empty")]
    pub errors: &'a [Problem],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_compares_strongly() {
        let tag = "\"0123456789abcdef\"";
        assert!(if_match("*", tag));
        assert!(if_match(" \"0123456789abcdef\" ", tag));
        assert!(if_match("\"x\", \"0123456789abcdef\"", tag));
        assert!(!if_match("W/\"0123456789abcdef\"", tag));
        assert!(!if_match("0123456789abcdef", tag));
        assert!(!if_match("\"0123456789abcdee\"", tag));
        assert!(!if_match("", tag));
    }

    #[test]
    fn if_match_syntax() {
        for good in ["*", "\"a\"", " \"a\" , W/\"b\"", "\"\""] {
            assert!(well_formed(good), "{good}");
        }
        for bad in ["", " ", "a", "\"a", "W/a", "\"a\",", "**", "\"a\"b\""] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
