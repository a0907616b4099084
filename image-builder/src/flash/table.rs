//! Reading a disk's partition table (protective MBR + GPT header + entries, or a classic MBR):
//! what `keel flash` shows about a target, and where the image's `esp` and `keel-config`
//! partitions are. Read-only and small on purpose: no CRC repair, no backup header.

use std::io::{Read, Seek, SeekFrom};

/// Bytes per logical block the tables are read with (what `keel build` writes; USB sticks and
/// SATA disks with 4 KiB logical blocks would need more, and are rare).
const LBA: u64 = 512;
/// GPT's "EFI PART" signature at the start of LBA 1.
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Most entries read (the GPT default array holds 128).
const MAX_ENTRIES: u32 = 256;

/// One partition as the table describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based index in the table.
    pub number: u32,
    /// GPT name (UTF-16LE, decoded); MBR: the type byte as `type 0x83`.
    pub name: String,
    /// First sector (512-byte LBA).
    pub first_lba: u64,
    /// Number of sectors.
    pub sectors: u64,
}

impl Partition {
    /// Byte offset of the partition's start.
    pub fn offset(&self) -> u64 {
        self.first_lba * LBA
    }

    /// Length in bytes.
    pub fn bytes(&self) -> u64 {
        self.sectors * LBA
    }
}

/// What the first sectors of a disk hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionTable {
    /// A GPT (behind a protective MBR).
    Gpt(Vec<Partition>),
    /// A classic MBR with primary partitions.
    Mbr(Vec<Partition>),
    /// Neither signature: blank, a bare file system, or something else.
    None,
}

impl PartitionTable {
    /// The partitions, empty for [`PartitionTable::None`].
    pub fn partitions(&self) -> &[Partition] {
        match self {
            PartitionTable::Gpt(p) | PartitionTable::Mbr(p) => p,
            PartitionTable::None => &[],
        }
    }

    /// The GPT partition named `name`.
    pub fn find(&self, name: &str) -> Option<&Partition> {
        match self {
            PartitionTable::Gpt(p) => p.iter().find(|p| p.name == name),
            _ => None,
        }
    }

    /// One line for the summary: `GPT: 1 bios-boot 1.0 MiB, 2 esp …` or `none found`.
    pub fn describe(&self) -> String {
        let list = |kind: &str, parts: &[Partition]| {
            if parts.is_empty() {
                return format!("{kind}, no partitions");
            }
            let items: Vec<String> = parts
                .iter()
                .map(|p| {
                    format!(
                        "{} {} ({})",
                        p.number,
                        p.name,
                        crate::gpt_image::human(p.bytes())
                    )
                })
                .collect();
            format!("{kind}: {}", items.join(", "))
        };
        match self {
            PartitionTable::Gpt(p) => list("GPT", p),
            PartitionTable::Mbr(p) => list("MBR", p),
            PartitionTable::None => "no partition table found".into(),
        }
    }
}

/// Reads the partition table at the start of `disk`. A disk shorter than two sectors, or
/// with neither an MBR nor a GPT signature, has [`PartitionTable::None`]; only I/O errors
/// other than a short read fail.
pub fn read_partition_table<R: Read + Seek>(disk: &mut R) -> std::io::Result<PartitionTable> {
    let mut head = [0u8; 2 * LBA as usize];
    disk.seek(SeekFrom::Start(0))?;
    if !read_full(disk, &mut head)? {
        return Ok(PartitionTable::None);
    }
    let (mbr, gpt_header) = head.split_at(LBA as usize);
    if mbr[510..512] != [0x55, 0xAA] {
        return Ok(PartitionTable::None);
    }
    let protective = (0..4).any(|i| mbr[446 + i * 16 + 4] == 0xEE);
    if protective && gpt_header[..8] == GPT_SIGNATURE[..] {
        return read_gpt(disk, gpt_header).map(PartitionTable::Gpt);
    }
    Ok(PartitionTable::Mbr(mbr_partitions(mbr)))
}

/// The four primary entries of an MBR, the used ones.
fn mbr_partitions(mbr: &[u8]) -> Vec<Partition> {
    (0..4)
        .filter_map(|i| {
            let e = &mbr[446 + i * 16..446 + (i + 1) * 16];
            let kind = e[4];
            let first = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
            let sectors = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
            (kind != 0 && sectors != 0).then(|| Partition {
                number: i as u32 + 1,
                name: format!("type {kind:#04x}"),
                first_lba: first,
                sectors,
            })
        })
        .collect()
}

fn read_gpt<R: Read + Seek>(disk: &mut R, header: &[u8]) -> std::io::Result<Vec<Partition>> {
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or([0; 8]));
    let entries_lba = u64_at(72);
    let count = u32_at(80).min(MAX_ENTRIES);
    let entry_size = u32_at(84);
    // The spec requires 128 × 2^n; anything else is not a GPT we can read.
    if entry_size < 128 || !entry_size.is_power_of_two() || entry_size > 4096 {
        return Ok(Vec::new());
    }
    let mut entries = vec![0u8; count as usize * entry_size as usize];
    disk.seek(SeekFrom::Start(entries_lba.saturating_mul(LBA)))?;
    if !read_full(disk, &mut entries)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, e) in entries.chunks_exact(entry_size as usize).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue; // unused entry: all-zero type GUID
        }
        let first = u64::from_le_bytes(e[32..40].try_into().unwrap_or([0; 8]));
        let last = u64::from_le_bytes(e[40..48].try_into().unwrap_or([0; 8]));
        let name_units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        out.push(Partition {
            number: i as u32 + 1,
            name: String::from_utf16_lossy(&name_units),
            first_lba: first,
            sectors: last.saturating_sub(first).saturating_add(1),
        });
    }
    Ok(out)
}

/// Fills `buf`; `false` when the source ends first.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn blank_and_short_disks_have_no_table() {
        assert_eq!(
            read_partition_table(&mut Cursor::new(vec![0u8; 4096])).unwrap(),
            PartitionTable::None
        );
        assert_eq!(
            read_partition_table(&mut Cursor::new(vec![0u8; 100])).unwrap(),
            PartitionTable::None
        );
    }

    #[test]
    fn an_mbr_lists_its_used_primary_entries() {
        let mut disk = vec![0u8; 4096];
        disk[510] = 0x55;
        disk[511] = 0xAA;
        let e = 446 + 16; // second entry
        disk[e + 4] = 0x0c;
        disk[e + 8..e + 12].copy_from_slice(&2048u32.to_le_bytes());
        disk[e + 12..e + 16].copy_from_slice(&4096u32.to_le_bytes());
        let table = read_partition_table(&mut Cursor::new(disk)).unwrap();
        assert_eq!(
            table,
            PartitionTable::Mbr(vec![Partition {
                number: 2,
                name: "type 0x0c".into(),
                first_lba: 2048,
                sectors: 4096
            }])
        );
        assert_eq!(table.describe(), "MBR: 2 type 0x0c (2.0 MiB)");
    }
}
