//! `linux-bench`: how long Debian 12's stock kernel takes to reach `/init` under Keel on
//! AMD-V, against the same kernel and initramfs booted by QEMU directly, and the VM's exits
//! by reason.
//!
//! ```text
//! cargo run --release -p keel-qemu-tests --bin linux-bench -- [--only direct,keel] [--vcpus N]
//! ```
//!
//! Both run in QEMU 7.2 TCG with the same CPU model. Direct: `-M pc -cpu qemu64 -m 256 -smp 1
//! -kernel vmlinuz -initrd initramfs.cpio -append <TEST_CMDLINE>`, timed from QEMU's start
//! to the `KEEL-LINUX-INIT` line. Keel: `keel-linux.img` through SeaBIOS and GRUB on `-M pc
//! -cpu qemu64,+svm,+npt -m 1024 -smp 2`, the guest started with `vm run vmlinuz
//! initrd=initramfs.cpio cmdline="<TEST_CMDLINE>" mem=256` (one vCPU), timed from typing that
//! line to `[vm1] KEEL-LINUX-INIT`. `--vcpus N` gives both guests N CPUs (`-smp N` directly,
//! where QEMU runs them on N host threads; `vcpus=N` under Keel, whose vCPUs share the one
//! host CPU that runs the VM). The initramfs is the tests' (`linux_guest::TEST_INIT`).
//! These are emulators: the ratio compares Keel's nested path with TCG's direct one, not with
//! hardware.
//!
//! The two whole-run spans start at different events (QEMU's start includes QEMU, SeaBIOS and
//! the kernel load; 'vm run' excludes the firmware and Keel's boot but includes Keel loading
//! the kernel), so the fair figure is a third span timed from the same event in both: the
//! guest kernel's first console line ([`FIRST_LINE`], printed when `earlyprintk` registers,
//! after decompression) to the `/init` marker. Both spans are printed, labelled.

use std::process::ExitCode;
use std::time::Duration;

use keel_qemu_tests::linux_guest::{
    DONE_MARKER, INIT_MARKER, TEST_CMDLINE, TEST_MEM_MIB, vm_run_line_with_vcpus,
};
use keel_qemu_tests::{LinuxArtifacts, Pattern, Qemu, linux_artifacts};

/// The start of the guest kernel's first console line (`[    0.000000] Linux version …`).
const FIRST_LINE: &str = "] Linux version ";

const DIRECT_TIMEOUT: Duration = Duration::from_secs(300);
const KEEL_TIMEOUT: Duration = Duration::from_secs(900);

/// Seconds to `/init` and to the end of the test script, from each run's own start, and
/// from the guest kernel's first console line to `/init`.
struct Times {
    first_line: f64,
    init: f64,
    done: f64,
}

impl Times {
    /// The span both runs share: the kernel's first console line to `/init`.
    fn kernel_to_init(&self) -> f64 {
        self.init - self.first_line
    }
}

