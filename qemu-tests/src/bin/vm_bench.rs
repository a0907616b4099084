//! `vm-bench`: VM-exit round trips and CPU-bound speed of a guest, against the host kernel,
//! in one boot per backend.
//!
//! ```text
//! cargo run --release -p keel-qemu-tests --bin vm-bench -- [--only svm,vmx] [--floor-rounds N]
//! ```
//!
//! Each exit kind is measured twice in the same boot: the **floor** (`keel.bench=floor:N`,
//! the kernel's bare backend loop before its prompt: VMRUN/VMRESUME, the exit code read, RIP
//! set, nothing else; `keel_vmm::backend::bare`) and the **full** path (the `bench` guest
//! under `vm run`: exit dispatch, device lookup, completion). The table gives both rates and
//! full/floor.
//!
//! The `bench` guest (qemu-tests/guests/bench.S) times 100,000 CPUID exits, 100,000 `OUT`
//! exits and 50 M rounds of a register-only loop with RDTSC; the kernel runs the identical
//! loop (`keel.bench=cpu-loop`, cpu_loop.S assembled into the kernel) before its prompt. The
//! TSC rate comes from the kernel's `cpus` output. Wall-clock figures come from when each
//! line reached the harness (Bochs' TSC follows its instruction count, not time, so only the
//! wall-clock column means anything there). AMD-V runs under QEMU TCG
//! (`-cpu qemu64,+svm,+npt`, PVH boot, the guest as `-initrd`); VT-x under Bochs
//! (`corei7_skylake_x`, keel.img built with the guests as modules and the bench flag).
//! These are emulators: the figures compare Keel's paths with each other, not with hardware.

use std::process::ExitCode;
use std::time::Duration;

use keel_qemu_tests::{Bochs, Machine, Pattern, Qemu, artifacts, guests};

/// One exit kind's bare round trips: rounds and TSC cycles.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Floor {
    rounds: f64,
    cycles: f64,
}

struct Figures {
    backend: &'static str,
    tsc_hz: f64,
    /// CPUID and OUT.
    floor: [Floor; 2],
    cpuid_cycles: f64,
    out_cycles: f64,
    guest_loop: f64,
    host_loop: f64,
    /// Wall-clock seconds: CPUID phase, OUT phase, guest loop, host loop.
    wall: [f64; 4],
}

/// The number in the first group of `re`, and when its line arrived (seconds since start).
/// The pattern must reach the end of the line, or a number still arriving byte by byte
/// would match cut short.
fn number(m: &mut Machine, re: &str, timeout: Duration) -> (f64, f64) {
    let found = m.expect_within(Pattern::regex(&format!("{re}[^\\n]*\\n")), timeout);
    let n = found
        .group(1)
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {:?}", found.group(1)));
    (n, found.at.as_secs_f64())
}

/// The kernel's `floor <name> <rounds> cycles <n>` line: rounds and cycles.
fn floor_line(m: &mut Machine, name: &str, timeout: Duration) -> (f64, f64) {
    let found = m.expect_within(
        Pattern::regex(&format!(
            r"floor {name} (\d+) cycles (\d+) \(other exits \d+\)[^\n]*\n"
        )),
        timeout,
    );
    let parse = |i: usize| -> f64 {
        found
            .group(i)
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {:?}", found.group(i)))
    };
    (parse(1), parse(2))
}

fn measure(m: &mut Machine, backend: &'static str, module: &str, timeout: Duration) -> Figures {
    let (_, banner_done) = number(m, r"boot time: +(\d+) ms from kernel entry", timeout);
    let (host_loop, host_done) = number(m, r"host cpu-loop 50000000 cycles (\d+)", timeout);
    let (rounds, cycles) = floor_line(m, "cpuid-exits", timeout);
    let cpuid_floor = Floor { rounds, cycles };
    let (rounds, cycles) = floor_line(m, "out-exits", timeout);
    let out_floor = Floor { rounds, cycles };
    m.expect_prompt();
    let cpus = m.command("cpus");
    let mhz: f64 = cpus
        .split("TSC ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no TSC rate in 'cpus':\n{cpus}"));
    m.type_line(&format!("vm run {module}"));
    let (_, started) = number(m, r"vm (\d+) started", timeout);
    let (cpuid_cycles, t1) = number(m, r"bench cpuid-exits 100000 cycles (\d+)", timeout);
    let (out_cycles, t2) = number(m, r"bench out-exits 100000 cycles (\d+)", timeout);
    let (guest_loop, t3) = number(m, r"bench cpu-loop 50000000 cycles (\d+)", timeout);
    m.expect_within("bench done", timeout);
    Figures {
        backend,
        tsc_hz: mhz * 1e6,
        floor: [cpuid_floor, out_floor],
        cpuid_cycles,
        out_cycles,
        guest_loop,
        host_loop,
        wall: [t1 - started, t2 - t1, t3 - t2, host_done - banner_done],
    }
}

