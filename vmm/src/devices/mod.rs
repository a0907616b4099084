//! The guest's devices and the buses that route port and MMIO accesses to them.
//!
//! [`Devices`] owns every device model of one VM as a typed field (so the VM can reach, say,
//! the UART's output ring directly) plus a [`PioBus`] and an [`MmioBus`] that map address
//! ranges to a [`DeviceId`]. A guest access is looked up on the bus and handed to the model
//! named by the id.
//!
//! What a guest sees where nothing is mapped follows a PC with an empty ISA bus: reads return
//! all ones for the access size and writes vanish. The same holds for guest-physical addresses
//! that are neither RAM nor a device (see [`exit_handler`](crate::exit_handler)).
//!
//! Every model mapped today has byte-wide registers, like the ISA parts it imitates, so an
//! access wider than a byte is split into byte accesses at consecutive addresses (lowest
//! address in the lowest byte), the way the ISA bus and QEMU handle a 16-bit `IN` from a
//! UART. Each byte is routed on its own, so an access that straddles the end of a device's
//! range reads all ones for the unclaimed part.

use core::fmt;

use crate::bus::{MmioBus, PioBus};

pub mod acpi_pm;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod pci_host;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod uart;

pub use uart::Uart16550;

/// First port of COM1.
pub const COM1_BASE: u16 = 0x3F8;
/// Number of COM1 ports (`0x3F8..=0x3FF`).
pub const COM1_LEN: u16 = 8;
/// The POST diagnostic port. Firmware writes progress codes here and Linux writes to it as an
/// I/O delay; nothing is mapped, so writes are dropped and reads return 0xFF.
pub const POST_PORT: u16 = 0x80;

/// A device model a bus can route to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceId {
    /// The first serial port, [`Devices::com1`].
    Com1,
}