fn direct(a: &LinuxArtifacts, vcpus: u8) -> Result<Times, String> {
    let mut q = Qemu::pvh(&a.guest.kernel)
        .machine("pc")
        .cpu("qemu64")
        .memory_mib(TEST_MEM_MIB)
        .cpus(u32::from(vcpus))
        .append(TEST_CMDLINE)
        .args(["-initrd".to_owned(), a.initramfs.display().to_string()]);
    q.defmt_elf = None;
    let mut m = q.spawn().map_err(|e| e.to_string())?;
    let first_line = m
        .wait_for(FIRST_LINE, DIRECT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let init = m
        .wait_for(INIT_MARKER, DIRECT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let done = m
        .wait_for(DONE_MARKER, DIRECT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    // poweroff -f ends QEMU through ACPI; its exit is not part of the figure.
    let _ = m.wait_exit(Duration::from_secs(30));
    Ok(Times {
        first_line: first_line.at.as_secs_f64(),
        init: init.at.as_secs_f64(),
        done: done.at.as_secs_f64(),
    })
}

/// The Keel run's times and `vm list` after the guest stopped.
fn keel(a: &LinuxArtifacts, vcpus: u8) -> Result<(Times, String, f64), String> {
    let mut m = Qemu::seabios(&a.image)
        .memory_mib(1024)
        .defmt_elf(&a.elf)
        .hard_timeout(KEEL_TIMEOUT + Duration::from_secs(300))
        .spawn()
        .map_err(|e| e.to_string())?;
    let wait = |m: &mut keel_qemu_tests::Machine, p: Pattern, t: Duration| {
        m.wait_for(p, t).map_err(|e| e.to_string())
    };
    wait(
        &mut m,
        Pattern::text(keel_qemu_tests::VERSION_LINE),
        KEEL_TIMEOUT,
    )?;
    wait(&mut m, Pattern::text(keel_qemu_tests::PROMPT), KEEL_TIMEOUT)?;
    let prompt_at = m.elapsed().as_secs_f64();
    let line = vm_run_line_with_vcpus(vcpus);
    let typed = m.elapsed();
    m.send_line(&line).map_err(|e| e.to_string())?;
    let first_line = wait(
        &mut m,
        Pattern::regex(&keel_first_line_regex()),
        KEEL_TIMEOUT,
    )?;
    let init = wait(
        &mut m,
        Pattern::text(format!("[vm1] {INIT_MARKER}")),
        KEEL_TIMEOUT,
    )?;
    let done = wait(
        &mut m,
        Pattern::text(format!("[vm1] {DONE_MARKER}")),
        KEEL_TIMEOUT,
    )?;
    wait(
        &mut m,
        Pattern::regex(r"vm 1 stopped: [^\r\n]*"),
        KEEL_TIMEOUT,
    )?;
    wait(&mut m, Pattern::text(keel_qemu_tests::PROMPT), KEEL_TIMEOUT)?;
    m.send_line("vm list").map_err(|e| e.to_string())?;
    let list = wait(&mut m, Pattern::regex(r"exits:[^\r\n]*\r?\n"), KEEL_TIMEOUT)?;
    let list = format!("{}{}", list.before, list.text);
    // `vm info` has the console line: bytes written and COM1 accesses by kind.
    m.send_line("vm info 1").map_err(|e| e.to_string())?;
    let info = wait(
        &mut m,
        Pattern::regex(r"console:[^\r\n]*\r?\n"),
        KEEL_TIMEOUT,
    )?;
    let list = format!("{list}{}", info.text);
    m.kill();
    let t = typed.as_secs_f64();
    Ok((
        Times {
            first_line: first_line.at.as_secs_f64() - t,
            init: init.at.as_secs_f64() - t,
            done: done.at.as_secs_f64() - t,
        },
        keel_qemu_tests::report::clean(list.as_bytes()),
        prompt_at,
    ))
}

/// The guest kernel's first console line as Keel echoes it (`[vm1] [    0.000000] Linux
/// version …`).
fn keel_first_line_regex() -> String {
    format!(r"\[vm1\] \[[^\]\r\n]*{}", regex::escape(FIRST_LINE))
}

/// The COM1 figures of `vm list`'s `console:` line: bytes written, THR writes, LSR reads,
/// other register accesses.
fn console_counts(list: &str) -> Option<[u64; 4]> {
    let line = list
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("console:"))?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    numbers.try_into().ok()
}

/// `kind=count` pairs of an `exits:` line, largest first.
fn exits(list: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = list
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("exits:"))
        .flat_map(str::split_whitespace)
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut only = vec!["direct".to_owned(), "keel".to_owned()];
    let mut vcpus = 1u8;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--only", Some(list)) => only = list.split(',').map(str::to_owned).collect(),
            ("--vcpus", Some(n)) if n.parse::<u8>().is_ok_and(|n| (1..=8).contains(&n)) => {
                vcpus = n.parse().unwrap_or(1);
            }
            _ => {
                eprintln!("usage: linux-bench [--only direct,keel] [--vcpus 1-8]");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(bad) = only
        .iter()
        .find(|o| !["direct", "keel"].contains(&o.as_str()))
    {
        eprintln!("unknown run '{bad}' (direct, keel)");
        return ExitCode::from(2);
    }
    let a = linux_artifacts();
    println!(
        "Linux guest: {} (Debian {}), initramfs {} bytes, cmdline \"{TEST_CMDLINE}\"",
        a.guest.kernel_package,
        a.guest.kernel_version,
        std::fs::metadata(&a.initramfs).map_or(0, |m| m.len())
    );
    let mut failed = false;
    let mut direct_times = None;
    if only.iter().any(|o| o == "direct") {
        eprintln!("linux-bench: booting Linux directly in QEMU");
        match direct(a, vcpus) {
            Ok(t) => {
                println!(
                    "direct (QEMU TCG -M pc -cpu qemu64 -m 256 -smp {vcpus} -kernel/-initrd):\n  \
                     from QEMU's start (QEMU, SeaBIOS, kernel load and decompression \
                     included): {INIT_MARKER} {:.2} s, {DONE_MARKER} {:.2} s\n  \
                     from the kernel's first console line (after decompression) to \
                     {INIT_MARKER}: {:.2} s (first line {:.2} s after QEMU started)",
                    t.init,
                    t.done,
                    t.kernel_to_init(),
                    t.first_line
                );
                direct_times = Some(t);
            }
            Err(e) => {
                println!("direct: failed: {e}");
                failed = true;
            }
        }
    }
    if only.iter().any(|o| o == "keel") {
        eprintln!("linux-bench: booting Linux under Keel (AMD-V, QEMU TCG)");
        match keel(a, vcpus) {
            Ok((t, list, prompt_at)) => {
                println!(
                    "Keel (QEMU TCG -M pc -cpu qemu64,+svm,+npt, SeaBIOS + GRUB; Keel's prompt \
                     {prompt_at:.2} s after QEMU started; the VM has {vcpus} vCPUs):\n  \
                     from typing 'vm run' (firmware and Keel's boot excluded; Keel's kernel \
                     load and the guest's decompression included): [vm1] {INIT_MARKER} \
                     {:.2} s, [vm1] {DONE_MARKER} {:.2} s\n  \
                     from the kernel's first console line (after decompression) to \
                     {INIT_MARKER}: {:.2} s (first line {:.2} s after 'vm run')",
                    t.init,
                    t.done,
                    t.kernel_to_init(),
                    t.first_line
                );
                if let Some(d) = &direct_times {
                    println!(
                        "ratio Keel / direct, kernel's first console line to {INIT_MARKER} \
                         (the same event in both; the fair figure): {:.2}",
                        t.kernel_to_init() / d.kernel_to_init()
                    );
                    println!(
                        "ratio Keel / direct, each run's own start to {INIT_MARKER} ('vm run' \
                         against QEMU's start; not like for like): {:.2}",
                        t.init / d.init
                    );
                }
                match console_counts(&list) {
                    Some([bytes, thr, lsr, other]) => println!(
                        "guest serial output: {bytes} bytes; COM1 accesses (one exit each): \
                         {thr} THR writes, {lsr} LSR reads, {other} other = {:.2} exits per \
                         byte (the floor for port I/O output is 1: one OUT per byte)",
                        (thr + lsr + other) as f64 / bytes.max(1) as f64
                    ),
                    None => println!("no console counts found in 'vm list':\n{list}"),
                }
                let by_reason = exits(&list);
                if by_reason.is_empty() {
                    println!("no exit counts found in 'vm list':\n{list}");
                } else {
                    // Printed as Keel counts them; some counters (`irq-injected`) count
                    // events rather than exits, so no total is given.
                    println!("VM exit counters by reason, from 'vm list' after power-off:");
                    for (kind, n) in by_reason {
                        println!("  {kind:<20} {n:>12}");
                    }
                }
            }
            Err(e) => {
                println!("Keel: failed: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keel_first_line_pattern_matches_only_the_kernel_banner() {
        let re = regex::Regex::new(&keel_first_line_regex()).unwrap();
        assert!(re.is_match("[vm1] [    0.000000] Linux version 6.1.0-57-amd64 (debian"));
        assert!(!re.is_match("[vm1] KEEL-LINUX-INIT"));
        assert!(!re.is_match("[    0.000000] Linux version 6.1.0"));
        assert!(!re.is_match("[vm1] [    0.0\n] Linux version"));
    }

    #[test]
    fn console_counts_read_vm_info() {
        let info = "  stopped:    guest powered off\r\n  console:    1890 bytes (UART: 1890 THR \
                    writes, 914 LSR reads, 802 other accesses)\r\n  exits:      5 in all\r\n";
        assert_eq!(console_counts(info), Some([1890, 1890, 914, 802]));
        assert_eq!(console_counts("  console:    12 bytes\r\n"), None);
        assert_eq!(console_counts("nothing"), None);
    }
}
