//! Keel's own disk among the block devices: the one whose GPT holds the `keel-config` and
//! `keel-store` partitions `keel build` writes (image-builder `gpt_image`).
//!
//! [`identify`] is the pure rule. On bare metal, [`init`] brings up every host disk once at
//! boot (`host::probe_all`: virtio-blk, NVMe, AHCI, ATA), reads each one's GPT and keeps the
//! first Keel disk; [`host_disks`] lists all of them with what Keel does with each;
//! [`info`] describes Keel's and [`config_partition`] / [`store_partition`] lend a
//! [`PartitionView`] of one partition that holds the disk's lock until dropped (the console
//! and the API run on the same CPU, one request at a time, so it is never contended).

use alloc::string::String;
use alloc::vec::Vec;

use super::gpt::{Gpt, GptError, Guid, Partition};

/// Type GUID of the raw configuration partition (image-builder `KEEL_CONFIG_TYPE_GUID`).
pub const CONFIG_TYPE: Guid = Guid::from_u128(0x20442bb3_5151_4ecd_846b_efa36bb2491f);
/// GPT name of the configuration partition.
pub const CONFIG_NAME: &str = "keel-config";
/// Type GUID of the guest store: Microsoft basic data (image-builder `STORE_TYPE_GUID`).
pub const STORE_TYPE: Guid = Guid::from_u128(0xebd0a0a2_b9e5_4433_87c0_68b6b72699c7);
/// GPT name of the guest store.
pub const STORE_NAME: &str = "keel-store";

/// Keel's two partitions on its disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeelPartitions {
    /// The raw configuration partition.
    pub config: Partition,
    /// The FAT guest store.
    pub store: Partition,
}

/// Why a disk is not Keel's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// It has no usable GPT.
    #[error("{0}")]
    Gpt(GptError),
    /// Its GPT has no `keel-config` partition of Keel's configuration type.
    #[error("GPT has no {CONFIG_NAME} partition (type {CONFIG_TYPE}): not a Keel disk")]
    NoConfig,
    /// Its GPT has no `keel-store` basic-data partition.
    #[error("GPT has no {STORE_NAME} partition (type {STORE_TYPE}): not a Keel disk")]
    NoStore,
}

/// Keel's partitions in `gpt`: each found by type GUID and name together.
pub fn identify(gpt: &Gpt) -> Result<KeelPartitions, IdentifyError> {
    let find = |ty: Guid, name: &str| {
        gpt.partitions
            .iter()
            .find(|p| p.type_guid == ty && p.name == name)
            .cloned()
    };
    let config = find(CONFIG_TYPE, CONFIG_NAME).ok_or(IdentifyError::NoConfig)?;
    let store = find(STORE_TYPE, STORE_NAME).ok_or(IdentifyError::NoStore)?;
    Ok(KeelPartitions { config, store })
}

/// Why there is no boot disk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootDiskError {
    /// The disks have not been probed yet (a kernel bug if seen after boot).
    #[error("no boot disk found: disks not probed yet")]
    NotProbed,
    /// No disk any host driver knows (virtio-blk, NVMe, AHCI, ATA) was found, or none came
    /// up.
    #[error("no boot disk found: no disk a driver knows{}", reasons(failed))]
    NoDisk {
        /// Devices that failed to come up: `"00:04.0: reason"`.
        failed: Vec<String>,
    },
    /// Disks were found, none of them Keel's.
    #[error("no boot disk found{}", reasons(disks))]
    NotKeel {
        /// Each disk and why it is not Keel's: `"nvme at 00:04.0 nsid 1: reason"`.
        disks: Vec<String>,
    },
}

/// `; reason` for each reason, for [`BootDiskError`]'s messages.
fn reasons(reasons: &[String]) -> String {
    reasons.iter().map(|r| alloc::format!("; {r}")).collect()
}

#[cfg(target_os = "none")]
pub use kernel_boot_disk::*;

#[cfg(target_os = "none")]
mod kernel_boot_disk {
    use alloc::boxed::Box;
    use alloc::format;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    use spin::{Mutex, MutexGuard, Once};

