//! Guest-disk partitions planned on the image builder's table, grown onto a larger disk.

use std::vec::Vec;

use super::*;
use crate::blk::boot_disk::{self, STORE_NAME};
use crate::blk::disk::Disk;
use crate::blk::disk::mem::MemDisk;
use crate::blk::gpt::{self, HeaderCopy};
use crate::blk::gpt_write::write_table;
use crate::blk::test_image;

/// The image builder's image with `free_mib` MiB appended and its table moved to the new end,
/// as a disk grown after `keel build` looks once the table is rewritten.
fn grown_image(free_mib: u64) -> MemDisk {
    let (mut bytes, _) = test_image::image(&[]);
    bytes.resize(bytes.len() + (free_mib * MIB) as usize, 0);
    let mut disk = MemDisk::new(bytes);
    let mut table = gpt::read(&mut disk).unwrap();
    table.last_usable = disk.sector_count() - 34;
    write_table(&mut disk, &table).unwrap();
    disk
}

fn apply(disk: &mut MemDisk, table: &Gpt) {
    write_table(disk, table).unwrap();
    let back = gpt::read(disk).unwrap();
    assert_eq!(back.header, HeaderCopy::Primary);
    assert_eq!(back.partitions, table.partitions);
}

#[test]
fn create_list_delete() {
    let mut disk = grown_image(64);
    let gpt = gpt::read(&mut disk).unwrap();
    assert!(guest_partitions(&gpt).is_empty());
    let free = largest_free_mib(&gpt);
    assert!((62..=64).contains(&free), "{free} MiB free");

    let (table, big) = plan_create(&gpt, "big", 32 * MIB, Guid([1; 16])).unwrap();
    assert_eq!(big.bytes(), 32 * MIB);
    assert_eq!(big.first_lba % 2048, 0);
    apply(&mut disk, &table);
    let (table, small) = plan_create(&table, "small-1", MIB, Guid([2; 16])).unwrap();
    apply(&mut disk, &table);
    let gpt = gpt::read(&mut disk).unwrap();
    assert_eq!(guest_partitions(&gpt), [big.clone(), small.clone()]);
    assert_eq!(find(&gpt, "small-1"), Ok(small.clone()));
    // Keel's own partitions are untouched.
    assert!(boot_disk::identify(&gpt).is_ok());
    assert_eq!(gpt.partitions[4].type_guid, GUEST_DISK_TYPE);
    assert_eq!(gpt.partitions[4].name, "big");

    let (table, gone) = plan_delete(&gpt, "big", Vec::new()).unwrap();
    assert_eq!(gone, big);
    apply(&mut disk, &table);
    let gpt = gpt::read(&mut disk).unwrap();
    assert_eq!(guest_partitions(&gpt), std::slice::from_ref(&small));
    assert_eq!(
        still_there(&gpt, &big),
        Err(GuestPartitionError::Gone { name: "big".into() })
    );
    assert_eq!(still_there(&gpt, &small), Ok(()));
    // Made again under the same name, it is another disk to one that had it open.
    let (table, again) = plan_create(&gpt, "big", 32 * MIB, Guid([3; 16])).unwrap();
    assert_eq!(again.first_lba, big.first_lba);
    assert!(still_there(&table, &big).is_err());
}

#[test]
fn refusals_say_why() {
    let mut disk = grown_image(8);
    let gpt = gpt::read(&mut disk).unwrap();
    let create =
        |name: &str, bytes: u64| plan_create(&gpt, name, bytes, Guid([1; 16])).unwrap_err();
    assert!(matches!(
        create("Big", MIB),
        GuestPartitionError::BadName { .. }
    ));
    assert!(matches!(
        create("9lives", MIB),
        GuestPartitionError::BadName { .. }
    ));
    assert!(matches!(
        create(&"a".repeat(33), MIB),
        GuestPartitionError::BadName { .. }
    ));
    assert_eq!(create("a", 0), GuestPartitionError::BadSize { bytes: 0 });
    assert_eq!(
        create("a", MIB + 512),
        GuestPartitionError::BadSize { bytes: MIB + 512 }
    );
    // Keel's own partition names are taken too.
    assert_eq!(
        create(STORE_NAME, MIB),
        GuestPartitionError::NameTaken {
            name: STORE_NAME.into()
        }
    );
    let free = largest_free_mib(&gpt);
    let e = create("huge", 1 << 40);
    assert_eq!(
        e,
        GuestPartitionError::NoSpace {
            wanted_mib: 1 << 20,
            largest_free_mib: free
        }
    );
    assert!(std::format!("{e}").contains(&std::format!("the largest free space is {free} MiB")));

    // Only guest disks can be deleted, and not while in use.
    assert_eq!(
        plan_delete(&gpt, STORE_NAME, Vec::new()).unwrap_err(),
        GuestPartitionError::NotFound {
            name: STORE_NAME.into()
        }
    );
    let (table, _) = plan_create(&gpt, "data", MIB, Guid([1; 16])).unwrap();
    let e = plan_delete(&table, "data", std::vec!["web".into(), "db".into()]).unwrap_err();
    assert_eq!(
        std::format!("{e}"),
        "disk partition \"data\" is in use by web, db: stop them first"
    );
}

