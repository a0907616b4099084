//! A PCI function's configuration space: the type-0 header, BARs with their size masks, a
//! capability list, MSI and MSI-X. Every PCI device model embeds one [`PciConfigSpace`] and
//! builds it at construction; the [PCI bus](super) reads and writes it for the guest and
//! maps the BARs it decodes.
//!
//! The space is 64 dwords of value plus 64 dwords of write mask: a guest write changes only
//! the writable bits, so the BAR sizing protocol (write all ones, read back) returns the
//! size mask by construction — for 32- and 64-bit memory BARs and I/O BARs alike (PCI Local
//! Bus 3.0 §6.2.5.1). The MSI-X table and PBA (PCI 3.0 §6.8.2) live here too, although the
//! guest reaches them through a BAR: the bus routes those accesses here before the device
//! sees any, so a device model only calls [`PciConfigSpace::msix_notify`].

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use super::super::StateError;
use super::super::device::DeviceContext;
use super::super::interrupts::MsiMessage;

/// Configuration-space register offsets (type 0 header, PCI 3.0 §6.1).
pub mod reg {
    /// Vendor id (16 bits).
    pub const VENDOR_ID: u8 = 0x00;
    /// Device id (16 bits).
    pub const DEVICE_ID: u8 = 0x02;
    /// Command (16 bits).
    pub const COMMAND: u8 = 0x04;
    /// Status (16 bits).
    pub const STATUS: u8 = 0x06;
    /// Revision id (8 bits), then the class code (24 bits).
    pub const REVISION: u8 = 0x08;
    /// Header type (8 bits).
    pub const HEADER_TYPE: u8 = 0x0E;
    /// BAR 0; BAR `n` is at `BAR0 + 4 * n`.
    pub const BAR0: u8 = 0x10;
    /// Subsystem vendor id (16 bits).
    pub const SUBSYSTEM_VENDOR_ID: u8 = 0x2C;
    /// Subsystem id (16 bits).
    pub const SUBSYSTEM_ID: u8 = 0x2E;
    /// Capabilities pointer (8 bits).
    pub const CAPABILITIES: u8 = 0x34;
    /// Interrupt line (8 bits).
    pub const INTERRUPT_LINE: u8 = 0x3C;
    /// Interrupt pin (8 bits).
    pub const INTERRUPT_PIN: u8 = 0x3D;
}

/// Command register: I/O space decoding.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus master (the device may write guest memory, including MSIs).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx emulation disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// The command bits a guest can change.
pub const COMMAND_WRITABLE: u16 =
    COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE;
/// Status register: the function wants its INTx line asserted (PCI 3.0 §6.2.3; it reaches
/// the pin only while [`COMMAND_INTX_DISABLE`] is clear).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
/// Status register: the capability list is valid.
pub const STATUS_CAPABILITIES: u16 = 1 << 4;

/// Capability id of MSI.
pub const CAP_MSI: u8 = 0x05;
/// Capability id of vendor-specific capabilities (virtio uses these).
pub const CAP_VENDOR: u8 = 0x09;
/// Capability id of MSI-X.
pub const CAP_MSIX: u8 = 0x11;

/// MSI-X message control: the function's vectors are all masked.
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// MSI-X message control: MSI-X is on (INTx and MSI are off).
pub const MSIX_ENABLE: u16 = 1 << 15;
/// Bytes per MSI-X table entry.
pub const MSIX_ENTRY_LEN: u64 = 16;
/// MSI-X vector control: the vector is masked.
pub const MSIX_VECTOR_MASKED: u32 = 1;
/// Most MSI-X vectors a function can have (the table size field is 11 bits).
pub const MSIX_MAX_VECTORS: u16 = 2048;

/// MSI message control: MSI is on.
pub const MSI_ENABLE: u16 = 1 << 0;
/// MSI message control: 64-bit message address capable.
pub const MSI_64BIT: u16 = 1 << 7;

