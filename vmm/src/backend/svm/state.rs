//! A vCPU's state between the VMCB and the neutral [`VcpuState`]: what `save_state` reads
//! and `restore_state` writes, as pure functions over a [`Vmcb`] view so the host tests can
//! round-trip them on a plain page.
//!
//! In the VMCB (APM Vol. 2 Appendix B): segments, descriptor tables, CR0/2/3/4, EFER
//! (with SVME, hidden), RFLAGS, RIP, RSP, RAX, DR6, DR7, G_PAT, the TSC offset, the
//! SYSCALL/SYSENTER MSRs and KERNEL_GS_BASE (VMSAVE/VMLOAD keep them there), the interrupt
//! shadow, EVENTINJ and the VINTR intercept. Outside it ([`Outside`]): the other GPRs, the
//! NMI mask Keel tracks itself, DR0-DR3, the emulated MSRs and the FPU area.

use alloc::vec::Vec;

use super::NmiMask;
use super::vmcb::{self, Vmcb, offset};
use crate::msr;
use crate::vcpu::state::{DebugRegisters, EventKind, PassthroughMsrs, PendingEvents, QueuedEvent};
use crate::vcpu::{Registers, VcpuState};

/// EVENTINJ fields (APM §15.20): vector 7:0, type 10:8, EV 11, V 31, error code 63:32.
const TYPE_INTR: u64 = 0;
const TYPE_NMI: u64 = 2;
const TYPE_EXCEPTION: u64 = 3;
const TYPE_SOFT_INT: u64 = 4;
const EVENT_ERROR_VALID: u64 = 1 << 11;

/// The vCPU's state that is not in the VMCB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Outside {
    /// RAX … R15 (the RAX and RSP slots unused: those are in the VMCB).
    pub gpr: [u64; 16],
    /// The NMI mask.
    pub nmi: NmiMask,
    /// DR0-DR3.
    pub dr: [u64; 4],
    /// The emulated MSRs (EFER, PAT and the TSC offset are taken from the VMCB).
    pub msrs: msr::State,
    /// The FPU area.
    pub fpu: Vec<u8>,
}

fn decode_event(e: u64) -> Option<QueuedEvent> {
    if e & vmcb::EVENT_VALID == 0 {
        return None;
    }
    let vector = e as u8;
    let kind = match (e >> 8) & 7 {
        TYPE_NMI => EventKind::Nmi,
        TYPE_EXCEPTION => EventKind::Exception,
        TYPE_SOFT_INT => EventKind::SoftwareInterrupt,
        _ => EventKind::ExternalInterrupt,
    };
    Some(QueuedEvent {
        kind,
        vector,
        error_code: (e & EVENT_ERROR_VALID != 0).then_some((e >> 32) as u32),
        instruction_length: 0,
    })
}

fn encode_event(e: &QueuedEvent) -> u64 {
    let ty = match e.kind {
        EventKind::ExternalInterrupt => TYPE_INTR,
        EventKind::Nmi => TYPE_NMI,
        // SVM injects INT3/INTO/INT1 as exceptions (there is no separate type).
        EventKind::Exception
        | EventKind::SoftwareException
        | EventKind::PrivilegedSoftwareException => TYPE_EXCEPTION,
        EventKind::SoftwareInterrupt => TYPE_SOFT_INT,
    };
    let mut v = vmcb::EVENT_VALID | (ty << 8) | u64::from(e.vector);
    if let Some(code) = e.error_code {
        v |= EVENT_ERROR_VALID | (u64::from(code) << 32);
    }
    v
}

