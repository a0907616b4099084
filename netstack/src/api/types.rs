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

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use keel_config::Config;
use keel_config::limits::{self, MAX_MEMORY_MIB, MAX_VCPUS, MIN_RUN_MEMORY_MIB};
use keel_config::schema::{MacAddress, NicNetwork};

use crate::iface::NetStatus;

/// What the kernel does for the API. The router calls one method per request, on the
/// management CPU, between network polls; methods must not block.
///
/// A VM is named by a `key`: the name of a VM defined in the configuration, or the number
/// of any VM (`vm list`'s first column), in decimal. The router checks a key's syntax
/// ([`VmKey`]) before it calls; the kernel says whether a VM has it.
pub trait Management:
    super::disks::DiskManagement
    + super::snapshots::SnapshotManagement
    + super::migrate::MigrationManagement
{
    /// Version, uptime, CPUs, memory, virtualization, network.
    fn system(&self) -> SystemInfo;
    /// The guest payloads VMs can be started from.
    fn modules(&self) -> Vec<ModuleInfo>;
    /// Every VM in number order: the named ones whether or not they ever ran (state
    /// `defined` until the first start), and the ad-hoc ones started from boot modules.
    fn vms(&self) -> Vec<VmSummary>;
    /// One VM; `None` if no VM has this key.
    fn vm(&self, key: &VmKey<'_>) -> Option<VmDetail>;
    /// Starts an ad-hoc VM from boot module `module` (a module name, or its index in
    /// decimal) with `mem_mib` MiB of guest RAM (`None`: the kernel's default) and `vcpus`
    /// vCPUs (`None`: 1). Returns the new VM's number.
    ///
    /// Errors: [`ApiError::NotFound`] for an unknown module, [`ApiError::Invalid`] for a
    /// module that is not a loadable guest or an unusable memory size,
    /// [`ApiError::Unavailable`] without hardware virtualization.
    fn run_module(
        &mut self,
        module: &str,
        mem_mib: Option<u32>,
        vcpus: Option<u8>,
        devices: &[keel_config::schema::VmDevice],
    ) -> Result<u32, ApiError>;
    /// Adds `vm` (already validated by the router) to the configuration, saves it as
    /// `vm create` does, and defines the VM (state `defined`).
    ///
    /// Errors: [`ApiError::Conflict`] when a VM has this name already;
    /// [`ApiError::Invalid`] when the configuration with it is invalid;
    /// [`ApiError::Unavailable`] without a boot disk to save to; [`ApiError::Internal`] when
    /// the disk fails. Nothing changes on error.
    fn create_vm(&mut self, vm: keel_config::schema::Vm) -> Result<(), ApiError>;
    /// Stops a named VM at once and removes it from the configuration (`vm destroy`).
    /// Returns the configuration generation it was saved as.
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] for an ad-hoc VM (not in the
    /// configuration: stop it instead); the save errors of [`create_vm`](Self::create_vm).
    fn destroy_vm(&mut self, key: &VmKey<'_>) -> Result<u64, ApiError>;
    /// Starts a named VM from its definition.
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] when it runs already or is an
    /// ad-hoc VM; [`ApiError::Invalid`] when its files are missing or unusable or the host
    /// lacks the memory; [`ApiError::Unavailable`] without hardware virtualization.
    fn start_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError>;
    /// Stops a VM as `mode` says (a graceful stop completes later).
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] if it is not running.
    fn stop_vm(&mut self, key: &VmKey<'_>, mode: StopMode) -> Result<(), ApiError>;
    /// Restarts a named VM: stops it as `mode` says, then starts it again; starts it at once
    /// when it is not running. Returns whether it started at once (`false`: it starts when
    /// the stop completes).
    ///
    /// Errors: those of [`start_vm`](Self::start_vm).
    fn restart_vm(&mut self, key: &VmKey<'_>, mode: StopMode) -> Result<bool, ApiError>;
    /// Pauses a running (or idle) VM: its vCPUs stop running and its device timers stop
    /// advancing until [`resume_vm`](Self::resume_vm); its state is then
    /// [`VmState::Paused`].
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] when it is not running (defined,
    /// stopping, stopped) or is paused already. Nothing changes on error.
    fn pause_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError>;
    /// Resumes a paused VM exactly where it stopped.
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] when it is not paused. Nothing
    /// changes on error.
    fn resume_vm(&mut self, key: &VmKey<'_>) -> Result<(), ApiError>;
    /// Saves paused VM `key` into the appliance's memory under `name` (`None`: the VM's
    /// name, or its number for an ad-hoc VM), as `vm save` does; returns the saved VM. The
    /// router checks `name` with [`saved_name`] first.
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] when the VM is not paused or a
    /// saved VM has this name already; [`ApiError::Invalid`] for a name that breaks the
    /// rule; [`ApiError::Unavailable`] when the host has no memory for the saved bytes;
    /// [`ApiError::Internal`] when the VMM fails. Nothing changes on error.
    fn save_vm(&mut self, key: &VmKey<'_>, name: Option<&str>) -> Result<SavedVm, ApiError>;
    /// Every saved VM, sorted by name (`saved ls`).
    fn saved_vms(&self) -> Vec<SavedVm>;
    /// The saved VM `name`; `None` if there is none.
    fn saved_vm(&self, name: &str) -> Option<SavedVm>;
    /// Builds a new ad-hoc VM, paused, from the saved VM `name` (`vm restore`); returns its
    /// number. The saved VM stays for further restores.
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Invalid`] when the saved bytes or a state
    /// in them are refused; [`ApiError::Unavailable`] without hardware virtualization or
    /// without host memory for its RAM. Nothing is created on error.
    fn restore_vm(&mut self, name: &str) -> Result<u32, ApiError>;
    /// Deletes the saved VM `name` (`saved rm`). Errors: [`ApiError::NotFound`].
    fn delete_saved(&mut self, name: &str) -> Result<(), ApiError>;
    /// The VM's console output from byte offset `since` on (as much as the kernel keeps);
    /// empty for a VM that never ran. Errors: [`ApiError::NotFound`].
    fn console(&self, key: &VmKey<'_>, since: u64) -> Result<ConsoleChunk, ApiError>;
    /// Queues `bytes` as input to the VM's serial console; returns how many the guest's
    /// input queue took (the rest is dropped, as a UART drops what overflows it).
    ///
    /// Errors: [`ApiError::NotFound`]; [`ApiError::Conflict`] if it is not running.
    fn console_input(&mut self, key: &VmKey<'_>, bytes: &[u8]) -> Result<usize, ApiError>;
    /// The VM's console output from byte offset `since` on as raw bytes, and the offset to
    /// ask for next (the WebSocket console). The default takes [`console`](Self::console)'s
    /// text, whose length differs from the raw bytes' only where the guest wrote bytes that
    /// are not UTF-8.
    ///
    /// Errors: [`ApiError::NotFound`].
    fn console_bytes(&self, key: &VmKey<'_>, since: u64) -> Result<(Vec<u8>, u64), ApiError> {
        self.console(key, since)
            .map(super::console_ws::bytes_from_chunk)
    }
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
    /// The guest networks: both switches (ports with their counters, MAC tables) and the
    /// appliance's internal address with its DHCP leases (`GET /api/v1/network`).
    fn network(&self) -> NetworkView;
    /// The event log's kept events with a sequence number of at least `since`, and the
    /// `since` to ask with next ([`super::events`]).
    fn events(&self, since: u64) -> super::EventList;
    /// The generation the running configuration was saved as; 0 for the built-in defaults.
    fn config_generation(&self) -> u64;
}

/// How to stop a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Press the ACPI power button; force it off if it still runs after `timeout_s`.
    Graceful {
        /// Grace time in seconds.
        timeout_s: u32,
    },
    /// Stop it now.
    Force,
}

/// The grace time of a graceful stop when the request names none (as on the console).
pub const DEFAULT_STOP_TIMEOUT_S: u32 = 30;

/// The longest grace time a stop may ask for (as on the console).
pub const MAX_STOP_TIMEOUT_S: u32 = 3600;

/// A VM's key, as the path gives it: a number or a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmKey<'a> {
    /// The VM's number.
    Number(u32),
    /// A configured VM's name.
    Name(&'a str),
}

impl<'a> VmKey<'a> {
    /// Parses a path segment: decimal digits that fit a `u32` are a number, anything else
    /// must be a valid VM name (the configuration's rule, [`limits::check_vm_name`]). The
    /// error is the 400 message.
    pub fn parse(segment: &'a str) -> Result<VmKey<'a>, String> {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            if segment.len() <= 10
                && let Ok(n) = segment.parse()
            {
                return Ok(VmKey::Number(n));
            }
            return Err(format!(
                "VM number must be from 0 to 4294967295, not {}",
                super::clip(segment, 40)
            ));
        }
        match limits::check_vm_name(segment) {
            Ok(()) => Ok(VmKey::Name(segment)),
            Err(why) => Err(format!(
                "'{}' is neither a VM number nor a VM name (a name {why})",
                super::clip(segment, 40)
            )),
        }
    }
}

impl fmt::Display for VmKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmKey::Number(n) => write!(f, "{n}"),
            VmKey::Name(name) => f.write_str(name),
        }
    }
}

/// Checks the name of a saved VM (a `{saved}` path segment, or the `name` a save asks for):
/// the VM naming rule ([`limits::check_vm_name`]), or a VM number, as the console's `vm save`
/// takes. Returns it unchanged; the error is the message.
pub fn saved_name(name: &str) -> Result<&str, String> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        if name.len() <= 10 && name.parse::<u32>().is_ok() {
            return Ok(name);
        }
        return Err(format!(
            "'{}' cannot name a saved VM: a number must be from 0 to 4294967295",
            super::clip(name, 40)
        ));
    }
    limits::check_vm_name(name).map(|()| name).map_err(|why| {
        format!(
            "'{}' cannot name a saved VM: a name {why} (or is a VM number)",
            super::clip(name, 40)
        )
    })
}

/// Why the kernel refused an operation. Each maps to one HTTP status; the message goes
/// into the JSON error body as it is, so say what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No such VM or module. 404.
    #[error("{0}")]
    NotFound(String),
    /// The VM is not in a state that allows this (e.g. already stopped). 409.
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but cannot be carried out as given (not a guest image,
    /// memory size out of range). 422.
    #[error("{0}")]
    Invalid(String),
    /// The host cannot do it now (no virtualization extension, out of memory). 503.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure in the kernel. 500.
    #[error("{0}")]
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

/// `GET /api/v1/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    /// Always `ok`: an answer at all means the server is up.
    pub status: HealthStatus,
}

/// The health status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The server is up.
    Ok,
}

/// `GET /api/v1/system`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SystemInfo {
    /// The appliance's hostname, from its configuration.
    pub hostname: String,
    /// Keel's version.
    pub version: String,
    /// Milliseconds since boot.
    pub uptime_ms: u64,
    /// CPUs the kernel runs on.
    pub cpus: u32,
    /// Every CPU the firmware lists, with its state and virtualization (`cpus` stays the
    /// count). Absent from the JSON of Keel versions before it (empty then).
    #[serde(default)]
    pub cpu_list: Vec<HostCpuInfo>,
    /// Host memory.
    pub memory: MemoryInfo,
    /// The hardware virtualization in use (e.g. `"AMD-V with NPT"`), or why there is none.
    pub virtualization: String,
    /// The management interface.
    pub network: NetworkInfo,
    /// What the machine is, from its SMBIOS tables. Absent from the JSON of Keel versions
    /// before it (all `null` then).
    #[serde(default)]
    pub hardware: HardwareInfo,
    /// Every disk the host's storage drivers found: Keel's own, the others (left alone) and
    /// devices a driver could not bring up.
    pub disks: Vec<HostDiskInfo>,
}

