//! The guest's model-specific registers: an allow list, emulated per vCPU.
//!
//! Backends intercept `RDMSR`/`WRMSR` and split them three ways:
//!
//! 1. [`hardware_passthrough`] MSRs live in the guest state the CPU switches on VM entry and
//!    exit (VMCS guest-state area / VMCB save area) and are not intercepted at all.
//! 2. The MSRs below are emulated by [`MsrState`]: [`MsrState::read`] answers, and
//!    [`MsrState::write`] validates and stores, returning an [`MsrEffect`] when the backend
//!    must update its hardware guest state too (EFER, PAT, the TSC offset).
//! 3. Everything else raises #GP in the guest, as a CPU without that MSR would
//!    ([`MsrFault::Gp`]; the backend injects it and counts it in
//!    [`InternalExits::injected`](crate::vcpu::InternalExits::injected)).
//!
//! Names and layouts are from the Intel SDM Vol. 4 ("Model-Specific Registers") and the AMD
//! APM Vol. 2 appendix A. Pure logic: the caller supplies the host TSC.

use core::fmt;

/// `IA32_TIME_STAMP_COUNTER` (SDM Vol. 4 table 2-2): the TSC.
pub const IA32_TSC: u32 = 0x10;
/// `IA32_PLATFORM_ID`: platform type for microcode selection; read-only.
pub const IA32_PLATFORM_ID: u32 = 0x17;
/// `IA32_APIC_BASE`: local APIC base address, enable and BSP flag.
pub const IA32_APIC_BASE: u32 = 0x1B;
/// `IA32_BIOS_SIGN_ID`: microcode update signature.
pub const IA32_BIOS_SIGN_ID: u32 = 0x8B;
/// `IA32_MTRRCAP`: MTRR capabilities; read-only.
pub const IA32_MTRRCAP: u32 = 0xFE;
/// `IA32_SYSENTER_CS`: SYSENTER target code segment.
pub const IA32_SYSENTER_CS: u32 = 0x174;
/// `IA32_SYSENTER_ESP`: SYSENTER target stack pointer.
pub const IA32_SYSENTER_ESP: u32 = 0x175;
/// `IA32_SYSENTER_EIP`: SYSENTER target instruction pointer.
pub const IA32_SYSENTER_EIP: u32 = 0x176;
/// `IA32_MISC_ENABLE`: miscellaneous feature enables.
pub const IA32_MISC_ENABLE: u32 = 0x1A0;
/// `IA32_TSC_DEADLINE`: the local APIC timer's TSC-deadline target (owned by the LAPIC
/// model, see [`platform_owned`]).
pub const IA32_TSC_DEADLINE: u32 = crate::devices::lapic::IA32_TSC_DEADLINE;
/// `IA32_PAT`: page attribute table.
pub const IA32_PAT: u32 = 0x277;
/// `IA32_MTRR_DEF_TYPE`: default memory type and MTRR enables.
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
/// `MSR_K8_INT_PENDING_MSG` (AMD family 0Fh/10h BKDG): "interrupt pending message"; Linux
/// reads it on CPUs with erratum 400 (the QEMU `qemu64` model is family 0Fh) to see whether
/// C1E is enabled. Keel has no C1E: it reads 0 and writes are ignored, as on KVM.
pub const MSR_K8_INT_PENDING_MSG: u32 = 0xC001_0055;
/// AMD's legacy performance counters (APM Vol. 2 §13.2; every AMD64 CPU has them, with no
/// CPUID bit): `PerfEvtSel0..3` at 0xC001_0000..=0xC001_0003 and `PerfCtr0..3` at
/// 0xC001_0004..=0xC001_0007. Keel offers no performance monitoring, so these read 0 and
/// writes are dropped, as under KVM without a virtual PMU: guests that reset the counters
/// at start-up (Linux's perf probe, kvm-unit-tests' `pmu_init`) work, and nothing counts.
pub const AMD_LEGACY_PERF: core::ops::RangeInclusive<u32> = 0xC001_0000..=0xC001_0007;
/// `IA32_EFER`: extended feature enables.
pub const IA32_EFER: u32 = 0xC000_0080;
/// `IA32_STAR`: SYSCALL/SYSRET segment selectors and legacy-mode target.
pub const IA32_STAR: u32 = 0xC000_0081;
/// `IA32_LSTAR`: SYSCALL target in 64-bit mode.
pub const IA32_LSTAR: u32 = 0xC000_0082;
/// `CSTAR` (APM; reserved in the SDM): SYSCALL target in compatibility mode.
pub const IA32_CSTAR: u32 = 0xC000_0083;
/// `IA32_FMASK` (`SFMASK` in the APM): RFLAGS mask for SYSCALL.
pub const IA32_FMASK: u32 = 0xC000_0084;
/// `IA32_FS_BASE`: FS segment base.
pub const IA32_FS_BASE: u32 = 0xC000_0100;
/// `IA32_GS_BASE`: GS segment base.
pub const IA32_GS_BASE: u32 = 0xC000_0101;
/// `IA32_KERNEL_GS_BASE`: the GS base SWAPGS exchanges.
pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// `IA32_MISC_ENABLE` bit 0: fast-string enable.
pub const MISC_ENABLE_FAST_STRINGS: u64 = 1;

