//! Host tests for the Multiboot (v1) loader over images built byte by byte: ELF32 with a
//! header, the a.out kludge, and malformed ones.

use std::string::ToString;
use std::vec::Vec;

use super::*;
use crate::testing::MockHost;

const MIB: u64 = 1 << 20;
const SEGMENT_OFFSET: usize = 0x1000;

fn memory(size: u64) -> GuestMemory {
    GuestMemory::new(MockHost::leak(size / 4096 + 16), size).unwrap()
}

fn put(img: &mut [u8], at: usize, bytes: &[u8]) {
    img[at..at + bytes.len()].copy_from_slice(bytes);
}

fn header(flags: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&(0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags))).to_le_bytes());
    h
}

/// An ELF32 image with the Multiboot header at 0x200 and the given `PT_LOAD` segments
/// `(paddr, filesz, memsz)`, each segment's file bytes at `SEGMENT_OFFSET + 0x1000 * i`.
fn elf32(segments: &[(u32, u32, u32)], entry: u32) -> Vec<u8> {
    let mut img = std::vec![0u8; SEGMENT_OFFSET + 0x1000 * segments.len()];
    put(&mut img, 0, b"\x7fELF");
    put(&mut img, 4, &[1, 1, 1]);
    put(&mut img, 0x10, &2u16.to_le_bytes());
    put(&mut img, 0x12, &3u16.to_le_bytes());
    put(&mut img, 0x18, &entry.to_le_bytes());
    put(&mut img, 0x1C, &52u32.to_le_bytes());
    put(&mut img, 0x2A, &32u16.to_le_bytes());
    put(&mut img, 0x2C, &(segments.len() as u16).to_le_bytes());
    for (i, &(paddr, filesz, memsz)) in segments.iter().enumerate() {
        let at = 52 + 32 * i;
        let offset = (SEGMENT_OFFSET + 0x1000 * i) as u32;
        put(&mut img, at, &1u32.to_le_bytes());
        put(&mut img, at + 4, &offset.to_le_bytes());
        put(&mut img, at + 8, &paddr.to_le_bytes());
        put(&mut img, at + 12, &paddr.to_le_bytes());
        put(&mut img, at + 16, &filesz.to_le_bytes());
        put(&mut img, at + 20, &memsz.to_le_bytes());
        for b in 0..filesz.min(0x1000) as usize {
            img[offset as usize + b] = (b % 251) as u8 + 1 + i as u8;
        }
    }
    put(&mut img, 0x200, &header(0));
    img
}

fn u32_in(mem: &GuestMemory, at: u64) -> u32 {
    let mut b = [0u8; 4];
    mem.read(at, &mut b).unwrap();
    u32::from_le_bytes(b)
}

fn cstr(mem: &GuestMemory, at: u64) -> std::string::String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    for i in 0..4096 {
        mem.read(at + i, &mut b).unwrap();
        if b[0] == 0 {
            break;
        }
        out.push(b[0]);
    }
    std::string::String::from_utf8(out).unwrap()
}

#[test]
fn elf32_segments_entry_and_registers() {
    let mem = memory(32 * MIB);
    mem.fill(0x40_0000, 0x3000, 0xCC).unwrap();
    let img = elf32(
        &[(0x40_0000, 0x100, 0x2000), (0x50_0000, 0x80, 0x80)],
        0x40_0010,
    );
    assert!(is_multiboot1(&img));
    let boot = load(&mem, &img, &[], "console=ttyS0").unwrap();
    assert_eq!(
        boot.start,
        StartMode::Multiboot {
            entry: 0x40_0010,
            info: 0x6000
        }
    );
    assert_eq!(boot.kernel_range, (0x40_0000, 0x50_0080));
    let mut seg = std::vec![0u8; 0x2000];
    mem.read(0x40_0000, &mut seg).unwrap();
    assert_eq!(seg[..0x100], img[SEGMENT_OFFSET..SEGMENT_OFFSET + 0x100]);
    assert!(seg[0x100..].iter().all(|&b| b == 0), "bss zeroed");
    assert_eq!(mem.read_u8(0x40_2000), Ok(0xCC), "nothing past memsz");
    let mut second = [0u8; 0x80];
    mem.read(0x50_0000, &mut second).unwrap();
    assert_eq!(
        second[..],
        img[SEGMENT_OFFSET + 0x1000..SEGMENT_OFFSET + 0x1080]
    );

    // The vCPU starts as the spec says: EAX magic, EBX the info, 32-bit flat, paging off.
    let regs = crate::backend::start_registers(boot.start);
    assert_eq!(regs.gpr[0], 0x2BAD_B002);
    assert_eq!(regs.gpr[3], 0x6000);
    assert_eq!(regs.rip, 0x40_0010);
    assert_eq!(regs.cr0 & 0x8000_0001, 1, "PE on, PG off");
    assert_eq!(regs.cs.limit, 0xffff_ffff);
    assert_eq!(regs.rflags & 0x200, 0, "interrupts off");
}

