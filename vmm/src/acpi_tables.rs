//! Per-VM ACPI tables, built into guest memory for the guest's OSPM (ACPI 6.5 §5).
//!
//! # What the guest gets
//!
//! All tables live in the reserved BIOS area at [`ACPI_TABLES`] (`0xE0000`), which the e820
//! map marks reserved, so the guest never reuses it. The RSDP comes first, on a 16-byte
//! boundary, where a guest's legacy scan of `0xE0000..0xFFFFF` finds it; the loaders also pass
//! its address ([`AcpiTables::rsdp`]) in `boot_params.acpi_rsdp_addr` / `rsdp_paddr`.
//!
//! | table | contents |
//! | --- | --- |
//! | RSDP (rev 2, §5.2.5) | XSDT address; both checksums |
//! | XSDT (§5.2.8) | FADT, MADT |
//! | FADT (rev 6.5, §5.2.9) | SCI on IRQ 9; no SMI_CMD (always in ACPI mode, as the PM model's SCI_EN reads 1); the [`acpi_pm`](crate::devices::acpi_pm) block's PM1a event/control and PM timer ports (32- and 64-bit fields); reset register: I/O port 0xCF9, value 0x06; `IAPC_BOOT_ARCH` legacy devices + 8042, no VGA; no C2/C3; century byte 0x32 of the RTC |
//! | FACS (§5.2.10) | empty (no waking vector, no global lock owner): required outside hardware-reduced mode |
//! | DSDT (§5.2.11.1) | `Name(\_S5_, Package(){typ, typ, 0, 0})`: the soft-off sleep type the PM model powers off on; `\_SB.PCI0`, the PCI root bridge (below) |
//! | MADT (rev 5, §5.2.12) | local APIC base 0xFEE00000, `PCAT_COMPAT` (the 8259 pair exists); one enabled local APIC per vCPU (ids 0..n); the I/O APIC (id 0, 0xFEC00000, GSI base 0); overrides IRQ 0 → GSI 2 (edge, high) and IRQ 9 → GSI 9 (level, high); LINT1 = NMI on all processors |
//!
//! # The PCI root bridge
//!
//! `Device(\_SB.PCI0)`: `_HID` `PNP0A03` (no `_CID` `PNP0A08`: there is no MCFG/ECAM), `_UID`,
//! `_SEG` and `_BBN` 0 (no `_ADR`: a device has `_HID` or `_ADR`, not both, §6.1); `_CRS`:
//! `WordBusNumber` 0–255, `IO` `0xCF8`–`0xCFF` (the configuration ports the bridge itself
//! decodes), `WordIO` windows `0x0000`–`0x0CF7` and `0x0D00`–`0xFFFF`, `DWordMemory`
//! [`MMIO_WINDOW`](crate::devices::pci::MMIO_WINDOW) (`0xC0000000`–`0xFEBFFFFF`, where the
//! VMM pre-assigns BARs); `_PRT`: slots 1–31, pins INTA#–INTD# each to GSI
//! [`intx_gsi`](crate::devices::pci::intx_gsi) (16–23, level, active low: the ACPI default
//! for `_PRT` GSIs, so the MADT needs no override for them). It is there for every
//! bzImage/PVH guest, with or without PCI functions.
//!
//! [`build`] produces the bytes for a base address (pure, for tests); [`write`] puts them in
//! guest memory.

use alloc::vec::Vec;
use core::fmt;

use crate::devices::acpi_pm::{self, TimerWidth};
use crate::devices::pci;
use crate::devices::rtc;
use crate::loader::layout::{ACPI_TABLES, ACPI_TABLES_END, IOAPIC_BASE, LAPIC_BASE};
use crate::memory::{GuestMemory, MemoryError};

pub mod aml;

/// The SLP_TYP value the DSDT's `\_S5_` names: the platform's (see [`crate::devices`]).
pub const S5_SLP_TYP: u8 = crate::devices::S5_SLP_TYP;
/// The ISA IRQ (and GSI) of the SCI.
pub const SCI_IRQ: u8 = crate::devices::SCI_IRQ;
/// The reset register's I/O port (the PIIX/ICH reset control register).
pub const RESET_PORT: u16 = crate::devices::RESET_CONTROL_PORT;
/// The value the guest writes to [`RESET_PORT`] to reset (SYS_RST | RST_CPU: hard reset).
pub const RESET_VALUE: u8 = 0x06;
/// The PCI configuration ports (mechanism #1, `0xCF8`-`0xCFF`) the root bridge consumes.
pub const PCI_CONFIG_PORTS: u16 = 0xCF8;
/// Most vCPUs the MADT describes (xAPIC ids are 8 bits; 0xFF is broadcast).
pub const MAX_CPUS: u8 = 254;

