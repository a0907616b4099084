//! Walking the SMBIOS structure table for types 0 (BIOS) and 1 (system).
//!
//! Each structure (DSP0134 §6.1) is a formatted area — `type: u8, length: u8, handle: u16`,
//! then `length - 4` bytes of fields — followed by its string set: NUL-terminated strings,
//! the set itself ending in a second NUL (two NULs when there are none). A field names a
//! string by its 1-based index; 0 means "no string". Every length and index is checked
//! against the bytes: a corrupt structure ends the walk with a warning, a bad index makes
//! that one field absent.

use super::{Hardware, Text, Warning};

/// Type 0, BIOS Information: vendor, version, release date (string indices).
const TYPE_BIOS: u8 = 0;
const BIOS_VENDOR: usize = 0x04;
const BIOS_VERSION: usize = 0x05;
const BIOS_DATE: usize = 0x08;
/// Type 1, System Information: manufacturer, product name, serial number.
const TYPE_SYSTEM: u8 = 1;
const SYSTEM_MANUFACTURER: usize = 0x04;
const SYSTEM_PRODUCT: usize = 0x05;
const SYSTEM_SERIAL: usize = 0x07;
/// Type 127, End-of-Table.
const TYPE_END: u8 = 127;

/// Values firmware leaves in unset fields, compared ignoring case after trimming. Besides
/// these, a value is absent when it is empty or blank, or made only of `0`, only of `X`,
/// or only of `.`, `-`, `*`, `_` (see [`is_placeholder`]).
pub const PLACEHOLDERS: &[&str] = &[
    "To Be Filled By O.E.M.",
    "To Be Filled By O.E.M",
    "Default string",
    "Not Specified",
    "Not Applicable",
    "Not Available",
    "Unknown",
    "None",
    "N/A",
    "OEM",
    "O.E.M.",
    "System manufacturer",
    "System Manufacturer Name",
    "System Product Name",
    "System Serial Number",
    "System Version",
    "Type1ProductConfigId",
    "0123456789",
    "123456789",
];

/// Whether firmware left this (trimmed) value unset.
pub fn is_placeholder(value: &str) -> bool {
    let value = value.trim();
    if value.is_empty() {
        return true;
    }
    let only = |set: &[char]| value.chars().all(|c| set.contains(&c));
    only(&['0'])
        || only(&['X', 'x'])
        || only(&['.', '-', '*', '_', ' '])
        || PLACEHOLDERS.iter().any(|p| p.eq_ignore_ascii_case(value))
}

/// One structure: its type, formatted area (header included) and string set.
struct Structure<'a> {
    kind: u8,
    formatted: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Structure<'a> {
    /// The string a field at `offset` names; `None` for 0, a field past the formatted area,
    /// an index past the string set (with a warning) or a placeholder.
    fn text(
        &self,
        offset: usize,
        field: &'static str,
        warnings: &mut impl FnMut(Warning),
    ) -> Option<Text> {
        let index = *self.formatted.get(offset)?;
        if index == 0 {
            return None;
        }
        let raw = self
            .strings
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .nth(usize::from(index) - 1);
        let Some(raw) = raw else {
            warnings(Warning::StringIndex {
                kind: self.kind,
                field,
                index,
            });
            return None;
        };
        let mut text = Text::new();
        // SMBIOS strings are ASCII in practice; anything unprintable is shown as '?'.
        let shown = raw.iter().map(|&b| match b {
            0x20..=0x7e => char::from(b),
            _ => '?',
        });
        for c in shown {
            if text.push(c).is_err() {
                break;
            }
        }
        let trimmed = text.trim();
        if is_placeholder(trimmed) {
            return None;
        }
        Text::try_from(trimmed).ok()
    }
}

/// Splits the structure at `offset`; `Err` ends the walk (corrupt or cut short).
fn structure_at(table: &[u8], offset: usize) -> Result<(Structure<'_>, usize), Warning> {
    let header = table
        .get(offset..offset + 4)
        .ok_or(Warning::StructureCut { offset, kind: None })?;
    let (kind, len) = (header[0], usize::from(header[1]));
    if len < 4 {
        return Err(Warning::StructureLength { offset, kind, len });
    }
    let formatted = table
        .get(offset..offset + len)
        .ok_or(Warning::StructureCut {
            offset,
            kind: Some(kind),
        })?;
    let rest = &table[offset + len..];
    let end = rest
        .windows(2)
        .position(|w| w == [0, 0])
        .ok_or(Warning::StructureCut {
            offset,
            kind: Some(kind),
        })?;
    let structure = Structure {
        kind,
        formatted,
        strings: &rest[..end],
    };
    Ok((structure, offset + len + end + 2))
}

/// Reads types 0 and 1 from `table` into `hw` (the first of each counts). `count`: the
/// number of structures a 2.x entry point declares (3.x tables end at type 127).
pub fn parse_table(
    table: &[u8],
    count: Option<u16>,
    hw: &mut Hardware,
    warnings: &mut impl FnMut(Warning),
) {
    let (mut seen_bios, mut seen_system) = (false, false);
    let mut offset = 0;
    let mut walked = 0u32;
    while offset < table.len() && count.is_none_or(|c| walked < u32::from(c)) {
        let (s, next) = match structure_at(table, offset) {
            Ok(found) => found,
            Err(w) => {
                warnings(w);
                return;
            }
        };
        match s.kind {
            TYPE_BIOS if !seen_bios => {
                seen_bios = true;
                hw.bios_vendor = s.text(BIOS_VENDOR, "BIOS vendor", warnings);
                hw.bios_version = s.text(BIOS_VERSION, "BIOS version", warnings);
                hw.bios_date = s.text(BIOS_DATE, "BIOS release date", warnings);
            }
            TYPE_SYSTEM if !seen_system => {
                seen_system = true;
                hw.vendor = s.text(SYSTEM_MANUFACTURER, "manufacturer", warnings);
                hw.product = s.text(SYSTEM_PRODUCT, "product name", warnings);
                hw.serial = s.text(SYSTEM_SERIAL, "serial number", warnings);
            }
            TYPE_END => return,
            _ => {}
        }
        if seen_bios && seen_system {
            return;
        }
        offset = next;
        walked += 1;
    }
}
