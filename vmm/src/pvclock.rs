//! KVM's paravirtual clock (`kvm-clock`) for Linux guests: the two MSRs and the structures
//! they point at in guest RAM.
//!
//! A guest that finds KVM's signature and `KVM_FEATURE_CLOCKSOURCE2` in the hypervisor CPUID
//! leaves ([`cpuid`](crate::cpuid), [`KVM_SIGNATURE_LEAF`]) writes, per vCPU, the
//! guest-physical address of a [`TimeInfo`] with bit 0 set to `MSR_KVM_SYSTEM_TIME_NEW`, and
//! once the address of a [`WallClock`] to `MSR_KVM_WALL_CLOCK_NEW`. Keel fills them in:
//!
//! - [`TimeInfo`] pairs a guest TSC reading (`tsc_timestamp`) with the VM's time in
//!   nanoseconds at the same instant (`system_time`) and gives the scale
//!   (`tsc_to_system_mul`, `tsc_shift`) from the guest TSC's frequency — the one the timing
//!   leaf 0x4000_0010 reports. The guest then reads time as
//!   `system_time + ((tsc − tsc_timestamp) ≪ shift) × mul ≫ 32` with no exit at all. The
//!   guest TSC runs at a fixed rate under Keel, so the structure is written once, when the
//!   guest enables it, and carries [`PVCLOCK_TSC_STABLE`].
//! - [`WallClock`] is the wall-clock time at VM time 0, so wall time is that plus the
//!   `system_time` clock.
//!
//! Both follow the version protocol: the version is made odd before the fields change and
//! even after, so a guest reading concurrently retries.
//!
//! **A structure address outside guest RAM** is handled as KVM does: the `WRMSR` succeeds and
//! reads back, but nothing is written (the guest simply gets no clock there); no #GP.
//! [`Outcome::unbacked`] says so to the caller, which counts it.
//!
//! The MSR values are part of each vCPU's saved state ([`State`]). Pure logic: the VM loop
//! passes in the time, the guest TSC and guest RAM.

use alloc::vec;
use alloc::vec::Vec;

use crate::memory::GuestMemory;

/// The hypervisor leaf holding KVM's signature (Keel's own stays at 0x4000_0000; Linux looks
/// from 0x4000_0000 up in steps of 0x100).
pub const KVM_SIGNATURE_LEAF: u32 = 0x4000_0100;
/// KVM's feature leaf: EAX the features, EDX the hints (none).
pub const KVM_FEATURES_LEAF: u32 = 0x4000_0101;
/// KVM's signature in EBX, ECX, EDX of [`KVM_SIGNATURE_LEAF`].
pub const KVM_SIGNATURE: [u8; 12] = *b"KVMKVMKVM\0\0\0";

/// `KVM_FEATURE_CLOCKSOURCE2` (bit 3): the kvm-clock MSRs at 0x4b564d00/01.
pub const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
/// `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT` (bit 24): the guest may trust
/// [`PVCLOCK_TSC_STABLE`] in the structure.
pub const KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
/// Every feature Keel offers (and implements).
pub const KVM_FEATURES: u32 = KVM_FEATURE_CLOCKSOURCE2 | KVM_FEATURE_CLOCKSOURCE_STABLE_BIT;

/// `MSR_KVM_WALL_CLOCK_NEW`: guest-physical address of a [`WallClock`] (write fills it in).
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// `MSR_KVM_SYSTEM_TIME_NEW`: guest-physical address of this vCPU's [`TimeInfo`], bit 0 the
/// enable.
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

/// `MSR_KVM_SYSTEM_TIME_NEW` bit 0: the structure is enabled.
const SYSTEM_TIME_ENABLE: u64 = 1;

/// [`TimeInfo::flags`] bit 0: the TSC is stable (synchronised across vCPUs, constant rate), so
/// the guest need not guard against one vCPU's time going behind another's.
pub const PVCLOCK_TSC_STABLE: u8 = 1;

