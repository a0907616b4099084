//! Linux bzImage loading through the x86 boot protocol's 64-bit entry
//! (Documentation/arch/x86/boot.rst; zero-page layout in zero-page.rst).
//!
//! # What the loader does
//!
//! 1. [`parse_header`] validates the real-mode setup header at offset 0x1F1 of the image:
//!    `boot_flag` 0xAA55, the `HdrS` signature, protocol 2.12 or later (the first with
//!    `xloadflags`), `XLF_KERNEL_64` (the kernel has the 64-bit entry at load address +
//!    0x200), `LOADED_HIGH` (a bzImage, not a zImage), `setup_sects` (0 means 4) and
//!    `syssize` against the file length. The header is copied into a fixed-size buffer first,
//!    so no field read can run past a short image.
//! 2. [`load`] picks the load address: `pref_address` when it lies above 1 MiB, else (for a
//!    relocatable kernel only) [`KERNEL_DEFAULT_LOAD`] rounded up to `kernel_alignment`. The
//!    kernel's whole working area, `init_size` bytes from there, must fit in RAM.
//! 3. It copies the protected-mode kernel (`syssize` × 16 bytes after the setup sectors: the
//!    signature a signed kernel carries after them is not part of the kernel) to that address,
//!    the command line to [`CMDLINE`], and the initrd as high as `initrd_addr_max` and RAM
//!    allow, above the kernel's area.
//! 4. It builds the zero page at [`ZERO_PAGE`]: the setup header copied from the image (from
//!    0x1F1 to the end the header's jump instruction gives, as the protocol says), then the
//!    loader's fields: `type_of_loader` 0xFF (no assigned id), `loadflags` with `LOADED_HIGH`
//!    and `CAN_USE_HEAP`, `heap_end_ptr`, `cmd_line_ptr`, `ramdisk_image`/`ramdisk_size`, the
//!    e820 map and `acpi_rsdp_addr`.
//! 5. It writes the boot GDT and identity page tables ([`boot64`](super::boot64)) and returns
//!    [`StartMode::LongMode`] at load address + 0x200 with RSI = the zero page.
//!
//! Everything a malformed image can get wrong is a [`BzImageError`]; nothing panics. What
//! the command line, the initrd, the layout or guest memory can get wrong is a
//! [`BootFilesError`] inside it, shared with [`pvh`](super::pvh) (see
//! [`boot_files`](super::boot_files)).

use core::fmt;

use crate::memory::GuestMemory;
use crate::vcpu::StartMode;

use super::boot_files::{BootFilesError, check_cmdline, check_initrd, write_boot_files};
use super::boot64;
use super::layout::{
    BOOT_STACK_TOP, CMDLINE, HIGH_MEMORY_START, KERNEL_DEFAULT_LOAD, Layout, ZERO_PAGE,
};

/// Offsets in the image's first sector and in the zero page (`struct boot_params`).
pub mod offset {
    /// `acpi_rsdp_addr` (u64, protocol 2.14).
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    /// `e820_entries` (u8).
    pub const E820_ENTRIES: usize = 0x1E8;
    /// Start of the setup header.
    pub const SETUP_HEADER: usize = 0x1F1;
    /// `setup_sects` (u8).
    pub const SETUP_SECTS: usize = 0x1F1;
    /// `syssize` (u32, 16-byte units).
    pub const SYSSIZE: usize = 0x1F4;
    /// `boot_flag` (u16, 0xAA55).
    pub const BOOT_FLAG: usize = 0x1FE;
    /// `jump` (u16): a short jump whose displacement byte (0x201) gives the header's end.
    pub const JUMP: usize = 0x200;
    /// `header` (u32, "HdrS").
    pub const HEADER: usize = 0x202;
    /// `version` (u16).
    pub const VERSION: usize = 0x206;
    /// `type_of_loader` (u8).
    pub const TYPE_OF_LOADER: usize = 0x210;
    /// `loadflags` (u8).
    pub const LOADFLAGS: usize = 0x211;
    /// `ramdisk_image` (u32).
    pub const RAMDISK_IMAGE: usize = 0x218;
    /// `ramdisk_size` (u32).
    pub const RAMDISK_SIZE: usize = 0x21C;
    /// `heap_end_ptr` (u16).
    pub const HEAP_END_PTR: usize = 0x224;
    /// `cmd_line_ptr` (u32).
    pub const CMD_LINE_PTR: usize = 0x228;
    /// `initrd_addr_max` (u32).
    pub const INITRD_ADDR_MAX: usize = 0x22C;
    /// `kernel_alignment` (u32).
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    /// `relocatable_kernel` (u8).
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    /// `xloadflags` (u16).
    pub const XLOADFLAGS: usize = 0x236;
    /// `cmdline_size` (u32).
    pub const CMDLINE_SIZE: usize = 0x238;
    /// `pref_address` (u64).
    pub const PREF_ADDRESS: usize = 0x258;
    /// `init_size` (u32).
    pub const INIT_SIZE: usize = 0x260;
    /// The e820 table (128 entries of 20 bytes).
    pub const E820_TABLE: usize = 0x2D0;
    /// End of the setup header's room in `boot_params`.
    pub const SETUP_HEADER_END: usize = 0x290;
}

