//! What each VM exit does (SDM Vol. 3C ch. 26 "VMX non-root operation", exit reasons in
//! appendix C), mirroring the SVM backend:
//!
//! | exit (basic reason) | result |
//! | --- | --- |
//! | 1 external interrupt, 52 preemption timer | [`VmExit::Interrupted`] |
//! | 8 NMI window (set while an NMI waits on blocking) | control cleared, [`VmExit::Interrupted`] |
//! | 0 NMI | handed to the host's NMI handler, then [`VmExit::Interrupted`] |
//! | 2 triple fault | [`VmExit::Shutdown`] |
//! | 10 CPUID | answered from the [`CpuidPolicy`](crate::cpuid::CpuidPolicy) |
//! | 12 HLT | [`VmExit::Hlt`] with the guest's RFLAGS.IF |
//! | 13 INVD | skipped (as WBINVD: the host may own dirty lines) |
//! | 28 CR access | emulated ([`super::cr`]) |
//! | 30 I/O | [`VmExit::IoIn`] / [`VmExit::IoOut`]; INS/OUTS stop the VM ([`VmExit::Unhandled`]) |
//! | 31/32 RDMSR/WRMSR | [`MsrState`](crate::msr::MsrState), EFER/PAT/TSC offset in the VMCS; #GP on failure |
//! | 48 EPT violation | MMIO decode: [`VmExit::MmioRead`] / [`VmExit::MmioWrite`], or [`VmExit::UnhandledMemoryAccess`] |
//! | 11 GETSEC, 18-27 VMX instructions, 36 MWAIT, 39 MONITOR, 50 INVEPT, 53 INVVPID, 55 XSETBV | #UD injected (the guest's CPU has no VMX, SMX, MONITOR or XSAVE) |
//! | bit 31 set (33, 34, 41) | [`VmExit::FailEntry`] |
//! | anything else (49 EPT misconfiguration, 9 task switch, …) | [`VmExit::Unhandled`] |
//!
//! Instruction lengths come from the VM-exit instruction-length field; MMIO instructions,
//! for which the CPU gives none, from the decoder.

use super::VmxVcpu;
use super::cr::{self, CrChange, CrView, GpFault};
use super::exit_info::{self, CrAccessKind, CrQualification, IoQualification, intr, reason};
use super::vmcs::{self, Fields, field};
use crate::backend::pending::Pending;
use crate::memory::GuestMemory;
use crate::msr::{self, MsrEffect};
use crate::vcpu::{EntryFailure, Gpr, Vcpu, VmExit};

const RFLAGS_IF: u64 = 1 << 9;
const VECTOR_UD: u8 = 6;
const VECTOR_GP: u8 = 13;
/// Guest interruptibility: blocking by STI (bit 0) and by MOV SS (bit 1).
const BLOCKING_STI_MOV_SS: u64 = 0b11;
/// Segment access rights: L (64-bit code).
const ACCESS_L: u64 = 1 << 13;

impl VmxVcpu {
    /// Housekeeping after every VM exit: an event whose delivery the exit interrupted is
    /// delivered again (IDT-vectoring information, SDM Vol. 3C §28.2.4 and §29.2.1), and
    /// "IA-32e mode guest" follows EFER.LMA on CPUs that do not store it themselves.
    pub(super) fn after_exit(&mut self) {
        let mut v = self.vmcs();
        let vectoring = v.read(field::IDT_VECTORING_INFO) as u32;
        if vectoring & intr::VALID != 0 {
            v.write(
                field::ENTRY_INTERRUPTION_INFO,
                u64::from(vectoring & intr::ENTRY_BITS),
            );
            if vectoring & intr::ERROR_CODE != 0 {
                let code = v.read(field::IDT_VECTORING_ERROR_CODE);
                v.write(field::ENTRY_EXCEPTION_ERROR_CODE, code);
            }
            if exit_info::needs_instruction_length(vectoring) {
                let len = v.read(field::EXIT_INSTRUCTION_LENGTH);
                v.write(field::ENTRY_INSTRUCTION_LENGTH, len);
            }
        }
        if !self.misc_stores_lma {
            let lma = v.read(field::GUEST_IA32_EFER) & cr::EFER_LMA != 0;
            vmcs::set_ia32e_mode(&mut v, lma);
        }
    }

