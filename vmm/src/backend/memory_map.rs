//! A VM's memory map as both backends see it: guest RAM, the second-level tables that map
//! it (NPT or EPT), the translation epoch that makes every vCPU drop cached translations
//! after a change, and the dirty-page log that write protection feeds.
//!
//! One [`MemoryMap`] belongs to each VM (inside its [`VmBackend`](super::VmBackend)); the
//! VM's vCPUs get the tables' root and a [`TlbEpoch`] handle, never the tables themselves.
//!
//! # Invalidation
//!
//! [`MemoryMap::invalidate`] bumps the VM's epoch. Before every entry a vCPU compares the
//! epoch with the one it last flushed for ([`TlbEpoch::take_flush`]) and, if it moved,
//! drops its cached translations on the CPU it is about to run on (SVM: `TLB_CONTROL`, APM
//! §15.16.1; VMX: INVEPT single-context for the VM's EPTP, SDM Vol. 3C §29.4.3.1). So every
//! CPU that runs one of the VM's vCPUs flushes before it runs guest code again. Keel runs
//! all vCPUs on the boot CPU today; when vCPUs run on several CPUs (issue 15), a vCPU that
//! is in the guest while the epoch moves must also be kicked out with an IPI, and a vCPU
//! that moves to another CPU must flush there.
//!
//! # Dirty tracking
//!
//! [`MemoryMap::write_protect`] clears the write permission of guest RAM in the tables and
//! invalidates. A guest write to a protected page then exits as
//! [`VmExit::DirtyPageWrite`](crate::vcpu::VmExit::DirtyPageWrite) (an NPF / EPT violation
//! with the write bit on RAM); the VM answers with [`MemoryMap::record_dirty_write`], which
//! marks the 4 KiB page in the [`DirtyBitmap`] and makes it writable again, and the guest
//! re-executes the write. [`MemoryMap::take_dirty`] hands the log over and starts a new one:
//! a pre-copy round of live migration is `take_dirty`, copy those pages, `write_protect`
//! them again.
//!
//! [`MemoryMap::start_dirty_log`], [`MemoryMap::harvest_dirty`] and
//! [`MemoryMap::stop_dirty_log`] package that cycle: start protects all RAM (2 MiB leaves
//! stay whole until the first write into them splits them) and turns on the log of the
//! VMM's own writes ([`GuestMemory::log_host_writes`]); a harvest takes the log, merges the
//! device writes into it and re-protects exactly the harvested pages (one invalidation per
//! harvest, through the epoch); stop lifts all protection.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::host::FRAME_SIZE;
use crate::memory::{GuestMemory, LARGE_PAGE_SIZE, MemoryError};
use crate::nested_paging::{NestedFormat, NestedPageTables};

/// The VM's translation epoch, shared by the VM and its vCPUs.
#[derive(Clone, Debug)]
pub struct TlbEpoch {
    epoch: Arc<AtomicU64>,
    /// The epoch this holder last flushed for; `None` before its first entry.
    seen: Option<u64>,
}

impl TlbEpoch {
    /// Whether cached translations must be dropped before the next entry (the epoch moved,
    /// or this is the first entry); records that the caller does it.
    pub fn take_flush(&mut self) -> bool {
        let now = self.epoch.load(Ordering::Acquire);
        let flush = self.seen != Some(now);
        self.seen = Some(now);
        flush
    }
}

/// Which 4 KiB pages of guest RAM the guest wrote since the log was last taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyBitmap {
    /// Bit n of word w: the page at guest-physical `(64 * w + n) * 4096`.
    words: Vec<u64>,
}

impl DirtyBitmap {
    /// An empty log for `size` bytes of RAM.
    pub fn new(size: u64) -> DirtyBitmap {
        let pages = size.div_ceil(FRAME_SIZE);
        DirtyBitmap {
            words: alloc::vec![0; pages.div_ceil(64) as usize],
        }
    }

    /// Marks the page holding `gpa` (ignored outside the RAM the log was made for).
    pub fn mark(&mut self, gpa: u64) {
        let page = gpa / FRAME_SIZE;
        if let Some(word) = self.words.get_mut((page / 64) as usize) {
            *word |= 1 << (page % 64);
        }
    }

    /// Whether the page holding `gpa` is marked.
    pub fn is_dirty(&self, gpa: u64) -> bool {
        let page = gpa / FRAME_SIZE;
        self.words
            .get((page / 64) as usize)
            .is_some_and(|word| word & (1 << (page % 64)) != 0)
    }

