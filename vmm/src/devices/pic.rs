//! The PC's cascaded pair of 8259A programmable interrupt controllers, as a register state
//! machine.
//!
//! The model follows the Intel *8259A Programmable Interrupt Controller* data sheet
//! (order no. 231468): the initialization sequence ICW1–ICW4 ("Initialization Command Words",
//! figure 6), the operation command words OCW1–OCW3 (figure 8), the IRR/ISR/IMR registers, the
//! priority resolver with rotation, EOI (specific, non-specific, automatic) and poll mode.
//! The PC wiring around the two chips is the usual one:
//!
//! | ports | part |
//! | --- | --- |
//! | `0x20`, `0x21` | master: command (ICW1, OCW2, OCW3) and data (ICW2–4, OCW1 = IMR) |
//! | `0xA0`, `0xA1` | slave, the same registers |
//! | `0x4D0`, `0x4D1` | ELCR (edge/level control, PIIX/ICH "ELCR1"/"ELCR2"): a set bit makes that IRQ level-triggered |
//!
//! The slave's INT output drives the master's IR2 (the cascade); IRQs 8–15 are the slave's
//! IR0–7. A guest acknowledges the pair as a whole through [`Pic::acknowledge`], the INTA cycle.
//!
//! What the model simplifies, and why:
//!
//! - **IRQ 2 is the cascade.** [`Pic::raise_irq`]`(2)` is ignored: on a PC the ISA IRQ2 line
//!   is routed to the slave's IR1 (IRQ 9), and nothing in Keel raises it.
//! - **Lines are inputs, not wires.** A device calls [`Pic::raise_irq`]/[`Pic::lower_irq`] with
//!   the level of its line. An edge-triggered input latches IRR on a low-to-high transition;
//!   a level-triggered one (ELCR bit or ICW1.LTIM) holds IRR while high. A device that only
//!   produces edges (the PIT's OUT0 transitions) raises and then lowers the line.
//! - **MCS-80/85 mode** (ICW4.µPM = 0), buffered mode and ICW4.SFNM are stored but change
//!   nothing except that special fully nested mode lets the master see a second slave request
//!   while one is in service, as the data sheet describes.
//! - **Spurious interrupts.** An INTA with nothing left to deliver answers IR7's vector without
//!   setting ISR, like the part; [`Pic::acknowledge`] is meant to be called only while
//!   [`Pic::interrupt_output`] is set and returns `None` otherwise.
//!
//! [`State`] holds both chips' registers and the ELCR for snapshots.

/// Master command port (ICW1, OCW2, OCW3; reads IRR/ISR or a poll result).
pub const MASTER_COMMAND: u16 = 0x20;
/// Master data port (ICW2–4; OCW1 = IMR).
pub const MASTER_DATA: u16 = 0x21;
/// Slave command port.
pub const SLAVE_COMMAND: u16 = 0xA0;
/// Slave data port.
pub const SLAVE_DATA: u16 = 0xA1;
/// ELCR for IRQs 0–7 (PIIX4 data sheet §3.4.3, "ELCR1").
pub const ELCR_MASTER: u16 = 0x4D0;
/// ELCR for IRQs 8–15 ("ELCR2").
pub const ELCR_SLAVE: u16 = 0x4D1;

/// ELCR1 bits that exist: IRQ 0, 1 and 2 are always edge-triggered (PIIX4 §3.4.3).
pub const ELCR_MASTER_MASK: u8 = 0xF8;
/// ELCR2 bits that exist: IRQ 8 and 13 are always edge-triggered.
pub const ELCR_SLAVE_MASK: u8 = 0xDE;

/// The master input the slave's INT output drives.
pub const CASCADE_IRQ: u8 = 2;

/// ICW1 (command port, bit 4 set): initialization command word 1.
pub const ICW1: u8 = 0x10;
/// ICW1 bit 0: ICW4 will follow.
pub const ICW1_IC4: u8 = 0x01;
/// ICW1 bit 1: single chip (no ICW3).
pub const ICW1_SNGL: u8 = 0x02;
/// ICW1 bit 3: level-triggered inputs (all eight).
pub const ICW1_LTIM: u8 = 0x08;

/// ICW4 bit 0: 8086/8088 mode (µPM).
pub const ICW4_8086: u8 = 0x01;
/// ICW4 bit 1: automatic end of interrupt.
pub const ICW4_AEOI: u8 = 0x02;
/// ICW4 bit 4: special fully nested mode.
pub const ICW4_SFNM: u8 = 0x10;

