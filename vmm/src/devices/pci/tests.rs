//! PCI bus 0 end to end through the guest's ports and MMIO: a test function is found by a
//! configuration-mechanism-#1 scan, sized, placed, moved and made to signal MSI-X and MSI.

use alloc::vec::Vec;

use super::config::{COMMAND_IO, COMMAND_MEMORY, MSI_ENABLE, MSIX_ENABLE, MSIX_FUNCTION_MASK, reg};
use super::*;
use crate::devices::device::{DeviceContext, decode_state, encode_state};
use crate::devices::interrupts::InterruptSource;

/// A function with a 16 KiB 64-bit memory BAR 0 (four registers at 0, a "notify" register at
/// 0x10, the MSI-X table at 0x2000 and PBA at 0x3000), a 16-port I/O BAR 2 and a 4 KiB
/// 32-bit memory BAR 4; four MSI-X vectors and an MSI capability.
pub(crate) struct TestFunction {
    config: PciConfigSpace,
    regs: [u32; 4],
}

pub(crate) const VENDOR: u16 = 0x1234;
pub(crate) const DEVICE: u16 = 0x5678;
/// Writing `n` here signals vector `n`.
pub(crate) const NOTIFY: u64 = 0x10;
/// Writing non-zero here asserts INTx, zero deasserts it.
pub(crate) const INTX: u64 = 0x14;

impl TestFunction {
    pub(crate) fn new() -> TestFunction {
        let mut config = PciConfigSpace::new(PciIds {
            vendor: VENDOR,
            device: DEVICE,
            revision: 1,
            class: 0xFF_0000,
            subsystem_vendor: 0x1AF4,
            subsystem: 0x0042,
        });
        config
            .set_bar(
                0,
                BarKind::Memory64 {
                    size: 0x4000,
                    prefetchable: false,
                },
            )
            .unwrap();
        config.set_bar(2, BarKind::Io { size: 16 }).unwrap();
        config
            .set_bar(
                4,
                BarKind::Memory32 {
                    size: 0x1000,
                    prefetchable: true,
                },
            )
            .unwrap();
        config.add_msix(4, 0, 0x2000, 0, 0x3000).unwrap();
        config.add_msi().unwrap();
        TestFunction {
            config,
            regs: [0; 4],
        }
    }
}

impl PciDevice for TestFunction {
    fn name(&self) -> &'static str {
        "test function"
    }

    fn config(&self) -> &PciConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }

    fn read_bar(&mut self, bar: u8, offset: u64, _size: u8, _ctx: &mut DeviceContext) -> u64 {
        match (bar, offset) {
            (0 | 4, 0..=15) => u64::from(self.regs[(offset / 4) as usize]),
            (2, port) => 0xA0 + port,
            _ => 0,
        }
    }

    fn write_bar(&mut self, bar: u8, offset: u64, _size: u8, value: u64, ctx: &mut DeviceContext) {
        match (bar, offset) {
            (0, NOTIFY) => {
                self.config.msix_notify(value as u16, ctx);
            }
            (0, INTX) => self.config.set_intx(value != 0, ctx),
            (0 | 4, 0..=15) => self.regs[(offset / 4) as usize] = value as u32,
            _ => {}
        }
    }

    fn save_state(&self) -> Vec<u8> {
        encode_state(&self.regs)
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        self.regs = decode_state("test function", bytes)?;
        Ok(())
    }
}

fn address(devfn: u8, offset: u8) -> u32 {
    ADDRESS_ENABLE | u32::from(devfn) << 8 | u32::from(offset & 0xFC)
}

pub(crate) fn cfg_read(d: &mut Devices, devfn: u8, offset: u8, size: u8) -> u32 {
    d.write_port(0xCF8, 4, address(devfn, offset));
    d.read_port(0xCFC + u16::from(offset & 3), size)
}

pub(crate) fn cfg_write(d: &mut Devices, devfn: u8, offset: u8, size: u8, value: u32) {
    d.write_port(0xCF8, 4, address(devfn, offset));
    d.write_port(0xCFC + u16::from(offset & 3), size, value);
}

