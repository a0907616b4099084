//! Host tests: the tables are written into guest memory and read back the way an OSPM finds
//! them (RSDP scan, XSDT walk), with every signature, length and checksum checked.

use std::collections::BTreeMap;
use std::vec::Vec;

use super::*;
use crate::devices::acpi_pm::{AcpiPm, SLP_EN};
use crate::testing::MockHost;

fn memory() -> GuestMemory {
    GuestMemory::new(MockHost::leak(1024), 4 << 20).unwrap()
}

fn read(mem: &GuestMemory, at: u64, len: usize) -> Vec<u8> {
    let mut b = std::vec![0u8; len];
    mem.read(at, &mut b).unwrap();
    b
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

/// Scans `0xE0000..0x100000` on 16-byte boundaries for a valid RSDP, as Linux's
/// `acpi_find_root_pointer` does.
fn find_rsdp(mem: &GuestMemory) -> Option<u64> {
    (0xE_0000u64..0x10_0000).step_by(16).find(|&at| {
        let r = read(mem, at, RSDP_LEN);
        &r[..8] == b"RSD PTR " && sums_to_zero(&r[..20]) && sums_to_zero(&r)
    })
}

/// Reads a table at `at`, checking its length and checksum.
fn table(mem: &GuestMemory, at: u64) -> Vec<u8> {
    let len = u32_at(&read(mem, at, 8), 4) as usize;
    assert!(len >= HEADER_LEN, "table at {at:#x} too short");
    let t = read(mem, at, len);
    assert!(
        sums_to_zero(&t),
        "checksum of {}",
        String::from_utf8_lossy(&t[..4])
    );
    assert_eq!(&t[10..16], b"KEEL  ");
    t
}

/// All tables reachable from the RSDP, by signature.
fn tables(mem: &GuestMemory) -> BTreeMap<[u8; 4], (u64, Vec<u8>)> {
    let rsdp = read(
        mem,
        find_rsdp(mem).expect("RSDP found by the scan"),
        RSDP_LEN,
    );
    assert_eq!(rsdp[15], 2, "revision");
    assert_eq!(u32_at(&rsdp, 20), 36, "length");
    let xsdt_at = u64_at(&rsdp, 24);
    let xsdt = table(mem, xsdt_at);
    assert_eq!(&xsdt[..4], b"XSDT");
    let mut found = BTreeMap::new();
    for entry in xsdt[HEADER_LEN..].chunks_exact(8) {
        let at = u64_at(entry, 0);
        let t = table(mem, at);
        found.insert(t[..4].try_into().unwrap(), (at, t));
    }
    found
}

#[test]
fn rsdp_is_found_by_the_legacy_scan_and_matches_what_write_returns() {
    let mem = memory();
    let placed = write(&mem, &AcpiConfig::default()).unwrap();
    assert_eq!(find_rsdp(&mem), Some(placed.rsdp));
    assert_eq!(placed.rsdp, 0xE_0000);
    assert!(placed.end <= 0x10_0000);
    let all = tables(&mem);
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        [b"APIC", b"FACP"],
        "the XSDT lists the MADT and FADT"
    );
    assert_eq!(all[b"FACP"].0, placed.fadt);
    assert_eq!(all[b"APIC"].0, placed.madt);
}

