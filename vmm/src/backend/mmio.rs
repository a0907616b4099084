//! Emulating a data access to guest-physical memory that is not RAM, shared by both
//! backends: fetch the instruction at RIP through the guest's page tables, decode it with
//! iced-x86, and turn it into `VmExit::MmioRead` or `VmExit::MmioReadModifyWrite` (completed
//! later through `Vcpu::complete_read`) or `VmExit::MmioWrite` (RIP already past the
//! instruction).

use crate::decode::{self, MmioKind, MmioOp};
use crate::guest_paging;
use crate::memory::GuestMemory;
use crate::vcpu::{Registers, VmExit};

/// What the backend does with an emulated access.
pub(crate) struct MmioAccess {
    /// The exit to hand to the VMM.
    pub exit: VmExit,
    /// A load or read-modify-write waiting for its value (the backend keeps it until
    /// `complete_read`).
    pub pending: Option<MmioOp>,
    /// For a store: where RIP goes now.
    pub next_rip: Option<u64>,
}

/// Decodes the access the instruction at `regs.rip` makes to `gpa`; `Err` says why it
/// cannot be emulated (the VM then stops with that reason).
pub(crate) fn emulate(
    memory: &GuestMemory,
    regs: &Registers,
    gpa: u64,
) -> Result<MmioAccess, &'static str> {
    let (bytes, n) = guest_paging::fetch_instruction(memory, regs)
        .map_err(|_| "cannot read the instruction that accessed it")?;
    let op = decode::decode_mmio(&bytes[..n], regs.code_bitness(), regs)
        .map_err(|_| "the instruction that accessed it cannot be emulated")?;
    Ok(match op.kind {
        MmioKind::Load { .. } => MmioAccess {
            exit: VmExit::MmioRead { gpa, size: op.size },
            pending: Some(op),
            next_rip: None,
        },
        MmioKind::ReadModifyWrite { op: alu, operand } => MmioAccess {
            exit: VmExit::MmioReadModifyWrite {
                gpa,
                size: op.size,
                op: alu,
                operand,
            },
            pending: Some(op),
            next_rip: None,
        },
        MmioKind::Store { value } => MmioAccess {
            exit: VmExit::MmioWrite {
                gpa,
                size: op.size,
                data: value,
            },
            pending: None,
            next_rip: Some(regs.rip.wrapping_add(op.len as u64)),
        },
    })
}
