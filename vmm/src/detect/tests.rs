use super::mock::{
    MockCpu, bochs_skylake_x, core2, epyc, nehalem, qemu64, qemu64_svm_npt, skylake,
};
use super::*;

fn vmx(cpu: &MockCpu) -> VmxCapabilities {
    match probe(cpu) {
        Virtualization::Vmx(caps) => caps,
        other => panic!("expected VT-x, got {other:?} ({other})"),
    }
}

fn svm(cpu: &MockCpu) -> SvmCapabilities {
    match probe(cpu) {
        Virtualization::Svm(caps) => caps,
        other => panic!("expected AMD-V, got {other:?} ({other})"),
    }
}

fn unavailable(cpu: &MockCpu) -> Unavailable {
    match probe(cpu) {
        Virtualization::Unavailable(reason) => reason,
        other => panic!("expected no virtualization, got {other:?} ({other})"),
    }
}

fn missing(features: &[VmxFeature]) -> Unavailable {
    let mut set = MissingVmxFeatures::default();
    for f in features {
        set.insert(*f);
    }
    Unavailable::VmxMissing(set)
}

// ---- VT-x ----

#[test]
fn skylake_has_vmx_with_everything() {
    let cpu = skylake();
    let caps = vmx(&cpu);
    assert_eq!(caps.basic.revision_id(), 4);
    assert_eq!(caps.basic.region_size(), 0x400);
    assert_eq!(caps.basic.memory_type(), 6);
    assert!(caps.basic.true_controls());
    assert!(caps.basic.ins_outs_info());
    assert!(!caps.basic.addresses_limited_to_32_bits());
    assert!(!caps.needs_feature_control_enable);
    assert_eq!(caps.feature_control, 0x5);
    assert!(caps.vpid);
    assert!(caps.unrestricted_guest);
    let ept = caps.ept_vpid;
    assert!(ept.walk_length_4() && ept.write_back());
    assert!(ept.pages_2m() && ept.pages_1g());
    assert!(ept.invept() && ept.accessed_dirty());
    assert!(ept.invept_single_context() && ept.invept_all_context());
    assert!(ept.execute_only() && ept.uncacheable());
    assert!(!ept.walk_length_5());
    assert!(ept.invvpid() && ept.invvpid_single_context() && ept.invvpid_all_context());
    // TRUE controls were used (bit 55 set): the TRUE primary MSR clears CR3-load exiting's
    // default-1 requirement (bits 15/16), the legacy one does not.
    assert_eq!(caps.proc_based.raw(), 0xFFF9_FFFE_0400_6172);
    assert_eq!(caps.exit.raw(), 0x01FF_FFFF_0003_6DFB);
    assert_eq!(caps.entry.raw(), 0x0003_FFFF_0000_11FB);
    assert_eq!(caps.pin_based.raw(), 0x0000_007F_0000_0016);
    assert_eq!(caps.proc_based2.allowed1, 0x001F_FCFF);
    assert_eq!(caps.misc, 0x7004_C1E7);
    assert_eq!(
        (
            caps.cr0_fixed0,
            caps.cr0_fixed1,
            caps.cr4_fixed0,
            caps.cr4_fixed1
        ),
        (0x8000_0021, 0xFFFF_FFFF, 0x2000, 0x0037_67FF)
    );
    assert_eq!(
        probe(&cpu).to_string(),
        "VT-x with EPT and unrestricted guest, VPID"
    );
}

#[test]
fn bochs_skylake_x_has_vmx() {
    let caps = vmx(&bochs_skylake_x());
    assert_eq!(caps.basic.revision_id(), 0x2B);
    assert_eq!(caps.basic.region_size(), 4096);
    assert_eq!(caps.basic.memory_type(), 6);
    assert!(caps.vpid && caps.unrestricted_guest);
    assert!(caps.ept_vpid.pages_2m() && caps.ept_vpid.pages_1g());
    assert!(caps.ept_vpid.invept() && caps.ept_vpid.accessed_dirty());
    assert!(!caps.needs_feature_control_enable);
    assert_eq!(
        probe(&bochs_skylake_x()).to_string(),
        "VT-x with EPT and unrestricted guest, VPID"
    );
}

