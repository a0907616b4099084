//! The guest-disk tests' Linux guest and its disks: Debian's virtio-blk and ext4 drivers (modules
//! in Debian's kernel) loaded by `insmod` from the initramfs, ext4 images made and read back on
//! the host (`mke2fs -d`, `debugfs`, `e2fsck`), and the `/init` script ([`DISK_INIT`]) that
//! mounts `/dev/vda`, reports what it finds and writes a file.
//!
//! [`disk_modules`] downloads the kernel package [`linux_guest`](crate::linux_guest) uses once
//! more (`apt-get download <package>=<version>`), resolves the dependencies of
//! [`ROOT_MODULES`] from each module's `.modinfo` section, and keeps the modules, in load order,
//! in `target/linux-guest/disk-modules/<release>/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::linux_guest::{LinuxGuest, busybox_initramfs, guest_dir};

/// The modules the guest loads, in an order that respects soft dependencies: ext4 and jbd2
/// ask the crypto API for `crc32c` when mounting (a `softdep`, not in `depends=`), and without
/// modprobe in the initramfs it must already be there. Their `depends=` come on top.
pub const ROOT_MODULES: &[&str] = &["crc32c_generic", "virtio_pci", "virtio_blk", "ext4"];

/// Why a disk tool or download failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskToolError {
    /// A program could not be started.
    #[error(
        "cannot run {program} (install Debian's {package}, or run image-builder/install-deps.sh): {source}"
    )]
    RunTool {
        /// The program.
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{command} failed ({status}): {output}")]
    ToolFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stdout and stderr.
        output: String,
    },
    /// `debugfs` could not read a file out of an ext4 image.
    #[error("debugfs cannot read {path} in {}: {message}", image.display())]
    NotInImage {
        /// The ext4 image.
        image: PathBuf,
        /// The path inside it.
        path: String,
        /// What debugfs said.
        message: String,
    },
    /// A module needed is not in the kernel package.
    #[error("the kernel package {package} has no module {module}.ko (needed by {needed_by})")]
    MissingModule {
        /// The kernel package.
        package: String,
        /// The module.
        module: String,
        /// The module that depends on it, or "the tests".
        needed_by: String,
    },
    /// A module's dependencies form a cycle (a broken package).
    #[error("kernel modules depend on each other in a cycle: {0}")]
    DependencyCycle(String),
    /// A `.ko` is not an ELF64 object with a `.modinfo` section.
    #[error("{}: not a kernel module: {reason}", path.display())]
    BadModule {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DiskToolError + '_ {
    move |source| DiskToolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs `cmd` (from Debian package `package`), returning its stdout and stderr.
pub(crate) fn run_tool(
    cmd: &mut Command,
    package: &'static str,
) -> Result<(Vec<u8>, Vec<u8>), DiskToolError> {
    let out = cmd.output().map_err(|source| DiskToolError::RunTool {
        program: cmd.get_program().to_string_lossy().into_owned(),
        package,
        source,
    })?;
    if !out.status.success() {
        let command = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        return Err(DiskToolError::ToolFailed {
            command,
            status: out.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_owned(),
        });
    }
    Ok((out.stdout, out.stderr))
}

/// The `key=value` strings of a module's `.modinfo` section with key `key`.
pub fn modinfo_values(elf: &[u8], key: &str) -> Result<Vec<String>, &'static str> {
    let u16_at = |at: usize| -> Result<usize, &'static str> {
        let b = elf.get(at..at + 2).ok_or("truncated ELF header")?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |at: usize| -> Result<usize, &'static str> {
        let b = elf.get(at..at + 4).ok_or("truncated section header")?;
        usize::try_from(u32::from_le_bytes(b.try_into().map_err(|_| "bad slice")?))
            .map_err(|_| "offset too large")
    };
    let u64_at = |at: usize| -> Result<usize, &'static str> {
        let b = elf.get(at..at + 8).ok_or("truncated section header")?;
        usize::try_from(u64::from_le_bytes(b.try_into().map_err(|_| "bad slice")?))
            .map_err(|_| "offset too large")
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return Err("no ELF64 magic");
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28)?, u16_at(0x3A)?, u16_at(0x3C)?, u16_at(0x3E)?);
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(header(shstrndx) + 0x18)?;
    for i in 0..shnum {
        let name_at = strtab + u32_at(header(i))?;
        let name = elf
            .get(name_at..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .ok_or("section name out of range")?;
        if name != b".modinfo" {
            continue;
        }
        let (offset, size) = (u64_at(header(i) + 0x18)?, u64_at(header(i) + 0x20)?);
        let data = elf
            .get(offset..offset + size)
            .ok_or(".modinfo out of range")?;
        let prefix = format!("{key}=");
        return Ok(data
            .split(|&b| b == 0)
            .filter_map(|s| std::str::from_utf8(s).ok()?.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect());
    }
    Err("no .modinfo section")
}

/// Module names in load order: every module after the ones it depends on, `roots` in their
/// order otherwise. `depends(name)` gives a module's `depends=` list.
pub fn load_order(
    roots: &[&str],
    mut depends: impl FnMut(&str) -> Result<Vec<String>, DiskToolError>,
) -> Result<Vec<String>, DiskToolError> {
    fn visit(
        name: &str,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
        depends: &mut dyn FnMut(&str) -> Result<Vec<String>, DiskToolError>,
    ) -> Result<(), DiskToolError> {
        if order.iter().any(|n| n == name) {
            return Ok(());
        }
        if path.iter().any(|n| n == name) {
            return Err(DiskToolError::DependencyCycle(format!(
                "{} -> {name}",
                path.join(" -> ")
            )));
        }
        path.push(name.to_owned());
        for dep in depends(name)? {
            visit(&dep, path, order, depends)?;
        }
        path.pop();
        order.push(name.to_owned());
        Ok(())
    }
    let mut order = Vec::new();
    for root in roots {
        visit(root, &mut Vec::new(), &mut order, &mut depends)?;
    }
    Ok(order)
}

/// The disk modules, as [`disk_modules`] left them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskModules {
    /// `<name>.ko` files in load order.
    pub files: Vec<PathBuf>,
}

