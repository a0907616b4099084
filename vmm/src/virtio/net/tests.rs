//! virtio-net end to end: a NIC on a test PC, driven through its BAR the way Linux's
//! `virtio_net` does (two queues, MSI-X), over a backend of in-memory frame queues.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::*;
use crate::devices::Devices;
use crate::devices::interrupts::InterruptSource;
use crate::devices::pci::config::{COMMAND_BUS_MASTER, COMMAND_MEMORY, reg};
use crate::virtio::pci::tests::{BAR, cfg_read, cfg_write};
use crate::virtio::pci::{
    MSIX_TABLE, NOTIFY_CFG, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK,
    STATUS_FEATURES_OK, STATUS_NEEDS_RESET,
};
use crate::virtio::queue::tests::{Driver, memory};

/// Interrupt vectors the test driver programs: config change, RX queue, TX queue.
const CONFIG_VECTOR: u8 = 0x40;
const RX_VECTOR: u8 = 0x41;
const TX_VECTOR: u8 = 0x42;
/// Where the drivers' rings and buffers lie in guest RAM.
const RX_RINGS: u64 = 0x1000;
const TX_RINGS: u64 = 0x4000;
const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x20_0000;
/// The size the test driver gives each queue.
const DRIVER_QUEUE_SIZE: u16 = 16;
const MAC: [u8; 6] = [0x02, 0x4B, 0x45, 0x45, 0x4C, 0x01];
/// What Linux's virtio_net accepts here.
const LINUX_NET_FEATURES: u64 =
    F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC | F_MAC | F_STATUS | F_MRG_RXBUF;

/// The network side of the NIC: frames for the guest, frames from it, and how many more
/// the network takes (`None`: any).
#[derive(Default)]
struct Wire {
    to_guest: VecDeque<Vec<u8>>,
    from_guest: Vec<Vec<u8>>,
    room: Option<usize>,
}

/// A [`NetBackend`] the test holds the other end of.
#[derive(Clone, Default)]
struct MockNet(Arc<Mutex<Wire>>);

impl NetBackend for MockNet {
    fn transmit(&mut self, frame: &[u8]) -> bool {
        let mut wire = self.0.lock().unwrap();
        match wire.room {
            Some(0) => false,
            room => {
                wire.room = room.map(|n| n - 1);
                wire.from_guest.push(frame.to_vec());
                true
            }
        }
    }

    fn has_rx(&self) -> bool {
        !self.0.lock().unwrap().to_guest.is_empty()
    }

    fn receive(&mut self, deliver: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let mut wire = self.0.lock().unwrap();
        let Some(frame) = wire.to_guest.front() else {
            return false;
        };
        if deliver(frame) {
            wire.to_guest.pop_front();
        }
        true
    }
}

/// A frame of `len` bytes from `src` to `dst`, payload bytes numbered from `seed`.
fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..len.saturating_sub(14)).map(|i| seed.wrapping_add(i as u8)));
    f.truncate(len);
    f
}

/// A test PC with one NIC, its guest RAM, the guest side of both queues and the wire.
struct NetRig {
    d: Devices,
    mem: GuestMemory,
    devfn: u8,
    rx: Driver,
    tx: Driver,
    wire: MockNet,
}

