# smp - a PVH ELF guest that starts every CPU the ACPI MADT lists and sends them an
# IPI.  The loader enters the BSP in 32-bit protected mode with paging off and
# EBX = the hvm_start_info; the APs wait for INIT-SIPI-SIPI, as on a PC.
#
#   BSP: find the RSDP (start info, else the BIOS area scan), the MADT and the
#        FADT/DSDT (for power-off); copy the real-mode trampoline to 0x8000 and
#        send each other CPU INIT, STARTUP, STARTUP through the xAPIC ICR; wait
#        for the APs to check in; send one fixed IPI (vector 0x40) to all but
#        itself; wait for every AP to take it; then one NMI to all but itself,
#        and wait again; power off through ACPI.
#   AP:  trampoline (real mode, CS:IP = 0800:0000) -> 32-bit protected mode ->
#        own stack -> enable its local APIC, load the IDT -> check in -> halt
#        with interrupts on until the IPI comes.
#
# Expected serial output with N CPUs in the MADT (AP lines in any order):
#   smp guest: madt cpus=N
#   smp guest: bsp apic id 0
#   smp guest: ap 1 up                  (one line per AP, N-1 lines)
#   smp guest: N cpus up
#   smp guest: ap 1 got ipi             (one line per AP, N-1 lines)
#   smp guest: ipis delivered to N-1 aps
#   smp guest: ap 1 got nmi             (one line per AP, N-1 lines)
#   smp guest: nmis delivered to N-1 aps
#   smp guest: done
# then the VM powers off.  With N = 1 there are no AP lines and the IPI is not
# sent ("ipis delivered to 0 aps", "nmis delivered to 0 aps").  Failures print
# "smp guest: FAIL ..." lines:
# APs missing after the time-out ("FAIL only k of N-1 APs came up", then power
# off), APs without the IPI or the NMI ("FAIL only k of N-1 APs got the ipi" or
# "... the nmi", then done and power off), no RSDP, MADT or enabled MADT CPU (power off, with Keel's PM1a
# port and S5 type when there are no tables).
#
# Every line ends in "\r\n".  Lines are printed under a spinlock so that CPUs
# printing at the same time never interleave their characters.

        .include "common.S"

        .set START_INFO_MAGIC, 0x336ec578

# Local APIC (xAPIC MMIO at its architectural base; SDM vol. 3 ch. 11).  Paging
# is off, so the registers are reached at their physical addresses.
        .set LAPIC_BASE, 0xFEE00000
        .set LAPIC_EOI, LAPIC_BASE + 0xB0
        .set LAPIC_SVR, LAPIC_BASE + 0xF0
        .set LAPIC_ICR_LO, LAPIC_BASE + 0x300   # writing it sends the IPI
        .set LAPIC_ICR_HI, LAPIC_BASE + 0x310   # destination in bits 31:24
        .set SVR_ENABLE, 0x1FF          # APIC software enable | spurious vector 0xFF
        .set ICR_BUSY, 1 << 12          # delivery status: send pending
        .set ICR_INIT, 0x00004500       # INIT, level assert
        .set TRAMPOLINE, 0x8000         # SIPI vector 0x08: the APs start at 0800:0000
        .set IPI_VECTOR, 0x40
        .set SPURIOUS_VECTOR, 0xFF      # the SVR's vector (low 8 bits of SVR_ENABLE)
        .set ICR_STARTUP, 0x00004600 | (TRAMPOLINE >> 12)       # STARTUP, vector = page
        .set ICR_FIXED_ALL_BUT_SELF, 0x000C0000 | IPI_VECTOR    # shorthand 11, fixed, edge
        .set ICR_NMI_ALL_BUT_SELF, 0x000C0400                   # shorthand 11, NMI
        .set NMI_VECTOR, 2

        .set MAX_CPUS, 256              # MADT entries recorded (xAPIC ids are 8 bits)
        .set AP_STACK_SIZE, 1024        # per AP, indexed by APIC id

