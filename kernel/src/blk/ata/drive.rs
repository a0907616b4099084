//! One ATA channel's drives driven through the task file with PIO, generic over the channel's
//! ports ([`AtaPorts`]) so host tests drive a model of the device.
//!
//! Every wait polls the alternate status under a deadline the ports hand out: a drive that
//! never leaves BSY, or never raises DRQ, is an [`AtaError::Timeout`] naming the status it
//! was stuck in, and the channel is reset so the next command starts clean.

use alloc::string::String;

use super::protocol::{
    self, Bits, Identity, IdentityError, Signature, TaskReg, command, control, device, status,
};
use crate::blk::disk::{Disk, DiskError, DiskOp, SECTOR, check_range};

/// Milliseconds a drive may stay busy on IDENTIFY before the probe gives up on it.
pub const IDENTIFY_TIMEOUT_MS: u64 = 5_000;
/// Milliseconds a read or write may take per data block (a drive spinning up takes seconds).
pub const COMMAND_TIMEOUT_MS: u64 = 10_000;
/// Milliseconds a cache flush may take.
pub const FLUSH_TIMEOUT_MS: u64 = 30_000;
/// Milliseconds the drives may stay busy after a software reset.
pub const RESET_TIMEOUT_MS: u64 = 5_000;

/// One ATA channel's registers: the command block and the control block.
///
/// Reads can have side effects (the status read acknowledges an interrupt; data reads move
/// the device's buffer on), so every method takes `&mut self`.
pub trait AtaPorts {
    /// A point in time a wait may not pass.
    type Deadline;
    /// Reads a command-block register.
    fn read(&mut self, reg: TaskReg) -> u8;
    /// Writes a command-block register.
    fn write(&mut self, reg: TaskReg, value: u8);
    /// Reads the alternate status (the status without side effects).
    fn alt_status(&mut self) -> u8;
    /// Writes the device-control register.
    fn set_control(&mut self, value: u8);
    /// Reads one 512-byte data block through the 16-bit data register.
    fn read_block(&mut self, buf: &mut [u8; SECTOR]);
    /// Writes one 512-byte data block.
    fn write_block(&mut self, buf: &[u8; SECTOR]);
    /// A deadline `ms` milliseconds from now.
    fn deadline_after_ms(&mut self, ms: u64) -> Self::Deadline;
    /// Whether `deadline` has passed.
    fn expired(&mut self, deadline: &Self::Deadline) -> bool;
    /// Waits the 400 ns a device may take to present a valid status after a command or a
    /// drive select: four alternate-status reads (each ISA-speed cycle takes ≥ 100 ns).
    fn settle(&mut self) {
        for _ in 0..4 {
            self.alt_status();
        }
    }
}

/// Master (device 0) or slave (device 1) on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// Device 0.
    Master,
    /// Device 1.
    Slave,
}

impl Position {
    /// `master` / `slave`.
    pub fn name(self) -> &'static str {
        match self {
            Position::Master => "master",
            Position::Slave => "slave",
        }
    }

    fn select_bits(self) -> u8 {
        match self {
            Position::Master => 0,
            Position::Slave => device::DEV1,
        }
    }
}

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AtaError {
    /// The drive stayed busy, or never offered data, past the deadline.
    #[error("{command}: drive not ready after {ms} ms (status {})", Bits::status(*status))]
    Timeout {
        /// The command's name.
        command: &'static str,
        /// How long it waited.
        ms: u64,
        /// The last status read.
        status: u8,
    },
    /// The drive set ERR.
    #[error("{command} failed: status {}, error {}", Bits::status(*status), Bits::error(*error))]
    Failed {
        /// The command's name.
        command: &'static str,
        /// Status register.
        status: u8,
        /// Error register.
        error: u8,
    },
    /// The drive set DF: it cannot complete commands.
    #[error("{command}: device fault (status {})", Bits::status(*status))]
    DeviceFault {
        /// The command's name.
        command: &'static str,
        /// Status register.
        status: u8,
    },
}