/// OCW3 marker (command port, bits 4:3 = 01).
pub const OCW3: u8 = 0x08;
/// OCW3 bit 0: read ISR (with [`OCW3_RR`]) instead of IRR.
pub const OCW3_RIS: u8 = 0x01;
/// OCW3 bit 1: act on [`OCW3_RIS`].
pub const OCW3_RR: u8 = 0x02;
/// OCW3 bit 2: poll command.
pub const OCW3_POLL: u8 = 0x04;
/// OCW3 bit 5: special mask mode value (with [`OCW3_ESMM`]).
pub const OCW3_SMM: u8 = 0x20;
/// OCW3 bit 6: act on [`OCW3_SMM`].
pub const OCW3_ESMM: u8 = 0x40;

/// OCW2 bits 7:5, the command (data sheet table 1, "OCW2").
pub mod ocw2 {
    /// Clear rotate in automatic EOI mode.
    pub const ROTATE_AEOI_CLEAR: u8 = 0b000;
    /// Non-specific EOI.
    pub const EOI: u8 = 0b001;
    /// No operation.
    pub const NOP: u8 = 0b010;
    /// Specific EOI (level in bits 2:0).
    pub const SPECIFIC_EOI: u8 = 0b011;
    /// Set rotate in automatic EOI mode.
    pub const ROTATE_AEOI_SET: u8 = 0b100;
    /// Rotate on non-specific EOI.
    pub const ROTATE_EOI: u8 = 0b101;
    /// Set priority: the level in bits 2:0 becomes the lowest priority.
    pub const SET_PRIORITY: u8 = 0b110;
    /// Rotate on specific EOI.
    pub const ROTATE_SPECIFIC_EOI: u8 = 0b111;
}

/// Poll-mode result bit 7: an interrupt was pending (its level is in bits 2:0).
pub const POLL_INTERRUPT: u8 = 0x80;

/// The name this model gives in errors, bus listings and saved states.
pub const NAME: &str = "8259 PIC";
const DEVICE: &str = NAME;

pub use super::StateError;

use serde::{Deserialize, Serialize};

use crate::persist::Persist;

/// One 8259A's registers, for snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChipState {
    /// Interrupt Request Register.
    pub irr: u8,
    /// In-Service Register.
    pub isr: u8,
    /// Interrupt Mask Register (OCW1).
    pub imr: u8,
    /// Input levels seen last (the edge detector; a line must go low before it latches again).
    pub lines: u8,
    /// ELCR bits for this chip's inputs.
    pub elcr: u8,
    /// ICW2 bits 7:3: the vector of IR0.
    pub vector_base: u8,
    /// Next initialization word expected on the data port: 0 none, 2, 3 or 4 (ICW2–ICW4).
    pub init_step: u8,
    /// ICW1.IC4: an ICW4 follows.
    pub expect_icw4: bool,
    /// ICW1.SNGL: no ICW3.
    pub single: bool,
    /// ICW1.LTIM: every input level-triggered.
    pub ltim: bool,
    /// ICW3 as written.
    pub icw3: u8,
    /// ICW4 as written (0 if none was).
    pub icw4: u8,
    /// Rotate priorities in automatic EOI mode (OCW2).
    pub rotate_on_aeoi: bool,
    /// The input with the lowest priority (priority rotation; 7 after ICW1).
    pub lowest_priority: u8,
    /// OCW3: the command port reads ISR rather than IRR.
    pub read_isr: bool,
    /// OCW3: the next read is a poll.
    pub poll: bool,
    /// OCW3: special mask mode.
    pub special_mask: bool,
}

/// Both chips' registers, for snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The master (IRQ 0–7).
    pub master: ChipState,
    /// The slave (IRQ 8–15).
    pub slave: ChipState,
}

/// One 8259A.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Chip {
    s: ChipState,
}

impl Chip {
    /// Power-up: not initialized, everything clear, IR7 lowest priority.
    fn new() -> Chip {
        Chip {
            s: ChipState {
                lowest_priority: 7,
                ..ChipState::default()
            },
        }
    }

    fn is_level(&self, bit: u8) -> bool {
        self.s.ltim || self.s.elcr & bit != 0
    }

    /// Priority rank (0 highest) of the highest set bit of `mask`, or 8 for none, under the
    /// current rotation (data sheet "Interrupt Sequence", priority resolver).
    fn priority(&self, mask: u8) -> u8 {
        let highest = (self.s.lowest_priority + 1) & 7;
        (0..8)
            .find(|&rank| mask & (1 << ((rank + highest) & 7)) != 0)
            .unwrap_or(8)
    }

