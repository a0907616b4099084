//! The ATA side of a SATA disk (ATA8-ACS): the command opcodes Keel sends, the IDENTIFY
//! DEVICE data it reads, and the status and error registers decoded by name.

use alloc::string::String;
use core::fmt;

use crate::blk::ata::protocol::identify_word as word;

/// IDENTIFY DEVICE (PIO data-in, 512 bytes).
pub const IDENTIFY_DEVICE: u8 = 0xEC;
/// READ DMA EXT (48-bit LBA).
pub const READ_DMA_EXT: u8 = 0x25;
/// WRITE DMA EXT (48-bit LBA).
pub const WRITE_DMA_EXT: u8 = 0x35;
/// FLUSH CACHE EXT.
pub const FLUSH_CACHE_EXT: u8 = 0xEA;
/// FLUSH CACHE (for a disk without the EXT form).
pub const FLUSH_CACHE: u8 = 0xE7;

/// Most sectors one READ/WRITE DMA EXT moves (a count of 0 would mean 65536; Keel never
/// sends it).
pub const MAX_SECTORS_PER_COMMAND: u64 = 65535;

/// What IDENTIFY DEVICE says about a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Model number (words 27–46), trimmed.
    pub model: String,
    /// Serial number (words 10–19), trimmed.
    pub serial: String,
    /// Firmware revision (words 23–26), trimmed.
    pub firmware: String,
    /// Whether 48-bit LBA is supported (word 83 bit 10).
    pub lba48: bool,
    /// User-addressable sectors: words 100–103 with LBA48, else words 60–61.
    pub sectors: u64,
    /// Logical sector size in bytes (words 106, 117–118; 512 unless word 106 says otherwise).
    pub logical_sector_size: u32,
    /// Whether FLUSH CACHE EXT is supported (word 83 bit 13).
    pub flush_ext: bool,
}

/// Why IDENTIFY data was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// Fewer than 512 bytes.
    #[error("IDENTIFY DEVICE returned {0} bytes, not 512")]
    Short(usize),
    /// No 48-bit LBA: Keel sends only the EXT commands.
    #[error("the disk has no 48-bit LBA (IDENTIFY word 83 bit 10 clear): not supported")]
    NoLba48,
    /// Logical sectors other than 512 bytes.
    #[error("logical sector size {0} bytes: only 512-byte sectors are supported")]
    SectorSize(u32),
    /// A capacity of zero.
    #[error("IDENTIFY DEVICE reports 0 sectors")]
    Empty,
}

/// An ATA string of `words` words from `first_word` (the layout the ATA driver parses too).
fn ata_string(data: &[u8], first_word: usize, words: usize) -> String {
    crate::blk::ata::protocol::identify_string(data, first_word, first_word + words - 1)
}

/// Parses the 512 bytes of IDENTIFY DEVICE.
pub fn parse_identify(data: &[u8]) -> Result<Identity, IdentifyError> {
    if data.len() < 512 {
        return Err(IdentifyError::Short(data.len()));
    }
    // Words 83 and 106 are valid only when bit 14 is set and bit 15 clear.
    let valid = |w: u16| w & 0xC000 == 0x4000;
    let w83 = word(data, 83);
    let lba48 = valid(w83) && w83 & (1 << 10) != 0;
    let flush_ext = valid(w83) && w83 & (1 << 13) != 0;
    let w106 = word(data, 106);
    let logical_sector_size = if valid(w106) && w106 & (1 << 12) != 0 {
        // Words 117–118: logical sector size in 16-bit words.
        let words = u32::from(word(data, 117)) | (u32::from(word(data, 118)) << 16);
        words.saturating_mul(2)
    } else {
        512
    };
    let sectors = if lba48 {
        (0..4).fold(0u64, |acc, i| {
            acc | (u64::from(word(data, 100 + i)) << (16 * i))
        })
    } else {
        u64::from(word(data, 60)) | (u64::from(word(data, 61)) << 16)
    };
    let identity = Identity {
        model: ata_string(data, 27, 20),
        serial: ata_string(data, 10, 10),
        firmware: ata_string(data, 23, 4),
        lba48,
        sectors,
        logical_sector_size,
        flush_ext,
    };
    if !identity.lba48 {
        return Err(IdentifyError::NoLba48);
    }
    if identity.logical_sector_size != 512 {
        return Err(IdentifyError::SectorSize(identity.logical_sector_size));
    }
    if identity.sectors == 0 {
        return Err(IdentifyError::Empty);
    }
    Ok(identity)
}

