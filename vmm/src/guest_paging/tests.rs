//! Host unit tests for guest page walks and instruction fetch: page tables are built by hand
//! in a [`GuestMemory`] over [`MockHost`].

use super::*;
use crate::testing::MockHost;
use crate::vcpu::Segment;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const RAM: u64 = 8 * MIB;
const P: u64 = 1;
const RW: u64 = 2;
const PS: u64 = 1 << 7;
const CR0_PE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
/// Descriptor access rights: code segment, present, L (64-bit).
const CS_LONG: u32 = 0x9B | (1 << 13);
/// Descriptor access rights: code segment, present, D (32-bit).
const CS_32: u32 = 0x9B | (1 << 14);

fn memory() -> GuestMemory {
    GuestMemory::new(MockHost::leak(4096), RAM).unwrap()
}

fn real_mode(cs_selector: u16, ip: u64) -> Registers {
    Registers {
        rip: ip,
        cs: Segment {
            selector: cs_selector,
            base: u64::from(cs_selector) << 4,
            limit: 0xFFFF,
            access: 0x9B,
        },
        ..Registers::default()
    }
}

fn paging32(cr3: u64, pse: bool) -> Registers {
    Registers {
        cr0: CR0_PE | CR0_PG,
        cr3,
        cr4: if pse { CR4_PSE } else { 0 },
        cs: Segment {
            access: CS_32,
            limit: u32::MAX,
            ..Segment::default()
        },
        ..Registers::default()
    }
}

fn pae(cr3: u64) -> Registers {
    Registers {
        cr4: CR4_PAE,
        ..paging32(cr3, false)
    }
}

fn long_mode(cr3: u64) -> Registers {
    Registers {
        cr0: CR0_PE | CR0_PG,
        cr3,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        cs: Segment {
            access: CS_LONG,
            ..Segment::default()
        },
        ..Registers::default()
    }
}

#[test]
fn paging_off_is_identity() {
    let mem = memory();
    let regs = real_mode(0, 0);
    for linear in [0, 0x7C00, 0x10_FFEF, RAM + 5] {
        assert_eq!(linear_to_physical(&mem, &regs, linear), Ok(linear));
    }
    assert_eq!(
        linear_to_physical(&mem, &regs, 0x1_0000_1234),
        Ok(0x1234),
        "32-bit linear"
    );
}

#[test]
fn paging_32_bit() {
    let mem = memory();
    // PD at 0x1000: PDE 0 → PT at 0x2000; PDE 1 → 4 MiB page at 0x40_0000 (with PSE);
    // PDE 2 → 4 MiB page with PSE-36 bits; PDE 3 not present.
    mem.write_u32(0x1000, 0x2000 | P as u32).unwrap();
    mem.write_u32(0x1004, 0x40_0000 | (P | PS) as u32).unwrap();
    mem.write_u32(0x1008, 0x0040_0000 | (0x12 << 13) | (P | PS) as u32)
        .unwrap();
    // PT: PTE 5 → 0x30_0000; PTE 6 not present.
    mem.write_u32(0x2000 + 5 * 4, 0x30_0000 | P as u32).unwrap();

    let regs = paging32(0x1000, true);
    assert_eq!(linear_to_physical(&mem, &regs, 0x5123), Ok(0x30_0123));
    assert_eq!(
        linear_to_physical(&mem, &regs, 0x6000),
        Err(WalkError::NotPresent { linear: 0x6000 })
    );
    assert_eq!(
        linear_to_physical(&mem, &regs, 0x40_1234 + 0x10_0000),
        Ok(0x50_1234)
    );
    assert_eq!(
        linear_to_physical(&mem, &regs, 0x80_0042),
        Ok(0x12_0040_0042),
        "PSE-36"
    );
    assert_eq!(
        linear_to_physical(&mem, &regs, 0xC0_0000),
        Err(WalkError::NotPresent { linear: 0xC0_0000 })
    );
    // Upper 32 bits of the linear address are ignored outside long mode.
    assert_eq!(
        linear_to_physical(&mem, &regs, 0xFFFF_FFFF_0000_5123),
        Ok(0x30_0123)
    );
    // Without CR4.PSE the PS bit is ignored: PDE 1 points at a "page table" at 0x40_0000.
    let no_pse = paging32(0x1000, false);
    mem.write_u32(0x40_0000 + 4, 0x7000 | P as u32).unwrap();
    assert_eq!(linear_to_physical(&mem, &no_pse, 0x40_1ABC), Ok(0x7ABC));
    // A page directory outside RAM.
    let far = paging32(0xFFFF_F000, true);
    assert_eq!(
        linear_to_physical(&mem, &far, 0x5000),
        Err(WalkError::TableOutsideRam { gpa: 0xFFFF_F000 })
    );
}

