# hostile-net - sends malformed and forged frames on a virtio-net PCI function,
# then floods broadcast frames.
#
# 32-bit protected mode, flat segments, no paging (a linear address is the
# guest-physical one).  Finds the first modern virtio-net function (vendor
# 0x1AF4, device 0x1041) on bus 0 with config cycles through 0xCF8/0xCFC, turns
# on memory decode and bus mastering, and finds the common, notify and device
# structures through its vendor capabilities (Keel's layout, BAR0, and QEMU's,
# BAR4).  BARs must be assigned below 4 GiB already (Keel and SeaBIOS do).  It
# reads its MAC from the device structure and prints
#
#   hostile-net: mac 0x<bytes 0-3> 0x<bytes 4-5>
#
# (each as a little-endian dword).  Then, each case after a device reset, it
# negotiates VERSION_1 and MAC, sets up the TX queue (queue 1, 16 entries; no
# RX queue), posts its chains, notifies, and prints one line:
#
#   net case used 0x<used.idx> device 0x<device_status>: <name>
#
# Every chain is a 12-byte virtio-net header (zeros) and then the frame, in two
# descriptors unless the case says otherwise.  The cases:
#   valid-frame     one 60-byte broadcast frame from its own MAC (ethertype 0x88B5)
#   forged-source   16 such frames with a source MAC that is not its own
#                   (the last byte of its MAC xor 0x80)
#   runt            a 10-byte frame (shorter than an Ethernet header)
#   oversize        a 1600-byte frame (longer than 1514 + a VLAN tag)
#   header-short    a chain of one 6-byte descriptor (no whole header)
#   write-only      the frame's descriptor is device-writable
#   desc-loop       descriptor 0 -> 1 -> 0 -> ...
#   chain-too-long  17 descriptors chained in the 16-entry queue (15 -> 0 again)
# then "hostile-net: flooding" and broadcast frames from its own MAC for ever,
# keeping 8 chains in flight, with a line
#
#   hostile-net: flood sent 0x<frames>
#
# every 0x4000 frames.  The byte after the marker "HNETMODE" in the binary
# selects: bit 0 skips header-short (plain QEMU 7.2 aborts on it).  A device that is not found prints "hostile-net: no
# virtio-net" instead.

        .include "common.S"

        .set PCI_ADDR, 0xCF8
        .set PCI_DATA, 0xCFC
        .set VIRTIO_NET_ID, 0x10411AF4          # device << 16 | vendor

        # Guest memory for the queue and the frames (all below 1 MiB).
        .set DESC, 0x30000                      # 16-byte descriptors
        .set AVAIL, 0x31000                     # flags u16, idx u16, ring[] u16
        .set USED, 0x32000                      # flags u16, idx u16, ring[] {id u32, len u32}
        .set HDR, 0x33000                       # the 12-byte virtio-net header
        .set FRAME, 0x34000                     # frames, up to 1600 bytes
        .set QSIZE, 16
        .set TXQ, 1

        # Common configuration offsets (virtio 1.x, 4.1.4.3).
        .set CC_DRIVER_FEATURE_SELECT, 0x08
        .set CC_DRIVER_FEATURE, 0x0C
        .set CC_DEVICE_STATUS, 0x14
        .set CC_QUEUE_SELECT, 0x16
        .set CC_QUEUE_SIZE, 0x18
        .set CC_QUEUE_ENABLE, 0x1C
        .set CC_QUEUE_NOTIFY_OFF, 0x1E
        .set CC_QUEUE_DESC, 0x20
        .set CC_QUEUE_DRIVER, 0x28
        .set CC_QUEUE_DEVICE, 0x30

        .set S_ACK_DRIVER, 0x03
        .set S_FEATURES_OK, 0x08
        .set S_DRIVER_OK, 0x04

        .set F_NEXT, 1
        .set F_WRITE, 2

        .set FLOOD_REPORT_MASK, 0x3FFF
        .set MODE_SKIP_HEADER_SHORT, 1

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        ENTER_PROTECTED_MODE
        call find_device
        test %eax, %eax
        jnz .Lfound
        PUTS32 "hostile-net: no virtio-net\n"
        HALT_FOREVER
