//! The VM test suite both backends must pass: each function takes a freshly booted machine
//! (banner read, prompt shown) whose `keel.img` carries the test guests as boot modules.
//! `vms.rs` runs it on AMD-V under QEMU, `vms_vtx.rs` on VT-x under Bochs; a difference
//! between the two is a bug unless the hardware differs.

use std::time::Duration;

use keel_qemu_tests::{Machine, Pattern, check};

/// The number after `kind=` in a `vm list` exits line for VM `id`.
pub fn exit_count(list: &str, id: u32, kind: &str) -> Option<u64> {
    let mut lines = list
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&format!("{id} ")));
    lines.next()?;
    let exits = lines.next()?;
    exits
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{kind}="))?.parse().ok())
}

/// Whether VM `id`'s row in a `vm list` ends in exactly `state` (the last column, after the
/// uptime).
pub fn has_state(list: &str, id: u32, state: &str) -> bool {
    list.lines()
        .find(|l| l.trim_start().starts_with(&format!("{id} ")))
        .is_some_and(|row| row.trim_end().ends_with(&format!("  {state}")))
}

pub fn modules_lists_the_guests(mut m: Machine) {
    let out = m.command("modules");
    for name in [
        "hello.bin",
        "exits.bin",
        "hostile-triple.bin",
        "counter.bin",
    ] {
        check!(
            m,
            out.contains(name),
            "'modules' does not list {name}:\n{out}"
        );
    }
    check!(
        m,
        out.contains(" bytes"),
        "'modules' shows no sizes:\n{out}"
    );
}

pub fn hello_prints_through_com1_and_halts(mut m: Machine) {
    m.type_line("vm run hello.bin");
    m.expect("vm 1 started");
    m.expect("[vm1] hello from a Keel guest");
    m.expect("vm 1 stopped: guest halted with interrupts disabled");
    m.expect_prompt();
    let list = m.command("vm list");
    check!(
        m,
        list.contains("stopped: guest halted with interrupts disabled"),
        "vm list:\n{list}"
    );
    check!(
        m,
        exit_count(&list, 1, "hlt") == Some(1),
        "expected one HLT exit:\n{list}"
    );
    let outs = exit_count(&list, 1, "io-out").unwrap_or(0);
    check!(
        m,
        outs >= 24,
        "expected an OUT exit per character, got {outs}:\n{list}"
    );
    let log = m.command("vm log 1");
    check!(
        m,
        log.contains("hello from a Keel guest"),
        "vm log 1:\n{log}"
    );
}

pub fn exits_guest_passes_every_check_in_long_mode(mut m: Machine) {
    m.type_line("vm run exits.bin");
    m.expect("[vm1] exits guest: in long mode, running checks");
    let summary = m.expect(Pattern::regex(
        r"\[vm1\] exits guest: (all \d+ checks passed|\d+ of \d+ checks failed)",
    ));
    let text = String::from_utf8_lossy(&m.transcript()).into_owned();
    let fails: Vec<&str> = text.lines().filter(|l| l.contains("[vm1] FAIL")).collect();
    check!(
        m,
        summary.group(1).starts_with("all 9 checks passed"),
        "summary '{}', failures: {fails:#?}",
        summary.group(1)
    );
    for check in [
        "cpuid-hypervisor-bit",
        "cpuid-signature",
        "cpuid-no-vmx",
        "cpuid-no-svm",
        "msr-allowed",
        "msr-unknown-gp",
        "io-unclaimed",
        "mmio-unbacked",
        "vmmcall-ud",
    ] {
        check!(
            m,
            text.contains(&format!("[vm1] PASS {check}")),
            "no PASS line for {check}"
        );
    }
    m.expect("vm 1 stopped: guest halted with interrupts disabled");
    m.expect_prompt();
    let list = m.command("vm list");
    for kind in [
        "cpuid",
        "msr",
        "injected",
        "mmio-read",
        "mmio-write",
        "io-in",
    ] {
        let n = exit_count(&list, 1, kind).unwrap_or(0);
        check!(m, n > 0, "expected {kind} exits to be counted:\n{list}");
    }
}

