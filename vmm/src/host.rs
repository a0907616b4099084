//! Services the kernel gives the VMM: physical frames and access to them.
//!
//! The kernel identity-maps all RAM, so a frame's physical address is also where the host
//! reads and writes it; host tests implement the trait over heap buffers instead.

/// Size of a host frame.
pub const FRAME_SIZE: u64 = 4096;

/// Physical memory for guests, page tables and control blocks.
///
/// Frames come back zeroed. Implementations must be usable from the VM loop (no blocking).
pub trait HostMemory {
    /// Allocates `count` contiguous zeroed frames aligned to `align` frames (a power of two);
    /// returns the physical address of the first.
    fn alloc_frames(&self, count: u64, align: u64) -> Option<u64>;
    /// Returns frames allocated by `alloc_frames`.
    fn free_frames(&self, phys: u64, count: u64);
    /// A host pointer to the frame-backed byte at `phys`. Only called for addresses inside
    /// frames this trait allocated.
    fn ptr(&self, phys: u64) -> *mut u8;
}
