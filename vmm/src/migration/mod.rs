//! The live-migration stream between two Keel appliances: framing, messages, the CPU
//! compatibility check, the source's pre-copy policy and the destination's state machine.
//! Pure: no sockets, no VMs; the kernel's `migrate` module drives it over TCP.
//!
//! # Stream layout (protocol version 1)
//!
//! ```text
//! stream   magic "KEELMIG\n" (8) | frame*
//! frame    length u32 | kind u8 | body (length - 1 bytes) | CRC-32 (IEEE) u32 of kind+body
//! ```
//!
//! Integers are little-endian. `length` counts kind and body; a frame longer than
//! [`MAX_FRAME`] (or than its kind's own limit) is refused before anything is buffered,
//! so a peer cannot make the receiver allocate. The same framing carries the destination's
//! replies back (kinds from 0x80).
//!
//! # Conversation
//!
//! ```text
//! source                                   destination
//! Start(version, token, CPU view)  ──►     checks version, token, CPU  ─► Accepted | Refused
//! Config(name, RAM, vCPUs, images) ──►     checks images (hash), RAM  ─► Accepted | Refused
//! Memory* RoundEnd  (round 1: all RAM, then each harvest of the dirty log)
//! Pause                                    (downtime starts)
//! Memory* RoundEnd  (the last dirty pages)
//! State(saved-VM sections)
//! Complete                         ──►     builds and starts the VM  ─► Resumed(ms) | Refused
//! ```
//!
//! The destination builds nothing until `Complete` ([`Destination`]); an `Abort`, a
//! refused frame, a cut stream or a reply other than `Resumed` leaves the VM running on
//! the source.

mod cpu;
mod destination;
mod frame;
mod message;
mod precopy;
mod session;

pub use self::cpu::{CpuMismatch, CpuView, CpuViewEntry, MIGRATED_LEAVES};
pub use self::destination::{Destination, DestinationEvent, DestinationPolicy};
pub use self::frame::{FrameDecoder, MAGIC, MAX_FRAME, encode_frame};
pub use self::message::{
    Config, ImageRef, MAX_CONFIG, MAX_MEMORY_RUN, MAX_STATE, MemoryRun, Message, Refusal, Reply,
    Start,
};
pub use self::precopy::{PreCopy, RoundDecision, memory_runs};
pub use self::session::{
    Arrived, DestinationSession, OUTPUT_HIGH_WATER, SourceOutcome, SourceSession, SourceStats,
};

use core::fmt;

/// The protocol version this build speaks; both ends must agree exactly.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a stream was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The stream did not start with [`MAGIC`]: the peer is not a Keel migration.
    BadMagic,
    /// The stream ended inside a frame (or before `Complete`).
    Truncated {
        /// Bytes of the unfinished frame that did arrive.
        buffered: usize,
    },
    /// A frame's checksum did not match its bytes.
    BadChecksum {
        /// The frame's kind byte.
        kind: u8,
    },
    /// A frame longer than its kind allows.
    Oversized {
        /// The frame's kind byte (0 when the length alone was already too large).
        kind: u8,
        /// The length the frame announced.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// A frame of zero length (no kind byte).
    Empty,
    /// A kind byte this version does not know.
    UnknownKind(u8),
    /// The source speaks another protocol version.
    WrongVersion {
        /// The version in the stream.
        got: u32,
    },
    /// A frame whose body does not decode as its kind says.
    Malformed {
        /// Which message.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A message that is valid but not allowed at this point of the conversation.
    OutOfOrder {
        /// The message that came.
        got: &'static str,
        /// What was expected instead.
        expected: &'static str,
    },
    /// Memory outside the RAM the configuration announced.
    MemoryOutOfRange {
        /// First guest-physical address of the run.
        gpa: u64,
        /// Length of the run in bytes.
        len: u64,
        /// The VM's RAM size.
        ram: u64,
    },
    /// The source gave up and said why.
    Aborted(alloc::string::String),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::BadMagic => {
                f.write_str("not a Keel migration stream (bad magic; is the port right?)")
            }
            StreamError::Truncated { buffered } => write!(
                f,
                "the migration stream was cut ({buffered} bytes of an unfinished frame)"
            ),
            StreamError::BadChecksum { kind } => {
                write!(
                    f,
                    "a migration frame (kind {kind:#04x}) failed its CRC check"
                )
            }
            StreamError::Oversized {
                kind,
                length,
                limit,
            } => write!(
                f,
                "a migration frame (kind {kind:#04x}) of {length} bytes exceeds the limit of \
                 {limit} bytes"
            ),
            StreamError::Empty => f.write_str("an empty migration frame"),
            StreamError::UnknownKind(kind) => {
                write!(f, "unknown migration frame kind {kind:#04x}")
            }
            StreamError::WrongVersion { got } => write!(
                f,
                "the source speaks migration protocol {got}, this appliance speaks \
                 {PROTOCOL_VERSION}: update both to the same Keel release"
            ),
            StreamError::Malformed { what, reason } => {
                write!(f, "malformed {what} message: {reason}")
            }
            StreamError::OutOfOrder { got, expected } => {
                write!(
                    f,
                    "migration message {got} out of order (expected {expected})"
                )
            }
            StreamError::MemoryOutOfRange { gpa, len, ram } => write!(
                f,
                "memory run {gpa:#x}+{len:#x} lies outside the VM's {ram:#x} bytes of RAM"
            ),
            StreamError::Aborted(reason) => {
                write!(f, "the source abandoned the migration: {reason}")
            }
        }
    }
}

impl core::error::Error for StreamError {}

#[cfg(test)]
mod tests;
