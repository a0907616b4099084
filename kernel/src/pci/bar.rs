//! Base Address Registers: decoding the raw register and its write-all-ones probe.
//!
//! PCI Local Bus Specification 3.0, §6.2.5.1 "Address Maps": bit 0 selects I/O (1) or memory
//! (0) space; for memory, bits 2:1 are the type (00 = 32-bit, 01 = below 1 MiB (PCI 2.x
//! only), 10 = 64-bit, using the next BAR for the upper half) and bit 3 is prefetchable. The
//! size is found by writing all ones and reading back: the bits that stay zero are the size's
//! alignment. This module only decodes values; the scanner does the writes.

use core::fmt;

/// Width of a memory BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryWidth {
    /// Anywhere in the 32-bit space.
    Bits32,
    /// Below 1 MiB (type 01, PCI 2.x legacy).
    Below1M,
    /// A 64-bit BAR: this register and the next one.
    Bits64,
}

/// A decoded, implemented BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// I/O ports.
    Io {
        /// First port.
        port: u32,
        /// Number of ports.
        size: u32,
    },
    /// Memory-mapped registers or memory.
    Memory {
        /// Physical address the firmware assigned (0 = not assigned).
        address: u64,
        /// Size in bytes.
        size: u64,
        /// 32-bit, below 1 MiB or 64-bit.
        width: MemoryWidth,
        /// Prefetchable (no read side effects).
        prefetchable: bool,
    },
}

impl Bar {
    /// The assigned memory address and size, for a memory BAR.
    pub fn memory(&self) -> Option<(u64, u64)> {
        match *self {
            Bar::Memory { address, size, .. } => Some((address, size)),
            Bar::Io { .. } => None,
        }
    }

    /// The first port and count, for an I/O BAR.
    pub fn io(&self) -> Option<(u32, u32)> {
        match *self {
            Bar::Io { port, size } => Some((port, size)),
            Bar::Memory { .. } => None,
        }
    }

    /// Whether the firmware gave the BAR an address.
    pub fn is_assigned(&self) -> bool {
        match *self {
            Bar::Io { port, .. } => port != 0,
            Bar::Memory { address, .. } => address != 0,
        }
    }
}

/// Whether a raw (lower) BAR value is the lower half of a 64-bit memory BAR.
pub fn is_64bit(raw: u32) -> bool {
    raw & 0b111 == 0b100
}

/// Decodes a BAR from its original value and the value read back after writing all ones.
///
/// For a 64-bit BAR (`is_64bit(original as u32)`), pass the upper register in the upper
/// 32 bits of both `original` and `probed`; otherwise the upper halves are ignored. Returns
/// `None` for an unimplemented BAR (probe reads back 0) or a reserved memory type.
pub fn decode(original: u64, probed: u64) -> Option<Bar> {
    let low = original as u32;
    let probe_low = probed as u32;
    if low & 1 == 1 {
        // I/O: bits 1:0 are flags. Devices decoding only 16 bits of I/O address return
        // zeros in the upper half of the probe; treat those as ones.
        let mut mask = probe_low & !0b11;
        if mask == 0 {
            return None;
        }
        if mask & 0xffff_0000 == 0 {
            mask |= 0xffff_0000;
        }
        return Some(Bar::Io {
            port: low & !0b11,
            size: (!mask).wrapping_add(1),
        });
    }
    let width = match (low >> 1) & 0b11 {
        0b00 => MemoryWidth::Bits32,
        0b01 => MemoryWidth::Below1M,
        0b10 => MemoryWidth::Bits64,
        _ => return None,
    };
    let prefetchable = low & 0b1000 != 0;
    let (address, mask) = if width == MemoryWidth::Bits64 {
        let mask = (probed & 0xffff_ffff_0000_0000) | u64::from(probe_low & !0xf);
        if mask == 0 {
            return None;
        }
        (original & !0xf, mask)
    } else {
        let mask = probe_low & !0xf;
        if mask == 0 {
            return None;
        }
        (
            u64::from(low & !0xf),
            0xffff_ffff_0000_0000 | u64::from(mask),
        )
    };
    Some(Bar::Memory {
        address,
        size: (!mask).wrapping_add(1),
        width,
        prefetchable,
    })
}

