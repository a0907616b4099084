//! The demo VM: what a new user sees running after `keel run`.
//!
//! Without `--config` and `--store` (and without `--no-demo`), `keel build` and `keel run`
//! make the image's guest store from `target/keel/demo-store/` ([`prepare_demo_store`]):
//!
//! - `vmlinuz`: Debian 12's stock kernel ([`crate::linux_guest`] downloads it with apt);
//! - `demo-initramfs.cpio`: [`demo_initramfs`], busybox with the ACPI button and evdev
//!   modules from the same kernel package.
//!
//! and its configuration from `config/demo.toml` plus the build's API token
//! ([`demo_config`]): one VM, `demo`, that autostarts.
//!
//! # The guest
//!
//! `/init` ([`DEMO_INIT`]) mounts `/proc`, `/sys` and `/dev`, installs the busybox applets,
//! sets the hostname `demo`, loads `button.ko` and `evdev.ko` and starts busybox `acpid`, then
//! hands PID 1 to busybox `init` ([`INITTAB`]), which keeps a login shell on the serial
//! console (`cttyhack` makes ttyS0 its controlling terminal, so Ctrl-C works). Each shell
//! prints [`BANNER_PREFIX`]` <release> …` ([`PROFILE`]) and the prompt `demo:/# `.
//!
//! Power-off, both ways, ends in the kernel's ACPI S5 (PM1a_CNT SLP_TYP/SLP_EN), which Keel
//! reports as `guest powered off`:
//!
//! - `poweroff` in the shell signals PID 1 (busybox `init`, SIGUSR2), which stops every
//!   process and calls `reboot(RB_POWER_OFF)`. (A shell script as PID 1 would not do: it
//!   runs a trap only after its foreground child, the interactive shell, has exited.)
//! - The ACPI power button (`vm stop demo`, QEMU's `system_powerdown`): `button.ko` turns the
//!   fixed-feature event into `KEY_POWER` on an input device, `evdev.ko` makes it
//!   `/dev/input/event0`, and busybox `acpid` maps it (its default map: `KEY_POWER` →
//!   `button/power PWRF 00000080`; [`ACPID_CONF`]: `PWRF` → action `PWRF/00000080`) to the
//!   script `/etc/acpi/PWRF/00000080` ([`POWER_BUTTON_ACTION`]), which runs `poweroff`.

use std::io::Write;
use std::path::{Path, PathBuf};

use keel_config::Config;

use crate::linux_guest::{LinuxGuest, LinuxGuestError, busybox_initramfs, linux_guest};

/// `config/demo.toml`: the demo configuration, without the API token.
pub const DEMO_CONFIG_TOML: &str = include_str!("../../config/demo.toml");

/// The directory under `target/keel/` that becomes the demo image's guest store.
pub const DEMO_STORE_DIR: &str = "demo-store";

/// The demo VM's kernel in the store (Debian's `vmlinuz`).
pub const DEMO_KERNEL: &str = "vmlinuz";

/// The demo VM's initramfs in the store ([`demo_initramfs`]).
pub const DEMO_INITRAMFS: &str = "demo-initramfs.cpio";

/// The guest's hostname (and the prompt's `demo:/# `).
pub const DEMO_HOSTNAME: &str = "demo";

/// The start of the banner each guest shell prints, followed by `uname -r`.
pub const BANNER_PREFIX: &str = "Keel demo VM: Linux";

/// The guest shell's prompt in `/`.
pub const DEMO_PROMPT: &str = "demo:/# ";

/// The demo `/init` (busybox sh, after `#!/bin/busybox sh` and `export PATH=/bin`; see
/// [`busybox_initramfs`]).
pub const DEMO_INIT: &str = r#"mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
hostname demo
# The ACPI power button: button.ko reports it as KEY_POWER on an input device, evdev.ko
# makes that /dev/input/event0, and acpid runs /etc/acpi/PWRF/00000080 for it.
insmod /lib/modules/button.ko
insmod /lib/modules/evdev.ko
if [ -e /dev/input/event0 ]; then
    acpid
else
    echo "demo: no /dev/input/event0: the ACPI power button will not stop this VM"
fi
# busybox init as PID 1: it keeps a shell on the console (/etc/inittab) and powers the VM
# off when `poweroff` asks it to.
exec init
"#;

/// busybox `init`'s table: a login shell on the console's real tty, started again when it
/// exits.
pub const INITTAB: &str = "\
# busybox init (PID 1 after /init): <id>::<action>:<command>
::respawn:/bin/cttyhack /bin/sh -l
";

/// `/etc/profile`, read by each login shell: the prompt and the banner.
pub const PROFILE: &str = r#"export PS1='\h:\w\$ '
echo
echo "Keel demo VM: Linux $(uname -r) - type commands here; 'poweroff' to stop"
"#;

