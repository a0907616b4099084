//! The PC's MC146818 real-time clock and CMOS RAM, as a state machine over passed-in time.
//!
//! The model follows the Motorola *MC146818A Real-Time Clock Plus RAM* data sheet: the
//! address map (figure 2), the time, calendar and alarm registers (table 2, "Time, Calendar
//! and Alarm Data Modes"), registers A–D, the periodic interrupt rates (table 4), the update
//! cycle (figure 6, "Update-Ended and Periodic Interrupt Relationship") and the interrupt flags.
//!
//! | port | use |
//! | --- | --- |
//! | `0x70` | index (bits 6:0; bit 7 is the PC's NMI-disable gate, ignored; reads 0xFF) |
//! | `0x71` | data of the indexed register |
//!
//! Registers 0x00–0x0D are the clock; 0x0E–0x7F are battery-backed RAM, of which
//! [`CENTURY`] (0x32, named by the ACPI FADT `CENTURY` field) is kept as the clock's century.
//!
//! # Time
//!
//! The clock is set at creation from the host's wall clock ([`Rtc::new`]) and then advances
//! with the `now_ns` every access passes in (the VM's monotonic time); nothing here reads a
//! clock. Internally the time is Unix seconds plus the phase of the 32.768 kHz divider chain,
//! and the time registers are computed from them in the format register B asks for (binary or
//! BCD, 12- or 24-hour), so a guest that switches formats reads the right time at once. While
//! register B's SET bit is 1, or the divider is not in normal operation (register A DV ≠ 010),
//! the registers hold still and keep what the guest writes; clearing SET (or starting the
//! divider, whose first update follows half a second later) restarts the clock from them.
//!
//! UIP (register A bit 7) is set during the 244 µs (eight 32.768 kHz cycles) before each
//! update, so a guest that reads the time after seeing UIP clear has the data sheet's
//! guarantee. The update itself is instantaneous.
//!
//! The periodic (PF), alarm (AF) and update-ended (UF) flags of register C are set as time
//! passes whatever their enables say; IRQF and the IRQ8 request ([`Rtc::irq_level`]) follow
//! `flags & enables`, and reading register C clears them all. [`Rtc::next_irq_deadline`] says
//! when an enabled flag will next be set.
//!
//! Not modelled: daylight-saving (DSE is stored but does nothing), the square-wave output and
//! the divider's other time bases (DV other than 010 halts the clock).

/// Index port (write-only; bit 7 is the NMI mask on PCs).
pub const INDEX_PORT: u16 = 0x70;
/// Data port.
pub const DATA_PORT: u16 = 0x71;

/// Register indexes (data sheet figure 2 and table 2).
pub mod reg {
    /// Seconds (0–59).
    pub const SECONDS: u8 = 0x00;
    /// Seconds alarm.
    pub const SECONDS_ALARM: u8 = 0x01;
    /// Minutes (0–59).
    pub const MINUTES: u8 = 0x02;
    /// Minutes alarm.
    pub const MINUTES_ALARM: u8 = 0x03;
    /// Hours (0–23, or 1–12 with bit 7 = PM).
    pub const HOURS: u8 = 0x04;
    /// Hours alarm.
    pub const HOURS_ALARM: u8 = 0x05;
    /// Day of week (1–7, Sunday = 1).
    pub const DAY_OF_WEEK: u8 = 0x06;
    /// Day of month (1–31).
    pub const DAY_OF_MONTH: u8 = 0x07;
    /// Month (1–12).
    pub const MONTH: u8 = 0x08;
    /// Year (0–99).
    pub const YEAR: u8 = 0x09;
    /// Register A: UIP, divider, rate select.
    pub const A: u8 = 0x0A;
    /// Register B: SET and the interrupt enables and data modes.
    pub const B: u8 = 0x0B;
    /// Register C: interrupt flags (read-only; reading clears).
    pub const C: u8 = 0x0C;
    /// Register D: valid RAM and time (read-only).
    pub const D: u8 = 0x0D;
}

/// CMOS RAM byte holding the century (BCD or binary like the other time registers); the lead
/// FADT's `CENTURY` field should name it.
pub const CENTURY: u8 = 0x32;

/// Register A bit 7: update in progress (read-only).
pub const A_UIP: u8 = 0x80;
/// Register A bits 6:4: divider control.
pub const A_DV_MASK: u8 = 0x70;
/// Register A divider value for normal operation with a 32.768 kHz time base.
pub const A_DV_NORMAL: u8 = 0x20;
/// Register A bits 3:0: periodic interrupt rate select.
pub const A_RS_MASK: u8 = 0x0F;