/// The kernel's `keel.bench` value: the host CPU loop, then the floor.
fn bench_flag(floor_rounds: u64) -> String {
    format!("keel.bench=cpu-loop,floor:{floor_rounds}")
}

fn svm(floor_rounds: u64) -> Figures {
    let a = artifacts();
    let set = guests::build_guests().expect("building the guests");
    let mut m = Qemu::pvh(&a.elf)
        .args([
            "-initrd".into(),
            set.path(guests::BENCH).display().to_string(),
        ])
        .append(&bench_flag(floor_rounds))
        .spawn()
        .expect("starting QEMU");
    measure(
        &mut m,
        "AMD-V (QEMU 7.2 TCG)",
        "0",
        Duration::from_secs(120),
    )
}

fn vmx(floor_rounds: u64) -> Figures {
    let set = guests::build_guests().expect("building the guests");
    let opts = keel_image::BuildOptions {
        quiet: true,
        modules: vec![set.path(guests::BENCH)],
        cmdline: bench_flag(floor_rounds),
        ..Default::default()
    };
    let built = keel_image::build(&opts).expect("building keel.img with the bench flag");
    let mut m = Bochs::disk(&built.image)
        .defmt_elf(&built.elf)
        .spawn()
        .expect("starting Bochs");
    measure(
        &mut m,
        "VT-x (Bochs 2.7)",
        "bench.bin",
        Duration::from_secs(900),
    )
}

/// Full guest round trips per exit kind (the `bench` guest's count).
const GUEST_ROUNDS: f64 = 100_000.0;

/// Round trips per second from `rounds` taking `cycles` at `tsc_hz`.
fn rate(rounds: f64, cycles: f64, tsc_hz: f64) -> f64 {
    if cycles <= 0.0 {
        return 0.0;
    }
    rounds / (cycles / tsc_hz)
}

/// One row of the floor table: an exit kind's floor and full rates.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Row {
    kind: &'static str,
    floor: f64,
    full: f64,
}

impl Row {
    /// full / floor; 0 when the floor is unknown.
    fn ratio(&self) -> f64 {
        if self.floor > 0.0 {
            self.full / self.floor
        } else {
            0.0
        }
    }

    fn line(&self) -> String {
        format!(
            "    {:<6} {:>12.0} /s {:>12.0} /s {:>8.3}",
            self.kind,
            self.floor,
            self.full,
            self.ratio()
        )
    }
}

/// The floor table's rows (CPUID, OUT), by RDTSC: the floor's host TSC around the bare
/// loop, the full path's guest TSC (the host's plus an offset) around the guest's loop. The
/// kernel's console lines can arrive together, so line arrival times say nothing about the
/// floor; on Bochs, whose TSC follows its instruction count, the ratio is still the ratio of
/// emulated work.
fn floor_rows(f: &Figures) -> [Row; 2] {
    let [cpuid_floor, out_floor] = f.floor;
    [
        Row {
            kind: "CPUID",
            floor: rate(cpuid_floor.rounds, cpuid_floor.cycles, f.tsc_hz),
            full: rate(GUEST_ROUNDS, f.cpuid_cycles, f.tsc_hz),
        },
        Row {
            kind: "OUT",
            floor: rate(out_floor.rounds, out_floor.cycles, f.tsc_hz),
            full: rate(GUEST_ROUNDS, f.out_cycles, f.tsc_hz),
        },
    ]
}

const TABLE_HEADER: &str = "    exit          floor            full   full/floor";

fn print(f: &Figures) {
    let per_sec = |cycles: f64| rate(GUEST_ROUNDS, cycles, f.tsc_hz);
    let [cpuid, out, guest, host] = f.wall;
    println!("{}", f.backend);
    let rows = floor_rows(f);
    println!(
        "  floor (bare VMRUN/VMRESUME loop, {:.0} rounds) vs full (the bench guest under `vm run`):",
        f.floor[0].rounds
    );
    println!("   by RDTSC (TSC {:.0} MHz):", f.tsc_hz / 1e6);
    println!("{TABLE_HEADER}");
    for row in &rows {
        println!("{}", row.line());
    }
    println!("  by wall clock (when each line reached the harness):");
    println!(
        "    CPUID exit round trips  {:>12.0} /s",
        GUEST_ROUNDS / cpuid
    );
    println!(
        "    OUT exit round trips    {:>12.0} /s",
        GUEST_ROUNDS / out
    );
    println!(
        "    CPU loop guest / host   {:>8.2} s / {:.2} s = ratio {:.3}",
        guest,
        host,
        guest / host
    );
    println!(
        "  by the guest's and host's RDTSC (TSC {:.0} MHz):",
        f.tsc_hz / 1e6
    );
    println!(
        "    CPUID exit round trips  {:>12.0} /s",
        per_sec(f.cpuid_cycles)
    );
    println!(
        "    OUT exit round trips    {:>12.0} /s",
        per_sec(f.out_cycles)
    );
    println!(
        "    CPU loop guest / host   {:>8.0} / {:.0} cycles = ratio {:.3}",
        f.guest_loop,
        f.host_loop,
        f.guest_loop / f.host_loop
    );
}

