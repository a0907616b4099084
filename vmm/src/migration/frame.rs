//! Length-prefixed, CRC-checked frames and the incremental decoder.

use alloc::vec::Vec;

use super::StreamError;
use super::message::kind_limit;

/// The first bytes of every migration stream, in both directions.
pub const MAGIC: [u8; 8] = *b"KEELMIG\n";

/// The largest frame (kind + body) any kind may have.
pub const MAX_FRAME: u64 = 8 << 20;

/// Bytes around a body: length (4), kind (1), CRC (4).
const OVERHEAD: usize = 9;

/// Appends one frame of `kind` with `body` to `out`. The message encoders keep bodies far
/// below [`MAX_FRAME`]; a longer one would have its length saturate, and the receiver
/// refuses it as oversized.
pub fn encode_frame(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(body.len() + 1).unwrap_or(u32::MAX);
    out.reserve(body.len() + OVERHEAD);
    out.extend_from_slice(&length.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(body);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
}

/// Turns bytes as they arrive (in any pieces) into checked frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already handed out as frames.
    consumed: usize,
    magic_seen: bool,
}

impl FrameDecoder {
    /// A decoder that expects [`MAGIC`] first.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 && self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    /// The next complete frame as `(kind, body)`, `None` until one has fully arrived, or
    /// the reason the stream is refused (after which the decoder must not be used).
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, StreamError> {
        let pending = &self.buffer[self.consumed..];
        if !self.magic_seen {
            let n = pending.len().min(MAGIC.len());
            if pending[..n] != MAGIC[..n] {
                return Err(StreamError::BadMagic);
            }
            if n < MAGIC.len() {
                return Ok(None);
            }
            self.magic_seen = true;
            self.consumed += MAGIC.len();
            return self.next_frame();
        }
        let Some(length) = pending.get(..4) else {
            return Ok(None);
        };
        let length = u64::from(u32::from_le_bytes([
            length[0], length[1], length[2], length[3],
        ]));
        if length == 0 {
            return Err(StreamError::Empty);
        }
        if length > MAX_FRAME {
            return Err(StreamError::Oversized {
                kind: pending.get(4).copied().unwrap_or(0),
                length,
                limit: MAX_FRAME,
            });
        }
        // The kind's own limit applies as soon as its byte is here, before the body is.
        let Some(&kind) = pending.get(4) else {
            return Ok(None);
        };
        let limit = kind_limit(kind).ok_or(StreamError::UnknownKind(kind))?;
        if length > limit {
            return Err(StreamError::Oversized {
                kind,
                length,
                limit,
            });
        }
        let total = 4 + length as usize + 4;
        if pending.len() < total {
            return Ok(None);
        }
        let body = &pending[5..4 + length as usize];
        let crc_bytes = &pending[4 + length as usize..total];
        let crc = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[kind]);
        hasher.update(body);
        if hasher.finalize() != crc {
            return Err(StreamError::BadChecksum { kind });
        }
        let body = body.to_vec();
        self.consumed += total;
        Ok(Some((kind, body)))
    }

    /// The peer closed the stream: fine only between frames.
    pub fn finish(&self) -> Result<(), StreamError> {
        match self.buffered() {
            0 if self.magic_seen => Ok(()),
            buffered => Err(StreamError::Truncated { buffered }),
        }
    }
}