/// Register B bit 7: SET (halt updates so the time can be written).
pub const B_SET: u8 = 0x80;
/// Register B bit 6: periodic interrupt enable.
pub const B_PIE: u8 = 0x40;
/// Register B bit 5: alarm interrupt enable.
pub const B_AIE: u8 = 0x20;
/// Register B bit 4: update-ended interrupt enable.
pub const B_UIE: u8 = 0x10;
/// Register B bit 3: square-wave enable.
pub const B_SQWE: u8 = 0x08;
/// Register B bit 2: data mode, 1 = binary, 0 = BCD.
pub const B_DM_BINARY: u8 = 0x04;
/// Register B bit 1: 24-hour mode.
pub const B_24H: u8 = 0x02;
/// Register B bit 0: daylight-saving enable.
pub const B_DSE: u8 = 0x01;

/// Register C bit 7: IRQF, some enabled flag is set.
pub const C_IRQF: u8 = 0x80;
/// Register C bit 6: periodic interrupt flag.
pub const C_PF: u8 = 0x40;
/// Register C bit 5: alarm interrupt flag.
pub const C_AF: u8 = 0x20;
/// Register C bit 4: update-ended interrupt flag.
pub const C_UF: u8 = 0x10;
/// Register C flag bits (PF, AF, UF).
pub const C_FLAGS: u8 = C_PF | C_AF | C_UF;

/// Register D bit 7: valid RAM and time (the battery is fine).
pub const D_VRT: u8 = 0x80;

/// Alarm "don't care": an alarm byte with bits 7:6 set matches any value.
pub const ALARM_DONT_CARE: u8 = 0xC0;

/// Register A after reset: normal divider, 1024 Hz periodic rate (what PC firmware leaves).
pub const A_DEFAULT: u8 = A_DV_NORMAL | 0x06;
/// Register B after reset: 24-hour BCD, no interrupts.
pub const B_DEFAULT: u8 = B_24H;

/// Divider cycles per second.
pub const DIVIDER_HZ: u64 = 32_768;
/// Divider cycles of the UIP window before an update (244 µs, data sheet t_BUC).
pub const UIP_CYCLES: u64 = 8;

/// Latest time the registers can show: 9999-12-31 23:59:59 UTC.
pub const MAX_UNIX_SECONDS: u64 = 253_402_300_799;

const NS_PER_SEC: u128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;
/// Bound on `base_seconds` in a restored state (well past year 9999 either way).
const BASE_SECONDS_LIMIT: i64 = 1 << 40;

/// The name this model gives in errors, bus listings and saved states.
pub const NAME: &str = "MC146818 RTC";
const DEVICE: &str = NAME;

pub use super::StateError;

use serde::{Deserialize, Serialize};

use crate::persist::Persist;

/// The RTC's registers, RAM and clock, for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// All 128 bytes: time registers as last frozen or written, registers A–D (A without UIP,
    /// C without IRQF), and the RAM.
    #[serde(with = "super::snapshot::byte_array")]
    pub cmos: [u8; 128],
    /// The selected register.
    pub index: u8,
    /// Unix time at divider cycle 0 while the clock runs (time = base + cycles / 32768).
    pub base_seconds: i64,
    /// `now_ns` at which the divider was at [`State::div_origin_cycles`].
    pub div_origin_ns: u64,
    /// Divider cycles at [`State::div_origin_ns`].
    pub div_origin_cycles: u64,
    /// Divider cycles up to which the interrupt flags are current.
    pub last_cycles: u64,
    /// Latest `now_ns` seen.
    pub last_ns: u64,
}

/// Days since 1970-01-01 to a proleptic Gregorian `(year, month 1–12, day 1–31)`.
///
/// Exact for every day whose year fits the result; days beyond ±2^62 saturate rather than
/// overflow (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms", `civil_from_days`).
///
/// ```
/// use keel_vmm::devices::rtc::civil_from_days;
///
/// assert_eq!(civil_from_days(0), (1970, 1, 1));
/// assert_eq!(civil_from_days(24_855), (2038, 1, 19)); // the 32-bit time_t rollover day
/// assert_eq!(civil_from_days(-1), (1969, 12, 31));
/// ```
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // `month` and `day` are in 1..=31.
    (year, month as u8, day as u8)
}