/// One host CPU in [`SystemInfo::cpu_list`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "HostCpu")]
pub struct HostCpuInfo {
    /// Kernel index: online CPUs are `0..cpus` (0 is the boot CPU), the others follow.
    pub index: u32,
    /// Local APIC (or x2APIC) id from the MADT.
    pub apic_id: u32,
    /// `"online"`, `"failed"` (did not start: see `reason`) or `"offline"`.
    pub state: String,
    /// Why the CPU is not online; `null` when it is.
    pub reason: Option<String>,
    /// `"on"` when the CPU can run guests (its VT-x or AMD-V is on), else `"off"`.
    pub virtualization: String,
    /// The extension (`"AMD-V"`, `"VT-x"`) when on, or why it is off.
    pub virtualization_detail: String,
    /// Share of the last 5 seconds this CPU spent running vCPUs, in percent (0 for a CPU
    /// that is not online). Absent from the JSON of Keel versions before it.
    #[serde(default)]
    pub load_percent: u32,
    /// The vCPUs placed on this CPU, as `name/vcpuN` (the VM's name, or its number for a
    /// VM started with `vm run`).
    #[serde(default)]
    pub vcpus: Vec<String>,
    /// Milliseconds this CPU has spent running vCPUs since boot (0 when not online).
    #[serde(default)]
    pub guest_ms: u64,
    /// Milliseconds this CPU has spent halted, with nothing to do, since boot; the rest of
    /// `uptime_ms` it was busy (with guests, the management plane or interrupts).
    #[serde(default)]
    pub idle_ms: u64,
}

