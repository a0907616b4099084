//! The VMCS (SDM Vol. 3C ch. 25, encodings in appendix B): field encodings, the execution
//! controls Keel asks for, guest-state set-up from neutral [`Registers`], and the MSR bitmap
//! (the exit information is decoded in `exit_info`).
//!
//! Everything here is pure: the VMCS is reached through the [`Fields`] trait, which the
//! backend implements with VMREAD/VMWRITE and the host tests with a map, so the set-up and
//! decoding logic is unit-tested on the development machine without VT-x.

use core::fmt;

use super::cr::CrPolicy;
use crate::detect::{ControlMsr, VmxCapabilities};
use crate::vcpu::{Registers, Segment};

/// Field encodings (SDM Vol. 3C appendix B). Bits 14:13 of an encoding give the width
/// (0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 = natural), bits 11:10 the type (0 = control,
/// 1 = VM-exit information, 2 = guest state, 3 = host state).
#[allow(missing_docs)]
pub mod field {
    // 16-bit control (B.1.1), guest (B.1.2) and host (B.1.3) fields.
    pub const VPID: u32 = 0x0000;
    pub const GUEST_ES_SELECTOR: u32 = 0x0800;
    pub const GUEST_CS_SELECTOR: u32 = 0x0802;
    pub const GUEST_SS_SELECTOR: u32 = 0x0804;
    pub const GUEST_DS_SELECTOR: u32 = 0x0806;
    pub const GUEST_FS_SELECTOR: u32 = 0x0808;
    pub const GUEST_GS_SELECTOR: u32 = 0x080a;
    pub const GUEST_LDTR_SELECTOR: u32 = 0x080c;
    pub const GUEST_TR_SELECTOR: u32 = 0x080e;
    pub const HOST_ES_SELECTOR: u32 = 0x0c00;
    pub const HOST_CS_SELECTOR: u32 = 0x0c02;
    pub const HOST_SS_SELECTOR: u32 = 0x0c04;
    pub const HOST_DS_SELECTOR: u32 = 0x0c06;
    pub const HOST_FS_SELECTOR: u32 = 0x0c08;
    pub const HOST_GS_SELECTOR: u32 = 0x0c0a;
    pub const HOST_TR_SELECTOR: u32 = 0x0c0c;

    // 64-bit control (B.2.1), read-only (B.2.2), guest (B.2.3) and host (B.2.4) fields.
    pub const IO_BITMAP_A: u32 = 0x2000;
    pub const IO_BITMAP_B: u32 = 0x2002;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const EXIT_MSR_STORE_ADDRESS: u32 = 0x2006;
    pub const EXIT_MSR_LOAD_ADDRESS: u32 = 0x2008;
    pub const ENTRY_MSR_LOAD_ADDRESS: u32 = 0x200a;
    pub const TSC_OFFSET: u32 = 0x2010;
    pub const EPT_POINTER: u32 = 0x201a;
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const GUEST_IA32_DEBUGCTL: u32 = 0x2802;
    pub const GUEST_IA32_PAT: u32 = 0x2804;
    pub const GUEST_IA32_EFER: u32 = 0x2806;
    pub const GUEST_PDPTE0: u32 = 0x280a;
    pub const GUEST_PDPTE1: u32 = 0x280c;
    pub const GUEST_PDPTE2: u32 = 0x280e;
    pub const GUEST_PDPTE3: u32 = 0x2810;
    pub const HOST_IA32_PAT: u32 = 0x2c00;
    pub const HOST_IA32_EFER: u32 = 0x2c02;

