//! GUID Partition Table reading (UEFI 2.10 §5.2–5.3): the protective MBR, the primary header
//! at LBA 1 and, when that one is damaged, the backup header at the last LBA.
//!
//! [`read`] checks everything it trusts: the MBR signature and its 0xEE protective entry; the
//! header signature, size, CRC32 and own LBA; the entry size, count and array location
//! against the disk; the entry array's CRC32; and each used entry's LBA range. A damaged
//! primary (bad CRC, bad array) falls back to the backup; only when both are unusable does
//! it fail, with the primary's reason. Nothing here panics on any disk contents.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::disk::{Disk, DiskError, SECTOR, le16, le32, le64};

/// `EFI PART`.
pub const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Smallest header (the fields of revision 1.0).
pub const MIN_HEADER_SIZE: u32 = 92;
/// Smallest partition entry.
pub const MIN_ENTRY_SIZE: u32 = 128;
/// Largest entry array read (bytes): 128 entries of 128 bytes is usual; this allows 64×.
pub const MAX_ENTRY_ARRAY: u64 = 1 << 20;
/// MBR partition type of a GPT protective partition.
pub const MBR_PROTECTIVE_TYPE: u8 = 0xee;

/// A GUID as GPT stores it: the first three fields little-endian, the rest as bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written `aabbccdd-eeff-gghh-iijj-kkllmmnnoopp` as the number `0xaabbccdd_…`.
    pub const fn from_u128(v: u128) -> Guid {
        let b = v.to_be_bytes();
        Guid([
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ])
    }

    /// The all-zero GUID (an unused partition entry).
    pub const ZERO: Guid = Guid([0; 16]);
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for byte in &b[10..] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Which header the table came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderCopy {
    /// The primary, at LBA 1.
    Primary,
    /// The backup, at the last LBA.
    Backup,
}

impl fmt::Display for HeaderCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderCopy::Primary => "primary",
            HeaderCopy::Backup => "backup",
        })
    }
}

/// One used partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based index in the entry array (the partition number).
    pub number: u32,
    /// Partition type GUID.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub unique_guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA, inclusive.
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
    /// The name (UTF-16LE on disk, up to the first NUL; bad code units become U+FFFD).
    pub name: String,
}

impl Partition {
    /// Number of sectors.
    pub fn sectors(&self) -> u64 {
        self.last_lba - self.first_lba + 1
    }
}

/// A validated partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
    /// The disk GUID.
    pub disk_guid: Guid,
    /// The header the table was read from.
    pub header: HeaderCopy,
    /// Why the primary was not used, when the backup was.
    pub primary_error: Option<GptError>,
    /// First LBA usable by partitions.
    pub first_usable: u64,
    /// Last LBA usable by partitions.
    pub last_usable: u64,
    /// The used entries, in entry order.
    pub partitions: Vec<Partition>,
    /// The whole entry array as read (used and unused entries), so that a rewrite keeps
    /// every entry it does not change bit for bit.
    pub entries: EntryArray,
}

/// A GPT partition entry array, raw.
#[derive(Clone, PartialEq, Eq)]
pub struct EntryArray {
    /// Bytes per entry (a multiple of 128).
    pub entry_size: u32,
    /// `count × entry_size` bytes.
    pub bytes: Vec<u8>,
}

impl EntryArray {
    /// Number of entries.
    pub fn count(&self) -> u32 {
        (self.bytes.len() / self.entry_size.max(1) as usize) as u32
    }
}

impl fmt::Debug for EntryArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EntryArray({} × {} bytes)",
            self.count(),
            self.entry_size
        )
    }
}

