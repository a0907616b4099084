//! Instruction decoding for MMIO exits and instruction lengths, with iced-x86.
//!
//! # Role
//!
//! A nested page fault (SVM `VMEXIT_NPF`, APM Vol. 2 §15.25.6) or EPT violation (SDM Vol. 3C
//! §28.3.3.2) on guest-physical memory without RAM tells the VMM *where* the guest accessed,
//! but not what it did: there is no decode assist on the emulators Keel is tested under (QEMU
//! TCG has neither SVM decode assists nor NRIP save). The backend fetches the instruction
//! bytes with [`guest_paging::fetch_instruction`](crate::guest_paging::fetch_instruction),
//! and this module turns them into an [`MmioOp`]: how long the instruction is, how wide the
//! access is, and either the value a store writes or the register a load fills.
//! [`apply_load`] then writes the loaded value with x86 register-write semantics (SDM Vol. 1
//! §3.4.1.1: 8/16-bit writes keep the other bits, 32-bit writes zero bits 63:32).
//!
//! [`instruction_length`] gives the next RIP for exits where the CPU reports no length (SVM
//! without NRIP save, APM Vol. 2 §15.7.1).
//!
//! Decoding is iced-x86's no_std decoder; this module only classifies its output. It never
//! panics: invalid, truncated or unexpected input is a [`DecodeError`].
//!
//! # Supported MMIO instructions
//!
//! `MOV r/m, r` and `MOV r, r/m` (8/16/32/64-bit, including AH/CH/DH/BH and REX byte
//! registers), `MOV r/m, imm`, `MOV` with a memory offset (`A0`–`A3`), `MOVZX`, `MOVSX`,
//! `MOVSXD` and `MOVNTI`. These are what compilers and Linux's `readl`/`writel` emit for
//! device registers.
//!
//! Read-modify-write ALU instructions with a memory destination, which compilers may emit for
//! `*reg |= bit` (rust-hypervisor-firmware sets virtio status bits with `OR r/m8, r8`): `OR`, `AND`, `XOR`, `ADD`, `SUB` as `op r/m, r` and `op r/m, imm8/imm16/imm32`
//! (`80`/`81`/`83`, imm8 sign-extended), 8/16/32/64-bit, with or without `LOCK` (a device
//! access is atomic in Keel); and the flags-only `CMP r/m, r|imm` and `TEST r/m, r|imm`.
//! They become [`MmioKind::ReadModifyWrite`]; [`apply_completion`] sets the flags.
//! `ADC`/`SBB`, `INC`/`DEC`/`NOT`/`NEG`, ALU forms with a register destination, string
//! instructions and SIMD accesses are [`DecodeError::Unsupported`].
//!
//! # Neighbours
//!
//! [`vcpu`](crate::vcpu) provides [`Registers`] and [`Gpr`]; the backends call this module
//! and turn its errors into [`VmExit::UnhandledMemoryAccess`](crate::vcpu::VmExit).

use alloc::format;
use alloc::string::String;
use core::fmt;

use iced_x86::{Code, Decoder, DecoderError, DecoderOptions, Instruction, OpKind, Register};

use crate::vcpu::{Gpr, Registers};

/// The longest x86 instruction, in bytes (SDM Vol. 2A §2.3.11).
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// Why instruction bytes could not be decoded or emulated.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The code size is not 16, 32 or 64.
    InvalidBitness {
        /// The code size given.
        bitness: u32,
    },
    /// The bytes end in the middle of an instruction (the fetch stopped at an unmapped page).
    Truncated {
        /// How many bytes there were.
        available: usize,
    },
    /// The bytes are not a valid instruction.
    Invalid {
        /// Up to the first 15 bytes.
        bytes: [u8; MAX_INSTRUCTION_LEN],
        /// How many of `bytes` are meaningful.
        len: usize,
    },
    /// A valid instruction Keel does not emulate for MMIO.
    Unsupported {
        /// Its mnemonic, as iced-x86 names it (e.g. `"Movsb"`).
        mnemonic: String,
    },
    /// A supported instruction whose operands are all registers or immediates, so it cannot
    /// be the access that faulted (the guest changed the code under us).
    NoMemoryOperand {
        /// Its mnemonic, as iced-x86 names it.
        mnemonic: String,
    },
}

