//! Time: TSC and local APIC timer calibration, and the periodic tick.
//!
//! Calibration prefers CPUID leaf 0x15 (crystal clock and TSC ratio: exact, and on Intel the
//! APIC timer runs from that crystal), then leaf 0x16 for the TSC, and otherwise measures both
//! against PIT channel 2 over 10 ms. The tick forces the boot CPU out of HLT (and, with the
//! VMM, out of a guest) so the management plane always gets the CPU back.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::arch::apic::{self, LVT_TIMER_PERIODIC, reg};
use crate::arch::cpu::{self, port};
use crate::arch::idt::TIMER_VECTOR;

/// Tick frequency of the periodic timer. 1 kHz: the NICs are polled, so the tick bounds
/// how long a packet waits while the CPU idles (and how long a guest runs between switches).
pub const TICK_HZ: u64 = 1000;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static APIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);
static SOURCE: AtomicU8 = AtomicU8::new(0);

/// Where the timer frequencies came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalibrationSource {
    /// CPUID leaf 0x15 (crystal clock) for both.
    Cpuid15,
    /// CPUID 0x16 for the TSC, PIT for the APIC timer.
    Cpuid16AndPit,
    /// PIT channel 2 for both.
    Pit,
}

impl CalibrationSource {
    /// Short description for the console.
    pub fn describe(self) -> &'static str {
        match self {
            CalibrationSource::Cpuid15 => "CPUID leaf 0x15",
            CalibrationSource::Cpuid16AndPit => "CPUID leaf 0x16 and the PIT",
            CalibrationSource::Pit => "the PIT",
        }
    }
}

/// The calibration source in use.
pub fn source() -> CalibrationSource {
    match SOURCE.load(Ordering::Relaxed) {
        1 => CalibrationSource::Cpuid15,
        2 => CalibrationSource::Cpuid16AndPit,
        _ => CalibrationSource::Pit,
    }
}

/// TSC frequency in Hz (0 before calibration).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// APIC timer input frequency in Hz, before the divider.
pub fn apic_timer_hz() -> u64 {
    APIC_TIMER_HZ.load(Ordering::Relaxed)
}

/// Ticks since the timer started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Converts a TSC delta to milliseconds.
pub fn tsc_delta_ms(delta: u64) -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        0
    } else {
        (u128::from(delta) * 1000 / u128::from(hz)) as u64
    }
}

/// Measures TSC and APIC-timer ticks over 10 ms of PIT channel 2 (gate-controlled, mode 0).
fn measure_with_pit() -> (u64, u64) {
    const PIT_HZ: u64 = 1_193_182;
    const COUNT: u16 = (PIT_HZ / 100) as u16; // 10 ms
    // APIC timer: divide by 1, one-shot, masked, maximum count.
    apic::write(reg::TIMER_DIVIDE, 0b1011);
    apic::write(reg::LVT_TIMER, apic::LVT_MASKED);
    // SAFETY: port 0x61 (gate/speaker control) and the PIT channel 2 ports belong to the PIT,
    // which nothing else uses; the speaker output stays off.
    let (tsc_delta, apic_delta) = unsafe {
        let ctrl = port::inb(0x61);
        port::outb(0x61, (ctrl & !0x02) & !0x01); // gate low, speaker off
        port::outb(0x43, 0b1011_0000); // channel 2, lo/hi byte, mode 0, binary
        port::outb(0x42, (COUNT & 0xff) as u8);
        port::outb(0x42, (COUNT >> 8) as u8);
        apic::write(reg::TIMER_INITIAL, u32::MAX);
        let tsc_start = cpu::rdtsc();
        let apic_start = apic::read(reg::TIMER_CURRENT);
        port::outb(0x61, (ctrl & !0x02) | 0x01); // gate high: counting starts
        let mut spins: u64 = 0;
        while port::inb(0x61) & 0x20 == 0 && spins < 100_000_000 {
            spins += 1;
        }
        let apic_end = apic::read(reg::TIMER_CURRENT);
        let tsc_end = cpu::rdtsc();
        port::outb(0x61, ctrl);
        (
            tsc_end - tsc_start,
            u64::from(apic_start.wrapping_sub(apic_end)),
        )
    };
    apic::write(reg::TIMER_INITIAL, 0);
    (tsc_delta * 100, apic_delta * 100)
}