/// busybox `acpid`'s action file (`/etc/acpid.conf`): `<substring of the event> <action>`;
/// the action is a path under `/etc/acpi` (a script to run, or a directory for run-parts).
pub const ACPID_CONF: &str = "\
# <substring of the event description> <handler under /etc/acpi>
PWRF PWRF/00000080
";

/// `/etc/acpi/PWRF/00000080`: what the power button does.
pub const POWER_BUTTON_ACTION: &str = "#!/bin/sh\npoweroff\n";

/// The busybox applets `/init` runs before `busybox --install` links the rest.
const INIT_APPLETS: &[&str] = &["mount", "hostname"];

/// The demo initramfs ([`DEMO_INIT`] and its files) around `busybox` and the two kernel
/// modules (plain `.ko` files, which busybox `insmod` needs).
pub fn demo_initramfs(busybox: &[u8], button_ko: &[u8], evdev_ko: &[u8]) -> Vec<u8> {
    let mut c = busybox_initramfs(busybox, DEMO_INIT, INIT_APPLETS);
    for d in ["lib/modules", "etc", "etc/acpi", "etc/acpi/PWRF", "var"] {
        c.dir(d);
    }
    // acpid's default log file and pid file.
    c.dir("var/log");
    c.dir("var/run");
    c.file("lib/modules/button.ko", 0o644, button_ko);
    c.file("lib/modules/evdev.ko", 0o644, evdev_ko);
    c.file("etc/inittab", 0o644, INITTAB.as_bytes());
    c.file("etc/profile", 0o644, PROFILE.as_bytes());
    c.file("etc/acpid.conf", 0o644, ACPID_CONF.as_bytes());
    c.file(
        "etc/acpi/PWRF/00000080",
        0o755,
        POWER_BUTTON_ACTION.as_bytes(),
    );
    c.finish()
}

/// Why the demo store could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Downloading or unpacking Debian's kernel and busybox failed.
    #[error("cannot fetch Debian's kernel and busybox: {0}")]
    FetchGuest(#[from] LinuxGuestError),
    /// Reading a downloaded file failed.
    #[error("cannot read {}: {source}", path.display())]
    ReadGuestFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing a store file failed.
    #[error("cannot write {}: {source}", path.display())]
    WriteStoreFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `<workspace>/target/keel/demo-store`.
pub fn demo_store_dir() -> PathBuf {
    crate::output_dir().join(DEMO_STORE_DIR)
}

/// Fetches the Linux guest when it is not in `target/linux-guest/` yet and writes
/// [`DEMO_KERNEL`] and [`DEMO_INITRAMFS`] into `dir` (created if needed; each file appears
/// atomically). Returns the guest it used.
pub fn prepare_demo_store(dir: &Path) -> Result<LinuxGuest, DemoError> {
    let guest = linux_guest()?;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| DemoError::ReadGuestFile {
            path: path.to_path_buf(),
            source,
        })
    };
    let initramfs = demo_initramfs(
        &read(&guest.busybox)?,
        &read(&guest.button)?,
        &read(&guest.evdev)?,
    );
    std::fs::create_dir_all(dir).map_err(|source| DemoError::WriteStoreFile {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomically(&dir.join(DEMO_KERNEL), &read(&guest.kernel)?)?;
    write_atomically(&dir.join(DEMO_INITRAMFS), &initramfs)?;
    Ok(guest)
}

/// Writes `data` to `path` through a temporary file next to `path`'s directory (not in it:
/// every file in the store directory goes into the image), then a rename.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), DemoError> {
    let error = |source| DemoError::WriteStoreFile {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp_dir = dir.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".keel-demo-")
        .tempfile_in(tmp_dir)
        .map_err(error)?;
    tmp.write_all(data).map_err(error)?;
    // A temporary file is private (0600); the guest files are no secret.
    let mut permissions = tmp.as_file().metadata().map_err(error)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
    tmp.as_file().set_permissions(permissions).map_err(error)?;
    tmp.persist(path).map_err(|e| error(e.error))?;
    Ok(())
}

/// The demo configuration: `config/demo.toml` with `token` as the only API token.
pub fn demo_config(token: &str) -> Config {
    // Cannot fail: the file is compiled in, and `demo_toml_is_valid_and_matches_the_store`
    // checks it parses and validates.
    let mut config =
        crate::appliance::parse_toml(DEMO_CONFIG_TOML).expect("config/demo.toml is valid");
    config.management.api_tokens.push(token.to_owned());
    config
}

#[cfg(test)]
#[path = "demo_tests.rs"]
mod tests;
