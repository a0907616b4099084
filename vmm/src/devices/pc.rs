//! The PC platform: [`Devices::pc`] registers the PC's models on the buses, and this file
//! holds their [`Device`] implementations — which ports each answers, whether it takes
//! byte or whole accesses, which ISA line it drives and what it asks of the machine. The
//! models themselves stay register state machines with time passed in (their own files).

use alloc::vec::Vec;

use super::acpi_pm::{self, AcpiPm, TimerWidth};
use super::device::{
    Access, Device, DeviceContext, DeviceStateError, MmioDevice, PortIoDevice, decode_state,
    encode_state,
};
use super::i8042::{self, I8042};
use super::lapic::{Lapic, LapicConfig};
use super::pit::{self, Pit};
use super::rtc::{self, Rtc};
use super::uart::Uart16550;
use super::{
    COM1_BASE, COM1_IRQ, Devices, MAX_CPUS, MachineRequest, PlatformConfig, PlatformError, RTC_IRQ,
    Region, S5_SLP_TYP, SCI_IRQ, pic,
};
use crate::bus::Target;
use crate::persist::Persist;

/// The name COM1 has in errors and saved states.
pub const COM1_NAME: &str = "COM1";

impl Devices {
    /// The PC described in the [module docs](super), at VM time `config.now_ns`.
    pub fn pc(config: PlatformConfig) -> Result<Devices, PlatformError> {
        let now = config.now_ns;
        if config.cpus == 0 || config.cpus > MAX_CPUS {
            return Err(PlatformError::BadCpuCount(config.cpus));
        }
        let lapics = (0..config.cpus)
            .map(|id| {
                Lapic::new(lapic_config(config.tsc_hz, id))
                    .map_err(|_| PlatformError::BadTscFrequency(config.tsc_hz))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let acpi_pm = AcpiPm::new(S5_SLP_TYP, TimerWidth::Bits32, now)
            // S5_SLP_TYP is a valid 3-bit value.
            .expect("SLP_TYP 5 fits in three bits");
        let mut d = Devices::new(config, lapics);
        // The interrupt controllers and the PCI configuration ports: targets of their own.
        for (base, len, target, name) in [
            (pic::MASTER_COMMAND, 2, Target::Pic, pic::NAME),
            (pic::SLAVE_COMMAND, 2, Target::Pic, pic::NAME),
            (pic::ELCR_MASTER, 2, Target::Pic, pic::NAME),
            (
                super::pci_host::PORT_BASE,
                super::pci_host::PORT_LEN,
                Target::PciConfig,
                super::pci_host::NAME,
            ),
        ] {
            d.pio
                .insert(base, len, target, name)
                .expect("the PC's port map has no overlaps");
        }
        let (ioapic, lapic) = (super::ioapic::NAME, super::lapic::NAME);
        d.mmio
            .insert(
                super::ioapic::DEFAULT_BASE,
                super::ioapic::MMIO_LEN,
                Target::Ioapic,
                ioapic,
            )
            .expect("the PC's MMIO map has no overlaps");
        d.mmio
            .insert(
                super::lapic::DEFAULT_BASE,
                super::lapic::MMIO_LEN,
                Target::Lapic,
                lapic,
            )
            .expect("the PC's MMIO map has no overlaps");
        // Every other model: one line each. The table has no overlaps and fits the port
        // space, so registration cannot fail.
        let ports = |base, len| Region::Ports { base, len };
        let ok = "the PC's port map has no overlaps";
        d.add_device(
            Pit::new(now),
            &[ports(pit::COUNTER0, 4), ports(pit::PORT_B, 1)],
        )
        .expect(ok);
        d.add_device(
            I8042::new(),
            &[ports(i8042::DATA_PORT, 1), ports(i8042::COMMAND_PORT, 1)],
        )
        .expect(ok);
        d.com1 = d
            .add_device(Serial::com1(), &[ports(COM1_BASE, super::COM1_LEN)])
            .expect(ok);
        d.add_device(
            Rtc::new(config.wall_clock_unix_seconds, now),
            &[ports(rtc::INDEX_PORT, 2)],
        )
        .expect(ok);
        d.acpi_pm = d
            .add_device(acpi_pm, &[ports(acpi_pm::DEFAULT_BASE, acpi_pm::BLOCK_LEN)])
            .expect(ok);
        // The BSP's local APIC as PC firmware leaves it (MP spec "virtual wire" mode):
        // software enabled, LINT0 passing the 8259's INTR as ExtINT, LINT1 the NMI pin.
        // Guests booted directly (no firmware) expect this. APs stay as at power-up until
        // the guest starts them.
        for (offset, value) in [(0xF0, 0x1FF), (0x350, 0x700), (0x360, 0x400)] {
            d.irq.lapics[0].write_mmio(offset, 4, value, now);
        }
        Ok(d)
    }
}

/// The local APIC of vCPU `id` on a PC with a `tsc_hz` TSC.
pub(super) fn lapic_config(tsc_hz: u64, id: u8) -> LapicConfig {
    LapicConfig {
        apic_id: id,
        bsp: id == 0,
        // CPUID shows x2APIC (see `cpuid`); the MSRs reach the model through
        // `read_msr`/`write_msr`.
        x2apic: true,
        // The clock CPUID leaves 0x15 and 0x4000_0010 report.
        bus_hz: u64::from(crate::cpuid::LAPIC_BUS_KHZ) * 1000,
        ..LapicConfig::bsp(tsc_hz)
    }
}

/// A 16550A on the ISA bus: the model plus the line its interrupt output drives.
#[derive(Clone, Debug)]
pub struct Serial {
    /// The UART.
    pub uart: Uart16550,
    irq: u8,
    name: &'static str,
}

impl Serial {
    /// COM1: a reset 16550A on IRQ 4.
    pub fn com1() -> Serial {
        Serial {
            uart: Uart16550::new(),
            irq: COM1_IRQ,
            name: COM1_NAME,
        }
    }

    /// Reading IIR or RBR can end the UART's interrupt, writing IER start one: the line
    /// follows at once, so the next cause is a new edge.
    fn sync(&self, ctx: &mut DeviceContext) {
        ctx.set_irq_level(self.irq, self.uart.irq_line());
    }
}

impl PortIoDevice for Serial {
    fn port_access(&self) -> Access {
        Access::Bytes
    }

    fn read_port(&mut self, _port: u16, offset: u16, _size: u8, ctx: &mut DeviceContext) -> u32 {
        let value = u8::try_from(offset).map_or(0xFF, |offset| self.uart.read(offset));
        self.sync(ctx);
        u32::from(value)
    }

    fn write_port(
        &mut self,
        _port: u16,
        offset: u16,
        _size: u8,
        value: u32,
        ctx: &mut DeviceContext,
    ) {
        if let Ok(offset) = u8::try_from(offset) {
            self.uart.write(offset, value as u8);
        }
        self.sync(ctx);
    }
}

impl MmioDevice for Serial {
    fn mmio_access(&self) -> Access {
        Access::Bytes
    }

    fn read_mmio(&mut self, offset: u64, _size: u8, ctx: &mut DeviceContext) -> u64 {
        let value = u8::try_from(offset).map_or(0xFF, |offset| self.uart.read(offset));
        self.sync(ctx);
        u64::from(value)
    }

    fn write_mmio(&mut self, offset: u64, _size: u8, value: u64, ctx: &mut DeviceContext) {
        if let Ok(offset) = u8::try_from(offset) {
            self.uart.write(offset, value as u8);
        }
        self.sync(ctx);
    }
}

impl Device for Serial {
    fn name(&self) -> &'static str {
        self.name
    }

    fn port_io(&mut self) -> Option<&mut dyn PortIoDevice> {
        Some(self)
    }

    fn mmio(&mut self) -> Option<&mut dyn MmioDevice> {
        Some(self)
    }

    fn advance(&mut self, ctx: &mut DeviceContext) {
        self.sync(ctx);
    }

    fn save_state(&self) -> Vec<u8> {
        encode_state(&self.uart.save())
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        let state = decode_state(self.name, bytes)?;
        let mut uart = <Uart16550 as Persist>::restore((), &state)?;
        // The output ring is console history, not device state: it stays.
        uart.keep_output_of(&self.uart);
        self.uart = uart;
        Ok(())
    }
}

impl PortIoDevice for Pit {
    fn port_access(&self) -> Access {
        Access::Bytes
    }

