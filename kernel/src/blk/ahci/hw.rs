//! The bare-metal half of the AHCI driver: ABAR over MMIO, DMA frames, `Deadline`s, and
//! the PCI probe that returns one host disk per SATA disk.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{Ordering, compiler_fence};

use super::port::{AhciPort, DmaMemory, Hba, PortProbe, init_controller, probe_port};
use super::regs::{self, ABAR_SIZE};
use crate::arch::timer::Deadline;
use crate::blk::disk::{Disk, DiskError};
use crate::blk::host::{HostDisk, ProbeFailure, ProbeResult};
use crate::mm::dma::DmaRegion;
use crate::pci::{self, Bar, PciDevice, command};

/// PCI class, subclass and programming interface of an AHCI controller (SATA, AHCI 1.0).
pub const PCI_CLASS: (u8, u8, u8) = (0x01, 0x06, 0x01);

/// The HBA's register window (ABAR, BAR5), mapped uncached.
#[derive(Clone)]
pub struct MmioHba {
    base: u64,
    size: u64,
}

impl MmioHba {
    /// # Safety
    /// `base..base + size` must be the identity mapping, uncached, of one AHCI controller's
    /// ABAR, used by nothing but this driver.
    unsafe fn new(base: u64, size: u64) -> MmioHba {
        MmioHba { base, size }
    }

    fn in_window(&self, offset: u32) -> bool {
        u64::from(offset) + 4 <= self.size && offset.is_multiple_of(4)
    }
}

impl Hba for MmioHba {
    type Memory = KernelDma;
    type Deadline = Deadline;

    fn read(&self, offset: u32) -> u32 {
        if !self.in_window(offset) {
            return 0;
        }
        // SAFETY: `MmioHba::new`'s contract: the window is this HBA's ABAR mapped uncached,
        // and `offset` is an aligned register inside it.
        unsafe { core::ptr::read_volatile((self.base + u64::from(offset)) as *const u32) }
    }

    fn write(&mut self, offset: u32, value: u32) {
        if !self.in_window(offset) {
            return;
        }
        // Command tables and lists written before this store must be in memory when the HBA
        // sees it (x86 keeps stores in order; this stops the compiler reordering them).
        compiler_fence(Ordering::SeqCst);
        // SAFETY: as for `read`; the driver owns the HBA, so the write disturbs nothing else.
        unsafe { core::ptr::write_volatile((self.base + u64::from(offset)) as *mut u32, value) }
    }

    fn alloc(&mut self, bytes: usize) -> Option<KernelDma> {
        let region = DmaRegion::new(bytes as u64)?;
        Some(KernelDma {
            phys: region.phys(),
            len: region.len() as usize,
            region: Some(region),
        })
    }

    fn deadline(&self, ms: u64) -> Deadline {
        Deadline::after_ms(ms)
    }

    fn expired(&self, deadline: &Deadline) -> bool {
        deadline.expired()
    }
}

/// Frames for the HBA: identity-mapped, so the physical address is the pointer.
pub struct KernelDma {
    /// `None` once leaked.
    region: Option<DmaRegion>,
    phys: u64,
    len: usize,
}

impl DmaMemory for KernelDma {
    fn phys(&self) -> u64 {
        self.phys
    }

    fn size(&self) -> usize {
        self.len
    }

    fn write_at(&mut self, at: usize, data: &[u8]) {
        let n = data.len().min(self.len.saturating_sub(at));
        // SAFETY: `phys..phys + len` are frames this value owns, identity-mapped; `at + n`
        // stays inside them; the HBA reads them only after the register write that follows.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), (self.phys as *mut u8).add(at), n);
        }
    }

    fn read_at(&self, at: usize, out: &mut [u8]) {
        let n = out.len().min(self.len.saturating_sub(at));
        // SAFETY: as for `write_at`; the command that filled them has completed.
        unsafe {
            core::ptr::copy_nonoverlapping((self.phys as *const u8).add(at), out.as_mut_ptr(), n);
        }
    }

    fn leak(&mut self) {
        if let Some(region) = self.region.take() {
            core::mem::forget(region);
        }
    }
}

/// A SATA disk on an AHCI port.
pub struct AhciDisk {
    port: AhciPort<MmioHba>,
    location: String,
    model: String,
}