    use super::{BootDiskError, KeelPartitions, identify};
    use crate::blk::disk::{Disk, DiskError};
    use crate::blk::gpt::{self, Gpt};
    use crate::blk::gpt_write::{self, GptWriteError, Repair};
    use crate::blk::host::{self, DiskRole, HostDisk, HostDiskEntry};
    use crate::blk::partition::PartitionView;
    use crate::pci::PciDevice;

    /// What the console and API show about the boot disk.
    #[derive(Clone, Debug)]
    pub struct DiskInfo {
        /// Driver, then model and serial when the device reports them: `virtio-blk`,
        /// `nvme QEMU NVMe Ctrl, serial k1`.
        pub model: String,
        /// Where it is (`HostDisk::location`: a PCI address, plus port or namespace).
        pub location: String,
        /// Capacity in 512-byte sectors.
        pub sectors: u64,
        /// Whether the device refuses writes.
        pub read_only: bool,
        /// The partition table.
        pub gpt: Gpt,
        /// Keel's partitions in it.
        pub keel: KeelPartitions,
        /// What the boot-time check of the two GPT copies did, when it rewrote one (a power
        /// cut during a table change, or damage); `main` reports it.
        pub gpt_repair: Option<Repair>,
    }

    struct BootDisk {
        disk: Box<dyn HostDisk>,
        info: DiskInfo,
    }

    static BOOT_DISK: Once<Result<Mutex<BootDisk>, BootDiskError>> = Once::new();
    static HOST_DISKS: Once<Vec<HostDiskEntry>> = Once::new();

    /// Brings up every host disk in `pci` and keeps the first Keel disk. Runs once; later
    /// calls return the first answer.
    pub fn init(pci: &[PciDevice]) -> Result<DiskInfo, BootDiskError> {
        BOOT_DISK
            .call_once(|| {
                let (found, listing) = probe(pci);
                HOST_DISKS.call_once(|| listing);
                found.map(Mutex::new)
            })
            .as_ref()
            .map(|disk| disk.lock().info.clone())
            .map_err(Clone::clone)
    }

    /// Every host disk found at boot, Keel's and the others, in probe order (empty before
    /// [`init`]).
    pub fn host_disks() -> Vec<HostDiskEntry> {
        HOST_DISKS.get().cloned().unwrap_or_default()
    }

    fn probe(pci: &[PciDevice]) -> (Result<BootDisk, BootDiskError>, Vec<HostDiskEntry>) {
        let mut failed = Vec::new();
        let mut not_keel = Vec::new();
        let mut listing = Vec::new();
        let mut keel: Option<BootDisk> = None;
        for probed in host::probe_all(pci) {
            let mut disk = match probed {
                Ok(disk) => disk,
                Err(failure) => {
                    defmt::error!(
                        "blk: {=str} at {} skipped: {}",
                        failure.driver,
                        defmt::Display2Format(&failure.location),
                        defmt::Display2Format(&failure.reason)
                    );
                    failed.push(format!(
                        "{} at {}: {}",
                        failure.driver, failure.location, failure.reason
                    ));
                    listing.push(HostDiskEntry::failed(&failure));
                    continue;
                }
            };
            defmt::info!(
                "blk: {=str} at {}: {=u64} sectors",
                disk.driver(),
                defmt::Display2Format(&disk.location()),
                disk.sector_count()
            );
            let found = gpt::read(&mut *disk)
                .map_err(super::IdentifyError::Gpt)
                .and_then(|table| identify(&table).map(|keel| (table, keel)));
            match found {
                Ok(_) if keel.is_some() => listing.push(HostDiskEntry::of(
                    &*disk,
                    DiskRole::Other(String::from(
                        "also a Keel disk; the first one found is used",
                    )),
                )),
                Ok((gpt, partitions)) => {
                    let (gpt, gpt_repair) = repair_table(&mut *disk, gpt);
                    let device_model = disk.model();
                    let model = if device_model.is_empty() {
                        String::from(disk.driver())
                    } else {
                        format!("{} {}", disk.driver(), device_model)
                    };
                    let info = DiskInfo {
                        model,
                        location: disk.location(),
                        sectors: disk.sector_count(),
                        read_only: disk.read_only(),
                        gpt,
                        keel: partitions,
                        gpt_repair,
                    };
                    listing.push(HostDiskEntry::of(&*disk, DiskRole::Keel));
                    keel = Some(BootDisk { disk, info });
                }
                Err(e) => {
                    not_keel.push(format!("{} at {}: {e}", disk.driver(), disk.location()));
                    listing.push(HostDiskEntry::of(&*disk, DiskRole::Other(e.to_string())));
                }
            }
        }
        let result = match keel {
            Some(disk) => Ok(disk),
            None if not_keel.is_empty() => Err(BootDiskError::NoDisk { failed }),
            None => {
                not_keel.extend(failed);
                Err(BootDiskError::NotKeel { disks: not_keel })
            }
        };
        (result, listing)
    }

