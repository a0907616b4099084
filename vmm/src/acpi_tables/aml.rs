//! A small AML encoder: the handful of ACPI Machine Language terms Keel's DSDT needs, each
//! appended to a byte vector as ACPI 6.5 §20.2 ("AML Grammar Definition") encodes it. No
//! ASL compiler runs at build or boot time.
//!
//! | term | encoding (§) |
//! | --- | --- |
//! | `PkgLength` | 1 byte for totals up to 63; else a lead byte (bits 7:6 = extra bytes, bits 3:0 = low nibble) and 1–3 more bytes (§20.2.4) |
//! | `NameSeg` | four characters `[A-Z_][A-Z0-9_]{3}`, padded with `_` (§20.2.2) |
//! | `NameString` | optional `\` (0x5C), then one seg, `0x2E` + two, or `0x2F` count + segs (§20.2.2) |
//! | integers | `ZeroOp` 0x00, `OneOp` 0x01, `OnesOp` 0xFF, or 0x0A/0x0B/0x0C/0x0E + 1/2/4/8 bytes (§20.2.3) |
//! | `String` | 0x0D, ASCII, 0x00 (§20.2.3) |
//! | `Package` | 0x12 PkgLength NumElements elements (§20.2.5.4) |
//! | `Name` | 0x08 NameString object (§20.2.5.1) |
//! | `Scope` | 0x10 PkgLength NameString terms (§20.2.5.1) |
//! | `Device` | 0x5B 0x82 PkgLength NameString terms (§20.2.5.2) |
//! | `Buffer` | 0x11 PkgLength BufferSize bytes (§20.2.5.4) |
//!
//! [`resource`] encodes the resource descriptors of a `ResourceTemplate` (§6.4), which
//! [`resource_template`] wraps in a `Buffer` with the end tag.
//!
//! The functions take already-valid names (the DSDT's are constants); an invalid name is a
//! programming error caught by the tests, so [`name_string`] returns `None` rather than
//! panicking.

use alloc::vec::Vec;

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const ONES_OP: u8 = 0xFF;
const BYTE_PREFIX: u8 = 0x0A;
const WORD_PREFIX: u8 = 0x0B;
const DWORD_PREFIX: u8 = 0x0C;
const STRING_PREFIX: u8 = 0x0D;
const QWORD_PREFIX: u8 = 0x0E;
const NAME_OP: u8 = 0x08;
const SCOPE_OP: u8 = 0x10;
const PACKAGE_OP: u8 = 0x12;
const BUFFER_OP: u8 = 0x11;
const EXT_OP_PREFIX: u8 = 0x5B;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';
const DUAL_NAME_PREFIX: u8 = 0x2E;
const MULTI_NAME_PREFIX: u8 = 0x2F;

/// Largest length a `PkgLength` can encode (28 bits).
pub const MAX_PKG_LENGTH: usize = (1 << 28) - 1;

/// Encodes the `PkgLength` of a term whose contents after the length are `contents` bytes
/// long: the encoded value counts the length bytes themselves. `None` past 2^28 - 1.
pub fn pkg_length(contents: usize) -> Option<Vec<u8>> {
    // One byte: bits 5:0 hold the whole length, up to 63.
    if contents < 0x3F {
        return Some(alloc::vec![(contents + 1) as u8]);
    }
    for extra in 1..=3usize {
        let total = contents.checked_add(1 + extra)?;
        if total < 1 << (4 + 8 * extra) {
            let mut out = alloc::vec![((extra as u8) << 6) | (total & 0xF) as u8];
            out.extend((0..extra).map(|i| (total >> (4 + 8 * i)) as u8));
            return Some(out);
        }
    }
    None
}

