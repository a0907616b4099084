//! The CPUID view guests get: the host's leaves, filtered to what Keel virtualizes.
//!
//! [`CpuidPolicy::from_host`] snapshots the host's CPUID leaves once (basic, extended, and the
//! subleaves of the indexed leaves 4, 7, 0xB and 0xD); backends answer every guest `CPUID`
//! from [`CpuidPolicy::query`] without executing the instruction again.
//!
//! The filter follows one rule: **a guest is told only about features that work without help
//! Keel does not give yet.** A feature is hidden when it needs
//!
//! - state Keel does not context-switch or expose (XSAVE and everything using the YMM/ZMM,
//!   AMX, MPX, PKRU or CET state components — `XCR0` is not virtualized),
//! - an MSR outside Keel's allow list (see [`msr`](crate::msr)): the guest's access would
//!   raise #GP,
//! - an execution control a backend may leave off (INVPCID and RDTSCP/RDPID under VMX, which
//!   otherwise raise #UD),
//! - nested virtualization (VMX, SVM) or platform security (SMX, SGX, SKINIT, SEV).
//!
//! Leaves 1 and 0x8000_0001's legacy bits use a *hide list*; the leaves that gain new bits
//! with every CPU generation (7, 0x8000_0001 ECX/EDX, 0x8000_0007/8) use an *allow list*, so a
//! newer host CPU never shows a guest a feature nobody has checked. Each constant below names
//! its bits and why.
//!
//! The topology is one logical processor: APIC ID = the vCPU id, one thread, one core (leaves
//! 1, 4 and 0xB; AMD's core count and topology extensions are hidden).
//!
//! The hypervisor leaves say "Keel": `0x4000_0000` returns the highest hypervisor leaf and the
//! signature [`SIGNATURE`] in EBX, ECX, EDX (the way KVM returns `"KVMKVMKVM\0\0\0"`);
//! `0x4000_0001` (paravirtual features) is all zeros, and `0x4000_0010` is the timing leaf.
//!
//! With [`Paravirt::Kvm`] (a VM's `cpuid.paravirt`, the default in the configuration) KVM's
//! interface follows at `0x4000_0100`: KVM's signature, and at `0x4000_0101` the features
//! Keel implements — kvm-clock ([`pvclock`](crate::pvclock)). Linux looks for KVM's signature
//! from 0x4000_0000 up in steps of 0x100, as when KVM offers Hyper-V's interface first. With
//! [`Paravirt::None`] those leaves read as zeros and the kvm-clock MSRs raise #GP.

use alloc::vec::Vec;

use crate::detect::{CpuProbe, CpuidResult};

/// The hypervisor signature in `CPUID.4000_0000h:EBX,ECX,EDX` (little-endian 4-byte groups).
pub const SIGNATURE: [u8; 12] = *b"KeelKeelKeel";

/// First hypervisor leaf: highest hypervisor leaf in EAX, [`SIGNATURE`] in EBX/ECX/EDX.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// Keel's paravirtual feature leaf (no features yet).
pub const HYPERVISOR_FEATURES_LEAF: u32 = 0x4000_0001;
/// The timing leaf (the layout VMware introduced and others copied): EAX = the TSC frequency
/// in kHz, EBX = the local APIC timer's clock in kHz, so a guest need not calibrate either.
pub const TIMING_LEAF: u32 = 0x4000_0010;
/// The local APIC timer's clock, which leaf 0x15 also reports as the "crystal": 25 MHz, as on
/// many Intel parts. Fast enough for Linux's LAPIC timer calibration on guests that measure it
/// (Linux refuses an APIC clock below 1 MHz × HZ / 1000 ticks per jiffy), and small enough that
/// Linux's 32-bit `crystal_khz × EBX` in leaf 0x15 cannot overflow (see [`tsc_ratio`]).
pub const LAPIC_BUS_KHZ: u32 = 25_000;

