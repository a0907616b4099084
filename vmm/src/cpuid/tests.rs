use core::cell::RefCell;

use super::*;

/// A CPU described by a table of `(leaf, subleaf) -> result`; unknown leaves return the
/// `fallback` (Intel repeats the highest basic leaf; this makes such leaks obvious).
struct TableCpu {
    leaves: Vec<((u32, u32), CpuidResult)>,
    fallback: CpuidResult,
    calls: RefCell<u32>,
}

const ONES: CpuidResult = CpuidResult {
    eax: u32::MAX,
    ebx: u32::MAX,
    ecx: u32::MAX,
    edx: u32::MAX,
};

fn r(eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidResult {
    CpuidResult { eax, ebx, ecx, edx }
}

impl TableCpu {
    fn new() -> Self {
        TableCpu {
            leaves: Vec::new(),
            fallback: ONES,
            calls: RefCell::new(0),
        }
    }

    fn leaf(mut self, leaf: u32, subleaf: u32, result: CpuidResult) -> Self {
        self.leaves.retain(|(k, _)| *k != (leaf, subleaf));
        self.leaves.push(((leaf, subleaf), result));
        self
    }

    fn vendor(self, vendor: &[u8; 12], max_basic: u32) -> Self {
        let w =
            |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
        self.leaf(0, 0, r(max_basic, w(0), w(8), w(4)))
    }

    /// Everything ones in leaf 1 and 8000_0001h, and in the leaves filtered to zero.
    fn all_features(self, max_ext: u32) -> Self {
        let mut cpu = self
            .leaf(1, 0, r(0x000A_0655, 0x0A10_0800, u32::MAX, u32::MAX))
            .leaf(7, 0, r(1, u32::MAX, u32::MAX, u32::MAX))
            .leaf(7, 1, ONES)
            .leaf(EXT_BASE, 0, r(max_ext, 0, 0, 0))
            .leaf(
                0x8000_0001,
                0,
                r(0x00A2_0F10, 0x2000_0000, u32::MAX, u32::MAX),
            )
            .leaf(0x8000_0007, 0, ONES)
            .leaf(0x8000_0008, 0, r(0x0000_3030, u32::MAX, u32::MAX, u32::MAX))
            .leaf(0x8000_000A, 0, ONES)
            .leaf(0x8000_001E, 0, ONES);
        for leaf in [2, 3, 5, 6, 0xA, 0xD, 0x15, 0x16, 0x1F] {
            cpu = cpu.leaf(leaf, 0, ONES);
        }
        cpu
    }

    /// An Intel-like host: VMX and the usual Skylake-server bits.
    fn intel() -> Self {
        Self::new()
            .vendor(b"GenuineIntel", 0x1F)
            .all_features(0x8000_0008)
            .leaf(4, 0, r(0x1C00_4121, 0x01C0_003F, 0x3F, 0))
            .leaf(4, 1, r(0x1C00_4143, 0x03C0_003F, 0x3FF, 0))
            .leaf(4, 2, r(0x0000_0000, 0, 0, 0))
            .leaf(0xB, 0, r(1, 2, 0x100, 7))
            .leaf(0xB, 1, r(5, 16, 0x201, 7))
            .leaf(0xB, 2, r(0, 0, 2, 7))
            .leaf(0xD, 0, r(0x2E7, 0xA88, 0xA88, 0))
            .leaf(0xD, 1, r(0xF, 0, 0x100, 0))
    }

    /// An AMD-like host: SVM, extended leaves up to 8000_0021h.
    fn amd() -> Self {
        Self::new()
            .vendor(b"AuthenticAMD", 0x10)
            .all_features(0x8000_0021)
            .leaf(0x8000_0002, 0, r(0x2044_4D41, 0x6F7A_7952, 0, 0))
    }
}

impl CpuProbe for TableCpu {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        *self.calls.borrow_mut() += 1;
        self.leaves
            .iter()
            .find(|(k, _)| *k == (leaf, subleaf))
            .map(|(_, v)| *v)
            .unwrap_or(self.fallback)
    }
    fn rdmsr(&self, _msr: u32) -> Option<u64> {
        None
    }
}

