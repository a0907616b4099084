//! The guest store: the FAT `keel-store` partition of the boot disk.
//!
//! [`fat`] is the pure reader (host-tested against volumes the image builder writes); on
//! bare metal this module mounts the boot disk's store partition and offers [`list`] and
//! [`read`] (and [`read_with`] for streaming) over its root directory.

pub mod claims;
pub mod fat;
pub mod file_disk;
pub mod snapshot_files;

#[cfg(target_os = "none")]
pub use kernel_store::*;

/// A file in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreEntry {
    /// Its name as the operator gave it (the FAT long name).
    pub name: alloc::string::String,
    /// Its size in bytes.
    pub size: u64,
}

/// Why the store cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// There is no boot disk (so no store partition).
    #[error("no guest store: {0}")]
    NoBootDisk(crate::blk::boot_disk::BootDiskError),
    /// The store partition does not hold a FAT volume Keel can read.
    #[error("guest store partition unreadable: {0} (rebuild the image with `keel build`)")]
    Mount(fat::FatError),
    /// Listing or reading failed (including "no such file").
    #[error("guest store: {0}")]
    Fat(fat::FatError),
    /// A file too small to be a disk (under one 512-byte sector).
    #[error(
        "guest store file '{name}' is {size} bytes: a disk image holds at least one 512-byte \
         sector (make one with `keel build --disk NAME=SIZE`)"
    )]
    TooSmall {
        /// The file.
        name: alloc::string::String,
        /// Its size in bytes.
        size: u64,
    },
}

/// A store file as a guest disk: its whole 512-byte sectors (a trailing partial sector is
/// not part of the disk), read and written in place through the file's extents on the
/// store partition; the FAT and the directory are never written. Made by `open_disk`; each
/// operation locks the boot disk for its duration, so the console, the API and every VM's
/// disk take turns on it.
#[derive(Debug)]
pub struct StoreFileDisk {
    /// The file's name as the store spells it.
    name: alloc::string::String,
    sectors: file_disk::FileSectors,
    read_only: bool,
}

impl StoreFileDisk {
    /// The file's name as the store spells it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The disk's size in sectors.
    pub fn sector_count(&self) -> u64 {
        self.sectors.sectors()
    }

    /// How many runs of sectors the file is in (1 for an unfragmented file).
    pub fn runs(&self) -> usize {
        self.sectors.runs().len()
    }
}

/// What virtio-blk sees: sectors, and errors that name the file.
#[cfg(target_os = "none")]
impl keel_vmm::virtio::blk::BlockBackend for StoreFileDisk {
    fn sectors(&self) -> u64 {
        self.sector_count()
    }

    fn read(
        &mut self,
        sector: u64,
        buf: &mut [u8],
    ) -> Result<(), keel_vmm::virtio::blk::BlockError> {
        StoreFileDisk::read(self, sector, buf).map_err(|e| self.block_error(e))
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), keel_vmm::virtio::blk::BlockError> {
        StoreFileDisk::write(self, sector, buf).map_err(|e| self.block_error(e))
    }

    fn flush(&mut self) -> Result<(), keel_vmm::virtio::blk::BlockError> {
        StoreFileDisk::flush(self).map_err(|e| self.block_error(e))
    }
}

#[cfg(target_os = "none")]
impl StoreFileDisk {
    fn block_error(&self, e: crate::blk::disk::DiskError) -> keel_vmm::virtio::blk::BlockError {
        keel_vmm::virtio::blk::BlockError(alloc::format!("store file {}: {e}", self.name))
    }

    /// The store partition, locked; its absence is a device error of operation `op`.
    fn partition(
        op: crate::blk::disk::DiskOp,
    ) -> Result<crate::blk::boot_disk::BootPartition, crate::blk::disk::DiskError> {
        crate::blk::boot_disk::store_partition().map_err(|e| crate::blk::disk::DiskError::Device {
            op,
            lba: 0,
            detail: alloc::format!("{e}"),
        })
    }

    /// Reads disk sectors `sector..` into `buf` (a non-zero multiple of 512 bytes).
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), crate::blk::disk::DiskError> {
        self.sectors.read(
            &mut Self::partition(crate::blk::disk::DiskOp::Read)?,
            sector,
            buf,
        )
    }

    /// Writes `buf` to disk sectors `sector..`, in place; refused on a read-only disk.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), crate::blk::disk::DiskError> {
        if self.read_only {
            return Err(crate::blk::disk::DiskError::ReadOnly);
        }
        self.sectors.write(
            &mut Self::partition(crate::blk::disk::DiskOp::Write)?,
            sector,
            buf,
        )
    }

    /// Flushes the host disk's write cache: completed writes are durable when it returns.
    pub fn flush(&mut self) -> Result<(), crate::blk::disk::DiskError> {
        use crate::blk::disk::Disk;
        Self::partition(crate::blk::disk::DiskOp::Flush)?.flush()
    }
}

