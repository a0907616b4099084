//! Host unit tests for guest RAM and host frames, over [`MockHost`].

use super::*;
use crate::testing::MockHost;

const MIB: u64 = 1 << 20;

fn host(frames: u64) -> &'static MockHost {
    MockHost::leak(frames)
}

#[test]
fn rejects_invalid_sizes() {
    let h = host(1 << 20);
    for size in [
        0,
        4096,
        MIB,
        3 * MIB,
        2 * MIB + 4096,
        MAX_GUEST_RAM + 2 * MIB,
        u64::MAX,
    ] {
        assert_eq!(
            GuestMemory::new(h, size).unwrap_err(),
            MemoryError::InvalidSize { size },
            "size {size:#x}"
        );
    }
    assert_eq!(h.alloc_calls(), 0);
}

#[test]
fn largest_size_is_accepted_then_runs_out() {
    // 64 GiB is a valid size; the mock has room for 1 chunk, so it fails with OOM, not
    // InvalidSize, and frees the chunk it got.
    let h = host(600);
    let err = GuestMemory::new(h, MAX_GUEST_RAM).unwrap_err();
    assert_eq!(
        err,
        MemoryError::OutOfHostMemory {
            requested: MAX_GUEST_RAM
        }
    );
    assert_eq!(h.frames_in_use(), 0);
}

#[test]
fn contiguous_chunks_merge_into_one_region() {
    let h = host(4096);
    let mem = GuestMemory::new(h, 8 * MIB).unwrap();
    assert_eq!(mem.size(), 8 * MIB);
    assert_eq!(
        mem.regions(),
        &[RamRegion {
            gpa: 0,
            len: 8 * MIB,
            hpa: MockHost::BASE
        }]
    );
    assert_eq!(h.live_allocations(), 4);
    assert_eq!(h.frames_in_use(), 4 * 512);
    drop(mem);
    assert_eq!(h.frames_in_use(), 0);
    assert_eq!(h.live_allocations(), 0);
}

#[test]
fn separated_chunks_stay_separate_regions() {
    let h = host(4096);
    h.set_gap_frames(1);
    let mem = GuestMemory::new(h, 6 * MIB).unwrap();
    let r = mem.regions();
    assert_eq!(r.len(), 3);
    for (i, region) in r.iter().enumerate() {
        assert_eq!(region.gpa, i as u64 * 2 * MIB);
        assert_eq!(region.len, 2 * MIB);
        assert_eq!(region.hpa % (2 * MIB), 0, "chunks are 2 MiB aligned");
    }
    assert!(r[1].hpa > r[0].hpa + r[0].len);
}

#[test]
fn falls_back_to_single_frames() {
    let h = host(4096);
    h.set_max_contiguous(Some(1));
    let mem = GuestMemory::new(h, 4 * MIB).unwrap();
    assert_eq!(h.live_allocations(), 1024);
    // The bump allocator hands out consecutive frames: one merged region.
    assert_eq!(mem.regions().len(), 1);
    assert_eq!(mem.regions()[0].len, 4 * MIB);
    drop(mem);
    assert_eq!(h.frames_in_use(), 0);
}

#[test]
fn fallback_frames_with_gaps_are_separate_regions() {
    let h = host(4096);
    h.set_max_contiguous(Some(1));
    h.set_gap_frames(1);
    let mem = GuestMemory::new(h, 2 * MIB).unwrap();
    assert_eq!(mem.regions().len(), 512);
    assert!(mem.regions().iter().all(|r| r.len == FRAME_SIZE));
    assert_eq!(mem.regions()[511].gpa, 2 * MIB - FRAME_SIZE);
}

