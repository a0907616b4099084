//! Saving and restoring a whole platform: [`DevicesState`] and [`Persist`] for [`Devices`].
//!
//! The state holds every registered device's model state (in registration order, keyed by
//! name, each as the postcard bytes of the model's own [`Persist`] state), the interrupt
//! routing (8259 pair, I/O APIC, every local APIC, ISA line levels, pending NMIs, queued
//! INIT/start-up IPIs), the VM time and guest TSC last seen, the vCPU whose exit is being
//! handled, a machine request not taken yet, and PCI bus 0 (the host bridge and, per
//! function, its configuration space with MSI-X table and pending bits plus the model's own
//! registers). BAR mappings are not stored: they follow from the configuration spaces and
//! are applied again on restore.
//!
//! A restore starts from the platform as the VM's configuration builds it ([`Devices::pc`]
//! plus the VM's registrations — what devices exist and their host-side connections are
//! not guest state) and loads the state into it; it fails, naming the device and field,
//! if the platform differs (vCPU count, TSC frequency, the devices and PCI functions) or any
//! model refuses its part. A failed restore returns no platform.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use super::device::DeviceStateError;
use super::interrupts::{Interrupts, Lines};
use super::lapic::{self, Lapic, LapicConfig};
use super::pci::PciConfigState;
use super::{
    CpuRequest, Devices, MachineRequest, PlatformConfig, PlatformError, StateError, ioapic,
    pci_host, pic,
};
use crate::devices::ioapic::Ioapic;
use crate::devices::pci_host::PciHost;
use crate::devices::pic::Pic;
use crate::persist::Persist;

/// The name the interrupt routing's own fields use in errors.
const ROUTING: &str = "interrupt routing";

/// Everything guest-visible in a [`Devices`], as plain data (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesState {
    /// vCPUs (local APICs) of the platform.
    pub cpus: u8,
    /// The guest TSC frequency the platform was built for.
    pub tsc_hz: u64,
    /// The latest VM time seen, in nanoseconds.
    pub now_ns: u64,
    /// The guest TSC at `now_ns`.
    pub guest_tsc: u64,
    /// The vCPU whose accesses reach the local APIC page.
    pub current_cpu: u8,
    /// A power-off, reset or exit not taken by the VM loop yet.
    pub request: Option<MachineRequest>,
    /// The interrupt controllers and lines.
    pub interrupts: InterruptsState,
    /// Registered devices, in registration order.
    pub devices: Vec<DeviceState>,
    /// The PCI host bridge and configuration-address register.
    pub pci_host: pci_host::State,
    /// Functions on PCI bus 0, in registration order.
    pub pci_functions: Vec<PciFunctionState>,
}

/// The interrupt routing's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptsState {
    /// The 8259 pair.
    pub pic: pic::State,
    /// The I/O APIC.
    pub ioapic: ioapic::State,
    /// One local APIC per vCPU, index = APIC id.
    pub lapics: Vec<lapic::State>,
    /// ISA line levels last driven.
    pub lines: Lines,
    /// NMIs waiting, a bit per vCPU.
    pub nmi_pending: u16,
    /// INITs and start-up IPIs the VM loop has not taken.
    pub cpu_requests: Vec<CpuRequest>,
}

/// One registered device's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The device's name ([`Device::name`](super::Device::name)).
    pub name: String,
    /// The model's state, postcard-encoded.
    pub state: Vec<u8>,
}

/// One PCI function's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciFunctionState {
    /// Device number << 3 | function number.
    pub devfn: u8,
    /// The model's name.
    pub name: String,
    /// Its configuration space, MSI-X table and pending bits.
    pub config: PciConfigState,
    /// The model's own registers, postcard-encoded (empty for none).
    pub device: Vec<u8>,
}

