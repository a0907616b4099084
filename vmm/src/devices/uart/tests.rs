use super::*;

fn write_str(uart: &mut Uart16550, s: &[u8]) {
    for &b in s {
        uart.write(reg::THR, b);
    }
}

#[test]
fn reset_state_matches_the_data_sheet() {
    let mut uart = Uart16550::new();
    assert_eq!(uart.read(reg::IER), 0);
    assert_eq!(uart.read(reg::IIR), IIR_NONE);
    assert_eq!(uart.read(reg::LCR), 0);
    assert_eq!(uart.read(reg::MCR), 0);
    assert_eq!(uart.read(reg::LSR), LSR_THRE | LSR_TEMT);
    assert_eq!(uart.read(reg::MSR), MSR_DCD | MSR_DSR | MSR_CTS);
    assert_eq!(uart.read(reg::SCR), 0);
    assert_eq!(uart.read(reg::RBR), 0);
    assert_eq!(uart.divisor(), DEFAULT_DIVISOR);
    assert!(!uart.interrupt_pending());
}

#[test]
fn thr_writes_reach_the_output_ring() {
    let mut uart = Uart16550::new();
    write_str(&mut uart, b"hello");
    assert_eq!(uart.output_since(0), (b"hello".to_vec(), 5, 0));
    assert_eq!(uart.output_since(3), (b"lo".to_vec(), 5, 0));
    assert_eq!(uart.output_since(5), (Vec::new(), 5, 0));
    assert_eq!(uart.output_since(99), (Vec::new(), 5, 0));
    assert_eq!(uart.output_total(), 5);
    assert_eq!(uart.read(reg::LSR), LSR_THRE | LSR_TEMT);
}

#[test]
fn output_ring_drops_oldest_and_reports_it() {
    let mut uart = Uart16550::new();
    let total = OUTPUT_CAPACITY + 10;
    for i in 0..total {
        uart.write(reg::THR, (i % 251) as u8);
    }
    let (bytes, next, dropped) = uart.output_since(0);
    assert_eq!(next, total as u64);
    assert_eq!(dropped, 10);
    assert_eq!(bytes.len(), OUTPUT_CAPACITY);
    assert_eq!(bytes[0], 10);
    assert_eq!(*bytes.last().unwrap(), ((total - 1) % 251) as u8);
    // A reader that was 4 bytes behind the start of the ring lost those 4.
    let (bytes, _, dropped) = uart.output_since(6);
    assert_eq!((bytes.len(), dropped), (OUTPUT_CAPACITY, 4));
    // A reader inside the ring loses nothing.
    let (bytes, _, dropped) = uart.output_since(total as u64 - 2);
    assert_eq!((bytes.len(), dropped), (2, 0));
}

#[test]
fn dlab_switches_offsets_0_and_1_to_the_divisor() {
    let mut uart = Uart16550::new();
    uart.write(reg::LCR, LCR_DLAB | 0x03);
    uart.write(reg::DLL, 0x01);
    uart.write(reg::DLM, 0x00);
    assert_eq!(uart.read(reg::DLL), 0x01);
    assert_eq!(uart.read(reg::DLM), 0x00);
    // Nothing was transmitted and IER was not touched.
    assert_eq!(uart.output_total(), 0);
    uart.write(reg::LCR, 0x03);
    assert_eq!(uart.read(reg::IER), 0);
    assert_eq!(uart.divisor(), 1);
    assert_eq!(uart.read(reg::LCR), 0x03);
}

#[test]
fn input_is_read_from_rbr_with_data_ready() {
    let mut uart = Uart16550::new();
    assert_eq!(uart.push_input(b"ab"), 2);
    assert_eq!(uart.pending_input(), 2);
    assert_eq!(uart.read(reg::LSR) & LSR_DR, LSR_DR);
    assert_eq!(uart.read(reg::RBR), b'a');
    assert_eq!(uart.read(reg::RBR), b'b');
    assert_eq!(uart.read(reg::LSR) & LSR_DR, 0);
}

#[test]
fn input_queue_is_bounded() {
    let mut uart = Uart16550::new();
    let big = vec![b'x'; INPUT_CAPACITY + 5];
    assert_eq!(uart.push_input(&big), INPUT_CAPACITY);
    assert_eq!(uart.push_input(b"y"), 0);
    uart.read(reg::RBR);
    assert_eq!(uart.push_input(b"yz"), 1);
}

