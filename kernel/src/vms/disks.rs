//! A VM's disks: opening each backend its definition names (a guest store file, or a
//! guest-disk partition), claiming them (one writer per disk, any number of readers —
//! [`crate::store::claims`]), attaching each as a virtio-blk PCI function, and giving the
//! claims back when the VM stops.
//!
//! The host's claim table is one global ([`users`] answers `store ls` and `disk` without the
//! VM manager); [`super::VmManager`] claims at start and releases when it sees a VM stopped
//! (after each scheduling slice, a forced stop, a destroy) and before any new claim, so a
//! stopped VM never holds a disk against a start.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use keel_vmm::devices::Devices;
use keel_vmm::virtio::blk::{BlockBackend, BlockStats, VirtioBlockPci, block_device};
use spin::Mutex;

use crate::store::claims::{ClaimError, Claims};
pub use crate::store::claims::{DiskKind, DiskName, DiskUser};

/// Guest RAM a VM with disks may have, in MiB (3072): its PCI BARs live in the hole from
/// 3 GiB up (`keel_vmm::devices::pci::MMIO_WINDOW`), which its RAM must not reach.
pub const MAX_MEM_MIB_WITH_DISKS: u32 = (keel_vmm::devices::pci::MMIO_WINDOW.start >> 20) as u32;

/// One disk of a VM's definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The disk.
    pub disk: DiskName,
    /// Attach it read-only.
    pub read_only: bool,
    /// What the guest reads with virtio-blk `GET_ID`; `None`: the disk's name.
    pub serial: Option<String>,
}

impl DiskSpec {
    /// The spec of a `[[vms.disks]]` entry.
    pub fn from_config(disk: &keel_config::schema::VmDisk) -> DiskSpec {
        let name = match disk.source() {
            keel_config::schema::DiskSource::File(f) => DiskName::file(f),
            keel_config::schema::DiskSource::Partition(p) => DiskName::partition(p),
        };
        DiskSpec {
            disk: name,
            read_only: disk.readonly,
            serial: disk.serial.clone(),
        }
    }

    /// The serial the guest sees: the configured one, else the disk's name cut to the 20
    /// printable ASCII bytes virtio-blk has room for.
    fn serial(&self) -> String {
        match &self.serial {
            Some(s) => s.clone(),
            None => self
                .disk
                .name
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(keel_vmm::virtio::blk::SERIAL_LEN)
                .collect(),
        }
    }
}

/// Why a VM's disks cannot be attached; the VM does not start.
#[derive(Debug, thiserror::Error)]
pub enum DiskAttachError {
    /// A store file could not be opened as a disk.
    #[error("disk {disk}: {reason}")]
    Open {
        /// The disk.
        disk: DiskName,
        /// Why (no such file, a corrupt chain, no store).
        reason: String,
    },
    /// Another VM writes a disk this one wants writable.
    #[error("{0}")]
    Claim(ClaimError),
    /// Too much RAM for the PCI hole.
    #[error(
        "VM {vm} has {mem_mib} MiB of RAM and disks: a VM with disks has at most \
         {MAX_MEM_MIB_WITH_DISKS} MiB (its PCI devices live at 3 GiB and up); lower its memory"
    )]
    TooMuchMemory {
        /// The VM.
        vm: String,
        /// Its RAM.
        mem_mib: u32,
    },
    /// The disks' BARs do not fit the PCI hole (too many disks).
    #[error("VM {vm}: no room for its disks' registers: {reason}; attach fewer disks")]
    Bars {
        /// The VM.
        vm: String,
        /// Why.
        reason: String,
    },
    /// The VM's PCI bus refused a device (more disks than slots).
    #[error("VM {vm}: cannot attach disk {disk}: {reason}")]
    Pci {
        /// The VM.
        vm: String,
        /// The disk.
        disk: DiskName,
        /// Why.
        reason: String,
    },
}

/// A disk opened for a VM, not attached yet.
pub struct OpenedDisk {
    spec: DiskSpec,
    backend: Box<dyn BlockBackend>,
}

impl OpenedDisk {
    /// The disk.
    pub fn spec(&self) -> &DiskSpec {
        &self.spec
    }
}

/// Opens every disk of `specs`, in order (store files resolved to the store's spelling of
/// their names, so claims compare like with like).
pub fn open_all(specs: &[DiskSpec]) -> Result<Vec<OpenedDisk>, DiskAttachError> {
    specs.iter().map(open).collect()
}

