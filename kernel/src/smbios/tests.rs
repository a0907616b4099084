//! Byte fixtures: QEMU-like 2.8 and 3.0 tables, and every way they can be broken.

use std::string::{String, ToString};
use std::vec::Vec;

use super::entry::{self, EntryPoint, SMBIOS_GUID, SMBIOS3_GUID};
use super::table::{is_placeholder, parse_table};
use super::*;

/// Physical memory as a few byte ranges; reads outside them fail.
struct Memory(Vec<(u64, Vec<u8>)>);

impl PhysRead for Memory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        for (base, bytes) in &self.0 {
            let Some(off) = addr.checked_sub(*base) else {
                continue;
            };
            let Some(src) = bytes.get(off as usize..off as usize + buf.len()) else {
                continue;
            };
            buf.copy_from_slice(src);
            return true;
        }
        false
    }
}

fn structure(kind: u8, fields: &[u8], strings: &[&str]) -> Vec<u8> {
    let mut s = vec![kind, (4 + fields.len()) as u8, 0x00, 0x01];
    s.extend_from_slice(fields);
    for text in strings {
        s.extend_from_slice(text.as_bytes());
        s.push(0);
    }
    if strings.is_empty() {
        s.push(0);
    }
    s.push(0);
    s
}

/// Type 0 with vendor 1, version 2, date 3, as SeaBIOS/QEMU lay it out.
fn bios(strings: &[&str]) -> Vec<u8> {
    // vendor, version, start segment (2), date, ROM size, characteristics (8), ext (2),
    // release major/minor, EC major/minor.
    let mut fields = vec![1, 2, 0x00, 0xe8, 3, 0];
    fields.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 0]);
    fields.extend_from_slice(&[0, 0x1c, 0, 0, 0xff, 0xff]);
    structure(0, &fields, strings)
}

/// Type 1 with manufacturer 1, product 2, version 3, serial 4.
fn system(strings: &[&str]) -> Vec<u8> {
    let mut fields = vec![1, 2, 3, 4];
    fields.extend_from_slice(&[0x11; 16]); // UUID
    fields.extend_from_slice(&[6, 0, 0]); // wake-up type, SKU, family
    structure(1, &fields, strings)
}

fn end() -> Vec<u8> {
    structure(127, &[], &[])
}

fn qemu_table() -> (Vec<u8>, u16) {
    let mut t = bios(&["TestBIOS", "9.9", "04/01/2014"]);
    t.extend(system(&["KeelTest", "Rack9", "pc-q35", "SN-4711"]));
    t.extend(structure(3, &[1, 1, 0, 0, 0], &["QEMU"]));
    t.extend(end());
    (t, 4)
}

fn fix_checksum(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    let sum = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    bytes[at] = 0u8.wrapping_sub(sum);
}

fn entry_v2(table: u32, len: u16, count: u16) -> Vec<u8> {
    let mut e = vec![0u8; 0x1f];
    e[..4].copy_from_slice(b"_SM_");
    e[5] = 0x1f;
    e[6] = 2;
    e[7] = 8;
    e[0x10..0x15].copy_from_slice(b"_DMI_");
    e[0x16..0x18].copy_from_slice(&len.to_le_bytes());
    e[0x18..0x1c].copy_from_slice(&table.to_le_bytes());
    e[0x1c..0x1e].copy_from_slice(&count.to_le_bytes());
    e[0x1e] = 0x28;
    fix_checksum(&mut e[0x10..0x1f], 5);
    fix_checksum(&mut e, 4);
    e
}

fn entry_v3(table: u64, max_len: u32) -> Vec<u8> {
    let mut e = vec![0u8; 0x18];
    e[..5].copy_from_slice(b"_SM3_");
    e[6] = 0x18;
    e[7] = 3;
    e[8] = 0;
    e[0x0a] = 1;
    e[0x0c..0x10].copy_from_slice(&max_len.to_le_bytes());
    e[0x10..0x18].copy_from_slice(&table.to_le_bytes());
    fix_checksum(&mut e, 5);
    e
}

/// The F-segment with `entry` at offset `at`.
fn f_segment(entries: &[(usize, Vec<u8>)]) -> (u64, Vec<u8>) {
    let mut seg = vec![0u8; 0x1_0000];
    for (at, e) in entries {
        seg[*at..*at + e.len()].copy_from_slice(e);
    }
    (0xf_0000, seg)
}

const TABLE_AT: u64 = 0x7fe0_0000;