impl DecodeError {
    /// A short static description, for [`VmExit::UnhandledMemoryAccess`]'s `reason`.
    ///
    /// [`VmExit::UnhandledMemoryAccess`]: crate::vcpu::VmExit::UnhandledMemoryAccess
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::InvalidBitness { .. } => "bad code size for decoding",
            DecodeError::Truncated { .. } => "instruction truncated by an unmapped page",
            DecodeError::Invalid { .. } => "invalid instruction",
            DecodeError::Unsupported { .. } => "instruction not emulated for MMIO",
            DecodeError::NoMemoryOperand { .. } => "instruction has no memory operand",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::InvalidBitness { bitness } => write!(
                f,
                "cannot decode {bitness}-bit code: the code size must be 16, 32 or 64"
            ),
            DecodeError::Truncated { available } => write!(
                f,
                "instruction is cut off after {available} bytes (its next page is not mapped)"
            ),
            DecodeError::Invalid { bytes, len } => {
                f.write_str("invalid instruction:")?;
                for b in bytes.iter().take(*len) {
                    write!(f, " {b:02x}")?;
                }
                Ok(())
            }
            DecodeError::Unsupported { mnemonic } => write!(
                f,
                "the guest accessed device memory with {mnemonic}, which Keel does not emulate; use plain MOV for MMIO"
            ),
            DecodeError::NoMemoryOperand { mnemonic } => write!(
                f,
                "{mnemonic} at the faulting RIP has no memory operand (guest code changed during the access?)"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

/// How a load's value is widened into its destination register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// Same size: plain `MOV`.
    None,
    /// Zero-extended (`MOVZX`).
    Zero,
    /// Sign-extended (`MOVSX`, `MOVSXD`).
    Sign,
}

/// The arithmetic or logic operation of a read-modify-write (or flags-only) MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    /// `OR`: `old | operand`.
    Or,
    /// `AND`: `old & operand`.
    And,
    /// `XOR`: `old ^ operand`.
    Xor,
    /// `ADD`: `old + operand`.
    Add,
    /// `SUB`: `old - operand`.
    Sub,
    /// `CMP`: flags of `old - operand`; memory is not written.
    Cmp,
    /// `TEST`: flags of `old & operand`; memory is not written.
    Test,
}

/// RFLAGS bits an ALU operation defines (SDM Vol. 1 §3.4.3.1): CF, PF, AF, ZF, SF, OF.
pub const ARITHMETIC_FLAGS: u64 = FLAG_CF | FLAG_PF | FLAG_AF | FLAG_ZF | FLAG_SF | FLAG_OF;
const FLAG_CF: u64 = 1 << 0;
const FLAG_PF: u64 = 1 << 2;
const FLAG_AF: u64 = 1 << 4;
const FLAG_ZF: u64 = 1 << 6;
const FLAG_SF: u64 = 1 << 7;
const FLAG_OF: u64 = 1 << 11;

/// What an ALU operation on a `size`-byte memory operand produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AluResult {
    /// The value to write back (low `size` bytes), or `None` for `CMP`/`TEST`.
    pub write_back: Option<u64>,
    /// CF, PF, AF, ZF, SF and OF as the instruction leaves them (other bits zero).
    pub flags: u64,
}

impl AluOp {
    /// Whether the instruction writes its result to memory (all but `CMP` and `TEST`).
    pub fn writes_memory(self) -> bool {
        !matches!(self, AluOp::Cmp | AluOp::Test)
    }

