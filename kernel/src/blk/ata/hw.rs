//! Bare-metal side of the ATA driver: finding the IDE controllers on PCI, each channel's
//! ports, and the port I/O itself.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::drive::{self, AtaDisk, AtaPorts, Position, Probed};
use super::protocol::{Signature, TaskReg};
use crate::arch::timer::Deadline;
use crate::blk::disk::{Disk, DiskError, SECTOR};
use crate::blk::host::{HostDisk, ProbeFailure, ProbeResult};
use crate::pci::{self, Bar, PciAddress, PciDevice};

/// The driver's name in the host disk list.
const DRIVER: &str = "ata";

/// PCI class of a mass-storage IDE controller.
const CLASS_STORAGE: u8 = 0x01;
const SUBCLASS_IDE: u8 = 0x01;
/// Prog-if bits: the primary (bit 0) / secondary (bit 2) channel runs in native mode, its
/// ports in BAR0/1 (BAR2/3) rather than the legacy ones.
const PROG_IF_PRIMARY_NATIVE: u8 = 1 << 0;
const PROG_IF_SECONDARY_NATIVE: u8 = 1 << 2;

/// Legacy (compatibility-mode) ports of the two channels: command block, control block.
const LEGACY: [(u16, u16); 2] = [(0x1F0, 0x3F6), (0x170, 0x376)];

/// One channel's ports.
#[derive(Clone, Copy, Debug)]
pub struct ChannelPorts {
    /// Command block base (data register).
    command: u16,
    /// Control block: alternate status (read) / device control (write).
    control: u16,
}

mod pio {
    //! The port accesses, fenced here.

    use core::arch::asm;

    use crate::arch::cpu::port;
    use crate::blk::disk::SECTOR;

    /// Reads a byte from `port`.
    pub fn inb(at: u16) -> u8 {
        // SAFETY: callers pass only the ports of an IDE channel found on PCI (or the legacy
        // ones): reading them has no effect beyond the ATA protocol the driver follows.
        unsafe { port::inb(at) }
    }

    /// Writes a byte to `port`.
    pub fn outb(at: u16, value: u8) {
        // SAFETY: as for `inb`; writes are task-file values the protocol defines.
        unsafe { port::outb(at, value) }
    }

    /// Reads a 512-byte block from the 16-bit data register.
    pub fn insw(at: u16, buf: &mut [u8; SECTOR]) {
        // SAFETY: `rep insw` stores 256 words at [rdi], exactly the buffer's 512 bytes; the
        // direction flag is clear (the ABI guarantees it at function boundaries); the port
        // is an ATA data register in a data-in phase.
        unsafe {
            asm!(
                "rep insw",
                in("dx") at,
                inout("rdi") buf.as_mut_ptr() => _,
                inout("rcx") SECTOR / 2 => _,
                options(nostack, preserves_flags)
            );
        }
    }

