# hostile-triple - triple-faults on purpose.
#
# It loads an IDT (the real-mode interrupt vector table) with limit 0 and
# executes INT3.  Vector 3 lies beyond the limit -> #GP; the #GP vector lies
# beyond it too -> #DF; so does #DF -> triple fault, i.e. CPU shutdown.  A VMM
# sees a shutdown exit (SVM exit code 0x7F, VMX exit reason 2) and must stop this
# VM with reason "shutdown" while the host and other VMs carry on.
#
# Expected serial output:
#   triple fault next
# and nothing more.  "survived a triple fault" means the fault was swallowed.

        .include "common.S"

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        PUTS16 "triple fault next\n"
        lidt empty_idt                  # IDTR.limit = 0: no vector can be delivered
        int3                            # -> #GP -> #DF -> shutdown
        PUTS16 "survived a triple fault\n"      # only reached if the VMM misbehaves
        HALT_FOREVER

        .balign 8
empty_idt:
        .word 0                         # limit 0
        .long 0                         # base 0

        .include "serial16.S"
