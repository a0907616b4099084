//! The interrupt descriptor table, the assembly entry stubs and the Rust dispatcher.
//!
//! All 256 vectors share one stub shape: push a zero error code where the CPU pushes none,
//! push the vector, save the general registers and call [`isr_dispatch`] with the frame.
//! Exceptions print a full report (vector, error code, RIP, CR2, registers) and halt the CPU;
//! device vectors go to their drivers.

use core::fmt::Write;

use crate::arch::{apic, cpu, gdt};
use crate::serial::EmergencyWriter;

/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 0x20;
/// Vector of the COM1 receive interrupt (through the IOAPIC).
pub const COM1_VECTOR: u8 = 0x24;
/// Vector of the kick IPI (`smp::kick`): its handler only signals end of interrupt; taking
/// it is what matters (a guest exits, a halted CPU wakes).
pub const KICK_VECTOR: u8 = 0xf0;
/// Vector the local APIC uses for spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Registers saved by the stubs, in stack order (lowest address first).
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

core::arch::global_asm!(
    r#"
    .text
    .balign 16
    .global keel_isr_stubs
keel_isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp keel_isr_common
    .set vec, vec + 1
    .endr

keel_isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    cld
    movq %rsp, %rdi
    call {dispatch}
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
"#,
    dispatch = sym isr_dispatch,
    options(att_syntax)
);

unsafe extern "C" {
    static keel_isr_stubs: u8;
}

#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct IdtEntry([u64; 2]);

static mut IDT: [IdtEntry; 256] = [IdtEntry([0; 2]); 256];

fn gate(handler: u64, selector: u16, ist: u16) -> IdtEntry {
    // 64-bit interrupt gate, present, DPL 0 (SDM Vol. 3A §6.14.1).
    let low = (handler & 0xffff)
        | (u64::from(selector) << 16)
        | (u64::from(ist & 0x7) << 32)
        | (0x8e << 40)
        | ((handler >> 16) & 0xffff) << 48;
    IdtEntry([low, handler >> 32])
}

/// Fills and loads the IDT on this CPU.
pub fn init() {
    let stubs = core::ptr::addr_of!(keel_isr_stubs) as u64;
    let selector = gdt::kernel_code_selector();
    for vector in 0..256u64 {
        let ist = match vector {
            2 => gdt::IST_NMI,
            8 => gdt::IST_DOUBLE_FAULT,
            18 => gdt::IST_MACHINE_CHECK,
            _ => 0,
        };
        let entry = gate(stubs + vector * 16, selector, ist);
        // SAFETY: boot runs single-threaded with interrupts off; nothing reads the IDT while it
        // is being filled, and the index is in bounds.
        unsafe { (*core::ptr::addr_of_mut!(IDT))[vector as usize] = entry };
    }
    load();
}

/// Loads the (already filled) IDT on this CPU: application processors share the boot
/// CPU's handlers.
pub fn load() {
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<[IdtEntry; 256]>() - 1) as u16,
        base: x86_64::VirtAddr::new(core::ptr::addr_of!(IDT) as u64),
    };
    // SAFETY: the IDT is a static that lives forever and every entry points at a stub.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

/// Mnemonic and name of an exception vector.
pub fn exception_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point error"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        28 => ("#HV", "hypervisor injection"),
        29 => ("#VC", "VMM communication"),
        30 => ("#SX", "security exception"),
        _ => ("#??", "reserved exception"),
    }
}

extern "C" fn isr_dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        13 => {
            if let Some(resume) = cpu::fault_fixup(frame.rip) {
                frame.rip = resume;
                return;
            }
            exception(frame)
        }
        v if v < 32 => exception(frame),
        v if v == u64::from(TIMER_VECTOR) => {
            crate::arch::timer::on_tick();
            apic::end_of_interrupt();
        }
        v if v == u64::from(COM1_VECTOR) => {
            crate::serial::drain_rx();
            apic::end_of_interrupt();
        }
        v if v == u64::from(KICK_VECTOR) => apic::end_of_interrupt(),
        v if v == u64::from(SPURIOUS_VECTOR) => {}
        _ => apic::end_of_interrupt(),
    }
}

fn exception(frame: &TrapFrame) -> ! {
    let (mnemonic, name) = exception_name(frame.vector);
    let cr2 = cpu::cr2();
    let mut w = EmergencyWriter;
    let _ = writeln!(
        w,
        "\n*** KERNEL EXCEPTION: {mnemonic} {name} (vector {}) ***",
        frame.vector
    );
    let _ = writeln!(w, "  error code: {:#018x}", frame.error_code);
    let _ = writeln!(
        w,
        "  rip: {:#018x}  cs: {:#06x}  rflags: {:#010x}",
        frame.rip, frame.cs, frame.rflags
    );
    let _ = writeln!(w, "  rsp: {:#018x}  ss: {:#06x}", frame.rsp, frame.ss);
    let _ = writeln!(w, "  cr2: {:#018x}  cr3: {:#018x}", cr2, cpu::cr3());
    let regs = [
        ("rax", frame.rax),
        ("rbx", frame.rbx),
        ("rcx", frame.rcx),
        ("rdx", frame.rdx),
        ("rsi", frame.rsi),
        ("rdi", frame.rdi),
        ("rbp", frame.rbp),
        ("r8", frame.r8),
        ("r9", frame.r9),
        ("r10", frame.r10),
        ("r11", frame.r11),
        ("r12", frame.r12),
        ("r13", frame.r13),
        ("r14", frame.r14),
        ("r15", frame.r15),
    ];
    for row in regs.chunks(3) {
        for (name, value) in row {
            let _ = write!(w, "  {name:>3}: {value:#018x}");
        }
        let _ = writeln!(w);
    }
    if let Some(guard) = crate::mm::stack_guard_page() {
        let hit = |addr: u64| (guard..guard + 4096).contains(&addr);
        if frame.vector == 8 && (hit(cr2) || hit(frame.rsp)) {
            let _ = writeln!(
                w,
                "  kernel stack overflow: the stack ran into its guard page at {guard:#x}"
            );
        }
    }
    defmt::error!(
        "kernel exception: vector {=u64} rip {=u64:#x}",
        frame.vector,
        frame.rip
    );
    let _ = writeln!(w, "system halted");
    cpu::halt_forever()
}
