//! The disk layout of `keel.img` and the code that writes it.
//!
//! | # | name          | type                         | LBAs (512 B)           | contents                         |
//! |---|---------------|------------------------------|------------------------|----------------------------------|
//! | 1 | `bios-boot`   | BIOS boot (EF02)             | 2048..=4095 (1 MiB)    | GRUB i386-pc `core.img`          |
//! | 2 | `esp`         | EFI system (EF00)            | 4096.. (≥ 32 MiB)      | FAT16 `KEELESP`: GRUB, cfg, kernel, modules |
//! | 3 | `keel-config` | [`KEEL_CONFIG_TYPE_GUID`]    | next 1 MiB             | raw: config record (generation 1) in slot A, slot B zeroed |
//! | 4 | `keel-store`  | Microsoft basic data ([`STORE_TYPE_GUID`]) | next (≥ 16 MiB) | FAT `KEELSTORE`: guest store (`--store <dir>`) |
//!
//! | 5… | the disk's name | Keel guest disk ([`GUEST_DISK_TYPE_GUID`]) | next, each whole MiB | nothing (sparse): a guest's disk (`--disk NAME=SIZE,partition`) |
//!
//! LBA 0 is a protective MBR whose boot code is GRUB's `boot.img`, pointed at LBA 2048. Every
//! partition starts on a 1 MiB boundary; 1 MiB at the end holds the backup GPT. The ESP grows
//! beyond 32 MiB when the kernel and modules need it, the store beyond 16 MiB when the files
//! of `keel build --store <dir>` need it (FAT16 up to 1 GiB, FAT32 beyond).
//!
//! [`assemble_image`] gathers the inputs and runs GRUB; [`write_image`] is the pure-layout part
//! (GRUB blobs in, file out), which the unit tests drive with fake GRUB images.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gpt::partition_types::{self, OperatingSystem, Type};
use uuid::Uuid;

use keel_config::record::{self, LayoutError, RecordError, Slots};

use crate::elf_strip;
use crate::fat::{self, Contents, FatError, FatFile};
use crate::grub::{self, GrubError, GrubImages};

/// Sector size of the image.
pub const SECTOR: u64 = 512;
/// Partition alignment: 1 MiB.
pub const ALIGN_SECTORS: u64 = 2048;
/// First LBA of the BIOS boot partition, where core.img starts.
pub const BIOS_BOOT_START: u64 = 2048;
/// Size of the BIOS boot partition (1 MiB), the upper bound for core.img.
pub const BIOS_BOOT_SECTORS: u64 = 2048;
/// First LBA of the ESP.
pub const ESP_START: u64 = BIOS_BOOT_START + BIOS_BOOT_SECTORS;
/// Smallest ESP: 32 MiB.
pub const ESP_MIN_SECTORS: u64 = 32 * 2048;
/// Size of the configuration partition: 1 MiB.
pub const CONFIG_SECTORS: u64 = 2048;
/// Smallest guest-store partition: 16 MiB.
pub const STORE_MIN_SECTORS: u64 = 16 * 2048;
/// Largest file the guest store takes: FAT's limit (4 GiB - 1).
pub const STORE_MAX_FILE: u64 = u32::MAX as u64;
/// Space a store file is assumed to take for sizing: rounded up to this (at least the
/// cluster size of any volume `fat::format` makes up to 1 GiB, and ample beyond).
const STORE_FILE_GRANULE: u64 = 64 << 10;
/// Room left at the end of the disk for the backup GPT (33 sectors), kept at 1 MiB so the disk
/// size stays a whole number of MiB.
pub const TAIL_SECTORS: u64 = 2048;

/// GPT partition name of the BIOS boot partition.
pub const BIOS_BOOT_NAME: &str = "bios-boot";
/// GPT partition name of the ESP.
pub const ESP_NAME: &str = "esp";
/// GPT partition name of the configuration partition; the kernel finds it by this name or by
/// [`KEEL_CONFIG_TYPE_GUID`].
pub const CONFIG_NAME: &str = "keel-config";
/// GPT partition name of the guest store.
pub const STORE_NAME: &str = "keel-store";
/// FAT label of the guest store.
pub const STORE_LABEL: &str = "KEELSTORE";