/// `IA32_PAT` at power-up: WB, WT, UC-, UC, WB, WT, UC-, UC (SDM Vol. 3A §13.12.4).
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// `IA32_EFER` bit 0: SYSCALL enable.
pub const EFER_SCE: u64 = 1 << 0;
/// `IA32_EFER` bit 8: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// `IA32_EFER` bit 10: long mode active (set by the CPU).
pub const EFER_LMA: u64 = 1 << 10;
/// `IA32_EFER` bit 11: no-execute enable.
pub const EFER_NXE: u64 = 1 << 11;
/// `IA32_EFER` bit 12: SVM enable (AMD). Hidden from guests: the SVM backend sets it in the
/// hardware copy, and no guest may use SVM.
pub const EFER_SVME: u64 = 1 << 12;
/// The EFER bits a guest may set. Others (SVME, LMSLE, FFXSR, TCE and reserved bits) raise
/// #GP on write.
pub const EFER_GUEST_BITS: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;

/// `IA32_MTRR_DEF_TYPE` bits 7:0: default memory type.
const MTRR_DEF_TYPE_TYPE: u64 = 0xFF;
/// `IA32_MTRR_DEF_TYPE` bit 10: fixed-range MTRRs enable.
const MTRR_DEF_TYPE_FE: u64 = 1 << 10;
/// `IA32_MTRR_DEF_TYPE` bit 11: MTRR enable.
const MTRR_DEF_TYPE_E: u64 = 1 << 11;

/// Why an MSR access fails: it raises #GP in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrFault {
    /// The MSR does not exist for the guest, is read-only, or the value has reserved or
    /// invalid bits set: the access raises #GP(0).
    Gp {
        /// The MSR index (ECX).
        msr: u32,
    },
}

impl fmt::Display for MsrFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsrFault::Gp { msr } => write!(f, "MSR {msr:#x}: access raises #GP"),
        }
    }
}

/// What the backend must do after an accepted `WRMSR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MsrEffect {
    /// Nothing beyond what [`MsrState`] stored.
    None,
    /// Load this value into the hardware guest EFER (the SVM backend adds SVME).
    Efer(u64),
    /// Load this value into the hardware guest PAT.
    Pat(u64),
    /// Program this TSC offset (added to the host TSC, wrapping) into the VMCS/VMCB, so that
    /// `RDTSC` agrees with `RDMSR(IA32_TSC)`.
    TscOffset(u64),
}

/// MSRs that belong to a device model rather than the CPU: the backends turn RDMSR/WRMSR of
/// these into [`VmExit::MsrRead`](crate::vcpu::VmExit::MsrRead) /
/// [`VmExit::MsrWrite`](crate::vcpu::VmExit::MsrWrite) for the VMM, which answers or faults
/// them. They are the local APIC's: `IA32_APIC_BASE` (enable, x2APIC mode),
/// `IA32_TSC_DEADLINE` (its timer) and the x2APIC registers 0x800–0x8FF; and kvm-clock's
/// `MSR_KVM_WALL_CLOCK_NEW`/`MSR_KVM_SYSTEM_TIME_NEW` (see [`pvclock`](crate::pvclock)),
/// which write guest RAM and read the VM's time. [`MsrState`] never sees them.
pub fn platform_owned(msr: u32) -> bool {
    matches!(
        msr,
        IA32_APIC_BASE | IA32_TSC_DEADLINE | crate::devices::lapic::X2APIC_MSR_FIRST
            ..=crate::devices::lapic::X2APIC_MSR_LAST
    ) || crate::pvclock::is_kvm_msr(msr)
}

