//! The host's CMOS real-time clock, read once to give each VM's RTC the wall-clock time.
//!
//! Reads follow the MC146818 rules: wait while an update is in progress (register A bit 7),
//! read the time twice until both reads agree, then decode BCD or binary and 12/24-hour
//! forms as register B says. The century byte (0x32) is used when it holds a plausible value;
//! otherwise the year is taken as 20xx.

use super::cpu::port;
use keel_vmm::devices::rtc::days_from_civil;

const INDEX: u16 = 0x70;
const DATA: u16 = 0x71;

fn read(register: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the PC's CMOS RTC, which the kernel owns; selecting a
    // register and reading it has no effect beyond the index latch. Bit 7 (NMI disable) is
    // left clear, as the kernel runs with NMIs enabled.
    unsafe {
        port::outb(INDEX, register & 0x7F);
        port::inb(DATA)
    }
}

/// The raw time registers: seconds, minutes, hours, day, month, year, century.
fn snapshot() -> [u8; 7] {
    // Bounded: an update takes under 2 ms; give up waiting after many polls.
    for _ in 0..100_000 {
        if read(0x0A) & 0x80 == 0 {
            break;
        }
    }
    [
        read(0x00),
        read(0x02),
        read(0x04),
        read(0x07),
        read(0x08),
        read(0x09),
        read(0x32),
    ]
}

/// Seconds since 1970-01-01 UTC by the host's RTC (which PCs and QEMU keep in UTC), or
/// `None` if it reads as nonsense.
pub fn unix_seconds() -> Option<u64> {
    let mut raw = snapshot();
    for _ in 0..5 {
        let again = snapshot();
        if again == raw {
            break;
        }
        raw = again;
    }
    let b = read(0x0B);
    decode(raw, b)
}

/// Decodes the registers (pure; see the module docs).
pub fn decode(raw: [u8; 7], register_b: u8) -> Option<u64> {
    let binary = register_b & 0x04 != 0;
    let h24 = register_b & 0x02 != 0;
    let bcd = |v: u8| -> Option<u8> {
        if binary {
            Some(v)
        } else if v & 0x0F < 10 && v >> 4 < 10 {
            Some((v >> 4) * 10 + (v & 0x0F))
        } else {
            None
        }
    };
    let [sec, min, hour_raw, day, month, year, century] = raw;
    let (sec, min, day, month, year) = (bcd(sec)?, bcd(min)?, bcd(day)?, bcd(month)?, bcd(year)?);
    let pm = !h24 && hour_raw & 0x80 != 0;
    let mut hour = bcd(hour_raw & 0x7F)?;
    if !h24 {
        hour %= 12;
        if pm {
            hour += 12;
        }
    }
    let century = match bcd(century) {
        Some(c @ 19..=30) => u16::from(c),
        _ => 20,
    };
    if sec > 59 || min > 59 || hour > 23 || !(1..=31).contains(&day) || !(1..=12).contains(&month) {
        return None;
    }
    let year = i64::from(century) * 100 + i64::from(year);
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec);
    u64::try_from(seconds).ok()
}
