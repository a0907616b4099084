use super::*;

/// A field name and a way to damage a state in it.
type Damage = (&'static str, fn(&mut State));

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// 2024-02-29 12:34:56 UTC, a Thursday.
const LEAP_DAY_NOON: u64 = 1_709_210_096;

fn read(rtc: &mut Rtc, index: u8, now: u64) -> u8 {
    rtc.write_port(INDEX_PORT, index, now);
    rtc.read_port(DATA_PORT, now)
}

fn write(rtc: &mut Rtc, index: u8, value: u8, now: u64) {
    rtc.write_port(INDEX_PORT, index, now);
    rtc.write_port(DATA_PORT, value, now);
}

/// (sec, min, hour, dow, day, month, year, century) registers.
fn clock(rtc: &mut Rtc, now: u64) -> [u8; 8] {
    [
        reg::SECONDS,
        reg::MINUTES,
        reg::HOURS,
        reg::DAY_OF_WEEK,
        reg::DAY_OF_MONTH,
        reg::MONTH,
        reg::YEAR,
        CENTURY,
    ]
    .map(|i| read(rtc, i, now))
}

#[test]
fn civil_dates_round_trip() {
    for days in (-800_000..3_000_000).step_by(7) {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
    }
}

#[test]
fn leap_years() {
    let next = |y, m, d| civil_from_days(days_from_civil(y, m, d) + 1);
    assert_eq!(next(2000, 2, 28), (2000, 2, 29), "divisible by 400");
    assert_eq!(next(1900, 2, 28), (1900, 3, 1), "divisible by 100");
    assert_eq!(next(2100, 2, 28), (2100, 3, 1));
    assert_eq!(next(2400, 2, 28), (2400, 2, 29));
    assert_eq!(next(2024, 2, 28), (2024, 2, 29));
    assert_eq!(next(2023, 2, 28), (2023, 3, 1));
    assert_eq!(next(2024, 12, 31), (2025, 1, 1));
    assert_eq!(
        days_from_civil(2024, 12, 31) - days_from_civil(2024, 1, 1),
        365
    );
    assert_eq!(
        days_from_civil(2100, 12, 31) - days_from_civil(2100, 1, 1),
        364
    );
}

#[test]
fn dates_around_2038_and_later() {
    // 2^31 - 1 seconds: 2038-01-19 03:14:07 UTC.
    let t = i64::from(i32::MAX);
    assert_eq!(civil_from_days(t / 86_400), (2038, 1, 19));
    assert_eq!(t % 86_400, 3 * 3600 + 14 * 60 + 7);
    assert_eq!(civil_from_days(t / 86_400 + 1), (2038, 1, 20));
    // 2^32 - 1 seconds: 2106-02-07 06:28:15 UTC.
    let t = i64::from(u32::MAX);
    assert_eq!(civil_from_days(t / 86_400), (2106, 2, 7));
    assert_eq!(days_from_civil(9999, 12, 31), 2_932_896);
    assert_eq!(
        (MAX_UNIX_SECONDS as i64 + 1) / 86_400,
        days_from_civil(10_000, 1, 1)
    );
    assert_eq!(civil_from_days(days_from_civil(2262, 4, 11)), (2262, 4, 11));
}

#[test]
fn weekdays() {
    assert_eq!(weekday(0), 4, "1970-01-01 was a Thursday");
    assert_eq!(weekday(days_from_civil(2000, 1, 1)), 6, "Saturday");
    assert_eq!(weekday(days_from_civil(2038, 1, 19)), 2, "Tuesday");
    assert_eq!(weekday(days_from_civil(1969, 12, 28)), 0, "Sunday");
    assert_eq!(weekday(i64::MIN), weekday(i64::MIN + 7));
}

#[test]
fn conversions_never_panic_at_the_extremes() {
    for days in [i64::MIN, i64::MIN + 1, -1, i64::MAX - 1, i64::MAX] {
        let (_, m, d) = civil_from_days(days);
        assert!((1..=12).contains(&m) && (1..=31).contains(&d));
    }
    assert_eq!(days_from_civil(i64::MAX, 12, 31), i64::MAX);
    assert_eq!(days_from_civil(i64::MIN, 1, 1), i64::MIN);
    // Clamped month, overflowing days.
    assert_eq!(days_from_civil(2023, 0, 1), days_from_civil(2023, 1, 1));
    assert_eq!(days_from_civil(2023, 13, 1), days_from_civil(2023, 12, 1));
    assert_eq!(days_from_civil(2023, 2, 30), days_from_civil(2023, 3, 2));
    assert_eq!(days_from_civil(2023, 3, 0), days_from_civil(2023, 2, 28));
}

#[test]
fn creation_shows_the_wall_clock_in_bcd_24_hour() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 5 * SEC);
    assert_eq!(
        clock(&mut rtc, 5 * SEC),
        [0x56, 0x34, 0x12, 5, 0x29, 0x02, 0x24, 0x20]
    );
    assert_eq!(read(&mut rtc, reg::A, 5 * SEC), A_DEFAULT);
    assert_eq!(read(&mut rtc, reg::B, 5 * SEC), B_DEFAULT);
    assert_eq!(read(&mut rtc, reg::C, 5 * SEC), 0);
    assert_eq!(read(&mut rtc, reg::D, 5 * SEC), D_VRT);
    assert_eq!(rtc.unix_seconds(5 * SEC), LEAP_DAY_NOON as i64);
}

