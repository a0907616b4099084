//! What a device model implements to sit on the port-I/O and MMIO buses: [`Device`],
//! [`PortIoDevice`], [`MmioDevice`], and the [`DeviceContext`] every access carries.
//!
//! A device sees an access as `(address, offset, size, data)` plus a context with the VM's
//! time and the interrupt routing, so a model needs no pointer back to the platform: it
//! drives its ISA lines ([`DeviceContext::set_irq_level`], [`DeviceContext::pulse_irq`]),
//! sends MSI messages ([`DeviceContext::send_msi`]) and asks for a power-off or reset
//! ([`DeviceContext::request`]) through it.
//!
//! Whether a wide access is split into bytes is a property of the device
//! ([`PortIoDevice::port_access`], [`MmioDevice::mmio_access`]): ISA parts with byte
//! registers say [`Access::Bytes`] and see a 32-bit `IN` as four byte reads at consecutive
//! addresses (each looked up on its own, as the ISA bus does); the rest take the access whole.
//!
//! State for snapshots goes through [`Device::save_state`]/[`Device::restore_state`], which
//! carry the model's [`Persist`](crate::persist::Persist) state as postcard bytes, so the
//! platform can save devices it knows only as trait objects.

use alloc::vec::Vec;
use core::any::Any;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::interrupts::{Interrupts, MsiMessage};
use super::{MachineRequest, StateError};

/// How a device's registers take accesses wider than a byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Byte registers: a wider access becomes byte accesses at consecutive addresses, each
    /// routed on its own (the ISA bus's byte lanes).
    Bytes,
    /// The device takes the access as it came (offset, size, value).
    Whole,
}

/// What a device can reach during an access or a time step: the VM's time, the interrupt
/// lines, MSI delivery, and machine requests. Built by [`Devices`](super::Devices) for each
/// call; it borrows the platform's interrupt routing, so devices hold no back-pointer.
pub struct DeviceContext<'a> {
    pub(super) now_ns: u64,
    pub(super) guest_tsc: u64,
    pub(super) interrupts: &'a mut Interrupts,
    pub(super) request: &'a mut Option<MachineRequest>,
}

impl DeviceContext<'_> {
    /// The VM's time in nanoseconds (monotonic; what the models' timers run on).
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// The guest's TSC at [`now_ns`](Self::now_ns).
    pub fn guest_tsc(&self) -> u64 {
        self.guest_tsc
    }

    /// Drives level-triggered ISA line `irq` (0–15) to `level`; nothing happens if the line
    /// is already there (a level line is seen once per change).
    pub fn set_irq_level(&mut self, irq: u8, level: bool) {
        self.interrupts.set_level(irq, level);
    }

    /// PCI function `devfn` drives its INTx line, wired to GSI `gsi` (16–23), to `level`
    /// (the configuration space calls this; see
    /// [`PciConfigSpace::set_intx`](super::pci::PciConfigSpace::set_intx)).
    pub(crate) fn set_pci_intx(&mut self, devfn: u8, gsi: u8, level: bool) {
        self.interrupts.set_pci_intx(devfn, gsi, level);
    }

    /// Raises and lowers ISA line `irq` (0–15): one edge.
    pub fn pulse_irq(&mut self, irq: u8) {
        self.interrupts.pulse(irq);
    }

    /// Delivers a message-signalled interrupt (an MSI or MSI-X write to `0xFEEx_xxxx`) to the
    /// local APICs it names. Messages to other addresses are dropped, as a write to memory
    /// no device claims.
    pub fn send_msi(&mut self, message: MsiMessage) {
        self.interrupts.deliver_msi(message);
    }

    /// Asks the VM loop to power the machine off or reset it. A power-off already asked for
    /// wins over a later reset.
    pub fn request(&mut self, request: MachineRequest) {
        if *self.request != Some(MachineRequest::PowerOff) {
            *self.request = Some(request);
        }
    }
}

/// A guest-visible device on the port-I/O bus.
pub trait PortIoDevice {
    /// How the device takes accesses wider than a byte ([`Access::Whole`] unless overridden).
    fn port_access(&self) -> Access {
        Access::Whole
    }

    /// A guest `IN` of `size` bytes (1, 2 or 4; 1 for [`Access::Bytes`] devices) from `port`,
    /// `offset` bytes into the range the device was registered at. Returns the value in the
    /// low `size` bytes.
    fn read_port(&mut self, port: u16, offset: u16, size: u8, ctx: &mut DeviceContext) -> u32;

