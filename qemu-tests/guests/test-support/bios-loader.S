# bios-loader - TEST SUPPORT ONLY, not a guest.  A boot sector that lets plain
# QEMU (SeaBIOS) run a Keel test guest the way Keel's VMM starts it, so the
# guests can be checked without Keel.
#
# Disk layout it expects: LBA 0 = this sector, LBA 1..128 = the guest binary
# padded to 64 KiB.  It moves itself out of the way (to 0x0600), reads the 64
# KiB guest to 0x7C00 with INT 13h extended reads, then jumps to 0000:7C00 in
# real mode with interrupts off - the state Keel's VMM starts a flat payload in.
#
# It also programs COM1 for 115200 8N1: Keel's 16550 model needs no setup, but
# a BIOS may leave the UART in its reset state (Bochs' BIOS leaves 5-bit words,
# which garbles the output).
#
# Linked with -Ttext=0x600 (its run address after relocation).

        .set COM1_THR, 0x3F8
        .set COM1_LSR, 0x3FD
        .set RELOC_ADDR, 0x0600
        .set GUEST_ADDR, 0x7C00
        .set CHUNK_SECTORS, 64          # 32 KiB per INT 13h call (some BIOSes cap at 127)
        .set CHUNKS, 2                  # 2 x 32 KiB = 64 KiB = the largest guest

        .code16
        .globl _start
_start:
        cli
        cld
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $GUEST_ADDR, %sp
        mov $GUEST_ADDR, %si            # copy this sector from 0x7C00 to 0x0600
        mov $RELOC_ADDR, %di
        mov $256, %cx
        rep movsw
        ljmp $0, $relocated             # continue in the copy (absolute, linked at 0x600)

relocated:
        mov %dl, boot_drive             # BIOS passes the boot drive in DL: save it first
        mov $0x3FB, %dx                 # LCR: DLAB=1 to reach the divisor latch
        mov $0x80, %al
        out %al, %dx
        mov $0x3F8, %dx                 # DLL = 1: 115200 baud
        mov $1, %al
        out %al, %dx
        mov $0x3F9, %dx                 # DLM = 0
        xor %al, %al
        out %al, %dx
        mov $0x3FB, %dx                 # LCR: 8 data bits, no parity, 1 stop bit, DLAB=0
        mov $0x03, %al
        out %al, %dx
        mov $0x3F9, %dx                 # IER = 0: no UART interrupts
        xor %al, %al
        out %al, %dx

        sti                             # the BIOS disk code may need interrupts
        mov $CHUNKS, %bp
1:      mov $dap, %si
        mov boot_drive, %dl
        mov $0x42, %ah                  # INT 13h AH=42h: extended read
        int $0x13
        jc disk_error
        addw $CHUNK_SECTORS, dap_lba
        addw $(CHUNK_SECTORS * 512 / 16), dap_segment
        dec %bp
        jnz 1b

        cli                             # hand over like Keel's VMM: IF=0, segments 0,
        xor %ax, %ax                    # CS:IP = 0000:7C00
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $GUEST_ADDR, %sp
        ljmp $0, $GUEST_ADDR

disk_error:
        mov $msg_disk_error, %si
2:      lodsb
        test %al, %al
        jz 4f
        mov %al, %bl
        mov $COM1_LSR, %dx
3:      in %dx, %al
        test $0x20, %al
        jz 3b
        mov %bl, %al
        mov $COM1_THR, %dx
        out %al, %dx
        jmp 2b
4:      cli
        hlt
        jmp 4b

msg_disk_error:
        .asciz "bios-loader: disk read failed\n"
boot_drive:
        .byte 0
        .balign 4
dap:                                    # INT 13h disk address packet
        .byte 16                        # size of this packet
        .byte 0
        .word CHUNK_SECTORS             # sectors to read
        .word 0                         # destination offset
dap_segment:
        .word GUEST_ADDR / 16           # destination segment
dap_lba:
        .quad 1                         # first sector: the one after this boot sector

        .org 510
        .word 0xAA55                    # boot signature
