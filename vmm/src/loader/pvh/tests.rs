//! Host tests for the PVH loader over ELF32 and ELF64 images built byte by byte.

use std::vec::Vec;

use super::*;
use crate::loader::boot_files::CmdlineLimit;
use crate::loader::layout::{CMDLINE_MAX, E820Type};
use crate::testing::MockHost;

const MIB: u64 = 1 << 20;
const SEGMENT_OFFSET: usize = 0x1000;
const NOTE_OFFSET: usize = 0x200;

#[derive(Clone)]
struct Fixture {
    is64: bool,
    /// The PHYS32_ENTRY note's descriptor.
    entry_desc: Vec<u8>,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    /// A GNU note before the Xen one, to be skipped.
    other_note_first: bool,
}

impl Fixture {
    fn elf64() -> Fixture {
        Fixture {
            is64: true,
            entry_desc: 0x10_0010u64.to_le_bytes().to_vec(),
            paddr: 0x10_0000,
            filesz: 0x100,
            memsz: 0x2000,
            other_note_first: true,
        }
    }

    fn elf32() -> Fixture {
        Fixture {
            is64: false,
            entry_desc: 0x10_0010u32.to_le_bytes().to_vec(),
            ..Fixture::elf64()
        }
    }

    fn notes(&self) -> Vec<u8> {
        let mut n = Vec::new();
        let mut note = |name: &[u8], kind: u32, desc: &[u8]| {
            n.extend_from_slice(&(name.len() as u32).to_le_bytes());
            n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            n.extend_from_slice(&kind.to_le_bytes());
            n.extend_from_slice(name);
            n.resize(n.len().next_multiple_of(4), 0);
            n.extend_from_slice(desc);
            n.resize(n.len().next_multiple_of(4), 0);
        };
        if self.other_note_first {
            note(b"GNU\0", 3, &[0xAB; 20]);
            note(b"Xen\0", 6, b"linux\0"); // XEN_ELFNOTE_GUEST_OS, not the entry
        }
        note(XEN_NOTE_NAME, XEN_ELFNOTE_PHYS32_ENTRY, &self.entry_desc);
        n
    }

    fn build(&self) -> Vec<u8> {
        let notes = self.notes();
        let mut img = std::vec![0u8; SEGMENT_OFFSET + self.filesz as usize];
        let mut put = |at: usize, bytes: &[u8]| img[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, b"\x7fELF");
        put(4, &[if self.is64 { 2 } else { 1 }, 1, 1]);
        put(0x10, &2u16.to_le_bytes());
        put(0x12, &(if self.is64 { 62u16 } else { 3 }).to_le_bytes());
        put(0x14, &1u32.to_le_bytes());
        // (p_type, p_offset, p_paddr, p_filesz, p_memsz, p_align)
        let phdrs = [
            (
                1u32,
                SEGMENT_OFFSET as u64,
                self.paddr,
                self.filesz,
                self.memsz,
                0x1000u64,
            ),
            (
                4,
                NOTE_OFFSET as u64,
                0,
                notes.len() as u64,
                notes.len() as u64,
                4,
            ),
        ];
        if self.is64 {
            put(0x20, &64u64.to_le_bytes());
            put(0x34, &64u16.to_le_bytes());
            put(0x36, &56u16.to_le_bytes());
            put(0x38, &2u16.to_le_bytes());
            for (i, (kind, off, paddr, filesz, memsz, align)) in phdrs.into_iter().enumerate() {
                let at = 64 + i * 56;
                put(at, &kind.to_le_bytes());
                put(at + 8, &off.to_le_bytes());
                put(at + 16, &paddr.to_le_bytes()); // p_vaddr
                put(at + 24, &paddr.to_le_bytes());
                put(at + 32, &filesz.to_le_bytes());
                put(at + 40, &memsz.to_le_bytes());
                put(at + 48, &align.to_le_bytes());
            }
        } else {
            put(0x1C, &52u32.to_le_bytes());
            put(0x28, &52u16.to_le_bytes());
            put(0x2A, &32u16.to_le_bytes());
            put(0x2C, &2u16.to_le_bytes());
            for (i, (kind, off, paddr, filesz, memsz, align)) in phdrs.into_iter().enumerate() {
                let at = 52 + i * 32;
                put(at, &kind.to_le_bytes());
                put(at + 4, &(off as u32).to_le_bytes());
                put(at + 8, &(paddr as u32).to_le_bytes());
                put(at + 12, &(paddr as u32).to_le_bytes());
                put(at + 16, &(filesz as u32).to_le_bytes());
                put(at + 20, &(memsz as u32).to_le_bytes());
                put(at + 28, &(align as u32).to_le_bytes());
            }
        }
        put(NOTE_OFFSET, &notes);
        for (i, b) in img[SEGMENT_OFFSET..].iter_mut().enumerate() {
            *b = (i % 253) as u8 + 1;
        }
        img
    }
}