#[test]
fn vmx_without_vpid_prints_no_vpid() {
    let cpu = skylake().msr(msr::IA32_VMX_PROCBASED_CTLS2, 0x001F_FCDF_0000_0000);
    let caps = vmx(&cpu);
    assert!(!caps.vpid);
    assert_eq!(
        probe(&cpu).to_string(),
        "VT-x with EPT and unrestricted guest"
    );
}

#[test]
fn feature_control_locked_with_vmx_off_is_disabled_by_firmware() {
    // Locked, nothing enabled; and locked with VMX enabled inside SMX only.
    for value in [0x1, 0x3] {
        let cpu = skylake().msr(msr::IA32_FEATURE_CONTROL, value);
        assert_eq!(unavailable(&cpu), Unavailable::VmxDisabledByFirmware);
        assert_eq!(
            probe(&cpu).to_string(),
            "none (VT-x is disabled by the firmware (IA32_FEATURE_CONTROL locked with VMX \
             off): enable Intel Virtualization Technology in the BIOS setup)"
        );
        // Nothing past the feature-control MSR is read.
        let cpu = skylake().msr(msr::IA32_FEATURE_CONTROL, value);
        probe(&cpu);
        assert_eq!(cpu.msr_reads(), [msr::IA32_FEATURE_CONTROL]);
    }
}

#[test]
fn unlocked_feature_control_is_usable_and_needs_enabling() {
    for value in [0x0, 0x4, 0x6] {
        let cpu = skylake().msr(msr::IA32_FEATURE_CONTROL, value);
        let caps = vmx(&cpu);
        assert!(caps.needs_feature_control_enable, "value {value:#x}");
        assert_eq!(caps.feature_control, value);
    }
    // Locked with both enables: fine as is.
    assert!(!vmx(&skylake().msr(msr::IA32_FEATURE_CONTROL, 0x7)).needs_feature_control_enable);
}

#[test]
fn core2_lacks_secondary_controls() {
    let cpu = core2();
    let reason = unavailable(&cpu);
    assert_eq!(
        reason,
        missing(&[
            VmxFeature::SecondaryControls,
            VmxFeature::Ept,
            VmxFeature::UnrestrictedGuest
        ])
    );
    assert_eq!(
        reason.to_string(),
        "VT-x lacks secondary processor-based controls, EPT and unrestricted guest (Keel \
         needs EPT with a 4-level walk and write-back memory, and unrestricted guest)"
    );
    let reads = cpu.msr_reads();
    // Neither PROCBASED_CTLS2 nor EPT_VPID_CAP exists on this CPU, and without bit 55 the
    // TRUE MSRs do not either: none of them may be read.
    for absent in [
        msr::IA32_VMX_PROCBASED_CTLS2,
        msr::IA32_VMX_EPT_VPID_CAP,
        msr::IA32_VMX_TRUE_PINBASED_CTLS,
        msr::IA32_VMX_TRUE_PROCBASED_CTLS,
        msr::IA32_VMX_TRUE_EXIT_CTLS,
        msr::IA32_VMX_TRUE_ENTRY_CTLS,
    ] {
        assert!(!reads.contains(&absent), "read MSR {absent:#x}");
    }
    assert!(reads.contains(&msr::IA32_VMX_PROCBASED_CTLS));
}

#[test]
fn nehalem_lacks_unrestricted_guest() {
    let reason = unavailable(&nehalem());
    assert_eq!(reason, missing(&[VmxFeature::UnrestrictedGuest]));
    assert!(
        reason
            .to_string()
            .starts_with("VT-x lacks unrestricted guest (")
    );
}

#[test]
fn missing_ept_is_named() {
    // Secondary controls with unrestricted guest and VPID allowed, but not EPT.
    let cpu = skylake().msr(msr::IA32_VMX_PROCBASED_CTLS2, 0x001F_FCFD_0000_0000);
    assert_eq!(unavailable(&cpu), missing(&[VmxFeature::Ept]));
    assert_eq!(
        probe(&cpu).to_string(),
        "none (VT-x lacks EPT (Keel needs EPT with a 4-level walk and write-back memory, and \
         unrestricted guest))"
    );
}

