# exits - checks, from 64-bit long mode, how the VMM handles the exits a guest
# can cause: CPUID, MSR access, port I/O, MMIO to unbacked memory, VMMCALL.
#
# It switches itself real mode -> 32-bit protected mode -> 64-bit long mode
# (see ENTER_PROTECTED_MODE / ENTER_LONG_MODE in common.S), installs an IDT
# whose #GP and #UD handlers count the fault and skip the instruction
# (idt64.S), then prints one line per check:
#   PASS <name>
#   FAIL <name> (<what was seen>)
# and a summary, exactly one of
#   exits guest: all N checks passed
#   exits guest: M of N checks failed
# then halts.  (It never prints "<n> passed, <n> failed": CI parses that.)
#
# Checks (the expectations are Keel's documented behaviour):
#   cpuid-hypervisor-bit  CPUID.1:ECX[31] (hypervisor present) is set
#   cpuid-signature       CPUID.0x40000000: EBX,ECX,EDX = "KeelKeelKeel", EAX >= 0x40000001
#   cpuid-no-vmx          CPUID.1:ECX[5] (VMX) is clear
#   cpuid-no-svm          CPUID.0x80000001:ECX[2] (SVM) is clear
#   msr-allowed           IA32_PAT (0x277) write + read back, IA32_MISC_ENABLE (0x1A0) read, no #GP
#   msr-unknown-gp        RDMSR and WRMSR of MSR 0x4B564DFF each raise #GP
#   io-unclaimed          IN from port 0x2E0 (no device) reads all ones at 8, 16, 32 bits
#   mmio-unbacked         a load from 0xF000_0000 (no RAM, no device) reads all ones,
#                         a store there does not fault and is dropped; read-modify-write
#                         OR and ADD there set the arithmetic flags from the all-ones
#                         value and their writes are dropped too
#   vmmcall-ud            VMMCALL raises #UD

        .include "common.S"

        .set KEEL_SIG, 0x6C65654B       # "Keel" as a little-endian dword
        .set UNKNOWN_MSR, 0x4B564DFF    # past KVM's 0x4B564D00.. (kvm-clock is offered): no CPU or VMM has it
        .set UNCLAIMED_PORT, 0x2E0
        .set UNBACKED_ADDR, 0xF0000000

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        ENTER_PROTECTED_MODE
        ENTER_LONG_MODE                 # ends in .code64
        call idt64_install
        PUTS64 "exits guest: in long mode, running checks\n"

        call check_cpuid_hypervisor_bit
        call check_cpuid_signature
        call check_cpuid_no_vmx
        call check_cpuid_no_svm
        call check_msr_allowed
        call check_msr_unknown_gp
        call check_io_unclaimed
        call check_mmio_unbacked
        call check_vmmcall_ud
        call print_summary
        HALT_FOREVER

# ---------------------------------------------------------------------------
# Check bookkeeping.  Each check calls `pass` or `fail_open` with RSI = its
# name; after fail_open it prints its details and calls fail_close.
# ---------------------------------------------------------------------------

# pass: print "PASS <name>\n" and count it.
pass:
        PUTS64 "PASS "
        call puts64
        PUTS64 "\n"
        incq passed_count(%rip)
        ret

# fail_open: print "FAIL <name> (" and count it.
fail_open:
        PUTS64 "FAIL "
        call puts64
        PUTS64 " ("
        incq failed_count(%rip)
        ret

# fail_close: print ")\n".
fail_close:
        PUTS64 ")\n"
        ret

# print_field: print RSI (a label like "ecx=") then RAX as ECX hex digits.
print_field:
        call puts64
        jmp puthex64

# ---------------------------------------------------------------------------
# The checks.  CPUID clobbers RBX; no caller here keeps anything in it.
# ---------------------------------------------------------------------------

check_cpuid_hypervisor_bit:
        mov $1, %eax
        xor %ecx, %ecx
        cpuid
        lea name_hypervisor_bit(%rip), %rsi
        bt $31, %ecx
        jnc 1f
        jmp pass
1:      call fail_open
        mov %ecx, %eax
        mov $8, %ecx
        lea field_ecx+1(%rip), %rsi     # (+1: no leading space for the first field)
        call print_field
        jmp fail_close

check_cpuid_signature:
        mov $0x40000000, %eax
        xor %ecx, %ecx
        cpuid
        mov %eax, %r8d                  # keep all four for the details
        mov %ebx, %r9d
        mov %ecx, %r10d
        mov %edx, %r11d
        lea name_signature(%rip), %rsi
        cmp $KEEL_SIG, %r9d             # signature bytes in register order EBX, ECX, EDX
        jne 1f
        cmp $KEEL_SIG, %r10d
        jne 1f
        cmp $KEEL_SIG, %r11d
        jne 1f
        cmp $0x40000001, %r8d           # EAX = highest hypervisor leaf
        jb 1f
        jmp pass
