//! The AMD-V (SVM) backend: one VMCB per vCPU, nested paging, exits mapped to [`VmExit`].
//!
//! CPU-level exits are handled here and never reach the VMM: CPUID (through the
//! [`CpuidPolicy`]), RDMSR/WRMSR (through [`MsrState`]; unknown MSRs get #GP), INVD, and the
//! SVM instructions and XSETBV, which get #UD as on a CPU without SVM/XSAVE. Instruction
//! lengths come from the VMCB next-RIP field when the CPU has NRIP save, and otherwise from
//! decoding the instruction at RIP (QEMU TCG has no NRIP save; IOIO exits carry the next RIP
//! in EXITINFO2 anyway).

pub mod instr;
pub mod vmcb;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use self::instr::GuestGprs;
use self::vmcb::{Vmcb, exit, offset};
use super::{BackendError, fpu};
use crate::cpuid::CpuidPolicy;
use crate::decode::{self, MmioOp};
use crate::detect::SvmCapabilities;
use crate::guest_paging;
use crate::host::HostMemory;
use crate::memory::GuestMemory;
use crate::msr::{self, MsrEffect, MsrState};
use crate::nested_paging::{NestedFormat, NestedPageTables};
use crate::vcpu::{
    EntryFailure, Gpr, InternalExits, Registers, StartMode, Vcpu, VcpuError, VmExit,
};

const RFLAGS_IF: u64 = 1 << 9;
const MSR_EFER: u32 = 0xc000_0080;
const VECTOR_UD: u8 = 6;
const VECTOR_GP: u8 = 13;

/// This CPU's SVM host areas (VM_HSAVE_PA and the VMSAVE area for host state).
static HSAVE_PA: AtomicU64 = AtomicU64::new(0);
static HOST_SAVE_PA: AtomicU64 = AtomicU64::new(0);
static ENABLED: AtomicBool = AtomicBool::new(false);

/// ASIDs in use (bit n = ASID n); ASID 0 is the host's.
static ASIDS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
static ASID_LIMIT: AtomicU32 = AtomicU32::new(0);

fn alloc_asid(count: u32) -> Option<u32> {
    let limit = count.min(64 * 64);
    ASID_LIMIT.store(limit, Ordering::Relaxed);
    for asid in 1..limit {
        let (word, bit) = ((asid / 64) as usize, asid % 64);
        let prev = ASIDS[word].fetch_or(1 << bit, Ordering::AcqRel);
        if prev & (1 << bit) == 0 {
            return Some(asid);
        }
    }
    None
}

fn free_asid(asid: u32) {
    let (word, bit) = ((asid / 64) as usize, asid % 64);
    ASIDS[word].fetch_and(!(1 << bit), Ordering::AcqRel);
}

fn ensure_enabled(host: &'static dyn HostMemory) -> Result<(u64, u64), BackendError> {
    if !ENABLED.load(Ordering::Acquire) {
        let hsave = host
            .alloc_frames(1, 1)
            .ok_or(BackendError::OutOfHostMemory)?;
        let host_save = host
            .alloc_frames(1, 1)
            .ok_or(BackendError::OutOfHostMemory)?;
        fpu::enable_on_this_cpu();
        // SAFETY: detection found SVM usable on this CPU; the page is ours forever.
        unsafe { instr::enable(hsave) };
        HSAVE_PA.store(hsave, Ordering::Relaxed);
        HOST_SAVE_PA.store(host_save, Ordering::Relaxed);
        ENABLED.store(true, Ordering::Release);
    }
    Ok((
        HSAVE_PA.load(Ordering::Relaxed),
        HOST_SAVE_PA.load(Ordering::Relaxed),
    ))
}

/// A read the guest is waiting for.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Io { size: u8, next_rip: u64 },
    Mmio(MmioOp),
    Msr { next_rip: u64, write: bool },
}

/// One vCPU on AMD-V.
pub struct SvmVcpu {
    host: &'static dyn HostMemory,
    vmcb_pa: u64,
    iopm_pa: u64,
    msrpm_pa: u64,
    fpu_pa: u64,
    host_save_pa: u64,
    asid: u32,
    _npt: NestedPageTables,
    gprs: GuestGprs,
    nrip_save: bool,
    cpuid: CpuidPolicy,
    msrs: MsrState,
    pending: Option<Pending>,
    internal: InternalExits,
    flush_tlb: bool,
    stopped: bool,
    /// NMI state, which the VMCB does not show: see [`NmiMask`].
    nmi: NmiMask,
}