/// Why a disk holds no usable GPT.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    /// The disk is too small to hold a GPT.
    #[error("disk of {sectors} sectors is too small for a GPT")]
    DiskTooSmall {
        /// Its sectors.
        sectors: u64,
    },
    /// LBA 0 lacks the 0x55AA boot signature.
    #[error("no partition table (no boot signature at LBA 0)")]
    NoMbr,
    /// The MBR has no 0xEE protective partition: not a GPT disk.
    #[error("MBR-partitioned disk, not GPT (no 0xEE protective partition)")]
    NotProtective,
    /// The header lacks `EFI PART`.
    #[error("no GPT header at LBA {lba}")]
    BadSignature {
        /// The LBA read.
        lba: u64,
    },
    /// The header size is below 92 bytes or above a sector.
    #[error("GPT header at LBA {lba} declares a bad size of {size} bytes")]
    BadHeaderSize {
        /// The LBA read.
        lba: u64,
        /// The declared size.
        size: u32,
    },
    /// The header CRC32 does not match.
    #[error("GPT header at LBA {lba} is corrupt (CRC32 mismatch)")]
    HeaderCrc {
        /// The LBA read.
        lba: u64,
    },
    /// The header says it lives elsewhere.
    #[error("GPT header at LBA {lba} claims to be at LBA {claimed}")]
    WrongLocation {
        /// The LBA read.
        lba: u64,
        /// The LBA the header names as its own.
        claimed: u64,
    },
    /// The entry size is not a multiple of 128 of at least 128, or the array is too large.
    #[error(
        "GPT header at LBA {lba} declares an unusable entry array \
         ({entries} entries of {entry_size} bytes)"
    )]
    BadEntryArray {
        /// The LBA of the header.
        lba: u64,
        /// Entry size.
        entry_size: u32,
        /// Number of entries.
        entries: u32,
    },
    /// The entry array does not lie on the disk.
    #[error("GPT header at LBA {lba} puts its entry array at LBA {array_lba}, off the disk")]
    EntryArrayOutOfRange {
        /// The LBA of the header.
        lba: u64,
        /// Where the array starts.
        array_lba: u64,
    },
    /// The entry array CRC32 does not match.
    #[error("GPT partition entries of the header at LBA {lba} are corrupt (CRC32 mismatch)")]
    EntryArrayCrc {
        /// The LBA of the header.
        lba: u64,
    },
    /// The usable range is not inside the disk.
    #[error("GPT header at LBA {lba} declares a usable range outside the disk")]
    BadUsableRange {
        /// The LBA of the header.
        lba: u64,
    },
    /// A used entry's range is backwards or outside the usable range.
    #[error("GPT partition {number} has an invalid range {first_lba}..={last_lba}")]
    BadPartition {
        /// The partition number.
        number: u32,
        /// Its first LBA.
        first_lba: u64,
        /// Its last LBA.
        last_lba: u64,
    },
    /// Reading the disk failed.
    #[error("reading the partition table: {0}")]
    Disk(DiskError),
}

impl From<DiskError> for GptError {
    fn from(e: DiskError) -> Self {
        GptError::Disk(e)
    }
}

fn guid(b: &[u8], at: usize) -> Guid {
    Guid(
        b.get(at..at + 16)
            .and_then(|s| s.try_into().ok())
            .unwrap_or([0; 16]),
    )
}

/// Reads and validates the GPT of `disk`.
pub fn read<D: Disk + ?Sized>(disk: &mut D) -> Result<Gpt, GptError> {
    let sectors = disk.sector_count();
    // MBR, primary header, at least one entry sector, and a backup header.
    if sectors < 4 {
        return Err(GptError::DiskTooSmall { sectors });
    }
    let mut mbr = [0u8; SECTOR];
    disk.read(0, &mut mbr)?;
    check_protective_mbr(&mbr)?;
    match read_header(disk, 1) {
        Ok(gpt) => Ok(gpt),
        Err(GptError::Disk(e)) => Err(GptError::Disk(e)),
        Err(primary) => match read_header(disk, sectors - 1) {
            Ok(mut gpt) => {
                gpt.primary_error = Some(primary);
                Ok(gpt)
            }
            Err(_) => Err(primary),
        },
    }
}

fn check_protective_mbr(mbr: &[u8; SECTOR]) -> Result<(), GptError> {
    if mbr[510..] != [0x55, 0xaa] {
        return Err(GptError::NoMbr);
    }
    // Four 16-byte entries from offset 446; the type byte is at +4.
    let protective = (0..4).any(|i| mbr[446 + i * 16 + 4] == MBR_PROTECTIVE_TYPE);
    if protective {
        Ok(())
    } else {
        Err(GptError::NotProtective)
    }
}

