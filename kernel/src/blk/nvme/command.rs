//! Command and completion entries (NVMe base specification 1.4, §4.2, §4.6) and the
//! commands the driver sends: admin Identify, Set Features (Number of Queues), Create I/O
//! Completion/Submission Queue; NVM Read, Write and Flush (NVM command set 1.0, §6).

use core::fmt;

/// Bytes in a submission queue entry.
pub const SQE_BYTES: usize = 64;
/// Bytes in a completion queue entry.
pub const CQE_BYTES: usize = 16;

/// Admin opcodes (§5).
pub mod admin {
    /// Create I/O Submission Queue.
    pub const CREATE_IO_SQ: u8 = 0x01;
    /// Create I/O Completion Queue.
    pub const CREATE_IO_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
}

/// NVM command set opcodes.
pub mod nvm {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
}

/// Identify CNS values (§5.15.1).
pub mod cns {
    /// Identify Namespace data structure for the NSID.
    pub const NAMESPACE: u32 = 0x00;
    /// Identify Controller data structure.
    pub const CONTROLLER: u32 = 0x01;
    /// Active namespace ID list.
    pub const ACTIVE_NAMESPACES: u32 = 0x02;
}

/// Feature identifier of Number of Queues (§5.21.1.7).
pub const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

/// A submission queue entry as sixteen command dwords.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Command {
    /// CDW0..CDW15.
    pub dwords: [u32; 16],
}

impl Command {
    /// A command with `opcode` for namespace `nsid`, command id set later by the queue.
    pub fn new(opcode: u8, nsid: u32) -> Command {
        let mut dwords = [0u32; 16];
        dwords[0] = u32::from(opcode);
        dwords[1] = nsid;
        Command { dwords }
    }

    /// Opcode (CDW0 bits 7:0).
    pub fn opcode(&self) -> u8 {
        self.dwords[0] as u8
    }

    /// Command identifier (CDW0 bits 31:16).
    pub fn command_id(&self) -> u16 {
        (self.dwords[0] >> 16) as u16
    }

    /// Sets the command identifier.
    pub fn set_command_id(&mut self, id: u16) {
        self.dwords[0] = (self.dwords[0] & 0xffff) | (u32::from(id) << 16);
    }

    /// Namespace identifier.
    pub fn nsid(&self) -> u32 {
        self.dwords[1]
    }

    /// PRP entry 1 (CDW6..7).
    pub fn prp1(&self) -> u64 {
        u64::from(self.dwords[6]) | (u64::from(self.dwords[7]) << 32)
    }

    /// PRP entry 2 (CDW8..9).
    pub fn prp2(&self) -> u64 {
        u64::from(self.dwords[8]) | (u64::from(self.dwords[9]) << 32)
    }

    /// Sets both PRP entries (PSDT 0: PRPs, not SGLs).
    pub fn set_prps(&mut self, prp1: u64, prp2: u64) {
        self.dwords[6] = prp1 as u32;
        self.dwords[7] = (prp1 >> 32) as u32;
        self.dwords[8] = prp2 as u32;
        self.dwords[9] = (prp2 >> 32) as u32;
    }

    /// The entry as it is laid out in the submission queue (little-endian dwords).
    pub fn to_bytes(&self) -> [u8; SQE_BYTES] {
        let mut out = [0u8; SQE_BYTES];
        for (chunk, dword) in out.chunks_exact_mut(4).zip(self.dwords) {
            chunk.copy_from_slice(&dword.to_le_bytes());
        }
        out
    }

