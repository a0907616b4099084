//! PCI: enumeration over configuration mechanism #1, BAR decoding, capability lists.
//!
//! Layering: [`bar`], [`caps`] and [`class`] decode values and are pure; [`scan`](mod@scan) walks a
//! bus through the [`ConfigSpace`] trait (so it runs against a mock in host tests); `cam`
//! (bare metal only) implements that trait with I/O ports 0xCF8/0xCFC (PCI Local Bus
//! Specification 3.0, §3.2.2.3.2, "Configuration Mechanism #1") and offers
//! [`enumerate`]. Drivers take a [`PciDevice`] from the list, switch on memory decode and
//! bus mastering with `enable`, and map their BARs with `mm::map_mmio`.

pub mod bar;
pub mod caps;
pub mod class;
pub mod scan;

#[cfg(target_os = "none")]
mod cam;
#[cfg(target_os = "none")]
pub mod virtio;

use core::fmt;

pub use bar::{Bar, MemoryWidth};
#[cfg(target_os = "none")]
pub use cam::{PortCam, enable, enumerate, read_config, write_config};
pub use caps::{Capabilities, Capability, VirtioCap, VirtioCaps};
pub use scan::{ConfigSpace, scan};

/// Bits of the command register (§6.2.2).
pub mod command {
    /// Respond to I/O space accesses.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Respond to memory space accesses.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// May master the bus (DMA).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// INTx# assertion disabled (PCI 2.3).
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Where a function sits: bus, device (0..32), function (0..8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number, below 32.
    pub device: u8,
    /// Function number, below 8.
    pub function: u8,
}

impl PciAddress {
    /// The address `bus:device.function` (device and function are masked to their widths).
    pub const fn new(bus: u8, device: u8, function: u8) -> PciAddress {
        PciAddress {
            bus,
            device: device & 0x1f,
            function: function & 0x7,
        }
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{:x}",
            self.bus, self.device, self.function
        )
    }
}

/// Layout of the configuration header (byte 0x0e, bits 6:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderType {
    /// Type 0: an endpoint, six BARs.
    General,
    /// Type 1: a PCI-to-PCI bridge, two BARs.
    PciBridge,
    /// Type 2: a CardBus bridge.
    CardBus,
    /// A reserved layout.
    Unknown(u8),
}

impl HeaderType {
    /// Decodes bits 6:0 of the header-type byte.
    pub fn from_byte(byte: u8) -> HeaderType {
        match byte & 0x7f {
            0 => HeaderType::General,
            1 => HeaderType::PciBridge,
            2 => HeaderType::CardBus,
            other => HeaderType::Unknown(other),
        }
    }

    /// How many BAR registers this layout has.
    pub fn bar_count(self) -> usize {
        match self {
            HeaderType::General => 6,
            HeaderType::PciBridge => 2,
            HeaderType::CardBus | HeaderType::Unknown(_) => 0,
        }
    }
}

/// Configuration-header offsets (§6.1).
pub mod offset {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: u8 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u8 = 0x02;
    /// Command (16 bits).
    pub const COMMAND: u8 = 0x04;
    /// Status (16 bits, bits are write-one-to-clear).
    pub const STATUS: u8 = 0x06;
    /// Revision ID.
    pub const REVISION: u8 = 0x08;
    /// Programming interface.
    pub const PROG_IF: u8 = 0x09;
    /// Subclass.
    pub const SUBCLASS: u8 = 0x0a;
    /// Base class.
    pub const CLASS: u8 = 0x0b;
    /// Header type; bit 7 = multi-function device.
    pub const HEADER_TYPE: u8 = 0x0e;
    /// First BAR.
    pub const BAR0: u8 = 0x10;
    /// Type 1: secondary bus number.
    pub const SECONDARY_BUS: u8 = 0x19;
    /// Type 0: subsystem vendor ID.
    pub const SUBSYSTEM_VENDOR_ID: u8 = 0x2c;
    /// Type 0: subsystem ID.
    pub const SUBSYSTEM_ID: u8 = 0x2e;
    /// Interrupt line (what the firmware routed INTx to on the 8259).
    pub const INTERRUPT_LINE: u8 = 0x3c;
    /// Interrupt pin (0 = none, 1..=4 = INTA..INTD).
    pub const INTERRUPT_PIN: u8 = 0x3d;
}

/// One PCI function as found at enumeration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    /// Bus, device, function.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Command register at enumeration.
    pub command: u16,
    /// Status register at enumeration.
    pub status: u16,
    /// Base class code.
    pub class: u8,
    /// Subclass code.
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
    /// Revision ID.
    pub revision: u8,
    /// Header layout.
    pub header_type: HeaderType,
    /// Whether function 0 of this device said it has more functions.
    pub multifunction: bool,
    /// Subsystem vendor and ID (type 0 headers).
    pub subsystem: Option<(u16, u16)>,
    /// Interrupt line (legacy PIC IRQ the firmware routed, 0xff = none).
    pub interrupt_line: u8,
    /// Interrupt pin: 0 none, 1..=4 INTA#..INTD#.
    pub interrupt_pin: u8,
    /// Decoded BARs, by register index (the upper half of a 64-bit BAR is `None`).
    pub bars: [Option<Bar>; 6],
    /// Secondary bus number (PCI-to-PCI bridges).
    pub secondary_bus: Option<u8>,
    /// The capability list.
    pub capabilities: Capabilities,
    /// Virtio structure capabilities (vendor 0x1af4 only; empty for a legacy-only device).
    pub virtio: VirtioCaps,
}

