//! `keel.img` booted by firmware and GRUB: SeaBIOS (legacy BIOS) and OVMF (UEFI), both with
//! a reboot (the firmware boots the image again) and a power-off.

use std::time::Duration;

use keel_qemu_tests::{Machine, Qemu, artifacts, check};

fn expect_boot_path(m: &mut Machine, path: &str) {
    let b = m.expect_banner();
    check!(
        m,
        b.field("boot path") == Some(path),
        "boot path: {:?}\nbanner:\n{}",
        b.field("boot path"),
        b.text
    );
}

fn reboot_then_poweroff(m: &mut Machine, path: &str) {
    m.type_line("reboot");
    m.expect("rebooting...");
    expect_boot_path(m, path);
    m.type_line("poweroff");
    m.expect("powering off...");
    let status = m.expect_exit(Duration::from_secs(10));
    check!(m, status.success(), "QEMU exited with {status}");
}

fn seabios() -> Machine {
    let a = artifacts();
    Qemu::seabios(&a.image).defmt_elf(&a.elf).spawn().unwrap()
}

fn ovmf() -> Machine {
    let a = artifacts();
    Qemu::ovmf(&a.image).defmt_elf(&a.elf).spawn().unwrap()
}

#[test]
fn seabios_boots_the_image() {
    let mut m = seabios();
    expect_boot_path(&mut m, "Multiboot2 via BIOS");
    let out = m.command("version");
    check!(m, out.starts_with("Keel 0.1.0"), "version printed {out:?}");
}

#[test]
fn seabios_reboot_and_poweroff() {
    let mut m = seabios();
    expect_boot_path(&mut m, "Multiboot2 via BIOS");
    reboot_then_poweroff(&mut m, "Multiboot2 via BIOS");
}

#[test]
fn ovmf_boots_reboots_and_powers_off() {
    let mut m = ovmf();
    expect_boot_path(&mut m, "Multiboot2 via UEFI");
    let out = m.command("version");
    check!(m, out.starts_with("Keel 0.1.0"), "version printed {out:?}");
    reboot_then_poweroff(&mut m, "Multiboot2 via UEFI");
}
