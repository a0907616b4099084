//! Host tests for `gpt_image`: build images in a temp dir (fake GRUB blobs, and real GRUB where
//! installed) and read them back with the `gpt` and `fatfs` crates.

use super::*;
use crate::grub::{fake_boot_img, fake_core_img, grub_available};
use keel_config::Config;
use keel_config::record::{self, Slot, Slots};
use std::fs::File;
use std::io::Read;

/// The canonical JSON of the default configuration.
fn default_json() -> Vec<u8> {
    Config::default().to_json_pretty()
}

/// Reads the configuration partition of the image at `path` and returns its two slots.
fn config_slots(path: &Path, layout: &Layout) -> (Vec<u8>, Vec<u8>) {
    let spec = layout.config();
    let mut f = File::open(path).unwrap();
    let mut bytes = vec![0; (spec.sectors * SECTOR) as usize];
    f.seek(SeekFrom::Start(spec.first_lba * SECTOR)).unwrap();
    f.read_exact(&mut bytes).unwrap();
    let slots = Slots::new(spec.sectors, SECTOR as usize).unwrap();
    let b = (slots.start(Slot::B) * SECTOR) as usize;
    let slot_b = bytes.split_off(b);
    (bytes, slot_b)
}

/// A file that passes the ELF magic check.
fn fake_elf(dir: &Path) -> PathBuf {
    let path = dir.join("keel-kernel");
    std::fs::write(&path, crate::elf_strip::tests::sample_elf(300_000)).unwrap();
    path
}

fn fake_grub() -> GrubImages {
    GrubImages {
        boot_img: fake_boot_img(),
        core_img: fake_core_img(150_000),
        efi_img: b"MZ fake efi".to_vec(),
    }
}

fn open_gpt(path: &Path) -> gpt::GptDisk<File> {
    gpt::GptConfig::new()
        .writable(false)
        .only_valid_headers(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open(path)
        .unwrap()
}

/// Checks the GPT against `layout`: names, types, ranges, in table order.
fn check_gpt(path: &Path, layout: &Layout) {
    let disk = open_gpt(path);
    let parts = disk.partitions();
    assert_eq!(parts.len(), 4);
    for spec in layout.partitions() {
        let p = &parts[&spec.number];
        assert_eq!(p.name, spec.name);
        assert_eq!(p.part_type_guid.guid, spec.type_guid, "{}", spec.name);
        assert_eq!(p.first_lba, spec.first_lba, "{}", spec.name);
        assert_eq!(p.last_lba, spec.last_lba(), "{}", spec.name);
    }
    assert_eq!(
        parts[&1].part_type_guid.guid.to_string().to_uppercase(),
        "21686148-6449-6E6F-744E-656564454649"
    );
    assert_eq!(
        parts[&2].part_type_guid.guid.to_string().to_uppercase(),
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );
    assert_eq!(
        parts[&3].part_type_guid.guid.to_string(),
        "20442bb3-5151-4ecd-846b-efa36bb2491f"
    );
    let header = disk.header();
    assert!(header.first_usable <= BIOS_BOOT_START);
    assert!(header.last_usable >= layout.store().last_lba());
    assert_eq!(header.backup_lba, layout.total_sectors() - 1);
}

fn read_sector(path: &Path, lba: u64) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(lba * SECTOR)).unwrap();
    let mut buf = vec![0; SECTOR as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

fn esp_file(path: &Path, layout: &Layout, name: &str) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    let esp = layout.esp();
    // fatfs wants a writable stream; work on a copy of the ESP in memory.
    let mut bytes = vec![0; (esp.sectors * SECTOR) as usize];
    f.seek(SeekFrom::Start(esp.first_lba * SECTOR)).unwrap();
    f.read_exact(&mut bytes).unwrap();
    fat::read_file(&mut std::io::Cursor::new(bytes), 0, esp.sectors, name).unwrap()
}

