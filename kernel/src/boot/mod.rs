//! Boot information, normalized from whichever protocol started the kernel.
//!
//! `entry` holds the assembly entries; `multiboot2` and `pvh` parse their protocol's structures
//! into one [`BootInfo`], which the rest of the kernel uses without caring how it was booted.
//! Everything is copied into fixed-capacity storage, so the loader's structures can be
//! overwritten once parsing is done (boot modules' *contents* stay where the loader put them
//! and are reserved by the frame allocator).

#[cfg(target_os = "none")]
pub mod entry;
pub mod multiboot2;
pub mod pvh;

use core::fmt;

/// Maximum memory-map entries kept (firmware maps on big servers have ~100).
pub const MAX_REGIONS: usize = 128;
/// Maximum boot modules kept.
pub const MAX_MODULES: usize = 16;
/// Maximum length of a module name, in bytes.
pub const MAX_MODULE_NAME: usize = 64;
/// Maximum kernel command line kept, in bytes.
pub const MAX_CMDLINE: usize = 512;

/// How the kernel was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPath {
    /// PVH direct boot (QEMU `-kernel`, cloud-hypervisor, Firecracker).
    Pvh,
    /// GRUB with Multiboot2 on legacy BIOS.
    Multiboot2Bios,
    /// GRUB with Multiboot2 on UEFI (GRUB left boot services).
    Multiboot2Uefi,
}

impl fmt::Display for BootPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootPath::Pvh => "PVH",
            BootPath::Multiboot2Bios => "Multiboot2 via BIOS",
            BootPath::Multiboot2Uefi => "Multiboot2 via UEFI",
        })
    }
}

/// What a physical memory range holds, from the firmware's map (E820 numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Free RAM the kernel may use.
    Usable,
    /// Reserved by firmware or hardware.
    Reserved,
    /// ACPI tables; reclaimable once parsed (Keel keeps them).
    AcpiReclaimable,
    /// ACPI non-volatile storage; never touched.
    AcpiNvs,
    /// Defective RAM.
    Defective,
}

impl MemoryKind {
    /// Maps an E820 / Multiboot2 / PVH type number (they share the numbering).
    pub fn from_e820(kind: u32) -> MemoryKind {
        match kind {
            1 => MemoryKind::Usable,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Defective,
            _ => MemoryKind::Reserved,
        }
    }
}

/// One range of the physical memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the range holds.
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// A file the boot loader loaded next to the kernel (a guest payload, later a config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootModule {
    /// The module's name: its command line from the loader, or `module<N>`.
    pub name: heapless::String<MAX_MODULE_NAME>,
    /// Physical address of the first byte.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// How a framebuffer's pixels are coded (Multiboot2 framebuffer tag, `framebuffer_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramebufferKind {
    /// Palette indices (type 0): not drawn on.
    Indexed,
    /// Direct colour (type 1): each channel's bit position and size.
    Rgb {
        /// Red: (position, size).
        red: (u8, u8),
        /// Green: (position, size).
        green: (u8, u8),
        /// Blue: (position, size).
        blue: (u8, u8),
    },
    /// The VGA text buffer (type 2): `width`×`height` characters, two bytes each.
    EgaText,
}

/// The display the loader set up (Multiboot2 tag 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    /// Physical address of the first pixel (or character).
    pub address: u64,
    /// Bytes per line.
    pub pitch: u32,
    /// Pixels (characters for text) per line.
    pub width: u32,
    /// Lines (rows for text).
    pub height: u32,
    /// Bits per pixel (16 for text).
    pub bpp: u8,
    /// Pixel coding.
    pub kind: FramebufferKind,
}

/// Everything the kernel needs from the boot loader, in one protocol-neutral form.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// Which path booted the kernel.
    pub path: BootPath,
    /// The physical memory map, sorted by start address.
    pub memory: heapless::Vec<MemoryRegion, MAX_REGIONS>,
    /// The kernel command line (empty if none).
    pub cmdline: heapless::String<MAX_CMDLINE>,
    /// Physical address of the ACPI RSDP, when the loader passed one.
    pub rsdp: Option<u64>,
    /// A copy of the RSDP structure when the loader passed a copy rather than an address
    /// (Multiboot2 tags 14/15 carry the structure itself).
    pub rsdp_copy: Option<heapless::Vec<u8, 64>>,
    /// Physical address of the EFI system table (Multiboot2 tag 12 on UEFI boots): its
    /// configuration table points at the SMBIOS entry points there.
    pub efi_system_table: Option<u64>,
    /// Boot modules, in loader order.
    pub modules: heapless::Vec<BootModule, MAX_MODULES>,
    /// The display the loader set up, when it said (Multiboot2 only).
    pub framebuffer: Option<Framebuffer>,
    /// Problems met while parsing that did not stop boot (truncated lists and the like).
    pub warnings: heapless::Vec<&'static str, 8>,
}