#[test]
fn paging_pae() {
    let mem = memory();
    // PDPT at 0x1020 (32-byte aligned, not page aligned): PDPTE 0 → PD at 0x2000.
    mem.write_u64(0x1020, 0x2000 | P).unwrap();
    // PD: PDE 0 → PT at 0x3000; PDE 1 → 2 MiB page at 0x60_0000.
    mem.write_u64(0x2000, 0x3000 | P | RW).unwrap();
    mem.write_u64(0x2008, 0x60_0000 | P | PS).unwrap();
    // PT: PTE 1 → 0x50_0000.
    mem.write_u64(0x3008, 0x50_0000 | P).unwrap();
    // PDPTE 2 → PD outside RAM.
    mem.write_u64(0x1030, 0x1_0000_0000 | P).unwrap();

    let regs = pae(0x1020);
    assert_eq!(linear_to_physical(&mem, &regs, 0x1ABC), Ok(0x50_0ABC));
    assert_eq!(
        linear_to_physical(&mem, &regs, 0x2ABC),
        Err(WalkError::NotPresent { linear: 0x2ABC })
    );
    assert_eq!(
        linear_to_physical(&mem, &regs, 0x20_0000 + 0x1_2345),
        Ok(0x61_2345)
    );
    assert_eq!(
        linear_to_physical(&mem, &regs, 0xC000_0000),
        Err(WalkError::NotPresent {
            linear: 0xC000_0000
        })
    );
    assert_eq!(
        linear_to_physical(&mem, &regs, 0x8000_0000),
        Err(WalkError::TableOutsideRam { gpa: 0x1_0000_0000 })
    );
}

/// 4-level tables: PML4 at 0x1000; PML4E 0 and 511 → PDPT at 0x2000; PDPTE 0 → PD at
/// 0x3000; PDPTE 1 → 1 GiB page at 0; PD 0 → 2 MiB page at 0x20_0000; PD 1 → PT at
/// 0x5000; PT 0 → 0x70_0000; PML4E 2 → a PDPT outside RAM.
fn long_mode_tables(mem: &GuestMemory) {
    mem.write_u64(0x1000, 0x2000 | P | RW).unwrap();
    mem.write_u64(0x1000 + 511 * 8, 0x2000 | P | RW).unwrap();
    mem.write_u64(0x1000 + 2 * 8, 0x1_0000_0000 | P).unwrap();
    mem.write_u64(0x2000, 0x3000 | P | RW).unwrap();
    mem.write_u64(0x2008, P | RW | PS).unwrap();
    mem.write_u64(0x3000, 0x20_0000 | P | RW | PS).unwrap();
    mem.write_u64(0x3008, 0x5000 | P | RW).unwrap();
    mem.write_u64(0x5000, 0x70_0000 | P | (1 << 63)).unwrap();
}