# Bounded waits, counted in PAUSE iterations, not timed: the guest must work
# without a calibrated timer.  QEMU 7.2 TCG runs about 6M of these loop
# iterations a second (PAUSE leaves the translated block; about 2M with
# -accel tcg,thread=single), hardware more, so WAIT_SPINS gives up after about
# 3.5 s under TCG (9 s single-threaded) and well under that on hardware.
        .set DELAY_AFTER_INIT, 20000    # the SDM's 10 ms, shortened: virtual CPUs need none
        .set DELAY_AFTER_SIPI, 2000     # the SDM's 200 us
        .set ICR_IDLE_SPINS, 100000     # for the delivery-status bit to clear
        .set WAIT_SPINS, 20000000       # for the APs to check in or take the IPI

# ACPI (ACPI 6.5 ch. 5).  Offsets into the tables.
        .set RSDP_REVISION, 15
        .set RSDP_RSDT, 16
        .set RSDP_XSDT, 24
        .set SDT_LENGTH, 4
        .set SDT_HEADER_LEN, 36
        .set MADT_ENTRIES, 44           # after the header, the local APIC address, the flags
        .set MADT_LOCAL_APIC, 0         # entry type: processor local APIC
        .set MADT_LOCAL_X2APIC, 9       # entry type: processor local x2APIC
        .set MADT_ENABLED, 1            # flags bit 0
        .set FADT_DSDT, 40
        .set FADT_PM1A_CNT_BLK, 64
        .set FADT_X_DSDT, 140
        .set SLP_TYP_SHIFT, 10
        .set SLP_TYP_MASK, 7 << SLP_TYP_SHIFT
        .set SLP_EN, 1 << 13
# Keel's PM1a control port and S5 sleep type: used when the tables do not say.
        .set KEEL_PM1_CNT, 0x604
        .set KEEL_S5_SLP_TYP, 5

        PVH_ENTRY                       # EBP = the start info, flat segments

        call find_rsdp
        test %esi, %esi
        jnz 1f
        PUTS32 "smp guest: FAIL no ACPI RSDP\r\n"
        jmp power_off
1:      mov %esi, rsdp

        mov $0x50434146, %eax           # "FACP": the FADT, for power-off
        call find_table
        test %esi, %esi
        jz 1f
        call read_fadt
1:      mov $0x43495041, %eax           # "APIC": the MADT
        call find_table
        test %esi, %esi
        jnz 1f
        PUTS32 "smp guest: FAIL no MADT\r\n"
        jmp power_off
1:      call read_madt
        cmpl $0, cpu_count
        jne 1f
        PUTS32 "smp guest: FAIL no enabled CPU in the MADT\r\n"
        jmp power_off
1:

        PUTS32 "smp guest: madt cpus="
        mov cpu_count, %eax
        call putdec32
        PUTS32 "\r\n"

        mov $1, %eax
        cpuid
        shr $24, %ebx                   # CPUID.1:EBX[31:24] = initial APIC id
        mov %ebx, bsp_id
        PUTS32 "smp guest: bsp apic id "
        mov %ebx, %eax
        call putdec32
        PUTS32 "\r\n"

        # The IDT the APs load: the IPI and the APIC's spurious vector.  The BSP
        # itself keeps IF=0 and needs none.
        mov $IPI_VECTOR, %eax
        mov $ipi_handler, %edx
        call set_gate
        mov $NMI_VECTOR, %eax
        mov $nmi_handler, %edx
        call set_gate
        mov $SPURIOUS_VECTOR, %eax
        mov $spurious_handler, %edx
        call set_gate

        # The APs start in real mode at the SIPI vector's page, below 1 MiB: the
        # trampoline must be copied there (this image lives at 1 MiB).
        mov $trampoline_start, %esi
        mov $TRAMPOLINE, %edi
        mov $(trampoline_end - trampoline_start), %ecx
        rep movsb

        # An OS enables the BSP's APIC before it sends IPIs; under Keel it
        # comes out of reset software-disabled.
        movl $SVR_ENABLE, LAPIC_SVR

        mov cpu_count, %eax
        dec %eax
        mov %eax, aps_expected          # every MADT CPU but this one
        jz all_up                       # N = 1: nothing to start

        xor %ebx, %ebx                  # index into cpu_ids
