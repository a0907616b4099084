//! The 82093AA I/O APIC, as a register state machine that turns pin changes into interrupt
//! messages.
//!
//! The model follows the Intel *82093AA I/O Advanced Programmable Interrupt Controller*
//! data sheet (order no. 290566): the two directly addressed registers (§3.1, IOREGSEL at
//! offset 0x00 and IOWIN at 0x10), the indirect registers (§3.2: IOAPICID 0x00, IOAPICVER
//! 0x01, IOAPICARB 0x02, the redirection table 0x10–0x3F) and the redirection entry format
//! (§3.2.4, table 3). It reports version 0x20, the revision with the EOI register at offset
//! 0x40 that later ICH parts added (ICH9 data sheet §13.5.5), and 24 pins.
//!
//! # Interrupts
//!
//! [`Ioapic::set_irq`] drives a pin to a level and answers with the [`IrqMessage`] to deliver,
//! if any. The level is the request as the device means it (asserted or not); the polarity bit
//! is stored for the guest but does not invert it, as in QEMU and KVM, because the VMM knows
//! which lines are asserted and the ACPI tables tell the guest how they are wired.
//!
//! - **Edge-triggered** entries send one message per rising edge. An edge that arrives while
//!   the entry is masked is remembered and sent when it is unmasked (as QEMU and KVM do, so a
//!   guest that masks a line around a reprogramming loses nothing).
//! - **Level-triggered** entries (fixed and lowest-priority delivery) send a message while the
//!   pin is asserted and Remote IRR is clear, and set Remote IRR. The local APIC's EOI for the
//!   vector ([`Ioapic::end_of_interrupt`], or a write to the EOI register) clears Remote IRR and
//!   sends again if the pin is still asserted.
//! - SMI, NMI, INIT and ExtINT are always edge-triggered (data sheet table 3, "Delivery
//!   Mode"), whatever the trigger bit says; the reserved delivery modes send nothing.
//!
//! Delivery is immediate: Delivery Status (bit 12) always reads 0.
//!
//! # Accesses
//!
//! The data sheet requires aligned 32-bit accesses. [`Ioapic::read`] answers any size by byte
//! lanes of the 32-bit registers; [`Ioapic::write`] merges the bytes it covers into the
//! register they fall in (bytes beyond that register are dropped), so odd accesses cannot
//! break anything.
//!
//! [`State`] holds the registers and the pin levels for snapshots.

use alloc::vec::Vec;

use super::lapic::DeliveryMode;

/// Where firmware and the MADT put the I/O APIC.
pub const DEFAULT_BASE: u64 = 0xFEC0_0000;
/// Length of the MMIO window (one page).
pub const MMIO_LEN: u64 = 0x1000;

/// I/O Register Select (§3.1.1).
pub const IOREGSEL: u64 = 0x00;
/// I/O Window (§3.1.2).
pub const IOWIN: u64 = 0x10;
/// EOI register (version 0x20): writing a vector clears Remote IRR of matching entries.
pub const EOI: u64 = 0x40;

/// Indirect register: IOAPIC ID (bits 27:24).
pub const REG_ID: u8 = 0x00;
/// Indirect register: IOAPIC version (bits 7:0) and maximum redirection entry (bits 23:16).
pub const REG_VERSION: u8 = 0x01;
/// Indirect register: arbitration ID (bits 27:24).
pub const REG_ARBITRATION: u8 = 0x02;
/// Indirect register: low half of redirection entry 0; entry `n` is at `0x10 + 2n`.
pub const REG_REDIRECTION: u8 = 0x10;

/// Number of interrupt input pins.
pub const PINS: usize = 24;
/// The version this model reports.
pub const VERSION: u8 = 0x20;
/// IOAPICVER register value: version and maximum redirection entry (PINS - 1).
pub const VERSION_REGISTER: u32 = ((PINS as u32 - 1) << 16) | VERSION as u32;

/// IOAPICID bits 27:24 hold the ID.
pub const ID_SHIFT: u32 = 24;
/// IOAPIC IDs are four bits.
pub const ID_MASK: u8 = 0x0F;