/// A PC with the test function registered (one line) at 00:01.0.
fn pc_with_function() -> Devices {
    let mut d = Devices::pc_for_tests();
    assert_eq!(d.add_pci_device(TestFunction::new()), Ok(1));
    d
}

/// The test function at `bar0` (64-bit) with memory and I/O decoding on and the I/O BAR at
/// `0xC000`.
pub(crate) fn place(d: &mut Devices, bar0: u64) {
    let devfn = 1 << 3;
    cfg_write(d, devfn, reg::BAR0, 4, bar0 as u32);
    cfg_write(d, devfn, reg::BAR0 + 4, 4, (bar0 >> 32) as u32);
    cfg_write(d, devfn, reg::BAR0 + 8, 4, 0xC000);
    cfg_write(
        d,
        devfn,
        reg::COMMAND,
        2,
        u32::from(COMMAND_MEMORY | COMMAND_IO),
    );
}

#[test]
fn a_scan_of_bus_0_finds_the_bridge_and_the_function() {
    let mut d = pc_with_function();
    let found: Vec<(u8, u32)> = (0..32u8)
        .map(|dev| (dev, cfg_read(&mut d, dev << 3, 0, 4)))
        .filter(|&(_, id)| id != 0xFFFF_FFFF)
        .collect();
    assert_eq!(found, [(0, 0x1237_8086), (1, 0x5678_1234)]);
    let f = 1 << 3;
    assert_eq!(cfg_read(&mut d, f, reg::REVISION, 4), 0xFF00_0001);
    assert_eq!(cfg_read(&mut d, f, reg::HEADER_TYPE, 1), 0);
    assert_eq!(
        cfg_read(&mut d, f, reg::SUBSYSTEM_VENDOR_ID, 4),
        0x0042_1AF4
    );
    assert_eq!(cfg_read(&mut d, f, reg::SUBSYSTEM_ID, 2), 0x0042);
    // Other functions of the device and other buses: nothing.
    assert_eq!(cfg_read(&mut d, f | 1, 0, 4), 0xFFFF_FFFF);
    d.write_port(0xCF8, 4, ADDRESS_ENABLE | 1 << 16 | 1 << 11);
    assert_eq!(d.read_port(0xCFC, 4), 0xFFFF_FFFF);
    // Byte lanes of CONFIG_DATA, and bytes past 0xCFF.
    d.write_port(0xCF8, 4, address(f, 0));
    assert_eq!(d.read_port(0xCFE, 2), 0x5678);
    assert_eq!(d.read_port(0xCFF, 2), 0xFF56);
    // The capability list: MSI-X, then MSI.
    assert_ne!(
        cfg_read(&mut d, f, reg::STATUS, 2) & 0x10,
        0,
        "capability list"
    );
    let first = cfg_read(&mut d, f, reg::CAPABILITIES, 1) as u8;
    assert_eq!(cfg_read(&mut d, f, first, 1), 0x11);
    assert_eq!(cfg_read(&mut d, f, first + 2, 2), 3, "four vectors");
    assert_eq!(cfg_read(&mut d, f, first + 4, 4), 0x2000, "table in BAR 0");
    assert_eq!(cfg_read(&mut d, f, first + 8, 4), 0x3000, "PBA in BAR 0");
    let second = cfg_read(&mut d, f, first + 1, 1) as u8;
    assert_eq!(cfg_read(&mut d, f, second, 1), 0x05);
    assert_eq!(cfg_read(&mut d, f, second + 1, 1), 0, "end of list");
    // Read-only registers ignore writes.
    cfg_write(&mut d, f, 0, 4, 0);
    assert_eq!(cfg_read(&mut d, f, 0, 4), 0x5678_1234);
}

#[test]
fn bar_sizing_reads_back_the_size_masks() {
    let mut d = pc_with_function();
    let f = 1 << 3;
    for bar in 0..6u8 {
        cfg_write(&mut d, f, reg::BAR0 + 4 * bar, 4, 0xFFFF_FFFF);
    }
    let sizes: Vec<u32> = (0..6u8)
        .map(|bar| cfg_read(&mut d, f, reg::BAR0 + 4 * bar, 4))
        .collect();
    assert_eq!(
        sizes,
        [
            0xFFFF_C004, // 16 KiB, 64-bit, non-prefetchable
            0xFFFF_FFFF, // its upper half
            0x0000_FFF1, // 16 ports, I/O
            0,
            0xFFFF_F008, // 4 KiB, 32-bit, prefetchable
            0,
        ]
    );
    // Restoring the addresses: nothing was decoded meanwhile (decoding is off).
    assert_eq!(d.mmio().iter().count(), 2, "only the APICs");
}