#[test]
fn vmx_and_svm_are_hidden_on_intel_and_amd() {
    for cpu in [TableCpu::intel(), TableCpu::amd()] {
        let p = CpuidPolicy::from_host(&cpu);
        assert_eq!(p.host(1, 0).unwrap().ecx & leaf1_ecx::VMX, leaf1_ecx::VMX);
        assert_eq!(p.query(1, 0, 0).ecx & leaf1_ecx::VMX, 0);
        assert_eq!(p.query(1, 0, 0).ecx & leaf1_ecx::SMX, 0);
        let ext = p.query(0x8000_0001, 0, 0);
        assert_eq!(ext.ecx & ext1::ECX_SVM, 0);
        assert_eq!(ext.ecx & ext1::ECX_SKINIT, 0);
        assert_eq!(p.query(0x8000_000A, 0, 0), CpuidResult::default());
        // And detection run on the guest's view finds nothing to nest.
        struct Guest<'a>(&'a CpuidPolicy);
        impl CpuProbe for Guest<'_> {
            fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
                self.0.query(leaf, subleaf, 0)
            }
            fn rdmsr(&self, _msr: u32) -> Option<u64> {
                None
            }
        }
        assert!(!crate::detect::probe(&Guest(&p)).is_available());
    }
}

#[test]
fn leaf1_ecx_filter() {
    let p = CpuidPolicy::from_host(&TableCpu::intel());
    let ecx = p.query(1, 0, 0).ecx;
    for (bit, name) in [
        (3, "MONITOR"),
        (4, "DS-CPL"),
        (5, "VMX"),
        (6, "SMX"),
        (7, "EST"),
        (8, "TM2"),
        (15, "PDCM"),
        (21, "x2APIC"),
        (24, "TSC-deadline"),
        (26, "XSAVE"),
        (27, "OSXSAVE"),
        (28, "AVX"),
    ] {
        assert_eq!(ecx & (1 << bit), 0, "{name} (bit {bit}) must be hidden");
    }
    assert_eq!(ecx & leaf1_ecx::HYPERVISOR, leaf1_ecx::HYPERVISOR);
    // Plain SSE-family features stay: SSE3 0, SSSE3 9, SSE4.1 19, SSE4.2 20, POPCNT 23.
    for bit in [0, 1, 9, 13, 19, 20, 23, 25, 30] {
        assert_ne!(ecx & (1 << bit), 0, "bit {bit} should stay");
    }
    assert_eq!(ecx, !leaf1_ecx::HIDDEN);
}

#[test]
fn leaf1_edx_and_ebx() {
    let p = CpuidPolicy::from_host(&TableCpu::intel());
    let l1 = p.query(1, 0, 0);
    assert_eq!(l1.edx, !leaf1_edx::HIDDEN);
    assert_ne!(l1.edx & (1 << 4), 0, "TSC stays");
    assert_ne!(l1.edx & (1 << 9), 0, "APIC stays");
    assert_eq!(l1.eax, 0x000A_0655, "signature passes through");
    // Host EBX 0x0A10_0800: APIC ID 0x0A, 16 logical processors, CLFLUSH 8 (64 bytes).
    assert_eq!(l1.ebx, 0x0001_0800);
    assert_eq!(p.query(1, 0, 3).ebx, 0x0301_0800);
    assert_eq!(
        p.query(1, 0, 0x1FF).ebx >> 24,
        0xFF,
        "only 8 bits of APIC ID"
    );
}

