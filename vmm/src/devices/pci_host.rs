//! The PCI host bridge behind configuration mechanism #1, and the PC reset control register
//! that shares its ports.
//!
//! Configuration mechanism #1 (PCI Local Bus Specification 3.0 §3.2.2.3.2) uses two ports:
//!
//! | port | access | register |
//! | --- | --- | --- |
//! | `0xCF8` | 32-bit only | `CONFIG_ADDRESS`: bit 31 enable, 23:16 bus, 15:11 device, 10:8 function, 7:2 dword register |
//! | `0xCF9` | 8-bit only | reset control (PIIX4 `RC`, ICH `RST_CNT`): bit 1 SYS_RST, bit 2 RST_CPU, bit 3 FULL_RST |
//! | `0xCFC`–`0xCFF` | 8, 16, 32-bit | `CONFIG_DATA`: byte `n` of the addressed dword at `0xCFC + n` |
//!
//! Other accesses to `0xCF8`–`0xCFB` (a byte or word at `0xCF8`, anything wider than a byte
//! at `0xCF9`) are not configuration cycles; on a PC they go to the ISA bus, so here they read
//! all ones and writes are dropped. While `CONFIG_ADDRESS` bit 31 is clear, `CONFIG_DATA`
//! reads all ones and ignores writes. The bus must hand the model whole accesses (a dword
//! `OUT` to `0xCF8` is one write, not four byte writes).
//!
//! # The bridge
//!
//! Bus 0, device 0, function 0 is an i440FX-like host bridge (vendor 8086, device 1237,
//! revision 02, class 06/00/00, header type 0, no BARs). Configuration cycles for other
//! functions on bus 0 are routed by [`pci`](super::pci) to the functions registered there
//! before they reach this model; here every other bus, device and function has no device:
//! reads return all ones, as a master abort does. Writes reach only the
//! writable bits of the command register, the latency timer and the interrupt line; the rest
//! of the header is read-only, so a BAR-sizing write of all ones reads back 0 (no BAR).
//!
//! # Reset
//!
//! A 0→1 transition of RST_CPU in the reset control register requests a reset
//! ([`PciHost::reset_requested`]), which the FADT's `RESET_REG` (0xCF9 ← 0x06) and Linux's
//! `reboot=pci` both use.
//!
//! [`State`] holds the writable registers for snapshots.

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::persist::Persist;

/// `CONFIG_ADDRESS`.
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// The reset control register.
pub const RESET_CONTROL: u16 = 0xCF9;
/// First `CONFIG_DATA` port.
pub const CONFIG_DATA: u16 = 0xCFC;
/// First port the model claims.
pub const PORT_BASE: u16 = CONFIG_ADDRESS;
/// Number of ports the model claims (`0xCF8..=0xCFF`).
pub const PORT_LEN: u16 = 8;

/// `CONFIG_ADDRESS` bit 31: configuration cycles enabled.
pub const ADDRESS_ENABLE: u32 = 1 << 31;
/// `CONFIG_ADDRESS` bits that hold a value (enable, bus, device, function, register).
pub const ADDRESS_MASK: u32 = 0x80FF_FFFC;

/// Reset control: SYS_RST (hard reset when RST_CPU fires).
pub const RC_SYS_RST: u8 = 1 << 1;
/// Reset control: RST_CPU (a 0→1 transition resets).
pub const RC_RST_CPU: u8 = 1 << 2;
/// Reset control: FULL_RST (power-cycle on reset).
pub const RC_FULL_RST: u8 = 1 << 3;
/// Reset control bits that hold a value.
pub const RC_MASK: u8 = RC_SYS_RST | RC_RST_CPU | RC_FULL_RST;

/// The bridge's vendor id (Intel).
pub const VENDOR_ID: u16 = 0x8086;
/// The bridge's device id (82441FX, the i440FX host bridge).
pub const DEVICE_ID: u16 = 0x1237;
/// Revision id.
pub const REVISION: u8 = 0x02;
/// Class code: bridge (06), host bridge (00), prog-if 00.
pub const CLASS_CODE: u32 = 0x06_0000;