/// Leaf 0x15's (EAX, EBX) for a TSC of `tsc_khz` over the [`LAPIC_BUS_KHZ`] crystal: the
/// largest denominator for which `crystal_khz × EBX` stays below 2^32 (Linux multiplies in
/// 32 bits), so the TSC comes out as `crystal_khz × EBX / EAX` within `crystal / EAX` (a few
/// ppm for today's clocks).
pub fn tsc_ratio(tsc_khz: u32) -> (u32, u32) {
    let max_ebx = u64::from(u32::MAX / LAPIC_BUS_KHZ);
    let crystal = u64::from(LAPIC_BUS_KHZ);
    let tsc = u64::from(tsc_khz.max(1));
    let eax = (max_ebx * crystal / tsc).clamp(1, u64::from(u32::MAX));
    let ebx = ((tsc * eax + crystal / 2) / crystal).min(max_ebx);
    (eax as u32, ebx as u32)
}

/// Bytes `i..i + 4` of a 12-byte hypervisor signature as a register (little-endian).
fn signature_word(signature: &[u8; 12], i: usize) -> u32 {
    u32::from_le_bytes([
        signature[i],
        signature[i + 1],
        signature[i + 2],
        signature[i + 3],
    ])
}

/// First extended leaf (highest extended leaf in EAX).
const EXT_BASE: u32 = 0x8000_0000;

/// Highest basic leaf Keel snapshots and reports (today's CPUs stop below 0x30).
const BASIC_LIMIT: u32 = 0x3F;
/// Highest extended leaf Keel snapshots and reports.
const EXT_LIMIT: u32 = 0x8000_003F;
/// Most subleaves read for an indexed leaf.
const SUBLEAF_LIMIT: u32 = 64;

/// `CPUID.1:ECX` bits hidden from guests (SDM Vol. 2A table 3-10).
pub mod leaf1_ecx {
    /// Bit 2, DTES64: 64-bit debug store; `IA32_DS_AREA` is not emulated.
    pub const DTES64: u32 = 1 << 2;
    /// Bit 3, MONITOR: MONITOR/MWAIT would let a guest idle without exiting (and leaf 5 is
    /// hidden).
    pub const MONITOR: u32 = 1 << 3;
    /// Bit 4, DS-CPL: CPL-qualified debug store (needs the debug store).
    pub const DS_CPL: u32 = 1 << 4;
    /// Bit 5, VMX: no nested virtualization.
    pub const VMX: u32 = 1 << 5;
    /// Bit 6, SMX: GETSEC/TXT is not for guests.
    pub const SMX: u32 = 1 << 6;
    /// Bit 7, EST: Enhanced SpeedStep; `IA32_PERF_CTL`/`IA32_PERF_STATUS` are not emulated.
    pub const EST: u32 = 1 << 7;
    /// Bit 8, TM2: thermal monitor 2; the thermal MSRs are not emulated.
    pub const TM2: u32 = 1 << 8;
    /// Bit 11, SDBG: `IA32_DEBUG_INTERFACE` is not emulated.
    pub const SDBG: u32 = 1 << 11;
    /// Bit 12, FMA: VEX-encoded on YMM registers; needs AVX state.
    pub const FMA: u32 = 1 << 12;
    /// Bit 14, xTPR update control: `IA32_MISC_ENABLE[23]` has no effect here.
    pub const XTPR: u32 = 1 << 14;
    /// Bit 15, PDCM: `IA32_PERF_CAPABILITIES` is not emulated (no PMU).
    pub const PDCM: u32 = 1 << 15;
    /// Bit 18, DCA: direct cache access; `IA32_PLATFORM_DCA_CAP` is not emulated.
    pub const DCA: u32 = 1 << 18;
    /// Bit 21, x2APIC: hidden from the host's view; shown with the PC platform (like
    /// TSC-deadline below), whose local APIC model implements the x2APIC MSRs.
    pub const X2APIC: u32 = 1 << 21;
    /// Bit 24, TSC-deadline: hidden from the host's view; shown (whatever the host has, as
    /// the local APIC model implements it) only when the policy knows the guest's TSC
    /// frequency ([`CpuidPolicy::with_tsc_hz`](super::CpuidPolicy::with_tsc_hz)), since the
    /// model converts deadlines with it.
    pub const TSC_DEADLINE: u32 = 1 << 24;
    /// Bit 26, XSAVE: `XCR0` and the XSAVE area are not virtualized.
    pub const XSAVE: u32 = 1 << 26;
    /// Bit 27, OSXSAVE: mirrors CR4.OSXSAVE, which a guest cannot set without XSAVE.
    pub const OSXSAVE: u32 = 1 << 27;
    /// Bit 28, AVX: YMM state needs XSAVE.
    pub const AVX: u32 = 1 << 28;
    /// Bit 29, F16C: VEX-encoded on YMM registers; needs AVX state.
    pub const F16C: u32 = 1 << 29;
    /// Bit 31: reserved on hardware, set by hypervisors ("hypervisor present").
    pub const HYPERVISOR: u32 = 1 << 31;

