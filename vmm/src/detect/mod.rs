//! Which hardware virtualization extension this host can use.
//!
//! Detection is pure logic over a [`CpuProbe`]: the kernel implements it with the real `CPUID`
//! instruction and a `RDMSR` that survives a #GP; host tests implement it with tables. Nothing
//! here executes a privileged instruction, so detection is safe to run on any CPU, including
//! one that has no virtualization extension at all.
//!
//! [`probe`] answers with a [`Virtualization`]:
//!
//! - [`Virtualization::Vmx`] — Intel VT-x (SDM Vol. 3C ch. 23–25 and appendix A) with EPT
//!   (4-level walk, write-back paging structures) and unrestricted guest. VPID is recorded and
//!   used when present.
//! - [`Virtualization::Svm`] — AMD-V (APM Vol. 2 ch. 15) with nested paging. NRIP save is
//!   recorded, not required: QEMU's software emulation (TCG), which CI uses, lacks it.
//! - [`Virtualization::Unavailable`] — with an [`Unavailable`] reason that names exactly what
//!   is missing or what the operator has to change in the firmware setup.
//!
//! Its [`Display`](core::fmt::Display) form is what the kernel prints in the boot banner and
//! the management API reports; tests match on its prefixes `VT-x with EPT`, `AMD-V with NPT`
//! and `none`.
//!
//! [`identify`] names the CPU (vendor, brand string, family/model/stepping) for the same
//! banner.

use core::fmt;

mod identity;
mod svm;
mod vmx;

#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;

pub use identity::{CpuIdentity, VendorId, identify};
pub use svm::SvmCapabilities;
pub use vmx::{ControlMsr, EptVpidCap, MissingVmxFeatures, VmxBasic, VmxCapabilities, VmxFeature};

/// MSR indices read during detection (SDM Vol. 4 ch. 2; APM Vol. 2 §15.30).
pub mod msr {
    /// `IA32_FEATURE_CONTROL`: lock bit and the VMX enables (SDM Vol. 3C §23.7).
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    /// `IA32_VMX_BASIC`: VMCS revision, region size, TRUE-controls support (SDM A.1).
    pub const IA32_VMX_BASIC: u32 = 0x480;
    /// `IA32_VMX_PINBASED_CTLS` (SDM A.3.1).
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    /// `IA32_VMX_PROCBASED_CTLS` (SDM A.3.2).
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    /// `IA32_VMX_EXIT_CTLS` (SDM A.4).
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    /// `IA32_VMX_ENTRY_CTLS` (SDM A.5).
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    /// `IA32_VMX_MISC` (SDM A.6).
    pub const IA32_VMX_MISC: u32 = 0x485;
    /// `IA32_VMX_CR0_FIXED0`: CR0 bits that must be 1 in VMX operation (SDM A.7).
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    /// `IA32_VMX_CR0_FIXED1`: CR0 bits that may be 1 in VMX operation (SDM A.7).
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    /// `IA32_VMX_CR4_FIXED0`: CR4 bits that must be 1 in VMX operation (SDM A.8).
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    /// `IA32_VMX_CR4_FIXED1`: CR4 bits that may be 1 in VMX operation (SDM A.8).
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    /// `IA32_VMX_PROCBASED_CTLS2`: secondary processor-based controls (SDM A.3.3).
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
    /// `IA32_VMX_EPT_VPID_CAP` (SDM A.10).
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
    /// `IA32_VMX_TRUE_PINBASED_CTLS` (SDM A.3.1).
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
    /// `IA32_VMX_TRUE_PROCBASED_CTLS` (SDM A.3.2).
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
    /// `IA32_VMX_TRUE_EXIT_CTLS` (SDM A.4).
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
    /// `IA32_VMX_TRUE_ENTRY_CTLS` (SDM A.5).
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    /// `VM_CR`: SVM lock and the firmware's SVM disable (APM Vol. 2 §15.30.1).
    pub const VM_CR: u32 = 0xC001_0114;
}

/// CPUID leaves read during detection (SDM Vol. 2A "CPUID"; APM Vol. 3 appendix E).
pub mod leaf {
    /// Highest basic leaf and vendor string.
    pub const VENDOR: u32 = 0x0000_0000;
    /// Version information and feature flags (`ECX[5]` = VMX).
    pub const FEATURES: u32 = 0x0000_0001;
    /// Highest extended leaf.
    pub const EXT_MAX: u32 = 0x8000_0000;
    /// Extended feature flags (`ECX[2]` = SVM).
    pub const EXT_FEATURES: u32 = 0x8000_0001;
    /// First of the three brand-string leaves (`0x8000_0002..=0x8000_0004`).
    pub const BRAND_FIRST: u32 = 0x8000_0002;
    /// Last of the three brand-string leaves.
    pub const BRAND_LAST: u32 = 0x8000_0004;
    /// SVM revision, ASID count and SVM feature flags.
    pub const SVM_FEATURES: u32 = 0x8000_000A;
}

