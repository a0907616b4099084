//! The backend-neutral vCPU interface: [`Vcpu`], the [`VmExit`] it returns, and the register
//! file shared by both backends.
//!
//! # Call order
//!
//! 1. The VM's backend ([`VmBackend::create_vcpu`]) builds a vCPU over the VM's memory map
//!    with a start state ([`StartMode`]).
//! 2. The VM loop calls [`Vcpu::run`] repeatedly with the VM's memory. CPU-only exits (CPUID, MSR accesses, XSETBV,
//!    the SVM/VMX instructions, exceptions Keel reflects) are handled inside the backend and
//!    never come up; device-level exits return as a [`VmExit`].
//! 3. For [`VmExit::IoIn`], [`VmExit::MmioRead`] and [`VmExit::MmioReadModifyWrite`] the
//!    caller must call
//!    [`Vcpu::complete_read`] with the value before the next `run`; the backend then writes the
//!    destination register and moves RIP past the instruction. For the other exits RIP has
//!    already been advanced when `run` returns (or, for faults, left where the guest stopped).
//! 4. Between runs (no read pending), [`Vcpu::save_state`] and [`Vcpu::restore_state`]
//!    move the vCPU's whole architectural state out and in as a [`VcpuState`].
//!
//! [`VmBackend::create_vcpu`]: crate::backend::VmBackend::create_vcpu

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::decode::AluOp;

pub mod state;

pub use self::state::{VcpuState, VcpuStateError};

/// A general-purpose register, in the x86 encoding order (RAX = 0 … R15 = 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Gpr {
    /// The register with encoding `index` (0..=15).
    pub fn from_index(index: u8) -> Option<Gpr> {
        use Gpr::*;
        const ALL: [Gpr; 16] = [
            Rax, Rcx, Rdx, Rbx, Rsp, Rbp, Rsi, Rdi, R8, R9, R10, R11, R12, R13, R14, R15,
        ];
        ALL.get(usize::from(index)).copied()
    }
}

/// A segment register's visible and hidden parts, in a backend-neutral form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit (byte granular, already expanded).
    pub limit: u32,
    /// Access rights in the descriptor layout: type (bits 0-3), S (4), DPL (5-6), P (7),
    /// AVL (12), L (13), D/B (14), G (15). Bit 16 set means "unusable".
    pub access: u32,
}

/// The guest register state both backends can load and report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers {
    /// RAX … R15, indexed by [`Gpr`].
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// CS, DS, ES, FS, GS, SS.
    pub cs: Segment,
    #[allow(missing_docs)]
    pub ds: Segment,
    #[allow(missing_docs)]
    pub es: Segment,
    #[allow(missing_docs)]
    pub fs: Segment,
    #[allow(missing_docs)]
    pub gs: Segment,
    #[allow(missing_docs)]
    pub ss: Segment,
    /// Task register.
    pub tr: Segment,
    /// LDT register.
    pub ldtr: Segment,
    /// GDTR base and limit.
    pub gdtr: (u64, u16),
    /// IDTR base and limit.
    pub idtr: (u64, u16),
}

impl Registers {
    /// Reads a general-purpose register.
    pub fn get(&self, reg: Gpr) -> u64 {
        self.gpr[reg as usize]
    }

    /// Writes a general-purpose register.
    pub fn set(&mut self, reg: Gpr, value: u64) {
        self.gpr[reg as usize] = value;
    }

    /// The code size the CPU executes in: 16, 32 or 64 bits.
    pub fn code_bitness(&self) -> u32 {
        const EFER_LMA: u64 = 1 << 10;
        const CR0_PE: u64 = 1;
        if self.efer & EFER_LMA != 0 && self.cs.access & (1 << 13) != 0 {
            64
        } else if self.cr0 & CR0_PE != 0 && self.cs.access & (1 << 14) != 0 {
            32
        } else {
            16
        }
    }
}

