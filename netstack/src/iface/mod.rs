//! The smoltcp interface: addressing (DHCPv4 or static), ICMP echo, and the socket set.
//!
//! [`NetStack`] owns one smoltcp [`Interface`] on the NIC the kernel hands in (any
//! [`Device`] with an Ethernet medium) and the [`SocketSet`] every socket of the management
//! plane lives in: the DHCPv4 client socket here, the TCP sockets of
//! [`HttpServer`](crate::http::server::HttpServer) next door. The kernel calls
//! [`NetStack::poll`] with the current time whenever the NIC has frames or
//! [`NetStack::poll_delay`] has passed; the HTTP server polls its sockets after it (see
//! [`HttpServer::serve`](crate::http::server::HttpServer::serve), which does both).
//!
//! **Addressing** ([`Addressing`]): DHCPv4 by default. On a lease the interface gets the
//! address and the default route through the offered router; a renewed lease with different
//! values replaces them; when the lease is lost (expired without renewal) both are removed.
//! Renewal and rebinding are smoltcp's DHCP client's. A static address is set once at
//! creation. Either way [`NetStack::status`] says what the interface has, and
//! [`NetStack::take_event`] hands out lease changes for the console to print.
//!
//! **ICMP**: echo requests to the interface's address are answered by smoltcp's interface
//! itself (its IPv4 input replies to every `EchoRequest`; the `socket-icmp` feature only adds
//! ICMP sockets on top and does not switch that off), so `ping` works with no socket here.
//!
//! Nothing here reads a clock: every call takes the time as a smoltcp [`Instant`].

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{Device, Medium};
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

#[cfg(test)]
mod tests;

/// How the interface gets its IPv4 address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Addressing {
    /// A DHCPv4 client (the default).
    #[default]
    Dhcp,
    /// A fixed address.
    Static(StaticAddress),
}

impl Addressing {
    /// The addressing a configuration's `network` section asks for: DHCP, or the static
    /// address, prefix, gateway and DNS servers. The configuration was validated when it was
    /// loaded or saved; a static section without address or prefix (or with a prefix over
    /// 32) is still an error here rather than a panic.
    pub fn from_config(network: &keel_config::schema::Network) -> Result<Addressing, NetError> {
        match network.mode {
            keel_config::schema::NetworkMode::Dhcp => Ok(Addressing::Dhcp),
            keel_config::schema::NetworkMode::Static => {
                let (Some(address), Some(prefix)) = (network.address, network.prefix) else {
                    return Err(NetError::IncompleteStatic);
                };
                if prefix > 32 {
                    return Err(NetError::InvalidPrefix(prefix));
                }
                Ok(Addressing::Static(StaticAddress {
                    address: Ipv4Cidr::new(address, prefix),
                    gateway: network.gateway,
                    dns: network.dns.clone(),
                }))
            }
        }
    }
}

/// A static IPv4 configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticAddress {
    /// The address and prefix length, e.g. `192.168.1.20/24`.
    pub address: Ipv4Cidr,
    /// The default gateway, if any.
    pub gateway: Option<Ipv4Address>,
    /// DNS servers (reported only: nothing here resolves names).
    pub dns: Vec<Ipv4Address>,
}

/// What [`NetStack::new`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The NIC's MAC address (must be unicast).
    pub mac: EthernetAddress,
    /// DHCP or static.
    pub addressing: Addressing,
    /// Seed for smoltcp's TCP initial sequence numbers and ephemeral ports; should differ
    /// on every boot (e.g. from RDRAND or the TSC).
    pub random_seed: u64,
}

impl NetConfig {
    /// `addressing` on the NIC with this MAC.
    pub fn new(mac: EthernetAddress, addressing: Addressing, random_seed: u64) -> NetConfig {
        NetConfig {
            mac,
            addressing,
            random_seed,
        }
    }

    /// DHCP on the NIC with this MAC.
    pub fn dhcp(mac: EthernetAddress, random_seed: u64) -> NetConfig {
        NetConfig {
            mac,
            addressing: Addressing::Dhcp,
            random_seed,
        }
    }
}

