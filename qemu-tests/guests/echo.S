# echo - reads COM1 and writes every byte back, letters in upper case, so a test
# can tell the guest's answer from the terminal's own echo.  CR becomes LF.
#
# Expected serial output:
#   echo guest: ready
# then, for input "hello\r": "HELLO\n".  Polls the line status register (each
# poll is an IN exit); never halts.

        .include "common.S"

        .set COM1_RBR, 0x3F8            # receive buffer register
        .set LSR_DATA_READY, 0x01       # LSR bit 0: a received byte waits in RBR

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        PUTS16 "echo guest: ready\n"
next_byte:
        mov $COM1_LSR, %dx
1:      in %dx, %al
        test $LSR_DATA_READY, %al
        jz 1b
        mov $COM1_RBR, %dx
        in %dx, %al
        cmp $'a', %al
        jb 2f
        cmp $'z', %al
        ja 2f
        sub $('a' - 'A'), %al
2:      cmp $'\r', %al
        jne 3f
        mov $'\n', %al
3:      call putc16
        jmp next_byte

        .include "serial16.S"
