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
    MSIX_TABLE, NOTIFY_CFG, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET,
};
use crate::virtio::queue::tests::{Driver, Rng, memory};

/// Interrupt vectors the test driver programs: config change, RX queue, TX queue.
const CONFIG_VECTOR: u8 = 0x40;
pub(crate) const RX_VECTOR: u8 = 0x41;
const TX_VECTOR: u8 = 0x42;
/// Where the drivers' rings and buffers lie in guest RAM.
const RX_RINGS: u64 = 0x1000;
const TX_RINGS: u64 = 0x4000;
pub(crate) const RX_BUFS: u64 = 0x10_0000;
const TX_BUFS: u64 = 0x20_0000;
/// The size the test driver gives each queue.
const DRIVER_QUEUE_SIZE: u16 = 16;
pub(crate) const MAC: [u8; 6] = [0x02, 0x4B, 0x45, 0x45, 0x4C, 0x01];
/// What Linux's virtio_net accepts here.
pub(crate) const LINUX_NET_FEATURES: u64 =
    F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC | F_MAC | F_STATUS | F_MRG_RXBUF;

/// The network side of the NIC: frames for the guest, frames from it, and how many more
/// the network takes (`None`: any).
#[derive(Default)]
pub(crate) struct Wire {
    pub(crate) to_guest: VecDeque<Vec<u8>>,
    from_guest: Vec<Vec<u8>>,
    room: Option<usize>,
}

/// A [`NetBackend`] the test holds the other end of.
#[derive(Clone, Default)]
pub(crate) struct MockNet(pub(crate) Arc<Mutex<Wire>>);

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
pub(crate) fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..len.saturating_sub(14)).map(|i| seed.wrapping_add(i as u8)));
    f.truncate(len);
    f
}

/// A test PC with one NIC, its guest RAM, the guest side of both queues and the wire.
pub(crate) struct NetRig {
    pub(crate) d: Devices,
    pub(crate) mem: GuestMemory,
    devfn: u8,
    pub(crate) rx: Driver,
    tx: Driver,
    pub(crate) wire: MockNet,
}

impl NetRig {
    /// The NIC at 00:01.0, BAR 0 at [`BAR`], memory decoding and bus mastering on; the
    /// driver has not touched it.
    pub(crate) fn new() -> NetRig {
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
    pub(crate) fn bring_up(&mut self, features: u64) {
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

#[test]
fn a_frame_split_across_descriptors_reaches_the_network_and_interrupts_tx() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    let f = frame([0xFF; 6], MAC, 100, 7);
    // The header in two pieces, then the frame in two: any split is allowed.
    let bytes: Vec<u8> = [vec![0u8; HEADER_LEN], f.clone()].concat();
    r.mem.write(TX_BUFS, &bytes).unwrap();
    let at = |off: usize| TX_BUFS + off as u64;
    let head = r.send(&[
        (at(0), 5, false),
        (at(5), 7 + 20, false),
        (at(32), (bytes.len() - 32) as u32, false),
    ]);
    r.kick(TX_QUEUE);
    assert_eq!(r.sent_by_guest(), [f]);
    assert_eq!(r.tx.used_idx(&r.mem), 1);
    assert_eq!(r.tx.used_elem(&r.mem, 0), (u32::from(head), 0));
    assert_eq!(r.take_interrupts(), [TX_VECTOR]);
    let stats = r.stats();
    assert_eq!((stats.tx_frames, stats.tx_bytes), (1, 100));
    assert_eq!((stats.tx_bad, stats.tx_dropped), (0, 0));
}

#[test]
fn runts_oversize_short_headers_and_writable_buffers_are_counted_and_returned() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    let hdr = HEADER_LEN as u32;
    let bad: [&[(u64, u32, bool)]; 5] = [
        // A runt: 13 bytes of frame.
        &[(TX_BUFS, hdr + 13, false)],
        // Oversize: 1519 bytes of frame.
        &[(TX_BUFS, hdr + MAX_FRAME as u32 + 1, false)],
        // Only part of a header.
        &[(TX_BUFS, 8, false)],
        // A device-writable buffer in a transmit chain.
        &[(TX_BUFS, hdr, false), (TX_BUFS + 0x100, 60, true)],
        // Nothing at all.
        &[(TX_BUFS, 0, false)],
    ];
    for chain in bad {
        r.send(chain);
    }
    // The largest and smallest good frames still go through.
    r.mem.write(TX_BUFS + 0x1000, &[0; HEADER_LEN]).unwrap();
    r.send(&[(TX_BUFS + 0x1000, hdr + MAX_FRAME as u32, false)]);
    r.send(&[(TX_BUFS + 0x1000, hdr + MIN_FRAME as u32, false)]);
    r.kick(TX_QUEUE);
    assert_eq!(r.tx.used_idx(&r.mem), 7, "every chain went back");
    for i in 0..7 {
        assert_eq!(r.tx.used_elem(&r.mem, i).1, 0);
    }
    let sent = r.sent_by_guest();
    assert_eq!(
        sent.iter().map(Vec::len).collect::<Vec<_>>(),
        [MAX_FRAME, MIN_FRAME]
    );
    let stats = r.stats();
    assert_eq!(stats.tx_bad, 5);
    assert_eq!(stats.tx_frames, 2);
    assert_eq!(
        r.status() & STATUS_NEEDS_RESET,
        0,
        "bad frames are not faults"
    );
}

#[test]
fn frames_the_network_refuses_are_counted_as_dropped() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    r.wire.0.lock().unwrap().room = Some(1);
    let f = frame([0xFF; 6], MAC, 60, 0);
    r.send_frame(&f);
    r.send_frame(&f);
    r.send_frame(&f);
    r.kick(TX_QUEUE);
    assert_eq!(r.tx.used_idx(&r.mem), 3);
    let stats = r.stats();
    assert_eq!((stats.tx_frames, stats.tx_dropped), (1, 2));
    assert_eq!(r.sent_by_guest().len(), 1);
}

