# pvh - a PVH ELF guest: Keel's PVH loader enters it in 32-bit protected mode with
# paging off and EBX = the hvm_start_info.  It checks the start info, then takes
# timer interrupts through the 8259 and the 8254, then powers off through ACPI.
#
# Expected serial output (each line on its own):
#   pvh guest: start info magic ok, version 1
#   pvh guest: cmdline "<the command line>"
#   pvh guest: modules 0x<n>, memory map entries 0x<n>
#   pvh guest: rsdp "RSD PTR "
#   pvh guest: 10 timer interrupts while halted
#   pvh guest: powering off
# then the VM stops with "guest powered off".  Any failed check prints
# "pvh guest: FAIL <what>" and halts with interrupts off.

        .include "common.S"

        .set START_INFO_MAGIC, 0x336ec578
        .set PM1_CNT, 0x604             # Keel's ACPI PM1a control register (FADT)
        .set SLP_S5, (5 << 10) | (1 << 13)     # SLP_TYP = S5 (the DSDT's \_S5_), SLP_EN
        .set TIMER_VECTOR, 0x20         # IRQ 0 after the 8259 is remapped to 0x20
        .set TICKS_WANTED, 10

        PVH_ENTRY                       # EBP = the start info, flat segments

        cmpl $START_INFO_MAGIC, (%ebp)
        je 1f
        PUTS32 "pvh guest: FAIL start info magic "
        mov (%ebp), %eax
        call puthex32
        jmp fail_end
1:      PUTS32 "pvh guest: start info magic ok, version "
        mov 4(%ebp), %eax
        add $'0', %al
        call putc32
        PUTS32 "\n"

        PUTS32 "pvh guest: cmdline \""
        mov 24(%ebp), %esi              # cmdline_paddr (below 4 GiB)
        test %esi, %esi
        jz 1f
        call puts32
1:      PUTS32 "\"\n"

        PUTS32 "pvh guest: modules "
        mov 12(%ebp), %eax              # nr_modules
        call puthex32
        PUTS32 ", memory map entries "
        mov 48(%ebp), %eax              # memmap_entries
        call puthex32
        PUTS32 "\n"

        PUTS32 "pvh guest: rsdp \""
        mov 32(%ebp), %esi              # rsdp_paddr
        mov $8, %ecx
2:      lodsb
        call putc32
        loop 2b
        PUTS32 "\"\n"

        # Interrupts: IDT gate for the timer, 8259 remapped to 0x20/0x28 with only
        # IRQ 0 unmasked, 8254 counter 0 in mode 2 at about 1 kHz.
        mov $timer_handler, %eax
        mov $idt + TIMER_VECTOR * 8, %edi
        mov %ax, (%edi)
        movw $SEL_CODE32, 2(%edi)
        movw $0x8E00, 4(%edi)           # present, DPL 0, 32-bit interrupt gate
        shr $16, %eax
        mov %ax, 6(%edi)
        lidt idt_descriptor

        mov $0x11, %al                  # ICW1: edge, cascade, ICW4 follows
        out %al, $0x20
        out %al, $0xA0
        mov $0x20, %al                  # ICW2: master vectors 0x20..
        out %al, $0x21
        mov $0x28, %al                  # slave vectors 0x28..
        out %al, $0xA1
        mov $0x04, %al                  # ICW3: slave on IR2
        out %al, $0x21
        mov $0x02, %al
        out %al, $0xA1
        mov $0x01, %al                  # ICW4: 8086 mode
        out %al, $0x21
        out %al, $0xA1
        mov $0xFE, %al                  # only IRQ 0
        out %al, $0x21
        mov $0xFF, %al
        out %al, $0xA1

        mov $0x34, %al                  # counter 0, LSB then MSB, mode 2
        out %al, $0x43
        mov $1193 & 0xFF, %al           # 1193182 Hz / 1193 = about 1 kHz
        out %al, $0x40
        mov $1193 >> 8, %al
        out %al, $0x40

wait_ticks:
        sti
        hlt                             # woken by the next timer interrupt
        cli
        cmpl $TICKS_WANTED, ticks
        jb wait_ticks

        PUTS32 "pvh guest: 10 timer interrupts while halted\n"
        PUTS32 "pvh guest: powering off\n"
        mov $PM1_CNT, %dx
        mov $SLP_S5, %ax
        out %ax, %dx
        PUTS32 "pvh guest: FAIL still running after the power-off write\n"
fail_end:
        PUTS32 "\n"
        cli
1:      hlt
        jmp 1b

timer_handler:
        push %eax
        incl ticks
        mov $0x20, %al                  # non-specific EOI to the master 8259
        out %al, $0x20
        pop %eax
        iret

        .include "serial32.S"

        .data
        .include "flat32_tables.S"
ticks:  .long 0

        .bss
        .p2align 4
idt:    .skip 256 * 8
        .skip 4096
stack_top:
