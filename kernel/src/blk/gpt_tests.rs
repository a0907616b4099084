//! GPT parsing against images the image builder writes, and against damaged copies of them.

use std::vec::Vec;

use super::*;
use crate::blk::boot_disk::{self, CONFIG_TYPE, STORE_TYPE};
use crate::blk::disk::mem::MemDisk;
use crate::blk::test_image;

fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the header CRC of the header at byte offset `at`.
fn fix_header_crc(bytes: &mut [u8], at: usize) {
    let size = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap()) as usize;
    set_u32(bytes, at + 16, 0);
    let crc = crc32fast::hash(&bytes[at..at + size]);
    set_u32(bytes, at + 16, crc);
}

fn image() -> (Vec<u8>, keel_image::gpt_image::Layout) {
    test_image::image(&[])
}

#[test]
fn reads_the_image_builders_table() {
    let (bytes, layout) = image();
    let mut disk = MemDisk::new(bytes);
    let gpt = read(&mut disk).unwrap();
    assert_eq!(gpt.header, HeaderCopy::Primary);
    assert_eq!(gpt.primary_error, None);
    let names: Vec<_> = gpt.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bios-boot", "esp", "keel-config", "keel-store"]);
    for (p, spec) in gpt.partitions.iter().zip(layout.partitions()) {
        assert_eq!(p.number, spec.number);
        assert_eq!(p.first_lba, spec.first_lba);
        assert_eq!(p.last_lba, spec.last_lba());
        assert_eq!(p.type_guid.0, spec.type_guid.to_bytes_le());
        assert_eq!(std::format!("{}", p.type_guid), spec.type_guid.to_string());
    }
    assert_eq!(gpt.partitions[2].type_guid, CONFIG_TYPE);
    assert_eq!(gpt.partitions[3].type_guid, STORE_TYPE);
    assert_ne!(gpt.partitions[2].unique_guid, gpt.partitions[3].unique_guid);
    let keel = boot_disk::identify(&gpt).unwrap();
    assert_eq!(keel.config.sectors(), 2048);
    assert_eq!(keel.store.first_lba, layout.store().first_lba);
}

#[test]
fn corrupt_primary_falls_back_to_the_backup() {
    let (mut bytes, _) = image();
    bytes[512 + 40] ^= 0x01; // first_usable: covered by the header CRC
    let mut disk = MemDisk::new(bytes);
    let gpt = read(&mut disk).unwrap();
    assert_eq!(gpt.header, HeaderCopy::Backup);
    assert_eq!(gpt.primary_error, Some(GptError::HeaderCrc { lba: 1 }));
    assert_eq!(gpt.partitions.len(), 4);
    assert!(boot_disk::identify(&gpt).is_ok());
}

#[test]
fn corrupt_primary_entries_fall_back_to_the_backup() {
    let (mut bytes, _) = image();
    // The primary entry array starts at LBA 2; damage the first entry's name.
    bytes[2 * 512 + 60] ^= 0x20;
    let mut disk = MemDisk::new(bytes);
    let gpt = read(&mut disk).unwrap();
    assert_eq!(gpt.header, HeaderCopy::Backup);
    assert_eq!(gpt.primary_error, Some(GptError::EntryArrayCrc { lba: 1 }));
    assert_eq!(gpt.partitions[0].name, "bios-boot");
}

#[test]
fn both_headers_bad_reports_the_primary() {
    let (mut bytes, _) = image();
    let last = bytes.len() - 512;
    bytes[512 + 40] ^= 0x01;
    bytes[last] = b'X';
    let mut disk = MemDisk::new(bytes);
    assert_eq!(read(&mut disk), Err(GptError::HeaderCrc { lba: 1 }));
}