/// What the firmware's SMBIOS tables say the machine is. Each field is `null` when the
/// table lacks it or holds a placeholder such as "To Be Filled By O.E.M.".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Hardware")]
pub struct HardwareInfo {
    /// The table's version, e.g. `"SMBIOS 3.0"`; `null` when the firmware publishes none.
    pub source: Option<String>,
    /// System manufacturer (SMBIOS type 1), e.g. `"Dell Inc."`.
    pub vendor: Option<String>,
    /// System product name (type 1), e.g. `"PowerEdge R650"`.
    pub product: Option<String>,
    /// System serial number (type 1): the service tag on most servers.
    pub serial: Option<String>,
    /// BIOS vendor (type 0).
    pub bios_vendor: Option<String>,
    /// BIOS version (type 0).
    pub bios_version: Option<String>,
    /// BIOS release date (type 0), as the firmware writes it (usually `mm/dd/yyyy`).
    pub bios_date: Option<String>,
}

/// What Keel does with a host disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostDiskRole {
    /// Keel's own disk: configuration, guest store, guest-disk partitions.
    Keel,
    /// Another disk, left alone (`detail` says why it is not Keel's).
    Other,
    /// Its driver could not bring it up (`detail` says why).
    Failed,
}

/// A disk on the host (not a guest disk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "HostDisk")]
pub struct HostDiskInfo {
    /// The driver: `virtio-blk`, `nvme`, `ahci` or `ata`.
    pub driver: String,
    /// Where it is: PCI address plus port or namespace (`00:1f.2 port 0`).
    pub location: String,
    /// Model and serial as the device reports them; empty when unknown.
    pub model: String,
    /// Capacity (0 for a device that did not come up).
    pub size_bytes: u64,
    /// Whether the device refuses writes.
    pub read_only: bool,
    /// What Keel does with it.
    pub role: HostDiskRole,
    /// Why it is not Keel's, or why it failed; empty for Keel's disk.
    pub detail: String,
}

