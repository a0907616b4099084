//! Port-I/O and MMIO buses: which device answers at which address.
//!
//! A bus is a sorted table of non-overlapping address ranges, each leading to a [`Target`]
//! and carrying the device's name (for errors and listings). A lookup is a binary search
//! (O(log n), no allocation), and [`Devices`](crate::devices::Devices) turns the target into
//! one call on the device: most targets are an index into its table of registered
//! [`Device`](crate::devices::Device)s; the interrupt controllers, the PCI configuration
//! ports and PCI BARs have targets of their own (see the [`devices`](crate::devices) docs).
//!
//! [`PioBus`] covers the 64 KiB x86 I/O port space, [`MmioBus`] the guest-physical address
//! space. Both reject a range that overlaps one already mapped, and both answer
//! [`lookup`](PioBus::lookup) with the target and the offset of the address inside the range.

use alloc::vec::Vec;
use core::fmt;

/// What a mapped range leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A registered device: its index in the platform's device table.
    Device(usize),
    /// The 8259 pair and its ELCR (part of the interrupt routing).
    Pic,
    /// The I/O APIC's MMIO window.
    Ioapic,
    /// The local APIC page (the accessing vCPU's APIC).
    Lapic,
    /// PCI configuration mechanism #1 and the reset control register (`0xCF8`–`0xCFF`).
    PciConfig,
    /// A PCI function's BAR as the guest programmed it.
    PciBar {
        /// The function's index on the PCI bus.
        function: usize,
        /// The BAR number (0–5).
        bar: u8,
    },
}

/// Why a range could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty (`len` 0).
    EmptyRange {
        /// The device being mapped.
        device: &'static str,
        /// Start of the range.
        base: u64,
    },
    /// The range runs past the end of the address space (port 0xFFFF, or GPA 2^64 - 1).
    OutOfRange {
        /// The device being mapped.
        device: &'static str,
        /// Start of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
    /// The range overlaps one already mapped.
    Overlap {
        /// The device being mapped.
        device: &'static str,
        /// Start of the new range.
        base: u64,
        /// Length of the new range.
        len: u64,
        /// The device already mapped there.
        existing: &'static str,
        /// Start of the existing range.
        existing_base: u64,
        /// Length of the existing range.
        existing_len: u64,
    },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BusError::EmptyRange { device, base } => {
                write!(f, "cannot map {device} at {base:#x}: the range is empty")
            }
            BusError::OutOfRange { device, base, len } => write!(
                f,
                "cannot map {device} at {base:#x} (length {len:#x}): the range runs past the \
                 end of the address space"
            ),
            BusError::Overlap {
                device,
                base,
                len,
                existing,
                existing_base,
                existing_len,
            } => write!(
                f,
                "cannot map {device} at {base:#x}..={:#x}: overlaps {existing} at \
                 {existing_base:#x}..={:#x}",
                last(base, len),
                last(existing_base, existing_len),
            ),
        }
    }
}

/// The last address of a non-empty range (never overflows for a mapped range).
fn last(base: u64, len: u64) -> u64 {
    base.saturating_add(len.saturating_sub(1))
}

/// One mapped range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    base: u64,
    len: u64,
    target: Target,
    name: &'static str,
}

impl Range {
    fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.len
    }
}

/// Sorted, non-overlapping ranges over an address space that ends at `limit` (inclusive).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RangeMap {
    ranges: Vec<Range>,
}

impl RangeMap {
    const fn new() -> Self {
        RangeMap { ranges: Vec::new() }
    }

    fn insert(
        &mut self,
        base: u64,
        len: u64,
        target: Target,
        device: &'static str,
        limit: u64,
    ) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::EmptyRange { device, base });
        }
        if base > limit || len - 1 > limit - base {
            return Err(BusError::OutOfRange { device, base, len });
        }
        let end = base + (len - 1);
        // The first range that ends at or after `base`; only it can overlap, since ranges are
        // sorted and disjoint.
        let index = self.ranges.partition_point(|r| r.base + (r.len - 1) < base);
        if let Some(existing) = self.ranges.get(index)
            && existing.base <= end
        {
            return Err(BusError::Overlap {
                device,
                base,
                len,
                existing: existing.name,
                existing_base: existing.base,
                existing_len: existing.len,
            });
        }
        self.ranges.insert(
            index,
            Range {
                base,
                len,
                target,
                name: device,
            },
        );
        Ok(())
    }

    /// Unmaps the range starting at `base`; returns its target.
    fn remove(&mut self, base: u64) -> Option<Target> {
        let index = self.ranges.binary_search_by_key(&base, |r| r.base).ok()?;
        Some(self.ranges.remove(index).target)
    }

    /// Unmaps every range leading to a target `pred` picks.
    fn remove_where(&mut self, pred: impl Fn(Target) -> bool) {
        self.ranges.retain(|r| !pred(r.target));
    }

    fn lookup(&self, addr: u64) -> Option<(Target, u64)> {
        let index = self.ranges.partition_point(|r| r.base <= addr);
        let range = self.ranges.get(index.checked_sub(1)?)?;
        range
            .contains(addr)
            .then(|| (range.target, addr - range.base))
    }

    fn iter(&self) -> impl Iterator<Item = Mapping<u64>> + '_ {
        self.ranges.iter().map(|r| Mapping {
            base: r.base,
            len: r.len,
            target: r.target,
            name: r.name,
        })
    }
}