/// First byte past the type-0 header: capabilities go from here.
const CAPS_START: u8 = 0x40;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// A memory BAR below 4 GiB; `size` is a power of two, at least 16.
    Memory32 {
        /// Bytes.
        size: u32,
        /// The prefetchable bit.
        prefetchable: bool,
    },
    /// A 64-bit memory BAR (it takes this BAR and the next); `size` is a power of two, at
    /// least 16.
    Memory64 {
        /// Bytes.
        size: u64,
        /// The prefetchable bit.
        prefetchable: bool,
    },
    /// An I/O BAR in the 16-bit port space; `size` is a power of two, 4 to 256.
    Io {
        /// Ports.
        size: u16,
    },
}

/// Which bus a decoded BAR sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarSpace {
    /// The MMIO bus.
    Memory,
    /// The port-I/O bus.
    Io,
}

/// Where the guest put a BAR, with its decoding enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarRegion {
    /// The bus.
    pub space: BarSpace,
    /// First address.
    pub base: u64,
    /// Length in bytes (ports for I/O).
    pub len: u64,
}

/// A function's identity in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIds {
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Revision id.
    pub revision: u8,
    /// Class code: base class, sub-class, programming interface (24 bits).
    pub class: u32,
    /// Subsystem vendor id.
    pub subsystem_vendor: u16,
    /// Subsystem id.
    pub subsystem: u16,
}

/// Why a configuration space could not be built as asked (a device model's bug, reported
/// at registration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciConfigError {
    /// BAR index above 5 (or 5 for a 64-bit BAR, which needs two).
    BarIndex(u8),
    /// The BAR, or the next one for a 64-bit BAR, is already defined.
    BarInUse(u8),
    /// The BAR size is not a power of two in the range its kind allows.
    BarSize(u64),
    /// The capability does not fit the 192 bytes after the header.
    CapabilitySpace,
    /// The MSI-X table or PBA is in a BAR that is not a memory BAR, or runs past its end,
    /// or the vector count is 0 or above 2048.
    MsixLayout,
    /// A second MSI or MSI-X capability.
    DuplicateCapability(u8),
}

impl fmt::Display for PciConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciConfigError::BarIndex(i) => write!(f, "PCI BAR {i} does not exist"),
            PciConfigError::BarInUse(i) => write!(f, "PCI BAR {i} is already defined"),
            PciConfigError::BarSize(size) => write!(
                f,
                "PCI BAR size {size:#x} is not a power of two in the range of its kind"
            ),
            PciConfigError::CapabilitySpace => {
                f.write_str("the PCI capabilities do not fit in configuration space")
            }
            PciConfigError::MsixLayout => f.write_str(
                "the MSI-X table or PBA does not fit its BAR, or the vector count is not 1 to 2048",
            ),
            PciConfigError::DuplicateCapability(id) => {
                write!(f, "PCI capability {id:#04x} is already present")
            }
        }
    }
}

/// The MSI-X capability's layout and its table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Msix {
    /// Offset of the capability in configuration space.
    cap: u8,
    table_bar: u8,
    table_offset: u64,
    pba_bar: u8,
    pba_offset: u64,
    /// Four dwords per vector: address low, address high, data, vector control.
    table: Vec<u32>,
    /// Pending bits, one per vector.
    pba: Vec<u64>,
}

/// A PCI function's configuration space (type 0 header), see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciConfigSpace {
    regs: [u32; 64],
    writable: [u32; 64],
    bars: [Option<BarKind>; 6],
    /// Next free capability offset.
    next_cap: u8,
    /// Offset of the last capability's "next" byte (the capabilities pointer at first).
    last_link: u8,
    msix: Option<Msix>,
    /// Offset of the MSI capability.
    msi: Option<u8>,
    /// Where the INTx pin is wired, once the bus registered the function.
    intx: Option<IntxRoute>,
    /// The level last driven on that wire, so the bus hears each change once.
    intx_driven: bool,
}

/// A function's INTx wire: who drives it and the I/O APIC pin it reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IntxRoute {
    /// Device number << 3 | function number (the source id on a shared line).
    devfn: u8,
    /// The I/O APIC pin.
    gsi: u8,
}

/// A configuration space's guest-writable contents, for snapshots: every register and the
/// MSI-X table and pending bits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciConfigState {
    /// The 64 dwords of configuration space.
    pub regs: Vec<u32>,
    /// The MSI-X table, four dwords per vector (empty without MSI-X).
    pub msix_table: Vec<u32>,
    /// The MSI-X pending bits, 64 vectors per word.
    pub msix_pba: Vec<u64>,
}

