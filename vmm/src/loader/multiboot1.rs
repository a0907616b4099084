//! Multiboot (version 1) kernels, as GRUB legacy and QEMU's `-kernel` load them (the
//! Multiboot Specification 0.6.96, §3): kvm-unit-tests' `x86/*.flat` files are ELF32 images
//! with a Multiboot header, linked at 4 MiB.
//!
//! # The image
//!
//! The header is a 32-bit aligned `magic, flags, checksum` triple (`magic + flags + checksum`
//! = 0 mod 2^32) in the first [`HEADER_SEARCH`] bytes ([`find_header`]). Flag bits 0–15 are
//! requirements: Keel honours bit 0 (modules page-aligned: they always are) and bit 1 (memory
//! information: always given) and refuses an image that asks for anything else there (bit 2,
//! a video mode table, Keel has no video). Then either
//! - flag bit 16 (the "a.out kludge"): the header's address fields say where the file goes:
//!   the bytes from the header's file offset minus `header_addr - load_addr` up to
//!   `load_end_addr` (0: to the end of the file) are copied to `load_addr`, the rest up to
//!   `bss_end_addr` zeroed, and the entry is `entry_addr`; or
//! - an ELF32 executable (i386): its `PT_LOAD` segments go to their physical addresses and
//!   the entry is `e_entry`.
//!
//! Segments must lie in RAM, clear of the boot structures Keel writes ([`RESERVED`]: the
//! information page, the command line, the EBDA/BIOS area with the ACPI tables), must not
//! overlap one another, and the entry must lie in one of them. Kernels below 1 MiB are
//! allowed (kvm-unit-tests' `realmode.flat` is linked at 0x8000). A malformed image is a [`Multiboot1Error`].
//!
//! # The start of day
//!
//! [`load`] writes the command line at [`CMDLINE`], the modules (page-aligned, as high in RAM
//! as they fit, the first module highest), the module list, module strings, memory map
//! (the e820 ranges) and the boot loader name in the page at [`MULTIBOOT_INFO`], and returns
//! [`StartMode::Multiboot`]: 32-bit protected mode, paging off, flat segments, EAX =
//! [`BOOTLOADER_MAGIC`], EBX = the information structure's address.

use alloc::vec::Vec;
use core::fmt;

use crate::memory::{GuestMemory, MemoryError};
use crate::vcpu::StartMode;

use super::boot_files::{BootFilesError, check_cmdline};
use super::layout::{
    CMDLINE, CMDLINE_MAX, E820Type, EBDA_START, HIGH_MEMORY_START, Layout, LayoutError, PAGE_SIZE,
    place_initrd,
};
use super::pvh::{self, PvhError};

/// The header's magic.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// What EAX holds at the kernel's entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie in the image's first 8 KiB.
pub const HEADER_SEARCH: usize = 8192;
/// Where the information structure goes; its tables follow in the same page.
pub const MULTIBOOT_INFO: u64 = 0x6000;
/// Size of the information structure (up to `boot_loader_name`).
const INFO_SIZE: u64 = 0x48;
/// The memory map (`size, base_addr, length, type` entries of 24 bytes).
const MMAP_AT: u64 = MULTIBOOT_INFO + 0x80;
/// The module list (16 bytes a module).
const MODS_AT: u64 = MULTIBOOT_INFO + 0x100;
/// The boot loader's name.
const LOADER_NAME_AT: u64 = MULTIBOOT_INFO + 0x200;
/// Module strings, each NUL-terminated, to the end of the page.
const MOD_STRINGS_AT: u64 = MULTIBOOT_INFO + 0x240;
/// End of the page the structures live in.
const INFO_END: u64 = MULTIBOOT_INFO + PAGE_SIZE;
/// Most modules the module list holds.
pub const MAX_MODULES: usize = 16;
/// The name written as `boot_loader_name`.
pub const LOADER_NAME: &[u8] = b"Keel\0";

