//! A small DHCPv4 server for the internal network (RFC 2131, server side).
//!
//! Guests on the `internal` switch get their addresses from the appliance's interface on that
//! switch. The server is split in two:
//!
//! - [`protocol`]: the lease pool and the answers to DISCOVER, REQUEST, RELEASE, DECLINE and
//!   INFORM, from message bytes to reply bytes, with no socket and no clock (time is passed
//!   in), so every case runs in host tests;
//! - [`DhcpServer`] (in `socket.rs`): the glue to a smoltcp UDP socket on port 67 in the
//!   interface's [`SocketSet`](smoltcp::iface::SocketSet). Every reply is broadcast to
//!   `255.255.255.255:68` (smoltcp sends an IPv4 broadcast as an Ethernet broadcast), which
//!   reaches clients that have no address yet without ARP.
//!
//! What it hands out: an address from the pool, the subnet mask, the server identifier, the
//! lease time and its renewal (T1 = ½) and rebinding (T2 = ⅞) times. No router and no DNS
//! servers: the internal network reaches only guests and the appliance, so a guest that also
//! has a bridged NIC keeps that NIC's default route.
//!
//! Leases are keyed by the client's hardware address (`chaddr`) and live in memory only. The
//! server is authoritative for its subnet (it is the only one on the internal network): a
//! client asking for a free pool address it held before an appliance restart gets it back,
//! one asking for an address that is not its own gets a NAK and starts over.

use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

pub mod protocol;
mod socket;

#[cfg(test)]
mod tests;

pub use protocol::DhcpServerStats;
pub use socket::DhcpServer;

/// The first and last host numbers of the pool [`DhcpServerConfig::for_subnet`] picks
/// (`.100` to `.199` of a /24).
const POOL_HOSTS: (u32, u32) = (100, 199);

/// The lease time [`DhcpServerConfig::for_subnet`] picks: one hour.
pub const DEFAULT_LEASE_SECS: u32 = 3600;

/// What the server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpServerConfig {
    /// The appliance's address on the internal network and its prefix, e.g. `10.99.0.1/24`:
    /// the server identifier, and the subnet whose mask clients get.
    pub server: Ipv4Cidr,
    /// The first address handed out.
    pub pool_first: Ipv4Address,
    /// The last address handed out (inclusive). Addresses of the pool outside `server`'s
    /// subnet, its network and broadcast addresses and the server's own are never handed out.
    pub pool_last: Ipv4Address,
    /// How long a lease lasts, in seconds (at least [`protocol::MIN_LEASE_SECS`] is given).
    pub lease_secs: u32,
}

impl DhcpServerConfig {
    /// The server at `server` with the pool of host numbers 100 to 199 of its subnet (clipped
    /// to the subnet: `.100`–`.126` on a /25) and one-hour leases.
    pub fn for_subnet(server: Ipv4Cidr) -> Result<Self, DhcpConfigError> {
        let prefix = server.prefix_len();
        if prefix > 30 {
            return Err(DhcpConfigError::SubnetTooSmall(server));
        }
        let network = u32::from(server.network().address());
        let broadcast = network | (u32::MAX >> prefix);
        let own = u32::from(server.address());
        if own == network || own == broadcast {
            return Err(DhcpConfigError::NotAHostAddress(server));
        }
        // The last host number is `broadcast - 1`. (Saturating: a subnet at the top of the
        // address space.) A subnet with host number 100 has at least 127 hosts, so the pool
        // never consists of the server's own address alone.
        let first = network.saturating_add(POOL_HOSTS.0);
        if first >= broadcast {
            return Err(DhcpConfigError::SubnetTooSmall(server));
        }
        let last = network.saturating_add(POOL_HOSTS.1).min(broadcast - 1);
        Ok(DhcpServerConfig {
            server,
            pool_first: Ipv4Address::from(first),
            pool_last: Ipv4Address::from(last),
            lease_secs: DEFAULT_LEASE_SECS,
        })
    }
}

/// Why [`DhcpServerConfig::for_subnet`] refused an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpConfigError {
    /// The subnet has no host numbers from 100 up (it is smaller than a /25).
    #[error(
        "{0} has no host numbers 100 to 199 for the DHCP pool (a prefix of /25 or shorter has)"
    )]
    SubnetTooSmall(Ipv4Cidr),
    /// The server's address is its subnet's network or broadcast address.
    #[error("{0} is the network or broadcast address of its subnet, not a host address")]
    NotAHostAddress(Ipv4Cidr),
}

/// A bound lease, for the console and the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The client's hardware address.
    pub mac: EthernetAddress,
    /// The address it holds.
    pub address: Ipv4Address,
    /// Seconds until the lease ends unless the client renews it.
    pub expires_in_secs: u64,
}
