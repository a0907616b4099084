//! Power-off (ACPI S5) and reset (FADT reset register, then the keyboard controller).

use super::{Platform, Register};
use crate::arch::cpu::{self, port};

const SLP_EN: u16 = 1 << 13;
const SCI_EN: u16 = 1 << 0;
const SLP_TYP_SHIFT: u16 = 10;

/// Why power-off could not happen.
#[derive(Clone, Copy, Debug, thiserror::Error)]
pub enum PowerError {
    /// The firmware tables lack the PM1 control register or `\_S5`.
    #[error("ACPI soft-off is not available on this machine (no PM1 control register or \\_S5)")]
    NoAcpiSoftOff,
    /// The register was written but the machine is still running.
    #[error("the machine ignored the ACPI S5 request")]
    StillRunning,
}

fn read16(reg: Register) -> u16 {
    match reg {
        // SAFETY: the FADT names this port as the PM1 control register.
        Register::Io(p) => unsafe { port::inb(p) as u16 | (u16::from(port::inb(p + 1)) << 8) },
        Register::Memory(a) => {
            let v = crate::mm::map_mmio(a, 2);
            // SAFETY: the FADT names this address as the register; mapped uncached above.
            unsafe { core::ptr::read_volatile(v as *const u16) }
        }
        Register::PciConfig { .. } => 0,
    }
}

fn write16(reg: Register, value: u16) {
    match reg {
        // SAFETY: the FADT names this port as the PM1 control register.
        Register::Io(p) => unsafe { port::outw(p, value) },
        Register::Memory(a) => {
            let v = crate::mm::map_mmio(a, 2);
            // SAFETY: as in `read16`.
            unsafe { core::ptr::write_volatile(v as *mut u16, value) }
        }
        Register::PciConfig { .. } => {}
    }
}

fn write8(reg: Register, value: u8) {
    match reg {
        // SAFETY: the FADT names this port as the reset register.
        Register::Io(p) => unsafe { port::outb(p, value) },
        Register::Memory(a) => {
            let v = crate::mm::map_mmio(a, 1);
            // SAFETY: the FADT names this address as the reset register.
            unsafe { core::ptr::write_volatile(v as *mut u8, value) }
        }
        Register::PciConfig {
            device,
            function,
            offset,
        } => {
            let address = 0x8000_0000
                | (u32::from(device) << 11)
                | (u32::from(function) << 8)
                | u32::from(offset & 0xfc);
            // SAFETY: the standard PCI configuration mechanism #1 ports, used to write the
            // register the FADT names for reset.
            unsafe {
                port::outl(0xcf8, address);
                port::outb(0xcfc + (offset & 3), value);
            }
        }
    }
}

fn settle() {
    // About 100 ms at any plausible TSC rate, without relying on interrupts.
    let start = cpu::rdtsc();
    let hz = crate::arch::timer::tsc_hz().max(1_000_000);
    while cpu::rdtsc().wrapping_sub(start) < hz / 10 {
        core::hint::spin_loop();
    }
}

/// Powers the machine off through ACPI S5. Returns only if that failed.
pub fn poweroff(platform: &Platform) -> PowerError {
    let (Some(pm1a), Some(s5)) = (platform.pm1a_control, platform.s5) else {
        return PowerError::NoAcpiSoftOff;
    };
    x86_64::instructions::interrupts::disable();
    // Switch the chipset to ACPI mode first if the firmware left it in legacy mode.
    if read16(pm1a) & SCI_EN == 0
        && let Some((smi, value)) = platform.acpi_enable
    {
        // SAFETY: the FADT's SMI command port and its ACPI_ENABLE value.
        unsafe { port::outb(smi, value) };
        for _ in 0..30 {
            if read16(pm1a) & SCI_EN != 0 {
                break;
            }
            settle();
        }
    }
    defmt::info!("ACPI S5: SLP_TYPa={=u8} SLP_TYPb={=u8}", s5.a, s5.b);
    let keep = |v: u16| v & !(0x7 << SLP_TYP_SHIFT) & !SLP_EN;
    if let Some(pm1b) = platform.pm1b_control {
        write16(
            pm1b,
            keep(read16(pm1b)) | (u16::from(s5.b) << SLP_TYP_SHIFT) | SLP_EN,
        );
    }
    write16(
        pm1a,
        keep(read16(pm1a)) | (u16::from(s5.a) << SLP_TYP_SHIFT) | SLP_EN,
    );
    for _ in 0..20 {
        settle();
    }
    PowerError::StillRunning
}

/// Resets the machine: FADT reset register, the chipset reset control register (0xCF9),
/// the keyboard controller, then a triple fault.
///
/// 0xCF9 comes before the keyboard controller because the latter is only a CPU ("soft")
/// reset: MSRs such as IA32_FEATURE_CONTROL stay locked, and firmware that writes them at
/// start-up (Bochs' BIOS does) then faults. A full reset through 0xCF9 (value 6: system reset
/// + reset CPU) starts from power-on state on PIIX/ICH chipsets, QEMU and Bochs alike.
pub fn reboot(platform: &Platform) -> ! {
    x86_64::instructions::interrupts::disable();
    if let Some((reg, value)) = platform.reset {
        defmt::info!("reset through the FADT reset register");
        write8(reg, value);
        settle();
    }
    defmt::info!("reset through the reset control register (0xcf9)");
    write8(Register::Io(0xcf9), 0x06);
    settle();
    defmt::info!("reset through the keyboard controller");
    // SAFETY: the 8042 command port; 0xFE pulses the CPU reset line. Waiting for the input
    // buffer to drain first is the documented handshake (bounded here).
    unsafe {
        for _ in 0..100_000 {
            if port::inb(0x64) & 0x02 == 0 {
                break;
            }
        }
        port::outb(0x64, 0xfe);
    }
    settle();
    // Last resort: a triple fault always resets.
    let empty = x86_64::structures::DescriptorTablePointer {
        limit: 0,
        base: x86_64::VirtAddr::new(0),
    };
    // SAFETY: loading an empty IDT and raising an exception deliberately triple-faults the
    // CPU, which resets the machine; nothing runs afterwards.
    unsafe {
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("int3", options(nomem, nostack));
    }
    cpu::halt_forever()
}