    /// Computes `old op operand` on `size` bytes (1, 2, 4 or 8) and the flags it sets, per
    /// the SDM Vol. 2 instruction pages. The logic operations clear CF and OF and leave AF
    /// undefined; Keel clears it.
    pub fn apply(self, size: u8, old: u64, operand: u64) -> AluResult {
        let m = mask(size);
        let (a, b) = (old & m, operand & m);
        let sign = sign_bit(size);
        let (result, carry, overflow, adjust) = match self {
            AluOp::Or => (a | b, false, false, false),
            AluOp::And | AluOp::Test => (a & b, false, false, false),
            AluOp::Xor => (a ^ b, false, false, false),
            AluOp::Add => {
                let r = a.wrapping_add(b) & m;
                // Carry out of the top bit: the masked sum wrapped below an addend.
                let carry = r < a;
                let overflow = (a ^ r) & (b ^ r) & sign != 0;
                (r, carry, overflow, (a ^ b ^ r) & 0x10 != 0)
            }
            AluOp::Sub | AluOp::Cmp => {
                let r = a.wrapping_sub(b) & m;
                let overflow = (a ^ b) & (a ^ r) & sign != 0;
                (r, a < b, overflow, (a ^ b ^ r) & 0x10 != 0)
            }
        };
        let mut flags = 0;
        for (set, bit) in [
            (carry, FLAG_CF),
            // PF: even number of set bits in the low byte.
            ((result as u8).count_ones().is_multiple_of(2), FLAG_PF),
            (adjust, FLAG_AF),
            (result == 0, FLAG_ZF),
            (result & sign != 0, FLAG_SF),
            (overflow, FLAG_OF),
        ] {
            if set {
                flags |= bit;
            }
        }
        AluResult {
            write_back: self.writes_memory().then_some(result),
            flags,
        }
    }
}

/// The sign bit of a `size`-byte value.
fn sign_bit(size: u8) -> u64 {
    (mask(size) >> 1) + 1
}

/// What an MMIO instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioKind {
    /// A load into a general-purpose register; finish it with [`apply_load`].
    Load {
        /// The register written.
        dest: Gpr,
        /// How the `size`-byte value is widened to `dest_size` bytes.
        extend: Extend,
        /// Width of the register write in bytes (1, 2, 4 or 8).
        dest_size: u8,
        /// The destination is AH/CH/DH/BH: bits 15:8 of `dest` (only with `dest_size` 1).
        high_byte: bool,
    },
    /// A store of `value` (low `size` bytes meaningful, upper bits zero).
    Store {
        /// The value written.
        value: u64,
    },
    /// `op` of the memory operand with `operand`: the VMM reads the device, writes back
    /// [`AluOp::apply`]'s result (unless `CMP`/`TEST`) and completes with the old value;
    /// [`apply_completion`] then sets the arithmetic flags. No register is written.
    ReadModifyWrite {
        /// The operation.
        op: AluOp,
        /// The source operand: a register's low `size` bytes or the sign-extended
        /// immediate, masked to `size` bytes.
        operand: u64,
    },
}

/// A decoded MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioOp {
    /// Instruction length in bytes (RIP advances by this much).
    pub len: usize,
    /// Width of the memory access in bytes (1, 2, 4 or 8).
    pub size: u8,
    /// Load or store.
    pub kind: MmioKind,
}

/// The shape of a supported instruction.
enum Form {
    /// `reg ← mem` (operand 0 register, operand 1 memory).
    Load(Extend),
    /// `mem ← reg` (operand 0 memory, operand 1 register).
    StoreReg,
    /// `mem ← imm` (operand 0 memory, operand 1 immediate).
    StoreImm,
    /// `mem ← mem op reg` (operand 0 memory, operand 1 register).
    AluReg(AluOp),
    /// `mem ← mem op imm` (operand 0 memory, operand 1 immediate, sign-extended).
    AluImm(AluOp),
}

