//! The 8254 programmable interval timer and the PC's port 0x61, as a state machine over
//! passed-in time.
//!
//! The model follows the Intel *8254 Programmable Interval Timer* data sheet (order no.
//! 231164): the control word (figure 7), the six modes ("Mode Definitions", figures 9–14),
//! the counter latch and read-back commands (figures 15–17), the status byte (figure 18) and
//! the gate rules (figure 19, "Gate Pin Operations Summary"). Three counters run from the PC's
//! 1.193182 MHz clock ([`PIT_HZ`]):
//!
//! | port | register |
//! | --- | --- |
//! | `0x40`–`0x42` | counters 0–2 (count in, count/status out) |
//! | `0x43` | control word (write only; reads 0xFF) |
//! | `0x61` | PC port B: bit 0 gate of counter 2, bit 1 speaker data, bit 4 refresh toggle, bit 5 OUT2 |
//!
//! Counter 0's OUT is IRQ0 and its gate is tied high; counter 1 (DRAM refresh) has nothing
//! on its OUT; counter 2's gate is port B bit 0 and its OUT is read back at port B bit 5
//! (Linux calibrates the TSC with it).
//!
//! # Time
//!
//! Nothing here reads a clock. Every access takes `now_ns`, the VM's monotonic time in
//! nanoseconds, converted to PIT clocks as `now_ns * PIT_HZ / 10^9`. A time earlier than one
//! already seen counts as the latest one seen. A counting sequence stores the clock at which
//! it started, so the count and OUT at any time are computed, not stepped, and are exact to the
//! clock: mode 2 pulses OUT low for one clock every N clocks, mode 3 keeps OUT high for
//! ⌈N/2⌉ and low for ⌊N/2⌋ clocks, with the count going down by two (by one and three for odd
//! N) as the data sheet describes.
//!
//! IRQ0 is the rising edges of counter 0's OUT. [`Pit::irq0_edges_until`] counts the edges up
//! to a time and hands them over; [`Pit::next_irq0_deadline`] says when the next one comes, so
//! the VM loop can sleep until then. A control word or count write that makes OUT rise at once
//! (mode 0 to mode 2, say) counts as an edge, as it would on the part.
//!
//! # Simplifications
//!
//! - A count takes effect at the clock it is written (the part loads it on the next clock
//!   edge, one clock = 838 ns later).
//! - A new count written while mode 3 is counting takes effect at the end of the current
//!   period (the next rising edge of OUT) rather than the end of the current half-period.
//! - N = 1 in modes 2 and 3 (illegal on the part) keeps OUT low (mode 2) or high (mode 3):
//!   no IRQ0 storm.
//! - BCD counting is supported; a BCD digit above 9 written to the count counts as 9.
//!
//! [`State`] holds every counter and port B for snapshots; its clock values are PIT clocks on
//! the `now_ns` time line of the caller.

/// The counters' input clock in Hz (14.31818 MHz / 12, rounded as Linux's `PIT_TICK_RATE`).
pub const PIT_HZ: u64 = 1_193_182;

/// Counter 0's port (IRQ0).
pub const COUNTER0: u16 = 0x40;
/// Counter 1's port.
pub const COUNTER1: u16 = 0x41;
/// Counter 2's port (gated by port B bit 0; OUT read at port B bit 5).
pub const COUNTER2: u16 = 0x42;
/// The control word register (write only).
pub const CONTROL: u16 = 0x43;
/// PC port B (system control port B on PIIX/ICH).
pub const PORT_B: u16 = 0x61;

/// Control word bits 7:6: select counter (3 = read-back command).
pub const CW_SC_SHIFT: u8 = 6;
/// Control word bits 5:4: read/write access (0 = counter latch command).
pub const CW_RW_SHIFT: u8 = 4;
/// Control word bits 3:1: mode.
pub const CW_MODE_SHIFT: u8 = 1;
/// Control word bit 0: BCD counting.
pub const CW_BCD: u8 = 0x01;
/// Control word select value for the read-back command.
pub const SC_READ_BACK: u8 = 3;

/// Access (RW bits): least significant byte only.
pub const RW_LSB: u8 = 1;
/// Access: most significant byte only.
pub const RW_MSB: u8 = 2;
/// Access: least significant byte, then most significant byte.
pub const RW_BOTH: u8 = 3;

/// Read-back bit 5: do *not* latch the count.
pub const RB_NO_COUNT: u8 = 0x20;
/// Read-back bit 4: do *not* latch the status.
pub const RB_NO_STATUS: u8 = 0x10;

