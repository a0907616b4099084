//! Local APIC (x2APIC through MSRs when the CPU has it, else xAPIC through MMIO) and IOAPIC.
//!
//! The legacy 8259 PICs are remapped out of the exception range and fully masked; device
//! interrupts come through the IOAPIC, the timer from the local APIC (SDM Vol. 3A ch. 11).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arch::cpu::{self, port};
use crate::arch::idt::SPURIOUS_VECTOR;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

/// Local APIC register offsets (xAPIC MMIO offset; x2APIC MSR = 0x800 + offset / 16).
pub mod reg {
    pub const ID: u32 = 0x020;
    pub const EOI: u32 = 0x0b0;
    pub const SPURIOUS: u32 = 0x0f0;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

/// LVT mask bit.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT timer periodic mode.
pub const LVT_TIMER_PERIODIC: u32 = 1 << 17;

static X2APIC: AtomicBool = AtomicBool::new(false);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);

/// Which local APIC mode is in use, for the banner and `cpus`.
pub fn mode_name() -> &'static str {
    if X2APIC.load(Ordering::Relaxed) {
        "x2APIC"
    } else {
        "xAPIC"
    }
}

/// Reads a local APIC register.
pub fn read(offset: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled, so the 0x800.. MSR range exists; every offset used
        // here is a readable architectural register.
        unsafe { cpu::rdmsr(0x800 + (offset >> 4)) as u32 }
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: `base` is the xAPIC page, mapped uncached by `init`; offsets are registers.
        unsafe { core::ptr::read_volatile((base + u64::from(offset)) as *const u32) }
    }
}

/// Writes a local APIC register.
pub fn write(offset: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: as in `read`; writes go to architectural registers with valid values.
        unsafe { cpu::wrmsr(0x800 + (offset >> 4), u64::from(value)) }
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((base + u64::from(offset)) as *mut u32, value) }
    }
}

/// Signals end of interrupt.
pub fn end_of_interrupt() {
    write(reg::EOI, 0);
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    let raw = read(reg::ID);
    if X2APIC.load(Ordering::Relaxed) {
        raw
    } else {
        raw >> 24
    }
}

fn mask_legacy_pics() {
    // SAFETY: standard 8259 ports. Remap to 0x20/0x28 with the ICW sequence so a stray
    // interrupt cannot look like an exception, then mask every line.
    unsafe {
        for (cmd, data, offset, cascade) in [(0x20u16, 0x21u16, 0x20u8, 4u8), (0xa0, 0xa1, 0x28, 2)]
        {
            port::outb(cmd, 0x11);
            port::outb(data, offset);
            port::outb(data, cascade);
            port::outb(data, 0x01);
            port::outb(data, 0xff);
        }
    }
}

/// Masks the PICs and enables this CPU's local APIC (x2APIC when available).
pub fn init() {
    mask_legacy_pics();
    enable_local_apic();
}

/// Enables an application processor's local APIC in the boot CPU's mode (the xAPIC page is
/// at the same address on every CPU and already mapped).
pub fn init_application_processor() {
    enable_local_apic();
}

/// Whether the local APICs run in x2APIC mode.
pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// ICR delivery status (xAPIC): set while the APIC is still sending the last IPI.
const ICR_SEND_PENDING: u32 = 1 << 12;
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;
const X2APIC_ICR_MSR: u32 = 0x830;

/// ICR command: INIT, level assert (SDM Vol. 3A §11.6.1).
pub const ICR_INIT: u32 = 0x0000_4500;
/// ICR command: start-up IPI; the vector is the start page number.
pub const ICR_STARTUP: u32 = 0x0000_4600;
/// ICR command: fixed delivery of the vector in the low byte.
pub const ICR_FIXED: u32 = 0x0000_4000;

