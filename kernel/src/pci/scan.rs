//! Bus enumeration over any [`ConfigSpace`]: every bus, every device, functions 1..8 only
//! when function 0 says it is multi-function (§6.2.1, header type bit 7).
//!
//! A brute-force walk of all 256 buses finds devices behind bridges and behind extra host
//! bridges alike without trusting bridge programming, and costs 8192 vendor-ID reads. For each
//! function the scanner copies the 64-byte header and the capability chain, and sizes the
//! BARs by the write-all-ones probe with I/O and memory decode switched off in the command
//! register meanwhile (§6.2.5.1 "Implementation Note: Sizing a 32-bit Base Address
//! Register"), restoring both afterwards.

use super::bar::{self, Bar};
use super::caps::{CAP_VENDOR, MAX_CAPABILITIES, STATUS_CAPABILITIES};
use super::{HeaderType, PciAddress, PciDevice, command, offset};

/// Access to configuration space, one aligned dword at a time.
pub trait ConfigSpace {
    /// Reads the dword at `offset` (a multiple of 4 below 256) of function `at`; an absent
    /// function reads all ones.
    fn read32(&mut self, at: PciAddress, offset: u8) -> u32;
    /// Writes the dword at `offset` of function `at`.
    fn write32(&mut self, at: PciAddress, offset: u8, value: u32);
}

fn vendor_id(cs: &mut impl ConfigSpace, at: PciAddress) -> u16 {
    cs.read32(at, offset::VENDOR_ID) as u16
}

/// Enumerates every function on every bus, calling `found` for each in address order.
pub fn scan(cs: &mut impl ConfigSpace, mut found: impl FnMut(PciDevice)) {
    for bus in 0..=255u8 {
        for device in 0..32u8 {
            let at = PciAddress::new(bus, device, 0);
            if vendor_id(cs, at) == 0xffff {
                continue;
            }
            let header = (cs.read32(at, offset::HEADER_TYPE & !3) >> 16) as u8;
            let functions = if header & 0x80 != 0 { 8 } else { 1 };
            for function in 0..functions {
                let at = PciAddress::new(bus, device, function);
                if function == 0 || vendor_id(cs, at) != 0xffff {
                    found(read_function(cs, at));
                }
            }
        }
    }
}

/// Reads one present function: header, capability chain, BAR sizes.
pub fn read_function(cs: &mut impl ConfigSpace, at: PciAddress) -> PciDevice {
    let mut config = [0u8; 256];
    for off in (0..0x40u8).step_by(4) {
        put(&mut config, off, cs.read32(at, off));
    }
    let header_type = HeaderType::from_byte(config[offset::HEADER_TYPE as usize]);
    let status = u16::from_le_bytes([config[6], config[7]]);
    if status & STATUS_CAPABILITIES != 0 && header_type.bar_count() > 0 {
        fetch_capabilities(cs, at, &mut config);
    }
    let bars = size_bars(cs, at, &config, header_type.bar_count());
    PciDevice::from_config(at, &config, bars)
}

