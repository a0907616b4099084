//! Host tests for `guest_disks`: argument parsing, and disk images that land in the store's
//! FAT at their full size with every cluster allocated.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use super::*;
use crate::fat::{Contents, FatFile};
use crate::gpt_image::{self, SECTOR};
use crate::grub::{GrubImages, fake_boot_img, fake_core_img};

#[test]
fn sizes() {
    for (text, bytes) in [
        ("512", 512),
        ("0", 0),
        ("64M", 64 << 20),
        ("64m", 64 << 20),
        ("64MiB", 64 << 20),
        ("1G", 1 << 30),
        ("20GB", 20 << 30),
        ("4K", 4096),
        ("2T", 2 << 40),
    ] {
        assert_eq!(parse_size(text), Some(bytes), "{text}");
    }
    for bad in [
        "",
        "M",
        "1.5G",
        "-1",
        "64X",
        "1 G",
        "99999999999999999999",
        "20000000T",
    ] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn disk_arguments() {
    assert_eq!(
        parse_disk_arg("data.img=64M").unwrap(),
        DiskRequest {
            name: "data.img".into(),
            bytes: 64 << 20,
            partition: false
        }
    );
    assert_eq!(
        parse_disk_arg("big=20G,partition").unwrap(),
        DiskRequest {
            name: "big".into(),
            bytes: 20 << 30,
            partition: true
        }
    );
    // The largest file disk, and one sector more.
    assert_eq!(
        parse_disk_arg("max.img=4294966784").unwrap().bytes,
        MAX_FILE_DISK_BYTES
    );
    let err = parse_disk_arg("Web Root.img=4G").unwrap_err();
    assert!(
        matches!(err, GuestDiskError::TooLargeForFile { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(
            "--disk web-root=4G,partition, and name it in the VM as partition = \"web-root\""
        ),
        "{err}"
    );
    for (arg, expected) in [
        ("data.img", "expected NAME=SIZE"),
        ("=64M", "expected NAME=SIZE"),
        ("data.img=", "expected NAME=SIZE"),
        ("data.img=64M,ro", "expected NAME=SIZE"),
        ("data.img=64Q", "is not a size"),
        ("data.img=1000", "must be a non-zero multiple of 512"),
        ("data.img=0", "must be a non-zero multiple of 512"),
        (
            "a:b=64M",
            "the file name holds a control character or one of",
        ),
    ] {
        let err = parse_disk_arg(arg).unwrap_err().to_string();
        assert!(err.contains(expected), "{arg}: {err}");
    }
    let disks = [
        parse_disk_arg("a.img=1M").unwrap(),
        parse_disk_arg("big=8M,partition").unwrap(),
    ];
    assert_eq!(
        partition_requests(&disks),
        [GuestPartitionRequest {
            name: "big".into(),
            bytes: 8 << 20
        }]
    );
}

/// A file that passes the ELF magic check.
fn fake_elf(path: &Path) -> Vec<u8> {
    let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
    bytes.extend((0..70_000u32).map(|i| (i % 251) as u8));
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// The clusters in use and the cluster size of the FAT volume in `bytes`.
fn used_clusters(bytes: Vec<u8>) -> (u64, u64) {
    let fs = fatfs::FileSystem::new(Cursor::new(bytes), fatfs::FsOptions::new()).unwrap();
    let stats = fs.stats().unwrap();
    (
        u64::from(stats.total_clusters() - stats.free_clusters()),
        u64::from(stats.cluster_size()),
    )
}

#[test]
fn staged_disks_and_firmware_land_in_the_image_store_fully_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("vmlinuz"), b"kernel bytes").unwrap();
    let firmware = tmp.path().join("hypervisor-fw.elf");
    let firmware_bytes = fake_elf(&firmware);
    let disks = [
        parse_disk_arg("data.img=24M").unwrap(),
        parse_disk_arg("small.img=1536").unwrap(),
        parse_disk_arg("big=2M,partition").unwrap(),
    ];
    let staging = StoreStaging::new(tmp.path(), Some(&store), &disks, Some(&firmware)).unwrap();
    let files = gpt_image::store_files(staging.path()).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        ["/data.img", "/hypervisor-fw", "/small.img", "/vmlinuz"]
    );

    let grub = GrubImages {
        boot_img: fake_boot_img(),
        core_img: fake_core_img(150_000),
        efi_img: b"MZ fake efi".to_vec(),
    };
    let out = tmp.path().join("keel.img");
    let summary = gpt_image::write_image_with_partitions(
        &grub,
        &[],
        &files,
        &keel_config::Config::default().to_json_pretty(),
        &partition_requests(&disks),
        &out,
    )
    .unwrap();
    drop(staging);
    let layout = summary.layout;
    // The store grew to hold the 24 MiB disk (its minimum is 16 MiB).
    assert!(layout.store_sectors * SECTOR > 24 << 20);
    assert_eq!(summary.guest_partitions.len(), 1);
    assert_eq!(summary.guest_partitions[0].name, "big");

    let spec = layout.store();
    let mut image = File::open(&out).unwrap();
    let mut volume = vec![0; (spec.sectors * SECTOR) as usize];
    image
        .seek(SeekFrom::Start(spec.first_lba * SECTOR))
        .unwrap();
    image.read_exact(&mut volume).unwrap();
    let mut cursor = Cursor::new(volume);
    let data = fat::read_file(&mut cursor, 0, spec.sectors, "data.img").unwrap();
    assert_eq!(data.len(), 24 << 20);
    assert!(data.iter().all(|&b| b == 0));
    assert_eq!(
        fat::read_file(&mut cursor, 0, spec.sectors, "small.img").unwrap(),
        vec![0; 1536]
    );
    assert_eq!(
        fat::read_file(&mut cursor, 0, spec.sectors, FIRMWARE_STORE_NAME).unwrap(),
        firmware_bytes
    );
    assert_eq!(
        fat::read_file(&mut cursor, 0, spec.sectors, "vmlinuz").unwrap(),
        b"kernel bytes"
    );
    // Every cluster of every file is allocated: the used clusters are exactly the files'
    // (FAT16: the root directory is outside the data area).
    let (used, cluster) = used_clusters(cursor.into_inner());
    let clusters = |bytes: u64| bytes.div_ceil(cluster);
    assert_eq!(
        used,
        clusters(24 << 20) + clusters(1536) + clusters(firmware_bytes.len() as u64) + clusters(12)
    );
}

#[test]
fn a_disk_written_into_fragmented_free_space_keeps_its_full_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let sectors = 16 * 2048; // 16 MiB, FAT16
    let mut disk = Cursor::new(vec![0u8; (sectors * SECTOR) as usize]);
    fat::format(&mut disk, 0, sectors, "KEELSTORE", 7).unwrap();
    let pattern = |seed: u8| -> Vec<u8> { (0..1u32 << 20).map(|i| (i as u8) ^ seed).collect() };
    let file = |name: &str, seed: u8| FatFile {
        path: format!("/{name}"),
        contents: Contents::Bytes(pattern(seed)),
    };
    fat::write_files(
        &mut disk,
        0,
        sectors,
        &[file("a", 1), file("b", 2), file("c", 3)],
    )
    .unwrap();
    // A hole where b was: the disk's first clusters go there, the rest after c.
    {
        let fs = fatfs::FileSystem::new(
            fat::Slice::new(&mut disk, 0, sectors * SECTOR).unwrap(),
            fatfs::FsOptions::new(),
        )
        .unwrap();
        fs.root_dir().remove("b").unwrap();
        fs.unmount().unwrap();
    }
    let (used_before, cluster) = used_clusters(disk.get_ref().clone());
    let staging = StoreStaging::new(
        tmp.path(),
        None,
        &[parse_disk_arg("vm.img=3M").unwrap()],
        None,
    )
    .unwrap();
    let staged = gpt_image::store_files(staging.path()).unwrap();
    fat::write_files(&mut disk, 0, sectors, &staged).unwrap();
    let (used_after, _) = used_clusters(disk.get_ref().clone());
    assert_eq!(used_after - used_before, (3u64 << 20).div_ceil(cluster));
    let image = fat::read_file(&mut disk, 0, sectors, "vm.img").unwrap();
    assert_eq!(image.len(), 3 << 20);
    assert!(image.iter().all(|&b| b == 0));
    // Its neighbours are untouched.
    assert_eq!(
        fat::read_file(&mut disk, 0, sectors, "a").unwrap(),
        pattern(1)
    );
    assert_eq!(
        fat::read_file(&mut disk, 0, sectors, "c").unwrap(),
        pattern(3)
    );
}

