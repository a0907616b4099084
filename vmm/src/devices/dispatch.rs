//! Guest port, MMIO and MSR accesses: one bus lookup, then one call on the target.
//!
//! A device that declares [`Access::Bytes`] sees a wider access as byte accesses at
//! consecutive addresses, each looked up on its own (a 16-bit `IN` at `0x3F7` reads an
//! unclaimed port and then COM1's RBR); a device that declares [`Access::Whole`] takes the
//! access as it came when it is the first byte's target, and one byte lane when a split
//! access reaches it in the middle.

use super::device::Access;
use super::{Devices, Target, all_ones, lapic};

impl Devices {
    /// A guest `IN` of `size` bytes (1, 2 or 4; larger sizes are cut to 4) from `port`.
    /// Unclaimed ports read as all ones.
    pub fn read_port(&mut self, port: u16, size: u8) -> u32 {
        let size = size.min(4);
        let first = self.pio.lookup(port);
        if let Some((target, offset)) = first
            && self.port_access(target) == Access::Whole
        {
            return self.read_port_at(target, port, offset, size);
        }
        let mut value = 0;
        for i in 0..size {
            let byte = match port.checked_add(u16::from(i)) {
                // The first byte's lookup is done already (most INs are one byte).
                Some(p) => match if i == 0 { first } else { self.pio.lookup(p) } {
                    Some((target, offset)) => self.read_port_at(target, p, offset, 1) as u8,
                    None => 0xFF,
                },
                None => 0xFF,
            };
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// A guest `OUT` of the low `size` bytes (1, 2 or 4) of `value` to `port`. Writes to
    /// unclaimed ports (including [`POST_PORT`](super::POST_PORT)) are dropped.
    pub fn write_port(&mut self, port: u16, size: u8, value: u32) {
        let size = size.min(4);
        let first = self.pio.lookup(port);
        if let Some((target, offset)) = first
            && self.port_access(target) == Access::Whole
        {
            self.write_port_at(target, port, offset, size, value);
            return;
        }
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .enumerate()
            .take(usize::from(size))
        {
            // `i` < 4.
            let Some(p) = port.checked_add(i as u16) else {
                continue;
            };
            if let Some((target, offset)) = if i == 0 { first } else { self.pio.lookup(p) } {
                self.write_port_at(target, p, offset, 1, u32::from(byte));
            }
        }
    }

    /// A guest load of `size` bytes (1, 2, 4 or 8; larger sizes are cut to 8) at `gpa`.
    /// Unclaimed addresses read as all ones.
    pub fn read_mmio(&mut self, gpa: u64, size: u8) -> u64 {
        let size = size.min(8);
        let Some((target, offset)) = self.mmio.lookup(gpa) else {
            return all_ones(size);
        };
        if self.mmio_access(target) == Access::Whole {
            return self.read_mmio_at(target, offset, size);
        }
        let mut value = 0;
        for i in 0..size {
            let byte = match gpa
                .checked_add(u64::from(i))
                .and_then(|a| self.mmio.lookup(a))
            {
                Some((target, offset)) => self.read_mmio_at(target, offset, 1) as u8,
                None => 0xFF,
            };
            value |= u64::from(byte) << (8 * i);
        }
        value
    }

    /// A guest store of the low `size` bytes (1, 2, 4 or 8) of `value` at `gpa`. Stores to
    /// unclaimed addresses are dropped.
    pub fn write_mmio(&mut self, gpa: u64, size: u8, value: u64) {
        let size = size.min(8);
        let Some((target, offset)) = self.mmio.lookup(gpa) else {
            return;
        };
        if self.mmio_access(target) == Access::Whole {
            self.write_mmio_at(target, offset, size, value);
            return;
        }
        for (i, byte) in value
            .to_le_bytes()
            .into_iter()
            .enumerate()
            .take(usize::from(size))
        {
            // `i` < 8.
            if let Some((target, offset)) =
                gpa.checked_add(i as u64).and_then(|a| self.mmio.lookup(a))
            {
                self.write_mmio_at(target, offset, 1, u64::from(byte));
            }
        }
    }

    /// RDMSR of a platform-owned MSR ([`crate::msr::platform_owned`]); `None` = #GP.
    pub fn read_msr(&mut self, msr: u32) -> Option<u64> {
        let now = self.now_ns;
        let lapic = &mut self.irq.lapics[self.cpu];
        match msr {
            lapic::IA32_APIC_BASE => Some(lapic.apic_base()),
            lapic::IA32_TSC_DEADLINE => Some(lapic.tsc_deadline()),
            _ => lapic.read_msr(msr, now).ok(),
        }
    }

    /// WRMSR of a platform-owned MSR, at the time and guest TSC last set. Returns false for
    /// #GP.
    pub fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        let (now, tsc, cpu) = (self.now_ns, self.guest_tsc, self.cpu);
        let lapic = &mut self.irq.lapics[cpu];
        match msr {
            lapic::IA32_APIC_BASE => lapic.write_apic_base(value).is_ok(),
            lapic::IA32_TSC_DEADLINE => {
                lapic.write_tsc_deadline(value, now, tsc);
                true
            }
            _ => match lapic.write_msr(msr, value, now) {
                Ok(event) => {
                    if let Some(event) = event {
                        self.irq.lapic_event(cpu, event);
                    }
                    true
                }
                Err(_) => false,
            },
        }
    }

    /// After a BAR write: remembers whether function `index` now has deferred work (a
    /// virtio notify), so the VM loop calls [`service_io`](Devices::service_io) only then.
    fn note_pci_work(&mut self, index: usize) {
        if let Some(function) = self.pci.functions.get(index) {
            self.io_pending |= function.device.wants_service();
        }
    }

    /// How `target` takes port accesses wider than a byte.
    fn port_access(&self, target: Target) -> Access {
        match target {
            Target::Device(i) => self.access[i].0,
            Target::Pic => Access::Bytes,
            _ => Access::Whole,
        }
    }

    /// How `target` takes MMIO accesses wider than a byte.
    fn mmio_access(&self, target: Target) -> Access {
        match target {
            Target::Device(i) => self.access[i].1,
            _ => Access::Whole,
        }
    }

    fn read_port_at(&mut self, target: Target, port: u16, offset: u16, size: u8) -> u32 {
        match target {
            Target::Device(i) => {
                let (slots, _, mut ctx) = self.split();
                match slots[i].port_io() {
                    Some(device) => device.read_port(port, offset, size, &mut ctx),
                    None => all_ones(size) as u32,
                }
            }
            Target::Pic => u32::from(self.irq.pic.read_port(port)),
            Target::PciConfig => self.pci_config_read(port, size),
            Target::PciBar { function, bar } => {
                self.pci_bar_read(function, bar, u64::from(offset), size) as u32
            }
            Target::Ioapic | Target::Lapic => all_ones(size) as u32,
        }
    }

    fn write_port_at(&mut self, target: Target, port: u16, offset: u16, size: u8, value: u32) {
        match target {
            Target::Device(i) => {
                let (slots, _, mut ctx) = self.split();
                if let Some(device) = slots[i].port_io() {
                    device.write_port(port, offset, size, value, &mut ctx);
                }
            }
            Target::Pic => self.irq.pic.write_port(port, value as u8),
            Target::PciConfig => self.pci_config_write(port, size, value),
            Target::PciBar { function, bar } => {
                self.pci_bar_write(function, bar, u64::from(offset), size, u64::from(value));
                self.note_pci_work(function);
            }
            Target::Ioapic | Target::Lapic => {}
        }
    }

    fn read_mmio_at(&mut self, target: Target, offset: u64, size: u8) -> u64 {
        match target {
            Target::Device(i) => {
                let (slots, _, mut ctx) = self.split();
                match slots[i].mmio() {
                    Some(device) => device.read_mmio(offset, size, &mut ctx),
                    None => all_ones(size),
                }
            }
            Target::Ioapic => self.irq.ioapic.read(offset, size),
            Target::Lapic => self.irq.lapics[self.cpu].read_mmio(offset, size, self.now_ns),
            Target::PciBar { function, bar } => self.pci_bar_read(function, bar, offset, size),
            Target::Pic | Target::PciConfig => all_ones(size),
        }
    }

    fn write_mmio_at(&mut self, target: Target, offset: u64, size: u8, value: u64) {
        match target {
            Target::Device(i) => {
                let (slots, _, mut ctx) = self.split();
                if let Some(device) = slots[i].mmio() {
                    device.write_mmio(offset, size, value, &mut ctx);
                }
            }
            Target::Ioapic => {
                for message in self.irq.ioapic.write(offset, size, value) {
                    self.irq.deliver(message);
                }
            }
            Target::Lapic => {
                let (cpu, now) = (self.cpu, self.now_ns);
                if let Some(event) = self.irq.lapics[cpu].write_mmio(offset, size, value, now) {
                    self.irq.lapic_event(cpu, event);
                }
            }
            Target::PciBar { function, bar } => {
                self.pci_bar_write(function, bar, offset, size, value);
                self.note_pci_work(function);
            }
            Target::Pic | Target::PciConfig => {}
        }
    }
}