    fn stop(&mut self, exit: VmExit) -> Option<VmExit> {
        self.stopped = true;
        Some(exit)
    }

    /// #GP(0) for an access the VMM refused.
    pub(super) fn inject_gp(&mut self) {
        self.inject_exception(VECTOR_GP);
    }

    fn inject_exception(&mut self, vector: u8) {
        let mut v = self.vmcs();
        let protected = v.read(field::GUEST_CR0) & cr::CR0_PE != 0;
        let info = exit_info::exception_injection(vector, protected);
        v.write(field::ENTRY_INTERRUPTION_INFO, info.into());
        if info & intr::ERROR_CODE != 0 {
            v.write(field::ENTRY_EXCEPTION_ERROR_CODE, 0);
        }
        self.internal.injected += 1;
    }

    /// Whether the guest runs 64-bit code (EFER.LMA and CS.L).
    fn in_64_bit_code(&self) -> bool {
        let v = self.vmcs();
        v.read(field::GUEST_IA32_EFER) & cr::EFER_LMA != 0
            && v.read(vmcs::CS.access) & ACCESS_L != 0
    }

    /// RIP after the exiting instruction: RIP + the VM-exit instruction length, wrapped as
    /// the guest's code size wraps it.
    fn next_rip(&self) -> u64 {
        let v = self.vmcs();
        let rip = v.read(field::GUEST_RIP);
        let len = v.read(field::EXIT_INSTRUCTION_LENGTH);
        let next = rip.wrapping_add(len);
        if self.in_64_bit_code() {
            next
        } else if v.read(vmcs::CS.access) & (1 << 14) != 0 {
            next & 0xffff_ffff
        } else {
            next & 0xffff
        }
    }

    /// Blocking by STI or MOV SS ends with the instruction after it, which the VMM has just
    /// completed for the guest.
    pub(super) fn clear_interrupt_shadow(&mut self) {
        let mut v = self.vmcs();
        let state = v.read(field::GUEST_INTERRUPTIBILITY);
        if state & BLOCKING_STI_MOV_SS != 0 {
            v.write(field::GUEST_INTERRUPTIBILITY, state & !BLOCKING_STI_MOV_SS);
        }
    }

    pub(super) fn set_rip_past_instruction(&mut self, next_rip: u64) {
        self.vmcs().write(field::GUEST_RIP, next_rip);
        self.clear_interrupt_shadow();
    }

    fn skip_instruction(&mut self) {
        let next = self.next_rip();
        self.set_rip_past_instruction(next);
    }

    fn gpr(&self, index: u8) -> u64 {
        if index == Gpr::Rsp as u8 {
            self.vmcs().read(field::GUEST_RSP)
        } else {
            self.regs.gpr[usize::from(index & 0xf)]
        }
    }

    fn set_gpr(&mut self, index: u8, value: u64) {
        if index == Gpr::Rsp as u8 {
            self.vmcs().write(field::GUEST_RSP, value);
        } else {
            self.regs.gpr[usize::from(index & 0xf)] = value;
        }
    }

