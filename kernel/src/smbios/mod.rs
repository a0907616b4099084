//! SMBIOS: what the machine is — system vendor, product and serial, BIOS vendor, version and
//! date — for the `system` console command, `GET /api/v1/system` and the fleet view.
//!
//! [`entry`] finds the entry point (the EFI configuration table on UEFI boots, the BIOS
//! F-segment scan otherwise), [`table`] walks the structure table. Both are pure and read
//! physical memory through [`PhysRead`], so host tests drive them with byte fixtures and a
//! corrupt table yields [`Warning`]s, never a fault. The kernel reads the tables once, early
//! (on the boot identity map, before the frame allocator may reuse boot-services memory), and
//! keeps the result in a static.

pub mod entry;
pub mod table;
#[cfg(test)]
mod tests;

use core::fmt;

use crate::boot::BootPath;
use crate::boot::pvh::PhysRead;

/// An SMBIOS string as Keel keeps it (longer ones are cut).
pub type Text = heapless::String<64>;

/// The most of the structure table Keel reads: types 0 and 1 come first by convention.
pub const MAX_TABLE: usize = 64 * 1024;

/// What went wrong reading the tables; none of it stops boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    /// An entry point's bytes do not sum to zero.
    #[error("SMBIOS {anchor} entry point at {address:#x} fails its checksum; it is ignored")]
    EntryChecksum {
        /// `_SM3_` or `_SM_`.
        anchor: &'static str,
        /// Where it is.
        address: u64,
    },
    /// An entry point with impossible fields.
    #[error("SMBIOS {anchor} entry point at {address:#x} is malformed ({reason}); it is ignored")]
    EntryMalformed {
        /// `_SM3_` or `_SM_`.
        anchor: &'static str,
        /// Where it is.
        address: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// Memory the firmware pointed at cannot be read.
    #[error("{what} at {address:#x} cannot be read (outside the first 4 GiB or unmapped)")]
    Unreadable {
        /// What was to be read there.
        what: &'static str,
        /// The address.
        address: u64,
    },
    /// The boot loader's EFI system table pointer leads elsewhere.
    #[error("the EFI system table at {address:#x} has a wrong signature; SMBIOS not searched")]
    EfiSystemTableSignature {
        /// Where the loader said it was.
        address: u64,
    },
    /// An implausible number of EFI configuration tables.
    #[error("the EFI system table lists {count} configuration tables; SMBIOS not searched")]
    EfiTableCount {
        /// The count it gives.
        count: u64,
    },
    /// The table is longer than Keel reads.
    #[error("the SMBIOS table is {len} bytes; only the first {MAX_TABLE} are read")]
    TableCut {
        /// Its declared length.
        len: u32,
    },
    /// A structure runs past the end of the table.
    #[error(
        "SMBIOS structure at table offset {offset}{} runs past the table's end; the rest is ignored",
        TypeSuffix(*.kind)
    )]
    StructureCut {
        /// Offset in the table.
        offset: usize,
        /// Its type, when the header was there.
        kind: Option<u8>,
    },
    /// A structure shorter than its own header.
    #[error(
        "SMBIOS structure type {kind} at table offset {offset} declares {len} bytes, under its 4-byte header; the rest is ignored"
    )]
    StructureLength {
        /// Offset in the table.
        offset: usize,
        /// Its type.
        kind: u8,
        /// The length it declares.
        len: usize,
    },
    /// A field names a string the structure does not have.
    #[error(
        "SMBIOS type {kind} {field} names string {index}, which does not exist; shown as absent"
    )]
    StringIndex {
        /// Structure type.
        kind: u8,
        /// The field.
        field: &'static str,
        /// The index it gives.
        index: u8,
    },
}

/// ` (type N)` when the type is known, for [`Warning::StructureCut`].
struct TypeSuffix(Option<u8>);

impl fmt::Display for TypeSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(kind) => write!(f, " (type {kind})"),
            None => Ok(()),
        }
    }
}

/// The SMBIOS version the entry point declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// Major version (2 or 3).
    pub major: u8,
    /// Minor version.
    pub minor: u8,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SMBIOS {}.{}", self.major, self.minor)
    }
}

/// What the firmware says the machine is. `None` for anything absent or left as a
/// placeholder ([`table::PLACEHOLDERS`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hardware {
    /// The entry point's version; `None` when no SMBIOS table was found.
    pub source: Option<Version>,
    /// System manufacturer (type 1).
    pub vendor: Option<Text>,
    /// System product name (type 1).
    pub product: Option<Text>,
    /// System serial number (type 1).
    pub serial: Option<Text>,
    /// BIOS vendor (type 0).
    pub bios_vendor: Option<Text>,
    /// BIOS version (type 0).
    pub bios_version: Option<Text>,
    /// BIOS release date (type 0), as the firmware writes it (`mm/dd/yyyy`).
    pub bios_date: Option<Text>,
    /// Problems met on the way (the first eight).
    pub warnings: heapless::Vec<Warning, 8>,
}

impl Hardware {
    fn warn(&mut self, warning: Warning) {
        if !self.warnings.contains(&warning) {
            let _ = self.warnings.push(warning);
        }
    }
}