#[test]
fn programmed_bars_appear_move_and_disappear() {
    let mut d = pc_with_function();
    let f = 1 << 3;
    cfg_write(&mut d, f, reg::BAR0, 4, 0xE000_0000);
    cfg_write(&mut d, f, reg::BAR0 + 4, 4, 0);
    // Decoding still off: nothing there.
    d.write_mmio(0xE000_0004, 4, 0x1234_5678);
    assert_eq!(d.read_mmio(0xE000_0004, 4), 0xFFFF_FFFF);
    place(&mut d, 0xE000_0000);
    d.write_mmio(0xE000_0004, 4, 0x1234_5678);
    assert_eq!(d.read_mmio(0xE000_0004, 4), 0x1234_5678);
    assert_eq!(d.read_port(0xC003, 1), 0xA3, "the I/O BAR");
    let bar = d
        .mmio()
        .iter()
        .find(|m| m.base == 0xE000_0000)
        .map(|m| (m.len, m.target, m.name));
    assert_eq!(
        bar,
        Some((
            0x4000,
            Target::PciBar {
                function: 0,
                bar: 0
            },
            "test function"
        ))
    );

    // Moved (above 4 GiB: the upper half counts): the old range is gone.
    cfg_write(&mut d, f, reg::BAR0 + 4, 4, 0x1);
    assert_eq!(d.read_mmio(0xE000_0004, 4), 0xFFFF_FFFF);
    assert_eq!(d.read_mmio(0x1_E000_0004, 4), 0x1234_5678);
    // Memory decoding off: unmapped; the I/O BAR stays.
    cfg_write(&mut d, f, reg::COMMAND, 2, u32::from(COMMAND_IO));
    assert_eq!(d.read_mmio(0x1_E000_0004, 4), 0xFFFF_FFFF);
    assert_eq!(d.read_port(0xC000, 1), 0xA0);
    cfg_write(&mut d, f, reg::COMMAND, 2, 0);
    assert_eq!(d.read_port(0xC000, 1), 0xFF);
    assert_eq!(d.mmio().iter().count(), 2);
    assert_eq!(
        d.pio().iter().filter(|m| m.name == "test function").count(),
        0
    );

    // A BAR placed over the local APIC stays unmapped and the APIC keeps answering.
    cfg_write(&mut d, f, reg::BAR0 + 4, 4, 0);
    cfg_write(&mut d, f, reg::BAR0, 4, 0xFEE0_0000);
    cfg_write(&mut d, f, reg::COMMAND, 2, u32::from(COMMAND_MEMORY));
    assert_eq!(
        d.read_mmio(0xFEE0_0030, 4),
        u64::from(crate::devices::lapic::VERSION_VALUE)
    );
}

/// Programs MSI-X vector `vector` to send `data` to APIC id 0 (physical, fixed) and unmasks
/// it, through the table in BAR 0 at `bar0`.
fn program_vector(d: &mut Devices, bar0: u64, vector: u64, data: u32, masked: bool) {
    let entry = bar0 + 0x2000 + 16 * vector;
    d.write_mmio(entry, 4, 0xFEE0_0000);
    d.write_mmio(entry + 4, 4, 0);
    d.write_mmio(entry + 8, 4, u64::from(data));
    d.write_mmio(entry + 12, 4, u64::from(masked));
}

fn msix_control(d: &mut Devices, value: u16) {
    let f = 1 << 3;
    let cap = cfg_read(d, f, reg::CAPABILITIES, 1) as u8;
    cfg_write(d, f, cap + 2, 2, u32::from(value));
}

