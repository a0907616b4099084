//! The guest-physical memory layout of a Keel PC guest: where RAM is, what the e820 map says,
//! and where the loaders put the boot structures.
//!
//! # RAM
//!
//! [`GuestMemory`] is one contiguous range `0..size`. A PC has its 32-bit MMIO hole (the
//! I/O APIC at [`IOAPIC_BASE`], the local APIC at [`LAPIC_BASE`], PCI BARs) below 4 GiB, so
//! RAM that reached into it would hide those devices behind the nested page tables. Until
//! guest memory can be split around the hole (RAM above 4 GiB), Keel caps a guest's RAM at
//! [`MAX_RAM`] = 3 GiB, the start of the hole, and [`Layout::new`] refuses anything larger.
//!
//! The e820 map ([`Layout::e820`]) is that of a PC without option ROMs:
//!
//! | range | type | why |
//! | --- | --- | --- |
//! | `0 .. 0x9FC00` | RAM | conventional memory |
//! | `0x9FC00 .. 0x100000` | reserved | EBDA, VGA window, BIOS area (holds the ACPI tables) |
//! | `0x100000 .. size` | RAM | extended memory |
//!
//! # Boot structures (all below 1 MiB, in conventional memory or the reserved BIOS area)
//!
//! | address | what | used by |
//! | --- | --- | --- |
//! | [`BOOT_GDT`] `0x500` | 3-entry GDT (null, code 0x08, data 0x10) | bzImage |
//! | [`PVH_START_INFO`] `0x6000` | `hvm_start_info`, then module list and memory map | PVH |
//! | [`ZERO_PAGE`] `0x7000` | Linux `boot_params` (one page) | bzImage |
//! | `0x8000 ..` [`BOOT_STACK_TOP`] | initial stack | bzImage |
//! | [`PML4`] `0x9000` .. `0xEFFF` | identity page tables (PML4, PDPT, 4 PDs) | bzImage |
//! | [`CMDLINE`] `0x20000` | kernel command line, up to [`CMDLINE_MAX`] bytes with its NUL | both |
//! | [`ACPI_TABLES`] `0xE0000 .. 0x100000` | RSDP first (found by the legacy scan), then the other tables | both |
//! | [`KERNEL_DEFAULT_LOAD`] `0x1000000` | kernel, unless its header prefers another address | bzImage |
//! | below the end of RAM | initrd, as high as allowed ([`place_initrd`]) | both |

use core::fmt;

use crate::devices::{ioapic, lapic};

/// End of conventional RAM: the EBDA starts here.
pub const EBDA_START: u64 = 0x9_FC00;
/// Start of extended memory (the first byte above the BIOS area).
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole; guest RAM ends at or below it.
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// Largest guest RAM size the layout supports (3 GiB, see the module docs).
pub const MAX_RAM: u64 = MMIO_HOLE_START;
/// The I/O APIC's MMIO base (the MADT names it).
pub const IOAPIC_BASE: u64 = ioapic::DEFAULT_BASE;
/// The local APIC's MMIO base (the MADT names it).
pub const LAPIC_BASE: u64 = lapic::DEFAULT_BASE;

/// The boot GDT for the 64-bit Linux entry.
pub const BOOT_GDT: u64 = 0x500;
/// The PVH `hvm_start_info`.
pub const PVH_START_INFO: u64 = 0x6000;
/// The PVH module list (one `hvm_modlist_entry`, the initrd).
pub const PVH_MODLIST: u64 = 0x6040;
/// The PVH memory map (`hvm_memmap_table_entry` array).
pub const PVH_MEMMAP: u64 = 0x6080;
/// Linux's zero page (`struct boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial RSP for the 64-bit Linux entry (the stack grows down into `0x8000..0x8FF0`).
pub const BOOT_STACK_TOP: u64 = 0x8FF0;
/// The identity page tables' PML4; the PDPT and four page directories follow page by page.
pub const PML4: u64 = 0x9000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x2_0000;
/// Room for the command line, its terminating NUL included.
pub const CMDLINE_MAX: u64 = 0x1_0000;
/// Where the ACPI tables go: the BIOS read-only area the guest's RSDP scan covers.
pub const ACPI_TABLES: u64 = 0xE_0000;
/// End of the ACPI table area.
pub const ACPI_TABLES_END: u64 = HIGH_MEMORY_START;
/// Where a kernel is loaded when it names no preferred address (16 MiB, Linux's default
/// `CONFIG_PHYSICAL_START`).
pub const KERNEL_DEFAULT_LOAD: u64 = 0x100_0000;
/// Page size the initrd is aligned to.
pub const PAGE_SIZE: u64 = 0x1000;

// The command line sits in conventional RAM; the ACPI tables in the reserved BIOS area.
const _: () = assert!(CMDLINE + CMDLINE_MAX <= EBDA_START);
const _: () = assert!(ACPI_TABLES >= EBDA_START && ACPI_TABLES_END <= HIGH_MEMORY_START);