/// Host memory: totals, and what the used part is used for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Memory")]
pub struct MemoryInfo {
    /// Usable RAM in the firmware's memory map, the kernel image and boot modules included.
    pub total_bytes: u64,
    /// RAM not allocated to the kernel or guests.
    pub free_bytes: u64,
    /// Used RAM (`total_bytes - free_bytes`) by use; every field but `heap_used_bytes` is a
    /// part, and the parts sum to it.
    #[serde(default)]
    pub by_use: MemoryByUse,
    /// Each VM holding memory: its RAM and what running it costs beyond that.
    #[serde(default)]
    pub vms: Vec<VmMemory>,
}

/// Used host memory by use, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "MemoryByUse")]
pub struct MemoryByUse {
    /// The kernel image: text, rodata, data and bss.
    pub kernel_image_bytes: u64,
    /// Boot modules (guest images the boot loader handed over).
    pub boot_modules_bytes: u64,
    /// The first MiB, the frame allocator's bitmap and firmware tables.
    pub firmware_and_bitmap_bytes: u64,
    /// The kernel's own page tables.
    pub page_tables_bytes: u64,
    /// The kernel heap's reservation, used or not.
    pub heap_reserved_bytes: u64,
    /// The part of the heap in use (inside `heap_reserved_bytes`, not a further part).
    pub heap_used_bytes: u64,
    /// Host drivers' DMA memory: NIC rings and buffers, disk queues.
    pub device_dma_bytes: u64,
    /// Per-CPU virtualization pages shared by all VMs (SVM host save area, VMXON region).
    pub cpu_virtualization_bytes: u64,
    /// Staging copies of guest memory for saves in progress.
    pub snapshot_bytes: u64,
    /// Everything the VMs hold (the sum of `vms[].guest_ram_bytes` and their frames'
    /// overhead).
    pub vms_bytes: u64,
}

