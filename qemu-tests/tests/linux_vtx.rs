//! Linux on VT-x under Bochs (`corei7_skylake_x`, 512 MiB, BIOS + GRUB): the same checks as
//! `linux.rs`, from the same `keel-linux.img`. Much slower than QEMU: GRUB reads 10 MB of
//! modules through the BIOS, and the guest's boot is emulated instruction by instruction.

use std::time::Duration;

use keel_qemu_tests::{Bochs, Machine, check, linux_artifacts};

mod linux_suite;

fn boot() -> Machine {
    let a = linux_artifacts();
    let mut m = Bochs::disk(&a.image)
        .defmt_elf(&a.elf)
        .timeout(Duration::from_secs(300))
        .hard_timeout(Duration::from_secs(2400))
        .spawn()
        .unwrap();
    let b = m.expect_banner(); // reads up to and including the first prompt
    let virt = b.field("virtualization").unwrap_or("").to_owned();
    check!(
        m,
        virt.starts_with("VT-x with EPT"),
        "not the VT-x path: {virt}"
    );
    eprintln!(
        "{}: Keel's prompt {:.1} s after Bochs started",
        m.name(),
        m.elapsed().as_secs_f64()
    );
    m
}

/// Bochs starts its RTC at the host's time but, with `clock: sync=none`, advances it by
/// instruction count (`ips`) and skips ahead when the CPU idles, so over a long run it drifts
/// from the host's clock by up to about the run's length. The bound still catches a guest
/// clock that is not the host's time at all (zero, garbage, a fixed date).
fn clock_bound(m: &Machine) -> Duration {
    Duration::from_secs(300) + m.elapsed()
}

linux_suite::suite_tests!(
    boot,
    linux_suite::Limits {
        boot: Duration::from_secs(25 * 60),
        finish: Duration::from_secs(600),
        clock: clock_bound,
    }
);