#[test]
fn msix_vectors_reach_the_local_apic() {
    let mut d = pc_with_function();
    let bar0 = 0xE000_0000;
    place(&mut d, bar0);
    program_vector(&mut d, bar0, 2, 0x45, false);
    // The table reads back (vector control: only the mask bit sticks).
    assert_eq!(d.read_mmio(bar0 + 0x2000 + 32 + 8, 4), 0x45);
    d.write_mmio(bar0 + 0x2000 + 32 + 12, 4, 0xFFFF_FFFE);
    assert_eq!(d.read_mmio(bar0 + 0x2000 + 32 + 12, 4), 0);
    // MSI-X off: a notify sends nothing (and MSI is off too).
    d.write_mmio(bar0 + NOTIFY, 4, 2);
    assert_eq!(d.pending_interrupt(0), None);
    msix_control(&mut d, MSIX_ENABLE);
    d.write_mmio(bar0 + NOTIFY, 4, 2);
    assert_eq!(d.pending_interrupt(0), Some(InterruptSource::Lapic(0x45)));
    assert_eq!(d.acknowledge_interrupt(0), Some(0x45));
}

#[test]
fn masked_msix_vectors_wait_in_the_pba_until_unmasked() {
    let mut d = pc_with_function();
    let bar0 = 0xE000_0000;
    place(&mut d, bar0);
    msix_control(&mut d, MSIX_ENABLE);
    program_vector(&mut d, bar0, 1, 0x51, true);
    d.write_mmio(bar0 + NOTIFY, 4, 1);
    assert_eq!(d.pending_interrupt(0), None);
    assert_eq!(d.read_mmio(bar0 + 0x3000, 8), 0b10, "pending bit");
    d.write_mmio(bar0 + 0x3000, 8, 0);
    assert_eq!(d.read_mmio(bar0 + 0x3000, 8), 0b10, "the PBA is read-only");
    // Unmasking the vector sends it and clears the bit.
    d.write_mmio(bar0 + 0x2000 + 16 + 12, 4, 0);
    assert_eq!(d.pending_interrupt(0), Some(InterruptSource::Lapic(0x51)));
    assert_eq!(d.read_mmio(bar0 + 0x3000, 8), 0);
    d.acknowledge_interrupt(0);
    d.write_mmio(crate::devices::lapic::DEFAULT_BASE + 0xB0, 4, 0); // EOI

    // The function mask holds every vector back the same way.
    msix_control(&mut d, MSIX_ENABLE | MSIX_FUNCTION_MASK);
    d.write_mmio(bar0 + NOTIFY, 4, 1);
    assert_eq!(d.pending_interrupt(0), None);
    assert!(
        d.pci_device::<TestFunction>(1, 0)
            .unwrap()
            .config()
            .msix_pending(1)
    );
    msix_control(&mut d, MSIX_ENABLE);
    assert_eq!(d.pending_interrupt(0), Some(InterruptSource::Lapic(0x51)));
}

#[test]
fn msi_without_msix() {
    let mut d = pc_with_function();
    let bar0 = 0xE000_0000;
    place(&mut d, bar0);
    let f = 1 << 3;
    let msix = cfg_read(&mut d, f, reg::CAPABILITIES, 1) as u8;
    let msi = cfg_read(&mut d, f, msix + 1, 1) as u8;
    cfg_write(&mut d, f, msi + 4, 4, 0xFEE0_0000);
    cfg_write(&mut d, f, msi + 8, 4, 0);
    cfg_write(&mut d, f, msi + 12, 2, 0x62);
    d.write_mmio(bar0 + NOTIFY, 4, 0);
    assert_eq!(d.pending_interrupt(0), None, "MSI off");
    cfg_write(&mut d, f, msi + 2, 2, u32::from(MSI_ENABLE));
    assert_eq!(
        cfg_read(&mut d, f, msi + 2, 2),
        u32::from(MSI_ENABLE | 0x80)
    );
    d.write_mmio(bar0 + NOTIFY, 4, 0);
    assert_eq!(d.pending_interrupt(0), Some(InterruptSource::Lapic(0x62)));
}