fn open(spec: &DiskSpec) -> Result<OpenedDisk, DiskAttachError> {
    match spec.disk.kind {
        DiskKind::StoreFile => {
            let file = crate::store::open_disk(&spec.disk.name, spec.read_only).map_err(|e| {
                DiskAttachError::Open {
                    disk: spec.disk.clone(),
                    reason: alloc::format!("{e}"),
                }
            })?;
            let mut spec = spec.clone();
            spec.disk.name = String::from(file.name());
            Ok(OpenedDisk {
                spec,
                backend: Box::new(file),
            })
        }
        DiskKind::Partition => {
            let partition = crate::blk::guest_partitions::open(&spec.disk.name).map_err(|e| {
                DiskAttachError::Open {
                    disk: spec.disk.clone(),
                    reason: alloc::format!("{e}"),
                }
            })?;
            Ok(OpenedDisk {
                spec: spec.clone(),
                backend: Box::new(partition),
            })
        }
    }
}

/// Every disk claim on the host.
static CLAIMS: Mutex<Claims> = Mutex::new(Claims::new());

/// Claims `disks` for VM `vm` (number `vm_id`): all, or none.
pub fn claim(vm_id: u32, vm: &str, disks: &[OpenedDisk]) -> Result<(), DiskAttachError> {
    let wanted: Vec<(DiskName, bool)> = disks
        .iter()
        .map(|d| (d.spec.disk.clone(), d.spec.read_only))
        .collect();
    CLAIMS
        .lock()
        .claim(vm_id, vm, &wanted)
        .map_err(DiskAttachError::Claim)
}

/// Gives back VM number `vm_id`'s claims.
pub fn release(vm_id: u32) {
    if CLAIMS.lock().release(vm_id) {
        defmt::info!("vm {=u32}: disks released", vm_id);
    }
}

/// Whether VM number `vm_id` holds disks.
pub fn holds(vm_id: u32) -> bool {
    CLAIMS.lock().holds(vm_id)
}

/// Which VM uses which disk, and how: for `store ls`, `disk` and the API.
pub fn users() -> Vec<DiskUser> {
    CLAIMS.lock().users()
}

/// Who uses `disk`, for listings: `web (rw), db (ro)`; empty when no VM does.
pub fn users_text(disk: &DiskName) -> String {
    let mut text = String::new();
    for user in users().iter().filter(|u| u.disk.same_disk(disk)) {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(&user.vm);
        text.push_str(if user.read_only { " (ro)" } else { " (rw)" });
    }
    text
}

/// A disk attached to a VM: what `vm info` shows next to the device's counters.
#[derive(Clone, Debug)]
pub struct AttachedDisk {
    /// The disk, as the definition gave it (with the store's spelling of a file's name).
    pub spec: DiskSpec,
    /// Its PCI device number on bus 0 (function 0).
    pub slot: u8,
    /// Its size in sectors.
    pub sectors: u64,
}

/// Adds each disk to `devices` as a virtio-blk PCI function, in order, places their BARs
/// in the PCI hole, and returns where each went.
pub fn attach(
    vm: &str,
    devices: &mut Devices,
    disks: Vec<OpenedDisk>,
) -> Result<Vec<AttachedDisk>, DiskAttachError> {
    let mut attached = Vec::with_capacity(disks.len());
    for d in disks {
        let sectors = d.backend.sectors();
        let serial = d.spec.serial();
        let device = block_device(d.backend, d.spec.read_only, &serial);
        let slot = devices
            .add_pci_device(device)
            .map_err(|e| DiskAttachError::Pci {
                vm: String::from(vm),
                disk: d.spec.disk.clone(),
                reason: alloc::format!("{e}"),
            })?;
        attached.push(AttachedDisk {
            spec: d.spec,
            slot,
            sectors,
        });
    }
    // Firmware without a BAR allocator (rust-hypervisor-firmware) needs them placed.
    if !attached.is_empty() {
        devices
            .assign_pci_bars()
            .map_err(|e| DiskAttachError::Bars {
                vm: String::from(vm),
                reason: alloc::format!("{e}"),
            })?;
    }
    Ok(attached)
}

/// What a disk's device says now, for `vm info`.
pub struct DiskStatus {
    /// Requests and bytes so far.
    pub stats: BlockStats,
    /// Why the device needs a reset (the guest broke the virtqueue rules), if it does.
    pub device_error: Option<String>,
    /// The last request that failed, and why.
    pub last_request_error: Option<String>,
}

/// The device of `disk` in `devices`.
pub fn status(devices: &Devices, disk: &AttachedDisk) -> Option<DiskStatus> {
    let device = devices.pci_device::<VirtioBlockPci>(disk.slot, 0)?;
    Some(DiskStatus {
        stats: device.device().stats(),
        device_error: device.error().map(String::from),
        last_request_error: device.device().last_error().map(String::from),
    })
}