/// Classifies a supported instruction: its form and memory access size. The register-only
/// encodings of these codes are caught by the operand-kind checks.
fn form(code: Code) -> Option<(Form, u8)> {
    use self::Extend::{None as Plain, Sign, Zero};
    Some(match code {
        Code::Mov_rm8_r8 | Code::Mov_moffs8_AL => (Form::StoreReg, 1),
        Code::Mov_rm16_r16 | Code::Mov_moffs16_AX => (Form::StoreReg, 2),
        Code::Mov_rm32_r32 | Code::Mov_moffs32_EAX | Code::Movnti_m32_r32 => (Form::StoreReg, 4),
        Code::Mov_rm64_r64 | Code::Mov_moffs64_RAX | Code::Movnti_m64_r64 => (Form::StoreReg, 8),
        Code::Mov_r8_rm8 | Code::Mov_AL_moffs8 => (Form::Load(Plain), 1),
        Code::Mov_r16_rm16 | Code::Mov_AX_moffs16 | Code::Movsxd_r16_rm16 => (Form::Load(Plain), 2),
        Code::Mov_r32_rm32 | Code::Mov_EAX_moffs32 | Code::Movsxd_r32_rm32 => {
            (Form::Load(Plain), 4)
        }
        Code::Mov_r64_rm64 | Code::Mov_RAX_moffs64 => (Form::Load(Plain), 8),
        Code::Mov_rm8_imm8 => (Form::StoreImm, 1),
        Code::Mov_rm16_imm16 => (Form::StoreImm, 2),
        Code::Mov_rm32_imm32 => (Form::StoreImm, 4),
        Code::Mov_rm64_imm32 => (Form::StoreImm, 8),
        Code::Movzx_r16_rm8 | Code::Movzx_r32_rm8 | Code::Movzx_r64_rm8 => (Form::Load(Zero), 1),
        Code::Movzx_r16_rm16 | Code::Movzx_r32_rm16 | Code::Movzx_r64_rm16 => (Form::Load(Zero), 2),
        Code::Movsx_r16_rm8 | Code::Movsx_r32_rm8 | Code::Movsx_r64_rm8 => (Form::Load(Sign), 1),
        Code::Movsx_r16_rm16 | Code::Movsx_r32_rm16 | Code::Movsx_r64_rm16 => (Form::Load(Sign), 2),
        Code::Movsxd_r64_rm32 => (Form::Load(Sign), 4),
        _ => return alu_form(code),
    })
}

