//! Preemption requests from the host timer, one per host CPU.
//!
//! A host interrupt that arrives while a guest runs exits it (`VmExit::Interrupted`). One that
//! arrives while the backend is between two VMRUNs (handling a CPUID, say) would be missed by
//! that mechanism, so the kernel's timer handler also calls [`request`], and backends return
//! to the VMM at the next opportunity when [`take`] says so. A guest that loops on CPU-only
//! exits therefore cannot starve the host either.
//!
//! The flags are per host CPU ([`crate::host::current_cpu`]): a CPU's tick preempts the vCPU
//! running on that CPU, not one on another.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::host::{MAX_HOST_CPUS, current_cpu};

static REQUESTED: [AtomicBool; MAX_HOST_CPUS] = [const { AtomicBool::new(false) }; MAX_HOST_CPUS];

/// Asks the vCPU running on this CPU (if any) to return to the VMM soon. Safe from
/// interrupt handlers.
pub fn request() {
    request_on(current_cpu());
}

/// Takes this CPU's pending request.
pub fn take() -> bool {
    take_on(current_cpu())
}

/// [`request`] for host CPU `cpu` (ignored past [`MAX_HOST_CPUS`]).
fn request_on(cpu: usize) {
    if let Some(flag) = REQUESTED.get(cpu) {
        flag.store(true, Ordering::Relaxed);
    }
}

/// [`take`] for host CPU `cpu`.
fn take_on(cpu: usize) -> bool {
    REQUESTED
        .get(cpu)
        .is_some_and(|flag| flag.swap(false, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    // CPUs 200 and up: the VM-loop tests run on "CPU 0" and take its flag.
    #[test]
    fn a_request_preempts_only_its_own_cpu_once() {
        request_on(200);
        assert!(!take_on(201), "another CPU's flag is untouched");
        assert!(take_on(200));
        assert!(!take_on(200), "taken once");
        request_on(MAX_HOST_CPUS);
        assert!(!take_on(MAX_HOST_CPUS));
    }
}
