//! virtio-net over PCI, through the `virtio-drivers` crate, as a `smoltcp` device.
//!
//! Two transports: the crate's modern one (virtio 1.x §4.1.4: vendor capabilities locating
//! the common, notify, ISR and device structures in memory BARs), which QEMU's
//! `virtio-net-pci` offers whether it is transitional (device ID 0x1000, also a legacy I/O
//! BAR) or modern-only (0x1041); and Keel's [`LegacyPciTransport`] over the I/O-port
//! registers of a legacy-only device (`disable-modern=on`: no such capabilities).
//!
//! A legacy device fixes its queue sizes (QEMU: 256) where a modern one lets the driver
//! pick, and `VirtIONet` takes the size as a const parameter, so the driver is an enum of
//! the two instantiations.
//!
//! Reception hands smoltcp the crate's receive buffer and recycles it into the queue after
//! smoltcp is done; transmission copies into a fresh buffer that `VirtIONet::send` posts and
//! waits for (the device completes it within the notify on QEMU). The driver sits in a
//! `RefCell` so the receive and transmit tokens smoltcp holds together can each reach it.
//!
//! **Promiscuity**: the NIC is the guest switch's uplink, so it must receive frames for the
//! guests' MACs too. `virtio-drivers` negotiates no control queue (`CTRL_VQ`/`CTRL_RX`), so
//! the driver cannot ask for promiscuous mode; it need not: a virtio-net device without a
//! negotiated control queue has no receive filter to program, and QEMU's resets to
//! promiscuous (`virtio_net_reset` sets `promisc`), delivering every frame the backend sees.

use alloc::boxed::Box;
use core::cell::RefCell;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;
use virtio_drivers::device::net::{RxBuffer, TxBuffer, VirtIONet};
use virtio_drivers::transport::pci::{PciTransport, VirtioPciError};

use super::virtio_legacy::{LegacyError, LegacyPciTransport};
use crate::mm::dma::KernelHal;
use crate::pci::{self, PciDevice, command};

/// Descriptors per virtqueue on a modern device (QEMU allows up to 256).
const QUEUE_SIZE: usize = 64;
/// Descriptors per virtqueue on a legacy device: the size QEMU's virtio-net fixes.
const LEGACY_QUEUE_SIZE: usize = 256;
/// Receive buffer size: the 12-byte `virtio_net_hdr` plus a full Ethernet frame.
const RX_BUFFER_LEN: usize = 2048;
/// Largest Ethernet frame (without FCS) handed to smoltcp.
const MTU: usize = 1514;
/// virtio-net's receive and transmit queues.
const QUEUES: [u16; 2] = [0, 1];

/// PCI device IDs of virtio-net: transitional and modern (virtio 1.x §4.1.2).
pub const DEVICE_IDS: [u16; 2] = [0x1000, 0x1041];

/// The `virtio-drivers` driver over either transport; boxed, as its queue shadows and receive
/// buffer table take several KiB (about four times as much with the legacy 256-entry
/// queues), which would otherwise be copied through every frame up to `net::probe`.
enum Driver {
    Modern(Box<VirtIONet<KernelHal, PciTransport, QUEUE_SIZE>>),
    Legacy(Box<VirtIONet<KernelHal, LegacyPciTransport, LEGACY_QUEUE_SIZE>>),
}

/// Runs `$body` with `$net` bound to the `VirtIONet` of either variant.
macro_rules! with_net {
    ($driver:expr, $net:ident => $body:expr) => {
        match $driver {
            Driver::Modern($net) => $body,
            Driver::Legacy($net) => $body,
        }
    };
}

impl Driver {
    fn receive(&mut self) -> virtio_drivers::Result<RxBuffer> {
        with_net!(self, net => net.receive())
    }

    fn recycle_rx_buffer(&mut self, buffer: RxBuffer) -> virtio_drivers::Result {
        with_net!(self, net => net.recycle_rx_buffer(buffer))
    }

    fn can_send(&self) -> bool {
        with_net!(self, net => net.can_send())
    }

    fn new_tx_buffer(&self, len: usize) -> TxBuffer {
        with_net!(self, net => net.new_tx_buffer(len))
    }

    fn send(&mut self, buffer: TxBuffer) -> virtio_drivers::Result {
        with_net!(self, net => net.send(buffer))
    }

    fn disable_interrupts(&mut self) {
        with_net!(self, net => net.disable_interrupts())
    }

    fn mac_address(&self) -> [u8; 6] {
        with_net!(self, net => net.mac_address())
    }
}

/// Why a virtio-net function could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum VirtioNetError {
    /// The modern PCI transport could not be set up.
    #[error("virtio PCI transport: {0}")]
    Transport(VirtioPciError),
    /// The legacy PCI transport could not be set up.
    #[error("virtio legacy PCI transport: {0}")]
    Legacy(LegacyError),
    /// A legacy device fixed its queues at a size this driver is not built for.
    #[error("legacy virtqueue of {0} entries (only {LEGACY_QUEUE_SIZE} is supported)")]
    LegacyQueueSize(u16),
    /// Feature negotiation or queue set-up failed.
    #[error("virtio-net set-up: {0}")]
    Init(virtio_drivers::Error),
}

/// A virtio-net NIC.
pub struct VirtioNet {
    driver: RefCell<Driver>,
    mac: EthernetAddress,
}

impl VirtioNet {
    /// Brings up the virtio-net function `device`, through the modern transport when it has
    /// the virtio 1.x capabilities and the legacy one otherwise: decoding and bus mastering
    /// on, features negotiated, receive queue filled.
    pub fn new(device: &PciDevice) -> Result<VirtioNet, VirtioNetError> {
        let mut driver = if device.virtio.is_empty() {
            Self::legacy(device)?
        } else {
            Self::modern(device)?
        };
        // Polled: no used-buffer notifications (the INTx line is not routed anyway).
        driver.disable_interrupts();
        let mac = EthernetAddress(driver.mac_address());
        Ok(VirtioNet {
            driver: RefCell::new(driver),
            mac,
        })
    }

    fn modern(device: &PciDevice) -> Result<Driver, VirtioNetError> {
        let transport = pci::virtio::modern_transport(device).map_err(VirtioNetError::Transport)?;
        let net = VirtIONet::new(transport, RX_BUFFER_LEN).map_err(VirtioNetError::Init)?;
        Ok(Driver::Modern(Box::new(net)))
    }

    fn legacy(device: &PciDevice) -> Result<Driver, VirtioNetError> {
        let mut transport = LegacyPciTransport::new(device).map_err(VirtioNetError::Legacy)?;
        pci::enable(device.address, command::IO_SPACE | command::BUS_MASTER);
        // The device, not the driver, sizes legacy queues; `VirtIONet` must match exactly.
        for queue in QUEUES {
            let size = transport.queue_size(queue);
            if usize::from(size) != LEGACY_QUEUE_SIZE {
                return Err(VirtioNetError::LegacyQueueSize(size));
            }
        }
        let net = VirtIONet::new(transport, RX_BUFFER_LEN).map_err(VirtioNetError::Init)?;
        Ok(Driver::Legacy(Box::new(net)))
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
