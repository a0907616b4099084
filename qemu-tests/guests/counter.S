# counter - a well-behaved guest that keeps printing, forever.
#
# Prints "tick 0", "tick 1", ... one line per few million loop iterations, so
# a test can check that it keeps making progress while other VMs misbehave.
#
# Expected serial output:
#   tick 0
#   tick 1
#   ...

        .include "common.S"

        .set DELAY_LOOPS, 3000000       # busy-wait between lines

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        xor %ebx, %ebx                  # EBX = tick number
next_tick:
        PUTS16 "tick "
        mov %ebx, %eax
        call putdec16
        PUTS16 "\n"
        inc %ebx
        mov $DELAY_LOOPS, %ecx          # pure CPU work: no exits while waiting
1:      dec %ecx
        jnz 1b
        jmp next_tick

        .include "serial16.S"