/// What a probe of one drive position found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probed {
    /// Nothing answers there.
    Absent,
    /// A packet device (CD/DVD): listed, not driven.
    Packet(Signature),
    /// A disk Keel drives.
    Disk(Identity),
    /// Something answers but cannot be used.
    Failed(ProbeError),
}

/// Why a drive that answers cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// IDENTIFY DEVICE failed or timed out.
    #[error("{0}")]
    Command(AtaError),
    /// It rejected IDENTIFY DEVICE with a signature Keel does not drive.
    #[error("IDENTIFY DEVICE aborted, device signature {mid:#04x}/{high:#04x}: not an ATA disk")]
    UnknownDevice {
        /// LBA mid.
        mid: u8,
        /// LBA high.
        high: u8,
    },
    /// Its IDENTIFY data rules it out.
    #[error("{0}")]
    Identity(IdentityError),
}

/// Whether the channel has nothing on it: the status lines float high.
pub fn floating<P: AtaPorts>(ports: &mut P) -> bool {
    ports.alt_status() == status::FLOATING
}

/// Selects `position` and waits for it to leave BSY (and DRQ, a transfer left over).
fn select<P: AtaPorts>(
    ports: &mut P,
    position: Position,
    lba_high_nibble: u8,
    command: &'static str,
    ms: u64,
) -> Result<(), AtaError> {
    ports.write(
        TaskReg::Device,
        device::OBSOLETE | device::LBA | position.select_bits() | (lba_high_nibble & 0x0F),
    );
    ports.settle();
    wait_idle(ports, command, ms)
}

/// Polls until the selected drive is neither busy nor offering data. ERR and DF are the
/// previous command's and are not looked at: the next command clears them.
fn wait_idle<P: AtaPorts>(ports: &mut P, command: &'static str, ms: u64) -> Result<(), AtaError> {
    let deadline = ports.deadline_after_ms(ms);
    loop {
        let s = ports.alt_status();
        if s & (status::BSY | status::DRQ) == 0 {
            return Ok(());
        }
        if ports.expired(&deadline) {
            return Err(AtaError::Timeout {
                command,
                ms,
                status: s,
            });
        }
        core::hint::spin_loop();
    }
}

/// Polls the alternate status until `done(status)` holds, the drive reports an error or
/// fault, or `ms` pass.
fn wait<P: AtaPorts>(
    ports: &mut P,
    command: &'static str,
    ms: u64,
    done: impl Fn(u8) -> bool,
) -> Result<(), AtaError> {
    let deadline = ports.deadline_after_ms(ms);
    loop {
        let s = ports.alt_status();
        if s & status::BSY == 0 {
            if s & status::DF != 0 {
                return Err(AtaError::DeviceFault { command, status: s });
            }
            if s & status::ERR != 0 {
                let error = ports.read(TaskReg::ErrorFeatures);
                return Err(AtaError::Failed {
                    command,
                    status: s,
                    error,
                });
            }
            if done(s) {
                return Ok(());
            }
        }
        if ports.expired(&deadline) {
            return Err(AtaError::Timeout {
                command,
                ms,
                status: s,
            });
        }
        core::hint::spin_loop();
    }
}

/// Resets both drives on the channel (SRST) and waits for the channel to leave BSY: after a
/// timeout, so a later command does not find the drive in the middle of the failed one.
pub fn reset<P: AtaPorts>(ports: &mut P) -> Result<(), AtaError> {
    ports.set_control(control::NIEN | control::SRST);
    ports.settle();
    ports.set_control(control::NIEN);
    ports.settle();
    let deadline = ports.deadline_after_ms(RESET_TIMEOUT_MS);
    loop {
        let s = ports.alt_status();
        if s & status::BSY == 0 {
            return Ok(());
        }
        if ports.expired(&deadline) {
            return Err(AtaError::Timeout {
                command: "software reset",
                ms: RESET_TIMEOUT_MS,
                status: s,
            });
        }
        core::hint::spin_loop();
    }
}