impl DiskModules {
    /// The module names in load order.
    pub fn names(&self) -> Vec<String> {
        self.files
            .iter()
            .filter_map(|f| Some(f.file_stem()?.to_string_lossy().into_owned()))
            .collect()
    }
}

/// The name a module file goes by (`crc32c-intel.ko.xz` → `crc32c_intel`): `depends=` writes
/// `-` as `_`.
fn module_name(file_name: &str) -> Option<String> {
    let stem = file_name
        .strip_suffix(".ko")
        .or_else(|| file_name.strip_suffix(".ko.xz"))?;
    Some(stem.replace('-', "_"))
}

fn index_modules(dir: &Path, index: &mut HashMap<String, PathBuf>) -> Result<(), DiskToolError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(name) = path
            .file_name()
            .and_then(|n| module_name(&n.to_string_lossy()))
        {
            index.insert(name, path);
        }
    }
    Ok(())
}

/// A module's bytes, decompressed when the package ships `.ko.xz` (busybox `insmod` loads
/// only plain ELF).
fn module_bytes(path: &Path) -> Result<Vec<u8>, DiskToolError> {
    if path.extension().is_some_and(|e| e == "xz") {
        Ok(run_tool(Command::new("xz").arg("-dc").arg(path), "xz-utils")?.0)
    } else {
        std::fs::read(path).map_err(io_error(path))
    }
}

/// [`ROOT_MODULES`] and their dependencies from `guest`'s kernel package, in load order, in
/// `target/linux-guest/disk-modules/<release>/` — downloaded and resolved the first time.
/// Within a process call it once (the tests keep it in a `OnceLock`).
pub fn disk_modules(guest: &LinuxGuest) -> Result<DiskModules, DiskToolError> {
    kernel_modules(guest, ROOT_MODULES, "disk-modules")
}

