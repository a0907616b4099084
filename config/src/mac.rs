//! Ethernet MAC addresses of guest NICs: the [`MacAddress`] type the configuration writes as
//! `52:54:00:12:34:56`, and [`derived_mac`], the address a NIC gets when its definition
//! names none.

use alloc::borrow::Cow;
use alloc::string::String;
use core::fmt;
use core::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet MAC address. Written as six two-digit hex bytes separated by colons, lower
/// case (`52:54:00:12:34:56`); parsing accepts upper case too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// Whether it is a group (multicast or broadcast) address: bit 0 of the first byte.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether it is 00:00:00:00:00:00, which no NIC can have.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// Whether it is locally administered (bit 1 of the first byte), as derived ones are.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a string is not a MAC address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected a MAC address such as 52:54:00:12:34:56 (six hex byte pairs separated by colons)"
)]
pub struct MacParseError;

impl FromStr for MacAddress {
    type Err = MacParseError;

    fn from_str(text: &str) -> Result<MacAddress, MacParseError> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or(MacParseError)?;
            // Exactly two hex digits: from_str_radix alone would take "+f" or "f".
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacParseError);
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError)?;
        }
        if parts.next().is_some() {
            return Err(MacParseError);
        }
        Ok(MacAddress(bytes))
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MacAddress, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = MacAddress;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address such as 52:54:00:12:34:56")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MacAddress, E> {
                text.parse()
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// [`MacAddress`]'s text form as a regular expression (anchored), for the JSON Schema.
pub fn mac_pattern() -> String {
    String::from("^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
}

impl JsonSchema for MacAddress {
    fn schema_name() -> Cow<'static, str> {
        "MacAddress".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": mac_pattern(),
        })
    }
}

/// FNV-1a, 64 bits: small, no_std, and fixed forever by its published constants.
fn fnv1a64(hash: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The MAC address of NIC `nic` (its index in the VM's `nics`) of VM `vm` on the appliance
/// named `hostname`, for a NIC whose definition names none: locally administered and unicast
/// (the first byte's low two bits are `10`), the same on every boot.
///
/// Stable by contract: guests bind DHCP leases, firewall rules and interface names to their
/// MAC, so this function's output for given inputs must never change across Keel versions.
/// It is FNV-1a 64 over `hostname`, a 0 byte, `vm`, a 0 byte and `nic` as 8 little-endian
/// bytes; the address is the hash's low 6 bytes, little-endian, with the first byte's low
/// two bits forced to `10`.
pub fn derived_mac(hostname: &str, vm: &str, nic: usize) -> MacAddress {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    let mut hash = fnv1a64(OFFSET_BASIS, hostname.as_bytes());
    hash = fnv1a64(hash, &[0]);
    hash = fnv1a64(hash, vm.as_bytes());
    hash = fnv1a64(hash, &[0]);
    hash = fnv1a64(hash, &(nic as u64).to_le_bytes());
    let le = hash.to_le_bytes();
    let mut mac = [le[0], le[1], le[2], le[3], le[4], le[5]];
    mac[0] = (mac[0] & !0x03) | 0x02;
    MacAddress(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let mac: MacAddress = "52:54:00:AB:cd:0F".parse().unwrap();
        assert_eq!(mac, MacAddress([0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]));
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "52-54-00-ab-cd-0f",
            "5:54:00:ab:cd:0f0",
            "52:54:00:ab:cd:+f",
            "52:54:00:ab:cd:0g",
            "52:54:00:ab:cd:0f:",
            "525400abcd0f",
        ] {
            assert_eq!(bad.parse::<MacAddress>(), Err(MacParseError), "{bad:?}");
        }
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"52:54:00:ab:cd:0f\"");
        assert_eq!(serde_json::from_str::<MacAddress>(&json).unwrap(), mac);
        let err = serde_json::from_str::<MacAddress>("\"nope\"").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid value: string \"nope\", expected a MAC address"),
            "{err}"
        );
    }

    #[test]
    fn pattern_matches_the_parser() {
        let pattern = regex::Regex::new(&mac_pattern()).unwrap();
        for candidate in [
            "52:54:00:ab:cd:0f",
            "52:54:00:AB:CD:0F",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:",
            "52-54-00-ab-cd-0f",
            "52:54:00:ab:cd:0g",
            "",
        ] {
            assert_eq!(
                pattern.is_match(candidate),
                candidate.parse::<MacAddress>().is_ok(),
                "{candidate:?}"
            );
        }
    }

    #[test]
    fn classes() {
        assert!(MacAddress([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddress([0xff; 6]).is_multicast());
        assert!(!MacAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]).is_multicast());
        assert!(MacAddress([0; 6]).is_zero());
        assert!(MacAddress([0x02, 0, 0, 0, 0, 1]).is_local());
    }

    /// The derived addresses are pinned: a change here renames every guest's NIC.
    #[test]
    fn derived_macs_are_stable_local_and_unicast() {
        assert_eq!(derived_mac("keel", "web", 0).to_string(), PINNED_WEB_0);
        assert_eq!(derived_mac("keel", "web", 1).to_string(), PINNED_WEB_1);
        let mut seen = std::collections::BTreeSet::new();
        for host in ["keel", "keel.example.org", "k"] {
            for vm in ["web", "db", "a", "web-2"] {
                for nic in 0..4 {
                    let mac = derived_mac(host, vm, nic);
                    assert!(mac.is_local() && !mac.is_multicast(), "{mac}");
                    assert!(seen.insert(mac), "{host} {vm} {nic}: {mac} repeats");
                }
            }
        }
        // The separators matter: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(derived_mac("ab", "c", 0), derived_mac("a", "bc", 0));
    }

    const PINNED_WEB_0: &str = "96:3e:af:dd:55:d5";
    const PINNED_WEB_1: &str = "b6:88:9e:e8:5e:9c";
}
