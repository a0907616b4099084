//! The live-migration routes: the console's `vm migrate` over HTTP, and the state of the
//! migrations this appliance sent or took since boot.
//!
//! | route | console | success |
//! | --- | --- | --- |
//! | `POST /api/v1/vms/{name}/migrate` | `vm migrate <vm> <host>[:<port>]` | 202 + `Location` |
//! | `GET /api/v1/migrations` | (the console's `migrat…` lines) | 200 |
//!
//! The body is `{"host": "a.b.c.d", "port": N}` (`port` optional: this appliance's
//! `management.migration_port`). The migration runs on in the kernel loop after the 202;
//! `GET /api/v1/migrations` shows its rounds, bytes, downtime and outcome.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::json_object;
use super::vms::status_error;
use super::{ApiError, Management, VmKey, api_error};
use crate::http::response::Response;
use crate::http::server::Request;

/// What the kernel does for the migration routes (part of [`super::Management`]).
pub trait MigrationManagement {
    /// Starts migrating running VM `key` to the appliance at `host:port` (`None`: this
    /// appliance's migration port) over the migration link; returns the migration as it
    /// stands (`requested`).
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] when a migration is under way
    /// or the VM cannot move (not running, has disks or NICs; the message says which);
    /// [`ApiError::Unavailable`] without a migration link or a token to present.
    fn migrate(
        &mut self,
        key: &VmKey<'_>,
        host: [u8; 4],
        port: Option<u16>,
    ) -> Result<Migration, ApiError>;
    /// The migrations since boot, oldest first (a bounded number of recent ones).
    fn migrations(&self) -> Vec<Migration>;
}

/// Which way a migration goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationDirection {
    /// A VM of this appliance going to another.
    Outgoing,
    /// A VM coming in from another appliance.
    Incoming,
}

/// Where a migration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPhase {
    /// Accepted by the API, waiting for the kernel loop to open the connection.
    Requested,
    /// Copying memory (or, incoming, receiving it).
    Running,
    /// The VM runs on the destination (gone from the source).
    Done,
    /// Abandoned or refused; `message` says why. An outgoing VM runs on at the source.
    Failed,
}

/// One migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Migration {
    /// The VM's key on this appliance (outgoing) or its name (incoming).
    pub vm: String,
    /// Which way it goes.
    pub direction: MigrationDirection,
    /// The other appliance, `a.b.c.d:port` (outgoing) or `a.b.c.d` (incoming).
    pub peer: String,
    /// Where it is.
    pub phase: MigrationPhase,
    /// Pre-copy rounds sent (outgoing; 0 before the end).
    pub rounds: u32,
    /// Stream bytes sent (outgoing; 0 before the end).
    pub bytes_sent: u64,
    /// Milliseconds from the start to the end, once over.
    pub total_ms: Option<u64>,
    /// The VM's downtime in milliseconds (the destination's pause-to-resume), once done.
    pub downtime_ms: Option<u64>,
    /// Why it failed, or the outcome line.
    pub message: Option<String>,
}

/// `GET /api/v1/migrations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MigrationList {
    /// The migrations since boot, oldest first.
    pub migrations: Vec<Migration>,
}

/// `POST /api/v1/vms/{name}/migrate`'s body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The destination's IPv4 address on the migration link, `a.b.c.d`.
    pub host: String,
    /// Its migration port; absent: this appliance's `management.migration_port`.
    #[serde(default)]
    pub port: Option<u16>,
}

/// The migrations since boot, as the kernel keeps them for `GET /api/v1/migrations`: at
/// most [`MigrationLog::MAX`]; the oldest finished one makes room for a new one.
#[derive(Clone, Debug)]
pub struct MigrationLog {
    next_id: u64,
    list: VecDeque<(u64, Migration)>,
}

impl Default for MigrationLog {
    fn default() -> Self {
        MigrationLog::new()
    }
}

fn under_way(m: &Migration) -> bool {
    matches!(m.phase, MigrationPhase::Requested | MigrationPhase::Running)
}

impl MigrationLog {
    /// Records kept.
    pub const MAX: usize = 16;

    /// An empty log.
    pub const fn new() -> MigrationLog {
        MigrationLog {
            next_id: 1,
            list: VecDeque::new(),
        }
    }

