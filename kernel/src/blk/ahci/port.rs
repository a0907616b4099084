//! One AHCI port driven through the [`Hba`] trait: controller set-up, port bring-up,
//! commands on slot 0 polled to completion, error recovery, and [`Disk`] on top.
//!
//! Everything here is pure: registers, DMA memory and time come from [`Hba`], so the host
//! tests drive it against a model of the HBA (`model.rs`), including a device that never
//! becomes ready and commands that fail. The order of the bring-up follows AHCI 1.3.1
//! §10.1.2 (system software initialisation) and recovery §6.2.2.1 (non-queued errors).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::ata::{self, IdentifyError, Identity, TaskFile};
use super::regs::{self, AtaCommand, ghc, port};
use crate::blk::disk::{Disk, DiskError, DiskOp, SECTOR, check_range};

/// How long a DMA engine may take to stop (AHCI §10.1.2 allows 500 ms).
pub const ENGINE_STOP_MS: u64 = 500;
/// How long the BIOS may take to hand the HBA over (§10.6.3: 25 ms, +2 s when busy).
pub const HANDOFF_MS: u64 = 2025;
/// How long a port without a link is watched for a device before it counts as empty. The
/// firmware has brought links up already, and a device answers COMRESET within 10 ms; a
/// port whose device Keel spins up itself (staggered spin-up) gets [`LINK_UP_MS`].
pub const LINK_DETECT_MS: u64 = 10;
/// How long a detected device may take to bring its link up.
pub const LINK_UP_MS: u64 = 1000;
/// How long a device may stay busy (BSY/DRQ) after its link is up: spin-up.
pub const DEVICE_READY_MS: u64 = 10_000;
/// How long one command may take.
pub const COMMAND_MS: u64 = 5000;
/// Size of the bounce buffer each port transfers through: 256 KiB, 512 sectors.
pub const BOUNCE_BYTES: usize = 256 * 1024;
/// Size of the command table Keel allocates for slot 0: the header part and 248 PRDT entries.
pub const COMMAND_TABLE_BYTES: usize = 4096;

/// DMA memory the HBA reads and writes: zeroed, physically contiguous, page-aligned.
pub trait DmaMemory {
    /// Physical address of the first byte (what the HBA is given).
    fn phys(&self) -> u64;
    /// Size in bytes.
    fn size(&self) -> usize;
    /// Copies `data` in at byte `at` (the caller keeps `at + data.len()` within `len`).
    fn write_at(&mut self, at: usize, data: &[u8]);
    /// Copies bytes out from byte `at` into `out`.
    fn read_at(&self, at: usize, out: &mut [u8]);
    /// Keeps the memory allocated for good: a device that could not be stopped may still
    /// write to it.
    fn leak(&mut self);
}

/// An AHCI HBA's register window, its DMA memory and a clock: what the driver needs from
/// the machine. Cloned once per port (each port touches only its own register block).
pub trait Hba: Clone {
    /// DMA memory.
    type Memory: DmaMemory;
    /// A point in time to wait until.
    type Deadline;
    /// Reads the 32-bit register at `offset` from ABAR.
    fn read(&self, offset: u32) -> u32;
    /// Writes the 32-bit register at `offset` from ABAR.
    fn write(&mut self, offset: u32, value: u32);
    /// Zeroed, contiguous, page-aligned DMA memory of at least `bytes`; `None` when short.
    fn alloc(&mut self, bytes: usize) -> Option<Self::Memory>;
    /// The moment `ms` milliseconds from now.
    fn deadline(&self, ms: u64) -> Self::Deadline;
    /// Whether `deadline` has passed.
    fn expired(&self, deadline: &Self::Deadline) -> bool;
}

