//! The AMD-V (SVM) backend: one nested page table per VM ([`SvmVm`], in its [`MemoryMap`]),
//! one VMCB and ASID per vCPU, exits mapped to [`VmExit`].
//!
//! CPU-level exits are handled here and never reach the VMM: CPUID (through the
//! [`CpuidPolicy`]), RDMSR/WRMSR (through [`MsrState`]; unknown MSRs get #GP), INVD, and the
//! SVM instructions and XSETBV, which get #UD as on a CPU without SVM/XSAVE. Instruction
//! lengths come from the VMCB next-RIP field when the CPU has NRIP save, and otherwise from
//! decoding the instruction at RIP (QEMU TCG has no NRIP save; IOIO exits carry the next RIP
//! in EXITINFO2 anyway).

pub mod instr;
mod state;
pub mod vmcb;

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use self::instr::GuestGprs;
use self::vmcb::{Vmcb, exit, offset};
use super::bare::{BareError, BareExit, BareRun, Counter, Step};
use super::debug::GuestDebug;
use super::fpu::{self, GuestFpu};
use super::ids::{IdSpace, VcpuId};
use super::memory_map::{MemoryMap, TlbEpoch};
use super::pending::{self, GuestAccess, Pending};
use super::{BackendError, VmBackend};
use crate::cpuid::CpuidPolicy;
use crate::decode;
use crate::detect::SvmCapabilities;
use crate::guest_paging;
use crate::host::{FrameUse, HostMemory, MAX_HOST_CPUS, current_cpu};
use crate::memory::{ControlFrames, GuestMemory};
use crate::msr::{self, MsrEffect, MsrState};
use crate::nested_paging::NestedFormat;
use crate::vcpu::{
    EntryFailure, Gpr, InternalExits, Registers, StartMode, Vcpu, VcpuError, VcpuState,
    VcpuStateError, VmExit,
};

const RFLAGS_IF: u64 = 1 << 9;
const MSR_EFER: u32 = 0xc000_0080;
const VECTOR_DB: u8 = 1;
const VECTOR_UD: u8 = 6;
const VECTOR_GP: u8 = 13;
/// `TLB_CONTROL`: flush the whole TLB (every ASID).
const TLB_FLUSH_ALL: u8 = 1;
/// `TLB_CONTROL`: flush this guest's (ASID's) entries; needs FlushByAsid.
const TLB_FLUSH_ASID: u8 = 3;

/// Each CPU's SVM host areas (VM_HSAVE_PA and the VMSAVE area for host state), indexed by
/// [`crate::host::current_cpu`].
static HSAVE_PA: [AtomicU64; MAX_HOST_CPUS] = [const { AtomicU64::new(0) }; MAX_HOST_CPUS];
static HOST_SAVE_PA: [AtomicU64; MAX_HOST_CPUS] = [const { AtomicU64::new(0) }; MAX_HOST_CPUS];
static ENABLED: [AtomicBool; MAX_HOST_CPUS] = [const { AtomicBool::new(false) }; MAX_HOST_CPUS];

/// ASIDs per host CPU, by generation (see `ids`); ASID 0 is the host's.
static ASIDS: IdSpace = IdSpace::new();

/// Turns SVM on for the calling CPU once (`EFER.SVME`, its own `VM_HSAVE_PA` page); returns
/// its host save area for VMSAVE/VMLOAD.
fn ensure_enabled(host: &'static dyn HostMemory) -> Result<u64, BackendError> {
    let cpu = current_cpu();
    if !ENABLED[cpu].load(Ordering::Acquire) {
        // Both pages belong to this CPU for as long as SVM is on (forever).
        let hsave = host
            .alloc_frames_for(FrameUse::CpuVirtualization, 1, 1)
            .ok_or(BackendError::OutOfHostMemory)?;
        let Some(host_save) = host.alloc_frames_for(FrameUse::CpuVirtualization, 1, 1) else {
            host.free_frames_for(FrameUse::CpuVirtualization, hsave, 1);
            return Err(BackendError::OutOfHostMemory);
        };
        fpu::enable_on_this_cpu();
        // SAFETY: detection found SVM usable on this CPU; the page is ours forever.
        unsafe { instr::enable(hsave) };
        HSAVE_PA[cpu].store(hsave, Ordering::Relaxed);
        HOST_SAVE_PA[cpu].store(host_save, Ordering::Relaxed);
        ENABLED[cpu].store(true, Ordering::Release);
    }
    Ok(HOST_SAVE_PA[cpu].load(Ordering::Relaxed))
}

