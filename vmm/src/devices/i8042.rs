//! The PC keyboard controller (Intel 8042 / PS/2 controller), enough for a guest to reset the
//! machine and for Linux's `i8042` and `atkbd` probes, as a register state machine.
//!
//! Command and status bits follow the IBM *PS/2 Hardware Interface Technical Reference*
//! ("Keyboard/Auxiliary Device Controller": status register, command byte, controller
//! commands 0x20–0xFF) and Linux's `drivers/input/serio/i8042.h`, which names them the same
//! way.
//!
//! | port | read | write |
//! | --- | --- | --- |
//! | `0x60` | output buffer | data: a command's parameter, else a byte for the keyboard |
//! | `0x64` | status register | controller command |
//!
//! What is there:
//!
//! - **Controller commands**: read/write the command byte (CTR) and the rest of the 32-byte
//!   RAM, self-test (0xAA → 0x55), keyboard and auxiliary interface tests (→ 0x00),
//!   enable/disable of both ports, read/write of the output port, writes into the keyboard and
//!   auxiliary output buffers (the auxiliary loopback Linux uses to find an AUX port), A20
//!   gate commands, and the reset pulse: command 0xFE (any 0xF0–0xFF with bit 0 clear), or
//!   the output port's reset bit written as 0, sets [`I8042::reset_requested`].
//! - **A keyboard with no keys**: it answers the commands `atkbd` sends (reset with BAT 0xAA,
//!   identify 0xAB 0x83 — 0xAB 0x41 when the controller translates — echo, LEDs, scan-code
//!   set, typematic, enable/disable) so the probe finishes at once, and never sends a scan
//!   code.
//! - **No mouse**: a byte sent to the auxiliary device (command 0xD4) is answered with 0xFE
//!   and the timeout bit, as a PS/2 controller does when nothing is attached, so `psmouse`
//!   gives up without waiting.
//!
//! The A20 bit of the output port is stored but does not mask memory (Keel's guests start
//! with A20 enabled and never turn it off).
//!
//! # Interrupts
//!
//! A byte in the output buffer raises IRQ1 (keyboard and controller bytes, if CTR bit 0) or
//! IRQ12 (auxiliary bytes, if CTR bit 1). The PC wires both edge-triggered, and each byte needs
//! its own edge (the guest's handler reads one byte per interrupt), so besides the levels
//! ([`I8042::irq1_level`], [`I8042::irq12_level`]) the model counts one edge per byte that
//! reaches the output buffer with its interrupt enabled: [`I8042::take_irq_edges`].
//!
//! [`State`] holds the controller, the queued output and the keyboard for snapshots.

use alloc::vec::Vec;

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Status (read) and command (write) port.
pub const COMMAND_PORT: u16 = 0x64;

/// Status bit 0: output buffer full.
pub const STATUS_OBF: u8 = 0x01;
/// Status bit 1: input buffer full (never: writes are taken at once).
pub const STATUS_IBF: u8 = 0x02;
/// Status bit 2: system flag (self-test passed).
pub const STATUS_SYS: u8 = 0x04;
/// Status bit 3: the last write was a command (port 0x64), not data.
pub const STATUS_CMD: u8 = 0x08;
/// Status bit 4: keyboard not inhibited (keylock open).
pub const STATUS_UNLOCKED: u8 = 0x10;
/// Status bit 5: the output buffer holds auxiliary-device data.
pub const STATUS_AUX_OBF: u8 = 0x20;
/// Status bit 6: timeout talking to a device.
pub const STATUS_TIMEOUT: u8 = 0x40;
/// Status bit 7: parity error.
pub const STATUS_PARITY: u8 = 0x80;