    fn level_of_rank(&self, rank: u8) -> u8 {
        (rank + self.s.lowest_priority + 1) & 7
    }

    /// The input this chip asserts INT for: the highest-priority unmasked request that
    /// outranks everything in service. `sfnm_cascade` is the master's IR2 in special fully
    /// nested mode, which may interrupt its own service.
    fn requested(&self, sfnm_cascade: bool) -> Option<u8> {
        let rank = self.priority(self.s.irr & !self.s.imr);
        if rank == 8 {
            return None;
        }
        let mut in_service = self.s.isr;
        if self.s.special_mask {
            // Special mask mode: masked levels in service do not block lower ones.
            in_service &= !self.s.imr;
        }
        if sfnm_cascade {
            in_service &= !(1 << CASCADE_IRQ);
        }
        (rank < self.priority(in_service)).then(|| self.level_of_rank(rank))
    }

    /// An input line changed (or was re-driven) to `high`.
    fn set_line(&mut self, irq: u8, high: bool) {
        let bit = 1 << (irq & 7);
        if self.is_level(bit) {
            if high {
                self.s.irr |= bit;
            } else {
                self.s.irr &= !bit;
            }
        } else if high && self.s.lines & bit == 0 {
            self.s.irr |= bit;
        }
        if high {
            self.s.lines |= bit;
        } else {
            self.s.lines &= !bit;
        }
    }

    /// The INTA response for `irq`: ISR set (unless AEOI), IRR cleared for an edge input.
    fn intack(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.s.icw4 & ICW4_AEOI != 0 {
            if self.s.rotate_on_aeoi {
                self.s.lowest_priority = irq;
            }
        } else {
            self.s.isr |= bit;
        }
        // A level input stays requested while its line is high (data sheet: "the IR input must
        // remain high until after the falling edge of the first INTA").
        if !self.is_level(bit) {
            self.s.irr &= !bit;
        }
    }

    fn read_command(&mut self, sfnm_cascade: bool) -> u8 {
        if self.s.poll {
            return self.poll_read(sfnm_cascade);
        }
        if self.s.read_isr {
            self.s.isr
        } else {
            self.s.irr
        }
    }

    fn read_data(&mut self, sfnm_cascade: bool) -> u8 {
        if self.s.poll {
            return self.poll_read(sfnm_cascade);
        }
        self.s.imr
    }

    /// Poll command result: bit 7 and the level, acknowledged like an INTA.
    fn poll_read(&mut self, sfnm_cascade: bool) -> u8 {
        self.s.poll = false;
        match self.requested(sfnm_cascade) {
            Some(irq) => {
                self.intack(irq);
                POLL_INTERRUPT | irq
            }
            None => 0,
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & ICW1 != 0 {
            // ICW1 (data sheet "Initialization Command Words"): edge sense reset, IMR cleared,
            // IR7 lowest priority, special mask mode cleared, status read set to IRR, and the
            // ICW4 functions cleared if no ICW4 follows.
            let elcr = self.s.elcr;
            let lines = self.s.lines;
            self.s = ChipState {
                elcr,
                init_step: 2,
                expect_icw4: value & ICW1_IC4 != 0,
                single: value & ICW1_SNGL != 0,
                ltim: value & ICW1_LTIM != 0,
                lowest_priority: 7,
                ..ChipState::default()
            };
            // Level inputs that are high stay requested. An edge input held high is not: it
            // must go low and high again ("following initialization, an IR input must make a
            // low-to-high transition to generate an interrupt").
            let level_bits = if self.s.ltim { 0xFF } else { elcr };
            self.s.irr = lines & level_bits;
            self.s.lines = lines;
        } else if value & OCW3 != 0 {
            if value & OCW3_POLL != 0 {
                self.s.poll = true;
            }
            if value & OCW3_RR != 0 {
                self.s.read_isr = value & OCW3_RIS != 0;
            }
            if value & OCW3_ESMM != 0 {
                self.s.special_mask = value & OCW3_SMM != 0;
            }
        } else {
            self.write_ocw2(value);
        }
    }

    fn write_ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            ocw2::ROTATE_AEOI_CLEAR => self.s.rotate_on_aeoi = false,
            ocw2::ROTATE_AEOI_SET => self.s.rotate_on_aeoi = true,
            cmd @ (ocw2::EOI | ocw2::ROTATE_EOI) => {
                let rank = self.priority(self.s.isr);
                if rank != 8 {
                    let irq = self.level_of_rank(rank);
                    self.s.isr &= !(1 << irq);
                    if cmd == ocw2::ROTATE_EOI {
                        self.s.lowest_priority = irq;
                    }
                }
            }
            ocw2::SPECIFIC_EOI => self.s.isr &= !(1 << level),
            ocw2::SET_PRIORITY => self.s.lowest_priority = level,
            ocw2::ROTATE_SPECIFIC_EOI => {
                self.s.isr &= !(1 << level);
                self.s.lowest_priority = level;
            }
            _ => {} // ocw2::NOP
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.s.init_step {
            2 => {
                self.s.vector_base = value & 0xF8;
                self.s.init_step = if !self.s.single {
                    3
                } else if self.s.expect_icw4 {
                    4
                } else {
                    0
                };
            }
            3 => {
                self.s.icw3 = value;
                self.s.init_step = if self.s.expect_icw4 { 4 } else { 0 };
            }
            4 => {
                self.s.icw4 = value & 0x1F;
                self.s.init_step = 0;
            }
            _ => self.s.imr = value,
        }
    }

