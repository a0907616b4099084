# bench - measures VM-exit cost and raw CPU speed inside a guest, with RDTSC.
#
# Long mode like `exits` (same mode switch from common.S).  Prints exactly:
#   bench cpuid-exits 100000 cycles <decimal>    100,000 x CPUID leaf 0
#   bench out-exits 100000 cycles <decimal>      100,000 x OUT 0x80, AL
#   bench cpu-loop 50000000 cycles <decimal>     keel_cpu_loop(50,000,000) (cpu_loop.S)
#   bench done
# then halts.  The cycle counts are TSC ticks as the guest sees them.

        .include "common.S"

        .set EXIT_ROUNDS, 100000
        .set CPU_LOOP_ROUNDS, 50000000

# RDTSC_RAX: the full 64-bit TSC in RAX (clobbers RDX).
.macro RDTSC_RAX
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
.endm

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        ENTER_PROTECTED_MODE
        ENTER_LONG_MODE                 # ends in .code64
        call idt64_install              # only so a stray fault gets reported

        # CPUID exits: every CPUID traps to the VMM.
        RDTSC_RAX
        mov %rax, %r12
        mov $EXIT_ROUNDS, %r15d
1:      xor %eax, %eax
        xor %ecx, %ecx
        cpuid
        dec %r15d
        jnz 1b
        RDTSC_RAX
        sub %r12, %rax
        PUTS64 "bench cpuid-exits 100000 cycles "
        call putdec64
        PUTS64 "\n"

        # I/O exits: port 0x80 (the POST-code port) has no side effects anywhere.
        RDTSC_RAX
        mov %rax, %r12
        mov $EXIT_ROUNDS, %r15d
        xor %eax, %eax
1:      out %al, $0x80
        dec %r15d
        jnz 1b
        RDTSC_RAX
        sub %r12, %rax
        PUTS64 "bench out-exits 100000 cycles "
        call putdec64
        PUTS64 "\n"

        # CPU-bound loop: no exits at all.
        RDTSC_RAX
        mov %rax, %r12
        mov $CPU_LOOP_ROUNDS, %edi
        call keel_cpu_loop              # result in RAX, not needed here
        RDTSC_RAX
        sub %r12, %rax
        PUTS64 "bench cpu-loop 50000000 cycles "
        call putdec64
        PUTS64 "\n"

        PUTS64 "bench done\n"
        HALT_FOREVER

        .include "cpu_loop.S"
        .include "idt64.S"
        .include "serial64.S"
