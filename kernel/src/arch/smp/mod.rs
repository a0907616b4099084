//! Application processors: starting the CPUs the MADT lists and the per-CPU state each one
//! runs with.
//!
//! The boot CPU copies the start-up code to a page below 1 MiB and sends each other CPU
//! INIT, then two start-up IPIs (SDM Vol. 3A §8.4.4.1: 10 ms after INIT, 200 µs between the
//! SIPIs). The CPU climbs from real mode to long mode on the kernel's page tables and enters
//! Rust on its own stack (guard page below it), loads its own GDT and TSS (own IST stacks),
//! the shared IDT, enables its local APIC with the same periodic tick as the boot CPU, turns
//! its virtualization extension on (its own VMXON region or host save area), reports in and
//! halts with interrupts on until [`start_ap_work`] gives it work. A CPU that does not report
//! within the timeout is marked failed with the reason and the others go on.
//!
//! Per-CPU data is reached through the GS base (`current()` is one load); both backends keep
//! the host's GS base across guest runs (VMX from the current MSR in the host-state area,
//! SVM through VMSAVE/VMLOAD).
//!
//! `plan` and `trampoline` (and the status types here) are pure and unit-tested on the host;
//! `hw` is the machine part.

pub mod plan;
pub mod trampoline;

#[cfg(target_os = "none")]
mod hw;
#[cfg(target_os = "none")]
pub mod virt;

#[cfg(target_os = "none")]
pub use hw::{
    boot_log_line, count_tick, cpu_count, cpus, current, init_boot_cpu, kick, start_ap_work,
    start_application_processors, ticks, virtualization_ready,
};

use alloc::string::String;
use alloc::vec::Vec;

pub use plan::StartFailure;

/// Whether a CPU runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuState {
    /// Running kernel code (the boot CPU, or an AP that reported in).
    Online,
    /// Listed by the firmware but not running; the reason says why.
    Failed(StartFailure),
    /// Listed but not started (not used yet: every listed CPU is started).
    Offline,
}

impl CpuState {
    /// The word `cpus` and the API show (`online`, `failed`, `offline`).
    pub fn name(&self) -> &'static str {
        match self {
            CpuState::Online => "online",
            CpuState::Failed(_) => "failed",
            CpuState::Offline => "offline",
        }
    }
}

/// A CPU's virtualization extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuVirtualization {
    /// Turned on (AP: at start; boot CPU: usable, turned on by the first VM).
    On(&'static str),
    /// Not usable on this CPU; the reason says why.
    Off(String),
}

/// One CPU as `cpus` and `GET /api/v1/system` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuStatus {
    /// Kernel index: online CPUs are `0..cpu_count()` (0 = boot CPU), the others follow.
    pub index: usize,
    /// Local APIC (or x2APIC) id.
    pub apic_id: u32,
    /// Whether it runs.
    pub state: CpuState,
    /// Its virtualization extension.
    pub virtualization: CpuVirtualization,
}

impl CpuStatus {
    /// `online`, or `failed: <reason>`.
    pub fn state_text(&self) -> String {
        match &self.state {
            CpuState::Failed(reason) => alloc::format!("failed: {reason}"),
            other => String::from(other.name()),
        }
    }

    /// `on (AMD-V)` or `off (<reason>)`.
    pub fn virtualization_text(&self) -> String {
        match &self.virtualization {
            CpuVirtualization::On(kind) => alloc::format!("on ({kind})"),
            CpuVirtualization::Off(reason) => alloc::format!("off ({reason})"),
        }
    }
}

/// The boot log's summary: `cpus: 4 online (apic ids 0, 1, 2, 3)`, with failed CPUs named.
pub fn summary(cpus: &[CpuStatus]) -> String {
    use core::fmt::Write;
    let online: Vec<_> = cpus
        .iter()
        .filter(|c| c.state == CpuState::Online)
        .collect();
    let mut line = alloc::format!("cpus: {} online (apic ids ", online.len());
    for (i, c) in online.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(line, "{sep}{}", c.apic_id);
    }
    line.push(')');
    for c in cpus.iter().filter(|c| c.state != CpuState::Online) {
        let _ = write!(line, "; apic id {} {}", c.apic_id, c.state_text());
    }
    let virt_off: Vec<_> = online
        .iter()
        .filter(|c| matches!(c.virtualization, CpuVirtualization::Off(_)))
        .collect();
    for c in virt_off {
        let _ = write!(
            line,
            "; cpu {} virtualization {}",
            c.index,
            c.virtualization_text()
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(index: usize, apic_id: u32, state: CpuState) -> CpuStatus {
        CpuStatus {
            index,
            apic_id,
            state,
            virtualization: CpuVirtualization::On("AMD-V"),
        }
    }

    #[test]
    fn summary_lists_online_ids_and_names_failures() {
        let cpus = [
            status(0, 0, CpuState::Online),
            status(1, 2, CpuState::Online),
            status(
                2,
                9,
                CpuState::Failed(StartFailure::NoAnswer { waited_ms: 500 }),
            ),
        ];
        assert_eq!(
            summary(&cpus),
            "cpus: 2 online (apic ids 0, 2); apic id 9 failed: no answer to INIT and \
             start-up IPIs within 500 ms (absent or broken CPU)"
        );
    }

    #[test]
    fn summary_reports_virtualization_off_per_cpu() {
        let mut cpus = [
            status(0, 0, CpuState::Online),
            status(1, 1, CpuState::Online),
        ];
        cpus[1].virtualization = CpuVirtualization::Off("VMXON failed".into());
        assert_eq!(
            summary(&cpus),
            "cpus: 2 online (apic ids 0, 1); cpu 1 virtualization off (VMXON failed)"
        );
        assert_eq!(cpus[0].virtualization_text(), "on (AMD-V)");
        assert_eq!(cpus[0].state_text(), "online");
    }
}
