//! The Intel VT-x (VMX) backend: one VMCS per vCPU, EPT, unrestricted guest, VPID; exits
//! mapped to [`VmExit`] exactly as the SVM backend maps its own.
//!
//! # Layout
//!
//! - `vmcs`: field encodings, the controls Keel asks for, guest-state set-up and read-back,
//!   and the MSR bitmap — pure, host-tested through [`Fields`].
//! - `exit_info`: exit reasons, exit qualifications, interruption information, and the
//!   names of VM-instruction errors — pure decoding, host-tested.
//! - `cr`: which CR0/CR4 bits the host owns, and the emulation of guest writes to them.
//! - `exits`: what each VM exit does (CPU-level exits handled here, device-level ones
//!   returned).
//! - `instr`: the raw instructions and the world switch.
//!
//! # Per CPU and per vCPU
//!
//! The first vCPU created on a CPU turns VMX on there (`ensure_enabled`): the
//! `IA32_FEATURE_CONTROL` lock when the firmware left it open, the CR0/CR4 fixed bits
//! (CR4.VMXE), and VMXON with a region carrying the VMCS revision identifier. The VM
//! ([`VmxVm`]) owns the EPT tables (in its [`MemoryMap`]); each vCPU owns a VMCS, an MSR
//! bitmap, two I/O bitmap pages of ones, an FPU save area and a VPID, and flushes the VM's
//! EPT translations (INVEPT) before its first entry and after the map changed. A vCPU's VMCS is made current (VMPTRLD) whenever it is used while another is current;
//! the first entry is VMLAUNCH, later ones VMRESUME.
//!
//! # MSRs
//!
//! - `IA32_FS_BASE`, `IA32_GS_BASE`, `IA32_SYSENTER_CS/ESP/EIP` are VMCS guest-state fields:
//!   the CPU switches them on entry and exit, so they are not intercepted.
//! - `IA32_KERNEL_GS_BASE`, `IA32_STAR`, `IA32_LSTAR`, `IA32_FMASK` are not in the VMCS. They
//!   are not intercepted either: while a vCPU is the one loaded on this CPU, the hardware MSRs
//!   hold *its* values, and they are swapped (RDMSR into the old vCPU's store, WRMSR from the
//!   new one's) only when another vCPU's VMCS is loaded. Keel's kernel never executes
//!   SYSCALL, SYSRET or SWAPGS (it has no user mode), so it needs no values of its own there.
//! - `CSTAR` (`0xC000_0083`) is intercepted and kept per vCPU: Intel CPUs never use it
//!   (SYSCALL from compatibility mode raises #UD), so there is nothing to switch.
//! - `IA32_EFER` and `IA32_PAT` are intercepted; the values live in the VMCS (loaded and saved
//!   by the entry/exit controls). Every other MSR goes through [`MsrState`] and raises #GP
//!   when it is unknown.
//!
//! # Host interrupts
//!
//! External-interrupt exiting without acknowledge-on-exit: a host interrupt exits the guest
//! (reason 1) and stays pending; the world switch's `sti` lets the host handle it. The exit
//! is returned as [`VmExit::Interrupted`], as are CPU-only exits when the host timer asked
//! for the CPU back ([`crate::preempt`]).
//! The VMX-preemption timer (reason 52) is a backstop that bounds every stay in the guest,
//! whatever the guest's RFLAGS.IF ([`vmcs::PREEMPTION_SLICE_TSC`] says why Bochs needs it).
//!
//! [`Fields`]: vmcs::Fields
//! [`MsrState`]: crate::msr::MsrState

pub mod cr;
pub mod exit_info;
mod exits;
pub mod instr;
mod state;
pub mod vmcs;

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use self::cr::CrPolicy;
use self::instr::{GuestRegs, RunResult, VmFail};
use self::vmcs::{ControlAddresses, ControlError, Controls, Fields, field};
use super::bare::{BareError, BareExit, BareRun, Counter, Step};
use super::debug::GuestDebug;
use super::fpu::{self, GuestFpu};
use super::ids::{IdSpace, VcpuId};
use super::memory_map::{MemoryMap, TlbEpoch};
use super::pending::{self, GuestAccess, Pending};
use super::{BackendError, VmBackend};
use crate::cpuid::CpuidPolicy;
use crate::detect::VmxCapabilities;
use crate::host::{FrameUse, HostMemory, MAX_HOST_CPUS, current_cpu};
use crate::memory::{ControlFrames, GuestMemory};
use crate::msr::{self, MsrState};
use crate::nested_paging::NestedFormat;
use crate::vcpu::{
    EntryFailure, Gpr, InternalExits, Registers, StartMode, Vcpu, VcpuError, VcpuState,
    VcpuStateError, VmExit,
};

use self::exit_info::reason;
pub use self::exit_info::{entry_failure_name, instruction_error_name};

/// Why the VT-x backend could not set up a vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// The CPU's VMX controls lack something Keel needs.
    Controls(ControlError),
    /// `IA32_VMX_BASIC` asks for a VMXON/VMCS region larger than a page.
    RegionTooLarge(u32),
    /// VMXON failed (another VMM is active, or the CPU refused the region).
    VmxonFailed,
    /// VMCLEAR of a new VMCS failed.
    VmclearFailed,
    /// Reading or writing the new VMCS failed (a VMCS field this CPU does not have).
    VmcsAccess {
        /// The field encoding.
        field: u32,
        /// The VM-instruction error, when the CPU gave one.
        error: Option<u32>,
    },
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmxError::Controls(e) => write!(f, "unsuitable VMX controls: {e}"),
            VmxError::RegionTooLarge(size) => {
                write!(
                    f,
                    "the CPU wants {size}-byte VMCS regions (more than a page)"
                )
            }
            VmxError::VmxonFailed => f.write_str("VMXON failed (is another hypervisor active?)"),
            VmxError::VmclearFailed => f.write_str("VMCLEAR of a new VMCS failed"),
            VmxError::VmcsAccess { field, error } => {
                write!(f, "setting up the VMCS failed at field {field:#06x}")?;
                match error {
                    Some(n) => write!(
                        f,
                        ": VM-instruction error {n} ({})",
                        instruction_error_name(*n).unwrap_or("unknown")
                    ),
                    None => f.write_str(": no current VMCS"),
                }
            }
        }
    }
}

