# hostile-spin - spins forever without a single VM exit.
#
# After one line of output it runs `jmp .` with interrupts off: no I/O, no HLT,
# no CPUID, nothing the VMM intercepts.  The only way the host gets the CPU back
# is its own timer interrupt forcing a VM exit; a test checks that the
# management plane and other VMs keep running while this guest spins.
#
# Expected serial output:
#   spinning

        .include "common.S"

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        PUTS16 "spinning\n"
        cli                             # (already off; stated here because it is the point)
spin:   jmp spin                        # EB FE, forever

        .include "serial16.S"
