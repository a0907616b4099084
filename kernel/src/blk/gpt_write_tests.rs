//! GPT writing: planning, write order under power cuts at every point, and repair.

use std::vec::Vec;

use super::*;
use crate::blk::disk::mem::MemDisk;
use crate::blk::gpt::{EntryArray, read, read_copy};
use crate::blk::test_image;

const TYPE: Guid = Guid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888);
/// 8 MiB: small enough to copy once per simulated power cut.
const DISK_SECTORS: u64 = 8 * ALIGN_SECTORS;

/// A disk of [`DISK_SECTORS`] with a protective MBR and an empty 128-entry table, written
/// by [`write_table`] itself.
fn blank_disk() -> MemDisk {
    let mut bytes = std::vec![0u8; DISK_SECTORS as usize * SECTOR];
    bytes[446 + 4] = gpt::MBR_PROTECTIVE_TYPE;
    bytes[510] = 0x55;
    bytes[511] = 0xaa;
    let mut disk = MemDisk::new(bytes);
    let table = Gpt {
        disk_guid: Guid([7; 16]),
        header: HeaderCopy::Primary,
        primary_error: None,
        first_usable: 34,
        last_usable: DISK_SECTORS - 34,
        partitions: Vec::new(),
        entries: EntryArray {
            entry_size: 128,
            bytes: std::vec![0u8; 128 * 128],
        },
    };
    write_table(&mut disk, &table).unwrap();
    disk
}

fn new(name: &str, mib: u64, tag: u8) -> NewPartition<'_> {
    NewPartition {
        name,
        type_guid: TYPE,
        unique_guid: Guid([tag; 16]),
        sectors: mib * ALIGN_SECTORS,
    }
}

fn add(disk: &mut MemDisk, name: &str, mib: u64, tag: u8) -> Partition {
    let table = read(disk).unwrap();
    let (table, p) = with_partition_added(&table, &new(name, mib, tag)).unwrap();
    write_table(disk, &table).unwrap();
    p
}

fn names(gpt: &Gpt) -> Vec<&str> {
    gpt.partitions.iter().map(|p| p.name.as_str()).collect()
}

#[test]
fn added_partitions_read_back_aligned_in_the_first_fitting_gap() {
    let mut disk = blank_disk();
    let a = add(&mut disk, "alpha", 2, 1);
    let b = add(&mut disk, "beta", 1, 2);
    let c = add(&mut disk, "gamma-3", 3, 3);
    assert_eq!((a.first_lba, a.last_lba), (2048, 3 * 2048 - 1));
    assert_eq!(b.first_lba, 3 * 2048);
    assert_eq!(c.first_lba, 4 * 2048);
    let gpt = read(&mut disk).unwrap();
    assert_eq!(gpt.header, HeaderCopy::Primary);
    assert_eq!(names(&gpt), ["alpha", "beta", "gamma-3"]);
    assert_eq!(gpt.partitions[2], c);
    assert_eq!(gpt.partitions[2].sectors(), 3 * 2048);
    assert_eq!(gpt.partitions[1].unique_guid, Guid([2; 16]));
    // Both copies valid and alike.
    assert_eq!(repair(&mut disk), Ok(Repair::NotNeeded));

    // Removing alpha frees 2 MiB at the front; a 1 MiB partition goes there, into entry 1.
    let (table, removed) = with_partition_removed(&gpt, "alpha").unwrap();
    assert_eq!(removed, a);
    write_table(&mut disk, &table).unwrap();
    let d = add(&mut disk, "delta", 1, 4);
    assert_eq!((d.number, d.first_lba), (1, 2048));
    let gpt = read(&mut disk).unwrap();
    assert_eq!(names(&gpt), ["delta", "beta", "gamma-3"]);
}

#[test]
fn refusals_say_why() {
    let mut disk = blank_disk();
    add(&mut disk, "alpha", 2, 1);
    let gpt = read(&mut disk).unwrap();
    let err = |n: NewPartition<'_>| with_partition_added(&gpt, &n).unwrap_err();
    assert_eq!(
        err(new("alpha", 1, 9)),
        GptWriteError::NameTaken {
            name: "alpha".into()
        }
    );
    assert_eq!(
        err(new("zero", 0, 9)),
        GptWriteError::BadSize { sectors: 0 }
    );
    let mut odd = new("odd", 1, 9);
    odd.sectors += 1;
    assert_eq!(err(odd), GptWriteError::BadSize { sectors: 2049 });
    // 8 MiB disk: 1 MiB head, alpha's 2, 4 free, the tail's last MiB partly taken by the
    // backup table.
    let e = err(new("huge", 5, 9));
    assert_eq!(
        e,
        GptWriteError::NoSpace {
            wanted_sectors: 5 * 2048,
            largest_free_sectors: 4 * 2048
        }
    );
    assert!(std::format!("{e}").contains("largest free space on the disk is 4 MiB"));
    let long = "x".repeat(MAX_NAME_UNITS + 1);
    assert!(matches!(
        err(new(&long, 1, 9)),
        GptWriteError::NameTooLong { .. }
    ));
    assert_eq!(
        with_partition_removed(&gpt, "nope").unwrap_err(),
        GptWriteError::NoSuchPartition {
            name: "nope".into()
        }
    );
    let mut full = gpt.clone();
    for entry in full.entries.bytes.chunks_exact_mut(128) {
        entry[0] |= 1;
    }
    assert_eq!(
        with_partition_added(&full, &new("more", 1, 9)).unwrap_err(),
        GptWriteError::NoFreeEntry { entries: 128 }
    );
}

