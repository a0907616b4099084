use super::*;
use crate::memory::MIN_GUEST_RAM;
use crate::testing::MockHost;

fn memory() -> GuestMemory {
    GuestMemory::new(MockHost::leak(512), MIN_GUEST_RAM).unwrap()
}

fn time_info(memory: &GuestMemory, gpa: u64) -> TimeInfo {
    let mut b = [0u8; TIME_INFO_LEN];
    memory.read(gpa, &mut b).unwrap();
    TimeInfo::from_bytes(&b)
}

const RATES: [u64; 8] = [
    1_000,
    100_000_000,
    999_999_999,
    1_000_000_000,
    1_800_000_123,
    2_500_000_000,
    3_600_000_000,
    5_000_000_000,
];

#[test]
fn scale_matches_a_reference_computation() {
    for hz in RATES {
        let (mul, shift) = tsc_scale(hz).unwrap();
        assert!(mul >= 1 << 31, "{hz} Hz: mul {mul:#x} wastes precision");
        // One second, ten seconds and an hour of ticks against ticks × 10^9 / hz, exactly.
        for seconds in [1u64, 10, 3600] {
            let ticks = hz * seconds;
            let exact = u128::from(ticks) * 1_000_000_000 / u128::from(hz);
            let got = u128::from(scale_delta(ticks, mul, shift));
            let error = exact.abs_diff(got);
            // 32 bits of multiplier: within 1 ns per 2^31 ns, plus rounding.
            assert!(
                error <= exact / (1 << 30) + 2,
                "{hz} Hz, {seconds} s: {got} ns against {exact} (shift {shift}, mul {mul:#x})"
            );
        }
    }
    assert_eq!(tsc_scale(0), None);
    assert_eq!(tsc_scale(1_000_000_000), Some((1 << 31, 1)));
    assert_eq!(tsc_scale(2_000_000_000), Some((1 << 31, 0)));
    assert_eq!(tsc_scale(u64::MAX).map(|(m, _)| m >= 1 << 31), Some(true));
}

#[test]
fn enabling_fills_in_the_structure() {
    let memory = memory();
    let mut clock = KvmClock::new(2, 2_500_000_000, 0);
    let now = Reading {
        vm_ns: 7_000_000_000,
        guest_tsc: 123_456_789,
    };
    let outcome = clock
        .write_msr(1, MSR_KVM_SYSTEM_TIME_NEW, 0x1_0000 | 1, now, &memory)
        .unwrap();
    assert_eq!(outcome.written, Some((0x1_0000, 32)));
    assert!(!outcome.unbacked);
    let info = time_info(&memory, 0x1_0000);
    let (mul, shift) = tsc_scale(2_500_000_000).unwrap();
    assert_eq!(
        info,
        TimeInfo {
            version: 2,
            tsc_timestamp: 123_456_789,
            system_time: 7_000_000_000,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            flags: PVCLOCK_TSC_STABLE,
        }
    );
    assert_eq!(clock.read_msr(1, MSR_KVM_SYSTEM_TIME_NEW), Some(0x1_0001));
    assert_eq!(
        clock.read_msr(0, MSR_KVM_SYSTEM_TIME_NEW),
        Some(0),
        "per vCPU"
    );
    // Another vCPU's structure is its own.
    clock
        .write_msr(0, MSR_KVM_SYSTEM_TIME_NEW, 0x1_0021, now, &memory)
        .unwrap();
    assert_eq!(time_info(&memory, 0x1_0020).system_time, 7_000_000_000);
    assert_eq!(time_info(&memory, 0x1_0000).version, 2);
}

#[test]
fn versions_stay_even_and_grow_and_time_is_monotonic() {
    let memory = memory();
    let hz = 3_600_000_000;
    let mut clock = KvmClock::new(1, hz, 0);
    let mut last_version = 0;
    let mut last_time = 0;
    // The guest left an odd version there: the next consistent one is still even.
    memory.write(0x2000, &5u32.to_le_bytes()).unwrap();
    for step in 1..=5u64 {
        let now = Reading {
            vm_ns: step * 1_000_000_000,
            guest_tsc: step * hz,
        };
        clock
            .write_msr(0, MSR_KVM_SYSTEM_TIME_NEW, 0x2001, now, &memory)
            .unwrap();
        let info = time_info(&memory, 0x2000);
        assert_eq!(info.version % 2, 0, "version {}", info.version);
        assert!(info.version > last_version);
        last_version = info.version;
        // What the guest reads half a second on, from this structure: later than before.
        let t = info.guest_time(now.guest_tsc + hz / 2);
        assert!(t > last_time);
        assert!(t.abs_diff(now.vm_ns + 500_000_000) <= 1, "{t}");
        last_time = t;
    }
}

#[test]
fn disabled_structures_are_not_written() {
    let memory = memory();
    let mut clock = KvmClock::new(1, 1_000_000_000, 0);
    let now = Reading {
        vm_ns: 1,
        guest_tsc: 1,
    };
    let outcome = clock
        .write_msr(0, MSR_KVM_SYSTEM_TIME_NEW, 0x3000, now, &memory)
        .unwrap();
    assert_eq!(outcome, Outcome::default());
    assert_eq!(time_info(&memory, 0x3000), TimeInfo::default());
    assert_eq!(clock.read_msr(0, MSR_KVM_SYSTEM_TIME_NEW), Some(0x3000));
}

