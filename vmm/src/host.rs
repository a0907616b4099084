//! Services the kernel gives the VMM: physical frames and access to them.
//!
//! The kernel identity-maps all RAM, so a frame's physical address is also where the host
//! reads and writes it; host tests implement the trait over heap buffers instead.

use core::sync::atomic::{AtomicPtr, Ordering};

/// Most host CPUs the per-CPU virtualization state is kept for.
pub const MAX_HOST_CPUS: usize = 256;

/// Where the host says which CPU runs the caller (null: one CPU, always 0).
static CURRENT_CPU_SOURCE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Tells the VMM how to find the calling CPU's index (the kernel's per-CPU data), so the
/// per-CPU virtualization state (SVM host save areas, VMXON regions) is kept per CPU.
pub fn set_current_cpu_source(source: fn() -> usize) {
    CURRENT_CPU_SOURCE.store(source as *mut (), Ordering::Release);
}

/// The calling CPU's index, below [`MAX_HOST_CPUS`] (0 until the host set a source).
pub fn current_cpu() -> usize {
    let source = CURRENT_CPU_SOURCE.load(Ordering::Acquire);
    if source.is_null() {
        return 0;
    }
    // SAFETY: only ever stored from a `fn() -> usize` in `set_current_cpu_source`.
    let source: fn() -> usize = unsafe { core::mem::transmute(source) };
    source().min(MAX_HOST_CPUS - 1)
}

/// Size of a host frame.
pub const FRAME_SIZE: u64 = 4096;

/// What a frame allocation is for, so the host can keep a memory bill by use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameUse {
    /// The guest's RAM.
    GuestRam,
    /// Second-level (NPT/EPT) page tables translating guest-physical addresses.
    SecondLevelTables,
    /// Per-vCPU control pages: VMCB/VMCS, MSR/IO permission bitmaps, FPU save areas.
    VcpuControl,
    /// Per-CPU virtualization state (SVM host save area, VMXON region), kept while the
    /// hypervisor is on, shared by every VM.
    CpuVirtualization,
    /// Staging copies of guest memory for snapshots.
    Snapshot,
}

impl FrameUse {
    /// Every use, in a fixed order (for tables indexed by use).
    pub const ALL: [FrameUse; 5] = [
        FrameUse::GuestRam,
        FrameUse::SecondLevelTables,
        FrameUse::VcpuControl,
        FrameUse::CpuVirtualization,
        FrameUse::Snapshot,
    ];

    /// Position in [`FrameUse::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

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
    /// `alloc_frames` for a known use; hosts that keep a memory bill override this pair.
    fn alloc_frames_for(&self, use_: FrameUse, count: u64, align: u64) -> Option<u64> {
        let _ = use_;
        self.alloc_frames(count, align)
    }
    /// Returns frames from `alloc_frames_for` with the same use.
    fn free_frames_for(&self, use_: FrameUse, phys: u64, count: u64) {
        let _ = use_;
        self.free_frames(phys, count)
    }
}