/// Sends the IPI `command` (an `ICR_*` value, vector included) to the CPU with `apic_id`.
/// Returns false if an xAPIC never cleared its delivery-status bit within 10 ms.
pub fn send_ipi(apic_id: u32, command: u32) -> bool {
    if is_x2apic() {
        // SAFETY: in x2APIC mode the ICR is MSR 0x830, one 64-bit write (destination in the
        // high half); the command values are architectural IPI encodings.
        unsafe {
            cpu::wrmsr(
                X2APIC_ICR_MSR,
                (u64::from(apic_id) << 32) | u64::from(command),
            )
        };
        return true;
    }
    let deadline = crate::arch::timer::Deadline::after_ms(10);
    while read(ICR_LOW) & ICR_SEND_PENDING != 0 {
        if deadline.expired() {
            return false;
        }
        core::hint::spin_loop();
    }
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, command);
    while read(ICR_LOW) & ICR_SEND_PENDING != 0 {
        if deadline.expired() {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn enable_local_apic() {
    let has_x2apic = cpu::cpuid(1, 0).ecx & (1 << 21) != 0;
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (all x86_64 CPUs).
    let base = unsafe { cpu::rdmsr(IA32_APIC_BASE) };
    if has_x2apic {
        // SAFETY: enabling x2APIC from xAPIC mode (or keeping it) is the documented sequence:
        // set EN, then EXTD (SDM Vol. 3A §11.12.1).
        unsafe { cpu::wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC) };
        X2APIC.store(true, Ordering::Relaxed);
    } else {
        let phys = base & 0x000f_ffff_ffff_f000;
        // SAFETY: setting the global enable bit keeps the base the firmware chose.
        unsafe { cpu::wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE) };
        if XAPIC_BASE.load(Ordering::Relaxed) == 0 {
            XAPIC_BASE.store(crate::mm::map_mmio(phys, 0x1000), Ordering::Relaxed);
        }
    }
    write(reg::SPURIOUS, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(reg::LVT_LINT0, LVT_MASKED);
    write(reg::LVT_LINT1, LVT_MASKED);
    write(reg::LVT_ERROR, LVT_MASKED);
    write(reg::LVT_TIMER, LVT_MASKED);
}

/// An IOAPIC found in the MADT.
#[derive(Clone, Copy, Debug)]
pub struct IoApic {
    /// Virtual (identity, uncached) address of the register window.
    pub base: u64,
    /// First global system interrupt it serves.
    pub gsi_base: u32,
}

impl IoApic {
    /// Maps the IOAPIC at `phys`.
    pub fn new(phys: u64, gsi_base: u32) -> IoApic {
        IoApic {
            base: crate::mm::map_mmio(phys, 0x1000),
            gsi_base,
        }
    }

    fn write_reg(&self, index: u32, value: u32) {
        // SAFETY: IOREGSEL at +0 and IOWIN at +0x10 of a mapped IOAPIC window.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, index);
            core::ptr::write_volatile((self.base + 0x10) as *mut u32, value);
        }
    }

    fn read_reg(&self, index: u32) -> u32 {
        // SAFETY: as in `write_reg`.
        unsafe {
            core::ptr::write_volatile(self.base as *mut u32, index);
            core::ptr::read_volatile((self.base + 0x10) as *const u32)
        }
    }

    /// Number of redirection entries.
    pub fn entries(&self) -> u32 {
        ((self.read_reg(1) >> 16) & 0xff) + 1
    }

    /// Whether this IOAPIC serves `gsi`.
    pub fn serves(&self, gsi: u32) -> bool {
        gsi >= self.gsi_base && gsi < self.gsi_base + self.entries()
    }

    /// Routes `gsi` to `vector` on the CPU with `apic_id`, fixed delivery, unmasked.
    pub fn route(&self, gsi: u32, vector: u8, apic_id: u32, level: bool, active_low: bool) {
        let index = 0x10 + 2 * (gsi - self.gsi_base);
        let mut low = u32::from(vector);
        if active_low {
            low |= 1 << 13;
        }
        if level {
            low |= 1 << 15;
        }
        self.write_reg(index + 1, apic_id << 24);
        self.write_reg(index, low);
    }
}
