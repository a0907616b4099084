//! The kernel ELF booted by QEMU `-kernel` (PVH entry) on the AMD-V CPU model: the banner and
//! every console command.

use std::time::Duration;

use keel_qemu_tests::{Machine, Qemu, artifacts, check, first_number};

fn boot() -> Machine {
    Qemu::pvh(&artifacts().elf).spawn().unwrap()
}

/// Boots and waits for the first prompt.
fn boot_to_prompt() -> Machine {
    let mut m = boot();
    m.expect_banner();
    m
}

#[test]
fn banner_describes_the_machine() {
    let mut m = boot();
    let b = m.expect_banner();
    let show = |label: &str| format!("{label}: {:?}\nbanner:\n{}", b.field(label), b.text);

    check!(
        m,
        b.field("boot path") == Some("PVH"),
        "{}",
        show("boot path")
    );
    check!(
        m,
        b.field("cpu").is_some_and(|c| c.contains("AuthenticAMD")),
        "{}",
        show("cpu")
    );
    check!(
        m,
        b.field("virtualization")
            .is_some_and(|v| v.starts_with("AMD-V with NPT")),
        "{}",
        show("virtualization")
    );
    let memory = b.field("memory").unwrap_or("");
    check!(
        m,
        memory.contains("MiB")
            && b.number("memory")
                .is_some_and(|n| (900..=1024).contains(&n)),
        "expected 900..=1024 MiB with -m 1024; {}",
        show("memory")
    );
    check!(m, b.number("cpus") == Some(2), "{}", show("cpus"));
    check!(
        m,
        b.number("boot time").is_some() && b.field("boot time").is_some_and(|t| t.contains("ms")),
        "{}",
        show("boot time")
    );
}

#[test]
fn version_names_the_release_and_toolchain() {
    let mut m = boot_to_prompt();
    let out = m.command("version");
    let mut lines = out.lines();
    check!(
        m,
        lines.next() == Some("Keel 0.1.0"),
        "version printed {out:?}"
    );
    let built = lines.next().unwrap_or("");
    check!(
        m,
        built.starts_with("  built with rustc 1.95.0") && built.contains("x86_64-unknown-none"),
        "second line of version: {built:?}"
    );
}

#[test]
fn help_lists_every_command() {
    let mut m = boot_to_prompt();
    let out = m.command("help");
    for cmd in ["help", "version", "mem", "cpus", "reboot", "poweroff"] {
        let described = out.lines().any(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(cmd) && words.next().is_some()
        });
        check!(
            m,
            described,
            "no line with `{cmd}` and a description in help:\n{out}"
        );
    }
}

#[test]
fn mem_reports_totals_and_heap() {
    let mut m = boot();
    let banner = m.expect_banner();
    let usable = banner.number("memory").unwrap_or(0);
    let out = m.command("mem");
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    };
    for prefix in ["  total: ", "  used: ", "  free: ", "  heap: "] {
        check!(
            m,
            line(prefix).is_some(),
            "no line starting {prefix:?} in mem:\n{out}"
        );
    }
    let total = line("  total: ").unwrap_or_default();
    let total_mib = first_number(&total).unwrap_or(0);
    check!(
        m,
        total.contains("MiB")
            && (900..=1024).contains(&total_mib)
            && total_mib.abs_diff(usable) <= 64,
        "total {total:?} does not match the banner's {usable} MiB usable"
    );
    for prefix in ["  used: ", "  free: "] {
        let l = line(prefix).unwrap_or_default();
        check!(
            m,
            l.contains("MiB") || l.contains("KiB"),
            "{l:?} has no unit"
        );
    }
    let heap = regex::Regex::new(r"heap:\s+(\d+) KiB, (\d+) KiB used, (\d+) KiB free").unwrap();
    let caps = heap.captures(&out);
    check!(
        m,
        caps.is_some(),
        "heap line does not read `heap: N KiB, N KiB used, N KiB free`:\n{out}"
    );
    if let Some(caps) = caps {
        let n = |i: usize| -> u64 { caps[i].parse().unwrap_or(0) };
        let (size, used, free) = (n(1), n(2), n(3));
        check!(
            m,
            size > 0 && used <= size && free <= size && (used + free).abs_diff(size) <= 1,
            "heap figures do not add up: {size} KiB = {used} used + {free} free?"
        );
    }
}

#[test]
fn cpus_lists_the_madt() {
    let mut m = boot_to_prompt();
    let out = m.command("cpus");
    let mut lines = out.lines();
    let first = lines.next().unwrap_or("");
    check!(
        m,
        first == "2 CPUs (ACPI MADT)",
        "first line of cpus: {first:?}"
    );
    // The CPU table ends at its `online:` summary; the vCPU load table follows.
    let apic_lines = lines
        .take_while(|l| !l.trim_start().starts_with("online:"))
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with(|c: char| c.is_ascii_digit())
        })
        .count();
    check!(
        m,
        apic_lines == 2,
        "expected one line per CPU with its APIC id:\n{out}"
    );
}

#[test]
fn cpus_follow_smp() {
    let mut m = Qemu::pvh(&artifacts().elf).cpus(4).spawn().unwrap();
    let b = m.expect_banner();
    check!(
        m,
        b.number("cpus") == Some(4),
        "banner cpus: {:?}",
        b.field("cpus")
    );
    let out = m.command("cpus");
    check!(
        m,
        out.starts_with("4 CPUs (ACPI MADT)"),
        "cpus printed:\n{out}"
    );
}

#[test]
fn unknown_command_is_named() {
    let mut m = boot_to_prompt();
    let out = m.command("foo");
    check!(
        m,
        out.trim_end() == "unknown command 'foo': type 'help' for the list of commands",
        "foo printed {out:?}"
    );
}

#[test]
fn poweroff_ends_qemu() {
    let mut m = boot_to_prompt();
    m.type_line("poweroff");
    m.expect("powering off...");
    let status = m.expect_exit(Duration::from_secs(10));
    check!(m, status.success(), "QEMU exited with {status}");
}

#[test]
fn without_svm_virtualization_is_none() {
    let mut m = Qemu::pvh(&artifacts().elf)
        .cpu("qemu64,-svm")
        .spawn()
        .unwrap();
    let b = m.expect_banner();
    check!(
        m,
        b.field("virtualization")
            .is_some_and(|v| v.starts_with("none")),
        "virtualization: {:?}",
        b.field("virtualization")
    );
    // The management plane still works.
    let out = m.command("version");
    check!(m, out.starts_with("Keel 0.1.0"), "version printed {out:?}");
}
