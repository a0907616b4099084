//! Block devices: the synchronous [`Disk`](disk::Disk) interface, partition tables and the
//! boot disk.
//!
//! Layering: [`disk`] (the trait and its bounds check), [`gpt`] (partition table parsing) and
//! [`partition`] (a partition as a disk of its own, also a `keel_config` block device) are
//! pure and host-tested; [`boot_disk`]'s `identify` picks Keel's partitions out of a table.
//! On bare metal the host drivers (`virtio_blk` through `virtio-drivers`, and Keel's own
//! for the rest) each offer their disks as [`host::HostDisk`]s; [`boot_disk`] runs
//! [`host::probe_all`] at boot, keeps the disk whose GPT holds `keel-config` and
//! `keel-store`, lists the others, and lends out views of Keel's partitions.

pub mod ahci;
pub mod ata;
pub mod boot_disk;
pub mod disk;
pub mod gpt;
pub mod gpt_write;
pub mod guest_partitions;
pub mod host;
pub mod nvme;
pub mod partition;

#[cfg(target_os = "none")]
pub mod virtio_blk;

#[cfg(test)]
pub mod test_image;