/// Turns SVM on for the calling CPU (a host CPU started at boot runs this once).
pub fn enable_on_this_cpu(host: &'static dyn HostMemory) -> Result<(), BackendError> {
    ensure_enabled(host).map(|_| ())
}

/// A VM on AMD-V: its memory map (nested page tables) and what its vCPUs are made from.
pub struct SvmVm {
    host: &'static dyn HostMemory,
    caps: SvmCapabilities,
    cpuid: CpuidPolicy,
    map: MemoryMap,
}

impl SvmVm {
    /// Turns SVM on (once per CPU) and maps `memory` in nested page tables.
    pub fn new(
        host: &'static dyn HostMemory,
        caps: &SvmCapabilities,
        memory: GuestMemory,
        cpuid: CpuidPolicy,
    ) -> Result<SvmVm, BackendError> {
        ensure_enabled(host)?;
        let map = MemoryMap::new(memory, NestedFormat::Npt).map_err(BackendError::Memory)?;
        Ok(SvmVm {
            host,
            caps: caps.clone(),
            cpuid,
            map,
        })
    }
}

impl SvmVm {
    /// The floor loop for `exit` on a fresh vCPU (see [`bare`](super::bare)).
    pub(super) fn bare_round_trips(
        &mut self,
        exit: BareExit,
        rounds: u64,
    ) -> Result<BareRun, BareError> {
        let cpuid = self.cpuid.clone().with_vcpu_id(0);
        let start = StartMode::RealMode {
            entry: exit.entry(),
        };
        let mut vcpu = SvmVcpu::new(self.host, &self.caps, &self.map, start, cpuid)?;
        vcpu.bare_loop(exit, rounds)
    }
}

impl VmBackend for SvmVm {
    fn name(&self) -> &'static str {
        "svm"
    }

    fn memory_map(&self) -> &MemoryMap {
        &self.map
    }

    fn memory_map_mut(&mut self) -> &mut MemoryMap {
        &mut self.map
    }

    fn kvm_features(&self) -> u32 {
        self.cpuid.kvm_features()
    }

    fn create_vcpu(
        &mut self,
        apic_id: u32,
        start: StartMode,
    ) -> Result<Box<dyn Vcpu>, BackendError> {
        let cpuid = self.cpuid.clone().with_vcpu_id(apic_id);
        let vcpu = SvmVcpu::new(self.host, &self.caps, &self.map, start, cpuid)?;
        Ok(Box::new(vcpu))
    }
}

/// One vCPU on AMD-V.
pub struct SvmVcpu {
    vmcb: ControlFrames,
    iopm: ControlFrames,
    msrpm: ControlFrames,
    fpu: GuestFpu,
    debug: GuestDebug,
    /// The ASID and the host CPU and generation it is valid in; checked before each VMRUN.
    asid: VcpuId,
    /// Guest ASIDs are `1..asid_limit` (the CPU's ASID count).
    asid_limit: u32,
    tlb: TlbEpoch,
    /// Flush this vCPU's guest-linear translations at the next entry (a restored state).
    flush_guest: bool,
    host_save_pa: u64,
    gprs: GuestGprs,
    nrip_save: bool,
    flush_by_asid: bool,
    cpuid: CpuidPolicy,
    msrs: MsrState,
    pending: Option<Pending>,
    internal: InternalExits,
    stopped: bool,
    /// NMI state, which the VMCB does not show: see [`NmiMask`].
    nmi: NmiMask,
    /// The IRET ending an NMI handler is being single-stepped ([`arm_iret_step`]): the
    /// guest's DR6 to put back when the trap arrives.
    iret_step_dr6: Option<u64>,
}