/// Command byte bit 0: keyboard interrupt (IRQ1) enable.
pub const CTR_KBD_INT: u8 = 0x01;
/// Command byte bit 1: auxiliary interrupt (IRQ12) enable.
pub const CTR_AUX_INT: u8 = 0x02;
/// Command byte bit 2: system flag.
pub const CTR_SYS: u8 = 0x04;
/// Command byte bit 4: keyboard interface disabled.
pub const CTR_KBD_DISABLE: u8 = 0x10;
/// Command byte bit 5: auxiliary interface disabled.
pub const CTR_AUX_DISABLE: u8 = 0x20;
/// Command byte bit 6: translate keyboard scan codes to set 1.
pub const CTR_XLATE: u8 = 0x40;
/// The command byte after firmware: translation, system flag, keyboard interrupt, no mouse.
pub const CTR_DEFAULT: u8 = CTR_XLATE | CTR_AUX_DISABLE | CTR_SYS | CTR_KBD_INT;

/// Output port bit 0: system reset (active low).
pub const OUTPORT_RESET: u8 = 0x01;
/// Output port bit 1: A20 gate.
pub const OUTPORT_A20: u8 = 0x02;
/// Output port bit 4: keyboard output buffer full (IRQ1).
pub const OUTPORT_OBF: u8 = 0x10;
/// Output port bit 5: auxiliary output buffer full (IRQ12).
pub const OUTPORT_AUX_OBF: u8 = 0x20;

/// Controller commands (written to [`COMMAND_PORT`]).
pub mod cmd {
    /// Read RAM byte 0, the command byte (0x21–0x3F read the other RAM bytes).
    pub const READ_CTR: u8 = 0x20;
    /// Write the command byte (0x61–0x7F write the other RAM bytes); the byte follows.
    pub const WRITE_CTR: u8 = 0x60;
    /// Disable the auxiliary interface.
    pub const AUX_DISABLE: u8 = 0xA7;
    /// Enable the auxiliary interface.
    pub const AUX_ENABLE: u8 = 0xA8;
    /// Test the auxiliary interface (0x00 = no error).
    pub const AUX_TEST: u8 = 0xA9;
    /// Controller self-test (0x55 = passed).
    pub const SELF_TEST: u8 = 0xAA;
    /// Test the keyboard interface (0x00 = no error).
    pub const KBD_TEST: u8 = 0xAB;
    /// Disable the keyboard interface.
    pub const KBD_DISABLE: u8 = 0xAD;
    /// Enable the keyboard interface.
    pub const KBD_ENABLE: u8 = 0xAE;
    /// Read the input port.
    pub const READ_INPUT: u8 = 0xC0;
    /// Read the output port.
    pub const READ_OUTPUT: u8 = 0xD0;
    /// Write the output port; the byte follows.
    pub const WRITE_OUTPUT: u8 = 0xD1;
    /// Write the keyboard output buffer (as if the keyboard sent it); the byte follows.
    pub const WRITE_KBD_OUTPUT: u8 = 0xD2;
    /// Write the auxiliary output buffer (loopback); the byte follows.
    pub const WRITE_AUX_OUTPUT: u8 = 0xD3;
    /// Send the following byte to the auxiliary device.
    pub const WRITE_AUX: u8 = 0xD4;
    /// Disable A20 (HP Vectra).
    pub const A20_DISABLE: u8 = 0xDD;
    /// Enable A20 (HP Vectra).
    pub const A20_ENABLE: u8 = 0xDF;
    /// Read the test inputs.
    pub const READ_TEST: u8 = 0xE0;
    /// Pulse output port bits 3:0 low where the command's bits 3:0 are 0 (first of 16).
    pub const PULSE: u8 = 0xF0;
    /// Pulse the reset line: reset the machine.
    pub const RESET: u8 = 0xFE;
}

/// Keyboard replies.
pub mod kbd {
    /// Acknowledge.
    pub const ACK: u8 = 0xFA;
    /// Resend / not acknowledged.
    pub const NAK: u8 = 0xFE;
    /// Basic assurance test passed (after reset).
    pub const BAT_OK: u8 = 0xAA;
    /// Echo.
    pub const ECHO: u8 = 0xEE;
    /// First identify byte of an MF2 keyboard.
    pub const ID: u8 = 0xAB;
    /// Second identify byte, untranslated.
    pub const ID_MF2: u8 = 0x83;
    /// Second identify byte, translated.
    pub const ID_MF2_XLATE: u8 = 0x41;
}