/// `roots` and their dependencies from `guest`'s kernel package, in load order, in
/// `target/linux-guest/<subdir>/<release>/` — downloaded and resolved the first time (the
/// disk guest's and the network guest's module sets, each in its own directory).
pub fn kernel_modules(
    guest: &LinuxGuest,
    roots: &[&str],
    subdir: &str,
) -> Result<DiskModules, DiskToolError> {
    let dir = guest_dir().join(subdir).join(&guest.kernel_release);
    let order_file = dir.join("load-order");
    if let Ok(order) = std::fs::read_to_string(&order_file) {
        let files: Vec<PathBuf> = order
            .lines()
            .map(|name| dir.join(format!("{name}.ko")))
            .collect();
        if files.iter().all(|f| f.is_file()) {
            return Ok(DiskModules { files });
        }
    }
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let work = tempfile::tempdir_in(guest_dir()).map_err(io_error(&guest_dir()))?;
    let package = &guest.kernel_package;
    eprintln!(
        "linux-guest: downloading {package} again for the modules {}",
        roots.join(", ")
    );
    run_tool(
        Command::new("apt-get")
            .args(["download", &format!("{package}={}", guest.kernel_version)])
            .current_dir(work.path()),
        "apt",
    )?;
    let deb = std::fs::read_dir(work.path())
        .map_err(io_error(work.path()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| DiskToolError::MissingModule {
            package: package.clone(),
            module: "(no .deb downloaded)".to_owned(),
            needed_by: "the tests".to_owned(),
        })?;
    let tree = work.path().join("tree");
    run_tool(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree), "dpkg")?;
    let modules_root = tree
        .join("lib/modules")
        .join(&guest.kernel_release)
        .join("kernel");
    let mut index = HashMap::new();
    index_modules(&modules_root, &mut index)?;

    let mut bytes: HashMap<String, Vec<u8>> = HashMap::new();
    let order = load_order(roots, |name| {
        let path = index
            .get(name)
            .ok_or_else(|| DiskToolError::MissingModule {
                package: package.clone(),
                module: name.to_owned(),
                needed_by: "the tests or another module".to_owned(),
            })?;
        let data = module_bytes(path)?;
        let deps = modinfo_values(&data, "depends").map_err(|reason| DiskToolError::BadModule {
            path: path.clone(),
            reason,
        })?;
        bytes.insert(name.to_owned(), data);
        Ok(deps
            .iter()
            .flat_map(|d| d.split(','))
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect())
    })?;
    let mut files = Vec::new();
    for name in &order {
        let file = dir.join(format!("{name}.ko"));
        std::fs::write(&file, &bytes[name]).map_err(io_error(&file))?;
        files.push(file);
    }
    // Written last: its presence says the modules are complete.
    std::fs::write(&order_file, order.join("\n") + "\n").map_err(io_error(&order_file))?;
    Ok(DiskModules { files })
}

/// The first line [`DISK_INIT`] prints, after loading the modules.
pub const DISK_INIT_MARKER: &str = "KEEL-DISK-INIT";

/// The last line [`DISK_INIT`] prints before `poweroff -f`.
pub const DISK_DONE_MARKER: &str = "KEEL-DISK-DONE";

/// The file the host puts on the data disk for the guest to read.
pub const HOST_FILE: &str = "from-host.txt";

/// The file the guest writes on the data disk.
pub const GUEST_FILE: &str = "from-guest.txt";

/// The guest's boot counter on the data disk.
pub const BOOTS_FILE: &str = "boots";

