//! Guest linear-to-physical translation by walking the guest's own page tables, and
//! instruction fetch at the guest's RIP.
//!
//! # Role
//!
//! When a guest touches MMIO, the nested page fault reports the guest-physical address of
//! the *data*, but to emulate the access the VMM must read the *instruction*, which sits at
//! a guest linear address (CS.base + RIP). This module translates that address the way the
//! guest's MMU would, reading the guest's page tables out of [`GuestMemory`]:
//!
//! - paging off (CR0.PG = 0): linear = physical (SDM Vol. 3A §4.1.1);
//! - 32-bit paging (SDM Vol. 3A §4.3; APM Vol. 2 §5.2): 4 KiB pages, and 4 MiB pages when
//!   CR4.PSE = 1 (with PSE-36 address bits 39:32 from PDE bits 20:13);
//! - PAE paging (SDM Vol. 3A §4.4; APM Vol. 2 §5.2): 4 KiB and 2 MiB pages. The CPU loads
//!   the four PDPTEs when CR3 is written; this walk reads them from memory, which differs
//!   only if the guest changed them without reloading CR3;
//! - 4-level paging (SDM Vol. 3A §4.5; APM Vol. 2 §5.3): 4 KiB, 2 MiB and 1 GiB pages, for
//!   64-bit and compatibility mode. 5-level paging (CR4.LA57) is refused.
//!
//! Only the present bit and the page-size bit are interpreted: this is a read of code the
//! guest is already executing, so its permissions were checked by the CPU. A not-present
//! entry or a table outside RAM is an error, never a host access.
//!
//! [`fetch_instruction`] reads up to [`MAX_INSTRUCTION_LEN`] bytes, translating each 4 KiB
//! page separately (consecutive linear pages need not be consecutive physically); if the
//! second page cannot be read, it returns the bytes before it and lets the decoder decide
//! whether they are enough.
//!
//! # Neighbours
//!
//! [`memory`](crate::memory) holds the tables and code; [`decode`](crate::decode) decodes
//! what [`fetch_instruction`] returns; the backends call both on NPF / EPT-violation exits.

use core::fmt;

use crate::decode::MAX_INSTRUCTION_LEN;
use crate::host::FRAME_SIZE;
use crate::memory::GuestMemory;
use crate::vcpu::Registers;

/// CR0.PG: paging enabled.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: physical address extension (PAE or 4-level paging).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;

/// Page-table entry: present.
const PTE_PRESENT: u64 = 1 << 0;
/// Page-table entry: page size (the entry maps a page, not a table).
const PTE_PAGE_SIZE: u64 = 1 << 7;
/// Address bits 51:12 of a PAE / 4-level entry and of CR3 in long mode.
const ADDR_MASK_64: u64 = 0x000F_FFFF_FFFF_F000;
/// Address bits 31:12 of a 32-bit entry and of CR3 in 32-bit paging.
const ADDR_MASK_32: u64 = 0xFFFF_F000;
/// PAE CR3: the PDPT's address, bits 31:5.
const PAE_CR3_MASK: u64 = 0xFFFF_FFE0;
/// Base of a 4 MiB page in a 32-bit PDE (bits 31:22).
const PDE32_LARGE_BASE: u64 = 0xFFC0_0000;

/// Why a guest linear address could not be translated or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalkError {
    /// A page-table entry on the way is not present (the guest would take a #PF).
    NotPresent {
        /// The linear address being translated.
        linear: u64,
    },
    /// A page-table entry lies outside guest RAM.
    TableOutsideRam {
        /// Guest-physical address of the entry.
        gpa: u64,
    },
    /// The instruction's physical address is not RAM (code in MMIO space).
    CodeOutsideRam {
        /// Guest-physical address of the first byte that could not be read.
        gpa: u64,
    },
    /// A 64-bit linear address that is not canonical (bits 63:47 differ).
    NonCanonical {
        /// The address.
        linear: u64,
    },
    /// The guest uses 5-level paging (CR4.LA57), which Keel does not walk.
    FiveLevelPaging,
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalkError::NotPresent { linear } => {
                write!(
                    f,
                    "guest linear address {linear:#x} is not mapped by the guest's page tables"
                )
            }
            WalkError::TableOutsideRam { gpa } => write!(
                f,
                "guest page-table entry at guest-physical {gpa:#x} is outside guest RAM"
            ),
            WalkError::CodeOutsideRam { gpa } => write!(
                f,
                "guest code at guest-physical {gpa:#x} is outside guest RAM"
            ),
            WalkError::NonCanonical { linear } => {
                write!(f, "guest linear address {linear:#x} is not canonical")
            }
            WalkError::FiveLevelPaging => {
                f.write_str("the guest uses 5-level paging, which Keel does not support")
            }
        }
    }
}

