//! ACPI fixed-hardware power management: the PM1a event and control registers and the PM
//! timer, in one small I/O block, over passed-in time.
//!
//! The registers are the ACPI specification's fixed hardware (ACPI 6.5 §4.8.3, "Power
//! Management Timer" §4.8.3.3, "PM1 Event Grouping" tables 4.16/4.17, "PM1 Control Grouping"
//! table 4.18), laid out in one block the guest finds through the FADT:
//!
//! | offset | register | FADT field |
//! | --- | --- | --- |
//! | 0x00 | PM1_STS (16 bits, write 1 to clear) | `PM1a_EVT_BLK` = base, `PM1_EVT_LEN` = 4 |
//! | 0x02 | PM1_EN (16 bits) | |
//! | 0x04 | PM1_CNT (16 bits) | `PM1a_CNT_BLK` = base + 4, `PM1_CNT_LEN` = 2 |
//! | 0x06 | reserved (reads 0) | |
//! | 0x08 | PM_TMR (24 or 32 bits, read-only) | `PM_TMR_BLK` = base + 8, `PM_TMR_LEN` = 4, flag `TMR_VAL_EXT` for 32 bits |
//!
//! Accesses of any size are taken apart into bytes (ACPI registers are byte-addressable);
//! one access sees one instant, so a 32-bit timer read is consistent.
//!
//! - **Power-off**: writing PM1_CNT with SLP_EN set and SLP_TYP equal to the S5 value given
//!   at creation (the one the DSDT's `\_S5` package names) sets
//!   [`AcpiPm::poweroff_requested`]. Other sleep types are ignored: the DSDT offers only S5.
//! - **SCI_EN** reads 1 from the start: with `SMI_CMD` 0 in the FADT the platform is always
//!   in ACPI mode, so the guest never tries to switch.
//! - **The PM timer** counts at 3.579545 MHz from creation, derived from `now_ns`. TMR_STS
//!   is set each time the counter's top bit changes.
//! - **The power button** ([`AcpiPm::press_power_button`]) sets PWRBTN_STS, so the host can
//!   ask a guest to shut down cleanly.
//! - **SCI** ([`AcpiPm::sci_level`]) is asserted while SCI_EN is set and any status bit is
//!   set with its enable; the FADT's `SCI_INT` names the line (level-triggered).
//!
//! [`State`] holds the registers and the timer origin for snapshots.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::persist::Persist;

/// A suggested I/O base for the block (where ICH9 puts PMBASE).
pub const DEFAULT_BASE: u16 = 0x600;
/// Length of the block.
pub const BLOCK_LEN: u16 = 12;

/// PM1 status register offset.
pub const PM1_STS: u16 = 0x00;
/// PM1 enable register offset.
pub const PM1_EN: u16 = 0x02;
/// PM1 control register offset.
pub const PM1_CNT: u16 = 0x04;
/// PM timer offset.
pub const PM_TMR: u16 = 0x08;
/// `PM1_EVT_LEN` for the FADT.
pub const PM1_EVT_LEN: u8 = 4;
/// `PM1_CNT_LEN` for the FADT.
pub const PM1_CNT_LEN: u8 = 2;
/// `PM_TMR_LEN` for the FADT.
pub const PM_TMR_LEN: u8 = 4;

/// PM1_STS bit 0: the timer's top bit changed.
pub const TMR_STS: u16 = 1 << 0;
/// PM1_STS bit 4: bus master activity.
pub const BM_STS: u16 = 1 << 4;
/// PM1_STS bit 5: the BIOS released the global lock.
pub const GBL_STS: u16 = 1 << 5;
/// PM1_STS bit 8: power button pressed.
pub const PWRBTN_STS: u16 = 1 << 8;
/// PM1_STS bit 9: sleep button pressed.
pub const SLPBTN_STS: u16 = 1 << 9;
/// PM1_STS bit 10: RTC alarm.
pub const RTC_STS: u16 = 1 << 10;
/// PM1_STS bit 14: PCI Express wake.
pub const PCIEXP_WAKE_STS: u16 = 1 << 14;
/// PM1_STS bit 15: woken from sleep.
pub const WAK_STS: u16 = 1 << 15;
/// PM1_STS bits that exist.
pub const STS_BITS: u16 =
    TMR_STS | BM_STS | GBL_STS | PWRBTN_STS | SLPBTN_STS | RTC_STS | PCIEXP_WAKE_STS | WAK_STS;

