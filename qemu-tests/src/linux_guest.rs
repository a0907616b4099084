//! A real Linux guest: Debian 12's stock kernel and `busybox-static`, fetched with apt, and
//! initramfs archives built here in the `newc` cpio format.
//!
//! [`linux_guest`] runs `apt-get download` for `linux-image-6.1.0-<abi>-amd64` (the newest
//! apt knows) and `busybox-static`, unpacks them with `dpkg -x` into `target/linux-guest/`
//! and keeps what is needed there: `vmlinuz`, `e1000.ko`, `busybox-static/bin/busybox`, and
//! the package name and version. Later calls find the files and download nothing. On a fresh
//! Debian machine whose package list is empty, `apt-get update` runs once first (as root).
//!
//! [`Cpio`] writes a `newc` archive; [`busybox_initramfs`] starts one with busybox, links for
//! the applets an `/init` script uses, `/dev/console`, and the script itself.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory under the workspace's `target/` where the downloads are kept.
pub const GUEST_DIR: &str = "linux-guest";

/// The downloaded Linux guest, as [`linux_guest`] left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxGuest {
    /// The kernel image (bzImage) from the Debian package.
    pub kernel: PathBuf,
    /// Debian's `e1000.ko` for that kernel (the e1000 driver is a module there).
    pub e1000: PathBuf,
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

fn run(cmd: &mut Command, what: &str, hint: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "{what}: could not run {:?} ({hint}): {e}",
            cmd.get_program()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ABI number of a `linux-image-6.1.0-<abi>-amd64` package name.
fn kernel_abi(name: &str) -> Option<u32> {
    name.strip_prefix("linux-image-6.1.0-")?
        .strip_suffix("-amd64")?
        .parse()
        .ok()
}

/// The newest `linux-image-6.1.0-<abi>-amd64` apt knows (the stock signed kernel).
fn kernel_package() -> Result<String, String> {
    let search = || {
        run(
            Command::new("apt-cache").args([
                "search",
                "--names-only",
                r"^linux-image-6\.1\.0-[0-9]+-amd64$",
            ]),
            "apt-cache search",
            "Debian's apt",
        )
    };
    let mut out = search()?;
    if out.trim().is_empty() {
        eprintln!("linux-guest: apt's package list is empty; running apt-get update once");
        run(
            Command::new("apt-get").arg("update"),
            "apt-get update",
            "needs root; run `sudo apt-get update`",
        )?;
        out = search()?;
    }
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| Some((kernel_abi(name)?, name.to_owned())))
        .max()
        .map(|(_, name)| name)
        .ok_or_else(|| "apt-cache knows no linux-image-6.1.0-*-amd64 package".to_owned())
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
fn fetch(package: &str, dir: &Path, into: &str) -> Result<(PathBuf, String), String> {
    eprintln!("linux-guest: downloading {package} (apt-get download)");
    run(
        Command::new("apt-get")
            .args(["download", package])
            .current_dir(dir),
        &format!("apt-get download {package}"),
        "Debian's apt",
    )?;
    let (deb, version) = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let version = deb_version(&name, package)?;
            Some((p, version))
        })
        .ok_or_else(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                dir.display()
            )
        })?;
    let target = dir.join(into);
    let _ = std::fs::remove_dir_all(&target);
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&target),
        &format!("dpkg -x {}", deb.display()),
        "Debian's dpkg",
    )?;
    let _ = std::fs::remove_file(&deb);
    Ok((target, version))
}

fn find_file(root: &Path, name_prefix: &str, suffix: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(root).ok()?.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ty = entry.file_type().ok()?;
        if ty.is_dir() {
            if let Some(found) = find_file(&path, name_prefix, suffix) {
                return Some(found);
            }
        } else if name.starts_with(name_prefix) && name.ends_with(suffix) {
            return Some(path);
        }
    }
    None
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}

/// Unpacks the kernel package and keeps `vmlinuz` and `e1000.ko` in `dir`; returns the
/// package name and version.
fn fetch_kernel(dir: &Path, kernel: &Path, e1000: &Path) -> Result<(String, String), String> {
    let package = kernel_package()?;
    let (tree, version) = fetch(&package, dir, "kernel-deb")?;
    let vmlinuz = find_file(&tree.join("boot"), "vmlinuz-", "")
        .ok_or_else(|| format!("{package} has no boot/vmlinuz-*"))?;
    copy(&vmlinuz, kernel)?;
    // Debian 12 ships modules uncompressed; a later kernel may ship .ko.xz.
    let modules = tree.join("lib/modules");
    if let Some(ko) = find_file(&modules, "e1000.ko", ".ko") {
        copy(&ko, e1000)?;
    } else if let Some(xz) = find_file(&modules, "e1000.ko", ".ko.xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(&xz)
            .output()
            .map_err(|e| format!("could not run xz (Debian package xz-utils): {e}"))?;
        if !out.status.success() {
            return Err(format!("xz -dc {} failed ({})", xz.display(), out.status));
        }
        std::fs::write(e1000, out.stdout).map_err(|e| format!("writing e1000.ko: {e}"))?;
    } else {
        return Err(format!("{package} has no e1000.ko"));
    }
    let _ = std::fs::remove_dir_all(&tree);
    Ok((package, version))
}