#[test]
fn mixed_large_and_fallback_chunks() {
    let h = host(4096);
    h.set_gap_frames(1);
    h.set_fragmented_after(Some(1));
    let mem = GuestMemory::new(h, 4 * MIB).unwrap();
    let r = mem.regions();
    assert_eq!(r.len(), 1 + 512);
    assert_eq!(r[0].len, 2 * MIB);
    assert_eq!(r[1].gpa, 2 * MIB);
    assert_eq!(r[1].len, FRAME_SIZE);
    // Data crosses from the large chunk into the fallback frames and between frames.
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    mem.write(2 * MIB - 100, &data).unwrap();
    let mut back = vec![0; data.len()];
    mem.read(2 * MIB - 100, &mut back).unwrap();
    assert_eq!(back, data);
    // And it landed in the right host bytes.
    assert_eq!(h.peek(r[0].hpa + 2 * MIB - 100), data[0]);
    assert_eq!(h.peek(r[1].hpa), data[100]);
    assert_eq!(h.peek(r[2].hpa), data[100 + 4096]);
    assert_eq!(mem.hpa(2 * MIB + FRAME_SIZE + 5), Some(r[2].hpa + 5));
}

#[test]
fn out_of_memory_midway_frees_everything() {
    let h = host(512 * 3 + 100);
    let err = GuestMemory::new(h, 8 * MIB).unwrap_err();
    assert_eq!(err, MemoryError::OutOfHostMemory { requested: 8 * MIB });
    assert!(h.peak_frames() > 512 * 3);
    assert_eq!(h.frames_in_use(), 0);
    assert_eq!(h.live_allocations(), 0);
}

#[test]
fn out_of_memory_in_fallback_frees_everything() {
    let h = host(4096);
    h.set_max_contiguous(Some(1));
    h.set_fail_after(Some(700));
    assert!(matches!(
        GuestMemory::new(h, 4 * MIB),
        Err(MemoryError::OutOfHostMemory { .. })
    ));
    assert_eq!(h.frames_in_use(), 0);
}

