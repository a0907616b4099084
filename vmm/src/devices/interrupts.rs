//! Interrupt wiring and time for the PC in [`Devices`]: which device drives which line, how a
//! line reaches the 8259 pair and the I/O APIC, and which vector the CPU gets next.
//!
//! [`Interrupts`] owns the routing: the 8259 pair, the I/O APIC, one local APIC per vCPU, the
//! levels last driven on the ISA lines, NMIs waiting per vCPU and INIT/start-up IPIs for the
//! VM loop. Devices reach it only through their [`DeviceContext`](super::DeviceContext)
//! (`set_irq_level`, `pulse_irq`, `send_msi`), so no model points back at the platform.
//!
//! The VM loop calls [`Devices::advance`] with the VM's time before each entry. That runs
//! every registered device's [`Device::advance`](super::Device::advance) (timers up to
//! `now_ns`, then the device drives its lines) and the local APIC timers. The PC's lines:
//!
//! | line | source | 8259 input | I/O APIC pin | kind |
//! | --- | --- | --- | --- | --- |
//! | IRQ 0 | PIT counter 0 OUT (rising edges) | IR0 | 2 (MADT override) | edge |
//! | IRQ 1 | i8042 keyboard byte | IR1 | 1 | edge |
//! | IRQ 4 | COM1 (IIR cause, gated by MCR.OUT2; also after every COM1 access) | IR4 | 4 | level |
//! | IRQ 8 | RTC (IRQF) | slave IR0 | 8 | level |
//! | IRQ 9 | ACPI SCI | slave IR1 | 9 | level |
//! | IRQ 12 | i8042 auxiliary byte | slave IR4 | 12 | edge |
//!
//! Edge sources pulse the line (raise, then lower) once per edge; several PIT edges that fell
//! into one interval (the guest did not run for a while) become one, as missed ticks do on
//! hardware whose interrupt was still pending. Level sources set the line to their current
//! level, which also re-sends a level-triggered I/O APIC entry after its EOI.
//!
//! I/O APIC messages, PCI MSI/MSI-X messages ([`MsiMessage`], decoded per Intel SDM vol. 3
//! §11.11) and IPIs go to the local APICs their destination matches: fixed delivery
//! to each, lowest priority to the one with the lowest processor priority (the first on a
//! tie); ExtINT takes the vector from the 8259 at acknowledge time. INIT and start-up IPIs
//! become [`CpuRequest`]s for the VM loop; NMIs wait per vCPU for the VM loop to inject
//! ([`Devices::nmi_pending`]); SMI and the legacy INIT level de-assert are not delivered.
//! [`Devices::pending_interrupt`] is a vCPU's local APIC's highest deliverable vector or
//! else, when that APIC passes the 8259's INTR through (disabled APIC, or LINT0 in ExtINT
//! mode: the "virtual wire" of firmware and early boot, on the BSP), the 8259's.

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::ioapic::{Ioapic, IrqMessage};
use super::lapic::{DeliveryMode, Ipi, Lapic, LapicEvent, Shorthand};
use super::pic::Pic;
use super::{CpuRequest, Devices};

/// The I/O APIC pin the PIT's IRQ 0 is wired to (the MADT's interrupt source override).
pub const PIT_IOAPIC_PIN: u8 = 2;

/// The first I/O APIC pin PCI INTx lines are wired to (pins 0–15 are the ISA lines).
pub const FIRST_PCI_GSI: u8 = 16;
/// How many I/O APIC pins PCI INTx lines share (16–23).
pub const PCI_GSIS: u8 = 8;

/// The address window MSI writes must fall in to reach the local APICs (Intel SDM vol. 3
/// §11.11.1: bits 31:20 = 0xFEE).
pub const MSI_ADDRESS_BASE: u64 = 0xFEE0_0000;

/// A message-signalled interrupt as a device writes it (PCI MSI/MSI-X): a 64-bit address
/// and 32-bit data, decoded per Intel SDM vol. 3 §11.11.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsiMessage {
    /// Message address: bits 19:12 destination id, bit 2 logical destination mode.
    pub address: u64,
    /// Message data: bits 7:0 vector, 10:8 delivery mode, 15 level-triggered.
    pub data: u32,
}

