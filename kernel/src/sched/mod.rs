//! Where vCPUs run and how busy each host CPU is with them.
//!
//! Today every vCPU runs on the boot CPU, in the kernel's VM slice ([`crate::vms`]); the
//! VM manager records the CPU each VM last ran on and times each slice here. `cpus`, `vm
//! info` and `GET /api/v1/system` read it back, so the figures stay true when vCPUs move
//! to other CPUs.
//!
//! [`LoadWindow`] is the pure part (unit-tested on the host): the share of the last
//! [`WINDOW_SECONDS`] a CPU spent running vCPUs, from one-second buckets.

#[cfg(target_os = "none")]
mod hw;
#[cfg(target_os = "none")]
pub use hw::{account_slice, cpu_loads, cpu_times_ms, idle_until_interrupt, load_percent};

use alloc::string::String;
use alloc::vec::Vec;

/// Seconds the load figure covers.
pub const WINDOW_SECONDS: u64 = 5;

const NS_PER_SECOND: u64 = 1_000_000_000;

/// Time one CPU spent running vCPUs, per second, for the last [`WINDOW_SECONDS`] seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadWindow {
    /// `(second, busy ns in it)`, indexed by second modulo the window; a bucket whose
    /// second has left the window counts as 0.
    buckets: [(u64, u64); WINDOW_SECONDS as usize],
}

impl LoadWindow {
    /// An idle window.
    pub const fn new() -> LoadWindow {
        LoadWindow {
            buckets: [(0, 0); WINDOW_SECONDS as usize],
        }
    }

    /// Adds `busy_ns` of vCPU time that ended at `now_ns` (nanoseconds since boot). Slices
    /// last at most a timer tick, so the whole of one goes to the second it ended in.
    pub fn add(&mut self, now_ns: u64, busy_ns: u64) {
        let second = now_ns / NS_PER_SECOND;
        let bucket = &mut self.buckets[(second % WINDOW_SECONDS) as usize];
        if bucket.0 != second {
            *bucket = (second, 0);
        }
        bucket.1 = bucket.1.saturating_add(busy_ns);
    }

    /// The share of the window up to `now_ns` (the current second so far and the
    /// [`WINDOW_SECONDS`]` - 1` whole ones before it, or since boot when that is shorter)
    /// spent running vCPUs, in percent (0–100).
    pub fn percent(&self, now_ns: u64) -> u32 {
        let second = now_ns / NS_PER_SECOND;
        let oldest = second.saturating_sub(WINDOW_SECONDS - 1);
        let busy: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| *s >= oldest && *s <= second)
            .map(|(_, ns)| *ns)
            .sum();
        let window_ns = ((second - oldest) * NS_PER_SECOND + now_ns % NS_PER_SECOND).max(1);
        (u128::from(busy) * 100 / u128::from(window_ns)).min(100) as u32
    }
}

/// One online host CPU's vCPU figures, for `cpus` and `GET /api/v1/system`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuLoad {
    /// The kernel's CPU index (0 is the boot CPU).
    pub index: usize,
    /// Share of the last [`WINDOW_SECONDS`] spent running vCPUs, in percent.
    pub load_percent: u32,
    /// The vCPUs placed on it, as `name/vcpuN`.
    pub vcpus: Vec<String>,
}

/// The `cpus` command's vCPU table: one row per online CPU with its load and its vCPUs.
pub fn vcpu_table(rows: &[CpuLoad]) -> String {
    use core::fmt::Write as _;
    let mut out = alloc::format!("  cpu  load({WINDOW_SECONDS}s)  vcpus\n");
    for row in rows {
        let vcpus = if row.vcpus.is_empty() {
            String::from("-")
        } else {
            row.vcpus.join(", ")
        };
        let load = alloc::format!("{}%", row.load_percent);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "  {:<4} {:<9} {vcpus}", row.index, load);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vcpu_table_lists_each_cpu_with_its_vcpus() {
        let rows = [
            CpuLoad {
                index: 0,
                load_percent: 37,
                vcpus: alloc::vec![String::from("web/vcpu0"), String::from("web/vcpu1")],
            },
            CpuLoad {
                index: 1,
                load_percent: 0,
                vcpus: Vec::new(),
            },
        ];
        assert_eq!(
            vcpu_table(&rows),
            "  cpu  load(5s)  vcpus\n  0    37%       web/vcpu0, web/vcpu1\n  1    0%        -\n"
        );
    }

    const S: u64 = NS_PER_SECOND;

    #[test]
    fn idle_is_zero_and_busy_is_a_share_of_the_window() {
        let mut w = LoadWindow::new();
        assert_eq!(w.percent(10 * S), 0);
        // Half of each of the last five seconds busy.
        for second in 6..=10 {
            w.add(second * S + S / 2, S / 2);
        }
        // At the end of second 10: 2.5 s busy over 5 s.
        assert_eq!(w.percent(11 * S - 1), 50);
        // Half-way through second 10 (0.5 s of it so far), 2.5 s over 4.5 s.
        assert_eq!(w.percent(10 * S + S / 2), 55);
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let mut w = LoadWindow::new();
        w.add(3 * S, S);
        assert_eq!(w.percent(3 * S + S / 2), 28, "1 s over 3.5 s");
        // Five seconds later second 3 has left the window.
        assert_eq!(w.percent(8 * S), 0);
        // Its bucket is reused by second 8, not added to.
        w.add(8 * S + 1, S / 10);
        assert_eq!(w.percent(9 * S - 1), 2);
    }

    #[test]
    fn right_after_boot_the_window_is_the_time_since_boot() {
        let mut w = LoadWindow::new();
        w.add(S / 2, S / 4);
        assert_eq!(w.percent(S / 2), 50);
        // A busy figure beyond the window (a clock step) is capped.
        w.add(S / 2, 10 * S);
        assert_eq!(w.percent(S / 2), 100);
        assert_eq!(LoadWindow::new().percent(0), 0);
    }
}