impl NetRig {
    /// The NIC at 00:01.0, BAR 0 at [`BAR`], memory decoding and bus mastering on; the
    /// driver has not touched it.
    fn new() -> NetRig {
        let wire = MockNet::default();
        let mut d = Devices::pc_for_tests();
        let slot = d
            .add_pci_device(net_device(Box::new(wire.clone()), MAC))
            .unwrap();
        let devfn = slot << 3;
        cfg_write(&mut d, devfn, reg::BAR0, 4, BAR as u32);
        cfg_write(&mut d, devfn, reg::BAR0 + 4, 4, 0);
        let command = COMMAND_MEMORY | COMMAND_BUS_MASTER;
        cfg_write(&mut d, devfn, reg::COMMAND, 2, u32::from(command));
        NetRig {
            d,
            mem: memory(),
            devfn,
            rx: Driver::new(DRIVER_QUEUE_SIZE, RX_RINGS),
            tx: Driver::new(DRIVER_QUEUE_SIZE, TX_RINGS),
            wire,
        }
    }

    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.d.read_mmio(BAR + offset, size)
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.d.write_mmio(BAR + offset, size, value);
    }

    fn status(&mut self) -> u8 {
        self.read(0x14, 1) as u8
    }

    fn set_status(&mut self, status: u8) {
        self.write(0x14, 1, u64::from(status));
    }

    fn device_features(&mut self) -> u64 {
        self.write(0x00, 4, 0);
        let low = self.read(0x04, 4);
        self.write(0x00, 4, 1);
        low | self.read(0x04, 4) << 32
    }

    fn set_driver_features(&mut self, features: u64) {
        self.write(0x08, 4, 0);
        self.write(0x0C, 4, features & 0xFFFF_FFFF);
        self.write(0x08, 4, 1);
        self.write(0x0C, 4, features >> 32);
    }

    /// MSI-X on; table entries 0..=2 to the BSP with the test vectors.
    fn enable_msix(&mut self) {
        let mut cap = cfg_read(&mut self.d, self.devfn, reg::CAPABILITIES, 1) as u8;
        while cfg_read(&mut self.d, self.devfn, cap, 1) != 0x11 {
            cap = cfg_read(&mut self.d, self.devfn, cap + 1, 1) as u8;
        }
        cfg_write(&mut self.d, self.devfn, cap + 2, 2, 0x8000);
        for (entry, vector) in [(0u64, CONFIG_VECTOR), (1, RX_VECTOR), (2, TX_VECTOR)] {
            let at = u64::from(MSIX_TABLE) + 16 * entry;
            self.write(at, 4, 0xFEE0_0000);
            self.write(at + 4, 4, 0);
            self.write(at + 8, 4, u64::from(vector));
            self.write(at + 12, 4, 0);
        }
    }

    /// Programs queue `index` from `driver`'s rings with MSI-X entry `index + 1`.
    fn setup_queue(&mut self, index: u16) {
        let driver = if index == RX_QUEUE {
            &self.rx
        } else {
            &self.tx
        };
        let (size, desc, avail, used) = (driver.size, driver.desc, driver.avail, driver.used);
        self.write(0x16, 2, u64::from(index));
        assert_eq!(self.read(0x18, 2), u64::from(QUEUE_SIZE));
        self.write(0x18, 2, u64::from(size));
        self.write(0x1A, 2, u64::from(index) + 1);
        for (at, value) in [(0x20, desc), (0x28, avail), (0x30, used)] {
            self.write(at, 8, value);
        }
        self.write(0x1C, 2, 1);
    }

    /// Linux's probe with `features`: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK,
    /// MSI-X, both queues, DRIVER_OK.
    fn bring_up(&mut self, features: u64) {
        self.set_status(0);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.set_driver_features(features);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        assert_ne!(self.status() & STATUS_FEATURES_OK, 0, "features accepted");
        self.enable_msix();
        self.write(0x10, 2, 0);
        self.setup_queue(RX_QUEUE);
        self.setup_queue(TX_QUEUE);
        self.set_status(0xF);
        assert_eq!(self.status() & STATUS_NEEDS_RESET, 0);
    }

    /// Writes queue `index`'s notify register and runs the VM loop's service.
    fn kick(&mut self, index: u16) {
        self.write(NOTIFY_CFG + 4 * u64::from(index), 2, u64::from(index));
        self.service();
    }

    /// What the VM loop does between exits (`Vm::poll_io` without a VM).
    fn service(&mut self) {
        if self.d.device_work_waiting() {
            self.d.service_io(&self.mem);
        }
    }

    /// Every interrupt vector waiting at the BSP, acknowledged and ended, in order.
    fn take_interrupts(&mut self) -> Vec<u8> {
        let mut vectors = Vec::new();
        while let Some(InterruptSource::Lapic(_)) = self.d.pending_interrupt(0) {
            let Some(vector) = self.d.acknowledge_interrupt(0) else {
                break;
            };
            vectors.push(vector);
            // EOI through the xAPIC's MMIO page.
            self.d.write_mmio(0xFEE0_00B0, 4, 0);
        }
        vectors
    }

    fn device(&self) -> &VirtioNetPci {
        self.d.pci_device(self.devfn >> 3, 0).unwrap()
    }

    fn stats(&self) -> NetStats {
        self.device().device().stats()
    }

    /// Publishes a TX chain: the buffers as (address, length, device-writable).
    fn send(&mut self, buffers: &[(u64, u32, bool)]) -> u16 {
        self.tx.add_chain(&self.mem, buffers)
    }

    /// Writes `frame` behind a zero header at [`TX_BUFS`] and publishes it in one buffer.
    fn send_frame(&mut self, frame: &[u8]) -> u16 {
        self.mem.write(TX_BUFS, &[0; HEADER_LEN]).unwrap();
        self.mem.write(TX_BUFS + HEADER_LEN as u64, frame).unwrap();
        let len = (HEADER_LEN + frame.len()) as u32;
        self.send(&[(TX_BUFS, len, false)])
    }

    /// Posts RX chain `n` of one writable buffer of `len` bytes at `RX_BUFS + n * 4 KiB`.
    fn post_rx(&mut self, n: u64, len: u32) -> u16 {
        self.rx
            .add_chain(&self.mem, &[(RX_BUFS + n * 0x1000, len, true)])
    }

    fn guest_bytes(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.mem.read(gpa, &mut buf).unwrap();
        buf
    }

    fn queue_for_guest(&self, frame: Vec<u8>) {
        self.wire.0.lock().unwrap().to_guest.push_back(frame);
    }

    fn waiting_for_guest(&self) -> usize {
        self.wire.0.lock().unwrap().to_guest.len()
    }

    fn sent_by_guest(&self) -> Vec<Vec<u8>> {
        self.wire.0.lock().unwrap().from_guest.clone()
    }
}

#[test]
fn identity_config_and_features_are_what_linux_probes_for() {
    let mut r = NetRig::new();
    let f = r.devfn;
    assert_eq!(
        cfg_read(&mut r.d, f, 0, 4),
        0x1041_1AF4,
        "vendor, device 0x1041"
    );
    assert_eq!(cfg_read(&mut r.d, f, reg::REVISION, 4) >> 8, 0x02_0000);
    assert_eq!(r.read(0x12, 2), 2, "two queues");
    let features = r.device_features();
    assert_eq!(features, LINUX_NET_FEATURES);
    let mac: Vec<u8> = (0..6).map(|i| r.read(0x4000 + i, 1) as u8).collect();
    assert_eq!(mac, MAC);
    assert_eq!(r.read(0x4006, 2), u64::from(S_LINK_UP));
    assert_eq!(r.read(0x4008, 2), 0, "nothing past status");
    assert_eq!(r.device().device().mac(), MAC);
}