#[test]
fn free_extents_are_aligned_and_skip_partitions() {
    let mut disk = blank_disk();
    add(&mut disk, "alpha", 1, 1);
    add(&mut disk, "beta", 1, 2);
    let gpt = read(&mut disk).unwrap();
    let (gpt, _) = with_partition_removed(&gpt, "alpha").unwrap();
    assert_eq!(
        free_extents(&gpt),
        [
            FreeExtent {
                first_lba: 2048,
                sectors: 2048
            },
            FreeExtent {
                first_lba: 3 * 2048,
                sectors: 4 * 2048
            },
        ]
    );
}

/// Rewriting the image builder's table unchanged leaves every byte of the image as it was:
/// the writer lays a table out as the image builder (the `gpt` crate) does.
#[test]
fn rewriting_the_image_builders_table_changes_nothing() {
    let (bytes, _) = test_image::image(&[]);
    let mut disk = MemDisk::new(bytes.clone());
    // Nothing to repair or extend at boot.
    assert_eq!(repair(&mut disk), Ok(Repair::NotNeeded));
    let gpt = read(&mut disk).unwrap();
    write_table(&mut disk, &gpt).unwrap();
    for (lba, (a, b)) in bytes
        .chunks(SECTOR)
        .zip(disk.bytes.chunks(SECTOR))
        .enumerate()
    {
        assert!(a == b, "sector {lba} differs");
    }
}

/// Writes recorded in order, with flushes between them.
#[derive(Clone, Debug)]
enum Op {
    Write(u64, Vec<u8>),
    Flush,
}

struct Recording {
    disk: MemDisk,
    ops: Vec<Op>,
}

impl Disk for Recording {
    fn sector_count(&self) -> u64 {
        self.disk.sector_count()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.disk.read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.ops.push(Op::Write(lba, buf.to_vec()));
        self.disk.write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.ops.push(Op::Flush);
        self.disk.flush()
    }
}

/// Every disk state a power cut during `change` can leave: the writes of the epochs
/// (between flushes) before the cut all landed; of the cut's epoch, any subset landed (a
/// disk cache reorders), and one more may be torn after any whole sector.
fn cut_states(before: &MemDisk, change: impl FnOnce(&mut Recording)) -> (Vec<MemDisk>, MemDisk) {
    let mut rec = Recording {
        disk: before.clone(),
        ops: Vec::new(),
    };
    change(&mut rec);
    let mut epochs: Vec<Vec<(u64, Vec<u8>)>> = std::vec![Vec::new()];
    for op in rec.ops {
        match op {
            Op::Write(lba, bytes) => epochs.last_mut().unwrap().push((lba, bytes)),
            Op::Flush => epochs.push(Vec::new()),
        }
    }
    let mut states = Vec::new();
    let mut base = before.clone();
    for epoch in &epochs {
        for mask in 0u32..(1 << epoch.len()) {
            let mut landed = base.clone();
            for (i, (lba, bytes)) in epoch.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    landed.write(*lba, bytes).unwrap();
                }
            }
            for (i, (lba, bytes)) in epoch.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    continue;
                }
                for torn in 1..bytes.len() / SECTOR {
                    let mut state = landed.clone();
                    state.write(*lba, &bytes[..torn * SECTOR]).unwrap();
                    states.push(state);
                }
            }
            states.push(landed);
        }
        for (lba, bytes) in epoch {
            base.write(*lba, bytes).unwrap();
        }
    }
    states.push(base);
    (states, rec.disk)
}

/// After a cut at every point of `change`, the table read is the old or the new one, and
/// repair leaves both copies valid, alike, and with the partitions that were read.
fn check_cuts(before: MemDisk, change: impl FnOnce(&mut Recording)) {
    let old = read(&mut before.clone()).unwrap();
    let (states, after) = cut_states(&before, change);
    let new = read(&mut after.clone()).unwrap();
    assert!(!same_table(&old, &new), "the change changed nothing");
    let (mut saw_old, mut saw_new) = (0, 0);
    for (k, mut state) in states.into_iter().enumerate() {
        let seen = read(&mut state).unwrap_or_else(|e| panic!("state {k}: no table: {e}"));
        if same_table(&seen, &old) {
            saw_old += 1;
        } else {
            assert!(same_table(&seen, &new), "state {k}: neither old nor new");
            saw_new += 1;
        }
        repair(&mut state).unwrap();
        let primary = read_copy(&mut state, HeaderCopy::Primary).unwrap();
        let backup = read_copy(&mut state, HeaderCopy::Backup).unwrap();
        assert!(same_table(&primary, &backup), "state {k}: copies differ");
        // Repair keeps the partitions read; it may only extend a table to a grown disk's end.
        assert!(
            primary.entries == seen.entries
                && primary.disk_guid == seen.disk_guid
                && primary.last_usable >= seen.last_usable,
            "state {k}: repair changed the table"
        );
        assert_eq!(repair(&mut state), Ok(Repair::NotNeeded), "state {k}");
    }
    assert!(saw_old > 0 && saw_new > 0, "{saw_old} old, {saw_new} new");
}