/// Whether the guest may take an NMI. An injected NMI blocks further ones until the guest's
/// IRET (APM §15.20, as on hardware); SVM keeps that blocking out of sight, so the VMM
/// intercepts IRET while an NMI is in service and unblocks once the IRET has run — at the
/// first exit with RIP away from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NmiMask {
    /// No NMI in service.
    Open,
    /// An NMI was injected; IRET is intercepted.
    InService,
    /// The guest reached the IRET at this RIP; NMIs open once RIP has moved on.
    Returning(u64),
}

impl SvmVcpu {
    /// Creates a vCPU for `memory`, starting as `start` says.
    pub fn new(
        host: &'static dyn HostMemory,
        caps: &SvmCapabilities,
        memory: &GuestMemory,
        start: StartMode,
        cpuid: CpuidPolicy,
    ) -> Result<SvmVcpu, BackendError> {
        let (_, host_save_pa) = ensure_enabled(host)?;
        let npt =
            NestedPageTables::build(memory, NestedFormat::Npt).map_err(BackendError::Memory)?;
        let asid = alloc_asid(caps.asid_count).ok_or(BackendError::NoFreeAsid)?;
        let mut frames: [(u64, u64); 4] = [(1, 0), (3, 0), (2, 0), (1, 0)];
        for i in 0..frames.len() {
            match host.alloc_frames(frames[i].0, 1) {
                Some(pa) => frames[i].1 = pa,
                None => {
                    for &(count, pa) in &frames[..i] {
                        host.free_frames(pa, count);
                    }
                    free_asid(asid);
                    return Err(BackendError::OutOfHostMemory);
                }
            }
        }
        let [(_, vmcb_pa), (_, iopm_pa), (_, msrpm_pa), (_, fpu_pa)] = frames;
        let mut vcpu = SvmVcpu {
            host,
            vmcb_pa,
            iopm_pa,
            msrpm_pa,
            fpu_pa,
            host_save_pa,
            asid,
            _npt: npt,
            gprs: GuestGprs::default(),
            nrip_save: caps.nrip_save,
            cpuid,
            msrs: MsrState::new(),
            pending: None,
            internal: InternalExits::default(),
            flush_tlb: true,
            stopped: false,
            nmi: NmiMask::Open,
        };
        vcpu.bytes(iopm_pa, vmcb::IOPM_BYTES).fill(0xff);
        vmcb::fill_msrpm(
            vcpu.bytes(msrpm_pa, vmcb::MSRPM_BYTES),
            msr::hardware_passthrough,
        );
        fpu::init_area(vcpu.page(fpu_pa));
        let regs = match start {
            StartMode::RealMode { entry } => vmcb::real_mode_registers(entry),
            StartMode::StartupIpi { vector } => vmcb::startup_ipi_registers(vector),
            StartMode::LongMode {
                entry,
                cr3,
                gdt,
                stack,
                rsi,
            } => vmcb::long_mode_registers(entry, cr3, gdt, stack, rsi),
            StartMode::Protected32 { entry, ebx } => vmcb::protected_mode_registers(entry, ebx),
        };
        let ncr3 = vcpu._npt.root();
        let mut v = vcpu.vmcb();
        v.set_controls(iopm_pa, msrpm_pa, asid, ncr3);
        v.set_registers(&regs);
        vcpu.gprs.0 = regs.gpr;
        Ok(vcpu)
    }

