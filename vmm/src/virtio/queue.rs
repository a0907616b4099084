//! Split virtqueues (virtio 1.x §2.7): the descriptor table, the driver's available ring and
//! the device's used ring, all in guest RAM, walked from the device side.
//!
//! Everything the guest wrote is checked before it is used: the rings lie in guest RAM and
//! are aligned, every buffer lies in guest RAM, a chain is at most as long as the queue (so
//! a loop ends as an error), an indirect table holds whole descriptors (at most the
//! device's maximum queue size), lies in RAM, is walked within its own length, and does not
//! nest. A guest that breaks a rule gets a
//! [`QueueError`]; the transport then sets `DEVICE_NEEDS_RESET`.
//!
//! Ordering: the available index is read before the entries it publishes (Acquire fence
//! after the read), and a used element is written before the used index that publishes it
//! (Release fence between). The vCPUs do not run while the VM loop services a queue (one
//! host CPU runs a VM's vCPUs by turns), so the fences matter for the model, not for a race.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{Ordering, fence};

use serde::{Deserialize, Serialize};

use crate::memory::GuestMemory;

/// Descriptor flag: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable (otherwise device-readable).
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds a table of descriptors (an indirect chain).
pub const DESC_F_INDIRECT: u16 = 4;
/// Available ring flag: the driver does not want an interrupt (without `EVENT_IDX`).
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Bytes per descriptor.
const DESC_LEN: u64 = 16;

/// One buffer of a descriptor chain, checked to lie in guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes (may be 0; devices decide what that means).
    pub len: u32,
    /// Whether the device writes it (otherwise it reads it).
    pub device_writable: bool,
}

/// A request the driver made available: its head descriptor index (for the used ring) and
/// its buffers in order, an indirect table flattened in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorChain {
    /// The head descriptor's index.
    pub head: u16,
    /// The buffers, in chain order.
    pub buffers: Vec<Buffer>,
}

/// Why the queue refused what the driver programmed or wrote in guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The queue size is 0, not a power of two, or above the device's maximum.
    BadSize {
        /// The size the driver wrote.
        size: u16,
        /// The device's maximum.
        max: u16,
    },
    /// A ring is not aligned as the spec requires.
    Misaligned {
        /// Which ring.
        ring: &'static str,
        /// Its address.
        gpa: u64,
        /// The alignment required.
        align: u64,
    },
    /// A ring does not lie in guest RAM.
    RingOutsideRam {
        /// Which ring.
        ring: &'static str,
        /// Its address.
        gpa: u64,
        /// Its length for the queue size.
        len: u64,
    },
    /// The available index moved further ahead than the queue has entries.
    AvailIndexJump {
        /// The driver's available index.
        avail_idx: u16,
        /// The next entry the device would take.
        next_avail: u16,
        /// The queue size.
        size: u16,
    },
    /// A descriptor index (a head, a `next`, or a used-ring head) is beyond the table.
    DescriptorIndex {
        /// The index.
        index: u16,
        /// The table's length.
        table_len: u32,
    },
    /// A buffer does not lie in guest RAM.
    BufferOutsideRam {
        /// The descriptor's index (in the indirect table for an indirect chain).
        index: u16,
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A chain has more descriptors than the queue (or its indirect table) has, which
    /// includes a chain that loops.
    ChainTooLong {
        /// The chain's head.
        head: u16,
        /// The most descriptors it may have.
        limit: u32,
    },
    /// An indirect descriptor also has `NEXT` set, sits inside an indirect table, or its
    /// table's length is 0 or not a multiple of 16.
    BadIndirect {
        /// The chain's head.
        head: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// The device asked for something the queue is not in a state to do (a device bug).
    NotReady,
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::BadSize { size, max } => write!(
                f,
                "queue size {size} is not a power of two between 1 and {max}"
            ),
            QueueError::Misaligned { ring, gpa, align } => {
                write!(f, "the {ring} at {gpa:#x} is not {align}-byte aligned")
            }
            QueueError::RingOutsideRam { ring, gpa, len } => write!(
                f,
                "the {ring} at {gpa:#x} ({len} bytes) lies outside guest RAM"
            ),
            QueueError::AvailIndexJump {
                avail_idx,
                next_avail,
                size,
            } => write!(
                f,
                "the available index {avail_idx} is more than the queue size {size} ahead of \
                 the device's position {next_avail}"
            ),
            QueueError::DescriptorIndex { index, table_len } => write!(
                f,
                "descriptor index {index} is beyond its table of {table_len} entries"
            ),
            QueueError::BufferOutsideRam { index, addr, len } => write!(
                f,
                "descriptor {index} points outside guest RAM at {addr:#x} ({len} bytes)"
            ),
            QueueError::ChainTooLong { head, limit } => write!(
                f,
                "the descriptor chain at head {head} loops or has more than {limit} descriptors"
            ),
            QueueError::BadIndirect { head, reason } => {
                write!(
                    f,
                    "the indirect descriptor in the chain at head {head} {reason}"
                )
            }
            QueueError::NotReady => f.write_str("the queue is not enabled"),
        }
    }
}

