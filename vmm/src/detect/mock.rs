//! A table-driven [`CpuProbe`] for host tests, and CPUID/MSR tables modelled on real CPUs and
//! on the emulators CI uses (`docs/TESTING.md`).

use core::cell::RefCell;

use super::{CpuProbe, CpuidResult, leaf, msr};

/// What an out-of-range leaf returns: Intel CPUs answer with the data of the highest basic
/// leaf, so detection must never trust it. All ones makes every feature bit look present.
const GARBAGE: CpuidResult = CpuidResult {
    eax: u32::MAX,
    ebx: u32::MAX,
    ecx: u32::MAX,
    edx: u32::MAX,
};

/// A CPU described by tables; records which MSRs were read.
#[derive(Default)]
pub struct MockCpu {
    leaves: Vec<(u32, CpuidResult)>,
    msrs: Vec<(u32, u64)>,
    msr_reads: RefCell<Vec<u32>>,
}

impl MockCpu {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets leaf `leaf` (subleaf 0) to `[eax, ebx, ecx, edx]`.
    pub fn leaf(mut self, leaf: u32, [eax, ebx, ecx, edx]: [u32; 4]) -> Self {
        self.leaves.retain(|(l, _)| *l != leaf);
        self.leaves.push((leaf, CpuidResult { eax, ebx, ecx, edx }));
        self
    }

    /// Rewrites one register of an existing leaf.
    pub fn map_leaf(mut self, leaf: u32, f: impl FnOnce(&mut CpuidResult)) -> Self {
        if let Some((_, r)) = self.leaves.iter_mut().find(|(l, _)| *l == leaf) {
            f(r);
        }
        self
    }

    /// Leaf 0: highest basic leaf and vendor string.
    pub fn vendor(self, vendor: &[u8; 12], max_basic: u32) -> Self {
        let word =
            |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
        self.leaf(leaf::VENDOR, [max_basic, word(0), word(8), word(4)])
    }

    /// Leaves 8000_0002h..8000_0004h from `brand` (NUL-padded to 48 bytes).
    pub fn brand(mut self, brand: &[u8]) -> Self {
        let mut bytes = [0u8; 48];
        let n = brand.len().min(48);
        bytes[..n].copy_from_slice(&brand[..n]);
        for (i, chunk) in bytes.chunks_exact(16).enumerate() {
            let reg =
                |j: usize| u32::from_le_bytes([chunk[j], chunk[j + 1], chunk[j + 2], chunk[j + 3]]);
            self = self.leaf(
                leaf::BRAND_FIRST + i as u32,
                [reg(0), reg(4), reg(8), reg(12)],
            );
        }
        self
    }

    pub fn msr(mut self, index: u32, value: u64) -> Self {
        self.msrs.retain(|(i, _)| *i != index);
        self.msrs.push((index, value));
        self
    }

    /// Makes `index` raise #GP.
    pub fn without_msr(mut self, index: u32) -> Self {
        self.msrs.retain(|(i, _)| *i != index);
        self
    }

    /// Every MSR index read so far, in order.
    pub fn msr_reads(&self) -> Vec<u32> {
        self.msr_reads.borrow().clone()
    }

    fn find_leaf(&self, leaf: u32) -> Option<CpuidResult> {
        self.leaves
            .iter()
            .find(|(l, _)| *l == leaf)
            .map(|(_, r)| *r)
    }
}

impl CpuProbe for MockCpu {
    fn cpuid(&self, leaf: u32, _subleaf: u32) -> CpuidResult {
        if let Some(r) = self.find_leaf(leaf) {
            return r;
        }
        let max = if leaf >= leaf::EXT_MAX {
            self.find_leaf(leaf::EXT_MAX).map_or(0, |r| r.eax)
        } else {
            self.find_leaf(leaf::VENDOR).map_or(0, |r| r.eax)
        };
        if leaf <= max {
            CpuidResult::default()
        } else {
            GARBAGE
        }
    }

    fn rdmsr(&self, index: u32) -> Option<u64> {
        self.msr_reads.borrow_mut().push(index);
        self.msrs.iter().find(|(i, _)| *i == index).map(|(_, v)| *v)
    }
}

