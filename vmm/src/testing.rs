//! Test-only helpers shared by the crate's unit tests.
//!
//! [`MockHost`] is a heap-backed [`HostMemory`]: it hands out "physical" frames from a fake
//! address space (starting at [`MockHost::BASE`], far from guest-physical 0 so a mixed-up GPA
//! and HPA shows up in tests) and backs each allocation with a zeroed heap buffer. It counts
//! what is outstanding so tests can check that everything allocated is freed, and it can be
//! told to fail allocations to exercise out-of-memory paths.
//!
//! Tests need a `&'static dyn HostMemory`; [`MockHost::leak`] gives each test its own leaked
//! instance (a few bytes of bookkeeping; the frame buffers themselves are freed on
//! `free_frames`).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::vec::Vec;

use crate::host::{FRAME_SIZE, FrameUse, HostMemory};

/// One live allocation: its frame count and the bytes behind it.
///
/// `Cell<u8>` makes the buffer writable through the shared pointer `ptr` returns, without
/// `unsafe` here; a `Vec` (not a `Box`) keeps the pointer valid when the map moves the value.
struct Block {
    count: u64,
    bytes: Vec<Cell<u8>>,
}

#[derive(Default)]
struct Inner {
    /// Next free fake physical address (bump allocator; freed ranges are not reused, so a
    /// use-after-free in the code under test hits the "not allocated" panic in `ptr`).
    next: u64,
    /// Live allocations by first physical address.
    blocks: BTreeMap<u64, Block>,
    /// Frames currently allocated.
    frames_in_use: u64,
    /// Highest `frames_in_use` seen.
    peak_frames: u64,
    /// Most frames that may be allocated at once.
    capacity: u64,
    /// Allocations larger than this many frames fail (simulates fragmentation).
    max_contiguous: Option<u64>,
    /// Number of further allocations that succeed before every one fails.
    fail_after: Option<u64>,
    /// Number of further allocations after which multi-frame allocations fail.
    fragmented_after: Option<u64>,
    /// Frames skipped after each allocation, so consecutive allocations are not contiguous.
    gap_frames: u64,
    /// Successful `alloc_frames` calls.
    alloc_calls: u64,
    /// Frames currently allocated through `alloc_frames_for`, by `FrameUse::index`.
    frames_by_use: [u64; FrameUse::ALL.len()],
}

/// A heap-backed [`HostMemory`] for host unit tests.
pub(crate) struct MockHost {
    inner: Mutex<Inner>,
}

impl MockHost {
    /// First fake physical address handed out (4 GiB, 1 GiB aligned).
    pub(crate) const BASE: u64 = 0x1_0000_0000;