/// Status byte bit 7: OUT pin.
pub const STATUS_OUT: u8 = 0x80;
/// Status byte bit 6: null count (a count was written and is not in the counting element yet).
pub const STATUS_NULL_COUNT: u8 = 0x40;

/// Port B bit 0: counter 2 gate.
pub const PORT_B_GATE2: u8 = 0x01;
/// Port B bit 1: speaker data enable.
pub const PORT_B_SPEAKER: u8 = 0x02;
/// Port B bits 3:0 are read/write; the rest are status.
pub const PORT_B_WRITABLE: u8 = 0x0F;
/// Port B bit 4: refresh cycle toggle.
pub const PORT_B_REFRESH: u8 = 0x10;
/// Port B bit 5: counter 2 OUT.
pub const PORT_B_OUT2: u8 = 0x20;

/// Period of the port B refresh toggle in ns (the PC's 15.085 µs refresh request).
pub const REFRESH_PERIOD_NS: u64 = 15_085;

const NS_PER_SEC: u128 = 1_000_000_000;

/// The name this model gives in errors, bus listings and saved states.
pub const NAME: &str = "8254 PIT";
const DEVICE: &str = NAME;

pub use super::StateError;

use serde::{Deserialize, Serialize};

/// One counter's registers and counting sequence, for snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// Control word bits 5:0 as last programmed (RW, mode, BCD); RW is never 0.
    pub control: u8,
    /// The count register (CR): the last count written, 1..=65536 (1..=10000 in BCD).
    pub reload: u32,
    /// The initial count of the sequence in progress.
    pub count: u32,
    /// A count has been written since the control word.
    pub loaded: bool,
    /// A counting sequence has started (for modes 1 and 5: been triggered).
    pub armed: bool,
    /// PIT clock at which the sequence started (elapsed clocks are counted from here).
    pub origin: u64,
    /// Elapsed clocks at which the gate stopped counting (modes 0, 2, 3, 4), if it did.
    pub paused: Option<u64>,
    /// PIT clock at which [`ChannelState::reload`] replaces the count (modes 2 and 3).
    pub switch_at: Option<u64>,
    /// A count was written for modes 1/5 and waits for the next trigger.
    pub reload_pending: bool,
    /// The gate input.
    pub gate: bool,
    /// Least significant byte of a two-byte count write, waiting for its other half.
    pub write_lsb: Option<u8>,
    /// The next live two-byte read returns the most significant byte.
    pub read_msb_next: bool,
    /// A latched count (as it will be read, BCD-encoded in BCD mode).
    pub latch: Option<u16>,
    /// The next read of a two-byte latch returns its most significant byte.
    pub latch_msb_next: bool,
    /// A latched status byte, read before any latched count.
    pub status_latch: Option<u8>,
}

/// All three counters and port B, for snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Counters 0–2.
    pub channels: [ChannelState; 3],
    /// Port B bits 3:0.
    pub port_b: u8,
    /// The latest PIT clock seen.
    pub now_clock: u64,
    /// PIT clock up to which IRQ0 edges have been counted.
    pub irq0_cursor: u64,
    /// IRQ0 edges counted and not handed over yet.
    pub irq0_pending: u64,
}

/// One counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Channel {
    s: ChannelState,
}

/// Rising edges of OUT at elapsed clocks in `(da, db]` of a running sequence.
fn rising_edges(mode: u8, n: u64, da: u64, db: u64) -> u64 {
    if db <= da {
        return 0;
    }
    match mode {
        0 | 1 => u64::from(da < n && n <= db),
        2 | 3 if n >= 2 => db / n - da / n,
        4 | 5 => u64::from(da <= n && n < db),
        _ => 0,
    }
}

/// The first elapsed clock after `da` at which OUT rises.
fn next_rising(mode: u8, n: u64, da: u64) -> Option<u64> {
    match mode {
        0 | 1 => (da < n).then_some(n),
        2 | 3 if n >= 2 => (da / n).checked_add(1)?.checked_mul(n),
        4 | 5 => (da <= n).then_some(n + 1),
        _ => None,
    }
}

/// OUT after `d` elapsed clocks of a running sequence (data sheet figures 9–14).
fn out_running(mode: u8, n: u64, d: u64) -> bool {
    match mode {
        0 | 1 => d >= n,
        // Low for the one clock at which the count is 1.
        2 => d % n != n - 1,
        3 => d % n < n.div_ceil(2),
        _ => d != n, // 4, 5: low for the one clock at which the count is 0.
    }
}

