//! QEMU's `pc-testdev`: the ISA test device kvm-unit-tests' x86 tests drive (`realmode`,
//! `emulator` and `eventinj` read and write its ports; `ioapic` raises interrupts with it).
//!
//! The ports (QEMU `hw/misc/pc-testdev.c`, and the tests that use them):
//! - [`SCRATCH_PORT`] `0xE0`, 4 bytes: a 32-bit scratch register. A write of any width stores
//!   its value; a read returns what was stored (the low bytes for narrower reads). The tests
//!   check that `IN` and `OUT` of every width and the string forms move the right bytes.
//! - [`FLUSH_PORT`] `0xE4`, 4 bytes: "flush page": a write of a guest-physical address asks
//!   the host to drop its mapping of that page, so the guest's next access faults into the
//!   hypervisor (under KVM, during event delivery in `eventinj`). The guest cannot see whether
//!   that happened; the address is recorded ([`PcTestdev::flushed_pages`]) and Keel's nested
//!   page tables keep the page mapped.
//! - [`IRQ_PORT_BASE`] `0x2000` + line, one byte each for lines 0–15: a write drives ISA
//!   interrupt line `line` to `value != 0` (level; setting a line to the level it has does
//!   nothing). QEMU also decodes lines 16–23, the I/O APIC's PCI pins; in Keel those belong to
//!   the PCI functions' INTx routing, so the testdev does not claim them (kvm-unit-tests uses
//!   lines 14 and 15).
//!
//! Not part of the default PC: a VM gets it when its settings list `pc-testdev`.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::Region;
use super::device::{
    Device, DeviceContext, DeviceStateError, PortIoDevice, decode_state, encode_state,
};

/// The scratch register's port.
pub const SCRATCH_PORT: u16 = 0xE0;
/// The page-flush port.
pub const FLUSH_PORT: u16 = 0xE4;
/// Line 0's IRQ control port.
pub const IRQ_PORT_BASE: u16 = 0x2000;
/// ISA lines the IRQ ports drive.
pub const IRQ_LINES: u16 = 16;
/// The device's name.
pub const NAME: &str = "pc-testdev";

/// Where the device decodes: pass to [`Devices::add_device`](super::Devices::add_device).
pub const REGIONS: [Region; 3] = [
    Region::Ports {
        base: SCRATCH_PORT,
        len: 4,
    },
    Region::Ports {
        base: FLUSH_PORT,
        len: 4,
    },
    Region::Ports {
        base: IRQ_PORT_BASE,
        len: IRQ_LINES,
    },
];

/// The test device's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcTestdev {
    scratch: u32,
    /// The level each IRQ line is driven to, bit per line.
    irq_levels: u16,
    /// Page flushes asked for (for statistics and tests).
    flushed_pages: u64,
    /// The last page asked to be flushed.
    last_flushed: Option<u64>,
}

impl PcTestdev {
    /// The device, with everything zero.
    pub fn new() -> PcTestdev {
        PcTestdev::default()
    }

    /// The scratch register.
    pub fn scratch(&self) -> u32 {
        self.scratch
    }

    /// How many page flushes the guest asked for, and the last page.
    pub fn flushed_pages(&self) -> (u64, Option<u64>) {
        (self.flushed_pages, self.last_flushed)
    }

    /// The levels the guest drives the ISA lines to, bit per line.
    pub fn irq_levels(&self) -> u16 {
        self.irq_levels
    }
}