/// Why the HBA, a port or a command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AhciError {
    /// The BIOS kept the HBA (BOHC.BOS stayed set).
    #[error("the BIOS did not hand the controller over within {HANDOFF_MS} ms (BOHC.BOS=1)")]
    BiosHandoff,
    /// A DMA engine did not stop.
    #[error("port did not stop within {ENGINE_STOP_MS} ms ({engine} still running)")]
    EngineStuck {
        /// "PxCMD.CR" (command list) or "PxCMD.FR" (FIS receive).
        engine: &'static str,
    },
    /// No DMA memory for the port's structures.
    #[error("out of memory for the port's command list, FIS area and buffers")]
    OutOfMemory,
    /// DMA memory above 4 GiB on an HBA without 64-bit addressing.
    #[error("DMA memory at {0:#x} is above 4 GiB and the controller has no 64-bit addressing")]
    Above4GiB(u64),
    /// A device is there but its link never came up.
    #[error("device detected but the SATA link is not up after {LINK_UP_MS} ms (PxSSTS.DET={0})")]
    LinkDown(u32),
    /// The device stayed busy.
    #[error("device not ready after {ms} ms ({taskfile})")]
    DeviceBusy {
        /// How long it was given.
        ms: u64,
        /// Its task file at the end.
        taskfile: TaskFile,
    },
    /// What is attached is not an ATA disk.
    #[error("not a disk: {what} (signature {signature:#010x})")]
    NotADisk {
        /// PxSIG.
        signature: u32,
        /// What the signature means.
        what: &'static str,
    },
    /// IDENTIFY DEVICE data refused.
    #[error("{0}")]
    Identify(IdentifyError),
    /// The device reported an error for a command.
    #[error("{command} failed: {taskfile}")]
    Command {
        /// The command's name.
        command: &'static str,
        /// Its status and error registers.
        taskfile: TaskFile,
    },
    /// The HBA reported a host bus or interface error for a command.
    #[error("{command} failed: controller error (PxIS={is:#010x}, PxSERR={serr:#010x})")]
    Controller {
        /// The command's name.
        command: &'static str,
        /// PxIS.
        is: u32,
        /// PxSERR.
        serr: u32,
    },
    /// A command did not complete.
    #[error("{command} did not complete within {COMMAND_MS} ms ({taskfile})")]
    Timeout {
        /// The command's name.
        command: &'static str,
        /// The task file when it was given up.
        taskfile: TaskFile,
    },
    /// The port could not be recovered after an error and is out of service.
    #[error("port out of service: {0}")]
    Failed(String),
}

/// Name of an ATA opcode, for messages.
fn command_name(opcode: u8) -> &'static str {
    match opcode {
        ata::IDENTIFY_DEVICE => "IDENTIFY DEVICE",
        ata::READ_DMA_EXT => "READ DMA EXT",
        ata::WRITE_DMA_EXT => "WRITE DMA EXT",
        ata::FLUSH_CACHE_EXT => "FLUSH CACHE EXT",
        ata::FLUSH_CACHE => "FLUSH CACHE",
        _ => "ATA command",
    }
}

/// The controller-wide set-up: take it from the BIOS, switch it to AHCI mode with
/// interrupts off. Returns CAP and PI.
pub fn init_controller<H: Hba>(hba: &mut H) -> Result<(u32, u32), AhciError> {
    if hba.read(ghc::CAP2) & ghc::CAP2_BOH != 0 && hba.read(ghc::BOHC) & ghc::BOHC_BOS != 0 {
        let bohc = hba.read(ghc::BOHC);
        hba.write(ghc::BOHC, bohc | ghc::BOHC_OOS);
        let deadline = hba.deadline(HANDOFF_MS);
        while hba.read(ghc::BOHC) & ghc::BOHC_BOS != 0 {
            if hba.expired(&deadline) {
                return Err(AhciError::BiosHandoff);
            }
        }
    }
    let control = hba.read(ghc::GHC);
    hba.write(ghc::GHC, (control | ghc::GHC_AE) & !ghc::GHC_IE);
    Ok((hba.read(ghc::CAP), hba.read(ghc::PI)))
}