/// Why a saved platform state could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// The platform to restore into is built differently from the saved one.
    PlatformMismatch {
        /// What differs: `"vCPUs"`, `"TSC Hz"`, `"devices"`, `"PCI functions"`.
        what: &'static str,
        /// The platform's value.
        platform: u64,
        /// The saved value.
        saved: u64,
    },
    /// A device at the same place has another name.
    DeviceMismatch {
        /// Position in registration order (or the PCI device/function number).
        at: u64,
        /// The platform's device.
        platform: &'static str,
        /// The saved device.
        saved: String,
    },
    /// A device model (or the interrupt routing) refused its state.
    Device {
        /// The device, as the platform names it (`"COM1"`).
        device: &'static str,
        /// What it refused.
        error: DeviceStateError,
    },
    /// A local APIC refused its state.
    Lapic {
        /// The vCPU.
        cpu: usize,
        /// Why.
        error: lapic::RestoreError,
    },
    /// The platform could not be built.
    Platform(PlatformError),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::PlatformMismatch {
                what,
                platform,
                saved,
            } => write!(
                f,
                "the saved devices do not fit this VM: {what} {saved} saved, {platform} here \
                 (restore into a VM defined like the saved one)"
            ),
            RestoreError::DeviceMismatch {
                at,
                platform,
                saved,
            } => write!(
                f,
                "the saved devices do not fit this VM: device {at} is {saved:?} in the saved \
                 state but {platform:?} here"
            ),
            RestoreError::Device { device, error } => write!(f, "{device}: {error}"),
            RestoreError::Lapic { cpu, error } => {
                write!(f, "vCPU {cpu}'s local APIC: {error}")
            }
            RestoreError::Platform(error) => error.fmt(f),
        }
    }
}

/// Names `device` in a model's refusal.
fn refused(device: &'static str) -> impl Fn(StateError) -> RestoreError {
    move |error| RestoreError::Device {
        device,
        error: DeviceStateError::Invalid(error),
    }
}

impl Persist for Devices {
    type State = DevicesState;
    /// The platform as the VM's configuration builds it, before it has run: [`Devices::pc`]
    /// plus the same registrations, in the same order, as the saved one had.
    type ConstructorArgs = Devices;
    type Error = RestoreError;

    fn save(&self) -> DevicesState {
        DevicesState {
            cpus: self.irq.lapics.len() as u8,
            tsc_hz: self.config.tsc_hz,
            now_ns: self.now_ns,
            guest_tsc: self.guest_tsc,
            // At most MAX_CPUS - 1.
            current_cpu: self.cpu as u8,
            request: self.request,
            interrupts: self.irq.save(),
            devices: self
                .slots
                .iter()
                .map(|d| DeviceState {
                    name: d.name().to_string(),
                    state: d.save_state(),
                })
                .collect(),
            pci_host: self.pci.host.save(),
            pci_functions: self
                .pci
                .functions
                .iter()
                .map(|f| PciFunctionState {
                    devfn: f.devfn,
                    name: f.device.name().to_string(),
                    config: f.device.config().save(),
                    device: f.device.save_state(),
                })
                .collect(),
        }
    }

    fn restore(mut d: Devices, s: &DevicesState) -> Result<Devices, RestoreError> {
        let mismatch = |what, platform: usize, saved: usize| RestoreError::PlatformMismatch {
            what,
            platform: platform as u64,
            saved: saved as u64,
        };
        let cpus = d.irq.lapics.len();
        if usize::from(s.cpus) != cpus || s.interrupts.lapics.len() != cpus {
            return Err(mismatch("vCPUs", cpus, s.interrupts.lapics.len()));
        }
        if s.tsc_hz != d.config.tsc_hz {
            return Err(RestoreError::PlatformMismatch {
                what: "TSC Hz",
                platform: d.config.tsc_hz,
                saved: s.tsc_hz,
            });
        }
        if s.devices.len() != d.slots.len() {
            return Err(mismatch("devices", d.slots.len(), s.devices.len()));
        }
        if s.pci_functions.len() != d.pci.functions.len() {
            return Err(mismatch(
                "PCI functions",
                d.pci.functions.len(),
                s.pci_functions.len(),
            ));
        }
        if usize::from(s.current_cpu) >= cpus {
            return Err(refused(ROUTING)(StateError::Invalid {
                device: ROUTING,
                field: "current_cpu",
                value: u64::from(s.current_cpu),
            }));
        }
        // Every model first: nothing of the platform is used if one refuses.
        for (i, (device, saved)) in d.slots.iter_mut().zip(&s.devices).enumerate() {
            if device.name() != saved.name {
                return Err(RestoreError::DeviceMismatch {
                    at: i as u64,
                    platform: device.name(),
                    saved: saved.name.clone(),
                });
            }
            let name = device.name();
            device
                .restore_state(&saved.state)
                .map_err(|error| RestoreError::Device {
                    device: name,
                    error,
                })?;
        }
        for (function, saved) in d.pci.functions.iter_mut().zip(&s.pci_functions) {
            let name = function.device.name();
            if function.devfn != saved.devfn || name != saved.name {
                return Err(RestoreError::DeviceMismatch {
                    at: u64::from(saved.devfn),
                    platform: name,
                    saved: saved.name.clone(),
                });
            }
            function
                .device
                .config_mut()
                .restore(name, &saved.config)
                .map_err(refused(name))?;
            function
                .device
                .restore_state(&saved.device)
                .map_err(|error| RestoreError::Device {
                    device: name,
                    error,
                })?;
        }
        let host =
            <PciHost as Persist>::restore((), &s.pci_host).map_err(refused(pci_host::NAME))?;
        let configs = d.irq.lapics.iter().map(|l| *l.config()).collect();
        let irq = <Interrupts as Persist>::restore(configs, &s.interrupts)?;
        d.pci.host = host;
        d.irq = irq;
        d.cpu = usize::from(s.current_cpu);
        d.now_ns = s.now_ns;
        d.guest_tsc = s.guest_tsc;
        d.request = s.request;
        d.remap_all_bars();
        Ok(d)
    }
}