#[test]
fn slots_and_layout_errors() {
    let mut d = pc_with_function();
    assert_eq!(
        d.add_pci_device_at(1, 0, TestFunction::new()),
        Err(PciError::SlotInUse {
            device: 1,
            function: 0
        })
    );
    assert_eq!(
        d.add_pci_device_at(0, 0, TestFunction::new()),
        Err(PciError::SlotInUse {
            device: 0,
            function: 0
        }),
        "00:00.0 is the host bridge"
    );
    assert!(d.add_pci_device_at(32, 0, TestFunction::new()).is_err());
    assert_eq!(d.add_pci_device(TestFunction::new()), Ok(2));
    assert_eq!(
        PciError::BusFull.to_string(),
        "PCI bus 0 has no free device number left"
    );

    let ids = PciIds {
        vendor: 1,
        device: 2,
        revision: 0,
        class: 0,
        subsystem_vendor: 0,
        subsystem: 0,
    };
    let mut c = PciConfigSpace::new(ids);
    assert_eq!(
        c.set_bar(
            5,
            BarKind::Memory64 {
                size: 16,
                prefetchable: false
            }
        ),
        Err(config::PciConfigError::BarIndex(5))
    );
    assert_eq!(
        c.set_bar(
            0,
            BarKind::Memory32 {
                size: 24,
                prefetchable: false
            }
        ),
        Err(config::PciConfigError::BarSize(24))
    );
    c.set_bar(
        0,
        BarKind::Memory64 {
            size: 0x1000,
            prefetchable: false,
        },
    )
    .unwrap();
    assert_eq!(
        c.set_bar(1, BarKind::Io { size: 4 }),
        Err(config::PciConfigError::BarInUse(1))
    );
    assert_eq!(
        c.add_msix(512, 0, 0, 0, 0x800),
        Err(config::PciConfigError::MsixLayout),
        "8 KiB of table does not fit a 4 KiB BAR"
    );
    c.add_msix(8, 0, 0, 0, 0x800).unwrap();
    assert_eq!(
        c.add_msix(8, 0, 0, 0, 0x800),
        Err(config::PciConfigError::DuplicateCapability(0x11))
    );
    // Capability space runs out at 256 bytes.
    let body = [0u8; 58];
    let mut added = 0;
    while c.add_capability(0x09, &body, &[]).is_ok() {
        added += 1;
    }
    // MSI-X ends at 0x4C; three 60-byte capabilities fill the space to 0x100 exactly.
    assert_eq!(added, 3);
}

#[test]
fn a_preassigned_bar_is_mapped_at_registration() {
    let mut f = TestFunction::new();
    f.config.set_bar_address(4, 0xD000_0000);
    f.config.set_command(COMMAND_MEMORY);
    let mut d = Devices::pc_for_tests();
    d.add_pci_device(f).unwrap();
    d.write_mmio(0xD000_0008, 4, 7);
    assert_eq!(d.read_mmio(0xD000_0008, 4), 7);
}

/// Programs I/O APIC entry `gsi` as a guest does for a `_PRT` GSI: level-triggered, active
/// low, fixed delivery of `vector` to APIC 0, unmasked; and software-enables that APIC.
fn route_gsi(d: &mut Devices, gsi: u8, vector: u8) {
    use crate::devices::ioapic::{
        DEFAULT_BASE, IOREGSEL, IOWIN, RTE_POLARITY_LOW, RTE_TRIGGER_LEVEL,
    };
    use crate::devices::lapic::DEFAULT_BASE as APIC;
    d.write_mmio(APIC + 0xF0, 4, 0x1FF);
    d.write_mmio(DEFAULT_BASE + IOREGSEL, 4, 0x10 + 2 * u64::from(gsi));
    d.write_mmio(
        DEFAULT_BASE + IOWIN,
        4,
        u64::from(vector) | RTE_TRIGGER_LEVEL | RTE_POLARITY_LOW,
    );
}

/// Whether I/O APIC pin `gsi` is asserted.
fn gsi_asserted(d: &Devices, gsi: u8) -> bool {
    d.irq.ioapic.state().lines & (1 << gsi) != 0
}

