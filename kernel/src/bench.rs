//! Host-side benchmark hooks, selected by `keel.bench=<item>[,<item>...]` on the kernel
//! command line (for `qemu-tests`' `vm-bench`; not a console command). Items:
//!
//! - `cpu-loop` runs the exact loop the `bench` guest runs (`qemu-tests/guests/cpu_loop.S`,
//!   assembled into the kernel too) so guest and host speed can be compared in one boot.
//! - `floor` / `floor:<rounds>` runs the bare backend round trip
//!   ([`keel_vmm::backend::bare`]): VMRUN/VMRESUME, the exit code read, RIP set, nothing
//!   else, for CPUID and OUT exits (100,000 rounds each unless given), the floor `vm-bench`
//!   compares the full exit path with.
//!
//! Output lines (the harness parses them):
//! `host cpu-loop <iterations> cycles <n> (result <x>)`,
//! `floor cpuid-exits <rounds> cycles <n> (other exits <m>)` and the same for `out-exits`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Iterations of the CPU-bound loop; the guest uses the same count.
pub const CPU_LOOP_ITERATIONS: u64 = 50_000_000;

/// Round trips per exit kind of `floor` without a count: the `bench` guest's count.
pub const FLOOR_ROUNDS: u64 = 100_000;

/// One benchmark the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bench {
    /// The CPU-bound loop on the host.
    CpuLoop,
    /// The bare backend round trip, `rounds` per exit kind.
    Floor {
        /// Round trips per exit kind (at least 1).
        rounds: u64,
    },
}

/// A `keel.bench` value that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchArgError {
    /// An item that names no benchmark.
    Unknown(String),
    /// `floor:` with something other than a positive count.
    BadRounds(String),
}

impl fmt::Display for BenchArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchArgError::Unknown(item) => write!(
                f,
                "unknown keel.bench item '{item}' (cpu-loop, floor, floor:<rounds>)"
            ),
            BenchArgError::BadRounds(text) => write!(
                f,
                "keel.bench floor:<rounds> needs a positive whole number, not '{text}'"
            ),
        }
    }
}

/// The benchmarks `value` asks for, in its order (comma-separated items).
pub fn parse(value: &str) -> Result<Vec<Bench>, BenchArgError> {
    let mut benches = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bench = match item.split_once(':') {
            None if item == "cpu-loop" => Bench::CpuLoop,
            None if item == "floor" => Bench::Floor {
                rounds: FLOOR_ROUNDS,
            },
            Some(("floor", count)) => match count.parse::<u64>() {
                Ok(rounds) if rounds > 0 => Bench::Floor { rounds },
                _ => return Err(BenchArgError::BadRounds(count.to_string())),
            },
            _ => return Err(BenchArgError::Unknown(item.to_string())),
        };
        benches.push(bench);
    }
    Ok(benches)
}

#[cfg(target_os = "none")]
pub use self::hardware::from_cmdline;

#[cfg(target_os = "none")]
mod hardware {
    use keel_vmm::backend::bare::{self, BareRun};
    use keel_vmm::cpuid::CpuidPolicy;
    use keel_vmm::host::{FrameUse, HostMemory};

    use super::{Bench, CPU_LOOP_ITERATIONS};
    use crate::{System, kprintln, mm};

    core::arch::global_asm!(
        include_str!("../../qemu-tests/guests/cpu_loop.S"),
        options(att_syntax)
    );

    unsafe extern "sysv64" {
        fn keel_cpu_loop(iterations: u64) -> u64;
    }

    /// Host frames for the floor VM, from the kernel's frame allocator (identity-mapped).
    /// They are billed to VM account 0: the bench runs at boot, before any VM exists, and
    /// returns every frame before the first one starts, so the account is back at zero.
    struct BenchHost;

    /// The memory-bill account the floor VM's frames are counted in.
    const BENCH_ACCOUNT: usize = 0;