/// The counting element after `d` elapsed clocks, modulo `modulus`.
fn count_running(mode: u8, n: u64, d: u64, modulus: u64) -> u64 {
    match mode {
        2 => n - d % n,
        3 => {
            let p = d % n;
            let high = n.div_ceil(2);
            if n.is_multiple_of(2) {
                // Even: down by two, twice per period.
                n - 2 * (p % (n / 2))
            } else if p < high {
                // Odd, OUT high: load, down by one, then by two.
                if p == 0 { n } else { n + 1 - 2 * p }
            } else {
                // Odd, OUT low: load, down by three, then by two.
                let q = p - high;
                if q == 0 { n } else { n - 1 - 2 * q }
            }
        }
        // 0, 1, 4, 5: down by one, wrapping.
        _ => (n + modulus - d % modulus) % modulus,
    }
}

fn to_bcd(value: u64) -> u16 {
    let v = value % 10_000;
    ((v % 10) | ((v / 10 % 10) << 4) | ((v / 100 % 10) << 8) | ((v / 1000) << 12)) as u16
}

fn from_bcd(raw: u16) -> u32 {
    (0..4).rev().fold(0, |acc, i| {
        acc * 10 + u32::from(((raw >> (4 * i)) & 0xF).min(9) as u8)
    })
}

impl Channel {
    /// After reset: mode 3, two-byte access, binary, count 65536 loaded at `now`.
    fn reset(now: u64, gate: bool) -> Channel {
        Channel {
            s: ChannelState {
                control: (RW_BOTH << CW_RW_SHIFT) | (3 << CW_MODE_SHIFT),
                reload: 0x1_0000,
                count: 0x1_0000,
                loaded: true,
                armed: true,
                origin: now,
                paused: (!gate).then_some(0),
                gate,
                ..ChannelState::default()
            },
        }
    }

    /// Mode 0–5 (control word modes 6 and 7 are modes 2 and 3).
    fn mode(&self) -> u8 {
        match (self.s.control >> CW_MODE_SHIFT) & 7 {
            m @ 6..=7 => m - 4,
            m => m,
        }
    }

    fn access(&self) -> u8 {
        (self.s.control >> CW_RW_SHIFT) & 3
    }

    fn bcd(&self) -> bool {
        self.s.control & CW_BCD != 0
    }

    fn modulus(&self) -> u64 {
        if self.bcd() { 10_000 } else { 0x1_0000 }
    }

    /// The initial count and start clock in force at clock `t` (a pending mode 2/3 count
    /// replaces the current one at `switch_at`).
    fn sequence_at(&self, t: u64) -> (u64, u64) {
        match self.s.switch_at {
            Some(at) if t >= at => (u64::from(self.s.reload), at),
            _ => (u64::from(self.s.count), self.s.origin),
        }
    }

    /// Applies a pending count switch that is due at `t`.
    fn settle(&mut self, t: u64) {
        if let Some(at) = self.s.switch_at
            && t >= at
        {
            self.s.count = self.s.reload;
            self.s.origin = at;
            self.s.switch_at = None;
        }
    }

    fn out(&self, t: u64) -> bool {
        let mode = self.mode();
        if !self.s.armed {
            // Before counting starts OUT is low in mode 0, high in the others.
            return mode != 0;
        }
        if let Some(d) = self.s.paused {
            // The gate stops modes 2 and 3 with OUT high; modes 0 and 4 just hold.
            return matches!(mode, 2 | 3) || out_running(mode, u64::from(self.s.count), d);
        }
        let (n, origin) = self.sequence_at(t);
        out_running(mode, n, t.saturating_sub(origin))
    }

    /// The counting element at `t`, as the guest reads it (BCD-encoded in BCD mode).
    fn current_count(&self, t: u64) -> u16 {
        let modulus = self.modulus();
        let value = if !self.s.armed {
            u64::from(self.s.count)
        } else if let Some(d) = self.s.paused {
            count_running(self.mode(), u64::from(self.s.count), d, modulus)
        } else {
            let (n, origin) = self.sequence_at(t);
            count_running(self.mode(), n, t.saturating_sub(origin), modulus)
        };
        if self.bcd() {
            to_bcd(value)
        } else {
            value as u16 // The count is at most 0x10000, which reads as 0.
        }
    }