/// How a new vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// Real mode as a start-up IPI leaves an application processor (SDM §9.4.4): `CS` selector
    /// `vector << 8`, base `vector << 12`, `IP` 0; the rest as after INIT.
    StartupIpi {
        /// The start-up IPI's vector: the start page.
        vector: u8,
    },
    /// 16-bit real mode at `CS:IP = 0000:entry` (flat payloads, boot sectors: `entry = 0x7c00`).
    RealMode {
        /// Entry offset in segment 0.
        entry: u16,
    },
    /// 64-bit long mode with paging (the kernel loaders set up the page tables, GDT and
    /// registers; see `loader`).
    LongMode {
        /// Entry RIP.
        entry: u64,
        /// Guest CR3 (identity page tables built in guest memory).
        cr3: u64,
        /// Guest GDT base (code selector 0x08, data 0x10).
        gdt: u64,
        /// Initial RSP.
        stack: u64,
        /// RSI (the Linux boot protocol passes the zero page here).
        rsi: u64,
    },
    /// 32-bit protected mode with paging off, as the PVH boot ABI starts a kernel (Xen's
    /// `docs/misc/pvh.pandoc`): CR0 = PE (and ET), CR4 = 0, EFER = 0; CS a flat 32-bit
    /// execute/read segment (selector 0x08), DS/ES/FS/GS/SS flat read/write data (0x10), TR a
    /// busy 32-bit TSS with base 0 and limit 0x67; interrupts off. No GDT is provided (the ABI
    /// leaves GDTR unspecified): the guest loads its own before it reloads a selector.
    Protected32 {
        /// Entry EIP (the ELF note `XEN_ELFNOTE_PHYS32_ENTRY`).
        entry: u32,
        /// EBX: the guest-physical address of the `hvm_start_info`.
        ebx: u32,
    },
    /// A Multiboot (v1) kernel's entry (the Multiboot Specification 0.6.96 §3.2): the same
    /// 32-bit protected-mode state as [`Protected32`](Self::Protected32) (flat segments that
    /// the spec asks for, paging off, interrupts off) with EAX = `0x2BADB002`.
    Multiboot {
        /// Entry EIP (`e_entry` or the header's `entry_addr`).
        entry: u32,
        /// EBX: the guest-physical address of the Multiboot information structure.
        info: u32,
    },
}

/// Why the hardware refused to enter the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFailure {
    /// SVM: VMRUN exited with VMEXIT_INVALID (-1): the VMCB state is illegal (APM Vol. 2
    /// §15.5.1 lists the consistency checks).
    SvmInvalidState,
    /// VMX: VMLAUNCH/VMRESUME failed with VMfailValid; the VM-instruction error number.
    VmxInstructionError(u32),
    /// VMX: VMfailInvalid (no current VMCS).
    VmxFailInvalid,
    /// VMX: VM entry failed with an exit reason that has bit 31 set (SDM Vol. 3C §27.8).
    VmxEntryCheck {
        /// Basic exit reason (33 = invalid guest state, 34 = MSR loading, 41 = machine check).
        reason: u16,
        /// Exit qualification.
        qualification: u64,
    },
    /// No address-space ID (ASID/VPID) could be assigned on this host CPU: the CPU's index
    /// is past the table's end.
    NoAddressSpaceId {
        /// The host CPU's index.
        cpu: usize,
    },
}

impl fmt::Display for EntryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryFailure::SvmInvalidState => {
                f.write_str("VMRUN rejected the guest state (VMEXIT_INVALID)")
            }
            EntryFailure::VmxInstructionError(n) => {
                write!(f, "VM entry failed: VM-instruction error {n}")?;
                match crate::backend::vmx::instruction_error_name(*n) {
                    Some(name) => write!(f, " ({name})"),
                    None => Ok(()),
                }
            }
            EntryFailure::VmxFailInvalid => f.write_str("VM entry failed: no current VMCS"),
            EntryFailure::VmxEntryCheck {
                reason,
                qualification,
            } => {
                f.write_str("VM entry failed: ")?;
                if let Some(name) = crate::backend::vmx::entry_failure_name(*reason) {
                    write!(f, "{name} ")?;
                }
                write!(
                    f,
                    "(exit reason {reason} with the entry-failure bit), qualification \
                     {qualification:#x}"
                )
            }
            EntryFailure::NoAddressSpaceId { cpu } => write!(
                f,
                "no address-space ID for host CPU {cpu}: Keel tags guests on at most {} CPUs",
                crate::host::MAX_HOST_CPUS
            ),
        }
    }
}