/// Partition type GUID of the guest store: Microsoft basic data
/// (`ebd0a0a2-b9e5-4433-87c0-68b6b72699c7`), so any OS offers to mount it; the kernel finds it
/// by this type and [`STORE_NAME`].
pub const STORE_TYPE_GUID: Uuid = Uuid::from_u128(0xebd0a0a2_b9e5_4433_87c0_68b6b72699c7);

/// Partition type GUID of the raw Keel configuration partition
/// (`20442bb3-5151-4ecd-846b-efa36bb2491f`, generated at random for Keel). No other OS knows it,
/// so none will offer to format or mount the partition.
pub const KEEL_CONFIG_TYPE_GUID: Uuid = Uuid::from_u128(0x20442bb3_5151_4ecd_846b_efa36bb2491f);

/// Partition type GUID of a Keel guest-disk partition
/// (`b0983fed-cb2d-4d46-b9f1-c5740e47fbd0`, generated at random for Keel; the kernel's
/// `blk::guest_partitions::GUEST_DISK_TYPE`). Its GPT name is the disk's name.
pub const GUEST_DISK_TYPE_GUID: Uuid = Uuid::from_u128(0xb0983fed_cb2d_4d46_b9f1_c5740e47fbd0);
/// Most guest-disk partitions an image takes: the 128 entries of the table less Keel's four.
pub const MAX_GUEST_PARTITIONS: usize = 124;

/// Path of the kernel on the ESP (and in `grub.cfg`).
pub const KERNEL_PATH: &str = "/boot/keel.elf";
/// Directory of the Multiboot2 modules on the ESP.
pub const MODULES_DIR: &str = "/boot/modules";
/// Path of the UEFI loader on the ESP (the removable-media default path).
pub const EFI_LOADER_PATH: &str = "/EFI/BOOT/BOOTX64.EFI";
/// Path of the GRUB configuration on the ESP.
pub const GRUB_CFG_PATH: &str = "/boot/grub/grub.cfg";

/// Why assembling or writing the image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The kernel ELF cannot be read.
    #[error("cannot read kernel {path}: {source}")]
    ReadKernel {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kernel file is not an ELF.
    #[error("{path} is not an ELF file")]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// The kernel ELF cannot be reduced to its loadable segments.
    #[error("cannot strip kernel {path} for the ESP: {source}")]
    StripKernel {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: elf_strip::StripError,
    },
    /// A module file cannot be read.
    #[error("cannot read module {path}: {source}")]
    ReadModule {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A module's file name cannot serve as a module name.
    #[error(
        "module {path}: file name {reason}; rename the file (its name becomes \
         /boot/modules/<name> and the module's name for the kernel, so it may hold only \
         letters, digits and . _ + -)"
    )]
    BadModuleName {
        /// The file.
        path: PathBuf,
        /// What is wrong with its name.
        reason: &'static str,
    },
    /// Two modules have the same file name.
    #[error("two modules are named {name}: module names are their file names and must be unique")]
    DuplicateModule {
        /// The name.
        name: String,
    },
    /// The kernel command line holds control characters.
    #[error("kernel command line must be one line of printable text")]
    BadCmdline,
    /// GRUB could not be prepared.
    #[error(transparent)]
    Grub(#[from] GrubError),
    /// core.img does not fit into the BIOS boot partition.
    #[error("GRUB core.img is {bytes} bytes, more than the {max}-byte BIOS boot partition")]
    CoreTooLarge {
        /// Its size.
        bytes: usize,
        /// The partition size.
        max: u64,
    },
    /// An I/O step on the image file failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The image file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The gpt crate refused the partition table.
    #[error("cannot write the partition table: {0}")]
    PartitionTable(#[from] gpt::GptError),
    /// The gpt crate refused the protective MBR.
    #[error("cannot write the protective MBR: {0}")]
    Mbr(#[from] gpt::mbr::MBRError),
    /// A FAT file system step failed.
    #[error(transparent)]
    Fat(#[from] FatError),
    /// The `--store` directory cannot be listed.
    #[error("cannot read store directory {path}: {source}")]
    ReadStoreDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An entry of the `--store` directory cannot be copied.
    #[error("store directory entry {path}: {reason}")]
    BadStoreEntry {
        /// The entry.
        path: PathBuf,
        /// Why (and what to do).
        reason: String,
    },
    /// Two store files would get the same FAT name (FAT compares names case-insensitively).
    #[error(
        "store files {first} and {second} differ only in case: FAT cannot hold both; rename one"
    )]
    DuplicateStoreName {
        /// One file name.
        first: String,
        /// The other.
        second: String,
    },
    /// The store content is larger than a FAT32 volume can be.
    #[error("the store files take {bytes} bytes, more than a FAT32 partition holds (2 TiB)")]
    StoreTooLarge {
        /// Their total size.
        bytes: u64,
    },
    /// The configuration does not fit into a slot of the configuration partition.
    #[error(
        "the configuration ({len} bytes of JSON) does not fit into a {max}-byte slot of the \
         configuration partition; remove VMs or shorten command lines"
    )]
    ConfigTooLarge {
        /// Length of the canonical JSON.
        len: usize,
        /// The most a slot holds.
        max: usize,
    },
    /// The configuration partition cannot hold two record slots.
    #[error("the configuration partition layout is unusable: {0}")]
    ConfigLayout(LayoutError),
    /// The configuration record could not be encoded.
    #[error("cannot encode the configuration record: {0}")]
    ConfigRecord(RecordError),
    /// A guest-disk partition's name breaks the VM-name rule.
    #[error("bad disk name {name:?}: {reason}")]
    GuestPartitionName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A guest-disk partition's size is 0 or not whole MiB.
    #[error("disk {name}: a partition's size must be a non-zero number of MiB, not {bytes} bytes")]
    GuestPartitionSize {
        /// The name.
        name: String,
        /// The size asked for.
        bytes: u64,
    },
    /// Two guest-disk partitions share a name, or one has the name of Keel's own.
    #[error(
        "two partitions would be named {name}: disk names must be unique and differ from \
         bios-boot, esp, keel-config and keel-store"
    )]
    DuplicateGuestPartition {
        /// The name.
        name: String,
    },
    /// More guest-disk partitions than the table holds.
    #[error("{count} disk partitions asked for; an image holds at most {MAX_GUEST_PARTITIONS}")]
    TooManyGuestPartitions {
        /// How many were asked for.
        count: usize,
    },
}

