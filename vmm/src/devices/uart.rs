//! A 16550A UART (the PC's COM ports), as a register state machine.
//!
//! The model follows the National Semiconductor / TI *PC16550D UART with FIFOs* data sheet
//! (register summary table 2, "Register Addresses"). Eight byte-wide registers sit at offsets
//! 0..=7 from the base port; LCR.DLAB (bit 7) switches offsets 0 and 1 from RBR/THR and IER to
//! the divisor latch DLL/DLM.
//!
//! What the model simplifies, and why:
//!
//! - **Transmission is instant.** A byte written to THR goes straight to the output ring, so
//!   LSR always shows THRE and TEMT and the THR-empty interrupt re-arms right after each write.
//!   The divisor and line format are stored (a guest reads back what it wrote) but do not
//!   pace anything.
//! - **Input waits in a host-side queue.** [`Uart16550::push_input`] queues up to
//!   [`INPUT_CAPACITY`] bytes; LSR.DR is set while any is queued and RBR pops one. The queue
//!   stands in for the 16-byte receive FIFO plus perfect flow control: the host learns how many
//!   bytes were accepted and keeps the rest, instead of the guest seeing an overrun.
//!   "Received data available" is raised as soon as one byte is queued (the character-timeout
//!   indication, IIR = 0xC, is never used; drivers treat both alike).
//! - **Modem lines.** Outside loopback the lines read as a connected terminal: DCD, DSR and
//!   CTS set, RI clear. In loopback (MCR bit 4) they follow MCR as the data sheet wires them
//!   (RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD), THR writes loop back into the receive queue, and
//!   the serial input is disconnected: `push_input` accepts nothing.
//! - **Interrupt line.** [`Uart16550::interrupt_pending`] reports whether IIR has an interrupt
//!   to identify; gating by MCR.OUT2 (how PC boards wire the IRQ) is left to the interrupt
//!   controller that will consume it.
//!
//! The output ring keeps the last [`OUTPUT_CAPACITY`] bytes the guest wrote and a running total,
//! so a reader can ask for "everything since offset N" and learn how much it missed
//! ([`Uart16550::output_since`]).
//!
//! [`AccessCounts`] counts the guest's register accesses by kind — each one is an exit —
//! so a benchmark can tell what printing costs: a polled console write (Linux's
//! `serial8250_console_putchar`, its `earlyprintk`) is one LSR read and one THR write per
//! byte, because THRE is set on the first read after every write; the THR write itself stays
//! one exit per byte, the floor for a guest that writes port I/O.
//!
//! [`State`] holds every register and the pending input for snapshots; the output ring is host
//! console history and is not part of it.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::persist::Persist;

/// Bytes of guest output kept for readers; older bytes are dropped first.
pub const OUTPUT_CAPACITY: usize = 64 * 1024;

/// Bytes of host input that can wait for the guest to read them.
pub const INPUT_CAPACITY: usize = 4096;

/// Register offsets from the base port (data sheet table 2).
pub mod reg {
    /// Receiver Buffer Register (read, DLAB = 0).
    pub const RBR: u8 = 0;
    /// Transmitter Holding Register (write, DLAB = 0).
    pub const THR: u8 = 0;
    /// Divisor Latch, least significant byte (DLAB = 1).
    pub const DLL: u8 = 0;
    /// Interrupt Enable Register (DLAB = 0).
    pub const IER: u8 = 1;
    /// Divisor Latch, most significant byte (DLAB = 1).
    pub const DLM: u8 = 1;
    /// Interrupt Identification Register (read).
    pub const IIR: u8 = 2;
    /// FIFO Control Register (write).
    pub const FCR: u8 = 2;
    /// Line Control Register.
    pub const LCR: u8 = 3;
    /// Modem Control Register.
    pub const MCR: u8 = 4;
    /// Line Status Register (read; writes are ignored).
    pub const LSR: u8 = 5;
    /// Modem Status Register (read; writes are ignored).
    pub const MSR: u8 = 6;
    /// Scratch Register.
    pub const SCR: u8 = 7;
}

/// IER: enable "received data available".
pub const IER_RDA: u8 = 0x01;
/// IER: enable "transmitter holding register empty".
pub const IER_THRE: u8 = 0x02;
/// IER: enable "receiver line status".
pub const IER_RLS: u8 = 0x04;
/// IER: enable "modem status".
pub const IER_MS: u8 = 0x08;
/// IER bits that exist (the upper four read as 0).
pub const IER_MASK: u8 = 0x0F;