/// Days since 1970-01-01 of a proleptic Gregorian date; the inverse of [`civil_from_days`].
///
/// `month` is clamped to 1–12; a `day` past the end of its month runs on into the next
/// (February 30 is March 1 or 2), and day 0 is the last day of the previous month. Results
/// outside `i64` saturate.
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let month = i128::from(month.clamp(1, 12));
    let year = i128::from(year) - i128::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400); // [0, 399]
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i128::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    i64::try_from(days).unwrap_or(if days < 0 { i64::MIN } else { i64::MAX })
}

/// Day of the week of a day counted from 1970-01-01: 0 = Sunday … 6 = Saturday.
pub fn weekday(days: i64) -> u8 {
    // 1970-01-01 was a Thursday; the result is in 0..7.
    (days.rem_euclid(7) as u8 + 4) % 7
}

/// `value` (0–99) in the register data mode.
fn encode(value: u8, binary: bool) -> u8 {
    if binary {
        value
    } else {
        ((value / 10) << 4) | (value % 10)
    }
}

/// A register byte in the data mode; BCD digits above 9 count as 9.
fn decode(byte: u8, binary: bool) -> u8 {
    if binary {
        byte
    } else {
        (byte >> 4).min(9) * 10 + (byte & 0xF).min(9)
    }
}

/// Whether `index` is a clock register computed from the running time.
fn is_time_register(index: u8) -> bool {
    matches!(
        index,
        reg::SECONDS
            | reg::MINUTES
            | reg::HOURS
            | reg::DAY_OF_WEEK
            | reg::DAY_OF_MONTH
            | reg::MONTH
            | reg::YEAR
            | CENTURY
    )
}

/// Divider cycles between periodic interrupts for rate select `rs` (data sheet table 4,
/// 32.768 kHz column), or `None` for RS = 0.
fn periodic_cycles(rs: u8) -> Option<u64> {
    match rs & A_RS_MASK {
        0 => None,
        1 => Some(128),
        2 => Some(256),
        rs => Some(1 << (rs - 1)),
    }
}

/// An MC146818 RTC with 128 bytes of CMOS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtc {
    s: State,
}

impl Rtc {
    /// An RTC showing `wall_clock_unix_seconds` (clamped to [`MAX_UNIX_SECONDS`]) at `now_ns`,
    /// 24-hour BCD, divider running, first update one second later; the RAM is zero.
    ///
    /// ```
    /// use keel_vmm::devices::rtc::{Rtc, reg, DATA_PORT, INDEX_PORT};
    ///
    /// // 2024-02-29 12:34:56 UTC.
    /// let mut rtc = Rtc::new(1_709_210_096, 0);
    /// let mut read = |index: u8, now_ns: u64| {
    ///     rtc.write_port(INDEX_PORT, index, now_ns);
    ///     rtc.read_port(DATA_PORT, now_ns)
    /// };
    /// assert_eq!(read(reg::HOURS, 0), 0x12);
    /// assert_eq!(read(reg::SECONDS, 0), 0x56);
    /// assert_eq!(read(reg::SECONDS, 1_000_000_000), 0x57);
    /// assert_eq!(read(reg::DAY_OF_MONTH, 0), 0x29);
    /// ```
    pub fn new(wall_clock_unix_seconds: u64, now_ns: u64) -> Rtc {
        let mut cmos = [0; 128];
        cmos[usize::from(reg::A)] = A_DEFAULT;
        cmos[usize::from(reg::B)] = B_DEFAULT;
        cmos[usize::from(reg::D)] = D_VRT;
        let seconds = wall_clock_unix_seconds.min(MAX_UNIX_SECONDS);
        Rtc {
            s: State {
                cmos,
                index: 0,
                // At most MAX_UNIX_SECONDS, which fits.
                base_seconds: seconds as i64,
                div_origin_ns: now_ns,
                div_origin_cycles: 0,
                last_cycles: 0,
                last_ns: now_ns,
            },
        }
    }

    /// A guest `IN` from `port` at `now_ns`: [`DATA_PORT`] reads the selected register (register
    /// C is cleared by the read); [`INDEX_PORT`] and other ports read 0xFF.
    pub fn read_port(&mut self, port: u16, now_ns: u64) -> u8 {
        if port != DATA_PORT {
            return 0xFF;
        }
        self.advance(now_ns);
        let index = self.s.index;
        match index {
            reg::A => {
                let uip = if self.uip() { A_UIP } else { 0 };
                self.cmos(reg::A) | uip
            }
            reg::C => {
                let value = self.register_c();
                self.s.cmos[usize::from(reg::C)] = 0;
                value
            }
            _ if is_time_register(index) && self.clock_live() => {
                self.time_registers()[usize::from(index)]
            }
            _ => self.cmos(index),
        }
    }

