//! The legacy (virtio 0.9.5) PCI transport: a [`Transport`] over the I/O-port register block
//! in BAR0, for devices without the virtio 1.x capabilities (QEMU's `disable-modern=on`).
//!
//! Register layout (virtio 1.x §4.1.4.8, "Legacy Interfaces: A Note on PCI Device Layout"),
//! offsets from the start of BAR0, little-endian:
//!
//! | offset | size | register                                            |
//! |--------|------|-----------------------------------------------------|
//! | 0x00   | 32   | device features (bits 0..32 only)                   |
//! | 0x04   | 32   | guest (driver) features                             |
//! | 0x08   | 32   | queue address: PFN of the queue, in 4096-byte units |
//! | 0x0c   | 16   | queue size (read-only: fixed by the device)         |
//! | 0x0e   | 16   | queue select                                        |
//! | 0x10   | 16   | queue notify                                        |
//! | 0x12   | 8    | device status                                       |
//! | 0x13   | 8    | ISR status (read clears)                            |
//! | 0x14   | ...  | device-specific configuration (MSI-X disabled)      |
//!
//! A legacy queue is one physically contiguous region laid out as descriptor table,
//! available ring, then the used ring at the next 4096-byte boundary (§2.6.2); the device
//! learns only the PFN of its start. [`Transport::requires_legacy_layout`] answers `true` so
//! `virtio-drivers` allocates exactly that. Keel never enables MSI-X (the NICs are polled),
//! so the device-specific configuration always starts at 0x14.

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{Error, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::arch::cpu::port;
use crate::pci::{Bar, PciDevice};

const DEVICE_FEATURES: u16 = 0x00;
const GUEST_FEATURES: u16 = 0x04;
const QUEUE_PFN: u16 = 0x08;
const QUEUE_SIZE: u16 = 0x0c;
const QUEUE_SELECT: u16 = 0x0e;
const QUEUE_NOTIFY: u16 = 0x10;
const DEVICE_STATUS: u16 = 0x12;
const ISR_STATUS: u16 = 0x13;
/// Start of the device-specific configuration while MSI-X is disabled.
const CONFIG: u16 = 0x14;

/// Legacy queue addresses are given in units of this many bytes.
const QUEUE_ADDRESS_SHIFT: u32 = 12;

/// PCI device IDs of transitional devices, the only ones with a legacy interface
/// (virtio 1.x §4.1.2.1); the subsystem device ID holds the virtio device type.
const TRANSITIONAL_IDS: core::ops::RangeInclusive<u16> = 0x1000..=0x103f;

/// Why a legacy transport could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// Not a transitional device ID (0x1000..=0x103f).
    #[error("device ID {0:#06x} has no legacy interface")]
    NotTransitional(u16),
    /// The subsystem device ID is not a known virtio device type.
    #[error("{}", unknown_type(*.0))]
    UnknownDeviceType(Option<u16>),
    /// BAR0 is not an assigned I/O BAR large enough for the common registers.
    #[error("BAR0 is not an assigned legacy I/O BAR")]
    NoIoBar,
}

/// [`LegacyError::UnknownDeviceType`]'s message.
fn unknown_type(id: Option<u16>) -> alloc::string::String {
    match id {
        Some(id) => alloc::format!("unknown virtio device type {id} in the subsystem ID"),
        None => alloc::string::String::from("no subsystem ID"),
    }
}

/// A virtio device driven through its legacy I/O-port registers.
#[derive(Debug)]
pub struct LegacyPciTransport {
    device_type: DeviceType,
    /// First port of BAR0.
    base: u16,
    /// Bytes of device-specific configuration the BAR has room for.
    config_len: u16,
}

impl LegacyPciTransport {
    /// Wraps the legacy register block of `device`, which the caller drives from now on (and
    /// whose I/O decoding it enables). Touches no register.
    pub fn new(device: &PciDevice) -> Result<LegacyPciTransport, LegacyError> {
        if !TRANSITIONAL_IDS.contains(&device.device_id) {
            return Err(LegacyError::NotTransitional(device.device_id));
        }
        let subsystem = device.subsystem.map(|(_, id)| id);
        let device_type = subsystem
            .and_then(|id| DeviceType::try_from(id).ok())
            .ok_or(LegacyError::UnknownDeviceType(subsystem))?;
        let (port, size) = match device.bar(0) {
            Some(bar @ Bar::Io { .. }) if bar.is_assigned() => {
                bar.io().ok_or(LegacyError::NoIoBar)?
            }
            _ => return Err(LegacyError::NoIoBar),
        };
        // The whole block must be addressable with 16-bit ports.
        let (Ok(base), Ok(size)) = (u16::try_from(port), u16::try_from(size)) else {
            return Err(LegacyError::NoIoBar);
        };
        if size < CONFIG || base.checked_add(size - 1).is_none() {
            return Err(LegacyError::NoIoBar);
        }
        Ok(LegacyPciTransport {
            device_type,
            base,
            config_len: size - CONFIG,
        })
    }

    /// The size of `queue` as the device fixed it (0 = no such queue).
    pub fn queue_size(&mut self, queue: u16) -> u16 {
        self.write16(QUEUE_SELECT, queue);
        self.read16(QUEUE_SIZE)
    }

