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
//! goes through the same delivery as the I/O APIC's messages to the local APICs. Without
//! MSI/MSI-X (firmware, `pci=nomsi`) a device drives its INTx pin with
//! [`PciConfigSpace::set_intx`]: every function gets INTA# (unless its model declared another
//! pin), wired at registration to I/O APIC pin [`intx_gsi`]`(device, pin)` = 16 +
//! (device + pin − 1) mod 8, level-triggered and active low as the `_PRT` says; the
//! interrupt line register reads that GSI. Functions on one GSI are OR-ed; INTx disable
//! (command bit 10) or MSI/MSI-X enable take the function off the line.
//!
//! # What the guest needs to find these devices
//!
//! Linux with ACPI scans PCI only under a `PNP0A03` root bridge in the DSDT
//! (`pci_acpi_init`; the legacy scan runs only with ACPI IRQ routing off), and ignores BARs
//! outside that bridge's `_CRS` windows. The DSDT Keel builds
//! ([`acpi_tables`](crate::acpi_tables)) has `\_SB.PCI0`: `_HID` `PNP0A03`, `_SEG`/`_BBN`
//! 0, a `_CRS` with buses 0–255, the ports `0xCF8`–`0xCFF`, the I/O windows around them and
//! [`MMIO_WINDOW`], and a `_PRT` listing [`intx_gsi`] for every slot and pin. No MCFG: the
//! 256-byte spaces of mechanism #1 are all virtio needs. Firmware without a PCI allocator
//! (rust-hypervisor-firmware) needs the BARs placed and decoded before it runs:
//! [`Devices::assign_pci_bars`] does that, in [`MMIO_WINDOW`] (below 4 GiB, also for 64-bit
//! BARs) and [`IO_WINDOW`]. Guest RAM is contiguous from 0, so a VM with PCI devices has at
//! most 3 GiB of it ([`check_guest_memory`]).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;
use core::ops::Range;

pub mod config;

#[cfg(test)]
pub(crate) mod tests;

pub use config::{BarKind, BarRegion, BarSpace, PciConfigSpace, PciConfigState, PciIds};

use config::{COMMAND_IO, COMMAND_MEMORY};

use super::device::{DeviceContext, DeviceStateError};
use super::interrupts::{FIRST_PCI_GSI, PCI_GSIS};
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
        super::device::restore_stateless(self.name(), bytes)
    }

    /// Whether the model has work that needs guest memory (a virtio queue was notified).
    /// Asked after BAR writes, which cannot touch guest memory themselves.
    fn wants_service(&self) -> bool {
        false
    }

    /// Does the work [`wants_service`](Self::wants_service) announced, with guest RAM.
    fn service(&mut self, _memory: &GuestMemory, _ctx: &mut DeviceContext) {}
}

/// Whether a VM with `memory_bytes` of RAM (contiguous from address 0) can have PCI
/// devices: its RAM must end at or below [`MMIO_WINDOW`]'s start (3 GiB).
pub fn check_guest_memory(memory_bytes: u64) -> Result<(), PciError> {
    if memory_bytes > MMIO_WINDOW.start {
        Err(PciError::MemoryOverlapsWindow {
            memory_mib: memory_bytes.div_ceil(1 << 20),
        })
    } else {
        Ok(())
    }
}

/// Where [`Devices::assign_pci_bars`] places memory BARs, 32- and 64-bit alike: the PCI hole
/// between 3 GiB and the I/O APIC. The DSDT's root bridge offers exactly this window, so
/// guest RAM must end below its start (see [`check_guest_memory`]).
pub const MMIO_WINDOW: Range<u64> = 0xC000_0000..0xFEC0_0000;
/// Where [`Devices::assign_pci_bars`] places I/O BARs (ports `0xC000`-`0xFFFF`).
pub const IO_WINDOW: Range<u64> = 0xC000..0x1_0000;