    /// Rising edges of OUT at clocks in `(a, b]`.
    fn rising_edges_between(&self, a: u64, b: u64) -> u64 {
        if b <= a || !self.s.armed || self.s.paused.is_some() {
            return 0;
        }
        let mode = self.mode();
        let (count, origin) = (u64::from(self.s.count), self.s.origin);
        match self.s.switch_at {
            Some(at) if at <= a => rising_edges(mode, u64::from(self.s.reload), a - at, b - at),
            Some(at) if at < b => {
                rising_edges(
                    mode,
                    count,
                    a.saturating_sub(origin),
                    at.saturating_sub(origin),
                ) + rising_edges(mode, u64::from(self.s.reload), 0, b - at)
            }
            _ => rising_edges(
                mode,
                count,
                a.saturating_sub(origin),
                b.saturating_sub(origin),
            ),
        }
    }

    /// The first clock after `t` at which OUT rises.
    fn next_rising_after(&self, t: u64) -> Option<u64> {
        if !self.s.armed || self.s.paused.is_some() {
            return None;
        }
        // A pending switch sits on an edge of the current sequence, so the next edge is found
        // in whichever sequence is in force at `t`.
        let (n, origin) = self.sequence_at(t);
        let d = next_rising(self.mode(), n, t.saturating_sub(origin))?;
        origin.checked_add(d)
    }

    fn null_count(&self, t: u64) -> bool {
        !self.s.loaded
            || self.s.write_lsb.is_some()
            || self.s.reload_pending
            || self.s.switch_at.is_some_and(|at| t < at)
    }

    fn status(&self, t: u64) -> u8 {
        let mut status = self.s.control & 0x3F;
        if self.out(t) {
            status |= STATUS_OUT;
        }
        if self.null_count(t) {
            status |= STATUS_NULL_COUNT;
        }
        status
    }

    fn write_control(&mut self, control: u8) {
        // "When a Control Word is written to a Counter, all Control Logic is immediately
        // reset and OUT goes to a known initial state."
        self.s = ChannelState {
            control: control & 0x3F,
            reload: self.s.reload,
            count: self.s.count,
            gate: self.s.gate,
            ..ChannelState::default()
        };
    }

    fn latch_count(&mut self, t: u64) {
        // A second latch before the first is read is ignored.
        if self.s.latch.is_none() {
            self.s.latch = Some(self.current_count(t));
            self.s.latch_msb_next = false;
        }
    }

    fn latch_status(&mut self, t: u64) {
        if self.s.status_latch.is_none() {
            self.s.status_latch = Some(self.status(t));
        }
    }

    fn read(&mut self, t: u64) -> u8 {
        if let Some(status) = self.s.status_latch.take() {
            return status;
        }
        let [lsb, msb] = match self.s.latch {
            Some(latched) => {
                let bytes = latched.to_le_bytes();
                let msb_turn = match self.access() {
                    RW_MSB => true,
                    RW_BOTH => self.s.latch_msb_next,
                    _ => false,
                };
                if self.access() == RW_BOTH && !msb_turn {
                    self.s.latch_msb_next = true;
                } else {
                    self.s.latch = None;
                    self.s.latch_msb_next = false;
                }
                return if msb_turn { bytes[1] } else { bytes[0] };
            }
            None => self.current_count(t).to_le_bytes(),
        };
        match self.access() {
            RW_MSB => msb,
            RW_BOTH => {
                self.s.read_msb_next = !self.s.read_msb_next;
                if self.s.read_msb_next { lsb } else { msb }
            }
            _ => lsb,
        }
    }

    fn write(&mut self, value: u8, t: u64) {
        self.settle(t);
        let raw = match self.access() {
            RW_LSB => u16::from(value),
            RW_MSB => u16::from(value) << 8,
            _ => match self.s.write_lsb.take() {
                Some(lsb) => u16::from_le_bytes([lsb, value]),
                None => {
                    self.s.write_lsb = Some(value);
                    if self.mode() == 0 {
                        // Mode 0: the first byte stops counting and drives OUT low.
                        self.s.armed = false;
                        self.s.loaded = false;
                        self.s.paused = None;
                    }
                    return;
                }
            },
        };
        let n = match if self.bcd() {
            from_bcd(raw)
        } else {
            u32::from(raw)
        } {
            0 => self.modulus() as u32,
            n => n,
        };
        self.load(n, t);
    }