    fn bytes(&self, pa: u64, len: usize) -> &'static mut [u8] {
        // SAFETY: `pa` is one of this vCPU's own frame runs of at least `len` bytes, allocated
        // from the host and identity-accessible through `ptr`; nothing else aliases them.
        unsafe { core::slice::from_raw_parts_mut(self.host.ptr(pa), len) }
    }

    fn page(&self, pa: u64) -> &'static mut [u8; 4096] {
        // SAFETY: as in `bytes`, for a single frame.
        unsafe { &mut *(self.host.ptr(pa) as *mut [u8; 4096]) }
    }

    fn vmcb(&self) -> Vmcb<'static> {
        Vmcb::new(self.page(self.vmcb_pa))
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.vmcb()
            .set(offset::EVENT_INJ, vmcb::event_exception(vector, error_code));
        self.internal.injected += 1;
    }

    /// Moves RIP past an instruction Keel completed for the guest; an STI/MOV SS interrupt
    /// shadow ends with that instruction.
    fn set_rip(&mut self, rip: u64) {
        let mut v = self.vmcb();
        v.set(offset::RIP, rip);
        let shadow = v.get(offset::INTERRUPT_SHADOW);
        v.set(
            offset::INTERRUPT_SHADOW,
            shadow & !vmcb::INTERRUPT_SHADOW_ACTIVE,
        );
    }

    /// RDMSR/WRMSR of a platform-owned MSR: the VMM answers.
    fn platform_msr(&mut self, memory: &GuestMemory, write: bool, index: u32) -> VmExit {
        self.internal.msr += 1;
        let next_rip = match self.next_rip(memory) {
            Ok(rip) => rip,
            Err(reason) => {
                let rip = self.vmcb().get(offset::RIP);
                self.stopped = true;
                return VmExit::UnhandledMemoryAccess {
                    gpa: 0,
                    rip,
                    reason,
                };
            }
        };
        self.pending = Some(Pending::Msr { next_rip, write });
        if write {
            let rax = self.vmcb().get(offset::RAX);
            let value = (self.gprs.0[Gpr::Rdx as usize] << 32) | (rax & 0xffff_ffff);
            VmExit::MsrWrite { msr: index, value }
        } else {
            VmExit::MsrRead { msr: index }
        }
    }

    /// The address of the instruction after the one that exited.
    fn next_rip(&self, memory: &GuestMemory) -> Result<u64, &'static str> {
        let v = self.vmcb();
        if self.nrip_save {
            let next = v.get(offset::NEXT_RIP);
            if next != 0 {
                return Ok(next);
            }
        }
        let regs = self.registers();
        let (bytes, n) = guest_paging::fetch_instruction(memory, &regs)
            .map_err(|_| "cannot read the instruction at RIP")?;
        let len = decode::instruction_length(&bytes[..n], regs.code_bitness())
            .map_err(|_| "cannot decode the instruction at RIP")?;
        Ok(regs.rip.wrapping_add(len as u64))
    }

    /// Sets or clears intercept `bit` of `INTERCEPT_MISC1`.
    fn set_intercept(&mut self, bit: u32, on: bool) {
        let mut v = self.vmcb();
        let misc1 = v.get32(offset::INTERCEPT_MISC1) & !bit;
        v.set32(
            offset::INTERCEPT_MISC1,
            if on { misc1 | bit } else { misc1 },
        );
    }

    fn skip_instruction(&mut self, memory: &GuestMemory) -> Option<VmExit> {
        match self.next_rip(memory) {
            Ok(rip) => {
                self.set_rip(rip);
                None
            }
            Err(reason) => {
                let rip = self.vmcb().get(offset::RIP);
                self.stopped = true;
                Some(VmExit::UnhandledMemoryAccess {
                    gpa: 0,
                    rip,
                    reason,
                })
            }
        }
    }

    fn handle_cpuid(&mut self) {
        let mut v = self.vmcb();
        let leaf = v.get(offset::RAX) as u32;
        let subleaf = self.gprs.0[Gpr::Rcx as usize] as u32;
        let r = self.cpuid.query(leaf, subleaf, self.cpuid.vcpu_id());
        v.set(offset::RAX, u64::from(r.eax));
        self.gprs.0[Gpr::Rbx as usize] = u64::from(r.ebx);
        self.gprs.0[Gpr::Rcx as usize] = u64::from(r.ecx);
        self.gprs.0[Gpr::Rdx as usize] = u64::from(r.edx);
        self.internal.cpuid += 1;
    }

    /// RDMSR/WRMSR; returns false when #GP was injected (RIP must not move).
    fn handle_msr(&mut self, write: bool) -> bool {
        self.internal.msr += 1;
        let index = self.gprs.0[Gpr::Rcx as usize] as u32;
        let rax = self.vmcb().get(offset::RAX);
        let ok = if !write {
            let value = if index == MSR_EFER {
                Ok(self.vmcb().get(offset::EFER) & !vmcb::EFER_SVME)
            } else {
                self.msrs.read(index, instr::rdtsc())
            };
            value.map(|value| {
                self.vmcb().set(offset::RAX, value & 0xffff_ffff);
                self.gprs.0[Gpr::Rdx as usize] = value >> 32;
            })
        } else {
            let value = (self.gprs.0[Gpr::Rdx as usize] << 32) | (rax & 0xffff_ffff);
            self.msrs
                .write(index, value, instr::rdtsc())
                .map(|effect| match effect {
                    MsrEffect::Efer(efer) => {
                        // LMA is the CPU's to set (on CR0.PG with LME); keep its current value.
                        let mut v = self.vmcb();
                        let lma = v.get(offset::EFER) & vmcb::EFER_LMA;
                        v.set(
                            offset::EFER,
                            (efer & !vmcb::EFER_LMA) | lma | vmcb::EFER_SVME,
                        );
                    }
                    MsrEffect::Pat(pat) => self.vmcb().set(offset::G_PAT, pat),
                    MsrEffect::TscOffset(off) => self.vmcb().set(offset::TSC_OFFSET, off),
                    _ => {}
                })
        };
        if ok.is_err() {
            self.inject_exception(VECTOR_GP, Some(0));
        }
        ok.is_ok()
    }

    fn handle_ioio(&mut self, info1: u64, info2: u64) -> VmExit {
        const TYPE_IN: u64 = 1 << 0;
        const STRING: u64 = 1 << 2;
        let port = (info1 >> 16) as u16;
        let size = if info1 & (1 << 4) != 0 {
            1
        } else if info1 & (1 << 5) != 0 {
            2
        } else {
            4
        };
        if info1 & STRING != 0 {
            // INS/OUTS are not emulated yet: stop the VM with a precise reason.
            self.stopped = true;
            return VmExit::Unhandled {
                code: exit::IOIO,
                info1,
                info2,
            };
        }
        if info1 & TYPE_IN != 0 {
            self.pending = Some(Pending::Io {
                size,
                next_rip: info2,
            });
            VmExit::IoIn { port, size }
        } else {
            let mask = if size == 4 {
                u32::MAX
            } else {
                (1u32 << (size * 8)) - 1
            };
            let data = self.vmcb().get(offset::RAX) as u32 & mask;
            self.set_rip(info2);
            VmExit::IoOut { port, size, data }
        }
    }

    fn handle_npf(&mut self, memory: &GuestMemory, info1: u64, gpa: u64) -> VmExit {
        const FETCH: u64 = 1 << 4;
        let rip = self.vmcb().get(offset::RIP);
        let stop = |s: &mut Self, reason| {
            s.stopped = true;
            VmExit::UnhandledMemoryAccess { gpa, rip, reason }
        };
        if info1 & FETCH != 0 {
            return stop(
                self,
                "instruction fetch from guest-physical memory that is not RAM",
            );
        }
        let access = match super::mmio::emulate(memory, &self.registers(), gpa) {
            Ok(access) => access,
            Err(reason) => return stop(self, reason),
        };
        if let Some(op) = access.pending {
            self.pending = Some(Pending::Mmio(op));
        }
        if let Some(rip) = access.next_rip {
            self.set_rip(rip);
        }
        access.exit
    }

    /// Maps one #VMEXIT; `None` means handled here, re-enter the guest.
    fn handle_exit(&mut self, memory: &GuestMemory) -> Option<VmExit> {
        let v = self.vmcb();
        let code = v.get(offset::EXIT_CODE);
        let info1 = v.get(offset::EXIT_INFO1);
        let info2 = v.get(offset::EXIT_INFO2);
        match code {
            exit::INTR | exit::NMI => Some(VmExit::Interrupted),
            exit::VINTR => {
                self.request_interrupt_window(false);
                Some(VmExit::InterruptWindow)
            }
            exit::MSR if msr::platform_owned(self.gprs.0[Gpr::Rcx as usize] as u32) => {
                let index = self.gprs.0[Gpr::Rcx as usize] as u32;
                Some(self.platform_msr(memory, info1 == 1, index))
            }
            exit::CPUID => {
                self.handle_cpuid();
                self.skip_instruction(memory)
            }
            exit::MSR => {
                if self.handle_msr(info1 == 1) {
                    self.skip_instruction(memory)
                } else {
                    None
                }
            }
            exit::HLT => {
                let interrupts_enabled = v.get(offset::RFLAGS) & RFLAGS_IF != 0;
                self.skip_instruction(memory)
                    .or(Some(VmExit::Hlt { interrupts_enabled }))
            }
            exit::PAUSE => self.skip_instruction(memory).or(Some(VmExit::Pause)),
            exit::IRET => {
                // The guest leaves its NMI handler: stop intercepting, and open NMIs once
                // the IRET has run (it runs at the next entry).
                let rip = v.get(offset::RIP);
                self.nmi = NmiMask::Returning(rip);
                self.set_intercept(vmcb::misc1::IRET, false);
                self.internal.other += 1;
                None
            }
            exit::IOIO => Some(self.handle_ioio(info1, info2)),
            exit::NPF => Some(self.handle_npf(memory, info1, info2)),
            exit::SHUTDOWN => {
                self.stopped = true;
                Some(VmExit::Shutdown)
            }
            exit::INVD => {
                // INVD would drop dirty cache lines the host may own: treat it as WBINVD,
                // which needs nothing from a guest's point of view.
                self.internal.other += 1;
                self.skip_instruction(memory)
            }
            exit::VMRUN
            | exit::VMMCALL
            | exit::VMLOAD
            | exit::VMSAVE
            | exit::STGI
            | exit::CLGI
            | exit::SKINIT
            | exit::INVLPGA
            | exit::MONITOR
            | exit::MWAIT
            | exit::MWAIT_CONDITIONAL
            | exit::XSETBV => {
                // The guest sees a CPU without SVM, MONITOR or XSAVE: these raise #UD there.
                self.inject_exception(VECTOR_UD, None);
                None
            }
            c if c & 0xffff_ffff == exit::INVALID_LOW32 => {
                self.stopped = true;
                Some(VmExit::FailEntry {
                    reason: EntryFailure::SvmInvalidState,
                })
            }
            _ => {
                self.stopped = true;
                Some(VmExit::Unhandled { code, info1, info2 })
            }
        }
    }

    fn write_registers(&mut self, regs: &Registers) {
        self.gprs.0 = regs.gpr;
        let mut v = self.vmcb();
        v.set(offset::RAX, regs.gpr[Gpr::Rax as usize]);
        v.set(offset::RSP, regs.gpr[Gpr::Rsp as usize]);
        v.set(offset::RIP, regs.rip);
    }
}