/// One partition of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// GPT partition number (1-based).
    pub number: u32,
    /// GPT partition name.
    pub name: &'static str,
    /// GPT partition type GUID.
    pub type_guid: Uuid,
    /// First LBA.
    pub first_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
}

impl PartitionSpec {
    /// Last LBA (inclusive, as GPT stores it).
    pub fn last_lba(&self) -> u64 {
        self.first_lba + self.sectors - 1
    }
}

/// The disk layout; the ESP and store sizes vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// ESP size in sectors (a multiple of [`ALIGN_SECTORS`], at least [`ESP_MIN_SECTORS`]).
    pub esp_sectors: u64,
    /// Store size in sectors (a multiple of [`ALIGN_SECTORS`], at least
    /// [`STORE_MIN_SECTORS`]).
    pub store_sectors: u64,
    /// Sectors of all guest-disk partitions together, which follow the store
    /// ([`Layout::guest_partitions`]).
    pub guest_sectors: u64,
}

/// A guest-disk partition `keel build` makes: `--disk NAME=SIZE,partition`, or a `--disk`
/// larger than a store file can be ([`needs_partition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPartitionRequest {
    /// The disk's name: the GPT partition name (the VM-name rule).
    pub name: String,
    /// Its size in bytes, whole MiB.
    pub bytes: u64,
}

/// A guest-disk partition placed in the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPartitionSpec {
    /// GPT partition number (5 on).
    pub number: u32,
    /// Its name.
    pub name: String,
    /// First LBA.
    pub first_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
}

/// Whether a `--disk` of `bytes` must be a partition: a store file holds at most
/// [`STORE_MAX_FILE`] bytes (FAT32).
pub fn needs_partition(bytes: u64) -> bool {
    bytes > STORE_MAX_FILE
}

