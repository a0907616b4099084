//! virtio-net (virtio 1.x §5.1) over a [`NetBackend`] the kernel provides (a port of a
//! software switch).
//!
//! Two queues of 256 entries: 0 receives (frames for the guest), 1 transmits. Features
//! offered: `MAC`, `STATUS` (the link is always up) and `MRG_RXBUF`; no checksum or
//! segmentation offloads, no control queue, no multiqueue. Every buffer starts with the
//! 12-byte virtio-net header; no offload being offered, the device ignores the header of a
//! transmitted frame and writes zeros (but `num_buffers`) into a received one.
//!
//! # Transmit
//!
//! Each chain is one frame: the header, then the Ethernet frame, split across buffers any
//! way the driver likes. A chain with a device-writable buffer, a short header, a runt
//! (under 14 bytes of frame) or an oversize frame (over 1518 bytes: 1514 and a VLAN tag)
//! is dropped and counted in [`NetStats::tx_bad`]; a frame the backend refuses (its queue
//! is full) in [`NetStats::tx_dropped`]. Either way the chain goes back to the driver, so
//! a bad frame never stalls the queue. A structurally broken queue (a looping chain, a
//! buffer outside RAM) is a [`DeviceFault`] as for every virtio device.
//!
//! # Receive
//!
//! The device delivers frames while the backend has some and the guest posted buffers for
//! them. A frame is taken from the backend only once it is placed: if the guest has not
//! posted enough room yet, the frame stays first in line and the chains looked at go back
//! to the queue ([`SplitQueue::unpop`]); the device then waits for the driver's next notify
//! of the receive queue before it tries again (rather than every poll). With `MRG_RXBUF` a
//! frame spreads over as many chains as it needs (`num_buffers` says how many); without it
//! a frame larger than one chain is dropped ([`NetStats::rx_dropped`]), as is a frame
//! larger than the whole ring's buffers (it could never be placed).
//!
//! Frames arrive without a notify: [`VirtioDevice::backend_ready`] asks the transport to
//! run the receive queue when the backend has frames, which
//! [`Vm::poll_io`](crate::vm::Vm::poll_io) does between the VM's exits.
//!
//! Frames in flight when a VM is saved are lost, as on a real network; the device saves
//! its MAC, the negotiated features and its counters.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::pci::{VirtioDevice, VirtioPci};
use super::queue::{Buffer, DescriptorChain, QueueError, SplitQueue};
use super::{
    DeviceFault, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1, TYPE_NET, copy_from_stream,
    copy_to_stream, stream_len,
};
use crate::devices::StateError;
use crate::devices::device::{DeviceStateError, decode_state, encode_state};
use crate::memory::GuestMemory;

/// Entries in each queue.
pub const QUEUE_SIZE: u16 = 256;
/// The receive queue's index.
pub const RX_QUEUE: u16 = 0;
/// The transmit queue's index.
pub const TX_QUEUE: u16 = 1;
/// Bytes of the virtio-net header before every frame (with `VERSION_1`).
pub const HEADER_LEN: usize = 12;
/// The shortest frame: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// The longest frame: 1514 bytes and a VLAN tag, no FCS.
pub const MAX_FRAME: usize = 1518;
/// Most frames one service delivers to the guest (the rest wait for the next poll, so a
/// busy backend cannot hold the VM loop).
pub const RX_BUDGET: usize = 256;

/// Feature bit: `mac` in the device configuration is valid.
pub const F_MAC: u64 = 1 << 5;
/// Feature bit: a received frame may span several receive chains.
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// Feature bit: `status` in the device configuration is valid.
pub const F_STATUS: u64 = 1 << 16;
/// Configuration `status` bit: the link is up.
pub const S_LINK_UP: u16 = 1;

/// The PCI class of an Ethernet controller.
const CLASS_ETHERNET: u32 = 0x02_0000;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS_AT: usize = 10;