/// Looks for a drive at `position`: select, IDENTIFY DEVICE, and decode the answer.
pub fn probe<P: AtaPorts>(ports: &mut P, position: Position) -> Probed {
    ports.set_control(control::NIEN);
    ports.write(TaskReg::Device, device::OBSOLETE | position.select_bits());
    ports.settle();
    let s = ports.alt_status();
    if s == status::FLOATING {
        return Probed::Absent;
    }
    if s == 0 {
        // A packet device may show a zero status (no DRDY) with its signature after reset;
        // otherwise 0 is the other drive answering for an absent one.
        let sig = Signature::from_regs(ports.read(TaskReg::LbaMid), ports.read(TaskReg::LbaHigh));
        return if sig.is_packet() {
            Probed::Packet(sig)
        } else {
            Probed::Absent
        };
    }
    let name = protocol::command_name(command::IDENTIFY);
    if let Err(e) = wait_idle(ports, name, IDENTIFY_TIMEOUT_MS) {
        let _ = reset(ports);
        return Probed::Failed(ProbeError::Command(e));
    }
    for reg in [
        TaskReg::ErrorFeatures,
        TaskReg::SectorCount,
        TaskReg::LbaLow,
        TaskReg::LbaMid,
        TaskReg::LbaHigh,
    ] {
        ports.write(reg, 0);
    }
    ports.write(TaskReg::StatusCommand, command::IDENTIFY);
    ports.settle();
    if ports.alt_status() == 0 {
        return Probed::Absent;
    }
    let mut data = [0u8; SECTOR];
    match wait(ports, name, IDENTIFY_TIMEOUT_MS, |s| s & status::DRQ != 0) {
        Ok(()) => ports.read_block(&mut data),
        Err(AtaError::Failed { .. }) => {
            // Packet devices abort IDENTIFY DEVICE and leave their signature.
            let mid = ports.read(TaskReg::LbaMid);
            let high = ports.read(TaskReg::LbaHigh);
            return match Signature::from_regs(mid, high) {
                sig if sig.is_packet() => Probed::Packet(sig),
                _ => Probed::Failed(ProbeError::UnknownDevice { mid, high }),
            };
        }
        Err(e) => {
            let _ = reset(ports);
            return Probed::Failed(ProbeError::Command(e));
        }
    }
    match protocol::parse_identify(&data) {
        Ok(identity) => Probed::Disk(identity),
        Err(IdentityError::NotAta) => Probed::Packet(Signature::Atapi),
        Err(e) => Probed::Failed(ProbeError::Identity(e)),
    }
}

/// A disk on an ATA channel, read and written with PIO.
pub struct AtaDisk<P: AtaPorts> {
    ports: P,
    position: Position,
    identity: Identity,
}

impl<P: AtaPorts> AtaDisk<P> {
    /// The disk at `position` on `ports`, as [`probe`] identified it.
    pub fn new(ports: P, position: Position, identity: Identity) -> AtaDisk<P> {
        AtaDisk {
            ports,
            position,
            identity,
        }
    }

    /// What IDENTIFY DEVICE said.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Master or slave.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Model and serial: `QEMU HARDDISK, serial QM00001`; empty when the drive reports neither.
    pub fn model(&self) -> String {
        let Identity { model, serial, .. } = &self.identity;
        match (model.is_empty(), serial.is_empty()) {
            (true, true) => String::new(),
            (false, true) => model.clone(),
            (true, false) => alloc::format!("serial {serial}"),
            (false, false) => alloc::format!("{model}, serial {serial}"),
        }
    }

    /// Loads the task file for `t` and issues it.
    fn issue(&mut self, t: &protocol::Transfer) -> Result<(), AtaError> {
        let name = protocol::command_name(t.opcode);
        let lba = t.lba.to_le_bytes();
        let high_nibble = if t.ext { 0 } else { lba[3] & 0x0F };
        select(
            &mut self.ports,
            self.position,
            high_nibble,
            name,
            COMMAND_TIMEOUT_MS,
        )?;
        // A count of 0 means the maximum (256 or 65536).
        let count = t.count.to_le_bytes();
        if t.ext {
            // 48-bit: each register holds two bytes, the high-order one written first.
            self.ports.write(TaskReg::SectorCount, count[1]);
            self.ports.write(TaskReg::LbaLow, lba[3]);
            self.ports.write(TaskReg::LbaMid, lba[4]);
            self.ports.write(TaskReg::LbaHigh, lba[5]);
        }
        self.ports.write(TaskReg::SectorCount, count[0]);
        self.ports.write(TaskReg::LbaLow, lba[0]);
        self.ports.write(TaskReg::LbaMid, lba[1]);
        self.ports.write(TaskReg::LbaHigh, lba[2]);
        self.ports.write(TaskReg::StatusCommand, t.opcode);
        self.ports.settle();
        Ok(())
    }