    /// A complete count `n` was written at `t`.
    fn load(&mut self, n: u32, t: u64) {
        self.s.reload = n;
        let first = !self.s.loaded;
        self.s.loaded = true;
        match self.mode() {
            0 | 4 => self.start(t),
            2 | 3 if first || !self.s.armed => self.start(t),
            2 | 3 => {
                if self.s.paused.is_none() {
                    // The new count takes over when the current period ends.
                    let d = t.saturating_sub(self.s.origin);
                    let n_old = u64::from(self.s.count);
                    self.s.switch_at = (d / n_old)
                        .checked_add(1)
                        .and_then(|k| k.checked_mul(n_old))
                        .and_then(|d_end| self.s.origin.checked_add(d_end));
                }
                // Paused: the rising gate reloads from CR anyway.
            }
            _ => {
                // Modes 1 and 5: loaded by the next trigger.
                if self.s.armed {
                    self.s.reload_pending = true;
                } else {
                    self.s.count = n;
                }
            }
        }
    }

    /// Starts a sequence with the count register at `t` (held if the gate is low).
    fn start(&mut self, t: u64) {
        self.s.count = self.s.reload;
        self.s.origin = t;
        self.s.armed = true;
        self.s.switch_at = None;
        self.s.reload_pending = false;
        self.s.paused = (!self.s.gate && self.mode() != 1 && self.mode() != 5).then_some(0);
    }

    fn set_gate(&mut self, gate: bool, t: u64) {
        self.settle(t);
        if gate == self.s.gate {
            return;
        }
        self.s.gate = gate;
        match self.mode() {
            0 | 4 if self.s.armed => {
                if gate {
                    if let Some(d) = self.s.paused.take() {
                        self.s.origin = t.saturating_sub(d);
                    }
                } else {
                    self.s.paused = Some(t.saturating_sub(self.s.origin));
                }
            }
            2 | 3 if self.s.loaded => {
                if gate {
                    // A rising gate reloads the counter.
                    self.start(t);
                } else {
                    self.s.paused = Some(t.saturating_sub(self.s.origin));
                    self.s.switch_at = None;
                }
            }
            1 | 5 if gate && self.s.loaded => self.start(t),
            _ => {}
        }
    }
}

/// The 8254 and port B of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pit {
    channels: [Channel; 3],
    port_b: u8,
    now_clock: u64,
    irq0_cursor: u64,
    irq0_pending: u64,
}

/// PIT clocks at `now_ns`.
fn clock_at(now_ns: u64) -> u64 {
    let clocks = u128::from(now_ns) * u128::from(PIT_HZ) / NS_PER_SEC;
    // now_ns * PIT_HZ / 10^9 < now_ns, so it fits.
    clocks as u64
}

