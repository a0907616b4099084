//! Every network-class PCI function the host has, as `net` and `GET /api/v1/network` list
//! it, and which one carries management: the NIC `network.interface` names (by MAC or PCI
//! address), else the first one a driver brought up. Pure, host-tested; the probe in
//! [`crate::net`] records the facts, the console and the API add link state and the choice.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use keel_config::interface::InterfaceSelector;
use keel_config::schema::MacAddress;

/// PCI base class of network controllers.
pub const NETWORK_CLASS: u8 = 0x02;

/// What became of a NIC at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicState {
    /// Its driver brought it up.
    Up,
    /// Its driver recognised it but could not bring it up: why.
    Failed(String),
    /// Keel has no driver for it.
    NoDriver,
}

/// One network-class PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNic {
    /// PCI bus, device, function.
    pub pci: (u8, u8, u8),
    /// PCI vendor and device IDs.
    pub vendor_id: u16,
    /// PCI device ID.
    pub device_id: u16,
    /// Driver name (`virtio-net`, `e1000`, `e1000e`, `igb`), `None` without a driver.
    pub driver: Option<&'static str>,
    /// Station address, where the driver read one.
    pub mac: Option<[u8; 6]>,
    /// Up, failed or without a driver.
    pub state: NicState,
}

impl HostNic {
    /// `00:03.0`, as `pci` and lspci write it.
    pub fn pci_address(&self) -> String {
        let (bus, device, function) = self.pci;
        format!("{bus:02x}:{device:02x}.{function:x}")
    }

    fn matches(&self, selector: &InterfaceSelector) -> bool {
        match *selector {
            InterfaceSelector::Mac(mac) => self.mac == Some(mac.0),
            InterfaceSelector::Pci {
                bus,
                device,
                function,
            } => self.pci == (bus, device, function),
        }
    }
}

/// Which NIC carries management, and what the operator must hear about the choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkChoice {
    /// Index into the usable NICs (those `Up`, in probe order); `None` when there is none.
    pub index: Option<usize>,
    /// A console warning: the configured NIC is absent, has no driver or failed.
    pub warning: Option<String>,
}

/// Picks the management NIC among `nics` (all network functions, probe order) for the
/// `network.interface` value `configured`: the usable NIC it names, else the first usable
/// one, with a warning saying why the configured one was not taken.
pub fn choose_uplink(nics: &[HostNic], configured: Option<&str>) -> UplinkChoice {
    let usable: Vec<&HostNic> = nics.iter().filter(|n| n.state == NicState::Up).collect();
    let first = (!usable.is_empty()).then_some(0);
    let Some(text) = configured else {
        return UplinkChoice {
            index: first,
            warning: None,
        };
    };
    let fallback = match first {
        Some(_) => format!("using the first usable NIC, {}", describe(usable[0])),
        None => String::from("and no other NIC is usable"),
    };
    let selector = match text.parse::<InterfaceSelector>() {
        Ok(selector) => selector,
        Err(e) => {
            return UplinkChoice {
                index: first,
                warning: Some(format!("network.interface {text:?}: {e}; {fallback}")),
            };
        }
    };
    if let Some(index) = usable.iter().position(|n| n.matches(&selector)) {
        return UplinkChoice {
            index: Some(index),
            warning: None,
        };
    }
    let why = match nics.iter().find(|n| n.matches(&selector)) {
        Some(nic) => match &nic.state {
            NicState::NoDriver => format!(
                "is at {} ({:04x}:{:04x}) but Keel has no driver for it",
                nic.pci_address(),
                nic.vendor_id,
                nic.device_id
            ),
            NicState::Failed(reason) => format!("failed to come up: {reason}"),
            NicState::Up => String::from("is up"),
        },
        None => String::from("is not present (see `net` for the NICs found)"),
    };
    UplinkChoice {
        index: first,
        warning: Some(format!("network.interface {selector} {why}; {fallback}")),
    }
}

/// `e1000e 52:54:00:12:34:56 at 00:02.0`
fn describe(nic: &HostNic) -> String {
    let mut text = String::from(nic.driver.unwrap_or("no driver"));
    if let Some(mac) = nic.mac {
        let _ = write!(text, " {}", MacAddress(mac));
    }
    let _ = write!(text, " at {}", nic.pci_address());
    text
}

/// One NIC's line for `net`, with its live link state (`None`: the driver cannot tell) and
/// whether it is the management uplink:
/// `00:02.0 8086:10d3 e1000e 52:54:00:12:34:56 link up, management uplink`.
pub fn write_host_nic(
    out: &mut dyn Write,
    indent: &str,
    nic: &HostNic,
    link: Option<bool>,
    uplink: bool,
) -> fmt::Result {
    write!(
        out,
        "{indent}{} {:04x}:{:04x} {}",
        nic.pci_address(),
        nic.vendor_id,
        nic.device_id,
        nic.driver.unwrap_or("no driver")
    )?;
    if let Some(mac) = nic.mac {
        write!(out, " {}", MacAddress(mac))?;
    }
    match &nic.state {
        NicState::Up => match link {
            Some(true) => write!(out, " link up")?,
            Some(false) => write!(out, " link down")?,
            None => write!(out, " link unknown")?,
        },
        NicState::Failed(reason) => write!(out, " failed: {reason}")?,
        NicState::NoDriver => {}
    }
    if uplink {
        write!(out, ", management uplink")?;
    }
    writeln!(out)
}