/// PM1_EN bit 0: TMR_STS raises SCI.
pub const TMR_EN: u16 = 1 << 0;
/// PM1_EN bit 5: GBL_STS raises SCI.
pub const GBL_EN: u16 = 1 << 5;
/// PM1_EN bit 8: PWRBTN_STS raises SCI.
pub const PWRBTN_EN: u16 = 1 << 8;
/// PM1_EN bit 9: SLPBTN_STS raises SCI.
pub const SLPBTN_EN: u16 = 1 << 9;
/// PM1_EN bit 10: RTC_STS raises SCI.
pub const RTC_EN: u16 = 1 << 10;
/// PM1_EN bit 14: PCI Express wake disable.
pub const PCIEXP_WAKE_DIS: u16 = 1 << 14;
/// PM1_EN bits that exist.
pub const EN_BITS: u16 = TMR_EN | GBL_EN | PWRBTN_EN | SLPBTN_EN | RTC_EN | PCIEXP_WAKE_DIS;
/// The status/enable pairs that raise SCI.
const SCI_SOURCES: u16 = TMR_EN | GBL_EN | PWRBTN_EN | SLPBTN_EN | RTC_EN;

/// PM1_CNT bit 0: SCI enable (ACPI mode).
pub const SCI_EN: u16 = 1 << 0;
/// PM1_CNT bit 1: bus master activity wakes from C3.
pub const BM_RLD: u16 = 1 << 1;
/// PM1_CNT bit 2: release the global lock to the BIOS (write-only).
pub const GBL_RLS: u16 = 1 << 2;
/// PM1_CNT bits 12:10: sleep type.
pub const SLP_TYP_SHIFT: u32 = 10;
/// PM1_CNT sleep type mask.
pub const SLP_TYP_MASK: u16 = 7 << SLP_TYP_SHIFT;
/// PM1_CNT bit 13: enter the sleep state (write-only).
pub const SLP_EN: u16 = 1 << 13;
/// PM1_CNT bits that hold a value.
pub const CNT_STORED: u16 = SCI_EN | BM_RLD | SLP_TYP_MASK;

/// The PM timer's frequency.
pub const PM_TIMER_HZ: u64 = 3_579_545;

const NS_PER_SEC: u128 = 1_000_000_000;

/// Width of the PM timer (FADT flag `TMR_VAL_EXT` for 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimerWidth {
    /// 24 bits.
    Bits24,
    /// 32 bits.
    Bits32,
}

impl TimerWidth {
    fn bits(self) -> u32 {
        match self {
            TimerWidth::Bits24 => 24,
            TimerWidth::Bits32 => 32,
        }
    }
}

/// Why [`AcpiPm::new`] refused its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The S5 sleep type does not fit the three-bit SLP_TYP field.
    SleepType(u8),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::SleepType(typ) => {
                write!(f, "ACPI S5 sleep type {typ} does not fit SLP_TYP (0 to 7)")
            }
        }
    }
}

/// The name this model gives in errors, bus listings and saved states.
pub const NAME: &str = "ACPI PM";
const DEVICE: &str = NAME;

pub use super::StateError;

/// The registers and the timer, for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// PM1_STS.
    pub sts: u16,
    /// PM1_EN.
    pub en: u16,
    /// PM1_CNT (stored bits only).
    pub cnt: u16,
    /// `now_ns` at which the PM timer read 0.
    pub origin_ns: u64,
    /// Latest `now_ns` seen.
    pub last_ns: u64,
    /// How many times the timer's top bit had changed when TMR_STS was last brought up to
    /// date.
    pub carries: u64,
    /// The guest entered S5.
    pub poweroff_requested: bool,
}

/// The ACPI PM1a and PM timer block of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiPm {
    s5_slp_typ: u8,
    width: TimerWidth,
    s: State,
}