    /// Everything hidden.
    pub const HIDDEN: u32 = DTES64
        | MONITOR
        | DS_CPL
        | VMX
        | SMX
        | EST
        | TM2
        | SDBG
        | FMA
        | XTPR
        | PDCM
        | DCA
        | X2APIC
        | TSC_DEADLINE
        | XSAVE
        | OSXSAVE
        | AVX
        | F16C;
}

/// `CPUID.1:EDX` bits hidden from guests (SDM Vol. 2A table 3-11).
pub mod leaf1_edx {
    /// Bit 7, MCE: machine-check MSRs (`IA32_MCG_*`, `IA32_MCi_*`) are not emulated.
    pub const MCE: u32 = 1 << 7;
    /// Bit 14, MCA: as MCE.
    pub const MCA: u32 = 1 << 14;
    /// Bit 18, PSN: processor serial number (leaf 3 is hidden).
    pub const PSN: u32 = 1 << 18;
    /// Bit 21, DS: debug store; `IA32_DS_AREA` is not emulated.
    pub const DS: u32 = 1 << 21;
    /// Bit 22, ACPI: thermal monitor and clock control MSRs are not emulated.
    pub const ACPI: u32 = 1 << 22;
    /// Bit 28, HTT: one logical processor per package.
    pub const HTT: u32 = 1 << 28;
    /// Bit 29, TM: thermal monitor; the thermal MSRs are not emulated.
    pub const TM: u32 = 1 << 29;
    /// Bit 31, PBE: pending break enable (thermal monitor).
    pub const PBE: u32 = 1 << 31;

    /// Everything hidden.
    pub const HIDDEN: u32 = MCE | MCA | PSN | DS | ACPI | HTT | TM | PBE;
}