/// Classifies the memory-destination ALU forms: `op r/m, r` (`00`/`01`, `08`/`09`, `20`/`21`,
/// `28`/`29`, `30`/`31`, `38`/`39`, `TEST` `84`/`85`) and `op r/m, imm` (`80`, `81`, `83`,
/// `TEST` `F6 /0`, `F7 /0`).
fn alu_form(code: Code) -> Option<(Form, u8)> {
    use self::AluOp::{Add, And, Cmp, Or, Sub, Test, Xor};
    use self::Form::{AluImm, AluReg};
    Some(match code {
        Code::Or_rm8_r8 => (AluReg(Or), 1),
        Code::Or_rm16_r16 => (AluReg(Or), 2),
        Code::Or_rm32_r32 => (AluReg(Or), 4),
        Code::Or_rm64_r64 => (AluReg(Or), 8),
        Code::And_rm8_r8 => (AluReg(And), 1),
        Code::And_rm16_r16 => (AluReg(And), 2),
        Code::And_rm32_r32 => (AluReg(And), 4),
        Code::And_rm64_r64 => (AluReg(And), 8),
        Code::Xor_rm8_r8 => (AluReg(Xor), 1),
        Code::Xor_rm16_r16 => (AluReg(Xor), 2),
        Code::Xor_rm32_r32 => (AluReg(Xor), 4),
        Code::Xor_rm64_r64 => (AluReg(Xor), 8),
        Code::Add_rm8_r8 => (AluReg(Add), 1),
        Code::Add_rm16_r16 => (AluReg(Add), 2),
        Code::Add_rm32_r32 => (AluReg(Add), 4),
        Code::Add_rm64_r64 => (AluReg(Add), 8),
        Code::Sub_rm8_r8 => (AluReg(Sub), 1),
        Code::Sub_rm16_r16 => (AluReg(Sub), 2),
        Code::Sub_rm32_r32 => (AluReg(Sub), 4),
        Code::Sub_rm64_r64 => (AluReg(Sub), 8),
        Code::Cmp_rm8_r8 => (AluReg(Cmp), 1),
        Code::Cmp_rm16_r16 => (AluReg(Cmp), 2),
        Code::Cmp_rm32_r32 => (AluReg(Cmp), 4),
        Code::Cmp_rm64_r64 => (AluReg(Cmp), 8),
        Code::Test_rm8_r8 => (AluReg(Test), 1),
        Code::Test_rm16_r16 => (AluReg(Test), 2),
        Code::Test_rm32_r32 => (AluReg(Test), 4),
        Code::Test_rm64_r64 => (AluReg(Test), 8),
        Code::Or_rm8_imm8 => (AluImm(Or), 1),
        Code::Or_rm16_imm16 | Code::Or_rm16_imm8 => (AluImm(Or), 2),
        Code::Or_rm32_imm32 | Code::Or_rm32_imm8 => (AluImm(Or), 4),
        Code::Or_rm64_imm32 | Code::Or_rm64_imm8 => (AluImm(Or), 8),
        Code::And_rm8_imm8 => (AluImm(And), 1),
        Code::And_rm16_imm16 | Code::And_rm16_imm8 => (AluImm(And), 2),
        Code::And_rm32_imm32 | Code::And_rm32_imm8 => (AluImm(And), 4),
        Code::And_rm64_imm32 | Code::And_rm64_imm8 => (AluImm(And), 8),
        Code::Xor_rm8_imm8 => (AluImm(Xor), 1),
        Code::Xor_rm16_imm16 | Code::Xor_rm16_imm8 => (AluImm(Xor), 2),
        Code::Xor_rm32_imm32 | Code::Xor_rm32_imm8 => (AluImm(Xor), 4),
        Code::Xor_rm64_imm32 | Code::Xor_rm64_imm8 => (AluImm(Xor), 8),
        Code::Add_rm8_imm8 => (AluImm(Add), 1),
        Code::Add_rm16_imm16 | Code::Add_rm16_imm8 => (AluImm(Add), 2),
        Code::Add_rm32_imm32 | Code::Add_rm32_imm8 => (AluImm(Add), 4),
        Code::Add_rm64_imm32 | Code::Add_rm64_imm8 => (AluImm(Add), 8),
        Code::Sub_rm8_imm8 => (AluImm(Sub), 1),
        Code::Sub_rm16_imm16 | Code::Sub_rm16_imm8 => (AluImm(Sub), 2),
        Code::Sub_rm32_imm32 | Code::Sub_rm32_imm8 => (AluImm(Sub), 4),
        Code::Sub_rm64_imm32 | Code::Sub_rm64_imm8 => (AluImm(Sub), 8),
        Code::Cmp_rm8_imm8 => (AluImm(Cmp), 1),
        Code::Cmp_rm16_imm16 | Code::Cmp_rm16_imm8 => (AluImm(Cmp), 2),
        Code::Cmp_rm32_imm32 | Code::Cmp_rm32_imm8 => (AluImm(Cmp), 4),
        Code::Cmp_rm64_imm32 | Code::Cmp_rm64_imm8 => (AluImm(Cmp), 8),
        Code::Test_rm8_imm8 => (AluImm(Test), 1),
        Code::Test_rm16_imm16 => (AluImm(Test), 2),
        Code::Test_rm32_imm32 => (AluImm(Test), 4),
        Code::Test_rm64_imm32 => (AluImm(Test), 8),
        _ => return None,
    })
}