impl AcpiPm {
    /// The block at power-on at `now_ns`: nothing pending, SCI_EN set, the timer at 0.
    /// `s5_slp_typ` is the SLP_TYP value of S5 (what the DSDT's `\_S5` says).
    pub fn new(s5_slp_typ: u8, width: TimerWidth, now_ns: u64) -> Result<AcpiPm, ConfigError> {
        if s5_slp_typ > 7 {
            return Err(ConfigError::SleepType(s5_slp_typ));
        }
        Ok(AcpiPm {
            s5_slp_typ,
            width,
            s: State {
                sts: 0,
                en: 0,
                cnt: SCI_EN,
                origin_ns: now_ns,
                last_ns: now_ns,
                carries: 0,
                poweroff_requested: false,
            },
        })
    }

    /// A guest read of `size` bytes (1–4; more are cut to 4) at `offset` in the block at
    /// `now_ns`. Bytes outside the registers read 0.
    pub fn read(&mut self, offset: u16, size: u8, now_ns: u64) -> u32 {
        self.advance(now_ns);
        let timer = self.timer_value();
        let mut value = 0;
        for i in 0..size.min(4) {
            let Some(at) = offset.checked_add(u16::from(i)) else {
                break;
            };
            value |= u32::from(self.read_byte(at, timer)) << (8 * i);
        }
        value
    }

    /// A guest write of the low `size` bytes (1–4) of `value` at `offset` in the block at
    /// `now_ns`.
    ///
    /// ```
    /// use keel_vmm::devices::acpi_pm::{AcpiPm, TimerWidth, PM1_CNT, SLP_EN, SCI_EN};
    ///
    /// let mut pm = AcpiPm::new(5, TimerWidth::Bits32, 0).unwrap();
    /// pm.write(PM1_CNT, 2, u32::from(SCI_EN | (5 << 10) | SLP_EN), 0);
    /// assert!(pm.poweroff_requested());
    /// ```
    pub fn write(&mut self, offset: u16, size: u8, value: u32, now_ns: u64) {
        self.advance(now_ns);
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            if i >= usize::from(size) {
                break;
            }
            // `i` < 4.
            if let Some(at) = offset.checked_add(i as u16) {
                self.write_byte(at, byte);
            }
        }
    }

    /// Whether SCI is asserted at `now_ns`.
    pub fn sci_level(&mut self, now_ns: u64) -> bool {
        self.advance(now_ns);
        self.sci()
    }

    /// When SCI will next be asserted by the timer, in ns: `None` unless SCI is enabled, TMR_EN
    /// is set and TMR_STS is clear (other sources come from guest or host actions).
    pub fn next_sci_deadline(&self) -> Option<u64> {
        if self.s.cnt & SCI_EN == 0 || self.s.en & TMR_EN == 0 || self.s.sts & TMR_STS != 0 {
            return None;
        }
        let ticks = self
            .s
            .carries
            .checked_add(1)?
            .checked_mul(1 << (self.width.bits() - 1))?;
        let ns = (u128::from(ticks) * NS_PER_SEC).div_ceil(u128::from(PM_TIMER_HZ));
        u64::try_from(ns)
            .ok()
            .and_then(|ns| self.s.origin_ns.checked_add(ns))
    }

    /// The power button was pressed (PWRBTN_STS; an SCI if PWRBTN_EN is set).
    pub fn press_power_button(&mut self, now_ns: u64) {
        self.advance(now_ns);
        self.s.sts |= PWRBTN_STS;
    }

    /// Whether the guest has entered S5 (soft off).
    pub fn poweroff_requested(&self) -> bool {
        self.s.poweroff_requested
    }

    /// The registers and timer origin, for a snapshot.
    pub fn state(&self) -> State {
        self.s
    }

    /// Loads the registers from a snapshot. A state the registers cannot hold is refused and
    /// the model is left unchanged.
    pub fn restore(&mut self, state: State) -> Result<(), StateError> {
        let invalid = |field, value| {
            Err(StateError::Invalid {
                device: DEVICE,
                field,
                value,
            })
        };
        if state.sts & !STS_BITS != 0 {
            return invalid("sts", u64::from(state.sts));
        }
        if state.en & !EN_BITS != 0 {
            return invalid("en", u64::from(state.en));
        }
        if state.cnt & !CNT_STORED != 0 {
            return invalid("cnt", u64::from(state.cnt));
        }
        if state.last_ns < state.origin_ns {
            return invalid("last_ns", state.last_ns);
        }
        let carries = ticks_between(state.origin_ns, state.last_ns) >> (self.width.bits() - 1);
        if state.carries > carries {
            return invalid("carries", state.carries);
        }
        self.s = state;
        Ok(())
    }

    fn sci(&self) -> bool {
        self.s.cnt & SCI_EN != 0 && self.s.sts & self.s.en & SCI_SOURCES != 0
    }

    /// Brings the timer and TMR_STS up to `now_ns`.
    fn advance(&mut self, now_ns: u64) {
        self.s.last_ns = self.s.last_ns.max(now_ns);
        let carries = ticks_between(self.s.origin_ns, self.s.last_ns) >> (self.width.bits() - 1);
        if carries > self.s.carries {
            self.s.carries = carries;
            self.s.sts |= TMR_STS;
        }
    }

    fn timer_value(&self) -> u32 {
        let ticks = ticks_between(self.s.origin_ns, self.s.last_ns);
        let mask = (1u64 << self.width.bits()) - 1;
        // Masked to at most 32 bits.
        (ticks & mask) as u32
    }

    fn read_byte(&self, offset: u16, timer: u32) -> u8 {
        let [sts_lo, sts_hi] = self.s.sts.to_le_bytes();
        let [en_lo, en_hi] = self.s.en.to_le_bytes();
        let [cnt_lo, cnt_hi] = self.s.cnt.to_le_bytes();
        let tmr = timer.to_le_bytes();
        match offset {
            0 => sts_lo,
            1 => sts_hi,
            2 => en_lo,
            3 => en_hi,
            4 => cnt_lo,
            5 => cnt_hi,
            8..=11 => tmr[usize::from(offset - 8)],
            _ => 0,
        }
    }

    fn write_byte(&mut self, offset: u16, byte: u8) {
        let low = u16::from(byte);
        let high = u16::from(byte) << 8;
        match offset {
            // Write 1 to clear.
            0 => self.s.sts &= !(low & STS_BITS),
            1 => self.s.sts &= !(high & STS_BITS),
            2 => self.s.en = (self.s.en & 0xFF00) | (low & EN_BITS),
            3 => self.s.en = (self.s.en & 0x00FF) | (high & EN_BITS),
            4 => self.s.cnt = (self.s.cnt & 0xFF00) | (low & CNT_STORED),
            5 => {
                self.s.cnt = (self.s.cnt & 0x00FF) | (high & CNT_STORED);
                let typ = (self.s.cnt & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
                if high & SLP_EN != 0 && typ == u16::from(self.s5_slp_typ) {
                    self.s.poweroff_requested = true;
                }
            }
            _ => {}
        }
    }
}