/// `boot_flag` value.
pub const BOOT_FLAG: u16 = 0xAA55;
/// `header` value: "HdrS".
pub const HDRS: u32 = u32::from_le_bytes(*b"HdrS");
/// Oldest boot protocol Keel loads: 2.12 (Linux 3.8), the first with `xloadflags`.
pub const MIN_PROTOCOL: u16 = 0x020C;
/// `loadflags`: the protected-mode code is loaded at 0x100000 or above (a bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags`: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags`: the kernel has the 64-bit entry point at load address + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `type_of_loader` for a boot loader without an assigned id.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xFF;
/// `heap_end_ptr`: the end of the setup heap relative to the real-mode code, minus 0x200.
/// Only the 16-bit setup code uses it, which the 64-bit entry skips; set as the protocol asks.
pub const HEAP_END_PTR: u16 = 0xFE00;
/// Offset of the 64-bit entry point from the load address.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// Image bytes the header parser needs (through `init_size`).
pub const MIN_IMAGE_LEN: usize = offset::INIT_SIZE + 4;
/// Size of the zero page.
pub const ZERO_PAGE_SIZE: usize = 4096;
/// Entries the zero page's e820 table holds.
pub const E820_MAX_ENTRIES: usize = 128;

const SECTOR: usize = 512;

/// Why a bzImage could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BzImageError {
    /// The image ends before a part its header describes.
    Truncated {
        /// Image length in bytes.
        len: u64,
        /// Bytes the header says there are.
        needed: u64,
    },
    /// `boot_flag` is not 0xAA55.
    BadBootFlag {
        /// The value found.
        found: u16,
    },
    /// The `HdrS` signature is missing.
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// The boot protocol is older than 2.12.
    ProtocolTooOld {
        /// The `version` field (major in the high byte).
        version: u16,
    },
    /// `XLF_KERNEL_64` is clear: no 64-bit entry point.
    No64BitEntry,
    /// `LOADED_HIGH` is clear: a zImage, which loads below 1 MiB.
    NotBzImage,
    /// `syssize` is 0.
    EmptyKernel,
    /// The kernel is not relocatable and names no load address above 1 MiB.
    NotRelocatable {
        /// The `pref_address` field.
        pref_address: u64,
    },
    /// `kernel_alignment` is not a power of two.
    BadAlignment {
        /// The `kernel_alignment` field.
        alignment: u32,
    },
    /// The kernel's working area (`init_size` bytes from the load address) does not fit in RAM.
    KernelDoesNotFit {
        /// Load address.
        load_addr: u64,
        /// Bytes the kernel needs from there.
        size: u64,
        /// End of RAM.
        ram_end: u64,
    },
    /// The command line (held to the kernel's `cmdline_size`) or the initrd (placed at or
    /// below `initrd_addr_max`) is wrong, the VM's memory size is not one the layout supports,
    /// or writing guest memory failed.
    BootFiles(BootFilesError),
}