/// Configuration-space register offsets (type 0 header).
pub mod reg {
    /// Vendor id (16 bits).
    pub const VENDOR_ID: u8 = 0x00;
    /// Device id (16 bits).
    pub const DEVICE_ID: u8 = 0x02;
    /// Command (16 bits).
    pub const COMMAND: u8 = 0x04;
    /// Status (16 bits).
    pub const STATUS: u8 = 0x06;
    /// Revision id (8 bits), then the class code (24 bits).
    pub const REVISION: u8 = 0x08;
    /// Latency timer (8 bits).
    pub const LATENCY_TIMER: u8 = 0x0D;
    /// Header type (8 bits).
    pub const HEADER_TYPE: u8 = 0x0E;
    /// First BAR.
    pub const BAR0: u8 = 0x10;
    /// Interrupt line (8 bits).
    pub const INTERRUPT_LINE: u8 = 0x3C;
}

/// Command register: I/O space, memory space, bus master, parity error response, SERR#.
pub const COMMAND_WRITABLE: u16 = 0x0147;
/// Command register at reset: memory space and bus master, as the i440FX comes up.
pub const COMMAND_DEFAULT: u16 = 0x0006;
/// Status register: fast back-to-back capable, medium DEVSEL timing.
pub const STATUS_VALUE: u16 = 0x0280;

/// The name this model gives in errors, bus listings and saved states.
pub const NAME: &str = "PCI host bridge";
const DEVICE: &str = NAME;

/// The writable registers, for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// `CONFIG_ADDRESS`.
    pub address: u32,
    /// The reset control register.
    pub reset_control: u8,
    /// A reset was requested and not yet taken.
    pub reset_requested: bool,
    /// The bridge's command register.
    pub command: u16,
    /// The bridge's latency timer.
    pub latency_timer: u8,
    /// The bridge's interrupt line.
    pub interrupt_line: u8,
}

/// The PCI host bridge at 00:00.0 and the configuration ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciHost {
    s: State,
}

impl Default for PciHost {
    fn default() -> Self {
        PciHost::new()
    }
}

impl PciHost {
    /// The bridge at power-on: configuration disabled, command = [`COMMAND_DEFAULT`].
    pub fn new() -> PciHost {
        PciHost {
            s: State {
                address: 0,
                reset_control: 0,
                reset_requested: false,
                command: COMMAND_DEFAULT,
                latency_timer: 0,
                interrupt_line: 0,
            },
        }
    }

