//! Address-space identifiers for vCPUs: SVM ASIDs and VMX VPIDs, handed out per host CPU
//! with a generation counter, as KVM does.
//!
//! The tags are per vCPU, not per VM. They tag the guest-linear (and, on SVM, the combined
//! guest-linear to host-physical) translations the CPU caches (APM Vol. 2 §15.16 "TLB
//! Control"; SDM Vol. 3C §29.1 "Virtual Processor Identifiers"), and guest-linear
//! translations are each vCPU's own: two vCPUs of one VM run with different CRs, so under
//! one tag on one CPU the second would find the first's entries (global pages and all) and
//! a switch between them would need a full flush of the tag. What is per VM is the
//! second-level map ([`MemoryMap`](super::memory_map::MemoryMap)): EPT's guest-physical
//! translations are tagged by the EPTP, which all of a VM's vCPUs share.
//!
//! # Generations
//!
//! A TLB is per CPU, so a tag only has to be unique among the vCPUs that run on one CPU
//! between two full flushes of that CPU's guest TLB. Each CPU therefore hands out its tags
//! in order (`1`, `2`, … up to the CPU's limit) and never takes one back; when they run out,
//! the CPU's generation goes up, the next entry on that CPU flushes every guest tag there,
//! and the vCPUs entering afterwards get tags of the new generation, again from `1`. A vCPU
//! remembers the CPU and generation of its tag and asks for a new one when either changed
//! ([`IdSpace::assign`] before every entry). So the number of vCPUs is bounded by memory,
//! not by the CPU's ASID count (QEMU's TCG offers 15 guest ASIDs).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::host::MAX_HOST_CPUS;

/// One host CPU's tag state. Only that CPU changes it (between two of its own entries, with
/// no guest running there), so plain loads and stores suffice; the atomics make the static
/// shareable.
struct CpuIds {
    /// The current generation; 0 until the CPU hands out its first tag.
    generation: AtomicU64,
    /// The next tag to hand out in this generation.
    next: AtomicU32,
    /// Every guest tag on this CPU must be flushed at its next entry (a generation began and
    /// no entry has flushed since).
    flush_pending: AtomicBool,
}

/// The tag state of every host CPU, for one kind of tag (ASIDs or VPIDs).
pub(crate) struct IdSpace {
    cpus: [CpuIds; MAX_HOST_CPUS],
}

/// What a vCPU holds: the tag and where (CPU, generation) it is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VcpuId {
    cpu: usize,
    generation: u64,
    id: u32,
}

/// What [`IdSpace::assign`] tells the backend before an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Assignment {
    /// The tag to enter with.
    pub id: u32,
    /// A tag was assigned for this entry (the vCPU's first here, or its old one is no longer
    /// valid): write it to the VMCB/VMCS. A fresh tag holds no translations on this CPU.
    pub fresh: bool,
    /// The vCPU last ran on another CPU (or never ran): translations it cached elsewhere are
    /// not here, but this CPU may hold stale second-level ones from before (VMX flushes the
    /// EPTP then).
    pub moved: bool,
    /// Flush every guest tag on this CPU with this entry, then call
    /// [`IdSpace::flushed`].
    pub flush_all: bool,
}

/// Why no tag could be handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdError {
    /// The host CPU index is past [`MAX_HOST_CPUS`].
    CpuOutOfRange(usize),
    /// The CPU offers no guest tag at all (its limit is below 2; 0 is the host's).
    NoGuestIds,
}

impl VcpuId {
    /// A vCPU that has not run yet: its first entry assigns a tag.
    pub(crate) const fn unassigned() -> VcpuId {
        VcpuId {
            cpu: usize::MAX,
            generation: 0,
            id: 0,
        }
    }

    /// The tag last assigned (0 before the first entry).
    pub(crate) fn get(&self) -> u32 {
        self.id
    }

