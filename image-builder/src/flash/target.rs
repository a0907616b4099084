//! What `keel flash` is about to overwrite, and the checks that refuse it: a target that is
//! mounted, that holds the running system, or that is smaller than the image.
//!
//! Everything comes from files any user can read: `/sys/class/block/<dev>/…` for a block
//! device's size, model and partitions-in-use, `/proc/self/mounts` for mounts, and
//! `/sys/block/loop*/loop/backing_file` for a regular file attached to a loop device. Only
//! reading the target's own partition table needs read access to the target.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::table::{PartitionTable, read_partition_table};

/// The mount points that make a disk "the one the running system is on".
pub const SYSTEM_MOUNT_POINTS: [&str; 3] = ["/", "/boot", "/boot/efi"];

/// What the target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// A block device: its kernel name (`sdb`, `loop3`, `nvme0n1p2`) and the whole disk it
    /// belongs to (itself unless it is a partition).
    BlockDevice { name: String, disk: String },
    /// A regular file (or a path that does not exist yet, created by the flash).
    File { exists: bool },
}

/// One mount found on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOnTarget {
    /// What is mounted (`/dev/sdb1`, `/dev/loop0`).
    pub source: String,
    /// Where.
    pub mount_point: String,
}

/// The summary shown before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// The path given.
    pub path: PathBuf,
    /// Device or file.
    pub kind: TargetKind,
    /// Capacity in bytes: a device's size, an existing file's length, `None` for a new file.
    pub bytes: Option<u64>,
    /// The device's model (`/sys/…/device/model`), if it has one.
    pub model: Option<String>,
    /// Whether the kernel says the medium is removable (USB sticks, SD cards).
    pub removable: Option<bool>,
    /// Its partition table, or why it could not be read.
    pub partitions: Result<PartitionTable, String>,
    /// Everything mounted from it (for a file: from loop devices it backs).
    pub mounts: Vec<MountOnTarget>,
    /// Loop devices a regular-file target backs (`/dev/loop0`), mounted or not.
    pub loop_devices: Vec<String>,
    /// Devices stacked on a block-device target or its partitions (device-mapper, RAID:
    /// `dm-0`), active even when nothing on them is mounted.
    pub holders: Vec<String>,
}

impl TargetInfo {
    /// The summary lines, as printed before the confirmation.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let what = match &self.kind {
            TargetKind::BlockDevice { name, disk } if name == disk => {
                format!("block device {name}")
            }
            TargetKind::BlockDevice { name, disk } => {
                format!("block device {name} (a partition of {disk})")
            }
            TargetKind::File { exists: true } => "regular file".into(),
            TargetKind::File { exists: false } => "new regular file".into(),
        };
        lines.push(format!("target:     {} ({what})", self.path.display()));
        if let Some(model) = &self.model {
            let removable = match self.removable {
                Some(true) => ", removable",
                Some(false) => ", not removable",
                None => "",
            };
            lines.push(format!("model:      {model}{removable}"));
        }
        lines.push(format!(
            "size:       {}",
            self.bytes.map_or("- (created)".into(), size_text)
        ));
        lines.push(format!(
            "partitions: {}",
            match &self.partitions {
                Ok(table) => table.describe(),
                Err(why) => format!("cannot read them: {why}"),
            }
        ));
        if !self.holders.is_empty() {
            lines.push(format!("held by:    {}", self.holders.join(", ")));
        }
        if !self.loop_devices.is_empty() {
            lines.push(format!(
                "loop:       backs {}",
                self.loop_devices.join(", ")
            ));
        }
        lines.push(format!(
            "mounted:    {}",
            if self.mounts.is_empty() {
                "nothing".into()
            } else {
                mount_list(&self.mounts)
            }
        ));
        lines
    }
}

/// `512.0 MiB (536870912 bytes)`.
pub fn size_text(bytes: u64) -> String {
    format!("{} ({bytes} bytes)", crate::gpt_image::human(bytes))
}