/// Flag bit 0: modules page-aligned.
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Flag bit 1: memory information.
const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Flag bit 16: the header's address fields are valid (the a.out kludge).
const FLAG_ADDRESSES: u32 = 1 << 16;
/// The requirement bits Keel meets.
const SUPPORTED_REQUIREMENTS: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO;

/// `flags` bits of the information structure Keel fills in.
const INFO_MEM: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODS: u32 = 1 << 3;
const INFO_MMAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

/// Why a Multiboot kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multiboot1Error {
    /// No Multiboot header in the first 8 KiB.
    NoHeader,
    /// A magic was found but its checksum is wrong.
    BadChecksum {
        /// The header's file offset.
        offset: usize,
    },
    /// The header asks for something Keel does not provide (flag bits 0–15).
    UnsupportedRequirement {
        /// The requirement bits Keel does not meet.
        bits: u32,
    },
    /// The a.out kludge's address fields are inconsistent.
    BadAddresses {
        /// What is wrong.
        why: &'static str,
    },
    /// The image is not an ELF32 i386 executable and sets no address fields.
    Elf(PvhError),
    /// The ELF image is not 32-bit.
    NotElf32,
    /// A segment's file size exceeds its memory size.
    BadSegment {
        /// Physical address.
        paddr: u64,
    },
    /// A segment would overwrite a boot structure Keel writes below 1 MiB.
    SegmentOverBootData {
        /// Physical address.
        paddr: u64,
        /// What it overlaps.
        what: &'static str,
    },
    /// A segment reaches past the end of RAM.
    SegmentOutsideRam {
        /// Physical address.
        paddr: u64,
        /// Size in memory.
        memsz: u64,
        /// End of RAM.
        ram_end: u64,
    },
    /// Two segments overlap.
    SegmentsOverlap {
        /// The first segment's address.
        first: u64,
        /// The second segment's address.
        second: u64,
    },
    /// Nothing to load.
    NoSegments,
    /// The entry point lies in no loaded segment.
    EntryOutsideImage {
        /// The entry point.
        entry: u32,
    },
    /// More modules than the module list holds.
    TooManyModules {
        /// Modules given.
        count: usize,
    },
    /// The module strings do not fit their area.
    ModuleStringsTooLong,
    /// A module is empty.
    ModuleEmpty {
        /// Its index.
        index: usize,
    },
    /// The modules do not fit between the kernel and the end of RAM.
    ModulesTooLarge {
        /// Bytes the modules need.
        size: u64,
        /// Bytes between the kernel's end and the end of RAM.
        room: u64,
    },
    /// The VM's memory size is not one the layout supports.
    Layout(LayoutError),
    /// The command line is too long or holds a NUL.
    Cmdline(BootFilesError),
    /// Writing guest memory failed.
    Memory(MemoryError),
}

