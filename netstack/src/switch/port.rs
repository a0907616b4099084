//! A switch port: the two bounded frame queues between the switch and whatever sits on the
//! port (a guest NIC, the appliance's interface, the uplink NIC), and the port's counters.
//!
//! The queues live behind an `Arc<spin::Mutex<..>>` shared by the [`Switch`](super::Switch)
//! and every [`PortHandle`] clone, so the two sides may run on different CPUs. Locks are held
//! only to move one frame (or one poll's batch) in or out, never while a frame is delivered.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use smoltcp::wire::{EthernetAddress, EthernetFrame};
use spin::Mutex;

use super::{MAX_FRAME, MIN_FRAME};

/// What a port connects the switch to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// The physical NIC; `name` says which (`"e1000 52:54:00:12:34:56"`).
    Uplink {
        /// The NIC's driver and MAC, for the operator.
        name: String,
    },
    /// The appliance's own smoltcp interface on this switch.
    Appliance,
    /// NIC number `nic` of VM `vm`.
    Guest {
        /// The VM's name.
        vm: String,
        /// The NIC's index in the VM's `nics`.
        nic: usize,
    },
}

/// A port's counters. `rx` is what the port sent into the switch, `tx` what the switch
/// queued for the port (the port's point of view, like a physical switch's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames the port sent that the switch accepted.
    pub rx_frames: u64,
    /// Their bytes (Ethernet header included, no FCS).
    pub rx_bytes: u64,
    /// Frames the switch queued for the port.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames the port sent while its ingress queue was full (the switch is behind).
    pub dropped_ingress_full: u64,
    /// Frames for the port dropped because its egress queue was full (the port is behind).
    pub dropped_egress_full: u64,
    /// Frames the port sent with a source MAC other than its own, or (from the uplink) with
    /// the MAC of a guest or the appliance on another port.
    pub dropped_forged_source: u64,
    /// Frames the port sent that are not Ethernet frames: shorter than [`MIN_FRAME`], longer
    /// than [`MAX_FRAME`], or from a multicast or all-zero source; and, on the uplink, frames
    /// longer than the NIC can send.
    pub dropped_bad_frame: u64,
}

/// A frame waiting for the port, with where it came from when the switch flooded it.
struct EgressFrame {
    /// The ingress port's id, for a flooded frame (broadcast, multicast, unknown unicast);
    /// `None` for a frame forwarded to this port alone.
    flooded_from: Option<u32>,
    frame: Vec<u8>,
}

/// The state one port shares between the switch and its handles.
struct PortQueues {
    /// Port -> switch.
    ingress: VecDeque<Vec<u8>>,
    /// Switch -> port.
    egress: VecDeque<EgressFrame>,
    /// How many flooded frames of each source port wait in `egress` (few entries: one per
    /// port that flooded recently).
    flooded_waiting: Vec<(u32, usize)>,
    stats: PortStats,
}

impl PortQueues {
    /// Flooded frames from port `source` waiting in the egress queue.
    fn flooded_from(&self, source: u32) -> usize {
        self.flooded_waiting
            .iter()
            .find(|(port, _)| *port == source)
            .map_or(0, |&(_, count)| count)
    }

    /// Books `entry` into (`+1`) or out of (`-1`) the per-source flood counts.
    fn count_flooded(&mut self, entry: &EgressFrame, delta: isize) {
        let Some(source) = entry.flooded_from else {
            return;
        };
        match self
            .flooded_waiting
            .iter()
            .position(|(port, _)| *port == source)
        {
            Some(index) => {
                let count = &mut self.flooded_waiting[index].1;
                *count = count.saturating_add_signed(delta);
                if *count == 0 {
                    self.flooded_waiting.swap_remove(index);
                }
            }
            None if delta > 0 => self.flooded_waiting.push((source, 1)),
            None => {}
        }
    }
}

/// One end of a switch port, for the device on it (a virtio-net backend, a
/// [`PortDevice`](super::PortDevice), the uplink pump). Clones share the port; when the last
/// clone is dropped the port is detached and the switch removes it at its next poll.
#[derive(Clone)]
pub struct PortHandle {
    id: u32,
    /// The only source MAC accepted from this port; `None` accepts any (the uplink).
    source_mac: Option<EthernetAddress>,
    /// Frames each queue holds at most.
    queue_frames: usize,
    queues: Arc<Mutex<PortQueues>>,
}

impl core::fmt::Debug for PortHandle {
    // Not the queues: they hold whole frames.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PortHandle")
            .field("id", &self.id)
            .field("source_mac", &self.source_mac)
            .finish_non_exhaustive()
    }
}

/// Why a frame cannot enter the switch, whatever the queues hold.
fn is_bad_frame(frame: &[u8]) -> bool {
    if frame.len() < MIN_FRAME || frame.len() > MAX_FRAME {
        return true;
    }
    let source = EthernetFrame::new_unchecked(frame).src_addr();
    // A multicast source is not a station; an all-zero one is not an address at all.
    !source.is_unicast() || source.0 == [0; 6]
}

impl PortHandle {
    pub(super) fn new(id: u32, source_mac: Option<EthernetAddress>, queue_frames: usize) -> Self {
        PortHandle {
            id,
            source_mac,
            queue_frames,
            queues: Arc::new(Mutex::new(PortQueues {
                ingress: VecDeque::new(),
                egress: VecDeque::new(),
                flooded_waiting: Vec::new(),
                stats: PortStats::default(),
            })),
        }
    }

