//! Host disks: what every host storage driver (virtio-blk, NVMe, AHCI, ATA) hands the boot
//! disk and the listing.
//!
//! A driver's `probe(pci)` brings up every disk it recognises and returns one
//! [`ProbeResult`] per disk: a [`HostDisk`] (the synchronous [`Disk`] plus what the operator
//! is shown) or a [`ProbeFailure`] saying why a device it recognised did not come up.
//! [`probe_all`] runs the drivers in a fixed order; `boot_disk` keeps the first disk whose GPT
//! is Keel's and lists the rest as [`HostDiskEntry`] rows with their [`DiskRole`].

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use super::disk::Disk;

/// A disk a host driver brought up: the synchronous [`Disk`] plus what the listing shows.
pub trait HostDisk: Disk + Send {
    /// Driver name, lower case: `"virtio-blk"`, `"nvme"`, `"ahci"`, `"ata"`.
    fn driver(&self) -> &'static str;
    /// Where it is, for the operator: the PCI address plus what selects the disk behind it
    /// (`"00:04.0"`, `"00:03.0 nsid 1"`, `"00:1f.2 port 0"`, `"ide0 master (0x1f0)"`).
    fn location(&self) -> String;
    /// Model and serial as the device reports them (`"QEMU NVMe Ctrl, serial deadbeef"`);
    /// empty when it reports neither.
    fn model(&self) -> String;
    /// Whether the device refuses writes.
    fn read_only(&self) -> bool;
}

/// A device a driver recognised but could not bring up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    /// The driver that tried.
    pub driver: &'static str,
    /// Where the device is (as [`HostDisk::location`]).
    pub location: String,
    /// Why, for the operator (`"controller not ready after 5000 ms (CSTS.RDY=0)"`).
    pub reason: String,
}

/// One disk a driver found: up, or why not.
pub type ProbeResult = Result<Box<dyn HostDisk>, ProbeFailure>;

/// What Keel does with a host disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskRole {
    /// Keel's own disk: configuration, store, guest-disk partitions.
    Keel,
    /// Another disk, left alone; why it is not (or not used as) Keel's.
    Other(String),
    /// Its driver could not bring it up; why.
    Failed(String),
}

impl DiskRole {
    /// `keel`, `other` or `failed`, as the API names roles.
    pub fn name(&self) -> &'static str {
        match self {
            DiskRole::Keel => "keel",
            DiskRole::Other(_) => "other",
            DiskRole::Failed(_) => "failed",
        }
    }

    /// The reason, for `other` and `failed`; empty for Keel's disk.
    pub fn detail(&self) -> &str {
        match self {
            DiskRole::Keel => "",
            DiskRole::Other(why) | DiskRole::Failed(why) => why,
        }
    }
}

/// A row of the host-disk listing (`disk`, `GET /api/v1/system`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDiskEntry {
    /// The driver.
    pub driver: &'static str,
    /// Where it is.
    pub location: String,
    /// Model and serial (empty when unknown, or for a failed device).
    pub model: String,
    /// Capacity in 512-byte sectors (0 for a failed device).
    pub sectors: u64,
    /// Whether the device refuses writes.
    pub read_only: bool,
    /// What Keel does with it.
    pub role: DiskRole,
}

impl HostDiskEntry {
    /// The row of a disk that came up, with its role.
    pub fn of(disk: &dyn HostDisk, role: DiskRole) -> HostDiskEntry {
        HostDiskEntry {
            driver: disk.driver(),
            location: disk.location(),
            model: disk.model(),
            sectors: disk.sector_count(),
            read_only: disk.read_only(),
            role,
        }
    }

    /// The row of a device that did not come up.
    pub fn failed(failure: &ProbeFailure) -> HostDiskEntry {
        HostDiskEntry {
            driver: failure.driver,
            location: failure.location.clone(),
            model: String::new(),
            sectors: 0,
            read_only: false,
            role: DiskRole::Failed(failure.reason.clone()),
        }
    }
}

/// `nvme at 00:03.0 nsid 1, QEMU NVMe Ctrl, serial 1, 64 MiB, read-only: keel disk`
impl fmt::Display for HostDiskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.driver, self.location)?;
        if !self.model.is_empty() {
            write!(f, ", {}", self.model)?;
        }
        if !matches!(self.role, DiskRole::Failed(_)) {
            write!(f, ", {} MiB", self.sectors / 2048)?;
        }
        if self.read_only {
            f.write_str(", read-only")?;
        }
        match &self.role {
            DiskRole::Keel => f.write_str(": Keel's disk"),
            DiskRole::Other(why) => write!(f, ": not used ({why})"),
            DiskRole::Failed(why) => write!(f, ": failed ({why})"),
        }
    }
}

/// Every host disk every driver finds, in probe order: virtio-blk, then the others.
#[cfg(target_os = "none")]
pub fn probe_all(pci: &[crate::pci::PciDevice]) -> alloc::vec::Vec<ProbeResult> {
    let mut found = alloc::vec::Vec::new();
    found.extend(super::virtio_blk::probe(pci));
    found.extend(super::nvme::probe(pci));
    found.extend(super::ahci::probe(pci));
    found.extend(super::ata::probe(pci));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_say_what_keel_does_with_each_disk() {
        let row = |role| HostDiskEntry {
            driver: "nvme",
            location: "00:03.0 nsid 1".into(),
            model: "QEMU NVMe Ctrl, serial k1".into(),
            sectors: 2048 * 64,
            read_only: false,
            role,
        };
        assert_eq!(
            std::format!("{}", row(DiskRole::Keel)),
            "nvme at 00:03.0 nsid 1, QEMU NVMe Ctrl, serial k1, 64 MiB: Keel's disk"
        );
        assert_eq!(
            std::format!("{}", row(DiskRole::Other("no GPT".into()))),
            "nvme at 00:03.0 nsid 1, QEMU NVMe Ctrl, serial k1, 64 MiB: not used (no GPT)"
        );
        let failed = HostDiskEntry::failed(&ProbeFailure {
            driver: "ahci",
            location: "00:1f.2 port 1".into(),
            reason: "device never left BSY".into(),
        });
        assert_eq!(failed.role.name(), "failed");
        assert_eq!(
            std::format!("{failed}"),
            "ahci at 00:1f.2 port 1: failed (device never left BSY)"
        );
    }
}
