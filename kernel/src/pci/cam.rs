//! Configuration mechanism #1: I/O ports 0xCF8 (address) and 0xCFC (data).
//!
//! PCI Local Bus Specification 3.0, §3.2.2.3.2: writing `1 << 31 | bus << 16 | device << 11
//! | function << 8 | offset` to CONFIG_ADDRESS selects a dword that CONFIG_DATA then reads or
//! writes. The pair is not atomic, so every access holds a lock with interrupts off.

use alloc::vec::Vec;
use core::arch::asm;

use spin::Mutex;

use super::scan::{self, ConfigSpace};
use super::{PciAddress, PciDevice};
use crate::arch::cpu;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Serializes use of the CONFIG_ADDRESS/CONFIG_DATA pair.
static LOCK: Mutex<()> = Mutex::new(());

/// Configuration space through mechanism #1.
#[derive(Clone, Copy, Debug, Default)]
pub struct PortCam;

fn config_address(at: PciAddress, offset: u8) -> u32 {
    1 << 31
        | u32::from(at.bus) << 16
        | u32::from(at.device & 0x1f) << 11
        | u32::from(at.function & 0x7) << 8
        | u32::from(offset & 0xfc)
}

/// Reads a dword from an I/O port.
///
/// # Safety
/// The port must belong to hardware the caller drives (reads can have side effects).
unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: forwarded to the caller.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack)) };
    value
}

impl ConfigSpace for PortCam {
    fn read32(&mut self, at: PciAddress, offset: u8) -> u32 {
        cpu::without_interrupts(|| {
            let _guard = LOCK.lock();
            // SAFETY: 0xCF8/0xCFC are the PC's PCI configuration ports, owned by this module
            // and used under LOCK; selecting a dword and reading it has no effect beyond the
            // configuration read itself (absent functions read all ones).
            unsafe {
                cpu::port::outl(CONFIG_ADDRESS, config_address(at, offset));
                inl(CONFIG_DATA)
            }
        })
    }

    fn write32(&mut self, at: PciAddress, offset: u8, value: u32) {
        cpu::without_interrupts(|| {
            let _guard = LOCK.lock();
            // SAFETY: as for `read32`; the callers in this crate write only registers they
            // own (command, BARs while sizing them and restoring them afterwards).
            unsafe {
                cpu::port::outl(CONFIG_ADDRESS, config_address(at, offset));
                cpu::port::outl(CONFIG_DATA, value);
            }
        })
    }
}

/// Every PCI function in the machine, in address order.
pub fn enumerate() -> Vec<PciDevice> {
    let mut devices = Vec::new();
    scan::scan(&mut PortCam, |d| devices.push(d));
    defmt::info!("pci: {=usize} functions", devices.len());
    devices
}

/// Reads the configuration dword at `offset` of `at`.
pub fn read_config(at: PciAddress, offset: u8) -> u32 {
    PortCam.read32(at, offset)
}

/// Writes the configuration dword at `offset` of `at`.
pub fn write_config(at: PciAddress, offset: u8, value: u32) {
    PortCam.write32(at, offset, value)
}

/// Sets `bits` (see [`super::command`]) in the command register of `at`; returns the new
/// command value.
pub fn enable(at: PciAddress, bits: u16) -> u16 {
    scan::set_command_bits(&mut PortCam, at, bits)
}
