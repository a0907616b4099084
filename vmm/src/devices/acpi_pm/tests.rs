use super::*;

/// A field name and a way to damage a state in it.
type Damage = (&'static str, fn(&mut State));

const SEC: u64 = 1_000_000_000;

fn pm() -> AcpiPm {
    AcpiPm::new(5, TimerWidth::Bits24, 0).unwrap()
}

/// The ns at which the timer reaches `ticks`.
fn at(ticks: u64) -> u64 {
    u64::try_from((u128::from(ticks) * NS_PER_SEC).div_ceil(u128::from(PM_TIMER_HZ))).unwrap()
}

#[test]
fn power_on_state() {
    let mut pm = pm();
    assert_eq!(pm.read(PM1_STS, 2, 0), 0);
    assert_eq!(pm.read(PM1_EN, 2, 0), 0);
    assert_eq!(pm.read(PM1_CNT, 2, 0), u32::from(SCI_EN));
    assert_eq!(pm.read(PM_TMR, 4, 0), 0);
    assert!(!pm.poweroff_requested());
    assert!(!pm.sci_level(0));
    assert_eq!(pm.next_sci_deadline(), None);
    assert_eq!(
        AcpiPm::new(8, TimerWidth::Bits24, 0),
        Err(ConfigError::SleepType(8))
    );
    assert_eq!(
        ConfigError::SleepType(8).to_string(),
        "ACPI S5 sleep type 8 does not fit SLP_TYP (0 to 7)"
    );
}

#[test]
fn timer_counts_at_3_579545_mhz() {
    let mut pm = AcpiPm::new(0, TimerWidth::Bits32, 7 * SEC).unwrap();
    assert_eq!(pm.read(PM_TMR, 4, 7 * SEC), 0);
    assert_eq!(pm.read(PM_TMR, 4, at(1_000_000) + 7 * SEC), 1_000_000);
    assert_eq!(pm.read(PM_TMR, 4, 8 * SEC), 3_579_545);
    assert_eq!(pm.read(PM_TMR, 4, 8 * SEC + 1000), 3_579_548);
    // Byte reads of one instant agree with the dword.
    let now = 7 * SEC + at(0x1234_5678);
    let dword = pm.read(PM_TMR, 4, now);
    let bytes: Vec<u32> = (0..4).map(|i| pm.read(PM_TMR + i, 1, now)).collect();
    assert_eq!(
        dword,
        bytes[0] | bytes[1] << 8 | bytes[2] << 16 | bytes[3] << 24
    );
    // Time never runs backwards.
    assert_eq!(pm.read(PM_TMR, 4, 0), dword);
}

#[test]
fn timer_widths_wrap() {
    let mut pm24 = pm();
    assert_eq!(pm24.read(PM_TMR, 4, at(1 << 24)), 0);
    assert_eq!(pm24.read(PM_TMR, 4, at((1 << 24) + 5)), 5);
    let mut pm32 = AcpiPm::new(5, TimerWidth::Bits32, 0).unwrap();
    assert_eq!(pm32.read(PM_TMR, 4, at(1 << 24)), 1 << 24);
    assert_eq!(pm32.read(PM_TMR, 4, at(1 << 32)), 0);
}

#[test]
fn timer_carry_sets_tmr_sts_and_sci() {
    let mut pm = pm();
    pm.write(PM1_EN, 2, u32::from(TMR_EN), 0);
    // The top bit (23) changes every 2^23 ticks, about 2.34 s.
    assert_eq!(pm.next_sci_deadline(), Some(at(1 << 23)));
    assert!(!pm.sci_level(at(1 << 23) - 1));
    assert!(pm.sci_level(at(1 << 23)));
    assert_eq!(pm.read(PM1_STS, 2, at(1 << 23)), u32::from(TMR_STS));
    assert_eq!(pm.next_sci_deadline(), None, "already asserted");
    // Write 1 to clear.
    pm.write(PM1_STS, 2, u32::from(TMR_STS), at(1 << 23));
    assert!(!pm.sci_level(at(1 << 23)));
    assert_eq!(pm.next_sci_deadline(), Some(at(2 << 23)));
    // Several carries while nobody looked: one TMR_STS.
    assert!(pm.sci_level(at(10 << 23)));
    pm.write(PM1_STS, 2, u32::from(TMR_STS), at(10 << 23));
    assert_eq!(pm.next_sci_deadline(), Some(at(11 << 23)));
    // 32-bit timer: bit 31.
    let mut pm32 = AcpiPm::new(5, TimerWidth::Bits32, 0).unwrap();
    pm32.write(PM1_EN, 2, u32::from(TMR_EN), 0);
    assert_eq!(pm32.next_sci_deadline(), Some(at(1 << 31)));
}

#[test]
fn power_button() {
    let mut pm = pm();
    pm.press_power_button(10);
    assert_eq!(pm.read(PM1_STS, 2, 10), u32::from(PWRBTN_STS));
    assert!(!pm.sci_level(10), "not enabled");
    pm.write(PM1_EN, 2, u32::from(PWRBTN_EN), 10);
    assert!(pm.sci_level(10));
    // Clearing SCI_EN gates SCI.
    pm.write(PM1_CNT, 2, 0, 10);
    assert!(!pm.sci_level(10));
    pm.write(PM1_CNT, 2, u32::from(SCI_EN), 10);
    // Byte-wide write 1 to clear of the high byte.
    pm.write(PM1_STS + 1, 1, u32::from(PWRBTN_STS >> 8), 10);
    assert!(!pm.sci_level(10));
}

#[test]
fn s5_powers_off() {
    let mut pm = pm();
    // Another sleep type does nothing (the DSDT offers only S5).
    pm.write(
        PM1_CNT,
        2,
        u32::from(SCI_EN | (3 << SLP_TYP_SHIFT) | SLP_EN),
        0,
    );
    assert!(!pm.poweroff_requested());
    // SLP_TYP without SLP_EN is just stored; SLP_EN and GBL_RLS read 0.
    pm.write(
        PM1_CNT,
        2,
        u32::from(SCI_EN | GBL_RLS | (5 << SLP_TYP_SHIFT)),
        0,
    );
    assert!(!pm.poweroff_requested());
    assert_eq!(
        pm.read(PM1_CNT, 2, 0),
        u32::from(SCI_EN | (5 << SLP_TYP_SHIFT))
    );
    // Linux: SLP_TYP first, then SLP_EN in a second write, here byte by byte.
    let value = SCI_EN | (5 << SLP_TYP_SHIFT) | SLP_EN;
    pm.write(PM1_CNT, 1, u32::from(value), 0);
    assert!(!pm.poweroff_requested());
    pm.write(PM1_CNT + 1, 1, u32::from(value >> 8), 0);
    assert!(pm.poweroff_requested());
    assert_eq!(pm.read(PM1_CNT, 2, 0) & u32::from(SLP_EN), 0);
}

#[test]
fn reserved_bits_and_offsets() {
    let mut pm = pm();
    pm.write(PM1_EN, 2, 0xFFFF, 0);
    assert_eq!(pm.read(PM1_EN, 2, 0), u32::from(EN_BITS));
    pm.write(PM1_CNT, 2, 0xFFFF, 0);
    assert_eq!(pm.read(PM1_CNT, 2, 0), u32::from(CNT_STORED));
    pm.write(6, 2, 0xFFFF, 0);
    assert_eq!(pm.read(6, 2, 0), 0);
    pm.write(PM_TMR, 4, 0xFFFF_FFFF, 0);
    assert_eq!(pm.read(PM_TMR, 4, 0), 0, "read-only");
    assert_eq!(pm.read(12, 4, 0), 0);
    assert_eq!(pm.read(u16::MAX, 4, 0), 0);
    pm.write(u16::MAX, 4, u32::MAX, 0);
    // A dword read of PM1a_EVT_BLK sees status and enable together.
    pm.press_power_button(0);
    assert_eq!(
        pm.read(PM1_STS, 4, 0),
        u32::from(PWRBTN_STS) | u32::from(EN_BITS) << 16
    );
    assert_eq!(pm.read(PM1_STS, 9, 0), pm.read(PM1_STS, 4, 0), "cut to 4");
}

#[test]
fn state_round_trips() {
    let mut pm = pm();
    pm.write(PM1_EN, 2, u32::from(TMR_EN | PWRBTN_EN), 0);
    pm.press_power_button(5 * SEC);
    let state = pm.state();
    let mut copy = AcpiPm::new(5, TimerWidth::Bits24, 0).unwrap();
    copy.restore(state).unwrap();
    assert_eq!(copy, pm);
    assert_eq!(copy.read(PM_TMR, 4, 9 * SEC), pm.read(PM_TMR, 4, 9 * SEC));
    assert_eq!(copy.next_sci_deadline(), pm.next_sci_deadline());
}

#[test]
fn restore_refuses_impossible_states() {
    let good = AcpiPm::new(5, TimerWidth::Bits24, SEC).unwrap().state();
    let cases: [Damage; 5] = [
        ("sts", |s| s.sts = 1 << 1),
        ("en", |s| s.en = 1 << 15),
        ("cnt", |s| s.cnt = SLP_EN),
        ("last_ns", |s| s.last_ns = 0),
        ("carries", |s| s.carries = 1),
    ];
    for (field, damage) in cases {
        let mut bad = good;
        damage(&mut bad);
        let mut pm = pm();
        let before = pm.state();
        match pm.restore(bad) {
            Err(StateError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(pm.state(), before);
    }
    assert_eq!(
        StateError::Invalid {
            device: "ACPI PM",
            field: "cnt",
            value: 0x2000
        }
        .to_string(),
        "invalid ACPI PM state: cnt = 0x2000"
    );
}

#[test]
fn random_accesses_never_panic() {
    let mut x: u64 = 0x94D0_49BB_1331_11EB;
    let mut pm = AcpiPm::new(7, TimerWidth::Bits32, 0).unwrap();
    let mut now = 0u64;
    for i in 0..200_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        now = match x % 32 {
            0 => x,
            1 => now.wrapping_sub(x >> 40),
            _ => now.saturating_add((x >> 32) % (100 * SEC)),
        };
        let offset = ((x >> 8) % 16) as u16;
        let size = ((x >> 12) % 6) as u8;
        match (x >> 20) % 5 {
            0 => {
                pm.read(offset, size, now);
            }
            1 => pm.write(offset, size, (x >> 24) as u32, now),
            2 => {
                pm.sci_level(now);
                pm.next_sci_deadline();
            }
            3 => pm.press_power_button(now),
            _ => {
                if let Some(due) = pm.next_sci_deadline() {
                    assert!(pm.sci_level(due));
                }
            }
        }
        if i % 16 == 0 {
            let mut copy = AcpiPm::new(7, TimerWidth::Bits32, 0).unwrap();
            assert_eq!(copy.restore(pm.state()), Ok(()), "{:?}", pm.state());
        }
    }
}