fn put(config: &mut [u8; 256], off: u8, value: u32) {
    let at = usize::from(off & 0xfc);
    config[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Copies the capability chain into `config`: each capability's first dword and, for
/// vendor-specific ones, the bytes its length byte covers.
fn fetch_capabilities(cs: &mut impl ConfigSpace, at: PciAddress, config: &mut [u8; 256]) {
    let mut next = config[0x34] & 0xfc;
    for _ in 0..MAX_CAPABILITIES {
        if next < 0x40 {
            break;
        }
        let head = cs.read32(at, next);
        put(config, next, head);
        if head as u8 == CAP_VENDOR {
            let len = (head >> 16) as u8;
            let end = u16::from(next) + u16::from(len);
            let mut off = u16::from(next) + 4;
            while off < end.min(256) {
                put(config, off as u8, cs.read32(at, off as u8));
                off += 4;
            }
        }
        next = (head >> 8) as u8 & 0xfc;
    }
}

fn size_bars(
    cs: &mut impl ConfigSpace,
    at: PciAddress,
    config: &[u8; 256],
    count: usize,
) -> [Option<Bar>; 6] {
    let mut bars = [None; 6];
    if count == 0 {
        return bars;
    }
    let cmd = u16::from_le_bytes([config[4], config[5]]);
    let decode = command::IO_SPACE | command::MEMORY_SPACE;
    if cmd & decode != 0 {
        // Only the low half: the status half is write-one-to-clear.
        cs.write32(at, offset::COMMAND, u32::from(cmd & !decode));
    }
    let mut probe = |off: u8| -> (u32, u32) {
        let original = cs.read32(at, off);
        cs.write32(at, off, 0xffff_ffff);
        let probed = cs.read32(at, off);
        cs.write32(at, off, original);
        (original, probed)
    };
    let mut i = 0;
    while i < count {
        let off = offset::BAR0 + 4 * i as u8;
        let (low, probe_low) = probe(off);
        if bar::is_64bit(low) {
            if i + 1 < count {
                let (high, probe_high) = probe(off + 4);
                bars[i] = bar::decode(
                    u64::from(high) << 32 | u64::from(low),
                    u64::from(probe_high) << 32 | u64::from(probe_low),
                );
            }
            i += 2;
        } else {
            bars[i] = bar::decode(u64::from(low), u64::from(probe_low));
            i += 1;
        }
    }
    if cmd & decode != 0 {
        cs.write32(at, offset::COMMAND, u32::from(cmd));
    }
    bars
}

/// Sets `bits` in the command register of `at`, returning the new command value.
pub fn set_command_bits(cs: &mut impl ConfigSpace, at: PciAddress, bits: u16) -> u16 {
    let cmd = cs.read32(at, offset::COMMAND) as u16 | bits;
    // Zero in the status half: its bits are write-one-to-clear.
    cs.write32(at, offset::COMMAND, u32::from(cmd));
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::bar::MemoryWidth;
    use crate::pci::caps::{CAP_MSIX, VirtioCfgType};
    use std::collections::BTreeMap;

    /// A function whose BARs behave like hardware: writable address bits, read-only flags.
    #[derive(Clone)]
    struct Function {
        config: [u8; 256],
        /// Per BAR register: which bits software can write.
        writable: [u32; 6],
    }

    impl Function {
        fn new(vendor: u16, device: u16, class: u8, subclass: u8, header: u8) -> Function {
            let mut config = [0u8; 256];
            config[0..2].copy_from_slice(&vendor.to_le_bytes());
            config[2..4].copy_from_slice(&device.to_le_bytes());
            config[0x0b] = class;
            config[0x0a] = subclass;
            config[0x0e] = header;
            Function {
                config,
                writable: [0; 6],
            }
        }

        fn dword(&self, off: u8) -> u32 {
            let at = usize::from(off);
            u32::from_le_bytes(self.config[at..at + 4].try_into().unwrap())
        }

        fn set_dword(&mut self, off: u8, value: u32) {
            let at = usize::from(off);
            self.config[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }

        /// A BAR with `value` (address | flags) and size `size` (mask computed).
        fn bar(mut self, index: usize, value: u32, writable: u32) -> Function {
            self.set_dword(0x10 + 4 * index as u8, value);
            self.writable[index] = writable;
            self
        }

        fn command(mut self, command: u16, status: u16) -> Function {
            self.set_dword(0x04, u32::from(status) << 16 | u32::from(command));
            self
        }
    }

    #[derive(Default)]
    struct MockBus {
        functions: BTreeMap<PciAddress, Function>,
        /// Addresses answering on every function number (a single-function device that
        /// decodes only the device number).
        mirrors: Vec<(u8, u8)>,
        /// BAR writes made while a decode bit was on.
        decode_violations: usize,
        reads: usize,
    }

    impl MockBus {
        fn resolve(&self, at: PciAddress) -> PciAddress {
            if self.mirrors.contains(&(at.bus, at.device)) {
                PciAddress::new(at.bus, at.device, 0)
            } else {
                at
            }
        }
    }

    impl ConfigSpace for MockBus {
        fn read32(&mut self, at: PciAddress, off: u8) -> u32 {
            assert_eq!(off % 4, 0);
            self.reads += 1;
            let at = self.resolve(at);
            self.functions
                .get(&at)
                .map_or(0xffff_ffff, |f| f.dword(off))
        }

        fn write32(&mut self, at: PciAddress, off: u8, value: u32) {
            assert_eq!(off % 4, 0);
            let at = self.resolve(at);
            let Some(f) = self.functions.get_mut(&at) else {
                return;
            };
            match off {
                0x04 => {
                    let old = f.dword(0x04);
                    let status = (old >> 16) & !(value >> 16); // write one to clear
                    f.set_dword(0x04, status << 16 | (value & 0xffff));
                }
                0x10..=0x27 => {
                    if f.dword(0x04) & 0b11 != 0 {
                        self.decode_violations += 1;
                    }
                    let i = usize::from((off - 0x10) / 4);
                    let w = f.writable[i];
                    let old = f.dword(off);
                    f.set_dword(off, (value & w) | (old & !w));
                }
                _ => f.set_dword(off, value),
            }
        }
    }

    fn q35_like() -> MockBus {
        let mut bus = MockBus::default();
        bus.functions.insert(
            PciAddress::new(0, 0, 0),
            Function::new(0x8086, 0x29c0, 0x06, 0x00, 0x00),
        );
        // e1000: BAR0 128 KiB memory, BAR1 64 I/O ports, decode on, a pending status bit.
        let e1000 = Function::new(0x8086, 0x100e, 0x02, 0x00, 0x00)
            .command(0x0107, 0x4000)
            .bar(0, 0xfebc_0000, 0xfffe_0000)
            .bar(1, 0xc001, 0xffff_ffc0);
        bus.functions.insert(PciAddress::new(0, 3, 0), e1000);
        // virtio-net (transitional): BAR0 I/O 32 ports, BAR1 4 KiB, BAR4/5 64-bit 16 KiB.
        let mut virtio = Function::new(0x1af4, 0x1000, 0x02, 0x00, 0x00)
            .command(0x0003, 0x0010)
            .bar(0, 0xc041, 0xffff_ffe0)
            .bar(1, 0xfebd_1000, 0xffff_f000)
            .bar(4, 0x0000_000c, 0xffff_c000)
            .bar(5, 0x0000_0008, 0xffff_ffff);
        virtio.config[0x34] = 0x98;
        virtio.config[0x98] = CAP_MSIX;
        virtio.config[0x99] = 0x84;
        virtio.config[0x84..0x94]
            .copy_from_slice(&[0x09, 0x00, 16, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0]);
        virtio.config[0x3c] = 11;
        virtio.config[0x3d] = 1;
        bus.functions.insert(PciAddress::new(0, 4, 0), virtio);
        // A multi-function device with functions 0, 2 and 3.
        for f in [0, 2, 3] {
            bus.functions.insert(
                PciAddress::new(0, 0x1f, f),
                Function::new(0x8086, 0x2918 + u16::from(f), 0x06, 0x01, 0x80),
            );
        }
        // A bridge to bus 1, and a device there.
        let mut bridge = Function::new(0x1b36, 0x0001, 0x06, 0x04, 0x01);
        bridge.config[0x19] = 1;
        bus.functions.insert(PciAddress::new(0, 5, 0), bridge);
        bus.functions.insert(
            PciAddress::new(1, 0, 0),
            Function::new(0x1af4, 0x1042, 0x01, 0x00, 0x00),
        );
        // A single-function device answering on all eight function numbers.
        bus.functions.insert(
            PciAddress::new(0, 6, 0),
            Function::new(0x1234, 0x1111, 0x03, 0x00, 0x00),
        );
        bus.mirrors.push((0, 6));
        bus
    }

    fn scan_all(bus: &mut MockBus) -> Vec<PciDevice> {
        let mut out = Vec::new();
        scan(bus, |d| out.push(d));
        out
    }

    #[test]
    fn finds_every_function_once() {
        let mut bus = q35_like();
        let found = scan_all(&mut bus);
        let addresses: Vec<String> = found.iter().map(|d| d.address.to_string()).collect();
        assert_eq!(
            addresses,
            [
                "00:00.0", "00:03.0", "00:04.0", "00:05.0", "00:06.0", "00:1f.0", "00:1f.2",
                "00:1f.3", "01:00.0"
            ]
        );
        assert!(found[5].multifunction);
        assert_eq!(found[3].secondary_bus, Some(1));
        assert_eq!(found[3].header_type, HeaderType::PciBridge);
        // Bounded work: the vendor probe of 8192 slots plus a little per function.
        assert!(bus.reads < 8192 + 9 * 64, "{} reads", bus.reads);
    }

    #[test]
    fn sizes_bars_with_decode_off_and_restores_everything() {
        let mut bus = q35_like();
        let before_e1000 = bus.functions[&PciAddress::new(0, 3, 0)].config;
        let before_virtio = bus.functions[&PciAddress::new(0, 4, 0)].config;
        let found = scan_all(&mut bus);
        assert_eq!(bus.decode_violations, 0);
        assert_eq!(
            bus.functions[&PciAddress::new(0, 3, 0)].config,
            before_e1000
        );
        assert_eq!(
            bus.functions[&PciAddress::new(0, 4, 0)].config,
            before_virtio
        );

        let e1000 = &found[1];
        assert_eq!(
            e1000.bar(0).unwrap().memory(),
            Some((0xfebc_0000, 0x2_0000))
        );
        assert_eq!(e1000.bar(1).unwrap().io(), Some((0xc000, 64)));
        assert_eq!(e1000.bar(2), None);
        assert_eq!(e1000.command, 0x0107);
        assert_eq!(e1000.status, 0x4000);

        let virtio = &found[2];
        assert_eq!(virtio.bar(0).unwrap().io(), Some((0xc040, 32)));
        assert_eq!(virtio.bar(1).unwrap().memory(), Some((0xfebd_1000, 0x1000)));
        assert_eq!(
            virtio.bar(4),
            Some(Bar::Memory {
                address: 0x8_0000_0000,
                size: 0x4000,
                width: MemoryWidth::Bits64,
                prefetchable: true
            })
        );
        assert_eq!(virtio.bar(5), None, "upper half of BAR4");
        assert_eq!(virtio.capabilities.len(), 2);
        assert_eq!(virtio.virtio.len(), 1);
        assert_eq!(virtio.virtio[0].cfg_type, VirtioCfgType::Common);
        assert_eq!(virtio.virtio[0].length, 0x1000);
        assert_eq!((virtio.interrupt_line, virtio.interrupt_pin), (11, 1));
    }

    #[test]
    fn one_line_and_detailed_display() {
        let mut bus = q35_like();
        let found = scan_all(&mut bus);
        assert_eq!(
            found[1].to_string(),
            "00:03.0 8086:100e network (ethernet) e1000"
        );
        assert_eq!(found[0].to_string(), "00:00.0 8086:29c0 bridge (host) q35");
        assert_eq!(
            found[2].to_string(),
            "00:04.0 1af4:1000 network (ethernet) virtio-net"
        );
        let details = found[2].details().to_string();
        assert!(details.contains("  irq: INTA#, line 11\n"), "{details}");
        assert!(details.contains("  bar4: mem 0x800000000 (16 KiB, 64-bit, prefetchable)\n"));
        assert!(details.contains("  caps: msi-x@0x98 vendor@0x84\n"));
        assert!(details.contains("  virtio: common in bar4 at 0x0 (4096 bytes)\n"));
        let odd = Function::new(0x1234, 0x5678, 0x42, 0x07, 0);
        let d = PciDevice::from_config(PciAddress::new(2, 1, 7), &odd.config, [None; 6]);
        assert_eq!(d.to_string(), "02:01.7 1234:5678 class 0x42 (0x07)");
    }

    #[test]
    fn command_bits_keep_status() {
        let mut bus = q35_like();
        let at = PciAddress::new(0, 4, 0);
        let cmd = set_command_bits(&mut bus, at, command::BUS_MASTER | command::MEMORY_SPACE);
        assert_eq!(cmd, 0x0007);
        assert_eq!(bus.functions[&at].dword(0x04), 0x0010_0007);
    }

    #[test]
    fn empty_bus() {
        let mut bus = MockBus::default();
        assert!(scan_all(&mut bus).is_empty());
    }
}
