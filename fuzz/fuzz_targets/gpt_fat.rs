//! Arbitrary bytes as a disk under the kernel's GPT reader (both header copies, the
//! protective MBR) and FAT reader (mount, the root directory, every file's extents and
//! content). Nothing may panic; errors are the expected answer for most inputs.
//!
//! The first byte chooses: bit 0 set recomputes the primary GPT header's and entry array's
//! CRC32s before reading, so mutations get past the checksums and reach the entries; bits
//! 1–3 (n) make the disk 2^(n+10) sectors when n > 0, zeros after the input, so a seed can
//! be the first sectors of a FAT16 volume (at least 4085 clusters) or of a GPT disk whose
//! backup header lies past the input.
#![no_main]

use keel_fuzz::SliceDisk;
use keel_fuzz::blk::disk::{Disk, SECTOR};
use keel_fuzz::blk::gpt::{self, HeaderCopy};
use keel_fuzz::store::fat::FatVolume;
use libfuzzer_sys::fuzz_target;

/// Rewrites the primary header's CRCs (header at LBA 1, entries where it says), if the
/// numbers it holds fit in `disk`.
fn fix_crcs(disk: &mut [u8]) {
    let header = SECTOR;
    if disk.len() < header + 92 {
        return;
    }
    let le32 = |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap());
    let entries_lba = u64::from_le_bytes(disk[header + 72..header + 80].try_into().unwrap());
    let count = le32(disk, header + 80) as usize;
    let size = le32(disk, header + 84) as usize;
    if let Some(start) = usize::try_from(entries_lba)
        .ok()
        .and_then(|lba| lba.checked_mul(SECTOR))
        && let Some(len) = count.checked_mul(size)
        && let Some(end) = start.checked_add(len)
        && end <= disk.len()
    {
        let crc = crc32fast::hash(&disk[start..end]);
        disk[header + 88..header + 92].copy_from_slice(&crc.to_le_bytes());
    }
    let header_size = (le32(disk, header + 12) as usize).clamp(92, SECTOR.min(disk.len() - header));
    disk[header + 16..header + 20].fill(0);
    let crc = crc32fast::hash(&disk[header..header + header_size]);
    disk[header + 16..header + 20].copy_from_slice(&crc.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut owned = bytes.to_vec();
    if mode & 1 != 0 {
        fix_crcs(&mut owned);
    }
    let n = (mode >> 1) & 7;
    let sectors = if n == 0 { 0 } else { 1u64 << (n + 10) };
    let mut disk = SliceDisk::new(&owned, sectors);

    let _ = gpt::read_protective_mbr(&mut disk);
    for copy in [HeaderCopy::Primary, HeaderCopy::Backup] {
        let _ = gpt::read_copy(&mut disk, copy);
    }
    if let Ok(table) = gpt::read(&mut disk) {
        assert!(table.first_usable <= table.last_usable);
        for p in &table.partitions {
            assert!(p.first_lba <= p.last_lba, "{p:?}");
            assert!(p.last_lba < disk.sector_count(), "{p:?}");
            assert!(p.sectors() >= 1);
        }
    }

    if let Ok(volume) = FatVolume::mount(&mut disk) {
        let _ = volume.cluster_bytes();
        let Ok(files) = volume.list(&mut disk) else {
            return;
        };
        for file in files.iter().take(8) {
            let _ = volume.find(&mut disk, &file.name);
            if let Ok(extents) = volume.extents(&mut disk, file) {
                for e in &extents {
                    assert!(e.first_lba + e.sectors <= disk.sector_count(), "{e:?}");
                }
            }
            // `read` reserves the size the directory entry claims; keep that within the
            // disk so the input's claim, not libFuzzer's malloc limit, decides.
            if u64::from(file.size) <= owned.len() as u64 {
                if let Ok(content) = volume.read(&mut disk, file) {
                    assert_eq!(content.len(), file.size as usize);
                }
            } else {
                let mut total = 0u64;
                let _ = volume.read_with(&mut disk, file, |chunk| total += chunk.len() as u64);
                assert!(total <= u64::from(file.size));
            }
        }
    }
});
