//! Memory the controller reads and writes by DMA: queues, PRP lists, the bounce buffer.
//!
//! [`DmaMem`] is a pointer and the device address of the same bytes. Every access is
//! volatile and goes through the raw pointer, never through a Rust reference that lives
//! across a doorbell write, because the controller changes the bytes behind the
//! compiler's back. This is the only `unsafe` of the driver's pure half.

use alloc::boxed::Box;
use core::ptr::NonNull;

/// Bytes the controller can reach, and what keeps them allocated.
pub struct DmaMem {
    ptr: NonNull<u8>,
    phys: u64,
    len: usize,
    /// The allocation (a frame range on bare metal, a heap buffer in tests); freed on drop.
    _owner: Box<dyn Send>,
}

// SAFETY: `DmaMem` owns its bytes through `_owner` (which is `Send`); the pointer is only
// used through `&self`/`&mut self` methods, so moving it to another thread moves the sole
// user with it.
unsafe impl Send for DmaMem {}

impl DmaMem {
    /// # Safety
    /// `ptr..ptr + len` must be valid for reads and writes, aligned to 4 KiB, for as long as
    /// `owner` lives, used by nothing else but this value and the device, and `phys` must
    /// be the address the device uses for `ptr`.
    pub unsafe fn new(ptr: NonNull<u8>, phys: u64, len: usize, owner: Box<dyn Send>) -> DmaMem {
        DmaMem {
            ptr,
            phys,
            len,
            _owner: owner,
        }
    }

    /// The device address of the first byte.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `out.len()` bytes from `offset` on into `out`. Panics (a driver bug, not a
    /// device input) when the range is outside the region. Callers order this after the
    /// completion that says the device is done with the bytes (`queue` fences).
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset
                .checked_add(out.len())
                .is_some_and(|end| end <= self.len)
        );
        // SAFETY: `offset..offset + out.len()` is inside the region `new` vouched for (checked
        // above) and `out` is a distinct Rust buffer, so the ranges do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
    }

    /// Copies `data` to `offset` on. Panics (a driver bug) when it does not fit.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        assert!(
            offset
                .checked_add(data.len())
                .is_some_and(|end| end <= self.len)
        );
        // SAFETY: as in `read`; `&mut self` makes this the only writer on the CPU side.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
    }

    /// Reads the little-endian dword at `offset` afresh each call (polling a completion
    /// entry the device writes). Panics (a driver bug) when it is outside or unaligned.
    pub fn read_u32_volatile(&self, offset: usize) -> u32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len);
        // SAFETY: inside the region and 4-byte aligned (the region is page-aligned);
        // volatile so every poll reads memory the device may have written.
        let raw = unsafe { self.ptr.as_ptr().add(offset).cast::<u32>().read_volatile() };
        u32::from_le(raw)
    }

    /// Zeroes the whole region.
    pub fn zero(&mut self) {
        self.zero_prefix(self.len);
    }

    /// Zeroes the first `len` bytes. Panics (a driver bug) when `len` exceeds the region.
    pub fn zero_prefix(&mut self, len: usize) {
        assert!(len <= self.len);
        // SAFETY: `ptr..ptr + len` is inside the region `new` vouched for.
        unsafe { core::ptr::write_bytes(self.ptr.as_ptr(), 0, len) };
    }
}
