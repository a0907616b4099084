//! Intel VT-x detection: the firmware enable in `IA32_FEATURE_CONTROL` (SDM Vol. 3C §23.7) and
//! the VMX capability MSRs (SDM Vol. 3D appendix A).
//!
//! Keel requires EPT with a 4-level page walk and write-back paging-structure memory (so guest
//! memory is isolated by second-level translation) and unrestricted guest (so real-mode
//! firmware and bootloaders run without emulation). VPID is optional.

use core::fmt;

use super::{CpuProbe, Unavailable, msr};

/// `IA32_FEATURE_CONTROL` bit 0: lock. Once set, writes raise #GP until reset.
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
/// `IA32_FEATURE_CONTROL` bit 2: enable VMX outside SMX operation.
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// Primary processor-based control bit 31: activate secondary controls (SDM Vol. 3C table 25-6).
const PROC_ACTIVATE_SECONDARY: u32 = 1 << 31;
/// Secondary control bit 1: enable EPT (SDM Vol. 3C table 25-7).
const PROC2_ENABLE_EPT: u32 = 1 << 1;
/// Secondary control bit 5: enable VPID.
const PROC2_ENABLE_VPID: u32 = 1 << 5;
/// Secondary control bit 7: unrestricted guest.
const PROC2_UNRESTRICTED_GUEST: u32 = 1 << 7;

/// Everything about this CPU's VT-x that the VMX backend needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmxCapabilities {
    /// Raw `IA32_FEATURE_CONTROL`.
    pub feature_control: u64,
    /// The MSR is not locked yet: before `VMXON` the backend must set "enable VMX outside SMX"
    /// (bit 2) and the lock bit (bit 0), or `VMXON` raises #GP.
    pub needs_feature_control_enable: bool,
    /// `IA32_VMX_BASIC`.
    pub basic: VmxBasic,
    /// Pin-based controls: from the TRUE MSR when [`VmxBasic::true_controls`], else the legacy
    /// one.
    pub pin_based: ControlMsr,
    /// Primary processor-based controls (TRUE MSR when available).
    pub proc_based: ControlMsr,
    /// Secondary processor-based controls (`IA32_VMX_PROCBASED_CTLS2`).
    pub proc_based2: ControlMsr,
    /// VM-exit controls (TRUE MSR when available).
    pub exit: ControlMsr,
    /// VM-entry controls (TRUE MSR when available).
    pub entry: ControlMsr,
    /// Raw `IA32_VMX_MISC` (preemption-timer rate, activity states, CR3-target count).
    pub misc: u64,
    /// `IA32_VMX_CR0_FIXED0`: CR0 bits that must be 1 in VMX operation.
    pub cr0_fixed0: u64,
    /// `IA32_VMX_CR0_FIXED1`: CR0 bits that may be 1 in VMX operation.
    pub cr0_fixed1: u64,
    /// `IA32_VMX_CR4_FIXED0`: CR4 bits that must be 1 in VMX operation.
    pub cr4_fixed0: u64,
    /// `IA32_VMX_CR4_FIXED1`: CR4 bits that may be 1 in VMX operation.
    pub cr4_fixed1: u64,
    /// `IA32_VMX_EPT_VPID_CAP`.
    pub ept_vpid: EptVpidCap,
    /// "Enable VPID" may be set.
    pub vpid: bool,
    /// "Unrestricted guest" may be set (always true once detection succeeded).
    pub unrestricted_guest: bool,
}

impl VmxCapabilities {
    /// Applies the CR0 fixed bits to `cr0`: the value CR0 must hold in VMX operation (SDM
    /// A.7). Unrestricted guest relaxes PE and PG for the guest, not for the host.
    pub fn fixed_cr0(&self, cr0: u64) -> u64 {
        (cr0 | self.cr0_fixed0) & self.cr0_fixed1
    }

    /// Applies the CR4 fixed bits to `cr4` (SDM A.8); this sets CR4.VMXE.
    pub fn fixed_cr4(&self, cr4: u64) -> u64 {
        (cr4 | self.cr4_fixed0) & self.cr4_fixed1
    }
}

