//! GUID Partition Table writing: adding and removing a partition, and repairing one damaged
//! copy from the other (UEFI 2.10 §5.3).
//!
//! A table is changed in two steps: the pure planners ([`with_partition_added`],
//! [`with_partition_removed`]) make the new [`Gpt`] from the current one, and [`write_table`]
//! puts it on the disk. The write order keeps a readable table through a power cut at any
//! point, because [`gpt::read`](super::gpt::read) prefers the primary and falls back to the
//! backup:
//!
//! 1. backup entries, backup header, flush — the primary is untouched and still valid, so a
//!    cut here reads the old table;
//! 2. primary entries, primary header, flush — until the primary header lands, its CRC over
//!    the entries fails (or the entries are still old), so a cut here reads the new backup.
//!
//! After a cut the two copies can disagree (old primary, new backup) or one can be torn;
//! [`repair`], run at boot, rewrites the bad or disagreeing copy from the one the reader
//! uses, so both copies agree again before anything else writes.
//!
//! Each copy is written at its canonical place: primary entries at LBA 2, backup header at
//! the last LBA with its entries just before it. Every partition entry not changed is kept
//! byte for byte.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::disk::{Disk, DiskError, SECTOR};
use super::gpt::{self, Gpt, GptError, Guid, HeaderCopy, Partition};

/// Partitions made here start and end on 1 MiB boundaries.
pub const ALIGN_SECTORS: u64 = 2048;
/// GPT header revision 1.0.
const REVISION_1_0: u32 = 0x0001_0000;
/// Longest partition name: 36 UTF-16 code units.
pub const MAX_NAME_UNITS: usize = 36;
/// Byte offset of the name in an entry.
const NAME_OFFSET: usize = 56;

/// A run of free sectors, both ends on [`ALIGN_SECTORS`] boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeExtent {
    /// First sector.
    pub first_lba: u64,
    /// Number of sectors (a multiple of [`ALIGN_SECTORS`]).
    pub sectors: u64,
}

/// A partition to add.
#[derive(Clone, Copy, Debug)]
pub struct NewPartition<'a> {
    /// Its name (at most [`MAX_NAME_UNITS`] UTF-16 code units).
    pub name: &'a str,
    /// Its type.
    pub type_guid: Guid,
    /// Its unique GUID.
    pub unique_guid: Guid,
    /// Its size, a non-zero multiple of [`ALIGN_SECTORS`].
    pub sectors: u64,
}

/// Why a partition table could not be changed or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GptWriteError {
    /// The table on the disk is unusable.
    #[error("{0}")]
    Gpt(GptError),
    /// The disk failed.
    #[error("writing the partition table: {0}")]
    Disk(DiskError),
    /// A partition of that name exists.
    #[error("a partition named {name:?} already exists")]
    NameTaken {
        /// The name.
        name: alloc::string::String,
    },
    /// The name does not fit a GPT entry.
    #[error("partition name {name:?} is longer than {MAX_NAME_UNITS} UTF-16 code units")]
    NameTooLong {
        /// The name.
        name: alloc::string::String,
    },
    /// No partition of that name.
    #[error("no partition named {name:?}")]
    NoSuchPartition {
        /// The name.
        name: alloc::string::String,
    },
    /// Every entry of the array is used.
    #[error("the partition table is full: all {entries} entries are used")]
    NoFreeEntry {
        /// Entries in the array.
        entries: u32,
    },
    /// The size is 0 or not a multiple of 1 MiB.
    #[error("partition size of {sectors} sectors is not a non-zero multiple of 1 MiB")]
    BadSize {
        /// The size asked for.
        sectors: u64,
    },
    /// No free run of sectors is large enough.
    #[error(
        "no free space for {} MiB: the largest free space on the disk is {} MiB",
        wanted_sectors / ALIGN_SECTORS,
        largest_free_sectors / ALIGN_SECTORS
    )]
    NoSpace {
        /// Sectors asked for.
        wanted_sectors: u64,
        /// The largest aligned free run.
        largest_free_sectors: u64,
    },
    /// The entry arrays do not fit their canonical places between the headers and the
    /// usable range (a table Keel did not write, laid out unusually).
    #[error(
        "the partition table leaves no room for its {array_sectors}-sector entry arrays \
         at LBA 2 and before the backup header; Keel will not rewrite it"
    )]
    UnusualLayout {
        /// Sectors of one entry array.
        array_sectors: u64,
    },
}