impl Persist for Interrupts {
    type State = InterruptsState;
    /// The configuration of each vCPU's local APIC (id, BSP, clocks), index = APIC id.
    type ConstructorArgs = Vec<LapicConfig>;
    type Error = RestoreError;

    fn save(&self) -> InterruptsState {
        InterruptsState {
            pic: self.pic.save(),
            ioapic: self.ioapic.save(),
            lapics: self.lapics.iter().map(Lapic::save).collect(),
            lines: self.lines,
            nmi_pending: self.nmi_pending,
            cpu_requests: self.cpu_requests.clone(),
        }
    }

    fn restore(configs: Vec<LapicConfig>, s: &InterruptsState) -> Result<Interrupts, RestoreError> {
        let cpus = configs.len();
        if s.lapics.len() != cpus {
            return Err(RestoreError::PlatformMismatch {
                what: "vCPUs",
                platform: cpus as u64,
                saved: s.lapics.len() as u64,
            });
        }
        let routing = |field, value: u64| {
            refused(ROUTING)(StateError::Invalid {
                device: ROUTING,
                field,
                value,
            })
        };
        if u32::from(s.nmi_pending) >> cpus != 0 {
            return Err(routing("nmi_pending", u64::from(s.nmi_pending)));
        }
        for request in &s.cpu_requests {
            let (CpuRequest::Init { cpu } | CpuRequest::StartUp { cpu, .. }) = *request;
            if cpu >= cpus {
                return Err(routing("cpu_requests", cpu as u64));
            }
        }
        let pic = <Pic as Persist>::restore((), &s.pic).map_err(refused(pic::NAME))?;
        let ioapic = <Ioapic as Persist>::restore((), &s.ioapic).map_err(refused(ioapic::NAME))?;
        let lapics = configs
            .into_iter()
            .zip(&s.lapics)
            .enumerate()
            .map(|(cpu, (config, saved))| {
                <Lapic as Persist>::restore(config, saved)
                    .map_err(|error| RestoreError::Lapic { cpu, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Interrupts {
            pic,
            ioapic,
            lapics,
            lines: s.lines,
            nmi_pending: s.nmi_pending,
            cpu_requests: s.cpu_requests.clone(),
            // Rebuilt from the functions' configuration spaces by `remap_all_bars`.
            pci_intx: Default::default(),
        })
    }
}

impl Devices {
    /// Restores a PC built from `config` (no devices registered beyond [`Devices::pc`]'s)
    /// from `state`.
    pub fn restore_pc(
        config: PlatformConfig,
        state: &DevicesState,
    ) -> Result<Devices, RestoreError> {
        let platform = Devices::pc(config).map_err(RestoreError::Platform)?;
        <Devices as Persist>::restore(platform, state)
    }
}

/// Serde for byte arrays longer than serde's built-in 32 (the RTC's 128 bytes of CMOS): as
/// a byte string, whose length is checked when read back.
pub mod byte_array {
    use core::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `bytes` as a byte string.
    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Reads a byte string (or sequence) of exactly `N` bytes.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        struct Bytes<const N: usize>;

        impl<'de, const N: usize> Visitor<'de> for Bytes<N> {
            type Value = [u8; N];

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{N} bytes")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
                let mut out = [0; N];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(de::Error::invalid_length(N + 1, &self));
                }
                Ok(out)
            }
        }

        deserializer.deserialize_bytes(Bytes::<N>)
    }
}

#[cfg(test)]
mod tests;