fn memory(size: u64) -> GuestMemory {
    GuestMemory::new(MockHost::leak(size / 4096 + 16), size).unwrap()
}

#[test]
fn finds_the_entry_in_elf64_and_elf32() {
    for fixture in [Fixture::elf64(), Fixture::elf32()] {
        let img = fixture.build();
        let headers = program_headers(&img).unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].paddr, 0x10_0000);
        assert_eq!(headers[0].memsz, 0x2000);
        assert_eq!(find_entry(&img, &headers), Ok(0x10_0010));
    }
}

#[test]
fn loads_segments_and_zeroes_bss() {
    for fixture in [Fixture::elf64(), Fixture::elf32()] {
        let mem = memory(8 * MIB);
        mem.fill(0x10_0000, 0x3000, 0xCC).unwrap(); // stale bytes the loader must clear
        let img = fixture.build();
        let boot = load(&mem, &img, None, "console=hvc0", Some(0xE0000)).unwrap();
        assert_eq!(
            boot.start,
            StartMode::Protected32 {
                entry: 0x10_0010,
                ebx: 0x6000
            }
        );
        assert_eq!(boot.kernel_range, (0x10_0000, 0x10_2000));
        let mut seg = std::vec![0u8; 0x2000];
        mem.read(0x10_0000, &mut seg).unwrap();
        assert_eq!(seg[..0x100], img[SEGMENT_OFFSET..]);
        assert!(seg[0x100..].iter().all(|&b| b == 0), "bss zeroed");
        assert_eq!(mem.read_u8(0x10_2000), Ok(0xCC), "nothing past memsz");
    }
}

