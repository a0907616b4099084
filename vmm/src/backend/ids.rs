//! Address-space identifiers handed out to vCPUs: SVM ASIDs and VMX VPIDs, from one pool
//! type shared by both backends. An [`Id`] returns to its pool when dropped.
//!
//! The tags are per vCPU, not per VM. They tag the guest-linear (and, on SVM, the combined
//! guest-linear to host-physical) translations the CPU caches (APM Vol. 2 §15.16 "TLB
//! Control"; SDM Vol. 3C §29.1 "Virtual Processor Identifiers"), and guest-linear
//! translations are each vCPU's own: two vCPUs of one VM run with different CR3s, so under
//! one tag on one CPU the second would find the first's entries (global pages and all) and
//! a switch between them would need a full flush of the tag. KVM tags per vCPU for the same
//! reason. What is per VM is the second-level map ([`MemoryMap`](super::memory_map::MemoryMap)):
//! EPT's guest-physical translations are tagged by the EPTP, which all of a VM's vCPUs share.

use core::sync::atomic::{AtomicU64, Ordering};

/// A bitmap of identifiers in use; identifier 0 (the host's) is never handed out.
pub(crate) struct IdPool {
    bits: &'static [AtomicU64],
}

impl IdPool {
    /// A pool over `bits` (64 identifiers per word).
    pub(crate) const fn new(bits: &'static [AtomicU64]) -> IdPool {
        IdPool { bits }
    }

    /// The lowest free identifier in `1..limit`, if any.
    pub(crate) fn alloc(&'static self, limit: u32) -> Option<Id> {
        let limit = limit.min(self.bits.len() as u32 * 64);
        for id in 1..limit {
            let (word, bit) = ((id / 64) as usize, id % 64);
            if self.bits[word].fetch_or(1 << bit, Ordering::AcqRel) & (1 << bit) == 0 {
                return Some(Id { pool: self, id });
            }
        }
        None
    }
}

/// An identifier taken from an [`IdPool`]; freed on drop.
pub(crate) struct Id {
    pool: &'static IdPool,
    id: u32,
}

impl Id {
    /// Its value.
    pub(crate) fn get(&self) -> u32 {
        self.id
    }
}

impl core::fmt::Debug for Id {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Id({})", self.id)
    }
}

impl Drop for Id {
    fn drop(&mut self) {
        let (word, bit) = ((self.id / 64) as usize, self.id % 64);
        self.pool.bits[word].fetch_and(!(1 << bit), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BITS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
    static POOL: IdPool = IdPool::new(&BITS);

    #[test]
    fn ids_are_unique_bounded_and_reused() {
        let a = POOL.alloc(4).unwrap();
        let b = POOL.alloc(4).unwrap();
        let c = POOL.alloc(4).unwrap();
        assert_eq!((a.get(), b.get(), c.get()), (1, 2, 3));
        assert!(
            POOL.alloc(4).is_none(),
            "0 is the host's, 4 is past the limit"
        );
        drop(b);
        assert_eq!(
            POOL.alloc(4).unwrap().get(),
            2,
            "a freed id is handed out again"
        );
        // The limit is capped by the pool's size.
        let many: std::vec::Vec<Id> = (0..200).map_while(|_| POOL.alloc(1000)).collect();
        assert_eq!(many.len(), 128 - 3);
        drop((a, c, many));
    }
}