    /// A new migration of `vm` with `peer` in `phase`; returns its handle and the record.
    pub fn add(
        &mut self,
        vm: &str,
        direction: MigrationDirection,
        peer: String,
        phase: MigrationPhase,
    ) -> (u64, Migration) {
        let migration = Migration {
            vm: String::from(vm),
            direction,
            peer,
            phase,
            rounds: 0,
            bytes_sent: 0,
            total_ms: None,
            downtime_ms: None,
            message: None,
        };
        if self.list.len() >= Self::MAX {
            // The oldest finished one goes (at most one in and one out are under way).
            let at = self
                .list
                .iter()
                .position(|(_, m)| !under_way(m))
                .unwrap_or(0);
            self.list.remove(at);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.list.push_back((id, migration.clone()));
        (id, migration)
    }

    /// Changes record `id` (gone: nothing happens).
    pub fn update(&mut self, id: u64, change: impl FnOnce(&mut Migration)) {
        if let Some((_, m)) = self.list.iter_mut().find(|(i, _)| *i == id) {
            change(m);
        }
    }

    /// Marks record `id` failed with `why` (once: a later failure keeps the first reason).
    pub fn fail(&mut self, id: u64, why: String, total_ms: Option<u64>) {
        self.update(id, |m| {
            if m.phase != MigrationPhase::Failed {
                m.phase = MigrationPhase::Failed;
                m.message = Some(why);
                m.total_ms = total_ms;
            }
        });
    }

    /// The VM of the outgoing migration under way, if one is.
    pub fn outgoing_under_way(&self) -> Option<String> {
        self.list
            .iter()
            .find(|(_, m)| m.direction == MigrationDirection::Outgoing && under_way(m))
            .map(|(_, m)| m.vm.clone())
    }

    /// Every record, oldest first.
    pub fn all(&self) -> Vec<Migration> {
        self.list.iter().map(|(_, m)| m.clone()).collect()
    }
}

/// The destination address in `host`, or why it is unusable.
pub fn parse_host(host: &str) -> Result<[u8; 4], String> {
    let mut octets = [0u8; 4];
    let mut parts = host.split('.');
    for octet in &mut octets {
        let part = parts.next().unwrap_or("");
        let ok = !part.is_empty() && part.len() <= 3 && part.bytes().all(|b| b.is_ascii_digit());
        *octet = match part.parse::<u8>() {
            Ok(value) if ok => value,
            _ => return Err(not_an_address(host)),
        };
    }
    if parts.next().is_some() {
        return Err(not_an_address(host));
    }
    Ok(octets)
}

fn not_an_address(host: &str) -> String {
    format!(
        "host: '{}' is not an IPv4 address a.b.c.d (the destination's address on its \
         migration link)",
        super::clip(host, 40)
    )
}

/// `POST /api/v1/vms/{name}/migrate`: 202 with the migration and `Location:
/// /api/v1/migrations`.
pub fn start<M: Management + ?Sized>(
    mgmt: &mut M,
    key: &VmKey<'_>,
    req: &Request<'_>,
) -> Result<Response, Response> {
    let value = json_object(req.body)
        .map_err(status_error)?
        .ok_or_else(|| {
            Response::error(
                400,
                "missing request body: send {\"host\": \"a.b.c.d\", \"port\": N}",
            )
        })?;
    let request = MigrateRequest::deserialize(value)
        .map_err(|e| Response::error(400, &format!("invalid request body: {e}")))?;
    let host = parse_host(&request.host).map_err(|why| Response::error(422, &why))?;
    if request.port == Some(0) {
        return Err(Response::error(422, "port: 0 is not a TCP port (1-65535)"));
    }
    let migration = mgmt.migrate(key, host, request.port).map_err(api_error)?;
    Ok(Response::json(202, &migration).with_header("Location", "/api/v1/migrations"))
}

/// `GET /api/v1/migrations`.
pub fn list<M: Management + ?Sized>(mgmt: &M) -> Response {
    Response::json(
        200,
        &MigrationList {
            migrations: mgmt.migrations(),
        },
    )
}

/// The mock kernel's migrations: a running VM's migration is recorded as `requested` (the
/// mock has no link to run it over); another while one is under way is 409.
#[cfg(any(test, feature = "mock"))]
impl MigrationManagement for super::mock::Mock {
    fn migrate(
        &mut self,
        key: &VmKey<'_>,
        host: [u8; 4],
        port: Option<u16>,
    ) -> Result<Migration, ApiError> {
        let detail = self
            .vm(key)
            .ok_or_else(|| ApiError::NotFound(format!("no VM named '{key}'")))?;
        if !matches!(
            detail.summary.state,
            super::VmState::Running | super::VmState::Idle
        ) {
            return Err(ApiError::Conflict(format!(
                "vm {key} is not running: only a running VM can migrate"
            )));
        }
        if self
            .migrations
            .iter()
            .any(|m| matches!(m.phase, MigrationPhase::Requested | MigrationPhase::Running))
        {
            return Err(ApiError::Conflict(String::from(
                "a migration is under way: GET /api/v1/migrations shows it",
            )));
        }
        let [a, b, c, d] = host;
        let migration = Migration {
            vm: detail.summary.name.clone(),
            direction: MigrationDirection::Outgoing,
            peer: format!("{a}.{b}.{c}.{d}:{}", port.unwrap_or(7070)),
            phase: MigrationPhase::Requested,
            rounds: 0,
            bytes_sent: 0,
            total_ms: None,
            downtime_ms: None,
            message: None,
        };
        self.changes
            .push(format!("migrate {} to {}", migration.vm, migration.peer));
        self.migrations.push(migration.clone());
        Ok(migration)
    }

    fn migrations(&self) -> Vec<Migration> {
        self.migrations.clone()
    }
}
