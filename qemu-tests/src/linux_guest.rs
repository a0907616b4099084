//! The Linux-guest tests' guest: Debian 12's stock kernel and `busybox-static` (fetched by
//! [`keel_image::linux_guest`], re-exported here) with the test initramfs ([`TEST_INIT`]).
//!
//! The download, the `newc` writer ([`Cpio`]) and [`busybox_initramfs`] live in the image
//! builder, which also makes the demo VM of `keel run` from them; this module keeps what only
//! the tests and benchmarks use.

use std::path::{Path, PathBuf};

pub use keel_image::linux_guest::{
    Cpio, GUEST_DIR, LinuxGuest, LinuxGuestError, busybox_initramfs, guest_dir, linux_guest,
};

/// The kernel command line of the tests and `linux-bench`: the console on the first UART
/// (early messages too), only warnings and worse from the kernel (Keel echoes every guest
/// line), and a reboot rather than a hang on panic (the VM then stops).
pub const TEST_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 loglevel=4 panic=-1";

/// The test initramfs's file name, which is also its boot module name.
pub const TEST_INITRAMFS: &str = "initramfs.cpio";

/// The kernel's boot module name (see [`crate::artifacts::linux_artifacts`]).
pub const KERNEL_MODULE: &str = "vmlinuz";

/// The guest memory of the tests and `linux-bench`, in MiB.
pub const TEST_MEM_MIB: u32 = 256;

/// The Keel console line that starts the test guest from the boot modules.
pub fn vm_run_line() -> String {
    format!(
        "vm run {KERNEL_MODULE} initrd={TEST_INITRAMFS} cmdline=\"{TEST_CMDLINE}\" mem={TEST_MEM_MIB}"
    )
}

/// [`vm_run_line`] for a VM with `vcpus` vCPUs.
pub fn vm_run_line_with_vcpus(vcpus: u8) -> String {
    if vcpus == 1 {
        vm_run_line()
    } else {
        format!("{} vcpus={vcpus}", vm_run_line())
    }
}

/// The first line the test `/init` prints, after mounting proc, sys and dev.
pub const INIT_MARKER: &str = "KEEL-LINUX-INIT";

/// The last line the test `/init` prints before `poweroff -f`.
pub const DONE_MARKER: &str = "KEEL-LINUX-DONE";

/// The test `/init` (busybox sh; see [`busybox_initramfs`]). Each report sits between
/// `KEEL-BEGIN <name>` and `KEEL-END <name>` lines, or on a `KEY=value` line; `dmesg | tail
/// -40` is printed only when the guest itself sees a check fail, to help debugging.
pub const TEST_INIT: &str = r#"mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo KEEL-LINUX-INIT
echo KEEL-BEGIN uname
uname -a
echo KEEL-END uname
echo KEEL-BEGIN cpuinfo
cat /proc/cpuinfo
echo KEEL-END cpuinfo
traces=$(dmesg | grep -ci 'call trace')
echo "CALL-TRACES=$traces"
echo "GUEST-EPOCH=$(date -u +%s)"
echo KEEL-BEGIN pci
dmesg | grep -E 'PCI host bridge to bus|ACPI Error|ACPI BIOS Error|AE_'
echo KEEL-END pci
ok=yes
[ "$traces" = 0 ] || ok=no
grep -q '^flags.* hypervisor' /proc/cpuinfo || ok=no
if [ "$ok" != yes ]; then
    echo KEEL-BEGIN dmesg
    dmesg | tail -40
    echo KEEL-END dmesg
fi
echo KEEL-LINUX-DONE
poweroff -f
"#;

/// The busybox applets [`TEST_INIT`] runs.
pub const TEST_APPLETS: &[&str] = &[
    "mount", "uname", "cat", "dmesg", "grep", "date", "tail", "poweroff",
];

/// The shell initramfs's file name, which is also its boot module name.
pub const SHELL_INITRAMFS: &str = "shell.cpio";

/// What the shell guest prints once its shell is about to start.
pub const SHELL_READY_MARKER: &str = "KEEL-SHELL-READY";

/// The prefix of the shell guest's clock lines: `KEEL-UPTIME <seconds> <idle seconds>`, one
/// per second of guest time, from a loop in the background.
pub const UPTIME_PREFIX: &str = "KEEL-UPTIME ";

/// `/init` of the shell guest: a shell on the console for tests that talk to a running Linux
/// (pause, save and restore), and a line with the guest's uptime every second of its own
/// time, so a test sees whether the guest's clock jumped.
pub const SHELL_INIT: &str = r#"mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
(while :; do echo "KEEL-UPTIME $(cat /proc/uptime)"; sleep 1; done) &
echo KEEL-SHELL-READY
export PS1='guest# '
exec sh
"#;

/// The busybox applets [`SHELL_INIT`] and the tests' commands run.
pub const SHELL_APPLETS: &[&str] = &["mount", "cat", "sleep", "sh", "echo", "uname"];

/// The Keel console line that starts the shell guest from the boot modules.
pub fn vm_run_shell_line() -> String {
    format!(
        "vm run {KERNEL_MODULE} initrd={SHELL_INITRAMFS} cmdline=\"{TEST_CMDLINE}\" \
         mem={TEST_MEM_MIB}"
    )
}

/// Writes the test initramfs ([`TEST_INIT`] on busybox) to
/// `target/linux-guest/initramfs.cpio` (through a temporary file, so a reader never sees half
/// of it) and returns the path.
pub fn write_test_initramfs(guest: &LinuxGuest) -> Result<PathBuf, String> {
    write_initramfs(guest, TEST_INITRAMFS, TEST_INIT, TEST_APPLETS)
}

/// Writes the shell initramfs ([`SHELL_INIT`]) to `target/linux-guest/shell.cpio`.
pub fn write_shell_initramfs(guest: &LinuxGuest) -> Result<PathBuf, String> {
    write_initramfs(guest, SHELL_INITRAMFS, SHELL_INIT, SHELL_APPLETS)
}

fn write_initramfs(
    guest: &LinuxGuest,
    name: &str,
    init: &str,
    applets: &[&str],
) -> Result<PathBuf, String> {
    let busybox =
        std::fs::read(&guest.busybox).map_err(|e| format!("{}: {e}", guest.busybox.display()))?;
    let archive = busybox_initramfs(&busybox, init, applets).finish();
    let dir = guest
        .kernel
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let path = dir.join(name);
    let io = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, &archive).map_err(io)?;
    // A temporary file is private (0600); the archive is no secret.
    let mut permissions = tmp.as_file().metadata().map_err(io)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
    tmp.as_file().set_permissions(permissions).map_err(io)?;
    tmp.persist(&path).map_err(|e| io(e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_run_line_boots_the_test_modules() {
        assert_eq!(
            vm_run_line(),
            format!("vm run vmlinuz initrd=initramfs.cpio cmdline=\"{TEST_CMDLINE}\" mem=256")
        );
    }

    #[test]
    fn the_test_init_prints_both_markers_and_powers_off() {
        let init = TEST_INIT.find(&format!("echo {INIT_MARKER}\n")).unwrap();
        let done = TEST_INIT.find(&format!("echo {DONE_MARKER}\n")).unwrap();
        assert!(init < done);
        assert!(TEST_INIT.trim_end().ends_with("poweroff -f"));
    }
}