fn mask(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

impl PortIoDevice for PcTestdev {
    fn read_port(&mut self, port: u16, _offset: u16, size: u8, _ctx: &mut DeviceContext) -> u32 {
        match port {
            SCRATCH_PORT..=0xE3 => self.scratch & mask(size),
            _ => 0,
        }
    }

    fn write_port(
        &mut self,
        port: u16,
        _offset: u16,
        size: u8,
        value: u32,
        ctx: &mut DeviceContext,
    ) {
        match port {
            SCRATCH_PORT..=0xE3 => self.scratch = value & mask(size),
            FLUSH_PORT..=0xE7 => {
                self.flushed_pages += 1;
                self.last_flushed = Some(u64::from(value) & !0xFFF);
            }
            _ if (IRQ_PORT_BASE..IRQ_PORT_BASE + IRQ_LINES).contains(&port) => {
                let line = (port - IRQ_PORT_BASE) as u8;
                let level = value & mask(size) != 0;
                let bit = 1u16 << line;
                if level {
                    self.irq_levels |= bit;
                } else {
                    self.irq_levels &= !bit;
                }
                ctx.set_irq_level(line, level);
            }
            _ => {}
        }
    }
}

impl Device for PcTestdev {
    fn name(&self) -> &'static str {
        NAME
    }

    fn port_io(&mut self) -> Option<&mut dyn PortIoDevice> {
        Some(self)
    }

    fn save_state(&self) -> Vec<u8> {
        encode_state(self)
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        // The line levels live in the platform's interrupt state, saved with it.
        *self = decode_state(NAME, bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Devices;

    fn devices() -> Devices {
        let mut devices = Devices::pc_for_tests();
        devices.add_device(PcTestdev::new(), &REGIONS).unwrap();
        devices
    }

    #[test]
    fn scratch_register_every_width() {
        let mut d = devices();
        d.write_port(SCRATCH_PORT, 4, 0xDEAD_BEEF);
        assert_eq!(d.read_port(SCRATCH_PORT, 4), 0xDEAD_BEEF);
        assert_eq!(d.read_port(SCRATCH_PORT, 2), 0xBEEF);
        assert_eq!(d.read_port(SCRATCH_PORT, 1), 0xEF);
        d.write_port(SCRATCH_PORT, 1, 0x1234_5678);
        assert_eq!(
            d.read_port(SCRATCH_PORT, 4),
            0x78,
            "a byte write stores a byte"
        );
        d.write_port(SCRATCH_PORT, 2, 0xABCD);
        assert_eq!(d.read_port(SCRATCH_PORT, 4), 0xABCD);
        assert_eq!(d.device::<PcTestdev>().unwrap().scratch(), 0xABCD);
        // Not in the default PC.
        let mut plain = Devices::pc_for_tests();
        assert_eq!(plain.read_port(SCRATCH_PORT, 4), 0xFFFF_FFFF);
    }

    #[test]
    fn flush_records_the_page() {
        let mut d = devices();
        d.write_port(FLUSH_PORT, 4, 0x12_3456);
        d.write_port(FLUSH_PORT, 4, 0x40_1FFF);
        assert_eq!(
            d.device::<PcTestdev>().unwrap().flushed_pages(),
            (2, Some(0x40_1000))
        );
        assert_eq!(d.read_port(FLUSH_PORT, 4), 0);
    }

    #[test]
    fn irq_lines_drive_the_pic() {
        let mut d = devices();
        // Unmask IRQ 14 on the slave PIC after a standard init; the master's cascade too.
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xA0, 0x11),
            (0xA1, 0x28),
            (0xA1, 0x02),
            (0xA1, 0x01),
            (0x21, 0xFB),
            (0xA1, 0xBF),
        ] {
            d.write_port(port, 1, value);
        }
        d.write_port(IRQ_PORT_BASE + 14, 1, 1);
        assert_eq!(d.device::<PcTestdev>().unwrap().irq_levels(), 1 << 14);
        assert_eq!(
            d.pic().pending_vector(),
            Some(0x2E),
            "IRQ 14 → vector 0x28 + 6"
        );
        d.write_port(IRQ_PORT_BASE + 14, 1, 0);
        assert_eq!(d.device::<PcTestdev>().unwrap().irq_levels(), 0);
        // Lines 16-23 are not the testdev's.
        assert_eq!(d.read_port(IRQ_PORT_BASE + 16, 1), 0xFF);
    }

    #[test]
    fn state_round_trips() {
        let mut d = devices();
        d.write_port(SCRATCH_PORT, 4, 7);
        d.write_port(FLUSH_PORT, 4, 0x5000);
        let bytes = d.device::<PcTestdev>().unwrap().save_state();
        let mut other = PcTestdev::new();
        other.restore_state(&bytes).unwrap();
        assert_eq!(&other, d.device::<PcTestdev>().unwrap());
        assert!(other.restore_state(&[0xFF; 3]).is_err());
    }
}
