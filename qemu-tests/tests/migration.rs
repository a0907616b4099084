//! Dirty-page tracking on AMD-V under QEMU TCG (`keel.img`, SeaBIOS): the `dirty` test
//! guest writes one byte into each of four known pages per `w` it reads on COM1, and
//! `vm dirty-log` must report exactly those pages and the guest's stack page (its print
//! routine pushes there) — nothing else, since the guest only polls the UART in between —
//! then none until the guest writes again, and the same pages after the next request
//! (each harvest re-protects what it reported).

use std::time::Duration;

use keel_qemu_tests::{Machine, Qemu, artifacts, check};

/// Ctrl-]: detaches the terminal from a VM console.
const DETACH: &str = "\x1d";

/// The pages one `w` dirties: the stack page, then the four the guest writes.
const WRITTEN: &str = "5 dirty pages: 0x7000 0x30000 0x31000 0x45000 0x9f000";

fn boot() -> Machine {
    let a = artifacts();
    let mut m = Qemu::seabios(&a.image).defmt_elf(&a.elf).spawn().unwrap();
    m.expect_banner();
    m
}

/// Sends `w` to VM 1's console `times` times and waits for each answer.
fn request_writes(m: &mut Machine, times: usize) {
    m.type_line("vm console 1");
    m.expect("[attached to 1: Ctrl-] detaches]");
    for _ in 0..times {
        m.send("w").unwrap();
        m.expect_within("dirty guest: wrote 4 pages", Duration::from_secs(30));
    }
    m.send(DETACH).unwrap();
    m.expect("[detached from 1]");
    m.expect_prompt();
}

#[test]
fn the_dirty_log_reports_exactly_the_pages_the_guest_wrote() {
    let mut m = boot();
    m.type_line("vm run dirty.bin");
    m.expect("vm 1 started");
    m.expect("[vm1] dirty guest: ready");
    m.expect_prompt();

    let out = m.command("vm dirty-log 1 pages");
    check!(m, out.contains("vm 1 has no dirty log"), "{out:?}");
    let out = m.command("vm dirty-log 1 start");
    check!(m, out.contains("vm 1: dirty log on:"), "{out:?}");
    // The guest only polls its UART: nothing written.
    let out = m.command("vm dirty-log 1 pages");
    check!(
        m,
        out.contains("vm 1: 0 dirty pages:"),
        "idle guest: {out:?}"
    );

    request_writes(&mut m, 1);
    let out = m.command("vm dirty-log 1 pages");
    check!(
        m,
        out.trim_end().ends_with(WRITTEN),
        "after one request: {out:?}"
    );
    let out = m.command("vm dirty-log 1 pages");
    check!(
        m,
        out.contains("vm 1: 0 dirty pages:"),
        "harvest again: {out:?}"
    );

    // Re-protected: two more requests fault on the same pages again, logged once each.
    request_writes(&mut m, 2);
    let out = m.command("vm dirty-log 1 pages");
    check!(
        m,
        out.trim_end().ends_with(WRITTEN),
        "after two requests: {out:?}"
    );

    let out = m.command("vm dirty-log 1 stop");
    check!(m, out.contains("dirty log off"), "{out:?}");
    // Writable again: the guest runs on without faults.
    request_writes(&mut m, 1);
    let out = m.command("vm dirty-log 1 pages");
    check!(m, out.contains("vm 1 has no dirty log"), "{out:?}");
    let out = m.command("vm dirty-log 9 start");
    check!(m, out.contains("no running VM '9'"), "{out:?}");
}
