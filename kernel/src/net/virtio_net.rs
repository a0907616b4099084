//! virtio-net over PCI, through the `virtio-drivers` crate, as a `smoltcp` device.
//!
//! Two transports: the crate's modern one (virtio 1.x §4.1.4: vendor capabilities locating
//! the common, notify, ISR and device structures in memory BARs), which QEMU's
//! `virtio-net-pci` offers whether it is transitional (device ID 0x1000, also a legacy I/O
//! BAR) or modern-only (0x1041); and Keel's [`LegacyPciTransport`] over the I/O-port
//! registers of a legacy-only device (`disable-modern=on`: no such capabilities).
//!
//! A legacy device fixes its queue sizes (QEMU: 256) where a modern one lets the driver
//! pick, and `VirtIONetRaw` takes the size as a const parameter, so the driver is an enum of
//! the two instantiations.
//!
//! The crate's raw driver does the queues; this module owns the buffers ([`Queues`]).
//! Reception hands smoltcp a receive buffer and lends it to the device again after smoltcp
//! is done; transmission copies into a buffer that is posted without waiting and taken back
//! once the device has sent it, so a burst of frames is in flight at once. The driver sits
//! in a `RefCell` so the receive and transmit tokens smoltcp holds together can each reach
//! it.
//!
//! **Promiscuity**: the NIC is the guest switch's uplink, so it must receive frames for the
//! guests' MACs too. `virtio-drivers` negotiates no control queue (`CTRL_VQ`/`CTRL_RX`), so
//! the driver cannot ask for promiscuous mode; it need not: a virtio-net device without a
//! negotiated control queue has no receive filter to program, and QEMU's resets to
//! promiscuous (`virtio_net_reset` sets `promisc`), delivering every frame the backend sees.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::Transport;
use virtio_drivers::transport::pci::{PciTransport, VirtioPciError};

use super::virtio_legacy::{LegacyError, LegacyPciTransport};
use crate::mm::dma::KernelHal;
use crate::pci::{self, PciDevice, command};

/// Descriptors per virtqueue on a modern device (QEMU allows up to 256).
const QUEUE_SIZE: usize = 64;
/// Descriptors per virtqueue on a legacy device: the size QEMU's virtio-net fixes.
const LEGACY_QUEUE_SIZE: usize = 256;
/// Receive and transmit buffer size: the `virtio_net_hdr` plus a full Ethernet frame.
const BUFFER_LEN: usize = 2048;
/// Largest Ethernet frame (without FCS) handed to smoltcp.
const MTU: usize = 1514;
/// virtio-net's receive and transmit queues.
const QUEUES: [u16; 2] = [0, 1];

/// PCI device IDs of virtio-net: transitional and modern (virtio 1.x §4.1.2).
pub const DEVICE_IDS: [u16; 2] = [0x1000, 0x1041];

/// `virtio-drivers`' raw (non-blocking) driver and the buffers this module lends the device:
/// a receive buffer in every receive descriptor, and each frame being sent until the device
/// reports it done. Sends do not wait: a frame is posted and its buffer reclaimed at a later
/// call ([`Queues::reclaim_sent`]), so up to a queue's worth of frames are in flight at once
/// (the crate's blocking `send` waited for each frame, a round trip through QEMU's I/O thread
/// per frame).
struct Queues<T: Transport, const N: usize> {
    raw: VirtIONetRaw<KernelHal, T, N>,
    /// Receive buffers lent to the device, by the token (head descriptor) they went in with.
    receiving: Vec<Option<Box<[u8]>>>,
    /// Frames lent to the device for sending, with their length (header included), by token.
    sending: Vec<Option<(Box<[u8]>, usize)>>,
    /// Send buffers the device gave back, for the next frames.
    spare: Vec<Box<[u8]>>,
}

impl<T: Transport, const N: usize> Queues<T, N> {
    /// Negotiates features and fills the receive queue.
    fn new(transport: T) -> virtio_drivers::Result<Self> {
        let mut queues = Queues {
            raw: VirtIONetRaw::new(transport)?,
            receiving: (0..N).map(|_| None).collect(),
            sending: (0..N).map(|_| None).collect(),
            spare: Vec::new(),
        };
        for _ in 0..N {
            queues.lend_rx(vec![0; BUFFER_LEN].into_boxed_slice())?;
        }
        Ok(queues)
    }

    /// Puts `buffer` in the receive queue.
    fn lend_rx(&mut self, mut buffer: Box<[u8]>) -> virtio_drivers::Result {
        // SAFETY: the buffer is kept in `receiving` (its heap block does not move with the
        // `Box`) and not touched until the device returns its token (`receive`), nor freed
        // before: the queues are torn down with the driver (`VirtIONetRaw`'s drop unsets them
        // before the buffers drop, fields dropping in declaration order).
        let token = unsafe { self.raw.receive_begin(&mut buffer)? };
        let slot = self
            .receiving
            .get_mut(usize::from(token))
            .ok_or(virtio_drivers::Error::WrongToken)?;
        *slot = Some(buffer);
        Ok(())
    }

