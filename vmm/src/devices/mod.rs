//! The guest's devices and the buses that route port and MMIO accesses to them.
//!
//! [`Devices`] owns every device model of one VM as a typed field (so the VM can reach, say,
//! the UART's output ring directly) plus a [`PioBus`] and an [`MmioBus`] that map address
//! ranges to a [`DeviceId`]. A guest access is looked up on the bus and handed to the model
//! named by the id, whole: the ISA parts with byte-wide registers (UART, PIC, PIT, RTC,
//! i8042) see a wider access as byte accesses at consecutive ports, the way the ISA bus
//! splits them, while the ACPI PM block, the I/O APIC and the local APIC take the access as
//! it came (the APICs only accept aligned 32-bit registers).
//!
//! The PC the guest sees ([`Devices::pc`]):
//!
//! | where | device | interrupt |
//! | --- | --- | --- |
//! | ports `0x20`–`0x21`, `0xA0`–`0xA1`, `0x4D0`–`0x4D1` | 8259 pair + ELCR ([`pic`]) | |
//! | ports `0x40`–`0x43`, `0x61` | 8254 PIT + port B ([`pit`]) | IRQ 0 (I/O APIC pin 2) |
//! | ports `0x60`, `0x64` | i8042 ([`i8042`]) | IRQ 1, 12 |
//! | ports `0x70`–`0x71` | CMOS RTC ([`rtc`]) | IRQ 8 |
//! | ports `0x3F8`–`0x3FF` | COM1 16550A ([`uart`]) | IRQ 4 |
//! | ports `0x600`–`0x60B` | ACPI PM1a event/control + PM timer ([`acpi_pm`]) | SCI = IRQ 9, level |
//! | ports `0xCF8`–`0xCFF` | PCI configuration mechanism #1, host bridge 00:00.0; reset control at `0xCF9` ([`pci_host`]) | |
//! | MMIO `0xFEC0_0000` | I/O APIC ([`ioapic`]) | |
//! | MMIO `0xFEE0_0000` | local APIC of the accessing vCPU ([`lapic`]) | its timer |
//!
//! Interrupt wiring and time live in [`interrupts`](self::interrupts): every ISA line drives
//! both the 8259 input and the I/O APIC pin of the same number (IRQ 0 goes to pin 2, as the
//! MADT's interrupt source override says), and the local APIC or, in virtual-wire mode, the
//! 8259 presents the next vector to the CPU.
//!
//! What a guest sees where nothing is mapped follows a PC with an empty ISA bus: reads return
//! all ones for the access size and writes vanish. The same holds for guest-physical addresses
//! that are neither RAM nor a device (see [`exit_handler`](crate::exit_handler)).

use alloc::vec::Vec;
use core::fmt;

use crate::bus::{MmioBus, PioBus};

pub mod acpi_pm;
pub mod i8042;
pub mod interrupts;
pub mod ioapic;
pub mod lapic;
pub mod pci_host;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod uart;

pub use uart::Uart16550;

use self::acpi_pm::{AcpiPm, TimerWidth};
use self::i8042::I8042;
use self::ioapic::Ioapic;
use self::lapic::{Lapic, LapicConfig, LapicEvent};
use self::pci_host::PciHost;
use self::pic::Pic;
use self::pit::Pit;
use self::rtc::Rtc;

/// First port of COM1.
pub const COM1_BASE: u16 = 0x3F8;
/// Number of COM1 ports (`0x3F8..=0x3FF`).
pub const COM1_LEN: u16 = 8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u8 = 4;
/// The POST diagnostic port. Firmware writes progress codes here and Linux writes to it as an
/// I/O delay; nothing is mapped, so writes are dropped and reads return 0xFF.
pub const POST_PORT: u16 = 0x80;
/// The ACPI SCI's ISA line (the FADT's `SCI_INT`; level-triggered, active high).
pub const SCI_IRQ: u8 = 9;
/// The RTC's ISA line.
pub const RTC_IRQ: u8 = 8;
/// The `SLP_TYP` value the DSDT's `\_S5` package gives and the PM1 control register treats
/// as soft-off.
pub const S5_SLP_TYP: u8 = 5;
/// The PC's reset control register (PIIX/ICH "RST_CNT"): writing bit 2 resets the machine
/// (the FADT's `RESET_REG` points here with value 6). Part of [`pci_host`].
pub const RESET_CONTROL_PORT: u16 = pci_host::RESET_CONTROL;