/// The first nanosecond at which [`clock_at`] reaches `clock` (saturating).
fn ns_at(clock: u64) -> u64 {
    let ns = (u128::from(clock) * NS_PER_SEC).div_ceil(u128::from(PIT_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

impl Pit {
    /// The PIT as firmware leaves it: every counter in mode 3 with two-byte access and count
    /// 0 (65536), started at `now_ns` — counter 0 gives IRQ0 at 18.2 Hz. Counter 2's gate
    /// (port B bit 0) is low.
    pub fn new(now_ns: u64) -> Pit {
        let now = clock_at(now_ns);
        Pit {
            channels: [
                Channel::reset(now, true),
                Channel::reset(now, true),
                Channel::reset(now, false),
            ],
            port_b: 0,
            now_clock: now,
            irq0_cursor: now,
            irq0_pending: 0,
        }
    }

    /// A guest `IN` from `port` ([`COUNTER0`]–[`COUNTER2`], [`CONTROL`], [`PORT_B`]) at
    /// `now_ns`; other ports (and the write-only control register) read 0xFF.
    pub fn read_port(&mut self, port: u16, now_ns: u64) -> u8 {
        let t = self.tick(now_ns);
        match port {
            COUNTER0..=COUNTER2 => self.channels[usize::from(port - COUNTER0)].read(t),
            PORT_B => {
                let refresh = if (now_ns / REFRESH_PERIOD_NS) % 2 == 1 {
                    PORT_B_REFRESH
                } else {
                    0
                };
                let out2 = if self.channels[2].out(t) {
                    PORT_B_OUT2
                } else {
                    0
                };
                self.port_b | refresh | out2
            }
            _ => 0xFF,
        }
    }

    /// A guest `OUT` of `value` to `port` at `now_ns` (see [`Pit::read_port`]); other ports
    /// are ignored.
    pub fn write_port(&mut self, port: u16, value: u8, now_ns: u64) {
        let t = self.tick(now_ns);
        match port {
            COUNTER0 => self.with_irq0(t, |ch| ch.write(value, t)),
            COUNTER1 | COUNTER2 => self.channels[usize::from(port - COUNTER0)].write(value, t),
            CONTROL => self.write_control(value, t),
            PORT_B => {
                self.port_b = value & PORT_B_WRITABLE;
                self.channels[2].set_gate(value & PORT_B_GATE2 != 0, t);
            }
            _ => {}
        }
    }

    /// Counter `channel`'s OUT at `now_ns` (false for a channel above 2).
    pub fn out(&mut self, channel: usize, now_ns: u64) -> bool {
        let t = self.tick(now_ns);
        self.channels.get(channel).is_some_and(|ch| ch.out(t))
    }

    /// The number of IRQ0 edges (rising edges of counter 0's OUT) since the last call, up to
    /// and including `now_ns`. Each is one interrupt request for the PIC's (edge-triggered)
    /// IRQ0 and IOAPIC pin 2; several edges between two calls mean ticks the guest missed.
    ///
    /// ```
    /// use keel_vmm::devices::pit::Pit;
    ///
    /// let mut pit = Pit::new(0);
    /// // Mode 3 with count 65536: one edge every 65536 / 1.193182 MHz ≈ 54.9 ms.
    /// assert_eq!(pit.irq0_edges_until(54_000_000), 0);
    /// let due = pit.next_irq0_deadline().unwrap();
    /// assert_eq!(due, 54_925_402);
    /// assert_eq!(pit.irq0_edges_until(due), 1);
    /// assert_eq!(pit.irq0_edges_until(1_000_000_000), 17);
    /// ```
    pub fn irq0_edges_until(&mut self, now_ns: u64) -> u64 {
        let t = self.tick(now_ns);
        self.account_irq0(t);
        core::mem::take(&mut self.irq0_pending)
    }

    /// When [`Pit::irq0_edges_until`] will next have an edge to report, in ns: the time of
    /// counter 0's next rising edge after the last call (or that call's time if edges are
    /// already waiting). `None` if OUT0 will not rise again without a guest write.
    pub fn next_irq0_deadline(&self) -> Option<u64> {
        if self.irq0_pending > 0 {
            return Some(ns_at(self.irq0_cursor));
        }
        self.channels[0]
            .next_rising_after(self.irq0_cursor)
            .map(ns_at)
    }

    /// PIT clock at `now_ns`, never earlier than one already seen.
    fn tick(&mut self, now_ns: u64) -> u64 {
        self.now_clock = self.now_clock.max(clock_at(now_ns));
        self.now_clock
    }

    /// Counts IRQ0 edges up to `t`.
    fn account_irq0(&mut self, t: u64) {
        if t > self.irq0_cursor {
            let edges = self.channels[0].rising_edges_between(self.irq0_cursor, t);
            self.irq0_pending = self.irq0_pending.saturating_add(edges);
            self.irq0_cursor = t;
            self.channels[0].settle(t);
        }
    }

    /// Applies `f` to counter 0 at `t`, counting an immediate rise of OUT0 as an edge.
    fn with_irq0(&mut self, t: u64, f: impl FnOnce(&mut Channel)) {
        self.account_irq0(t);
        let before = self.channels[0].out(t);
        f(&mut self.channels[0]);
        if !before && self.channels[0].out(t) {
            self.irq0_pending = self.irq0_pending.saturating_add(1);
        }
    }

    fn write_control(&mut self, value: u8, t: u64) {
        let select = value >> CW_SC_SHIFT;
        if select == SC_READ_BACK {
            // Read-back (figure 16): bits 3:1 select counters 2..0.
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & RB_NO_STATUS == 0 {
                    ch.latch_status(t);
                }
                if value & RB_NO_COUNT == 0 {
                    ch.latch_count(t);
                }
            }
            return;
        }
        let i = usize::from(select);
        if (value >> CW_RW_SHIFT) & 3 == 0 {
            // Counter latch command.
            self.channels[i].latch_count(t);
        } else if i == 0 {
            self.with_irq0(t, |ch| ch.write_control(value));
        } else {
            self.channels[i].write_control(value);
        }
    }
}

mod snapshot;
#[cfg(test)]
mod tests;
