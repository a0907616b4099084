//! The raw VMX instructions, the world switch, and the host-state reads the VMCS needs,
//! fenced into one module.
//!
//! `keel_vmx_run` is the world switch (SDM Vol. 3C ch. 26-28): with interrupts off it writes
//! HOST_RSP and HOST_RIP, loads the guest CR2 and the guest GPRs the VMCS does not hold (all
//! but RSP), and executes VMLAUNCH or VMRESUME. A VM exit lands at `keel_vmx_exit` with the
//! host RSP/RIP/CR0/CR3/CR4/segments/EFER/PAT loaded from the VMCS and RFLAGS = 0x2; it stores
//! the guest GPRs and CR2 and sets IF again. A failed VMLAUNCH/VMRESUME falls through with
//! the guest GPRs in the registers and CF (VMfailInvalid) or ZF (VMfailValid) set; the routine
//! reports which.
//!
//! Host interrupts: with "external-interrupt exiting" on and "acknowledge interrupt on exit"
//! off, a host interrupt that arrives in the guest causes a VM exit (reason 1) and stays
//! pending in the local APIC; the `sti` after the switch lets the host take it. That is how
//! the host timer preempts guests.

use core::arch::asm;

/// Guest state the VMCS does not hold: the GPRs in `Gpr` encoding order (slot 4, RSP, is
/// unused: RSP lives in the VMCS) and CR2, which VMX does not switch at all.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    /// RAX … R15 (RSP's slot unused).
    pub gpr: [u64; 16],
    /// CR2.
    pub cr2: u64,
}

// The world switch addresses CR2 at 8*16.
const _: () = assert!(core::mem::offset_of!(GuestRegs, cr2) == 16 * 8);
const _: () = assert!(core::mem::size_of::<GuestRegs>() == 17 * 8);

/// How a VMX instruction failed (SDM Vol. 3C §31.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// CF = 1: there is no current VMCS (or the operand was not acceptable at all).
    Invalid,
    /// ZF = 1: failed with an error number in the current VMCS's VM-instruction error field.
    Valid,
}

/// Turns the flags after a VMX instruction into a result (SDM Vol. 3C §31.2 conventions).
fn flags_result(cf: u8, zf: u8) -> Result<(), VmFail> {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        Err(VmFail::Valid)
    } else {
        Ok(())
    }
}

/// What [`run`] ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunResult {
    /// The guest ran and a VM exit (or a VM-entry failure reported as an exit, with bit 31
    /// of the exit reason set) brought the CPU back.
    Exited,
    /// VMLAUNCH/VMRESUME itself failed.
    Failed(VmFail),
}

core::arch::global_asm!(
    r#"
    .text
    .global keel_vmx_run
    // u64 keel_vmx_run(GuestRegs *regs /* rdi */, u64 launched /* rsi */)
    // returns 0 after a VM exit, 1 for VMfailInvalid, 2 for VMfailValid
keel_vmx_run:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdi                   // [rsp] = regs; HOST_RSP points here
    cli
    mov $0x6c14, %eax           // HOST_RSP
    vmwrite %rsp, %rax
    lea keel_vmx_exit(%rip), %rdx
    mov $0x6c16, %eax           // HOST_RIP
    vmwrite %rdx, %rax
    mov 8*16(%rdi), %rax        // guest CR2: writing CR2 is slow, so only when it differs
    mov %cr2, %rdx
    cmp %rax, %rdx
    je 1f
    mov %rax, %cr2
1:
    test %rsi, %rsi             // ZF = not launched yet; the MOVs below keep the flags
    mov 8*0(%rdi), %rax
    mov 8*1(%rdi), %rcx
    mov 8*2(%rdi), %rdx
    mov 8*3(%rdi), %rbx
    mov 8*5(%rdi), %rbp
    mov 8*6(%rdi), %rsi
    mov 8*8(%rdi), %r8
    mov 8*9(%rdi), %r9
    mov 8*10(%rdi), %r10
    mov 8*11(%rdi), %r11
    mov 8*12(%rdi), %r12
    mov 8*13(%rdi), %r13
    mov 8*14(%rdi), %r14
    mov 8*15(%rdi), %r15
    mov 8*7(%rdi), %rdi
    jnz 2f
    vmlaunch
    jmp 3f
2:
    vmresume
3:
    // VM entry failed: CF = VMfailInvalid, ZF = VMfailValid. The guest GPRs are in the
    // registers and nothing needs them; MOV and Jcc keep the flags.
    mov $2, %eax
    jz 4f
    mov $1, %eax
4:
    add $8, %rsp                // drop the regs pointer
    jmp 5f

    .global keel_vmx_exit
keel_vmx_exit:
    // RSP = HOST_RSP: [rsp] = regs. RFLAGS = 0x2 (interrupts off).
    push %rdi                   // the guest's RDI; [rsp+8] = regs
    mov 8(%rsp), %rdi
    mov %rax, 8*0(%rdi)
    mov %rcx, 8*1(%rdi)
    mov %rdx, 8*2(%rdi)
    mov %rbx, 8*3(%rdi)
    mov %rbp, 8*5(%rdi)
    mov %rsi, 8*6(%rdi)
    mov %r8, 8*8(%rdi)
    mov %r9, 8*9(%rdi)
    mov %r10, 8*10(%rdi)
    mov %r11, 8*11(%rdi)
    mov %r12, 8*12(%rdi)
    mov %r13, 8*13(%rdi)
    mov %r14, 8*14(%rdi)
    mov %r15, 8*15(%rdi)
    pop %rax
    mov %rax, 8*7(%rdi)
    mov %cr2, %rax
    mov %rax, 8*16(%rdi)
    add $8, %rsp                // drop the regs pointer
    xor %eax, %eax
5:
    sti                         // a pending host interrupt (the preemption tick) runs now
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
    fn keel_vmx_run(regs: *mut GuestRegs, launched: u64) -> u64;
}