/// A device model a bus can route to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceId {
    /// The first serial port, [`Devices::com1`].
    Com1,
    /// The 8259 pair and its ELCR ports.
    Pic,
    /// The 8254 and port B.
    Pit,
    /// The CMOS RTC.
    Rtc,
    /// The keyboard controller.
    I8042,
    /// The ACPI PM register block.
    AcpiPm,
    /// PCI configuration mechanism #1 and the reset control register (`0xCF8`–`0xCFF`).
    PciHost,
    /// The I/O APIC's MMIO window.
    Ioapic,
    /// The local APIC's xAPIC page.
    Lapic,
}

impl DeviceId {
    /// The name an operator knows the device by.
    pub fn name(self) -> &'static str {
        match self {
            DeviceId::Com1 => "COM1",
            DeviceId::Pic => "8259 PIC",
            DeviceId::Pit => "8254 PIT",
            DeviceId::Rtc => "CMOS RTC",
            DeviceId::I8042 => "i8042",
            DeviceId::AcpiPm => "ACPI PM",
            DeviceId::PciHost => "PCI host bridge",
            DeviceId::Ioapic => "I/O APIC",
            DeviceId::Lapic => "local APIC",
        }
    }

    /// Whether the device's registers are bytes, so wider accesses are split.
    fn byte_wide(self) -> bool {
        matches!(
            self,
            DeviceId::Com1 | DeviceId::Pic | DeviceId::Pit | DeviceId::Rtc | DeviceId::I8042
        )
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a PC platform is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformConfig {
    /// The guest TSC's frequency in Hz (what CPUID reports; the TSC-deadline timer's clock).
    pub tsc_hz: u64,
    /// The wall-clock time the RTC starts from, in seconds since 1970-01-01 UTC.
    pub wall_clock_unix_seconds: u64,
    /// The VM's monotonic time at creation, in nanoseconds.
    pub now_ns: u64,
    /// vCPUs, 1 to [`MAX_CPUS`]: one local APIC each, APIC ids `0..cpus`, 0 the BSP.
    pub cpus: u8,
}

/// Something the guest asked of the machine as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineRequest {
    /// ACPI soft-off (PM1 control with `SLP_TYP` = S5 and `SLP_EN`).
    PowerOff,
    /// A reset: the i8042 reset line, or the reset control register at `0xCF9`.
    Reset,
}

/// Most vCPUs a VM can have. They share the host CPU that runs the VM, by turns, so more
/// would only slow the guest down.
pub const MAX_CPUS: u8 = 8;

/// Something a vCPU's IPI asks of another vCPU, which the VM loop carries out (only it can
/// create, reset or start a vCPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuRequest {
    /// INIT: the vCPU (an AP) stops and waits for a start-up IPI; its local APIC is reset.
    Init {
        /// The target vCPU's index (= APIC id).
        cpu: usize,
    },
    /// Start-up IPI: a vCPU waiting after INIT starts in real mode at `vector << 12`.
    StartUp {
        /// The target vCPU's index (= APIC id).
        cpu: usize,
        /// The start page.
        vector: u8,
    },
}

/// The device models of one VM and the buses that reach them.
#[derive(Clone, Debug)]
pub struct Devices {
    /// The 16550A at `0x3F8` (the guest's console).
    pub com1: Uart16550,
    /// The 8259 pair.
    pub pic: Pic,
    /// The 8254.
    pub pit: Pit,
    /// The CMOS RTC.
    pub rtc: Rtc,
    /// The keyboard controller.
    pub i8042: I8042,
    /// The ACPI PM block.
    pub acpi_pm: AcpiPm,
    /// The PCI host bridge (configuration space, no devices behind it yet) and the reset
    /// control register.
    pub pci: PciHost,
    /// The I/O APIC.
    pub ioapic: Ioapic,
    /// The local APICs, one per vCPU (index = APIC id); guest accesses reach the one of the
    /// vCPU [`set_current_cpu`](Self::set_current_cpu) named.
    pub lapics: Vec<Lapic>,
    /// The vCPU whose exit is being handled.
    cpu: usize,
    /// INITs and start-up IPIs for the VM loop.
    cpu_requests: Vec<CpuRequest>,
    /// NMIs sent and not yet delivered, a bit per vCPU (NMIs are edges: one more while one
    /// waits is the same NMI).
    nmi_pending: u16,
    /// Port I/O routing.
    pub pio: PioBus,
    /// MMIO routing.
    pub mmio: MmioBus,
    /// The latest VM time seen, in nanoseconds.
    now_ns: u64,
    /// The guest's TSC at `now_ns` (the TSC-deadline timer converts with it).
    guest_tsc: u64,
    /// A power-off or reset the guest asked for.
    request: Option<MachineRequest>,
    /// Interrupt-line bookkeeping ([`interrupts`]).
    lines: interrupts::Lines,
}

