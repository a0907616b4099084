//! The two boot entries and the trampoline to long mode.
//!
//! Both PVH (`XEN_ELFNOTE_PHYS32_ENTRY`: QEMU `-kernel`, cloud-hypervisor, Firecracker) and
//! Multiboot2 (GRUB on BIOS and UEFI) enter in 32-bit protected mode with paging off. The
//! trampoline records which entry ran, the boot-information pointer and the TSC, zeroes `.bss`,
//! identity-maps the first 4 GiB with 2 MiB pages, enables PAE, long mode and NX, and calls
//! [`kernel_entry`](crate::kernel_entry) on the kernel stack. Rust replaces these page tables
//! with precise ones (W^X, guard page) early in boot.

/// Boot entry kinds passed from the trampoline to Rust.
pub const ENTRY_PVH: u32 = 0;
/// Multiboot2 (GRUB) entry.
pub const ENTRY_MULTIBOOT2: u32 = 1;

/// Size of the kernel stack the boot CPU runs on (a guard page sits below it).
pub const KERNEL_STACK_SIZE: usize = 256 * 1024;

core::arch::global_asm!(
    r#"
    .set MB2_MAGIC, 0xe85250d6
    .set MB2_ARCH_I386, 0
    .set MB2_BOOTLOADER_MAGIC, 0x36d76289

    /* Multiboot2 header: magic, architecture, length, checksum, then tags. */
    .section .multiboot2_header, "a"
    .balign 8
mb2_header_start:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header_start))
    /* Information request tag: command line, modules, memory map, ACPI (old and new). */
    .balign 8
    .short 1
    .short 0
    .long 28
    .long 1
    .long 3
    .long 6
    .long 14
    .long 15
    /* Framebuffer tag, optional (flags 1), no preferred size or depth: GRUB hands over the
       firmware's mode on UEFI, and text mode on BIOS with grub.cfg's gfxpayload=text; the
       status screen draws on either (kernel/src/screen). */
    .balign 8
    .short 5
    .short 1
    .long 20
    .long 0
    .long 0
    .long 0
    /* End tag. */
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    /* PVH entry note (Xen ELF note type 18, XEN_ELFNOTE_PHYS32_ENTRY). */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_entry
    .balign 4

    .section .boot.text, "ax"
    .code32
    .global mb2_entry
mb2_entry:
    cli
    cld
    cmpl $MB2_BOOTLOADER_MAGIC, %eax
    jne boot_halt32
    movl $1, %edi
    movl %ebx, %esi
    jmp boot_common32

    .global pvh_entry
pvh_entry:
    cli
    cld
    movl $0, %edi
    movl %ebx, %esi

boot_common32:
    /* TSC first, so "time from kernel entry" includes all of boot. */
    rdtsc
    movl %eax, %ebp
    movl %edx, %ecx

    /* Zero .bss (page tables, stacks, statics); no stack exists yet, so keep everything in
     * registers: edi = entry kind, esi = boot info, ecx:ebp = entry TSC. */
    movl $__bss_start, %edx
1:
    cmpl $__bss_end, %edx
    jae 2f
    movl $0, (%edx)
    addl $4, %edx
    jmp 1b
2:
    movl %edi, boot_entry_kind
    movl %esi, boot_info_ptr
    movl %ebp, boot_entry_tsc
    movl %ecx, boot_entry_tsc + 4

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; PDs: 2048 x 2 MiB identity pages. */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $0x3, %eax
    movl $boot_pdpt, %edx
    movl $4, %ecx
3:
    movl %eax, (%edx)
    addl $0x1000, %eax
    addl $8, %edx
    loop 3b
    movl $boot_pd, %edx
    movl $0x83, %eax
    movl $2048, %ecx
4:
    movl %eax, (%edx)
    addl $0x200000, %eax
    addl $8, %edx
    loop 4b

    /* CR4.PAE, CR3, EFER.LME|NXE, CR0.PG|WP|PE. */
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax
    wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | 1), %eax
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $boot_long_entry

boot_halt32:
    hlt
    jmp boot_halt32

    .code64
boot_long_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $kernel_stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_entry_kind, %edi
    movl boot_info_ptr, %esi
    movq boot_entry_tsc, %rdx
    call kernel_entry
5:
    cli
    hlt
    jmp 5b

    .section .rodata
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.stack, "aw", @nobits
    .balign 4096
    .global kernel_stack_guard
kernel_stack_guard:
    .skip 4096
    .global kernel_stack_bottom
kernel_stack_bottom:
    .skip {stack_size}
    .global kernel_stack_top
kernel_stack_top:

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
    .balign 8
boot_entry_tsc:
    .skip 8
boot_entry_kind:
    .skip 4
boot_info_ptr:
    .skip 4
    .text
"#,
    stack_size = const KERNEL_STACK_SIZE,
    options(att_syntax)
);