/// `/dev/sdb1 on /media/stick, …`.
pub fn mount_list(mounts: &[MountOnTarget]) -> String {
    mounts
        .iter()
        .map(|m| format!("{} on {}", m.source, m.mount_point))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inspects `path` with the running system's `/sys` and `/proc/self/mounts`.
pub fn inspect(path: &Path) -> std::io::Result<TargetInfo> {
    let mounts_text = std::fs::read_to_string("/proc/self/mounts")?;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(meta) = meta else {
        return Ok(TargetInfo {
            path: path.to_path_buf(),
            kind: TargetKind::File { exists: false },
            bytes: None,
            model: None,
            removable: None,
            partitions: Ok(PartitionTable::None),
            mounts: Vec::new(),
            loop_devices: Vec::new(),
            holders: Vec::new(),
        });
    };
    let partitions = || {
        File::open(path)
            .and_then(|mut f| read_partition_table(&mut f))
            .map_err(|e| e.to_string())
    };
    if meta.file_type().is_block_device() {
        let name = sysfs_name(meta.rdev()).ok_or_else(|| {
            std::io::Error::other(format!(
                "{} is a block device the kernel does not list in /sys/dev/block",
                path.display()
            ))
        })?;
        let disk = whole_disk(&name);
        let sys = Path::new("/sys/class/block").join(&name);
        let sectors = read_trimmed(&sys.join("size")).and_then(|s| s.parse::<u64>().ok());
        let mounts = mounts_on(&mounts_text, &device_disks, &name);
        Ok(TargetInfo {
            path: path.to_path_buf(),
            bytes: sectors.map(|s| s * 512),
            model: read_trimmed(
                &Path::new("/sys/class/block")
                    .join(&disk)
                    .join("device/model"),
            )
            .filter(|m| !m.is_empty()),
            removable: read_trimmed(&Path::new("/sys/block").join(&disk).join("removable"))
                .map(|r| r == "1"),
            partitions: partitions(),
            mounts,
            holders: holders_of(&name),
            kind: TargetKind::BlockDevice { name, disk },
            loop_devices: Vec::new(),
        })
    } else if meta.file_type().is_file() {
        let canonical = std::fs::canonicalize(path)?;
        let loop_devices = loops_backed_by(&canonical);
        let mounts = loop_devices
            .iter()
            .flat_map(|dev| {
                let name = dev.trim_start_matches("/dev/");
                mounts_on(&mounts_text, &device_disks, name)
            })
            .collect();
        Ok(TargetInfo {
            path: path.to_path_buf(),
            kind: TargetKind::File { exists: true },
            bytes: Some(meta.len()),
            model: None,
            removable: None,
            partitions: partitions(),
            mounts,
            loop_devices,
            holders: Vec::new(),
        })
    } else {
        Err(std::io::Error::other(format!(
            "{} is neither a block device nor a regular file",
            path.display()
        )))
    }
}

/// The mounts on the running system's own disk(s) that `target` (a block device's kernel
/// name) shares: non-empty means the target is the disk the system runs from.
pub fn system_mounts_on_target(target: &str) -> std::io::Result<Vec<MountOnTarget>> {
    let mounts_text = std::fs::read_to_string("/proc/self/mounts")?;
    Ok(system_mounts(&mounts_text, &device_disks, target))
}

/// The entries of `mounts_text` (the `/proc/mounts` format) whose source lies on the same
/// whole disk as `target`; `disks_of` maps a mount source to the kernel names of the whole
/// disks under it (several for device-mapper and RAID), empty for non-device sources.
pub fn mounts_on(
    mounts_text: &str,
    disks_of: &dyn Fn(&str) -> Vec<String>,
    target: &str,
) -> Vec<MountOnTarget> {
    let target_disk = whole_disk(target);
    parse_mounts(mounts_text)
        .filter(|m| disks_of(&m.source).contains(&target_disk))
        .collect()
}

/// [`mounts_on`] restricted to [`SYSTEM_MOUNT_POINTS`].
pub fn system_mounts(
    mounts_text: &str,
    disks_of: &dyn Fn(&str) -> Vec<String>,
    target: &str,
) -> Vec<MountOnTarget> {
    mounts_on(mounts_text, disks_of, target)
        .into_iter()
        .filter(|m| SYSTEM_MOUNT_POINTS.contains(&m.mount_point.as_str()))
        .collect()
}

/// The `source mount-point` pairs of `/proc/mounts` text, octal escapes (`\040`) decoded.
fn parse_mounts(text: &str) -> impl Iterator<Item = MountOnTarget> + '_ {
    text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let source = unescape(fields.next()?);
        let mount_point = unescape(fields.next()?);
        Some(MountOnTarget {
            source,
            mount_point,
        })
    })
}

/// Decodes the kernel's `\NNN` octal escapes in `/proc/mounts` fields.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The whole disks under a mount source on this system: resolves the source (a `/dev` path
/// or symlink such as `/dev/disk/by-uuid/…`) to its device number, its `/sys` name, and
/// follows `slaves/` down through device-mapper and RAID to the disks.
fn device_disks(source: &str) -> Vec<String> {
    if !source.starts_with('/') {
        return Vec::new(); // proc, tmpfs, overlay, …
    }
    let Ok(meta) = std::fs::metadata(source) else {
        return Vec::new();
    };
    if !meta.file_type().is_block_device() {
        return Vec::new();
    }
    let Some(name) = sysfs_name(meta.rdev()) else {
        return Vec::new();
    };
    let mut disks = Vec::new();
    collect_disks(&name, &mut disks, 0);
    disks
}