/// Bytes of `struct pvclock_vcpu_time_info`.
pub const TIME_INFO_LEN: usize = 32;
/// Bytes of `struct pvclock_wall_clock`.
pub const WALL_CLOCK_LEN: usize = 12;

const NS_PER_SEC: u64 = 1_000_000_000;

/// Whether `msr` is one of the kvm-clock MSRs (the backends send them to the VM loop).
pub fn is_kvm_msr(msr: u32) -> bool {
    matches!(msr, MSR_KVM_WALL_CLOCK_NEW | MSR_KVM_SYSTEM_TIME_NEW)
}

/// The scale that turns TSC ticks at `tsc_hz` into nanoseconds the way the guest applies it:
/// `ns = ((ticks ≪ shift) × mul) ≫ 32` (a negative shift shifts right), with `mul` in
/// `[2^31, 2^32)` for the most precision. `None` for a zero rate.
///
/// Derivation: `ns = ticks × 10^9 / hz = ticks × 2^shift × (10^9 × 2^32 / (hz × 2^shift)) / 2^32`.
/// `mul = 10^9 × 2^(32 − shift) / hz` is below 2^32 exactly when `2^shift > 10^9 / hz`, and at
/// least 2^31 when `shift` is the smallest such integer.
pub fn tsc_scale(tsc_hz: u64) -> Option<(u32, i8)> {
    if tsc_hz == 0 {
        return None;
    }
    let hz = u128::from(tsc_hz);
    let ns = u128::from(NS_PER_SEC);
    // The smallest shift with ns < hz × 2^shift; a u64 rate keeps it within -34..=30.
    let mut shift: i32 = -40;
    while ns >= shifted(hz, shift) {
        shift += 1;
    }
    let mul = if shift >= 0 {
        (ns << 32) / (hz << shift)
    } else {
        (ns << (32 - shift)) / hz
    };
    Some((u32::try_from(mul).ok()?, i8::try_from(shift).ok()?))
}

/// `value × 2^shift` (shift may be negative), in 128 bits.
fn shifted(value: u128, shift: i32) -> u128 {
    if shift >= 0 {
        value << shift
    } else {
        value >> -shift
    }
}

/// What the guest computes from a [`TimeInfo`]: nanoseconds for `delta` ticks.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let delta = if shift >= 0 {
        delta << shift
    } else {
        delta >> -shift
    };
    ((u128::from(delta) * u128::from(mul)) >> 32) as u64
}

/// `struct pvclock_vcpu_time_info` (32 bytes, little-endian).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeInfo {
    /// Odd while Keel updates the structure, even when it is consistent.
    pub version: u32,
    /// The guest TSC at `system_time`.
    pub tsc_timestamp: u64,
    /// VM time in nanoseconds at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC-to-nanoseconds multiplier (see [`tsc_scale`]).
    pub tsc_to_system_mul: u32,
    /// TSC-to-nanoseconds shift.
    pub tsc_shift: i8,
    /// [`PVCLOCK_TSC_STABLE`].
    pub flags: u8,
}

impl TimeInfo {
    /// The guest's layout.
    pub fn to_bytes(&self) -> [u8; TIME_INFO_LEN] {
        let mut b = [0u8; TIME_INFO_LEN];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[8..16].copy_from_slice(&self.tsc_timestamp.to_le_bytes());
        b[16..24].copy_from_slice(&self.system_time.to_le_bytes());
        b[24..28].copy_from_slice(&self.tsc_to_system_mul.to_le_bytes());
        b[28] = self.tsc_shift as u8;
        b[29] = self.flags;
        b
    }

    /// Parses the guest's layout (for tests and tools).
    pub fn from_bytes(b: &[u8; TIME_INFO_LEN]) -> TimeInfo {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | u64::from(u32_at(i + 4)) << 32;
        TimeInfo {
            version: u32_at(0),
            tsc_timestamp: u64_at(8),
            system_time: u64_at(16),
            tsc_to_system_mul: u32_at(24),
            tsc_shift: b[28] as i8,
            flags: b[29],
        }
    }