impl core::error::Error for WalkError {}

/// One level of a walk over 8-byte entries.
struct Level {
    /// Shift of this level's index in the linear address.
    shift: u32,
    /// Mask of the index after shifting.
    index_mask: u64,
    /// Whether PS = 1 makes the entry a page at this level.
    large_pages: bool,
}

/// PAE: PDPT (4 entries, no large pages), PD (2 MiB pages), PT.
const PAE_LEVELS: [Level; 3] = [
    Level {
        shift: 30,
        index_mask: 3,
        large_pages: false,
    },
    Level {
        shift: 21,
        index_mask: 511,
        large_pages: true,
    },
    Level {
        shift: 12,
        index_mask: 511,
        large_pages: false,
    },
];

/// 4-level: PML4, PDPT (1 GiB pages), PD (2 MiB pages), PT.
const LONG_MODE_LEVELS: [Level; 4] = [
    Level {
        shift: 39,
        index_mask: 511,
        large_pages: false,
    },
    Level {
        shift: 30,
        index_mask: 511,
        large_pages: true,
    },
    Level {
        shift: 21,
        index_mask: 511,
        large_pages: true,
    },
    Level {
        shift: 12,
        index_mask: 511,
        large_pages: false,
    },
];

fn read_entry64(mem: &GuestMemory, gpa: u64) -> Result<u64, WalkError> {
    mem.read_u64(gpa)
        .map_err(|_| WalkError::TableOutsideRam { gpa })
}

/// Walks 8-byte-entry tables rooted at `table` (PAE and 4-level paging).
fn walk64(
    mem: &GuestMemory,
    mut table: u64,
    linear: u64,
    levels: &[Level],
) -> Result<u64, WalkError> {
    for level in levels {
        let gpa = table + ((linear >> level.shift) & level.index_mask) * 8;
        let entry = read_entry64(mem, gpa)?;
        if entry & PTE_PRESENT == 0 {
            return Err(WalkError::NotPresent { linear });
        }
        if level.shift == 12 || (level.large_pages && entry & PTE_PAGE_SIZE != 0) {
            let offset_mask = (1u64 << level.shift) - 1;
            return Ok((entry & ADDR_MASK_64 & !offset_mask) | (linear & offset_mask));
        }
        table = entry & ADDR_MASK_64;
    }
    // The last level (shift 12) always returns.
    Err(WalkError::NotPresent { linear })
}

/// 32-bit paging: 4-byte entries, 4 MiB pages with CR4.PSE.
fn walk32(mem: &GuestMemory, regs: &Registers, linear: u64) -> Result<u64, WalkError> {
    let read = |gpa: u64| {
        mem.read_u32(gpa)
            .map(u64::from)
            .map_err(|_| WalkError::TableOutsideRam { gpa })
    };
    let pde = read((regs.cr3 & ADDR_MASK_32) + ((linear >> 22) & 1023) * 4)?;
    if pde & PTE_PRESENT == 0 {
        return Err(WalkError::NotPresent { linear });
    }
    if regs.cr4 & CR4_PSE != 0 && pde & PTE_PAGE_SIZE != 0 {
        // PSE-36: PDE bits 20:13 are physical-address bits 39:32.
        let high = ((pde >> 13) & 0xFF) << 32;
        return Ok(high | (pde & PDE32_LARGE_BASE) | (linear & 0x3F_FFFF));
    }
    let pte = read((pde & ADDR_MASK_32) + ((linear >> 12) & 1023) * 4)?;
    if pte & PTE_PRESENT == 0 {
        return Err(WalkError::NotPresent { linear });
    }
    Ok((pte & ADDR_MASK_32) | (linear & 0xFFF))
}

