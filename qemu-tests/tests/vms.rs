//! VMs on AMD-V under QEMU TCG (`-cpu qemu64,+svm,+npt`): the test guests of
//! `qemu-tests/guests` run as GRUB boot modules of `keel.img` (SeaBIOS), started from the
//! console with `vm run <module>`. Each test asserts what the guests and the kernel printed.

use keel_qemu_tests::{Machine, Qemu, artifacts, check};

fn boot() -> Machine {
    let a = artifacts();
    let mut m = Qemu::seabios(&a.image).defmt_elf(&a.elf).spawn().unwrap();
    m.expect_banner(); // reads up to and including the first prompt
    m
}

mod vm_suite;

#[test]
fn modules_lists_the_guests() {
    vm_suite::modules_lists_the_guests(boot());
}

#[test]
fn hello_prints_through_com1_and_halts() {
    vm_suite::hello_prints_through_com1_and_halts(boot());
}

#[test]
fn exits_guest_passes_every_check_in_long_mode() {
    vm_suite::exits_guest_passes_every_check_in_long_mode(boot());
}

#[test]
fn hostile_guests_stop_alone_while_the_host_and_another_vm_go_on() {
    vm_suite::hostile_guests_stop_alone_while_the_host_and_another_vm_go_on(boot());
}

#[test]
fn two_vms_on_one_cpu_both_finish() {
    vm_suite::two_vms_on_one_cpu_both_finish(boot());
}

#[test]
fn bad_vm_commands_get_clear_errors_and_change_nothing() {
    vm_suite::bad_vm_commands_get_clear_errors_and_change_nothing(boot());
}

#[test]
fn without_virtualization_vm_run_says_why() {
    let a = artifacts();
    let mut m = Qemu::seabios(&a.image)
        .cpu("qemu64,-svm")
        .defmt_elf(&a.elf)
        .spawn()
        .unwrap();
    m.expect_banner();
    let out = m.command("vm run hello.bin");
    check!(
        m,
        out.contains("error: cannot create the vCPU: no hardware virtualization: this CPU has neither VT-x nor AMD-V"),
        "vm run printed {out:?}"
    );
    let version = m.command("version");
    check!(
        m,
        version.contains("Keel 0.1.0"),
        "the console must still work: {version:?}"
    );
}
