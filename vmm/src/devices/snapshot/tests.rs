//! Whole-platform save and restore: a PC driven through a script of port, MMIO and MSR
//! accesses and time, saved half-way (through postcard bytes), restored into a new
//! platform, and both driven on by the same script must agree on every read and every
//! pending interrupt; and states a model refuses build nothing and say why.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::devices::debug_exit::{self, DebugExit};
use crate::devices::lapic::DEFAULT_BASE as APIC;
use crate::devices::pci::PciDevice;
use crate::devices::pci::tests::{NOTIFY, TestFunction};
use crate::devices::uart::{self, INPUT_CAPACITY};
use crate::devices::{COM1_BASE, Region};

const BAR0: u64 = 0xE000_0000;

/// The VM's platform as its configuration builds it: a 2-vCPU PC, the debug-exit port and
/// the PCI test function. Restores start from this too.
fn platform() -> Devices {
    let mut d = Devices::pc_for_tests_with_cpus(2);
    d.add_device(
        DebugExit::new(),
        &[Region::Ports {
            base: debug_exit::DEFAULT_PORT,
            len: debug_exit::PORT_LEN,
        }],
    )
    .unwrap();
    d.add_pci_device(TestFunction::new()).unwrap();
    d
}

/// One step of the script.
#[derive(Clone, Copy, Debug)]
enum Op {
    In(u16, u8),
    Out(u16, u8, u32),
    Load(u64, u8),
    Store(u64, u8, u64),
    RdMsr(u32),
    WrMsr(u32, u64),
    Advance(u64),
    Ack(usize),
    Input(u8),
    Cpu(usize),
}

/// Programs the interrupt sources so the script has interrupts to see: 8259s, PIT at
/// ~1 kHz, I/O APIC entries for IRQ 0/4/8, both local APICs on with a periodic timer on
/// the BSP, the UART's receive and transmit interrupts, the RTC's periodic interrupt, the
/// PCI function at BAR0 with four MSI-X vectors.
fn prelude() -> Vec<Op> {
    let mut ops = vec![];
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
        (0x43, 0x34),
        (0x40, 0xA9),
        (0x40, 0x04),
        (COM1_BASE + 1, 0x03),
        (COM1_BASE + 4, 0x08),
        (0x70, 0x0A),
        (0x71, 0x26),
        (0x70, 0x0B),
        (0x71, 0x42),
    ] {
        ops.push(Op::Out(port, 1, value));
    }
    for (pin, low) in [(2u64, 0x30u64), (4, 0x8034), (8, 0x8038)] {
        ops.push(Op::Store(0xFEC0_0000, 4, 0x10 + 2 * pin));
        ops.push(Op::Store(0xFEC0_0010, 4, low));
    }
    ops.push(Op::Cpu(1));
    ops.push(Op::Store(APIC + 0xF0, 4, 0x1FF));
    ops.push(Op::Cpu(0));
    ops.push(Op::Store(APIC + 0x3E0, 4, 0xB));
    ops.push(Op::Store(APIC + 0x320, 4, 0x2_0040));
    ops.push(Op::Store(APIC + 0x380, 4, 200_000));
    let f = 1u32 << 11;
    for (reg, size, value) in [
        (0x10, 4, BAR0 as u32),
        (0x14, 4, 0),
        (0x18, 4, 0xC000),
        (0x04, 2, 3),
        (0x40 + 2, 2, 0x8000),
    ] {
        ops.push(Op::Out(0xCF8, 4, 0x8000_0000 | f | (reg & 0xFC)));
        ops.push(Op::Out(0xCFC + (reg & 3) as u16, size, value));
    }
    for v in 0..4u64 {
        let entry = BAR0 + 0x2000 + 16 * v;
        ops.push(Op::Store(entry, 4, 0xFEE0_0000 | (v & 1) << 12));
        ops.push(Op::Store(entry + 8, 4, 0x50 + v));
        ops.push(Op::Store(entry + 12, 4, u64::from(v == 3)));
    }
    ops.push(Op::Input(b'h'));
    ops
}