    /// The entry read back from queue memory (for the device model in tests).
    pub fn from_bytes(bytes: &[u8; SQE_BYTES]) -> Command {
        let mut dwords = [0u32; 16];
        for (dword, chunk) in dwords.iter_mut().zip(bytes.chunks_exact(4)) {
            *dword = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Command { dwords }
    }

    /// Identify with `cns` for `nsid`, into the 4 KiB page at `data`.
    pub fn identify(cns: u32, nsid: u32, data: u64) -> Command {
        let mut c = Command::new(admin::IDENTIFY, nsid);
        c.set_prps(data, 0);
        c.dwords[10] = cns;
        c
    }

    /// Set Features, Number of Queues: one I/O submission and one completion queue.
    pub fn set_one_io_queue_pair() -> Command {
        let mut c = Command::new(admin::SET_FEATURES, 0);
        c.dwords[10] = FEATURE_NUMBER_OF_QUEUES;
        // NCQR and NSQR are zero-based: 0 asks for one of each.
        c.dwords[11] = 0;
        c
    }

    /// Create I/O Completion Queue `qid` of `entries` at `base` (physically contiguous,
    /// interrupts off: the driver polls).
    pub fn create_io_cq(qid: u16, entries: u16, base: u64) -> Command {
        let mut c = Command::new(admin::CREATE_IO_CQ, 0);
        c.set_prps(base, 0);
        c.dwords[10] = (u32::from(entries - 1) << 16) | u32::from(qid);
        c.dwords[11] = 1; // PC = 1, IEN = 0
        c
    }

    /// Create I/O Submission Queue `qid` of `entries` at `base`, completing on `cqid`.
    pub fn create_io_sq(qid: u16, entries: u16, base: u64, cqid: u16) -> Command {
        let mut c = Command::new(admin::CREATE_IO_SQ, 0);
        c.set_prps(base, 0);
        c.dwords[10] = (u32::from(entries - 1) << 16) | u32::from(qid);
        c.dwords[11] = (u32::from(cqid) << 16) | 1; // PC = 1, priority ignored (round robin)
        c
    }

    /// Read or Write of `blocks` (1..=65536) logical blocks from `lba`; PRPs set later.
    pub fn read_write(opcode: u8, nsid: u32, lba: u64, blocks: u32) -> Command {
        let mut c = Command::new(opcode, nsid);
        c.dwords[10] = lba as u32;
        c.dwords[11] = (lba >> 32) as u32;
        c.dwords[12] = blocks.saturating_sub(1) & 0xffff; // NLB is zero-based
        c
    }

    /// Starting LBA of a Read or Write.
    pub fn lba(&self) -> u64 {
        u64::from(self.dwords[10]) | (u64::from(self.dwords[11]) << 32)
    }

    /// Number of logical blocks of a Read or Write.
    pub fn blocks(&self) -> u32 {
        (self.dwords[12] & 0xffff) + 1
    }

    /// Flush of namespace `nsid`'s volatile write cache.
    pub fn flush(nsid: u32) -> Command {
        Command::new(nvm::FLUSH, nsid)
    }

    /// A short name for errors: "Identify", "Read", ….
    pub fn name(&self, admin_queue: bool) -> &'static str {
        match (admin_queue, self.opcode()) {
            (true, admin::IDENTIFY) => "Identify",
            (true, admin::SET_FEATURES) => "Set Features",
            (true, admin::CREATE_IO_CQ) => "Create I/O Completion Queue",
            (true, admin::CREATE_IO_SQ) => "Create I/O Submission Queue",
            (true, _) => "admin command",
            (false, nvm::READ) => "Read",
            (false, nvm::WRITE) => "Write",
            (false, nvm::FLUSH) => "Flush",
            (false, _) => "I/O command",
        }
    }
}

/// A completion queue entry (§4.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// Command-specific result (DW0).
    pub result: u32,
    /// Submission queue head pointer the controller has consumed up to.
    pub sq_head: u16,
    /// Submission queue the command came from.
    pub sq_id: u16,
    /// Command identifier.
    pub command_id: u16,
    /// Phase tag.
    pub phase: bool,
    /// Status field.
    pub status: Status,
}

impl Completion {
    /// Decodes an entry from queue memory.
    pub fn from_bytes(b: &[u8; CQE_BYTES]) -> Completion {
        let dw =
            |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        let dw2 = dw(2);
        let dw3 = dw(3);
        Completion {
            result: dw(0),
            sq_head: dw2 as u16,
            sq_id: (dw2 >> 16) as u16,
            command_id: dw3 as u16,
            phase: dw3 & (1 << 16) != 0,
            status: Status::from_field((dw3 >> 17) as u16),
        }
    }

