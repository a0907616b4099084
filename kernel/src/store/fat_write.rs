//! The store's writer: create a file, delete one, count free space, and repair what a power
//! cut in the middle of either leaves behind.
//!
//! Order of a create (a cut anywhere leaves either no file or the whole file):
//! 1. FAT32: the FSInfo free count becomes "unknown" (0xFFFFFFFF, which `fsck.fat` accepts);
//! 2. the data goes into free clusters (nobody refers to them yet), then a flush;
//! 3. the cluster chain goes into every FAT copy, first copy first, then a flush;
//! 4. the directory entries (long-name parts and the 8.3 entry, always in **one** sector, so
//!    the name appears whole in one write), then a flush — this write is the commit;
//! 5. FSInfo gets the true free count and the next-free hint, then a flush.
//!
//! A delete: FSInfo unknown; the 8.3 entry's sector (the commit: the file is gone), then
//! any long-name parts in other sectors; the chain freed in every FAT copy; FSInfo.
//!
//! What a cut between steps 3 and 4 (or inside a delete's freeing) leaves is a *lost chain*:
//! clusters marked used that no entry refers to, or FAT copies that differ. No file is
//! damaged, but `fsck.fat -n` (dosfstools 4.2) reports both ("Reclaimed N unused clusters",
//! "FATs differ but appear to be intact") and exits 1: FAT has no single write that both
//! allocates clusters and names them, so no order avoids that window. [`FatVolume::repair`]
//! closes it: it copies the first FAT over the others where they differ and frees every
//! used cluster that no root-directory entry reaches; Keel runs it before its first store
//! write after boot, and the store is `fsck.fat -n` clean again.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::{
    DELETED, DIR_ENTRY, DirEntry, FatError, FatType, FatVolume, LFN_LAST, MAX_RUN_SECTORS,
    short_checksum,
};
use crate::blk::disk::{Disk, SECTOR, le16, le32};

/// Bytes of the FSInfo free count and next-free hint.
const FSINFO_FREE: usize = 488;
const FSINFO_NEXT: usize = 492;
/// "Unknown" in both FSInfo fields.
const FSINFO_UNKNOWN: u32 = 0xffff_ffff;
/// Entries of one directory sector.
const SLOTS_PER_SECTOR: usize = SECTOR / DIR_ENTRY;
/// UTF-16 units one long-name entry holds.
const LFN_UNITS: usize = 13;
/// Longest name: its long-name parts and the 8.3 entry fit one sector.
pub const MAX_NAME_UNITS: usize = (SLOTS_PER_SECTOR - 1) * LFN_UNITS;
/// Where a long-name entry keeps its 13 units.
const LFN_OFFSETS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
/// Attribute of an ordinary file.
const ATTR_ARCHIVE: u8 = 0x20;

/// Free and total space of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceInfo {
    /// Bytes in free clusters.
    pub free_bytes: u64,
    /// Bytes in all data clusters.
    pub total_bytes: u64,
    /// Bytes per cluster (a file takes whole clusters).
    pub cluster_bytes: u64,
}

/// What [`FatVolume::repair`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// FAT sectors of the second (and later) copies made equal to the first.
    pub fat_sectors_mirrored: u64,
    /// Used clusters no entry reached, now free.
    pub clusters_reclaimed: u64,
    /// Lost clusters were not looked for: the root holds a directory, whose files this
    /// writer does not walk (Keel never makes one; the image builder does not either).
    pub reclaim_skipped: bool,
}

/// A directory slot: sector and index within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    lba: u64,
    index: usize,
}

/// A root-directory file with where its entries lie.
struct Located {
    entry: DirEntry,
    short: Slot,
    long: Vec<Slot>,
}

/// A scan of the root directory: its sectors, files and free slots.
struct RootScan {
    sectors: Vec<u64>,
    files: Vec<Located>,
    short_names: Vec<[u8; 11]>,
    has_directory: bool,
    /// FAT32: the last cluster of the root's chain.
    last_cluster: u32,
}