#[test]
fn a_looping_tx_chain_is_a_device_fault_not_a_hang() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    // Descriptor 0 -> 1 -> 0 ...
    r.tx.write_desc(&r.mem, 0, TX_BUFS, 64, 1, 1);
    r.tx.write_desc(&r.mem, 1, TX_BUFS, 64, 1, 0);
    r.tx.publish(&r.mem, 0);
    r.kick(TX_QUEUE);
    assert_ne!(r.status() & STATUS_NEEDS_RESET, 0);
    assert!(r.device().error().unwrap().contains("queue 1"));
    assert_eq!(r.take_interrupts(), [CONFIG_VECTOR]);
    assert!(r.sent_by_guest().is_empty());
}

#[test]
fn received_frames_fill_single_buffers_with_a_header_and_interrupt_rx() {
    let mut r = NetRig::new();
    // Without MRG_RXBUF: one chain per frame, num_buffers 1.
    r.bring_up(LINUX_NET_FEATURES & !F_MRG_RXBUF);
    let heads: Vec<u16> = (0..3).map(|n| r.post_rx(n, 1526)).collect();
    r.kick(RX_QUEUE);
    assert_eq!(r.rx.used_idx(&r.mem), 0, "nothing to deliver yet");
    let a = frame(MAC, [2, 0, 0, 0, 0, 9], 60, 1);
    let b = frame(MAC, [2, 0, 0, 0, 0, 9], 1514, 2);
    r.queue_for_guest(a.clone());
    r.queue_for_guest(b.clone());
    r.service();
    assert_eq!(r.waiting_for_guest(), 0);
    assert_eq!(r.rx.used_idx(&r.mem), 2);
    for (i, f) in [&a, &b].into_iter().enumerate() {
        let len = HEADER_LEN + f.len();
        assert_eq!(
            r.rx.used_elem(&r.mem, i as u16),
            (u32::from(heads[i]), len as u32)
        );
        let got = r.guest_bytes(RX_BUFS + i as u64 * 0x1000, len);
        let mut header = [0u8; HEADER_LEN];
        header[10] = 1;
        assert_eq!(got[..HEADER_LEN], header, "num_buffers 1, no offload flags");
        assert_eq!(&got[HEADER_LEN..], &f[..]);
    }
    assert_eq!(r.take_interrupts(), [RX_VECTOR]);
    let stats = r.stats();
    assert_eq!((stats.rx_frames, stats.rx_bytes), (2, 60 + 1514));
}