    impl HostMemory for BenchHost {
        fn alloc_frames(&self, count: u64, align: u64) -> Option<u64> {
            // The VMM tags every allocation it makes; an untagged one is per-vCPU state.
            self.alloc_frames_for(FrameUse::VcpuControl, count, align)
        }

        fn free_frames(&self, phys: u64, count: u64) {
            self.free_frames_for(FrameUse::VcpuControl, phys, count)
        }

        fn alloc_frames_for(&self, use_: FrameUse, count: u64, align: u64) -> Option<u64> {
            mm::alloc_vm_frames(BENCH_ACCOUNT, use_, count, align)
        }

        fn free_frames_for(&self, use_: FrameUse, phys: u64, count: u64) {
            mm::free_vm_frames(BENCH_ACCOUNT, use_, phys, count)
        }

        fn ptr(&self, phys: u64) -> *mut u8 {
            phys as *mut u8
        }
    }

    static HOST: BenchHost = BenchHost;

    /// Runs the benchmarks the command line names, if any; a bad value or a failed run is
    /// printed and boot goes on.
    pub fn from_cmdline(system: &System, value: Option<&str>) {
        let Some(value) = value else { return };
        let benches = match super::parse(value) {
            Ok(benches) => benches,
            Err(e) => {
                kprintln!("{e}");
                return;
            }
        };
        for bench in benches {
            match bench {
                Bench::CpuLoop => cpu_loop(),
                Bench::Floor { rounds } => floor(system, rounds),
            }
        }
    }

    fn cpu_loop() {
        let start = crate::arch::cpu::rdtsc();
        // SAFETY: the routine only uses RAX, RCX, RDX and flags (caller-saved in sysv64)
        // and touches no memory.
        let result = unsafe { keel_cpu_loop(CPU_LOOP_ITERATIONS) };
        let cycles = crate::arch::cpu::rdtsc() - start;
        kprintln!("host cpu-loop {CPU_LOOP_ITERATIONS} cycles {cycles} (result {result:#x})");
    }

    fn floor(system: &System, rounds: u64) {
        // The CPUID policy every VM gets, so CPUID exits cost what they cost a VM (the bare
        // loop does not evaluate it, but the vCPU is built the same way).
        let cpuid = CpuidPolicy::from_host(&crate::cpuinfo::HostCpu)
            .with_tsc_hz(crate::arch::timer::tsc_hz());
        match bare::run_floor(&system.virtualization, &HOST, cpuid, rounds) {
            Ok(runs) => runs.iter().for_each(print_run),
            Err(e) => kprintln!("floor failed: {e}"),
        }
    }

    fn print_run(run: &BareRun) {
        kprintln!(
            "floor {} {} cycles {} (other exits {})",
            run.exit.name(),
            run.rounds,
            run.cycles,
            run.other_exits
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_items_in_order() {
        assert_eq!(parse("cpu-loop").unwrap(), [Bench::CpuLoop]);
        assert_eq!(
            parse("cpu-loop,floor").unwrap(),
            [
                Bench::CpuLoop,
                Bench::Floor {
                    rounds: FLOOR_ROUNDS
                }
            ]
        );
        assert_eq!(
            parse("floor:3000, cpu-loop").unwrap(),
            [Bench::Floor { rounds: 3000 }, Bench::CpuLoop]
        );
        assert_eq!(parse("").unwrap(), []);
    }

    #[test]
    fn rejects_unknown_items_and_bad_counts() {
        assert_eq!(
            parse("cpu-loop,flor"),
            Err(BenchArgError::Unknown("flor".into()))
        );
        assert_eq!(parse("floor:0"), Err(BenchArgError::BadRounds("0".into())));
        assert_eq!(
            parse("floor:many"),
            Err(BenchArgError::BadRounds("many".into()))
        );
        assert_eq!(
            parse("cpu-loop:5"),
            Err(BenchArgError::Unknown("cpu-loop:5".into()))
        );
        assert!(
            BenchArgError::Unknown("x".into())
                .to_string()
                .contains("floor:<rounds>")
        );
    }
}