    /// The next received frame's buffer and where its frame lies in it, if any.
    fn receive(&mut self) -> virtio_drivers::Result<Option<Received>> {
        let Some(token) = self.raw.poll_receive() else {
            return Ok(None);
        };
        let mut buffer = self
            .receiving
            .get_mut(usize::from(token))
            .and_then(Option::take)
            .ok_or(virtio_drivers::Error::WrongToken)?;
        // SAFETY: `buffer` is the one lent with `token` (`lend_rx` files it under its token).
        let (header, len) = unsafe { self.raw.receive_complete(token, &mut buffer)? };
        Ok(Some(Received {
            buffer,
            start: header,
            len,
        }))
    }

    /// Takes back the send buffers of the frames the device has sent.
    fn reclaim_sent(&mut self) -> virtio_drivers::Result {
        while let Some(token) = self.raw.poll_transmit() {
            let (buffer, len) = self
                .sending
                .get_mut(usize::from(token))
                .and_then(Option::take)
                .ok_or(virtio_drivers::Error::WrongToken)?;
            // SAFETY: the same buffer and length as lent with `token` (`send` files them).
            unsafe { self.raw.transmit_complete(token, &buffer[..len])? };
            self.spare.push(buffer);
        }
        Ok(())
    }

    fn can_send(&mut self) -> bool {
        if let Err(e) = self.reclaim_sent() {
            defmt::warn!("virtio-net: reclaim: {}", defmt::Display2Format(&e));
        }
        self.raw.can_send()
    }

    /// Posts a frame of `len` bytes that `fill` writes, without waiting for the device.
    fn send<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buffer = self
            .spare
            .pop()
            .unwrap_or_else(|| vec![0; BUFFER_LEN].into_boxed_slice());
        let header = match self.raw.fill_buffer_header(&mut buffer) {
            Ok(header) if header + len <= buffer.len() => header,
            _ => {
                defmt::warn!("virtio-net: frame of {} bytes too long; dropped", len);
                self.spare.push(buffer);
                return fill(&mut vec![0; len]);
            }
        };
        let result = fill(&mut buffer[header..header + len]);
        let total = header + len;
        // SAFETY: the buffer is kept in `sending` until the device returns its token
        // (`reclaim_sent`), untouched, and outlives the queue like the receive buffers.
        match unsafe { self.raw.transmit_begin(&buffer[..total]) } {
            Ok(token) => match self.sending.get_mut(usize::from(token)) {
                Some(slot) => *slot = Some((buffer, total)),
                None => defmt::error!("virtio-net: send token {} out of range", token),
            },
            Err(e) => {
                defmt::warn!("virtio-net: send: {}", defmt::Display2Format(&e));
                self.spare.push(buffer);
            }
        }
        result
    }
}

/// A received frame: the receive buffer it is in (lent to the device again once smoltcp is
/// done with it) and where it lies there (after the `virtio_net_hdr`).
struct Received {
    buffer: Box<[u8]>,
    start: usize,
    len: usize,
}

/// The driver over either transport; boxed, as its queue shadows and buffer tables take
/// several KiB (about four times as much with the legacy 256-entry queues), which would
/// otherwise be copied through every frame up to `net::probe`.
enum Driver {
    Modern(Box<Queues<PciTransport, QUEUE_SIZE>>),
    Legacy(Box<Queues<LegacyPciTransport, LEGACY_QUEUE_SIZE>>),
}

/// Runs `$body` with `$net` bound to the `Queues` of either variant.
macro_rules! with_net {
    ($driver:expr, $net:ident => $body:expr) => {
        match $driver {
            Driver::Modern($net) => $body,
            Driver::Legacy($net) => $body,
        }
    };
}

impl Driver {
    fn receive(&mut self) -> virtio_drivers::Result<Option<Received>> {
        with_net!(self, net => net.receive())
    }

    fn recycle_rx_buffer(&mut self, buffer: Box<[u8]>) -> virtio_drivers::Result {
        with_net!(self, net => net.lend_rx(buffer))
    }

    fn can_send(&mut self) -> bool {
        with_net!(self, net => net.can_send())
    }

    fn send<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        with_net!(self, net => net.send(len, fill))
    }

    fn disable_interrupts(&mut self) {
        with_net!(self, net => net.raw.disable_interrupts())
    }

    fn mac_address(&self) -> [u8; 6] {
        with_net!(self, net => net.raw.mac_address())
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
        let net = Queues::new(transport).map_err(VirtioNetError::Init)?;
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
        let net = Queues::new(transport).map_err(VirtioNetError::Init)?;
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
        let Received { buffer, start, len } = match self.driver.get_mut().receive() {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(e) => {
                defmt::warn!("virtio-net: receive: {}", defmt::Display2Format(&e));
                return None;
            }
        };
        Some((
            RxToken {
                driver: &self.driver,
                buffer: Some(buffer),
                start,
                len,
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
    buffer: Option<Box<[u8]>>,
    /// Where the frame starts in `buffer` (after the `virtio_net_hdr`).
    start: usize,
    /// The frame's length.
    len: usize,
}

fn recycle(driver: &RefCell<Driver>, buffer: Box<[u8]>) {
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
        let frame = buffer.get(self.start..self.start + self.len).unwrap_or(&[]);
        let result = f(frame);
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
        driver.send(len, f)
    }
}