.Lfound:
        mov device_cfg, %ebx
        mov (%ebx), %eax
        mov %eax, mac
        movzwl 4(%ebx), %eax
        mov %eax, mac + 4
        PUTS32 "hostile-net: mac "
        mov mac, %eax
        call puthex32
        PUTS32 " "
        mov mac + 4, %eax
        call puthex32
        PUTS32 "\n"
        # The virtio-net header: no offloads, num_buffers 0.
        mov $HDR, %edi
        xor %eax, %eax
        mov $3, %ecx
        rep stosl

        # valid-frame
        call setup_tx
        call build_frame
        mov $60, %ecx
        call chain2
        call post_and_wait
        call report
        PUTS32 "valid-frame\n"

        # forged-source: 16 frames, one after the other
        call setup_tx
        call build_frame
        xorb $0x80, FRAME + 11          # the source MAC's last byte
        movl $16, forged_left
1:      mov $60, %ecx
        call chain2
        call post_and_wait
        decl forged_left
        jnz 1b
        call report
        PUTS32 "forged-source\n"

        # runt: 10 bytes of frame
        call setup_tx
        call build_frame
        mov $10, %ecx
        call chain2
        call post_and_wait
        call report
        PUTS32 "runt\n"

        # oversize: 1600 bytes of frame
        call setup_tx
        call build_frame
        mov $1600, %ecx
        call chain2
        call post_and_wait
        call report
        PUTS32 "oversize\n"

        # header-short: one 6-byte descriptor
        testb $MODE_SKIP_HEADER_SHORT, mode
        jnz 9f
        call setup_tx
        xor %edi, %edi
        mov $HDR, %eax
        mov $6, %ecx
        xor %edx, %edx
        call set_desc
        call post_and_wait
        call report
        PUTS32 "header-short\n"
9:

        # write-only: the frame's descriptor is device-writable
        call setup_tx
        call build_frame
        mov $60, %ecx
        call chain2
        orw $F_WRITE, DESC + 16 + 12
        call post_and_wait
        call report
        PUTS32 "write-only\n"

        # desc-loop: 0 -> 1 -> 0
        call setup_tx
        call build_frame
        mov $60, %ecx
        call chain2
        movw $F_NEXT, DESC + 16 + 12
        movw $0, DESC + 16 + 14
        call post_and_wait
        call report
        PUTS32 "desc-loop\n"

        # chain-too-long: 0 -> 1 -> ... -> 15 -> 0
        call setup_tx
        call build_frame
        xor %edi, %edi
2:      mov $FRAME, %eax
        mov $4, %ecx
        lea 1(%edi), %edx
        and $(QSIZE - 1), %edx
        shl $16, %edx
        or $F_NEXT, %edx
        call set_desc
        inc %edi
        cmp $QSIZE, %edi
        jb 2b
        call post_and_wait
        call report
        PUTS32 "chain-too-long\n"

        # flood: 8 chains (descriptors 2k, 2k+1) kept in flight
        PUTS32 "hostile-net: flooding\n"
        call setup_tx
        call build_frame
        xor %esi, %esi                  # k
3:      lea (%esi,%esi), %edi
        mov $HDR, %eax
        mov $12, %ecx
        lea 1(%edi), %edx
        shl $16, %edx
        or $F_NEXT, %edx
        call set_desc
        inc %edi
        mov $FRAME, %eax
        mov $60, %ecx
        xor %edx, %edx
        call set_desc
        inc %esi
        cmp $8, %esi
        jb 3b
        xor %ebp, %ebp                  # frames sent
.Lflood:
        # Post while fewer than 8 chains are in flight, then notify once.
        movzwl USED + 2, %eax
        mov avail_idx, %ecx
        sub %eax, %ecx
        and $0xFFFF, %ecx
        cmp $8, %ecx
        jae 5f
        mov avail_idx, %eax
        mov %eax, %ecx
        and $7, %ecx
        shl $1, %ecx                    # head 2k
        mov %eax, %edx
        and $(QSIZE - 1), %edx
        mov %cx, AVAIL + 4(,%edx,2)
        inc %eax
        mov %eax, avail_idx
        mfence
        mov %ax, AVAIL + 2
        inc %ebp
        test $FLOOD_REPORT_MASK, %ebp
        jnz .Lflood
        PUTS32 "hostile-net: flood sent "
        mov %ebp, %eax
        call puthex32
        PUTS32 "\n"
        jmp .Lflood
5:      call notify
        mov $100000, %ecx
6:      movzwl USED + 2, %eax
        mov avail_idx, %edx
        sub %eax, %edx
        and $0xFFFF, %edx
        cmp $8, %edx
        jb .Lflood
        pause
        dec %ecx
        jnz 6b
        jmp .Lflood

# pci_read: EAX = config dword at address EAX (bus 0 device/function/offset form).
pci_read:
        push %edx
        or $0x80000000, %eax
        mov $PCI_ADDR, %dx
        out %eax, %dx
        mov $PCI_DATA, %dx
        in %dx, %eax
        pop %edx
        ret