/// What the interface has right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetStatus {
    /// The NIC's MAC address.
    pub mac: EthernetAddress,
    /// Whether the address comes from DHCP.
    pub dhcp: bool,
    /// The IPv4 address and prefix; `None` while DHCP has no lease.
    pub address: Option<Ipv4Cidr>,
    /// The default gateway.
    pub gateway: Option<Ipv4Address>,
    /// DNS servers from the lease or the static configuration.
    pub dns: Vec<Ipv4Address>,
    /// How many times a lease was acquired, changed or lost since boot.
    pub lease_events: u32,
}

/// A change of address the console should tell the operator about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A DHCP lease was acquired, or renewed with different values.
    LeaseAcquired {
        /// The leased address and prefix.
        address: Ipv4Cidr,
        /// The router, if the server named one.
        gateway: Option<Ipv4Address>,
    },
    /// The DHCP lease was lost: the interface has no address until the next one.
    LeaseLost,
}

impl fmt::Display for NetEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetEvent::LeaseAcquired {
                address,
                gateway: Some(gateway),
            } => write!(f, "DHCP lease {address}, gateway {gateway}"),
            NetEvent::LeaseAcquired {
                address,
                gateway: None,
            } => write!(f, "DHCP lease {address}, no gateway"),
            NetEvent::LeaseLost => f.write_str("DHCP lease lost"),
        }
    }
}

/// Why [`NetStack::new`] refused a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The device does not carry Ethernet frames.
    #[error("the network device is not an Ethernet device")]
    NotEthernet,
    /// The MAC address is multicast, broadcast or all zeroes.
    #[error("MAC address {0} is not unicast")]
    InvalidMac(EthernetAddress),
    /// The static address is not a usable unicast host address.
    #[error("static address {0} is not a unicast host address")]
    InvalidStaticAddress(Ipv4Cidr),
    /// The static gateway is not a unicast address.
    #[error("gateway {0} is not a unicast address")]
    InvalidGateway(Ipv4Address),
    /// Static addressing without an address or prefix.
    #[error("static addressing needs network.address and network.prefix in the configuration")]
    IncompleteStatic,
    /// A prefix length over 32.
    #[error("prefix length {0} is over 32")]
    InvalidPrefix(u8),
}

/// Pending [`NetEvent`]s kept for [`NetStack::take_event`]; older ones are dropped.
const MAX_EVENTS: usize = 16;

/// The interface, its sockets and its addressing.
pub struct NetStack {
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    status: NetStatus,
    events: VecDeque<NetEvent>,
}