/// The neutral state of a vCPU whose VMCB is `v`, at host TSC `host_tsc`.
pub(super) fn read<B: core::borrow::Borrow<[u8; 4096]>>(
    v: &Vmcb<B>,
    out: Outside,
    host_tsc: u64,
) -> VcpuState {
    let mut registers = Registers {
        gpr: out.gpr,
        ..Registers::default()
    };
    v.registers_into(&mut registers);
    let tsc_offset = v.get(offset::TSC_OFFSET);
    let mut emulated = out.msrs;
    emulated.efer = registers.efer & msr::EFER_GUEST_BITS;
    emulated.pat = v.get(offset::G_PAT);
    emulated.tsc_offset = tsc_offset;
    let queued = decode_event(v.get(offset::EVENT_INJ));
    // A queued NMI is not in service yet: NMIs block once it is delivered.
    let nmi_blocked = out.nmi != NmiMask::Open && !queued.is_some_and(|e| e.kind == EventKind::Nmi);
    VcpuState {
        registers,
        debug: DebugRegisters {
            dr: out.dr,
            dr6: v.get(offset::DR6),
            dr7: v.get(offset::DR7),
        },
        emulated_msrs: emulated,
        passthrough_msrs: PassthroughMsrs {
            star: v.get(offset::STAR),
            lstar: v.get(offset::LSTAR),
            cstar: v.get(offset::CSTAR),
            sfmask: v.get(offset::SFMASK),
            kernel_gs_base: v.get(offset::KERNEL_GS_BASE),
            sysenter_cs: v.get(offset::SYSENTER_CS),
            sysenter_esp: v.get(offset::SYSENTER_ESP),
            sysenter_eip: v.get(offset::SYSENTER_EIP),
        },
        xcr0: 1,
        fpu: out.fpu,
        events: PendingEvents {
            interrupt_shadow: v.get(offset::INTERRUPT_SHADOW) & vmcb::INTERRUPT_SHADOW_ACTIVE != 0,
            nmi_blocked,
            queued,
            interrupt_window: v.get32(offset::INTERCEPT_MISC1) & vmcb::misc1::VINTR != 0,
        },
        tsc: host_tsc.wrapping_add(tsc_offset),
    }
}