/// Writes a size as `4 KiB`, `128 KiB`, `16 MiB`, or bytes.
pub(crate) struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["GiB", "MiB", "KiB", "B"];
        for (i, unit) in UNITS.iter().enumerate() {
            let scale = 1u64 << (10 * (3 - i));
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{} {unit}", self.0 / scale);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Bar::Io { port, size } => write!(f, "io {port:#x} ({})", Size(u64::from(size))),
            Bar::Memory {
                address,
                size,
                width,
                prefetchable,
            } => {
                write!(f, "mem {address:#x} ({}", Size(size))?;
                match width {
                    MemoryWidth::Bits32 => f.write_str(", 32-bit")?,
                    MemoryWidth::Below1M => f.write_str(", below 1M")?,
                    MemoryWidth::Bits64 => f.write_str(", 64-bit")?,
                }
                if prefetchable {
                    f.write_str(", prefetchable")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e1000_bar0_is_32bit_memory_128k() {
        let bar = decode(0xfebc_0000, 0xfffe_0000).unwrap();
        assert_eq!(
            bar,
            Bar::Memory {
                address: 0xfebc_0000,
                size: 128 * 1024,
                width: MemoryWidth::Bits32,
                prefetchable: false
            }
        );
        assert_eq!(bar.to_string(), "mem 0xfebc0000 (128 KiB, 32-bit)");
    }

    #[test]
    fn io_bar_with_16_bit_decoder() {
        // An 8-port I/O BAR at 0xc000 whose probe reads back only the low 16 bits.
        let bar = decode(0xc001, 0x0000_fff9).unwrap();
        assert_eq!(
            bar,
            Bar::Io {
                port: 0xc000,
                size: 8
            }
        );
        // The same with a full 32-bit decoder.
        assert_eq!(decode(0xc001, 0xffff_fff9), Some(bar));
        assert_eq!(bar.to_string(), "io 0xc000 (8 B)");
    }

    #[test]
    fn prefetchable_64bit_above_4g() {
        // virtio modern BAR4 on q35: 16 KiB, 64-bit, prefetchable, at 0x8_0000_0000.
        let original = 0x0000_0008_0000_000c;
        let probed = 0xffff_ffff_ffff_c00c;
        assert!(is_64bit(original as u32));
        let bar = decode(original, probed).unwrap();
        assert_eq!(
            bar,
            Bar::Memory {
                address: 0x8_0000_0000,
                size: 16 * 1024,
                width: MemoryWidth::Bits64,
                prefetchable: true
            }
        );
        assert_eq!(bar.memory(), Some((0x8_0000_0000, 0x4000)));
        assert_eq!(
            bar.to_string(),
            "mem 0x800000000 (16 KiB, 64-bit, prefetchable)"
        );
    }

    #[test]
    fn huge_64bit_bar_sized_by_upper_half() {
        // 8 GiB: the lower probe is all flags, the size lives in the upper register.
        let bar = decode(0x0000_0000_0000_000c, 0xffff_fffe_0000_000c).unwrap();
        assert_eq!(bar.memory(), Some((0, 8 << 30)));
        assert!(!bar.is_assigned());
    }

    #[test]
    fn unimplemented_and_reserved_bars() {
        assert_eq!(decode(0, 0), None);
        assert_eq!(decode(0x1, 0x1), None);
        // Memory type 11 is reserved.
        assert_eq!(decode(0x6, 0xffff_f006), None);
        assert!(!is_64bit(0xfebc_0000));
    }

    #[test]
    fn below_1m_bar() {
        let bar = decode(0x000c_0002, 0xffff_0002).unwrap();
        assert_eq!(bar.memory(), Some((0xc_0000, 64 * 1024)));
        assert_eq!(bar.to_string(), "mem 0xc0000 (64 KiB, below 1M)");
    }
}
