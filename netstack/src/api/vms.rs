//! The VM routes: the console's `vm` commands over HTTP.
//!
//! | route | console | success |
//! | --- | --- | --- |
//! | `GET /api/v1/vms` | `vm list` | 200 |
//! | `POST /api/v1/vms` | `vm create` | 201 + `Location` |
//! | `GET /api/v1/vms/{name}` | `vm info` | 200 |
//! | `DELETE /api/v1/vms/{name}` | `vm destroy` | 200 |
//! | `POST /api/v1/vms/{name}/start` | `vm start` | 200 |
//! | `POST /api/v1/vms/{name}/stop` | `vm stop` | 202 (graceful), 200 (`force`) |
//! | `POST /api/v1/vms/{name}/restart` | `vm restart` | 202 (stopping first), 200 |
//! | `POST /api/v1/vms/{name}/pause` | `vm pause` | 200 |
//! | `POST /api/v1/vms/{name}/resume` | `vm resume` | 200 |
//! | `GET /api/v1/vms/{name}/console` | `vm log` | 200 |
//! | `POST /api/v1/vms/{name}/console` | typing in `vm console` | 200 |
//! | `POST /api/v1/modules/{module}/run` | `vm run` | 201 + `Location` |
//!
//! `{name}` is a configured VM's name or any VM's number ([`VmKey`]); one that is neither is
//! 400, an unknown one 404. `POST /api/v1/vms` takes a VM definition in the configuration's
//! own shape (a `vms[]` entry) and checks it with the configuration's rules: 422 with every
//! problem in `errors`, as `PUT /api/v1/config` answers. Every refused request changes
//! nothing.

use alloc::format;

use keel_config::Config;
use keel_config::schema::Vm;

use super::config::{self, Problem};
use super::types::json_object;
use super::{
    ConsoleChunk, ConsoleInput, Destroyed, MAX_CONSOLE_INPUT, Management, RunModule, StopMode,
    StopRequest, VmKey, api_error, clip,
};
use crate::http::response::Response;
use crate::http::server::Request;

/// `POST /api/v1/modules/{module}/run`: an ad-hoc VM from a boot module.
pub fn run_module<M: Management + ?Sized>(
    mgmt: &mut M,
    module: &str,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let run = RunModule::parse(req.body).map_err(status_error)?;
    let number = mgmt
        .run_module(module, run.mem_mib, run.vcpus, &run.devices)
        .map_err(api_error)?;
    created(mgmt, &VmKey::Number(number))
}

/// `POST /api/v1/vms`: defines a named VM.
pub fn create<M: Management + ?Sized>(
    mgmt: &mut M,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let vm = definition(req.body)?;
    let mut config = mgmt.config();
    if config.vms.iter().any(|v| v.name == vm.name) {
        let message = format!(
            "a VM named {0} exists already: GET /api/v1/vms/{0} shows it (nothing was changed)",
            vm.name
        );
        return Err(Response::error(409, &message));
    }
    config.vms.push(vm.clone());
    if let Err(errors) = config.validate() {
        let problems = errors
            .into_iter()
            .map(|e| Problem {
                path: e.path,
                message: e.message,
            })
            .collect();
        return Err(config::invalid("configuration with this VM", problems));
    }
    let name = vm.name.clone();
    mgmt.create_vm(vm).map_err(api_error)?;
    created(mgmt, &VmKey::Name(&name))
}

/// A request body as one VM definition: 400 when it is not a JSON object, 422 with every
/// problem (paths relative to the definition: `memory_mib`) when it breaks the schema.
pub fn definition(body: &[u8]) -> Result<Vm, Response> {
    let value = json_object(body).map_err(status_error)?.ok_or_else(|| {
        Response::error(
            400,
            "request body must be a VM definition as a JSON object, e.g. \
             {\"name\":\"web\",\"kernel\":\"vmlinuz\",\"memory_mib\":256}",
        )
    })?;
    let document = serde_json::json!({ "vms": [value] });
    match Config::from_value(&document) {
        Ok(mut config) if config.vms.len() == 1 => Ok(config.vms.remove(0)),
        Ok(_) => Err(Response::error(500, "one definition did not make one VM")),
        Err(err) => {
            let problems = config::problems(err)?
                .into_iter()
                .map(|p| Problem {
                    path: relative(&p.path),
                    message: p.message,
                })
                .collect();
            Err(config::invalid("VM definition", problems))
        }
    }
}

/// A path inside the wrapped document (`vms[0].memory_mib`) as a path inside the definition
/// (`memory_mib`).
fn relative(path: &str) -> alloc::string::String {
    let inner = path.strip_prefix("vms[0]").unwrap_or(path);
    inner.strip_prefix('.').unwrap_or(inner).into()
}

/// `GET /api/v1/vms/{name}`.
pub fn show<M: Management + ?Sized>(mgmt: &M, key: &VmKey<'_>) -> Result<Response, Response> {
    Ok(Response::json(
        200,
        &mgmt.vm(key).ok_or_else(|| no_vm(key))?,
    ))
}

/// `DELETE /api/v1/vms/{name}`.
pub fn destroy<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
) -> Result<Response, Response> {
    let name = mgmt.vm(key).ok_or_else(|| no_vm(key))?.summary.name;
    let generation = mgmt.destroy_vm(key).map_err(api_error)?;
    Ok(Response::json(200, &Destroyed { name, generation }))
}

