//! The guest's devices and the buses that route port and MMIO accesses to them.
//!
//! # How a device is reached
//!
//! [`Devices`] owns every device model of one VM and a [`PioBus`] and an [`MmioBus`], sorted
//! range tables whose entries lead to a [`Target`]. A guest access is one binary search
//! (no allocation) and one call:
//!
//! - [`Target::Device`]: a model registered with [`Devices::add_device`] — anything that
//!   implements [`Device`] and [`PortIoDevice`] and/or [`MmioDevice`] (see [`device`]). The
//!   device declares whether wide accesses are split into bytes ([`Access`]); it sees
//!   `(address, offset, size, data)` and a [`DeviceContext`] with the VM time, its
//!   interrupt lines, MSI delivery and machine requests.
//! - [`Target::Pic`], [`Target::Ioapic`], [`Target::Lapic`]: the interrupt controllers stay
//!   special-cased. They are the interrupt routing every device's context borrows
//!   ([`interrupts::Interrupts`]), the local APIC is per vCPU and reached through MSRs too,
//!   and their accesses produce interrupt messages rather than line levels.
//! - [`Target::PciConfig`] and [`Target::PciBar`]: PCI configuration mechanism #1 and the
//!   BARs of functions on PCI bus 0 ([`pci`]), mapped and unmapped as the guest programs
//!   them.
//!
//! A new device is one file (the model and its trait impls, like [`debug_exit`]) plus one
//! registration line; a PCI function is one file implementing [`pci::PciDevice`] plus
//! [`Devices::add_pci_device`] (see the example in [`pci`]):
//!
//! ```
//! # use keel_vmm::devices::{Devices, Region, debug_exit::DebugExit};
//! # let mut devices = Devices::pc_for_tests();
//! devices.add_device(DebugExit::new(), &[Region::Ports { base: 0xF4, len: 4 }])?;
//! # Ok::<(), keel_vmm::bus::BusError>(())
//! ```
//!
//! # The PC
//!
//! The PC the guest sees ([`Devices::pc`], registered in [`pc`]):
//!
//! | where | device | interrupt |
//! | --- | --- | --- |
//! | ports `0x20`–`0x21`, `0xA0`–`0xA1`, `0x4D0`–`0x4D1` | 8259 pair + ELCR ([`pic`]) | |
//! | ports `0x40`–`0x43`, `0x61` | 8254 PIT + port B ([`pit`]) | IRQ 0 (I/O APIC pin 2) |
//! | ports `0x60`, `0x64` | i8042 ([`i8042`]) | IRQ 1, 12 |
//! | ports `0x70`–`0x71` | CMOS RTC ([`rtc`]) | IRQ 8 |
//! | ports `0x3F8`–`0x3FF` | COM1 16550A ([`uart`]) | IRQ 4 |
//! | ports `0x600`–`0x60B` | ACPI PM1a event/control + PM timer ([`acpi_pm`]) | SCI = IRQ 9, level |
//! | ports `0xCF8`–`0xCFF` | PCI configuration mechanism #1, host bridge 00:00.0; reset control at `0xCF9` ([`pci_host`]); functions on bus 0 ([`pci`]) | |
//! | MMIO `0xFEC0_0000` | I/O APIC ([`ioapic`]) | |
//! | MMIO `0xFEE0_0000` | local APIC of the accessing vCPU ([`lapic`]) | its timer |
//!
//! The ISA parts with byte-wide registers (UART, PIC, PIT, RTC, i8042) see a wider access
//! as byte accesses at consecutive ports, the way the ISA bus splits them, while the ACPI
//! PM block, the PCI ports, the I/O APIC and the local APIC take the access as it came (the
//! APICs only accept aligned 32-bit registers). [`debug_exit`] (QEMU's `isa-debug-exit`) is
//! a model outside the default PC.
//!
//! Interrupt wiring and time live in [`interrupts`]: every ISA line drives both the 8259
//! input and the I/O APIC pin of the same number (IRQ 0 goes to pin 2, as the MADT's
//! interrupt source override says), and the local APIC or, in virtual-wire mode, the 8259
//! presents the next vector to the CPU.
//!
//! What a guest sees where nothing is mapped follows a PC with an empty ISA bus: reads return
//! all ones for the access size and writes vanish. The same holds for guest-physical addresses
//! that are neither RAM nor a device (see [`exit_handler`](crate::exit_handler)).
//!
//! # State
//!
//! Every model implements [`Persist`](crate::persist::Persist); [`Devices`] does too, with
//! [`DevicesState`] (every model, the interrupt routing, time, pending requests, the PCI
//! functions' configuration spaces), see [`snapshot`].

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;