impl From<VmxError> for BackendError {
    fn from(e: VmxError) -> BackendError {
        BackendError::Vmx(e)
    }
}

const MSR_FEATURE_CONTROL: u32 = 0x3a;
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// VMX is on for CPU n (indexed by [`crate::host::current_cpu`]).
static ENABLED: [AtomicBool; MAX_HOST_CPUS] = [const { AtomicBool::new(false) }; MAX_HOST_CPUS];
/// The VMCS current on this CPU (0: none known).
static CURRENT_VMCS: AtomicU64 = AtomicU64::new(0);
/// The store of the vCPU whose SYSCALL MSRs are in this CPU's registers (null: none).
static SYSCALL_MSR_OWNER: AtomicPtr<SyscallMsrs> = AtomicPtr::new(core::ptr::null_mut());
/// The first VMREAD/VMWRITE failure since it was last taken: field | 1 << 32 (VMfailInvalid)
/// or 2 << 32 (VMfailValid); 0 for none.
static VMCS_ACCESS_ERROR: AtomicU64 = AtomicU64::new(0);

/// VPIDs per host CPU, by generation (see `ids`); VPID 0 is the host's.
static VPIDS: IdSpace = IdSpace::new();
/// Guest VPIDs are `1..VPID_LIMIT` (the field is 16 bits wide).
const VPID_LIMIT: u32 = 1 << 16;

/// Turns VMX operation on for this CPU once (SDM Vol. 3C §24.7, §24.8).
fn ensure_enabled(host: &'static dyn HostMemory, caps: &VmxCapabilities) -> Result<(), VmxError> {
    let cpu = current_cpu();
    if ENABLED[cpu].load(Ordering::Acquire) {
        return Ok(());
    }
    let size = caps.basic.region_size();
    if size > 4096 {
        return Err(VmxError::RegionTooLarge(size));
    }
    let region = host
        .alloc_frames_for(FrameUse::CpuVirtualization, 1, 1)
        .ok_or(VmxError::VmxonFailed)?;
    // SAFETY: the frame was just allocated for us and is identity-accessible through `ptr`.
    unsafe { (host.ptr(region) as *mut u32).write(caps.basic.revision_id()) };
    fpu::enable_on_this_cpu();
    // SAFETY: detection found VT-x usable: IA32_FEATURE_CONTROL exists and, when unlocked,
    // may be locked with VMX enabled; the fixed bits only turn on what VMX operation requires
    // (CR0.NE, CR4.VMXE) and keep everything the kernel runs with. The VMXON region is ours
    // for as long as VMX is on (forever).
    let on = unsafe {
        if caps.needs_feature_control_enable {
            let fc = instr::rdmsr(MSR_FEATURE_CONTROL);
            instr::wrmsr(
                MSR_FEATURE_CONTROL,
                fc | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            );
        }
        instr::write_cr0(caps.fixed_cr0(instr::read_cr0()));
        instr::write_cr4(caps.fixed_cr4(instr::read_cr4()));
        instr::vmxon(region)
    };
    if on.is_err() {
        host.free_frames_for(FrameUse::CpuVirtualization, region, 1);
        return Err(VmxError::VmxonFailed);
    }
    ENABLED[cpu].store(true, Ordering::Release);
    Ok(())
}

/// Turns VMX operation on for the calling CPU: the `IA32_FEATURE_CONTROL` check (and lock
/// when open), CR0/CR4 fixed bits, and its own VMXON region (a host CPU started at boot
/// runs this once).
pub fn enable_on_this_cpu(
    host: &'static dyn HostMemory,
    caps: &VmxCapabilities,
) -> Result<(), BackendError> {
    ensure_enabled(host, caps).map_err(BackendError::Vmx)
}

/// The guest's SYSCALL/SWAPGS MSRs, which the VMCS does not switch.
#[derive(Clone, Copy, Debug, Default)]
struct SyscallMsrs {
    star: u64,
    lstar: u64,
    fmask: u64,
    kernel_gs_base: u64,
}

impl SyscallMsrs {
    const MSRS: [u32; 4] = [
        msr::IA32_STAR,
        msr::IA32_LSTAR,
        msr::IA32_FMASK,
        msr::IA32_KERNEL_GS_BASE,
    ];

    fn values(&mut self) -> [&mut u64; 4] {
        [
            &mut self.star,
            &mut self.lstar,
            &mut self.fmask,
            &mut self.kernel_gs_base,
        ]
    }
}

/// The current VMCS, reached with VMREAD/VMWRITE. Only [`VmxVcpu::vmcs`] makes one, after
/// making the vCPU's VMCS current; when that failed (`.0` false) every access is dropped and
/// reads as 0, so nothing lands in another vCPU's VMCS. A failing access is recorded in
/// `VMCS_ACCESS_ERROR` (the run loop turns it into a stop) and reads as 0.
struct Current(bool);