    /// Writes a 512-byte block to the 16-bit data register.
    pub fn outsw(at: u16, buf: &[u8; SECTOR]) {
        // SAFETY: `rep outsw` loads 256 words from [rsi], exactly the buffer's 512 bytes;
        // direction flag clear as above; the port is an ATA data register in a data-out
        // phase.
        unsafe {
            asm!(
                "rep outsw",
                in("dx") at,
                inout("rsi") buf.as_ptr() => _,
                inout("rcx") SECTOR / 2 => _,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
}

impl AtaPorts for ChannelPorts {
    type Deadline = Deadline;

    fn read(&mut self, reg: TaskReg) -> u8 {
        pio::inb(self.command + reg as u16)
    }

    fn write(&mut self, reg: TaskReg, value: u8) {
        pio::outb(self.command + reg as u16, value)
    }

    fn alt_status(&mut self) -> u8 {
        pio::inb(self.control)
    }

    fn set_control(&mut self, value: u8) {
        pio::outb(self.control, value)
    }

    fn read_block(&mut self, buf: &mut [u8; SECTOR]) {
        pio::insw(self.command, buf)
    }

    fn write_block(&mut self, buf: &[u8; SECTOR]) {
        pio::outsw(self.command, buf)
    }

    fn deadline_after_ms(&mut self, ms: u64) -> Deadline {
        Deadline::after_ms(ms)
    }

    fn expired(&mut self, deadline: &Deadline) -> bool {
        deadline.expired()
    }
}

/// A channel to probe, and how the operator names it.
struct Channel {
    /// The controller, or `None` for the legacy ports probed without one on PCI.
    controller: Option<PciAddress>,
    /// 0 primary, 1 secondary.
    index: usize,
    ports: ChannelPorts,
}

impl Channel {
    fn location(&self, position: Position) -> String {
        let name = format!(
            "ide{} {} ({:#x})",
            self.index,
            position.name(),
            self.ports.command
        );
        match self.controller {
            Some(address) => format!("{address} {name}"),
            None => name,
        }
    }
}

/// The I/O BAR `index` of `device` as a port, when it is one that fits.
fn io_bar(device: &PciDevice, index: usize) -> Option<u16> {
    match device.bar(index) {
        Some(Bar::Io { port, .. }) if port != 0 => u16::try_from(port).ok(),
        _ => None,
    }
}

/// The channels of one IDE function, or why one cannot be used.
fn channels(device: &PciDevice) -> Vec<Result<Channel, (usize, String)>> {
    let native = [PROG_IF_PRIMARY_NATIVE, PROG_IF_SECONDARY_NATIVE];
    (0..2)
        .map(|index| {
            let ports = if device.prog_if & native[index] == 0 {
                let (command, control) = LEGACY[index];
                ChannelPorts { command, control }
            } else {
                // Native mode: BAR 2i is the command block, BAR 2i+1's port 2 the control.
                match (io_bar(device, 2 * index), io_bar(device, 2 * index + 1)) {
                    (Some(command), Some(control)) => ChannelPorts {
                        command,
                        control: control + 2,
                    },
                    _ => {
                        return Err((
                            index,
                            format!(
                                "channel {index} is in PCI native mode but BARs {}/{} hold no I/O ports",
                                2 * index,
                                2 * index + 1
                            ),
                        ));
                    }
                }
            };
            Ok(Channel {
                controller: Some(device.address),
                index,
                ports,
            })
        })
        .collect()
}

/// A disk on an IDE channel, as the host disk list shows it.
pub struct AtaHostDisk {
    disk: AtaDisk<ChannelPorts>,
    location: String,
}

impl HostDisk for AtaHostDisk {
    fn driver(&self) -> &'static str {
        DRIVER
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn model(&self) -> String {
        self.disk.model()
    }

    fn read_only(&self) -> bool {
        // ATA disks have no write-protect state Keel could read; a refused write is an ABRT.
        false
    }
}

impl Disk for AtaHostDisk {
    fn sector_count(&self) -> u64 {
        self.disk.sector_count()
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.disk.read(lba, buf)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.disk.write(lba, buf)
    }

    fn flush(&mut self) -> Result<(), DiskError> {
        self.disk.flush()
    }
}

/// Every drive on every IDE channel in `pci` (and on the legacy ports when no IDE function
/// is listed: ISA-only boards), in channel order, master before slave.
pub fn probe(pci: &[PciDevice]) -> Vec<ProbeResult> {
    let mut found: Vec<ProbeResult> = Vec::new();
    let mut list: Vec<Channel> = Vec::new();
    for device in pci
        .iter()
        .filter(|d| d.class == CLASS_STORAGE && d.subclass == SUBCLASS_IDE)
    {
        // I/O decode on, bus mastering not needed (PIO); the firmware usually did it.
        pci::enable(device.address, pci::command::IO_SPACE);
        for channel in channels(device) {
            match channel {
                Ok(channel) => {
                    // Two functions in compatibility mode would claim the same ports.
                    if !list
                        .iter()
                        .any(|c| c.ports.command == channel.ports.command)
                    {
                        list.push(channel);
                    }
                }
                Err((index, reason)) => found.push(Err(ProbeFailure {
                    driver: DRIVER,
                    location: format!("{} ide{index}", device.address),
                    reason,
                })),
            }
        }
    }
    if list.is_empty() && found.is_empty() {
        list.extend((0..2).map(|index| Channel {
            controller: None,
            index,
            ports: ChannelPorts {
                command: LEGACY[index].0,
                control: LEGACY[index].1,
            },
        }));
    }
    for mut channel in list {
        if drive::floating(&mut channel.ports) {
            defmt::debug!("ata: ide{=usize}: nothing on the bus", channel.index);
            continue;
        }
        for position in [Position::Master, Position::Slave] {
            let location = channel.location(position);
            match drive::probe(&mut channel.ports, position) {
                Probed::Absent => {}
                Probed::Disk(identity) => {
                    defmt::info!(
                        "ata: {}: {} ({=u64} sectors, lba48 {=bool})",
                        defmt::Display2Format(&location),
                        defmt::Display2Format(&identity.model),
                        identity.sectors,
                        identity.lba48
                    );
                    found.push(Ok(Box::new(AtaHostDisk {
                        disk: AtaDisk::new(channel.ports, position, identity),
                        location,
                    })));
                }
                Probed::Packet(signature) => found.push(Err(ProbeFailure {
                    driver: DRIVER,
                    location,
                    reason: String::from(match signature {
                        Signature::SataAtapi => {
                            "SATA ATAPI (packet) device: an optical drive, not a disk"
                        }
                        _ => "ATAPI (packet) device: an optical drive, not a disk",
                    }),
                })),
                Probed::Failed(e) => found.push(Err(ProbeFailure {
                    driver: DRIVER,
                    location,
                    reason: format!("{e}"),
                })),
            }
        }
    }
    found
}