1:      call fail_open
        mov $8, %ecx
        lea field_eax+1(%rip), %rsi
        mov %r8, %rax
        call print_field
        lea field_ebx(%rip), %rsi
        mov %r9, %rax
        call print_field
        lea field_ecx(%rip), %rsi
        mov %r10, %rax
        call print_field
        lea field_edx(%rip), %rsi
        mov %r11, %rax
        call print_field
        jmp fail_close

check_cpuid_no_vmx:
        mov $1, %eax
        xor %ecx, %ecx
        cpuid
        lea name_no_vmx(%rip), %rsi
        bt $5, %ecx
        jc 1f
        jmp pass
1:      call fail_open
        mov %ecx, %eax
        mov $8, %ecx
        lea field_ecx+1(%rip), %rsi     # (+1: no leading space for the first field)
        call print_field
        jmp fail_close

check_cpuid_no_svm:
        mov $0x80000001, %eax
        xor %ecx, %ecx
        cpuid
        lea name_no_svm(%rip), %rsi
        bt $2, %ecx
        jc 1f
        jmp pass
1:      call fail_open
        mov %ecx, %eax
        mov $8, %ecx
        lea field_ecx+1(%rip), %rsi     # (+1: no leading space for the first field)
        call print_field
        jmp fail_close

# IA32_PAT accepts any valid memory-type pattern; 0x0007040600070406 is the
# power-on default, so writing it changes nothing.  IA32_MISC_ENABLE is read
# by every OS at boot.  Neither may fault.
check_msr_allowed:
        mov gp_count(%rip), %r12        # #GPs so far
        mov $0x277, %ecx
        mov $0x00070406, %eax
        mov $0x00070406, %edx
        wrmsr
        xor %eax, %eax
        xor %edx, %edx
        rdmsr                           # ECX still 0x277
        shl $32, %rdx
        or %rdx, %rax
        mov %rax, %r13                  # R13 = PAT read back
        mov $0x1A0, %ecx
        rdmsr                           # IA32_MISC_ENABLE: value not checked
        mov gp_count(%rip), %r14
        sub %r12, %r14                  # R14 = #GPs during this check
        lea name_msr_allowed(%rip), %rsi
        movabs $0x0007040600070406, %rax
        cmp %rax, %r13
        jne 1f
        test %r14, %r14
        jnz 1f
        jmp pass
1:      call fail_open
        lea field_pat+1(%rip), %rsi
        mov %r13, %rax
        mov $16, %ecx
        call print_field
        PUTS64 " #GP count "
        mov %r14, %rax
        call putdec64
        jmp fail_close

check_msr_unknown_gp:
        mov gp_count(%rip), %r12
        mov $UNKNOWN_MSR, %ecx
        xor %eax, %eax
        xor %edx, %edx
        rdmsr                           # must #GP (the handler skips it)
        mov gp_count(%rip), %r13
        sub %r12, %r13                  # R13 = #GPs from RDMSR
        mov gp_count(%rip), %r12
        mov $UNKNOWN_MSR, %ecx
        xor %eax, %eax
        xor %edx, %edx
        wrmsr                           # must #GP too
        mov gp_count(%rip), %r14
        sub %r12, %r14                  # R14 = #GPs from WRMSR
        lea name_msr_unknown(%rip), %rsi
        cmp $1, %r13
        jne 1f
        cmp $1, %r14
        jne 1f
        jmp pass
1:      call fail_open
        PUTS64 "rdmsr #GP count "
        mov %r13, %rax
        call putdec64
        PUTS64 ", wrmsr #GP count "
        mov %r14, %rax
        call putdec64
        jmp fail_close

check_io_unclaimed:
        mov $UNCLAIMED_PORT, %edx
        xor %eax, %eax
        in %dx, %al
        mov %rax, %r12                  # expect 0xff
        xor %eax, %eax
        in %dx, %ax
        mov %rax, %r13                  # expect 0xffff
        xor %eax, %eax
        in %dx, %eax
        mov %rax, %r14                  # expect 0xffffffff
        lea name_io_unclaimed(%rip), %rsi
        cmp $0xFF, %r12
        jne 1f
        cmp $0xFFFF, %r13
        jne 1f
        mov $0xFFFFFFFF, %eax           # (zero-extends into RAX)
        cmp %rax, %r14
        jne 1f
        jmp pass
