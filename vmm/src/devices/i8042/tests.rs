use super::*;

/// A field name and a way to damage a state in it.
type Damage = (&'static str, fn(&mut State, Output));

/// A controller command with its reply, polled the way Linux's `i8042_command` does.
fn command(kbc: &mut I8042, command: u8) -> Option<u8> {
    kbc.write_port(COMMAND_PORT, command);
    (kbc.read_port(COMMAND_PORT) & STATUS_OBF != 0).then(|| kbc.read_port(DATA_PORT))
}

fn command_with_data(kbc: &mut I8042, command: u8, data: u8) -> Option<u8> {
    kbc.write_port(COMMAND_PORT, command);
    kbc.write_port(DATA_PORT, data);
    (kbc.read_port(COMMAND_PORT) & STATUS_OBF != 0).then(|| kbc.read_port(DATA_PORT))
}

/// Everything waiting in the output buffer.
fn drain(kbc: &mut I8042) -> Vec<u8> {
    let mut out = Vec::new();
    while kbc.read_port(COMMAND_PORT) & STATUS_OBF != 0 {
        out.push(kbc.read_port(DATA_PORT));
    }
    out
}

fn keyboard(kbc: &mut I8042, bytes: &[u8]) -> Vec<u8> {
    for &b in bytes {
        kbc.write_port(DATA_PORT, b);
    }
    drain(kbc)
}

#[test]
fn power_up_state() {
    let mut kbc = I8042::new();
    assert_eq!(kbc.read_port(COMMAND_PORT), STATUS_SYS | STATUS_UNLOCKED);
    assert_eq!(command(&mut kbc, cmd::READ_CTR), Some(CTR_DEFAULT));
    assert_eq!(
        command(&mut kbc, cmd::READ_OUTPUT),
        Some(OUTPORT_RESET | OUTPORT_A20)
    );
    assert!(!kbc.reset_requested());
    assert!(!kbc.irq1_level() && !kbc.irq12_level());
}

#[test]
fn linux_i8042_probe() {
    // drivers/input/serio/i8042.c: flush, self-test, CTR read/write, AUX detection.
    let mut kbc = I8042::new();
    assert!(drain(&mut kbc).is_empty(), "flush finds nothing");
    assert_eq!(command(&mut kbc, cmd::SELF_TEST), Some(0x55));
    let ctr = command(&mut kbc, cmd::READ_CTR).unwrap();
    let new_ctr = (ctr | CTR_KBD_DISABLE) & !CTR_KBD_INT;
    assert_eq!(command_with_data(&mut kbc, cmd::WRITE_CTR, new_ctr), None);
    assert_eq!(command(&mut kbc, cmd::READ_CTR), Some(new_ctr));
    // AUX loopback: the byte comes back as auxiliary data.
    kbc.write_port(COMMAND_PORT, cmd::WRITE_AUX_OUTPUT);
    kbc.write_port(DATA_PORT, 0x5A);
    let status = kbc.read_port(COMMAND_PORT);
    assert_eq!(
        status & (STATUS_OBF | STATUS_AUX_OBF),
        STATUS_OBF | STATUS_AUX_OBF
    );
    assert_eq!(kbc.read_port(DATA_PORT), 0x5A);
    assert_eq!(command(&mut kbc, cmd::AUX_TEST), Some(0x00));
    // Bit assignment test: 0xA7 sets CTR bit 5, 0xA8 clears it.
    assert_eq!(command(&mut kbc, cmd::AUX_DISABLE), None);
    assert_ne!(
        command(&mut kbc, cmd::READ_CTR).unwrap() & CTR_AUX_DISABLE,
        0
    );
    assert_eq!(command(&mut kbc, cmd::AUX_ENABLE), None);
    assert_eq!(
        command(&mut kbc, cmd::READ_CTR).unwrap() & CTR_AUX_DISABLE,
        0
    );
    assert_eq!(command(&mut kbc, cmd::KBD_TEST), Some(0x00));
    // Enable the keyboard port again.
    command(&mut kbc, cmd::KBD_ENABLE);
    assert_eq!(
        command(&mut kbc, cmd::READ_CTR).unwrap() & CTR_KBD_DISABLE,
        0
    );
}

#[test]
fn keyboard_answers_atkbd() {
    let mut kbc = I8042::new();
    assert_eq!(keyboard(&mut kbc, &[0xFF]), [kbd::ACK, kbd::BAT_OK]);
    assert_eq!(
        keyboard(&mut kbc, &[0xF2]),
        [kbd::ACK, kbd::ID, kbd::ID_MF2_XLATE]
    );
    assert_eq!(keyboard(&mut kbc, &[0xED, 0x07]), [kbd::ACK, kbd::ACK]);
    assert_eq!(keyboard(&mut kbc, &[0xF3, 0x20]), [kbd::ACK, kbd::ACK]);
    assert_eq!(keyboard(&mut kbc, &[0xEE]), [kbd::ECHO]);
    assert_eq!(keyboard(&mut kbc, &[0xF0, 0x00]), [kbd::ACK, kbd::ACK, 2]);
    assert_eq!(keyboard(&mut kbc, &[0xF0, 0x03]), [kbd::ACK, kbd::ACK]);
    assert_eq!(keyboard(&mut kbc, &[0xF0, 0x00]), [kbd::ACK, kbd::ACK, 3]);
    assert_eq!(keyboard(&mut kbc, &[0xF5]), [kbd::ACK]);
    assert!(!kbc.state().kbd_scanning);
    assert_eq!(keyboard(&mut kbc, &[0xF4]), [kbd::ACK]);
    assert!(kbc.state().kbd_scanning);
    assert_eq!(keyboard(&mut kbc, &[0xF6, 0xFA]), [kbd::ACK, kbd::ACK]);
    assert_eq!(keyboard(&mut kbc, &[0x12]), [kbd::NAK]);
    // Untranslated identify.
    command_with_data(&mut kbc, cmd::WRITE_CTR, CTR_SYS);
    assert_eq!(
        keyboard(&mut kbc, &[0xF2]),
        [kbd::ACK, kbd::ID, kbd::ID_MF2]
    );
}

#[test]
fn disabled_keyboard_holds_its_bytes() {
    let mut kbc = I8042::new();
    kbc.write_port(DATA_PORT, 0xF2);
    kbc.write_port(COMMAND_PORT, cmd::KBD_DISABLE);
    // The ACK was already in the output buffer; the rest waits in the keyboard.
    assert_eq!(drain(&mut kbc), [kbd::ACK]);
    // Controller replies pass; the keyboard's wait.
    assert_eq!(command(&mut kbc, cmd::SELF_TEST), Some(0x55));
    assert_eq!(kbc.read_port(COMMAND_PORT) & STATUS_OBF, 0);
    kbc.write_port(COMMAND_PORT, cmd::KBD_ENABLE);
    assert_eq!(drain(&mut kbc), [kbd::ID, kbd::ID_MF2_XLATE]);
    // A byte already in the output buffer stays readable when the interface is disabled.
    kbc.write_port(DATA_PORT, 0xEE);
    kbc.write_port(COMMAND_PORT, cmd::KBD_DISABLE);
    assert_eq!(drain(&mut kbc), [kbd::ECHO]);
    // A byte sent to the keyboard enables its interface.
    assert_eq!(keyboard(&mut kbc, &[0xEE]), [kbd::ECHO]);
    assert_eq!(
        command(&mut kbc, cmd::READ_CTR).unwrap() & CTR_KBD_DISABLE,
        0
    );
}

#[test]
fn no_mouse_answers_with_a_timeout() {
    let mut kbc = I8042::new();
    command_with_data(&mut kbc, cmd::WRITE_CTR, CTR_DEFAULT | CTR_AUX_INT);
    kbc.write_port(COMMAND_PORT, cmd::WRITE_AUX);
    kbc.write_port(DATA_PORT, 0xF2);
    let status = kbc.read_port(COMMAND_PORT);
    assert_eq!(
        status & (STATUS_OBF | STATUS_AUX_OBF | STATUS_TIMEOUT),
        STATUS_OBF | STATUS_AUX_OBF | STATUS_TIMEOUT
    );
    assert!(kbc.irq12_level());
    assert!(!kbc.irq1_level());
    assert_eq!(kbc.take_irq_edges(), (0, 1));
    assert_eq!(kbc.read_port(DATA_PORT), kbd::NAK);
    assert!(!kbc.irq12_level());
}

#[test]
fn one_interrupt_edge_per_byte() {
    let mut kbc = I8042::new();
    kbc.write_port(DATA_PORT, 0xFF);
    assert!(kbc.irq1_level());
    assert_eq!(kbc.take_irq_edges(), (1, 0));
    assert_eq!(kbc.take_irq_edges(), (0, 0), "taken");
    kbc.read_port(DATA_PORT);
    assert!(kbc.irq1_level(), "BAT byte next");
    assert_eq!(kbc.take_irq_edges(), (1, 0));
    kbc.read_port(DATA_PORT);
    assert!(!kbc.irq1_level());
    assert_eq!(kbc.take_irq_edges(), (0, 0));
    // Status reads and repeated data reads make no edges.
    kbc.read_port(COMMAND_PORT);
    assert_eq!(kbc.read_port(DATA_PORT), kbd::BAT_OK, "stale byte");
    assert_eq!(kbc.take_irq_edges(), (0, 0));
}

#[test]
fn interrupt_enable_gates_edges() {
    let mut kbc = I8042::new();
    command_with_data(&mut kbc, cmd::WRITE_CTR, CTR_SYS);
    kbc.write_port(DATA_PORT, 0xEE);
    assert!(!kbc.irq1_level());
    assert_eq!(kbc.take_irq_edges(), (0, 0));
    // Enabling the interrupt with a byte waiting raises it.
    command_with_data(&mut kbc, cmd::WRITE_CTR, CTR_SYS | CTR_KBD_INT);
    // (The CTR write made no reply, so the echo is still the current byte.)
    assert_eq!(kbc.take_irq_edges(), (1, 0));
    assert_eq!(kbc.read_port(DATA_PORT), kbd::ECHO);
}

#[test]
fn reset_requests() {
    let mut kbc = I8042::new();
    command(&mut kbc, cmd::RESET);
    assert!(kbc.reset_requested());
    assert!(kbc.take_reset_request());
    assert!(!kbc.reset_requested());
    command(&mut kbc, 0xF1); // bit 0 high: no pulse on the reset line
    assert!(!kbc.reset_requested());
    command(&mut kbc, 0xF0);
    assert!(kbc.take_reset_request());
    command_with_data(&mut kbc, cmd::WRITE_OUTPUT, OUTPORT_A20 | OUTPORT_RESET);
    assert!(!kbc.reset_requested());
    command_with_data(&mut kbc, cmd::WRITE_OUTPUT, OUTPORT_A20);
    assert!(kbc.reset_requested());
}

#[test]
fn output_port_a20_and_ram() {
    let mut kbc = I8042::new();
    command(&mut kbc, cmd::A20_DISABLE);
    assert_eq!(command(&mut kbc, cmd::READ_OUTPUT), Some(OUTPORT_RESET));
    command(&mut kbc, cmd::A20_ENABLE);
    // With a byte waiting, the output port shows OBF.
    kbc.write_port(DATA_PORT, 0xEE);
    kbc.write_port(COMMAND_PORT, cmd::READ_OUTPUT);
    assert_eq!(kbc.read_port(DATA_PORT), kbd::ECHO);
    assert_eq!(
        kbc.read_port(DATA_PORT),
        OUTPORT_RESET | OUTPORT_A20 | OUTPORT_OBF
    );
    assert_eq!(command_with_data(&mut kbc, 0x65, 0x99), None);
    assert_eq!(command(&mut kbc, 0x25), Some(0x99));
    assert_eq!(command(&mut kbc, cmd::READ_INPUT), Some(0x80));
    assert_eq!(command(&mut kbc, cmd::READ_TEST), Some(0x00));
    // CTR bit 2 drives the status SYS flag.
    command_with_data(&mut kbc, cmd::WRITE_CTR, 0);
    assert_eq!(kbc.read_port(COMMAND_PORT) & STATUS_SYS, 0);
    command(&mut kbc, cmd::SELF_TEST);
    assert_ne!(kbc.read_port(COMMAND_PORT) & STATUS_SYS, 0);
}

#[test]
fn status_command_bit_and_unknown_ports() {
    let mut kbc = I8042::new();
    kbc.write_port(COMMAND_PORT, 0x00); // unknown command: ignored
    assert_ne!(kbc.read_port(COMMAND_PORT) & STATUS_CMD, 0);
    kbc.write_port(DATA_PORT, 0xEE);
    assert_eq!(kbc.read_port(COMMAND_PORT) & STATUS_CMD, 0);
    assert_eq!(kbc.read_port(0x61), 0xFF);
    kbc.write_port(0x61, 0);
    // A command cancels a pending one's data phase.
    kbc.write_port(COMMAND_PORT, cmd::WRITE_CTR);
    kbc.write_port(COMMAND_PORT, cmd::KBD_TEST);
    assert_eq!(drain(&mut kbc), [kbd::ECHO, 0x00]);
    kbc.write_port(DATA_PORT, 0xEE);
    assert_eq!(drain(&mut kbc), [kbd::ECHO], "went to the keyboard");
}

#[test]
fn output_queue_is_bounded() {
    let mut kbc = I8042::new();
    for _ in 0..20 {
        kbc.write_port(DATA_PORT, 0xF2);
    }
    assert_eq!(kbc.state().output.len(), OUTPUT_CAPACITY);
    assert_eq!(drain(&mut kbc).len(), OUTPUT_CAPACITY);
}

#[test]
fn state_round_trips() {
    let mut kbc = I8042::new();
    kbc.write_port(DATA_PORT, 0xF2);
    kbc.read_port(DATA_PORT);
    kbc.write_port(DATA_PORT, 0xF0);
    kbc.write_port(COMMAND_PORT, cmd::WRITE_CTR);
    let state = kbc.state();
    let mut copy = I8042::new();
    copy.restore(state.clone()).unwrap();
    assert_eq!(copy, kbc);
    assert_eq!(drain(&mut copy), drain(&mut kbc));
    assert_eq!(copy.take_irq_edges(), kbc.take_irq_edges());
}

#[test]
fn restore_refuses_impossible_states() {
    let good = I8042::new().state();
    let junk = Output {
        value: 0,
        source: Source::Keyboard,
        timeout: false,
        from_device: true,
        serial: 0,
    };
    let cases: [Damage; 6] = [
        ("loaded", |s, _| s.loaded = Some(0)),
        ("output", |s, o| s.output = vec![o; OUTPUT_CAPACITY + 1]),
        ("next_serial", |s, o| s.output = vec![o]),
        ("pending_command", |s, _| {
            s.pending_command = Some(cmd::SELF_TEST)
        }),
        ("kbd_pending", |s, _| s.kbd_pending = Some(0xFF)),
        ("kbd_scan_set", |s, _| s.kbd_scan_set = 0),
    ];
    for (field, damage) in cases {
        let mut bad = good.clone();
        damage(&mut bad, junk);
        let mut kbc = I8042::new();
        match kbc.restore(bad) {
            Err(StateError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(kbc.state(), good);
    }
    assert_eq!(
        StateError::Invalid {
            device: "i8042",
            field: "kbd_scan_set",
            value: 0
        }
        .to_string(),
        "invalid i8042 state: kbd_scan_set = 0x0"
    );
}

#[test]
fn random_accesses_never_panic() {
    let mut x: u64 = 0x853C_49E6_748F_EA9B;
    let mut kbc = I8042::new();
    for i in 0..200_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = [DATA_PORT, COMMAND_PORT, 0x61][(x % 3) as usize];
        let value = (x >> 8) as u8;
        match (x >> 16) % 4 {
            0 | 1 => kbc.write_port(port, value),
            2 => {
                kbc.read_port(port);
            }
            _ => {
                let (a, b) = kbc.take_irq_edges();
                assert!(a <= 1 + OUTPUT_CAPACITY as u32 * 2 && b <= 1 + OUTPUT_CAPACITY as u32 * 2);
                kbc.take_reset_request();
            }
        }
        assert!(kbc.state().output.len() <= OUTPUT_CAPACITY);
        if i % 32 == 0 {
            assert_eq!(I8042::new().restore(kbc.state()), Ok(()));
        }
    }
}