/// Redirection entry bits 7:0: vector.
pub const RTE_VECTOR: u64 = 0xFF;
/// Redirection entry bits 10:8: delivery mode.
pub const RTE_DELIVERY_MODE_SHIFT: u32 = 8;
/// Redirection entry bit 11: destination mode (1 = logical).
pub const RTE_DEST_LOGICAL: u64 = 1 << 11;
/// Redirection entry bit 12: delivery status (read-only).
pub const RTE_DELIVERY_STATUS: u64 = 1 << 12;
/// Redirection entry bit 13: interrupt input pin polarity (1 = active low).
pub const RTE_POLARITY_LOW: u64 = 1 << 13;
/// Redirection entry bit 14: Remote IRR (read-only; level-triggered interrupt in service).
pub const RTE_REMOTE_IRR: u64 = 1 << 14;
/// Redirection entry bit 15: trigger mode (1 = level).
pub const RTE_TRIGGER_LEVEL: u64 = 1 << 15;
/// Redirection entry bit 16: mask.
pub const RTE_MASKED: u64 = 1 << 16;
/// Redirection entry bits 63:56: destination.
pub const RTE_DEST_SHIFT: u32 = 56;
/// Redirection entry bits the guest can write.
pub const RTE_WRITABLE: u64 = 0xFF00_0000_0001_AFFF;

/// The name this model gives in errors, bus listings and saved states.
pub const NAME: &str = "I/O APIC";
const DEVICE: &str = NAME;

pub use super::StateError;

use serde::{Deserialize, Serialize};

use crate::persist::Persist;

/// An interrupt message the I/O APIC sends to the local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqMessage {
    /// The pin it came from.
    pub pin: u8,
    /// Vector (redirection entry bits 7:0).
    pub vector: u8,
    /// Destination APIC ID (physical) or logical destination (bits 63:56).
    pub destination: u8,
    /// Logical destination mode (bit 11).
    pub logical: bool,
    /// How the local APIC takes it.
    pub delivery_mode: DeliveryMode,
    /// Level-triggered: the local APIC sets TMR and reports its EOI back.
    pub level_triggered: bool,
}

/// The I/O APIC's registers and pin levels, for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// IOAPIC ID (4 bits).
    pub id: u8,
    /// IOREGSEL.
    pub select: u8,
    /// The redirection table.
    pub redirection: [u64; PINS],
    /// Pins asserted (bit `n` = pin `n`).
    pub lines: u32,
    /// Rising edges not delivered yet (the entry was masked).
    pub pending_edges: u32,
}

/// An 82093AA I/O APIC with 24 pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ioapic {
    s: State,
}

/// Whether an entry uses level semantics (Remote IRR): level trigger with fixed or
/// lowest-priority delivery.
fn is_level(entry: u64) -> bool {
    entry & RTE_TRIGGER_LEVEL != 0
        && matches!(
            delivery_mode(entry),
            Some(DeliveryMode::Fixed | DeliveryMode::LowestPriority)
        )
}

fn delivery_mode(entry: u64) -> Option<DeliveryMode> {
    // Bits 10:8 fit in u8.
    DeliveryMode::from_bits(((entry >> RTE_DELIVERY_MODE_SHIFT) & 7) as u8)
        .filter(|mode| *mode != DeliveryMode::StartUp)
}

impl Ioapic {
    /// An I/O APIC with ID `id` (low four bits) in its reset state: every entry masked, no
    /// pin asserted.
    pub fn new(id: u8) -> Ioapic {
        Ioapic {
            s: State {
                id: id & ID_MASK,
                select: 0,
                redirection: [RTE_MASKED; PINS],
                lines: 0,
                pending_edges: 0,
            },
        }
    }

    /// A guest load of `size` bytes at `offset` in the MMIO window (byte lanes of the 32-bit
    /// registers; EOI and unknown offsets read 0).
    pub fn read(&self, offset: u64, size: u8) -> u64 {
        let mut value = 0;
        for i in 0..u64::from(size.min(8)) {
            let Some(at) = offset.checked_add(i) else {
                break;
            };
            let dword = match at & !3 {
                IOREGSEL => u32::from(self.s.select),
                IOWIN => self.read_indirect(),
                _ => 0,
            };
            // `at & 3` < 4.
            let byte = (dword >> (8 * (at & 3))) as u8;
            value |= u64::from(byte) << (8 * i);
        }
        value
    }

