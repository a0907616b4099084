//! The software switch: connects guest NICs, the appliance's own interfaces and the physical
//! uplink at layer 2, like a Linux bridge or a vSwitch.
//!
//! Each network (`bridged`, `internal`) is one [`Switch`]. Whatever sits on a port — a
//! virtio-net device, a [`PortDevice`] under a smoltcp interface, [`pump_uplink`] for the
//! NIC — holds a [`PortHandle`] and exchanges whole Ethernet frames (no FCS) through the
//! port's two bounded queues. The kernel calls [`Switch::poll`] from its loop; nothing here
//! reads a clock or runs on its own.
//!
//! # Forwarding
//!
//! Source MACs are learnt per port (unicast only) and age out after
//! [`SwitchConfig::mac_aging`]; a known unicast destination goes to its port (dropped when
//! that is the port it came from: the destination already has it), broadcast, multicast and
//! unknown destinations are flooded to every other port. A frame never goes back to its
//! ingress port. Ports with a pinned source MAC (guests, the appliance) cannot send as
//! anyone else: such frames are dropped and counted at [`PortHandle::send`]. A pinned MAC is
//! always forwarded to its own port and never learnt on another (the uplink), so nothing on
//! the physical network can divert a guest's or the appliance's traffic: frames arriving from
//! another port with a pinned MAC as their source are dropped and counted as forged there.
//!
//! # Fairness: the bound
//!
//! Every queue is bounded ([`SwitchConfig::queue_frames`]) and every drop counted on the
//! port it happens at. One [`poll`](Switch::poll) takes at most
//! [`poll_budget`](SwitchConfig::poll_budget) frames from each port and forwards them
//! interleaved — the first frame of every port, then the second of every port, … — starting
//! one port further each poll. So, whatever the other ports do:
//!
//! - a frame at position `k` of its port's ingress queue is forwarded within
//!   `ceil(k / poll_budget)` polls (the first `poll_budget` in the next poll);
//! - one poll forwards at most `poll_budget × ports` frames, so its work is bounded;
//! - in an egress queue, a port's `i`-th frame of the poll is queued before any port's
//!   `i+1`-th: a flooding guest can fill another port's queue only with frames *after* the
//!   first frames of everyone else, so the appliance's interface gets its share of its own
//!   receive queue however hard a guest floods (if it drains its queue between polls);
//! - flooded frames (broadcast, multicast, unknown unicast) of one source port take at most a
//!   quarter of any egress queue: a flooding guest leaves three quarters of every other
//!   port's queue to the frames addressed to that port and to other stations' broadcasts.

mod device;
mod mac_table;
mod port;
#[cfg(test)]
mod tests;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, EthernetFrame};

pub use device::{PortDevice, PortRxToken, PortTxToken, pump_uplink};
pub use mac_table::MacEntry;
pub use port::{PortHandle, PortKind, PortStats};

use mac_table::MacTable;

/// The shortest frame a port takes: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// The longest frame a port takes: 1514 bytes and a VLAN tag, no FCS.
pub const MAX_FRAME: usize = 1518;

/// A switch's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Frames each port's queue holds, per direction (at least 1).
    pub queue_frames: usize,
    /// How long a learnt station is remembered without a frame from it.
    pub mac_aging: Duration,
    /// Stations the MAC table holds (at least 1); the least recently seen makes room.
    pub mac_table_size: usize,
    /// Frames taken from each port per [`Switch::poll`] (at least 1).
    pub poll_budget: usize,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            queue_frames: 128,
            mac_aging: Duration::from_secs(300),
            mac_table_size: 1024,
            poll_budget: 64,
        }
    }
}

/// A port as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortStatus {
    /// The port's number.
    pub id: u32,
    /// What is on it.
    pub kind: PortKind,
    /// The only source MAC the port may send from (`None`: any, the uplink).
    pub mac: Option<EthernetAddress>,
    /// Its counters.
    pub stats: PortStats,
}

/// A port as the switch keeps it.
#[derive(Debug)]
struct Port {
    kind: PortKind,
    handle: PortHandle,
}

/// One layer-2 network: ports, the MAC table, forwarding. See the [module](self) docs.
pub struct Switch {
    network: &'static str,
    config: SwitchConfig,
    /// In the order they were added.
    ports: Vec<Port>,
    next_port_id: u32,
    /// Index into `ports` of the port served first at the next poll.
    first_served: usize,
    macs: MacTable,
    /// Each port's frames of the current poll; kept to reuse the allocations.
    batches: Vec<VecDeque<Vec<u8>>>,
}

impl core::fmt::Debug for Switch {
    // Not the MAC table nor frames in flight: up to thousands of entries.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Switch")
            .field("network", &self.network)
            .field("config", &self.config)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl Switch {
    /// An empty switch for `network` (`"bridged"` or `"internal"`, for the operator).
    /// Zero limits in `config` are taken as 1.
    pub fn new(network: &'static str, config: SwitchConfig) -> Switch {
        let config = SwitchConfig {
            queue_frames: config.queue_frames.max(1),
            mac_table_size: config.mac_table_size.max(1),
            poll_budget: config.poll_budget.max(1),
            mac_aging: config.mac_aging,
        };
        Switch {
            network,
            config,
            ports: Vec::new(),
            next_port_id: 0,
            first_served: 0,
            macs: MacTable::new(config.mac_aging, config.mac_table_size),
            batches: Vec::new(),
        }
    }

    /// The network's name.
    pub fn network(&self) -> &'static str {
        self.network
    }

