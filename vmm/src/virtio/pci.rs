//! The virtio-pci modern transport (virtio 1.x §4.1) around a [`VirtioDevice`] model.
//!
//! # Layout
//!
//! One 64-bit memory BAR 0 of 512 KiB, laid out as Cloud Hypervisor's devices are:
//!
//! | offset | what | capability |
//! | --- | --- | --- |
//! | `0x0000` | common configuration (`0x38` bytes) | `COMMON_CFG` |
//! | `0x2000` | ISR status (1 byte, read clears) | `ISR_CFG` |
//! | `0x4000` | device configuration | `DEVICE_CFG` |
//! | `0x6000` | notify registers, queue `n` at `0x6000 + 4n` | `NOTIFY_CFG`, multiplier 4 |
//! | `0x8000` | MSI-X table, queues + 1 vectors | MSI-X |
//! | `0x48000` | MSI-X PBA | |
//!
//! The BAR is not placed here: the platform pre-assigns it (or the guest's firmware does),
//! and it works wherever the guest moves it (offsets are BAR-relative).
//!
//! # Rules the transport enforces
//!
//! Driver features are accepted only as a subset of what is offered and must include
//! `VERSION_1`, else `FEATURES_OK` stays clear when the driver sets it. Queue registers are
//! read-only once the queue is enabled or `DRIVER_OK` is set. Notifications before
//! `DRIVER_OK` are dropped. Writing 0 to `device_status` resets the transport, every queue
//! and the model. A driver that breaks a rule gets `DEVICE_NEEDS_RESET` and a
//! config-change interrupt; [`VirtioPci::error`] says why, until the next reset.
//!
//! # Interrupts
//!
//! With MSI-X enabled, each queue signals the vector the driver programmed for it
//! (`NO_VECTOR`: none). With MSI-X off, the transport sets the ISR bit (queue: bit 0,
//! configuration: bit 1) and asserts INTx ([`PciConfigSpace::set_intx`], routed by the
//! DSDT's `_PRT`); a polling driver (firmware) just reads the ISR. Reading the ISR clears
//! it and deasserts INTx.
//!
//! Not implemented: the `PCI_CFG` access capability (no driver Keel boots uses it) and
//! legacy (pre-1.0) virtio.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::queue::{QueueState, SplitQueue};
use super::{DeviceFault, F_EVENT_IDX, F_INDIRECT_DESC, F_VERSION_1};
use crate::devices::device::{DeviceStateError, decode_state, encode_state};
use crate::devices::pci::config::{CAP_VENDOR, MSIX_ENABLE};
use crate::devices::pci::{BarKind, PciConfigSpace, PciDevice, PciIds};
use crate::devices::{DeviceContext, StateError};
use crate::memory::GuestMemory;

/// PCI vendor id of virtio devices.
pub const VENDOR_ID: u16 = 0x1AF4;
/// PCI device id of a modern virtio device of type 0; type `t` is `DEVICE_ID_BASE + t`.
pub const DEVICE_ID_BASE: u16 = 0x1040;

/// BAR 0's size.
pub const BAR_SIZE: u64 = 0x8_0000;
/// Common configuration offset in BAR 0.
pub const COMMON_CFG: u64 = 0x0;
/// Common configuration length.
pub const COMMON_CFG_LEN: u64 = 0x38;
/// ISR status offset in BAR 0.
pub const ISR_CFG: u64 = 0x2000;
/// Device configuration offset in BAR 0.
pub const DEVICE_CFG: u64 = 0x4000;
/// Device configuration window length.
pub const DEVICE_CFG_LEN: u64 = 0x1000;
/// Notify registers' offset in BAR 0.
pub const NOTIFY_CFG: u64 = 0x6000;
/// Bytes between two queues' notify registers.
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// MSI-X table offset in BAR 0.
pub const MSIX_TABLE: u32 = 0x8000;
/// MSI-X PBA offset in BAR 0.
pub const MSIX_PBA: u32 = 0x4_8000;
/// Most queues a device can have here (the notified set is one 64-bit word).
pub const MAX_QUEUES: usize = 64;
/// The "no MSI-X vector" value.
pub const NO_VECTOR: u16 = 0xFFFF;