    /// A guest `OUT` of `value` to `port` at `now_ns`: [`INDEX_PORT`] selects a register (bit 7,
    /// the NMI mask, is ignored); [`DATA_PORT`] writes it. Registers C and D are read-only.
    pub fn write_port(&mut self, port: u16, value: u8, now_ns: u64) {
        match port {
            INDEX_PORT => self.s.index = value & 0x7F,
            DATA_PORT => {
                self.advance(now_ns);
                self.write_register(self.s.index, value);
            }
            _ => {}
        }
    }

    /// Whether the RTC requests IRQ8 at `now_ns`: register C's IRQF, some flag set with its
    /// enable. It stays asserted until the guest reads register C.
    pub fn irq_level(&mut self, now_ns: u64) -> bool {
        self.advance(now_ns);
        self.register_c() & C_IRQF != 0
    }

    /// When an enabled interrupt flag will next be set, in ns on the `now_ns` time line:
    /// `None` if IRQ8 is already asserted (it only drops when the guest reads register C) or
    /// no enabled source will fire. Alarms are reported at every update (once a second) while
    /// AIE is set.
    pub fn next_irq_deadline(&self) -> Option<u64> {
        if self.register_c() & C_IRQF != 0 || !self.divider_running() {
            return None;
        }
        let b = self.cmos(reg::B);
        let after = |period: u64| {
            let cycles = (self.s.last_cycles / period)
                .checked_add(1)?
                .checked_mul(period)?;
            Some(self.ns_at(cycles))
        };
        let periodic = if b & B_PIE != 0 {
            periodic_cycles(self.cmos(reg::A)).and_then(after)
        } else {
            None
        };
        let update = if b & (B_UIE | B_AIE) != 0 && b & B_SET == 0 {
            after(DIVIDER_HZ)
        } else {
            None
        };
        match (periodic, update) {
            (Some(p), Some(u)) => Some(p.min(u)),
            (p, u) => p.or(u),
        }
    }

    /// The time the clock shows at `now_ns`, in Unix seconds (the registers' time while it is
    /// halted).
    pub fn unix_seconds(&mut self, now_ns: u64) -> i64 {
        self.advance(now_ns);
        if self.clock_live() {
            self.live_seconds()
        } else {
            self.parse_registers()
        }
    }

    /// Sets a byte of CMOS RAM (0x0E–0x7F, except [`CENTURY`]) as firmware would, e.g. the
    /// memory size bytes; returns whether `index` is such a byte.
    pub fn set_nvram(&mut self, index: u8, value: u8) -> bool {
        if !(0x0E..=0x7F).contains(&index) || index == CENTURY {
            return false;
        }
        self.s.cmos[usize::from(index)] = value;
        true
    }

    /// Registers, RAM and clock, for a snapshot.
    pub fn state(&self) -> State {
        self.s
    }

    /// Loads registers, RAM and clock from a snapshot. A state no MC146818 can be in is
    /// refused and the model is left unchanged.
    pub fn restore(&mut self, state: State) -> Result<(), StateError> {
        let invalid = |field, value| {
            Err(StateError::Invalid {
                device: DEVICE,
                field,
                value,
            })
        };
        let c = state.cmos;
        if state.index > 0x7F {
            return invalid("index", u64::from(state.index));
        }
        if c[usize::from(reg::A)] & A_UIP != 0 {
            return invalid("cmos[0x0A]", u64::from(c[usize::from(reg::A)]));
        }
        if c[usize::from(reg::C)] & !C_FLAGS != 0 {
            return invalid("cmos[0x0C]", u64::from(c[usize::from(reg::C)]));
        }
        if c[usize::from(reg::D)] != D_VRT {
            return invalid("cmos[0x0D]", u64::from(c[usize::from(reg::D)]));
        }
        if !(-BASE_SECONDS_LIMIT..=BASE_SECONDS_LIMIT).contains(&state.base_seconds) {
            // Two's complement bits, for the message.
            return invalid("base_seconds", state.base_seconds as u64);
        }
        if state.last_ns < state.div_origin_ns {
            return invalid("last_ns", state.last_ns);
        }
        if state.last_cycles < state.div_origin_cycles {
            return invalid("last_cycles", state.last_cycles);
        }
        self.s = state;
        Ok(())
    }

    fn cmos(&self, index: u8) -> u8 {
        self.s.cmos[usize::from(index & 0x7F)]
    }