    /// A guest `OUT` of the low `size` bytes of `value` to `port` (`offset` into its range).
    fn write_port(&mut self, port: u16, offset: u16, size: u8, value: u32, ctx: &mut DeviceContext);
}

/// A guest-visible device on the MMIO bus.
pub trait MmioDevice {
    /// How the device takes accesses wider than a byte ([`Access::Whole`] unless overridden).
    fn mmio_access(&self) -> Access {
        Access::Whole
    }

    /// A guest load of `size` bytes (1, 2, 4 or 8; 1 for [`Access::Bytes`] devices) at
    /// `offset` bytes into the device's range.
    fn read_mmio(&mut self, offset: u64, size: u8, ctx: &mut DeviceContext) -> u64;

    /// A guest store of the low `size` bytes of `value` at `offset` into the device's range.
    fn write_mmio(&mut self, offset: u64, size: u8, value: u64, ctx: &mut DeviceContext);
}

/// A device model the platform owns: its name, the bus interfaces it has, its timers and its
/// state. [`Any`] is a supertrait so the platform can hand a registered model back by type
/// ([`Devices::device`](super::Devices::device)). Registered with [`Devices::add_device`](super::Devices::add_device), which puts it
/// on the buses.
///
/// Call order: the platform calls [`advance`](Self::advance) with the VM's time before each
/// guest entry (timers run, interrupt outputs are sampled), then any number of bus accesses
/// through [`port_io`](Self::port_io)/[`mmio`](Self::mmio), each with the latest time.
pub trait Device: Any {
    /// The name an operator knows the device by (`"COM1"`); also its key in a saved state,
    /// so it is unique within a platform.
    fn name(&self) -> &'static str;

    /// The device's port-I/O interface, if it has one.
    fn port_io(&mut self) -> Option<&mut dyn PortIoDevice> {
        None
    }

    /// The device's MMIO interface, if it has one.
    fn mmio(&mut self) -> Option<&mut dyn MmioDevice> {
        None
    }

    /// Runs the device's timers to `ctx.now_ns()` and drives its interrupt lines.
    fn advance(&mut self, _ctx: &mut DeviceContext) {}

    /// The earliest VM time at which [`advance`](Self::advance) would raise an interrupt.
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// The model's state as postcard bytes (its [`Persist`](crate::persist::Persist) state).
    fn save_state(&self) -> Vec<u8>;

    /// Loads a state [`save_state`](Self::save_state) made. A state the model refuses leaves
    /// it unchanged.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError>;
}

/// Why a device refused the bytes of a saved state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceStateError {
    /// The bytes are not an encoding of the model's state.
    Decode {
        /// The device.
        device: &'static str,
        /// What the decoder said.
        reason: alloc::string::String,
    },
    /// The state decodes but the model cannot be in it.
    Invalid(StateError),
}

impl core::fmt::Display for DeviceStateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeviceStateError::Decode { device, reason } => {
                write!(f, "the saved {device} state does not decode: {reason}")
            }
            DeviceStateError::Invalid(error) => error.fmt(f),
        }
    }
}

impl From<StateError> for DeviceStateError {
    fn from(error: StateError) -> Self {
        DeviceStateError::Invalid(error)
    }
}

/// What a model without state of its own takes as its saved state: only the empty one. The
/// default `restore_state` of the traits whose models may have none (PCI functions, virtio
/// devices).
pub fn restore_stateless(device: &'static str, bytes: &[u8]) -> Result<(), DeviceStateError> {
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(DeviceStateError::Decode {
            device,
            reason: alloc::format!("{} bytes for a model without state", bytes.len()),
        })
    }
}

/// Encodes a model's state for [`Device::save_state`].
pub fn encode_state<S: Serialize>(state: &S) -> Vec<u8> {
    // postcard only fails on a full output buffer or on types serde cannot express
    // (maps with unknown length); device states are plain structs and vectors.
    postcard::to_allocvec(state).expect("device states always encode")
}

/// Decodes a model's state for [`Device::restore_state`], naming `device` on failure.
pub fn decode_state<S: DeserializeOwned>(
    device: &'static str,
    bytes: &[u8],
) -> Result<S, DeviceStateError> {
    postcard::from_bytes(bytes).map_err(|e| DeviceStateError::Decode {
        device,
        reason: alloc::format!("{e}"),
    })
}