    /// A guest `IN` of `size` bytes (1, 2 or 4; more are cut to 4) from `port`
    /// (`0xCF8..=0xCFF`; other ports read all ones).
    pub fn read(&self, port: u16, size: u8) -> u32 {
        if port == CONFIG_ADDRESS && size == 4 {
            return self.s.address;
        }
        if port == RESET_CONTROL && size == 1 {
            return u32::from(self.s.reset_control);
        }
        let mut value = 0;
        for i in 0..size.min(4) {
            let byte = match port.checked_add(u16::from(i)) {
                Some(p @ CONFIG_DATA..=0xCFF) => self.data_byte(p),
                _ => 0xFF,
            };
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// A guest `OUT` of the low `size` bytes (1, 2 or 4) of `value` to `port`.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        if port == CONFIG_ADDRESS && size == 4 {
            self.s.address = value & ADDRESS_MASK;
            return;
        }
        if port == RESET_CONTROL && size == 1 {
            let new = value as u8 & RC_MASK;
            if self.s.reset_control & RC_RST_CPU == 0 && new & RC_RST_CPU != 0 {
                self.s.reset_requested = true;
            }
            self.s.reset_control = new;
            return;
        }
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            if i >= usize::from(size) {
                break;
            }
            // `i` < 4.
            if let Some(p @ CONFIG_DATA..=0xCFF) = port.checked_add(i as u16) {
                self.write_data_byte(p, byte);
            }
        }
    }

    /// Whether the guest asked for a reset through the reset control register.
    pub fn reset_requested(&self) -> bool {
        self.s.reset_requested
    }

    /// Clears a reset request (after the VM has been reset) and RST_CPU with it.
    pub fn clear_reset_request(&mut self) {
        self.s.reset_requested = false;
        self.s.reset_control &= !RC_RST_CPU;
    }

    /// The registers, for a snapshot.
    pub fn state(&self) -> State {
        self.s
    }

    /// Loads the registers from a snapshot; a value the hardware cannot hold is refused and
    /// the model left unchanged.
    pub fn restore(&mut self, state: State) -> Result<(), StateError> {
        let invalid = |field, value| {
            Err(StateError::Invalid {
                device: DEVICE,
                field,
                value,
            })
        };
        if state.address & !ADDRESS_MASK != 0 {
            return invalid("address", u64::from(state.address));
        }
        if state.reset_control & !RC_MASK != 0 {
            return invalid("reset_control", u64::from(state.reset_control));
        }
        if state.command & !COMMAND_WRITABLE != 0 {
            return invalid("command", u64::from(state.command));
        }
        self.s = state;
        Ok(())
    }

    /// The configuration-space offset `CONFIG_DATA` port `port` reaches, if configuration is
    /// enabled and the address names the bridge (bus 0, device 0, function 0).
    fn bridge_offset(&self, port: u16) -> Option<u8> {
        let a = self.s.address;
        let bus_dev_fn = (a >> 8) & 0xFFFF;
        if a & ADDRESS_ENABLE == 0 || bus_dev_fn != 0 {
            return None;
        }
        // Register bits 7:2 plus the byte lane: at most 0xFF.
        Some((a & 0xFC) as u8 | (port - CONFIG_DATA) as u8)
    }

    fn data_byte(&self, port: u16) -> u8 {
        match self.bridge_offset(port) {
            Some(offset) => self.config_byte(offset),
            None => 0xFF,
        }
    }

    fn write_data_byte(&mut self, port: u16, value: u8) {
        let Some(offset) = self.bridge_offset(port) else {
            return;
        };
        match offset {
            o @ (reg::COMMAND | 0x05) => {
                let shift = 8 * (o - reg::COMMAND);
                let mask = COMMAND_WRITABLE & (0xFF << shift);
                self.s.command = (self.s.command & !mask) | ((u16::from(value) << shift) & mask);
            }
            reg::LATENCY_TIMER => self.s.latency_timer = value,
            reg::INTERRUPT_LINE => self.s.interrupt_line = value,
            _ => {}
        }
    }

    /// Byte `offset` of the bridge's configuration space.
    fn config_byte(&self, offset: u8) -> u8 {
        let word = |v: u16| v.to_le_bytes()[usize::from(offset & 1)];
        match offset {
            0x00 | 0x01 => word(VENDOR_ID),
            0x02 | 0x03 => word(DEVICE_ID),
            0x04 | 0x05 => word(self.s.command),
            0x06 | 0x07 => word(STATUS_VALUE),
            reg::REVISION => REVISION,
            0x09..=0x0B => CLASS_CODE.to_le_bytes()[usize::from(offset - 0x09)],
            reg::LATENCY_TIMER => self.s.latency_timer,
            reg::HEADER_TYPE => 0x00,
            reg::INTERRUPT_LINE => self.s.interrupt_line,
            _ => 0,
        }
    }
}

impl Persist for PciHost {
    type State = State;
    type ConstructorArgs = ();
    type Error = StateError;

    fn save(&self) -> State {
        self.state()
    }