#[test]
fn ept_without_4_level_walk_or_write_back_is_named() {
    let cpu = skylake().msr(msr::IA32_VMX_EPT_VPID_CAP, 0x0000_0F01_0673_0101);
    assert_eq!(
        unavailable(&cpu),
        missing(&[VmxFeature::EptWalkLength4, VmxFeature::EptWriteBack])
    );
    let cpu = skylake().msr(msr::IA32_VMX_EPT_VPID_CAP, 0x0000_0F01_0673_4101);
    assert_eq!(unavailable(&cpu), missing(&[VmxFeature::EptWalkLength4]));
    let cpu = skylake().msr(msr::IA32_VMX_EPT_VPID_CAP, 0x0000_0F01_0673_0141);
    assert_eq!(unavailable(&cpu), missing(&[VmxFeature::EptWriteBack]));
}

#[test]
fn everything_missing_lists_in_order() {
    // EPT absent and no unrestricted guest, VPID only: EPT_VPID_CAP is still read (VPID).
    let cpu = skylake().msr(msr::IA32_VMX_PROCBASED_CTLS2, 0x0000_0020_0000_0000);
    assert_eq!(
        unavailable(&cpu),
        missing(&[VmxFeature::Ept, VmxFeature::UnrestrictedGuest])
    );
    assert!(cpu.msr_reads().contains(&msr::IA32_VMX_EPT_VPID_CAP));
    // Neither EPT nor VPID: EPT_VPID_CAP does not exist and is not read.
    let cpu = skylake()
        .msr(msr::IA32_VMX_PROCBASED_CTLS2, 0x0000_0001_0000_0000)
        .without_msr(msr::IA32_VMX_EPT_VPID_CAP);
    assert_eq!(
        unavailable(&cpu),
        missing(&[VmxFeature::Ept, VmxFeature::UnrestrictedGuest])
    );
    assert!(!cpu.msr_reads().contains(&msr::IA32_VMX_EPT_VPID_CAP));
}

#[test]
fn true_controls_decide_secondary_controls_when_bit_55_is_set() {
    // Legacy primary MSR says no secondary controls; the TRUE one (which is what applies when
    // bit 55 is set) allows them.
    let cpu = skylake().msr(msr::IA32_VMX_PROCBASED_CTLS, 0x7FF9_FFFE_0401_E172);
    assert!(vmx(&cpu).unrestricted_guest);
    // And the other way round: only the TRUE MSR counts.
    let cpu = skylake().msr(msr::IA32_VMX_TRUE_PROCBASED_CTLS, 0x7FF9_FFFE_0400_6172);
    assert_eq!(
        unavailable(&cpu),
        missing(&[
            VmxFeature::SecondaryControls,
            VmxFeature::Ept,
            VmxFeature::UnrestrictedGuest
        ])
    );
}

#[test]
fn legacy_controls_are_used_without_bit_55() {
    let cpu = skylake()
        .msr(msr::IA32_VMX_BASIC, 0x005A_0400_0000_0004)
        .without_msr(msr::IA32_VMX_TRUE_PINBASED_CTLS)
        .without_msr(msr::IA32_VMX_TRUE_PROCBASED_CTLS)
        .without_msr(msr::IA32_VMX_TRUE_EXIT_CTLS)
        .without_msr(msr::IA32_VMX_TRUE_ENTRY_CTLS);
    let caps = vmx(&cpu);
    assert!(!caps.basic.true_controls());
    assert_eq!(caps.proc_based.raw(), 0xFFF9_FFFE_0401_E172);
    assert_eq!(caps.exit.raw(), 0x01FF_FFFF_0003_6DFF);
}

#[test]
fn unreadable_vmx_msrs_are_named() {
    let cases = [
        (msr::IA32_FEATURE_CONTROL, "IA32_FEATURE_CONTROL"),
        (msr::IA32_VMX_BASIC, "IA32_VMX_BASIC"),
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
        (msr::IA32_VMX_MISC, "IA32_VMX_MISC"),
        (msr::IA32_VMX_CR0_FIXED0, "IA32_VMX_CR0_FIXED0"),
        (msr::IA32_VMX_CR0_FIXED1, "IA32_VMX_CR0_FIXED1"),
        (msr::IA32_VMX_CR4_FIXED0, "IA32_VMX_CR4_FIXED0"),
        (msr::IA32_VMX_CR4_FIXED1, "IA32_VMX_CR4_FIXED1"),
        (msr::IA32_VMX_PROCBASED_CTLS2, "IA32_VMX_PROCBASED_CTLS2"),
        (msr::IA32_VMX_EPT_VPID_CAP, "IA32_VMX_EPT_VPID_CAP"),
    ];
    for (index, name) in cases {
        let cpu = skylake().without_msr(index);
        assert_eq!(
            unavailable(&cpu),
            Unavailable::VmxMsrUnreadable { msr: index, name },
            "MSR {index:#x}"
        );
    }
    assert_eq!(
        unavailable(&skylake().without_msr(msr::IA32_VMX_BASIC)).to_string(),
        "VT-x is reported by CPUID but IA32_VMX_BASIC (MSR 0x480) cannot be read"
    );
}