/// `IA32_VMX_BASIC` (SDM A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// VMCS revision identifier (bits 30:0): written to the VMXON region and every VMCS.
    pub fn revision_id(self) -> u32 {
        (self.0 & 0x7FFF_FFFF) as u32
    }

    /// Bytes to allocate for the VMXON region and each VMCS (bits 44:32, at most 4096).
    pub fn region_size(self) -> u32 {
        ((self.0 >> 32) & 0x1FFF) as u32
    }

    /// Bit 48: VMXON, VMCS and related addresses are limited to 32 bits.
    pub fn addresses_limited_to_32_bits(self) -> bool {
        self.0 & (1 << 48) != 0
    }

    /// Bits 53:50: memory type for the VMCS and structures it references (6 = write-back).
    pub fn memory_type(self) -> u8 {
        ((self.0 >> 50) & 0xF) as u8
    }

    /// Bit 54: VM exits for INS/OUTS report instruction information.
    pub fn ins_outs_info(self) -> bool {
        self.0 & (1 << 54) != 0
    }

    /// Bit 55: the TRUE control MSRs (0x48D–0x490) exist and say which default-1 controls may
    /// be cleared.
    pub fn true_controls(self) -> bool {
        self.0 & (1 << 55) != 0
    }
}

/// A VMX control capability MSR: which controls must be 1 and which may be 1 (SDM A.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlMsr {
    /// Low dword: a set bit means the control must be 1 ("allowed 0-settings").
    pub allowed0: u32,
    /// High dword: a clear bit means the control must be 0 ("allowed 1-settings").
    pub allowed1: u32,
}

impl ControlMsr {
    /// Splits a raw control MSR into its two halves.
    pub fn from_raw(raw: u64) -> Self {
        ControlMsr {
            allowed0: raw as u32,
            allowed1: (raw >> 32) as u32,
        }
    }

    /// The MSR value this was read from.
    pub fn raw(self) -> u64 {
        (u64::from(self.allowed1) << 32) | u64::from(self.allowed0)
    }

    /// Whether every control in `mask` may be set to 1.
    pub fn allows(self, mask: u32) -> bool {
        self.allowed1 & mask == mask
    }

    /// Whether every control in `mask` must be 1.
    pub fn requires(self, mask: u32) -> bool {
        self.allowed0 & mask == mask
    }

    /// The control value to write for the `desired` controls: required bits forced on,
    /// disallowed bits forced off (the algorithm of SDM A.3.1). Callers check with
    /// [`allows`](Self::allows) first for controls they cannot do without.
    pub fn adjust(self, desired: u32) -> u32 {
        (desired | self.allowed0) & self.allowed1
    }
}

/// `IA32_VMX_EPT_VPID_CAP` (SDM A.10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EptVpidCap(pub u64);

impl EptVpidCap {
    fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }

    /// Bit 0: execute-only EPT translations.
    pub fn execute_only(self) -> bool {
        self.bit(0)
    }

    /// Bit 6: page-walk length of 4.
    pub fn walk_length_4(self) -> bool {
        self.bit(6)
    }

    /// Bit 7: page-walk length of 5.
    pub fn walk_length_5(self) -> bool {
        self.bit(7)
    }

    /// Bit 8: EPT paging structures may be uncacheable.
    pub fn uncacheable(self) -> bool {
        self.bit(8)
    }

    /// Bit 14: EPT paging structures may be write-back.
    pub fn write_back(self) -> bool {
        self.bit(14)
    }

    /// Bit 16: 2 MiB EPT pages.
    pub fn pages_2m(self) -> bool {
        self.bit(16)
    }

    /// Bit 17: 1 GiB EPT pages.
    pub fn pages_1g(self) -> bool {
        self.bit(17)
    }

    /// Bit 20: the INVEPT instruction.
    pub fn invept(self) -> bool {
        self.bit(20)
    }

    /// Bit 21: EPT accessed and dirty flags (dirty-page tracking for live migration).
    pub fn accessed_dirty(self) -> bool {
        self.bit(21)
    }

    /// Bit 25: single-context INVEPT.
    pub fn invept_single_context(self) -> bool {
        self.bit(25)
    }

    /// Bit 26: all-context INVEPT.
    pub fn invept_all_context(self) -> bool {
        self.bit(26)
    }

    /// Bit 32: the INVVPID instruction.
    pub fn invvpid(self) -> bool {
        self.bit(32)
    }

    /// Bit 41: single-context INVVPID.
    pub fn invvpid_single_context(self) -> bool {
        self.bit(41)
    }

    /// Bit 42: all-context INVVPID.
    pub fn invvpid_all_context(self) -> bool {
        self.bit(42)
    }
}