/// `CPUID.(EAX=7,ECX=0)` bits guests may see (SDM Vol. 2A table 3-8); every other bit is
/// cleared. Notably hidden: TSC_ADJUST (EBX 1, MSR not emulated), SGX (EBX 2), AVX2 (EBX 5),
/// INVPCID (EBX 10, needs a VMX control), RDT (EBX 12, 15), MPX (EBX 14), every AVX-512 bit
/// (EBX 16, 17, 21, 26-28, 30, 31; ECX 1, 6, 11, 12, 14; EDX 2, 3, 8, 23), Intel PT (EBX 25),
/// PKU/OSPKE (ECX 3, 4), WAITPKG (ECX 5), CET (ECX 7, EDX 20), VAES/VPCLMULQDQ (ECX 9, 10),
/// LA57 (ECX 16: guests keep 4-level paging, which the guest page walker handles), RDPID
/// (ECX 22), AMX (EDX 22, 24, 25), and the speculation-control MSR bits (EDX 26-31).
pub mod leaf7 {
    /// EBX bit 0 FSGSBASE, 3 BMI1, 4 HLE, 6 FDP_EXCPTN_ONLY, 7 SMEP, 8 BMI2, 9 ERMS, 11 RTM,
    /// 13 FPU CS/DS deprecation, 18 RDSEED, 19 ADX, 20 SMAP, 23 CLFLUSHOPT, 24 CLWB, 29 SHA.
    pub const EBX_ALLOWED: u32 = 1
        | 1 << 3
        | 1 << 4
        | 1 << 6
        | 1 << 7
        | 1 << 8
        | 1 << 9
        | 1 << 11
        | 1 << 13
        | 1 << 18
        | 1 << 19
        | 1 << 20
        | 1 << 23
        | 1 << 24
        | 1 << 29;
    /// ECX bit 0 PREFETCHWT1, 2 UMIP, 8 GFNI (its SSE forms need no XSAVE state), 25 CLDEMOTE,
    /// 27 MOVDIRI, 28 MOVDIR64B.
    pub const ECX_ALLOWED: u32 = 1 | 1 << 2 | 1 << 8 | 1 << 25 | 1 << 27 | 1 << 28;
    /// EDX bit 4 FSRM (fast short REP MOV), 10 MD_CLEAR (VERW clears buffers), 14 SERIALIZE.
    pub const EDX_ALLOWED: u32 = 1 << 4 | 1 << 10 | 1 << 14;
    /// EBX bit 5: AVX2.
    pub const EBX_AVX2: u32 = 1 << 5;
    /// EBX bit 16: AVX512F.
    pub const EBX_AVX512F: u32 = 1 << 16;
}

/// `CPUID.8000_0001h` bits guests may see (APM Vol. 3 appendix E.4.2; SDM Vol. 2A table 3-8).
/// Notably hidden in ECX: CmpLegacy (1, one core), SVM (2), ExtApicSpace (3), AltMovCr8 (4),
/// OSVW (9), IBS (10), XOP (11, needs AVX state), SKINIT (12), WDT (13), LWP (15), FMA4 (16),
/// TCE (17, an EFER bit Keel does not allow), NodeId (19), TopoExt (22), the performance
/// counter extensions (23, 24, 28), DataBkptExt (26), PerfTsc (27), MONITORX (29). In EDX:
/// MCE/MCA (7, 14), FFXSR (25, an EFER bit Keel does not allow), RDTSCP (27, needs
/// `IA32_TSC_AUX` and a VMX control).
pub mod ext1 {
    /// ECX bit 0 LAHF/SAHF in 64-bit mode, 5 ABM (LZCNT), 6 SSE4A, 7 MisAlignSse,
    /// 8 3DNowPrefetch, 21 TBM.
    pub const ECX_ALLOWED: u32 = 1 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 21;
    /// EDX bits 0-6 (FPU, VME, DE, PSE, TSC, MSR, PAE), 8 CX8, 9 APIC, 11 SYSCALL, 12 MTRR,
    /// 13 PGE, 15 CMOV, 16 PAT, 17 PSE36, 20 NX, 22 MmxExt, 23 MMX, 24 FXSR, 26 Page1GB,
    /// 29 LM, 30 3DNowExt, 31 3DNow.
    pub const EDX_ALLOWED: u32 = 0x7F
        | 1 << 8
        | 1 << 9
        | 1 << 11
        | 1 << 12
        | 1 << 13
        | 1 << 15
        | 1 << 16
        | 1 << 17
        | 1 << 20
        | 1 << 22
        | 1 << 23
        | 1 << 24
        | 1 << 26
        | 1 << 29
        | 1 << 30
        | 1 << 31;
    /// ECX bit 2: SVM.
    pub const ECX_SVM: u32 = 1 << 2;
    /// ECX bit 12: SKINIT/STGI.
    pub const ECX_SKINIT: u32 = 1 << 12;
}

