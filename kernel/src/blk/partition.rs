//! [`PartitionView`]: a range of a disk's sectors seen as a disk of its own, so that code
//! given a partition (the configuration store, the FAT reader) cannot reach past it.

use keel_config::record::BlockDevice;

use super::disk::{Disk, DiskError, check_range};

/// Sectors `first_lba..first_lba + sectors` of `disk`, addressed from 0.
#[derive(Debug)]
pub struct PartitionView<D> {
    disk: D,
    first_lba: u64,
    sectors: u64,
}

impl<D: Disk> PartitionView<D> {
    /// The view of `sectors` sectors from `first_lba` on; `OutOfRange` when they are not all
    /// on `disk`.
    pub fn new(disk: D, first_lba: u64, sectors: u64) -> Result<Self, DiskError> {
        match first_lba.checked_add(sectors) {
            Some(end) if end <= disk.sector_count() => Ok(PartitionView {
                disk,
                first_lba,
                sectors,
            }),
            _ => Err(DiskError::OutOfRange {
                lba: first_lba,
                count: sectors,
                capacity: disk.sector_count(),
            }),
        }
    }

    /// First sector on the underlying disk.
    pub fn first_lba(&self) -> u64 {
        self.first_lba
    }
}

impl<D: Disk> Disk for PartitionView<D> {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(lba, buf.len(), self.sectors)?;
        self.disk.read(self.first_lba + lba, buf)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        check_range(lba, buf.len(), self.sectors)?;
        self.disk.write(self.first_lba + lba, buf)
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.disk.flush()
    }
}

/// The configuration store's view of a partition.
impl<D: Disk> BlockDevice for PartitionView<D> {
    type Error = DiskError;

    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        Disk::read(self, lba, buf)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        Disk::write(self, lba, buf)
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        Disk::flush(self)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::blk::disk::SECTOR;
    use crate::blk::disk::mem::MemDisk;

    fn disk() -> MemDisk {
        let mut bytes = vec![0u8; 10 * SECTOR];
        for (i, sector) in bytes.chunks_mut(SECTOR).enumerate() {
            sector.fill(i as u8);
        }
        MemDisk::new(bytes)
    }

    #[test]
    fn view_offsets_and_confines() {
        let mut disk = disk();
        let mut view = PartitionView::new(&mut disk, 3, 4).unwrap();
        assert_eq!(Disk::sector_count(&view), 4);
        let mut buf = vec![0u8; 2 * SECTOR];
        Disk::read(&mut view, 2, &mut buf).unwrap();
        assert!(buf[..SECTOR].iter().all(|&b| b == 5));
        assert!(buf[SECTOR..].iter().all(|&b| b == 6));
        assert!(matches!(
            Disk::read(&mut view, 3, &mut buf),
            Err(DiskError::OutOfRange {
                lba: 3,
                count: 2,
                capacity: 4
            })
        ));
        assert!(matches!(
            Disk::write(&mut view, 4, &buf[..SECTOR]),
            Err(DiskError::OutOfRange { .. })
        ));
        assert!(matches!(
            Disk::read(&mut view, u64::MAX, &mut buf),
            Err(DiskError::OutOfRange { .. })
        ));
        assert!(matches!(
            Disk::read(&mut view, 0, &mut buf[..10]),
            Err(DiskError::BadLength { len: 10 })
        ));
        Disk::write(&mut view, 0, &[0xAB; SECTOR]).unwrap();
        Disk::flush(&mut view).unwrap();
        assert!(
            disk.bytes[3 * SECTOR..4 * SECTOR]
                .iter()
                .all(|&b| b == 0xAB)
        );
        assert!(disk.bytes[2 * SECTOR..3 * SECTOR].iter().all(|&b| b == 2));
        assert!(disk.bytes[4 * SECTOR..5 * SECTOR].iter().all(|&b| b == 4));
        assert_eq!(disk.flushes, 1);
    }

    #[test]
    fn view_must_lie_on_the_disk() {
        let mut disk = disk();
        assert!(PartitionView::new(&mut disk, 8, 2).is_ok());
        assert!(PartitionView::new(&mut disk, 8, 3).is_err());
        assert!(PartitionView::new(&mut disk, u64::MAX, 2).is_err());
    }

    #[test]
    fn config_store_saves_and_loads_through_a_view() {
        let mut disk = MemDisk::new(vec![0u8; 64 * SECTOR]);
        {
            let mut view = PartitionView::new(&mut disk, 16, 32).unwrap();
            keel_config::record::save(&mut view, b"{\"hello\":1}").unwrap();
            let loaded = keel_config::record::load(&mut view).unwrap();
            assert_eq!(loaded.payload, b"{\"hello\":1}");
        }
        // Nothing outside the partition changed.
        assert!(disk.bytes[..16 * SECTOR].iter().all(|&b| b == 0));
        assert!(disk.bytes[48 * SECTOR..].iter().all(|&b| b == 0));
    }
}
