//! Linux on AMD-V under QEMU TCG (`-cpu qemu64,+svm,+npt`, 1 GiB, SeaBIOS + GRUB): Keel boots
//! Debian 12's stock kernel and a busybox initramfs from its boot modules (`keel-linux.img`,
//! see `linux_artifacts`) as a 256 MiB VM. The first run downloads the kernel and busybox
//! with `apt-get download` into `target/linux-guest/`.

use std::time::Duration;

use keel_qemu_tests::{Machine, Qemu, linux_artifacts};

mod linux_suite;

fn boot() -> Machine {
    let a = linux_artifacts();
    let mut m = Qemu::seabios(&a.image)
        .memory_mib(1024)
        .defmt_elf(&a.elf)
        .hard_timeout(Duration::from_secs(900))
        .spawn()
        .unwrap();
    m.expect_banner(); // reads up to and including the first prompt
    m
}

fn clock_bound(_: &Machine) -> Duration {
    // QEMU sets the RTC from the host clock; Keel hands the host RTC to the VM.
    Duration::from_secs(300)
}

linux_suite::suite_tests!(
    boot,
    linux_suite::Limits {
        boot: Duration::from_secs(480),
        finish: Duration::from_secs(120),
        clock: clock_bound,
    }
);
