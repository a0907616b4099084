//! x86_64 machine code the kernel needs: raw instructions, descriptor tables, interrupt
//! controllers and timers. Each file owns one piece of hardware state.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod rtc;
pub mod timer;
