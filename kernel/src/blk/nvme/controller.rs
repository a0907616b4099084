//! Bringing a controller up and moving sectors, over [`NvmeHardware`] so host tests drive a
//! model of the device.
//!
//! Bring-up follows NVMe base specification 1.4 §7.6.1: check CAP, disable (CC.EN = 0 and
//! wait for CSTS.RDY = 0), program AQA/ASQ/ACQ, enable and wait for CSTS.RDY = 1 (both within
//! CAP.TO), Identify the controller, pick the first active namespace and Identify it, ask for
//! one I/O queue pair (Set Features, Number of Queues) and create its completion and
//! submission queues. Every wait has a deadline; CSTS.CFS ends a wait at once.
//!
//! Data moves through one bounce buffer of [`BOUNCE_BYTES`]: the `Disk` trait's buffers have
//! any alignment, PRP1 needs four bytes, and a page-aligned buffer keeps every PRP list short.

use alloc::format;
use alloc::string::{String, ToString};

use super::NvmeHardware;
use super::command::{CQE_BYTES, Command, SQE_BYTES, Status, cns, nvm};
use super::dma::DmaMem;
use super::identify::{self, ControllerInfo, IDENTIFY_BYTES, NamespaceInfo};
use super::prp::{self, ENTRIES_PER_LIST};
use super::queue::{QueueFailure, QueuePair};
use super::regs::{self, Capabilities, csts};
use crate::blk::disk::{Disk, DiskError, DiskOp, SECTOR, check_range};

/// Admin queue slots (the controller may offer fewer: CAP.MQES).
pub const ADMIN_ENTRIES: u16 = 32;
/// I/O queue slots (likewise bounded by CAP.MQES).
pub const IO_ENTRIES: u16 = 64;
/// Bytes of the bounce buffer: the most one command moves (unless MDTS says less).
pub const BOUNCE_BYTES: usize = 256 * 1024;
/// How long an admin command may take.
pub const ADMIN_TIMEOUT_MS: u64 = 5_000;
/// How long a Read, Write or Flush may take (a disk retrying a bad sector takes seconds).
pub const IO_TIMEOUT_MS: u64 = 30_000;

/// Why a controller could not be brought up, or a command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NvmeError {
    /// CAP lacks the NVM command set.
    #[error("controller does not support the NVM command set (CAP.CSS bit 0 clear)")]
    NoNvmCommandSet,
    /// CAP.MPSMIN is above the 4 KiB pages Keel uses.
    #[error("controller needs memory pages of at least {0} bytes; Keel uses 4096")]
    PageSize(u64),
    /// CSTS.RDY stayed 1 after CC.EN was cleared.
    #[error("controller did not stop after {0} ms (CSTS.RDY stayed 1 after CC.EN=0)")]
    NotDisabled(u64),
    /// CSTS.RDY stayed 0 after CC.EN was set.
    #[error("controller not ready after {0} ms (CSTS.RDY=0)")]
    NotReady(u64),
    /// The controller reported a fatal error.
    #[error("controller fatal status (CSTS.CFS=1) {0}")]
    Fatal(&'static str),
    /// Frames for queues or buffers were short.
    #[error("out of memory for NVMe queues and buffers")]
    OutOfMemory,
    /// A command completed with an error status.
    #[error("{command} failed: {status}")]
    CommandFailed {
        /// Which command.
        command: &'static str,
        /// The completion's status.
        status: Status,
    },
    /// A command got no completion in time.
    #[error("{command} timed out after {ms} ms (no completion)")]
    CommandTimeout {
        /// Which command.
        command: &'static str,
        /// How long the driver waited.
        ms: u64,
    },
    /// The controller reported a completion for another command.
    #[error("{command}: completion for command id {got}, expected {expected}")]
    WrongCompletion {
        /// Which command.
        command: &'static str,
        /// The identifier in flight.
        expected: u16,
        /// The identifier completed.
        got: u16,
    },
    /// The submission queue had no free slot.
    #[error("{0}: submission queue full (controller stopped consuming entries)")]
    QueueFull(&'static str),
    /// No namespace is active.
    #[error("no active namespace (the controller has {0} namespace slots, none attached)")]
    NoNamespace(u32),
    /// Identify Namespace data Keel cannot use.
    #[error("namespace {0}: Identify Namespace reports an invalid LBA format")]
    BadFormat(u32),
    /// The namespace's sectors are not 512 bytes.
    #[error(
        "namespace {nsid} uses {bytes}-byte sectors; Keel handles only 512-byte sectors (reformat the namespace to a 512-byte LBA format)"
    )]
    SectorSize {
        /// Namespace ID.
        nsid: u32,
        /// Bytes per logical block.
        bytes: u64,
    },
    /// The namespace's format carries per-sector metadata.
    #[error(
        "namespace {nsid} has {bytes} bytes of metadata per sector; Keel handles only formats without metadata"
    )]
    Metadata {
        /// Namespace ID.
        nsid: u32,
        /// Metadata bytes per logical block.
        bytes: u16,
    },
    /// An earlier timeout left the queues in an unknown state.
    #[error("controller unusable after an earlier error: {0}")]
    Unusable(String),
}

