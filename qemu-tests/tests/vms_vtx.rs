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

vm_suite::suite_tests!(boot);