fn note_access_error(field: u32, fail: VmFail) {
    let kind = match fail {
        VmFail::Invalid => 1u64,
        VmFail::Valid => 2,
    };
    let _ = VMCS_ACCESS_ERROR.compare_exchange(
        0,
        u64::from(field) | (kind << 32),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
}

impl Fields for Current {
    fn read(&self, field: u32) -> u64 {
        if !self.0 {
            return 0;
        }
        // SAFETY: a `Current` exists only while VMX is on and a vCPU's VMCS is current;
        // VMREAD only reads it.
        match unsafe { instr::vmread(field) } {
            Ok(v) => v,
            Err(fail) => {
                note_access_error(field, fail);
                0
            }
        }
    }

    fn write(&mut self, field: u32, value: u64) {
        if !self.0 {
            return;
        }
        // SAFETY: as for `read`; the backend writes only values that keep the host's
        // resources intercepted (controls are computed once in `VmxVcpu::new`).
        if let Err(fail) = unsafe { instr::vmwrite(field, value) } {
            note_access_error(field, fail);
        }
    }
}

/// A VM on Intel VT-x: its memory map (EPT) and what its vCPUs are made from.
pub struct VmxVm {
    host: &'static dyn HostMemory,
    caps: VmxCapabilities,
    cpuid: CpuidPolicy,
    controls: Controls,
    use_vpid: bool,
    map: MemoryMap,
}

impl VmxVm {
    /// Checks the CPU's controls, turns VMX on (once per CPU) and maps `memory` in EPT.
    pub fn new(
        host: &'static dyn HostMemory,
        caps: &VmxCapabilities,
        memory: GuestMemory,
        cpuid: CpuidPolicy,
    ) -> Result<VmxVm, BackendError> {
        let ev = caps.ept_vpid;
        let use_vpid =
            caps.vpid && ev.invvpid() && (ev.invvpid_single_context() || ev.invvpid_all_context());
        let controls = vmcs::compute_controls(caps, use_vpid).map_err(VmxError::Controls)?;
        ensure_enabled(host, caps)?;
        let map = MemoryMap::new(memory, NestedFormat::Ept).map_err(BackendError::Memory)?;
        Ok(VmxVm {
            host,
            caps: caps.clone(),
            cpuid,
            controls,
            use_vpid,
            map,
        })
    }
}

impl VmxVm {
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
        let mut vcpu = VmxVcpu::new(self, start, cpuid)?;
        vcpu.bare_loop(exit, rounds)
    }
}

impl VmBackend for VmxVm {
    fn name(&self) -> &'static str {
        "vmx"
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
        let vcpu = VmxVcpu::new(self, start, cpuid)?;
        Ok(Box::new(vcpu))
    }
}

/// A VMCS region; VMCLEARed (written back, no longer current) before its frame is freed.
struct Vmcs {
    region: ControlFrames,
}