impl fmt::Display for BzImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BzImageError::Truncated { len, needed } => write!(
                f,
                "the kernel image is {len} bytes but its header describes {needed}: the file is \
                 truncated or not a Linux bzImage"
            ),
            BzImageError::BadBootFlag { found } => write!(
                f,
                "the kernel image has boot flag {found:#06x}, not 0xaa55: not a Linux bzImage"
            ),
            BzImageError::BadMagic { found } => write!(
                f,
                "the kernel image has no \"HdrS\" setup header (found {found:#010x}): not a \
                 Linux bzImage, or a kernel older than 2.0"
            ),
            BzImageError::ProtocolTooOld { version } => write!(
                f,
                "the kernel speaks boot protocol {}.{:02}, older than 2.12: use Linux 3.8 or later",
                version >> 8,
                version & 0xFF
            ),
            BzImageError::No64BitEntry => f.write_str(
                "the kernel has no 64-bit entry point (XLF_KERNEL_64 unset): use an x86_64 kernel",
            ),
            BzImageError::NotBzImage => {
                f.write_str("the kernel is a zImage (LOADED_HIGH unset): rebuild it as a bzImage")
            }
            BzImageError::EmptyKernel => {
                f.write_str("the kernel image has no protected-mode code (syssize 0)")
            }
            BzImageError::NotRelocatable { pref_address } => write!(
                f,
                "the kernel is not relocatable and asks to be loaded at {pref_address:#x}, below \
                 1 MiB: build it with CONFIG_RELOCATABLE"
            ),
            BzImageError::BadAlignment { alignment } => write!(
                f,
                "the kernel's alignment {alignment:#x} is not a power of two: the image is corrupt"
            ),
            BzImageError::KernelDoesNotFit {
                load_addr,
                size,
                ram_end,
            } => write!(
                f,
                "the kernel needs {} KiB from {load_addr:#x} but RAM ends at {ram_end:#x}: give \
                 the VM more memory",
                size / 1024
            ),
            BzImageError::BootFiles(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for BzImageError {}

super::boot_files::boot_files_error_conversions!(BzImageError);

/// The setup-header fields the loader uses, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version (major in the high byte).
    pub version: u16,
    /// Setup sectors after the boot sector (a 0 in the image already replaced by 4).
    pub setup_sects: u8,
    /// Protected-mode code size in bytes (`syssize` × 16).
    pub kernel_size: u64,
    /// `loadflags` as in the image.
    pub loadflags: u8,
    /// `xloadflags`.
    pub xloadflags: u16,
    /// Highest address the initrd may occupy (`initrd_addr_max`, inclusive).
    pub initrd_addr_max: u32,
    /// `kernel_alignment`.
    pub kernel_alignment: u32,
    /// `relocatable_kernel`.
    pub relocatable: bool,
    /// Longest command line, without its NUL (`cmdline_size`).
    pub cmdline_size: u32,
    /// `pref_address`.
    pub pref_address: u64,
    /// Bytes the kernel needs from its load address while it decompresses (`init_size`).
    pub init_size: u32,
    /// Offset one past the header's last byte in the image (0x202 + the jump's displacement).
    pub header_end: usize,
}

impl SetupHeader {
    /// Offset of the protected-mode kernel in the image.
    pub fn kernel_offset(&self) -> u64 {
        (u64::from(self.setup_sects) + 1) * SECTOR as u64
    }
}

/// The first [`offset::SETUP_HEADER_END`] bytes of the image, zero-padded.
fn header_bytes(image: &[u8]) -> [u8; offset::SETUP_HEADER_END] {
    let mut bytes = [0u8; offset::SETUP_HEADER_END];
    let n = image.len().min(bytes.len());
    bytes[..n].copy_from_slice(&image[..n]);
    bytes
}

fn u16_at(bytes: &[u8; offset::SETUP_HEADER_END], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8; offset::SETUP_HEADER_END], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8; offset::SETUP_HEADER_END], at: usize) -> u64 {
    u64::from(u32_at(bytes, at)) | (u64::from(u32_at(bytes, at + 4)) << 32)
}

/// Validates the setup header of `image` (see the module docs).
pub fn parse_header(image: &[u8]) -> Result<SetupHeader, BzImageError> {
    parse_header_inner(image)
}