impl fmt::Display for Multiboot1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Multiboot1Error::NoHeader => {
                f.write_str("no Multiboot header (magic 0x1badb002) in the image's first 8 KiB")
            }
            Multiboot1Error::BadChecksum { offset } => write!(
                f,
                "the Multiboot header at offset {offset:#x} has a wrong checksum: the image is corrupt"
            ),
            Multiboot1Error::UnsupportedRequirement { bits } => write!(
                f,
                "the Multiboot header requires features {bits:#x} (flag bits 0-15) that Keel does \
                 not provide (bit 2: a video mode table)"
            ),
            Multiboot1Error::BadAddresses { why } => {
                write!(f, "the Multiboot header's address fields are wrong: {why}")
            }
            Multiboot1Error::Elf(e) => write!(f, "the Multiboot kernel's ELF image: {e}"),
            Multiboot1Error::NotElf32 => f.write_str(
                "the Multiboot kernel is ELF64 and sets no address fields: a Multiboot (v1) \
                 kernel is ELF32 or uses the header's addresses",
            ),
            Multiboot1Error::BadSegment { paddr } => write!(
                f,
                "the segment at {paddr:#x} has more bytes in the file than in memory: the image is corrupt"
            ),
            Multiboot1Error::SegmentOverBootData { paddr, what } => write!(
                f,
                "the segment at {paddr:#x} overlaps {what}: link the kernel elsewhere (at 1 MiB \
                 or above is always free)"
            ),
            Multiboot1Error::SegmentOutsideRam {
                paddr,
                memsz,
                ram_end,
            } => write!(
                f,
                "the segment at {paddr:#x} ({memsz} bytes) reaches past the end of RAM at \
                 {ram_end:#x}: give the VM more memory"
            ),
            Multiboot1Error::SegmentsOverlap { first, second } => write!(
                f,
                "the segments at {first:#x} and {second:#x} overlap: the image is corrupt"
            ),
            Multiboot1Error::NoSegments => f.write_str("the Multiboot kernel has nothing to load"),
            Multiboot1Error::EntryOutsideImage { entry } => write!(
                f,
                "the entry point {entry:#x} lies outside the loaded image: the image is corrupt"
            ),
            Multiboot1Error::TooManyModules { count } => write!(
                f,
                "{count} modules given; a Multiboot guest takes at most {MAX_MODULES}"
            ),
            Multiboot1Error::ModuleStringsTooLong => {
                f.write_str("the module names are too long for the boot information page")
            }
            Multiboot1Error::ModuleEmpty { index } => {
                write!(f, "module {index} (the initrd) is empty")
            }
            Multiboot1Error::ModulesTooLarge { size, room } => write!(
                f,
                "the modules take {size} bytes but only {room} bytes are free above the kernel: \
                 give the VM more memory"
            ),
            Multiboot1Error::Layout(e) => e.fmt(f),
            Multiboot1Error::Cmdline(e) => e.fmt(f),
            Multiboot1Error::Memory(e) => write!(f, "writing guest memory: {e}"),
        }
    }
}

impl core::error::Error for Multiboot1Error {}

/// A Multiboot header found in an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its file offset.
    pub offset: usize,
    /// Its flags.
    pub flags: u32,
    /// The address fields, when flag bit 16 is set: `header_addr, load_addr, load_end_addr,
    /// bss_end_addr, entry_addr`.
    pub addresses: Option<[u32; 5]>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Whether `image` has a Multiboot header with a valid checksum (what detection by content
/// asks; [`find_header`] says why not).
pub fn is_multiboot1(image: &[u8]) -> bool {
    find_header(image).is_ok()
}

/// Finds and checks the Multiboot header in the first [`HEADER_SEARCH`] bytes. A magic with a
/// bad checksum is skipped if a valid header follows, and reported if none does.
pub fn find_header(image: &[u8]) -> Result<Header, Multiboot1Error> {
    let window = &image[..image.len().min(HEADER_SEARCH)];
    let mut bad_checksum = None;
    for offset in (0..window.len().saturating_sub(11)).step_by(4) {
        if u32_at(window, offset) != Some(HEADER_MAGIC) {
            continue;
        }
        let (Some(flags), Some(checksum)) =
            (u32_at(window, offset + 4), u32_at(window, offset + 8))
        else {
            continue;
        };
        if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) != 0 {
            bad_checksum.get_or_insert(offset);
            continue;
        }
        let addresses = if flags & FLAG_ADDRESSES != 0 {
            let mut fields = [0u32; 5];
            for (i, field) in fields.iter_mut().enumerate() {
                // The fields may lie past the search window but must lie in the image.
                *field =
                    u32_at(image, offset + 12 + 4 * i).ok_or(Multiboot1Error::BadAddresses {
                        why: "the image ends inside them",
                    })?;
            }
            Some(fields)
        } else {
            None
        };
        return Ok(Header {
            offset,
            flags,
            addresses,
        });
    }
    Err(bad_checksum.map_or(Multiboot1Error::NoHeader, |offset| {
        Multiboot1Error::BadChecksum { offset }
    }))
}

