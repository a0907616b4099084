//! Host tests for the bzImage loader: images built byte by byte, and Debian's kernel when
//! `KEEL_LINUX_BZIMAGE` (or the QEMU suite's download in `target/linux-guest/vmlinuz`) has one.

use std::vec::Vec;

use super::*;
use crate::backend::svm::vmcb::long_mode_registers;
use crate::guest_paging::linear_to_physical;
use crate::loader::boot_files::CmdlineLimit;
use crate::loader::layout::{CMDLINE_MAX, E820Type, ZERO_PAGE};
use crate::testing::MockHost;

const MIB: u64 = 1 << 20;

/// A synthetic bzImage header and payload.
#[derive(Clone)]
struct Fixture {
    setup_sects: u8,
    kernel_len: usize,
    version: u16,
    loadflags: u8,
    xloadflags: u16,
    relocatable: bool,
    pref_address: u64,
    kernel_alignment: u32,
    init_size: u32,
    initrd_addr_max: u32,
    cmdline_size: u32,
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture {
            setup_sects: 4,
            kernel_len: 0x3000,
            version: 0x020F,
            loadflags: LOADED_HIGH,
            xloadflags: XLF_KERNEL_64 | 0x2,
            relocatable: true,
            pref_address: 0x100_0000,
            kernel_alignment: 0x20_0000,
            init_size: 4 << 20,
            initrd_addr_max: 0x7FFF_FFFF,
            cmdline_size: 2047,
        }
    }
}

impl Fixture {
    fn build(&self) -> Vec<u8> {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            self.setup_sects
        };
        let setup = (usize::from(sects) + 1) * 512;
        let mut img = std::vec![0u8; setup + self.kernel_len];
        let put = |img: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            img[at..at + bytes.len()].copy_from_slice(bytes)
        };
        img[offset::SETUP_SECTS] = self.setup_sects;
        put(
            &mut img,
            offset::SYSSIZE,
            &((self.kernel_len / 16) as u32).to_le_bytes(),
        );
        put(&mut img, offset::BOOT_FLAG, &BOOT_FLAG.to_le_bytes());
        // jmp short over the header, to 0x202 + 0x66 = 0x268 (the end of a 2.12+ header).
        put(&mut img, offset::JUMP, &[0xEB, 0x66]);
        put(&mut img, offset::HEADER, b"HdrS");
        put(&mut img, offset::VERSION, &self.version.to_le_bytes());
        put(&mut img, 0x20E, &0x1234u16.to_le_bytes()); // kernel_version
        img[offset::LOADFLAGS] = self.loadflags;
        put(
            &mut img,
            offset::INITRD_ADDR_MAX,
            &self.initrd_addr_max.to_le_bytes(),
        );
        put(
            &mut img,
            offset::KERNEL_ALIGNMENT,
            &self.kernel_alignment.to_le_bytes(),
        );
        img[offset::RELOCATABLE_KERNEL] = u8::from(self.relocatable);
        put(&mut img, offset::XLOADFLAGS, &self.xloadflags.to_le_bytes());
        put(
            &mut img,
            offset::CMDLINE_SIZE,
            &self.cmdline_size.to_le_bytes(),
        );
        put(
            &mut img,
            offset::PREF_ADDRESS,
            &self.pref_address.to_le_bytes(),
        );
        put(&mut img, offset::INIT_SIZE, &self.init_size.to_le_bytes());
        // Something past the header's end, which must not reach the zero page.
        img[0x270] = 0xEE;
        for (i, b) in img[setup..].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        img
    }
}

fn memory(size: u64) -> GuestMemory {
    GuestMemory::new(MockHost::leak(size / 4096 + 16), size).unwrap()
}