/// Device status: the guest noticed the device.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Device status: the guest has a driver for it.
pub const STATUS_DRIVER: u8 = 2;
/// Device status: the driver is ready.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Device status: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Device status: the device hit an error and needs a reset.
pub const STATUS_NEEDS_RESET: u8 = 0x40;
/// Device status: the driver gave up on the device.
pub const STATUS_FAILED: u8 = 0x80;

/// ISR bit: a queue has used entries.
pub const ISR_QUEUE: u8 = 1;
/// ISR bit: the device configuration (or status) changed.
pub const ISR_CONFIG: u8 = 2;

/// Virtio PCI capability types (`cfg_type`).
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;

/// A virtio device model: what the transport needs to present it and to hand it queues.
pub trait VirtioDevice: 'static {
    /// The virtio device type (2 = block).
    fn device_type(&self) -> u16;

    /// The name an operator knows the device by ("virtio-blk"); also its snapshot key.
    fn name(&self) -> &'static str;

    /// The PCI class code (base class, sub-class, programming interface).
    fn pci_class(&self) -> u32;

    /// The device's feature bits; the transport adds `VERSION_1`, `EVENT_IDX` and
    /// `INDIRECT_DESC`.
    fn features(&self) -> u64;

    /// Each queue's maximum size (a power of two).
    fn queue_max_sizes(&self) -> &[u16];

    /// Reads the device configuration at `offset` into `data` (bytes past its end read 0).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// A driver write to the device configuration (ignored by default: read-only).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// The driver set `DRIVER_OK` with `features` negotiated.
    fn activate(&mut self, _features: u64) {}

    /// The driver reset the device.
    fn reset(&mut self) {}

    /// Queues (one bit each) whose [`process_queue`](Self::process_queue) should run at the
    /// next service although the driver did not notify them: work that arrived from the
    /// backend (virtio-net: frames waiting for the guest). Asked only while the driver is
    /// running; bits of queues the driver did not enable are ignored.
    fn backend_ready(&self) -> u64 {
        0
    }

    /// Completes every request available on queue `index`; returns whether any used entry
    /// was added. An error puts the device in `DEVICE_NEEDS_RESET`.
    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut SplitQueue,
        mem: &GuestMemory,
    ) -> Result<bool, DeviceFault>;

    /// The model's guest-visible state beyond its queues, as postcard bytes.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Loads what [`save_state`](Self::save_state) made.
    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        crate::devices::device::restore_stateless(self.name(), bytes)
    }
}

/// A virtio device on PCI: the transport's registers, the queues and the model; see the
/// [module docs](self).
pub struct VirtioPci<D: VirtioDevice> {
    config: PciConfigSpace,
    /// Offset of the MSI-X capability in configuration space.
    msix_cap: u8,
    device: D,
    regs: TransportRegs,
    queues: Vec<SplitQueue>,
    /// Queues notified since the last service, one bit each.
    notified: u64,
}

/// The common configuration's driver-visible registers and the device status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TransportRegs {
    status: u8,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    msix_config: u16,
    queue_select: u16,
    config_generation: u8,
    isr: u8,
    queue_vectors: Vec<u16>,
    /// Why the device needs a reset.
    fault: Option<String>,
}

/// [`VirtioPci`]'s snapshot.
#[derive(Serialize, Deserialize)]
struct VirtioPciState {
    regs: TransportRegs,
    queues: Vec<QueueState>,
    device: Vec<u8>,
}

