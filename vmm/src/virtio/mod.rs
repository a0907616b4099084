//! virtio 1.x devices on the guest's PCI bus: split virtqueues ([`queue`]), the modern
//! virtio-pci transport ([`pci`]) and the device models behind it ([`blk`], [`net`]).
//!
//! # How a request travels
//!
//! The guest's driver programs a queue through the transport's common configuration (in
//! BAR 0), puts a request in guest RAM and writes the queue's notify register. That MMIO
//! exit only records the queue as notified ([`pci::VirtioPci`] has no guest memory there);
//! after the exit the VM loop calls [`Devices::service_io`](crate::devices::Devices::service_io),
//! which lets the transport drain each notified queue through its model
//! ([`VirtioDevice::process_queue`]): every request is completed synchronously (the backend
//! call returns before the used entry is written), then the transport interrupts the
//! driver if the queue's event rules ask for it (MSI-X, or the ISR bit).
//!
//! Work can also come from the other side: frames for a virtio-net device arrive from the
//! network, not from a notify. A model announces it with
//! [`VirtioDevice::backend_ready`], and [`Vm::poll_io`](crate::vm::Vm::poll_io) services
//! it between the VM's exits.
//!
//! A driver that breaks the rules (a bad queue size, a descriptor outside RAM, a looping
//! chain) puts the device in `DEVICE_NEEDS_RESET` with a config-change interrupt; the
//! reason stays readable ([`pci::VirtioPci::error`]) until the driver resets the device.
//!
//! Device writes to guest RAM (used rings, read data) go through
//! [`GuestMemory`] directly and so bypass the dirty log:
//! live migration (issue 20) must mark those pages itself.

use alloc::string::String;
use core::fmt;

use crate::memory::{GuestMemory, MemoryError};

pub mod blk;
pub mod net;
pub mod pci;
pub mod queue;

pub use pci::{VirtioDevice, VirtioPci};
pub use queue::{Buffer, DescriptorChain, QueueError, QueueState, SplitQueue};

/// Device type of a network device (virtio 1.x §5).
pub const TYPE_NET: u16 = 1;
/// Device type of a block device (virtio 1.x §5).
pub const TYPE_BLOCK: u16 = 2;

/// Feature bit: indirect descriptors.
pub const F_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: `used_event` / `avail_event` interrupt and notification suppression.
pub const F_EVENT_IDX: u64 = 1 << 29;
/// Feature bit: a virtio 1.x (non-legacy) device.
pub const F_VERSION_1: u64 = 1 << 32;

/// Why a device model stopped processing a queue: the driver broke a rule the device
/// cannot answer with a status byte. The transport sets `DEVICE_NEEDS_RESET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceFault {
    /// The queue itself is malformed.
    Queue(QueueError),
    /// A request is malformed beyond what its status byte can report.
    Request {
        /// The chain's head descriptor.
        head: u16,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for DeviceFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceFault::Queue(error) => error.fmt(f),
            DeviceFault::Request { head, reason } => {
                write!(f, "the request at descriptor {head} {reason}")
            }
        }
    }
}

impl From<QueueError> for DeviceFault {
    fn from(error: QueueError) -> Self {
        DeviceFault::Queue(error)
    }
}

// The device-side view of a chain's buffers as one byte stream (§2.6.4: a device does
// not assume how the driver split a message into buffers).

/// Total bytes of `bufs`.
pub(crate) fn stream_len(bufs: &[Buffer]) -> u64 {
    bufs.iter().map(|b| u64::from(b.len)).sum()
}

/// Walks the part of `bufs`' byte stream at `offset`, `len` bytes long, as (guest address,
/// position in the part, length) pieces.
fn for_each_piece(
    bufs: &[Buffer],
    mut offset: u64,
    len: usize,
    mut f: impl FnMut(u64, usize, usize) -> Result<(), MemoryError>,
) -> Result<(), MemoryError> {
    let mut done = 0usize;
    for b in bufs {
        if done == len {
            break;
        }
        let blen = u64::from(b.len);
        if offset >= blen {
            offset -= blen;
            continue;
        }
        let n = ((blen - offset) as usize).min(len - done);
        f(b.addr + offset, done, n)?;
        done += n;
        offset = 0;
    }
    if done < len {
        return Err(MemoryError::OutOfRange {
            gpa: 0,
            len: len as u64,
        });
    }
    Ok(())
}

