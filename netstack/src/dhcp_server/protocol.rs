//! The server without sockets: the lease pool and the answer to each client message.
//!
//! [`Responder::handle`] takes the UDP payload a client sent and the time, updates the pool
//! and returns the reply to broadcast, if any (RFC 2131 §4.3):
//!
//! - **DISCOVER** → OFFER of the client's current or previous address, else the address it
//!   asks for when that is free in the pool, else the lowest never-used free address, else
//!   the one free the longest. The offered address is held for the client for
//!   [`OFFER_HOLD_SECS`]. No free address: no OFFER, counted in
//!   [`DhcpServerStats::pool_exhausted`].
//! - **REQUEST** naming this server (SELECTING) → ACK when the requested address is free or
//!   the client's own, else NAK. Naming another server: the client took another offer, ours
//!   is released, nothing is sent.
//! - **REQUEST** without a server identifier (INIT-REBOOT with the requested address, RENEWING
//!   and REBINDING with `ciaddr`) → ACK (the lease is extended) when the address is the
//!   client's or free in the pool; NAK when it is in the subnet but not the client's, or
//!   when an INIT-REBOOT client asks for an address of another network (this server is the
//!   only one on the internal network, so the client must start over); silence for a
//!   RENEWING client from another network.
//! - **RELEASE** frees the client's lease (the address is remembered as its previous one);
//!   **DECLINE** (another host answered ARP for the address) keeps the address out of the
//!   pool for [`DECLINE_HOLD_SECS`]; neither is answered.
//! - **INFORM** → ACK with the subnet mask and no address or lease.
//!
//! Malformed messages, server messages (BOOTREPLY), relayed ones (`giaddr` set: the internal
//! network has no relay), clients with a non-unicast hardware address and messages for
//! another server are ignored and counted in [`DhcpServerStats::ignored`]. Nothing here
//! panics on any input.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, EthernetAddress, Ipv4Address, Ipv4Cidr,
};

use super::{DhcpServerConfig, Lease};

/// How long an offered address stays reserved for the client it was offered to.
pub const OFFER_HOLD_SECS: u64 = 60;
/// How long a declined address is kept out of the pool.
pub const DECLINE_HOLD_SECS: u64 = 600;
/// The shortest lease given, whatever the configuration says (a zero lease would have clients
/// renew in a loop).
pub const MIN_LEASE_SECS: u32 = 60;
/// At most this many addresses of a configured pool are handed out, from its first one: the
/// table holds one entry per address, so this bounds its memory.
pub const MAX_POOL_ADDRESSES: u32 = 4096;

/// DHCP option codes smoltcp's `DhcpRepr` does not emit itself (RFC 2132 §9.11, §9.12).
const OPT_RENEWAL_TIME: u8 = 58;
const OPT_REBINDING_TIME: u8 = 59;

/// BOOTP's minimum message size (RFC 1542 §2.1): some clients drop shorter replies.
const MIN_REPLY_LEN: usize = 300;

/// What the server has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DhcpServerStats {
    /// Messages received on port 67, whatever became of them.
    pub received: u64,
    /// OFFERs sent.
    pub offers: u64,
    /// ACKs sent (new leases, renewals, INFORM answers).
    pub acks: u64,
    /// NAKs sent.
    pub naks: u64,
    /// Leases released by their clients.
    pub releases: u64,
    /// Addresses declined by clients (someone else uses them).
    pub declines: u64,
    /// DISCOVERs left unanswered because no address was free.
    pub pool_exhausted: u64,
    /// Messages ignored: malformed, not a client message, relayed, not for this server, or
    /// about a lease the client does not hold.
    pub ignored: u64,
    /// Replies the socket could not queue (its send buffer was full).
    pub send_failed: u64,
}

/// What an address of the pool is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Offered to `owner`, held until `until`.
    Offered,
    /// Leased to `owner` until `until`.
    Bound,
    /// Released by `owner`; free, remembered as its previous address.
    Released,
    /// Declined; out of the pool until `until`, no owner.
    Declined,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    owner: Option<EthernetAddress>,
    state: State,
    until: Instant,
}

impl Entry {
    /// Whether the address is taken at `now` (a lapsed offer or lease, or a release, leaves
    /// it free).
    fn is_live(&self, now: Instant) -> bool {
        match self.state {
            State::Offered | State::Bound | State::Declined => now < self.until,
            State::Released => false,
        }
    }
}

