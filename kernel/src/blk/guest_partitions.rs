//! Guest disks that are GPT partitions of Keel's own disk: for disks larger than a store
//! file can be (FAT caps a file at 4 GiB − 1).
//!
//! A guest-disk partition has the type [`GUEST_DISK_TYPE`] and the disk's name as its GPT
//! name (the VM-name rule: `a-z0-9-`, 1–32 characters, a letter first). Sizes are whole MiB
//! and partitions start on 1 MiB boundaries. Only partitions of that type are ever listed,
//! opened or deleted here: `keel-config`, `keel-store` and foreign partitions are out of
//! reach.
//!
//! The pure half (planning a create or delete on a [`Gpt`], [`parse_size`]) is host-tested;
//! on bare metal [`list`], [`create`], [`delete`] and [`open`] act on the boot disk
//! (`boot_disk::change_table` writes the table power-cut safely and updates the in-memory
//! copy), and a [`PartitionDisk`] is a guest's view of one partition.

use alloc::string::String;
use alloc::vec::Vec;

use super::disk::{DiskError, SECTOR};
use super::gpt::{Gpt, Guid};
use super::gpt_write::{self, ALIGN_SECTORS, GptWriteError, NewPartition};

/// Partition type GUID of a Keel guest disk, `b0983fed-cb2d-4d46-b9f1-c5740e47fbd0`
/// (random, Keel's own; image-builder `GUEST_DISK_TYPE_GUID`).
pub const GUEST_DISK_TYPE: Guid = Guid::from_u128(0xb0983fed_cb2d_4d46_b9f1_c5740e47fbd0);

/// Bytes in a MiB: the size unit of guest-disk partitions.
pub const MIB: u64 = 1 << 20;

/// A guest-disk partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestPartition {
    /// Its name (the GPT partition name).
    pub name: String,
    /// First sector on Keel's disk.
    pub first_lba: u64,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Its unique partition GUID: an open disk checks it on every request, so a partition
    /// deleted and made again under the same name is not silently another disk.
    pub unique_guid: Guid,
}

impl GuestPartition {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR as u64
    }
}

/// Why a guest-disk partition operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuestPartitionError {
    /// No boot disk, or it refuses writes.
    #[error("{0}")]
    BootDisk(String),
    /// The name breaks the rule.
    #[error("bad disk name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The size is 0 or not whole MiB.
    #[error("bad disk size of {bytes} bytes: give a non-zero number of MiB (like 512M or 8G)")]
    BadSize {
        /// The size asked for.
        bytes: u64,
    },
    /// A size the console could not read.
    #[error("bad size {text:?}: give a number with a unit, like 512M, 8G or 1T")]
    BadSizeText {
        /// What was typed.
        text: String,
    },
    /// A partition of that name exists.
    #[error("a disk partition named {name:?} already exists")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// Not enough free space.
    #[error(
        "not enough free space on Keel's disk for {} MiB: the largest free space is {} MiB",
        wanted_mib,
        largest_free_mib
    )]
    NoSpace {
        /// MiB asked for.
        wanted_mib: u64,
        /// The largest free run, in MiB.
        largest_free_mib: u64,
    },
    /// No guest-disk partition of that name.
    #[error("no disk partition named {name:?} (`disk` lists them)")]
    NotFound {
        /// The name.
        name: String,
    },
    /// A VM uses it.
    #[error("disk partition {name:?} is in use by {}: stop {} first", users.join(", "), if users.len() == 1 { "it" } else { "them" })]
    InUse {
        /// The name.
        name: String,
        /// The VMs using it.
        users: Vec<String>,
    },
    /// The partition an open disk refers to is gone (deleted, or deleted and made again).
    #[error("disk partition {name:?} was deleted while open")]
    Gone {
        /// The name.
        name: String,
    },
    /// Writing the partition table failed, or the table cannot take another entry.
    #[error("{0}")]
    Table(GptWriteError),
    /// The disk failed.
    #[error("{0}")]
    Disk(DiskError),
}

impl From<GptWriteError> for GuestPartitionError {
    fn from(e: GptWriteError) -> Self {
        match e {
            GptWriteError::NameTaken { name } => GuestPartitionError::NameTaken { name },
            GptWriteError::NoSpace {
                wanted_sectors,
                largest_free_sectors,
            } => GuestPartitionError::NoSpace {
                wanted_mib: wanted_sectors / ALIGN_SECTORS,
                largest_free_mib: largest_free_sectors / ALIGN_SECTORS,
            },
            other => GuestPartitionError::Table(other),
        }
    }
}

impl From<DiskError> for GuestPartitionError {
    fn from(e: DiskError) -> Self {
        GuestPartitionError::Disk(e)
    }
}

