//! Hardware backends: a VM-level [`VmBackend`] that owns the VM's memory map and makes its
//! vCPUs, behind the runtime SVM/VMX choice ([`create_vm_backend`]).
//!
//! # Who owns what
//!
//! ```text
//!  Vm ──owns──► Box<dyn VmBackend>          svm::SvmVm / vmx::VmxVm
//!   │             └── MemoryMap              guest RAM, NPT/EPT, TLB epoch, dirty log
//!   │                  (memory_map.rs)
//!   └─owns──► Box<dyn Vcpu> per vCPU         svm::SvmVcpu / vmx::VmxVcpu
//!                 ├── ControlFrames          VMCB or VMCS, I/O and MSR bitmaps
//!                 ├── GuestFpu (fpu.rs)      XSAVE area
//!                 ├── VcpuId (ids.rs)        its ASID / VPID, per host CPU and generation
//!                 └── TlbEpoch               flushes when the VM's map changed
//! ```
//!
//! The second-level tables and the memory map are the VM's: one set per VM, built once,
//! write-protected and invalidated through the VM backend. ASIDs/VPIDs are per vCPU (see
//! `ids` for why). Code both backends share lives here: `pending` (reads the VMM
//! completes), `mmio` (decoding an MMIO access), `fpu`, `ids`, `memory_map`; control pages
//! are [`ControlFrames`](crate::memory::ControlFrames), whose borrows end with each call.
//! Every resource is an owned value, so a failed creation and `Drop` unwind themselves.
//! No backend type leaks out of this module.

pub mod bare;
mod debug;
pub mod fpu;
mod ids;
pub mod memory_map;
mod mmio;
pub(crate) mod pending;
pub mod svm;
pub mod vmx;

use alloc::boxed::Box;
use core::fmt;

pub use self::memory_map::{DirtyBitmap, MemoryMap};
use crate::cpuid::CpuidPolicy;
use crate::detect::{Unavailable, Virtualization};
use crate::host::HostMemory;
use crate::memory::{GuestMemory, MemoryError};
use crate::vcpu::{Registers, StartMode, Vcpu, VcpuError, VcpuState, VcpuStateError};

/// Why a VM backend or a vCPU could not be created.
#[derive(Debug)]
pub enum BackendError {
    /// The host has no usable virtualization extension.
    Unavailable(Unavailable),
    /// The VT-x backend could not set up VMX operation or the vCPU's VMCS.
    Vmx(vmx::VmxError),
    /// Host frames ran out for the control structures.
    OutOfHostMemory,
    /// The CPU offers no address-space ID for guests (its ASID count is below 2).
    NoGuestAsid,
    /// Building the nested page tables failed.
    Memory(MemoryError),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Unavailable(reason) => {
                write!(f, "no hardware virtualization: {reason}")
            }
            BackendError::Vmx(e) => write!(f, "VT-x: {e}"),
            BackendError::OutOfHostMemory => {
                f.write_str("out of host memory for the vCPU's control structures")
            }
            BackendError::NoGuestAsid => f.write_str(
                "the CPU offers no address-space ID (ASID) for guests: its ASID count is below 2",
            ),
            BackendError::Memory(e) => write!(f, "nested page tables: {e}"),
        }
    }
}

impl From<MemoryError> for BackendError {
    fn from(e: MemoryError) -> BackendError {
        match e {
            MemoryError::OutOfHostMemory { .. } => BackendError::OutOfHostMemory,
            e => BackendError::Memory(e),
        }
    }
}

/// Why a vCPU could not be rebuilt from a saved state.
#[derive(Debug)]
pub enum VcpuRestoreError {
    /// The backend could not create the vCPU.
    Create(BackendError),
    /// The state was refused.
    State(VcpuStateError),
}

impl fmt::Display for VcpuRestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuRestoreError::Create(e) => write!(f, "cannot create the vCPU: {e}"),
            VcpuRestoreError::State(e) => e.fmt(f),
        }
    }
}