    /// Runs one command and, if it timed out, resets the channel for the next.
    fn guarded<T>(
        &mut self,
        run: impl FnOnce(&mut Self) -> Result<T, AtaError>,
    ) -> Result<T, AtaError> {
        let result = run(self);
        if let Err(AtaError::Timeout { .. } | AtaError::DeviceFault { .. }) = &result {
            let _ = reset(&mut self.ports);
        }
        result
    }

    fn read_transfer(&mut self, t: &protocol::Transfer, buf: &mut [u8]) -> Result<(), AtaError> {
        let name = protocol::command_name(t.opcode);
        self.issue(t)?;
        let (blocks, _) = buf.as_chunks_mut::<SECTOR>();
        for block in blocks {
            wait(&mut self.ports, name, COMMAND_TIMEOUT_MS, |s| {
                s & status::DRQ != 0
            })?;
            self.ports.read_block(block);
        }
        Ok(())
    }

    fn write_transfer(&mut self, t: &protocol::Transfer, buf: &[u8]) -> Result<(), AtaError> {
        let name = protocol::command_name(t.opcode);
        self.issue(t)?;
        let (blocks, _) = buf.as_chunks::<SECTOR>();
        for block in blocks {
            wait(&mut self.ports, name, COMMAND_TIMEOUT_MS, |s| {
                s & status::DRQ != 0
            })?;
            self.ports.write_block(block);
            self.ports.settle();
        }
        // The drive stores the last block before it reports the command done (or failed).
        wait(&mut self.ports, name, COMMAND_TIMEOUT_MS, |s| {
            s & status::DRQ == 0
        })
    }
}

fn disk_error(op: DiskOp, lba: u64, e: AtaError) -> DiskError {
    DiskError::Device {
        op,
        lba,
        detail: alloc::format!("{e}"),
    }
}

impl<P: AtaPorts> Disk for AtaDisk<P> {
    fn sector_count(&self) -> u64 {
        self.identity.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let count = check_range(lba, buf.len(), self.identity.sectors)?;
        let mut rest = buf;
        for t in protocol::plan(lba, count, self.identity.lba48, false) {
            let (chunk, tail) = rest.split_at_mut(t.count as usize * SECTOR);
            rest = tail;
            self.guarded(|disk| disk.read_transfer(&t, chunk))
                .map_err(|e| disk_error(DiskOp::Read, t.lba, e))?;
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        let count = check_range(lba, buf.len(), self.identity.sectors)?;
        let mut rest = buf;
        for t in protocol::plan(lba, count, self.identity.lba48, true) {
            let (chunk, tail) = rest.split_at(t.count as usize * SECTOR);
            rest = tail;
            self.guarded(|disk| disk.write_transfer(&t, chunk))
                .map_err(|e| disk_error(DiskOp::Write, t.lba, e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        let opcode = if self.identity.lba48 {
            command::FLUSH_CACHE_EXT
        } else {
            command::FLUSH_CACHE
        };
        let name = protocol::command_name(opcode);
        self.guarded(|disk| {
            select(&mut disk.ports, disk.position, 0, name, COMMAND_TIMEOUT_MS)?;
            disk.ports.write(TaskReg::StatusCommand, opcode);
            disk.ports.settle();
            wait(&mut disk.ports, name, FLUSH_TIMEOUT_MS, |s| {
                s & status::DRQ == 0
            })
        })
        .map_err(|e| disk_error(DiskOp::Flush, 0, e))
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