impl PciConfigSpace {
    /// A function with `ids`, no BARs, no capabilities, command 0 (no decoding).
    pub fn new(ids: PciIds) -> PciConfigSpace {
        let mut space = PciConfigSpace {
            regs: [0; 64],
            writable: [0; 64],
            bars: [None; 6],
            next_cap: CAPS_START,
            last_link: reg::CAPABILITIES,
            msix: None,
            msi: None,
            intx: None,
            intx_driven: false,
        };
        space.set(reg::VENDOR_ID, 2, u32::from(ids.vendor));
        space.set(reg::DEVICE_ID, 2, u32::from(ids.device));
        space.set(reg::REVISION, 1, u32::from(ids.revision));
        space.set(reg::REVISION + 1, 3, ids.class & 0xFF_FFFF);
        space.set(reg::SUBSYSTEM_VENDOR_ID, 2, u32::from(ids.subsystem_vendor));
        space.set(reg::SUBSYSTEM_ID, 2, u32::from(ids.subsystem));
        space.set_writable(reg::COMMAND, 2, u32::from(COMMAND_WRITABLE));
        space.set_writable(reg::INTERRUPT_LINE, 1, 0xFF);
        space
    }

    /// Defines BAR `index` (0–5; a 64-bit BAR also takes `index + 1`). It reads 0 until the
    /// guest (or [`set_bar_address`](Self::set_bar_address)) places it.
    pub fn set_bar(&mut self, index: u8, kind: BarKind) -> Result<(), PciConfigError> {
        let i = usize::from(index);
        let wide = matches!(kind, BarKind::Memory64 { .. });
        if i > 5 || (wide && i > 4) {
            return Err(PciConfigError::BarIndex(index));
        }
        if self.bars[i].is_some() || (wide && self.bars[i + 1].is_some()) || self.is_upper_half(i) {
            return Err(PciConfigError::BarInUse(index));
        }
        let (flags, mask): (u32, u64) = match kind {
            BarKind::Memory32 { size, prefetchable } => {
                let size = u64::from(size);
                if !size.is_power_of_two() || size < 16 {
                    return Err(PciConfigError::BarSize(size));
                }
                (u32::from(prefetchable) << 3, !(size - 1) & 0xFFFF_FFF0)
            }
            BarKind::Memory64 { size, prefetchable } => {
                if !size.is_power_of_two() || size < 16 {
                    return Err(PciConfigError::BarSize(size));
                }
                (0b100 | u32::from(prefetchable) << 3, !(size - 1) & !0xF)
            }
            BarKind::Io { size } => {
                let size = u64::from(size);
                if !size.is_power_of_two() || !(4..=256).contains(&size) {
                    return Err(PciConfigError::BarSize(size));
                }
                (1, !(size - 1) & 0xFFFC)
            }
        };
        let dword = usize::from(reg::BAR0 / 4) + i;
        self.regs[dword] = flags;
        self.writable[dword] = mask as u32;
        if wide {
            self.writable[dword + 1] = (mask >> 32) as u32;
        }
        self.bars[i] = Some(kind);
        Ok(())
    }

    /// Places BAR `index` at `address` (as firmware would; the guest may move it). Low
    /// bits below the BAR's size are dropped.
    pub fn set_bar_address(&mut self, index: u8, address: u64) {
        let i = usize::from(index);
        if i > 5 || self.bars[i].is_none() {
            return;
        }
        let dword = usize::from(reg::BAR0 / 4) + i;
        let low = self.writable[dword];
        self.regs[dword] = (self.regs[dword] & !low) | (address as u32 & low);
        if let Some(BarKind::Memory64 { .. }) = self.bars[i] {
            let high = self.writable[dword + 1];
            self.regs[dword + 1] = (address >> 32) as u32 & high;
        }
    }