/// A VT-x feature Keel requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxFeature {
    /// "Activate secondary controls" cannot be set, so EPT and unrestricted guest are absent.
    SecondaryControls,
    /// "Enable EPT" cannot be set.
    Ept,
    /// EPT does not support a 4-level page walk.
    EptWalkLength4,
    /// EPT paging structures cannot be write-back.
    EptWriteBack,
    /// "Unrestricted guest" cannot be set.
    UnrestrictedGuest,
}

impl VmxFeature {
    const ALL: [VmxFeature; 5] = [
        VmxFeature::SecondaryControls,
        VmxFeature::Ept,
        VmxFeature::EptWalkLength4,
        VmxFeature::EptWriteBack,
        VmxFeature::UnrestrictedGuest,
    ];

    fn mask(self) -> u8 {
        1 << self as u8
    }

    /// Short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            VmxFeature::SecondaryControls => "secondary processor-based controls",
            VmxFeature::Ept => "EPT",
            VmxFeature::EptWalkLength4 => "the EPT 4-level page walk",
            VmxFeature::EptWriteBack => "write-back EPT paging structures",
            VmxFeature::UnrestrictedGuest => "unrestricted guest",
        }
    }
}

impl fmt::Display for VmxFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of required VT-x features a CPU lacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MissingVmxFeatures(u8);

impl MissingVmxFeatures {
    /// Whether `feature` is missing.
    pub fn contains(self, feature: VmxFeature) -> bool {
        self.0 & feature.mask() != 0
    }

    /// Whether nothing is missing.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The missing features, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = VmxFeature> {
        VmxFeature::ALL
            .into_iter()
            .filter(move |f| self.contains(*f))
    }

    pub(super) fn insert(&mut self, feature: VmxFeature) {
        self.0 |= feature.mask();
    }
}

impl fmt::Display for MissingVmxFeatures {
    /// `A`, `A and B`, `A, B and C`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.iter().count();
        for (i, feature) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == count { " and " } else { ", " })?;
            }
            f.write_str(feature.name())?;
        }
        Ok(())
    }
}

/// Reads an MSR that must exist once CPUID reports VMX.
fn required(cpu: &impl CpuProbe, index: u32, name: &'static str) -> Result<u64, Unavailable> {
    cpu.rdmsr(index)
        .ok_or(Unavailable::VmxMsrUnreadable { msr: index, name })
}