/// A guest action that needs the VMM above the backend.
///
/// Each variant names the hardware exit it comes from: the AMD64 APM Vol. 2 Appendix C exit
/// code and the Intel SDM Vol. 3C Appendix C basic exit reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmExit {
    /// IN/INS from a port. SVM `VMEXIT_IOIO` (0x7B) with TYPE = 1; VMX exit reason 30 (I/O
    /// instruction) with direction IN. Complete with [`Vcpu::complete_read`].
    IoIn {
        /// Port number.
        port: u16,
        /// Access size in bytes (1, 2 or 4).
        size: u8,
    },
    /// OUT/OUTS to a port. SVM `VMEXIT_IOIO` (0x7B) with TYPE = 0; VMX exit reason 30 with
    /// direction OUT.
    IoOut {
        /// Port number.
        port: u16,
        /// Access size in bytes (1, 2 or 4).
        size: u8,
        /// The value written (low `size` bytes).
        data: u32,
    },
    /// A load from guest-physical memory not backed by RAM. SVM `VMEXIT_NPF` (0x400); VMX exit
    /// reason 48 (EPT violation). Decoded with iced-x86; complete with
    /// [`Vcpu::complete_read`].
    MmioRead {
        /// Guest-physical address.
        gpa: u64,
        /// Access size in bytes (1, 2, 4 or 8).
        size: u8,
    },
    /// A read-modify-write ALU instruction (`OR`, `AND`, `XOR`, `ADD`, `SUB`) or a flags-only
    /// `CMP`/`TEST` on guest-physical memory not backed by RAM. SVM `VMEXIT_NPF` (0x400); VMX
    /// exit reason 48 (EPT violation). The VMM reads the device, writes back
    /// [`AluOp::apply`]'s result unless `op` is `CMP`/`TEST`, and completes with
    /// [`Vcpu::complete_read`] giving the *old* value; the backend sets the arithmetic flags
    /// and moves RIP on.
    MmioReadModifyWrite {
        /// Guest-physical address.
        gpa: u64,
        /// Access size in bytes (1, 2, 4 or 8).
        size: u8,
        /// The operation.
        op: AluOp,
        /// The source operand (low `size` bytes).
        operand: u64,
    },
    /// A store to guest-physical memory not backed by RAM. SVM `VMEXIT_NPF` (0x400); VMX exit
    /// reason 48 (EPT violation).
    MmioWrite {
        /// Guest-physical address.
        gpa: u64,
        /// Access size in bytes (1, 2, 4 or 8).
        size: u8,
        /// The value stored (low `size` bytes).
        data: u64,
    },
    /// HLT. SVM `VMEXIT_HLT` (0x78); VMX exit reason 12. `interrupts_enabled` is the guest's
    /// RFLAGS.IF: a HLT with interrupts off can only end by NMI, reset or power-off.
    Hlt {
        /// Guest RFLAGS.IF at the HLT.
        interrupts_enabled: bool,
    },
    /// PAUSE, the spin-wait hint, while [`Vcpu::set_pause_exiting`] is on: the vCPU is
    /// probably waiting for another vCPU of its VM. SVM `VMEXIT_PAUSE` (0x77); VMX exit reason
    /// 40. The backend has moved RIP past the instruction.
    Pause,
    /// The guest triple-faulted (or hit another shutdown condition). SVM `VMEXIT_SHUTDOWN`
    /// (0x7F); VMX exit reason 2 (triple fault).
    Shutdown,
    /// A host interrupt arrived while the guest ran: the host's preemption point. SVM
    /// `VMEXIT_INTR` (0x60); VMX exit reason 1 (external interrupt) or 52 (preemption timer).
    Interrupted,
    /// The hardware refused to enter the guest. SVM `VMEXIT_INVALID` (-1); VMX VMfailValid or an
    /// exit reason with bit 31 set.
    FailEntry {
        /// What failed.
        reason: EntryFailure,
    },
    /// An access the VMM cannot emulate: an instruction fetch from, or an undecodable access
    /// to, guest-physical memory without RAM (NPF/EPT violation that is not a data access
    /// Keel can decode).
    UnhandledMemoryAccess {
        /// Guest-physical address.
        gpa: u64,
        /// Guest RIP.
        rip: u64,
        /// What went wrong.
        reason: &'static str,
    },
    /// The guest can take an external interrupt now: the window the VMM asked for with
    /// [`Vcpu::request_interrupt_window`] opened. SVM `VMEXIT_VINTR` (0x64); VMX exit reason 7
    /// (interrupt window).
    InterruptWindow,
    /// RDMSR of an MSR the platform devices own ([`crate::msr::platform_owned`]: the local
    /// APIC's). SVM `VMEXIT_MSR` (0x7C); VMX exit reason 31. Complete with
    /// [`Vcpu::complete_read`] (EDX:EAX) or refuse with [`Vcpu::fault_msr`].
    MsrRead {
        /// The MSR index (ECX).
        msr: u32,
    },
    /// WRMSR of a platform-owned MSR. SVM `VMEXIT_MSR` (0x7C); VMX exit reason 32. Complete
    /// with [`Vcpu::complete_read`] (the value is ignored) or refuse with
    /// [`Vcpu::fault_msr`].
    MsrWrite {
        /// The MSR index (ECX).
        msr: u32,
        /// EDX:EAX.
        value: u64,
    },
    /// A guest write to RAM that the VM backend write-protected for dirty tracking
    /// ([`VmBackend::write_protect`](crate::backend::VmBackend::write_protect)). SVM
    /// `VMEXIT_NPF` (0x400) with P and RW set in EXITINFO1; VMX exit reason 48 (EPT
    /// violation) with a write to a readable page. RIP has not moved: the VMM logs the page
    /// and lifts the protection
    /// ([`VmBackend::record_dirty_write`](crate::backend::VmBackend::record_dirty_write)),
    /// and the next entry retries the write.
    DirtyPageWrite {
        /// Guest-physical address written.
        gpa: u64,
    },
    /// An exit Keel has no handler for (raw exit code / basic exit reason).
    Unhandled {
        /// SVM EXITCODE or VMX basic exit reason.
        code: u64,
        /// SVM EXITINFO1 or VMX exit qualification.
        info1: u64,
        /// SVM EXITINFO2 or VMX guest-physical/linear address when meaningful.
        info2: u64,
    },
}