/// OEM id in every table header.
pub const OEM_ID: [u8; 6] = *b"KEEL  ";
/// OEM table id in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"KEELVM  ";
/// Creator id in every table header.
pub const CREATOR_ID: [u8; 4] = *b"KEEL";

/// Size of an SDT header.
pub const HEADER_LEN: usize = 36;
/// Size of the version 2 RSDP.
pub const RSDP_LEN: usize = 36;
/// Size of the FADT (revision 6).
pub const FADT_LEN: usize = 276;
/// Size of the FACS.
pub const FACS_LEN: usize = 64;

/// FADT offsets (ACPI 6.5 table 5.9).
pub mod fadt {
    /// `FIRMWARE_CTRL` (u32).
    pub const FIRMWARE_CTRL: usize = 36;
    /// `DSDT` (u32).
    pub const DSDT: usize = 40;
    /// `SCI_INT` (u16).
    pub const SCI_INT: usize = 46;
    /// `SMI_CMD` (u32).
    pub const SMI_CMD: usize = 48;
    /// `PM1a_EVT_BLK` (u32).
    pub const PM1A_EVT_BLK: usize = 56;
    /// `PM1a_CNT_BLK` (u32).
    pub const PM1A_CNT_BLK: usize = 64;
    /// `PM_TMR_BLK` (u32).
    pub const PM_TMR_BLK: usize = 76;
    /// `PM1_EVT_LEN` (u8).
    pub const PM1_EVT_LEN: usize = 88;
    /// `PM1_CNT_LEN` (u8).
    pub const PM1_CNT_LEN: usize = 89;
    /// `PM_TMR_LEN` (u8).
    pub const PM_TMR_LEN: usize = 91;
    /// `P_LVL2_LAT` (u16).
    pub const P_LVL2_LAT: usize = 96;
    /// `P_LVL3_LAT` (u16).
    pub const P_LVL3_LAT: usize = 98;
    /// `CENTURY` (u8).
    pub const CENTURY: usize = 108;
    /// `IAPC_BOOT_ARCH` (u16).
    pub const IAPC_BOOT_ARCH: usize = 109;
    /// `Flags` (u32).
    pub const FLAGS: usize = 112;
    /// `RESET_REG` (GAS).
    pub const RESET_REG: usize = 116;
    /// `RESET_VALUE` (u8).
    pub const RESET_VALUE: usize = 128;
    /// `FADT Minor Version` (u8).
    pub const MINOR_VERSION: usize = 131;
    /// `X_DSDT` (u64).
    pub const X_DSDT: usize = 140;
    /// `X_PM1a_EVT_BLK` (GAS).
    pub const X_PM1A_EVT_BLK: usize = 148;
    /// `X_PM1a_CNT_BLK` (GAS).
    pub const X_PM1A_CNT_BLK: usize = 172;
    /// `X_PM_TMR_BLK` (GAS).
    pub const X_PM_TMR_BLK: usize = 208;

    /// Flags: WBINVD works.
    pub const WBINVD: u32 = 1 << 0;
    /// Flags: C1 supported on all processors.
    pub const PROC_C1: u32 = 1 << 2;
    /// Flags: the sleep button is not a fixed feature.
    pub const SLP_BUTTON: u32 = 1 << 5;
    /// Flags: the PM timer is 32 bits wide.
    pub const TMR_VAL_EXT: u32 = 1 << 8;
    /// Flags: RESET_REG is supported.
    pub const RESET_REG_SUP: u32 = 1 << 10;

    /// IAPC_BOOT_ARCH: legacy (LPC/ISA) devices exist.
    pub const LEGACY_DEVICES: u16 = 1 << 0;
    /// IAPC_BOOT_ARCH: an 8042 exists.
    pub const ARCH_8042: u16 = 1 << 1;
    /// IAPC_BOOT_ARCH: no VGA.
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;
}

/// MADT structure types and flags (ACPI 6.5 §5.2.12).
pub mod madt {
    /// Processor Local APIC.
    pub const LOCAL_APIC: u8 = 0;
    /// I/O APIC.
    pub const IO_APIC: u8 = 1;
    /// Interrupt Source Override.
    pub const INTERRUPT_OVERRIDE: u8 = 2;
    /// Local APIC NMI.
    pub const LOCAL_APIC_NMI: u8 = 4;
    /// MADT flags: the system also has a PC-AT dual 8259.
    pub const PCAT_COMPAT: u32 = 1;
    /// Local APIC flags: enabled.
    pub const ENABLED: u32 = 1;
    /// MPS INTI flags: active high.
    pub const ACTIVE_HIGH: u16 = 0b01;
    /// MPS INTI flags: edge-triggered.
    pub const EDGE: u16 = 0b01 << 2;
    /// MPS INTI flags: level-triggered.
    pub const LEVEL: u16 = 0b11 << 2;
}