/// IIR: no interrupt pending (bit 0 set).
pub const IIR_NONE: u8 = 0x01;
/// IIR: receiver line status (priority 1, highest).
pub const IIR_RLS: u8 = 0x06;
/// IIR: received data available (priority 2).
pub const IIR_RDA: u8 = 0x04;
/// IIR: transmitter holding register empty (priority 3).
pub const IIR_THRE: u8 = 0x02;
/// IIR: modem status (priority 4, lowest).
pub const IIR_MS: u8 = 0x00;
/// IIR bits 7:6: FIFOs enabled (FCR bit 0).
pub const IIR_FIFO_ENABLED: u8 = 0xC0;

/// FCR: enable the FIFOs.
pub const FCR_ENABLE: u8 = 0x01;
/// FCR: clear the receive FIFO (self-clearing).
pub const FCR_CLEAR_RX: u8 = 0x02;
/// FCR: clear the transmit FIFO (self-clearing).
pub const FCR_CLEAR_TX: u8 = 0x04;
/// FCR: DMA mode select.
pub const FCR_DMA: u8 = 0x08;
/// FCR bits 7:6: receive FIFO trigger level.
pub const FCR_TRIGGER: u8 = 0xC0;

/// LCR: Divisor Latch Access Bit.
pub const LCR_DLAB: u8 = 0x80;

/// MCR: Data Terminal Ready.
pub const MCR_DTR: u8 = 0x01;
/// MCR: Request To Send.
pub const MCR_RTS: u8 = 0x02;
/// MCR: OUT1.
pub const MCR_OUT1: u8 = 0x04;
/// MCR: OUT2 (gates the IRQ line on PC boards).
pub const MCR_OUT2: u8 = 0x08;
/// MCR: loopback mode.
pub const MCR_LOOP: u8 = 0x10;
/// MCR bits that exist (the upper three read as 0).
pub const MCR_MASK: u8 = 0x1F;

/// LSR: Data Ready.
pub const LSR_DR: u8 = 0x01;
/// LSR: Overrun Error.
pub const LSR_OE: u8 = 0x02;
/// LSR: Parity Error.
pub const LSR_PE: u8 = 0x04;
/// LSR: Framing Error.
pub const LSR_FE: u8 = 0x08;
/// LSR: Break Interrupt.
pub const LSR_BI: u8 = 0x10;
/// LSR: Transmitter Holding Register Empty.
pub const LSR_THRE: u8 = 0x20;
/// LSR: Transmitter Empty.
pub const LSR_TEMT: u8 = 0x40;
/// LSR: error in the receive FIFO.
pub const LSR_FIFO_ERROR: u8 = 0x80;
/// LSR error bits cleared by reading LSR.
pub const LSR_ERRORS: u8 = LSR_OE | LSR_PE | LSR_FE | LSR_BI;

/// MSR: Delta Clear To Send.
pub const MSR_DCTS: u8 = 0x01;
/// MSR: Delta Data Set Ready.
pub const MSR_DDSR: u8 = 0x02;
/// MSR: Trailing Edge Ring Indicator.
pub const MSR_TERI: u8 = 0x04;
/// MSR: Delta Data Carrier Detect.
pub const MSR_DDCD: u8 = 0x08;
/// MSR: Clear To Send.
pub const MSR_CTS: u8 = 0x10;
/// MSR: Data Set Ready.
pub const MSR_DSR: u8 = 0x20;
/// MSR: Ring Indicator.
pub const MSR_RI: u8 = 0x40;
/// MSR: Data Carrier Detect.
pub const MSR_DCD: u8 = 0x80;
/// MSR delta bits, cleared by reading MSR.
pub const MSR_DELTAS: u8 = MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD;

/// The modem lines outside loopback: a terminal is connected.
const CONNECTED_LINES: u8 = MSR_DCD | MSR_DSR | MSR_CTS;

/// The name this model gives in errors.
pub const NAME: &str = "16550A UART";

/// Divisor after reset: 12, i.e. 9600 baud from the PC's 1.8432 MHz clock (the data sheet
/// leaves the latch undefined at reset).
pub const DEFAULT_DIVISOR: u16 = 12;

/// Every guest-visible register of a [`Uart16550`] and its pending input, for snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Interrupt Enable Register.
    pub ier: u8,
    /// Line Control Register.
    pub lcr: u8,
    /// Modem Control Register.
    pub mcr: u8,
    /// FIFO control as last written (enable, DMA mode, trigger level).
    pub fcr: u8,
    /// Scratch Register.
    pub scr: u8,
    /// Divisor Latch LSB.
    pub dll: u8,
    /// Divisor Latch MSB.
    pub dlm: u8,
    /// Pending LSR error bits (OE, PE, FE, BI).
    pub lsr_errors: u8,
    /// Pending MSR delta bits (DCTS, DDSR, TERI, DDCD).
    pub msr_deltas: u8,
    /// Whether a THR-empty interrupt is pending (cleared by reading IIR or writing THR).
    pub thr_interrupt: bool,
    /// Bytes waiting in the receive queue, oldest first.
    pub rx: Vec<u8>,
}