impl From<DiskError> for GptWriteError {
    fn from(e: DiskError) -> Self {
        GptWriteError::Disk(e)
    }
}

/// Free space between the partitions of `gpt`, each run shrunk to [`ALIGN_SECTORS`]
/// boundaries; in disk order, empty runs left out.
pub fn free_extents(gpt: &Gpt) -> Vec<FreeExtent> {
    let mut used: Vec<(u64, u64)> = gpt
        .partitions
        .iter()
        .map(|p| (p.first_lba, p.last_lba))
        .collect();
    used.sort_unstable();
    let mut free = Vec::new();
    let mut next = gpt.first_usable;
    let mut push = |from: u64, to_inclusive: u64| {
        let first = from.div_ceil(ALIGN_SECTORS).saturating_mul(ALIGN_SECTORS);
        let end = (to_inclusive.saturating_add(1)) / ALIGN_SECTORS * ALIGN_SECTORS;
        if end > first {
            free.push(FreeExtent {
                first_lba: first,
                sectors: end - first,
            });
        }
    };
    for (first, last) in used {
        if first > next {
            push(next, first - 1);
        }
        next = next.max(last.saturating_add(1));
    }
    if next <= gpt.last_usable {
        push(next, gpt.last_usable);
    }
    free
}

/// `gpt` with `new` added in the first unused entry, placed at the start of the first free
/// run large enough; and the new partition.
pub fn with_partition_added(
    gpt: &Gpt,
    new: &NewPartition<'_>,
) -> Result<(Gpt, Partition), GptWriteError> {
    if new.sectors == 0 || !new.sectors.is_multiple_of(ALIGN_SECTORS) {
        return Err(GptWriteError::BadSize {
            sectors: new.sectors,
        });
    }
    if gpt.partitions.iter().any(|p| p.name == new.name) {
        return Err(GptWriteError::NameTaken {
            name: new.name.into(),
        });
    }
    let units: Vec<u16> = new.name.encode_utf16().collect();
    if units.len() > MAX_NAME_UNITS {
        return Err(GptWriteError::NameTooLong {
            name: new.name.into(),
        });
    }
    let entry_size = gpt.entries.entry_size as usize;
    let slot = gpt
        .entries
        .bytes
        .chunks_exact(entry_size)
        .position(|entry| entry[..16] == Guid::ZERO.0)
        .ok_or(GptWriteError::NoFreeEntry {
            entries: gpt.entries.count(),
        })?;
    let free = free_extents(gpt);
    let place =
        free.iter()
            .find(|run| run.sectors >= new.sectors)
            .ok_or(GptWriteError::NoSpace {
                wanted_sectors: new.sectors,
                largest_free_sectors: free.iter().map(|r| r.sectors).max().unwrap_or(0),
            })?;
    let partition = Partition {
        number: slot as u32 + 1,
        type_guid: new.type_guid,
        unique_guid: new.unique_guid,
        first_lba: place.first_lba,
        last_lba: place.first_lba + new.sectors - 1,
        attributes: 0,
        name: new.name.into(),
    };
    let mut table = gpt.clone();
    let entry = &mut table.entries.bytes[slot * entry_size..(slot + 1) * entry_size];
    entry.fill(0);
    entry[..16].copy_from_slice(&partition.type_guid.0);
    entry[16..32].copy_from_slice(&partition.unique_guid.0);
    entry[32..40].copy_from_slice(&partition.first_lba.to_le_bytes());
    entry[40..48].copy_from_slice(&partition.last_lba.to_le_bytes());
    for (i, unit) in units.iter().enumerate() {
        let at = NAME_OFFSET + 2 * i;
        entry[at..at + 2].copy_from_slice(&unit.to_le_bytes());
    }
    let at = table
        .partitions
        .iter()
        .position(|p| p.number > partition.number)
        .unwrap_or(table.partitions.len());
    table.partitions.insert(at, partition.clone());
    Ok((table, partition))
}

/// `gpt` without the partition named `name` (its entry zeroed); and the removed partition.
pub fn with_partition_removed(gpt: &Gpt, name: &str) -> Result<(Gpt, Partition), GptWriteError> {
    let at = gpt
        .partitions
        .iter()
        .position(|p| p.name == name)
        .ok_or(GptWriteError::NoSuchPartition { name: name.into() })?;
    let mut table = gpt.clone();
    let removed = table.partitions.remove(at);
    let entry_size = table.entries.entry_size as usize;
    let slot = removed.number as usize - 1;
    if let Some(entry) = table
        .entries
        .bytes
        .get_mut(slot * entry_size..(slot + 1) * entry_size)
    {
        entry.fill(0);
    }
    Ok((table, removed))
}

