//! The writer against `fatfs`-made volumes (FAT16 with two FATs as the image builder makes
//! the store, FAT32 with one and two), checked with Keel's reader, `fatfs` and `fsck.fat -n`,
//! and with a power cut injected after every single write.

use std::io::{Cursor, Read};
use std::string::{String, ToString};
use std::vec::Vec;

use super::*;
use crate::blk::disk::mem::MemDisk;
use crate::blk::disk::{DiskError, DiskOp};
use crate::blk::test_image::{self, noise};

/// A disk that loses power after `budget` writes: later writes never reach it.
struct CutDisk {
    inner: MemDisk,
    budget: usize,
    writes: usize,
}

impl Disk for CutDisk {
    fn sector_count(&self) -> u64 {
        self.inner.sector_count()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.inner.read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        if self.writes >= self.budget {
            return Err(DiskError::Device {
                op: DiskOp::Write,
                lba,
                detail: "power cut".into(),
            });
        }
        self.writes += 1;
        self.inner.write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.inner.flush()
    }
}

/// The image builder's store (FAT16, two FATs) holding two files.
fn fat16_store() -> MemDisk {
    let files = std::vec![
        ("vmlinuz", noise(300_000, 1)),
        ("a rather long name.img", noise(70_001, 2)),
    ];
    let (bytes, layout) = test_image::image(&files);
    let store = layout.store();
    let start = (store.first_lba * 512) as usize;
    MemDisk::new(bytes[start..start + (store.sectors * 512) as usize].to_vec())
}

/// A FAT32 volume of 36 MiB (512-byte clusters, just above the FAT32 cluster count) with
/// `fats` FATs and one file.
fn fat32_volume(fats: u8) -> MemDisk {
    let sectors: u64 = 36 * 2048;
    let mut image = Cursor::new(std::vec![0u8; (sectors * 512) as usize]);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .fats(fats)
            .bytes_per_cluster(512)
            .volume_label(*b"KEEL32     "),
    )
    .unwrap();
    {
        let fs = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new()).unwrap();
        use std::io::Write;
        fs.root_dir()
            .create_file("kernel")
            .unwrap()
            .write_all(&noise(5_000, 9))
            .unwrap();
    }
    MemDisk::new(image.into_inner())
}