1:      call fail_open
        lea field_al+1(%rip), %rsi
        mov %r12, %rax
        mov $2, %ecx
        call print_field
        lea field_ax(%rip), %rsi
        mov %r13, %rax
        mov $4, %ecx
        call print_field
        lea field_eax(%rip), %rsi
        mov %r14, %rax
        mov $8, %ecx
        call print_field
        jmp fail_close

# 0xF000_0000 is identity-mapped (uncached) by our page tables but is neither
# RAM nor a device in the VM, so each access exits to the VMM.  A fault here
# would land in the "unexpected exception" path of idt64.S and halt.
check_mmio_unbacked:
        mov $UNBACKED_ADDR, %ebx        # (zero-extends into RBX)
        mov (%rbx), %eax                # 32-bit load: expect 0xffffffff
        mov %rax, %r12
        movl $0x12345678, (%rbx)        # store: expect no fault, and dropped
        # Read-modify-write (emulated from the instruction bytes): 0xffffffff | 0 leaves
        # SF and PF set; 0xffffffff + 1 wraps to 0: CF, PF, AF, ZF. Only
        # OF|SF|ZF|AF|PF|CF (0x8d5) are compared.
        xor %eax, %eax
        orl %eax, (%rbx)
        pushfq
        pop %r14
        and $0x8d5, %r14
        lock addl $1, (%rbx)
        pushfq
        pop %r15
        and $0x8d5, %r15
        mov (%rbx), %eax                # load again: still 0xffffffff
        mov %rax, %r13
        lea name_mmio_unbacked(%rip), %rsi
        mov $0xFFFFFFFF, %eax
        cmp %rax, %r12
        jne 1f
        cmp %rax, %r13
        jne 1f
        cmp $0x84, %r14                 # SF, PF
        jne 1f
        cmp $0x55, %r15                 # ZF, AF, PF, CF
        jne 1f
        jmp pass
1:      call fail_open
        lea field_read+1(%rip), %rsi
        mov %r12, %rax
        mov $8, %ecx
        call print_field
        lea field_read_after_write(%rip), %rsi
        mov %r13, %rax
        call print_field
        lea field_or_flags(%rip), %rsi
        mov %r14, %rax
        call print_field
        lea field_add_flags(%rip), %rsi
        mov %r15, %rax
        call print_field
        jmp fail_close

check_vmmcall_ud:
        mov ud_count(%rip), %r12
        vmmcall                         # must #UD (the handler skips it)
        mov ud_count(%rip), %r13
        sub %r12, %r13                  # R13 = #UDs from VMMCALL
        lea name_vmmcall_ud(%rip), %rsi
        cmp $1, %r13
        jne 1f
        jmp pass
1:      call fail_open
        PUTS64 "#UD count "
        mov %r13, %rax
        call putdec64
        jmp fail_close

# Summary line: "exits guest: all N checks passed" or
# "exits guest: M of N checks failed".
print_summary:
        mov passed_count(%rip), %rax
        add failed_count(%rip), %rax    # RAX = N
        cmpq $0, failed_count(%rip)
        jne 1f
        PUTS64 "exits guest: all "
        call putdec64
        PUTS64 " checks passed\n"
        ret
1:      PUTS64 "exits guest: "
        push %rax
        mov failed_count(%rip), %rax
        call putdec64
        pop %rax
        PUTS64 " of "
        call putdec64
        PUTS64 " checks failed\n"
        ret

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
name_hypervisor_bit:    .asciz "cpuid-hypervisor-bit"
name_signature:         .asciz "cpuid-signature"
name_no_vmx:            .asciz "cpuid-no-vmx"
name_no_svm:            .asciz "cpuid-no-svm"
name_msr_allowed:       .asciz "msr-allowed"
name_msr_unknown:       .asciz "msr-unknown-gp"
name_io_unclaimed:      .asciz "io-unclaimed"
name_mmio_unbacked:     .asciz "mmio-unbacked"
name_vmmcall_ud:        .asciz "vmmcall-ud"
# Detail labels start with a space, which separates fields; the first field of
# a detail is printed from label+1 to skip it.
field_al:               .asciz " al="
field_ax:               .asciz " ax="
field_eax:              .asciz " eax="
field_ebx:              .asciz " ebx="
field_ecx:              .asciz " ecx="
field_edx:              .asciz " edx="
field_pat:              .asciz " pat="
field_read:             .asciz " read="
field_read_after_write: .asciz " read after write="
field_or_flags:         .asciz " or-flags="
field_add_flags:        .asciz " add-flags="

        .balign 8
passed_count:           .quad 0
failed_count:           .quad 0

        .include "idt64.S"
        .include "serial64.S"
