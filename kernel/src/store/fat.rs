//! A FAT16/FAT32 reader over a [`Disk`] (the guest-store partition): the BPB, cluster chains
//! and the root directory with long file names, and a file's [`Extent`]s, through which guest
//! disks write into the file's existing sectors (`super::file_disk`). Nothing here
//! writes the FAT or a directory; [`write`] does (create, delete, repair, free space).
//!
//! Why its own reader: crates.io `fatfs` 0.3 needs nightly (`core_io`) without `std`, and its
//! no_std-capable successor is unreleased; `embedded-sdmmc` builds on stable but locates
//! volumes through an MBR of its own, which a GPT partition view does not have. What the store
//! needs — list the root directory, read a file — is a few hundred lines that can be checked
//! against `fatfs`-written volumes (the image builder's own writer) in host tests.
//!
//! References: Microsoft "FAT: General Overview of On-Disk Format" (v1.03): the BPB fields,
//! the cluster-count rule that tells FAT12/16/32 apart, directory entries and the long-name
//! entries (§7) with their checksum. Every value from the disk is checked before use; a
//! corrupt volume gives a [`FatError`], never a panic or an endless loop.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::blk::disk::{Disk, DiskError, SECTOR, le16, le32};

/// Largest read sent to the disk at once (sectors): 64 KiB.
const MAX_RUN_SECTORS: u64 = 128;
/// Directory entry size.
const DIR_ENTRY: usize = 32;
/// Attribute bits.
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_LONG_NAME: u8 = 0x0f;
/// A long-name entry's order byte: last (first stored) entry flag.
const LFN_LAST: u8 = 0x40;
/// Name bytes of a deleted entry and of the end of the directory.
const DELETED: u8 = 0xe5;
/// Case flags of the NT reserved byte: base name / extension stored in lower case.
const NT_LOWER_BASE: u8 = 0x08;
const NT_LOWER_EXT: u8 = 0x10;

/// FAT16 or FAT32 (FAT12 volumes are refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatType {
    /// 16-bit cluster numbers, fixed root directory.
    Fat16,
    /// 28-bit cluster numbers, root directory in a cluster chain.
    Fat32,
}

impl fmt::Display for FatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        })
    }
}

/// Why the volume or a file cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FatError {
    /// Sector 0 is not a FAT boot sector (no 0x55AA, or zero geometry fields).
    #[error("not a FAT file system (no valid boot sector)")]
    NotFat,
    /// A FAT feature the reader does not handle.
    #[error("unsupported FAT volume: {0}")]
    Unsupported(&'static str),
    /// The boot sector's geometry does not fit the partition.
    #[error("corrupt FAT boot sector: {0}")]
    BadGeometry(&'static str),
    /// A cluster chain leads outside the volume, to a free cluster, or loops.
    #[error("corrupt FAT: bad cluster chain at cluster {cluster}")]
    BadChain {
        /// The cluster where it went wrong.
        cluster: u32,
    },
    /// A file's chain ends before its size.
    #[error("corrupt FAT: {name} ends before its recorded size")]
    Truncated {
        /// The file.
        name: String,
    },
    /// No file of this name in the root directory.
    #[error("no file named '{0}'")]
    NotFound(String),
    /// A name the store cannot hold.
    #[error("'{name}' cannot be a store file name: {why}")]
    BadName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A file of this name (ignoring case) exists already.
    #[error("a store file named '{0}' exists already (delete it first or pick another name)")]
    Exists(String),
    /// Not enough free clusters for the file.
    #[error(
        "the store has {free} bytes free, {needed} are needed (delete files or build a larger store with `keel build --store`)"
    )]
    NoSpace {
        /// Bytes the file needs (whole clusters).
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// A file larger than a FAT file can be (4 GiB - 1).
    #[error("{size} bytes do not fit one FAT file (at most 4294967295)")]
    TooLarge {
        /// The size asked for.
        size: u64,
    },
    /// The FAT16 root directory has no room for another name.
    #[error("the store's root directory is full (delete files)")]
    DirectoryFull,
    /// The content of a file being written could not be produced.
    #[error("content of '{name}': {why}")]
    Source {
        /// The file.
        name: String,
        /// What its producer said.
        why: String,
    },
    /// Reading the partition failed.
    #[error("{0}")]
    Disk(DiskError),
}