#[test]
fn start_info_contents() {
    let mem = memory(16 * MIB);
    let initrd = std::vec![0x42u8; 5000];
    let boot = load(
        &mem,
        &Fixture::elf64().build(),
        Some(&initrd),
        "console=hvc0",
        Some(0xE0000),
    )
    .unwrap();
    let si = boot.start_info;
    assert_eq!(si, PVH_START_INFO);
    assert_eq!(mem.read_u32(si), Ok(0x336E_C578));
    assert_eq!(mem.read_u32(si + 4), Ok(1), "version");
    assert_eq!(mem.read_u32(si + 8), Ok(0), "flags");
    assert_eq!(mem.read_u32(si + 0xC), Ok(1), "nr_modules");
    assert_eq!(mem.read_u64(si + 0x10), Ok(PVH_MODLIST));
    assert_eq!(mem.read_u64(si + 0x18), Ok(CMDLINE));
    assert_eq!(mem.read_u64(si + 0x20), Ok(0xE0000), "rsdp_paddr");
    assert_eq!(mem.read_u64(si + 0x28), Ok(PVH_MEMMAP));
    assert_eq!(mem.read_u32(si + 0x30), Ok(3), "memmap_entries");

    let mut cmd = [0u8; 13];
    mem.read(CMDLINE, &mut cmd).unwrap();
    assert_eq!(&cmd, b"console=hvc0\0");

    // Module 0: the initrd, page-aligned at the top of RAM.
    let (addr, size) = boot.initrd.unwrap();
    assert_eq!((addr, size), (16 * MIB - 0x2000, 5000));
    assert_eq!(mem.read_u64(PVH_MODLIST), Ok(addr));
    assert_eq!(mem.read_u64(PVH_MODLIST + 8), Ok(5000));
    assert_eq!(
        mem.read_u64(PVH_MODLIST + 16),
        Ok(0),
        "no module command line"
    );
    let mut back = std::vec![0u8; 5000];
    mem.read(addr, &mut back).unwrap();
    assert_eq!(back, initrd);

    // The memory map matches the e820 map.
    let entry = |i: u64| {
        let at = PVH_MEMMAP + i * 24;
        (
            mem.read_u64(at).unwrap(),
            mem.read_u64(at + 8).unwrap(),
            mem.read_u32(at + 16).unwrap(),
        )
    };
    assert_eq!(entry(0), (0, 0x9_FC00, E820Type::Ram as u32));
    assert_eq!(entry(1), (0x9_FC00, 0x6_0400, E820Type::Reserved as u32));
    assert_eq!(entry(2), (0x10_0000, 15 * MIB, E820Type::Ram as u32));
}

#[test]
fn no_initrd_and_no_rsdp_are_zero() {
    let mem = memory(8 * MIB);
    let boot = load(&mem, &Fixture::elf32().build(), None, "", None).unwrap();
    assert_eq!(boot.initrd, None);
    assert_eq!(mem.read_u32(PVH_START_INFO + 0xC), Ok(0));
    assert_eq!(mem.read_u64(PVH_START_INFO + 0x10), Ok(0));
    assert_eq!(mem.read_u64(PVH_START_INFO + 0x20), Ok(0));
}

#[test]
fn header_errors() {
    let good = Fixture::elf64().build();
    let mut bad = good.clone();
    bad[1] = b'X';
    assert_eq!(program_headers(&bad), Err(PvhError::NotElf));
    let mut bad = good.clone();
    bad[4] = 3;
    assert_eq!(program_headers(&bad), Err(PvhError::UnsupportedClass(3)));
    let mut bad = good.clone();
    bad[5] = 2;
    assert_eq!(program_headers(&bad), Err(PvhError::NotLittleEndian));
    let mut bad = good.clone();
    bad[0x10] = 3;
    assert_eq!(program_headers(&bad), Err(PvhError::NotExecutable(3)));
    let mut bad = good.clone();
    bad[0x12] = 40;
    assert_eq!(program_headers(&bad), Err(PvhError::WrongMachine(40)));
    let mut bad = good.clone();
    bad[0x36] = 20;
    assert_eq!(
        program_headers(&bad),
        Err(PvhError::BadProgramHeaderSize(20))
    );
    assert_eq!(
        program_headers(&good[..100]),
        Err(PvhError::Truncated {
            what: "program headers"
        })
    );
}

#[test]
fn entry_note_errors() {
    let mem = memory(8 * MIB);
    let wide = Fixture {
        entry_desc: 0x1_0000_0000u64.to_le_bytes().to_vec(),
        ..Fixture::elf64()
    };
    assert_eq!(
        load(&mem, &wide.build(), None, "", None),
        Err(PvhError::BadEntryNote {
            size: 8,
            value: 0x1_0000_0000
        })
    );
    let odd = Fixture {
        entry_desc: std::vec![1, 2],
        ..Fixture::elf64()
    };
    assert!(matches!(
        load(&mem, &odd.build(), None, "", None),
        Err(PvhError::BadEntryNote { size: 2, .. })
    ));
    let outside = Fixture {
        entry_desc: 0x20_0000u32.to_le_bytes().to_vec(),
        ..Fixture::elf32()
    };
    assert_eq!(
        load(&mem, &outside.build(), None, "", None),
        Err(PvhError::EntryOutsideImage { entry: 0x20_0000 })
    );
    // Without the Xen entry note (here: renamed owner) there is no PVH entry.
    let mut img = Fixture {
        other_note_first: false,
        ..Fixture::elf64()
    }
    .build();
    img[NOTE_OFFSET + 12] = b'Q';
    assert_eq!(load(&mem, &img, None, "", None), Err(PvhError::NoPvhEntry));
}

