//! The transport end to end: a virtio-blk function on a test PC, found through
//! configuration cycles on `0xCF8`/`0xCFC`, driven through its BAR on the MMIO bus the way
//! Linux's `virtio_pci_modern` does, its requests run by `Devices::service_io`.

use std::sync::{Arc, Mutex};

use super::*;
use crate::devices::Devices;
use crate::devices::interrupts::InterruptSource;
use crate::devices::pci::config::{COMMAND_BUS_MASTER, COMMAND_MEMORY, reg};
use crate::virtio::blk::{
    BlockBackend, BlockError, T_GET_ID, T_IN, T_OUT, VirtioBlock, block_device,
};
use crate::virtio::queue::tests::{Driver, memory};

/// Where the tests place BAR 0 (inside the PCI hole).
pub(crate) const BAR: u64 = 0xE000_0000;
/// Guest RAM the test driver uses for rings and requests.
pub(crate) const RINGS: u64 = 0x1000;
pub(crate) const HEADER: u64 = 0x10_0000;
pub(crate) const DATA: u64 = 0x20_0000;
pub(crate) const STATUS: u64 = 0x30_0000;
/// The size the test driver gives queue 0.
pub(crate) const DRIVER_QUEUE_SIZE: u16 = 16;
/// MSI-X vectors' interrupt vectors on the local APIC: config change, queue 0.
pub(crate) const CONFIG_VECTOR: u8 = 0x40;
pub(crate) const QUEUE_VECTOR: u8 = 0x41;

/// An in-memory disk whose bytes the test can inspect, and that can be told to fail.
#[derive(Clone, Default)]
pub(crate) struct MemDisk {
    pub(crate) bytes: Arc<Mutex<Vec<u8>>>,
    pub(crate) flushes: Arc<Mutex<u64>>,
    pub(crate) fail: Arc<Mutex<bool>>,
}

impl MemDisk {
    /// `sectors` sectors, byte `i` = `i / 512 + i % 7` (each sector recognizable).
    pub(crate) fn new(sectors: u64) -> MemDisk {
        let bytes = (0..sectors * 512)
            .map(|i| (i / 512 + i % 7) as u8)
            .collect();
        MemDisk {
            bytes: Arc::new(Mutex::new(bytes)),
            ..MemDisk::default()
        }
    }
}