/// The kernel, e1000 module and busybox in `target/linux-guest/`, downloaded when missing.
/// Safe to call from several processes only one at a time (the test binaries run one after
/// another); within a process, call it once.
pub fn linux_guest() -> Result<LinuxGuest, String> {
    let dir = keel_image::workspace_root().join("target").join(GUEST_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let kernel = dir.join("vmlinuz");
    let e1000 = dir.join("e1000.ko");
    let name_file = dir.join("kernel-package");
    let version_file = dir.join("kernel-version");
    let have_kernel =
        kernel.exists() && e1000.exists() && name_file.exists() && version_file.exists();
    if !have_kernel {
        let (package, version) = fetch_kernel(&dir, &kernel, &e1000)?;
        // Written last: their presence says the kernel files are complete.
        std::fs::write(&version_file, &version).map_err(|e| format!("kernel-version: {e}"))?;
        std::fs::write(&name_file, &package).map_err(|e| format!("kernel-package: {e}"))?;
    }
    let busybox = dir.join("busybox-static/bin/busybox");
    if !busybox.exists() {
        fetch("busybox-static", &dir, "busybox-static")?;
        if !busybox.exists() {
            return Err("busybox-static has no bin/busybox".into());
        }
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let kernel_package = read(&name_file)?;
    let kernel_version = read(&version_file)?;
    let kernel_release = kernel_package
        .strip_prefix("linux-image-")
        .unwrap_or(&kernel_package)
        .to_owned();
    Ok(LinuxGuest {
        kernel,
        e1000,
        busybox,
        kernel_package,
        kernel_release,
        kernel_version,
    })
}

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

/// Writes the test initramfs ([`TEST_INIT`] on busybox) to
/// `target/linux-guest/initramfs.cpio` (through a temporary file, so a reader never sees half
/// of it) and returns the path.
pub fn write_test_initramfs(guest: &LinuxGuest) -> Result<PathBuf, String> {
    let busybox =
        std::fs::read(&guest.busybox).map_err(|e| format!("{}: {e}", guest.busybox.display()))?;
    let archive = busybox_initramfs(&busybox, TEST_INIT, TEST_APPLETS).finish();
    let dir = guest
        .kernel
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let path = dir.join(TEST_INITRAMFS);
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

/// A `newc` cpio archive, what the kernel unpacks as an initramfs. Parents must be added
/// before what they hold (the kernel's unpacker creates no directories by itself).
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// One entry: `mode` holds the file type bits; `rdev` is (major, minor) for devices.
    pub fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    /// A directory (0755).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    /// A regular file with permission bits `mode`.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data, (0, 0));
    }

    /// A symbolic link `name` → `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes(), (0, 0));
    }

    /// A character device (0600).
    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, &[], (major, minor));
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

/// An initramfs that runs `init_body` with busybox's `sh` as `/init`: directories `bin`,
/// `dev`, `proc`, `sys`, `lib`, `tmp`, `/dev/console`, `/bin/busybox`, and `/bin/<applet>` →
/// `busybox` for each of `applets` (`sh` always). The script starts with `PATH=/bin`. Add
/// further files to the returned archive, then [`Cpio::finish`] it.
pub fn busybox_initramfs(busybox: &[u8], init_body: &str, applets: &[&str]) -> Cpio {
    let mut c = Cpio::new();
    for d in ["bin", "dev", "proc", "sys", "lib", "tmp"] {
        c.dir(d);
    }
    c.char_device("dev/console", 5, 1);
    c.file("bin/busybox", 0o755, busybox);
    let mut linked = vec!["sh"];
    for a in applets {
        if !linked.contains(a) {
            linked.push(a);
        }
    }
    for applet in linked {
        c.symlink(&format!("bin/{applet}"), "busybox");
    }
    let init = format!("#!/bin/busybox sh\nexport PATH=/bin\n{init_body}");
    c.file("init", 0o755, init.as_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, data) of each entry, read back.
    fn entries(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&archive[at..at + 6], b"070701", "magic at {at}");
            let field = |i: usize| hex(&archive[at + 6 + i * 8..at + 14 + i * 8]);
            let (mode, size, name_len) = (field(1), field(6) as usize, field(11) as usize);
            let name_at = at + 110;
            let name = std::str::from_utf8(&archive[name_at..name_at + name_len - 1])
                .unwrap()
                .to_owned();
            assert_eq!(archive[name_at + name_len - 1], 0);
            let data_at = (name_at + name_len).next_multiple_of(4);
            let data = archive[data_at..data_at + size].to_vec();
            at = (data_at + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(at, archive.len());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn cpio_entries_read_back() {
        let mut c = Cpio::new();
        c.dir("bin");
        c.file("bin/x", 0o755, b"hello");
        c.symlink("bin/y", "x");
        c.char_device("dev/console", 5, 1);
        let archive = c.finish();
        assert_eq!(archive.len() % 4, 0);
        let e = entries(&archive);
        assert_eq!(e[0], ("bin".into(), 0o040755, vec![]));
        assert_eq!(e[1], ("bin/x".into(), 0o100755, b"hello".to_vec()));
        assert_eq!(e[2], ("bin/y".into(), 0o120777, b"x".to_vec()));
        assert_eq!(e[3].1, 0o020600);
    }

    #[test]
    fn busybox_initramfs_links_the_applets() {
        let archive = busybox_initramfs(b"BB", "echo hi\n", &["mount", "sh", "poweroff"]).finish();
        let e = entries(&archive);
        let names: Vec<&str> = e.iter().map(|(n, _, _)| n.as_str()).collect();
        for n in [
            "bin",
            "dev/console",
            "bin/busybox",
            "bin/sh",
            "bin/mount",
            "init",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert_eq!(names.iter().filter(|n| **n == "bin/sh").count(), 1);
        let init = e.iter().find(|(n, _, _)| n == "init").unwrap();
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.2, b"#!/bin/busybox sh\nexport PATH=/bin\necho hi\n");
        let bin = names.iter().position(|n| *n == "bin").unwrap();
        let busybox = names.iter().position(|n| *n == "bin/busybox").unwrap();
        assert!(bin < busybox, "parents first");
    }

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
}