#[test]
fn memory_starts_zeroed() {
    let mem = GuestMemory::new(host(1024), 2 * MIB).unwrap();
    let mut buf = vec![0xFF; 4096];
    mem.read(2 * MIB - 4096, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn scalar_accesses_are_little_endian() {
    let h = host(1024);
    let mem = GuestMemory::new(h, 2 * MIB).unwrap();
    mem.write_u64(0x1000, 0x0807_0605_0403_0201).unwrap();
    assert_eq!(mem.read_u8(0x1000).unwrap(), 1);
    assert_eq!(mem.read_u16(0x1000).unwrap(), 0x0201);
    assert_eq!(mem.read_u32(0x1004).unwrap(), 0x0807_0605);
    assert_eq!(mem.read_u64(0x1000).unwrap(), 0x0807_0605_0403_0201);
    mem.write_u8(0x2000, 0xAA).unwrap();
    mem.write_u16(0x2001, 0xCCBB).unwrap();
    mem.write_u32(0x2003, 0x1122_3344).unwrap();
    assert_eq!(mem.read_u64(0x2000).unwrap(), 0x0011_2233_44CC_BBAA);
    assert_eq!(h.peek(MockHost::BASE + 0x2001), 0xBB);
    // Unaligned and frame-crossing scalars.
    mem.write_u64(0x2FFD, u64::MAX - 1).unwrap();
    assert_eq!(mem.read_u64(0x2FFD).unwrap(), u64::MAX - 1);
}

#[test]
fn accesses_span_chunks() {
    let h = host(4096);
    h.set_gap_frames(7);
    let mem = GuestMemory::new(h, 6 * MIB).unwrap();
    assert_eq!(mem.regions().len(), 3);
    let data: Vec<u8> = (0..3 * MIB as usize).map(|i| (i * 7 % 256) as u8).collect();
    mem.write(MIB, &data).unwrap();
    let mut back = vec![0; data.len()];
    mem.read(MIB, &mut back).unwrap();
    assert_eq!(back, data);
    mem.write_u32(2 * MIB - 2, 0xDDCC_BBAA).unwrap();
    assert_eq!(h.peek(mem.regions()[0].hpa + 2 * MIB - 1), 0xBB);
    assert_eq!(h.peek(mem.regions()[1].hpa), 0xCC);
    assert_eq!(mem.read_u32(2 * MIB - 2).unwrap(), 0xDDCC_BBAA);
}

#[test]
fn fill_sets_bytes_across_chunks() {
    let mem = GuestMemory::new(host(4096), 4 * MIB).unwrap();
    mem.fill(2 * MIB - 10, 20, 0x5A).unwrap();
    assert_eq!(mem.read_u8(2 * MIB - 11).unwrap(), 0);
    assert_eq!(mem.read_u8(2 * MIB - 10).unwrap(), 0x5A);
    assert_eq!(mem.read_u8(2 * MIB + 9).unwrap(), 0x5A);
    assert_eq!(mem.read_u8(2 * MIB + 10).unwrap(), 0);
    mem.fill(0, 4 * MIB, 1).unwrap();
    assert_eq!(mem.read_u8(4 * MIB - 1).unwrap(), 1);
    assert_eq!(
        mem.fill(4 * MIB - 1, 2, 0),
        Err(MemoryError::OutOfRange {
            gpa: 4 * MIB - 1,
            len: 2
        })
    );
    assert_eq!(
        mem.read_u8(4 * MIB - 1).unwrap(),
        1,
        "failed fill wrote nothing"
    );
}

#[test]
fn out_of_range_accesses_are_refused() {
    let mem = GuestMemory::new(host(1024), 2 * MIB).unwrap();
    let size = 2 * MIB;
    let mut b8 = [0u8; 8];
    assert_eq!(
        mem.read(size, &mut [0]),
        Err(MemoryError::OutOfRange { gpa: size, len: 1 })
    );
    assert_eq!(
        mem.read(size - 4, &mut b8),
        Err(MemoryError::OutOfRange {
            gpa: size - 4,
            len: 8
        })
    );
    assert_eq!(
        mem.read_u64(u64::MAX - 3),
        Err(MemoryError::OutOfRange {
            gpa: u64::MAX - 3,
            len: 8
        })
    );
    assert!(mem.write_u16(u64::MAX, 0).is_err());
    assert!(mem.write(size - 1, &[1, 2]).is_err());
    assert_eq!(mem.read_u8(size - 1), Ok(0), "failed write wrote nothing");
    assert!(mem.fill(1, u64::MAX, 0).is_err());
    assert!(mem.fill(u64::MAX, 1, 0).is_err());
    // Zero-length accesses at the end are fine; past it they are not.
    assert_eq!(mem.read(size, &mut []), Ok(()));
    assert!(mem.read(size + 1, &mut []).is_err());
}

#[test]
fn contains_and_hpa() {
    let h = host(4096);
    let mem = GuestMemory::new(h, 4 * MIB).unwrap();
    assert!(mem.contains(0, 4 * MIB));
    assert!(mem.contains(4 * MIB - 1, 1));
    assert!(!mem.contains(4 * MIB - 1, 2));
    assert!(!mem.contains(4 * MIB, 1));
    assert!(!mem.contains(1, u64::MAX));
    assert!(!mem.contains(u64::MAX, 1));
    assert_eq!(mem.hpa(0), Some(MockHost::BASE));
    assert_eq!(mem.hpa(3 * MIB + 7), Some(MockHost::BASE + 3 * MIB + 7));
    assert_eq!(mem.hpa(4 * MIB), None);
    assert_eq!(mem.hpa(u64::MAX), None);
}

#[test]
fn frames_are_billed_to_their_use_and_unbilled_when_dropped() {
    let h = host(2048);
    let mem = GuestMemory::new(h, 4 * MIB).unwrap();
    let control = ControlFrames::alloc(h, 2, 1).unwrap();
    assert_eq!(h.frames_for(FrameUse::GuestRam), 1024);
    assert_eq!(h.frames_for(FrameUse::VcpuControl), 2);
    assert_eq!(h.frames_for(FrameUse::SecondLevelTables), 0);
    assert_eq!(h.frames_in_use(), 1026, "every frame is billed to one use");
    drop(control);
    drop(mem);
    for use_ in FrameUse::ALL {
        assert_eq!(h.frames_for(use_), 0, "{use_:?}");
    }
}

#[test]
fn host_frames_are_bounds_checked_and_freed() {
    let h = host(16);
    let frames = HostFrames::alloc(h, FrameUse::GuestRam, 2, 2).unwrap();
    assert_eq!(frames.len(), 8192);
    assert_eq!(frames.frame_count(), 2);
    frames.write_u64(4092, 0x1122_3344_5566_7788).unwrap();
    assert_eq!(frames.read_u64(4092).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(h.peek_u64(frames.phys() + 4092), 0x1122_3344_5566_7788);
    assert!(matches!(
        frames.read_u64(8188),
        Err(MemoryError::FrameOffsetOutOfRange { offset: 8188, .. })
    ));
    assert!(frames.write_u64(u64::MAX - 2, 0).is_err());
    assert!(frames.fill(1, 8192, 0).is_err());
    frames.fill(8, 8, 0xFF).unwrap();
    assert_eq!(frames.read_u64(8).unwrap(), u64::MAX);
    assert_eq!(h.frames_in_use(), 2);
    drop(frames);
    assert_eq!(h.frames_in_use(), 0);
    assert_eq!(
        HostFrames::alloc(h, FrameUse::GuestRam, 0, 1).unwrap_err(),
        MemoryError::InvalidFrameRequest { count: 0, align: 1 }
    );
    assert!(HostFrames::alloc(h, FrameUse::GuestRam, 1, 3).is_err());
    assert_eq!(
        HostFrames::alloc(h, FrameUse::GuestRam, 17, 1).unwrap_err(),
        MemoryError::OutOfHostMemory {
            requested: 17 * 4096
        }
    );
}

#[test]
fn error_messages_tell_the_operator_what_to_do() {
    let msg = MemoryError::InvalidSize { size: 3 << 20 }.to_string();
    assert!(msg.contains("multiple of 2 MiB"), "{msg}");
    let msg = MemoryError::OutOfHostMemory { requested: 8 << 20 }.to_string();
    assert!(msg.contains("8192 KiB") && msg.contains("stop"), "{msg}");
    let msg = MemoryError::OutOfRange {
        gpa: 0x1000,
        len: 4,
    }
    .to_string();
    assert_eq!(
        msg,
        "guest-physical access of 4 bytes at 0x1000 is outside guest RAM"
    );
}

#[test]
fn control_frames_lend_frames_and_free_them() {
    let h = host(16);
    let mut frames = ControlFrames::alloc(h, 2, 1).unwrap();
    assert_eq!(frames.frame_count(), 2);
    frames.page_mut()[4095] = 7;
    frames.frame_mut(1).unwrap()[0] = 9;
    assert_eq!(frames.page()[4095], 7);
    assert_eq!(frames.frame(1).unwrap()[0], 9);
    assert_eq!(
        h.peek(frames.phys() + 4096),
        9,
        "frame 1 is the second page"
    );
    assert_eq!(
        frames.frame(2).unwrap_err(),
        MemoryError::FrameOffsetOutOfRange {
            phys: frames.phys(),
            offset: 2 * 4096,
            len: 4096
        }
    );
    frames.fill(0xff).unwrap();
    let mut b = [0u8; 2];
    frames.read(4095, &mut b).unwrap();
    assert_eq!(b, [0xff, 0xff]);
    frames.write(4095, &[1, 2]).unwrap();
    assert_eq!(
        (h.peek(frames.phys() + 4095), h.peek(frames.phys() + 4096)),
        (1, 2)
    );
    drop(frames);
    assert_eq!(h.frames_in_use(), 0);
}