/// Whether `msr` lives in hardware guest state that the CPU switches on VM entry and exit,
/// so backends leave it unintercepted (VMX MSR bitmap / SVM MSRPM clear for it):
/// `IA32_SYSENTER_CS/ESP/EIP`, `IA32_STAR`, `IA32_LSTAR`, `CSTAR`, `IA32_FMASK`,
/// `IA32_FS_BASE`, `IA32_GS_BASE` and `IA32_KERNEL_GS_BASE`.
pub fn hardware_passthrough(msr: u32) -> bool {
    matches!(
        msr,
        IA32_SYSENTER_CS
            | IA32_SYSENTER_ESP
            | IA32_SYSENTER_EIP
            | IA32_STAR
            | IA32_LSTAR
            | IA32_CSTAR
            | IA32_FMASK
            | IA32_FS_BASE
            | IA32_GS_BASE
            | IA32_KERNEL_GS_BASE
    )
}

/// Whether `value` is a valid `IA32_PAT`: every byte a memory type in {UC 0, WC 1, WT 4,
/// WP 5, WB 6, UC- 7} (SDM Vol. 3A §13.12.2; other encodings raise #GP).
fn valid_pat(value: u64) -> bool {
    value
        .to_le_bytes()
        .iter()
        .all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

/// Whether `value` is a valid `IA32_MTRR_DEF_TYPE`: no reserved bits, and a default type in
/// {UC 0, WC 1, WT 4, WP 5, WB 6} (SDM Vol. 3A §13.11.2.1).
fn valid_mtrr_def_type(value: u64) -> bool {
    let known = MTRR_DEF_TYPE_TYPE | MTRR_DEF_TYPE_FE | MTRR_DEF_TYPE_E;
    value & !known == 0 && matches!(value & MTRR_DEF_TYPE_TYPE, 0 | 1 | 4 | 5 | 6)
}

/// The emulated MSRs of one vCPU, as plain values for snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// Added (wrapping) to the host TSC to give the guest TSC.
    pub tsc_offset: u64,
    /// `IA32_MTRR_DEF_TYPE`.
    pub mtrr_def_type: u64,
    /// `IA32_MISC_ENABLE`.
    pub misc_enable: u64,
    /// `IA32_PAT`.
    pub pat: u64,
    /// `IA32_EFER` as the guest sees it (only [`EFER_GUEST_BITS`]).
    pub efer: u64,
}

/// The MSRs Keel emulates for one vCPU.
///
/// | MSR | read | write |
/// | --- | --- | --- |
/// | `IA32_TIME_STAMP_COUNTER` 0x10 | host TSC + offset | sets the offset → [`MsrEffect::TscOffset`] |
/// | `IA32_PLATFORM_ID` 0x17 | 0 | #GP (read-only) |
/// | `IA32_BIOS_SIGN_ID` 0x8B | 0 (no microcode revision) | ignored |
/// | `IA32_MTRRCAP` 0xFE | 0 (no variable or fixed MTRRs, no WC) | #GP (read-only) |
/// | `IA32_MISC_ENABLE` 0x1A0 | stored, initially fast strings | stored |
/// | `IA32_PAT` 0x277 | stored, initially [`PAT_DEFAULT`] | validated → [`MsrEffect::Pat`] |
/// | `IA32_MTRR_DEF_TYPE` 0x2FF | stored, initially 0 | validated |
/// | `IA32_EFER` 0xC000_0080 | stored, initially 0 | SCE/LME/NXE only → [`MsrEffect::Efer`] |
/// | AMD `PerfEvtSel0..3`, `PerfCtr0..3` 0xC001_0000..=0xC001_0007 | 0 (nothing counts) | ignored |
///
/// EFER.LMA is the CPU's: a written LMA is ignored and the stored one kept. Because the CPU
/// sets and clears LMA itself when the guest turns paging on or off with LME set, the backend
/// keeps this copy current with [`MsrState::sync_efer`] (from its hardware guest EFER) before
/// it passes an EFER access here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrState {
    state: State,
}

impl Default for MsrState {
    fn default() -> Self {
        Self::new()
    }
}

impl MsrState {
    /// The values after reset.
    pub const fn new() -> Self {
        MsrState {
            state: State {
                tsc_offset: 0,
                mtrr_def_type: 0,
                misc_enable: MISC_ENABLE_FAST_STRINGS,
                pat: PAT_DEFAULT,
                efer: 0,
            },
        }
    }