/// What `pci` adds after a network function: `driver e1000e`, `no driver`, or
/// `driver igb failed: <reason>`.
pub fn pci_note(nic: &HostNic) -> String {
    match (&nic.state, nic.driver) {
        (NicState::Up, Some(driver)) => format!("driver {driver}"),
        (NicState::Failed(reason), Some(driver)) => format!("driver {driver} failed: {reason}"),
        _ => String::from("no driver"),
    }
}

/// The state as the API names it: `up`, `failed` or `no driver`.
pub fn state_name(state: &NicState) -> &'static str {
    match state {
        NicState::Up => "up",
        NicState::Failed(_) => "failed",
        NicState::NoDriver => "no driver",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(pci: u8, driver: Option<&'static str>, mac: u8, state: NicState) -> HostNic {
        HostNic {
            pci: (0, pci, 0),
            vendor_id: 0x8086,
            device_id: 0x10d3,
            driver,
            mac: driver.map(|_| [0x52, 0x54, 0, 0x12, 0x34, mac]),
            state,
        }
    }

    fn host() -> Vec<HostNic> {
        vec![
            nic(2, None, 0, NicState::NoDriver),
            nic(3, Some("e1000"), 0x56, NicState::Up),
            nic(
                4,
                Some("igb"),
                0x57,
                NicState::Failed("reset timed out".into()),
            ),
            nic(5, Some("virtio-net"), 0x58, NicState::Up),
        ]
    }

    #[test]
    fn the_first_usable_nic_without_a_setting() {
        assert_eq!(
            choose_uplink(&host(), None),
            UplinkChoice {
                index: Some(0),
                warning: None
            }
        );
        assert_eq!(choose_uplink(&host()[..1], None).index, None);
    }

    #[test]
    fn the_configured_nic_by_mac_or_pci_address() {
        let by_mac = choose_uplink(&host(), Some("52:54:00:12:34:58"));
        assert_eq!((by_mac.index, by_mac.warning), (Some(1), None));
        let by_pci = choose_uplink(&host(), Some("00:05.0"));
        assert_eq!((by_pci.index, by_pci.warning), (Some(1), None));
        let upper = choose_uplink(&host(), Some("52:54:00:12:34:56"));
        assert_eq!(upper.index, Some(0));
    }

    #[test]
    fn an_absent_or_unusable_nic_falls_back_with_a_warning() {
        let absent = choose_uplink(&host(), Some("00:09.0"));
        assert_eq!(absent.index, Some(0));
        assert_eq!(
            absent.warning.as_deref(),
            Some(
                "network.interface 00:09.0 is not present (see `net` for the NICs found); \
                 using the first usable NIC, e1000 52:54:00:12:34:56 at 00:03.0"
            )
        );
        let no_driver = choose_uplink(&host(), Some("00:02.0")).warning.unwrap();
        assert!(
            no_driver.starts_with(
                "network.interface 00:02.0 is at 00:02.0 (8086:10d3) but Keel has no driver"
            ),
            "{no_driver}"
        );
        let failed = choose_uplink(&host(), Some("52:54:00:12:34:57"))
            .warning
            .unwrap();
        assert!(
            failed.contains("failed to come up: reset timed out"),
            "{failed}"
        );
        let none_usable = choose_uplink(&host()[..1], Some("00:09.0"));
        assert_eq!(none_usable.index, None);
        assert!(
            none_usable
                .warning
                .unwrap()
                .ends_with("and no other NIC is usable")
        );
        // A value that bypassed validation is a warning too, never a panic.
        let garbage = choose_uplink(&host(), Some("eth0")).warning.unwrap();
        assert!(
            garbage.starts_with("network.interface \"eth0\": expected"),
            "{garbage}"
        );
    }

    #[test]
    fn net_lines() {
        let nics = host();
        let mut out = String::new();
        write_host_nic(&mut out, "  ", &nics[0], None, false).unwrap();
        write_host_nic(&mut out, "  ", &nics[1], Some(true), true).unwrap();
        write_host_nic(&mut out, "  ", &nics[2], None, false).unwrap();
        write_host_nic(&mut out, "  ", &nics[3], None, false).unwrap();
        assert_eq!(
            out,
            "  00:02.0 8086:10d3 no driver\n\
             \x20 00:03.0 8086:10d3 e1000 52:54:00:12:34:56 link up, management uplink\n\
             \x20 00:04.0 8086:10d3 igb 52:54:00:12:34:57 failed: reset timed out\n\
             \x20 00:05.0 8086:10d3 virtio-net 52:54:00:12:34:58 link unknown\n"
        );
        assert_eq!(state_name(&nics[0].state), "no driver");
        let notes: Vec<String> = nics.iter().map(pci_note).collect();
        assert_eq!(
            notes,
            [
                "no driver",
                "driver e1000",
                "driver igb failed: reset timed out",
                "driver virtio-net"
            ]
        );
    }
}