fn volume_label(path: &Path, spec: &PartitionSpec) -> (Option<String>, usize) {
    let mut f = File::open(path).unwrap();
    let mut bytes = vec![0; (spec.sectors * SECTOR) as usize];
    f.seek(SeekFrom::Start(spec.first_lba * SECTOR)).unwrap();
    f.read_exact(&mut bytes).unwrap();
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(bytes), fatfs::FsOptions::new()).unwrap();
    let label = fs.read_volume_label_from_root_dir().unwrap();
    let entries = fs.root_dir().iter().count();
    (label, entries)
}

#[test]
fn layout_is_aligned_contiguous_and_52_mib_by_default() {
    let layout = Layout::for_esp_payload(2 << 20);
    assert_eq!(layout.esp_sectors, ESP_MIN_SECTORS);
    let parts = layout.partitions();
    for pair in parts.windows(2) {
        assert_eq!(pair[0].last_lba() + 1, pair[1].first_lba);
    }
    for p in &parts {
        assert_eq!(p.first_lba % ALIGN_SECTORS, 0, "{}", p.name);
        assert_eq!(p.sectors % ALIGN_SECTORS, 0, "{}", p.name);
    }
    assert_eq!(parts[0].first_lba, 2048);
    assert_eq!(parts[0].last_lba(), 4095);
    assert_eq!(parts[2].sectors * SECTOR, 1 << 20);
    assert_eq!(parts[3].sectors * SECTOR, 16 << 20);
    assert_eq!(layout.total_sectors() * SECTOR, 52 << 20);
}

#[test]
fn esp_grows_with_the_payload() {
    let layout = Layout::for_esp_payload(100 << 20);
    assert!(layout.esp_sectors * SECTOR >= (100 << 20) + (12 << 20));
    assert_eq!(layout.esp_sectors % ALIGN_SECTORS, 0);
    assert_eq!(layout.store().first_lba % ALIGN_SECTORS, 0);
}

#[test]
fn written_image_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let elf = fake_elf(tmp.path());
    let module = tmp.path().join("guest.bin");
    std::fs::write(&module, b"guest payload").unwrap();
    let files = vec![
        FatFile {
            path: EFI_LOADER_PATH.into(),
            contents: Contents::Bytes(b"MZ fake efi".to_vec()),
        },
        FatFile {
            path: GRUB_CFG_PATH.into(),
            contents: Contents::Bytes(b"set timeout=0\n".to_vec()),
        },
        FatFile {
            path: KERNEL_PATH.into(),
            contents: Contents::File(elf.clone()),
        },
        FatFile {
            path: format!("{MODULES_DIR}/guest.bin"),
            contents: Contents::File(module),
        },
    ];
    let out = tmp.path().join("keel.img");
    let grub_images = fake_grub();
    let mut config = crate::tls_cert::default_config("0123456789abcdef0123456789abcdef");
    config.hostname = "readback".into();
    let summary = write_image(&grub_images, &files, &[], &config.to_json_pretty(), &out).unwrap();
    let layout = summary.layout;
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        layout.total_sectors() * SECTOR
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
    assert_eq!(summary.kernel_bytes, std::fs::metadata(&elf).unwrap().len());
    assert_eq!(summary.modules, vec![("guest.bin".to_string(), 13)]);
    assert_eq!(summary.core_img_bytes, 150_016);
    assert!(summary.describe().iter().any(|l| l.contains("keel-config")));

    check_gpt(&out, &layout);

    // Protective MBR: GRUB boot code pointing at LBA 2048, 0xEE partition, signature.
    let mbr = read_sector(&out, 0);
    let code = grub::mbr_boot_code(&grub_images.boot_img, 2048).unwrap();
    assert_eq!(&mbr[..440], &code[..]);
    assert_eq!(
        u64::from_le_bytes(mbr[0x5C..0x64].try_into().unwrap()),
        2048
    );
    assert_eq!(mbr[446 + 4], 0xEE);
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);

    // core.img at LBA 2048 with its block list describing LBA 2049.. (293 more sectors).
    let core0 = read_sector(&out, BIOS_BOOT_START);
    assert_eq!(
        u64::from_le_bytes(core0[0x1F4..0x1FC].try_into().unwrap()),
        2049
    );
    assert_eq!(u16::from_le_bytes([core0[0x1FC], core0[0x1FD]]), 292);
    assert_eq!(u16::from_le_bytes([core0[0x1FE], core0[0x1FF]]), 0x820);
    assert_eq!(&core0[..0x1F4], &grub_images.core_img[..0x1F4]);
    let core1 = read_sector(&out, BIOS_BOOT_START + 1);
    assert_eq!(&core1[..], &grub_images.core_img[512..1024]);

    // ESP contents.
    assert_eq!(esp_file(&out, &layout, EFI_LOADER_PATH), b"MZ fake efi");
    assert_eq!(esp_file(&out, &layout, GRUB_CFG_PATH), b"set timeout=0\n");
    assert_eq!(
        esp_file(&out, &layout, KERNEL_PATH),
        std::fs::read(&elf).unwrap()
    );
    assert_eq!(
        esp_file(&out, &layout, "/boot/modules/guest.bin"),
        b"guest payload"
    );
    let (label, _) = volume_label(&out, &layout.esp());
    assert_eq!(label.as_deref(), Some("KEELESP"));
    // FAT boot sector knows where the partition starts.
    let esp_boot = read_sector(&out, ESP_START);
    assert_eq!(
        u32::from_le_bytes(esp_boot[0x1C..0x20].try_into().unwrap()),
        4096
    );

    // Guest store: labelled, empty but for the volume label entry.
    let (label, entries) = volume_label(&out, &layout.store());
    assert_eq!(label.as_deref(), Some("KEELSTORE"));
    assert_eq!(entries, 0);

    // Config partition: a generation-1 record of the configuration in slot A, slot B blank.
    let (slot_a, slot_b) = config_slots(&out, &layout);
    let stored = record::decode(&slot_a).unwrap();
    assert_eq!(stored.generation, 1);
    assert_eq!(stored.payload, config.to_json_pretty());
    assert_eq!(Config::from_json(&stored.payload).unwrap(), config);
    assert!(slot_b.iter().all(|&b| b == 0));
    let record_len = record::encode(1, &stored.payload).unwrap().len();
    assert!(slot_a[record_len..].iter().all(|&b| b == 0));
}