/// Changed FAT sectors (offsets within one FAT), written to every copy in order.
struct FatEdit {
    sectors: BTreeMap<u64, [u8; SECTOR]>,
}

impl FatEdit {
    fn new() -> Self {
        FatEdit {
            sectors: BTreeMap::new(),
        }
    }

    fn set<D: Disk + ?Sized>(
        &mut self,
        volume: &FatVolume,
        disk: &mut D,
        cluster: u32,
        value: u32,
    ) -> Result<(), FatError> {
        let (sector, at) = volume.fat_position(cluster)?;
        let bytes = match self.sectors.entry(sector) {
            alloc::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            alloc::collections::btree_map::Entry::Vacant(v) => {
                let mut b = [0u8; SECTOR];
                disk.read(volume.fat_start + sector, &mut b)?;
                v.insert(b)
            }
        };
        match volume.fat_type {
            FatType::Fat16 => bytes[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes()),
            FatType::Fat32 => {
                // The top four bits are reserved and kept.
                let old = le32(bytes, at) & 0xf000_0000;
                bytes[at..at + 4].copy_from_slice(&(old | (value & 0x0fff_ffff)).to_le_bytes());
            }
        }
        Ok(())
    }

    /// Writes the changed sectors to the first FAT, then to each other copy (runs of
    /// consecutive sectors in one request).
    fn commit<D: Disk + ?Sized>(&self, volume: &FatVolume, disk: &mut D) -> Result<(), FatError> {
        for copy in 0..volume.fats {
            let base = volume.fat_start + copy * volume.fat_sectors;
            let mut run: Vec<u8> = Vec::new();
            let mut run_start = 0u64;
            let mut next = None;
            for (&sector, bytes) in &self.sectors {
                if next != Some(sector) || run.len() >= MAX_RUN_SECTORS as usize * SECTOR {
                    if !run.is_empty() {
                        disk.write(base + run_start, &run)?;
                        run.clear();
                    }
                    run_start = sector;
                }
                run.extend_from_slice(bytes);
                next = Some(sector + 1);
            }
            if !run.is_empty() {
                disk.write(base + run_start, &run)?;
            }
        }
        Ok(())
    }
}

impl FatVolume {
    /// Sector (within one FAT) and byte offset of `cluster`'s entry.
    fn fat_position(&self, cluster: u32) -> Result<(u64, usize), FatError> {
        let width = match self.fat_type {
            FatType::Fat16 => 2,
            FatType::Fat32 => 4,
        };
        let offset = u64::from(cluster) * width;
        let sector = offset / SECTOR as u64;
        if sector >= self.fat_sectors {
            return Err(FatError::BadChain { cluster });
        }
        Ok((sector, (offset % SECTOR as u64) as usize))
    }

    /// The end-of-chain value.
    fn end_of_chain(&self) -> u32 {
        match self.fat_type {
            FatType::Fat16 => 0xffff,
            FatType::Fat32 => 0x0fff_ffff,
        }
    }