/// Why a platform could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// The TSC frequency is zero or beyond what the local APIC model takes.
    BadTscFrequency(u64),
    /// The vCPU count is 0 or above [`MAX_CPUS`].
    BadCpuCount(u8),
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformError::BadTscFrequency(hz) => {
                write!(f, "cannot build the VM's timers for a TSC of {hz} Hz")
            }
            PlatformError::BadCpuCount(n) => {
                write!(f, "a VM has 1 to {MAX_CPUS} vCPUs, not {n}")
            }
        }
    }
}

impl Devices {
    /// The PC described in the [module docs](self), at VM time `config.now_ns`.
    pub fn pc(config: PlatformConfig) -> Result<Devices, PlatformError> {
        let now = config.now_ns;
        if config.cpus == 0 || config.cpus > MAX_CPUS {
            return Err(PlatformError::BadCpuCount(config.cpus));
        }
        let lapics = (0..config.cpus)
            .map(|id| {
                Lapic::new(LapicConfig {
                    apic_id: id,
                    bsp: id == 0,
                    // CPUID shows x2APIC (see `cpuid`); the MSRs reach the model through
                    // `read_msr`/`write_msr`.
                    x2apic: true,
                    // The clock CPUID leaves 0x15 and 0x4000_0010 report.
                    bus_hz: u64::from(crate::cpuid::LAPIC_BUS_KHZ) * 1000,
                    ..LapicConfig::bsp(config.tsc_hz)
                })
                .map_err(|_| PlatformError::BadTscFrequency(config.tsc_hz))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let acpi_pm = AcpiPm::new(S5_SLP_TYP, TimerWidth::Bits32, now)
            // S5_SLP_TYP is a valid 3-bit value.
            .expect("SLP_TYP 5 fits in three bits");
        let mut devices = Devices {
            com1: Uart16550::new(),
            pic: Pic::new(),
            pit: Pit::new(now),
            rtc: Rtc::new(config.wall_clock_unix_seconds, now),
            i8042: I8042::new(),
            acpi_pm,
            pci: PciHost::new(),
            ioapic: Ioapic::new(0),
            lapics,
            cpu: 0,
            cpu_requests: Vec::new(),
            nmi_pending: 0,
            pio: PioBus::new(),
            mmio: MmioBus::new(),
            now_ns: now,
            guest_tsc: 0,
            request: None,
            lines: interrupts::Lines::default(),
        };
        let ports: [(u16, u16, DeviceId); 11] = [
            (pic::MASTER_COMMAND, 2, DeviceId::Pic),
            (pic::SLAVE_COMMAND, 2, DeviceId::Pic),
            (pic::ELCR_MASTER, 2, DeviceId::Pic),
            (pit::COUNTER0, 4, DeviceId::Pit),
            (pit::PORT_B, 1, DeviceId::Pit),
            (i8042::DATA_PORT, 1, DeviceId::I8042),
            (i8042::COMMAND_PORT, 1, DeviceId::I8042),
            (rtc::INDEX_PORT, 2, DeviceId::Rtc),
            (COM1_BASE, COM1_LEN, DeviceId::Com1),
            (acpi_pm::DEFAULT_BASE, acpi_pm::BLOCK_LEN, DeviceId::AcpiPm),
            (pci_host::PORT_BASE, pci_host::PORT_LEN, DeviceId::PciHost),
        ];
        for (base, len, id) in ports {
            devices
                .pio
                .insert(base, len, id)
                // The table above has no overlaps and fits in the port space.
                .expect("the PC's port map has no overlaps");
        }
        // The BSP's local APIC as PC firmware leaves it (MP spec "virtual wire" mode):
        // software enabled, LINT0 passing the 8259's INTR as ExtINT, LINT1 the NMI pin.
        // Guests booted directly (no firmware) expect this. APs stay as at power-up until
        // the guest starts them.
        for (offset, value) in [(0xF0, 0x1FF), (0x350, 0x700), (0x360, 0x400)] {
            devices.lapics[0].write_mmio(offset, 4, value, now);
        }
        for (base, len, id) in [
            (ioapic::DEFAULT_BASE, ioapic::MMIO_LEN, DeviceId::Ioapic),
            (lapic::DEFAULT_BASE, lapic::MMIO_LEN, DeviceId::Lapic),
        ] {
            devices
                .mmio
                .insert(base, len, id)
                .expect("the PC's MMIO map has no overlaps");
        }
        Ok(devices)
    }

    /// A PC for tests: 2 GHz TSC, the RTC at 2026-01-01, time 0, one vCPU.
    pub fn pc_for_tests() -> Devices {
        Devices::pc_for_tests_with_cpus(1)
    }

    /// [`pc_for_tests`](Self::pc_for_tests) with `cpus` vCPUs.
    pub fn pc_for_tests_with_cpus(cpus: u8) -> Devices {
        Devices::pc(PlatformConfig {
            tsc_hz: 2_000_000_000,
            wall_clock_unix_seconds: 1_767_225_600,
            now_ns: 0,
            cpus,
        })
        .expect("2 GHz is a valid TSC frequency")
    }

    /// Number of vCPUs (local APICs).
    pub fn cpu_count(&self) -> usize {
        self.lapics.len()
    }

    /// Names the vCPU whose accesses follow (local APIC MMIO and MSRs reach its APIC).
    /// Out-of-range indices are ignored.
    pub fn set_current_cpu(&mut self, cpu: usize) {
        if cpu < self.lapics.len() {
            self.cpu = cpu;
        }
    }

    /// The local APIC of vCPU `cpu`.
    pub fn lapic(&self, cpu: usize) -> Option<&Lapic> {
        self.lapics.get(cpu)
    }

    /// The INITs and start-up IPIs sent since the last call, in order.
    pub fn take_cpu_requests(&mut self) -> Vec<CpuRequest> {
        core::mem::take(&mut self.cpu_requests)
    }

    /// Whether an NMI waits for vCPU `cpu`.
    pub fn nmi_pending(&self, cpu: usize) -> bool {
        cpu < 16 && self.nmi_pending & (1 << cpu) != 0
    }

    /// Marks vCPU `cpu`'s waiting NMI delivered.
    pub fn nmi_delivered(&mut self, cpu: usize) {
        if cpu < 16 {
            self.nmi_pending &= !(1 << cpu);
        }
    }

    /// Resets vCPU `cpu`'s local APIC for an INIT (it keeps its id and mode).
    pub fn init_lapic(&mut self, cpu: usize) {
        let now = self.now_ns;
        if let Some(lapic) = self.lapics.get_mut(cpu) {
            lapic.init(now);
        }
    }

    /// The latest VM time the devices have seen.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Moves VM time forward to `now_ns` (earlier times are ignored).
    pub fn set_now(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
    }

    /// Records the guest's TSC at the current VM time (sampled at the same instant).
    pub fn set_guest_tsc(&mut self, guest_tsc: u64) {
        self.guest_tsc = guest_tsc;
    }

    /// A power-off or reset the guest asked for, once.
    pub fn take_machine_request(&mut self) -> Option<MachineRequest> {
        if self.request.is_none() {
            if self.acpi_pm.poweroff_requested() {
                self.request = Some(MachineRequest::PowerOff);
            } else if self.i8042.take_reset_request() || self.pci.reset_requested() {
                self.pci.clear_reset_request();
                self.request = Some(MachineRequest::Reset);
            }
        }
        self.request.take()
    }

    /// A guest `IN` of `size` bytes (1, 2 or 4; larger sizes are cut to 4) from `port`.
    /// Unclaimed ports read as all ones.
    pub fn read_port(&mut self, port: u16, size: u8) -> u32 {
        let size = size.min(4);
        let first = self.pio.lookup(port);
        if let Some((device, offset)) = first
            && !device.byte_wide()
        {
            return self.read_wide_port(device, offset, size);
        }
        let mut value = 0;
        for i in 0..size {
            let byte = match port.checked_add(u16::from(i)) {
                // The first byte's lookup is done already (most INs are one byte).
                Some(p) => match if i == 0 { first } else { self.pio.lookup(p) } {
                    Some((device, offset)) if device.byte_wide() => {
                        self.read_port_byte(device, p, offset)
                    }
                    // A wide device reached in the middle of a split access: its byte lane.
                    Some((device, offset)) => self.read_wide_port(device, offset, 1) as u8,
                    None => 0xFF,
                },
                None => 0xFF,
            };
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// A guest `OUT` of the low `size` bytes (1, 2 or 4) of `value` to `port`. Writes to
    /// unclaimed ports (including [`POST_PORT`]) are dropped.
    pub fn write_port(&mut self, port: u16, size: u8, value: u32) {
        let size = size.min(4);
        let first = self.pio.lookup(port);
        if let Some((device, offset)) = first
            && !device.byte_wide()
        {
            self.write_wide_port(device, offset, size, value);
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
            match if i == 0 { first } else { self.pio.lookup(p) } {
                Some((device, offset)) if device.byte_wide() => {
                    self.write_port_byte(device, p, offset, byte)
                }
                Some((device, offset)) => self.write_wide_port(device, offset, 1, byte.into()),
                None => {}
            }
        }
    }

    /// A guest load of `size` bytes (1, 2, 4 or 8; larger sizes are cut to 8) at `gpa`.
    /// Unclaimed addresses read as all ones.
    pub fn read_mmio(&mut self, gpa: u64, size: u8) -> u64 {
        let size = size.min(8);
        let now = self.now_ns;
        match self.mmio.lookup(gpa) {
            Some((DeviceId::Ioapic, offset)) => self.ioapic.read(offset, size),
            Some((DeviceId::Lapic, offset)) => self.lapics[self.cpu].read_mmio(offset, size, now),
            Some((device, offset)) if device.byte_wide() => {
                let mut value = 0;
                for i in 0..size {
                    let byte = match gpa
                        .checked_add(u64::from(i))
                        .and_then(|a| self.mmio.lookup(a))
                    {
                        Some((device, offset)) if device.byte_wide() => {
                            let _ = offset;
                            self.read_mmio_byte(device, offset)
                        }
                        _ => 0xFF,
                    };
                    value |= u64::from(byte) << (8 * i);
                }
                let _ = offset;
                value
            }
            _ => all_ones(size),
        }
    }

    /// A guest store of the low `size` bytes (1, 2, 4 or 8) of `value` at `gpa`. Stores to
    /// unclaimed addresses are dropped.
    pub fn write_mmio(&mut self, gpa: u64, size: u8, value: u64) {
        let size = size.min(8);
        let now = self.now_ns;
        match self.mmio.lookup(gpa) {
            Some((DeviceId::Ioapic, offset)) => {
                let messages = self.ioapic.write(offset, size, value);
                for message in messages {
                    self.deliver(message);
                }
            }
            Some((DeviceId::Lapic, offset)) => {
                if let Some(event) = self.lapics[self.cpu].write_mmio(offset, size, value, now) {
                    self.lapic_event(event);
                }
            }
            Some((device, _)) if device.byte_wide() => {
                for (i, byte) in value
                    .to_le_bytes()
                    .into_iter()
                    .enumerate()
                    .take(usize::from(size))
                {
                    // `i` < 8.
                    let target = gpa.checked_add(i as u64).and_then(|a| self.mmio.lookup(a));
                    if let Some((device, offset)) = target
                        && device.byte_wide()
                    {
                        self.write_mmio_byte(device, offset, byte);
                    }
                }
            }
            _ => {}
        }
    }

    /// RDMSR of a platform-owned MSR ([`crate::msr::platform_owned`]); `None` = #GP.
    pub fn read_msr(&mut self, msr: u32) -> Option<u64> {
        let now = self.now_ns;
        let lapic = &mut self.lapics[self.cpu];
        match msr {
            lapic::IA32_APIC_BASE => Some(lapic.apic_base()),
            lapic::IA32_TSC_DEADLINE => Some(lapic.tsc_deadline()),
            _ => lapic.read_msr(msr, now).ok(),
        }
    }

    /// WRMSR of a platform-owned MSR, at the time and guest TSC last set. Returns false for
    /// #GP.
    pub fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        let (now, tsc) = (self.now_ns, self.guest_tsc);
        let lapic = &mut self.lapics[self.cpu];
        match msr {
            lapic::IA32_APIC_BASE => lapic.write_apic_base(value).is_ok(),
            lapic::IA32_TSC_DEADLINE => {
                lapic.write_tsc_deadline(value, now, tsc);
                true
            }
            _ => match lapic.write_msr(msr, value, now) {
                Ok(event) => {
                    if let Some(event) = event {
                        self.lapic_event(event);
                    }
                    true
                }
                Err(_) => false,
            },
        }
    }

    fn read_wide_port(&mut self, device: DeviceId, offset: u16, size: u8) -> u32 {
        let now = self.now_ns;
        match device {
            DeviceId::AcpiPm => self.acpi_pm.read(offset, size, now),
            DeviceId::PciHost => self.pci.read(pci_host::PORT_BASE + offset, size),
            _ => all_ones(size) as u32,
        }
    }

    fn write_wide_port(&mut self, device: DeviceId, offset: u16, size: u8, value: u32) {
        let now = self.now_ns;
        match device {
            DeviceId::AcpiPm => self.acpi_pm.write(offset, size, value, now),
            DeviceId::PciHost => self.pci.write(pci_host::PORT_BASE + offset, size, value),
            _ => {}
        }
    }

    fn read_port_byte(&mut self, device: DeviceId, port: u16, offset: u16) -> u8 {
        let now = self.now_ns;
        match device {
            DeviceId::Com1 => {
                let value = self.com1.read(offset as u8);
                // Reading IIR or RBR can end the UART's interrupt: the line must drop now so
                // the next cause is a new edge.
                self.sync_level_lines();
                value
            }
            DeviceId::Pic => self.pic.read_port(port),
            DeviceId::Pit => self.pit.read_port(port, now),
            DeviceId::Rtc => self.rtc.read_port(port, now),
            DeviceId::I8042 => self.i8042.read_port(port),
            DeviceId::AcpiPm | DeviceId::PciHost | DeviceId::Ioapic | DeviceId::Lapic => 0xFF,
        }
    }

    fn write_port_byte(&mut self, device: DeviceId, port: u16, offset: u16, value: u8) {
        let now = self.now_ns;
        match device {
            DeviceId::Com1 => {
                self.com1.write(offset as u8, value);
                self.sync_level_lines();
            }
            DeviceId::Pic => self.pic.write_port(port, value),
            DeviceId::Pit => self.pit.write_port(port, value, now),
            DeviceId::Rtc => self.rtc.write_port(port, value, now),
            DeviceId::I8042 => self.i8042.write_port(port, value),
            DeviceId::AcpiPm | DeviceId::PciHost | DeviceId::Ioapic | DeviceId::Lapic => {}
        }
    }

    /// Byte devices mapped into MMIO (tests map the UART there).
    fn read_mmio_byte(&mut self, device: DeviceId, offset: u64) -> u8 {
        match (device, u8::try_from(offset)) {
            (DeviceId::Com1, Ok(offset)) => self.com1.read(offset),
            _ => 0xFF,
        }
    }

    fn write_mmio_byte(&mut self, device: DeviceId, offset: u64, value: u8) {
        if let (DeviceId::Com1, Ok(offset)) = (device, u8::try_from(offset)) {
            self.com1.write(offset, value);
        }
    }

    fn lapic_event(&mut self, event: LapicEvent) {
        match event {
            LapicEvent::Eoi { vector } => {
                for message in self.ioapic.end_of_interrupt(vector) {
                    self.deliver(message);
                }
            }
            LapicEvent::Ipi(ipi) => self.send_ipi(self.cpu, ipi),
        }
    }
}

/// All ones in the low `size` bytes.
fn all_ones(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::uart::{IER_THRE, LSR_DR, LSR_TEMT, LSR_THRE, MCR_OUT2, reg};
    use super::*;

    #[test]
    fn the_pc_port_and_mmio_map() {
        let devices = Devices::pc_for_tests();
        let ports: Vec<_> = devices.pio.iter().collect();
        assert!(ports.contains(&(0x3F8, 8, DeviceId::Com1)));
        assert!(ports.contains(&(0x40, 4, DeviceId::Pit)));
        assert!(ports.contains(&(0x61, 1, DeviceId::Pit)));
        assert!(ports.contains(&(0x600, 12, DeviceId::AcpiPm)));
        assert_eq!(
            devices.mmio.iter().collect::<Vec<_>>(),
            [
                (0xFEC0_0000, 0x1000, DeviceId::Ioapic),
                (0xFEE0_0000, 0x1000, DeviceId::Lapic)
            ]
        );
    }

    #[test]
    fn com1_output_through_port_writes() {
        let mut devices = Devices::pc_for_tests();
        for b in *b"hi" {
            devices.write_port(COM1_BASE, 1, u32::from(b));
        }
        assert_eq!(devices.com1.output_since(0), (b"hi".to_vec(), 2, 0));
        assert_eq!(
            devices.read_port(COM1_BASE + u16::from(reg::LSR), 1),
            u32::from(LSR_THRE | LSR_TEMT)
        );
    }

    #[test]
    fn com1_input_through_port_reads() {
        let mut devices = Devices::pc_for_tests();
        devices.com1.push_input(b"A");
        let lsr = devices.read_port(COM1_BASE + 5, 1);
        assert_eq!(lsr & u32::from(LSR_DR), u32::from(LSR_DR));
        assert_eq!(devices.read_port(COM1_BASE, 1), u32::from(b'A'));
    }

    #[test]
    fn unclaimed_ports_read_all_ones_by_size() {
        let mut devices = Devices::pc_for_tests();
        assert_eq!(devices.read_port(0x2E0, 1), 0xFF);
        assert_eq!(devices.read_port(0x2E0, 2), 0xFFFF);
        assert_eq!(devices.read_port(0x2E0, 4), 0xFFFF_FFFF);
        assert_eq!(
            devices.read_port(0xFFFF, 4),
            0xFFFF_FFFF,
            "wraps off the end"
        );
        assert_eq!(devices.read_port(POST_PORT, 1), 0xFF);
    }

    #[test]
    fn unclaimed_port_writes_are_dropped() {
        let mut devices = Devices::pc_for_tests();
        devices.write_port(POST_PORT, 1, 0x42);
        devices.write_port(0x2E0, 4, 0x8000_0000);
        devices.write_port(0xFFFF, 4, 0xFFFF_FFFF);
        assert_eq!(devices.com1.output_total(), 0);
        assert_eq!(devices.take_machine_request(), None);
    }

    #[test]
    fn wide_port_accesses_split_into_bytes() {
        let mut devices = Devices::pc_for_tests();
        // A 16-bit write to 0x3FE writes MSR (ignored) and SCR.
        devices.write_port(COM1_BASE + 6, 2, 0xAB00);
        assert_eq!(devices.read_port(COM1_BASE + 7, 1), 0xAB);
        // A 32-bit read at SCR: SCR, then three unclaimed ports.
        assert_eq!(devices.read_port(COM1_BASE + 7, 4), 0xFFFF_FFAB);
        // A 16-bit read at 0x3F7: unclaimed port, then RBR.
        devices.com1.push_input(b"z");
        assert_eq!(
            devices.read_port(COM1_BASE - 1, 2),
            0xFF | u32::from(b'z') << 8
        );
        // Only the low `size` bytes of an OUT are written.
        devices.write_port(COM1_BASE, 1, 0xFFFF_FF21);
        assert_eq!(devices.com1.output_since(0).0, b"!");
    }

    #[test]
    fn the_pm_timer_is_read_whole() {
        let mut devices = Devices::pc_for_tests();
        devices.set_now(1_000_000_000);
        let ticks = devices.read_port(acpi_pm::DEFAULT_BASE + acpi_pm::PM_TMR, 4);
        // One second of the 3.579545 MHz timer.
        assert_eq!(ticks, 3_579_545);
    }

    #[test]
    fn acpi_soft_off_and_resets_are_machine_requests() {
        let mut devices = Devices::pc_for_tests();
        let cnt = acpi_pm::DEFAULT_BASE + acpi_pm::PM1_CNT;
        let slp = (u32::from(S5_SLP_TYP) << acpi_pm::SLP_TYP_SHIFT) | u32::from(acpi_pm::SLP_EN);
        devices.write_port(cnt, 2, slp);
        assert_eq!(
            devices.take_machine_request(),
            Some(MachineRequest::PowerOff)
        );

        let mut devices = Devices::pc_for_tests();
        devices.write_port(RESET_CONTROL_PORT, 1, 0x06);
        assert_eq!(devices.take_machine_request(), Some(MachineRequest::Reset));
        assert_eq!(devices.take_machine_request(), None, "reported once");

        let mut devices = Devices::pc_for_tests();
        devices.write_port(i8042::COMMAND_PORT, 1, 0xFE);
        assert_eq!(devices.take_machine_request(), Some(MachineRequest::Reset));
    }

    #[test]
    fn mmio_unclaimed_reads_all_ones_and_drops_writes() {
        let mut devices = Devices::pc_for_tests();
        assert_eq!(devices.read_mmio(0xFED0_0000, 1), 0xFF);
        assert_eq!(devices.read_mmio(0xFED0_0000, 2), 0xFFFF);
        assert_eq!(devices.read_mmio(0xFED0_0000, 4), 0xFFFF_FFFF);
        assert_eq!(devices.read_mmio(0xFED0_0000, 8), u64::MAX);
        assert_eq!(devices.read_mmio(u64::MAX, 8), u64::MAX);
        devices.write_mmio(0xFED0_0000, 8, 0);
        devices.write_mmio(u64::MAX, 8, 0);
    }

    #[test]
    fn apic_registers_take_whole_accesses() {
        let mut devices = Devices::pc_for_tests();
        // Local APIC version register (0x30): one aligned 32-bit load.
        assert_eq!(
            devices.read_mmio(0xFEE0_0030, 4),
            u64::from(lapic::VERSION_VALUE)
        );
        // I/O APIC: select the version register, read it through IOWIN.
        devices.write_mmio(0xFEC0_0000, 4, u64::from(ioapic::REG_VERSION));
        assert_eq!(
            devices.read_mmio(0xFEC0_0010, 4),
            u64::from(ioapic::VERSION_REGISTER)
        );
    }

    #[test]
    fn mmio_mapped_uart_works_like_the_port_one() {
        let mut devices = Devices::pc_for_tests();
        devices.mmio.insert(0xFED0_0000, 8, DeviceId::Com1).unwrap();
        devices.write_mmio(0xFED0_0000, 1, u64::from(b'm'));
        assert_eq!(devices.com1.output_since(0).0, b"m");
        assert_eq!(devices.read_mmio(0xFED0_0007, 1), 0);
    }

    #[test]
    fn odd_sizes_never_panic() {
        let mut devices = Devices::pc_for_tests();
        assert_eq!(devices.read_port(0x2E0, 0), 0);
        assert_eq!(devices.read_port(0x2E0, 3), 0xFF_FFFF);
        assert_eq!(devices.read_port(0x2E0, 200), 0xFFFF_FFFF);
        assert_eq!(devices.read_mmio(0, 255), u64::MAX);
        devices.read_mmio(0xFEE0_0031, 255);
        devices.write_mmio(0xFEC0_0003, 3, u64::MAX);
        devices.write_port(COM1_BASE, 255, 0x2020_2020);
        devices.write_mmio(0, 255, 0);
        assert_eq!(
            devices.com1.output_total(),
            1,
            "THR once; the rest hit other registers"
        );
    }

    #[test]
    fn the_uart_interrupt_reaches_the_pic() {
        let mut devices = Devices::pc_for_tests();
        // Initialise the 8259 pair as a BIOS does: vectors 0x08 and 0x70, all unmasked.
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x08),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xA0, 0x11),
            (0xA1, 0x70),
            (0xA1, 0x02),
            (0xA1, 0x01),
            (0x21, 0x00),
            (0xA1, 0x00),
        ] {
            devices.write_port(port, 1, value);
        }
        // THR-empty interrupt enabled, but OUT2 clear: the line stays low.
        devices.write_port(COM1_BASE + 1, 1, u32::from(IER_THRE));
        assert_eq!(devices.pending_interrupt(0), None);
        devices.write_port(COM1_BASE + 4, 1, u32::from(MCR_OUT2));
        assert_eq!(
            devices.pending_interrupt(0),
            Some(interrupts::InterruptSource::Pic)
        );
        assert_eq!(devices.acknowledge_interrupt(0), Some(0x08 + COM1_IRQ));
    }

