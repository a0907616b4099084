//! A vCPU's state between the VMCS and the neutral [`VcpuState`]: what `save_state` reads and
//! `restore_state` writes, as pure functions over [`Fields`] so the host tests can run them
//! against a map-backed VMCS and check that a restore writes every guest-state field a save
//! reads.
//!
//! In the VMCS (SDM Vol. 3C §25.4): segments, descriptor tables, CR0/CR3/CR4 (guest view
//! through the read shadows), EFER, PAT, DR7 (saved and loaded with the debug controls),
//! RSP, RIP, RFLAGS, SYSENTER_CS/ESP/EIP, the interruptibility state, the TSC offset, the
//! VM-entry interruption information and the interrupt-window control. Outside it
//! ([`Outside`]): the other GPRs, CR2, the SYSCALL MSRs Keel switches itself, CSTAR, DR0-DR3
//! and DR6, the emulated MSRs and the FPU area.
//!
//! PAE page-directory pointers are not part of the state: the CPU loaded them from guest
//! memory at the last CR3 load, and the backend loads them again from there before the first
//! entry after a restore.

use alloc::vec::Vec;

use super::cr::CrPolicy;
use super::exit_info::{self, intr};
use super::vmcs::{self, Fields, field};
use crate::msr;
use crate::vcpu::state::{DebugRegisters, EventKind, PassthroughMsrs, PendingEvents, QueuedEvent};
use crate::vcpu::{Registers, VcpuState, VcpuStateError};

/// Interruptibility state (SDM Vol. 3C table 25-3): blocking by STI, by MOV SS, by NMI.
const BLOCKING_STI: u64 = 1 << 0;
const BLOCKING_MOV_SS: u64 = 1 << 1;
const BLOCKING_NMI: u64 = 1 << 3;
/// Pending debug exceptions: BS, a single-step trap pending behind the interrupt shadow.
const PENDING_DEBUG_BS: u64 = 1 << 14;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;

/// The vCPU's state that is not in the VMCS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Outside {
    /// RAX … R15 (the RSP slot unused: RSP is in the VMCS).
    pub gpr: [u64; 16],
    /// CR2.
    pub cr2: u64,
    /// `IA32_STAR`, `IA32_LSTAR`, `IA32_FMASK`, `IA32_KERNEL_GS_BASE`.
    pub syscall: [u64; 4],
    /// CSTAR (kept per vCPU).
    pub cstar: u64,
    /// DR0-DR3.
    pub dr: [u64; 4],
    /// DR6.
    pub dr6: u64,
    /// The emulated MSRs (EFER, PAT and the TSC offset are taken from the VMCS).
    pub msrs: msr::State,
    /// The FPU area.
    pub fpu: Vec<u8>,
}

fn decode_event(f: &impl Fields) -> Option<QueuedEvent> {
    let info = f.read(field::ENTRY_INTERRUPTION_INFO) as u32;
    if info & intr::VALID == 0 {
        return None;
    }
    let kind = match info & intr::TYPE_MASK {
        intr::TYPE_NMI => EventKind::Nmi,
        intr::TYPE_HARDWARE_EXCEPTION => EventKind::Exception,
        intr::TYPE_SOFTWARE_INTERRUPT => EventKind::SoftwareInterrupt,
        intr::TYPE_PRIVILEGED_SOFTWARE_EXCEPTION => EventKind::PrivilegedSoftwareException,
        intr::TYPE_SOFTWARE_EXCEPTION => EventKind::SoftwareException,
        _ => EventKind::ExternalInterrupt,
    };
    Some(QueuedEvent {
        kind,
        vector: info as u8,
        error_code: (info & intr::ERROR_CODE != 0)
            .then(|| f.read(field::ENTRY_EXCEPTION_ERROR_CODE) as u32),
        instruction_length: if exit_info::needs_instruction_length(info) {
            f.read(field::ENTRY_INSTRUCTION_LENGTH) as u8
        } else {
            0
        },
    })
}

fn event_info(e: &QueuedEvent) -> u32 {
    let ty = match e.kind {
        EventKind::ExternalInterrupt => intr::TYPE_EXTERNAL,
        EventKind::Nmi => intr::TYPE_NMI,
        EventKind::Exception => intr::TYPE_HARDWARE_EXCEPTION,
        EventKind::SoftwareInterrupt => intr::TYPE_SOFTWARE_INTERRUPT,
        EventKind::SoftwareException => intr::TYPE_SOFTWARE_EXCEPTION,
        EventKind::PrivilegedSoftwareException => intr::TYPE_PRIVILEGED_SOFTWARE_EXCEPTION,
    };
    let mut info = intr::VALID | ty | u32::from(e.vector);
    if e.error_code.is_some() {
        info |= intr::ERROR_CODE;
    }
    info
}

