//! The FAT reader against volumes `fatfs` writes (through the image builder, and FAT32
//! directly), and against damaged copies of them.

use std::io::Cursor;
use std::vec::Vec;

use super::*;
use crate::blk::disk::mem::MemDisk;
use crate::blk::partition::PartitionView;
use crate::blk::test_image::{self, noise};

const LONG: &str = "a rather long file name, with spaces ünd ümlauts.bin";

fn files() -> Vec<(&'static str, Vec<u8>)> {
    std::vec![
        ("vmlinuz-6.1", noise(300_000, 1)),
        ("initrd.cpio", noise(5_000, 2)),
        ("README", b"upper-case 8.3 name".to_vec()),
        ("lower.txt", b"lower".to_vec()),
        ("empty", Vec::new()),
        (LONG, noise(70_001, 3)),
    ]
}

/// The store partition of a real image holding `files()`.
fn store_volume() -> MemDisk {
    let (bytes, layout) = test_image::image(&files());
    let store = layout.store();
    let start = (store.first_lba * 512) as usize;
    MemDisk::new(bytes[start..start + (store.sectors * 512) as usize].to_vec())
}

#[test]
fn lists_and_reads_the_image_store() {
    let mut disk = store_volume();
    let volume = FatVolume::mount(&mut disk).unwrap();
    assert_eq!(volume.fat_type, FatType::Fat16);
    assert_eq!(volume.label, "KEELSTORE");
    let mut listed = volume.list(&mut disk).unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let mut expected = files();
    expected.sort_by(|a, b| a.0.cmp(b.0));
    let names: Vec<_> = listed
        .iter()
        .map(|e| (e.name.as_str(), e.size as usize))
        .collect();
    let wanted: Vec<_> = expected.iter().map(|(n, b)| (*n, b.len())).collect();
    assert_eq!(names, wanted);
    for (name, content) in &expected {
        let entry = volume.find(&mut disk, name).unwrap();
        assert_eq!(&volume.read(&mut disk, &entry).unwrap(), content, "{name}");
    }
    // FAT names are case-insensitive.
    let entry = volume.find(&mut disk, "VMLINUZ-6.1").unwrap();
    assert_eq!(entry.name, "vmlinuz-6.1");
    assert_eq!(
        volume.find(&mut disk, "nope"),
        Err(FatError::NotFound("nope".into()))
    );
}

#[test]
fn reads_coalesce_into_large_requests() {
    let mut disk = store_volume();
    let volume = FatVolume::mount(&mut disk).unwrap();
    let entry = volume.find(&mut disk, "vmlinuz-6.1").unwrap();
    disk.reads = 0;
    let mut chunks = 0;
    volume
        .read_with(&mut disk, &entry, |_| chunks += 1)
        .unwrap();
    // 300 000 bytes in runs of up to 64 KiB, plus a few FAT sectors.
    assert!(chunks <= 6, "{chunks} chunks");
    assert!(disk.reads <= 12, "{} reads", disk.reads);
}

#[test]
fn works_through_a_partition_view() {
    let (bytes, layout) = test_image::image(&files());
    let mut disk = MemDisk::new(bytes);
    let store = layout.store();
    let mut view = PartitionView::new(&mut disk, store.first_lba, store.sectors).unwrap();
    let volume = FatVolume::mount(&mut view).unwrap();
    let entry = volume.find(&mut view, LONG).unwrap();
    assert_eq!(volume.read(&mut view, &entry).unwrap(), noise(70_001, 3));
}

#[test]
fn reads_fat32() {
    let sectors: u64 = 80 * 2048; // 80 MiB with 512-byte clusters: > 65525 clusters
    let mut image = Cursor::new(std::vec![0u8; (sectors * 512) as usize]);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_cluster(512)
            .volume_label(*b"KEEL32     "),
    )
    .unwrap();
    let big = noise(1_000_000, 7);
    {
        let fs = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new()).unwrap();
        use std::io::Write;
        let root = fs.root_dir();
        root.create_dir("subdir").unwrap();
        root.create_file("big.bin")
            .unwrap()
            .write_all(&big)
            .unwrap();
        // Enough entries to spill the root directory into a second cluster.
        for i in 0..40 {
            root.create_file(&std::format!("file number {i}.txt"))
                .unwrap()
                .write_all(std::format!("{i}").as_bytes())
                .unwrap();
        }
    }
    let mut disk = MemDisk::new(image.into_inner());
    let volume = FatVolume::mount(&mut disk).unwrap();
    assert_eq!(volume.fat_type, FatType::Fat32);
    let listed = volume.list(&mut disk).unwrap();
    assert_eq!(listed.len(), 41, "{listed:?}");
    assert!(listed.iter().all(|e| e.name != "subdir"));
    let entry = volume.find(&mut disk, "file number 39.txt").unwrap();
    assert_eq!(volume.read(&mut disk, &entry).unwrap(), b"39");
    let entry = volume.find(&mut disk, "big.bin").unwrap();
    assert_eq!(volume.read(&mut disk, &entry).unwrap(), big);
}

