//! `network.interface`: which host NIC carries management (and the bridged switch's
//! uplink), named by its MAC address (`52:54:00:12:34:56`) or its PCI address (`00:03.0`,
//! optionally with a segment: `0000:00:03.0`). The configuration stores the text; this parses
//! it, for validation here and for the kernel's choice at boot.

use core::fmt;
use core::str::FromStr;

use crate::mac::MacAddress;

/// A host NIC, as `network.interface` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceSelector {
    /// The NIC with this station address.
    Mac(MacAddress),
    /// The NIC at this PCI bus, device and function (segment 0).
    Pci {
        /// Bus, 0..=255.
        bus: u8,
        /// Device, 0..=31.
        device: u8,
        /// Function, 0..=7.
        function: u8,
    },
}

/// Why a string names no NIC.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected a NIC's MAC address (52:54:00:12:34:56) or PCI address (00:03.0, as `net` and \
     `pci` show it)"
)]
pub struct InterfaceParseError;

impl FromStr for InterfaceSelector {
    type Err = InterfaceParseError;

    fn from_str(text: &str) -> Result<InterfaceSelector, InterfaceParseError> {
        if let Ok(mac) = text.parse::<MacAddress>() {
            return Ok(InterfaceSelector::Mac(mac));
        }
        parse_pci(text).ok_or(InterfaceParseError)
    }
}

/// `bb:dd.f` or `0000:bb:dd.f`, hex, as lspci writes them.
fn parse_pci(text: &str) -> Option<InterfaceSelector> {
    let text = match text.split_once(':') {
        Some(("0000", rest)) if rest.contains(':') => rest,
        _ => text,
    };
    let (bus, rest) = text.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let hex = |part: &str, digits: usize| -> Option<u8> {
        if part.len() != digits || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u8::from_str_radix(part, 16).ok()
    };
    let (bus, device, function) = (hex(bus, 2)?, hex(device, 2)?, hex(function, 1)?);
    (device < 32 && function < 8).then_some(InterfaceSelector::Pci {
        bus,
        device,
        function,
    })
}

impl fmt::Display for InterfaceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceSelector::Mac(mac) => write!(f, "{mac}"),
            InterfaceSelector::Pci {
                bus,
                device,
                function,
            } => write!(f, "{bus:02x}:{device:02x}.{function:x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_pci_addresses_parse() {
        assert_eq!(
            "52:54:00:AB:cd:01".parse(),
            Ok(InterfaceSelector::Mac(MacAddress([
                0x52, 0x54, 0x00, 0xab, 0xcd, 0x01
            ])))
        );
        let pci = InterfaceSelector::Pci {
            bus: 0,
            device: 3,
            function: 0,
        };
        assert_eq!("00:03.0".parse(), Ok(pci));
        assert_eq!("0000:00:03.0".parse(), Ok(pci));
        assert_eq!(
            "3b:1f.7".parse(),
            Ok(InterfaceSelector::Pci {
                bus: 0x3b,
                device: 0x1f,
                function: 7
            })
        );
        assert_eq!(pci.to_string(), "00:03.0");
        assert_eq!(
            "52:54:00:ab:cd:01"
                .parse::<InterfaceSelector>()
                .unwrap()
                .to_string(),
            "52:54:00:ab:cd:01"
        );
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "",
            "eth0",
            "00:03",
            "00:20.0",
            "00:03.8",
            "0:03.0",
            "00:03.00",
            "1:00:03.0",
            "52:54:00:12:34",
            "zz:03.0",
            "00:03.0 ",
        ] {
            assert_eq!(
                bad.parse::<InterfaceSelector>(),
                Err(InterfaceParseError),
                "{bad:?}"
            );
        }
    }
}
