//! The saved-VM routes: the console's `vm save`, `vm restore`, `saved ls` and `saved rm`
//! over HTTP.
//!
//! | route | console | success |
//! | --- | --- | --- |
//! | `POST /api/v1/vms/{name}/save` | `vm save <vm> [<saved>]` | 201 + `Location` |
//! | `GET /api/v1/saved` | `saved ls` | 200 |
//! | `GET /api/v1/saved/{saved}` | (a `saved ls` line) | 200 |
//! | `POST /api/v1/saved/{saved}/restore` | `vm restore <saved>` | 201 + `Location` |
//! | `DELETE /api/v1/saved/{saved}` | `saved rm <saved>` | 204 |
//!
//! A save takes an optional body, `{"name": "<saved>"}`; without one the VM is saved under
//! its own name, or its number for an ad-hoc VM, as on the console. A saved VM's name
//! follows the VM naming rule or is a VM number ([`saved_name`](super::saved_name)): a `{saved}` that is neither
//! is 400, a `name` in the body 422. A restore builds a new ad-hoc VM, paused, known by its
//! number; `POST /api/v1/vms/{number}/resume` runs it. Every refused request changes
//! nothing.

use alloc::format;

use super::vms::{created, no_body, status_error};
use super::{Management, SaveRequest, VmKey, api_error};
use crate::http::response::Response;
use crate::http::server::Request;

/// `POST /api/v1/vms/{name}/save`: 201 with the saved VM and its `Location`.
pub fn save<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let name = SaveRequest::parse(req.body).map_err(status_error)?;
    let saved = mgmt.save_vm(key, name.as_deref()).map_err(api_error)?;
    let location = format!("/api/v1/saved/{}", saved.name);
    Ok(Response::json(201, &saved).with_header("Location", &location))
}

/// `GET /api/v1/saved/{saved}`.
pub fn show<M: Management + ?Sized>(mgmt: &M, name: &str) -> Result<Response, Response> {
    let saved = mgmt.saved_vm(name).ok_or_else(|| no_saved(name))?;
    Ok(Response::json(200, &saved))
}

/// `POST /api/v1/saved/{saved}/restore`: 201 with the new VM, paused, and its `Location`.
pub fn restore<M: Management + ?Sized>(
    mgmt: &mut M,
    name: &str,
    req: &Request<'_>,
) -> Result<Response, Response> {
    no_body(req, "POST /api/v1/saved/{saved}/restore")?;
    let number = mgmt.restore_vm(name).map_err(api_error)?;
    created(mgmt, &VmKey::Number(number))
}

/// `DELETE /api/v1/saved/{saved}`: 204.
pub fn delete<M: Management + ?Sized>(mgmt: &mut M, name: &str) -> Result<Response, Response> {
    mgmt.delete_saved(name).map_err(api_error)?;
    Ok(Response::new(204))
}

fn no_saved(name: &str) -> Response {
    Response::error(
        404,
        &format!("no saved VM named '{name}': GET /api/v1/saved lists them"),
    )
}