/// Byte offset of the FAT entry of `cluster` in a FAT16 volume.
fn fat16_entry(disk: &MemDisk, cluster: u32) -> usize {
    let reserved = u16::from_le_bytes([disk.bytes[14], disk.bytes[15]]) as usize;
    reserved * 512 + cluster as usize * 2
}

#[test]
fn corrupt_chains_are_errors() {
    let clean = store_volume();
    let mut disk = clean.clone();
    let volume = FatVolume::mount(&mut disk).unwrap();
    let entry = volume.find(&mut disk, "vmlinuz-6.1").unwrap();
    let first = entry.first_cluster;

    // Free cluster in the middle of the chain.
    let at = fat16_entry(&disk, first + 3);
    disk.bytes[at..at + 2].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        volume.read(&mut disk, &entry),
        Err(FatError::BadChain { .. })
    ));

    // A loop back to the first cluster.
    let mut disk = clean.clone();
    let at = fat16_entry(&disk, first + 3);
    disk.bytes[at..at + 2].copy_from_slice(&(first as u16).to_le_bytes());
    assert!(matches!(
        volume.read(&mut disk, &entry),
        Err(FatError::BadChain { .. })
    ));

    // End of chain before the size.
    let mut disk = clean.clone();
    let at = fat16_entry(&disk, first + 3);
    disk.bytes[at..at + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    assert_eq!(
        volume.read(&mut disk, &entry),
        Err(FatError::Truncated {
            name: "vmlinuz-6.1".into()
        })
    );

    // A size larger than the whole volume (found reading the code for the gpt_fat fuzz
    // target): refused before anything is reserved for it or read (the chain walk, which
    // used to find it after a 4 GiB reservation, reads the disk).
    let mut huge = entry.clone();
    huge.size = u32::MAX;
    let mut disk = clean.clone();
    disk.reads = 0;
    assert_eq!(
        volume.read(&mut disk, &huge),
        Err(FatError::Truncated {
            name: "vmlinuz-6.1".into()
        })
    );
    assert_eq!(disk.reads, 0);

    // A directory entry pointing outside the volume.
    let mut bad = entry.clone();
    bad.first_cluster = 0xfff0;
    assert!(matches!(
        volume.read(&mut disk, &bad),
        Err(FatError::BadChain { cluster: 0xfff0 })
    ));
}

#[test]
fn bad_boot_sectors_are_errors() {
    let clean = store_volume();
    let mut disk = clean.clone();
    disk.bytes[510] = 0;
    assert_eq!(FatVolume::mount(&mut disk), Err(FatError::NotFat));
    let mut disk = clean.clone();
    disk.bytes[11..13].copy_from_slice(&4096u16.to_le_bytes());
    assert!(matches!(
        FatVolume::mount(&mut disk),
        Err(FatError::Unsupported(_))
    ));
    let mut disk = clean.clone();
    disk.bytes[13] = 3;
    assert!(matches!(
        FatVolume::mount(&mut disk),
        Err(FatError::BadGeometry(_))
    ));
    // A volume larger than the partition.
    let mut disk = clean.clone();
    disk.bytes.truncate(disk.bytes.len() / 2);
    assert!(matches!(
        FatVolume::mount(&mut disk),
        Err(FatError::BadGeometry(_))
    ));
    assert_eq!(
        FatVolume::mount(&mut MemDisk::new(std::vec![0u8; 4096])),
        Err(FatError::NotFat)
    );
}