/// A queue's registers and device-side position, for snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// The size the driver chose.
    pub size: u16,
    /// Whether the driver enabled the queue.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available (driver) ring address.
    pub avail_ring: u64,
    /// Used (device) ring address.
    pub used_ring: u64,
    /// Next available-ring entry the device takes (free-running).
    pub next_avail: u16,
    /// Next used-ring entry the device fills (free-running).
    pub next_used: u16,
    /// Whether `VIRTIO_F_EVENT_IDX` was negotiated.
    pub event_idx: bool,
    /// The used index at the last interrupt decision (`None`: none since reset).
    pub signalled_used: Option<u16>,
}

/// One split virtqueue, see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitQueue {
    max_size: u16,
    state: QueueState,
}

impl SplitQueue {
    /// A queue of at most `max_size` entries (a power of two), in its reset state with
    /// `max_size` as the offered size.
    pub fn new(max_size: u16) -> SplitQueue {
        let mut queue = SplitQueue {
            max_size,
            state: QueueState::default(),
        };
        queue.reset();
        queue
    }

    /// Back to the reset state: size = maximum, not ready, addresses 0, indices 0.
    pub fn reset(&mut self) {
        self.state = QueueState {
            size: self.max_size,
            ..QueueState::default()
        };
    }

    /// The most entries the device supports.
    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// The size the driver chose (the maximum until it writes one).
    pub fn size(&self) -> u16 {
        self.state.size
    }

    /// The driver's `queue_size` write (checked when the queue is enabled).
    pub fn set_size(&mut self, size: u16) {
        self.state.size = size;
    }

    /// Whether the queue is enabled.
    pub fn ready(&self) -> bool {
        self.state.ready
    }

    /// The driver's `queue_enable` write. Enabling checks the size and the rings'
    /// alignment; a refused queue stays disabled.
    pub fn set_ready(&mut self, on: bool) -> Result<(), QueueError> {
        if on {
            self.check_layout()?;
        }
        self.state.ready = on;
        Ok(())
    }

    /// The descriptor table's address.
    pub fn desc_table(&self) -> u64 {
        self.state.desc_table
    }

    /// Sets the descriptor table's address.
    pub fn set_desc_table(&mut self, gpa: u64) {
        self.state.desc_table = gpa;
    }

    /// The available (driver) ring's address.
    pub fn avail_ring(&self) -> u64 {
        self.state.avail_ring
    }

    /// Sets the available (driver) ring's address.
    pub fn set_avail_ring(&mut self, gpa: u64) {
        self.state.avail_ring = gpa;
    }

    /// The used (device) ring's address.
    pub fn used_ring(&self) -> u64 {
        self.state.used_ring
    }

    /// Sets the used (device) ring's address.
    pub fn set_used_ring(&mut self, gpa: u64) {
        self.state.used_ring = gpa;
    }

    /// Whether `VIRTIO_F_EVENT_IDX` is in effect.
    pub fn event_idx(&self) -> bool {
        self.state.event_idx
    }

    /// `VIRTIO_F_EVENT_IDX` was negotiated (or not).
    pub fn set_event_idx(&mut self, on: bool) {
        self.state.event_idx = on;
    }