    /// Maps one VM exit; `None` means handled here, re-enter the guest.
    pub(super) fn handle_exit(&mut self, memory: &GuestMemory) -> Option<VmExit> {
        let v = self.vmcs();
        let raw = v.read(field::EXIT_REASON);
        let qualification = v.read(field::EXIT_QUALIFICATION);
        if raw & exit_info::EXIT_REASON_ENTRY_FAILURE != 0 {
            return self.stop(VmExit::FailEntry {
                reason: EntryFailure::VmxEntryCheck {
                    reason: raw as u16,
                    qualification,
                },
            });
        }
        let basic = raw as u16;
        match basic {
            reason::EXTERNAL_INTERRUPT => {
                // The host has taken the interrupt (the `sti` after the switch); if it was
                // the timer, its preemption request is answered by this exit.
                let _ = crate::preempt::take();
                Some(VmExit::Interrupted)
            }
            reason::PREEMPTION_TIMER => Some(VmExit::Interrupted),
            reason::EXCEPTION_OR_NMI => {
                let info = v.read(field::EXIT_INTERRUPTION_INFO) as u32;
                if info & intr::VALID != 0 && info & intr::TYPE_MASK == intr::TYPE_NMI {
                    // NMI exiting consumed a host NMI: give it to the host's handler.
                    super::instr::raise_host_nmi();
                    Some(VmExit::Interrupted)
                } else {
                    self.stop(VmExit::Unhandled {
                        code: basic.into(),
                        info1: qualification,
                        info2: info.into(),
                    })
                }
            }
            reason::TRIPLE_FAULT => self.stop(VmExit::Shutdown),
            reason::INTERRUPT_WINDOW => {
                self.request_interrupt_window(false);
                Some(VmExit::InterruptWindow)
            }
            reason::NMI_WINDOW => {
                // Blocking by NMI ended: back to the VM loop, which injects the waiting NMI.
                self.set_proc_control(vmcs::proc::NMI_WINDOW_EXITING, false);
                self.internal.other += 1;
                Some(VmExit::Interrupted)
            }
            reason::RDMSR | reason::WRMSR
                if msr::platform_owned(self.regs.gpr[Gpr::Rcx as usize] as u32) =>
            {
                self.internal.msr += 1;
                let index = self.regs.gpr[Gpr::Rcx as usize] as u32;
                let next_rip = self.next_rip();
                let write = basic == reason::WRMSR;
                self.pending = Some(Pending::Msr { next_rip, write });
                if write {
                    let g = &self.regs.gpr;
                    let value = (g[Gpr::Rdx as usize] << 32) | (g[Gpr::Rax as usize] & 0xffff_ffff);
                    Some(VmExit::MsrWrite { msr: index, value })
                } else {
                    Some(VmExit::MsrRead { msr: index })
                }
            }
            reason::CPUID => {
                self.handle_cpuid();
                self.skip_instruction();
                None
            }
            reason::HLT => {
                let interrupts_enabled = v.read(field::GUEST_RFLAGS) & RFLAGS_IF != 0;
                self.skip_instruction();
                Some(VmExit::Hlt { interrupts_enabled })
            }
            reason::PAUSE => {
                self.skip_instruction();
                Some(VmExit::Pause)
            }
            reason::INVD => {
                // INVD would drop dirty cache lines the host may own: treat it as WBINVD,
                // which needs nothing from a guest's point of view.
                self.internal.other += 1;
                self.skip_instruction();
                None
            }
            reason::IO_INSTRUCTION => Some(self.handle_io(qualification)),
            reason::RDMSR | reason::WRMSR => {
                if self.handle_msr(basic == reason::WRMSR) {
                    self.skip_instruction();
                }
                None
            }
            reason::CR_ACCESS => self.handle_cr_access(memory, qualification),
            reason::EPT_VIOLATION => Some(self.handle_ept_violation(memory, qualification)),
            reason::GETSEC
            | reason::VMCALL
            | reason::VMCLEAR
            | reason::VMLAUNCH
            | reason::VMPTRLD
            | reason::VMPTRST
            | reason::VMREAD
            | reason::VMRESUME
            | reason::VMWRITE
            | reason::VMXOFF
            | reason::VMXON
            | reason::INVEPT
            | reason::INVVPID
            | reason::MWAIT
            | reason::MONITOR
            | reason::XSETBV => {
                // The guest sees a CPU without VMX, SMX, MONITOR or XSAVE: these raise #UD.
                self.inject_exception(VECTOR_UD);
                None
            }
            _ => {
                let info2 = if basic == reason::EPT_MISCONFIGURATION {
                    v.read(field::GUEST_PHYSICAL_ADDRESS)
                } else {
                    v.read(field::GUEST_LINEAR_ADDRESS)
                };
                self.stop(VmExit::Unhandled {
                    code: basic.into(),
                    info1: qualification,
                    info2,
                })
            }
        }
    }

