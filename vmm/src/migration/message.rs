//! The messages of the conversation and their frame bodies.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use super::cpu::CpuView;
use super::frame::{MAX_FRAME, encode_frame};
use super::{PROTOCOL_VERSION, StreamError};
use crate::host::FRAME_SIZE;

/// The largest memory run in one frame (256 pages): big enough to stream at line rate,
/// small enough to be one bounded step of the kernel loop.
pub const MAX_MEMORY_RUN: u64 = 1 << 20;
/// The largest configuration message.
pub const MAX_CONFIG: u64 = 64 << 10;
/// The largest device-and-vCPU state message.
pub const MAX_STATE: u64 = MAX_FRAME;

const START: u8 = 0x01;
const CONFIG: u8 = 0x02;
const MEMORY: u8 = 0x03;
const ROUND_END: u8 = 0x04;
const PAUSE: u8 = 0x05;
const STATE: u8 = 0x06;
const COMPLETE: u8 = 0x07;
const ABORT: u8 = 0x08;
const ACCEPTED: u8 = 0x81;
const REFUSED: u8 = 0x82;
const RESUMED: u8 = 0x83;

/// The limit on a frame (kind + body) of `kind`, `None` for an unknown kind.
pub(super) fn kind_limit(kind: u8) -> Option<u64> {
    Some(match kind {
        START | REFUSED => 16 << 10,
        CONFIG => MAX_CONFIG,
        MEMORY => 1 + 8 + MAX_MEMORY_RUN,
        ROUND_END => 1 + 12,
        PAUSE | COMPLETE | ACCEPTED => 1,
        STATE => MAX_STATE,
        ABORT => 1 + 1024,
        RESUMED => 1 + 8,
        _ => return None,
    })
}

/// The first message: who is asking, with what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The source's Keel release (reported, not compared: the protocol version is).
    pub keel_version: String,
    /// The destination's migration token.
    pub token: String,
    /// What the guest's CPUID shows, which the destination must be able to show too.
    pub cpu: CpuView,
}

/// A read-only disk image the VM uses, which the destination must hold with the same
/// content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The image's file name in the store.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its content.
    pub sha256: [u8; 32],
}

/// What the VM is: enough for the destination to check it can take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The VM's name (it keeps it on the destination).
    pub name: String,
    /// Guest RAM in bytes.
    pub memory_size: u64,
    /// vCPU count.
    pub vcpus: u32,
    /// Read-only disk images it needs.
    pub images: Vec<ImageRef>,
    /// The VM's configuration as the source's kernel encodes it (opaque here).
    pub vm_config: Vec<u8>,
}

/// Guest RAM from `gpa` on, whole pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryRun {
    /// First guest-physical address (4 KiB aligned).
    pub gpa: u64,
    /// The pages' bytes (a multiple of 4 KiB, at most [`MAX_MEMORY_RUN`]).
    pub data: Vec<u8>,
}

/// Source → destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Opens the conversation.
    Start(Start),
    /// The VM to be taken.
    Config(Config),
    /// Pages of guest RAM.
    Memory(MemoryRun),
    /// The end of one round of memory: which round, how many pages it sent.
    RoundEnd {
        /// Round number from 1.
        round: u32,
        /// Pages sent in it.
        pages: u64,
    },
    /// The VM is paused on the source; what follows is the last memory and the state.
    Pause,
    /// Device and vCPU state: the saved-VM format's sections, without memory.
    State(Vec<u8>),
    /// Everything is sent: build and start the VM.
    Complete,
    /// The source gives up (the VM stays there).
    Abort(String),
}

/// Why the destination refuses a migration; the source reports it to the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The token is not this appliance's migration token (nor an API token).
    BadToken,
    /// The guest's CPUID view cannot be given here.
    Cpu(String),
    /// A read-only image is not in this appliance's store.
    MissingImage(String),
    /// A read-only image is here with other content.
    ImageDiffers(String),
    /// A VM of that name exists here already.
    NameTaken(String),
    /// Not enough free memory for the guest.
    NoMemory {
        /// Bytes asked for.
        bytes: u64,
    },
    /// The stream was refused (the source's bug or a damaged link).
    Stream(String),
    /// The VM could not be built from the state received.
    Build(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadToken => f.write_str(
                "wrong migration token (set management.migration_token on the destination \
                 and pass it to the source)",
            ),
            Refusal::Cpu(what) => write!(f, "the destination's CPU cannot run this guest: {what}"),
            Refusal::MissingImage(name) => write!(
                f,
                "read-only image {name} is not in the destination's store (copy it there first)"
            ),
            Refusal::ImageDiffers(name) => write!(
                f,
                "read-only image {name} on the destination has other content (hash differs)"
            ),
            Refusal::NameTaken(name) => write!(f, "a VM named {name} exists on the destination"),
            Refusal::NoMemory { bytes } => write!(
                f,
                "the destination has not {} MiB of free memory for the guest",
                bytes >> 20
            ),
            Refusal::Stream(reason) => write!(f, "the destination refused the stream: {reason}"),
            Refusal::Build(reason) => {
                write!(f, "the destination could not build the VM: {reason}")
            }
        }
    }
}