use serde::{Deserialize, Serialize};

pub use crate::bus::Target;
use crate::bus::{BusError, MmioBus, PioBus};
use crate::memory::GuestMemory;

pub mod acpi_pm;
pub mod debug_exit;
pub mod device;
mod dispatch;
pub mod i8042;
pub mod interrupts;
pub mod ioapic;
pub mod lapic;
pub mod pc;
pub mod pc_testdev;
pub mod pci;
pub mod pci_host;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod snapshot;
pub mod uart;

pub use device::{Access, Device, DeviceContext, DeviceStateError, MmioDevice, PortIoDevice};
pub use pc::Serial;
pub use snapshot::{DevicesState, RestoreError};
pub use uart::Uart16550;

use self::acpi_pm::AcpiPm;
use self::interrupts::Interrupts;
use self::ioapic::Ioapic;
use self::lapic::Lapic;
use self::pci::PciBus;
use self::pic::Pic;

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

/// Where a registered device answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Ports `base..base + len`.
    Ports {
        /// First port.
        base: u16,
        /// Number of ports.
        len: u16,
    },
    /// Guest-physical `base..base + len`.
    Mmio {
        /// First address.
        base: u64,
        /// Length in bytes.
        len: u64,
    },
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineRequest {
    /// ACPI soft-off (PM1 control with `SLP_TYP` = S5 and `SLP_EN`).
    PowerOff,
    /// A reset: the i8042 reset line, or the reset control register at `0xCF9`.
    Reset,
    /// The guest asked to stop with an exit status (QEMU's `isa-debug-exit`, see
    /// [`debug_exit`]).
    Exit {
        /// The status the VM stops with: `(code << 1) | 1` for a written `code`.
        status: u32,
    },
}

/// Most vCPUs a VM can have. They share the host CPU that runs the VM, by turns, so more
/// would only slow the guest down.
pub const MAX_CPUS: u8 = 8;

/// Something a vCPU's IPI asks of another vCPU, which the VM loop carries out (only it can
/// create, reset or start a vCPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct Devices {
    /// What the platform was built with (a restore checks the new one matches).
    config: PlatformConfig,
    /// Registered devices; [`Target::Device`] indexes here, in registration order.
    slots: Vec<Box<dyn Device>>,
    /// How each slot takes wide port and MMIO accesses, read once at registration (a device
    /// declares it for good) so a guest access costs no extra calls to learn it.
    access: Vec<(Access, Access)>,
    /// COM1's index in `slots`.
    com1: usize,
    /// The ACPI PM block's index in `slots`.
    acpi_pm: usize,
    /// The interrupt controllers and lines.
    irq: Interrupts,
    /// PCI bus 0 behind the host bridge.
    pci: PciBus,
    /// Port I/O routing.
    pio: PioBus,
    /// MMIO routing.
    mmio: MmioBus,
    /// The vCPU whose exit is being handled.
    cpu: usize,
    /// The latest VM time seen, in nanoseconds.
    now_ns: u64,
    /// The guest's TSC at `now_ns` (the TSC-deadline timer converts with it).
    guest_tsc: u64,
    /// A power-off or reset the guest asked for.
    request: Option<MachineRequest>,
    /// A PCI function has work for [`Devices::service_io`] (set after BAR writes).
    io_pending: bool,
}