#[test]
fn without_mrg_rxbuf_a_frame_too_big_for_a_chain_is_dropped_and_the_chain_kept() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES & !F_MRG_RXBUF);
    let head = r.post_rx(0, 200);
    r.queue_for_guest(frame(MAC, [2; 6], 1000, 0));
    let small = frame(MAC, [2; 6], 100, 3);
    r.queue_for_guest(small.clone());
    r.service();
    assert_eq!(r.waiting_for_guest(), 0);
    assert_eq!(r.stats().rx_dropped, 1);
    assert_eq!(r.stats().rx_frames, 1);
    // The small frame got the chain the big one could not use.
    assert_eq!(r.rx.used_idx(&r.mem), 1);
    assert_eq!(r.rx.used_elem(&r.mem, 0), (u32::from(head), 112));
    assert_eq!(r.guest_bytes(RX_BUFS + 12, 100), small);
}

#[test]
fn with_mrg_rxbuf_a_frame_spreads_over_several_chains() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    // Four chains of 500 bytes: a 1514-byte frame + header (1526 bytes) takes all four.
    let heads: Vec<u16> = (0..4).map(|n| r.post_rx(n, 500)).collect();
    let f = frame(MAC, [2; 6], 1514, 5);
    r.queue_for_guest(f.clone());
    r.service();
    assert_eq!(r.rx.used_idx(&r.mem), 4);
    let lens: Vec<(u32, u32)> = (0..4).map(|i| r.rx.used_elem(&r.mem, i)).collect();
    assert_eq!(
        lens,
        [
            (u32::from(heads[0]), 500),
            (u32::from(heads[1]), 500),
            (u32::from(heads[2]), 500),
            (u32::from(heads[3]), 26)
        ]
    );
    let mut got = Vec::new();
    for (n, (_, len)) in lens.iter().enumerate() {
        got.extend(r.guest_bytes(RX_BUFS + n as u64 * 0x1000, *len as usize));
    }
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 4, "num_buffers");
    assert_eq!(&got[HEADER_LEN..], &f[..]);
    assert_eq!(r.take_interrupts(), [RX_VECTOR]);
    assert_eq!(r.stats().rx_frames, 1);
}

#[test]
fn a_frame_waits_while_the_guest_has_no_room_and_arrives_once_it_posts_some() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    // 2 x 500 bytes posted: not enough for a 1514-byte frame yet.
    r.post_rx(0, 500);
    r.post_rx(1, 500);
    let f = frame(MAC, [2; 6], 1514, 9);
    r.queue_for_guest(f.clone());
    r.service();
    assert_eq!(r.waiting_for_guest(), 1, "the frame stays first in line");
    assert_eq!(r.rx.used_idx(&r.mem), 0, "no chain used");
    assert!(r.take_interrupts().is_empty());
    assert_eq!(r.stats().rx_dropped, 0);
    // Starved: no polling until the driver posts buffers and notifies; with EVENT_IDX
    // the device asked for that notify (avail_event at the next entry).
    assert!(!r.d.device_work_waiting());
    assert_eq!(r.rx.avail_event(&r.mem), 2);
    r.post_rx(2, 1000);
    r.kick(RX_QUEUE);
    assert_eq!(r.waiting_for_guest(), 0);
    assert_eq!(
        r.rx.used_idx(&r.mem),
        3,
        "the two chains taken back, and the new one"
    );
    assert_eq!(r.rx.used_elem(&r.mem, 2).1, 1526 - 1000);
    assert_eq!(r.take_interrupts(), [RX_VECTOR]);
    // No buffers at all: the frame waits too.
    r.queue_for_guest(frame(MAC, [2; 6], 60, 0));
    r.service();
    assert_eq!(r.waiting_for_guest(), 1);
    r.post_rx(3, 1526);
    r.kick(RX_QUEUE);
    assert_eq!(r.waiting_for_guest(), 0);
    assert_eq!(r.stats().rx_frames, 2);
}