# pci_write: config dword at address EAX <- EBX.
pci_write:
        push %edx
        push %eax
        or $0x80000000, %eax
        mov $PCI_ADDR, %dx
        out %eax, %dx
        mov $PCI_DATA, %dx
        mov %ebx, %eax
        out %eax, %dx
        pop %eax
        pop %edx
        ret

# bar_base: EAX = the 32-bit base of BAR number AL of the device at `devfn`.
bar_base:
        push %ebx
        movzbl %al, %eax
        shl $2, %eax
        add $0x10, %eax
        or devfn, %eax
        call pci_read
        and $0xFFFFFFF0, %eax
        pop %ebx
        ret

# find_device: finds the device and its structures; EAX = 0 if not found.
find_device:
        xor %ecx, %ecx                  # slot
1:      mov %ecx, %eax
        shl $11, %eax
        mov %eax, devfn
        call pci_read
        cmp $VIRTIO_NET_ID, %eax
        je 2f
        inc %ecx
        cmp $32, %ecx
        jb 1b
        xor %eax, %eax
        ret
2:      PUTS32 "hostile-net: virtio-net in slot "
        mov %ecx, %eax
        call puthex32
        PUTS32 "\n"
        mov devfn, %eax
        or $0x04, %eax
        call pci_read
        or $0x06, %eax                  # memory decode, bus master
        mov %eax, %ebx
        mov devfn, %eax
        or $0x04, %eax
        call pci_write
        mov devfn, %eax
        or $0x34, %eax
        call pci_read
        movzbl %al, %esi                # first capability
3:      test %esi, %esi
        jz 5f
        mov devfn, %eax
        or %esi, %eax
        call pci_read                   # id, next, len, cfg_type
        mov %eax, %edx
        cmp $0x09, %al                  # vendor-specific: a virtio structure
        jne 4f
        mov devfn, %eax
        lea 4(%esi), %ebx
        or %ebx, %eax
        call pci_read                   # bar in AL
        call bar_base
        mov %eax, %edi
        mov devfn, %eax
        lea 8(%esi), %ebx
        or %ebx, %eax
        call pci_read                   # offset
        add %eax, %edi                  # EDI = the structure's address
        mov %edx, %eax
        shr $24, %eax                   # cfg_type
        cmp $1, %al
        jne 6f
        mov %edi, common
        jmp 4f
6:      cmp $4, %al
        jne 8f
        mov %edi, device_cfg
        jmp 4f
8:      cmp $2, %al
        jne 4f
        mov %edi, notify_base
        mov devfn, %eax
        lea 16(%esi), %ebx
        or %ebx, %eax
        call pci_read
        mov %eax, notify_mult
4:      mov %edx, %eax
        shr $8, %eax
        movzbl %al, %esi
        jmp 3b
5:      mov common, %eax
        test %eax, %eax
        jz 7f
        mov notify_base, %eax
        test %eax, %eax
        jz 7f
        mov device_cfg, %eax
        test %eax, %eax
        jz 7f
        mov $1, %eax
        ret
7:      PUTS32 "hostile-net: no common, notify or device capability\n"
        xor %eax, %eax
        ret

# setup_tx: reset the device, negotiate VERSION_1 and MAC, set up queue 1
# (QSIZE entries) and enable it, DRIVER_OK.
setup_tx:
        push %eax
        push %ebx
        push %ecx
        push %edi
        mov common, %ebx
        movb $0, CC_DEVICE_STATUS(%ebx)
1:      movb CC_DEVICE_STATUS(%ebx), %cl  # the reset is done when status reads 0
        test %cl, %cl
        jnz 1b
        movb $S_ACK_DRIVER, CC_DEVICE_STATUS(%ebx)
        movl $1, CC_DRIVER_FEATURE_SELECT(%ebx)
        movl $1, CC_DRIVER_FEATURE(%ebx)        # VIRTIO_F_VERSION_1 (bit 32)
        movl $0, CC_DRIVER_FEATURE_SELECT(%ebx)
        movl $0x20, CC_DRIVER_FEATURE(%ebx)     # VIRTIO_NET_F_MAC (bit 5)
        movb $S_ACK_DRIVER|S_FEATURES_OK, CC_DEVICE_STATUS(%ebx)
        movw $TXQ, CC_QUEUE_SELECT(%ebx)
        movw $QSIZE, CC_QUEUE_SIZE(%ebx)
        movl $DESC, CC_QUEUE_DESC(%ebx)
        movl $0, CC_QUEUE_DESC + 4(%ebx)
        movl $AVAIL, CC_QUEUE_DRIVER(%ebx)
        movl $0, CC_QUEUE_DRIVER + 4(%ebx)
        movl $USED, CC_QUEUE_DEVICE(%ebx)
        movl $0, CC_QUEUE_DEVICE + 4(%ebx)
        movzwl CC_QUEUE_NOTIFY_OFF(%ebx), %eax
        imul notify_mult, %eax
        add notify_base, %eax
        mov %eax, notify_addr
        # Clean rings: nothing available, nothing used.
        mov $AVAIL, %edi
        xor %eax, %eax
        mov $(0x2000 / 4), %ecx
        rep stosl
        movl $0, avail_idx
        movw $1, CC_QUEUE_ENABLE(%ebx)
        movb $S_ACK_DRIVER|S_FEATURES_OK|S_DRIVER_OK, CC_DEVICE_STATUS(%ebx)
        pop %edi
        pop %ecx
        pop %ebx
        pop %eax
        ret