impl fmt::Debug for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Devices")
            .field(
                "devices",
                &self.slots.iter().map(|d| d.name()).collect::<Vec<_>>(),
            )
            .field(
                "pci",
                &self
                    .pci
                    .functions
                    .iter()
                    .map(|f| (f.devfn, f.device.name()))
                    .collect::<Vec<_>>(),
            )
            .field("cpus", &self.irq.lapics.len())
            .field("now_ns", &self.now_ns)
            .finish_non_exhaustive()
    }
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
    /// A platform with the interrupt controllers around `lapics`, the PCI host bridge, and
    /// nothing else registered ([`pc`](Self::pc) adds the rest).
    fn new(config: PlatformConfig, lapics: Vec<Lapic>) -> Devices {
        Devices {
            config,
            slots: Vec::new(),
            access: Vec::new(),
            com1: 0,
            acpi_pm: 0,
            irq: Interrupts::new(lapics),
            pci: PciBus::new(),
            pio: PioBus::new(),
            mmio: MmioBus::new(),
            cpu: 0,
            now_ns: config.now_ns,
            guest_tsc: 0,
            request: None,
            io_pending: false,
        }
    }

    /// Registers `device` and maps it at every region in `regions`; returns its index (for
    /// [`map`](Self::map)). If a region overlaps one already mapped, nothing is registered.
    ///
    /// ```
    /// use keel_vmm::devices::debug_exit::{DebugExit, DEFAULT_PORT, PORT_LEN};
    /// use keel_vmm::devices::{Devices, MachineRequest, Region};
    ///
    /// let mut devices = Devices::pc_for_tests();
    /// devices.add_device(DebugExit::new(), &[Region::Ports { base: DEFAULT_PORT, len: PORT_LEN }]).unwrap();
    /// devices.write_port(DEFAULT_PORT, 4, 1);
    /// assert_eq!(devices.take_machine_request(), Some(MachineRequest::Exit { status: 3 }));
    /// ```
    pub fn add_device(
        &mut self,
        device: impl Device,
        regions: &[Region],
    ) -> Result<usize, BusError> {
        let index = self.slots.len();
        let name = device.name();
        for &region in regions {
            if let Err(error) = self.map_as(index, name, region) {
                let mine = |t: Target| t == Target::Device(index);
                self.pio.remove_where(mine);
                self.mmio.remove_where(mine);
                return Err(error);
            }
        }
        let mut device: Box<dyn Device> = Box::new(device);
        let port = device.port_io().map_or(Access::Whole, |d| d.port_access());
        let mmio = device.mmio().map_or(Access::Whole, |d| d.mmio_access());
        self.access.push((port, mmio));
        self.slots.push(device);
        Ok(index)
    }

    /// Maps registered device `index` at one more region.
    pub fn map(&mut self, index: usize, region: Region) -> Result<(), BusError> {
        let name = self.slots.get(index).map_or("(no device)", |d| d.name());
        self.map_as(index, name, region)
    }

    fn map_as(&mut self, index: usize, name: &'static str, region: Region) -> Result<(), BusError> {
        let target = Target::Device(index);
        match region {
            Region::Ports { base, len } => self.pio.insert(base, len, target, name),
            Region::Mmio { base, len } => self.mmio.insert(base, len, target, name),
        }
    }

    /// The index of the first registered device called `name`.
    pub fn find_device(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|d| d.name() == name)
    }

    /// The first registered device of type `T`.
    pub fn device<T: Device>(&self) -> Option<&T> {
        self.slots
            .iter()
            .find_map(|d| (&**d as &dyn Any).downcast_ref())
    }

    /// The first registered device of type `T`, mutable.
    pub fn device_mut<T: Device>(&mut self) -> Option<&mut T> {
        self.slots
            .iter_mut()
            .find_map(|d| (&mut **d as &mut dyn Any).downcast_mut())
    }

    /// COM1 (the guest's console).
    pub fn com1(&self) -> &Uart16550 {
        let slot: &dyn Any = &*self.slots[self.com1];
        // `pc` registers a `Serial` at this index and nothing removes devices.
        &slot
            .downcast_ref::<Serial>()
            .expect("COM1 is a Serial")
            .uart
    }

    /// COM1, mutable (to queue input).
    pub fn com1_mut(&mut self) -> &mut Uart16550 {
        let slot: &mut dyn Any = &mut *self.slots[self.com1];
        &mut slot
            .downcast_mut::<Serial>()
            .expect("COM1 is a Serial")
            .uart
    }

    /// The ACPI PM block.
    pub fn acpi_pm(&self) -> &AcpiPm {
        let slot: &dyn Any = &*self.slots[self.acpi_pm];
        // `pc` registers the ACPI PM block at this index and nothing removes devices.
        slot.downcast_ref().expect("the ACPI PM slot holds AcpiPm")
    }

    /// The operator pressed the power button (an SCI if the guest enabled it).
    pub fn press_power_button(&mut self, now_ns: u64) {
        let slot: &mut dyn Any = &mut *self.slots[self.acpi_pm];
        slot.downcast_mut::<AcpiPm>()
            .expect("the ACPI PM slot holds AcpiPm")
            .press_power_button(now_ns);
    }

    /// The port-I/O routing table.
    pub fn pio(&self) -> &PioBus {
        &self.pio
    }

    /// The MMIO routing table.
    pub fn mmio(&self) -> &MmioBus {
        &self.mmio
    }

    /// A PC for tests: 2 GHz TSC, the RTC at 2026-01-01, time 0, one vCPU.
    pub fn pc_for_tests() -> Devices {
        Devices::pc_for_tests_with_cpus(1)
    }

    /// [`pc_for_tests`](Self::pc_for_tests) with `cpus` vCPUs.
    pub fn pc_for_tests_with_cpus(cpus: u8) -> Devices {
        Devices::pc(Devices::test_config(cpus)).expect("2 GHz is a valid TSC frequency")
    }

    /// The configuration [`pc_for_tests_with_cpus`](Self::pc_for_tests_with_cpus) uses.
    pub fn test_config(cpus: u8) -> PlatformConfig {
        PlatformConfig {
            tsc_hz: 2_000_000_000,
            wall_clock_unix_seconds: 1_767_225_600,
            now_ns: 0,
            cpus,
        }
    }

    /// Number of vCPUs (local APICs).
    pub fn cpu_count(&self) -> usize {
        self.irq.lapics.len()
    }

    /// Names the vCPU whose accesses follow (local APIC MMIO and MSRs reach its APIC).
    /// Out-of-range indices are ignored.
    pub fn set_current_cpu(&mut self, cpu: usize) {
        if cpu < self.irq.lapics.len() {
            self.cpu = cpu;
        }
    }

    /// The local APIC of vCPU `cpu`.
    pub fn lapic(&self, cpu: usize) -> Option<&Lapic> {
        self.irq.lapics.get(cpu)
    }

    /// The 8259 pair.
    pub fn pic(&self) -> &Pic {
        &self.irq.pic
    }

    /// The I/O APIC.
    pub fn ioapic(&self) -> &Ioapic {
        &self.irq.ioapic
    }

    /// The INITs and start-up IPIs sent since the last call, in order.
    pub fn take_cpu_requests(&mut self) -> Vec<CpuRequest> {
        core::mem::take(&mut self.irq.cpu_requests)
    }

    /// Whether an NMI waits for vCPU `cpu`.
    pub fn nmi_pending(&self, cpu: usize) -> bool {
        cpu < 16 && self.irq.nmi_pending & (1 << cpu) != 0
    }

    /// Marks vCPU `cpu`'s waiting NMI delivered.
    pub fn nmi_delivered(&mut self, cpu: usize) {
        if cpu < 16 {
            self.irq.nmi_pending &= !(1 << cpu);
        }
    }

    /// Resets vCPU `cpu`'s local APIC for an INIT (it keeps its id and mode).
    pub fn init_lapic(&mut self, cpu: usize) {
        let now = self.now_ns;
        if let Some(lapic) = self.irq.lapics.get_mut(cpu) {
            lapic.init(now);
        }
    }

    /// What the platform was built with (the TSC rate, the wall-clock time at `now_ns`).
    pub fn platform_config(&self) -> PlatformConfig {
        self.config
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

    /// A power-off, reset or exit the guest asked for, once.
    pub fn take_machine_request(&mut self) -> Option<MachineRequest> {
        self.request.take()
    }

    /// The registered devices, the PCI bus and a context for calling them, borrowed apart.
    fn split(&mut self) -> (&mut [Box<dyn Device>], &mut PciBus, DeviceContext<'_>) {
        let Devices {
            slots,
            pci,
            irq,
            request,
            now_ns,
            guest_tsc,
            ..
        } = self;
        let ctx = DeviceContext {
            now_ns: *now_ns,
            guest_tsc: *guest_tsc,
            interrupts: irq,
            request,
        };
        (slots, pci, ctx)
    }

    /// Whether a PCI function has deferred work (see [`service_io`](Self::service_io)).
    pub fn io_pending(&self) -> bool {
        self.io_pending
    }

    /// Whether a PCI function has work now: a notified queue, or backend work that came
    /// without a notify (frames for a virtio-net device). Asks every function, so the
    /// VM loop calls it once per pass, not per exit.
    pub fn device_work_waiting(&self) -> bool {
        self.io_pending || self.pci.functions.iter().any(|f| f.device.wants_service())
    }

    /// Lets every PCI function with deferred work (a notified virtio queue) do it with guest
    /// RAM. The VM loop calls this after an exit when [`io_pending`](Self::io_pending) says
    /// so; it is cheap to call when there is nothing to do.
    pub fn service_io(&mut self, memory: &GuestMemory) {
        self.io_pending = false;
        let (_, pci, mut ctx) = self.split();
        for function in &mut pci.functions {
            if function.device.wants_service() {
                function.device.service(memory, &mut ctx);
            }
        }
    }

    /// Runs every registered device and PCI function up to the current time.
    fn advance_devices(&mut self) {
        let (slots, pci, mut ctx) = self.split();
        for device in slots.iter_mut() {
            device.advance(&mut ctx);
        }
        for function in &mut pci.functions {
            function.device.advance(&mut ctx);
        }
    }

    /// Every registered device's and PCI function's next deadline.
    fn device_deadlines(&self) -> impl Iterator<Item = Option<u64>> + '_ {
        self.slots
            .iter()
            .map(|d| d.next_deadline())
            .chain(self.pci.functions.iter().map(|f| f.device.next_deadline()))
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
mod tests;

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