/// A controller that is up, with the namespace Keel drives.
pub struct Controller<H: NvmeHardware> {
    hw: H,
    caps: Capabilities,
    /// The admin queues: never used after bring-up, but ASQ/ACQ still point at their memory,
    /// so it must outlive the controller's enabled state.
    _admin: QueuePair,
    io: QueuePair,
    info: ControllerInfo,
    nsid: u32,
    namespace: NamespaceInfo,
    bounce: DmaMem,
    prp_list: DmaMem,
    max_sectors: u32,
    /// Set by a timeout or a stray completion: every later request fails with it.
    broken: Option<String>,
}

fn read_cap<H: NvmeHardware>(hw: &mut H) -> u64 {
    u64::from(hw.read32(regs::CAP)) | (u64::from(hw.read32(regs::CAP + 4)) << 32)
}

fn write64<H: NvmeHardware>(hw: &mut H, offset: usize, value: u64) {
    hw.write32(offset, value as u32);
    hw.write32(offset + 4, (value >> 32) as u32);
}

/// Polls CSTS until RDY equals `ready`; CFS ends the wait with an error.
fn wait_ready<H: NvmeHardware>(hw: &mut H, ready: bool, timeout_ms: u64) -> Result<(), NvmeError> {
    let deadline = hw.deadline_after_ms(timeout_ms);
    loop {
        let status = hw.read32(regs::CSTS);
        // All ones: the device is gone from the bus (surprise removal, dead link).
        if status != u32::MAX && (status & csts::RDY != 0) == ready {
            return Ok(());
        }
        if ready && status != u32::MAX && status & csts::CFS != 0 {
            return Err(NvmeError::Fatal("while enabling"));
        }
        if hw.expired(&deadline) {
            return Err(if ready {
                NvmeError::NotReady(timeout_ms)
            } else {
                NvmeError::NotDisabled(timeout_ms)
            });
        }
        core::hint::spin_loop();
    }
}

fn alloc<H: NvmeHardware>(hw: &mut H, bytes: usize) -> Result<DmaMem, NvmeError> {
    hw.alloc_dma(bytes).ok_or(NvmeError::OutOfMemory)
}

/// Submits `command` on `queue` and waits for it; a failed status is an error.
fn run<H: NvmeHardware>(
    hw: &mut H,
    queue: &mut QueuePair,
    command: Command,
    timeout_ms: u64,
) -> Result<u32, NvmeError> {
    let name = command.name(queue.qid == 0);
    let id = queue
        .submit(hw, command)
        .map_err(|e| queue_error(name, e, timeout_ms))?;
    let completion = queue
        .wait(hw, id, timeout_ms)
        .map_err(|e| queue_error(name, e, timeout_ms))?;
    if completion.status.is_success() {
        Ok(completion.result)
    } else {
        Err(NvmeError::CommandFailed {
            command: name,
            status: completion.status,
        })
    }
}

fn queue_error(command: &'static str, failure: QueueFailure, ms: u64) -> NvmeError {
    match failure {
        QueueFailure::Full => NvmeError::QueueFull(command),
        QueueFailure::Timeout => NvmeError::CommandTimeout { command, ms },
        QueueFailure::WrongCommand { expected, got } => NvmeError::WrongCompletion {
            command,
            expected,
            got,
        },
    }
}