/// Checks VT-x on a CPU whose `CPUID.1:ECX[5]` is set.
pub(super) fn probe(cpu: &impl CpuProbe) -> Result<VmxCapabilities, Unavailable> {
    // SDM Vol. 3C §23.7: VMXON raises #GP when the lock bit is set and "enable VMX outside
    // SMX" is clear. When unlocked, the backend sets bit 2 and locks the MSR itself.
    let feature_control = required(cpu, msr::IA32_FEATURE_CONTROL, "IA32_FEATURE_CONTROL")?;
    let locked = feature_control & FEATURE_CONTROL_LOCK != 0;
    if locked && feature_control & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err(Unavailable::VmxDisabledByFirmware);
    }

    let basic = VmxBasic(required(cpu, msr::IA32_VMX_BASIC, "IA32_VMX_BASIC")?);
    // SDM A.2: with bit 55 set, the TRUE MSRs report which default-1 controls may be 0.
    let (pin, proc, exit, entry) = if basic.true_controls() {
        (
            (
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
                "IA32_VMX_TRUE_PINBASED_CTLS",
            ),
            (
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
                "IA32_VMX_TRUE_PROCBASED_CTLS",
            ),
            (msr::IA32_VMX_TRUE_EXIT_CTLS, "IA32_VMX_TRUE_EXIT_CTLS"),
            (msr::IA32_VMX_TRUE_ENTRY_CTLS, "IA32_VMX_TRUE_ENTRY_CTLS"),
        )
    } else {
        (
            (msr::IA32_VMX_PINBASED_CTLS, "IA32_VMX_PINBASED_CTLS"),
            (msr::IA32_VMX_PROCBASED_CTLS, "IA32_VMX_PROCBASED_CTLS"),
            (msr::IA32_VMX_EXIT_CTLS, "IA32_VMX_EXIT_CTLS"),
            (msr::IA32_VMX_ENTRY_CTLS, "IA32_VMX_ENTRY_CTLS"),
        )
    };
    let pin_based = ControlMsr::from_raw(required(cpu, pin.0, pin.1)?);
    let proc_based = ControlMsr::from_raw(required(cpu, proc.0, proc.1)?);
    let exit = ControlMsr::from_raw(required(cpu, exit.0, exit.1)?);
    let entry = ControlMsr::from_raw(required(cpu, entry.0, entry.1)?);
    let misc = required(cpu, msr::IA32_VMX_MISC, "IA32_VMX_MISC")?;
    let cr0_fixed0 = required(cpu, msr::IA32_VMX_CR0_FIXED0, "IA32_VMX_CR0_FIXED0")?;
    let cr0_fixed1 = required(cpu, msr::IA32_VMX_CR0_FIXED1, "IA32_VMX_CR0_FIXED1")?;
    let cr4_fixed0 = required(cpu, msr::IA32_VMX_CR4_FIXED0, "IA32_VMX_CR4_FIXED0")?;
    let cr4_fixed1 = required(cpu, msr::IA32_VMX_CR4_FIXED1, "IA32_VMX_CR4_FIXED1")?;

    let mut missing = MissingVmxFeatures::default();

    // SDM A.3.3: IA32_VMX_PROCBASED_CTLS2 exists only if "activate secondary controls" may
    // be 1 (bit 63 of the primary MSR, i.e. bit 31 of its allowed-1 half).
    let proc_based2 = if proc_based.allows(PROC_ACTIVATE_SECONDARY) {
        ControlMsr::from_raw(required(
            cpu,
            msr::IA32_VMX_PROCBASED_CTLS2,
            "IA32_VMX_PROCBASED_CTLS2",
        )?)
    } else {
        missing.insert(VmxFeature::SecondaryControls);
        ControlMsr::default()
    };
    let ept = proc_based2.allows(PROC2_ENABLE_EPT);
    let vpid = proc_based2.allows(PROC2_ENABLE_VPID);
    let unrestricted_guest = proc_based2.allows(PROC2_UNRESTRICTED_GUEST);

    // SDM A.10: IA32_VMX_EPT_VPID_CAP exists only if EPT or VPID may be enabled.
    let ept_vpid = if ept || vpid {
        EptVpidCap(required(
            cpu,
            msr::IA32_VMX_EPT_VPID_CAP,
            "IA32_VMX_EPT_VPID_CAP",
        )?)
    } else {
        EptVpidCap::default()
    };

    if !ept {
        missing.insert(VmxFeature::Ept);
    } else {
        if !ept_vpid.walk_length_4() {
            missing.insert(VmxFeature::EptWalkLength4);
        }
        if !ept_vpid.write_back() {
            missing.insert(VmxFeature::EptWriteBack);
        }
    }
    if !unrestricted_guest {
        missing.insert(VmxFeature::UnrestrictedGuest);
    }
    if !missing.is_empty() {
        return Err(Unavailable::VmxMissing(missing));
    }

    Ok(VmxCapabilities {
        feature_control,
        needs_feature_control_enable: !locked,
        basic,
        pin_based,
        proc_based,
        proc_based2,
        exit,
        entry,
        misc,
        cr0_fixed0,
        cr0_fixed1,
        cr4_fixed0,
        cr4_fixed1,
        ept_vpid,
        vpid,
        unrestricted_guest,
    })
}
