//! Reading the ACPI tables (RSDP → XSDT/RSDT → FADT, MADT, DSDT) into a [`Platform`].

use core::ops::Range;
use core::ptr::NonNull;

use acpi::address::{AddressSpace, GenericAddress};
use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use spin::Mutex;

use super::s5::{self, SleepType};
use crate::boot::BootInfo;

/// Most CPUs and IOAPICs Keel records.
pub const MAX_CPUS: usize = 256;
const MAX_IOAPICS: usize = 8;
const MAX_OVERRIDES: usize = 16;

/// A processor listed in the MADT.
#[derive(Clone, Copy, Debug)]
pub struct Cpu {
    /// Local APIC (or x2APIC) ID.
    pub apic_id: u32,
    /// Whether the firmware says it is enabled (else only online-capable).
    pub enabled: bool,
}

/// An IOAPIC listed in the MADT.
#[derive(Clone, Copy, Debug)]
pub struct IoApicInfo {
    /// Physical address of its registers.
    pub address: u32,
    /// First GSI it serves.
    pub gsi_base: u32,
}

/// An ISA IRQ rerouted by the firmware.
#[derive(Clone, Copy, Debug)]
pub struct IrqOverride {
    /// ISA IRQ.
    pub irq: u8,
    /// Global system interrupt it arrives on.
    pub gsi: u32,
    /// MPS INTI flags (polarity bits 0-1, trigger bits 2-3).
    pub flags: u16,
}

/// A register named by a Generic Address Structure that Keel can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    /// An I/O port.
    Io(u16),
    /// A memory-mapped register.
    Memory(u64),
    /// PCI configuration space of segment 0, bus 0.
    PciConfig {
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
        /// Register offset.
        offset: u16,
    },
}

impl Register {
    fn from_gas(gas: &GenericAddress) -> Option<Register> {
        if gas.address == 0 {
            return None;
        }
        match gas.address_space {
            AddressSpace::SystemIo => u16::try_from(gas.address).ok().map(Register::Io),
            AddressSpace::SystemMemory => Some(Register::Memory(gas.address)),
            AddressSpace::PciConfigSpace => Some(Register::PciConfig {
                device: (gas.address >> 32) as u8,
                function: (gas.address >> 16) as u8,
                offset: gas.address as u16,
            }),
            _ => None,
        }
    }
}

/// What Keel needs from ACPI, as plain values.
#[derive(Clone, Debug, Default)]
pub struct Platform {
    /// Processors from the MADT (enabled or online-capable).
    pub cpus: heapless::Vec<Cpu, MAX_CPUS>,
    /// IOAPICs from the MADT.
    pub io_apics: heapless::Vec<IoApicInfo, MAX_IOAPICS>,
    /// ISA interrupt source overrides.
    pub overrides: heapless::Vec<IrqOverride, MAX_OVERRIDES>,
    /// PM1a control register.
    pub pm1a_control: Option<Register>,
    /// PM1b control register.
    pub pm1b_control: Option<Register>,
    /// `\_S5` sleep types from the DSDT.
    pub s5: Option<SleepType>,
    /// FADT SMI command port and the value that switches the chipset to ACPI mode.
    pub acpi_enable: Option<(u16, u8)>,
    /// FADT reset register and value, when the FADT says reset is supported.
    pub reset: Option<(Register, u8)>,
    /// The console port the SPCR table names, or why it is not used; `None` without an SPCR.
    pub spcr: Option<Result<crate::console_port::ConsolePort, super::spcr::SpcrError>>,
    /// Problems met while reading the tables.
    pub problems: heapless::Vec<&'static str, 8>,
}

impl Platform {
    /// The GSI and flags an ISA IRQ arrives on (identity unless overridden).
    pub fn isa_irq(&self, irq: u8) -> (u32, u16) {
        self.overrides
            .iter()
            .find(|o| o.irq == irq)
            .map_or((u32::from(irq), 0), |o| (o.gsi, o.flags))
    }

    fn problem(&mut self, message: &'static str) {
        let _ = self.problems.push(message);
    }
}

/// Physical ranges the `acpi` crate mapped: the tables, to keep out of the frame allocator.
static TABLE_RANGES: Mutex<heapless::Vec<Range<u64>, 64>> = Mutex::new(heapless::Vec::new());

/// The RSDP copy a Multiboot2 loader handed over (tags 14/15 carry the structure itself).
static RSDP_COPY: Mutex<[u8; 64]> = Mutex::new([0; 64]);

/// Identity mappings through the kernel's page tables.
#[derive(Clone, Copy, Debug)]
struct IdentityHandler;