/// `POST /api/v1/vms/{name}/start`.
pub fn start<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
    req: &Request<'_>,
) -> Result<Response, Response> {
    no_body(req, "POST /api/v1/vms/{name}/start")?;
    mgmt.start_vm(key).map_err(api_error)?;
    detail(mgmt, key, 200)
}

/// `POST /api/v1/vms/{name}/stop`: 202 for a graceful stop (it completes later), 200 for a
/// forced one.
pub fn stop<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let mode = StopRequest::parse(req.body).map_err(status_error)?;
    mgmt.stop_vm(key, mode).map_err(api_error)?;
    let status = match mode {
        StopMode::Force => 200,
        StopMode::Graceful { .. } => 202,
    };
    detail(mgmt, key, status)
}

/// `POST /api/v1/vms/{name}/restart`: 200 when it started at once, 202 when it starts once
/// the stop completes.
pub fn restart<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let mode = StopRequest::parse(req.body).map_err(status_error)?;
    let started = mgmt.restart_vm(key, mode).map_err(api_error)?;
    detail(mgmt, key, if started { 200 } else { 202 })
}

/// `POST /api/v1/vms/{name}/pause`: 409 unless it is running (or idle).
pub fn pause<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
    req: &Request<'_>,
) -> Result<Response, Response> {
    no_body(req, "POST /api/v1/vms/{name}/pause")?;
    mgmt.pause_vm(key).map_err(api_error)?;
    detail(mgmt, key, 200)
}

/// `POST /api/v1/vms/{name}/resume`: 409 unless it is paused.
pub fn resume<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
    req: &Request<'_>,
) -> Result<Response, Response> {
    no_body(req, "POST /api/v1/vms/{name}/resume")?;
    mgmt.resume_vm(key).map_err(api_error)?;
    detail(mgmt, key, 200)
}

/// `GET /api/v1/vms/{name}/console`.
pub fn console<M: Management + ?Sized>(
    mgmt: &M,
    key: &VmKey<'_>,
    since: u64,
) -> Result<Response, Response> {
    let chunk: ConsoleChunk = mgmt.console(key, since).map_err(api_error)?;
    Ok(Response::json(200, &chunk))
}

/// `POST /api/v1/vms/{name}/console`: the body's bytes, as typed, to the guest's serial
/// console.
pub fn console_input<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
    req: &Request<'_>,
) -> Result<Response, Response> {
    if let Some(value) = req.header("content-type") {
        let media = value.split(';').next().unwrap_or("").trim();
        if !["text/plain", "application/octet-stream"]
            .iter()
            .any(|m| media.eq_ignore_ascii_case(m))
        {
            let message = format!(
                "console input is raw bytes: send Content-Type text/plain or \
                 application/octet-stream, not {}",
                clip(media, 60)
            );
            return Err(Response::error(415, &message));
        }
    }
    if req.body.is_empty() {
        return Err(Response::error(
            400,
            "request body must hold the bytes to send to the console (e.g. \"root\\r\")",
        ));
    }
    if req.body.len() > MAX_CONSOLE_INPUT {
        let message = format!(
            "console input is at most {MAX_CONSOLE_INPUT} bytes per request (this one has {})",
            req.body.len()
        );
        return Err(Response::error(413, &message));
    }
    let accepted = mgmt.console_input(key, req.body).map_err(api_error)?;
    let accepted = accepted.min(req.body.len());
    Ok(Response::json(
        200,
        &ConsoleInput {
            accepted: accepted as u64,
            dropped: (req.body.len() - accepted) as u64,
        },
    ))
}

/// 201 with the VM and its `Location`.
pub(super) fn created<M: Management + ?Sized>(
    mgmt: &M,
    key: &VmKey<'_>,
) -> Result<Response, Response> {
    let vm = mgmt.vm(key).ok_or_else(|| vanished(key))?;
    let location = format!("/api/v1/vms/{}", vm.summary.name);
    Ok(Response::json(201, &vm).with_header("Location", &location))
}

/// The VM after an operation, with `status`.
fn detail<M: Management + ?Sized>(
    mgmt: &M,
    key: &VmKey<'_>,
    status: u16,
) -> Result<Response, Response> {
    let vm = mgmt.vm(key).ok_or_else(|| vanished(key))?;
    Ok(Response::json(status, &vm))
}

/// `start`, `pause`, `resume` and a restore take no body: one is refused rather than ignored (it would
/// be a misplaced definition or stop option).
pub(super) fn no_body(req: &Request<'_>, route: &str) -> Result<(), Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let message = format!("{route} takes no request body (send Content-Length: 0)");
    Err(Response::error(400, &message))
}

pub(super) fn status_error((status, message): (u16, alloc::string::String)) -> Response {
    Response::error(status, &message)
}

fn no_vm(key: &VmKey<'_>) -> Response {
    Response::error(
        404,
        &format!("no VM named '{key}': GET /api/v1/vms lists them"),
    )
}

/// The kernel reported success but then did not know the VM.
fn vanished(key: &VmKey<'_>) -> Response {
    Response::error(500, &format!("VM {key} vanished right after the operation"))
}