/// Whether the guest may take an NMI. An injected NMI blocks further ones until the guest's
/// IRET (APM §15.20, as on hardware); SVM keeps that blocking out of sight, so the VMM
/// intercepts IRET while an NMI is in service and unblocks once the IRET has run — at the
/// first exit with RIP away from it.
///
/// The IRET itself is single-stepped ([`arm_iret_step`]) so that the exit comes right after it
/// and a waiting NMI is delivered at that instruction boundary, as on hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NmiMask {
    /// No NMI in service.
    Open,
    /// An NMI was injected; IRET is intercepted.
    InService,
    /// The guest reached the IRET at this RIP; NMIs open once RIP has moved on.
    Returning(u64),
}

/// Intercept bit of #DB in `INTERCEPT_EXCEPTIONS`.
const DB_INTERCEPT: u32 = 1 << VECTOR_DB;
const RFLAGS_TF: u64 = 1 << 8;
/// DR6.BS: the #DB is a single-step trap.
const DR6_BS: u64 = 1 << 14;

/// Single-steps the intercepted IRET that ends the guest's NMI handler, so that an exit
/// follows it at once and a waiting NMI is delivered at the next instruction boundary, not at
/// whatever exit comes later (kvm-unit-tests' `eventinj`: a nested NMI delivered in the
/// middle of the interrupted code's `printf` spun on its lock forever). RFLAGS.TF before an
/// instruction raises the trap after it whatever flags the IRET pops (SDM Vol. 3 §18.3.1.4);
/// the trap's #DB is intercepted. Returns the guest's DR6, which the trap changes.
fn arm_iret_step<B: core::borrow::BorrowMut<[u8; 4096]>>(v: &mut Vmcb<B>) -> u64 {
    let rflags = v.get(offset::RFLAGS);
    v.set(offset::RFLAGS, rflags | RFLAGS_TF);
    let intercepts = v.get32(offset::INTERCEPT_EXCEPTIONS);
    v.set32(offset::INTERCEPT_EXCEPTIONS, intercepts | DB_INTERCEPT);
    v.get(offset::DR6)
}

/// Undoes [`arm_iret_step`] once its trap arrived: #DB is no longer intercepted and DR6 is
/// the guest's again. RFLAGS is the one the IRET popped and stays as it is.
fn disarm_iret_step<B: core::borrow::BorrowMut<[u8; 4096]>>(v: &mut Vmcb<B>, guest_dr6: u64) {
    let intercepts = v.get32(offset::INTERCEPT_EXCEPTIONS);
    v.set32(offset::INTERCEPT_EXCEPTIONS, intercepts & !DB_INTERCEPT);
    v.set(offset::DR6, guest_dr6);
}

impl SvmVcpu {
    /// Creates a vCPU over `map` (the VM's nested page tables), starting as `start` says.
    fn new(
        host: &'static dyn HostMemory,
        caps: &SvmCapabilities,
        map: &MemoryMap,
        start: StartMode,
        cpuid: CpuidPolicy,
    ) -> Result<SvmVcpu, BackendError> {
        let host_save_pa = ensure_enabled(host)?;
        if caps.asid_count < 2 {
            return Err(BackendError::NoGuestAsid);
        }
        // Each resource is an owned value: an early return frees what was taken.
        let vmcb = ControlFrames::alloc(host, 1, 1)?;
        let mut iopm = ControlFrames::alloc(host, 3, 1)?;
        let mut msrpm = ControlFrames::alloc(host, 2, 1)?;
        let fpu = GuestFpu::new(host)?;
        iopm.fill(0xff)?;
        let mut map_bytes = alloc::vec![0u8; vmcb::MSRPM_BYTES];
        vmcb::fill_msrpm(&mut map_bytes, msr::hardware_passthrough);
        msrpm.write(0, &map_bytes)?;
        let mut vcpu = SvmVcpu {
            vmcb,
            iopm,
            msrpm,
            fpu,
            debug: GuestDebug::new(false),
            asid: VcpuId::unassigned(),
            asid_limit: caps.asid_count,
            tlb: map.tlb_epoch(),
            flush_guest: false,
            host_save_pa,
            gprs: GuestGprs::default(),
            nrip_save: caps.nrip_save,
            flush_by_asid: caps.flush_by_asid,
            cpuid,
            msrs: MsrState::new(),
            pending: None,
            internal: InternalExits::default(),
            stopped: false,
            nmi: NmiMask::Open,
            iret_step_dr6: None,
        };
        let regs = super::start_registers(start);
        // The ASID field is written at the first VMRUN, when this CPU assigns one.
        let (iopm_pa, msrpm_pa) = (vcpu.iopm.phys(), vcpu.msrpm.phys());
        let mut v = vcpu.vmcb();
        v.set_controls(iopm_pa, msrpm_pa, 0, map.tables().root());
        v.set_registers(&regs);
        vcpu.gprs.0 = regs.gpr;
        Ok(vcpu)
    }

