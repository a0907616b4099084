//! The raw SVM instructions and the world switch, fenced into one module.
//!
//! `keel_svm_run` is the world switch (APM Vol. 2 §15.5): with GIF cleared it VMSAVEs the
//! host's extra state (FS/GS/TR/LDTR bases, KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK,
//! SYSENTER), loads the guest GPRs that the VMCB does not hold, VMLOADs and VMRUNs the guest,
//! VMSAVEs it on #VMEXIT, stores the guest GPRs, VMLOADs the host state back and sets GIF.
//! VMRUN itself saves and restores the host's RSP, RIP, RFLAGS, RAX, CR0/3/4, EFER, GDTR,
//! IDTR and ES/CS/SS/DS through the host save area (VM_HSAVE_PA).
//!
//! Host interrupts: RFLAGS.IF is set while GIF is clear, so a host interrupt that arrives in
//! the guest causes `VMEXIT_INTR` (V_INTR_MASKING is on) and is taken by the host right after
//! GIF is set again. That is how the host timer preempts guests.

use core::arch::asm;

/// Guest GPRs not kept in the VMCB (RAX and RSP are), in `Gpr` encoding order; slots 0 and 4
/// are unused placeholders so indices match `Gpr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestGprs(pub [u64; 16]);

core::arch::global_asm!(
    r#"
    .text
    .global keel_svm_run
    // void keel_svm_run(u64 vmcb_pa /* rdi */, GuestGprs *gprs /* rsi */, u64 host_save_pa /* rdx */)
keel_svm_run:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    push %rsi                   // [rsp+16] gprs
    push %rdi                   // [rsp+8]  guest vmcb
    push %rdx                   // [rsp+0]  host save area
    cli
    clgi
    sti                         // IF=1 under GIF=0: interrupts wait, and exit the guest
    mov %rdx, %rax
    vmsave %rax
    mov 8*1(%rsi), %rcx
    mov 8*2(%rsi), %rdx
    mov 8*3(%rsi), %rbx
    mov 8*5(%rsi), %rbp
    mov 8*7(%rsi), %rdi
    mov 8*8(%rsi), %r8
    mov 8*9(%rsi), %r9
    mov 8*10(%rsi), %r10
    mov 8*11(%rsi), %r11
    mov 8*12(%rsi), %r12
    mov 8*13(%rsi), %r13
    mov 8*14(%rsi), %r14
    mov 8*15(%rsi), %r15
    mov 8*6(%rsi), %rsi
    mov 8(%rsp), %rax
    vmload %rax
    vmrun %rax
    vmsave %rax
    mov 16(%rsp), %rax          // gprs
    mov %rcx, 8*1(%rax)
    mov %rdx, 8*2(%rax)
    mov %rbx, 8*3(%rax)
    mov %rbp, 8*5(%rax)
    mov %rsi, 8*6(%rax)
    mov %rdi, 8*7(%rax)
    mov %r8, 8*8(%rax)
    mov %r9, 8*9(%rax)
    mov %r10, 8*10(%rax)
    mov %r11, 8*11(%rax)
    mov %r12, 8*12(%rax)
    mov %r13, 8*13(%rax)
    mov %r14, 8*14(%rax)
    mov %r15, 8*15(%rax)
    pop %rax                    // host save area
    vmload %rax
    cli
    stgi
    sti                         // a pending host interrupt (the preemption tick) runs now
    add $16, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn keel_svm_run(vmcb_pa: u64, gprs: *mut GuestGprs, host_save_pa: u64);
}

/// Runs the guest once.
///
/// # Safety
/// SVM must be enabled on this CPU (EFER.SVME, VM_HSAVE_PA set); `vmcb_pa` must be a valid
/// VMCB whose nested page tables map only the guest's own memory; `host_save_pa` a 4 KiB
/// page for the host's VMSAVE state; interrupts must be set up (an interrupt may be taken
/// right after the switch back).
pub unsafe fn run(vmcb_pa: u64, gprs: &mut GuestGprs, host_save_pa: u64) {
    // SAFETY: forwarded to the caller; the routine restores every callee-saved register and
    // the host state it changes.
    unsafe { keel_svm_run(vmcb_pa, gprs, host_save_pa) }
}

const MSR_EFER: u32 = 0xc000_0080;
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
const EFER_SVME: u64 = 1 << 12;

/// Enables SVM on this CPU with the given host save area.
///
/// # Safety
/// The CPU must support SVM and not have it disabled (detection said so); `hsave_pa` must
/// be a 4 KiB page owned by this CPU forever.
pub unsafe fn enable(hsave_pa: u64) {
    // SAFETY: EFER and VM_HSAVE_PA exist on SVM-capable CPUs; setting SVME only enables the
    // SVM instructions, and the save area is owned by the caller.
    unsafe {
        let (lo, hi): (u32, u32);
        asm!("rdmsr", in("ecx") MSR_EFER, out("eax") lo, out("edx") hi, options(nomem, nostack));
        let efer = (u64::from(hi) << 32) | u64::from(lo) | EFER_SVME;
        asm!("wrmsr", in("ecx") MSR_EFER, in("eax") efer as u32, in("edx") (efer >> 32) as u32,
             options(nostack));
        asm!("wrmsr", in("ecx") MSR_VM_HSAVE_PA, in("eax") hsave_pa as u32,
             in("edx") (hsave_pa >> 32) as u32, options(nostack));
    }
}

/// Reads the TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and CR4.TSD is clear in the host.
    unsafe { core::arch::x86_64::_rdtsc() }
}
