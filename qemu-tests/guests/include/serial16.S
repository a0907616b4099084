# serial16.S - COM1 output for 16-bit real-mode code.
#
# Include at the END of a guest (it emits code).  Routines preserve every
# register they do not return in.  DS must be 0 (REAL_MODE_ENTRY sets it).

        .code16

# putc16: send AL to COM1.  Waits for LSR.THR_EMPTY first: Keel's 16550 model
# always reports an empty THR, but a real UART (or QEMU's) may not.
putc16:
        push %dx
        push %ax
        mov $COM1_LSR, %dx
1:      in %dx, %al
        test $LSR_THR_EMPTY, %al
        jz 1b
        pop %ax
        mov $COM1_THR, %dx
        out %al, %dx
        pop %dx
        ret

# puts16: send the NUL-terminated string at DS:SI.
puts16:
        push %si
        push %ax
1:      lodsb
        test %al, %al
        jz 2f
        call putc16
        jmp 1b
2:      pop %ax
        pop %si
        ret

# putdec16: send EAX as an unsigned decimal number (32-bit arithmetic through
# operand-size prefixes, which real mode allows).
putdec16:
        push %eax
        push %ecx
        push %edx
        push %bx
        mov $10, %ecx
        xor %bx, %bx                    # BX = number of digits pushed
1:      xor %edx, %edx
        div %ecx                        # EDX:EAX / 10 -> EAX quotient, EDX remainder
        push %dx                        # digits come out least significant first
        inc %bx
        test %eax, %eax
        jnz 1b
2:      pop %ax                         # ...so pop them most significant first
        add $'0', %al
        call putc16
        dec %bx
        jnz 2b
        pop %bx
        pop %edx
        pop %ecx
        pop %eax
        ret