#[test]
fn sizes_typed_on_the_console() {
    assert_eq!(parse_size("8G"), Ok(8 << 30));
    assert_eq!(parse_size("512M"), Ok(512 << 20));
    assert_eq!(parse_size("512MiB"), Ok(512 << 20));
    assert_eq!(parse_size("2t"), Ok(2 << 40));
    assert_eq!(parse_size("4096"), Ok(4096));
    for bad in ["", "G", "8X", "8 G", "-1M", "99999999999999999999T", "1.5G"] {
        assert!(
            matches!(
                parse_size(bad),
                Err(GuestPartitionError::BadSizeText { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(parse_size("17179869184T").ok(), None, "overflow");
}

#[test]
fn unique_guids_differ_and_are_version_4() {
    let disk = Guid([5; 16]);
    let a = unique_guid(1, disk, "big");
    let b = unique_guid(2, disk, "big");
    let c = unique_guid(1, disk, "bog");
    let d = unique_guid(1, Guid([6; 16]), "big");
    assert!(a != b && a != c && a != d && b != c);
    for g in [a, b, c, d] {
        let text = std::format!("{g}");
        assert_eq!(&text[14..15], "4", "{text}");
        assert!("89ab".contains(&text[19..20]), "{text}");
    }
}

#[test]
fn the_image_builders_partitions_are_guest_disks() {
    let (bytes, layout) = test_image::image_with_partitions(&[], &[("big", 8), ("data", 2)]);
    let mut disk = MemDisk::new(bytes);
    let gpt = gpt::read(&mut disk).unwrap();
    let found = guest_partitions(&gpt);
    assert_eq!(found.len(), 2);
    assert_eq!((found[0].name.as_str(), found[0].bytes()), ("big", 8 * MIB));
    assert_eq!(found[0].first_lba, layout.store().last_lba() + 1);
    assert_eq!(
        (found[1].name.as_str(), found[1].bytes()),
        ("data", 2 * MIB)
    );
    assert_eq!(
        std::format!("{GUEST_DISK_TYPE}"),
        keel_image::gpt_image::GUEST_DISK_TYPE_GUID.to_string()
    );
    // No room left after them: the image ends with the backup table's MiB.
    assert_eq!(largest_free_mib(&gpt), 0);
    // Deleting one frees its space for another.
    let (table, _) = plan_delete(&gpt, "big", Vec::new()).unwrap();
    assert_eq!(largest_free_mib(&table), 8);
    let (table, again) = plan_create(&table, "other", 4 * MIB, Guid([9; 16])).unwrap();
    assert_eq!(again.first_lba, found[0].first_lba);
    apply(&mut disk, &table);
}

#[test]
fn store_files_listed_as_disks() {
    let mut config = keel_config::Config::default();
    assert!(is_disk_image("data.img", false, &config));
    assert!(is_disk_image("Win.RAW", false, &config));
    assert!(!is_disk_image("vmlinuz", false, &config));
    assert!(is_disk_image("vmlinuz", true, &config));
    let document = br#"{"vms": [{"name": "web", "kernel": "vmlinuz", "memory_mib": 256,
        "disks": [{"file": "Scratch"}, {"partition": "big"}]}]}"#;
    let vm = keel_config::Config::from_json(document)
        .unwrap()
        .vms
        .remove(0);
    config.vms.push(vm);
    assert!(is_disk_image("scratch", false, &config));
    assert!(!is_disk_image("big", false, &config));
}
