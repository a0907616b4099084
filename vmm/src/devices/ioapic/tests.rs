use super::*;

/// A field name and a way to damage a state in it.
type Damage = (&'static str, fn(&mut State));

fn read_reg(ioapic: &mut Ioapic, index: u8) -> u32 {
    ioapic.write(IOREGSEL, 4, u64::from(index));
    ioapic.read(IOWIN, 4) as u32
}

fn write_reg(ioapic: &mut Ioapic, index: u8, value: u32) -> Vec<IrqMessage> {
    ioapic.write(IOREGSEL, 4, u64::from(index));
    ioapic.write(IOWIN, 4, u64::from(value))
}

/// Programs entry `pin` as Linux does: high half first, then low.
fn program(ioapic: &mut Ioapic, pin: u8, entry: u64) -> Vec<IrqMessage> {
    let index = REG_REDIRECTION + 2 * pin;
    let mut out = write_reg(ioapic, index + 1, (entry >> 32) as u32);
    out.extend(write_reg(ioapic, index, entry as u32));
    out
}

fn fixed(pin: u8, vector: u8, level: bool) -> IrqMessage {
    IrqMessage {
        pin,
        vector,
        destination: 0,
        logical: false,
        delivery_mode: DeliveryMode::Fixed,
        level_triggered: level,
    }
}

#[test]
fn reset_state() {
    let mut ioapic = Ioapic::new(0x12);
    assert_eq!(ioapic.id(), 2, "four bits");
    assert_eq!(read_reg(&mut ioapic, REG_ID), 2 << 24);
    assert_eq!(read_reg(&mut ioapic, REG_VERSION), 0x0017_0020);
    assert_eq!(read_reg(&mut ioapic, REG_ARBITRATION), 2 << 24);
    for pin in 0..PINS as u8 {
        assert_eq!(ioapic.entry(pin), Some(RTE_MASKED));
        assert_eq!(
            read_reg(&mut ioapic, REG_REDIRECTION + 2 * pin),
            RTE_MASKED as u32
        );
        assert_eq!(read_reg(&mut ioapic, REG_REDIRECTION + 2 * pin + 1), 0);
    }
    assert_eq!(ioapic.entry(24), None);
    assert_eq!(read_reg(&mut ioapic, 0x40), 0, "unknown indirect register");
}

#[test]
fn id_is_writable_version_is_not() {
    let mut ioapic = Ioapic::new(0);
    write_reg(&mut ioapic, REG_ID, 0xFF00_0000);
    assert_eq!(read_reg(&mut ioapic, REG_ID), 0x0F00_0000);
    write_reg(&mut ioapic, REG_VERSION, 0);
    write_reg(&mut ioapic, REG_ARBITRATION, 0);
    assert_eq!(read_reg(&mut ioapic, REG_VERSION), VERSION_REGISTER);
    assert_eq!(read_reg(&mut ioapic, REG_ARBITRATION), 0x0F00_0000);
}

#[test]
fn entry_writes_keep_read_only_bits() {
    let mut ioapic = Ioapic::new(0);
    program(&mut ioapic, 3, u64::MAX);
    let expected = RTE_WRITABLE;
    assert_eq!(ioapic.entry(3), Some(expected));
    assert_eq!(
        read_reg(&mut ioapic, REG_REDIRECTION + 7),
        0xFF00_0000,
        "bits 55:32 reserved"
    );
    assert_eq!(ioapic.read(IOREGSEL, 4), u64::from(REG_REDIRECTION + 7));
}

#[test]
fn edge_delivery() {
    let mut ioapic = Ioapic::new(0);
    assert!(program(&mut ioapic, 1, 0x31).is_empty());
    assert_eq!(ioapic.set_irq(1, true), Some(fixed(1, 0x31, false)));
    assert_eq!(ioapic.set_irq(1, true), None);
    assert_eq!(ioapic.set_irq(1, false), None);
    assert_eq!(ioapic.set_irq(1, true), Some(fixed(1, 0x31, false)));
    // Edge entries do not use Remote IRR.
    assert_eq!(ioapic.entry(1).unwrap() & RTE_REMOTE_IRR, 0);
}

#[test]
fn masked_edge_is_delivered_on_unmask() {
    let mut ioapic = Ioapic::new(0);
    program(&mut ioapic, 2, 0x30 | RTE_MASKED);
    assert_eq!(ioapic.set_irq(2, true), None);
    ioapic.set_irq(2, false);
    assert_eq!(program(&mut ioapic, 2, 0x30), vec![fixed(2, 0x30, false)]);
    // Only once.
    assert!(program(&mut ioapic, 2, 0x30).is_empty());
}

#[test]
fn level_delivery_with_remote_irr_and_eoi() {
    let mut ioapic = Ioapic::new(0);
    let entry = 0x41 | RTE_TRIGGER_LEVEL | RTE_POLARITY_LOW;
    program(&mut ioapic, 10, entry);
    assert_eq!(ioapic.set_irq(10, true), Some(fixed(10, 0x41, true)));
    assert_ne!(ioapic.entry(10).unwrap() & RTE_REMOTE_IRR, 0);
    // Still asserted, still in service: nothing more.
    assert_eq!(ioapic.set_irq(10, true), None);
    assert!(ioapic.end_of_interrupt(0x42).is_empty(), "other vector");
    // EOI with the line still asserted: delivered again.
    assert_eq!(ioapic.end_of_interrupt(0x41), vec![fixed(10, 0x41, true)]);
    // The device drops the line, then the EOI comes: nothing more.
    ioapic.set_irq(10, false);
    assert!(ioapic.end_of_interrupt(0x41).is_empty());
    assert_eq!(ioapic.entry(10).unwrap() & RTE_REMOTE_IRR, 0);
    // Remote IRR survives rewriting the entry, and reads back.
    ioapic.set_irq(10, true);
    program(&mut ioapic, 10, entry);
    assert_ne!(
        read_reg(&mut ioapic, REG_REDIRECTION + 20) & RTE_REMOTE_IRR as u32,
        0
    );
}

#[test]
fn level_asserted_while_masked_is_delivered_on_unmask() {
    let mut ioapic = Ioapic::new(0);
    program(&mut ioapic, 11, 0x51 | RTE_TRIGGER_LEVEL | RTE_MASKED);
    assert_eq!(ioapic.set_irq(11, true), None);
    assert_eq!(
        program(&mut ioapic, 11, 0x51 | RTE_TRIGGER_LEVEL),
        vec![fixed(11, 0x51, true)]
    );
    // Withdrawn while masked: nothing on unmask.
    let mut ioapic = Ioapic::new(0);
    program(&mut ioapic, 11, 0x51 | RTE_TRIGGER_LEVEL | RTE_MASKED);
    ioapic.set_irq(11, true);
    ioapic.set_irq(11, false);
    assert!(program(&mut ioapic, 11, 0x51 | RTE_TRIGGER_LEVEL).is_empty());
}

#[test]
fn eoi_register() {
    let mut ioapic = Ioapic::new(0);
    program(&mut ioapic, 16, 0x60 | RTE_TRIGGER_LEVEL);
    program(&mut ioapic, 17, 0x60 | RTE_TRIGGER_LEVEL);
    ioapic.set_irq(16, true);
    ioapic.set_irq(17, true);
    let again = ioapic.write(EOI, 4, 0x60);
    assert_eq!(again, vec![fixed(16, 0x60, true), fixed(17, 0x60, true)]);
    assert_eq!(ioapic.read(EOI, 4), 0, "write-only");
}

#[test]
fn turning_an_entry_edge_clears_remote_irr() {
    let mut ioapic = Ioapic::new(0);
    program(&mut ioapic, 5, 0x35 | RTE_TRIGGER_LEVEL);
    ioapic.set_irq(5, true);
    program(&mut ioapic, 5, 0x35 | RTE_MASKED);
    assert_eq!(ioapic.entry(5).unwrap() & RTE_REMOTE_IRR, 0);
}

#[test]
fn delivery_modes_and_destinations() {
    let mut ioapic = Ioapic::new(0);
    // NMI, level trigger bit set: still edge semantics.
    program(
        &mut ioapic,
        6,
        (4 << RTE_DELIVERY_MODE_SHIFT) | RTE_TRIGGER_LEVEL | (3 << RTE_DEST_SHIFT),
    );
    let msg = ioapic.set_irq(6, true).unwrap();
    assert_eq!(msg.delivery_mode, DeliveryMode::Nmi);
    assert!(!msg.level_triggered);
    assert_eq!(msg.destination, 3);
    assert_eq!(ioapic.entry(6).unwrap() & RTE_REMOTE_IRR, 0);
    // Logical lowest priority.
    program(
        &mut ioapic,
        7,
        0x77 | (1 << RTE_DELIVERY_MODE_SHIFT) | RTE_DEST_LOGICAL | (0xF0 << RTE_DEST_SHIFT),
    );
    let msg = ioapic.set_irq(7, true).unwrap();
    assert_eq!(
        msg,
        IrqMessage {
            pin: 7,
            vector: 0x77,
            destination: 0xF0,
            logical: true,
            delivery_mode: DeliveryMode::LowestPriority,
            level_triggered: false,
        }
    );
    // ExtINT (virtual wire through the I/O APIC).
    program(&mut ioapic, 0, 7 << RTE_DELIVERY_MODE_SHIFT);
    assert_eq!(
        ioapic.set_irq(0, true).unwrap().delivery_mode,
        DeliveryMode::ExtInt
    );
    // Reserved modes (011, 110) send nothing, and do not latch Remote IRR.
    for mode in [3u64, 6] {
        program(
            &mut ioapic,
            8,
            0x40 | (mode << RTE_DELIVERY_MODE_SHIFT) | RTE_TRIGGER_LEVEL,
        );
        ioapic.set_irq(8, false);
        assert_eq!(ioapic.set_irq(8, true), None);
        assert_eq!(ioapic.entry(8).unwrap() & RTE_REMOTE_IRR, 0);
    }
}

#[test]
fn pins_past_23_are_ignored() {
    let mut ioapic = Ioapic::new(0);
    assert_eq!(ioapic.set_irq(24, true), None);
    assert_eq!(ioapic.set_irq(255, true), None);
    assert_eq!(ioapic.state().lines, 0);
}

#[test]
fn odd_access_sizes() {
    let mut ioapic = Ioapic::new(5);
    // A byte write selects; byte reads see byte lanes.
    ioapic.write(IOREGSEL, 1, u64::from(REG_VERSION));
    assert_eq!(ioapic.read(IOWIN, 1), 0x20);
    assert_eq!(ioapic.read(IOWIN + 2, 1), 0x17);
    assert_eq!(ioapic.read(IOWIN, 2), 0x0020);
    assert_eq!(ioapic.read(IOWIN, 8), u64::from(VERSION_REGISTER));
    assert_eq!(ioapic.read(IOWIN + 3, 4), 0, "lane 3, then nothing");
    assert_eq!(ioapic.read(IOREGSEL, 0), 0);
    assert_eq!(ioapic.read(u64::MAX, 8), 0);
    // Selector bits above 7 do not stick.
    ioapic.write(IOREGSEL, 4, 0xFFFF_FF10);
    assert_eq!(ioapic.read(IOREGSEL, 4), 0x10);
    // A byte write to IOWIN merges into the register.
    ioapic.write(IOWIN, 4, 0x0001_0000 | 0x22);
    ioapic.write(IOWIN + 1, 1, 0x00);
    ioapic.write(IOWIN, 1, 0x23);
    assert_eq!(ioapic.entry(0), Some(RTE_MASKED | 0x23));
    // Writes that start past the register, or empty ones, change nothing.
    ioapic.write(IOWIN + 4, 4, 0);
    ioapic.write(IOWIN, 0, 0);
    ioapic.write(0x20, 4, 0);
    ioapic.write(u64::MAX, 8, u64::MAX);
    assert_eq!(ioapic.entry(0), Some(RTE_MASKED | 0x23));
    // An 8-byte write covers only the addressed register.
    ioapic.write(IOWIN, 8, 0xFFFF_FFFF_0000_0024);
    assert_eq!(ioapic.entry(0), Some(0x24));
}

#[test]
fn state_round_trips() {
    let mut ioapic = Ioapic::new(1);
    program(&mut ioapic, 9, 0x39 | RTE_TRIGGER_LEVEL);
    program(&mut ioapic, 4, 0x34 | RTE_MASKED);
    ioapic.set_irq(9, true);
    ioapic.set_irq(4, true);
    ioapic.write(IOREGSEL, 4, 0x12);
    let state = ioapic.state();
    let mut copy = Ioapic::new(0);
    copy.restore(state).unwrap();
    assert_eq!(copy, ioapic);
    assert_eq!(copy.end_of_interrupt(0x39), ioapic.end_of_interrupt(0x39));
    assert_eq!(program(&mut copy, 4, 0x34), program(&mut ioapic, 4, 0x34));
}

#[test]
fn restore_refuses_impossible_states() {
    let good = Ioapic::new(0).state();
    let cases: [Damage; 6] = [
        ("id", |s| s.id = 0x10),
        ("redirection[3]", |s| s.redirection[3] = RTE_DELIVERY_STATUS),
        ("redirection[0]", |s| s.redirection[0] = 1 << 40),
        ("redirection[23]", |s| s.redirection[23] = RTE_REMOTE_IRR),
        ("lines", |s| s.lines = 1 << 24),
        ("pending_edges", |s| s.pending_edges = u32::MAX),
    ];
    for (field, damage) in cases {
        let mut bad = good;
        damage(&mut bad);
        let mut ioapic = Ioapic::new(0);
        match ioapic.restore(bad) {
            Err(StateError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(ioapic.state(), good);
    }
    assert_eq!(
        StateError::Invalid {
            device: "I/O APIC",
            field: "id",
            value: 16
        }
        .to_string(),
        "invalid I/O APIC state: id = 0x10"
    );
}

#[test]
fn random_accesses_never_panic_and_keep_invariants() {
    let mut x: u64 = 0xA076_1D64_78BD_642F;
    let mut ioapic = Ioapic::new(0);
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = [0u64, 1, 3, 0x10, 0x11, 0x13, 0x40, 0x44, 0xFFF][(x % 9) as usize];
        let size = ((x >> 8) % 10) as u8;
        match (x >> 16) % 6 {
            0 => {
                ioapic.read(offset, size);
            }
            1 => {
                ioapic.write(offset, size, x >> 24);
            }
            2 => {
                // Aim at the redirection table often.
                ioapic.write(IOREGSEL, 4, 0x10 + (x >> 24) % 0x32);
            }
            3 => {
                if let Some(msg) = ioapic.set_irq(((x >> 24) % 26) as u8, x & (1 << 40) != 0) {
                    assert!(usize::from(msg.pin) < PINS);
                    assert_ne!(msg.delivery_mode, DeliveryMode::StartUp);
                }
            }
            4 => {
                ioapic.end_of_interrupt((x >> 24) as u8);
            }
            _ => {
                ioapic.write(IOWIN, 4, x >> 32);
            }
        }
        let state = ioapic.state();
        assert_eq!(Ioapic::new(0).restore(state), Ok(()), "{state:?}");
    }
}

#[test]
fn lines_are_logical_levels_whatever_the_polarity() {
    // A PCI GSI as Linux programs it from the _PRT: level, active low. A line that is not
    // asserted sends nothing when the entry is unmasked (the model does not read "low" on an
    // idle wire as asserted), and an asserted one is delivered like an active-high one.
    for polarity in [RTE_POLARITY_LOW, 0] {
        let mut ioapic = Ioapic::new(0);
        let entry = 0x51 | RTE_TRIGGER_LEVEL | polarity;
        assert!(program(&mut ioapic, 17, entry | RTE_MASKED).is_empty());
        assert!(program(&mut ioapic, 17, entry).is_empty(), "idle line");
        assert_eq!(ioapic.set_irq(17, true), Some(fixed(17, 0x51, true)));
        ioapic.set_irq(17, false);
        assert!(ioapic.end_of_interrupt(0x51).is_empty());
        assert_eq!(ioapic.entry(17).unwrap() & RTE_POLARITY_LOW, polarity);
    }
}