/// Enters the guest of the current VMCS once and returns after its VM exit.
///
/// # Safety
/// VMX operation must be on (VMXON) on this CPU and the current VMCS must be fully set up:
/// controls that intercept host-owned resources, EPT that maps only the guest's own memory,
/// and host state that restores this kernel (CR3, segments, GDT/IDT/TR, EFER, PAT). `launched`
/// must be the VMCS's launch state. Interrupts must be set up: one may be taken right after
/// the switch back.
pub unsafe fn run(regs: &mut GuestRegs, launched: bool) -> RunResult {
    // SAFETY: forwarded to the caller; the routine saves and restores every callee-saved
    // register, and a VM exit restores the host's RSP (written just before entry), RIP and
    // the rest of the host state from the VMCS.
    match unsafe { keel_vmx_run(regs, u64::from(launched)) } {
        0 => RunResult::Exited,
        1 => RunResult::Failed(VmFail::Invalid),
        _ => RunResult::Failed(VmFail::Valid),
    }
}

/// VMXON with the VMXON region at `pa`.
///
/// # Safety
/// CR4.VMXE and the CR0/CR4 fixed bits must be set, IA32_FEATURE_CONTROL must allow VMX
/// outside SMX, and `pa` must be a 4 KiB page holding the VMCS revision identifier that this
/// CPU owns for as long as VMX operation lasts.
pub unsafe fn vmxon(pa: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the contract; VMXON reads the 64-bit operand in memory.
    unsafe {
        asm!("vmxon [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf,
             options(nostack));
    }
    flags_result(cf, zf)
}

/// VMCLEAR: writes the VMCS at `pa` back to memory, makes it inactive and its launch state
/// clear (and no longer current if it was).
///
/// # Safety
/// VMX operation must be on; `pa` must be a VMCS region (revision identifier written) that
/// the caller owns.
pub unsafe fn vmclear(pa: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the contract.
    unsafe {
        asm!("vmclear [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf,
             out(reg_byte) zf, options(nostack));
    }
    flags_result(cf, zf)
}

/// VMPTRLD: makes the VMCS at `pa` current.
///
/// # Safety
/// VMX operation must be on; `pa` must be a VMCS region the caller owns (VMCLEARed once).
pub unsafe fn vmptrld(pa: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the contract.
    unsafe {
        asm!("vmptrld [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf,
             out(reg_byte) zf, options(nostack));
    }
    flags_result(cf, zf)
}

/// VMREAD of `field` from the current VMCS.
///
/// # Safety
/// VMX operation must be on (VMREAD raises #UD outside it). Without a current VMCS the
/// instruction fails harmlessly with VMfailInvalid.
pub unsafe fn vmread(field: u32) -> Result<u64, VmFail> {
    let value: u64;
    let (cf, zf): (u8, u8);
    // SAFETY: per the contract; VMREAD only reads the current VMCS.
    unsafe {
        asm!("vmread {}, {}", "setc {}", "setz {}", out(reg) value, in(reg) u64::from(field),
             out(reg_byte) cf, out(reg_byte) zf, options(nostack, nomem));
    }
    flags_result(cf, zf).map(|()| value)
}

/// VMWRITE of `value` to `field` in the current VMCS.
///
/// # Safety
/// VMX operation must be on, and the value must not hand the guest anything of the host's
/// (the caller owns the VMCS's meaning).
pub unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: per the contract; VMWRITE only writes the current VMCS.
    unsafe {
        asm!("vmwrite {}, {}", "setc {}", "setz {}", in(reg) u64::from(field), in(reg) value,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack, nomem));
    }
    flags_result(cf, zf)
}