    fn divider_running(&self) -> bool {
        self.cmos(reg::A) & A_DV_MASK == A_DV_NORMAL
    }

    /// Whether the registers follow the running clock (divider running, SET clear).
    fn clock_live(&self) -> bool {
        self.divider_running() && self.cmos(reg::B) & B_SET == 0
    }

    fn binary(&self) -> bool {
        self.cmos(reg::B) & B_DM_BINARY != 0
    }

    /// Divider cycles at `now_ns` (the divider is assumed running).
    fn cycles_at(&self, now_ns: u64) -> u64 {
        let elapsed = u128::from(now_ns.saturating_sub(self.s.div_origin_ns));
        let cycles = elapsed * u128::from(DIVIDER_HZ) / NS_PER_SEC;
        // Less than now_ns / 30000: fits.
        self.s.div_origin_cycles.saturating_add(cycles as u64)
    }

    /// The first ns at which the divider reaches `cycles` (saturating).
    fn ns_at(&self, cycles: u64) -> u64 {
        let delta = u128::from(cycles.saturating_sub(self.s.div_origin_cycles));
        let ns = (delta * NS_PER_SEC).div_ceil(u128::from(DIVIDER_HZ));
        u64::try_from(ns)
            .ok()
            .and_then(|ns| self.s.div_origin_ns.checked_add(ns))
            .unwrap_or(u64::MAX)
    }

    fn live_seconds(&self) -> i64 {
        // cycles / 32768 < 2^49: fits.
        self.s
            .base_seconds
            .saturating_add((self.s.last_cycles / DIVIDER_HZ) as i64)
    }

    fn uip(&self) -> bool {
        self.clock_live() && self.s.last_cycles % DIVIDER_HZ >= DIVIDER_HZ - UIP_CYCLES
    }

    fn register_c(&self) -> u8 {
        let flags = self.cmos(reg::C) & C_FLAGS;
        let enabled = flags & self.cmos(reg::B) & (B_PIE | B_AIE | B_UIE);
        if enabled != 0 { flags | C_IRQF } else { flags }
    }

    /// Runs the divider up to `now_ns`, setting the flags for the periodic ticks, updates and
    /// alarms on the way.
    fn advance(&mut self, now_ns: u64) {
        let now_ns = now_ns.max(self.s.last_ns);
        self.s.last_ns = now_ns;
        if !self.divider_running() {
            return;
        }
        let old = self.s.last_cycles;
        let new = self.cycles_at(now_ns).max(old);
        if new == old {
            return;
        }
        let mut flags = 0;
        if let Some(period) = periodic_cycles(self.cmos(reg::A))
            && new / period > old / period
        {
            flags |= C_PF;
        }
        if self.cmos(reg::B) & B_SET == 0 {
            let updates = new / DIVIDER_HZ - old / DIVIDER_HZ;
            if updates > 0 {
                flags |= C_UF;
                if self.cmos(reg::C) & C_AF == 0 && self.alarm_in(old / DIVIDER_HZ, updates) {
                    flags |= C_AF;
                }
            }
        }
        self.s.last_cycles = new;
        self.s.cmos[usize::from(reg::C)] |= flags;
    }

    /// Whether the alarm matches any of the `updates` seconds after divider second `from`.
    fn alarm_in(&self, from: u64, updates: u64) -> bool {
        let alarm = [
            self.cmos(reg::SECONDS_ALARM),
            self.cmos(reg::MINUTES_ALARM),
            self.cmos(reg::HOURS_ALARM),
        ];
        // Every time of day repeats within a day: look at the last day's worth at most.
        let skip = updates.saturating_sub(SECS_PER_DAY as u64);
        let first = self.s.base_seconds.saturating_add((from + skip + 1) as i64);
        let count = (updates - skip) as i64;
        (0..count).any(|i| {
            let [sec, min, hour] = self.time_of_day_registers(first.saturating_add(i));
            [sec, min, hour]
                .iter()
                .zip(alarm)
                .all(|(&now, alarm)| alarm & ALARM_DONT_CARE == ALARM_DONT_CARE || alarm == now)
        })
    }

    /// Seconds, minutes and hours registers for Unix time `t` in the current format.
    fn time_of_day_registers(&self, t: i64) -> [u8; 3] {
        let binary = self.binary();
        let secs = t.rem_euclid(SECS_PER_DAY); // [0, 86399]
        let (hour, min, sec) = (
            (secs / 3600) as u8,
            (secs / 60 % 60) as u8,
            (secs % 60) as u8,
        );
        let hour = if self.cmos(reg::B) & B_24H != 0 {
            encode(hour, binary)
        } else {
            let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
            encode(h12, binary) | if hour >= 12 { 0x80 } else { 0 }
        };
        [encode(sec, binary), encode(min, binary), hour]
    }

