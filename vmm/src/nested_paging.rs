//! Second-level page tables: AMD nested page tables (NPT) and Intel extended page tables
//! (EPT), built in host frames.
//!
//! # Role
//!
//! Both backends confine a guest to its own RAM with a second translation, guest-physical to
//! host-physical, that the guest cannot see or change. [`NestedPageTables`] builds that
//! translation as a 4-level radix tree (512 entries per 4 KiB table, guest-physical addresses
//! below 2^48) in one of two entry formats:
//!
//! - [`NestedFormat::Npt`]: AMD64 long-mode page-table entries (APM Vol. 2 §15.25 "Nested
//!   Paging", entry layout §5.3.3). The nested walk treats every access as a user access
//!   (§15.25.5), so P, R/W and U/S are set on every level; 2 MiB leaves set PS (bit 7);
//!   non-executable leaves set NX (bit 63), which the CPU honours only with the host's
//!   EFER.NXE set. The root's physical address goes in the VMCB's nCR3.
//! - [`NestedFormat::Ept`]: EPT paging-structure entries (SDM Vol. 3C §28.3.2, Tables 28-1 to
//!   28-6): read/write/execute in bits 0-2 on every level; leaves carry memory type WB (6) in
//!   bits 5:3 with "ignore PAT" (bit 6) clear; 2 MiB leaves set bit 7. The root goes in the
//!   VMCS through [`NestedPageTables::eptp`] (SDM Vol. 3C §24.6.11).
//!
//! [`map`](NestedPageTables::map) uses 2 MiB leaves wherever the guest-physical address, the
//! host-physical address and the remaining length allow, and 4 KiB leaves elsewhere.
//! Anything not mapped (device MMIO, holes) faults to the VMM as an NPF / EPT violation.
//!
//! The walker here ([`translate`](NestedPageTables::translate)) only reads tables this
//! object allocated: the physical address in an entry is looked up among its own table
//! frames, never dereferenced as such.
//!
//! # Neighbours
//!
//! [`memory`](crate::memory) provides the RAM layout ([`GuestMemory::regions`]) and the
//! owned frames ([`HostFrames`]) the tables live in; the backends (`backend::svm`,
//! `backend::vmx`) load [`root`](NestedPageTables::root) / [`eptp`](NestedPageTables::eptp).
//!
//! # Write protection
//!
//! [`set_writable`](NestedPageTables::set_writable) clears or sets the write permission of
//! the leaves in a range (dirty-page tracking write-protects guest RAM and lifts the
//! protection page by page as the guest writes). A 2 MiB leaf that the range covers only in
//! part is split first into a page table of 512 4 KiB leaves with the same target and
//! permissions (SDM Vol. 3C §29.4.3.1 and APM §15.25.10 leave the splitting to software; the
//! caller invalidates cached translations after any change that takes permission away).

use alloc::collections::BTreeMap;
use core::fmt;

use crate::host::{FRAME_SIZE, FrameUse, HostMemory};
use crate::memory::{GuestMemory, HostFrames, LARGE_PAGE_SIZE, MemoryError};

/// Entries in one table.
const ENTRIES: u64 = 512;
/// Size of an entry in bytes.
const ENTRY_SIZE: u64 = 8;
/// Paging levels: PML4 (4), PDPT (3), PD (2), PT (1).
const LEVELS: u32 = 4;
/// Guest-physical addresses the 4-level tables cover.
pub const GPA_LIMIT: u64 = 1 << 48;
/// Host-physical addresses an entry can hold (the architectural MAXPHYADDR limit).
pub const HPA_LIMIT: u64 = 1 << 52;
/// Address bits 51:12 of an entry.
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Page-size bit: the entry at PD (or PDPT) level is a leaf. Same bit in both formats.
const PAGE_SIZE_BIT: u64 = 1 << 7;

/// NPT: present (APM Vol. 2 §5.3.3).
pub const NPT_PRESENT: u64 = 1 << 0;
/// NPT: writable.
pub const NPT_WRITE: u64 = 1 << 1;
/// NPT: user; required on every level, the nested walk is a user access (§15.25.5).
pub const NPT_USER: u64 = 1 << 2;
/// NPT: 2 MiB page at PD level.
pub const NPT_LARGE: u64 = PAGE_SIZE_BIT;
/// NPT: no execute.
pub const NPT_NO_EXECUTE: u64 = 1 << 63;