/// Checks guest-disk partition requests: names (the VM-name rule, unique), sizes (whole
/// MiB, non-zero) and count.
pub fn check_guest_partitions(requests: &[GuestPartitionRequest]) -> Result<(), ImageError> {
    if requests.len() > MAX_GUEST_PARTITIONS {
        return Err(ImageError::TooManyGuestPartitions {
            count: requests.len(),
        });
    }
    for (i, r) in requests.iter().enumerate() {
        keel_config::limits::check_vm_name(&r.name).map_err(|reason| {
            ImageError::GuestPartitionName {
                name: r.name.clone(),
                reason,
            }
        })?;
        if r.bytes == 0 || !r.bytes.is_multiple_of(ALIGN_SECTORS * SECTOR) {
            return Err(ImageError::GuestPartitionSize {
                name: r.name.clone(),
                bytes: r.bytes,
            });
        }
        let keel_names = [BIOS_BOOT_NAME, ESP_NAME, CONFIG_NAME, STORE_NAME];
        if requests[..i].iter().any(|other| other.name == r.name)
            || keel_names.contains(&r.name.as_str())
        {
            return Err(ImageError::DuplicateGuestPartition {
                name: r.name.clone(),
            });
        }
    }
    Ok(())
}

/// `bytes` plus an eighth plus 4 MiB, in sectors rounded up to whole MiB, at least `min`.
fn with_headroom(bytes: u64, min: u64) -> u64 {
    let wanted = bytes
        .saturating_add(bytes / 8)
        .saturating_add(4 << 20)
        .div_ceil(SECTOR);
    (wanted.div_ceil(ALIGN_SECTORS) * ALIGN_SECTORS).max(min)
}

impl Layout {
    /// The layout whose ESP holds `payload_bytes` of files with room to spare: 32 MiB, or the
    /// payload plus an eighth plus 4 MiB, rounded up to whole MiB; the store at its minimum.
    pub fn for_esp_payload(payload_bytes: u64) -> Layout {
        Layout {
            esp_sectors: with_headroom(payload_bytes, ESP_MIN_SECTORS),
            store_sectors: STORE_MIN_SECTORS,
            guest_sectors: 0,
        }
    }

    /// This layout with a store that holds files of `sizes` bytes with room to spare: each
    /// file rounded up to 64 KiB, plus an eighth plus 4 MiB, whole MiB, at least 16 MiB.
    pub fn with_store_files(self, sizes: impl IntoIterator<Item = u64>) -> Layout {
        let bytes = sizes.into_iter().fold(0u64, |sum, size| {
            sum.saturating_add(size.div_ceil(STORE_FILE_GRANULE) * STORE_FILE_GRANULE)
        });
        Layout {
            store_sectors: with_headroom(bytes, STORE_MIN_SECTORS),
            ..self
        }
    }

    /// This layout with room for `requests` (checked by [`check_guest_partitions`]) after
    /// the store.
    pub fn with_guest_partitions(self, requests: &[GuestPartitionRequest]) -> Layout {
        Layout {
            guest_sectors: requests.iter().map(|r| r.bytes / SECTOR).sum(),
            ..self
        }
    }

    /// `requests` placed one after the other after the store, numbered from 5; each starts
    /// on a 1 MiB boundary because the sizes are whole MiB.
    pub fn guest_partitions(&self, requests: &[GuestPartitionRequest]) -> Vec<GuestPartitionSpec> {
        let store = self.store();
        let mut next = store.first_lba + store.sectors;
        requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let spec = GuestPartitionSpec {
                    number: 5 + i as u32,
                    name: r.name.clone(),
                    first_lba: next,
                    sectors: r.bytes / SECTOR,
                };
                next += spec.sectors;
                spec
            })
            .collect()
    }

    /// The BIOS boot partition.
    pub fn bios_boot(&self) -> PartitionSpec {
        PartitionSpec {
            number: 1,
            name: BIOS_BOOT_NAME,
            type_guid: partition_types::BIOS.guid,
            first_lba: BIOS_BOOT_START,
            sectors: BIOS_BOOT_SECTORS,
        }
    }

    /// The EFI system partition.
    pub fn esp(&self) -> PartitionSpec {
        PartitionSpec {
            number: 2,
            name: ESP_NAME,
            type_guid: partition_types::EFI.guid,
            first_lba: ESP_START,
            sectors: self.esp_sectors,
        }
    }

    /// The raw configuration partition.
    pub fn config(&self) -> PartitionSpec {
        PartitionSpec {
            number: 3,
            name: CONFIG_NAME,
            type_guid: KEEL_CONFIG_TYPE_GUID,
            first_lba: ESP_START + self.esp_sectors,
            sectors: CONFIG_SECTORS,
        }
    }

    /// The guest store.
    pub fn store(&self) -> PartitionSpec {
        PartitionSpec {
            number: 4,
            name: STORE_NAME,
            type_guid: STORE_TYPE_GUID,
            first_lba: self.config().first_lba + CONFIG_SECTORS,
            sectors: self.store_sectors,
        }
    }

    /// All four partitions in order.
    pub fn partitions(&self) -> [PartitionSpec; 4] {
        [self.bios_boot(), self.esp(), self.config(), self.store()]
    }

    /// Size of the whole disk in sectors.
    pub fn total_sectors(&self) -> u64 {
        let store = self.store();
        store.first_lba + store.sectors + self.guest_sectors + TAIL_SECTORS
    }
}

