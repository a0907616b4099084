//! The encoding of a whole VM as bytes: what snapshots, `vm save`/`vm restore` and live
//! migration read and write.
//!
//! # Layout (format version 2)
//!
//! ```text
//! header   magic "KEELVM\r\n" (8) | format version u32 | flags u32 (0)            16 bytes
//! body     section*: tag u32 | length u64 | payload                              any length
//! trailer  magic "KEELEND\n" (8) | body length u64 | body CRC-32 (IEEE) u32 | 0 u32   24 bytes
//! ```
//!
//! All integers are little-endian. Every section appears exactly once, in tag order:
//!
//! | tag | section | payload |
//! | --- | --- | --- |
//! | 1 | description | postcard: what the VM is (name, RAM size, vCPU count, backend) |
//! | 2 | vm | postcard: the VM loop's own state (clock, vCPU run states, counters) |
//! | 3 | vcpus | postcard: every vCPU's [`VcpuState`](crate::vcpu::VcpuState) |
//! | 4 | devices | postcard: the platform's device and interrupt-routing state |
//! | 5 | memory | guest RAM, see [`memory`] |
//!
//! The trailer comes last so the encoder can stream (it never seeks back), and the checksum
//! covers the whole body, so the decoder verifies the blob before it trusts any length in it.
//! A reader refuses a wrong magic, another format version, a length that disagrees with the
//! blob, a checksum mismatch, a missing, repeated, unknown or out-of-order section, and a
//! section that does not decode — each with its own [`SnapshotError`] — and builds nothing.
//!
//! Postcard is not self-describing: a change to any state struct's fields is a format
//! change and bumps [`FORMAT_VERSION`].

pub mod blob;
pub mod memory;

use alloc::vec::Vec;
use core::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::blob::{FrameBlob, Sink, Source};
use crate::memory::{GuestMemory, MemoryError};

/// The first eight bytes of every saved VM (`\r\n` shows text-mode mangling at once).
pub const MAGIC: [u8; 8] = *b"KEELVM\r\n";
/// The first eight bytes of the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"KEELEND\n";
/// The format version this build writes and reads.
///
/// 2: the VM loop's state carries kvm-clock's MSRs (version 1 had none; postcard cannot
/// tell, so version 1 blobs are refused with [`SnapshotError::UnsupportedVersion`]).
pub const FORMAT_VERSION: u32 = 2;
/// Bytes in the header.
pub const HEADER_LEN: u64 = 16;
/// Bytes in the trailer.
pub const TRAILER_LEN: u64 = 24;
/// Bytes in a section's tag and length.
const SECTION_HEADER_LEN: u64 = 12;

/// A section of the body, by tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Section {
    /// What the VM is.
    Description = 1,
    /// The VM loop's state.
    Vm = 2,
    /// The vCPUs.
    Vcpus = 3,
    /// The devices and interrupt routing.
    Devices = 4,
    /// Guest RAM.
    Memory = 5,
}

impl Section {
    /// Every section, in the order the body holds them.
    pub const ALL: [Section; 5] = [
        Section::Description,
        Section::Vm,
        Section::Vcpus,
        Section::Devices,
        Section::Memory,
    ];

    /// The section's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Section::Description => "description",
            Section::Vm => "vm",
            Section::Vcpus => "vcpus",
            Section::Devices => "devices",
            Section::Memory => "memory",
        }
    }

    fn from_tag(tag: u32) -> Option<Section> {
        Section::ALL.into_iter().find(|s| *s as u32 == tag)
    }
}