/// The test `/init` of the disk guest, after the module loads: waits for `/dev/vda`, reports
/// its size, read-only flag and serial, mounts it (busybox `mount` retries read-only when the
/// device refuses writes), prints [`HOST_FILE`] and the previous boot's [`GUEST_FILE`],
/// writes a new [`GUEST_FILE`] (`guest boot <n> saw <host file>`) and the boot counter, on a
/// read-only device also tries a raw write of sector 1 (unused by ext4), then syncs,
/// unmounts and powers off. Reports are `DISK-<KEY>=<value>` lines.
pub const DISK_INIT: &str = r#"echo KEEL-DISK-INIT
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
echo "DISK-RO=$(cat /sys/block/vda/ro 2>&1)"
echo "DISK-SECTORS=$(cat /sys/block/vda/size 2>&1)"
echo "DISK-SERIAL=$(cat /sys/block/vda/serial 2>&1)"
mkdir -p /mnt
if err=$(mount -t ext4 /dev/vda /mnt 2>&1); then echo DISK-MOUNT=ok; else echo "DISK-MOUNT=failed: $err"; fi
echo "DISK-MOUNT-OPTIONS=$(grep ' /mnt ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)"
echo "DISK-HOST=$(cat /mnt/from-host.txt 2>&1)"
echo "DISK-PREVIOUS=$(cat /mnt/from-guest.txt 2>/dev/null || echo none)"
boots=$(cat /mnt/boots 2>/dev/null || echo 0)
boots=$((boots+1))
if err=$( { echo "guest boot $boots saw $(cat /mnt/from-host.txt)" > /mnt/from-guest.txt && echo $boots > /mnt/boots; } 2>&1 ); then echo DISK-WRITE=ok; else echo "DISK-WRITE=failed: $err"; fi
if [ "$(cat /sys/block/vda/ro)" = 1 ]; then
    if err=$(dd if=/dev/zero of=/dev/vda bs=512 seek=1 count=1 conv=notrunc,fsync 2>&1); then echo DISK-RAW-WRITE=ok; else echo "DISK-RAW-WRITE=failed: $err" | tr '\n' ' '; echo; fi
fi
sync
if err=$(umount /mnt 2>&1); then echo DISK-UMOUNT=ok; else echo "DISK-UMOUNT=failed: $err"; fi
echo KEEL-DISK-DONE
poweroff -f
"#;

/// The busybox applets [`DISK_INIT`] and the module loading run.
pub const DISK_APPLETS: &[&str] = &[
    "mount", "umount", "insmod", "cat", "sleep", "mkdir", "grep", "cut", "echo", "dd", "tr",
    "sync", "poweroff", "dmesg", "tail",
];

/// What [`DISK_SHELL_INIT`] prints once `/dev/vda` is there and its shell starts.
pub const DISK_SHELL_MARKER: &str = "KEEL-DISK-SHELL";

/// The store file name of the disk shell initramfs (the modules and [`DISK_SHELL_INIT`]).
pub const DISK_SHELL_INITRAMFS: &str = "disk-shell.cpio";

/// The `/init` body of the disk shell guest, after the module loads: waits for `/dev/vda`,
/// then offers a shell on the console, for tests that drive the disk by hand (save and
/// restore of a VM with a disk).
pub const DISK_SHELL_INIT: &str = r#"n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
mkdir -p /mnt
echo KEEL-DISK-SHELL
export PS1='guest# '
exec sh
"#;

/// The busybox applets [`DISK_SHELL_INIT`] and the tests' commands run.
pub const DISK_SHELL_APPLETS: &[&str] = &[
    "sh", "mount", "umount", "insmod", "cat", "sleep", "mkdir", "echo", "sync", "poweroff",
    "dmesg", "tail",
];

/// The kernel command line for the disk guest (as [`crate::linux_guest::TEST_CMDLINE`]).
pub const DISK_CMDLINE: &str = crate::linux_guest::TEST_CMDLINE;

