//! Guest loaders: put a payload into guest memory and say how the vCPU starts.
//!
//! - [`flat`]: raw real-mode payloads (boot-sector style).
//! - [`bzimage`]: Linux bzImage through the x86 boot protocol's 64-bit entry.
//! - [`pvh`]: ELF kernels with a PVH entry point (Xen's `XEN_ELFNOTE_PHYS32_ENTRY`), started
//!   in 32-bit protected mode with an `hvm_start_info`.
//! - [`multiboot1`]: Multiboot (v1) kernels (ELF32 or the a.out kludge), such as
//!   kvm-unit-tests' `*.flat`, entered in 32-bit protected mode with the Multiboot
//!   information structure.
//!
//! [`layout`] says where everything goes in guest-physical memory (shared with the ACPI table
//! builder); [`boot64`] writes the GDT and identity page tables a 64-bit entry needs;
//! [`boot_files`] checks, places and writes the command line and initrd for both Linux loaders
//! and holds the errors they share.

pub mod boot64;
pub mod boot_files;
pub mod bzimage;
pub mod flat;
pub mod layout;
pub mod multiboot1;
pub mod pvh;