fn read_bios(mem: &Memory) -> Hardware {
    let mut scratch = vec![0u8; MAX_TABLE];
    read(mem, BootPath::Multiboot2Bios, None, &mut scratch)
}

fn text(s: &str) -> Option<Text> {
    Some(Text::try_from(s).unwrap())
}

fn assert_qemu_values(hw: &Hardware) {
    assert_eq!(hw.vendor, text("KeelTest"));
    assert_eq!(hw.product, text("Rack9"));
    assert_eq!(hw.serial, text("SN-4711"));
    assert_eq!(hw.bios_vendor, text("TestBIOS"));
    assert_eq!(hw.bios_version, text("9.9"));
    assert_eq!(hw.bios_date, text("04/01/2014"));
}

#[test]
fn a_2_8_table_in_the_f_segment_is_read() {
    let (table, count) = qemu_table();
    let e = entry_v2(TABLE_AT as u32, table.len() as u16, count);
    let mem = Memory(vec![f_segment(&[(0x5a0, e)]), (TABLE_AT, table)]);
    let hw = read_bios(&mem);
    assert_eq!(hw.source, Some(Version { major: 2, minor: 8 }));
    assert_eq!(hw.source.unwrap().to_string(), "SMBIOS 2.8");
    assert_qemu_values(&hw);
    assert!(hw.warnings.is_empty(), "{:?}", hw.warnings);
}

#[test]
fn a_3_0_table_is_preferred_over_2_x() {
    let (table, count) = qemu_table();
    let mut other = bios(&["Old", "1", "x"]);
    other.extend(end());
    let v2 = entry_v2(0x7000_0000, other.len() as u16, 2);
    // The 3.x maximum size is an upper bound: the walk stops at type 127.
    let v3 = entry_v3(TABLE_AT, table.len() as u32 + 512);
    let mut padded = table.clone();
    padded.extend([0xaa; 512]);
    let mem = Memory(vec![
        f_segment(&[(0x10, v2), (0x800, v3)]),
        (0x7000_0000, other),
        (TABLE_AT, padded),
    ]);
    let hw = read_bios(&mem);
    assert_eq!(hw.source, Some(Version { major: 3, minor: 0 }));
    assert_qemu_values(&hw);
    assert!(hw.warnings.is_empty(), "{:?}", hw.warnings);
    let _ = count;
}

#[test]
fn a_3_x_maximum_past_readable_memory_still_reads_the_table() {
    let (table, _) = qemu_table();
    let v3 = entry_v3(TABLE_AT, 0xffff);
    let mem = Memory(vec![f_segment(&[(0x100, v3)]), (TABLE_AT, table)]);
    let hw = read_bios(&mem);
    assert_qemu_values(&hw);
}

#[test]
fn a_bad_checksum_is_skipped_with_a_warning() {
    let (table, count) = qemu_table();
    let mut bad = entry_v2(TABLE_AT as u32, table.len() as u16, count);
    bad[0x18] ^= 0x40; // the table address, now wrong, and the sum with it
    let good = entry_v2(TABLE_AT as u32, table.len() as u16, count);
    let mem = Memory(vec![
        f_segment(&[(0x20, bad), (0x40, good)]),
        (TABLE_AT, table.clone()),
    ]);
    let hw = read_bios(&mem);
    assert_qemu_values(&hw);
    assert!(matches!(
        hw.warnings[..],
        [Warning::EntryChecksum {
            anchor: "_SM_",
            address: 0xf_0020
        }]
    ));

    let mut only_bad = entry_v3(TABLE_AT, 4096);
    only_bad[0x0c] ^= 1;
    let mem = Memory(vec![f_segment(&[(0x20, only_bad)]), (TABLE_AT, table)]);
    let hw = read_bios(&mem);
    assert_eq!(hw.source, None, "no valid entry point: no SMBIOS");
    assert_eq!(hw.vendor, None);
    assert!(hw.warnings[0].to_string().contains("fails its checksum"));
}

#[test]
fn an_intermediate_checksum_counts_too() {
    let mut e = entry_v2(TABLE_AT as u32, 100, 3);
    e[0x1e] ^= 1; // inside the _DMI_ part only
    fix_checksum(&mut e, 4); // the outer sum is right again
    assert!(matches!(
        entry::parse_entry(&e, 0),
        Err(Warning::EntryChecksum { .. })
    ));
}

