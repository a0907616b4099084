//! One submission/completion queue pair, polled: the ring arithmetic, the phase tag and the
//! doorbells (NVMe base specification 1.4, §4.1, §4.6, §7.2 "processing completed commands").
//!
//! The driver keeps one command in flight per queue, so the submission queue is never full
//! while the controller works; the head it reports in each completion is still tracked, and
//! a queue that would overflow is refused rather than overwritten.

use core::sync::atomic::{Ordering, fence};

use super::NvmeHardware;
use super::command::{CQE_BYTES, Command, Completion, SQE_BYTES};
use super::dma::DmaMem;
use super::regs::Capabilities;

/// Why a command got no usable completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueFailure {
    /// Every submission slot is still owned by the controller.
    Full,
    /// No completion arrived in time.
    Timeout,
    /// A completion arrived for another command than the one in flight.
    WrongCommand {
        /// The command identifier submitted.
        expected: u16,
        /// The identifier the completion carried.
        got: u16,
    },
}

/// A queue pair: submission ring, completion ring, their indices and doorbells.
pub struct QueuePair {
    /// Queue identifier (0 = admin).
    pub qid: u16,
    entries: u16,
    sq: DmaMem,
    cq: DmaMem,
    sq_tail: u16,
    sq_head: u16,
    cq_head: u16,
    /// The phase tag a new completion carries; flips each time the head wraps.
    phase: bool,
    next_command_id: u16,
    sq_doorbell: usize,
    cq_doorbell: usize,
}

impl QueuePair {
    /// A pair of `entries` slots over `sq` (entries × 64 bytes) and `cq` (entries × 16
    /// bytes), both zeroed here so no stale entry looks like a completion.
    pub fn new(
        qid: u16,
        entries: u16,
        mut sq: DmaMem,
        mut cq: DmaMem,
        caps: &Capabilities,
    ) -> QueuePair {
        debug_assert!(sq.len() >= usize::from(entries) * SQE_BYTES);
        debug_assert!(cq.len() >= usize::from(entries) * CQE_BYTES);
        sq.zero();
        cq.zero();
        QueuePair {
            qid,
            entries,
            sq,
            cq,
            sq_tail: 0,
            sq_head: 0,
            cq_head: 0,
            phase: true,
            next_command_id: 0,
            sq_doorbell: caps.sq_tail_doorbell(qid),
            cq_doorbell: caps.cq_head_doorbell(qid),
        }
    }

    /// Slots in each ring.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Device address of the submission ring.
    pub fn sq_phys(&self) -> u64 {
        self.sq.phys()
    }

    /// Device address of the completion ring.
    pub fn cq_phys(&self) -> u64 {
        self.cq.phys()
    }

    /// The phase tag the next completion will carry (tests watch it flip).
    pub fn phase(&self) -> bool {
        self.phase
    }

    /// Puts `command` in the next slot and rings the tail doorbell; returns its identifier.
    pub fn submit<H: NvmeHardware>(
        &mut self,
        hw: &mut H,
        mut command: Command,
    ) -> Result<u16, QueueFailure> {
        let next_tail = (self.sq_tail + 1) % self.entries;
        if next_tail == self.sq_head {
            return Err(QueueFailure::Full);
        }
        let id = self.next_command_id;
        self.next_command_id = self.next_command_id.wrapping_add(1);
        command.set_command_id(id);
        self.sq
            .write(usize::from(self.sq_tail) * SQE_BYTES, &command.to_bytes());
        self.sq_tail = next_tail;
        // The entry must be in memory before the controller hears of it.
        fence(Ordering::SeqCst);
        hw.write32(self.sq_doorbell, u32::from(self.sq_tail));
        Ok(id)
    }

    /// Polls for the completion of command `id` until `timeout_ms` pass; consumes it and
    /// rings the head doorbell.
    pub fn wait<H: NvmeHardware>(
        &mut self,
        hw: &mut H,
        id: u16,
        timeout_ms: u64,
    ) -> Result<Completion, QueueFailure> {
        let slot = usize::from(self.cq_head) * CQE_BYTES;
        let deadline = hw.deadline_after_ms(timeout_ms);
        loop {
            let dw3 = self.cq.read_u32_volatile(slot + 12);
            if (dw3 & (1 << 16) != 0) == self.phase {
                break;
            }
            if hw.expired(&deadline) {
                return Err(QueueFailure::Timeout);
            }
            core::hint::spin_loop();
        }
        // The rest of the entry (and the data) only after the phase tag said it is there.
        fence(Ordering::Acquire);
        let mut bytes = [0u8; CQE_BYTES];
        self.cq.read(slot, &mut bytes);
        let completion = Completion::from_bytes(&bytes);
        self.cq_head += 1;
        if self.cq_head == self.entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        hw.write32(self.cq_doorbell, u32::from(self.cq_head));
        self.sq_head = completion.sq_head % self.entries;
        if completion.command_id != id {
            return Err(QueueFailure::WrongCommand {
                expected: id,
                got: completion.command_id,
            });
        }
        Ok(completion)
    }
}