#[test]
fn information_structure_modules_and_memory_map() {
    let mem = memory(64 * MIB);
    let img = elf32(&[(0x40_0000, 0x100, 0x1000)], 0x40_0000);
    let env = b"NR_CPUS=2\nMEMSIZE=64\n";
    let extra = std::vec![0x5Au8; 5000];
    let boot = load(
        &mem,
        &img,
        &[
            Module {
                data: env,
                string: "env",
            },
            Module {
                data: &extra,
                string: "extra arg",
            },
        ],
        "-smp 2 test",
    )
    .unwrap();
    let info = boot.info;
    let flags = u32_in(&mem, info);
    assert_eq!(flags, 1 | 4 | 8 | 64 | 512);
    assert_eq!(u32_in(&mem, info + 4), 639, "mem_lower: 0x9FC00 bytes");
    assert_eq!(
        u32_in(&mem, info + 8),
        63 * 1024,
        "mem_upper: KiB above 1 MiB"
    );
    assert_eq!(
        cstr(&mem, u64::from(u32_in(&mem, info + 16))),
        "-smp 2 test"
    );
    assert_eq!(cstr(&mem, u64::from(u32_in(&mem, info + 64))), "Keel");

    // Modules: the first highest, page-aligned, above the kernel, contents and strings.
    assert_eq!(u32_in(&mem, info + 20), 2);
    let mods = u64::from(u32_in(&mem, info + 24));
    let (start0, end0) = (u32_in(&mem, mods), u32_in(&mem, mods + 4));
    let (start1, end1) = (u32_in(&mem, mods + 16), u32_in(&mem, mods + 20));
    assert_eq!(end0 - start0, env.len() as u32);
    assert_eq!(end1 - start1, 5000);
    assert_eq!(u64::from(start0) % PAGE_SIZE, 0);
    assert_eq!(u64::from(start1) % PAGE_SIZE, 0);
    assert!(u64::from(end0) <= 64 * MIB && end1 <= start0 && u64::from(start1) >= 0x40_1000);
    assert_eq!(
        boot.modules,
        std::vec![
            (u64::from(start0), u64::from(end0)),
            (u64::from(start1), u64::from(end1))
        ]
    );
    let mut got = std::vec![0u8; env.len()];
    mem.read(u64::from(start0), &mut got).unwrap();
    assert_eq!(got, env);
    assert_eq!(cstr(&mem, u64::from(u32_in(&mem, mods + 8))), "env");
    assert_eq!(cstr(&mem, u64::from(u32_in(&mem, mods + 24))), "extra arg");

    // Memory map: size 20 entries of the e820 ranges.
    assert_eq!(u32_in(&mem, info + 44), 72);
    let mmap = u64::from(u32_in(&mem, info + 48));
    let entries: Vec<(u32, u64, u64, u32)> = (0..3)
        .map(|i| {
            let at = mmap + 24 * i;
            (
                u32_in(&mem, at),
                mem.read_u64(at + 4).unwrap(),
                mem.read_u64(at + 12).unwrap(),
                u32_in(&mem, at + 20),
            )
        })
        .collect();
    assert_eq!(
        entries,
        std::vec![
            (20, 0, 0x9FC00, 1),
            (20, 0x9FC00, 0x100000 - 0x9FC00, 2),
            (20, 0x100000, 63 * MIB, 1)
        ]
    );
}

