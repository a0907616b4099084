//! What a 64-bit entry needs in guest memory before the first instruction: a GDT whose
//! descriptors match the segment state the backends load for [`StartMode::LongMode`], and
//! identity page tables.
//!
//! # The GDT
//!
//! The backends start a long-mode vCPU with CS = 0x08 (64-bit code) and DS/ES/SS = 0x10
//! (flat data) and GDTR pointing here, limit 0x17 (`backend::svm::vmcb::long_mode_registers`,
//! shared with VMX). The hidden parts of the segment registers are what the CPU uses; the
//! table only has to agree with them for a guest that reloads a selector.
//!
//! Linux's 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol")
//! asks for flat 4 GiB code and data descriptors at `__BOOT_CS` (0x10) and `__BOOT_DS`
//! (0x18). Keel's selectors differ, which is harmless: the decompressor's `startup_64` first
//! loads null selectors into the data segment registers (allowed in 64-bit mode), then loads
//! its own GDT and reloads CS with a far return before it depends on any descriptor of ours.
//! What the protocol really requires — flat segments, 64-bit code, interrupts off — holds.
//! Firecracker and Cloud Hypervisor boot Linux the same way.
//!
//! # The page tables
//!
//! The protocol requires the kernel's load area (`init_size` bytes), the zero page and the
//! command line to be identity-mapped; the initrd should be too. All RAM lies below 3 GiB
//! (see [`layout`](super::layout)), so mapping the first 4 GiB with 2 MiB pages (one PML4,
//! one PDPT, four page directories: 24 KiB at [`PML4`]) covers all of it and the local and
//! I/O APIC pages as well. 2 MiB pages need no CPUID feature, unlike 1 GiB pages.
//!
//! [`StartMode::LongMode`]: crate::vcpu::StartMode::LongMode

use crate::memory::{GuestMemory, MemoryError};

use super::layout::{BOOT_GDT, PAGE_SIZE, PML4};

/// The 64-bit code selector the backends load into CS.
pub const CODE64_SELECTOR: u16 = 0x08;
/// The flat data selector the backends load into DS, ES, FS, GS and SS.
pub const DATA_SELECTOR: u16 = 0x10;

/// The boot GDT: null, 64-bit code (P, DPL 0, execute/read, accessed, L, G, limit
/// 0xFFFFF pages), flat data (P, DPL 0, read/write, accessed, D/B, G, limit 0xFFFFF pages).
pub const GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

/// Bytes mapped by the identity page tables.
pub const IDENTITY_MAPPED: u64 = 4 << 30;

/// Number of page directories (one per GiB mapped).
const PAGE_DIRECTORIES: usize = (IDENTITY_MAPPED >> 30) as usize;
/// Page-table pages: PML4, PDPT, the page directories.
pub const PAGE_TABLE_PAGES: usize = 2 + PAGE_DIRECTORIES;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const LARGE_PAGE: u64 = 2 << 20;
const ENTRIES: usize = 512;

/// Writes [`GDT`] at [`BOOT_GDT`] and returns its address.
pub fn write_gdt(memory: &GuestMemory) -> Result<u64, MemoryError> {
    let mut bytes = [0u8; 24];
    for (chunk, descriptor) in bytes.chunks_exact_mut(8).zip(GDT) {
        chunk.copy_from_slice(&descriptor.to_le_bytes());
    }
    memory.write(BOOT_GDT, &bytes)?;
    Ok(BOOT_GDT)
}

/// Writes identity page tables for the first [`IDENTITY_MAPPED`] bytes at [`PML4`] and
/// returns the CR3 value.
pub fn write_identity_page_tables(memory: &GuestMemory) -> Result<u64, MemoryError> {
    let page = PAGE_SIZE as usize;
    let mut tables = alloc::vec![0u8; PAGE_TABLE_PAGES * page];
    let mut set = |table: usize, index: usize, entry: u64| {
        let at = table * page + index * 8;
        tables[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    };
    let table_addr = |table: usize| PML4 + (table as u64) * PAGE_SIZE;
    set(0, 0, table_addr(1) | PRESENT | WRITABLE);
    for gib in 0..PAGE_DIRECTORIES {
        set(1, gib, table_addr(2 + gib) | PRESENT | WRITABLE);
        for index in 0..ENTRIES {
            let addr = ((gib * ENTRIES + index) as u64) * LARGE_PAGE;
            set(2 + gib, index, addr | PRESENT | WRITABLE | PAGE_SIZE_BIT);
        }
    }
    memory.write(PML4, &tables)?;
    Ok(PML4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::svm::vmcb::long_mode_registers;
    use crate::guest_paging::linear_to_physical;
    use crate::testing::MockHost;

    fn memory() -> GuestMemory {
        GuestMemory::new(MockHost::leak(4096), 4 << 20).unwrap()
    }

    /// Access rights in the backends' `Segment::access` layout from a descriptor.
    fn access(descriptor: u64) -> u32 {
        ((descriptor >> 40) as u32 & 0xFF) | (((descriptor >> 52) as u32 & 0xF) << 12)
    }

    #[test]
    fn gdt_matches_the_backends_long_mode_segments() {
        let mem = memory();
        let gdt = write_gdt(&mem).unwrap();
        let regs = long_mode_registers(0x10_0200, PML4, gdt, 0x8ff0, 0x7000);
        assert_eq!(regs.gdtr, (BOOT_GDT, 0x17));
        let entry = |selector: u16| mem.read_u64(gdt + u64::from(selector)).unwrap();
        assert_eq!(regs.cs.selector, CODE64_SELECTOR);
        assert_eq!(access(entry(CODE64_SELECTOR)), regs.cs.access);
        for seg in [regs.ds, regs.es, regs.ss] {
            assert_eq!(seg.selector, DATA_SELECTOR);
            assert_eq!(access(entry(DATA_SELECTOR)), seg.access);
        }
        assert_eq!(entry(0), 0);
    }

    #[test]
    fn page_tables_identity_map_four_gib() {
        let mem = memory();
        let cr3 = write_identity_page_tables(&mem).unwrap();
        let regs = long_mode_registers(0, cr3, BOOT_GDT, 0, 0);
        for addr in [
            0,
            0x7000,
            0x1234_5678,
            0x1_0000_0000 - 1,
            0xFEE0_0000,
            0xBFFF_F000,
        ] {
            assert_eq!(linear_to_physical(&mem, &regs, addr), Ok(addr), "{addr:#x}");
        }
        assert!(linear_to_physical(&mem, &regs, 0x1_0000_0000).is_err());
    }
}