impl Vcpu for SvmVcpu {
    fn run(&mut self, memory: &GuestMemory) -> Result<VmExit, VcpuError> {
        if self.stopped {
            return Err(VcpuError::Stopped);
        }
        if self.pending.is_some() {
            return Err(VcpuError::ReadNotCompleted);
        }
        loop {
            let fpu_ptr = self.host.ptr(self.fpu_pa);
            let host = self.host;
            // SAFETY: the area is this vCPU's initialised page; a previous owner's area is
            // still allocated (vCPUs release ownership before freeing theirs).
            unsafe { fpu::switch_to(self.fpu_pa, fpu_ptr, |pa| host.ptr(pa)) };
            self.vmcb()
                .set8(offset::TLB_CONTROL, u8::from(self.flush_tlb));
            self.flush_tlb = false;
            // SAFETY: SVM is enabled on this CPU (ensure_enabled ran at creation); the VMCB,
            // permission maps and nested page tables are this vCPU's own and map only this
            // guest's memory; the host save page belongs to this CPU.
            unsafe { instr::run(self.vmcb_pa, &mut self.gprs, self.host_save_pa) };
            // An event whose delivery the exit interrupted must be delivered again
            // (EXITINTINFO, APM §15.7.2); otherwise nothing is left to inject.
            let mut v = self.vmcb();
            let interrupted = v.get(offset::EXIT_INT_INFO);
            v.set(
                offset::EVENT_INJ,
                if interrupted & (1 << 31) != 0 {
                    interrupted
                } else {
                    0
                },
            );
            if let NmiMask::Returning(iret_rip) = self.nmi
                && self.vmcb().get(offset::RIP) != iret_rip
            {
                self.nmi = NmiMask::Open;
            }
            if let Some(exit) = self.handle_exit(memory) {
                return Ok(exit);
            }
            if crate::preempt::take() {
                return Ok(VmExit::Interrupted);
            }
        }
    }