# build_frame: a 60-byte broadcast frame at FRAME (the rest of the 1600 bytes
# filled with 0x5A) from the MAC in `mac`, ethertype 0x88B5.
build_frame:
        push %eax
        push %ecx
        push %edi
        mov $FRAME, %edi
        mov $0x5A5A5A5A, %eax
        mov $(1600 / 4), %ecx
        rep stosl
        movl $0xFFFFFFFF, FRAME
        movw $0xFFFF, FRAME + 4
        mov mac, %eax
        mov %eax, FRAME + 6
        mov mac + 4, %eax
        mov %ax, FRAME + 10
        movw $0xB588, FRAME + 12        # 0x88B5, big-endian
        pop %edi
        pop %ecx
        pop %eax
        ret

# set_desc: descriptor EDI <- address EAX, length ECX, flags DX, next EDX >> 16.
set_desc:
        push %edi
        shl $4, %edi
        mov %eax, DESC(%edi)
        movl $0, DESC + 4(%edi)
        mov %ecx, DESC + 8(%edi)
        mov %edx, DESC + 12(%edi)       # flags (low half), next (high half)
        pop %edi
        ret

# chain2: descriptors 0 (the header) -> 1 (ECX bytes of FRAME).
chain2:
        push %eax
        push %ecx
        push %edx
        push %edi
        push %ecx
        xor %edi, %edi
        mov $HDR, %eax
        mov $12, %ecx
        mov $(1 << 16 | F_NEXT), %edx
        call set_desc
        pop %ecx
        mov $1, %edi
        mov $FRAME, %eax
        xor %edx, %edx
        call set_desc
        pop %edi
        pop %edx
        pop %ecx
        pop %eax
        ret

# notify: notify the TX queue.
notify:
        push %eax
        push %ebx
        mov notify_addr, %ebx
        movw $TXQ, (%ebx)
        pop %ebx
        pop %eax
        ret

# post_and_wait: make head 0 available, notify, and wait a while for the used
# ring to catch up.
post_and_wait:
        push %eax
        push %ecx
        push %edx
        mov avail_idx, %eax
        mov %eax, %edx
        and $(QSIZE - 1), %edx
        movw $0, AVAIL + 4(,%edx,2)     # ring[idx % QSIZE] = head 0
        inc %eax
        mov %eax, avail_idx
        mfence
        mov %ax, AVAIL + 2
        call notify
        mov $2000000, %ecx
1:      movzwl USED + 2, %edx
        cmp %ax, %dx
        je 2f
        pause
        dec %ecx
        jnz 1b
2:      pop %edx
        pop %ecx
        pop %eax
        ret

# report: print "net case used 0x<used.idx> device 0x<status>: " (the caller
# prints the name).
report:
        push %eax
        push %ebx
        PUTS32 "net case used "
        movzwl USED + 2, %eax
        call puthex32
        PUTS32 " device "
        mov common, %ebx
        movzbl CC_DEVICE_STATUS(%ebx), %eax
        call puthex32
        PUTS32 ": "
        pop %ebx
        pop %eax
        ret

        .balign 4
devfn:          .long 0
common:         .long 0
notify_base:    .long 0
notify_mult:    .long 0
notify_addr:    .long 0
device_cfg:     .long 0
avail_idx:      .long 0
forged_left:    .long 0
mac:            .long 0, 0
        # The mode byte, after a marker a test finds in the binary to patch it:
        # bit 0 skips header-short (QEMU 7.2 aborts on it).
        .ascii "HNETMODE"
mode:           .byte 0

        .include "serial32.S"
