# hostile-virtio - drives a virtio-blk PCI function with malformed virtqueues.
#
# 32-bit protected mode, flat segments, no paging (a linear address is the
# guest-physical one).  Finds the first modern virtio-blk function (vendor
# 0x1AF4, device 0x1042) on bus 0 with config cycles through 0xCF8/0xCFC, turns
# on memory decode and bus mastering, and finds the common, notify and ISR
# structures through its vendor capabilities (so it runs on Keel's layout, BAR0,
# and on QEMU's, BAR4).  BARs must be assigned below 4 GiB already (Keel and
# SeaBIOS do).  Then, each case after a device reset, it sets up queue 0 (8
# entries, unless the case says otherwise), posts one request, notifies and
# prints one line:
#
#   virtio case used 0x<used.idx> status 0x<request status byte> device 0x<device_status>: <name>
#
# (the status byte starts as 0xff, so 0x000000ff means the device never wrote
# it).  The cases:
#   valid-read        a correct 512-byte read of sector 0 (must succeed: status 0)
#   desc-outside-ram  the header descriptor points at 0x4000_0000, beyond RAM
#   desc-loop         descriptor 0 -> 1 -> 0 -> ...
#   chain-too-long    a chain of 9 descriptors in an 8-entry queue (7 -> 0 again)
#   zero-length       a data descriptor of length 0
#   unaligned-length  a data descriptor of 100 bytes (not a multiple of 512)
#   head-out-of-range the available ring names descriptor 200 of 8
#   queue-size-3      queue_size set to 3 (not a power of two), then DRIVER_OK
#   notify-early      a request notified before DRIVER_OK (must not be served)
# then "hostile-virtio: done".  A device that is not found prints
# "hostile-virtio: no virtio-blk" instead.

        .include "common.S"

        .set PCI_ADDR, 0xCF8
        .set PCI_DATA, 0xCFC
        .set VIRTIO_BLK_ID, 0x10421AF4          # device << 16 | vendor

        # Guest memory for the queue (all below 1 MiB).
        .set DESC, 0x30000                      # 16-byte descriptors
        .set AVAIL, 0x31000                     # flags u16, idx u16, ring[] u16
        .set USED, 0x32000                      # flags u16, idx u16, ring[] {id u32, len u32}
        .set REQ, 0x33000                       # type u32, reserved u32, sector u64
        .set DATA, 0x34000                      # 512 bytes
        .set STATUS, 0x35000                    # the request's status byte
        .set BEYOND_RAM, 0x40000000

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

        .code16
        .globl _start
_start:
        REAL_MODE_ENTRY
        ENTER_PROTECTED_MODE
        call find_device
        test %eax, %eax
        jnz .Lcases
        PUTS32 "hostile-virtio: no virtio-blk\n"
        HALT_FOREVER
.Lcases:
        # valid-read
        mov $8, %eax
        call setup_queue
        call chain_valid
        mov $0, %eax
        call post_and_report
        PUTS32 "valid-read\n"

        # desc-outside-ram
        mov $8, %eax
        call setup_queue
        call chain_valid
        movl $BEYOND_RAM, DESC + 0
        mov $0, %eax
        call post_and_report
        PUTS32 "desc-outside-ram\n"

        # desc-loop: 0 -> 1 -> 0
        mov $8, %eax
        call setup_queue
        call chain_valid
        movw $F_NEXT|F_WRITE, DESC + 16 + 12
        movw $0, DESC + 16 + 14
        mov $0, %eax
        call post_and_report
        PUTS32 "desc-loop\n"

        # chain-too-long: 0 -> 1 -> ... -> 7 -> 0
        mov $8, %eax
        call setup_queue
        xor %ecx, %ecx
2:      mov %ecx, %edi
        shl $4, %edi
        movl $REQ, DESC(%edi)
        movl $0, DESC + 4(%edi)
        movl $16, DESC + 8(%edi)
        movw $F_NEXT, DESC + 12(%edi)
        lea 1(%ecx), %eax
        and $7, %eax
        mov %ax, DESC + 14(%edi)
        inc %ecx
        cmp $8, %ecx
        jb 2b
        mov $0, %eax
        call post_and_report
        PUTS32 "chain-too-long\n"

        # zero-length
        mov $8, %eax
        call setup_queue
        call chain_valid
        movl $0, DESC + 16 + 8
        mov $0, %eax
        call post_and_report
        PUTS32 "zero-length\n"

        # unaligned-length
        mov $8, %eax
        call setup_queue
        call chain_valid
        movl $100, DESC + 16 + 8
        mov $0, %eax
        call post_and_report
        PUTS32 "unaligned-length\n"

        # head-out-of-range
        mov $8, %eax
        call setup_queue
        call chain_valid
        mov $200, %eax
        call post_and_report
        PUTS32 "head-out-of-range\n"

        # queue-size-3
        mov $3, %eax
        call setup_queue
        call chain_valid
        mov $0, %eax
        call post_and_report
        PUTS32 "queue-size-3\n"

        # notify-early: everything but DRIVER_OK
        mov $8, %eax
        call setup_queue_no_driver_ok
        call chain_valid
        mov $0, %eax
        call post_and_report
        PUTS32 "notify-early\n"

        PUTS32 "hostile-virtio: done\n"
        HALT_FOREVER

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
        cmp $VIRTIO_BLK_ID, %eax
        je 2f
        inc %ecx
        cmp $32, %ecx
        jb 1b
        xor %eax, %eax
        ret