/// What went into an image, for the size report at the end of `keel build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// The image file.
    pub path: PathBuf,
    /// The layout used.
    pub layout: Layout,
    /// Size of GRUB's core.img (BIOS), padded to sectors.
    pub core_img_bytes: u64,
    /// Size of `BOOTX64.EFI`.
    pub efi_img_bytes: u64,
    /// Size of the kernel ELF on the ESP (stripped by [`assemble_image`]).
    pub kernel_bytes: u64,
    /// Size of the kernel ELF it was stripped from, when [`assemble_image`] stripped it.
    pub kernel_unstripped_bytes: Option<u64>,
    /// Module names and sizes.
    pub modules: Vec<(String, u64)>,
    /// Guest store file names and sizes.
    pub store_files: Vec<(String, u64)>,
    /// Guest-disk partitions.
    pub guest_partitions: Vec<GuestPartitionSpec>,
}

impl ImageSummary {
    /// Human-readable lines: image, partitions, payload sizes.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{}: {}",
            self.path.display(),
            human(self.layout.total_sectors() * SECTOR)
        )];
        for p in self.layout.partitions() {
            lines.push(format!(
                "  partition {} {:<11} LBA {:>6}..={:<6} {}",
                p.number,
                p.name,
                p.first_lba,
                p.last_lba(),
                human(p.sectors * SECTOR)
            ));
        }
        let kernel = match self.kernel_unstripped_bytes {
            Some(full) => format!(
                "{} on the ESP (loadable segments only; {} with debug info)",
                human(self.kernel_bytes),
                human(full)
            ),
            None => human(self.kernel_bytes),
        };
        lines.push(format!(
            "GRUB core.img {}, BOOTX64.EFI {}; kernel {kernel}",
            human(self.core_img_bytes),
            human(self.efi_img_bytes),
        ));
        for (name, bytes) in &self.modules {
            lines.push(format!("module {name}: {}", human(*bytes)));
        }
        for p in &self.guest_partitions {
            lines.push(format!(
                "  partition {} {:<11} LBA {:>6}..={:<6} {} (guest disk, sparse)",
                p.number,
                p.name,
                p.first_lba,
                p.first_lba + p.sectors - 1,
                human(p.sectors * SECTOR)
            ));
        }
        for (name, bytes) in &self.store_files {
            lines.push(format!("store file {name}: {}", human(*bytes)));
        }
        lines
    }
}