/// `n` pseudo-random steps over the PC's registers, starting at VM time `t0`.
fn random_ops(seed: u64, n: usize, t0: u64) -> Vec<Op> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ports: [u16; 21] = [
        0x20, 0x21, 0xA0, 0xA1, 0x40, 0x42, 0x43, 0x61, 0x60, 0x64, 0x70, 0x71, 0x3F8, 0x3F9,
        0x3FA, 0x3FB, 0x3FD, 0x600, 0x608, 0xC004, 0x80,
    ];
    let mmio: [u64; 12] = [
        0xFEC0_0000,
        0xFEC0_0010,
        APIC + 0x80,
        APIC + 0xB0,
        APIC + 0x320,
        APIC + 0x390,
        BAR0,
        BAR0 + 4,
        BAR0 + NOTIFY,
        BAR0 + 0x2000 + 0x1C,
        BAR0 + 0x3000,
        0xFED0_0000,
    ];
    let mut now = t0;
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let r = next();
        let pick = (r >> 8) as usize;
        let size = [1u8, 2, 4][(r >> 20) as usize % 3];
        let value = (r >> 24) as u32;
        ops.push(match r % 11 {
            0 | 1 => Op::In(ports[pick % ports.len()], size),
            // Random writes to the 8259s and the keyboard controller reprogram them;
            // keep to the ones that keep interrupts flowing.
            2 => match ports[pick % ports.len()] {
                0x20 | 0xA0 => Op::Out(0x20, 1, 0x20),
                0x21 | 0xA1 | 0x64 | 0x60 => Op::Out(0x61, 1, value & 3),
                p => Op::Out(p, size, value),
            },
            3 | 4 => Op::Load(mmio[pick % mmio.len()], 4),
            5 => {
                let addr = mmio[pick % mmio.len()];
                let value = if addr == BAR0 + NOTIFY {
                    value % 4
                } else {
                    value
                };
                Op::Store(addr, 4, u64::from(value))
            }
            6 => {
                now += u64::from(value % 3_000_000);
                Op::Advance(now)
            }
            7 => Op::Ack(pick % 2),
            8 => Op::Input(value as u8),
            9 => Op::Cpu(pick % 2),
            _ => match pick % 3 {
                0 => Op::RdMsr(0x808),
                1 => Op::WrMsr(0x6E0, u64::from(value)),
                _ => Op::RdMsr(0x6E0),
            },
        });
    }
    ops
}

/// Runs `op` and returns everything the guest or the VM loop could observe after it.
fn step(d: &mut Devices, op: Op, acked: &mut usize) -> String {
    let read = match op {
        Op::In(port, size) => Some(u64::from(d.read_port(port, size))),
        Op::Out(port, size, value) => {
            d.write_port(port, size, value);
            None
        }
        Op::Load(gpa, size) => Some(d.read_mmio(gpa, size)),
        Op::Store(gpa, size, value) => {
            d.write_mmio(gpa, size, value);
            None
        }
        Op::RdMsr(msr) => d.read_msr(msr),
        Op::WrMsr(msr, value) => Some(u64::from(d.write_msr(msr, value))),
        Op::Advance(now) => {
            d.advance(now);
            d.set_guest_tsc(now * 2);
            None
        }
        Op::Ack(cpu) => {
            let vector = d.acknowledge_interrupt(cpu);
            if vector.is_some() {
                *acked += 1;
                d.set_current_cpu(cpu);
                d.write_mmio(APIC + 0xB0, 4, 0);
                d.write_port(0x20, 1, 0x20);
                d.write_port(0xA0, 1, 0x20);
            }
            vector.map(u64::from)
        }
        Op::Input(byte) => Some(d.com1_mut().push_input(&[byte]) as u64),
        Op::Cpu(cpu) => {
            d.set_current_cpu(cpu);
            None
        }
    };
    format!(
        "{op:?} -> {read:?}; pending {:?} {:?}; nmi {} {}; request {:?}; cpu requests {:?}; \
         deadline {:?}",
        d.pending_interrupt(0),
        d.pending_interrupt(1),
        d.nmi_pending(0),
        d.nmi_pending(1),
        d.take_machine_request(),
        d.take_cpu_requests(),
        d.next_deadline(),
    )
}

#[test]
fn a_restored_platform_behaves_exactly_like_the_saved_one() {
    for seed in [0x9E37_79B9_7F4A_7C15, 0x0123_4567_89AB_CDEF, 42] {
        let mut original = platform();
        let mut acked = 0;
        let first: Vec<Op> = prelude()
            .into_iter()
            .chain(random_ops(seed, 3000, 0))
            .collect();
        for &op in &first {
            step(&mut original, op, &mut acked);
        }
        let t = original.now_ns();
        let out_at_save = original.com1().output_total();

        // Saved, turned into bytes and back, restored into a newly built platform.
        let state = original.save();
        let bytes = postcard::to_allocvec(&state).unwrap();
        let decoded: DevicesState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, state);
        let mut restored = <Devices as Persist>::restore(platform(), &decoded).unwrap();
        assert_eq!(restored.save(), state, "restore(save(d)) saves the same");

        let mut acked_after = (0, 0);
        for (i, op) in random_ops(seed ^ 0xFFFF, 4000, t).into_iter().enumerate() {
            let a = step(&mut original, op, &mut acked_after.0);
            let b = step(&mut restored, op, &mut acked_after.1);
            assert_eq!(a, b, "seed {seed:#x}, step {i} after the restore");
        }
        assert_eq!(original.save(), restored.save());
        // The guest's console output after the save is the same on both.
        assert_eq!(
            original.com1().output_since(out_at_save).0,
            restored.com1().output_since(0).0
        );
        // The script saw interrupts on both sides of the save (not a vacuous comparison).
        assert!(acked > 20, "{acked} interrupts before the save");
        assert!(
            acked_after.0 > 20,
            "{} interrupts after the save",
            acked_after.0
        );
    }
}