/// One VM's memory bill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "VmMemory")]
pub struct VmMemory {
    /// The VM's name, or its number for an ad-hoc VM.
    pub name: String,
    /// The guest's RAM.
    pub guest_ram_bytes: u64,
    /// Host memory it costs beyond its RAM: the sum of `by_use`.
    pub overhead_bytes: u64,
    /// The overhead by use.
    pub by_use: VmMemoryByUse,
}

/// A VM's overhead by use, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "VmMemoryByUse")]
pub struct VmMemoryByUse {
    /// Second-level page tables (NPT on AMD-V, EPT on VT-x) mapping its RAM.
    pub second_level_tables_bytes: u64,
    /// vCPU control pages: VMCB/VMCS, permission bitmaps, FPU save areas.
    pub vcpu_control_bytes: u64,
    /// Device buffers: the heap its start took for its device models (virtio queue state,
    /// UART and console buffers, NIC ports) and the VMM's tables. Part of the host's
    /// `heap_used_bytes`.
    pub device_buffers_bytes: u64,
}

/// The management interface's addressing, as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Network")]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModuleInfo {
    /// Its index (usable as `module` when starting a VM).
    pub index: u32,
    /// Its file name.
    pub name: String,
    /// Its size.
    pub size_bytes: u64,
}

/// `GET /api/v1/modules`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ModuleList {
    /// The modules.
    pub modules: Vec<ModuleInfo>,
}

/// Where a VM stands:
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Defined in the configuration, never started since boot.
    Defined,
    /// Running guest code.
    Running,
    /// Halted, waiting for an interrupt.
    Idle,
    /// Paused by the operator: its vCPUs do not run and its timers do not advance until it
    /// is resumed.
    Paused,
    /// A graceful stop is under way (the power button was pressed).
    Stopping,
    /// Finished; `stop_reason` says why.
    Stopped,
}

impl VmState {
    /// The state as the API writes it (`"paused"`).
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Defined => "defined",
            VmState::Running => "running",
            VmState::Idle => "idle",
            VmState::Paused => "paused",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file in the guest store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoreFile {
    /// Its name, as given to `keel build --store`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// `GET /api/v1/store`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoreList {
    /// The files.
    pub files: Vec<StoreFile>,
}

/// A VM in the list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmSummary {
    /// What `/api/v1/vms/{name}` takes: the name of a configured VM, or the number of an
    /// ad-hoc one.
    pub name: String,
    /// Its number (also accepted as `{name}`).
    pub number: u32,
    /// Whether it is defined in the configuration (an ad-hoc VM from a boot module is not).
    pub configured: bool,
    /// What it starts from: `store:<kernel>` for a configured VM, a boot module's name.
    pub source: String,
    /// Its state.
    pub state: VmState,
    /// Why it stopped, when stopped.
    pub stop_reason: Option<String>,
    /// Guest RAM in MiB (as defined, until it runs).
    pub memory_mib: u32,
    /// vCPUs (as defined, until it runs).
    pub vcpus: u32,
    /// Seconds since it started, while it runs (running, idle, paused or stopping).
    pub uptime_s: Option<u64>,
    /// Whether it starts at boot.
    pub autostart: bool,
}

/// `GET /api/v1/vms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmList {
    /// The VMs.
    pub vms: Vec<VmSummary>,
}

/// One VM in detail: the summary's fields and more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VmDetail {
    /// The list's fields.
    #[serde(flatten)]
    pub summary: VmSummary,
    /// VM exits of the current or last run, by reason.
    pub exits: BTreeMap<String, u64>,
    /// The virtualization backend of the current or last run (`"svm"`, `"vmx"`); `null`
    /// until it first runs.
    pub backend: Option<String>,
    /// Console output of the current or last run so far, in bytes.
    pub console_bytes: u64,
    /// Host CPU time the current or last run has spent running its vCPUs (they take turns
    /// in the VM's slices), in milliseconds. Absent from the JSON of Keel versions before it.
    #[serde(default)]
    pub run_ms: u64,
    /// A configured VM's kernel (a guest store file); `null` for an ad-hoc VM and for one
    /// that boots a firmware.
    pub kernel: Option<String>,
    /// A configured VM's firmware (a guest store file) when it boots one instead of a kernel.
    pub firmware: Option<String>,
    /// A configured VM's initrd, if it has one.
    pub initrd: Option<String>,
    /// A configured VM's kernel command line; `null` for an ad-hoc VM.
    pub cmdline: Option<String>,
    /// A configured VM's disks, as defined, in the order the guest sees them; empty for an
    /// ad-hoc VM.
    #[serde(default)]
    pub disks: Vec<keel_config::schema::VmDisk>,
    /// A configured VM's NICs in the order the guest sees them, with the device's counters
    /// (zeros when the VM is not running); empty for an ad-hoc VM.
    #[serde(default)]
    pub nics: Vec<NicView>,
}

