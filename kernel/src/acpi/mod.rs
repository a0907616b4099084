//! ACPI: what the firmware tables say about CPUs, interrupt routing, power-off and reset.
//!
//! Tables are read once at boot through the `acpi` crate (no allocator needed) and distilled
//! into a plain [`Platform`] value; `s5` finds the soft-off sleep type in the DSDT; `power`
//! performs ACPI S5 power-off and reset. Every table the crate maps is recorded so the frame
//! allocator never hands those pages out.

pub mod s5;
pub mod spcr;

#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
pub mod power;

#[cfg(target_os = "none")]
pub use platform::*;
