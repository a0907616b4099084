//! `keel.img` under Bochs (`corei7_skylake_x`): the VT-x path.

use std::net::TcpListener;
use std::time::Duration;

use keel_qemu_tests::{Bochs, artifacts, check};

#[test]
fn bochs_boots_with_vtx_and_powers_off() {
    let a = artifacts();
    let mut m = Bochs::disk(&a.image).defmt_elf(&a.elf).spawn().unwrap();
    let b = m.expect_banner();
    let show = |label: &str| format!("{label}: {:?}\nbanner:\n{}", b.field(label), b.text);
    check!(
        m,
        b.field("boot path") == Some("Multiboot2 via BIOS"),
        "{}",
        show("boot path")
    );
    check!(
        m,
        b.field("virtualization")
            .is_some_and(|v| v.starts_with("VT-x with EPT")),
        "{}",
        show("virtualization")
    );
    let cpus = b.number("cpus");
    check!(m, cpus.is_some(), "{}", show("cpus"));

    let out = m.command("cpus");
    let expected = format!("{} CPUs (ACPI MADT)", cpus.unwrap_or(0));
    let first = out.lines().next().unwrap_or("");
    // One CPU may be reported as "1 CPU" or "1 CPUs".
    check!(
        m,
        first == expected || (cpus == Some(1) && first == "1 CPU (ACPI MADT)"),
        "first line of cpus: {first:?}, expected {expected:?}"
    );

    m.type_line("poweroff");
    m.expect("powering off...");
    m.expect_exit(Duration::from_secs(120));
    let out = std::fs::read_to_string(m.dir().join("bochs.out")).unwrap_or_default();
    check!(
        m,
        out.contains("soft power off"),
        "bochs did not end through ACPI power-off"
    );
}

#[test]
fn bochs_reboot_boots_again() {
    let a = artifacts();
    let mut m = Bochs::disk(&a.image).defmt_elf(&a.elf).spawn().unwrap();
    m.expect_banner();
    m.type_line("reboot");
    m.expect("rebooting...");
    // The BIOS and GRUB run again and the kernel prints its banner a second time.
    let b = m.expect_banner();
    check!(
        m,
        b.field("boot path") == Some("Multiboot2 via BIOS"),
        "second banner:\n{}",
        b.text
    );
    let out = m.command("version");
    check!(
        m,
        out.starts_with("Keel 0.1.0"),
        "version after reboot: {out:?}"
    );
}

/// Bochs's VNC display takes the first free port of 5900-5949 and exits when none is free; a
/// CI run on a shared machine once found them all taken. Each Bochs has a network namespace of
/// its own, so it boots even while this test holds every one of those ports.
#[test]
fn bochs_boots_while_every_vnc_port_is_taken() {
    let held: Vec<TcpListener> = (5900..=5949)
        .filter_map(|port| TcpListener::bind(("0.0.0.0", port)).ok())
        .collect();
    let a = artifacts();
    let mut m = Bochs::disk(&a.image).defmt_elf(&a.elf).spawn().unwrap();
    m.expect_banner();
    let out = m.command("version");
    check!(
        m,
        out.starts_with("Keel 0.1.0"),
        "version with the VNC ports held ({} of 50 by this test): {out:?}",
        held.len()
    );
}
