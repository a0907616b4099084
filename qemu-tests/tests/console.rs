//! The operator console as a terminal user meets it (QEMU TCG, SeaBIOS, the test image with
//! the guests as boot modules): line editing keys, history, tab completion, `help <command>`,
//! and attaching to a VM's serial console with `vm console` / Ctrl-].

use std::time::Duration;

use keel_qemu_tests::{Machine, Pattern, Qemu, artifacts, check};

const LEFT: &str = "\x1b[D";
const UP: &str = "\x1b[A";
const HOME: &str = "\x1b[H";
const CTRL_A: &str = "\x01";
const CTRL_E: &str = "\x05";
const CTRL_U: &str = "\x15";
const CTRL_W: &str = "\x17";
const CTRL_C: &str = "\x03";
const BACKSPACE: &str = "\x7f";
const DELETE: &str = "\x1b[3~";
const TAB: &str = "\t";
const DETACH: &str = "\x1d";

fn boot() -> Machine {
    let a = artifacts();
    let mut m = Qemu::seabios(&a.image).defmt_elf(&a.elf).spawn().unwrap();
    m.expect_banner();
    m
}

/// Sends raw keys, then Enter.
fn keys_then_enter(m: &mut Machine, keys: &str) {
    m.send(keys).unwrap();
    m.send("\r").unwrap();
}

#[test]
fn editing_keys_history_and_completion() {
    let mut m = boot();

    // Insert in the middle: "vrsion", five lefts, "e".
    keys_then_enter(&mut m, &format!("vrsion{}e", LEFT.repeat(5)));
    m.expect("built with rustc");
    m.expect_prompt();

    // Home / Ctrl-A and Ctrl-E: "ersio" → Home "v" → Ctrl-E "n".
    keys_then_enter(&mut m, &format!("ersio{HOME}v{CTRL_E}n"));
    m.expect("built with rustc");
    m.expect_prompt();
    keys_then_enter(&mut m, &format!("em{CTRL_A}m"));
    m.expect(Pattern::regex(r"(?m)^\s*total: \d+ MiB\r?$"));
    m.expect_prompt();

    // Backspace and Delete: "memx" ⌫ → "mem"; "xmem" Home Delete → "mem".
    keys_then_enter(&mut m, &format!("memx{BACKSPACE}"));
    m.expect(Pattern::regex(r"(?m)^\s*total: \d+ MiB\r?$"));
    m.expect_prompt();
    keys_then_enter(&mut m, &format!("xmem{HOME}{DELETE}"));
    m.expect(Pattern::regex(r"(?m)^\s*total: \d+ MiB\r?$"));
    m.expect_prompt();

    // Ctrl-W deletes the word before the cursor, Ctrl-U the whole line. The checks are on
    // what the command that ran printed, never on the echo: "vm lis" ^W "list" runs
    // "vm list" (nothing erased would run "vm lislist", the whole line erased "list"), and
    // "vm list" ^W ^W "cpus" runs "cpus".
    keys_then_enter(&mut m, &format!("vm lis{CTRL_W}list"));
    m.expect("no VMs: define one with 'vm create'");
    m.expect_prompt();
    keys_then_enter(&mut m, &format!("vm list{CTRL_W}{CTRL_W}cpus"));
    m.expect(Pattern::regex(r"\d+ CPUs \(ACPI MADT\)"));
    m.expect_prompt();
    keys_then_enter(&mut m, &format!("reboot now{CTRL_U}version"));
    m.expect("built with rustc");
    m.expect_prompt();

    // Ctrl-C abandons the line.
    m.send(&format!("poweroff{CTRL_C}")).unwrap();
    m.expect("^C");
    m.expect_prompt();

    // History: Up recalls "version" (the last line run), Up Up the "cpus" before it... the
    // line most recently entered comes first.
    keys_then_enter(&mut m, UP);
    m.expect("built with rustc");
    m.expect_prompt();

    // Tab completes a unique command word and a subcommand.
    keys_then_enter(&mut m, &format!("vers{TAB}"));
    m.expect("built with rustc");
    m.expect_prompt();
    keys_then_enter(&mut m, &format!("vm li{TAB}"));
    m.expect("no VMs");
    m.expect_prompt();
    // And a module name after `vm run`.
    keys_then_enter(&mut m, &format!("vm run hel{TAB}"));
    m.expect("vm 1 started");
    m.expect("[vm1] hello from a Keel guest");

    // Two tabs on an ambiguous word list the candidates.
    m.send(&format!("vm s{TAB}{TAB}")).unwrap();
    m.expect(Pattern::regex(r"start\s+stop"));
    m.send(CTRL_U).unwrap();
    m.send("\r").unwrap();
    m.expect_prompt();
}

#[test]
fn help_explains_one_command() {
    let mut m = boot();
    let out = m.command("help vm stop");
    check!(
        m,
        out.contains("vm stop <vm> [force | timeout=<s>]") && out.contains("power button"),
        "help vm stop: {out:?}"
    );
    let out = m.command("help vm");
    for usage in [
        "vm start <name>",
        "vm console <vm>",
        "vm info <vm>",
        "vm run <module>",
    ] {
        check!(m, out.contains(usage), "help vm lacks {usage}: {out:?}");
    }
    let out = m.command("help frobnicate");
    check!(
        m,
        out.contains("unknown command 'frobnicate'"),
        "help frobnicate: {out:?}"
    );
}

#[test]
fn attach_to_a_vm_console_and_detach() {
    let mut m = boot();
    m.type_line("vm run echo.bin");
    m.expect("vm 1 started");
    m.expect("[vm1] echo guest: ready");
    m.expect_prompt();

    // A second VM keeps printing while the terminal is attached to the first: its lines
    // must wait until the operator detaches.
    m.type_line("vm run counter.bin");
    m.expect("vm 2 started");
    m.expect("[vm2] tick 1");

    m.type_line("vm console 1");
    m.expect("[attached to 1: Ctrl-] detaches]");
    let attached_at = m.cursor();
    m.send("hello keel\r").unwrap();
    m.expect_within("HELLO KEEL", Duration::from_secs(30));
    // Typed bytes reach the guest unedited (no prompt, no line editor): the guest's answer is
    // what comes back.
    m.send("x").unwrap();
    m.expect("X");
    std::thread::sleep(Duration::from_millis(500));
    let during = String::from_utf8_lossy(&m.transcript()[attached_at..]).into_owned();
    check!(
        m,
        !during.contains("[vm2]") && !during.contains("keel> "),
        "host lines garbled the attached session: {during:?}"
    );

    m.send(DETACH).unwrap();
    m.expect("[detached from 1]");
    // The counter's lines held during the session come now, and the prompt is back.
    m.expect("[vm2] tick");
    // The counter keeps printing (and redrawing the prompt): wait for the answers themselves.
    m.type_line("vm list");
    m.expect(Pattern::regex(r"(?m)^\s+1\s+1\s+echo.bin\s+.*running\r?$"));
    m.expect(Pattern::regex(
        r"(?m)^\s+2\s+2\s+counter.bin\s+.*running\r?$",
    ));

    // Bad attach targets are refused with the reason.
    m.type_line("vm console 9");
    m.expect("error: no VM named '9'");
    m.type_line("vm stop 2 force");
    m.expect("vm 2 stopped: stopped by the operator");
    m.expect_prompt();
    let out = m.command("vm console 2");
    check!(
        m,
        out.contains("error: VM 2 is not running"),
        "attaching to a stopped VM: {out:?}"
    );
}
