//! The per-CPU load windows, one lock each: a CPU only adds to its own, readers (the
//! console, the API) take the lock briefly.

use spin::Mutex;

use alloc::vec::Vec;

use super::{CpuLoad, LoadWindow};
use crate::vms::VmManager;
use keel_vmm::host::MAX_HOST_CPUS as MAX_CPUS;

static LOADS: [Mutex<LoadWindow>; MAX_CPUS] = [const { Mutex::new(LoadWindow::new()) }; MAX_CPUS];

/// Records that `cpu` ran vCPUs for `busy_ns`, ending at `now_ns` (TSC time since boot).
pub fn account_slice(cpu: usize, now_ns: u64, busy_ns: u64) {
    if let Some(load) = LOADS.get(cpu) {
        load.lock().add(now_ns, busy_ns);
    }
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