impl From<DiskError> for FatError {
    fn from(e: DiskError) -> Self {
        FatError::Disk(e)
    }
}

/// A run of consecutive sectors of the volume: `first_lba..first_lba + sectors`, relative to
/// the start of the partition that holds the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First sector.
    pub first_lba: u64,
    /// Number of sectors (at least 1).
    pub sectors: u64,
}

/// A file in the root directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The long name if it has a valid one, else the 8.3 name (case flags applied).
    pub name: String,
    /// Size in bytes.
    pub size: u32,
    /// First cluster (0 for an empty file).
    pub first_cluster: u32,
}

/// A mounted (read-only) volume: the geometry from its boot sector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatVolume {
    /// FAT16 or FAT32.
    pub fat_type: FatType,
    /// Sectors per cluster.
    pub sectors_per_cluster: u64,
    /// First sector of the first FAT.
    fat_start: u64,
    /// Sectors of one FAT.
    fat_sectors: u64,
    /// FAT16: first sector and sector count of the fixed root directory.
    root_start: u64,
    root_sectors: u64,
    /// FAT32: first cluster of the root directory.
    root_cluster: u32,
    /// First sector of cluster 2.
    data_start: u64,
    /// Number of data clusters (valid cluster numbers are 2..clusters + 2).
    clusters: u32,
    /// The volume label from the boot sector (spaces trimmed).
    pub label: String,
    /// Number of FAT copies (the writer keeps them all equal).
    fats: u64,
    /// FAT32: the FSInfo sector (free-cluster count and next-free hint), if the BPB names one.
    fsinfo_lba: Option<u64>,
}

impl FatVolume {
    /// Reads the boot sector of `disk` and checks its geometry against the disk's size.
    pub fn mount<D: Disk + ?Sized>(disk: &mut D) -> Result<FatVolume, FatError> {
        let mut b = [0u8; SECTOR];
        disk.read(0, &mut b)?;
        if b[510..] != [0x55, 0xaa] {
            return Err(FatError::NotFat);
        }
        let bytes_per_sector = le16(&b, 11);
        let spc = b[13];
        let reserved = u64::from(le16(&b, 14));
        let fats = u64::from(b[16]);
        let root_entries = u64::from(le16(&b, 17));
        let total16 = le16(&b, 19);
        let fat16_size = le16(&b, 22);
        let total32 = le32(&b, 32);
        let fat32_size = le32(&b, 36);
        if bytes_per_sector == 0 || spc == 0 || reserved == 0 || fats == 0 {
            return Err(FatError::NotFat);
        }
        if usize::from(bytes_per_sector) != SECTOR {
            return Err(FatError::Unsupported("sector size other than 512 bytes"));
        }
        if !spc.is_power_of_two() {
            return Err(FatError::BadGeometry(
                "sectors per cluster is not a power of two",
            ));
        }
        let total = if total16 != 0 {
            u64::from(total16)
        } else {
            u64::from(total32)
        };
        let fat_sectors = if fat16_size != 0 {
            u64::from(fat16_size)
        } else {
            u64::from(fat32_size)
        };
        if total == 0 || fat_sectors == 0 {
            return Err(FatError::BadGeometry("zero total or FAT size"));
        }
        if total > disk.sector_count() {
            return Err(FatError::BadGeometry("volume larger than its partition"));
        }
        let root_sectors = (root_entries * DIR_ENTRY as u64).div_ceil(SECTOR as u64);
        let root_start = reserved + fats * fat_sectors;
        let data_start = root_start + root_sectors;
        if data_start >= total {
            return Err(FatError::BadGeometry("no room for data clusters"));
        }
        let spc = u64::from(spc);
        let clusters = (total - data_start) / spc;
        // The cluster-count rule (FAT spec §3.5).
        let fat_type = if clusters < 4085 {
            return Err(FatError::Unsupported("FAT12"));
        } else if clusters < 65525 {
            FatType::Fat16
        } else {
            FatType::Fat32
        };
        let entry_bytes = if fat_type == FatType::Fat16 { 2 } else { 4 };
        if (clusters + 2) * entry_bytes > fat_sectors * SECTOR as u64 {
            return Err(FatError::BadGeometry("FAT too small for the clusters"));
        }
        let (root_cluster, label_at) = match fat_type {
            FatType::Fat16 => {
                if root_entries == 0 {
                    return Err(FatError::BadGeometry("FAT16 without root directory"));
                }
                (0, 43)
            }
            FatType::Fat32 => (le32(&b, 44) & 0x0fff_ffff, 71),
        };
        let label = b
            .get(label_at..label_at + 11)
            .map(|l| String::from_utf8_lossy(l).trim_end().into())
            .unwrap_or_default();
        let volume = FatVolume {
            fat_type,
            sectors_per_cluster: spc,
            fat_start: reserved,
            fat_sectors,
            root_start,
            root_sectors,
            root_cluster,
            data_start,
            clusters: clusters as u32,
            label,
            fats,
            fsinfo_lba: match fat_type {
                FatType::Fat32 => {
                    let at = u64::from(le16(&b, 48));
                    (at != 0 && at != 0xffff && at < reserved).then_some(at)
                }
                FatType::Fat16 => None,
            },
        };
        if fat_type == FatType::Fat32 && !volume.valid_cluster(root_cluster) {
            return Err(FatError::BadGeometry("root directory cluster out of range"));
        }
        Ok(volume)
    }

