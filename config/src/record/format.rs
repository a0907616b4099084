//! Encoding and decoding one record (layout in the [module docs](super)).

use alloc::vec::Vec;

/// The first eight bytes of every record.
pub const MAGIC: [u8; 8] = *b"KEELCFG\0";
/// The record format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of a version-1 header, header CRC included.
pub const HEADER_LEN: usize = 36;
/// The longest header any format version may have: it must fit in the first sector.
pub const MAX_HEADER_LEN: usize = 512;
/// The largest payload a record may carry (1 MiB). Bounds what a corrupted length field can
/// make a reader allocate.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// [`encode`] pads records to a multiple of this many bytes (one classic sector).
pub const RECORD_ALIGN: usize = 512;

const OFF_VERSION: usize = 8;
const OFF_HEADER_LEN: usize = 12;
const OFF_GENERATION: usize = 16;
const OFF_PAYLOAD_LEN: usize = 24;
const OFF_PAYLOAD_CRC: usize = 28;
const OFF_HEADER_CRC: usize = 32;

const _: () = assert!(OFF_HEADER_CRC + 4 == HEADER_LEN);
const _: () = assert!(HEADER_LEN <= MAX_HEADER_LEN && MAX_HEADER_LEN <= RECORD_ALIGN);
const _: () = assert!(MAX_PAYLOAD <= u32::MAX as usize);

/// A decoded, CRC-checked record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version (always [`FORMAT_VERSION`] once decoded).
    pub version: u32,
    /// Header length in bytes: the payload starts here.
    pub header_len: usize,
    /// Generation counter.
    pub generation: u64,
    /// Payload length in bytes (at most [`MAX_PAYLOAD`]).
    pub payload_len: usize,
    /// CRC-32 of the payload.
    pub payload_crc: u32,
}

impl Header {
    /// Header plus payload, without padding.
    pub fn record_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// A decoded, CRC-checked record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Generation counter: higher is newer.
    pub generation: u64,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// Why bytes are not a valid record. Each check has its own variant, in the order [`decode`]
/// makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header or the payload needs.
    #[error("record truncated: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the record needs up to the point that failed.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The header area is all zeros or all ones: never written (or erased).
    #[error("blank (never written)")]
    Blank,
    /// The first eight bytes are not [`MAGIC`].
    #[error("not a Keel configuration record (bad magic)")]
    BadMagic,
    /// The header length field is impossible (below [`HEADER_LEN`], above
    /// [`MAX_HEADER_LEN`], or not the version's length).
    #[error("impossible header length {found}")]
    BadHeaderLength {
        /// The stored header length.
        found: u32,
    },
    /// The header CRC does not match the header.
    #[error("header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderCrc {
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC of the header bytes.
        computed: u32,
    },
    /// The header is intact but of a format version this build cannot read.
    #[error(
        "record format version {found} is not supported (this build reads version \
         {FORMAT_VERSION})"
    )]
    UnsupportedVersion {
        /// The stored version.
        found: u32,
    },
    /// The payload length exceeds the limit ([`MAX_PAYLOAD`] for a record; the slot's
    /// capacity for a save).
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload CRC does not match the payload.
    #[error("payload CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    PayloadCrc {
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC of the payload bytes.
        computed: u32,
    },
}