#[test]
fn zeroed_leaves() {
    for cpu in [TableCpu::intel(), TableCpu::amd()] {
        let p = CpuidPolicy::from_host(&cpu);
        for (leaf, sub) in [
            (3, 0),
            (5, 0),
            (6, 0),
            (0xA, 0),
            (0xD, 0),
            (0xD, 1),
            (0x1F, 0),
            (7, 1),
            (0x4000_0001, 0),
            (0x4000_0002, 0),
            (0x4000_0100, 0),
            (0x8000_000A, 0),
            (0x8000_001E, 0),
            (0x8FFF_FFFF, 0),
            (0xC000_0000, 0),
            (0x2000_0000, 0),
            (BASIC_LIMIT + 1, 0),
        ] {
            assert_eq!(
                p.query(leaf, sub, 0),
                CpuidResult::default(),
                "leaf {leaf:#x}.{sub}"
            );
        }
    }
}

#[test]
fn basic_leaves_above_the_host_maximum_are_zero() {
    // The AMD table's max basic leaf is 0x10; the fallback (all ones) must not leak.
    let p = CpuidPolicy::from_host(&TableCpu::amd());
    assert_eq!(p.max_basic_leaf(), 0x10);
    assert_eq!(p.query(0x11, 0, 0), CpuidResult::default());
    assert_eq!(p.query(0x15, 0, 0), CpuidResult::default());
    assert_eq!(p.query(0x8000_0022, 0, 0), CpuidResult::default());
    assert_eq!(p.query(0, 0, 0).eax, 0x10);
    assert_eq!(p.query(EXT_BASE, 0, 0).eax, 0x8000_0021);
}

#[test]
fn leaf7_hides_avx2_avx512_and_xsave_dependents() {
    let p = CpuidPolicy::from_host(&TableCpu::intel());
    let l7 = p.query(7, 0, 0);
    assert_eq!(l7.eax, 0, "only subleaf 0 is offered");
    assert_eq!(l7.ebx & leaf7::EBX_AVX2, 0);
    for bit in [16, 17, 21, 26, 27, 28, 30, 31] {
        assert_eq!(l7.ebx & (1 << bit), 0, "AVX-512 EBX bit {bit}");
    }
    for bit in [1, 6, 11, 12, 14] {
        assert_eq!(l7.ecx & (1 << bit), 0, "AVX-512 ECX bit {bit}");
    }
    for bit in [2, 3, 8, 23] {
        assert_eq!(l7.edx & (1 << bit), 0, "AVX-512 EDX bit {bit}");
    }
    // MPX (EBX 14), PKU (ECX 3), CET (ECX 7, EDX 20), AMX (EDX 22, 24, 25), VAES (ECX 9),
    // LA57 (ECX 16), RDPID (ECX 22).
    assert_eq!(l7.ebx & (1 << 14), 0);
    for bit in [3, 7, 9, 10, 16, 22] {
        assert_eq!(l7.ecx & (1 << bit), 0, "ECX bit {bit}");
    }
    for bit in [20, 22, 24, 25, 26, 27, 28, 29, 30, 31] {
        assert_eq!(l7.edx & (1 << bit), 0, "EDX bit {bit}");
    }
    assert_eq!(l7.ebx, leaf7::EBX_ALLOWED);
    assert_ne!(l7.ebx & (1 << 8), 0, "BMI2 stays");
}

#[test]
fn signature_leaf() {
    let p = CpuidPolicy::from_host(&TableCpu::amd());
    let sig = p.query(HYPERVISOR_LEAF, 0, 0);
    assert_eq!(sig.eax, 0x4000_0001);
    let mut bytes = Vec::new();
    for reg in [sig.ebx, sig.ecx, sig.edx] {
        bytes.extend_from_slice(&reg.to_le_bytes());
    }
    assert_eq!(bytes, b"KeelKeelKeel");
    assert_eq!(sig.ebx, 0x6C65_654B, "'K' in the low byte, as KVM's 'KVMK'");
    assert_eq!(
        p.query(HYPERVISOR_LEAF, 5, 2),
        sig,
        "subleaf and vCPU do not matter"
    );
}

