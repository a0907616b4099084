//! RDSEED / RDRAND / TSC reads for [`super::Pool`].

use core::arch::x86_64::{_rdrand64_step, _rdseed64_step};

use super::Pool;
use crate::arch::cpu;

/// Tries per RDRAND value (Intel's DRNG guide: 10 retries make a failure a real fault).
const RDRAND_RETRIES: u32 = 10;
/// Tries per RDSEED value: it may run dry briefly under load, so more, with PAUSE between.
const RDSEED_RETRIES: u32 = 100;
/// Values drawn from each present instruction (twice what is needed, for margin).
const VALUES: usize = 8;
/// Timing samples mixed in.
const JITTER_SAMPLES: usize = 64;

pub fn gather() -> Pool {
    let mut pool = Pool::new();
    let has_rdrand = cpu::cpuid(1, 0).ecx & (1 << 30) != 0;
    let has_rdseed = cpu::cpuid(0, 0).eax >= 7 && cpu::cpuid(7, 0).ebx & (1 << 18) != 0;
    if has_rdseed {
        pool.hardware_present();
        for _ in 0..VALUES {
            match (0..RDSEED_RETRIES).find_map(|_| rdseed().or_else(pause_none)) {
                Some(v) => pool.add_hardware(v, true),
                None => pool.add_failure(),
            }
        }
    }
    if has_rdrand {
        pool.hardware_present();
        for _ in 0..VALUES {
            match (0..RDRAND_RETRIES).find_map(|_| rdrand()) {
                Some(v) => pool.add_hardware(v, false),
                None => pool.add_failure(),
            }
        }
    }
    // Timing of a small memory-touching loop: varies with caches and interrupts on real
    // hardware; mixed in, never relied on.
    let mut scratch = [0u64; 64];
    for i in 0..JITTER_SAMPLES {
        let start = cpu::rdtsc();
        for (j, slot) in scratch.iter_mut().enumerate() {
            *slot = slot.wrapping_mul(31).wrapping_add((i ^ j) as u64);
        }
        pool.add_jitter(cpu::rdtsc().wrapping_sub(start) ^ scratch[i % 64]);
    }
    pool
}

fn pause_none() -> Option<u64> {
    core::hint::spin_loop();
    None
}

fn rdrand() -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: called only after CPUID.01H:ECX.RDRAND[bit 30] said the instruction exists;
    // it writes only `value`.
    let ok = unsafe { rdrand_step(&mut value) };
    (ok == 1).then_some(value)
}

fn rdseed() -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: called only after CPUID.(EAX=07H,ECX=0):EBX.RDSEED[bit 18] said the instruction
    // exists; it writes only `value`.
    let ok = unsafe { rdseed_step(&mut value) };
    (ok == 1).then_some(value)
}

/// RDRAND once; returns its carry flag. Callers must have checked CPUID (calling it is
/// `unsafe` outside a function with the same target feature).
#[target_feature(enable = "rdrand")]
fn rdrand_step(value: &mut u64) -> i32 {
    _rdrand64_step(value)
}

/// RDSEED once; returns its carry flag. As [`rdrand_step`].
#[target_feature(enable = "rdseed")]
fn rdseed_step(value: &mut u64) -> i32 {
    _rdseed64_step(value)
}