    fn handle_cpuid(&mut self) {
        let g = &mut self.regs.gpr;
        let r = self.cpuid.query(
            g[Gpr::Rax as usize] as u32,
            g[Gpr::Rcx as usize] as u32,
            self.cpuid.vcpu_id(),
        );
        g[Gpr::Rax as usize] = r.eax.into();
        g[Gpr::Rbx as usize] = r.ebx.into();
        g[Gpr::Rcx as usize] = r.ecx.into();
        g[Gpr::Rdx as usize] = r.edx.into();
        self.internal.cpuid += 1;
    }

    /// RDMSR/WRMSR; returns false when #GP was injected (RIP must not move).
    fn handle_msr(&mut self, write: bool) -> bool {
        self.internal.msr += 1;
        let index = self.regs.gpr[Gpr::Rcx as usize] as u32;
        let mut v = self.vmcs();
        let efer = v.read(field::GUEST_IA32_EFER);
        let ok = if !write {
            let value = match index {
                msr::IA32_EFER => Ok(efer),
                msr::IA32_CSTAR => Ok(self.cstar),
                _ => self.msrs.read(index, super::instr::rdtsc()),
            };
            value.map_err(|_| ()).map(|value| {
                self.regs.gpr[Gpr::Rax as usize] = value & 0xffff_ffff;
                self.regs.gpr[Gpr::Rdx as usize] = value >> 32;
            })
        } else {
            let g = &self.regs.gpr;
            let value = (g[Gpr::Rdx as usize] << 32) | (g[Gpr::Rax as usize] & 0xffff_ffff);
            let paging = v.read(field::GUEST_CR0) & cr::CR0_PG != 0;
            match index {
                // Intel CPUs keep no CSTAR state that matters; the guest reads back what it
                // wrote, as on hardware.
                msr::IA32_CSTAR if is_canonical(value) => {
                    self.cstar = value;
                    Ok(())
                }
                msr::IA32_CSTAR => Err(()),
                // Changing LME while paging is on raises #GP (SDM Vol. 3A §10.8.5), and
                // would break the VM-entry check LME = LMA.
                msr::IA32_EFER if paging && (value ^ efer) & cr::EFER_LME != 0 => Err(()),
                _ => {
                    self.msrs.sync_efer(efer);
                    match self.msrs.write(index, value, super::instr::rdtsc()) {
                        Ok(MsrEffect::Efer(new)) => {
                            // LMA is the CPU's (paging with LME); keep its current value.
                            v.write(
                                field::GUEST_IA32_EFER,
                                (new & !cr::EFER_LMA) | (efer & cr::EFER_LMA),
                            );
                            Ok(())
                        }
                        Ok(MsrEffect::Pat(pat)) => {
                            v.write(field::GUEST_IA32_PAT, pat);
                            Ok(())
                        }
                        Ok(MsrEffect::TscOffset(offset)) => {
                            v.write(field::TSC_OFFSET, offset);
                            Ok(())
                        }
                        Ok(_) => Ok(()),
                        Err(_) => Err(()),
                    }
                }
            }
        };
        if ok.is_err() {
            self.inject_exception(VECTOR_GP);
        }
        ok.is_ok()
    }

    fn handle_io(&mut self, qualification: u64) -> VmExit {
        let io = IoQualification::decode(qualification);
        if io.string {
            // INS/OUTS are not emulated yet: stop the VM with a precise reason.
            let linear = self.vmcs().read(field::GUEST_LINEAR_ADDRESS);
            self.stopped = true;
            return VmExit::Unhandled {
                code: reason::IO_INSTRUCTION.into(),
                info1: qualification,
                info2: linear,
            };
        }
        let next_rip = self.next_rip();
        if io.input {
            self.pending = Some(Pending::Io {
                size: io.size,
                next_rip,
            });
            VmExit::IoIn {
                port: io.port,
                size: io.size,
            }
        } else {
            let mask = if io.size == 4 {
                u32::MAX
            } else {
                (1u32 << (io.size * 8)) - 1
            };
            let data = self.regs.gpr[Gpr::Rax as usize] as u32 & mask;
            self.set_rip_past_instruction(next_rip);
            VmExit::IoOut {
                port: io.port,
                size: io.size,
                data,
            }
        }
    }