#[test]
fn clock_follows_passed_in_time_across_a_century() {
    // 2099-12-31 23:59:58 UTC.
    let start = (days_from_civil(2099, 12, 31) * 86_400 + 86_398) as u64;
    let mut rtc = Rtc::new(start, 0);
    assert_eq!(
        clock(&mut rtc, SEC - 1),
        [0x58, 0x59, 0x23, 5, 0x31, 0x12, 0x99, 0x20]
    );
    assert_eq!(
        clock(&mut rtc, 2 * SEC),
        [0x00, 0x00, 0x00, 6, 0x01, 0x01, 0x00, 0x21]
    );
    // A year later, exactly.
    assert_eq!(
        rtc.unix_seconds(2 * SEC + 365 * 86_400 * SEC),
        start as i64 + 2 + 365 * 86_400
    );
}

#[test]
fn binary_and_12_hour_modes() {
    // 00:05:09, 12:00:00, 13:30:00 on 2001-09-09.
    let midnight = days_from_civil(2001, 9, 9) as u64 * 86_400;
    let mut rtc = Rtc::new(midnight + 5 * 60 + 9, 0);
    write(&mut rtc, reg::B, B_DM_BINARY | B_24H, 0);
    assert_eq!(
        clock(&mut rtc, 0),
        [9, 5, 0, 1, 9, 9, 1, 20],
        "binary, Sunday = 1"
    );
    write(&mut rtc, reg::B, 0, 0); // BCD, 12-hour
    assert_eq!(read(&mut rtc, reg::HOURS, 0), 0x12, "12 AM");
    let mut rtc = Rtc::new(midnight + 12 * 3600, 0);
    write(&mut rtc, reg::B, 0, 0);
    assert_eq!(read(&mut rtc, reg::HOURS, 0), 0x92, "12 PM");
    let mut rtc = Rtc::new(midnight + 13 * 3600 + 1800, 0);
    write(&mut rtc, reg::B, B_DM_BINARY, 0);
    assert_eq!(read(&mut rtc, reg::HOURS, 0), 0x81, "1 PM, binary");
    // Setting the time in 12-hour mode.
    write(&mut rtc, reg::B, B_DM_BINARY | B_SET, SEC);
    write(&mut rtc, reg::HOURS, 0x8B, SEC); // 11 PM
    write(&mut rtc, reg::B, B_DM_BINARY, SEC);
    assert_eq!(
        rtc.unix_seconds(SEC) as u64 % 86_400,
        23 * 3600 + 30 * 60 + 1,
        "minutes and seconds kept"
    );
}

#[test]
fn linux_set_time_sequence() {
    // drivers/rtc/rtc-mc146818-lib.c mc146818_set_time: SET, divider reset, write, restore.
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    let now = 300 * MS;
    let b = read(&mut rtc, reg::B, now);
    write(&mut rtc, reg::B, b | B_SET, now);
    let a = read(&mut rtc, reg::A, now);
    write(&mut rtc, reg::A, a | 0x60, now); // DV = 110 (divider reset)
    for (index, value) in [
        (reg::YEAR, 0x38),
        (reg::MONTH, 0x01),
        (reg::DAY_OF_MONTH, 0x19),
        (reg::HOURS, 0x03),
        (reg::MINUTES, 0x14),
        (reg::SECONDS, 0x07),
        (CENTURY, 0x20),
    ] {
        write(&mut rtc, index, value, now);
    }
    // Halted: time does not move, and reads return what was written.
    assert_eq!(read(&mut rtc, reg::SECONDS, now + 5 * SEC), 0x07);
    write(&mut rtc, reg::B, b, now + 5 * SEC);
    assert_eq!(
        read(&mut rtc, reg::SECONDS, now + 6 * SEC),
        0x07,
        "still in reset"
    );
    write(&mut rtc, reg::A, a, now + 6 * SEC);
    // Out of reset: the first update comes 500 ms later.
    let t0 = now + 6 * SEC;
    assert_eq!(read(&mut rtc, reg::SECONDS, t0 + 499 * MS), 0x07);
    assert_eq!(read(&mut rtc, reg::SECONDS, t0 + 500 * MS), 0x08);
    assert_eq!(rtc.unix_seconds(t0 + 500 * MS), i64::from(i32::MAX) + 1);
    assert_eq!(read(&mut rtc, reg::SECONDS, t0 + 1500 * MS), 0x09);
}