impl<H: NvmeHardware> Controller<H> {
    /// Brings the controller behind `hw` up and selects its first active namespace.
    pub fn bring_up(mut hw: H) -> Result<Controller<H>, NvmeError> {
        let caps = Capabilities::decode(read_cap(&mut hw));
        if !caps.nvm_command_set {
            return Err(NvmeError::NoNvmCommandSet);
        }
        if caps.min_page_bytes > regs::PAGE_SIZE as u64 {
            return Err(NvmeError::PageSize(caps.min_page_bytes));
        }
        let queue_limit = caps.max_queue_entries.min(u32::from(u16::MAX)) as u16;
        let admin_entries = ADMIN_ENTRIES.min(queue_limit).max(2);
        let io_entries = IO_ENTRIES.min(queue_limit).max(2);

        // Firmware (SeaBIOS, OVMF) may have left the controller enabled with its own queues.
        if hw.read32(regs::CC) & regs::cc::EN != 0 || hw.read32(regs::CSTS) & csts::RDY != 0 {
            hw.write32(regs::CC, 0);
        }
        wait_ready(&mut hw, false, caps.ready_timeout_ms)?;

        let admin_sq = alloc(&mut hw, usize::from(admin_entries) * SQE_BYTES)?;
        let admin_cq = alloc(&mut hw, usize::from(admin_entries) * CQE_BYTES)?;
        let mut admin = QueuePair::new(0, admin_entries, admin_sq, admin_cq, &caps);
        let io_sq = alloc(&mut hw, usize::from(io_entries) * SQE_BYTES)?;
        let io_cq = alloc(&mut hw, usize::from(io_entries) * CQE_BYTES)?;
        let io = QueuePair::new(1, io_entries, io_sq, io_cq, &caps);
        let mut bounce = alloc(&mut hw, BOUNCE_BYTES)?;
        let prp_list = alloc(&mut hw, regs::PAGE_SIZE)?;

        hw.write32(regs::INTMS, u32::MAX);
        hw.write32(
            regs::AQA,
            regs::admin_queue_attributes(admin_entries, admin_entries),
        );
        write64(&mut hw, regs::ASQ, admin.sq_phys());
        write64(&mut hw, regs::ACQ, admin.cq_phys());
        hw.write32(regs::CC, regs::CC_ENABLE);
        wait_ready(&mut hw, true, caps.ready_timeout_ms)?;

        let mut page = [0u8; IDENTIFY_BYTES];
        let mut identify = |hw: &mut H, admin: &mut QueuePair, cns: u32, nsid: u32| {
            bounce.zero_prefix(IDENTIFY_BYTES);
            run(
                hw,
                admin,
                Command::identify(cns, nsid, bounce.phys()),
                ADMIN_TIMEOUT_MS,
            )?;
            bounce.read(0, &mut page);
            Ok::<_, NvmeError>(page)
        };
        let info = ControllerInfo::parse(&identify(&mut hw, &mut admin, cns::CONTROLLER, 0)?);
        let nsid = match identify(&mut hw, &mut admin, cns::ACTIVE_NAMESPACES, 0) {
            Ok(list) => identify::active_namespaces(&list).first().copied(),
            // NVMe 1.0 controllers lack CNS 02h: fall back to namespace 1, which must then exist.
            Err(NvmeError::CommandFailed { .. }) if info.namespaces > 0 => Some(1),
            Err(e) => return Err(e),
        }
        .ok_or(NvmeError::NoNamespace(info.namespaces))?;
        let namespace = NamespaceInfo::parse(&identify(&mut hw, &mut admin, cns::NAMESPACE, nsid)?)
            .ok_or(NvmeError::BadFormat(nsid))?;
        if namespace.block_bytes != SECTOR as u64 {
            return Err(NvmeError::SectorSize {
                nsid,
                bytes: namespace.block_bytes,
            });
        }
        if namespace.metadata_bytes != 0 {
            return Err(NvmeError::Metadata {
                nsid,
                bytes: namespace.metadata_bytes,
            });
        }

        run(
            &mut hw,
            &mut admin,
            Command::set_one_io_queue_pair(),
            ADMIN_TIMEOUT_MS,
        )?;
        run(
            &mut hw,
            &mut admin,
            Command::create_io_cq(1, io_entries, io.cq_phys()),
            ADMIN_TIMEOUT_MS,
        )?;
        run(
            &mut hw,
            &mut admin,
            Command::create_io_sq(1, io_entries, io.sq_phys(), 1),
            ADMIN_TIMEOUT_MS,
        )?;

        let limit = info
            .max_transfer_bytes(caps.min_page_bytes)
            .map_or(BOUNCE_BYTES, |mdts| (mdts as usize).min(BOUNCE_BYTES));
        let max_sectors = (limit / SECTOR).max(1) as u32;
        Ok(Controller {
            hw,
            caps,
            _admin: admin,
            io,
            info,
            nsid,
            namespace,
            bounce,
            prp_list,
            max_sectors,
            broken: None,
        })
    }

