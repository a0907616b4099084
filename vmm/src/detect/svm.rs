//! AMD-V detection: the firmware disable in `VM_CR` (APM Vol. 2 §15.30.1) and the SVM feature
//! leaf `CPUID 8000_000Ah` (APM Vol. 3 appendix E.4.9).
//!
//! Keel requires nested paging. NRIP save is recorded but not required: QEMU's software
//! emulation (TCG) lacks it, so the backend computes instruction lengths itself when it is
//! absent (see `docs/TESTING.md`).

use super::{CpuProbe, LeafRange, Unavailable, leaf, msr};

/// `VM_CR` bit 3: `VM_CR.SVMDIS` and `VM_CR.LOCK` can no longer be written.
const VM_CR_LOCK: u64 = 1 << 3;
/// `VM_CR` bit 4: SVMDIS — setting `EFER.SVME` raises #GP.
const VM_CR_SVMDIS: u64 = 1 << 4;

/// `CPUID 8000_000Ah:EDX` bits (APM Vol. 3 appendix E.4.9).
mod edx {
    pub const NP: u32 = 1 << 0;
    pub const LBR_VIRT: u32 = 1 << 1;
    pub const SVM_LOCK: u32 = 1 << 2;
    pub const NRIPS: u32 = 1 << 3;
    pub const TSC_RATE_MSR: u32 = 1 << 4;
    pub const VMCB_CLEAN: u32 = 1 << 5;
    pub const FLUSH_BY_ASID: u32 = 1 << 6;
    pub const DECODE_ASSISTS: u32 = 1 << 7;
    pub const PAUSE_FILTER: u32 = 1 << 10;
    pub const PAUSE_FILTER_THRESHOLD: u32 = 1 << 12;
    pub const AVIC: u32 = 1 << 13;
    pub const VMSAVE_VIRT: u32 = 1 << 15;
    pub const VGIF: u32 = 1 << 16;
}

/// Everything about this CPU's AMD-V that the SVM backend needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvmCapabilities {
    /// SVM revision (`CPUID 8000_000Ah:EAX[7:0]`).
    pub revision: u8,
    /// Number of address-space identifiers (`EBX`); ASID 0 is the host's, so guests get
    /// `1..asid_count`.
    pub asid_count: u32,
    /// Raw feature flags (`EDX`), for bits not broken out below.
    pub features: u32,
    /// Raw `VM_CR`, or `None` when reading it raised #GP (QEMU TCG may not implement it).
    pub vm_cr: Option<u64>,
    /// Nested paging (EDX bit 0). Always true once detection succeeded.
    pub nested_paging: bool,
    /// LBR virtualization (bit 1).
    pub lbr_virt: bool,
    /// SVM lock: `VM_CR.LOCK` and `SVM_KEY` (bit 2).
    pub svm_lock: bool,
    /// Next-RIP save on #VMEXIT (bit 3). Absent under QEMU TCG: the backend then decodes the
    /// instruction to find its length.
    pub nrip_save: bool,
    /// `TSC_RATIO` MSR (bit 4).
    pub tsc_rate_msr: bool,
    /// VMCB clean bits (bit 5).
    pub vmcb_clean: bool,
    /// TLB flush by ASID in `TLB_CONTROL` (bit 6).
    pub flush_by_asid: bool,
    /// Decode assists (bit 7).
    pub decode_assists: bool,
    /// PAUSE intercept filter count (bit 10).
    pub pause_filter: bool,
    /// PAUSE filter cycle threshold (bit 12).
    pub pause_filter_threshold: bool,
    /// AMD virtual interrupt controller (bit 13).
    pub avic: bool,
    /// VMSAVE/VMLOAD virtualization (bit 15).
    pub vmsave_virt: bool,
    /// Virtualized global interrupt flag (bit 16).
    pub vgif: bool,
}

impl SvmCapabilities {
    fn from_leaf(eax: u32, ebx: u32, edx: u32, vm_cr: Option<u64>) -> Self {
        let has = |bit: u32| edx & bit != 0;
        SvmCapabilities {
            revision: (eax & 0xFF) as u8,
            asid_count: ebx,
            features: edx,
            vm_cr,
            nested_paging: has(edx::NP),
            lbr_virt: has(edx::LBR_VIRT),
            svm_lock: has(edx::SVM_LOCK),
            nrip_save: has(edx::NRIPS),
            tsc_rate_msr: has(edx::TSC_RATE_MSR),
            vmcb_clean: has(edx::VMCB_CLEAN),
            flush_by_asid: has(edx::FLUSH_BY_ASID),
            decode_assists: has(edx::DECODE_ASSISTS),
            pause_filter: has(edx::PAUSE_FILTER),
            pause_filter_threshold: has(edx::PAUSE_FILTER_THRESHOLD),
            avic: has(edx::AVIC),
            vmsave_virt: has(edx::VMSAVE_VIRT),
            vgif: has(edx::VGIF),
        }
    }

    /// Whether `VM_CR.LOCK` is set (the firmware fixed the SVMDIS setting).
    pub fn vm_cr_locked(&self) -> bool {
        self.vm_cr.is_some_and(|v| v & VM_CR_LOCK != 0)
    }
}

/// Checks AMD-V on a CPU whose `CPUID 8000_0001h:ECX[2]` is set.
pub(super) fn probe(
    cpu: &impl CpuProbe,
    leaves: &LeafRange,
) -> Result<SvmCapabilities, Unavailable> {
    // APM §15.30.1: with SVMDIS set, setting EFER.SVME raises #GP. An MSR that cannot be read
    // (emulators) is taken as "not disabled"; the backend will find out when it sets SVME.
    let vm_cr = cpu.rdmsr(msr::VM_CR);
    if vm_cr.is_some_and(|v| v & VM_CR_SVMDIS != 0) {
        return Err(Unavailable::SvmDisabledByFirmware);
    }

    // A CPU whose extended leaves stop below 8000_000Ah cannot report nested paging.
    let r = leaves.cpuid(cpu, leaf::SVM_FEATURES, 0);
    let caps = SvmCapabilities::from_leaf(r.eax, r.ebx, r.edx, vm_cr);
    if !caps.nested_paging {
        return Err(Unavailable::SvmMissingNestedPaging);
    }
    Ok(caps)
}
