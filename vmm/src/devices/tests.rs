//! The PC's port and MMIO map and the dispatch rules, through `Devices::read_port` and friends.

use super::uart::{IER_THRE, LSR_DR, LSR_TEMT, LSR_THRE, MCR_OUT2, reg};
use super::*;

#[test]
fn the_pc_port_and_mmio_map() {
    let devices = Devices::pc_for_tests();
    let ports: Vec<_> = devices
        .pio()
        .iter()
        .map(|m| (m.base, m.len, m.name))
        .collect();
    assert!(ports.contains(&(0x3F8, 8, "COM1")));
    assert!(ports.contains(&(0x40, 4, pit::NAME)));
    assert!(ports.contains(&(0x61, 1, pit::NAME)));
    assert!(ports.contains(&(0x600, 12, acpi_pm::NAME)));
    assert_eq!(
        devices
            .mmio()
            .iter()
            .map(|m| (m.base, m.len, m.target))
            .collect::<Vec<_>>(),
        [
            (0xFEC0_0000, 0x1000, Target::Ioapic),
            (0xFEE0_0000, 0x1000, Target::Lapic)
        ]
    );
    // The whole port map, in address order.
    assert_eq!(
        ports,
        [
            (0x20, 2, pic::NAME),
            (0x40, 4, pit::NAME),
            (0x60, 1, i8042::NAME),
            (0x61, 1, pit::NAME),
            (0x64, 1, i8042::NAME),
            (0x70, 2, rtc::NAME),
            (0xA0, 2, pic::NAME),
            (0x3F8, 8, "COM1"),
            (0x4D0, 2, pic::NAME),
            (0x600, 12, acpi_pm::NAME),
            (0xCF8, 8, pci_host::NAME),
        ]
    );
}

#[test]
fn com1_output_through_port_writes() {
    let mut devices = Devices::pc_for_tests();
    for b in *b"hi" {
        devices.write_port(COM1_BASE, 1, u32::from(b));
    }
    assert_eq!(devices.com1().output_since(0), (b"hi".to_vec(), 2, 0));
    assert_eq!(
        devices.read_port(COM1_BASE + u16::from(reg::LSR), 1),
        u32::from(LSR_THRE | LSR_TEMT)
    );
}

#[test]
fn com1_input_through_port_reads() {
    let mut devices = Devices::pc_for_tests();
    devices.com1_mut().push_input(b"A");
    let lsr = devices.read_port(COM1_BASE + 5, 1);
    assert_eq!(lsr & u32::from(LSR_DR), u32::from(LSR_DR));
    assert_eq!(devices.read_port(COM1_BASE, 1), u32::from(b'A'));
}

#[test]
fn unclaimed_ports_read_all_ones_by_size() {
    let mut devices = Devices::pc_for_tests();
    assert_eq!(devices.read_port(0x2E0, 1), 0xFF);
    assert_eq!(devices.read_port(0x2E0, 2), 0xFFFF);
    assert_eq!(devices.read_port(0x2E0, 4), 0xFFFF_FFFF);
    assert_eq!(
        devices.read_port(0xFFFF, 4),
        0xFFFF_FFFF,
        "wraps off the end"
    );
    assert_eq!(devices.read_port(POST_PORT, 1), 0xFF);
}

#[test]
fn unclaimed_port_writes_are_dropped() {
    let mut devices = Devices::pc_for_tests();
    devices.write_port(POST_PORT, 1, 0x42);
    devices.write_port(0x2E0, 4, 0x8000_0000);
    devices.write_port(0xFFFF, 4, 0xFFFF_FFFF);
    assert_eq!(devices.com1().output_total(), 0);
    assert_eq!(devices.take_machine_request(), None);
}

#[test]
fn wide_port_accesses_split_into_bytes() {
    let mut devices = Devices::pc_for_tests();
    // A 16-bit write to 0x3FE writes MSR (ignored) and SCR.
    devices.write_port(COM1_BASE + 6, 2, 0xAB00);
    assert_eq!(devices.read_port(COM1_BASE + 7, 1), 0xAB);
    // A 32-bit read at SCR: SCR, then three unclaimed ports.
    assert_eq!(devices.read_port(COM1_BASE + 7, 4), 0xFFFF_FFAB);
    // A 16-bit read at 0x3F7: unclaimed port, then RBR.
    devices.com1_mut().push_input(b"z");
    assert_eq!(
        devices.read_port(COM1_BASE - 1, 2),
        0xFF | u32::from(b'z') << 8
    );
    // Only the low `size` bytes of an OUT are written.
    devices.write_port(COM1_BASE, 1, 0xFFFF_FF21);
    assert_eq!(devices.com1().output_since(0).0, b"!");
}

#[test]
fn the_pm_timer_is_read_whole() {
    let mut devices = Devices::pc_for_tests();
    devices.set_now(1_000_000_000);
    let ticks = devices.read_port(acpi_pm::DEFAULT_BASE + acpi_pm::PM_TMR, 4);
    // One second of the 3.579545 MHz timer.
    assert_eq!(ticks, 3_579_545);
}