#[test]
fn header_fields_are_bounds_checked() {
    let (orig, _) = image();
    let last = orig.len() - 512;
    type Case = (usize, u32, fn(&GptError) -> bool);
    let cases: [Case; 5] = [
        (12, 8, |e| {
            matches!(e, GptError::BadHeaderSize { size: 8, .. })
        }),
        (12, 4096, |e| matches!(e, GptError::BadHeaderSize { .. })),
        (84, 100, |e| {
            matches!(
                e,
                GptError::BadEntryArray {
                    entry_size: 100,
                    ..
                }
            )
        }),
        (80, 1 << 30, |e| matches!(e, GptError::BadEntryArray { .. })),
        (72, 0xffff_fff0, |e| {
            matches!(e, GptError::EntryArrayOutOfRange { .. })
        }),
    ];
    for (offset, value, expected) in cases {
        let mut bytes = orig.clone();
        for at in [512, last] {
            set_u32(&mut bytes, at + offset, value);
            if offset == 72 {
                set_u32(&mut bytes, at + 76, 0);
            }
            // The size is checked before the CRC (which it bounds).
            if offset != 12 {
                fix_header_crc(&mut bytes, at);
            }
        }
        let mut disk = MemDisk::new(bytes);
        let err = read(&mut disk).unwrap_err();
        assert!(expected(&err), "offset {offset}: {err:?}");
    }
}

#[test]
fn partition_ranges_are_checked() {
    let (mut bytes, _) = image();
    let last = bytes.len() - 512;
    // Entry 1's last LBA far beyond the disk, in both arrays, CRCs fixed.
    for header in [512, last] {
        let array_lba = u64::from_le_bytes(bytes[header + 72..header + 80].try_into().unwrap());
        let array = array_lba as usize * 512;
        bytes[array + 40..array + 48].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32fast::hash(&bytes[array..array + 128 * 128]);
        set_u32(&mut bytes, header + 88, crc);
        fix_header_crc(&mut bytes, header);
    }
    let mut disk = MemDisk::new(bytes);
    assert!(matches!(
        read(&mut disk),
        Err(GptError::BadPartition { number: 1, .. })
    ));
}

#[test]
fn not_gpt_and_truncated_disks() {
    let (bytes, _) = image();
    let mut no_sig = bytes.clone();
    no_sig[510] = 0;
    assert_eq!(read(&mut MemDisk::new(no_sig)), Err(GptError::NoMbr));
    let mut mbr_only = bytes.clone();
    for i in 0..4 {
        mbr_only[446 + i * 16 + 4] = 0x83;
    }
    assert_eq!(
        read(&mut MemDisk::new(mbr_only)),
        Err(GptError::NotProtective)
    );
    // Cut off after the primary header: the entry array is still there, so the primary
    // reads; its usable range now runs past the end.
    let truncated = bytes[..40 * 512].to_vec();
    assert_eq!(
        read(&mut MemDisk::new(truncated)),
        Err(GptError::BadUsableRange { lba: 1 })
    );
    let tiny = bytes[..2 * 512].to_vec();
    assert_eq!(
        read(&mut MemDisk::new(tiny)),
        Err(GptError::DiskTooSmall { sectors: 2 })
    );
    let mut blank = std::vec![0u8; 64 * 512];
    blank[510] = 0x55;
    blank[511] = 0xaa;
    blank[446 + 4] = 0xee;
    assert_eq!(
        read(&mut MemDisk::new(blank)),
        Err(GptError::BadSignature { lba: 1 })
    );
}

#[test]
fn garbage_never_panics() {
    let (orig, _) = image();
    let head = 40 * 512;
    for seed in 0..120u64 {
        let mut bytes = orig.clone();
        let noise = test_image::noise(64, seed);
        for pair in noise.chunks(2) {
            let at = usize::from(pair[0]) * 97 % head;
            bytes[at] ^= pair[1] | 1;
        }
        let _ = read(&mut MemDisk::new(bytes));
    }
}

#[test]
fn guid_text_form() {
    let g = Guid::from_u128(0x20442bb3_5151_4ecd_846b_efa36bb2491f);
    assert_eq!(std::format!("{g}"), "20442bb3-5151-4ecd-846b-efa36bb2491f");
    assert_eq!(g.0[..4], [0xb3, 0x2b, 0x44, 0x20]);
}