impl MsiMessage {
    /// The message as the local APICs take it, or `None` if the address is not in the
    /// interrupt window or the delivery mode is reserved.
    pub fn decode(self) -> Option<IrqMessage> {
        if self.address >> 20 != MSI_ADDRESS_BASE >> 20 {
            return None;
        }
        // Bits 10:8 fit in u8.
        let mode = DeliveryMode::from_bits(((self.data >> 8) & 7) as u8)?;
        Some(IrqMessage {
            pin: 0,
            vector: self.data as u8,
            // Bits 19:12.
            destination: (self.address >> 12) as u8,
            logical: self.address & (1 << 2) != 0,
            delivery_mode: mode,
            level_triggered: self.data & (1 << 15) != 0,
        })
    }
}

/// The interrupt controllers and the wiring between them: the 8259 pair, the I/O APIC, one
/// local APIC per vCPU, the ISA line levels, and what waits for the VM loop (NMIs, INIT and
/// start-up IPIs). Devices reach it through their [`DeviceContext`](super::DeviceContext).
#[derive(Clone, Debug)]
pub struct Interrupts {
    pub(super) pic: Pic,
    pub(super) ioapic: Ioapic,
    pub(super) lapics: Vec<Lapic>,
    /// The last level driven on each level-triggered ISA line, so a change is seen once.
    pub(super) lines: Lines,
    /// NMIs sent and not yet delivered, a bit per vCPU (NMIs are edges: one more while one
    /// waits is the same NMI).
    pub(super) nmi_pending: u16,
    /// INITs and start-up IPIs for the VM loop.
    pub(super) cpu_requests: Vec<CpuRequest>,
    /// PCI functions asserting INTx now, per GSI.
    pub(super) pci_intx: PciIntxLines,
}

/// The PCI functions asserting their INTx pin, so a GSI shared by several stays asserted
/// until the last one lets go (wired-OR). Not saved: a restore rebuilds it from each
/// function's configuration space ([`PciConfigSpace::intx_output`]).
///
/// [`PciConfigSpace::intx_output`]: super::pci::PciConfigSpace::intx_output
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PciIntxLines {
    /// `(gsi, devfn)` of every asserting function, sorted.
    asserted: Vec<(u8, u8)>,
}

impl PciIntxLines {
    /// Records that function `devfn` drives `gsi` to `level`; returns whether the GSI as a
    /// whole is asserted now.
    fn set(&mut self, gsi: u8, devfn: u8, level: bool) -> bool {
        let key = (gsi, devfn);
        match (self.asserted.binary_search(&key), level) {
            (Err(at), true) => self.asserted.insert(at, key),
            (Ok(at), false) => {
                self.asserted.remove(at);
            }
            _ => {}
        }
        self.is_asserted(gsi)
    }

    /// Whether any function asserts `gsi`.
    pub fn is_asserted(&self, gsi: u8) -> bool {
        self.asserted.iter().any(|&(g, _)| g == gsi)
    }
}

/// The last level driven on each level-triggered ISA line, so a change is seen once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lines {
    /// Bit `n` = ISA line `n`.
    pub levels: u16,
}

/// Where the next vector comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptSource {
    /// The local APIC's IRR.
    Lapic(u8),
    /// The 8259 pair (through the local APIC's virtual wire, or a disabled APIC).
    Pic,
}

impl Devices {
    /// Runs the VM's time forward to `now_ns` and drives every interrupt line from its
    /// device.
    pub fn advance(&mut self, now_ns: u64) {
        self.set_now(now_ns);
        let now = self.now_ns();
        self.advance_devices();
        for lapic in &mut self.irq.lapics {
            lapic.update_timer(now);
        }
    }

    /// The earliest VM time at which a timer needs [`advance`](Self::advance) to raise its
    /// interrupt: the VM loop need not run a halted guest before then.
    pub fn next_deadline(&self) -> Option<u64> {
        self.device_deadlines()
            .chain(self.irq.lapics.iter().map(|l| l.next_timer_deadline()))
            .flatten()
            .min()
    }

    /// Where vCPU `cpu`'s next external interrupt would come from, if any.
    pub fn pending_interrupt(&self, cpu: usize) -> Option<InterruptSource> {
        let lapic = self.irq.lapics.get(cpu)?;
        if let Some(vector) = lapic.highest_pending() {
            return Some(InterruptSource::Lapic(vector));
        }
        (lapic.accepts_pic_interrupts() && self.irq.pic.interrupt_output())
            .then_some(InterruptSource::Pic)
    }

