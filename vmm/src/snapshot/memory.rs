//! The memory section: guest RAM with all-zero pages left out.
//!
//! ```text
//! size u64 (bytes, a multiple of 4 KiB)
//! then per group of 64 pages: mask u64 (bit n set: page n of the group follows), the pages
//! ```
//!
//! Most of a freshly booted guest's RAM is zero, so leaving zero pages out makes a saved
//! Linux VM a fraction of its RAM. A restore loads into fresh RAM, which is zero already.
//! Mask bits beyond the last page are refused.

use alloc::vec::Vec;

use super::{SnapshotError, Source};
use crate::host::FRAME_SIZE;
use crate::memory::GuestMemory;

const PAGE: usize = FRAME_SIZE as usize;
const SECTION: &str = "memory";

fn malformed(reason: &'static str) -> SnapshotError {
    SnapshotError::Malformed {
        section: SECTION,
        reason,
    }
}

fn is_zero(page: &[u8; PAGE]) -> bool {
    page.chunks_exact(8)
        .all(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
}

/// Which pages are not zero, a bit per page in groups of 64, and the section's length.
pub struct Plan {
    masks: Vec<u64>,
    len: u64,
}

/// Scans `memory` for the pages to save.
pub fn plan(memory: &GuestMemory) -> Result<Plan, SnapshotError> {
    let pages = memory.size() / FRAME_SIZE;
    let mut masks = Vec::new();
    masks
        .try_reserve_exact(pages.div_ceil(64) as usize)
        .map_err(|_| SnapshotError::OutOfMemory)?;
    let mut page = [0u8; PAGE];
    let mut saved = 0u64;
    for group in 0..pages.div_ceil(64) {
        let mut mask = 0u64;
        for bit in 0..64.min(pages - group * 64) {
            let gpa = (group * 64 + bit) * FRAME_SIZE;
            memory.read(gpa, &mut page).map_err(SnapshotError::Memory)?;
            if !is_zero(&page) {
                mask |= 1 << bit;
                saved += 1;
            }
        }
        masks.push(mask);
    }
    let len = 8 + masks.len() as u64 * 8 + saved * FRAME_SIZE;
    Ok(Plan { masks, len })
}

impl Plan {
    /// The section's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no page is saved (the size and masks are still written).
    pub fn is_empty(&self) -> bool {
        self.masks.iter().all(|m| *m == 0)
    }
}

/// Writes the section for `memory`, as `plan` found it, through `write`.
pub(super) fn encode(
    memory: &GuestMemory,
    plan: &Plan,
    write: &mut dyn FnMut(&[u8]) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    write(&memory.size().to_le_bytes())?;
    let mut page = [0u8; PAGE];
    for (group, mask) in plan.masks.iter().enumerate() {
        write(&mask.to_le_bytes())?;
        for bit in 0..64u64 {
            if mask & (1 << bit) != 0 {
                let gpa = (group as u64 * 64 + bit) * FRAME_SIZE;
                memory.read(gpa, &mut page).map_err(SnapshotError::Memory)?;
                write(&page)?;
            }
        }
    }
    Ok(())
}

fn read_u64(source: &dyn Source, at: u64) -> Result<u64, SnapshotError> {
    let mut b = [0u8; 8];
    source.read_at(at, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// The RAM size the section at `at` (of `len` bytes) holds.
pub(super) fn size(source: &dyn Source, at: u64, len: u64) -> Result<u64, SnapshotError> {
    if len < 8 {
        return Err(malformed("it has no size"));
    }
    let size = read_u64(source, at)?;
    if size == 0 || size % FRAME_SIZE != 0 {
        return Err(malformed("its size is not a whole number of pages"));
    }
    Ok(size)
}

/// Walks the section's masks, calling `page(gpa, offset)` for each saved page, and checks
/// that it ends exactly at `at + len`.
fn walk(
    source: &dyn Source,
    at: u64,
    len: u64,
    page: &mut dyn FnMut(u64, u64) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let size = size(source, at, len)?;
    let end = at + len;
    let pages = size / FRAME_SIZE;
    let mut pos = at + 8;
    for group in 0..pages.div_ceil(64) {
        if end - pos < 8 {
            return Err(malformed("it ends before its last page"));
        }
        let mask = read_u64(source, pos)?;
        pos += 8;
        let in_group = 64.min(pages - group * 64);
        if in_group < 64 && mask >> in_group != 0 {
            return Err(malformed("it saves pages beyond its size"));
        }
        let count = u64::from(mask.count_ones());
        if (end - pos) / FRAME_SIZE < count {
            return Err(malformed("it ends before its last page"));
        }
        for bit in 0..in_group {
            if mask & (1 << bit) != 0 {
                page((group * 64 + bit) * FRAME_SIZE, pos)?;
                pos += FRAME_SIZE;
            }
        }
    }
    if pos != end {
        return Err(malformed("bytes follow its last page"));
    }
    Ok(())
}

/// Checks the section's structure.
pub(super) fn check(source: &dyn Source, at: u64, len: u64) -> Result<(), SnapshotError> {
    walk(source, at, len, &mut |_, _| Ok(()))
}

/// Loads the section into `memory` (zeroed RAM of the saved size).
pub(super) fn decode(
    source: &dyn Source,
    at: u64,
    len: u64,
    memory: &GuestMemory,
) -> Result<(), SnapshotError> {
    let saved = size(source, at, len)?;
    if saved != memory.size() {
        return Err(SnapshotError::MemorySizeMismatch {
            saved,
            target: memory.size(),
        });
    }
    let mut buf = [0u8; PAGE];
    walk(source, at, len, &mut |gpa, offset| {
        source.read_at(offset, &mut buf)?;
        memory.write(gpa, &buf).map_err(SnapshotError::Memory)
    })
}