/// The virtio PCI vendor ID.
pub const VIRTIO_VENDOR_ID: u16 = 0x1af4;

impl PciDevice {
    /// Builds the description from a configuration-space copy (header and capability bytes
    /// filled in, the rest zero) and the BARs the scanner sized.
    pub fn from_config(address: PciAddress, config: &[u8; 256], bars: [Option<Bar>; 6]) -> Self {
        let u16_at = |at: u8| u16::from_le_bytes([config[at as usize], config[at as usize + 1]]);
        let header_byte = config[offset::HEADER_TYPE as usize];
        let header_type = HeaderType::from_byte(header_byte);
        let vendor_id = u16_at(offset::VENDOR_ID);
        let capabilities = match header_type {
            HeaderType::General | HeaderType::PciBridge => caps::parse(config),
            _ => Capabilities::new(),
        };
        let virtio = if vendor_id == VIRTIO_VENDOR_ID {
            caps::parse_virtio(config, &capabilities)
        } else {
            VirtioCaps::new()
        };
        PciDevice {
            address,
            vendor_id,
            device_id: u16_at(offset::DEVICE_ID),
            command: u16_at(offset::COMMAND),
            status: u16_at(offset::STATUS),
            class: config[offset::CLASS as usize],
            subclass: config[offset::SUBCLASS as usize],
            prog_if: config[offset::PROG_IF as usize],
            revision: config[offset::REVISION as usize],
            header_type,
            multifunction: header_byte & 0x80 != 0,
            subsystem: (header_type == HeaderType::General).then(|| {
                (
                    u16_at(offset::SUBSYSTEM_VENDOR_ID),
                    u16_at(offset::SUBSYSTEM_ID),
                )
            }),
            interrupt_line: config[offset::INTERRUPT_LINE as usize],
            interrupt_pin: config[offset::INTERRUPT_PIN as usize],
            bars,
            secondary_bus: (header_type == HeaderType::PciBridge)
                .then(|| config[offset::SECONDARY_BUS as usize]),
            capabilities,
            virtio,
        }
    }

    /// The BAR at register `index`, if implemented.
    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars.get(index).copied().flatten()
    }

    /// A known short name for the device ("e1000", "virtio-net", "q35", ...).
    pub fn name(&self) -> Option<&'static str> {
        class::device_name(self.vendor_id, self.device_id)
    }

    /// A multi-line description (BARs, interrupt, capabilities), each line indented by two
    /// spaces and ending in a newline; for `pci -v`-style listings.
    pub fn details(&self) -> Details<'_> {
        Details(self)
    }
}

/// One line: `00:03.0 8086:100e network (ethernet) e1000`.
impl fmt::Display for PciDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} ",
            self.address, self.vendor_id, self.device_id
        )?;
        match class::class_name(self.class) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "class {:#04x}", self.class)?,
        }
        match class::subclass_name(self.class, self.subclass) {
            Some(name) => write!(f, " ({name})")?,
            None => write!(f, " ({:#04x})", self.subclass)?,
        }
        if let Some(name) = self.name() {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

/// See [`PciDevice::details`].
pub struct Details<'a>(&'a PciDevice);

impl fmt::Display for Details<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(
            f,
            "  rev {:#04x}, prog-if {:#04x}, command {:#06x}",
            d.revision, d.prog_if, d.command
        )?;
        if let Some((vendor, id)) = d.subsystem {
            write!(f, ", subsystem {vendor:04x}:{id:04x}")?;
        }
        if let Some(bus) = d.secondary_bus {
            write!(f, ", secondary bus {bus:02x}")?;
        }
        f.write_str("\n")?;
        if (1..=4).contains(&d.interrupt_pin) {
            let pin = (b'A' + d.interrupt_pin - 1) as char;
            writeln!(f, "  irq: INT{pin}#, line {}", d.interrupt_line)?;
        }
        for (i, bar) in d.bars.iter().enumerate() {
            if let Some(bar) = bar {
                writeln!(f, "  bar{i}: {bar}")?;
            }
        }
        if !d.capabilities.is_empty() {
            f.write_str("  caps:")?;
            for cap in &d.capabilities {
                write!(f, " {}@{:#04x}", cap.name(), cap.offset)?;
            }
            f.write_str("\n")?;
        }
        for cap in &d.virtio {
            writeln!(f, "  virtio: {cap}")?;
        }
        Ok(())
    }
}
