# serial32.S - COM1 output for 32-bit protected-mode code (flat segments).
#
# Include at the END of a guest (it emits code).  Routines preserve every
# register they do not return in.

        .code32

# putc32: send AL to COM1 (waits for LSR.THR_EMPTY first).
putc32:
        push %edx
        push %eax
        mov $COM1_LSR, %dx
1:      in %dx, %al
        test $LSR_THR_EMPTY, %al
        jz 1b
        pop %eax
        mov $COM1_THR, %dx
        out %al, %dx
        pop %edx
        ret

# puts32: send the NUL-terminated string at ESI.
puts32:
        push %esi
        push %eax
1:      lodsb
        test %al, %al
        jz 2f
        call putc32
        jmp 1b
2:      pop %eax
        pop %esi
        ret

# puthex32: send EAX as "0x" followed by exactly 8 lower-case hex digits.
puthex32:
        push %eax
        push %ecx
        push %edx
        mov %eax, %edx
        mov $'0', %al
        call putc32
        mov $'x', %al
        call putc32
        mov $8, %ecx
1:      rol $4, %edx                    # bring the next nibble (most significant first) to the bottom
        mov %dl, %al
        and $0xF, %al
        add $'0', %al
        cmp $'9', %al
        jbe 2f
        add $('a' - '0' - 10), %al
2:      call putc32
        dec %ecx
        jnz 1b
        pop %edx
        pop %ecx
        pop %eax
        ret