#[test]
fn pending_state_survives_the_round_trip() {
    let mut d = platform();
    for op in prelude() {
        step(&mut d, op, &mut 0);
    }
    // An interrupt waiting in the BSP's IRR, a masked MSI-X vector pending, an NMI, INIT
    // and start-up IPIs for the VM loop, and a debug exit not yet taken.
    d.write_mmio(BAR0 + NOTIFY, 4, 3);
    d.write_mmio(BAR0 + NOTIFY, 4, 1);
    d.set_current_cpu(0);
    d.write_mmio(APIC + 0x310, 4, 1 << 24);
    d.write_mmio(APIC + 0x300, 4, 0x4400); // NMI to vCPU 1
    d.write_mmio(APIC + 0x300, 4, 0x4500); // INIT
    d.write_mmio(APIC + 0x300, 4, 0x4610); // start-up, page 0x10
    d.set_current_cpu(1);
    d.write_port(debug_exit::DEFAULT_PORT, 4, 7);
    let bytes = postcard::to_allocvec(&d.save()).unwrap();
    let mut r =
        <Devices as Persist>::restore(platform(), &postcard::from_bytes(&bytes).unwrap()).unwrap();
    assert_eq!(
        r.take_machine_request(),
        Some(MachineRequest::Exit { status: 15 })
    );
    assert_eq!(
        r.take_cpu_requests(),
        [
            CpuRequest::Init { cpu: 1 },
            CpuRequest::StartUp {
                cpu: 1,
                vector: 0x10
            }
        ]
    );
    assert!(r.nmi_pending(1) && !r.nmi_pending(0));
    assert_eq!(
        r.pending_interrupt(1),
        Some(super::super::interrupts::InterruptSource::Lapic(0x51))
    );
    assert!(
        r.pci_device::<TestFunction>(1, 0)
            .unwrap()
            .config()
            .msix_pending(3)
    );
    // The BAR mapping came back with the configuration space.
    r.write_mmio(BAR0 + 8, 4, 0xABCD);
    assert_eq!(r.read_mmio(BAR0 + 8, 4), 0xABCD);
    assert_eq!(r.read_port(0xC001, 1), 0xA1);
    // The current vCPU too: vCPU 1's APIC answers the page.
    assert_eq!(r.read_mmio(APIC + 0x20, 4), 1 << 24);
}

/// `state` with COM1's saved UART state replaced by `f` applied to it.
fn with_uart(state: &DevicesState, f: impl Fn(&mut uart::State)) -> DevicesState {
    let mut state = state.clone();
    let com1 = state.devices.iter_mut().find(|d| d.name == "COM1").unwrap();
    let mut uart: uart::State = postcard::from_bytes(&com1.state).unwrap();
    f(&mut uart);
    com1.state = postcard::to_allocvec(&uart).unwrap();
    state
}

