# flat32_tables.S - the descriptor tables of a 32-bit guest with flat segments.
#
# Include in .data. Defines `gdt` (null, 0x08 flat 32-bit code, 0x10 flat data),
# `gdt_descriptor` for LGDT and `idt_descriptor` for LIDT over the including guest's own
# 256-entry `idt`.

        .p2align 3
gdt:
        .quad 0
        .quad 0x00CF9B000000FFFF        # 0x08: flat 32-bit code
        .quad 0x00CF93000000FFFF        # 0x10: flat data
gdt_end:
gdt_descriptor:
        .word gdt_end - gdt - 1
        .long gdt
idt_descriptor:
        .word 256 * 8 - 1
        .long idt
