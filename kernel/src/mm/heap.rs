//! The kernel heap behind `alloc`: one contiguous run of frames under a linked-list allocator.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Hands `[start, start + size)` (mapped, unused RAM) to the allocator.
///
/// # Safety
/// The range must be mapped writable, unused by anything else, and never handed out again.
pub unsafe fn init(start: u64, size: usize) {
    // SAFETY: forwarded to the caller; called once, before the first allocation.
    unsafe { HEAP.lock().init(start as *mut u8, size) };
}

/// (total, used) bytes of the heap.
pub fn usage() -> (usize, usize) {
    crate::arch::cpu::without_interrupts(|| {
        let heap = HEAP.lock();
        (heap.size(), heap.used())
    })
}
