//! The per-CPU load windows, one lock each: a CPU only adds to its own, readers (the
//! console, the API) take the lock briefly.

use spin::Mutex;

use super::LoadWindow;
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
