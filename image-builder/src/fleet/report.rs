//! What the fleet commands learn from each appliance, read from the API's JSON, and how it
//! is shown: tables for people, JSON for scripts.
//!
//! Only the fields the fleet tables use are read, and unknown fields are ignored, so an
//! appliance running a newer Keel (with more fields) still shows up.

use serde::Deserialize;
use serde_json::{Value, json};

/// `GET /api/v1/system`, the part the fleet uses.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SystemSummary {
    /// The appliance's configured hostname.
    pub hostname: String,
    /// Keel's version on it.
    pub version: String,
    /// CPUs the kernel runs on.
    pub cpus: u32,
    /// Host memory.
    pub memory: MemorySummary,
    /// The hardware virtualization in use, or why there is none.
    pub virtualization: String,
    /// What the machine is (SMBIOS); all absent from Keel versions before it.
    #[serde(default)]
    pub hardware: HardwareSummary,
}

/// `hardware` of `GET /api/v1/system`: each `None` when the firmware does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct HardwareSummary {
    /// System manufacturer.
    pub vendor: Option<String>,
    /// Product name.
    pub product: Option<String>,
    /// Serial number (the service tag on most servers).
    pub serial: Option<String>,
    /// BIOS version.
    pub bios_version: Option<String>,
}

/// `memory` of `GET /api/v1/system`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct MemorySummary {
    /// Usable RAM.
    pub total_bytes: u64,
    /// RAM not given to the kernel or guests: what a new VM can have.
    pub free_bytes: u64,
}

/// One VM of `GET /api/v1/vms`, the part the fleet uses.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct VmSummary {
    /// Its name (or number, for an ad-hoc VM).
    pub name: String,
    /// `defined`, `running`, `idle`, `paused`, `stopping` or `stopped`.
    pub state: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// What it starts from (`store:vmlinuz`, a boot module's name).
    pub source: String,
}

impl VmSummary {
    /// Whether the VM is live, i.e. has guest RAM and vCPUs on the host: running guest
    /// code, halted waiting for an interrupt (`idle`), or shutting down. A paused VM is
    /// not counted: the operator stopped it from running.
    pub fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "running" | "idle" | "stopping")
    }
}

#[derive(Deserialize)]
struct VmListBody {
    vms: Vec<VmSummary>,
}

#[derive(Deserialize)]
struct StoreBody {
    files: Vec<StoreFileBody>,
}

#[derive(Deserialize)]
struct StoreFileBody {
    name: String,
}

/// Reads a `GET /api/v1/system` body.
pub fn parse_system(body: &Value) -> Result<SystemSummary, String> {
    SystemSummary::deserialize(body)
        .map_err(|e| format!("GET /api/v1/system: unexpected answer: {e}"))
}

/// Reads a `GET /api/v1/vms` body.
pub fn parse_vms(body: &Value) -> Result<Vec<VmSummary>, String> {
    VmListBody::deserialize(body)
        .map(|list| list.vms)
        .map_err(|e| format!("GET /api/v1/vms: unexpected answer: {e}"))
}

/// Reads a `GET /api/v1/store` body: the file names.
pub fn parse_store(body: &Value) -> Result<Vec<String>, String> {
    StoreBody::deserialize(body)
        .map(|store| store.files.into_iter().map(|f| f.name).collect())
        .map_err(|e| format!("GET /api/v1/store: unexpected answer: {e}"))
}

/// One appliance's line of `keel fleet status`: what it said, or why it could not be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRow {
    /// The inventory name.
    pub name: String,
    /// The inventory URL.
    pub url: String,
    /// The appliance's answers, or why there are none (unreachable, refused the token, …).
    pub status: Result<ApplianceStatus, String>,
}

/// What a reachable appliance reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplianceStatus {
    /// `GET /api/v1/system`.
    pub system: SystemSummary,
    /// VMs live now (see [`VmSummary::is_running`]).
    pub vms_running: usize,
    /// Every VM it knows (configured and ad-hoc).
    pub vms_total: usize,
}

impl ApplianceStatus {
    /// From the bodies of `GET /api/v1/system` and `GET /api/v1/vms`.
    pub fn from_bodies(system: &Value, vms: &Value) -> Result<ApplianceStatus, String> {
        let system = parse_system(system)?;
        let vms = parse_vms(vms)?;
        Ok(ApplianceStatus {
            system,
            vms_running: vms.iter().filter(|vm| vm.is_running()).count(),
            vms_total: vms.len(),
        })
    }
}

/// `bytes` as MiB for tables (the unit VM sizes are given in).
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