/// `1.5 MiB`-style sizes.
pub fn human(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// The module name for `path`: its file name, which must be plain (letters, digits, `._+-`, not
/// starting with a dot) because it is both a FAT file name and the module's command line.
pub fn module_name(path: &Path) -> Result<String, ImageError> {
    let bad = |reason| ImageError::BadModuleName {
        path: path.to_path_buf(),
        reason,
    };
    let name = path
        .file_name()
        .ok_or_else(|| bad("is missing"))?
        .to_str()
        .ok_or_else(|| bad("is not UTF-8"))?;
    if name.starts_with('.') {
        return Err(bad("starts with a dot"));
    }
    if name.len() > 200 {
        return Err(bad("is longer than 200 bytes"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    {
        return Err(bad("holds a character GRUB or FAT would misread"));
    }
    Ok(name.to_string())
}

/// The files of a `--store` directory, as the guest store will hold them: every regular file
/// (symbolic links followed) under its own name, in name order. Subdirectories and other
/// entries are refused (the store is flat), as are names FAT cannot hold and names that
/// differ only in case.
pub fn store_files(dir: &Path) -> Result<Vec<FatFile>, ImageError> {
    let read_dir = |source| ImageError::ReadStoreDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let path = entry.map_err(read_dir)?.path();
        let bad = |reason: String| ImageError::BadStoreEntry {
            path: path.clone(),
            reason,
        };
        let meta = std::fs::metadata(&path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        if !meta.is_file() {
            return Err(bad(
                "is not a regular file: the store is flat; move it out of the directory".into(),
            ));
        }
        if meta.len() > STORE_MAX_FILE {
            return Err(bad(format!(
                "is {} bytes, more than the 4 GiB - 1 a FAT file can hold",
                meta.len()
            )));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("file name is not UTF-8; rename it".into()))?
            .to_string();
        if let Some(reason) = fat::long_name_problem(&name) {
            return Err(bad(format!("file name {reason}; rename it")));
        }
        files.push(FatFile {
            path: format!("/{name}"),
            contents: Contents::File(path),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for (i, a) in files.iter().enumerate() {
        for b in &files[i + 1..] {
            if a.path.to_lowercase() == b.path.to_lowercase() {
                return Err(ImageError::DuplicateStoreName {
                    first: a.path[1..].to_string(),
                    second: b.path[1..].to_string(),
                });
            }
        }
    }
    Ok(files)
}

/// Builds the whole image at `out` from the kernel ELF, module files, command line, the
/// optional guest-store directory and the configuration document (`config_json`, stored in
/// the configuration partition): runs GRUB (`grub-mkimage`), lays out the GPT, fills the ESP
/// and the store. The file appears atomically (written next to `out`, then renamed).
pub fn assemble_image(
    elf: &Path,
    modules: &[PathBuf],
    cmdline: &str,
    store_dir: Option<&Path>,
    config_json: &[u8],
    out: &Path,
) -> Result<ImageSummary, ImageError> {
    assemble_image_with_partitions(elf, modules, cmdline, store_dir, config_json, &[], out)
}

/// [`assemble_image`], plus a guest-disk partition for each of `guest_partitions` after the
/// store (left sparse: the file only grows, nothing is written into them).
pub fn assemble_image_with_partitions(
    elf: &Path,
    modules: &[PathBuf],
    cmdline: &str,
    store_dir: Option<&Path>,
    config_json: &[u8],
    guest_partitions: &[GuestPartitionRequest],
    out: &Path,
) -> Result<ImageSummary, ImageError> {
    let kernel = stripped_kernel(elf)?;
    check_guest_partitions(guest_partitions)?;
    if cmdline.chars().any(char::is_control) {
        return Err(ImageError::BadCmdline);
    }
    let mut names = Vec::new();
    for path in modules {
        let name = module_name(path)?;
        if names.contains(&name) {
            return Err(ImageError::DuplicateModule { name });
        }
        std::fs::File::open(path).map_err(|source| ImageError::ReadModule {
            path: path.clone(),
            source,
        })?;
        names.push(name);
    }
    let store = match store_dir {
        Some(dir) => store_files(dir)?,
        None => Vec::new(),
    };
    let grub_images = grub::make_images()?;
    let mut files = vec![
        FatFile {
            path: EFI_LOADER_PATH.into(),
            contents: Contents::Bytes(grub_images.efi_img.clone()),
        },
        FatFile {
            path: GRUB_CFG_PATH.into(),
            contents: Contents::Bytes(grub::grub_cfg(KERNEL_PATH, cmdline, &names).into_bytes()),
        },
        FatFile {
            path: KERNEL_PATH.into(),
            contents: Contents::Bytes(kernel.stripped),
        },
    ];
    for (path, name) in modules.iter().zip(&names) {
        files.push(FatFile {
            path: format!("{MODULES_DIR}/{name}"),
            contents: Contents::File(path.clone()),
        });
    }
    let mut summary = write_image_with_partitions(
        &grub_images,
        &files,
        &store,
        config_json,
        guest_partitions,
        out,
    )?;
    summary.kernel_unstripped_bytes = Some(kernel.unstripped_len);
    Ok(summary)
}

/// The kernel for the ESP and the size it had.
struct StrippedKernel {
    /// [`elf_strip::loadable_only`] of the file.
    stripped: Vec<u8>,
    /// The file's size, debug info included.
    unstripped_len: u64,
}

/// Reads the kernel ELF at `elf` and strips it to what GRUB loads ([`elf_strip`]); the file
/// itself, debug info and defmt table included, stays for `keel logs`.
fn stripped_kernel(elf: &Path) -> Result<StrippedKernel, ImageError> {
    let bytes = std::fs::read(elf).map_err(|source| ImageError::ReadKernel {
        path: elf.to_path_buf(),
        source,
    })?;
    if !bytes.starts_with(b"\x7fELF") {
        return Err(ImageError::NotElf {
            path: elf.to_path_buf(),
        });
    }
    let stripped = elf_strip::loadable_only(&bytes).map_err(|source| ImageError::StripKernel {
        path: elf.to_path_buf(),
        source,
    })?;
    Ok(StrippedKernel {
        stripped,
        unstripped_len: bytes.len() as u64,
    })
}

/// Size of a file to be written, for layout and the summary.
fn contents_len(contents: &Contents) -> Result<u64, ImageError> {
    match contents {
        Contents::Bytes(bytes) => Ok(bytes.len() as u64),
        Contents::File(path) => {
            std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|source| ImageError::ReadModule {
                    path: path.clone(),
                    source,
                })
        }
    }
}

/// The configuration partition's initial contents for `config_json`: a generation-1 record in
/// slot A (at the partition's start), to be followed by zeros (slot B empty).
pub fn config_partition_record(config_json: &[u8]) -> Result<Vec<u8>, ImageError> {
    let slots = Slots::new(CONFIG_SECTORS, SECTOR as usize).map_err(ImageError::ConfigLayout)?;
    let max = slots.max_payload();
    if config_json.len() > max {
        return Err(ImageError::ConfigTooLarge {
            len: config_json.len(),
            max,
        });
    }
    record::encode(1, config_json).map_err(ImageError::ConfigRecord)
}

/// Writes the image from ready GRUB blobs, the ESP's files, the guest store's files and the
/// configuration document: protective MBR with GRUB's boot code, GPT, core.img in the BIOS
/// boot partition, the ESP, the configuration record ([`config_partition_record`]) and the
/// guest store.
pub fn write_image(
    grub_images: &GrubImages,
    esp_files: &[FatFile],
    store_files: &[FatFile],
    config_json: &[u8],
    out: &Path,
) -> Result<ImageSummary, ImageError> {
    write_image_with_partitions(grub_images, esp_files, store_files, config_json, &[], out)
}

/// [`write_image`] with guest-disk partitions after the store (sparse).
pub fn write_image_with_partitions(
    grub_images: &GrubImages,
    esp_files: &[FatFile],
    store_files: &[FatFile],
    config_json: &[u8],
    guest_partitions: &[GuestPartitionRequest],
    out: &Path,
) -> Result<ImageSummary, ImageError> {
    check_guest_partitions(guest_partitions)?;
    let config_record = config_partition_record(config_json)?;
    let mut payload = 0;
    let mut kernel_bytes = 0;
    let mut modules = Vec::new();
    for file in esp_files {
        let len = contents_len(&file.contents)?;
        payload += len;
        if file.path == KERNEL_PATH {
            kernel_bytes = len;
        } else if let Some(name) = file.path.strip_prefix(&format!("{MODULES_DIR}/")) {
            modules.push((name.to_string(), len));
        }
    }
    let mut store_sizes = Vec::new();
    for file in store_files {
        let name = file.path.trim_start_matches('/').to_string();
        store_sizes.push((name, contents_len(&file.contents)?));
    }
    let layout = Layout::for_esp_payload(payload)
        .with_store_files(store_sizes.iter().map(|(_, n)| *n))
        .with_guest_partitions(guest_partitions);
    let guest_specs = layout.guest_partitions(guest_partitions);
    if u32::try_from(layout.store_sectors).is_err() {
        return Err(ImageError::StoreTooLarge {
            bytes: store_sizes.iter().map(|(_, n)| *n).sum(),
        });
    }
    let core = grub::patch_core_img(&grub_images.core_img, BIOS_BOOT_START)?;
    let max = BIOS_BOOT_SECTORS * SECTOR;
    if core.len() as u64 > max {
        return Err(ImageError::CoreTooLarge {
            bytes: core.len(),
            max,
        });
    }
    let boot_code = grub::mbr_boot_code(&grub_images.boot_img, BIOS_BOOT_START)?;

    // A uniquely named file next to `out`, renamed over it at the end: concurrent builds (test
    // threads, several `keel build`s) never write into the same file, and a QEMU that has the
    // old image open keeps reading the old one.
    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".keel-img-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|source| ImageError::Io {
            what: "create a temporary image in",
            path: dir.to_path_buf(),
            source,
        })?;
    write_disk(
        tmp.path(),
        &layout,
        &guest_specs,
        boot_code,
        &core,
        esp_files,
        store_files,
        &config_record,
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // tempfile creates 0600; an image is an ordinary build output.
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(out).map_err(|e| ImageError::Io {
        what: "rename image to",
        path: out.to_path_buf(),
        source: e.error,
    })?;
    Ok(ImageSummary {
        path: out.to_path_buf(),
        layout,
        core_img_bytes: core.len() as u64,
        efi_img_bytes: grub_images.efi_img.len() as u64,
        kernel_bytes,
        kernel_unstripped_bytes: None,
        modules,
        store_files: store_sizes,
        guest_partitions: guest_specs,
    })
}

/// Writes every sector of the image into the file at `tmp`.
#[allow(clippy::too_many_arguments)]
fn write_disk(
    tmp: &Path,
    layout: &Layout,
    guest_partitions: &[GuestPartitionSpec],
    boot_code: [u8; grub::MBR_BOOT_CODE_LEN],
    core: &[u8],
    esp_files: &[FatFile],
    store_files: &[FatFile],
    config_record: &[u8],
) -> Result<(), ImageError> {
    let io = |what, source| ImageError::Io {
        what,
        path: tmp.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .truncate(true)
        .open(tmp)
        .map_err(|e| io("create", e))?;
    file.set_len(layout.total_sectors() * SECTOR)
        .map_err(|e| io("size", e))?;

    let disk_guid = Uuid::new_v4();
    let mut mbr = gpt::mbr::ProtectiveMBR::with_lb_size(
        u32::try_from(layout.total_sectors() - 1).unwrap_or(u32::MAX),
    );
    mbr.set_bootcode(boot_code);
    let sig = disk_guid.as_bytes();
    mbr.set_disk_signature([sig[0], sig[1], sig[2], sig[3]]);
    mbr.overwrite_lba0(&mut file)?;

    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(file, Some(disk_guid))?;
    let mut table = BTreeMap::new();
    for spec in layout.partitions() {
        table.insert(
            spec.number,
            gpt::partition::Partition {
                part_type_guid: Type {
                    guid: spec.type_guid,
                    os: OperatingSystem::None,
                },
                part_guid: Uuid::new_v4(),
                first_lba: spec.first_lba,
                last_lba: spec.last_lba(),
                flags: 0,
                name: spec.name.to_string(),
            },
        );
    }
    for spec in guest_partitions {
        table.insert(
            spec.number,
            gpt::partition::Partition {
                part_type_guid: Type {
                    guid: GUEST_DISK_TYPE_GUID,
                    os: OperatingSystem::None,
                },
                part_guid: Uuid::new_v4(),
                first_lba: spec.first_lba,
                last_lba: spec.first_lba + spec.sectors - 1,
                flags: 0,
                name: spec.name.clone(),
            },
        );
    }
    disk.update_partitions(table)?;
    let mut file = disk.write()?;

    file.seek(SeekFrom::Start(BIOS_BOOT_START * SECTOR))
        .and_then(|_| file.write_all(core))
        .map_err(|e| io("write core.img into", e))?;

    let esp = layout.esp();
    let esp_id = u32::from_le_bytes([sig[4], sig[5], sig[6], sig[7]]);
    fat::format(
        &mut file,
        esp.first_lba,
        esp.sectors,
        grub::ESP_LABEL,
        esp_id,
    )?;
    fat::write_files(&mut file, esp.first_lba, esp.sectors, esp_files)?;
    // Slot A starts at the partition's first sector; the rest of the partition (slot B)
    // stays zeroed, which the record reader sees as blank.
    file.seek(SeekFrom::Start(layout.config().first_lba * SECTOR))
        .and_then(|_| file.write_all(config_record))
        .map_err(|e| io("write the configuration record into", e))?;

    let store = layout.store();
    let store_id = u32::from_le_bytes([sig[8], sig[9], sig[10], sig[11]]);
    fat::format(
        &mut file,
        store.first_lba,
        store.sectors,
        STORE_LABEL,
        store_id,
    )?;
    if !store_files.is_empty() {
        fat::write_files(&mut file, store.first_lba, store.sectors, store_files)?;
    }

    file.sync_all().map_err(|e| io("flush", e))
}

#[cfg(test)]
#[path = "gpt_image_tests.rs"]
mod tests;
