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
//! device registers. String instructions, read-modify-write instructions and SIMD accesses
//! are [`DecodeError::Unsupported`].
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
        Form::StoreReg | Form::StoreImm => (0, 1),
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

#[cfg(test)]
mod tests;