fn load_default(
    mem: &GuestMemory,
    fixture: &Fixture,
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<LinuxBoot, BzImageError> {
    load(mem, &fixture.build(), initrd, cmdline, Some(0xE0000))
}

#[test]
fn parses_a_valid_header() {
    let header = parse_header(&Fixture::default().build()).unwrap();
    assert_eq!(header.version, 0x020F);
    assert_eq!(header.setup_sects, 4);
    assert_eq!(header.kernel_size, 0x3000);
    assert_eq!(header.kernel_offset(), 0xA00);
    assert_eq!(header.init_size, 4 << 20);
    assert_eq!(header.header_end, 0x268);
    assert!(header.relocatable);
}

#[test]
fn zero_setup_sects_means_four() {
    let fixture = Fixture {
        setup_sects: 0,
        ..Fixture::default()
    };
    let header = parse_header(&fixture.build()).unwrap();
    assert_eq!(header.setup_sects, 4);
    assert_eq!(header.kernel_offset(), 5 * 512);
}

#[test]
fn header_errors() {
    let good = Fixture::default().build();
    assert_eq!(
        parse_header(&good[..0x200]),
        Err(BzImageError::Truncated {
            len: 0x200,
            needed: MIN_IMAGE_LEN as u64
        })
    );
    let mut bad = good.clone();
    bad[offset::BOOT_FLAG] = 0;
    assert_eq!(
        parse_header(&bad),
        Err(BzImageError::BadBootFlag { found: 0xAA00 })
    );
    let mut bad = good.clone();
    bad[offset::HEADER] = b'X';
    assert!(matches!(
        parse_header(&bad),
        Err(BzImageError::BadMagic { .. })
    ));
    let old = Fixture {
        version: 0x020B,
        ..Fixture::default()
    };
    let err = parse_header(&old.build()).unwrap_err();
    assert_eq!(err, BzImageError::ProtocolTooOld { version: 0x020B });
    assert!(err.to_string().contains("2.11"), "{err}");
    let no64 = Fixture {
        xloadflags: 0,
        ..Fixture::default()
    };
    assert_eq!(parse_header(&no64.build()), Err(BzImageError::No64BitEntry));
    let zimage = Fixture {
        loadflags: 0,
        ..Fixture::default()
    };
    assert_eq!(parse_header(&zimage.build()), Err(BzImageError::NotBzImage));
    let empty = Fixture {
        kernel_len: 0,
        ..Fixture::default()
    };
    assert_eq!(parse_header(&empty.build()), Err(BzImageError::EmptyKernel));
    // The kernel is shorter than syssize says.
    let cut = good.len() - 16;
    assert_eq!(
        parse_header(&good[..cut]),
        Err(BzImageError::Truncated {
            len: cut as u64,
            needed: good.len() as u64
        })
    );
}

#[test]
fn every_truncation_and_byte_flip_is_an_error_or_a_load_never_a_panic() {
    let good = Fixture::default().build();
    let mem = memory(32 * MIB);
    for len in 0..good.len() {
        assert!(load(&mem, &good[..len], None, "", None).is_err(), "{len}");
    }
    // Flip each header byte to a few values: anything may happen except a panic.
    for at in 0x1F0..0x270 {
        for value in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
            let mut img = good.clone();
            img[at] = value;
            let _ = load(&mem, &img, Some(b"initrd"), "console=ttyS0", None);
        }
    }
}

#[test]
fn loads_kernel_cmdline_and_initrd() {
    let mem = memory(32 * MIB);
    let fixture = Fixture::default();
    let img = fixture.build();
    let initrd = std::vec![0x5Au8; 0x1801];
    let boot = load(
        &mem,
        &img,
        Some(&initrd),
        "console=ttyS0 quiet",
        Some(0xE0000),
    )
    .unwrap();

    assert_eq!(boot.kernel_addr, 0x100_0000);
    assert_eq!(boot.kernel_end, 0x100_0000 + (4 << 20));
    let mut kernel = std::vec![0u8; 0x3000];
    mem.read(boot.kernel_addr, &mut kernel).unwrap();
    assert_eq!(kernel, img[0xA00..]);

    let (cmd_addr, cmd_len) = boot.cmdline;
    assert_eq!((cmd_addr, cmd_len), (CMDLINE, 19));
    let mut cmd = [0u8; 20];
    mem.read(cmd_addr, &mut cmd).unwrap();
    assert_eq!(&cmd, b"console=ttyS0 quiet\0");

    // The initrd sits as high as it can, page-aligned, ending inside RAM.
    let (initrd_addr, initrd_size) = boot.initrd.unwrap();
    assert_eq!(initrd_size, 0x1801);
    assert_eq!(initrd_addr % 4096, 0);
    assert_eq!(initrd_addr, 32 * MIB - 0x2000);
    let mut back = std::vec![0u8; 0x1801];
    mem.read(initrd_addr, &mut back).unwrap();
    assert_eq!(back, initrd);

    assert_eq!(
        boot.start,
        StartMode::LongMode {
            entry: 0x100_0200,
            cr3: crate::loader::layout::PML4,
            gdt: crate::loader::layout::BOOT_GDT,
            stack: BOOT_STACK_TOP,
            rsi: ZERO_PAGE,
        }
    );
}