#[test]
fn acpi_soft_off_and_resets_are_machine_requests() {
    let mut devices = Devices::pc_for_tests();
    let cnt = acpi_pm::DEFAULT_BASE + acpi_pm::PM1_CNT;
    let slp = (u32::from(S5_SLP_TYP) << acpi_pm::SLP_TYP_SHIFT) | u32::from(acpi_pm::SLP_EN);
    devices.write_port(cnt, 2, slp);
    assert_eq!(
        devices.take_machine_request(),
        Some(MachineRequest::PowerOff)
    );

    let mut devices = Devices::pc_for_tests();
    devices.write_port(RESET_CONTROL_PORT, 1, 0x06);
    assert_eq!(devices.take_machine_request(), Some(MachineRequest::Reset));
    assert_eq!(devices.take_machine_request(), None, "reported once");

    let mut devices = Devices::pc_for_tests();
    devices.write_port(i8042::COMMAND_PORT, 1, 0xFE);
    assert_eq!(devices.take_machine_request(), Some(MachineRequest::Reset));
}

#[test]
fn mmio_unclaimed_reads_all_ones_and_drops_writes() {
    let mut devices = Devices::pc_for_tests();
    assert_eq!(devices.read_mmio(0xFED0_0000, 1), 0xFF);
    assert_eq!(devices.read_mmio(0xFED0_0000, 2), 0xFFFF);
    assert_eq!(devices.read_mmio(0xFED0_0000, 4), 0xFFFF_FFFF);
    assert_eq!(devices.read_mmio(0xFED0_0000, 8), u64::MAX);
    assert_eq!(devices.read_mmio(u64::MAX, 8), u64::MAX);
    devices.write_mmio(0xFED0_0000, 8, 0);
    devices.write_mmio(u64::MAX, 8, 0);
}

#[test]
fn apic_registers_take_whole_accesses() {
    let mut devices = Devices::pc_for_tests();
    // Local APIC version register (0x30): one aligned 32-bit load.
    assert_eq!(
        devices.read_mmio(0xFEE0_0030, 4),
        u64::from(lapic::VERSION_VALUE)
    );
    // I/O APIC: select the version register, read it through IOWIN.
    devices.write_mmio(0xFEC0_0000, 4, u64::from(ioapic::REG_VERSION));
    assert_eq!(
        devices.read_mmio(0xFEC0_0010, 4),
        u64::from(ioapic::VERSION_REGISTER)
    );
}

#[test]
fn mmio_mapped_uart_works_like_the_port_one() {
    let mut devices = Devices::pc_for_tests();
    let com1 = devices.find_device("COM1").unwrap();
    devices
        .map(
            com1,
            Region::Mmio {
                base: 0xFED0_0000,
                len: 8,
            },
        )
        .unwrap();
    devices.write_mmio(0xFED0_0000, 1, u64::from(b'm'));
    assert_eq!(devices.com1().output_since(0).0, b"m");
    assert_eq!(devices.read_mmio(0xFED0_0007, 1), 0);
}

#[test]
fn odd_sizes_never_panic() {
    let mut devices = Devices::pc_for_tests();
    assert_eq!(devices.read_port(0x2E0, 0), 0);
    assert_eq!(devices.read_port(0x2E0, 3), 0xFF_FFFF);
    assert_eq!(devices.read_port(0x2E0, 200), 0xFFFF_FFFF);
    assert_eq!(devices.read_mmio(0, 255), u64::MAX);
    devices.read_mmio(0xFEE0_0031, 255);
    devices.write_mmio(0xFEC0_0003, 3, u64::MAX);
    devices.write_port(COM1_BASE, 255, 0x2020_2020);
    devices.write_mmio(0, 255, 0);
    assert_eq!(
        devices.com1().output_total(),
        1,
        "THR once; the rest hit other registers"
    );
}

#[test]
fn the_uart_interrupt_reaches_the_pic() {
    let mut devices = Devices::pc_for_tests();
    // Initialise the 8259 pair as a BIOS does: vectors 0x08 and 0x70, all unmasked.
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x08),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xA0, 0x11),
        (0xA1, 0x70),
        (0xA1, 0x02),
        (0xA1, 0x01),
        (0x21, 0x00),
        (0xA1, 0x00),
    ] {
        devices.write_port(port, 1, value);
    }
    // THR-empty interrupt enabled, but OUT2 clear: the line stays low.
    devices.write_port(COM1_BASE + 1, 1, u32::from(IER_THRE));
    assert_eq!(devices.pending_interrupt(0), None);
    devices.write_port(COM1_BASE + 4, 1, u32::from(MCR_OUT2));
    assert_eq!(
        devices.pending_interrupt(0),
        Some(interrupts::InterruptSource::Pic)
    );
    assert_eq!(devices.acknowledge_interrupt(0), Some(0x08 + COM1_IRQ));
}

#[test]
fn pci_configuration_takes_whole_dwords() {
    let mut devices = Devices::pc_for_tests();
    // 00:00.0 register 0: vendor 8086, device 1237.
    devices.write_port(0xCF8, 4, 0x8000_0000);
    assert_eq!(devices.read_port(0xCF8, 4), 0x8000_0000);
    assert_eq!(devices.read_port(0xCFC, 4), 0x1237_8086);
    assert_eq!(devices.read_port(0xCFE, 2), 0x1237);
    // 00:01.0: nothing there.
    devices.write_port(0xCF8, 4, 0x8000_0800);
    assert_eq!(devices.read_port(0xCFC, 4), 0xFFFF_FFFF);
}

#[test]
fn device_names() {
    let devices = Devices::pc_for_tests();
    let name_at = |port| {
        devices
            .pio()
            .iter()
            .find(|m| m.base == port)
            .map(|m| m.name)
    };
    assert_eq!(name_at(COM1_BASE), Some("COM1"));
    let lapic = devices.mmio().iter().find(|m| m.target == Target::Lapic);
    assert_eq!(lapic.map(|m| m.name), Some("local APIC"));
}