    fn read_port(&mut self, port: u16, _offset: u16, _size: u8, ctx: &mut DeviceContext) -> u32 {
        u32::from(Pit::read_port(self, port, ctx.now_ns()))
    }

    fn write_port(
        &mut self,
        port: u16,
        _offset: u16,
        _size: u8,
        value: u32,
        ctx: &mut DeviceContext,
    ) {
        Pit::write_port(self, port, value as u8, ctx.now_ns());
    }
}

impl Device for Pit {
    fn name(&self) -> &'static str {
        pit::NAME
    }

    fn port_io(&mut self) -> Option<&mut dyn PortIoDevice> {
        Some(self)
    }

    /// IRQ 0: one edge for however many counter 0 rising edges fell into the interval.
    fn advance(&mut self, ctx: &mut DeviceContext) {
        if self.irq0_edges_until(ctx.now_ns()) > 0 {
            ctx.pulse_irq(0);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.next_irq0_deadline()
    }

    fn save_state(&self) -> Vec<u8> {
        encode_state(&self.save())
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        *self = <Pit as Persist>::restore((), &decode_state(pit::NAME, bytes)?)?;
        Ok(())
    }
}

impl PortIoDevice for I8042 {
    fn port_access(&self) -> Access {
        Access::Bytes
    }