/// What bring-up found on a port.
pub enum PortProbe<H: Hba> {
    /// An ATA disk, identified and ready.
    Disk(AhciPort<H>),
    /// Nothing attached (or the PHY is offline).
    Empty,
    /// Something is there that Keel cannot use, or it did not come up.
    Failed(AhciError),
}

/// A SATA disk on one AHCI port, driven through command slot 0.
pub struct AhciPort<H: Hba> {
    hba: H,
    index: u32,
    cap: u32,
    command_list: H::Memory,
    /// Never read by the driver: owned so that the HBA's FIS receive target lives as long
    /// as the port.
    #[allow(dead_code)]
    received_fis: H::Memory,
    command_table: H::Memory,
    bounce: H::Memory,
    identity: Identity,
    /// Why the port is out of service, once recovery failed.
    failed: Option<String>,
}

/// Port register access for one port, shared by bring-up and the port.
struct PortRegs<'a, H: Hba> {
    hba: &'a mut H,
    base: u32,
}

impl<H: Hba> PortRegs<'_, H> {
    fn read(&self, reg: u32) -> u32 {
        self.hba.read(self.base + reg)
    }

    fn write(&mut self, reg: u32, value: u32) {
        self.hba.write(self.base + reg, value);
    }

    /// Waits until `done(self)` holds or `ms` pass; returns whether it held.
    fn wait(&self, ms: u64, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = self.hba.deadline(ms);
        loop {
            if done(self) {
                return true;
            }
            if self.hba.expired(&deadline) {
                return done(self);
            }
            core::hint::spin_loop();
        }
    }

    fn taskfile(&self) -> TaskFile {
        TaskFile::from_tfd(self.read(port::TFD))
    }

    fn busy(&self) -> bool {
        self.read(port::TFD) & (port::TFD_BSY | port::TFD_DRQ) != 0
    }

    /// Clears ST and waits for CR, then clears FRE and waits for FR (§10.1.2 step 3).
    fn stop(&mut self) -> Result<(), AhciError> {
        self.stop_commands()?;
        let cmd = self.read(port::CMD);
        if cmd & port::CMD_FRE != 0 {
            self.write(port::CMD, cmd & !port::CMD_FRE);
        }
        if !self.wait(ENGINE_STOP_MS, |r| r.read(port::CMD) & port::CMD_FR == 0) {
            return Err(AhciError::EngineStuck { engine: "PxCMD.FR" });
        }
        Ok(())
    }

    /// Clears ST and waits for CR (the HBA then clears PxCI).
    fn stop_commands(&mut self) -> Result<(), AhciError> {
        let cmd = self.read(port::CMD);
        if cmd & port::CMD_ST != 0 {
            self.write(port::CMD, cmd & !port::CMD_ST);
        }
        if !self.wait(ENGINE_STOP_MS, |r| r.read(port::CMD) & port::CMD_CR == 0) {
            return Err(AhciError::EngineStuck { engine: "PxCMD.CR" });
        }
        Ok(())
    }

    fn start(&mut self) {
        let cmd = self.read(port::CMD);
        self.write(port::CMD, cmd | port::CMD_ST);
    }

    fn clear_errors(&mut self) {
        self.write(port::SERR, u32::MAX);
        self.write(port::IS, u32::MAX);
    }
}

fn alloc_below<H: Hba>(hba: &mut H, bytes: usize, cap: u32) -> Result<H::Memory, AhciError> {
    let memory = hba.alloc(bytes).ok_or(AhciError::OutOfMemory)?;
    let end = memory.phys() + memory.size() as u64;
    if cap & ghc::CAP_S64A == 0 && end > 1 << 32 {
        return Err(AhciError::Above4GiB(memory.phys()));
    }
    Ok(memory)
}

