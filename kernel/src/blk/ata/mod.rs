//! Legacy ATA (IDE) disks: the PCI IDE function (class 01:01; PIIX3/PIIX4 in QEMU `-M pc` and
//! Bochs) and the drives on its two channels, read and written with polled PIO.
//!
//! [`protocol`] (registers, commands, IDENTIFY data, splitting a transfer into commands) and
//! [`drive`] (probing a drive position and the [`Disk`](crate::blk::disk::Disk) on it, generic
//! over the channel's ports) are pure and host-tested against a model of a channel. On bare
//! metal, `hw` finds the controllers, gives each channel its ports (the legacy ones in
//! compatibility mode, the BARs in native mode) and moves data with `rep insw`/`rep outsw`.

pub mod drive;
pub mod protocol;

#[cfg(target_os = "none")]
mod hw;
#[cfg(target_os = "none")]
pub use hw::*;