#[test]
fn a_power_cut_during_create_leaves_the_old_or_the_new_table() {
    let mut disk = blank_disk();
    add(&mut disk, "alpha", 2, 1);
    check_cuts(disk, |rec| {
        let table = read(rec).unwrap();
        let (table, _) = with_partition_added(&table, &new("beta", 3, 2)).unwrap();
        write_table(rec, &table).unwrap();
    });
}

#[test]
fn a_power_cut_during_delete_leaves_the_old_or_the_new_table() {
    let mut disk = blank_disk();
    add(&mut disk, "alpha", 2, 1);
    add(&mut disk, "beta", 1, 2);
    check_cuts(disk, |rec| {
        let table = read(rec).unwrap();
        let (table, _) = with_partition_removed(&table, "alpha").unwrap();
        write_table(rec, &table).unwrap();
    });
}

#[test]
fn repair_rewrites_a_damaged_copy_from_the_other() {
    let mut disk = blank_disk();
    add(&mut disk, "alpha", 2, 1);
    let good = disk.bytes.clone();
    let last = disk.bytes.len() - SECTOR;

    // Primary header damaged: rewritten from the backup.
    disk.bytes[SECTOR + 40] ^= 1;
    assert_eq!(
        repair(&mut disk),
        Ok(Repair::Primary {
            damage: GptError::HeaderCrc { lba: 1 }
        })
    );
    assert!(disk.bytes == good);

    // Primary entries damaged.
    disk.bytes[2 * SECTOR + 60] ^= 1;
    let r = repair(&mut disk).unwrap();
    assert_eq!(
        r,
        Repair::Primary {
            damage: GptError::EntryArrayCrc { lba: 1 }
        }
    );
    assert!(std::format!("{r}").contains("primary GPT rewritten from the backup"));
    assert!(disk.bytes == good);

    // Backup header zeroed: rewritten from the primary.
    disk.bytes[last..].fill(0);
    assert_eq!(
        repair(&mut disk),
        Ok(Repair::Backup {
            damage: Some(GptError::BadSignature {
                lba: DISK_SECTORS - 1
            })
        })
    );
    assert!(disk.bytes == good);
    assert_eq!(disk.flushes, 4 + 3, "each repair flushes once");

    // Both gone: an error, nothing written.
    disk.bytes[SECTOR] = 0;
    disk.bytes[last] = 0;
    let before = disk.bytes.clone();
    assert_eq!(
        repair(&mut disk),
        Err(GptWriteError::Gpt(GptError::BadSignature { lba: 1 }))
    );
    assert!(disk.bytes == before);
}

#[test]
fn a_grown_disk_gets_its_table_extended_to_the_end() {
    let mut disk = blank_disk();
    add(&mut disk, "alpha", 2, 1);
    let before = read(&mut disk).unwrap();
    // The disk grows by 4 MiB: the backup header is no longer at the last LBA.
    disk.bytes
        .resize(disk.bytes.len() + 4 * ALIGN_SECTORS as usize * SECTOR, 0);
    let sectors = disk.sector_count();
    let r = repair(&mut disk).unwrap();
    assert_eq!(
        r,
        Repair::Grown {
            from_last_usable: DISK_SECTORS - 34,
            to_last_usable: sectors - 34,
            damage: None
        }
    );
    assert!(!r.is_damage());
    assert!(std::format!("{r}").contains("4 MiB more usable"));
    let primary = read_copy(&mut disk, HeaderCopy::Primary).unwrap();
    let backup = read_copy(&mut disk, HeaderCopy::Backup).unwrap();
    assert!(same_table(&primary, &backup));
    assert_eq!(primary.partitions, before.partitions);
    assert_eq!(primary.last_usable, sectors - 34);
    assert_eq!(repair(&mut disk), Ok(Repair::NotNeeded));
    // The new space is free for partitions.
    let free = free_extents(&primary);
    assert_eq!(free.last().unwrap().sectors, 8 * ALIGN_SECTORS);
}

#[test]
fn a_power_cut_while_growing_leaves_the_old_or_the_grown_table() {
    let mut disk = blank_disk();
    add(&mut disk, "alpha", 2, 1);
    disk.bytes
        .resize(disk.bytes.len() + 2 * ALIGN_SECTORS as usize * SECTOR, 0);
    check_cuts(disk, |rec| {
        repair(rec).unwrap();
    });
}