#[test]
fn zero_page_fields() {
    let mem = memory(32 * MIB);
    let img = Fixture::default().build();
    let boot = load(&mem, &img, Some(&[1, 2, 3]), "root=/dev/vda", Some(0xE0000)).unwrap();
    let zp = |at: usize| ZERO_PAGE + at as u64;
    let mut page = [0u8; 4096];
    mem.read(ZERO_PAGE, &mut page).unwrap();

    // The setup header is copied from the image up to its end (0x268) and no further.
    for at in [
        0x1F1, 0x1F4, 0x1FE, 0x200, 0x202, 0x206, 0x20E, 0x22C, 0x236, 0x260,
    ] {
        if at != offset::TYPE_OF_LOADER && at != offset::LOADFLAGS {
            assert_eq!(page[at], img[at], "header byte {at:#x}");
        }
    }
    assert_eq!(mem.read_u16(zp(0x20E)).unwrap(), 0x1234);
    assert_eq!(page[0x270], 0, "bytes past the header are not copied");

    assert_eq!(page[offset::TYPE_OF_LOADER], 0xFF);
    assert_eq!(page[offset::LOADFLAGS], LOADED_HIGH | CAN_USE_HEAP);
    assert_eq!(mem.read_u16(zp(offset::HEAP_END_PTR)).unwrap(), 0xFE00);
    assert_eq!(mem.read_u32(zp(offset::CMD_LINE_PTR)).unwrap(), 0x2_0000);
    let (initrd_addr, _) = boot.initrd.unwrap();
    assert_eq!(
        u64::from(mem.read_u32(zp(offset::RAMDISK_IMAGE)).unwrap()),
        initrd_addr
    );
    assert_eq!(mem.read_u32(zp(offset::RAMDISK_SIZE)).unwrap(), 3);
    assert_eq!(mem.read_u64(zp(offset::ACPI_RSDP_ADDR)).unwrap(), 0xE0000);

    // e820: RAM, the reserved BIOS area, RAM to the end.
    assert_eq!(page[offset::E820_ENTRIES], 3);
    let entry = |i: u64| {
        let at = zp(offset::E820_TABLE) + i * 20;
        (
            mem.read_u64(at).unwrap(),
            mem.read_u64(at + 8).unwrap(),
            mem.read_u32(at + 16).unwrap(),
        )
    };
    assert_eq!(entry(0), (0, 0x9_FC00, E820Type::Ram as u32));
    assert_eq!(entry(1), (0x9_FC00, 0x6_0400, E820Type::Reserved as u32));
    assert_eq!(entry(2), (0x10_0000, 31 * MIB, E820Type::Ram as u32));
    assert_eq!(entry(3), (0, 0, 0));
}

#[test]
fn no_initrd_and_no_acpi_leave_their_fields_zero() {
    let mem = memory(32 * MIB);
    let boot = load(&mem, &Fixture::default().build(), None, "", None).unwrap();
    assert_eq!(boot.initrd, None);
    assert_eq!(
        mem.read_u32(ZERO_PAGE + offset::RAMDISK_IMAGE as u64),
        Ok(0)
    );
    assert_eq!(mem.read_u32(ZERO_PAGE + offset::RAMDISK_SIZE as u64), Ok(0));
    assert_eq!(
        mem.read_u64(ZERO_PAGE + offset::ACPI_RSDP_ADDR as u64),
        Ok(0)
    );
    assert_eq!(mem.read_u8(CMDLINE), Ok(0));
}