#[test]
fn paging_4_level() {
    let mem = memory();
    long_mode_tables(&mem);
    // PCID bits in CR3 are ignored.
    let regs = long_mode(0x1000 | 0x5);
    let cases = [
        (0x1234, Ok(0x20_1234)),
        (0x20_0056, Ok(0x70_0056)),
        (0x20_1000, Err(WalkError::NotPresent { linear: 0x20_1000 })),
        (GIB + 0x1234, Ok(0x1234)),
        (2 * GIB, Err(WalkError::NotPresent { linear: 2 * GIB })),
        (0xFFFF_FF80_0000_1234, Ok(0x20_1234)),
        (
            0x0000_8000_0000_0000,
            Err(WalkError::NonCanonical {
                linear: 0x0000_8000_0000_0000,
            }),
        ),
        (
            0xFFFF_0000_0000_0000,
            Err(WalkError::NonCanonical {
                linear: 0xFFFF_0000_0000_0000,
            }),
        ),
        (
            2 << 39,
            Err(WalkError::TableOutsideRam { gpa: 0x1_0000_0000 }),
        ),
        (1 << 39, Err(WalkError::NotPresent { linear: 1 << 39 })),
    ];
    for (linear, want) in cases {
        assert_eq!(linear_to_physical(&mem, &regs, linear), want, "{linear:#x}");
    }
    let la57 = Registers {
        cr4: CR4_PAE | CR4_LA57,
        ..regs
    };
    assert_eq!(
        linear_to_physical(&mem, &la57, 0x1234),
        Err(WalkError::FiveLevelPaging)
    );
}

#[test]
fn fetch_in_real_mode() {
    let mem = memory();
    let code: Vec<u8> = (1..=20).collect();
    mem.write(0x1_0100, &code).unwrap();
    let regs = real_mode(0x1000, 0x100);
    let (bytes, n) = fetch_instruction(&mem, &regs).unwrap();
    assert_eq!(n, 15);
    assert_eq!(&bytes[..], &code[..15]);
}

