//! The kernel side of CPU detection: real CPUID and fault-tolerant RDMSR for `keel_vmm::detect`.

use keel_vmm::detect::{CpuProbe, CpuidResult};

use crate::arch::cpu;

/// The boot CPU, probed directly.
pub struct HostCpu;

impl CpuProbe for HostCpu {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        cpu::cpuid(leaf, subleaf)
    }

    fn rdmsr(&self, msr: u32) -> Option<u64> {
        cpu::rdmsr_safe(msr)
    }
}