#[test]
fn set_bit_freezes_and_keeps_divider_phase() {
    let mut rtc = Rtc::new(1_000_000_000, 0);
    write(&mut rtc, reg::B, B_24H | B_SET, 400 * MS);
    write(&mut rtc, reg::SECONDS, 0x30, 400 * MS);
    assert_eq!(read(&mut rtc, reg::SECONDS, 3 * SEC), 0x30);
    write(&mut rtc, reg::B, B_24H, 3 * SEC + 200 * MS);
    // The divider kept running: the next update is at the next whole second of it.
    assert_eq!(read(&mut rtc, reg::SECONDS, 4 * SEC - 1), 0x30);
    assert_eq!(read(&mut rtc, reg::SECONDS, 4 * SEC), 0x31);
}

#[test]
fn writing_time_while_running_takes_effect() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    write(&mut rtc, reg::MINUTES, 0x00, 500 * MS);
    assert_eq!(read(&mut rtc, reg::MINUTES, 500 * MS), 0x00);
    assert_eq!(read(&mut rtc, reg::SECONDS, 500 * MS), 0x56);
    assert_eq!(read(&mut rtc, reg::SECONDS, SEC), 0x57);
    assert_eq!(read(&mut rtc, reg::HOURS, SEC), 0x12);
}

#[test]
fn uip_precedes_each_update_by_244_us() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    let uip = |rtc: &mut Rtc, now| read(rtc, reg::A, now) & A_UIP != 0;
    assert!(!uip(&mut rtc, 0));
    assert!(!uip(&mut rtc, SEC - 245_000));
    assert!(uip(&mut rtc, SEC - 244_000));
    assert!(uip(&mut rtc, SEC - 1));
    assert!(!uip(&mut rtc, SEC));
    // The time changes right at the update.
    assert_eq!(read(&mut rtc, reg::SECONDS, 2 * SEC - 1), 0x57);
    // Never while SET is 1.
    write(&mut rtc, reg::B, B_24H | B_SET, 3 * SEC - 100_000);
    assert!(!uip(&mut rtc, 3 * SEC - 100_000));
}

#[test]
fn update_ended_interrupt() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    assert_eq!(rtc.next_irq_deadline(), None, "nothing enabled");
    write(&mut rtc, reg::B, B_24H | B_UIE, 100 * MS);
    assert_eq!(rtc.next_irq_deadline(), Some(SEC));
    assert!(!rtc.irq_level(SEC - 1));
    assert!(rtc.irq_level(SEC));
    assert_eq!(rtc.next_irq_deadline(), None, "asserted until C is read");
    assert_eq!(read(&mut rtc, reg::C, SEC + 1), C_IRQF | C_PF | C_UF);
    assert!(!rtc.irq_level(SEC + 1));
    assert_eq!(read(&mut rtc, reg::C, SEC + 2), 0);
    assert_eq!(rtc.next_irq_deadline(), Some(2 * SEC));
    // SET clears UIE.
    write(&mut rtc, reg::B, B_24H | B_UIE | B_SET, 2 * SEC);
    assert_eq!(read(&mut rtc, reg::B, 2 * SEC), B_24H | B_SET);
}

#[test]
fn flags_set_without_enables_do_not_interrupt() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    assert!(!rtc.irq_level(3 * SEC));
    assert_eq!(read(&mut rtc, reg::C, 3 * SEC), C_PF | C_UF);
    // Enabling with the flag already set raises IRQF at once.
    rtc.irq_level(4 * SEC);
    write(&mut rtc, reg::B, B_24H | B_UIE, 4 * SEC);
    assert!(rtc.irq_level(4 * SEC));
}

