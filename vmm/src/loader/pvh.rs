//! PVH ELF kernels: the ELF image is loaded at its segments' physical addresses and entered
//! in 32-bit protected mode at the address its `XEN_ELFNOTE_PHYS32_ENTRY` note gives, with
//! EBX pointing at an `hvm_start_info` (Xen's `xen/include/public/arch-x86/hvm/start_info.h`
//! and `docs/misc/pvh.pandoc`; Linux's `arch/x86/platform/pvh/`).
//!
//! # Parsing
//!
//! ELF64 (Linux's `vmlinux`) and ELF32 images are accepted: little-endian, `ET_EXEC`, machine
//! x86-64 or i386. Every offset and size taken from the image is checked against the image
//! with overflow-safe arithmetic before it is used; a malformed image is a [`PvhError`].
//!
//! - `PT_NOTE` segments are walked for a note named `Xen` of type 18; its descriptor (4 or
//!   8 bytes) is the 32-bit physical entry point.
//! - `PT_LOAD` segments are copied to `p_paddr` (`p_filesz` bytes from the file, the rest up to
//!   `p_memsz` zeroed). They must lie in RAM above 1 MiB, clear of the boot structures in
//!   [`layout`](super::layout).
//!
//! # The start of day
//!
//! [`load`] writes the command line at [`CMDLINE`], the initrd (as module 0) as high in RAM as
//! it fits above the kernel, the memory map (the same ranges as the e820 map) at
//! [`PVH_MEMMAP`], the module list at [`PVH_MODLIST`] and the `hvm_start_info` (version 1) at
//! [`PVH_START_INFO`], and returns [`StartMode::Protected32`]. The command line and initrd are
//! checked, placed and written as for a bzImage ([`boot_files`](super::boot_files)); what goes
//! wrong there is a [`BootFilesError`] inside the [`PvhError`].

use alloc::vec::Vec;
use core::fmt;

use crate::memory::GuestMemory;
use crate::vcpu::StartMode;

use super::boot_files::{BootFilesError, check_cmdline, check_initrd, write_boot_files};
use super::layout::{CMDLINE, HIGH_MEMORY_START, Layout, PVH_MEMMAP, PVH_MODLIST, PVH_START_INFO};

/// `hvm_start_info.magic` ("xEn3" with the top bit of 'E' set).
pub const START_INFO_MAGIC: u32 = 0x336E_C578;
/// The `hvm_start_info` version written (1: with the memory map).
pub const START_INFO_VERSION: u32 = 1;
/// Size of `hvm_start_info` (version 1).
pub const START_INFO_SIZE: usize = 0x38;
/// Size of one `hvm_modlist_entry`.
pub const MODLIST_ENTRY_SIZE: usize = 32;
/// Size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;
/// The note type holding the 32-bit physical entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// The note owner name.
pub const XEN_NOTE_NAME: &[u8] = b"Xen\0";

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;

