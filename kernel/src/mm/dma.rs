//! DMA memory for device drivers (NICs, disks), and the `virtio-drivers` [`Hal`] over the frame allocator.
//!
//! All RAM is identity-mapped (physical == virtual) and x86 DMA is cache-coherent, so device
//! addresses are plain pointers: no bounce buffers, no IOMMU. Every kernel address — heap,
//! stack, statics, frames — satisfies that, which is what `share` relies on.

use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::mm::{self, bill::HostUse, frame::FRAME_SIZE};

/// Zeroed, physically contiguous frames owned until drop.
pub struct DmaRegion {
    phys: u64,
    frames: u64,
}

impl DmaRegion {
    /// Allocates `bytes` rounded up to whole frames, zeroed; `None` when memory is short.
    pub fn new(bytes: u64) -> Option<DmaRegion> {
        let frames = bytes.div_ceil(FRAME_SIZE).max(1);
        let phys = mm::alloc_frames(HostUse::DeviceDma, frames, 1)?;
        Some(DmaRegion { phys, frames })
    }

    /// Physical (= virtual) address of the first byte.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Pointer to the first byte, typed as the caller needs.
    pub fn ptr<T>(&self) -> *mut T {
        self.phys as *mut T
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.frames * FRAME_SIZE
    }

    /// Whether the region is empty (never: at least one frame).
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        mm::free_frames(HostUse::DeviceDma, self.phys, self.frames);
    }
}

/// `virtio_drivers::Hal` for Keel: frames from `mm`, MMIO through `mm::map_mmio`.
pub struct KernelHal;

// SAFETY: `dma_alloc` returns zeroed frames from the frame allocator, page-aligned, owned by
// the caller alone until `dma_dealloc`, and identity-mapped so the pointer is valid and the
// physical address is what the device must use; `mmio_phys_to_virt` maps the range uncached
// at its identity address; `share` returns the identity address of memory that is already
// mapped and coherent for DMA.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match mm::alloc_frames(HostUse::DeviceDma, pages as u64, 1)
            .and_then(|p| Some((p, NonNull::new(p as *mut u8)?)))
        {
            Some((phys, ptr)) => (phys, ptr),
            None => {
                defmt::warn!("virtio: out of frames for {=usize} DMA pages", pages);
                // `Dma::new` turns a zero address into `Error::DmaError`.
                (0, NonNull::dangling())
            }
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        mm::free_frames(HostUse::DeviceDma, paddr, pages as u64);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        let virt = mm::map_mmio(paddr, size as u64);
        // A BAR at physical address 0 is refused by the PCI transport before this is called.
        NonNull::new(virt as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as u64
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