    /// A guest store of the low `size` bytes of `value` at `offset` in the MMIO window;
    /// returns the messages it causes (unmasking a pending or asserted pin, an EOI).
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Vec<IrqMessage> {
        let lane = offset & 3;
        let bytes = u64::from(size.min(8)).min(4 - lane);
        if bytes == 0 {
            return Vec::new();
        }
        // `bytes` <= 4 and `lane + bytes` <= 4.
        let mask = (u64::MAX >> (64 - 8 * bytes)) << (8 * lane);
        let data = (value << (8 * lane)) & mask;
        let merge = |old: u32| ((u64::from(old) & !mask) | data) as u32;
        match offset & !3 {
            IOREGSEL => {
                // Bits 31:8 are reserved.
                self.s.select = merge(u32::from(self.s.select)) as u8;
                Vec::new()
            }
            IOWIN => {
                let new = merge(self.read_indirect());
                self.write_indirect(new).into_iter().collect()
            }
            EOI if lane == 0 => self.end_of_interrupt(data as u8),
            _ => Vec::new(),
        }
    }

    /// Drives pin `pin` (0–23) to `asserted`; returns the message to deliver, if any. Pins
    /// above 23 are ignored.
    ///
    /// ```
    /// use keel_vmm::devices::ioapic::{Ioapic, IOREGSEL, IOWIN};
    ///
    /// let mut ioapic = Ioapic::new(0);
    /// // Entry 4: vector 0x24, fixed, physical destination 0, edge, unmasked.
    /// ioapic.write(IOREGSEL, 4, 0x18);
    /// ioapic.write(IOWIN, 4, 0x24);
    /// let msg = ioapic.set_irq(4, true).unwrap();
    /// assert_eq!((msg.vector, msg.destination, msg.level_triggered), (0x24, 0, false));
    /// assert_eq!(ioapic.set_irq(4, true), None); // no new edge
    /// ```
    pub fn set_irq(&mut self, pin: u8, asserted: bool) -> Option<IrqMessage> {
        let pin = usize::from(pin);
        if pin >= PINS {
            return None;
        }
        let bit = 1 << pin;
        if asserted && self.s.lines & bit == 0 {
            self.s.pending_edges |= bit;
        }
        if asserted {
            self.s.lines |= bit;
        } else {
            self.s.lines &= !bit;
        }
        self.service(pin)
    }

    /// The local APICs' EOI broadcast for `vector`: clears Remote IRR of every level-triggered
    /// entry with that vector and re-sends those whose pin is still asserted.
    pub fn end_of_interrupt(&mut self, vector: u8) -> Vec<IrqMessage> {
        let mut messages = Vec::new();
        for pin in 0..PINS {
            let entry = self.s.redirection[pin];
            if entry & RTE_REMOTE_IRR != 0 && entry & RTE_VECTOR == u64::from(vector) {
                self.s.redirection[pin] &= !RTE_REMOTE_IRR;
                messages.extend(self.service(pin));
            }
        }
        messages
    }

    /// The raw redirection entry of `pin` (`None` above pin 23).
    pub fn entry(&self, pin: u8) -> Option<u64> {
        self.s.redirection.get(usize::from(pin)).copied()
    }

    /// The IOAPIC ID.
    pub fn id(&self) -> u8 {
        self.s.id
    }

    /// Registers and pin levels, for a snapshot.
    pub fn state(&self) -> State {
        self.s
    }

    /// Loads registers and pin levels from a snapshot. A state no 82093AA can be in is
    /// refused and the model is left unchanged.
    pub fn restore(&mut self, state: State) -> Result<(), StateError> {
        let invalid = |field, value| {
            Err(StateError::Invalid {
                device: DEVICE,
                field,
                value,
            })
        };
        if state.id & !ID_MASK != 0 {
            return invalid("id", u64::from(state.id));
        }
        for (pin, &entry) in state.redirection.iter().enumerate() {
            let remote_irr_ok = entry & RTE_REMOTE_IRR == 0 || is_level(entry);
            if entry & !(RTE_WRITABLE | RTE_REMOTE_IRR) != 0 || !remote_irr_ok {
                return invalid(REDIRECTION_NAMES[pin], entry);
            }
        }
        let pins = (1u32 << PINS) - 1;
        if state.lines & !pins != 0 {
            return invalid("lines", u64::from(state.lines));
        }
        if state.pending_edges & !pins != 0 {
            return invalid("pending_edges", u64::from(state.pending_edges));
        }
        self.s = state;
        Ok(())
    }