/// The I/O APIC pin (GSI) that INTx pin `pin` (1 = INTA# … 4 = INTD#) of device
/// `device_number` on bus 0 is wired to: the usual slot swizzle over the eight pins above the
/// ISA lines, `16 + (device + pin - 1) % 8`. The DSDT's `_PRT` lists the same table.
pub fn intx_gsi(device_number: u8, pin: u8) -> u8 {
    let swizzled =
        (u32::from(device_number) + u32::from(pin.clamp(1, 4)) - 1) % u32::from(PCI_GSIS);
    // < 8.
    FIRST_PCI_GSI + swizzled as u8
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
    /// The BARs of the registered functions do not fit the window they go in.
    WindowFull {
        /// Memory ([`MMIO_WINDOW`]) or I/O ([`IO_WINDOW`]).
        space: BarSpace,
        /// The size of the first BAR that did not fit (largest first).
        size: u64,
    },
    /// A pre-assigned BAR overlaps something already on the bus it decodes on.
    BarOverlap {
        /// Device number.
        device: u8,
        /// BAR index.
        bar: u8,
        /// The address it was given.
        base: u64,
    },
    /// Guest RAM reaches into [`MMIO_WINDOW`], where BARs go.
    MemoryOverlapsWindow {
        /// The VM's memory in MiB.
        memory_mib: u64,
    },
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
            PciError::WindowFull { space, size } => {
                let (what, window) = match space {
                    BarSpace::Memory => ("memory", &MMIO_WINDOW),
                    BarSpace::Io => ("I/O", &IO_WINDOW),
                };
                write!(
                    f,
                    "a {size:#x}-byte {what} BAR of the VM's PCI devices does not fit what is \
                     left of the window {:#x}..{:#x}: give the VM fewer or smaller devices",
                    window.start, window.end
                )
            }
            PciError::BarOverlap { device, bar, base } => write!(
                f,
                "internal error: PCI device 00:{device:02x} BAR {bar} at {base:#x} overlaps \
                 another device"
            ),
            PciError::MemoryOverlapsWindow { memory_mib } => write!(
                f,
                "a VM with PCI devices (disks) needs memory_mib <= {}: guest RAM must end below \
                 the PCI window at {:#x}, this VM has {memory_mib} MiB",
                MMIO_WINDOW.start >> 20,
                MMIO_WINDOW.start
            ),
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
        let mut device = Box::new(device);
        let config = device.config_mut();
        let gsi = intx_gsi(device_number, config.interrupt_pin().max(1));
        let asserted = config.connect_intx(devfn, gsi);
        self.pci.functions.push(PciFunction {
            devfn,
            device,
            mapped: [None; 6],
        });
        if let Some((devfn, gsi)) = asserted {
            self.irq.set_pci_intx(devfn, gsi, true);
        }
        self.sync_bars(self.pci.functions.len() - 1);
        Ok(())
    }

    /// Places every BAR of every registered function as firmware with a PCI allocator
    /// would, and turns decoding on, so a guest whose firmware does not allocate
    /// (rust-hypervisor-firmware) finds them mapped; the guest may still move them. Memory
    /// BARs (64-bit ones too) go in [`MMIO_WINDOW`], I/O BARs in [`IO_WINDOW`], each
    /// naturally aligned, largest first so no space is lost to alignment. Call it after the
    /// last [`add_pci_device`](Self::add_pci_device), before the guest runs; it replaces
    /// earlier placements. [`PciError::WindowFull`] changes nothing.
    pub fn assign_pci_bars(&mut self) -> Result<(), PciError> {
        let mut bars: Vec<(usize, u8, BarSpace, u64)> = Vec::new();
        for (index, function) in self.pci.functions.iter().enumerate() {
            for bar in 0..6u8 {
                let (space, size) = match function.device.config().bar(bar) {
                    Some(BarKind::Memory32 { size, .. }) => (BarSpace::Memory, u64::from(size)),
                    Some(BarKind::Memory64 { size, .. }) => (BarSpace::Memory, size),
                    Some(BarKind::Io { size }) => (BarSpace::Io, u64::from(size)),
                    None => continue,
                };
                bars.push((index, bar, space, size));
            }
        }
        // Largest first: every later (smaller, power-of-two) BAR starts aligned.
        bars.sort_by_key(|&(_, _, _, size)| core::cmp::Reverse(size));
        let mut next_memory = MMIO_WINDOW.start;
        let mut next_io = IO_WINDOW.start;
        let mut placed = Vec::with_capacity(bars.len());
        for &(index, bar, space, size) in &bars {
            let (next, window) = match space {
                BarSpace::Memory => (&mut next_memory, &MMIO_WINDOW),
                BarSpace::Io => (&mut next_io, &IO_WINDOW),
            };
            let base = next.next_multiple_of(size);
            let end = base.saturating_add(size);
            if end > window.end {
                return Err(PciError::WindowFull { space, size });
            }
            *next = end;
            placed.push((index, bar, space, base));
        }
        for &(index, bar, space, base) in &placed {
            let config = self.pci.functions[index].device.config_mut();
            config.set_bar_address(bar, base);
            let decode = match space {
                BarSpace::Memory => COMMAND_MEMORY,
                BarSpace::Io => COMMAND_IO,
            };
            config.set_command(config.command() | decode);
        }
        for index in 0..self.pci.functions.len() {
            self.sync_bars(index);
        }
        for &(index, bar, _, base) in &placed {
            let function = &self.pci.functions[index];
            if function.mapped[usize::from(bar)].is_none() {
                return Err(PciError::BarOverlap {
                    device: function.devfn >> 3,
                    bar,
                    base,
                });
            }
        }
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

    /// Forgets every BAR mapping and INTx source and takes them again from each function's
    /// configuration space (after a restore).
    pub(super) fn remap_all_bars(&mut self) {
        let sources = self
            .pci
            .functions
            .iter()
            .filter_map(|f| f.device.config().intx_source());
        self.irq.reload_pci_intx(sources);
        let is_bar = |t: Target| matches!(t, Target::PciBar { .. });
        self.mmio.remove_where(is_bar);
        self.pio.remove_where(is_bar);
        for index in 0..self.pci.functions.len() {
            self.pci.functions[index].mapped = [None; 6];
            self.sync_bars(index);
        }
    }
}
