//! The ATA task-file protocol (ATA/ATAPI-8 ACS and ATA8-APT): register offsets, status and
//! error bits, the commands Keel issues, and what IDENTIFY DEVICE reports. Pure: no port is
//! touched here.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::blk::disk::SECTOR;

/// A command-block register, by its offset from the channel's command base (0x1F0, 0x170).
/// Offset 0 (data) is reached only through whole-sector transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TaskReg {
    /// Error (read) / Features (write).
    ErrorFeatures = 1,
    /// Sector count.
    SectorCount = 2,
    /// LBA bits 7:0 (and 31:24 as the previous content in 48-bit commands).
    LbaLow = 3,
    /// LBA bits 15:8 (39:32); also the signature's low byte after a reset or an abort.
    LbaMid = 4,
    /// LBA bits 23:16 (47:40); the signature's high byte.
    LbaHigh = 5,
    /// Device: drive select, LBA mode, LBA bits 27:24 in 28-bit commands.
    Device = 6,
    /// Status (read) / Command (write).
    StatusCommand = 7,
}

/// Status register bits.
pub mod status {
    /// The device is executing a command; no other bit is valid.
    pub const BSY: u8 = 0x80;
    /// The device accepts commands.
    pub const DRDY: u8 = 0x40;
    /// Device fault: the device cannot complete commands.
    pub const DF: u8 = 0x20;
    /// A data block is ready to move through the data register.
    pub const DRQ: u8 = 0x08;
    /// The last command failed; the error register says why.
    pub const ERR: u8 = 0x01;
    /// What the status reads when no device drives the bus (pulled-up lines).
    pub const FLOATING: u8 = 0xFF;
}

/// Device-control register bits (written at the control base, 0x3F6 / 0x376).
pub mod control {
    /// Interrupts off: Keel polls.
    pub const NIEN: u8 = 0x02;
    /// Software reset of both drives on the channel.
    pub const SRST: u8 = 0x04;
}

/// Device register bits.
pub mod device {
    /// Bits 7 and 5 are obsolete and set by convention (older drives expect them).
    pub const OBSOLETE: u8 = 0xA0;
    /// LBA addressing (rather than CHS).
    pub const LBA: u8 = 0x40;
    /// Selects the slave (device 1).
    pub const DEV1: u8 = 0x10;
}

/// Command opcodes.
pub mod command {
    /// IDENTIFY DEVICE.
    pub const IDENTIFY: u8 = 0xEC;
    /// READ SECTORS (28-bit LBA, PIO).
    pub const READ_SECTORS: u8 = 0x20;
    /// READ SECTORS EXT (48-bit LBA, PIO).
    pub const READ_SECTORS_EXT: u8 = 0x24;
    /// WRITE SECTORS (28-bit LBA, PIO).
    pub const WRITE_SECTORS: u8 = 0x30;
    /// WRITE SECTORS EXT (48-bit LBA, PIO).
    pub const WRITE_SECTORS_EXT: u8 = 0x34;
    /// FLUSH CACHE.
    pub const FLUSH_CACHE: u8 = 0xE7;
    /// FLUSH CACHE EXT.
    pub const FLUSH_CACHE_EXT: u8 = 0xEA;
}

/// Name of a command opcode for messages.
pub fn command_name(opcode: u8) -> &'static str {
    match opcode {
        command::IDENTIFY => "IDENTIFY DEVICE",
        command::READ_SECTORS => "READ SECTORS",
        command::READ_SECTORS_EXT => "READ SECTORS EXT",
        command::WRITE_SECTORS => "WRITE SECTORS",
        command::WRITE_SECTORS_EXT => "WRITE SECTORS EXT",
        command::FLUSH_CACHE => "FLUSH CACHE",
        command::FLUSH_CACHE_EXT => "FLUSH CACHE EXT",
        _ => "command",
    }
}

