//! Host tests of [`load`] and [`save`] over the failing in-memory device.

use super::fake::{FakeError, MemDevice, XorShift};
use super::*;

/// 64 sectors of 512 bytes: two slots of 16 KiB.
type Disk = MemDevice<512>;
const DISK_SECTORS: u64 = 64;

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn disk_with(history: &[Vec<u8>]) -> Disk {
    let mut dev = Disk::new(DISK_SECTORS);
    for (i, p) in history.iter().enumerate() {
        assert_eq!(save(&mut dev, p).unwrap(), i as u64 + 1);
    }
    dev
}

fn write_record<const S: usize>(dev: &mut MemDevice<S>, lba: u64, generation: u64, p: &[u8]) {
    let bytes = encode(generation, p).unwrap();
    let sectors = bytes.len().div_ceil(S) as u64;
    let target = dev.sectors_mut(lba..lba + sectors);
    target[..bytes.len()].copy_from_slice(&bytes);
}

#[test]
fn empty_partition_has_no_valid_slot() {
    let mut dev = Disk::new(DISK_SECTORS);
    let err = load(&mut dev).unwrap_err();
    assert_eq!(
        err,
        StoreError::NoValidSlot {
            a: SlotFault::Invalid(RecordError::Blank),
            b: SlotFault::Invalid(RecordError::Blank),
        }
    );
    assert_eq!(
        err.to_string(),
        "no valid configuration: slot A: blank (never written); slot B: blank (never written)"
    );
}

#[test]
fn saves_alternate_slots_with_rising_generations() {
    let mut dev = Disk::new(DISK_SECTORS);
    assert_eq!(save(&mut dev, b"one").unwrap(), 1);
    let l = load(&mut dev).unwrap();
    assert_eq!(
        (l.payload.as_slice(), l.generation, l.slot),
        (&b"one"[..], 1, Slot::A)
    );
    assert_eq!(
        l.other_slot_state,
        SlotState::Faulty(SlotFault::Invalid(RecordError::Blank))
    );

    let mut expected_slot = Slot::B;
    for generation in 2..=9u64 {
        let p = format!("config {generation}");
        assert_eq!(save(&mut dev, p.as_bytes()).unwrap(), generation);
        let l = load(&mut dev).unwrap();
        assert_eq!(l.payload, p.as_bytes());
        assert_eq!(l.generation, generation);
        assert_eq!(l.slot, expected_slot);
        assert_eq!(
            l.other_slot_state,
            SlotState::Valid {
                generation: generation - 1
            }
        );
        expected_slot = expected_slot.other();
    }
    // Each save is one write and one flush.
    assert_eq!((dev.writes, dev.flushes), (9, 9));
}

#[test]
fn load_takes_the_higher_generation_wherever_it_is() {
    let mut dev = Disk::new(DISK_SECTORS);
    write_record(&mut dev, 0, 10, b"newer in A");
    write_record(&mut dev, 32, 7, b"older in B");
    let l = load(&mut dev).unwrap();
    assert_eq!(
        (l.payload.as_slice(), l.slot),
        (&b"newer in A"[..], Slot::A)
    );
    // The next save overwrites B (older) with generation 11.
    assert_eq!(save(&mut dev, b"next").unwrap(), 11);
    let l = load(&mut dev).unwrap();
    assert_eq!(
        (l.payload.as_slice(), l.slot, l.generation),
        (&b"next"[..], Slot::B, 11)
    );
    assert_eq!(l.other_slot_state, SlotState::Valid { generation: 10 });
}

#[test]
fn equal_generations_prefer_slot_a_and_save_moves_past_them() {
    let mut dev = Disk::new(DISK_SECTORS);
    write_record(&mut dev, 0, 4, b"a");
    write_record(&mut dev, 32, 4, b"b");
    assert_eq!(load(&mut dev).unwrap().slot, Slot::A);
    assert_eq!(save(&mut dev, b"c").unwrap(), 5);
    assert_eq!(load(&mut dev).unwrap().payload, b"c");
}