#[test]
fn fetch_wraps_ip_in_16_bit_code() {
    let mem = memory();
    mem.write(0x2_FFFA, &[1, 2, 3, 4, 5, 6]).unwrap();
    mem.write(0x2_0000, &[7, 8, 9]).unwrap();
    mem.write(0x3_0000, &[0xEE; 16]).unwrap();
    let regs = real_mode(0x2000, 0xFFFA);
    let (bytes, n) = fetch_instruction(&mem, &regs).unwrap();
    assert_eq!(n, 15);
    assert_eq!(&bytes[..9], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn fetch_stops_at_the_end_of_ram() {
    let mem = memory();
    let mut regs = real_mode(0, 0);
    regs.cs.base = RAM - 8;
    mem.write(RAM - 8, &[0x90; 8]).unwrap();
    let (bytes, n) = fetch_instruction(&mem, &regs).unwrap();
    assert_eq!(n, 8);
    assert_eq!(&bytes[..8], &[0x90; 8]);
    assert_eq!(&bytes[8..], &[0; 7]);
    regs.cs.base = RAM;
    assert_eq!(
        fetch_instruction(&mem, &regs),
        Err(WalkError::CodeOutsideRam { gpa: RAM })
    );
}

#[test]
fn fetch_across_a_page_boundary_in_long_mode() {
    let mem = memory();
    long_mode_tables(&mem);
    // Linear 0x20_0000.. is a PT: map linear page 0x20_1000 at 0x40_0000 (not adjacent to
    // the 0x70_0000 backing page 0x20_0000).
    mem.write_u64(0x5008, 0x40_0000 | P).unwrap();
    mem.write(0x70_0FF8, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    mem.write(0x40_0000, &[9, 10, 11, 12, 13, 14, 15, 16])
        .unwrap();
    let mut regs = long_mode(0x1000);
    regs.rip = 0x20_0FF8;
    // CS.base is ignored in 64-bit mode.
    regs.cs.base = 0x1234_5678;
    let (bytes, n) = fetch_instruction(&mem, &regs).unwrap();
    assert_eq!(n, 15);
    assert_eq!(&bytes[..], &(1..=15).collect::<Vec<u8>>()[..]);
}

#[test]
fn fetch_returns_fewer_bytes_when_the_next_page_is_absent() {
    let mem = memory();
    long_mode_tables(&mem);
    mem.write(0x70_0FFD, &[0x8b, 0x03, 0x90]).unwrap();
    let mut regs = long_mode(0x1000);
    regs.rip = 0x20_0FFD;
    let (bytes, n) = fetch_instruction(&mem, &regs).unwrap();
    assert_eq!(n, 3);
    assert_eq!(&bytes[..3], &[0x8b, 0x03, 0x90]);
    // The first page absent is an error.
    regs.rip = 0x20_1000;
    assert_eq!(
        fetch_instruction(&mem, &regs),
        Err(WalkError::NotPresent { linear: 0x20_1000 })
    );
    // RIP at the top of the canonical lower half: the next byte is non-canonical.
    mem.write_u64(0x1000 + 255 * 8, 0x2000 | P).unwrap();
    mem.write_u64(0x2000 + 511 * 8, 0x3000 | P).unwrap();
    mem.write_u64(0x3000 + 511 * 8, 0x20_0000 | P | PS).unwrap();
    regs.rip = 0x7FFF_FFFF_FFFF;
    let (_, n) = fetch_instruction(&mem, &regs).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn fetch_in_compatibility_mode_uses_cs_base() {
    let mem = memory();
    long_mode_tables(&mem);
    let mut regs = long_mode(0x1000);
    regs.cs.access = CS_32;
    regs.cs.base = 0x10_0000;
    regs.rip = 0x10_0010;
    // Linear 0x20_0010 → PD entry 1 → PT entry 0 → 0x70_0000.
    mem.write(0x70_0010, &[0xAA; 15]).unwrap();
    assert_eq!(regs.code_bitness(), 32);
    let (bytes, n) = fetch_instruction(&mem, &regs).unwrap();
    assert_eq!((bytes, n), ([0xAA; 15], 15));
}

#[test]
fn fetch_with_32_bit_paging() {
    let mem = memory();
    mem.write_u32(0x1000, 0x2000 | P as u32).unwrap();
    mem.write_u32(0x2000 + 4 * 4, 0x9000 | P as u32).unwrap();
    mem.write_u32(0x2000 + 5 * 4, 0x3000 | P as u32).unwrap();
    mem.write(0x9FFE, &[1, 2]).unwrap();
    mem.write(0x3000, &[3, 4, 5]).unwrap();
    let mut regs = paging32(0x1000, false);
    regs.rip = 0x4FFE;
    let (bytes, n) = fetch_instruction(&mem, &regs).unwrap();
    assert_eq!(n, 15);
    assert_eq!(&bytes[..5], &[1, 2, 3, 4, 5]);
}

#[test]
fn garbage_tables_never_panic() {
    let mem = memory();
    // Fill the first 64 KiB with pseudo-random entries and walk many addresses in every mode.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..(64 * 1024 / 8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        mem.write_u64(i * 8, state).unwrap();
    }
    for regs in [paging32(0x1000, true), pae(0x1020), long_mode(0x1000)] {
        for k in 0..4096u64 {
            let linear = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let _ = linear_to_physical(&mem, &regs, linear);
            let _ = fetch_instruction(
                &mem,
                &Registers {
                    rip: linear,
                    ..regs
                },
            );
        }
    }
}

#[test]
fn error_messages() {
    assert_eq!(
        WalkError::NotPresent { linear: 0x1000 }.to_string(),
        "guest linear address 0x1000 is not mapped by the guest's page tables"
    );
    assert!(
        WalkError::TableOutsideRam { gpa: 0x1 }
            .to_string()
            .contains("outside guest RAM")
    );
}