    fn complete_read(&mut self, value: u64) -> Result<(), VcpuError> {
        match self.pending.take() {
            None => Err(VcpuError::NoPendingRead),
            Some(Pending::Io { size, next_rip }) => {
                let mut v = self.vmcb();
                let rax = v.get(offset::RAX);
                let merged = match size {
                    1 => (rax & !0xff) | (value & 0xff),
                    2 => (rax & !0xffff) | (value & 0xffff),
                    // A 32-bit destination zero-extends, in 64-bit mode as elsewhere.
                    _ => value & 0xffff_ffff,
                };
                v.set(offset::RAX, merged);
                self.set_rip(next_rip);
                Ok(())
            }
            Some(Pending::Mmio(op)) => {
                let mut regs = self.registers();
                decode::apply_load(&mut regs, &op, value);
                let next_rip = regs.rip.wrapping_add(op.len as u64);
                self.write_registers(&regs);
                self.set_rip(next_rip);
                Ok(())
            }
            Some(Pending::Msr { next_rip, write }) => {
                if !write {
                    self.vmcb().set(offset::RAX, value & 0xffff_ffff);
                    self.gprs.0[Gpr::Rdx as usize] = value >> 32;
                }
                self.set_rip(next_rip);
                Ok(())
            }
        }
    }