    /// Makes both GPT copies of Keel's disk valid and alike before anything uses it (a cut
    /// during `disk create`/`delete` can leave them torn or different); returns the table to
    /// use. A read-only disk, or a failed repair, keeps the table as read, with a warning.
    fn repair_table(disk: &mut dyn HostDisk, read: Gpt) -> (Gpt, Option<Repair>) {
        if disk.read_only() {
            return (read, None);
        }
        match gpt_write::repair(disk) {
            Ok(Repair::NotNeeded) => (read, None),
            Ok(done) => {
                defmt::warn!("blk: {}", defmt::Display2Format(&done));
                // The copy read is the copy kept, so `read` is still the table; reading
                // again checks that the repair landed.
                match gpt::read(disk) {
                    Ok(table) => (table, Some(done)),
                    Err(e) => {
                        defmt::error!("blk: GPT after repair: {}", defmt::Display2Format(&e));
                        (read, Some(done))
                    }
                }
            }
            Err(e) => {
                defmt::error!("blk: GPT repair failed: {}", defmt::Display2Format(&e));
                (read, None)
            }
        }
    }

    fn locked() -> Result<MutexGuard<'static, BootDisk>, BootDiskError> {
        match BOOT_DISK.get() {
            None => Err(BootDiskError::NotProbed),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(disk)) => Ok(disk.lock()),
        }
    }

    /// The boot disk, as found at boot.
    pub fn info() -> Result<DiskInfo, BootDiskError> {
        locked().map(|disk| disk.info.clone())
    }

    /// The boot disk, held locked: a [`Disk`] for [`PartitionView`].
    pub struct LockedDisk(MutexGuard<'static, BootDisk>);

    impl LockedDisk {
        /// The disk's description, with its current partition table.
        pub fn info(&self) -> &DiskInfo {
            &self.0.info
        }
    }

    /// The boot disk, locked until the guard is dropped (for one guest-disk request at a
    /// time: `guest_partitions::PartitionDisk`).
    pub fn lock() -> Result<LockedDisk, BootDiskError> {
        locked().map(LockedDisk)
    }

    /// Why the boot disk's partition table could not be changed.
    #[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum TableChangeError {
        /// There is no boot disk.
        #[error("{0}")]
        NoBootDisk(BootDiskError),
        /// The disk refuses writes.
        #[error("the boot disk is read-only")]
        ReadOnly,
        /// Planning or writing the new table failed.
        #[error("{0}")]
        Write(GptWriteError),
    }

    /// Changes the boot disk's partition table: `plan` makes the new table from the current
    /// one (or refuses), which is written with `gpt_write::write_table` and becomes
    /// [`DiskInfo::gpt`], so later lookups see it. The disk stays locked throughout.
    pub fn change_table<R, E>(plan: impl FnOnce(&Gpt) -> Result<(Gpt, R), E>) -> Result<R, E>
    where
        E: From<TableChangeError>,
    {
        let mut disk = locked().map_err(|e| E::from(TableChangeError::NoBootDisk(e)))?;
        if disk.info.read_only {
            return Err(E::from(TableChangeError::ReadOnly));
        }
        let (table, result) = plan(&disk.info.gpt)?;
        let written = gpt_write::write_table(&mut *disk.disk, &table);
        match written {
            Ok(()) => {
                disk.info.gpt = table;
                Ok(result)
            }
            Err(e) => {
                // A write failed part-way: the disk holds the old or the new table; take
                // whichever it is so memory matches the disk.
                if let Ok(now) = gpt::read(&mut *disk.disk) {
                    disk.info.gpt = now;
                }
                Err(E::from(TableChangeError::Write(e)))
            }
        }
    }

    impl Disk for LockedDisk {
        fn sector_count(&self) -> u64 {
            self.0.disk.sector_count()
        }

        fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
            self.0.disk.read(lba, buf)
        }

        fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
            self.0.disk.write(lba, buf)
        }

        fn flush(&mut self) -> Result<(), DiskError> {
            self.0.disk.flush()
        }
    }

    /// A view of one partition of the boot disk, holding the disk until dropped.
    pub type BootPartition = PartitionView<LockedDisk>;

    fn view(
        pick: impl FnOnce(&KeelPartitions) -> (u64, u64),
    ) -> Result<BootPartition, BootDiskError> {
        let disk = locked()?;
        let (first, sectors) = pick(&disk.info.keel);
        // The GPT parser checked the range against the disk, so this cannot fail; should it,
        // the error names the range.
        PartitionView::new(LockedDisk(disk), first, sectors).map_err(|e| BootDiskError::NotKeel {
            disks: alloc::vec![format!("partition out of range: {e}")],
        })
    }

    /// The `keel-config` partition, for `keel_config::record::{load, save}` (it implements
    /// `keel_config::record::BlockDevice`).
    pub fn config_partition() -> Result<BootPartition, BootDiskError> {
        view(|k| (k.config.first_lba, k.config.sectors()))
    }

    /// The `keel-store` partition (the FAT guest store).
    pub fn store_partition() -> Result<BootPartition, BootDiskError> {
        view(|k| (k.store.first_lba, k.store.sectors()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::gpt::HeaderCopy;

    fn part(number: u32, type_guid: Guid, name: &str) -> Partition {
        Partition {
            number,
            type_guid,
            unique_guid: Guid([number as u8; 16]),
            first_lba: u64::from(number) * 2048,
            last_lba: u64::from(number) * 2048 + 2047,
            attributes: 0,
            name: name.into(),
        }
    }

    fn table(partitions: Vec<Partition>) -> Gpt {
        Gpt {
            disk_guid: Guid([9; 16]),
            header: HeaderCopy::Primary,
            primary_error: None,
            first_usable: 34,
            last_usable: 100_000,
            partitions,
            entries: crate::blk::gpt::EntryArray {
                entry_size: 128,
                bytes: alloc::vec![0; 128 * 128],
            },
        }
    }

    #[test]
    fn both_partitions_by_type_and_name() {
        let gpt = table(alloc::vec![
            part(1, STORE_TYPE, "data"),
            part(3, CONFIG_TYPE, CONFIG_NAME),
            part(4, STORE_TYPE, STORE_NAME),
        ]);
        let keel = identify(&gpt).unwrap();
        assert_eq!(keel.config.number, 3);
        assert_eq!(keel.store.number, 4);
    }

    #[test]
    fn missing_or_mistyped_partitions() {
        let gpt = table(alloc::vec![
            part(3, STORE_TYPE, CONFIG_NAME),
            part(4, STORE_TYPE, STORE_NAME)
        ]);
        assert_eq!(identify(&gpt), Err(IdentifyError::NoConfig));
        let gpt = table(alloc::vec![
            part(3, CONFIG_TYPE, CONFIG_NAME),
            part(4, CONFIG_TYPE, STORE_NAME)
        ]);
        assert_eq!(identify(&gpt), Err(IdentifyError::NoStore));
        assert!(
            std::format!("{}", IdentifyError::NoConfig)
                .contains("20442bb3-5151-4ecd-846b-efa36bb2491f")
        );
    }
}
