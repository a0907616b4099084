# hostile-vmrun - executes VMRUN and VMMCALL from the guest.
#
# Keel injects #UD for SVM instructions a guest executes (and a CPU without
# SVM enabled raises #UD for them anyway).  This guest installs its own real-mode
# #UD handler (IVT vector 6 at 0000:0018) that prints "caught #UD" and resumes
# after the 3-byte instruction (0F 01 D8 = VMRUN, 0F 01 D9 = VMMCALL).
#
# Expected serial output:
#   caught #UD
#   caught #UD
#   survived VMRUN and VMMCALL
# "unexpected #UD" means a #UD came from some other instruction.

        .include "common.S"

        .set IVT_UD, 6 * 4              # IVT entry for vector 6: offset word, segment word

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        movw $ud_handler, IVT_UD        # #UD -> 0000:ud_handler
        movw $0, IVT_UD + 2
        vmrun                           # 0F 01 D8: #UD, handler skips it
        vmmcall                         # 0F 01 D9: #UD, handler skips it
        PUTS16 "survived VMRUN and VMMCALL\n"
        HALT_FOREVER

# Real-mode #UD handler.  The CPU pushed FLAGS, CS, IP (IP on top).  The
# faulting instruction must be an SVM instruction (0F 01 D8..DF); if so, report
# it and return to IP + 3.
ud_handler:
        push %bp
        mov %sp, %bp                    # [BP+2] = IP, [BP+4] = CS, [BP+6] = FLAGS
        push %ax
        push %bx
        push %ds
        push %es
        xor %ax, %ax
        mov %ax, %ds                    # our data (strings) is in segment 0
        les 2(%bp), %bx                 # ES:BX = CS:IP of the faulting instruction
        cmpw $0x010F, %es:(%bx)         # bytes 0F 01 ...
        jne ud_unexpected
        mov %es:2(%bx), %al
        and $0xF8, %al                  # ... D8 to DF
        cmp $0xD8, %al
        jne ud_unexpected
        PUTS16 "caught #UD\n"
        addw $3, 2(%bp)                 # return past the 3-byte instruction
        pop %es
        pop %ds
        pop %bx
        pop %ax
        pop %bp
        iret
ud_unexpected:
        PUTS16 "unexpected #UD\n"
        HALT_FOREVER

        .include "serial16.S"
