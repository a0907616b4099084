# hello - the smallest useful guest: real mode, one line on COM1, halt.
#
# Expected serial output:
#   hello from a Keel guest
# then the vCPU halts (HLT with interrupts off).  Must stay below 512 bytes
# (one boot sector).

        .include "common.S"

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        PUTS16 "hello from a Keel guest\n"      # plain port I/O to COM1: only IOIO exits
        HALT_FOREVER

        .include "serial16.S"