impl fmt::Debug for NetStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetStack")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl NetStack {
    /// Sets up the interface on `device` at time `now`. With [`Addressing::Dhcp`] the first
    /// DHCP discover goes out on the first [`poll`](Self::poll).
    pub fn new<D: Device + ?Sized>(
        config: NetConfig,
        device: &mut D,
        now: Instant,
    ) -> Result<NetStack, NetError> {
        // smoltcp's `Interface::new` asserts both; check them first so bad input is an error.
        if device.capabilities().medium != Medium::Ethernet {
            return Err(NetError::NotEthernet);
        }
        if !config.mac.is_unicast() || config.mac.0 == [0; 6] {
            return Err(NetError::InvalidMac(config.mac));
        }
        let mut iface_config = Config::new(HardwareAddress::Ethernet(config.mac));
        iface_config.random_seed = config.random_seed;
        let mut iface = Interface::new(iface_config, device, now);
        let mut sockets = SocketSet::new(Vec::new());
        let mut status = NetStatus {
            mac: config.mac,
            dhcp: false,
            address: None,
            gateway: None,
            dns: Vec::new(),
            lease_events: 0,
        };
        let dhcp = match config.addressing {
            Addressing::Dhcp => {
                status.dhcp = true;
                Some(sockets.add(dhcpv4::Socket::new()))
            }
            Addressing::Static(fixed) => {
                if !usable_host(fixed.address) {
                    return Err(NetError::InvalidStaticAddress(fixed.address));
                }
                if let Some(gateway) = fixed.gateway
                    && !is_unicast(gateway)
                {
                    return Err(NetError::InvalidGateway(gateway));
                }
                set_address(&mut iface, Some(fixed.address), fixed.gateway);
                status.address = Some(fixed.address);
                status.gateway = fixed.gateway;
                status.dns = fixed.dns;
                None
            }
        };
        Ok(NetStack {
            iface,
            sockets,
            dhcp,
            status,
            events: VecDeque::new(),
        })
    }

    /// Receives and sends what is due at `now`: frames from `device` go to the sockets,
    /// the sockets' output goes to `device`, the DHCP client's lease changes are applied.
    /// Returns whether anything happened that socket users (the HTTP server) should look at.
    pub fn poll<D: Device + ?Sized>(&mut self, now: Instant, device: &mut D) -> bool {
        let changed = self.iface.poll(now, device, &mut self.sockets);
        let dhcp = self.apply_dhcp();
        changed == PollResult::SocketStateChanged || dhcp
    }

    /// How long the caller may sleep before [`poll`](Self::poll) is due again, unless a frame
    /// arrives first. `None`: no timer is pending (sleep until a frame arrives).
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.iface.poll_delay(now, &self.sockets)
    }

    /// The current address, gateway and DNS servers.
    pub fn status(&self) -> &NetStatus {
        &self.status
    }

    /// The oldest lease change not yet taken, for the console.
    pub fn take_event(&mut self) -> Option<NetEvent> {
        self.events.pop_front()
    }

    /// The socket set; the HTTP server adds its sockets here.
    pub fn sockets_mut(&mut self) -> &mut SocketSet<'static> {
        &mut self.sockets
    }

    /// The smoltcp interface (e.g. for `connect`ing a client socket in tests).
    pub fn interface_mut(&mut self) -> &mut Interface {
        &mut self.iface
    }

    /// Both at once, for code that needs the interface context while using a socket.
    pub fn parts_mut(&mut self) -> (&mut Interface, &mut SocketSet<'static>) {
        (&mut self.iface, &mut self.sockets)
    }

    /// Applies the DHCP client's news, if any. Returns whether there was some.
    fn apply_dhcp(&mut self) -> bool {
        let Some(handle) = self.dhcp else {
            return false;
        };
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            None => return false,
            Some(dhcpv4::Event::Configured(lease)) => LeaseChange::Acquired {
                address: lease.address,
                gateway: lease.router,
                dns: lease.dns_servers.iter().copied().collect(),
            },
            // The client also says this once at start, before any lease: not news.
            Some(dhcpv4::Event::Deconfigured) if self.status.address.is_none() => return false,
            Some(dhcpv4::Event::Deconfigured) => LeaseChange::Lost,
        };
        self.apply_lease(event);
        true
    }

    fn apply_lease(&mut self, change: LeaseChange) {
        let event = match change {
            LeaseChange::Acquired {
                address,
                gateway,
                dns,
            } => {
                set_address(&mut self.iface, Some(address), gateway);
                self.status.address = Some(address);
                self.status.gateway = gateway;
                self.status.dns = dns;
                NetEvent::LeaseAcquired { address, gateway }
            }
            LeaseChange::Lost => {
                set_address(&mut self.iface, None, None);
                self.status.address = None;
                self.status.gateway = None;
                self.status.dns.clear();
                NetEvent::LeaseLost
            }
        };
        self.status.lease_events = self.status.lease_events.saturating_add(1);
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

/// A DHCP client event, copied out of the socket's borrowed `Config`.
enum LeaseChange {
    Acquired {
        address: Ipv4Cidr,
        gateway: Option<Ipv4Address>,
        dns: Vec<Ipv4Address>,
    },
    Lost,
}

fn is_unicast(address: Ipv4Address) -> bool {
    !(address.is_broadcast() || address.is_multicast() || address.is_unspecified())
}

/// A unicast address that is neither the network nor the broadcast address of its subnet
/// (/31 and /32 have neither).
fn usable_host(cidr: Ipv4Cidr) -> bool {
    let host = cidr.address();
    is_unicast(host)
        && (cidr.prefix_len() >= 31
            || host != cidr.network().address() && Some(host) != cidr.broadcast())
}

/// Makes `address` the interface's only address and `gateway` its default route; `None`
/// removes them.
fn set_address(iface: &mut Interface, address: Option<Ipv4Cidr>, gateway: Option<Ipv4Address>) {
    iface.update_ip_addrs(|addrs| {
        addrs.clear();
        if let Some(address) = address {
            // Cannot fail: the list was just emptied and holds at least one address.
            let _ = addrs.push(IpCidr::Ipv4(address));
        }
    });
    match gateway {
        // Cannot fail: the default route replaces the previous one, and it is the only
        // route this module adds.
        Some(gateway) => {
            let _ = iface.routes_mut().add_default_ipv4_route(gateway);
        }
        None => {
            iface.routes_mut().remove_default_ipv4_route();
        }
    }
}
