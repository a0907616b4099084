//! Host unit tests for EPT/NPT construction and walking, over [`MockHost`].

use super::*;
use crate::testing::MockHost;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// An arbitrary 1 GiB-aligned host-physical target (mapping never dereferences it).
const HPA: u64 = 0x40_0000_0000;

fn both() -> [NestedFormat; 2] {
    [NestedFormat::Npt, NestedFormat::Ept]
}

fn tables(format: NestedFormat) -> (&'static MockHost, NestedPageTables) {
    let host = MockHost::leak(4096);
    let t = NestedPageTables::new(host, format).unwrap();
    (host, t)
}

#[test]
fn new_tables_are_empty_with_an_aligned_root() {
    for format in both() {
        let (host, t) = tables(format);
        assert_eq!(t.format(), format);
        assert_eq!(t.root() % FRAME_SIZE, 0);
        assert_eq!(t.table_frames(), 1);
        assert_eq!(host.frames_in_use(), 1);
        assert_eq!(t.translate(0), None);
        assert_eq!(t.translate(GPA_LIMIT - 1), None);
        drop(t);
        assert_eq!(host.frames_in_use(), 0);
    }
}

#[test]
fn eptp_has_write_back_and_walk_length_4() {
    let (_, t) = tables(NestedFormat::Ept);
    assert_eq!(t.eptp(), t.root() | 6 | (3 << 3));
    assert_eq!(t.eptp() & !0xFFF, t.root());
    assert_eq!(t.eptp() & 0xFFF, 0x1E);
}

#[test]
fn aligned_range_uses_2mib_pages() {
    for format in both() {
        let (_, mut t) = tables(format);
        t.map(0, HPA, 8 * MIB, Access::RWX).unwrap();
        // Root + PDPT + PD, no page tables.
        assert_eq!(t.table_frames(), 3);
        for gpa in [0, 2 * MIB, 6 * MIB] {
            assert_eq!(t.leaf_entry(gpa).unwrap().1, LARGE_PAGE_SIZE, "{format:?}");
        }
        assert_eq!(t.translate(0x12_3456), Some((HPA + 0x12_3456, Access::RWX)));
        assert_eq!(
            t.translate(8 * MIB - 1),
            Some((HPA + 8 * MIB - 1, Access::RWX))
        );
        assert_eq!(t.translate(8 * MIB), None);
    }
}

#[test]
fn unaligned_edges_use_4kib_pages() {
    for format in both() {
        let (_, mut t) = tables(format);
        // 4 KiB below a 2 MiB boundary, one 2 MiB page, then 8 KiB.
        let gpa = 2 * MIB - FRAME_SIZE;
        let len = FRAME_SIZE + 2 * MIB + 2 * FRAME_SIZE;
        t.map(gpa, HPA + gpa, len, Access::RWX).unwrap();
        assert_eq!(t.leaf_entry(gpa).unwrap().1, FRAME_SIZE);
        assert_eq!(t.leaf_entry(2 * MIB).unwrap().1, LARGE_PAGE_SIZE);
        assert_eq!(t.leaf_entry(4 * MIB).unwrap().1, FRAME_SIZE);
        assert_eq!(t.leaf_entry(4 * MIB + FRAME_SIZE).unwrap().1, FRAME_SIZE);
        assert_eq!(t.leaf_entry(4 * MIB + 2 * FRAME_SIZE), None);
        assert_eq!(t.leaf_entry(gpa - FRAME_SIZE), None);
        // Root, PDPT, PD, and two page tables.
        assert_eq!(t.table_frames(), 5);
        for off in [0, 0xFFF, 0x1000, 0x12345, len - 1] {
            assert_eq!(
                t.translate(gpa + off),
                Some((HPA + gpa + off, Access::RWX)),
                "{format:?} +{off:#x}"
            );
        }
    }
}

#[test]
fn misaligned_host_address_forces_4kib_pages() {
    for format in both() {
        let (_, mut t) = tables(format);
        t.map(0, HPA + FRAME_SIZE, 4 * MIB, Access::RWX).unwrap();
        assert_eq!(t.leaf_entry(0).unwrap().1, FRAME_SIZE);
        assert_eq!(t.leaf_entry(2 * MIB).unwrap().1, FRAME_SIZE);
        assert_eq!(t.table_frames(), 3 + 2);
        assert_eq!(
            t.translate(3 * MIB + 5),
            Some((HPA + FRAME_SIZE + 3 * MIB + 5, Access::RWX))
        );
    }
}