fn collect_disks(name: &str, out: &mut Vec<String>, depth: u32) {
    let disk = whole_disk(name);
    let slaves: Vec<String> =
        std::fs::read_dir(Path::new("/sys/class/block").join(&disk).join("slaves"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
    // Depth bound: the slaves graph is a DAG, but a guard costs nothing against a loop.
    if slaves.is_empty() || depth > 8 {
        if !out.contains(&disk) {
            out.push(disk);
        }
        return;
    }
    // The stacked device itself counts too (a target may be the dm device).
    if !out.contains(&disk) {
        out.push(disk);
    }
    for slave in slaves {
        collect_disks(&slave, out, depth + 1);
    }
}

/// The kernel name (`sda1`) of the block device with device number `rdev`, from the
/// `/sys/dev/block/MAJ:MIN` symlink.
fn sysfs_name(rdev: u64) -> Option<String> {
    let (major, minor) = (libc_major(rdev), libc_minor(rdev));
    let link = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// glibc's `gnu_dev_major`.
fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

/// glibc's `gnu_dev_minor`.
fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

/// The whole disk a block device belongs to: its parent in `/sys/class/block` when it is a
/// partition (it has a `partition` file), else itself.
fn whole_disk(name: &str) -> String {
    let sys = Path::new("/sys/class/block").join(name);
    if sys.join("partition").exists()
        && let Ok(real) = std::fs::canonicalize(&sys)
        && let Some(parent) = real.parent().and_then(|p| p.file_name())
    {
        return parent.to_string_lossy().into_owned();
    }
    name.to_owned()
}

/// The devices stacked on block device `name` or on its partitions (`/sys/class/block/*/
/// holders/`), sorted.
fn holders_of(name: &str) -> Vec<String> {
    let sys = Path::new("/sys/class/block").join(name);
    let list = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir.join("holders"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut found = list(&sys);
    // A whole disk's partitions are subdirectories named after it (`sdb/sdb1`).
    if let Ok(dir) = std::fs::read_dir(&sys) {
        for entry in dir.filter_map(|e| e.ok()) {
            if entry.file_name().to_string_lossy().starts_with(name)
                && entry.path().join("partition").exists()
            {
                found.extend(list(&entry.path()));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Loop devices whose backing file is `file` (canonical path).
fn loops_backed_by(file: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            read_trimmed(&e.path().join("loop/backing_file"))
                .is_some_and(|backing| Path::new(&backing) == file)
        })
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
        .collect();
    found.sort();
    found
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid 0 0
/dev/nvme0n1p2 / ext4 rw,relatime 0 0
/dev/nvme0n1p1 /boot/efi vfat rw 0 0
/dev/mapper/vg-home /home ext4 rw 0 0
/dev/sdb1 /media/USB\\040STICK vfat rw 0 0
tmpfs /tmp tmpfs rw 0 0
";

    /// A synthetic machine: an NVMe system disk, LVM `home` on sdc, a USB stick sdb.
    fn disks_of(source: &str) -> Vec<String> {
        match source {
            "/dev/nvme0n1p1" | "/dev/nvme0n1p2" => vec!["nvme0n1".into()],
            "/dev/mapper/vg-home" => vec!["dm-0".into(), "sdc".into()],
            "/dev/sdb1" => vec!["sdb".into()],
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_mounted_stick_is_found_with_its_decoded_mount_point() {
        let found = mounts_on(MOUNTS, &disks_of, "sdb");
        assert_eq!(
            found,
            vec![MountOnTarget {
                source: "/dev/sdb1".into(),
                mount_point: "/media/USB STICK".into()
            }]
        );
        assert_eq!(mount_list(&found), "/dev/sdb1 on /media/USB STICK");
        assert!(system_mounts(MOUNTS, &disks_of, "sdb").is_empty());
    }

    #[test]
    fn the_system_disk_is_recognised_through_its_partitions() {
        let system = system_mounts(MOUNTS, &disks_of, "nvme0n1");
        let points: Vec<&str> = system.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(points, ["/", "/boot/efi"]);
    }

    #[test]
    fn a_disk_under_lvm_counts_as_mounted_and_an_unused_one_does_not() {
        let found = mounts_on(MOUNTS, &disks_of, "sdc");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].mount_point, "/home");
        assert!(mounts_on(MOUNTS, &disks_of, "sdd").is_empty());
    }

    #[test]
    fn escapes_are_decoded_and_malformed_ones_kept() {
        assert_eq!(unescape("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape("/a\\04"), "/a\\04");
        assert_eq!(unescape("/a\\9xy"), "/a\\9xy");
    }

    /// glibc's `gnu_dev_makedev`, the inverse of the two functions under test.
    fn makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xffff_f000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffff_ff00) << 12)
            | (minor & 0xff)
    }

    #[test]
    fn device_numbers_split_like_glibc() {
        assert_eq!((libc_major(0x811), libc_minor(0x811)), (8, 17));
        for (major, minor) in [(8, 17), (259, 65536), (7, 3), (4096, 1 << 20)] {
            let dev = makedev(major, minor);
            assert_eq!(
                (libc_major(dev), libc_minor(dev)),
                (major, minor),
                "{dev:#x}"
            );
        }
    }

    #[test]
    fn a_missing_file_is_a_new_file_target() {
        let dir = tempfile::tempdir().unwrap();
        let info = inspect(&dir.path().join("new.img")).unwrap();
        assert_eq!(info.kind, TargetKind::File { exists: false });
        assert_eq!(info.bytes, None);
        assert!(info.mounts.is_empty());
    }
}