/// Checks a guest-disk name (the VM-name rule).
pub fn check_name(name: &str) -> Result<(), GuestPartitionError> {
    keel_config::limits::check_vm_name(name).map_err(|reason| GuestPartitionError::BadName {
        name: name.into(),
        reason,
    })
}

/// The guest-disk partitions in `gpt`, in table order.
pub fn guest_partitions(gpt: &Gpt) -> Vec<GuestPartition> {
    gpt.partitions
        .iter()
        .filter(|p| p.type_guid == GUEST_DISK_TYPE)
        .map(|p| GuestPartition {
            name: p.name.clone(),
            first_lba: p.first_lba,
            sectors: p.sectors(),
            unique_guid: p.unique_guid,
        })
        .collect()
}

/// The guest-disk partition `name` in `gpt`.
pub fn find(gpt: &Gpt, name: &str) -> Result<GuestPartition, GuestPartitionError> {
    guest_partitions(gpt)
        .into_iter()
        .find(|p| p.name == name)
        .ok_or(GuestPartitionError::NotFound { name: name.into() })
}

/// The largest free space on the disk of `gpt` for a new partition, in MiB.
pub fn largest_free_mib(gpt: &Gpt) -> u64 {
    gpt_write::free_extents(gpt)
        .iter()
        .map(|run| run.sectors / ALIGN_SECTORS)
        .max()
        .unwrap_or(0)
}

/// `gpt` with a guest-disk partition `name` of `bytes` added, and the partition.
pub fn plan_create(
    gpt: &Gpt,
    name: &str,
    bytes: u64,
    unique_guid: Guid,
) -> Result<(Gpt, GuestPartition), GuestPartitionError> {
    check_name(name)?;
    if bytes == 0 || !bytes.is_multiple_of(MIB) {
        return Err(GuestPartitionError::BadSize { bytes });
    }
    // Any partition of that name, guest disk or not, takes the name.
    let new = NewPartition {
        name,
        type_guid: GUEST_DISK_TYPE,
        unique_guid,
        sectors: bytes / SECTOR as u64,
    };
    let (table, p) = gpt_write::with_partition_added(gpt, &new)?;
    Ok((
        table,
        GuestPartition {
            sectors: p.sectors(),
            name: p.name,
            first_lba: p.first_lba,
            unique_guid: p.unique_guid,
        },
    ))
}

/// `gpt` without the guest-disk partition `name`, and the partition removed. `users` are the
/// VMs using it; any refuses the delete.
pub fn plan_delete(
    gpt: &Gpt,
    name: &str,
    users: Vec<String>,
) -> Result<(Gpt, GuestPartition), GuestPartitionError> {
    let found = find(gpt, name)?;
    if !users.is_empty() {
        return Err(GuestPartitionError::InUse {
            name: name.into(),
            users,
        });
    }
    let (table, _) = gpt_write::with_partition_removed(gpt, name)?;
    Ok((table, found))
}

/// Whether the partition `open` refers to is still in `gpt`, at the same place.
pub fn still_there(gpt: &Gpt, open: &GuestPartition) -> Result<(), GuestPartitionError> {
    match find(gpt, &open.name) {
        Ok(now) if now == *open => Ok(()),
        _ => Err(GuestPartitionError::Gone {
            name: open.name.clone(),
        }),
    }
}

/// A size typed on the console, in bytes: a number and a binary unit, `K`, `M`, `G` or `T`
/// (`KiB`… and `KB`… are read the same); a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, GuestPartitionError> {
    let bad = || GuestPartitionError::BadSizeText { text: text.into() };
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    number.checked_mul(1 << shift).ok_or_else(bad)
}

/// A unique partition GUID (version 4 layout) from `seed` (the TSC at boot time of the
/// request), the disk's GUID and the name: distinct across creates on one disk and, with
/// the disk GUID mixed in, across disks.
pub fn unique_guid(seed: u64, disk_guid: Guid, name: &str) -> Guid {
    // splitmix64 over the inputs: not cryptographic, only distinct.
    let mut state = seed;
    let mut next = |mix: u64| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ mix;
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut mix = 0u64;
    for chunk in disk_guid.0.chunks(8).chain(name.as_bytes().chunks(8)) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        mix = next(u64::from_le_bytes(word));
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&mix.to_le_bytes());
    bytes[8..].copy_from_slice(&next(0).to_le_bytes());
    // Version 4 (stored little-endian in the third field), RFC 4122 variant.
    bytes[7] = (bytes[7] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Guid(bytes)
}

/// What backs a guest disk, in listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestDiskKind {
    /// A guest-disk GPT partition on Keel's disk.
    Partition,
    /// A file in the guest store.
    StoreFile,
}

impl GuestDiskKind {
    /// `partition` or `file`, as the API and the console show it.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestDiskKind::Partition => "partition",
            GuestDiskKind::StoreFile => "file",
        }
    }
}

