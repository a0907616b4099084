//! Turning each CPU's virtualization extension on: the same VMM enable path the boot CPU
//! runs with its first VM, with the per-CPU pages billed as `cpu_virtualization`.

use alloc::string::{String, ToString};

use keel_vmm::detect::Virtualization;
use keel_vmm::host::{FrameUse, HostMemory};
use spin::Once;

use super::CpuVirtualization;
use crate::mm::bill::HostUse;

/// Frames for per-CPU virtualization state: host-wide, never a VM's.
struct CpuVirtualizationHost;

impl HostMemory for CpuVirtualizationHost {
    fn alloc_frames(&self, count: u64, align: u64) -> Option<u64> {
        crate::mm::alloc_frames(HostUse::CpuVirtualization, count, align)
    }

    fn free_frames(&self, phys: u64, count: u64) {
        crate::mm::free_frames(HostUse::CpuVirtualization, phys, count)
    }

    fn alloc_frames_for(&self, _use: FrameUse, count: u64, align: u64) -> Option<u64> {
        self.alloc_frames(count, align)
    }

    fn free_frames_for(&self, _use: FrameUse, phys: u64, count: u64) {
        self.free_frames(phys, count)
    }

    fn ptr(&self, phys: u64) -> *mut u8 {
        phys as *mut u8
    }
}

static HOST: CpuVirtualizationHost = CpuVirtualizationHost;
static VIRTUALIZATION: Once<Virtualization> = Once::new();

fn enable_here() -> Result<(), String> {
    let Some(virtualization) = VIRTUALIZATION.get() else {
        return Err(String::from("not probed"));
    };
    keel_vmm::backend::enable_on_this_cpu(virtualization, &HOST).map_err(|e| e.to_string())
}

/// The short name `cpus` shows for an extension.
fn kind(virtualization: &Virtualization) -> Option<&'static str> {
    match virtualization {
        Virtualization::Svm(_) => Some("AMD-V"),
        Virtualization::Vmx(_) => Some("VT-x"),
        Virtualization::Unavailable(_) => None,
    }
}

/// The boot CPU's virtualization as `cpus` shows it, and what each AP runs to turn its own
/// on (none when the host has no usable extension). Also tells the VMM how to find the
/// calling CPU, so its per-CPU state is kept per CPU.
pub fn for_boot(
    virtualization: &Virtualization,
) -> (
    CpuVirtualization,
    Option<(&'static str, super::hw::EnableVirtualization)>,
) {
    keel_vmm::host::set_current_cpu_source(super::current);
    let virtualization = VIRTUALIZATION.call_once(|| virtualization.clone());
    match kind(virtualization) {
        Some(name) => (
            CpuVirtualization::On(name),
            Some((name, enable_here as super::hw::EnableVirtualization)),
        ),
        None => (CpuVirtualization::Off(virtualization.to_string()), None),
    }
}