/// One mapped range, as [`PioBus::iter`] and [`MmioBus::iter`] list it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping<A> {
    /// First address.
    pub base: A,
    /// Length.
    pub len: A,
    /// Where it leads.
    pub target: Target,
    /// The device's name.
    pub name: &'static str,
}

/// The x86 I/O port space (ports 0..=0xFFFF).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PioBus {
    map: RangeMap,
}

impl PioBus {
    /// An empty bus: every port unclaimed.
    pub const fn new() -> Self {
        PioBus {
            map: RangeMap::new(),
        }
    }

    /// Maps ports `base..base + len` to `target`, which errors call `device`.
    ///
    /// ```
    /// use keel_vmm::bus::{PioBus, Target};
    ///
    /// let mut bus = PioBus::new();
    /// bus.insert(0x3F8, 8, Target::Device(0), "COM1").unwrap();
    /// assert_eq!(bus.lookup(0x3FD), Some((Target::Device(0), 5)));
    /// assert!(bus.insert(0x3FF, 1, Target::Device(1), "COM2").is_err());
    /// ```
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        target: Target,
        device: &'static str,
    ) -> Result<(), BusError> {
        self.map.insert(
            u64::from(base),
            u64::from(len),
            target,
            device,
            u64::from(u16::MAX),
        )
    }

    /// Unmaps the range starting at `base`; returns what it led to.
    pub fn remove(&mut self, base: u16) -> Option<Target> {
        self.map.remove(u64::from(base))
    }

    /// Unmaps every range whose target `pred` picks.
    pub fn remove_where(&mut self, pred: impl Fn(Target) -> bool) {
        self.map.remove_where(pred)
    }

    /// The target claiming `port` and the port's offset inside that range.
    pub fn lookup(&self, port: u16) -> Option<(Target, u16)> {
        let (target, offset) = self.map.lookup(u64::from(port))?;
        // Offsets inside a port range are below 0x10000 by construction.
        Some((target, u16::try_from(offset).ok()?))
    }

    /// The mapped ranges, in address order.
    pub fn iter(&self) -> impl Iterator<Item = Mapping<u16>> + '_ {
        self.map.iter().filter_map(|m| {
            Some(Mapping {
                base: u16::try_from(m.base).ok()?,
                len: u16::try_from(m.len).ok()?,
                target: m.target,
                name: m.name,
            })
        })
    }
}

/// The guest-physical MMIO space (addresses not backed by RAM).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MmioBus {
    map: RangeMap,
}

impl MmioBus {
    /// An empty bus: every address unclaimed.
    pub const fn new() -> Self {
        MmioBus {
            map: RangeMap::new(),
        }
    }