/// EPT: read access (SDM Vol. 3C §28.3.2).
pub const EPT_READ: u64 = 1 << 0;
/// EPT: write access.
pub const EPT_WRITE: u64 = 1 << 1;
/// EPT: execute access.
pub const EPT_EXECUTE: u64 = 1 << 2;
/// EPT leaf: memory type write-back (6) in bits 5:3.
pub const EPT_MEMORY_TYPE_WB: u64 = 6 << 3;
/// EPT leaf: ignore PAT memory type (kept clear).
pub const EPT_IGNORE_PAT: u64 = 1 << 6;
/// EPT: 2 MiB page at PD level.
pub const EPT_LARGE: u64 = PAGE_SIZE_BIT;

/// EPTP: paging-structure memory type write-back (bits 2:0; SDM Vol. 3C §24.6.11).
pub const EPTP_MEMORY_TYPE_WB: u64 = 6;
/// EPTP: page-walk length minus one (bits 5:3), for 4 levels.
pub const EPTP_WALK_LENGTH_4: u64 = (4 - 1) << 3;

/// The two entry formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NestedFormat {
    /// AMD-V nested page tables (VMCB nCR3).
    Npt,
    /// Intel VT-x extended page tables (VMCS EPT pointer).
    Ept,
}

/// Permissions of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Readable (required by both formats for every mapping).
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub execute: bool,
}

impl Access {
    /// Read, write and execute: guest RAM.
    pub const RWX: Access = Access {
        read: true,
        write: true,
        execute: true,
    };
    /// Read and write, no execute.
    pub const RW: Access = Access {
        read: true,
        write: true,
        execute: false,
    };
    /// Read and execute (write-protected code, dirty tracking).
    pub const RX: Access = Access {
        read: true,
        write: false,
        execute: true,
    };
    /// Read only.
    pub const R: Access = Access {
        read: true,
        write: false,
        execute: false,
    };

    fn and(self, other: Access) -> Access {
        Access {
            read: self.read && other.read,
            write: self.write && other.write,
            execute: self.execute && other.execute,
        }
    }
}

impl NestedFormat {
    /// A non-leaf entry pointing at the table at `phys`: full permissions, leaves restrict.
    fn table_entry(self, phys: u64) -> u64 {
        match self {
            NestedFormat::Npt => phys | NPT_PRESENT | NPT_WRITE | NPT_USER,
            NestedFormat::Ept => phys | EPT_READ | EPT_WRITE | EPT_EXECUTE,
        }
    }

    /// A leaf entry mapping `hpa` (4 KiB, or 2 MiB if `large`).
    fn leaf_entry(self, hpa: u64, access: Access, large: bool) -> u64 {
        let size = if large { PAGE_SIZE_BIT } else { 0 };
        match self {
            NestedFormat::Npt => {
                let mut e = hpa | NPT_PRESENT | NPT_USER | size;
                if access.write {
                    e |= NPT_WRITE;
                }
                if !access.execute {
                    e |= NPT_NO_EXECUTE;
                }
                e
            }
            NestedFormat::Ept => {
                let mut e = hpa | EPT_MEMORY_TYPE_WB | size;
                if access.read {
                    e |= EPT_READ;
                }
                if access.write {
                    e |= EPT_WRITE;
                }
                if access.execute {
                    e |= EPT_EXECUTE;
                }
                e
            }
        }
    }

    fn is_present(self, entry: u64) -> bool {
        match self {
            NestedFormat::Npt => entry & NPT_PRESENT != 0,
            // An EPT entry is not present when bits 2:0 are all clear (§28.3.2).
            NestedFormat::Ept => entry & (EPT_READ | EPT_WRITE | EPT_EXECUTE) != 0,
        }
    }

    fn access(self, entry: u64) -> Access {
        match self {
            NestedFormat::Npt => Access {
                read: entry & NPT_PRESENT != 0,
                write: entry & NPT_WRITE != 0,
                execute: entry & NPT_NO_EXECUTE == 0,
            },
            NestedFormat::Ept => Access {
                read: entry & EPT_READ != 0,
                write: entry & EPT_WRITE != 0,
                execute: entry & EPT_EXECUTE != 0,
            },
        }
    }
}

/// Bytes one entry covers at `level` (1 = 4 KiB … 4 = 512 GiB).
fn level_size(level: u32) -> u64 {
    FRAME_SIZE << (9 * (level - 1))
}

/// The index of `gpa`'s entry in its table at `level`.
fn index(gpa: u64, level: u32) -> u64 {
    (gpa >> (12 + 9 * (level - 1))) & (ENTRIES - 1)
}