/// One NIC of a VM: its definition and the virtio-net device's counters, from the guest's
/// point of view (rx: delivered to the guest; tx: sent by it). Counters are those of the
/// current or last run, zeros until it first runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NicView {
    /// Its index in the VM's `nics` (`nic0` on the console).
    pub index: u32,
    /// The switch it is on.
    pub network: NicNetwork,
    /// Its MAC address (the configured one, or the one derived for it).
    pub mac: MacAddress,
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Bytes delivered to the guest.
    pub rx_bytes: u64,
    /// Frames the guest sent that the switch took.
    pub tx_frames: u64,
    /// Bytes the guest sent that the switch took.
    pub tx_bytes: u64,
    /// Frames the guest sent that the switch refused (its port's queue was full).
    pub tx_dropped: u64,
    /// Malformed frames the guest sent (runt, oversize, bad descriptors), dropped.
    pub tx_bad: u64,
    /// Frames for the guest larger than every receive buffer it posted, dropped.
    pub rx_dropped: u64,
}

/// `GET /api/v1/network`: the host's NICs and the appliance's guest networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkView {
    /// Every network-class PCI function of the host, in PCI order, with a driver or not.
    pub host_nics: Vec<HostNicView>,
    /// The switches: `bridged` (with the uplink to the physical network) and `internal`.
    pub switches: Vec<SwitchView>,
    /// The appliance's side of the internal network.
    pub internal: InternalNetworkView,
}

/// What became of a host NIC at boot:
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostNicState {
    /// Its driver brought it up.
    Up,
    /// Its driver recognised it but could not bring it up (see `error`).
    Failed,
    /// Keel has no driver for it.
    NoDriver,
}

/// One host NIC (a PCI function of class 02).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostNicView {
    /// PCI address, `00:03.0`: what `network.interface` may name.
    pub pci_address: String,
    /// PCI vendor and device ID, `8086:10d3`.
    pub pci_id: String,
    /// Driver: `virtio-net`, `e1000`, `e1000e`, `igb`; `null` when Keel has none.
    pub driver: Option<String>,
    /// Station address, when the driver read one: what `network.interface` may name.
    pub mac: Option<MacAddress>,
    /// Up, failed or without a driver.
    pub state: HostNicState,
    /// Why the driver failed; `null` otherwise.
    pub error: Option<String>,
    /// Link up (true) or down (false); `null` when not up or the driver cannot tell
    /// (virtio-net).
    pub link_up: Option<bool>,
    /// Whether it carries management and the `bridged` switch's uplink.
    pub management: bool,
}

/// One software switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SwitchView {
    /// Which network it is.
    pub network: NicNetwork,
    /// Its ports, by id.
    pub ports: Vec<SwitchPortView>,
    /// The MAC addresses it has learned and the port each is behind.
    pub mac_table: Vec<MacEntryView>,
}

/// What a switch port connects to:
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortKindView {
    /// The physical NIC (bridged switch only).
    Uplink,
    /// The appliance's own network interface.
    Appliance,
    /// A guest NIC.
    Guest,
}

/// One switch port and its counters, from the port's point of view: rx is what the port sent
/// into the switch, tx what the switch passed to the port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SwitchPortView {
    /// The port's id, as the MAC table names it.
    pub id: u32,
    /// What it connects to.
    pub kind: PortKindView,
    /// `e1000 52:54:00:12:34:56` for the uplink, `appliance`, `web nic0` for a guest NIC.
    pub name: String,
    /// A guest port's VM; `null` for other ports.
    pub vm: Option<String>,
    /// A guest port's NIC index; `null` for other ports.
    pub nic: Option<u32>,
    /// The only source MAC the port may send from (guests, the appliance); `null` for the
    /// uplink, which sends from any.
    pub mac: Option<MacAddress>,
    /// Frames the port sent into the switch.
    pub rx_frames: u64,
    /// Bytes the port sent into the switch.
    pub rx_bytes: u64,
    /// Frames the switch passed to the port.
    pub tx_frames: u64,
    /// Bytes the switch passed to the port.
    pub tx_bytes: u64,
    /// Frames the port sent while its queue into the switch was full, dropped.
    pub dropped_ingress_full: u64,
    /// Frames for the port dropped because its queue out of the switch was full.
    pub dropped_egress_full: u64,
    /// Frames the port sent from a source MAC not its own, dropped.
    pub dropped_forged_source: u64,
    /// Frames the port sent that were too short or too long, dropped.
    pub dropped_bad_frame: u64,
}