/// Why a PVH kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvhError {
    /// The image ends before a structure its headers describe.
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// No ELF signature.
    NotElf,
    /// `EI_CLASS` is neither ELF32 nor ELF64.
    UnsupportedClass(u8),
    /// The image is big-endian.
    NotLittleEndian,
    /// `e_type` is not `ET_EXEC`.
    NotExecutable(u16),
    /// `e_machine` is neither x86-64 nor i386.
    WrongMachine(u16),
    /// `e_phentsize` is smaller than a program header.
    BadProgramHeaderSize(u16),
    /// No `XEN_ELFNOTE_PHYS32_ENTRY` note.
    NoPvhEntry,
    /// The entry note's value does not fit 32 bits or has an odd size.
    BadEntryNote {
        /// Descriptor size in bytes.
        size: u32,
        /// Its value (0 if the size was wrong).
        value: u64,
    },
    /// The entry point lies in no loaded segment.
    EntryOutsideImage {
        /// The entry point.
        entry: u32,
    },
    /// A segment's file size exceeds its memory size.
    BadSegment {
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// A segment would overwrite the boot structures below 1 MiB.
    SegmentBelow1MiB {
        /// `p_paddr`.
        paddr: u64,
    },
    /// A segment reaches past the end of RAM.
    SegmentOutsideRam {
        /// `p_paddr`.
        paddr: u64,
        /// `p_memsz`.
        memsz: u64,
        /// End of RAM.
        ram_end: u64,
    },
    /// The image has no loadable segment.
    NoSegments,
    /// The command line (held to its area) or the initrd (placed above the kernel) is wrong,
    /// the VM's memory size is not one the layout supports, or writing guest memory failed.
    BootFiles(BootFilesError),
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PvhError::Truncated { what } => write!(
                f,
                "the kernel image ends inside its {what}: the file is truncated or corrupt"
            ),
            PvhError::NotElf => f.write_str("the kernel image is not an ELF file"),
            PvhError::UnsupportedClass(c) => {
                write!(f, "the ELF kernel has class {c}, neither ELF32 nor ELF64")
            }
            PvhError::NotLittleEndian => f.write_str("the ELF kernel is big-endian: not x86"),
            PvhError::NotExecutable(t) => write!(
                f,
                "the ELF file has type {t}, not an executable: pass a kernel (vmlinux)"
            ),
            PvhError::WrongMachine(m) => {
                write!(f, "the ELF kernel is for machine {m}, not x86-64 or i386")
            }
            PvhError::BadProgramHeaderSize(n) => write!(
                f,
                "the ELF kernel's program headers are {n} bytes, too small: the file is corrupt"
            ),
            PvhError::NoPvhEntry => f.write_str(
                "the ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): build Linux \
                 with CONFIG_PVH, or boot the bzImage instead",
            ),
            PvhError::BadEntryNote { size, value } => write!(
                f,
                "the kernel's PVH entry note holds {value:#x} in {size} bytes: it must be a \
                 32-bit address"
            ),
            PvhError::EntryOutsideImage { entry } => write!(
                f,
                "the kernel's PVH entry {entry:#x} lies outside its loaded segments"
            ),
            PvhError::BadSegment { filesz, memsz } => write!(
                f,
                "an ELF segment has {filesz} file bytes but only {memsz} memory bytes: the file \
                 is corrupt"
            ),
            PvhError::SegmentBelow1MiB { paddr } => write!(
                f,
                "an ELF segment loads at {paddr:#x}, below 1 MiB where Keel keeps the boot \
                 structures: link the kernel above 1 MiB"
            ),
            PvhError::SegmentOutsideRam {
                paddr,
                memsz,
                ram_end,
            } => write!(
                f,
                "an ELF segment needs {paddr:#x}..{:#x} but RAM ends at {ram_end:#x}: give the VM \
                 more memory",
                paddr.saturating_add(memsz)
            ),
            PvhError::NoSegments => f.write_str("the ELF kernel has no loadable segment"),
            PvhError::BootFiles(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for PvhError {}

super::boot_files::boot_files_error_conversions!(PvhError);

/// One program header, widened to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    /// `p_type`.
    pub kind: u32,
    /// `p_offset`.
    pub offset: u64,
    /// `p_paddr`.
    pub paddr: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_align`.
    pub align: u64,
}

/// `len` bytes of `image` at `at`, or `Truncated { what }`.
fn bytes<'a>(image: &'a [u8], at: u64, len: u64, what: &'static str) -> Result<&'a [u8], PvhError> {
    let end = at.checked_add(len).ok_or(PvhError::Truncated { what })?;
    let (Ok(at), Ok(end)) = (usize::try_from(at), usize::try_from(end)) else {
        return Err(PvhError::Truncated { what });
    };
    image.get(at..end).ok_or(PvhError::Truncated { what })
}

/// Little-endian unsigned integer of `width` (1..=8) bytes at `at` in `b`; the caller has
/// checked `b` is long enough.
fn le(b: &[u8], at: usize, width: usize) -> u64 {
    b.iter()
        .skip(at)
        .take(width)
        .rev()
        .fold(0, |acc, &byte| (acc << 8) | u64::from(byte))
}

/// Validates the ELF header and returns the program headers.
pub fn program_headers(image: &[u8]) -> Result<Vec<ProgramHeader>, PvhError> {
    let ident = bytes(image, 0, 16, "ELF header")?;
    if ident[..4] != ELF_MAGIC {
        return Err(PvhError::NotElf);
    }
    let class = ident[4];
    let is64 = match class {
        ELFCLASS64 => true,
        ELFCLASS32 => false,
        c => return Err(PvhError::UnsupportedClass(c)),
    };
    if ident[5] != ELFDATA2LSB {
        return Err(PvhError::NotLittleEndian);
    }
    let eh = bytes(image, 0, if is64 { 64 } else { 52 }, "ELF header")?;
    let e_type = le(eh, 0x10, 2) as u16;
    if e_type != ET_EXEC {
        return Err(PvhError::NotExecutable(e_type));
    }
    let machine = le(eh, 0x12, 2) as u16;
    if machine != EM_X86_64 && machine != EM_386 {
        return Err(PvhError::WrongMachine(machine));
    }
    let (phoff, phentsize, phnum, min_entsize) = if is64 {
        (le(eh, 0x20, 8), le(eh, 0x36, 2), le(eh, 0x38, 2), 56)
    } else {
        (le(eh, 0x1C, 4), le(eh, 0x2A, 2), le(eh, 0x2C, 2), 32)
    };
    if phnum > 0 && phentsize < min_entsize {
        return Err(PvhError::BadProgramHeaderSize(phentsize as u16));
    }
    // phentsize and phnum are 16-bit, so the product cannot overflow.
    let table = bytes(image, phoff, phentsize * phnum, "program headers")?;
    let headers = table
        .chunks_exact(phentsize.max(1) as usize)
        .map(|ph| {
            if is64 {
                ProgramHeader {
                    kind: le(ph, 0, 4) as u32,
                    offset: le(ph, 8, 8),
                    paddr: le(ph, 24, 8),
                    filesz: le(ph, 32, 8),
                    memsz: le(ph, 40, 8),
                    align: le(ph, 48, 8),
                }
            } else {
                ProgramHeader {
                    kind: le(ph, 0, 4) as u32,
                    offset: le(ph, 4, 4),
                    paddr: le(ph, 12, 4),
                    filesz: le(ph, 16, 4),
                    memsz: le(ph, 20, 4),
                    align: le(ph, 28, 4),
                }
            }
        })
        .collect();
    Ok(headers)
}

/// The PVH entry point from the image's `PT_NOTE` segments.
pub fn find_entry(image: &[u8], headers: &[ProgramHeader]) -> Result<u32, PvhError> {
    for ph in headers.iter().filter(|ph| ph.kind == PT_NOTE) {
        let mut notes = bytes(image, ph.offset, ph.filesz, "note segment")?;
        let align = if ph.align == 8 { 8 } else { 4 };
        while notes.len() >= 12 {
            let namesz = le(notes, 0, 4);
            let descsz = le(notes, 4, 4);
            let kind = le(notes, 8, 4) as u32;
            // Both sizes are below 2^32, so none of this overflows u64.
            let name_at = 12;
            let desc_at = (name_at + namesz).next_multiple_of(align);
            let next = (desc_at + descsz).next_multiple_of(align);
            let name = bytes(notes, name_at, namesz, "note")?;
            let desc = bytes(notes, desc_at, descsz, "note")?;
            if name == XEN_NOTE_NAME && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                let value = match descsz {
                    4 | 8 => le(desc, 0, descsz as usize),
                    _ => 0,
                };
                return u32::try_from(value)
                    .ok()
                    .filter(|_| descsz == 4 || descsz == 8)
                    .ok_or(PvhError::BadEntryNote {
                        size: descsz as u32,
                        value,
                    });
            }
            notes = notes
                .get(usize::try_from(next).unwrap_or(usize::MAX)..)
                .unwrap_or(&[]);
        }
    }
    Err(PvhError::NoPvhEntry)
}

/// Where [`load`] put things, and how the vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvhBoot {
    /// The vCPU's start state.
    pub start: StartMode,
    /// The PVH entry point.
    pub entry: u32,
    /// Lowest and one past the highest guest-physical address the segments occupy.
    pub kernel_range: (u64, u64),
    /// The `hvm_start_info`.
    pub start_info: u64,
    /// The command line and its length without the NUL.
    pub cmdline: (u64, u64),
    /// The initrd's address and size (module 0), if one was given.
    pub initrd: Option<(u64, u64)>,
}

/// Loads the PVH ELF kernel `image` into `memory` with an optional `initrd` and `cmdline`,
/// passing the RSDP address `acpi_rsdp` in the start info, and returns the start state. See
/// the module docs.
pub fn load(
    memory: &GuestMemory,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    acpi_rsdp: Option<u64>,
) -> Result<PvhBoot, PvhError> {
    let layout = Layout::new(memory.size())?;
    let ram_end = layout.ram_end();
    let headers = program_headers(image)?;
    let entry = find_entry(image, &headers)?;

    // Check every segment before writing any.
    let mut segments = Vec::new();
    for ph in headers
        .iter()
        .filter(|ph| ph.kind == PT_LOAD && ph.memsz > 0)
    {
        if ph.filesz > ph.memsz {
            return Err(PvhError::BadSegment {
                filesz: ph.filesz,
                memsz: ph.memsz,
            });
        }
        let data = bytes(image, ph.offset, ph.filesz, "loadable segment")?;
        if ph.paddr < HIGH_MEMORY_START {
            return Err(PvhError::SegmentBelow1MiB { paddr: ph.paddr });
        }
        if ph.paddr.checked_add(ph.memsz).is_none_or(|e| e > ram_end) {
            return Err(PvhError::SegmentOutsideRam {
                paddr: ph.paddr,
                memsz: ph.memsz,
                ram_end,
            });
        }
        segments.push((ph.paddr, ph.memsz, data));
    }
    let kernel_start = segments
        .iter()
        .map(|s| s.0)
        .min()
        .ok_or(PvhError::NoSegments)?;
    let kernel_end = segments
        .iter()
        .map(|s| s.0 + s.1)
        .max()
        .unwrap_or(kernel_start);
    let entry_in_image = segments
        .iter()
        .any(|&(paddr, memsz, _)| (paddr..paddr + memsz).contains(&u64::from(entry)));
    if !entry_in_image {
        return Err(PvhError::EntryOutsideImage { entry });
    }

    let cmdline_len = check_cmdline(cmdline, None)?;
    let initrd_at = check_initrd(initrd, kernel_end, ram_end)?;

    for &(paddr, memsz, data) in &segments {
        memory.write(paddr, data)?;
        let filesz = data.len() as u64;
        memory.fill(paddr + filesz, memsz - filesz, 0)?;
    }
    write_boot_files(memory, cmdline, initrd_at)?;

    let mut modlist = [0u8; MODLIST_ENTRY_SIZE];
    if let Some((addr, data)) = initrd_at {
        modlist[0..8].copy_from_slice(&addr.to_le_bytes());
        modlist[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        memory.write(PVH_MODLIST, &modlist)?;
    }

    let e820 = layout.e820();
    for (i, entry) in e820.iter().enumerate() {
        let mut m = [0u8; MEMMAP_ENTRY_SIZE];
        m[0..8].copy_from_slice(&entry.addr.to_le_bytes());
        m[8..16].copy_from_slice(&entry.size.to_le_bytes());
        m[16..20].copy_from_slice(&(entry.kind as u32).to_le_bytes());
        memory.write(PVH_MEMMAP + (i * MEMMAP_ENTRY_SIZE) as u64, &m)?;
    }

    let mut info = [0u8; START_INFO_SIZE];
    let mut put = |at: usize, bytes: &[u8]| info[at..at + bytes.len()].copy_from_slice(bytes);
    put(0x00, &START_INFO_MAGIC.to_le_bytes());
    put(0x04, &START_INFO_VERSION.to_le_bytes());
    // 0x08 flags: none of the SIF_ flags (privileged, initial domain, ...) apply.
    if initrd_at.is_some() {
        put(0x0C, &1u32.to_le_bytes());
        put(0x10, &PVH_MODLIST.to_le_bytes());
    }
    put(0x18, &CMDLINE.to_le_bytes());
    put(0x20, &acpi_rsdp.unwrap_or(0).to_le_bytes());
    put(0x28, &PVH_MEMMAP.to_le_bytes());
    put(0x30, &(e820.len() as u32).to_le_bytes());
    memory.write(PVH_START_INFO, &info)?;

    Ok(PvhBoot {
        start: StartMode::Protected32 {
            entry,
            ebx: PVH_START_INFO as u32,
        },
        entry,
        kernel_range: (kernel_start, kernel_end),
        start_info: PVH_START_INFO,
        cmdline: (CMDLINE, cmdline_len),
        initrd: initrd_at.map(|(addr, data)| (addr, data.len() as u64)),
    })
}

#[cfg(test)]
mod tests;