impl<D: VirtioDevice> VirtioPci<D> {
    /// The transport around `device` (at most [`MAX_QUEUES`] of its queues are exposed), in
    /// its reset state; add it with
    /// [`Devices::add_pci_device`](crate::devices::Devices::add_pci_device).
    pub fn new(device: D) -> VirtioPci<D> {
        let id = DEVICE_ID_BASE.wrapping_add(device.device_type());
        let mut config = PciConfigSpace::new(PciIds {
            vendor: VENDOR_ID,
            device: id,
            revision: 1,
            class: device.pci_class(),
            subsystem_vendor: VENDOR_ID,
            subsystem: id,
        });
        let queues: Vec<SplitQueue> = device
            .queue_max_sizes()
            .iter()
            .take(MAX_QUEUES)
            .map(|&max| SplitQueue::new(max))
            .collect();
        let count = queues.len() as u32;
        // The layout is fixed and at most 65 vectors (MAX_QUEUES + 1) fit the table window
        // (0x8000..0x48000): building it cannot fail, and a unit test builds it.
        let bar = BarKind::Memory64 {
            size: BAR_SIZE,
            prefetchable: false,
        };
        config
            .set_bar(0, bar)
            .expect("BAR 0 is free in a new space");
        let caps = [
            (CAP_COMMON, COMMON_CFG as u32, COMMON_CFG_LEN as u32),
            (CAP_ISR, ISR_CFG as u32, 1),
            (CAP_DEVICE, DEVICE_CFG as u32, DEVICE_CFG_LEN as u32),
        ];
        for (kind, offset, len) in caps {
            config
                .add_capability(CAP_VENDOR, &virtio_cap(16, kind, offset, len), &[])
                .expect("four virtio capabilities fit configuration space");
        }
        let mut notify = virtio_cap(
            20,
            CAP_NOTIFY,
            NOTIFY_CFG as u32,
            count.max(1) * NOTIFY_MULTIPLIER,
        )
        .to_vec();
        notify.extend_from_slice(&NOTIFY_MULTIPLIER.to_le_bytes());
        config
            .add_capability(CAP_VENDOR, &notify, &[])
            .expect("four virtio capabilities fit configuration space");
        let msix_cap = config
            .add_msix(count as u16 + 1, 0, MSIX_TABLE, 0, MSIX_PBA)
            .expect("at most 65 vectors fit the MSI-X window");
        let regs = TransportRegs {
            queue_vectors: alloc::vec![NO_VECTOR; queues.len()],
            msix_config: NO_VECTOR,
            ..TransportRegs::default()
        };
        VirtioPci {
            config,
            msix_cap,
            device,
            regs,
            queues,
            notified: 0,
        }
    }

    /// The device model.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device model, mutable.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Why the device is in `DEVICE_NEEDS_RESET`, for `vm info`; `None` while it is fine.
    pub fn error(&self) -> Option<&str> {
        self.regs.fault.as_deref()
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.regs.status
    }

    /// The features the driver accepted (valid once `FEATURES_OK` is set).
    pub fn driver_features(&self) -> u64 {
        self.regs.driver_features
    }

    /// Queue `index`.
    pub fn queue(&self, index: u16) -> Option<&SplitQueue> {
        self.queues.get(usize::from(index))
    }

    /// Everything the transport offers: the model's features plus the ring features.
    pub fn offered_features(&self) -> u64 {
        self.device.features() | F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC
    }

    /// Back to the state after construction (the driver wrote 0 to the status); INTx
    /// deasserted.
    fn reset(&mut self, ctx: &mut DeviceContext) {
        self.config.set_intx(false, ctx);
        for queue in &mut self.queues {
            queue.reset();
        }
        self.regs = TransportRegs {
            queue_vectors: alloc::vec![NO_VECTOR; self.queues.len()],
            msix_config: NO_VECTOR,
            ..TransportRegs::default()
        };
        self.notified = 0;
        self.device.reset();
    }

    /// The driver broke a rule: `DEVICE_NEEDS_RESET`, the first reason kept, and a
    /// config-change interrupt once the driver is running.
    fn fail(&mut self, reason: String, ctx: &mut DeviceContext) {
        if self.regs.fault.is_none() {
            self.regs.fault = Some(format!("{}: {reason}", self.device.name()));
        }
        self.regs.status |= STATUS_NEEDS_RESET;
        self.notified = 0;
        if self.regs.status & STATUS_DRIVER_OK != 0 {
            self.signal(self.regs.msix_config, ISR_CONFIG, ctx);
        }
    }

    /// Whether the driver enabled MSI-X.
    fn msix_enabled(&self) -> bool {
        self.config.read(self.msix_cap + 2, 2) as u16 & MSIX_ENABLE != 0
    }

    /// Interrupts the driver: MSI-X `vector`, or the ISR bit without MSI-X.
    fn signal(&mut self, vector: u16, isr_bit: u8, ctx: &mut DeviceContext) {
        if self.msix_enabled() {
            if vector != NO_VECTOR {
                self.config.msix_notify(vector, ctx);
            }
        } else {
            self.regs.isr |= isr_bit;
            self.config.set_intx(true, ctx);
        }
    }