/// Reads `out.len()` bytes at `offset` of `bufs`' byte stream.
pub(crate) fn copy_from_stream(
    mem: &GuestMemory,
    bufs: &[Buffer],
    offset: u64,
    out: &mut [u8],
) -> Result<(), MemoryError> {
    let len = out.len();
    for_each_piece(bufs, offset, len, |gpa, at, n| {
        mem.read(gpa, &mut out[at..at + n])
    })
}

/// Writes `data` at `offset` of `bufs`' byte stream.
pub(crate) fn copy_to_stream(
    mem: &GuestMemory,
    bufs: &[Buffer],
    offset: u64,
    data: &[u8],
) -> Result<(), MemoryError> {
    for_each_piece(bufs, offset, data.len(), |gpa, at, n| {
        mem.write(gpa, &data[at..at + n])
    })
}

/// The body shared by the `virtqueue` fuzz target and its deterministic unit test.
#[doc(hidden)]
pub mod fuzzing {
    use alloc::boxed::Box;
    use alloc::vec;
    use alloc::vec::Vec;

    use alloc::collections::VecDeque;

    use super::F_VERSION_1;
    use super::blk::{BlockBackend, BlockError, VirtioBlock};
    use super::net::{F_MAC, F_MRG_RXBUF, NetBackend, RX_QUEUE, TX_QUEUE, VirtioNet};
    use super::pci::VirtioDevice;
    use super::queue::SplitQueue;
    use crate::memory::GuestMemory;

    /// A 16-sector disk in a vector.
    struct RamDisk(Vec<u8>);

