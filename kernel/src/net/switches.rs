//! The host's two guest switches (`keel_netstack::switch`): `bridged`, which joins guest
//! NICs, the appliance's management interface and the physical NIC (the uplink), and
//! `internal`, which joins guest NICs and the appliance's internal interface only.
//!
//! They live in [`crate::System`] behind a `spin::Mutex` because two clients of the main loop
//! reach them: the network planes (`crate::mgmt`, [`super::internal`]) add their ports at
//! start and the kernel's loop polls them every pass; the VM manager adds a port per guest NIC
//! whenever a VM starts or is restored — from the console, the API or autostart alike. The
//! lock is never held while a port's owner moves frames (ports have their own locks), so the
//! vCPU loop's transmits and the stacks' polls never wait on a switch.

use alloc::string::String;

use keel_config::schema::NicNetwork;
use keel_netstack::switch::{PortHandle, PortKind, Switch, SwitchConfig};
use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;

/// The `bridged` and `internal` switches.
pub struct Switches {
    bridged: Switch,
    internal: Switch,
}

impl Default for Switches {
    fn default() -> Self {
        Self::new()
    }
}

impl Switches {
    /// Both switches, with no ports yet.
    pub fn new() -> Switches {
        Switches {
            bridged: Switch::new(NicNetwork::Bridged.as_str(), SwitchConfig::default()),
            internal: Switch::new(NicNetwork::Internal.as_str(), SwitchConfig::default()),
        }
    }

    /// The switch of `network`.
    pub fn switch(&self, network: NicNetwork) -> &Switch {
        match network {
            NicNetwork::Bridged => &self.bridged,
            NicNetwork::Internal => &self.internal,
        }
    }

    fn switch_mut(&mut self, network: NicNetwork) -> &mut Switch {
        match network {
            NicNetwork::Bridged => &mut self.bridged,
            NicNetwork::Internal => &mut self.internal,
        }
    }

    /// Both switches, bridged first (the order `net` and the API show them in).
    pub fn all(&self) -> [&Switch; 2] {
        [&self.bridged, &self.internal]
    }

    /// A new port on `network`'s switch. `source_mac`: the only source MAC it may send from
    /// (`None`: any, for the uplink).
    pub fn add_port(
        &mut self,
        network: NicNetwork,
        kind: PortKind,
        source_mac: Option<EthernetAddress>,
    ) -> PortHandle {
        self.switch_mut(network).add_port(kind, source_mac)
    }

    /// A port for NIC `nic` of VM `vm` with MAC `mac` on `network`'s switch.
    pub fn add_guest_port(
        &mut self,
        network: NicNetwork,
        vm: &str,
        nic: usize,
        mac: [u8; 6],
    ) -> PortHandle {
        self.add_port(
            network,
            PortKind::Guest {
                vm: String::from(vm),
                nic,
            },
            Some(EthernetAddress(mac)),
        )
    }

    /// Forwards what waits on both switches (each bounded by its poll budget); returns
    /// whether any frame moved.
    pub fn poll(&mut self, now: Instant) -> bool {
        let bridged = self.bridged.poll(now);
        let internal = self.internal.poll(now);
        bridged | internal
    }
}
