//! Intel gigabit NIC driver: the 8254x ("e1000": the 82540EM that QEMU's `-M pc` and Bochs'
//! `e1000` plugin emulate, and the 82545EM/82544GC QEMU also offers), the 82574L ("e1000e",
//! QEMU q35's usual NIC) and the igb family (I210/I211/I350, common onboard server NICs;
//! untested on hardware: QEMU 7.2 has no model, the register logic is host-tested only).
//! What differs between them is in [`model`]; the bring-up sequences in [`bringup`].
//!
//! Polled operation with legacy descriptors: one ring of [`RING_LEN`] receive descriptors
//! and one of transmit descriptors, each descriptor owning a fixed 2 KiB buffer, all in
//! frames from the frame allocator (identity-mapped, so buffer addresses are physical).
//! Interrupts are masked at the device; the kernel polls from its loop. Initialization
//! follows the manual's §14 ("General Initialization and Reset Operation"): §14.3 general
//! configuration, §14.4 receive and §14.5 transmit initialization.
//!
//! Register offsets, bits and descriptor layouts are in [`regs`]; the few `unsafe` blocks
//! here are the MMIO accessors and the descriptor/buffer accesses in DMA memory.

pub mod bringup;
pub mod model;
pub mod regs;

#[cfg(target_os = "none")]
mod driver;

#[cfg(target_os = "none")]
pub use driver::*;

/// Descriptors per ring: a multiple of 8 so the ring length is a multiple of 128 bytes
/// (§13.4.27). The driver is polled (at least every 10 ms timer tick), so the receive ring
/// must hold a whole burst: QEMU's e1000 drops what arrives while the ring is full, and with
/// 32 descriptors fifty simultaneous connections lost a third of their SYNs (slirp resends
/// them only after 6 s). 256 descriptors take 4 KiB and 512 KiB of buffers per ring.
pub const RING_LEN: usize = 256;

/// Bytes per packet buffer (RCTL.BSIZE = 2048).
pub const BUFFER_SIZE: usize = 2048;

const _: () = assert!(RING_LEN.is_multiple_of(8));
