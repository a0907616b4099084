//! Guest disks and the guest firmware `keel build` puts into the image: `--disk NAME=SIZE`
//! (an empty, fully allocated disk image file in the guest store), `--disk NAME=SIZE,partition`
//! (a guest-disk GPT partition, made by [`crate::gpt_image`]) and `--firmware FILE` (a
//! rust-hypervisor-firmware ELF, stored as [`FIRMWARE_STORE_NAME`]).
//!
//! The store's files reach the image through one directory ([`crate::assemble_image`]'s
//! `store_dir`), so [`StoreStaging`] makes a temporary one: links to the `--store` files, a
//! sparse file of zeros per disk image (the FAT writer copies its zeros in, allocating every
//! cluster of the file) and a link to the firmware.

use std::path::{Path, PathBuf};

use crate::fat;
use crate::gpt_image::{GuestPartitionRequest, STORE_MAX_FILE};

/// The store file name `--firmware` gives the firmware: what `firmware = "hypervisor-fw"` in
/// a VM's definition names.
pub const FIRMWARE_STORE_NAME: &str = "hypervisor-fw";
/// A disk's bytes are whole sectors: virtio-blk addresses 512-byte sectors.
pub const DISK_SECTOR: u64 = 512;
/// Largest disk image file: the largest whole number of sectors a FAT file can hold
/// (4 GiB − 512 bytes).
pub const MAX_FILE_DISK_BYTES: u64 = STORE_MAX_FILE / DISK_SECTOR * DISK_SECTOR;

/// One `--disk` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRequest {
    /// The store file name, or the partition's name.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// `,partition`: a guest-disk partition rather than a store file.
    pub partition: bool,
}