/// Where a guest NIC's frames go and come from (the kernel implements it over a switch
/// port).
pub trait NetBackend: Send + 'static {
    /// A frame the guest sent: Ethernet header first, no virtio-net header. Returns whether
    /// the network took it (false: dropped, e.g. the port's queue is full; the device
    /// counts it in [`NetStats::tx_dropped`]).
    fn transmit(&mut self, frame: &[u8]) -> bool;
    /// Whether a frame waits for the guest.
    fn has_rx(&self) -> bool;
    /// Offers the next waiting frame to `deliver`; when `deliver` returns true the frame is
    /// consumed, when false it stays first in line (the guest has no RX buffers for it
    /// now). Returns false when no frame was waiting.
    fn receive(&mut self, deliver: &mut dyn FnMut(&[u8]) -> bool) -> bool;
}

/// What a NIC has done, from the guest's point of view, for `vm info` and the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Bytes of frames delivered to the guest (without the virtio-net header).
    pub rx_bytes: u64,
    /// Frames the guest sent and the network took.
    pub tx_frames: u64,
    /// Bytes of frames the guest sent and the network took.
    pub tx_bytes: u64,
    /// Guest frames the network refused (the port's queue was full).
    pub tx_dropped: u64,
    /// Guest frames dropped as malformed: runt, oversize, short header, device-writable
    /// buffer in a transmit chain.
    pub tx_bad: u64,
    /// Frames for the guest dropped because they can never fit the buffers it posts.
    pub rx_dropped: u64,
}

/// The virtio-net device model, see the [module docs](self).
pub struct VirtioNet {
    backend: Box<dyn NetBackend>,
    mac: [u8; 6],
    queue_sizes: [u16; 2],
    /// The features the driver negotiated; 0 until `DRIVER_OK`.
    features: u64,
    /// The driver set `DRIVER_OK` (and has not reset the device since).
    active: bool,
    /// A frame waits but the guest had no room for it: wait for its next receive notify.
    rx_starved: bool,
    stats: NetStats,
    /// One transmitted frame, copied out of guest RAM.
    tx_frame: Vec<u8>,
}

/// A virtio-net device on PCI.
pub type VirtioNetPci = VirtioPci<VirtioNet>;

