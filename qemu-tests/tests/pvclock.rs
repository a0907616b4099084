//! kvm-clock for Linux guests on AMD-V under QEMU TCG (`-cpu qemu64,+svm,+npt`): one Keel
//! machine (`keel-linux.img`, see `linux_artifacts`) runs the Debian shell guest twice — with
//! `paravirt=none`, where Linux must not use kvm-clock, and with the default
//! (`cpuid.paravirt = "kvm"`), where its clocksource is `kvm-clock` and its wall clock keeps
//! to the VM's RTC across a span of guest time.
//!
//! The guest reads both clocks in one shell line: `date +%s` (the system clock, which
//! kvm-clock drives) and `/sys/class/rtc/rtc0/since_epoch` (the emulated MC146818, read
//! through its ports), then again after `sleep`. Both are whole seconds, so without drift
//! their differences agree within 1 s. The test uses a 15 s span to stay cheap;
//! `kvm_clock_keeps_to_the_rtc_for_60_s` (ignored, run by hand) is the issue's 60 s.

use std::time::Duration;

use keel_qemu_tests::linux_guest::{
    KERNEL_MODULE, SHELL_INITRAMFS, SHELL_READY_MARKER, TEST_CMDLINE, TEST_MEM_MIB, UPTIME_PREFIX,
};
use keel_qemu_tests::{Machine, Pattern, Qemu, check, linux_artifacts};

/// Boot to the guest's shell (the Linux tests allow this much under a busy machine).
const GUEST_BOOT: Duration = Duration::from_secs(480);

fn boot() -> Machine {
    let a = linux_artifacts();
    let mut m = Qemu::seabios(&a.image)
        .memory_mib(1024)
        .defmt_elf(&a.elf)
        .hard_timeout(Duration::from_secs(900))
        .spawn()
        .unwrap();
    m.expect_banner();
    m
}

/// Starts the shell guest as VM `id` with `extra` options on `vm run`, and waits until its
/// shell runs (two clock lines after the ready marker, as the Linux suite does).
fn run_shell_guest(m: &mut Machine, id: u32, extra: &str) {
    m.type_line(&format!(
        "vm run {KERNEL_MODULE} initrd={SHELL_INITRAMFS} cmdline=\"{TEST_CMDLINE}\" \
         mem={TEST_MEM_MIB}{extra}"
    ));
    m.expect(format!("vm {id} started"));
    m.expect_within(format!("[vm{id}] {SHELL_READY_MARKER}"), GUEST_BOOT);
    m.expect(format!("[vm{id}] {UPTIME_PREFIX}"));
    m.expect(format!("[vm{id}] {UPTIME_PREFIX}"));
}

/// Attaches VM `id`'s console.
fn attach(m: &mut Machine, id: u32) {
    m.type_line(&format!("vm console {id}"));
    m.expect(format!("[attached to {id}: Ctrl-] detaches]"));
}

/// Detaches from VM `id`'s console; its output then comes as `[vm<id>]` lines again.
fn detach(m: &mut Machine, id: u32) {
    m.send("\x1d").unwrap();
    m.expect(format!("[detached from {id}]"));
    m.expect_prompt();
}

/// Types a short line into the attached guest shell and gives the shell a moment. Lines stay
/// under 60 characters: longer ones typed at once lost their tail on the way in.
fn in_shell(m: &mut Machine, line: &str) {
    m.type_line(line);
    std::thread::sleep(Duration::from_millis(500));
}

/// The guest's clocksource and whether dmesg says Linux switched to kvm-clock, as
/// `"<clocksource> <count of such lines>"`.
fn clocksource(m: &mut Machine, id: u32) -> String {
    attach(m, id);
    in_shell(m, "cd /sys/devices/system/clocksource/clocksource0");
    in_shell(m, "echo PVCLOCK-CS=$(cat current_clocksource)");
    let cs = m.expect(Pattern::regex(r"PVCLOCK-CS=([a-z0-9_-]+)[\r\n]"));
    let cs = cs.group(1).to_owned();
    // "Switched to clocksource kvm-clock", and no other dmesg line, has "ce kvm-c".
    in_shell(
        m,
        "echo PVCLOCK-SW=$(busybox dmesg|busybox grep -c 'ce kvm-c')",
    );
    let switched = m.expect(Pattern::regex(r"PVCLOCK-SW=([0-9]+)[\r\n]"));
    let switched = switched.group(1).to_owned();
    detach(m, id);
    eprintln!(
        "{}: vm {id}: clocksource {cs}, {switched} dmesg line(s) switching to kvm-clock",
        m.name()
    );
    format!("{cs} {switched}")
}