/// What the tables describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs (local APIC ids `0..cpus`).
    pub cpus: u8,
    /// I/O base of the [`acpi_pm`] block.
    pub pm_base: u16,
    /// Width of the PM timer the block implements.
    pub timer_width: TimerWidth,
    /// SLP_TYP for S5 (what the PM model powers off on).
    pub s5_slp_typ: u8,
}

impl Default for AcpiConfig {
    fn default() -> Self {
        AcpiConfig {
            cpus: 1,
            pm_base: acpi_pm::DEFAULT_BASE,
            timer_width: TimerWidth::Bits32,
            s5_slp_typ: S5_SLP_TYP,
        }
    }
}

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// The vCPU count is 0 or above [`MAX_CPUS`].
    CpuCount(u8),
    /// The S5 sleep type does not fit the 3-bit SLP_TYP field.
    SleepType(u8),
    /// The tables do not fit their area.
    TooLarge {
        /// Bytes needed.
        len: u64,
    },
    /// Writing guest memory failed.
    Memory(MemoryError),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AcpiError::CpuCount(n) => {
                write!(f, "cannot describe {n} vCPUs in ACPI: use 1 to {MAX_CPUS}")
            }
            AcpiError::SleepType(t) => {
                write!(f, "ACPI S5 sleep type {t} does not fit SLP_TYP (0 to 7)")
            }
            AcpiError::TooLarge { len } => write!(
                f,
                "internal error: the ACPI tables need {len} bytes, more than the {} reserved",
                ACPI_TABLES_END - ACPI_TABLES
            ),
            AcpiError::Memory(e) => write!(f, "writing the ACPI tables: {e}"),
        }
    }
}

impl core::error::Error for AcpiError {}

/// Where each table went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// The RSDP (pass it to the loaders).
    pub rsdp: u64,
    /// The XSDT.
    pub xsdt: u64,
    /// The FADT.
    pub fadt: u64,
    /// The FACS.
    pub facs: u64,
    /// The DSDT.
    pub dsdt: u64,
    /// The MADT.
    pub madt: u64,
    /// One past the last table byte.
    pub end: u64,
}

