//! The capability list, and the virtio vendor-specific capabilities in it.
//!
//! PCI Local Bus Specification 3.0, §6.7: when Status bit 4 is set, the byte at 0x34 points
//! to a chain of capabilities in the device-specific part of configuration space (offsets
//! 0x40..0xff, dword aligned), each starting with an ID byte and a next-pointer byte. Parsing
//! works on a 256-byte copy of configuration space and never trusts it: pointers outside
//! 0x40..=0xfc or a chain longer than can fit end the walk.
//!
//! Virtio 1.x §4.1.4 "Virtio Structure PCI Capabilities": a modern virtio device describes
//! where its common configuration, notification area, ISR byte and device configuration live
//! with vendor-specific capabilities (ID 0x09) laid out as `struct virtio_pci_cap`.

use core::fmt;

/// Status register bit: the device has a capability list (§6.2.3).
pub const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Offset of the capabilities pointer in a type 0 or type 1 header.
pub const CAPABILITIES_POINTER: usize = 0x34;

/// Power management (PCI PM 1.2).
pub const CAP_POWER_MANAGEMENT: u8 = 0x01;
/// Message signalled interrupts.
pub const CAP_MSI: u8 = 0x05;
/// Vendor specific (virtio uses these).
pub const CAP_VENDOR: u8 = 0x09;
/// PCI Express.
pub const CAP_PCI_EXPRESS: u8 = 0x10;
/// MSI-X.
pub const CAP_MSIX: u8 = 0x11;

/// The most capabilities that fit in 192 bytes of dword-aligned entries.
pub const MAX_CAPABILITIES: usize = 48;

/// One entry of the capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Capability ID.
    pub id: u8,
    /// Offset in configuration space.
    pub offset: u8,
}

impl Capability {
    /// A short name for the ID.
    pub fn name(&self) -> &'static str {
        match self.id {
            CAP_POWER_MANAGEMENT => "pm",
            0x02 => "agp",
            0x03 => "vpd",
            0x04 => "slot-id",
            CAP_MSI => "msi",
            0x06 => "hot-swap",
            0x07 => "pci-x",
            0x08 => "hypertransport",
            CAP_VENDOR => "vendor",
            0x0a => "debug-port",
            0x0c => "hotplug",
            0x0d => "bridge-subsystem",
            CAP_PCI_EXPRESS => "pcie",
            CAP_MSIX => "msi-x",
            0x12 => "sata",
            0x13 => "af",
            _ => "unknown",
        }
    }
}

/// A device's capability list.
pub type Capabilities = heapless::Vec<Capability, MAX_CAPABILITIES>;

/// Walks the capability list of a configuration-space copy.
///
/// `config` is the function's configuration space from offset 0; a pointer past the end of
/// a shorter copy ends the walk.
pub fn parse(config: &[u8]) -> Capabilities {
    let mut out = Capabilities::new();
    let byte = |at: usize| config.get(at).copied().unwrap_or(0);
    let status = u16::from_le_bytes([byte(0x06), byte(0x07)]);
    if status & STATUS_CAPABILITIES == 0 {
        return out;
    }
    let mut next = byte(CAPABILITIES_POINTER) & 0xfc;
    while next >= 0x40 && out.len() < MAX_CAPABILITIES {
        let at = usize::from(next);
        if at + 2 > config.len() || out.iter().any(|c| c.offset == next) {
            break; // outside the copy, or a loop
        }
        let _ = out.push(Capability {
            id: byte(at),
            offset: next,
        });
        next = byte(at + 1) & 0xfc;
    }
    out
}

/// `cfg_type` of a virtio PCI capability (virtio 1.x §4.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioCfgType {
    /// `VIRTIO_PCI_CAP_COMMON_CFG`.
    Common,
    /// `VIRTIO_PCI_CAP_NOTIFY_CFG`.
    Notify,
    /// `VIRTIO_PCI_CAP_ISR_CFG`.
    Isr,
    /// `VIRTIO_PCI_CAP_DEVICE_CFG`.
    Device,
    /// `VIRTIO_PCI_CAP_PCI_CFG` (configuration-space window into the BARs).
    PciCfg,
    /// `VIRTIO_PCI_CAP_SHARED_MEMORY_CFG`.
    SharedMemory,
    /// Anything else (reserved or vendor).
    Other(u8),
}