    // 32-bit control (B.3.1), read-only (B.3.2), guest (B.3.3) and host (B.3.4) fields.
    pub const PIN_BASED_CONTROLS: u32 = 0x4000;
    pub const PROC_BASED_CONTROLS: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const PAGE_FAULT_ERROR_MASK: u32 = 0x4006;
    pub const PAGE_FAULT_ERROR_MATCH: u32 = 0x4008;
    pub const CR3_TARGET_COUNT: u32 = 0x400a;
    pub const EXIT_CONTROLS: u32 = 0x400c;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400e;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const ENTRY_INTERRUPTION_INFO: u32 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
    pub const ENTRY_INSTRUCTION_LENGTH: u32 = 0x401a;
    pub const TPR_THRESHOLD: u32 = 0x401c;
    pub const PROC_BASED_CONTROLS2: u32 = 0x401e;
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INTERRUPTION_INFO: u32 = 0x4404;
    pub const EXIT_INTERRUPTION_ERROR_CODE: u32 = 0x4406;
    pub const IDT_VECTORING_INFO: u32 = 0x4408;
    pub const IDT_VECTORING_ERROR_CODE: u32 = 0x440a;
    pub const EXIT_INSTRUCTION_LENGTH: u32 = 0x440c;
    pub const EXIT_INSTRUCTION_INFO: u32 = 0x440e;
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_CS_LIMIT: u32 = 0x4802;
    pub const GUEST_SS_LIMIT: u32 = 0x4804;
    pub const GUEST_DS_LIMIT: u32 = 0x4806;
    pub const GUEST_FS_LIMIT: u32 = 0x4808;
    pub const GUEST_GS_LIMIT: u32 = 0x480a;
    pub const GUEST_LDTR_LIMIT: u32 = 0x480c;
    pub const GUEST_TR_LIMIT: u32 = 0x480e;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_ACCESS: u32 = 0x4814;
    pub const GUEST_CS_ACCESS: u32 = 0x4816;
    pub const GUEST_SS_ACCESS: u32 = 0x4818;
    pub const GUEST_DS_ACCESS: u32 = 0x481a;
    pub const GUEST_FS_ACCESS: u32 = 0x481c;
    pub const GUEST_GS_ACCESS: u32 = 0x481e;
    pub const GUEST_LDTR_ACCESS: u32 = 0x4820;
    pub const GUEST_TR_ACCESS: u32 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
    pub const GUEST_SMBASE: u32 = 0x4828;
    pub const GUEST_SYSENTER_CS: u32 = 0x482a;
    pub const GUEST_PREEMPTION_TIMER: u32 = 0x482e;
    pub const HOST_SYSENTER_CS: u32 = 0x4c00;

    // Natural-width control (B.4.1), read-only (B.4.2), guest (B.4.3) and host (B.4.4).
    pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
    pub const CR0_READ_SHADOW: u32 = 0x6004;
    pub const CR4_READ_SHADOW: u32 = 0x6006;
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    pub const GUEST_LINEAR_ADDRESS: u32 = 0x640a;
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_CS_BASE: u32 = 0x6808;
    pub const GUEST_SS_BASE: u32 = 0x680a;
    pub const GUEST_DS_BASE: u32 = 0x680c;
    pub const GUEST_FS_BASE: u32 = 0x680e;
    pub const GUEST_GS_BASE: u32 = 0x6810;
    pub const GUEST_LDTR_BASE: u32 = 0x6812;
    pub const GUEST_TR_BASE: u32 = 0x6814;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681a;
    pub const GUEST_RSP: u32 = 0x681c;
    pub const GUEST_RIP: u32 = 0x681e;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DEBUG_EXCEPTIONS: u32 = 0x6822;
    pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u32 = 0x6826;
    pub const HOST_CR0: u32 = 0x6c00;
    pub const HOST_CR3: u32 = 0x6c02;
    pub const HOST_CR4: u32 = 0x6c04;
    pub const HOST_FS_BASE: u32 = 0x6c06;
    pub const HOST_GS_BASE: u32 = 0x6c08;
    pub const HOST_TR_BASE: u32 = 0x6c0a;
    pub const HOST_GDTR_BASE: u32 = 0x6c0c;
    pub const HOST_IDTR_BASE: u32 = 0x6c0e;
    pub const HOST_SYSENTER_ESP: u32 = 0x6c10;
    pub const HOST_SYSENTER_EIP: u32 = 0x6c12;
    /// Written by the world switch before every entry (`instr.rs` hard-codes it).
    pub const HOST_RSP: u32 = 0x6c14;
    /// Written by the world switch before every entry (`instr.rs` hard-codes it).
    pub const HOST_RIP: u32 = 0x6c16;
}