#[test]
fn first_unreadable_msr_is_the_one_named() {
    // VMX in CPUID, but the first MSRs fault (a broken or minimal emulator).
    let cpu = skylake()
        .without_msr(msr::IA32_FEATURE_CONTROL)
        .without_msr(msr::IA32_VMX_BASIC);
    assert!(matches!(
        unavailable(&cpu),
        Unavailable::VmxMsrUnreadable { msr: 0x3A, .. }
    ));
}

#[test]
fn control_msr_adjust_and_fixed_bits() {
    let caps = vmx(&skylake());
    // Pin-based: bits 1, 2, 4 are default-1 and must be set; bit 7 (posted interrupts) is
    // not allowed on this CPU.
    assert_eq!(caps.pin_based.adjust(0), 0x16);
    assert_eq!(caps.pin_based.adjust(1 << 0), 0x17);
    assert_eq!(caps.pin_based.adjust(1 << 7), 0x16);
    assert!(caps.pin_based.allows(1 << 0 | 1 << 3));
    assert!(!caps.pin_based.allows(1 << 7));
    assert!(caps.pin_based.requires(0x16));
    assert!(!caps.pin_based.requires(1 << 0));
    assert_eq!(
        ControlMsr::from_raw(0x1234_5678_9ABC_DEF0).raw(),
        0x1234_5678_9ABC_DEF0
    );
    // CR0: PE, NE, PG forced on; CR4: VMXE forced on; bits beyond FIXED1 forced off.
    assert_eq!(caps.fixed_cr0(0), 0x8000_0021);
    assert_eq!(caps.fixed_cr4(0), 0x2000);
    assert_eq!(caps.fixed_cr4(1 << 23), 0x2000);
}

#[test]
fn missing_feature_lists_read_naturally() {
    let one = missing(&[VmxFeature::Ept]);
    let two = missing(&[VmxFeature::Ept, VmxFeature::UnrestrictedGuest]);
    let three = missing(&[
        VmxFeature::EptWalkLength4,
        VmxFeature::EptWriteBack,
        VmxFeature::UnrestrictedGuest,
    ]);
    let text = |u: Unavailable| match u {
        Unavailable::VmxMissing(m) => m.to_string(),
        _ => unreachable!(),
    };
    assert_eq!(text(one), "EPT");
    assert_eq!(text(two), "EPT and unrestricted guest");
    assert_eq!(
        text(three),
        "the EPT 4-level page walk, write-back EPT paging structures and unrestricted guest"
    );
    assert!(MissingVmxFeatures::default().is_empty());
    assert_eq!(MissingVmxFeatures::default().to_string(), "");
}

// ---- AMD-V ----

#[test]
fn qemu_tcg_svm_npt_has_svm_without_nrip_save() {
    let cpu = qemu64_svm_npt();
    let caps = svm(&cpu);
    assert_eq!(caps.revision, 1);
    assert_eq!(caps.asid_count, 16);
    assert!(caps.nested_paging);
    assert!(!caps.nrip_save, "QEMU TCG has no NRIP save");
    assert!(!caps.vmcb_clean && !caps.decode_assists && !caps.flush_by_asid);
    assert_eq!(caps.vm_cr, None);
    assert!(!caps.vm_cr_locked());
    assert_eq!(probe(&cpu).to_string(), "AMD-V with NPT");
    // SVM detection never touches the VMX MSRs.
    let cpu = qemu64_svm_npt();
    probe(&cpu);
    assert_eq!(cpu.msr_reads(), [msr::VM_CR]);
}