#[test]
fn an_oversized_configuration_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let max = Slots::new(CONFIG_SECTORS, SECTOR as usize)
        .unwrap()
        .max_payload();
    let err = write_image(
        &fake_grub(),
        &[],
        &[],
        &vec![b' '; max + 1],
        &tmp.path().join("x.img"),
    )
    .unwrap_err();
    assert!(
        matches!(err, ImageError::ConfigTooLarge { len, max: m } if len == max + 1 && m == max),
        "{err}"
    );
    assert!(config_partition_record(&vec![b' '; max]).is_ok());
}

#[test]
fn rebuilding_over_an_existing_image_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("keel.img");
    std::fs::write(&out, vec![0xFF; 100 << 20]).unwrap();
    let files = [FatFile {
        path: KERNEL_PATH.into(),
        contents: Contents::Bytes(b"\x7fELF".to_vec()),
    }];
    let summary = write_image(&fake_grub(), &files, &[], &default_json(), &out).unwrap();
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        summary.layout.total_sectors() * SECTOR
    );
    // Nothing of the old 0xFF image survives in the configuration partition.
    let (slot_a, slot_b) = config_slots(&out, &summary.layout);
    assert_eq!(record::decode(&slot_a).unwrap().payload, default_json());
    assert!(slot_b.iter().all(|&b| b == 0));
}

#[test]
fn oversized_core_img_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let grub_images = GrubImages {
        core_img: fake_core_img(2049 * 512),
        ..fake_grub()
    };
    let err = write_image(
        &grub_images,
        &[],
        &[],
        &default_json(),
        &tmp.path().join("x.img"),
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::CoreTooLarge { .. }), "{err}");
}