    /// Visits every data cluster's FAT entry (first copy) as `(cluster, value)`, reading the
    /// FAT in 64 KiB pieces.
    fn scan_fat<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        mut visit: impl FnMut(u32, u32),
    ) -> Result<(), FatError> {
        let width: usize = match self.fat_type {
            FatType::Fat16 => 2,
            FatType::Fat32 => 4,
        };
        let end = u64::from(self.clusters) + 2;
        let needed_sectors = (end * width as u64)
            .div_ceil(SECTOR as u64)
            .min(self.fat_sectors);
        let mut sector = 0u64;
        let mut buf = vec![0u8; MAX_RUN_SECTORS as usize * SECTOR];
        while sector < needed_sectors {
            let n = (needed_sectors - sector).min(MAX_RUN_SECTORS);
            let bytes = &mut buf[..n as usize * SECTOR];
            disk.read(self.fat_start + sector, bytes)?;
            let first = sector * SECTOR as u64 / width as u64;
            for (k, raw) in bytes.chunks_exact(width).enumerate() {
                let cluster = first + k as u64;
                if cluster < 2 || cluster >= end {
                    continue;
                }
                let value = match self.fat_type {
                    FatType::Fat16 => u32::from(le16(raw, 0)),
                    FatType::Fat32 => le32(raw, 0) & 0x0fff_ffff,
                };
                visit(cluster as u32, value);
            }
            sector += n;
        }
        Ok(())
    }

    /// Free and total space.
    pub fn space<D: Disk + ?Sized>(&self, disk: &mut D) -> Result<SpaceInfo, FatError> {
        let mut free = 0u64;
        self.scan_fat(disk, |_, v| free += u64::from(v == 0))?;
        Ok(SpaceInfo {
            free_bytes: free * self.cluster_bytes(),
            total_bytes: u64::from(self.clusters) * self.cluster_bytes(),
            cluster_bytes: self.cluster_bytes(),
        })
    }

    /// FAT32: sets FSInfo's free count and hint (`None`: both unknown).
    fn write_fsinfo<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        free_and_next: Option<(u32, u32)>,
    ) -> Result<(), FatError> {
        let Some(lba) = self.fsinfo_lba else {
            return Ok(());
        };
        let mut b = [0u8; SECTOR];
        disk.read(lba, &mut b)?;
        // Only a sector with FSInfo's signatures is one (else leave it alone).
        if le32(&b, 0) != 0x4161_5252 || le32(&b, 484) != 0x6141_7272 {
            return Ok(());
        }
        let (free, next) = free_and_next.unwrap_or((FSINFO_UNKNOWN, FSINFO_UNKNOWN));
        if le32(&b, FSINFO_FREE) == free && le32(&b, FSINFO_NEXT) == next {
            return Ok(());
        }
        b[FSINFO_FREE..FSINFO_FREE + 4].copy_from_slice(&free.to_le_bytes());
        b[FSINFO_NEXT..FSINFO_NEXT + 4].copy_from_slice(&next.to_le_bytes());
        disk.write(lba, &b)?;
        Ok(())
    }

    /// FAT32: recounts free clusters into FSInfo, the hint at `next`.
    fn refresh_fsinfo<D: Disk + ?Sized>(&self, disk: &mut D, next: u32) -> Result<(), FatError> {
        if self.fsinfo_lba.is_none() {
            return Ok(());
        }
        let free = (self.space(disk)?.free_bytes / self.cluster_bytes()) as u32;
        let next = if self.valid_cluster(next) {
            next
        } else {
            FSINFO_UNKNOWN
        };
        self.write_fsinfo(disk, Some((free, next)))
    }

    /// The clusters of a chain from `first`, bounded by the volume's cluster count.
    fn chain<D: Disk + ?Sized>(&self, disk: &mut D, first: u32) -> Result<Vec<u32>, FatError> {
        let mut fat = super::FatCache::new();
        let mut out = Vec::new();
        let mut cluster = first;
        loop {
            if !self.valid_cluster(cluster) || out.len() as u64 > u64::from(self.clusters) {
                return Err(FatError::BadChain { cluster });
            }
            out.push(cluster);
            match self.next_cluster(disk, &mut fat, cluster)? {
                Some(n) => cluster = n,
                None => return Ok(out),
            }
        }
    }

    /// Reads the root directory with where each file's entries lie.
    fn scan_root<D: Disk + ?Sized>(&self, disk: &mut D) -> Result<RootScan, FatError> {
        let (sectors, last_cluster) = match self.fat_type {
            FatType::Fat16 => (
                (self.root_start..self.root_start + self.root_sectors).collect(),
                0,
            ),
            FatType::Fat32 => {
                let clusters = self.chain(disk, self.root_cluster)?;
                let mut sectors = Vec::new();
                for &c in &clusters {
                    let lba = self.cluster_lba(c);
                    sectors.extend(lba..lba + self.sectors_per_cluster);
                }
                (
                    sectors,
                    clusters.last().copied().unwrap_or(self.root_cluster),
                )
            }
        };
        let mut scan = RootScan {
            sectors,
            files: Vec::new(),
            short_names: Vec::new(),
            has_directory: false,
            last_cluster,
        };
        let mut parser = super::DirParser::new(self.fat_type == FatType::Fat32);
        let mut long: Vec<Slot> = Vec::new();
        let mut b = [0u8; SECTOR];
        'sectors: for &lba in &scan.sectors {
            disk.read(lba, &mut b)?;
            for index in 0..SLOTS_PER_SECTOR {
                let raw = &b[index * DIR_ENTRY..(index + 1) * DIR_ENTRY];
                let slot = Slot { lba, index };
                if raw[0] != 0 && raw[0] != DELETED && raw[11] & 0x3f != super::ATTR_LONG_NAME {
                    if let Ok(short) = <[u8; 11]>::try_from(&raw[..11]) {
                        scan.short_names.push(short);
                    }
                    if raw[11] & super::ATTR_DIRECTORY != 0 {
                        scan.has_directory = true;
                    }
                }
                match parser.feed(raw) {
                    super::Step::End => break 'sectors,
                    super::Step::Skip => {
                        if raw[0] != DELETED && raw[11] & 0x3f == super::ATTR_LONG_NAME {
                            if raw[0] & LFN_LAST != 0 {
                                long.clear();
                            }
                            long.push(slot);
                        } else {
                            long.clear();
                        }
                    }
                    super::Step::File(entry) => {
                        scan.files.push(Located {
                            entry,
                            short: slot,
                            long: core::mem::take(&mut long),
                        });
                    }
                }
            }
        }
        Ok(scan)
    }

    /// FAT32: the root directory's own clusters (FAT16's root is outside the data area).
    fn root_chain<D: Disk + ?Sized>(&self, disk: &mut D) -> Result<Vec<u32>, FatError> {
        match self.fat_type {
            FatType::Fat16 => Ok(Vec::new()),
            FatType::Fat32 => self.chain(disk, self.root_cluster),
        }
    }

    /// Finds `count` free clusters from `hint` on (wrapping), as runs `(first, len)`.
    fn find_free<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        count: u64,
        hint: u32,
    ) -> Result<Vec<(u32, u32)>, FatError> {
        let mut total_free = 0u64;
        // Two passes: from the hint to the end, then from the start to the hint.
        let mut after: Vec<(u32, u32)> = Vec::new();
        let mut before: Vec<(u32, u32)> = Vec::new();
        let mut found_after = 0u64;
        let mut found_before = 0u64;
        self.scan_fat(disk, |cluster, value| {
            if value != 0 {
                return;
            }
            total_free += 1;
            let (runs, found) = if cluster >= hint {
                (&mut after, &mut found_after)
            } else {
                (&mut before, &mut found_before)
            };
            if *found >= count {
                return;
            }
            *found += 1;
            match runs.last_mut() {
                Some((first, len)) if *first + *len == cluster => *len += 1,
                _ => runs.push((cluster, 1)),
            }
        })?;
        if total_free < count {
            return Err(FatError::NoSpace {
                needed: count * self.cluster_bytes(),
                free: total_free * self.cluster_bytes(),
            });
        }
        let mut out = Vec::new();
        let mut left = count;
        for (first, len) in after.into_iter().chain(before) {
            if left == 0 {
                break;
            }
            let take = u64::from(len).min(left);
            out.push((first, take as u32));
            left -= take;
        }
        Ok(out)
    }

    /// The FSInfo next-free hint, else cluster 2.
    fn free_hint<D: Disk + ?Sized>(&self, disk: &mut D) -> Result<u32, FatError> {
        if let Some(lba) = self.fsinfo_lba {
            let mut b = [0u8; SECTOR];
            disk.read(lba, &mut b)?;
            let next = le32(&b, FSINFO_NEXT);
            if self.valid_cluster(next) {
                return Ok(next);
            }
        }
        Ok(2)
    }

    /// Creates the root-directory file `name` of `size` bytes, whose content `fill` writes
    /// piece by piece: `fill(offset, piece)` fills `piece` with the bytes at `offset..`
    /// (pieces come in order and cover the file exactly once). `modified` is the file's
    /// time (Unix seconds, `None` for 1980-01-01). See the module's comment for the order
    /// of writes that makes a cut leave no file or the whole file.
    pub fn create<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        name: &str,
        size: u64,
        modified: Option<u64>,
        mut fill: impl FnMut(u64, &mut [u8]) -> Result<(), String>,
    ) -> Result<DirEntry, FatError> {
        let units = check_name(name)?;
        let size32 = u32::try_from(size).map_err(|_| FatError::TooLarge { size })?;
        let scan = self.scan_root(disk)?;
        if scan
            .files
            .iter()
            .any(|f| f.entry.name.eq_ignore_ascii_case(name))
        {
            return Err(FatError::Exists(name.into()));
        }
        let needed = size.div_ceil(self.cluster_bytes());
        let hint = self.free_hint(disk)?;
        let runs = self.find_free(disk, needed, hint)?;
        self.write_fsinfo(disk, None)?;

        // Data into the free clusters: no entry or chain refers to them yet.
        let mut offset = 0u64;
        let mut buf = vec![0u8; MAX_RUN_SECTORS as usize * SECTOR];
        for &(first, len) in &runs {
            let mut lba = self.cluster_lba(first);
            let mut sectors_left = u64::from(len) * self.sectors_per_cluster;
            while sectors_left > 0 && offset < size {
                let n = sectors_left.min(MAX_RUN_SECTORS);
                let piece = &mut buf[..n as usize * SECTOR];
                let bytes = (size - offset).min(piece.len() as u64) as usize;
                piece.fill(0);
                fill(offset, &mut piece[..bytes]).map_err(|why| FatError::Source {
                    name: name.into(),
                    why,
                })?;
                let whole = bytes.div_ceil(SECTOR) * SECTOR;
                disk.write(lba, &piece[..whole])?;
                offset += bytes as u64;
                lba += n;
                sectors_left -= n;
            }
        }
        disk.flush()?;

        // The chain, in every FAT copy.
        let clusters: Vec<u32> = runs
            .iter()
            .flat_map(|&(first, len)| first..first + len)
            .collect();
        let mut edit = FatEdit::new();
        for (k, &c) in clusters.iter().enumerate() {
            let next = clusters.get(k + 1).copied().unwrap_or(self.end_of_chain());
            edit.set(self, disk, c, next)?;
        }
        edit.commit(self, disk)?;
        disk.flush()?;

        // The name, in one sector: the commit.
        let short = unique_short_name(name, &scan.short_names);
        let first_cluster = clusters.first().copied().unwrap_or(0);
        let entries = encode_entries(&units, &short, first_cluster, size32, modified);
        let slot = self.place_entries(disk, &scan, entries.len())?;
        let mut b = [0u8; SECTOR];
        disk.read(slot.lba, &mut b)?;
        for (k, e) in entries.iter().enumerate() {
            let at = (slot.index + k) * DIR_ENTRY;
            b[at..at + DIR_ENTRY].copy_from_slice(e);
        }
        disk.write(slot.lba, &b)?;
        disk.flush()?;

        let next = clusters.last().map_or(hint, |c| c + 1);
        self.refresh_fsinfo(disk, next)?;
        disk.flush()?;
        Ok(DirEntry {
            name: name.into(),
            size: size32,
            first_cluster,
        })
    }

    /// A sector and first slot with `count` free slots in a row, every end marker before
    /// them turned into a deleted entry (readers stop at the first end marker). FAT32 grows
    /// the root by a zeroed cluster when no sector has room.
    fn place_entries<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        scan: &RootScan,
        count: usize,
    ) -> Result<Slot, FatError> {
        let mut b = [0u8; SECTOR];
        let mut end_seen: Vec<u64> = Vec::new();
        for &lba in &scan.sectors {
            disk.read(lba, &mut b)?;
            let free = |i: usize| b[i * DIR_ENTRY] == 0 || b[i * DIR_ENTRY] == DELETED;
            let mut run = 0;
            let mut found = None;
            for i in 0..SLOTS_PER_SECTOR {
                run = if free(i) { run + 1 } else { 0 };
                if run == count {
                    found = Some(i + 1 - count);
                    break;
                }
            }
            if let Some(index) = found {
                self.open_end_markers(disk, &end_seen, Some(Slot { lba, index }))?;
                return Ok(Slot { lba, index });
            }
            if (0..SLOTS_PER_SECTOR).any(|i| b[i * DIR_ENTRY] == 0) {
                end_seen.push(lba);
            }
        }
        if self.fat_type == FatType::Fat16 {
            return Err(FatError::DirectoryFull);
        }
        // FAT32: a new zeroed cluster at the root's end.
        let hint = self.free_hint(disk)?;
        let runs = self.find_free(disk, 1, hint)?;
        let new = runs[0].0;
        let zeros = vec![0u8; self.cluster_bytes() as usize];
        disk.write(self.cluster_lba(new), &zeros)?;
        disk.flush()?;
        self.write_fsinfo(disk, None)?;
        let mut edit = FatEdit::new();
        edit.set(self, disk, new, self.end_of_chain())?;
        edit.commit(self, disk)?;
        let mut edit = FatEdit::new();
        edit.set(self, disk, scan.last_cluster, new)?;
        edit.commit(self, disk)?;
        disk.flush()?;
        self.open_end_markers(disk, &end_seen, None)?;
        Ok(Slot {
            lba: self.cluster_lba(new),
            index: 0,
        })
    }

    /// Turns the end markers in `sectors` (before `until`, in its sector) into deleted
    /// entries.
    fn open_end_markers<D: Disk + ?Sized>(
        &self,
        disk: &mut D,
        sectors: &[u64],
        until: Option<Slot>,
    ) -> Result<(), FatError> {
        let mut lbas: Vec<u64> = sectors.to_vec();
        if let Some(s) = until {
            lbas.push(s.lba);
        }
        let mut b = [0u8; SECTOR];
        for lba in lbas {
            disk.read(lba, &mut b)?;
            let limit = match until {
                Some(s) if s.lba == lba => s.index,
                _ => SLOTS_PER_SECTOR,
            };
            let mut changed = false;
            for i in 0..limit {
                if b[i * DIR_ENTRY] == 0 {
                    b[i * DIR_ENTRY] = DELETED;
                    changed = true;
                }
            }
            if changed {
                disk.write(lba, &b)?;
            }
        }
        disk.flush()?;
        Ok(())
    }

    /// Deletes the root-directory file `name` (exact, else case-insensitive); returns the
    /// bytes freed. The entry goes first (the commit), then the clusters.
    pub fn delete<D: Disk + ?Sized>(&self, disk: &mut D, name: &str) -> Result<u64, FatError> {
        let scan = self.scan_root(disk)?;
        let found = scan
            .files
            .iter()
            .find(|f| f.entry.name == name)
            .or_else(|| {
                scan.files
                    .iter()
                    .find(|f| f.entry.name.eq_ignore_ascii_case(name))
            })
            .ok_or_else(|| FatError::NotFound(name.into()))?;
        let clusters = if found.entry.first_cluster == 0 {
            Vec::new()
        } else {
            self.chain(disk, found.entry.first_cluster)?
        };
        self.write_fsinfo(disk, None)?;
        // The 8.3 entry's sector, with the long-name parts in it.
        let mut b = [0u8; SECTOR];
        disk.read(found.short.lba, &mut b)?;
        b[found.short.index * DIR_ENTRY] = DELETED;
        for s in found.long.iter().filter(|s| s.lba == found.short.lba) {
            b[s.index * DIR_ENTRY] = DELETED;
        }
        disk.write(found.short.lba, &b)?;
        let mut others: Vec<u64> = found
            .long
            .iter()
            .filter(|s| s.lba != found.short.lba)
            .map(|s| s.lba)
            .collect();
        others.dedup();
        for lba in others {
            disk.read(lba, &mut b)?;
            for s in found.long.iter().filter(|s| s.lba == lba) {
                b[s.index * DIR_ENTRY] = DELETED;
            }
            disk.write(lba, &b)?;
        }
        disk.flush()?;
        let mut edit = FatEdit::new();
        for &c in &clusters {
            edit.set(self, disk, c, 0)?;
        }
        edit.commit(self, disk)?;
        disk.flush()?;
        let hint = clusters.first().copied().unwrap_or(2);
        self.refresh_fsinfo(disk, hint)?;
        disk.flush()?;
        Ok(clusters.len() as u64 * self.cluster_bytes())
    }

    /// Makes the volume consistent after a cut in a create or delete: every FAT copy equal
    /// to the first, used clusters that no root entry reaches freed (skipped if the root
    /// holds a directory), FSInfo recounted.
    pub fn repair<D: Disk + ?Sized>(&self, disk: &mut D) -> Result<RepairReport, FatError> {
        let mut report = RepairReport::default();
        // Mirror the first FAT onto the others where they differ.
        let mut first = vec![0u8; MAX_RUN_SECTORS as usize * SECTOR];
        let mut other = vec![0u8; MAX_RUN_SECTORS as usize * SECTOR];
        let mut sector = 0;
        while sector < self.fat_sectors {
            let n = (self.fat_sectors - sector).min(MAX_RUN_SECTORS);
            let len = n as usize * SECTOR;
            disk.read(self.fat_start + sector, &mut first[..len])?;
            for copy in 1..self.fats {
                let lba = self.fat_start + copy * self.fat_sectors + sector;
                disk.read(lba, &mut other[..len])?;
                for k in 0..n as usize {
                    let range = k * SECTOR..(k + 1) * SECTOR;
                    if first[range.clone()] != other[range.clone()] {
                        disk.write(lba + k as u64, &first[range])?;
                        report.fat_sectors_mirrored += 1;
                    }
                }
            }
            sector += n;
        }
        let scan = self.scan_root(disk)?;
        if scan.has_directory {
            report.reclaim_skipped = true;
        } else {
            let words = (self.clusters as usize + 2).div_ceil(64);
            let mut reached = vec![0u64; words];
            let mut mark = |c: u32| reached[c as usize / 64] |= 1 << (c % 64);
            for c in self.root_chain(disk)? {
                mark(c);
            }
            for f in &scan.files {
                if f.entry.first_cluster != 0 {
                    // A damaged chain is not this repair's to judge: keep what it reaches.
                    let mut fat = super::FatCache::new();
                    let mut c = f.entry.first_cluster;
                    let mut steps = 0u64;
                    while self.valid_cluster(c) && steps <= u64::from(self.clusters) {
                        mark(c);
                        steps += 1;
                        match self.next_cluster(disk, &mut fat, c) {
                            Ok(Some(n)) => c = n,
                            _ => break,
                        }
                    }
                }
            }
            let bad = match self.fat_type {
                FatType::Fat16 => 0xfff7,
                FatType::Fat32 => 0x0fff_fff7,
            };
            let mut lost: Vec<u32> = Vec::new();
            self.scan_fat(disk, |c, v| {
                if v != 0 && v != bad && reached[c as usize / 64] & (1 << (c % 64)) == 0 {
                    lost.push(c);
                }
            })?;
            if !lost.is_empty() {
                self.write_fsinfo(disk, None)?;
                let mut edit = FatEdit::new();
                for &c in &lost {
                    edit.set(self, disk, c, 0)?;
                }
                edit.commit(self, disk)?;
                report.clusters_reclaimed = lost.len() as u64;
            }
        }
        disk.flush()?;
        let hint = self.free_hint(disk)?;
        self.refresh_fsinfo(disk, hint)?;
        disk.flush()?;
        Ok(report)
    }
}