/// Bytes that can wait in the output queue; more are dropped.
pub const OUTPUT_CAPACITY: usize = 16;

/// The name this model gives in errors, bus listings and saved states.
pub const NAME: &str = "i8042";
const DEVICE: &str = NAME;

pub use super::StateError;

use serde::{Deserialize, Serialize};

use crate::persist::Persist;

/// Who put a byte in the output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// The controller (a command's reply).
    Controller,
    /// The keyboard.
    Keyboard,
    /// The auxiliary (mouse) port.
    Aux,
}

/// A byte waiting for the guest to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The byte.
    pub value: u8,
    /// Where it came from.
    pub source: Source,
    /// It reports a device timeout (status bit 6).
    pub timeout: bool,
    /// It came from the device itself (not a controller command such as the 0xD3
    /// loopback), so it waits while the device's interface is disabled.
    pub from_device: bool,
    /// Sequence number, to raise one interrupt edge per byte.
    pub serial: u64,
}

/// The controller and keyboard, for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// RAM: byte 0 is the command byte.
    pub ram: [u8; 32],
    /// The output port.
    pub outport: u8,
    /// Status bit 2 (system flag).
    pub sys: bool,
    /// Status bit 3 (last write was a command).
    pub last_was_command: bool,
    /// A controller command waiting for its data byte.
    pub pending_command: Option<u8>,
    /// Bytes for the guest, oldest first.
    pub output: Vec<Output>,
    /// Serial of the byte in the output buffer, if one is loaded. Once loaded a byte stays
    /// readable even if its interface is then disabled.
    pub loaded: Option<u64>,
    /// The last byte the guest read (what port 0x60 reads when nothing is waiting).
    pub last_read: u8,
    /// Serial of the next output byte.
    pub next_serial: u64,
    /// Serial of the last byte an interrupt edge was counted for.
    pub signalled_serial: Option<u64>,
    /// IRQ1 edges not taken yet.
    pub irq1_edges: u32,
    /// IRQ12 edges not taken yet.
    pub irq12_edges: u32,
    /// A keyboard command waiting for its parameter byte.
    pub kbd_pending: Option<u8>,
    /// The keyboard is scanning (enabled).
    pub kbd_scanning: bool,
    /// The keyboard's scan-code set (1–3).
    pub kbd_scan_set: u8,
    /// The guest pulsed the reset line.
    pub reset_requested: bool,
}