#[test]
fn structures_outside_ram_are_accepted_and_not_written() {
    let memory = memory();
    let mut clock = KvmClock::new(1, 1_000_000_000, 0);
    let now = Reading {
        vm_ns: 1,
        guest_tsc: 1,
    };
    for gpa in [MIN_GUEST_RAM, MIN_GUEST_RAM - 16, u64::MAX - 1] {
        let outcome = clock
            .write_msr(0, MSR_KVM_SYSTEM_TIME_NEW, gpa | 1, now, &memory)
            .unwrap();
        assert!(outcome.unbacked, "{gpa:#x}");
        assert_eq!(outcome.written, None);
        assert_eq!(clock.read_msr(0, MSR_KVM_SYSTEM_TIME_NEW), Some(gpa | 1));
    }
    for gpa in [MIN_GUEST_RAM, MIN_GUEST_RAM - 8, u64::MAX - 1] {
        let outcome = clock
            .write_msr(0, MSR_KVM_WALL_CLOCK_NEW, gpa, now, &memory)
            .unwrap();
        assert!(outcome.unbacked, "{gpa:#x}");
        assert_eq!(clock.read_msr(0, MSR_KVM_WALL_CLOCK_NEW), Some(gpa));
    }
    // The last 16 bytes of RAM were not touched either.
    let mut tail = [0xAAu8; 16];
    memory.read(MIN_GUEST_RAM - 16, &mut tail).unwrap();
    assert_eq!(tail, [0; 16]);
}

#[test]
fn wall_clock_is_the_time_at_vm_zero() {
    let memory = memory();
    let mut clock = KvmClock::new(1, 1_000_000_000, 1_700_000_000_250_000_000);
    let now = Reading {
        vm_ns: 9,
        guest_tsc: 9,
    };
    let outcome = clock
        .write_msr(0, MSR_KVM_WALL_CLOCK_NEW, 0x4000, now, &memory)
        .unwrap();
    assert_eq!(outcome.written, Some((0x4000, 12)));
    let mut b = [0u8; WALL_CLOCK_LEN];
    memory.read(0x4000, &mut b).unwrap();
    assert_eq!(
        WallClock::from_bytes(&b),
        WallClock {
            version: 2,
            sec: 1_700_000_000,
            nsec: 250_000_000,
        }
    );
    assert_eq!(clock.read_msr(0, MSR_KVM_WALL_CLOCK_NEW), Some(0x4000));
}

#[test]
fn other_msrs_and_cpus_fault() {
    let memory = memory();
    let mut clock = KvmClock::new(1, 1_000_000_000, 0);
    let now = Reading {
        vm_ns: 0,
        guest_tsc: 0,
    };
    assert_eq!(clock.read_msr(0, 0x11), None);
    assert_eq!(clock.read_msr(1, MSR_KVM_SYSTEM_TIME_NEW), None);
    assert_eq!(clock.write_msr(0, 0x12, 1, now, &memory), None);
    assert_eq!(
        clock.write_msr(3, MSR_KVM_SYSTEM_TIME_NEW, 1, now, &memory),
        None
    );
    assert!(is_kvm_msr(0x4b56_4d00) && is_kvm_msr(0x4b56_4d01));
    assert!(!is_kvm_msr(0x4b56_4d02) && !is_kvm_msr(0x11) && !is_kvm_msr(0x12));
}

#[test]
fn state_round_trip_and_reset() {
    let memory = memory();
    let mut clock = KvmClock::new(2, 2_000_000_000, 42);
    let now = Reading {
        vm_ns: 5,
        guest_tsc: 10,
    };
    clock
        .write_msr(1, MSR_KVM_SYSTEM_TIME_NEW, 0x5001, now, &memory)
        .unwrap();
    clock
        .write_msr(0, MSR_KVM_WALL_CLOCK_NEW, 0x6000, now, &memory)
        .unwrap();
    let bytes = postcard::to_allocvec(clock.state()).unwrap();
    let state: State = postcard::from_bytes(&bytes).unwrap();
    let mut restored = KvmClock::new(2, 2_000_000_000, 0);
    restored.restore(state.clone()).unwrap();
    assert_eq!(restored, clock);
    assert_eq!(restored.read_msr(1, MSR_KVM_SYSTEM_TIME_NEW), Some(0x5001));
    // A restore rewrites the structure for the new host's reading.
    let later = Reading {
        vm_ns: 1_000,
        guest_tsc: 2_000,
    };
    assert_eq!(
        restored.refresh(1, later, &memory).written,
        Some((0x5000, 32))
    );
    let info = time_info(&memory, 0x5000);
    assert_eq!(
        (info.system_time, info.tsc_timestamp, info.version),
        (1_000, 2_000, 4)
    );
    assert_eq!(restored.refresh(0, later, &memory), Outcome::default());
    // Another vCPU count is refused.
    assert_eq!(KvmClock::new(1, 1, 0).restore(state), None);
    restored.reset_cpu(1);
    assert_eq!(restored.read_msr(1, MSR_KVM_SYSTEM_TIME_NEW), Some(0));
}