start_next:
        cmp cpu_count, %ebx
        jae wait_up
        mov cpu_ids(, %ebx, 4), %eax
        inc %ebx
        cmp bsp_id, %eax
        je start_next                   # not ourselves
        cmp $0xFF, %eax
        ja start_next                   # beyond xAPIC destinations (x2APIC only): cannot reach
        shl $24, %eax
        mov %eax, %edx                  # ICR high: destination
        mov $ICR_INIT, %eax
        call send_ipi
        mov $DELAY_AFTER_INIT, %ecx
        call delay
        mov $ICR_STARTUP, %eax          # two SIPIs, as the SDM's MP protocol does: a
        call send_ipi                   # CPU that already runs ignores the second
        mov $DELAY_AFTER_SIPI, %ecx
        call delay
        mov $ICR_STARTUP, %eax
        call send_ipi
        mov $DELAY_AFTER_SIPI, %ecx
        call delay
        jmp start_next

wait_up:
        mov $aps_up, %edi
        mov aps_expected, %eax
        call wait_count
        cmp aps_expected, %ecx
        jae all_up
        mov $came_up_text, %esi
        call report_shortfall
        jmp power_off

all_up:
        call lock_acquire
        PUTS32 "smp guest: "
        mov cpu_count, %eax
        call putdec32
        PUTS32 " cpus up\r\n"
        call lock_release

        cmpl $0, aps_expected
        je ipis_done
        xor %edx, %edx                  # destination unused with a shorthand
        mov $ICR_FIXED_ALL_BUT_SELF, %eax
        call send_ipi
        mov $aps_ipi, %edi
        mov aps_expected, %eax
        call wait_count
        cmp aps_expected, %ecx
        jae ipis_done
        mov $got_ipi_text, %esi
        call report_shortfall
        jmp done

ipis_done:
        call lock_acquire
        PUTS32 "smp guest: ipis delivered to "
        mov aps_expected, %eax
        call putdec32
        PUTS32 " aps\r\n"
        call lock_release

        # The same with an NMI, which also wakes a CPU halted with IF=0.
        cmpl $0, aps_expected
        je nmis_done
        xor %edx, %edx
        mov $ICR_NMI_ALL_BUT_SELF, %eax
        call send_ipi
        mov $aps_nmi, %edi
        mov aps_expected, %eax
        call wait_count
        cmp aps_expected, %ecx
        jae nmis_done
        mov $got_nmi_text, %esi
        call report_shortfall
        jmp done

nmis_done:
        call lock_acquire
        PUTS32 "smp guest: nmis delivered to "
        mov aps_expected, %eax
        call putdec32
        PUTS32 " aps\r\n"
        call lock_release
done:
        call lock_acquire
        PUTS32 "smp guest: done\r\n"
        call lock_release

# power_off: S5 through PM1a control (read-modify-write keeps SCI_EN).
power_off:
        mov pm1a_cnt, %edx
        in %dx, %ax
        and $~(SLP_TYP_MASK | SLP_EN), %ax
        mov slp_typ, %ecx
        shl $SLP_TYP_SHIFT, %ecx
        or %cx, %ax
        or $SLP_EN, %ax
        out %ax, %dx
        # The machine may take a moment to stop (QEMU powers off from its main
        # loop, not in the I/O write): only complain after a while.
        mov $WAIT_SPINS, %ecx
        call delay
        call lock_acquire
        PUTS32 "smp guest: FAIL still running after the power-off write\r\n"
        call lock_release
        HALT_FOREVER

# ---------------------------------------------------------------------------
# BSP helpers
# ---------------------------------------------------------------------------

