//! The kernel's exception reports, provoked with `keel.test-crash=...` on the command line
//! (the kernel faults after the banner, before the prompt).

use keel_qemu_tests::{Machine, Qemu, VERSION_LINE, artifacts, check};

/// Boots with `keel.test-crash=<what>`, waits for the report that starts with `header` and
/// ends with `system halted`, and returns the report's text (header excluded).
fn crash(what: &str, header: &str) -> (Machine, String) {
    let mut m = Qemu::pvh(&artifacts().elf)
        .append(&format!("keel.test-crash={what}"))
        .spawn()
        .unwrap();
    m.expect(VERSION_LINE);
    m.expect(header);
    let report = m.expect("system halted").before;
    check!(
        m,
        !String::from_utf8_lossy(&m.transcript()).contains("keel> "),
        "the prompt appeared although the kernel crashed before it"
    );
    (m, report)
}

/// The value of a `label: 0x...` field anywhere in the report (registers share lines).
fn hex_field(report: &str, label: &str) -> Option<u64> {
    let re = format!(r"(?:^|\s){}: 0x([0-9a-fA-F]+)\b", regex::escape(label));
    let caps = regex::Regex::new(&re).ok()?.captures(report)?;
    u64::from_str_radix(&caps[1], 16).ok()
}

const REGISTERS: [&str; 16] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

fn check_dump(m: &Machine, report: &str) {
    for label in ["error code", "rip", "cr2"] {
        let at_line_start = report
            .lines()
            .any(|l| l.starts_with(&format!("  {label}: 0x")));
        check!(
            m,
            at_line_start,
            "no line starting `  {label}: 0x` in the report:\n{report}"
        );
    }
    for reg in REGISTERS {
        check!(
            m,
            hex_field(report, reg).is_some(),
            "register {reg} missing from the report:\n{report}"
        );
    }
    check!(
        m,
        hex_field(report, "rip").is_some_and(|rip| rip != 0),
        "rip is zero:\n{report}"
    );
}

#[test]
fn page_fault_dumps_registers() {
    let (m, report) = crash(
        "page-fault",
        "*** KERNEL EXCEPTION: #PF page fault (vector 14) ***",
    );
    check_dump(&m, &report);
    let cr2 = hex_field(&report, "cr2");
    check!(
        m,
        cr2.is_some_and(|a| a != 0),
        "cr2 should hold the faulting address:\n{report}"
    );
    let code = hex_field(&report, "error code").unwrap_or(u64::MAX);
    check!(
        m,
        code & 1 == 0,
        "an unmapped address gives a not-present fault (error code bit 0 clear), got {code:#x}"
    );
}

#[test]
fn stack_overflow_is_a_double_fault_on_the_guard_page() {
    let (m, report) = crash(
        "stack-overflow",
        "*** KERNEL EXCEPTION: #DF double fault (vector 8) ***",
    );
    check!(
        m,
        report.contains("kernel stack overflow"),
        "report:\n{report}"
    );
    check_dump(&m, &report);
}

#[test]
fn invalid_opcode_is_reported() {
    let (m, report) = crash(
        "invalid-opcode",
        "*** KERNEL EXCEPTION: #UD invalid opcode (vector 6) ***",
    );
    check_dump(&m, &report);
}