#[test]
fn a_frame_larger_than_the_whole_ring_is_dropped_not_stuck() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    // Every entry of the 16-entry ring posted with 64 bytes: 1024 bytes in all.
    for n in 0..u64::from(DRIVER_QUEUE_SIZE) {
        r.post_rx(n, 64);
    }
    r.queue_for_guest(frame(MAC, [2; 6], 1514, 0));
    r.queue_for_guest(frame(MAC, [2; 6], 60, 0));
    r.service();
    assert_eq!(r.waiting_for_guest(), 0);
    assert_eq!(r.stats().rx_dropped, 1);
    assert_eq!(r.stats().rx_frames, 1);
    // 72 bytes of header and frame: two chains.
    assert_eq!(r.rx.used_idx(&r.mem), 2);
}

#[test]
fn frames_wait_for_driver_ok_and_a_reset_forgets_the_driver() {
    let mut r = NetRig::new();
    r.queue_for_guest(frame(MAC, [2; 6], 60, 0));
    assert!(!r.d.device_work_waiting(), "no driver yet");
    r.bring_up(LINUX_NET_FEATURES);
    assert!(r.d.device_work_waiting(), "a frame for a running driver");
    r.post_rx(0, 1526);
    r.service();
    assert_eq!(r.stats().rx_frames, 1);
    r.queue_for_guest(frame(MAC, [2; 6], 60, 0));
    r.set_status(0);
    assert_eq!(r.status(), 0);
    assert!(!r.d.device_work_waiting(), "reset: no driver to deliver to");
    assert_eq!(r.device().driver_features(), 0);
    // A new probe negotiates again and receives.
    r.rx = Driver::new(DRIVER_QUEUE_SIZE, RX_RINGS);
    r.tx = Driver::new(DRIVER_QUEUE_SIZE, TX_RINGS);
    r.bring_up(LINUX_NET_FEATURES & !F_MRG_RXBUF);
    r.post_rx(0, 1526);
    r.service();
    assert_eq!(r.waiting_for_guest(), 0);
    assert_eq!(r.rx.used_idx(&r.mem), 1);
}

#[test]
fn rx_without_msix_raises_the_isr_and_intx() {
    let mut r = NetRig::new();
    r.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    r.set_driver_features(F_VERSION_1 | F_MAC);
    r.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    r.setup_queue(RX_QUEUE);
    r.setup_queue(TX_QUEUE);
    r.set_status(0xF);
    r.post_rx(0, 1526);
    r.queue_for_guest(frame(MAC, [2; 6], 60, 0));
    r.service();
    assert_eq!(r.rx.used_idx(&r.mem), 1);
    assert!(crate::devices::pci::PciDevice::config(r.device()).intx_output());
    assert_eq!(r.read(0x2000, 1), 1, "ISR queue bit");
    assert!(!crate::devices::pci::PciDevice::config(r.device()).intx_output());
}

#[test]
fn save_and_restore_keep_the_negotiated_features_and_counters() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    r.send_frame(&frame([0xFF; 6], MAC, 60, 0));
    r.kick(TX_QUEUE);
    let saved = r.device().device().save_state();

    let mut fresh = VirtioNet::new(Box::new(MockNet::default()), MAC);
    fresh.restore_state(&saved).unwrap();
    assert_eq!(fresh.stats(), r.stats());
    assert_eq!(fresh.features, LINUX_NET_FEATURES);
    assert!(fresh.active);
    // It receives at once with MRG_RXBUF in effect.
    let wire = MockNet::default();
    let mut restored = VirtioNet::new(Box::new(wire.clone()), MAC);
    restored.restore_state(&saved).unwrap();
    wire.0
        .lock()
        .unwrap()
        .to_guest
        .push_back(frame(MAC, [2; 6], 60, 0));
    assert_eq!(restored.backend_ready(), 1);

    // Another MAC, or features never offered, are refused.
    let mut other = VirtioNet::new(Box::new(MockNet::default()), [2, 0, 0, 0, 0, 1]);
    assert!(other.restore_state(&saved).is_err());
    let bogus = encode_state(&NetState {
        mac: MAC,
        features: 1 << 0,
        active: true,
        stats: NetStats::default(),
    });
    assert!(fresh.restore_state(&bogus).is_err());
    assert!(fresh.restore_state(b"junk").is_err());
}