/// Destination → source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Start or configuration accepted: go on.
    Accepted,
    /// Refused; the migration is over and the VM stays on the source.
    Refused(Refusal),
    /// The VM runs on the destination; the source may drop its copy.
    Resumed {
        /// Microseconds from receiving `Pause` to the VM running again.
        downtime_us: u64,
    },
}

fn malformed(what: &'static str, reason: &'static str) -> StreamError {
    StreamError::Malformed { what, reason }
}

fn postcard_body<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain structs into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

fn le_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

impl Message {
    /// The message's name in errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Start(_) => "start",
            Message::Config(_) => "config",
            Message::Memory(_) => "memory",
            Message::RoundEnd { .. } => "round-end",
            Message::Pause => "pause",
            Message::State(_) => "state",
            Message::Complete => "complete",
            Message::Abort(_) => "abort",
        }
    }

    /// Appends the message as one frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Start(start) => {
                let mut body = PROTOCOL_VERSION.to_le_bytes().to_vec();
                body.extend_from_slice(&postcard_body(start));
                encode_frame(START, &body, out);
            }
            Message::Config(config) => encode_frame(CONFIG, &postcard_body(config), out),
            Message::Memory(run) => {
                let mut body = Vec::with_capacity(8 + run.data.len());
                body.extend_from_slice(&run.gpa.to_le_bytes());
                body.extend_from_slice(&run.data);
                encode_frame(MEMORY, &body, out);
            }
            Message::RoundEnd { round, pages } => {
                let mut body = round.to_le_bytes().to_vec();
                body.extend_from_slice(&pages.to_le_bytes());
                encode_frame(ROUND_END, &body, out);
            }
            Message::Pause => encode_frame(PAUSE, &[], out),
            Message::State(state) => encode_frame(STATE, state, out),
            Message::Complete => encode_frame(COMPLETE, &[], out),
            Message::Abort(reason) => {
                let mut end = reason.len().min(1024);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                encode_frame(ABORT, &reason.as_bytes()[..end], out);
            }
        }
    }

    /// The message in a frame of `kind` (as [`FrameDecoder`](super::FrameDecoder) gave it).
    pub fn decode(kind: u8, body: &[u8]) -> Result<Message, StreamError> {
        let empty = |message: Message, what| {
            if body.is_empty() {
                Ok(message)
            } else {
                Err(malformed(what, "has a body"))
            }
        };
        match kind {
            START => {
                let version = body
                    .get(..4)
                    .ok_or(malformed("start", "shorter than its version"))?;
                let got = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
                if got != PROTOCOL_VERSION {
                    return Err(StreamError::WrongVersion { got });
                }
                let start: Start = postcard::from_bytes(&body[4..])
                    .map_err(|_| malformed("start", "does not decode"))?;
                Ok(Message::Start(start))
            }
            CONFIG => {
                let config: Config = postcard::from_bytes(body)
                    .map_err(|_| malformed("config", "does not decode"))?;
                Ok(Message::Config(config))
            }
            MEMORY => {
                let gpa = le_u64(body).ok_or(malformed("memory", "shorter than its address"))?;
                let data = &body[8..];
                if !gpa.is_multiple_of(FRAME_SIZE) {
                    return Err(malformed("memory", "address not 4 KiB aligned"));
                }
                if data.is_empty() || !(data.len() as u64).is_multiple_of(FRAME_SIZE) {
                    return Err(malformed("memory", "not a whole number of pages"));
                }
                Ok(Message::Memory(MemoryRun {
                    gpa,
                    data: data.to_vec(),
                }))
            }
            ROUND_END => {
                if body.len() != 12 {
                    return Err(malformed("round-end", "not 12 bytes"));
                }
                Ok(Message::RoundEnd {
                    round: u32::from_le_bytes([body[0], body[1], body[2], body[3]]),
                    pages: le_u64(&body[4..]).unwrap_or(0),
                })
            }
            PAUSE => empty(Message::Pause, "pause"),
            STATE => Ok(Message::State(body.to_vec())),
            COMPLETE => empty(Message::Complete, "complete"),
            ABORT => Ok(Message::Abort(String::from_utf8_lossy(body).into_owned())),
            other => Err(StreamError::UnknownKind(other)),
        }
    }
}

impl Reply {
    /// Appends the reply as one frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Accepted => encode_frame(ACCEPTED, &[], out),
            Reply::Refused(refusal) => encode_frame(REFUSED, &postcard_body(refusal), out),
            Reply::Resumed { downtime_us } => {
                encode_frame(RESUMED, &downtime_us.to_le_bytes(), out)
            }
        }
    }

    /// The reply in a frame of `kind`.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Reply, StreamError> {
        match kind {
            ACCEPTED if body.is_empty() => Ok(Reply::Accepted),
            ACCEPTED => Err(malformed("accepted", "has a body")),
            REFUSED => postcard::from_bytes(body)
                .map(Reply::Refused)
                .map_err(|_| malformed("refused", "does not decode")),
            RESUMED if body.len() == 8 => Ok(Reply::Resumed {
                downtime_us: le_u64(body).unwrap_or(0),
            }),
            RESUMED => Err(malformed("resumed", "not 8 bytes")),
            other => Err(StreamError::UnknownKind(other)),
        }
    }
}
