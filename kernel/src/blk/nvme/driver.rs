//! The bare-metal half: PCI discovery, BAR0 MMIO, frames for DMA, TSC deadlines, and the
//! [`HostDisk`] a probed namespace becomes.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ptr::NonNull;

use super::controller::{Controller, NvmeError};
use super::dma::DmaMem;
use super::{NvmeHardware, PCI_CLASS};
use crate::arch::timer::Deadline;
use crate::blk::disk::{Disk, DiskError};
use crate::blk::host::{HostDisk, ProbeFailure, ProbeResult};
use crate::mm::dma::DmaRegion;
use crate::pci::{self, Bar, PciAddress, PciDevice, command};

/// Bytes of BAR0 mapped: the registers (4 KiB) and the doorbells of queues 0 and 1 at any
/// stride up to 4 KiB (CAP.DSTRD ≤ 10). Real controllers use a 4-byte stride.
const REGISTER_WINDOW: u64 = 0x1000 + 4 * 0x1000;

/// BAR0 of one controller, mapped uncached, plus the machine services the driver needs.
struct Mmio {
    base: u64,
    size: usize,
}

impl Mmio {
    /// # Safety
    /// `base..base + size` must be this controller's BAR0 mapped uncached at its identity
    /// address, used by nothing else.
    unsafe fn new(base: u64, size: usize) -> Mmio {
        Mmio { base, size }
    }
}

impl NvmeHardware for Mmio {
    type Deadline = Deadline;

    fn read32(&mut self, offset: usize) -> u32 {
        if !offset.is_multiple_of(4) || offset + 4 > self.size {
            // What a read of a vanished device returns; the callers treat it as such.
            return u32::MAX;
        }
        // SAFETY: `Mmio::new`'s contract: the window is this device's registers, mapped
        // uncached; `offset` is aligned and inside it (checked above).
        unsafe { core::ptr::read_volatile((self.base + offset as u64) as *const u32) }
    }

    fn write32(&mut self, offset: usize, value: u32) {
        if !offset.is_multiple_of(4) || offset + 4 > self.size {
            defmt::error!(
                "nvme: register write at {=usize:#x} outside BAR0 dropped",
                offset
            );
            return;
        }
        // SAFETY: as in `read32`; the driver owns the controller.
        unsafe { core::ptr::write_volatile((self.base + offset as u64) as *mut u32, value) }
    }

    fn deadline_after_ms(&mut self, ms: u64) -> Deadline {
        Deadline::after_ms(ms)
    }

    fn expired(&mut self, deadline: &Deadline) -> bool {
        deadline.expired()
    }

    fn alloc_dma(&mut self, bytes: usize) -> Option<DmaMem> {
        let region = DmaRegion::new(bytes as u64)?;
        let ptr = NonNull::new(region.ptr::<u8>())?;
        let (phys, len) = (region.phys(), region.len() as usize);
        // SAFETY: `DmaRegion` gives zeroed, page-aligned, physically contiguous frames,
        // identity-mapped (so `phys` is what the device uses), owned until the region drops;
        // the region moves into the `DmaMem` and lives exactly as long as it.
        Some(unsafe { DmaMem::new(ptr, phys, len, Box::new(region)) })
    }
}

/// An NVMe namespace as a host disk.
pub struct NvmeDisk {
    controller: Controller<Mmio>,
    address: PciAddress,
}

impl Disk for NvmeDisk {
    fn sector_count(&self) -> u64 {
        self.controller.sector_count()
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.controller.read(lba, buf)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.controller.write(lba, buf)
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.controller.flush()
    }
}

impl HostDisk for NvmeDisk {
    fn driver(&self) -> &'static str {
        "nvme"
    }

    fn location(&self) -> String {
        format!("{} nsid {}", self.address, self.controller.nsid())
    }

    fn model(&self) -> String {
        let info = self.controller.info();
        match (info.model.is_empty(), info.serial.is_empty()) {
            (false, false) => format!("{}, serial {}", info.model, info.serial),
            (false, true) => info.model.clone(),
            (true, false) => format!("serial {}", info.serial),
            (true, true) => String::new(),
        }
    }

    fn read_only(&self) -> bool {
        self.controller.read_only()
    }
}

/// Why a controller's PCI function is unusable before the NVMe protocol starts.
fn register_window(device: &PciDevice) -> Result<(u64, u64), String> {
    match device.bar(0) {
        Some(bar @ Bar::Memory { .. }) if bar.is_assigned() => match bar.memory() {
            Some((phys, size)) if size >= 0x2000 => Ok((phys, size.min(REGISTER_WINDOW))),
            Some((_, size)) => Err(format!(
                "BAR0 of {size} bytes is too small for the registers and doorbells"
            )),
            None => Err("BAR0 is not a memory BAR".to_string()),
        },
        _ => Err("BAR0 is missing, unassigned or not a memory BAR".to_string()),
    }
}

fn bring_up(device: &PciDevice) -> Result<NvmeDisk, String> {
    let (phys, size) = register_window(device)?;
    // Memory decode and DMA on; INTx off: the driver polls and has masked every vector.
    pci::enable(
        device.address,
        command::MEMORY_SPACE | command::BUS_MASTER | command::INTX_DISABLE,
    );
    let base = crate::mm::map_mmio(phys, size);
    // SAFETY: `base` is this function's BAR0, just mapped uncached for `size` bytes; the
    // disk list owns the controller from here on.
    let mut mmio = unsafe { Mmio::new(base, size as usize) };
    let cap = u64::from(mmio.read32(super::regs::CAP))
        | (u64::from(mmio.read32(super::regs::CAP + 4)) << 32);
    let stride = super::regs::Capabilities::decode(cap).doorbell_stride as u64;
    if 0x1000 + 4 * stride > size {
        return Err(format!(
            "doorbell stride of {stride} bytes puts queue 1's doorbells outside BAR0"
        ));
    }
    let controller = Controller::bring_up(mmio).map_err(|e: NvmeError| e.to_string())?;
    Ok(NvmeDisk {
        controller,
        address: device.address,
    })
}

/// Brings up every NVMe controller in `pci`: one disk (its first active namespace) each.
pub fn probe(pci: &[PciDevice]) -> Vec<ProbeResult> {
    let mut found: Vec<ProbeResult> = Vec::new();
    for device in pci
        .iter()
        .filter(|d| (d.class, d.subclass, d.prog_if) == PCI_CLASS)
    {
        match bring_up(device) {
            Ok(disk) => {
                let info = disk.controller.info();
                defmt::info!(
                    "nvme: {} nsid {=u32}: {=str} serial {=str} firmware {=str}, {=u64} sectors, {=u32} per command",
                    defmt::Display2Format(&device.address),
                    disk.controller.nsid(),
                    info.model.as_str(),
                    info.serial.as_str(),
                    info.firmware.as_str(),
                    disk.sector_count(),
                    disk.controller.max_sectors()
                );
                found.push(Ok(Box::new(disk)));
            }
            Err(reason) => {
                defmt::error!(
                    "nvme: {} not brought up: {=str}",
                    defmt::Display2Format(&device.address),
                    reason.as_str()
                );
                found.push(Err(ProbeFailure {
                    driver: "nvme",
                    location: device.address.to_string(),
                    reason,
                }));
            }
        }
    }
    found
}
