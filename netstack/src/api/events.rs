//! `GET /api/v1/events?since=N`: the appliance's event log (VMs started and stopped and
//! why, the configuration saved, DHCP leases gained and lost), kept by the kernel in a
//! bounded ring. Poll with the `next` of the last answer as `since` to get each event once;
//! a first `seq` above `since` means older events were dropped in between.

use alloc::string::String;
use alloc::vec::Vec;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Management, since};
use crate::http::response::Response;
use crate::http::server::Request;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A VM started (by the operator, autostart or a restart).
    VmStarted,
    /// A VM stopped; the message says why (guest power-off, operator stop, crash).
    VmStopped,
    /// A new configuration was saved (console `config save` or `PUT /api/v1/config`).
    ConfigSaved,
    /// The management interface gained, renewed or lost its DHCP lease.
    Lease,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Its sequence number: 1 for the first since boot, one more for each.
    pub seq: u64,
    /// When it happened, in milliseconds since boot.
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The VM it concerns, if any.
    pub vm: Option<String>,
    /// What happened, for people.
    pub message: String,
}

/// The answer to `GET /api/v1/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventList {
    /// The `since` to ask with next time.
    pub next: u64,
    /// The kept events with `seq >= since`, oldest first.
    pub events: Vec<Event>,
}

/// `GET /api/v1/events`.
pub fn list<M: Management + ?Sized>(mgmt: &M, req: &Request<'_>) -> Result<Response, Response> {
    let since = since(req)?;
    Ok(Response::json(200, &mgmt.events(since)))
}