    /// What Identify Controller said.
    pub fn info(&self) -> &ControllerInfo {
        &self.info
    }

    /// The namespace in use.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    /// Whether the namespace is write-protected.
    pub fn read_only(&self) -> bool {
        self.namespace.write_protected
    }

    /// Most sectors one command moves.
    pub fn max_sectors(&self) -> u32 {
        self.max_sectors
    }

    /// The capabilities the controller reported.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The hardware (tests inspect the device model through it).
    pub fn hardware(&mut self) -> &mut H {
        &mut self.hw
    }

    /// The I/O queue pair (tests watch its phase).
    pub fn io_queue(&self) -> &QueuePair {
        &self.io
    }

    /// Runs one I/O command; a lost or stray completion makes the controller unusable.
    fn io_command(&mut self, command: Command) -> Result<(), NvmeError> {
        if let Some(reason) = &self.broken {
            return Err(NvmeError::Unusable(reason.clone()));
        }
        if self.hw.read32(regs::CSTS) & csts::CFS == csts::CFS {
            let e = NvmeError::Fatal("during I/O");
            self.broken = Some(e.to_string());
            return Err(e);
        }
        match run(&mut self.hw, &mut self.io, command, IO_TIMEOUT_MS) {
            Err(
                e @ (NvmeError::CommandTimeout { .. }
                | NvmeError::WrongCompletion { .. }
                | NvmeError::QueueFull(_)),
            ) => {
                self.broken = Some(e.to_string());
                Err(e)
            }
            other => other.map(|_| ()),
        }
    }

    /// Moves `sectors` from `lba` between the bounce buffer and the device in one command.
    fn transfer_chunk(&mut self, opcode: u8, lba: u64, sectors: u32) -> Result<(), NvmeError> {
        let bytes = sectors as usize * SECTOR;
        let mut list = [0u64; ENTRIES_PER_LIST];
        let prps = prp::build(self.bounce.phys(), bytes, &mut list, self.prp_list.phys())
            .map_err(|e| NvmeError::Unusable(format!("PRP set-up: {e}")))?;
        if prps.list_entries > 0 {
            let mut raw = [0u8; regs::PAGE_SIZE];
            for (chunk, entry) in raw.chunks_exact_mut(8).zip(&list[..prps.list_entries]) {
                chunk.copy_from_slice(&entry.to_le_bytes());
            }
            self.prp_list.write(0, &raw[..prps.list_entries * 8]);
        }
        let mut command = Command::read_write(opcode, self.nsid, lba, sectors);
        command.set_prps(prps.prp1, prps.prp2);
        self.io_command(command)
    }
}

fn disk_error(op: DiskOp, lba: u64, e: NvmeError) -> DiskError {
    DiskError::Device {
        op,
        lba,
        detail: format!("nvme: {e}"),
    }
}

impl<H: NvmeHardware> Disk for Controller<H> {
    fn sector_count(&self) -> u64 {
        self.namespace.blocks
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let sectors = check_range(lba, buf.len(), self.namespace.blocks)?;
        for chunk in prp::split(lba, sectors, self.max_sectors, SECTOR) {
            self.transfer_chunk(nvm::READ, chunk.lba, chunk.sectors)
                .map_err(|e| disk_error(DiskOp::Read, chunk.lba, e))?;
            let bytes = chunk.sectors as usize * SECTOR;
            self.bounce
                .read(0, &mut buf[chunk.offset..chunk.offset + bytes]);
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        let sectors = check_range(lba, buf.len(), self.namespace.blocks)?;
        if self.namespace.write_protected {
            return Err(DiskError::ReadOnly);
        }
        for chunk in prp::split(lba, sectors, self.max_sectors, SECTOR) {
            let bytes = chunk.sectors as usize * SECTOR;
            self.bounce
                .write(0, &buf[chunk.offset..chunk.offset + bytes]);
            self.transfer_chunk(nvm::WRITE, chunk.lba, chunk.sectors)
                .map_err(|e| disk_error(DiskOp::Write, chunk.lba, e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        // Sent even without a volatile write cache (VWC = 0): the controller completes it
        // at once, and a cache the Identify data does not admit to is covered too.
        self.io_command(Command::flush(self.nsid))
            .map_err(|e| disk_error(DiskOp::Flush, 0, e))
    }
}
