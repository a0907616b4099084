//! x86_64 machine code the kernel needs: raw instructions, descriptor tables, interrupt
//! controllers and timers. Each file owns one piece of hardware state.
//!
//! Only `smp`'s pure planning parts build for the host (for their unit tests); everything
//! else here touches the machine.

#[cfg(target_os = "none")]
pub mod apic;
#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(target_os = "none")]
pub mod gdt;
#[cfg(target_os = "none")]
pub mod idt;
#[cfg(target_os = "none")]
pub mod rtc;
pub mod smp;
#[cfg(target_os = "none")]
pub mod timer;
