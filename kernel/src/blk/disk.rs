//! The synchronous block interface every disk driver offers: [`Disk`], 512-byte sectors,
//! and [`DiskError`]; [`check_range`] is the one bounds check all implementations share.

use alloc::string::String;
use core::fmt;

/// Bytes per sector: the only sector size Keel's disk code handles.
pub const SECTOR: usize = 512;

/// A disk of 512-byte sectors, read and written synchronously.
///
/// Buffers must be a non-zero multiple of [`SECTOR`] bytes and the range `lba..lba +
/// buf.len() / SECTOR` must lie inside [`sector_count`](Disk::sector_count); anything else is
/// refused with [`DiskError::BadLength`] or [`DiskError::OutOfRange`] before the device sees
/// it. A `write` may sit in a volatile cache until `flush` returns.
pub trait Disk {
    /// Number of sectors.
    fn sector_count(&self) -> u64;

    /// Reads `buf.len() / SECTOR` sectors from `lba` on.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError>;

    /// Writes `buf.len() / SECTOR` sectors from `lba` on.
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError>;

    /// Makes completed writes durable.
    fn flush(&mut self) -> Result<(), DiskError>;
}

impl<D: Disk + ?Sized> Disk for &mut D {
    fn sector_count(&self) -> u64 {
        (**self).sector_count()
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        (**self).read(lba, buf)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        (**self).write(lba, buf)
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        (**self).flush()
    }
}

/// What a disk operation was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOp {
    /// Reading sectors.
    Read,
    /// Writing sectors.
    Write,
    /// Flushing the write cache.
    Flush,
}

impl fmt::Display for DiskOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskOp::Read => "read",
            DiskOp::Write => "write",
            DiskOp::Flush => "flush",
        })
    }
}

/// Why a disk operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    /// The buffer is empty or not a whole number of sectors.
    #[error("buffer of {len} bytes is not a non-zero multiple of the {SECTOR}-byte sector")]
    BadLength {
        /// Its length in bytes.
        len: usize,
    },
    /// The sectors asked for are not all on the disk (or partition).
    #[error("sectors {lba}..{} are beyond the end ({capacity} sectors)", lba.saturating_add(*count))]
    OutOfRange {
        /// First sector asked for.
        lba: u64,
        /// Number of sectors asked for.
        count: u64,
        /// Sectors the disk has.
        capacity: u64,
    },
    /// The device is read-only.
    #[error("the disk is read-only")]
    ReadOnly,
    /// The device reported an error.
    #[error("disk {op} at sector {lba} failed: {detail}")]
    Device {
        /// The operation.
        op: DiskOp,
        /// First sector of the request (0 for a flush).
        lba: u64,
        /// The driver's description.
        detail: String,
    },
}

/// Checks that a buffer of `len` bytes at `lba` fits a disk of `capacity` sectors; returns
/// the number of sectors.
pub fn check_range(lba: u64, len: usize, capacity: u64) -> Result<u64, DiskError> {
    if len == 0 || !len.is_multiple_of(SECTOR) {
        return Err(DiskError::BadLength { len });
    }
    let count = (len / SECTOR) as u64;
    match lba.checked_add(count) {
        Some(end) if end <= capacity => Ok(count),
        _ => Err(DiskError::OutOfRange {
            lba,
            count,
            capacity,
        }),
    }
}

/// A little-endian `u16` of an on-disk structure (GPT, FAT) at byte `at` of `b`; 0 past the
/// end (callers check a structure's size before they read its fields).
pub fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

/// A little-endian `u32`, as [`le16`].
pub fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// A little-endian `u64`, as [`le16`].
pub fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// A disk in memory, for host tests.
#[cfg(test)]
pub mod mem {
    use super::*;
    use alloc::vec::Vec;

    /// Sectors in a `Vec`; counts reads for the tests that care.
    #[derive(Clone, Debug)]
    pub struct MemDisk {
        /// The bytes.
        pub bytes: Vec<u8>,
        /// Read requests served.
        pub reads: usize,
        /// Flushes served.
        pub flushes: usize,
    }

    impl MemDisk {
        /// A disk over `bytes` (its length rounded down to whole sectors).
        pub fn new(mut bytes: Vec<u8>) -> MemDisk {
            bytes.truncate(bytes.len() / SECTOR * SECTOR);
            MemDisk {
                bytes,
                reads: 0,
                flushes: 0,
            }
        }
    }

    impl Disk for MemDisk {
        fn sector_count(&self) -> u64 {
            (self.bytes.len() / SECTOR) as u64
        }

        fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
            check_range(lba, buf.len(), self.sector_count())?;
            let start = lba as usize * SECTOR;
            buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
            self.reads += 1;
            Ok(())
        }

        fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
            check_range(lba, buf.len(), self.sector_count())?;
            let start = lba as usize * SECTOR;
            self.bytes[start..start + buf.len()].copy_from_slice(buf);
            Ok(())
        }

        fn flush(&mut self) -> Result<(), DiskError> {
            self.flushes += 1;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_checks() {
        assert_eq!(check_range(0, 512, 1), Ok(1));
        assert_eq!(check_range(3, 1024, 5), Ok(2));
        assert_eq!(check_range(0, 0, 5), Err(DiskError::BadLength { len: 0 }));
        assert_eq!(
            check_range(0, 100, 5),
            Err(DiskError::BadLength { len: 100 })
        );
        assert!(matches!(
            check_range(4, 1024, 5),
            Err(DiskError::OutOfRange {
                lba: 4,
                count: 2,
                capacity: 5
            })
        ));
        assert!(matches!(
            check_range(u64::MAX, 512, 5),
            Err(DiskError::OutOfRange { .. })
        ));
    }
}
