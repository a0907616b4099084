//! Flat payloads: raw machine code loaded at 0x7C00 and entered in 16-bit real mode at
//! `0000:7C00`, as a BIOS starts a boot sector.

use core::fmt;

use crate::memory::{GuestMemory, MemoryError};
use crate::vcpu::StartMode;

/// Where a flat payload is loaded and entered.
pub const LOAD_ADDRESS: u64 = 0x7c00;

/// Why a flat payload could not be loaded.
#[derive(Debug)]
pub enum FlatError {
    /// The payload is empty.
    Empty,
    /// The payload does not fit in the VM's memory above 0x7C00.
    TooLarge {
        /// Payload size in bytes.
        size: u64,
        /// Bytes available from 0x7C00 to the end of RAM.
        room: u64,
    },
    /// Writing guest memory failed.
    Memory(MemoryError),
}

impl fmt::Display for FlatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlatError::Empty => f.write_str("the payload is empty"),
            FlatError::TooLarge { size, room } => write!(
                f,
                "the payload is {size} bytes but only {room} bytes fit above 0x7c00: give the VM more memory"
            ),
            FlatError::Memory(e) => write!(f, "writing guest memory: {e}"),
        }
    }
}

/// Copies `payload` to 0x7C00 and returns the real-mode start state.
pub fn load(memory: &GuestMemory, payload: &[u8]) -> Result<StartMode, FlatError> {
    if payload.is_empty() {
        return Err(FlatError::Empty);
    }
    let room = memory.size().saturating_sub(LOAD_ADDRESS);
    let size = payload.len() as u64;
    if size > room {
        return Err(FlatError::TooLarge { size, room });
    }
    memory
        .write(LOAD_ADDRESS, payload)
        .map_err(FlatError::Memory)?;
    Ok(StartMode::RealMode {
        entry: LOAD_ADDRESS as u16,
    })
}
