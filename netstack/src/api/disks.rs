//! The guest-disk routes: the console's `disk`, `disk create` and `disk delete` over HTTP.
//!
//! | route | console | success |
//! | --- | --- | --- |
//! | `GET /api/v1/disks` | `disk` (its guest-disk part) | 200 |
//! | `GET /api/v1/disks/{disk}` | (a `disk` line) | 200 |
//! | `POST /api/v1/disks` | `disk create <name> <size>` | 201 + `Location` |
//! | `DELETE /api/v1/disks/{disk}` | `disk delete <name>` | 204 |
//!
//! The list holds both kinds of guest disk: GPT partitions of Keel's disk and the store's
//! disk-image files. Only partitions are made and deleted here (store files come from
//! `keel build`). A partition's name follows the VM naming rule: a `{disk}` to delete that
//! breaks it is 400, a `name` in the body 422. Every refused request changes nothing.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use keel_config::limits;

use super::types::json_object;
use super::vms::status_error;
use super::{ApiError, api_error};
use crate::http::response::Response;
use crate::http::server::Request;

/// Largest partition `POST /api/v1/disks` takes, in MiB (2^44 bytes = 16 TiB): far beyond
/// any disk Keel runs on, and small enough that no size arithmetic can overflow.
pub const MAX_DISK_MIB: u64 = 1 << 24;

/// What the kernel does for the guest-disk routes (part of [`super::Management`]).
pub trait DiskManagement {
    /// Every guest disk (partitions first, in table order, then store image files) and the
    /// largest free space for a new partition.
    ///
    /// Errors: [`ApiError::Unavailable`] without a boot disk.
    fn disks(&self) -> Result<DiskList, ApiError>;
    /// Makes the guest-disk partition `name` of `size_mib` MiB (already checked by the
    /// router: the name rule, 1 to [`MAX_DISK_MIB`]).
    ///
    /// Errors: [`ApiError::Conflict`] when a partition has the name; [`ApiError::Invalid`]
    /// when there is not enough free space (the message says how much there is);
    /// [`ApiError::Unavailable`] without a writable boot disk; [`ApiError::Internal`] when
    /// the disk fails. Nothing changes on error.
    fn create_disk(&mut self, name: &str, size_mib: u64) -> Result<GuestDisk, ApiError>;
    /// Deletes the guest-disk partition `name`.
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] while a VM uses it;
    /// [`ApiError::Unavailable`] without a writable boot disk; [`ApiError::Internal`] when
    /// the disk fails. Nothing changes on error.
    fn delete_disk(&mut self, name: &str) -> Result<(), ApiError>;
}

/// What backs a guest disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiskKind {
    /// A GPT partition of its own on Keel's disk (any size).
    Partition,
    /// A file in the guest store (at most 4 GiB - 1).
    File,
}

/// A VM using a guest disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DiskUse {
    /// The VM's name (its number for an ad-hoc VM).
    pub vm: String,
    /// Whether it has the disk read-only.
    pub readonly: bool,
}

/// One guest disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GuestDisk {
    /// Its name: the partition's, or the store file's.
    pub name: String,
    /// What backs it.
    pub kind: DiskKind,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// The VMs using it now.
    pub users: Vec<DiskUse>,
}

/// `GET /api/v1/disks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DiskList {
    /// The guest disks.
    pub disks: Vec<GuestDisk>,
    /// The largest free space on Keel's disk for a new partition, in MiB.
    pub free_mib: u64,
}

/// `POST /api/v1/disks`'s body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDisk {
    /// The new partition's name (the VM naming rule).
    #[schemars(
        length(min = 1, max = limits::MAX_VM_NAME_LEN),
        pattern(format!("^{}$", limits::vm_name_pattern()))
    )]
    pub name: String,
    /// Its size in MiB.
    #[schemars(range(min = 1, max = MAX_DISK_MIB))]
    pub size_mib: u64,
}

impl CreateDisk {
    /// Parses and checks a request body; the error is the status and message (400 for a
    /// body that is not this object, 422 for a name or size out of the rules).
    pub fn parse(body: &[u8]) -> Result<CreateDisk, (u16, String)> {
        let value = json_object(body)?.ok_or_else(|| {
            (
                400,
                String::from(
                    "request body must be a JSON object, e.g. {\"name\":\"data\",\"size_mib\":8192}",
                ),
            )
        })?;
        let request = CreateDisk::deserialize(value)
            .map_err(|e| (400, format!("invalid request body: {e}")))?;
        limits::check_vm_name(&request.name).map_err(|why| (422, format!("name: {why}")))?;
        if !(1..=MAX_DISK_MIB).contains(&request.size_mib) {
            return Err((422, format!("size_mib: must be 1 to {MAX_DISK_MIB}")));
        }
        Ok(request)
    }
}