#[test]
fn segment_errors() {
    let mem = memory(8 * MIB);
    let low = Fixture {
        paddr: 0x8000,
        ..Fixture::elf64()
    };
    assert_eq!(
        load(&mem, &low.build(), None, "", None),
        Err(PvhError::SegmentBelow1MiB { paddr: 0x8000 })
    );
    let high = Fixture {
        paddr: 8 * MIB - 0x1000,
        entry_desc: ((8 * MIB - 0x1000) as u32).to_le_bytes().to_vec(),
        ..Fixture::elf32()
    };
    assert_eq!(
        load(&mem, &high.build(), None, "", None),
        Err(PvhError::SegmentOutsideRam {
            paddr: 8 * MIB - 0x1000,
            memsz: 0x2000,
            ram_end: 8 * MIB
        })
    );
    let inverted = Fixture {
        filesz: 0x3000,
        ..Fixture::elf64()
    };
    assert_eq!(
        load(&mem, &inverted.build(), None, "", None),
        Err(PvhError::BadSegment {
            filesz: 0x3000,
            memsz: 0x2000
        })
    );
}

#[test]
fn cmdline_and_initrd_errors() {
    let mem = memory(8 * MIB);
    let img = Fixture::elf64().build();
    assert_eq!(
        load(&mem, &img, None, "a\0", None),
        Err(PvhError::BootFiles(BootFilesError::CmdlineHasNul))
    );
    let long = "x".repeat(CMDLINE_MAX as usize);
    let err = load(&mem, &img, None, &long, None).unwrap_err();
    assert_eq!(
        err,
        PvhError::BootFiles(BootFilesError::CmdlineTooLong {
            len: CMDLINE_MAX,
            max: CMDLINE_MAX - 1,
            limit: CmdlineLimit::Area
        })
    );
    assert_eq!(
        err.to_string(),
        "the kernel command line is 65536 bytes; at most 65535 fit"
    );
    assert_eq!(
        load(&mem, &img, Some(&[]), "", None),
        Err(PvhError::BootFiles(BootFilesError::InitrdEmpty))
    );
    // Kernel ends at 0x102000; 8 MiB of RAM leaves 8 MiB - 0x102000.
    let room = 8 * MIB - 0x10_2000;
    let big = std::vec![0u8; room as usize + 1];
    assert_eq!(
        load(&mem, &img, Some(&big), "", None),
        Err(PvhError::BootFiles(BootFilesError::InitrdTooLarge {
            size: room + 1,
            room
        }))
    );
}

#[test]
fn every_truncation_and_byte_flip_is_an_error_or_a_load_never_a_panic() {
    let mem = memory(8 * MIB);
    for fixture in [Fixture::elf64(), Fixture::elf32()] {
        let good = fixture.build();
        for len in 0..good.len() {
            assert!(load(&mem, &good[..len], None, "", None).is_err(), "{len}");
        }
        let notes_end = NOTE_OFFSET + fixture.notes().len();
        for at in (0..0xD0).chain(NOTE_OFFSET..notes_end) {
            for value in [0x00, 0x01, 0x08, 0x7F, 0x80, 0xFF] {
                let mut img = good.clone();
                img[at] = value;
                let _ = load(&mem, &img, Some(b"rd"), "x", None);
            }
        }
    }
}
