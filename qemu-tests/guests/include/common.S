# common.S - constants and macros shared by every Keel test guest.
#
# Every guest `.include`s this file first.  It emits no bytes where it is
# included: it only defines constants and macros.  Data that the macros need
# (the GDT, strings) is put in subsection 1 of .text, which the assembler places
# after all the code in subsection 0, so the first bytes of every guest binary
# are always its own entry code at 0x7C00.
#
# The guests are flat binaries linked with `ld -Ttext=0x7c00 --oformat binary`.
# Keel's VMM (like a BIOS loading a boot sector) copies the whole file to
# guest-physical 0x7C00 and starts it in 16-bit real mode at CS:IP = 0000:7C00.
# There is no BIOS behind the guest: no IVT, no BIOS services, so the guests talk
# to the hardware (COM1) directly and run with interrupts disabled.

# ---------------------------------------------------------------------------
# Hardware
# ---------------------------------------------------------------------------
        .set COM1_THR, 0x3F8            # COM1 transmit holding register: write a byte here
        .set COM1_LSR, 0x3FD            # COM1 line status register
        .set LSR_THR_EMPTY, 0x20        # LSR bit 5: THR empty, the UART takes another byte

        .set MSR_EFER, 0xC0000080       # extended feature enable register
        .set EFER_LME, 0x100            # EFER bit 8: long mode enable
        .set CR0_PE, 0x1                # CR0 bit 0: protected mode
        .set CR0_PG, 0x80000000         # CR0 bit 31: paging
        .set CR4_PAE, 0x20              # CR4 bit 5: physical address extension (needed for long mode)

# ---------------------------------------------------------------------------
# Guest memory layout (guest-physical addresses)
# ---------------------------------------------------------------------------
#   0x00000 - 0x003FF   real-mode IVT (only hostile-vmrun writes an entry)
#   0x00500 - 0x07BFF   stack, growing down from STACK_TOP
#   0x07C00 - 0x17BFF   the payload itself (at most 64 KiB)
#   0x20000 - 0x25FFF   long-mode page tables (PML4, PDPT, 4 page directories)
#   0x26000 - 0x261FF   the 64-bit IDT (32 vectors)
# Everything stays below 1 MiB, inside even the smallest guest RAM.
        .set LOAD_ADDR, 0x7C00
        .set STACK_TOP, 0x7C00
        .set SCRATCH_BASE, 0x20000      # above the largest possible payload (0x7C00 + 64 KiB)
        .set PML4_ADDR, SCRATCH_BASE
        .set PDPT_ADDR, SCRATCH_BASE + 0x1000
        .set PD_ADDR, SCRATCH_BASE + 0x2000     # four page directories, one per GiB
        .set IDT_ADDR, SCRATCH_BASE + 0x6000

# ---------------------------------------------------------------------------
# GDT selectors (see ENTER_PROTECTED_MODE for the table itself)
# ---------------------------------------------------------------------------
        .set SEL_CODE32, 0x08
        .set SEL_DATA, 0x10
        .set SEL_CODE64, 0x18

# REAL_MODE_ENTRY: the first instructions of every guest (16-bit code).
# Emits: FA (cli) FC (cld) EA ... (ljmp 0000:next)
.macro REAL_MODE_ENTRY
        cli                             # nothing may interrupt us: there is no IVT behind us
        cld                             # string instructions count upwards
        ljmp $0, $1f                    # normalise CS:IP to 0000:7Cxx (some loaders use 07C0:0000)
1:      xor %ax, %ax                    # flat real-mode segments: DS = ES = SS = 0
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss                    # (MOV SS holds off interrupts for one instruction)
        mov $STACK_TOP, %sp             # stack grows down from just below the payload
.endm

# HALT_FOREVER: stop the vCPU for good (valid in any mode).  HLT makes the VMM
# see a HLT exit; with IF=0 nothing wakes us, and if something does (an NMI, a
# VMM that resumes HLT), we go straight back to HLT.
.macro HALT_FOREVER
        cli
1:      hlt
        jmp 1b
.endm

# ENTER_PROTECTED_MODE: from 16-bit real mode into 32-bit protected mode with
# flat 4 GiB code and data segments; ends in `.code32` with ESP = STACK_TOP.
# Also emits the GDT (into subsection 1), so use it at most once per guest.
.macro ENTER_PROTECTED_MODE
        .pushsection .text, 1
        .balign 8
keel_gdt:
        .quad 0                         # 0x00: the mandatory null descriptor
        .quad 0x00CF9A000000FFFF        # 0x08: 32-bit code, base 0, limit 4 GiB (G=1, D=1)
        .quad 0x00CF92000000FFFF        # 0x10: data, base 0, limit 4 GiB, writable
        .quad 0x00AF9A000000FFFF        # 0x18: 64-bit code (L=1, D=0)
keel_gdt_end:
keel_gdt_descriptor:
        .word keel_gdt_end - keel_gdt - 1       # limit
        .long keel_gdt                          # linear base (32 bits: `lgdtl`)
        .popsection

        lgdtl keel_gdt_descriptor       # load GDTR (operand-size prefix: full 32-bit base)
        mov %cr0, %eax
        or $CR0_PE, %eax
        mov %eax, %cr0                  # protection on; CS still holds a real-mode value...
        ljmpl $SEL_CODE32, $1f          # ...until this far jump loads a 32-bit code segment
        .code32