/// Writes a validated `state` into the VMCB `v` (controls untouched but for the IRET and
/// VINTR intercepts and the virtual interrupt) so that the guest TSC reads `state.tsc` at
/// `host_tsc`; returns what lives outside the VMCB.
pub(super) fn write(v: &mut Vmcb<&mut [u8; 4096]>, state: &VcpuState, host_tsc: u64) -> Outside {
    let r = &state.registers;
    v.set_registers(r);
    let tsc_offset = state.tsc.wrapping_sub(host_tsc);
    v.set(offset::TSC_OFFSET, tsc_offset);
    v.set(offset::DR6, state.debug.dr6);
    v.set(offset::DR7, state.debug.dr7);
    v.set(offset::G_PAT, state.emulated_msrs.pat);
    let p = &state.passthrough_msrs;
    for (off, value) in [
        (offset::STAR, p.star),
        (offset::LSTAR, p.lstar),
        (offset::CSTAR, p.cstar),
        (offset::SFMASK, p.sfmask),
        (offset::KERNEL_GS_BASE, p.kernel_gs_base),
        (offset::SYSENTER_CS, p.sysenter_cs),
        (offset::SYSENTER_ESP, p.sysenter_esp),
        (offset::SYSENTER_EIP, p.sysenter_eip),
    ] {
        v.set(off, value);
    }
    let e = &state.events;
    v.set(
        offset::INTERRUPT_SHADOW,
        u64::from(e.interrupt_shadow) * vmcb::INTERRUPT_SHADOW_ACTIVE,
    );
    v.set(offset::EVENT_INJ, e.queued.as_ref().map_or(0, encode_event));
    v.set(offset::EXIT_INT_INFO, 0);
    let queued_nmi = e.queued.is_some_and(|q| q.kind == EventKind::Nmi);
    let nmi = if e.nmi_blocked || queued_nmi {
        NmiMask::InService
    } else {
        NmiMask::Open
    };
    let mut misc1 = v.get32(offset::INTERCEPT_MISC1) & !(vmcb::misc1::IRET | vmcb::misc1::VINTR);
    if nmi == NmiMask::InService {
        misc1 |= vmcb::misc1::IRET;
    }
    let mut vintr = v.get(offset::VINTR) & !(vmcb::V_IRQ | vmcb::V_INTR_PRIO_MAX | vmcb::V_IGN_TPR);
    if e.interrupt_window {
        misc1 |= vmcb::misc1::VINTR;
        vintr |= vmcb::V_IRQ | vmcb::V_INTR_PRIO_MAX | vmcb::V_IGN_TPR;
    }
    v.set32(offset::INTERCEPT_MISC1, misc1);
    v.set(offset::VINTR, vintr);
    let mut msrs = state.emulated_msrs;
    msrs.tsc_offset = tsc_offset;
    msrs.efer = r.efer & msr::EFER_GUEST_BITS;
    Outside {
        gpr: r.gpr,
        nmi,
        dr: state.debug.dr,
        msrs,
        fpu: state.fpu.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::boxed::Box;

    use super::*;
    use crate::vcpu::state::FPU_AREA_BYTES;

    fn sample() -> VcpuState {
        let mut registers =
            vmcb::long_mode_registers(0xffff_8000_0010_0000, 0x9000, 0x500, 0x8000, 7);
        for (i, g) in registers.gpr.iter_mut().enumerate() {
            *g = 0x1000 + i as u64;
        }
        registers.rflags = 0x202;
        registers.cr2 = 0xdead_0000;
        registers.fs.base = 0x7f00_0000_1000;
        registers.idtr = (0xffff_8000_0000_2000, 0xfff);
        // SVM's 12-bit attributes have no unusable flag: a null LDTR is a present, empty one.
        registers.ldtr.access = 0x82;
        VcpuState {
            registers,
            debug: DebugRegisters {
                dr: [1, 2, 3, 4],
                dr6: 0xffff_4ff0,
                dr7: 0x401,
            },
            emulated_msrs: msr::State {
                tsc_offset: 0,
                mtrr_def_type: 0xc06,
                misc_enable: 1,
                pat: 0x0007_0106_0007_0406,
                efer: registers.efer,
            },
            passthrough_msrs: PassthroughMsrs {
                star: 0x0023_0010_0000_0000,
                lstar: 0xffff_8000_0000_1000,
                cstar: 0xffff_8000_0000_2000,
                sfmask: 0x4_7700,
                kernel_gs_base: 0xffff_8880_0000_0000,
                sysenter_cs: 0x10,
                sysenter_esp: 0xffff_8000_0000_3000,
                sysenter_eip: 0xffff_8000_0000_4000,
            },
            xcr0: 1,
            fpu: std::vec![0x5a; FPU_AREA_BYTES],
            events: PendingEvents {
                interrupt_shadow: false,
                nmi_blocked: true,
                queued: Some(QueuedEvent {
                    kind: EventKind::Exception,
                    vector: 14,
                    error_code: Some(2),
                    instruction_length: 0,
                }),
                interrupt_window: true,
            },
            tsc: 1_000_000,
        }
    }

    /// Compares two states, the 4 KiB FPU areas apart (a failure prints the rest).
    fn assert_same(mut a: VcpuState, mut b: VcpuState) {
        assert!(a.fpu == b.fpu, "FPU areas differ");
        a.fpu.clear();
        b.fpu.clear();
        assert_eq!(a, b);
    }

    fn vmcb_page() -> Box<[u8; 4096]> {
        let mut p = Box::new([0u8; 4096]);
        Vmcb::new(&mut p).set_controls(0x1000, 0x4000, 1, 0x9000);
        p
    }

    #[test]
    fn state_round_trips_through_the_vmcb_and_the_tsc_continues() {
        let state = sample();
        state.validate().unwrap();
        let mut page = vmcb_page();
        let out = write(&mut Vmcb::new(&mut page), &state, 400);
        let v = Vmcb::view(&page);
        assert_eq!(v.get(offset::TSC_OFFSET), 1_000_000 - 400);
        assert_eq!(v.get(offset::EFER), state.registers.efer | vmcb::EFER_SVME);
        assert_eq!(
            v.get(offset::EVENT_INJ),
            0x2_8000_0b0e,
            "#PF with error code 2"
        );
        assert_ne!(v.get32(offset::INTERCEPT_MISC1) & vmcb::misc1::IRET, 0);
        assert_eq!(out.nmi, NmiMask::InService);
        assert_eq!(out.msrs.tsc_offset, 1_000_000 - 400);
        // Saved again 250 host ticks later: the guest TSC moved by 250, nothing else.
        let back = read(&v, out, 650);
        let want = VcpuState {
            tsc: 1_000_250,
            emulated_msrs: msr::State {
                tsc_offset: 1_000_000 - 400,
                ..state.emulated_msrs
            },
            ..state.clone()
        };
        assert_same(back, want);
    }

    #[test]
    fn a_queued_nmi_is_not_yet_blocking_and_reloads_as_in_service() {
        let mut state = sample();
        state.events = PendingEvents {
            nmi_blocked: false,
            queued: Some(QueuedEvent {
                kind: EventKind::Nmi,
                vector: 2,
                error_code: None,
                instruction_length: 0,
            }),
            ..PendingEvents::default()
        };
        state.validate().unwrap();
        let mut page = vmcb_page();
        let out = write(&mut Vmcb::new(&mut page), &state, 0);
        assert_eq!(out.nmi, NmiMask::InService, "delivery will block NMIs");
        assert_eq!(Vmcb::view(&page).get(offset::EVENT_INJ), vmcb::EVENT_NMI);
        let back = read(&Vmcb::view(&page), out, 0);
        assert_eq!(back.events, state.events);
    }

    #[test]
    fn no_events_clear_what_a_previous_state_left() {
        let mut page = vmcb_page();
        write(&mut Vmcb::new(&mut page), &sample(), 0);
        let mut quiet = sample();
        quiet.events = PendingEvents {
            interrupt_shadow: true,
            ..PendingEvents::default()
        };
        let out = write(&mut Vmcb::new(&mut page), &quiet, 0);
        let v = Vmcb::view(&page);
        assert_eq!(v.get(offset::EVENT_INJ), 0);
        assert_eq!(
            v.get32(offset::INTERCEPT_MISC1) & (vmcb::misc1::IRET | vmcb::misc1::VINTR),
            0
        );
        assert_eq!(v.get(offset::VINTR) & vmcb::V_IRQ, 0);
        assert_eq!(out.nmi, NmiMask::Open);
        assert_eq!(read(&v, out, 0).events, quiet.events);
    }

    #[test]
    fn software_events_are_injected_as_svm_types() {
        for (kind, vector, raw) in [
            (EventKind::SoftwareInterrupt, 0x80, 0x8000_0480),
            (EventKind::SoftwareException, 3, 0x8000_0303),
            (EventKind::ExternalInterrupt, 0x30, 0x8000_0030),
        ] {
            let e = QueuedEvent {
                kind,
                vector,
                error_code: None,
                instruction_length: 2,
            };
            assert_eq!(encode_event(&e), raw);
        }
        assert_eq!(
            decode_event(0x8000_0480).unwrap().kind,
            EventKind::SoftwareInterrupt
        );
        assert_eq!(decode_event(0x0000_0480), None);
    }
}

#[cfg(test)]
mod start_tests {
    use std::boxed::Box;

    use super::*;
    use crate::backend::start_registers;
    use crate::vcpu::StartMode;

    #[test]
    fn every_start_state_saves_valid_and_round_trips() {
        for start in [
            StartMode::RealMode { entry: 0x7c00 },
            StartMode::StartupIpi { vector: 0x9a },
            StartMode::LongMode {
                entry: 0x10_0200,
                cr3: 0x9000,
                gdt: 0x500,
                stack: 0x8000,
                rsi: 0x7000,
            },
            StartMode::Protected32 {
                entry: 0x100_0000,
                ebx: 0x6000,
            },
        ] {
            let regs = start_registers(start);
            let mut page = Box::new([0u8; 4096]);
            let mut v = Vmcb::new(&mut page);
            v.set_controls(0x1000, 0x4000, 1, 0x9000);
            v.set_registers(&regs);
            let reset = VcpuState::at_reset(regs, 0);
            let out = Outside {
                gpr: regs.gpr,
                nmi: NmiMask::Open,
                dr: [0; 4],
                msrs: crate::msr::MsrState::new().state(),
                fpu: reset.fpu.clone(),
            };
            let saved = read(&Vmcb::view(&page), out, 100);
            saved
                .validate()
                .unwrap_or_else(|e| panic!("{start:?}: {e}"));
            let out = write(&mut Vmcb::new(&mut page), &saved, 100);
            let again = read(&Vmcb::view(&page), out, 100);
            assert!(again == saved, "{start:?}");
        }
    }
}