/// What a walk found.
enum Walk {
    /// A leaf entry at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) in the table at `table`, and
    /// the permissions of all levels combined.
    Leaf {
        table: u64,
        entry: u64,
        level: u32,
        access: Access,
    },
    /// A not-present entry at `level`: nothing is mapped in that entry's span.
    Hole { level: u32 },
}

/// A guest's second-level page tables; the table frames are freed on drop.
pub struct NestedPageTables {
    host: &'static dyn HostMemory,
    format: NestedFormat,
    root: u64,
    /// Every table frame (including the root), by physical address.
    tables: BTreeMap<u64, HostFrames>,
}

impl fmt::Debug for NestedPageTables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NestedPageTables")
            .field("format", &self.format)
            .field("root", &format_args!("{:#x}", self.root))
            .field("tables", &self.tables.len())
            .finish()
    }
}

impl NestedPageTables {
    /// Empty tables (just a zeroed root) in `format`.
    pub fn new(
        host: &'static dyn HostMemory,
        format: NestedFormat,
    ) -> Result<NestedPageTables, MemoryError> {
        let root = HostFrames::alloc(host, FrameUse::SecondLevelTables, 1, 1)?;
        let root_phys = root.phys();
        let mut tables = BTreeMap::new();
        tables.insert(root_phys, root);
        Ok(NestedPageTables {
            host,
            format,
            root: root_phys,
            tables,
        })
    }

    /// Tables that map every region of `memory` read/write/execute at its guest-physical
    /// address.
    pub fn build(
        memory: &GuestMemory,
        format: NestedFormat,
    ) -> Result<NestedPageTables, MemoryError> {
        let mut tables = NestedPageTables::new(memory.host(), format)?;
        for region in memory.regions() {
            tables.map(region.gpa, region.hpa, region.len, Access::RWX)?;
        }
        Ok(tables)
    }

    /// The entry format.
    pub fn format(&self) -> NestedFormat {
        self.format
    }

    /// Physical address of the top-level table (the VMCB's nCR3 for NPT).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The EPT pointer for the VMCS (SDM Vol. 3C §24.6.11): root | memory type WB |
    /// page-walk length 4; accessed/dirty flags off. Only meaningful for [`NestedFormat::Ept`].
    pub fn eptp(&self) -> u64 {
        self.root | EPTP_MEMORY_TYPE_WB | EPTP_WALK_LENGTH_4
    }

    /// Number of table frames in use (including the root).
    pub fn table_frames(&self) -> usize {
        self.tables.len()
    }

    fn table(&self, phys: u64) -> Result<&HostFrames, MemoryError> {
        // Entries only ever hold addresses of tables in `self.tables`; a miss is a VMM bug.
        self.tables
            .get(&phys)
            .ok_or(MemoryError::FrameOffsetOutOfRange {
                phys,
                offset: 0,
                len: ENTRY_SIZE,
            })
    }

    fn read_entry(&self, table: u64, idx: u64) -> Result<u64, MemoryError> {
        self.table(table)?.read_u64(idx * ENTRY_SIZE)
    }

    fn write_entry(&self, table: u64, idx: u64, entry: u64) -> Result<(), MemoryError> {
        self.table(table)?.write_u64(idx * ENTRY_SIZE, entry)
    }

    /// Walks the tables for `gpa` (below [`GPA_LIMIT`]).
    fn walk(&self, gpa: u64) -> Result<Walk, MemoryError> {
        let mut table = self.root;
        let mut access = Access::RWX;
        for level in (1..=LEVELS).rev() {
            let entry = self.read_entry(table, index(gpa, level))?;
            if !self.format.is_present(entry) {
                return Ok(Walk::Hole { level });
            }
            access = access.and(self.format.access(entry));
            if level == 1 || (level <= 3 && entry & PAGE_SIZE_BIT != 0) {
                return Ok(Walk::Leaf {
                    table,
                    entry,
                    level,
                    access,
                });
            }
            table = entry & ADDR_MASK;
        }
        // The loop returns at level 1 at the latest.
        Ok(Walk::Hole { level: 1 })
    }

    /// The host-physical address and permissions `gpa` maps to, if it is mapped.
    pub fn translate(&self, gpa: u64) -> Option<(u64, Access)> {
        if gpa >= GPA_LIMIT {
            return None;
        }
        match self.walk(gpa).ok()? {
            Walk::Leaf {
                entry,
                level,
                access,
                ..
            } => {
                let offset_mask = level_size(level) - 1;
                Some((
                    (entry & ADDR_MASK & !offset_mask) + (gpa & offset_mask),
                    access,
                ))
            }
            Walk::Hole { .. } => None,
        }
    }

