//! The guest's PCI bus 0 behind the host bridge: [`PciDevice`] models registered at a
//! device/function number, configuration cycles routed to them, and their BARs mapped on
//! the port-I/O and MMIO buses wherever the guest puts them.
//!
//! # A PCI device is one file
//!
//! ```
//! use keel_vmm::devices::pci::{BarKind, PciConfigSpace, PciDevice, PciIds};
//! use keel_vmm::devices::{DeviceContext, Devices};
//!
//! /// A doorbell: writing `n` to BAR 0 signals MSI-X vector `n`.
//! struct Doorbell {
//!     config: PciConfigSpace,
//! }
//!
//! impl Doorbell {
//!     fn new() -> Doorbell {
//!         let mut config = PciConfigSpace::new(PciIds {
//!             vendor: 0x1AF4,
//!             device: 0x10FF,
//!             revision: 1,
//!             class: 0xFF_0000,
//!             subsystem_vendor: 0x1AF4,
//!             subsystem: 0x10FF,
//!         });
//!         let bar = BarKind::Memory32 { size: 0x2000, prefetchable: false };
//!         config.set_bar(0, bar).unwrap();
//!         config.add_msix(2, 0, 0x1000, 0, 0x1800).unwrap();
//!         Doorbell { config }
//!     }
//! }
//!
//! impl PciDevice for Doorbell {
//!     fn name(&self) -> &'static str {
//!         "doorbell"
//!     }
//!     fn config(&self) -> &PciConfigSpace {
//!         &self.config
//!     }
//!     fn config_mut(&mut self) -> &mut PciConfigSpace {
//!         &mut self.config
//!     }
//!     fn read_bar(&mut self, _bar: u8, _offset: u64, _size: u8, _ctx: &mut DeviceContext) -> u64 {
//!         0
//!     }
//!     fn write_bar(&mut self, _bar: u8, _at: u64, _size: u8, value: u64, ctx: &mut DeviceContext) {
//!         self.config.msix_notify(value as u16, ctx);
//!     }
//! }
//!
//! let mut devices = Devices::pc_for_tests();
//! let slot = devices.add_pci_device(Doorbell::new()).unwrap(); // the registration line
//! assert_eq!(slot, 1);
//! devices.write_port(0xCF8, 4, 0x8000_0800); // 00:01.0, register 0
//! assert_eq!(devices.read_port(0xCFC, 4), 0x10FF_1AF4);
//! ```
//!
//! # Configuration cycles
//!
//! The host bridge model ([`pci_host`](super::pci_host)) owns `CONFIG_ADDRESS` (`0xCF8`),
//! the reset control register (`0xCF9`) and function 00:00.0 (the bridge itself). A
//! `CONFIG_DATA` access (`0xCFC`–`0xCFF`) with the enable bit set that names bus 0 and a
//! registered device/function goes to that function's [`PciConfigSpace`]; every other
//! bus, device and function reads all ones (a master abort), as before.
//!
//! # BARs
//!
//! After every configuration write that can change decoding (the command register or a
//! BAR), the bus recomputes each of the function's BARs
//! ([`PciConfigSpace::bar_region`]): a BAR with its decode bit on and a non-zero address
//! appears on the MMIO (memory BARs) or port (I/O BARs) bus as a
//! [`Target::PciBar`](crate::bus::Target); moving it unmaps the old range first;
//! clearing the decode bit or writing address 0 unmaps it. A range that would overlap
//! something already mapped (the APICs, another BAR; also the all-ones address of a BAR
//! being sized with decoding left on) stays unmapped until the guest moves it. Accesses to
//! a BAR reach [`PciDevice::read_bar`]/[`PciDevice::write_bar`], except the MSI-X table
//! and PBA, which the bus serves from the configuration space itself.
//!
//! # Interrupts
//!
//! A device signals with [`PciConfigSpace::msix_notify`] (or `msi_notify`) and its
//! [`DeviceContext`]: the message (address `0xFEEx_xxxx`, data = vector and delivery mode)
//! goes through the same delivery as the I/O APIC's messages to the local APICs. INTx is
//! not wired (no `_PRT` yet): the coming virtio-pci devices use MSI-X only, as Cloud
//! Hypervisor's do.
//!
//! # What the guest needs to find these devices
//!
//! Firmware and kernels that probe configuration mechanism #1 themselves (SeaBIOS-style
//! probes, rust-hypervisor-firmware, Linux with `pci=noacpi` or without ACPI) find every
//! function on bus 0. Linux with ACPI does not: `pci_acpi_init` makes the PNP0A03 root
//! bridge driver responsible for scanning, and the DSDT Keel builds today
//! ([`acpi_tables`](crate::acpi_tables)) holds only `\_S5_`, so no bus is scanned (the
//! legacy scan `pci_legacy_init` only runs when ACPI IRQ routing is off). virtio-pci under
//! Linux therefore needs, in the DSDT: `Device(PCI0)` with `_HID` `PNP0A03`, `_SEG` 0,
//! `_BBN` 0 and a `_CRS` giving bus range 0–255, the I/O ports `0xCF8`–`0xCFF` and I/O and
//! memory windows (the PCI hole below 4 GiB, where the VMM pre-assigns BARs; above 4 GiB
//! for 64-bit BARs) — Linux ignores BARs outside the root's windows. A `_PRT` only if INTx
//! is ever wired. No MCFG is needed (mechanism #1 covers the 256-byte spaces virtio uses).
//! rust-hypervisor-firmware also wants the BARs assigned before it runs
//! ([`PciConfigSpace::set_bar_address`] plus the command register at registration).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;