# find_rsdp: ESI = the RSDP, or 0.  The start info's rsdp_paddr when it is set
# (QEMU's PVH boot may leave it 0), else the first "RSD PTR " on a 16-byte
# boundary in 0xE0000-0xFFFFF whose first 20 bytes sum to 0.
find_rsdp:
        push %eax
        push %ecx
        xor %esi, %esi
        cmpl $START_INFO_MAGIC, (%ebp)
        jne 1f
        cmpl $0, 36(%ebp)               # rsdp_paddr, high half: above 4 GiB is unreachable
        jne 1f
        mov 32(%ebp), %esi
        test %esi, %esi
        jnz 9f
1:      mov $0xE0000, %esi
2:      cmpl $0x20445352, (%esi)        # "RSD "
        jne 3f
        cmpl $0x20525450, 4(%esi)       # "PTR "
        jne 3f
        xor %eax, %eax                  # ACPI 1.0 checksum: bytes 0..19
        mov $20, %ecx
4:      add -1(%esi, %ecx), %al
        loop 4b
        test %al, %al
        jz 9f
3:      add $16, %esi
        cmp $0x100000, %esi
        jb 2b
        xor %esi, %esi
9:      pop %ecx
        pop %eax
        ret

# find_table: EAX = signature; ESI = the first table with it that the XSDT (ACPI
# 2.0+ RSDP with one) or else the RSDT lists, or 0.  Tables above 4 GiB are
# skipped: paging is off.
find_table:
        push %ebx
        push %ecx
        push %edx
        push %edi
        mov rsdp, %ebx
        mov $4, %edx                    # RSDT: 32-bit entries
        mov RSDP_RSDT(%ebx), %edi
        cmpb $2, RSDP_REVISION(%ebx)
        jb 1f
        cmpl $0, RSDP_XSDT + 4(%ebx)
        jne 1f
        cmpl $0, RSDP_XSDT(%ebx)
        je 1f
        mov RSDP_XSDT(%ebx), %edi
        mov $8, %edx                    # XSDT: 64-bit entries
1:      mov SDT_LENGTH(%edi), %ecx
        add %edi, %ecx                  # ECX = end of the table
        add $SDT_HEADER_LEN, %edi       # EDI = first entry
2:      lea (%edi, %edx), %ebx
        cmp %ecx, %ebx
        ja 8f                           # no whole entry left
        mov (%edi), %esi
        cmp $8, %edx
        jne 3f
        cmpl $0, 4(%edi)
        jne 4f                          # above 4 GiB
3:      test %esi, %esi
        jz 4f
        cmp %eax, (%esi)
        je 9f
4:      add %edx, %edi
        jmp 2b
8:      xor %esi, %esi
9:      pop %edi
        pop %edx
        pop %ecx
        pop %ebx
        ret

# read_fadt: ESI = the FADT.  Takes the PM1a control port and the S5 sleep type
# (from the DSDT's \_S5_ package) where the tables give them.
read_fadt:
        push %eax
        push %esi
        mov FADT_PM1A_CNT_BLK(%esi), %eax
        test %eax, %eax
        jz 1f
        mov %eax, pm1a_cnt
1:      mov FADT_DSDT(%esi), %eax
        test %eax, %eax
        jnz 2f
        cmpl $FADT_X_DSDT + 8, SDT_LENGTH(%esi)
        jb 9f                           # no X_DSDT field either
        cmpl $0, FADT_X_DSDT + 4(%esi)
        jne 9f
        mov FADT_X_DSDT(%esi), %eax
        test %eax, %eax
        jz 9f
2:      mov %eax, %esi
        call find_s5
9:      pop %esi
        pop %eax
        ret