    /// The queue's state, for a snapshot.
    pub fn state(&self) -> QueueState {
        self.state.clone()
    }

    /// Loads a snapshot taken of a queue with the same maximum; an enabled queue's layout
    /// is checked as at enable. On an error the queue is unchanged.
    pub fn restore(&mut self, state: &QueueState) -> Result<(), QueueError> {
        let restored = SplitQueue {
            max_size: self.max_size,
            state: state.clone(),
        };
        if state.ready {
            restored.check_layout()?;
            let pending = state.next_avail.wrapping_sub(state.next_used);
            if pending > state.size {
                return Err(QueueError::AvailIndexJump {
                    avail_idx: state.next_avail,
                    next_avail: state.next_used,
                    size: state.size,
                });
            }
        }
        *self = restored;
        Ok(())
    }

    /// Ring lengths for the current size: descriptor table, available ring (with
    /// `used_event`), used ring (with `avail_event`).
    fn ring_lens(&self) -> (u64, u64, u64) {
        let n = u64::from(self.state.size);
        (DESC_LEN * n, 6 + 2 * n, 6 + 8 * n)
    }

    /// The size and ring alignment rules checked at enable.
    fn check_layout(&self) -> Result<(), QueueError> {
        let size = self.state.size;
        if size == 0 || !size.is_power_of_two() || size > self.max_size {
            return Err(QueueError::BadSize {
                size,
                max: self.max_size,
            });
        }
        for (ring, gpa, align) in [
            ("descriptor table", self.state.desc_table, 16),
            ("available ring", self.state.avail_ring, 2),
            ("used ring", self.state.used_ring, 4),
        ] {
            if gpa % align != 0 {
                return Err(QueueError::Misaligned { ring, gpa, align });
            }
        }
        Ok(())
    }

    /// Checks that the three rings lie in guest RAM (they may have been programmed anywhere).
    fn check_rings(&self, mem: &GuestMemory) -> Result<(), QueueError> {
        if !self.state.ready {
            return Err(QueueError::NotReady);
        }
        let (desc, avail, used) = self.ring_lens();
        for (ring, gpa, len) in [
            ("descriptor table", self.state.desc_table, desc),
            ("available ring", self.state.avail_ring, avail),
            ("used ring", self.state.used_ring, used),
        ] {
            if !mem.contains(gpa, len) {
                return Err(QueueError::RingOutsideRam { ring, gpa, len });
            }
        }
        Ok(())
    }

    /// Reads a ring field, the ring already checked to be in RAM.
    fn read_u16(&self, mem: &GuestMemory, ring: &'static str, gpa: u64) -> Result<u16, QueueError> {
        mem.read_u16(gpa)
            .map_err(|_| QueueError::RingOutsideRam { ring, gpa, len: 2 })
    }

    fn write_u16(
        &self,
        mem: &GuestMemory,
        ring: &'static str,
        gpa: u64,
        value: u16,
    ) -> Result<(), QueueError> {
        mem.write_u16(gpa, value)
            .map_err(|_| QueueError::RingOutsideRam { ring, gpa, len: 2 })
    }

    /// The driver's available index, read with Acquire semantics.
    fn avail_idx(&self, mem: &GuestMemory) -> Result<u16, QueueError> {
        let idx = self.read_u16(mem, "available ring", self.state.avail_ring + 2)?;
        // The ring entries the index publishes are read after it.
        fence(Ordering::Acquire);
        Ok(idx)
    }