    /// Encodes an entry (for the device model in tests).
    pub fn to_bytes(&self) -> [u8; CQE_BYTES] {
        let dw3 = u32::from(self.command_id)
            | (u32::from(self.phase) << 16)
            | (u32::from(self.status.to_field()) << 17);
        let mut out = [0u8; CQE_BYTES];
        out[0..4].copy_from_slice(&self.result.to_le_bytes());
        out[8..10].copy_from_slice(&self.sq_head.to_le_bytes());
        out[10..12].copy_from_slice(&self.sq_id.to_le_bytes());
        out[12..16].copy_from_slice(&dw3.to_le_bytes());
        out
    }
}

/// Status code type (§4.6.1.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatusType {
    /// Generic command status.
    #[default]
    Generic,
    /// Command specific status.
    CommandSpecific,
    /// Media and data integrity errors.
    Media,
    /// Path related status.
    Path,
    /// Vendor specific, or a reserved type.
    Other(u8),
}

/// A completion's status field without the phase bit (§4.6.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Status code type.
    pub kind: StatusType,
    /// Status code.
    pub code: u8,
    /// Do Not Retry.
    pub do_not_retry: bool,
}

impl Status {
    /// Success.
    pub const SUCCESS: Status = Status {
        kind: StatusType::Generic,
        code: 0,
        do_not_retry: false,
    };

    /// Decodes bits 15:1 of the completion's status word, shifted down by one.
    pub fn from_field(field: u16) -> Status {
        let kind = match (field >> 8) & 0x7 {
            0 => StatusType::Generic,
            1 => StatusType::CommandSpecific,
            2 => StatusType::Media,
            3 => StatusType::Path,
            other => StatusType::Other(other as u8),
        };
        Status {
            kind,
            code: field as u8,
            do_not_retry: field & (1 << 14) != 0,
        }
    }

    /// Encodes the status as [`Status::from_field`] reads it.
    pub fn to_field(self) -> u16 {
        let kind = match self.kind {
            StatusType::Generic => 0,
            StatusType::CommandSpecific => 1,
            StatusType::Media => 2,
            StatusType::Path => 3,
            StatusType::Other(t) => u16::from(t & 0x7),
        };
        u16::from(self.code) | (kind << 8) | (u16::from(self.do_not_retry) << 14)
    }

    /// Whether the command succeeded.
    pub fn is_success(self) -> bool {
        self.kind == StatusType::Generic && self.code == 0
    }