impl BlockBackend for MemDisk {
    fn sectors(&self) -> u64 {
        self.bytes.lock().unwrap().len() as u64 / 512
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        if *self.fail.lock().unwrap() {
            return Err(BlockError("the test disk fails".into()));
        }
        let at = sector as usize * 512;
        buf.copy_from_slice(&self.bytes.lock().unwrap()[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        if *self.fail.lock().unwrap() {
            return Err(BlockError("the test disk fails".into()));
        }
        let at = sector as usize * 512;
        self.bytes.lock().unwrap()[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        *self.flushes.lock().unwrap() += 1;
        Ok(())
    }
}

fn address(devfn: u8, offset: u8) -> u32 {
    0x8000_0000 | u32::from(devfn) << 8 | u32::from(offset & 0xFC)
}

pub(crate) fn cfg_read(d: &mut Devices, devfn: u8, offset: u8, size: u8) -> u32 {
    d.write_port(0xCF8, 4, address(devfn, offset));
    d.read_port(0xCFC + u16::from(offset & 3), size)
}

pub(crate) fn cfg_write(d: &mut Devices, devfn: u8, offset: u8, size: u8, value: u32) {
    d.write_port(0xCF8, 4, address(devfn, offset));
    d.write_port(0xCFC + u16::from(offset & 3), size, value);
}

/// A test PC with one virtio-blk function, guest RAM and the guest side of its queue.
pub(crate) struct Rig {
    pub(crate) d: Devices,
    pub(crate) mem: GuestMemory,
    pub(crate) devfn: u8,
    pub(crate) drv: Driver,
    pub(crate) disk: MemDisk,
    pub(crate) bar: u64,
}

impl Rig {
    /// A 64-sector disk at 00:01.0, BAR 0 placed at [`BAR`] with memory decoding and bus
    /// mastering on (as firmware leaves it); the driver has not touched the device.
    pub(crate) fn new(read_only: bool) -> Rig {
        let disk = MemDisk::new(64);
        let mut d = Devices::pc_for_tests();
        let slot = d
            .add_pci_device(block_device(
                Box::new(disk.clone()),
                read_only,
                "keel-serial-0001",
            ))
            .unwrap();
        let devfn = slot << 3;
        cfg_write(&mut d, devfn, reg::BAR0, 4, BAR as u32);
        cfg_write(&mut d, devfn, reg::BAR0 + 4, 4, (BAR >> 32) as u32);
        cfg_write(
            &mut d,
            devfn,
            reg::COMMAND,
            2,
            u32::from(COMMAND_MEMORY | COMMAND_BUS_MASTER),
        );
        Rig {
            d,
            mem: memory(),
            devfn,
            drv: Driver::new(DRIVER_QUEUE_SIZE, RINGS),
            disk,
            bar: BAR,
        }
    }

    pub(crate) fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.d.read_mmio(self.bar + offset, size)
    }

    pub(crate) fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.d.write_mmio(self.bar + offset, size, value);
    }

    pub(crate) fn status(&mut self) -> u8 {
        self.read(0x14, 1) as u8
    }

    pub(crate) fn set_status(&mut self, status: u8) {
        self.write(0x14, 1, u64::from(status));
    }

    /// The device's 64 feature bits, read through the select register.
    pub(crate) fn device_features(&mut self) -> u64 {
        self.write(0x00, 4, 0);
        let low = self.read(0x04, 4);
        self.write(0x00, 4, 1);
        low | self.read(0x04, 4) << 32
    }

    pub(crate) fn set_driver_features(&mut self, features: u64) {
        self.write(0x08, 4, 0);
        self.write(0x0C, 4, features & 0xFFFF_FFFF);
        self.write(0x08, 4, 1);
        self.write(0x0C, 4, features >> 32);
    }

    /// Enables MSI-X and programs vector 0 (config) and 1 (queue 0) to the BSP.
    pub(crate) fn enable_msix(&mut self) {
        let mut cap = cfg_read(&mut self.d, self.devfn, reg::CAPABILITIES, 1) as u8;
        while cfg_read(&mut self.d, self.devfn, cap, 1) != 0x11 {
            cap = cfg_read(&mut self.d, self.devfn, cap + 1, 1) as u8;
        }
        cfg_write(&mut self.d, self.devfn, cap + 2, 2, 0x8000);
        for (v, vector) in [(0u64, CONFIG_VECTOR), (1, QUEUE_VECTOR)] {
            let entry = u64::from(MSIX_TABLE) + 16 * v;
            self.write(entry, 4, 0xFEE0_0000);
            self.write(entry + 4, 4, 0);
            self.write(entry + 8, 4, u64::from(vector));
            self.write(entry + 12, 4, 0);
        }
    }

    /// Programs queue 0 from the driver's rings (vector 1) and enables it.
    pub(crate) fn setup_queue(&mut self) {
        self.write(0x16, 2, 0);
        assert_eq!(self.read(0x18, 2), 256, "the maximum size is offered");
        self.write(0x18, 2, u64::from(self.drv.size));
        self.write(0x1A, 2, 1);
        assert_eq!(self.read(0x1A, 2), 1, "vector 1 exists");
        let (desc, avail, used) = (self.drv.desc, self.drv.avail, self.drv.used);
        for (at, value) in [(0x20, desc), (0x28, avail), (0x30, used)] {
            self.write(at, 4, value & 0xFFFF_FFFF);
            self.write(at + 4, 4, value >> 32);
        }
        self.write(0x1C, 2, 1);
    }

    /// Linux's probe: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, MSI-X, queue,
    /// DRIVER_OK.
    pub(crate) fn bring_up(&mut self, features: u64) {
        self.set_status(0);
        assert_eq!(self.status(), 0);
        self.set_status(STATUS_ACKNOWLEDGE);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.set_driver_features(features);
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        assert_ne!(self.status() & STATUS_FEATURES_OK, 0, "features accepted");
        self.enable_msix();
        self.write(0x10, 2, 0);
        self.setup_queue();
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
        assert_eq!(self.status() & STATUS_NEEDS_RESET, 0);
    }

    /// Publishes a request (header type/sector, `data` bytes of data, status byte) and
    /// returns its head.
    pub(crate) fn request(&mut self, kind: u32, sector: u64, data: u32, writable: bool) -> u16 {
        self.mem.write_u32(HEADER, kind).unwrap();
        self.mem.write_u32(HEADER + 4, 0).unwrap();
        self.mem.write_u64(HEADER + 8, sector).unwrap();
        self.mem.write_u8(STATUS, 0xAA).unwrap();
        let mut bufs = vec![(HEADER, 16, false)];
        if data > 0 {
            bufs.push((DATA, data, writable));
        }
        bufs.push((STATUS, 1, true));
        self.drv.add_chain(&self.mem, &bufs)
    }

    /// Writes queue 0's notify register and lets the VM loop service it.
    pub(crate) fn kick(&mut self) {
        self.write(NOTIFY_CFG, 2, 0);
        if self.d.io_pending() {
            self.d.service_io(&self.mem);
        }
    }

    pub(crate) fn status_byte(&self) -> u8 {
        self.mem.read_u8(STATUS).unwrap()
    }

    pub(crate) fn device(&self) -> &VirtioPci<VirtioBlock> {
        self.d.pci_device(self.devfn >> 3, 0).unwrap()
    }

    /// The next interrupt vector waiting at the BSP, acknowledged.
    pub(crate) fn take_interrupt(&mut self) -> Option<u8> {
        match self.d.pending_interrupt(0) {
            Some(InterruptSource::Lapic(_)) => self.d.acknowledge_interrupt(0),
            _ => None,
        }
    }
}

/// The features a Linux driver accepts from this device.
pub(crate) const LINUX_FEATURES: u64 = F_VERSION_1 | F_EVENT_IDX | F_INDIRECT_DESC;

#[test]
fn identity_and_capabilities_are_what_linux_probes_for() {
    let mut r = Rig::new(false);
    let f = r.devfn;
    assert_eq!(cfg_read(&mut r.d, f, 0, 4), 0x1042_1AF4);
    assert_eq!(cfg_read(&mut r.d, f, reg::REVISION, 4), 0x0180_0001);
    assert_eq!(
        cfg_read(&mut r.d, f, reg::SUBSYSTEM_VENDOR_ID, 4),
        0x1042_1AF4
    );
    // BAR 0 is 64-bit memory of 512 KiB (sizing protocol).
    cfg_write(&mut r.d, f, reg::COMMAND, 2, 0);
    cfg_write(&mut r.d, f, reg::BAR0, 4, 0xFFFF_FFFF);
    assert_eq!(cfg_read(&mut r.d, f, reg::BAR0, 4), 0xFFF8_0004);
    cfg_write(&mut r.d, f, reg::BAR0, 4, BAR as u32);
    cfg_write(&mut r.d, f, reg::COMMAND, 2, u32::from(COMMAND_MEMORY));
    // Walk the capability list: cfg_type -> (bar, offset, length, multiplier).
    let mut found = Vec::new();
    let mut cap = cfg_read(&mut r.d, f, reg::CAPABILITIES, 1) as u8;
    while cap != 0 {
        if cfg_read(&mut r.d, f, cap, 1) == 0x09 {
            let kind = cfg_read(&mut r.d, f, cap + 3, 1);
            let bar = cfg_read(&mut r.d, f, cap + 4, 1);
            let offset = cfg_read(&mut r.d, f, cap + 8, 4);
            let len = cfg_read(&mut r.d, f, cap + 12, 4);
            let mult = if kind == 2 {
                cfg_read(&mut r.d, f, cap + 16, 4)
            } else {
                0
            };
            found.push((kind, bar, offset, len, mult));
        }
        cap = cfg_read(&mut r.d, f, cap + 1, 1) as u8;
    }
    assert_eq!(
        found,
        [
            (1, 0, 0, 0x38, 0),
            (3, 0, 0x2000, 1, 0),
            (4, 0, 0x4000, 0x1000, 0),
            (2, 0, 0x6000, 4, 4)
        ]
    );
    // num_queues, and the device features include VERSION_1 and the ring features.
    assert_eq!(r.read(0x12, 2), 1);
    let features = r.device_features();
    assert_eq!(features & LINUX_FEATURES, LINUX_FEATURES);
    // The BAR answers wherever the guest moves it.
    cfg_write(&mut r.d, f, reg::BAR0 + 4, 4, 1);
    r.bar = 0x1_0000_0000 | BAR;
    assert_eq!(r.read(0x12, 2), 1);
}

#[test]
fn features_ok_needs_version_1_and_a_subset() {
    let mut r = Rig::new(false);
    let base = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
    for bad in [0, F_EVENT_IDX, F_VERSION_1 | 1 << 40] {
        r.set_status(0);
        r.set_status(base);
        r.set_driver_features(bad);
        r.set_status(base | STATUS_FEATURES_OK);
        assert_eq!(r.status(), base, "features {bad:#x} refused");
    }
    r.set_status(0);
    r.set_status(base);
    r.set_driver_features(F_VERSION_1);
    r.set_status(base | STATUS_FEATURES_OK);
    assert_eq!(r.status(), base | STATUS_FEATURES_OK);
    // Fixed from now on.
    r.set_driver_features(F_VERSION_1 | F_EVENT_IDX);
    assert_eq!(r.device().driver_features(), F_VERSION_1);
}

#[test]
fn queue_registers_are_fixed_once_enabled_and_after_driver_ok() {
    let mut r = Rig::new(false);
    r.bring_up(LINUX_FEATURES);
    r.write(0x18, 2, 8);
    r.write(0x20, 4, 0x5000);
    r.write(0x1A, 2, 0);
    let q = r.device().queue(0).unwrap();
    assert_eq!((q.size(), q.desc_table()), (DRIVER_QUEUE_SIZE, RINGS));
    assert_eq!(r.read(0x1A, 2), 1);
    // A vector beyond the table reads back NO_VECTOR (before DRIVER_OK).
    r.set_status(0);
    r.write(0x16, 2, 0);
    r.write(0x1A, 2, 7);
    assert_eq!(r.read(0x1A, 2), u64::from(NO_VECTOR));
    // A queue that does not exist reads size 0.
    r.write(0x16, 2, 1);
    assert_eq!(r.read(0x18, 2), 0);
}

#[test]
fn reset_returns_the_device_and_queues_to_their_initial_state() {
    let mut r = Rig::new(false);
    let fresh_regs = r.device().regs.clone();
    let fresh_queue = r.device().queue(0).unwrap().clone();
    r.bring_up(LINUX_FEATURES);
    r.request(T_IN, 0, 512, true);
    r.kick();
    assert_eq!(r.status_byte(), 0);
    r.set_status(0);
    assert_eq!(r.status(), 0);
    assert_eq!(r.device().regs, fresh_regs);
    assert_eq!(r.device().queue(0).unwrap(), &fresh_queue);
    // And it comes up again from scratch.
    r.drv = Driver::new(DRIVER_QUEUE_SIZE, RINGS + 0x1_0000);
    r.bring_up(LINUX_FEATURES);
    r.request(T_IN, 1, 512, true);
    r.kick();
    assert_eq!(r.status_byte(), 0);
}

#[test]
fn notifications_before_driver_ok_are_ignored() {
    let mut r = Rig::new(false);
    r.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    r.set_driver_features(LINUX_FEATURES);
    r.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    r.setup_queue();
    r.request(T_IN, 0, 512, true);
    r.write(NOTIFY_CFG, 2, 0);
    assert!(!r.d.io_pending());
    assert_eq!(r.status_byte(), 0xAA, "untouched");
    assert_eq!(r.drv.used_idx(&r.mem), 0);
}

#[test]
fn a_bogus_queue_size_needs_reset_with_a_config_interrupt_and_a_reason() {
    let mut r = Rig::new(false);
    r.bring_up(LINUX_FEATURES);
    r.set_status(0);
    r.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    r.set_driver_features(LINUX_FEATURES);
    r.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    r.enable_msix();
    r.write(0x16, 2, 0);
    r.write(0x18, 2, 100);
    r.write(0x1C, 2, 1);
    assert_ne!(r.status() & STATUS_NEEDS_RESET, 0);
    assert_eq!(r.read(0x1C, 2), 0, "the queue stayed disabled");
    assert_eq!(
        r.device().error(),
        Some("virtio-blk: queue 0: queue size 100 is not a power of two between 1 and 256")
    );
    // The driver cannot clear NEEDS_RESET by writing status; a reset does.
    r.set_status(STATUS_ACKNOWLEDGE);
    assert_ne!(r.status() & STATUS_NEEDS_RESET, 0);
    r.set_status(0);
    assert_eq!(r.status(), 0);
    assert_eq!(r.device().error(), None);
}

#[test]
fn hostile_chains_need_reset_without_panicking() {
    // A loop, a buffer outside RAM, an avail index far ahead.
    type Make = fn(&mut Rig);
    let cases: [(&str, Make); 3] = [
        ("loops or has more than 16 descriptors", |r| {
            r.drv.write_desc(&r.mem, 0, HEADER, 16, 1, 1);
            r.drv.write_desc(&r.mem, 1, STATUS, 1, 1 | 2, 0);
            r.drv.publish(&r.mem, 0);
        }),
        ("points outside guest RAM", |r| {
            r.drv
                .add_chain(&r.mem, &[(HEADER, 16, false), (0xFFFF_0000, 1, true)]);
        }),
        ("more than the queue size", |r| {
            r.drv.set_avail_idx(&r.mem, 40)
        }),
    ];
    for (reason, make) in cases {
        let mut r = Rig::new(false);
        r.bring_up(LINUX_FEATURES);
        make(&mut r);
        r.kick();
        assert_ne!(r.status() & STATUS_NEEDS_RESET, 0, "{reason}");
        let error = r.device().error().unwrap().to_string();
        assert!(error.contains(reason), "{error}");
        assert_eq!(r.take_interrupt(), Some(CONFIG_VECTOR), "config change");
        // Further notifications are dropped until a reset.
        r.kick();
        assert!(!r.d.io_pending());
    }
}

#[test]
fn without_msix_the_isr_and_intx_report_and_reading_clears_them() {
    let mut r = Rig::new(false);
    r.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    r.set_driver_features(F_VERSION_1);
    r.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    r.setup_queue();
    r.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    r.request(T_GET_ID, 0, 20, true);
    r.kick();
    assert_eq!(r.status_byte(), 0);
    assert_eq!(r.take_interrupt(), None, "no MSI-X message");
    assert!(r.device().config().intx_output(), "INTx asserted");
    assert_eq!(cfg_read(&mut r.d, r.devfn, reg::STATUS, 2) & 0x8, 0x8);
    assert_eq!(r.read(ISR_CFG, 1), u64::from(ISR_QUEUE));
    assert!(!r.device().config().intx_output(), "INTx deasserted");
    assert_eq!(r.read(ISR_CFG, 1), 0, "read clears");
    // With MSI-X on, INTx stays quiet.
    r.enable_msix();
    r.write(0x16, 2, 0);
    r.request(T_GET_ID, 0, 20, true);
    r.kick();
    assert!(!r.device().config().intx_output());
}

#[test]
fn msix_interrupts_follow_event_idx() {
    let mut r = Rig::new(false);
    r.bring_up(LINUX_FEATURES);
    r.drv.set_used_event(&r.mem, 0);
    r.request(T_IN, 0, 512, true);
    r.kick();
    assert_eq!(r.take_interrupt(), Some(QUEUE_VECTOR));
    // used_event stays 0: the driver does not want to hear about entry 1.
    r.request(T_IN, 1, 512, true);
    r.kick();
    assert_eq!(r.drv.used_idx(&r.mem), 2);
    assert_eq!(r.take_interrupt(), None);
    // The device asks to be notified at the next entry.
    assert_eq!(r.drv.avail_event(&r.mem), 2);
}

#[test]
fn save_and_restore_round_trip_and_refuse_impossible_states() {
    let mut r = Rig::new(false);
    r.bring_up(LINUX_FEATURES);
    r.request(T_OUT, 3, 512, false);
    r.kick();
    let saved = PciDevice::save_state(r.device());
    let mut other = block_device(Box::new(MemDisk::new(64)), false, "x");
    other.restore_state(&saved).unwrap();
    assert_eq!(other.regs, r.device().regs);
    assert_eq!(other.queue(0), r.device().queue(0));

    let mut state: VirtioPciState = decode_state("t", &saved).unwrap();
    state.regs.queue_vectors[0] = 9;
    let before = other.regs.clone();
    let error = other.restore_state(&encode_state(&state)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid virtio-blk state: queue_vectors = 0x9"
    );
    assert_eq!(other.regs, before, "unchanged");
    let mut state: VirtioPciState = decode_state("t", &saved).unwrap();
    state.queues[0].size = 3;
    assert!(other.restore_state(&encode_state(&state)).is_err());
    assert!(other.restore_state(&[1, 2, 3]).is_err());
}

#[test]
fn a_full_pc_saves_and_restores_the_function() {
    use crate::persist::Persist;
    let mut r = Rig::new(false);
    r.bring_up(LINUX_FEATURES);
    r.request(T_IN, 2, 512, true);
    r.kick();
    let state = r.d.save();
    let mut fresh = Devices::pc_for_tests();
    fresh
        .add_pci_device(block_device(
            Box::new(r.disk.clone()),
            false,
            "keel-serial-0001",
        ))
        .unwrap();
    let other = Devices::restore(fresh, &state).unwrap();
    let mut r2 = Rig {
        d: other,
        mem: r.mem,
        devfn: r.devfn,
        drv: r.drv,
        disk: r.disk.clone(),
        bar: BAR,
    };
    assert_eq!(r2.status() & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
    r2.request(T_IN, 5, 512, true);
    r2.kick();
    assert_eq!(r2.status_byte(), 0);
    assert_eq!(r2.drv.used_idx(&r2.mem), 2);
}