/// `fsck.fat -n` over the volume: its exit code and output.
fn fsck(disk: &MemDisk) -> (i32, String) {
    let path = std::env::temp_dir().join(std::format!(
        "keel-fat-write-{}-{:?}.img",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, &disk.bytes).unwrap();
    let out = std::process::Command::new("fsck.fat")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("fsck.fat from dosfstools (image-builder/install-deps.sh installs it)");
    std::fs::remove_file(&path).unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn create_from(
    volume: &FatVolume,
    disk: &mut impl Disk,
    name: &str,
    data: &[u8],
) -> Result<DirEntry, FatError> {
    volume.create(
        disk,
        name,
        data.len() as u64,
        Some(1_765_000_000),
        |at, piece| {
            piece.copy_from_slice(&data[at as usize..at as usize + piece.len()]);
            Ok(())
        },
    )
}

fn read_named(volume: &FatVolume, disk: &mut MemDisk, name: &str) -> Option<Vec<u8>> {
    match volume.find(disk, name) {
        Ok(e) => Some(volume.read(disk, &e).unwrap()),
        Err(FatError::NotFound(_)) => None,
        Err(e) => panic!("{e}"),
    }
}

/// `fatfs` (another implementation) reads `name` back.
fn fatfs_read(disk: &MemDisk, name: &str) -> Vec<u8> {
    let fs =
        fatfs::FileSystem::new(Cursor::new(disk.bytes.clone()), fatfs::FsOptions::new()).unwrap();
    let mut out = Vec::new();
    fs.root_dir()
        .open_file(name)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn creates_reads_and_deletes_on_every_kind_of_volume() {
    for (label, mut disk) in [
        ("fat16", fat16_store()),
        ("fat32 one FAT", fat32_volume(1)),
        ("fat32 two FATs", fat32_volume(2)),
    ] {
        let volume = FatVolume::mount(&mut disk).unwrap();
        let before = volume.space(&mut disk).unwrap();
        let data = noise(1_234_567, 5);
        let name = "web-20261207-2013.keelsnap";
        let entry = create_from(&volume, &mut disk, name, &data).unwrap();
        assert_eq!(entry.size as usize, data.len());
        assert_eq!(
            read_named(&volume, &mut disk, name).as_deref(),
            Some(&data[..]),
            "{label}"
        );
        assert_eq!(fatfs_read(&disk, name), data, "{label}");
        let (rc, out) = fsck(&disk);
        assert_eq!(rc, 0, "{label}: {out}");
        let after = volume.space(&mut disk).unwrap();
        assert_eq!(
            before.free_bytes - after.free_bytes,
            (data.len() as u64).div_ceil(before.cluster_bytes) * before.cluster_bytes
        );
        // An empty file and a second one; names are case-insensitive.
        create_from(&volume, &mut disk, "empty.meta", &[]).unwrap();
        assert_eq!(
            read_named(&volume, &mut disk, "empty.meta"),
            Some(Vec::new())
        );
        assert_eq!(
            create_from(&volume, &mut disk, "EMPTY.META", b"x"),
            Err(FatError::Exists("EMPTY.META".into()))
        );
        // Delete gives the space back and leaves the other files alone.
        let freed = volume.delete(&mut disk, name).unwrap();
        assert_eq!(freed, before.free_bytes - after.free_bytes);
        assert_eq!(read_named(&volume, &mut disk, name), None);
        volume.delete(&mut disk, "empty.meta").unwrap();
        assert_eq!(volume.space(&mut disk).unwrap(), before, "{label}");
        let (rc, out) = fsck(&disk);
        assert_eq!(rc, 0, "{label}: {out}");
        assert_eq!(
            volume.delete(&mut disk, "gone"),
            Err(FatError::NotFound("gone".into()))
        );
    }
}

#[test]
fn many_files_grow_the_fat32_root_and_fill_fat16_s() {
    let mut disk = fat32_volume(2);
    let volume = FatVolume::mount(&mut disk).unwrap();
    // 512-byte clusters hold 16 entries: 40 names of 3 entries each need several clusters.
    for i in 0..40 {
        create_from(
            &volume,
            &mut disk,
            &std::format!("snapshot number {i}"),
            &[i as u8; 700],
        )
        .unwrap();
    }
    for i in 0..40 {
        assert_eq!(
            read_named(&volume, &mut disk, &std::format!("snapshot number {i}")),
            Some(std::vec![i as u8; 700])
        );
    }
    let (rc, out) = fsck(&disk);
    assert_eq!(rc, 0, "{out}");
}

#[test]
fn refusals_name_the_problem() {
    let mut disk = fat16_store();
    let volume = FatVolume::mount(&mut disk).unwrap();
    for bad in ["", "a/b", "x:y", "trailing.", " lead", "tab\there"] {
        assert!(
            matches!(
                create_from(&volume, &mut disk, bad, b"x"),
                Err(FatError::BadName { .. })
            ),
            "{bad:?}"
        );
    }
    let long: String = "n".repeat(MAX_NAME_UNITS + 1);
    assert!(matches!(
        create_from(&volume, &mut disk, &long, b"x"),
        Err(FatError::BadName { .. })
    ));
    let longest: String = "n".repeat(MAX_NAME_UNITS);
    create_from(&volume, &mut disk, &longest, b"x").unwrap();
    assert_eq!(
        read_named(&volume, &mut disk, &longest),
        Some(b"x".to_vec())
    );
    let space = volume.space(&mut disk).unwrap();
    let too_big = space.free_bytes + 1;
    assert!(matches!(
        volume.create(&mut disk, "huge", too_big, None, |_, _| Ok(())),
        Err(FatError::NoSpace { .. })
    ));
    assert_eq!(
        volume.create(&mut disk, "huge", 1 << 32, None, |_, _| Ok(())),
        Err(FatError::TooLarge { size: 1 << 32 })
    );
    // A producer's failure leaves no file.
    assert!(matches!(
        volume.create(&mut disk, "fails", 5000, None, |_, _| Err("vm gone".into())),
        Err(FatError::Source { .. })
    ));
    assert_eq!(read_named(&volume, &mut disk, "fails"), None);
    let (rc, out) = fsck(&disk);
    assert_eq!(rc, 0, "{out}");
}

/// The only complaints `fsck.fat -n` may have right after a cut (before Keel's repair):
/// lost clusters and FAT copies that differ, never a damaged file.
fn only_lost_clusters(out: &str) -> bool {
    out.lines().skip(1).all(|l| {
        let l = l.trim();
        l.is_empty()
            || l.starts_with("Reclaimed ")
            || l.starts_with("FATs differ but appear to be intact")
            || l.starts_with("Using first FAT")
            || l.starts_with("Free cluster summary")
            || l.starts_with("Auto-correcting")
            || l.starts_with("Leaving filesystem unchanged")
            || l.contains(" files, ")
    })
}

/// Cuts power after every write of `op` on `start`: each time the file is absent or whole
/// (Keel's reader and fsck agree), and after `repair` `fsck.fat -n` is clean.
fn cut_everywhere(
    label: &str,
    start: &MemDisk,
    op: impl Fn(&FatVolume, &mut CutDisk) -> Result<(), FatError>,
    name: &str,
    whole: &[u8],
) -> (usize, usize) {
    let volume = FatVolume::mount(&mut start.clone()).unwrap();
    let mut lost_states = 0;
    let mut budget = 0;
    loop {
        let mut disk = CutDisk {
            inner: start.clone(),
            budget,
            writes: 0,
        };
        let finished = op(&volume, &mut disk).is_ok();
        let mut image = disk.inner;
        match read_named(&volume, &mut image, name) {
            None => {}
            Some(content) => assert_eq!(content, whole, "{label}: cut after {budget} writes"),
        }
        let (rc, out) = fsck(&image);
        if rc != 0 {
            assert!(
                only_lost_clusters(&out),
                "{label}: cut after {budget} writes: {out}"
            );
            lost_states += 1;
        }
        volume.repair(&mut image).unwrap();
        let (rc, out) = fsck(&image);
        assert_eq!(rc, 0, "{label}: cut after {budget} writes, repaired: {out}");
        if finished {
            return (budget, lost_states);
        }
        budget += 1;
    }
}

#[test]
fn a_cut_after_any_write_leaves_no_file_or_the_whole_file() {
    let data = noise(200_000, 11);
    for (label, disk) in [
        ("fat16", fat16_store()),
        ("fat32 one FAT", fat32_volume(1)),
        ("fat32 two FATs", fat32_volume(2)),
    ] {
        let name = "vm snapshot.mem";
        let (writes, lost) = cut_everywhere(
            label,
            &disk,
            |v, d| create_from(v, d, name, &data).map(|_| ()),
            name,
            &data,
        );
        std::eprintln!(
            "{label}: create of {} bytes: {writes} writes, fsck rc 1 (lost clusters) after {lost} of the cuts",
            data.len()
        );
        // The same for a delete, from a volume holding the file.
        let mut with_file = disk.clone();
        let volume = FatVolume::mount(&mut with_file).unwrap();
        create_from(&volume, &mut with_file, name, &data).unwrap();
        let (writes, lost) = cut_everywhere(
            label,
            &with_file,
            |v, d| v.delete(d, name).map(|_| ()),
            name,
            &data,
        );
        std::eprintln!("{label}: delete: {writes} writes, fsck rc 1 after {lost} of the cuts");
    }
}

#[test]
fn repair_of_a_clean_volume_changes_nothing() {
    let mut disk = fat32_volume(2);
    let volume = FatVolume::mount(&mut disk).unwrap();
    let report = volume.repair(&mut disk).unwrap();
    assert_eq!(report, RepairReport::default());
    // Only FSInfo may change (a recount and a hint); a second repair changes nothing.
    let once = disk.bytes.clone();
    assert_eq!(volume.repair(&mut disk).unwrap(), RepairReport::default());
    assert!(disk.bytes == once);
    assert_eq!(fsck(&disk).0, 0);
}

#[test]
fn dos_dates() {
    assert_eq!(dos_date_time(None), ((1 << 5) | 1, 0));
    // 2026-12-07 20:13:58 UTC.
    let (date, time) = dos_date_time(Some(1_796_674_438));
    assert_eq!((date >> 9) + 1980, 2026);
    assert_eq!((date >> 5) & 0xf, 12);
    assert_eq!(date & 0x1f, 7);
    assert_eq!(time >> 11, 20);
    assert_eq!((time >> 5) & 0x3f, 13);
    assert_eq!((time & 0x1f) * 2, 58);
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
}