/// An initramfs with busybox, `modules` under `/lib/modules/`, and an `/init` that mounts
/// proc, sys and dev, loads the modules in order (a failure prints `KEEL-INSMOD-FAILED
/// <name>` and the kernel log's tail) and then runs `body`.
pub fn disk_initramfs(
    guest: &LinuxGuest,
    modules: &DiskModules,
    body: &str,
    applets: &[&str],
) -> Result<Vec<u8>, DiskToolError> {
    let busybox = std::fs::read(&guest.busybox).map_err(io_error(&guest.busybox))?;
    let mut init = String::from(
        "mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n",
    );
    for name in modules.names() {
        init.push_str(&format!(
            "insmod /lib/modules/{name}.ko || {{ echo KEEL-INSMOD-FAILED {name}; dmesg | tail -5; }}\n"
        ));
    }
    init.push_str(body);
    let mut applets = applets.to_vec();
    for a in ["mount", "insmod", "echo", "dmesg", "tail"] {
        if !applets.contains(&a) {
            applets.push(a);
        }
    }
    let mut cpio = busybox_initramfs(&busybox, &init, &applets);
    cpio.dir("lib/modules");
    for file in &modules.files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let data = std::fs::read(file).map_err(io_error(file))?;
        cpio.file(&format!("lib/modules/{name}"), 0o644, &data);
    }
    Ok(cpio.finish())
}

/// Makes an ext4 file system of `size_mib` MiB in `image` holding `dir`'s files
/// (`mke2fs -t ext4 -d`, owned by root).
pub fn make_ext4(dir: &Path, image: &Path, size_mib: u32) -> Result<(), DiskToolError> {
    let _ = std::fs::remove_file(image);
    run_tool(
        Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                "keel-test",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(dir)
            .arg(image)
            .arg(format!("{size_mib}M")),
        "e2fsprogs",
    )?;
    Ok(())
}

/// The contents of `path` in the ext4 file system in `image` (`debugfs -R 'cat <path>'`;
/// debugfs exits 0 even when the file is missing, so its stderr is checked).
pub fn ext4_read(image: &Path, path: &str) -> Result<Vec<u8>, DiskToolError> {
    let (stdout, stderr) = run_tool(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(image),
        "e2fsprogs",
    )?;
    let message: Vec<String> = String::from_utf8_lossy(&stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    if !message.is_empty() {
        return Err(DiskToolError::NotInImage {
            image: image.to_owned(),
            path: path.to_owned(),
            message: message.join("; "),
        });
    }
    Ok(stdout)
}

/// Checks the ext4 file system in `image` without changing it (`e2fsck -fn`): `Ok` when
/// clean, the checker's report otherwise.
pub fn ext4_check(image: &Path) -> Result<(), DiskToolError> {
    run_tool(Command::new("e2fsck").arg("-fn").arg(image), "e2fsprogs").map(|_| ())
}

/// The value of the first `DISK-<key>=value` line among `lines`.
pub fn disk_value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    let prefix = format!("DISK-{key}=");
    lines.iter().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// The disk guest: Debian's kernel and busybox, the disk modules, and the initramfs with
/// [`DISK_INIT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskGuest {
    /// Kernel and busybox.
    pub guest: LinuxGuest,
    /// The modules in the initramfs.
    pub modules: DiskModules,
    /// `target/linux-guest/disk-init.cpio`: busybox, the modules and [`DISK_INIT`].
    pub initramfs: PathBuf,
}

/// The initramfs file name, also its store file name in the Keel tests.
pub const DISK_INITRAMFS: &str = "disk-init.cpio";

