use alloc::string::String;
use alloc::vec;

use serde::{Deserialize, Serialize};

use super::*;
use crate::memory::MIN_GUEST_RAM;
use crate::testing::MockHost;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Description {
    name: String,
    cpus: u8,
}

/// RAM with a few pages written: page 0, a page in the middle, and the last page.
fn sample_memory(host: &'static MockHost) -> GuestMemory {
    let memory = GuestMemory::new(host, MIN_GUEST_RAM).unwrap();
    memory.write(0, b"first page").unwrap();
    memory
        .write(0x7_3ff8, &0x1122_3344_5566_7788u64.to_le_bytes())
        .unwrap();
    memory.write(MIN_GUEST_RAM - 1, &[0xAA]).unwrap();
    memory
}

fn sample_blob(memory: &GuestMemory) -> Vec<u8> {
    let mut blob = Vec::new();
    let mut w = Writer::new(&mut blob).unwrap();
    w.section(
        Section::Description,
        &Description {
            name: String::from("web"),
            cpus: 2,
        },
    )
    .unwrap();
    w.section(Section::Vm, &(1u64, 2u32)).unwrap();
    w.section(Section::Vcpus, &vec![7u8; 100]).unwrap();
    w.section(Section::Devices, &[3u16, 4]).unwrap();
    w.memory(memory).unwrap();
    w.finish().unwrap();
    blob
}

#[test]
fn a_vm_round_trips_through_bytes() {
    let host = MockHost::leak(4096);
    let memory = sample_memory(host);
    let blob = sample_blob(&memory);
    assert_eq!(&blob[..8], b"KEELVM\r\n");
    assert_eq!(&blob[blob.len() - 24..blob.len() - 16], b"KEELEND\n");
    // Three pages of 512 saved, not 2 MiB.
    assert!(
        blob.len() < 4 * 4096,
        "zero pages are left out: {}",
        blob.len()
    );

    let reader = Reader::open(&blob).unwrap();
    let d: Description = reader.section(Section::Description).unwrap();
    assert_eq!(d.name, "web");
    assert_eq!(d.cpus, 2);
    assert_eq!(reader.section::<(u64, u32)>(Section::Vm).unwrap(), (1, 2));
    assert_eq!(
        reader.section::<Vec<u8>>(Section::Vcpus).unwrap(),
        vec![7u8; 100]
    );
    assert_eq!(reader.memory_size().unwrap(), MIN_GUEST_RAM);
    reader.check_memory().unwrap();

    let restored = GuestMemory::new(host, MIN_GUEST_RAM).unwrap();
    reader.load_memory(&restored).unwrap();
    let (mut a, mut b) = (
        vec![0u8; MIN_GUEST_RAM as usize],
        vec![0u8; MIN_GUEST_RAM as usize],
    );
    memory.read(0, &mut a).unwrap();
    restored.read(0, &mut b).unwrap();
    assert!(a == b, "restored RAM equals the saved RAM");
}

#[test]
fn a_frame_blob_holds_a_saved_vm() {
    let host = MockHost::leak(4096);
    let memory = sample_memory(host);
    let mut blob = FrameBlob::new(host);
    let mut w = Writer::new(&mut blob).unwrap();
    w.section(Section::Description, &1u8).unwrap();
    w.section(Section::Vm, &2u8).unwrap();
    w.section(Section::Vcpus, &3u8).unwrap();
    w.section(Section::Devices, &4u8).unwrap();
    w.memory(&memory).unwrap();
    w.finish().unwrap();
    let reader = Reader::open(&blob).unwrap();
    assert_eq!(reader.section::<u8>(Section::Devices).unwrap(), 4);
    let restored = GuestMemory::new(host, MIN_GUEST_RAM).unwrap();
    reader.load_memory(&restored).unwrap();
    assert_eq!(restored.read_u64(0x7_3ff8).unwrap(), 0x1122_3344_5566_7788);
}

#[test]
fn every_flipped_bit_is_caught() {
    let host = MockHost::leak(4096);
    let blob = sample_blob(&sample_memory(host));
    // Every byte of a small blob; one bit each.
    for at in 0..blob.len() {
        let mut bad = blob.clone();
        bad[at] ^= 0x10;
        let err = Reader::open(&bad).expect_err("a damaged blob is refused");
        let body = HEADER_LEN as usize..blob.len() - TRAILER_LEN as usize;
        if body.contains(&at) || (blob.len() - 8..blob.len() - 4).contains(&at) {
            assert!(
                matches!(err, SnapshotError::ChecksumMismatch { .. }),
                "byte {at}: {err}"
            );
        }
    }
}

#[test]
fn truncated_wrong_version_and_foreign_blobs_are_refused() {
    let host = MockHost::leak(4096);
    let blob = sample_blob(&sample_memory(host));
    for cut in [0, 5, 16, 30, blob.len() / 2, blob.len() - 1] {
        let err = Reader::open(&blob[..cut].to_vec()).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Truncated | SnapshotError::NotASavedVm),
            "cut at {cut}: {err}"
        );
    }
    assert_eq!(
        Reader::open(&blob[..0].to_vec()).unwrap_err(),
        SnapshotError::NotASavedVm
    );
    assert_eq!(
        Reader::open(&blob[..blob.len() - 1].to_vec()).unwrap_err(),
        SnapshotError::Truncated
    );

    // Version 1 (before kvm-clock's MSRs joined the VM loop's state) is refused.
    let mut v1 = blob.clone();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    let err = Reader::open(&v1).unwrap_err();
    assert_eq!(err, SnapshotError::UnsupportedVersion { found: 1 });
    assert_eq!(
        err.to_string(),
        "saved VM format version 1 is not supported (this build reads version 2)"
    );

    let mut foreign = blob.clone();
    foreign[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    assert_eq!(
        Reader::open(&foreign).unwrap_err(),
        SnapshotError::NotASavedVm
    );

    // A trailer whose length disagrees with the blob (checked before the checksum).
    let mut long = blob.clone();
    let n = long.len();
    long[n - 16..n - 8].copy_from_slice(&1u64.to_le_bytes());
    assert!(matches!(
        Reader::open(&long).unwrap_err(),
        SnapshotError::LengthMismatch { stated: 1, .. }
    ));
}