impl From<u8> for VirtioCfgType {
    fn from(value: u8) -> Self {
        match value {
            1 => VirtioCfgType::Common,
            2 => VirtioCfgType::Notify,
            3 => VirtioCfgType::Isr,
            4 => VirtioCfgType::Device,
            5 => VirtioCfgType::PciCfg,
            8 => VirtioCfgType::SharedMemory,
            other => VirtioCfgType::Other(other),
        }
    }
}

impl fmt::Display for VirtioCfgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtioCfgType::Common => f.write_str("common"),
            VirtioCfgType::Notify => f.write_str("notify"),
            VirtioCfgType::Isr => f.write_str("isr"),
            VirtioCfgType::Device => f.write_str("device"),
            VirtioCfgType::PciCfg => f.write_str("pci-cfg"),
            VirtioCfgType::SharedMemory => f.write_str("shm"),
            VirtioCfgType::Other(t) => write!(f, "type {t}"),
        }
    }
}

/// A `struct virtio_pci_cap` (plus the notify multiplier of `virtio_pci_notify_cap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioCap {
    /// Offset of the capability in configuration space.
    pub offset: u8,
    /// Which structure it locates.
    pub cfg_type: VirtioCfgType,
    /// BAR index holding the structure.
    pub bar: u8,
    /// Offset of the structure within the BAR.
    pub bar_offset: u32,
    /// Length of the structure in bytes.
    pub length: u32,
    /// `notify_off_multiplier`, for the notify capability (when its length allows).
    pub notify_off_multiplier: Option<u32>,
}

impl fmt::Display for VirtioCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in bar{} at {:#x} ({} bytes)",
            self.cfg_type, self.bar, self.bar_offset, self.length
        )?;
        if let Some(m) = self.notify_off_multiplier {
            write!(f, ", notify multiplier {m}")?;
        }
        Ok(())
    }
}

/// Up to eight virtio structures (QEMU exposes five).
pub type VirtioCaps = heapless::Vec<VirtioCap, 8>;

