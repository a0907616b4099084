//! NVMe host driver: one controller, its first active namespace, one polled I/O queue pair.
//!
//! Keel's own driver rather than a crate: the two no_std NVMe crates on crates.io were
//! checked (Dec 2026). `nvme` (lihanrui2913) is a small single-author crate whose waits on
//! the controller have no timeouts; `nvme-driver` (rcore-os) brings its own DMA, MMIO and
//! block-device frameworks (`dma-api` with a global `set_impl`, `mmio-api`, `rdif-block`,
//! `log`). Neither reports a device that never becomes ready or a lost completion as an
//! error, and neither can be tested against a model of the device.
//!
//! Layering: [`regs`] (CAP/CC/CSTS and doorbells), [`command`] (entries, status names),
//! [`identify`] (Identify data), [`prp`] (PRP entries and the split by MDTS) and [`queue`]
//! (ring, phase tag, doorbells) are pure; [`controller`] brings a controller up and
//! implements [`Disk`](crate::blk::disk::Disk) over the [`NvmeHardware`] trait, so host tests
//! run all of it against a device model (`tests`). Only `driver` (bare metal) touches MMIO,
//! frames, the TSC clock and PCI. The `unsafe` of the pure half is in [`dma`].

pub mod command;
pub mod controller;
pub mod dma;
pub mod identify;
pub mod prp;
pub mod queue;
pub mod regs;

#[cfg(target_os = "none")]
mod driver;
#[cfg(target_os = "none")]
pub use driver::*;

#[cfg(test)]
mod tests;

pub use controller::{Controller, NvmeError};

/// PCI class, subclass and programming interface of an NVMe controller (mass storage,
/// non-volatile memory, NVM Express).
pub const PCI_CLASS: (u8, u8, u8) = (0x01, 0x08, 0x02);

/// What the driver needs from the machine: the controller's registers, a clock for
/// deadlines, and DMA memory. Bare metal maps BAR0 and uses the TSC; tests use a model.
pub trait NvmeHardware {
    /// A point in time after which a wait gives up.
    type Deadline;

    /// Reads the 32-bit register at `offset` of BAR0.
    fn read32(&mut self, offset: usize) -> u32;

    /// Writes the 32-bit register at `offset` of BAR0.
    fn write32(&mut self, offset: usize, value: u32);

    /// The deadline `ms` milliseconds from now.
    fn deadline_after_ms(&mut self, ms: u64) -> Self::Deadline;

    /// Whether `deadline` has passed.
    fn expired(&mut self, deadline: &Self::Deadline) -> bool;

    /// Zeroed, 4 KiB-aligned, physically contiguous memory of at least `bytes`.
    fn alloc_dma(&mut self, bytes: usize) -> Option<dma::DmaMem>;
}