/// Why a `--disk` or `--firmware` argument was refused, or the staging failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestDiskError {
    /// Not `NAME=SIZE[,partition]`.
    #[error(
        "--disk {arg:?}: expected NAME=SIZE or NAME=SIZE,partition (e.g. data.img=64M, big=20G,partition)"
    )]
    Syntax {
        /// The argument.
        arg: String,
    },
    /// The size is not a number with an optional K, M, G or T suffix.
    #[error(
        "--disk {arg:?}: size {size:?} is not a size: a whole number of bytes, or with K, M, G \
         or T (binary: 64M is 64 MiB)"
    )]
    Size {
        /// The argument.
        arg: String,
        /// The size as given.
        size: String,
    },
    /// A file disk's size is zero or not whole sectors.
    #[error("--disk {name}: size {bytes} bytes must be a non-zero multiple of 512 (whole sectors)")]
    NotSectors {
        /// The file name.
        name: String,
        /// The size.
        bytes: u64,
    },
    /// A file disk larger than a FAT file can be.
    #[error(
        "--disk {name}: {bytes} bytes is more than a store file can hold (FAT32: at most \
         {MAX_FILE_DISK_BYTES} bytes, 4 GiB - 512); make it a partition-backed disk instead: \
         --disk {stem}={size},partition, and name it in the VM as partition = \"{stem}\""
    )]
    TooLargeForFile {
        /// The file name.
        name: String,
        /// A name the partition could have (the VM-name rule).
        stem: String,
        /// The size as given.
        size: String,
        /// The size in bytes.
        bytes: u64,
    },
    /// A file disk's name cannot be a store file name.
    #[error("--disk {name:?}: the file name {reason}; rename it")]
    FileName {
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Two store files would have the same name.
    #[error("the store would hold two files named {name} (from {first} and {second}): rename one")]
    DuplicateStoreFile {
        /// The name.
        name: String,
        /// Where the first comes from.
        first: String,
        /// Where the second comes from.
        second: String,
    },
    /// The firmware file is unreadable or not an ELF.
    #[error(
        "--firmware {}: {reason} (build rust-hypervisor-firmware as README.md says: its \
         target/x86_64-unknown-none/release/hypervisor-fw)",
        path.display()
    )]
    Firmware {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The `--store` directory cannot be listed.
    #[error("cannot read store directory {}: {source}", path.display())]
    ReadStore {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The staging directory cannot be made.
    #[error("cannot prepare the guest store's files in {}: {source}", path.display())]
    Staging {
        /// Where.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Parses `SIZE`: a whole number of bytes, or with a binary suffix `K`, `M`, `G`, `T`
/// (optionally followed by `iB` or `B`): `64M`, `1G`, `512`, `20GiB`.
pub fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// A name that follows the VM-name rule made from a file name (`web-root.img` → `web-root`),
/// for the message that suggests a partition instead.
fn partition_stem(file: &str) -> String {
    let stem = file.split('.').next().unwrap_or(file).to_ascii_lowercase();
    let cleaned: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if keel_config::limits::check_vm_name(&cleaned).is_ok() {
        cleaned
    } else {
        "data".to_string()
    }
}

/// Parses and checks one `--disk NAME=SIZE[,partition]`. Partition names and sizes (the
/// VM-name rule, whole MiB) are checked by [`crate::gpt_image::check_guest_partitions`].
pub fn parse_disk_arg(arg: &str) -> Result<DiskRequest, GuestDiskError> {
    let syntax = || GuestDiskError::Syntax {
        arg: arg.to_string(),
    };
    let (name, rest) = arg.split_once('=').ok_or_else(syntax)?;
    let (size, partition) = match rest.split_once(',') {
        None => (rest, false),
        Some((size, "partition")) => (size, true),
        Some(_) => return Err(syntax()),
    };
    if name.is_empty() || size.is_empty() {
        return Err(syntax());
    }
    let bytes = parse_size(size).ok_or_else(|| GuestDiskError::Size {
        arg: arg.to_string(),
        size: size.to_string(),
    })?;
    if !partition {
        if let Some(reason) = fat::long_name_problem(name) {
            return Err(GuestDiskError::FileName {
                name: name.to_string(),
                reason: reason.to_string(),
            });
        }
        if bytes > MAX_FILE_DISK_BYTES {
            return Err(GuestDiskError::TooLargeForFile {
                name: name.to_string(),
                stem: partition_stem(name),
                size: size.to_string(),
                bytes,
            });
        }
        if bytes == 0 || !bytes.is_multiple_of(DISK_SECTOR) {
            return Err(GuestDiskError::NotSectors {
                name: name.to_string(),
                bytes,
            });
        }
    }
    Ok(DiskRequest {
        name: name.to_string(),
        bytes,
        partition,
    })
}

/// The partitions among `disks`, for [`crate::gpt_image::assemble_image_with_partitions`].
pub fn partition_requests(disks: &[DiskRequest]) -> Vec<GuestPartitionRequest> {
    disks
        .iter()
        .filter(|d| d.partition)
        .map(|d| GuestPartitionRequest {
            name: d.name.clone(),
            bytes: d.bytes,
        })
        .collect()
}

/// Checks that `path` is a readable ELF file (what the VM loader boots as PVH).
pub fn check_firmware(path: &Path) -> Result<(), GuestDiskError> {
    use std::io::Read;
    let bad = |reason: String| GuestDiskError::Firmware {
        path: path.to_path_buf(),
        reason,
    };
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if &magic != b"\x7fELF" {
        return Err(bad("is not an ELF file".to_string()));
    }
    Ok(())
}

/// A temporary directory holding the guest store's files for the image: removed when
/// dropped.
#[derive(Debug)]
pub struct StoreStaging {
    dir: tempfile::TempDir,
}

impl StoreStaging {
    /// The directory to hand to [`crate::assemble_image`] as the store.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Stages, under a new directory in `parent`: every regular file (or link to one) of
    /// `store` as a link, an empty sparse file per file disk of `disks` (partitions are not
    /// store files), and `firmware` as [`FIRMWARE_STORE_NAME`]. A name given twice is
    /// refused. Entries of `store` that are not regular files are linked as they are, and
    /// [`crate::gpt_image::store_files`] refuses them with its own message.
    pub fn new(
        parent: &Path,
        store: Option<&Path>,
        disks: &[DiskRequest],
        firmware: Option<&Path>,
    ) -> Result<StoreStaging, GuestDiskError> {
        let staging = |source| GuestDiskError::Staging {
            path: parent.to_path_buf(),
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix(".keel-store-")
            .tempdir_in(parent)
            .map_err(staging)?;
        // Where each staged name came from, for the duplicate message.
        let mut origins: Vec<(String, String)> = Vec::new();
        let mut claim = |name: &str, origin: String| match origins
            .iter()
            .find(|(n, _)| n.to_lowercase() == name.to_lowercase())
        {
            Some((_, first)) => Err(GuestDiskError::DuplicateStoreFile {
                name: name.to_string(),
                first: first.clone(),
                second: origin,
            }),
            None => {
                origins.push((name.to_string(), origin));
                Ok(())
            }
        };
        if let Some(store) = store {
            let read = |source| GuestDiskError::ReadStore {
                path: store.to_path_buf(),
                source,
            };
            for entry in std::fs::read_dir(store).map_err(read)? {
                let entry = entry.map_err(read)?;
                let name = entry.file_name();
                let target = std::fs::canonicalize(entry.path()).map_err(read)?;
                claim(
                    &name.to_string_lossy(),
                    format!("--store {}", store.display()),
                )?;
                std::os::unix::fs::symlink(&target, dir.path().join(&name)).map_err(staging)?;
            }
        }
        for disk in disks.iter().filter(|d| !d.partition) {
            claim(&disk.name, format!("--disk {}", disk.name))?;
            // Sparse: no space on the host, and the FAT writer reads zeros from it.
            std::fs::File::create(dir.path().join(&disk.name))
                .and_then(|f| f.set_len(disk.bytes))
                .map_err(staging)?;
        }
        if let Some(firmware) = firmware {
            check_firmware(firmware)?;
            claim(
                FIRMWARE_STORE_NAME,
                format!("--firmware {}", firmware.display()),
            )?;
            let target = std::fs::canonicalize(firmware).map_err(|e| GuestDiskError::Firmware {
                path: firmware.to_path_buf(),
                reason: format!("cannot read it: {e}"),
            })?;
            std::os::unix::fs::symlink(target, dir.path().join(FIRMWARE_STORE_NAME))
                .map_err(staging)?;
        }
        Ok(StoreStaging { dir })
    }
}

#[cfg(test)]
#[path = "guest_disks_tests.rs"]
mod tests;