/// Intel Core i7-6700K (Skylake-S): VMX with TRUE controls, EPT, VPID, unrestricted guest;
/// firmware locked IA32_FEATURE_CONTROL with VMX on.
pub fn skylake() -> MockCpu {
    MockCpu::new()
        .vendor(b"GenuineIntel", 0x16)
        .leaf(
            leaf::FEATURES,
            [0x0005_06E3, 0x0010_0800, 0x7FFA_FBBF, 0xBFEB_FBFF],
        )
        .leaf(leaf::EXT_MAX, [0x8000_0008, 0, 0, 0])
        .leaf(leaf::EXT_FEATURES, [0, 0, 0x0000_0121, 0x2C10_0800])
        .brand(b"Intel(R) Core(TM) i7-6700K CPU @ 4.00GHz")
        .msr(msr::IA32_FEATURE_CONTROL, 0x5)
        .msr(msr::IA32_VMX_BASIC, 0x00DA_0400_0000_0004)
        .msr(msr::IA32_VMX_PINBASED_CTLS, 0x0000_007F_0000_0016)
        .msr(msr::IA32_VMX_PROCBASED_CTLS, 0xFFF9_FFFE_0401_E172)
        .msr(msr::IA32_VMX_EXIT_CTLS, 0x01FF_FFFF_0003_6DFF)
        .msr(msr::IA32_VMX_ENTRY_CTLS, 0x0003_FFFF_0000_11FF)
        .msr(msr::IA32_VMX_MISC, 0x0000_0000_7004_C1E7)
        .msr(msr::IA32_VMX_CR0_FIXED0, 0x8000_0021)
        .msr(msr::IA32_VMX_CR0_FIXED1, 0xFFFF_FFFF)
        .msr(msr::IA32_VMX_CR4_FIXED0, 0x2000)
        .msr(msr::IA32_VMX_CR4_FIXED1, 0x0037_67FF)
        .msr(msr::IA32_VMX_PROCBASED_CTLS2, 0x001F_FCFF_0000_0000)
        .msr(msr::IA32_VMX_EPT_VPID_CAP, 0x0000_0F01_0673_4141)
        .msr(msr::IA32_VMX_TRUE_PINBASED_CTLS, 0x0000_007F_0000_0016)
        .msr(msr::IA32_VMX_TRUE_PROCBASED_CTLS, 0xFFF9_FFFE_0400_6172)
        .msr(msr::IA32_VMX_TRUE_EXIT_CTLS, 0x01FF_FFFF_0003_6DFB)
        .msr(msr::IA32_VMX_TRUE_ENTRY_CTLS, 0x0003_FFFF_0000_11FB)
}

/// Bochs 2.7 `cpu: model=corei7_skylake_x`: VMCS revision 0x2B, 4 KiB VMCS, TRUE controls,
/// EPT (4-level, WB, 2M/1G, INVEPT, A/D), VPID, unrestricted guest; IA32_FEATURE_CONTROL
/// already locked with VMX on.
pub fn bochs_skylake_x() -> MockCpu {
    MockCpu::new()
        .vendor(b"GenuineIntel", 0x16)
        .leaf(
            leaf::FEATURES,
            [0x0005_0654, 0x0000_0800, 0x7FFE_FBFF, 0xBFEB_FBFF],
        )
        .leaf(leaf::EXT_MAX, [0x8000_0008, 0, 0, 0])
        .leaf(leaf::EXT_FEATURES, [0, 0, 0x0000_0121, 0x2C10_0800])
        .brand(b"Intel(R) Core(TM) i7-7800X CPU @ 3.50GHz")
        .msr(msr::IA32_FEATURE_CONTROL, 0x5)
        .msr(msr::IA32_VMX_BASIC, 0x00D8_1000_0000_002B)
        .msr(msr::IA32_VMX_PINBASED_CTLS, 0x0000_00FF_0000_0016)
        .msr(msr::IA32_VMX_PROCBASED_CTLS, 0xFFFB_FFFE_0401_E172)
        .msr(msr::IA32_VMX_EXIT_CTLS, 0x00FF_FFFF_0003_6DFF)
        .msr(msr::IA32_VMX_ENTRY_CTLS, 0x0003_FFFF_0000_11FF)
        .msr(msr::IA32_VMX_MISC, 0x0000_0000_0000_01C5)
        .msr(msr::IA32_VMX_CR0_FIXED0, 0x8000_0021)
        .msr(msr::IA32_VMX_CR0_FIXED1, 0xFFFF_FFFF)
        .msr(msr::IA32_VMX_CR4_FIXED0, 0x2000)
        .msr(msr::IA32_VMX_CR4_FIXED1, 0x0037_77FF)
        .msr(msr::IA32_VMX_PROCBASED_CTLS2, 0x0217_77FF_0000_0000)
        .msr(msr::IA32_VMX_EPT_VPID_CAP, 0x0000_0F01_0633_4141)
        .msr(msr::IA32_VMX_TRUE_PINBASED_CTLS, 0x0000_00FF_0000_0016)
        .msr(msr::IA32_VMX_TRUE_PROCBASED_CTLS, 0xFFFB_FFFE_0400_6172)
        .msr(msr::IA32_VMX_TRUE_EXIT_CTLS, 0x00FF_FFFF_0003_6DFB)
        .msr(msr::IA32_VMX_TRUE_ENTRY_CTLS, 0x0003_FFFF_0000_11FB)
}