/// The `keel fleet status` table; `wide` adds the machine's vendor, product and serial
/// (SMBIOS), so that servers of one fleet can be told apart.
pub fn status_table(rows: &[StatusRow], wide: bool) -> String {
    let machine_columns = if wide { 3 } else { 0 };
    let mut header = vec![
        "NAME",
        "URL",
        "STATE",
        "VERSION",
        "CPUS",
        "FREE MEM",
        "VMS RUN/ALL",
    ];
    if wide {
        header.extend(["VENDOR", "PRODUCT", "SERIAL"]);
    }
    header.push("VIRTUALIZATION");
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let lines = rows
        .iter()
        .map(|row| match &row.status {
            Ok(s) => {
                let mut line = vec![
                    row.name.clone(),
                    row.url.clone(),
                    "up".to_string(),
                    s.system.version.clone(),
                    s.system.cpus.to_string(),
                    mib(s.system.memory.free_bytes),
                    format!("{}/{}", s.vms_running, s.vms_total),
                ];
                if wide {
                    let hw = &s.system.hardware;
                    line.extend([
                        or_dash(&hw.vendor),
                        or_dash(&hw.product),
                        or_dash(&hw.serial),
                    ]);
                }
                line.push(s.system.virtualization.clone());
                line
            }
            // The reason goes last so that a long message does not widen every column.
            Err(reason) => {
                let mut line = vec![row.name.clone(), row.url.clone(), "DOWN".to_string()];
                line.extend(std::iter::repeat_n("-".to_string(), 4 + machine_columns));
                line.push(reason.clone());
                line
            }
        })
        .collect::<Vec<_>>();
    table(&header, &lines)
}

/// `keel fleet status --json`: one object per appliance, `reachable` and either the
/// figures or `error`.
pub fn status_json(rows: &[StatusRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|row| match &row.status {
                Ok(s) => json!({
                    "name": row.name,
                    "url": row.url,
                    "reachable": true,
                    "hostname": s.system.hostname,
                    "version": s.system.version,
                    "cpus": s.system.cpus,
                    "memory": {
                        "total_bytes": s.system.memory.total_bytes,
                        "free_bytes": s.system.memory.free_bytes,
                    },
                    "vms_running": s.vms_running,
                    "vms_total": s.vms_total,
                    "virtualization": s.system.virtualization,
                    "hardware": {
                        "vendor": s.system.hardware.vendor,
                        "product": s.system.hardware.product,
                        "serial": s.system.hardware.serial,
                        "bios_version": s.system.hardware.bios_version,
                    },
                }),
                Err(reason) => json!({
                    "name": row.name,
                    "url": row.url,
                    "reachable": false,
                    "error": reason,
                }),
            })
            .collect(),
    )
}

/// One appliance's part of `keel fleet vm list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmListRow {
    /// The inventory name.
    pub appliance: String,
    /// Its VMs, or why they could not be listed.
    pub vms: Result<Vec<VmSummary>, String>,
}

/// The `keel fleet vm list` table: one line per VM, and one per appliance that could not be
/// asked (so a missing appliance is visible, not silently absent).
pub fn vm_table(rows: &[VmListRow]) -> String {
    let header = ["APPLIANCE", "VM", "STATE", "MEMORY", "VCPUS", "SOURCE"];
    let mut lines = Vec::new();
    for row in rows {
        match &row.vms {
            Ok(vms) => lines.extend(vms.iter().map(|vm| {
                vec![
                    row.appliance.clone(),
                    vm.name.clone(),
                    vm.state.clone(),
                    format!("{} MiB", vm.memory_mib),
                    vm.vcpus.to_string(),
                    vm.source.clone(),
                ]
            })),
            Err(reason) => lines.push(vec![
                row.appliance.clone(),
                "-".to_string(),
                "DOWN".to_string(),
                "-".to_string(),
                "-".to_string(),
                reason.clone(),
            ]),
        }
    }
    table(&header, &lines)
}

/// `keel fleet vm list --json`: one object per VM with its appliance, and per unreachable
/// appliance an object with `error`.
pub fn vm_json(rows: &[VmListRow]) -> Value {
    let mut out = Vec::new();
    for row in rows {
        match &row.vms {
            Ok(vms) => out.extend(vms.iter().map(|vm| {
                json!({
                    "appliance": row.appliance,
                    "name": vm.name,
                    "state": vm.state,
                    "memory_mib": vm.memory_mib,
                    "vcpus": vm.vcpus,
                    "source": vm.source,
                })
            })),
            Err(reason) => out.push(json!({ "appliance": row.appliance, "error": reason })),
        }
    }
    Value::Array(out)
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let pad = widths[i] + 2 - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