    pub(super) fn cr_view(&self) -> CrView {
        let v = self.vmcs();
        CrView {
            cr0: cr::CrPolicy::visible(
                v.read(field::GUEST_CR0),
                v.read(field::CR0_READ_SHADOW),
                self.cr.cr0_mask(),
            ),
            cr3: v.read(field::GUEST_CR3),
            cr4: cr::CrPolicy::visible(
                v.read(field::GUEST_CR4),
                v.read(field::CR4_READ_SHADOW),
                self.cr.cr4_mask(),
            ),
            efer: v.read(field::GUEST_IA32_EFER),
            cs_long: self.in_64_bit_code(),
        }
    }

    /// Control-register accesses (exit reason 28). Returns the exit for the VMM, if any.
    fn handle_cr_access(&mut self, memory: &GuestMemory, qualification: u64) -> Option<VmExit> {
        let q = CrQualification::decode(qualification);
        let view = self.cr_view();
        // Outside 64-bit code MOV to CR takes the low 32 bits of the register.
        let source = if self.in_64_bit_code() {
            self.gpr(q.gpr)
        } else {
            self.gpr(q.gpr) & 0xffff_ffff
        };
        let result: Result<(), GpFault> = match (q.cr, q.kind) {
            (0, CrAccessKind::MovTo) => self
                .cr
                .write_cr0(&view, source)
                .and_then(|c| self.apply_cr_change(memory, &view, c)),
            (4, CrAccessKind::MovTo) => self
                .cr
                .write_cr4(&view, source)
                .and_then(|c| self.apply_cr_change(memory, &view, c)),
            (0, CrAccessKind::Clts) => self
                .cr
                .clts(&view)
                .and_then(|c| self.apply_cr_change(memory, &view, c)),
            (0, CrAccessKind::Lmsw(bits)) => self
                .cr
                .lmsw(&view, bits)
                .and_then(|c| self.apply_cr_change(memory, &view, c)),
            // CR3 exits happen only on CPUs that cannot turn CR3-load/store exiting off.
            (3, CrAccessKind::MovTo) => {
                let cr3 = source;
                let view = CrView { cr3, ..view };
                self.load_pdptes_if_pae(memory, &view).map(|()| {
                    self.vmcs().write(field::GUEST_CR3, cr3);
                    self.flush_vpid = true;
                })
            }
            (3, CrAccessKind::MovFrom) => {
                self.set_gpr(q.gpr, view.cr3);
                Ok(())
            }
            // CR8 exits happen only where CR8-load/store exiting is forced: keep the TPR.
            (8, CrAccessKind::MovTo) => {
                let tpr = source;
                if tpr >> 4 != 0 {
                    Err(GpFault)
                } else {
                    self.tpr = tpr;
                    Ok(())
                }
            }
            (8, CrAccessKind::MovFrom) => {
                self.set_gpr(q.gpr, self.tpr);
                Ok(())
            }
            _ => {
                return self.stop(VmExit::Unhandled {
                    code: reason::CR_ACCESS.into(),
                    info1: qualification,
                    info2: 0,
                });
            }
        };
        self.internal.other += 1;
        match result {
            Ok(()) => self.skip_instruction(),
            Err(GpFault) => self.inject_exception(VECTOR_GP),
        }
        None
    }

    /// Loads the PAE PDPTEs from guest memory into the VMCS when `view` is PAE paging.
    pub(super) fn load_pdptes_if_pae(
        &mut self,
        memory: &GuestMemory,
        view: &CrView,
    ) -> Result<(), GpFault> {
        if !cr::pae_paging(view.cr0, view.cr4, view.efer) {
            return Ok(());
        }
        let base = view.cr3 & 0xffff_ffe0;
        let mut pdptes = [0u64; 4];
        for (i, e) in pdptes.iter_mut().enumerate() {
            *e = memory.read_u64(base + 8 * i as u64).map_err(|_| GpFault)?;
        }
        cr::check_pdptes(&pdptes)?;
        let mut v = self.vmcs();
        for (f, e) in [
            field::GUEST_PDPTE0,
            field::GUEST_PDPTE1,
            field::GUEST_PDPTE2,
            field::GUEST_PDPTE3,
        ]
        .into_iter()
        .zip(pdptes)
        {
            v.write(f, e);
        }
        Ok(())
    }