    fn read_port(&mut self, port: u16, _offset: u16, _size: u8, _ctx: &mut DeviceContext) -> u32 {
        u32::from(I8042::read_port(self, port))
    }

    fn write_port(
        &mut self,
        port: u16,
        _offset: u16,
        _size: u8,
        value: u32,
        ctx: &mut DeviceContext,
    ) {
        I8042::write_port(self, port, value as u8);
        if self.take_reset_request() {
            ctx.request(MachineRequest::Reset);
        }
    }
}

impl Device for I8042 {
    fn name(&self) -> &'static str {
        i8042::NAME
    }

    fn port_io(&mut self) -> Option<&mut dyn PortIoDevice> {
        Some(self)
    }

    /// IRQ 1 for keyboard bytes, IRQ 12 for auxiliary ones: an edge each.
    fn advance(&mut self, ctx: &mut DeviceContext) {
        let (kbd, aux) = self.take_irq_edges();
        if kbd > 0 {
            ctx.pulse_irq(1);
        }
        if aux > 0 {
            ctx.pulse_irq(12);
        }
    }

    fn save_state(&self) -> Vec<u8> {
        encode_state(&self.save())
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        *self = <I8042 as Persist>::restore((), &decode_state(i8042::NAME, bytes)?)?;
        Ok(())
    }
}

impl PortIoDevice for Rtc {
    fn port_access(&self) -> Access {
        Access::Bytes
    }

    fn read_port(&mut self, port: u16, _offset: u16, _size: u8, ctx: &mut DeviceContext) -> u32 {
        u32::from(Rtc::read_port(self, port, ctx.now_ns()))
    }

    fn write_port(
        &mut self,
        port: u16,
        _offset: u16,
        _size: u8,
        value: u32,
        ctx: &mut DeviceContext,
    ) {
        Rtc::write_port(self, port, value as u8, ctx.now_ns());
    }
}

impl Device for Rtc {
    fn name(&self) -> &'static str {
        rtc::NAME
    }

    fn port_io(&mut self) -> Option<&mut dyn PortIoDevice> {
        Some(self)
    }

    /// IRQ 8, level: IRQF.
    fn advance(&mut self, ctx: &mut DeviceContext) {
        let level = self.irq_level(ctx.now_ns());
        ctx.set_irq_level(RTC_IRQ, level);
    }

    fn next_deadline(&self) -> Option<u64> {
        self.next_irq_deadline()
    }

    fn save_state(&self) -> Vec<u8> {
        encode_state(&self.save())
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        *self = <Rtc as Persist>::restore((), &decode_state(rtc::NAME, bytes)?)?;
        Ok(())
    }
}

impl PortIoDevice for AcpiPm {
    fn read_port(&mut self, _port: u16, offset: u16, size: u8, ctx: &mut DeviceContext) -> u32 {
        self.read(offset, size, ctx.now_ns())
    }

    fn write_port(
        &mut self,
        _port: u16,
        offset: u16,
        size: u8,
        value: u32,
        ctx: &mut DeviceContext,
    ) {
        self.write(offset, size, value, ctx.now_ns());
        if self.poweroff_requested() {
            ctx.request(MachineRequest::PowerOff);
        }
    }
}

impl Device for AcpiPm {
    fn name(&self) -> &'static str {
        acpi_pm::NAME
    }

    fn port_io(&mut self) -> Option<&mut dyn PortIoDevice> {
        Some(self)
    }

    /// The SCI (IRQ 9), level.
    fn advance(&mut self, ctx: &mut DeviceContext) {
        let level = self.sci_level(ctx.now_ns());
        ctx.set_irq_level(SCI_IRQ, level);
    }

    fn next_deadline(&self) -> Option<u64> {
        self.next_sci_deadline()
    }

    fn save_state(&self) -> Vec<u8> {
        encode_state(&self.save())
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        let args = self.constructor_args();
        *self = <AcpiPm as Persist>::restore(args, &decode_state(acpi_pm::NAME, bytes)?)?;
        Ok(())
    }
}