    /// Every clock register for the running time, indexed like the CMOS (only the time
    /// register slots and [`CENTURY`] are meaningful).
    fn time_registers(&self) -> [u8; 128] {
        let t = self.live_seconds();
        let binary = self.binary();
        let days = t.div_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let [sec, min, hour] = self.time_of_day_registers(t);
        let mut regs = self.s.cmos;
        regs[usize::from(reg::SECONDS)] = sec;
        regs[usize::from(reg::MINUTES)] = min;
        regs[usize::from(reg::HOURS)] = hour;
        regs[usize::from(reg::DAY_OF_WEEK)] = encode(weekday(days) + 1, binary);
        regs[usize::from(reg::DAY_OF_MONTH)] = encode(day, binary);
        regs[usize::from(reg::MONTH)] = encode(month, binary);
        // rem_euclid(100) is in 0..100.
        regs[usize::from(reg::YEAR)] = encode(year.rem_euclid(100) as u8, binary);
        regs[usize::from(CENTURY)] = encode(year.div_euclid(100).rem_euclid(100) as u8, binary);
        regs
    }

    /// Unix time of the time registers as stored (out-of-range fields are clamped).
    fn parse_registers(&self) -> i64 {
        let binary = self.binary();
        let field = |index: u8| decode(self.cmos(index), binary);
        let hour_byte = self.cmos(reg::HOURS);
        let hour = if self.cmos(reg::B) & B_24H != 0 {
            field(reg::HOURS).min(23)
        } else {
            let h12 = decode(hour_byte & 0x7F, binary).min(12) % 12;
            h12 + if hour_byte & 0x80 != 0 { 12 } else { 0 }
        };
        let year = i64::from(field(CENTURY).min(99)) * 100 + i64::from(field(reg::YEAR).min(99));
        let month = field(reg::MONTH).clamp(1, 12);
        let day = field(reg::DAY_OF_MONTH).clamp(1, 31);
        days_from_civil(year, month, day) * SECS_PER_DAY
            + i64::from(hour) * 3600
            + i64::from(field(reg::MINUTES).min(59)) * 60
            + i64::from(field(reg::SECONDS).min(59))
    }

    /// Restarts the running clock from the time registers, keeping the divider phase.
    fn restart_from_registers(&mut self) {
        let whole_seconds = (self.s.last_cycles / DIVIDER_HZ) as i64;
        self.s.base_seconds = self.parse_registers() - whole_seconds;
    }

    fn write_register(&mut self, index: u8, value: u8) {
        let was_live = self.clock_live();
        let was_running = self.divider_running();
        if was_live && (is_time_register(index) || index == reg::A || index == reg::B) {
            // Freeze the running time into the registers; a change below restarts from them.
            let regs = self.time_registers();
            for i in (0..128u8).filter(|&i| is_time_register(i)) {
                self.s.cmos[usize::from(i)] = regs[usize::from(i)];
            }
        }
        match index {
            reg::A => self.s.cmos[usize::from(reg::A)] = value & !A_UIP,
            reg::B => {
                // Setting SET clears UIE (data sheet, register B bit 7).
                let value = if value & B_SET != 0 {
                    value & !B_UIE
                } else {
                    value
                };
                self.s.cmos[usize::from(reg::B)] = value;
            }
            reg::C | reg::D => return,
            _ => self.s.cmos[usize::from(index)] = value,
        }
        if !was_running && self.divider_running() {
            // Out of divider reset: the first update comes half a second later.
            self.s.div_origin_ns = self.s.last_ns;
            self.s.div_origin_cycles = DIVIDER_HZ / 2;
            self.s.last_cycles = DIVIDER_HZ / 2;
        }
        if self.clock_live() && (!was_live || is_time_register(index)) {
            self.restart_from_registers();
        }
    }
}

impl Persist for Rtc {
    type State = State;
    type ConstructorArgs = ();
    type Error = StateError;

    fn save(&self) -> State {
        self.state()
    }

    fn restore((): (), state: &State) -> Result<Rtc, StateError> {
        let mut rtc = Rtc::new(0, 0);
        Rtc::restore(&mut rtc, *state)?;
        Ok(rtc)
    }
}

#[cfg(test)]
mod tests;