impl VmExit {
    /// A short stable name for exit statistics (`vm list`, the API).
    pub fn kind(&self) -> &'static str {
        match self {
            VmExit::IoIn { .. } => "io-in",
            VmExit::IoOut { .. } => "io-out",
            VmExit::MmioRead { .. } => "mmio-read",
            VmExit::MmioReadModifyWrite { .. } => "mmio-rmw",
            VmExit::MmioWrite { .. } => "mmio-write",
            VmExit::Hlt { .. } => "hlt",
            VmExit::Pause => "pause",
            VmExit::Shutdown => "shutdown",
            VmExit::Interrupted => "interrupt",
            VmExit::FailEntry { .. } => "fail-entry",
            VmExit::UnhandledMemoryAccess { .. } => "bad-memory-access",
            VmExit::InterruptWindow => "interrupt-window",
            VmExit::MsrRead { .. } => "msr-read",
            VmExit::MsrWrite { .. } => "msr-write",
            VmExit::DirtyPageWrite { .. } => "dirty-page-write",
            VmExit::Unhandled { .. } => "unhandled",
        }
    }
}

/// Why `run` could not even try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuError {
    /// `complete_read` was not called after an `IoIn`/`MmioRead`.
    ReadNotCompleted,
    /// `complete_read` (or `fault_msr`) was called with nothing (or no MSR access) pending.
    NoPendingRead,
    /// `inject_interrupt` was called while the guest could not take an interrupt.
    NotInterruptible,
    /// The vCPU was stopped after an unrecoverable exit.
    Stopped,
    /// The backend could not read the vCPU's state (a VMREAD failed: a VMM bug).
    StateAccess,
}

impl fmt::Display for VcpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VcpuError::ReadNotCompleted => "the previous IN/MMIO read was not completed",
            VcpuError::NoPendingRead => "no IN/MMIO read is pending",
            VcpuError::NotInterruptible => {
                "an interrupt was injected while the guest could not take one"
            }
            VcpuError::Stopped => "the vCPU is stopped",
            VcpuError::StateAccess => "the vCPU's state could not be read from the hardware",
        })
    }
}

