//! The Linux-guest checks both backends must pass: Keel boots Debian 12's stock kernel with
//! the test initramfs (`keel_qemu_tests::linux_guest::TEST_INIT`) from its boot modules, the
//! host console answers while the guest boots, and the guest reports a sane system before it
//! powers off through ACPI. `linux.rs` runs it on AMD-V under QEMU, `linux_vtx.rs` on VT-x
//! under Bochs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_qemu_tests::linux_guest::{
    DONE_MARKER, INIT_MARKER, KERNEL_MODULE, SHELL_INITRAMFS, SHELL_READY_MARKER, TEST_INITRAMFS,
    UPTIME_PREFIX, vm_run_line_with_vcpus, vm_run_shell_line,
};
use keel_qemu_tests::{LinuxArtifacts, Machine, Pattern, check};

/// Per-backend limits.
pub struct Limits {
    /// From `vm run` to the init marker.
    pub boot: Duration,
    /// From the init marker to the power-off notice.
    pub finish: Duration,
    /// How far the guest's clock may be from the host's. QEMU's RTC follows the host clock;
    /// Bochs (`clock: sync=none`) runs its clock by instruction count, so its bound grows
    /// with the time it has run (see `linux_vtx.rs`).
    pub clock: fn(&Machine) -> Duration,
}

/// The guest's lines in `text`: what follows `[vm<id>] ` on each line, trimmed at the end
/// (a redrawn prompt or a carriage return may sit before the prefix).
pub fn guest_lines(text: &str, id: u32) -> Vec<String> {
    let prefix = format!("[vm{id}] ");
    text.lines()
        .filter_map(|l| {
            let at = l.find(&prefix)?;
            Some(l[at + prefix.len()..].trim_end().to_owned())
        })
        .collect()
}

/// The lines between `KEEL-BEGIN <name>` and `KEEL-END <name>`.
pub fn section<'a>(lines: &'a [String], name: &str) -> Option<&'a [String]> {
    let begin = lines
        .iter()
        .position(|l| l == &format!("KEEL-BEGIN {name}"))?;
    let len = lines[begin + 1..]
        .iter()
        .position(|l| l == &format!("KEEL-END {name}"))?;
    Some(&lines[begin + 1..begin + 1 + len])
}

/// The value of the first `KEY=value` line.
pub fn value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

pub fn modules_lists_the_linux_guest(mut m: Machine) {
    let out = m.command("modules");
    for name in [KERNEL_MODULE, TEST_INITRAMFS, SHELL_INITRAMFS] {
        check!(
            m,
            out.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name) && l.ends_with(" bytes")),
            "'modules' does not list {name} with its size:\n{out}"
        );
    }
}

