//! A real Linux guest: Debian 12's stock kernel and `busybox-static`, fetched with apt, and
//! initramfs archives built here in the `newc` cpio format.
//!
//! [`linux_guest`] runs `apt-get download` for `linux-image-6.1.0-<abi>-amd64` (the newest
//! apt knows) and `busybox-static`, unpacks them with `dpkg -x` into
//! `<workspace>/target/linux-guest/` and keeps what is needed there: `vmlinuz`, the kernel
//! modules of [`KEPT_MODULES`] (decompressed when the package ships `.ko.xz`, since busybox
//! `insmod` loads only plain ELF objects), `busybox-static/bin/busybox`, and the package name
//! and version. Later calls find the files and download nothing. On a fresh Debian machine
//! whose package list is empty, `apt-get update` runs once first (as root).
//!
//! [`Cpio`] writes a `newc` archive; [`busybox_initramfs`] starts one with busybox, links for
//! the applets an `/init` script uses, `/dev/console`, and the script itself.
//!
//! Users: the demo VM of `keel run` ([`crate::demo`]), the Linux-guest tests and benchmarks in
//! `qemu-tests`.

pub(crate) mod cpio;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

pub use cpio::{Cpio, busybox_initramfs};

/// The directory under the workspace's `target/` where the downloads are kept.
pub const GUEST_DIR: &str = "linux-guest";

/// The kernel modules kept from the kernel package: the file name in
/// `target/linux-guest/` and the path under `lib/modules/<release>/kernel/`.
///
/// - `e1000.ko`: the Intel e1000 NIC driver (the HTTP benchmark's guest network).
/// - `button.ko`: the ACPI button driver, which turns the fixed-feature power button
///   (PM1 PWRBTN_STS) into a `KEY_POWER` input event.
/// - `evdev.ko`: `/dev/input/event*`, where busybox `acpid` reads that event.
pub const KEPT_MODULES: [(&str, &str); 3] = [
    ("e1000.ko", "drivers/net/ethernet/intel/e1000/e1000.ko"),
    ("button.ko", "drivers/acpi/button.ko"),
    ("evdev.ko", "drivers/input/evdev.ko"),
];

/// The downloaded Linux guest, as [`linux_guest`] left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxGuest {
    /// The kernel image (bzImage) from the Debian package.
    pub kernel: PathBuf,
    /// Debian's `e1000.ko` for that kernel (the e1000 driver is a module there).
    pub e1000: PathBuf,
    /// Debian's ACPI button driver, `button.ko` (a module there).
    pub button: PathBuf,
    /// Debian's event device driver, `evdev.ko` (a module there).
    pub evdev: PathBuf,
    /// The static busybox binary.
    pub busybox: PathBuf,
    /// The kernel package, such as `linux-image-6.1.0-28-amd64`.
    pub kernel_package: String,
    /// The kernel release `uname -r` prints, such as `6.1.0-28-amd64`.
    pub kernel_release: String,
    /// The Debian package version, such as `6.1.119-1`; `uname -v` prints
    /// `#1 SMP PREEMPT_DYNAMIC Debian <version> (<date>)`.
    pub kernel_version: String,
}

