//! virtio-net over PCI, through the `virtio-drivers` crate, as a `smoltcp` device.
//!
//! The crate's PCI transport speaks the modern interface only (virtio 1.x §4.1.4: vendor
//! capabilities locating the common, notify, ISR and device structures in memory BARs).
//! QEMU's `virtio-net-pci` offers it whether it is transitional (device ID 0x1000, also a
//! legacy I/O BAR) or modern-only (0x1041); a legacy-only device (`disable-modern=on`) has
//! no such capabilities and is reported, not driven.
//!
//! Reception hands smoltcp the crate's receive buffer and recycles it into the queue after
//! smoltcp is done; transmission copies into a fresh buffer that `VirtIONet::send` posts and
//! waits for (the device completes it within the notify on QEMU). The driver sits in a
//! `RefCell` so the receive and transmit tokens smoltcp holds together can each reach it.

use core::cell::RefCell;
use core::fmt;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, VirtioPciError};

use super::dma::KernelHal;
use crate::pci::{self, ConfigSpace, PciDevice, PortCam, command};

/// Descriptors per virtqueue (QEMU allows up to 256).
const QUEUE_SIZE: usize = 64;
/// Receive buffer size: the 12-byte `virtio_net_hdr` plus a full Ethernet frame.
const RX_BUFFER_LEN: usize = 2048;
/// Largest Ethernet frame (without FCS) handed to smoltcp.
const MTU: usize = 1514;

/// PCI device IDs of virtio-net: transitional and modern (virtio 1.x §4.1.2).
pub const DEVICE_IDS: [u16; 2] = [0x1000, 0x1041];

type Driver = VirtIONet<KernelHal, PciTransport, QUEUE_SIZE>;

/// Why a virtio-net function could not be brought up.
#[derive(Debug)]
pub enum VirtioNetError {
    /// No virtio vendor capabilities: a legacy-only device, which `virtio-drivers` 0.13
    /// cannot drive.
    LegacyOnly,
    /// The PCI transport could not be set up.
    Transport(VirtioPciError),
    /// Feature negotiation or queue set-up failed.
    Init(virtio_drivers::Error),
}

impl fmt::Display for VirtioNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtioNetError::LegacyOnly => f.write_str(
                "legacy-only virtio device (no virtio 1.x capabilities); \
                 only the modern or transitional interface is supported",
            ),
            VirtioNetError::Transport(e) => write!(f, "virtio PCI transport: {e}"),
            VirtioNetError::Init(e) => write!(f, "virtio-net set-up: {e}"),
        }
    }
}

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

fn address(df: DeviceFunction) -> pci::PciAddress {
    pci::PciAddress::new(df.bus, df.device, df.function)
}

/// A virtio-net NIC.
pub struct VirtioNet {
    driver: RefCell<Driver>,
    mac: EthernetAddress,
}

impl VirtioNet {
    /// Brings up the virtio-net function `device`: memory decode and bus mastering on,
    /// features negotiated, receive queue filled.
    pub fn new(device: &PciDevice) -> Result<VirtioNet, VirtioNetError> {
        if device.virtio.is_empty() {
            return Err(VirtioNetError::LegacyOnly);
        }
        pci::enable(device.address, command::MEMORY_SPACE | command::BUS_MASTER);
        let mut root = PciRoot::new(PortCam);
        let df = DeviceFunction {
            bus: device.address.bus,
            device: device.address.device,
            function: device.address.function,
        };
        let transport =
            PciTransport::new::<KernelHal, _>(&mut root, df).map_err(VirtioNetError::Transport)?;
        let mut driver = Driver::new(transport, RX_BUFFER_LEN).map_err(VirtioNetError::Init)?;
        // Polled: no used-buffer notifications (the INTx line is not routed anyway).
        driver.disable_interrupts();
        let mac = EthernetAddress(driver.mac_address());
        Ok(VirtioNet {
            driver: RefCell::new(driver),
            mac,
        })
    }

    /// The MAC address from the device's configuration.
    pub fn mac(&self) -> EthernetAddress {
        self.mac
    }
}

impl phy::Device for VirtioNet {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let buffer = match self.driver.get_mut().receive() {
            Ok(buffer) => buffer,
            Err(virtio_drivers::Error::NotReady) => return None,
            Err(e) => {
                defmt::warn!("virtio-net: receive: {}", defmt::Display2Format(&e));
                return None;
            }
        };
        Some((
            RxToken {
                driver: &self.driver,
                buffer: Some(buffer),
            },
            TxToken {
                driver: &self.driver,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        self.driver.get_mut().can_send().then_some(TxToken {
            driver: &self.driver,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps
    }
}

/// A received frame; its buffer goes back to the receive queue when the token is used or
/// dropped.
pub struct RxToken<'a> {
    driver: &'a RefCell<Driver>,
    buffer: Option<RxBuffer>,
}

fn recycle(driver: &RefCell<Driver>, buffer: RxBuffer) {
    match driver.try_borrow_mut() {
        Ok(mut driver) => {
            if let Err(e) = driver.recycle_rx_buffer(buffer) {
                defmt::warn!("virtio-net: recycle: {}", defmt::Display2Format(&e));
            }
        }
        Err(_) => defmt::error!("virtio-net: driver busy; receive buffer lost"),
    }
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(mut self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        // `receive` always stores a buffer and only `consume`/`drop` take it.
        let Some(buffer) = self.buffer.take() else {
            return f(&[]);
        };
        let result = f(buffer.packet());
        recycle(self.driver, buffer);
        result
    }
}

impl Drop for RxToken<'_> {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            recycle(self.driver, buffer);
        }
    }
}

/// Room to send one frame.
pub struct TxToken<'a> {
    driver: &'a RefCell<Driver>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let Ok(mut driver) = self.driver.try_borrow_mut() else {
            defmt::error!("virtio-net: driver busy; frame dropped");
            return f(&mut alloc::vec![0; len]);
        };
        let mut buffer = driver.new_tx_buffer(len);
        let result = f(buffer.packet_mut());
        if let Err(e) = driver.send(buffer) {
            defmt::warn!("virtio-net: send: {}", defmt::Display2Format(&e));
        }
        result
    }
}