#[test]
fn extended_leaves() {
    let p = CpuidPolicy::from_host(&TableCpu::amd());
    let e1 = p.query(0x8000_0001, 0, 0);
    assert_eq!(e1.eax, 0x00A2_0F10);
    assert_eq!(e1.ecx, ext1::ECX_ALLOWED);
    assert_eq!(e1.edx, ext1::EDX_ALLOWED);
    assert_eq!(e1.edx & (1 << 27), 0, "RDTSCP hidden");
    assert_ne!(e1.edx & (1 << 29), 0, "long mode stays");
    assert_ne!(e1.edx & (1 << 20), 0, "NX stays");
    assert_eq!(
        p.query(0x8000_0002, 0, 0),
        r(0x2044_4D41, 0x6F7A_7952, 0, 0)
    );
    assert_eq!(p.query(0x8000_0007, 0, 0), r(0, 0, 0, 1 << 8));
    assert_eq!(p.query(0x8000_0008, 0, 0), r(0x3030, 0, 0, 0));
}

#[test]
fn topology_is_one_processor() {
    let p = CpuidPolicy::from_host(&TableCpu::intel());
    let l4 = p.query(4, 0, 0);
    assert_eq!(l4.eax, 0x121);
    assert_eq!(l4.ebx, 0x01C0_003F);
    assert_eq!(p.query(4, 1, 0).eax, 0x143);
    assert_eq!(p.query(4, 2, 0), CpuidResult::default());
    assert_eq!(
        p.query(4, 9, 0),
        CpuidResult::default(),
        "beyond the last cache"
    );
    assert_eq!(p.query(0xB, 0, 5), r(0, 1, 0x100, 5));
    assert_eq!(p.query(0xB, 1, 5), r(0, 1, 0x201, 5));
    assert_eq!(p.query(0xB, 2, 5), r(0, 0, 2, 5));
    // The host's own topology was snapshotted all the same.
    assert_eq!(p.host(0xB, 1), Some(r(5, 16, 0x201, 7)));
    // A host without leaf 0xB gets none.
    let amd = CpuidPolicy::from_host(&TableCpu::amd().vendor(b"AuthenticAMD", 7));
    assert_eq!(amd.query(0xB, 0, 0), CpuidResult::default());
}

#[test]
fn snapshot_enumerates_subleaves() {
    let p = CpuidPolicy::from_host(&TableCpu::intel());
    assert_eq!(
        p.host(4, 2),
        Some(CpuidResult::default()),
        "null cache type read"
    );
    assert_eq!(p.host(4, 3), None);
    assert_eq!(p.host(7, 1), Some(ONES));
    assert_eq!(p.host(7, 2), None);
    assert_eq!(p.host(0xB, 2), Some(r(0, 0, 2, 7)));
    assert_eq!(p.host(0xB, 3), None);
    // XCR0 0x2E7 announces components 2, 5, 6, 7, 9; IA32_XSS 0x100 component 8.
    for sub in [0, 1, 2, 5, 6, 7, 8, 9] {
        assert!(p.host(0xD, sub).is_some(), "0xD.{sub}");
    }
    for sub in [3, 4, 10, 62] {
        assert!(p.host(0xD, sub).is_none(), "0xD.{sub}");
    }
    // Leaves without subleaves ignore ECX.
    assert_eq!(p.host(1, 7), p.host(1, 0));
    assert_eq!(p.query(1, 7, 0), p.query(1, 0, 0));
}

