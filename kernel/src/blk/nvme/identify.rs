//! The Identify data structures the driver reads (NVMe base specification 1.4, §5.15.2):
//! Identify Controller, Identify Namespace and the active namespace ID list.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::blk::disk::{le16, le32, le64};

/// Bytes of every Identify data structure.
pub const IDENTIFY_BYTES: usize = 4096;

/// What Identify Controller says that Keel uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerInfo {
    /// Model number (MN), trimmed.
    pub model: String,
    /// Serial number (SN), trimmed.
    pub serial: String,
    /// Firmware revision (FR), trimmed.
    pub firmware: String,
    /// Maximum Data Transfer Size as a power of two of the minimum page size; 0 = no limit.
    pub mdts: u8,
    /// Number of namespaces (NN): the highest namespace ID.
    pub namespaces: u32,
    /// Whether a volatile write cache is present (VWC bit 0).
    pub volatile_write_cache: bool,
}

/// An ASCII field of an Identify structure, space-padded by the device.
fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

impl ControllerInfo {
    /// Parses an Identify Controller data structure.
    pub fn parse(data: &[u8; IDENTIFY_BYTES]) -> ControllerInfo {
        ControllerInfo {
            serial: ascii(&data[4..24]),
            model: ascii(&data[24..64]),
            firmware: ascii(&data[64..72]),
            mdts: data[77],
            namespaces: le32(data, 516),
            volatile_write_cache: data[525] & 1 != 0,
        }
    }

    /// Largest transfer per command in bytes, given the controller's minimum page size;
    /// `None` when unlimited.
    pub fn max_transfer_bytes(&self, min_page_bytes: u64) -> Option<u64> {
        if self.mdts == 0 {
            None
        } else {
            // MDTS above 31 is not meaningful; clamp so the shift cannot overflow.
            Some(min_page_bytes << u32::from(self.mdts).min(31))
        }
    }
}

/// What Identify Namespace says that Keel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace size in logical blocks (NSZE).
    pub blocks: u64,
    /// Bytes per logical block of the format in use.
    pub block_bytes: u64,
    /// Metadata bytes per logical block of the format in use.
    pub metadata_bytes: u16,
    /// Whether the namespace is write-protected (NSATTR bit 0).
    pub write_protected: bool,
}

impl NamespaceInfo {
    /// Parses an Identify Namespace data structure; `None` when the formatted LBA size
    /// index points past the formats the namespace lists or the size is nonsense.
    pub fn parse(data: &[u8; IDENTIFY_BYTES]) -> Option<NamespaceInfo> {
        let formats = usize::from(data[25]) + 1; // NLBAF is zero-based
        let in_use = usize::from(data[26] & 0x0f);
        if in_use >= formats.min(16) {
            return None;
        }
        let format = 128 + 4 * in_use;
        let lbads = data[format + 2];
        if !(9..=16).contains(&lbads) {
            return None;
        }
        Some(NamespaceInfo {
            blocks: le64(data, 0),
            block_bytes: 1u64 << lbads,
            metadata_bytes: le16(data, format),
            write_protected: data[99] & 1 != 0,
        })
    }
}

/// The namespace IDs of an active namespace ID list (CNS 02h): ascending, ending at the first
/// zero entry.
pub fn active_namespaces(data: &[u8; IDENTIFY_BYTES]) -> Vec<u32> {
    data.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&nsid| nsid != 0)
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// An Identify Controller page as a device would return it.
    pub fn controller_page(
        model: &str,
        serial: &str,
        mdts: u8,
        nn: u32,
        vwc: bool,
    ) -> [u8; IDENTIFY_BYTES] {
        let mut d = [0u8; IDENTIFY_BYTES];
        d[4..24].fill(b' ');
        d[4..4 + serial.len()].copy_from_slice(serial.as_bytes());
        d[24..64].fill(b' ');
        d[24..24 + model.len()].copy_from_slice(model.as_bytes());
        d[64..72].copy_from_slice(b"7.2.0   ");
        d[77] = mdts;
        d[516..520].copy_from_slice(&nn.to_le_bytes());
        d[525] = u8::from(vwc);
        d
    }

    /// An Identify Namespace page with one format in use: `lbads` and `ms`.
    pub fn namespace_page(blocks: u64, lbads: u8, ms: u16) -> [u8; IDENTIFY_BYTES] {
        let mut d = [0u8; IDENTIFY_BYTES];
        d[0..8].copy_from_slice(&blocks.to_le_bytes());
        d[25] = 1; // two formats
        d[26] = 1; // the second in use
        d[128 + 2] = 9;
        d[132..134].copy_from_slice(&ms.to_le_bytes());
        d[132 + 2] = lbads;
        d
    }

    #[test]
    fn parses_controller() {
        let info =
            ControllerInfo::parse(&controller_page("QEMU NVMe Ctrl", "deadbeef", 7, 256, true));
        assert_eq!(info.model, "QEMU NVMe Ctrl");
        assert_eq!(info.serial, "deadbeef");
        assert_eq!(info.firmware, "7.2.0");
        assert_eq!(info.namespaces, 256);
        assert!(info.volatile_write_cache);
        assert_eq!(info.max_transfer_bytes(4096), Some(512 * 1024));
        let unlimited = ControllerInfo::parse(&controller_page("x", "y", 0, 1, false));
        assert_eq!(unlimited.max_transfer_bytes(4096), None);
    }

    #[test]
    fn parses_namespace_format_in_use() {
        let ns = NamespaceInfo::parse(&namespace_page(2048, 12, 0)).unwrap();
        assert_eq!(ns.blocks, 2048);
        assert_eq!(ns.block_bytes, 4096);
        assert_eq!(ns.metadata_bytes, 0);
        let mut bad = namespace_page(1, 9, 0);
        bad[26] = 5; // format 5 of 2
        assert_eq!(NamespaceInfo::parse(&bad), None);
        let mut tiny = namespace_page(1, 9, 0);
        tiny[134] = 3;
        assert_eq!(NamespaceInfo::parse(&tiny), None);
    }

    #[test]
    fn namespace_list_stops_at_zero() {
        let mut d = [0u8; IDENTIFY_BYTES];
        d[0..4].copy_from_slice(&1u32.to_le_bytes());
        d[4..8].copy_from_slice(&3u32.to_le_bytes());
        d[12..16].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(active_namespaces(&d), [1, 3]);
    }
}