    /// The port's number: unique among its switch's ports, not reused before 2^32 more ports
    /// were added.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Hands `frame` (Ethernet header first, no FCS) to the switch. Returns false when it is
    /// dropped: its size or source is bad, its source MAC is not the port's, or the ingress
    /// queue is full; each counted in [`PortStats`].
    pub fn send(&self, frame: &[u8]) -> bool {
        let mut queues = self.queues.lock();
        if !self.admits(&mut queues, frame) {
            return false;
        }
        queues.ingress.push_back(frame.to_vec());
        true
    }

    /// [`send`](Self::send) for a frame already in its own buffer (no copy).
    pub(super) fn send_owned(&self, frame: Vec<u8>) -> bool {
        let mut queues = self.queues.lock();
        if !self.admits(&mut queues, &frame) {
            return false;
        }
        queues.ingress.push_back(frame);
        true
    }

    /// Whether `frame` may enter the ingress queue; counts it either way.
    fn admits(&self, queues: &mut PortQueues, frame: &[u8]) -> bool {
        if is_bad_frame(frame) {
            queues.stats.dropped_bad_frame += 1;
            return false;
        }
        if let Some(own) = self.source_mac
            && EthernetFrame::new_unchecked(frame).src_addr() != own
        {
            queues.stats.dropped_forged_source += 1;
            return false;
        }
        if queues.ingress.len() >= self.queue_frames {
            queues.stats.dropped_ingress_full += 1;
            return false;
        }
        queues.stats.rx_frames += 1;
        queues.stats.rx_bytes += frame.len() as u64;
        true
    }

    /// Whether [`send`](Self::send) would find room in the ingress queue now.
    pub(super) fn can_send(&self) -> bool {
        self.queues.lock().ingress.len() < self.queue_frames
    }

    /// Whether frames from the switch wait for the port.
    pub fn has_frames(&self) -> bool {
        !self.queues.lock().egress.is_empty()
    }

    /// Offers the oldest frame waiting for the port to `deliver`: when it returns true the
    /// frame is consumed, when false it stays first in line (e.g. the guest has posted no
    /// receive buffers yet). Returns false when no frame was waiting. `deliver` runs without
    /// the port's lock held, so it may use this handle.
    pub fn receive(&self, deliver: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let Some(entry) = self.take_entry() else {
            return false;
        };
        if !deliver(&entry.frame) {
            // Back to the head of the line. The switch may have queued more meanwhile, so the
            // queue can hold one more than its bound until this frame goes.
            let mut queues = self.queues.lock();
            queues.count_flooded(&entry, 1);
            queues.egress.push_front(entry);
        }
        true
    }

    /// The oldest frame waiting for the port, taken out of the queue.
    pub(super) fn take(&self) -> Option<Vec<u8>> {
        self.take_entry().map(|entry| entry.frame)
    }

    fn take_entry(&self) -> Option<EgressFrame> {
        let mut queues = self.queues.lock();
        let entry = queues.egress.pop_front()?;
        queues.count_flooded(&entry, -1);
        Some(entry)
    }

    /// Counts a frame the port could not pass on because it was bad for the device behind it.
    pub(super) fn count_bad_frame(&self) {
        self.queues.lock().stats.dropped_bad_frame += 1;
    }

    /// Counts a frame from the port whose source MAC belongs to another port.
    pub(super) fn count_forged_source(&self) {
        self.queues.lock().stats.dropped_forged_source += 1;
    }

    pub(super) fn source_mac(&self) -> Option<EthernetAddress> {
        self.source_mac
    }

    /// Up to `budget` frames from the ingress queue, oldest first (switch side).
    pub(super) fn take_ingress(&self, budget: usize, into: &mut VecDeque<Vec<u8>>) {
        let mut queues = self.queues.lock();
        let count = budget.min(queues.ingress.len());
        into.extend(queues.ingress.drain(..count));
    }

    /// Queues `frame` for the port (switch side); counts it, or counts the drop when the
    /// egress queue is full. A frame the switch flooded from port `flooded_from` is also
    /// dropped when that port's flooded frames already fill a quarter of the queue: a guest
    /// flooding broadcasts cannot crowd out the frames sent to this port alone (its TCP
    /// connections, DHCP replies) nor other stations' broadcasts (ARP).
    pub(super) fn queue_egress(&self, frame: Vec<u8>, flooded_from: Option<u32>) {
        let mut queues = self.queues.lock();
        let flood_share = (self.queue_frames / 4).max(1);
        let over_share =
            flooded_from.is_some_and(|source| queues.flooded_from(source) >= flood_share);
        if queues.egress.len() >= self.queue_frames || over_share {
            queues.stats.dropped_egress_full += 1;
            return;
        }
        queues.stats.tx_frames += 1;
        queues.stats.tx_bytes += frame.len() as u64;
        let entry = EgressFrame {
            flooded_from,
            frame,
        };
        queues.count_flooded(&entry, 1);
        queues.egress.push_back(entry);
    }

    /// Whether frames wait in the ingress queue for the switch.
    pub(super) fn has_ingress(&self) -> bool {
        !self.queues.lock().ingress.is_empty()
    }

    /// Whether the switch holds the only reference: every handle was dropped.
    pub(super) fn is_detached(&self) -> bool {
        Arc::strong_count(&self.queues) == 1
    }

    pub(super) fn stats(&self) -> PortStats {
        self.queues.lock().stats
    }
}