    /// Bytes per cluster.
    pub fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster * SECTOR as u64
    }

    fn valid_cluster(&self, cluster: u32) -> bool {
        cluster >= 2 && cluster - 2 < self.clusters
    }

    fn cluster_lba(&self, cluster: u32) -> u64 {
        self.data_start + u64::from(cluster - 2) * self.sectors_per_cluster
    }

    /// The files of the root directory (not directories, not the volume label), in directory
    /// order.
    pub fn list<D: Disk + ?Sized>(&self, disk: &mut D) -> Result<Vec<DirEntry>, FatError> {
        let mut parser = DirParser::new(self.fat_type == FatType::Fat32);
        let mut entries = Vec::new();
        let mut on_sectors = |bytes: &[u8]| {
            for raw in bytes.chunks_exact(DIR_ENTRY) {
                match parser.feed(raw) {
                    Step::End => return false,
                    Step::Skip => {}
                    Step::File(e) => entries.push(e),
                }
            }
            true
        };
        match self.fat_type {
            FatType::Fat16 => {
                let mut lba = self.root_start;
                let end = self.root_start + self.root_sectors;
                while lba < end {
                    let n = (end - lba).min(MAX_RUN_SECTORS);
                    let mut buf = vec![0u8; n as usize * SECTOR];
                    disk.read(lba, &mut buf)?;
                    if !on_sectors(&buf) {
                        break;
                    }
                    lba += n;
                }
            }
            FatType::Fat32 => {
                let mut done = false;
                self.walk_chain(disk, self.root_cluster, u64::MAX, |bytes| {
                    if !done && !on_sectors(bytes) {
                        done = true;
                    }
                    !done
                })?;
            }
        }
        Ok(entries)
    }

    /// The root-directory file called `name`: the exact name, else the only one that matches
    /// ignoring ASCII case (FAT names are case-insensitive).
    pub fn find<D: Disk + ?Sized>(&self, disk: &mut D, name: &str) -> Result<DirEntry, FatError> {
        let entries = self.list(disk)?;
        if let Some(e) = entries.iter().find(|e| e.name == name) {
            return Ok(e.clone());
        }
        entries
            .into_iter()
            .find(|e| e.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| FatError::NotFound(name.into()))
    }

    /// Reads `entry`'s content, handing it to `sink` in pieces of up to 64 KiB, in order.
    pub fn read_with<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        entry: &DirEntry,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), FatError> {
        let size = u64::from(entry.size);
        if size == 0 {
            return Ok(());
        }
        let mut left = size;
        self.walk_chain(disk, entry.first_cluster, size, |bytes| {
            let n = (bytes.len() as u64).min(left);
            sink(&bytes[..n as usize]);
            left -= n;
            left > 0
        })?;
        if left > 0 {
            return Err(FatError::Truncated {
                name: entry.name.clone(),
            });
        }
        Ok(())
    }

    /// Reads `entry`'s whole content.
    pub fn read<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        entry: &DirEntry,
    ) -> Result<Vec<u8>, FatError> {
        // A size no chain on this volume can hold is corrupt: refuse it before reserving
        // memory for it (a directory entry can claim up to 4 GiB; the kernel heap is at most
        // 64 MiB, and a failed allocation would stop the appliance).
        if u64::from(entry.size) > u64::from(self.clusters) * self.cluster_bytes() {
            return Err(FatError::Truncated {
                name: entry.name.clone(),
            });
        }
        let mut data = Vec::with_capacity(entry.size as usize);
        self.read_with(disk, entry, |chunk| data.extend_from_slice(chunk))?;
        Ok(data)
    }

    /// Where `entry`'s bytes lie on the volume: its cluster chain as runs of consecutive
    /// sectors (volume-relative LBAs, contiguous clusters merged), covering the file's first
    /// `size / 512` sectors. A trailing partial sector is left out: a guest disk made from the
    /// file has whole sectors only, and the bytes past the last whole sector are never touched.
    ///
    /// The walk is bounded by the file's size: a chain that ends early is
    /// [`FatError::Truncated`]; one that goes on past the cluster holding the last byte (a
    /// loop, or a cross-link) is [`FatError::BadChain`]. Nothing is written.
    pub fn extents<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        entry: &DirEntry,
    ) -> Result<Vec<Extent>, FatError> {
        let size = u64::from(entry.size);
        let whole_sectors = size / SECTOR as u64;
        let mut runs: Vec<Extent> = Vec::new();
        if size == 0 {
            return Ok(runs);
        }
        let clusters = size.div_ceil(self.cluster_bytes());
        let mut fat = FatCache::new();
        let mut cluster = entry.first_cluster;
        let mut sectors_left = whole_sectors;
        for walked in 1..=clusters {
            if !self.valid_cluster(cluster) {
                return Err(FatError::BadChain { cluster });
            }
            let take = sectors_left.min(self.sectors_per_cluster);
            if take > 0 {
                let lba = self.cluster_lba(cluster);
                match runs.last_mut() {
                    Some(run) if run.first_lba + run.sectors == lba => run.sectors += take,
                    _ => runs.push(Extent {
                        first_lba: lba,
                        sectors: take,
                    }),
                }
                sectors_left -= take;
            }
            let next = self.next_cluster(disk, &mut fat, cluster)?;
            match (next, walked == clusters) {
                (None, true) => return Ok(runs),
                (None, false) => {
                    return Err(FatError::Truncated {
                        name: entry.name.clone(),
                    });
                }
                // The chain goes on past the file's last cluster: a loop or a cross-link.
                (Some(_), true) => return Err(FatError::BadChain { cluster }),
                (Some(n), false) => cluster = n,
            }
        }
        // `clusters` >= 1, so the loop always returns; kept for the compiler.
        Err(FatError::BadChain { cluster })
    }

    /// Follows the chain from `first`, reading runs of consecutive clusters (up to 64 KiB) and
    /// handing them to `visit` until it returns `false`, the chain ends, or `max_bytes` have
    /// been read.
    fn walk_chain<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        first: u32,
        max_bytes: u64,
        mut visit: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), FatError> {
        let mut fat = FatCache::new();
        let mut cluster = first;
        let mut steps: u64 = 0;
        let mut read: u64 = 0;
        let run_limit = (MAX_RUN_SECTORS / self.sectors_per_cluster).max(1);
        loop {
            if !self.valid_cluster(cluster) {
                return Err(FatError::BadChain { cluster });
            }
            // Gather a run of consecutive clusters.
            let start = cluster;
            let mut count: u64 = 1;
            let mut next = self.next_cluster(disk, &mut fat, cluster)?;
            steps += 1;
            while let Some(n) = next {
                let wanted = u64::from(start) + count;
                if u64::from(n) != wanted
                    || count >= run_limit
                    || read + count * self.cluster_bytes() >= max_bytes
                {
                    break;
                }
                if !self.valid_cluster(n) {
                    return Err(FatError::BadChain { cluster: n });
                }
                count += 1;
                steps += 1;
                next = self.next_cluster(disk, &mut fat, n)?;
            }
            if steps > u64::from(self.clusters) {
                return Err(FatError::BadChain { cluster });
            }
            let mut buf = vec![0u8; (count * self.cluster_bytes()) as usize];
            disk.read(self.cluster_lba(start), &mut buf)?;
            read += buf.len() as u64;
            if read >= max_bytes {
                // A file's chain ends with the cluster holding its last byte; one that goes
                // on is cross-linked or loops.
                if next.is_some() {
                    return Err(FatError::BadChain {
                        cluster: start + count as u32 - 1,
                    });
                }
                visit(&buf);
                return Ok(());
            }
            if !visit(&buf) {
                return Ok(());
            }
            match next {
                Some(n) => cluster = n,
                None => return Ok(()),
            }
        }
    }

    /// The cluster after `cluster`: `Some(next)`, or `None` at the end of the chain.
    fn next_cluster<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        fat: &mut FatCache,
        cluster: u32,
    ) -> Result<Option<u32>, FatError> {
        let (offset, width) = match self.fat_type {
            FatType::Fat16 => (u64::from(cluster) * 2, 2),
            FatType::Fat32 => (u64::from(cluster) * 4, 4),
        };
        let sector = offset / SECTOR as u64;
        if sector >= self.fat_sectors {
            return Err(FatError::BadChain { cluster });
        }
        let bytes = fat.sector(disk, self.fat_start + sector)?;
        let at = (offset % SECTOR as u64) as usize;
        let value = match width {
            2 => {
                let v = u32::from(le16(bytes, at));
                if v >= 0xfff8 {
                    return Ok(None);
                }
                v
            }
            _ => {
                let v = le32(bytes, at) & 0x0fff_ffff;
                if v >= 0x0fff_fff8 {
                    return Ok(None);
                }
                v
            }
        };
        // Free (0), reserved (1), bad (0xFFF7 / 0x0FFFFFF7) and out-of-range all fail here.
        if !self.valid_cluster(value) {
            return Err(FatError::BadChain { cluster });
        }
        Ok(Some(value))
    }
}