/// Writes what the `system` console command shows: one `name: value` line per field,
/// `(not set)` for absent ones, then any warnings.
pub fn describe(hw: &Hardware, out: &mut impl fmt::Write) -> fmt::Result {
    let Some(source) = hw.source else {
        writeln!(
            out,
            "  no SMBIOS table: the firmware does not say what machine this is"
        )?;
        return warnings(hw, out);
    };
    let fields = [
        ("vendor", &hw.vendor),
        ("product", &hw.product),
        ("serial", &hw.serial),
        ("bios vendor", &hw.bios_vendor),
        ("bios version", &hw.bios_version),
        ("bios date", &hw.bios_date),
    ];
    for (name, value) in fields {
        let label = [name, ":"].concat();
        writeln!(
            out,
            "  {label:<14}{}",
            value.as_deref().unwrap_or("(not set)")
        )?;
    }
    writeln!(out, "  {:<14}{source}", "source:")?;
    warnings(hw, out)
}

fn warnings(hw: &Hardware, out: &mut impl fmt::Write) -> fmt::Result {
    for w in &hw.warnings {
        writeln!(out, "  warning: {w}")?;
    }
    Ok(())
}

/// One line for the boot banner: vendor, product and serial, or `None` when the firmware
/// names none of them.
pub fn summary(hw: &Hardware) -> Option<alloc::string::String> {
    let name: alloc::vec::Vec<&str> = [&hw.vendor, &hw.product]
        .into_iter()
        .filter_map(|t| t.as_deref())
        .collect();
    let mut line = name.join(" ");
    if let Some(serial) = &hw.serial {
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str("serial ");
        line.push_str(serial);
    }
    (!line.is_empty()).then_some(line)
}

/// Finds and reads the SMBIOS tables. `scratch` holds the structure table while it is walked
/// (at most [`MAX_TABLE`] bytes are used).
pub fn read(
    mem: &impl PhysRead,
    path: BootPath,
    efi_system_table: Option<u64>,
    scratch: &mut [u8],
) -> Hardware {
    let mut hw = Hardware::default();
    let mut warnings = heapless::Vec::<Warning, 8>::new();
    let mut note = |w: Warning| {
        let _ = warnings.push(w);
    };
    let found = match efi_system_table {
        Some(system_table) => entry::from_efi(mem, system_table, &mut note),
        None => None,
    };
    // On UEFI the F-segment belongs to no one (ACPI's search skips it likewise).
    let found = match found {
        None if path != BootPath::Multiboot2Uefi => entry::scan_bios(mem, &mut note),
        found => found,
    };
    for w in warnings {
        hw.warn(w);
    }
    let Some(found) = found else {
        return hw;
    };
    let (major, minor) = found.entry.version();
    hw.source = Some(Version { major, minor });
    let (address, len) = found.entry.table();
    let wanted = (len as usize).min(MAX_TABLE).min(scratch.len());
    if wanted < len as usize && found.entry.count().is_some() {
        hw.warn(Warning::TableCut { len });
    }
    let mut table = &mut scratch[..wanted];
    if !mem.read(address, table) {
        // A 3.x maximum can reach past readable memory while the table itself does not.
        let mut short = wanted;
        while short > 0 && !mem.read(address, &mut scratch[..short]) {
            short /= 2;
        }
        if short == 0 {
            hw.warn(Warning::Unreadable {
                what: "SMBIOS structure table",
                address,
            });
            return hw;
        }
        table = &mut scratch[..short];
    }
    let mut warnings = heapless::Vec::<Warning, 8>::new();
    table::parse_table(table, found.entry.count(), &mut hw, &mut |w| {
        let _ = warnings.push(w);
    });
    for w in warnings {
        hw.warn(w);
    }
    hw
}

#[cfg(target_os = "none")]
mod global {
    use super::*;
    use crate::boot::BootInfo;

    static HARDWARE: spin::Once<Hardware> = spin::Once::new();
    /// The structure table while it is walked; in .bss, as the heap does not exist yet.
    static SCRATCH: spin::Mutex<[u8; MAX_TABLE]> = spin::Mutex::new([0; MAX_TABLE]);

    /// Reads the tables once, at boot, before memory set-up (the boot identity map covers
    /// the first 4 GiB, where firmware puts them). Later calls return the first result.
    pub fn discover(info: &BootInfo, mem: &impl PhysRead) -> &'static Hardware {
        HARDWARE.call_once(|| {
            let mut scratch = SCRATCH.lock();
            read(mem, info.path, info.efi_system_table, &mut scratch[..])
        })
    }

    /// What [`discover`] found (all absent if it has not run).
    pub fn hardware() -> &'static Hardware {
        static NONE: Hardware = Hardware {
            source: None,
            vendor: None,
            product: None,
            serial: None,
            bios_vendor: None,
            bios_version: None,
            bios_date: None,
            warnings: heapless::Vec::new(),
        };
        HARDWARE.get().unwrap_or(&NONE)
    }
}

#[cfg(target_os = "none")]
pub use global::{discover, hardware};
