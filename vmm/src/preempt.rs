//! Preemption requests from the host timer.
//!
//! A host interrupt that arrives while a guest runs exits it (`VmExit::Interrupted`). One that
//! arrives while the backend is between two VMRUNs (handling a CPUID, say) would be missed by
//! that mechanism, so the kernel's timer handler also calls [`request`], and backends return
//! to the VMM at the next opportunity when [`take`] says so. A guest that loops on CPU-only
//! exits therefore cannot starve the host either.

use core::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks the running vCPU (if any) to return to the VMM soon. Safe from interrupt handlers.
pub fn request() {
    REQUESTED.store(true, Ordering::Relaxed);
}

/// Takes a pending request.
pub fn take() -> bool {
    REQUESTED.swap(false, Ordering::Relaxed)
}