#[test]
fn mappings_across_top_level_entries() {
    for format in both() {
        let (_, mut t) = tables(format);
        // Straddles a 1 GiB (PDPT entry) boundary and lands in a second PML4 entry too.
        t.map(GIB - 2 * MIB, HPA, 4 * MIB, Access::RW).unwrap();
        t.map(512 * GIB, HPA + 16 * MIB, 2 * MIB, Access::RX)
            .unwrap();
        assert_eq!(t.translate(GIB - 1), Some((HPA + 2 * MIB - 1, Access::RW)));
        assert_eq!(t.translate(GIB), Some((HPA + 2 * MIB, Access::RW)));
        assert_eq!(
            t.translate(512 * GIB + 7),
            Some((HPA + 16 * MIB + 7, Access::RX))
        );
        assert_eq!(t.translate(511 * GIB), None);
        // Highest mappable page.
        t.map(GPA_LIMIT - FRAME_SIZE, HPA, FRAME_SIZE, Access::R)
            .unwrap();
        assert_eq!(
            t.translate(GPA_LIMIT - 1),
            Some((HPA + FRAME_SIZE - 1, Access::R))
        );
        assert_eq!(t.translate(GPA_LIMIT), None);
        assert_eq!(t.translate(u64::MAX), None);
    }
}

#[test]
fn npt_entry_bits() {
    let (host, mut t) = tables(NestedFormat::Npt);
    t.map(0, HPA, 2 * MIB, Access::RWX).unwrap();
    t.map(2 * MIB, HPA + 2 * MIB, FRAME_SIZE, Access::RX)
        .unwrap();
    t.map(2 * MIB + FRAME_SIZE, HPA + 4 * MIB, FRAME_SIZE, Access::RW)
        .unwrap();
    // Non-leaf levels: P | RW | US.
    let pml4e = host.peek_u64(t.root());
    assert_eq!(pml4e & 0xFFF, 0x7);
    assert_eq!(pml4e >> 63, 0);
    let pdpte = host.peek_u64(pml4e & ADDR_MASK);
    assert_eq!(pdpte & 0xFFF, 0x7);
    let pd = pdpte & ADDR_MASK;
    let pde0 = host.peek_u64(pd);
    let pde1 = host.peek_u64(pd + 8);
    assert_eq!(pde1 & 0xFFF, 0x7);
    // 2 MiB RWX leaf: P | RW | US | PS, NX clear.
    assert_eq!(pde0, HPA | 0x87);
    assert_eq!(t.leaf_entry(0), Some((HPA | 0x87, LARGE_PAGE_SIZE)));
    // 4 KiB read/execute leaf: P | US, no RW, no PS.
    let pt = pde1 & ADDR_MASK;
    assert_eq!(host.peek_u64(pt), (HPA + 2 * MIB) | 0x5);
    // 4 KiB read/write leaf: P | RW | US | NX.
    assert_eq!(host.peek_u64(pt + 8), (HPA + 4 * MIB) | 0x7 | (1 << 63));
    assert_eq!(
        t.translate(2 * MIB + FRAME_SIZE + 1),
        Some((HPA + 4 * MIB + 1, Access::RW))
    );
}