#[test]
fn aout_kludge_uses_the_header_addresses() {
    // Header at file offset 0x40, says it lives at 0x100040: the file loads from 0 at 1 MiB.
    let mut img = std::vec![0u8; 0x800];
    let mut h = header(FLAG_ADDRESSES | FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO);
    for field in [0x10_0040u32, 0x10_0000, 0x10_0600, 0x10_2000, 0x10_0100] {
        h.extend_from_slice(&field.to_le_bytes());
    }
    put(&mut img, 0x40, &h);
    for b in img[0x100..0x600].iter_mut() {
        *b = 0x90;
    }
    for b in img[0x600..].iter_mut() {
        *b = 0xEE; // past load_end_addr: not loaded
    }
    let mem = memory(8 * MIB);
    mem.fill(0x10_0000, 0x3000, 0xCC).unwrap();
    let boot = load(&mem, &img, &[], "").unwrap();
    assert_eq!(boot.entry, 0x10_0100);
    assert_eq!(boot.kernel_range, (0x10_0000, 0x10_2000));
    let mut got = std::vec![0u8; 0x2000];
    mem.read(0x10_0000, &mut got).unwrap();
    assert_eq!(got[..0x600], img[..0x600]);
    assert!(
        got[0x600..].iter().all(|&b| b == 0),
        "bss to bss_end_addr zeroed"
    );
    assert_eq!(mem.read_u8(0x10_2000), Ok(0xCC));
}

#[test]
fn header_search_window_and_checksum() {
    let mut img = elf32(&[(0x40_0000, 0x10, 0x10)], 0x40_0000);
    // No header at all.
    put(&mut img, 0x200, &[0; 12]);
    assert_eq!(find_header(&img), Err(Multiboot1Error::NoHeader));
    assert!(!is_multiboot1(&img));
    // A header past 8 KiB does not count.
    let mut far = std::vec![0u8; 0x3000];
    put(&mut far, 0x2000, &header(0));
    assert_eq!(find_header(&far), Err(Multiboot1Error::NoHeader));
    // Misaligned does not count either.
    let mut odd = std::vec![0u8; 0x100];
    put(&mut odd, 0x22, &header(0));
    assert_eq!(find_header(&odd), Err(Multiboot1Error::NoHeader));
    // Bad checksum.
    let mut bad = header(0);
    bad[8] ^= 1;
    put(&mut img, 0x200, &bad);
    let err = find_header(&img).unwrap_err();
    assert_eq!(err, Multiboot1Error::BadChecksum { offset: 0x200 });
    assert_eq!(
        err.to_string(),
        "the Multiboot header at offset 0x200 has a wrong checksum: the image is corrupt"
    );
    let mem = memory(8 * MIB);
    assert_eq!(load(&mem, &img, &[], ""), Err(err));
}