    /// A vector the driver wrote, or `NO_VECTOR` if the table has no such entry.
    fn checked_vector(&self, vector: u16) -> u16 {
        if usize::from(vector) <= self.queues.len() {
            vector
        } else {
            NO_VECTOR
        }
    }

    /// The common configuration as bytes (cheap: 56 bytes per read).
    fn common_bytes(&self) -> [u8; COMMON_CFG_LEN as usize] {
        let r = &self.regs;
        let mut b = [0u8; COMMON_CFG_LEN as usize];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        let word = |features: u64, select: u32| match select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        };
        put(0x00, &r.device_feature_select.to_le_bytes());
        put(
            0x04,
            &word(self.offered_features(), r.device_feature_select).to_le_bytes(),
        );
        put(0x08, &r.driver_feature_select.to_le_bytes());
        put(
            0x0C,
            &word(r.driver_features, r.driver_feature_select).to_le_bytes(),
        );
        put(0x10, &r.msix_config.to_le_bytes());
        put(0x12, &(self.queues.len() as u16).to_le_bytes());
        put(0x14, &[r.status, r.config_generation]);
        put(0x16, &r.queue_select.to_le_bytes());
        if let Some(q) = self.queues.get(usize::from(r.queue_select)) {
            let vector = r.queue_vectors[usize::from(r.queue_select)];
            put(0x18, &q.size().to_le_bytes());
            put(0x1A, &vector.to_le_bytes());
            put(0x1C, &u16::from(q.ready()).to_le_bytes());
            put(0x1E, &r.queue_select.to_le_bytes());
            put(0x20, &q.desc_table().to_le_bytes());
            put(0x28, &q.avail_ring().to_le_bytes());
            put(0x30, &q.used_ring().to_le_bytes());
        } else {
            // No such queue: size 0 says so (§4.1.4.3); the vector reads NO_VECTOR.
            put(0x1A, &NO_VECTOR.to_le_bytes());
        }
        b
    }

    fn read_common(&self, offset: u64, size: u8) -> u64 {
        let bytes = self.common_bytes();
        let mut value = 0u64;
        for i in 0..u64::from(size.min(8)) {
            let byte = usize::try_from(offset + i)
                .ok()
                .and_then(|at| bytes.get(at))
                .copied()
                .unwrap_or(0);
            value |= u64::from(byte) << (8 * i);
        }
        value
    }

    fn write_common(&mut self, offset: u64, size: u8, value: u64, ctx: &mut DeviceContext) {
        let v32 = value as u32;
        let v16 = value as u16;
        match (offset, size) {
            (0x00, 4) => self.regs.device_feature_select = v32,
            (0x08, 4) => self.regs.driver_feature_select = v32,
            // Features are fixed once FEATURES_OK is set.
            (0x0C, 4) if self.regs.status & STATUS_FEATURES_OK == 0 => {
                let shift = match self.regs.driver_feature_select {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let mask = 0xFFFF_FFFFu64 << shift;
                self.regs.driver_features =
                    (self.regs.driver_features & !mask) | (u64::from(v32) << shift);
            }
            (0x10, 2) => self.regs.msix_config = self.checked_vector(v16),
            (0x14, 1) => self.write_status(value as u8, ctx),
            (0x16, 2) => self.regs.queue_select = v16,
            (0x18..0x38, _) => self.write_queue(offset, size, value, ctx),
            // Read-only registers and odd sizes: ignored.
            _ => {}
        }
    }

    /// A write to one of the selected queue's registers.
    fn write_queue(&mut self, offset: u64, size: u8, value: u64, ctx: &mut DeviceContext) {
        let select = usize::from(self.regs.queue_select);
        let driver_ok = self.regs.status & STATUS_DRIVER_OK != 0;
        let vector = self.checked_vector(value as u16);
        let Some(queue) = self.queues.get_mut(select) else {
            return;
        };
        // §4.1.4.3.2: the queue's setup is fixed once it is enabled (or the driver is up).
        if queue.ready() || driver_ok {
            return;
        }
        let set_half = |old: u64, high: bool| {
            if high {
                (old & 0xFFFF_FFFF) | (value << 32)
            } else {
                (old & !0xFFFF_FFFF) | (value & 0xFFFF_FFFF)
            }
        };
        match (offset, size) {
            (0x18, 2) => queue.set_size(value as u16),
            (0x1A, 2) => self.regs.queue_vectors[select] = vector,
            (0x1C, 2) => {
                if value as u16 == 1
                    && let Err(error) = queue.set_ready(true)
                {
                    self.fail(format!("queue {select}: {error}"), ctx);
                }
            }
            (0x20, 8) => queue.set_desc_table(value),
            (0x20 | 0x24, 4) => queue.set_desc_table(set_half(queue.desc_table(), offset == 0x24)),
            (0x28, 8) => queue.set_avail_ring(value),
            (0x28 | 0x2C, 4) => queue.set_avail_ring(set_half(queue.avail_ring(), offset == 0x2C)),
            (0x30, 8) => queue.set_used_ring(value),
            (0x30 | 0x34, 4) => queue.set_used_ring(set_half(queue.used_ring(), offset == 0x34)),
            _ => {}
        }
    }

    fn write_status(&mut self, value: u8, ctx: &mut DeviceContext) {
        if value == 0 {
            self.reset(ctx);
            return;
        }
        let old = self.regs.status;
        // NEEDS_RESET is the device's bit; the driver cannot set or clear it.
        let mut new = (value & !STATUS_NEEDS_RESET) | (old & STATUS_NEEDS_RESET);
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let accepted = self.regs.driver_features;
            if accepted & !self.offered_features() != 0 || accepted & F_VERSION_1 == 0 {
                // The driver reads FEATURES_OK back and gives up (§3.1.1).
                new &= !STATUS_FEATURES_OK;
            } else {
                for queue in &mut self.queues {
                    queue.set_event_idx(accepted & F_EVENT_IDX != 0);
                }
            }
        }
        self.regs.status = new;
        if new & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            if new & STATUS_FEATURES_OK == 0 {
                self.fail("the driver set DRIVER_OK without FEATURES_OK".into(), ctx);
            } else {
                self.device.activate(self.regs.driver_features);
            }
        }
    }

    /// The enabled queues with backend work ([`VirtioDevice::backend_ready`]), while the
    /// driver is running and the device does not need a reset.
    fn backend_work(&self) -> u64 {
        let live = self.regs.status & (STATUS_DRIVER_OK | STATUS_NEEDS_RESET) == STATUS_DRIVER_OK;
        if !live {
            return 0;
        }
        let ready = self
            .queues
            .iter()
            .enumerate()
            .filter(|(_, q)| q.ready())
            .fold(0u64, |bits, (i, _)| bits | 1 << i);
        self.device.backend_ready() & ready
    }

    /// A notify register write: queue `index` has new requests.
    fn notify(&mut self, index: u64) {
        let live = self.regs.status & (STATUS_DRIVER_OK | STATUS_NEEDS_RESET) == STATUS_DRIVER_OK;
        if live
            && let Some(queue) = usize::try_from(index).ok().and_then(|i| self.queues.get(i))
            && queue.ready()
        {
            self.notified |= 1 << index;
        }
    }
}