/// The four encodings of one guest segment register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFields {
    /// Selector (16-bit).
    pub selector: u32,
    /// Base (natural width).
    pub base: u32,
    /// Limit (32-bit).
    pub limit: u32,
    /// Access rights (32-bit; SDM Vol. 3C table 25-2).
    pub access: u32,
}

impl SegmentFields {
    /// Guest segment `index` in the VMCS order ES, CS, SS, DS, FS, GS, LDTR, TR: the four
    /// encodings of a register lie at the same distance from each group's start.
    pub const fn guest(index: u32) -> SegmentFields {
        SegmentFields {
            selector: field::GUEST_ES_SELECTOR + 2 * index,
            base: field::GUEST_ES_BASE + 2 * index,
            limit: field::GUEST_ES_LIMIT + 2 * index,
            access: field::GUEST_ES_ACCESS + 2 * index,
        }
    }
}

/// Guest ES.
pub const ES: SegmentFields = SegmentFields::guest(0);
/// Guest CS.
pub const CS: SegmentFields = SegmentFields::guest(1);
/// Guest SS.
pub const SS: SegmentFields = SegmentFields::guest(2);
/// Guest DS.
pub const DS: SegmentFields = SegmentFields::guest(3);
/// Guest FS.
pub const FS: SegmentFields = SegmentFields::guest(4);
/// Guest GS.
pub const GS: SegmentFields = SegmentFields::guest(5);
/// Guest LDTR.
pub const LDTR: SegmentFields = SegmentFields::guest(6);
/// Guest TR.
pub const TR: SegmentFields = SegmentFields::guest(7);

