//! A vCPU's architectural state in a backend-neutral form: what [`Vcpu::save_state`] returns
//! and [`Vcpu::restore_state`] loads, on SVM and VMX alike, so a VM saved on one host
//! restores on another (and, where the guest allows, on the other backend).
//!
//! Only what the guest can observe is here: registers, the MSRs Keel lets it have, its FPU
//! and vector state, the events in flight and its TSC. Host addresses, ASIDs/VPIDs and
//! control-structure layouts are not: the backend rebuilds those.
//!
//! [`Vcpu::save_state`]: super::Vcpu::save_state
//! [`Vcpu::restore_state`]: super::Vcpu::restore_state

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::Registers;

/// Debug registers (DR0–DR3 breakpoints, DR6 status, DR7 control).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugRegisters {
    /// DR0–DR3.
    pub dr: [u64; 4],
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
}

/// MSRs the guest reads and writes directly (the hardware switches or passes them through);
/// FS and GS bases are in the segment registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassthroughMsrs {
    /// `IA32_STAR`.
    pub star: u64,
    /// `IA32_LSTAR`.
    pub lstar: u64,
    /// `IA32_CSTAR`.
    pub cstar: u64,
    /// `IA32_FMASK` (SFMASK).
    pub sfmask: u64,
    /// `IA32_KERNEL_GS_BASE`.
    pub kernel_gs_base: u64,
    /// `IA32_SYSENTER_CS`.
    pub sysenter_cs: u64,
    /// `IA32_SYSENTER_ESP`.
    pub sysenter_esp: u64,
    /// `IA32_SYSENTER_EIP`.
    pub sysenter_eip: u64,
}

/// The kind of an event queued for delivery at the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// An external interrupt the VMM acknowledged at its interrupt controller.
    ExternalInterrupt,
    /// A non-maskable interrupt.
    Nmi,
    /// A hardware exception (with or without an error code).
    Exception,
    /// A software interrupt (INT n) being re-delivered.
    SoftwareInterrupt,
}

/// An event the backend had queued but the guest had not yet taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedEvent {
    /// What it is.
    pub kind: EventKind,
    /// Its vector.
    pub vector: u8,
    /// The exception's error code, if it pushes one.
    pub error_code: Option<u32>,
}

/// Events in flight and interrupt blocking at the moment of the save.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvents {
    /// An STI or MOV SS interrupt shadow covers the next instruction.
    pub interrupt_shadow: bool,
    /// NMIs are blocked: an NMI is in service and its IRET has not completed.
    pub nmi_blocked: bool,
    /// An event queued for the next entry and not yet delivered.
    pub queued: Option<QueuedEvent>,
    /// The VMM asked for an interrupt-window exit.
    pub interrupt_window: bool,
}

/// The size of [`VcpuState::fpu`]: a 4 KiB XSAVE (or FXSAVE, in its first 512 bytes) area.
pub const FPU_AREA_BYTES: usize = 4096;

/// Everything a vCPU holds that its guest can observe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuState {
    /// General-purpose, segment, control and descriptor-table registers, RIP, RFLAGS, EFER.
    pub registers: Registers,
    /// Debug registers.
    pub debug: DebugRegisters,
    /// The MSRs Keel emulates ([`crate::msr::MsrState`]).
    pub emulated_msrs: crate::msr::State,
    /// The MSRs the guest has directly.
    pub passthrough_msrs: PassthroughMsrs,
    /// XCR0 as the guest set it (1 where the guest has no XSAVE).
    pub xcr0: u64,
    /// The x87/SSE/AVX state in XSAVE layout ([`FPU_AREA_BYTES`] long).
    pub fpu: Vec<u8>,
    /// Events in flight.
    pub events: PendingEvents,
    /// The guest's TSC at the instant of the save (a restore continues from it).
    pub tsc: u64,
}
