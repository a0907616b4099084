//! Finding the SMBIOS entry point: the BIOS F-segment scan and the EFI configuration table.
//!
//! Layouts (DMTF DSP0134 3.x §5.2): the 64-bit `_SM3_` entry point (24 bytes: checksum at 5,
//! length at 6, version at 7/8, table maximum size at 0x0C, table address at 0x10) and the
//! 32-bit `_SM_` one (31 bytes: checksum at 4, length at 5, version at 6/7, then the `_DMI_`
//! intermediate anchor at 0x10 with its own checksum over 15 bytes, table length at 0x16,
//! address at 0x18, structure count at 0x1C). Every byte sum must be zero; a candidate that
//! fails is reported and skipped. Reads go through [`PhysRead`], so a bogus address yields a
//! warning, never a fault.

use crate::boot::pvh::PhysRead;

use super::Warning;

/// Where BIOS firmware puts the entry point (a 16-byte aligned anchor in the F-segment).
pub const BIOS_SCAN: core::ops::Range<u64> = 0xF_0000..0x10_0000;

/// `SMBIOS3_TABLE_GUID` F2FD1544-9794-4A2C-992E-E5BBCF20E394, in its in-memory byte order
/// (the first three fields little-endian).
pub const SMBIOS3_GUID: [u8; 16] = [
    0x44, 0x15, 0xfd, 0xf2, 0x94, 0x97, 0x2c, 0x4a, 0x99, 0x2e, 0xe5, 0xbb, 0xcf, 0x20, 0xe3, 0x94,
];
/// `SMBIOS_TABLE_GUID` EB9D2D31-2D88-11D3-9A16-0090273FC14D, in memory order.
pub const SMBIOS_GUID: [u8; 16] = [
    0x31, 0x2d, 0x9d, 0xeb, 0x88, 0x2d, 0xd3, 0x11, 0x9a, 0x16, 0x00, 0x90, 0x27, 0x3f, 0xc1, 0x4d,
];

/// `EFI_SYSTEM_TABLE.Hdr.Signature`: "IBI SYST".
const EFI_SYSTEM_TABLE_SIGNATURE: u64 = 0x5453_5953_2049_4249;
/// Offsets in the x64 `EFI_SYSTEM_TABLE` (UEFI 2.x §4.3): `NumberOfTableEntries`,
/// `ConfigurationTable`.
const EFI_TABLE_COUNT: u64 = 104;
const EFI_TABLE_POINTER: u64 = 112;
/// One `EFI_CONFIGURATION_TABLE` entry: a GUID and a pointer.
const EFI_TABLE_ENTRY: u64 = 24;
/// More configuration tables than any firmware publishes: a larger count is corrupt.
const EFI_MAX_TABLES: u64 = 256;

/// The longest entry point (`_SM_`, 0x1F bytes, rounded up).
const ENTRY_BYTES: usize = 32;

/// Which structure table an entry point describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryPoint {
    /// `_SM3_`: a table of at most `max_len` bytes, ending at the type 127 structure.
    V3 {
        /// SMBIOS major version.
        major: u8,
        /// SMBIOS minor version.
        minor: u8,
        /// Physical address of the structure table.
        table: u64,
        /// Upper bound of the table's length.
        max_len: u32,
    },
    /// `_SM_` with `_DMI_`: a table of exactly `len` bytes holding `count` structures.
    V2 {
        /// SMBIOS major version.
        major: u8,
        /// SMBIOS minor version.
        minor: u8,
        /// Physical address of the structure table.
        table: u32,
        /// Length of the table in bytes.
        len: u16,
        /// Number of structures in it.
        count: u16,
    },
}

impl EntryPoint {
    /// (major, minor) version the entry point declares.
    pub fn version(&self) -> (u8, u8) {
        match *self {
            EntryPoint::V3 { major, minor, .. } | EntryPoint::V2 { major, minor, .. } => {
                (major, minor)
            }
        }
    }

    /// Physical address and length (an upper bound for 3.x) of the structure table.
    pub fn table(&self) -> (u64, u32) {
        match *self {
            EntryPoint::V3 { table, max_len, .. } => (table, max_len),
            EntryPoint::V2 { table, len, .. } => (u64::from(table), u32::from(len)),
        }
    }

    /// The structure count a 2.x entry point declares (3.x has none).
    pub fn count(&self) -> Option<u16> {
        match *self {
            EntryPoint::V3 { .. } => None,
            EntryPoint::V2 { count, .. } => Some(count),
        }
    }
}

fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) == 0
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses the entry point at the start of `bytes` (read from physical `address`, which only
/// names it in warnings). `Ok(None)`: no anchor there.
pub fn parse_entry(bytes: &[u8], address: u64) -> Result<Option<EntryPoint>, Warning> {
    if bytes.starts_with(b"_SM3_") {
        let malformed = |reason| Warning::EntryMalformed {
            anchor: "_SM3_",
            address,
            reason,
        };
        let len = usize::from(*bytes.get(6).ok_or(malformed("it is cut short"))?);
        if len < 0x18 {
            return Err(malformed("its length is under 24 bytes"));
        }
        let body = bytes.get(..len).ok_or(malformed("it is cut short"))?;
        if !sums_to_zero(body) {
            return Err(Warning::EntryChecksum {
                anchor: "_SM3_",
                address,
            });
        }
        let mut table = [0u8; 8];
        table.copy_from_slice(&body[0x10..0x18]);
        return Ok(Some(EntryPoint::V3 {
            major: body[7],
            minor: body[8],
            table: u64::from_le_bytes(table),
            max_len: u32_at(body, 0x0C),
        }));
    }
    if bytes.starts_with(b"_SM_") {
        let malformed = |reason| Warning::EntryMalformed {
            anchor: "_SM_",
            address,
            reason,
        };
        let len = usize::from(*bytes.get(5).ok_or(malformed("it is cut short"))?);
        // 0x1E: SMBIOS 2.1 documented the length wrongly and some firmware kept it.
        if len < 0x1E {
            return Err(malformed("its length is under 30 bytes"));
        }
        let body = bytes.get(..len).ok_or(malformed("it is cut short"))?;
        let intermediate = bytes.get(0x10..0x1F).ok_or(malformed("it is cut short"))?;
        if !intermediate.starts_with(b"_DMI_") {
            return Err(malformed("the _DMI_ anchor is missing"));
        }
        if !sums_to_zero(body) || !sums_to_zero(intermediate) {
            return Err(Warning::EntryChecksum {
                anchor: "_SM_",
                address,
            });
        }
        return Ok(Some(EntryPoint::V2 {
            major: body[6],
            minor: body[7],
            len: u16_at(intermediate, 6),
            table: u32_at(intermediate, 8),
            count: u16_at(intermediate, 12),
        }));
    }
    Ok(None)
}

/// What a search found: the entry point (3.x preferred over 2.x) and where it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// The entry point.
    pub entry: EntryPoint,
    /// Its physical address.
    pub address: u64,
}

/// Keeps the better of two finds: the first 3.x one, else the first 2.x one.
fn prefer(best: Option<Found>, next: Found) -> Option<Found> {
    match best {
        Some(b) if matches!(b.entry, EntryPoint::V3 { .. }) => Some(b),
        Some(b) if matches!(next.entry, EntryPoint::V2 { .. }) => Some(b),
        _ => Some(next),
    }
}

fn read_entry(mem: &impl PhysRead, address: u64) -> Option<[u8; ENTRY_BYTES]> {
    // An entry point at the very end of readable memory: read only what its kind needs
    // (`_SM_` is 31 bytes, 30 on SMBIOS 2.1; `_SM3_` 24).
    [ENTRY_BYTES, 0x1F, 0x1E, 0x18].into_iter().find_map(|len| {
        let mut bytes = [0u8; ENTRY_BYTES];
        mem.read(address, &mut bytes[..len]).then_some(bytes)
    })
}

/// Scans the BIOS F-segment on 16-byte boundaries. Candidates that fail their checksum are
/// reported in `warnings` and skipped.
pub fn scan_bios(mem: &impl PhysRead, warnings: &mut impl FnMut(Warning)) -> Option<Found> {
    let mut best = None;
    let mut address = BIOS_SCAN.start;
    while address < BIOS_SCAN.end {
        let mut anchor = [0u8; 4];
        if mem.read(address, &mut anchor) && (&anchor == b"_SM3" || &anchor == b"_SM_") {
            match read_entry(mem, address).map(|b| parse_entry(&b, address)) {
                Some(Ok(Some(entry))) => best = prefer(best, Found { entry, address }),
                Some(Ok(None)) => {}
                Some(Err(w)) => warnings(w),
                None => warnings(Warning::Unreadable {
                    what: "SMBIOS entry point",
                    address,
                }),
            }
        }
        address += 16;
    }
    best
}

/// Follows the EFI system table's configuration table to the SMBIOS 3 or SMBIOS entry point.
pub fn from_efi(
    mem: &impl PhysRead,
    system_table: u64,
    warnings: &mut impl FnMut(Warning),
) -> Option<Found> {
    let mut header = [0u8; 120];
    if !mem.read(system_table, &mut header) {
        warnings(Warning::Unreadable {
            what: "EFI system table",
            address: system_table,
        });
        return None;
    }
    let u64_at = |at: u64| {
        let at = at as usize;
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if u64_at(0) != EFI_SYSTEM_TABLE_SIGNATURE {
        warnings(Warning::EfiSystemTableSignature {
            address: system_table,
        });
        return None;
    }
    let count = u64_at(EFI_TABLE_COUNT);
    let tables = u64_at(EFI_TABLE_POINTER);
    if count > EFI_MAX_TABLES {
        warnings(Warning::EfiTableCount { count });
        return None;
    }
    let mut best = None;
    for i in 0..count {
        let mut slot = [0u8; EFI_TABLE_ENTRY as usize];
        let at = tables.saturating_add(i * EFI_TABLE_ENTRY);
        if !mem.read(at, &mut slot) {
            warnings(Warning::Unreadable {
                what: "EFI configuration table",
                address: at,
            });
            return best;
        }
        let guid = &slot[..16];
        if guid != SMBIOS3_GUID && guid != SMBIOS_GUID {
            continue;
        }
        let mut pointer = [0u8; 8];
        pointer.copy_from_slice(&slot[16..24]);
        let address = u64::from_le_bytes(pointer);
        match read_entry(mem, address).map(|b| parse_entry(&b, address)) {
            Some(Ok(Some(entry))) => best = prefer(best, Found { entry, address }),
            Some(Ok(None)) => warnings(Warning::EntryMalformed {
                anchor: if guid == SMBIOS3_GUID {
                    "_SM3_"
                } else {
                    "_SM_"
                },
                address,
                reason: "the EFI configuration table points at no anchor",
            }),
            Some(Err(w)) => warnings(w),
            None => warnings(Warning::Unreadable {
                what: "SMBIOS entry point",
                address,
            }),
        }
    }
    best
}