/// Boots the test guest with `vcpus` vCPUs; the guest must see every one of them.
pub fn debian_boots_reports_and_powers_off(
    mut m: Machine,
    a: &LinuxArtifacts,
    limits: Limits,
    vcpus: u8,
) {
    let run = vm_run_line_with_vcpus(vcpus);
    let typed = m.elapsed();
    m.type_line(&run);
    m.expect("vm 1 started");

    // The host console answers while the guest boots. Guest lines may arrive between the
    // command and its output, so wait for the output itself rather than the next prompt.
    m.type_line("version");
    let answered = m.expect("built with rustc");
    check!(
        m,
        !answered.before.contains(INIT_MARKER),
        "the guest reached /init before the host answered: this run shows nothing about the \
         host console during the guest's boot"
    );
    m.type_line("vm list");
    // Booting, the guest runs or waits in HLT for its timer ("running (idle)").
    m.expect(Pattern::regex(&format!(
        r"(?m)^\s*1\s+1\s+vmlinuz\s+256 MiB\s+{vcpus}\s+\S+\s+running.*$"
    )));
    eprintln!(
        "{}: 'version' and 'vm list' answered {:.1} s after 'vm run', while the guest booted",
        m.name(),
        (m.elapsed() - typed).as_secs_f64()
    );

    let init = m.expect_within(format!("[vm1] {INIT_MARKER}"), limits.boot);
    eprintln!(
        "{}: [vm1] {INIT_MARKER} {:.1} s after 'vm run' ({:.1} s after the emulator started)",
        m.name(),
        (init.at - typed).as_secs_f64(),
        init.at.as_secs_f64()
    );
    let done = m.expect_within(format!("[vm1] {DONE_MARKER}"), limits.finish);
    let host_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let lines = guest_lines(&done.before.replace('\r', "\n"), 1);

    let uname = section(&lines, "uname").unwrap_or_default().join("\n");
    let g = &a.guest;
    check!(
        m,
        uname.starts_with("Linux ")
            && uname.contains(&format!(" {} ", g.kernel_release))
            && uname.contains(&format!("Debian {}", g.kernel_version)),
        "uname -a printed {uname:?}; expected Linux {} (Debian {})",
        g.kernel_release,
        g.kernel_version
    );

    let Some(cpuinfo) = section(&lines, "cpuinfo") else {
        m.fail("no cpuinfo section in the guest's output")
    };
    for key in ["vendor_id", "model name"] {
        check!(
            m,
            cpuinfo
                .iter()
                .any(|l| l.starts_with(key) && l.contains(": ")),
            "/proc/cpuinfo has no {key} line:\n{}",
            cpuinfo.join("\n")
        );
    }
    let processors: Vec<&String> = cpuinfo
        .iter()
        .filter(|l| l.starts_with("processor"))
        .collect();
    check!(
        m,
        processors.len() == usize::from(vcpus),
        "{vcpus} vCPUs, and /proc/cpuinfo lists {} processors: {processors:?}",
        processors.len()
    );
    let flags = cpuinfo
        .iter()
        .find(|l| l.starts_with("flags"))
        .cloned()
        .unwrap_or_default();
    check!(
        m,
        flags.split_whitespace().any(|f| f == "hypervisor"),
        "the flags line of /proc/cpuinfo lacks 'hypervisor': {flags:?}"
    );

    let traces = value(&lines, "CALL-TRACES");
    check!(
        m,
        traces == Some("0"),
        "the kernel log holds call traces: CALL-TRACES={traces:?}; dmesg tail:\n{}",
        section(&lines, "dmesg").unwrap_or_default().join("\n")
    );

    // The DSDT's root bridge: Linux scans bus 0 under it, and its AML raises no errors.
    let pci = section(&lines, "pci").unwrap_or_default();
    check!(
        m,
        pci.iter()
            .any(|l| l.contains("PCI host bridge to bus 0000:00")),
        "the guest found no PCI root bridge in the DSDT; its PCI and ACPI lines:\n{}",
        pci.join("\n")
    );
    let acpi_errors: Vec<&String> = pci
        .iter()
        .filter(|l| l.contains("ACPI Error") || l.contains("ACPI BIOS Error") || l.contains("AE_"))
        .collect();
    check!(
        m,
        acpi_errors.is_empty(),
        "the guest's ACPI reports errors: {acpi_errors:#?}"
    );

    let epoch = value(&lines, "GUEST-EPOCH").and_then(|v| v.parse::<u64>().ok());
    let bound = (limits.clock)(&m);
    check!(
        m,
        epoch.is_some_and(|e| e.abs_diff(host_now) <= bound.as_secs()),
        "the guest's clock says {epoch:?}, the host's {host_now} (bound {} s)",
        bound.as_secs()
    );
    check!(
        m,
        section(&lines, "dmesg").is_none(),
        "the guest's own checks failed; dmesg tail:\n{}",
        section(&lines, "dmesg").unwrap_or_default().join("\n")
    );

    m.expect_within("vm 1 stopped: guest powered off", limits.finish);
    m.type_line("vm list");
    m.expect(Pattern::regex(
        r"(?m)^\s*1\s+[^\n]*stopped: guest powered off",
    ));
    m.expect_prompt();
    let version = m.command("version");
    check!(
        m,
        version.contains("built with rustc"),
        "the host console after the guest: {version:?}"
    );
    eprintln!(
        "{}: Linux guest done; {:.1} s from 'vm run' to the power-off notice",
        m.name(),
        (m.elapsed() - typed).as_secs_f64()
    );
}