/// A general-purpose register operand: the full register, the width in bytes, and whether it
/// is a legacy high-byte register (AH/CH/DH/BH: bits 15:8).
fn gpr_operand(reg: Register) -> Option<(Gpr, u8, bool)> {
    const AL: u8 = Register::AL as u8;
    const BL: u8 = Register::BL as u8;
    const AH: u8 = Register::AH as u8;
    const BH: u8 = Register::BH as u8;
    const SPL: u8 = Register::SPL as u8;
    const R15L: u8 = Register::R15L as u8;
    const AX: u8 = Register::AX as u8;
    const R15W: u8 = Register::R15W as u8;
    const EAX: u8 = Register::EAX as u8;
    const R15D: u8 = Register::R15D as u8;
    const RAX: u8 = Register::RAX as u8;
    const R15: u8 = Register::R15 as u8;
    let r = reg as u8;
    // iced-x86 lists each width's registers in encoding order; SPL..R15L are encodings 4..15.
    let (index, size, high) = match r {
        AL..=BL => (r - AL, 1, false),
        AH..=BH => (r - AH, 1, true),
        SPL..=R15L => (r - SPL + 4, 1, false),
        AX..=R15W => (r - AX, 2, false),
        EAX..=R15D => (r - EAX, 4, false),
        RAX..=R15 => (r - RAX, 8, false),
        _ => return None,
    };
    Some((Gpr::from_index(index)?, size, high))
}

/// All-ones in the low `size` bytes.
fn mask(size: u8) -> u64 {
    match size {
        0 => 0,
        1..=7 => (1u64 << (u32::from(size) * 8)) - 1,
        _ => u64::MAX,
    }
}

/// Decodes one instruction, mapping iced's failures to [`DecodeError`].
fn decode_one(bytes: &[u8], bitness: u32) -> Result<Instruction, DecodeError> {
    let mut decoder = Decoder::try_new(bitness, bytes, DecoderOptions::NONE)
        .map_err(|_| DecodeError::InvalidBitness { bitness })?;
    let instr = decoder.decode();
    match decoder.last_error() {
        DecoderError::None if !instr.is_invalid() => Ok(instr),
        DecoderError::NoMoreBytes => Err(DecodeError::Truncated {
            available: bytes.len(),
        }),
        _ => {
            let mut copy = [0u8; MAX_INSTRUCTION_LEN];
            let len = bytes.len().min(MAX_INSTRUCTION_LEN);
            copy[..len].copy_from_slice(&bytes[..len]);
            Err(DecodeError::Invalid { bytes: copy, len })
        }
    }
}

/// The length of the instruction at the start of `bytes` in `bitness`-bit code (16, 32, 64).
pub fn instruction_length(bytes: &[u8], bitness: u32) -> Result<usize, DecodeError> {
    decode_one(bytes, bitness).map(|instr| instr.len())
}