pub mod config;

#[cfg(test)]
pub(crate) mod tests;

pub use config::{BarKind, BarRegion, BarSpace, PciConfigSpace, PciConfigState, PciIds};

use super::device::{DeviceContext, DeviceStateError};
use super::pci_host::{ADDRESS_ENABLE, CONFIG_DATA, PciHost};
use super::{Devices, MachineRequest, all_ones};
use crate::bus::Target;
use crate::memory::GuestMemory;

/// A PCI function model on bus 0: a configuration space it builds and owns, and the
/// registers behind its BARs.
///
/// Call order: as for [`Device`](super::Device): [`advance`](Self::advance) before each
/// guest entry, BAR accesses between. Configuration accesses never reach the model: the bus
/// serves them from [`config`](Self::config) and [`config_mut`](Self::config_mut).
pub trait PciDevice: Any {
    /// The name an operator knows the device by; also its key in a saved state.
    fn name(&self) -> &'static str;

    /// The function's configuration space.
    fn config(&self) -> &PciConfigSpace;

    /// The function's configuration space, for the bus's guest writes.
    fn config_mut(&mut self) -> &mut PciConfigSpace;

    /// A guest load of `size` bytes (1, 2, 4 or 8) at `offset` in BAR `bar` (outside the
    /// MSI-X table and PBA).
    fn read_bar(&mut self, bar: u8, offset: u64, size: u8, ctx: &mut DeviceContext) -> u64;

    /// A guest store of the low `size` bytes of `value` at `offset` in BAR `bar`.
    fn write_bar(&mut self, bar: u8, offset: u64, size: u8, value: u64, ctx: &mut DeviceContext);

    /// Runs the device's timers to `ctx.now_ns()`.
    fn advance(&mut self, _ctx: &mut DeviceContext) {}

    /// The earliest VM time at which [`advance`](Self::advance) would signal.
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// The model's registers beyond its configuration space, as postcard bytes (empty for a
    /// model that has none).
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Loads what [`save_state`](Self::save_state) made; a model without state of its own
    /// takes only an empty one.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(DeviceStateError::Decode {
                device: self.name(),
                reason: alloc::format!("{} bytes for a model without state", bytes.len()),
            })
        }
    }

    /// Whether the model has work that needs guest memory (a virtio queue was notified).
    /// Asked after BAR writes, which cannot touch guest memory themselves.
    fn wants_service(&self) -> bool {
        false
    }

    /// Does the work [`wants_service`](Self::wants_service) announced, with guest RAM.
    fn service(&mut self, _memory: &GuestMemory, _ctx: &mut DeviceContext) {}
}

/// A function on the bus and where its BARs are mapped now.
pub(super) struct PciFunction {
    /// Device number << 3 | function number.
    pub(super) devfn: u8,
    pub(super) device: Box<dyn PciDevice>,
    /// What each BAR is mapped at on the buses.
    mapped: [Option<BarRegion>; 6],
}