#[test]
fn initrd_respects_initrd_addr_max() {
    let mem = memory(64 * MIB);
    let fixture = Fixture {
        initrd_addr_max: (40 * MIB - 1) as u32,
        ..Fixture::default()
    };
    let boot = load_default(&mem, &fixture, Some(&[7; 5000]), "").unwrap();
    let (addr, size) = boot.initrd.unwrap();
    assert_eq!(addr, 40 * MIB - 0x2000);
    assert!(addr + size <= 40 * MIB);
    assert!(addr >= boot.kernel_end);
}

#[test]
fn initrd_too_large_or_empty() {
    let mem = memory(32 * MIB);
    // 32 MiB of RAM, kernel area ends at 20 MiB: 12 MiB of room.
    let big = std::vec![0u8; (12 * MIB + 1) as usize];
    assert_eq!(
        load_default(&mem, &Fixture::default(), Some(&big), ""),
        Err(BzImageError::BootFiles(BootFilesError::InitrdTooLarge {
            size: 12 * MIB + 1,
            room: 12 * MIB
        }))
    );
    let fits = std::vec![0u8; (12 * MIB) as usize];
    let boot = load_default(&mem, &Fixture::default(), Some(&fits), "").unwrap();
    assert_eq!(boot.initrd, Some((20 * MIB, 12 * MIB)));
    assert_eq!(
        load_default(&mem, &Fixture::default(), Some(&[]), ""),
        Err(BzImageError::BootFiles(BootFilesError::InitrdEmpty))
    );
}

#[test]
fn cmdline_limits() {
    let mem = memory(32 * MIB);
    let fixture = Fixture {
        cmdline_size: 8,
        ..Fixture::default()
    };
    assert!(load_default(&mem, &fixture, None, "12345678").is_ok());
    let err = load_default(&mem, &fixture, None, "123456789").unwrap_err();
    assert_eq!(
        err,
        BzImageError::BootFiles(BootFilesError::CmdlineTooLong {
            len: 9,
            max: 8,
            limit: CmdlineLimit::Kernel
        })
    );
    assert_eq!(
        err.to_string(),
        "the kernel command line is 9 bytes; this kernel accepts at most 8"
    );
    // A kernel that claims a huge limit is held to the layout's room.
    let fixture = Fixture {
        cmdline_size: u32::MAX,
        ..Fixture::default()
    };
    let long = "x".repeat(CMDLINE_MAX as usize);
    assert_eq!(
        load_default(&mem, &fixture, None, &long),
        Err(BzImageError::BootFiles(BootFilesError::CmdlineTooLong {
            len: CMDLINE_MAX,
            max: CMDLINE_MAX - 1,
            limit: CmdlineLimit::Kernel
        }))
    );
    assert_eq!(
        load_default(&mem, &Fixture::default(), None, "a\0b"),
        Err(BzImageError::BootFiles(BootFilesError::CmdlineHasNul))
    );
}

#[test]
fn kernel_must_fit_in_memory() {
    let mem = memory(16 * MIB);
    assert_eq!(
        load_default(&mem, &Fixture::default(), None, ""),
        Err(BzImageError::KernelDoesNotFit {
            load_addr: 16 * MIB,
            size: 4 * MIB,
            ram_end: 16 * MIB
        })
    );
    let mem = memory(32 * MIB);
    let huge = Fixture {
        init_size: u32::MAX,
        ..Fixture::default()
    };
    assert!(matches!(
        load_default(&mem, &huge, None, ""),
        Err(BzImageError::KernelDoesNotFit { .. })
    ));
}