#[test]
fn periodic_interrupt_rates() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    write(&mut rtc, reg::B, B_24H | B_PIE, 0);
    // RS = 6: 1024 Hz, 976.5625 µs.
    assert_eq!(rtc.next_irq_deadline(), Some(976_563));
    assert!(!rtc.irq_level(976_562));
    assert!(rtc.irq_level(976_563));
    assert_eq!(read(&mut rtc, reg::C, 976_563), C_IRQF | C_PF);
    assert_eq!(rtc.next_irq_deadline(), Some(1_953_125));
    // RS = 15: 2 Hz; RS = 1: 256 Hz; RS = 0: off.
    write(&mut rtc, reg::A, A_DV_NORMAL | 15, SEC);
    read(&mut rtc, reg::C, SEC);
    assert_eq!(rtc.next_irq_deadline(), Some(1500 * MS));
    write(&mut rtc, reg::A, A_DV_NORMAL | 1, SEC);
    assert_eq!(rtc.next_irq_deadline(), Some(SEC + 3_906_250));
    write(&mut rtc, reg::A, A_DV_NORMAL, SEC);
    assert_eq!(rtc.next_irq_deadline(), None);
    // UIP is read-only.
    write(&mut rtc, reg::A, 0xFF, SEC);
    assert_eq!(rtc.state().cmos[usize::from(reg::A)], 0x7F);
    assert_eq!(
        rtc.next_irq_deadline(),
        None,
        "divider not in normal operation"
    );
}

#[test]
fn alarm_interrupt() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0); // 12:34:56
    write(&mut rtc, reg::SECONDS_ALARM, 0x00, 0);
    write(&mut rtc, reg::MINUTES_ALARM, 0x35, 0);
    write(&mut rtc, reg::HOURS_ALARM, 0x12, 0);
    write(&mut rtc, reg::B, B_24H | B_AIE, 0);
    assert!(!rtc.irq_level(4 * SEC - 1));
    assert!(rtc.irq_level(4 * SEC), "12:35:00");
    // PF is set too: the periodic flag runs at RS = 6 whether or not PIE is set.
    assert_eq!(read(&mut rtc, reg::C, 4 * SEC), C_IRQF | C_PF | C_AF | C_UF);
    // Don't-care hours and minutes: every minute at :00 seconds.
    write(&mut rtc, reg::MINUTES_ALARM, ALARM_DONT_CARE, 4 * SEC);
    write(&mut rtc, reg::HOURS_ALARM, 0xFF, 4 * SEC);
    assert!(!rtc.irq_level(63 * SEC));
    assert!(rtc.irq_level(64 * SEC));
    read(&mut rtc, reg::C, 64 * SEC);
    // A gap of several days still finds the match.
    write(&mut rtc, reg::SECONDS_ALARM, 0x30, 64 * SEC);
    write(&mut rtc, reg::MINUTES_ALARM, 0x00, 64 * SEC);
    write(&mut rtc, reg::HOURS_ALARM, 0x03, 64 * SEC);
    assert!(rtc.irq_level(64 * SEC + 5 * 86_400 * SEC));
    // An alarm that can never match (hour 0x25) never fires.
    read(&mut rtc, reg::C, 64 * SEC + 5 * 86_400 * SEC);
    write(
        &mut rtc,
        reg::HOURS_ALARM,
        0x25,
        64 * SEC + 5 * 86_400 * SEC,
    );
    assert!(!rtc.irq_level(64 * SEC + 7 * 86_400 * SEC));
}

#[test]
fn index_port_details() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    // Bit 7 (NMI disable) is ignored.
    rtc.write_port(INDEX_PORT, 0x80 | reg::D, 0);
    assert_eq!(rtc.read_port(DATA_PORT, 0), D_VRT);
    assert_eq!(rtc.read_port(INDEX_PORT, 0), 0xFF);
    assert_eq!(rtc.read_port(0x72, 0), 0xFF);
    rtc.write_port(0x72, 0x55, 0);
    // C and D are read-only.
    write(&mut rtc, reg::C, 0xFF, 0);
    write(&mut rtc, reg::D, 0x00, 0);
    assert_eq!(read(&mut rtc, reg::C, 0), 0);
    assert_eq!(read(&mut rtc, reg::D, 0), D_VRT);
}