    /// Makes the VMCB ready for a VMRUN on this CPU as far as the TLB goes: the ASID valid
    /// here (a new one when the vCPU moved or this CPU's generation changed, see `ids`) and
    /// `TLB_CONTROL`: every ASID flushed when a generation began on this CPU and no entry has
    /// flushed since, else this ASID's entries when `flush_own` (the nested tables or the
    /// guest state changed). Returns the CPU whose full flush this VMRUN performs, to report
    /// once it ran.
    fn prepare_tlb(&mut self, flush_own: bool) -> Result<Option<usize>, EntryFailure> {
        let cpu = current_cpu();
        let entry = ASIDS
            .assign(&mut self.asid, cpu, self.asid_limit)
            .map_err(|_| EntryFailure::NoAddressSpaceId { cpu })?;
        let tlb_control = if entry.flush_all {
            TLB_FLUSH_ALL
        } else if !flush_own || entry.fresh {
            // A fresh ASID of this generation holds no translations on this CPU.
            0
        } else if self.flush_by_asid {
            TLB_FLUSH_ASID
        } else {
            TLB_FLUSH_ALL
        };
        let mut v = self.vmcb();
        if entry.fresh {
            v.set32(offset::GUEST_ASID, entry.id);
        }
        v.set8(offset::TLB_CONTROL, tlb_control);
        Ok(entry.flush_all.then_some(cpu))
    }

    /// The VMCB, for reading and writing; the borrow ends with the caller's statement.
    fn vmcb(&mut self) -> Vmcb<&mut [u8; 4096]> {
        Vmcb::new(self.vmcb.page_mut())
    }

