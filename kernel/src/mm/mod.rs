//! Physical memory, page tables and the heap.
//!
//! `frame` is the pure bitmap allocator, `paging` the page-table builder, `heap` the global
//! allocator. This module wires them at boot and offers the few services the rest of the
//! kernel needs: uncached MMIO mappings, ad-hoc physical mappings for firmware tables, frame
//! allocation and statistics.

pub mod bill;
#[cfg(target_os = "none")]
pub mod dma;
pub mod frame;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod paging;

#[cfg(target_os = "none")]
pub use kernel_mm::*;

#[cfg(target_os = "none")]
mod kernel_mm {
    use core::ops::Range;
    use core::sync::atomic::{AtomicU64, Ordering};

    use spin::Mutex;

    use keel_vmm::host::FrameUse;

    use super::bill::{Bill, HostUse, UsedBreakdown};
    use super::frame::{self, FRAME_SIZE, FrameAllocator};
    use super::paging::{self, AddressSpace, MapError};
    use crate::boot::{BootInfo, MemoryKind};

    unsafe extern "C" {
        static __kernel_start: u8;
        static __text_end: u8;
        static __rodata_start: u8;
        static __rodata_end: u8;
        static __data_start: u8;
        static __kernel_end: u8;
        static kernel_stack_guard: u8;
    }

    fn sym(s: &u8) -> u64 {
        s as *const u8 as u64
    }