    fn port(&self, offset: u16, width: u16) -> u16 {
        assert!(
            offset + width <= CONFIG + self.config_len,
            "legacy register out of BAR0"
        );
        self.base + offset
    }

    // The accessors below are the only port I/O. Their shared safety argument: `base` is
    // BAR0 of the legacy virtio function this transport drives exclusively (`new`), `port`
    // keeps every access inside that BAR, and each register's side effects (ISR read-clear,
    // status reset, notify) are what the virtio protocol calls for.

    fn read8(&self, offset: u16) -> u8 {
        let port = self.port(offset, 1);
        // SAFETY: see above: a port of this device's BAR0, which this transport owns.
        unsafe { port::inb(port) }
    }

    fn read16(&self, offset: u16) -> u16 {
        let port = self.port(offset, 2);
        // SAFETY: see above: a port of this device's BAR0, which this transport owns.
        unsafe { port::inw(port) }
    }

    fn read32(&self, offset: u16) -> u32 {
        let port = self.port(offset, 4);
        // SAFETY: see above: a port of this device's BAR0, which this transport owns.
        unsafe { port::inl(port) }
    }

    fn write8(&mut self, offset: u16, value: u8) {
        let port = self.port(offset, 1);
        // SAFETY: see above: a port of this device's BAR0, which this transport owns.
        unsafe { port::outb(port, value) }
    }

    fn write16(&mut self, offset: u16, value: u16) {
        let port = self.port(offset, 2);
        // SAFETY: see above: a port of this device's BAR0, which this transport owns.
        unsafe { port::outw(port, value) }
    }

    fn write32(&mut self, offset: u16, value: u32) {
        let port = self.port(offset, 4);
        // SAFETY: see above: a port of this device's BAR0, which this transport owns.
        unsafe { port::outl(port, value) }
    }

    /// The config-space window `offset..offset + len` as a register offset, if it fits.
    fn config_offset(&self, offset: usize, len: usize) -> Result<u16, Error> {
        match offset.checked_add(len) {
            Some(end) if end <= usize::from(self.config_len) => {
                // `offset < config_len <= u16::MAX`.
                Ok(CONFIG + offset as u16)
            }
            _ => Err(Error::ConfigSpaceTooSmall),
        }
    }
}

impl Transport for LegacyPciTransport {
    fn device_type(&self) -> DeviceType {
        self.device_type
    }

    /// Legacy devices have 32 feature bits only.
    fn read_device_features(&mut self) -> u64 {
        u64::from(self.read32(DEVICE_FEATURES))
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        // Bits 32 and up (VERSION_1 among them) cannot be offered by a legacy device, so the
        // negotiated set has none.
        self.write32(GUEST_FEATURES, driver_features as u32);
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.queue_size(queue).into()
    }

    fn notify(&mut self, queue: u16) {
        self.write16(QUEUE_NOTIFY, queue);
    }

    fn get_status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_truncate(self.read8(DEVICE_STATUS).into())
    }

    fn set_status(&mut self, status: DeviceStatus) {
        // Every status bit fits the 8-bit register.
        self.write8(DEVICE_STATUS, status.bits() as u8);
    }

    /// Legacy PCI has no page-size register: it is 4096 bytes by definition.
    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        true
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        // The device knows only where the region starts; check that the rings sit where the
        // legacy layout puts them relative to it (§2.6.2), and that the size is the device's.
        let fixed = self.queue_size(queue);
        let avail = descriptors + 16 * u64::from(size);
        let used = (avail + 2 * (3 + u64::from(size))).next_multiple_of(4096);
        assert!(
            u32::from(fixed) == size && driver_area == avail && device_area == used,
            "virtio legacy: queue {queue} does not have the legacy layout of {fixed} entries"
        );
        assert!(
            descriptors.is_multiple_of(4096),
            "virtio legacy: queue not page-aligned"
        );
        let pfn = u32::try_from(descriptors >> QUEUE_ADDRESS_SHIFT)
            .expect("virtio legacy: queue above 16 TiB");
        self.write32(QUEUE_PFN, pfn);
    }

    fn queue_unset(&mut self, queue: u16) {
        self.write16(QUEUE_SELECT, queue);
        self.write32(QUEUE_PFN, 0);
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.write16(QUEUE_SELECT, queue);
        self.read32(QUEUE_PFN) != 0
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        // Reading the ISR clears it and de-asserts INTx.
        InterruptStatus::from_bits_retain(self.read8(ISR_STATUS).into())
    }

    /// Legacy devices have no configuration generation counter.
    fn read_config_generation(&self) -> u32 {
        0
    }

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T, Error> {
        let start = self.config_offset(offset, size_of::<T>())?;
        let mut value = T::new_zeroed();
        for (i, byte) in (start..).zip(value.as_mut_bytes()) {
            *byte = self.read8(i);
        }
        Ok(value)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> Result<(), Error> {
        let start = self.config_offset(offset, size_of::<T>())?;
        for (i, &byte) in (start..).zip(value.as_bytes()) {
            self.write8(i, byte);
        }
        Ok(())
    }
}