/// The pool's addresses and who holds them. Each client owns at most one entry.
#[derive(Debug)]
struct LeasePool {
    subnet: Ipv4Cidr,
    server: u32,
    first: u32,
    last: u32,
    entries: BTreeMap<u32, Entry>,
}

impl LeasePool {
    fn new(config: &DhcpServerConfig) -> LeasePool {
        let first = u32::from(config.pool_first);
        let last = u32::from(config.pool_last).min(first.saturating_add(MAX_POOL_ADDRESSES - 1));
        LeasePool {
            subnet: config.server.network(),
            server: u32::from(config.server.address()),
            first,
            last,
            entries: BTreeMap::new(),
        }
    }

    /// Whether `address` may ever be handed out.
    fn in_pool(&self, address: u32) -> bool {
        let ip = Ipv4Address::from(address);
        (self.first..=self.last).contains(&address)
            && address != self.server
            && self.subnet.contains_addr(&ip)
            && address != u32::from(self.subnet.address())
            && Some(ip) != self.subnet.broadcast()
    }

    /// Whether `client` may have `address` at `now`: it is in the pool, and free or the
    /// client's own.
    fn available_to(&self, address: u32, client: EthernetAddress, now: Instant) -> bool {
        self.in_pool(address)
            && match self.entries.get(&address) {
                None => true,
                Some(entry) if entry.state == State::Declined => !entry.is_live(now),
                Some(entry) => entry.owner == Some(client) || !entry.is_live(now),
            }
    }

    /// The address `client` holds or held (offered, bound, lapsed or released), if nobody
    /// took it since.
    fn address_of(&self, client: EthernetAddress) -> Option<u32> {
        self.entries
            .iter()
            .find(|(_, entry)| entry.owner == Some(client))
            .map(|(&address, _)| address)
    }

    /// The address to offer a client with nothing of its own: the lowest never-used one,
    /// else the one free the longest.
    fn pick_free(&self, now: Instant) -> Option<u32> {
        let never_used =
            (self.first..=self.last).find(|&a| self.in_pool(a) && !self.entries.contains_key(&a));
        never_used.or_else(|| {
            self.entries
                .iter()
                .filter(|(address, entry)| self.in_pool(**address) && !entry.is_live(now))
                .min_by_key(|(_, entry)| entry.until)
                .map(|(&address, _)| address)
        })
    }

    /// Gives `address` to `client` in `state` until `until`; its other entry, if any, goes.
    fn assign(&mut self, address: u32, client: EthernetAddress, state: State, until: Instant) {
        self.entries
            .retain(|&a, entry| a == address || entry.owner != Some(client));
        self.entries.insert(
            address,
            Entry {
                owner: Some(client),
                state,
                until,
            },
        );
    }

    /// The entry at `address` when `client` owns it as an offer or a lease (lapsed or not).
    fn held_by(&mut self, address: u32, client: EthernetAddress) -> Option<&mut Entry> {
        self.entries.get_mut(&address).filter(|entry| {
            entry.owner == Some(client) && matches!(entry.state, State::Offered | State::Bound)
        })
    }

    fn leases(&self, now: Instant) -> Vec<Lease> {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.state == State::Bound && entry.is_live(now))
            .filter_map(|(&address, entry)| {
                Some(Lease {
                    mac: entry.owner?,
                    address: Ipv4Address::from(address),
                    expires_in_secs: (entry.until - now).secs(),
                })
            })
            .collect()
    }
}

/// The reply to one client message, before it is encoded.
struct Reply {
    message_type: DhcpMessageType,
    your_ip: Ipv4Address,
    client_ip: Ipv4Address,
    /// With the subnet mask (OFFER, ACK).
    mask: bool,
    /// With the lease, renewal and rebinding times (OFFER, ACK of a lease).
    lease: bool,
}

/// The lease pool and the protocol over it, with its counters.
#[derive(Debug)]
pub struct Responder {
    config: DhcpServerConfig,
    lease_secs: u32,
    pool: LeasePool,
    stats: DhcpServerStats,
}

impl Responder {
    /// An empty pool for `config`.
    pub fn new(config: DhcpServerConfig) -> Responder {
        Responder {
            lease_secs: config.lease_secs.max(MIN_LEASE_SECS),
            pool: LeasePool::new(&config),
            config,
            stats: DhcpServerStats::default(),
        }
    }