impl Drop for Vmcs {
    fn drop(&mut self) {
        let pa = self.region.phys();
        // SAFETY: VMX is on (a VMCS exists only after `ensure_enabled`); VMCLEAR writes the
        // VMCS back and makes it inactive and not current before its frame is freed (SDM
        // Vol. 3C §25.11.3).
        let _ = unsafe { instr::vmclear(pa) };
        let _ = CURRENT_VMCS.compare_exchange(pa, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// A vCPU's VPID: assigned per host CPU and generation before each entry (see `ids`).
/// Nothing to release: a VPID is handed out again only after a flush of its CPU.
struct Vpid {
    tag: VcpuId,
    /// INVVPID single-context is available.
    single_context: bool,
    /// INVVPID all-context is available.
    all_context: bool,
}

impl Vpid {
    fn get(&self) -> u16 {
        // Assigned below VPID_LIMIT (1 << 16).
        self.tag.get() as u16
    }

    /// INVVPID for this VPID (single-context, or all-context where that is all there is).
    fn flush(&self) {
        // SAFETY: VMX is on and `VmxVm::new` checked that the CPU has INVVPID with
        // single-context or all-context invalidation.
        let _ = unsafe { instr::invvpid(if self.single_context { self.get() } else { 0 }) };
    }
}

/// One vCPU on Intel VT-x.
pub struct VmxVcpu {
    vmcs: Vmcs,
    io_bitmaps: ControlFrames,
    msr_bitmap: ControlFrames,
    fpu: GuestFpu,
    debug: GuestDebug,
    /// Load the PAE PDPTEs from guest memory before the next entry (a restored state).
    reload_pdptes: bool,
    /// None when VPID is not used.
    vpid: Option<Vpid>,
    /// The host CPU this vCPU last entered on (`usize::MAX`: none yet).
    last_cpu: usize,
    tlb: TlbEpoch,
    eptp: u64,
    /// INVEPT: `Some(true)` single-context, `Some(false)` all-context only, `None` none.
    invept: Option<bool>,
    regs: GuestRegs,
    syscall_msrs: Box<UnsafeCell<SyscallMsrs>>,
    cstar: u64,
    tpr: u64,
    cr: CrPolicy,
    cpuid: CpuidPolicy,
    msrs: MsrState,
    /// `IA32_VMX_MISC[5]`: exits keep "IA-32e mode guest" equal to EFER.LMA themselves.
    misc_stores_lma: bool,
    /// The CPU lets "PAUSE exiting" be set.
    pause_exiting_allowed: bool,
    /// The "virtual NMIs" control is set.
    virtual_nmis: bool,
    /// Virtual NMIs are on and the CPU lets "NMI-window exiting" be set: a blocked NMI gets
    /// an exit at the instruction boundary where blocking ends (the IRET of the handler).
    nmi_window_allowed: bool,
    /// The VMX-preemption timer value written before each entry (0: no timer).
    preemption_timer: u64,
    launched: bool,
    flush_vpid: bool,
    pending: Option<Pending>,
    internal: InternalExits,
    stopped: bool,
}

impl VmxVcpu {
    /// Creates a vCPU of `vm` over its EPT, starting as `start` says.
    fn new(vm: &VmxVm, start: StartMode, cpuid: CpuidPolicy) -> Result<VmxVcpu, BackendError> {
        let (host, caps, controls) = (vm.host, &vm.caps, &vm.controls);
        let ev = caps.ept_vpid;
        let vpid = if vm.use_vpid {
            Some(Vpid {
                tag: VcpuId::unassigned(),
                single_context: ev.invvpid_single_context(),
                all_context: ev.invvpid_all_context(),
            })
        } else {
            None
        };
        // Each resource is an owned value: an early return frees what was taken.
        let mut region = ControlFrames::alloc(host, 1, 1)?;
        region.page_mut()[..4].copy_from_slice(&caps.basic.revision_id().to_le_bytes());
        let mut io_bitmaps = ControlFrames::alloc(host, 2, 1)?;
        io_bitmaps.fill(0xff)?;
        let mut msr_bitmap = ControlFrames::alloc(host, 1, 1)?;
        vmcs::fill_msr_bitmap(msr_bitmap.page_mut(), vmx_passthrough);
        let fpu = GuestFpu::new(host)?;
        // SAFETY: VMX is on; the region is ours and carries the revision identifier.
        unsafe { instr::vmclear(region.phys()) }.map_err(|_| VmxError::VmclearFailed)?;
        let vmcs = Vmcs { region };
        let cr = CrPolicy::new(caps, &cpuid);
        let mut vcpu = VmxVcpu {
            vmcs,
            io_bitmaps,
            msr_bitmap,
            fpu,
            debug: GuestDebug::new(true),
            reload_pdptes: false,
            tlb: vm.map.tlb_epoch(),
            eptp: vm.map.tables().eptp(),
            invept: if ev.invept() && ev.invept_single_context() {
                Some(true)
            } else if ev.invept() && ev.invept_all_context() {
                Some(false)
            } else {
                None
            },
            flush_vpid: vpid.is_some(),
            vpid,
            last_cpu: usize::MAX,
            regs: GuestRegs::default(),
            syscall_msrs: Box::new(UnsafeCell::new(SyscallMsrs::default())),
            cstar: 0,
            tpr: 0,
            cr,
            cpuid,
            msrs: MsrState::new(),
            misc_stores_lma: caps.misc & vmcs::MISC_STORES_LMA != 0,
            pause_exiting_allowed: caps.proc_based.allows(vmcs::proc::PAUSE_EXITING),
            virtual_nmis: controls.pin & vmcs::pin::VIRTUAL_NMIS != 0,
            nmi_window_allowed: controls.pin & vmcs::pin::VIRTUAL_NMIS != 0
                && caps.proc_based.allows(vmcs::proc::NMI_WINDOW_EXITING),
            preemption_timer: if controls.pin & vmcs::pin::PREEMPTION_TIMER != 0 {
                vmcs::preemption_timer_value(caps.misc)
            } else {
                0
            },
            launched: false,
            pending: None,
            internal: InternalExits::default(),
            stopped: false,
        };
        let regs = super::start_registers(start);
        let addrs = ControlAddresses {
            io_bitmaps: vcpu.io_bitmaps.phys(),
            msr_bitmap: vcpu.msr_bitmap.phys(),
            eptp: vcpu.eptp,
            // 0 until the first entry assigns one on its CPU (`prepare_tlb`).
            vpid: vcpu.vpid.as_ref().map_or(0, Vpid::get),
        };
        let _ = take_access_error();
        let mut v = vcpu.vmcs();
        vmcs::write_controls(&mut v, controls, &addrs, &vcpu.cr);
        vmcs::write_guest_state(&mut v, &regs, &vcpu.cr);
        vcpu.regs.gpr = regs.gpr;
        vcpu.regs.cr2 = regs.cr2;
        if let Some((field, fail)) = take_access_error() {
            let error = (fail == VmFail::Valid).then(|| v.read(field::VM_INSTRUCTION_ERROR) as u32);
            let _ = take_access_error();
            return Err(VmxError::VmcsAccess { field, error }.into());
        }
        Ok(vcpu)
    }

    fn vmcs_pa(&self) -> u64 {
        self.vmcs.region.phys()
    }

    /// Makes this vCPU's VMCS the current one on this CPU, with this CPU's host state and
    /// this vCPU's SYSCALL MSRs loaded. False (and the failure recorded) when VMPTRLD failed.
    fn activate(&self) -> bool {
        if CURRENT_VMCS.load(Ordering::Acquire) == self.vmcs_pa() {
            return true;
        }
        // SAFETY: VMX is on (a vCPU exists only after `ensure_enabled`); the VMCS is ours and
        // was VMCLEARed at creation.
        if let Err(fail) = unsafe { instr::vmptrld(self.vmcs_pa()) } {
            note_access_error(0, fail);
            return false;
        }
        let previous = SYSCALL_MSR_OWNER.load(Ordering::Acquire);
        let ours = self.syscall_msrs.get();
        // SAFETY: `previous` is null or the store of a live vCPU (each clears the owner
        // before its store is freed); the stores are only touched here, with no reference
        // into them alive. The MSRs exist on every 64-bit CPU; the values written are ones
        // the CPU accepted from a guest (or zero), and the host never uses them.
        unsafe {
            if !previous.is_null() {
                for (msr, value) in SyscallMsrs::MSRS.into_iter().zip((*previous).values()) {
                    *value = instr::rdmsr(msr);
                }
            }
            for (msr, value) in SyscallMsrs::MSRS.into_iter().zip((*ours).values()) {
                instr::wrmsr(msr, *value);
            }
        }
        SYSCALL_MSR_OWNER.store(ours, Ordering::Release);
        CURRENT_VMCS.store(self.vmcs_pa(), Ordering::Release);
        write_host_state(&mut Current(true));
        true
    }

    /// This vCPU's VMCS, made current.
    fn vmcs(&self) -> Current {
        Current(self.activate())
    }

    /// Makes this vCPU's TLB tags ready for an entry on this CPU (its VMCS current): the
    /// VPID valid here (a new one when the vCPU moved or this CPU's VPID generation changed,
    /// see `ids`), every VPID on the CPU flushed when a generation began, and the EPT's
    /// cached translations flushed when the vCPU comes from another CPU (the map may have
    /// changed while it ran elsewhere, and INVEPT only reached the CPUs it ran on).
    fn prepare_tlb(&mut self, v: &mut Current) -> Result<(), EntryFailure> {
        let cpu = current_cpu();
        if cpu != self.last_cpu {
            if self.last_cpu != usize::MAX {
                self.flush_ept();
            }
            self.last_cpu = cpu;
        }
        let Some(vpid) = &mut self.vpid else {
            return Ok(());
        };
        let entry = VPIDS
            .assign(&mut vpid.tag, cpu, VPID_LIMIT)
            .map_err(|_| EntryFailure::NoAddressSpaceId { cpu })?;
        if entry.flush_all {
            if vpid.all_context {
                // SAFETY: VMX is on; the CPU reports all-context INVVPID.
                let _ = unsafe { instr::invvpid(0) };
            }
            // Without all-context INVVPID each fresh VPID is flushed on its own below.
            VPIDS.flushed(cpu);
        }
        if entry.fresh {
            v.write(field::VPID, entry.id.into());
            if !vpid.all_context {
                vpid.flush();
            }
            // A fresh VPID holds no translations here: the guest's own flush is done.
            self.flush_vpid = false;
        }
        Ok(())
    }

    /// Flushes this vCPU's guest-linear translations (INVVPID), when it has a VPID; without
    /// one, every VM entry and exit flushes them anyway.
    fn flush_guest_tlb(&mut self) {
        if let Some(vpid) = &self.vpid {
            vpid.flush();
        }
    }

    /// STAR, LSTAR, FMASK, KERNEL_GS_BASE: the CPU's while this vCPU owns them, else its
    /// store's.
    fn syscall_msr_values(&self) -> [u64; 4] {
        let ours = self.syscall_msrs.get();
        if SYSCALL_MSR_OWNER.load(Ordering::Acquire) == ours {
            // SAFETY: these MSRs exist on every 64-bit CPU; reading has no side effects.
            SyscallMsrs::MSRS.map(|msr| unsafe { instr::rdmsr(msr) })
        } else {
            // SAFETY: a copy out of our own store, which only `activate` writes (through
            // `&self` of a vCPU, on this CPU, not now).
            let m = unsafe { *ours };
            [m.star, m.lstar, m.fmask, m.kernel_gs_base]
        }
    }

    /// Replaces STAR, LSTAR, FMASK and KERNEL_GS_BASE (in the CPU too while this vCPU owns
    /// them).
    fn set_syscall_msr_values(&mut self, values: [u64; 4]) {
        let [star, lstar, fmask, kernel_gs_base] = values;
        *self.syscall_msrs.get_mut() = SyscallMsrs {
            star,
            lstar,
            fmask,
            kernel_gs_base,
        };
        if SYSCALL_MSR_OWNER.load(Ordering::Acquire) == self.syscall_msrs.get() {
            for (msr, value) in SyscallMsrs::MSRS.into_iter().zip(values) {
                // SAFETY: the MSRs exist on every 64-bit CPU; the values passed
                // `VcpuState::validate` (canonical addresses, FMASK's upper half zero), and
                // the host never uses them (see the module docs).
                unsafe { instr::wrmsr(msr, value) };
            }
        }
    }

    /// Drops the guest-physical and combined translations cached for the VM's EPT (INVEPT
    /// single-context for its EPTP, else all-context; SDM Vol. 3C §29.4.3.1), after the
    /// VM's memory map changed or before this vCPU's first entry.
    fn flush_ept(&mut self) {
        let Some(single) = self.invept else {
            // Without INVEPT nothing can be flushed; such CPUs do not exist with EPT in
            // practice (the SDM ties INVEPT to EPT support).
            return;
        };
        let eptp = if single { self.eptp } else { 0 };
        // SAFETY: VMX is on; `invept` records which INVEPT type the CPU reports.
        let _ = unsafe { instr::invept(eptp) };
    }
}

/// MSRs the guest reaches without an exit: the VMCS-switched ones and the SYSCALL MSRs this
/// backend keeps in the hardware while the vCPU is loaded (see the module docs). CSTAR is
/// kept per vCPU instead.
fn vmx_passthrough(index: u32) -> bool {
    msr::hardware_passthrough(index) && index != msr::IA32_CSTAR
}

fn take_access_error() -> Option<(u32, VmFail)> {
    let e = VMCS_ACCESS_ERROR.swap(0, Ordering::Relaxed);
    (e != 0).then(|| {
        let fail = if e >> 32 == 1 {
            VmFail::Invalid
        } else {
            VmFail::Valid
        };
        (e as u32, fail)
    })
}

/// Writes this CPU's host state into the current VMCS (SDM Vol. 3C §25.5, checked by
/// §27.2.2-27.2.4): control registers, selectors (RPL and TI clear), FS/GS/TR/GDTR/IDTR
/// bases, SYSENTER MSRs, EFER and PAT. HOST_RSP/HOST_RIP are written by the world switch.
fn write_host_state(v: &mut impl Fields) {
    use field::*;
    const MSR_FS_BASE: u32 = 0xc000_0100;
    const MSR_GS_BASE: u32 = 0xc000_0101;
    v.write(HOST_CR0, instr::read_cr0());
    v.write(HOST_CR3, instr::read_cr3());
    v.write(HOST_CR4, instr::read_cr4());
    let s = instr::host_segments();
    for (f, sel) in [
        (HOST_CS_SELECTOR, s.cs),
        (HOST_SS_SELECTOR, s.ss),
        (HOST_DS_SELECTOR, s.ds),
        (HOST_ES_SELECTOR, s.es),
        (HOST_FS_SELECTOR, s.fs),
        (HOST_GS_SELECTOR, s.gs),
        (HOST_TR_SELECTOR, s.tr),
    ] {
        v.write(f, u64::from(sel & !7));
    }
    // SAFETY: the GDTR and TR are the running kernel's: TR selects a 16-byte TSS descriptor
    // inside the GDT, which is mapped and not being changed.
    let [low, high] = unsafe { instr::read_gdt_system_descriptor(s.gdt_base, s.tr) };
    v.write(HOST_TR_BASE, tss_base(low, high));
    v.write(HOST_GDTR_BASE, s.gdt_base);
    v.write(HOST_IDTR_BASE, s.idt_base);
    // SAFETY: these MSRs exist on every 64-bit VMX-capable CPU; reading has no side effects.
    unsafe {
        v.write(HOST_FS_BASE, instr::rdmsr(MSR_FS_BASE));
        v.write(HOST_GS_BASE, instr::rdmsr(MSR_GS_BASE));
        v.write(HOST_SYSENTER_CS, instr::rdmsr(msr::IA32_SYSENTER_CS));
        v.write(HOST_SYSENTER_ESP, instr::rdmsr(msr::IA32_SYSENTER_ESP));
        v.write(HOST_SYSENTER_EIP, instr::rdmsr(msr::IA32_SYSENTER_EIP));
        v.write(HOST_IA32_EFER, instr::rdmsr(msr::IA32_EFER));
        v.write(HOST_IA32_PAT, instr::rdmsr(msr::IA32_PAT));
    }
}

/// The base of a 64-bit TSS descriptor (SDM Vol. 3A §8.2.3): bits 15:0 and 23:16 in the low
/// quadword's bits 31:16 and 39:32, bits 31:24 in its bits 63:56, bits 63:32 in the high
/// quadword.
fn tss_base(low: u64, high: u64) -> u64 {
    ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24) | ((high & 0xffff_ffff) << 32)
}

impl VmxVcpu {
    /// Sets or clears `bit` of the primary processor-based controls (one VMWRITE, only when
    /// it changes).
    fn set_proc_control(&mut self, bit: u32, on: bool) {
        let mut v = self.vmcs();
        let controls = v.read(field::PROC_BASED_CONTROLS) as u32;
        let new = if on { controls | bit } else { controls & !bit };
        if new != controls {
            v.write(field::PROC_BASED_CONTROLS, new.into());
        }
    }
}

impl VmxVcpu {
    /// The floor for `exit`: the VMCS made current, the TLB flushes `run` does, one untimed
    /// round trip (the VMLAUNCH), then `rounds` timed VMRESUMEs.
    fn bare_loop(&mut self, exit: BareExit, rounds: u64) -> Result<BareRun, BareError> {
        let mut v = self.vmcs();
        if self.preemption_timer != 0 {
            // Not saved on exit, so every entry reloads this value: written once.
            v.write(field::GUEST_PREEMPTION_TIMER, self.preemption_timer);
        }
        if let Some((field, fail)) = take_access_error() {
            let error = (fail == VmFail::Valid).then(|| v.read(field::VM_INSTRUCTION_ERROR) as u32);
            return Err(BareError::Backend(
                VmxError::VmcsAccess { field, error }.into(),
            ));
        }
        self.prepare_tlb(&mut v).map_err(BareError::Entry)?;
        if self.tlb.take_flush() {
            self.flush_ept();
        }
        if self.flush_vpid {
            self.flush_vpid = false;
            self.flush_guest_tlb();
        }
        self.bare_rounds(exit, 1)?;
        self.bare_rounds(exit, rounds)
    }

    /// VMLAUNCH/VMRESUME, VMREAD of the exit reason, VMWRITE of the known next RIP, again,
    /// `rounds` times, with the TSC read around the loop. The VMCS is current (`bare_loop`).
    fn bare_rounds(&mut self, exit: BareExit, rounds: u64) -> Result<BareRun, BareError> {
        let expected = match exit {
            BareExit::Cpuid => reason::CPUID,
            BareExit::Out => reason::IO_INSTRUCTION,
        };
        let next_rip = exit.next_rip();
        let mut v = Current(true);
        let mut counter = Counter::new(exit, rounds);
        let start = instr::rdtsc();
        loop {
            // SAFETY: as in `run`: VMX is on, this vCPU's VMCS is current (made so by
            // `bare_loop`, nothing in between loads another), its controls intercept every
            // host resource and its EPT maps only the floor guest's RAM.
            let result = unsafe { instr::run(&mut self.regs, self.launched) };
            if let RunResult::Failed(fail) = result {
                return Err(BareError::Entry(match fail {
                    VmFail::Invalid => EntryFailure::VmxFailInvalid,
                    VmFail::Valid => {
                        EntryFailure::VmxInstructionError(v.read(field::VM_INSTRUCTION_ERROR) as u32)
                    }
                }));
            }
            self.launched = true;
            let raw = v.read(field::EXIT_REASON);
            if raw & exit_info::EXIT_REASON_ENTRY_FAILURE != 0 {
                return Err(BareError::Entry(EntryFailure::VmxEntryCheck {
                    reason: raw as u16,
                    qualification: v.read(field::EXIT_QUALIFICATION),
                }));
            }
            let basic = raw as u16;
            let interrupt =
                basic == reason::EXTERNAL_INTERRUPT || basic == reason::PREEMPTION_TIMER;
            match counter.step(raw, basic == expected, interrupt)? {
                Step::Advance => v.write(field::GUEST_RIP, next_rip),
                Step::Reenter => {}
                Step::Finished => {
                    v.write(field::GUEST_RIP, next_rip);
                    return Ok(counter.result(instr::rdtsc() - start));
                }
            }
        }
    }
}

impl Vcpu for VmxVcpu {
    fn run(&mut self, memory: &GuestMemory) -> Result<VmExit, VcpuError> {
        pending::check_runnable(self.stopped, &self.pending)?;
        if super::STATE_SELFTEST {
            super::state_selftest(self, instr::rdtsc())?;
        }
        loop {
            let mut v = self.vmcs();
            if self.preemption_timer != 0 {
                v.write(field::GUEST_PREEMPTION_TIMER, self.preemption_timer);
            }
            if let Err(reason) = self.prepare_tlb(&mut v) {
                self.stopped = true;
                return Ok(VmExit::FailEntry { reason });
            }
            if let Some((_, fail)) = take_access_error() {
                // A VMCS access failed: a VMM bug. Stop with what the CPU said.
                self.stopped = true;
                let reason = match fail {
                    VmFail::Invalid => EntryFailure::VmxFailInvalid,
                    VmFail::Valid => {
                        EntryFailure::VmxInstructionError(v.read(field::VM_INSTRUCTION_ERROR) as u32)
                    }
                };
                return Ok(VmExit::FailEntry { reason });
            }
            self.fpu.load();
            self.debug.load();
            if self.tlb.take_flush() {
                self.flush_ept();
            }
            if core::mem::take(&mut self.reload_pdptes) {
                let view = self.cr_view();
                // PDPTEs a guest could not load fail the entry check, which reports them.
                let _ = self.load_pdptes_if_pae(memory, &view);
            }
            if self.flush_vpid {
                self.flush_vpid = false;
                self.flush_guest_tlb();
            }
            // SAFETY: VMX is on and this vCPU's VMCS is current (just activated; nothing in
            // between loads another): its controls intercept every host resource, its EPT (the
            // VM's, which outlives its vCPUs) maps only this guest's memory, and `activate`
            // wrote this CPU's host state.
            let result = unsafe { instr::run(&mut self.regs, self.launched) };
            if let RunResult::Failed(fail) = result {
                self.stopped = true;
                let reason = match fail {
                    VmFail::Invalid => EntryFailure::VmxFailInvalid,
                    VmFail::Valid => {
                        EntryFailure::VmxInstructionError(v.read(field::VM_INSTRUCTION_ERROR) as u32)
                    }
                };
                return Ok(VmExit::FailEntry { reason });
            }
            self.launched = true;
            self.after_exit();
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
        self.inject_gp();
        Ok(())
    }

    fn registers(&self) -> Registers {
        let mut regs = Registers {
            gpr: self.regs.gpr,
            cr2: self.regs.cr2,
            ..Registers::default()
        };
        vmcs::read_guest_state(&self.vmcs(), &mut regs);
        regs
    }

    fn internal_exits(&self) -> InternalExits {
        self.internal
    }

    fn backend(&self) -> &'static str {
        "vmx"
    }

    fn interruptible(&self) -> bool {
        let v = self.vmcs();
        v.read(field::GUEST_RFLAGS) & RFLAGS_IF != 0
            && v.read(field::GUEST_INTERRUPTIBILITY) & BLOCKING_STI_MOV_SS == 0
            && v.read(field::ENTRY_INTERRUPTION_INFO) as u32 & exit_info::intr::VALID == 0
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError> {
        if !self.interruptible() {
            return Err(VcpuError::NotInterruptible);
        }
        let info = exit_info::intr::VALID | exit_info::intr::TYPE_EXTERNAL | u32::from(vector);
        self.vmcs()
            .write(field::ENTRY_INTERRUPTION_INFO, u64::from(info));
        Ok(())
    }

    /// Interrupt-window exiting (SDM Vol. 3C §26.7.5): an exit before the first instruction
    /// at which RFLAGS.IF = 1 and nothing blocks interrupts.
    fn request_interrupt_window(&mut self, wanted: bool) {
        self.set_proc_control(vmcs::proc::INTERRUPT_WINDOW_EXITING, wanted);
    }

    /// NMI injection (SDM Vol. 3C §27.6.1.2). With virtual NMIs the CPU keeps the guest's NMI
    /// blocking (interruptibility bit 3) from an injected NMI to the guest's IRET; without
    /// them NMIs are not injected at all, as the VMM could not tell when the guest is done.
    fn inject_nmi(&mut self) -> Result<bool, VcpuError> {
        let v = self.vmcs();
        if !self.virtual_nmis
            || v.read(field::GUEST_INTERRUPTIBILITY) & (BLOCKING_STI_MOV_SS | BLOCKING_NMI) != 0
            || v.read(field::ENTRY_INTERRUPTION_INFO) as u32 & exit_info::intr::VALID != 0
        {
            // Blocked: exit as soon as the guest can take it (right after the IRET that ends
            // its handler), not at whatever exit comes later — kvm-unit-tests' `eventinj`
            // hung when a nested NMI went in inside the interrupted code's `printf` lock.
            if self.nmi_window_allowed {
                self.set_proc_control(vmcs::proc::NMI_WINDOW_EXITING, true);
            }
            return Ok(false);
        }
        let info = exit_info::intr::VALID | exit_info::intr::TYPE_NMI | 2;
        self.vmcs()
            .write(field::ENTRY_INTERRUPTION_INFO, u64::from(info));
        Ok(true)
    }

    /// PAUSE exiting (SDM Vol. 3C §26.1.3), a primary processor-based control, where the CPU
    /// allows it to be set.
    fn set_pause_exiting(&mut self, on: bool) -> bool {
        if self.pause_exiting_allowed {
            self.set_proc_control(vmcs::proc::PAUSE_EXITING, on);
        }
        self.pause_exiting_allowed
    }

    fn guest_tsc(&self, host_tsc: u64) -> u64 {
        host_tsc.wrapping_add(self.vmcs().read(field::TSC_OFFSET))
    }

    fn save_state(&self, host_tsc: u64) -> Result<VcpuState, VcpuError> {
        pending::check_runnable(self.stopped, &self.pending)?;
        let [dr0, dr1, dr2, dr3, dr6] = self.debug.get();
        let out = state::Outside {
            gpr: self.regs.gpr,
            cr2: self.regs.cr2,
            syscall: self.syscall_msr_values(),
            cstar: self.cstar,
            dr: [dr0, dr1, dr2, dr3],
            dr6,
            msrs: self.msrs.state(),
            fpu: self.fpu.save(),
        };
        // An earlier failed access (a VMM bug the next `run` would report) fails this too.
        let saved = state::read(&self.vmcs(), out, host_tsc);
        match take_access_error() {
            None => Ok(saved),
            Some(_) => Err(VcpuError::StateAccess),
        }
    }

    fn restore_state(&mut self, state: &VcpuState, host_tsc: u64) -> Result<(), VcpuStateError> {
        state.validate()?;
        state::validate(state, &self.cr, self.virtual_nmis)?;
        // The FPU area is checked against this host before anything changes.
        fpu::validate_area(&state.fpu, fpu::host_mxcsr_mask(), fpu::host_xcr0())
            .map_err(VcpuStateError::Fpu)?;
        let out = state::write(&mut self.vmcs(), state, &self.cr, host_tsc);
        if take_access_error().is_some() {
            self.stopped = true;
            return Err(VcpuStateError::Invalid {
                field: "registers",
                reason: "the CPU refused a VMCS write (the vCPU is stopped)",
            });
        }
        self.fpu.restore(&out.fpu).map_err(VcpuStateError::Fpu)?;
        let [dr0, dr1, dr2, dr3] = out.dr;
        self.debug.set([dr0, dr1, dr2, dr3, out.dr6]);
        // Validated above (`VcpuState::validate` checks the same rules).
        let _ = self.msrs.restore(out.msrs);
        self.regs.gpr = out.gpr;
        self.regs.cr2 = out.cr2;
        self.cstar = out.cstar;
        self.set_syscall_msr_values(out.syscall);
        self.pending = None;
        self.stopped = false;
        self.flush_vpid = self.vpid.is_some();
        self.reload_pdptes = true;
        Ok(())
    }
}

const RFLAGS_IF: u64 = 1 << 9;
/// Guest interruptibility: blocking by STI (bit 0) and by MOV SS (bit 1).
const BLOCKING_STI_MOV_SS: u64 = 0b11;
/// Guest interruptibility: blocking by NMI (virtual-NMI blocking with virtual NMIs).
const BLOCKING_NMI: u64 = 1 << 3;

impl Drop for VmxVcpu {
    /// Forgets this vCPU as the owner of the CPU's SYSCALL MSRs before its store is freed;
    /// the fields release the rest (VMCLEAR, VPID flush, frames, FPU ownership).
    fn drop(&mut self) {
        let _ = SYSCALL_MSR_OWNER.compare_exchange(
            self.syscall_msrs.get(),
            core::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

impl GuestAccess for VmxVcpu {
    fn register_file(&self) -> Registers {
        Vcpu::registers(self)
    }

    fn gpr(&self, reg: Gpr) -> u64 {
        if reg == Gpr::Rsp {
            self.vmcs().read(field::GUEST_RSP)
        } else {
            self.regs.gpr[reg as usize]
        }
    }

    fn set_gpr(&mut self, reg: Gpr, value: u64) {
        if reg == Gpr::Rsp {
            self.vmcs().write(field::GUEST_RSP, value);
        } else {
            self.regs.gpr[reg as usize] = value;
        }
    }

    fn set_rflags(&mut self, value: u64) {
        // Bit 1 is reserved as 1 (SDM Vol. 1 §3.4.3); VM entry checks it.
        self.vmcs().write(field::GUEST_RFLAGS, value | 0x2);
    }

    fn finish_instruction(&mut self, next_rip: u64) {
        self.set_rip_past_instruction(next_rip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_base_from_a_descriptor() {
        // Base 0xffff_8000_1234_5678, limit 0x67, type 9 (available 64-bit TSS), present.
        let low =
            0x0000_0000_0000_0067u64 | (0x5678 << 16) | (0x34 << 32) | (0x89 << 40) | (0x12 << 56);
        let high = 0xffff_8000;
        assert_eq!(tss_base(low, high), 0xffff_8000_1234_5678);
    }

    #[test]
    fn passthrough_keeps_cstar_intercepted() {
        for m in [
            msr::IA32_FS_BASE,
            msr::IA32_GS_BASE,
            msr::IA32_KERNEL_GS_BASE,
            msr::IA32_STAR,
            msr::IA32_LSTAR,
            msr::IA32_FMASK,
            msr::IA32_SYSENTER_CS,
            msr::IA32_SYSENTER_ESP,
            msr::IA32_SYSENTER_EIP,
        ] {
            assert!(vmx_passthrough(m), "{m:#x}");
        }
        for m in [
            msr::IA32_CSTAR,
            msr::IA32_EFER,
            msr::IA32_PAT,
            msr::IA32_TSC,
        ] {
            assert!(!vmx_passthrough(m), "{m:#x}");
        }
    }

    #[test]
    fn errors_name_what_failed() {
        assert_eq!(
            VmxError::VmcsAccess {
                field: 0x2806,
                error: Some(12)
            }
            .to_string(),
            "setting up the VMCS failed at field 0x2806: VM-instruction error 12 \
             (VMREAD/VMWRITE from/to unsupported VMCS component)"
        );
        assert_eq!(
            VmxError::Controls(ControlError::Missing("EPT")).to_string(),
            "unsuitable VMX controls: the CPU cannot enable EPT"
        );
    }
}