/// One piece of the image to place: `filesz` bytes from `file_offset`, then zeros up to
/// `memsz`, at `paddr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    paddr: u64,
    file_offset: u64,
    filesz: u64,
    memsz: u64,
}

/// The segments and entry point the a.out kludge describes.
fn kludge_segments(
    image: &[u8],
    header: &Header,
    [
        header_addr,
        load_addr,
        load_end_addr,
        bss_end_addr,
        entry_addr,
    ]: [u32; 5],
) -> Result<(Vec<Segment>, u32), Multiboot1Error> {
    let bad = |why| Multiboot1Error::BadAddresses { why };
    if load_addr > header_addr {
        return Err(bad("load_addr lies above header_addr"));
    }
    let file_offset = (header.offset as u64)
        .checked_sub(u64::from(header_addr - load_addr))
        .ok_or(bad(
            "header_addr - load_addr is larger than the header's file offset",
        ))?;
    let file_len = image.len() as u64 - file_offset;
    let filesz = if load_end_addr == 0 {
        file_len
    } else {
        u64::from(
            load_end_addr
                .checked_sub(load_addr)
                .ok_or(bad("load_end_addr lies below load_addr"))?,
        )
    };
    if filesz > file_len {
        return Err(bad("load_end_addr reaches past the end of the file"));
    }
    let memsz = if bss_end_addr == 0 {
        filesz
    } else {
        let end = u64::from(bss_end_addr);
        if end < u64::from(load_addr) + filesz {
            return Err(bad("bss_end_addr lies below load_end_addr"));
        }
        end - u64::from(load_addr)
    };
    Ok((
        alloc::vec![Segment {
            paddr: u64::from(load_addr),
            file_offset,
            filesz,
            memsz,
        }],
        entry_addr,
    ))
}

/// The `PT_LOAD` segments and entry point of an ELF32 image.
fn elf_segments(image: &[u8]) -> Result<(Vec<Segment>, u32), Multiboot1Error> {
    let headers = pvh::program_headers(image).map_err(Multiboot1Error::Elf)?;
    if image.get(4) != Some(&1) {
        return Err(Multiboot1Error::NotElf32);
    }
    // program_headers checked the 52-byte ELF32 header is there.
    let entry = u32_at(image, 0x18).unwrap_or(0);
    let mut segments = Vec::new();
    for ph in headers.iter().filter(|ph| ph.kind == 1 && ph.memsz > 0) {
        if ph.filesz > ph.memsz {
            return Err(Multiboot1Error::BadSegment { paddr: ph.paddr });
        }
        let end = ph.offset.checked_add(ph.filesz);
        if end.is_none_or(|end| end > image.len() as u64) {
            return Err(Multiboot1Error::Elf(PvhError::Truncated {
                what: "segment",
            }));
        }
        segments.push(Segment {
            paddr: ph.paddr,
            file_offset: ph.offset,
            filesz: ph.filesz,
            memsz: ph.memsz,
        });
    }
    Ok((segments, entry))
}

/// The guest-physical ranges Keel's boot data occupies, which segments must not overlap.
pub const RESERVED: [(u64, u64, &str); 3] = [
    (
        MULTIBOOT_INFO,
        INFO_END,
        "the Multiboot information page at 0x6000",
    ),
    (
        CMDLINE,
        CMDLINE + CMDLINE_MAX,
        "the command line area at 0x20000",
    ),
    (
        EBDA_START,
        HIGH_MEMORY_START,
        "the EBDA and BIOS area (ACPI tables) at 0x9fc00",
    ),
];