1:      mov $SEL_DATA, %ax              # reload every data segment register with the flat
        mov %ax, %ds                    # data descriptor, so no stale real-mode base or
        mov %ax, %es                    # limit remains in a hidden descriptor cache
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        mov $STACK_TOP, %esp
.endm

# LOAD_FLAT32: in 32-bit protected mode, loads the GDT at `gdt_descriptor` (from
# include/flat32_tables.S) and reloads CS and every data segment register with its flat
# selectors. For 32-bit entries such as PVH's, which get no usable GDT.
.macro LOAD_FLAT32
        lgdt gdt_descriptor
        ljmp $SEL_CODE32, $1f
1:      mov $SEL_DATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %ax, %fs
        mov %ax, %gs
.endm

# PVH_ENTRY: `_start` of a PVH kernel, entered in 32-bit protected mode with paging off
# and EBX = the hvm_start_info: interrupts and the direction flag off, ESP = `stack_top`,
# EBP = the start info, then LOAD_FLAT32. Ends in `.code32`, in `.text`. Also emits the
# ELF note that makes the image a PVH kernel.
.macro PVH_ENTRY
        # XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen": the 32-bit entry point.
        .pushsection .note.Xen, "a", @note
        .p2align 2
        .long 4                         # namesz
        .long 4                         # descsz
        .long 18                        # type
        .asciz "Xen"
        .long _start
        .popsection
        .code32
        .text
        .globl _start
_start:
        cli
        cld
        mov $stack_top, %esp
        mov %ebx, %ebp
        LOAD_FLAT32
.endm

# ENTER_LONG_MODE: from 32-bit protected mode (after ENTER_PROTECTED_MODE) into
# 64-bit long mode; ends in `.code64` with RSP = STACK_TOP.
#
# Page tables: identity map of the whole low 4 GiB with 2 MiB pages
# (PML4[0] -> PDPT, PDPT[0..3] -> four page directories of 512 entries each).
# 2 MiB pages need no 1 GiB-page CPU support (qemu64 has none).  The first 3 GiB
# cover the guest's RAM; the 4th GiB (0xC000_0000 - 0xFFFF_FFFF, where MMIO and
# the `exits` guest's unbacked-memory probe at 0xF000_0000 live) is mapped
# uncached (PCD|PWT), as an OS would map device memory.
.macro ENTER_LONG_MODE
        # Clear the PML4, the PDPT and the four page directories (6 pages).
        mov $PML4_ADDR, %edi
        xor %eax, %eax
        mov $(6 * 4096 / 4), %ecx
        rep stosl

        # PML4[0] -> PDPT; PDPT[0..3] -> PD 0..3.  Flags 0x3 = present | writable.
        movl $(PDPT_ADDR | 0x3), PML4_ADDR
        movl $((PD_ADDR + 0x0000) | 0x3), PDPT_ADDR + 0
        movl $((PD_ADDR + 0x1000) | 0x3), PDPT_ADDR + 8
        movl $((PD_ADDR + 0x2000) | 0x3), PDPT_ADDR + 16
        movl $((PD_ADDR + 0x3000) | 0x3), PDPT_ADDR + 24

        # 2048 consecutive PD entries, entry i maps 2 MiB at i * 2 MiB.
        # 0x83 = present | writable | PS (2 MiB page).  High dwords stay 0.
        mov $PD_ADDR, %edi
        mov $0x83, %eax
        mov $2048, %ecx
1:      mov %eax, (%edi)
        cmp $0xC0000000, %eax           # in the 4th GiB (MMIO hole)?
        jb 2f
        orl $0x18, (%edi)               # then PWT | PCD: uncached
2:      add $0x200000, %eax
        add $8, %edi
        dec %ecx
        jnz 1b

        mov %cr4, %eax
        or $CR4_PAE, %eax
        mov %eax, %cr4                  # PAE paging format (required by long mode)
        mov $PML4_ADDR, %eax
        mov %eax, %cr3                  # top-level table
        mov $MSR_EFER, %ecx
        rdmsr
        or $EFER_LME, %eax
        wrmsr                           # EFER.LME = 1: long mode enabled (not yet active)
        mov %cr0, %eax
        or $CR0_PG, %eax
        mov %eax, %cr0                  # paging on -> long mode active (compatibility mode)
        ljmp $SEL_CODE64, $1f           # a 64-bit code segment makes it 64-bit mode
        .code64
1:      mov $SEL_DATA, %ax              # data segments are ignored in 64-bit mode apart
        mov %ax, %ds                    # from FS/GS bases, but load them anyway so every
        mov %ax, %es                    # selector is valid for an IRET or a VMM's state dump
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        mov $STACK_TOP, %rsp
.endm

# PUTS16/PUTS32/PUTS64 "text": print a string literal.  The literal goes to
# subsection 1 (after the code); all registers are preserved.
.macro PUTS16 str:vararg
        .pushsection .text, 1
.Lputs_str\@: .asciz \str
        .popsection
        push %si
        mov $.Lputs_str\@, %si
        call puts16
        pop %si
.endm

.macro PUTS32 str:vararg
        .pushsection .text, 1
.Lputs_str\@: .asciz \str
        .popsection
        push %esi
        mov $.Lputs_str\@, %esi
        call puts32
        pop %esi
.endm

.macro PUTS64 str:vararg
        .pushsection .text, 1
.Lputs_str\@: .asciz \str
        .popsection
        push %rsi
        lea .Lputs_str\@(%rip), %rsi
        call puts64
        pop %rsi
.endm
