//! The appliance's interface on the `internal` switch: a second smoltcp stack with the static
//! address of the configuration's `network.internal` (no DHCP client; it answers ping), and
//! the DHCP server (`keel_netstack::dhcp_server`) that hands guests on `internal` their
//! addresses when `network.internal.dhcp` is on.
//!
//! It needs no physical NIC: guests on `internal` reach each other and the appliance whether
//! or not the host has one. Its MAC is derived like a guest NIC's from the hostname, with an
//! empty VM name, which no VM can have, so it never equals a guest's derived MAC.

use alloc::vec::Vec;

use keel_config::schema::{InternalNetwork, NicNetwork};
use keel_netstack::dhcp_server::{DhcpConfigError, DhcpServer, DhcpServerConfig, Lease};
use keel_netstack::iface::{Addressing, NetConfig, NetError, NetStack, StaticAddress};
use keel_netstack::switch::{PortDevice, PortKind};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, Ipv4Cidr};

use super::switches::Switches;

/// Why the internal interface could not come up (guests on `internal` still reach each
/// other; the appliance does not answer there).
#[derive(Debug, thiserror::Error)]
pub enum InternalNetError {
    /// smoltcp refused the address or the MAC.
    #[error("internal network {address}: {error}; fix network.internal (config set) and reboot")]
    Stack {
        /// The configured address.
        address: Ipv4Cidr,
        /// Why.
        error: NetError,
    },
    /// The subnet leaves no room for the DHCP pool.
    #[error(
        "internal network {address}: no DHCP server: {error}; widen network.internal.prefix \
         or set network.internal.dhcp = false"
    )]
    Dhcp {
        /// The configured address.
        address: Ipv4Cidr,
        /// Why.
        error: DhcpConfigError,
    },
}

/// The appliance's interface on `internal`, with its DHCP server.
pub struct InternalNet {
    device: PortDevice,
    stack: NetStack,
    dhcp: Option<DhcpServer>,
    address: Ipv4Cidr,
    mac: EthernetAddress,
}

impl InternalNet {
    /// Attaches the appliance's port to the `internal` switch in `switches` and brings up
    /// `config`'s address on it (and the DHCP server when `config.dhcp`).
    pub fn start(
        switches: &spin::Mutex<Switches>,
        hostname: &str,
        config: &InternalNetwork,
        now: Instant,
    ) -> Result<InternalNet, InternalNetError> {
        let address = Ipv4Cidr::new(config.address, config.prefix);
        let mac = EthernetAddress(keel_config::mac::derived_mac(hostname, "", 0).0);
        let dhcp_config = if config.dhcp {
            Some(
                DhcpServerConfig::for_subnet(address)
                    .map_err(|error| InternalNetError::Dhcp { address, error })?,
            )
        } else {
            None
        };
        let handle = switches
            .lock()
            .add_port(NicNetwork::Internal, PortKind::Appliance, Some(mac));
        let mut device = PortDevice::new(handle);
        let addressing = Addressing::Static(StaticAddress {
            address,
            gateway: None,
            dns: Vec::new(),
        });
        let seed = crate::arch::cpu::rdtsc() ^ 0x696e_7465_726e_616c;
        let mut stack = NetStack::new(NetConfig::new(mac, addressing, seed), &mut device, now)
            .map_err(|error| InternalNetError::Stack { address, error })?;
        let dhcp = dhcp_config.map(|c| DhcpServer::new(c, stack.sockets_mut()));
        Ok(InternalNet {
            device,
            stack,
            dhcp,
            address,
            mac,
        })
    }

    /// Takes the frames the switch delivered to the appliance's port, answers ping, ARP and
    /// DHCP, and hands the replies to the port. Returns whether anything happened.
    pub fn poll(&mut self, now: Instant) -> bool {
        let mut any = self.stack.poll(now, &mut self.device);
        if let Some(dhcp) = self.dhcp.as_mut() {
            dhcp.poll(self.stack.sockets_mut(), now);
            // The server's replies wait in its socket: send them now, not a pass later.
            any |= self.stack.poll(now, &mut self.device);
        }
        any
    }

    /// The interface's address and prefix.
    pub fn address(&self) -> Ipv4Cidr {
        self.address
    }

    /// The interface's MAC.
    pub fn mac(&self) -> EthernetAddress {
        self.mac
    }

    /// Whether the DHCP server runs.
    pub fn dhcp(&self) -> bool {
        self.dhcp.is_some()
    }

    /// The DHCP server's leases (none when it does not run).
    pub fn leases(&self, now: Instant) -> Vec<Lease> {
        self.dhcp
            .as_ref()
            .map(|d| d.leases(now))
            .unwrap_or_default()
    }
}