/// `CPUID.8000_0007h:EDX` bit 8: invariant TSC, the only power-management bit guests see
/// (the others announce P-state and RAS MSRs Keel does not emulate).
const EXT7_EDX_INVARIANT_TSC: u32 = 1 << 8;

/// `CPUID.4:EAX` bits 31:14 (cores per package - 1, threads sharing the cache - 1): cleared
/// for a one-processor topology.
const LEAF4_EAX_TOPOLOGY: u32 = 0xFFFF_C000;

/// Leaves whose ECX input selects a subleaf (SDM Vol. 2A "CPUID"), so that a subleaf Keel did
/// not snapshot reads as zeros instead of as subleaf 0.
fn has_subleaves(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7
            | 0xB
            | 0xD
            | 0xF
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1D
            | 0x1F
            | 0x8000_001D
            | 0x8000_0020
            | 0x8000_0026
    )
}

/// Which paravirtual interface a VM's guests see besides Keel's own leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Paravirt {
    /// None: leaves 0x4000_0100 and up read as zeros.
    #[default]
    None,
    /// KVM's: signature at 0x4000_0100, kvm-clock in the features at 0x4000_0101.
    Kvm,
}

/// One snapshotted `CPUID` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    leaf: u32,
    subleaf: u32,
    result: CpuidResult,
}

/// The host's CPUID leaves and the filtered view guests get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// Sorted by (leaf, subleaf).
    entries: Vec<Entry>,
    /// Highest basic leaf reported (host maximum, capped at [`BASIC_LIMIT`]).
    max_basic: u32,
    /// Highest extended leaf reported (0 when the host has none).
    max_extended: u32,
    /// The guest's TSC frequency in kHz, when known (enables TSC-deadline and the timing
    /// leaf).
    tsc_khz: Option<u32>,
    /// The vCPU this policy answers for: its APIC id (leaf 1 EBX[31:24], leaf 0xB EDX).
    vcpu_id: u32,
    /// The paravirtual interface offered.
    paravirt: Paravirt,
}

impl CpuidPolicy {
    /// Snapshots the host's leaves through `cpu`: every basic leaf up to the host's maximum,
    /// every extended leaf up to its maximum, and the subleaves of leaves 4 (until the null
    /// cache type), 7 (up to the count in subleaf 0), 0xB (until the invalid level) and 0xD
    /// (0, 1 and each state component announced there). Runs `CPUID` a few hundred times at
    /// most; call it once per host and share the result between vCPUs.
    pub fn from_host(cpu: &impl CpuProbe) -> CpuidPolicy {
        let max_basic = cpu.cpuid(0, 0).eax.min(BASIC_LIMIT);
        let ext = cpu.cpuid(EXT_BASE, 0).eax;
        // Without extended leaves, 8000_0000h returns garbage: only 8000_xxxxh is a maximum.
        let max_extended = if ext & 0xFFFF_0000 == EXT_BASE {
            ext.min(EXT_LIMIT)
        } else {
            0
        };

        let mut entries = Vec::new();
        let mut push = |leaf: u32, subleaf: u32| {
            let result = cpu.cpuid(leaf, subleaf);
            entries.push(Entry {
                leaf,
                subleaf,
                result,
            });
            result
        };
        for leaf in 0..=max_basic {
            let first = push(leaf, 0);
            match leaf {
                // Deterministic cache parameters: until cache type (EAX[4:0]) 0.
                0x4 => {
                    let mut r = first;
                    let mut sub = 1;
                    while r.eax & 0x1F != 0 && sub < SUBLEAF_LIMIT {
                        r = push(leaf, sub);
                        sub += 1;
                    }
                }
                // Structured extended features: EAX of subleaf 0 is the highest subleaf.
                0x7 => {
                    for sub in 1..=first.eax.min(SUBLEAF_LIMIT - 1) {
                        push(leaf, sub);
                    }
                }
                // Extended topology: until level type (ECX[15:8]) 0.
                0xB => {
                    let mut r = first;
                    let mut sub = 1;
                    while r.ecx & 0xFF00 != 0 && sub < SUBLEAF_LIMIT {
                        r = push(leaf, sub);
                        sub += 1;
                    }
                }
                // XSAVE: subleaf 1, then one subleaf per supported state component (XCR0
                // bits in subleaf 0 EDX:EAX, IA32_XSS bits in subleaf 1 EDX:ECX).
                0xD => {
                    let one = push(leaf, 1);
                    let components = u64::from(first.eax)
                        | u64::from(first.edx) << 32
                        | u64::from(one.ecx)
                        | u64::from(one.edx) << 32;
                    for sub in 2..SUBLEAF_LIMIT - 1 {
                        if components & (1 << sub) != 0 {
                            push(leaf, sub);
                        }
                    }
                }
                _ => {}
            }
        }
        if max_extended != 0 {
            for leaf in EXT_BASE..=max_extended {
                push(leaf, 0);
            }
        }
        entries.sort_by_key(|e| (e.leaf, e.subleaf));

        CpuidPolicy {
            entries,
            max_basic,
            max_extended,
            tsc_khz: None,
            vcpu_id: 0,
            paravirt: Paravirt::None,
        }
    }