    /// The VMCB, for reading.
    fn vmcb_ref(&self) -> Vmcb<&[u8; 4096]> {
        Vmcb::view(self.vmcb.page())
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
                let rip = self.vmcb_ref().get(offset::RIP);
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
            let rax = self.vmcb_ref().get(offset::RAX);
            let value = (self.gprs.0[Gpr::Rdx as usize] << 32) | (rax & 0xffff_ffff);
            VmExit::MsrWrite { msr: index, value }
        } else {
            VmExit::MsrRead { msr: index }
        }
    }

    /// The address of the instruction after the one that exited.
    fn next_rip(&self, memory: &GuestMemory) -> Result<u64, &'static str> {
        let v = self.vmcb_ref();
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
                let rip = self.vmcb_ref().get(offset::RIP);
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
        let leaf = self.vmcb_ref().get(offset::RAX) as u32;
        let subleaf = self.gprs.0[Gpr::Rcx as usize] as u32;
        let r = self.cpuid.query(leaf, subleaf, self.cpuid.vcpu_id());
        self.vmcb().set(offset::RAX, u64::from(r.eax));
        self.gprs.0[Gpr::Rbx as usize] = u64::from(r.ebx);
        self.gprs.0[Gpr::Rcx as usize] = u64::from(r.ecx);
        self.gprs.0[Gpr::Rdx as usize] = u64::from(r.edx);
        self.internal.cpuid += 1;
    }

    /// RDMSR/WRMSR; returns false when #GP was injected (RIP must not move).
    fn handle_msr(&mut self, write: bool) -> bool {
        self.internal.msr += 1;
        let index = self.gprs.0[Gpr::Rcx as usize] as u32;
        let rax = self.vmcb_ref().get(offset::RAX);
        let ok = if !write {
            let value = if index == MSR_EFER {
                Ok(self.vmcb_ref().get(offset::EFER) & !vmcb::EFER_SVME)
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
            let data = self.vmcb_ref().get(offset::RAX) as u32 & mask;
            self.set_rip(info2);
            VmExit::IoOut { port, size, data }
        }
    }

    fn handle_npf(&mut self, memory: &GuestMemory, info1: u64, gpa: u64) -> VmExit {
        const PRESENT: u64 = 1 << 0;
        const WRITE: u64 = 1 << 1;
        const FETCH: u64 = 1 << 4;
        // EXITINFO1 is a #PF-style error code (APM §15.25.6): a write to a present RAM
        // page can only be write protection (dirty tracking); RIP stays at the write.
        if info1 & (PRESENT | WRITE | FETCH) == PRESENT | WRITE && memory.contains(gpa, 1) {
            return VmExit::DirtyPageWrite { gpa };
        }
        let rip = self.vmcb_ref().get(offset::RIP);
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
        let v = self.vmcb_ref();
        let code = v.get(offset::EXIT_CODE);
        let info1 = v.get(offset::EXIT_INFO1);
        let info2 = v.get(offset::EXIT_INFO2);
        let rflags = v.get(offset::RFLAGS);
        let rip = v.get(offset::RIP);
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
                let interrupts_enabled = rflags & RFLAGS_IF != 0;
                self.skip_instruction(memory)
                    .or(Some(VmExit::Hlt { interrupts_enabled }))
            }
            exit::PAUSE => self.skip_instruction(memory).or(Some(VmExit::Pause)),
            exit::IRET => {
                // The guest leaves its NMI handler: stop intercepting, and open NMIs once
                // the IRET has run (it runs at the next entry).
                self.nmi = NmiMask::Returning(rip);
                self.set_intercept(vmcb::misc1::IRET, false);
                if self.iret_step_dr6.is_none() {
                    self.iret_step_dr6 = Some(arm_iret_step(&mut self.vmcb()));
                }
                self.internal.other += 1;
                None
            }
            c if c == exit::EXCEPTION_BASE + u64::from(VECTOR_DB) => {
                self.internal.other += 1;
                let single_step = self.vmcb_ref().get(offset::DR6) & DR6_BS != 0;
                match self.iret_step_dr6.take() {
                    // The trap after the IRET: NMIs are open now (RIP has moved on, see
                    // `run`); hand back to the VM loop so a waiting NMI goes in at once.
                    Some(dr6) if single_step && self.nmi == NmiMask::Open => {
                        disarm_iret_step(&mut self.vmcb(), dr6);
                        Some(VmExit::Interrupted)
                    }
                    // A #DB of the guest's own while the step is armed: it is the guest's.
                    armed => {
                        self.iret_step_dr6 = armed;
                        self.inject_exception(VECTOR_DB, None);
                        None
                    }
                }
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
}

impl SvmVcpu {
    /// The floor for `exit`: one untimed round trip (its VMRUN flushes the new ASID's TLB),
    /// then `rounds` timed ones.
    fn bare_loop(&mut self, exit: BareExit, rounds: u64) -> Result<BareRun, BareError> {
        let full_flush_cpu = self.prepare_tlb(true).map_err(BareError::Entry)?;
        self.bare_rounds(exit, 1)?;
        if let Some(cpu) = full_flush_cpu {
            ASIDS.flushed(cpu);
        }
        self.vmcb().set8(offset::TLB_CONTROL, 0);
        self.bare_rounds(exit, rounds)
    }

    /// VMRUN, read EXITCODE, write the known next RIP, again, `rounds` times, with the TSC
    /// read around the loop. No FPU, debug-register or event-injection work: the floor guest
    /// touches none of it.
    fn bare_rounds(&mut self, exit: BareExit, rounds: u64) -> Result<BareRun, BareError> {
        let expected = match exit {
            BareExit::Cpuid => vmcb::exit::CPUID,
            BareExit::Out => vmcb::exit::IOIO,
        };
        let next_rip = exit.next_rip();
        let vmcb_pa = self.vmcb.phys();
        let mut counter = Counter::new(exit, rounds);
        let start = instr::rdtsc();
        loop {
            // SAFETY: as in `run`: SVM is on, the VMCB and permission maps are this vCPU's,
            // the nested page tables map only the floor guest's RAM, the host save page is
            // this CPU's.
            unsafe { instr::run(vmcb_pa, &mut self.gprs, self.host_save_pa) };
            let mut v = self.vmcb();
            let code = v.get(offset::EXIT_CODE);
            if code & 0xffff_ffff == exit::INVALID_LOW32 {
                return Err(BareError::Entry(EntryFailure::SvmInvalidState));
            }
            let interrupt = code == exit::INTR || code == exit::NMI;
            match counter.step(code, code == expected, interrupt)? {
                Step::Advance => v.set(offset::RIP, next_rip),
                Step::Reenter => {}
                Step::Finished => {
                    v.set(offset::RIP, next_rip);
                    return Ok(counter.result(instr::rdtsc() - start));
                }
            }
        }
    }
}

impl GuestAccess for SvmVcpu {
    fn register_file(&self) -> Registers {
        Vcpu::registers(self)
    }

    fn gpr(&self, reg: Gpr) -> u64 {
        match reg {
            Gpr::Rax => self.vmcb_ref().get(offset::RAX),
            Gpr::Rsp => self.vmcb_ref().get(offset::RSP),
            _ => self.gprs.0[reg as usize],
        }
    }

    fn set_gpr(&mut self, reg: Gpr, value: u64) {
        match reg {
            Gpr::Rax => self.vmcb().set(offset::RAX, value),
            Gpr::Rsp => self.vmcb().set(offset::RSP, value),
            _ => self.gprs.0[reg as usize] = value,
        }
    }

    fn set_rflags(&mut self, value: u64) {
        self.vmcb().set(offset::RFLAGS, value);
    }

    fn finish_instruction(&mut self, next_rip: u64) {
        self.set_rip(next_rip);
    }
}

impl Vcpu for SvmVcpu {
    fn run(&mut self, memory: &GuestMemory) -> Result<VmExit, VcpuError> {
        pending::check_runnable(self.stopped, &self.pending)?;
        if super::STATE_SELFTEST {
            super::state_selftest(self, instr::rdtsc())?;
        }
        loop {
            self.fpu.load();
            self.debug.load();
            let flush = self.tlb.take_flush() | core::mem::take(&mut self.flush_guest);
            let full_flush_cpu = match self.prepare_tlb(flush) {
                Ok(cpu) => cpu,
                Err(reason) => {
                    self.stopped = true;
                    return Ok(VmExit::FailEntry { reason });
                }
            };
            let vmcb_pa = self.vmcb.phys();
            // SAFETY: SVM is enabled on this CPU (ensure_enabled ran at creation); the VMCB
            // and permission maps are this vCPU's own, with no borrow alive across the call,
            // and the VM's nested page tables (which outlive its vCPUs) map only this guest's
            // memory; the host save page belongs to this CPU.
            unsafe { instr::run(vmcb_pa, &mut self.gprs, self.host_save_pa) };
            let mut v = self.vmcb();
            // A VMRUN that failed its consistency checks flushed nothing: leave the full
            // flush to the next entry on this CPU.
            if let Some(cpu) = full_flush_cpu
                && v.get(offset::EXIT_CODE) & 0xffff_ffff != exit::INVALID_LOW32
            {
                ASIDS.flushed(cpu);
            }
            // An event whose delivery the exit interrupted must be delivered again
            // (EXITINTINFO, APM §15.7.2); otherwise nothing is left to inject.
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
                && self.vmcb_ref().get(offset::RIP) != iret_rip
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
        let p = pending::take(&mut self.pending)?;
        pending::complete(p, self, value);
        Ok(())
    }

    fn fault_msr(&mut self) -> Result<(), VcpuError> {
        pending::take_msr(&mut self.pending)?;
        self.inject_exception(VECTOR_GP, Some(0));
        Ok(())
    }

    fn registers(&self) -> Registers {
        let mut regs = Registers {
            gpr: self.gprs.0,
            ..Registers::default()
        };
        self.vmcb_ref().registers_into(&mut regs);
        regs
    }

    fn internal_exits(&self) -> InternalExits {
        self.internal
    }

    fn backend(&self) -> &'static str {
        "svm"
    }

    fn interruptible(&self) -> bool {
        let v = self.vmcb_ref();
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
        let v = self.vmcb_ref();
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
        host_tsc.wrapping_add(self.vmcb_ref().get(offset::TSC_OFFSET))
    }

    fn save_state(&self, host_tsc: u64) -> Result<VcpuState, VcpuError> {
        pending::check_runnable(self.stopped, &self.pending)?;
        let [dr0, dr1, dr2, dr3, _] = self.debug.get();
        let out = state::Outside {
            gpr: self.gprs.0,
            nmi: self.nmi,
            dr: [dr0, dr1, dr2, dr3],
            msrs: self.msrs.state(),
            fpu: self.fpu.save(),
        };
        Ok(state::read(&self.vmcb_ref(), out, host_tsc))
    }

    fn restore_state(&mut self, state: &VcpuState, host_tsc: u64) -> Result<(), VcpuStateError> {
        state.validate()?;
        // The FPU area is checked against this host before anything changes.
        fpu::validate_area(&state.fpu, fpu::host_mxcsr_mask(), fpu::host_xcr0())
            .map_err(VcpuStateError::Fpu)?;
        let out = state::write(&mut self.vmcb(), state, host_tsc);
        self.fpu.restore(&out.fpu).map_err(VcpuStateError::Fpu)?;
        let [dr0, dr1, dr2, dr3] = out.dr;
        self.debug.set([dr0, dr1, dr2, dr3, 0]);
        // Validated above (`VcpuState::validate` checks the same rules).
        let _ = self.msrs.restore(out.msrs);
        self.gprs.0 = out.gpr;
        self.nmi = out.nmi;
        // A restored vCPU is not in the middle of an IRET step: #DB is the guest's.
        if self.iret_step_dr6.take().is_some() {
            let mut v = self.vmcb();
            let intercepts = v.get32(offset::INTERCEPT_EXCEPTIONS);
            v.set32(offset::INTERCEPT_EXCEPTIONS, intercepts & !DB_INTERCEPT);
        }
        self.pending = None;
        self.stopped = false;
        self.flush_guest = true;
        Ok(())
    }
}

#[cfg(test)]
mod iret_step_tests {
    use std::boxed::Box;

    use super::*;

    #[test]
    fn the_iret_ending_an_nmi_handler_is_single_stepped_and_dr6_comes_back() {
        let mut page = Box::new([0u8; 4096]);
        let mut v = Vmcb::new(&mut page);
        // NMI handler flags (IF off) and a DR6 with the guest's own breakpoint bit.
        v.set(offset::RFLAGS, 0x2);
        v.set(offset::DR6, 0xffff_0ff1);
        v.set32(offset::INTERCEPT_EXCEPTIONS, 1 << 14);
        let saved = arm_iret_step(&mut v);
        assert_eq!(saved, 0xffff_0ff1);
        assert_eq!(
            v.get(offset::RFLAGS),
            0x2 | RFLAGS_TF,
            "TF makes the IRET trap"
        );
        assert_eq!(
            v.get32(offset::INTERCEPT_EXCEPTIONS),
            (1 << 14) | (1 << VECTOR_DB),
            "the trap's #DB exits, other intercepts stay"
        );
        // The trap: the CPU set DR6.BS, the IRET popped the interrupted code's flags.
        v.set(offset::DR6, 0xffff_4ff1);
        v.set(offset::RFLAGS, 0x246);
        disarm_iret_step(&mut v, saved);
        assert_eq!(
            v.get(offset::DR6),
            0xffff_0ff1,
            "the guest never sees the step"
        );
        assert_eq!(v.get(offset::RFLAGS), 0x246, "popped flags are the guest's");
        assert_eq!(v.get32(offset::INTERCEPT_EXCEPTIONS), 1 << 14);
    }
}
