//! The API's vocabulary: the [`Management`] trait the kernel implements, the JSON bodies it
//! returns, and [`ApiError`] for what the kernel refuses.
//!
//! These structs are the response bodies as they go on the wire (field names are the JSON
//! names); [`super::openapi`] describes each of them, and its tests check every body the
//! router produces against that description.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use keel_config::Config;

use crate::iface::NetStatus;

/// What the kernel does for the API. The router calls one method per request, on the
/// management CPU, between network polls; methods must not block.
pub trait Management {
    /// Version, uptime, CPUs, memory, virtualization, network.
    fn system(&self) -> SystemInfo;
    /// The guest payloads VMs can be started from.
    fn modules(&self) -> Vec<ModuleInfo>;
    /// Every VM, running or stopped, in id order.
    fn vms(&self) -> Vec<VmSummary>;
    /// One VM; `None` if there is no VM with this id.
    fn vm(&self, id: u32) -> Option<VmDetail>;
    /// Starts a VM from `module` (a module name, or its index in decimal) with `mem_mib` MiB
    /// of guest RAM (`None`: the kernel's default). Returns the new VM's id.
    ///
    /// Errors: [`ApiError::NotFound`] for an unknown module, [`ApiError::Invalid`] for a
    /// module that is not a loadable guest or an unusable memory size,
    /// [`ApiError::Unavailable`] without hardware virtualization or memory.
    fn start_vm(&mut self, module: &str, mem_mib: Option<u32>) -> Result<u32, ApiError>;
    /// Stops a VM. Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] if it is already
    /// stopped.
    fn stop_vm(&mut self, id: u32) -> Result<(), ApiError>;
    /// The VM's console output from byte offset `since` on (as much as the kernel keeps).
    /// Errors: [`ApiError::NotFound`].
    fn console(&self, id: u32, since: u64) -> Result<ConsoleChunk, ApiError>;
    /// The files of the guest store (the boot disk's `keel-store` partition), in directory
    /// order. Errors: [`ApiError::Unavailable`] when there is no boot disk or the store
    /// cannot be read.
    fn store(&self) -> Result<Vec<StoreFile>, ApiError>;
    /// The configuration the appliance runs with: the one loaded at boot (the built-in
    /// defaults when the boot disk has none) or the last one saved since.
    fn config(&self) -> Config;
    /// Persists `config` (already validated by the router) as the new configuration, makes
    /// it the one [`config`](Self::config) returns and applies what can change while
    /// running. Returns the generation it was saved as.
    ///
    /// Errors: [`ApiError::Unavailable`] when there is no boot disk to save to;
    /// [`ApiError::Internal`] when the disk fails (the previous configuration stays on disk
    /// and in effect).
    fn save_config(&mut self, config: Config) -> Result<u64, ApiError>;
}

/// Why the kernel refused an operation. Each maps to one HTTP status; the message goes
/// into the JSON error body as it is, so say what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// No such VM or module. 404.
    NotFound(String),
    /// The VM is not in a state that allows this (e.g. already stopped). 409.
    Conflict(String),
    /// The request is well-formed but cannot be carried out as given (not a guest image,
    /// memory size out of range). 422.
    Invalid(String),
    /// The host cannot do it now (no virtualization extension, out of memory). 503.
    Unavailable(String),
    /// A bug or an unexpected failure in the kernel. 500.
    Internal(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Invalid(_) => 422,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Invalid(m)
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => m,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// `GET /api/v1/system`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// The appliance's hostname, from its configuration.
    pub hostname: String,
    /// Keel's version.
    pub version: String,
    /// Milliseconds since boot.
    pub uptime_ms: u64,
    /// CPUs the kernel runs on.
    pub cpus: u32,
    /// Host memory.
    pub memory: MemoryInfo,
    /// The hardware virtualization in use (e.g. `"AMD-V with NPT"`), or why there is none.
    pub virtualization: String,
    /// The management interface.
    pub network: NetworkInfo,
}

/// Host memory totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryInfo {
    /// Usable RAM.
    pub total_bytes: u64,
    /// RAM not allocated to the kernel or guests.
    pub free_bytes: u64,
}