    /// The raw leaf entry mapping `gpa` and the size of the page it maps, if any.
    pub fn leaf_entry(&self, gpa: u64) -> Option<(u64, u64)> {
        if gpa >= GPA_LIMIT {
            return None;
        }
        match self.walk(gpa).ok()? {
            Walk::Leaf { entry, level, .. } => Some((entry, level_size(level))),
            Walk::Hole { .. } => None,
        }
    }

    /// The first mapped guest-physical address in `start..end`, if any.
    fn first_mapped(&self, start: u64, end: u64) -> Result<Option<u64>, MemoryError> {
        let mut gpa = start;
        while gpa < end {
            match self.walk(gpa)? {
                Walk::Leaf { .. } => return Ok(Some(gpa)),
                Walk::Hole { level } => {
                    let size = level_size(level);
                    gpa = (gpa & !(size - 1)) + size;
                }
            }
        }
        Ok(None)
    }

    /// The table at `level` (1 = PT, 2 = PD) covering `gpa`, allocating missing tables on
    /// the way. `None` if a leaf sits above it.
    fn table_at(&mut self, gpa: u64, level: u32) -> Result<Option<u64>, MemoryError> {
        let mut table = self.root;
        for upper in (level + 1..=LEVELS).rev() {
            let idx = index(gpa, upper);
            let entry = self.read_entry(table, idx)?;
            table = if !self.format.is_present(entry) {
                let frame = HostFrames::alloc(self.host, FrameUse::SecondLevelTables, 1, 1)?;
                let phys = frame.phys();
                self.tables.insert(phys, frame);
                self.write_entry(table, idx, self.format.table_entry(phys))?;
                phys
            } else if entry & PAGE_SIZE_BIT != 0 {
                return Ok(None);
            } else {
                entry & ADDR_MASK
            };
        }
        Ok(Some(table))
    }

    /// Maps one page of `level_size(level)` bytes; `Ok(false)` if the slot is taken (a
    /// table, or a leaf above).
    fn map_page(
        &mut self,
        gpa: u64,
        hpa: u64,
        level: u32,
        access: Access,
    ) -> Result<bool, MemoryError> {
        let Some(table) = self.table_at(gpa, level)? else {
            return Ok(false);
        };
        let idx = index(gpa, level);
        if self.format.is_present(self.read_entry(table, idx)?) {
            return Ok(false);
        }
        let entry = self.format.leaf_entry(hpa, access, level == 2);
        self.write_entry(table, idx, entry)?;
        Ok(true)
    }

    /// Clears every leaf in `start..end` (tables stay; they are freed on drop).
    fn unmap(&mut self, start: u64, end: u64) {
        let mut gpa = start;
        while gpa < end {
            match self.walk(gpa) {
                Ok(Walk::Leaf { table, level, .. }) => {
                    // Best effort: the only failure is a VMM bug `map` already reports.
                    let _ = self.write_entry(table, index(gpa, level), 0);
                    gpa += level_size(level);
                }
                _ => gpa += FRAME_SIZE,
            }
        }
    }

    /// Maps one 4 KiB page, or one 2 MiB page where the slot holds no page table (a
    /// leftover from an undone `map`); returns the bytes mapped. The caller has checked that
    /// nothing is mapped there.
    fn map_step(
        &mut self,
        gpa: u64,
        hpa: u64,
        large: bool,
        access: Access,
    ) -> Result<u64, MemoryError> {
        if large && self.map_page(gpa, hpa, 2, access)? {
            return Ok(LARGE_PAGE_SIZE);
        }
        if self.map_page(gpa, hpa, 1, access)? {
            return Ok(FRAME_SIZE);
        }
        Err(MemoryError::AlreadyMapped { gpa })
    }

    /// The leaf's write permission bit, the same bit (1) in both formats.
    fn write_bit(&self) -> u64 {
        match self.format {
            NestedFormat::Npt => NPT_WRITE,
            NestedFormat::Ept => EPT_WRITE,
        }
    }

    /// Replaces the 2 MiB leaf `entry` at `idx` of the PD `table` by a page table of 512
    /// 4 KiB leaves mapping the same host range with the same permissions and memory type.
    fn split_large(&mut self, table: u64, idx: u64, entry: u64) -> Result<(), MemoryError> {
        let frame = HostFrames::alloc(self.host, FrameUse::SecondLevelTables, 1, 1)?;
        let base = entry & ADDR_MASK & !(LARGE_PAGE_SIZE - 1);
        // Everything but the address and the page-size bit (NPT's large-page PAT bit 12 is
        // never set here): permissions, NX, EPT memory type.
        let flags = entry & !ADDR_MASK & !PAGE_SIZE_BIT;
        for i in 0..ENTRIES {
            frame.write_u64(i * ENTRY_SIZE, (base + i * FRAME_SIZE) | flags)?;
        }
        let phys = frame.phys();
        self.tables.insert(phys, frame);
        self.write_entry(table, idx, self.format.table_entry(phys))
    }