    /// `RDMSR`: the value of `msr`, with `tsc_now` the host's TSC at the access.
    pub fn read(&self, msr: u32, tsc_now: u64) -> Result<u64, MsrFault> {
        let s = &self.state;
        Ok(match msr {
            IA32_TSC => tsc_now.wrapping_add(s.tsc_offset),
            IA32_PLATFORM_ID | IA32_BIOS_SIGN_ID | IA32_MTRRCAP | MSR_K8_INT_PENDING_MSG => 0,
            _ if AMD_LEGACY_PERF.contains(&msr) => 0,
            IA32_MISC_ENABLE => s.misc_enable,
            IA32_PAT => s.pat,
            IA32_MTRR_DEF_TYPE => s.mtrr_def_type,
            IA32_EFER => s.efer,
            _ => return Err(MsrFault::Gp { msr }),
        })
    }

    /// `WRMSR` of `value` to `msr`, with `tsc_now` the host's TSC at the access (a TSC write
    /// turns into an offset from it). On #GP nothing changes.
    pub fn write(&mut self, msr: u32, value: u64, tsc_now: u64) -> Result<MsrEffect, MsrFault> {
        let gp = Err(MsrFault::Gp { msr });
        let s = &mut self.state;
        match msr {
            IA32_TSC => {
                s.tsc_offset = value.wrapping_sub(tsc_now);
                Ok(MsrEffect::TscOffset(s.tsc_offset))
            }
            IA32_BIOS_SIGN_ID | MSR_K8_INT_PENDING_MSG => Ok(MsrEffect::None),
            _ if AMD_LEGACY_PERF.contains(&msr) => Ok(MsrEffect::None),
            IA32_MISC_ENABLE => {
                s.misc_enable = value;
                Ok(MsrEffect::None)
            }
            IA32_PAT if valid_pat(value) => {
                s.pat = value;
                Ok(MsrEffect::Pat(value))
            }
            IA32_MTRR_DEF_TYPE if valid_mtrr_def_type(value) => {
                s.mtrr_def_type = value;
                Ok(MsrEffect::None)
            }
            IA32_EFER if value & !EFER_GUEST_BITS == 0 => {
                s.efer = (value & !EFER_LMA) | (s.efer & EFER_LMA);
                Ok(MsrEffect::Efer(s.efer))
            }
            _ => gp,
        }
    }

    /// Takes the guest-visible bits of the hardware guest EFER (the CPU changes LMA on its
    /// own; the SVM backend's SVME is not the guest's).
    pub fn sync_efer(&mut self, hardware_efer: u64) {
        self.state.efer = hardware_efer & EFER_GUEST_BITS;
    }

    /// The guest's EFER.
    pub fn efer(&self) -> u64 {
        self.state.efer
    }

    /// The guest's PAT.
    pub fn pat(&self) -> u64 {
        self.state.pat
    }

    /// The TSC offset (guest TSC = host TSC + offset, wrapping).
    pub fn tsc_offset(&self) -> u64 {
        self.state.tsc_offset
    }

    /// The emulated values, for a snapshot.
    pub fn state(&self) -> State {
        self.state
    }