# find_s5: ESI = the DSDT.  Looks for Name(\_S5_, Package(){a, ...}) in its AML
# (no interpreter: firmware writes \_S5_ as a static package) and stores a's low
# three bits in slp_typ.  AML (ACPI 6.5 ch. 20): NameOp 0x08, an optional root
# prefix '\', "_S5_", PackageOp 0x12, PkgLength (1 + lead[7:6] bytes),
# NumElements (1 byte), then a = ZeroOp 0x00 / OneOp 0x01 / OnesOp 0xFF /
# BytePrefix 0x0A and a byte.
find_s5:
        pusha
        mov SDT_LENGTH(%esi), %edx
        add %esi, %edx                  # EDX = end of the DSDT
        lea SDT_HEADER_LEN + 1(%esi), %edi      # room for the NameOp before the name
1:      lea 13(%edi), %eax              # name, PackageOp, up to 4 PkgLength bytes,
        cmp %edx, %eax                  # NumElements, 2 bytes of a: 13 bytes at most
        ja 9f
        cmpl $0x5F35535F, (%edi)        # "_S5_"
        jne 8f
        cmpb $0x08, -1(%edi)
        je 2f
        cmpb $'\\', -1(%edi)
        jne 8f
        cmpb $0x08, -2(%edi)
        jne 8f
2:      cmpb $0x12, 4(%edi)
        jne 8f
        movzbl 5(%edi), %ebx
        shr $6, %ebx                    # PkgLength bytes after the lead byte
        lea 7(%edi, %ebx), %ebx         # skip lead, those, NumElements: the first element
        movzbl (%ebx), %eax
        cmp $0x0A, %al
        jne 3f
        movzbl 1(%ebx), %eax            # BytePrefix: the value follows
        jmp 4f
3:      cmp $0x01, %al
        jbe 4f                          # ZeroOp, OneOp: the opcode is the value
        cmp $0xFF, %al
        jne 8f                          # OnesOp: all ones; anything else is not a constant
4:      and $7, %eax
        mov %eax, slp_typ
        jmp 9f
8:      inc %edi
        jmp 1b
9:      popa
        ret

# read_madt: ESI = the MADT.  Records the APIC ids of the enabled local APIC and
# local x2APIC entries in cpu_ids (up to MAX_CPUS) and their number in
# cpu_count.
read_madt:
        pusha
        mov SDT_LENGTH(%esi), %edx
        add %esi, %edx                  # EDX = end of the MADT
        lea MADT_ENTRIES(%esi), %edi
        xor %ebx, %ebx                  # CPUs found
1:      lea 2(%edi), %eax
        cmp %edx, %eax
        ja 9f                           # no entry header left
        movzbl 1(%edi), %ecx            # entry length
        cmp $2, %ecx
        jb 9f                           # malformed: would loop forever
        lea (%edi, %ecx), %eax
        cmp %edx, %eax
        ja 9f                           # entry runs past the table
        cmpb $MADT_LOCAL_APIC, (%edi)
        jne 2f
        cmp $8, %ecx
        jb 8f
        testl $MADT_ENABLED, 4(%edi)
        jz 8f
        movzbl 3(%edi), %eax            # APIC id
        jmp 3f
2:      cmpb $MADT_LOCAL_X2APIC, (%edi)
        jne 8f
        cmp $16, %ecx
        jb 8f
        testl $MADT_ENABLED, 8(%edi)
        jz 8f
        mov 4(%edi), %eax               # x2APIC id
3:      cmp $MAX_CPUS, %ebx
        jae 8f
        mov %eax, cpu_ids(, %ebx, 4)
        inc %ebx
8:      add %ecx, %edi
        jmp 1b
9:      mov %ebx, cpu_count
        popa
        ret

# set_gate: IDT entry EAX = a 32-bit interrupt gate to EDX.
set_gate:
        push %edi
        lea idt(, %eax, 8), %edi
        mov %dx, (%edi)
        movw $SEL_CODE32, 2(%edi)
        movw $0x8E00, 4(%edi)           # present, DPL 0, 32-bit interrupt gate
        push %edx
        shr $16, %edx
        mov %dx, 6(%edi)
        pop %edx
        pop %edi
        ret