    /// Ors `bits` into word `index` (pages `64 * index ..`), ignored outside the log.
    fn merge_word(&mut self, index: usize, bits: u64) {
        if let Some(word) = self.words.get_mut(index) {
            *word |= bits;
        }
    }

    /// Runs of consecutive marked pages as `(first gpa, length in bytes)`, in order.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut pages = self.pages().peekable();
        core::iter::from_fn(move || {
            let start = pages.next()?;
            let mut end = start + FRAME_SIZE;
            while pages.next_if_eq(&end).is_some() {
                end += FRAME_SIZE;
            }
            Some((start, end - start))
        })
    }

    /// Number of marked pages.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The guest-physical addresses of the marked pages, in order.
    pub fn pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            (0..64u64)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| (w as u64 * 64 + bit) * FRAME_SIZE)
        })
    }
}

/// A VM's RAM with its second-level tables, translation epoch and dirty log.
pub struct MemoryMap {
    // Field order is drop order: the tables (which map the RAM) go before the RAM.
    tables: NestedPageTables,
    memory: GuestMemory,
    epoch: Arc<AtomicU64>,
    dirty: DirtyBitmap,
    /// Whether [`start_dirty_log`](Self::start_dirty_log) is in force.
    logging: bool,
}

impl core::fmt::Debug for MemoryMap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemoryMap")
            .field("memory", &self.memory)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl MemoryMap {
    /// Maps all of `memory` read/write/execute in `format` tables.
    pub fn new(memory: GuestMemory, format: NestedFormat) -> Result<MemoryMap, MemoryError> {
        let tables = NestedPageTables::build(&memory, format)?;
        let dirty = DirtyBitmap::new(memory.size());
        Ok(MemoryMap {
            tables,
            memory,
            epoch: Arc::new(AtomicU64::new(0)),
            dirty,
            logging: false,
        })
    }

    /// The guest's RAM.
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// The second-level tables (their root goes into each vCPU's VMCB/VMCS).
    pub fn tables(&self) -> &NestedPageTables {
        &self.tables
    }

    /// A handle on the translation epoch for a new vCPU (whose first entry flushes).
    pub fn tlb_epoch(&self) -> TlbEpoch {
        TlbEpoch {
            epoch: Arc::clone(&self.epoch),
            seen: None,
        }
    }

    /// Makes every vCPU drop its cached translations before it next enters the guest.
    pub fn invalidate(&mut self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The RAM part of `gpa..gpa + len`, widened to whole 4 KiB pages.
    fn ram_pages(&self, gpa: u64, len: u64) -> Result<(u64, u64), MemoryError> {
        let start = gpa & !(FRAME_SIZE - 1);
        let end = gpa
            .checked_add(len)
            .and_then(|end| end.checked_next_multiple_of(FRAME_SIZE))
            .ok_or(MemoryError::OutOfRange { gpa, len })?;
        if !self.memory.contains(start, end - start) {
            return Err(MemoryError::OutOfRange { gpa, len });
        }
        Ok((start, end - start))
    }

    /// Write-protects the guest RAM in `gpa..gpa + len` (widened to 4 KiB pages) and
    /// invalidates: from the next entry on, a guest write there exits as
    /// [`VmExit::DirtyPageWrite`](crate::vcpu::VmExit::DirtyPageWrite). A range that is not
    /// all RAM is refused before anything changes.
    pub fn write_protect(&mut self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        let (start, len) = self.ram_pages(gpa, len)?;
        let result = self.tables.set_writable(start, len, false);
        // Even a partial change took permission away somewhere.
        self.invalidate();
        result.map(|_| ())
    }

    /// Lifts write protection from the guest RAM in `gpa..gpa + len` (widened to 4 KiB
    /// pages). No invalidation is needed for a permission granted.
    pub fn unprotect(&mut self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        let (start, len) = self.ram_pages(gpa, len)?;
        self.tables.set_writable(start, len, true).map(|_| ())
    }

    /// Answers a [`VmExit::DirtyPageWrite`](crate::vcpu::VmExit::DirtyPageWrite) at `gpa`:
    /// marks the page dirty and makes it writable, so the guest's write succeeds when it is
    /// retried. Returns false (and changes nothing) when `gpa` is not RAM. When the 2 MiB page
    /// around it cannot be split (no host frame for a page table), the whole 2 MiB page is
    /// made writable and logged as dirty: tracking gets coarser, never wrong.
    pub fn record_dirty_write(&mut self, gpa: u64) -> Result<bool, MemoryError> {
        if !self.memory.contains(gpa, 1) {
            return Ok(false);
        }
        let page = gpa & !(FRAME_SIZE - 1);
        match self.tables.set_writable(page, FRAME_SIZE, true) {
            Ok(_) => self.dirty.mark(page),
            Err(MemoryError::OutOfHostMemory { .. }) => {
                let large = gpa & !(LARGE_PAGE_SIZE - 1);
                let len = LARGE_PAGE_SIZE.min(self.memory.size() - large);
                self.tables.set_writable(large, len, true)?;
                for p in (large..large + len).step_by(FRAME_SIZE as usize) {
                    self.dirty.mark(p);
                }
            }
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// Marks the page holding `gpa` dirty without a fault (device emulation that writes
    /// guest RAM, such as a virtqueue, calls this).
    pub fn mark_dirty(&mut self, gpa: u64) {
        self.dirty.mark(gpa);
    }

    /// The dirty log since it was last taken (with the VMM's own writes merged in); a new,
    /// empty one starts.
    pub fn take_dirty(&mut self) -> DirtyBitmap {
        let mut log = core::mem::replace(&mut self.dirty, DirtyBitmap::new(self.memory.size()));
        self.memory
            .drain_host_writes(|index, bits| log.merge_word(index, bits));
        log
    }

    /// Starts dirty logging: an empty log, all RAM write-protected, the VMM's own writes
    /// logged. Starting again restarts (everything is protected and the log emptied).
    pub fn start_dirty_log(&mut self) -> Result<(), MemoryError> {
        let size = self.memory.size();
        if let Err(e) = self.write_protect(0, size) {
            // Leave nothing half-protected behind.
            let _ = self.unprotect(0, size);
            return Err(e);
        }
        self.dirty = DirtyBitmap::new(size);
        self.memory.log_host_writes(true);
        self.logging = true;
        Ok(())
    }

    /// Whether dirty logging is on.
    pub fn is_logging_dirty(&self) -> bool {
        self.logging
    }

    /// One pre-copy round's harvest: the pages written since the last harvest (or the
    /// start), re-protected so the next round sees their next write. Pages not in the
    /// harvest are still protected from before. An error (no host frame to split a
    /// 2 MiB page is not one: those were split already when written) leaves logging on and
    /// the pages unprotected; the caller must treat the whole RAM as dirty.
    pub fn harvest_dirty(&mut self) -> Result<DirtyBitmap, MemoryError> {
        let log = self.take_dirty();
        if self.logging {
            let mut result = Ok(());
            for (gpa, len) in log.runs() {
                if let Err(e) = self.tables.set_writable(gpa, len, false) {
                    result = Err(e);
                    break;
                }
            }
            // One flush for the whole harvest, even after a partial change.
            self.invalidate();
            result?;
        }
        Ok(log)
    }

    /// Stops dirty logging: all RAM writable again, the log and the VMM's write log off
    /// and empty.
    pub fn stop_dirty_log(&mut self) -> Result<(), MemoryError> {
        self.memory.log_host_writes(false);
        self.memory.drain_host_writes(|_, _| {});
        self.dirty = DirtyBitmap::new(self.memory.size());
        self.logging = false;
        self.unprotect(0, self.memory.size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MIN_GUEST_RAM;
    use crate::nested_paging::Access;
    use crate::testing::MockHost;

    const MIB: u64 = 1 << 20;

    fn map(format: NestedFormat) -> (&'static MockHost, MemoryMap) {
        let host = MockHost::leak(8192);
        let memory = GuestMemory::new(host, 4 * MIB).unwrap();
        (host, MemoryMap::new(memory, format).unwrap())
    }

    fn both() -> [NestedFormat; 2] {
        [NestedFormat::Npt, NestedFormat::Ept]
    }

    fn writable(m: &MemoryMap, gpa: u64) -> bool {
        m.tables().translate(gpa).unwrap().1.write
    }

    #[test]
    fn protecting_a_page_splits_its_2mib_leaf_and_keeps_the_translation() {
        for format in both() {
            let (_, mut m) = map(format);
            let before = m.tables().translate(0x20_3456).unwrap().0;
            assert_eq!(m.tables().leaf_entry(0x20_0000).unwrap().1, LARGE_PAGE_SIZE);
            m.write_protect(0x20_3000, 0x1000).unwrap();
            assert_eq!(m.tables().leaf_entry(0x20_3000).unwrap().1, FRAME_SIZE);
            assert_eq!(m.tables().translate(0x20_3456).unwrap().0, before);
            assert_eq!(
                m.tables().translate(0x20_3456).unwrap().1,
                Access::RX,
                "{format:?}: write cleared, read and execute kept"
            );
            assert!(writable(&m, 0x20_2fff));
            assert!(writable(&m, 0x20_4000));
            // The untouched 2 MiB page stays large.
            assert_eq!(m.tables().leaf_entry(0).unwrap().1, LARGE_PAGE_SIZE);
            // Every other page of the split one still maps where it did.
            for gpa in (0x20_0000..0x40_0000).step_by(0x1000) {
                assert_eq!(
                    m.tables().translate(gpa).unwrap().0,
                    m.memory().hpa(gpa).unwrap()
                );
            }
        }
    }

    #[test]
    fn protecting_whole_2mib_pages_does_not_split_them() {
        for format in both() {
            let (host, mut m) = map(format);
            let frames = host.frames_in_use();
            m.write_protect(0, 4 * MIB).unwrap();
            assert_eq!(host.frames_in_use(), frames, "no page tables allocated");
            for gpa in [0, 0x1f_ffff, 0x20_0000, 4 * MIB - 1] {
                assert!(!writable(&m, gpa), "{format:?} {gpa:#x}");
            }
            m.unprotect(0, 4 * MIB).unwrap();
            assert!(writable(&m, 0x12_3000));
        }
    }

    #[test]
    fn a_write_fault_logs_the_page_and_lifts_protection_from_it_alone() {
        for format in both() {
            let (_, mut m) = map(format);
            m.write_protect(0, 4 * MIB).unwrap();
            assert_eq!(m.record_dirty_write(0x20_5123), Ok(true));
            assert!(writable(&m, 0x20_5000));
            assert!(!writable(&m, 0x20_4fff));
            assert!(!writable(&m, 0x20_6000));
            // A second fault on the same page (another vCPU's stale translation) is harmless.
            assert_eq!(m.record_dirty_write(0x20_5fff), Ok(true));
            assert_eq!(m.record_dirty_write(0x1000), Ok(true));
            let log = m.take_dirty();
            assert_eq!(log.pages().collect::<Vec<_>>(), [0x1000, 0x20_5000]);
            assert_eq!(log.count(), 2);
            assert_eq!(m.take_dirty().count(), 0, "taking starts a new log");
            // Not RAM: nothing to do.
            assert_eq!(m.record_dirty_write(4 * MIB), Ok(false));
            assert_eq!(m.record_dirty_write(0xfee0_0000), Ok(false));
        }
    }

    #[test]
    fn without_a_frame_for_the_split_the_whole_2mib_page_is_logged() {
        let (host, mut m) = map(NestedFormat::Ept);
        m.write_protect(0, 4 * MIB).unwrap();
        host.set_fail_after(Some(0));
        assert_eq!(m.record_dirty_write(0x20_5000), Ok(true));
        assert!(writable(&m, 0x20_0000) && writable(&m, 0x3f_f000));
        assert!(!writable(&m, 0x1f_f000));
        assert_eq!(m.take_dirty().count(), 512);
    }

    #[test]
    fn ranges_outside_ram_are_refused_and_change_nothing() {
        let (_, mut m) = map(NestedFormat::Npt);
        assert_eq!(
            m.write_protect(4 * MIB - 0x1000, 0x2000),
            Err(MemoryError::OutOfRange {
                gpa: 4 * MIB - 0x1000,
                len: 0x2000
            })
        );
        assert!(writable(&m, 4 * MIB - 0x1000));
        assert!(m.write_protect(u64::MAX - 10, 20).is_err());
        // Unaligned ranges widen to whole pages.
        m.write_protect(0x1800, 0x1000).unwrap();
        assert!(!writable(&m, 0x1000) && !writable(&m, 0x2000));
        assert!(writable(&m, 0x3000));
    }

    #[test]
    fn invalidation_reaches_every_vcpu_once() {
        let (_, mut m) = map(NestedFormat::Npt);
        let mut a = m.tlb_epoch();
        let mut b = m.tlb_epoch();
        assert!(a.take_flush(), "first entry flushes");
        assert!(!a.take_flush());
        m.write_protect(0, 0x1000).unwrap();
        assert!(a.take_flush());
        assert!(!a.take_flush());
        assert!(b.take_flush());
        assert!(!b.take_flush());
        m.unprotect(0, 0x1000).unwrap();
        assert!(!a.take_flush(), "granting permission needs no flush");
        m.invalidate();
        assert!(a.take_flush() && b.take_flush());
    }

    #[test]
    fn dirty_bitmap_bounds() {
        let mut log = DirtyBitmap::new(MIN_GUEST_RAM);
        log.mark(MIN_GUEST_RAM - 1);
        log.mark(MIN_GUEST_RAM);
        assert!(log.is_dirty(MIN_GUEST_RAM - 4096));
        assert!(!log.is_dirty(MIN_GUEST_RAM));
        assert_eq!(log.pages().collect::<Vec<_>>(), [MIN_GUEST_RAM - 4096]);
    }

    #[test]
    fn dropping_the_map_frees_tables_and_ram() {
        let (host, mut m) = map(NestedFormat::Ept);
        m.write_protect(0x1000, 0x1000).unwrap();
        drop(m);
        assert_eq!(host.frames_in_use(), 0);
    }

    #[test]
    fn a_dirty_log_cycle_reports_each_write_once_and_reprotects_it() {
        for format in both() {
            let (_, mut m) = map(format);
            m.start_dirty_log().unwrap();
            assert!(m.is_logging_dirty());
            for gpa in [0, 0x1f_ffff, 0x20_0000, 4 * MIB - 1] {
                assert!(!writable(&m, gpa), "{format:?} {gpa:#x} protected");
            }
            // Guest writes (faults) on three pages, two of them neighbours.
            for gpa in [0x5008, 0x6000, 0x30_0010] {
                assert_eq!(m.record_dirty_write(gpa), Ok(true));
            }
            let epoch = m.epoch.load(Ordering::Acquire);
            let round = m.harvest_dirty().unwrap();
            assert_eq!(
                round.pages().collect::<Vec<_>>(),
                [0x5000, 0x6000, 0x30_0000]
            );
            assert_eq!(
                round.runs().collect::<Vec<_>>(),
                [(0x5000, 0x2000), (0x30_0000, 0x1000)]
            );
            assert!(m.epoch.load(Ordering::Acquire) > epoch, "harvest flushes");
            assert!(
                !writable(&m, 0x5000) && !writable(&m, 0x30_0000),
                "re-protected"
            );
            assert_eq!(
                m.harvest_dirty().unwrap().count(),
                0,
                "nothing written since"
            );
            // The next write to the same page shows up in the next round.
            assert_eq!(m.record_dirty_write(0x5000), Ok(true));
            assert_eq!(
                m.harvest_dirty().unwrap().pages().collect::<Vec<_>>(),
                [0x5000]
            );
            m.stop_dirty_log().unwrap();
            assert!(!m.is_logging_dirty());
            assert!(writable(&m, 0x5000) && writable(&m, 0x20_0000) && writable(&m, 0));
        }
    }

    #[test]
    fn device_writes_through_guest_memory_are_in_the_harvest() {
        let (_, mut m) = map(NestedFormat::Npt);
        // Before logging starts, VMM writes are not recorded.
        m.memory().write(0x9000, &[1]).unwrap();
        m.start_dirty_log().unwrap();
        assert_eq!(m.harvest_dirty().unwrap().count(), 0);
        // A used-ring update, a buffer spanning a page boundary, a filled range.
        m.memory().write_u16(0x1_0002, 7).unwrap();
        m.memory().write(0x2_0ffe, &[0; 4]).unwrap();
        m.memory().fill(0x3f_e000, 0x2000, 0xff).unwrap();
        // A write refused as out of range marks nothing.
        assert!(m.memory().write(4 * MIB - 1, &[0; 2]).is_err());
        assert_eq!(
            m.harvest_dirty().unwrap().pages().collect::<Vec<_>>(),
            [0x1_0000, 0x2_0000, 0x2_1000, 0x3f_e000, 0x3f_f000]
        );
        assert_eq!(m.harvest_dirty().unwrap().count(), 0);
        m.stop_dirty_log().unwrap();
        m.memory().write(0x9000, &[1]).unwrap();
        assert_eq!(m.take_dirty().count(), 0, "logging off: not recorded");
    }

    #[test]
    fn dirty_bitmap_runs_merge_neighbours_across_words() {
        let mut log = DirtyBitmap::new(4 * MIB);
        for page in [62u64, 63, 64, 65, 200, 1023] {
            log.mark(page * FRAME_SIZE);
        }
        assert_eq!(
            log.runs().collect::<Vec<_>>(),
            [
                (62 * FRAME_SIZE, 4 * FRAME_SIZE),
                (200 * FRAME_SIZE, FRAME_SIZE),
                (1023 * FRAME_SIZE, FRAME_SIZE)
            ]
        );
    }
}