#[test]
fn intx_is_wired_by_the_swizzle_and_reaches_the_io_apic_as_a_level() {
    let mut d = pc_with_function();
    let bar0 = 0xE000_0000;
    place(&mut d, bar0);
    // 00:01.0 INTA# -> GSI 16 + (1 + 1 - 1) % 8 = 17.
    assert_eq!(intx_gsi(1, 1), 17);
    assert_eq!(cfg_read(&mut d, 1 << 3, reg::INTERRUPT_PIN, 1), 1);
    assert_eq!(cfg_read(&mut d, 1 << 3, reg::INTERRUPT_LINE, 1), 17);
    route_gsi(&mut d, 17, 0x61);
    d.write_mmio(bar0 + INTX, 4, 1);
    assert!(gsi_asserted(&d, 17));
    // Status bit 3 shows the device's request.
    assert_ne!(cfg_read(&mut d, 1 << 3, reg::STATUS, 2) & 0x8, 0);
    assert_eq!(d.pending_interrupt(0), Some(InterruptSource::Lapic(0x61)));
    assert_eq!(d.acknowledge_interrupt(0), Some(0x61));
    // Still asserted at the EOI: the level entry sends again.
    d.write_mmio(crate::devices::lapic::DEFAULT_BASE + 0xB0, 4, 0);
    assert_eq!(d.pending_interrupt(0), Some(InterruptSource::Lapic(0x61)));
    assert_eq!(d.acknowledge_interrupt(0), Some(0x61));
    // Deasserted before the EOI: nothing more.
    d.write_mmio(bar0 + INTX, 4, 0);
    assert!(!gsi_asserted(&d, 17));
    d.write_mmio(crate::devices::lapic::DEFAULT_BASE + 0xB0, 4, 0);
    assert_eq!(d.pending_interrupt(0), None);
    assert_eq!(cfg_read(&mut d, 1 << 3, reg::STATUS, 2) & 0x8, 0);
    // The ISA lines and the 8259 never saw it.
    assert!(!d.irq.pic.interrupt_output());
}

#[test]
fn intx_disable_and_msi_x_mask_the_line() {
    let mut d = pc_with_function();
    let bar0 = 0xE000_0000;
    place(&mut d, bar0);
    let decode = u32::from(COMMAND_MEMORY | COMMAND_IO);
    d.write_mmio(bar0 + INTX, 4, 1);
    assert!(gsi_asserted(&d, 17));
    cfg_write(
        &mut d,
        1 << 3,
        reg::COMMAND,
        2,
        decode | u32::from(super::config::COMMAND_INTX_DISABLE),
    );
    assert!(!gsi_asserted(&d, 17), "INTx disable deasserts the line");
    // The device still asks; the status bit says so.
    assert_ne!(cfg_read(&mut d, 1 << 3, reg::STATUS, 2) & 0x8, 0);
    cfg_write(&mut d, 1 << 3, reg::COMMAND, 2, decode);
    assert!(
        gsi_asserted(&d, 17),
        "clearing INTx disable asserts it again"
    );
    msix_control(&mut d, MSIX_ENABLE);
    assert!(!gsi_asserted(&d, 17), "MSI-X on: no INTx");
    msix_control(&mut d, 0);
    assert!(gsi_asserted(&d, 17));
    d.write_mmio(bar0 + INTX, 4, 0);
    assert!(!gsi_asserted(&d, 17));
}

#[test]
fn functions_sharing_a_gsi_are_or_ed() {
    let mut d = pc_with_function();
    // 00:09.0 INTA# swizzles onto GSI 17 as 00:01.0 does.
    d.add_pci_device_at(9, 0, TestFunction::new()).unwrap();
    assert_eq!(cfg_read(&mut d, 9 << 3, reg::INTERRUPT_LINE, 1), 17);
    let (a, b) = (0xE000_0000u64, 0xE100_0000u64);
    place(&mut d, a);
    cfg_write(&mut d, 9 << 3, reg::BAR0, 4, b as u32);
    cfg_write(&mut d, 9 << 3, reg::COMMAND, 2, u32::from(COMMAND_MEMORY));
    route_gsi(&mut d, 17, 0x62);
    d.write_mmio(a + INTX, 4, 1);
    d.write_mmio(b + INTX, 4, 1);
    assert_eq!(d.acknowledge_interrupt(0), Some(0x62));
    // One lets go: the line stays up, and the EOI re-sends for the other.
    d.write_mmio(a + INTX, 4, 0);
    assert!(gsi_asserted(&d, 17));
    d.write_mmio(crate::devices::lapic::DEFAULT_BASE + 0xB0, 4, 0);
    assert_eq!(d.acknowledge_interrupt(0), Some(0x62));
    // Asserting again while already up is no new event; the last one lets go: down.
    d.write_mmio(b + INTX, 4, 1);
    d.write_mmio(b + INTX, 4, 0);
    assert!(!gsi_asserted(&d, 17));
    // A function on another GSI does not touch 17.
    d.add_pci_device_at(2, 0, TestFunction::new()).unwrap();
    assert_eq!(cfg_read(&mut d, 2 << 3, reg::INTERRUPT_LINE, 1), 18);
}