#[test]
fn epyc_has_svm_with_nrip_save() {
    let cpu = epyc();
    let caps = svm(&cpu);
    assert_eq!(caps.asid_count, 0x8000);
    assert_eq!(caps.features, 0x0001_B4FF);
    assert!(caps.nested_paging && caps.nrip_save && caps.lbr_virt && caps.svm_lock);
    assert!(caps.tsc_rate_msr && caps.vmcb_clean && caps.flush_by_asid && caps.decode_assists);
    assert!(caps.pause_filter && caps.pause_filter_threshold && caps.avic);
    assert!(caps.vmsave_virt && caps.vgif);
    assert_eq!(caps.vm_cr, Some(0x8));
    assert!(caps.vm_cr_locked());
    assert_eq!(probe(&cpu).to_string(), "AMD-V with NPT, NRIP save");
}

#[test]
fn svmdis_is_disabled_by_firmware() {
    // Firmware set SVMDIS and locked VM_CR; and SVMDIS without the lock.
    for value in [0x18, 0x10] {
        let cpu = epyc().msr(msr::VM_CR, value);
        assert_eq!(unavailable(&cpu), Unavailable::SvmDisabledByFirmware);
        assert_eq!(
            probe(&cpu).to_string(),
            "none (AMD-V is disabled by the firmware (VM_CR.SVMDIS): enable SVM in the BIOS \
             setup)"
        );
    }
}

#[test]
fn svm_without_nested_paging_is_unavailable() {
    let cpu = qemu64_svm_npt().leaf(leaf::SVM_FEATURES, [0x1, 0x10, 0, 0x0]);
    assert_eq!(unavailable(&cpu), Unavailable::SvmMissingNestedPaging);
    assert_eq!(
        probe(&cpu).to_string(),
        "none (AMD-V lacks nested paging (NPT), which Keel needs)"
    );
    // NRIP save alone does not help.
    let cpu = qemu64_svm_npt().leaf(leaf::SVM_FEATURES, [0x1, 0x10, 0, 0x8]);
    assert_eq!(unavailable(&cpu), Unavailable::SvmMissingNestedPaging);
}

#[test]
fn svm_leaf_beyond_the_extended_maximum_is_not_trusted() {
    // The mock answers out-of-range leaves with all ones, which would look like NP.
    let cpu = qemu64_svm_npt().leaf(leaf::EXT_MAX, [0x8000_0008, 0, 0, 0]);
    assert_eq!(unavailable(&cpu), Unavailable::SvmMissingNestedPaging);
}

// ---- neither, and odd combinations ----

#[test]
fn qemu64_without_svm_has_no_extension() {
    let cpu = qemu64();
    assert_eq!(unavailable(&cpu), Unavailable::NoExtension);
    assert_eq!(
        probe(&cpu).to_string(),
        "none (this CPU has neither VT-x nor AMD-V)"
    );
    assert!(!probe(&cpu).is_available());
    // No MSR is read on a CPU that announces no extension.
    assert!(cpu.msr_reads().is_empty());
}

#[test]
fn intel_with_vmx_hidden_has_no_extension() {
    let cpu = skylake().map_leaf(leaf::FEATURES, |r| r.ecx &= !(1 << 5));
    assert_eq!(unavailable(&cpu), Unavailable::NoExtension);
    assert!(cpu.msr_reads().is_empty());
}

#[test]
fn cpu_without_leaves_has_no_extension() {
    // Max basic leaf 0 and no extended leaves: the all-ones out-of-range answers (also for
    // leaf 8000_0000h itself) must not be taken for VMX or SVM.
    let cpu = MockCpu::new().vendor(b"GenuineIntel", 0);
    assert_eq!(unavailable(&cpu), Unavailable::NoExtension);
    assert_eq!(
        identify(&cpu).model_name,
        "GenuineIntel family 0x0 model 0x0 stepping 0"
    );
    // Leaf 8000_0000h answering with a basic leaf's data (not 8000_xxxxh).
    let cpu = qemu64_svm_npt().leaf(leaf::EXT_MAX, [0x0000_0D00, 0, 0, 0]);
    assert_eq!(unavailable(&cpu), Unavailable::NoExtension);
}

#[test]
fn other_vendors_are_checked_too() {
    // Hygon Dhyana (Zen-derived) with SVM.
    let cpu = epyc().vendor(b"HygonGenuine", 0xD);
    assert!(probe(&cpu).to_string().starts_with("AMD-V with NPT"));
    // Zhaoxin/Centaur with VMX.
    let cpu = bochs_skylake_x().vendor(b"CentaurHauls", 0xD);
    assert!(probe(&cpu).to_string().starts_with("VT-x with EPT"));
    // An unknown vendor (a hypervisor's CPUID) with SVM.
    let cpu = qemu64_svm_npt().vendor(b"KeelKeelKeel", 0xD);
    assert!(probe(&cpu).to_string().starts_with("AMD-V with NPT"));
}