impl AcpiHandler for IdentityHandler {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = crate::mm::map_physical(phys as u64, size as u64);
        let mut ranges = TABLE_RANGES.lock();
        let range = phys as u64..(phys + size) as u64;
        if !ranges
            .iter()
            .any(|r| r.start <= range.start && range.end <= r.end)
        {
            let _ = ranges.push(range);
        }
        // SAFETY: identity mapping: `virt` equals `phys`, which the crate got from the
        // firmware's table pointers and which `map_physical` made readable; non-null because
        // the crate never maps address 0 (it validates pointers first).
        unsafe {
            PhysicalMapping::new(
                phys,
                NonNull::new_unchecked(virt as *mut T),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Table ranges seen while parsing.
pub fn table_ranges() -> heapless::Vec<Range<u64>, 64> {
    TABLE_RANGES.lock().clone()
}

fn open_tables(info: &BootInfo) -> Option<AcpiTables<IdentityHandler>> {
    if let Some(addr) = info.rsdp {
        // SAFETY: the loader says an RSDP is there; the crate validates its signature.
        if let Ok(t) = unsafe { AcpiTables::from_rsdp(IdentityHandler, addr as usize) } {
            return Some(t);
        }
    }
    if let Some(copy) = &info.rsdp_copy {
        let mut buf = RSDP_COPY.lock();
        buf[..copy.len()].copy_from_slice(copy);
        let addr = buf.as_ptr() as usize;
        drop(buf);
        // SAFETY: the static buffer holds the loader's RSDP copy and lives forever (identity
        // mapped kernel data); the crate validates the signature.
        if let Ok(t) = unsafe { AcpiTables::from_rsdp(IdentityHandler, addr) } {
            return Some(t);
        }
    }
    if info.path != crate::boot::BootPath::Multiboot2Uefi {
        // SAFETY: on BIOS machines the RSDP lives in the EBDA or 0xE0000..0xFFFFF, both in the
        // first MiB that the kernel maps; the crate only reads there.
        if let Ok(t) = unsafe { AcpiTables::search_for_rsdp_bios(IdentityHandler) } {
            return Some(t);
        }
    }
    None
}

/// Reads the firmware tables. Missing pieces are recorded in `problems`, never fatal.
pub fn discover(info: &BootInfo) -> Platform {
    let mut platform = Platform::default();
    let Some(tables) = open_tables(info) else {
        platform.problem("no ACPI tables found: one CPU assumed, power-off and reset by fallback");
        return platform;
    };
    match tables.find_table::<Madt>() {
        Ok(madt) => read_madt(madt.get(), &mut platform),
        Err(_) => platform.problem("no MADT: one CPU assumed"),
    }
    match tables.find_table::<Fadt>() {
        Ok(fadt) => read_fadt(&fadt, &mut platform),
        Err(_) => platform.problem("no FADT: ACPI power-off unavailable"),
    }
    platform.spcr = read_spcr(&tables);
    match tables.dsdt() {
        Ok(dsdt) => {
            let base = crate::mm::map_physical(dsdt.address as u64, u64::from(dsdt.length));
            // SAFETY: the DSDT body the crate located and `map_physical` made readable.
            let aml =
                unsafe { core::slice::from_raw_parts(base as *const u8, dsdt.length as usize) };
            let _ = TABLE_RANGES
                .lock()
                .push(dsdt.address as u64..dsdt.address as u64 + u64::from(dsdt.length));
            platform.s5 = s5::find_s5(aml);
            if platform.s5.is_none() {
                platform
                    .problem("the DSDT has no static \\_S5 package: ACPI power-off unavailable");
            }
        }
        Err(_) => platform.problem("no DSDT: ACPI power-off unavailable"),
    }
    platform
}

/// The SPCR table's console port: the table's bytes, parsed by [`super::spcr::parse`].
fn read_spcr(
    tables: &AcpiTables<IdentityHandler>,
) -> Option<Result<crate::console_port::ConsolePort, super::spcr::SpcrError>> {
    let mapping = tables.find_table::<acpi::spcr::Spcr>().ok()?;
    let phys = mapping.physical_start() as u64;
    let len = mapping.get().header.length;
    // The parser checks the length against the structure; 4 KiB is far past any real SPCR.
    let len = u64::from(len).min(4096);
    let base = crate::mm::map_physical(phys, len);
    // SAFETY: the SPCR the crate located (signature checked) and `map_physical` made
    // readable for `len` bytes; reading firmware tables has no side effects.
    let bytes = unsafe { core::slice::from_raw_parts(base as *const u8, len as usize) };
    Some(super::spcr::parse(bytes))
}

fn read_madt(madt: core::pin::Pin<&Madt>, platform: &mut Platform) {
    for entry in madt.entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                let flags = e.flags;
                if flags & 0b11 != 0 {
                    let _ = platform.cpus.push(Cpu {
                        apic_id: u32::from(e.apic_id),
                        enabled: flags & 1 != 0,
                    });
                }
            }
            MadtEntry::LocalX2Apic(e) => {
                let (flags, id) = (e.flags, e.x2apic_id);
                if flags & 0b11 != 0 && !platform.cpus.iter().any(|c| c.apic_id == id) {
                    let _ = platform.cpus.push(Cpu {
                        apic_id: id,
                        enabled: flags & 1 != 0,
                    });
                }
            }
            MadtEntry::IoApic(e) => {
                let _ = platform.io_apics.push(IoApicInfo {
                    address: e.io_apic_address,
                    gsi_base: e.global_system_interrupt_base,
                });
            }
            MadtEntry::InterruptSourceOverride(e) if e.bus == 0 => {
                let _ = platform.overrides.push(IrqOverride {
                    irq: e.irq,
                    gsi: e.global_system_interrupt,
                    flags: e.flags,
                });
            }
            _ => {}
        }
    }
}

fn read_fadt(fadt: &PhysicalMapping<IdentityHandler, Fadt>, platform: &mut Platform) {
    platform.pm1a_control = fadt
        .pm1a_control_block()
        .ok()
        .and_then(|g| Register::from_gas(&g));
    platform.pm1b_control = fadt
        .pm1b_control_block()
        .ok()
        .flatten()
        .and_then(|g| Register::from_gas(&g));
    let (smi, enable) = (fadt.smi_cmd_port, fadt.acpi_enable);
    if smi != 0 && enable != 0 {
        platform.acpi_enable = u16::try_from(smi).ok().map(|port| (port, enable));
    }
    let flags = fadt.flags;
    if flags.supports_system_reset_via_fadt() {
        let value = fadt.reset_value;
        platform.reset = fadt
            .reset_register()
            .ok()
            .and_then(|g| Register::from_gas(&g))
            .map(|r| (r, value));
    }
}
