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

vm_suite::suite_tests!(boot);

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