/// Reads the guest's system clock and RTC, sleeps `span_s` seconds of guest time, reads them
/// again, and checks that both moved by the same whole seconds (±1) and about as much as the
/// host's clock.
fn clocks_agree(m: &mut Machine, id: u32, span_s: u32) {
    attach(m, id);
    in_shell(m, "cd /sys/class/rtc/rtc0");
    in_shell(m, "r(){ echo $1 $(busybox date +%s) $(cat since_epoch);}");
    let started = m.elapsed();
    in_shell(m, &format!("r PVCLOCK-T0;sleep {span_s};r PVCLOCK-T1"));
    // Whole lines, and attached throughout: the `[vm<id>]` echo of a detached console may
    // split a guest line in two.
    let before = m.expect(Pattern::regex(r"PVCLOCK-T0 ([0-9]+) ([0-9]+)[\r\n]"));
    let (date0, rtc0): (i64, i64) = (
        before.group(1).parse().unwrap(),
        before.group(2).parse().unwrap(),
    );
    let after = m.expect_within(
        Pattern::regex(r"PVCLOCK-T1 ([0-9]+) ([0-9]+)[\r\n]"),
        Duration::from_secs(u64::from(span_s) * 3 + 60),
    );
    let host_s = (m.elapsed() - started).as_secs_f64();
    detach(m, id);
    let (date1, rtc1): (i64, i64) = (
        after.group(1).parse().unwrap(),
        after.group(2).parse().unwrap(),
    );
    let (date_span, rtc_span) = (date1 - date0, rtc1 - rtc0);
    eprintln!(
        "{}: over `sleep {span_s}`: system clock +{date_span} s, RTC +{rtc_span} s, host \
         {host_s:.1} s (system clock - RTC: {} s at the start)",
        m.name(),
        date0 - rtc0
    );
    check!(
        m,
        (date_span - rtc_span).abs() <= 1,
        "the guest's system clock drifted against its RTC: +{date_span} s against +{rtc_span} s \
         over sleep {span_s}"
    );
    check!(
        m,
        date_span >= i64::from(span_s) && (date_span as f64) <= host_s + 1.0,
        "the guest's clock did not follow real time: +{date_span} s over sleep {span_s} in \
         {host_s:.1} s of host time"
    );
    check!(
        m,
        (date0 - rtc0).abs() <= 1,
        "the guest's wall clock and RTC disagree at the start: {date0} against {rtc0}"
    );
}

#[test]
fn linux_uses_kvm_clock_unless_paravirt_is_none() {
    let mut m = boot();

    // paravirt=none: no KVM signature, so no kvm-clock (Linux picks the TSC or acpi_pm).
    run_shell_guest(&mut m, 1, " paravirt=none");
    let none = clocksource(&mut m, 1);
    check!(
        m,
        !none.starts_with("kvm-clock") && none.ends_with(" 0"),
        "with paravirt=none the guest still uses kvm-clock: {none}"
    );
    m.type_line("vm stop 1 force");
    m.expect("vm 1 stopped: stopped by the operator");
    m.expect_prompt();

    // The default: kvm-clock is the clocksource, and it keeps to the RTC.
    run_shell_guest(&mut m, 2, "");
    let kvm = clocksource(&mut m, 2);
    check!(
        m,
        kvm == "kvm-clock 1",
        "with the default paravirt=kvm the guest's clocksource is not kvm-clock: {kvm}"
    );
    clocks_agree(&mut m, 2, 15);
    m.type_line("vm stop 2 force");
    m.expect("vm 2 stopped: stopped by the operator");
}

/// The issue's 60 s span; about 90 s on an idle machine, so run by hand:
/// `cargo test -p keel-qemu-tests --test pvclock -- --ignored`.
#[test]
#[ignore = "60 s of guest time: run by hand (see docs/TESTING.md)"]
fn kvm_clock_keeps_to_the_rtc_for_60_s() {
    let mut m = boot();
    run_shell_guest(&mut m, 1, "");
    let kvm = clocksource(&mut m, 1);
    check!(
        m,
        kvm == "kvm-clock 1",
        "the clocksource is not kvm-clock: {kvm}"
    );
    clocks_agree(&mut m, 1, 60);
    m.type_line("vm stop 1 force");
    m.expect("vm 1 stopped: stopped by the operator");
}