pub fn hostile_guests_stop_alone_while_the_host_and_another_vm_go_on(mut m: Machine) {
    m.type_line("vm run counter.bin");
    m.expect("[vm1] tick 0");

    m.type_line("vm run hostile-triple.bin");
    m.expect("vm 2 stopped: guest triple-faulted (shutdown)");

    m.type_line("vm run hostile-spin.bin");
    m.expect("[vm3] spinning");

    // A tick printed before the last two hostile guests start, and one printed after both
    // have stopped: the counter must have gone on across their whole lives.
    let tick = Pattern::regex(r"\[vm1\] tick (\d+)\r?\n");
    let before_hostile: u64 = m.expect(tick.clone()).group(1).parse().unwrap();

    // Reads beyond RAM give all ones and the write is dropped; the guest goes on, then halts
    // with interrupts disabled (HALT_FOREVER), which stops it.
    m.type_line("vm run hostile-memory.bin");
    m.expect("[vm4] touching memory beyond RAM");
    m.expect("[vm4] read 0xffffffff");
    m.expect("[vm4] read 0xffffffff");
    m.expect("[vm4] still alive");
    m.expect("vm 4 stopped: guest halted with interrupts disabled");

    // VMRUN and VMMCALL raise #UD in the guest (injected on AMD-V, native on VT-x), its own
    // handler skips them, then it halts with interrupts disabled.
    m.type_line("vm run hostile-vmrun.bin");
    m.expect("[vm5] caught #UD");
    m.expect("[vm5] caught #UD");
    m.expect("[vm5] survived VMRUN and VMMCALL");
    m.expect("vm 5 stopped: guest halted with interrupts disabled");

    let after_hostile: u64 = m.expect(tick.clone()).group(1).parse().unwrap();
    check!(
        m,
        after_hostile > before_hostile,
        "the counter did not go on while hostile-memory and hostile-vmrun ran: \
         tick {before_hostile} before them, tick {after_hostile} after"
    );

    // The prompt answers while vm3 spins without a single exit of its own. (Guest lines
    // arrive asynchronously, so wait for the command's own output, not for the next prompt.)
    m.type_line("version");
    m.expect("built with rustc");

    // The counter keeps counting.
    let n: u64 = m.expect(tick.clone()).group(1).parse().unwrap();
    let later: u64 = m.expect(tick).group(1).parse().unwrap();
    check!(m, later > n, "counter stalled at {n}");

    // Quiet the console: stop the counter (its notice comes asynchronously), leaving only
    // the silent spinner running.
    m.type_line("vm stop 1 force");
    m.expect("vm 1 stopped: stopped by the operator");
    m.expect_prompt();
    let list = m.command("vm list");
    // Every hostile guest's exact outcome: the triple fault and the two halted guests
    // stopped, each with its reason; the spinner still runs (checked below). The counter ran
    // until the operator stopped it.
    for (id, state) in [
        (1, "stopped: stopped by the operator"),
        (2, "stopped: guest triple-faulted (shutdown)"),
        (4, "stopped: guest halted with interrupts disabled"),
        (5, "stopped: guest halted with interrupts disabled"),
    ] {
        check!(
            m,
            has_state(&list, id, state),
            "vm {id} should be '{state}':\n{list}"
        );
    }
    let preemptions = exit_count(&list, 3, "interrupt").unwrap_or(0);
    check!(
        m,
        preemptions > 0,
        "the spinning VM was never preempted:\n{list}"
    );
    check!(
        m,
        has_state(&list, 3, "running"),
        "vm 3 (the spinner) should still run:\n{list}"
    );

    m.type_line("vm stop 3 force");
    m.expect("vm 3 stopped: stopped by the operator");
    m.expect_prompt();
    let list = m.command("vm list");
    check!(
        m,
        has_state(&list, 3, "stopped: stopped by the operator"),
        "vm list:\n{list}"
    );

    // Power-off still works with a VM running (Bochs ends with status 1 even on a clean ACPI
    // power-off, so the exit itself is the check here; the boot tests check QEMU's status).
    m.type_line("poweroff");
    m.expect("powering off...");
    m.expect_exit(Duration::from_secs(30));
}