    impl BlockBackend for RamDisk {
        fn sectors(&self) -> u64 {
            self.0.len() as u64 / 512
        }
        fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            let at = usize::try_from(sector * 512).map_err(|_| BlockError("range".into()))?;
            let src = self
                .0
                .get(at..at + buf.len())
                .ok_or_else(|| BlockError("the device read past the checked range".into()))?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
            let at = usize::try_from(sector * 512).map_err(|_| BlockError("range".into()))?;
            self.0
                .get_mut(at..at + buf.len())
                .ok_or_else(|| BlockError("the device wrote past the checked range".into()))?
                .copy_from_slice(buf);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), BlockError> {
            Ok(())
        }
    }

    /// Lays `input` out as queue registers (the first 32 bytes) and guest RAM (the rest,
    /// from address 0): the enabled queue and the flags byte (register byte 24), or `None`
    /// if the queue refused the layout.
    fn queue_from_input(mem: &GuestMemory, input: &[u8]) -> Option<(SplitQueue, [u8; 32])> {
        let mut regs = [0u8; 32];
        let n = input.len().min(32);
        regs[..n].copy_from_slice(&input[..n]);
        let rest = &input[n..];
        // Clear what the previous input left so runs are independent.
        let _ = mem.fill(0, 0x1_0000, 0);
        let _ = mem.write(0, &rest[..rest.len().min(0x1_0000)]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&regs[at..at + 8]);
            u64::from_le_bytes(b)
        };
        // Mostly small addresses inside the written area; the top bit of the flags byte
        // keeps the raw value so out-of-RAM rings are tried too.
        let flags = regs[24];
        let addr = |raw: u64| {
            if flags & 0x80 != 0 {
                raw
            } else {
                raw % 0x1_0000
            }
        };
        let mut queue = SplitQueue::new(256);
        queue.set_size(u16::from_le_bytes([regs[26], regs[27]]));
        queue.set_desc_table(addr(u64_at(0)));
        queue.set_avail_ring(addr(u64_at(8)));
        queue.set_used_ring(addr(u64_at(16)));
        queue.set_event_idx(flags & 1 != 0);
        queue.set_ready(true).ok()?;
        Some((queue, regs))
    }

    /// Lays `input` out as queue registers and guest RAM (`queue_from_input`), then
    /// drains the queue: with bit 1 of the flags byte through a virtio-blk model over a
    /// 16-sector disk, otherwise returning every chain as used. A panic or a hang is a
    /// bug; errors are the expected answer to garbage. Returns how many chains went back
    /// to the driver.
    pub fn drain_queue(mem: &GuestMemory, input: &[u8]) -> u16 {
        let Some((mut queue, regs)) = queue_from_input(mem, input) else {
            return 0;
        };
        let flags = regs[24];
        if flags & 2 != 0 {
            let disk = Box::new(RamDisk(vec![0; 16 * 512]));
            let mut blk = VirtioBlock::new(disk, flags & 4 != 0, "fuzz");
            let _ = blk.process_queue(0, &mut queue, mem);
            return queue.state().next_used;
        }
        // More pops than entries could ever be available: the queue must end the loop.
        for _ in 0..1024 {
            match queue.pop(mem) {
                Ok(Some(chain)) => {
                    let written = chain
                        .buffers
                        .iter()
                        .filter(|b| b.device_writable)
                        .map(|b| b.len)
                        .fold(0u32, u32::saturating_add);
                    if queue.add_used(mem, chain.head, written).is_err() {
                        break;
                    }
                    let _ = queue.should_notify(mem);
                }
                Ok(None) | Err(_) => break,
            }
        }
        queue.state().next_used
    }

    /// The network behind the fuzzed NIC: frames for the guest, and a network that takes
    /// every frame of even length (so both outcomes of a transmit are tried).
    struct FuzzWire(VecDeque<Vec<u8>>);

    impl NetBackend for FuzzWire {
        fn transmit(&mut self, frame: &[u8]) -> bool {
            frame.len().is_multiple_of(2)
        }
        fn has_rx(&self) -> bool {
            !self.0.is_empty()
        }
        fn receive(&mut self, deliver: &mut dyn FnMut(&[u8]) -> bool) -> bool {
            let Some(frame) = self.0.front() else {
                return false;
            };
            if deliver(frame) {
                self.0.pop_front();
            }
            true
        }
    }

    /// Lays `input` out as for [`drain_queue`] and runs it through a virtio-net model:
    /// bit 1 of the flags byte makes it the transmit queue (else the receive queue), bit
    /// 2 negotiates `MRG_RXBUF`; register bytes 28..32 are the lengths (x 8) of four
    /// frames waiting for the guest. Checks what the device promises: every transmit
    /// chain is counted exactly once, and no received frame is both delivered and
    /// dropped. Returns how many chains went back to the driver.
    pub fn net_queue(mem: &GuestMemory, input: &[u8]) -> u16 {
        let Some((mut queue, regs)) = queue_from_input(mem, input) else {
            return 0;
        };
        let flags = regs[24];
        let frames: VecDeque<Vec<u8>> = regs[28..32]
            .iter()
            .map(|&len| {
                let len = usize::from(len) * 8;
                (0..len).map(|i| i as u8).collect()
            })
            .collect();
        let waiting = frames.len() as u64;
        let mut nic = VirtioNet::new(Box::new(FuzzWire(frames)), [2, 0, 0, 0, 0, 1]);
        let mrg = if flags & 4 != 0 { F_MRG_RXBUF } else { 0 };
        nic.activate(F_VERSION_1 | F_MAC | mrg);
        let index = if flags & 2 != 0 { TX_QUEUE } else { RX_QUEUE };
        let outcome = nic.process_queue(index, &mut queue, mem);
        let stats = nic.stats();
        let used = queue.state().next_used;
        if index == TX_QUEUE && outcome.is_ok() {
            let counted = stats.tx_frames + stats.tx_dropped + stats.tx_bad;
            assert_eq!(
                counted,
                u64::from(used),
                "every transmit chain counted once"
            );
        }
        assert!(stats.rx_frames + stats.rx_dropped <= waiting);
        used
    }
}
