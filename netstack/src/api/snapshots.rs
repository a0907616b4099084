//! The snapshot routes: the console's `vm snapshot`, `vm snapshots`, `vm restore <snapshot>`
//! and `snapshot rm` over HTTP. A snapshot is files in the guest store, so it survives a
//! reboot (unlike a saved VM, `super::saved`).
//!
//! | route | console | success |
//! | --- | --- | --- |
//! | `POST /api/v1/vms/{name}/snapshot` | `vm snapshot <vm> [<name>] [--stop]` | 201 + `Location` |
//! | `GET /api/v1/snapshots` | `vm snapshots` | 200 |
//! | `GET /api/v1/snapshots/{snapshot}` | (a `vm snapshots` line) | 200 |
//! | `POST /api/v1/snapshots/{snapshot}/restore` | `vm restore <snapshot> [--force]` | 201 + `Location` |
//! | `DELETE /api/v1/snapshots/{snapshot}` | `snapshot rm <snapshot>` | 204 |
//!
//! A snapshot takes an optional body `{"name": "<snapshot>", "stop": false}`; a restore an
//! optional `{"force": false}`. A snapshot's name follows the VM naming rule: a
//! `{snapshot}` that breaks it is 400, a `name` in the body 422. The restored VM runs.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use keel_config::limits;

use super::types::json_object;
use super::vms::{created, status_error};
use super::{ApiError, Management, VmKey, api_error};
use crate::http::response::Response;
use crate::http::server::Request;

/// What the kernel does for the snapshot routes (part of [`super::Management`]).
pub trait SnapshotManagement {
    /// Pauses VM `key` (if running), writes its state and RAM to the store as snapshot
    /// `name` (default: `<vm>-<unix time>`), then resumes it, or stops it with `stop`.
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] when a snapshot has the name
    /// or the VM is not running; [`ApiError::Invalid`] when the store has no room (the
    /// message says how much it has); [`ApiError::Unavailable`] without a store;
    /// [`ApiError::Internal`] when the disk fails. No snapshot is left on error.
    fn take_snapshot(
        &mut self,
        key: &VmKey<'_>,
        name: Option<&str>,
        stop: bool,
    ) -> Result<Snapshot, ApiError>;
    /// Every snapshot in the store. Errors: [`ApiError::Unavailable`] without a store.
    fn snapshots(&self) -> Result<Vec<Snapshot>, ApiError>;
    /// Builds a new VM from snapshot `name` and runs it; returns its number.
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] when a writable disk changed
    /// since the snapshot and `force` is not set; [`ApiError::Invalid`] when its files are
    /// refused; [`ApiError::Unavailable`] without virtualization or host memory.
    fn restore_snapshot(&mut self, name: &str, force: bool) -> Result<u32, ApiError>;
    /// Deletes snapshot `name`'s files. Errors: [`ApiError::NotFound`].
    fn delete_snapshot(&mut self, name: &str) -> Result<(), ApiError>;
}

/// A writable disk a snapshot's VM had (its content is not in the snapshot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotDiskView {
    /// The store file's or partition's name.
    pub name: String,
    /// Whether it is a partition (else a store file).
    pub partition: bool,
    /// Whether the VM had it read-only.
    pub readonly: bool,
    /// Its size in bytes when the snapshot was taken (0 for a partition).
    pub size_bytes: u64,
}

/// A snapshot in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Snapshot {
    /// Its name: what `/api/v1/snapshots/{snapshot}` takes.
    pub name: String,
    /// The VM it was taken of.
    pub vm: String,
    /// When, in Unix seconds (from the appliance's RTC), or `null` if unknown.
    pub time: Option<u64>,
    /// Bytes of state in the store (RAM without its zero pages, vCPUs, devices).
    pub size_bytes: u64,
    /// Number of state files (`<name>.snap.NNN`, at most 2 GiB each).
    pub parts: u32,
    /// The VM's guest RAM in MiB.
    pub memory_mib: u32,
    /// The VM's vCPUs.
    pub vcpus: u32,
    /// The backend it ran on (`"svm"`, `"vmx"`).
    pub backend: String,
    /// How long writing it took, in milliseconds.
    pub write_ms: u64,
    /// The VM's disks.
    pub disks: Vec<SnapshotDiskView>,
}

/// `GET /api/v1/snapshots`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotList {
    /// The snapshots, in store order.
    pub snapshots: Vec<Snapshot>,
}

/// `POST /api/v1/vms/{name}/snapshot`'s optional body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The snapshot's name (the VM naming rule); `<vm>-<unix time>` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Leave the VM stopped afterwards (else it runs on).
    #[serde(default)]
    pub stop: bool,
}

/// `POST /api/v1/snapshots/{snapshot}/restore`'s optional body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRestoreRequest {
    /// Restore although a writable disk changed since the snapshot.
    #[serde(default)]
    pub force: bool,
}

/// Checks a snapshot name (the VM naming rule); the error is the message.
pub fn snapshot_name(name: &str) -> Result<&str, String> {
    limits::check_vm_name(name).map(|()| name).map_err(|why| {
        format!(
            "'{}' cannot name a snapshot: a name {why}",
            super::clip(name, 40)
        )
    })
}

fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &[u8]) -> Result<T, (u16, String)> {
    match json_object(bytes)? {
        None => Ok(T::default()),
        Some(value) => {
            T::deserialize(value).map_err(|e| (400, format!("invalid request body: {e}")))
        }
    }
}

/// `POST /api/v1/vms/{name}/snapshot`: 201 with the snapshot and its `Location`.
pub fn take<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let request: SnapshotRequest = body(req.body).map_err(status_error)?;
    if let Some(name) = &request.name {
        snapshot_name(name).map_err(|why| Response::error(422, &format!("name: {why}")))?;
    }
    let snapshot = mgmt
        .take_snapshot(key, request.name.as_deref(), request.stop)
        .map_err(api_error)?;
    let location = format!("/api/v1/snapshots/{}", snapshot.name);
    Ok(Response::json(201, &snapshot).with_header("Location", &location))
}

/// `GET /api/v1/snapshots`.
pub fn list<M: Management + ?Sized>(mgmt: &M) -> Result<Response, Response> {
    let snapshots = mgmt.snapshots().map_err(api_error)?;
    Ok(Response::json(200, &SnapshotList { snapshots }))
}

/// `GET /api/v1/snapshots/{snapshot}`.
pub fn show<M: Management + ?Sized>(mgmt: &M, name: &str) -> Result<Response, Response> {
    let snapshot = mgmt
        .snapshots()
        .map_err(api_error)?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| no_snapshot(name))?;
    Ok(Response::json(200, &snapshot))
}

/// `POST /api/v1/snapshots/{snapshot}/restore`: 201 with the new VM, running.
pub fn restore<M: Management + ?Sized>(
    mgmt: &mut M,
    name: &str,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let request: SnapshotRestoreRequest = body(req.body).map_err(status_error)?;
    let number = mgmt
        .restore_snapshot(name, request.force)
        .map_err(api_error)?;
    created(mgmt, &VmKey::Number(number))
}

/// `DELETE /api/v1/snapshots/{snapshot}`: 204.
pub fn delete<M: Management + ?Sized>(mgmt: &mut M, name: &str) -> Result<Response, Response> {
    mgmt.delete_snapshot(name).map_err(api_error)?;
    Ok(Response::new(204))
}

fn no_snapshot(name: &str) -> Response {
    Response::error(
        404,
        &format!("no snapshot named '{name}': GET /api/v1/snapshots lists them"),
    )
}

/// The mock kernel's snapshots: kept in `Mock::snapshots`; a restore adds a running VM
/// through the mock's own saved-VM restore path.
#[cfg(any(test, feature = "mock"))]
impl SnapshotManagement for super::mock::Mock {
    fn take_snapshot(
        &mut self,
        key: &VmKey<'_>,
        name: Option<&str>,
        stop: bool,
    ) -> Result<Snapshot, ApiError> {
        if self.store.is_none() {
            return Err(ApiError::Unavailable(String::from("no boot disk found")));
        }
        let vm = self
            .vm(key)
            .ok_or_else(|| ApiError::NotFound(format!("no VM named '{key}'")))?;
        let name = name.map_or_else(|| format!("{}-1796674438", vm.summary.name), String::from);
        if self.snapshots.iter().any(|s| s.name == name) {
            return Err(ApiError::Conflict(format!(
                "a snapshot named '{name}' exists: delete it first"
            )));
        }
        let snapshot = Snapshot {
            name: name.clone(),
            vm: vm.summary.name.clone(),
            time: Some(1_796_674_438),
            size_bytes: u64::from(vm.summary.memory_mib) << 18,
            parts: 1,
            memory_mib: vm.summary.memory_mib,
            vcpus: vm.summary.vcpus,
            backend: String::from("svm"),
            write_ms: 10,
            disks: Vec::new(),
        };
        self.snapshots.push(snapshot.clone());
        self.changes.push(format!(
            "snapshot {} as {name}{}",
            vm.summary.name,
            if stop { " stop" } else { "" }
        ));
        Ok(snapshot)
    }

    fn snapshots(&self) -> Result<Vec<Snapshot>, ApiError> {
        if self.store.is_none() {
            return Err(ApiError::Unavailable(String::from("no boot disk found")));
        }
        Ok(self.snapshots.clone())
    }

    fn restore_snapshot(&mut self, name: &str, force: bool) -> Result<u32, ApiError> {
        let snapshot = self
            .snapshots
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no snapshot named '{name}'")))?;
        self.changes.push(format!(
            "restore snapshot {name}{}",
            if force { " force" } else { "" }
        ));
        self.add_restored_vm(name, snapshot.memory_mib, snapshot.vcpus)
    }

    fn delete_snapshot(&mut self, name: &str) -> Result<(), ApiError> {
        let at = self
            .snapshots
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| ApiError::NotFound(format!("no snapshot named '{name}'")))?;
        self.snapshots.remove(at);
        self.changes.push(format!("delete snapshot {name}"));
        Ok(())
    }
}
