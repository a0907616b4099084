//! Host tests of the VMCS logic, against the SDM's encodings and a map-backed VMCS.

use std::collections::BTreeMap;

use super::*;
use crate::backend::svm::vmcb::{
    long_mode_registers, protected_mode_registers, real_mode_registers,
};
use crate::detect::{EptVpidCap, VmxBasic};

/// A VMCS in a map; values are truncated to the field's width as VMWRITE does.
#[derive(Default)]
struct MapVmcs(BTreeMap<u32, u64>);

fn width_mask(field: u32) -> u64 {
    match (field >> 13) & 3 {
        0 => 0xffff,
        2 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

impl Fields for MapVmcs {
    fn read(&self, field: u32) -> u64 {
        self.0.get(&field).copied().unwrap_or(0)
    }

    fn write(&mut self, field: u32, value: u64) {
        self.0.insert(field, value & width_mask(field));
    }
}

/// Capability MSRs like a Skylake-X (and Bochs's `corei7_skylake_x`): TRUE controls, CR3
/// exiting only default-1 in the legacy MSR.
fn skylake() -> VmxCapabilities {
    VmxCapabilities {
        feature_control: 0x5,
        needs_feature_control_enable: false,
        basic: VmxBasic(0x00da_0400_0000_002b | (1 << 55)),
        pin_based: ControlMsr::from_raw(0x0000_007f_0000_0016),
        proc_based: ControlMsr::from_raw(0xfff9_fffe_0400_6172),
        proc_based2: ControlMsr::from_raw(0x0017_32ff_0000_0000),
        exit: ControlMsr::from_raw(0x01ff_ffff_0003_6dfb),
        entry: ControlMsr::from_raw(0x0003_ffff_0000_11fb),
        misc: 0x0000_0000_0000_01e5,
        cr0_fixed0: 0x8000_0021,
        cr0_fixed1: 0xffff_ffff,
        cr4_fixed0: 0x2000,
        cr4_fixed1: 0x0037_67ff,
        ept_vpid: EptVpidCap(0x0000_0f01_0673_4141),
        vpid: true,
        unrestricted_guest: true,
    }
}

fn cr_policy() -> CrPolicy {
    let c = skylake();
    CrPolicy::from_parts(
        c.cr0_fixed0,
        c.cr0_fixed1,
        c.cr4_fixed0,
        c.cr4_fixed1,
        u64::MAX,
    )
}

#[test]
fn encodings_carry_their_width_and_type() {
    // (encoding, width: 0 = 16, 1 = 64, 2 = 32, 3 = natural; type: 0 = control,
    // 1 = exit information, 2 = guest, 3 = host)
    use field::*;
    let cases = [
        (VPID, 0, 0),
        (GUEST_TR_SELECTOR, 0, 2),
        (HOST_TR_SELECTOR, 0, 3),
        (MSR_BITMAP, 1, 0),
        (EPT_POINTER, 1, 0),
        (GUEST_PHYSICAL_ADDRESS, 1, 1),
        (VMCS_LINK_POINTER, 1, 2),
        (GUEST_IA32_EFER, 1, 2),
        (GUEST_PDPTE3, 1, 2),
        (HOST_IA32_EFER, 1, 3),
        (PROC_BASED_CONTROLS2, 2, 0),
        (ENTRY_INTERRUPTION_INFO, 2, 0),
        (VM_INSTRUCTION_ERROR, 2, 1),
        (EXIT_INSTRUCTION_LENGTH, 2, 1),
        (GUEST_TR_ACCESS, 2, 2),
        (GUEST_ACTIVITY_STATE, 2, 2),
        (HOST_SYSENTER_CS, 2, 3),
        (CR4_READ_SHADOW, 3, 0),
        (EXIT_QUALIFICATION, 3, 1),
        (GUEST_LINEAR_ADDRESS, 3, 1),
        (GUEST_RFLAGS, 3, 2),
        (GUEST_SYSENTER_EIP, 3, 2),
        (HOST_RSP, 3, 3),
        (HOST_RIP, 3, 3),
    ];
    for (enc, width, kind) in cases {
        assert_eq!((enc >> 13) & 3, width, "{enc:#06x} width");
        assert_eq!((enc >> 10) & 3, kind, "{enc:#06x} type");
        assert_eq!(enc & 1, 0, "{enc:#06x}: full (not high-half) access");
    }
    // The world switch hard-codes these two.
    assert_eq!(HOST_RSP, 0x6c14);
    assert_eq!(HOST_RIP, 0x6c16);
    // The segment groups line up (SDM B.1.2, B.3.3, B.4.3).
    assert_eq!(
        TR,
        SegmentFields {
            selector: GUEST_TR_SELECTOR,
            base: GUEST_TR_BASE,
            limit: GUEST_TR_LIMIT,
            access: GUEST_TR_ACCESS,
        }
    );
    assert_eq!(LDTR.access, GUEST_LDTR_ACCESS);
    assert_eq!(CS.base, GUEST_CS_BASE);
}

#[test]
fn controls_from_true_msrs() {
    let c = compute_controls(&skylake(), true).unwrap();
    // Pin: the asked-for exits, virtual NMIs, the preemption-timer backstop, the default-1
    // bits 1, 2, 4.
    assert_eq!(
        c.pin,
        pin::EXTERNAL_INTERRUPT_EXITING
            | pin::NMI_EXITING
            | pin::VIRTUAL_NMIS
            | pin::PREEMPTION_TIMER
            | 0x16
    );
    // A CPU without the timer still works (external-interrupt exits alone).
    let mut caps = skylake();
    caps.pin_based = ControlMsr::from_raw(0x0000_003f_0000_0016);
    let c2 = compute_controls(&caps, true).unwrap();
    assert_eq!(c2.pin & pin::PREEMPTION_TIMER, 0);
    assert_eq!(preemption_timer_value(0x1e5), 1 << 17, "rate 2^5");
    assert_eq!(
        preemption_timer_value(0x1f),
        1,
        "never 0 (an immediate exit)"
    );
    // The TRUE MSR lets CR3-load/store exiting be 0.
    assert_eq!(
        c.proc & (proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING),
        0
    );
    for bit in [
        proc::HLT_EXITING,
        proc::USE_IO_BITMAPS,
        proc::USE_MSR_BITMAPS,
        proc::ACTIVATE_SECONDARY,
        proc::USE_TSC_OFFSETTING,
        proc::MWAIT_EXITING,
        proc::MONITOR_EXITING,
    ] {
        assert_ne!(c.proc & bit, 0, "{bit:#x}");
    }
    assert_eq!(c.proc & proc::RDTSC_EXITING, 0);
    assert_eq!(
        c.proc & 0x0400_6172,
        0x0400_6172,
        "allowed-0 bits forced on"
    );
    assert_eq!(
        c.proc2,
        proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST | proc2::ENABLE_VPID
    );
    assert_ne!(c.exit & exit_ctl::HOST_ADDRESS_SPACE_SIZE, 0);
    assert_eq!(c.exit & exit_ctl::ACKNOWLEDGE_INTERRUPT_ON_EXIT, 0);
    for bit in [
        exit_ctl::SAVE_EFER,
        exit_ctl::LOAD_EFER,
        exit_ctl::SAVE_PAT,
        exit_ctl::LOAD_PAT,
    ] {
        assert_ne!(c.exit & bit, 0, "{bit:#x}");
    }
    assert_eq!(
        c.entry & (entry_ctl::LOAD_EFER | entry_ctl::LOAD_PAT),
        entry_ctl::LOAD_EFER | entry_ctl::LOAD_PAT
    );
    assert_eq!(c.entry & entry_ctl::IA32E_MODE_GUEST, 0);
    // Without VPID asked for, it stays off.
    let c = compute_controls(&skylake(), false).unwrap();
    assert_eq!(c.proc2 & proc2::ENABLE_VPID, 0);
}

#[test]
fn legacy_msrs_force_the_default_one_controls() {
    let mut caps = skylake();
    caps.basic = VmxBasic(caps.basic.0 & !(1 << 55));
    caps.proc_based = ControlMsr::from_raw(0xfff9_fffe_0401_e172);
    let c = compute_controls(&caps, true).unwrap();
    assert_eq!(
        c.proc & (proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING),
        proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING,
        "the CR-access handler covers MOV CR3 then"
    );
}

#[test]
fn missing_or_forced_controls_are_errors() {
    let mut caps = skylake();
    caps.proc_based2 = ControlMsr::from_raw(0x0000_00fd_0000_0000); // no EPT
    assert_eq!(
        compute_controls(&caps, false),
        Err(ControlError::Missing("EPT"))
    );
    let mut caps = skylake();
    caps.proc_based2 = ControlMsr::from_raw(0x0000_007f_0000_0000); // no unrestricted guest
    assert_eq!(
        compute_controls(&caps, false),
        Err(ControlError::Missing("unrestricted guest"))
    );
    let mut caps = skylake();
    caps.pin_based = ControlMsr::from_raw(0x0000_0077_0000_0016); // no NMI exiting
    assert_eq!(
        compute_controls(&caps, false),
        Err(ControlError::Missing("NMI exiting"))
    );
    let mut caps = skylake();
    caps.exit = ControlMsr::from_raw(0x01ff_ffff_0003_edfb); // ack-on-exit forced
    assert_eq!(
        compute_controls(&caps, false),
        Err(ControlError::Forced("acknowledge interrupt on exit"))
    );
    let mut caps = skylake();
    caps.proc_based = ControlMsr::from_raw(0xedf9_fffe_0400_6172); // no MSR bitmaps
    assert_eq!(
        compute_controls(&caps, false),
        Err(ControlError::Missing("MSR bitmaps"))
    );
    let mut caps = skylake();
    // Neither I/O bitmaps nor unconditional I/O exiting.
    caps.proc_based = ControlMsr::from_raw(0xfcf9_fffe_0400_6172);
    assert_eq!(
        compute_controls(&caps, false),
        Err(ControlError::Missing(
            "I/O bitmaps or unconditional I/O exiting"
        ))
    );
    assert_eq!(
        ControlError::Forced("x").to_string(),
        "the CPU cannot disable x"
    );
}

#[test]
fn controls_and_masks_land_in_the_vmcs() {
    let caps = skylake();
    let c = compute_controls(&caps, true).unwrap();
    let cr = cr_policy();
    let mut v = MapVmcs::default();
    let addrs = ControlAddresses {
        io_bitmaps: 0x10_0000,
        msr_bitmap: 0x10_2000,
        eptp: 0x20_0000 | 0x1e,
        vpid: 7,
    };
    write_controls(&mut v, &c, &addrs, &cr);
    assert_eq!(v.read(field::PIN_BASED_CONTROLS), c.pin.into());
    assert_eq!(v.read(field::PROC_BASED_CONTROLS2), c.proc2.into());
    assert_eq!(v.read(field::IO_BITMAP_A), 0x10_0000);
    assert_eq!(v.read(field::IO_BITMAP_B), 0x10_1000);
    assert_eq!(v.read(field::MSR_BITMAP), 0x10_2000);
    assert_eq!(v.read(field::EPT_POINTER), 0x20_001e);
    assert_eq!(v.read(field::VPID), 7);
    assert_eq!(v.read(field::VMCS_LINK_POINTER), u64::MAX);
    assert_eq!(v.read(field::EXCEPTION_BITMAP), 0);
    assert_eq!(v.read(field::CR0_GUEST_HOST_MASK), cr.cr0_mask());
    assert_eq!(v.read(field::CR4_GUEST_HOST_MASK), cr.cr4_mask());
    assert_ne!(cr.cr0_mask() & 0x20, 0, "CR0.NE is the host's");
    assert_ne!(cr.cr4_mask() & 0x2000, 0, "CR4.VMXE is the host's");
}

#[test]
fn real_mode_guest_state() {
    let cr = cr_policy();
    let mut v = MapVmcs::default();
    v.write(
        field::ENTRY_CONTROLS,
        0x11fb | u64::from(entry_ctl::IA32E_MODE_GUEST),
    );
    v.write(field::CR0_GUEST_HOST_MASK, cr.cr0_mask());
    v.write(field::CR4_GUEST_HOST_MASK, cr.cr4_mask());
    let regs = real_mode_registers(0x7c00);
    write_guest_state(&mut v, &regs, &cr);
    assert_eq!(v.read(field::GUEST_RIP), 0x7c00);
    assert_eq!(
        v.read(field::GUEST_CR0),
        0x30,
        "NE forced into the hardware value"
    );
    assert_eq!(v.read(field::CR0_READ_SHADOW), 0x10);
    assert_eq!(v.read(field::GUEST_CR4), 0x2000, "VMXE forced");
    assert_eq!(v.read(field::CR4_READ_SHADOW), 0);
    assert_eq!(v.read(CS.access), 0x9b);
    assert_eq!(v.read(SS.access), 0x93);
    assert_eq!(v.read(TR.access), 0x8b, "usable busy 32-bit TSS");
    assert_eq!(v.read(LDTR.access), 1 << 16, "a null LDTR is unusable");
    assert_eq!(v.read(field::GUEST_IDTR_LIMIT), 0x3ff);
    assert_eq!(v.read(field::GUEST_GDTR_LIMIT), 0xffff);
    assert_eq!(v.read(field::GUEST_RFLAGS), 0x2);
    assert_eq!(v.read(field::GUEST_DR7), 0x400);
    assert_eq!(v.read(field::GUEST_IA32_PAT), 0x0007_0406_0007_0406);
    assert_eq!(
        v.read(field::ENTRY_CONTROLS) & u64::from(entry_ctl::IA32E_MODE_GUEST),
        0,
        "not IA-32e mode"
    );
    let mut back = Registers {
        gpr: regs.gpr,
        ..Registers::default()
    };
    read_guest_state(&v, &mut back);
    assert_eq!(back.cr0, 0x10, "the guest sees its own CR0");
    assert_eq!(back.cr4, 0);
    assert_eq!(back.cs, regs.cs);
    assert_eq!(back.tr, regs.tr);
    assert_eq!(back.rip, regs.rip);
    assert_eq!(back.gpr[4], regs.gpr[4]);
    assert_eq!(back.code_bitness(), 16);
}

#[test]
fn long_mode_guest_state() {
    let cr = cr_policy();
    let mut v = MapVmcs::default();
    v.write(field::ENTRY_CONTROLS, 0x11fb);
    v.write(field::CR0_GUEST_HOST_MASK, cr.cr0_mask());
    v.write(field::CR4_GUEST_HOST_MASK, cr.cr4_mask());
    let regs = long_mode_registers(0x10_0000, 0x9000, 0x500, 0x8000, 0x7000);
    write_guest_state(&mut v, &regs, &cr);
    assert_ne!(
        v.read(field::ENTRY_CONTROLS) & u64::from(entry_ctl::IA32E_MODE_GUEST),
        0,
        "IA-32e mode guest follows EFER.LMA"
    );
    assert_eq!(v.read(field::GUEST_IA32_EFER), regs.efer);
    assert_eq!(v.read(field::GUEST_CR0), 0x8005_0033);
    assert_eq!(v.read(field::GUEST_CR4), 0x26a0);
    assert_eq!(v.read(field::GUEST_CR3), 0x9000);
    assert_eq!(v.read(CS.access), 0xa09b);
    let mut back = Registers::default();
    read_guest_state(&v, &mut back);
    assert_eq!(back.code_bitness(), 64);
    assert_eq!(back.cr4, 0x6a0);
    assert_eq!(back.gdtr, (0x500, 0x17));
    // Leaving IA-32e mode clears the control again.
    set_ia32e_mode(&mut v, false);
    assert_eq!(v.read(field::ENTRY_CONTROLS), 0x11fb);
}

#[test]
fn protected_mode_guest_state() {
    let cr = cr_policy();
    let mut v = MapVmcs::default();
    v.write(
        field::ENTRY_CONTROLS,
        0x11fb | u64::from(entry_ctl::IA32E_MODE_GUEST),
    );
    v.write(field::CR0_GUEST_HOST_MASK, cr.cr0_mask());
    v.write(field::CR4_GUEST_HOST_MASK, cr.cr4_mask());
    let regs = protected_mode_registers(0x100_0000, 0x6000);
    write_guest_state(&mut v, &regs, &cr);
    assert_eq!(v.read(field::GUEST_RIP), 0x100_0000);
    assert_eq!(v.read(field::GUEST_CR0), 0x31, "PE, ET and the forced NE");
    assert_eq!(v.read(field::CR0_READ_SHADOW), 0x11);
    assert_eq!(v.read(field::GUEST_CR4), 0x2000, "only the forced VMXE");
    assert_eq!(v.read(field::GUEST_IA32_EFER), 0);
    assert_eq!(v.read(CS.access), 0xc09b);
    assert_eq!(v.read(SS.access), 0xc093);
    assert_eq!(v.read(TR.access), 0x8b);
    assert_eq!(
        v.read(field::ENTRY_CONTROLS) & u64::from(entry_ctl::IA32E_MODE_GUEST),
        0,
        "not IA-32e mode"
    );
    let mut back = Registers {
        gpr: regs.gpr,
        ..Registers::default()
    };
    read_guest_state(&v, &mut back);
    assert_eq!(back.code_bitness(), 32);
    assert_eq!(back.cr0, 0x11);
    assert_eq!(back.gpr[3], 0x6000);
}

#[test]
fn msr_bitmap_follows_the_sdm() {
    assert_eq!(msr_bitmap_position(0), Some((0, 0x800, 0)));
    assert_eq!(msr_bitmap_position(0x174), Some((0x2e, 0x82e, 4)));
    assert_eq!(msr_bitmap_position(0x1fff), Some((0x3ff, 0xbff, 7)));
    assert_eq!(msr_bitmap_position(0xc000_0080), Some((0x410, 0xc10, 0)));
    assert_eq!(msr_bitmap_position(0xc000_0102), Some((0x420, 0xc20, 2)));
    assert_eq!(msr_bitmap_position(0x2000), None);
    assert_eq!(msr_bitmap_position(0xc001_0000), None);
    let mut map = std::vec![0u8; MSR_BITMAP_BYTES];
    fill_msr_bitmap(&mut map, |m| m == 0xc000_0100 || m == 0x175);
    assert_eq!(map[0x420], 0xfe, "FS_BASE reads pass");
    assert_eq!(map[0xc20], 0xfe, "FS_BASE writes pass");
    assert_eq!(map[0x2e], 0xdf, "SYSENTER_ESP");
    assert_eq!(map[0x410], 0xff, "EFER is intercepted");
    assert!(map.iter().filter(|&&b| b != 0xff).count() == 4);
}

/// The neutral-state conversion (`vmx::state`) against a map-backed VMCS.
mod state {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;
    use crate::backend::vmx::state::{Outside, read, validate, write};
    use crate::msr;
    use crate::vcpu::VcpuState;
    use crate::vcpu::state::{EventKind, PassthroughMsrs, PendingEvents, QueuedEvent};

    /// A map VMCS that records which fields were read and written.
    #[derive(Default)]
    struct Recorder {
        vmcs: MapVmcs,
        reads: RefCell<BTreeSet<u32>>,
        writes: BTreeSet<u32>,
    }

    impl Fields for Recorder {
        fn read(&self, field: u32) -> u64 {
            self.reads.borrow_mut().insert(field);
            self.vmcs.read(field)
        }

        fn write(&mut self, field: u32, value: u64) {
            self.writes.insert(field);
            self.vmcs.write(field, value);
        }
    }

    /// A VMCS as `VmxVcpu::new` leaves it.
    fn fresh_vmcs() -> Recorder {
        let caps = skylake();
        let controls = compute_controls(&caps, true).unwrap();
        let cr = cr_policy();
        let mut v = Recorder::default();
        let addrs = ControlAddresses {
            io_bitmaps: 0x1000,
            msr_bitmap: 0x3000,
            eptp: 0x401e,
            vpid: 1,
        };
        write_controls(&mut v, &controls, &addrs, &cr);
        write_guest_state(&mut v, &real_mode_registers(0x7c00), &cr);
        v.reads.borrow_mut().clear();
        v.writes.clear();
        v
    }

    fn sample() -> VcpuState {
        let mut registers = long_mode_registers(0xffff_8000_0010_0000, 0x9000, 0x500, 0x8000, 7);
        for (i, g) in registers.gpr.iter_mut().enumerate() {
            *g = 0x1000 + i as u64;
        }
        registers.rflags = 0x302; // IF and TF
        registers.cr2 = 0xdead_0000;
        registers.gs.base = 0xffff_8880_1234_0000;
        registers.idtr = (0xffff_8000_0000_2000, 0xfff);
        // A null LDTR reads back as just "unusable" (VM entry ignores the other bits).
        registers.ldtr.access = 1 << 16;
        let mut state = VcpuState::at_reset(registers, 5_000);
        state.debug.dr = [1, 2, 3, 4];
        state.debug.dr6 = 0xffff_4ff1;
        state.debug.dr7 = 0x403;
        state.emulated_msrs.pat = 0x0007_0106_0007_0406;
        state.emulated_msrs.mtrr_def_type = 0xc06;
        state.emulated_msrs.efer = registers.efer;
        state.passthrough_msrs = PassthroughMsrs {
            star: 0x0023_0010_0000_0000,
            lstar: 0xffff_8000_0000_1000,
            cstar: 0xffff_8000_0000_2000,
            sfmask: 0x4_7700,
            kernel_gs_base: 0x7f00_0000_0000,
            sysenter_cs: 0x10,
            sysenter_esp: 0xffff_8000_0000_3000,
            sysenter_eip: 0xffff_8000_0000_4000,
        };
        state.fpu[32] = 0x77;
        state.events = PendingEvents {
            interrupt_shadow: true,
            nmi_blocked: true,
            queued: Some(QueuedEvent {
                kind: EventKind::SoftwareException,
                vector: 3,
                error_code: None,
                instruction_length: 1,
            }),
            interrupt_window: true,
        };
        state
    }

    fn outside_of(state: &VcpuState) -> Outside {
        let p = &state.passthrough_msrs;
        Outside {
            gpr: state.registers.gpr,
            cr2: state.registers.cr2,
            syscall: [p.star, p.lstar, p.sfmask, p.kernel_gs_base],
            cstar: p.cstar,
            dr: state.debug.dr,
            dr6: state.debug.dr6,
            msrs: state.emulated_msrs,
            fpu: state.fpu.clone(),
        }
    }

    #[test]
    fn a_saved_state_restores_field_for_field_and_the_tsc_continues() {
        let state = sample();
        state.validate().unwrap();
        validate(&state, &cr_policy(), true).unwrap();
        let mut v = fresh_vmcs();
        let out = write(&mut v, &state, &cr_policy(), 1_000);
        assert_eq!(out, {
            let mut o = outside_of(&state);
            o.msrs.tsc_offset = 4_000;
            o
        });
        // Guest-visible encodings.
        assert_eq!(v.read(field::TSC_OFFSET), 4_000);
        assert_eq!(
            v.read(field::GUEST_INTERRUPTIBILITY),
            0b1001,
            "STI + NMI blocking"
        );
        assert_eq!(
            v.read(field::GUEST_PENDING_DEBUG_EXCEPTIONS),
            1 << 14,
            "a single step behind the shadow"
        );
        assert_eq!(v.read(field::ENTRY_INTERRUPTION_INFO), 0x8000_0603);
        assert_eq!(v.read(field::ENTRY_INSTRUCTION_LENGTH), 1);
        assert_ne!(
            v.read(field::ENTRY_CONTROLS) & u64::from(entry_ctl::IA32E_MODE_GUEST),
            0
        );
        assert_ne!(
            v.read(field::PROC_BASED_CONTROLS) & u64::from(proc::INTERRUPT_WINDOW_EXITING),
            0
        );
        // Saved again 300 ticks later.
        let back = read(&v, out, 1_300);
        let mut want = state.clone();
        want.tsc = 5_300;
        want.emulated_msrs.tsc_offset = 4_000;
        assert!(back.fpu == want.fpu);
        let (mut back, mut want) = (back, want);
        back.fpu.clear();
        want.fpu.clear();
        assert_eq!(back, want);
    }

    #[test]
    fn restore_writes_every_guest_field_a_save_reads() {
        let state = sample();
        let mut v = fresh_vmcs();
        let out = write(&mut v, &state, &cr_policy(), 0);
        v.reads.borrow_mut().clear();
        let _ = read(&v, out, 0);
        let read_fields = v.reads.borrow().clone();
        // The guest/host masks are the VMM's policy, written once at creation.
        let policy = [field::CR0_GUEST_HOST_MASK, field::CR4_GUEST_HOST_MASK];
        let missing: std::vec::Vec<_> = read_fields
            .iter()
            .filter(|f| !policy.contains(f) && !v.writes.contains(f))
            .map(|f| std::format!("{f:#06x}"))
            .collect();
        assert!(missing.is_empty(), "read but never written: {missing:?}");
        // And it reads every guest-state field (type 2 in the encoding) the set-up writes,
        // bar the ones that are not the guest's (VMCS link) or are rebuilt (PDPTEs, timer).
        let mut fresh = fresh_vmcs();
        write_guest_state(&mut fresh, &state.registers, &cr_policy());
        let not_state = [
            field::VMCS_LINK_POINTER,
            field::GUEST_PDPTE0,
            field::GUEST_PDPTE1,
            field::GUEST_PDPTE2,
            field::GUEST_PDPTE3,
            field::GUEST_ACTIVITY_STATE,
            field::GUEST_PENDING_DEBUG_EXCEPTIONS,
            field::GUEST_IA32_DEBUGCTL,
        ];
        let unread: std::vec::Vec<_> = fresh
            .writes
            .iter()
            .filter(|f| (*f >> 10) & 3 == 2 && !not_state.contains(f) && !read_fields.contains(f))
            .map(|f| std::format!("{f:#06x}"))
            .collect();
        assert!(unread.is_empty(), "guest state never saved: {unread:?}");
    }

    #[test]
    fn a_shadow_with_interrupts_off_is_blocking_by_mov_ss() {
        let mut state = sample();
        state.registers.rflags = 0x2;
        state.events.queued = None;
        let mut v = fresh_vmcs();
        let out = write(&mut v, &state, &cr_policy(), 0);
        assert_eq!(v.read(field::GUEST_INTERRUPTIBILITY), 0b1010);
        assert_eq!(v.read(field::GUEST_PENDING_DEBUG_EXCEPTIONS), 0);
        assert_eq!(v.read(field::ENTRY_INTERRUPTION_INFO), 0);
        assert!(read(&v, out, 0).events.interrupt_shadow);
    }

    #[test]
    fn null_data_segments_from_svm_load_as_unusable() {
        let mut state = sample();
        state.registers.ds = crate::vcpu::Segment::default();
        state.validate().unwrap();
        let mut v = fresh_vmcs();
        write(&mut v, &state, &cr_policy(), 0);
        assert_eq!(v.read(DS.access), 1 << 16);
    }

    #[test]
    fn vmx_refuses_what_its_entry_checks_would() {
        let cr = cr_policy();
        let mut state = sample();
        state.events.queued.as_mut().unwrap().instruction_length = 0;
        assert_eq!(
            validate(&state, &cr, true).unwrap_err().to_string(),
            "vCPU state events.queued: a software event needs the length (1-15) of its instruction"
        );
        let mut state = sample();
        state.events.nmi_blocked = false;
        state.events.queued = Some(QueuedEvent {
            kind: EventKind::Nmi,
            vector: 2,
            error_code: None,
            instruction_length: 0,
        });
        assert!(validate(&state, &cr, true).is_ok());
        assert!(validate(&state, &cr, false).is_err(), "no virtual NMIs");
        let narrow = CrPolicy::from_parts(0x8000_0021, 0xffff_ffff, 0x2000, 0x0037_67ff, 0x20);
        let state = sample();
        assert_eq!(
            validate(&state, &narrow, true).unwrap_err().to_string(),
            "vCPU state registers.cr4: sets a bit for a feature this guest's CPU does not have"
        );
        let _ = msr::IA32_PAT;
    }
}