/// The management interface's addressing, as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Whether the address comes from DHCP.
    pub dhcp: bool,
    /// `a.b.c.d/prefix`, or `null` while DHCP has no lease.
    pub address: Option<String>,
    /// The default gateway.
    pub gateway: Option<String>,
    /// DNS servers.
    pub dns: Vec<String>,
    /// Lease acquisitions, changes and losses since boot.
    pub lease_events: u32,
}

impl From<&NetStatus> for NetworkInfo {
    fn from(status: &NetStatus) -> Self {
        NetworkInfo {
            mac: status.mac.to_string(),
            dhcp: status.dhcp,
            address: status.address.map(|a| a.to_string()),
            gateway: status.gateway.map(|g| g.to_string()),
            dns: status.dns.iter().map(|d| d.to_string()).collect(),
            lease_events: status.lease_events,
        }
    }
}

/// A guest payload VMs can start from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// Its index (usable as `module` when starting a VM).
    pub index: u32,
    /// Its file name.
    pub name: String,
    /// Its size.
    pub size_bytes: u64,
}

/// `GET /api/v1/modules`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleList {
    /// The modules.
    pub modules: Vec<ModuleInfo>,
}

/// Where a VM stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Running guest code.
    Running,
    /// Halted, waiting for an interrupt.
    Waiting,
    /// Finished; `stop_reason` says why.
    Stopped,
}

/// A file in the guest store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFile {
    /// Its name, as given to `keel build --store`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// `GET /api/v1/store`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreList {
    /// The files.
    pub files: Vec<StoreFile>,
}

/// A VM in the list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSummary {
    /// Its id.
    pub id: u32,
    /// The module it was started from.
    pub module: String,
    /// Its state.
    pub state: VmState,
    /// Why it stopped, when stopped.
    pub stop_reason: Option<String>,
    /// VM exits by reason.
    pub exits: BTreeMap<String, u64>,
}

/// `GET /api/v1/vms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmList {
    /// The VMs.
    pub vms: Vec<VmSummary>,
}

/// One VM in detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDetail {
    /// Its id.
    pub id: u32,
    /// The module it was started from.
    pub module: String,
    /// Its state.
    pub state: VmState,
    /// Why it stopped, when stopped.
    pub stop_reason: Option<String>,
    /// VM exits by reason.
    pub exits: BTreeMap<String, u64>,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// The virtualization backend running it (`"svm"`, `"vmx"`).
    pub backend: String,
    /// Console output so far, in bytes (the `next` of a console read from 0 that got all).
    pub console_bytes: u64,
}

/// `POST /api/v1/vms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartVm {
    /// A module name or index.
    pub module: String,
    /// Guest RAM in MiB; the kernel's default when absent or `null`.
    #[serde(default)]
    pub mem_mib: Option<u32>,
}

impl StartVm {
    /// Parses and checks a request body; the error is the 400/422 message.
    pub fn parse(body: &[u8]) -> Result<StartVm, (u16, String)> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err((
                400,
                String::from("request body must be a JSON object with a \"module\" field"),
            ));
        }
        let invalid = |err: serde_json::Error| (400, format!("invalid request body: {err}"));
        let value: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
        // Checked apart: serde would also take a struct from a JSON array.
        let kind = match &value {
            serde_json::Value::Object(_) => None,
            serde_json::Value::Array(_) => Some("an array"),
            serde_json::Value::String(_) => Some("a string"),
            serde_json::Value::Number(_) => Some("a number"),
            serde_json::Value::Bool(_) => Some("a boolean"),
            serde_json::Value::Null => Some("null"),
        };
        if let Some(kind) = kind {
            return Err((
                400,
                format!("invalid request body: expected a JSON object, not {kind}"),
            ));
        }
        let request = StartVm::deserialize(value).map_err(invalid)?;
        if request.module.is_empty() {
            return Err((422, String::from("module must not be empty")));
        }
        if let Some(mib) = request.mem_mib
            && (!(2..=65536).contains(&mib) || !mib.is_multiple_of(2))
        {
            return Err((
                422,
                String::from("mem_mib must be an even number from 2 to 65536"),
            ));
        }
        Ok(request)
    }
}

/// `GET /api/v1/vms/{id}/console`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleChunk {
    /// Output from the requested offset on (non-UTF-8 bytes replaced by U+FFFD).
    pub data: String,
    /// The offset to ask for next.
    pub next: u64,
    /// Bytes between the requested offset and `data` that the kernel no longer keeps.
    pub dropped: u64,
}