#[test]
fn rx_interrupt_follows_ier_and_data() {
    let mut uart = Uart16550::new();
    uart.push_input(b"k");
    assert!(!uart.interrupt_pending(), "disabled in IER");
    uart.write(reg::IER, IER_RDA);
    assert!(uart.interrupt_pending());
    assert_eq!(uart.read(reg::IIR), IIR_RDA);
    // Reading IIR does not acknowledge received data; reading RBR does.
    assert!(uart.interrupt_pending());
    assert_eq!(uart.read(reg::RBR), b'k');
    assert!(!uart.interrupt_pending());
    assert_eq!(uart.read(reg::IIR), IIR_NONE);
}

#[test]
fn thr_empty_interrupt_rises_on_enable_and_after_each_write() {
    let mut uart = Uart16550::new();
    uart.write(reg::IER, IER_THRE);
    assert!(uart.interrupt_pending());
    // Reading IIR acknowledges it.
    assert_eq!(uart.read(reg::IIR), IIR_THRE);
    assert!(!uart.interrupt_pending());
    assert_eq!(uart.read(reg::IIR), IIR_NONE);
    // Sending a byte empties THR again at once.
    uart.write(reg::THR, b'x');
    assert!(uart.interrupt_pending());
    // Disabling drops it; re-enabling raises it again.
    uart.write(reg::IER, 0);
    assert!(!uart.interrupt_pending());
    uart.write(reg::IER, IER_THRE);
    assert_eq!(uart.read(reg::IIR), IIR_THRE);
    // Rewriting the same IER value is not a rising edge.
    uart.write(reg::IER, IER_THRE);
    assert!(!uart.interrupt_pending());
}

#[test]
fn rx_data_outranks_thr_empty() {
    let mut uart = Uart16550::new();
    uart.write(reg::IER, IER_RDA | IER_THRE);
    uart.push_input(b"z");
    assert_eq!(uart.read(reg::IIR), IIR_RDA);
    uart.read(reg::RBR);
    assert_eq!(uart.read(reg::IIR), IIR_THRE);
}