/// Why the Linux guest could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum LinuxGuestError {
    /// A tool (apt-get, apt-cache, dpkg, xz) could not be started.
    #[error("cannot run {program} ({hint}): {source}")]
    RunTool {
        /// The program.
        program: String,
        /// What provides it.
        hint: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{command} failed ({status}){hint}: {output}")]
    ToolFailed {
        /// The command, as typed.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What might help, starting with "; " (or empty).
        hint: &'static str,
        /// Its stdout and stderr.
        output: String,
    },
    /// apt's package lists have no Debian 12 kernel.
    #[error(
        "apt knows no linux-image-6.1.0-*-amd64 package: Debian 12 (bookworm) must be in \
         /etc/apt/sources.list; then run `sudo apt-get update`"
    )]
    NoKernelPackage,
    /// `apt-get download` succeeded but no `.deb` is there.
    #[error("apt-get download {package} left no .deb in {}", dir.display())]
    NoDeb {
        /// The package.
        package: String,
        /// Where it was downloaded.
        dir: PathBuf,
    },
    /// A package lacks a file this module needs.
    #[error("{package} has no {path}")]
    MissingFile {
        /// The package.
        package: String,
        /// The file, inside the package.
        path: String,
    },
    /// Reading or writing a file under `target/linux-guest/` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LinuxGuestError + '_ {
    move |source| LinuxGuestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs `cmd` and returns its stdout; `hint` says what provides the program (when it is
/// missing), `fail_hint` what might fix a failure (`"; ..."` or empty).
fn run(
    cmd: &mut Command,
    hint: &'static str,
    fail_hint: &'static str,
) -> Result<Vec<u8>, LinuxGuestError> {
    let out = cmd.output().map_err(|source| LinuxGuestError::RunTool {
        program: cmd.get_program().to_string_lossy().into_owned(),
        hint,
        source,
    })?;
    if !out.status.success() {
        let mut command = cmd.get_program().to_string_lossy().into_owned();
        for arg in cmd.get_args() {
            command.push(' ');
            command.push_str(&arg.to_string_lossy());
        }
        return Err(LinuxGuestError::ToolFailed {
            command,
            status: out.status,
            hint: fail_hint,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_owned(),
        });
    }
    Ok(out.stdout)
}

/// The ABI number of a `linux-image-6.1.0-<abi>-amd64` package name.
fn kernel_abi(name: &str) -> Option<u32> {
    name.strip_prefix("linux-image-6.1.0-")?
        .strip_suffix("-amd64")?
        .parse()
        .ok()
}

/// The newest `linux-image-6.1.0-<abi>-amd64` in `apt-cache search` output.
fn newest_kernel_package(search_output: &str) -> Option<String> {
    search_output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| Some((kernel_abi(name)?, name.to_owned())))
        .max()
        .map(|(_, name)| name)
}

/// The newest `linux-image-6.1.0-<abi>-amd64` apt knows (the stock signed kernel).
fn kernel_package() -> Result<String, LinuxGuestError> {
    let search = || {
        run(
            Command::new("apt-cache").args([
                "search",
                "--names-only",
                r"^linux-image-6\.1\.0-[0-9]+-amd64$",
            ]),
            "Debian's apt",
            "",
        )
        .map(|out| String::from_utf8_lossy(&out).into_owned())
    };
    let mut out = search()?;
    if out.trim().is_empty() {
        eprintln!("linux-guest: apt's package list is empty; running apt-get update once");
        run(
            Command::new("apt-get").arg("update"),
            "Debian's apt",
            "; it needs root: run `sudo apt-get update`",
        )?;
        out = search()?;
    }
    newest_kernel_package(&out).ok_or(LinuxGuestError::NoKernelPackage)
}

/// The version in a `.deb` file name, `<package>_<version>_<arch>.deb` (apt writes an
/// epoch's `:` as `%3a`).
fn deb_version(file_name: &str, package: &str) -> Option<String> {
    let rest = file_name.strip_prefix(package)?.strip_prefix('_')?;
    let (version, _arch) = rest.strip_suffix(".deb")?.rsplit_once('_')?;
    let version = match version.split_once("%3a") {
        Some((_epoch, v)) => v,
        None => version,
    };
    (!version.is_empty()).then(|| version.to_owned())
}

/// `apt-get download <package>` into `dir`, then `dpkg -x` into `dir/<into>`; returns the
/// unpacked tree and the package version.
fn fetch(package: &str, dir: &Path, into: &str) -> Result<(PathBuf, String), LinuxGuestError> {
    eprintln!("linux-guest: downloading {package} (apt-get download)");
    run(
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(dir),
        "Debian's apt",
        "; check the network and apt's sources (`sudo apt-get update`)",
    )?;
    let (deb, version) = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let version = deb_version(&name, package)?;
            Some((p, version))
        })
        .ok_or_else(|| LinuxGuestError::NoDeb {
            package: package.to_owned(),
            dir: dir.to_path_buf(),
        })?;
    let target = dir.join(into);
    let _ = std::fs::remove_dir_all(&target);
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&target),
        "Debian's dpkg",
        "",
    )?;
    let _ = std::fs::remove_file(&deb);
    Ok((target, version))
}