/// Decodes the MMIO access at the start of `bytes` in `bitness`-bit code; `regs` supplies
/// the value a register store writes.
pub fn decode_mmio(bytes: &[u8], bitness: u32, regs: &Registers) -> Result<MmioOp, DecodeError> {
    let instr = decode_one(bytes, bitness)?;
    let mnemonic = || format!("{:?}", instr.mnemonic());
    let Some((form, size)) = form(instr.code()) else {
        return Err(DecodeError::Unsupported {
            mnemonic: mnemonic(),
        });
    };
    let (mem_op, other_op) = match form {
        Form::Load(_) => (1, 0),
        Form::StoreReg | Form::StoreImm | Form::AluReg(_) | Form::AluImm(_) => (0, 1),
    };
    if instr.op_kind(mem_op) != OpKind::Memory {
        return Err(DecodeError::NoMemoryOperand {
            mnemonic: mnemonic(),
        });
    }
    // Only register operands other than GPRs (none exist in these codes) land here.
    let unsupported = || DecodeError::Unsupported {
        mnemonic: mnemonic(),
    };
    let kind = match form {
        Form::Load(extend) => {
            let (dest, dest_size, high_byte) =
                gpr_operand(instr.op_register(other_op)).ok_or_else(unsupported)?;
            let extend = if dest_size == size {
                Extend::None
            } else {
                extend
            };
            MmioKind::Load {
                dest,
                extend,
                dest_size,
                high_byte,
            }
        }
        Form::StoreReg => {
            let (src, _, high_byte) =
                gpr_operand(instr.op_register(other_op)).ok_or_else(unsupported)?;
            let shift = if high_byte { 8 } else { 0 };
            MmioKind::Store {
                value: (regs.get(src) >> shift) & mask(size),
            }
        }
        Form::StoreImm => {
            let imm = instr.try_immediate(other_op).map_err(|_| unsupported())?;
            MmioKind::Store {
                value: imm & mask(size),
            }
        }
        Form::AluReg(op) => {
            let (src, _, high_byte) =
                gpr_operand(instr.op_register(other_op)).ok_or_else(unsupported)?;
            let shift = if high_byte { 8 } else { 0 };
            MmioKind::ReadModifyWrite {
                op,
                operand: (regs.get(src) >> shift) & mask(size),
            }
        }
        Form::AluImm(op) => {
            // iced-x86 returns imm8/imm32 already sign-extended to 64 bits.
            let imm = instr.try_immediate(other_op).map_err(|_| unsupported())?;
            MmioKind::ReadModifyWrite {
                op,
                operand: imm & mask(size),
            }
        }
    };
    Ok(MmioOp {
        len: instr.len(),
        size,
        kind,
    })
}

/// Sign-extends the low `size` bytes of `value` to 64 bits.
fn sign_extend(value: u64, size: u8) -> u64 {
    match size {
        1..=7 => {
            let unused = 64 - u32::from(size) * 8;
            (((value << unused) as i64) >> unused) as u64
        }
        _ => value,
    }
}

/// Writes a load's `value` (low `op.size` bytes used) into its destination register with x86
/// semantics: 8- and 16-bit writes keep the register's other bits (AH/CH/DH/BH write bits
/// 15:8), 32-bit writes zero bits 63:32, and `MOVZX`/`MOVSX` widen first. Does nothing for
/// a store.
pub fn apply_load(regs: &mut Registers, op: &MmioOp, value: u64) {
    let MmioKind::Load {
        dest,
        extend,
        dest_size,
        high_byte,
    } = op.kind
    else {
        return;
    };
    let value = value & mask(op.size);
    let value = match extend {
        Extend::None | Extend::Zero => value,
        Extend::Sign => sign_extend(value, op.size),
    } & mask(dest_size);
    let old = regs.get(dest);
    let new = match dest_size {
        1 if high_byte => (old & !0xFF00) | (value << 8),
        1 => (old & !0xFF) | value,
        2 => (old & !0xFFFF) | value,
        // A 32-bit write zero-extends (SDM Vol. 1 §3.4.1.1); 8 bytes replace the register.
        _ => value,
    };
    regs.set(dest, new);
}

/// Finishes an MMIO access the VMM answered with `value` (low `op.size` bytes used): a load
/// writes its register ([`apply_load`]); a read-modify-write sets CF, PF, AF, ZF, SF and OF
/// from `value`, the memory operand's old value, keeping RFLAGS' other bits. RIP is left to
/// the caller.
pub fn apply_completion(regs: &mut Registers, op: &MmioOp, value: u64) {
    match op.kind {
        MmioKind::Load { .. } => apply_load(regs, op, value),
        MmioKind::ReadModifyWrite { op: alu, operand } => {
            let flags = alu.apply(op.size, value, operand).flags;
            regs.rflags = (regs.rflags & !ARITHMETIC_FLAGS) | flags;
        }
        MmioKind::Store { .. } => {}
    }
}

#[cfg(test)]
mod tests;