/// The last FAT sector read.
struct FatCache {
    lba: Option<u64>,
    bytes: [u8; SECTOR],
}

impl FatCache {
    fn new() -> Self {
        FatCache {
            lba: None,
            bytes: [0; SECTOR],
        }
    }

    fn sector<D: Disk + ?Sized>(&mut self, disk: &mut D, lba: u64) -> Result<&[u8], FatError> {
        if self.lba != Some(lba) {
            self.lba = None;
            disk.read(lba, &mut self.bytes)?;
            self.lba = Some(lba);
        }
        Ok(&self.bytes)
    }
}

/// What one directory entry means.
enum Step {
    /// The end-of-directory marker.
    End,
    /// A long-name part, a deleted entry, a directory or the label.
    Skip,
    /// A file.
    File(DirEntry),
}

/// Long-name state across the entries of one file (FAT spec §7).
struct DirParser {
    /// Whether entries carry the high half of the first cluster.
    fat32: bool,
    /// UTF-16 units by entry (entry `n` holds units `13 * (n - 1)..13 * n`).
    units: Vec<u16>,
    /// The sequence number expected next (counting down to 1), 0 when none is pending.
    expect: u8,
    checksum: u8,
}

impl DirParser {
    fn new(fat32: bool) -> Self {
        DirParser {
            fat32,
            units: Vec::new(),
            expect: 0,
            checksum: 0,
        }
    }