/// Fetches the guest and its modules and writes [`DISK_INITRAMFS`], once per process; later
/// calls get the same answer.
///
/// # Panics
///
/// If a step fails (with the same error in every caller).
pub fn disk_guest() -> &'static DiskGuest {
    static BUILT: std::sync::OnceLock<Result<DiskGuest, String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let guest = crate::linux_guest::linux_guest()
            .map_err(|e| format!("fetching the Linux guest failed: {e}"))?;
        let modules =
            disk_modules(&guest).map_err(|e| format!("fetching the disk modules failed: {e}"))?;
        let archive = disk_initramfs(&guest, &modules, DISK_INIT, DISK_APPLETS)
            .map_err(|e| format!("building {DISK_INITRAMFS} failed: {e}"))?;
        let initramfs = guest_dir().join(DISK_INITRAMFS);
        write_atomically(&initramfs, &archive).map_err(|e| e.to_string())?;
        Ok(DiskGuest {
            guest,
            modules,
            initramfs,
        })
    });
    match built {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so that a reader
/// never sees half of it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DiskToolError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = io_error(path);
    let mut tmp = match tempfile::NamedTempFile::new_in(dir) {
        Ok(t) => t,
        Err(e) => return Err(io(e)),
    };
    let written = std::io::Write::write_all(&mut tmp, bytes).and_then(|()| {
        let mut permissions = tmp.as_file().metadata()?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o644);
        tmp.as_file().set_permissions(permissions)
    });
    if let Err(e) = written {
        return Err(io_error(path)(e));
    }
    tmp.persist(path)
        .map(|_| ())
        .map_err(|e| io_error(path)(e.error))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a section string table and a `.modinfo` section.
    fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        let strtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        let strtab_at = elf.len();
        elf.extend_from_slice(strtab);
        let modinfo_at = elf.len();
        elf.extend_from_slice(modinfo);
        let shoff = elf.len();
        let mut section = |name: u32, offset: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        section(0, 0, 0);
        section(1, strtab_at, strtab.len());
        section(11, modinfo_at, modinfo.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3E..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn modinfo_depends_is_read_from_the_section() {
        let elf = fake_module(b"license=GPL\0depends=jbd2,mbcache,crc16\0softdep=pre: x\0");
        assert_eq!(
            modinfo_values(&elf, "depends").unwrap(),
            ["jbd2,mbcache,crc16"]
        );
        assert_eq!(modinfo_values(&elf, "license").unwrap(), ["GPL"]);
        assert!(modinfo_values(&elf, "alias").unwrap().is_empty());
        assert_eq!(
            modinfo_values(b"not an elf", "depends"),
            Err("no ELF64 magic")
        );
        let mut truncated = elf.clone();
        truncated.truncate(100);
        assert!(modinfo_values(&truncated, "depends").is_err());
    }

    #[test]
    fn dependencies_load_first_once_and_cycles_are_errors() {
        let deps = |n: &str| -> Result<Vec<String>, DiskToolError> {
            Ok(match n {
                "virtio_blk" => vec!["virtio".into(), "virtio_ring".into()],
                "virtio" => vec!["virtio_ring".into()],
                "ext4" => vec!["jbd2".into(), "crc16".into()],
                _ => vec![],
            })
        };
        assert_eq!(
            load_order(&["crc", "virtio_blk", "ext4"], deps).unwrap(),
            [
                "crc",
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "jbd2",
                "crc16",
                "ext4"
            ]
        );
        let cyclic = |n: &str| -> Result<Vec<String>, DiskToolError> {
            Ok(vec![if n == "a" { "b" } else { "a" }.to_owned()])
        };
        let err = load_order(&["a"], cyclic).unwrap_err().to_string();
        assert_eq!(
            err,
            "kernel modules depend on each other in a cycle: a -> b -> a"
        );
    }

    #[test]
    fn module_file_names_map_to_module_names() {
        assert_eq!(
            module_name("crc32c-intel.ko").as_deref(),
            Some("crc32c_intel")
        );
        assert_eq!(module_name("ext4.ko.xz").as_deref(), Some("ext4"));
        assert_eq!(module_name("modules.order"), None);
    }

    #[test]
    fn disk_values_are_found_by_key() {
        let lines = vec!["DISK-RO=1".to_owned(), "DISK-WRITE=failed: x".to_owned()];
        assert_eq!(disk_value(&lines, "RO"), Some("1"));
        assert_eq!(disk_value(&lines, "WRITE"), Some("failed: x"));
        assert_eq!(disk_value(&lines, "MOUNT"), None);
    }
}