#[test]
fn garbage_never_panics() {
    let clean = store_volume();
    // Damage the boot sector, the FAT and the root directory at random.
    let head = 200 * 512;
    for seed in 0..200u64 {
        let mut disk = clean.clone();
        for pair in noise(48, seed).chunks(2) {
            let at = (usize::from(pair[0]) * 409 + seed as usize * 31) % head;
            disk.bytes[at] ^= pair[1] | 1;
        }
        if let Ok(volume) = FatVolume::mount(&mut disk)
            && let Ok(entries) = volume.list(&mut disk)
        {
            for e in entries.iter().take(8) {
                let _ = volume.read_with(&mut disk, e, |_| {});
                let _ = volume.extents(&mut disk, e);
            }
        }
    }
}

#[test]
fn short_names_and_checksums() {
    assert_eq!(short_name(b"README     ", 0), "README");
    assert_eq!(
        short_name(b"LOWER   TXT", NT_LOWER_BASE | NT_LOWER_EXT),
        "lower.txt"
    );
    assert_eq!(short_name(b"\x05BC     TXT", 0), "\u{fffd}BC.TXT");
    // The example of the FAT specification's checksum loop, recomputed by hand.
    let name = b"FOO     BAR";
    let mut sum = 0u8;
    for &b in name {
        sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
            .wrapping_add(sum >> 1)
            .wrapping_add(b);
    }
    assert_eq!(short_checksum(name), sum);
}

/// The file's bytes as its extents give them: the first `size / 512` sectors.
fn read_through_extents(disk: &mut MemDisk, extents: &[Extent]) -> Vec<u8> {
    let mut out = Vec::new();
    for run in extents {
        let mut buf = std::vec![0u8; run.sectors as usize * 512];
        disk.read(run.first_lba, &mut buf).unwrap();
        out.extend_from_slice(&buf);
    }
    out
}

#[test]
fn extents_cover_the_whole_sectors_of_a_file() {
    let mut disk = store_volume();
    let volume = FatVolume::mount(&mut disk).unwrap();
    for (name, content) in files() {
        let entry = volume.find(&mut disk, name).unwrap();
        let extents = volume.extents(&mut disk, &entry).unwrap();
        let whole = content.len() / 512 * 512;
        let sectors: u64 = extents.iter().map(|e| e.sectors).sum();
        assert_eq!(sectors as usize * 512, whole, "{name}");
        assert_eq!(
            read_through_extents(&mut disk, &extents),
            content[..whole],
            "{name}"
        );
        // Runs are merged: no run ends where the next begins.
        for pair in extents.windows(2) {
            assert_ne!(pair[0].first_lba + pair[0].sectors, pair[1].first_lba);
        }
    }
    // A file written in one go is one run.
    let entry = volume.find(&mut disk, "vmlinuz-6.1").unwrap();
    assert_eq!(volume.extents(&mut disk, &entry).unwrap().len(), 1);
    // Under one sector: no disk sectors at all.
    let entry = volume.find(&mut disk, "lower.txt").unwrap();
    assert_eq!(volume.extents(&mut disk, &entry).unwrap(), []);
}

/// A FAT32 volume where `a.img` and `b.img` were written in turns, so both are fragmented.
fn fragmented_fat32() -> (MemDisk, Vec<u8>, Vec<u8>) {
    let sectors: u64 = 80 * 2048;
    let mut image = Cursor::new(std::vec![0u8; (sectors * 512) as usize]);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_cluster(1024),
    )
    .unwrap();
    let a = noise(40 * 1024, 11);
    let b = noise(30 * 1024 + 700, 12);
    {
        use std::io::Write;
        let fs = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new()).unwrap();
        let root = fs.root_dir();
        let mut fa = root.create_file("a.img").unwrap();
        let mut fb = root.create_file("b.img").unwrap();
        let (mut ca, mut cb) = (a.chunks(3 * 1024), b.chunks(2 * 1024 + 100));
        loop {
            let (next_a, next_b) = (ca.next(), cb.next());
            if next_a.is_none() && next_b.is_none() {
                break;
            }
            fa.write_all(next_a.unwrap_or_default()).unwrap();
            fa.flush().unwrap();
            fb.write_all(next_b.unwrap_or_default()).unwrap();
            fb.flush().unwrap();
        }
    }
    (MemDisk::new(image.into_inner()), a, b)
}

#[test]
fn extents_of_fragmented_files() {
    let (mut disk, a, b) = fragmented_fat32();
    let volume = FatVolume::mount(&mut disk).unwrap();
    for (name, content) in [("a.img", &a), ("b.img", &b)] {
        let entry = volume.find(&mut disk, name).unwrap();
        let extents = volume.extents(&mut disk, &entry).unwrap();
        assert!(extents.len() > 3, "{name}: {extents:?}");
        let whole = content.len() / 512 * 512;
        assert_eq!(read_through_extents(&mut disk, &extents), content[..whole]);
    }
}