/// Reads the header at `lba` and its entry array.
fn read_header<D: Disk + ?Sized>(disk: &mut D, lba: u64) -> Result<Gpt, GptError> {
    let sectors = disk.sector_count();
    let mut h = [0u8; SECTOR];
    disk.read(lba, &mut h)?;
    if h[..8] != SIGNATURE {
        return Err(GptError::BadSignature { lba });
    }
    let size = le32(&h, 12);
    if !(MIN_HEADER_SIZE..=SECTOR as u32).contains(&size) {
        return Err(GptError::BadHeaderSize { lba, size });
    }
    let stored_crc = le32(&h, 16);
    let mut zeroed = h;
    zeroed[16..20].fill(0);
    if crc32fast::hash(&zeroed[..size as usize]) != stored_crc {
        return Err(GptError::HeaderCrc { lba });
    }
    let claimed = le64(&h, 24);
    if claimed != lba {
        return Err(GptError::WrongLocation { lba, claimed });
    }
    let first_usable = le64(&h, 40);
    let last_usable = le64(&h, 48);
    if first_usable > last_usable || last_usable >= sectors {
        return Err(GptError::BadUsableRange { lba });
    }
    let disk_guid = guid(&h, 56);
    let array_lba = le64(&h, 72);
    let entries = le32(&h, 80);
    let entry_size = le32(&h, 84);
    let array_bytes = u64::from(entries) * u64::from(entry_size);
    if entry_size < MIN_ENTRY_SIZE
        || !entry_size.is_multiple_of(MIN_ENTRY_SIZE)
        || array_bytes > MAX_ENTRY_ARRAY
    {
        return Err(GptError::BadEntryArray {
            lba,
            entry_size,
            entries,
        });
    }
    let array_sectors = array_bytes.div_ceil(SECTOR as u64).max(1);
    if array_lba < 1 || array_lba.saturating_add(array_sectors) > sectors {
        return Err(GptError::EntryArrayOutOfRange { lba, array_lba });
    }
    // At most 1 MiB by the check above.
    let mut array = vec![0u8; (array_sectors as usize) * SECTOR];
    disk.read(array_lba, &mut array)?;
    let array = &array[..array_bytes as usize];
    if crc32fast::hash(array) != le32(&h, 88) {
        return Err(GptError::EntryArrayCrc { lba });
    }
    let mut partitions = Vec::new();
    for (i, entry) in array.chunks_exact(entry_size as usize).enumerate() {
        let type_guid = guid(entry, 0);
        if type_guid == Guid::ZERO {
            continue;
        }
        let number = i as u32 + 1;
        let first_lba = le64(entry, 32);
        let last_lba = le64(entry, 40);
        if first_lba > last_lba || first_lba < first_usable || last_lba > last_usable {
            return Err(GptError::BadPartition {
                number,
                first_lba,
                last_lba,
            });
        }
        let units = (0..36)
            .map(|k| le16(entry, 56 + 2 * k))
            .take_while(|&u| u != 0);
        let name = char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        partitions.push(Partition {
            number,
            type_guid,
            unique_guid: guid(entry, 16),
            first_lba,
            last_lba,
            attributes: le64(entry, 48),
            name,
        });
    }
    Ok(Gpt {
        disk_guid,
        header: if lba == 1 {
            HeaderCopy::Primary
        } else {
            HeaderCopy::Backup
        },
        primary_error: None,
        first_usable,
        last_usable,
        partitions,
        entries: EntryArray {
            entry_size,
            bytes: array.to_vec(),
        },
    })
}

/// Reads and validates one copy of the table (the header at LBA 1 or at the last LBA and its
/// entries), without looking at the other; for [`repair`](super::gpt_write::repair).
pub fn read_copy<D: Disk + ?Sized>(disk: &mut D, copy: HeaderCopy) -> Result<Gpt, GptError> {
    let sectors = disk.sector_count();
    if sectors < 4 {
        return Err(GptError::DiskTooSmall { sectors });
    }
    let lba = match copy {
        HeaderCopy::Primary => 1,
        HeaderCopy::Backup => sectors - 1,
    };
    read_header(disk, lba)
}

/// Checks the protective MBR at LBA 0 of `disk`.
pub fn read_protective_mbr<D: Disk + ?Sized>(disk: &mut D) -> Result<(), GptError> {
    let mut mbr = [0u8; SECTOR];
    disk.read(0, &mut mbr)?;
    check_protective_mbr(&mbr)
}

#[cfg(test)]
#[path = "gpt_tests.rs"]
mod tests;