#[test]
fn ept_entry_bits() {
    let (host, mut t) = tables(NestedFormat::Ept);
    t.map(0, HPA, 2 * MIB, Access::RWX).unwrap();
    t.map(2 * MIB, HPA + 2 * MIB, FRAME_SIZE, Access::R)
        .unwrap();
    t.map(2 * MIB + FRAME_SIZE, HPA + 4 * MIB, FRAME_SIZE, Access::RX)
        .unwrap();
    // Non-leaf levels: R | W | X, nothing else.
    let pml4e = host.peek_u64(t.root());
    assert_eq!(pml4e & !ADDR_MASK, 0x7);
    let pdpte = host.peek_u64(pml4e & ADDR_MASK);
    assert_eq!(pdpte & !ADDR_MASK, 0x7);
    let pd = pdpte & ADDR_MASK;
    // 2 MiB RWX leaf: RWX | WB << 3 | bit 7; IPAT (bit 6) clear.
    assert_eq!(host.peek_u64(pd), HPA | 0x7 | 0x30 | 0x80);
    let pde1 = host.peek_u64(pd + 8);
    assert_eq!(pde1 & !ADDR_MASK, 0x7);
    let pt = pde1 & ADDR_MASK;
    // 4 KiB read-only leaf: R | WB.
    assert_eq!(host.peek_u64(pt), (HPA + 2 * MIB) | 0x31);
    // 4 KiB read/execute leaf: R | X | WB.
    assert_eq!(host.peek_u64(pt + 8), (HPA + 4 * MIB) | 0x35);
    assert_eq!(host.peek_u64(pt + 8) & EPT_IGNORE_PAT, 0);
    assert_eq!(
        t.translate(2 * MIB + 3),
        Some((HPA + 2 * MIB + 3, Access::R))
    );
}

#[test]
fn bad_arguments_are_refused_and_change_nothing() {
    for format in both() {
        let (host, mut t) = tables(format);
        let cases = [
            (
                t.map(0x800, HPA, FRAME_SIZE, Access::RWX),
                MemoryError::Unaligned {
                    what: "guest-physical address",
                    value: 0x800,
                },
            ),
            (
                t.map(0, HPA + 1, FRAME_SIZE, Access::RWX),
                MemoryError::Unaligned {
                    what: "host-physical address",
                    value: HPA + 1,
                },
            ),
            (
                t.map(0, HPA, 100, Access::RWX),
                MemoryError::Unaligned {
                    what: "length",
                    value: 100,
                },
            ),
            (
                t.map(GPA_LIMIT - FRAME_SIZE, HPA, 2 * FRAME_SIZE, Access::RWX),
                MemoryError::AddressTooLarge {
                    what: "guest-physical",
                    start: GPA_LIMIT - FRAME_SIZE,
                    len: 2 * FRAME_SIZE,
                },
            ),
            (
                t.map(u64::MAX - 0xFFF, HPA, FRAME_SIZE, Access::RWX),
                MemoryError::AddressTooLarge {
                    what: "guest-physical",
                    start: u64::MAX - 0xFFF,
                    len: FRAME_SIZE,
                },
            ),
            (
                t.map(0, HPA_LIMIT, FRAME_SIZE, Access::RWX),
                MemoryError::AddressTooLarge {
                    what: "host-physical",
                    start: HPA_LIMIT,
                    len: FRAME_SIZE,
                },
            ),
            (
                t.map(0, HPA, u64::MAX - 0xFFF, Access::RWX),
                MemoryError::AddressTooLarge {
                    what: "guest-physical",
                    start: 0,
                    len: u64::MAX - 0xFFF,
                },
            ),
            (
                t.map(
                    0,
                    HPA,
                    FRAME_SIZE,
                    Access {
                        read: false,
                        write: true,
                        execute: true,
                    },
                ),
                MemoryError::UnsupportedAccess {
                    read: false,
                    write: true,
                    execute: true,
                },
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, Err(want), "{format:?}");
        }
        assert_eq!(t.table_frames(), 1, "nothing was allocated");
        assert_eq!(host.frames_in_use(), 1);
        // len 0 is a no-op.
        t.map(0, HPA, 0, Access::RWX).unwrap();
        assert_eq!(t.translate(0), None);
    }
}

#[test]
fn overlapping_mappings_are_refused_atomically() {
    for format in both() {
        let (_, mut t) = tables(format);
        t.map(4 * MIB, HPA, 2 * MIB, Access::RWX).unwrap();
        t.map(8 * MIB + FRAME_SIZE, HPA, FRAME_SIZE, Access::RWX)
            .unwrap();
        // Overlaps the 2 MiB page in its middle.
        assert_eq!(
            t.map(5 * MIB, HPA, FRAME_SIZE, Access::RWX),
            Err(MemoryError::AlreadyMapped { gpa: 5 * MIB })
        );
        // Starts free, runs into the 2 MiB page: nothing from the free part stays mapped.
        assert_eq!(
            t.map(0, HPA, 6 * MIB, Access::RWX),
            Err(MemoryError::AlreadyMapped { gpa: 4 * MIB })
        );
        assert_eq!(t.translate(0), None);
        // A 2 MiB request over a slot holding one 4 KiB page.
        assert_eq!(
            t.map(8 * MIB, HPA, 2 * MIB, Access::RWX),
            Err(MemoryError::AlreadyMapped {
                gpa: 8 * MIB + FRAME_SIZE
            })
        );
        assert_eq!(t.translate(8 * MIB), None);
        // The original mappings are intact.
        assert_eq!(t.translate(4 * MIB), Some((HPA, Access::RWX)));
        assert_eq!(t.translate(8 * MIB + FRAME_SIZE), Some((HPA, Access::RWX)));
    }
}