pub fn two_vms_on_one_cpu_both_finish(mut m: Machine) {
    m.type_line("vm run exits.bin");
    m.expect("vm 1 started");
    m.type_line("vm run exits.bin");
    m.expect("vm 2 started");
    for _ in 0..2 {
        m.expect(Pattern::regex(
            r"vm [12] stopped: guest halted with interrupts disabled",
        ));
    }
    let text = String::from_utf8_lossy(&m.transcript()).into_owned();
    for id in [1, 2] {
        let line = format!("[vm{id}] exits guest: all 9 checks passed");
        check!(m, text.contains(&line), "missing '{line}'");
    }
}

pub fn bad_vm_commands_get_clear_errors_and_change_nothing(mut m: Machine) {
    let cases = [
        ("vm list", "no VMs"),
        (
            "vm run nosuch.bin",
            "error: no boot module 'nosuch.bin': see 'modules'",
        ),
        ("vm run 99", "error: no boot module '99'"),
        ("vm run hello.bin mem=3", "bad argument 'mem=3'"),
        ("vm run hello.bin size=4", "does not take 'size=4'"),
        ("vm stop 42", "error: no VM named '42': see 'vm list'"),
        ("vm log X", "bad argument 'X'"),
        (
            "vm info nosuch",
            "error: no VM named 'nosuch': see 'vm list'",
        ),
        ("vm start nosuch", "error: no VM named 'nosuch'"),
        ("vm console 7", "error: no VM named '7'"),
        ("vm frob", "bad argument 'frob'"),
        ("vm", "usage: vm list"),
    ];
    for (line, expected) in cases {
        let out = m.command(line);
        check!(
            m,
            out.contains(expected),
            "'{line}' printed {out:?}, expected {expected:?}"
        );
    }
    let list = m.command("vm list");
    check!(
        m,
        list.contains("no VMs"),
        "bad commands created a VM:\n{list}"
    );
}