#[test]
fn malformed_entry_points_are_refused() {
    let mut short = entry_v3(TABLE_AT, 1);
    short[6] = 0x10;
    assert!(matches!(
        entry::parse_entry(&short, 0),
        Err(Warning::EntryMalformed { .. })
    ));
    let mut no_dmi = entry_v2(1, 1, 1);
    no_dmi[0x10] = b'X';
    assert!(matches!(
        entry::parse_entry(&no_dmi, 0),
        Err(Warning::EntryMalformed { reason, .. }) if reason.contains("_DMI_")
    ));
    assert_eq!(entry::parse_entry(&entry_v3(1, 1)[..10], 0).ok(), None);
    assert_eq!(entry::parse_entry(b"RSD PTR ", 0), Ok(None));
}

#[test]
fn no_entry_point_means_no_source() {
    let mem = Memory(vec![f_segment(&[])]);
    let hw = read_bios(&mem);
    assert_eq!(hw, Hardware::default());
}

#[test]
fn an_unreadable_table_is_a_warning() {
    let e = entry_v2(0x9000_0000, 200, 3);
    let mem = Memory(vec![f_segment(&[(0, e)])]);
    let hw = read_bios(&mem);
    assert_eq!(hw.source, Some(Version { major: 2, minor: 8 }));
    assert_eq!(hw.vendor, None);
    assert!(matches!(
        hw.warnings[..],
        [Warning::Unreadable {
            address: 0x9000_0000,
            ..
        }]
    ));
}

fn efi_memory(guid: [u8; 16], entry_at: u64, entry: Vec<u8>, table: Vec<u8>) -> (Memory, u64) {
    let st = 0x7f90_0000u64;
    let config = 0x7f91_0000u64;
    let mut system_table = vec![0u8; 120];
    system_table[..8].copy_from_slice(b"IBI SYST");
    system_table[104..112].copy_from_slice(&3u64.to_le_bytes());
    system_table[112..120].copy_from_slice(&config.to_le_bytes());
    let mut tables = Vec::new();
    for (g, p) in [([0x11; 16], 0x1234u64), (guid, entry_at), ([0x22; 16], 0)] {
        tables.extend_from_slice(&g);
        tables.extend_from_slice(&p.to_le_bytes());
    }
    let mem = Memory(vec![
        (st, system_table),
        (config, tables),
        (entry_at, entry),
        (TABLE_AT, table),
    ]);
    (mem, st)
}

#[test]
fn uefi_finds_smbios_3_through_the_system_table() {
    let (table, _) = qemu_table();
    let e = entry_v3(TABLE_AT, table.len() as u32);
    let (mem, st) = efi_memory(SMBIOS3_GUID, 0x7f80_0000, e, table);
    let mut scratch = vec![0u8; MAX_TABLE];
    let hw = read(&mem, BootPath::Multiboot2Uefi, Some(st), &mut scratch);
    assert_eq!(hw.source, Some(Version { major: 3, minor: 0 }));
    assert_qemu_values(&hw);
    assert!(hw.warnings.is_empty(), "{:?}", hw.warnings);
}

#[test]
fn uefi_finds_smbios_2_through_the_system_table() {
    let (table, count) = qemu_table();
    let e = entry_v2(TABLE_AT as u32, table.len() as u16, count);
    let (mem, st) = efi_memory(SMBIOS_GUID, 0x7f80_0000, e, table);
    let mut scratch = vec![0u8; MAX_TABLE];
    let hw = read(&mem, BootPath::Multiboot2Uefi, Some(st), &mut scratch);
    assert_eq!(hw.source, Some(Version { major: 2, minor: 8 }));
    assert_qemu_values(&hw);
}

#[test]
fn a_bad_efi_system_table_is_a_warning_and_uefi_skips_the_f_segment() {
    let (table, count) = qemu_table();
    let e = entry_v2(TABLE_AT as u32, table.len() as u16, count);
    let (mut mem, st) = efi_memory(SMBIOS_GUID, 0x7f80_0000, e.clone(), table);
    mem.0[0].1[0] = b'X';
    mem.0.push(f_segment(&[(0, e)]));
    let mut scratch = vec![0u8; MAX_TABLE];
    let hw = read(&mem, BootPath::Multiboot2Uefi, Some(st), &mut scratch);
    assert_eq!(hw.source, None);
    assert!(matches!(
        hw.warnings[..],
        [Warning::EfiSystemTableSignature { .. }]
    ));
    // The same memory booted through BIOS: the scan finds the F-segment copy.
    let hw = read(&mem, BootPath::Multiboot2Bios, None, &mut scratch);
    assert_qemu_values(&hw);
}