/// Checks segments against RAM and one another and the entry against the segments; returns
/// the image's lowest and one-past-highest addresses.
fn check_segments(
    segments: &mut [Segment],
    entry: u32,
    ram_end: u64,
) -> Result<(u64, u64), Multiboot1Error> {
    if segments.is_empty() {
        return Err(Multiboot1Error::NoSegments);
    }
    segments.sort_by_key(|s| s.paddr);
    for s in segments.iter() {
        if s.paddr.checked_add(s.memsz).is_none_or(|end| end > ram_end) {
            return Err(Multiboot1Error::SegmentOutsideRam {
                paddr: s.paddr,
                memsz: s.memsz,
                ram_end,
            });
        }
    }
    for s in segments.iter() {
        if let Some(&(_, _, what)) = RESERVED
            .iter()
            .find(|&&(start, end, _)| s.paddr < end && start < s.paddr + s.memsz)
        {
            return Err(Multiboot1Error::SegmentOverBootData {
                paddr: s.paddr,
                what,
            });
        }
    }
    for pair in segments.windows(2) {
        if pair[0].paddr + pair[0].memsz > pair[1].paddr {
            return Err(Multiboot1Error::SegmentsOverlap {
                first: pair[0].paddr,
                second: pair[1].paddr,
            });
        }
    }
    let entry64 = u64::from(entry);
    if !segments
        .iter()
        .any(|s| (s.paddr..s.paddr + s.memsz).contains(&entry64))
    {
        return Err(Multiboot1Error::EntryOutsideImage { entry });
    }
    let low = segments[0].paddr;
    let high = segments
        .iter()
        .map(|s| s.paddr + s.memsz)
        .max()
        .unwrap_or(low);
    Ok((low, high))
}

/// A module to hand to the kernel: its bytes and its string (kvm-unit-tests ignores the
/// string; GRUB passes the file name and arguments).
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    /// The contents.
    pub data: &'a [u8],
    /// The module's string (no NUL inside).
    pub string: &'a str,
}

/// Where [`load`] put things, and how the vCPU starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Multiboot1Boot {
    /// The vCPU's start state.
    pub start: StartMode,
    /// The entry point.
    pub entry: u32,
    /// Lowest and one past the highest address the image occupies.
    pub kernel_range: (u64, u64),
    /// The information structure.
    pub info: u64,
    /// Each module's start and end (exclusive).
    pub modules: Vec<(u64, u64)>,
}