/// A virtio-net PCI function with MAC `mac` over `backend`, ready for
/// [`Devices::add_pci_device`](crate::devices::Devices::add_pci_device).
pub fn net_device(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> VirtioNetPci {
    VirtioPci::new(VirtioNet::new(backend, mac))
}

/// [`VirtioNet`]'s snapshot.
#[derive(Serialize, Deserialize)]
struct NetState {
    mac: [u8; 6],
    features: u64,
    active: bool,
    stats: NetStats,
}

/// What became of the frame the backend offered.
enum Placement {
    /// Written into the guest's buffers.
    Delivered,
    /// Can never fit the guest's buffers: dropped.
    Dropped,
    /// Not enough room posted yet: the frame waits.
    NoRoom,
}

impl VirtioNet {
    /// A NIC with MAC `mac` over `backend`, in its reset state.
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> VirtioNet {
        VirtioNet {
            backend,
            mac,
            queue_sizes: [QUEUE_SIZE; 2],
            features: 0,
            active: false,
            rx_starved: false,
            stats: NetStats::default(),
            tx_frame: vec![0; MAX_FRAME],
        }
    }

    /// The NIC's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The device configuration: `mac`, then `status`.
    fn config_bytes(&self) -> [u8; 8] {
        let mut c = [0u8; 8];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
        c
    }

    /// Sends every chain the driver made available on the transmit queue.
    fn transmit(&mut self, queue: &mut SplitQueue, mem: &GuestMemory) -> Result<bool, DeviceFault> {
        let mut used = false;
        while let Some(chain) = queue.pop(mem)? {
            self.transmit_chain(mem, &chain);
            // Nothing is written into a transmit chain.
            queue.add_used(mem, chain.head, 0)?;
            used = true;
        }
        Ok(used)
    }

    /// One transmit chain: checked, copied out and handed to the backend, or counted.
    fn transmit_chain(&mut self, mem: &GuestMemory, chain: &DescriptorChain) {
        let bufs = &chain.buffers;
        let total = stream_len(bufs);
        let frame_len = total.saturating_sub(HEADER_LEN as u64);
        let well_formed = !bufs.iter().any(|b| b.device_writable)
            && total >= HEADER_LEN as u64
            && (MIN_FRAME as u64..=MAX_FRAME as u64).contains(&frame_len);
        if !well_formed {
            self.stats.tx_bad += 1;
            return;
        }
        // frame_len <= MAX_FRAME, the buffer's length.
        let frame = &mut self.tx_frame[..frame_len as usize];
        if copy_from_stream(mem, bufs, HEADER_LEN as u64, frame).is_err() {
            // The queue checked every buffer lies in RAM; count rather than trust that.
            self.stats.tx_bad += 1;
            return;
        }
        if self.backend.transmit(frame) {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += frame_len;
        } else {
            self.stats.tx_dropped += 1;
        }
    }

    /// Delivers waiting frames while the guest has room (at most [`RX_BUDGET`]).
    fn receive(&mut self, queue: &mut SplitQueue, mem: &GuestMemory) -> Result<bool, DeviceFault> {
        self.rx_starved = false;
        let mergeable = self.features & F_MRG_RXBUF != 0;
        let VirtioNet { backend, stats, .. } = self;
        let mut used = false;
        let mut fault = None;
        for _ in 0..RX_BUDGET {
            let mut placement = Placement::NoRoom;
            let offered = backend.receive(&mut |frame| {
                match place_frame(queue, mem, frame, mergeable) {
                    Ok(p) => placement = p,
                    Err(error) => {
                        fault = Some(error);
                        return false;
                    }
                }
                match placement {
                    Placement::Delivered => {
                        stats.rx_frames += 1;
                        stats.rx_bytes += frame.len() as u64;
                        used = true;
                        true
                    }
                    Placement::Dropped => {
                        stats.rx_dropped += 1;
                        true
                    }
                    Placement::NoRoom => false,
                }
            });
            if let Some(error) = fault {
                return Err(error);
            }
            if !offered {
                break;
            }
            if matches!(placement, Placement::NoRoom) {
                self.rx_starved = true;
                break;
            }
        }
        Ok(used)
    }
}

/// Writes `frame` (behind its header) into the guest's receive chains, or says why not.
/// Chains that were looked at but not used go back to the queue.
fn place_frame(
    queue: &mut SplitQueue,
    mem: &GuestMemory,
    frame: &[u8],
    mergeable: bool,
) -> Result<Placement, DeviceFault> {
    let needed = (HEADER_LEN + frame.len()) as u64;
    // (head, writable buffers, their length) of each chain taken for this frame.
    let mut chains: Vec<(u16, Vec<Buffer>, u64)> = Vec::new();
    let mut room = 0u64;
    while room < needed {
        let Some(chain) = queue.pop(mem)? else {
            break;
        };
        if chain.buffers.iter().any(|b| !b.device_writable) {
            return Err(DeviceFault::Request {
                head: chain.head,
                reason: "is a receive chain with a device-readable buffer".into(),
            });
        }
        let len = stream_len(&chain.buffers);
        room += len;
        chains.push((chain.head, chain.buffers, len));
        if !mergeable || chains.len() >= usize::from(queue.size()) {
            break;
        }
    }
    if room < needed {
        // Every chain goes back; count fits in u16 (at most the queue's size).
        queue.unpop(chains.len() as u16);
        // Without MRG_RXBUF one chain must hold the frame; with it, the whole ring.
        let never_fits = if mergeable {
            chains.len() >= usize::from(queue.size())
        } else {
            !chains.is_empty()
        };
        return Ok(if never_fits {
            Placement::Dropped
        } else {
            Placement::NoRoom
        });
    }
    let mut header = [0u8; HEADER_LEN];
    // At most the queue's size (256) chains.
    let count = chains.len() as u16;
    header[NUM_BUFFERS_AT..].copy_from_slice(&count.to_le_bytes());
    let mut offset = 0u64;
    for (head, buffers, len) in &chains {
        let n = (needed - offset).min(*len);
        let mut written = 0u64;
        // The header and frame as one stream: the header part first, then the frame part.
        if offset < HEADER_LEN as u64 {
            let h = &header[offset as usize..HEADER_LEN.min((offset + n) as usize)];
            write_chain(mem, *head, buffers, 0, h)?;
            written += h.len() as u64;
        }
        if written < n {
            let from = (offset + written) as usize - HEADER_LEN;
            let part = &frame[from..from + (n - written) as usize];
            write_chain(mem, *head, buffers, written, part)?;
        }
        // n <= the chain's length, which the queue bounds to u32 per buffer; a chain's
        // total can exceed u32 only with many huge buffers, but n <= needed < 2 KiB.
        queue.add_used(mem, *head, n as u32)?;
        offset += n;
    }
    Ok(Placement::Delivered)
}

/// Writes `data` at `offset` of a receive chain's buffers.
fn write_chain(
    mem: &GuestMemory,
    head: u16,
    buffers: &[Buffer],
    offset: u64,
    data: &[u8],
) -> Result<(), DeviceFault> {
    copy_to_stream(mem, buffers, offset, data).map_err(|_| DeviceFault::Request {
        head,
        reason: "has a receive buffer outside guest RAM".into(),
    })
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u16 {
        TYPE_NET
    }

    fn name(&self) -> &'static str {
        "virtio-net"
    }

    fn pci_class(&self) -> u32 {
        CLASS_ETHERNET
    }

    fn features(&self) -> u64 {
        F_MAC | F_STATUS | F_MRG_RXBUF
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset + i as u64)
                .ok()
                .and_then(|at| config.get(at))
                .copied()
                .unwrap_or(0);
        }
    }

    fn activate(&mut self, features: u64) {
        self.features = features;
        self.active = true;
        self.rx_starved = false;
    }

    fn reset(&mut self) {
        self.features = 0;
        self.active = false;
        self.rx_starved = false;
    }

    fn backend_ready(&self) -> u64 {
        if self.active && !self.rx_starved && self.backend.has_rx() {
            1 << RX_QUEUE
        } else {
            0
        }
    }

    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut SplitQueue,
        mem: &GuestMemory,
    ) -> Result<bool, DeviceFault> {
        match index {
            RX_QUEUE => self.receive(queue, mem),
            TX_QUEUE => self.transmit(queue, mem),
            // The transport has only the two queues.
            _ => Err(DeviceFault::Queue(QueueError::NotReady)),
        }
    }

    fn save_state(&self) -> Vec<u8> {
        encode_state(&NetState {
            mac: self.mac,
            features: self.features,
            active: self.active,
            stats: self.stats,
        })
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        let name = self.name();
        let state: NetState = decode_state(name, bytes)?;
        let invalid = |field, value| {
            DeviceStateError::Invalid(StateError::Invalid {
                device: name,
                field,
                value,
            })
        };
        if state.mac != self.mac {
            // The guest's driver keeps the MAC it read at probe: a NIC restored with
            // another would have its frames dropped as forged.
            let mut raw = [0u8; 8];
            raw[2..].copy_from_slice(&state.mac);
            return Err(invalid(
                "mac (saved; the VM's config now gives this NIC another)",
                u64::from_be_bytes(raw),
            ));
        }
        let offered = self.features() | F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC;
        if state.features & !offered != 0 {
            return Err(invalid("features", state.features));
        }
        self.features = state.features;
        self.active = state.active;
        self.stats = state.stats;
        self.rx_starved = false;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