#[test]
fn a_restore_keeps_an_asserted_intx_line_and_its_sharers() {
    use crate::persist::Persist;
    let mut d = pc_with_function();
    d.add_pci_device_at(9, 0, TestFunction::new()).unwrap();
    let (a, b) = (0xE000_0000u64, 0xE100_0000u64);
    place(&mut d, a);
    cfg_write(&mut d, 9 << 3, reg::BAR0, 4, b as u32);
    cfg_write(&mut d, 9 << 3, reg::COMMAND, 2, u32::from(COMMAND_MEMORY));
    d.write_mmio(a + INTX, 4, 1);
    d.write_mmio(b + INTX, 4, 1);
    let saved = d.save();
    let mut fresh = Devices::pc_for_tests();
    fresh.add_pci_device(TestFunction::new()).unwrap();
    fresh.add_pci_device_at(9, 0, TestFunction::new()).unwrap();
    let mut r = <Devices as Persist>::restore(fresh, &saved).unwrap();
    assert!(gsi_asserted(&r, 17));
    r.write_mmio(a + INTX, 4, 0);
    assert!(
        gsi_asserted(&r, 17),
        "00:09.0 still holds the line after the restore"
    );
    r.write_mmio(b + INTX, 4, 0);
    assert!(!gsi_asserted(&r, 17));
}

/// A function with one BAR of each kind and size given, nothing else.
struct BarsOnly {
    config: PciConfigSpace,
}

impl BarsOnly {
    fn new(bars: &[(u8, BarKind)]) -> BarsOnly {
        let mut config = PciConfigSpace::new(PciIds {
            vendor: VENDOR,
            device: 0x0001,
            revision: 0,
            class: 0xFF_0000,
            subsystem_vendor: 0,
            subsystem: 0,
        });
        for &(index, kind) in bars {
            config.set_bar(index, kind).unwrap();
        }
        BarsOnly { config }
    }
}

impl PciDevice for BarsOnly {
    fn name(&self) -> &'static str {
        "bars only"
    }
    fn config(&self) -> &PciConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }
    fn read_bar(&mut self, bar: u8, offset: u64, _size: u8, _ctx: &mut DeviceContext) -> u64 {
        0xB000 + u64::from(bar) * 0x100 + offset
    }
    fn write_bar(&mut self, _: u8, _: u64, _: u8, _: u64, _: &mut DeviceContext) {}
}

/// Reads BAR `bar` of `devfn` through configuration space (both dwords of a 64-bit one).
fn bar_address(d: &mut Devices, devfn: u8, bar: u8, wide: bool) -> u64 {
    let low = cfg_read(d, devfn, reg::BAR0 + 4 * bar, 4);
    let high = if wide {
        cfg_read(d, devfn, reg::BAR0 + 4 * bar + 4, 4)
    } else {
        0
    };
    let mask = if low & 1 != 0 { !3 } else { !0xF };
    u64::from(low & mask) | u64::from(high) << 32
}