pub fn pvh_kernel_gets_its_start_info_timer_interrupts_and_powers_off(mut m: Machine) {
    m.type_line(r#"vm run pvh.elf cmdline="pvh test line" mem=32"#);
    m.expect("vm 1 started");
    m.expect("[vm1] pvh guest: start info magic ok, version 1");
    m.expect(r#"[vm1] pvh guest: cmdline "pvh test line""#);
    // No initrd: no modules; the memory map is the e820 map's three ranges.
    m.expect("[vm1] pvh guest: modules 0x00000000, memory map entries 0x00000003");
    m.expect(r#"[vm1] pvh guest: rsdp "RSD PTR ""#);
    // The guest halts with interrupts on between ticks: each tick must wake it.
    m.expect_within(
        "[vm1] pvh guest: 10 timer interrupts while halted",
        Duration::from_secs(120),
    );
    m.expect("[vm1] pvh guest: powering off");
    m.expect("vm 1 stopped: guest powered off");
    m.expect_prompt();
    let list = m.command("vm list");
    let injected = exit_count(&list, 1, "irq-injected").unwrap_or(0);
    check!(
        m,
        injected >= 10,
        "expected at least 10 injected interrupts, got {injected}:\n{list}"
    );
    // Most ticks end a HLT (one may land between STI and HLT, where the guest takes it
    // without halting).
    check!(
        m,
        exit_count(&list, 1, "hlt").unwrap_or(0) >= 5,
        "expected the ticks to wake a halted guest:\n{list}"
    );
}

pub fn smp_guest_starts_its_aps_and_sends_them_ipis(mut m: Machine) {
    m.type_line("vm run smp.elf mem=32 vcpus=4");
    m.expect("vm 1 started");
    m.expect("[vm1] smp guest: madt cpus=4");
    m.expect("[vm1] smp guest: bsp apic id 0");
    // The APs come up in any order: collect them up to the BSP's count.
    // Each AP reports `what` (in any order) before the BSP's `summary` line.
    let mut every_ap = |summary: &str, what: &str, timeout: u64| {
        let seen = m.expect_within(
            format!("[vm1] smp guest: {summary}"),
            Duration::from_secs(timeout),
        );
        for ap in 1..=3 {
            check!(
                m,
                seen.before
                    .contains(&format!("[vm1] smp guest: ap {ap} {what}")),
                "AP {ap} did not report '{what}' before '{summary}':\n{}",
                seen.before
            );
        }
    };
    every_ap("4 cpus up", "up", 120);
    every_ap("ipis delivered to 3 aps", "got ipi", 60);
    // An NMI to all but self: each AP takes it, halted or not.
    every_ap("nmis delivered to 3 aps", "got nmi", 60);
    m.expect("[vm1] smp guest: done");
    m.expect("vm 1 stopped: guest powered off");
    m.expect_prompt();
    let info = m.command("vm info 1");
    check!(
        m,
        info.contains("vcpus:      4") && info.contains("nmi-injected") && !info.contains("FAIL"),
        "vm info after the SMP guest:\n{info}"
    );
    // With one vCPU the same guest finds one CPU and starts nothing.
    m.type_line("vm run smp.elf mem=32");
    m.expect("vm 2 started");
    m.expect("[vm2] smp guest: madt cpus=1");
    m.expect("[vm2] smp guest: 1 cpus up");
    m.expect("[vm2] smp guest: nmis delivered to 0 aps");
    m.expect("[vm2] smp guest: done");
    m.expect("vm 2 stopped: guest powered off");
}

/// The tick lines of the counter guest in `stream` (its console output), if they are exactly
/// `tick 0`, `tick 1`, … with no gap or repeat (the last line may be cut short): the last
/// whole tick.
fn consecutive_ticks(stream: &str) -> Option<u64> {
    let mut last = None;
    let mut lines = stream.split('\n').peekable();
    while let Some(line) = lines.next() {
        let want = format!("tick {}", last.map_or(0, |n: u64| n + 1));
        if lines.peek().is_none() && line != want {
            // The line being printed: a prefix of the next tick, or nothing.
            return want.starts_with(line).then_some(last).flatten();
        }
        if line != want {
            return None;
        }
        last = Some(last.map_or(0, |n| n + 1));
    }
    last
}

/// `vm log <id>`'s output (trimmed: whether the guest's output ended in a newline is lost).
fn vm_log(m: &mut Machine, id: u32) -> String {
    m.command(&format!("vm log {id}")).replace('\r', "")
}

pub fn counter_pauses_saves_and_restores_without_a_gap(mut m: Machine) {
    m.type_line("vm run counter.bin");
    m.expect("[vm1] tick 3");
    m.type_line("vm pause 1");
    m.expect("vm 1 paused");
    m.expect_prompt();
    // Paused: not one more line.
    let quiet = m.wait_for(Pattern::regex(r"\[vm1\] tick"), Duration::from_secs(3));
    check!(m, quiet.is_err(), "a paused VM printed: {quiet:?}");
    let list = m.command("vm list");
    check!(
        m,
        list.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("paused")),
        "vm list does not show VM 1 paused:\n{list}"
    );
    for (command, answer) in [
        (
            "vm pause 1",
            "error: cannot pause VM 1: it is already paused",
        ),
        (
            "vm save 1 Bad",
            "bad argument 'Bad': expected a VM name or number, as 'vm list' shows",
        ),
        (
            "vm restore nothing",
            "error: no saved VM or snapshot named 'nothing': see 'saved ls' and 'vm snapshots'",
        ),
    ] {
        let out = m.command(command);
        check!(m, out.trim() == answer, "{command}: {out:?}");
    }
    let saved = m.command("vm save 1 ticker");
    check!(
        m,
        saved.contains("vm 1 saved as 'ticker': ")
            && saved.contains(" KiB for 16 MiB of RAM and 1 vCPU, in "),
        "vm save: {saved:?}"
    );
    let again = m.command("vm save 1 ticker");
    check!(
        m,
        again.trim()
            == "error: a saved VM named 'ticker' exists: delete it with 'saved rm ticker' or \
                choose another name",
        "saving twice under one name: {again:?}"
    );
    let before = vm_log(&mut m, 1);
    m.type_line("vm stop 1 force");
    m.expect("vm 1 stopped: stopped by the operator");
    m.expect_prompt();
    let ls = m.command("saved ls");
    check!(
        m,
        ls.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>()[..2] == ["ticker", "vm1"]
                && l.split_whitespace().nth(3) == Some("16")
        ),
        "saved ls:\n{ls}"
    );
    let restored = m.command("vm restore ticker");
    check!(
        m,
        restored.contains("vm 2 restored from 'ticker' in ")
            && restored.contains(" ms, paused: 'vm resume 2' runs it"),
        "vm restore: {restored:?}"
    );
    let out = m.command("vm resume 1");
    check!(
        m,
        out.trim() == "error: cannot resume VM 1: it has stopped",
        "{out:?}"
    );
    m.type_line("vm resume 2");
    m.expect("vm 2 resumed");
    // The restored counter goes on from the saved one: its output continues the stream.
    m.expect(Pattern::regex(r"\[vm2\] tick \d+"));
    m.expect(Pattern::regex(r"\[vm2\] tick \d+"));
    m.type_line("vm pause 2");
    m.expect("vm 2 paused");
    m.expect_prompt();
    let after = vm_log(&mut m, 2);
    // The console ends `vm log` with a newline if the guest's output had none, and the
    // command's output is trimmed: the stream went on with or without one.
    let joined = [format!("{before}\n{after}"), format!("{before}{after}")];
    let last = joined
        .iter()
        .find_map(|s| consecutive_ticks(s.trim_end_matches('\n')));
    check!(
        m,
        last.is_some_and(|n| n >= 4),
        "the ticks of VM 1 then VM 2 are not one unbroken count:\n--- vm 1 ---\n{before:?}\n--- \
         vm 2 ---\n{after:?}"
    );
    // While the counter prints, wait for each answer itself rather than the next prompt.
    m.type_line("vm resume 2");
    m.expect("vm 2 resumed");
    m.type_line("vm resume 2");
    m.expect("error: cannot resume VM 2: it is not paused");
    m.type_line("vm stop 2 force");
    m.expect("vm 2 stopped: stopped by the operator");
    m.expect_prompt();
    let rm = m.command("saved rm ticker");
    check!(m, rm.contains("saved VM 'ticker' deleted ("), "{rm:?}");
    let ls = m.command("saved ls");
    check!(m, ls.contains("no saved VMs"), "{ls:?}");
}

/// Declares one `#[test]` per suite function above, each on a fresh machine from `$boot`,
/// so both backends run exactly the same list.
macro_rules! suite_tests {
    ($boot:ident) => {
        #[test]
        fn modules_lists_the_guests() {
            vm_suite::modules_lists_the_guests($boot());
        }

        #[test]
        fn hello_prints_through_com1_and_halts() {
            vm_suite::hello_prints_through_com1_and_halts($boot());
        }

        #[test]
        fn exits_guest_passes_every_check_in_long_mode() {
            vm_suite::exits_guest_passes_every_check_in_long_mode($boot());
        }

        #[test]
        fn hostile_guests_stop_alone_while_the_host_and_another_vm_go_on() {
            vm_suite::hostile_guests_stop_alone_while_the_host_and_another_vm_go_on($boot());
        }

        #[test]
        fn two_vms_on_one_cpu_both_finish() {
            vm_suite::two_vms_on_one_cpu_both_finish($boot());
        }

        #[test]
        fn pvh_kernel_gets_its_start_info_timer_interrupts_and_powers_off() {
            vm_suite::pvh_kernel_gets_its_start_info_timer_interrupts_and_powers_off($boot());
        }

        #[test]
        fn smp_guest_starts_its_aps_and_sends_them_ipis() {
            vm_suite::smp_guest_starts_its_aps_and_sends_them_ipis($boot());
        }

        #[test]
        fn counter_pauses_saves_and_restores_without_a_gap() {
            vm_suite::counter_pauses_saves_and_restores_without_a_gap($boot());
        }

        #[test]
        fn bad_vm_commands_get_clear_errors_and_change_nothing() {
            vm_suite::bad_vm_commands_get_clear_errors_and_change_nothing($boot());
        }
    };
}
pub(crate) use suite_tests;