    /// What it serves.
    pub fn config(&self) -> &DhcpServerConfig {
        &self.config
    }

    /// Its counters.
    pub fn stats(&self) -> DhcpServerStats {
        self.stats
    }

    /// Counts a reply the socket could not queue.
    pub(super) fn count_send_failure(&mut self) {
        self.stats.send_failed += 1;
    }

    /// The bound leases at `now`, in address order.
    pub fn leases(&self, now: Instant) -> Vec<Lease> {
        self.pool.leases(now)
    }

    /// Handles the UDP payload `message` a client sent to port 67 at `now`; returns the
    /// reply's UDP payload, to broadcast to port 68, if there is one.
    pub fn handle(&mut self, message: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.stats.received += 1;
        let Ok(packet) = DhcpPacket::new_checked(message) else {
            self.stats.ignored += 1;
            return None;
        };
        let Some(request) = parse_request(&packet) else {
            self.stats.ignored += 1;
            return None;
        };
        let reply = match request.message_type {
            DhcpMessageType::Discover => self.discover(&request, now),
            DhcpMessageType::Request => self.request(&request, now),
            DhcpMessageType::Release => self.release(&request, now),
            DhcpMessageType::Decline => self.decline(&request, now),
            DhcpMessageType::Inform => self.inform(&request),
            // parse_request lets client messages through only.
            _ => None,
        }?;
        let bytes = self.encode(&request, &reply)?;
        match reply.message_type {
            DhcpMessageType::Offer => self.stats.offers += 1,
            DhcpMessageType::Ack => self.stats.acks += 1,
            _ => self.stats.naks += 1,
        }
        Some(bytes)
    }

    fn discover(&mut self, request: &DhcpRepr<'_>, now: Instant) -> Option<Reply> {
        let client = request.client_hardware_address;
        let requested = request.requested_ip.map(u32::from);
        let Some(address) = self
            .pool
            .address_of(client)
            .filter(|&a| self.pool.available_to(a, client, now))
            .or(requested.filter(|&a| self.pool.available_to(a, client, now)))
            .or_else(|| self.pool.pick_free(now))
        else {
            self.stats.pool_exhausted += 1;
            return None;
        };
        // A live lease stays a lease (the client lost track of it); anything else becomes an
        // offer held for this client.
        let bound = self
            .pool
            .held_by(address, client)
            .is_some_and(|entry| entry.state == State::Bound && entry.is_live(now));
        if !bound {
            let hold = now + Duration::from_secs(OFFER_HOLD_SECS);
            self.pool.assign(address, client, State::Offered, hold);
        }
        Some(Reply {
            message_type: DhcpMessageType::Offer,
            your_ip: Ipv4Address::from(address),
            client_ip: Ipv4Address::UNSPECIFIED,
            mask: true,
            lease: true,
        })
    }

    fn request(&mut self, request: &DhcpRepr<'_>, now: Instant) -> Option<Reply> {
        let client = request.client_hardware_address;
        let ours = self.config.server.address();
        // `nak_foreign`: whether an address of another network gets a NAK (a client asking
        // for an address, not one renewing its own).
        let (address, nak_foreign) = match request.server_identifier {
            Some(server) if server != ours => {
                // The client took another server's offer: ours is free again.
                if let Some(address) = self.pool.address_of(client)
                    && let Some(entry) = self.pool.held_by(address, client)
                    && entry.state == State::Offered
                {
                    entry.state = State::Released;
                    entry.until = now;
                }
                self.stats.ignored += 1;
                return None;
            }
            Some(_) => (request.requested_ip, true),
            None if request.client_ip.is_unspecified() => (request.requested_ip, true),
            None => (Some(request.client_ip), false),
        };
        let Some(address) = address.filter(|a| !a.is_unspecified()) else {
            self.stats.ignored += 1;
            return None;
        };
        let raw = u32::from(address);
        if self.pool.available_to(raw, client, now) {
            let until = now + Duration::from_secs(u64::from(self.lease_secs));
            self.pool.assign(raw, client, State::Bound, until);
            return Some(Reply {
                message_type: DhcpMessageType::Ack,
                your_ip: address,
                client_ip: request.client_ip,
                mask: true,
                lease: true,
            });
        }
        if !nak_foreign && !self.config.server.contains_addr(&address) {
            // A renewing client of another network is not ours to refuse.
            self.stats.ignored += 1;
            return None;
        }
        Some(Reply {
            message_type: DhcpMessageType::Nak,
            your_ip: Ipv4Address::UNSPECIFIED,
            client_ip: Ipv4Address::UNSPECIFIED,
            mask: false,
            lease: false,
        })
    }