/// Where the two copies of a table go on a disk of `sectors` sectors.
struct Places {
    array_sectors: u64,
    primary_array: u64,
    backup_header: u64,
    backup_array: u64,
}

fn places(gpt: &Gpt, sectors: u64) -> Result<Places, GptWriteError> {
    let array_sectors = (gpt.entries.bytes.len() as u64)
        .div_ceil(SECTOR as u64)
        .max(1);
    let unusual = GptWriteError::UnusualLayout { array_sectors };
    let backup_header = sectors.checked_sub(1).ok_or(unusual.clone())?;
    let backup_array = backup_header
        .checked_sub(array_sectors)
        .ok_or(unusual.clone())?;
    if 2 + array_sectors > gpt.first_usable || gpt.last_usable >= backup_array {
        return Err(unusual);
    }
    Ok(Places {
        array_sectors,
        primary_array: 2,
        backup_header,
        backup_array,
    })
}

fn header_sector(gpt: &Gpt, copy: HeaderCopy, at: &Places) -> [u8; SECTOR] {
    let (own, other, array) = match copy {
        HeaderCopy::Primary => (1, at.backup_header, at.primary_array),
        HeaderCopy::Backup => (at.backup_header, 1, at.backup_array),
    };
    let mut h = [0u8; SECTOR];
    h[..8].copy_from_slice(&gpt::SIGNATURE);
    h[8..12].copy_from_slice(&REVISION_1_0.to_le_bytes());
    h[12..16].copy_from_slice(&gpt::MIN_HEADER_SIZE.to_le_bytes());
    h[24..32].copy_from_slice(&own.to_le_bytes());
    h[32..40].copy_from_slice(&other.to_le_bytes());
    h[40..48].copy_from_slice(&gpt.first_usable.to_le_bytes());
    h[48..56].copy_from_slice(&gpt.last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&gpt.disk_guid.0);
    h[72..80].copy_from_slice(&array.to_le_bytes());
    h[80..84].copy_from_slice(&gpt.entries.count().to_le_bytes());
    h[84..88].copy_from_slice(&gpt.entries.entry_size.to_le_bytes());
    h[88..92].copy_from_slice(&crc32fast::hash(&gpt.entries.bytes).to_le_bytes());
    let crc = crc32fast::hash(&h[..gpt::MIN_HEADER_SIZE as usize]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Writes one copy: its entries, then its header (no flush).
fn write_copy<D: Disk + ?Sized>(
    disk: &mut D,
    gpt: &Gpt,
    copy: HeaderCopy,
    at: &Places,
) -> Result<(), GptWriteError> {
    let mut array = vec![0u8; at.array_sectors as usize * SECTOR];
    array[..gpt.entries.bytes.len()].copy_from_slice(&gpt.entries.bytes);
    let (array_lba, header_lba) = match copy {
        HeaderCopy::Primary => (at.primary_array, 1),
        HeaderCopy::Backup => (at.backup_array, at.backup_header),
    };
    disk.write(array_lba, &array)?;
    disk.write(header_lba, &header_sector(gpt, copy, at))?;
    Ok(())
}

/// Writes `gpt` to `disk`: the backup copy, a flush, the primary copy, a flush (the order the
/// module documentation explains).
pub fn write_table<D: Disk + ?Sized>(disk: &mut D, gpt: &Gpt) -> Result<(), GptWriteError> {
    let at = places(gpt, disk.sector_count())?;
    write_copy(disk, gpt, HeaderCopy::Backup, &at)?;
    disk.flush()?;
    write_copy(disk, gpt, HeaderCopy::Primary, &at)?;
    disk.flush()?;
    Ok(())
}

/// What [`repair`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Both copies were valid and alike.
    NotNeeded,
    /// The primary was unusable and was rewritten from the backup.
    Primary {
        /// What was wrong with it.
        damage: GptError,
    },
    /// The backup was unusable, or held another table than the primary (a cut between the
    /// two halves of [`write_table`]), and was rewritten from the primary.
    Backup {
        /// What was wrong with it; `None` when it was valid but different.
        damage: Option<GptError>,
    },
    /// The disk is larger than the table spans (an image written to a larger disk, or a
    /// grown virtual disk): both copies were rewritten with the usable range reaching the
    /// new end and the backup at the last LBA.
    Grown {
        /// The last usable LBA before.
        from_last_usable: u64,
        /// The last usable LBA now.
        to_last_usable: u64,
        /// What was wrong with the primary, if anything.
        damage: Option<GptError>,
    },
}

impl Repair {
    /// Whether a copy was damaged or stale (worth a warning), as opposed to nothing or only
    /// growth.
    pub fn is_damage(&self) -> bool {
        match self {
            Repair::NotNeeded => false,
            Repair::Primary { .. } => true,
            Repair::Backup { damage } => damage.is_some(),
            Repair::Grown { damage, .. } => damage.is_some(),
        }
    }
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::NotNeeded => f.write_str("both GPT copies valid and alike"),
            Repair::Primary { damage } => {
                write!(f, "primary GPT rewritten from the backup ({damage})")
            }
            Repair::Backup { damage: Some(d) } => {
                write!(f, "backup GPT rewritten from the primary ({d})")
            }
            Repair::Backup { damage: None } => f.write_str(
                "backup GPT rewritten from the primary (it held a different table, \
                 left by an interrupted change)",
            ),
            Repair::Grown {
                from_last_usable,
                to_last_usable,
                damage,
            } => {
                write!(
                    f,
                    "GPT extended to the end of the disk: {} MiB more usable",
                    (to_last_usable - from_last_usable) / ALIGN_SECTORS
                )?;
                match damage {
                    Some(d) => write!(f, " (and a damaged copy rewritten: {d})"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Whether two valid copies describe the same table.
fn same_table(a: &Gpt, b: &Gpt) -> bool {
    a.disk_guid == b.disk_guid
        && a.first_usable == b.first_usable
        && a.last_usable == b.last_usable
        && a.entries == b.entries
}

/// Makes both copies of the table on `disk` valid and alike: the copy [`gpt::read`] would
/// use wins (the primary when valid), the other is rewritten from it and flushed. Fails,
/// writing nothing, when the disk has no usable table at all.
pub fn repair<D: Disk + ?Sized>(disk: &mut D) -> Result<Repair, GptWriteError> {
    gpt::read_protective_mbr(disk).map_err(GptWriteError::Gpt)?;
    let primary = gpt::read_copy(disk, HeaderCopy::Primary);
    let backup = gpt::read_copy(disk, HeaderCopy::Backup);
    // A failing disk is not damage to repair.
    for copy in [&primary, &backup] {
        if let Err(GptError::Disk(e)) = copy {
            return Err(GptWriteError::Disk(e.clone()));
        }
    }
    let (good, write, repair) = match (primary, backup) {
        (Ok(p), Ok(b)) if same_table(&p, &b) => (p, None, Repair::NotNeeded),
        (Ok(p), Ok(_)) => (p, Some(HeaderCopy::Backup), Repair::Backup { damage: None }),
        (Ok(p), Err(e)) => (
            p,
            Some(HeaderCopy::Backup),
            Repair::Backup { damage: Some(e) },
        ),
        (Err(e), Ok(b)) => (b, Some(HeaderCopy::Primary), Repair::Primary { damage: e }),
        (Err(e), Err(_)) => return Err(GptWriteError::Gpt(e)),
    };
    let sectors = disk.sector_count();
    let array_sectors = (good.entries.bytes.len() as u64)
        .div_ceil(SECTOR as u64)
        .max(1);
    // The last usable LBA when the backup entries sit just before the last LBA.
    let spanning = sectors.saturating_sub(2 + array_sectors);
    if spanning > good.last_usable {
        // Both copies rewritten in the safe order: a cut leaves the old table (the primary)
        // or the grown one, and the next boot finishes the job.
        let mut grown = good.clone();
        grown.last_usable = spanning;
        write_table(disk, &grown)?;
        // A backup missing at the new last LBA is what growth looks like, not damage.
        let damage = match repair {
            Repair::Primary { damage } => Some(damage),
            _ => None,
        };
        return Ok(Repair::Grown {
            from_last_usable: good.last_usable,
            to_last_usable: spanning,
            damage,
        });
    }
    if let Some(copy) = write {
        let at = places(&good, sectors)?;
        write_copy(disk, &good, copy, &at)?;
        disk.flush()?;
    }
    Ok(repair)
}

#[cfg(test)]
#[path = "gpt_write_tests.rs"]
mod tests;