/// A CPU that claims both extensions: Skylake's VMX MSRs plus QEMU's SVM leaves.
fn both(vendor: &[u8; 12]) -> MockCpu {
    skylake()
        .vendor(vendor, 0x16)
        .leaf(leaf::EXT_MAX, [0x8000_000A, 0, 0, 0])
        .leaf(leaf::EXT_FEATURES, [0, 0, 0x5, 0x2010_0800])
        .leaf(leaf::SVM_FEATURES, [0x1, 0x10, 0, 0x9])
}

#[test]
fn both_extensions_prefer_the_vendors_own() {
    assert!(matches!(
        probe(&both(b"GenuineIntel")),
        Virtualization::Vmx(_)
    ));
    assert!(matches!(
        probe(&both(b"AuthenticAMD")),
        Virtualization::Svm(_)
    ));
    // When the preferred one is unusable the other is taken.
    let cpu = both(b"AuthenticAMD").msr(msr::VM_CR, 0x18);
    assert!(matches!(probe(&cpu), Virtualization::Vmx(_)));
    let cpu = both(b"GenuineIntel").msr(msr::IA32_FEATURE_CONTROL, 0x1);
    assert!(matches!(probe(&cpu), Virtualization::Svm(_)));
    // When neither is usable, the reason is the preferred one's.
    let cpu = both(b"GenuineIntel")
        .msr(msr::IA32_FEATURE_CONTROL, 0x1)
        .msr(msr::VM_CR, 0x18);
    assert_eq!(unavailable(&cpu), Unavailable::VmxDisabledByFirmware);
    let cpu = both(b"AuthenticAMD")
        .msr(msr::IA32_FEATURE_CONTROL, 0x1)
        .msr(msr::VM_CR, 0x18);
    assert_eq!(unavailable(&cpu), Unavailable::SvmDisabledByFirmware);
}

#[test]
fn display_prefixes_match_what_tests_look_for() {
    let cases: [(MockCpu, &str); 5] = [
        (skylake(), "VT-x with EPT"),
        (bochs_skylake_x(), "VT-x with EPT"),
        (qemu64_svm_npt(), "AMD-V with NPT"),
        (epyc(), "AMD-V with NPT"),
        (qemu64(), "none"),
    ];
    for (cpu, prefix) in cases {
        let text = probe(&cpu).to_string();
        assert!(
            text.starts_with(prefix),
            "{text:?} does not start with {prefix:?}"
        );
    }
}

// ---- identity ----

#[test]
fn identifies_skylake() {
    let id = identify(&skylake());
    assert_eq!(id.vendor.as_str(), "GenuineIntel");
    assert!(id.vendor.is_intel() && !id.vendor.is_amd());
    assert_eq!(id.model_name, "Intel(R) Core(TM) i7-6700K CPU @ 4.00GHz");
    assert_eq!((id.family, id.model, id.stepping), (6, 0x5E, 3));
}

#[test]
fn identifies_bochs_and_qemu() {
    let id = identify(&bochs_skylake_x());
    assert_eq!((id.family, id.model, id.stepping), (6, 0x55, 4));
    let id = identify(&qemu64_svm_npt());
    assert_eq!(id.vendor, VendorId::AMD);
    assert_eq!(id.model_name, "QEMU Virtual CPU version 2.5+");
    // qemu64: family 15, model 107, stepping 1.
    assert_eq!((id.family, id.model, id.stepping), (15, 107, 1));
}

#[test]
fn identifies_zen2_with_extended_family_and_trailing_spaces() {
    let id = identify(&epyc());
    assert!(id.vendor.is_amd() && id.vendor.is_amd_family());
    assert_eq!(id.model_name, "AMD EPYC 7702 64-Core Processor");
    assert_eq!((id.family, id.model, id.stepping), (0x17, 0x31, 0));
}

