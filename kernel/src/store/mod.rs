//! The guest store: the FAT `keel-store` partition of the boot disk, read-only.
//!
//! [`fat`] is the pure reader (host-tested against volumes the image builder writes); on
//! bare metal this module mounts the boot disk's store partition and offers [`list`] and
//! [`read`] (and [`read_with`] for streaming) over its root directory.

pub mod fat;

#[cfg(target_os = "none")]
pub use kernel_store::*;

#[cfg(target_os = "none")]
mod kernel_store {}
