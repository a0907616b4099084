# serial64.S - COM1 output for 64-bit long-mode code.
#
# Include at the END of a guest (it emits code).  Routines preserve every
# register they do not return in.

        .code64

# putc64: send AL to COM1 (waits for LSR.THR_EMPTY first).
putc64:
        push %rdx
        push %rax
        mov $COM1_LSR, %dx
1:      in %dx, %al
        test $LSR_THR_EMPTY, %al
        jz 1b
        pop %rax
        mov $COM1_THR, %dx
        out %al, %dx
        pop %rdx
        ret

# puts64: send the NUL-terminated string at RSI.
puts64:
        push %rsi
        push %rax
1:      lodsb
        test %al, %al
        jz 2f
        call putc64
        jmp 1b
2:      pop %rax
        pop %rsi
        ret

# puthex64: send RAX as "0x" followed by exactly ECX (1..16) lower-case hex
# digits: the low 4*ECX bits of RAX, most significant first.
puthex64:
        push %rax
        push %rcx
        push %rdx
        mov %rax, %rdx
        mov $'0', %al
        call putc64
        mov $'x', %al
        call putc64
        shl $2, %ecx                    # ECX = bit position just above the next digit
1:      sub $4, %ecx
        mov %rdx, %rax
        shr %cl, %rax
        and $0xF, %al
        add $'0', %al
        cmp $'9', %al
        jbe 2f
        add $('a' - '0' - 10), %al
2:      call putc64
        test %ecx, %ecx
        jnz 1b
        pop %rdx
        pop %rcx
        pop %rax
        ret

# putdec64: send RAX as an unsigned decimal number.
putdec64:
        push %rax
        push %rcx
        push %rdx
        push %rsi
        mov $10, %ecx
        xor %esi, %esi                  # ESI = number of digits pushed
1:      xor %edx, %edx
        div %rcx                        # RDX:RAX / 10 -> RAX quotient, RDX remainder
        push %rdx                       # least significant digit first...
        inc %esi
        test %rax, %rax
        jnz 1b
2:      pop %rax                        # ...so they pop most significant first
        add $'0', %al
        call putc64
        dec %esi
        jnz 2b
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        ret