const USAGE: &str = "usage: vm-bench [--only svm,vmx] [--floor-rounds N]";

/// The command line.
#[derive(Debug, PartialEq)]
struct Args {
    only: Vec<String>,
    floor_rounds: u64,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        only: vec!["svm".to_owned(), "vmx".to_owned()],
        floor_rounds: 100_000,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--only", Some(list)) => {
                parsed.only = list.split(',').map(str::to_owned).collect();
                if let Some(bad) = parsed
                    .only
                    .iter()
                    .find(|b| !["svm", "vmx"].contains(&b.as_str()))
                {
                    return Err(format!("unknown backend '{bad}' (svm, vmx)"));
                }
            }
            ("--floor-rounds", Some(n)) => match n.parse::<u64>() {
                Ok(rounds) if rounds > 0 => parsed.floor_rounds = rounds,
                _ => return Err(format!("--floor-rounds needs a positive number, not '{n}'")),
            },
            _ => return Err(USAGE.to_owned()),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    for backend in &args.only {
        let figures = match backend.as_str() {
            "svm" => svm(args.floor_rounds),
            _ => vmx(args.floor_rounds),
        };
        print(&figures);
        // Both rows must be there with real rates, or the run measured nothing.
        let by_tsc = floor_rows(&figures);
        if by_tsc.iter().any(|r| r.floor <= 0.0 || r.full <= 0.0) {
            eprintln!(
                "{}: a floor or full rate is zero: {by_tsc:?}",
                figures.backend
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_default_and_override() {
        assert_eq!(
            parse_args(strings(&[])).unwrap(),
            Args {
                only: strings(&["svm", "vmx"]),
                floor_rounds: 100_000
            }
        );
        assert_eq!(
            parse_args(strings(&["--floor-rounds", "3000", "--only", "vmx"])).unwrap(),
            Args {
                only: strings(&["vmx"]),
                floor_rounds: 3000
            }
        );
    }

    #[test]
    fn args_reject_bad_values() {
        assert!(parse_args(strings(&["--floor-rounds", "0"])).is_err());
        assert!(parse_args(strings(&["--floor-rounds", "x"])).is_err());
        assert!(
            parse_args(strings(&["--only", "svm,kvm"]))
                .unwrap_err()
                .contains("kvm")
        );
        assert_eq!(parse_args(strings(&["--only"])).unwrap_err(), USAGE);
    }

    #[test]
    fn rates_and_ratios() {
        // 100,000 round trips in 2 s of a 1 GHz TSC: 50k/s.
        assert_eq!(rate(100_000.0, 2e9, 1e9), 50_000.0);
        assert_eq!(rate(100_000.0, 0.0, 1e9), 0.0);
        let f = Figures {
            backend: "test",
            tsc_hz: 1e9,
            floor: [
                Floor {
                    rounds: 1000.0,
                    cycles: 1e7,
                },
                Floor {
                    rounds: 1000.0,
                    cycles: 2e7,
                },
            ],
            cpuid_cycles: 2e9,
            out_cycles: 4e9,
            guest_loop: 1.0,
            host_loop: 1.0,
            wall: [2.0, 4.0, 1.0, 1.0],
        };
        let by_tsc = floor_rows(&f);
        assert_eq!(by_tsc[0].floor, 100_000.0);
        assert_eq!(by_tsc[0].full, 50_000.0);
        assert_eq!(by_tsc[0].ratio(), 0.5);
        assert_eq!(by_tsc[1].floor, 50_000.0);
        assert_eq!(by_tsc[1].full, 25_000.0);
        let line = by_tsc[0].line();
        assert!(
            line.contains("CPUID") && line.contains("100000") && line.ends_with("0.500"),
            "{line}"
        );
        let unknown = Row {
            kind: "OUT",
            floor: 0.0,
            full: 1.0,
        };
        assert_eq!(unknown.ratio(), 0.0);
    }
}