/// Intel Core 2 (Merom): VMX without TRUE controls and without secondary controls, so no EPT
/// and no unrestricted guest.
pub fn core2() -> MockCpu {
    MockCpu::new()
        .vendor(b"GenuineIntel", 0xA)
        .leaf(
            leaf::FEATURES,
            [0x0000_06F6, 0x0002_0800, 0x0000_E3BD, 0xBFEB_FBFF],
        )
        .leaf(leaf::EXT_MAX, [0x8000_0008, 0, 0, 0])
        .leaf(leaf::EXT_FEATURES, [0, 0, 0x0000_0001, 0x2010_0800])
        .brand(b"Intel(R) Core(TM)2 CPU          6600  @ 2.40GHz")
        .msr(msr::IA32_FEATURE_CONTROL, 0x5)
        .msr(msr::IA32_VMX_BASIC, 0x005A_0800_0000_000D)
        .msr(msr::IA32_VMX_PINBASED_CTLS, 0x0000_003F_0000_0016)
        .msr(msr::IA32_VMX_PROCBASED_CTLS, 0x77F9_FFFE_0401_E172)
        .msr(msr::IA32_VMX_EXIT_CTLS, 0x0003_FFFF_0003_6DFF)
        .msr(msr::IA32_VMX_ENTRY_CTLS, 0x0000_3FFF_0000_11FF)
        .msr(msr::IA32_VMX_MISC, 0x0000_0000_0004_03C0)
        .msr(msr::IA32_VMX_CR0_FIXED0, 0x8000_0021)
        .msr(msr::IA32_VMX_CR0_FIXED1, 0xFFFF_FFFF)
        .msr(msr::IA32_VMX_CR4_FIXED0, 0x2000)
        .msr(msr::IA32_VMX_CR4_FIXED1, 0x0000_27FF)
}

/// Intel Core i7-920 (Nehalem): EPT and VPID but no unrestricted guest (that came with
/// Westmere).
pub fn nehalem() -> MockCpu {
    skylake()
        .map_leaf(leaf::FEATURES, |r| r.eax = 0x0001_06A5)
        .brand(b"Intel(R) Core(TM) i7 CPU         920  @ 2.67GHz")
        .msr(msr::IA32_VMX_BASIC, 0x00DA_0400_0000_000E)
        .msr(msr::IA32_VMX_PROCBASED_CTLS2, 0x0000_007B_0000_0000)
        .msr(msr::IA32_VMX_EPT_VPID_CAP, 0x0000_0F01_0611_4141)
}

/// QEMU 7.2 TCG `-cpu qemu64,+svm,+npt`: SVM revision 1, 16 ASIDs, nested paging only (no
/// NRIP save); VM_CR not implemented.
pub fn qemu64_svm_npt() -> MockCpu {
    MockCpu::new()
        .vendor(b"AuthenticAMD", 0xD)
        .leaf(
            leaf::FEATURES,
            [0x0006_0FB1, 0x0000_0800, 0x8000_2001, 0x0781_ABFD],
        )
        .leaf(leaf::EXT_MAX, [0x8000_000A, 0, 0, 0])
        .leaf(
            leaf::EXT_FEATURES,
            [0x0006_0FB1, 0, 0x0000_0005, 0x2010_0800],
        )
        .brand(b"QEMU Virtual CPU version 2.5+")
        .leaf(leaf::SVM_FEATURES, [0x1, 0x10, 0, 0x1])
}

/// QEMU `-cpu qemu64` without `+svm`: no extension at all.
pub fn qemu64() -> MockCpu {
    qemu64_svm_npt()
        .map_leaf(leaf::EXT_FEATURES, |r| r.ecx = 0x1)
        .leaf(leaf::SVM_FEATURES, [0, 0, 0, 0])
}

/// AMD EPYC 7702 (Zen 2): nested paging, NRIP save, VMCB clean, decode assists, AVIC, 32768
/// ASIDs; firmware left SVM enabled and locked VM_CR.
pub fn epyc() -> MockCpu {
    MockCpu::new()
        .vendor(b"AuthenticAMD", 0x10)
        .leaf(
            leaf::FEATURES,
            [0x0083_0F10, 0x0040_0800, 0xFED8_3203, 0x178B_FBFF],
        )
        .leaf(leaf::EXT_MAX, [0x8000_0023, 0, 0, 0])
        .leaf(
            leaf::EXT_FEATURES,
            [0x0083_0F10, 0x4000_0000, 0x75C2_37FF, 0x2FD3_FBFF],
        )
        .brand(b"AMD EPYC 7702 64-Core Processor                ")
        .leaf(leaf::SVM_FEATURES, [0x1, 0x8000, 0, 0x0001_B4FF])
        .msr(msr::VM_CR, 0x8)
}
