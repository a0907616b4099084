# cpu_loop.S - the CPU-bound benchmark loop, shared by the `bench` guest and
# (later) Keel's kernel for its host-side comparison.
#
# keel_cpu_loop(iterations: u64 in RDI) -> u64 in RAX
#
# Runs `iterations` rounds of a 64-bit xorshift (13, 7, 17) entirely in
# registers: no memory access, no exits, nothing a hypervisor can intercept, so
# the time it takes measures raw CPU speed inside and outside a VM.  Returns the
# final xorshift state so a caller can keep the work observable.
#
# Keep this file self-contained and valid for both GNU as and LLVM's integrated
# assembler in AT&T syntax: 64-bit code, position-independent (no absolute
# addresses, no data), System V calling convention, clobbers only RAX, RCX,
# RDX and flags.  The kernel can use it with
#   core::arch::global_asm!(include_str!("<path>/cpu_loop.S"), options(att_syntax));
# and declare it as an `unsafe extern "sysv64"` function
#   fn keel_cpu_loop(iterations: u64) -> u64;
# global_asm! reads this text as a format string, so this file must never
# contain curly braces (not even in comments).  The includer must be assembling
# 64-bit code (the `bench` guest is, at this point; a kernel's global_asm! is by
# default).

        .balign 16
        .globl keel_cpu_loop
        .type keel_cpu_loop, @function
keel_cpu_loop:
        movabsq $0x2545F4914F6CDD1D, %rax       # any non-zero seed
        mov %rdi, %rcx                          # RCX = rounds left
        test %rcx, %rcx
        jz 2f
        .balign 16
1:      mov %rax, %rdx                          # x ^= x << 13
        shl $13, %rdx
        xor %rdx, %rax
        mov %rax, %rdx                          # x ^= x >> 7
        shr $7, %rdx
        xor %rdx, %rax
        mov %rax, %rdx                          # x ^= x << 17
        shl $17, %rdx
        xor %rdx, %rax
        dec %rcx
        jnz 1b
2:      ret
        .size keel_cpu_loop, . - keel_cpu_loop