    /// The time in nanoseconds the guest reads at guest TSC `tsc`.
    pub fn guest_time(&self, tsc: u64) -> u64 {
        self.system_time.wrapping_add(scale_delta(
            tsc.wrapping_sub(self.tsc_timestamp),
            self.tsc_to_system_mul,
            self.tsc_shift,
        ))
    }
}

/// `struct pvclock_wall_clock` (12 bytes, little-endian): wall-clock time at VM time 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WallClock {
    /// Odd while Keel updates the structure, even when it is consistent.
    pub version: u32,
    /// Seconds since 1970-01-01 UTC.
    pub sec: u32,
    /// Nanoseconds.
    pub nsec: u32,
}

impl WallClock {
    /// The guest's layout.
    pub fn to_bytes(&self) -> [u8; WALL_CLOCK_LEN] {
        let mut b = [0u8; WALL_CLOCK_LEN];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..8].copy_from_slice(&self.sec.to_le_bytes());
        b[8..12].copy_from_slice(&self.nsec.to_le_bytes());
        b
    }

    /// Parses the guest's layout.
    pub fn from_bytes(b: &[u8; WALL_CLOCK_LEN]) -> WallClock {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        WallClock {
            version: u32_at(0),
            sec: u32_at(4),
            nsec: u32_at(8),
        }
    }
}

/// The kvm-clock values of one VM, for snapshots: each vCPU's `MSR_KVM_SYSTEM_TIME_NEW`, the
/// VM's `MSR_KVM_WALL_CLOCK_NEW` and the wall-clock time at VM time 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// `MSR_KVM_SYSTEM_TIME_NEW` by vCPU (APIC id).
    pub system_time: Vec<u64>,
    /// `MSR_KVM_WALL_CLOCK_NEW` (one per VM, as on KVM).
    pub wall_clock: u64,
    /// Nanoseconds since 1970-01-01 UTC at VM time 0.
    pub wall_at_zero_ns: u64,
}

/// A clock reading for one vCPU, taken at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// VM time in nanoseconds.
    pub vm_ns: u64,
    /// That vCPU's guest TSC.
    pub guest_tsc: u64,
}

/// What an accepted kvm-clock MSR write did to guest RAM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The guest-physical range written (the caller marks its pages dirty), if any.
    pub written: Option<(u64, u64)>,
    /// The structure's address was outside guest RAM: nothing was written (as KVM, the
    /// write itself succeeds).
    pub unbacked: bool,
}

/// The kvm-clock of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmClock {
    /// The guest TSC's frequency in Hz.
    tsc_hz: u64,
    state: State,
}

impl KvmClock {
    /// The kvm-clock of a VM with `cpus` vCPUs whose TSC runs at `tsc_hz`, and whose wall
    /// clock reads `wall_at_zero_ns` (ns since the Unix epoch) at VM time 0.
    pub fn new(cpus: usize, tsc_hz: u64, wall_at_zero_ns: u64) -> KvmClock {
        KvmClock {
            tsc_hz,
            state: State {
                system_time: vec![0; cpus],
                wall_clock: 0,
                wall_at_zero_ns,
            },
        }
    }

    /// `RDMSR`: the value last written (0 after reset); `None` (#GP) for another MSR or a vCPU
    /// this VM does not have.
    pub fn read_msr(&self, cpu: usize, msr: u32) -> Option<u64> {
        match msr {
            MSR_KVM_WALL_CLOCK_NEW => Some(self.state.wall_clock),
            MSR_KVM_SYSTEM_TIME_NEW => self.state.system_time.get(cpu).copied(),
            _ => None,
        }
    }