    static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);
    static SPACE: Mutex<Option<AddressSpace>> = Mutex::new(None);
    static GUARD_PAGE: AtomicU64 = AtomicU64::new(0);
    /// Frames by use (see [`super::bill`]).
    static BILL: Bill = Bill::new();
    /// Usable frames taken out of the allocator without being allocated: at boot (first MiB,
    /// kernel image, boot modules, the allocator's bitmap) and by [`reserve`] later.
    static RESERVED_FRAMES: AtomicU64 = AtomicU64::new(0);
    /// Usable frames the boot reservations took, outside the allocator's pool.
    static BOOT_RESERVED_FRAMES: AtomicU64 = AtomicU64::new(0);
    /// Boot modules' frames (part of `RESERVED_FRAMES`).
    static MODULE_FRAMES: AtomicU64 = AtomicU64::new(0);

    /// Why memory set-up failed (boot stops with this message).
    #[derive(Debug)]
    pub enum MmError {
        /// The frame allocator could not be built.
        Frames(frame::FrameError),
        /// Page tables could not be built.
        Map(MapError),
        /// No contiguous run of RAM for the heap.
        NoHeap {
            /// Bytes asked for.
            bytes: u64,
        },
    }

    impl core::fmt::Display for MmError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                MmError::Frames(e) => write!(f, "frame allocator: {e}"),
                MmError::Map(MapError::OutOfFrames) => {
                    f.write_str("out of memory while building the kernel page tables")
                }
                MmError::NoHeap { bytes } => {
                    write!(
                        f,
                        "no contiguous {} KiB of RAM for the kernel heap",
                        bytes / 1024
                    )
                }
            }
        }
    }

    /// The kernel image range.
    pub fn kernel_image() -> Range<u64> {
        // SAFETY: linker-script symbols; only their addresses are taken.
        unsafe { sym(&__kernel_start)..sym(&__kernel_end) }
    }

    /// Address of the unmapped page below the kernel stack, once paging is set up.
    pub fn stack_guard_page() -> Option<u64> {
        match GUARD_PAGE.load(Ordering::Relaxed) {
            0 => None,
            a => Some(a),
        }
    }

    /// Sets up the frame allocator, the kernel page tables and the heap.
    pub fn init(info: &BootInfo, extra_reserved: &[Range<u64>]) -> Result<(), MmError> {
        let usable: heapless::Vec<Range<u64>, 128> = info
            .memory
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .map(|r| r.start..r.end())
            .collect();
        let mut reserved: heapless::Vec<Range<u64>, 64> = heapless::Vec::new();
        // The first MiB stays with the firmware (BIOS data, EBDA) and the APs' start-up page.
        let _ = reserved.push(0..0x10_0000);
        let _ = reserved.push(kernel_image());
        for m in &info.modules {
            let _ = reserved.push(m.start..m.start + m.size);
        }
        for r in extra_reserved {
            let _ = reserved.push(r.clone());
        }
        let plan = frame::plan_bitmap(&usable, &reserved).map_err(MmError::Frames)?;
        let _ = reserved.push(plan.phys..plan.phys + plan.bytes);
        // SAFETY: the planned range is usable RAM outside every reservation, below 4 GiB (so
        // identity-mapped by the boot tables), and from now on owned by the allocator alone.
        let bitmap = unsafe {
            core::slice::from_raw_parts_mut(plan.phys as *mut u64, (plan.bytes / 8) as usize)
        };
        let mut frames = FrameAllocator::new(bitmap, plan.frames, &usable, &reserved);
        // The allocator manages only what was free at set-up; the rest of usable RAM is what
        // the reservations took.
        let usable_ram_frames: u64 = usable
            .iter()
            .map(|r| (r.end / FRAME_SIZE).saturating_sub(r.start.div_ceil(FRAME_SIZE)))
            .sum();
        let boot_reserved = usable_ram_frames.saturating_sub(frames.free_frames());
        RESERVED_FRAMES.store(boot_reserved, Ordering::Relaxed);
        BOOT_RESERVED_FRAMES.store(boot_reserved, Ordering::Relaxed);
        let module_frames: u64 = info
            .modules
            .iter()
            .map(|m| (m.start + m.size).div_ceil(FRAME_SIZE) - m.start / FRAME_SIZE)
            .sum();
        MODULE_FRAMES.store(module_frames, Ordering::Relaxed);

        let space = build_address_space(info, &mut frames).map_err(MmError::Map)?;
        // SAFETY: the new tables map the kernel image (text, rodata, data, bss including the
        // stack we run on), all RAM and the first MiB, so execution continues unchanged.
        unsafe { space.activate() };

        let usable_bytes = frames.usable_frames() * FRAME_SIZE;
        let heap_bytes = (usable_bytes / 16).clamp(4 << 20, 64 << 20);
        let heap = frames
            .alloc_contiguous(heap_bytes / FRAME_SIZE, 1)
            .ok_or(MmError::NoHeap { bytes: heap_bytes })?;
        BILL.add_host(HostUse::Heap, heap_bytes / FRAME_SIZE);
        // SAFETY: freshly allocated frames, mapped RW by `build_address_space`, owned by the
        // heap from now on.
        unsafe { super::heap::init(heap, heap_bytes as usize) };

        *FRAMES.lock() = Some(frames);
        *SPACE.lock() = Some(space);
        Ok(())
    }

    fn build_address_space(
        info: &BootInfo,
        frames: &mut FrameAllocator<'static>,
    ) -> Result<AddressSpace, MapError> {
        let mut alloc = || {
            let frame = frames.alloc();
            if frame.is_some() {
                BILL.add_host(HostUse::PageTables, 1);
            }
            frame
        };
        let mut space = AddressSpace::new(&mut alloc)?;
        let kernel = kernel_image();
        let data = paging::data_flags();
        // Page 0 stays unmapped so null pointers fault.
        space.map_range(FRAME_SIZE, 0x10_0000, data, &mut alloc)?;
        for region in &info.memory {
            if matches!(region.kind, MemoryKind::Reserved | MemoryKind::Defective) {
                continue;
            }
            let (start, end) = (region.start.max(0x10_0000), region.end());
            // Everything but the kernel image, which gets precise permissions below.
            if start < kernel.start {
                space.map_range(start, end.min(kernel.start), data, &mut alloc)?;
            }
            if end > kernel.end {
                space.map_range(start.max(kernel.end), end, data, &mut alloc)?;
            }
        }
        // SAFETY: linker-script symbols; only their addresses are taken.
        let (text_end, rodata, rodata_end, data_start, guard) = unsafe {
            (
                sym(&__text_end),
                sym(&__rodata_start),
                sym(&__rodata_end),
                sym(&__data_start),
                sym(&kernel_stack_guard),
            )
        };
        debug_assert_eq!(rodata, text_end);
        for (start, end, flags) in [
            (kernel.start, text_end, paging::text_flags()),
            (rodata, rodata_end, paging::rodata_flags()),
            (data_start, kernel.end, data),
        ] {
            let mut page = start;
            while page < end {
                if page != guard {
                    space.map_4k(page, flags, &mut alloc)?;
                }
                page += FRAME_SIZE;
            }
        }
        GUARD_PAGE.store(guard, Ordering::Relaxed);
        Ok(space)
    }

    /// Maps device registers uncached (identity) and returns their virtual address.
    pub fn map_mmio(phys: u64, len: u64) -> u64 {
        map_with(phys, len, paging::mmio_flags(), true);
        phys
    }

    /// Makes sure `[phys, phys + len)` is readable (firmware tables outside the RAM map).
    pub fn map_physical(phys: u64, len: u64) -> u64 {
        map_with(phys, len, paging::data_flags(), false);
        phys
    }

    fn map_with(
        phys: u64,
        len: u64,
        flags: x86_64::structures::paging::PageTableFlags,
        force: bool,
    ) {
        crate::arch::cpu::without_interrupts(|| {
            let mut space = SPACE.lock();
            let Some(space) = space.as_mut() else {
                return; // still on the boot identity map, which covers 4 GiB
            };
            let mut frames = FRAMES.lock();
            let Some(frames) = frames.as_mut() else {
                return;
            };
            let mut alloc = || {
                let frame = frames.alloc();
                if frame.is_some() {
                    BILL.add_host(HostUse::PageTables, 1);
                }
                frame
            };
            let mut page = phys & !(FRAME_SIZE - 1);
            while page < phys + len.max(1) {
                if force || !space.is_mapped(page) {
                    if space.map_4k(page, flags, &mut alloc).is_err() {
                        defmt::error!("out of frames mapping {=u64:#x}", page);
                        return;
                    }
                    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(page));
                }
                page += FRAME_SIZE;
            }
        });
    }

    /// Physical address of the kernel's PML4 (application processors load it).
    pub fn kernel_page_table_root() -> Option<u64> {
        crate::arch::cpu::without_interrupts(|| SPACE.lock().as_ref().map(|s| s.root()))
    }

    /// Makes the identity-mapped page at `phys` (in the first MiB) executable and writable,
    /// or back to data (never executable). Only the application processors' start-up page
    /// is executable this way, and only while CPUs are being started.
    pub fn set_low_page_executable(phys: u64, executable: bool) {
        let flags = if executable {
            x86_64::structures::paging::PageTableFlags::WRITABLE
        } else {
            paging::data_flags()
        };
        map_with(phys & !(FRAME_SIZE - 1), FRAME_SIZE, flags, true);
    }

    /// A kernel stack of `bytes` (a multiple of 4 KiB) with an unmapped guard page below
    /// it, taken from the heap (and billed there) and never freed: an application
    /// processor's stack lives as long as the CPU runs. Returns the stack's top.
    pub fn alloc_guarded_stack(bytes: usize) -> Option<u64> {
        let layout =
            core::alloc::Layout::from_size_align(bytes + FRAME_SIZE as usize, FRAME_SIZE as usize)
                .ok()?;
        // SAFETY: the layout has a non-zero size; the memory is never freed (the guard page
        // must never go back to the heap).
        let base = unsafe { alloc::alloc::alloc_zeroed(layout) } as u64;
        if base == 0 {
            return None;
        }
        let unmapped = crate::arch::cpu::without_interrupts(|| {
            let mut space = SPACE.lock();
            let mut frames = FRAMES.lock();
            let (Some(space), Some(frames)) = (space.as_mut(), frames.as_mut()) else {
                return false;
            };
            let mut alloc = || {
                let frame = frames.alloc();
                if frame.is_some() {
                    BILL.add_host(HostUse::PageTables, 1);
                }
                frame
            };
            space.unmap_4k(base, &mut alloc).is_ok()
        });
        unmapped.then_some(base + FRAME_SIZE + bytes as u64)
    }

    /// Allocates `count` contiguous zeroed frames aligned to `align` frames for `use_`.
    pub fn alloc_frames(use_: HostUse, count: u64, align: u64) -> Option<u64> {
        let phys = alloc_zeroed(count, align)?;
        BILL.add_host(use_, count);
        Some(phys)
    }

    /// Returns frames from [`alloc_frames`] with the same use.
    pub fn free_frames(use_: HostUse, phys: u64, count: u64) {
        release(phys, count);
        BILL.sub_host(use_, count);
    }

    /// The memory-bill account for VM `vm_id` (see [`super::bill::Bill::account_for`]).
    pub fn vm_account(vm_id: u32) -> usize {
        BILL.account_for(vm_id)
    }

    /// Records the heap bytes VM account `account`'s start took.
    pub fn set_vm_heap_at_start(account: usize, bytes: u64) {
        BILL.set_heap_at_start(account, bytes);
    }

    /// Allocates frames for a VM, billed to its account `account` under `use_`.
    pub fn alloc_vm_frames(account: usize, use_: FrameUse, count: u64, align: u64) -> Option<u64> {
        let phys = alloc_zeroed(count, align)?;
        BILL.add_vm(account, use_, count);
        Some(phys)
    }

    /// Returns frames from [`alloc_vm_frames`] with the same account and use.
    pub fn free_vm_frames(account: usize, use_: FrameUse, phys: u64, count: u64) {
        release(phys, count);
        BILL.sub_vm(account, use_, count);
    }

    fn alloc_zeroed(count: u64, align: u64) -> Option<u64> {
        let phys = crate::arch::cpu::without_interrupts(|| {
            FRAMES
                .lock()
                .as_mut()
                .and_then(|f| f.alloc_contiguous(count, align))
        })?;
        // SAFETY: freshly allocated frames: identity-mapped RAM owned by the caller now.
        unsafe { core::ptr::write_bytes(phys as *mut u8, 0, (count * FRAME_SIZE) as usize) };
        Some(phys)
    }

    fn release(phys: u64, count: u64) {
        crate::arch::cpu::without_interrupts(|| {
            if let Some(frames) = FRAMES.lock().as_mut() {
                frames.free(phys, count);
            }
        });
    }

    /// Takes a range out of the allocator (firmware tables found after set-up).
    pub fn reserve(range: Range<u64>) {
        crate::arch::cpu::without_interrupts(|| {
            if let Some(frames) = FRAMES.lock().as_mut() {
                let free_before = frames.free_frames();
                frames.reserve(range);
                let taken = free_before.saturating_sub(frames.free_frames());
                RESERVED_FRAMES.fetch_add(taken, Ordering::Relaxed);
            }
        });
    }

    /// Memory figures for `mem`.
    #[derive(Clone, Copy, Debug)]
    pub struct MemStats {
        /// Usable RAM the allocator manages.
        pub usable_bytes: u64,
        /// RAM not allocated.
        pub free_bytes: u64,
        /// Heap size.
        pub heap_bytes: u64,
        /// Heap in use.
        pub heap_used: u64,
        /// All usable RAM of the memory map: `usable_bytes` and what the boot reservations
        /// took (first MiB, kernel image, modules, bitmap).
        pub ram_bytes: u64,
        /// Used RAM (`ram_bytes - free_bytes`) by use; sums to it.
        pub used: UsedBreakdown,
    }

    /// The VMs holding frames now, with their frames by use.
    pub fn vm_bills() -> impl Iterator<Item = super::bill::VmBill> {
        BILL.vms()
    }

    /// Current memory figures.
    pub fn stats() -> MemStats {
        let (usable, free) = crate::arch::cpu::without_interrupts(|| {
            FRAMES
                .lock()
                .as_ref()
                .map_or((0, 0), |f| (f.usable_frames(), f.free_frames()))
        });
        let (heap_total, heap_used) = super::heap::usage();
        let kernel = kernel_image();
        let kernel_image = kernel.end.div_ceil(FRAME_SIZE) - kernel.start / FRAME_SIZE;
        let modules = MODULE_FRAMES.load(Ordering::Relaxed);
        let reserved = RESERVED_FRAMES.load(Ordering::Relaxed);
        let used = UsedBreakdown {
            kernel_image: kernel_image * FRAME_SIZE,
            boot_modules: modules * FRAME_SIZE,
            firmware_and_bitmap: reserved.saturating_sub(kernel_image + modules) * FRAME_SIZE,
            host: HostUse::ALL.map(|u| BILL.host_frames(u) * FRAME_SIZE),
            vms: BILL.vm_frames() * FRAME_SIZE,
        };
        MemStats {
            ram_bytes: usable * FRAME_SIZE
                + BOOT_RESERVED_FRAMES.load(Ordering::Relaxed) * FRAME_SIZE,
            used,
            usable_bytes: usable * FRAME_SIZE,
            free_bytes: free * FRAME_SIZE,
            heap_bytes: heap_total as u64,
            heap_used: heap_used as u64,
        }
    }
}