#[test]
fn both_slots_corrupt_reports_each_reason() {
    let mut dev = disk_with(&[b"first".to_vec(), b"second".to_vec()]);
    dev.sectors_mut(0..1)[20] ^= 0x40; // slot A header
    dev.sectors_mut(32..33)[40] ^= 0x01; // slot B payload
    match load(&mut dev).unwrap_err() {
        StoreError::NoValidSlot { a, b } => {
            assert!(
                matches!(a, SlotFault::Invalid(RecordError::HeaderCrc { .. })),
                "{a:?}"
            );
            assert!(
                matches!(b, SlotFault::Invalid(RecordError::PayloadCrc { .. })),
                "{b:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A save starts over at generation 1 in slot A.
    assert_eq!(save(&mut dev, b"fresh").unwrap(), 1);
    let l = load(&mut dev).unwrap();
    assert_eq!((l.payload.as_slice(), l.slot), (&b"fresh"[..], Slot::A));
}

#[test]
fn corrupt_newest_falls_back_and_is_rewritten_first() {
    let mut dev = disk_with(&[b"gen1".to_vec(), b"gen2".to_vec()]);
    // Generation 2 lives in B; damage it.
    dev.sectors_mut(32..33)[0] = b'X';
    let l = load(&mut dev).unwrap();
    assert_eq!((l.payload.as_slice(), l.generation), (&b"gen1"[..], 1));
    assert_eq!(
        l.other_slot_state,
        SlotState::Faulty(SlotFault::Invalid(RecordError::BadMagic))
    );
    // The invalid slot is the target, even though A is older than what B held.
    assert_eq!(save(&mut dev, b"gen2 again").unwrap(), 2);
    let l = load(&mut dev).unwrap();
    assert_eq!(
        (l.payload.as_slice(), l.slot),
        (&b"gen2 again"[..], Slot::B)
    );
}

#[test]
fn record_claiming_more_than_its_slot_is_invalid() {
    let mut dev = Disk::new(8); // 4 sectors per slot: 2048 bytes
    // A valid 3000-byte record written at slot A spills into slot B's area: A's record is
    // cut off at the slot boundary.
    let big = encode(1, &payload(3000, 1)).unwrap();
    dev.sectors_mut(0..6).copy_from_slice(&big[..6 * 512]);
    write_record(&mut dev, 4, 1, b"b");
    let l = load(&mut dev).unwrap();
    assert_eq!(l.slot, Slot::B);
    assert_eq!(
        l.other_slot_state,
        SlotState::Faulty(SlotFault::Invalid(RecordError::Truncated {
            needed: 3036,
            available: 2048
        }))
    );
}

#[test]
fn payload_must_fit_a_slot() {
    let mut dev = Disk::new(5); // 2 sectors per slot, the fifth unused
    let max = 1024 - HEADER_LEN;
    assert_eq!(Slots::of(&dev).unwrap().max_payload(), max);
    assert_eq!(save(&mut dev, &payload(max, 3)).unwrap(), 1);
    assert_eq!(load(&mut dev).unwrap().payload, payload(max, 3));
    let err = save(&mut dev, &payload(max + 1, 3)).unwrap_err();
    assert_eq!(err, StoreError::PayloadTooLarge { len: max + 1, max });
    assert_eq!(
        err.to_string(),
        "configuration of 989 bytes does not fit in a slot (at most 988 bytes)"
    );
    // A big partition is still capped by the record format's limit.
    let slots = Slots::new(1 << 20, 512).unwrap();
    assert_eq!(slots.max_payload(), MAX_PAYLOAD);
    assert_eq!(slots.start(Slot::B), 1 << 19);
}

#[test]
fn layouts_that_cannot_hold_two_slots() {
    let mut one = Disk::new(1);
    assert_eq!(
        load(&mut one).unwrap_err(),
        StoreError::Layout(LayoutError::PartitionTooSmall { sectors: 1 })
    );
    assert_eq!(
        save(&mut one, b"x").unwrap_err().to_string(),
        "configuration partition of 1 sectors is too small for two slots"
    );
    let mut tiny_sectors = MemDevice::<256>::new(64);
    assert_eq!(
        load(&mut tiny_sectors).unwrap_err(),
        StoreError::Layout(LayoutError::UnsupportedSectorSize { size: 256 })
    );
    assert_eq!(Slots::new(2, 512).unwrap().sectors_per_slot(), 1);
}

#[test]
fn four_kib_sectors_work() {
    let mut dev = MemDevice::<4096>::new(16);
    for i in 1..=5u64 {
        let p = payload(5000 + i as usize, i as u8);
        assert_eq!(save(&mut dev, &p).unwrap(), i);
        assert_eq!(load(&mut dev).unwrap().payload, p);
    }
}

#[test]
fn unreadable_slot_is_reported_by_load_and_blocks_save() {
    let mut dev = disk_with(&[b"gen1".to_vec(), b"gen2".to_vec()]);
    // B (generation 2) cannot be read: load falls back to A, and says why.
    dev.fail_reads(32..33);
    let l = load(&mut dev).unwrap();
    assert_eq!((l.payload.as_slice(), l.slot), (&b"gen1"[..], Slot::A));
    assert_eq!(
        l.other_slot_state,
        SlotState::Faulty(SlotFault::Unreadable(FakeError::Io { lba: 32 }))
    );
    // Saving would have to guess: B might be the newest (it is). Nothing is written.
    let writes = dev.writes;
    let err = save(&mut dev, b"gen3").unwrap_err();
    assert_eq!(
        err,
        StoreError::Read {
            slot: Slot::B,
            error: FakeError::Io { lba: 32 }
        }
    );
    assert_eq!(
        err.to_string(),
        "reading slot B failed: I/O error at LBA 32"
    );
    assert_eq!(dev.writes, writes);

    // A failure past the first sector of a multi-sector record counts the same.
    let mut dev = disk_with(&[payload(3000, 1)]);
    dev.fail_reads(3..4);
    assert!(matches!(
        save(&mut dev, b"x"),
        Err(StoreError::Read { slot: Slot::A, .. })
    ));
    match load(&mut dev).unwrap_err() {
        StoreError::NoValidSlot { a, b } => {
            assert_eq!(a, SlotFault::Unreadable(FakeError::Io { lba: 3 }));
            assert_eq!(b, SlotFault::Invalid(RecordError::Blank));
            assert_eq!(
                StoreError::<FakeError>::NoValidSlot { a, b }.to_string(),
                "no valid configuration: slot A: read failed: I/O error at LBA 3; slot B: \
                 blank (never written)"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dropped_writes_fail_verification_and_keep_the_old_config() {
    let mut dev = disk_with(&[b"kept".to_vec()]);
    dev.drop_writes(true);
    let err = save(&mut dev, b"lost").unwrap_err();
    assert_eq!(err, StoreError::VerifyFailed { slot: Slot::B });
    assert_eq!(err.to_string(), "slot B did not read back what was written");
    dev.drop_writes(false);
    assert_eq!(load(&mut dev).unwrap().payload, b"kept");
}

#[test]
fn failed_flush_is_reported() {
    let mut dev = disk_with(&[b"kept".to_vec()]);
    dev.fail_flush(true);
    assert_eq!(
        save(&mut dev, b"new").unwrap_err(),
        StoreError::Flush {
            slot: Slot::B,
            error: FakeError::FlushFailed
        }
    );
    dev.fail_flush(false);
    // Whether the unflushed record counts is up to the device (this one writes through); the
    // previous one is intact either way.
    let l = load(&mut dev).unwrap();
    assert_eq!((l.payload.as_slice(), l.generation), (&b"new"[..], 2));
    assert_eq!(l.other_slot_state, SlotState::Valid { generation: 1 });

    // With a volatile cache and a power cut after the failed flush, either may be current.
    let mut rng = XorShift(99);
    let mut seen = [false; 2];
    for _ in 0..64 {
        let mut dev = Disk::new(DISK_SECTORS).with_volatile_cache();
        save(&mut dev, b"kept").unwrap();
        dev.fail_flush(true);
        assert!(matches!(
            save(&mut dev, b"new"),
            Err(StoreError::Flush { .. })
        ));
        dev.power_cycle(&mut rng);
        let l = load(&mut dev).unwrap();
        seen[usize::from(l.payload == b"new")] = true;
        assert!(l.payload == b"new" || l.payload == b"kept");
    }
    assert_eq!(seen, [true, true]);
}

#[test]
fn exhausted_generation_is_an_error_not_a_wrap() {
    let mut dev = Disk::new(DISK_SECTORS);
    write_record(&mut dev, 0, u64::MAX, b"last");
    assert_eq!(
        save(&mut dev, b"one more").unwrap_err(),
        StoreError::GenerationExhausted
    );
    assert_eq!(load(&mut dev).unwrap().payload, b"last");
}

#[test]
fn record_from_a_newer_format_is_skipped() {
    let mut dev = disk_with(&[b"v1 config".to_vec()]);
    // Slot B: a CRC-valid header of format version 2.
    let mut header = Vec::new();
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&2u32.to_le_bytes());
    header.extend_from_slice(&40u32.to_le_bytes());
    header.extend_from_slice(&[0u8; 20]);
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    dev.sectors_mut(32..33)[..40].copy_from_slice(&header);
    let l = load(&mut dev).unwrap();
    assert_eq!(l.payload, b"v1 config");
    assert_eq!(
        l.other_slot_state,
        SlotState::Faulty(SlotFault::Invalid(RecordError::UnsupportedVersion {
            found: 2
        }))
    );
}

/// Cuts the power at byte offsets `cuts` of the write that saving `new` makes, on a disk that
/// went through `history`, and checks after each cut that:
///
/// - `load` returns the previous configuration or the new one (and the new one whenever
///   `save` reported success), never an error when a previous configuration existed;
/// - the generation matches the payload;
/// - a later save succeeds and is what `load` then returns.
fn check_power_cuts(history: &[Vec<u8>], new: &[u8], cuts: impl Iterator<Item = usize>) -> usize {
    let base = disk_with(history);
    let previous = history.last();
    let previous_generation = history.len() as u64;
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut checked = 0;
    for cut in cuts {
        let mut dev = base.clone();
        dev.cut_power_after_bytes(cut);
        let result = save(&mut dev, new);
        dev.power_cycle(&mut rng);
        match load(&mut dev) {
            Ok(l) if l.payload == new => assert_eq!(l.generation, previous_generation + 1),
            Ok(l) => {
                assert_eq!(
                    Some(&l.payload),
                    previous,
                    "cut at byte {cut}: foreign payload"
                );
                assert_eq!(l.generation, previous_generation);
                assert!(
                    result.is_err(),
                    "cut at byte {cut}: save said Ok, load has the old"
                );
            }
            Err(err) => {
                assert!(
                    previous.is_none(),
                    "cut at byte {cut}: lost the config: {err}"
                );
                assert!(matches!(err, StoreError::NoValidSlot { .. }));
                assert!(result.is_err());
            }
        }
        if let Err(err) = &result {
            assert!(
                matches!(
                    err,
                    StoreError::Write {
                        error: FakeError::PowerCut,
                        ..
                    }
                ),
                "cut at byte {cut}: {err:?}"
            );
        }
        // The device recovers: the next save lands and wins.
        let generation = save(&mut dev, b"after the cut").unwrap();
        let l = load(&mut dev).unwrap();
        assert_eq!(l.payload, b"after the cut");
        assert_eq!(l.generation, generation);
        assert!(generation > previous_generation);
        checked += 1;
    }
    checked
}

/// Bytes the save of `new` writes (record padded to whole sectors).
fn written_len(new: &[u8]) -> usize {
    (HEADER_LEN + new.len()).div_ceil(512) * 512
}

fn histories() -> Vec<Vec<Vec<u8>>> {
    vec![
        vec![],
        vec![payload(20, 1)],
        vec![payload(20, 1), payload(700, 2)],
        // The target slot holds an older, longer record: a torn write leaves its tail.
        vec![payload(6000, 3), payload(100, 4)],
        vec![payload(6000, 3), payload(100, 4), payload(2500, 5)],
    ]
}

#[test]
fn power_cut_at_every_sector_boundary_keeps_old_or_new() {
    for history in histories() {
        for new in [
            payload(30, 9),
            payload(3000, 10),
            payload(16 * 1024 - HEADER_LEN, 11),
        ] {
            let sectors = written_len(&new) / 512;
            let n = check_power_cuts(&history, &new, (0..=sectors).map(|s| s * 512));
            assert_eq!(n, sectors + 1);
        }
    }
}

#[test]
fn power_cut_at_every_byte_keeps_old_or_new() {
    for history in histories() {
        // A two-sector record: every byte of the write, including mid-sector tears.
        let new = payload(600, 12);
        let len = written_len(&new);
        assert_eq!(check_power_cuts(&history, &new, 0..=len), len + 1);
    }
    // A larger record: a stride through every sector plus both sides of each boundary.
    let new = payload(5000, 13);
    let len = written_len(&new);
    let cuts = (0..=len).filter(|c| c % 61 == 0 || c % 512 <= 1 || c % 512 == 511);
    check_power_cuts(&histories()[3], &new, cuts);
}

#[test]
fn power_cut_with_volatile_cache_losing_any_subset_keeps_old_or_new() {
    let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
    for round in 0..400u64 {
        let mut dev = Disk::new(DISK_SECTORS).with_volatile_cache();
        let history = [payload(4000, 1), payload(300, 2), payload(1500, 3)];
        let depth = (round % 4) as usize;
        for p in &history[..depth] {
            save(&mut dev, p).unwrap();
        }
        let new = payload(1 + (rng.next() % 6000) as usize, 7);
        let cut = (rng.next() % (written_len(&new) as u64 + 1)) as usize;
        dev.cut_power_after_bytes(cut);
        let result = save(&mut dev, &new);
        dev.power_cycle(&mut rng);
        match load(&mut dev) {
            Ok(l) if l.payload == new => assert_eq!(l.generation, depth as u64 + 1),
            Ok(l) => {
                assert!(
                    depth > 0 && l.payload == history[depth - 1],
                    "round {round}"
                );
                assert!(result.is_err());
            }
            Err(err) => assert!(depth == 0, "round {round}: {err}"),
        }
    }
}

#[test]
fn failed_write_after_n_sectors_then_retry() {
    // A flaky device: each save attempt dies after a few sectors; the config survives every
    // attempt, and the first complete save wins.
    let mut dev = disk_with(&[b"stable".to_vec()]);
    let new = payload(4000, 21); // 8 sectors
    let mut rng = XorShift(7);
    for sectors in 0..8 {
        dev.cut_power_after_sectors(sectors);
        assert!(save(&mut dev, &new).is_err());
        dev.power_cycle(&mut rng);
        let l = load(&mut dev).unwrap();
        assert_eq!((l.payload.as_slice(), l.generation), (&b"stable"[..], 1));
    }
    assert_eq!(save(&mut dev, &new).unwrap(), 2);
    assert_eq!(load(&mut dev).unwrap().payload, new);
}

#[test]
fn slot_display_and_other() {
    assert_eq!(Slot::A.to_string(), "A");
    assert_eq!(Slot::B.other(), Slot::A);
    let state: SlotState<FakeError> = SlotState::Valid { generation: 3 };
    assert_eq!(state.to_string(), "valid, generation 3");
    assert_eq!(
        LayoutError::UnsupportedSectorSize { size: 256 }.to_string(),
        "sector size 256 is not supported (at least 512 bytes needed)"
    );
}
