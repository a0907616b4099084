//! The kernel as the ESP carries it: an ELF with only what a loader reads.
//!
//! GRUB's `multiboot2` loader (and QEMU's PVH loader) read the ELF header, the program headers
//! and the contents of the segments they name; the Multiboot2 header must lie in the first
//! 32 KiB of the file, and the kernel's sits in its first loadable segment. Debug info, the
//! symbol table and the defmt table are sections outside every segment: under emulation GRUB
//! spends most of its time reading them (10–18 MiB against ~2 MiB loaded), and nothing on the
//! appliance needs them — `keel logs` and the tests decode defmt with the unstripped
//! `target/keel/keel.elf`.
//!
//! [`loadable_only`] keeps every byte at its offset (so the entry point and each segment are
//! unchanged byte for byte), zeroes what no header or segment covers, cuts the file after the
//! last segment's contents and drops the section header table. It parses ELF64
//! little-endian, the only format the kernel is built as, and refuses anything it cannot
//! vouch for instead of guessing.

use std::ops::Range;

/// Size of the ELF64 file header.
const EHDR_LEN: usize = 64;
/// Size of one ELF64 program header.
const PHDR_LEN: usize = 56;
/// `PT_LOAD`: a segment the loader copies into memory.
pub const PT_LOAD: u32 = 1;

/// Why an ELF cannot be stripped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    /// Shorter than an ELF header, or no ELF magic.
    #[error("not an ELF file (no ELF header)")]
    NotElf,
    /// Not ELF64 little-endian (class, data encoding).
    #[error(
        "not a 64-bit little-endian ELF (class {class}, data {data}): the kernel is built as one"
    )]
    WrongFormat {
        /// `e_ident[EI_CLASS]`.
        class: u8,
        /// `e_ident[EI_DATA]`.
        data: u8,
    },
    /// `e_phentsize` is not the ELF64 program header size.
    #[error("program header size {0} is not 56: the ELF header is damaged")]
    BadPhentsize(u16),
    /// The program header table or a segment's contents lie beyond the end of the file.
    #[error(
        "{what} (bytes {start:#x}..{end:#x}) lies beyond the end of the file ({len:#x} bytes): the ELF is truncated"
    )]
    OutOfFile {
        /// Which part.
        what: String,
        /// Its first byte.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The file's length.
        len: usize,
    },
    /// No `PT_LOAD` segment: nothing for a loader to load.
    #[error("no loadable segment (PT_LOAD): not a kernel")]
    NoLoadableSegment,
}

/// One program header, as far as stripping needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// `p_type`.
    pub kind: u32,
    /// `p_offset`: where the contents start in the file.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_filesz`: bytes of contents in the file.
    pub file_size: u64,
    /// `p_memsz`.
    pub mem_size: u64,
}

/// The parts of an ELF64 file a loader reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfLayout {
    /// `e_entry`.
    pub entry: u64,
    /// Byte range of the program header table.
    pub phdrs: Range<usize>,
    /// Every program header, in file order.
    pub segments: Vec<Segment>,
}

impl ElfLayout {
    /// Parses and bounds-checks the header and program headers of `elf`.
    pub fn parse(elf: &[u8]) -> Result<ElfLayout, StripError> {
        if elf.len() < EHDR_LEN || &elf[..4] != b"\x7fELF" {
            return Err(StripError::NotElf);
        }
        let (class, data) = (elf[4], elf[5]);
        if class != 2 || data != 1 {
            return Err(StripError::WrongFormat { class, data });
        }
        let entry = u64_at(elf, 24);
        let phoff = u64_at(elf, 32);
        let phentsize = u16_at(elf, 54);
        let phnum = u16_at(elf, 56);
        if phentsize as usize != PHDR_LEN {
            return Err(StripError::BadPhentsize(phentsize));
        }
        let phdrs = in_file(
            elf,
            "the program header table",
            phoff,
            u64::from(phnum) * PHDR_LEN as u64,
        )?;
        let mut segments = Vec::with_capacity(usize::from(phnum));
        for i in 0..usize::from(phnum) {
            let at = phdrs.start + i * PHDR_LEN;
            let segment = Segment {
                kind: u32_at(elf, at),
                offset: u64_at(elf, at + 8),
                vaddr: u64_at(elf, at + 16),
                file_size: u64_at(elf, at + 32),
                mem_size: u64_at(elf, at + 40),
            };
            in_file(
                elf,
                &format!("segment {i}'s contents"),
                segment.offset,
                segment.file_size,
            )?;
            segments.push(segment);
        }
        if !segments.iter().any(|s| s.kind == PT_LOAD) {
            return Err(StripError::NoLoadableSegment);
        }
        Ok(ElfLayout {
            entry,
            phdrs,
            segments,
        })
    }

    /// The contents of segment `segment` in `elf` (bounds checked by [`ElfLayout::parse`]).
    pub fn contents<'a>(&self, elf: &'a [u8], segment: &Segment) -> &'a [u8] {
        // Both fit in usize: parse checked that the range lies inside `elf`.
        let start = segment.offset as usize;
        &elf[start..start + segment.file_size as usize]
    }
}

/// `elf` with only the ELF header, the program headers and every segment's contents, each at
/// its original offset; the bytes between are zeroed, the file ends after the last of them,
/// and the section header table is gone (`e_shoff`, `e_shnum`, `e_shstrndx` zero).
///
/// ```
/// # use keel_image::elf_strip::loadable_only;
/// assert!(loadable_only(b"MZ not an elf").is_err());
/// ```
pub fn loadable_only(elf: &[u8]) -> Result<Vec<u8>, StripError> {
    let layout = ElfLayout::parse(elf)?;
    let mut kept: Vec<Range<usize>> = vec![0..EHDR_LEN, layout.phdrs.clone()];
    for segment in &layout.segments {
        let start = segment.offset as usize;
        kept.push(start..start + segment.file_size as usize);
    }
    let len = kept.iter().map(|r| r.end).max().unwrap_or(EHDR_LEN);
    let mut out = vec![0u8; len];
    for range in kept {
        out[range.clone()].copy_from_slice(&elf[range]);
    }
    // No section headers: e_shoff (u64 at 40), e_shnum (u16 at 60), e_shstrndx (u16 at 62).
    out[40..48].fill(0);
    out[60..64].fill(0);
    Ok(out)
}

/// The byte range `offset..offset + len` of `elf`, or [`StripError::OutOfFile`].
fn in_file(elf: &[u8], what: &str, offset: u64, len: u64) -> Result<Range<usize>, StripError> {
    let end = offset.checked_add(len);
    match end {
        Some(end) if end <= elf.len() as u64 => Ok(offset as usize..end as usize),
        _ => Err(StripError::OutOfFile {
            what: what.to_string(),
            start: offset,
            end: end.unwrap_or(u64::MAX),
            len: elf.len(),
        }),
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
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

#[cfg(test)]
#[path = "elf_strip_tests.rs"]
pub(crate) mod tests;