/// Encodes one `NameSeg` from up to four characters, padding with `_`.
pub fn name_seg(name: &str) -> Option<[u8; 4]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 4 {
        return None;
    }
    let lead_ok = b[0].is_ascii_uppercase() || b[0] == b'_';
    let rest_ok = b[1..]
        .iter()
        .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
    if !lead_ok || !rest_ok {
        return None;
    }
    let mut seg = [b'_'; 4];
    seg[..b.len()].copy_from_slice(b);
    Some(seg)
}

/// Encodes a `NameString` such as `\_SB.PCI0` or `_S5`.
pub fn name_string(path: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let rest = match path.strip_prefix('\\') {
        Some(rest) => {
            out.push(ROOT_CHAR);
            rest
        }
        None => path,
    };
    let segs = rest
        .split('.')
        .map(name_seg)
        .collect::<Option<Vec<[u8; 4]>>>()?;
    match segs.len() {
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n @ 3..=255 => {
            out.push(MULTI_NAME_PREFIX);
            out.push(n as u8);
        }
        _ => return None,
    }
    segs.iter().for_each(|s| out.extend_from_slice(s));
    Some(out)
}

/// Encodes an integer in the shortest form.
pub fn integer(value: u64) -> Vec<u8> {
    match value {
        0 => alloc::vec![ZERO_OP],
        1 => alloc::vec![ONE_OP],
        u64::MAX => alloc::vec![ONES_OP],
        v if v <= 0xFF => alloc::vec![BYTE_PREFIX, v as u8],
        v if v <= 0xFFFF => [&[WORD_PREFIX][..], &(v as u16).to_le_bytes()].concat(),
        v if v <= 0xFFFF_FFFF => [&[DWORD_PREFIX][..], &(v as u32).to_le_bytes()].concat(),
        v => [&[QWORD_PREFIX][..], &v.to_le_bytes()].concat(),
    }
}

/// Encodes a string constant (ASCII without NUL, else `None`).
pub fn string(s: &str) -> Option<Vec<u8>> {
    if !s.is_ascii() || s.contains('\0') {
        return None;
    }
    let mut out = alloc::vec![STRING_PREFIX];
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Some(out)
}

/// Encodes `Package(n) { elements }` from encoded elements (at most 255).
pub fn package(elements: &[Vec<u8>]) -> Option<Vec<u8>> {
    let count = u8::try_from(elements.len()).ok()?;
    let body: Vec<u8> = core::iter::once(count)
        .chain(elements.iter().flatten().copied())
        .collect();
    let mut out = alloc::vec![PACKAGE_OP];
    out.extend(pkg_length(body.len())?);
    out.extend(body);
    Some(out)
}

/// Encodes `Name(path, object)`.
pub fn name(path: &str, object: &[u8]) -> Option<Vec<u8>> {
    let mut out = alloc::vec![NAME_OP];
    out.extend(name_string(path)?);
    out.extend_from_slice(object);
    Some(out)
}

/// Encodes `Scope(path) { terms }`.
pub fn scope(path: &str, terms: &[u8]) -> Option<Vec<u8>> {
    let mut body = name_string(path)?;
    body.extend_from_slice(terms);
    let mut out = alloc::vec![SCOPE_OP];
    out.extend(pkg_length(body.len())?);
    out.extend(body);
    Some(out)
}

/// Encodes `Device(path) { terms }`.
pub fn device(path: &str, terms: &[u8]) -> Option<Vec<u8>> {
    let mut body = name_string(path)?;
    body.extend_from_slice(terms);
    let mut out = alloc::vec![EXT_OP_PREFIX, DEVICE_OP];
    out.extend(pkg_length(body.len())?);
    out.extend(body);
    Some(out)
}

/// Encodes `Buffer() { bytes }`, its size given as an integer.
pub fn buffer(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut body = integer(bytes.len() as u64);
    body.extend_from_slice(bytes);
    let mut out = alloc::vec![BUFFER_OP];
    out.extend(pkg_length(body.len())?);
    out.extend(body);
    Some(out)
}