/// The keyboard controller of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct I8042 {
    s: State,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// The controller as firmware leaves it: self-test passed, command byte
    /// [`CTR_DEFAULT`], A20 enabled, nothing to read.
    pub fn new() -> I8042 {
        let mut ram = [0; 32];
        ram[0] = CTR_DEFAULT;
        I8042 {
            s: State {
                ram,
                outport: OUTPORT_RESET | OUTPORT_A20,
                sys: true,
                last_was_command: false,
                pending_command: None,
                output: Vec::new(),
                loaded: None,
                last_read: 0,
                next_serial: 0,
                signalled_serial: None,
                irq1_edges: 0,
                irq12_edges: 0,
                kbd_pending: None,
                kbd_scanning: true,
                kbd_scan_set: 2,
                reset_requested: false,
            },
        }
    }

    /// A guest `IN` from `port`: [`DATA_PORT`] reads the output buffer, [`COMMAND_PORT`] the
    /// status register; other ports read 0xFF.
    pub fn read_port(&mut self, port: u16) -> u8 {
        match port {
            DATA_PORT => {
                if let Some(i) = self.current() {
                    self.s.last_read = self.s.output.remove(i).value;
                    self.s.loaded = None;
                    self.update();
                }
                self.s.last_read
            }
            COMMAND_PORT => self.status(),
            _ => 0xFF,
        }
    }

    /// A guest `OUT` of `value` to `port` (see [`I8042::read_port`]); other ports are ignored.
    pub fn write_port(&mut self, port: u16, value: u8) {
        match port {
            DATA_PORT => {
                self.s.last_was_command = false;
                match self.s.pending_command.take() {
                    Some(command) => self.command_data(command, value),
                    None => {
                        // Sending to the keyboard enables its interface (as QEMU does).
                        self.s.ram[0] &= !CTR_KBD_DISABLE;
                        self.keyboard_write(value);
                    }
                }
            }
            COMMAND_PORT => {
                self.s.last_was_command = true;
                self.s.pending_command = None;
                self.command(value);
            }
            _ => return,
        }
        self.update();
    }

    /// Whether the guest asked for a machine reset (command 0xFE, or the output port's reset
    /// bit written as 0). Stays set until [`I8042::take_reset_request`].
    pub fn reset_requested(&self) -> bool {
        self.s.reset_requested
    }

    /// Returns and clears the reset request.
    pub fn take_reset_request(&mut self) -> bool {
        core::mem::take(&mut self.s.reset_requested)
    }

    /// Whether IRQ1 is asserted: a keyboard or controller byte is in the output buffer and
    /// CTR bit 0 is set.
    pub fn irq1_level(&self) -> bool {
        self.current_output()
            .is_some_and(|out| out.source != Source::Aux && self.ctr() & CTR_KBD_INT != 0)
    }

    /// Whether IRQ12 is asserted: an auxiliary byte is in the output buffer and CTR bit 1 is
    /// set.
    pub fn irq12_level(&self) -> bool {
        self.current_output()
            .is_some_and(|out| out.source == Source::Aux && self.ctr() & CTR_AUX_INT != 0)
    }

    /// The interrupt edges since the last call: `(irq1, irq12)`, one per byte that reached the
    /// output buffer with its interrupt enabled. The VM raises and lowers the line once per
    /// edge.
    ///
    /// ```
    /// use keel_vmm::devices::i8042::{I8042, COMMAND_PORT, DATA_PORT};
    ///
    /// let mut kbc = I8042::new();
    /// kbc.write_port(DATA_PORT, 0xF2); // keyboard: identify
    /// assert_eq!(kbc.take_irq_edges(), (1, 0));
    /// assert_eq!(kbc.read_port(DATA_PORT), 0xFA);
    /// assert_eq!(kbc.take_irq_edges(), (1, 0)); // the next byte, its own edge
    /// assert_eq!(kbc.read_port(DATA_PORT), 0xAB);
    /// kbc.write_port(COMMAND_PORT, 0xFE);
    /// assert!(kbc.reset_requested());
    /// ```
    pub fn take_irq_edges(&mut self) -> (u32, u32) {
        (
            core::mem::take(&mut self.s.irq1_edges),
            core::mem::take(&mut self.s.irq12_edges),
        )
    }

    /// The controller, queued output and keyboard, for a snapshot.
    pub fn state(&self) -> State {
        self.s.clone()
    }

    /// Loads the controller from a snapshot. A state it cannot be in is refused and the
    /// model is left unchanged.
    pub fn restore(&mut self, state: State) -> Result<(), StateError> {
        let invalid = |field, value| {
            Err(StateError::Invalid {
                device: DEVICE,
                field,
                value,
            })
        };
        if state.output.len() > OUTPUT_CAPACITY {
            return invalid("output", state.output.len() as u64);
        }
        if state
            .output
            .iter()
            .any(|out| out.serial >= state.next_serial)
        {
            return invalid("next_serial", state.next_serial);
        }
        if let Some(serial) = state.loaded
            && !state.output.iter().any(|out| out.serial == serial)
        {
            return invalid("loaded", serial);
        }
        if let Some(command) = state.pending_command
            && !takes_data(command)
        {
            return invalid("pending_command", u64::from(command));
        }
        if let Some(command) = state.kbd_pending
            && !matches!(command, 0xED | 0xF0 | 0xF3)
        {
            return invalid("kbd_pending", u64::from(command));
        }
        if !(1..=3).contains(&state.kbd_scan_set) {
            return invalid("kbd_scan_set", u64::from(state.kbd_scan_set));
        }
        self.s = state;
        Ok(())
    }

    fn ctr(&self) -> u8 {
        self.s.ram[0]
    }

    /// Index of the byte in the output buffer.
    fn current(&self) -> Option<usize> {
        let serial = self.s.loaded?;
        self.s.output.iter().position(|out| out.serial == serial)
    }

    /// Index of the byte to load next: the oldest one whose interface is enabled (a disabled
    /// interface holds its device's bytes back).
    fn next_to_load(&self) -> Option<usize> {
        let ctr = self.ctr();
        self.s.output.iter().position(|out| {
            !out.from_device
                || match out.source {
                    Source::Aux => ctr & CTR_AUX_DISABLE == 0,
                    _ => ctr & CTR_KBD_DISABLE == 0,
                }
        })
    }

    fn current_output(&self) -> Option<&Output> {
        self.current().map(|i| &self.s.output[i])
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        if self.s.sys {
            status |= STATUS_SYS;
        }
        if self.s.last_was_command {
            status |= STATUS_CMD;
        }
        if let Some(out) = self.current_output() {
            status |= STATUS_OBF;
            if out.source == Source::Aux {
                status |= STATUS_AUX_OBF;
            }
            if out.timeout {
                status |= STATUS_TIMEOUT;
            }
        }
        status
    }

    fn push(&mut self, value: u8, source: Source, timeout: bool) {
        self.push_output(value, source, timeout, source != Source::Controller);
    }

    /// Queues a byte a controller command made (never held back).
    fn push_from_controller(&mut self, value: u8, source: Source) {
        self.push_output(value, source, false, false);
    }

    fn push_output(&mut self, value: u8, source: Source, timeout: bool, from_device: bool) {
        if self.s.output.len() >= OUTPUT_CAPACITY {
            return;
        }
        let serial = self.s.next_serial;
        self.s.next_serial = serial.saturating_add(1);
        self.s.output.push(Output {
            value,
            source,
            timeout,
            from_device,
            serial,
        });
    }

    /// Loads the output buffer if it is empty, and counts an interrupt edge when a new byte
    /// sits there with its interrupt enabled.
    fn update(&mut self) {
        if self.current().is_none() {
            self.s.loaded = self.next_to_load().map(|i| self.s.output[i].serial);
        }
        let Some(out) = self.current_output().copied() else {
            return;
        };
        if self.s.signalled_serial == Some(out.serial) {
            return;
        }
        if self.irq1_level() {
            self.s.irq1_edges = self.s.irq1_edges.saturating_add(1);
        } else if self.irq12_level() {
            self.s.irq12_edges = self.s.irq12_edges.saturating_add(1);
        } else {
            return;
        }
        self.s.signalled_serial = Some(out.serial);
    }

    fn command(&mut self, command: u8) {
        match command {
            cmd::READ_CTR..=0x3F => {
                let value = self.s.ram[usize::from(command & 0x1F)];
                self.push(value, Source::Controller, false);
            }
            c if takes_data(c) => self.s.pending_command = Some(c),
            cmd::AUX_DISABLE => self.s.ram[0] |= CTR_AUX_DISABLE,
            cmd::AUX_ENABLE => self.s.ram[0] &= !CTR_AUX_DISABLE,
            cmd::AUX_TEST | cmd::KBD_TEST => self.push(0x00, Source::Controller, false),
            cmd::SELF_TEST => {
                self.s.sys = true;
                self.push(0x55, Source::Controller, false);
            }
            cmd::KBD_DISABLE => self.s.ram[0] |= CTR_KBD_DISABLE,
            cmd::KBD_ENABLE => self.s.ram[0] &= !CTR_KBD_DISABLE,
            cmd::READ_INPUT => self.push(0x80, Source::Controller, false),
            cmd::READ_OUTPUT => {
                let mut value = self.s.outport & !(OUTPORT_OBF | OUTPORT_AUX_OBF);
                if self.irq1_level() {
                    value |= OUTPORT_OBF;
                }
                if self.irq12_level() {
                    value |= OUTPORT_AUX_OBF;
                }
                self.push(value, Source::Controller, false);
            }
            cmd::A20_DISABLE => self.s.outport &= !OUTPORT_A20,
            cmd::A20_ENABLE => self.s.outport |= OUTPORT_A20,
            cmd::READ_TEST => self.push(0x00, Source::Controller, false),
            // Bit 0 low pulses the reset line.
            cmd::PULSE..=0xFF if command & 1 == 0 => self.s.reset_requested = true,
            _ => {}
        }
    }

    fn command_data(&mut self, command: u8, value: u8) {
        match command {
            cmd::WRITE_CTR..=0x7F => {
                let index = usize::from(command & 0x1F);
                self.s.ram[index] = value;
                if index == 0 {
                    self.s.sys = value & CTR_SYS != 0;
                }
            }
            cmd::WRITE_OUTPUT => {
                self.s.outport = value;
                if value & OUTPORT_RESET == 0 {
                    self.s.reset_requested = true;
                }
            }
            cmd::WRITE_KBD_OUTPUT => self.push_from_controller(value, Source::Keyboard),
            cmd::WRITE_AUX_OUTPUT => self.push_from_controller(value, Source::Aux),
            _ => {
                // cmd::WRITE_AUX: nothing is attached; the controller times out.
                self.s.ram[0] &= !CTR_AUX_DISABLE;
                self.push(kbd::NAK, Source::Aux, true);
            }
        }
    }

    /// A byte for the keyboard.
    fn keyboard_write(&mut self, value: u8) {
        if let Some(command) = self.s.kbd_pending.take() {
            self.push(kbd::ACK, Source::Keyboard, false);
            if command == 0xF0 {
                match value {
                    0 => {
                        let set = self.s.kbd_scan_set;
                        self.push(set, Source::Keyboard, false);
                    }
                    1..=3 => self.s.kbd_scan_set = value,
                    _ => {}
                }
            }
            return;
        }
        match value {
            // Set LEDs, scan-code set, typematic rate: a parameter follows.
            0xED | 0xF0 | 0xF3 => {
                self.s.kbd_pending = Some(value);
                self.push(kbd::ACK, Source::Keyboard, false);
            }
            0xEE => self.push(kbd::ECHO, Source::Keyboard, false),
            0xF2 => {
                let second = if self.ctr() & CTR_XLATE != 0 {
                    kbd::ID_MF2_XLATE
                } else {
                    kbd::ID_MF2
                };
                for byte in [kbd::ACK, kbd::ID, second] {
                    self.push(byte, Source::Keyboard, false);
                }
            }
            0xF4 => {
                self.s.kbd_scanning = true;
                self.push(kbd::ACK, Source::Keyboard, false);
            }
            0xF5 | 0xF6 => {
                self.s.kbd_scanning = value == 0xF6;
                self.s.kbd_scan_set = 2;
                self.push(kbd::ACK, Source::Keyboard, false);
            }
            0xF7..=0xFE => self.push(kbd::ACK, Source::Keyboard, false),
            0xFF => {
                self.s.kbd_scanning = true;
                self.s.kbd_scan_set = 2;
                self.push(kbd::ACK, Source::Keyboard, false);
                self.push(kbd::BAT_OK, Source::Keyboard, false);
            }
            _ => self.push(kbd::NAK, Source::Keyboard, false),
        }
    }
}

/// Whether controller command `command` takes a data byte.
fn takes_data(command: u8) -> bool {
    matches!(
        command,
        cmd::WRITE_CTR
            ..=0x7F
                | cmd::WRITE_OUTPUT
                | cmd::WRITE_KBD_OUTPUT
                | cmd::WRITE_AUX_OUTPUT
                | cmd::WRITE_AUX
    )
}

impl Persist for I8042 {
    type State = State;
    type ConstructorArgs = ();
    type Error = StateError;

    fn save(&self) -> State {
        self.state()
    }

    fn restore((): (), state: &State) -> Result<I8042, StateError> {
        let mut i8042 = I8042::new();
        I8042::restore(&mut i8042, state.clone())?;
        Ok(i8042)
    }
}

#[cfg(test)]
mod tests;