    /// Maps guest-physical `base..base + len` to `target`, which errors call `device`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        target: Target,
        device: &'static str,
    ) -> Result<(), BusError> {
        self.map.insert(base, len, target, device, u64::MAX)
    }

    /// Unmaps the range starting at `base`; returns what it led to.
    pub fn remove(&mut self, base: u64) -> Option<Target> {
        self.map.remove(base)
    }

    /// Unmaps every range whose target `pred` picks.
    pub fn remove_where(&mut self, pred: impl Fn(Target) -> bool) {
        self.map.remove_where(pred)
    }

    /// The target claiming `gpa` and the address's offset inside that range.
    pub fn lookup(&self, gpa: u64) -> Option<(Target, u64)> {
        self.map.lookup(gpa)
    }

    /// The mapped ranges, in address order.
    pub fn iter(&self) -> impl Iterator<Item = Mapping<u64>> + '_ {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COM1: Target = Target::Device(0);

    #[test]
    fn pio_lookup_hits_inside_and_misses_outside() {
        let mut bus = PioBus::new();
        bus.insert(0x3F8, 8, COM1, "COM1").unwrap();
        assert_eq!(bus.lookup(0x3F7), None);
        assert_eq!(bus.lookup(0x3F8), Some((COM1, 0)));
        assert_eq!(bus.lookup(0x3FF), Some((COM1, 7)));
        assert_eq!(bus.lookup(0x400), None);
        assert_eq!(bus.lookup(0), None);
        assert_eq!(bus.lookup(0xFFFF), None);
    }

    #[test]
    fn pio_rejects_overlaps_on_either_side() {
        let mut bus = PioBus::new();
        bus.insert(0x3F8, 8, COM1, "COM1").unwrap();
        for (base, len) in [
            (0x3F0, 9),
            (0x3FF, 4),
            (0x3FA, 2),
            (0x300, 0x200),
            (0x3F8, 8),
        ] {
            let err = bus.insert(base, len, COM1, "COM1").unwrap_err();
            assert_eq!(
                err,
                BusError::Overlap {
                    device: "COM1",
                    base: u64::from(base),
                    len: u64::from(len),
                    existing: "COM1",
                    existing_base: 0x3F8,
                    existing_len: 8,
                },
                "{base:#x}+{len}"
            );
        }
        // Adjacent ranges are fine.
        bus.insert(0x3F0, 8, COM1, "COM1").unwrap();
        bus.insert(0x400, 1, COM1, "COM1").unwrap();
        assert_eq!(
            bus.iter()
                .map(|m| (m.base, m.len, m.target))
                .collect::<Vec<_>>(),
            [(0x3F0, 8, COM1), (0x3F8, 8, COM1), (0x400, 1, COM1)]
        );
        assert_eq!(bus.lookup(0x3F7), Some((COM1, 7)));
        assert_eq!(bus.lookup(0x400), Some((COM1, 0)));
    }

    #[test]
    fn pio_rejects_empty_and_wrapping_ranges() {
        let mut bus = PioBus::new();
        assert_eq!(
            bus.insert(0x80, 0, COM1, "COM1"),
            Err(BusError::EmptyRange {
                device: "COM1",
                base: 0x80
            })
        );
        assert!(matches!(
            bus.insert(0xFFFF, 2, COM1, "COM1"),
            Err(BusError::OutOfRange { .. })
        ));
        bus.insert(0xFFFF, 1, COM1, "COM1").unwrap();
        assert_eq!(bus.lookup(0xFFFF), Some((COM1, 0)));
    }

    #[test]
    fn mmio_covers_the_top_of_the_address_space() {
        let mut bus = MmioBus::new();
        bus.insert(0xFEC0_0000, 0x1000, COM1, "COM1").unwrap();
        bus.insert(u64::MAX - 0xFFF, 0x1000, COM1, "COM1").unwrap();
        assert!(matches!(
            bus.insert(u64::MAX, 2, COM1, "COM1"),
            Err(BusError::OutOfRange { .. })
        ));
        assert!(matches!(
            bus.insert(0xFEC0_0FFF, 1, COM1, "COM1"),
            Err(BusError::Overlap { .. })
        ));
        assert_eq!(bus.lookup(0xFEC0_0010), Some((COM1, 0x10)));
        assert_eq!(bus.lookup(0xFEC0_1000), None);
        assert_eq!(bus.lookup(u64::MAX), Some((COM1, 0xFFF)));
        assert_eq!(bus.lookup(0), None);
    }

    #[test]
    fn many_ranges_stay_sorted() {
        let mut bus = MmioBus::new();
        for i in (0..32u64).rev() {
            bus.insert(i * 0x100, 0x80, COM1, "COM1").unwrap();
        }
        let bases: Vec<u64> = bus.iter().map(|m| m.base).collect();
        assert!(bases.windows(2).all(|w| w[0] < w[1]));
        for i in 0..32u64 {
            assert_eq!(bus.lookup(i * 0x100 + 0x7F), Some((COM1, 0x7F)));
            assert_eq!(bus.lookup(i * 0x100 + 0x80), None);
        }
    }

    #[test]
    fn ranges_come_and_go() {
        let mut bus = MmioBus::new();
        let bar = Target::PciBar {
            function: 0,
            bar: 0,
        };
        bus.insert(0xE000_0000, 0x4000, bar, "test").unwrap();
        bus.insert(0xFEE0_0000, 0x1000, Target::Lapic, "local APIC")
            .unwrap();
        assert_eq!(
            bus.remove(0xE000_0001),
            None,
            "only a range's base removes it"
        );
        assert_eq!(bus.remove(0xE000_0000), Some(bar));
        assert_eq!(bus.lookup(0xE000_0000), None);
        bus.insert(0xE000_2000, 0x4000, bar, "test").unwrap();
        bus.remove_where(|t| matches!(t, Target::PciBar { .. }));
        assert_eq!(
            bus.iter().map(|m| m.target).collect::<Vec<_>>(),
            [Target::Lapic]
        );
        let mut ports = PioBus::new();
        ports.insert(0xC000, 16, bar, "test").unwrap();
        assert_eq!(ports.remove(0xC000), Some(bar));
        assert_eq!(ports.lookup(0xC000), None);
    }

    #[test]
    fn errors_name_both_devices_and_ranges() {
        let mut bus = PioBus::new();
        bus.insert(0x3F8, 8, COM1, "COM1").unwrap();
        let err = bus.insert(0x3FC, 8, COM1, "COM1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot map COM1 at 0x3fc..=0x403: overlaps COM1 at 0x3f8..=0x3ff"
        );
    }
}