/// Encodes `ResourceTemplate() { descriptors }`: a buffer of the descriptors followed by
/// the end tag with checksum 0 ("treat as summed correctly", §6.4.2.9).
pub fn resource_template(descriptors: &[&[u8]]) -> Option<Vec<u8>> {
    let mut bytes: Vec<u8> = descriptors.iter().flat_map(|d| d.iter().copied()).collect();
    bytes.extend_from_slice(&resource::END_TAG);
    buffer(&bytes)
}

/// Resource descriptors (ACPI 6.5 §6.4) for `_CRS` buffers. Address space descriptors are
/// encoded as a bridge produces them: `ResourceProducer, PosDecode, MinFixed, MaxFixed`,
/// granularity and translation 0, length `max - min + 1`.
pub mod resource {
    /// End tag (§6.4.2.9): small item 0x0F, length 1, checksum 0.
    pub const END_TAG: [u8; 2] = [0x79, 0x00];

    /// Large item tags (§6.4.3).
    const DWORD_ADDRESS: u8 = 0x87;
    const WORD_ADDRESS: u8 = 0x88;
    /// Small item tag of the I/O port descriptor: type 0x08, length 7 (§6.4.2.5).
    const IO_PORT: u8 = 0x47;

    /// Address space resource types (§6.4.3.5, byte 3).
    const MEMORY_RANGE: u8 = 0;
    const IO_RANGE: u8 = 1;
    const BUS_NUMBER_RANGE: u8 = 2;

    /// General flags: producer (bit 0 clear), positive decode (bit 1 clear), min fixed
    /// (bit 2), max fixed (bit 3).
    const PRODUCER_FIXED: u8 = 0b1100;

    /// I/O type-specific flags: `EntireRange` (ISA and non-ISA ranges, bits 1:0 = 3).
    const IO_ENTIRE_RANGE: u8 = 0b11;
    /// Memory type-specific flags: read-write (bit 0), non-cacheable (bits 2:1 = 0).
    const MEMORY_READ_WRITE: u8 = 0b1;

    /// `WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0,
    /// max - min + 1)` (§6.4.3.5.3); `None` if `max < min`.
    pub fn word_bus_number(min: u16, max: u16) -> Option<[u8; 16]> {
        word_address(BUS_NUMBER_RANGE, 0, min, max)
    }

    /// `WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0,
    /// max - min + 1)`; `None` if `max < min`.
    pub fn word_io(min: u16, max: u16) -> Option<[u8; 16]> {
        word_address(IO_RANGE, IO_ENTIRE_RANGE, min, max)
    }

    /// `DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable,
    /// ReadWrite, 0, min, max, 0, max - min + 1)` (§6.4.3.5.2); `None` if `max < min`.
    pub fn dword_memory(min: u32, max: u32) -> Option<[u8; 26]> {
        let len = max.checked_sub(min)?.checked_add(1)?;
        let mut d = [0u8; 26];
        d[0] = DWORD_ADDRESS;
        d[1..3].copy_from_slice(&23u16.to_le_bytes());
        d[3] = MEMORY_RANGE;
        d[4] = PRODUCER_FIXED;
        d[5] = MEMORY_READ_WRITE;
        // Granularity (6..10) and translation (18..22) stay 0.
        d[10..14].copy_from_slice(&min.to_le_bytes());
        d[14..18].copy_from_slice(&max.to_le_bytes());
        d[22..26].copy_from_slice(&len.to_le_bytes());
        Some(d)
    }

    /// `IO(Decode16, base, base, 1, len)` (§6.4.2.5): a fixed range of ports the device
    /// itself decodes (consumes).
    pub fn io_port(base: u16, len: u8) -> [u8; 8] {
        let [lo, hi] = base.to_le_bytes();
        // Information byte bit 0: 16-bit decode.
        [IO_PORT, 1, lo, hi, lo, hi, 1, len]
    }

