//! The kernel's page tables: identity map of all RAM, W^X kernel image, uncached MMIO.
//!
//! The boot trampoline's 4 GiB identity map (all RWX, all write-back) is replaced once the
//! frame allocator works. The new tables map RAM with 2 MiB pages where aligned and NX, the
//! kernel's text RX, rodata R/NX and data RW/NX with 4 KiB pages, leave page 0 and the stack
//! guard page unmapped, and map device registers uncached on demand.

use x86_64::structures::paging::{PageTable, PageTableFlags as F};

use super::frame::FRAME_SIZE;

const HUGE: u64 = 2 * 1024 * 1024;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The frame allocator ran out while allocating a page table.
    OutOfFrames,
}

/// Page tables rooted at a PML4 in identity-mapped RAM.
pub struct AddressSpace {
    pml4: u64,
}

fn table(phys: u64) -> &'static mut PageTable {
    // SAFETY: page-table frames come from the frame allocator, are identity-mapped (all RAM
    // is, under both the boot tables and ours) and are only reached through the single
    // `AddressSpace`, which the kernel keeps behind a lock.
    unsafe { &mut *(phys as *mut PageTable) }
}

impl AddressSpace {
    /// A new, empty address space.
    pub fn new(alloc: &mut impl FnMut() -> Option<u64>) -> Result<AddressSpace, MapError> {
        let pml4 = alloc().ok_or(MapError::OutOfFrames)?;
        table(pml4).zero();
        Ok(AddressSpace { pml4 })
    }

    /// Physical address of the PML4, for CR3.
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// Returns the next-level table for `entry`, creating it (or splitting a 2 MiB page).
    fn next_level(
        entry: &mut x86_64::structures::paging::page_table::PageTableEntry,
        alloc: &mut impl FnMut() -> Option<u64>,
    ) -> Result<&'static mut PageTable, MapError> {
        let flags = entry.flags();
        if !flags.contains(F::PRESENT) {
            let frame = alloc().ok_or(MapError::OutOfFrames)?;
            table(frame).zero();
            entry.set_addr(x86_64::PhysAddr::new(frame), F::PRESENT | F::WRITABLE);
            return Ok(table(frame));
        }
        if flags.contains(F::HUGE_PAGE) {
            // Split a 2 MiB page into 512 4 KiB pages with the same permissions.
            let base = entry.addr().as_u64();
            let frame = alloc().ok_or(MapError::OutOfFrames)?;
            let pt = table(frame);
            let leaf = flags & !F::HUGE_PAGE;
            for (i, e) in pt.iter_mut().enumerate() {
                e.set_addr(x86_64::PhysAddr::new(base + i as u64 * FRAME_SIZE), leaf);
            }
            entry.set_addr(x86_64::PhysAddr::new(frame), F::PRESENT | F::WRITABLE);
            return Ok(pt);
        }
        Ok(table(entry.addr().as_u64()))
    }

    fn indices(addr: u64) -> [usize; 4] {
        [
            ((addr >> 39) & 0x1ff) as usize,
            ((addr >> 30) & 0x1ff) as usize,
            ((addr >> 21) & 0x1ff) as usize,
            ((addr >> 12) & 0x1ff) as usize,
        ]
    }

    /// Maps the 4 KiB page at `addr` (identity) with `flags`.
    pub fn map_4k(
        &mut self,
        addr: u64,
        flags: F,
        alloc: &mut impl FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        let [i4, i3, i2, i1] = Self::indices(addr);
        let pdpt = Self::next_level(&mut table(self.pml4)[i4], alloc)?;
        let pd = Self::next_level(&mut pdpt[i3], alloc)?;
        let pt = Self::next_level(&mut pd[i2], alloc)?;
        pt[i1].set_addr(x86_64::PhysAddr::new(addr & ADDR_MASK), flags | F::PRESENT);
        Ok(())
    }

    /// Maps the 2 MiB page at `addr` (identity, aligned) with `flags`.
    pub fn map_2m(
        &mut self,
        addr: u64,
        flags: F,
        alloc: &mut impl FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        let [i4, i3, i2, _] = Self::indices(addr);
        let pdpt = Self::next_level(&mut table(self.pml4)[i4], alloc)?;
        let pd = Self::next_level(&mut pdpt[i3], alloc)?;
        pd[i2].set_addr(
            x86_64::PhysAddr::new(addr),
            flags | F::PRESENT | F::HUGE_PAGE,
        );
        Ok(())
    }

    /// Identity-maps `[start, end)`, with 2 MiB pages where a whole aligned one fits.
    pub fn map_range(
        &mut self,
        start: u64,
        end: u64,
        flags: F,
        alloc: &mut impl FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        let mut addr = start & !(FRAME_SIZE - 1);
        while addr < end {
            if addr.is_multiple_of(HUGE) && addr + HUGE <= end {
                self.map_2m(addr, flags, alloc)?;
                addr += HUGE;
            } else {
                self.map_4k(addr, flags, alloc)?;
                addr += FRAME_SIZE;
            }
        }
        Ok(())
    }

    /// Whether `addr` is mapped.
    pub fn is_mapped(&self, addr: u64) -> bool {
        let [i4, i3, i2, i1] = Self::indices(addr);
        let e4 = &table(self.pml4)[i4];
        if !e4.flags().contains(F::PRESENT) {
            return false;
        }
        let e3 = &table(e4.addr().as_u64())[i3];
        if !e3.flags().contains(F::PRESENT) {
            return false;
        }
        if e3.flags().contains(F::HUGE_PAGE) {
            return true;
        }
        let e2 = &table(e3.addr().as_u64())[i2];
        if !e2.flags().contains(F::PRESENT) {
            return false;
        }
        if e2.flags().contains(F::HUGE_PAGE) {
            return true;
        }
        table(e2.addr().as_u64())[i1].flags().contains(F::PRESENT)
    }

    /// Removes the 4 KiB mapping at `addr` (splitting a 2 MiB page if needed).
    pub fn unmap_4k(
        &mut self,
        addr: u64,
        alloc: &mut impl FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        let [i4, i3, i2, i1] = Self::indices(addr);
        let pdpt = Self::next_level(&mut table(self.pml4)[i4], alloc)?;
        let pd = Self::next_level(&mut pdpt[i3], alloc)?;
        let pt = Self::next_level(&mut pd[i2], alloc)?;
        pt[i1].set_unused();
        x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(addr));
        Ok(())
    }

    /// Makes this address space current.
    ///
    /// # Safety
    /// The tables must map everything the kernel touches from now on: its image, stack,
    /// statics, and all RAM it hands out.
    pub unsafe fn activate(&self) {
        let frame = x86_64::structures::paging::PhysFrame::containing_address(
            x86_64::PhysAddr::new(self.pml4),
        );
        // SAFETY: forwarded to the caller.
        unsafe {
            x86_64::registers::control::Cr3::write(
                frame,
                x86_64::registers::control::Cr3Flags::empty(),
            )
        };
    }
}

/// Flags for kernel data and RAM: read/write, never executable.
pub fn data_flags() -> F {
    F::WRITABLE | F::NO_EXECUTE
}

/// Flags for device registers: uncached (PCD|PWT selects UC with the default PAT).
pub fn mmio_flags() -> F {
    F::WRITABLE | F::NO_EXECUTE | F::NO_CACHE | F::WRITE_THROUGH
}

/// Flags for kernel text: read and execute.
pub fn text_flags() -> F {
    F::empty()
}

/// Flags for kernel read-only data.
pub fn rodata_flags() -> F {
    F::NO_EXECUTE
}