    /// The specification's name for the common codes.
    pub fn name(self) -> Option<&'static str> {
        Some(match (self.kind, self.code) {
            (StatusType::Generic, 0x00) => "Successful Completion",
            (StatusType::Generic, 0x01) => "Invalid Command Opcode",
            (StatusType::Generic, 0x02) => "Invalid Field in Command",
            (StatusType::Generic, 0x03) => "Command ID Conflict",
            (StatusType::Generic, 0x04) => "Data Transfer Error",
            (StatusType::Generic, 0x05) => "Commands Aborted due to Power Loss Notification",
            (StatusType::Generic, 0x06) => "Internal Error",
            (StatusType::Generic, 0x07) => "Command Abort Requested",
            (StatusType::Generic, 0x08) => "Command Aborted due to SQ Deletion",
            (StatusType::Generic, 0x0b) => "Invalid Namespace or Format",
            (StatusType::Generic, 0x0c) => "Command Sequence Error",
            (StatusType::Generic, 0x13) => "PRP Offset Invalid",
            (StatusType::Generic, 0x80) => "LBA Out of Range",
            (StatusType::Generic, 0x81) => "Capacity Exceeded",
            (StatusType::Generic, 0x82) => "Namespace Not Ready",
            (StatusType::Generic, 0x83) => "Reservation Conflict",
            (StatusType::Generic, 0x84) => "Format In Progress",
            (StatusType::CommandSpecific, 0x00) => "Completion Queue Invalid",
            (StatusType::CommandSpecific, 0x01) => "Invalid Queue Identifier",
            (StatusType::CommandSpecific, 0x02) => "Invalid Queue Size",
            (StatusType::CommandSpecific, 0x08) => "Invalid Interrupt Vector",
            (StatusType::CommandSpecific, 0x80) => "Conflicting Attributes",
            (StatusType::CommandSpecific, 0x81) => "Invalid Protection Information",
            (StatusType::CommandSpecific, 0x82) => "Attempted Write to Read Only Range",
            (StatusType::Media, 0x80) => "Write Fault",
            (StatusType::Media, 0x81) => "Unrecovered Read Error",
            (StatusType::Media, 0x82) => "End-to-end Guard Check Error",
            (StatusType::Media, 0x83) => "End-to-end Application Tag Check Error",
            (StatusType::Media, 0x84) => "End-to-end Reference Tag Check Error",
            (StatusType::Media, 0x85) => "Compare Failure",
            (StatusType::Media, 0x86) => "Access Denied",
            (StatusType::Media, 0x87) => "Deallocated or Unwritten Logical Block",
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StatusType::Generic => 0,
            StatusType::CommandSpecific => 1,
            StatusType::Media => 2,
            StatusType::Path => 3,
            StatusType::Other(t) => t,
        };
        match self.name() {
            Some(name) => write!(f, "{name} (SCT {kind:#x}, SC {:#04x})", self.code)?,
            None => write!(f, "status SCT {kind:#x}, SC {:#04x}", self.code)?,
        }
        if self.do_not_retry {
            f.write_str(", do not retry")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_layout() {
        let mut c = Command::read_write(nvm::WRITE, 1, 0x1_2345_6789, 8);
        c.set_command_id(0xbeef);
        c.set_prps(0x1000_2000, 0xaaaa_bbbb_c000);
        let bytes = c.to_bytes();
        assert_eq!(bytes[0], 0x01);
        assert_eq!(&bytes[2..4], &[0xef, 0xbe]);
        assert_eq!(&bytes[4..8], &1u32.to_le_bytes());
        assert_eq!(&bytes[24..32], &0x1000_2000u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &0xaaaa_bbbb_c000u64.to_le_bytes());
        assert_eq!(&bytes[40..48], &0x1_2345_6789u64.to_le_bytes());
        assert_eq!(&bytes[48..52], &7u32.to_le_bytes());
        let back = Command::from_bytes(&bytes);
        assert_eq!(back, c);
        assert_eq!(
            (back.lba(), back.blocks(), back.command_id()),
            (0x1_2345_6789, 8, 0xbeef)
        );
    }

    #[test]
    fn queue_creation_fields() {
        let cq = Command::create_io_cq(1, 64, 0x5000);
        assert_eq!(cq.dwords[10], (63 << 16) | 1);
        assert_eq!(cq.dwords[11], 1);
        let sq = Command::create_io_sq(1, 64, 0x6000, 1);
        assert_eq!(sq.dwords[11], (1 << 16) | 1);
        assert_eq!(sq.prp1(), 0x6000);
    }

    #[test]
    fn completion_round_trip_and_status_names() {
        let cqe = Completion {
            result: 7,
            sq_head: 5,
            sq_id: 1,
            command_id: 42,
            phase: true,
            status: Status {
                kind: StatusType::Media,
                code: 0x81,
                do_not_retry: true,
            },
        };
        let bytes = cqe.to_bytes();
        // Phase is bit 16 of DW3; SC starts at bit 17, SCT at bit 25, DNR at bit 31.
        let dw3 = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        assert_eq!(dw3, 42 | (1 << 16) | (0x81 << 17) | (2 << 25) | (1 << 31));
        assert_eq!(Completion::from_bytes(&bytes), cqe);
        assert_eq!(
            alloc::format!("{}", cqe.status),
            "Unrecovered Read Error (SCT 0x2, SC 0x81), do not retry"
        );
        let unknown = Status {
            kind: StatusType::Other(7),
            code: 0x42,
            do_not_retry: false,
        };
        assert_eq!(alloc::format!("{unknown}"), "status SCT 0x7, SC 0x42");
        assert!(Status::SUCCESS.is_success());
        assert!(!unknown.is_success());
    }
}
