//! Raw CPU instructions: CPUID, MSRs (with a fault-tolerant RDMSR), port I/O, TSC, halting.
//!
//! Every `unsafe` block for these instructions lives here, each wrapped in a function whose
//! contract says when it is sound. Callers elsewhere use the safe wrappers.

use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, _rdtsc};

pub use keel_vmm::detect::CpuidResult;

/// Executes CPUID for `leaf`/`subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = __cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is unprivileged-safe and side-effect free (CR4.TSD is never set by Keel).
    unsafe { _rdtsc() }
}

/// Reads an MSR the caller knows exists (architectural, or checked through CPUID).
///
/// # Safety
/// The MSR must exist on this CPU, or the read faults (#GP) and the kernel halts.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR only reads.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must be one that keeps the kernel's invariants (paging,
/// interrupts, memory types) intact.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack))
    };
}

core::arch::global_asm!(
    r#"
    .text
    .global keel_rdmsr_safe
    // u32 keel_rdmsr_safe(u32 msr /* edi */, u64 *out /* rsi */): 0 = ok, 1 = #GP.
keel_rdmsr_safe:
    movl %edi, %ecx
    .global keel_rdmsr_safe_insn
keel_rdmsr_safe_insn:
    rdmsr
    movl %eax, (%rsi)
    movl %edx, 4(%rsi)
    xorl %eax, %eax
    ret
    .global keel_rdmsr_safe_fixup
keel_rdmsr_safe_fixup:
    movl $1, %eax
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn keel_rdmsr_safe(msr: u32, out: *mut u64) -> u32;
    static keel_rdmsr_safe_insn: u8;
    static keel_rdmsr_safe_fixup: u8;
}

/// Reads an MSR that may not exist: `None` if RDMSR raised #GP.
///
/// The exception handler recognises a #GP at `keel_rdmsr_safe_insn` and resumes at the fixup,
/// so probing unknown MSRs (e.g. VM_CR under an emulator) cannot bring the kernel down.
pub fn rdmsr_safe(msr: u32) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: the routine only executes RDMSR and stores 8 bytes into `value`; a #GP is turned
    // into a return of 1 by the exception handler (see `fault_fixup`).
    let failed = unsafe { keel_rdmsr_safe(msr, &mut value) };
    (failed == 0).then_some(value)
}

/// If `rip` is an instruction with a registered fixup, the address to resume at.
pub fn fault_fixup(rip: u64) -> Option<u64> {
    let insn = core::ptr::addr_of!(keel_rdmsr_safe_insn) as u64;
    (rip == insn).then_some(core::ptr::addr_of!(keel_rdmsr_safe_fixup) as u64)
}

/// Port I/O.
pub mod port {
    use core::arch::asm;

    /// Writes a byte to an I/O port.
    ///
    /// # Safety
    /// The port must belong to a device the caller drives, and the write must be valid for it.
    pub unsafe fn outb(port: u16, value: u8) {
        // SAFETY: forwarded to the caller.
        unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
    }

    /// Reads a byte from an I/O port.
    ///
    /// # Safety
    /// The port must belong to a device the caller drives (reads can have side effects).
    pub unsafe fn inb(port: u16) -> u8 {
        let value: u8;
        // SAFETY: forwarded to the caller.
        unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
        value
    }

    /// Writes a 16-bit word to an I/O port.
    ///
    /// # Safety
    /// As for [`outb`].
    pub unsafe fn outw(port: u16, value: u16) {
        // SAFETY: forwarded to the caller.
        unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack)) };
    }

    /// Reads a 16-bit word from an I/O port.
    ///
    /// # Safety
    /// As for [`inb`].
    pub unsafe fn inw(port: u16) -> u16 {
        let value: u16;
        // SAFETY: forwarded to the caller.
        unsafe { asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack)) };
        value
    }

    /// Reads a 32-bit word from an I/O port.
    ///
    /// # Safety
    /// As for [`inb`].
    pub unsafe fn inl(port: u16) -> u32 {
        let value: u32;
        // SAFETY: forwarded to the caller.
        unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack)) };
        value
    }

    /// Writes a 32-bit word to an I/O port.
    ///
    /// # Safety
    /// As for [`outb`].
    pub unsafe fn outl(port: u16, value: u32) {
        // SAFETY: forwarded to the caller.
        unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) };
    }
}

/// Enables interrupts and halts until the next one, atomically (STI's one-instruction shadow
/// covers HLT, so a wake-up cannot be lost between the check and the halt).
pub fn wait_for_interrupt() {
    // SAFETY: interrupts are set up before the first call (IDT loaded, APIC configured).
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: stopping this CPU is always allowed; NMIs return here and halt again.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Runs `f` with interrupts disabled, restoring the previous state afterwards.
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(f)
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// Reads CR3.
pub fn cr3() -> u64 {
    let (frame, _) = x86_64::registers::control::Cr3::read();
    frame.start_address().as_u64()
}