#[test]
fn the_whole_transport_round_trips_and_keeps_receiving() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    r.post_rx(0, 1526);
    r.post_rx(1, 1526);
    r.queue_for_guest(frame(MAC, [2; 6], 60, 1));
    r.service();
    let saved = crate::devices::pci::PciDevice::save_state(r.device());
    let wire = MockNet::default();
    let mut copy = net_device(Box::new(wire.clone()), MAC);
    crate::devices::pci::PciDevice::restore_state(&mut copy, &saved).unwrap();
    assert_eq!(copy.driver_features(), LINUX_NET_FEATURES);
    assert_eq!(copy.device().stats().rx_frames, 1);
    wire.0
        .lock()
        .unwrap()
        .to_guest
        .push_back(frame(MAC, [2; 6], 70, 2));
    assert!(crate::devices::pci::PciDevice::wants_service(&copy));
}

/// An input for `fuzzing::net_queue` that is mostly plausible: rings at fixed aligned
/// places, descriptors over buffers of frame-like lengths, indices near the valid range.
fn plausible_net_input(rng: &mut Rng) -> Vec<u8> {
    let mut input = vec![0u8; 32 + 0x8000];
    let size = 1u16 << rng.below(5);
    let (desc, avail, used) = (0x1000u64, 0x2000u64, 0x3000u64);
    input[0..8].copy_from_slice(&desc.to_le_bytes());
    input[8..16].copy_from_slice(&avail.to_le_bytes());
    input[16..24].copy_from_slice(&used.to_le_bytes());
    // Flags: EVENT_IDX, TX or RX, MRG_RXBUF.
    input[24] = rng.below(8) as u8;
    input[26..28].copy_from_slice(&size.to_le_bytes());
    for len in &mut input[28..32] {
        // Frame lengths up to 2040 bytes, mostly real ones.
        *len = [8u8, 64, 189, 190, 255][rng.below(5) as usize];
    }
    let ram = &mut input[32..];
    let mut put = |at: u64, bytes: &[u8]| {
        ram[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    };
    let n = u64::from(size);
    for i in 0..n {
        let addr = 0x4000 + 0x800 * rng.below(8);
        let len = [0u32, 5, 12, 26, 72, 512, 1526, 1600][rng.below(8) as usize];
        // NEXT mostly off, WRITE as often as not.
        let flags = u16::from(rng.below(4) == 0) | (rng.below(2) as u16) << 1;
        let next = rng.below(n + 1) as u16;
        let at = desc + 16 * i;
        put(at, &addr.to_le_bytes());
        put(at + 8, &len.to_le_bytes());
        put(at + 12, &flags.to_le_bytes());
        put(at + 14, &next.to_le_bytes());
    }
    let idx = rng.below(n + 1) as u16;
    put(avail + 2, &idx.to_le_bytes());
    for i in 0..n {
        put(avail + 4 + 2 * i, &(rng.below(n) as u16).to_le_bytes());
    }
    input
}

#[test]
fn pseudo_random_queues_never_panic_the_nic() {
    let mem = memory();
    let mut rng = Rng(0x0BAD_F00D_DEAD_BEEF);
    let mut input = vec![0u8; 4096];
    for _ in 0..100 {
        for byte in &mut input {
            *byte = rng.next() as u8;
        }
        let len = rng.below(input.len() as u64) as usize;
        crate::virtio::fuzzing::net_queue(&mem, &input[..len]);
    }
    let mut used = 0u64;
    for _ in 0..400 {
        let input = plausible_net_input(&mut rng);
        used += u64::from(crate::virtio::fuzzing::net_queue(&mem, &input));
    }
    // The plausible inputs reach the device, not only the queue's refusals.
    assert!(used > 200, "only {used} chains completed");
}

#[test]
fn a_receive_chain_with_a_readable_buffer_puts_the_device_in_needs_reset() {
    let mut r = NetRig::new();
    r.bring_up(LINUX_NET_FEATURES);
    r.rx.add_chain(&r.mem, &[(RX_BUFS, 1526, false)]);
    r.queue_for_guest(frame(MAC, [2; 6], 60, 0));
    r.service();
    assert_ne!(r.status() & STATUS_NEEDS_RESET, 0);
    assert!(r.device().error().unwrap().contains("device-readable"));
    assert_eq!(r.take_interrupts(), [CONFIG_VECTOR]);
    // The frame was not consumed, and a broken device is not polled again.
    assert_eq!(r.waiting_for_guest(), 1);
    assert!(!r.d.device_work_waiting());
}