/// Error register bits and their names (ACS-2 §6.2; the obsolete ones as older drives use
/// them).
const ERROR_BITS: [(u8, &str); 8] = [
    (0x80, "ICRC (interface CRC error)"),
    (0x40, "UNC (uncorrectable data)"),
    (0x20, "MC (media changed)"),
    (0x10, "IDNF (sector not found)"),
    (0x08, "MCR (media change request)"),
    (0x04, "ABRT (command aborted)"),
    (0x02, "NM (no media)"),
    (0x01, "AMNF (address mark not found)"),
];

/// Status register bits and their names.
const STATUS_BITS: [(u8, &str); 8] = [
    (0x80, "BSY"),
    (0x40, "DRDY"),
    (0x20, "DF"),
    (0x10, "DSC"),
    (0x08, "DRQ"),
    (0x04, "CORR"),
    (0x02, "IDX"),
    (0x01, "ERR"),
];

/// A register value with the names of its set bits: `0x51 (DRDY DSC ERR)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bits {
    value: u8,
    names: &'static [(u8, &'static str)],
}

impl Bits {
    /// The status register `value`, named.
    pub fn status(value: u8) -> Bits {
        Bits {
            value,
            names: &STATUS_BITS,
        }
    }

    /// The error register `value`, named.
    pub fn error(value: u8) -> Bits {
        Bits {
            value,
            names: &ERROR_BITS,
        }
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.value)?;
        let mut first = true;
        for &(bit, name) in self.names {
            if self.value & bit != 0 {
                f.write_str(if first { " (" } else { ", " })?;
                f.write_str(name)?;
                first = false;
            }
        }
        if !first {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// What the LBA mid/high registers hold after a device rejects IDENTIFY DEVICE: its
/// signature (ATA8-APT §9.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// 0x00/0x00: a parallel ATA disk.
    Ata,
    /// 0x14/0xEB: an ATAPI device (CD/DVD drive), driven with packet commands.
    Atapi,
    /// 0x3C/0xC3: a SATA disk behind a legacy-mode controller.
    Sata,
    /// 0x69/0x96: a SATA ATAPI device.
    SataAtapi,
    /// Anything else.
    Unknown(u8, u8),
}

impl Signature {
    /// Decodes LBA mid and high.
    pub fn from_regs(mid: u8, high: u8) -> Signature {
        match (mid, high) {
            (0x00, 0x00) => Signature::Ata,
            (0x14, 0xEB) => Signature::Atapi,
            (0x3C, 0xC3) => Signature::Sata,
            (0x69, 0x96) => Signature::SataAtapi,
            (mid, high) => Signature::Unknown(mid, high),
        }
    }

    /// Whether it is a packet device (not a disk Keel drives).
    pub fn is_packet(self) -> bool {
        matches!(self, Signature::Atapi | Signature::SataAtapi)
    }
}

/// Largest LBA a 28-bit command addresses, plus one.
pub const LBA28_LIMIT: u64 = 1 << 28;
/// Largest LBA a 48-bit command addresses, plus one.
pub const LBA48_LIMIT: u64 = 1 << 48;
/// Sectors per 28-bit command (a count of 0 means 256).
pub const LBA28_MAX_SECTORS: u32 = 256;
/// Sectors per 48-bit command (a count of 0 means 65536).
pub const LBA48_MAX_SECTORS: u32 = 65536;

/// What IDENTIFY DEVICE says about a disk, the parts Keel uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Model number (words 27–46), trimmed.
    pub model: String,
    /// Serial number (words 10–19), trimmed.
    pub serial: String,
    /// Whether it takes LBA addressing (word 49 bit 9); CHS-only drives are refused.
    pub lba: bool,
    /// Whether it takes 48-bit commands (word 83 bit 10).
    pub lba48: bool,
    /// Addressable sectors: words 100–103 with LBA48, else words 60–61.
    pub sectors: u64,
    /// Bytes per logical sector (words 106, 117–118; 512 unless the drive says otherwise).
    pub sector_bytes: u32,
}