/// ACPI checksum: the byte that makes `bytes` sum to 0.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// A table with its standard header: `signature`, `revision`, then `body`.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(HEADER_LEN + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(&OEM_ID);
    t.extend_from_slice(&OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(&CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// A Generic Address Structure for an I/O port block (§5.2.3.2). `access` is the ACPI access
/// size code (1 byte, 2 word, 3 dword).
fn io_gas(port: u16, bit_width: u8, access: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O space
    g[1] = bit_width;
    g[3] = access;
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn dsdt(config: &AcpiConfig) -> Vec<u8> {
    let typ = u64::from(config.s5_slp_typ);
    // Constant names and at most four small elements: the encoders cannot fail here.
    let s5 = aml::package(&[
        aml::integer(typ),
        aml::integer(typ),
        aml::integer(0),
        aml::integer(0),
    ])
    .and_then(|pkg| aml::name("\\_S5_", &pkg))
    .unwrap_or_default();
    let mut body = s5;
    // Constant names, ranges and a 124-entry package: cannot fail either (the tests check
    // the root bridge is there).
    body.extend(pci_root_bridge().unwrap_or_default());
    sdt(b"DSDT", 2, &body)
}

/// `Scope(\_SB) { Device(PCI0) { ... } }`: the PCI root bridge for bus 0 (see the
/// [module docs](self)).
fn pci_root_bridge() -> Option<Vec<u8>> {
    use aml::resource;
    let mmio = &pci::MMIO_WINDOW;
    let crs = aml::resource_template(&[
        &resource::word_bus_number(0, 0xFF)?,
        &resource::io_port(PCI_CONFIG_PORTS, 8),
        &resource::word_io(0, PCI_CONFIG_PORTS - 1)?,
        &resource::word_io(PCI_CONFIG_PORTS + 8, 0xFFFF)?,
        &resource::dword_memory(
            u32::try_from(mmio.start).ok()?,
            u32::try_from(mmio.end - 1).ok()?,
        )?,
    ])?;
    // Every slot's INTA#-INTD# (0-3 here, 1-4 in configuration space) to its GSI.
    let routes = (1..32u8)
        .flat_map(|slot| (0..4u8).map(move |pin| (slot, pin)))
        .map(|(slot, pin)| {
            aml::package(&[
                aml::integer(u64::from(slot) << 16 | 0xFFFF),
                aml::integer(u64::from(pin)),
                // Source 0: the last element is a GSI, not an interrupt link device.
                aml::integer(0),
                aml::integer(u64::from(pci::intx_gsi(slot, pin + 1))),
            ])
        })
        .collect::<Option<Vec<_>>>()?;
    let mut terms = Vec::new();
    let hid = aml::eisa_id("PNP0A03")?;
    terms.extend(aml::name("_HID", &aml::integer(u64::from(hid)))?);
    terms.extend(aml::name("_UID", &aml::integer(0))?);
    terms.extend(aml::name("_SEG", &aml::integer(0))?);
    terms.extend(aml::name("_BBN", &aml::integer(0))?);
    terms.extend(aml::name("_CRS", &crs)?);
    terms.extend(aml::name("_PRT", &aml::package(&routes)?)?);
    aml::scope("\\_SB_", &aml::device("PCI0", &terms)?)
}

fn facs() -> Vec<u8> {
    let mut t = alloc::vec![0u8; FACS_LEN];
    put(&mut t, 0, b"FACS");
    put(&mut t, 4, &(FACS_LEN as u32).to_le_bytes());
    t[32] = 2; // version
    t
}

fn fadt(config: &AcpiConfig, dsdt: u64, facs: u64) -> Vec<u8> {
    let pm1a_evt = config.pm_base + acpi_pm::PM1_STS;
    let pm1a_cnt = config.pm_base + acpi_pm::PM1_CNT;
    let pm_tmr = config.pm_base + acpi_pm::PM_TMR;
    let mut b = alloc::vec![0u8; FADT_LEN - HEADER_LEN];
    let mut at = |offset: usize, bytes: &[u8]| put(&mut b, offset - HEADER_LEN, bytes);
    // The tables sit below 1 MiB, so the 32-bit fields hold them.
    at(fadt::FIRMWARE_CTRL, &(facs as u32).to_le_bytes());
    at(fadt::DSDT, &(dsdt as u32).to_le_bytes());
    at(fadt::SCI_INT, &u16::from(SCI_IRQ).to_le_bytes());
    // SMI_CMD, ACPI_ENABLE, ACPI_DISABLE stay 0: the platform is always in ACPI mode.
    at(fadt::PM1A_EVT_BLK, &u32::from(pm1a_evt).to_le_bytes());
    at(fadt::PM1A_CNT_BLK, &u32::from(pm1a_cnt).to_le_bytes());
    at(fadt::PM_TMR_BLK, &u32::from(pm_tmr).to_le_bytes());
    at(fadt::PM1_EVT_LEN, &[acpi_pm::PM1_EVT_LEN]);
    at(fadt::PM1_CNT_LEN, &[acpi_pm::PM1_CNT_LEN]);
    at(fadt::PM_TMR_LEN, &[acpi_pm::PM_TMR_LEN]);
    // Latencies above 100 / 1000 µs say C2 / C3 are not supported.
    at(fadt::P_LVL2_LAT, &101u16.to_le_bytes());
    at(fadt::P_LVL3_LAT, &1001u16.to_le_bytes());
    at(fadt::CENTURY, &[rtc::CENTURY]);
    let boot_arch = fadt::LEGACY_DEVICES | fadt::ARCH_8042 | fadt::VGA_NOT_PRESENT;
    at(fadt::IAPC_BOOT_ARCH, &boot_arch.to_le_bytes());
    let mut flags = fadt::WBINVD | fadt::PROC_C1 | fadt::SLP_BUTTON | fadt::RESET_REG_SUP;
    if config.timer_width == TimerWidth::Bits32 {
        flags |= fadt::TMR_VAL_EXT;
    }
    at(fadt::FLAGS, &flags.to_le_bytes());
    at(fadt::RESET_REG, &io_gas(RESET_PORT, 8, 1));
    at(fadt::RESET_VALUE, &[RESET_VALUE]);
    at(fadt::MINOR_VERSION, &[5]);
    at(fadt::X_DSDT, &dsdt.to_le_bytes());
    at(
        fadt::X_PM1A_EVT_BLK,
        &io_gas(pm1a_evt, acpi_pm::PM1_EVT_LEN * 8, 2),
    );
    at(
        fadt::X_PM1A_CNT_BLK,
        &io_gas(pm1a_cnt, acpi_pm::PM1_CNT_LEN * 8, 2),
    );
    at(
        fadt::X_PM_TMR_BLK,
        &io_gas(pm_tmr, acpi_pm::PM_TMR_LEN * 8, 3),
    );
    sdt(b"FACP", 6, &b)
}

fn madt(config: &AcpiConfig) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(LAPIC_BASE as u32).to_le_bytes());
    b.extend_from_slice(&madt::PCAT_COMPAT.to_le_bytes());
    for id in 0..config.cpus {
        b.extend_from_slice(&[madt::LOCAL_APIC, 8, id, id]);
        b.extend_from_slice(&madt::ENABLED.to_le_bytes());
    }
    b.extend_from_slice(&[madt::IO_APIC, 12, 0, 0]);
    b.extend_from_slice(&(IOAPIC_BASE as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    let overrides = [
        (0u8, 2u32, madt::ACTIVE_HIGH | madt::EDGE),
        (SCI_IRQ, u32::from(SCI_IRQ), madt::ACTIVE_HIGH | madt::LEVEL),
    ];
    for (irq, gsi, flags) in overrides {
        b.extend_from_slice(&[madt::INTERRUPT_OVERRIDE, 10, 0, irq]);
        b.extend_from_slice(&gsi.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
    }
    // LINT1 is NMI on every processor (0xFF), as on a PC.
    b.extend_from_slice(&[madt::LOCAL_APIC_NMI, 6, 0xFF]);
    b.extend_from_slice(&(madt::ACTIVE_HIGH | madt::EDGE).to_le_bytes());
    b.push(1);
    sdt(b"APIC", 5, &b)
}

fn rsdp(xsdt: u64) -> [u8; RSDP_LEN] {
    let mut r = [0u8; RSDP_LEN];
    put(&mut r, 0, b"RSD PTR ");
    put(&mut r, 9, &OEM_ID);
    r[15] = 2; // revision: ACPI 2.0+
    // RsdtAddress stays 0: there is no RSDT, only the XSDT.
    put(&mut r, 20, &(RSDP_LEN as u32).to_le_bytes());
    put(&mut r, 24, &xsdt.to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// Appends `table` to `blob` (which starts at `base`) at an `align`-byte boundary and returns
/// its address.
fn append(blob: &mut Vec<u8>, base: u64, table: &[u8], align: usize) -> u64 {
    blob.resize(blob.len().next_multiple_of(align), 0);
    let at = base + blob.len() as u64;
    blob.extend_from_slice(table);
    at
}

/// Builds the tables as they would sit at `base`: the bytes, and where each table is.
pub fn build(config: &AcpiConfig, base: u64) -> Result<(Vec<u8>, AcpiTables), AcpiError> {
    if config.cpus == 0 || config.cpus > MAX_CPUS {
        return Err(AcpiError::CpuCount(config.cpus));
    }
    if config.s5_slp_typ > 7 {
        return Err(AcpiError::SleepType(config.s5_slp_typ));
    }
    // The RSDP first (filled in last), then the tables in dependency order.
    let mut blob = alloc::vec![0u8; RSDP_LEN];
    let facs = append(&mut blob, base, &facs(), 64);
    let dsdt = append(&mut blob, base, &dsdt(config), 16);
    let fadt = append(&mut blob, base, &fadt(config, dsdt, facs), 16);
    let madt = append(&mut blob, base, &madt(config), 16);
    let mut xsdt_body = Vec::new();
    xsdt_body.extend_from_slice(&fadt.to_le_bytes());
    xsdt_body.extend_from_slice(&madt.to_le_bytes());
    let xsdt = append(&mut blob, base, &sdt(b"XSDT", 1, &xsdt_body), 16);
    put(&mut blob, 0, &rsdp(xsdt));
    let end = base + blob.len() as u64;
    Ok((
        blob,
        AcpiTables {
            rsdp: base,
            xsdt,
            fadt,
            facs,
            dsdt,
            madt,
            end,
        },
    ))
}

/// Builds the tables and writes them at [`ACPI_TABLES`] in `memory`.
pub fn write(memory: &GuestMemory, config: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    let (blob, tables) = build(config, ACPI_TABLES)?;
    if tables.end > ACPI_TABLES_END {
        return Err(AcpiError::TooLarge {
            len: blob.len() as u64,
        });
    }
    memory
        .write(ACPI_TABLES, &blob)
        .map_err(AcpiError::Memory)?;
    Ok(tables)
}

#[cfg(test)]
mod tests;