    /// The host CPU it was assigned on, if any.
    #[cfg(test)]
    pub(crate) fn cpu(&self) -> Option<usize> {
        (self.cpu != usize::MAX).then_some(self.cpu)
    }
}

impl IdSpace {
    /// Every CPU at generation 0 (no tag handed out yet).
    pub(crate) const fn new() -> IdSpace {
        IdSpace {
            cpus: [const {
                CpuIds {
                    generation: AtomicU64::new(0),
                    next: AtomicU32::new(1),
                    flush_pending: AtomicBool::new(false),
                }
            }; MAX_HOST_CPUS],
        }
    }

    /// The tag `vcpu` enters with on `cpu`, whose guest tags are `1..limit`. Called on `cpu`
    /// itself before each entry; keeps the vCPU's tag while it is still valid there.
    pub(crate) fn assign(
        &self,
        vcpu: &mut VcpuId,
        cpu: usize,
        limit: u32,
    ) -> Result<Assignment, IdError> {
        let state = self.cpus.get(cpu).ok_or(IdError::CpuOutOfRange(cpu))?;
        if limit < 2 {
            return Err(IdError::NoGuestIds);
        }
        let moved = vcpu.cpu != cpu;
        let mut generation = state.generation.load(Ordering::Relaxed);
        let fresh = moved || vcpu.generation != generation;
        if fresh {
            let mut next = state.next.load(Ordering::Relaxed);
            if generation == 0 || next >= limit {
                // The tags of this generation are all out (or none was ever handed out):
                // a new generation starts with a full flush of this CPU's guest TLB.
                generation += 1;
                next = 1;
                state.generation.store(generation, Ordering::Relaxed);
                // The first generation starts on a CPU where no guest ran: nothing to flush.
                if generation > 1 {
                    state.flush_pending.store(true, Ordering::Relaxed);
                }
            }
            state.next.store(next + 1, Ordering::Relaxed);
            *vcpu = VcpuId {
                cpu,
                generation,
                id: next,
            };
        }
        Ok(Assignment {
            id: vcpu.id,
            fresh,
            moved,
            flush_all: state.flush_pending.load(Ordering::Relaxed),
        })
    }

    /// The full flush [`Assignment::flush_all`] asked for is done on `cpu`.
    pub(crate) fn flushed(&self, cpu: usize) {
        if let Some(state) = self.cpus.get(cpu) {
            state.flush_pending.store(false, Ordering::Relaxed);
        }
    }

    /// `cpu`'s current generation (0 before its first tag).
    #[cfg(test)]
    pub(crate) fn generation(&self, cpu: usize) -> u64 {
        self.cpus
            .get(cpu)
            .map_or(0, |s| s.generation.load(Ordering::Relaxed))
    }
}