/// Why a VM could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// The host has no memory left for the blob or a decoded section.
    OutOfMemory,
    /// The blob ends before its header, trailer or a section does.
    Truncated,
    /// The blob does not start with [`MAGIC`] (or its trailer with [`TRAILER_MAGIC`]).
    NotASavedVm,
    /// The blob was written in another format version.
    UnsupportedVersion {
        /// The version in the blob.
        found: u32,
    },
    /// The trailer's body length disagrees with the blob's size.
    LengthMismatch {
        /// The body length the trailer states.
        stated: u64,
        /// The body length the blob has.
        actual: u64,
    },
    /// The body's checksum does not match the trailer's: the blob was damaged.
    ChecksumMismatch {
        /// The CRC-32 in the trailer.
        stored: u32,
        /// The CRC-32 of the body as found.
        computed: u32,
    },
    /// A section tag this version does not know.
    UnknownSection {
        /// The tag found.
        tag: u32,
    },
    /// A section is missing, repeated or out of order.
    MisplacedSection {
        /// The section expected at this point.
        expected: &'static str,
    },
    /// A section's payload does not decode.
    Malformed {
        /// The section.
        section: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The saved RAM does not fit the VM being restored into.
    MemorySizeMismatch {
        /// RAM in the blob, in bytes.
        saved: u64,
        /// RAM of the target, in bytes.
        target: u64,
    },
    /// Guest RAM could not be read or written.
    Memory(MemoryError),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::OutOfMemory => f.write_str("out of host memory for the saved VM"),
            SnapshotError::Truncated => f.write_str("the saved VM is truncated"),
            SnapshotError::NotASavedVm => f.write_str("not a saved Keel VM (bad magic)"),
            SnapshotError::UnsupportedVersion { found } => write!(
                f,
                "saved VM format version {found} is not supported (this build reads \
                 version {FORMAT_VERSION})"
            ),
            SnapshotError::LengthMismatch { stated, actual } => write!(
                f,
                "the saved VM's trailer states {stated} body bytes but the body has {actual}"
            ),
            SnapshotError::ChecksumMismatch { stored, computed } => write!(
                f,
                "the saved VM is damaged: checksum {computed:#010x} does not match the \
                 stored {stored:#010x}"
            ),
            SnapshotError::UnknownSection { tag } => {
                write!(f, "the saved VM has an unknown section (tag {tag})")
            }
            SnapshotError::MisplacedSection { expected } => write!(
                f,
                "the saved VM's sections are out of order: expected the {expected} section"
            ),
            SnapshotError::Malformed { section, reason } => {
                write!(f, "the saved VM's {section} section is malformed: {reason}")
            }
            SnapshotError::MemorySizeMismatch { saved, target } => write!(
                f,
                "the saved VM has {} MiB of RAM, the target {} MiB",
                saved >> 20,
                target >> 20
            ),
            SnapshotError::Memory(e) => write!(f, "guest memory: {e}"),
        }
    }
}

impl core::error::Error for SnapshotError {}

/// Writes a VM's sections, in order, to a [`Sink`], with the header and trailer.
pub struct Writer<'a, S: Sink + ?Sized> {
    sink: &'a mut S,
    crc: crc32fast::Hasher,
    body_len: u64,
    next: usize,
}

impl<'a, S: Sink + ?Sized> Writer<'a, S> {
    /// Starts a saved VM: writes the header.
    pub fn new(sink: &'a mut S) -> Result<Self, SnapshotError> {
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        sink.write_all(&header)?;
        Ok(Writer {
            sink,
            crc: crc32fast::Hasher::new(),
            body_len: 0,
            next: 0,
        })
    }

    fn body(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.sink.write_all(bytes)?;
        self.crc.update(bytes);
        self.body_len += bytes.len() as u64;
        Ok(())
    }

    /// Checks that `section` comes next.
    fn begin(&mut self, section: Section) -> Result<(), SnapshotError> {
        match Section::ALL.get(self.next) {
            Some(&expected) if expected == section => {
                self.next += 1;
                Ok(())
            }
            Some(expected) => Err(SnapshotError::MisplacedSection {
                expected: expected.name(),
            }),
            None => Err(SnapshotError::MisplacedSection {
                expected: "trailer",
            }),
        }
    }