#[test]
fn brand_string_leading_spaces_are_trimmed() {
    let cpu = skylake().brand(b"       Intel(R) Xeon(TM) CPU 3.00GHz");
    assert_eq!(identify(&cpu).model_name, "Intel(R) Xeon(TM) CPU 3.00GHz");
    // Interior runs of spaces are the vendor's and stay.
    assert_eq!(
        identify(&core2()).model_name,
        "Intel(R) Core(TM)2 CPU          6600  @ 2.40GHz"
    );
    // A full 48-byte string without a terminating NUL.
    let full = [b'x'; 48];
    assert_eq!(identify(&skylake().brand(&full)).model_name, "x".repeat(48));
}

#[test]
fn missing_or_blank_brand_string_falls_back_to_family_model_stepping() {
    // Extended leaves stop before the brand string.
    let cpu = core2().leaf(leaf::EXT_MAX, [0x8000_0001, 0, 0, 0]);
    assert_eq!(
        identify(&cpu).model_name,
        "GenuineIntel family 0x6 model 0xf stepping 6"
    );
    // Brand leaves present but blank.
    let cpu = skylake().brand(b"   ");
    assert_eq!(
        identify(&cpu).model_name,
        "GenuineIntel family 0x6 model 0x5e stepping 3"
    );
    // No extended leaves at all.
    let cpu = skylake().leaf(leaf::EXT_MAX, [0x16, 0, 0, 0]);
    assert!(
        identify(&cpu)
            .model_name
            .starts_with("GenuineIntel family 0x6")
    );
}

#[test]
fn odd_vendor_and_brand_bytes_do_not_break_identify() {
    let cpu = skylake()
        .vendor(b"Genu\x00ne\xffntel", 0x16)
        .brand(b"Bad \xff\xfe brand");
    let id = identify(&cpu);
    assert_eq!(id.vendor.as_str(), "Genu?ne?ntel");
    assert_eq!(format!("{:?}", id.vendor), "VendorId(\"Genu?ne?ntel\")");
    assert_eq!(id.model_name, "Bad \u{fffd}\u{fffd} brand");
    assert_eq!(VendorId::from_bytes(*b"GenuineIntel"), VendorId::INTEL);
    assert_eq!(VendorId::INTEL.as_bytes(), b"GenuineIntel");
}

// ---- arbitrary input ----

/// A CPU that answers every CPUID leaf and MSR with pseudo-random values.
struct RandomCpu {
    seed: u64,
}

impl RandomCpu {
    fn mix(&self, a: u64) -> u64 {
        // splitmix64 of (seed, a): stable per query, so repeated reads agree.
        let mut z = self.seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl CpuProbe for RandomCpu {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let a = self.mix(u64::from(leaf) << 32 | u64::from(subleaf));
        let b = self.mix(a);
        // Half the time a plausible highest extended leaf, so SVM paths are reached.
        let eax = if leaf == leaf::EXT_MAX && a & (1 << 40) != 0 {
            leaf::EXT_MAX | (a as u32 & 0xF)
        } else {
            a as u32
        };
        CpuidResult {
            eax,
            ebx: (a >> 32) as u32,
            ecx: b as u32,
            edx: (b >> 32) as u32,
        }
    }

    fn rdmsr(&self, msr: u32) -> Option<u64> {
        let v = self.mix(0xFFFF_0000_0000 | u64::from(msr));
        // Roughly one MSR in eight faults.
        (v & 7 != 0).then_some(v)
    }
}

#[test]
fn arbitrary_cpuid_and_msr_values_never_panic() {
    let mut seen = [0usize; 3];
    for seed in 0..20_000u64 {
        let cpu = RandomCpu { seed };
        let result = probe(&cpu);
        let text = result.to_string();
        let index = match result {
            Virtualization::Vmx(caps) => {
                assert!(caps.unrestricted_guest);
                assert!(text.starts_with("VT-x with EPT"));
                0
            }
            Virtualization::Svm(caps) => {
                assert!(caps.nested_paging);
                assert!(text.starts_with("AMD-V with NPT"));
                1
            }
            Virtualization::Unavailable(_) => {
                assert!(text.starts_with("none ("));
                2
            }
        };
        seen[index] += 1;
        let id = identify(&cpu);
        assert!(!id.model_name.is_empty());
        assert_eq!(id.vendor.as_str().len(), 12);
    }
    // The random CPUs exercise all three outcomes.
    assert!(seen.iter().all(|&n| n > 10), "{seen:?}");
}