    /// `WRMSR` of `value` to `msr` on vCPU `cpu` at `now`: stores it and fills in the
    /// structure it points at in `memory`. `None` (#GP) for another MSR or a vCPU this VM
    /// does not have.
    pub fn write_msr(
        &mut self,
        cpu: usize,
        msr: u32,
        value: u64,
        now: Reading,
        memory: &GuestMemory,
    ) -> Option<Outcome> {
        match msr {
            MSR_KVM_WALL_CLOCK_NEW => {
                self.state.wall_clock = value;
                Some(self.write_wall_clock(value, memory))
            }
            MSR_KVM_SYSTEM_TIME_NEW => {
                *self.state.system_time.get_mut(cpu)? = value;
                Some(self.refresh(cpu, now, memory))
            }
            _ => None,
        }
    }

    /// Rewrites vCPU `cpu`'s [`TimeInfo`], if it is enabled, for the clock reading `now` (after
    /// a restore, possibly on a host with another TSC rate).
    pub fn refresh(&self, cpu: usize, now: Reading, memory: &GuestMemory) -> Outcome {
        let Some(&msr) = self.state.system_time.get(cpu) else {
            return Outcome::default();
        };
        if msr & SYSTEM_TIME_ENABLE == 0 {
            return Outcome::default();
        }
        let gpa = msr & !SYSTEM_TIME_ENABLE;
        let Some((mul, shift)) = tsc_scale(self.tsc_hz) else {
            return Outcome::default();
        };
        let info = TimeInfo {
            version: 0,
            tsc_timestamp: now.guest_tsc,
            system_time: now.vm_ns,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            flags: PVCLOCK_TSC_STABLE,
        };
        write_versioned(memory, gpa, &info.to_bytes())
    }

    /// Fills in the [`WallClock`] at `gpa`.
    fn write_wall_clock(&self, gpa: u64, memory: &GuestMemory) -> Outcome {
        let wall = self.state.wall_at_zero_ns;
        let clock = WallClock {
            version: 0,
            // Seconds fit 32 bits until 2106, as the guest's structure assumes.
            sec: (wall / NS_PER_SEC) as u32,
            nsec: (wall % NS_PER_SEC) as u32,
        };
        write_versioned(memory, gpa, &clock.to_bytes())
    }

    /// Resets vCPU `cpu`'s MSR (an INIT, as KVM does): its structure is no longer updated.
    pub fn reset_cpu(&mut self, cpu: usize) {
        if let Some(msr) = self.state.system_time.get_mut(cpu) {
            *msr = 0;
        }
    }

    /// The values, for a snapshot.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Loads a snapshot's values: `None` when it has another vCPU count than this VM.
    pub fn restore(&mut self, state: State) -> Option<()> {
        if state.system_time.len() != self.state.system_time.len() {
            return None;
        }
        self.state = state;
        Some(())
    }
}

/// Writes `body` (whose first four bytes are the version) at `gpa` with the version protocol:
/// the guest's version made odd, the body, then the version even and higher. Nothing is
/// written when the structure is not wholly in RAM.
fn write_versioned(memory: &GuestMemory, gpa: u64, body: &[u8]) -> Outcome {
    let len = body.len() as u64;
    if !memory.contains(gpa, len) {
        return Outcome {
            written: None,
            unbacked: true,
        };
    }
    let mut old = [0u8; 4];
    if memory.read(gpa, &mut old).is_err() {
        return Outcome {
            written: None,
            unbacked: true,
        };
    }
    // Odd (updating), whatever the guest left there; then one higher, even.
    let updating = u32::from_le_bytes(old) | 1;
    let done = updating.wrapping_add(1);
    // `contains` checked the range: these writes cannot fail.
    let _ = memory.write(gpa, &updating.to_le_bytes());
    let _ = memory.write(gpa + 4, &body[4..]);
    let _ = memory.write(gpa, &done.to_le_bytes());
    Outcome {
        written: Some((gpa, len)),
        unbacked: false,
    }
}

#[cfg(test)]
mod tests;