/// One learned MAC address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MacEntryView {
    /// The address.
    pub mac: MacAddress,
    /// The port it was last seen on.
    pub port: u32,
    /// Seconds since a frame from it was last seen.
    pub age_secs: u64,
}

/// The appliance on the internal network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InternalNetworkView {
    /// The appliance's address on it, `a.b.c.d/prefix`.
    pub address: String,
    /// Whether the appliance serves DHCP on it.
    pub dhcp: bool,
    /// The DHCP server's current leases (empty when `dhcp` is off).
    pub leases: Vec<LeaseView>,
}

/// One DHCP lease on the internal network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LeaseView {
    /// The client's MAC address.
    pub mac: MacAddress,
    /// The address leased to it.
    pub address: String,
    /// Seconds until the lease expires.
    pub expires_in_secs: u64,
}

/// `DELETE /api/v1/vms/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Destroyed {
    /// The VM's name.
    pub name: String,
    /// The configuration generation saved without it.
    pub generation: u64,
}

/// `POST /api/v1/vms/{name}/console`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConsoleInput {
    /// Bytes the guest's input queue took.
    pub accepted: u64,
    /// Bytes it had no room for (dropped).
    pub dropped: u64,
}

/// The most console input one request may send.
pub const MAX_CONSOLE_INPUT: usize = 4096;

/// `POST /api/v1/modules/{module}/run`'s optional body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunModule {
    /// Guest RAM in MiB (even: guest RAM comes in 2 MiB pages); the kernel's default when
    /// absent or `null`.
    #[serde(default)]
    #[schemars(
        range(min = MIN_RUN_MEMORY_MIB, max = MAX_MEMORY_MIB),
        extend("multipleOf" = keel_config::limits::MEMORY_ALIGN_MIB)
    )]
    pub mem_mib: Option<u32>,
    /// vCPUs; 1 when absent or `null`.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_VCPUS))]
    pub vcpus: Option<u8>,
    /// Test devices added to the VM's PC (none when absent): `debug-exit` (QEMU's
    /// `isa-debug-exit` at 0xF4; the code written becomes the VM's stop reason) and
    /// `pc-testdev`, each at most once.
    #[serde(default)]
    pub devices: Vec<keel_config::schema::VmDevice>,
}

impl RunModule {
    /// Parses and checks a request body (none is the defaults); the error is the status and
    /// message.
    pub fn parse(body: &[u8]) -> Result<RunModule, (u16, String)> {
        let Some(value) = json_object(body)? else {
            return Ok(RunModule::default());
        };
        let request = RunModule::deserialize(value)
            .map_err(|e| (400, format!("invalid request body: {e}")))?;
        if let Some(mib) = request.mem_mib
            && !limits::memory_fits(u64::from(mib), MIN_RUN_MEMORY_MIB)
        {
            return Err((
                422,
                format!(
                    "mem_mib must be an even number from {MIN_RUN_MEMORY_MIB} to {MAX_MEMORY_MIB}"
                ),
            ));
        }
        if let Some(n) = request.vcpus
            && !(1..=MAX_VCPUS).contains(&n)
        {
            return Err((422, format!("vcpus must be from 1 to {MAX_VCPUS}")));
        }
        for (n, device) in request.devices.iter().enumerate() {
            if request.devices[..n].contains(device) {
                return Err((
                    422,
                    format!("devices lists \"{device}\" twice: list each device once"),
                ));
            }
        }
        Ok(request)
    }
}