    fn feed(&mut self, raw: &[u8]) -> Step {
        let first = raw[0];
        if first == 0 {
            return Step::End;
        }
        if first == DELETED {
            self.expect = 0;
            return Step::Skip;
        }
        let attr = raw[11];
        if attr & 0x3f == ATTR_LONG_NAME {
            self.long_part(raw);
            return Step::Skip;
        }
        let pending = core::mem::take(&mut self.expect);
        if attr & (ATTR_VOLUME_ID | ATTR_DIRECTORY) != 0 {
            return Step::Skip;
        }
        let short: &[u8; 11] = match raw[..11].try_into() {
            Ok(s) => s,
            Err(_) => return Step::Skip,
        };
        let long = (pending == 1 && self.checksum == short_checksum(short))
            .then(|| self.long_name())
            .flatten();
        let name = long.unwrap_or_else(|| short_name(short, raw[12]));
        // The high half is only meaningful on FAT32 (FAT16 keeps other data there).
        let hi = if self.fat32 {
            u32::from(le16(raw, 20))
        } else {
            0
        };
        Step::File(DirEntry {
            name,
            size: le32(raw, 28),
            first_cluster: hi << 16 | u32::from(le16(raw, 26)),
        })
    }

    fn long_part(&mut self, raw: &[u8]) {
        let order = raw[0];
        let seq = order & 0x1f;
        if seq == 0 || seq > 20 {
            self.expect = 0;
            return;
        }
        if order & LFN_LAST != 0 {
            self.units = vec![0xffff; usize::from(seq) * 13];
            self.checksum = raw[13];
        } else if self.expect != seq + 1 || raw[13] != self.checksum {
            // Out of order or from another name: forget the long name.
            self.expect = 0;
            return;
        }
        self.expect = seq;
        let base = usize::from(seq - 1) * 13;
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (k, at) in offsets.into_iter().enumerate() {
            if let Some(slot) = self.units.get_mut(base + k) {
                *slot = le16(raw, at);
            }
        }
    }