    /// vCPU `cpu` takes its pending interrupt (the INTA cycle): the vector, now in service.
    pub fn acknowledge_interrupt(&mut self, cpu: usize) -> Option<u8> {
        match self.pending_interrupt(cpu)? {
            InterruptSource::Lapic(vector) => {
                self.irq.lapics[cpu].acknowledge(vector).then_some(vector)
            }
            InterruptSource::Pic => self.irq.pic.acknowledge(),
        }
    }
}

impl Interrupts {
    /// The controllers at power-on around `lapics`, no line driven.
    pub(super) fn new(lapics: Vec<Lapic>) -> Interrupts {
        Interrupts {
            pic: Pic::new(),
            ioapic: Ioapic::new(0),
            lapics,
            lines: Lines::default(),
            nmi_pending: 0,
            cpu_requests: Vec::new(),
            pci_intx: PciIntxLines::default(),
        }
    }

    /// PCI function `devfn` drives its INTx line, wired to I/O APIC pin `gsi` (16–23), to
    /// `level`. Shared GSIs are the OR of their functions; the I/O APIC sees a change only
    /// when that OR changes. Lines carry the logical level: an asserted line is asserted
    /// whatever polarity the guest programs (PCI lines are active low on the wire; the
    /// `_PRT` says so and guests program the entry to match).
    pub(super) fn set_pci_intx(&mut self, devfn: u8, gsi: u8, level: bool) {
        if !(FIRST_PCI_GSI..FIRST_PCI_GSI + PCI_GSIS).contains(&gsi) {
            return;
        }
        let line = self.pci_intx.set(gsi, devfn, level);
        if let Some(message) = self.ioapic.set_irq(gsi, line) {
            self.deliver(message);
        }
    }

    /// Forgets every PCI INTx source and records `devfn` asserting `gsi` for each pair in
    /// `sources`, without driving the I/O APIC (whose pin levels a restore already loaded).
    pub(super) fn reload_pci_intx(&mut self, sources: impl Iterator<Item = (u8, u8)>) {
        self.pci_intx = PciIntxLines::default();
        for (devfn, gsi) in sources {
            self.pci_intx.set(gsi, devfn, true);
        }
    }

    /// Raises and lowers ISA line `irq` (an edge).
    pub(super) fn pulse(&mut self, irq: u8) {
        self.drive(irq, true);
        self.drive(irq, false);
    }

    /// Drives level line `irq` to `level` if it changed (the I/O APIC re-sends a
    /// level-triggered entry still asserted at its EOI by itself). Lines above 15 are
    /// ignored.
    pub(super) fn set_level(&mut self, irq: u8, level: bool) {
        let Some(bit) = 1u16.checked_shl(u32::from(irq)) else {
            return;
        };
        let was = self.lines.levels & bit != 0;
        if level == was {
            return;
        }
        self.lines.levels ^= bit;
        self.drive(irq, level);
    }

    fn drive(&mut self, irq: u8, level: bool) {
        if irq > 15 {
            return;
        }
        self.pic.set_irq(irq, level);
        let pin = if irq == 0 { PIT_IOAPIC_PIN } else { irq };
        if let Some(message) = self.ioapic.set_irq(pin, level) {
            self.deliver(message);
        }
    }

    /// A PCI device's MSI/MSI-X write, decoded and delivered; undecodable ones are dropped.
    pub(super) fn deliver_msi(&mut self, message: MsiMessage) {
        if let Some(message) = message.decode() {
            self.deliver(message);
        }
    }

    /// What a local APIC's access asked for: an EOI broadcast to the I/O APIC, or an IPI
    /// from vCPU `from`.
    pub(super) fn lapic_event(&mut self, from: usize, event: LapicEvent) {
        match event {
            LapicEvent::Eoi { vector } => {
                for message in self.ioapic.end_of_interrupt(vector) {
                    self.deliver(message);
                }
            }
            LapicEvent::Ipi(ipi) => self.send_ipi(from, ipi),
        }
    }

    /// An I/O APIC (or decoded MSI) message to the local APICs its destination names.
    pub(super) fn deliver(&mut self, message: IrqMessage) {
        let targets = self.cpu_set(|_, lapic| {
            lapic.matches_destination(u32::from(message.destination), message.logical)
        });
        // ExtINT: the 8259 supplies the vector at acknowledge time; its INTR output is what
        // `pending_interrupt` already follows.
        self.accept(
            targets,
            message.delivery_mode,
            message.vector,
            message.level_triggered,
            true,
        );
    }