    fn section_bytes(&mut self, section: Section, payload: &[u8]) -> Result<(), SnapshotError> {
        self.begin(section)?;
        let mut header = [0u8; SECTION_HEADER_LEN as usize];
        header[..4].copy_from_slice(&(section as u32).to_le_bytes());
        header[4..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        self.body(&header)?;
        self.body(payload)
    }

    /// Writes `section` holding `value`, postcard-encoded.
    pub fn section<T: Serialize + ?Sized>(
        &mut self,
        section: Section,
        value: &T,
    ) -> Result<(), SnapshotError> {
        let payload = postcard::to_allocvec(value).map_err(|_| SnapshotError::OutOfMemory)?;
        self.section_bytes(section, &payload)
    }

    /// Writes the memory section from `memory` (see [`memory`]).
    pub fn memory(&mut self, memory: &GuestMemory) -> Result<(), SnapshotError> {
        self.begin(Section::Memory)?;
        let plan = memory::plan(memory)?;
        let len = plan.len();
        let mut header = [0u8; SECTION_HEADER_LEN as usize];
        header[..4].copy_from_slice(&(Section::Memory as u32).to_le_bytes());
        header[4..].copy_from_slice(&len.to_le_bytes());
        self.body(&header)?;
        let before = self.body_len;
        memory::encode(memory, &plan, &mut |bytes| self.body(bytes))?;
        debug_assert_eq!(self.body_len - before, len);
        Ok(())
    }

    /// Ends the saved VM: checks every section was written and writes the trailer.
    pub fn finish(self) -> Result<(), SnapshotError> {
        if let Some(missing) = Section::ALL.get(self.next) {
            return Err(SnapshotError::MisplacedSection {
                expected: missing.name(),
            });
        }
        let mut trailer = [0u8; TRAILER_LEN as usize];
        trailer[..8].copy_from_slice(&TRAILER_MAGIC);
        trailer[8..16].copy_from_slice(&self.body_len.to_le_bytes());
        trailer[16..20].copy_from_slice(&self.crc.finalize().to_le_bytes());
        self.sink.write_all(&trailer)
    }
}

/// A verified saved VM: header, trailer and checksum checked, sections located.
pub struct Reader<'a> {
    source: &'a dyn Source,
    /// Offset and length of each section's payload, in [`Section::ALL`] order.
    sections: [(u64, u64); 5],
}

impl core::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reader")
            .field("sections", &self.sections)
            .finish_non_exhaustive()
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