# send_ipi: ICR high = EDX, then ICR low = EAX (the write that sends); waits
# (bounded) for the previous and this IPI to leave the APIC.
send_ipi:
        call wait_icr_idle
        mov %edx, LAPIC_ICR_HI
        mov %eax, LAPIC_ICR_LO
        call wait_icr_idle
        ret

# The APIC page is read with a plain MOV, as an OS's readl() does: a hypervisor emulates
# loads and stores to device memory, not every instruction that can touch it.
wait_icr_idle:
        push %ecx
        push %eax
        mov $ICR_IDLE_SPINS, %ecx
1:      mov LAPIC_ICR_LO, %eax
        test $ICR_BUSY, %eax
        jz 2f
        pause
        dec %ecx
        jnz 1b
2:      pop %eax
        pop %ecx
        ret

# delay: ECX iterations of PAUSE.
delay:
        pause
        dec %ecx
        jnz delay
        ret

# report_shortfall: prints "smp guest: FAIL only <ECX> of <aps_expected> APs<text at ESI>"
# under the console lock (a late AP may be printing).
report_shortfall:
        push %eax
        call lock_acquire
        PUTS32 "smp guest: FAIL only "
        mov %ecx, %eax
        call putdec32
        PUTS32 " of "
        mov aps_expected, %eax
        call putdec32
        PUTS32 " APs"
        call puts32
        call lock_release
        pop %eax
        ret

# wait_count: waits until the counter at EDI reaches EAX or WAIT_SPINS pass;
# ECX = the counter's last value.
wait_count:
        push %edx
        mov $WAIT_SPINS, %edx
1:      mov (%edi), %ecx
        cmp %eax, %ecx
        jae 2f
        pause                           # spin politely: the APs may share this core
        dec %edx
        jnz 1b
        mov (%edi), %ecx
2:      pop %edx
        ret

# ---------------------------------------------------------------------------
# Shared by the BSP and the APs
# ---------------------------------------------------------------------------

# lock_acquire / lock_release: the print spinlock, so lines of different CPUs
# never mix.  All registers preserved.
lock_acquire:
        push %eax
1:      mov $1, %eax
        lock xchg %eax, print_lock      # atomic test-and-set (XCHG locks anyway)
        test %eax, %eax
        jz 3f
2:      pause                           # wait reading, not writing: no bus lock storm
        cmpl $0, print_lock
        jne 2b
        jmp 1b
3:      pop %eax
        ret

lock_release:
        movl $0, print_lock             # x86 stores are not reordered with earlier ones
        ret

# putdec32: send EAX in decimal.
putdec32:
        push %eax
        push %ebx
        push %ecx
        push %edx
        mov $10, %ebx
        xor %ecx, %ecx
1:      xor %edx, %edx
        div %ebx
        push %edx                       # digits come out least significant first
        inc %ecx
        test %eax, %eax
        jnz 1b
2:      pop %eax
        add $'0', %al
        call putc32
        loop 2b
        pop %edx
        pop %ecx
        pop %ebx
        pop %eax
        ret

# ---------------------------------------------------------------------------
# Application processors
# ---------------------------------------------------------------------------

# The real-mode trampoline, copied to TRAMPOLINE.  A STARTUP IPI with vector
# 0x08 starts the AP here with CS = 0x0800 (base 0x8000), IP = 0, so everything
# it touches before protected mode is addressed relative to trampoline_start.
        .p2align 4
        .code16
trampoline_start:
        cli
        cld
        mov %cs, %ax
        mov %ax, %ds                    # DS base = 0x8000: reach the descriptor below
        lgdtl tramp_gdt_descriptor - trampoline_start
        mov %cr0, %eax
        or $CR0_PE, %eax
        mov %eax, %cr0
        # A 32-bit offset (operand-size prefix) reaches ap_entry32 at 1 MiB+.
        ljmpl $SEL_CODE32, $ap_entry32
        .p2align 3
tramp_gdt:                              # the same selectors as the BSP's GDT
        .quad 0
        .quad 0x00CF9B000000FFFF        # 0x08: flat 32-bit code
        .quad 0x00CF93000000FFFF        # 0x10: flat data