/// Pin-based VM-execution controls (SDM Vol. 3C table 25-5).
#[allow(missing_docs)]
pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based VM-execution controls (SDM Vol. 3C table 25-6).
#[allow(missing_docs)]
pub mod proc {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const INVLPG_EXITING: u32 = 1 << 9;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const RDTSC_EXITING: u32 = 1 << 12;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const PAUSE_EXITING: u32 = 1 << 30;
    pub const ACTIVATE_SECONDARY: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (SDM Vol. 3C table 25-7).
#[allow(missing_docs)]
pub mod proc2 {
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const WBINVD_EXITING: u32 = 1 << 6;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    pub const ENABLE_XSAVES: u32 = 1 << 20;
}

/// VM-exit controls (SDM Vol. 3C table 25-13).
#[allow(missing_docs)]
pub mod exit_ctl {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    pub const ACKNOWLEDGE_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
}

/// VM-entry controls (SDM Vol. 3C table 25-15).
#[allow(missing_docs)]
pub mod entry_ctl {
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    pub const DEACTIVATE_DUAL_MONITOR: u32 = 1 << 11;
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// `IA32_VMX_MISC` bit 5: VM exits store EFER.LMA into the "IA-32e mode guest" entry
/// control (SDM Vol. 3D A.6; always set when unrestricted guest exists).
pub const MISC_STORES_LMA: u64 = 1 << 5;

/// TSC cycles a guest may run before the VMX-preemption timer forces an exit (SDM Vol. 3C
/// §26.5.1): about 1.4 ms at 3 GHz.
///
/// External-interrupt exiting already returns the CPU to the host on every host interrupt,
/// whatever the guest's RFLAGS.IF. The timer is a backstop for CPUs (and emulators) where
/// that is not enough: Bochs 2.7 evaluates interrupt masking while loading the guest RFLAGS,
/// *before* it marks the CPU as being in VMX non-root operation, so a guest entered with
/// IF = 0 keeps host interrupts masked until it changes IF itself — a guest spinning with
/// interrupts off would never exit. The timer does not depend on IF.
pub const PREEMPTION_SLICE_TSC: u64 = 1 << 22;

/// The VMX-preemption timer value for [`PREEMPTION_SLICE_TSC`]: the timer counts down once
/// every 2^`IA32_VMX_MISC[4:0]` TSC cycles (SDM Vol. 3D A.6).
pub fn preemption_timer_value(misc: u64) -> u64 {
    (PREEMPTION_SLICE_TSC >> (misc & 0x1f)).clamp(1, u64::from(u32::MAX))
}

/// The control values for one VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    /// Pin-based controls.
    pub pin: u32,
    /// Primary processor-based controls.
    pub proc: u32,
    /// Secondary processor-based controls.
    pub proc2: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls, without "IA-32e mode guest" (that follows the guest's EFER.LMA).
    pub entry: u32,
}

/// Why the CPU's VMX controls do not fit Keel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// A control Keel needs cannot be set to 1.
    Missing(&'static str),
    /// A control that would break Keel cannot be cleared (the capability MSR forces it to 1).
    Forced(&'static str),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Missing(name) => write!(f, "the CPU cannot enable {name}"),
            ControlError::Forced(name) => write!(f, "the CPU cannot disable {name}"),
        }
    }
}

/// Adjusts `desired` with `msr` (SDM Vol. 3D A.3: allowed-0 bits forced on, allowed-1 bits
/// limit), after checking that every `required` control may be 1 and that no `forbidden`
/// control is forced on.
fn adjust(
    msr: ControlMsr,
    desired: u32,
    required: &[(u32, &'static str)],
    forbidden: &[(u32, &'static str)],
) -> Result<u32, ControlError> {
    for &(bit, name) in required {
        if !msr.allows(bit) {
            return Err(ControlError::Missing(name));
        }
    }
    for &(bit, name) in forbidden {
        if msr.requires(bit) {
            return Err(ControlError::Forced(name));
        }
    }
    Ok(msr.adjust(desired))
}

/// Computes the controls (SDM Vol. 3C §25.6-25.8) from the capability MSRs detection read
/// (TRUE MSRs when `IA32_VMX_BASIC[55]`, so default-1 controls such as CR3-load exiting can
/// be cleared); `vpid` asks for "enable VPID".
///
/// - pin-based: external-interrupt exiting (host interrupts exit the guest), NMI exiting,
///   the VMX-preemption timer when the CPU has it (a backstop, see [`PREEMPTION_SLICE_TSC`]),
///   and virtual NMIs when it has them (the guest's NMI blocking, which injected NMIs need);
/// - primary: HLT, MWAIT and MONITOR exiting, I/O bitmaps (all ones) or unconditional I/O
///   exiting, MSR bitmaps, TSC offsetting, secondary controls;
/// - secondary: EPT, unrestricted guest, VPID when asked;
/// - exit: 64-bit host, save/load EFER and PAT, save the debug controls (the guest's DR7
///   and DEBUGCTL) where the CPU allows, *no* acknowledge-interrupt-on-exit (the interrupt
///   stays pending for the host's own handler);
/// - entry: load EFER and PAT, and the debug controls where the CPU allows (otherwise the
///   guest's DR7 would be lost at every exit, which sets DR7 to 0x400).
pub fn compute_controls(caps: &VmxCapabilities, vpid: bool) -> Result<Controls, ControlError> {
    use ControlError::Missing;
    let pin = adjust(
        caps.pin_based,
        pin::EXTERNAL_INTERRUPT_EXITING
            | pin::NMI_EXITING
            | pin::PREEMPTION_TIMER
            | pin::VIRTUAL_NMIS,
        &[
            (
                pin::EXTERNAL_INTERRUPT_EXITING,
                "external-interrupt exiting",
            ),
            (pin::NMI_EXITING, "NMI exiting"),
        ],
        &[],
    )?;
    let proc = adjust(
        caps.proc_based,
        proc::HLT_EXITING
            | proc::MWAIT_EXITING
            | proc::MONITOR_EXITING
            | proc::USE_TSC_OFFSETTING
            | proc::USE_IO_BITMAPS
            | proc::UNCONDITIONAL_IO_EXITING
            | proc::USE_MSR_BITMAPS
            | proc::ACTIVATE_SECONDARY,
        &[
            (proc::HLT_EXITING, "HLT exiting"),
            (proc::MWAIT_EXITING, "MWAIT exiting"),
            (proc::MONITOR_EXITING, "MONITOR exiting"),
            (proc::USE_TSC_OFFSETTING, "TSC offsetting"),
            (proc::USE_MSR_BITMAPS, "MSR bitmaps"),
            (
                proc::ACTIVATE_SECONDARY,
                "secondary processor-based controls",
            ),
        ],
        &[
            (proc::USE_TPR_SHADOW, "the TPR shadow"),
            (proc::MONITOR_TRAP_FLAG, "the monitor trap flag"),
            (proc::INTERRUPT_WINDOW_EXITING, "interrupt-window exiting"),
            (proc::NMI_WINDOW_EXITING, "NMI-window exiting"),
        ],
    )?;
    // Toggled per entry when an interrupt waits for the guest (see `Vcpu::request_interrupt_window`).
    if !caps.proc_based.allows(proc::INTERRUPT_WINDOW_EXITING) {
        return Err(Missing("interrupt-window exiting"));
    }
    if proc & (proc::USE_IO_BITMAPS | proc::UNCONDITIONAL_IO_EXITING) == 0 {
        return Err(Missing("I/O bitmaps or unconditional I/O exiting"));
    }
    let mut desired2 = proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST;
    if vpid {
        desired2 |= proc2::ENABLE_VPID;
    }
    let required2: &[(u32, &'static str)] = if vpid {
        &[
            (proc2::ENABLE_EPT, "EPT"),
            (proc2::UNRESTRICTED_GUEST, "unrestricted guest"),
            (proc2::ENABLE_VPID, "VPID"),
        ]
    } else {
        &[
            (proc2::ENABLE_EPT, "EPT"),
            (proc2::UNRESTRICTED_GUEST, "unrestricted guest"),
        ]
    };
    let proc2 = adjust(
        caps.proc_based2,
        desired2,
        required2,
        &[(
            proc2::VIRTUALIZE_APIC_ACCESSES,
            "APIC-access virtualization",
        )],
    )?;
    let exit = adjust(
        caps.exit,
        exit_ctl::HOST_ADDRESS_SPACE_SIZE
            | exit_ctl::SAVE_DEBUG_CONTROLS
            | exit_ctl::SAVE_EFER
            | exit_ctl::LOAD_EFER
            | exit_ctl::SAVE_PAT
            | exit_ctl::LOAD_PAT,
        &[
            (
                exit_ctl::HOST_ADDRESS_SPACE_SIZE,
                "a 64-bit host after VM exits",
            ),
            (exit_ctl::SAVE_EFER, "saving the guest IA32_EFER"),
            (exit_ctl::LOAD_EFER, "loading the host IA32_EFER"),
            (exit_ctl::SAVE_PAT, "saving the guest IA32_PAT"),
            (exit_ctl::LOAD_PAT, "loading the host IA32_PAT"),
        ],
        &[
            (
                exit_ctl::ACKNOWLEDGE_INTERRUPT_ON_EXIT,
                "acknowledge interrupt on exit",
            ),
            (
                exit_ctl::LOAD_PERF_GLOBAL_CTRL,
                "loading IA32_PERF_GLOBAL_CTRL on exit",
            ),
        ],
    )?;
    let entry = adjust(
        caps.entry,
        entry_ctl::LOAD_DEBUG_CONTROLS | entry_ctl::LOAD_EFER | entry_ctl::LOAD_PAT,
        &[
            (entry_ctl::LOAD_EFER, "loading the guest IA32_EFER"),
            (entry_ctl::LOAD_PAT, "loading the guest IA32_PAT"),
            (entry_ctl::IA32E_MODE_GUEST, "64-bit (IA-32e mode) guests"),
        ],
        &[
            (entry_ctl::ENTRY_TO_SMM, "entry to SMM"),
            (
                entry_ctl::DEACTIVATE_DUAL_MONITOR,
                "deactivating the dual-monitor treatment",
            ),
            (
                entry_ctl::LOAD_PERF_GLOBAL_CTRL,
                "loading IA32_PERF_GLOBAL_CTRL on entry",
            ),
            (
                entry_ctl::IA32E_MODE_GUEST,
                "IA-32e mode guest on every entry",
            ),
        ],
    )?;
    Ok(Controls {
        pin,
        proc,
        proc2,
        exit,
        entry,
    })
}

/// Access to the fields of one VMCS. The backend implements it with VMREAD/VMWRITE on the
/// current VMCS; tests with a map. Values are zero-extended/truncated to the field's width
/// as VMREAD/VMWRITE do.
pub trait Fields {
    /// Reads a field.
    fn read(&self, field: u32) -> u64;
    /// Writes a field.
    fn write(&mut self, field: u32, value: u64);
}

/// Guest-physical addresses and IDs the controls point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlAddresses {
    /// I/O bitmap A (ports 0x0000-0x7FFF) and, one page later, B (0x8000-0xFFFF).
    pub io_bitmaps: u64,
    /// The MSR bitmap page.
    pub msr_bitmap: u64,
    /// The EPT pointer.
    pub eptp: u64,
    /// The VPID, 0 for none.
    pub vpid: u16,
}

/// Writes the execution, exit and entry controls and everything they point at, and the
/// CR0/CR4 guest/host masks (SDM Vol. 3C §25.6.6).
pub fn write_controls(
    f: &mut impl Fields,
    controls: &Controls,
    addrs: &ControlAddresses,
    cr: &CrPolicy,
) {
    use field::*;
    f.write(PIN_BASED_CONTROLS, controls.pin.into());
    f.write(PROC_BASED_CONTROLS, controls.proc.into());
    f.write(PROC_BASED_CONTROLS2, controls.proc2.into());
    f.write(EXIT_CONTROLS, controls.exit.into());
    f.write(ENTRY_CONTROLS, controls.entry.into());
    f.write(EXCEPTION_BITMAP, 0);
    f.write(PAGE_FAULT_ERROR_MASK, 0);
    f.write(PAGE_FAULT_ERROR_MATCH, 0);
    f.write(CR3_TARGET_COUNT, 0);
    f.write(EXIT_MSR_STORE_COUNT, 0);
    f.write(EXIT_MSR_LOAD_COUNT, 0);
    f.write(ENTRY_MSR_LOAD_COUNT, 0);
    f.write(ENTRY_INTERRUPTION_INFO, 0);
    f.write(IO_BITMAP_A, addrs.io_bitmaps);
    f.write(IO_BITMAP_B, addrs.io_bitmaps + 4096);
    f.write(MSR_BITMAP, addrs.msr_bitmap);
    f.write(TSC_OFFSET, 0);
    f.write(EPT_POINTER, addrs.eptp);
    if controls.proc2 & proc2::ENABLE_VPID != 0 {
        f.write(VPID, addrs.vpid.into());
    }
    f.write(VMCS_LINK_POINTER, u64::MAX);
    f.write(CR0_GUEST_HOST_MASK, cr.cr0_mask());
    f.write(CR4_GUEST_HOST_MASK, cr.cr4_mask());
}

/// Guest segments in VMCS order with their neutral counterparts.
fn segments(regs: &Registers) -> [(SegmentFields, Segment); 8] {
    [
        (ES, regs.es),
        (CS, regs.cs),
        (SS, regs.ss),
        (DS, regs.ds),
        (FS, regs.fs),
        (GS, regs.gs),
        (LDTR, regs.ldtr),
        (TR, regs.tr),
    ]
}

/// A null LDTR selector loads an unusable LDTR (as `LLDT 0` does); that is what the VM-entry
/// checks expect of an LDT nobody set up (SDM Vol. 3C §27.3.1.2).
/// A data or stack segment that is not present is unusable too (SVM, which has no unusable
/// flag, saves a null segment that way). A usable code or data segment has its accessed bit
/// set, as the CPU sets it when it loads the descriptor and VM entry requires, and TR is
/// busy (a state saved from QEMU's SVM may lack either).
fn vmcs_access(which: SegmentFields, seg: &Segment) -> u32 {
    const UNUSABLE: u32 = 1 << 16;
    const PRESENT: u32 = 1 << 7;
    const CODE_OR_DATA: u32 = 1 << 4;
    const ACCESSED: u32 = 1 << 0;
    const BUSY: u32 = 1 << 1;
    if which == LDTR && seg.selector & !3 == 0 {
        UNUSABLE
    } else if which != CS && which != TR && seg.access & PRESENT == 0 {
        seg.access | UNUSABLE
    } else if seg.access & (UNUSABLE | CODE_OR_DATA) == CODE_OR_DATA {
        seg.access | ACCESSED
    } else if which == TR {
        // A loaded TSS is busy (LTR marks it so); VM entry requires the busy type.
        seg.access | BUSY
    } else {
        seg.access
    }
}

/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;

/// Loads `regs` into the guest-state area (SDM Vol. 3C §25.4): RSP, RIP, RFLAGS, the control
/// registers through `cr` (hardware value with the fixed bits, guest view in the read
/// shadow), EFER with "IA-32e mode guest" following EFER.LMA, segments, descriptor tables,
/// and the non-register state (active, not blocked, no pending debug exceptions, DR7 at
/// reset, power-on PAT). The GPRs other than RSP live outside the VMCS.
pub fn write_guest_state(f: &mut impl Fields, regs: &Registers, cr: &CrPolicy) {
    use field::*;
    for (which, seg) in segments(regs) {
        f.write(which.selector, seg.selector.into());
        f.write(which.base, seg.base);
        f.write(which.limit, seg.limit.into());
        f.write(which.access, vmcs_access(which, &seg).into());
    }
    f.write(GUEST_GDTR_BASE, regs.gdtr.0);
    f.write(GUEST_GDTR_LIMIT, regs.gdtr.1.into());
    f.write(GUEST_IDTR_BASE, regs.idtr.0);
    f.write(GUEST_IDTR_LIMIT, regs.idtr.1.into());
    f.write(GUEST_CR0, cr.cr0_hardware(regs.cr0));
    f.write(CR0_READ_SHADOW, regs.cr0);
    f.write(GUEST_CR3, regs.cr3);
    f.write(GUEST_CR4, cr.cr4_hardware(regs.cr4));
    f.write(CR4_READ_SHADOW, regs.cr4);
    f.write(GUEST_IA32_EFER, regs.efer);
    set_ia32e_mode(f, regs.efer & EFER_LMA != 0);
    f.write(GUEST_RSP, regs.gpr[4]);
    f.write(GUEST_RIP, regs.rip);
    f.write(GUEST_RFLAGS, regs.rflags | 0x2);
    f.write(GUEST_DR7, 0x400);
    f.write(GUEST_IA32_DEBUGCTL, 0);
    f.write(GUEST_IA32_PAT, crate::msr::PAT_DEFAULT);
    f.write(GUEST_SYSENTER_CS, 0);
    f.write(GUEST_SYSENTER_ESP, 0);
    f.write(GUEST_SYSENTER_EIP, 0);
    f.write(GUEST_INTERRUPTIBILITY, 0);
    f.write(GUEST_ACTIVITY_STATE, 0);
    f.write(GUEST_PENDING_DEBUG_EXCEPTIONS, 0);
    for pdpte in [GUEST_PDPTE0, GUEST_PDPTE1, GUEST_PDPTE2, GUEST_PDPTE3] {
        f.write(pdpte, 0);
    }
}

/// Sets or clears "IA-32e mode guest" (it must equal the guest's EFER.LMA at VM entry, SDM
/// Vol. 3C §27.3.1.1).
pub fn set_ia32e_mode(f: &mut impl Fields, on: bool) {
    let entry = f.read(field::ENTRY_CONTROLS);
    let bit = u64::from(entry_ctl::IA32E_MODE_GUEST);
    let new = if on { entry | bit } else { entry & !bit };
    if new != entry {
        f.write(field::ENTRY_CONTROLS, new);
    }
}

/// Reads the guest registers the VMCS holds into `regs` (the GPRs other than RSP, and CR2,
/// are the caller's). CR0 and CR4 are what the guest sees: host-owned bits come from the
/// read shadows.
pub fn read_guest_state(f: &impl Fields, regs: &mut Registers) {
    use field::*;
    let read_seg = |which: SegmentFields| Segment {
        selector: f.read(which.selector) as u16,
        base: f.read(which.base),
        limit: f.read(which.limit) as u32,
        access: f.read(which.access) as u32,
    };
    regs.es = read_seg(ES);
    regs.cs = read_seg(CS);
    regs.ss = read_seg(SS);
    regs.ds = read_seg(DS);
    regs.fs = read_seg(FS);
    regs.gs = read_seg(GS);
    regs.ldtr = read_seg(LDTR);
    regs.tr = read_seg(TR);
    regs.gdtr = (f.read(GUEST_GDTR_BASE), f.read(GUEST_GDTR_LIMIT) as u16);
    regs.idtr = (f.read(GUEST_IDTR_BASE), f.read(GUEST_IDTR_LIMIT) as u16);
    regs.cr0 = CrPolicy::visible(
        f.read(GUEST_CR0),
        f.read(CR0_READ_SHADOW),
        f.read(CR0_GUEST_HOST_MASK),
    );
    regs.cr3 = f.read(GUEST_CR3);
    regs.cr4 = CrPolicy::visible(
        f.read(GUEST_CR4),
        f.read(CR4_READ_SHADOW),
        f.read(CR4_GUEST_HOST_MASK),
    );
    regs.efer = f.read(GUEST_IA32_EFER);
    regs.gpr[4] = f.read(GUEST_RSP);
    regs.rip = f.read(GUEST_RIP);
    regs.rflags = f.read(GUEST_RFLAGS);
}

/// The MSR bitmap (SDM Vol. 3C §25.6.9): one 4 KiB page, four 1 KiB bitmaps — reads of
/// 0x0000_0000-0x0000_1FFF, reads of 0xC000_0000-0xC000_1FFF, then writes of the same two
/// ranges. A set bit makes the access exit; MSRs outside the ranges always exit.
pub const MSR_BITMAP_BYTES: usize = 4096;

/// Byte offsets (read, write) and bit of `msr` in the MSR bitmap, or `None` when the MSR is
/// outside both ranges (always intercepted).
pub fn msr_bitmap_position(msr: u32) -> Option<(usize, usize, u8)> {
    let (base, index) = match msr {
        0x0000_0000..=0x0000_1fff => (0x000, msr),
        0xc000_0000..=0xc000_1fff => (0x400, msr - 0xc000_0000),
        _ => return None,
    };
    let byte = base + index as usize / 8;
    Some((byte, byte + 0x800, (index % 8) as u8))
}

/// Fills an MSR bitmap: intercept everything except the `passthrough` MSRs.
pub fn fill_msr_bitmap(map: &mut [u8], passthrough: impl Fn(u32) -> bool) {
    map.fill(0xff);
    for range in [0x0000_0000u32..0x0000_2000, 0xc000_0000..0xc000_2000] {
        for msr in range {
            if passthrough(msr)
                && let Some((read, write, bit)) = msr_bitmap_position(msr)
            {
                map[read] &= !(1 << bit);
                map[write] &= !(1 << bit);
            }
        }
    }
}

/// The I/O bitmaps A and B: 8 KiB, one bit per port, set = exit (SDM Vol. 3C §25.6.4).
pub const IO_BITMAPS_BYTES: usize = 8192;

#[cfg(test)]
#[path = "vmcs_tests.rs"]
mod tests;