#[test]
fn hosts_without_extended_leaves_and_absurd_maxima() {
    // 8000_0000h echoing a basic leaf is not an extended maximum.
    let cpu = TableCpu::new()
        .vendor(b"GenuineIntel", 2)
        .leaf(EXT_BASE, 0, r(0x0000_0D05, 0, 0, 0));
    let p = CpuidPolicy::from_host(&cpu);
    assert_eq!(p.max_extended_leaf(), 0);
    assert_eq!(p.query(EXT_BASE, 0, 0), CpuidResult::default());
    assert_eq!(p.query(0x8000_0001, 0, 0), CpuidResult::default());

    // A CPU claiming every leaf exists is read only up to the limits.
    let cpu = TableCpu::new();
    let p = CpuidPolicy::from_host(&cpu);
    assert_eq!(p.max_basic_leaf(), BASIC_LIMIT);
    assert_eq!(p.max_extended_leaf(), 0, "0xFFFF_FFFF is not 8000_xxxxh");
    assert!(*cpu.calls.borrow() < 1000, "{} CPUIDs", cpu.calls.borrow());
    let cpu = TableCpu::new().leaf(EXT_BASE, 0, r(0x8000_FFFF, 0, 0, 0));
    let p = CpuidPolicy::from_host(&cpu);
    assert_eq!(p.max_extended_leaf(), EXT_LIMIT);
    assert_eq!(p.query(0x8000_0001, 0, 0).ecx & ext1::ECX_SVM, 0);
}

#[test]
fn a_known_tsc_frequency_shows_tsc_deadline_and_the_timing_leaf() {
    let host = TableCpu::intel();
    let without = CpuidPolicy::from_host(&host);
    assert_eq!(without.query(1, 0, 0).ecx & leaf1_ecx::TSC_DEADLINE, 0);
    assert_eq!(without.query(TIMING_LEAF, 0, 0), CpuidResult::default());
    assert_eq!(
        without.query(HYPERVISOR_LEAF, 0, 0).eax,
        HYPERVISOR_FEATURES_LEAF
    );

    let with = CpuidPolicy::from_host(&host).with_tsc_hz(2_100_000_000);
    assert_eq!(with.query(HYPERVISOR_LEAF, 0, 0).eax, TIMING_LEAF);
    let timing = with.query(TIMING_LEAF, 0, 0);
    assert_eq!((timing.eax, timing.ebx), (2_100_000, LAPIC_BUS_KHZ));
    // Leaf 0x15: TSC = crystal × EBX / EAX, and Linux's 32-bit product
    // crystal_khz × EBX must not overflow.
    for hz in [
        2_100_000_000u64,
        2_601_861_600,
        3_500_000_000,
        5_000_000_000,
        3_896_000,
    ] {
        let ratio = CpuidPolicy::from_host(&host)
            .with_tsc_hz(hz)
            .query(0x15, 0, 0);
        let crystal_khz = ratio.ecx / 1000;
        let linux_khz = crystal_khz
            .checked_mul(ratio.ebx)
            .expect("no 32-bit overflow")
            / ratio.eax;
        // Within 10 ppm (and a kHz).
        assert!(
            u64::from(linux_khz).abs_diff(hz / 1000) <= 1 + hz / 100_000_000,
            "{hz} Hz became {linux_khz} kHz"
        );
    }
    // Only if the host has it: the filter never adds a feature the CPU lacks.
    assert_ne!(with.query(1, 0, 0).ecx & leaf1_ecx::TSC_DEADLINE, 0);
    let bare = TableCpu::new()
        .vendor(b"GenuineIntel", 1)
        .leaf(1, 0, r(0x000A_0655, 0, 0, 0));
    let bare = CpuidPolicy::from_host(&bare).with_tsc_hz(2_100_000_000);
    assert_eq!(bare.query(0, 0, 0).eax, 0x15, "the ratio leaf is reachable");
    assert_ne!(
        bare.query(1, 0, 0).ecx & leaf1_ecx::TSC_DEADLINE,
        0,
        "emulated by the local APIC model, whatever the host has"
    );
    assert_ne!(
        with.query(1, 0, 0).ecx & leaf1_ecx::X2APIC,
        0,
        "the local APIC model has x2APIC mode"
    );
    assert_eq!(without.query(1, 0, 0).ecx & leaf1_ecx::X2APIC, 0);
}