/// One VM on a hardware backend: its memory map and the maker of its vCPUs.
///
/// # Call order
///
/// 1. [`create_vm_backend`] takes the guest's RAM (already loaded) and maps it.
/// 2. The VM creates its vCPUs with [`create_vcpu`](Self::create_vcpu): the BSP at once,
///    each AP when the guest sends it a start-up IPI. vCPUs run over
///    [`memory`](Self::memory).
/// 3. Dirty tracking, at any point between runs: [`start_dirty_log`](Self::start_dirty_log)
///    (or [`write_protect`](Self::write_protect) a range); the VM answers each
///    [`VmExit::DirtyPageWrite`](crate::vcpu::VmExit::DirtyPageWrite) with
///    [`record_dirty_write`](Self::record_dirty_write); harvest per round with
///    [`harvest_dirty`](Self::harvest_dirty); [`stop_dirty_log`](Self::stop_dirty_log).
/// 4. Drop the vCPUs before the backend (they point into its tables).
pub trait VmBackend {
    /// Which backend this is (`"svm"` or `"vmx"`).
    fn name(&self) -> &'static str;
    /// The VM's memory map.
    fn memory_map(&self) -> &MemoryMap;
    /// The VM's memory map, to change it.
    fn memory_map_mut(&mut self) -> &mut MemoryMap;
    /// A vCPU for local APIC id `apic_id`, entering the guest as `start` says, over this
    /// VM's memory map.
    fn create_vcpu(
        &mut self,
        apic_id: u32,
        start: StartMode,
    ) -> Result<Box<dyn Vcpu>, BackendError>;

    /// KVM's paravirtual features the VM's CPUID offers
    /// ([`CpuidPolicy::kvm_features`]); the VM loop answers the kvm-clock MSRs only when they
    /// include kvm-clock, and #GP otherwise.
    fn kvm_features(&self) -> u32 {
        0
    }

    /// The guest's RAM.
    fn memory(&self) -> &GuestMemory {
        self.memory_map().memory()
    }

    /// Makes every vCPU of the VM, on whichever CPU it runs, drop its cached guest-physical
    /// translations before it next enters the guest.
    fn invalidate_translations(&mut self) {
        self.memory_map_mut().invalidate();
    }

    /// Write-protects guest RAM in `gpa..gpa + len` (see [`MemoryMap::write_protect`]).
    fn write_protect(&mut self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        self.memory_map_mut().write_protect(gpa, len)
    }

    /// Lifts write protection from guest RAM in `gpa..gpa + len`.
    fn unprotect(&mut self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        self.memory_map_mut().unprotect(gpa, len)
    }

    /// Logs and unprotects the page of a guest write that hit write protection (see
    /// [`MemoryMap::record_dirty_write`]).
    fn record_dirty_write(&mut self, gpa: u64) -> Result<bool, MemoryError> {
        self.memory_map_mut().record_dirty_write(gpa)
    }

    /// The pages written since the last call.
    fn take_dirty_pages(&mut self) -> DirtyBitmap {
        self.memory_map_mut().take_dirty()
    }

    /// Starts dirty logging over all RAM, guest and device writes (see
    /// [`MemoryMap::start_dirty_log`]).
    fn start_dirty_log(&mut self) -> Result<(), MemoryError> {
        self.memory_map_mut().start_dirty_log()
    }

    /// The pages written since the last harvest, re-protected (see
    /// [`MemoryMap::harvest_dirty`]).
    fn harvest_dirty(&mut self) -> Result<DirtyBitmap, MemoryError> {
        self.memory_map_mut().harvest_dirty()
    }

    /// Stops dirty logging; all RAM writable again.
    fn stop_dirty_log(&mut self) -> Result<(), MemoryError> {
        self.memory_map_mut().stop_dirty_log()
    }

