//! Host-side benchmark hooks, selected by `keel.bench=<name>` on the kernel command line (for
//! `qemu-tests`' benchmark binary; not a console command).
//!
//! `cpu-loop` runs the exact loop the `bench` guest runs (`qemu-tests/guests/cpu_loop.S`,
//! assembled into the kernel too) so guest and host speed can be compared in one boot.

use crate::kprintln;

core::arch::global_asm!(
    include_str!("../../qemu-tests/guests/cpu_loop.S"),
    options(att_syntax)
);

unsafe extern "sysv64" {
    fn keel_cpu_loop(iterations: u64) -> u64;
}

/// Iterations of the CPU-bound loop; the guest uses the same count.
pub const CPU_LOOP_ITERATIONS: u64 = 50_000_000;

/// Runs the benchmark the command line names, if any.
pub fn from_cmdline(value: Option<&str>) {
    match value {
        None => {}
        Some("cpu-loop") => {
            let start = crate::arch::cpu::rdtsc();
            // SAFETY: the routine only uses RAX, RCX, RDX and flags (caller-saved in sysv64)
            // and touches no memory.
            let result = unsafe { keel_cpu_loop(CPU_LOOP_ITERATIONS) };
            let cycles = crate::arch::cpu::rdtsc() - start;
            kprintln!("host cpu-loop {CPU_LOOP_ITERATIONS} cycles {cycles} (result {result:#x})");
        }
        Some(other) => kprintln!("unknown keel.bench value '{other}' (cpu-loop)"),
    }
}
