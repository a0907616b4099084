use super::*;

/// Entry point of [`sample_elf`].
const ENTRY: u64 = 0x20_0038;
/// Multiboot2 header magic (what GRUB looks for in the first 32 KiB).
const MB2_MAGIC: u32 = 0xE852_50D6;

/// A small kernel-shaped ELF64: a boot segment at file offset 0x1000 holding a Multiboot2
/// magic, a text segment, a data segment whose memory size exceeds its file size (bss), a
/// PT_NOTE inside the boot segment, then `debug_len` bytes of "debug info" and a section
/// header table at the end — as the linker lays out the real kernel.
pub(crate) fn sample_elf(debug_len: usize) -> Vec<u8> {
    let segments: [(u32, u64, u64, Vec<u8>, u64); 4] = [
        (PT_LOAD, 0x1000, 0x20_0000, boot_bytes(), 0x60),
        (PT_LOAD, 0x2000, 0x20_1000, pattern(0x1234, 7), 0x1234),
        (PT_LOAD, 0x4000, 0x20_4000, pattern(0x100, 13), 0x3000),
        (4, 0x1010, 0x20_0010, pattern(0x14, 3), 0x14),
    ];
    let data_end = 0x4100;
    let shoff = data_end + debug_len;
    let mut elf = vec![0u8; shoff + 3 * 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&0x3Eu16.to_le_bytes()); // EM_X86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&ENTRY.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes());
    elf[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
    elf[52..54].copy_from_slice(&64u16.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    elf[58..60].copy_from_slice(&64u16.to_le_bytes());
    elf[60..62].copy_from_slice(&3u16.to_le_bytes());
    elf[62..64].copy_from_slice(&2u16.to_le_bytes());
    for (i, (kind, offset, vaddr, contents, mem_size)) in segments.iter().enumerate() {
        let at = 64 + i * 56;
        elf[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        elf[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        elf[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
        elf[at + 24..at + 32].copy_from_slice(&vaddr.to_le_bytes());
        elf[at + 32..at + 40].copy_from_slice(&(contents.len() as u64).to_le_bytes());
        elf[at + 40..at + 48].copy_from_slice(&mem_size.to_le_bytes());
        elf[at + 48..at + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        let start = *offset as usize;
        elf[start..start + contents.len()].copy_from_slice(contents);
    }
    // Bytes between segments no header names (a non-alloc section the linker put there).
    elf[0x3800..0x3810].fill(0xEE);
    for (i, b) in elf[data_end..shoff].iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    for b in &mut elf[shoff..] {
        *b = 0x5A;
    }
    elf
}

fn boot_bytes() -> Vec<u8> {
    let mut boot = MB2_MAGIC.to_le_bytes().to_vec();
    boot.extend(pattern(0x5C, 5));
    boot
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(1))
        .collect()
}

#[test]
fn stripped_elf_keeps_entry_and_every_segment_byte_for_byte() {
    let elf = sample_elf(200_000);
    let stripped = loadable_only(&elf).unwrap();
    let before = ElfLayout::parse(&elf).unwrap();
    let after = ElfLayout::parse(&stripped).unwrap();
    assert_eq!(after.entry, ENTRY);
    assert_eq!(after, before);
    for (a, b) in before.segments.iter().zip(&after.segments) {
        assert_eq!(before.contents(&elf, a), after.contents(&stripped, b));
    }
    // The file ends with the last segment's contents: the debug blob and section headers
    // are gone, and no section header table is announced.
    assert_eq!(stripped.len(), 0x4100);
    assert_eq!(&stripped[40..48], &[0; 8]);
    assert_eq!(&stripped[60..64], &[0; 4]);
    // What no segment covers is zero; the rest of the ELF header is as it was.
    assert!(stripped[0x3800..0x3810].iter().all(|&b| b == 0));
    assert_eq!(&stripped[..40], &elf[..40]);
    assert_eq!(&stripped[48..60], &elf[48..60]);
    // The Multiboot2 header stays where GRUB looks (first 32 KiB, 8-byte aligned).
    assert_eq!(&stripped[0x1000..0x1004], &MB2_MAGIC.to_le_bytes());
}

#[test]
fn stripping_twice_changes_nothing() {
    let once = loadable_only(&sample_elf(1000)).unwrap();
    assert_eq!(loadable_only(&once).unwrap(), once);
}

#[test]
fn refuses_what_it_cannot_vouch_for() {
    assert_eq!(loadable_only(b"MZ..."), Err(StripError::NotElf));
    assert_eq!(
        loadable_only(&[0x7F, b'E', b'L', b'F']),
        Err(StripError::NotElf)
    );

    let mut elf32 = sample_elf(10);
    elf32[4] = 1;
    assert_eq!(
        loadable_only(&elf32),
        Err(StripError::WrongFormat { class: 1, data: 1 })
    );

    let mut phentsize = sample_elf(10);
    phentsize[54] = 32;
    assert_eq!(loadable_only(&phentsize), Err(StripError::BadPhentsize(32)));

    // A segment reaching past the end: a truncated file is refused, not padded.
    let elf = sample_elf(0);
    let truncated = &elf[..0x4080];
    let err = loadable_only(truncated).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("segment 2's contents (bytes 0x4000..0x4100) lies beyond"),
        "{err}"
    );

    // An offset near u64::MAX must not wrap around.
    let mut wrapping = sample_elf(0);
    let at = 64 + 56 + 8;
    wrapping[at..at + 8].copy_from_slice(&(u64::MAX - 4).to_le_bytes());
    assert!(matches!(
        loadable_only(&wrapping),
        Err(StripError::OutOfFile { .. })
    ));

    let mut phdrs_out = sample_elf(0);
    phdrs_out[32..40].copy_from_slice(&0x10_0000u64.to_le_bytes());
    assert!(matches!(
        loadable_only(&phdrs_out),
        Err(StripError::OutOfFile { .. })
    ));

    let mut no_load = sample_elf(0);
    for i in 0..4 {
        let at = 64 + i * 56;
        no_load[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    }
    assert_eq!(loadable_only(&no_load), Err(StripError::NoLoadableSegment));
}

/// The real kernel, when a `keel build` has left one: same entry and segments, the
/// Multiboot2 header in the first 32 KiB, and far smaller.
#[test]
fn real_kernel_strips_to_its_loadable_segments() {
    let path = crate::output_dir().join("keel.elf");
    let Ok(elf) = std::fs::read(&path) else {
        eprintln!("skipped: no {} (run keel build)", path.display());
        return;
    };
    let stripped = loadable_only(&elf).unwrap();
    let before = ElfLayout::parse(&elf).unwrap();
    let after = ElfLayout::parse(&stripped).unwrap();
    assert_eq!(after, before);
    for (a, b) in before.segments.iter().zip(&after.segments) {
        assert_eq!(before.contents(&elf, a), after.contents(&stripped, b));
    }
    let magic = MB2_MAGIC.to_le_bytes();
    let header = stripped[..(32 * 1024).min(stripped.len())]
        .chunks_exact(8)
        .position(|c| c[..4] == magic);
    assert!(header.is_some(), "no Multiboot2 header in the first 32 KiB");
    assert!(
        stripped.len() < elf.len(),
        "{} >= {}",
        stripped.len(),
        elf.len()
    );
}