/// Whether `image` claims to be a Linux kernel: the `HdrS` signature at 0x202. (It may still
/// fail [`parse_header`]'s checks; this only picks the loader.)
pub fn is_bzimage(image: &[u8]) -> bool {
    image
        .get(0x202..0x206)
        .is_some_and(|magic| magic == b"HdrS")
}

fn parse_header_inner(image: &[u8]) -> Result<SetupHeader, BzImageError> {
    let len = image.len() as u64;
    if image.len() < MIN_IMAGE_LEN {
        return Err(BzImageError::Truncated {
            len,
            needed: MIN_IMAGE_LEN as u64,
        });
    }
    let b = header_bytes(image);
    let boot_flag = u16_at(&b, offset::BOOT_FLAG);
    if boot_flag != BOOT_FLAG {
        return Err(BzImageError::BadBootFlag { found: boot_flag });
    }
    let magic = u32_at(&b, offset::HEADER);
    if magic != HDRS {
        return Err(BzImageError::BadMagic { found: magic });
    }
    let version = u16_at(&b, offset::VERSION);
    if version < MIN_PROTOCOL {
        return Err(BzImageError::ProtocolTooOld { version });
    }
    let xloadflags = u16_at(&b, offset::XLOADFLAGS);
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BzImageError::No64BitEntry);
    }
    let loadflags = b[offset::LOADFLAGS];
    if loadflags & LOADED_HIGH == 0 {
        return Err(BzImageError::NotBzImage);
    }
    let setup_sects = match b[offset::SETUP_SECTS] {
        0 => 4,
        n => n,
    };
    let kernel_size = u64::from(u32_at(&b, offset::SYSSIZE)) * 16;
    if kernel_size == 0 {
        return Err(BzImageError::EmptyKernel);
    }
    let header_end = (offset::JUMP + 2 + usize::from(b[offset::JUMP + 1]))
        .clamp(MIN_IMAGE_LEN, offset::SETUP_HEADER_END);
    let header = SetupHeader {
        version,
        setup_sects,
        kernel_size,
        loadflags,
        xloadflags,
        initrd_addr_max: u32_at(&b, offset::INITRD_ADDR_MAX),
        kernel_alignment: u32_at(&b, offset::KERNEL_ALIGNMENT),
        relocatable: b[offset::RELOCATABLE_KERNEL] != 0,
        cmdline_size: u32_at(&b, offset::CMDLINE_SIZE),
        pref_address: u64_at(&b, offset::PREF_ADDRESS),
        init_size: u32_at(&b, offset::INIT_SIZE),
        header_end,
    };
    let needed = header.kernel_offset() + kernel_size;
    if needed > len {
        return Err(BzImageError::Truncated { len, needed });
    }
    Ok(header)
}

/// Where [`load`] put things, and how the vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxBoot {
    /// The vCPU's start state: 64-bit mode at the kernel's 64-bit entry.
    pub start: StartMode,
    /// The parsed setup header.
    pub header: SetupHeader,
    /// Where the protected-mode kernel was loaded.
    pub kernel_addr: u64,
    /// End of the kernel's working area (load address + max(`init_size`, kernel size)).
    pub kernel_end: u64,
    /// The zero page.
    pub zero_page: u64,
    /// The command line and its length without the NUL.
    pub cmdline: (u64, u64),
    /// The initrd's address and size, if one was given.
    pub initrd: Option<(u64, u64)>,
}

