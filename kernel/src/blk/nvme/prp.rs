//! Physical Region Page entries (NVMe base specification 1.4, §4.3) for one transfer, and
//! the split of a request into commands the controller accepts.

use super::regs::PAGE_SIZE;

/// PRP entries in one list page.
pub const ENTRIES_PER_LIST: usize = PAGE_SIZE / 8;

/// Why PRPs could not be built for a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrpError {
    /// PRP1's offset must be dword-aligned (§4.3).
    #[error("data buffer at {0:#x} is not 4-byte aligned")]
    Unaligned(u64),
    /// A zero-length transfer has no PRPs.
    #[error("empty transfer")]
    Empty,
    /// The transfer needs more entries than one list page holds.
    #[error("transfer of {0} bytes needs more than one PRP list page")]
    TooLong(usize),
}

/// The PRPs of one command: PRP1, PRP2 and how many entries of the list page PRP2 points at
/// were written (0 when PRP2 is a data page or unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prps {
    /// PRP entry 1: the first data byte.
    pub prp1: u64,
    /// PRP entry 2: 0, the second data page, or the list page.
    pub prp2: u64,
    /// Entries written to the list.
    pub list_entries: usize,
}

/// Builds PRPs for `len` bytes at physical address `data`, writing list entries (when the
/// transfer touches more than two pages) into `list`, the page at physical `list_phys`.
pub fn build(
    data: u64,
    len: usize,
    list: &mut [u64; ENTRIES_PER_LIST],
    list_phys: u64,
) -> Result<Prps, PrpError> {
    if len == 0 {
        return Err(PrpError::Empty);
    }
    if !data.is_multiple_of(4) {
        return Err(PrpError::Unaligned(data));
    }
    let page = PAGE_SIZE as u64;
    let first_page_bytes = (page - data % page) as usize;
    if len <= first_page_bytes {
        return Ok(Prps {
            prp1: data,
            prp2: 0,
            list_entries: 0,
        });
    }
    let next_page = (data / page + 1) * page;
    let rest_pages = (len - first_page_bytes).div_ceil(PAGE_SIZE);
    if rest_pages == 1 {
        return Ok(Prps {
            prp1: data,
            prp2: next_page,
            list_entries: 0,
        });
    }
    if rest_pages > ENTRIES_PER_LIST {
        return Err(PrpError::TooLong(len));
    }
    for (i, entry) in list.iter_mut().take(rest_pages).enumerate() {
        *entry = next_page + (i as u64) * page;
    }
    Ok(Prps {
        prp1: data,
        prp2: list_phys,
        list_entries: rest_pages,
    })
}

/// One command's share of a request: `sectors` from `lba`, at byte `offset` of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// First sector.
    pub lba: u64,
    /// Sectors in this command.
    pub sectors: u32,
    /// Byte offset in the caller's buffer.
    pub offset: usize,
}

/// Splits `sectors` from `lba` into commands of at most `max_sectors` each (from MDTS and the
/// driver's bounce buffer; NLB's 16 bits cap it at 65536 too).
pub fn split(
    lba: u64,
    sectors: u64,
    max_sectors: u32,
    sector_bytes: usize,
) -> impl Iterator<Item = Chunk> {
    let max = u64::from(max_sectors.clamp(1, 65536));
    let mut done = 0u64;
    core::iter::from_fn(move || {
        if done >= sectors {
            return None;
        }
        let n = (sectors - done).min(max);
        let chunk = Chunk {
            lba: lba + done,
            sectors: n as u32,
            offset: done as usize * sector_bytes,
        };
        done += n;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// The byte ranges the PRPs describe, as the controller would walk them.
    fn walk(p: &Prps, list: &[u64; ENTRIES_PER_LIST], len: usize) -> Vec<(u64, usize)> {
        let page = PAGE_SIZE as u64;
        let mut out = Vec::new();
        let first = len.min((page - p.prp1 % page) as usize);
        out.push((p.prp1, first));
        let mut left = len - first;
        if left == 0 {
            assert_eq!(p.prp2, 0);
            return out;
        }
        let pages: Vec<u64> = if p.list_entries == 0 {
            alloc::vec![p.prp2]
        } else {
            list[..p.list_entries].to_vec()
        };
        for addr in pages {
            assert_eq!(addr % page, 0, "later PRP entries are page-aligned");
            let n = left.min(PAGE_SIZE);
            out.push((addr, n));
            left -= n;
        }
        assert_eq!(left, 0, "PRPs cover the whole transfer");
        out
    }

    #[test]
    fn sizes_and_offsets_cover_the_buffer_contiguously() {
        let sizes = [
            512,
            4096,
            4608,
            8192,
            12288,
            65536,
            128 * 1024 + 512,
            1024 * 1024,
        ];
        let offsets = [0u64, 4, 512, 3584, 4092];
        for &len in &sizes {
            for &off in &offsets {
                let data = 0x10_0000 + off;
                let mut list = [0u64; ENTRIES_PER_LIST];
                let p = build(data, len, &mut list, 0x9000).unwrap();
                let ranges = walk(&p, &list, len);
                let mut expect = data;
                for (addr, n) in &ranges {
                    assert_eq!(*addr, expect, "len {len} off {off}");
                    expect += *n as u64;
                }
                assert_eq!(expect, data + len as u64);
                let pages_touched = ((data + len as u64 - 1) / 4096 - data / 4096 + 1) as usize;
                assert_eq!(ranges.len(), pages_touched);
                if pages_touched > 2 {
                    assert_eq!(p.prp2, 0x9000, "list used for {len} at {off}");
                }
            }
        }
    }

    #[test]
    fn refuses_unaligned_empty_and_too_long() {
        let mut list = [0u64; ENTRIES_PER_LIST];
        assert_eq!(
            build(0x1002, 512, &mut list, 0),
            Err(PrpError::Unaligned(0x1002))
        );
        assert_eq!(build(0x1000, 0, &mut list, 0), Err(PrpError::Empty));
        let max = PAGE_SIZE * (ENTRIES_PER_LIST + 1);
        assert!(build(0x1000, max, &mut list, 0).is_ok());
        assert_eq!(
            build(0x1000, max + 512, &mut list, 0),
            Err(PrpError::TooLong(max + 512))
        );
    }

    #[test]
    fn splits_by_limit() {
        let chunks: Vec<Chunk> = split(10, 300, 128, 512).collect();
        assert_eq!(
            chunks,
            [
                Chunk {
                    lba: 10,
                    sectors: 128,
                    offset: 0
                },
                Chunk {
                    lba: 138,
                    sectors: 128,
                    offset: 65536
                },
                Chunk {
                    lba: 266,
                    sectors: 44,
                    offset: 131072
                },
            ]
        );
        assert_eq!(
            split(0, 200_000, u32::MAX, 512).next().unwrap().sectors,
            65536
        );
        assert_eq!(split(0, 0, 8, 512).count(), 0);
    }
}