impl BootInfo {
    /// An empty boot info for the given path.
    pub fn new(path: BootPath) -> BootInfo {
        BootInfo {
            path,
            memory: heapless::Vec::new(),
            cmdline: heapless::String::new(),
            rsdp: None,
            rsdp_copy: None,
            efi_system_table: None,
            modules: heapless::Vec::new(),
            framebuffer: None,
            warnings: heapless::Vec::new(),
        }
    }

    /// Adds a memory region, ignoring empty ones and noting overflow.
    pub fn push_region(&mut self, start: u64, len: u64, kind: u32) {
        if len == 0 {
            return;
        }
        let region = MemoryRegion {
            start,
            len,
            kind: MemoryKind::from_e820(kind),
        };
        if self.memory.push(region).is_err() {
            self.warn("memory map has more entries than Keel keeps; the rest is ignored");
        }
    }

    /// Sorts the memory map by address (loaders usually do, but nothing promises it).
    pub fn sort_memory(&mut self) {
        self.memory.sort_unstable_by_key(|r| r.start);
    }

    /// Records a non-fatal parsing problem.
    pub fn warn(&mut self, message: &'static str) {
        if !self.warnings.contains(&message) {
            let _ = self.warnings.push(message);
        }
    }

    /// Sets the command line from raw bytes (stops at NUL, drops invalid UTF-8 tails).
    pub fn set_cmdline(&mut self, raw: &[u8]) {
        let text = c_str_prefix(raw);
        self.cmdline.clear();
        for ch in text.chars() {
            if self.cmdline.push(ch).is_err() {
                self.warn("kernel command line is longer than Keel keeps; it was cut");
                break;
            }
        }
    }

    /// Adds a module whose name comes from raw bytes; an empty name becomes `module<N>`.
    pub fn push_module(&mut self, raw_name: &[u8], start: u64, size: u64) {
        let mut name = heapless::String::new();
        for ch in c_str_prefix(raw_name).trim().chars() {
            if name.push(ch).is_err() {
                break;
            }
        }
        if name.is_empty() {
            use core::fmt::Write;
            let _ = write!(name, "module{}", self.modules.len());
        }
        if self.modules.push(BootModule { name, start, size }).is_err() {
            self.warn("more boot modules than Keel keeps; the rest is ignored");
        }
    }

    /// Total bytes of usable RAM in the map.
    pub fn usable_bytes(&self) -> u64 {
        self.memory
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .map(|r| r.len)
            .sum()
    }

    /// The value of `key=value` on the command line, if present.
    pub fn cmdline_value(&self, key: &str) -> Option<&str> {
        self.cmdline.split_ascii_whitespace().find_map(|arg| {
            let (k, v) = arg.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}

/// The UTF-8 text before the first NUL (or the whole slice); invalid UTF-8 ends the text.
fn c_str_prefix(raw: &[u8]) -> &str {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    match core::str::from_utf8(&raw[..end]) {
        Ok(s) => s,
        // The valid prefix is still useful; `valid_up_to` is a char boundary.
        Err(e) => core::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_values_are_found_by_key() {
        let mut info = BootInfo::new(BootPath::Pvh);
        info.set_cmdline(b"console=ttyS0 keel.test-crash=page-fault quiet\0garbage");
        assert_eq!(
            info.cmdline.as_str(),
            "console=ttyS0 keel.test-crash=page-fault quiet"
        );
        assert_eq!(info.cmdline_value("keel.test-crash"), Some("page-fault"));
        assert_eq!(info.cmdline_value("quiet"), None);
        assert_eq!(info.cmdline_value("missing"), None);
    }

    #[test]
    fn invalid_utf8_keeps_the_valid_prefix() {
        let mut info = BootInfo::new(BootPath::Pvh);
        info.set_cmdline(b"abc\xff\xfedef");
        assert_eq!(info.cmdline.as_str(), "abc");
    }

    #[test]
    fn unnamed_modules_get_numbered_names() {
        let mut info = BootInfo::new(BootPath::Multiboot2Bios);
        info.push_module(b"hello.bin\0", 0x100000, 177);
        info.push_module(b"\0", 0x200000, 10);
        assert_eq!(info.modules[0].name.as_str(), "hello.bin");
        assert_eq!(info.modules[1].name.as_str(), "module1");
    }

    #[test]
    fn region_overflow_is_a_warning_not_a_crash() {
        let mut info = BootInfo::new(BootPath::Pvh);
        for i in 0..(MAX_REGIONS as u64 + 5) {
            info.push_region(i * 0x1000, 0x1000, 1);
        }
        assert_eq!(info.memory.len(), MAX_REGIONS);
        assert_eq!(info.warnings.len(), 1);
        assert_eq!(info.usable_bytes(), MAX_REGIONS as u64 * 0x1000);
    }
}