/// Brings up port `index` of an HBA that [`init_controller`] set up (§10.1.2): stops it,
/// gives it a command list and FIS area, waits for a device, checks it is an ATA disk,
/// starts it and identifies the disk.
pub fn probe_port<H: Hba>(mut hba: H, index: u32, cap: u32) -> PortProbe<H> {
    match bring_up(&mut hba, index, cap) {
        Ok(Some(memories)) => {
            let (command_list, received_fis, command_table, bounce) = memories;
            let mut disk = AhciPort {
                hba,
                index,
                cap,
                command_list,
                received_fis,
                command_table,
                bounce,
                identity: Identity {
                    model: String::new(),
                    serial: String::new(),
                    firmware: String::new(),
                    lba48: true,
                    sectors: 0,
                    logical_sector_size: 512,
                    flush_ext: true,
                },
                failed: None,
            };
            match disk.identify() {
                Ok(identity) => {
                    disk.identity = identity;
                    PortProbe::Disk(disk)
                }
                // Dropping the port stops it before its memory is freed.
                Err(e) => PortProbe::Failed(e),
            }
        }
        Ok(None) => PortProbe::Empty,
        Err(e) => PortProbe::Failed(e),
    }
}

type PortMemories<M> = (M, M, M, M);

fn bring_up<H: Hba>(
    hba: &mut H,
    index: u32,
    cap: u32,
) -> Result<Option<PortMemories<H::Memory>>, AhciError> {
    let base = regs::port_base(index);
    let memories = {
        let mut r = PortRegs { hba, base };
        r.stop()?;
        r.write(port::IE, 0);
        let command_list = alloc_below(r.hba, regs::COMMAND_LIST_SIZE, cap)?;
        let received_fis = alloc_below(r.hba, regs::RECEIVED_FIS_SIZE, cap)?;
        let command_table = alloc_below(r.hba, COMMAND_TABLE_BYTES, cap)?;
        let bounce = alloc_below(r.hba, BOUNCE_BYTES, cap)?;
        (command_list, received_fis, command_table, bounce)
    };
    let mut r = PortRegs { hba, base };
    let clb = memories.0.phys();
    let fb = memories.1.phys();
    r.write(port::CLB, clb as u32);
    r.write(port::CLBU, (clb >> 32) as u32);
    r.write(port::FB, fb as u32);
    r.write(port::FBU, (fb >> 32) as u32);
    r.clear_errors();
    let mut cmd = r.read(port::CMD) | port::CMD_FRE;
    let mut detect_ms = LINK_DETECT_MS;
    if cap & ghc::CAP_SSS != 0 && cmd & port::CMD_SUD == 0 {
        // Staggered spin-up and the firmware left this device off: it gets power and
        // spins only when asked, and its link takes longer to come up.
        cmd |= port::CMD_SUD | port::CMD_POD;
        detect_ms = LINK_UP_MS;
    }
    r.write(port::CMD, cmd);

    let det = |r: &PortRegs<'_, H>| regs::ssts_det(r.read(port::SSTS));
    r.wait(detect_ms, |r| det(r) == port::DET_PRESENT);
    match det(&r) {
        port::DET_PRESENT => {}
        port::DET_NO_PHY => {
            if !r.wait(LINK_UP_MS, |r| det(r) == port::DET_PRESENT) {
                let found = det(&r);
                let _ = r.stop();
                return Err(AhciError::LinkDown(found));
            }
        }
        _ => {
            // No device, or the PHY is offline: leave the port stopped.
            r.stop()?;
            return Ok(None);
        }
    }
    if !r.wait(DEVICE_READY_MS, |r| !r.busy()) {
        let taskfile = r.taskfile();
        let _ = r.stop();
        return Err(AhciError::DeviceBusy {
            ms: DEVICE_READY_MS,
            taskfile,
        });
    }
    let signature = r.read(port::SIG);
    if signature != port::SIG_ATA {
        r.stop()?;
        return Err(AhciError::NotADisk {
            signature,
            what: regs::describe_signature(signature),
        });
    }
    r.clear_errors();
    r.start();
    Ok(Some(memories))
}