impl DeviceId {
    /// The name an operator knows the device by.
    pub fn name(self) -> &'static str {
        match self {
            DeviceId::Com1 => "COM1",
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The device models of one VM and the buses that reach them.
#[derive(Clone, Debug)]
pub struct Devices {
    /// The 16550A at `0x3F8` (the guest's console).
    pub com1: Uart16550,
    /// Port I/O routing.
    pub pio: PioBus,
    /// MMIO routing.
    pub mmio: MmioBus,
}

impl Devices {
    /// No devices: every port and MMIO address unclaimed.
    pub fn empty() -> Devices {
        Devices {
            com1: Uart16550::new(),
            pio: PioBus::new(),
            mmio: MmioBus::new(),
        }
    }

    /// The smallest PC: COM1 at `0x3F8..=0x3FF`, nothing else.
    pub fn pc_minimal() -> Devices {
        let mut devices = Devices::empty();
        devices
            .pio
            .insert(COM1_BASE, COM1_LEN, DeviceId::Com1)
            // The bus is empty, and 0x3F8..=0x3FF lies inside the port space.
            .expect("COM1 maps onto an empty port bus");
        devices
    }

    /// A guest `IN` of `size` bytes (1, 2 or 4; larger sizes are cut to 4) from `port`.
    /// Unclaimed ports read as all ones.
    pub fn read_port(&mut self, port: u16, size: u8) -> u32 {
        let mut value = 0;
        for i in 0..size.min(4) {
            let byte = match port
                .checked_add(u16::from(i))
                .and_then(|p| self.pio.lookup(p))
            {
                Some((device, offset)) => self.read_byte(device, u64::from(offset)),
                None => 0xFF,
            };
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// A guest `OUT` of the low `size` bytes (1, 2 or 4) of `value` to `port`. Writes to
    /// unclaimed ports (including [`POST_PORT`]) are dropped.
    pub fn write_port(&mut self, port: u16, size: u8, value: u32) {
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .enumerate()
            .take(usize::from(size))
        {
            // `i` < 4.
            let target = port.checked_add(i as u16).and_then(|p| self.pio.lookup(p));
            if let Some((device, offset)) = target {
                self.write_byte(device, u64::from(offset), byte);
            }
        }
    }

    /// A guest load of `size` bytes (1, 2, 4 or 8; larger sizes are cut to 8) at `gpa`.
    /// Unclaimed addresses read as all ones.
    pub fn read_mmio(&mut self, gpa: u64, size: u8) -> u64 {
        let mut value = 0;
        for i in 0..size.min(8) {
            let byte = match gpa
                .checked_add(u64::from(i))
                .and_then(|a| self.mmio.lookup(a))
            {
                Some((device, offset)) => self.read_byte(device, offset),
                None => 0xFF,
            };
            value |= u64::from(byte) << (8 * i);
        }
        value
    }

    /// A guest store of the low `size` bytes (1, 2, 4 or 8) of `value` at `gpa`. Stores to
    /// unclaimed addresses are dropped.
    pub fn write_mmio(&mut self, gpa: u64, size: u8, value: u64) {
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .enumerate()
            .take(usize::from(size))
        {
            // `i` < 8.
            let target = gpa.checked_add(i as u64).and_then(|a| self.mmio.lookup(a));
            if let Some((device, offset)) = target {
                self.write_byte(device, offset, byte);
            }
        }
    }

    fn read_byte(&mut self, device: DeviceId, offset: u64) -> u8 {
        match device {
            DeviceId::Com1 => match u8::try_from(offset) {
                Ok(offset) => self.com1.read(offset),
                Err(_) => 0xFF,
            },
        }
    }

    fn write_byte(&mut self, device: DeviceId, offset: u64, value: u8) {
        match device {
            DeviceId::Com1 => {
                if let Ok(offset) = u8::try_from(offset) {
                    self.com1.write(offset, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::uart::{LSR_DR, LSR_TEMT, LSR_THRE, reg};
    use super::*;

    #[test]
    fn pc_minimal_maps_com1() {
        let devices = Devices::pc_minimal();
        assert_eq!(
            devices.pio.iter().collect::<Vec<_>>(),
            [(0x3F8, 8, DeviceId::Com1)]
        );
        assert_eq!(devices.mmio.iter().count(), 0);
    }

    #[test]
    fn com1_output_through_port_writes() {
        let mut devices = Devices::pc_minimal();
        for b in *b"hi" {
            devices.write_port(COM1_BASE, 1, u32::from(b));
        }
        assert_eq!(devices.com1.output_since(0), (b"hi".to_vec(), 2, 0));
        assert_eq!(
            devices.read_port(COM1_BASE + u16::from(reg::LSR), 1),
            u32::from(LSR_THRE | LSR_TEMT)
        );
    }

    #[test]
    fn com1_input_through_port_reads() {
        let mut devices = Devices::pc_minimal();
        devices.com1.push_input(b"A");
        let lsr = devices.read_port(COM1_BASE + 5, 1);
        assert_eq!(lsr & u32::from(LSR_DR), u32::from(LSR_DR));
        assert_eq!(devices.read_port(COM1_BASE, 1), u32::from(b'A'));
    }

    #[test]
    fn unclaimed_ports_read_all_ones_by_size() {
        let mut devices = Devices::pc_minimal();
        assert_eq!(devices.read_port(0x60, 1), 0xFF);
        assert_eq!(devices.read_port(0x60, 2), 0xFFFF);
        assert_eq!(devices.read_port(0x60, 4), 0xFFFF_FFFF);
        assert_eq!(
            devices.read_port(0xFFFF, 4),
            0xFFFF_FFFF,
            "wraps off the end"
        );
        assert_eq!(devices.read_port(POST_PORT, 1), 0xFF);
    }

    #[test]
    fn unclaimed_port_writes_are_dropped() {
        let mut devices = Devices::pc_minimal();
        devices.write_port(POST_PORT, 1, 0x42);
        devices.write_port(0xCF8, 4, 0x8000_0000);
        devices.write_port(0xFFFF, 4, 0xFFFF_FFFF);
        assert_eq!(devices.com1.output_total(), 0);
    }

    #[test]
    fn wide_port_accesses_split_into_bytes() {
        let mut devices = Devices::pc_minimal();
        // A 16-bit write to 0x3FE writes MSR (ignored) and SCR.
        devices.write_port(COM1_BASE + 6, 2, 0xAB00);
        assert_eq!(devices.read_port(COM1_BASE + 7, 1), 0xAB);
        // A 32-bit read at SCR: SCR, then three unclaimed ports.
        assert_eq!(devices.read_port(COM1_BASE + 7, 4), 0xFFFF_FFAB);
        // A 16-bit read at 0x3F7: unclaimed port, then RBR.
        devices.com1.push_input(b"z");
        assert_eq!(
            devices.read_port(COM1_BASE - 1, 2),
            0xFF | u32::from(b'z') << 8
        );
        // Only the low `size` bytes of an OUT are written.
        devices.write_port(COM1_BASE, 1, 0xFFFF_FF21);
        assert_eq!(devices.com1.output_since(0).0, b"!");
    }

    #[test]
    fn mmio_unclaimed_reads_all_ones_and_drops_writes() {
        let mut devices = Devices::pc_minimal();
        assert_eq!(devices.read_mmio(0xFEC0_0000, 1), 0xFF);
        assert_eq!(devices.read_mmio(0xFEC0_0000, 2), 0xFFFF);
        assert_eq!(devices.read_mmio(0xFEC0_0000, 4), 0xFFFF_FFFF);
        assert_eq!(devices.read_mmio(0xFEC0_0000, 8), u64::MAX);
        assert_eq!(devices.read_mmio(u64::MAX, 8), u64::MAX);
        devices.write_mmio(0xFEC0_0000, 8, 0);
        devices.write_mmio(u64::MAX, 8, 0);
    }

    #[test]
    fn mmio_mapped_uart_works_like_the_port_one() {
        let mut devices = Devices::empty();
        devices.mmio.insert(0xFED0_0000, 8, DeviceId::Com1).unwrap();
        devices.write_mmio(0xFED0_0000, 1, u64::from(b'm'));
        assert_eq!(devices.com1.output_since(0).0, b"m");
        assert_eq!(devices.read_mmio(0xFED0_0007, 1), 0);
        // Nothing on the port bus.
        devices.write_port(COM1_BASE, 1, u32::from(b'p'));
        assert_eq!(devices.com1.output_total(), 1);
    }

    #[test]
    fn odd_sizes_never_panic() {
        let mut devices = Devices::pc_minimal();
        assert_eq!(devices.read_port(0x60, 0), 0);
        assert_eq!(devices.read_port(0x60, 3), 0xFF_FFFF);
        assert_eq!(devices.read_port(0x60, 200), 0xFFFF_FFFF);
        assert_eq!(devices.read_mmio(0, 255), u64::MAX);
        devices.write_port(COM1_BASE, 255, 0x2020_2020);
        devices.write_mmio(0, 255, 0);
        assert_eq!(
            devices.com1.output_total(),
            1,
            "THR once; the rest hit other registers"
        );
    }

    #[test]
    fn device_names() {
        assert_eq!(DeviceId::Com1.to_string(), "COM1");
    }
}

/// Why a device model refused a snapshot `State` in `restore`: a field holds a value the
/// hardware cannot be in. The model is left unchanged. Shared by every model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// A field holds an impossible value.
    Invalid {
        /// The model, e.g. `"8259 PIC"`.
        device: &'static str,
        /// The field, as named in the model's `State`.
        field: &'static str,
        /// The value found.
        value: u64,
    },
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::Invalid {
                device,
                field,
                value,
            } => {
                write!(f, "invalid {device} state: {field} = {value:#x}")
            }
        }
    }
}
