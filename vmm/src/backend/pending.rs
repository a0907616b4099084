//! What both backends do with an exit the VMM must answer: the read (or MSR access) a
//! vCPU waits for, and its completion into the guest registers.
//!
//! The backend records a [`Pending`] when it returns `IoIn`, `MmioRead`,
//! `MmioReadModifyWrite`, `MsrRead` or `MsrWrite`; [`complete`] applies the VMM's value through [`GuestAccess`], which each
//! backend implements over its own register storage (VMCB and GPR block, VMCS and GPR block).

use crate::decode::{self, MmioOp};
use crate::vcpu::{Gpr, Registers, VcpuError};

/// A read the guest is waiting for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pending {
    /// IN: merge into RAX, then RIP moves to `next_rip`.
    Io { size: u8, next_rip: u64 },
    /// A load or read-modify-write on MMIO: the decoded instruction.
    Mmio(MmioOp),
    /// RDMSR/WRMSR of a platform-owned MSR.
    Msr { next_rip: u64, write: bool },
}

/// The guest registers a completion touches.
pub(crate) trait GuestAccess {
    /// The whole register file.
    fn register_file(&self) -> Registers;
    /// A general-purpose register.
    fn gpr(&self, reg: Gpr) -> u64;
    /// Writes a general-purpose register.
    fn set_gpr(&mut self, reg: Gpr, value: u64);
    /// Writes RFLAGS (a read-modify-write's arithmetic flags).
    fn set_rflags(&mut self, value: u64);
    /// Moves RIP past an instruction the VMM completed for the guest; an STI/MOV SS
    /// interrupt shadow ends with it.
    fn finish_instruction(&mut self, next_rip: u64);
}

/// Completes `pending` with `value` (low bytes used; ignored for an MSR write).
pub(crate) fn complete(pending: Pending, cpu: &mut impl GuestAccess, value: u64) {
    match pending {
        Pending::Io { size, next_rip } => {
            let rax = cpu.gpr(Gpr::Rax);
            let merged = match size {
                1 => (rax & !0xff) | (value & 0xff),
                2 => (rax & !0xffff) | (value & 0xffff),
                // A 32-bit destination zero-extends, in 64-bit mode as elsewhere.
                _ => value & 0xffff_ffff,
            };
            cpu.set_gpr(Gpr::Rax, merged);
            cpu.finish_instruction(next_rip);
        }
        Pending::Mmio(op) => {
            let before = cpu.register_file();
            let mut regs = before;
            decode::apply_completion(&mut regs, &op, value);
            for i in 0..16u8 {
                if regs.gpr[usize::from(i)] != before.gpr[usize::from(i)]
                    && let Some(reg) = Gpr::from_index(i)
                {
                    cpu.set_gpr(reg, regs.gpr[usize::from(i)]);
                }
            }
            if regs.rflags != before.rflags {
                cpu.set_rflags(regs.rflags);
            }
            cpu.finish_instruction(regs.rip.wrapping_add(op.len as u64));
        }
        Pending::Msr { next_rip, write } => {
            if !write {
                cpu.set_gpr(Gpr::Rax, value & 0xffff_ffff);
                cpu.set_gpr(Gpr::Rdx, value >> 32);
            }
            cpu.finish_instruction(next_rip);
        }
    }
}

/// Takes the pending access for `complete_read`.
pub(crate) fn take(pending: &mut Option<Pending>) -> Result<Pending, VcpuError> {
    pending.take().ok_or(VcpuError::NoPendingRead)
}

/// Takes a pending MSR access for `fault_msr` (the caller injects #GP).
pub(crate) fn take_msr(pending: &mut Option<Pending>) -> Result<(), VcpuError> {
    match pending {
        Some(Pending::Msr { .. }) => {
            *pending = None;
            Ok(())
        }
        _ => Err(VcpuError::NoPendingRead),
    }
}