    /// The same policy offering `paravirt` (no paravirtual interface by default).
    pub fn with_paravirt(mut self, paravirt: Paravirt) -> CpuidPolicy {
        self.paravirt = paravirt;
        self
    }

    /// The paravirtual interface the policy offers.
    pub fn paravirt(&self) -> Paravirt {
        self.paravirt
    }

    /// KVM's features (leaf 0x4000_0101 EAX) guests see: kvm-clock, stable, when the policy
    /// offers KVM's interface and knows the TSC rate (the clock's scale comes from it); else
    /// none. The VM loop answers the kvm-clock MSRs exactly when this has
    /// [`KVM_FEATURE_CLOCKSOURCE2`](crate::pvclock::KVM_FEATURE_CLOCKSOURCE2).
    pub fn kvm_features(&self) -> u32 {
        match (self.paravirt, self.tsc_khz) {
            (Paravirt::Kvm, Some(_)) => crate::pvclock::KVM_FEATURES,
            _ => 0,
        }
    }

    /// The same policy for the vCPU with APIC id `id` (0, the BSP, by default).
    pub fn with_vcpu_id(mut self, id: u32) -> CpuidPolicy {
        self.vcpu_id = id;
        self
    }

    /// The vCPU (APIC id) this policy answers for.
    pub fn vcpu_id(&self) -> u32 {
        self.vcpu_id
    }

    /// The same policy for guests whose TSC runs at `hz`: CPUID then shows the TSC-deadline
    /// timer and answers the [`TIMING_LEAF`]. Frequencies below 1 kHz or above 4 THz are
    /// ignored.
    pub fn with_tsc_hz(mut self, hz: u64) -> CpuidPolicy {
        self.tsc_khz = u32::try_from(hz / 1000).ok().filter(|&khz| khz > 0);
        self
    }

    /// The host's own answer for `(leaf, subleaf)` as snapshotted, unfiltered; `None` when the
    /// leaf was not read (beyond the host's maximum, or a subleaf not enumerated). Leaves
    /// without subleaves ignore `subleaf`.
    pub fn host(&self, leaf: u32, subleaf: u32) -> Option<CpuidResult> {
        let subleaf = if has_subleaves(leaf) { subleaf } else { 0 };
        self.entries
            .binary_search_by_key(&(leaf, subleaf), |e| (e.leaf, e.subleaf))
            .ok()
            .map(|i| self.entries[i].result)
    }

