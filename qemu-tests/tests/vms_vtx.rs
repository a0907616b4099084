//! VMs on VT-x under Bochs (`cpu: model=corei7_skylake_x`: VMX with EPT, unrestricted guest,
//! VPID): the same suite as `vms.rs` (AMD-V under QEMU), from the same `keel.img` with the
//! test guests as GRUB boot modules.

use keel_qemu_tests::{Bochs, Machine, artifacts, check};

fn boot() -> Machine {
    let a = artifacts();
    let mut m = Bochs::disk(&a.image).defmt_elf(&a.elf).spawn().unwrap();
    let b = m.expect_banner(); // reads up to and including the first prompt
    let virt = b.field("virtualization").unwrap_or("").to_owned();
    check!(
        m,
        virt.starts_with("VT-x with EPT"),
        "not the VT-x path: {virt}"
    );
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