#[test]
fn an_absurd_efi_table_count_is_refused() {
    let (mem, st) = efi_memory(SMBIOS_GUID, 0x7f80_0000, vec![0; 32], vec![]);
    let mut mem = mem;
    mem.0[0].1[104..112].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut scratch = vec![0u8; 64];
    let hw = read(&mem, BootPath::Multiboot2Uefi, Some(st), &mut scratch);
    assert!(matches!(hw.warnings[..], [Warning::EfiTableCount { .. }]));
}

fn parse(table: &[u8], count: Option<u16>) -> (Hardware, Vec<Warning>) {
    let mut hw = Hardware::default();
    let mut warnings = Vec::new();
    parse_table(table, count, &mut hw, &mut |w| warnings.push(w));
    (hw, warnings)
}

#[test]
fn a_truncated_structure_ends_the_walk_with_a_warning() {
    let (table, _) = qemu_table();
    let bios_len = bios(&["TestBIOS", "9.9", "04/01/2014"]).len();
    // Cut inside type 1's strings: type 0 is kept, type 1 is lost.
    let cut = &table[..bios_len + 30];
    let (hw, warnings) = parse(cut, None);
    assert_eq!(hw.bios_vendor, text("TestBIOS"));
    assert_eq!(hw.vendor, None);
    assert_eq!(
        warnings,
        [Warning::StructureCut {
            offset: bios_len,
            kind: Some(1)
        }]
    );
    assert_eq!(
        warnings[0].to_string(),
        format!(
            "SMBIOS structure at table offset {bios_len} (type 1) runs past the table's end; \
             the rest is ignored"
        )
    );
    // Cut in every possible place: never a panic.
    for len in 0..table.len() {
        let _ = parse(&table[..len], None);
        let _ = parse(&table[..len], Some(4));
    }
}

#[test]
fn a_structure_shorter_than_its_header_ends_the_walk() {
    let mut table = bios(&["A", "B", "C"]);
    table.extend([1, 2, 0, 0, 0, 0]);
    let (hw, warnings) = parse(&table, None);
    assert_eq!(hw.bios_vendor, text("A"));
    assert!(matches!(
        warnings[..],
        [Warning::StructureLength {
            kind: 1,
            len: 2,
            ..
        }]
    ));
}

#[test]
fn missing_strings_and_out_of_range_indices_are_absent() {
    // Serial names string 4 but only three exist; the product field is 0 (no string).
    let mut fields = vec![1, 0, 2, 4];
    fields.extend_from_slice(&[0; 19]);
    let mut table = structure(1, &fields, &["Vendor", "v1", "extra"]);
    table.extend(end());
    let (hw, warnings) = parse(&table, None);
    assert_eq!(hw.vendor, text("Vendor"));
    assert_eq!(hw.product, None);
    assert_eq!(hw.serial, None);
    assert_eq!(
        warnings,
        [Warning::StringIndex {
            kind: 1,
            field: "serial number",
            index: 4
        }]
    );
    // A 2.0-era type 1 of 8 bytes has no room for more than the serial; a 6-byte one none.
    let short = structure(1, &[1, 2], &["V", "P"]);
    let (hw, warnings) = parse(&short, None);
    assert_eq!(
        (hw.vendor, hw.product, hw.serial),
        (text("V"), text("P"), None)
    );
    assert!(warnings.is_empty());
}

#[test]
fn placeholders_are_absent() {
    let mut table = bios(&["American Megatrends Inc.", "F.10", "01/01/2020"]);
    table.extend(system(&[
        "To Be Filled By O.E.M.",
        "Default string",
        "1.0",
        "0000000000",
    ]));
    table.extend(end());
    let (hw, _) = parse(&table, None);
    assert_eq!(hw.bios_vendor, text("American Megatrends Inc."));
    assert_eq!((hw.vendor, hw.product, hw.serial), (None, None, None));
    for p in [
        "",
        "   ",
        "0",
        "00000000",
        "XXXXXXXX",
        "xxxx",
        "...",
        "--",
        "N/A",
        "none",
        "not specified",
        "to be filled by o.e.m.",
        "System Serial Number",
        "0123456789",
    ] {
        assert!(is_placeholder(p), "{p:?}");
    }
    for real in ["SN-4711", "0A1", "PowerEdge R650", "X10", "Supermicro"] {
        assert!(!is_placeholder(real), "{real:?}");
    }
}