impl StoreError {
    /// Whether the error is a missing file (the operator's typo, not a fault).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::Fat(fat::FatError::NotFound(_)))
    }
}

#[cfg(target_os = "none")]
mod kernel_store {
    use alloc::vec::Vec;

    use spin::Once;

    use super::fat::FatVolume;
    use super::{StoreEntry, StoreError};
    use crate::blk::boot_disk::{self, BootPartition};

    static VOLUME: Once<Result<FatVolume, StoreError>> = Once::new();

    /// Mounts the boot disk's store partition (once; later calls return the first answer).
    pub fn mount() -> Result<FatVolume, StoreError> {
        VOLUME
            .call_once(|| {
                let mut part = boot_disk::store_partition().map_err(StoreError::NoBootDisk)?;
                FatVolume::mount(&mut part).map_err(StoreError::Mount)
            })
            .clone()
    }

    fn open() -> Result<(FatVolume, BootPartition), StoreError> {
        let volume = mount()?;
        let part = boot_disk::store_partition().map_err(StoreError::NoBootDisk)?;
        Ok((volume, part))
    }

    /// The files of the store's root directory, in directory order.
    pub fn list() -> Result<Vec<StoreEntry>, StoreError> {
        let (volume, mut part) = open()?;
        let entries = volume.list(&mut part).map_err(StoreError::Fat)?;
        Ok(entries
            .into_iter()
            .map(|e| StoreEntry {
                name: e.name,
                size: u64::from(e.size),
            })
            .collect())
    }

    /// The whole content of the file `name` (exact name, else a case-insensitive match).
    pub fn read(name: &str) -> Result<Vec<u8>, StoreError> {
        let (volume, mut part) = open()?;
        let entry = volume.find(&mut part, name).map_err(StoreError::Fat)?;
        volume.read(&mut part, &entry).map_err(StoreError::Fat)
    }

    /// A store file as a guest disk (see [`StoreFileDisk`](super::StoreFileDisk)).
    pub fn open_disk(name: &str, read_only: bool) -> Result<super::StoreFileDisk, StoreError> {
        let (volume, mut part) = open()?;
        let entry = volume.find(&mut part, name).map_err(StoreError::Fat)?;
        let extents = volume.extents(&mut part, &entry).map_err(StoreError::Fat)?;
        let sectors = super::file_disk::FileSectors::new(extents);
        if sectors.sectors() == 0 {
            return Err(StoreError::TooSmall {
                name: entry.name,
                size: u64::from(entry.size),
            });
        }
        Ok(super::StoreFileDisk {
            name: entry.name,
            sectors,
            read_only,
        })
    }

    static REPAIRED: Once<Result<super::fat::write::RepairReport, StoreError>> = Once::new();

    /// Undoes what a power cut in an earlier create or delete left (lost clusters, FAT
    /// copies that differ), once per boot: the kernel calls it at boot, and every write
    /// goes through it first. Returns what it changed.
    pub fn repair() -> Result<super::fat::write::RepairReport, StoreError> {
        REPAIRED
            .call_once(|| {
                let (volume, mut part) = open()?;
                volume.repair(&mut part).map_err(StoreError::Fat)
            })
            .clone()
    }

    /// The store for writing, repaired first (see [`repair`]).
    fn writable() -> Result<(FatVolume, BootPartition), StoreError> {
        repair()?;
        open()
    }

    /// Creates the store file `name` of `size` bytes whose content `fill(offset, piece)`
    /// produces; crash-safe (see `fat::write`).
    pub fn create(
        name: &str,
        size: u64,
        modified: Option<u64>,
        fill: impl FnMut(u64, &mut [u8]) -> Result<(), alloc::string::String>,
    ) -> Result<StoreEntry, StoreError> {
        let (volume, mut part) = writable()?;
        let entry = volume
            .create(&mut part, name, size, modified, fill)
            .map_err(StoreError::Fat)?;
        Ok(StoreEntry {
            name: entry.name,
            size: u64::from(entry.size),
        })
    }

    /// Deletes the store file `name`; returns the bytes freed.
    pub fn delete(name: &str) -> Result<u64, StoreError> {
        let (volume, mut part) = writable()?;
        volume.delete(&mut part, name).map_err(StoreError::Fat)
    }

    /// Free and total bytes of the store.
    pub fn space() -> Result<super::fat::write::SpaceInfo, StoreError> {
        let (volume, mut part) = open()?;
        volume.space(&mut part).map_err(StoreError::Fat)
    }

    /// Streams the file `name` to `sink` in pieces of up to 64 KiB; returns its entry.
    pub fn read_with(name: &str, sink: impl FnMut(&[u8])) -> Result<StoreEntry, StoreError> {
        let (volume, mut part) = open()?;
        let entry = volume.find(&mut part, name).map_err(StoreError::Fat)?;
        volume
            .read_with(&mut part, &entry, sink)
            .map_err(StoreError::Fat)?;
        Ok(StoreEntry {
            name: entry.name,
            size: u64::from(entry.size),
        })
    }
}