    #[test]
    fn pci_configuration_takes_whole_dwords() {
        let mut devices = Devices::pc_for_tests();
        // 00:00.0 register 0: vendor 8086, device 1237.
        devices.write_port(0xCF8, 4, 0x8000_0000);
        assert_eq!(devices.read_port(0xCF8, 4), 0x8000_0000);
        assert_eq!(devices.read_port(0xCFC, 4), 0x1237_8086);
        assert_eq!(devices.read_port(0xCFE, 2), 0x1237);
        // 00:01.0: nothing there.
        devices.write_port(0xCF8, 4, 0x8000_0800);
        assert_eq!(devices.read_port(0xCFC, 4), 0xFFFF_FFFF);
    }

    #[test]
    fn device_names() {
        assert_eq!(DeviceId::Com1.to_string(), "COM1");
        assert_eq!(DeviceId::Lapic.to_string(), "local APIC");
    }
}

/// Why a device model refused a snapshot `State` in `restore`: a field holds a value the
/// hardware cannot be in. The model is left unchanged. Shared by every model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// A field holds an impossible value.
    Invalid {
        /// The model, e.g. `"8259 PIC"`.
        device: &'static str,
        /// The field, as named in the model's `State`.
        field: &'static str,
        /// The value found.
        value: u64,
    },
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::Invalid {
                device,
                field,
                value,
            } => {
                write!(f, "invalid {device} state: {field} = {value:#x}")
            }
        }
    }
}