/// The optional body of `POST /api/v1/vms/{name}/stop` and `/restart`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// Stop at once instead of pressing the power button.
    #[serde(default)]
    pub force: bool,
    /// Seconds after the power button before the VM is forced off; the default when absent.
    /// Give `force` or `timeout_s`, not both.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_STOP_TIMEOUT_S), extend("default" = DEFAULT_STOP_TIMEOUT_S))]
    pub timeout_s: Option<u32>,
}

impl StopRequest {
    /// Parses and checks a request body (none: a graceful stop with the default grace
    /// time); the error is the status and message.
    pub fn parse(body: &[u8]) -> Result<StopMode, (u16, String)> {
        let Some(value) = json_object(body)? else {
            return Ok(StopMode::Graceful {
                timeout_s: DEFAULT_STOP_TIMEOUT_S,
            });
        };
        let request = StopRequest::deserialize(value)
            .map_err(|e| (400, format!("invalid request body: {e}")))?;
        match (request.force, request.timeout_s) {
            (true, Some(_)) => Err((
                422,
                String::from("force and timeout_s exclude each other: send one"),
            )),
            (true, None) => Ok(StopMode::Force),
            (false, Some(t)) if !(1..=MAX_STOP_TIMEOUT_S).contains(&t) => Err((
                422,
                format!("timeout_s must be from 1 to {MAX_STOP_TIMEOUT_S} seconds"),
            )),
            (false, timeout_s) => Ok(StopMode::Graceful {
                timeout_s: timeout_s.unwrap_or(DEFAULT_STOP_TIMEOUT_S),
            }),
        }
    }
}

/// An optional JSON object body: `None` when the body is empty (or only white space),
/// 400 when it is not JSON or not an object.
pub(super) fn json_object(body: &[u8]) -> Result<Option<serde_json::Value>, (u16, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| (400, format!("invalid request body: {err}")))?;
    // Checked apart: serde would also take a struct from a JSON array.
    let kind = match &value {
        serde_json::Value::Object(_) => return Ok(Some(value)),
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
    };
    Err((
        400,
        format!("invalid request body: expected a JSON object, not {kind}"),
    ))
}

/// `GET /api/v1/vms/{name}/console`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConsoleChunk {
    /// Output from the requested offset on (non-UTF-8 bytes replaced by U+FFFD).
    pub data: String,
    /// The offset to ask for next.
    pub next: u64,
    /// Bytes between the requested offset and `data` that the kernel no longer keeps.
    pub dropped: u64,
}

/// A VM saved with `POST /api/v1/vms/{name}/save` (or `vm save`), kept in the appliance's
/// memory until deleted or the next boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SavedVm {
    /// The name it is saved under: what `/api/v1/saved/{saved}` takes.
    pub name: String,
    /// The VM it was saved from, as the kernel names it (`web`, `vm3` for an ad-hoc VM).
    pub vm: String,
    /// Size of the saved bytes (RAM without its zero pages, plus the vCPU and device state).
    pub size_bytes: u64,
    /// The VM's guest RAM in MiB.
    pub memory_mib: u32,
    /// The VM's vCPUs.
    pub vcpus: u32,
    /// The virtualization backend it ran on (`"svm"`, `"vmx"`).
    pub backend: String,
    /// How long the save took, in milliseconds.
    pub save_ms: u64,
}

/// `GET /api/v1/saved`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SavedVmList {
    /// The saved VMs, sorted by name.
    pub saved: Vec<SavedVm>,
}

/// `POST /api/v1/vms/{name}/save`'s optional body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveRequest {
    /// The name to save it under (a VM name or number, as `vm save <vm> <saved>` takes);
    /// the VM's own name, or its number for an ad-hoc VM, when absent or `null`.
    #[serde(default)]
    #[schemars(pattern(format!(
        "^({}|[0-9]{{1,10}})$",
        limits::vm_name_pattern()
    )))]
    pub name: Option<String>,
}

impl SaveRequest {
    /// Parses and checks a request body (none: the default name); the error is the status
    /// and message (400 for a body that is not this object, 422 for a name that breaks the
    /// rule).
    pub fn parse(body: &[u8]) -> Result<Option<String>, (u16, String)> {
        let Some(value) = json_object(body)? else {
            return Ok(None);
        };
        let request = SaveRequest::deserialize(value)
            .map_err(|e| (400, format!("invalid request body: {e}")))?;
        if let Some(name) = &request.name {
            saved_name(name).map_err(|why| (422, format!("name: {why}")))?;
        }
        Ok(request.name)
    }
}