    fn read_indirect(&self) -> u32 {
        match self.s.select {
            REG_ID | REG_ARBITRATION => u32::from(self.s.id) << ID_SHIFT,
            REG_VERSION => VERSION_REGISTER,
            index @ REG_REDIRECTION..=0x3F => {
                let pin = usize::from((index - REG_REDIRECTION) / 2);
                let entry = self.s.redirection[pin];
                // The high half is the upper 32 bits.
                if index % 2 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_indirect(&mut self, value: u32) -> Option<IrqMessage> {
        match self.s.select {
            REG_ID => {
                // Bits 27:24 fit in u8.
                self.s.id = (value >> ID_SHIFT) as u8 & ID_MASK;
                None
            }
            index @ REG_REDIRECTION..=0x3F => {
                let pin = usize::from((index - REG_REDIRECTION) / 2);
                let old = self.s.redirection[pin];
                let written = if index % 2 == 0 {
                    (old & !0xFFFF_FFFF) | u64::from(value)
                } else {
                    (old & 0xFFFF_FFFF) | (u64::from(value) << 32)
                };
                let mut entry = (written & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                if !is_level(entry) {
                    // Remote IRR is only defined for level-triggered entries (KVM clears it
                    // too when an entry turns edge-triggered).
                    entry &= !RTE_REMOTE_IRR;
                }
                self.s.redirection[pin] = entry;
                self.service(pin)
            }
            _ => None, // Version, arbitration and unknown registers are read-only.
        }
    }

    /// Sends what pin `pin` has to send under its current entry.
    fn service(&mut self, pin: usize) -> Option<IrqMessage> {
        let bit = 1 << pin;
        let entry = self.s.redirection[pin];
        if entry & RTE_MASKED != 0 {
            return None;
        }
        let level = is_level(entry);
        if level {
            // A level entry needs no edge memory.
            self.s.pending_edges &= !bit;
            if self.s.lines & bit == 0 || entry & RTE_REMOTE_IRR != 0 {
                return None;
            }
            self.s.redirection[pin] |= RTE_REMOTE_IRR;
        } else {
            if self.s.pending_edges & bit == 0 {
                return None;
            }
            self.s.pending_edges &= !bit;
        }
        let delivery_mode = delivery_mode(entry)?;
        // `pin` < 24; the vector and destination fields are 8 bits.
        Some(IrqMessage {
            pin: pin as u8,
            vector: (entry & RTE_VECTOR) as u8,
            destination: (entry >> RTE_DEST_SHIFT) as u8,
            logical: entry & RTE_DEST_LOGICAL != 0,
            delivery_mode,
            level_triggered: level,
        })
    }
}

/// Field names for restore errors.
const REDIRECTION_NAMES: [&str; PINS] = [
    "redirection[0]",
    "redirection[1]",
    "redirection[2]",
    "redirection[3]",
    "redirection[4]",
    "redirection[5]",
    "redirection[6]",
    "redirection[7]",
    "redirection[8]",
    "redirection[9]",
    "redirection[10]",
    "redirection[11]",
    "redirection[12]",
    "redirection[13]",
    "redirection[14]",
    "redirection[15]",
    "redirection[16]",
    "redirection[17]",
    "redirection[18]",
    "redirection[19]",
    "redirection[20]",
    "redirection[21]",
    "redirection[22]",
    "redirection[23]",
];

impl Persist for Ioapic {
    type State = State;
    type ConstructorArgs = ();
    type Error = StateError;

    fn save(&self) -> State {
        self.state()
    }

    fn restore((): (), state: &State) -> Result<Ioapic, StateError> {
        let mut ioapic = Ioapic::new(0);
        Ioapic::restore(&mut ioapic, *state)?;
        Ok(ioapic)
    }
}

#[cfg(test)]
mod tests;