/// Why IDENTIFY DEVICE data is not a disk Keel drives.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Word 0 bit 15 set: an ATAPI (packet) device answered.
    #[error("IDENTIFY data says it is a packet (ATAPI) device, not a disk")]
    NotAta,
    /// The drive has no LBA addressing (CHS only: drives older than ATA-1994).
    #[error("drive supports only CHS addressing (IDENTIFY word 49 bit 9 clear): not supported")]
    NoLba,
    /// The drive reports no addressable sectors.
    #[error("drive reports 0 addressable sectors")]
    Empty,
    /// Logical sectors are not 512 bytes.
    #[error("drive has {0}-byte logical sectors: Keel handles 512-byte sectors only")]
    SectorSize(u32),
}

/// An IDENTIFY word from the 512-byte block. Shared with the AHCI driver, whose IDENTIFY
/// DEVICE answer has the same layout.
pub fn identify_word(data: &[u8], index: usize) -> u16 {
    match data.get(index * 2..index * 2 + 2) {
        Some(&[low, high]) => u16::from_le_bytes([low, high]),
        _ => 0,
    }
}

fn word(data: &[u8; SECTOR], index: usize) -> u16 {
    identify_word(data, index)
}

/// An ATA string in IDENTIFY data: words `first..=last`, each word's first character in its
/// high byte; unprintable bytes become spaces, and the padding is trimmed.
pub fn identify_string(data: &[u8], first: usize, last: usize) -> String {
    let mut bytes = Vec::with_capacity((last + 1).saturating_sub(first) * 2);
    for index in first..=last {
        let [low, high] = identify_word(data, index).to_le_bytes();
        bytes.push(high);
        bytes.push(low);
    }
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                ' '
            }
        })
        .collect();
    String::from(text.trim())
}

fn ata_string(data: &[u8; SECTOR], first: usize, last: usize) -> String {
    identify_string(data, first, last)
}

/// Parses IDENTIFY DEVICE data.
pub fn parse_identify(data: &[u8; SECTOR]) -> Result<Identity, IdentityError> {
    if word(data, 0) & 0x8000 != 0 {
        return Err(IdentityError::NotAta);
    }
    let lba = word(data, 49) & (1 << 9) != 0;
    // Word 83 is valid when bits 15:14 read 01.
    let w83 = word(data, 83);
    let lba48 = w83 & 0xC000 == 0x4000 && w83 & (1 << 10) != 0;
    let lba28_sectors = u64::from(word(data, 60)) | (u64::from(word(data, 61)) << 16);
    let lba48_sectors = (0..4).fold(0u64, |acc, i| {
        acc | (u64::from(word(data, 100 + i)) << (16 * i))
    });
    let sectors = if lba48 && lba48_sectors != 0 {
        lba48_sectors.min(LBA48_LIMIT)
    } else {
        lba28_sectors.min(LBA28_LIMIT)
    };
    // Word 106 is valid when bits 15:14 read 01; bit 12: logical sectors longer than 256
    // words, their length in words 117–118.
    let w106 = word(data, 106);
    let sector_bytes = if w106 & 0xC000 == 0x4000 && w106 & (1 << 12) != 0 {
        let words = u32::from(word(data, 117)) | (u32::from(word(data, 118)) << 16);
        words.saturating_mul(2)
    } else {
        SECTOR as u32
    };
    let identity = Identity {
        model: ata_string(data, 27, 46),
        serial: ata_string(data, 10, 19),
        lba,
        lba48,
        sectors,
        sector_bytes,
    };
    if !identity.lba {
        return Err(IdentityError::NoLba);
    }
    if identity.sector_bytes != SECTOR as u32 {
        return Err(IdentityError::SectorSize(identity.sector_bytes));
    }
    if identity.sectors == 0 {
        return Err(IdentityError::Empty);
    }
    Ok(identity)
}