    fn sfnm(&self) -> bool {
        self.s.icw4 & ICW4_SFNM != 0
    }
}

fn invalid(field: &'static str, value: u8) -> StateError {
    StateError::Invalid {
        device: DEVICE,
        field,
        value: u64::from(value),
    }
}

/// Checks one chip's fields; `$chip` prefixes the field names in the error.
macro_rules! check_chip {
    ($s:expr, $elcr_mask:expr, $chip:literal) => {{
        let s: &ChipState = $s;
        if s.elcr & !$elcr_mask != 0 {
            return Err(invalid(concat!($chip, ".elcr"), s.elcr));
        }
        if s.vector_base & 7 != 0 {
            return Err(invalid(concat!($chip, ".vector_base"), s.vector_base));
        }
        if !matches!(s.init_step, 0 | 2 | 3 | 4) {
            return Err(invalid(concat!($chip, ".init_step"), s.init_step));
        }
        if s.icw4 & !0x1F != 0 {
            return Err(invalid(concat!($chip, ".icw4"), s.icw4));
        }
        if s.lowest_priority > 7 {
            return Err(invalid(
                concat!($chip, ".lowest_priority"),
                s.lowest_priority,
            ));
        }
    }};
}
/// The master/slave 8259A pair of a PC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pic {
    master: Chip,
    slave: Chip,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// Both chips at power-up: uninitialized, nothing requested or masked, all inputs
    /// edge-triggered.
    pub fn new() -> Pic {
        Pic {
            master: Chip::new(),
            slave: Chip::new(),
        }
    }

    /// A guest `IN` from `port` ([`MASTER_COMMAND`], [`MASTER_DATA`], [`SLAVE_COMMAND`],
    /// [`SLAVE_DATA`], [`ELCR_MASTER`], [`ELCR_SLAVE`]); other ports read 0xFF.
    ///
    /// The command port reads IRR or ISR (OCW3), the data port IMR; after an OCW3 poll command
    /// either port returns the poll result and acknowledges the interrupt it names.
    pub fn read_port(&mut self, port: u16) -> u8 {
        let value = match port {
            MASTER_COMMAND => self.master.read_command(self.master.sfnm()),
            MASTER_DATA => self.master.read_data(self.master.sfnm()),
            SLAVE_COMMAND => self.slave.read_command(false),
            SLAVE_DATA => self.slave.read_data(false),
            ELCR_MASTER => return self.master.s.elcr,
            ELCR_SLAVE => return self.slave.s.elcr,
            _ => return 0xFF,
        };
        self.update_cascade();
        value
    }

    /// A guest `OUT` of `value` to `port` (see [`Pic::read_port`]); other ports are ignored.
    pub fn write_port(&mut self, port: u16, value: u8) {
        match port {
            MASTER_COMMAND => self.master.write_command(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_COMMAND => self.slave.write_command(value),
            SLAVE_DATA => self.slave.write_data(value),
            ELCR_MASTER => self.master.s.elcr = value & ELCR_MASTER_MASK,
            ELCR_SLAVE => self.slave.s.elcr = value & ELCR_SLAVE_MASK,
            _ => return,
        }
        self.update_cascade();
    }

    /// Drives ISA IRQ `irq` (0–15) high. IRQ 2 (the cascade) and numbers above 15 are ignored.
    pub fn raise_irq(&mut self, irq: u8) {
        self.set_irq(irq, true);
    }

    /// Drives ISA IRQ `irq` (0–15) low. IRQ 2 and numbers above 15 are ignored.
    pub fn lower_irq(&mut self, irq: u8) {
        self.set_irq(irq, false);
    }

    /// Drives ISA IRQ `irq` (0–15) to `high`. IRQ 2 and numbers above 15 are ignored.
    pub fn set_irq(&mut self, irq: u8, high: bool) {
        match irq {
            CASCADE_IRQ => return,
            0..=7 => self.master.set_line(irq, high),
            8..=15 => self.slave.set_line(irq - 8, high),
            _ => return,
        }
        self.update_cascade();
    }

    /// Whether the master asserts INTR: an acknowledge now would deliver a vector.
    pub fn interrupt_output(&self) -> bool {
        self.master.requested(self.master.sfnm()).is_some()
    }

    /// The vector an INTA cycle would deliver now, without acknowledging it.
    pub fn pending_vector(&self) -> Option<u8> {
        let irq = self.master.requested(self.master.sfnm())?;
        Some(self.vector_for(irq))
    }

    /// The INTA cycle: the vector of the highest-priority request, now in service (or, with
    /// automatic EOI, already finished). `None` if [`Pic::interrupt_output`] is not asserted.
    ///
    /// ```
    /// use keel_vmm::devices::pic::{Pic, MASTER_COMMAND, MASTER_DATA};
    ///
    /// let mut pic = Pic::new();
    /// // ICW1 (ICW4 follows), ICW2 (vector base 0x20), ICW3 (slave on IR2), ICW4 (8086).
    /// for (port, value) in [(MASTER_COMMAND, 0x11), (MASTER_DATA, 0x20), (MASTER_DATA, 0x04),
    ///                       (MASTER_DATA, 0x01)] {
    ///     pic.write_port(port, value);
    /// }
    /// pic.raise_irq(0);
    /// pic.lower_irq(0);
    /// assert_eq!(pic.acknowledge(), Some(0x20));
    /// assert_eq!(pic.acknowledge(), None);
    /// pic.write_port(MASTER_COMMAND, 0x20); // non-specific EOI
    /// ```
    pub fn acknowledge(&mut self) -> Option<u8> {
        let irq = self.master.requested(self.master.sfnm())?;
        let vector = self.vector_for(irq);
        if irq == CASCADE_IRQ
            && !self.master.s.single
            && let Some(slave_irq) = self.slave.requested(false)
        {
            self.slave.intack(slave_irq);
        }
        self.master.intack(irq);
        self.update_cascade();
        Some(vector)
    }

    /// Whether ISA IRQ `irq` is level-triggered (ELCR or ICW1.LTIM).
    pub fn is_level_triggered(&self, irq: u8) -> bool {
        match irq {
            0..=7 => self.master.is_level(1 << irq),
            8..=15 => self.slave.is_level(1 << (irq - 8)),
            _ => false,
        }
    }

    /// Both chips' registers, for a snapshot.
    pub fn state(&self) -> State {
        State {
            master: self.master.s,
            slave: self.slave.s,
        }
    }

    /// Loads both chips from a snapshot. A state no 8259A pair can be in is refused and the
    /// model is left unchanged.
    pub fn restore(&mut self, state: State) -> Result<(), StateError> {
        check_chip!(&state.master, ELCR_MASTER_MASK, "master");
        check_chip!(&state.slave, ELCR_SLAVE_MASK, "slave");
        self.master.s = state.master;
        self.slave.s = state.slave;
        self.update_cascade();
        Ok(())
    }

    /// The vector for master level `irq` (following the cascade to the slave).
    fn vector_for(&self, irq: u8) -> u8 {
        if irq == CASCADE_IRQ && !self.master.s.single {
            // No slave request left (it went away or is masked): the slave answers its IR7,
            // the spurious vector.
            let slave_irq = self.slave.requested(false).unwrap_or(7);
            self.slave.s.vector_base | slave_irq
        } else {
            self.master.s.vector_base | irq
        }
    }

    /// Drives the master's IR2 from the slave's INT output.
    fn update_cascade(&mut self) {
        let out = self.slave.requested(false).is_some();
        self.master.set_line(CASCADE_IRQ, out);
    }
}

impl Persist for Pic {
    type State = State;
    type ConstructorArgs = ();
    type Error = StateError;

    fn save(&self) -> State {
        self.state()
    }

    fn restore((): (), state: &State) -> Result<Pic, StateError> {
        let mut pic = Pic::new();
        Pic::restore(&mut pic, *state)?;
        Ok(pic)
    }
}

#[cfg(test)]
mod tests;
