//! Physical frame allocator: one bit per 4 KiB frame over the usable RAM of the boot map.
//!
//! A bitmap (set bit = not available) is simple, needs no heap, and allocates contiguous
//! aligned runs, which guest memory and VMCB/VMCS pages will want. Usable regions come from
//! the firmware map; the kernel image, boot modules, ACPI tables, the first MiB and the bitmap
//! itself are carved out. The logic is pure and host-tested; the kernel only supplies the
//! bitmap's storage.

use core::ops::Range;

/// Size of a frame.
pub const FRAME_SIZE: u64 = 4096;

/// Why the allocator could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The memory map has no usable RAM left after reservations.
    #[error("the boot memory map has no usable RAM outside the kernel and modules")]
    NoUsableMemory,
    /// No free span below 4 GiB can hold the bitmap.
    #[error("no free span below 4 GiB can hold the {needed}-byte frame bitmap")]
    NoRoomForBitmap {
        /// Bytes the bitmap needs.
        needed: u64,
    },
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn align_down(x: u64, a: u64) -> u64 {
    x / a * a
}

/// The parts of `usable` not covered by any of `reserved`, frame-aligned inward.
pub fn free_spans<const N: usize>(
    usable: &[Range<u64>],
    reserved: &[Range<u64>],
) -> heapless::Vec<Range<u64>, N> {
    let mut out: heapless::Vec<Range<u64>, N> = heapless::Vec::new();
    for region in usable {
        let mut pieces: heapless::Vec<Range<u64>, N> = heapless::Vec::new();
        let _ = pieces.push(align_up(region.start, FRAME_SIZE)..align_down(region.end, FRAME_SIZE));
        for cut in reserved {
            let cut = align_down(cut.start, FRAME_SIZE)..align_up(cut.end, FRAME_SIZE);
            let mut next: heapless::Vec<Range<u64>, N> = heapless::Vec::new();
            for p in pieces.iter() {
                if cut.end <= p.start || cut.start >= p.end {
                    let _ = next.push(p.clone());
                    continue;
                }
                if p.start < cut.start {
                    let _ = next.push(p.start..cut.start);
                }
                if cut.end < p.end {
                    let _ = next.push(cut.end..p.end);
                }
            }
            pieces = next;
        }
        for p in pieces {
            if p.start < p.end {
                let _ = out.push(p);
            }
        }
    }
    out
}

/// Where the bitmap goes and how large it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitmapPlan {
    /// Physical address of the bitmap.
    pub phys: u64,
    /// Size in bytes (a multiple of 8 and of the frame size).
    pub bytes: u64,
    /// Frames the bitmap covers (from physical address 0).
    pub frames: u64,
}

/// Chooses the bitmap's size and location: the first free span below 4 GiB that fits.
pub fn plan_bitmap(
    usable: &[Range<u64>],
    reserved: &[Range<u64>],
) -> Result<BitmapPlan, FrameError> {
    let spans = free_spans::<256>(usable, reserved);
    let top = spans
        .iter()
        .map(|s| s.end)
        .max()
        .ok_or(FrameError::NoUsableMemory)?;
    let frames = top / FRAME_SIZE;
    let bytes = align_up(frames.div_ceil(64) * 8, FRAME_SIZE);
    spans
        .iter()
        .find(|s| s.end - s.start >= bytes && s.start + bytes <= 1 << 32)
        .map(|s| BitmapPlan {
            phys: s.start,
            bytes,
            frames,
        })
        .ok_or(FrameError::NoRoomForBitmap { needed: bytes })
}

/// The allocator over a caller-provided bitmap.
pub struct FrameAllocator<'a> {
    bitmap: &'a mut [u64],
    frames: u64,
    usable_frames: u64,
    free_frames: u64,
    hint: u64,
}