#[test]
fn strings_are_trimmed_cut_and_made_printable() {
    let long = "L".repeat(100);
    let mut fields = vec![1, 2, 0, 3];
    fields.extend_from_slice(&[0; 19]);
    let table = structure(1, &fields, &["  Dell Inc.  ", &long, "AB\u{7f}C"]);
    let (hw, _) = parse(&table, None);
    assert_eq!(hw.vendor, text("Dell Inc."));
    assert_eq!(hw.product.as_ref().map(|p| p.len()), Some(64));
    assert_eq!(hw.serial, text("AB?C"));
}

#[test]
fn the_first_structure_of_each_type_counts_and_the_count_limits_the_walk() {
    let mut table = system(&["First", "P", "V", "S"]);
    table.extend(system(&["Second", "P", "V", "S"]));
    table.extend(bios(&["B", "1", "d"]));
    let (hw, _) = parse(&table, None);
    assert_eq!(hw.vendor, text("First"));
    assert_eq!(hw.bios_vendor, text("B"));
    let (hw, _) = parse(&table, Some(2));
    assert_eq!(
        hw.bios_vendor, None,
        "the 2.x count ends the walk before type 0"
    );
}

#[test]
fn entry_point_accessors() {
    let e = EntryPoint::V2 {
        major: 2,
        minor: 8,
        table: 0x1000,
        len: 300,
        count: 9,
    };
    assert_eq!(
        (e.version(), e.table(), e.count()),
        ((2, 8), (0x1000, 300), Some(9))
    );
}

#[test]
fn the_console_shows_every_field_and_marks_absent_ones() {
    let (table, count) = qemu_table();
    let e = entry_v2(TABLE_AT as u32, table.len() as u16, count);
    let mem = Memory(vec![f_segment(&[(0x5a0, e)]), (TABLE_AT, table)]);
    let mut hw = read_bios(&mem);
    hw.bios_date = None;
    let mut out = String::new();
    describe(&hw, &mut out).unwrap();
    assert_eq!(
        out,
        "  vendor:       KeelTest\n  product:      Rack9\n  serial:       SN-4711\n  \
         bios vendor:  TestBIOS\n  bios version: 9.9\n  bios date:    (not set)\n  \
         source:       SMBIOS 2.8\n"
    );
    assert_eq!(
        summary(&hw).as_deref(),
        Some("KeelTest Rack9, serial SN-4711")
    );
    hw.vendor = None;
    hw.product = None;
    assert_eq!(summary(&hw).as_deref(), Some("serial SN-4711"));
    hw.serial = None;
    assert_eq!(summary(&hw), None);

    let mut out = String::new();
    let mut none = Hardware::default();
    let _ = none.warnings.push(Warning::EfiTableCount { count: 9999 });
    describe(&none, &mut out).unwrap();
    assert!(out.starts_with("  no SMBIOS table"), "{out}");
    assert!(
        out.contains("warning: the EFI system table lists 9999"),
        "{out}"
    );
}

#[test]
fn random_bytes_never_panic() {
    // Garbage tables, and garbage around real anchors in the F-segment and behind an EFI
    // system table: every outcome is values or warnings.
    let mut seed = 0x5eed_u64;
    for round in 0..300 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let table = noise(64 + round * 7, seed);
        let _ = parse(&table, None);
        let _ = parse(&table, Some((seed >> 48) as u16));
        let mut v2 = noise(0x20, seed ^ 1);
        v2[..4].copy_from_slice(b"_SM_");
        v2[0x10..0x15].copy_from_slice(b"_DMI_");
        let mut v3 = noise(0x20, seed ^ 2);
        v3[..5].copy_from_slice(b"_SM3_");
        let mut scratch = vec![0u8; 4096];
        let mem = Memory(vec![
            f_segment(&[(0x100, v2), (0x200, v3)]),
            (0, noise(0x1000, seed ^ 3)),
        ]);
        let _ = read(&mem, BootPath::Multiboot2Bios, None, &mut scratch);
        let mut st = noise(120, seed ^ 4);
        st[..8].copy_from_slice(b"IBI SYST");
        st[104..112].copy_from_slice(&(seed % 300).to_le_bytes());
        let mem = Memory(vec![(0x1000, st), (0, noise(0x1000, seed ^ 5))]);
        let _ = read(&mem, BootPath::Multiboot2Uefi, Some(0x1000), &mut scratch);
    }
}

/// Pseudo-random bytes (xorshift64).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
