//! A vCPU's architectural state in a backend-neutral form: what [`Vcpu::save_state`] returns
//! and [`Vcpu::restore_state`] loads, on SVM and VMX alike: the saved form does not depend
//! on a backend's control-structure layout (moving a saved VM between hosts is later work).
//!
//! Only what the guest can observe is here: registers, the MSRs Keel lets it have, its FPU
//! and vector state, the events in flight and its TSC. Host addresses, ASIDs/VPIDs and
//! control-structure layouts are not: the backend rebuilds those.
//!
//! # The seam: trait methods, and `Persist` through the VM backend
//!
//! A vCPU is a `Box<dyn Vcpu>` made by the VM's [`VmBackend`], which owns what the vCPU
//! needs from outside (the nested page tables, the host's frames, the CPU's capabilities).
//! [`Persist::restore`] returns `Self` and so needs a concrete type, which the VM never sees;
//! the state therefore moves through [`Vcpu::save_state`] / [`Vcpu::restore_state`] on the
//! trait object, and [`VmBackend::restore_vcpu`] is `Persist::restore` in all but name (its
//! constructor arguments are the VM backend and the APIC id). Both take the host TSC, which
//! `Persist::save(&self)` has no room for.
//!
//! # What the backends do with it
//!
//! - SVM: the VMCB save area holds the registers, DR6/DR7, the SYSCALL/SYSENTER MSRs and
//!   KERNEL_GS_BASE; DR0-DR3 are switched per vCPU by the backend; the NMI mask is Keel's.
//! - VMX: the VMCS holds the registers, DR7 (loaded and saved with the debug controls) and
//!   the SYSENTER MSRs; the SYSCALL MSRs, CSTAR, DR0-DR3 and DR6 are switched by the
//!   backend; PAE PDPTEs are reloaded from guest memory before the first entry after a
//!   restore. An interrupt shadow restores as blocking by STI with RFLAGS.IF set, by MOV SS
//!   without.
//! - Both: the XSAVE area is forced out of the CPU's registers on save and checked against
//!   the host (XSTATE_BV, MXCSR) on restore; the TSC is the guest's value, and a restore
//!   sets the offset so it continues from there (the emulated MSRs' `tsc_offset` is
//!   rewritten to match).
//! - Not in the state: the guest's CR8 under SVM (V_TPR; Keel's guests use the local APIC's
//!   TPR register), the local APIC itself (a device model), and host resources.
//!
//! [`Vcpu::save_state`]: super::Vcpu::save_state
//! [`Persist::restore`]: crate::persist::Persist::restore
//! [`VmBackend`]: crate::backend::VmBackend
//! [`VmBackend::restore_vcpu`]: crate::backend::VmBackend::restore_vcpu
//! [`Vcpu::restore_state`]: super::Vcpu::restore_state

use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use super::{Registers, Segment};

/// Debug registers (DR0–DR3 breakpoints, DR6 status, DR7 control).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugRegisters {
    /// DR0–DR3.
    pub dr: [u64; 4],
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
}

/// MSRs the guest reads and writes directly (the hardware switches or passes them through);
/// FS and GS bases are in the segment registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassthroughMsrs {
    /// `IA32_STAR`.
    pub star: u64,
    /// `IA32_LSTAR`.
    pub lstar: u64,
    /// `IA32_CSTAR`.
    pub cstar: u64,
    /// `IA32_FMASK` (SFMASK).
    pub sfmask: u64,
    /// `IA32_KERNEL_GS_BASE`.
    pub kernel_gs_base: u64,
    /// `IA32_SYSENTER_CS`.
    pub sysenter_cs: u64,
    /// `IA32_SYSENTER_ESP`.
    pub sysenter_esp: u64,
    /// `IA32_SYSENTER_EIP`.
    pub sysenter_eip: u64,
}

/// The kind of an event queued for delivery at the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// An external interrupt the VMM acknowledged at its interrupt controller.
    ExternalInterrupt,
    /// A non-maskable interrupt.
    Nmi,
    /// A hardware exception (with or without an error code).
    Exception,
    /// A software interrupt (INT n) being re-delivered.
    SoftwareInterrupt,
    /// A software exception (INT3, INTO) being re-delivered.
    SoftwareException,
    /// A privileged software exception (INT1/ICEBP) being re-delivered.
    PrivilegedSoftwareException,
}