/// Bus 0: the host bridge and the registered functions.
pub(super) struct PciBus {
    /// The bridge at 00:00.0, `CONFIG_ADDRESS` and the reset control register.
    pub(super) host: PciHost,
    pub(super) functions: Vec<PciFunction>,
}

impl PciBus {
    pub(super) fn new() -> PciBus {
        PciBus {
            host: PciHost::new(),
            functions: Vec::new(),
        }
    }

    /// The function and configuration offset a `CONFIG_DATA` port reaches, if the address
    /// register names a registered function.
    fn route(&self, port: u16) -> Option<(usize, u8)> {
        let address = self.host.state().address;
        if port < CONFIG_DATA || address & ADDRESS_ENABLE == 0 || (address >> 16) & 0xFF != 0 {
            return None;
        }
        // Bits 15:8.
        let devfn = (address >> 8) as u8;
        let index = self.functions.iter().position(|f| f.devfn == devfn)?;
        // Register bits 7:2 plus the byte lane (port <= 0xCFF): at most 0xFF.
        Some((index, (address & 0xFC) as u8 + (port - CONFIG_DATA) as u8))
    }
}

/// Why a PCI function could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// The device/function number is taken (00.0 is the host bridge).
    SlotInUse {
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
    },
    /// The device number is above 31 or the function number above 7.
    BadSlot {
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
    },
    /// Every device number on bus 0 is taken.
    BusFull,
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::SlotInUse { device, function } => {
                write!(f, "PCI slot 00:{device:02x}.{function} is already taken")
            }
            PciError::BadSlot { device, function } => write!(
                f,
                "PCI slot 00:{device:02x}.{function} does not exist (devices 0-31, functions 0-7)"
            ),
            PciError::BusFull => f.write_str("PCI bus 0 has no free device number left"),
        }
    }
}

impl Devices {
    /// Puts `device` on PCI bus 0 at the first free device number (function 0) and maps any
    /// BAR it already decodes. Returns the device number.
    ///
    /// See the [module docs](self) for an example.
    pub fn add_pci_device(&mut self, device: impl PciDevice) -> Result<u8, PciError> {
        let slot = (1..32)
            .find(|&d| !self.pci.functions.iter().any(|f| f.devfn >> 3 == d))
            .ok_or(PciError::BusFull)?;
        self.add_pci_device_at(slot, 0, device)?;
        Ok(slot)
    }

    /// Puts `device` on PCI bus 0 at `device_number`.`function`.
    pub fn add_pci_device_at(
        &mut self,
        device_number: u8,
        function: u8,
        device: impl PciDevice,
    ) -> Result<(), PciError> {
        if device_number > 31 || function > 7 {
            return Err(PciError::BadSlot {
                device: device_number,
                function,
            });
        }
        let devfn = device_number << 3 | function;
        if devfn == 0 || self.pci.functions.iter().any(|f| f.devfn == devfn) {
            return Err(PciError::SlotInUse {
                device: device_number,
                function,
            });
        }
        self.pci.functions.push(PciFunction {
            devfn,
            device: Box::new(device),
            mapped: [None; 6],
        });
        self.sync_bars(self.pci.functions.len() - 1);
        Ok(())
    }

    /// The PCI model of type `T` at `device_number`.`function` on bus 0.
    pub fn pci_device<T: PciDevice>(&self, device_number: u8, function: u8) -> Option<&T> {
        let devfn = device_number << 3 | function;
        let f = self.pci.functions.iter().find(|f| f.devfn == devfn)?;
        (&*f.device as &dyn Any).downcast_ref()
    }

    /// The PCI model of type `T` at `device_number`.`function`, mutable.
    pub fn pci_device_mut<T: PciDevice>(
        &mut self,
        device_number: u8,
        function: u8,
    ) -> Option<&mut T> {
        let devfn = device_number << 3 | function;
        let f = self.pci.functions.iter_mut().find(|f| f.devfn == devfn)?;
        (&mut *f.device as &mut dyn Any).downcast_mut()
    }

    /// The host bridge and configuration-address register.
    pub fn pci_host(&self) -> &PciHost {
        &self.pci.host
    }