/// One read or write command: what goes into the task file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The opcode.
    pub opcode: u8,
    /// First sector.
    pub lba: u64,
    /// Sectors, 1..=256 (28-bit) or 1..=65536 (48-bit).
    pub count: u32,
    /// Whether it is a 48-bit command (two writes per register, high bytes first).
    pub ext: bool,
}

/// Splits `count` sectors from `lba` into commands: 28-bit ones while the range fits below
/// 2^28 (fewer port writes, and every drive has them), 48-bit ones beyond (the drive must
/// support them; [`Identity::sectors`] is within LBA28 when it does not).
pub fn plan(lba: u64, count: u64, lba48: bool, write: bool) -> Vec<Transfer> {
    let mut out = Vec::new();
    let mut at = lba;
    let end = lba.saturating_add(count);
    while at < end {
        let left = end - at;
        let fits28 = at + left.min(u64::from(LBA28_MAX_SECTORS)) <= LBA28_LIMIT;
        let (ext, max) = if fits28 || !lba48 {
            (false, LBA28_MAX_SECTORS)
        } else {
            (true, LBA48_MAX_SECTORS)
        };
        let mut n = left.min(u64::from(max));
        if !ext {
            // A 28-bit command may not run past 2^28: stop there, the rest goes 48-bit.
            n = n.min(LBA28_LIMIT.saturating_sub(at)).max(1);
        }
        let opcode = match (write, ext) {
            (false, false) => command::READ_SECTORS,
            (false, true) => command::READ_SECTORS_EXT,
            (true, false) => command::WRITE_SECTORS,
            (true, true) => command::WRITE_SECTORS_EXT,
        };
        out.push(Transfer {
            opcode,
            lba: at,
            count: n as u32,
            ext,
        });
        at += n;
    }
    out
}

/// Legacy (compatibility-mode) ports of the two channels: command block, control block.
pub const LEGACY_PORTS: [PortBases; 2] = [
    PortBases {
        command: 0x1F0,
        control: 0x3F6,
    },
    PortBases {
        command: 0x170,
        control: 0x376,
    },
];

/// Prog-if bits of the PCI IDE function: the primary (bit 0) / secondary (bit 2) channel runs
/// in native mode, its ports in BAR0/1 (BAR2/3) rather than the legacy ones.
pub const PROG_IF_NATIVE: [u8; 2] = [1 << 0, 1 << 2];

/// Where one channel's registers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBases {
    /// Command block (data register at +0, status/command at +7).
    pub command: u16,
    /// Alternate status (read) / device control (write).
    pub control: u16,
}

/// Why a channel's ports are not known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelPortsError {
    /// The channel is in native mode but its BARs hold no usable I/O ports.
    #[error(
        "ide{channel} is in PCI native mode but BARs {}/{} hold no I/O ports",
        2 * channel,
        2 * channel + 1
    )]
    NativeWithoutBars {
        /// 0 primary, 1 secondary.
        channel: usize,
    },
}

/// Each channel's ports from the function's prog-if and its first four BARs (as I/O port
/// bases; `None` when a BAR is not an I/O BAR or not assigned). In native mode BAR 2i is
/// the command block and port 2 of BAR 2i+1 the control register.
pub fn channel_ports(
    prog_if: u8,
    io_bars: [Option<u16>; 4],
) -> [Result<PortBases, ChannelPortsError>; 2] {
    core::array::from_fn(|channel| {
        if prog_if & PROG_IF_NATIVE[channel] == 0 {
            return Ok(LEGACY_PORTS[channel]);
        }
        match (io_bars[2 * channel], io_bars[2 * channel + 1]) {
            (Some(command), Some(control)) if command != 0 && control != 0 => {
                let control = control
                    .checked_add(2)
                    .ok_or(ChannelPortsError::NativeWithoutBars { channel })?;
                Ok(PortBases { command, control })
            }
            _ => Err(ChannelPortsError::NativeWithoutBars { channel }),
        }
    })
}