/// Translates the guest linear address `linear` to guest-physical with the paging mode in
/// `regs` (CR0.PG, CR4.PAE/PSE/LA57, EFER.LMA, CR3).
pub fn linear_to_physical(
    mem: &GuestMemory,
    regs: &Registers,
    linear: u64,
) -> Result<u64, WalkError> {
    if regs.cr0 & CR0_PG == 0 {
        return Ok(linear & 0xFFFF_FFFF);
    }
    if regs.efer & EFER_LMA != 0 {
        if regs.cr4 & CR4_LA57 != 0 {
            return Err(WalkError::FiveLevelPaging);
        }
        // Canonical: bits 63:47 all equal.
        if ((linear as i64) << 16 >> 16) as u64 != linear {
            return Err(WalkError::NonCanonical { linear });
        }
        return walk64(mem, regs.cr3 & ADDR_MASK_64, linear, &LONG_MODE_LEVELS);
    }
    let linear = linear & 0xFFFF_FFFF;
    if regs.cr4 & CR4_PAE != 0 {
        walk64(mem, regs.cr3 & PAE_CR3_MASK, linear, &PAE_LEVELS)
    } else {
        walk32(mem, regs, linear)
    }
}

/// The linear address of the instruction byte at RIP + `i`, wrapping as the code size does:
/// 64-bit code ignores CS.base (SDM Vol. 3A §3.4.4); 32- and 16-bit code wrap the offset at
/// 4 GiB / 64 KiB and the linear address at 4 GiB.
fn code_linear(regs: &Registers, bitness: u32, i: u64) -> u64 {
    match bitness {
        64 => regs.rip.wrapping_add(i),
        32 => {
            regs.cs
                .base
                .wrapping_add(u64::from((regs.rip as u32).wrapping_add(i as u32)))
                & 0xFFFF_FFFF
        }
        _ => {
            regs.cs
                .base
                .wrapping_add(u64::from((regs.rip as u16).wrapping_add(i as u16)))
                & 0xFFFF_FFFF
        }
    }
}

/// Reads up to [`MAX_INSTRUCTION_LEN`] instruction bytes at CS.base + RIP (RIP alone in
/// 64-bit code), returning the buffer and how many bytes are valid.
///
/// Fails if the first byte cannot be read; stops early (fewer bytes, no error) at the first
/// later page that is not mapped or not RAM.
pub fn fetch_instruction(
    mem: &GuestMemory,
    regs: &Registers,
) -> Result<([u8; MAX_INSTRUCTION_LEN], usize), WalkError> {
    let bitness = regs.code_bitness();
    let mut bytes = [0u8; MAX_INSTRUCTION_LEN];
    // The current page: its linear frame number and guest-physical base.
    let mut page: Option<(u64, u64)> = None;
    for i in 0..MAX_INSTRUCTION_LEN {
        let linear = code_linear(regs, bitness, i as u64);
        let frame = linear / FRAME_SIZE;
        let byte = (|| {
            let base = match page {
                Some((f, base)) if f == frame => base,
                _ => {
                    let gpa = linear_to_physical(mem, regs, linear)?;
                    let base = gpa - gpa % FRAME_SIZE;
                    page = Some((frame, base));
                    base
                }
            };
            let gpa = base + linear % FRAME_SIZE;
            mem.read_u8(gpa)
                .map_err(|_| WalkError::CodeOutsideRam { gpa })
        })();
        match byte {
            Ok(b) => bytes[i] = b,
            Err(e) if i == 0 => return Err(e),
            Err(_) => return Ok((bytes, i)),
        }
    }
    Ok((bytes, MAX_INSTRUCTION_LEN))
}

#[cfg(test)]
mod tests;