/// The neutral state of the vCPU whose VMCS is `f`, at host TSC `host_tsc`.
pub(super) fn read(f: &impl Fields, out: Outside, host_tsc: u64) -> VcpuState {
    let mut registers = Registers {
        gpr: out.gpr,
        cr2: out.cr2,
        ..Registers::default()
    };
    vmcs::read_guest_state(f, &mut registers);
    let tsc_offset = f.read(field::TSC_OFFSET);
    let mut emulated = out.msrs;
    emulated.efer = registers.efer & msr::EFER_GUEST_BITS;
    emulated.pat = f.read(field::GUEST_IA32_PAT);
    emulated.tsc_offset = tsc_offset;
    let [star, lstar, sfmask, kernel_gs_base] = out.syscall;
    let blocking = f.read(field::GUEST_INTERRUPTIBILITY);
    let proc = f.read(field::PROC_BASED_CONTROLS) as u32;
    VcpuState {
        registers,
        debug: DebugRegisters {
            dr: out.dr,
            dr6: out.dr6,
            dr7: f.read(field::GUEST_DR7),
        },
        emulated_msrs: emulated,
        passthrough_msrs: PassthroughMsrs {
            star,
            lstar,
            cstar: out.cstar,
            sfmask,
            kernel_gs_base,
            sysenter_cs: f.read(field::GUEST_SYSENTER_CS),
            sysenter_esp: f.read(field::GUEST_SYSENTER_ESP),
            sysenter_eip: f.read(field::GUEST_SYSENTER_EIP),
        },
        xcr0: 1,
        fpu: out.fpu,
        events: PendingEvents {
            interrupt_shadow: blocking & (BLOCKING_STI | BLOCKING_MOV_SS) != 0,
            nmi_blocked: blocking & BLOCKING_NMI != 0,
            queued: decode_event(f),
            interrupt_window: proc & vmcs::proc::INTERRUPT_WINDOW_EXITING != 0,
        },
        tsc: host_tsc.wrapping_add(tsc_offset),
    }
}

/// What VMX refuses beyond [`VcpuState::validate`]: CR4 bits this guest's CPU does not have
/// (`cr`), NMIs without virtual NMIs, and software events without an instruction length
/// (SDM Vol. 3C §27.3.1.5).
pub(super) fn validate(
    state: &VcpuState,
    cr: &CrPolicy,
    virtual_nmis: bool,
) -> Result<(), VcpuStateError> {
    let invalid = |field, reason| Err(VcpuStateError::Invalid { field, reason });
    if state.registers.cr4 & !cr.cr4_allowed() != 0 {
        return invalid(
            "registers.cr4",
            "sets a bit for a feature this guest's CPU does not have",
        );
    }
    if let Some(e) = state.events.queued {
        if e.kind == EventKind::Nmi && !virtual_nmis {
            return invalid(
                "events.queued",
                "an NMI, which this CPU cannot inject (no virtual NMIs)",
            );
        }
        let software = matches!(
            e.kind,
            EventKind::SoftwareInterrupt
                | EventKind::SoftwareException
                | EventKind::PrivilegedSoftwareException
        );
        if software && !(1..=15).contains(&e.instruction_length) {
            return invalid(
                "events.queued",
                "a software event needs the length (1-15) of its instruction",
            );
        }
    }
    Ok(())
}

/// Writes a validated `state` into the VMCS `f` so that the guest TSC reads `state.tsc` at
/// `host_tsc`; returns what lives outside the VMCS.
pub(super) fn write(
    f: &mut impl Fields,
    state: &VcpuState,
    cr: &CrPolicy,
    host_tsc: u64,
) -> Outside {
    let r = &state.registers;
    vmcs::write_guest_state(f, r, cr);
    let tsc_offset = state.tsc.wrapping_sub(host_tsc);
    f.write(field::TSC_OFFSET, tsc_offset);
    f.write(field::GUEST_DR7, state.debug.dr7);
    f.write(field::GUEST_IA32_PAT, state.emulated_msrs.pat);
    let p = &state.passthrough_msrs;
    f.write(field::GUEST_SYSENTER_CS, p.sysenter_cs);
    f.write(field::GUEST_SYSENTER_ESP, p.sysenter_esp);
    f.write(field::GUEST_SYSENTER_EIP, p.sysenter_eip);
    let e = &state.events;
    let mut blocking = 0;
    if e.interrupt_shadow {
        // One flag in the neutral state; VM entry accepts blocking by STI only with IF set.
        blocking |= if r.rflags & RFLAGS_IF != 0 {
            BLOCKING_STI
        } else {
            BLOCKING_MOV_SS
        };
    }
    if e.nmi_blocked {
        blocking |= BLOCKING_NMI;
    }
    f.write(field::GUEST_INTERRUPTIBILITY, blocking);
    // A single step behind the shadow is still pending (the entry check in §27.3.1.5).
    let bs = e.interrupt_shadow && r.rflags & RFLAGS_TF != 0;
    f.write(
        field::GUEST_PENDING_DEBUG_EXCEPTIONS,
        if bs { PENDING_DEBUG_BS } else { 0 },
    );
    match &e.queued {
        Some(q) => {
            f.write(field::ENTRY_INTERRUPTION_INFO, event_info(q).into());
            f.write(
                field::ENTRY_EXCEPTION_ERROR_CODE,
                q.error_code.unwrap_or(0).into(),
            );
            f.write(field::ENTRY_INSTRUCTION_LENGTH, q.instruction_length.into());
        }
        None => {
            f.write(field::ENTRY_INTERRUPTION_INFO, 0);
            f.write(field::ENTRY_EXCEPTION_ERROR_CODE, 0);
            f.write(field::ENTRY_INSTRUCTION_LENGTH, 0);
        }
    }
    let proc = f.read(field::PROC_BASED_CONTROLS) as u32;
    let window = vmcs::proc::INTERRUPT_WINDOW_EXITING;
    let proc = if e.interrupt_window {
        proc | window
    } else {
        proc & !window
    };
    f.write(field::PROC_BASED_CONTROLS, proc.into());
    let mut msrs = state.emulated_msrs;
    msrs.tsc_offset = tsc_offset;
    msrs.efer = r.efer & msr::EFER_GUEST_BITS;
    Outside {
        gpr: r.gpr,
        cr2: r.cr2,
        syscall: [p.star, p.lstar, p.sfmask, p.kernel_gs_base],
        cstar: p.cstar,
        dr: state.debug.dr,
        dr6: state.debug.dr6,
        msrs,
        fpu: state.fpu.clone(),
    }
}