impl<'a> Reader<'a> {
    /// Checks `source` as a saved VM of this format version and finds its sections.
    pub fn open(source: &'a dyn Source) -> Result<Reader<'a>, SnapshotError> {
        let total = source.len();
        let mut header = [0u8; HEADER_LEN as usize];
        if total < HEADER_LEN {
            // Too short for anything: say which, if the magic is already wrong.
            let mut some = [0u8; HEADER_LEN as usize];
            let n = total as usize;
            source.read_at(0, &mut some[..n])?;
            if n == 0 || some[..n.min(8)] != MAGIC[..n.min(8)] {
                return Err(SnapshotError::NotASavedVm);
            }
            return Err(SnapshotError::Truncated);
        }
        source.read_at(0, &mut header)?;
        if header[..8] != MAGIC {
            return Err(SnapshotError::NotASavedVm);
        }
        let version = u32_at(&header, 8);
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: version });
        }
        if u32_at(&header, 12) != 0 {
            return Err(SnapshotError::Malformed {
                section: "header",
                reason: "it sets flags this version does not know",
            });
        }
        if total < HEADER_LEN + TRAILER_LEN {
            return Err(SnapshotError::Truncated);
        }
        let mut trailer = [0u8; TRAILER_LEN as usize];
        source.read_at(total - TRAILER_LEN, &mut trailer)?;
        let actual = total - HEADER_LEN - TRAILER_LEN;
        if trailer[..8] != TRAILER_MAGIC {
            // A cut-off blob has body bytes where its trailer should be.
            return Err(SnapshotError::Truncated);
        }
        let stated = u64_at(&trailer, 8);
        if stated != actual {
            return Err(SnapshotError::LengthMismatch { stated, actual });
        }
        if u32_at(&trailer, 20) != 0 {
            return Err(SnapshotError::Malformed {
                section: "trailer",
                reason: "its reserved field is not zero",
            });
        }
        let stored = u32_at(&trailer, 16);
        let mut crc = crc32fast::Hasher::new();
        let mut chunk = alloc::vec![0u8; 64 * 1024];
        let mut at = HEADER_LEN;
        while at < HEADER_LEN + actual {
            let n = chunk.len().min((HEADER_LEN + actual - at) as usize);
            source.read_at(at, &mut chunk[..n])?;
            crc.update(&chunk[..n]);
            at += n as u64;
        }
        let computed = crc.finalize();
        if computed != stored {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }
        let mut sections = [(0u64, 0u64); 5];
        let mut at = HEADER_LEN;
        let end = HEADER_LEN + actual;
        for (i, expected) in Section::ALL.into_iter().enumerate() {
            if end - at < SECTION_HEADER_LEN {
                return Err(SnapshotError::MisplacedSection {
                    expected: expected.name(),
                });
            }
            let mut sh = [0u8; SECTION_HEADER_LEN as usize];
            source.read_at(at, &mut sh)?;
            let tag = u32_at(&sh, 0);
            let len = u64_at(&sh, 4);
            match Section::from_tag(tag) {
                None => return Err(SnapshotError::UnknownSection { tag }),
                Some(s) if s != expected => {
                    return Err(SnapshotError::MisplacedSection {
                        expected: expected.name(),
                    });
                }
                Some(_) => {}
            }
            at += SECTION_HEADER_LEN;
            if len > end - at {
                return Err(SnapshotError::Malformed {
                    section: expected.name(),
                    reason: "its length runs past the end of the body",
                });
            }
            sections[i] = (at, len);
            at += len;
        }
        if at != end {
            return Err(SnapshotError::Malformed {
                section: "trailer",
                reason: "bytes follow the last section",
            });
        }
        Ok(Reader { source, sections })
    }

    fn payload(&self, section: Section) -> Result<Vec<u8>, SnapshotError> {
        let (at, len) = self.sections[section as usize - 1];
        let len = usize::try_from(len).map_err(|_| SnapshotError::OutOfMemory)?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(len)
            .map_err(|_| SnapshotError::OutOfMemory)?;
        bytes.resize(len, 0);
        self.source.read_at(at, &mut bytes)?;
        Ok(bytes)
    }

    /// Decodes a postcard section (not [`Section::Memory`]).
    pub fn section<T: DeserializeOwned>(&self, section: Section) -> Result<T, SnapshotError> {
        let bytes = self.payload(section)?;
        let (value, rest) =
            postcard::take_from_bytes::<T>(&bytes).map_err(|_| SnapshotError::Malformed {
                section: section.name(),
                reason: "it does not decode",
            })?;
        if !rest.is_empty() {
            return Err(SnapshotError::Malformed {
                section: section.name(),
                reason: "bytes follow its value",
            });
        }
        Ok(value)
    }

    /// The guest RAM size the memory section holds.
    pub fn memory_size(&self) -> Result<u64, SnapshotError> {
        let (at, len) = self.sections[Section::Memory as usize - 1];
        memory::size(self.source, at, len)
    }

    /// Checks the memory section's structure without loading it.
    pub fn check_memory(&self) -> Result<(), SnapshotError> {
        let (at, len) = self.sections[Section::Memory as usize - 1];
        memory::check(self.source, at, len)
    }

    /// Loads the memory section into `memory`, which must be freshly zeroed RAM of the saved
    /// size (pages the section leaves out are zero).
    pub fn load_memory(&self, memory: &GuestMemory) -> Result<(), SnapshotError> {
        let (at, len) = self.sections[Section::Memory as usize - 1];
        memory::decode(self.source, at, len, memory)
    }
}

#[cfg(test)]
mod tests;