/// PM timer ticks from `from_ns` to `to_ns`.
fn ticks_between(from_ns: u64, to_ns: u64) -> u64 {
    let elapsed = u128::from(to_ns.saturating_sub(from_ns));
    // At most 2^64 * 3.6e6 / 1e9 < 2^64.
    (elapsed * u128::from(PM_TIMER_HZ) / NS_PER_SEC) as u64
}

impl AcpiPm {
    /// What the block was built with: the S5 sleep type and the timer width.
    pub fn constructor_args(&self) -> (u8, TimerWidth) {
        (self.s5_slp_typ, self.width)
    }
}

impl Persist for AcpiPm {
    type State = State;
    /// The S5 sleep type and the timer width, as for [`AcpiPm::new`].
    type ConstructorArgs = (u8, TimerWidth);
    type Error = StateError;

    fn save(&self) -> State {
        self.state()
    }

    fn restore((s5, width): (u8, TimerWidth), state: &State) -> Result<AcpiPm, StateError> {
        let mut pm = AcpiPm::new(s5, width, 0).map_err(|_| StateError::Invalid {
            device: DEVICE,
            field: "s5_slp_typ",
            value: u64::from(s5),
        })?;
        AcpiPm::restore(&mut pm, *state)?;
        Ok(pm)
    }
}

#[cfg(test)]
mod tests;