    /// An IPI that vCPU `from`'s local APIC sent through its ICR.
    pub(super) fn send_ipi(&mut self, from: usize, ipi: Ipi) {
        let targets = self.cpu_set(|i, lapic| match ipi.shorthand {
            Shorthand::SelfOnly => i == from,
            Shorthand::AllIncludingSelf => true,
            Shorthand::AllExcludingSelf => i != from,
            Shorthand::None => lapic.matches_destination(ipi.destination, ipi.logical),
        });
        self.accept(
            targets,
            ipi.delivery_mode,
            ipi.vector,
            ipi.level_triggered,
            ipi.assert,
        );
    }

    /// The vCPUs whose local APIC satisfies `pred`, a bit each (at most [`MAX_CPUS`]); no
    /// allocation, as this runs for every device interrupt.
    ///
    /// [`MAX_CPUS`]: super::MAX_CPUS
    fn cpu_set(&self, pred: impl Fn(usize, &Lapic) -> bool) -> u16 {
        self.lapics
            .iter()
            .enumerate()
            .filter(|&(i, lapic)| pred(i, lapic))
            .fold(0, |set, (i, _)| set | 1 << i)
    }

    /// Hands an interrupt message to the vCPUs in `targets` (a [`cpu_set`](Self::cpu_set))
    /// by delivery mode.
    fn accept(
        &mut self,
        targets: u16,
        mode: DeliveryMode,
        vector: u8,
        level_triggered: bool,
        assert: bool,
    ) {
        let cpus = (0..self.lapics.len()).filter(move |&i| targets & (1 << i) != 0);
        match mode {
            DeliveryMode::Fixed => {
                for cpu in cpus {
                    self.lapics[cpu].accept_interrupt(vector, level_triggered);
                }
            }
            DeliveryMode::LowestPriority => {
                // The lowest processor priority wins; the lowest APIC id on a tie.
                if let Some(cpu) = cpus.min_by_key(|&cpu| self.lapics[cpu].ppr()) {
                    self.lapics[cpu].accept_interrupt(vector, level_triggered);
                }
            }
            // The legacy "INIT level de-assert" (level-triggered, not asserted) only
            // synchronised arbitration ids on old APICs: nothing to do.
            DeliveryMode::Init if assert || !level_triggered => {
                self.cpu_requests
                    .extend(cpus.map(|cpu| CpuRequest::Init { cpu }));
            }
            DeliveryMode::StartUp => {
                self.cpu_requests
                    .extend(cpus.map(|cpu| CpuRequest::StartUp { cpu, vector }));
            }
            DeliveryMode::Nmi => self.nmi_pending |= targets,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::ioapic::IrqMessage;
    use crate::devices::lapic::DEFAULT_BASE as APIC;

    /// A PC with `cpus` vCPUs whose local APICs are all software-enabled.
    fn pc(cpus: u8) -> Devices {
        let mut d = Devices::pc_for_tests_with_cpus(cpus);
        for cpu in 0..usize::from(cpus) {
            d.set_current_cpu(cpu);
            d.write_mmio(APIC + 0xF0, 4, 0x1FF);
        }
        d.set_current_cpu(0);
        d
    }

    /// vCPU `from` writes `low` to its ICR with destination `dest` (xAPIC).
    fn send(d: &mut Devices, from: usize, dest: u8, low: u32) {
        d.set_current_cpu(from);
        d.write_mmio(APIC + 0x310, 4, u64::from(dest) << 24);
        d.write_mmio(APIC + 0x300, 4, u64::from(low));
    }

    fn pending(d: &Devices) -> Vec<Option<InterruptSource>> {
        (0..d.cpu_count()).map(|c| d.pending_interrupt(c)).collect()
    }

    #[test]
    fn each_vcpu_reaches_its_own_local_apic() {
        let mut d = pc(3);
        for cpu in 0..3 {
            d.set_current_cpu(cpu);
            assert_eq!(d.read_mmio(APIC + 0x20, 4), (cpu as u64) << 24);
            assert_eq!(d.read_msr(0x1B).map(|b| b & 0x100 != 0), Some(cpu == 0));
        }
        // An index past the last vCPU changes nothing.
        d.set_current_cpu(7);
        assert_eq!(d.read_mmio(APIC + 0x20, 4), 2 << 24);
    }

    #[test]
    fn a_fixed_ipi_reaches_only_its_destination() {
        let mut d = pc(3);
        send(&mut d, 0, 2, 0x4041);
        assert_eq!(
            pending(&d),
            [None, None, Some(InterruptSource::Lapic(0x41))]
        );
        assert_eq!(d.acknowledge_interrupt(2), Some(0x41));
        assert_eq!(d.acknowledge_interrupt(1), None);
    }

    #[test]
    fn shorthands_pick_self_all_or_all_but_self() {
        let mut d = pc(3);
        // All excluding self, from vCPU 1.
        send(&mut d, 1, 0, 0x000C_0042);
        let l = |v| Some(InterruptSource::Lapic(v));
        assert_eq!(pending(&d), [l(0x42), None, l(0x42)]);
        // All including self.
        send(&mut d, 1, 0, 0x0008_0050);
        assert_eq!(pending(&d), [l(0x50), l(0x50), l(0x50)]);
        // Self.
        send(&mut d, 2, 0, 0x0004_0060);
        assert_eq!(pending(&d)[2], l(0x60));
        assert_eq!(pending(&d)[0], l(0x50));
    }

    #[test]
    fn init_and_startup_ipis_become_requests_for_the_vm_loop() {
        let mut d = pc(2);
        send(&mut d, 0, 1, 0x4500); // INIT, assert
        send(&mut d, 0, 1, 0x8500); // INIT level de-assert: nothing
        send(&mut d, 0, 1, 0x4608); // start-up, page 8
        send(&mut d, 0, 0xFF, 0x4609); // broadcast start-up
        assert_eq!(
            d.take_cpu_requests(),
            [
                CpuRequest::Init { cpu: 1 },
                CpuRequest::StartUp { cpu: 1, vector: 8 },
                CpuRequest::StartUp { cpu: 0, vector: 9 },
                CpuRequest::StartUp { cpu: 1, vector: 9 },
            ]
        );
        assert!(d.take_cpu_requests().is_empty());
        assert_eq!(pending(&d), [None, None]);
    }

    #[test]
    fn nmi_ipis_wait_per_vcpu_until_delivered() {
        let mut d = pc(3);
        send(&mut d, 0, 0, 0x000C_0400); // NMI, all but self
        assert_eq!(
            (0..3).map(|c| d.nmi_pending(c)).collect::<Vec<_>>(),
            [false, true, true]
        );
        // A second NMI while one waits is the same edge.
        send(&mut d, 0, 2, 0x0400);
        d.nmi_delivered(2);
        assert!(!d.nmi_pending(2));
        assert!(d.nmi_pending(1));
        // NMIs are not vectored interrupts: nothing in any IRR.
        assert_eq!(pending(&d), [None, None, None]);
    }

    #[test]
    fn io_apic_messages_go_to_the_apic_they_name() {
        let mut d = pc(2);
        let message = |destination, mode| IrqMessage {
            pin: 4,
            vector: 0x34,
            destination,
            logical: false,
            delivery_mode: mode,
            level_triggered: false,
        };
        d.irq.deliver(message(1, DeliveryMode::Fixed));
        assert_eq!(pending(&d), [None, Some(InterruptSource::Lapic(0x34))]);
        // Lowest priority: vCPU 1 now has a higher task priority, so vCPU 0 takes it.
        d.set_current_cpu(1);
        d.write_mmio(APIC + 0x80, 4, 0x80);
        d.acknowledge_interrupt(1);
        d.irq.deliver(message(0xFF, DeliveryMode::LowestPriority));
        assert_eq!(d.pending_interrupt(0), Some(InterruptSource::Lapic(0x34)));
    }

    #[test]
    fn the_8259_reaches_only_the_bsp_in_virtual_wire_mode() {
        let mut d = pc(2);
        // Unmask the PIT on the 8259 (ICW1-4 as firmware does, then OCW1).
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x08),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xFE),
        ] {
            d.write_port(port, 1, value);
        }
        d.irq.pulse(0);
        assert_eq!(pending(&d), [Some(InterruptSource::Pic), None]);
    }
}