impl<H: Hba> AhciPort<H> {
    /// What IDENTIFY DEVICE said.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The port number on the HBA.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Why the port is out of service, if it is.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn regs(&mut self) -> PortRegs<'_, H> {
        PortRegs {
            hba: &mut self.hba,
            base: regs::port_base(self.index),
        }
    }

    fn identify(&mut self) -> Result<Identity, AhciError> {
        let command = AtaCommand {
            opcode: ata::IDENTIFY_DEVICE,
            lba: 0,
            count: 0,
        };
        self.issue(&command, false, SECTOR)?;
        let mut data = [0u8; SECTOR];
        self.bounce.read_at(0, &mut data);
        ata::parse_identify(&data).map_err(AhciError::Identify)
    }

    /// Issues `command` on slot 0 with `bytes` of the bounce buffer as its data, polls it to
    /// completion, and recovers the port when it fails.
    fn issue(&mut self, command: &AtaCommand, write: bool, bytes: usize) -> Result<(), AhciError> {
        if let Some(reason) = &self.failed {
            return Err(AhciError::Failed(reason.clone()));
        }
        let name = command_name(command.opcode);
        let entries = if bytes == 0 {
            Vec::new()
        } else {
            let max_entries = (COMMAND_TABLE_BYTES - regs::PRDT_OFFSET) / regs::PRDT_ENTRY_SIZE;
            regs::build_prdt(self.bounce.phys(), bytes as u64, max_entries)
                .map_err(|e| AhciError::Failed(format!("{name}: cannot describe buffer: {e:?}")))?
        };
        self.command_table.write_at(0, &regs::h2d_fis(command));
        for (i, &(phys, len)) in entries.iter().enumerate() {
            let at = regs::PRDT_OFFSET + i * regs::PRDT_ENTRY_SIZE;
            self.command_table
                .write_at(at, &regs::prdt_entry(phys, len));
        }
        let header = regs::command_header(write, entries.len() as u16, self.command_table.phys());
        self.command_list.write_at(0, &header);

        let outcome = {
            let mut r = self.regs();
            r.write(port::IS, u32::MAX);
            r.write(port::CI, 1);
            let deadline = r.hba.deadline(COMMAND_MS);
            loop {
                let is = r.read(port::IS);
                if is & port::IS_TFES != 0 {
                    break Err(AhciError::Command {
                        command: name,
                        taskfile: r.taskfile(),
                    });
                }
                if is & port::IS_ERRORS != 0 {
                    break Err(AhciError::Controller {
                        command: name,
                        is,
                        serr: r.read(port::SERR),
                    });
                }
                if r.read(port::CI) & 1 == 0 {
                    let taskfile = r.taskfile();
                    if u32::from(taskfile.status) & port::TFD_ERR != 0 {
                        break Err(AhciError::Command {
                            command: name,
                            taskfile,
                        });
                    }
                    break Ok(());
                }
                if r.hba.expired(&deadline) {
                    break Err(AhciError::Timeout {
                        command: name,
                        taskfile: r.taskfile(),
                    });
                }
                core::hint::spin_loop();
            }
        };
        if outcome.is_err() {
            self.recover();
        }
        outcome
    }

    /// Non-queued error recovery (AHCI §6.2.2.1): stop the command engine, clear the
    /// errors, unstick BSY/DRQ with a command list override or a COMRESET, start again.
    /// A port that cannot be recovered is marked out of service.
    fn recover(&mut self) {
        let cap = self.cap;
        let mut r = self.regs();
        let result = (|| {
            r.stop_commands()?;
            r.clear_errors();
            if r.busy() && cap & ghc::CAP_SCLO != 0 {
                let cmd = r.read(port::CMD);
                r.write(port::CMD, cmd | port::CMD_CLO);
                r.wait(ENGINE_STOP_MS, |r| r.read(port::CMD) & port::CMD_CLO == 0);
            }
            if r.busy() {
                comreset(&mut r)?;
            }
            if r.busy() {
                return Err(AhciError::DeviceBusy {
                    ms: DEVICE_READY_MS,
                    taskfile: r.taskfile(),
                });
            }
            r.clear_errors();
            r.start();
            Ok(())
        })();
        if let Err(e) = result {
            let _ = r.stop();
            self.failed = Some(format!("error recovery failed: {e}"));
        }
    }

    fn device_error(&self, op: DiskOp, lba: u64, e: AhciError) -> DiskError {
        DiskError::Device {
            op,
            lba,
            detail: format!("port {}: {e}", self.index),
        }
    }

    fn max_sectors_per_command(&self) -> u64 {
        (self.bounce.size() / SECTOR).min(ata::MAX_SECTORS_PER_COMMAND as usize) as u64
    }
}