/// One guest disk in a listing (`disk`, `GET /api/v1/disks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestDiskEntry {
    /// Partition or store file.
    pub kind: GuestDiskKind,
    /// Its name: the partition's, or the store file's.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// The VMs using it, each with whether read-only.
    pub users: Vec<(String, bool)>,
}

/// Whether a store file is listed as a guest disk: a VM uses it or a VM definition in
/// `config` names it (store names ignore ASCII case, as FAT does), or it ends in `.img` or
/// `.raw`.
pub fn is_disk_image(name: &str, in_use: bool, config: &keel_config::Config) -> bool {
    let lower = name.to_ascii_lowercase();
    let configured = config.vms.iter().flat_map(|vm| &vm.disks).any(|d| {
        matches!(d.source(), keel_config::schema::DiskSource::File(f) if f.eq_ignore_ascii_case(name))
    });
    in_use || configured || lower.ends_with(".img") || lower.ends_with(".raw")
}

#[cfg(target_os = "none")]
pub use kernel_guest_partitions::*;

#[cfg(target_os = "none")]
mod kernel_guest_partitions {
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    use super::{
        GuestDiskEntry, GuestDiskKind, GuestPartition, GuestPartitionError, find, guest_partitions,
        plan_create, plan_delete, still_there, unique_guid,
    };
    use crate::blk::boot_disk::{self, TableChangeError};
    use crate::blk::disk::{Disk, DiskError, DiskOp};
    use crate::blk::partition::PartitionView;
    use keel_vmm::virtio::blk::{BlockBackend, BlockError};

    impl From<TableChangeError> for GuestPartitionError {
        fn from(e: TableChangeError) -> Self {
            match e {
                TableChangeError::Write(e) => e.into(),
                other => GuestPartitionError::BootDisk(other.to_string()),
            }
        }
    }

    /// The VMs using a guest disk, each with whether read-only: the disk claims VMs take
    /// when they start (`crate::vms::disks`).
    pub fn users_of(kind: GuestDiskKind, name: &str) -> Vec<(String, bool)> {
        use crate::vms::disks::DiskName;
        let disk = match kind {
            GuestDiskKind::Partition => DiskName::partition(name),
            GuestDiskKind::StoreFile => DiskName::file(name),
        };
        crate::vms::disks::users()
            .into_iter()
            .filter(|u| u.disk.same_disk(&disk))
            .map(|u| (u.vm, u.read_only))
            .collect()
    }

    fn boot_disk_error(e: boot_disk::BootDiskError) -> GuestPartitionError {
        GuestPartitionError::BootDisk(e.to_string())
    }

    /// The guest-disk partitions on Keel's disk, and the largest free space in MiB.
    pub fn list() -> Result<(Vec<GuestPartition>, u64), GuestPartitionError> {
        let info = boot_disk::info().map_err(boot_disk_error)?;
        Ok((
            guest_partitions(&info.gpt),
            super::largest_free_mib(&info.gpt),
        ))
    }

    /// Makes the guest-disk partition `name` of `bytes` (whole MiB) in the first free space
    /// large enough. Its contents are whatever the sectors held (guests format their disks).
    pub fn create(name: &str, bytes: u64) -> Result<GuestPartition, GuestPartitionError> {
        let seed = crate::arch::cpu::rdtsc();
        let made = boot_disk::change_table(|gpt| {
            plan_create(gpt, name, bytes, unique_guid(seed, gpt.disk_guid, name))
        })?;
        defmt::info!(
            "blk: made disk partition {=str}: {=u64} MiB at LBA {=u64}",
            name,
            made.sectors / 2048,
            made.first_lba
        );
        Ok(made)
    }

    /// Deletes the guest-disk partition `name`, refused while a VM uses it. Its sectors are
    /// left as they are.
    pub fn delete(name: &str) -> Result<GuestPartition, GuestPartitionError> {
        let users = users_of(GuestDiskKind::Partition, name)
            .into_iter()
            .map(|(vm, _)| vm)
            .collect();
        let gone = boot_disk::change_table(|gpt| plan_delete(gpt, name, users))?;
        defmt::info!("blk: deleted disk partition {=str}", name);
        Ok(gone)
    }