    /// Takes the next chain the driver made available, if any. With `EVENT_IDX`, an empty
    /// queue also tells the driver (`avail_event`) to notify at the next entry.
    pub fn pop(&mut self, mem: &GuestMemory) -> Result<Option<DescriptorChain>, QueueError> {
        self.check_rings(mem)?;
        let size = self.state.size;
        let mut avail_idx = self.avail_idx(mem)?;
        if avail_idx == self.state.next_avail && self.state.event_idx {
            let avail_event = self.state.used_ring + 4 + 8 * u64::from(size);
            self.write_u16(mem, "used ring", avail_event, self.state.next_avail)?;
            // The driver may have added an entry before it saw the new avail_event.
            fence(Ordering::SeqCst);
            avail_idx = self.avail_idx(mem)?;
        }
        let pending = avail_idx.wrapping_sub(self.state.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > size {
            return Err(QueueError::AvailIndexJump {
                avail_idx,
                next_avail: self.state.next_avail,
                size,
            });
        }
        let slot = u64::from(self.state.next_avail % size);
        let head = self.read_u16(mem, "available ring", self.state.avail_ring + 4 + 2 * slot)?;
        // The entry is consumed whatever it holds: a bad chain puts the device in
        // DEVICE_NEEDS_RESET, and a reset starts over.
        self.state.next_avail = self.state.next_avail.wrapping_add(1);
        let buffers = self.walk_chain(mem, head)?;
        Ok(Some(DescriptorChain { head, buffers }))
    }

    /// Reads descriptor `index` of the table at `table` (in RAM, checked by the caller).
    fn read_desc(mem: &GuestMemory, table: u64, index: u16) -> Result<Descriptor, QueueError> {
        let gpa = table + DESC_LEN * u64::from(index);
        let mut raw = [0u8; DESC_LEN as usize];
        mem.read(gpa, &mut raw)
            .map_err(|_| QueueError::RingOutsideRam {
                ring: "descriptor table",
                gpa,
                len: DESC_LEN,
            })?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[at..at + 8]);
            u64::from_le_bytes(b)
        };
        Ok(Descriptor {
            addr: u64_at(0),
            len: u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]),
            flags: u16::from_le_bytes([raw[12], raw[13]]),
            next: u16::from_le_bytes([raw[14], raw[15]]),
        })
    }

    /// Follows the chain from `head`, flattening an indirect table.
    fn walk_chain(&self, mem: &GuestMemory, head: u16) -> Result<Vec<Buffer>, QueueError> {
        let size = self.state.size;
        let limit = u32::from(size);
        let table_len = u32::from(size);
        if head >= size {
            return Err(QueueError::DescriptorIndex {
                index: head,
                table_len,
            });
        }
        let mut buffers = Vec::new();
        let mut index = head;
        let mut seen = 0u32;
        loop {
            seen += 1;
            if seen > limit {
                return Err(QueueError::ChainTooLong { head, limit });
            }
            let desc = Self::read_desc(mem, self.state.desc_table, index)?;
            if desc.flags & DESC_F_INDIRECT != 0 {
                if desc.flags & DESC_F_NEXT != 0 {
                    return Err(QueueError::BadIndirect {
                        head,
                        reason: "also has NEXT set",
                    });
                }
                self.walk_indirect(mem, head, index, &desc, &mut buffers)?;
                return Ok(buffers);
            }
            buffers.push(checked_buffer(mem, index, &desc)?);
            if desc.flags & DESC_F_NEXT == 0 {
                return Ok(buffers);
            }
            if desc.next >= size {
                return Err(QueueError::DescriptorIndex {
                    index: desc.next,
                    table_len,
                });
            }
            index = desc.next;
        }
    }

    /// Appends the buffers of the indirect table `desc` describes (descriptor `index` of
    /// the chain at `head`); the table has at most the device's maximum queue size of
    /// entries.
    fn walk_indirect(
        &self,
        mem: &GuestMemory,
        head: u16,
        index: u16,
        desc: &Descriptor,
        buffers: &mut Vec<Buffer>,
    ) -> Result<(), QueueError> {
        if desc.len == 0 || u64::from(desc.len) % DESC_LEN != 0 {
            return Err(QueueError::BadIndirect {
                head,
                reason: "has a table length that is 0 or not a multiple of 16",
            });
        }
        if !mem.contains(desc.addr, u64::from(desc.len)) {
            return Err(QueueError::BufferOutsideRam {
                index,
                addr: desc.addr,
                len: desc.len,
            });
        }
        let entries = desc.len / DESC_LEN as u32;
        // Bounded by the device's maximum, not the size the driver chose: Linux sizes
        // indirect tables by the device's segment limit, and may have shrunk the ring when
        // memory was short.
        let limit = u32::from(self.max_size);
        if entries > limit {
            return Err(QueueError::ChainTooLong { head, limit });
        }
        let mut i = 0u16;
        let mut seen = 0u32;
        loop {
            seen += 1;
            if seen > entries {
                return Err(QueueError::ChainTooLong {
                    head,
                    limit: entries,
                });
            }
            let d = Self::read_desc(mem, desc.addr, i)?;
            if d.flags & DESC_F_INDIRECT != 0 {
                return Err(QueueError::BadIndirect {
                    head,
                    reason: "has a table holding another indirect descriptor",
                });
            }
            buffers.push(checked_buffer(mem, i, &d)?);
            if d.flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            if u32::from(d.next) >= entries {
                return Err(QueueError::DescriptorIndex {
                    index: d.next,
                    table_len: entries,
                });
            }
            i = d.next;
        }
    }

    /// Puts back the last `count` chains [`pop`](Self::pop) took and no used entry returned:
    /// the next pops take them again, re-read from guest RAM. For a device that found it
    /// cannot use them yet (a received frame larger than the buffers posted so far).
    pub fn unpop(&mut self, count: u16) {
        self.state.next_avail = self.state.next_avail.wrapping_sub(count);
    }

    /// Returns chain `head` to the driver, `written` bytes written into its device-writable
    /// buffers: the used element first, then (after a Release fence) the used index.
    pub fn add_used(
        &mut self,
        mem: &GuestMemory,
        head: u16,
        written: u32,
    ) -> Result<(), QueueError> {
        self.check_rings(mem)?;
        let size = self.state.size;
        if head >= size {
            return Err(QueueError::DescriptorIndex {
                index: head,
                table_len: u32::from(size),
            });
        }
        let slot = u64::from(self.state.next_used % size);
        let elem = self.state.used_ring + 4 + 8 * slot;
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        raw[4..].copy_from_slice(&written.to_le_bytes());
        mem.write(elem, &raw)
            .map_err(|_| QueueError::RingOutsideRam {
                ring: "used ring",
                gpa: elem,
                len: 8,
            })?;
        // The element must be visible before the index that publishes it.
        fence(Ordering::Release);
        self.state.next_used = self.state.next_used.wrapping_add(1);
        self.write_u16(
            mem,
            "used ring",
            self.state.used_ring + 2,
            self.state.next_used,
        )
    }

    /// Whether the driver wants an interrupt for the used entries added since the last
    /// call: with `EVENT_IDX`, whether `used_event` lies among them; otherwise unless the
    /// driver set `NO_INTERRUPT`.
    pub fn should_notify(&mut self, mem: &GuestMemory) -> Result<bool, QueueError> {
        self.check_rings(mem)?;
        // The used index written before must be ordered before the driver's flags are read.
        fence(Ordering::SeqCst);
        let new = self.state.next_used;
        if !self.state.event_idx {
            let flags = self.read_u16(mem, "available ring", self.state.avail_ring)?;
            return Ok(flags & AVAIL_F_NO_INTERRUPT == 0);
        }
        let used_event_at = self.state.avail_ring + 4 + 2 * u64::from(self.state.size);
        let used_event = self.read_u16(mem, "available ring", used_event_at)?;
        let old = self.state.signalled_used.replace(new);
        Ok(match old {
            // vring_need_event: used_event in [old, new).
            Some(old) => new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old),
            None => true,
        })
    }
}

/// A descriptor as the driver wrote it.
struct Descriptor {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// `desc` (number `index` in its table) as a buffer, if it lies in guest RAM.
fn checked_buffer(mem: &GuestMemory, index: u16, desc: &Descriptor) -> Result<Buffer, QueueError> {
    if !mem.contains(desc.addr, u64::from(desc.len)) {
        return Err(QueueError::BufferOutsideRam {
            index,
            addr: desc.addr,
            len: desc.len,
        });
    }
    Ok(Buffer {
        addr: desc.addr,
        len: desc.len,
        device_writable: desc.flags & DESC_F_WRITE != 0,
    })
}

#[cfg(test)]
pub(crate) mod tests;