    fn fault_msr(&mut self) -> Result<(), VcpuError> {
        match self.pending {
            Some(Pending::Msr { .. }) => {
                self.pending = None;
                self.inject_exception(VECTOR_GP, Some(0));
                Ok(())
            }
            _ => Err(VcpuError::NoPendingRead),
        }
    }

    fn registers(&self) -> Registers {
        let mut regs = Registers {
            gpr: self.gprs.0,
            ..Registers::default()
        };
        self.vmcb().registers_into(&mut regs);
        regs
    }

    fn internal_exits(&self) -> InternalExits {
        self.internal
    }

    fn backend(&self) -> &'static str {
        "svm"
    }

    fn interruptible(&self) -> bool {
        let v = self.vmcb();
        v.get(offset::RFLAGS) & RFLAGS_IF != 0
            && v.get(offset::INTERRUPT_SHADOW) & vmcb::INTERRUPT_SHADOW_ACTIVE == 0
            && v.get(offset::EVENT_INJ) & vmcb::EVENT_VALID == 0
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError> {
        if !self.interruptible() {
            return Err(VcpuError::NotInterruptible);
        }
        self.vmcb()
            .set(offset::EVENT_INJ, vmcb::event_interrupt(vector));
        Ok(())
    }

    /// A virtual interrupt (V_IRQ, highest priority, ignoring V_TPR) with the VINTR intercept:
    /// the CPU exits as soon as the guest could take it (RFLAGS.IF, no shadow), before it is
    /// taken (APM §15.21.4).
    fn request_interrupt_window(&mut self, wanted: bool) {
        let mut v = self.vmcb();
        let vintr = v.get(offset::VINTR) & !(vmcb::V_IRQ | vmcb::V_INTR_PRIO_MAX | vmcb::V_IGN_TPR);
        let misc1 = v.get32(offset::INTERCEPT_MISC1) & !vmcb::misc1::VINTR;
        if wanted {
            v.set(
                offset::VINTR,
                vintr | vmcb::V_IRQ | vmcb::V_INTR_PRIO_MAX | vmcb::V_IGN_TPR,
            );
            v.set32(offset::INTERCEPT_MISC1, misc1 | vmcb::misc1::VINTR);
        } else {
            v.set(offset::VINTR, vintr);
            v.set32(offset::INTERCEPT_MISC1, misc1);
        }
    }

    /// The PAUSE intercept (APM §15.14.4). The pause filter count stays 0, so where the CPU
    /// has the filter every PAUSE still exits.
    fn set_pause_exiting(&mut self, on: bool) -> bool {
        self.set_intercept(vmcb::misc1::PAUSE, on);
        true
    }

    fn inject_nmi(&mut self) -> Result<bool, VcpuError> {
        let v = self.vmcb();
        if self.nmi != NmiMask::Open
            || v.get(offset::INTERRUPT_SHADOW) & vmcb::INTERRUPT_SHADOW_ACTIVE != 0
            || v.get(offset::EVENT_INJ) & vmcb::EVENT_VALID != 0
        {
            return Ok(false);
        }
        self.vmcb().set(offset::EVENT_INJ, vmcb::EVENT_NMI);
        self.nmi = NmiMask::InService;
        self.set_intercept(vmcb::misc1::IRET, true);
        Ok(true)
    }

    fn guest_tsc(&self, host_tsc: u64) -> u64 {
        host_tsc.wrapping_add(self.vmcb().get(offset::TSC_OFFSET))
    }
}

impl Drop for SvmVcpu {
    fn drop(&mut self) {
        fpu::release(self.fpu_pa);
        free_asid(self.asid);
        for (pa, count) in [
            (self.vmcb_pa, 1),
            (self.iopm_pa, 3),
            (self.msrpm_pa, 2),
            (self.fpu_pa, 1),
        ] {
            self.host.free_frames(pa, count);
        }
    }
}