/// INVEPT type 1 (single context) for `eptp`, or type 2 (all contexts) when `eptp` is 0
/// (SDM Vol. 3C §30.3, "INVEPT").
///
/// # Safety
/// VMX operation must be on and the CPU must support the chosen INVEPT type.
pub unsafe fn invept(eptp: u64) -> Result<(), VmFail> {
    let descriptor: [u64; 2] = [eptp, 0];
    let kind: u64 = if eptp == 0 { 2 } else { 1 };
    let (cf, zf): (u8, u8);
    // SAFETY: per the contract; INVEPT only drops cached translations.
    unsafe {
        asm!("invept {}, [{}]", "setc {}", "setz {}", in(reg) kind, in(reg) &descriptor,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    flags_result(cf, zf)
}

/// INVVPID type 1 (single context) for `vpid`, or type 2 (all contexts but VPID 0) when
/// `vpid` is 0 (SDM Vol. 3C §30.3, "INVVPID").
///
/// # Safety
/// VMX operation must be on and the CPU must support the chosen INVVPID type.
pub unsafe fn invvpid(vpid: u16) -> Result<(), VmFail> {
    let descriptor: [u64; 2] = [u64::from(vpid), 0];
    let kind: u64 = if vpid == 0 { 2 } else { 1 };
    let (cf, zf): (u8, u8);
    // SAFETY: per the contract; INVVPID only drops cached translations.
    unsafe {
        asm!("invvpid {}, [{}]", "setc {}", "setz {}", in(reg) kind, in(reg) &descriptor,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    flags_result(cf, zf)
}

/// RDMSR.
///
/// # Safety
/// `msr` must exist on this CPU (RDMSR of an unknown MSR raises #GP in the host).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: per the contract; RDMSR has no side effects.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// WRMSR.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it and safe for the host.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack));
    }
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects (Keel runs at CPL 0).
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)) };
    v
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// The value must keep the host running: same paging, protection and caching as before
/// (only bits such as NE that do not change how the kernel runs may differ).
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: per the contract.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack)) };
}

/// Writes CR4.
///
/// # Safety
/// As for [`write_cr0`]: only bits that enable features (such as VMXE) may change.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: per the contract.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack)) };
}

/// The host's segment selectors, descriptor tables and task register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSegments {
    /// CS, SS, DS, ES, FS, GS, TR selectors.
    pub cs: u16,
    #[allow(missing_docs)]
    pub ss: u16,
    #[allow(missing_docs)]
    pub ds: u16,
    #[allow(missing_docs)]
    pub es: u16,
    #[allow(missing_docs)]
    pub fs: u16,
    #[allow(missing_docs)]
    pub gs: u16,
    #[allow(missing_docs)]
    pub tr: u16,
    /// GDTR base.
    pub gdt_base: u64,
    /// GDTR limit.
    pub gdt_limit: u16,
    /// IDTR base.
    pub idt_base: u64,
}

/// Reads the host's selectors and descriptor-table registers (SGDT, SIDT, STR, MOV from
/// segment registers).
pub fn host_segments() -> HostSegments {
    let mut gdt = [0u8; 10];
    let mut idt = [0u8; 10];
    let (cs, ss, ds, es, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
    // SAFETY: these instructions only read the current selectors and table registers into
    // the 10-byte buffers given.
    unsafe {
        asm!("sgdt [{}]", in(reg) gdt.as_mut_ptr(), options(nostack));
        asm!("sidt [{}]", in(reg) idt.as_mut_ptr(), options(nostack));
        asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack));
        asm!("mov {:x}, ss", out(reg) ss, options(nomem, nostack));
        asm!("mov {:x}, ds", out(reg) ds, options(nomem, nostack));
        asm!("mov {:x}, es", out(reg) es, options(nomem, nostack));
        asm!("mov {:x}, fs", out(reg) fs, options(nomem, nostack));
        asm!("mov {:x}, gs", out(reg) gs, options(nomem, nostack));
        asm!("str {:x}", out(reg) tr, options(nomem, nostack));
    }
    let base = |b: &[u8; 10]| {
        let mut q = [0u8; 8];
        q.copy_from_slice(&b[2..10]);
        u64::from_le_bytes(q)
    };
    HostSegments {
        cs,
        ss,
        ds,
        es,
        fs,
        gs,
        tr,
        gdt_base: base(&gdt),
        gdt_limit: u16::from_le_bytes([gdt[0], gdt[1]]),
        idt_base: base(&idt),
    }
}

/// Reads the 16-byte system descriptor at `selector` in the host GDT (for the TR base).
///
/// # Safety
/// `gdt_base` must be the host's GDTR base, mapped, and `selector` must index a 16-byte
/// system descriptor within the GDT limit.
pub unsafe fn read_gdt_system_descriptor(gdt_base: u64, selector: u16) -> [u64; 2] {
    let p = (gdt_base + u64::from(selector & !7)) as *const u64;
    // SAFETY: per the contract; the GDT is not written concurrently.
    unsafe { [p.read_unaligned(), p.add(1).read_unaligned()] }
}

/// Delivers an NMI that a VM exit consumed to the host's own NMI handler (`INT 2` runs the
/// handler through the IDT, as the NMI would have).
pub fn raise_host_nmi() {
    // SAFETY: vector 2 has a handler in the host IDT (every vector does); the handler
    // returns with IRET like any interrupt handler.
    unsafe { asm!("int 2", options(nomem)) };
}

/// Reads the TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and CR4.TSD is clear in the host.
    unsafe { core::arch::x86_64::_rdtsc() }
}