/// Guest accesses to a [`Uart16550`]'s registers since it was made, by kind (each is one
/// port I/O or MMIO exit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessCounts {
    /// Writes to THR (one per byte sent, loopback included).
    pub thr_writes: u64,
    /// Reads of LSR (polling for THRE or received data).
    pub lsr_reads: u64,
    /// Every other read or write.
    pub other: u64,
}

impl AccessCounts {
    /// All accesses.
    pub fn total(&self) -> u64 {
        self.thr_writes + self.lsr_reads + self.other
    }
}

/// A 16550A UART.
#[derive(Clone, Debug)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    fcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    lsr_errors: u8,
    msr_deltas: u8,
    thr_interrupt: bool,
    rx: VecDeque<u8>,
    out: VecDeque<u8>,
    out_total: u64,
    accesses: AccessCounts,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// A UART in its reset state (data sheet table 6, "UART Reset Configuration"), with empty
    /// queues.
    pub fn new() -> Self {
        let [dll, dlm] = DEFAULT_DIVISOR.to_le_bytes();
        Uart16550 {
            ier: 0,
            lcr: 0,
            mcr: 0,
            fcr: 0,
            scr: 0,
            dll,
            dlm,
            lsr_errors: 0,
            msr_deltas: 0,
            thr_interrupt: false,
            rx: VecDeque::new(),
            out: VecDeque::new(),
            out_total: 0,
            accesses: AccessCounts::default(),
        }
    }

    /// A guest read of the register at `offset` (0..=7); other offsets read 0xFF.
    ///
    /// Reads have the data sheet's side effects: RBR pops a byte, IIR acknowledges a THR-empty
    /// interrupt, LSR clears the error bits, MSR clears the delta bits.
    pub fn read(&mut self, offset: u8) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        if offset == reg::LSR {
            self.accesses.lsr_reads += 1;
        } else {
            self.accesses.other += 1;
        }
        match offset {
            reg::DLL if dlab => self.dll,
            reg::RBR => self.rx.pop_front().unwrap_or(0),
            reg::DLM if dlab => self.dlm,
            reg::IER => self.ier,
            reg::IIR => {
                let iir = self.iir();
                if iir & 0x0F == IIR_THRE {
                    self.thr_interrupt = false;
                }
                iir
            }
            reg::LCR => self.lcr,
            reg::MCR => self.mcr,
            reg::LSR => {
                let lsr = self.lsr();
                self.lsr_errors = 0;
                lsr
            }
            reg::MSR => {
                let msr = self.modem_lines() | self.msr_deltas;
                self.msr_deltas = 0;
                msr
            }
            reg::SCR => self.scr,
            _ => 0xFF,
        }
    }

    /// A guest write of `value` to the register at `offset` (0..=7); other offsets are
    /// ignored, as are writes to LSR and MSR (factory test registers on real parts).
    pub fn write(&mut self, offset: u8, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        if offset == reg::THR && !dlab {
            self.accesses.thr_writes += 1;
        } else {
            self.accesses.other += 1;
        }
        match offset {
            reg::DLL if dlab => self.dll = value,
            reg::THR => self.transmit(value),
            reg::DLM if dlab => self.dlm = value,
            reg::IER => {
                let old = self.ier;
                self.ier = value & IER_MASK;
                // Enabling the THR-empty interrupt while THR is empty (it always is) raises it
                // at once; disabling it drops a pending one. Drivers rely on the first (Linux
                // tests for it; Windows toggles IER to get a transmit interrupt).
                if (old ^ self.ier) & IER_THRE != 0 {
                    self.thr_interrupt = self.ier & IER_THRE != 0;
                }
            }
            reg::FCR => {
                // Changing the FIFO enable clears both FIFOs (data sheet, FCR bit 0).
                if (value ^ self.fcr) & FCR_ENABLE != 0 || value & FCR_CLEAR_RX != 0 {
                    self.rx.clear();
                }
                // The other bits are written only together with FCR bit 0.
                self.fcr = if value & FCR_ENABLE != 0 {
                    value & (FCR_ENABLE | FCR_DMA | FCR_TRIGGER)
                } else {
                    0
                };
            }
            reg::LCR => self.lcr = value,
            reg::MCR => {
                let old = self.modem_lines();
                self.mcr = value & MCR_MASK;
                self.update_deltas(old, self.modem_lines());
            }
            reg::SCR => self.scr = value,
            _ => {}
        }
    }

    /// Queues bytes for the guest to read from RBR; returns how many were accepted.
    ///
    /// Accepts nothing in loopback mode (the serial input is disconnected) and nothing beyond
    /// [`INPUT_CAPACITY`] queued bytes; the caller keeps the rest and offers them again later.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        if self.loopback() {
            return 0;
        }
        let n = bytes.len().min(INPUT_CAPACITY - self.rx.len());
        self.rx.extend(&bytes[..n]);
        n
    }

    /// Bytes queued for the guest and not read yet.
    pub fn pending_input(&self) -> usize {
        self.rx.len()
    }

    /// Whether the UART asserts its interrupt: IIR has an enabled cause to report (receiver
    /// line status, received data, THR empty, or modem status).
    pub fn interrupt_pending(&self) -> bool {
        self.iir() & IIR_NONE == 0
    }

    /// The level of the UART's IRQ line on a PC board: the interrupt output gated by MCR.OUT2,
    /// which PC serial cards wire as the interrupt enable.
    pub fn irq_line(&self) -> bool {
        self.interrupt_pending() && self.mcr & MCR_OUT2 != 0
    }

    /// Guest output since the running offset `offset`: `(bytes, next_offset, dropped)`.
    ///
    /// `next_offset` is the offset to pass next time (the total number of bytes the guest has
    /// written). `dropped` counts bytes after `offset` that fell out of the ring before this
    /// call; they are lost. An offset beyond the total returns nothing.
    ///
    /// ```
    /// use keel_vmm::devices::uart::{reg, Uart16550};
    ///
    /// let mut uart = Uart16550::new();
    /// for b in *b"ok\n" {
    ///     uart.write(reg::THR, b);
    /// }
    /// assert_eq!(uart.output_since(0), (b"ok\n".to_vec(), 3, 0));
    /// assert_eq!(uart.output_since(2), (b"\n".to_vec(), 3, 0));
    /// ```
    pub fn output_since(&self, offset: u64) -> (Vec<u8>, u64, u64) {
        // The ring holds at most OUTPUT_CAPACITY bytes, which fits in u64.
        let oldest = self.out_total - self.out.len() as u64;
        let start = offset.clamp(oldest, self.out_total);
        let dropped = oldest.saturating_sub(offset);
        // `start - oldest` is at most the ring length, a usize.
        let skip = usize::try_from(start - oldest).unwrap_or(self.out.len());
        let bytes = self.out.range(skip..).copied().collect();
        (bytes, self.out_total, dropped)
    }

    /// Total bytes the guest has written to THR outside loopback (the offset the next byte
    /// will have).
    pub fn output_total(&self) -> u64 {
        self.out_total
    }

    /// The guest's register accesses so far, by kind (host bookkeeping, not in [`State`]).
    pub fn access_counts(&self) -> AccessCounts {
        self.accesses
    }

    /// The divisor latch (DLM:DLL).
    pub fn divisor(&self) -> u16 {
        u16::from_le_bytes([self.dll, self.dlm])
    }

    /// The registers and pending input, for a snapshot.
    pub fn state(&self) -> State {
        State {
            ier: self.ier,
            lcr: self.lcr,
            mcr: self.mcr,
            fcr: self.fcr,
            scr: self.scr,
            dll: self.dll,
            dlm: self.dlm,
            lsr_errors: self.lsr_errors,
            msr_deltas: self.msr_deltas,
            thr_interrupt: self.thr_interrupt,
            rx: self.rx.iter().copied().collect(),
        }
    }

    /// Loads registers and pending input from a snapshot. A state no 16550A can be in (a
    /// reserved bit set, more input queued than [`INPUT_CAPACITY`]) is refused with the
    /// field named, and the model is left unchanged. The output ring is kept.
    pub fn restore(&mut self, state: State) -> Result<(), StateError> {
        let invalid = |field, value| {
            Err(StateError::Invalid {
                device: NAME,
                field,
                value,
            })
        };
        let fcr_ok = if state.fcr & FCR_ENABLE != 0 {
            state.fcr & !(FCR_ENABLE | FCR_DMA | FCR_TRIGGER) == 0
        } else {
            state.fcr == 0
        };
        if state.ier & !IER_MASK != 0 {
            return invalid("ier", u64::from(state.ier));
        }
        if state.mcr & !MCR_MASK != 0 {
            return invalid("mcr", u64::from(state.mcr));
        }
        if !fcr_ok {
            return invalid("fcr", u64::from(state.fcr));
        }
        if state.lsr_errors & !LSR_ERRORS != 0 {
            return invalid("lsr_errors", u64::from(state.lsr_errors));
        }
        if state.msr_deltas & !MSR_DELTAS != 0 {
            return invalid("msr_deltas", u64::from(state.msr_deltas));
        }
        if state.rx.len() > INPUT_CAPACITY {
            // The FIFO length; usize fits in u64.
            return invalid("rx (queued input length)", state.rx.len() as u64);
        }
        self.ier = state.ier;
        self.lcr = state.lcr;
        self.mcr = state.mcr;
        self.fcr = state.fcr;
        self.scr = state.scr;
        self.dll = state.dll;
        self.dlm = state.dlm;
        self.lsr_errors = state.lsr_errors;
        self.msr_deltas = state.msr_deltas;
        self.thr_interrupt = state.thr_interrupt;
        self.rx = state.rx.into_iter().collect();
        Ok(())
    }

    /// Takes over `other`'s output ring, running total and access counts (after a restore, so
    /// the console history, its offsets and the counts continue).
    pub fn keep_output_of(&mut self, other: &Uart16550) {
        self.out.clone_from(&other.out);
        self.out_total = other.out_total;
        self.accesses = other.accesses;
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// THR write: out to the ring, or back into the receive queue in loopback.
    fn transmit(&mut self, byte: u8) {
        if self.loopback() {
            if self.rx.len() < INPUT_CAPACITY {
                self.rx.push_back(byte);
            } else {
                self.lsr_errors |= LSR_OE;
            }
        } else {
            if self.out.len() == OUTPUT_CAPACITY {
                self.out.pop_front();
            }
            self.out.push_back(byte);
            self.out_total += 1;
        }
        // The byte left THR at once: THR is empty again.
        self.thr_interrupt = true;
    }

    fn lsr(&self) -> u8 {
        let dr = if self.rx.is_empty() { 0 } else { LSR_DR };
        dr | LSR_THRE | LSR_TEMT | self.lsr_errors
    }

    /// IIR: the highest-priority enabled cause (data sheet table 4), plus the FIFO bits.
    fn iir(&self) -> u8 {
        let id = if self.ier & IER_RLS != 0 && self.lsr_errors != 0 {
            IIR_RLS
        } else if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            IIR_RDA
        } else if self.ier & IER_THRE != 0 && self.thr_interrupt {
            IIR_THRE
        } else if self.ier & IER_MS != 0 && self.msr_deltas != 0 {
            IIR_MS
        } else {
            IIR_NONE
        };
        let fifo = if self.fcr & FCR_ENABLE != 0 {
            IIR_FIFO_ENABLED
        } else {
            0
        };
        id | fifo
    }

    /// MSR bits 7:4: the modem input lines.
    fn modem_lines(&self) -> u8 {
        if !self.loopback() {
            return CONNECTED_LINES;
        }
        let mut lines = 0;
        for (mcr_bit, msr_bit) in [
            (MCR_RTS, MSR_CTS),
            (MCR_DTR, MSR_DSR),
            (MCR_OUT1, MSR_RI),
            (MCR_OUT2, MSR_DCD),
        ] {
            if self.mcr & mcr_bit != 0 {
                lines |= msr_bit;
            }
        }
        lines
    }

    /// Latches MSR delta bits for line changes from `old` to `new`.
    fn update_deltas(&mut self, old: u8, new: u8) {
        let changed = old ^ new;
        if changed & MSR_CTS != 0 {
            self.msr_deltas |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            self.msr_deltas |= MSR_DDSR;
        }
        if changed & MSR_DCD != 0 {
            self.msr_deltas |= MSR_DDCD;
        }
        // TERI: RI went from on to off.
        if old & MSR_RI != 0 && new & MSR_RI == 0 {
            self.msr_deltas |= MSR_TERI;
        }
    }
}

impl Persist for Uart16550 {
    type State = State;
    type ConstructorArgs = ();
    type Error = StateError;

    fn save(&self) -> State {
        self.state()
    }

    /// A UART with `state`'s registers and input and an empty output ring.
    fn restore((): (), state: &State) -> Result<Uart16550, StateError> {
        let mut uart = Uart16550::new();
        Uart16550::restore(&mut uart, state.clone())?;
        Ok(uart)
    }
}

#[cfg(test)]
mod tests;