#[test]
fn out_of_memory_undoes_the_partial_mapping() {
    for format in both() {
        let host = MockHost::leak(4096);
        let mut t = NestedPageTables::new(host, format).unwrap();
        // Root exists; allow PDPT + PD + one PT, then fail the second PT.
        host.set_fail_after(Some(3));
        let gpa = 2 * MIB - FRAME_SIZE;
        let err = t
            .map(gpa, HPA + FRAME_SIZE, 4 * MIB, Access::RWX)
            .unwrap_err();
        assert_eq!(
            err,
            MemoryError::OutOfHostMemory {
                requested: FRAME_SIZE
            }
        );
        for off in (0..4 * MIB).step_by(FRAME_SIZE as usize) {
            assert_eq!(t.translate(gpa + off), None, "{format:?} +{off:#x}");
        }
        // With memory back, the same map works; the leftover empty page table at a 2 MiB
        // slot is used for 4 KiB pages instead.
        host.set_fail_after(None);
        t.map(0, HPA, 6 * MIB, Access::RWX).unwrap();
        for gpa in [0, 2 * MIB - 1, 2 * MIB, 4 * MIB + 17, 6 * MIB - 1] {
            assert_eq!(t.translate(gpa), Some((HPA + gpa, Access::RWX)));
        }
        assert_eq!(t.leaf_entry(0).unwrap().1, FRAME_SIZE);
        assert_eq!(t.leaf_entry(4 * MIB).unwrap().1, LARGE_PAGE_SIZE);
        drop(t);
        assert_eq!(host.frames_in_use(), 0);
    }
}

#[test]
fn build_maps_all_guest_ram() {
    for format in both() {
        let host = MockHost::leak(8192);
        let mem = GuestMemory::new(host, 8 * MIB).unwrap();
        let before = host.frames_in_use();
        let t = NestedPageTables::build(&mem, format).unwrap();
        assert_eq!(t.table_frames(), 3, "2 MiB pages only");
        for gpa in (0..8 * MIB).step_by(0x3_3333) {
            assert_eq!(t.translate(gpa), Some((mem.hpa(gpa).unwrap(), Access::RWX)));
        }
        assert_eq!(t.translate(8 * MIB), None);
        drop(t);
        assert_eq!(host.frames_in_use(), before);
    }
}

#[test]
fn build_over_fragmented_ram_uses_4kib_pages() {
    for format in both() {
        let host = MockHost::leak(8192);
        host.set_gap_frames(1);
        host.set_fragmented_after(Some(1));
        let mem = GuestMemory::new(host, 4 * MIB).unwrap();
        assert_eq!(mem.regions().len(), 513);
        let t = NestedPageTables::build(&mem, format).unwrap();
        assert_eq!(t.leaf_entry(0).unwrap().1, LARGE_PAGE_SIZE);
        assert_eq!(t.leaf_entry(2 * MIB).unwrap().1, FRAME_SIZE);
        for gpa in (0..4 * MIB).step_by(0x1_1111) {
            assert_eq!(t.translate(gpa).map(|x| x.0), mem.hpa(gpa), "{gpa:#x}");
        }
    }
}

#[test]
fn error_messages() {
    assert_eq!(
        MemoryError::AlreadyMapped { gpa: 0x1000 }.to_string(),
        "guest-physical address 0x1000 is already mapped"
    );
    assert!(
        MemoryError::Unaligned {
            what: "length",
            value: 5
        }
        .to_string()
        .contains("4 KiB aligned")
    );
}