/// COMRESET (§10.4.2): PxSCTL.DET=1 for at least 1 ms, then 0, and wait for the link and
/// for the device to leave BSY. The command engine must be stopped.
fn comreset<H: Hba>(r: &mut PortRegs<'_, H>) -> Result<(), AhciError> {
    let sctl = r.read(port::SCTL) & !0xF;
    r.write(port::SCTL, sctl | 1);
    // The 1 ms hold: wait on a condition that never holds.
    r.wait(2, |_| false);
    r.write(port::SCTL, sctl);
    if !r.wait(LINK_UP_MS, |r| {
        regs::ssts_det(r.read(port::SSTS)) == port::DET_PRESENT
    }) {
        return Err(AhciError::LinkDown(regs::ssts_det(r.read(port::SSTS))));
    }
    r.write(port::SERR, u32::MAX);
    if !r.wait(DEVICE_READY_MS, |r| !r.busy()) {
        return Err(AhciError::DeviceBusy {
            ms: DEVICE_READY_MS,
            taskfile: r.taskfile(),
        });
    }
    Ok(())
}

impl<H: Hba> Drop for AhciPort<H> {
    /// Stops both DMA engines before the command list, FIS area and buffers are freed; a
    /// port that does not stop keeps its memory (leaked) rather than have the HBA write
    /// into freed frames.
    fn drop(&mut self) {
        if self.regs().stop().is_err() {
            self.command_list.leak();
            self.received_fis.leak();
            self.command_table.leak();
            self.bounce.leak();
        }
    }
}

impl<H: Hba> Disk for AhciPort<H> {
    fn sector_count(&self) -> u64 {
        self.identity.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(lba, buf.len(), self.identity.sectors)?;
        let chunk_bytes = self.max_sectors_per_command() as usize * SECTOR;
        let mut at = lba;
        for chunk in buf.chunks_mut(chunk_bytes) {
            let count = (chunk.len() / SECTOR) as u16;
            let command = AtaCommand {
                opcode: ata::READ_DMA_EXT,
                lba: at,
                count,
            };
            self.issue(&command, false, chunk.len())
                .map_err(|e| self.device_error(DiskOp::Read, at, e))?;
            self.bounce.read_at(0, chunk);
            at += u64::from(count);
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        check_range(lba, buf.len(), self.identity.sectors)?;
        let chunk_bytes = self.max_sectors_per_command() as usize * SECTOR;
        let mut at = lba;
        for chunk in buf.chunks(chunk_bytes) {
            let count = (chunk.len() / SECTOR) as u16;
            self.bounce.write_at(0, chunk);
            let command = AtaCommand {
                opcode: ata::WRITE_DMA_EXT,
                lba: at,
                count,
            };
            self.issue(&command, true, chunk.len())
                .map_err(|e| self.device_error(DiskOp::Write, at, e))?;
            at += u64::from(count);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        let opcode = if self.identity.flush_ext {
            ata::FLUSH_CACHE_EXT
        } else {
            ata::FLUSH_CACHE
        };
        let command = AtaCommand {
            opcode,
            lba: 0,
            count: 0,
        };
        self.issue(&command, false, 0)
            .map_err(|e| self.device_error(DiskOp::Flush, 0, e))
    }
}