/// Loads the Multiboot kernel `image` into `memory` with `modules` and `cmdline`, and returns
/// the start state (see the module docs).
pub fn load(
    memory: &GuestMemory,
    image: &[u8],
    modules: &[Module<'_>],
    cmdline: &str,
) -> Result<Multiboot1Boot, Multiboot1Error> {
    let layout = Layout::new(memory.size()).map_err(Multiboot1Error::Layout)?;
    let header = find_header(image)?;
    let unsupported = header.flags & 0xFFFF & !SUPPORTED_REQUIREMENTS;
    if unsupported != 0 {
        return Err(Multiboot1Error::UnsupportedRequirement { bits: unsupported });
    }
    let (mut segments, entry) = match header.addresses {
        Some(addresses) => kludge_segments(image, &header, addresses)?,
        None => elf_segments(image)?,
    };
    let kernel_range = check_segments(&mut segments, entry, layout.ram_end())?;
    let cmdline_len = check_cmdline(cmdline, None).map_err(Multiboot1Error::Cmdline)?;

    // Place the modules top-down, the first highest, each page-aligned.
    if modules.len() > MAX_MODULES {
        return Err(Multiboot1Error::TooManyModules {
            count: modules.len(),
        });
    }
    let strings_len: u64 = modules.iter().map(|m| m.string.len() as u64 + 1).sum();
    if strings_len > INFO_END - MOD_STRINGS_AT || modules.iter().any(|m| m.string.contains('\0')) {
        return Err(Multiboot1Error::ModuleStringsTooLong);
    }
    let lowest = kernel_range.1.next_multiple_of(PAGE_SIZE);
    let mut limit = layout.ram_end();
    let mut placed = Vec::with_capacity(modules.len());
    for (index, module) in modules.iter().enumerate() {
        if module.data.is_empty() {
            return Err(Multiboot1Error::ModuleEmpty { index });
        }
        let size = module.data.len() as u64;
        let at = place_initrd(size, lowest, limit).ok_or_else(|| {
            let total: u64 = modules
                .iter()
                .map(|m| (m.data.len() as u64).next_multiple_of(PAGE_SIZE))
                .sum();
            Multiboot1Error::ModulesTooLarge {
                size: total,
                room: layout.ram_end().saturating_sub(lowest),
            }
        })?;
        placed.push((at, at + size));
        limit = at;
    }

    // Everything is checked: write.
    let mem = Multiboot1Error::Memory;
    for s in &segments {
        // check_segments and elf_segments/kludge_segments bounded these within the image.
        let from = s.file_offset as usize;
        memory
            .write(s.paddr, &image[from..from + s.filesz as usize])
            .map_err(mem)?;
        memory
            .fill(s.paddr + s.filesz, s.memsz - s.filesz, 0)
            .map_err(mem)?;
    }
    memory.write(CMDLINE, cmdline.as_bytes()).map_err(mem)?;
    memory.write_u8(CMDLINE + cmdline_len, 0).map_err(mem)?;
    memory.fill(MULTIBOOT_INFO, PAGE_SIZE, 0).map_err(mem)?;
    let mut string_at = MOD_STRINGS_AT;
    for (i, (module, &(start, end))) in modules.iter().zip(&placed).enumerate() {
        memory.write(start, module.data).map_err(mem)?;
        memory
            .write(string_at, module.string.as_bytes())
            .map_err(mem)?;
        let entry_at = MODS_AT + 16 * i as u64;
        for (k, value) in [start, end, string_at, 0].into_iter().enumerate() {
            memory
                .write(entry_at + 4 * k as u64, &(value as u32).to_le_bytes())
                .map_err(mem)?;
        }
        string_at += module.string.len() as u64 + 1;
    }
    let e820 = layout.e820();
    for (i, range) in e820.iter().enumerate() {
        let at = MMAP_AT + 24 * i as u64;
        memory.write(at, &20u32.to_le_bytes()).map_err(mem)?;
        memory
            .write(at + 4, &range.addr.to_le_bytes())
            .map_err(mem)?;
        memory
            .write(at + 12, &range.size.to_le_bytes())
            .map_err(mem)?;
        let kind = match range.kind {
            E820Type::Ram => 1u32,
            E820Type::Reserved => 2,
        };
        memory.write(at + 20, &kind.to_le_bytes()).map_err(mem)?;
    }
    memory.write(LOADER_NAME_AT, LOADER_NAME).map_err(mem)?;
    // mem_upper: KiB of RAM from 1 MiB to the first hole (all of it here).
    let mem_lower = (e820[0].size / 1024) as u32;
    let mem_upper = ((layout.ram_end() - HIGH_MEMORY_START) / 1024) as u32;
    let mut flags = INFO_MEM | INFO_CMDLINE | INFO_MMAP | INFO_LOADER_NAME;
    if !modules.is_empty() {
        flags |= INFO_MODS;
    }
    let fields: [(u64, u32); 9] = [
        (0, flags),
        (4, mem_lower),
        (8, mem_upper),
        (16, CMDLINE as u32),
        (20, modules.len() as u32),
        (24, MODS_AT as u32),
        (44, (24 * e820.len()) as u32),
        (48, MMAP_AT as u32),
        (64, LOADER_NAME_AT as u32),
    ];
    for (offset, value) in fields {
        memory
            .write(MULTIBOOT_INFO + offset, &value.to_le_bytes())
            .map_err(mem)?;
    }
    const _: () = assert!(INFO_SIZE <= MMAP_AT - MULTIBOOT_INFO);
    Ok(Multiboot1Boot {
        start: StartMode::Multiboot {
            entry,
            info: MULTIBOOT_INFO as u32,
        },
        entry,
        kernel_range,
        info: MULTIBOOT_INFO,
        modules: placed,
    })
}

#[cfg(test)]
mod tests;
