//! Guest loaders: put a payload into guest memory and say how the vCPU starts.
//!
//! `flat` handles raw real-mode payloads (boot-sector style). The Linux bzImage and PVH ELF
//! loaders come with the Linux-guest issue and sit beside it.

pub mod flat;
