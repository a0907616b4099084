# idt64.S - a 64-bit IDT for exceptions 0-31 with a handler that lets a guest
# provoke #GP and #UD on purpose and carry on.
#
# Include at the END of a guest (it emits code); call idt64_install once in
# long mode.  Provides two counters the guest reads before and after a probe:
#   gp_count  - #GPs raised by RDMSR (0F 32) or WRMSR (0F 30); the handler skips
#               the 2-byte instruction
#   ud_count  - #UDs raised by an SVM instruction (0F 01 D8..DF: VMRUN, VMMCALL,
#               VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA); the handler skips
#               the 3-byte instruction
# Any other exception (or a #GP/#UD at any other instruction) is a bug in the
# guest or in the VMM: the handler prints what happened and halts for good, so
# the failure shows up on the serial line instead of as a silent triple fault.

        .code64
        .set IDT_VECTORS, 32

# idt64_install: fill the IDT at IDT_ADDR with interrupt gates to the stubs
# below and load IDTR.  Preserves all registers.
idt64_install:
        push %rax
        push %rcx
        push %rdx
        push %rdi
        lea isr_stubs(%rip), %rdx       # stub for vector v is at isr_stubs + 16 * v
        mov $IDT_ADDR, %edi
        mov $IDT_VECTORS, %ecx
1:      mov %rdx, %rax
        mov %ax, (%rdi)                 # offset 15:0
        movw $SEL_CODE64, 2(%rdi)       # code segment selector
        movw $0x8E00, 4(%rdi)           # IST 0; type 0xE = 64-bit interrupt gate, DPL 0, present
        shr $16, %rax
        mov %ax, 6(%rdi)                # offset 31:16
        shr $16, %rax
        mov %eax, 8(%rdi)               # offset 63:32
        movl $0, 12(%rdi)               # reserved
        add $16, %rdx
        add $16, %rdi
        dec %ecx
        jnz 1b
        lidt idt64_descriptor(%rip)
        pop %rdi
        pop %rdx
        pop %rcx
        pop %rax
        ret

# One 16-byte stub per vector.  Each makes the stack look the same for every
# vector - [RSP] = vector, [RSP+8] = error code (0 where the CPU pushes none),
# then the CPU's RIP, CS, RFLAGS, RSP, SS - and jumps to the common handler.
        .balign 16
isr_stubs:
        .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .balign 16
        .if (\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
        # the CPU pushed an error code for this vector
        .else
        pushq $0                        # no error code from the CPU: push a dummy one
        .endif
        pushq $\vec
        jmp isr_common
        .endr

        # Offsets into the frame once isr_common has saved its 9 registers.
        .set FRAME_VECTOR, 9 * 8
        .set FRAME_ERROR, 10 * 8
        .set FRAME_RIP, 11 * 8

isr_common:
        push %rax                       # save every caller-saved register: the
        push %rcx                       # interrupted code does not expect any of
        push %rdx                       # them to change
        push %rsi
        push %rdi
        push %r8
        push %r9
        push %r10
        push %r11
        mov FRAME_RIP(%rsp), %rsi       # RSI -> the faulting instruction
        mov FRAME_VECTOR(%rsp), %rax
        cmp $13, %eax
        je .Lisr_gp
        cmp $6, %eax
        je .Lisr_ud
        jmp .Lisr_unexpected

.Lisr_gp:                               # #GP: expected only from RDMSR / WRMSR
        cmpb $0x0F, (%rsi)
        jne .Lisr_unexpected
        movzbl 1(%rsi), %eax
        cmp $0x32, %eax                 # 0F 32 = RDMSR
        je 1f
        cmp $0x30, %eax                 # 0F 30 = WRMSR
        jne .Lisr_unexpected
1:      incq gp_count(%rip)
        addq $2, FRAME_RIP(%rsp)        # resume after the 2-byte instruction
        jmp .Lisr_return

.Lisr_ud:                               # #UD: expected only from SVM instructions
        cmpw $0x010F, (%rsi)            # bytes 0F 01 ...
        jne .Lisr_unexpected
        movzbl 2(%rsi), %eax
        and $0xF8, %eax                 # ... D8 to DF
        cmp $0xD8, %eax
        jne .Lisr_unexpected
        incq ud_count(%rip)
        addq $3, FRAME_RIP(%rsp)        # resume after the 3-byte instruction

.Lisr_return:
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        add $16, %rsp                   # drop vector and error code
        iretq

.Lisr_unexpected:
        PUTS64 "unexpected exception "
        mov FRAME_VECTOR(%rsp), %rax
        call putdec64
        PUTS64 " error "
        mov FRAME_ERROR(%rsp), %rax
        mov $8, %ecx
        call puthex64
        PUTS64 " rip "
        mov FRAME_RIP(%rsp), %rax
        mov $16, %ecx
        call puthex64
        PUTS64 " cr2 "
        mov %cr2, %rax
        call puthex64
        PUTS64 "\n"
        HALT_FOREVER

        .balign 8
idt64_descriptor:
        .word IDT_VECTORS * 16 - 1      # limit
        .quad IDT_ADDR                  # base
gp_count:
        .quad 0
ud_count:
        .quad 0