    /// Adds a port and returns its handle. `source_mac`: the only source MAC accepted from the
    /// port (guests, the appliance), frames from any other are dropped and counted as forged;
    /// `None` accepts any (the uplink).
    pub fn add_port(&mut self, kind: PortKind, source_mac: Option<EthernetAddress>) -> PortHandle {
        let mut id = self.next_port_id;
        // Ids wrap after four billion attachments; skip any still in use then.
        while self.ports.iter().any(|port| port.handle.id() == id) {
            id = id.wrapping_add(1);
        }
        self.next_port_id = id.wrapping_add(1);
        let handle = PortHandle::new(id, source_mac, self.config.queue_frames);
        self.ports.push(Port {
            kind,
            handle: handle.clone(),
        });
        handle
    }

    /// Forwards what the ports sent (see the [module](self) docs for the order and the
    /// bound), removes detached ports and forgets their stations, ages the MAC table.
    /// Returns whether any frame moved or any port went away.
    pub fn poll(&mut self, now: Instant) -> bool {
        let mut changed = self.remove_detached();
        self.macs.expire(now);
        let count = self.ports.len();
        if count == 0 {
            return changed;
        }
        let first = self.first_served % count;
        self.first_served = (first + 1) % count;

        self.batches.resize_with(count, VecDeque::new);
        for (port, batch) in self.ports.iter().zip(self.batches.iter_mut()) {
            port.handle.take_ingress(self.config.poll_budget, batch);
        }
        // Round robin, one frame per port per round.
        loop {
            let mut moved = false;
            for offset in 0..count {
                let index = (first + offset) % count;
                if let Some(frame) = self.batches[index].pop_front() {
                    self.forward(index, frame, now);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
            changed = true;
        }
        changed
    }

    /// Learns the source of `frame` from port `from` and queues it where it goes.
    fn forward(&mut self, from: usize, frame: Vec<u8>, now: Instant) {
        // `PortHandle::send` let in only frames of at least a header with a unicast source.
        let (source, destination) = {
            let ethernet = EthernetFrame::new_unchecked(&frame[..]);
            (ethernet.src_addr(), ethernet.dst_addr())
        };
        let from_id = self.ports[from].handle.id();
        // A MAC pinned to another port (a guest's, the appliance's) arriving here (from the
        // uplink) is the station's own frame echoed back by the physical network, or a
        // forgery there: either way not for the station, and its MAC must not move.
        if self
            .pinned_port(source)
            .is_some_and(|pinned| pinned != from)
        {
            self.ports[from].handle.count_forged_source();
            return;
        }
        self.macs.learn(source, from_id, now);
        if destination.is_unicast() {
            let to = match self.pinned_port(destination) {
                Some(pinned) => Some(pinned),
                None => self
                    .macs
                    .lookup(destination, now)
                    .and_then(|to_id| self.ports.iter().position(|port| port.handle.id() == to_id)),
            };
            if let Some(to) = to {
                if to != from {
                    self.ports[to].handle.queue_egress(frame, None);
                }
                return;
            }
        }
        self.flood(from, frame);
    }

    /// The index of the port whose only source MAC is `mac`.
    fn pinned_port(&self, mac: EthernetAddress) -> Option<usize> {
        self.ports
            .iter()
            .position(|port| port.handle.source_mac() == Some(mac))
    }

    /// Queues `frame` on every port but `from` (the last one gets the frame itself).
    fn flood(&self, from: usize, frame: Vec<u8>) {
        let source = Some(self.ports[from].handle.id());
        let mut targets = (0..self.ports.len())
            .filter(|&index| index != from)
            .peekable();
        while let Some(index) = targets.next() {
            let handle = &self.ports[index].handle;
            if targets.peek().is_some() {
                handle.queue_egress(frame.clone(), source);
            } else {
                handle.queue_egress(frame, source);
                return;
            }
        }
    }

    /// Drops the ports whose handles are all gone, with their stations and queued frames.
    fn remove_detached(&mut self) -> bool {
        let before = self.ports.len();
        let mut index = 0;
        while index < self.ports.len() {
            if self.ports[index].handle.is_detached() {
                let port = self.ports.remove(index);
                self.macs.flush_port(port.handle.id());
                // Keep the rotation on the port that was due next.
                if index < self.first_served {
                    self.first_served -= 1;
                }
            } else {
                index += 1;
            }
        }
        before != self.ports.len()
    }

    /// Whether a port has sent frames the next [`poll`](Self::poll) would forward (the
    /// kernel's loop polls again rather than sleeping).
    pub fn has_work(&self) -> bool {
        self.ports.iter().any(|port| port.handle.has_ingress())
    }

    /// Every attached port with its counters, in the order they were added.
    pub fn ports(&self) -> Vec<PortStatus> {
        self.ports
            .iter()
            .map(|port| PortStatus {
                id: port.handle.id(),
                kind: port.kind.clone(),
                mac: port.handle.source_mac(),
                stats: port.handle.stats(),
            })
            .collect()
    }

    /// The stations learnt and not aged out at `now`, by MAC.
    pub fn mac_table(&self, now: Instant) -> Vec<MacEntry> {
        self.macs.entries(now)
    }
}