/// Whether `run` may enter the guest.
pub(crate) fn check_runnable(stopped: bool, pending: &Option<Pending>) -> Result<(), VcpuError> {
    if stopped {
        Err(VcpuError::Stopped)
    } else if pending.is_some() {
        Err(VcpuError::ReadNotCompleted)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Cpu {
        regs: Registers,
        shadow: bool,
    }

    impl GuestAccess for Cpu {
        fn register_file(&self) -> Registers {
            self.regs
        }
        fn gpr(&self, reg: Gpr) -> u64 {
            self.regs.get(reg)
        }
        fn set_gpr(&mut self, reg: Gpr, value: u64) {
            self.regs.set(reg, value);
        }
        fn set_rflags(&mut self, value: u64) {
            self.regs.rflags = value;
        }
        fn finish_instruction(&mut self, next_rip: u64) {
            self.regs.rip = next_rip;
            self.shadow = false;
        }
    }

    #[test]
    fn io_reads_merge_into_rax_by_size() {
        for (size, value, want) in [
            (1, 0xAB, 0x1122_3344_5566_77AB),
            (2, 0xABCD, 0x1122_3344_5566_ABCD),
            (4, 0xDEAD_BEEF, 0xDEAD_BEEF),
        ] {
            let mut cpu = Cpu {
                shadow: true,
                ..Cpu::default()
            };
            cpu.regs.set(Gpr::Rax, 0x1122_3344_5566_7788);
            complete(Pending::Io { size, next_rip: 9 }, &mut cpu, value);
            assert_eq!(cpu.regs.get(Gpr::Rax), want);
            assert_eq!(cpu.regs.rip, 9);
            assert!(!cpu.shadow);
        }
    }

    #[test]
    fn mmio_read_modify_write_sets_flags_and_moves_rip_only() {
        // or [rax+0x14], sil with SIL = 0x80 and an old value of 0x80: SF set, ZF/CF cleared.
        let mut cpu = Cpu {
            shadow: true,
            ..Cpu::default()
        };
        cpu.regs.rip = 0x1000;
        cpu.regs.rflags = 0x202 | 0x41; // IF, with stale ZF and CF
        cpu.regs.set(Gpr::Rsi, 0x80);
        let op = decode::decode_mmio(&[0x40, 0x08, 0x70, 0x14], 64, &cpu.regs).unwrap();
        let gprs = cpu.regs.gpr;
        complete(Pending::Mmio(op), &mut cpu, 0x80);
        assert_eq!(cpu.regs.rflags, 0x202 | 0x80);
        assert_eq!(cpu.regs.rip, 0x1004);
        assert_eq!(cpu.regs.gpr, gprs);
        assert!(!cpu.shadow);
    }

    #[test]
    fn msr_reads_fill_edx_eax_and_writes_only_move_rip() {
        let mut cpu = Cpu::default();
        complete(
            Pending::Msr {
                next_rip: 4,
                write: false,
            },
            &mut cpu,
            0x1234_5678_9abc_def0,
        );
        assert_eq!(cpu.regs.get(Gpr::Rax), 0x9abc_def0);
        assert_eq!(cpu.regs.get(Gpr::Rdx), 0x1234_5678);
        let mut cpu = Cpu::default();
        complete(
            Pending::Msr {
                next_rip: 4,
                write: true,
            },
            &mut cpu,
            5,
        );
        assert_eq!((cpu.regs.get(Gpr::Rax), cpu.regs.rip), (0, 4));
    }

    #[test]
    fn pending_bookkeeping() {
        let mut p = None;
        assert_eq!(check_runnable(false, &p), Ok(()));
        assert_eq!(check_runnable(true, &p), Err(VcpuError::Stopped));
        assert!(matches!(take(&mut p), Err(VcpuError::NoPendingRead)));
        p = Some(Pending::Io {
            size: 1,
            next_rip: 0,
        });
        assert_eq!(check_runnable(false, &p), Err(VcpuError::ReadNotCompleted));
        assert_eq!(take_msr(&mut p), Err(VcpuError::NoPendingRead));
        assert!(p.is_some(), "an IN is not an MSR access");
        p = Some(Pending::Msr {
            next_rip: 0,
            write: true,
        });
        assert_eq!(take_msr(&mut p), Ok(()));
        assert!(p.is_none());
    }
}