#[test]
fn madt_entries() {
    let mem = memory();
    write(&mem, &AcpiConfig::default()).unwrap();
    let (_, madt) = &tables(&mem)[b"APIC"];
    assert_eq!(u32_at(madt, 36), 0xFEE0_0000, "local APIC address");
    assert_eq!(u32_at(madt, 40), madt::PCAT_COMPAT);
    let mut entries = Vec::new();
    let mut rest = &madt[44..];
    while !rest.is_empty() {
        let len = usize::from(rest[1]);
        assert!(len >= 2 && len <= rest.len());
        entries.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    assert_eq!(entries.len(), 5);
    // Local APIC: UID 0, APIC id 0, enabled.
    assert_eq!(entries[0], [0, 8, 0, 0, 1, 0, 0, 0]);
    // I/O APIC id 0 at 0xFEC00000, GSI base 0.
    assert_eq!(entries[1][..4], [1, 12, 0, 0]);
    assert_eq!(u32_at(&entries[1], 4), 0xFEC0_0000);
    assert_eq!(u32_at(&entries[1], 8), 0);
    // IRQ 0 -> GSI 2, edge, active high.
    assert_eq!(entries[2][..4], [2, 10, 0, 0]);
    assert_eq!(u32_at(&entries[2], 4), 2);
    assert_eq!(u16_at(&entries[2], 8), 0b0101);
    // IRQ 9 (SCI) -> GSI 9, level, active high.
    assert_eq!(entries[3][..4], [2, 10, 0, 9]);
    assert_eq!(u32_at(&entries[3], 4), 9);
    assert_eq!(u16_at(&entries[3], 8), 0b1101);
    // LINT1 NMI on all processors.
    assert_eq!(entries[4], [4, 6, 0xFF, 0b0101, 0, 1]);
}

#[test]
fn madt_lists_every_vcpu() {
    let mem = memory();
    let config = AcpiConfig {
        cpus: 4,
        ..AcpiConfig::default()
    };
    write(&mem, &config).unwrap();
    let (_, madt) = &tables(&mem)[b"APIC"];
    let ids: Vec<u8> = madt[44..]
        .chunks(8)
        .take(4)
        .map(|e| {
            assert_eq!(&e[..2], [0, 8]);
            e[3]
        })
        .collect();
    assert_eq!(ids, [0, 1, 2, 3]);
}

#[test]
fn fadt_fields() {
    let mem = memory();
    let placed = write(&mem, &AcpiConfig::default()).unwrap();
    let (_, f) = &tables(&mem)[b"FACP"];
    assert_eq!(f.len(), FADT_LEN);
    assert_eq!(f[8], 6, "revision");
    assert_eq!(f[fadt::MINOR_VERSION], 5);
    assert_eq!(u16_at(f, fadt::SCI_INT), 9);
    assert_eq!(u32_at(f, fadt::SMI_CMD), 0, "always in ACPI mode");
    assert_eq!(u32_at(f, fadt::PM1A_EVT_BLK), 0x600);
    assert_eq!(u32_at(f, fadt::PM1A_CNT_BLK), 0x604);
    assert_eq!(u32_at(f, fadt::PM_TMR_BLK), 0x608);
    assert_eq!(
        [
            f[fadt::PM1_EVT_LEN],
            f[fadt::PM1_CNT_LEN],
            f[fadt::PM_TMR_LEN]
        ],
        [4, 2, 4]
    );
    assert_eq!(f[fadt::CENTURY], 0x32);
    assert_eq!(
        u16_at(f, fadt::IAPC_BOOT_ARCH),
        0b111,
        "legacy, 8042, no VGA"
    );
    let flags = u32_at(f, fadt::FLAGS);
    for bit in [
        fadt::WBINVD,
        fadt::PROC_C1,
        fadt::TMR_VAL_EXT,
        fadt::RESET_REG_SUP,
    ] {
        assert_ne!(flags & bit, 0, "flag {bit:#x}");
    }
    assert_eq!(flags & (1 << 4), 0, "the power button is a fixed feature");
    assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
    // RESET_REG: system I/O, 8 bits, byte access, port 0xCF9; value 6.
    assert_eq!(f[fadt::RESET_REG..fadt::RESET_REG + 4], [1, 8, 0, 1]);
    assert_eq!(u64_at(f, fadt::RESET_REG + 4), 0xCF9);
    assert_eq!(f[fadt::RESET_VALUE], 6);
    // The 64-bit fields agree with the 32-bit ones.
    assert_eq!(u64_at(f, fadt::X_DSDT), placed.dsdt);
    assert_eq!(u64::from(u32_at(f, fadt::DSDT)), placed.dsdt);
    for (x, port, width) in [
        (fadt::X_PM1A_EVT_BLK, 0x600, 32),
        (fadt::X_PM1A_CNT_BLK, 0x604, 16),
        (fadt::X_PM_TMR_BLK, 0x608, 32),
    ] {
        assert_eq!([f[x], f[x + 1]], [1, width], "GAS at {x}");
        assert_eq!(u64_at(f, x + 4), port);
    }
    // The FACS is there, 64-byte aligned.
    let facs_at = u64::from(u32_at(f, fadt::FIRMWARE_CTRL));
    assert_eq!(facs_at, placed.facs);
    assert_eq!(facs_at % 64, 0);
    let facs = read(&mem, facs_at, 64);
    assert_eq!(&facs[..4], b"FACS");
    assert_eq!(u32_at(&facs, 4), 64);
}

#[test]
fn a_24_bit_timer_clears_tmr_val_ext() {
    let (blob, placed) = build(
        &AcpiConfig {
            timer_width: TimerWidth::Bits24,
            pm_base: 0xB000,
            ..AcpiConfig::default()
        },
        0xE_0000,
    )
    .unwrap();
    let f = &blob[(placed.fadt - 0xE_0000) as usize..];
    assert_eq!(u32_at(f, fadt::FLAGS) & fadt::TMR_VAL_EXT, 0);
    assert_eq!(u32_at(f, fadt::PM1A_CNT_BLK), 0xB004);
}

/// Finds `Name(\_S5_, Package(){a, b, ...})` in AML and returns the first element.
fn s5_slp_typ(aml: &[u8]) -> Option<u8> {
    let at = aml.windows(6).position(|w| w == b"\x08\\_S5_")?;
    let pkg = &aml[at + 6..];
    assert_eq!(pkg[0], 0x12, "PackageOp");
    // Single-byte PkgLength, element count, then the first element.
    match pkg[3] {
        0x00 => Some(0),
        0x01 => Some(1),
        0x0A => Some(pkg[4]),
        other => panic!("unexpected element encoding {other:#x}"),
    }
}

#[test]
fn dsdt_names_s5_and_the_pm_model_powers_off_on_it() {
    let mem = memory();
    let config = AcpiConfig::default();
    let placed = write(&mem, &config).unwrap();
    let (_, f) = &tables(&mem)[b"FACP"];
    let dsdt = table(&mem, u64_at(f, fadt::X_DSDT));
    assert_eq!(placed.dsdt, u64_at(f, fadt::X_DSDT));
    assert_eq!(&dsdt[..4], b"DSDT");
    let typ = s5_slp_typ(&dsdt[HEADER_LEN..]).expect("\\_S5_ in the DSDT");
    assert_eq!(typ, S5_SLP_TYP);

    // An OSPM powering off writes SLP_TYP | SLP_EN to PM1a_CNT_BLK: the model must see S5.
    let mut pm = AcpiPm::new(config.s5_slp_typ, config.timer_width, 0).unwrap();
    let pm1a_cnt = u32_at(f, fadt::PM1A_CNT_BLK) as u16;
    pm.write(
        pm1a_cnt - config.pm_base,
        2,
        u32::from((u16::from(typ) << 10) | SLP_EN),
        0,
    );
    assert!(pm.poweroff_requested());
}

#[test]
fn config_errors() {
    let mem = memory();
    for cpus in [0, 255] {
        let config = AcpiConfig {
            cpus,
            ..AcpiConfig::default()
        };
        assert_eq!(write(&mem, &config), Err(AcpiError::CpuCount(cpus)));
    }
    let config = AcpiConfig {
        s5_slp_typ: 8,
        ..AcpiConfig::default()
    };
    assert_eq!(write(&mem, &config), Err(AcpiError::SleepType(8)));
    // The largest MADT still fits the area.
    let config = AcpiConfig {
        cpus: MAX_CPUS,
        ..AcpiConfig::default()
    };
    let placed = write(&mem, &config).unwrap();
    assert!(placed.end <= 0x10_0000);
    assert_eq!(tables(&mem)[b"APIC"].1.len(), 44 + 8 * 254 + 12 + 20 + 6);
}

/// The position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn dsdt_has_the_pci_root_bridge_with_its_windows_and_interrupt_routes() {
    let (blob, placed) = build(&AcpiConfig::default(), 0xE_0000).unwrap();
    let at = (placed.dsdt - 0xE_0000) as usize;
    let len = u32_at(&blob[at..], 4) as usize;
    let dsdt = &blob[at..at + len];
    assert!(sums_to_zero(dsdt));
    let aml = &dsdt[HEADER_LEN..];
    // Scope (\_SB) { Device (PCI0) { ... } }, the device right after the scope's name.
    let scope = find(aml, b"\\_SB_").expect("\\_SB scope");
    assert_eq!(aml[scope - 3], 0x10, "ScopeOp with a two-byte PkgLength");
    assert_eq!(&aml[scope + 5..scope + 7], [0x5B, 0x82], "DeviceOp");
    let device = &aml[scope + 5..];
    assert_eq!(&device[4..8], b"PCI0");
    // The device's PkgLength (two bytes) covers the rest of the DSDT.
    let pkg_len = usize::from(device[2] & 0xF) | usize::from(device[3]) << 4;
    assert_eq!(pkg_len, device.len() - 2);
    // Name (_HID, EisaId ("PNP0A03")), Name (_UID, Zero), Name (_SEG, Zero), Name (_BBN, Zero)
    let names: &[u8] = &[
        0x08, b'_', b'H', b'I', b'D', 0x0C, 0x41, 0xD0, 0x0A, 0x03, //
        0x08, b'_', b'U', b'I', b'D', 0x00, //
        0x08, b'_', b'S', b'E', b'G', 0x00, //
        0x08, b'_', b'B', b'B', b'N', 0x00,
    ];
    assert_eq!(&device[8..8 + names.len()], names);
    // Name (_CRS, ResourceTemplate () { WordBusNumber 0-0xFF, IO 0xCF8 len 8,
    // WordIO 0-0xCF7, WordIO 0xD00-0xFFFF, DWordMemory 0xC0000000-0xFEBFFFFF }), as iasl
    // encodes it: Buffer, PkgLength 88 (0x48 0x05), size 84.
    let crs: &[u8] = &[
        0x08, b'_', b'C', b'R', b'S', 0x11, 0x48, 0x05, 0x0A, 0x54, //
        0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00,
        0x01, //
        0x47, 0x01, 0xF8, 0x0C, 0xF8, 0x0C, 0x01, 0x08, //
        0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0x00, 0x00, 0x00, 0x00, 0xF7, 0x0C, 0x00, 0x00, 0xF8,
        0x0C, //
        0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0x00, 0x00, 0x00, 0x0D, 0xFF, 0xFF, 0x00, 0x00, 0x00,
        0xF3, //
        0x87, 0x17, 0x00, 0x00, 0x0C, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0xFF,
        0xFF, 0xBF, 0xFE, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x3E, //
        0x79, 0x00,
    ];
    let crs_at = 8 + names.len();
    assert_eq!(&device[crs_at..crs_at + crs.len()], crs);
    // The window in _CRS is the one BARs are assigned from.
    assert_eq!(crate::devices::pci::MMIO_WINDOW, 0xC000_0000..0xFEC0_0000);
    // Name (_PRT, Package (124) { Package { 0x0001FFFF, 0, Zero, 17 }, ... }): 31 slots x
    // 4 pins, GSI 16 + (slot + pin) % 8 (pin 0 = INTA#).
    let prt = &device[crs_at + crs.len()..];
    assert_eq!(&prt[..5], b"\x08_PRT");
    assert_eq!(prt[5], 0x12, "PackageOp");
    assert_eq!(prt[6] >> 6, 1, "two-byte PkgLength");
    assert_eq!(prt[8], 124, "entries");
    let entries = &prt[9..];
    // Slot 1: INTA# -> 17, INTB# -> 18, INTC# -> 19.
    let slot1: &[u8] = &[
        0x12, 0x0B, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x00, 0x00, 0x0A, 0x11, //
        0x12, 0x0B, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x01, 0x00, 0x0A, 0x12, //
        0x12, 0x0C, 0x04, 0x0C, 0xFF, 0xFF, 0x01, 0x00, 0x0A, 0x02, 0x00, 0x0A, 0x13,
    ];
    assert_eq!(&entries[..slot1.len()], slot1);
    // The last entry, slot 31 INTD#: 16 + (31 + 3) % 8 = 18; it ends the DSDT.
    let last: &[u8] = &[
        0x12, 0x0C, 0x04, 0x0C, 0xFF, 0xFF, 0x1F, 0x00, 0x0A, 0x03, 0x00, 0x0A, 0x12,
    ];
    assert!(entries.ends_with(last));
    // Every slot's INTA# matches the bus's wiring.
    for slot in 1..32u8 {
        let entry = [
            0x12,
            0x0B,
            0x04,
            0x0C,
            0xFF,
            0xFF,
            slot,
            0x00,
            0x00,
            0x00,
            0x0A,
            crate::devices::pci::intx_gsi(slot, 1),
        ];
        assert!(find(entries, &entry).is_some(), "slot {slot} INTA#");
    }
}