/// Parses the virtio vendor capabilities among `caps` (only meaningful for vendor 0x1af4).
///
/// A capability shorter than `struct virtio_pci_cap` (16 bytes) or one that would run past
/// configuration space is skipped.
pub fn parse_virtio(config: &[u8], caps: &[Capability]) -> VirtioCaps {
    let mut out = VirtioCaps::new();
    let u32_at = |at: usize| -> Option<u32> {
        let bytes = config.get(at..at + 4)?;
        Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    for cap in caps.iter().filter(|c| c.id == CAP_VENDOR) {
        let at = usize::from(cap.offset);
        let Some(&cap_len) = config.get(at + 2) else {
            continue;
        };
        if cap_len < 16 || at + usize::from(cap_len) > 256 {
            continue;
        }
        let (Some(&cfg_type), Some(&bar), Some(bar_offset), Some(length)) = (
            config.get(at + 3),
            config.get(at + 4),
            u32_at(at + 8),
            u32_at(at + 12),
        ) else {
            continue;
        };
        let cfg_type = VirtioCfgType::from(cfg_type);
        let notify_off_multiplier = if cfg_type == VirtioCfgType::Notify && cap_len >= 20 {
            u32_at(at + 16)
        } else {
            None
        };
        let _ = out.push(VirtioCap {
            offset: cap.offset,
            cfg_type,
            bar,
            bar_offset,
            length,
            notify_off_multiplier,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a config space with the capabilities-list status bit and `chain` written as
    /// (offset, bytes) pieces.
    fn config_with(pointer: u8, chain: &[(usize, &[u8])]) -> [u8; 256] {
        let mut c = [0u8; 256];
        c[0x06] = STATUS_CAPABILITIES as u8;
        c[CAPABILITIES_POINTER] = pointer;
        for (at, bytes) in chain {
            c[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        c
    }

    /// A `virtio_pci_cap` of `len` bytes.
    fn virtio_cap(next: u8, len: u8, cfg_type: u8, bar: u8, off: u32, length: u32) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[0] = CAP_VENDOR;
        b[1] = next;
        b[2] = len;
        b[3] = cfg_type;
        b[4] = bar;
        b[8..12].copy_from_slice(&off.to_le_bytes());
        b[12..16].copy_from_slice(&length.to_le_bytes());
        b
    }

    #[test]
    fn no_status_bit_no_list() {
        let mut c = config_with(0x40, &[(0x40, &[CAP_MSIX, 0])]);
        c[0x06] = 0;
        assert!(parse(&c).is_empty());
    }

    #[test]
    fn qemu_virtio_net_modern_layout() {
        // A chain shaped like QEMU's virtio-net-pci: MSI-X, then five vendor capabilities
        // (common, notify with its multiplier, device, isr, pci-cfg).
        let mut notify = virtio_cap(0x60, 20, 2, 4, 0x3000, 0x1000);
        notify[16..20].copy_from_slice(&4u32.to_le_bytes());
        let c = config_with(
            0x98,
            &[
                (0x98, &[CAP_MSIX, 0x84]),
                (0x84, &virtio_cap(0x70, 16, 1, 4, 0, 0x1000)[..16]),
                (0x70, &notify),
                (0x60, &virtio_cap(0x50, 16, 4, 4, 0x2000, 0x1000)[..16]),
                (0x50, &virtio_cap(0xb0, 16, 3, 4, 0x1000, 0x1000)[..16]),
                (0xb0, &virtio_cap(0x00, 20, 5, 0, 0, 0)),
            ],
        );
        let caps = parse(&c);
        let ids: heapless::Vec<(u8, u8), 8> = caps.iter().map(|c| (c.id, c.offset)).collect();
        assert_eq!(
            &ids[..],
            &[
                (CAP_MSIX, 0x98),
                (CAP_VENDOR, 0x84),
                (CAP_VENDOR, 0x70),
                (CAP_VENDOR, 0x60),
                (CAP_VENDOR, 0x50),
                (CAP_VENDOR, 0xb0)
            ]
        );
        assert_eq!(caps[0].name(), "msi-x");
        let v = parse_virtio(&c, &caps);
        assert_eq!(v.len(), 5);
        assert_eq!(v[0].cfg_type, VirtioCfgType::Common);
        assert_eq!(v[0].bar, 4);
        assert_eq!(v[1].cfg_type, VirtioCfgType::Notify);
        assert_eq!(v[1].bar_offset, 0x3000);
        assert_eq!(v[1].notify_off_multiplier, Some(4));
        assert_eq!(v[2].cfg_type, VirtioCfgType::Device);
        assert_eq!(v[3].cfg_type, VirtioCfgType::Isr);
        assert_eq!(v[4].cfg_type, VirtioCfgType::PciCfg);
        assert_eq!(
            v[1].to_string(),
            "notify in bar4 at 0x3000 (4096 bytes), notify multiplier 4"
        );
    }

    #[test]
    fn loops_and_bad_pointers_end_the_walk() {
        // 0x40 -> 0x50 -> 0x40 loops.
        let c = config_with(0x40, &[(0x40, &[CAP_MSI, 0x50]), (0x50, &[CAP_PM, 0x40])]);
        assert_eq!(parse(&c).len(), 2);
        // A pointer into the header ends the list.
        let c = config_with(0x40, &[(0x40, &[CAP_MSI, 0x10])]);
        assert_eq!(parse(&c).len(), 1);
        // Low bits of the pointer are ignored (reserved).
        let c = config_with(0x43, &[(0x40, &[CAP_MSI, 0x00])]);
        assert_eq!(parse(&c)[0].offset, 0x40);
        // A pointer past the end of a short copy ends the walk.
        assert_eq!(parse(&c[..0x40]).len(), 0);
    }

    const CAP_PM: u8 = CAP_POWER_MANAGEMENT;

    #[test]
    fn every_pointer_value_is_bounded() {
        // The walk terminates and never indexes out of bounds, whatever the bytes say.
        for seed in 0u32..512 {
            let mut c = [0u8; 256];
            let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
            for b in c.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            c[0x06] |= STATUS_CAPABILITIES as u8;
            let caps = parse(&c);
            assert!(caps.len() <= MAX_CAPABILITIES);
            let _ = parse_virtio(&c, &caps);
        }
    }

    #[test]
    fn short_or_truncated_virtio_caps_are_skipped() {
        let c = config_with(0xf0, &[(0xf0, &virtio_cap(0, 16, 1, 4, 0, 0x1000)[..16])]);
        let caps = parse(&c);
        assert_eq!(parse_virtio(&c, &caps).len(), 1);
        // cap_len 12 is too short for struct virtio_pci_cap.
        let c = config_with(0x40, &[(0x40, &virtio_cap(0, 12, 1, 4, 0, 0x1000)[..16])]);
        assert!(parse_virtio(&c, &parse(&c)).is_empty());
        // A notify capability without room for the multiplier has none.
        let c = config_with(0x40, &[(0x40, &virtio_cap(0, 16, 2, 4, 0, 0x1000)[..16])]);
        let v = parse_virtio(&c, &parse(&c));
        assert_eq!(v[0].notify_off_multiplier, None);
    }
}