    fn restore((): (), state: &State) -> Result<PciHost, StateError> {
        let mut host = PciHost::new();
        PciHost::restore(&mut host, *state)?;
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(bus: u32, dev: u32, func: u32, reg: u32) -> u32 {
        ADDRESS_ENABLE | (bus << 16) | (dev << 11) | (func << 8) | reg
    }

    fn config_read(pci: &mut PciHost, addr: u32, size: u8) -> u32 {
        pci.write(CONFIG_ADDRESS, 4, addr & !3);
        pci.read(CONFIG_DATA + (addr & 3) as u16, size)
    }

    #[test]
    fn bridge_identity() {
        let mut pci = PciHost::new();
        assert_eq!(config_read(&mut pci, address(0, 0, 0, 0), 4), 0x1237_8086);
        assert_eq!(config_read(&mut pci, address(0, 0, 0, 0), 2), 0x8086);
        assert_eq!(config_read(&mut pci, address(0, 0, 0, 2), 2), 0x1237);
        assert_eq!(config_read(&mut pci, address(0, 0, 0, 3), 1), 0x12);
        assert_eq!(config_read(&mut pci, address(0, 0, 0, 4), 4), 0x0280_0006);
        assert_eq!(
            config_read(&mut pci, address(0, 0, 0, 8), 4),
            0x0600_0002,
            "class 06/00/00, revision 02"
        );
        assert_eq!(
            config_read(&mut pci, address(0, 0, 0, 0x0E), 1),
            0,
            "header type 0"
        );
        assert_eq!(config_read(&mut pci, address(0, 0, 0, 0x0C), 4), 0);
        assert_eq!(config_read(&mut pci, address(0, 0, 0, 0xFC), 4), 0);
    }

    #[test]
    fn absent_functions_read_all_ones() {
        let mut pci = PciHost::new();
        for addr in [
            address(0, 1, 0, 0),
            address(0, 0, 1, 0),
            address(1, 0, 0, 0),
            address(0, 31, 7, 0x3C),
            address(255, 0, 0, 0),
        ] {
            assert_eq!(config_read(&mut pci, addr, 4), 0xFFFF_FFFF, "{addr:#x}");
            assert_eq!(config_read(&mut pci, addr, 2), 0xFFFF);
            assert_eq!(config_read(&mut pci, addr, 1), 0xFF);
        }
    }

    #[test]
    fn enable_bit_gates_config_cycles() {
        let mut pci = PciHost::new();
        pci.write(CONFIG_ADDRESS, 4, 0); // enable clear, bridge register 0
        assert_eq!(pci.read(CONFIG_DATA, 4), 0xFFFF_FFFF);
        pci.write(CONFIG_DATA + 1, 1, 0x07); // would hit command
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 4));
        assert_eq!(pci.read(CONFIG_DATA, 2), u32::from(COMMAND_DEFAULT));
    }

    #[test]
    fn config_address_register() {
        let mut pci = PciHost::new();
        pci.write(CONFIG_ADDRESS, 4, 0xFFFF_FFFF);
        assert_eq!(
            pci.read(CONFIG_ADDRESS, 4),
            ADDRESS_MASK,
            "reserved bits read 0"
        );
        // Byte and word accesses at 0xCF8 are not CONFIG_ADDRESS accesses.
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0));
        pci.write(CONFIG_ADDRESS, 1, 0x08);
        pci.write(CONFIG_ADDRESS, 2, 0x0808);
        assert_eq!(pci.read(CONFIG_ADDRESS, 4), address(0, 0, 0, 0));
        assert_eq!(pci.read(CONFIG_ADDRESS, 2), 0xFFFF);
        assert_eq!(pci.read(CONFIG_ADDRESS + 2, 1), 0xFF);
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut pci = PciHost::new();
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0));
        pci.write(CONFIG_DATA, 4, 0xDEAD_BEEF);
        assert_eq!(pci.read(CONFIG_DATA, 4), 0x1237_8086);
        // BAR sizing: no BAR.
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, u32::from(reg::BAR0)));
        pci.write(CONFIG_DATA, 4, 0xFFFF_FFFF);
        assert_eq!(pci.read(CONFIG_DATA, 4), 0);
        // Class and header type.
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 8));
        pci.write(CONFIG_DATA, 4, 0);
        assert_eq!(pci.read(CONFIG_DATA, 4), 0x0600_0002);
    }

    #[test]
    fn writable_registers() {
        let mut pci = PciHost::new();
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 4));
        pci.write(CONFIG_DATA, 4, 0xFFFF_FFFF);
        assert_eq!(
            pci.read(CONFIG_DATA, 4),
            0x0280_0000 | u32::from(COMMAND_WRITABLE),
            "command takes its writable bits, status is unchanged"
        );
        pci.write(CONFIG_DATA + 1, 1, 0);
        assert_eq!(pci.read(CONFIG_DATA, 2), u32::from(COMMAND_WRITABLE & 0xFF));
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0x0C));
        pci.write(CONFIG_DATA + 1, 1, 0x40);
        assert_eq!(pci.read(CONFIG_DATA + 1, 1), 0x40, "latency timer");
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0x3C));
        pci.write(CONFIG_DATA, 2, 0xFF0B);
        assert_eq!(
            pci.read(CONFIG_DATA, 4),
            0x0B,
            "interrupt line; pin stays 0"
        );
    }

    #[test]
    fn data_accesses_past_0xcff_read_all_ones() {
        let mut pci = PciHost::new();
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0));
        assert_eq!(pci.read(0xCFE, 4), 0xFFFF_1237);
        assert_eq!(pci.read(0xCFF, 2), 0xFF12);
        assert_eq!(pci.read(0xFFFF, 4), 0xFFFF_FFFF);
        pci.write(0xFFFF, 4, 0);
    }

    #[test]
    fn reset_control() {
        let mut pci = PciHost::new();
        // Linux's reboot=pci: RST_CPU clear with SYS_RST, then set.
        pci.write(RESET_CONTROL, 1, 0x02);
        assert!(!pci.reset_requested());
        pci.write(RESET_CONTROL, 1, 0x06);
        assert!(pci.reset_requested());
        assert_eq!(pci.read(RESET_CONTROL, 1), 0x06);
        pci.clear_reset_request();
        assert!(!pci.reset_requested());
        assert_eq!(pci.read(RESET_CONTROL, 1), 0x02);
        // The FADT's RESET_REG write on its own.
        pci.write(RESET_CONTROL, 1, 0x06);
        assert!(pci.reset_requested());
        // Only a byte access reaches the register.
        let mut pci = PciHost::new();
        pci.write(RESET_CONTROL, 2, 0x0606);
        assert!(!pci.reset_requested());
        pci.write(RESET_CONTROL, 1, 0xFF);
        assert_eq!(pci.read(RESET_CONTROL, 1), u32::from(RC_MASK));
    }

    #[test]
    fn snapshot_round_trip_and_refusals() {
        let mut pci = PciHost::new();
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 4));
        pci.write(CONFIG_DATA, 2, 0x0107);
        let state = pci.state();
        let mut other = PciHost::new();
        other.restore(state).unwrap();
        assert_eq!(other, pci);
        for bad in [
            State {
                address: 3,
                ..state
            },
            State {
                reset_control: 1,
                ..state
            },
            State {
                command: 0x8000,
                ..state
            },
        ] {
            assert!(other.restore(bad).is_err());
            assert_eq!(other, pci, "unchanged after a refusal");
        }
    }

    #[test]
    fn odd_sizes_never_panic() {
        let mut pci = PciHost::new();
        pci.write(CONFIG_ADDRESS, 4, address(0, 0, 0, 0));
        assert_eq!(pci.read(CONFIG_DATA, 0), 0);
        assert_eq!(pci.read(CONFIG_DATA, 3), 0x37_8086);
        assert_eq!(pci.read(CONFIG_DATA, 200), 0x1237_8086);
        pci.write(CONFIG_DATA, 255, 0xFFFF_FFFF);
        pci.write(CONFIG_ADDRESS, 0, 0);
        assert_eq!(pci.read(CONFIG_ADDRESS, 4), address(0, 0, 0, 0));
    }
}