2:      PUTS32 "hostile-virtio: virtio-blk in slot "
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
6:      cmp $2, %al
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
        PUTS32 "hostile-virtio: common cfg at "
        mov common, %eax
        call puthex32
        PUTS32 ", notify at "
        mov notify_base, %eax
        call puthex32
        PUTS32 "\n"
        mov $1, %eax
        ret
7:      PUTS32 "hostile-virtio: no common or notify capability\n"
        xor %eax, %eax
        ret

# setup_queue: reset the device, negotiate VERSION_1, set up queue 0 with EAX
# entries and enable it, DRIVER_OK.  setup_queue_no_driver_ok stops before DRIVER_OK.
setup_queue:
        movb $1, with_driver_ok
        jmp 1f
setup_queue_no_driver_ok:
        movb $0, with_driver_ok
1:      mov common, %ebx
        movb $0, CC_DEVICE_STATUS(%ebx)
2:      movb CC_DEVICE_STATUS(%ebx), %cl  # the reset is done when status reads 0
        test %cl, %cl
        jnz 2b
        movb $S_ACK_DRIVER, CC_DEVICE_STATUS(%ebx)
        movl $1, CC_DRIVER_FEATURE_SELECT(%ebx)
        movl $1, CC_DRIVER_FEATURE(%ebx)        # VIRTIO_F_VERSION_1 (bit 32)
        movl $0, CC_DRIVER_FEATURE_SELECT(%ebx)
        movl $0, CC_DRIVER_FEATURE(%ebx)
        movb $S_ACK_DRIVER|S_FEATURES_OK, CC_DEVICE_STATUS(%ebx)
        movw $0, CC_QUEUE_SELECT(%ebx)
        mov %ax, CC_QUEUE_SIZE(%ebx)
        mov %eax, queue_size
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
        movw $1, CC_QUEUE_ENABLE(%ebx)
        # Clean rings: nothing available, nothing used.
        mov $AVAIL, %edi
        xor %eax, %eax
        mov $(0x3000 / 4), %ecx
        rep stosl
        cmpb $0, with_driver_ok
        je 3f
        movb $S_ACK_DRIVER|S_FEATURES_OK|S_DRIVER_OK, CC_DEVICE_STATUS(%ebx)
3:      ret

# chain_valid: descriptors 0 (header) -> 1 (512-byte data, device-written) ->
# 2 (status byte, device-written): a read of sector 0.
chain_valid:
        movl $0, REQ                    # VIRTIO_BLK_T_IN
        movl $0, REQ + 4
        movl $0, REQ + 8
        movl $0, REQ + 12
        movb $0xFF, STATUS
        movl $REQ, DESC + 0
        movl $0, DESC + 4
        movl $16, DESC + 8
        movw $F_NEXT, DESC + 12
        movw $1, DESC + 14
        movl $DATA, DESC + 16 + 0
        movl $0, DESC + 16 + 4
        movl $512, DESC + 16 + 8
        movw $F_NEXT|F_WRITE, DESC + 16 + 12
        movw $2, DESC + 16 + 14
        movl $STATUS, DESC + 32 + 0
        movl $0, DESC + 32 + 4
        movl $1, DESC + 32 + 8
        movw $F_WRITE, DESC + 32 + 12
        movw $0, DESC + 32 + 14
        ret

# post_and_report: make head EAX available, notify queue 0, wait a while for
# the used ring, and print "virtio case " and the three values, then the caller
# prints the name.
post_and_report:
        movb $0xFF, STATUS
        mov %ax, AVAIL + 4              # ring[0] = head
        movw $1, AVAIL + 2              # idx = 1
        mfence
        mov notify_addr, %ebx
        movw $0, (%ebx)                 # notify queue 0
        mov $2000000, %ecx
1:      cmpw $0, USED + 2
        jne 2f
        pause
        dec %ecx
        jnz 1b
2:      PUTS32 "virtio case used "
        movzwl USED + 2, %eax
        call puthex32
        PUTS32 " status "
        movzbl STATUS, %eax
        call puthex32
        PUTS32 " device "
        mov common, %ebx
        movzbl CC_DEVICE_STATUS(%ebx), %eax
        call puthex32
        PUTS32 ": "
        ret

        .balign 4
devfn:          .long 0
common:         .long 0
notify_base:    .long 0
notify_mult:    .long 0
notify_addr:    .long 0
queue_size:     .long 0
with_driver_ok: .byte 0

        .include "serial32.S"