fn le_u32(bytes: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn le_u64(bytes: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Encodes a record: header, payload, and zero padding to a multiple of [`RECORD_ALIGN`].
///
/// Fails only with [`RecordError::PayloadTooLarge`] when `payload` exceeds [`MAX_PAYLOAD`].
///
/// ```
/// use keel_config::record::{decode, encode, RECORD_ALIGN};
///
/// let bytes = encode(7, br#"{"hostname":"keel"}"#).unwrap();
/// assert_eq!(bytes.len(), RECORD_ALIGN);
/// let record = decode(&bytes).unwrap();
/// assert_eq!(record.generation, 7);
/// assert_eq!(record.payload, br#"{"hostname":"keel"}"#);
/// ```
pub fn encode(generation: u64, payload: &[u8]) -> Result<Vec<u8>, RecordError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(RecordError::PayloadTooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    let record_len = HEADER_LEN + payload.len();
    let padded = record_len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN;
    let mut out = Vec::with_capacity(padded);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(payload);
    out.resize(padded, 0);
    Ok(out)
}

/// Decodes and checks the header at the start of `bytes` (which may hold more).
///
/// Checks, in order: length, blank, magic, header length, header CRC, version, payload length
/// limit. Never panics.
pub fn decode_header(bytes: &[u8]) -> Result<Header, RecordError> {
    let Some(fixed) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(RecordError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    };
    if fixed.iter().all(|&b| b == 0x00) || fixed.iter().all(|&b| b == 0xFF) {
        return Err(RecordError::Blank);
    }
    if fixed[..MAGIC.len()] != MAGIC {
        return Err(RecordError::BadMagic);
    }
    let header_len_field = le_u32(fixed, OFF_HEADER_LEN);
    let header_len = header_len_field as usize;
    if !(HEADER_LEN..=MAX_HEADER_LEN).contains(&header_len) {
        return Err(RecordError::BadHeaderLength {
            found: header_len_field,
        });
    }
    let Some(header) = bytes.get(..header_len) else {
        return Err(RecordError::Truncated {
            needed: header_len,
            available: bytes.len(),
        });
    };
    let (covered, stored) = header.split_at(header_len - 4);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(RecordError::HeaderCrc { stored, computed });
    }
    let version = le_u32(fixed, OFF_VERSION);
    if version != FORMAT_VERSION {
        return Err(RecordError::UnsupportedVersion { found: version });
    }
    if header_len != HEADER_LEN {
        return Err(RecordError::BadHeaderLength {
            found: header_len_field,
        });
    }
    let payload_len = le_u32(fixed, OFF_PAYLOAD_LEN) as usize;
    if payload_len > MAX_PAYLOAD {
        return Err(RecordError::PayloadTooLarge {
            len: payload_len,
            max: MAX_PAYLOAD,
        });
    }
    Ok(Header {
        version,
        header_len,
        generation: le_u64(fixed, OFF_GENERATION),
        payload_len,
        payload_crc: le_u32(fixed, OFF_PAYLOAD_CRC),
    })
}

/// Decodes and checks a whole record. Bytes after the payload (padding) are ignored. Never
/// panics.
pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
    let header = decode_header(bytes)?;
    let Some(payload) = bytes.get(header.header_len..header.record_len()) else {
        return Err(RecordError::Truncated {
            needed: header.record_len(),
            available: bytes.len(),
        });
    };
    let computed = crc32fast::hash(payload);
    if computed != header.payload_crc {
        return Err(RecordError::PayloadCrc {
            stored: header.payload_crc,
            computed,
        });
    }
    Ok(Record {
        generation: header.generation,
        payload: payload.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with arbitrary fields and a correct header CRC.
    fn header(version: u32, header_len: u32, generation: u64, payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&version.to_le_bytes());
        h.extend_from_slice(&header_len.to_le_bytes());
        h.extend_from_slice(&generation.to_le_bytes());
        h.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        h.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        let pad = (header_len as usize).saturating_sub(h.len() + 4);
        h.resize(h.len() + pad, 0);
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn fix_header_crc(bytes: &mut [u8]) {
        let crc = crc32fast::hash(&bytes[..OFF_HEADER_CRC]);
        set_u32(bytes, OFF_HEADER_CRC, crc);
    }

    #[test]
    fn layout_is_as_documented() {
        let payload = b"{\"a\":1}";
        let bytes = encode(0x0102_0304_0506_0708, payload).unwrap();
        assert_eq!(&bytes[0..8], b"KEELCFG\0");
        assert_eq!(&bytes[8..12], &[1, 0, 0, 0]);
        assert_eq!(&bytes[12..16], &[36, 0, 0, 0]);
        assert_eq!(&bytes[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[24..28], &[7, 0, 0, 0]);
        assert_eq!(&bytes[28..32], &crc32fast::hash(payload).to_le_bytes());
        assert_eq!(&bytes[32..36], &crc32fast::hash(&bytes[..32]).to_le_bytes());
        assert_eq!(&bytes[36..43], payload);
        assert!(bytes[43..].iter().all(|&b| b == 0));
        assert_eq!(bytes.len(), 512);
        // CRC-32 is the IEEE polynomial (check value of "123456789").
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trips_and_pads_to_whole_sectors() {
        for len in [0usize, 1, 475, 476, 477, 1000, 4096, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let bytes = encode(len as u64, &payload).unwrap();
            assert_eq!(bytes.len() % RECORD_ALIGN, 0);
            assert_eq!(bytes.len(), (HEADER_LEN + len).div_ceil(512) * 512);
            let record = decode(&bytes).unwrap();
            assert_eq!(record.generation, len as u64);
            assert_eq!(record.payload, payload);
            // The padding is not needed to decode.
            assert_eq!(decode(&bytes[..HEADER_LEN + len]).unwrap(), record);
            let h = decode_header(&bytes).unwrap();
            assert_eq!(h.record_len(), HEADER_LEN + len);
            assert_eq!(h.version, FORMAT_VERSION);
        }
    }

    #[test]
    fn largest_payload_is_accepted_and_one_more_refused() {
        let payload = vec![0xA5; MAX_PAYLOAD];
        assert_eq!(
            decode(&encode(1, &payload).unwrap()).unwrap().payload.len(),
            MAX_PAYLOAD
        );
        assert_eq!(
            encode(1, &vec![0; MAX_PAYLOAD + 1]),
            Err(RecordError::PayloadTooLarge {
                len: MAX_PAYLOAD + 1,
                max: MAX_PAYLOAD
            })
        );
    }

    #[test]
    fn truncation_at_every_length_is_reported() {
        let bytes = encode(3, &[0x5A; 100]).unwrap();
        for len in 0..HEADER_LEN + 100 {
            let err = decode(&bytes[..len]).unwrap_err();
            let needed = if len < HEADER_LEN {
                HEADER_LEN
            } else {
                HEADER_LEN + 100
            };
            assert_eq!(
                err,
                RecordError::Truncated {
                    needed,
                    available: len
                },
                "len {len}"
            );
        }
    }

    #[test]
    fn blank_media_is_blank() {
        assert_eq!(decode(&[0u8; 512]), Err(RecordError::Blank));
        assert_eq!(decode(&[0xFFu8; 512]), Err(RecordError::Blank));
        assert_eq!(decode(&[0u8; 36]), Err(RecordError::Blank));
    }

    #[test]
    fn bad_magic() {
        let mut bytes = encode(1, b"x").unwrap();
        bytes[0] = b'k';
        assert_eq!(decode(&bytes), Err(RecordError::BadMagic));
        assert_eq!(decode(&[0x42u8; 512]), Err(RecordError::BadMagic));
    }

    #[test]
    fn impossible_header_lengths() {
        for len in [0u32, 35, 513, u32::MAX] {
            let mut bytes = encode(1, b"x").unwrap();
            set_u32(&mut bytes, OFF_HEADER_LEN, len);
            assert_eq!(
                decode(&bytes),
                Err(RecordError::BadHeaderLength { found: len })
            );
        }
        // Version 1 with a longer (CRC-valid) header is inconsistent.
        let bytes = header(1, 40, 1, b"x");
        assert_eq!(
            decode(&bytes),
            Err(RecordError::BadHeaderLength { found: 40 })
        );
        // A header longer than the bytes present.
        let bytes = header(2, 200, 1, b"");
        assert_eq!(
            decode(&bytes[..100]),
            Err(RecordError::Truncated {
                needed: 200,
                available: 100
            })
        );
    }

    #[test]
    fn newer_format_version_is_unsupported_not_corrupt() {
        // A version-2 header, longer and CRC-valid: a later Keel wrote it.
        let bytes = header(2, 48, 9, b"{}");
        assert_eq!(
            decode(&bytes),
            Err(RecordError::UnsupportedVersion { found: 2 })
        );
        let bytes = header(0, 36, 9, b"{}");
        assert_eq!(
            decode(&bytes),
            Err(RecordError::UnsupportedVersion { found: 0 })
        );
    }

    #[test]
    fn corrupted_version_field_is_a_header_crc_error() {
        let mut bytes = encode(1, b"x").unwrap();
        bytes[OFF_VERSION] = 2;
        assert!(matches!(decode(&bytes), Err(RecordError::HeaderCrc { .. })));
    }

    #[test]
    fn oversized_payload_length_is_refused_before_reading_it() {
        let mut bytes = encode(1, b"x").unwrap();
        set_u32(&mut bytes, OFF_PAYLOAD_LEN, (MAX_PAYLOAD + 1) as u32);
        fix_header_crc(&mut bytes);
        assert_eq!(
            decode_header(&bytes),
            Err(RecordError::PayloadTooLarge {
                len: MAX_PAYLOAD + 1,
                max: MAX_PAYLOAD
            })
        );
        set_u32(&mut bytes, OFF_PAYLOAD_LEN, u32::MAX);
        fix_header_crc(&mut bytes);
        assert!(matches!(
            decode(&bytes),
            Err(RecordError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn payload_corruption_is_a_payload_crc_error() {
        let mut bytes = encode(1, b"hello").unwrap();
        bytes[HEADER_LEN] ^= 1;
        let err = decode(&bytes).unwrap_err();
        assert_eq!(
            err,
            RecordError::PayloadCrc {
                stored: crc32fast::hash(b"hello"),
                computed: crc32fast::hash(b"iello")
            }
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encode(42, &[0x3C; 100]).unwrap();
        let used = HEADER_LEN + 100;
        for bit in 0..used * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&b).is_err(), "flip of bit {bit} went unnoticed");
        }
        // Flips in the padding do not matter.
        let mut b = bytes.clone();
        b[used] ^= 0xFF;
        assert!(decode(&b).is_ok());
    }

    #[test]
    fn errors_have_operator_messages() {
        let cases = [
            (
                RecordError::Truncated {
                    needed: 36,
                    available: 3,
                },
                "record truncated: needs 36 bytes, 3 available",
            ),
            (RecordError::Blank, "blank (never written)"),
            (
                RecordError::BadMagic,
                "not a Keel configuration record (bad magic)",
            ),
            (
                RecordError::BadHeaderLength { found: 7 },
                "impossible header length 7",
            ),
            (
                RecordError::HeaderCrc {
                    stored: 1,
                    computed: 0xABCD,
                },
                "header CRC mismatch (stored 0x00000001, computed 0x0000abcd)",
            ),
            (
                RecordError::UnsupportedVersion { found: 3 },
                "record format version 3 is not supported (this build reads version 1)",
            ),
            (
                RecordError::PayloadTooLarge { len: 10, max: 5 },
                "payload of 10 bytes exceeds the limit of 5 bytes",
            ),
            (
                RecordError::PayloadCrc {
                    stored: 2,
                    computed: 3,
                },
                "payload CRC mismatch (stored 0x00000002, computed 0x00000003)",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let valid = encode(5, b"{\"vms\":[]}").unwrap();
        for round in 0..50_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                // Pure noise, often starting with the magic so later checks run.
                let len = (rng.next() % 700) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if round % 4 == 0 && b.len() >= 8 {
                    b[..8].copy_from_slice(&MAGIC);
                }
                b
            } else {
                // A valid record with a few random bytes changed and a random length.
                let mut b = valid.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() % b.len() as u64) as usize;
                    b[i] = rng.next() as u8;
                }
                b.truncate((rng.next() % (b.len() as u64 + 1)) as usize);
                b
            };
            if let Ok(record) = decode(&bytes) {
                assert!(record.payload.len() <= MAX_PAYLOAD);
                assert_eq!(decode_header(&bytes).unwrap().generation, record.generation);
            }
        }
    }
}
