//! What every `virtio-drivers` device on PCI shares: the crate's configuration access over
//! mechanism #1 ([`PortCam`]), and [`modern_transport`], which switches a function's memory
//! decoding and bus mastering on and sets up the modern (virtio 1.x §4.1.4) transport.

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, VirtioPciError};

use super::{ConfigSpace, PciAddress, PciDevice, PortCam, command, enable};
use crate::mm::dma::KernelHal;

/// `virtio-drivers`' configuration access over mechanism #1.
impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, register_offset: u8) -> u32 {
        PortCam.read32(address(df), register_offset)
    }

    fn write_word(&mut self, df: DeviceFunction, register_offset: u8, data: u32) {
        PortCam.write32(address(df), register_offset, data)
    }

    /// `PortCam` holds no state and serializes every access under its own lock, so a clone
    /// is as safe to use as the original.
    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

fn address(df: DeviceFunction) -> PciAddress {
    PciAddress::new(df.bus, df.device, df.function)
}

/// The modern virtio PCI transport of `device`, with memory decoding and bus mastering on.
pub fn modern_transport(device: &PciDevice) -> Result<PciTransport, VirtioPciError> {
    enable(device.address, command::MEMORY_SPACE | command::BUS_MASTER);
    let mut root = PciRoot::new(PortCam);
    let df = DeviceFunction {
        bus: device.address.bus,
        device: device.address.device,
        function: device.address.function,
    };
    PciTransport::new::<KernelHal, _>(&mut root, df)
}
