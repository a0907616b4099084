//! The per-CPU load windows, one lock each: a CPU only adds to its own, readers (the
//! console, the API) take the lock briefly.

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use alloc::vec::Vec;

use super::{CpuLoad, LoadWindow};
use crate::vms::VmManager;
use keel_vmm::host::MAX_HOST_CPUS as MAX_CPUS;

static LOADS: [Mutex<LoadWindow>; MAX_CPUS] = [const { Mutex::new(LoadWindow::new()) }; MAX_CPUS];

/// Nanoseconds each CPU has spent running vCPUs since boot (`/metrics`).
static GUEST_NS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Nanoseconds each CPU has spent halted, waiting for an interrupt, since boot.
static IDLE_NS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Records that `cpu` ran vCPUs for `busy_ns`, ending at `now_ns` (TSC time since boot).
pub fn account_slice(cpu: usize, now_ns: u64, busy_ns: u64) {
    if let Some(load) = LOADS.get(cpu) {
        load.lock().add(now_ns, busy_ns);
    }
    if let Some(total) = GUEST_NS.get(cpu) {
        total.fetch_add(busy_ns, Ordering::Relaxed);
    }
}

/// Halts this CPU until the next interrupt, counting the time as its idle time.
pub fn idle_until_interrupt() {
    let start = crate::vms::now_ns();
    crate::arch::cpu::wait_for_interrupt();
    let halted = crate::vms::now_ns().saturating_sub(start);
    if let Some(total) = IDLE_NS.get(crate::arch::smp::current()) {
        total.fetch_add(halted, Ordering::Relaxed);
    }
}

/// `cpu`'s time since boot spent running vCPUs and halted, in milliseconds.
pub fn cpu_times_ms(cpu: usize) -> (u64, u64) {
    let ms = |counters: &[AtomicU64; MAX_CPUS]| {
        counters
            .get(cpu)
            .map_or(0, |c| c.load(Ordering::Relaxed) / 1_000_000)
    };
    (ms(&GUEST_NS), ms(&IDLE_NS))
}

/// `cpu`'s share of the last seconds spent running vCPUs, in percent.
pub fn load_percent(cpu: usize, now_ns: u64) -> u32 {
    LOADS.get(cpu).map_or(0, |load| load.lock().percent(now_ns))
}

/// Every online CPU's load and the vCPUs `vms` placed on it.
pub fn cpu_loads(vms: &VmManager) -> Vec<CpuLoad> {
    let now = crate::vms::now_ns();
    let placement = vms.vcpu_placement();
    (0..crate::arch::smp::cpu_count())
        .map(|index| CpuLoad {
            index,
            load_percent: load_percent(index, now),
            vcpus: placement
                .iter()
                .filter(|(cpu, _)| *cpu == index)
                .map(|(_, name)| name.clone())
                .collect(),
        })
        .collect()
}
