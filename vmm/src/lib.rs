//! keel-vmm: Keel's hypervisor, as a library the kernel drives.
//!
//! # Layering
//!
//! This crate sits between the kernel (`kernel/`, which owns the machine) and the guests. It
//! never touches hardware on its own: everything it needs from the machine — CPUID, MSRs, and
//! later physical frames and the VMX/SVM instructions — comes in through small traits that the
//! kernel implements and that host unit tests replace with table-driven mocks. That keeps
//! almost all of the hypervisor's logic testable with `cargo test` on the development machine,
//! which has no hardware virtualization of its own.
//!
//! The crate is `no_std` + `alloc` when built for the kernel target, and links `std` only for
//! its host tests.
//!
//! # What it owns
//!
//! - [`detect`]: which hardware virtualization extension the host can use (Intel VT-x with EPT
//!   and unrestricted guest, or AMD-V with nested paging), with the capability data the
//!   backends need, and a precise reason when neither is usable.
//! - [`backend`]: the per-VM [`backend::VmBackend`] (guest memory's NPT/EPT, write
//!   protection and dirty log, vCPU creation) and the [`vcpu::Vcpu`] trait with their `svm`
//!   and `vmx` implementations; [`backend::create_vm_backend`] picks one from
//!   [`detect::probe`]'s answer. [`vcpu`] holds the neutral `VmExit` and `VcpuState`.
//! - [`memory`], [`nested_paging`], [`guest_paging`]: guest RAM, EPT/NPT tables, guest page
//!   walks.
//! - [`devices`], [`bus`]: the PC's device models behind the port-I/O, MMIO and PCI device
//!   traits, one lookup per access; [`exit_handler`] routes exits to them.
//! - [`vm`]: one VM's loop over its vCPUs, pause and resume, save and restore.
//! - [`persist`] and [`snapshot`]: the `Persist` trait every stateful part implements and
//!   the versioned, checksummed encoding of a whole VM.
//! - [`loader`], [`acpi_tables`], [`cpuid`], [`msr`], [`decode`]: guest images, the VM's
//!   ACPI tables, CPUID and MSR policy, MMIO instruction decoding.
//!
//! The design is in `docs/ARCHITECTURE.md`.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

extern crate alloc;

pub mod acpi_tables;
pub mod backend;
pub mod bus;
pub mod cpuid;
pub mod decode;
pub mod detect;
pub mod devices;
pub mod exit_handler;
pub mod guest_paging;
pub mod host;
pub mod loader;
pub mod memory;
pub mod migration;
pub mod msr;
pub mod nested_paging;
pub mod persist;
pub mod preempt;
pub mod pvclock;
pub mod snapshot;
pub mod vcpu;
pub mod virtio;
pub mod vm;

#[cfg(test)]
pub(crate) mod testing;