impl HostDisk for AhciDisk {
    fn driver(&self) -> &'static str {
        DRIVER
    }

    /// PCI address and port: `00:1f.2 port 0`.
    fn location(&self) -> String {
        self.location.clone()
    }

    /// Model and serial from IDENTIFY DEVICE.
    fn model(&self) -> String {
        self.model.clone()
    }

    /// SATA disks have no write-protect state Keel could read.
    fn read_only(&self) -> bool {
        false
    }
}

/// The driver's name in the disk listing.
const DRIVER: &str = "ahci";

impl Disk for AhciDisk {
    fn sector_count(&self) -> u64 {
        self.port.sector_count()
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.port.read(lba, buf)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.port.write(lba, buf)
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.port.flush()
    }
}

/// Every SATA disk on every AHCI controller in `pci`, and every controller or port found
/// that could not be brought up (ATAPI and other non-disk devices among them, as "not a
/// disk"). Empty ports are not listed.
pub fn probe(pci: &[PciDevice]) -> Vec<ProbeResult> {
    let mut found = Vec::new();
    for device in pci {
        if (device.class, device.subclass, device.prog_if) != PCI_CLASS {
            continue;
        }
        let address = device.address;
        let fail = |reason: String| ProbeFailure {
            driver: DRIVER,
            location: format!("{address}"),
            reason,
        };
        let (phys, size) = match device.bar(5) {
            Some(bar @ Bar::Memory { .. }) if bar.is_assigned() => match bar.memory() {
                Some(window) => window,
                None => {
                    found.push(Err(fail(String::from("ABAR (BAR5) is not a memory BAR"))));
                    continue;
                }
            },
            _ => {
                found.push(Err(fail(String::from(
                    "ABAR (BAR5) missing or unassigned: the firmware gave the controller no registers",
                ))));
                continue;
            }
        };
        let size = size.min(ABAR_SIZE);
        pci::enable(address, command::MEMORY_SPACE | command::BUS_MASTER);
        let base = crate::mm::map_mmio(phys, size);
        // SAFETY: `base` is this controller's BAR5, just mapped uncached for `size` bytes;
        // the disk list owns the controller from here on.
        let mut hba = unsafe { MmioHba::new(base, size) };
        let (cap, implemented) = match init_controller(&mut hba) {
            Ok(found) => found,
            Err(e) => {
                found.push(Err(fail(format!("{e}"))));
                continue;
            }
        };
        defmt::info!(
            "blk: AHCI {=u32:x}.{=u32:x} at {}: ports {=u32:#x}, {=u32} slots, {}64-bit",
            hba.read(regs::ghc::VS) >> 16,
            hba.read(regs::ghc::VS) & 0xFFFF,
            defmt::Display2Format(&address),
            implemented,
            regs::ghc::command_slots(cap),
            if cap & regs::ghc::CAP_S64A != 0 {
                ""
            } else {
                "no "
            }
        );
        for index in 0..32 {
            if implemented & (1 << index) == 0 || u64::from(regs::port_base(index) + 0x80) > size {
                continue;
            }
            let location = format!("{address} port {index}");
            match probe_port(hba.clone(), index, cap) {
                PortProbe::Disk(port) => {
                    let id = port.identity();
                    defmt::info!(
                        "blk: ahci {}: {} serial {} firmware {}, {=u64} sectors",
                        location.as_str(),
                        id.model.as_str(),
                        id.serial.as_str(),
                        id.firmware.as_str(),
                        id.sectors
                    );
                    let model = match (id.model.is_empty(), id.serial.is_empty()) {
                        (false, false) => format!("{}, serial {}", id.model, id.serial),
                        (false, true) => id.model.clone(),
                        (true, false) => format!("serial {}", id.serial),
                        (true, true) => String::new(),
                    };
                    found.push(Ok(Box::new(AhciDisk {
                        port,
                        location,
                        model,
                    }) as Box<dyn HostDisk>));
                }
                PortProbe::Empty => {}
                PortProbe::Failed(e) => {
                    defmt::warn!(
                        "blk: ahci {}: {}",
                        location.as_str(),
                        defmt::Display2Format(&e)
                    );
                    found.push(Err(ProbeFailure {
                        driver: DRIVER,
                        location,
                        reason: format!("{e}"),
                    }));
                }
            }
        }
    }
    found
}
