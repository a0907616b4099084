use super::timer::divisor;
use super::*;

/// A field name and a way to damage a state in it.
type Damage = (&'static str, fn(&mut State));

const TSC_HZ: u64 = 2_000_000_000;

fn lapic() -> Lapic {
    Lapic::new(LapicConfig::bsp(TSC_HZ)).unwrap()
}

/// An xAPIC, software-enabled (spurious vector 0xFF).
fn enabled() -> Lapic {
    let mut l = lapic();
    mmio_write(&mut l, reg::SVR, SVR_ENABLE | 0xFF);
    l
}

/// An x2APIC, software-enabled.
fn x2() -> Lapic {
    let mut l = lapic();
    l.write_apic_base(l.apic_base() | APIC_BASE_EXTD).unwrap();
    l.write_msr(msr(reg::SVR), u64::from(SVR_ENABLE | 0xFF), 0)
        .unwrap();
    l
}

fn msr(offset: u32) -> u32 {
    X2APIC_MSR_FIRST + offset / 16
}

fn mmio_read(l: &mut Lapic, offset: u32) -> u32 {
    l.read_mmio(u64::from(offset), 4, 0) as u32
}

fn mmio_write(l: &mut Lapic, offset: u32, value: u32) -> Option<LapicEvent> {
    l.write_mmio(u64::from(offset), 4, u64::from(value), 0)
}

fn gp(msr: u32) -> MsrFault {
    MsrFault::Gp { msr }
}

#[test]
fn config_is_checked() {
    let good = LapicConfig::bsp(TSC_HZ);
    for (config, error) in [
        (
            LapicConfig { bus_hz: 0, ..good },
            ConfigError::ZeroBusFrequency,
        ),
        (
            LapicConfig { tsc_hz: 0, ..good },
            ConfigError::ZeroTscFrequency,
        ),
        (
            LapicConfig {
                phys_addr_bits: 53,
                ..good
            },
            ConfigError::PhysAddrBits(53),
        ),
        (
            LapicConfig {
                apic_id: 0xFF,
                ..good
            },
            ConfigError::BroadcastId,
        ),
    ] {
        assert_eq!(Lapic::new(config), Err(error));
    }
    assert_eq!(
        ConfigError::PhysAddrBits(53).to_string(),
        "local APIC: 53 physical address bits (expected 36 to 52)"
    );
}

#[test]
fn power_up_state() {
    let mut l = lapic();
    assert_eq!(l.apic_base(), 0xFEE0_0900);
    assert_eq!(l.mode(), Mode::XApic);
    assert_eq!(l.mmio_base(), Some(DEFAULT_BASE));
    assert_eq!(mmio_read(&mut l, reg::ID), 0);
    assert_eq!(mmio_read(&mut l, reg::VERSION), VERSION_VALUE);
    assert_eq!(mmio_read(&mut l, reg::SVR), 0xFF);
    assert_eq!(mmio_read(&mut l, reg::DFR), 0xFFFF_FFFF);
    assert_eq!(mmio_read(&mut l, reg::TPR), 0);
    for offset in [
        reg::LVT_TIMER,
        reg::LVT_THERMAL,
        reg::LVT_PERF,
        reg::LVT_LINT0,
        reg::LVT_LINT1,
        reg::LVT_ERROR,
    ] {
        assert_eq!(mmio_read(&mut l, offset), LVT_MASKED);
    }
    assert!(!l.software_enabled());
    assert_eq!(l.highest_pending(), None);
    assert_eq!(l.next_timer_deadline(), None);
    let ap = Lapic::new(LapicConfig {
        apic_id: 3,
        bsp: false,
        ..LapicConfig::bsp(TSC_HZ)
    })
    .unwrap();
    assert_eq!(ap.apic_base(), 0xFEE0_0800);
    assert_eq!(ap.apic_id(), 3);
}

#[test]
fn apic_base_transitions() {
    let mut l = enabled();
    let base = l.apic_base();
    let x2 = base | APIC_BASE_EXTD;
    let off = base & !APIC_BASE_ENABLE;
    let g = Err(gp(IA32_APIC_BASE));
    assert_eq!(l.write_apic_base(base | 1), g, "reserved low bit");
    assert_eq!(l.write_apic_base(base | 1 << 39), g, "above MAXPHYADDR");
    assert_eq!(
        l.write_apic_base(off | APIC_BASE_EXTD),
        g,
        "EXTD without EN"
    );
    assert_eq!(l.write_apic_base(x2), Ok(()));
    assert_eq!(l.mode(), Mode::X2Apic);
    assert_eq!(l.mmio_base(), None);
    assert!(l.software_enabled(), "state kept into x2APIC mode");
    assert_eq!(l.write_apic_base(base), g, "x2APIC to xAPIC");
    assert_eq!(l.write_apic_base(off), Ok(()));
    assert_eq!(l.mode(), Mode::Disabled);
    assert!(!l.software_enabled(), "registers reset");
    assert_eq!(l.write_apic_base(x2), g, "disabled to x2APIC");
    // Relocation; the BSP bit is read-only.
    assert_eq!(l.write_apic_base(0xFED0_0000 | APIC_BASE_ENABLE), Ok(()));
    assert_eq!(
        l.apic_base(),
        0xFED0_0000 | APIC_BASE_ENABLE | APIC_BASE_BSP
    );
    assert_eq!(l.mmio_base(), Some(0xFED0_0000));
    // Without x2APIC support EXTD is reserved.
    let mut plain = Lapic::new(LapicConfig {
        x2apic: false,
        ..LapicConfig::bsp(TSC_HZ)
    })
    .unwrap();
    let base = plain.apic_base();
    assert_eq!(
        plain.write_apic_base(base | APIC_BASE_EXTD),
        Err(gp(IA32_APIC_BASE))
    );
}

#[test]
fn mmio_register_basics() {
    let mut l = enabled();
    mmio_write(&mut l, reg::TPR, 0x1_23);
    assert_eq!(mmio_read(&mut l, reg::TPR), 0x23);
    mmio_write(&mut l, reg::ID, 0x0500_0000);
    assert_eq!(mmio_read(&mut l, reg::ID), 0x0500_0000);
    assert_eq!(l.apic_id(), 5);
    mmio_write(&mut l, reg::LDR, 0x0100_00FF);
    assert_eq!(mmio_read(&mut l, reg::LDR), 0x0100_0000);
    mmio_write(&mut l, reg::DFR, 0);
    assert_eq!(mmio_read(&mut l, reg::DFR), 0x0FFF_FFFF);
    // Read-only registers ignore writes.
    mmio_write(&mut l, reg::VERSION, 0);
    mmio_write(&mut l, reg::PPR, 0xFF);
    assert_eq!(mmio_read(&mut l, reg::VERSION), VERSION_VALUE);
    assert_eq!(mmio_read(&mut l, reg::EOI), 0, "write-only");
    assert_eq!(mmio_read(&mut l, reg::RRD), 0);
    // Byte reads by lane; non-32-bit or unaligned writes are dropped.
    assert_eq!(l.read_mmio(u64::from(reg::VERSION) + 2, 1, 0), 0x05);
    assert_eq!(l.read_mmio(u64::from(reg::VERSION) + 4, 4, 0), 0);
    assert_eq!(
        l.read_mmio(u64::from(reg::VERSION), 8, 0),
        u64::from(VERSION_VALUE)
    );
    l.write_mmio(u64::from(reg::TPR), 1, 0x40, 0);
    l.write_mmio(u64::from(reg::TPR) + 4, 4, 0x40, 0);
    l.write_mmio(u64::from(reg::TPR), 8, 0x40, 0);
    assert_eq!(mmio_read(&mut l, reg::TPR), 0x23);
    // The page offset is taken modulo 4 KiB.
    assert_eq!(l.read_mmio(0x1030, 4, 0), u64::from(VERSION_VALUE));
}

#[test]
fn illegal_register_address_is_reported_in_esr() {
    let mut l = enabled();
    mmio_write(&mut l, reg::LVT_ERROR, 0xEE);
    assert_eq!(mmio_read(&mut l, 0x3A0), 0);
    mmio_write(&mut l, reg::ESR, 0);
    assert_eq!(mmio_read(&mut l, reg::ESR), ESR_ILLEGAL_REGISTER);
    assert_eq!(l.highest_pending(), Some(0xEE), "error interrupt");
    // The next write latches what happened since (nothing).
    mmio_write(&mut l, reg::ESR, 0);
    assert_eq!(mmio_read(&mut l, reg::ESR), 0);
    mmio_write(&mut l, reg::SELF_IPI, 0x40); // x2APIC only
    mmio_write(&mut l, reg::LVT_CMCI, 0);
    mmio_write(&mut l, reg::ESR, 0);
    assert_eq!(mmio_read(&mut l, reg::ESR), ESR_ILLEGAL_REGISTER);
}

#[test]
fn software_disable_masks_lvts_and_drops_interrupts() {
    let mut l = enabled();
    mmio_write(&mut l, reg::LVT_LINT0, 0x700);
    assert_eq!(mmio_read(&mut l, reg::LVT_LINT0), 0x700);
    mmio_write(&mut l, reg::SVR, 0xFF);
    assert_eq!(mmio_read(&mut l, reg::LVT_LINT0), 0x700 | LVT_MASKED);
    mmio_write(&mut l, reg::LVT_LINT0, 0x700);
    assert_eq!(
        mmio_read(&mut l, reg::LVT_LINT0),
        0x700 | LVT_MASKED,
        "stays masked"
    );
    assert!(!l.accept_interrupt(0x40, false));
    assert_eq!(l.highest_pending(), None);
}

#[test]
fn interrupt_acceptance_priority_and_eoi() {
    let mut l = enabled();
    assert!(l.accept_interrupt(0x31, false));
    assert!(l.accept_interrupt(0x52, true));
    assert_eq!(l.highest_pending(), Some(0x52));
    assert!(l.acknowledge(0x52));
    assert!(!l.acknowledge(0x52), "no longer requested");
    assert_eq!(l.ppr(), 0x50);
    assert_eq!(mmio_read(&mut l, reg::ISR + 0x20), 1 << (0x52 - 64));
    assert_eq!(mmio_read(&mut l, reg::TMR + 0x20), 1 << (0x52 - 64));
    assert_eq!(mmio_read(&mut l, reg::IRR + 0x10), 1 << (0x31 - 32));
    // 0x31 is below the in-service class; 0x55 is in the same class: neither is delivered.
    assert!(l.accept_interrupt(0x55, false));
    assert_eq!(l.highest_pending(), None);
    // EOI ends 0x52 (level-triggered: reported for the I/O APIC).
    assert_eq!(
        mmio_write(&mut l, reg::EOI, 0),
        Some(LapicEvent::Eoi { vector: 0x52 })
    );
    assert_eq!(l.highest_pending(), Some(0x55));
    l.acknowledge(0x55);
    assert_eq!(
        mmio_write(&mut l, reg::EOI, 0),
        None,
        "edge: nothing to report"
    );
    // TPR holds back a class.
    mmio_write(&mut l, reg::TPR, 0x30);
    assert_eq!(l.highest_pending(), None);
    assert_eq!(mmio_read(&mut l, reg::PPR), 0x30);
    mmio_write(&mut l, reg::TPR, 0x2F);
    assert_eq!(l.highest_pending(), Some(0x31));
    // EOI with nothing in service does nothing.
    assert_eq!(mmio_write(&mut l, reg::EOI, 0), None);
}

#[test]
fn arbitration_priority() {
    let mut l = enabled();
    mmio_write(&mut l, reg::TPR, 0x45);
    assert_eq!(mmio_read(&mut l, reg::APR), 0x45);
    l.accept_interrupt(0x81, false);
    assert_eq!(mmio_read(&mut l, reg::APR), 0x80);
}

#[test]
fn illegal_vectors() {
    let mut l = enabled();
    mmio_write(&mut l, reg::LVT_ERROR, 0xE0);
    assert!(!l.accept_interrupt(15, false));
    assert_eq!(mmio_write(&mut l, reg::ICR_LOW, 3), None);
    mmio_write(&mut l, reg::ESR, 0);
    assert_eq!(
        mmio_read(&mut l, reg::ESR),
        ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR
    );
    assert_eq!(l.highest_pending(), Some(0xE0));
    // An illegal error vector is not delivered (no error loop).
    mmio_write(&mut l, reg::LVT_ERROR, 0x02);
    l.acknowledge(0xE0);
    mmio_write(&mut l, reg::EOI, 0);
    l.accept_interrupt(1, false);
    assert_eq!(l.highest_pending(), None);
}

#[test]
fn xapic_icr_sends_ipis() {
    let mut l = enabled();
    mmio_write(&mut l, reg::ICR_HIGH, 0x0300_00FF);
    assert_eq!(mmio_read(&mut l, reg::ICR_HIGH), 0x0300_0000);
    // INIT, level assert, physical destination 3.
    assert_eq!(
        mmio_write(&mut l, reg::ICR_LOW, 0x0000_C500),
        Some(LapicEvent::Ipi(Ipi {
            vector: 0,
            delivery_mode: DeliveryMode::Init,
            logical: false,
            assert: true,
            level_triggered: true,
            shorthand: Shorthand::None,
            destination: 3,
        }))
    );
    assert_eq!(
        mmio_read(&mut l, reg::ICR_LOW),
        0xC500,
        "delivery status idle"
    );
    // Start-up to all but self, page 0x9A.
    let Some(LapicEvent::Ipi(sipi)) = mmio_write(&mut l, reg::ICR_LOW, 0x000C_469A) else {
        panic!("no IPI");
    };
    assert_eq!(
        (sipi.delivery_mode, sipi.vector, sipi.shorthand),
        (DeliveryMode::StartUp, 0x9A, Shorthand::AllExcludingSelf)
    );
    // Self shorthand: delivered here, no event.
    assert_eq!(mmio_write(&mut l, reg::ICR_LOW, 0x0004_0041), None);
    assert_eq!(l.highest_pending(), Some(0x41));
    // Reserved delivery mode 011: nothing.
    assert_eq!(mmio_write(&mut l, reg::ICR_LOW, 0x0000_0341), None);
}

#[test]
fn x2apic_msrs() {
    let mut l = x2();
    assert_eq!(l.read_msr(msr(reg::ID), 0), Ok(0));
    assert_eq!(l.write_msr(msr(reg::ID), 0, 0), Err(gp(0x802)), "read-only");
    assert_eq!(l.read_msr(msr(reg::LDR), 0), Ok(1));
    assert_eq!(l.write_msr(msr(reg::LDR), 1, 0), Err(gp(0x80D)));
    assert_eq!(
        l.read_msr(msr(reg::VERSION), 0),
        Ok(u64::from(VERSION_VALUE))
    );
    for absent in [0x809, 0x80C, 0x80E, 0x82F, 0x831, 0x840, 0x8FF] {
        assert_eq!(l.read_msr(absent, 0), Err(gp(absent)), "{absent:#x}");
        assert_eq!(l.write_msr(absent, 0, 0), Err(gp(absent)), "{absent:#x}");
    }
    assert_eq!(l.read_msr(0x80B, 0), Err(gp(0x80B)), "EOI is write-only");
    assert_eq!(
        l.read_msr(0x83F, 0),
        Err(gp(0x83F)),
        "self IPI is write-only"
    );
    assert_eq!(l.write_msr(0x80B, 1, 0), Err(gp(0x80B)), "EOI must be 0");
    assert_eq!(l.write_msr(0x828, 1, 0), Err(gp(0x828)), "ESR must be 0");
    assert_eq!(
        l.write_msr(0x808, 0x100, 0),
        Err(gp(0x808)),
        "TPR reserved bits"
    );
    assert_eq!(l.write_msr(0x808, 1 << 32, 0), Err(gp(0x808)), "upper half");
    assert_eq!(l.write_msr(0x80F, 0x1000 | 0x1FF, 0), Err(gp(0x80F)));
    assert_eq!(
        l.write_msr(0x83E, 0x10, 0),
        Err(gp(0x83E)),
        "divide reserved bits"
    );
    assert_eq!(
        l.write_msr(0x835, 1 << 20, 0),
        Err(gp(0x835)),
        "LVT reserved bits"
    );
    assert_eq!(
        l.write_msr(0x835, 0x700 | LVT_DELIVERY_STATUS as u64, 0),
        Ok(None),
        "RO bit"
    );
    assert_eq!(l.write_msr(0x820, 0, 0), Err(gp(0x820)), "IRR is read-only");
    assert_eq!(
        l.write_msr(0x839, 0, 0),
        Err(gp(0x839)),
        "current count is read-only"
    );
    assert_eq!(
        l.write_msr(0x700, 0, 0),
        Err(gp(0x700)),
        "outside the range"
    );
    // TPR, PPR.
    assert_eq!(l.write_msr(0x808, 0x20, 0), Ok(None));
    assert_eq!(l.read_msr(0x80A, 0), Ok(0x20));
    // ICR: one 64-bit MSR, destination in bits 63:32.
    let ipi = l.write_msr(0x830, (0x1234_5678 << 32) | 0x4030, 0);
    assert_eq!(
        ipi,
        Ok(Some(LapicEvent::Ipi(Ipi {
            vector: 0x30,
            delivery_mode: DeliveryMode::Fixed,
            logical: false,
            assert: true,
            level_triggered: false,
            shorthand: Shorthand::None,
            destination: 0x1234_5678,
        })))
    );
    assert_eq!(l.read_msr(0x830, 0), Ok((0x1234_5678 << 32) | 0x4030));
    assert_eq!(
        l.write_msr(0x830, 1 << 12, 0),
        Err(gp(0x830)),
        "delivery status"
    );
    assert_eq!(l.write_msr(0x830, 1 << 20, 0), Err(gp(0x830)));
    // Self IPI.
    assert_eq!(l.write_msr(0x83F, 0x1_40, 0), Err(gp(0x83F)));
    assert_eq!(l.write_msr(0x83F, 0x40, 0), Ok(None));
    assert_eq!(l.highest_pending(), Some(0x40));
    assert_eq!(l.write_msr(0x83F, 0x05, 0), Ok(None));
    l.write_msr(0x828, 0, 0).unwrap();
    assert_eq!(l.read_msr(0x828, 0), Ok(u64::from(ESR_SEND_ILLEGAL_VECTOR)));
    // The MMIO page is gone in x2APIC mode.
    assert_eq!(l.read_mmio(u64::from(reg::VERSION), 4, 0), 0xFFFF_FFFF);
    assert_eq!(l.read_mmio(u64::from(reg::VERSION), 0, 0), 0);
    assert_eq!(l.write_mmio(u64::from(reg::EOI), 4, 0, 0), None);
    // And the MSRs are gone outside it.
    let mut xapic = enabled();
    assert_eq!(xapic.read_msr(0x802, 0), Err(gp(0x802)));
    assert_eq!(xapic.write_msr(0x808, 0, 0), Err(gp(0x808)));
}

#[test]
fn x2apic_ids_for_a_higher_apic() {
    let mut l = Lapic::new(LapicConfig {
        apic_id: 0x23,
        bsp: false,
        ..LapicConfig::bsp(TSC_HZ)
    })
    .unwrap();
    l.write_apic_base(l.apic_base() | APIC_BASE_EXTD).unwrap();
    assert_eq!(l.read_msr(0x802, 0), Ok(0x23));
    assert_eq!(l.read_msr(0x80D, 0), Ok((2 << 16) | (1 << 3)));
}

#[test]
fn destination_matching() {
    let mut l = enabled();
    mmio_write(&mut l, reg::ID, 0x0200_0000);
    assert!(l.matches_destination(2, false));
    assert!(!l.matches_destination(3, false));
    assert!(l.matches_destination(0xFF, false), "broadcast");
    // Flat logical.
    mmio_write(&mut l, reg::LDR, 0x0400_0000);
    assert!(l.matches_destination(0x06, true));
    assert!(!l.matches_destination(0x03, true));
    // Cluster logical: cluster 1, member bit 2.
    mmio_write(&mut l, reg::DFR, 0x0FFF_FFFF);
    mmio_write(&mut l, reg::LDR, 0x1400_0000);
    assert!(l.matches_destination(0x16, true));
    assert!(!l.matches_destination(0x26, true));
    assert!(!l.matches_destination(0x13, true));
    // x2APIC: physical 32-bit, cluster logical.
    let x = x2();
    assert!(x.matches_destination(0, false));
    assert!(x.matches_destination(u32::MAX, false));
    assert!(!x.matches_destination(0x100, false));
    assert!(x.matches_destination(0x0000_0001, true));
    assert!(!x.matches_destination(0x0001_0001, true));
    // Disabled: nothing.
    let mut off = lapic();
    off.write_apic_base(off.apic_base() & !APIC_BASE_ENABLE)
        .unwrap();
    assert!(!off.matches_destination(0xFF, false));
    assert!(!off.accept_interrupt(0x40, false));
    assert_eq!(off.highest_pending(), None);
}

#[test]
fn pic_interrupts_through_lint0() {
    let mut l = enabled();
    assert!(!l.accepts_pic_interrupts(), "LINT0 masked after reset");
    mmio_write(&mut l, reg::LVT_LINT0, 0x700);
    assert!(l.accepts_pic_interrupts(), "virtual wire");
    mmio_write(&mut l, reg::LVT_LINT0, 0x700 | LVT_MASKED);
    assert!(!l.accepts_pic_interrupts());
    l.write_apic_base(l.apic_base() & !APIC_BASE_ENABLE)
        .unwrap();
    assert!(l.accepts_pic_interrupts(), "APIC off: LINT0 is INTR");
}

#[test]
fn divide_configuration_values() {
    let expected = [2, 4, 8, 16, 32, 64, 128, 1];
    for (bits, want) in expected.iter().enumerate() {
        let config = (bits as u32 & 3) | ((bits as u32 & 4) << 1);
        assert_eq!(divisor(config), *want, "{config:#x}");
    }
}

#[test]
fn one_shot_timer() {
    let mut l = enabled();
    mmio_write(&mut l, reg::LVT_TIMER, 0xEC);
    mmio_write(&mut l, reg::TIMER_DIVIDE, 0x3); // divide by 16
    l.write_mmio(u64::from(reg::TIMER_INITIAL), 4, 1000, 5_000);
    // 1 GHz bus / 16: one count per 16 ns.
    assert_eq!(l.next_timer_deadline(), Some(5_000 + 16_000));
    assert_eq!(l.read_mmio(u64::from(reg::TIMER_CURRENT), 4, 5_000), 1000);
    assert_eq!(
        l.read_mmio(u64::from(reg::TIMER_CURRENT), 4, 5_000 + 160),
        990
    );
    assert!(!l.update_timer(20_999));
    assert_eq!(l.highest_pending(), None);
    assert!(l.update_timer(21_000));
    assert_eq!(l.highest_pending(), Some(0xEC));
    assert_eq!(l.read_mmio(u64::from(reg::TIMER_CURRENT), 4, 21_000), 0);
    assert_eq!(l.next_timer_deadline(), None);
    assert!(!l.update_timer(1_000_000), "one shot");
    assert_eq!(mmio_read(&mut l, reg::TIMER_INITIAL), 1000);
    // Writing 0 stops a running count.
    l.write_mmio(u64::from(reg::TIMER_INITIAL), 4, 50, 2_000_000);
    l.write_mmio(u64::from(reg::TIMER_INITIAL), 4, 0, 2_000_010);
    assert_eq!(l.next_timer_deadline(), None);
}

#[test]
fn periodic_timer_does_not_drift() {
    let mut l = Lapic::new(LapicConfig {
        bus_hz: 25_000_000,
        ..LapicConfig::bsp(TSC_HZ)
    })
    .unwrap();
    mmio_write(&mut l, reg::SVR, SVR_ENABLE | 0xFF);
    mmio_write(&mut l, reg::LVT_TIMER, TIMER_PERIODIC | 0xEF);
    mmio_write(&mut l, reg::TIMER_DIVIDE, 0xB); // divide by 1
    // 25 MHz, 62_500 cycles: 2.5 ms.
    l.write_mmio(u64::from(reg::TIMER_INITIAL), 4, 62_500, 0);
    for k in 1..=400u64 {
        let due = l.next_timer_deadline().unwrap();
        assert_eq!(due, k * 2_500_000);
        assert!(!l.update_timer(due - 1));
        assert!(l.update_timer(due));
        assert!(l.acknowledge(0xEF));
        mmio_write(&mut l, reg::EOI, 0);
    }
    // Late: missed periods coalesce into one interrupt, the phase is kept.
    assert!(l.update_timer(400 * 2_500_000 + 7_600_000));
    assert_eq!(l.next_timer_deadline(), Some(404 * 2_500_000));
    assert_eq!(
        l.read_mmio(
            u64::from(reg::TIMER_CURRENT),
            4,
            400 * 2_500_000 + 7_600_000
        ),
        62_500 - 2_500
    );
}

#[test]
fn periodic_timer_is_clamped() {
    let mut l = enabled();
    mmio_write(&mut l, reg::LVT_TIMER, TIMER_PERIODIC | 0xEF);
    mmio_write(&mut l, reg::TIMER_DIVIDE, 0xB);
    mmio_write(&mut l, reg::TIMER_INITIAL, 1);
    assert_eq!(l.next_timer_deadline(), Some(MIN_PERIOD_NS));
    l.update_timer(MIN_PERIOD_NS);
    assert_eq!(l.next_timer_deadline(), Some(2 * MIN_PERIOD_NS));
}

#[test]
fn divide_change_keeps_the_count() {
    let mut l = enabled();
    mmio_write(&mut l, reg::LVT_TIMER, 0xEC);
    mmio_write(&mut l, reg::TIMER_DIVIDE, 0x0); // by 2
    l.write_mmio(u64::from(reg::TIMER_INITIAL), 4, 1000, 0);
    // At 1000 ns: 500 counts gone.
    l.write_mmio(u64::from(reg::TIMER_DIVIDE), 4, 0xA, 1000); // by 128
    assert_eq!(l.read_mmio(u64::from(reg::TIMER_CURRENT), 4, 1000), 500);
    assert_eq!(l.next_timer_deadline(), Some(1000 + 500 * 128));
}

#[test]
fn tsc_deadline_timer() {
    let mut l = enabled();
    // Not in TSC-deadline mode: writes are ignored and it reads 0.
    l.write_tsc_deadline(5_000, 0, 0);
    assert_eq!(l.tsc_deadline(), 0);
    mmio_write(&mut l, reg::LVT_TIMER, TIMER_TSC_DEADLINE | 0xEB);
    // 2 GHz TSC: 2000 ticks ahead is 1000 ns.
    l.write_tsc_deadline(12_000, 50_000, 10_000);
    assert_eq!(l.tsc_deadline(), 12_000);
    assert_eq!(l.next_timer_deadline(), Some(51_000));
    // The initial count is ignored and the current count reads 0.
    l.write_mmio(u64::from(reg::TIMER_INITIAL), 4, 99, 50_000);
    assert_eq!(l.read_mmio(u64::from(reg::TIMER_INITIAL), 4, 50_000), 0);
    assert_eq!(l.read_mmio(u64::from(reg::TIMER_CURRENT), 4, 50_000), 0);
    assert!(!l.update_timer(50_999));
    assert!(l.update_timer(51_000));
    assert_eq!(l.highest_pending(), Some(0xEB));
    assert_eq!(l.tsc_deadline(), 0, "cleared when it fires");
    assert_eq!(l.next_timer_deadline(), None);
    // A deadline already passed fires at once; 0 disarms.
    l.acknowledge(0xEB);
    mmio_write(&mut l, reg::EOI, 0);
    l.write_tsc_deadline(1, 60_000, 10_000);
    assert_eq!(l.highest_pending(), Some(0xEB));
    l.write_tsc_deadline(u64::MAX, 60_000, 10_000);
    assert!(l.next_timer_deadline().is_some());
    l.write_tsc_deadline(0, 60_000, 10_000);
    assert_eq!(l.next_timer_deadline(), None);
    // Leaving TSC-deadline mode disarms it.
    l.write_tsc_deadline(30_000, 60_000, 10_000);
    mmio_write(&mut l, reg::LVT_TIMER, 0xEB);
    assert_eq!(l.tsc_deadline(), 0);
    assert_eq!(l.next_timer_deadline(), None);
    // And entering it stops a one-shot count.
    l.write_mmio(u64::from(reg::TIMER_INITIAL), 4, 99, 60_000);
    mmio_write(&mut l, reg::LVT_TIMER, TIMER_TSC_DEADLINE | 0xEB);
    assert_eq!(l.read_mmio(u64::from(reg::TIMER_INITIAL), 4, 60_000), 0);
    assert_eq!(l.next_timer_deadline(), None);
}

#[test]
fn masked_timer_counts_without_interrupting() {
    let mut l = enabled();
    mmio_write(&mut l, reg::LVT_TIMER, LVT_MASKED | 0xEC);
    mmio_write(&mut l, reg::TIMER_DIVIDE, 0xB);
    mmio_write(&mut l, reg::TIMER_INITIAL, 100);
    assert_eq!(l.next_timer_deadline(), None);
    assert!(l.update_timer(100));
    assert_eq!(l.highest_pending(), None);
}

#[test]
fn time_going_backwards_counts_as_no_time() {
    let mut l = enabled();
    mmio_write(&mut l, reg::TIMER_DIVIDE, 0xB);
    l.write_mmio(u64::from(reg::TIMER_INITIAL), 4, 1000, 500);
    assert_eq!(l.read_mmio(u64::from(reg::TIMER_CURRENT), 4, 600), 900);
    assert_eq!(l.read_mmio(u64::from(reg::TIMER_CURRENT), 4, 0), 900);
}

#[test]
fn state_round_trips() {
    let mut l = enabled();
    mmio_write(&mut l, reg::LVT_TIMER, TIMER_PERIODIC | 0xEF);
    l.write_mmio(u64::from(reg::TIMER_INITIAL), 4, 123_456, 10);
    l.accept_interrupt(0x61, true);
    l.acknowledge(0x61);
    l.accept_interrupt(0x71, false);
    mmio_write(&mut l, reg::ICR_HIGH, 0x0100_0000);
    mmio_write(&mut l, reg::LDR, 0x0800_0000);
    let state = l.state();
    let mut copy = lapic();
    copy.restore(state).unwrap();
    assert_eq!(copy, l);
    assert_eq!(copy.next_timer_deadline(), l.next_timer_deadline());
    assert_eq!(
        mmio_write(&mut copy, reg::EOI, 0),
        mmio_write(&mut l, reg::EOI, 0)
    );
    let x = x2();
    let mut copy = lapic();
    copy.restore(x.state()).unwrap();
    assert_eq!(copy.mode(), Mode::X2Apic);
}

#[test]
fn restore_refuses_impossible_states() {
    let good = enabled().state();
    let cases: [Damage; 14] = [
        ("apic_base", |s| s.apic_base |= 1),
        ("apic_base", |s| s.apic_base &= !APIC_BASE_BSP),
        ("apic_base", |s| {
            s.apic_base = (s.apic_base & !APIC_BASE_ENABLE) | APIC_BASE_EXTD
        }),
        ("ldr", |s| s.ldr = 1),
        ("dfr", |s| s.dfr = 0),
        ("svr", |s| s.svr = 0x1000),
        ("esr", |s| s.esr_pending = 0x100),
        ("icr", |s| s.icr = 1 << 13),
        ("lvt[LINT1]", |s| s.lvt[lvt::LINT1] = 1 << 20),
        ("timer_divide", |s| s.timer_divide = 4),
        ("timer_armed", |s| s.timer_armed = true),
        ("timer_count_at_start", |s| s.timer_count_at_start = 1),
        ("tsc_deadline_ns", |s| s.tsc_deadline_ns = Some(5)),
        ("lvt[ERROR]", |s| {
            s.svr = 0xFF;
            s.lvt[lvt::ERROR] = 0x40;
        }),
    ];
    for (field, damage) in cases {
        let mut bad = good;
        damage(&mut bad);
        let mut l = lapic();
        let before = l.state();
        match l.restore(bad) {
            Err(StateError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(l.state(), before);
    }
    assert_eq!(
        StateError::Invalid {
            device: "local APIC",
            field: "svr",
            value: 0x1000
        }
        .to_string(),
        "invalid local APIC state: svr = 0x1000"
    );
}

#[test]
fn random_accesses_never_panic() {
    // Registers that matter, so the random walk gets somewhere, plus any offset.
    const HOT: [u32; 12] = [
        reg::SVR,
        reg::TPR,
        reg::EOI,
        reg::ESR,
        reg::ICR_LOW,
        reg::ICR_HIGH,
        reg::LVT_TIMER,
        reg::LVT_ERROR,
        reg::LVT_LINT0,
        reg::TIMER_INITIAL,
        reg::TIMER_DIVIDE,
        reg::LDR,
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut l = enabled();
    let mut now = 0u64;
    let (mut acked, mut fired, mut events) = (0u32, 0u32, 0u32);
    for i in 0..300_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Time moves only where the timer is updated explicitly, so expiries are seen there.
        if (x >> 32) % 12 == 8 {
            now = match x % 64 {
                0 => x,
                1 => now.wrapping_sub(x >> 40),
                _ => now.saturating_add((x >> 40) % 500_000),
            };
        }
        let hot = HOT[(x >> 8) as usize % HOT.len()];
        let offset = if x & (1 << 61) != 0 {
            ((x >> 8) & 0xFFF) as u32
        } else {
            hot
        };
        // Small values often: short timer counts, low vectors, few flags.
        let value = if x & (1 << 60) != 0 {
            x.rotate_left(17)
        } else {
            (x >> 20) & 0x3_00FF
        };
        let msr = X2APIC_MSR_FIRST + offset / 16;
        match (x >> 32) % 12 {
            0 => {
                l.read_mmio(u64::from(offset), ((x >> 16) % 9) as u8, now);
            }
            1 | 2 => {
                let size = [4, 4, 4, 1, 8][(x >> 16) as usize % 5];
                events += u32::from(l.write_mmio(u64::from(offset), size, value, now).is_some());
            }
            3 => {
                let _ = l.read_msr(msr, now);
            }
            4 => {
                if let Ok(Some(_)) = l.write_msr(msr, value, now) {
                    events += 1;
                }
            }
            5 if i % 64 == 0 => {
                let choices = [
                    DEFAULT_BASE | APIC_BASE_ENABLE | APIC_BASE_BSP,
                    DEFAULT_BASE | APIC_BASE_ENABLE | APIC_BASE_BSP | APIC_BASE_EXTD,
                    DEFAULT_BASE | APIC_BASE_BSP,
                    value,
                ];
                let _ = l.write_apic_base(choices[(x >> 16) as usize % 4]);
            }
            5 if l.mode() == Mode::Disabled => {
                l.write_apic_base(DEFAULT_BASE | APIC_BASE_ENABLE | APIC_BASE_BSP)
                    .unwrap();
            }
            6 => {
                l.accept_interrupt((x >> 8) as u8, x & 1 != 0);
            }
            7 => {
                if let Some(v) = l.highest_pending() {
                    assert!(v >= 16);
                    assert!(l.acknowledge(v));
                    acked += 1;
                }
            }
            8 => {
                fired += u32::from(l.update_timer(now));
                if let Some(due) = l.next_timer_deadline() {
                    assert!(due >= l.state().last_ns || l.state().timer_armed);
                }
            }
            9 => {
                l.write_tsc_deadline(value, now, x >> 3);
            }
            10 => {
                // Keep the APIC enabled most of the time.
                let _ = l.write_msr(msr_of(reg::SVR), 0x1FF, now);
                l.write_mmio(u64::from(reg::SVR), 4, 0x1FF, now);
            }
            _ => {
                l.matches_destination((x >> 8) as u32, x & 2 != 0);
                l.accepts_pic_interrupts();
            }
        }
        assert!(l.timer_current_count() <= l.state().timer_initial);
        if i % 16 == 0 {
            let state = l.state();
            assert_eq!(lapic().restore(state), Ok(()), "{state:?}");
        }
    }
    // The walk reached the interesting paths.
    assert!(
        acked > 300 && fired > 10 && events > 300,
        "{acked} {fired} {events}"
    );
}

fn msr_of(offset: u32) -> u32 {
    X2APIC_MSR_FIRST + offset / 16
}