#[test]
fn malformed_images_are_refused_with_reasons() {
    let mem = memory(8 * MIB);
    let cases: [(Vec<u8>, Multiboot1Error); 6] = [
        (
            elf32(&[(0x1_8000, 0x10, 0x1_0000)], 0x1_8000),
            Multiboot1Error::SegmentOverBootData {
                paddr: 0x1_8000,
                what: "the command line area at 0x20000",
            },
        ),
        (
            elf32(&[(0x9_0000, 0x10, 0x1_0000)], 0x9_0000),
            Multiboot1Error::SegmentOverBootData {
                paddr: 0x9_0000,
                what: "the EBDA and BIOS area (ACPI tables) at 0x9fc00",
            },
        ),
        (
            elf32(&[(0x70_0000, 0x10, 0x20_0000)], 0x70_0000),
            Multiboot1Error::SegmentOutsideRam {
                paddr: 0x70_0000,
                memsz: 0x20_0000,
                ram_end: 8 * MIB,
            },
        ),
        (
            elf32(
                &[(0x20_0000, 0x10, 0x2000), (0x20_1000, 0x10, 0x10)],
                0x20_0000,
            ),
            Multiboot1Error::SegmentsOverlap {
                first: 0x20_0000,
                second: 0x20_1000,
            },
        ),
        (
            elf32(&[(0x20_0000, 0x10, 0x10)], 0x30_0000),
            Multiboot1Error::EntryOutsideImage { entry: 0x30_0000 },
        ),
        (
            elf32(&[(0x20_0000, 0x20, 0x10)], 0x20_0000),
            Multiboot1Error::BadSegment { paddr: 0x20_0000 },
        ),
    ];
    for (img, want) in cases {
        assert_eq!(load(&mem, &img, &[], ""), Err(want), "{want}");
    }
    // A truncated segment.
    let mut img = elf32(&[(0x20_0000, 0x1000, 0x1000)], 0x20_0000);
    img.truncate(SEGMENT_OFFSET + 0x800);
    assert!(matches!(
        load(&mem, &img, &[], ""),
        Err(Multiboot1Error::Elf(PvhError::Truncated { .. }))
    ));
    // A video mode requirement.
    let mut img = elf32(&[(0x20_0000, 0x10, 0x10)], 0x20_0000);
    put(&mut img, 0x200, &header(1 << 2));
    assert_eq!(
        load(&mem, &img, &[], ""),
        Err(Multiboot1Error::UnsupportedRequirement { bits: 4 })
    );
    // The kludge: load_addr above header_addr, and a file offset that would be negative.
    for (fields, why) in [
        (
            [0x10_0000u32, 0x10_1000, 0, 0, 0x10_1000],
            "load_addr lies above header_addr",
        ),
        (
            [0x10_1000, 0x10_0000, 0, 0, 0x10_0000],
            "header_addr - load_addr is larger than the header's file offset",
        ),
    ] {
        let mut img = std::vec![0u8; 0x400];
        let mut h = header(FLAG_ADDRESSES);
        for f in fields {
            h.extend_from_slice(&f.to_le_bytes());
        }
        put(&mut img, 0x40, &h);
        assert_eq!(
            load(&mem, &img, &[], ""),
            Err(Multiboot1Error::BadAddresses { why })
        );
    }
    // ELF64 without address fields.
    let mut img = elf32(&[(0x20_0000, 0x10, 0x10)], 0x20_0000);
    img[4] = 2;
    assert!(matches!(
        load(&mem, &img, &[], ""),
        Err(Multiboot1Error::Elf(_) | Multiboot1Error::NotElf32)
    ));
}

#[test]
fn modules_that_do_not_fit_or_are_empty() {
    let mem = memory(8 * MIB);
    let img = elf32(&[(0x40_0000, 0x10, 0x10)], 0x40_0000);
    let big = std::vec![1u8; 4 * MIB as usize];
    assert_eq!(
        load(
            &mem,
            &img,
            &[Module {
                data: &big,
                string: ""
            }],
            ""
        ),
        Err(Multiboot1Error::ModulesTooLarge {
            size: 4 * MIB,
            room: 8 * MIB - 0x40_1000
        })
    );
    assert_eq!(
        load(
            &mem,
            &img,
            &[Module {
                data: &[],
                string: ""
            }],
            ""
        ),
        Err(Multiboot1Error::ModuleEmpty { index: 0 })
    );
    let one = Module {
        data: b"x",
        string: "",
    };
    assert_eq!(
        load(&mem, &img, &[one; MAX_MODULES + 1], ""),
        Err(Multiboot1Error::TooManyModules {
            count: MAX_MODULES + 1
        })
    );
}

#[test]
fn kernels_below_1mib_load_clear_of_the_boot_data() {
    // kvm-unit-tests' realmode.flat is linked at 0x8000.
    let mem = memory(8 * MIB);
    let img = elf32(&[(0x8000, 0x100, 0x8000)], 0x8000);
    let boot = load(
        &mem,
        &img,
        &[Module {
            data: b"NR_CPUS=1\n",
            string: "env",
        }],
        "",
    )
    .unwrap();
    assert_eq!(boot.kernel_range, (0x8000, 0x1_0000));
    assert_eq!(
        boot.modules,
        std::vec![(8 * MIB - 0x1000, 8 * MIB - 0x1000 + 10)]
    );
    let mut got = [0u8; 0x100];
    mem.read(0x8000, &mut got).unwrap();
    assert_eq!(got[..], img[SEGMENT_OFFSET..SEGMENT_OFFSET + 0x100]);
}
