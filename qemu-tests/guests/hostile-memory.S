# hostile-memory - touches guest-physical memory far beyond its RAM.
#
# Enters 32-bit protected mode with flat 4 GiB segments and no paging, so a
# linear address is the guest-physical address.  Then reads, writes and reads
# again the dword at 0x4000_0000 (1 GiB), which no Keel test VM has as RAM.
# Keel's documented behaviour for unbacked guest-physical memory: reads return
# all ones, writes are dropped, the VM keeps running.
#
# Expected serial output under Keel:
#   touching memory beyond RAM
#   read 0xffffffff
#   read 0xffffffff
#   still alive

        .include "common.S"

        .set PROBE_ADDR, 0x40000000

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        ENTER_PROTECTED_MODE            # ends in .code32 with flat segments
        PUTS32 "touching memory beyond RAM\n"
        mov $PROBE_ADDR, %ebx
        mov (%ebx), %eax                # read: exits to the VMM (no memory there)
        call print_read
        movl $0x12345678, (%ebx)        # write: must be dropped, not land anywhere
        mov (%ebx), %eax                # read again: still all ones if the write was dropped
        call print_read
        PUTS32 "still alive\n"
        HALT_FOREVER

# print_read: print "read 0x<EAX as 8 hex digits>\n".
print_read:
        PUTS32 "read "
        call puthex32
        PUTS32 "\n"
        ret

        .include "serial32.S"
