//! Many VMs at once on AMD-V under QEMU TCG (`-cpu qemu64,+svm,+npt`, `-smp 4`,
//! `-accel tcg,thread=multi`, SeaBIOS, the test guests as GRUB boot modules of `keel.img`).
//!
//! QEMU's SVM offers 16 ASIDs (15 for guests). ASIDs are handed out per host CPU by
//! generation (`vmm/src/backend/ids.rs`), so more vCPUs than ASIDs take turns on one CPU,
//! each entry after a rollover flushing the CPU's guest TLB; before, the fifteenth VM running
//! at once was refused with "every address-space ID (ASID) is in use".

use std::time::{Duration, Instant};

use keel_qemu_tests::machine::scaled;
use keel_qemu_tests::{Machine, Pattern, Qemu, artifacts, check};

/// A 4-CPU host on multi-threaded TCG: the application processors are up (and wait for
/// work: every vCPU runs on the boot CPU today).
fn boot() -> Machine {
    let a = artifacts();
    let mut m = Qemu::seabios(&a.image)
        .cpus(4)
        .multi_threaded_tcg()
        .defmt_elf(&a.elf)
        .spawn()
        .unwrap();
    m.expect_banner();
    m
}

/// Counter VMs started first; two `exits` guests (long mode, paging) join them, so 20 VMs
/// run at once: more than QEMU's 15 guest ASIDs.
const COUNTERS: u32 = 18;

/// Starts `module` as the next VM and waits for `vm N started`.
fn start(m: &mut Machine, module: &str, id: u32) {
    m.type_line(&format!("vm run {module} mem=8"));
    let started = m.expect(Pattern::regex(r"vm (\d+) started|error: [^\r\n]*\r?\n"));
    check!(
        m,
        started.text == format!("vm {id} started"),
        "starting VM {id} ({module}): {:?}",
        started.text
    );
}

/// The ticks VM `id` printed in `text` (the transcript made printable), in order. A console
/// line may start with a redrawn prompt, so the prefix is searched for, not matched at the
/// start; a line without its newline may still be being printed and is left out.
fn ticks(text: &str, id: u32) -> Vec<u64> {
    let prefix = format!("[vm{id}] tick ");
    text.split_inclusive('\n')
        .filter_map(|l| {
            let rest = l.strip_suffix('\n')?;
            rest[rest.find(&prefix)? + prefix.len()..]
                .trim_end()
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn twenty_vms_run_at_once_beyond_the_asid_count() {
    let mut m = boot();
    for id in 1..=COUNTERS {
        start(&mut m, "counter.bin", id);
    }
    // The two `exits` guests run their checks (paging, MSRs, MMIO) while the counters spin
    // and ASIDs roll over.
    start(&mut m, "exits.bin", COUNTERS + 1);
    start(&mut m, "exits.bin", COUNTERS + 2);
    for _ in 0..2 {
        m.expect(Pattern::regex(r"vm (19|20) stopped: [^\r\n]*\r?\n"));
    }
    let text = m.transcript_text();
    for id in [COUNTERS + 1, COUNTERS + 2] {
        let line = format!("[vm{id}] exits guest: all 9 checks passed");
        check!(m, text.contains(&line), "missing {line:?}");
        let stop = format!("vm {id} stopped: guest halted with interrupts disabled");
        check!(m, text.contains(&stop), "missing {stop:?}");
    }
    // Every counter ticks on after all twenty ran together, one unbroken count each.
    let at_twenty: Vec<usize> = (1..=COUNTERS).map(|id| ticks(&text, id).len()).collect();
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        let now = m.transcript_text();
        let behind: Vec<u32> = (1..=COUNTERS)
            .filter(|&id| ticks(&now, id).len() <= at_twenty[id as usize - 1])
            .collect();
        if behind.is_empty() {
            break;
        }
        check!(
            m,
            Instant::now() < deadline,
            "counter VMs {behind:?} printed no tick after VM 20 started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = m.transcript_text();
    for id in 1..=COUNTERS {
        let seen = ticks(&text, id);
        let expected: Vec<u64> = (0..seen.len() as u64).collect();
        check!(
            m,
            seen == expected,
            "VM {id}'s ticks are not 0, 1, 2, …: {seen:?}"
        );
        check!(
            m,
            !text.contains(&format!("vm {id} stopped")),
            "counter VM {id} stopped"
        );
    }
}

/// `cpus` shows each CPU's vCPUs and load; `vm info` where each vCPU runs. Every vCPU runs
/// on the boot CPU today (the other CPUs wait for work), so a spinning guest's vCPU is on
/// CPU 0, which is busy, and CPU 1 has none.
#[test]
fn cpus_and_vm_info_show_where_vcpus_run_and_the_load() {
    let mut m = boot();
    m.type_line("vm run hostile-spin.bin mem=8 vcpus=2");
    m.expect("vm 1 started");
    m.expect("[vm1] spinning");
    m.expect_prompt();
    // Let the spinner fill part of the load window.
    std::thread::sleep(Duration::from_secs(2));
    let info = m.command("vm info 1");
    check!(
        m,
        info.contains("placement:  vcpu 0 on cpu 0, vcpu 1 on cpu 0"),
        "vm info 1:\n{info}"
    );
    let cpus = m.command("cpus");
    let row = |cpu: &str| {
        cpus.lines()
            .skip_while(|l| !l.contains("load(5s)"))
            .find(|l| l.split_whitespace().next() == Some(cpu))
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    };
    let boot_cpu = row("0");
    let load: Option<u32> = boot_cpu
        .as_ref()
        .and_then(|r| r.get(1)?.strip_suffix('%')?.parse().ok());
    check!(
        m,
        boot_cpu
            .as_ref()
            .is_some_and(|r| r[2..] == ["1/vcpu0,", "1/vcpu1"]),
        "CPU 0's row does not list the spinner's vCPUs:\n{cpus}"
    );
    // The spinner takes every slice; the management plane's share is small. Loosely: the
    // figure is a share of a window that began before the VM started.
    check!(
        m,
        load.is_some_and(|l| (20..=100).contains(&l)),
        "CPU 0's load is {load:?}:\n{cpus}"
    );
    for ap in ["1", "2", "3"] {
        let row = row(ap);
        check!(
            m,
            row.as_ref().is_some_and(|r| r[1..] == ["0%", "-"]),
            "CPU {ap} is not listed idle with no vCPU:\n{cpus}"
        );
    }
    m.type_line("vm stop 1 force");
    m.expect(Pattern::regex(r"vm 1 stopped: [^\r\n]*\r?\n"));
    m.expect_prompt();
    let after = m.command("cpus");
    check!(
        m,
        !after.contains("1/vcpu"),
        "a stopped VM's vCPUs are still listed:\n{after}"
    );
}
