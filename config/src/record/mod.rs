//! The persisted configuration record and A/B slot selection.
//!
//! # Record format (version 1)
//!
//! All integers are little-endian. CRCs are CRC-32 (IEEE 802.3, the zlib/PNG polynomial).
//!
//! | offset | size | field | value |
//! | --- | --- | --- | --- |
//! | 0 | 8 | magic | `KEELCFG\0` ([`MAGIC`]) |
//! | 8 | 4 | format version | `1` ([`FORMAT_VERSION`]) |
//! | 12 | 4 | header length | `36` ([`HEADER_LEN`]): where the payload starts |
//! | 16 | 8 | generation | `1` for the first save, then one more than the newest slot's |
//! | 24 | 4 | payload length | `n`, at most [`MAX_PAYLOAD`] |
//! | 28 | 4 | payload CRC | CRC-32 of the `n` payload bytes |
//! | 32 | 4 | header CRC | CRC-32 of bytes `0..32` |
//! | 36 | `n` | payload | opaque bytes (the configuration document) |
//! | 36 + `n` | | padding | zeros up to a whole sector |
//!
//! Forward compatibility: every version keeps magic, version and header length at these
//! offsets and ends its header with a CRC of everything before it. A reader therefore checks
//! the header CRC before it trusts the version, so a corrupted version field reads as
//! [`RecordError::HeaderCrc`], and a record from a newer Keel reads as
//! [`RecordError::UnsupportedVersion`].
//!
//! # Slots
//!
//! The configuration partition is split into two equal halves, slot A (from LBA 0) and slot B
//! (from the middle; an odd last sector is unused). Each holds one record at its start.
//!
//! - [`load`] reads both and returns the valid record with the higher generation (slot A when
//!   both have the same one).
//! - [`save`] writes the slot whose record is invalid or older, with generation = newest + 1,
//!   flushes, then reads the slot back and compares.
//!
//! The slot holding the newest valid record is never written, so a power cut at any point of
//! a save — even one that leaves a sector half-written, or persists the unflushed sectors in
//! any order — leaves either the previous record (the torn one fails its CRCs) or the new one.
//! A save also refuses to run when a slot cannot be read, since that slot might hold the
//! newest record.
//!
//! The format is plain functions over bytes ([`encode`], [`decode`]) so fuzzers and the
//! image builder (which writes the initial record) can use it without a device.

mod format;
mod store;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod store_tests;

pub use format::{
    FORMAT_VERSION, HEADER_LEN, Header, MAGIC, MAX_HEADER_LEN, MAX_PAYLOAD, RECORD_ALIGN, Record,
    RecordError, decode, decode_header, encode,
};
pub use store::{
    BlockDevice, LayoutError, Loaded, Slot, SlotFault, SlotState, Slots, StoreError, load, save,
};