/// An e820 / PVH memory-map range type (ACPI 6.5 §15, table 15.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: the OS must not use it.
    Reserved = 2,
}

/// One e820 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Type,
}

/// Why the layout cannot be built for a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Guest RAM reaches into the 32-bit MMIO hole.
    RamTooLarge {
        /// Guest RAM size in bytes.
        size: u64,
    },
    /// Guest RAM does not reach past the BIOS area.
    RamTooSmall {
        /// Guest RAM size in bytes.
        size: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::RamTooLarge { size } => write!(
                f,
                "guest RAM of {} MiB reaches into the 32-bit MMIO hole at {MMIO_HOLE_START:#x}: \
                 give the VM at most {} MiB",
                size >> 20,
                MAX_RAM >> 20
            ),
            LayoutError::RamTooSmall { size } => write!(
                f,
                "guest RAM of {size} bytes leaves nothing above 1 MiB: give the VM more memory"
            ),
        }
    }
}

/// The layout of one guest's physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    ram_end: u64,
}

impl Layout {
    /// The layout for `memory_size` bytes of RAM from guest-physical 0.
    pub fn new(memory_size: u64) -> Result<Layout, LayoutError> {
        if memory_size > MAX_RAM {
            return Err(LayoutError::RamTooLarge { size: memory_size });
        }
        if memory_size <= HIGH_MEMORY_START {
            return Err(LayoutError::RamTooSmall { size: memory_size });
        }
        Ok(Layout {
            ram_end: memory_size,
        })
    }

    /// One past the last byte of RAM.
    pub fn ram_end(&self) -> u64 {
        self.ram_end
    }

    /// The e820 map (see the module docs), in address order.
    pub fn e820(&self) -> [E820Entry; 3] {
        [
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820Type::Ram,
            },
            E820Entry {
                addr: EBDA_START,
                size: HIGH_MEMORY_START - EBDA_START,
                kind: E820Type::Reserved,
            },
            E820Entry {
                addr: HIGH_MEMORY_START,
                size: self.ram_end - HIGH_MEMORY_START,
                kind: E820Type::Ram,
            },
        ]
    }
}

/// Where an initrd of `size` bytes goes: the highest page-aligned address at which it ends
/// at or below `limit` (exclusive end; the caller passes the smaller of the end of RAM and
/// the kernel's own limit) and starts at or above `lowest` (the end of the kernel's area).
/// `None` if it does not fit.
pub fn place_initrd(size: u64, lowest: u64, limit: u64) -> Option<u64> {
    let start = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    (start >= lowest).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn e820_splits_around_the_bios_area() {
        let layout = Layout::new(256 * MIB).unwrap();
        assert_eq!(
            layout.e820(),
            [
                E820Entry {
                    addr: 0,
                    size: 0x9_FC00,
                    kind: E820Type::Ram
                },
                E820Entry {
                    addr: 0x9_FC00,
                    size: 0x6_0400,
                    kind: E820Type::Reserved
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: 255 * MIB,
                    kind: E820Type::Ram
                },
            ]
        );
    }

    #[test]
    fn ram_is_capped_below_the_mmio_hole() {
        assert!(Layout::new(3 << 30).is_ok());
        let err = Layout::new((3 << 30) + 2 * MIB).unwrap_err();
        assert_eq!(err, LayoutError::RamTooLarge { size: 3074 * MIB });
        assert!(err.to_string().contains("at most 3072 MiB"));
        assert_eq!(
            Layout::new(MIB).unwrap_err(),
            LayoutError::RamTooSmall { size: MIB }
        );
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (BOOT_GDT, BOOT_GDT + 24),
            (PVH_START_INFO, PVH_MODLIST),
            (PVH_MODLIST, PVH_MEMMAP),
            (PVH_MEMMAP, ZERO_PAGE),
            (ZERO_PAGE, ZERO_PAGE + PAGE_SIZE),
            (0x8000, BOOT_STACK_TOP),
            (PML4, PML4 + 6 * PAGE_SIZE),
            (CMDLINE, CMDLINE + CMDLINE_MAX),
            (ACPI_TABLES, ACPI_TABLES_END),
        ];
        areas.sort();
        for pair in areas.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?}");
        }
        assert_eq!(IOAPIC_BASE, 0xFEC0_0000);
        assert_eq!(LAPIC_BASE, 0xFEE0_0000);
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        assert_eq!(place_initrd(0x1800, 0, 0x10_0000), Some(0xF_E000));
        assert_eq!(place_initrd(0x1000, 0, 0x10_0000), Some(0xF_F000));
        assert_eq!(place_initrd(0x1000, 0xF_F001, 0x10_0000), None);
        assert_eq!(place_initrd(0x20_0000, 0, 0x10_0000), None);
        assert_eq!(place_initrd(0, 0, 0x10_0000), Some(0x10_0000));
    }
}