    /// A new mock with room for `capacity_frames` frames at once, leaked so it can be used as
    /// `&'static dyn HostMemory`.
    pub(crate) fn leak(capacity_frames: u64) -> &'static MockHost {
        std::boxed::Box::leak(std::boxed::Box::new(MockHost {
            inner: Mutex::new(Inner {
                next: Self::BASE,
                capacity: capacity_frames,
                ..Inner::default()
            }),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock has already failed; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes allocations of more than `frames` contiguous frames fail (`None`: no limit).
    pub(crate) fn set_max_contiguous(&self, frames: Option<u64>) {
        self.lock().max_contiguous = frames;
    }

    /// Lets `n` more allocations succeed, then fails every one (`None`: never fail).
    pub(crate) fn set_fail_after(&self, n: Option<u64>) {
        self.lock().fail_after = n;
    }

    /// After `n` more successful allocations, allocations of more than one frame fail (as if
    /// host memory had become fragmented); `None`: never.
    pub(crate) fn set_fragmented_after(&self, n: Option<u64>) {
        self.lock().fragmented_after = n;
    }

    /// Leaves `frames` unallocated frames after each allocation.
    pub(crate) fn set_gap_frames(&self, frames: u64) {
        self.lock().gap_frames = frames;
    }

    /// Frames currently allocated.
    pub(crate) fn frames_in_use(&self) -> u64 {
        self.lock().frames_in_use
    }

    /// The most frames that were allocated at once.
    pub(crate) fn peak_frames(&self) -> u64 {
        self.lock().peak_frames
    }

    /// Live allocations.
    pub(crate) fn live_allocations(&self) -> usize {
        self.lock().blocks.len()
    }

    /// Frames currently allocated for `use_` (through `alloc_frames_for`).
    pub(crate) fn frames_for(&self, use_: FrameUse) -> u64 {
        self.lock().frames_by_use[use_.index()]
    }

    /// Successful `alloc_frames` calls so far.
    pub(crate) fn alloc_calls(&self) -> u64 {
        self.lock().alloc_calls
    }

    /// Reads the byte at `phys` (must be inside a live allocation).
    pub(crate) fn peek(&self, phys: u64) -> u8 {
        let inner = self.lock();
        let (base, block) = Self::block_of(&inner, phys);
        block.bytes[(phys - base) as usize].get()
    }

    /// Reads the little-endian u64 at `phys` (must be inside one live allocation).
    pub(crate) fn peek_u64(&self, phys: u64) -> u64 {
        let mut v = [0u8; 8];
        for (i, b) in v.iter_mut().enumerate() {
            *b = self.peek(phys + i as u64);
        }
        u64::from_le_bytes(v)
    }

    /// Writes the byte at `phys` (must be inside a live allocation).
    pub(crate) fn poke(&self, phys: u64, value: u8) {
        let inner = self.lock();
        let (base, block) = Self::block_of(&inner, phys);
        block.bytes[(phys - base) as usize].set(value);
    }

    fn block_of(inner: &Inner, phys: u64) -> (u64, &Block) {
        match inner.blocks.range(..=phys).next_back() {
            Some((&base, block)) if phys - base < block.count * FRAME_SIZE => (base, block),
            _ => panic!("MockHost: {phys:#x} is not inside an allocated frame"),
        }
    }
}

impl HostMemory for MockHost {
    fn alloc_frames(&self, count: u64, align: u64) -> Option<u64> {
        assert!(count > 0, "MockHost: alloc_frames(0)");
        assert!(
            align.is_power_of_two(),
            "MockHost: align {align} is not a power of two"
        );
        let mut inner = self.lock();
        if let Some(n) = inner.fail_after {
            if n == 0 {
                return None;
            }
            inner.fail_after = Some(n - 1);
        }
        if inner.max_contiguous.is_some_and(|max| count > max) {
            return None;
        }
        if inner.fragmented_after == Some(0) && count > 1 {
            return None;
        }
        if inner.frames_in_use + count > inner.capacity {
            return None;
        }
        let align_bytes = align * FRAME_SIZE;
        let phys = inner.next.next_multiple_of(align_bytes);
        inner.next = phys + (count + inner.gap_frames) * FRAME_SIZE;
        let len = usize::try_from(count * FRAME_SIZE).expect("mock allocation fits in usize");
        inner.blocks.insert(
            phys,
            Block {
                count,
                bytes: std::vec![Cell::new(0); len],
            },
        );
        inner.frames_in_use += count;
        inner.peak_frames = inner.peak_frames.max(inner.frames_in_use);
        inner.alloc_calls += 1;
        if let Some(n) = inner.fragmented_after {
            inner.fragmented_after = Some(n.saturating_sub(1));
        }
        Some(phys)
    }

    fn free_frames(&self, phys: u64, count: u64) {
        let mut inner = self.lock();
        match inner.blocks.remove(&phys) {
            Some(block) if block.count == count => inner.frames_in_use -= count,
            Some(block) => panic!(
                "MockHost: free_frames({phys:#x}, {count}) but {} frames were allocated there",
                block.count
            ),
            None => panic!("MockHost: free_frames({phys:#x}, {count}) of unallocated frames"),
        }
    }

    fn alloc_frames_for(&self, use_: FrameUse, count: u64, align: u64) -> Option<u64> {
        let phys = self.alloc_frames(count, align)?;
        self.lock().frames_by_use[use_.index()] += count;
        Some(phys)
    }

    fn free_frames_for(&self, use_: FrameUse, phys: u64, count: u64) {
        self.free_frames(phys, count);
        let mut inner = self.lock();
        let held = &mut inner.frames_by_use[use_.index()];
        *held = held
            .checked_sub(count)
            .unwrap_or_else(|| panic!("MockHost: {count} frames of {use_:?} freed, {held} held"));
    }

    fn ptr(&self, phys: u64) -> *mut u8 {
        let inner = self.lock();
        let (base, block) = Self::block_of(&inner, phys);
        // The buffer lives until `free_frames`; `Cell` permits writes through this pointer.
        block.bytes[(phys - base) as usize..].as_ptr() as *mut u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_aligned_zeroed_frames_and_tracks_use() {
        let host = MockHost::leak(1024);
        let a = host.alloc_frames(1, 1).unwrap();
        let b = host.alloc_frames(512, 512).unwrap();
        assert_eq!(a, MockHost::BASE);
        assert_eq!(b % (512 * FRAME_SIZE), 0);
        assert_eq!(host.frames_in_use(), 513);
        assert_eq!(host.peek(b + 4095), 0);
        host.poke(b + 10, 0xAB);
        assert_eq!(host.peek(b + 10), 0xAB);
        host.free_frames(a, 1);
        host.free_frames(b, 512);
        assert_eq!(host.frames_in_use(), 0);
        assert_eq!(host.live_allocations(), 0);
        assert_eq!(host.peak_frames(), 513);
    }

    #[test]
    fn capacity_contiguity_and_failure_injection() {
        let host = MockHost::leak(10);
        assert!(host.alloc_frames(11, 1).is_none());
        host.set_max_contiguous(Some(2));
        assert!(host.alloc_frames(3, 1).is_none());
        assert!(host.alloc_frames(2, 1).is_some());
        host.set_fail_after(Some(1));
        assert!(host.alloc_frames(1, 1).is_some());
        assert!(host.alloc_frames(1, 1).is_none());
        assert_eq!(host.alloc_calls(), 2);
    }

    #[test]
    fn gap_separates_allocations() {
        let host = MockHost::leak(10);
        host.set_gap_frames(1);
        let a = host.alloc_frames(1, 1).unwrap();
        let b = host.alloc_frames(1, 1).unwrap();
        assert_eq!(b - a, 2 * FRAME_SIZE);
    }

    #[test]
    #[should_panic(expected = "not inside an allocated frame")]
    fn ptr_outside_allocations_panics() {
        let host = MockHost::leak(10);
        host.ptr(0);
    }
}