#[test]
fn refused_states_build_nothing_and_say_why() {
    let mut d = platform();
    d.com1_mut().push_input(b"abc");
    let good = d.save();

    let err = |state: &DevicesState| {
        <Devices as Persist>::restore(platform(), state)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    // An out-of-range FIFO length.
    let bad = with_uart(&good, |u| u.rx = vec![0; INPUT_CAPACITY + 1]);
    assert_eq!(
        err(&bad),
        "COM1: invalid 16550A UART state: rx (queued input length) = 0x1001"
    );
    let bad = with_uart(&good, |u| u.ier = 0xF0);
    assert_eq!(err(&bad), "COM1: invalid 16550A UART state: ier = 0xf0");
    // Bytes that are not a UART state.
    let mut bad = good.clone();
    bad.devices
        .iter_mut()
        .find(|d| d.name == "COM1")
        .unwrap()
        .state = vec![0xFF; 3];
    assert!(
        err(&bad).starts_with("COM1: the saved COM1 state does not decode: "),
        "{}",
        err(&bad)
    );
    // Another model, the routing, the PCI function's read-only bits, a local APIC.
    let mut bad = good.clone();
    bad.interrupts.ioapic.id = 0xFF;
    assert_eq!(err(&bad), "I/O APIC: invalid I/O APIC state: id = 0xff");
    let mut bad = good.clone();
    bad.interrupts.nmi_pending = 0b100;
    assert_eq!(
        err(&bad),
        "interrupt routing: invalid interrupt routing state: nmi_pending = 0x4"
    );
    let mut bad = good.clone();
    bad.pci_functions[0].config.regs[0] ^= 1;
    assert_eq!(
        err(&bad),
        "test function: invalid test function state: config read-only bits at offset = 0x0"
    );
    let mut bad = good.clone();
    bad.pci_functions[0].config.msix_table[3] = 0x2;
    assert_eq!(
        err(&bad),
        "test function: invalid test function state: msix_table vector control of vector = 0x0"
    );
    let mut bad = good.clone();
    bad.interrupts.lapics[1].svr = 0xFFFF_FFFF;
    assert_eq!(
        err(&bad),
        "vCPU 1's local APIC: invalid local APIC state: svr = 0xffffffff"
    );
    // A platform built differently.
    assert_eq!(
        Devices::restore_pc(Devices::test_config(2), &good)
            .map(|_| ())
            .unwrap_err()
            .to_string(),
        "the saved devices do not fit this VM: devices 6 saved, 5 here (restore into a VM \
         defined like the saved one)"
    );
    let one_cpu = <Devices as Persist>::restore(Devices::pc_for_tests(), &good)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        one_cpu,
        RestoreError::PlatformMismatch {
            what: "vCPUs",
            platform: 1,
            saved: 2
        }
    );
    let mut renamed = good.clone();
    renamed.devices[2].name = "COM2".into();
    assert_eq!(
        err(&renamed),
        "the saved devices do not fit this VM: device 2 is \"COM2\" in the saved state but \
         \"COM1\" here"
    );

    // The good state still restores.
    let r = <Devices as Persist>::restore(platform(), &good).unwrap();
    assert_eq!(r.com1().pending_input(), 3);
}

#[test]
fn damaged_bytes_are_refused_by_the_decoder() {
    let state = platform().save();
    let bytes = postcard::to_allocvec(&state).unwrap();
    for len in 0..bytes.len() {
        assert!(
            postcard::from_bytes::<DevicesState>(&bytes[..len]).is_err(),
            "truncated to {len} bytes"
        );
    }
    // Every single-bit flip either fails to decode or decodes to a state that restores or
    // is refused: never a panic.
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1 << bit;
            if let Ok(state) = postcard::from_bytes::<DevicesState>(&flipped) {
                let _ = <Devices as Persist>::restore(platform(), &state);
            }
        }
    }
}

#[test]
fn every_model_round_trips_through_postcard() {
    use crate::devices::acpi_pm::{AcpiPm, TimerWidth};
    use crate::devices::i8042::I8042;
    use crate::devices::pit::Pit;
    use crate::devices::rtc::Rtc;

    fn round_trip<T: Persist>(model: &T, args: T::ConstructorArgs) -> T::State
    where
        T::State: PartialEq + core::fmt::Debug,
        T::Error: core::fmt::Debug,
    {
        let bytes = postcard::to_allocvec(&model.save()).unwrap();
        let state: T::State = postcard::from_bytes(&bytes).unwrap();
        let back = T::restore(args, &state).unwrap();
        assert_eq!(back.save(), model.save());
        state
    }
    let mut rtc = Rtc::new(1_767_225_600, 0);
    rtc.set_nvram(0x40, 0x5A);
    let state = round_trip(&rtc, ());
    assert_eq!(state.cmos[0x40], 0x5A, "all 128 CMOS bytes");
    round_trip(&Pit::new(5_000), ());
    round_trip(&I8042::new(), ());
    round_trip(
        &AcpiPm::new(5, TimerWidth::Bits24, 7).unwrap(),
        (5, TimerWidth::Bits24),
    );
    round_trip(&Pic::new(), ());
    round_trip(&Ioapic::new(3), ());
    round_trip(&PciHost::new(), ());
    let mut uart = crate::devices::Uart16550::new();
    uart.push_input(b"xyz");
    round_trip(&uart, ());
    let lapic = Lapic::new(crate::devices::pc::lapic_config(1_000_000, 1)).unwrap();
    round_trip(&lapic, crate::devices::pc::lapic_config(1_000_000, 1));
    // A CMOS image of the wrong length is refused by the decoder.
    let mut bytes = postcard::to_allocvec(&rtc.save()).unwrap();
    bytes[0] = 127;
    assert!(postcard::from_bytes::<crate::devices::rtc::State>(&bytes).is_err());
}