/// The first file in `dir` (not recursive) whose name starts with `prefix`.
fn find_prefixed(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
}

fn copy(from: &Path, to: &Path) -> Result<(), LinuxGuestError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| LinuxGuestError::Io {
            path: from.to_path_buf(),
            source,
        })
}

/// Copies the module at `ko` (or, when the package compresses modules, `ko.xz` through
/// `xz -dc`) to `to`. Debian 12 ships modules uncompressed; later kernels ship `.ko.xz`.
fn copy_module(ko: &Path, to: &Path, package: &str, relative: &str) -> Result<(), LinuxGuestError> {
    if ko.is_file() {
        return copy(ko, to);
    }
    let mut xz = ko.as_os_str().to_owned();
    xz.push(".xz");
    let xz = PathBuf::from(xz);
    if !xz.is_file() {
        return Err(LinuxGuestError::MissingFile {
            package: package.to_owned(),
            path: format!("lib/modules/<release>/kernel/{relative}"),
        });
    }
    let plain = run(
        Command::new("xz").arg("-dc").arg(&xz),
        "Debian package xz-utils",
        "",
    )?;
    std::fs::write(to, plain).map_err(io_error(to))
}

/// Unpacks the kernel package and keeps `vmlinuz` and [`KEPT_MODULES`] in `dir`; returns the
/// package name and version.
fn fetch_kernel(dir: &Path, kernel: &Path) -> Result<(String, String), LinuxGuestError> {
    let package = kernel_package()?;
    let (tree, version) = fetch(&package, dir, "kernel-deb")?;
    let missing = |path: &str| LinuxGuestError::MissingFile {
        package: package.clone(),
        path: path.to_owned(),
    };
    let vmlinuz =
        find_prefixed(&tree.join("boot"), "vmlinuz-").ok_or_else(|| missing("boot/vmlinuz-*"))?;
    copy(&vmlinuz, kernel)?;
    let modules = find_prefixed(&tree.join("lib/modules"), "")
        .ok_or_else(|| missing("lib/modules/<release>/"))?
        .join("kernel");
    for (name, relative) in KEPT_MODULES {
        copy_module(&modules.join(relative), &dir.join(name), &package, relative)?;
    }
    let _ = std::fs::remove_dir_all(&tree);
    Ok((package, version))
}

/// `<workspace>/target/linux-guest`: where [`linux_guest`] keeps its downloads.
pub fn guest_dir() -> PathBuf {
    crate::workspace_root().join("target").join(GUEST_DIR)
}