    /// Applies an accepted CR0/CR4 write: hardware values with the fixed bits, read shadows,
    /// EFER.LMA with "IA-32e mode guest", PDPTEs, TLB flush.
    fn apply_cr_change(
        &mut self,
        memory: &GuestMemory,
        before: &CrView,
        c: CrChange,
    ) -> Result<(), GpFault> {
        if c.load_pdptes {
            let after = CrView {
                cr0: c.cr0,
                cr4: c.cr4,
                efer: c.efer,
                ..*before
            };
            self.load_pdptes_if_pae(memory, &after)?;
        }
        let mut v = self.vmcs();
        v.write(field::GUEST_CR0, self.cr.cr0_hardware(c.cr0));
        v.write(field::CR0_READ_SHADOW, c.cr0);
        v.write(field::GUEST_CR4, self.cr.cr4_hardware(c.cr4));
        v.write(field::CR4_READ_SHADOW, c.cr4);
        if c.efer != before.efer {
            v.write(field::GUEST_IA32_EFER, c.efer);
            vmcs::set_ia32e_mode(&mut v, c.efer & cr::EFER_LMA != 0);
        }
        if c.flush_tlb {
            self.flush_vpid = true;
        }
        Ok(())
    }

    /// An EPT violation (exit reason 48): a write to write-protected RAM (dirty tracking), or
    /// an access to guest-physical memory that is not RAM. Data accesses by a decodable
    /// instruction become MMIO.
    fn handle_ept_violation(&mut self, memory: &GuestMemory, qualification: u64) -> VmExit {
        // Bit 7: a guest-linear address is valid; bit 8 then says whether the access was to
        // the translation (1) or to a guest paging-structure entry (0) (SDM table 28-7).
        const LINEAR_VALID: u64 = 1 << 7;
        const TRANSLATED: u64 = 1 << 8;
        /// Bit 1: the access was a write; bit 3: the page was readable (SDM table 28-7).
        const WRITE: u64 = 1 << 1;
        const READABLE: u64 = 1 << 3;
        let v = self.vmcs();
        let gpa = v.read(field::GUEST_PHYSICAL_ADDRESS);
        let rip = v.read(field::GUEST_RIP);
        let vectoring = v.read(field::IDT_VECTORING_INFO) as u32;
        // A write to a readable RAM page can only be write protection (dirty tracking); RIP
        // stays at the write. An event being delivered is kept for the next entry
        // (`after_exit` queued it again).
        if qualification & (WRITE | READABLE | exit_info::EPT_VIOLATION_FETCH) == WRITE | READABLE
            && memory.contains(gpa, 1)
        {
            return VmExit::DirtyPageWrite { gpa };
        }
        let stop = |s: &mut Self, reason| {
            s.stopped = true;
            VmExit::UnhandledMemoryAccess { gpa, rip, reason }
        };
        if qualification & exit_info::EPT_VIOLATION_FETCH != 0 {
            return stop(
                self,
                "instruction fetch from guest-physical memory that is not RAM",
            );
        }
        if vectoring & intr::VALID != 0 {
            return stop(
                self,
                "delivering an interrupt or exception touched memory that is not RAM",
            );
        }
        if qualification & LINEAR_VALID != 0 && qualification & TRANSLATED == 0 {
            return stop(
                self,
                "a guest page-table walk touched memory that is not RAM",
            );
        }
        let access = match super::super::mmio::emulate(memory, &self.registers(), gpa) {
            Ok(access) => access,
            Err(reason) => return stop(self, reason),
        };
        if let Some(op) = access.pending {
            self.pending = Some(Pending::Mmio(op));
        }
        if let Some(rip) = access.next_rip {
            self.set_rip_past_instruction(rip);
        }
        access.exit
    }
}

/// Whether `value` is a canonical 48-bit address.
fn is_canonical(value: u64) -> bool {
    let top = value >> 47;
    top == 0 || top == 0x1_ffff
}

#[cfg(test)]
mod tests {
    use super::is_canonical;

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x7fff_ffff_ffff));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(!is_canonical(0x8000_0000_0000));
        assert!(!is_canonical(0x0001_0000_0000_0000));
    }
}