/// The device's status and error registers (PxTFD), shown by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskFile {
    /// Status register (PxTFD 7:0).
    pub status: u8,
    /// Error register (PxTFD 15:8).
    pub error: u8,
}

impl TaskFile {
    /// From PxTFD.
    pub fn from_tfd(tfd: u32) -> TaskFile {
        TaskFile {
            status: tfd as u8,
            error: (tfd >> 8) as u8,
        }
    }
}

const STATUS_BITS: [(u8, &str); 6] = [
    (0x80, "BSY"),
    (0x40, "DRDY"),
    (0x20, "DF"),
    (0x08, "DRQ"),
    (0x04, "CORR"),
    (0x01, "ERR"),
];

const ERROR_BITS: [(u8, &str); 7] = [
    (0x80, "ICRC"),
    (0x40, "UNC"),
    (0x20, "MC"),
    (0x10, "IDNF"),
    (0x08, "MCR"),
    (0x04, "ABRT"),
    (0x02, "NM"),
];

fn names(f: &mut fmt::Formatter<'_>, value: u8, bits: &[(u8, &str)]) -> fmt::Result {
    let mut first = true;
    for &(bit, name) in bits {
        if value & bit != 0 {
            f.write_str(if first { "" } else { "|" })?;
            f.write_str(name)?;
            first = false;
        }
    }
    if first {
        f.write_str("-")?;
    }
    Ok(())
}

impl fmt::Display for TaskFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status 0x{:02x} (", self.status)?;
        names(f, self.status, &STATUS_BITS)?;
        write!(f, "), error 0x{:02x} (", self.error)?;
        names(f, self.error, &ERROR_BITS)?;
        f.write_str(")")
    }
}

/// IDENTIFY DEVICE data for tests: model, serial, sector count, LBA48 and the sector size
/// words as given.
#[cfg(test)]
pub fn identify_data(model: &str, serial: &str, sectors: u64, sector_size: u32) -> [u8; 512] {
    let mut d = [0u8; 512];
    let mut put_word = |i: usize, v: u16| d[i * 2..i * 2 + 2].copy_from_slice(&v.to_le_bytes());
    let string_words = |s: &str, words: usize| {
        let mut b: Vec<u8> = s.bytes().collect();
        b.resize(words * 2, b' ');
        (0..words)
            .map(|i| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]))
            .collect::<Vec<u16>>()
    };
    for (i, w) in string_words(serial, 10).into_iter().enumerate() {
        put_word(10 + i, w);
    }
    for (i, w) in string_words("2.5+", 4).into_iter().enumerate() {
        put_word(23 + i, w);
    }
    for (i, w) in string_words(model, 20).into_iter().enumerate() {
        put_word(27 + i, w);
    }
    put_word(49, 1 << 9);
    let lba28 = sectors.min(0x0FFF_FFFF) as u32;
    put_word(60, lba28 as u16);
    put_word(61, (lba28 >> 16) as u16);
    put_word(83, 0x4000 | (1 << 10) | (1 << 13));
    for i in 0..4 {
        put_word(100 + i, (sectors >> (16 * i)) as u16);
    }
    if sector_size != 512 {
        put_word(106, 0x4000 | (1 << 12));
        let words = sector_size / 2;
        put_word(117, words as u16);
        put_word(118, (words >> 16) as u16);
    }
    d
}
