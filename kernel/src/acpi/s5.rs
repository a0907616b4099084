//! Finding the `\_S5` sleep-type values in AML without an interpreter.
//!
//! Soft-off needs `SLP_TYPa`/`SLP_TYPb` from the `\_S5` package in the DSDT (ACPI 6.5
//! §7.4.2). Firmware writes it as a static `Name(_S5, Package(){a, b, ...})`, so a scan for the
//! name followed by a package of integer constants finds it; a method-valued `_S5` (rare) is not
//! supported and yields `None`, which the caller reports.

/// `NameOp`, `PackageOp` and the integer encodings used in the package (ACPI §20.2).
const NAME_OP: u8 = 0x08;
const PACKAGE_OP: u8 = 0x12;
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const ONES_OP: u8 = 0xff;

/// The sleep-type values for S5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SleepType {
    /// Value for PM1a_CNT.SLP_TYP.
    pub a: u8,
    /// Value for PM1b_CNT.SLP_TYP.
    pub b: u8,
}

fn pkg_length(aml: &[u8]) -> Option<usize> {
    // The lead byte's top two bits count the following bytes (ACPI §20.2.4).
    let lead = *aml.first()?;
    let follow = usize::from(lead >> 6);
    if aml.len() < 1 + follow {
        return None;
    }
    Some(1 + follow)
}

fn integer(aml: &[u8]) -> Option<(u64, usize)> {
    match *aml.first()? {
        ZERO_OP => Some((0, 1)),
        ONE_OP => Some((1, 1)),
        ONES_OP => Some((u64::MAX, 1)),
        BYTE_PREFIX => Some((u64::from(*aml.get(1)?), 2)),
        WORD_PREFIX => {
            let b = aml.get(1..3)?;
            Some((u64::from(u16::from_le_bytes([b[0], b[1]])), 3))
        }
        DWORD_PREFIX => {
            let b = aml.get(1..5)?;
            Some((u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])), 5))
        }
        _ => None,
    }
}

/// Scans AML (a DSDT or SSDT body) for `Name(_S5, Package(){...})`.
pub fn find_s5(aml: &[u8]) -> Option<SleepType> {
    let mut start = 0;
    while let Some(pos) = aml[start..].windows(4).position(|w| w == b"_S5_") {
        let at = start + pos;
        start = at + 1;
        // Preceded by NameOp, possibly with a root prefix `\` in between.
        let named = match at {
            0 => false,
            1 => aml[0] == NAME_OP,
            _ => aml[at - 1] == NAME_OP || (aml[at - 1] == b'\\' && aml[at - 2] == NAME_OP),
        };
        if !named || aml.get(at + 4) != Some(&PACKAGE_OP) {
            continue;
        }
        let mut cursor = at + 5;
        let Some(len_bytes) = pkg_length(&aml[cursor..]) else {
            continue;
        };
        cursor += len_bytes + 1; // skip PkgLength and NumElements
        let Some((a, used)) = aml.get(cursor..).and_then(integer) else {
            continue;
        };
        cursor += used;
        // Some firmware gives only SLP_TYPa; b then equals a.
        let b = aml.get(cursor..).and_then(integer).map_or(a, |(b, _)| b);
        return Some(SleepType {
            a: (a & 0x7) as u8,
            b: (b & 0x7) as u8,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_style_zero_ops() {
        // Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero })
        let aml = [
            0x10, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0,
        ];
        assert_eq!(find_s5(&aml), Some(SleepType { a: 0, b: 0 }));
    }

    #[test]
    fn byte_prefixed_values_with_root_prefix() {
        // Name (\_S5, Package () { 0x05, 0x07 })
        let aml = [
            0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x07, 0x02, 0x0a, 0x05, 0x0a, 0x07,
        ];
        assert_eq!(find_s5(&aml), Some(SleepType { a: 5, b: 7 }));
    }

    #[test]
    fn single_value_package_repeats_a() {
        let aml = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x01, 0x0a, 0x06];
        assert_eq!(find_s5(&aml), Some(SleepType { a: 6, b: 6 }));
    }

    #[test]
    fn references_that_are_not_definitions_are_skipped() {
        // A method body mentioning _S5_ (no NameOp) before the real definition.
        let mut aml = vec![0x70, b'_', b'S', b'5', b'_', 0x60];
        aml.extend_from_slice(&[
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x01, 0x01, 0, 0,
        ]);
        assert_eq!(find_s5(&aml), Some(SleepType { a: 1, b: 1 }));
    }

    #[test]
    fn missing_or_truncated_is_none() {
        assert_eq!(find_s5(b""), None);
        assert_eq!(find_s5(b"_S5_"), None);
        assert_eq!(find_s5(&[0x08, b'_', b'S', b'5', b'_', 0x12]), None);
        assert_eq!(
            find_s5(&[0x08, b'_', b'S', b'5', b'_', 0x14, 0x00]),
            None,
            "a method"
        );
    }
}