/// An event the backend had queued but the guest had not yet taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedEvent {
    /// What it is.
    pub kind: EventKind,
    /// Its vector.
    pub vector: u8,
    /// The exception's error code, if it pushes one.
    pub error_code: Option<u32>,
    /// For the software kinds: the length of the instruction that raised it (the return
    /// address is RIP plus this; VMX needs it to re-deliver, SVM records 0).
    pub instruction_length: u8,
}

/// Events in flight and interrupt blocking at the moment of the save.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvents {
    /// An STI or MOV SS interrupt shadow covers the next instruction.
    pub interrupt_shadow: bool,
    /// NMIs are blocked: an NMI is in service and its IRET has not completed.
    pub nmi_blocked: bool,
    /// An event queued for the next entry and not yet delivered.
    pub queued: Option<QueuedEvent>,
    /// The VMM asked for an interrupt-window exit.
    pub interrupt_window: bool,
}

/// The size of [`VcpuState::fpu`]: a 4 KiB XSAVE (or FXSAVE, in its first 512 bytes) area.
pub const FPU_AREA_BYTES: usize = 4096;

/// Everything a vCPU holds that its guest can observe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuState {
    /// General-purpose, segment, control and descriptor-table registers, RIP, RFLAGS, EFER.
    pub registers: Registers,
    /// Debug registers.
    pub debug: DebugRegisters,
    /// The MSRs Keel emulates ([`crate::msr::MsrState`]).
    pub emulated_msrs: crate::msr::State,
    /// The MSRs the guest has directly.
    pub passthrough_msrs: PassthroughMsrs,
    /// XCR0 as the guest set it (1 where the guest has no XSAVE).
    pub xcr0: u64,
    /// The x87/SSE/AVX state in XSAVE layout ([`FPU_AREA_BYTES`] long).
    pub fpu: Vec<u8>,
    /// Events in flight.
    pub events: PendingEvents,
    /// The guest's TSC at the instant of the save (a restore continues from it).
    pub tsc: u64,
}

impl VcpuState {
    /// The state of a vCPU just created with `registers`: FPU after FNINIT (FCW 0x37F,
    /// MXCSR 0x1F80), MSRs and debug registers at reset, no events, guest TSC `tsc`.
    pub fn at_reset(registers: Registers, tsc: u64) -> VcpuState {
        let mut fpu = alloc::vec![0u8; FPU_AREA_BYTES];
        fpu[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        fpu[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        VcpuState {
            registers,
            debug: DebugRegisters {
                dr: [0; 4],
                dr6: 0xffff_0ff0,
                dr7: 0x400,
            },
            emulated_msrs: crate::msr::MsrState::new().state(),
            passthrough_msrs: PassthroughMsrs::default(),
            xcr0: 1,
            fpu,
            events: PendingEvents::default(),
            tsc,
        }
    }
}

/// Why a [`VcpuState`] was refused: the field, and what is wrong with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuStateError {
    /// A field holds a value the hardware would refuse (or Keel never gives a guest).
    Invalid {
        /// The field, as a path into [`VcpuState`] (`registers.cr0`, `events.queued`, …).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The FPU area cannot be loaded on this host.
    Fpu(crate::backend::fpu::FpuAreaError),
}

impl fmt::Display for VcpuStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuStateError::Invalid { field, reason } => write!(f, "vCPU state {field}: {reason}"),
            VcpuStateError::Fpu(e) => write!(f, "vCPU state fpu: {e}"),
        }
    }
}

impl core::error::Error for VcpuStateError {}

fn invalid(field: &'static str, reason: &'static str) -> VcpuStateError {
    VcpuStateError::Invalid { field, reason }
}

/// CR0.PE, CR0.NW, CR0.CD, CR0.PG.
const CR0_PE: u64 = 1;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE, CR4.VMXE, CR4.SMXE.
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;
const CR4_SMXE: u64 = 1 << 14;
/// The CR4 bits the SDM/APM define (VME … PKE, CET, PKS, UINTR aside).
const CR4_DEFINED: u64 = 0x01f7_7fff;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS: bit 1 reads as 1; bits 3, 5, 15 and 22-63 are reserved (zero).
const RFLAGS_FIXED1: u64 = 1 << 1;
const RFLAGS_RESERVED: u64 = !0x3f_7fd7;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_VM: u64 = 1 << 17;
/// Segment access rights: the layout's defined bits (type, S, DPL, P, AVL, L, D/B, G,
/// unusable).
const ACCESS_DEFINED: u32 = 0x1_f0ff;
const ACCESS_S: u32 = 1 << 4;
const ACCESS_P: u32 = 1 << 7;
const ACCESS_L: u32 = 1 << 13;
const ACCESS_DB: u32 = 1 << 14;
const ACCESS_G: u32 = 1 << 15;
/// Bit 16: the segment is unusable (a null selector was loaded).
pub const ACCESS_UNUSABLE: u32 = 1 << 16;