    /// A Word Address Space Descriptor (§6.4.3.5.3).
    fn word_address(kind: u8, type_flags: u8, min: u16, max: u16) -> Option<[u8; 16]> {
        // The length of 0..=0xFFFF does not fit 16 bits.
        let len = max.checked_sub(min)?.checked_add(1)?;
        let mut d = [0u8; 16];
        d[0] = WORD_ADDRESS;
        d[1..3].copy_from_slice(&13u16.to_le_bytes());
        d[3] = kind;
        d[4] = PRODUCER_FIXED;
        d[5] = type_flags;
        // Granularity (6..8) and translation (12..14) stay 0.
        d[8..10].copy_from_slice(&min.to_le_bytes());
        d[10..12].copy_from_slice(&max.to_le_bytes());
        d[14..16].copy_from_slice(&len.to_le_bytes());
        Some(d)
    }
}

/// Compresses a seven-character EISA id such as `PNP0A03` into the 32-bit integer `_HID`
/// takes (three 5-bit letters and four hex digits, stored big-endian; ACPI 6.5 §6.1.5).
pub fn eisa_id(id: &str) -> Option<u32> {
    let b = id.as_bytes();
    if b.len() != 7 || !b[..3].iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    let letters = b[..3]
        .iter()
        .fold(0u32, |acc, &c| (acc << 5) | u32::from(c - b'@'));
    let digits = u32::from_str_radix(core::str::from_utf8(&b[3..]).ok()?, 16).ok()?;
    Some(((letters << 16) | digits).swap_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_encodings() {
        assert_eq!(pkg_length(0).unwrap(), [0x01]);
        assert_eq!(pkg_length(62).unwrap(), [0x3F]);
        // 63 contents + 2 length bytes = 65 = 0x41: lead 0x40 | 0x1, then 0x04.
        assert_eq!(pkg_length(63).unwrap(), [0x41, 0x04]);
        // 4093 + 2 = 4095: the largest two-byte length.
        assert_eq!(pkg_length(4093).unwrap(), [0x4F, 0xFF]);
        // 4094 + 3 = 4097 = 0x1001.
        assert_eq!(pkg_length(4094).unwrap(), [0x81, 0x00, 0x01]);
        assert_eq!(
            pkg_length(MAX_PKG_LENGTH - 4).unwrap(),
            [0xCF, 0xFF, 0xFF, 0xFF]
        );
        assert_eq!(pkg_length(MAX_PKG_LENGTH), None);
        assert_eq!(pkg_length(usize::MAX), None);
    }

    #[test]
    fn names() {
        assert_eq!(name_string("_S5").unwrap(), b"_S5_");
        assert_eq!(name_string("\\_S5_").unwrap(), b"\\_S5_");
        assert_eq!(name_string("\\_SB.PCI0").unwrap(), b"\\\x2E_SB_PCI0");
        assert_eq!(name_string("A.B.C").unwrap(), b"\x2F\x03A___B___C___");
        assert_eq!(name_string("0ABC"), None);
        assert_eq!(name_string("ABCDE"), None);
        assert_eq!(name_string("a"), None);
        assert_eq!(name_string(""), None);
    }

    #[test]
    fn integers_and_strings() {
        assert_eq!(integer(0), [0x00]);
        assert_eq!(integer(1), [0x01]);
        assert_eq!(integer(5), [0x0A, 0x05]);
        assert_eq!(integer(0x1234), [0x0B, 0x34, 0x12]);
        assert_eq!(integer(0x12_3456), [0x0C, 0x56, 0x34, 0x12, 0x00]);
        assert_eq!(integer(1 << 32), [0x0E, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(integer(u64::MAX), [0xFF]);
        assert_eq!(string("Hi").unwrap(), [0x0D, b'H', b'i', 0]);
        assert_eq!(string("a\0"), None);
    }

    #[test]
    fn s5_package_matches_what_iasl_emits() {
        // iasl: Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
        let pkg = package(&[integer(5), integer(5), integer(0), integer(0)]).unwrap();
        let term = name("_S5", &pkg).unwrap();
        assert_eq!(
            term,
            [
                0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00
            ]
        );
    }

    #[test]
    fn scopes_and_devices() {
        let hid = name("_HID", &integer(u64::from(eisa_id("PNP0C0C").unwrap()))).unwrap();
        let dev = device("PWRB", &hid).unwrap();
        assert_eq!(&dev[..2], [0x5B, 0x82]);
        assert_eq!(
            usize::from(dev[2]),
            dev.len() - 2,
            "PkgLength covers itself and the rest"
        );
        let sb = scope("\\_SB", &dev).unwrap();
        assert_eq!(sb[0], 0x10);
        assert_eq!(usize::from(sb[1]), sb.len() - 1);
        assert_eq!(&sb[2..7], b"\\_SB_");
    }

    #[test]
    fn buffers() {
        // iasl: Buffer (0x03) { 0x01, 0x02, 0x03 } -> 11 06 0A 03 01 02 03 (PkgLength 6
        // counts itself and the five bytes after it)
        assert_eq!(
            buffer(&[1, 2, 3]).unwrap(),
            [0x11, 0x06, 0x0A, 0x03, 1, 2, 3]
        );
        // An empty buffer has size Zero.
        assert_eq!(buffer(&[]).unwrap(), [0x11, 0x02, 0x00]);
        // 100 bytes: the size is a BytePrefix constant, PkgLength takes two bytes
        // (100 + 2 + 2 = 104 = 0x68: lead 0x48, then 0x06).
        let big = buffer(&[0xAA; 100]).unwrap();
        assert_eq!(&big[..5], [0x11, 0x48, 0x06, 0x0A, 100]);
        assert_eq!(big.len(), 105);
    }

    #[test]
    fn resource_descriptors_match_iasl() {
        use resource::*;
        // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
        //     0x0000, 0x0000, 0x00FF, 0x0000, 0x0100)
        assert_eq!(
            word_bus_number(0, 0xFF).unwrap(),
            [
                0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00,
                0x00, 0x01
            ]
        );
        // IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
        assert_eq!(
            io_port(0xCF8, 8),
            [0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08]
        );
        // WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
        //     0x0000, 0x0D00, 0xFFFF, 0x0000, 0xF300)
        assert_eq!(
            word_io(0x0D00, 0xFFFF).unwrap(),
            [
                0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0x00, 0x00, 0x00, 0x0D, 0xFF, 0xFF, 0x00, 0x00,
                0x00, 0xF3
            ]
        );
        // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable,
        //     ReadWrite, 0x00000000, 0xC0000000, 0xFEBFFFFF, 0x00000000, 0x3EC00000)
        assert_eq!(
            dword_memory(0xC000_0000, 0xFEBF_FFFF).unwrap(),
            [
                0x87, 0x17, 0x00, 0x00, 0x0C, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0,
                0xFF, 0xFF, 0xBF, 0xFE, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x3E
            ]
        );
        // Empty or inverted ranges, and a length past the field, are refused.
        assert_eq!(word_io(2, 1), None);
        assert_eq!(word_io(0, 0xFFFF), None);
        assert_eq!(dword_memory(0, u32::MAX), None);
        // ResourceTemplate () { IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08) }
        assert_eq!(
            resource_template(&[&io_port(0xCF8, 8)]).unwrap(),
            [
                0x11, 0x0D, 0x0A, 0x0A, 0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08, 0x79, 0x00
            ]
        );
    }

    #[test]
    fn eisa_ids() {
        // PNP0A03 compresses to 0x030AD041 (as iasl's EISAID("PNP0A03")).
        assert_eq!(eisa_id("PNP0A03"), Some(0x030A_D041));
        assert_eq!(eisa_id("PNP0C0C"), Some(0x0C0C_D041));
        assert_eq!(eisa_id("pnp0a03"), None);
        assert_eq!(eisa_id("PNP0A0"), None);
        assert_eq!(eisa_id("PNP0A0G"), None);
    }
}