    /// Highest basic leaf guests see: the host's, raised to 0x15 when the TSC rate is
    /// known (the leaves in between read as zeros).
    pub fn max_basic_leaf(&self) -> u32 {
        if self.tsc_khz.is_some() {
            self.max_basic.max(0x15)
        } else {
            self.max_basic
        }
    }

    /// Highest extended leaf guests see (0 when the host has no extended leaves).
    pub fn max_extended_leaf(&self) -> u32 {
        self.max_extended
    }

    /// What the guest's `CPUID` with `EAX = leaf`, `ECX = subleaf` returns on vCPU `vcpu_id`
    /// (which is also its APIC ID). Leaves the host does not have, leaves Keel hides, and
    /// unknown ranges return all zeros (as AMD CPUs do; Intel CPUs would repeat the highest
    /// basic leaf, which only confuses guests).
    ///
    /// ```
    /// use keel_vmm::cpuid::{CpuidPolicy, SIGNATURE};
    /// use keel_vmm::detect::{CpuProbe, CpuidResult};
    ///
    /// struct NoLeaves;
    /// impl CpuProbe for NoLeaves {
    ///     fn cpuid(&self, _: u32, _: u32) -> CpuidResult {
    ///         CpuidResult::default()
    ///     }
    ///     fn rdmsr(&self, _: u32) -> Option<u64> {
    ///         None
    ///     }
    /// }
    ///
    /// let policy = CpuidPolicy::from_host(&NoLeaves);
    /// let sig = policy.query(0x4000_0000, 0, 0);
    /// assert_eq!(sig.eax, 0x4000_0001);
    /// assert_eq!(sig.ebx.to_le_bytes(), SIGNATURE[..4]);
    /// ```
    pub fn query(&self, leaf: u32, subleaf: u32, vcpu_id: u32) -> CpuidResult {
        let zero = CpuidResult::default();
        let host = || self.host(leaf, subleaf).unwrap_or_default();
        match leaf {
            0 => CpuidResult {
                eax: self.max_basic_leaf(),
                ..host()
            },
            1 => {
                let r = host();
                CpuidResult {
                    eax: r.eax,
                    // [31:24] initial APIC ID, [23:16] logical processors per package (1),
                    // [15:0] CLFLUSH line size and brand index.
                    ebx: (r.ebx & 0xFFFF) | 1 << 16 | (vcpu_id & 0xFF) << 24,
                    ecx: (r.ecx & !leaf1_ecx::HIDDEN)
                        | leaf1_ecx::HYPERVISOR
                        | self.leaf1_ecx_added(),
                    edx: r.edx & !leaf1_edx::HIDDEN,
                }
            }
            // With the TSC rate known: the 25 MHz "crystal" (the local APIC timer's clock) and
            // the TSC/crystal ratio, so an Intel-vendor guest takes its TSC frequency from
            // here instead of calibrating (Linux trusts leaf 0x15 on Intel only).
            0x15 => match self.tsc_khz {
                Some(khz) => {
                    let (eax, ebx) = tsc_ratio(khz);
                    CpuidResult {
                        eax,
                        ebx,
                        ecx: LAPIC_BUS_KHZ * 1000,
                        edx: 0,
                    }
                }
                None => host(),
            },
            // Cache and TLB descriptors; TSC/crystal clock ratio; processor frequencies.
            0x2 | 0x16 => host(),
            0x4 => {
                let r = host();
                CpuidResult {
                    eax: r.eax & !LEAF4_EAX_TOPOLOGY,
                    ..r
                }
            }
            // Only subleaf 0 is shown, and it says so in EAX.
            0x7 if subleaf == 0 => {
                let r = host();
                CpuidResult {
                    eax: 0,
                    ebx: r.ebx & leaf7::EBX_ALLOWED,
                    ecx: r.ecx & leaf7::ECX_ALLOWED,
                    edx: r.edx & leaf7::EDX_ALLOWED,
                }
            }
            0xB if leaf <= self.max_basic => Self::topology(subleaf, vcpu_id),
            HYPERVISOR_LEAF => {
                let word = |i: usize| signature_word(&SIGNATURE, i);
                CpuidResult {
                    eax: if self.tsc_khz.is_some() {
                        TIMING_LEAF
                    } else {
                        HYPERVISOR_FEATURES_LEAF
                    },
                    ebx: word(0),
                    ecx: word(4),
                    edx: word(8),
                }
            }
            TIMING_LEAF => match self.tsc_khz {
                Some(khz) => CpuidResult {
                    eax: khz,
                    ebx: LAPIC_BUS_KHZ,
                    ..zero
                },
                None => zero,
            },
            crate::pvclock::KVM_SIGNATURE_LEAF if self.paravirt == Paravirt::Kvm => {
                let word = |i: usize| signature_word(&crate::pvclock::KVM_SIGNATURE, i);
                CpuidResult {
                    eax: crate::pvclock::KVM_FEATURES_LEAF,
                    ebx: word(0),
                    ecx: word(4),
                    edx: word(8),
                }
            }
            // Features in EAX; no hints in EDX.
            crate::pvclock::KVM_FEATURES_LEAF if self.paravirt == Paravirt::Kvm => CpuidResult {
                eax: self.kvm_features(),
                ..zero
            },
            EXT_BASE if self.max_extended != 0 => CpuidResult {
                eax: self.max_extended,
                ..host()
            },
            0x8000_0001 => {
                let r = host();
                CpuidResult {
                    ecx: r.ecx & ext1::ECX_ALLOWED,
                    edx: r.edx & ext1::EDX_ALLOWED,
                    ..r
                }
            }
            // Brand string; AMD L1 and L2/L3 cache and TLB descriptions; 1 GiB-page TLB
            // description; AMD performance optimization hints.
            0x8000_0002..=0x8000_0006 | 0x8000_0019 | 0x8000_001A => host(),
            0x8000_0007 => CpuidResult {
                edx: host().edx & EXT7_EDX_INVARIANT_TSC,
                ..zero
            },
            // Address sizes only; the feature bits in EBX and the core counts in ECX are
            // hidden.
            0x8000_0008 => CpuidResult {
                eax: host().eax,
                ..zero
            },
            // Everything else: hidden basic leaves (3, 5, 6, 0xA, 0xD, ...), the rest of the
            // hypervisor range, hidden extended leaves (0x8000_000A SVM, 0x8000_001E
            // topology, 0x8000_001F SEV, ...), and leaves nobody has.
            _ => zero,
        }
    }

    /// Leaf 1 ECX bits Keel emulates whatever the host has, once the policy is for the PC
    /// platform (the TSC frequency is known): the local APIC model's x2APIC mode and
    /// TSC-deadline timer.
    fn leaf1_ecx_added(&self) -> u32 {
        if self.tsc_khz.is_some() {
            leaf1_ecx::TSC_DEADLINE | leaf1_ecx::X2APIC
        } else {
            0
        }
    }

    /// Leaf 0xB for one logical processor: an SMT level and a core level with one processor
    /// each, then the invalid level; EDX is the x2APIC ID (SDM Vol. 2A table 3-8, leaf 0BH).
    fn topology(subleaf: u32, vcpu_id: u32) -> CpuidResult {
        const LEVEL_SMT: u32 = 1 << 8;
        const LEVEL_CORE: u32 = 2 << 8;
        let (ebx, level) = match subleaf {
            0 => (1, LEVEL_SMT),
            1 => (1, LEVEL_CORE),
            _ => (0, 0),
        };
        CpuidResult {
            eax: 0,
            ebx,
            ecx: level | (subleaf & 0xFF),
            edx: vcpu_id,
        }
    }
}

#[cfg(test)]
mod tests;