#[test]
fn module_names() {
    assert_eq!(
        module_name(Path::new("/a/b/vmlinuz-6.1")).unwrap(),
        "vmlinuz-6.1"
    );
    assert_eq!(
        module_name(Path::new("initrd.cpio.gz")).unwrap(),
        "initrd.cpio.gz"
    );
    for bad in ["/a/b/.hidden", "/a/with space", "/a/quo'te", "/a/$x", "/"] {
        let err = module_name(Path::new(bad)).unwrap_err();
        assert!(
            matches!(err, ImageError::BadModuleName { .. }),
            "{bad}: {err}"
        );
    }
}

#[test]
fn input_errors_come_before_grub_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("keel.img");
    let elf = fake_elf(tmp.path());
    let missing = tmp.path().join("missing");

    let err = assemble_image(&missing, &[], "", None, &default_json(), &out).unwrap_err();
    assert!(matches!(err, ImageError::ReadKernel { .. }), "{err}");

    let not_elf = tmp.path().join("not-elf");
    std::fs::write(&not_elf, b"MZ......").unwrap();
    let err = assemble_image(&not_elf, &[], "", None, &default_json(), &out).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{} is not an ELF file", not_elf.display())
    );

    let err = assemble_image(&elf, &[], "a\nb", None, &default_json(), &out).unwrap_err();
    assert!(matches!(err, ImageError::BadCmdline), "{err}");

    let err = assemble_image(
        &elf,
        std::slice::from_ref(&missing),
        "",
        None,
        &default_json(),
        &out,
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::ReadModule { .. }), "{err}");

    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let m1 = tmp.path().join("m");
    let m2 = sub.join("m");
    std::fs::write(&m1, b"1").unwrap();
    std::fs::write(&m2, b"2").unwrap();
    let err = assemble_image(&elf, &[m1, m2], "", None, &default_json(), &out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "two modules are named m: module names are their file names and must be unique"
    );
    assert!(!out.exists());
}

#[test]
fn assembled_image_with_real_grub() {
    if !grub_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let elf = fake_elf(tmp.path());
    let module = tmp.path().join("hello.bin");
    std::fs::write(&module, b"hello module").unwrap();
    let out = tmp.path().join("keel.img");
    let summary = assemble_image(
        &elf,
        std::slice::from_ref(&module),
        "console=com1 log=debug",
        None,
        &default_json(),
        &out,
    )
    .unwrap();
    let layout = summary.layout;
    check_gpt(&out, &layout);

    let cfg = String::from_utf8(esp_file(&out, &layout, GRUB_CFG_PATH)).unwrap();
    assert!(
        cfg.starts_with("set timeout=0\nserial --unit=0 --speed=115200\n"),
        "{cfg}"
    );
    assert!(
        cfg.contains(
            "    multiboot2 /boot/keel.elf console=com1 log=debug\n\
             \x20   module2 /boot/modules/hello.bin hello.bin\n\
             \x20   if [ \"$grub_platform\" = pc ]; then set gfxpayload=text; fi\n\
             \x20   boot\n"
        ),
        "{cfg}"
    );
    let efi = esp_file(&out, &layout, EFI_LOADER_PATH);
    assert!(efi.starts_with(b"MZ"));
    assert_eq!(efi.len() as u64, summary.efi_img_bytes);
    assert_eq!(
        esp_file(&out, &layout, "/boot/modules/hello.bin"),
        b"hello module"
    );
    // The ESP carries the kernel stripped to its loadable segments; the file keeps the rest.
    let full = std::fs::read(&elf).unwrap();
    let stripped = crate::elf_strip::loadable_only(&full).unwrap();
    assert_eq!(esp_file(&out, &layout, KERNEL_PATH), stripped);
    assert_eq!(summary.kernel_bytes, stripped.len() as u64);
    assert_eq!(summary.kernel_unstripped_bytes, Some(full.len() as u64));
    assert!(
        summary.describe().iter().any(|l| l.contains(
            "kernel 16.2 KiB on the ESP (loadable segments only; 309.4 KiB with debug info)"
        )),
        "{:?}",
        summary.describe()
    );

    // MBR holds the real boot.img code, patched.
    let mbr = read_sector(&out, 0);
    let boot_img = std::fs::read(grub::grub_lib_dir().join("i386-pc/boot.img")).unwrap();
    assert_eq!(&mbr[..0x5C], &boot_img[..0x5C]);
    assert_eq!(
        u64::from_le_bytes(mbr[0x5C..0x64].try_into().unwrap()),
        2048
    );
    assert_eq!(&mbr[0x68..440], &boot_img[0x68..440]);
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);

    // Real core.img: block list covers exactly the padded image.
    let core0 = read_sector(&out, BIOS_BOOT_START);
    let sectors = summary.core_img_bytes / SECTOR;
    assert_eq!(
        u64::from_le_bytes(core0[0x1F4..0x1FC].try_into().unwrap()),
        2049
    );
    assert_eq!(
        u64::from(u16::from_le_bytes([core0[0x1FC], core0[0x1FD]])),
        sectors - 1
    );
    assert_eq!(u16::from_le_bytes([core0[0x1FE], core0[0x1FF]]), 0x820);
}