#[test]
fn fifo_control_shows_in_iir_and_clears_input() {
    let mut uart = Uart16550::new();
    uart.push_input(b"abc");
    uart.write(reg::FCR, FCR_ENABLE | 0xC0);
    // Turning the FIFOs on cleared them.
    assert_eq!(uart.pending_input(), 0);
    assert_eq!(uart.read(reg::IIR), IIR_FIFO_ENABLED | IIR_NONE);
    uart.push_input(b"abc");
    uart.write(reg::FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
    assert_eq!(uart.pending_input(), 0);
    uart.push_input(b"d");
    uart.write(reg::FCR, FCR_ENABLE);
    assert_eq!(uart.pending_input(), 1, "no change, no clear");
    uart.write(reg::FCR, 0);
    assert_eq!(uart.read(reg::IIR), IIR_NONE);
    assert_eq!(uart.pending_input(), 0);
}

#[test]
fn loopback_routes_thr_to_rbr_and_mcr_to_msr() {
    let mut uart = Uart16550::new();
    // Linux's 8250 probe: loopback with OUT2 and RTS must show DCD and CTS.
    uart.write(reg::MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);
    assert_eq!(uart.read(reg::MSR) & 0xF0, MSR_DCD | MSR_CTS);
    uart.write(reg::THR, b'q');
    assert_eq!(
        uart.output_total(),
        0,
        "loopback output does not leave the chip"
    );
    assert_eq!(uart.read(reg::LSR) & LSR_DR, LSR_DR);
    assert_eq!(uart.read(reg::RBR), b'q');
    // Serial input is disconnected in loopback.
    assert_eq!(uart.push_input(b"x"), 0);
    uart.write(reg::MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
    assert_eq!(uart.read(reg::MCR), MCR_DTR | MCR_RTS | MCR_OUT2);
    assert_eq!(uart.push_input(b"x"), 1);
}

#[test]
fn modem_status_deltas_latch_and_interrupt() {
    let mut uart = Uart16550::new();
    uart.write(reg::MCR, MCR_LOOP | MCR_OUT1);
    // Entering loopback dropped DCD, DSR and CTS; OUT1 raised RI.
    assert_eq!(uart.read(reg::MSR), MSR_RI | MSR_DCTS | MSR_DDSR | MSR_DDCD);
    assert_eq!(uart.read(reg::MSR), MSR_RI, "deltas clear on read");
    uart.write(reg::IER, IER_MS);
    uart.write(reg::MCR, MCR_LOOP);
    assert!(uart.interrupt_pending());
    assert_eq!(uart.read(reg::IIR), IIR_MS);
    assert_eq!(uart.read(reg::MSR), MSR_TERI);
    assert!(!uart.interrupt_pending());
}

#[test]
fn loopback_overrun_sets_oe_and_line_status_interrupt() {
    let mut uart = Uart16550::new();
    uart.write(reg::MCR, MCR_LOOP);
    for _ in 0..=INPUT_CAPACITY {
        uart.write(reg::THR, 0);
    }
    uart.write(reg::IER, IER_RLS);
    assert_eq!(uart.read(reg::IIR), IIR_RLS);
    assert_eq!(uart.read(reg::LSR) & LSR_OE, LSR_OE);
    assert_eq!(uart.read(reg::LSR) & LSR_OE, 0, "errors clear on read");
    assert!(!uart.interrupt_pending());
}

#[test]
fn masked_bits_and_unknown_offsets() {
    let mut uart = Uart16550::new();
    uart.write(reg::IER, 0xFF);
    assert_eq!(uart.read(reg::IER), IER_MASK);
    uart.write(reg::MCR, 0xFF);
    assert_eq!(uart.read(reg::MCR), MCR_MASK);
    uart.write(reg::MCR, 0);
    uart.write(reg::SCR, 0x5A);
    assert_eq!(uart.read(reg::SCR), 0x5A);
    uart.write(reg::LSR, 0);
    uart.write(reg::MSR, 0);
    assert_eq!(uart.read(reg::LSR), LSR_THRE | LSR_TEMT);
    uart.write(8, 1);
    assert_eq!(uart.read(8), 0xFF);
    assert_eq!(uart.read(255), 0xFF);
}

#[test]
fn state_round_trips_and_restore_masks() {
    let mut uart = Uart16550::new();
    uart.write(reg::LCR, LCR_DLAB);
    uart.write(reg::DLL, 3);
    uart.write(reg::LCR, 0x1B);
    uart.write(reg::IER, IER_RDA | IER_THRE);
    uart.write(reg::FCR, FCR_ENABLE | 0x40);
    uart.write(reg::MCR, MCR_DTR | MCR_OUT2);
    uart.write(reg::SCR, 9);
    uart.push_input(b"in");
    write_str(&mut uart, b"out");
    let state = uart.state();

    let mut copy = Uart16550::new();
    copy.restore(state.clone()).unwrap();
    assert_eq!(copy.state(), state);
    assert_eq!(copy.read(reg::IIR), IIR_FIFO_ENABLED | IIR_RDA);
    assert_eq!(copy.read(reg::RBR), b'i');
    assert_eq!(copy.output_total(), 0, "output history is not device state");

    // Every impossible field is refused by name, and the model stays as it was.
    let mut bad = Uart16550::new();
    let before = bad.state();
    for (state, field, value) in [
        (
            State {
                ier: 0xFF,
                ..State::default()
            },
            "ier",
            0xFF,
        ),
        (
            State {
                mcr: 0xFF,
                ..State::default()
            },
            "mcr",
            0xFF,
        ),
        (
            State {
                fcr: 0x3E,
                ..State::default()
            },
            "fcr",
            0x3E,
        ),
        (
            State {
                fcr: FCR_ENABLE | FCR_CLEAR_RX,
                ..State::default()
            },
            "fcr",
            3,
        ),
        (
            State {
                lsr_errors: 0xFF,
                ..State::default()
            },
            "lsr_errors",
            0xFF,
        ),
        (
            State {
                msr_deltas: 0xFF,
                ..State::default()
            },
            "msr_deltas",
            0xFF,
        ),
        (
            State {
                rx: vec![0; INPUT_CAPACITY + 1],
                ..State::default()
            },
            "rx (queued input length)",
            INPUT_CAPACITY as u64 + 1,
        ),
    ] {
        assert_eq!(
            bad.restore(state),
            Err(StateError::Invalid {
                device: NAME,
                field,
                value
            }),
            "{field}"
        );
        assert_eq!(bad.state(), before, "unchanged after refusing {field}");
    }
    // A full input queue is still a state a UART can be in.
    let full = State {
        rx: vec![7; INPUT_CAPACITY],
        ..State::default()
    };
    bad.restore(full.clone()).unwrap();
    assert_eq!(bad.state(), full);
}

#[test]
fn any_register_sequence_keeps_invariants() {
    // A cheap deterministic fuzz: no sequence of guest accesses panics, THRE and TEMT stay
    // set, and DR agrees with the queue.
    let mut uart = Uart16550::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let offset = (x & 7) as u8;
        let value = (x >> 8) as u8;
        match (x >> 16) % 4 {
            0 => {
                uart.read(offset);
            }
            1 | 2 => uart.write(offset, value),
            _ => {
                uart.push_input(&[value]);
            }
        }
        let lsr = uart.lsr();
        assert_eq!(lsr & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
        assert_eq!(lsr & LSR_DR == 0, uart.pending_input() == 0);
        assert!(uart.pending_input() <= INPUT_CAPACITY);
    }
}

/// A polled console write as Linux's `serial8250_console_putchar` and `earlyprintk` do it:
/// poll LSR until THRE, then write THR. `max_polls` bounds the wait like their timeouts.
fn polled_write(uart: &mut Uart16550, bytes: &[u8], max_polls: u32) {
    for &b in bytes {
        for _ in 0..max_polls {
            if uart.read(reg::LSR) & LSR_THRE != 0 {
                break;
            }
        }
        uart.write(reg::THR, b);
    }
}

#[test]
fn a_polled_console_write_costs_one_lsr_read_and_one_thr_write_per_byte() {
    let mut uart = Uart16550::new();
    let line = b"[    0.000000] Linux version 6.1.0\r\n";
    polled_write(&mut uart, line, 10_000);
    // The end-of-write wait for both THRE and TEMT is answered at once too.
    assert_eq!(
        uart.read(reg::LSR) & (LSR_THRE | LSR_TEMT),
        LSR_THRE | LSR_TEMT
    );
    let n = line.len() as u64;
    assert_eq!(
        uart.access_counts(),
        AccessCounts {
            thr_writes: n,
            lsr_reads: n + 1,
            other: 0
        }
    );
    assert_eq!(uart.output_since(0).0, line.to_vec());
}

#[test]
fn a_fifo_console_write_polls_lsr_once_per_sixteen_bytes() {
    // Linux 6.x's FIFO console path: wait for THRE once, then fill the 16-byte FIFO.
    let mut uart = Uart16550::new();
    uart.write(reg::FCR, FCR_ENABLE);
    let text: Vec<u8> = (0..64u8).map(|i| b'a' + i % 26).collect();
    for chunk in text.chunks(16) {
        assert_ne!(uart.read(reg::LSR) & LSR_THRE, 0);
        write_str(&mut uart, chunk);
    }
    let counts = uart.access_counts();
    assert_eq!(
        (counts.thr_writes, counts.lsr_reads, counts.other),
        (64, 4, 1)
    );
    assert_eq!(counts.total(), 69);
}

#[test]
fn access_counts_sort_by_register_and_survive_a_restore() {
    let mut uart = Uart16550::new();
    uart.write(reg::LCR, LCR_DLAB);
    // Offset 0 with DLAB set is the divisor latch, not THR.
    uart.write(reg::DLL, 1);
    uart.write(reg::LCR, 0x03);
    uart.write(reg::THR, b'x');
    uart.read(reg::IIR);
    uart.read(reg::LSR);
    let counts = AccessCounts {
        thr_writes: 1,
        lsr_reads: 1,
        other: 4,
    };
    assert_eq!(uart.access_counts(), counts);
    let mut restored = <Uart16550 as Persist>::restore((), &uart.save()).unwrap();
    assert_eq!(restored.access_counts(), AccessCounts::default());
    restored.keep_output_of(&uart);
    assert_eq!(restored.access_counts(), counts);
    assert_eq!(restored.output_total(), 1);
}