#[test]
fn cmos_ram() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    for index in 0x0E..=0x7F {
        if index != CENTURY {
            write(&mut rtc, index, index ^ 0xA5, 0);
        }
    }
    for index in 0x0E..=0x7F {
        if index != CENTURY {
            assert_eq!(read(&mut rtc, index, 10 * SEC), index ^ 0xA5);
        }
    }
    assert!(rtc.set_nvram(0x34, 0x12));
    assert_eq!(read(&mut rtc, 0x34, 10 * SEC), 0x12);
    assert!(!rtc.set_nvram(CENTURY, 0));
    assert!(!rtc.set_nvram(reg::B, 0));
    assert!(!rtc.set_nvram(0x80, 0));
}

#[test]
fn wall_clock_is_clamped_to_year_9999() {
    let mut rtc = Rtc::new(u64::MAX, 0);
    assert_eq!(
        clock(&mut rtc, 0),
        [0x59, 0x59, 0x23, 6, 0x31, 0x12, 0x99, 0x99]
    );
    // Past 9999 the century wraps rather than panics.
    assert_eq!(read(&mut rtc, CENTURY, SEC), 0x00);
}

#[test]
fn time_going_backwards_counts_as_no_time() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 10 * SEC);
    assert_eq!(read(&mut rtc, reg::SECONDS, 12 * SEC), 0x58);
    assert_eq!(read(&mut rtc, reg::SECONDS, 0), 0x58);
    assert_eq!(rtc.unix_seconds(0), LEAP_DAY_NOON as i64 + 2);
}

#[test]
fn state_round_trips() {
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    write(&mut rtc, reg::B, B_24H | B_PIE | B_AIE, MS);
    write(&mut rtc, 0x40, 0x77, MS);
    rtc.irq_level(2 * SEC + 5);
    rtc.write_port(INDEX_PORT, reg::C, 2 * SEC + 5);
    let state = rtc.state();
    let mut copy = Rtc::new(0, 0);
    copy.restore(state).unwrap();
    assert_eq!(copy, rtc);
    assert_eq!(
        copy.read_port(DATA_PORT, 3 * SEC),
        rtc.read_port(DATA_PORT, 3 * SEC)
    );
    assert_eq!(clock(&mut copy, 9 * SEC), clock(&mut rtc, 9 * SEC));
}

#[test]
fn restore_refuses_impossible_states() {
    let good = Rtc::new(LEAP_DAY_NOON, 10).state();
    let cases: [Damage; 7] = [
        ("index", |s| s.index = 0x80),
        ("cmos[0x0A]", |s| s.cmos[0x0A] |= A_UIP),
        ("cmos[0x0C]", |s| s.cmos[0x0C] = C_IRQF),
        ("cmos[0x0D]", |s| s.cmos[0x0D] = 0),
        ("base_seconds", |s| s.base_seconds = i64::MIN),
        ("last_ns", |s| s.last_ns = 0),
        ("last_cycles", |s| s.div_origin_cycles = 1),
    ];
    for (field, damage) in cases {
        let mut bad = good;
        damage(&mut bad);
        let mut rtc = Rtc::new(0, 0);
        let before = rtc.state();
        match rtc.restore(bad) {
            Err(StateError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(rtc.state(), before);
    }
    assert_eq!(
        StateError::Invalid {
            device: "MC146818 RTC",
            field: "index",
            value: 0x80
        }
        .to_string(),
        "invalid MC146818 RTC state: index = 0x80"
    );
}

#[test]
fn random_accesses_never_panic() {
    let mut x: u64 = 0x5DEE_CE66_D1CE_4E5B;
    let mut rtc = Rtc::new(LEAP_DAY_NOON, 0);
    let mut now = 0u64;
    for i in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        now = match x % 32 {
            0 => x,                         // far jumps
            1 => now.wrapping_sub(x >> 44), // backwards
            _ => now.saturating_add((x >> 20) % (3 * SEC)),
        };
        let value = (x >> 8) as u8;
        let port = [INDEX_PORT, DATA_PORT, DATA_PORT, 0x72][(x >> 16) as usize % 4];
        match (x >> 24) % 5 {
            0 | 1 => rtc.write_port(port, value, now),
            2 => {
                rtc.read_port(port, now);
            }
            3 => {
                rtc.irq_level(now);
            }
            _ => {
                rtc.next_irq_deadline();
                rtc.unix_seconds(now);
            }
        }
        if i % 64 == 0 {
            let state = rtc.state();
            assert_eq!(Rtc::new(0, 0).restore(state), Ok(()), "{state:?}");
        }
    }
}