#[test]
fn store_grows_with_its_files() {
    let base = Layout::for_esp_payload(0);
    assert_eq!(base.with_store_files([]).store_sectors, STORE_MIN_SECTORS);
    assert_eq!(
        base.with_store_files([1, 2, 3]).store_sectors,
        STORE_MIN_SECTORS
    );
    let big = base.with_store_files([40 << 20, 1]);
    // 40 MiB + 64 KiB, an eighth more, 4 MiB: 50 MiB after rounding.
    assert_eq!(big.store_sectors * SECTOR, 50 << 20);
    assert_eq!(
        big.total_sectors(),
        big.store().last_lba() + 1 + TAIL_SECTORS
    );
}

#[test]
fn store_directory_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = store_files(&missing).unwrap_err();
    assert!(
        err.to_string().starts_with("cannot read store directory"),
        "{err}"
    );

    let dir = tmp.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("vmlinuz-6.1"), b"kernel").unwrap();
    std::fs::write(dir.join("a.txt"), b"a").unwrap();
    let files = store_files(&dir).unwrap();
    let names: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["/a.txt", "/vmlinuz-6.1"]);

    std::fs::write(dir.join("A.TXT"), b"b").unwrap();
    let err = store_files(&dir).unwrap_err();
    assert!(
        matches!(err, ImageError::DuplicateStoreName { .. }),
        "{err}"
    );
    std::fs::remove_file(dir.join("A.TXT")).unwrap();

    std::fs::create_dir(dir.join("sub")).unwrap();
    let err = store_files(&dir).unwrap_err();
    assert!(err.to_string().contains("the store is flat"), "{err}");
    std::fs::remove_dir(dir.join("sub")).unwrap();

    std::fs::write(dir.join("trailing."), b"x").unwrap();
    let err = store_files(&dir).unwrap_err();
    assert!(err.to_string().contains("rename it"), "{err}");
}

#[test]
fn store_files_are_written_with_their_long_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("disk image with a long name.raw"), &big).unwrap();
    std::fs::write(dir.join("initrd.cpio"), b"070701").unwrap();
    let store = store_files(&dir).unwrap();
    let out = tmp.path().join("keel.img");
    let summary = write_image(&fake_grub(), &[], &store, &default_json(), &out).unwrap();
    let layout = summary.layout;
    assert!(layout.store_sectors * SECTOR > 20 << 20);
    check_gpt(&out, &layout);
    assert_eq!(
        summary.store_files,
        [
            ("disk image with a long name.raw".to_string(), 20 << 20),
            ("initrd.cpio".to_string(), 6)
        ]
    );
    let spec = layout.store();
    let mut f = File::open(&out).unwrap();
    let mut bytes = vec![0; (spec.sectors * SECTOR) as usize];
    f.seek(SeekFrom::Start(spec.first_lba * SECTOR)).unwrap();
    f.read_exact(&mut bytes).unwrap();
    let mut volume = std::io::Cursor::new(bytes);
    assert_eq!(
        fat::read_file(
            &mut volume,
            0,
            spec.sectors,
            "disk image with a long name.raw"
        )
        .unwrap(),
        big
    );
    assert_eq!(
        fat::read_file(&mut volume, 0, spec.sectors, "initrd.cpio").unwrap(),
        b"070701"
    );
}