#[test]
fn assigned_bars_are_aligned_disjoint_decoded_and_mapped() {
    let mut d = pc_with_function();
    let small = BarKind::Memory32 {
        size: 0x100,
        prefetchable: false,
    };
    let huge = BarKind::Memory64 {
        size: 0x1000_0000,
        prefetchable: true,
    };
    d.add_pci_device(BarsOnly::new(&[
        (0, small),
        (1, BarKind::Io { size: 0x40 }),
        (2, huge),
    ]))
    .unwrap();
    d.add_pci_device(BarsOnly::new(&[(0, BarKind::Io { size: 4 }), (3, small)]))
        .unwrap();
    d.assign_pci_bars().unwrap();
    // (devfn, bar, 64-bit, size, is I/O)
    let expected = [
        (1 << 3, 0, true, 0x4000, false),
        (1 << 3, 2, false, 16, true),
        (1 << 3, 4, false, 0x1000, false),
        (2 << 3, 0, false, 0x100, false),
        (2 << 3, 1, false, 0x40, true),
        (2 << 3, 2, true, 0x1000_0000, false),
        (3 << 3, 0, false, 4, true),
        (3 << 3, 3, false, 0x100, false),
    ];
    let mut ranges = Vec::new();
    for (devfn, bar, wide, size, io) in expected {
        let base = bar_address(&mut d, devfn, bar, wide);
        let window = if io { &IO_WINDOW } else { &MMIO_WINDOW };
        assert!(
            base != 0 && base.is_multiple_of(size),
            "{devfn:#x} BAR {bar} at {base:#x}"
        );
        assert!(window.contains(&base) && base + size <= window.end);
        ranges.push((io, base, base + size));
        let command = cfg_read(&mut d, devfn, reg::COMMAND, 2) as u16;
        let decode = if io { COMMAND_IO } else { COMMAND_MEMORY };
        assert_ne!(command & decode, 0, "{devfn:#x} decodes");
    }
    ranges.sort();
    for pair in ranges.windows(2) {
        assert!(
            pair[0].0 != pair[1].0 || pair[0].2 <= pair[1].1,
            "{pair:?} overlap"
        );
    }
    // Mapped: the models answer at their addresses.
    let big = bar_address(&mut d, 2 << 3, 2, true);
    assert_eq!(d.read_mmio(big + 8, 4), 0xB000 + 0x200 + 8);
    let io = bar_address(&mut d, 3 << 3, 0, false) as u16;
    assert_eq!(d.read_port(io + 1, 1), 0xB001);
    let regs = bar_address(&mut d, 1 << 3, 0, true);
    d.write_mmio(regs + 4, 4, 0x77);
    assert_eq!(d.read_mmio(regs + 4, 4), 0x77);
    // Placing again gives the same layout (deterministic) and still maps.
    d.assign_pci_bars().unwrap();
    assert_eq!(bar_address(&mut d, 2 << 3, 2, true), big);
    assert_eq!(d.read_mmio(big + 8, 4), 0xB000 + 0x200 + 8);
}

#[test]
fn bars_beyond_the_window_are_refused_with_what_is_missing() {
    let mut d = Devices::pc_for_tests();
    let two_gib = BarKind::Memory64 {
        size: 1 << 31,
        prefetchable: true,
    };
    d.add_pci_device(BarsOnly::new(&[(0, two_gib)])).unwrap();
    let err = d.assign_pci_bars().unwrap_err();
    assert_eq!(
        err,
        PciError::WindowFull {
            space: BarSpace::Memory,
            size: 1 << 31,
        }
    );
    assert!(
        err.to_string().contains("fewer or smaller devices"),
        "{err}"
    );
    // Nothing was placed.
    assert_eq!(bar_address(&mut d, 1 << 3, 0, true), 0);
}

#[test]
fn guest_ram_must_end_below_the_window() {
    assert_eq!(check_guest_memory(3072 << 20), Ok(()));
    assert_eq!(check_guest_memory(512 << 20), Ok(()));
    let err = check_guest_memory((3072 << 20) + 1).unwrap_err();
    assert_eq!(err, PciError::MemoryOverlapsWindow { memory_mib: 3073 });
    assert!(err.to_string().contains("memory_mib <= 3072"), "{err}");
}

#[test]
fn intx_asserted_before_registration_reaches_the_line_once_wired() {
    let mut d = Devices::pc_for_tests();
    let mut f = TestFunction::new();
    {
        let (_, _, mut ctx) = d.split();
        // Not wired yet: nothing reaches the routing.
        f.config.set_intx(true, &mut ctx);
    }
    assert!(!gsi_asserted(&d, 18));
    d.add_pci_device_at(2, 0, f).unwrap();
    assert!(gsi_asserted(&d, 18), "00:02.0 INTA# is GSI 18");
}