    fn long_name(&self) -> Option<String> {
        let units = self
            .units
            .iter()
            .copied()
            .take_while(|&u| u != 0 && u != 0xffff);
        let name: String = char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        (!name.is_empty()).then_some(name)
    }
}

/// The checksum of an 8.3 name that its long-name entries carry.
fn short_checksum(name: &[u8; 11]) -> u8 {
    name.iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// `NAME.EXT` from the 11-byte field, with the NT lower-case flags applied.
fn short_name(raw: &[u8; 11], nt_flags: u8) -> String {
    let mut base: Vec<u8> = raw[..8].to_vec();
    if base.first() == Some(&0x05) {
        base[0] = DELETED;
    }
    let trim = |b: &[u8]| -> Vec<u8> {
        let end = b.iter().rposition(|&c| c != b' ').map_or(0, |p| p + 1);
        b[..end].to_vec()
    };
    let mut base = trim(&base);
    let mut ext = trim(&raw[8..]);
    if nt_flags & NT_LOWER_BASE != 0 {
        base.make_ascii_lowercase();
    }
    if nt_flags & NT_LOWER_EXT != 0 {
        ext.make_ascii_lowercase();
    }
    // OEM code page bytes above 0x7F are shown as U+FFFD rather than guessed.
    let to_string = |b: Vec<u8>| -> String {
        b.into_iter()
            .map(|c| {
                if c.is_ascii() {
                    char::from(c)
                } else {
                    char::REPLACEMENT_CHARACTER
                }
            })
            .collect()
    };
    let mut name = to_string(base);
    if !ext.is_empty() {
        name.push('.');
        name.push_str(&to_string(ext));
    }
    name
}

#[path = "fat_write.rs"]
pub mod write;

#[cfg(test)]
#[path = "fat_tests.rs"]
mod tests;