    /// Loads a snapshot. Values a guest could not have written (invalid PAT or
    /// MTRR_DEF_TYPE, EFER bits outside [`EFER_GUEST_BITS`]) are refused with the MSR that
    /// holds them, and nothing changes.
    pub fn restore(&mut self, state: State) -> Result<(), MsrFault> {
        if !valid_pat(state.pat) {
            return Err(MsrFault::Gp { msr: IA32_PAT });
        }
        if !valid_mtrr_def_type(state.mtrr_def_type) {
            return Err(MsrFault::Gp {
                msr: IA32_MTRR_DEF_TYPE,
            });
        }
        if state.efer & !EFER_GUEST_BITS != 0 {
            return Err(MsrFault::Gp { msr: IA32_EFER });
        }
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GP: fn(u32) -> Result<u64, MsrFault> = |msr| Err(MsrFault::Gp { msr });

    #[test]
    fn reset_values() {
        let m = MsrState::new();
        assert_eq!(m.read(IA32_TSC, 1234), Ok(1234));
        assert_eq!(m.read(IA32_PLATFORM_ID, 0), Ok(0));
        assert_eq!(
            m.read(IA32_APIC_BASE, 0),
            Err(MsrFault::Gp {
                msr: IA32_APIC_BASE
            }),
            "the local APIC model owns it"
        );
        assert_eq!(m.read(IA32_BIOS_SIGN_ID, 0), Ok(0));
        assert_eq!(m.read(IA32_MTRRCAP, 0), Ok(0));
        assert_eq!(m.read(IA32_MISC_ENABLE, 0), Ok(1));
        assert_eq!(m.read(IA32_PAT, 0), Ok(0x0007_0406_0007_0406));
        assert_eq!(m.read(IA32_MTRR_DEF_TYPE, 0), Ok(0));
        assert_eq!(m.read(IA32_EFER, 0), Ok(0));
        assert_eq!(MsrState::default(), m);
    }

    #[test]
    fn unknown_msrs_raise_gp() {
        let mut m = MsrState::new();
        for msr in [
            0,
            0x3A,
            0x48,
            0x179,
            0x480,
            0xC000_0103,
            0xC001_0114,
            u32::MAX,
        ] {
            assert_eq!(m.read(msr, 0), GP(msr), "{msr:#x}");
            assert_eq!(m.write(msr, 0, 0), Err(MsrFault::Gp { msr }), "{msr:#x}");
        }
        // Passthrough MSRs are the hardware's, not this model's.
        assert_eq!(m.read(IA32_LSTAR, 0), GP(IA32_LSTAR));
    }

    /// kvm-unit-tests' `pmu_init` resets AMD's legacy counters on every AMD guest before
    /// any test runs; a #GP there failed every test (`apic`, `tsc`, ... under Keel).
    #[test]
    fn amd_legacy_perf_counters_read_zero_and_take_writes() {
        let mut m = MsrState::new();
        for msr in AMD_LEGACY_PERF {
            assert_eq!(m.write(msr, 0, 0), Ok(MsrEffect::None), "{msr:#x}");
            assert_eq!(m.write(msr, 0x43_0076, 0), Ok(MsrEffect::None), "{msr:#x}");
            assert_eq!(m.read(msr, 0), Ok(0), "{msr:#x}: nothing counts");
        }
        assert_eq!(m.read(0xC001_0008, 0), GP(0xC001_0008));
        assert_eq!(m.state(), MsrState::new().state(), "no state");
    }

    #[test]
    fn tsc_write_sets_an_offset() {
        let mut m = MsrState::new();
        assert_eq!(
            m.write(IA32_TSC, 1_000, 5_000),
            Ok(MsrEffect::TscOffset(1_000u64.wrapping_sub(5_000)))
        );
        assert_eq!(m.read(IA32_TSC, 5_000), Ok(1_000));
        assert_eq!(m.read(IA32_TSC, 7_500), Ok(3_500));
        m.write(IA32_TSC, u64::MAX, 0).unwrap();
        assert_eq!(
            m.read(IA32_TSC, 2),
            Ok(1),
            "wraps like the hardware counter"
        );
        assert_eq!(m.tsc_offset(), u64::MAX);
    }

    #[test]
    fn the_local_apic_msrs_are_the_platforms() {
        for msr in [IA32_APIC_BASE, IA32_TSC_DEADLINE, 0x800, 0x830, 0x8FF] {
            assert!(platform_owned(msr), "{msr:#x}");
        }
        // kvm-clock's, which the VM loop answers with guest RAM.
        for msr in [0x4b56_4d00, 0x4b56_4d01] {
            assert!(platform_owned(msr), "{msr:#x}");
        }
        for msr in [IA32_TSC, IA32_EFER, 0x7FF, 0x900] {
            assert!(!platform_owned(msr), "{msr:#x}");
        }
    }

    #[test]
    fn read_only_msrs() {
        let mut m = MsrState::new();
        assert!(m.write(IA32_MTRRCAP, 0, 0).is_err());
        assert!(m.write(IA32_PLATFORM_ID, 0, 0).is_err());
        // BIOS_SIGN_ID writes are the microcode-revision handshake: ignored.
        assert_eq!(m.write(IA32_BIOS_SIGN_ID, 0, 0), Ok(MsrEffect::None));
        assert_eq!(m.read(IA32_BIOS_SIGN_ID, 0), Ok(0));
    }

    #[test]
    fn pat_is_validated() {
        let mut m = MsrState::new();
        let wc = 0x0007_0106_0007_0406;
        assert_eq!(m.write(IA32_PAT, wc, 0), Ok(MsrEffect::Pat(wc)));
        assert_eq!(m.read(IA32_PAT, 0), Ok(wc));
        for bad in [
            0x0007_0406_0007_0402,
            0x0307_0406_0007_0406,
            0x0800_0000_0000_0000,
        ] {
            assert_eq!(
                m.write(IA32_PAT, bad, 0),
                Err(MsrFault::Gp { msr: IA32_PAT })
            );
        }
        assert_eq!(m.pat(), wc, "refused writes change nothing");
    }

    #[test]
    fn mtrr_def_type_is_validated_and_stored() {
        let mut m = MsrState::new();
        assert_eq!(m.write(IA32_MTRR_DEF_TYPE, 0xC06, 0), Ok(MsrEffect::None));
        assert_eq!(m.read(IA32_MTRR_DEF_TYPE, 0), Ok(0xC06));
        for bad in [0x7, 0x2, 0x100, 0x1000, 1 << 63] {
            assert!(m.write(IA32_MTRR_DEF_TYPE, bad, 0).is_err(), "{bad:#x}");
        }
        assert_eq!(m.read(IA32_MTRR_DEF_TYPE, 0), Ok(0xC06));
    }

    #[test]
    fn misc_enable_is_stored() {
        let mut m = MsrState::new();
        m.write(IA32_MISC_ENABLE, 0x85_0089, 0).unwrap();
        assert_eq!(m.read(IA32_MISC_ENABLE, 0), Ok(0x85_0089));
    }

    #[test]
    fn efer_allows_sce_lme_nxe_and_keeps_lma() {
        let mut m = MsrState::new();
        let long = EFER_SCE | EFER_LME | EFER_NXE;
        assert_eq!(m.write(IA32_EFER, long, 0), Ok(MsrEffect::Efer(long)));
        // The guest cannot set LMA itself...
        assert_eq!(
            m.write(IA32_EFER, long | EFER_LMA, 0),
            Ok(MsrEffect::Efer(long))
        );
        // ...but once the CPU has, a read-modify-write keeps it.
        m.sync_efer(long | EFER_LMA | EFER_SVME);
        assert_eq!(m.read(IA32_EFER, 0), Ok(long | EFER_LMA), "SVME is hidden");
        assert_eq!(
            m.write(IA32_EFER, EFER_LME | EFER_LMA, 0),
            Ok(MsrEffect::Efer(EFER_LME | EFER_LMA))
        );
        assert_eq!(
            m.write(IA32_EFER, EFER_LME, 0),
            Ok(MsrEffect::Efer(EFER_LME | EFER_LMA))
        );
        for bad in [EFER_SVME, 1 << 13, 1 << 14, 1 << 15, 1 << 1, 1 << 63] {
            assert_eq!(
                m.write(IA32_EFER, long | bad, 0),
                Err(MsrFault::Gp { msr: IA32_EFER }),
                "{bad:#x}"
            );
        }
        assert_eq!(m.efer(), EFER_LME | EFER_LMA);
    }

    #[test]
    fn passthrough_list() {
        for msr in [
            0x174,
            0x175,
            0x176,
            0xC000_0081,
            0xC000_0082,
            0xC000_0083,
            0xC000_0084,
            0xC000_0100,
            0xC000_0101,
            0xC000_0102,
        ] {
            assert!(hardware_passthrough(msr), "{msr:#x}");
        }
        for msr in [0x10, 0x1B, 0x177, 0x277, 0xC000_0080, 0xC000_0103] {
            assert!(!hardware_passthrough(msr), "{msr:#x}");
        }
    }

    #[test]
    fn state_round_trip_and_validation() {
        let mut m = MsrState::new();
        m.write(IA32_TSC, 10, 3).unwrap();
        m.write(IA32_EFER, EFER_NXE, 0).unwrap();
        m.write(IA32_MISC_ENABLE, 0, 0).unwrap();
        let state = m.state();
        let mut copy = MsrState::new();
        copy.restore(state).unwrap();
        assert_eq!(copy, m);

        let mut target = MsrState::new();
        for (bad, msr) in [
            (State { pat: 2, ..state }, IA32_PAT),
            (
                State {
                    mtrr_def_type: 7,
                    ..state
                },
                IA32_MTRR_DEF_TYPE,
            ),
            (
                State {
                    efer: EFER_SVME,
                    ..state
                },
                IA32_EFER,
            ),
        ] {
            assert_eq!(target.restore(bad), Err(MsrFault::Gp { msr }));
            assert_eq!(target, MsrState::new());
        }
    }

    #[test]
    fn fault_message_names_the_msr() {
        assert_eq!(
            MsrFault::Gp { msr: 0x48 }.to_string(),
            "MSR 0x48: access raises #GP"
        );
    }
}
