//! Controller registers (NVMe base specification 1.4, §3.1): offsets, the fields of CAP, CC
//! and CSTS the driver uses, and the doorbell layout.

/// Controller Capabilities (64 bits).
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Interrupt Mask Set: every vector masked, the driver polls.
pub const INTMS: usize = 0x0c;
/// Controller Configuration.
pub const CC: usize = 0x14;
/// Controller Status.
pub const CSTS: usize = 0x1c;
/// Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue base address (64 bits).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue base address (64 bits).
pub const ACQ: usize = 0x30;
/// First doorbell (submission queue 0 tail).
pub const DOORBELL_BASE: usize = 0x1000;

/// CSTS bits.
pub mod csts {
    /// Ready: the controller processes commands.
    pub const RDY: u32 = 1 << 0;
    /// Controller Fatal Status.
    pub const CFS: u32 = 1 << 1;
}

/// CC bits.
pub mod cc {
    /// Enable.
    pub const EN: u32 = 1 << 0;
    /// I/O submission queue entry size, log2 (64 bytes), bits 19:16.
    pub const IOSQES_64: u32 = 6 << 16;
    /// I/O completion queue entry size, log2 (16 bytes), bits 23:20.
    pub const IOCQES_16: u32 = 4 << 20;
}

/// The controller configuration Keel enables with: NVM command set (CSS 0), 4 KiB memory
/// pages (MPS 0), round-robin arbitration, 64-byte SQ and 16-byte CQ entries.
pub const CC_ENABLE: u32 = cc::EN | cc::IOSQES_64 | cc::IOCQES_16;

/// The memory page size Keel configures (CC.MPS = 0): 4 KiB.
pub const PAGE_SIZE: usize = 4096;

/// The fields of CAP the driver needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Maximum Queue Entries Supported, as entries (CAP.MQES is zero-based).
    pub max_queue_entries: u32,
    /// Doorbell stride in bytes (4 << CAP.DSTRD).
    pub doorbell_stride: usize,
    /// Worst-case time for CSTS.RDY to follow CC.EN, in ms (CAP.TO × 500 ms).
    pub ready_timeout_ms: u64,
    /// Whether the NVM command set is supported (CAP.CSS bit 0).
    pub nvm_command_set: bool,
    /// Smallest memory page size, in bytes (2 ^ (12 + CAP.MPSMIN)).
    pub min_page_bytes: u64,
    /// Largest memory page size, in bytes (2 ^ (12 + CAP.MPSMAX)).
    pub max_page_bytes: u64,
}

impl Capabilities {
    /// Decodes CAP (§3.1.1).
    pub fn decode(cap: u64) -> Capabilities {
        let field = |shift: u32, bits: u32| (cap >> shift) & ((1u64 << bits) - 1);
        Capabilities {
            max_queue_entries: field(0, 16) as u32 + 1,
            doorbell_stride: 4usize << field(32, 4),
            // A controller reporting 0 still needs some time: allow one 500 ms unit.
            ready_timeout_ms: field(24, 8).max(1) * 500,
            nvm_command_set: field(37, 8) & 1 != 0,
            min_page_bytes: 1u64 << (12 + field(48, 4)),
            max_page_bytes: 1u64 << (12 + field(52, 4)),
        }
    }

    /// Offset of submission queue `qid`'s tail doorbell.
    pub fn sq_tail_doorbell(&self, qid: u16) -> usize {
        DOORBELL_BASE + 2 * usize::from(qid) * self.doorbell_stride
    }

    /// Offset of completion queue `qid`'s head doorbell.
    pub fn cq_head_doorbell(&self, qid: u16) -> usize {
        DOORBELL_BASE + (2 * usize::from(qid) + 1) * self.doorbell_stride
    }
}

/// AQA for admin queues of `sq_entries` and `cq_entries` (both zero-based in the register).
pub fn admin_queue_attributes(sq_entries: u16, cq_entries: u16) -> u32 {
    (u32::from(cq_entries - 1) << 16) | u32::from(sq_entries - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_qemu_cap() {
        // QEMU 7.2's nvme: MQES 0x7ff, CQR, TO 0xf, CSS NVM (+ admin-only bit 7), MPSMAX 4.
        let cap = 0x7ff | (1 << 16) | (0xf << 24) | (0x81u64 << 37) | (4u64 << 52);
        let caps = Capabilities::decode(cap);
        assert_eq!(caps.max_queue_entries, 0x800);
        assert_eq!(caps.doorbell_stride, 4);
        assert_eq!(caps.ready_timeout_ms, 7500);
        assert!(caps.nvm_command_set);
        assert_eq!(caps.min_page_bytes, 4096);
        assert_eq!(caps.max_page_bytes, 65536);
        assert_eq!(caps.sq_tail_doorbell(1), 0x1008);
        assert_eq!(caps.cq_head_doorbell(1), 0x100c);
    }

    #[test]
    fn stride_and_zero_timeout() {
        let caps = Capabilities::decode(3u64 << 32);
        assert_eq!(caps.doorbell_stride, 32);
        assert_eq!(caps.cq_head_doorbell(0), 0x1020);
        assert_eq!(caps.sq_tail_doorbell(1), 0x1040);
        assert_eq!(caps.ready_timeout_ms, 500);
        assert!(!caps.nvm_command_set);
        assert_eq!(caps.max_queue_entries, 1);
    }

    #[test]
    fn admin_attributes_are_zero_based() {
        assert_eq!(admin_queue_attributes(32, 16), (15 << 16) | 31);
    }
}