    fn release(&mut self, request: &DhcpRepr<'_>, now: Instant) -> Option<Reply> {
        let client = request.client_hardware_address;
        let address = u32::from(request.client_ip);
        match self
            .for_us(request)
            .then(|| self.pool.held_by(address, client))
        {
            Some(Some(entry)) => {
                entry.state = State::Released;
                entry.until = now;
                self.stats.releases += 1;
            }
            _ => self.stats.ignored += 1,
        }
        None
    }

    fn decline(&mut self, request: &DhcpRepr<'_>, now: Instant) -> Option<Reply> {
        let client = request.client_hardware_address;
        let address = request.requested_ip.map_or(0, u32::from);
        match self
            .for_us(request)
            .then(|| self.pool.held_by(address, client))
        {
            Some(Some(entry)) => {
                *entry = Entry {
                    owner: None,
                    state: State::Declined,
                    until: now + Duration::from_secs(DECLINE_HOLD_SECS),
                };
                self.stats.declines += 1;
            }
            _ => self.stats.ignored += 1,
        }
        None
    }

    fn inform(&mut self, request: &DhcpRepr<'_>) -> Option<Reply> {
        if !self.config.server.contains_addr(&request.client_ip) {
            self.stats.ignored += 1;
            return None;
        }
        Some(Reply {
            message_type: DhcpMessageType::Ack,
            your_ip: Ipv4Address::UNSPECIFIED,
            client_ip: request.client_ip,
            mask: true,
            lease: false,
        })
    }

    /// Whether a RELEASE or DECLINE is meant for this server (clients must name it; one that
    /// does not is taken at its word as ours, the only server on the network).
    fn for_us(&self, request: &DhcpRepr<'_>) -> bool {
        request
            .server_identifier
            .is_none_or(|server| server == self.config.server.address())
    }

    fn encode(&self, request: &DhcpRepr<'_>, reply: &Reply) -> Option<Vec<u8>> {
        let renewal = (self.lease_secs / 2).to_be_bytes();
        let rebinding = (self.lease_secs / 8 * 7).to_be_bytes();
        let times = [
            DhcpOption {
                kind: OPT_RENEWAL_TIME,
                data: &renewal,
            },
            DhcpOption {
                kind: OPT_REBINDING_TIME,
                data: &rebinding,
            },
        ];
        let repr = DhcpRepr {
            message_type: reply.message_type,
            transaction_id: request.transaction_id,
            secs: 0,
            client_hardware_address: request.client_hardware_address,
            client_ip: reply.client_ip,
            your_ip: reply.your_ip,
            server_ip: Ipv4Address::UNSPECIFIED,
            router: None,
            subnet_mask: reply.mask.then(|| self.config.server.netmask()),
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: request.broadcast,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(self.config.server.address()),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: reply.lease.then_some(self.lease_secs),
            renew_duration: None,
            rebind_duration: None,
            additional_options: if reply.lease { &times } else { &[] },
        };
        let mut bytes = vec![0; repr.buffer_len().max(MIN_REPLY_LEN)];
        // The buffer is as long as `buffer_len` says the message is, so emitting cannot run
        // out of room; were it to, the truncated message is not sent.
        repr.emit(&mut DhcpPacket::new_unchecked(&mut bytes[..]))
            .ok()
            .map(|()| bytes)
    }
}

/// A client message (DISCOVER, REQUEST, DECLINE, RELEASE, INFORM) from a directly attached
/// client with a unicast hardware address; `None` for anything else.
fn parse_request<'a>(packet: &'a DhcpPacket<&'a [u8]>) -> Option<DhcpRepr<'a>> {
    let request = DhcpRepr::parse(packet).ok()?;
    let client_message = matches!(
        request.message_type,
        DhcpMessageType::Discover
            | DhcpMessageType::Request
            | DhcpMessageType::Decline
            | DhcpMessageType::Release
            | DhcpMessageType::Inform
    );
    let client = request.client_hardware_address;
    (client_message
        && request.relay_agent_ip.is_unspecified()
        && client.is_unicast()
        && client.0 != [0; 6])
        .then_some(request)
}