/// Whether `v` is canonical for 48-bit linear addresses.
pub fn is_canonical(v: u64) -> bool {
    let top = v >> 47;
    top == 0 || top == 0x1_ffff
}

/// Checks one segment register as VM entry does (SDM Vol. 3C §27.3.1.2; APM §15.5.1 is
/// laxer): defined bits only, present and a fitting type when usable (the accessed bit
/// aside), granularity matching the limit. Data segments that are not present count as unusable (SVM keeps no unusable
/// flag).
fn check_segment(
    field: &'static str,
    seg: &Segment,
    kind: SegmentKind,
) -> Result<(), VcpuStateError> {
    let a = seg.access;
    if a & !ACCESS_DEFINED != 0 {
        return Err(invalid(field, "access rights have reserved bits set"));
    }
    let usable = a & ACCESS_UNUSABLE == 0
        && (a & ACCESS_P != 0 || matches!(kind, SegmentKind::Code | SegmentKind::Task));
    if !usable {
        return match kind {
            SegmentKind::Code | SegmentKind::Task => Err(invalid(field, "must be usable")),
            _ => Ok(()),
        };
    }
    if a & ACCESS_P == 0 {
        return Err(invalid(field, "a usable segment must be present"));
    }
    let ty = a & 0xf;
    let system = a & ACCESS_S == 0;
    // The accessed bit of code and data segments is not checked: the CPU sets it in the
    // descriptor when it loads one, but QEMU's SVM does not always show it in the VMCB. The
    // VMX backend sets it when it loads a usable segment (VM entry requires it).
    let data_ty = ty | 1;
    let type_ok = match kind {
        SegmentKind::Code => !system && matches!(data_ty, 3 | 9 | 11 | 13 | 15),
        SegmentKind::Stack => !system && matches!(data_ty, 3 | 7),
        SegmentKind::Data => !system && (ty & 8 == 0 || ty & 2 != 0),
        // Busy or, as QEMU's SVM may show it, available (the VMX backend marks it busy).
        SegmentKind::Task => system && matches!(ty | 2, 3 | 11),
        SegmentKind::Ldt => system && ty == 2,
    };
    if !type_ok {
        return Err(invalid(field, "the segment type does not fit the register"));
    }
    if seg.limit & 0xfff != 0xfff && a & ACCESS_G != 0 {
        return Err(invalid(
            field,
            "page granularity needs a limit ending in 0xfff",
        ));
    }
    if seg.limit >> 20 != 0 && a & ACCESS_G == 0 {
        return Err(invalid(field, "a limit above 1 MiB needs page granularity"));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum SegmentKind {
    Code,
    Stack,
    Data,
    Task,
    Ldt,
}

impl VcpuState {
    /// Checks the state against the architecture, independently of the backend: what VM
    /// entry (SDM Vol. 3C §27.3.1) or VMRUN (APM §15.5.1) would refuse, and what Keel never
    /// gives a guest. The backends add their own checks (their CR4 policy, the host's FPU
    /// features) in `restore_state`.
    pub fn validate(&self) -> Result<(), VcpuStateError> {
        let r = &self.registers;
        if r.cr0 >> 32 != 0 {
            return Err(invalid("registers.cr0", "bits 63:32 are reserved"));
        }
        if r.cr0 & CR0_PG != 0 && r.cr0 & CR0_PE == 0 {
            return Err(invalid(
                "registers.cr0",
                "paging (PG) without protection (PE)",
            ));
        }
        if r.cr0 & CR0_NW != 0 && r.cr0 & CR0_CD == 0 {
            return Err(invalid("registers.cr0", "NW without CD"));
        }
        if r.cr4 & !CR4_DEFINED != 0 || r.cr4 & (CR4_VMXE | CR4_SMXE) != 0 {
            return Err(invalid("registers.cr4", "reserved, VMXE or SMXE bits set"));
        }
        if r.cr3 >> 52 != 0 {
            return Err(invalid(
                "registers.cr3",
                "bits above the physical-address width",
            ));
        }
        if r.efer & !crate::msr::EFER_GUEST_BITS != 0 {
            return Err(invalid(
                "registers.efer",
                "bits other than SCE, LME, LMA, NXE",
            ));
        }
        let paging = r.cr0 & CR0_PG != 0;
        let lma = r.efer & EFER_LMA != 0;
        if lma != (paging && r.efer & EFER_LME != 0) {
            return Err(invalid(
                "registers.efer",
                "LMA must equal CR0.PG and EFER.LME",
            ));
        }
        if lma && r.cr4 & CR4_PAE == 0 {
            return Err(invalid("registers.cr4", "long mode needs PAE"));
        }
        if r.rflags & RFLAGS_RESERVED != 0 || r.rflags & RFLAGS_FIXED1 == 0 {
            return Err(invalid(
                "registers.rflags",
                "reserved bits set or bit 1 clear",
            ));
        }
        if lma && r.rflags & RFLAGS_VM != 0 {
            return Err(invalid(
                "registers.rflags",
                "virtual-8086 mode in long mode",
            ));
        }
        check_segment("registers.cs", &r.cs, SegmentKind::Code)?;
        check_segment("registers.ss", &r.ss, SegmentKind::Stack)?;
        check_segment("registers.ds", &r.ds, SegmentKind::Data)?;
        check_segment("registers.es", &r.es, SegmentKind::Data)?;
        check_segment("registers.fs", &r.fs, SegmentKind::Data)?;
        check_segment("registers.gs", &r.gs, SegmentKind::Data)?;
        check_segment("registers.tr", &r.tr, SegmentKind::Task)?;
        check_segment("registers.ldtr", &r.ldtr, SegmentKind::Ldt)?;
        let code64 = lma && r.cs.access & ACCESS_L != 0;
        if code64 && r.cs.access & ACCESS_DB != 0 {
            return Err(invalid("registers.cs", "L and D/B both set"));
        }
        if lma && (r.tr.access & 0xf) | 2 != 11 {
            return Err(invalid("registers.tr", "long mode needs a 64-bit TSS"));
        }
        if code64 {
            if !is_canonical(r.rip) {
                return Err(invalid("registers.rip", "not canonical"));
            }
        } else if r.rip >> 32 != 0 {
            return Err(invalid(
                "registers.rip",
                "bits 63:32 set outside 64-bit code",
            ));
        }
        for (field, base) in [
            ("registers.fs", r.fs.base),
            ("registers.gs", r.gs.base),
            ("registers.tr", r.tr.base),
            ("registers.ldtr", r.ldtr.base),
            ("registers.gdtr", r.gdtr.0),
            ("registers.idtr", r.idtr.0),
            (
                "passthrough_msrs.kernel_gs_base",
                self.passthrough_msrs.kernel_gs_base,
            ),
            ("passthrough_msrs.lstar", self.passthrough_msrs.lstar),
            ("passthrough_msrs.cstar", self.passthrough_msrs.cstar),
            (
                "passthrough_msrs.sysenter_esp",
                self.passthrough_msrs.sysenter_esp,
            ),
            (
                "passthrough_msrs.sysenter_eip",
                self.passthrough_msrs.sysenter_eip,
            ),
        ] {
            if !is_canonical(base) {
                return Err(invalid(field, "not a canonical address"));
            }
        }
        if self.passthrough_msrs.sysenter_cs >> 16 != 0 {
            return Err(invalid(
                "passthrough_msrs.sysenter_cs",
                "bits 63:16 are reserved",
            ));
        }
        if self.passthrough_msrs.sfmask >> 32 != 0 {
            return Err(invalid(
                "passthrough_msrs.sfmask",
                "bits 63:32 are reserved",
            ));
        }
        if self.debug.dr6 >> 32 != 0 || self.debug.dr7 >> 32 != 0 {
            return Err(invalid("debug", "DR6/DR7 bits 63:32 are reserved"));
        }
        let mut msrs = crate::msr::MsrState::new();
        if let Err(crate::msr::MsrFault::Gp { msr }) = msrs.restore(self.emulated_msrs) {
            return Err(invalid(
                match msr {
                    crate::msr::IA32_PAT => "emulated_msrs.pat",
                    crate::msr::IA32_MTRR_DEF_TYPE => "emulated_msrs.mtrr_def_type",
                    _ => "emulated_msrs.efer",
                },
                "a value the guest could not have written",
            ));
        }
        if self.xcr0 != 1 {
            return Err(invalid(
                "xcr0",
                "Keel's guests have no XSAVE: XCR0 is always 1 (x87)",
            ));
        }
        if self.fpu.len() != FPU_AREA_BYTES {
            return Err(VcpuStateError::Fpu(
                crate::backend::fpu::FpuAreaError::Length(self.fpu.len()),
            ));
        }
        self.events.validate(r.rflags, r.cr0 & CR0_PE != 0)
    }
}

impl PendingEvents {
    /// The event-injection checks (SDM Vol. 3C §27.3.1.4-5, APM §15.20).
    fn validate(&self, rflags: u64, protected: bool) -> Result<(), VcpuStateError> {
        const FIELD: &str = "events.queued";
        let Some(e) = self.queued else {
            return Ok(());
        };
        match e.kind {
            EventKind::Nmi if e.vector != 2 => return Err(invalid(FIELD, "an NMI has vector 2")),
            EventKind::Nmi if self.nmi_blocked => {
                return Err(invalid(FIELD, "an NMI queued while NMIs are blocked"));
            }
            EventKind::Exception | EventKind::SoftwareException if e.vector >= 32 => {
                return Err(invalid(FIELD, "an exception vector is below 32"));
            }
            EventKind::PrivilegedSoftwareException if e.vector != 1 => {
                return Err(invalid(FIELD, "INT1 has vector 1"));
            }
            EventKind::ExternalInterrupt if rflags & RFLAGS_IF == 0 || self.interrupt_shadow => {
                return Err(invalid(
                    FIELD,
                    "an external interrupt queued while interrupts are blocked",
                ));
            }
            _ => {}
        }
        // Delivered with an error code exactly when a protected-mode hardware exception
        // pushes one (#DF, #TS, #NP, #SS, #GP, #PF, #AC).
        let pushes = e.kind == EventKind::Exception
            && protected
            && crate::backend::vmx::exit_info::exception_has_error_code(e.vector);
        if e.error_code.is_some() != pushes {
            return Err(invalid(
                FIELD,
                "an error code must come with, and only with, a protected-mode exception that pushes one",
            ));
        }
        if e.instruction_length > 15 {
            return Err(invalid(FIELD, "instructions are at most 15 bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::start_registers;
    use crate::vcpu::StartMode;

    fn long_mode() -> VcpuState {
        let regs = start_registers(StartMode::LongMode {
            entry: 0xffff_ffff_8100_0000,
            cr3: 0x9000,
            gdt: 0x500,
            stack: 0x8000,
            rsi: 0x7000,
        });
        VcpuState::at_reset(regs, 42)
    }

    /// A change to a valid state and the error it must cause.
    type Case = (fn(&mut VcpuState), &'static str);

    fn error(state: &VcpuState) -> String {
        state.validate().unwrap_err().to_string()
    }

    #[test]
    fn every_start_state_is_valid() {
        for start in [
            StartMode::RealMode { entry: 0x7c00 },
            StartMode::StartupIpi { vector: 0x9a },
            StartMode::Protected32 {
                entry: 0x100_0000,
                ebx: 0x6000,
            },
        ] {
            VcpuState::at_reset(start_registers(start), 0)
                .validate()
                .unwrap_or_else(|e| panic!("{start:?}: {e}"));
        }
        long_mode().validate().unwrap();
    }

    #[test]
    fn control_register_combinations_the_cpu_refuses() {
        let cases: [Case; 9] = [
            (
                |s| s.registers.cr0 &= !1,
                "registers.cr0: paging (PG) without protection (PE)",
            ),
            (
                |s| s.registers.cr0 |= 1 << 29,
                "registers.cr0: NW without CD",
            ),
            (
                |s| s.registers.cr0 |= 1 << 32,
                "registers.cr0: bits 63:32 are reserved",
            ),
            (
                |s| s.registers.cr4 |= 1 << 13,
                "registers.cr4: reserved, VMXE or SMXE bits set",
            ),
            (
                |s| s.registers.cr4 &= !(1 << 5),
                "registers.cr4: long mode needs PAE",
            ),
            (
                |s| s.registers.efer &= !(1 << 10),
                "registers.efer: LMA must equal CR0.PG and EFER.LME",
            ),
            (
                |s| s.registers.efer |= 1 << 12,
                "registers.efer: bits other than SCE, LME, LMA, NXE",
            ),
            (
                |s| s.registers.rflags = 0,
                "registers.rflags: reserved bits set or bit 1 clear",
            ),
            (
                |s| s.registers.rip = 0x8000_0000_0000,
                "registers.rip: not canonical",
            ),
        ];
        for (change, want) in cases {
            let mut s = long_mode();
            change(&mut s);
            assert_eq!(error(&s), std::format!("vCPU state {want}"));
        }
    }

    #[test]
    fn segment_access_rights_the_cpu_refuses() {
        let cases: [Case; 7] = [
            (
                |s| s.registers.cs.access |= 1 << 8,
                "registers.cs: access rights have reserved bits set",
            ),
            (
                |s| s.registers.cs.access = 0x1_0000,
                "registers.cs: must be usable",
            ),
            (
                |s| s.registers.ss.access = 0xc09b,
                "registers.ss: the segment type does not fit the register",
            ),
            (
                |s| s.registers.ds.access = 0x82,
                "registers.ds: the segment type does not fit the register",
            ),
            (
                |s| s.registers.tr.access = 0x83,
                "registers.tr: long mode needs a 64-bit TSS",
            ),
            (
                |s| s.registers.fs.limit = 0xffff_f000,
                "registers.fs: page granularity needs a limit ending in 0xfff",
            ),
            (
                |s| s.registers.cs.access |= 1 << 14,
                "registers.cs: L and D/B both set",
            ),
        ];
        for (change, want) in cases {
            let mut s = long_mode();
            change(&mut s);
            assert_eq!(error(&s), std::format!("vCPU state {want}"));
        }
        // A not-present data segment is an unusable one, whatever else it holds.
        let mut s = long_mode();
        s.registers.gs = Segment::default();
        s.validate().unwrap();
    }

    #[test]
    fn msrs_fpu_and_events_are_checked() {
        let cases: [Case; 9] = [
            (
                |s| s.emulated_msrs.pat = 2,
                "emulated_msrs.pat: a value the guest could not have written",
            ),
            (
                |s| s.passthrough_msrs.lstar = 1 << 60,
                "passthrough_msrs.lstar: not a canonical address",
            ),
            (
                |s| s.debug.dr7 = 1 << 40,
                "debug: DR6/DR7 bits 63:32 are reserved",
            ),
            (
                |s| s.xcr0 = 7,
                "xcr0: Keel's guests have no XSAVE: XCR0 is always 1 (x87)",
            ),
            (
                |s| s.fpu.truncate(512),
                "fpu: the area is 512 bytes, not 4096",
            ),
            (
                |s| {
                    s.events.queued = Some(QueuedEvent {
                        kind: EventKind::Nmi,
                        vector: 3,
                        error_code: None,
                        instruction_length: 0,
                    })
                },
                "events.queued: an NMI has vector 2",
            ),
            (
                |s| {
                    s.events.queued = Some(QueuedEvent {
                        kind: EventKind::ExternalInterrupt,
                        vector: 0x30,
                        error_code: None,
                        instruction_length: 0,
                    })
                },
                "events.queued: an external interrupt queued while interrupts are blocked",
            ),
            (
                |s| {
                    s.events.queued = Some(QueuedEvent {
                        kind: EventKind::Exception,
                        vector: 6,
                        error_code: Some(0),
                        instruction_length: 0,
                    })
                },
                "events.queued: an error code must come with, and only with, a protected-mode \
                 exception that pushes one",
            ),
            (
                |s| {
                    s.events.queued = Some(QueuedEvent {
                        kind: EventKind::Exception,
                        vector: 13,
                        error_code: None,
                        instruction_length: 0,
                    })
                },
                "events.queued: an error code must come with, and only with, a protected-mode \
                 exception that pushes one",
            ),
        ];
        for (change, want) in cases {
            let mut s = long_mode();
            change(&mut s);
            assert_eq!(error(&s), std::format!("vCPU state {want}"));
        }
    }

    #[test]
    fn states_round_trip_through_postcard() {
        let mut s = long_mode();
        s.fpu[100] = 0xab;
        s.events = PendingEvents {
            interrupt_shadow: true,
            nmi_blocked: true,
            queued: Some(QueuedEvent {
                kind: EventKind::SoftwareInterrupt,
                vector: 0x80,
                error_code: None,
                instruction_length: 2,
            }),
            interrupt_window: true,
        };
        let bytes = postcard::to_allocvec(&s).unwrap();
        let back: VcpuState = postcard::from_bytes(&bytes).unwrap();
        assert!(back == s);
        // A truncated encoding is an error, not a panic.
        assert!(postcard::from_bytes::<VcpuState>(&bytes[..bytes.len() / 2]).is_err());
    }
}