/// A `{disk}` path segment naming a partition (to delete): the name rule, else 400. (Any
/// segment may name a disk to show: store files have names of their own.)
pub fn partition_name(segment: &str) -> Result<&str, Response> {
    limits::check_vm_name(segment)
        .map(|_| segment)
        .map_err(|why| {
            Response::error(
                400,
                &format!(
                    "disk partition name in the path {why} (store files cannot be deleted here)"
                ),
            )
        })
}

/// `GET /api/v1/disks`.
pub fn list<M: DiskManagement + ?Sized>(mgmt: &M) -> Result<Response, Response> {
    Ok(Response::json(200, &mgmt.disks().map_err(api_error)?))
}

/// `GET /api/v1/disks/{disk}`: a partition or a store image file of that name.
pub fn show<M: DiskManagement + ?Sized>(mgmt: &M, name: &str) -> Result<Response, Response> {
    let list = mgmt.disks().map_err(api_error)?;
    let disk = list
        .disks
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| no_disk(name))?;
    Ok(Response::json(200, &disk))
}

/// `POST /api/v1/disks`: 201 with the new partition and its `Location`.
pub fn create<M: DiskManagement + ?Sized>(
    mgmt: &mut M,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let request = CreateDisk::parse(req.body).map_err(status_error)?;
    let disk = mgmt
        .create_disk(&request.name, request.size_mib)
        .map_err(api_error)?;
    let location = format!("/api/v1/disks/{}", disk.name);
    Ok(Response::json(201, &disk).with_header("Location", &location))
}

/// `DELETE /api/v1/disks/{disk}`: 204.
pub fn delete<M: DiskManagement + ?Sized>(mgmt: &mut M, name: &str) -> Result<Response, Response> {
    mgmt.delete_disk(name).map_err(api_error)?;
    Ok(Response::new(204))
}

fn no_disk(name: &str) -> Response {
    Response::error(
        404,
        &format!("no guest disk named '{name}': GET /api/v1/disks lists them"),
    )
}

/// The mock kernel's guest disks: partitions in `Mock::disks`, store files ending in `.img`.
#[cfg(any(test, feature = "mock"))]
impl DiskManagement for super::mock::Mock {
    fn disks(&self) -> Result<DiskList, ApiError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| ApiError::Unavailable(String::from("no boot disk found")))?;
        let mut disks = self.disks.clone();
        disks.extend(
            store
                .iter()
                .filter(|f| f.name.ends_with(".img"))
                .map(|f| GuestDisk {
                    name: f.name.clone(),
                    kind: DiskKind::File,
                    size_bytes: f.size,
                    users: Vec::new(),
                }),
        );
        let used: u64 = self.disks.iter().map(|d| d.size_bytes >> 20).sum();
        Ok(DiskList {
            disks,
            free_mib: self.disk_space_mib.saturating_sub(used),
        })
    }

    fn create_disk(&mut self, name: &str, size_mib: u64) -> Result<GuestDisk, ApiError> {
        let list = self.disks()?;
        if self.disks.iter().any(|d| d.name == name) {
            return Err(ApiError::Conflict(format!(
                "a disk partition named {name:?} already exists"
            )));
        }
        if size_mib > list.free_mib {
            return Err(ApiError::Invalid(format!(
                "not enough free space on Keel's disk for {size_mib} MiB: the largest free \
                 space is {} MiB",
                list.free_mib
            )));
        }
        let disk = GuestDisk {
            name: String::from(name),
            kind: DiskKind::Partition,
            size_bytes: size_mib << 20,
            users: Vec::new(),
        };
        self.disks.push(disk.clone());
        self.changes.push(format!("create disk {name} {size_mib}"));
        Ok(disk)
    }

    fn delete_disk(&mut self, name: &str) -> Result<(), ApiError> {
        self.disks()?;
        let at = self
            .disks
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| ApiError::NotFound(format!("no disk partition named {name:?}")))?;
        if let Some(user) = self.disks[at].users.first() {
            return Err(ApiError::Conflict(format!(
                "disk partition {name:?} is in use by {}: stop it first",
                user.vm
            )));
        }
        self.disks.remove(at);
        self.changes.push(format!("delete disk {name}"));
        Ok(())
    }
}
