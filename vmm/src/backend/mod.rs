//! Hardware backends behind the [`Vcpu`] trait, chosen at runtime from what detection found.
//!
//! `svm` is AMD-V with nested paging; `vmx` is Intel VT-x with EPT, unrestricted guest and
//! VPID. `fpu` is shared: both backends switch guest FPU/SSE/AVX state the same way. No
//! backend type leaks out of this module.

pub mod fpu;
mod mmio;
pub mod svm;
pub mod vmx;

use alloc::boxed::Box;
use core::fmt;

use crate::cpuid::CpuidPolicy;
use crate::detect::{Unavailable, Virtualization};
use crate::host::HostMemory;
use crate::memory::{GuestMemory, MemoryError};
use crate::vcpu::{StartMode, Vcpu};

/// Why a vCPU could not be created.
#[derive(Debug)]
pub enum BackendError {
    /// The host has no usable virtualization extension.
    Unavailable(Unavailable),
    /// The VT-x backend could not set up VMX operation or the vCPU's VMCS.
    Vmx(vmx::VmxError),
    /// Host frames ran out for the control structures.
    OutOfHostMemory,
    /// Every address-space ID is in use.
    NoFreeAsid,
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
            BackendError::NoFreeAsid => f.write_str("every address-space ID (ASID) is in use"),
            BackendError::Memory(e) => write!(f, "nested page tables: {e}"),
        }
    }
}

/// Creates a vCPU on whichever backend this host supports.
pub fn create_vcpu(
    virtualization: &Virtualization,
    host: &'static dyn HostMemory,
    memory: &GuestMemory,
    start: StartMode,
    cpuid: CpuidPolicy,
) -> Result<Box<dyn Vcpu>, BackendError> {
    match virtualization {
        Virtualization::Svm(caps) => Ok(Box::new(svm::SvmVcpu::new(
            host, caps, memory, start, cpuid,
        )?)),
        Virtualization::Vmx(caps) => Ok(Box::new(vmx::VmxVcpu::new(
            host, caps, memory, start, cpuid,
        )?)),
        Virtualization::Unavailable(reason) => Err(BackendError::Unavailable(*reason)),
    }
}