/// The four registers one `CPUID` execution returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidResult {
    /// `EAX` after `CPUID`.
    pub eax: u32,
    /// `EBX` after `CPUID`.
    pub ebx: u32,
    /// `ECX` after `CPUID`.
    pub ecx: u32,
    /// `EDX` after `CPUID`.
    pub edx: u32,
}

/// What the kernel gives detection: raw CPUID and a fault-tolerant RDMSR.
///
/// Both are queried on the CPU that will run the guests (the kernel calls detection on each
/// CPU it brings up, or on the boot CPU of a homogeneous machine). Detection only reads CPUID
/// leaves up to the maximum the CPU reports, and only reads an MSR once CPUID or another MSR
/// says the MSR exists; [`rdmsr`](CpuProbe::rdmsr) must still survive a #GP, because emulators
/// do not implement every architectural MSR.
pub trait CpuProbe {
    /// Executes `CPUID` with `EAX = leaf` and `ECX = subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult;
    /// Executes `RDMSR` for `msr`. `None` when the MSR does not exist (RDMSR raised #GP).
    fn rdmsr(&self, msr: u32) -> Option<u64>;
}

/// The hardware virtualization this host can use, and what it offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Virtualization {
    /// Intel VT-x with EPT and unrestricted guest.
    Vmx(VmxCapabilities),
    /// AMD-V with nested paging.
    Svm(SvmCapabilities),
    /// No usable extension; the reason says why.
    Unavailable(Unavailable),
}

impl Virtualization {
    /// Whether a backend can run guests on this host.
    pub fn is_available(&self) -> bool {
        !matches!(self, Virtualization::Unavailable(_))
    }
}

impl fmt::Display for Virtualization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Virtualization::Vmx(caps) => {
                f.write_str("VT-x with EPT and unrestricted guest")?;
                if caps.vpid {
                    f.write_str(", VPID")?;
                }
                Ok(())
            }
            Virtualization::Svm(caps) => {
                f.write_str("AMD-V with NPT")?;
                if caps.nrip_save {
                    f.write_str(", NRIP save")?;
                }
                Ok(())
            }
            Virtualization::Unavailable(reason) => write!(f, "none ({reason})"),
        }
    }
}

/// Why no hardware virtualization is usable. Each message tells the operator what is missing
/// or what to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// CPUID reports neither VMX (`CPUID.1:ECX[5]`) nor SVM (`CPUID.8000_0001h:ECX[2]`).
    NoExtension,
    /// `IA32_FEATURE_CONTROL` is locked with "enable VMX outside SMX" (bit 2) clear, so
    /// `VMXON` would raise #GP until the firmware setting changes (SDM Vol. 3C §23.7).
    VmxDisabledByFirmware,
    /// CPUID reports VMX but a VMX capability MSR that must then exist raised #GP.
    VmxMsrUnreadable {
        /// The MSR index.
        msr: u32,
        /// The MSR's SDM name.
        name: &'static str,
    },
    /// VT-x is present but lacks features Keel requires.
    VmxMissing(MissingVmxFeatures),
    /// `VM_CR.SVMDIS` (bit 4) is set: the firmware disabled SVM (APM Vol. 2 §15.30.1).
    SvmDisabledByFirmware,
    /// AMD-V is present without nested paging (`CPUID.8000_000Ah:EDX[0]`).
    SvmMissingNestedPaging,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NoExtension => f.write_str("this CPU has neither VT-x nor AMD-V"),
            Unavailable::VmxDisabledByFirmware => f.write_str(
                "VT-x is disabled by the firmware (IA32_FEATURE_CONTROL locked with VMX off): \
                 enable Intel Virtualization Technology in the BIOS setup",
            ),
            Unavailable::VmxMsrUnreadable { msr, name } => write!(
                f,
                "VT-x is reported by CPUID but {name} (MSR {msr:#x}) cannot be read"
            ),
            Unavailable::VmxMissing(missing) => write!(
                f,
                "VT-x lacks {missing} (Keel needs EPT with a 4-level walk and write-back \
                 memory, and unrestricted guest)"
            ),
            Unavailable::SvmDisabledByFirmware => f.write_str(
                "AMD-V is disabled by the firmware (VM_CR.SVMDIS): enable SVM in the BIOS setup",
            ),
            Unavailable::SvmMissingNestedPaging => {
                f.write_str("AMD-V lacks nested paging (NPT), which Keel needs")
            }
        }
    }
}