/// The kernel, its kept modules and busybox in `target/linux-guest/`, downloaded when
/// missing. Safe to call from several processes only one at a time (the test binaries run one
/// after another); within a process, call it once.
pub fn linux_guest() -> Result<LinuxGuest, LinuxGuestError> {
    let dir = guest_dir();
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let kernel = dir.join("vmlinuz");
    let name_file = dir.join("kernel-package");
    let version_file = dir.join("kernel-version");
    let have_kernel = kernel.exists()
        && KEPT_MODULES.iter().all(|(name, _)| dir.join(name).exists())
        && name_file.exists()
        && version_file.exists();
    if !have_kernel {
        // The markers go first so that a half-finished download is never taken as complete.
        let _ = std::fs::remove_file(&name_file);
        let _ = std::fs::remove_file(&version_file);
        let (package, version) = fetch_kernel(&dir, &kernel)?;
        // Written last: their presence says the kernel files are complete.
        std::fs::write(&version_file, &version).map_err(io_error(&version_file))?;
        std::fs::write(&name_file, &package).map_err(io_error(&name_file))?;
    }
    let busybox = dir.join("busybox-static/bin/busybox");
    if !busybox.exists() {
        fetch("busybox-static", &dir, "busybox-static")?;
        if !busybox.exists() {
            return Err(LinuxGuestError::MissingFile {
                package: "busybox-static".to_owned(),
                path: "bin/busybox".to_owned(),
            });
        }
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .map_err(io_error(p))
    };
    let kernel_package = read(&name_file)?;
    let kernel_version = read(&version_file)?;
    let kernel_release = kernel_package
        .strip_prefix("linux-image-")
        .unwrap_or(&kernel_package)
        .to_owned();
    Ok(LinuxGuest {
        kernel,
        e1000: dir.join("e1000.ko"),
        button: dir.join("button.ko"),
        evdev: dir.join("evdev.ko"),
        busybox,
        kernel_package,
        kernel_release,
        kernel_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_versions() {
        assert_eq!(
            deb_version(
                "linux-image-6.1.0-28-amd64_6.1.119-1_amd64.deb",
                "linux-image-6.1.0-28-amd64"
            )
            .as_deref(),
            Some("6.1.119-1")
        );
        assert_eq!(
            deb_version("busybox-static_1%3a1.35.0-4+b3_amd64.deb", "busybox-static").as_deref(),
            Some("1.35.0-4+b3")
        );
        assert_eq!(deb_version("other_1_amd64.deb", "busybox-static"), None);
        assert_eq!(
            deb_version("busybox-static_1_amd64.txt", "busybox-static"),
            None
        );
    }

    #[test]
    fn kernel_abis() {
        assert_eq!(kernel_abi("linux-image-6.1.0-28-amd64"), Some(28));
        assert_eq!(kernel_abi("linux-image-6.1.0-28-cloud-amd64"), None);
    }

    #[test]
    fn the_newest_kernel_package_wins_numerically() {
        let out = "linux-image-6.1.0-9-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                   linux-image-6.1.0-28-amd64 - Linux 6.1 for 64-bit PCs (signed)\n\
                   linux-image-6.1.0-28-cloud-amd64 - Linux 6.1 for x86-64 cloud\n";
        assert_eq!(
            newest_kernel_package(out).as_deref(),
            Some("linux-image-6.1.0-28-amd64")
        );
        assert_eq!(newest_kernel_package(""), None);
    }

    #[test]
    fn modules_are_copied_plain_or_decompressed_or_reported_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("a.ko");
        std::fs::write(&plain, b"\x7fELF plain").unwrap();
        let out = tmp.path().join("out.ko");
        copy_module(&plain, &out, "pkg", "drivers/a.ko").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"\x7fELF plain");

        let missing = copy_module(&tmp.path().join("b.ko"), &out, "pkg", "drivers/b.ko")
            .unwrap_err()
            .to_string();
        assert_eq!(
            missing,
            "pkg has no lib/modules/<release>/kernel/drivers/b.ko"
        );

        if crate::find_in_path("xz").is_none() {
            eprintln!("SKIPPED the .ko.xz case: xz not installed");
            return;
        }
        let packed = tmp.path().join("c.ko");
        std::fs::write(&packed, b"\x7fELF packed").unwrap();
        let status = Command::new("xz").arg(&packed).status().unwrap();
        assert!(status.success());
        assert!(!packed.exists(), "xz replaces c.ko with c.ko.xz");
        copy_module(&packed, &out, "pkg", "drivers/c.ko").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"\x7fELF packed");
    }

    #[test]
    fn tool_failures_name_the_command_and_the_fix() {
        let err = run(
            Command::new("sh").args(["-c", "echo no network >&2; exit 3"]),
            "sh",
            "; check the network",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("sh -c echo no network >&2; exit 3 failed (exit status: 3); check the network: no network"), "{err}");
        let err = run(
            &mut Command::new("keel-no-such-tool-xyz"),
            "Debian's apt",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("cannot run keel-no-such-tool-xyz (Debian's apt): "),
            "{err}"
        );
    }
}
