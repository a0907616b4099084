//! `vm-bench`: VM-exit round trips and CPU-bound speed of a guest, against the host kernel,
//! in one boot per backend.
//!
//! ```text
//! cargo run --release -p keel-qemu-tests --bin vm-bench -- [--only svm,vmx]
//! ```
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

struct Figures {
    backend: &'static str,
    tsc_hz: f64,
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

fn measure(m: &mut Machine, backend: &'static str, module: &str, timeout: Duration) -> Figures {
    let (_, banner_done) = number(m, r"boot time: +(\d+) ms from kernel entry", timeout);
    let (host_loop, host_done) = number(m, r"host cpu-loop 50000000 cycles (\d+)", timeout);
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
        cpuid_cycles,
        out_cycles,
        guest_loop,
        host_loop,
        wall: [t1 - started, t2 - t1, t3 - t2, host_done - banner_done],
    }
}

fn svm() -> Figures {
    let a = artifacts();
    let set = guests::build_guests().expect("building the guests");
    let mut m = Qemu::pvh(&a.elf)
        .args([
            "-initrd".into(),
            set.path(guests::BENCH).display().to_string(),
        ])
        .append("keel.bench=cpu-loop")
        .spawn()
        .expect("starting QEMU");
    measure(
        &mut m,
        "AMD-V (QEMU 7.2 TCG)",
        "0",
        Duration::from_secs(120),
    )
}

fn vmx() -> Figures {
    let set = guests::build_guests().expect("building the guests");
    let opts = keel_image::BuildOptions {
        quiet: true,
        modules: vec![set.path(guests::BENCH)],
        cmdline: "keel.bench=cpu-loop".into(),
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

fn print(f: &Figures) {
    let per_sec = |cycles: f64| 100_000.0 / (cycles / f.tsc_hz);
    let [cpuid, out, guest, host] = f.wall;
    println!("{}", f.backend);
    println!("  by wall clock (when each line reached the harness):");
    println!("    CPUID exit round trips  {:>12.0} /s", 100_000.0 / cpuid);
    println!("    OUT exit round trips    {:>12.0} /s", 100_000.0 / out);
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

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut only = vec!["svm".to_owned(), "vmx".to_owned()];
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--only", Some(list)) => only = list.split(',').map(str::to_owned).collect(),
            _ => {
                eprintln!("usage: vm-bench [--only svm,vmx]");
                return ExitCode::from(2);
            }
        }
    }
    for backend in &only {
        let figures = match backend.as_str() {
            "svm" => svm(),
            "vmx" => vmx(),
            other => {
                eprintln!("unknown backend '{other}' (svm, vmx)");
                return ExitCode::from(2);
            }
        };
        print(&figures);
    }
    ExitCode::SUCCESS
}