    /// Every guest disk, partitions first (in table order), then the store's disk images
    /// (see [`is_disk_image`](super::is_disk_image); `config` is the running configuration),
    /// each with its users; and the largest free space in MiB. A store that cannot be read
    /// leaves the files out and says why.
    pub fn inventory(config: &keel_config::Config) -> Result<Inventory, GuestPartitionError> {
        let (partitions, free_mib) = list()?;
        let mut disks: Vec<GuestDiskEntry> = partitions
            .into_iter()
            .map(|p| GuestDiskEntry {
                kind: GuestDiskKind::Partition,
                users: users_of(GuestDiskKind::Partition, &p.name),
                bytes: p.bytes(),
                name: p.name,
            })
            .collect();
        let store_error = match crate::store::list() {
            Ok(files) => {
                for f in files {
                    let users = users_of(GuestDiskKind::StoreFile, &f.name);
                    if super::is_disk_image(&f.name, !users.is_empty(), config) {
                        disks.push(GuestDiskEntry {
                            kind: GuestDiskKind::StoreFile,
                            name: f.name,
                            bytes: f.size,
                            users,
                        });
                    }
                }
                None
            }
            Err(e) => Some(e.to_string()),
        };
        Ok(Inventory {
            disks,
            free_mib,
            store_error,
        })
    }

    /// All guest disks, see [`inventory`].
    #[derive(Clone, Debug)]
    pub struct Inventory {
        /// The disks.
        pub disks: Vec<GuestDiskEntry>,
        /// The largest free space on Keel's disk for a new partition, in MiB.
        pub free_mib: u64,
        /// Why the store's files are missing, when they are.
        pub store_error: Option<String>,
    }

    /// Opens the guest-disk partition `name` for a guest.
    pub fn open(name: &str) -> Result<PartitionDisk, GuestPartitionError> {
        let info = boot_disk::info().map_err(boot_disk_error)?;
        Ok(PartitionDisk {
            partition: find(&info.gpt, name)?,
            read_only: info.read_only,
        })
    }

    /// One guest-disk partition as a disk of its own, addressed from 0. It locks the boot
    /// disk for each request only (so the console, the store and other guests interleave),
    /// and checks on each that the partition is still the one opened.
    #[derive(Clone, Debug)]
    pub struct PartitionDisk {
        partition: GuestPartition,
        read_only: bool,
    }

    impl PartitionDisk {
        /// The partition.
        pub fn partition(&self) -> &GuestPartition {
            &self.partition
        }

        /// Whether the boot disk refuses writes.
        pub fn read_only(&self) -> bool {
            self.read_only
        }

        fn view(&self) -> Result<PartitionView<boot_disk::LockedDisk>, GuestPartitionError> {
            let disk = boot_disk::lock().map_err(boot_disk_error)?;
            still_there(&disk.info().gpt, &self.partition)?;
            Ok(PartitionView::new(
                disk,
                self.partition.first_lba,
                self.partition.sectors,
            )?)
        }

        /// Reads `buf.len() / 512` sectors from `sector` on.
        pub fn read_sectors(&self, sector: u64, buf: &mut [u8]) -> Result<(), GuestPartitionError> {
            Ok(self.view()?.read(sector, buf)?)
        }

        /// Writes `buf.len() / 512` sectors from `sector` on.
        pub fn write_sectors(&self, sector: u64, buf: &[u8]) -> Result<(), GuestPartitionError> {
            if self.read_only {
                return Err(GuestPartitionError::Disk(DiskError::ReadOnly));
            }
            Ok(self.view()?.write(sector, buf)?)
        }

        /// Makes completed writes durable on the host disk.
        pub fn flush(&self) -> Result<(), GuestPartitionError> {
            Ok(self.view()?.flush()?)
        }
    }

    impl Disk for PartitionDisk {
        fn sector_count(&self) -> u64 {
            self.partition.sectors
        }

        fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
            self.read_sectors(lba, buf)
                .map_err(|e| disk_error(DiskOp::Read, lba, e))
        }

        fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
            self.write_sectors(lba, buf)
                .map_err(|e| disk_error(DiskOp::Write, lba, e))
        }

        fn flush(&mut self) -> Result<(), DiskError> {
            PartitionDisk::flush(self).map_err(|e| disk_error(DiskOp::Flush, 0, e))
        }
    }

    /// A guest's disk: the virtio-blk device checks each request against `sectors` first;
    /// the errors become `VIRTIO_BLK_S_IOERR` and `vm info`'s device error.
    impl BlockBackend for PartitionDisk {
        fn sectors(&self) -> u64 {
            self.partition.sectors
        }

        fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            self.read_sectors(sector, buf)
                .map_err(|e| BlockError(e.to_string()))
        }

        fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
            self.write_sectors(sector, buf)
                .map_err(|e| BlockError(e.to_string()))
        }

        fn flush(&mut self) -> Result<(), BlockError> {
            PartitionDisk::flush(self).map_err(|e| BlockError(e.to_string()))
        }
    }

    /// A [`GuestPartitionError`] as the [`Disk`] interface reports it.
    fn disk_error(op: DiskOp, lba: u64, e: GuestPartitionError) -> DiskError {
        match e {
            GuestPartitionError::Disk(e) => e,
            other => DiskError::Device {
                op,
                lba,
                detail: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
#[path = "guest_partitions_tests.rs"]
mod tests;