impl<'a> FrameAllocator<'a> {
    /// Builds the allocator: frames of `usable` minus `reserved` are free, all else taken.
    /// `bitmap` must hold at least `frames.div_ceil(64)` words.
    pub fn new(
        bitmap: &'a mut [u64],
        frames: u64,
        usable: &[Range<u64>],
        reserved: &[Range<u64>],
    ) -> FrameAllocator<'a> {
        let frames = frames.min(bitmap.len() as u64 * 64);
        bitmap.fill(u64::MAX);
        let mut alloc = FrameAllocator {
            bitmap,
            frames,
            usable_frames: 0,
            free_frames: 0,
            hint: 0,
        };
        for span in free_spans::<256>(usable, reserved) {
            let first = span.start / FRAME_SIZE;
            let last = (span.end / FRAME_SIZE).min(frames);
            for frame in first..last {
                alloc.set_free(frame);
            }
        }
        alloc.usable_frames = alloc.free_frames;
        alloc
    }

    fn is_free(&self, frame: u64) -> bool {
        self.bitmap[(frame / 64) as usize] & (1 << (frame % 64)) == 0
    }

    fn set_free(&mut self, frame: u64) {
        if !self.is_free(frame) {
            self.bitmap[(frame / 64) as usize] &= !(1 << (frame % 64));
            self.free_frames += 1;
        }
    }

    fn set_used(&mut self, frame: u64) {
        if self.is_free(frame) {
            self.bitmap[(frame / 64) as usize] |= 1 << (frame % 64);
            self.free_frames -= 1;
        }
    }

    /// Allocates one frame; returns its physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        self.alloc_contiguous(1, 1)
    }

    /// Allocates `count` contiguous frames aligned to `align` frames (a power of two).
    pub fn alloc_contiguous(&mut self, count: u64, align: u64) -> Option<u64> {
        if count == 0 || !align.is_power_of_two() || count > self.free_frames {
            return None;
        }
        // Two passes: from the hint, then from the start.
        for start_at in [self.hint, 0] {
            let mut frame = align_up(start_at, align);
            while frame + count <= self.frames {
                // Skip fully used words quickly.
                if frame.is_multiple_of(64) && self.bitmap[(frame / 64) as usize] == u64::MAX {
                    frame = align_up(frame + 64, align);
                    continue;
                }
                match (frame..frame + count).find(|&f| !self.is_free(f)) {
                    None => {
                        for f in frame..frame + count {
                            self.set_used(f);
                        }
                        self.hint = frame + count;
                        return Some(frame * FRAME_SIZE);
                    }
                    Some(used) => frame = align_up(used + 1, align),
                }
            }
        }
        None
    }

    /// Returns frames to the allocator.
    pub fn free(&mut self, phys: u64, count: u64) {
        let first = phys / FRAME_SIZE;
        for frame in first..(first + count).min(self.frames) {
            self.set_free(frame);
        }
        self.hint = self.hint.min(first);
    }

    /// Marks a range as taken (tables discovered after set-up). Returns frames newly taken.
    pub fn reserve(&mut self, range: Range<u64>) -> u64 {
        let before = self.free_frames;
        let first = align_down(range.start, FRAME_SIZE) / FRAME_SIZE;
        let last = (align_up(range.end, FRAME_SIZE) / FRAME_SIZE).min(self.frames);
        for frame in first..last {
            self.set_used(frame);
        }
        before - self.free_frames
    }

    /// Frames that were free at set-up (usable RAM the kernel manages).
    pub fn usable_frames(&self) -> u64 {
        self.usable_frames
    }

    /// Frames free now.
    pub fn free_frames(&self) -> u64 {
        self.free_frames
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-region maps are the point of some tests
mod tests {
    use super::*;
    use std::vec;

    const MIB: u64 = 1 << 20;

    #[test]
    fn spans_exclude_reservations_and_align() {
        let spans = free_spans::<16>(
            &[0x1001..0x9_f000, MIB..64 * MIB],
            &[0..MIB, 2 * MIB..3 * MIB + 1],
        );
        assert_eq!(spans.as_slice(), &[MIB..2 * MIB, 3 * MIB + 4096..64 * MIB]);
    }

    #[test]
    fn bitmap_fits_below_4g_and_is_planned_outside_reservations() {
        let plan = plan_bitmap(&[MIB..(1 << 30)], &[MIB..2 * MIB]).unwrap();
        assert_eq!(plan.phys, 2 * MIB);
        assert_eq!(plan.frames, (1 << 30) / FRAME_SIZE);
        assert_eq!(plan.bytes, 32768, "262144 frames need 32 KiB of bits");
    }

    #[test]
    fn no_usable_memory_is_an_error() {
        assert_eq!(
            plan_bitmap(&[MIB..2 * MIB], &[0..4 * MIB]),
            Err(FrameError::NoUsableMemory)
        );
    }

    fn allocator(words: &mut [u64]) -> FrameAllocator<'_> {
        FrameAllocator::new(words, 4096, &[MIB..16 * MIB], &[4 * MIB..5 * MIB])
    }

    #[test]
    fn allocation_skips_reserved_frames_and_counts() {
        let mut words = vec![0u64; 64];
        let mut a = allocator(&mut words);
        let total = (15 * MIB - MIB) / FRAME_SIZE;
        assert_eq!(a.usable_frames(), total);
        let first = a.alloc().unwrap();
        assert_eq!(first, MIB);
        assert_eq!(a.free_frames(), total - 1);
        // A 2 MiB-aligned run of 512 frames cannot start inside the reservation.
        let run = a.alloc_contiguous(512, 512).unwrap();
        assert_eq!(run % (2 * MIB), 0);
        assert!(run + 2 * MIB <= 4 * MIB || run >= 5 * MIB);
        a.free(run, 512);
        a.free(first, 1);
        assert_eq!(a.free_frames(), total);
    }

    #[test]
    fn exhaustion_returns_none() {
        let mut words = vec![0u64; 64];
        let mut a = allocator(&mut words);
        let mut n = 0;
        while a.alloc().is_some() {
            n += 1;
        }
        assert_eq!(n, a.usable_frames());
        assert_eq!(a.alloc(), None);
        assert_eq!(a.alloc_contiguous(0, 1), None);
    }

    #[test]
    fn reserve_after_setup() {
        let mut words = vec![0u64; 64];
        let mut a = allocator(&mut words);
        let free = a.free_frames();
        assert_eq!(a.reserve(MIB..MIB + 1), 1);
        assert_eq!(a.reserve(MIB..MIB + 1), 0, "already taken");
        assert_eq!(a.free_frames(), free - 1);
        assert_ne!(a.alloc(), Some(MIB));
    }
}