/// Re-seals a body so its checksum matches: for tests of what lies behind the checksum.
fn seal(body: &[u8]) -> Vec<u8> {
    let mut blob = Vec::new();
    blob.extend_from_slice(&MAGIC);
    blob.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    blob.extend_from_slice(&[0; 4]);
    blob.extend_from_slice(body);
    blob.extend_from_slice(&TRAILER_MAGIC);
    blob.extend_from_slice(&(body.len() as u64).to_le_bytes());
    blob.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    blob.extend_from_slice(&[0; 4]);
    blob
}

fn section(tag: u32, payload: &[u8]) -> Vec<u8> {
    let mut s = tag.to_le_bytes().to_vec();
    s.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    s.extend_from_slice(payload);
    s
}

#[test]
fn sections_must_all_be_there_in_order() {
    let memory = {
        let mut m = (4096u64).to_le_bytes().to_vec();
        m.extend_from_slice(&0u64.to_le_bytes());
        m
    };
    let good: Vec<u8> = [
        section(1, &[0]),
        section(2, &[0]),
        section(3, &[0]),
        section(4, &[0]),
        section(5, &memory),
    ]
    .concat();
    Reader::open(&seal(&good)).unwrap();

    let missing = [section(1, &[0]), section(2, &[0]), section(4, &[0])].concat();
    assert_eq!(
        Reader::open(&seal(&missing)).unwrap_err(),
        SnapshotError::MisplacedSection { expected: "vcpus" }
    );
    let unknown = [section(1, &[0]), section(9, &[0])].concat();
    assert_eq!(
        Reader::open(&seal(&unknown)).unwrap_err(),
        SnapshotError::UnknownSection { tag: 9 }
    );
    let overlong = [section(1, &[0]), {
        let mut s = section(2, &[0]);
        s[4..12].copy_from_slice(&1000u64.to_le_bytes());
        s
    }]
    .concat();
    assert!(matches!(
        Reader::open(&seal(&overlong)).unwrap_err(),
        SnapshotError::Malformed { section: "vm", .. }
    ));
    let mut extra = good.clone();
    extra.push(0);
    assert!(matches!(
        Reader::open(&seal(&extra)).unwrap_err(),
        SnapshotError::MisplacedSection { .. } | SnapshotError::Malformed { .. }
    ));
}

#[test]
fn a_section_that_does_not_decode_is_named() {
    let host = MockHost::leak(4096);
    let blob = sample_blob(&sample_memory(host));
    let reader = Reader::open(&blob).unwrap();
    // The vm section holds (u64, u32); a String of that length does not parse as UTF-8 ...
    let err = reader.section::<Description>(Section::Vcpus).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Malformed {
                section: "vcpus",
                ..
            }
        ),
        "{err}"
    );
    // ... and a value shorter than the payload leaves bytes behind.
    let err = reader.section::<u8>(Section::Vm).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the saved VM's vm section is malformed: bytes follow its value"
    );
}

#[test]
fn a_malformed_memory_section_is_refused_before_anything_is_loaded() {
    let head: Vec<u8> = [
        section(1, &[0]),
        section(2, &[0]),
        section(3, &[0]),
        section(4, &[0]),
    ]
    .concat();
    let open = |memory: &[u8]| {
        let blob = seal(&[head.clone(), section(5, memory)].concat());
        Reader::open(&blob).and_then(|r| r.check_memory())
    };
    let mut beyond = 4096u64.to_le_bytes().to_vec();
    beyond.extend_from_slice(&0b10u64.to_le_bytes());
    beyond.extend_from_slice(&[0; 4096]);
    assert_eq!(
        open(&beyond).unwrap_err().to_string(),
        "the saved VM's memory section is malformed: it saves pages beyond its size"
    );
    let mut short = 8192u64.to_le_bytes().to_vec();
    short.extend_from_slice(&0b11u64.to_le_bytes());
    short.extend_from_slice(&[0; 4096]);
    assert!(matches!(
        open(&short).unwrap_err(),
        SnapshotError::Malformed { .. }
    ));
    let odd = 100u64.to_le_bytes().to_vec();
    assert!(matches!(
        open(&odd).unwrap_err(),
        SnapshotError::Malformed { .. }
    ));

    // RAM of another size is refused by name.
    let host = MockHost::leak(4096);
    let memory = sample_memory(host);
    let blob = sample_blob(&memory);
    let bigger = GuestMemory::new(host, 2 * MIN_GUEST_RAM).unwrap();
    assert_eq!(
        Reader::open(&blob)
            .unwrap()
            .load_memory(&bigger)
            .unwrap_err(),
        SnapshotError::MemorySizeMismatch {
            saved: MIN_GUEST_RAM,
            target: 2 * MIN_GUEST_RAM
        }
    );
}

#[test]
fn the_writer_keeps_the_section_order() {
    let mut blob = Vec::new();
    let mut w = Writer::new(&mut blob).unwrap();
    assert_eq!(
        w.section(Section::Vm, &0u8).unwrap_err(),
        SnapshotError::MisplacedSection {
            expected: "description"
        }
    );
    w.section(Section::Description, &0u8).unwrap();
    assert_eq!(
        w.finish().unwrap_err(),
        SnapshotError::MisplacedSection { expected: "vm" }
    );
}