    /// A vCPU for `apic_id` in `state` (saved with [`Vcpu::save_state`]), its guest TSC
    /// continuing from the saved value at `host_tsc`. This is the restore half of
    /// [`Persist`](crate::persist::Persist) for a vCPU, with the VM backend and the APIC id as
    /// the constructor arguments; nothing is left behind on error.
    fn restore_vcpu(
        &mut self,
        apic_id: u32,
        state: &VcpuState,
        host_tsc: u64,
    ) -> Result<Box<dyn Vcpu>, VcpuRestoreError> {
        state.validate().map_err(VcpuRestoreError::State)?;
        let mut vcpu = self
            .create_vcpu(apic_id, StartMode::RealMode { entry: 0 })
            .map_err(VcpuRestoreError::Create)?;
        vcpu.restore_state(state, host_tsc)
            .map_err(VcpuRestoreError::State)?;
        Ok(vcpu)
    }
}

/// Whether this build checks save/restore on the hardware: set `KEEL_VCPU_STATE_SELFTEST`
/// when building the kernel, and every 64th `run` (counted over all vCPUs) first saves the
/// running vCPU's state,
/// encodes it with postcard, decodes it and restores it (at the same host TSC, so the guest
/// clock does not move). A guest that keeps running proves the round trip on the real
/// VMCB/VMCS; a failure stops the vCPU with [`VcpuError::StateAccess`].
pub(crate) const STATE_SELFTEST: bool = option_env!("KEEL_VCPU_STATE_SELFTEST").is_some();

/// The self-test's round trip for `vcpu` (see [`STATE_SELFTEST`]), every 64th call.
pub(crate) fn state_selftest(vcpu: &mut dyn Vcpu, host_tsc: u64) -> Result<(), VcpuError> {
    use core::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    if !CALLS.fetch_add(1, Ordering::Relaxed).is_multiple_of(64) {
        return Ok(());
    }
    let state = vcpu.save_state(host_tsc)?;
    let bytes = postcard::to_allocvec(&state).map_err(|_| VcpuError::StateAccess)?;
    let back: VcpuState = postcard::from_bytes(&bytes).map_err(|_| VcpuError::StateAccess)?;
    if back != state {
        return Err(VcpuError::StateAccess);
    }
    vcpu.restore_state(&back, host_tsc)
        .map_err(|_| VcpuError::StateAccess)?;
    // What was restored reads back the same.
    if vcpu.save_state(host_tsc)? != state {
        return Err(VcpuError::StateAccess);
    }
    Ok(())
}

/// The VM backend for `memory` on whichever extension this host has; vCPUs get `cpuid`
/// with their own APIC id.
pub fn create_vm_backend(
    virtualization: &Virtualization,
    host: &'static dyn HostMemory,
    memory: GuestMemory,
    cpuid: CpuidPolicy,
) -> Result<Box<dyn VmBackend>, BackendError> {
    match virtualization {
        Virtualization::Svm(caps) => Ok(Box::new(svm::SvmVm::new(host, caps, memory, cpuid)?)),
        Virtualization::Vmx(caps) => Ok(Box::new(vmx::VmxVm::new(host, caps, memory, cpuid)?)),
        Virtualization::Unavailable(reason) => Err(BackendError::Unavailable(*reason)),
    }
}

/// Turns the virtualization extension on for the calling CPU (once; later calls do
/// nothing), as the first VM created on a CPU would.
pub fn enable_on_this_cpu(
    virtualization: &Virtualization,
    host: &'static dyn HostMemory,
) -> Result<(), BackendError> {
    match virtualization {
        Virtualization::Svm(_) => svm::enable_on_this_cpu(host),
        Virtualization::Vmx(caps) => vmx::enable_on_this_cpu(host, caps),
        Virtualization::Unavailable(reason) => Err(BackendError::Unavailable(*reason)),
    }
}

/// The registers a vCPU starts with, on either backend.
pub fn start_registers(start: StartMode) -> Registers {
    use svm::vmcb;
    match start {
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
        StartMode::Multiboot { entry, info } => {
            let mut regs = vmcb::protected_mode_registers(entry, info);
            regs.gpr[0] = u64::from(crate::loader::multiboot1::BOOTLOADER_MAGIC);
            regs
        }
    }
}
