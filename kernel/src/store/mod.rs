//! The guest store: the FAT `keel-store` partition of the boot disk, read-only.
//!
//! [`fat`] is the pure reader (host-tested against volumes the image builder writes); on
//! bare metal this module mounts the boot disk's store partition and offers [`list`] and
//! [`read`] (and [`read_with`] for streaming) over its root directory.

pub mod claims;
pub mod fat;
pub mod file_disk;

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