    /// Sets (`writable`) or clears the write permission of every mapped page in
    /// `gpa..gpa + len` (4 KiB aligned); holes are skipped. A 2 MiB leaf the range covers
    /// in part is split first. Returns how many bytes of mappings changed.
    ///
    /// Taking permission away needs the caller to invalidate the translations the CPUs
    /// cached; granting it does not (a CPU that faults on a stale read-only translation
    /// re-walks the tables: SDM Vol. 3C §29.4.3.3, APM §15.25.10). On error (no frame for a
    /// split) the pages before the failing one have changed.
    pub fn set_writable(&mut self, gpa: u64, len: u64, writable: bool) -> Result<u64, MemoryError> {
        for (what, value) in [("guest-physical address", gpa), ("length", len)] {
            if !value.is_multiple_of(FRAME_SIZE) {
                return Err(MemoryError::Unaligned { what, value });
            }
        }
        let end = match gpa.checked_add(len) {
            Some(end) if end <= GPA_LIMIT => end,
            _ => {
                return Err(MemoryError::AddressTooLarge {
                    what: "guest-physical",
                    start: gpa,
                    len,
                });
            }
        };
        let bit = self.write_bit();
        let mut changed = 0;
        let mut at = gpa;
        while at < end {
            match self.walk(at)? {
                Walk::Hole { level } => {
                    let size = level_size(level);
                    at = (at & !(size - 1)) + size;
                }
                Walk::Leaf {
                    table,
                    entry,
                    level,
                    ..
                } => {
                    let size = level_size(level);
                    let start = at & !(size - 1);
                    if level > 1 && (start < gpa || start + size > end) {
                        if (entry & bit != 0) == writable {
                            // Already as asked: no need to split.
                            at = start + size;
                        } else if level == 2 {
                            self.split_large(table, index(at, level), entry)?;
                        } else {
                            // 1 GiB leaves are never built (`map` stops at 2 MiB).
                            return Err(MemoryError::Unaligned {
                                what: "guest-physical address",
                                value: at,
                            });
                        }
                        continue;
                    }
                    let new = if writable { entry | bit } else { entry & !bit };
                    if new != entry {
                        self.write_entry(table, index(at, level), new)?;
                        changed += size;
                    }
                    at = start + size;
                }
            }
        }
        Ok(changed)
    }

    /// Maps guest-physical `gpa..gpa + len` to host-physical `hpa..hpa + len` with `access`.
    ///
    /// All three must be 4 KiB aligned; the range must not overlap an existing mapping.
    /// 2 MiB leaves are used where `gpa` and `hpa` are both 2 MiB aligned and at least
    /// 2 MiB remain. On error nothing new is mapped (tables allocated on the way stay until
    /// drop). `len == 0` maps nothing.
    pub fn map(&mut self, gpa: u64, hpa: u64, len: u64, access: Access) -> Result<(), MemoryError> {
        if !access.read {
            return Err(MemoryError::UnsupportedAccess {
                read: access.read,
                write: access.write,
                execute: access.execute,
            });
        }
        for (what, value) in [
            ("guest-physical address", gpa),
            ("host-physical address", hpa),
            ("length", len),
        ] {
            if !value.is_multiple_of(FRAME_SIZE) {
                return Err(MemoryError::Unaligned { what, value });
            }
        }
        for (what, start, limit) in [
            ("guest-physical", gpa, GPA_LIMIT),
            ("host-physical", hpa, HPA_LIMIT),
        ] {
            if start.checked_add(len).is_none_or(|end| end > limit) {
                return Err(MemoryError::AddressTooLarge { what, start, len });
            }
        }
        let end = gpa + len;
        if let Some(taken) = self.first_mapped(gpa, end)? {
            return Err(MemoryError::AlreadyMapped { gpa: taken });
        }
        let mut done = 0;
        while done < len {
            let (g, h) = (gpa + done, hpa + done);
            let large = g.is_multiple_of(LARGE_PAGE_SIZE)
                && h.is_multiple_of(LARGE_PAGE_SIZE)
                && len - done >= LARGE_PAGE_SIZE;
            match self.map_step(g, h, large, access) {
                Ok(step) => done += step,
                Err(e) => {
                    self.unmap(gpa, gpa + done);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