/// Works out the TSC and APIC timer frequencies.
pub fn calibrate() {
    let max_leaf = cpu::cpuid(0, 0).eax;
    let leaf15 = (max_leaf >= 0x15).then(|| cpu::cpuid(0x15, 0));
    let leaf16 = (max_leaf >= 0x16).then(|| cpu::cpuid(0x16, 0));
    let (tsc, apic_hz, source) = match (leaf15, leaf16) {
        (Some(l), _) if l.eax != 0 && l.ebx != 0 && l.ecx != 0 => {
            let crystal = u64::from(l.ecx);
            (
                crystal * u64::from(l.ebx) / u64::from(l.eax),
                crystal,
                CalibrationSource::Cpuid15,
            )
        }
        (_, Some(l)) if l.eax & 0xffff != 0 => {
            let (_, apic_hz) = measure_with_pit();
            (
                u64::from(l.eax & 0xffff) * 1_000_000,
                apic_hz,
                CalibrationSource::Cpuid16AndPit,
            )
        }
        _ => {
            let (tsc, apic_hz) = measure_with_pit();
            (tsc, apic_hz, CalibrationSource::Pit)
        }
    };
    TSC_HZ.store(tsc.max(1), Ordering::Relaxed);
    APIC_TIMER_HZ.store(apic_hz.max(1), Ordering::Relaxed);
    SOURCE.store(
        match source {
            CalibrationSource::Cpuid15 => 1,
            CalibrationSource::Cpuid16AndPit => 2,
            CalibrationSource::Pit => 3,
        },
        Ordering::Relaxed,
    );
    defmt::info!(
        "timer calibration: tsc {=u64} Hz, apic timer {=u64} Hz",
        tsc,
        apic_hz
    );
}

/// Starts the periodic tick at [`TICK_HZ`].
pub fn start_periodic() {
    let count = (apic_timer_hz() / 16 / TICK_HZ).clamp(1, u64::from(u32::MAX)) as u32;
    apic::write(reg::TIMER_DIVIDE, 0b0011); // divide by 16
    apic::write(reg::LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(TIMER_VECTOR));
    apic::write(reg::TIMER_INITIAL, count);
}

/// Timer interrupt handler body.
pub fn on_tick() {
    let cpu = crate::arch::smp::current();
    if cpu != 0 {
        // Application processors only count their ticks: time, the console and preemption
        // of the boot CPU's vCPUs belong to the boot CPU's tick.
        crate::arch::smp::count_tick(cpu);
        return;
    }
    TICKS.fetch_add(1, Ordering::Relaxed);
    // A vCPU busy with CPU-only exits returns to the scheduler at its next exit.
    keel_vmm::preempt::request();
    // Fallback input path when the UART interrupt is not routed.
    crate::serial::drain_rx();
}

/// A point in time a wait on hardware gives up at: drivers poll a device's ready bit with
/// it so a device that never answers is an error, not a hang. TSC-based, so it works before
/// interrupts are on; before calibration (`tsc_hz` 0) it assumes 1 GHz, which only makes
/// early waits longer or shorter, never endless.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at_tsc: u64,
}

impl Deadline {
    /// `ms` milliseconds from now.
    pub fn after_ms(ms: u64) -> Deadline {
        let hz = match tsc_hz() {
            0 => 1_000_000_000,
            hz => hz,
        };
        let cycles = (u128::from(ms) * u128::from(hz) / 1000).min(u128::from(u64::MAX / 2));
        Deadline {
            at_tsc: cpu::rdtsc().saturating_add(cycles as u64),
        }
    }

    /// `us` microseconds from now.
    pub fn after_us(us: u64) -> Deadline {
        let hz = match tsc_hz() {
            0 => 1_000_000_000,
            hz => hz,
        };
        let cycles = (u128::from(us) * u128::from(hz) / 1_000_000).min(u128::from(u64::MAX / 2));
        Deadline {
            at_tsc: cpu::rdtsc().saturating_add(cycles as u64),
        }
    }

    /// Spins until the deadline passes.
    pub fn wait(&self) {
        while !self.expired() {
            core::hint::spin_loop();
        }
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        cpu::rdtsc() >= self.at_tsc
    }
}