#[test]
fn staging_refuses_names_given_twice_and_a_firmware_that_is_not_elf() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("Data.img"), b"x").unwrap();
    let err = StoreStaging::new(
        tmp.path(),
        Some(&store),
        &[parse_disk_arg("data.img=1M").unwrap()],
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, GuestDiskError::DuplicateStoreFile { name, .. } if name == "data.img"),
        "{err}"
    );
    assert!(err.to_string().contains("--disk data.img"), "{err}");

    std::fs::write(store.join(FIRMWARE_STORE_NAME), b"x").unwrap();
    let firmware = tmp.path().join("fw");
    fake_elf(&firmware);
    let err = StoreStaging::new(tmp.path(), Some(&store), &[], Some(&firmware)).unwrap_err();
    assert!(
        matches!(err, GuestDiskError::DuplicateStoreFile { .. }),
        "{err}"
    );

    let not_elf = tmp.path().join("fw.bin");
    let mut f = File::create(&not_elf).unwrap();
    f.write_all(b"MZ not an elf").unwrap();
    let err = StoreStaging::new(tmp.path(), None, &[], Some(&not_elf)).unwrap_err();
    assert!(err.to_string().contains("is not an ELF file"), "{err}");
    let err = StoreStaging::new(tmp.path(), None, &[], Some(&tmp.path().join("gone"))).unwrap_err();
    assert!(err.to_string().contains("cannot read it"), "{err}");
    // Partitions are not store files: nothing staged for them.
    let staging = StoreStaging::new(
        tmp.path(),
        None,
        &[parse_disk_arg("big=8M,partition").unwrap()],
        None,
    )
    .unwrap();
    assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);
}