/// Checks a long name; returns it as UTF-16 units.
fn check_name(name: &str) -> Result<Vec<u16>, FatError> {
    let bad = |why| FatError::BadName {
        name: name.into(),
        why,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.ends_with(['.', ' ']) || name.starts_with(' ') {
        return Err(bad("it starts with a space or ends with a space or dot"));
    }
    if name == "." || name == ".." {
        return Err(bad("it is a directory reference"));
    }
    if name
        .chars()
        .any(|c| c < ' ' || "\"*/:<>?\\|\u{7f}".contains(c))
    {
        return Err(bad(
            "it holds a control character or one of \" * / : < > ? \\ |",
        ));
    }
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > MAX_NAME_UNITS {
        return Err(bad("it is longer than 195 characters"));
    }
    Ok(units)
}

/// An 8.3 name for `name` that no entry in `taken` has: up to six letters or digits of the
/// name, `~N`, and up to three of its extension, in upper case.
fn unique_short_name(name: &str, taken: &[[u8; 11]]) -> [u8; 11] {
    let clean = |s: &str, max: usize| -> Vec<u8> {
        s.bytes()
            .filter(|b| b.is_ascii_alphanumeric())
            .map(|b| b.to_ascii_uppercase())
            .take(max)
            .collect()
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let mut base = clean(stem, 6);
    if base.is_empty() {
        base = b"FILE".to_vec();
    }
    let ext = clean(ext, 3);
    for n in 1u32.. {
        let tail = alloc::format!("~{n}");
        let keep = (8 - tail.len()).min(base.len());
        let mut short = [b' '; 11];
        short[..keep].copy_from_slice(&base[..keep]);
        short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        short[8..8 + ext.len()].copy_from_slice(&ext);
        if !taken.contains(&short) {
            return short;
        }
    }
    // `1u32..` only ends after four billion names, more than a directory holds.
    [b'_'; 11]
}

/// The long-name entries (last part first) and the 8.3 entry of a file.
fn encode_entries(
    units: &[u16],
    short: &[u8; 11],
    first_cluster: u32,
    size: u32,
    modified: Option<u64>,
) -> Vec<[u8; DIR_ENTRY]> {
    let parts = units.len().div_ceil(LFN_UNITS);
    let checksum = short_checksum(short);
    let mut out = Vec::with_capacity(parts + 1);
    for seq in (1..=parts).rev() {
        let mut e = [0u8; DIR_ENTRY];
        e[0] = seq as u8 | if seq == parts { LFN_LAST } else { 0 };
        e[11] = super::ATTR_LONG_NAME;
        e[13] = checksum;
        for (k, &at) in LFN_OFFSETS.iter().enumerate() {
            let i = (seq - 1) * LFN_UNITS + k;
            // After the name: one 0x0000, then 0xFFFF padding (FAT spec §7).
            let unit = match i.cmp(&units.len()) {
                core::cmp::Ordering::Less => units[i],
                core::cmp::Ordering::Equal => 0,
                core::cmp::Ordering::Greater => 0xffff,
            };
            e[at..at + 2].copy_from_slice(&unit.to_le_bytes());
        }
        out.push(e);
    }
    let mut e = [0u8; DIR_ENTRY];
    e[..11].copy_from_slice(short);
    e[11] = ATTR_ARCHIVE;
    let (date, time) = dos_date_time(modified);
    e[14..16].copy_from_slice(&time.to_le_bytes());
    e[16..18].copy_from_slice(&date.to_le_bytes());
    e[18..20].copy_from_slice(&date.to_le_bytes());
    e[20..22].copy_from_slice(&((first_cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes());
    e[24..26].copy_from_slice(&date.to_le_bytes());
    e[26..28].copy_from_slice(&(first_cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    out.push(e);
    out
}

/// FAT date and time of Unix seconds (UTC), clamped to 1980..=2107.
pub fn dos_date_time(unix: Option<u64>) -> (u16, u16) {
    let Some(secs) = unix else {
        return ((1 << 5) | 1, 0);
    };
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    if year < 1980 {
        return ((1 << 5) | 1, 0);
    }
    let year = year.min(2107);
    let date = (((year - 1980) as u16) << 9) | ((month as u16) << 5) | day as u16;
    let time =
        (((rem / 3600) as u16) << 11) | ((((rem / 60) % 60) as u16) << 5) | ((rem % 60) / 2) as u16;
    (date, time)
}

/// Proleptic Gregorian (year, month, day) of days since 1970-01-01: eras of 400 years
/// (146097 days), with the year starting in March so the leap day comes last.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[path = "fat_write_tests.rs"]
mod tests;