/// The guest uptimes (seconds) that VM `id` reported in `text`, in order.
pub fn uptimes(text: &str, id: u32) -> Vec<f64> {
    guest_lines(&text.replace('\r', "\n"), id)
        .iter()
        .filter_map(|l| {
            l.strip_prefix(UPTIME_PREFIX)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Types `line` into the shell of VM `id` (attaching the console and detaching after) and
/// waits for `answer` in its output.
fn in_guest_shell(m: &mut Machine, id: u32, line: &str, answer: &str) {
    m.type_line(&format!("vm console {id}"));
    m.expect(format!("[attached to {id}: Ctrl-] detaches]"));
    m.type_line(line);
    m.expect(answer);
    m.send("\x1d").unwrap();
    m.expect(format!("[detached from {id}]"));
    m.expect_prompt();
}

/// The shell guest runs, is paused (its clock lines stop), saved, stopped, restored into a
/// new VM from the saved bytes and resumed: its shell answers and its clock goes on from
/// where it was saved, without the time it spent saved.
pub fn debian_survives_pause_save_and_restore(mut m: Machine, limits: Limits) {
    m.type_line(&vm_run_shell_line());
    m.expect("vm 1 started");
    m.expect_within(format!("[vm1] {SHELL_READY_MARKER}"), limits.boot);
    m.expect(format!("[vm1] {UPTIME_PREFIX}"));
    m.expect(format!("[vm1] {UPTIME_PREFIX}"));
    in_guest_shell(&mut m, 1, "echo before-$((6*7))", "before-42");
    m.expect(format!("[vm1] {UPTIME_PREFIX}"));

    m.type_line("vm pause 1");
    m.expect("vm 1 paused");
    m.expect_prompt();
    let paused_at = m.elapsed();
    let quiet = m.wait_for(
        Pattern::text(format!("[vm1] {UPTIME_PREFIX}")),
        Duration::from_secs(3),
    );
    check!(m, quiet.is_err(), "the paused guest printed: {quiet:?}");
    let saved = m.command("vm save 1 linux");
    check!(
        m,
        saved.contains("vm 1 saved as 'linux': ")
            && saved.contains(" for 256 MiB of RAM and 1 vCPU, in "),
        "vm save: {saved:?}"
    );
    eprintln!("{}: {}", m.name(), saved.trim());
    m.type_line("vm stop 1 force");
    m.expect("vm 1 stopped: stopped by the operator");
    m.expect_prompt();
    // The saved bytes wait a while: the restored guest must not count this time.
    std::thread::sleep(Duration::from_secs(5));
    let restored = m.command("vm restore linux");
    check!(
        m,
        restored.contains("vm 2 restored from 'linux' in "),
        "vm restore: {restored:?}"
    );
    eprintln!("{}: {}", m.name(), restored.trim());
    m.type_line("vm resume 2");
    m.expect("vm 2 resumed");
    let paused_for = m.elapsed() - paused_at;
    m.expect(format!("[vm2] {UPTIME_PREFIX}"));
    m.expect(format!("[vm2] {UPTIME_PREFIX}"));
    in_guest_shell(&mut m, 2, "echo after-$((6*7)); uname -r", "after-42");

    let text = m.transcript_text();
    let (before, after) = (uptimes(&text, 1), uptimes(&text, 2));
    let (Some(&last), Some(&first)) = (before.last(), after.first()) else {
        m.fail(format!(
            "no uptime lines around the pause: {before:?} then {after:?}"
        ))
    };
    eprintln!(
        "{}: guest uptime {last} s before the pause, {first} s after the resume, {:.1} s of \
         host time later",
        m.name(),
        paused_for.as_secs_f64()
    );
    // One line per second of guest time: across the pause and restore (which took
    // `paused_for` of host time) the guest's clock moved on by about a second, not by the
    // pause.
    check!(
        m,
        first > last && first - last < 3.0,
        "the guest's clock jumped across pause, save and restore ({:.1} s of host time): \
         uptime {last} before, {first} after",
        paused_for.as_secs_f64()
    );
    check!(
        m,
        after.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] < 3.0),
        "the restored guest's clock does not tick by the second: {after:?}"
    );
    m.type_line("vm stop 2 force");
    m.expect("vm 2 stopped: stopped by the operator");
}

/// Declares one `#[test]` per check above, each on a fresh machine from `$boot`.
macro_rules! suite_tests {
    ($boot:ident, $limits:expr) => {
        #[test]
        fn modules_lists_the_linux_guest() {
            linux_suite::modules_lists_the_linux_guest($boot());
        }

        #[test]
        fn debian_boots_reports_and_powers_off() {
            let a = keel_qemu_tests::linux_artifacts();
            linux_suite::debian_boots_reports_and_powers_off($boot(), a, $limits, 1);
        }

        /// The same guest with two vCPUs: the application processor comes up (INIT and
        /// start-up IPIs), and both CPUs take interrupts and IPIs until the power-off.
        #[test]
        fn debian_boots_on_two_vcpus() {
            let a = keel_qemu_tests::linux_artifacts();
            linux_suite::debian_boots_reports_and_powers_off($boot(), a, $limits, 2);
        }

        /// Pause, save to bytes, stop, restore from the bytes and resume a running Linux.
        #[test]
        fn debian_survives_pause_save_and_restore() {
            linux_suite::debian_survives_pause_save_and_restore($boot(), $limits);
        }
    };
}
pub(crate) use suite_tests;

#[cfg(test)]
mod parsing {
    use super::*;

    #[test]
    fn guest_output_is_parsed() {
        let text = "keel> [vm1] KEEL-BEGIN uname\r\n[vm1] Linux x 6.1.0-28-amd64 #1\r\nkeel> \r[vm1] KEEL-END uname\n[vm2] CALL-TRACES=3\n[vm1] CALL-TRACES=0\n";
        let lines = guest_lines(text, 1);
        assert_eq!(
            section(&lines, "uname").unwrap(),
            ["Linux x 6.1.0-28-amd64 #1".to_owned()]
        );
        assert_eq!(value(&lines, "CALL-TRACES"), Some("0"));
        assert_eq!(section(&lines, "cpuinfo"), None);
    }
}
