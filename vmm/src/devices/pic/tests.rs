use super::*;

/// A field name and a way to damage a state in it.
type Damage = (&'static str, fn(&mut State));

/// Linux's `init_8259A`: vectors 0x30 and 0x38, slave on IR2, 8086 mode, normal EOI.
fn linux_init(pic: &mut Pic) {
    for (port, value) in [
        (MASTER_COMMAND, ICW1 | ICW1_IC4),
        (MASTER_DATA, 0x30),
        (MASTER_DATA, 1 << CASCADE_IRQ),
        (MASTER_DATA, ICW4_8086),
        (SLAVE_COMMAND, ICW1 | ICW1_IC4),
        (SLAVE_DATA, 0x38),
        (SLAVE_DATA, CASCADE_IRQ),
        (SLAVE_DATA, ICW4_8086),
    ] {
        pic.write_port(port, value);
    }
}

fn initialized() -> Pic {
    let mut pic = Pic::new();
    linux_init(&mut pic);
    pic
}

fn pulse(pic: &mut Pic, irq: u8) {
    pic.raise_irq(irq);
    pic.lower_irq(irq);
}

fn eoi(pic: &mut Pic, port: u16) {
    pic.write_port(port, ocw2::EOI << 5);
}

fn read_isr(pic: &mut Pic, port: u16) -> u8 {
    pic.write_port(port, OCW3 | OCW3_RR | OCW3_RIS);
    let isr = pic.read_port(port);
    pic.write_port(port, OCW3 | OCW3_RR);
    isr
}

#[test]
fn power_up_state() {
    let mut pic = Pic::new();
    assert_eq!(pic.read_port(MASTER_DATA), 0, "IMR clear");
    assert_eq!(pic.read_port(MASTER_COMMAND), 0, "IRR clear");
    assert_eq!(pic.read_port(ELCR_MASTER), 0);
    assert_eq!(pic.read_port(ELCR_SLAVE), 0);
    assert!(!pic.interrupt_output());
    assert_eq!(pic.pending_vector(), None);
    assert_eq!(pic.acknowledge(), None);
}

#[test]
fn init_sequence_sets_vectors_and_returns_to_ocw_mode() {
    let mut pic = initialized();
    // The data port is IMR again after ICW4.
    pic.write_port(MASTER_DATA, 0xFB);
    pic.write_port(SLAVE_DATA, 0xFF);
    assert_eq!(pic.read_port(MASTER_DATA), 0xFB);
    assert_eq!(pic.read_port(SLAVE_DATA), 0xFF);
    let state = pic.state();
    assert_eq!(state.master.vector_base, 0x30);
    assert_eq!(state.slave.vector_base, 0x38);
    assert_eq!(state.master.icw3, 0x04);
    assert_eq!(state.slave.icw3, 0x02);
    assert_eq!(state.master.init_step, 0);
}

#[test]
fn icw2_low_bits_are_ignored() {
    let mut pic = Pic::new();
    pic.write_port(MASTER_COMMAND, ICW1 | ICW1_SNGL);
    pic.write_port(MASTER_DATA, 0x27);
    // Single, no ICW4: initialization is complete after ICW2.
    pic.write_port(MASTER_DATA, 0x01);
    pulse(&mut pic, 0);
    pulse(&mut pic, 1);
    assert_eq!(pic.acknowledge(), Some(0x21));
    assert_eq!(pic.read_port(MASTER_DATA), 0x01);
}

#[test]
fn edge_input_latches_once_per_rising_edge() {
    let mut pic = initialized();
    pic.raise_irq(1);
    pic.raise_irq(1);
    assert_eq!(pic.pending_vector(), Some(0x31));
    assert_eq!(pic.acknowledge(), Some(0x31));
    // Still high: no new request until it goes low and high again.
    pic.raise_irq(1);
    eoi(&mut pic, MASTER_COMMAND);
    assert_eq!(pic.acknowledge(), None);
    pic.lower_irq(1);
    pic.raise_irq(1);
    assert_eq!(pic.acknowledge(), Some(0x31));
}

#[test]
fn edge_request_survives_the_line_falling() {
    let mut pic = initialized();
    pulse(&mut pic, 4);
    assert_eq!(pic.read_port(MASTER_COMMAND), 1 << 4, "IRR");
    assert_eq!(pic.acknowledge(), Some(0x34));
    assert_eq!(pic.read_port(MASTER_COMMAND), 0, "IRR cleared by INTA");
    assert_eq!(read_isr(&mut pic, MASTER_COMMAND), 1 << 4);
}

#[test]
fn level_input_follows_the_line() {
    let mut pic = initialized();
    pic.write_port(ELCR_SLAVE, 1 << 3); // IRQ 11
    assert!(pic.is_level_triggered(11));
    assert!(!pic.is_level_triggered(10));
    pic.raise_irq(11);
    assert_eq!(pic.pending_vector(), Some(0x3B));
    // Withdrawn before INTA: the slave drops it (the master's latched cascade edge would
    // now be a spurious IRQ 15, see `spurious_slave_interrupt_is_ir7_without_isr`).
    pic.lower_irq(11);
    assert_eq!(pic.read_port(SLAVE_COMMAND), 0, "slave IRR");
    pic.raise_irq(11);
    assert_eq!(pic.acknowledge(), Some(0x3B));
    // In service: blocked until EOI, then delivered again while the line is still high.
    assert_eq!(pic.acknowledge(), None);
    eoi(&mut pic, SLAVE_COMMAND);
    eoi(&mut pic, MASTER_COMMAND);
    assert_eq!(pic.acknowledge(), Some(0x3B));
    // The handler quiets the device before its EOI, as drivers do: nothing follows.
    pic.lower_irq(11);
    eoi(&mut pic, SLAVE_COMMAND);
    eoi(&mut pic, MASTER_COMMAND);
    assert_eq!(pic.acknowledge(), None);
}

#[test]
fn ltim_makes_every_input_level_triggered() {
    let mut pic = Pic::new();
    pic.write_port(MASTER_COMMAND, ICW1 | ICW1_SNGL | ICW1_LTIM);
    pic.write_port(MASTER_DATA, 0x08);
    assert!(pic.is_level_triggered(0));
    pic.raise_irq(0);
    assert_eq!(pic.acknowledge(), Some(0x08));
    eoi(&mut pic, MASTER_COMMAND);
    assert_eq!(pic.acknowledge(), Some(0x08));
}

#[test]
fn elcr_reserved_bits_read_zero() {
    let mut pic = Pic::new();
    pic.write_port(ELCR_MASTER, 0xFF);
    pic.write_port(ELCR_SLAVE, 0xFF);
    assert_eq!(pic.read_port(ELCR_MASTER), ELCR_MASTER_MASK);
    assert_eq!(pic.read_port(ELCR_SLAVE), ELCR_SLAVE_MASK);
    assert!(!pic.is_level_triggered(0));
    assert!(!pic.is_level_triggered(8));
    assert!(pic.is_level_triggered(9));
    assert!(!pic.is_level_triggered(16));
}

#[test]
fn priority_and_nesting() {
    let mut pic = initialized();
    pulse(&mut pic, 3);
    pulse(&mut pic, 5);
    assert_eq!(pic.acknowledge(), Some(0x33));
    // IRQ 5 ranks below the in-service IRQ 3.
    assert_eq!(pic.acknowledge(), None);
    // IRQ 1 outranks it and nests.
    pulse(&mut pic, 1);
    assert_eq!(pic.acknowledge(), Some(0x31));
    assert_eq!(read_isr(&mut pic, MASTER_COMMAND), 0b1010);
    // Non-specific EOI ends the highest in service (IRQ 1), then IRQ 3.
    eoi(&mut pic, MASTER_COMMAND);
    assert_eq!(read_isr(&mut pic, MASTER_COMMAND), 0b1000);
    assert_eq!(pic.acknowledge(), None);
    eoi(&mut pic, MASTER_COMMAND);
    assert_eq!(pic.acknowledge(), Some(0x35));
}

#[test]
fn specific_eoi_clears_only_its_level() {
    let mut pic = initialized();
    pulse(&mut pic, 6);
    pic.acknowledge();
    pulse(&mut pic, 2 + 1); // IRQ 3
    pic.acknowledge();
    pic.write_port(MASTER_COMMAND, (ocw2::SPECIFIC_EOI << 5) | 6);
    assert_eq!(read_isr(&mut pic, MASTER_COMMAND), 1 << 3);
}

#[test]
fn imr_masks_and_unmasking_delivers() {
    let mut pic = initialized();
    pic.write_port(MASTER_DATA, 1 << 0);
    pulse(&mut pic, 0);
    assert!(!pic.interrupt_output());
    assert_eq!(pic.read_port(MASTER_COMMAND), 1, "still requested in IRR");
    pic.write_port(MASTER_DATA, 0);
    assert_eq!(pic.acknowledge(), Some(0x30));
}

#[test]
fn cascade_delivers_slave_vectors() {
    let mut pic = initialized();
    pulse(&mut pic, 12);
    assert!(pic.interrupt_output());
    assert_eq!(pic.pending_vector(), Some(0x3C));
    assert_eq!(pic.acknowledge(), Some(0x3C));
    assert_eq!(read_isr(&mut pic, MASTER_COMMAND), 1 << CASCADE_IRQ);
    assert_eq!(read_isr(&mut pic, SLAVE_COMMAND), 1 << 4);
    // A master input below IR2 is blocked; one above nests.
    pulse(&mut pic, 3);
    assert_eq!(pic.acknowledge(), None);
    pulse(&mut pic, 0);
    assert_eq!(pic.acknowledge(), Some(0x30));
    eoi(&mut pic, MASTER_COMMAND);
    eoi(&mut pic, SLAVE_COMMAND);
    eoi(&mut pic, MASTER_COMMAND);
    assert_eq!(pic.acknowledge(), Some(0x33));
}

#[test]
fn slave_mask_hides_it_from_the_master() {
    let mut pic = initialized();
    pic.write_port(SLAVE_DATA, 0xFF);
    pulse(&mut pic, 8);
    assert!(!pic.interrupt_output());
    pic.write_port(SLAVE_DATA, 0x00);
    assert_eq!(pic.acknowledge(), Some(0x38));
    // Masking the cascade input on the master hides the whole slave.
    eoi(&mut pic, SLAVE_COMMAND);
    eoi(&mut pic, MASTER_COMMAND);
    pic.write_port(MASTER_DATA, 1 << CASCADE_IRQ);
    pulse(&mut pic, 15);
    assert!(!pic.interrupt_output());
}

#[test]
fn spurious_slave_interrupt_is_ir7_without_isr() {
    let mut pic = initialized();
    pic.write_port(ELCR_SLAVE, 1 << 2); // IRQ 10, level
    pic.raise_irq(10);
    // The master latched the cascade edge; now the slave request goes away before INTA.
    pic.lower_irq(10);
    assert_eq!(pic.read_port(MASTER_COMMAND), 1 << CASCADE_IRQ);
    assert_eq!(pic.acknowledge(), Some(0x3F));
    assert_eq!(read_isr(&mut pic, SLAVE_COMMAND), 0);
    assert_eq!(read_isr(&mut pic, MASTER_COMMAND), 1 << CASCADE_IRQ);
}

#[test]
fn auto_eoi_leaves_isr_clear() {
    let mut pic = Pic::new();
    for (port, value) in [
        (MASTER_COMMAND, ICW1 | ICW1_IC4 | ICW1_SNGL),
        (MASTER_DATA, 0x40),
        (MASTER_DATA, ICW4_8086 | ICW4_AEOI),
    ] {
        pic.write_port(port, value);
    }
    pulse(&mut pic, 5);
    pulse(&mut pic, 6);
    assert_eq!(pic.acknowledge(), Some(0x45));
    assert_eq!(read_isr(&mut pic, MASTER_COMMAND), 0);
    // Nothing in service, so IRQ 6 follows at once.
    assert_eq!(pic.acknowledge(), Some(0x46));
}

#[test]
fn rotate_in_auto_eoi_mode() {
    let mut pic = Pic::new();
    for (port, value) in [
        (MASTER_COMMAND, ICW1 | ICW1_IC4 | ICW1_SNGL),
        (MASTER_DATA, 0x40),
        (MASTER_DATA, ICW4_8086 | ICW4_AEOI),
        (MASTER_COMMAND, ocw2::ROTATE_AEOI_SET << 5),
    ] {
        pic.write_port(port, value);
    }
    pulse(&mut pic, 1);
    assert_eq!(pic.acknowledge(), Some(0x41));
    // IR1 is now lowest: IR2 outranks IR0.
    pulse(&mut pic, 0);
    pulse(&mut pic, 3);
    assert_eq!(pic.acknowledge(), Some(0x43));
    pic.write_port(MASTER_COMMAND, ocw2::ROTATE_AEOI_CLEAR << 5);
    assert_eq!(pic.acknowledge(), Some(0x40));
    assert_eq!(pic.state().master.lowest_priority, 3);
}

#[test]
fn rotate_on_eoi_and_set_priority() {
    let mut pic = initialized();
    pulse(&mut pic, 0);
    pic.acknowledge();
    pic.write_port(MASTER_COMMAND, ocw2::ROTATE_EOI << 5);
    // IR0 is lowest now, so IR7 outranks it.
    pulse(&mut pic, 0);
    pulse(&mut pic, 7);
    assert_eq!(pic.acknowledge(), Some(0x37));
    pic.write_port(MASTER_COMMAND, (ocw2::ROTATE_SPECIFIC_EOI << 5) | 7);
    assert_eq!(pic.state().master.lowest_priority, 7);
    assert_eq!(pic.acknowledge(), Some(0x30));
    eoi(&mut pic, MASTER_COMMAND);
    // Set priority: IR4 lowest, so IR5 is highest.
    pic.write_port(MASTER_COMMAND, (ocw2::SET_PRIORITY << 5) | 4);
    pulse(&mut pic, 4);
    pulse(&mut pic, 5);
    pulse(&mut pic, 1);
    assert_eq!(pic.acknowledge(), Some(0x35));
    // The no-op command changes nothing.
    pic.write_port(MASTER_COMMAND, ocw2::NOP << 5);
    assert_eq!(read_isr(&mut pic, MASTER_COMMAND), 1 << 5);
}

#[test]
fn poll_mode_reads_and_acknowledges() {
    let mut pic = initialized();
    pulse(&mut pic, 6);
    pic.write_port(MASTER_COMMAND, OCW3 | OCW3_POLL);
    assert_eq!(pic.read_port(MASTER_COMMAND), POLL_INTERRUPT | 6);
    assert_eq!(read_isr(&mut pic, MASTER_COMMAND), 1 << 6);
    // The poll is one-shot: the next read is IRR again.
    assert_eq!(pic.read_port(MASTER_COMMAND), 0);
    // Nothing pending: the poll reads 0 (and works through the data port too).
    pic.write_port(MASTER_COMMAND, OCW3 | OCW3_POLL);
    assert_eq!(pic.read_port(MASTER_DATA), 0);
    assert_eq!(pic.read_port(MASTER_DATA), 0, "IMR");
}

#[test]
fn special_mask_mode_lets_lower_levels_through() {
    let mut pic = initialized();
    pulse(&mut pic, 2 + 2); // IRQ 4
    pic.acknowledge();
    pic.write_port(MASTER_DATA, 1 << 4);
    pic.write_port(MASTER_COMMAND, OCW3 | OCW3_ESMM | OCW3_SMM);
    pulse(&mut pic, 6);
    assert_eq!(pic.acknowledge(), Some(0x36));
    pic.write_port(MASTER_COMMAND, OCW3 | OCW3_ESMM);
    assert!(!pic.state().master.special_mask);
}

#[test]
fn special_fully_nested_mode_lets_the_slave_nest() {
    let mut pic = Pic::new();
    for (port, value) in [
        (MASTER_COMMAND, ICW1 | ICW1_IC4),
        (MASTER_DATA, 0x30),
        (MASTER_DATA, 0x04),
        (MASTER_DATA, ICW4_8086 | ICW4_SFNM),
        (SLAVE_COMMAND, ICW1 | ICW1_IC4),
        (SLAVE_DATA, 0x38),
        (SLAVE_DATA, 0x02),
        (SLAVE_DATA, ICW4_8086),
    ] {
        pic.write_port(port, value);
    }
    pulse(&mut pic, 14);
    assert_eq!(pic.acknowledge(), Some(0x3E));
    pulse(&mut pic, 9);
    assert_eq!(pic.acknowledge(), Some(0x39));
}

#[test]
fn icw1_resets_the_edge_detector_and_registers() {
    let mut pic = initialized();
    pic.write_port(MASTER_DATA, 0x0F);
    pic.raise_irq(5);
    pic.raise_irq(6);
    pic.lower_irq(6);
    linux_init(&mut pic);
    assert_eq!(pic.read_port(MASTER_DATA), 0, "IMR cleared");
    assert_eq!(pic.read_port(MASTER_COMMAND), 0, "edge requests dropped");
    // IRQ 5 is still high but must make a new low-to-high transition.
    pic.raise_irq(5);
    assert_eq!(pic.acknowledge(), None);
    pic.lower_irq(5);
    pic.raise_irq(5);
    assert_eq!(pic.acknowledge(), Some(0x35));
}

#[test]
fn icw1_keeps_level_requests_and_elcr() {
    let mut pic = initialized();
    pic.write_port(ELCR_MASTER, 1 << 5);
    pic.raise_irq(5);
    linux_init(&mut pic);
    assert_eq!(pic.read_port(ELCR_MASTER), 1 << 5);
    assert_eq!(pic.acknowledge(), Some(0x35));
}

#[test]
fn ignored_inputs_and_ports() {
    let mut pic = initialized();
    pic.raise_irq(CASCADE_IRQ);
    pic.raise_irq(16);
    pic.lower_irq(255);
    assert!(!pic.interrupt_output());
    assert_eq!(pic.read_port(0x22), 0xFF);
    pic.write_port(0x22, 0);
    assert_eq!(pic.state(), initialized().state());
}

#[test]
fn state_round_trips() {
    let mut pic = initialized();
    pic.write_port(ELCR_SLAVE, 0x02);
    pic.write_port(MASTER_DATA, 0x10);
    pulse(&mut pic, 3);
    pulse(&mut pic, 13);
    pic.acknowledge();
    pic.raise_irq(9);
    let state = pic.state();
    let mut copy = Pic::new();
    copy.restore(state).unwrap();
    assert_eq!(copy.state(), state);
    assert_eq!(copy, pic);
    assert_eq!(copy.acknowledge(), pic.acknowledge());
}

#[test]
fn restore_refuses_impossible_states() {
    let good = initialized().state();
    let cases: [Damage; 7] = [
        ("master.elcr", |s| s.master.elcr = 0x01),
        ("slave.elcr", |s| s.slave.elcr = 0x01),
        ("master.vector_base", |s| s.master.vector_base = 0x31),
        ("slave.init_step", |s| s.slave.init_step = 1),
        ("master.icw4", |s| s.master.icw4 = 0x20),
        ("slave.lowest_priority", |s| s.slave.lowest_priority = 8),
        ("master.init_step", |s| s.master.init_step = 5),
    ];
    for (field, damage) in cases {
        let mut bad = good;
        damage(&mut bad);
        let mut pic = initialized();
        let before = pic.state();
        match pic.restore(bad) {
            Err(StateError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(pic.state(), before, "unchanged after a refused restore");
    }
    let err = StateError::Invalid {
        device: "8259 PIC",
        field: "master.elcr",
        value: 1,
    };
    assert_eq!(err.to_string(), "invalid 8259 PIC state: master.elcr = 0x1");
}

#[test]
fn random_accesses_never_panic_and_keep_invariants() {
    let ports = [
        MASTER_COMMAND,
        MASTER_DATA,
        SLAVE_COMMAND,
        SLAVE_DATA,
        ELCR_MASTER,
        ELCR_SLAVE,
        0x22,
    ];
    let mut pic = initialized();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..300_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let value = (x >> 8) as u8;
        let port = ports[(x >> 20) as usize % ports.len()];
        match (x >> 32) % 8 {
            0 => {
                pic.read_port(port);
            }
            1 => pic.write_port(port, value),
            2 => pic.raise_irq(value % 20),
            3 => pic.lower_irq(value % 20),
            4 => {
                let pending = pic.pending_vector();
                assert_eq!(pending.is_some(), pic.interrupt_output());
                assert_eq!(pic.acknowledge(), pending);
            }
            5 if value < 8 => linux_init(&mut pic),
            _ => {}
        }
        let state = pic.state();
        let mut copy = Pic::new();
        assert_eq!(
            copy.restore(state),
            Ok(()),
            "every reachable state restores"
        );
        assert_eq!(state.master.elcr & !ELCR_MASTER_MASK, 0);
        assert_eq!(state.slave.elcr & !ELCR_SLAVE_MASK, 0);
    }
}
