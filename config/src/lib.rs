//! keel-config: Keel's configuration, from the bytes on disk up.
//!
//! # Layering
//!
//! This crate is pure logic. It never touches a disk or a clock: the kernel hands it a
//! [`record::BlockDevice`] over the raw configuration partition (virtio-blk, AHCI or NVMe
//! underneath), and host tests hand it an in-memory device that fails and tears writes on
//! purpose. It is `no_std` + `alloc` for the kernel target, links `std` only for its tests,
//! and contains no `unsafe` code.
//!
//! # What it owns
//!
//! - [`record`]: the persisted configuration record (magic, format version, generation,
//!   length, CRCs) and the A/B slot selection that makes a save atomic: a write goes to the
//!   slot holding the older (or no valid) record, boot takes the newest valid one, so a power
//!   cut during a save leaves the previous configuration intact.
//!
//! - [`schema`]: the configuration document ([`Config`]: hostname, network, management API,
//!   VM definitions), its canonical JSON encoding, and validation that reports every
//!   violation with its path (`vms[1].memory_mib: must be between 16 and 65536`). To the
//!   record, this JSON is opaque payload bytes.
//! - [`interface`]: `network.interface`, the host NIC named by MAC or PCI address.
//! - [`mac`]: guest NICs' MAC addresses, and the stable one a NIC without an explicit
//!   address gets ([`mac::derived_mac`]).
//! - [`limits`]: every limit (memory range and alignment, vCPUs, name rules), read by the
//!   validation here and by the console, the API and its OpenAPI document.
//! - [`edit`]: pure operations on a [`Config`] for the console and the HTTP API: `set` and
//!   `unset` by path, `diff`, and the ETag of the canonical encoding.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod edit;
pub mod interface;
pub mod limits;
pub mod mac;
pub mod record;
pub mod schema;

pub use schema::{Config, ConfigError, ValidationError};