/// `CPUID.1:ECX[5]`: VMX (SDM Vol. 2A table 3-10).
const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// `CPUID.8000_0001h:ECX[2]`: SVM (APM Vol. 3 appendix E.4.2).
const CPUID_80000001_ECX_SVM: u32 = 1 << 2;

/// The highest basic and extended CPUID leaves, so that no leaf beyond them is trusted (Intel
/// CPUs return the data of the highest basic leaf for an out-of-range leaf).
#[derive(Clone, Copy, Debug)]
struct LeafRange {
    max_basic: u32,
    max_extended: u32,
}

impl LeafRange {
    fn read(cpu: &impl CpuProbe) -> Self {
        let max_basic = cpu.cpuid(leaf::VENDOR, 0).eax;
        let ext = cpu.cpuid(leaf::EXT_MAX, 0).eax;
        // A CPU without extended leaves answers leaf 8000_0000h with whatever its highest
        // basic leaf holds; only a value of the form 8000_xxxxh is a real maximum (the check
        // Linux makes too).
        let max_extended = if ext & 0xFFFF_0000 == leaf::EXT_MAX {
            ext
        } else {
            0
        };
        LeafRange {
            max_basic,
            max_extended,
        }
    }

    fn has(&self, leaf: u32) -> bool {
        if leaf >= leaf::EXT_MAX {
            self.max_extended != 0 && leaf <= self.max_extended
        } else {
            leaf <= self.max_basic
        }
    }

    /// `CPUID(leaf, subleaf)`, or all zeros when the CPU does not have `leaf`.
    fn cpuid(&self, cpu: &impl CpuProbe, leaf: u32, subleaf: u32) -> CpuidResult {
        if self.has(leaf) {
            cpu.cpuid(leaf, subleaf)
        } else {
            CpuidResult::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Extension {
    Vmx,
    Svm,
}

/// Detects which hardware virtualization extension this CPU can use.
///
/// Checks the CPUID bits first, then the firmware's enable (`IA32_FEATURE_CONTROL` or
/// `VM_CR`), then the capabilities Keel requires. The vendor string is not trusted to decide
/// which extension exists (Hygon and Zhaoxin CPUs carry SVM and VMX); it only orders the checks
/// when a CPU claims both. Reads no MSR that CPUID does not announce.
///
/// ```
/// use keel_vmm::detect::{probe, CpuProbe, CpuidResult};
///
/// /// A CPU that reports nothing at all.
/// struct Bare;
/// impl CpuProbe for Bare {
///     fn cpuid(&self, _leaf: u32, _subleaf: u32) -> CpuidResult {
///         CpuidResult::default()
///     }
///     fn rdmsr(&self, _msr: u32) -> Option<u64> {
///         None
///     }
/// }
///
/// assert_eq!(probe(&Bare).to_string(), "none (this CPU has neither VT-x nor AMD-V)");
/// ```
pub fn probe(cpu: &impl CpuProbe) -> Virtualization {
    let leaves = LeafRange::read(cpu);
    let vendor = VendorId::read(cpu);
    let has_vmx = leaves.cpuid(cpu, leaf::FEATURES, 0).ecx & CPUID_1_ECX_VMX != 0;
    let has_svm = leaves.cpuid(cpu, leaf::EXT_FEATURES, 0).ecx & CPUID_80000001_ECX_SVM != 0;

    let order = if vendor.is_amd_family() {
        [Extension::Svm, Extension::Vmx]
    } else {
        [Extension::Vmx, Extension::Svm]
    };

    let mut first_reason = None;
    for extension in order {
        let result = match extension {
            Extension::Vmx if has_vmx => vmx::probe(cpu).map(Virtualization::Vmx),
            Extension::Svm if has_svm => svm::probe(cpu, &leaves).map(Virtualization::Svm),
            _ => continue,
        };
        match result {
            Ok(found) => return found,
            Err(reason) => {
                first_reason.get_or_insert(reason);
            }
        }
    }
    Virtualization::Unavailable(first_reason.unwrap_or(Unavailable::NoExtension))
}