    /// A guest `IN` from `0xCF8`–`0xCFF`.
    pub(super) fn pci_config_read(&mut self, port: u16, size: u8) -> u32 {
        let size = size.min(4);
        let Some((index, offset)) = self.pci.route(port) else {
            return self.pci.host.read(port, size);
        };
        // Bytes past 0xCFF are not configuration data.
        let lanes = (4 - (port - CONFIG_DATA)) as u8;
        let n = size.min(lanes);
        let value = self.pci.functions[index].device.config().read(offset, n);
        value | (all_ones(size) as u32 & !(all_ones(n) as u32))
    }

    /// A guest `OUT` to `0xCF8`–`0xCFF`.
    pub(super) fn pci_config_write(&mut self, port: u16, size: u8, value: u32) {
        let size = size.min(4);
        let Some((index, offset)) = self.pci.route(port) else {
            self.pci.host.write(port, size, value);
            if self.pci.host.reset_requested() {
                self.pci.host.clear_reset_request();
                let (_, _, mut ctx) = self.split();
                ctx.request(MachineRequest::Reset);
            }
            return;
        };
        let lanes = (4 - (port - CONFIG_DATA)) as u8;
        let (_, pci, mut ctx) = self.split();
        let remap = pci.functions[index].device.config_mut().write(
            offset,
            size.min(lanes),
            value,
            &mut ctx,
        );
        if remap {
            self.sync_bars(index);
        }
    }

    /// A guest access to BAR `bar` of function `index`: the MSI-X table and PBA are served
    /// here, the rest by the model.
    pub(super) fn pci_bar_read(&mut self, index: usize, bar: u8, offset: u64, size: u8) -> u64 {
        let (_, pci, mut ctx) = self.split();
        let Some(function) = pci.functions.get_mut(index) else {
            return all_ones(size);
        };
        let device = &mut function.device;
        match device.config().msix_region(bar, offset) {
            Some((table, at)) => device.config().msix_read(table, at, size),
            None => device.read_bar(bar, offset, size, &mut ctx),
        }
    }

    /// A guest store to BAR `bar` of function `index`.
    pub(super) fn pci_bar_write(
        &mut self,
        index: usize,
        bar: u8,
        offset: u64,
        size: u8,
        value: u64,
    ) {
        let (_, pci, mut ctx) = self.split();
        let Some(function) = pci.functions.get_mut(index) else {
            return;
        };
        let device = &mut function.device;
        match device.config().msix_region(bar, offset) {
            Some((true, at)) => device.config_mut().msix_write(at, size, value, &mut ctx),
            Some((false, _)) => {}
            None => device.write_bar(bar, offset, size, value, &mut ctx),
        }
    }

    /// Makes the buses show function `index`'s BARs where its configuration space decodes
    /// them now.
    pub(super) fn sync_bars(&mut self, index: usize) {
        let function = &mut self.pci.functions[index];
        let name = function.device.name();
        for bar in 0..6u8 {
            let want = function.device.config().bar_region(bar);
            let slot = &mut function.mapped[usize::from(bar)];
            if want == *slot {
                continue;
            }
            if let Some(old) = slot.take() {
                match old.space {
                    BarSpace::Memory => {
                        self.mmio.remove(old.base);
                    }
                    BarSpace::Io => {
                        // Mapped I/O BARs lie below 0x10000.
                        self.pio.remove(old.base as u16);
                    }
                }
            }
            let Some(new) = want else {
                continue;
            };
            let target = Target::PciBar {
                function: index,
                bar,
            };
            let mapped = match new.space {
                BarSpace::Memory => self.mmio.insert(new.base, new.len, target, name).is_ok(),
                BarSpace::Io => match (u16::try_from(new.base), u16::try_from(new.len)) {
                    (Ok(base), Ok(len)) => self.pio.insert(base, len, target, name).is_ok(),
                    _ => false,
                },
            };
            if mapped {
                *slot = Some(new);
            }
        }
    }

    /// Forgets every BAR mapping and maps each function again from its configuration space
    /// (after a restore).
    pub(super) fn remap_all_bars(&mut self) {
        let is_bar = |t: Target| matches!(t, Target::PciBar { .. });
        self.mmio.remove_where(is_bar);
        self.pio.remove_where(is_bar);
        for index in 0..self.pci.functions.len() {
            self.pci.functions[index].mapped = [None; 6];
            self.sync_bars(index);
        }
    }
}