/// CPU-level exits the backend handled itself, counted for statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InternalExits {
    /// CPUID executions.
    pub cpuid: u64,
    /// RDMSR/WRMSR executions.
    pub msr: u64,
    /// Exceptions injected into the guest (#UD for VMRUN and friends, #GP for unknown MSRs).
    pub injected: u64,
    /// Other handled exits (XSETBV, …).
    pub other: u64,
}

/// One virtual CPU on a hardware backend.
pub trait Vcpu {
    /// Runs the guest until an exit the VMM must handle. `memory` is the VM's RAM (the same
    /// one the vCPU was created for): the backend reads instruction bytes from it to decode
    /// MMIO accesses and, where the CPU does not report it, instruction lengths.
    fn run(&mut self, memory: &crate::memory::GuestMemory) -> Result<VmExit, VcpuError>;
    /// Supplies the value of a pending `IoIn`/`MmioRead`/`MsrRead` (low bytes used), or the
    /// memory operand's old value for a pending `MmioReadModifyWrite` (the backend sets the
    /// arithmetic flags from it), or completes a pending `MsrWrite` (value ignored): RIP
    /// moves past the instruction.
    fn complete_read(&mut self, value: u64) -> Result<(), VcpuError>;
    /// Refuses the pending `MsrRead`/`MsrWrite`: the guest gets #GP(0) at the instruction.
    fn fault_msr(&mut self) -> Result<(), VcpuError>;
    /// The guest registers.
    fn registers(&self) -> Registers;
    /// CPU-level exits the backend handled.
    fn internal_exits(&self) -> InternalExits;
    /// Which backend this is (`"svm"` or `"vmx"`).
    fn backend(&self) -> &'static str;
    /// Whether the guest can take an external interrupt at the next entry: RFLAGS.IF set, no
    /// STI/MOV SS interrupt shadow, and no event already queued for delivery.
    fn interruptible(&self) -> bool;
    /// Queues external interrupt `vector` for delivery at the next entry. Only valid while
    /// [`interruptible`](Self::interruptible); the VMM has already acknowledged the vector at
    /// its interrupt controller.
    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError>;
    /// Asks for (or cancels) a [`VmExit::InterruptWindow`] as soon as the guest can take an
    /// interrupt, for an interrupt that is pending while it cannot.
    fn request_interrupt_window(&mut self, wanted: bool);
    /// Turns [`VmExit::Pause`] on or off. A VM with several vCPUs turns it on so that a vCPU
    /// spinning on a lock gives its turn to the vCPU holding it (they share one host CPU).
    /// Returns whether the CPU can exit on PAUSE.
    fn set_pause_exiting(&mut self, on: bool) -> bool;
    /// Queues an NMI for the next entry, unless NMIs are blocked now (the guest has not yet
    /// returned with IRET from the last one, or another event is queued); returns whether it
    /// was queued. A blocked NMI stays the caller's to retry.
    fn inject_nmi(&mut self) -> Result<bool, VcpuError>;
    /// The TSC the guest reads when the host's TSC reads `host_tsc` (the guest's TSC offset
    /// applied).
    fn guest_tsc(&self, host_tsc: u64) -> u64;
    /// Everything the guest can observe of this vCPU, with the TSC as the guest reads it when
    /// the host's reads `host_tsc`. Call it between runs: with a read exit not yet completed
    /// ([`complete_read`](Self::complete_read)) it fails with
    /// [`VcpuError::ReadNotCompleted`], as the guest is halfway through an instruction; a
    /// stopped vCPU fails with [`VcpuError::Stopped`].
    fn save_state(&self, host_tsc: u64) -> Result<VcpuState, VcpuError>;
    /// Loads `state` (from [`save_state`](Self::save_state), here or on another host) so that
    /// the guest continues where it was saved, its TSC continuing from the saved value at
    /// `host_tsc` (no jump). The state is checked first ([`VcpuState::validate`] and the
    /// backend's own rules); on error nothing changes. A pending read is dropped and a
    /// stopped vCPU can run again.
    fn restore_state(&mut self, state: &VcpuState, host_tsc: u64) -> Result<(), VcpuStateError>;
}