#[test]
fn load_address_choice() {
    let mem = memory(64 * MIB);
    // A relocatable kernel's unaligned preference is rounded up to its alignment.
    let fixture = Fixture {
        pref_address: 0x110_0000,
        ..Fixture::default()
    };
    assert_eq!(
        load_default(&mem, &fixture, None, "").unwrap().kernel_addr,
        0x120_0000
    );
    // No preference: the default 16 MiB.
    let fixture = Fixture {
        pref_address: 0,
        ..Fixture::default()
    };
    assert_eq!(
        load_default(&mem, &fixture, None, "").unwrap().kernel_addr,
        16 * MIB
    );
    // A fixed kernel goes exactly where it asks, or nowhere.
    let fixed = Fixture {
        relocatable: false,
        pref_address: 0x110_0000,
        ..Fixture::default()
    };
    assert_eq!(
        load_default(&mem, &fixed, None, "").unwrap().kernel_addr,
        0x110_0000
    );
    let low = Fixture {
        relocatable: false,
        pref_address: 0x8000,
        ..Fixture::default()
    };
    assert_eq!(
        load_default(&mem, &low, None, ""),
        Err(BzImageError::NotRelocatable {
            pref_address: 0x8000
        })
    );
    let odd = Fixture {
        kernel_alignment: 0x30_0000,
        ..Fixture::default()
    };
    assert_eq!(
        load_default(&mem, &odd, None, ""),
        Err(BzImageError::BadAlignment {
            alignment: 0x30_0000
        })
    );
}

#[test]
fn page_tables_map_everything_the_kernel_touches() {
    let mem = memory(32 * MIB);
    let boot = load_default(&mem, &Fixture::default(), Some(&[1; 100]), "x").unwrap();
    let StartMode::LongMode {
        entry,
        cr3,
        gdt,
        stack,
        rsi,
    } = boot.start
    else {
        panic!("not long mode: {:?}", boot.start);
    };
    let regs = long_mode_registers(entry, cr3, gdt, stack, rsi);
    let (initrd, _) = boot.initrd.unwrap();
    for addr in [
        entry,
        boot.kernel_end - 1,
        rsi,
        rsi + 4095,
        CMDLINE,
        initrd,
        stack - 8,
        gdt,
    ] {
        assert_eq!(linear_to_physical(&mem, &regs, addr), Ok(addr), "{addr:#x}");
    }
    // The GDT's descriptors are there.
    assert_eq!(mem.read_u64(gdt + 8), Ok(boot64::GDT[1]));
}

/// Debian's kernel: set `KEEL_LINUX_BZIMAGE`, or run the QEMU http-bench once so that
/// `target/linux-guest/vmlinuz` exists. Skipped (with a message) otherwise.
#[test]
fn loads_debians_kernel_when_present() {
    let path = std::env::var("KEEL_LINUX_BZIMAGE").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/linux-guest/vmlinuz").into()
    });
    let Ok(image) = std::fs::read(&path) else {
        std::println!(
            "skipping: no Linux bzImage at {path} (set KEEL_LINUX_BZIMAGE to test a real kernel)"
        );
        return;
    };
    let header = parse_header(&image).unwrap();
    assert!(header.version >= MIN_PROTOCOL, "{:#x}", header.version);
    assert_ne!(header.xloadflags & XLF_KERNEL_64, 0);
    assert!(header.relocatable);
    assert!(header.kernel_size > MIB && header.kernel_size < 64 * MIB);
    assert!(u64::from(header.init_size) >= header.kernel_size);
    assert!(header.cmdline_size >= 255);
    std::println!(
        "{path}: protocol {:#x}, xloadflags {:#x}, init_size {:#x}, pref_address {:#x}",
        header.version,
        header.xloadflags,
        header.init_size,
        header.pref_address
    );

    let mem = memory(256 * MIB);
    let initrd = std::vec![0xA5u8; 1 << 20];
    let boot = load(
        &mem,
        &image,
        Some(&initrd),
        "console=ttyS0 panic=-1",
        Some(0xE0000),
    )
    .unwrap();
    assert_eq!(boot.kernel_addr, header.pref_address);
    let StartMode::LongMode { entry, rsi, .. } = boot.start else {
        panic!("not long mode");
    };
    assert_eq!(entry, boot.kernel_addr + 0x200);
    assert_eq!(rsi, ZERO_PAGE);
    let (initrd_addr, _) = boot.initrd.unwrap();
    assert!(initrd_addr >= boot.kernel_end);
    assert!(initrd_addr + (1 << 20) <= 256 * MIB);
    // The kernel's own header landed in the zero page.
    assert_eq!(mem.read_u32(ZERO_PAGE + offset::HEADER as u64), Ok(HDRS));
    let mut first = [0u8; 64];
    mem.read(boot.kernel_addr, &mut first).unwrap();
    let at = header.kernel_offset() as usize;
    assert_eq!(first, image[at..at + 64]);
}