/// Loads the bzImage `image` into `memory` with an optional `initrd` and `cmdline`, telling
/// the kernel where the ACPI RSDP is (`acpi_rsdp`, if the VM has ACPI tables), and returns
/// the start state and where everything went. See the module docs for the steps.
pub fn load(
    memory: &GuestMemory,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    acpi_rsdp: Option<u64>,
) -> Result<LinuxBoot, BzImageError> {
    let layout = Layout::new(memory.size())?;
    let header = parse_header(image)?;
    let ram_end = layout.ram_end();

    // Load address.
    let load_addr = if header.pref_address >= HIGH_MEMORY_START {
        header.pref_address
    } else if header.relocatable {
        KERNEL_DEFAULT_LOAD
    } else {
        return Err(BzImageError::NotRelocatable {
            pref_address: header.pref_address,
        });
    };
    let load_addr = if header.relocatable {
        let alignment = header.kernel_alignment.max(1);
        if !alignment.is_power_of_two() {
            return Err(BzImageError::BadAlignment {
                alignment: header.kernel_alignment,
            });
        }
        load_addr
            .checked_next_multiple_of(u64::from(alignment))
            .unwrap_or(u64::MAX)
    } else {
        load_addr
    };
    let area = u64::from(header.init_size).max(header.kernel_size);
    let kernel_end = load_addr
        .checked_add(area)
        .filter(|&end| end <= ram_end)
        .ok_or(BzImageError::KernelDoesNotFit {
            load_addr,
            size: area,
            ram_end,
        })?;

    // Command line, at most cmdline_size bytes.
    let cmdline_len = check_cmdline(cmdline, Some(u64::from(header.cmdline_size)))?;

    // Initrd placement: above the kernel's area, at or below initrd_addr_max.
    let initrd_limit = ram_end.min(u64::from(header.initrd_addr_max) + 1);
    let initrd_at = check_initrd(initrd, kernel_end, initrd_limit)?;

    // Kernel, command line, initrd.
    let kernel_offset = header.kernel_offset() as usize;
    let kernel_bytes = image
        .get(kernel_offset..kernel_offset + header.kernel_size as usize)
        .ok_or(BzImageError::Truncated {
            len: image.len() as u64,
            needed: header.kernel_offset() + header.kernel_size,
        })?;
    memory.write(load_addr, kernel_bytes)?;
    write_boot_files(memory, cmdline, initrd_at)?;

    // Zero page.
    let mut zp = [0u8; ZERO_PAGE_SIZE];
    zp[offset::SETUP_HEADER..header.header_end]
        .copy_from_slice(&header_bytes(image)[offset::SETUP_HEADER..header.header_end]);
    zp[offset::TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
    zp[offset::LOADFLAGS] = header.loadflags | LOADED_HIGH | CAN_USE_HEAP;
    put(&mut zp, offset::HEAP_END_PTR, &HEAP_END_PTR.to_le_bytes());
    put(
        &mut zp,
        offset::CMD_LINE_PTR,
        &(CMDLINE as u32).to_le_bytes(),
    );
    if let Some((addr, data)) = initrd_at {
        // Both below 3 GiB (the layout caps RAM there), so they fit the 32-bit fields.
        put(&mut zp, offset::RAMDISK_IMAGE, &(addr as u32).to_le_bytes());
        put(
            &mut zp,
            offset::RAMDISK_SIZE,
            &(data.len() as u32).to_le_bytes(),
        );
    }
    if let Some(rsdp) = acpi_rsdp {
        put(&mut zp, offset::ACPI_RSDP_ADDR, &rsdp.to_le_bytes());
    }
    let e820 = layout.e820();
    zp[offset::E820_ENTRIES] = e820.len() as u8;
    for (i, entry) in e820.iter().enumerate() {
        let at = offset::E820_TABLE + i * 20;
        put(&mut zp, at, &entry.addr.to_le_bytes());
        put(&mut zp, at + 8, &entry.size.to_le_bytes());
        put(&mut zp, at + 16, &(entry.kind as u32).to_le_bytes());
    }
    memory.write(ZERO_PAGE, &zp)?;

    let gdt = boot64::write_gdt(memory)?;
    let cr3 = boot64::write_identity_page_tables(memory)?;
    Ok(LinuxBoot {
        start: StartMode::LongMode {
            entry: load_addr + ENTRY_64_OFFSET,
            cr3,
            gdt,
            stack: BOOT_STACK_TOP,
            rsi: ZERO_PAGE,
        },
        header,
        kernel_addr: load_addr,
        kernel_end,
        zero_page: ZERO_PAGE,
        cmdline: (CMDLINE, cmdline_len),
        initrd: initrd_at.map(|(addr, data)| (addr, data.len() as u64)),
    })
}

/// Copies `bytes` into the zero page at `at` (a constant offset well inside the page).
fn put(zp: &mut [u8; ZERO_PAGE_SIZE], at: usize, bytes: &[u8]) {
    zp[at..at + bytes.len()].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests;
