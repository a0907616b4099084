//! Host unit tests for MMIO decoding. Encodings were produced with `llvm-mc -show-encoding`.

use super::*;

/// Registers with a distinct recognisable value in every GPR: RAX = 0x1111_1111_1111_1188 …
fn regs() -> Registers {
    let mut r = Registers::default();
    for i in 0..16u64 {
        r.gpr[i as usize] = (0x0101_0101_0101_0101 * (i + 1)) ^ 0x8070;
    }
    r
}

fn load(dest: Gpr, extend: Extend, dest_size: u8, high_byte: bool) -> MmioKind {
    MmioKind::Load {
        dest,
        extend,
        dest_size,
        high_byte,
    }
}

fn op(len: usize, size: u8, kind: MmioKind) -> MmioOp {
    MmioOp { len, size, kind }
}

fn mmio(bytes: &[u8], bitness: u32) -> MmioOp {
    decode_mmio(bytes, bitness, &regs())
        .unwrap_or_else(|e| panic!("{bytes:02x?} in {bitness}-bit: {e}"))
}

#[test]
fn loads_64_bit() {
    use super::Extend::{None as Plain, Sign, Zero};
    let cases: &[(&[u8], MmioOp)] = &[
        (&[0x8b, 0x03], op(2, 4, load(Gpr::Rax, Plain, 4, false))),
        (
            &[0x48, 0x8b, 0x03],
            op(3, 8, load(Gpr::Rax, Plain, 8, false)),
        ),
        (
            &[0x4c, 0x8b, 0x03],
            op(3, 8, load(Gpr::R8, Plain, 8, false)),
        ),
        (&[0x8a, 0x38], op(2, 1, load(Gpr::Rbx, Plain, 1, true))),
        (
            &[0x66, 0x44, 0x8b, 0x15, 0x00, 0x01, 0x00, 0x00],
            op(8, 2, load(Gpr::R10, Plain, 2, false)),
        ),
        (
            &[0x0f, 0xb6, 0x07],
            op(3, 1, load(Gpr::Rax, Zero, 4, false)),
        ),
        (
            &[0x66, 0x0f, 0xb6, 0x07],
            op(4, 1, load(Gpr::Rax, Zero, 2, false)),
        ),
        (
            &[0x48, 0x0f, 0xbe, 0x07],
            op(4, 1, load(Gpr::Rax, Sign, 8, false)),
        ),
        (
            &[0x0f, 0xbf, 0x07],
            op(3, 2, load(Gpr::Rax, Sign, 4, false)),
        ),
        (
            &[0x48, 0x63, 0x07],
            op(3, 4, load(Gpr::Rax, Sign, 8, false)),
        ),
        // MOVSXD without REX.W is a plain 32-bit move.
        (&[0x63, 0x07], op(2, 4, load(Gpr::Rax, Plain, 4, false))),
        // mov eax, [moffs64 0xFE000000]
        (
            &[0xa1, 0x00, 0x00, 0x00, 0xfe, 0x00, 0x00, 0x00, 0x00],
            op(9, 4, load(Gpr::Rax, Plain, 4, false)),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(mmio(bytes, 64), *want, "{bytes:02x?}");
    }
}

#[test]
fn stores_64_bit() {
    let r = regs();
    let cases: &[(&[u8], MmioOp)] = &[
        // mov [rax], ebx
        (
            &[0x89, 0x18],
            op(
                2,
                4,
                MmioKind::Store {
                    value: r.get(Gpr::Rbx) & 0xFFFF_FFFF,
                },
            ),
        ),
        // mov [rax], ah
        (
            &[0x88, 0x20],
            op(
                2,
                1,
                MmioKind::Store {
                    value: (r.get(Gpr::Rax) >> 8) & 0xFF,
                },
            ),
        ),
        // mov [rax], spl (REX turns encoding 4 into SPL)
        (
            &[0x40, 0x88, 0x20],
            op(
                3,
                1,
                MmioKind::Store {
                    value: r.get(Gpr::Rsp) & 0xFF,
                },
            ),
        ),
        // mov [rax], r15b
        (
            &[0x44, 0x88, 0x38],
            op(
                3,
                1,
                MmioKind::Store {
                    value: r.get(Gpr::R15) & 0xFF,
                },
            ),
        ),
        // mov [rax], cx
        (
            &[0x66, 0x89, 0x08],
            op(
                3,
                2,
                MmioKind::Store {
                    value: r.get(Gpr::Rcx) & 0xFFFF,
                },
            ),
        ),
        // mov [r12 + r13*8 + 0x10], r9d
        (
            &[0x47, 0x89, 0x4c, 0xec, 0x10],
            op(
                5,
                4,
                MmioKind::Store {
                    value: r.get(Gpr::R9) & 0xFFFF_FFFF,
                },
            ),
        ),
        // mov byte [0x1000], 0x41
        (
            &[0xc6, 0x04, 0x25, 0x00, 0x10, 0x00, 0x00, 0x41],
            op(8, 1, MmioKind::Store { value: 0x41 }),
        ),
        // mov qword [rax], -1 (imm32 sign-extended)
        (
            &[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff],
            op(7, 8, MmioKind::Store { value: u64::MAX }),
        ),
        // mov dword [rax], 0x12345678
        (
            &[0xc7, 0x00, 0x78, 0x56, 0x34, 0x12],
            op(6, 4, MmioKind::Store { value: 0x1234_5678 }),
        ),
        // mov word [rax], 0x1234
        (
            &[0x66, 0xc7, 0x00, 0x34, 0x12],
            op(5, 2, MmioKind::Store { value: 0x1234 }),
        ),
        // movabs [0xFEE00000], rax
        (
            &[0x48, 0xa3, 0x00, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00],
            op(
                10,
                8,
                MmioKind::Store {
                    value: r.get(Gpr::Rax),
                },
            ),
        ),
        // movabs [0xFEE00000], al
        (
            &[0xa2, 0x00, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00],
            op(
                9,
                1,
                MmioKind::Store {
                    value: r.get(Gpr::Rax) & 0xFF,
                },
            ),
        ),
        // movnti [rdi], eax
        (
            &[0x0f, 0xc3, 0x07],
            op(
                3,
                4,
                MmioKind::Store {
                    value: r.get(Gpr::Rax) & 0xFFFF_FFFF,
                },
            ),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(mmio(bytes, 64), *want, "{bytes:02x?}");
    }
}

#[test]
fn accesses_32_bit() {
    let r = regs();
    assert_eq!(
        mmio(&[0x8b, 0x03], 32),
        op(2, 4, load(Gpr::Rax, Extend::None, 4, false))
    );
    assert_eq!(
        mmio(&[0x66, 0x8b, 0x03], 32),
        op(3, 2, load(Gpr::Rax, Extend::None, 2, false))
    );
    // mov eax, [0xFEE00000]: a 4-byte moffs in 32-bit code.
    assert_eq!(
        mmio(&[0xa1, 0x00, 0x00, 0xe0, 0xfe], 32),
        op(5, 4, load(Gpr::Rax, Extend::None, 4, false))
    );
    assert_eq!(
        mmio(&[0xc6, 0x05, 0x00, 0x10, 0x00, 0x00, 0x41], 32),
        op(7, 1, MmioKind::Store { value: 0x41 })
    );
    assert_eq!(
        mmio(&[0x88, 0x51, 0x04], 32),
        op(
            3,
            1,
            MmioKind::Store {
                value: r.get(Gpr::Rdx) & 0xFF
            }
        )
    );
    assert_eq!(
        mmio(&[0x0f, 0xbe, 0x0e], 32),
        op(3, 1, load(Gpr::Rcx, Extend::Sign, 4, false))
    );
    // 0x48 is DEC EAX outside 64-bit mode, not a REX prefix.
    assert_eq!(
        decode_mmio(&[0x48, 0x8b, 0x03], 32, &r),
        Err(DecodeError::Unsupported {
            mnemonic: "Dec".into()
        })
    );
}

#[test]
fn accesses_16_bit() {
    let r = regs();
    // mov word [bx], ax
    assert_eq!(
        mmio(&[0x89, 0x07], 16),
        op(
            2,
            2,
            MmioKind::Store {
                value: r.get(Gpr::Rax) & 0xFFFF
            }
        )
    );
    assert_eq!(
        mmio(&[0x8b, 0x07], 16),
        op(2, 2, load(Gpr::Rax, Extend::None, 2, false))
    );
    assert_eq!(
        mmio(&[0x66, 0x8b, 0x07], 16),
        op(3, 4, load(Gpr::Rax, Extend::None, 4, false))
    );
    assert_eq!(
        mmio(&[0xa0, 0x34, 0x12], 16),
        op(3, 1, load(Gpr::Rax, Extend::None, 1, false))
    );
    assert_eq!(
        mmio(&[0xc6, 0x06, 0x00, 0x10, 0x41], 16),
        op(5, 1, MmioKind::Store { value: 0x41 })
    );
    assert_eq!(
        mmio(&[0x67, 0x8b, 0x03], 16),
        op(3, 2, load(Gpr::Rax, Extend::None, 2, false))
    );
    assert_eq!(
        mmio(&[0x0f, 0xb6, 0x07], 16),
        op(3, 1, load(Gpr::Rax, Extend::Zero, 2, false))
    );
    // mov [bx+si+2], ch
    assert_eq!(
        mmio(&[0x88, 0x68, 0x02], 16),
        op(
            3,
            1,
            MmioKind::Store {
                value: (r.get(Gpr::Rcx) >> 8) & 0xFF
            }
        )
    );
}

fn rmw(op: AluOp, operand: u64) -> MmioKind {
    MmioKind::ReadModifyWrite { op, operand }
}

#[test]
fn read_modify_write_64_bit() {
    use super::AluOp::{Add, And, Cmp, Or, Sub, Test, Xor};
    let r = regs();
    let cases: &[(&[u8], MmioOp)] = &[
        // or [rax+0x14], sil: rust-hypervisor-firmware's virtio status update.
        (
            &[0x40, 0x08, 0x70, 0x14],
            op(4, 1, rmw(Or, r.get(Gpr::Rsi) & 0xFF)),
        ),
        // or [rbx], ah
        (
            &[0x08, 0x23],
            op(2, 1, rmw(Or, (r.get(Gpr::Rax) >> 8) & 0xFF)),
        ),
        // and [rcx], dil
        (
            &[0x40, 0x20, 0x39],
            op(3, 1, rmw(And, r.get(Gpr::Rdi) & 0xFF)),
        ),
        // lock or dword [rax], 4
        (&[0xf0, 0x83, 0x08, 0x04], op(4, 4, rmw(Or, 4))),
        // and dword [rax], -2 (imm8 sign-extended to 32 bits)
        (&[0x83, 0x20, 0xfe], op(3, 4, rmw(And, 0xFFFF_FFFE))),
        // and qword [rax], -2 (to 64 bits)
        (&[0x48, 0x83, 0x20, 0xfe], op(4, 8, rmw(And, !1))),
        // xor word [rcx], 0x1234
        (&[0x66, 0x81, 0x31, 0x34, 0x12], op(5, 2, rmw(Xor, 0x1234))),
        // xor [rax], r12w
        (
            &[0x66, 0x44, 0x31, 0x20],
            op(4, 2, rmw(Xor, r.get(Gpr::R12) & 0xFFFF)),
        ),
        // add byte [rdx], 0x80
        (&[0x80, 0x02, 0x80], op(3, 1, rmw(Add, 0x80))),
        // sub [rax], r9d
        (
            &[0x44, 0x29, 0x08],
            op(3, 4, rmw(Sub, r.get(Gpr::R9) & 0xFFFF_FFFF)),
        ),
        // add [r11], r10
        (&[0x4d, 0x01, 0x13], op(3, 8, rmw(Add, r.get(Gpr::R10)))),
        // or dword [rax], 0x12345678
        (
            &[0x81, 0x08, 0x78, 0x56, 0x34, 0x12],
            op(6, 4, rmw(Or, 0x1234_5678)),
        ),
        // or qword [rax], -0x80000000 (imm32 sign-extended to 64 bits)
        (
            &[0x48, 0x81, 0x08, 0x00, 0x00, 0x00, 0x80],
            op(7, 8, rmw(Or, 0xFFFF_FFFF_8000_0000)),
        ),
        // cmp dword [rax], 5
        (&[0x83, 0x38, 0x05], op(3, 4, rmw(Cmp, 5))),
        // cmp [rax], rbx
        (&[0x48, 0x39, 0x18], op(3, 8, rmw(Cmp, r.get(Gpr::Rbx)))),
        // test byte [rax], 1
        (&[0xf6, 0x00, 0x01], op(3, 1, rmw(Test, 1))),
        // test [rax], ecx
        (
            &[0x85, 0x08],
            op(2, 4, rmw(Test, r.get(Gpr::Rcx) & 0xFFFF_FFFF)),
        ),
        // test dword [rdi], 0x80000000
        (
            &[0xf7, 0x07, 0x00, 0x00, 0x00, 0x80],
            op(6, 4, rmw(Test, 0x8000_0000)),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(mmio(bytes, 64), *want, "{bytes:02x?}");
    }
}

#[test]
fn read_modify_write_32_and_16_bit() {
    let r = regs();
    // or [ebx], al in 32-bit code
    assert_eq!(
        mmio(&[0x08, 0x03], 32),
        op(2, 1, rmw(AluOp::Or, r.get(Gpr::Rax) & 0xFF))
    );
    // or word [bx], 1 in 16-bit code (imm8 sign-extended to 16 bits)
    assert_eq!(mmio(&[0x83, 0x0f, 0x01], 16), op(3, 2, rmw(AluOp::Or, 1)));
    // and word [bx], -1 in 16-bit code
    assert_eq!(
        mmio(&[0x83, 0x27, 0xff], 16),
        op(3, 2, rmw(AluOp::And, 0xFFFF))
    );
}

/// The flags as (CF, PF, AF, ZF, SF, OF).
fn flag_bits(flags: u64) -> [bool; 6] {
    [0, 2, 4, 6, 7, 11].map(|bit| flags & (1 << bit) != 0)
}

#[test]
fn alu_results_and_flags() {
    use super::AluOp::{Add, And, Cmp, Or, Sub, Test, Xor};
    const T: bool = true;
    const F: bool = false;
    // (op, size, old, operand, write-back, [CF, PF, AF, ZF, SF, OF])
    type Case = (AluOp, u8, u64, u64, Option<u64>, [bool; 6]);
    let cases: &[Case] = &[
        (Add, 1, 0xFF, 1, Some(0), [T, T, T, T, F, F]),
        (Add, 1, 0x7F, 1, Some(0x80), [F, F, T, F, T, T]),
        (Add, 1, 0x80, 0x80, Some(0), [T, T, F, T, F, T]),
        (Add, 2, 0x1234, 0x1111, Some(0x2345), [F, F, F, F, F, F]),
        (Add, 4, 0xFFFF_FFFF, 1, Some(0), [T, T, T, T, F, F]),
        (Add, 8, u64::MAX, 2, Some(1), [T, F, T, F, F, F]),
        (
            Add,
            8,
            i64::MAX as u64,
            1,
            Some(1 << 63),
            [F, T, T, F, T, T],
        ),
        (Sub, 1, 0, 1, Some(0xFF), [T, T, T, F, T, F]),
        (Sub, 4, 0, 1, Some(0xFFFF_FFFF), [T, T, T, F, T, F]),
        (Sub, 1, 0x80, 1, Some(0x7F), [F, F, T, F, F, T]),
        (Sub, 2, 5, 5, Some(0), [F, T, F, T, F, F]),
        (Sub, 8, 0x10, 1, Some(0xF), [F, T, T, F, F, F]),
        (Cmp, 4, 3, 5, None, [T, F, T, F, T, F]),
        (Cmp, 1, 7, 7, None, [F, T, F, T, F, F]),
        (Or, 1, 0x01, 0x02, Some(0x03), [F, T, F, F, F, F]),
        (Or, 1, 0x00, 0x80, Some(0x80), [F, F, F, F, T, F]),
        (Or, 4, 0, 0, Some(0), [F, T, F, T, F, F]),
        (And, 4, 0xF0F0, 0x0FF0, Some(0x00F0), [F, T, F, F, F, F]),
        (And, 2, 0xFFFF, 0x8001, Some(0x8001), [F, F, F, F, T, F]),
        (Xor, 8, u64::MAX, u64::MAX, Some(0), [F, T, F, T, F, F]),
        (Xor, 1, 0x0F, 0xF0, Some(0xFF), [F, T, F, F, T, F]),
        (Test, 1, 0x02, 0x01, None, [F, T, F, T, F, F]),
        (Test, 4, 0x8000_0000, 0x8000_0000, None, [F, T, F, F, T, F]),
        // Bits above `size` are ignored on both sides.
        (Add, 1, 0x1FF, 0x101, Some(0), [T, T, T, T, F, F]),
    ];
    for &(alu, size, old, operand, write_back, flags) in cases {
        let got = alu.apply(size, old, operand);
        assert_eq!(
            (got.write_back, flag_bits(got.flags)),
            (write_back, flags),
            "{alu:?} size {size}: {old:#x}, {operand:#x}"
        );
        assert_eq!(got.flags & !ARITHMETIC_FLAGS, 0);
    }
}

#[test]
fn completion_sets_flags_and_keeps_registers() {
    let before = Registers {
        // IF, DF and a stale CF/ZF/OF the completion must replace.
        rflags: 0x202 | 0x400 | 0x1 | 0x40 | 0x800,
        ..regs()
    };
    let decoded = decode_mmio(&[0x40, 0x08, 0x70, 0x14], 64, &before).unwrap();
    let mut after = before;
    apply_completion(&mut after, &decoded, 0x80);
    assert_eq!(after.gpr, before.gpr);
    assert_eq!(after.rip, before.rip);
    // SIL = 0x77 (from regs()), so 0x80 | 0x77 = 0xF7: SF only (seven bits set: PF clear).
    assert_eq!(before.get(Gpr::Rsi) & 0xFF, 0x77);
    assert_eq!(after.rflags, 0x202 | 0x400 | 0x80);
    // A load still writes its register and leaves RFLAGS alone.
    let load = decode_mmio(&[0x8b, 0x03], 64, &before).unwrap();
    let mut after = before;
    apply_completion(&mut after, &load, 0x1234);
    assert_eq!(after.get(Gpr::Rax), 0x1234);
    assert_eq!(after.rflags, before.rflags);
}

#[test]
fn trailing_bytes_are_ignored() {
    let mut bytes = [0x90u8; 15];
    bytes[..2].copy_from_slice(&[0x8b, 0x03]);
    assert_eq!(mmio(&bytes, 64).len, 2);
}

#[test]
fn register_only_forms_have_no_memory_operand() {
    let r = regs();
    for bytes in [
        &[0x8b, 0xc3][..],
        &[0x89, 0xd8],
        &[0xc6, 0xc0, 0x41],
        &[0x0f, 0xb6, 0xc3],
        &[0x08, 0xc3],       // or bl, al
        &[0x83, 0xc8, 0x04], // or eax, 4
    ] {
        assert!(
            matches!(
                decode_mmio(bytes, 64, &r),
                Err(DecodeError::NoMemoryOperand { .. })
            ),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn other_instructions_are_unsupported() {
    let r = regs();
    let cases: &[(&[u8], &str)] = &[
        (&[0xa5], "Movsd"),              // movsd (string)
        (&[0xf3, 0xab], "Stosd"),        // rep stosd
        (&[0x11, 0x03], "Adc"),          // adc [rbx], eax (needs CF in)
        (&[0xff, 0x00], "Inc"),          // inc dword [rax]
        (&[0x0b, 0x03], "Or"),           // or eax, [rbx] (register destination)
        (&[0x8c, 0x18], "Mov"),          // mov [rax], ds
        (&[0x0f, 0x10, 0x07], "Movups"), // movups xmm0, [rdi]
        (&[0x87, 0x03], "Xchg"),         // xchg [rbx], eax
        (&[0xf4], "Hlt"),
    ];
    for (bytes, mnemonic) in cases {
        assert_eq!(
            decode_mmio(bytes, 64, &r),
            Err(DecodeError::Unsupported {
                mnemonic: (*mnemonic).into()
            }),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn truncated_and_invalid_input() {
    let r = regs();
    assert_eq!(
        decode_mmio(&[], 64, &r),
        Err(DecodeError::Truncated { available: 0 })
    );
    assert_eq!(
        decode_mmio(&[0x8b], 64, &r),
        Err(DecodeError::Truncated { available: 1 })
    );
    assert_eq!(
        decode_mmio(&[0xc7, 0x00, 0x78, 0x56], 64, &r),
        Err(DecodeError::Truncated { available: 4 })
    );
    assert_eq!(
        instruction_length(&[0x48, 0xb8, 0, 0, 0], 64),
        Err(DecodeError::Truncated { available: 5 })
    );
    // PUSH ES does not exist in 64-bit mode.
    let err = decode_mmio(&[0x06, 0x90], 64, &r).unwrap_err();
    assert!(
        matches!(err, DecodeError::Invalid { len: 2, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "invalid instruction: 06 90");
    // Sixteen bytes of prefixes: longer than any instruction.
    let mut long = [0x66u8; 16];
    long[15] = 0x90;
    assert!(matches!(
        instruction_length(&long, 64),
        Err(DecodeError::Invalid { len: 15, .. })
    ));
    assert_eq!(instruction_length(&long[1..], 64), Ok(MAX_INSTRUCTION_LEN));
    for bitness in [0, 8, 63, 128] {
        assert_eq!(
            decode_mmio(&[0x8b, 0x03], bitness, &r),
            Err(DecodeError::InvalidBitness { bitness })
        );
    }
}

#[test]
fn instruction_lengths() {
    let cases: &[(&[u8], u32, usize)] = &[
        (&[0x90], 64, 1),
        (&[0xf4], 16, 1),
        (&[0x0f, 0x01, 0xd9], 64, 3),                    // vmmcall
        (&[0x0f, 0xa2], 32, 2),                          // cpuid
        (&[0xe6, 0x80], 16, 2),                          // out 0x80, al
        (&[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8], 64, 10), // mov rax, imm64
        (&[0x66, 0xb8, 1, 0, 0, 0], 16, 6),              // mov eax, 1
        (&[0xb8, 1, 0, 0, 0], 32, 5),                    // mov eax, 1
        (&[0xb8, 1, 0, 0, 0], 16, 3),                    // mov ax, 1 (+ junk)
        (&[0x0f, 0x30], 64, 2),                          // wrmsr
        (&[0xc7, 0x04, 0x25, 0, 0x10, 0, 0, 1, 0, 0, 0], 64, 11), // mov dword [0x1000], 1
    ];
    for (bytes, bitness, want) in cases {
        assert_eq!(
            instruction_length(bytes, *bitness),
            Ok(*want),
            "{bytes:02x?} in {bitness}-bit"
        );
    }
}

#[test]
fn apply_load_uses_x86_write_semantics() {
    const OLD: u64 = 0x1122_3344_5566_7788;
    let cases: &[(MmioOp, u64, u64)] = &[
        // mov al, [m]
        (
            op(2, 1, load(Gpr::Rax, Extend::None, 1, false)),
            0xAB,
            0x1122_3344_5566_77AB,
        ),
        // mov ah, [m]
        (
            op(2, 1, load(Gpr::Rax, Extend::None, 1, true)),
            0xAB,
            0x1122_3344_5566_AB88,
        ),
        // mov ax, [m]
        (
            op(3, 2, load(Gpr::Rax, Extend::None, 2, false)),
            0xABCD,
            0x1122_3344_5566_ABCD,
        ),
        // mov eax, [m]: upper half zeroed
        (
            op(2, 4, load(Gpr::Rax, Extend::None, 4, false)),
            0xDEAD_BEEF,
            0xDEAD_BEEF,
        ),
        // mov rax, [m]
        (
            op(3, 8, load(Gpr::Rax, Extend::None, 8, false)),
            u64::MAX,
            u64::MAX,
        ),
        // movzx eax, byte [m]
        (op(3, 1, load(Gpr::Rax, Extend::Zero, 4, false)), 0x80, 0x80),
        // movzx ax, byte [m]: bits 63:16 kept
        (
            op(4, 1, load(Gpr::Rax, Extend::Zero, 2, false)),
            0x80,
            0x1122_3344_5566_0080,
        ),
        // movsx ax, byte [m]
        (
            op(4, 1, load(Gpr::Rax, Extend::Sign, 2, false)),
            0x80,
            0x1122_3344_5566_FF80,
        ),
        // movsx eax, word [m]
        (
            op(3, 2, load(Gpr::Rax, Extend::Sign, 4, false)),
            0x8000,
            0xFFFF_8000,
        ),
        // movsx rax, byte [m]
        (
            op(4, 1, load(Gpr::Rax, Extend::Sign, 8, false)),
            0x80,
            0xFFFF_FFFF_FFFF_FF80,
        ),
        // movsx rax, byte [m] with a positive value
        (op(4, 1, load(Gpr::Rax, Extend::Sign, 8, false)), 0x7F, 0x7F),
        // movsxd rax, dword [m]
        (
            op(3, 4, load(Gpr::Rax, Extend::Sign, 8, false)),
            0x8000_0000,
            0xFFFF_FFFF_8000_0000,
        ),
        // Bits above the access size in `value` are ignored.
        (
            op(2, 1, load(Gpr::Rax, Extend::None, 1, false)),
            0xFFFF_FF12,
            0x1122_3344_5566_7712,
        ),
        (
            op(3, 1, load(Gpr::Rax, Extend::Sign, 4, false)),
            0x1_0000_0001,
            1,
        ),
    ];
    for (op, value, want) in cases {
        let mut r = Registers::default();
        r.set(Gpr::Rax, OLD);
        r.set(Gpr::Rbx, 7);
        apply_load(&mut r, op, *value);
        assert_eq!(r.get(Gpr::Rax), *want, "{op:?} value {value:#x}");
        assert_eq!(r.get(Gpr::Rbx), 7, "other registers untouched");
    }
}

#[test]
fn apply_load_ignores_stores_and_odd_ops() {
    let mut r = regs();
    let before = r;
    apply_load(&mut r, &op(2, 4, MmioKind::Store { value: 5 }), 9);
    assert_eq!(r, before);
    // A hand-built op with nonsense sizes does not panic.
    for size in [0u8, 3, 9, 255] {
        let mut r = regs();
        apply_load(
            &mut r,
            &op(2, size, load(Gpr::R15, Extend::Sign, size, true)),
            u64::MAX,
        );
    }
}

#[test]
fn decode_then_apply_round_trip() {
    // movzx eax, byte [rdi] with RAX all ones, device returns 0xFE.
    let mut r = regs();
    r.set(Gpr::Rax, u64::MAX);
    let op = decode_mmio(&[0x0f, 0xb6, 0x07], 64, &r).unwrap();
    apply_load(&mut r, &op, 0xFE);
    assert_eq!(r.get(Gpr::Rax), 0xFE);
    // mov bh, [rax]
    let op = decode_mmio(&[0x8a, 0x38], 64, &r).unwrap();
    r.set(Gpr::Rbx, 0xAAAA);
    apply_load(&mut r, &op, 0x42);
    assert_eq!(r.get(Gpr::Rbx), 0x42AA);
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
fn random_bytes_never_panic() {
    let r = regs();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..30_000 {
        let mut bytes = [0u8; 16];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&next(&mut state).to_le_bytes());
        }
        let cut = (next(&mut state) % 17) as usize;
        for bitness in [16, 32, 64] {
            let slice = &bytes[..cut];
            if let Ok(len) = instruction_length(slice, bitness) {
                assert!(len >= 1 && len <= cut.min(MAX_INSTRUCTION_LEN));
            }
            if let Ok(op) = decode_mmio(slice, bitness, &r) {
                assert!(op.len <= cut && matches!(op.size, 1 | 2 | 4 | 8));
                let mut r2 = r;
                apply_load(&mut r2, &op, next(&mut state));
            }
        }
    }
}

#[test]
fn every_two_byte_prefix_is_handled() {
    let r = regs();
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            for bitness in [16, 32, 64] {
                let _ = decode_mmio(&[a, b], bitness, &r);
                let _ = decode_mmio(&[a, b, 0, 0, 0, 0, 0, 0, 0, 0, 0], bitness, &r);
            }
        }
    }
}

#[test]
fn error_messages() {
    assert!(
        DecodeError::Unsupported {
            mnemonic: "Movsb".into()
        }
        .to_string()
        .contains("Movsb")
    );
    assert_eq!(
        DecodeError::Truncated { available: 3 }.reason(),
        "instruction truncated by an unmapped page"
    );
    assert!(
        DecodeError::InvalidBitness { bitness: 8 }
            .to_string()
            .contains("16, 32 or 64")
    );
}
