//! AHCI/SATA host disks (AHCI 1.3.1, ATA8-ACS): Keel's own driver.
//!
//! No maintained no_std AHCI crate fits: `simple-ahci` is a 0.1 preview without timeouts on
//! its waits, `ahci-driver` is interrupt-driven and tied to its framework's DMA, MMIO and
//! block traits. This one is small and polled.
//!
//! Layering: [`regs`] (register offsets and bits, command header, PRDT and H2D FIS
//! encoders) and [`ata`] (opcodes, IDENTIFY DEVICE parsing, task-file decoding) are pure;
//! [`port`] is the driver proper — controller set-up, port bring-up, slot-0 commands polled
//! to completion with a deadline, error recovery, and `Disk` — generic over the [`port::Hba`]
//! trait (registers, DMA memory, clock), so host tests run it against an HBA model. On bare
//! metal, `hw` maps ABAR and gives the port its MMIO, frames and TSC deadlines, and `probe`
//! returns one host disk per SATA disk found.
//!
//! Transfers go through a 256 KiB bounce buffer per port (the caller's buffer may be odd
//! aligned; the model can reach DMA memory only through [`port::DmaMemory`]), so each
//! command moves at most 512 sectors in one PRDT entry. Writes use WRITE DMA EXT and
//! durability comes from FLUSH CACHE EXT in `flush`, as the `Disk` contract says.

pub mod ata;
pub mod port;
pub mod regs;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

#[cfg(target_os = "none")]
mod hw;
#[cfg(target_os = "none")]
pub use hw::*;