#[test]
fn guest_partitions_follow_the_store_sparse_and_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("keel.img");
    let big = 6u64 << 30;
    assert!(needs_partition(big));
    assert!(!needs_partition(STORE_MAX_FILE));
    let requests = [
        GuestPartitionRequest {
            name: "big".into(),
            bytes: big,
        },
        GuestPartitionRequest {
            name: "small-2".into(),
            bytes: 8 << 20,
        },
    ];
    let summary =
        write_image_with_partitions(&fake_grub(), &[], &[], &default_json(), &requests, &out)
            .unwrap();
    let layout = summary.layout;
    let specs = &summary.guest_partitions;
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].number, 5);
    assert_eq!(specs[0].first_lba, layout.store().last_lba() + 1);
    assert_eq!(specs[0].sectors * SECTOR, big);
    assert_eq!(specs[1].first_lba, specs[0].first_lba + specs[0].sectors);
    assert!(specs.iter().all(|p| p.first_lba % ALIGN_SECTORS == 0));
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), layout.total_sectors() * SECTOR);
    assert!(meta.len() > big);
    // Sparse: far less than the partition is allocated on the host.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < 256 << 20, "{} blocks", meta.blocks());
    }

    let disk = open_gpt(&out);
    let parts = disk.partitions();
    assert_eq!(parts.len(), 6);
    for spec in specs {
        let p = &parts[&spec.number];
        assert_eq!(p.name, spec.name);
        assert_eq!(p.part_type_guid.guid, GUEST_DISK_TYPE_GUID);
        assert_eq!(p.first_lba, spec.first_lba);
        assert_eq!(p.last_lba, spec.first_lba + spec.sectors - 1);
    }
    assert_eq!(disk.header().backup_lba, layout.total_sectors() - 1);
    assert!(disk.header().last_usable >= specs[1].first_lba + specs[1].sectors - 1);
    assert!(
        summary
            .describe()
            .iter()
            .any(|l| l.contains("big") && l.contains("sparse"))
    );

    // The host's own GPT tool agrees, when it is installed.
    if let Ok(run) = std::process::Command::new("sgdisk")
        .arg("-v")
        .arg(&out)
        .output()
    {
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{text}");
        assert!(text.contains("No problems found"), "{text}");
    }
}

#[test]
fn guest_partition_requests_are_checked() {
    let req = |name: &str, bytes: u64| GuestPartitionRequest {
        name: name.into(),
        bytes,
    };
    assert!(check_guest_partitions(&[req("big", 1 << 30), req("b2", 1 << 20)]).is_ok());
    assert!(matches!(
        check_guest_partitions(&[req("Big", 1 << 20)]),
        Err(ImageError::GuestPartitionName { .. })
    ));
    assert!(matches!(
        check_guest_partitions(&[req("big", 0)]),
        Err(ImageError::GuestPartitionSize { bytes: 0, .. })
    ));
    assert!(matches!(
        check_guest_partitions(&[req("big", (1 << 20) + 512)]),
        Err(ImageError::GuestPartitionSize { .. })
    ));
    assert!(matches!(
        check_guest_partitions(&[req("big", 1 << 20), req("big", 2 << 20)]),
        Err(ImageError::DuplicateGuestPartition { .. })
    ));
    assert!(matches!(
        check_guest_partitions(&[req(STORE_NAME, 1 << 20)]),
        Err(ImageError::DuplicateGuestPartition { .. })
    ));
    let many: Vec<_> = (0..=MAX_GUEST_PARTITIONS)
        .map(|i| req(&format!("d{i}"), 1 << 20))
        .collect();
    assert!(matches!(
        check_guest_partitions(&many),
        Err(ImageError::TooManyGuestPartitions { count: 125 })
    ));
}