#[test]
fn in_place_writes_change_the_file_and_nothing_else() {
    use crate::store::file_disk::FileSectors;
    let (mut disk, a, b) = fragmented_fat32();
    let volume = FatVolume::mount(&mut disk).unwrap();
    let entry = volume.find(&mut disk, "b.img").unwrap();
    let file = FileSectors::new(volume.extents(&mut disk, &entry).unwrap());
    assert_eq!(file.sectors(), (b.len() / 512) as u64);
    let before = disk.clone();
    // Across several runs, up to the last whole sector.
    let new = noise(40 * 512, 99);
    let at = file.sectors() - 40;
    file.write(&mut disk, at, &new).unwrap();
    let mut expected_b = b.clone();
    expected_b[at as usize * 512..(at as usize + 40) * 512].copy_from_slice(&new);
    // Read back through the FAT reader and through `fatfs`.
    assert_eq!(volume.read(&mut disk, &entry).unwrap(), expected_b);
    {
        use std::io::Read;
        let mut cursor = Cursor::new(disk.bytes.clone());
        let fs = fatfs::FileSystem::new(&mut cursor, fatfs::FsOptions::new()).unwrap();
        let mut back = Vec::new();
        fs.root_dir()
            .open_file("b.img")
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, expected_b);
        let mut other = Vec::new();
        fs.root_dir()
            .open_file("a.img")
            .unwrap()
            .read_to_end(&mut other)
            .unwrap();
        assert_eq!(other, a);
    }
    // Only the file's sectors changed: the FATs and the directory are as they were.
    let changed: Vec<u64> = (0..disk.sector_count())
        .filter(|&s| {
            let r = s as usize * 512..(s as usize + 1) * 512;
            disk.bytes[r.clone()] != before.bytes[r]
        })
        .collect();
    let owned: Vec<u64> = file
        .runs()
        .iter()
        .flat_map(|r| r.first_lba..r.first_lba + r.sectors)
        .collect();
    assert!(!changed.is_empty());
    assert!(changed.iter().all(|s| owned.contains(s)), "{changed:?}");
}

#[test]
fn extents_of_corrupt_chains_are_errors() {
    let clean = store_volume();
    let mut disk = clean.clone();
    let volume = FatVolume::mount(&mut disk).unwrap();
    let entry = volume.find(&mut disk, "vmlinuz-6.1").unwrap();
    let first = entry.first_cluster;
    let clusters = 300_000u64.div_ceil(volume.cluster_bytes()) as u32;

    // A loop back to the first cluster: the walk stops at the file's size.
    let at = fat16_entry(&disk, first + 3);
    disk.bytes[at..at + 2].copy_from_slice(&(first as u16).to_le_bytes());
    assert!(matches!(
        volume.extents(&mut disk, &entry),
        Err(FatError::BadChain { .. })
    ));

    // A chain that ends early.
    let mut disk = clean.clone();
    let at = fat16_entry(&disk, first + 3);
    disk.bytes[at..at + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    assert_eq!(
        volume.extents(&mut disk, &entry),
        Err(FatError::Truncated {
            name: "vmlinuz-6.1".into()
        })
    );

    // A chain that goes on past the file's last cluster.
    let mut disk = clean.clone();
    let last = first + clusters - 1;
    let at = fat16_entry(&disk, last);
    disk.bytes[at..at + 2].copy_from_slice(&((last + 1) as u16).to_le_bytes());
    assert!(matches!(
        volume.extents(&mut disk, &entry),
        Err(FatError::BadChain { .. })
    ));

    // A free cluster in the chain, and a first cluster outside the volume.
    let mut disk = clean.clone();
    let at = fat16_entry(&disk, first + 1);
    disk.bytes[at..at + 2].copy_from_slice(&0u16.to_le_bytes());
    assert!(matches!(
        volume.extents(&mut disk, &entry),
        Err(FatError::BadChain { .. })
    ));
    let mut bad = entry.clone();
    bad.first_cluster = 0xfff0;
    assert!(matches!(
        volume.extents(&mut disk, &bad),
        Err(FatError::BadChain { cluster: 0xfff0 })
    ));
}