impl core::fmt::Display for IdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IdError::CpuOutOfRange(cpu) => write!(
                f,
                "host CPU {cpu} is past the {MAX_HOST_CPUS} CPUs the address-space ID table covers"
            ),
            IdError::NoGuestIds => f.write_str(
                "the CPU offers no address-space ID for guests (its ASID count is below 2)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    fn space() -> Box<IdSpace> {
        Box::new(IdSpace::new())
    }

    #[test]
    fn first_entries_get_distinct_ids_without_a_flush() {
        let ids = space();
        let mut a = VcpuId::unassigned();
        let mut b = VcpuId::unassigned();
        let ea = ids.assign(&mut a, 0, 16).unwrap();
        let eb = ids.assign(&mut b, 0, 16).unwrap();
        assert_eq!((ea.id, eb.id), (1, 2));
        assert!(ea.fresh && ea.moved && !ea.flush_all);
        assert!(
            !eb.flush_all,
            "no guest ran on the CPU before: nothing to flush"
        );
        // Entering again on the same CPU keeps the tag.
        let again = ids.assign(&mut a, 0, 16).unwrap();
        assert_eq!(again.id, 1);
        assert!(!again.fresh && !again.moved && !again.flush_all);
    }

    #[test]
    fn rollover_bumps_the_generation_and_flushes_once() {
        let ids = space();
        // Limit 4: tags 1, 2, 3 per generation.
        let mut vcpus = [VcpuId::unassigned(); 5];
        let tags: Vec<u32> = vcpus[..3]
            .iter_mut()
            .map(|v| ids.assign(v, 0, 4).unwrap().id)
            .collect();
        assert_eq!(tags, [1, 2, 3]);
        assert_eq!(ids.generation(0), 1);
        // The fourth vCPU starts generation 2 with tag 1 and a full flush.
        let fourth = ids.assign(&mut vcpus[3], 0, 4).unwrap();
        assert_eq!((fourth.id, fourth.flush_all), (1, true));
        assert_eq!(ids.generation(0), 2);
        // Until an entry reports the flush done, every entry on the CPU flushes.
        assert!(ids.assign(&mut vcpus[4], 0, 4).unwrap().flush_all);
        ids.flushed(0);
        // vCPU 0 held tag 1 in generation 1: it gets a fresh tag of generation 2, and no
        // flush is left to do.
        let first = ids.assign(&mut vcpus[0], 0, 4).unwrap();
        assert_eq!(first.id, 3);
        assert!(first.fresh && !first.moved && !first.flush_all);
    }

    /// Many vCPUs taking turns on one CPU with few tags: at every point, the vCPUs whose
    /// tags are valid in the CPU's current generation hold distinct tags, and every tag
    /// reused after a rollover comes after a full flush.
    #[test]
    fn no_two_vcpus_share_a_tag_within_a_generation() {
        let ids = space();
        let limit = 5;
        let mut vcpus = [VcpuId::unassigned(); 20];
        let mut flushes = 0;
        for round in 0..200usize {
            // An irregular order, so some vCPUs keep their tag across turns.
            let i = (round * 7 + round / 3) % vcpus.len();
            let entry = ids.assign(&mut vcpus[i], 0, limit).unwrap();
            assert!(entry.id >= 1 && entry.id < limit);
            if entry.flush_all {
                flushes += 1;
                ids.flushed(0);
            }
            let generation = ids.generation(0);
            let mut live: Vec<u32> = vcpus
                .iter()
                .filter(|v| v.cpu == 0 && v.generation == generation)
                .map(|v| v.id)
                .collect();
            let count = live.len();
            live.sort_unstable();
            live.dedup();
            assert_eq!(
                live.len(),
                count,
                "round {round}: two live vCPUs share a tag"
            );
        }
        assert_eq!(flushes as u64, ids.generation(0) - 1);
        assert!(flushes > 10, "20 vCPUs over 4 tags roll over often");
    }

    #[test]
    fn tags_are_per_cpu_and_a_move_reassigns() {
        let ids = space();
        let mut a = VcpuId::unassigned();
        let mut b = VcpuId::unassigned();
        assert_eq!(ids.assign(&mut a, 0, 16).unwrap().id, 1);
        // Another CPU hands out its own tags, from 1.
        assert_eq!(ids.assign(&mut b, 1, 16).unwrap().id, 1);
        // a moves to CPU 1: a new tag there, marked as a move.
        let moved = ids.assign(&mut a, 1, 16).unwrap();
        assert_eq!((moved.id, moved.moved), (2, true));
        assert_eq!(a.cpu(), Some(1));
        // And back to CPU 0: not its old tag 1 (it may be stale there), the next one.
        let back = ids.assign(&mut a, 0, 16).unwrap();
        assert_eq!((back.id, back.moved, back.fresh), (2, true, true));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ids = space();
        let mut a = VcpuId::unassigned();
        assert_eq!(
            ids.assign(&mut a, MAX_HOST_CPUS, 16),
            Err(IdError::CpuOutOfRange(MAX_HOST_CPUS))
        );
        assert_eq!(ids.assign(&mut a, 0, 1), Err(IdError::NoGuestIds));
        assert_eq!(a, VcpuId::unassigned());
    }
}