/// The body of a virtio PCI capability after its id and next pointer: `cap_len`,
/// `cfg_type`, BAR 0, id 0, padding, offset and length.
fn virtio_cap(cap_len: u8, kind: u8, offset: u32, len: u32) -> [u8; 14] {
    let mut body = [0u8; 14];
    body[0] = cap_len;
    body[1] = kind;
    body[6..10].copy_from_slice(&offset.to_le_bytes());
    body[10..14].copy_from_slice(&len.to_le_bytes());
    body
}

impl<D: VirtioDevice> PciDevice for VirtioPci<D> {
    fn name(&self) -> &'static str {
        self.device.name()
    }

    fn config(&self) -> &PciConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfigSpace {
        &mut self.config
    }

    fn read_bar(&mut self, bar: u8, offset: u64, size: u8, ctx: &mut DeviceContext) -> u64 {
        if bar != 0 {
            return 0;
        }
        let size = size.min(8);
        match offset {
            o if o < COMMON_CFG + COMMON_CFG_LEN => self.read_common(o - COMMON_CFG, size),
            ISR_CFG => {
                // Reading the ISR acknowledges it and deasserts INTx (§4.1.4.5).
                self.config.set_intx(false, ctx);
                u64::from(core::mem::take(&mut self.regs.isr))
            }
            o if (DEVICE_CFG..DEVICE_CFG + DEVICE_CFG_LEN).contains(&o) => {
                let mut data = [0u8; 8];
                self.device
                    .read_config(o - DEVICE_CFG, &mut data[..usize::from(size)]);
                u64::from_le_bytes(data)
            }
            _ => 0,
        }
    }

    fn write_bar(&mut self, bar: u8, offset: u64, size: u8, value: u64, ctx: &mut DeviceContext) {
        if bar != 0 {
            return;
        }
        let size = size.min(8);
        match offset {
            o if o < COMMON_CFG + COMMON_CFG_LEN => self.write_common(o, size, value, ctx),
            o if (DEVICE_CFG..DEVICE_CFG + DEVICE_CFG_LEN).contains(&o) => {
                let data = value.to_le_bytes();
                self.device
                    .write_config(o - DEVICE_CFG, &data[..usize::from(size)]);
            }
            o if o >= NOTIFY_CFG
                && o < NOTIFY_CFG + MAX_QUEUES as u64 * u64::from(NOTIFY_MULTIPLIER) =>
            {
                self.notify((o - NOTIFY_CFG) / u64::from(NOTIFY_MULTIPLIER));
            }
            _ => {}
        }
    }

    fn wants_service(&self) -> bool {
        self.notified != 0 || self.backend_work() != 0
    }

    fn service(&mut self, memory: &GuestMemory, ctx: &mut DeviceContext) {
        let mut pending = core::mem::take(&mut self.notified) | self.backend_work();
        while pending != 0 {
            let index = pending.trailing_zeros() as usize;
            pending &= pending - 1;
            if self.regs.status & STATUS_NEEDS_RESET != 0 {
                return;
            }
            let Some(queue) = self.queues.get_mut(index) else {
                continue;
            };
            let outcome = self
                .device
                .process_queue(index as u16, queue, memory)
                .and_then(|used| Ok(used && queue.should_notify(memory)?));
            match outcome {
                Ok(true) => self.signal(self.regs.queue_vectors[index], ISR_QUEUE, ctx),
                Ok(false) => {}
                Err(fault) => self.fail(format!("queue {index}: {fault}"), ctx),
            }
        }
    }

    fn save_state(&self) -> Vec<u8> {
        encode_state(&VirtioPciState {
            regs: self.regs.clone(),
            queues: self.queues.iter().map(SplitQueue::state).collect(),
            device: self.device.save_state(),
        })
    }

    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DeviceStateError> {
        let name = self.device.name();
        let state: VirtioPciState = decode_state(name, bytes)?;
        let invalid = |field, value| {
            DeviceStateError::Invalid(StateError::Invalid {
                device: name,
                field,
                value,
            })
        };
        let r = &state.regs;
        if state.queues.len() != self.queues.len() {
            return Err(invalid("queues (count)", state.queues.len() as u64));
        }
        if r.queue_vectors.len() != self.queues.len() {
            return Err(invalid(
                "queue_vectors (count)",
                r.queue_vectors.len() as u64,
            ));
        }
        let vectors = self.queues.len();
        let valid_vector = |v: u16| v == NO_VECTOR || usize::from(v) <= vectors;
        if let Some(&v) = r.queue_vectors.iter().find(|&&v| !valid_vector(v)) {
            return Err(invalid("queue_vectors", u64::from(v)));
        }
        if !valid_vector(r.msix_config) {
            return Err(invalid("msix_config", u64::from(r.msix_config)));
        }
        if r.driver_features & !self.offered_features() != 0 {
            return Err(invalid("driver_features", r.driver_features));
        }
        if r.isr & !(ISR_QUEUE | ISR_CONFIG) != 0 {
            return Err(invalid("isr", u64::from(r.isr)));
        }
        let mut queues = self.queues.clone();
        for (i, (queue, saved)) in queues.iter_mut().zip(&state.queues).enumerate() {
            if queue.restore(saved).is_err() {
                return Err(invalid("queues (entry)", i as u64));
            }
        }
        self.device.restore_state(&state.device)?;
        self.queues = queues;
        self.regs = state.regs;
        self.notified = 0;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