    /// Sets the interrupt pin (1 = INTA# … 4 = INTD#, 0 = none).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set(reg::INTERRUPT_PIN, 1, u32::from(pin.min(4)));
    }

    /// The interrupt pin (1 = INTA# … 4 = INTD#, 0 = none).
    pub fn interrupt_pin(&self) -> u8 {
        self.get(reg::INTERRUPT_PIN, 1) as u8
    }

    /// Wires the function's INTx pin to I/O APIC pin `gsi` as function `devfn` (the bus
    /// does this at registration): the interrupt line register reads `gsi` from now on. A
    /// function without a pin gets INTA#. Returns `(devfn, gsi)` if the device asserted its
    /// pin before it was wired, for the bus to drive.
    pub(super) fn connect_intx(&mut self, devfn: u8, gsi: u8) -> Option<(u8, u8)> {
        if self.interrupt_pin() == 0 {
            self.set_interrupt_pin(1);
        }
        self.set(reg::INTERRUPT_LINE, 1, u32::from(gsi));
        self.intx = Some(IntxRoute { devfn, gsi });
        self.intx_driven = self.intx_output();
        self.intx_source()
    }

    /// The device asserts (`true`) or deasserts its INTx pin. The line follows while the
    /// guest leaves INTx enabled (command bit 10 clear) and MSI and MSI-X are off (PCI 3.0
    /// §6.8: a function using messages must not use INTx); the status register's interrupt
    /// bit shows `level` either way. Lines of several functions on one GSI are OR-ed.
    pub fn set_intx(&mut self, level: bool, ctx: &mut DeviceContext) {
        let status = self.get(reg::STATUS, 2) as u16;
        let status = if level {
            status | STATUS_INTERRUPT
        } else {
            status & !STATUS_INTERRUPT
        };
        self.set(reg::STATUS, 2, u32::from(status));
        self.drive_intx(ctx);
    }

    /// Whether the function's INTx wire is asserted now: the device asks for it, the guest
    /// has not disabled INTx, and neither MSI nor MSI-X is on.
    pub fn intx_output(&self) -> bool {
        let status = self.get(reg::STATUS, 2) as u16;
        let msi_on = self
            .msi
            .is_some_and(|cap| self.get(cap + 2, 2) as u16 & MSI_ENABLE != 0);
        status & STATUS_INTERRUPT != 0
            && self.command() & COMMAND_INTX_DISABLE == 0
            && self.msix_control() & MSIX_ENABLE == 0
            && !msi_on
    }

    /// The INTx wire as the bus sees it: `(devfn, gsi)` if registered and asserted now.
    pub(super) fn intx_source(&self) -> Option<(u8, u8)> {
        let route = self.intx?;
        self.intx_output().then_some((route.devfn, route.gsi))
    }

    /// Tells the interrupt routing the wire's level if it changed.
    fn drive_intx(&mut self, ctx: &mut DeviceContext) {
        let Some(route) = self.intx else {
            return;
        };
        let level = self.intx_output();
        if level != self.intx_driven {
            self.intx_driven = level;
            ctx.set_pci_intx(route.devfn, route.gsi, level);
        }
    }

    /// Appends a capability with id `id` whose bytes after the id and next pointer are
    /// `body`, of which the bits set in `writable` (same length, or shorter: the rest is
    /// read-only) the guest can change. Returns its offset. The list stays in the order
    /// capabilities are added.
    pub fn add_capability(
        &mut self,
        id: u8,
        body: &[u8],
        writable: &[u8],
    ) -> Result<u8, PciConfigError> {
        let len = (2 + body.len()).next_multiple_of(4);
        let offset = self.next_cap;
        if usize::from(offset) + len > 256 {
            return Err(PciConfigError::CapabilitySpace);
        }
        self.set(offset, 1, u32::from(id));
        for (i, &byte) in body.iter().enumerate() {
            // offset + 2 + i < 256, checked above.
            let at = offset + 2 + i as u8;
            self.set(at, 1, u32::from(byte));
            self.set_writable(at, 1, u32::from(writable.get(i).copied().unwrap_or(0)));
        }
        self.set(self.last_link, 1, u32::from(offset));
        self.last_link = offset + 1;
        // offset + len <= 256; 256 itself means "full" and fails the check next time.
        self.next_cap = u8::try_from(usize::from(offset) + len).unwrap_or(0xFF);
        let status = self.get(reg::STATUS, 2) as u16 | STATUS_CAPABILITIES;
        self.set(reg::STATUS, 2, u32::from(status));
        Ok(offset)
    }

    /// Adds an MSI-X capability for `vectors` vectors (1–2048) with the table at
    /// `table_offset` in memory BAR `table_bar` and the PBA at `pba_offset` in `pba_bar`
    /// (both 8-byte aligned). Every vector starts masked, MSI-X disabled.
    pub fn add_msix(
        &mut self,
        vectors: u16,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> Result<u8, PciConfigError> {
        if self.msix.is_some() {
            return Err(PciConfigError::DuplicateCapability(CAP_MSIX));
        }
        if !(1..=MSIX_MAX_VECTORS).contains(&vectors)
            || !table_offset.is_multiple_of(8)
            || !pba_offset.is_multiple_of(8)
        {
            return Err(PciConfigError::MsixLayout);
        }
        let table_len = u64::from(vectors) * MSIX_ENTRY_LEN;
        let pba_len = u64::from(vectors).div_ceil(64) * 8;
        let fits = |bar: u8, offset: u32, len: u64| {
            self.memory_bar_size(bar)
                .is_some_and(|size| u64::from(offset) + len <= size)
        };
        if !fits(table_bar, table_offset, table_len) || !fits(pba_bar, pba_offset, pba_len) {
            return Err(PciConfigError::MsixLayout);
        }
        let control = (vectors - 1).to_le_bytes();
        let table = (table_offset | u32::from(table_bar)).to_le_bytes();
        let pba = (pba_offset | u32::from(pba_bar)).to_le_bytes();
        let mut body = Vec::with_capacity(10);
        body.extend_from_slice(&control);
        body.extend_from_slice(&table);
        body.extend_from_slice(&pba);
        let writable = (MSIX_ENABLE | MSIX_FUNCTION_MASK).to_le_bytes();
        let cap = self.add_capability(CAP_MSIX, &body, &writable)?;
        let mut table = vec![0; usize::from(vectors) * 4];
        for entry in table.chunks_mut(4) {
            entry[3] = MSIX_VECTOR_MASKED;
        }
        self.msix = Some(Msix {
            cap,
            table_bar,
            table_offset: u64::from(table_offset),
            pba_bar,
            pba_offset: u64::from(pba_offset),
            table,
            pba: vec![0; usize::from(vectors).div_ceil(64)],
        });
        Ok(cap)
    }

    /// Adds an MSI capability: one vector, 64-bit address, no per-vector masking. MSI
    /// starts disabled.
    pub fn add_msi(&mut self) -> Result<u8, PciConfigError> {
        if self.msi.is_some() {
            return Err(PciConfigError::DuplicateCapability(CAP_MSI));
        }
        let mut body = [0u8; 12];
        body[..2].copy_from_slice(&MSI_64BIT.to_le_bytes());
        // Message control: enable and multiple message enable (bits 6:4); address low
        // (bits 1:0 reserved), address high, data (16 bits).
        let mut writable = [0u8; 12];
        writable[..2].copy_from_slice(&(MSI_ENABLE | 0x70).to_le_bytes());
        writable[2..6].copy_from_slice(&0xFFFF_FFFCu32.to_le_bytes());
        writable[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        writable[10..12].copy_from_slice(&0xFFFFu16.to_le_bytes());
        let cap = self.add_capability(CAP_MSI, &body, &writable)?;
        self.msi = Some(cap);
        Ok(cap)
    }

    /// A guest configuration read of `size` bytes (1, 2 or 4) at `offset`; bytes past the
    /// end read all ones.
    pub fn read(&self, offset: u8, size: u8) -> u32 {
        let mut value = 0;
        for i in 0..size.min(4) {
            let byte = match offset.checked_add(i) {
                Some(at) => self.get(at, 1) as u8,
                None => 0xFF,
            };
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// A guest configuration write of the low `size` bytes (1, 2 or 4) of `value` at
    /// `offset`: only writable bits change. Returns true if the write could change what the
    /// function decodes (command register or a BAR), so the bus remaps it. An MSI-X
    /// unmask delivers pending vectors through `ctx`.
    pub fn write(&mut self, offset: u8, size: u8, value: u32, ctx: &mut DeviceContext) -> bool {
        let mut remap = false;
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .enumerate()
            .take(usize::from(size.min(4)))
        {
            // `i` < 4.
            let Some(at) = offset.checked_add(i as u8) else {
                break;
            };
            let dword = usize::from(at / 4);
            let shift = 8 * u32::from(at % 4);
            let mask = (self.writable[dword] >> shift) & 0xFF;
            if mask == 0 {
                continue;
            }
            let old = self.regs[dword];
            let new = (old & !(mask << shift)) | ((u32::from(byte) & mask) << shift);
            self.regs[dword] = new;
            remap |= at / 4 == reg::COMMAND / 4 || (0x10..0x28).contains(&at);
        }
        self.deliver_unmasked(ctx);
        // The INTx-disable bit or an MSI/MSI-X enable may have changed the wire.
        self.drive_intx(ctx);
        remap
    }

    /// Sets the command register's writable bits (as firmware would before the guest runs:
    /// decoding on for pre-assigned BARs). The bus maps the BARs at registration.
    pub fn set_command(&mut self, command: u16) {
        self.set(reg::COMMAND, 2, u32::from(command & COMMAND_WRITABLE));
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.get(reg::COMMAND, 2) as u16
    }

    /// The kind of BAR `index`, if defined.
    pub fn bar(&self, index: u8) -> Option<BarKind> {
        self.bars.get(usize::from(index)).copied().flatten()
    }

    /// Where BAR `index` decodes now: `None` if it is undefined, its decoding (command
    /// memory or I/O bit) is off, or it is at address 0 (not placed).
    pub fn bar_region(&self, index: u8) -> Option<BarRegion> {
        let i = usize::from(index);
        let kind = self.bars.get(i).copied().flatten()?;
        let dword = usize::from(reg::BAR0 / 4) + i;
        let command = self.command();
        let (space, base, len) = match kind {
            BarKind::Memory32 { size, .. } => (
                BarSpace::Memory,
                u64::from(self.regs[dword] & !0xF),
                u64::from(size),
            ),
            BarKind::Memory64 { size, .. } => (
                BarSpace::Memory,
                u64::from(self.regs[dword] & !0xF) | u64::from(self.regs[dword + 1]) << 32,
                size,
            ),
            BarKind::Io { size } => (
                BarSpace::Io,
                u64::from(self.regs[dword] & !0x3),
                u64::from(size),
            ),
        };
        let enabled = match space {
            BarSpace::Memory => command & COMMAND_MEMORY != 0,
            BarSpace::Io => command & COMMAND_IO != 0,
        };
        (enabled && base != 0).then_some(BarRegion { space, base, len })
    }

    /// Device `vector` has an event: with MSI-X enabled, send the vector's message, or set
    /// its pending bit while it or the function is masked. Returns whether a message went
    /// out. Without MSI-X enabled, falls back to MSI (vector 0's message) if that is on.
    pub fn msix_notify(&mut self, vector: u16, ctx: &mut DeviceContext) -> bool {
        let control = self.msix_control();
        let Some(msix) = &mut self.msix else {
            return self.msi_notify(ctx);
        };
        if control & MSIX_ENABLE == 0 {
            return self.msi_notify(ctx);
        }
        let v = usize::from(vector);
        let Some(entry) = msix.table.get(v * 4..v * 4 + 4) else {
            return false;
        };
        if control & MSIX_FUNCTION_MASK != 0 || entry[3] & MSIX_VECTOR_MASKED != 0 {
            msix.pba[v / 64] |= 1 << (v % 64);
            return false;
        }
        ctx.send_msi(MsiMessage {
            address: u64::from(entry[0]) | u64::from(entry[1]) << 32,
            data: entry[2],
        });
        true
    }

    /// Sends the MSI capability's message if MSI is enabled; returns whether it did.
    pub fn msi_notify(&mut self, ctx: &mut DeviceContext) -> bool {
        let Some(cap) = self.msi else {
            return false;
        };
        let control = self.get(cap + 2, 2) as u16;
        if control & MSI_ENABLE == 0 {
            return false;
        }
        let address = u64::from(self.get(cap + 4, 4)) | u64::from(self.get(cap + 8, 4)) << 32;
        let data = self.get(cap + 12, 2);
        ctx.send_msi(MsiMessage { address, data });
        true
    }

    /// Whether MSI-X vector `vector` is pending (masked when it fired).
    pub fn msix_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.msix
            .as_ref()
            .and_then(|m| m.pba.get(v / 64))
            .is_some_and(|word| word & (1 << (v % 64)) != 0)
    }

    /// If `offset` in BAR `bar` is in the MSI-X table or PBA: the table (`true`) or PBA
    /// (`false`) and the offset inside it.
    pub(super) fn msix_region(&self, bar: u8, offset: u64) -> Option<(bool, u64)> {
        let msix = self.msix.as_ref()?;
        let table_len = msix.table.len() as u64 * 4;
        let pba_len = msix.pba.len() as u64 * 8;
        if bar == msix.table_bar
            && (msix.table_offset..msix.table_offset + table_len).contains(&offset)
        {
            return Some((true, offset - msix.table_offset));
        }
        if bar == msix.pba_bar && (msix.pba_offset..msix.pba_offset + pba_len).contains(&offset) {
            return Some((false, offset - msix.pba_offset));
        }
        None
    }

    /// A guest load from the MSI-X table (`table`) or PBA at `offset` inside it.
    pub(super) fn msix_read(&self, table: bool, offset: u64, size: u8) -> u64 {
        let Some(msix) = &self.msix else {
            return 0;
        };
        let mut value = 0u64;
        for i in 0..u64::from(size.min(8)) {
            let at = offset + i;
            let byte = if table {
                usize::try_from(at / 4)
                    .ok()
                    .and_then(|d| msix.table.get(d))
                    .map_or(0, |dword| (dword >> (8 * (at % 4))) as u8)
            } else {
                usize::try_from(at / 8)
                    .ok()
                    .and_then(|q| msix.pba.get(q))
                    .map_or(0, |qword| (qword >> (8 * (at % 8))) as u8)
            };
            value |= u64::from(byte) << (8 * i);
        }
        value
    }

    /// A guest store to the MSI-X table at `offset` (the PBA is read-only). Unmasking a
    /// vector with its pending bit set sends its message.
    pub(super) fn msix_write(
        &mut self,
        offset: u64,
        size: u8,
        value: u64,
        ctx: &mut DeviceContext,
    ) {
        let Some(msix) = &mut self.msix else {
            return;
        };
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .enumerate()
            .take(usize::from(size.min(8)))
        {
            let at = offset + i as u64;
            let Some(dword) = usize::try_from(at / 4)
                .ok()
                .and_then(|d| msix.table.get_mut(d))
            else {
                continue;
            };
            let shift = 8 * (at % 4);
            // Vector control: only the mask bit is writable.
            let mask = if at / 4 % 4 == 3 {
                MSIX_VECTOR_MASKED & (0xFF << shift)
            } else {
                0xFF << shift
            };
            *dword = (*dword & !mask) | ((u32::from(byte) << shift) & mask);
        }
        self.deliver_unmasked(ctx);
    }

    /// Sends every pending MSI-X vector that is no longer masked, clearing its bit.
    fn deliver_unmasked(&mut self, ctx: &mut DeviceContext) {
        let control = self.msix_control();
        let Some(msix) = &mut self.msix else {
            return;
        };
        if control & MSIX_ENABLE == 0 || control & MSIX_FUNCTION_MASK != 0 {
            return;
        }
        for v in 0..msix.table.len() / 4 {
            let bit = 1u64 << (v % 64);
            let entry = &msix.table[v * 4..v * 4 + 4];
            if msix.pba[v / 64] & bit != 0 && entry[3] & MSIX_VECTOR_MASKED == 0 {
                msix.pba[v / 64] &= !bit;
                ctx.send_msi(MsiMessage {
                    address: u64::from(entry[0]) | u64::from(entry[1]) << 32,
                    data: entry[2],
                });
            }
        }
    }

    /// The MSI-X message control register (0 without MSI-X).
    fn msix_control(&self) -> u16 {
        self.msix
            .as_ref()
            .map_or(0, |m| self.get(m.cap + 2, 2) as u16)
    }

    /// The size of memory BAR `bar`, if it is one.
    fn memory_bar_size(&self, bar: u8) -> Option<u64> {
        match self.bar(bar)? {
            BarKind::Memory32 { size, .. } => Some(u64::from(size)),
            BarKind::Memory64 { size, .. } => Some(size),
            BarKind::Io { .. } => None,
        }
    }

    /// Whether BAR slot `i` is the upper half of a 64-bit BAR.
    fn is_upper_half(&self, i: usize) -> bool {
        i > 0 && matches!(self.bars[i - 1], Some(BarKind::Memory64 { .. }))
    }

    /// The configuration space's state, for a snapshot.
    pub fn save(&self) -> PciConfigState {
        PciConfigState {
            regs: self.regs.to_vec(),
            msix_table: self.msix.as_ref().map_or(Vec::new(), |m| m.table.clone()),
            msix_pba: self.msix.as_ref().map_or(Vec::new(), |m| m.pba.clone()),
        }
    }

    /// Loads a snapshot into this space as built: every read-only bit must match what the
    /// device model builds, and the MSI-X table must have the model's size. On an error
    /// (naming `device`) the space is unchanged.
    pub fn restore(
        &mut self,
        device: &'static str,
        state: &PciConfigState,
    ) -> Result<(), StateError> {
        let invalid = |field, value| StateError::Invalid {
            device,
            field,
            value,
        };
        if state.regs.len() != 64 {
            return Err(invalid("config length (dwords)", state.regs.len() as u64));
        }
        // The status register's interrupt bit is the device's own state, not the guest's.
        let device_owned = |i: usize| {
            if i == usize::from(reg::COMMAND / 4) {
                u32::from(STATUS_INTERRUPT) << 16
            } else {
                0
            }
        };
        for (i, (&saved, &built)) in state.regs.iter().zip(&self.regs).enumerate() {
            if (saved ^ built) & !(self.writable[i] | device_owned(i)) != 0 {
                return Err(invalid("config read-only bits at offset", 4 * i as u64));
            }
        }
        match &mut self.msix {
            Some(msix) => {
                if state.msix_table.len() != msix.table.len() {
                    return Err(invalid("msix_table length", state.msix_table.len() as u64));
                }
                if state.msix_pba.len() != msix.pba.len() {
                    return Err(invalid("msix_pba length", state.msix_pba.len() as u64));
                }
                let vectors = msix.table.len() / 4;
                let spare = vectors % 64;
                if spare != 0 && state.msix_pba.last().is_some_and(|w| w >> spare != 0) {
                    return Err(invalid("msix_pba", vectors as u64));
                }
                if let Some(v) = state
                    .msix_table
                    .chunks(4)
                    .position(|e| e[3] & !MSIX_VECTOR_MASKED != 0)
                {
                    return Err(invalid("msix_table vector control of vector", v as u64));
                }
                msix.table.clone_from(&state.msix_table);
                msix.pba.clone_from(&state.msix_pba);
            }
            None if !state.msix_table.is_empty() || !state.msix_pba.is_empty() => {
                return Err(invalid("msix_table length", state.msix_table.len() as u64));
            }
            None => {}
        }
        self.regs.copy_from_slice(&state.regs);
        // The platform reloads the routing's INTx sources from `intx_source` after a restore.
        self.intx_driven = self.intx_output();
        Ok(())
    }

    /// `size` bytes (1–4, within one dword) at `offset`.
    fn get(&self, offset: u8, size: u8) -> u32 {
        let dword = self.regs[usize::from(offset / 4)];
        let value = dword >> (8 * u32::from(offset % 4));
        match size {
            1 => value & 0xFF,
            2 => value & 0xFFFF,
            3 => value & 0xFF_FFFF,
            _ => value,
        }
    }

    /// Sets `size` bytes (1–4, within one dword) at `offset` (construction only).
    fn set(&mut self, offset: u8, size: u8, value: u32) {
        Self::put(&mut self.regs, offset, size, value);
    }

    fn set_writable(&mut self, offset: u8, size: u8, mask: u32) {
        Self::put(&mut self.writable, offset, size, mask);
    }

    fn put(regs: &mut [u32; 64], offset: u8, size: u8, value: u32) {
        let shift = 8 * u32::from(offset % 4);
        let bits = if size >= 4 {
            u32::MAX
        } else {
            (1u32 << (8 * u32::from(size))) - 1
        };
        let mask = bits << shift;
        let dword = &mut regs[usize::from(offset / 4)];
        *dword = (*dword & !mask) | ((value << shift) & mask);
    }
}