tramp_gdt_end:
tramp_gdt_descriptor:
        .word tramp_gdt_end - tramp_gdt - 1
        .long TRAMPOLINE + (tramp_gdt - trampoline_start)       # linear base
trampoline_end:
        .code32

ap_entry32:
        mov $SEL_DATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %ax, %fs
        mov %ax, %gs
        lgdt gdt_descriptor             # off the trampoline page: the guest's own GDT

        # A stack of its own, indexed by APIC id (no stack is needed for CPUID).
        mov $1, %eax
        cpuid
        shr $24, %ebx                   # CPUID.1:EBX[31:24] = initial APIC id
        lea 1(%ebx), %eax
        shl $10, %eax                   # (id + 1) * AP_STACK_SIZE
        .if AP_STACK_SIZE != 1 << 10
        .error "AP_STACK_SIZE must match the shift above"
        .endif
        lea ap_stacks(%eax), %esp

        # Ready for the IPI before checking in: the BSP sends it as soon as the
        # last AP is counted, and a software-disabled APIC need not accept it.
        # Enabled, it holds the IPI in its IRR until the STI below.
        movl $SVR_ENABLE, LAPIC_SVR
        lidt idt_descriptor

        call lock_acquire
        PUTS32 "smp guest: ap "
        mov %ebx, %eax
        call putdec32
        PUTS32 " up\r\n"
        call lock_release
        lock incl aps_up

1:      sti                             # STI's shadow covers HLT: no wake-up is lost
        hlt
        jmp 1b

# Vector 0x40, the BSP's IPI.
ipi_handler:
        push %esi
        push %edi
        mov $got_ipi_line, %esi
        mov $aps_ipi, %edi
        call report_event
        movl $0, LAPIC_EOI
        pop %edi
        pop %esi
        iret

# Vector 2, the BSP's NMI: no EOI (NMIs are not in the APIC's ISR).
nmi_handler:
        push %esi
        push %edi
        mov $got_nmi_line, %esi
        mov $aps_nmi, %edi
        call report_event
        pop %edi
        pop %esi
        iret

# report_event: on an AP, prints "smp guest: ap <its APIC id><text at ESI>" under the
# console lock, then counts the event in the counter at EDI.
report_event:
        push %eax
        push %ebx
        push %ecx
        push %edx
        mov $1, %eax
        cpuid
        shr $24, %ebx
        call lock_acquire
        PUTS32 "smp guest: ap "
        mov %ebx, %eax
        call putdec32
        call puts32
        call lock_release
        lock incl (%edi)
        pop %edx
        pop %ecx
        pop %ebx
        pop %eax
        ret

# The APIC's spurious vector: no EOI (SDM 11.9).
spurious_handler:
        iret

        .include "serial32.S"

        .data
        .include "flat32_tables.S"
came_up_text:   .asciz " came up\r\n"
got_ipi_text:   .asciz " got the ipi\r\n"
got_nmi_text:   .asciz " got the nmi\r\n"
got_ipi_line:   .asciz " got ipi\r\n"
got_nmi_line:   .asciz " got nmi\r\n"
        .p2align 2
rsdp:           .long 0
pm1a_cnt:       .long KEEL_PM1_CNT
slp_typ:        .long KEEL_S5_SLP_TYP
cpu_count:      .long 0                 # N: enabled CPUs in the MADT
bsp_id:         .long 0
aps_expected:   .long 0                 # N - 1
# Written by several CPUs: each on a cache line of its own.
        .p2align 6
print_lock:     .long 0
        .p2align 6
aps_up:         .long 0
        .p2align 6
aps_ipi:        .long 0
        .p2align 6
aps_nmi:        .long 0

        .bss
        .p2align 4
idt:    .skip 256 * 8
cpu_ids:
        .skip MAX_CPUS * 4
        .skip 4096
stack_top:
        .p2align 4
ap_stacks:
        .skip MAX_CPUS * AP_STACK_SIZE