#[test]
fn each_vcpu_policy_answers_with_its_own_apic_id() {
    let bsp = CpuidPolicy::from_host(&TableCpu::intel());
    assert_eq!(bsp.vcpu_id(), 0);
    let ap = bsp.clone().with_vcpu_id(3);
    assert_eq!(ap.vcpu_id(), 3);
    let id = ap.vcpu_id();
    assert_eq!(ap.query(1, 0, id).ebx >> 24, 3);
    assert_eq!(ap.query(0xB, 0, id).edx, 3, "x2APIC id");
    // Everything else is the BSP's.
    assert_eq!(ap.query(7, 0, id), bsp.query(7, 0, 0));
}

#[test]
fn kvm_leaves_follow_keels_with_paravirt_kvm() {
    let p = CpuidPolicy::from_host(&TableCpu::amd())
        .with_tsc_hz(2_500_000_000)
        .with_paravirt(Paravirt::Kvm);
    assert_eq!(p.paravirt(), Paravirt::Kvm);
    // Keel's own leaves are unchanged: its signature, the timing leaf its maximum.
    let keel = p.query(HYPERVISOR_LEAF, 0, 0);
    assert_eq!(keel.eax, TIMING_LEAF);
    assert_eq!(keel.ebx.to_le_bytes(), *b"Keel");
    assert_eq!(
        p.query(TIMING_LEAF, 0, 0),
        r(2_500_000, LAPIC_BUS_KHZ, 0, 0)
    );
    // KVM's at 0x4000_0100, as Linux's scan in steps of 0x100 finds it.
    let kvm = p.query(0x4000_0100, 0, 1);
    let mut bytes = Vec::new();
    for reg in [kvm.ebx, kvm.ecx, kvm.edx] {
        bytes.extend_from_slice(&reg.to_le_bytes());
    }
    assert_eq!(bytes, b"KVMKVMKVM\0\0\0");
    assert_eq!(kvm.eax, 0x4000_0101, "the highest KVM leaf");
    // kvm-clock (CLOCKSOURCE2, bit 3) and its stable bit (24); nothing else, no hints.
    assert_eq!(p.query(0x4000_0101, 0, 0), r(1 << 3 | 1 << 24, 0, 0, 0));
    assert_eq!(p.kvm_features(), 1 << 3 | 1 << 24);
    for leaf in [0x4000_0102, 0x4000_0110, 0x4000_0200, 0x4000_0001] {
        assert_eq!(p.query(leaf, 0, 0), CpuidResult::default(), "{leaf:#x}");
    }
}

#[test]
fn kvm_leaves_read_as_zeros_with_paravirt_none() {
    let base = CpuidPolicy::from_host(&TableCpu::intel()).with_tsc_hz(2_500_000_000);
    for p in [base.clone(), base.clone().with_paravirt(Paravirt::None)] {
        assert_eq!(p.paravirt(), Paravirt::None, "none is the policy's default");
        assert_eq!(p.kvm_features(), 0);
        for leaf in [0x4000_0100, 0x4000_0101] {
            assert_eq!(p.query(leaf, 0, 0), CpuidResult::default(), "{leaf:#x}");
        }
        // Keel's own leaves stay.
        assert_eq!(p.query(HYPERVISOR_LEAF, 0, 0).ebx.to_le_bytes(), *b"Keel");
        assert_eq!(p.query(TIMING_LEAF, 0, 0).eax, 2_500_000);
    }
    // Without a known TSC rate there is no clock to offer: the signature, no features.
    let p = CpuidPolicy::from_host(&TableCpu::intel()).with_paravirt(Paravirt::Kvm);
    assert_eq!(p.query(0x4000_0100, 0, 0).ebx.to_le_bytes(), *b"KVMK");
    assert_eq!(p.query(0x4000_0101, 0, 0), CpuidResult::default());
}
