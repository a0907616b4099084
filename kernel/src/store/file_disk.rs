//! A store file as a disk: [`FileSectors`] maps the file's sectors to sectors of the store
//! partition through its [`Extent`]s and reads and writes them in place.
//!
//! Writes land only in sectors the file already owns: the FAT and the directory are never
//! written, so a power cut may tear a guest's data but never the store's file system. The
//! file's size never changes; its trailing partial sector (if any) is not part of the disk.

use alloc::vec::Vec;

use super::fat::Extent;
use crate::blk::disk::{Disk, DiskError, SECTOR, check_range};

/// A file's sectors, in file order, as runs on the store partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSectors {
    runs: Vec<Extent>,
    /// `starts[i]`: the file sector where `runs[i]` begins (ascending, `starts[0] == 0`).
    starts: Vec<u64>,
    sectors: u64,
}

impl FileSectors {
    /// The file whose sectors are `runs`, in order.
    pub fn new(runs: Vec<Extent>) -> FileSectors {
        let mut starts = Vec::with_capacity(runs.len());
        let mut sectors = 0u64;
        for run in &runs {
            starts.push(sectors);
            sectors += run.sectors;
        }
        FileSectors {
            runs,
            starts,
            sectors,
        }
    }

    /// The disk's size in sectors (the file's size / 512, rounded down).
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// The runs, for `vm info` and the tests.
    pub fn runs(&self) -> &[Extent] {
        &self.runs
    }

    /// Calls `piece(partition_lba, byte_offset_in_request, sectors)` for each part of the
    /// request `sector..sector + count` that lies in one run, in order; stops at the first
    /// error. The caller checked the range.
    fn for_each_piece(
        &self,
        sector: u64,
        count: u64,
        mut piece: impl FnMut(u64, usize, u64) -> Result<(), DiskError>,
    ) -> Result<(), DiskError> {
        // The run holding `sector`: the last one starting at or before it.
        let mut i = self
            .starts
            .partition_point(|&s| s <= sector)
            .saturating_sub(1);
        let mut at = sector;
        let end = sector + count;
        while at < end {
            let (Some(run), Some(&start)) = (self.runs.get(i), self.starts.get(i)) else {
                // Unreachable after the range check; an error rather than a panic if not.
                return Err(self.out_of_range(sector, count));
            };
            let within = at - start;
            let n = (run.sectors - within).min(end - at);
            piece(run.first_lba + within, ((at - sector) as usize) * SECTOR, n)?;
            at += n;
            i += 1;
        }
        Ok(())
    }

    fn out_of_range(&self, lba: u64, count: u64) -> DiskError {
        DiskError::OutOfRange {
            lba,
            count,
            capacity: self.sectors,
        }
    }

    /// Reads file sectors `sector..` into `buf` from `partition` (the store partition).
    pub fn read<D: Disk + ?Sized>(
        &self,
        partition: &mut D,
        sector: u64,
        buf: &mut [u8],
    ) -> Result<(), DiskError> {
        let count = check_range(sector, buf.len(), self.sectors)?;
        self.for_each_piece(sector, count, |lba, offset, n| {
            let len = n as usize * SECTOR;
            partition.read(lba, &mut buf[offset..offset + len])
        })
    }

    /// Writes `buf` to file sectors `sector..` on `partition`, in place.
    pub fn write<D: Disk + ?Sized>(
        &self,
        partition: &mut D,
        sector: u64,
        buf: &[u8],
    ) -> Result<(), DiskError> {
        let count = check_range(sector, buf.len(), self.sectors)?;
        self.for_each_piece(sector, count, |lba, offset, n| {
            let len = n as usize * SECTOR;
            partition.write(lba, &buf[offset..offset + len])
        })
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::blk::disk::mem::MemDisk;

    fn ext(first_lba: u64, sectors: u64) -> Extent {
        Extent { first_lba, sectors }
    }

    /// A 40-sector "partition" whose sector `n` is filled with byte `n`.
    fn partition() -> MemDisk {
        let mut bytes = vec![0u8; 40 * SECTOR];
        for (n, s) in bytes.chunks_mut(SECTOR).enumerate() {
            s.fill(n as u8);
        }
        MemDisk::new(bytes)
    }

    /// File sectors 0..3 at 10..13, 3..4 at 2..3, 4..8 at 30..34.
    fn file() -> FileSectors {
        FileSectors::new(vec![ext(10, 3), ext(2, 1), ext(30, 4)])
    }

    fn first_bytes(buf: &[u8]) -> Vec<u8> {
        buf.chunks(SECTOR).map(|s| s[0]).collect()
    }

    #[test]
    fn reads_map_across_runs() {
        let file = file();
        assert_eq!(file.sectors(), 8);
        let mut disk = partition();
        let mut buf = vec![0u8; 8 * SECTOR];
        file.read(&mut disk, 0, &mut buf).unwrap();
        assert_eq!(first_bytes(&buf), [10, 11, 12, 2, 30, 31, 32, 33]);
        // One request per run touched.
        disk.reads = 0;
        let mut buf = vec![0u8; 3 * SECTOR];
        file.read(&mut disk, 2, &mut buf).unwrap();
        assert_eq!(first_bytes(&buf), [12, 2, 30]);
        assert_eq!(disk.reads, 3);
        let mut one = vec![0u8; SECTOR];
        file.read(&mut disk, 7, &mut one).unwrap();
        assert_eq!(first_bytes(&one), [33]);
    }

    #[test]
    fn writes_land_in_the_runs_only() {
        let file = file();
        let clean = partition();
        let mut disk = clean.clone();
        let data: Vec<u8> = (0..4 * SECTOR).map(|i| (i / SECTOR) as u8 + 100).collect();
        file.write(&mut disk, 2, &data).unwrap();
        for lba in 0..40usize {
            let got = disk.bytes[lba * SECTOR];
            let expected = match lba {
                12 => 100,
                2 => 101,
                30 => 102,
                31 => 103,
                _ => clean.bytes[lba * SECTOR],
            };
            assert_eq!(got, expected, "sector {lba}");
        }
        let mut back = vec![0u8; 4 * SECTOR];
        file.read(&mut disk, 2, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn requests_past_the_end_are_refused() {
        let file = file();
        let mut disk = partition();
        let clean = disk.clone();
        let mut buf = vec![0u8; 2 * SECTOR];
        assert_eq!(
            file.read(&mut disk, 7, &mut buf),
            Err(DiskError::OutOfRange {
                lba: 7,
                count: 2,
                capacity: 8
            })
        );
        assert!(matches!(
            file.write(&mut disk, u64::MAX, &buf),
            Err(DiskError::OutOfRange { .. })
        ));
        assert_eq!(
            file.write(&mut disk, 0, &buf[..100]),
            Err(DiskError::BadLength { len: 100 })
        );
        assert_eq!(disk.bytes, clean.bytes);
        let empty = FileSectors::new(Vec::new());
        assert_eq!(empty.sectors(), 0);
        assert!(matches!(
            empty.read(&mut disk, 0, &mut buf),
            Err(DiskError::OutOfRange { .. })
        ));
    }
}
