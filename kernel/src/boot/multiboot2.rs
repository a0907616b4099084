//! Multiboot2 boot information (GRUB), parsed from its bytes into a [`BootInfo`].
//!
//! Layout (Multiboot2 specification §3.6): `total_size: u32, reserved: u32`, then 8-byte
//! aligned tags `type: u32, size: u32, payload`, ending with type 0. The parser never trusts a
//! size field: every read is bounds-checked against the slice, so a corrupt structure yields
//! warnings, not a fault.

use super::{BootInfo, BootPath, Framebuffer, FramebufferKind};

const TAG_END: u32 = 0;
const TAG_CMDLINE: u32 = 1;
const TAG_MODULE: u32 = 3;
const TAG_MMAP: u32 = 6;
const TAG_EFI32: u32 = 11;
const TAG_EFI64: u32 = 12;
const TAG_FRAMEBUFFER: u32 = 8;
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;
const TAG_EFI_MMAP: u32 = 17;
const TAG_EFI_BS_NOT_TERMINATED: u32 = 18;
const TAG_EFI64_IMAGE_HANDLE: u32 = 20;

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let b = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    let b = bytes.get(offset..offset.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// The total size a Multiboot2 information structure declares (its first field).
pub fn declared_size(header: &[u8; 8]) -> usize {
    u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize
}

/// Parses a Multiboot2 information structure. EFI tags mark the UEFI path.
pub fn parse(mbi: &[u8]) -> BootInfo {
    let mut info = BootInfo::new(BootPath::Multiboot2Bios);
    let total = match u32_at(mbi, 0) {
        Some(t) => (t as usize).min(mbi.len()),
        None => {
            info.warn("multiboot2 information is truncated");
            return info;
        }
    };
    let mbi = &mbi[..total];
    let mut offset = 8;
    let mut saw_end = false;
    while offset + 8 <= mbi.len() {
        let (Some(kind), Some(size)) = (u32_at(mbi, offset), u32_at(mbi, offset + 4)) else {
            break;
        };
        let size = size as usize;
        if size < 8 || offset + size > mbi.len() {
            info.warn("multiboot2 tag with an impossible size; the rest is ignored");
            break;
        }
        let tag = &mbi[offset..offset + size];
        match kind {
            TAG_END => {
                saw_end = true;
                break;
            }
            TAG_CMDLINE => info.set_cmdline(&tag[8..]),
            TAG_MODULE => match (u32_at(tag, 8), u32_at(tag, 12)) {
                (Some(start), Some(end)) if end >= start => {
                    info.push_module(&tag[16..], start.into(), (end - start).into())
                }
                _ => info.warn("multiboot2 module tag is malformed; module ignored"),
            },
            TAG_MMAP => parse_mmap(tag, &mut info),
            TAG_FRAMEBUFFER => match parse_framebuffer(tag) {
                Some(fb) => info.framebuffer = Some(fb),
                None => info.warn("multiboot2 framebuffer tag is malformed; no status screen"),
            },
            // Prefer the ACPI 2.0+ RSDP (tag 15) when both are present.
            TAG_ACPI_OLD | TAG_ACPI_NEW if info.rsdp_copy.is_none() || kind == TAG_ACPI_NEW => {
                let mut copy = heapless::Vec::new();
                let body = &tag[8..];
                let _ = copy.extend_from_slice(&body[..body.len().min(64)]);
                info.rsdp_copy = Some(copy);
            }
            TAG_EFI64 => {
                info.efi_system_table = u64_at(tag, 8).filter(|&a| a != 0);
                info.path = BootPath::Multiboot2Uefi;
            }
            TAG_EFI32 | TAG_EFI_MMAP | TAG_EFI_BS_NOT_TERMINATED | TAG_EFI64_IMAGE_HANDLE => {
                info.path = BootPath::Multiboot2Uefi
            }
            _ => {}
        }
        offset += size.next_multiple_of(8);
    }
    if !saw_end {
        info.warn("multiboot2 information has no end tag");
    }
    info.sort_memory();
    info
}

/// Tag 8 as GRUB writes it: address u64 at 8, pitch/width/height u32 at 16/20/24, bpp u8 at
/// 28, type u8 at 29, a 16-bit reserved field, then the colour info at 32 (for RGB: red
/// position and size, green, blue, one byte each).
fn parse_framebuffer(tag: &[u8]) -> Option<Framebuffer> {
    let bpp = *tag.get(28)?;
    let kind = match *tag.get(29)? {
        0 => FramebufferKind::Indexed,
        1 => {
            let c = tag.get(32..38)?;
            FramebufferKind::Rgb {
                red: (c[0], c[1]),
                green: (c[2], c[3]),
                blue: (c[4], c[5]),
            }
        }
        2 => FramebufferKind::EgaText,
        _ => return None,
    };
    Some(Framebuffer {
        address: u64_at(tag, 8)?,
        pitch: u32_at(tag, 16)?,
        width: u32_at(tag, 20)?,
        height: u32_at(tag, 24)?,
        bpp,
        kind,
    })
}

fn parse_mmap(tag: &[u8], info: &mut BootInfo) {
    let Some(entry_size) = u32_at(tag, 8) else {
        info.warn("multiboot2 memory map tag is malformed");
        return;
    };
    let entry_size = entry_size as usize;
    if entry_size < 24 {
        info.warn("multiboot2 memory map entries are too small");
        return;
    }
    let mut offset = 16;
    while offset + 24 <= tag.len() {
        if let (Some(base), Some(len), Some(kind)) = (
            u64_at(tag, offset),
            u64_at(tag, offset + 8),
            u32_at(tag, offset + 16),
        ) {
            info.push_region(base, len, kind);
        }
        offset += entry_size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::MemoryKind;
    use std::vec::Vec;

    fn tag(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&kind.to_le_bytes());
        t.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
        t.extend_from_slice(body);
        while t.len() % 8 != 0 {
            t.push(0);
        }
        t
    }

    fn mbi(tags: &[Vec<u8>]) -> Vec<u8> {
        let mut body: Vec<u8> = tags.concat();
        body.extend(tag(TAG_END, &[]));
        let mut out = Vec::new();
        out.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend(body);
        out
    }

    fn mmap_tag(entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&24u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        for &(base, len, kind) in entries {
            body.extend_from_slice(&base.to_le_bytes());
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(&kind.to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
        }
        tag(TAG_MMAP, &body)
    }

    fn module_tag(start: u32, end: u32, name: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&start.to_le_bytes());
        body.extend_from_slice(&end.to_le_bytes());
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        tag(TAG_MODULE, &body)
    }

    #[test]
    fn bios_boot_with_everything() {
        let rsdp = b"RSD PTR \x00QEMU  \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        let bytes = mbi(&[
            tag(TAG_CMDLINE, b"keel.test-crash=page-fault\0"),
            module_tag(0x300000, 0x3000b1, "hello.bin"),
            mmap_tag(&[
                (0x100000, 0x3ff00000, 1),
                (0, 0x9fc00, 1),
                (0xf0000, 0x10000, 2),
            ]),
            tag(TAG_ACPI_OLD, rsdp),
        ]);
        let info = parse(&bytes);
        assert_eq!(info.path, BootPath::Multiboot2Bios);
        assert_eq!(info.cmdline.as_str(), "keel.test-crash=page-fault");
        assert_eq!(info.modules.len(), 1);
        assert_eq!(info.modules[0].name.as_str(), "hello.bin");
        assert_eq!(info.modules[0].size, 177);
        assert_eq!(info.memory.len(), 3);
        assert_eq!(info.memory[0].start, 0, "map is sorted");
        assert_eq!(info.memory[1].kind, MemoryKind::Reserved);
        assert_eq!(info.rsdp_copy.as_deref(), Some(&rsdp[..]));
        assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    }

    fn framebuffer_tag(kind: u8, colour: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0xfd00_0000u64.to_le_bytes());
        body.extend_from_slice(&4096u32.to_le_bytes());
        body.extend_from_slice(&1024u32.to_le_bytes());
        body.extend_from_slice(&768u32.to_le_bytes());
        body.push(32);
        body.push(kind);
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(colour);
        tag(TAG_FRAMEBUFFER, &body)
    }

    #[test]
    fn framebuffer_tags_are_read() {
        let info = parse(&mbi(&[framebuffer_tag(1, &[16, 8, 8, 8, 0, 8])]));
        assert_eq!(
            info.framebuffer,
            Some(Framebuffer {
                address: 0xfd00_0000,
                pitch: 4096,
                width: 1024,
                height: 768,
                bpp: 32,
                kind: FramebufferKind::Rgb {
                    red: (16, 8),
                    green: (8, 8),
                    blue: (0, 8)
                },
            })
        );
        let text = parse(&mbi(&[framebuffer_tag(2, &[])]));
        assert_eq!(text.framebuffer.unwrap().kind, FramebufferKind::EgaText);
        // RGB without its colour bytes, or an unknown type: a warning, no framebuffer.
        let short = parse(&mbi(&[framebuffer_tag(1, &[16, 8])]));
        assert_eq!(short.framebuffer, None);
        assert!(!short.warnings.is_empty());
        assert_eq!(parse(&mbi(&[framebuffer_tag(9, &[])])).framebuffer, None);
    }

    #[test]
    fn efi_tags_mean_uefi() {
        let bytes = mbi(&[tag(TAG_EFI64, &0x7f00_0000u64.to_le_bytes())]);
        let info = parse(&bytes);
        assert_eq!(info.path, BootPath::Multiboot2Uefi);
        assert_eq!(
            info.efi_system_table,
            Some(0x7f00_0000),
            "SMBIOS is found through it"
        );
    }

    #[test]
    fn new_rsdp_wins_over_old() {
        let bytes = mbi(&[tag(TAG_ACPI_NEW, b"new"), tag(TAG_ACPI_OLD, b"old")]);
        assert_eq!(parse(&bytes).rsdp_copy.as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn corrupt_sizes_are_warnings() {
        let mut bytes = mbi(&[tag(TAG_CMDLINE, b"x\0")]);
        bytes[12..16].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let info = parse(&bytes);
        assert!(!info.warnings.is_empty());
        assert!(
            parse(&[])
                .warnings
                .contains(&"multiboot2 information is truncated")
        );
    }

    #[test]
    fn never_panics_on_noise() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for len in 0..400 {
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(state as u8);
            }
            if len >= 4 {
                bytes[..4].copy_from_slice(&(len as u32).to_le_bytes());
            }
            let _ = parse(&bytes);
        }
    }
}
