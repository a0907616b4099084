//! virtio-blk over PCI (modern transport), through the `virtio-drivers` crate, as a [`Disk`].
//!
//! Requests are synchronous and polled: `VirtIOBlk` posts a request, notifies the device and
//! spins until it is used (QEMU completes it within the notify). Transfers larger than
//! [`MAX_REQUEST`] are split, so no single descriptor is larger than the device might take.
//! Legacy-only devices (`disable-modern=on`) are refused: every firmware that boots Keel
//! offers the modern interface.

use alloc::boxed::Box;
use alloc::string::{String, ToString};

use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::pci::{PciTransport, VirtioPciError};

use super::disk::{Disk, DiskError, DiskOp, SECTOR, check_range};
use super::host::{HostDisk, ProbeFailure, ProbeResult};
use crate::mm::dma::KernelHal;
use crate::pci::{self, PciAddress, PciDevice, VIRTIO_VENDOR_ID};

/// PCI device IDs of virtio-blk: transitional and modern (virtio 1.x §4.1.2).
pub const DEVICE_IDS: [u16; 2] = [0x1001, 0x1042];

/// Largest transfer per request: 256 KiB (guest disks' 256 KiB pieces pass in one request).
pub const MAX_REQUEST: usize = 256 * 1024;

/// Why a virtio-blk function could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum VirtioBlkError {
    /// The device offers only the legacy interface.
    #[error("legacy-only virtio-blk device (no virtio 1.x capabilities): not supported")]
    LegacyOnly,
    /// The modern PCI transport could not be set up.
    #[error("virtio PCI transport: {0}")]
    Transport(VirtioPciError),
    /// Feature negotiation or queue set-up failed.
    #[error("virtio-blk set-up: {0}")]
    Init(virtio_drivers::Error),
}

/// A virtio-blk disk.
pub struct VirtioBlk {
    blk: Box<VirtIOBlk<KernelHal, PciTransport>>,
    sectors: u64,
    read_only: bool,
    serial: String,
    address: PciAddress,
}

impl VirtioBlk {
    /// Brings up the virtio-blk function `device`: transport, features, the request queue;
    /// device interrupts off (polled).
    pub fn new(device: &PciDevice) -> Result<VirtioBlk, VirtioBlkError> {
        if device.virtio.is_empty() {
            return Err(VirtioBlkError::LegacyOnly);
        }
        let transport = pci::virtio::modern_transport(device).map_err(VirtioBlkError::Transport)?;
        let mut blk = Box::new(VirtIOBlk::new(transport).map_err(VirtioBlkError::Init)?);
        blk.disable_interrupts();
        let mut id = [0u8; 20];
        // GET_ID is optional (QEMU answers with the drive's serial, empty by default).
        let serial = match blk.device_id(&mut id) {
            Ok(len) => String::from_utf8_lossy(&id[..len.min(20)])
                .trim()
                .to_string(),
            Err(_) => String::new(),
        };
        Ok(VirtioBlk {
            sectors: blk.capacity(),
            read_only: blk.readonly(),
            blk,
            serial,
            address: device.address,
        })
    }

    /// The serial number the device reports (may be empty).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Whether the device refuses writes.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Where it sits on PCI.
    pub fn address(&self) -> PciAddress {
        self.address
    }
}

/// Brings up every virtio-blk function in `pci`.
pub fn probe(pci: &[PciDevice]) -> alloc::vec::Vec<ProbeResult> {
    pci.iter()
        .filter(|d| d.vendor_id == VIRTIO_VENDOR_ID && DEVICE_IDS.contains(&d.device_id))
        .map(|device| match VirtioBlk::new(device) {
            Ok(disk) => Ok(Box::new(disk) as Box<dyn HostDisk>),
            Err(e) => Err(ProbeFailure {
                driver: "virtio-blk",
                location: device.address.to_string(),
                reason: e.to_string(),
            }),
        })
        .collect()
}

impl HostDisk for VirtioBlk {
    fn driver(&self) -> &'static str {
        "virtio-blk"
    }

    fn location(&self) -> String {
        self.address.to_string()
    }

    fn model(&self) -> String {
        if self.serial.is_empty() {
            String::new()
        } else {
            alloc::format!("serial {}", self.serial)
        }
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

fn device_error(op: DiskOp, lba: u64, e: virtio_drivers::Error) -> DiskError {
    DiskError::Device {
        op,
        lba,
        detail: e.to_string(),
    }
}

impl Disk for VirtioBlk {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(lba, buf.len(), self.sectors)?;
        let mut at = lba;
        for chunk in buf.chunks_mut(MAX_REQUEST) {
            self.blk
                .read_blocks(at as usize, chunk)
                .map_err(|e| device_error(DiskOp::Read, at, e))?;
            at += (chunk.len() / SECTOR) as u64;
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        check_range(lba, buf.len(), self.sectors)?;
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        let mut at = lba;
        for chunk in buf.chunks(MAX_REQUEST) {
            self.blk
                .write_blocks(at as usize, chunk)
                .map_err(|e| device_error(DiskOp::Write, at, e))?;
            at += (chunk.len() / SECTOR) as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.blk
            .flush()
            .map_err(|e| device_error(DiskOp::Flush, 0, e))
    }
}
