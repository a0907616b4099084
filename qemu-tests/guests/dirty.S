# dirty - writes a known set of pages on request, for the dirty-log test.
#
# Polls COM1; for each 'w' received it writes one byte into each of the pages
# at guest-physical 0x30000, 0x31000, 0x45000 and 0x9F000 (through ES, which
# real mode can point anywhere below 1 MiB), then prints a line.  Between
# requests it only polls the UART (IN exits): it writes no memory, so a dirty
# log harvested around one request holds exactly those four pages and the
# stack page (0x7000: the calls that print push onto it).
#
# Expected serial output:
#   dirty guest: ready
# then, per 'w':
#   dirty guest: wrote 4 pages

        .include "common.S"

        .set COM1_RBR, 0x3F8            # receive buffer register
        .set LSR_DATA_READY, 0x01       # LSR bit 0: a received byte waits in RBR

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        PUTS16 "dirty guest: ready\n"
wait_byte:
        mov $COM1_LSR, %dx
1:      in %dx, %al
        test $LSR_DATA_READY, %al
        jz 1b
        mov $COM1_RBR, %dx
        in %dx, %al
        cmp $'w', %al
        jne wait_byte
        mov $0x3000, %ax                # ES:0 = 0x30000
        mov %ax, %es
        movb $0x5a, %es:0
        mov $0x3100, %ax                # 0x31000
        mov %ax, %es
        movb $0x5a, %es:0x10
        mov $0x4500, %ax                # 0x45000
        mov %ax, %es
        movb $0x5a, %es:0xff0
        mov $0x9f00, %ax                # 0x9F000
        mov %ax, %es
        movb $0x5a, %es:0x800
        xor %ax, %ax
        mov %ax, %es
        PUTS16 "dirty guest: wrote 4 pages\n"
        jmp wait_byte

        .include "serial16.S"
